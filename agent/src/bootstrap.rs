//! TLS bootstrap (the kubelet's `--bootstrap-kubeconfig`): a new node has only a bootstrap token; it makes a key,
//! sends a CertificateSigningRequest for `CN=system:node:<name>, O=system:nodes` to signer
//! `kubernetes.io/kube-apiserver-client-kubelet`, waits for the control plane to approve and sign it, and writes
//! its own kubeconfig (mode 0600) with the certificate. On later starts, once two thirds of that certificate's life
//! have passed, it renews it the same way with its own credentials.

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
            // The kubelet renews between 70 and 90 % of the lifetime; at start is when Skiff does.
            Some((nb, na)) if SystemTime::now() < nb + na.duration_since(nb).unwrap_or_default() * 2 / 3 => return Ok(()),
            Some((_, na)) if SystemTime::now() < na => {
                tracing::info!("node certificate past two thirds of its life: renewing");
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
