//! Containers: on-disk state of each attempt, OCI bundles (with the security settings of [`security`]), the
//! runtime CLI, and the per-container monitor.

pub mod monitor;
pub mod runtime;
pub mod security;
pub mod spec;
pub mod state;
pub mod stdin;

/// The runtime's container id for attempt `restart` of container `name` of pod `uid`.
pub fn container_id(uid: &str, name: &str, restart: u32) -> String {
    format!("{uid}-{name}-{restart}")
}
