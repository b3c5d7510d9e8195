//! TLS bootstrap (the kubelet's `--bootstrap-kubeconfig`): a new node has only a bootstrap token; it makes a key,
//! sends a CertificateSigningRequest for `CN=system:node:<name>, O=system:nodes` to signer
//! `kubernetes.io/kube-apiserver-client-kubelet`, waits for the control plane to approve and sign it, and writes
//! its own kubeconfig (mode 0600) with the certificate. While it runs ([`renewal_loop`]), and at start, it renews
//! that certificate the same way with its own credentials once it is due: at a random point between 70 and 90 % of
//! its life, as the kubelet's certificate manager. The API client takes the new certificate on its next connection
//! (`skiff_tls::client`).

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::Config;

const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

async fn load(path: &Path) -> anyhow::Result<kube::Config> {
    let kc = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.with_context(|| format!("using {}", path.display()))
}

/// (issued, not after) of the client certificate in a kubeconfig, if it has one.
fn cert_validity(path: &Path) -> Option<(SystemTime, SystemTime)> {
    use x509_parser::prelude::*;
    let kc = kube::config::Kubeconfig::read_from(path).ok()?;
    let data = kc.auth_infos.first()?.auth_info.as_ref()?.client_certificate_data.clone()?;
    let pem = String::from_utf8(base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data).ok()?).ok()?;
    let der = skiff_tls::pem_blocks(&pem, "CERTIFICATE").into_iter().next()?;
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    let at = |t: ASN1Time| SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64);
    Some((at(cert.validity().not_before), at(cert.validity().not_after)))
}

/// Make sure `config.kubeconfig` holds this node's credentials: obtain them with the bootstrap kubeconfig when the
/// file is missing, renew them when due. Without `--bootstrap-kubeconfig` nothing happens.
pub async fn ensure_credentials(config: &Config) -> anyhow::Result<()> {
    let (Some(bootstrap), Some(target)) = (&config.bootstrap_kubeconfig, &config.kubeconfig) else { return Ok(()) };
    let creds = if target.exists() {
        match cert_validity(target) {
            // Not due yet (the earliest point the running agent would renew at): nothing to do.
            Some((nb, na)) if SystemTime::now() < renewal_time(nb, na, 0.0) => return Ok(()),
            Some((_, na)) if SystemTime::now() < na => {
                tracing::info!("node certificate past 70 % of its life: renewing");
                target.as_path()
            }
            _ => {
                tracing::warn!(kubeconfig = %target.display(), "node credentials expired or unreadable: bootstrapping again");
                bootstrap.as_path()
            }
        }
    } else {
        tracing::info!(bootstrap = %bootstrap.display(), "no node credentials yet: TLS bootstrap");
        bootstrap.as_path()
    };
    let renewing = creds == target.as_path();
    match obtain(config, creds, target).await {
        // A renewal that fails leaves the current, still valid, certificate in use; the running agent tries again.
        Err(e) if renewing => {
            tracing::warn!(error = format!("{e:#}"), "renewing the node certificate at start failed; going on with the current one");
            Ok(())
        }
        r => r,
    }
}

/// A certificate through the credentials in `creds`, written to `target`.
async fn obtain(config: &Config, creds: &Path, target: &Path) -> anyhow::Result<()> {
    let kc = load(creds).await?;
    let ca = kc.root_cert.clone().and_then(|c| c.into_iter().next()).context("the bootstrap kubeconfig names no certificate authority")?;
    let server = kc.cluster_url.to_string().trim_end_matches('/').to_string();
    let kc = skiff_tls::failover::apply(kc, &config.api_servers).await.map_err(anyhow::Error::msg)?;
    let client = kube::Client::try_from(kc).context("bootstrap API client")?;
    let (cert, key) = request_certificate(&client, &config.node_name).await?;
    let user = format!("system:node:{}", config.node_name);
    let text = skiff_tls::kubeconfig(&server, &user, &skiff_tls::der_to_pem(&ca, "CERTIFICATE"), &cert, &key);
    write_private(target, &text).with_context(|| format!("writing {}", target.display()))?;
    tracing::info!(kubeconfig = %target.display(), "node credentials written");
    Ok(())
}

/// When a certificate issued at `not_before` and valid until `not_after` is due for renewal: at `jitter` (0..1)
/// of the way between 70 and 90 % of its life.
pub fn renewal_time(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let life = not_after.duration_since(not_before).unwrap_or_default();
    not_before + life.mul_f64(0.7 + 0.2 * jitter.clamp(0.0, 1.0))
}

/// Renew the node certificate whenever it is due, while the agent runs (only when the agent manages its own
/// credentials, i.e. with --bootstrap-kubeconfig). A failed attempt is retried every 30 s.
pub async fn renewal_loop(config: Config, client: kube::Client) {
    let (Some(target), Some(_)) = (config.kubeconfig.clone(), &config.bootstrap_kubeconfig) else { return };
    // Spread the nodes' renewals (no randomness needed beyond that: the clock's nanoseconds and the PID).
    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().subsec_nanos() ^ std::process::id();
    let jitter = f64::from(seed % 1000) / 999.0;
    loop {
        let Some((nb, na)) = cert_validity(&target) else {
            tokio::time::sleep(Duration::from_secs(60)).await;
            continue;
        };
        let due = renewal_time(nb, na, jitter);
        let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
        if !wait.is_zero() {
            // Wake at least hourly to look at the file again (someone may have replaced it).
            tokio::time::sleep(wait.min(Duration::from_secs(3600))).await;
            continue;
        }
        tracing::info!(expires = ?na, "node certificate due for renewal");
        match renew(&config, &target, &client).await {
            Ok(()) => tracing::info!(kubeconfig = %target.display(), "node certificate renewed"),
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "renewing the node certificate; retrying in 30 s");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    }
}

/// A new certificate through `client` (the node's own credentials), written over `target` with its server and CA.
async fn renew(config: &Config, target: &Path, client: &kube::Client) -> anyhow::Result<()> {
    use base64::Engine;
    let kc = kube::config::Kubeconfig::read_from(target).with_context(|| format!("reading {}", target.display()))?;
    let cluster = kc.clusters.first().and_then(|c| c.cluster.as_ref()).context("the node kubeconfig has no cluster")?;
    let server = cluster.server.clone().context("the node kubeconfig names no server")?;
    let ca = cluster.certificate_authority_data.clone().context("the node kubeconfig has no certificate-authority-data")?;
    let ca = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(ca).context("certificate-authority-data")?)
        .context("certificate-authority-data is not PEM")?;
    let (cert, key) = request_certificate(client, &config.node_name).await?;
    let user = format!("system:node:{}", config.node_name);
    write_private(target, &skiff_tls::kubeconfig(&server, &user, &ca, &cert, &key)).with_context(|| format!("writing {}", target.display()))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    skiff_tls::write_file_atomic(path, text.as_bytes(), 0o600)
}

/// Send the CSR and wait (up to 15 minutes, as the kubelet) for the certificate: (certificate PEM, key PEM).
async fn request_certificate(client: &kube::Client, node: &str) -> anyhow::Result<(String, String)> {
    use base64::Engine;
    let key = rcgen::KeyPair::generate().context("generating the node key")?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
    let request = params.serialize_request(&key).context("making the certificate request")?.pem().context("encoding it")?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csr: CertificateSigningRequest = serde_json::from_value(json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"generateName": "node-csr-"},
        "spec": {"request": base64::engine::general_purpose::STANDARD.encode(&request), "signerName": SIGNER,
                 "usages": ["digital signature", "key encipherment", "client auth"]}}))?;
    let created = api.create(&PostParams::default(), &csr).await.context("creating the CertificateSigningRequest")?;
    let name = created.metadata.name.unwrap_or_default();
    tracing::info!(csr = %name, "certificate signing request sent; waiting for approval");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15 * 60);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(csr) = api.get(&name).await else { continue };
        let status = csr.status.unwrap_or_default();
        for c in status.conditions.iter().flatten() {
            if (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True" {
                bail!("certificate signing request {name} {}: {}", c.type_.to_lowercase(), c.message.clone().unwrap_or_default());
            }
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            let cert = String::from_utf8(cert.0).context("the issued certificate is not PEM")?;
            if skiff_tls::pem_blocks(&cert, "CERTIFICATE").is_empty() {
                bail!("the issued certificate of {name} has no CERTIFICATE block");
            }
            return Ok((cert, key.serialize_pem()));
        }
    }
    bail!("certificate signing request {name} was not approved within 15 minutes (kubectl certificate approve {name})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_between_70_and_90_percent() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let na = nb + Duration::from_secs(1_000);
        assert_eq!(renewal_time(nb, na, 0.0), nb + Duration::from_secs(700));
        assert_eq!(renewal_time(nb, na, 1.0), nb + Duration::from_secs(900));
        assert_eq!(renewal_time(nb, na, 0.5), nb + Duration::from_secs(800));
        assert_eq!(renewal_time(nb, na, 7.0), nb + Duration::from_secs(900), "jitter is clamped");
    }
}
