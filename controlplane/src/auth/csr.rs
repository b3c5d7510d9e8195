//! CertificateSigningRequests: node join by bootstrap token and node certificate renewal, as upstream's csrapprover
//! and csrsigning controllers do it. Runs in every API server process (they hold the CA); a CSR is approved and
//! signed once because each step is a write that conflicts if another process made it first.
//!
//! - Approve automatically: signer `kubernetes.io/kube-apiserver-client-kubelet`, subject `CN=system:node:<name>,
//!   O=system:nodes` and nothing else, usages within {digital signature, key encipherment, client auth}, no SANs;
//!   requested by a bootstrapper (`system:bootstrappers`: a new node) or by that same node (renewal).
//!   Everything else waits for `kubectl certificate approve|deny`.
//! - Sign approved requests of `kubernetes.io/kube-apiserver-client-kubelet` (node subjects only) and
//!   `kubernetes.io/kube-apiserver-client` (any subject an administrator approved) with the cluster CA, for
//!   `spec.expirationSeconds` (at least 10 minutes) or the default lifetime.
//! - Remove CSRs an hour after they were issued, denied or failed, a day after they were made if still pending.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use super::authn::{BOOTSTRAPPERS, NODES};
use super::pki::{Ca, LeafSpec};

pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

/// The subject (CN, every O) and whether the request has extensions (SANs), from a PEM CSR. Err: not a valid
/// request (including a bad self-signature).
pub fn parse_request(pem: &str) -> Result<(String, Vec<String>, bool), String> {
    use x509_parser::prelude::*;
    let der = super::pki::pem_blocks(pem, "CERTIFICATE REQUEST").into_iter().next().ok_or("no CERTIFICATE REQUEST PEM block")?;
    let (_, req) = X509CertificationRequest::from_der(&der).map_err(|e| format!("parsing the request: {e}"))?;
    req.verify_signature().map_err(|e| format!("the request's signature does not verify: {e:?}"))?;
    let subject = &req.certification_request_info.subject;
    let cn = subject.iter_common_name().next().and_then(|c| c.as_str().ok()).unwrap_or_default().to_string();
    let orgs = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    let has_ext = req.requested_extensions().is_some_and(|mut e| e.next().is_some());
    Ok((cn, orgs, has_ext))
}

fn has_condition(csr: &CertificateSigningRequest, ty: &str) -> bool {
    csr.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == ty && c.status == "True"))
}

/// Should this request be approved without a person? (pure; `request_pem` is spec.request decoded)
pub fn auto_approvable(csr: &CertificateSigningRequest, request_pem: &str) -> bool {
    let spec = &csr.spec;
    if spec.signer_name != KUBELET_CLIENT_SIGNER {
        return false;
    }
    let Ok((cn, orgs, has_ext)) = parse_request(request_pem) else { return false };
    let Some(node) = cn.strip_prefix("system:node:").filter(|n| !n.is_empty()) else { return false };
    let usages_ok = spec.usages.as_ref().is_some_and(|u| {
        !u.is_empty() && u.iter().all(|u| ["digital signature", "key encipherment", "client auth"].contains(&u.as_str()))
            && u.iter().any(|u| u == "client auth")
    });
    let requester = spec.username.as_deref().unwrap_or_default();
    let groups = spec.groups.as_deref().unwrap_or_default();
    let by_bootstrapper = groups.iter().any(|g| g == BOOTSTRAPPERS);
    let by_itself = requester == format!("system:node:{node}") && groups.iter().any(|g| g == NODES);
    orgs == [NODES.to_string()] && !has_ext && usages_ok && (by_bootstrapper || by_itself)
}

/// Sign an approved request. Err: why it cannot be (then the CSR is marked Failed).
pub fn sign(ca: &Ca, csr: &CertificateSigningRequest, request_pem: &str, default_validity: Duration) -> Result<String, String> {
    let (cn, orgs, _) = parse_request(request_pem)?;
    let spec = &csr.spec;
    match spec.signer_name.as_str() {
        KUBELET_CLIENT_SIGNER if !(cn.starts_with("system:node:") && orgs == [NODES.to_string()]) => {
            return Err(format!("{KUBELET_CLIENT_SIGNER} signs only system:node:<name> in system:nodes, not {cn:?} in {orgs:?}"))
        }
        KUBELET_CLIENT_SIGNER | CLIENT_SIGNER => {}
        other => return Err(format!("signer {other:?} is not served here")),
    }
    if orgs.len() > 1 {
        return Err("at most one organization (group) per certificate".into());
    }
    let validity = spec.expiration_seconds.map(|s| Duration::from_secs(s.max(600) as u64)).unwrap_or(default_validity).min(default_validity);
    let leaf = LeafSpec { common_name: cn, organization: orgs.into_iter().next(), client: true, validity: Some(validity), ..Default::default() };
    ca.sign_request(request_pem, &leaf).map_err(|e| e.to_string())
}

fn decoded_request(csr: &CertificateSigningRequest) -> Option<String> {
    String::from_utf8(csr.spec.request.0.clone()).ok()
}

/// Approve, sign and clean up, every second, until the process ends.
pub async fn run(client: kube::Client, ca: Arc<Ca>, default_validity: Duration) {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    loop {
        if let Err(e) = pass(&api, &ca, default_validity).await {
            tracing::debug!(error = %e, "certificate signing pass");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn pass(api: &Api<CertificateSigningRequest>, ca: &Ca, default_validity: Duration) -> Result<(), kube::Error> {
    let now = chrono::Utc::now();
    for csr in api.list(&ListParams::default()).await?.items {
        let Some(name) = csr.metadata.name.clone() else { continue };
        let age = csr.metadata.creation_timestamp.as_ref().map(|t| now - t.0).unwrap_or_default();
        let issued = csr.status.as_ref().and_then(|s| s.certificate.as_ref()).is_some_and(|c| !c.0.is_empty());
        let finished = issued || has_condition(&csr, "Denied") || has_condition(&csr, "Failed");
        if (finished && age > chrono::Duration::hours(1)) || age > chrono::Duration::hours(24) {
            let _ = api.delete(&name, &DeleteParams::default()).await;
            continue;
        }
        if finished {
            continue;
        }
        let Some(pem) = decoded_request(&csr) else { continue };
        if !has_condition(&csr, "Approved") {
            if auto_approvable(&csr, &pem) {
                let mut conditions = csr.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
                conditions.push(serde_json::from_value(json!({"type": "Approved", "status": "True", "reason": "AutoApproved",
                    "message": "Auto approving node client certificate (bootstrap or renewal)",
                    "lastUpdateTime": now, "lastTransitionTime": now})).expect("condition"));
                let body = json!({"metadata": {"resourceVersion": csr.metadata.resource_version}, "status": {"conditions": conditions}});
                match api.patch_subresource("approval", &name, &PatchParams::default(), &Patch::Merge(&body)).await {
                    Ok(_) => tracing::info!(csr = %name, requester = ?csr.spec.username, "certificate signing request approved"),
                    Err(e) => tracing::debug!(csr = %name, error = %e, "approving"),
                }
            }
            continue;
        }
        let status = match sign(ca, &csr, &pem, default_validity) {
            Ok(cert) => {
                use base64::Engine;
                tracing::info!(csr = %name, "certificate issued");
                json!({"certificate": base64::engine::general_purpose::STANDARD.encode(cert)})
            }
            Err(why) => {
                tracing::warn!(csr = %name, %why, "certificate signing failed");
                let mut conditions = csr.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
                conditions.push(serde_json::from_value(json!({"type": "Failed", "status": "True", "reason": "SigningError",
                    "message": why, "lastUpdateTime": now, "lastTransitionTime": now})).expect("condition"));
                json!({"conditions": conditions})
            }
        };
        let body = json!({"metadata": {"resourceVersion": csr.metadata.resource_version}, "status": status});
        if let Err(e) = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&body)).await {
            tracing::debug!(csr = %name, error = %e, "writing the certificate");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cn: &str, orgs: &[&str]) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        for (i, o) in orgs.iter().enumerate() {
            let ty = if i == 0 { rcgen::DnType::OrganizationName } else { rcgen::DnType::CustomDnType(vec![2, 5, 4, 10]) };
            p.distinguished_name.push(ty, *o);
        }
        p.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn csr(pem: &str, signer: &str, user: &str, groups: &[&str], usages: &[&str]) -> CertificateSigningRequest {
        use base64::Engine;
        serde_json::from_value(json!({"metadata": {"name": "c"}, "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem), "signerName": signer,
            "usages": usages, "username": user, "groups": groups}}))
        .unwrap()
    }

    const U: &[&str] = &["digital signature", "key encipherment", "client auth"];

    #[test]
    fn approval_rules() {
        let node = request("system:node:n1", &["system:nodes"]);
        assert!(auto_approvable(&csr(&node, KUBELET_CLIENT_SIGNER, "system:bootstrap:abcdef", &["system:bootstrappers"], U), &node));
        assert!(auto_approvable(&csr(&node, KUBELET_CLIENT_SIGNER, "system:node:n1", &["system:nodes"], U), &node), "renewal");
        assert!(!auto_approvable(&csr(&node, KUBELET_CLIENT_SIGNER, "system:node:n2", &["system:nodes"], U), &node), "another node");
        assert!(!auto_approvable(&csr(&node, KUBELET_CLIENT_SIGNER, "alice", &[], U), &node), "not a bootstrapper");
        assert!(!auto_approvable(&csr(&node, CLIENT_SIGNER, "system:bootstrap:x", &["system:bootstrappers"], U), &node), "other signer");
        assert!(!auto_approvable(&csr(&node, KUBELET_CLIENT_SIGNER, "system:bootstrap:x", &["system:bootstrappers"], &["server auth"]), &node));
        let masters = request("system:node:n1", &["system:nodes", "system:masters"]);
        assert!(!auto_approvable(&csr(&masters, KUBELET_CLIENT_SIGNER, "system:bootstrap:x", &["system:bootstrappers"], U), &masters));
        let admin = request("root", &["system:masters"]);
        assert!(!auto_approvable(&csr(&admin, KUBELET_CLIENT_SIGNER, "system:bootstrap:x", &["system:bootstrappers"], U), &admin));
        assert!(parse_request("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n").is_err());
    }

    #[test]
    fn signing() {
        let ca = Ca::generate("t").unwrap();
        let node = request("system:node:n1", &["system:nodes"]);
        let cert = sign(&ca, &csr(&node, KUBELET_CLIENT_SIGNER, "x", &[], U), &node, Duration::from_secs(3600)).unwrap();
        let der = super::super::pki::pem_blocks(&cert, "CERTIFICATE").remove(0);
        assert_eq!(super::super::pki::subject_of(&der), Some(("system:node:n1".into(), vec!["system:nodes".into()])));
        let admin = request("root", &["system:masters"]);
        assert!(sign(&ca, &csr(&admin, KUBELET_CLIENT_SIGNER, "x", &[], U), &admin, Duration::from_secs(3600)).is_err());
        assert!(sign(&ca, &csr(&admin, CLIENT_SIGNER, "x", &[], U), &admin, Duration::from_secs(3600)).is_ok(), "an approved client CSR");
        assert!(sign(&ca, &csr(&admin, "example.com/x", "x", &[], U), &admin, Duration::from_secs(3600)).is_err());
    }
}
