//! The Kubernetes remote-command stream protocol over WebSocket (`v4.channel.k8s.io`, `v5.channel.k8s.io`): every
//! binary message starts with a channel byte — 0 stdin, 1 stdout, 2 stderr, 3 error (the final `Status`), 4 resize
//! (`{"Width":..,"Height":..}`) — and v5 adds 255 = "close this channel" with the channel id as the second byte.
//! Pure: no I/O. Hand-written: no crate implements the server side of this protocol.

use serde::Deserialize;
use serde_json::{json, Value};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// The subprotocols we speak, best first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// One message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    Stdin(&'a [u8]),
    Resize(TermSize),
    /// v5: the client closed this channel (0 = stdin: end of input).
    Close(u8),
    /// Anything else, with why it is ignored.
    Ignored(String),
}

pub fn decode(msg: &[u8]) -> Incoming<'_> {
    match msg.split_first() {
        None => Incoming::Ignored("empty message".into()),
        Some((&STDIN, data)) => Incoming::Stdin(data),
        Some((&RESIZE, data)) => match serde_json::from_slice::<TermSize>(data) {
            Ok(size) => Incoming::Resize(size),
            Err(e) => Incoming::Ignored(format!("bad resize message: {e}")),
        },
        Some((&CLOSE, [ch, ..])) => Incoming::Close(*ch),
        Some((ch, _)) => Incoming::Ignored(format!("message on channel {ch} from the client")),
    }
}

pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    v
}

/// The final status on the error channel: success, a non-zero exit code (kubectl exits with it), or an error.
pub fn exit_status(command: &[String], outcome: &Result<i32, String>) -> Value {
    match outcome {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", command.join(" ")),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(message) => json!({"metadata": {}, "status": "Failure", "message": message}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_client_messages() {
        assert_eq!(decode(b"\x00ls\n"), Incoming::Stdin(b"ls\n"));
        assert_eq!(decode(b"\x04{\"Width\":80,\"Height\":24}"), Incoming::Resize(TermSize { width: 80, height: 24 }));
        assert_eq!(decode(&[255, 0]), Incoming::Close(0));
        assert!(matches!(decode(b"\x04nope"), Incoming::Ignored(_)));
        assert!(matches!(decode(b"\x01x"), Incoming::Ignored(_)));
        assert!(matches!(decode(b""), Incoming::Ignored(_)));
        assert!(matches!(decode(&[255]), Incoming::Ignored(_)));
    }

    #[test]
    fn statuses_match_the_kubelets() {
        let cmd = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        assert_eq!(exit_status(&cmd, &Ok(0))["status"], "Success");
        let s = exit_status(&cmd, &Ok(3));
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(s["message"], "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3");
        let e = exit_status(&cmd, &Err("boom".into()));
        assert_eq!(e["message"], "boom");
        assert_eq!(frame(STDOUT, b"hi"), b"\x01hi");
    }
}
