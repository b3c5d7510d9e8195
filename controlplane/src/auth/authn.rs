//! Authentication: who sent a request. Client certificates signed by the cluster CA (checked during the TLS
//! handshake), bearer tokens from a static token file (kube-apiserver's `--token-auth-file` format), bootstrap
//! tokens (Secrets of type `bootstrap.kubernetes.io/token` in kube-system), and the API server's own loopback token.
//! A request with none of them is anonymous and refused (401), except for the health endpoints.

use std::collections::HashMap;
use std::path::Path;

/// An authenticated user, as Kubernetes' user.Info.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// user.Info's extra: for service account tokens bound to a pod, the pod's name and uid, the node's name and
    /// uid, and the token's id (`authentication.kubernetes.io/...`).
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

pub const MASTERS: &str = "system:masters";
pub const AUTHENTICATED: &str = "system:authenticated";
pub const NODES: &str = "system:nodes";
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";

impl Identity {
    pub fn new(user: &str, groups: &[&str]) -> Identity {
        Identity { user: user.into(), groups: groups.iter().map(|g| g.to_string()).collect(), ..Default::default() }
    }

    /// Every authenticated identity is also in system:authenticated.
    pub fn with_authenticated(mut self) -> Identity {
        if !self.groups.iter().any(|g| g == AUTHENTICATED) {
            self.groups.push(AUTHENTICATED.into());
        }
        self
    }

    pub fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }

    /// The node name of a node identity (`system:node:<name>` in system:nodes).
    pub fn node_name(&self) -> Option<&str> {
        self.user.strip_prefix("system:node:").filter(|n| !n.is_empty() && self.in_group(NODES))
    }
}

/// Parse a token file: one `token,user,uid[,"group1,group2"]` per line; `#` comments and blank lines are skipped.
pub fn parse_token_file(text: &str) -> Result<HashMap<String, Identity>, String> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split_csv(line).map_err(|e| format!("line {n}: {e}"))?;
        if fields.len() < 3 {
            return Err(format!("line {n}: want token,user,uid[,\"groups\"], got {} field(s)", fields.len()));
        }
        let (token, user, uid) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        if token.is_empty() || user.is_empty() {
            return Err(format!("line {n}: the token and the user name must not be empty"));
        }
        if token.len() < 16 {
            return Err(format!("line {n}: token of user {user:?} is shorter than 16 characters"));
        }
        let groups: Vec<String> = fields
            .get(3)
            .map(|g| g.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        let id = Identity { user: user.into(), uid: uid.into(), groups, ..Default::default() };
        if out.insert(token.to_string(), id).is_some() {
            return Err(format!("line {n}: the same token appears twice"));
        }
    }
    Ok(out)
}

pub fn load_token_file(path: &Path) -> Result<HashMap<String, Identity>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_token_file(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Split one CSV record (fields may be double-quoted, `""` is a quote inside one). Hand-written: the csv crate
/// would be a new dependency for four fields per line.
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.trim().is_empty() && !was_quoted => {
                cur.clear();
                quoted = true;
                was_quoted = true;
            }
            (',', false) => {
                out.push(std::mem::take(&mut cur));
                was_quoted = false;
            }
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    out.push(cur);
    Ok(out)
}

/// A bootstrap token `<id>.<secret>`: id of 6 and secret of 16 characters in [a-z0-9].
pub fn split_bootstrap_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// Compare secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of an Authorization header, if it has one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file() {
        let f = "# comment\n\n0123456789abcdef,alice,1001,\"dev,ops\"\nfedcba9876543210,bob,1002\n";
        let m = parse_token_file(f).unwrap();
        assert_eq!(m["0123456789abcdef"], Identity { user: "alice".into(), uid: "1001".into(), groups: vec!["dev".into(), "ops".into()], ..Default::default() });
        assert_eq!(m["fedcba9876543210"].groups, Vec::<String>::new());
        for (bad, want) in [
            ("short,alice,1", "shorter than 16"),
            ("0123456789abcdef,alice", "got 2 field"),
            ("0123456789abcdef,alice,1,\"dev", "unterminated quote"),
            ("0123456789abcdef,a,1\n0123456789abcdef,b,2", "line 2: the same token"),
            (",alice,1", "must not be empty"),
        ] {
            let e = parse_token_file(bad).unwrap_err();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
    }

    #[test]
    fn bootstrap_tokens_and_headers() {
        assert_eq!(split_bootstrap_token("abcdef.0123456789abcdef"), Some(("abcdef", "0123456789abcdef")));
        assert_eq!(split_bootstrap_token("ABCDEF.0123456789abcdef"), None);
        assert_eq!(split_bootstrap_token("abcdef.0123"), None);
        assert_eq!(split_bootstrap_token("abcdef0123456789abcdef"), None);
        let mut h = axum::http::HeaderMap::new();
        h.insert("authorization", "Bearer  tok ".parse().unwrap());
        assert_eq!(bearer(&h), Some("tok"));
        h.insert("authorization", "Basic dXNlcjpwdw==".parse().unwrap());
        assert_eq!(bearer(&h), None);
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"ab", b"abc"));
        let n = Identity::new("system:node:n1", &[NODES]);
        assert_eq!(n.node_name(), Some("n1"));
        assert_eq!(Identity::new("system:node:n1", &[]).node_name(), None);
    }
}
