//! Static pods: pod manifests in a directory on the node (`--pod-manifest-path`), run by this agent and mirrored to
//! the API as the kubelet does — a mirror pod named `<name>-<node>`, bound to this node, owned by the Node, with the
//! `kubernetes.io/config.{source,hash,mirror}` annotations. The pod then runs through the ordinary pod workers.
//!
//! Every few seconds the directory is read and reconciled against the mirror pods of this node: a new file creates
//! its mirror pod, a changed file replaces it (delete, then create: the containers restart, as upstream), a removed
//! file deletes it, and a mirror pod deleted through the API is created again. A file that is not a valid pod is
//! skipped with one log line per version of the file.
//!
//! Unlike the kubelet, the pod only runs while the API server is reachable (its worker is driven by the API).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use sha2::Digest;

pub const SOURCE: &str = "kubernetes.io/config.source";
pub const HASH: &str = "kubernetes.io/config.hash";
pub const MIRROR: &str = "kubernetes.io/config.mirror";

/// One manifest read from the directory: the pod it describes, or why it is not one.
#[derive(Debug)]
pub struct Manifest {
    pub file: String,
    pub hash: String,
    pub pod: Result<Pod, String>,
}

pub fn hash(bytes: &[u8]) -> String {
    let d = sha2::Sha256::digest(bytes);
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Parses one manifest (YAML or JSON, one Pod) into the mirror pod for `node`.
pub fn parse(bytes: &[u8], node: &str, node_uid: &str) -> Result<Pod, String> {
    let v: serde_json::Value = serde_yaml_ng::from_slice(bytes).map_err(|e| format!("not YAML or JSON: {e}"))?;
    match (v["apiVersion"].as_str(), v["kind"].as_str()) {
        (Some("v1"), Some("Pod")) => {}
        (a, k) => return Err(format!("want apiVersion v1 and kind Pod, got {:?} {:?}", a.unwrap_or(""), k.unwrap_or(""))),
    }
    let mut pod: Pod = serde_json::from_value(v).map_err(|e| format!("not a valid Pod: {e}"))?;
    let name = pod.metadata.name.clone().filter(|n| !n.is_empty()).ok_or("metadata.name is missing")?;
    let h = hash(bytes);
    let mirror = format!("{name}-{node}");
    if mirror.len() > 253 {
        return Err(format!("the mirror pod name {mirror:?} is longer than 253 characters"));
    }
    pod.metadata.name = Some(mirror);
    pod.metadata.namespace = Some(pod.metadata.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into()));
    pod.metadata.uid = None;
    pod.metadata.resource_version = None;
    let ann = pod.metadata.annotations.get_or_insert_with(Default::default);
    ann.insert(SOURCE.into(), "file".into());
    ann.insert(HASH.into(), h.clone());
    ann.insert(MIRROR.into(), h);
    pod.metadata.owner_references = Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.into(),
        uid: node_uid.into(),
        controller: Some(true),
        ..Default::default()
    }]);
    let spec = pod.spec.as_mut().ok_or("spec is missing")?;
    if spec.containers.is_empty() {
        return Err("spec.containers is empty".into());
    }
    spec.node_name = Some(node.into());
    Ok(pod)
}

/// What to do to bring the mirror pods in line with the manifests. Keys are `namespace/name`.
#[derive(Debug, PartialEq, Eq)]
pub enum Op {
    Create(String),
    /// The manifest changed: delete the old mirror pod; it is created again once it is gone.
    Replace(String),
    Delete(String),
}

pub fn plan(desired: &BTreeMap<String, String>, existing: &BTreeMap<String, String>) -> Vec<Op> {
    let mut ops = vec![];
    for (key, hash) in desired {
        match existing.get(key) {
            None => ops.push(Op::Create(key.clone())),
            Some(h) if h != hash => ops.push(Op::Replace(key.clone())),
            Some(_) => {}
        }
    }
    for key in existing.keys() {
        if !desired.contains_key(key) {
            ops.push(Op::Delete(key.clone()));
        }
    }
    ops
}

pub fn read_dir(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !(name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")) {
            continue;
        }
        if let Ok(bytes) = std::fs::read(e.path()) {
            out.push((name, bytes));
        }
    }
    out.sort();
    out
}

/// Reconciles every 5 s until `stop` flips.
pub async fn run(client: kube::Client, node: String, dir: std::path::PathBuf, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut reported: BTreeSet<(String, String)> = BTreeSet::new();
    loop {
        if let Err(e) = sync_once(&client, &node, &dir, &mut reported).await {
            tracing::warn!(error = %e, "static pods: sync failed; retrying");
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

async fn sync_once(client: &kube::Client, node: &str, dir: &Path, reported: &mut BTreeSet<(String, String)>) -> Result<(), kube::Error> {
    let node_uid = Api::<Node>::all(client.clone()).get(node).await?.uid().unwrap_or_default();
    let (d, n) = (dir.to_path_buf(), node.to_string());
    let files = tokio::task::spawn_blocking(move || read_dir(&d)).await.unwrap_or_default();
    let mut desired: BTreeMap<String, Pod> = BTreeMap::new();
    for (file, bytes) in files {
        let h = hash(&bytes);
        match parse(&bytes, &n, &node_uid) {
            Ok(pod) => {
                let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
                if desired.contains_key(&key) {
                    if reported.insert((file.clone(), h)) {
                        tracing::error!(%file, pod = %key, "static pod manifest skipped: another file defines the same pod");
                    }
                    continue;
                }
                desired.insert(key, pod);
            }
            Err(why) => {
                if reported.insert((file.clone(), h)) {
                    tracing::error!(%file, error = %why, "static pod manifest skipped");
                }
            }
        }
    }
    let all: Api<Pod> = Api::all(client.clone());
    let mirrors = all.list(&ListParams::default().fields(&format!("spec.nodeName={node}"))).await?;
    let mut existing: BTreeMap<String, String> = BTreeMap::new();
    let mut terminating: BTreeSet<String> = BTreeSet::new();
    for p in &mirrors.items {
        let Some(h) = p.annotations().get(MIRROR) else { continue };
        let key = format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any());
        if p.metadata.deletion_timestamp.is_some() {
            terminating.insert(key.clone());
        }
        existing.insert(key, h.clone());
    }
    let hashes: BTreeMap<String, String> = desired.iter().map(|(k, p)| (k.clone(), p.annotations().get(HASH).cloned().unwrap_or_default())).collect();
    for op in plan(&hashes, &existing) {
        match op {
            Op::Create(key) => {
                let pod = &desired[&key];
                let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
                match api.create(&PostParams::default(), pod).await {
                    Ok(_) => tracing::info!(pod = %key, "static pod: mirror pod created"),
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => tracing::warn!(pod = %key, error = %e, "static pod: creating the mirror pod failed"),
                }
            }
            Op::Replace(key) | Op::Delete(key) if terminating.contains(&key) => {}
            Op::Replace(key) | Op::Delete(key) => {
                let (ns, name) = key.split_once('/').unwrap_or(("default", &key));
                let api: Api<Pod> = Api::namespaced(client.clone(), ns);
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => tracing::info!(pod = %key, "static pod: mirror pod deleted (manifest changed or removed)"),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => tracing::warn!(pod = %key, error = %e, "static pod: deleting the mirror pod failed"),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: c, image: busybox}]\n";

    #[test]
    fn manifests_become_mirror_pods() {
        let p = parse(WEB.as_bytes(), "node-1", "uid-1").unwrap();
        assert_eq!(p.name_any(), "web-node-1");
        assert_eq!(p.namespace().as_deref(), Some("default"));
        assert_eq!(p.spec.as_ref().unwrap().node_name.as_deref(), Some("node-1"));
        assert_eq!(p.annotations()[SOURCE], "file");
        assert_eq!(p.annotations()[MIRROR], hash(WEB.as_bytes()));
        assert_eq!(p.owner_references()[0].kind, "Node");
        let json = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j","namespace":"kube-system"},"spec":{"containers":[{"name":"c"}]}}"#;
        assert_eq!(parse(json, "n", "u").unwrap().namespace().as_deref(), Some("kube-system"));
    }

    #[test]
    fn bad_manifests_say_why() {
        assert!(parse(b"{{{", "n", "u").unwrap_err().contains("not YAML"));
        assert!(parse(b"apiVersion: apps/v1\nkind: Deployment\n", "n", "u").unwrap_err().contains("kind Pod"));
        assert!(parse(b"apiVersion: v1\nkind: Pod\nmetadata: {}\nspec: {containers: [{name: c}]}\n", "n", "u").unwrap_err().contains("metadata.name"));
        assert!(parse(b"apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: []}\n", "n", "u").unwrap_err().contains("containers"));
        assert!(parse(b"apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: 3}\n", "n", "u").unwrap_err().contains("not a valid Pod"));
    }

    #[test]
    fn plans_creates_replacements_and_deletes() {
        let m = |v: &[(&str, &str)]| v.iter().map(|(k, h)| (k.to_string(), h.to_string())).collect::<BTreeMap<_, _>>();
        let ops = plan(&m(&[("a/x", "1"), ("a/y", "2"), ("a/z", "3")]), &m(&[("a/y", "2"), ("a/z", "old"), ("a/gone", "9")]));
        assert_eq!(ops, vec![Op::Create("a/x".into()), Op::Replace("a/z".into()), Op::Delete("a/gone".into())]);
    }
}
