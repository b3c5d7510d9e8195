//! ServiceAccount tokens: signed JWTs (ES256, `jsonwebtoken`) in upstream's two formats.
//!
//! - **Bound tokens** (TokenRequest, `kubectl create token`, the `serviceAccountToken` projection the agent writes
//!   into pods): `iss`, `sub` = `system:serviceaccount:<ns>:<name>`, `aud`, `exp`/`iat`/`nbf`, `jti`, and the
//!   private `kubernetes.io` claim with the namespace, the service account's name and uid and, when bound, the
//!   pod or secret (and the pod's node) by name and uid. Such a token is valid only while every object it names
//!   still exists with the same uid, so deleting the pod revokes its tokens.
//! - **Legacy tokens** (Secrets of type `kubernetes.io/service-account-token`, filled in by the token
//!   controller): `iss` = `kubernetes/serviceaccount` and the flat `kubernetes.io/serviceaccount/...` claims; valid
//!   while the Secret holds that very token and the service account exists.
//!
//! The signing key is an ECDSA P-256 key in `<data-dir>/pki/sa.key` (made on first start, like the CA), or the
//! file given by `--service-account-signing-key-file`; every API server of a cluster must use the same one. The key
//! id (`kid`) is, as upstream's, the unpadded base64url SHA-256 of the public key's DER encoding.
//!
//! This module is pure (sign, verify, claims); the store checks of the objects a token names live in
//! [`super::Auth`].

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::pki::PkiError;

/// The issuer (and default API audience) when none is configured: the in-cluster name of the API server.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The issuer of legacy Secret-based tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";

/// An object a token is bound to (or the node of the pod it is bound to).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` claim of a bound token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeClaims {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
}

/// Every claim Skiff writes or reads, of both formats.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(rename = "kubernetes.io", default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeClaims>,
    #[serde(rename = "kubernetes.io/serviceaccount/namespace", default, skip_serializing_if = "Option::is_none")]
    pub legacy_namespace: Option<String>,
    #[serde(rename = "kubernetes.io/serviceaccount/secret.name", default, skip_serializing_if = "Option::is_none")]
    pub legacy_secret: Option<String>,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.name", default, skip_serializing_if = "Option::is_none")]
    pub legacy_sa_name: Option<String>,
    #[serde(rename = "kubernetes.io/serviceaccount/service-account.uid", default, skip_serializing_if = "Option::is_none")]
    pub legacy_sa_uid: Option<String>,
}

/// `aud` may be one string or an array (RFC 7519 §4.1.3).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Who a verified token speaks for, before the store checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSubject {
    pub namespace: String,
    pub name: String,
    /// Empty for legacy tokens made without one.
    pub uid: String,
    pub pod: Option<ObjectRef>,
    pub secret: Option<ObjectRef>,
    pub node: Option<ObjectRef>,
    /// Legacy tokens are checked against the Secret that holds them.
    pub legacy: bool,
    pub jti: Option<String>,
    /// The audiences of the token that the verifier accepted.
    pub audiences: Vec<String>,
}

impl TokenSubject {
    pub fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

/// What a token is asked for.
#[derive(Clone, Debug, Default)]
pub struct TokenSpec {
    pub namespace: String,
    pub sa: ObjectRef,
    pub audiences: Vec<String>,
    pub expiration: Duration,
    pub pod: Option<ObjectRef>,
    pub secret: Option<ObjectRef>,
    pub node: Option<ObjectRef>,
}

pub struct TokenIssuer {
    issuer: String,
    /// The audiences the API server accepts (`--api-audiences`; default: the issuer).
    api_audiences: Vec<String>,
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The uncompressed public point (0x04 ‖ X ‖ Y), for the JWKS document.
    public_point: Vec<u8>,
}

impl std::fmt::Debug for TokenIssuer {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer").field("issuer", &self.issuer).field("kid", &self.kid).finish_non_exhaustive()
    }
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl TokenIssuer {
    /// The key in `path` (PKCS#8 PEM, ECDSA P-256), made there (mode 0600) when the file does not exist yet.
    pub fn load_or_create(path: &Path, issuer: &str, api_audiences: Vec<String>) -> Result<TokenIssuer, PkiError> {
        let pem = match std::fs::read_to_string(path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| PkiError::Cert("service account signing key".into(), e))?;
                let pem = key.serialize_pem();
                super::pki::write_secret_file(path, pem.as_bytes(), 0o600)?;
                tracing::info!(path = %path.display(), "service account signing key created");
                pem
            }
            Err(source) => return Err(PkiError::Io { path: path.to_path_buf(), source }),
        };
        Self::from_pem(&pem, issuer, api_audiences).map_err(|e| PkiError::Invalid(format!("{}: {e}", path.display())))
    }

    pub fn from_pem(pem: &str, issuer: &str, api_audiences: Vec<String>) -> Result<TokenIssuer, String> {
        use ring::digest;
        let key = rcgen::KeyPair::from_pem(pem).map_err(|e| format!("not a PKCS#8 private key: {e}"))?;
        if !key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err("the service account signing key must be an ECDSA P-256 key".into());
        }
        if issuer.is_empty() {
            return Err("the service account issuer must not be empty".into());
        }
        let public_point = key.public_key_raw().to_vec();
        let kid = b64url(digest::digest(&digest::SHA256, &key.public_key_der()).as_ref());
        let api_audiences = if api_audiences.is_empty() { vec![issuer.to_string()] } else { api_audiences };
        Ok(TokenIssuer {
            issuer: issuer.to_string(),
            api_audiences,
            kid,
            encoding: EncodingKey::from_ec_der(&key.serialize_der()),
            decoding: DecodingKey::from_ec_der(&public_point),
            public_point,
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn api_audiences(&self) -> &[String] {
        &self.api_audiences
    }

    fn sign(&self, claims: &Claims) -> Result<String, String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| format!("signing the token: {e}"))
    }

    /// A bound token; returns it with its expiry.
    pub fn issue(&self, spec: &TokenSpec, now: SystemTime) -> Result<(String, SystemTime), String> {
        let exp = now + spec.expiration;
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: format!("system:serviceaccount:{}:{}", spec.namespace, spec.sa.name),
            aud: if spec.audiences.is_empty() { self.api_audiences.clone() } else { spec.audiences.clone() },
            exp: Some(unix(exp)),
            iat: Some(unix(now)),
            nbf: Some(unix(now)),
            jti: Some(uuid::Uuid::new_v4().to_string()),
            kube: Some(KubeClaims {
                namespace: spec.namespace.clone(),
                serviceaccount: spec.sa.clone(),
                pod: spec.pod.clone(),
                secret: spec.secret.clone(),
                node: spec.node.clone(),
            }),
            ..Default::default()
        };
        Ok((self.sign(&claims)?, exp))
    }

    /// A token for a `kubernetes.io/service-account-token` Secret: no expiry, valid while the Secret holds it.
    pub fn issue_legacy(&self, namespace: &str, sa: &ObjectRef, secret_name: &str) -> Result<String, String> {
        self.sign(&Claims {
            iss: LEGACY_ISSUER.into(),
            sub: format!("system:serviceaccount:{namespace}:{}", sa.name),
            legacy_namespace: Some(namespace.into()),
            legacy_secret: Some(secret_name.into()),
            legacy_sa_name: Some(sa.name.clone()),
            legacy_sa_uid: Some(sa.uid.clone()),
            ..Default::default()
        })
    }

    /// Check a token's signature, issuer, audiences (one of `audiences`, or of the API audiences when empty),
    /// and times. Err: why it is not valid (for logs and TokenReview, never for the client of a request).
    pub fn verify(&self, token: &str, audiences: &[String], now: SystemTime) -> Result<TokenSubject, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        if header.alg != Algorithm::ES256 {
            return Err(format!("unexpected signing algorithm {:?}", header.alg));
        }
        if header.kid.as_deref().is_some_and(|k| k != self.kid) {
            return Err("signed by an unknown key".into());
        }
        let mut v = Validation::new(Algorithm::ES256);
        // Times, issuer and audiences are checked below, where the two formats differ.
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_aud = false;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).map_err(|e| format!("invalid token: {e}"))?.claims;
        let sub_parts: Vec<&str> = claims.sub.splitn(4, ':').collect();
        let (sub_ns, sub_name) = match sub_parts.as_slice() {
            ["system", "serviceaccount", ns, name] if !ns.is_empty() && !name.is_empty() => (ns.to_string(), name.to_string()),
            _ => return Err(format!("subject {:?} is not a service account", claims.sub)),
        };
        if claims.iss == LEGACY_ISSUER {
            let (Some(ns), Some(name), Some(secret)) = (&claims.legacy_namespace, &claims.legacy_sa_name, &claims.legacy_secret) else {
                return Err("legacy token without its service account claims".into());
            };
            if *ns != sub_ns || *name != sub_name {
                return Err("legacy token claims do not match its subject".into());
            }
            return Ok(TokenSubject {
                namespace: sub_ns,
                name: sub_name,
                uid: claims.legacy_sa_uid.clone().unwrap_or_default(),
                pod: None,
                secret: Some(ObjectRef { name: secret.clone(), uid: String::new() }),
                node: None,
                legacy: true,
                jti: None,
                audiences: self.api_audiences.clone(),
            });
        }
        if claims.iss != self.issuer {
            return Err(format!("issuer {:?} is not {:?}", claims.iss, self.issuer));
        }
        let wanted = if audiences.is_empty() { &self.api_audiences[..] } else { audiences };
        let matched: Vec<String> = claims.aud.iter().filter(|a| wanted.contains(a)).cloned().collect();
        if matched.is_empty() {
            return Err(format!("audiences {:?} do not include any of {:?}", claims.aud, wanted));
        }
        let now = unix(now);
        // A minute of leeway for clocks that disagree, as upstream's validator.
        const LEEWAY: i64 = 60;
        match claims.exp {
            Some(exp) if exp + LEEWAY < now => return Err("token has expired".into()),
            Some(_) => {}
            None => return Err("token has no expiry".into()),
        }
        if claims.nbf.is_some_and(|nbf| nbf > now + LEEWAY) {
            return Err("token is not valid yet".into());
        }
        let kube = claims.kube.ok_or("token without the kubernetes.io claim")?;
        if kube.namespace != sub_ns || kube.serviceaccount.name != sub_name {
            return Err("kubernetes.io claim does not match the subject".into());
        }
        Ok(TokenSubject {
            namespace: sub_ns,
            name: sub_name,
            uid: kube.serviceaccount.uid,
            pod: kube.pod,
            secret: kube.secret,
            node: kube.node,
            legacy: false,
            jti: claims.jti,
            audiences: matched,
        })
    }

    /// `/.well-known/openid-configuration` (upstream's ServiceAccountIssuerDiscovery); the keys are published under
    /// the issuer's own URL.
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.issuer.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// `/openid/v1/jwks`: the public key that verifies the tokens.
    pub fn jwks(&self) -> Value {
        let (x, y) = self.public_point[1..].split_at(32);
        json!({"keys": [{"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256", "x": b64url(x), "y": b64url(y)}]})
    }
}

/// Does a bearer token look like a JWT (three base64url parts)? Other tokens go to the other authenticators.
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> TokenIssuer {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        TokenIssuer::from_pem(&key.serialize_pem(), DEFAULT_ISSUER, vec![]).unwrap()
    }

    fn spec() -> TokenSpec {
        TokenSpec {
            namespace: "team".into(),
            sa: ObjectRef { name: "bot".into(), uid: "u-sa".into() },
            audiences: vec![],
            expiration: Duration::from_secs(3600),
            pod: Some(ObjectRef { name: "web".into(), uid: "u-pod".into() }),
            secret: None,
            node: Some(ObjectRef { name: "n1".into(), uid: "u-n1".into() }),
        }
    }

    #[test]
    fn issue_and_verify_a_bound_token() {
        let i = issuer();
        let now = SystemTime::now();
        let (t, exp) = i.issue(&spec(), now).unwrap();
        assert!(looks_like_jwt(&t));
        assert_eq!(unix(exp) - unix(now), 3600);
        let s = i.verify(&t, &[], now).unwrap();
        assert_eq!(s.user(), "system:serviceaccount:team:bot");
        assert_eq!(s.uid, "u-sa");
        assert_eq!(s.pod.as_ref().map(|p| p.name.as_str()), Some("web"));
        assert_eq!(s.node.as_ref().map(|p| p.uid.as_str()), Some("u-n1"));
        assert_eq!(s.audiences, [DEFAULT_ISSUER]);
        assert!(!s.legacy);
        // The payload is what upstream writes.
        let payload = t.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:team:bot");
        assert_eq!(claims["kubernetes.io"]["pod"]["uid"], "u-pod");
        assert_eq!(claims["aud"][0], DEFAULT_ISSUER);
    }

    #[test]
    fn refuses_what_it_should() {
        let i = issuer();
        let now = SystemTime::now();
        let (t, _) = i.issue(&spec(), now).unwrap();
        // Expired (past the leeway), not yet valid, other audience, other key, tampered payload.
        assert!(i.verify(&t, &[], now + Duration::from_secs(3600 + 61)).unwrap_err().contains("expired"));
        assert!(i.verify(&t, &[], now + Duration::from_secs(3600 + 30)).is_ok());
        assert!(i.verify(&t, &[], now - Duration::from_secs(120)).unwrap_err().contains("not valid yet"));
        assert!(i.verify(&t, &["vault".into()], now).unwrap_err().contains("audiences"));
        let other = issuer();
        assert!(other.verify(&t, &[], now).is_err());
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let mut claims: Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        claims["sub"] = "system:serviceaccount:kube-system:admin".into();
        parts[1] = b64url(&serde_json::to_vec(&claims).unwrap());
        assert!(i.verify(&parts.join("."), &[], now).is_err());
        // Asked audiences: a token for "vault" is not an API token.
        let (v, _) = i.issue(&TokenSpec { audiences: vec!["vault".into()], ..spec() }, now).unwrap();
        assert!(i.verify(&v, &[], now).is_err());
        assert_eq!(i.verify(&v, &["vault".into()], now).unwrap().audiences, ["vault"]);
        assert!(!looks_like_jwt("0123456789abcdef"));
        assert!(!looks_like_jwt("abcdef.0123456789abcdef"));
        assert!(i.verify("a.b.c", &[], now).is_err());
    }

    #[test]
    fn legacy_tokens() {
        let i = issuer();
        let t = i.issue_legacy("team", &ObjectRef { name: "bot".into(), uid: "u-sa".into() }, "bot-token").unwrap();
        let s = i.verify(&t, &[], SystemTime::now() + Duration::from_secs(10 * 365 * 86400)).unwrap();
        assert!(s.legacy);
        assert_eq!(s.secret.unwrap().name, "bot-token");
        assert_eq!(s.uid, "u-sa");
    }

    #[test]
    fn keys_and_discovery() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sa.key");
        let a = TokenIssuer::load_or_create(&path, "https://skiff.example", vec![]).unwrap();
        let b = TokenIssuer::load_or_create(&path, "https://skiff.example", vec![]).unwrap();
        assert_eq!(a.kid, b.kid, "the second start reads the same key");
        let (t, _) = a.issue(&TokenSpec { audiences: vec![], ..spec() }, SystemTime::now()).unwrap();
        assert!(b.verify(&t, &[], SystemTime::now()).is_ok());
        let jwks = a.jwks();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
        let key = DecodingKey::from_jwk(&jwk).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&["https://skiff.example"]);
        assert!(jsonwebtoken::decode::<Value>(&t, &key, &v).is_ok(), "the JWKS verifies the tokens");
        assert_eq!(a.openid_configuration()["jwks_uri"], "https://skiff.example/openid/v1/jwks");
        std::fs::write(&path, "not a key").unwrap();
        assert!(TokenIssuer::load_or_create(&path, "https://skiff.example", vec![]).is_err());
    }
}
