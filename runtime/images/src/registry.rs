//! A small OCI distribution client over reqwest: manifests and blobs, with token and basic auth,
//! retries with backoff on transport errors, 429 and 5xx.

use crate::auth::{parse_challenge, Challenge, CredentialStore};
use crate::blobs::Ingest;
use crate::digest::Digest;
use crate::manifest::{ACCEPT, MAX_MANIFEST};
use crate::reference::Reference;
use base64::Engine as _;
use futures::StreamExt;
use reqwest::header::{HeaderMap, ACCEPT as ACCEPT_HEADER, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Registry hosts (`host:port`) spoken to over plain HTTP. Loopback hosts are, unless listed in `https`.
    pub plain_http: Vec<String>,
    /// Registry hosts (`host:port`) spoken to over HTTPS even on loopback (a local registry with TLS).
    pub https: Vec<String>,
    /// Extra PEM CA certificates to trust for HTTPS registries.
    pub ca_certs: Vec<PathBuf>,
    pub credentials: CredentialStore,
    /// Retries after the first attempt, for transport errors, 429 and 5xx.
    pub retries: u32,
    /// First backoff; doubled each retry.
    pub backoff: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            plain_http: Vec::new(),
            https: Vec::new(),
            ca_certs: Vec::new(),
            credentials: CredentialStore::default(),
            retries: 4,
            backoff: Duration::from_millis(200),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("building the HTTP client: {0}")]
    Client(String),
    #[error("request to {url} failed: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("{url} answered {status}: {body}")]
    Status { url: String, status: StatusCode, body: String },
    #[error("{url}: authentication required ({detail})")]
    Unauthorized { url: String, detail: String },
    #[error("getting a token from {realm}: {detail}")]
    Token { realm: String, detail: String },
    #[error("manifest from {url} is larger than {MAX_MANIFEST} bytes")]
    ManifestTooLarge { url: String },
    #[error("manifest {reference}: registry sent content with digest {actual}")]
    ManifestDigest { reference: String, actual: Digest },
    #[error(transparent)]
    Blob(#[from] crate::blobs::BlobError),
}

impl RegistryError {
    /// Worth another try: the network or the server had a bad moment.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Transport { .. } => true,
            RegistryError::Status { status, .. } => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
            _ => false,
        }
    }
}

pub struct RegistryClient {
    http: reqwest::Client,
    config: RegistryConfig,
    /// `Authorization` header values per `domain/repository`.
    auth: Mutex<HashMap<String, String>>,
}

impl RegistryClient {
    pub fn new(config: RegistryConfig) -> Result<Self, RegistryError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("skiff-images/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60));
        for path in &config.ca_certs {
            let pem = std::fs::read(path).map_err(|e| RegistryError::Client(format!("reading {}: {e}", path.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| RegistryError::Client(format!("parsing {}: {e}", path.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| RegistryError::Client(e.to_string()))?;
        Ok(RegistryClient { http, config, auth: Mutex::new(HashMap::new()) })
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    fn scheme(&self, host: &str) -> &'static str {
        if self.config.https.iter().any(|h| h == host) {
            return "https";
        }
        let bare = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
        let loopback = bare == "localhost" || bare == "[::1]" || bare.starts_with("127.");
        if loopback || self.config.plain_http.iter().any(|h| h == host) {
            "http"
        } else {
            "https"
        }
    }

    fn url(&self, r: &Reference, tail: &str) -> String {
        let host = r.registry_host();
        format!("{}://{host}/v2/{}/{tail}", self.scheme(host), r.repository)
    }

    /// Sends a GET, handling auth challenges and retrying transient failures. Non-2xx is an error.
    async fn get(&self, r: &Reference, url: &str, accept: Option<&str>) -> Result<reqwest::Response, RegistryError> {
        let key = r.name();
        let mut attempt = 0;
        let mut authenticated = false;
        loop {
            let mut req = self.http.request(Method::GET, url);
            if let Some(a) = accept {
                req = req.header(ACCEPT_HEADER, a);
            }
            if let Some(h) = self.auth.lock().expect("auth map poisoned").get(&key) {
                req = req.header(AUTHORIZATION, h.clone());
            }
            let err = match req.send().await {
                Err(source) => RegistryError::Transport { url: url.to_string(), source },
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !authenticated => {
                    authenticated = true;
                    self.authenticate(r, url, resp.headers()).await?;
                    continue;
                }
                Ok(resp) if !resp.status().is_success() => {
                    let status = resp.status();
                    let mut body = resp.text().await.unwrap_or_default();
                    body.truncate(300);
                    if status == StatusCode::UNAUTHORIZED {
                        return Err(RegistryError::Unauthorized { url: url.to_string(), detail: body });
                    }
                    RegistryError::Status { url: url.to_string(), status, body }
                }
                Ok(resp) => return Ok(resp),
            };
            if !err.is_transient() || attempt >= self.config.retries {
                return Err(err);
            }
            let delay = self.config.backoff * 2u32.pow(attempt);
            tracing::warn!(url, attempt, ?delay, error = %err, "retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// Answers a 401 challenge: basic credentials, or a bearer token from the realm.
    async fn authenticate(&self, r: &Reference, url: &str, headers: &HeaderMap) -> Result<(), RegistryError> {
        let header = headers.get(WWW_AUTHENTICATE).and_then(|h| h.to_str().ok()).unwrap_or("");
        let creds = self.config.credentials.get(&r.domain);
        let basic = creds.map(|c| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password)))
        });
        let value = match parse_challenge(header) {
            Some(Challenge::Basic { .. }) => basic.ok_or_else(|| RegistryError::Unauthorized {
                url: url.to_string(),
                detail: format!("basic auth asked and no credentials for {} in the auth file", r.domain),
            })?,
            Some(Challenge::Bearer { realm, service, scope }) => {
                let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", r.repository));
                let mut req = self.http.get(&realm).query(&[("scope", scope.as_str())]);
                if let Some(service) = &service {
                    req = req.query(&[("service", service.as_str())]);
                }
                if let Some(b) = &basic {
                    req = req.header(AUTHORIZATION, b);
                }
                let token_err = |detail: String| RegistryError::Token { realm: realm.clone(), detail };
                let resp = req.send().await.map_err(|e| token_err(e.to_string()))?;
                if !resp.status().is_success() {
                    return Err(token_err(format!("answered {}", resp.status())));
                }
                #[derive(serde::Deserialize)]
                struct TokenResponse {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let t: TokenResponse = resp.json().await.map_err(|e| token_err(format!("bad token response: {e}")))?;
                let token = t.token.or(t.access_token).ok_or_else(|| token_err("no token in response".into()))?;
                format!("Bearer {token}")
            }
            None => {
                return Err(RegistryError::Unauthorized {
                    url: url.to_string(),
                    detail: format!("unsupported challenge {header:?}"),
                })
            }
        };
        self.auth.lock().expect("auth map poisoned").insert(r.name(), value);
        Ok(())
    }

    /// Fetches a manifest by tag or digest: its bytes, `Content-Type`, and digest (verified when asked by digest).
    pub async fn manifest(&self, r: &Reference, reference: &str) -> Result<(Vec<u8>, Option<String>, Digest), RegistryError> {
        let url = self.url(r, &format!("manifests/{reference}"));
        let resp = self.get(r, &url, Some(ACCEPT)).await?;
        let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        if resp.content_length().is_some_and(|l| l > MAX_MANIFEST as u64) {
            return Err(RegistryError::ManifestTooLarge { url });
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| RegistryError::Transport { url: url.clone(), source })?;
            body.extend_from_slice(&chunk);
            if body.len() > MAX_MANIFEST {
                return Err(RegistryError::ManifestTooLarge { url });
            }
        }
        let digest = Digest::of(&body);
        if let Ok(expected) = reference.parse::<Digest>() {
            if expected != digest {
                return Err(RegistryError::ManifestDigest { reference: format!("{}@{expected}", r.name()), actual: digest });
            }
        }
        Ok((body, content_type, digest))
    }

    /// Streams a blob into `ingest`, starting over on transient failures. The caller commits (verifies).
    pub async fn blob_into(&self, r: &Reference, digest: &Digest, ingest: &mut Ingest) -> Result<(), RegistryError> {
        let url = self.url(r, &format!("blobs/{digest}"));
        let mut attempt = 0;
        loop {
            ingest.reset()?;
            let result = async {
                let resp = self.get(r, &url, None).await?;
                let mut stream = resp.bytes_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|source| RegistryError::Transport { url: url.clone(), source })?;
                    ingest.write_chunk(&chunk)?;
                }
                Ok::<(), RegistryError>(())
            }
            .await;
            match result {
                Err(e) if e.is_transient() && attempt < self.config.retries => {
                    let delay = self.config.backoff * 2u32.pow(attempt);
                    tracing::warn!(%digest, attempt, ?delay, error = %e, "blob download failed, starting over");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}
