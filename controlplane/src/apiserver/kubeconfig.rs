//! The admin kubeconfig the control plane writes into its data directory on start (as k3s does).

use std::path::Path;

/// A kubeconfig for `server` (e.g. `http://127.0.0.1:6443`).
pub fn render(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: skiff
  cluster:
    server: {server}
contexts:
- name: skiff
  context:
    cluster: skiff
    user: admin
    namespace: default
current-context: skiff
users:
- name: admin
  user: {{}}
"
    )
}

/// A kubeconfig for `server` (https) that trusts `ca_pem` and authenticates with a client certificate.
pub use skiff_tls::kubeconfig as render_tls;

/// Write `text` atomically (temp file + rename), readable by the owner only.
pub fn write_text(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Write a credential-less kubeconfig for `server` (plain-HTTP test servers).
pub fn write(path: &Path, server: &str) -> std::io::Result<()> {
    write_text(path, &render(server))
}
