//! Reading CRI log files: `<RFC3339Nano> <stream> <F|P> <text>` lines.

/// One parsed CRI line; `None` for a malformed one.
pub fn parse_line(line: &str) -> Option<(&str, &str, bool, &str)> {
    let mut it = line.splitn(4, ' ');
    let ts = it.next()?;
    let stream = it.next()?;
    let tag = it.next()?;
    let text = it.next().unwrap_or("");
    Some((ts, stream, tag == "P", text))
}

/// Renders CRI lines as `kubectl logs` shows them: the text only (partial lines joined), or with the timestamp.
pub fn render(lines: &str, timestamps: bool) -> String {
    let mut out = String::new();
    let mut continuing = false;
    for line in lines.lines() {
        let Some((ts, _, partial, text)) = parse_line(line) else { continue };
        if timestamps && !continuing {
            out.push_str(ts);
            out.push(' ');
        }
        out.push_str(text);
        if !partial {
            out.push('\n');
        }
        continuing = partial;
    }
    out
}

/// The CRI lines of `content` written at or after `since` (lines with an unreadable timestamp are kept).
pub fn since(content: &str, since: chrono::DateTime<chrono::Utc>) -> String {
    content
        .split_inclusive('\n')
        .filter(|line| {
            let ts = line.split(' ').next().unwrap_or("");
            chrono::DateTime::parse_from_rfc3339(ts).map(|t| t >= since).unwrap_or(true)
        })
        .collect()
}

/// At most `limit` bytes of `text` (cut on a UTF-8 boundary), as `limitBytes` asks.
pub fn limit(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The last `n` CRI lines of `content`.
pub fn tail(content: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    let mut count = 0;
    for (i, b) in content.bytes().enumerate().rev() {
        if b == b'\n' && i + 1 < content.len() {
            count += 1;
            if count == n {
                return &content[i + 1..];
            }
        }
    }
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-01-01T00:00:00.1Z stdout F hello\n2026-01-01T00:00:01.2Z stderr P par\n2026-01-01T00:00:01.3Z stderr F tial\n2026-01-01T00:00:02Z stdout F bye\n";

    #[test]
    fn strips_prefixes_and_joins_partials() {
        assert_eq!(render(LOG, false), "hello\npartial\nbye\n");
        assert!(render(LOG, true).starts_with("2026-01-01T00:00:00.1Z hello\n2026-01-01T00:00:01.2Z partial\n"));
    }

    #[test]
    fn since_and_limit() {
        let t = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&chrono::Utc);
        assert_eq!(render(&since(LOG, t("2026-01-01T00:00:01.25Z")), false), "tial\nbye\n");
        assert_eq!(since(LOG, t("2020-01-01T00:00:00Z")), LOG);
        assert_eq!(limit("héllo", 2), "h");
        assert_eq!(limit("hello", 3), "hel");
        assert_eq!(limit("hi", 10), "hi");
    }

    #[test]
    fn tails_lines() {
        assert_eq!(render(tail(LOG, 1), false), "bye\n");
        assert_eq!(tail(LOG, 10), LOG);
        assert_eq!(tail(LOG, 0), "");
    }
}
