//! Signal names and numbers as `kill` accepts them.

use libcontainer::signal::Signal;

use crate::error::{Error, Result};

/// Parses `KILL`, `SIGKILL`, `kill` or `9`.
pub fn parse(s: &str) -> Result<Signal> {
    let invalid = || Error::InvalidSignal(s.to_owned());
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| invalid());
    }
    Signal::try_from(s).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        for s in ["KILL", "SIGKILL", "kill", "9", "TERM", "15", "SIGUSR1"] {
            assert!(parse(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn bad_signals() {
        for s in ["", "NOPE", "SIGNOPE", "0", "99", "-1"] {
            assert!(matches!(parse(s), Err(Error::InvalidSignal(_))), "{s}");
        }
    }
}
