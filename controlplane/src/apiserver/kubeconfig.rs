//! The kubeconfigs the control plane writes: the admin's in its data directory on start (as k3s does), and those
//! `skiff-controlplane kubeconfig` issues.

use std::path::Path;

/// A kubeconfig for `server` (https) that trusts `ca_pem` and authenticates with a client certificate.
pub use skiff_tls::kubeconfig as render_tls;

/// Write `text` atomically (temp file + rename), readable by the owner only.
pub fn write_text(path: &Path, text: &str) -> std::io::Result<()> {
    skiff_tls::write_file_atomic(path, text.as_bytes(), 0o600)
}
