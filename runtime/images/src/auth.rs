//! Registry authentication: `WWW-Authenticate` challenges and docker-style `config.json` credentials.

use base64::Engine as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic { realm: Option<String> },
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// Parses `Bearer realm="https://auth/token",service="reg",scope="repository:a/b:pull"` or `Basic realm="x"`.
/// Returns `None` for unknown schemes or a bearer challenge without a realm.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic { realm: params.get("realm").cloned() }),
        "bearer" => Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        _ => None,
    }
}

/// `key=value` or `key="quoted, value"` pairs separated by commas; keys lowercased.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        out.insert(key.trim().to_ascii_lowercase(), value);
    }
    out
}

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("reading registry credentials {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parsing registry credentials {path}: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("registry credentials {path}: entry {host:?} has an `auth` that is not base64 of user:password")]
    BadAuth { path: PathBuf, host: String },
}

#[derive(serde::Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(serde::Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Credentials from a docker-style `config.json` (`{"auths": {"host:port": {"auth": base64(user:pass)}}}`).
#[derive(Clone, Debug, Default)]
pub struct CredentialStore {
    by_host: BTreeMap<String, Credentials>,
}

impl CredentialStore {
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`, when it exists.
    pub fn default_path() -> Option<PathBuf> {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))?;
        Some(dir.join("config.json"))
    }

    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let data = std::fs::read(path).map_err(|source| AuthError::Read { path: path.into(), source })?;
        Self::parse(&data, path)
    }

    pub fn parse(data: &[u8], path: &Path) -> Result<Self, AuthError> {
        let file: ConfigFile =
            serde_json::from_slice(data).map_err(|source| AuthError::Parse { path: path.into(), source })?;
        let mut by_host = BTreeMap::new();
        for (key, entry) in file.auths {
            let host = normalize_host(&key);
            let creds = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) if !auth.is_empty() => {
                    let bad = || AuthError::BadAuth { path: path.into(), host: key.clone() };
                    let decoded = base64::engine::general_purpose::STANDARD.decode(auth.trim()).map_err(|_| bad())?;
                    let text = String::from_utf8(decoded).map_err(|_| bad())?;
                    let (u, p) = text.split_once(':').ok_or_else(bad)?;
                    Credentials { username: u.to_string(), password: p.to_string() }
                }
                (_, Some(username), Some(password)) => Credentials { username, password },
                _ => continue,
            };
            by_host.insert(host, creds);
        }
        Ok(CredentialStore { by_host })
    }

    /// Credentials for a reference's domain (`docker.io` also matches Docker Hub's legacy keys).
    pub fn get(&self, domain: &str) -> Option<&Credentials> {
        self.by_host.get(&normalize_host(domain))
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000/` → `host:5000`.
fn normalize_host(key: &str) -> String {
    let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull,push".into()),
            })
        );
        // unquoted values, spaces, other case
        let c = parse_challenge("bearer realm=http://127.0.0.1:9/t , service=reg");
        assert_eq!(
            c,
            Some(Challenge::Bearer { realm: "http://127.0.0.1:9/t".into(), service: Some("reg".into()), scope: None })
        );
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None, "a bearer challenge needs a realm");
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic { realm: Some("Registry Realm".into()) }));
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge(r#"Bearer realm="a\"b""#), Some(Challenge::Bearer { realm: "a\"b".into(), service: None, scope: None }));
    }

    #[test]
    fn docker_config() {
        let json = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
            "registry:5000": {"auth": "YWxpY2U6czNjcjN0OndpdGg6Y29sb25z"},
            "http://other:80/": {"username": "bob", "password": "pw"},
            "empty": {}
        }}"#;
        let store = CredentialStore::parse(json, Path::new("config.json")).unwrap();
        assert_eq!(store.get("docker.io").unwrap().username, "user");
        assert_eq!(store.get("docker.io").unwrap().password, "pass");
        assert_eq!(store.get("registry:5000").unwrap().password, "s3cr3t:with:colons");
        assert_eq!(store.get("other:80").unwrap().username, "bob");
        assert!(store.get("empty").is_none());
        assert!(store.get("nowhere").is_none());
        let bad = CredentialStore::parse(br#"{"auths": {"h": {"auth": "!!!"}}}"#, Path::new("c.json"));
        assert!(matches!(bad, Err(AuthError::BadAuth { .. })));
        assert!(!format!("{:?}", store.get("docker.io").unwrap()).contains("pass"));
    }
}
