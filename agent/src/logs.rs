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
    fn tails_lines() {
        assert_eq!(render(tail(LOG, 1), false), "bye\n");
        assert_eq!(tail(LOG, 10), LOG);
        assert_eq!(tail(LOG, 0), "");
    }
}
