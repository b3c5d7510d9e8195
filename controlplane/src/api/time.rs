//! Durations from objects (grace periods, deadlines, toleration seconds) are any int64 the user wrote; chrono
//! panics when a time plus such a duration leaves its range. These saturate instead, as Go's time arithmetic
//! lets upstream treat a huge value as "never".

use chrono::{DateTime, TimeDelta, Utc};

/// `t + secs`, or the latest representable time when that overflows.
pub fn plus_seconds(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    TimeDelta::try_seconds(secs)
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(if secs < 0 { DateTime::<Utc>::MIN_UTC } else { DateTime::<Utc>::MAX_UTC })
}

/// `t - secs`, or the earliest representable time when that overflows.
pub fn minus_seconds(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    TimeDelta::try_seconds(secs)
        .and_then(|d| t.checked_sub_signed(d))
        .unwrap_or(if secs < 0 { DateTime::<Utc>::MAX_UTC } else { DateTime::<Utc>::MIN_UTC })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_saturate() {
        let now = Utc::now();
        assert_eq!(plus_seconds(now, 60), now + TimeDelta::seconds(60));
        assert_eq!(minus_seconds(now, 60), now - TimeDelta::seconds(60));
        assert_eq!(plus_seconds(now, i64::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(plus_seconds(now, 9_000_000_000_000), DateTime::<Utc>::MAX_UTC);
        assert_eq!(plus_seconds(now, i64::MIN), DateTime::<Utc>::MIN_UTC);
        assert_eq!(minus_seconds(now, i64::MAX), DateTime::<Utc>::MIN_UTC);
        assert_eq!(minus_seconds(now, i64::MIN), DateTime::<Utc>::MAX_UTC);
    }
}
