//! The cloud controller manager: what a cloud would tell Kubernetes about its machines and load balancers,
//! for bare hosts and VMs.
//!
//! [`CloudProvider`] is the provider interface (instances: addresses, existence, shutdown, zone; load
//! balancers: ensure, delete). [`inventory::Inventory`] is the provider for bare hosts: an inventory file
//! listing the machines and a pool of LoadBalancer addresses. Two controllers use it: nodes get their addresses
//! and zone from it (and a Node whose machine left the inventory is deleted), and Services of type LoadBalancer
//! get an address from the pool in `status.loadBalancer.ingress` (released when the Service goes or changes type).

pub mod inventory;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::controllers::{error_policy, ControllerError};

/// What the provider knows of a machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// (type, address): InternalIP, ExternalIP, Hostname.
    pub addresses: Vec<(String, String)>,
    pub zone: Option<String>,
    pub shutdown: bool,
}

pub trait CloudProvider: Send + Sync + 'static {
    /// The machine behind a node name; None when it does not exist (any more).
    fn instance(&self, node: &str) -> Result<Option<Instance>, String>;
    /// An address for a LoadBalancer Service, keeping `current` if it is still valid; `used` are the addresses
    /// other Services hold.
    fn ensure_load_balancer(&self, current: Option<IpAddr>, used: &[IpAddr]) -> Result<IpAddr, String>;
}

pub struct Context {
    client: Client,
    provider: Arc<dyn CloudProvider>,
    services: std::sync::Mutex<Option<Store<Service>>>,
    resync: Duration,
}

fn lb_ip(s: &Service) -> Option<IpAddr> {
    s.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref()?.first()?.ip.as_ref()?.parse().ok()
}

fn is_lb(s: &Service) -> bool {
    s.spec.as_ref().and_then(|sp| sp.type_.as_deref()) == Some("LoadBalancer")
}

pub async fn reconcile_service(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let current = lb_ip(&svc);
    let err = |e| ControllerError::Api { object: format!("{ns}/{name}"), source: Box::new(e) };
    if !is_lb(&svc) || svc.metadata.deletion_timestamp.is_some() {
        if current.is_some() {
            // No longer a LoadBalancer: give the address back.
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": null}}})))
                .await
                .map_err(err)?;
        }
        return Ok(Action::requeue(ctx.resync));
    }
    let used: Vec<IpAddr> = {
        let store = ctx.services.lock().unwrap_or_else(|e| e.into_inner()).clone();
        store
            .map(|s| s.state().iter().filter(|o| o.uid() != svc.uid() && is_lb(o)).filter_map(|o| lb_ip(o)).collect())
            .unwrap_or_default()
    };
    let ip = ctx.provider.ensure_load_balancer(current, &used).map_err(|reason| ControllerError::Invalid { object: format!("{ns}/{name}"), reason })?;
    if Some(ip) != current {
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}}})))
            .await
            .map_err(err)?;
        tracing::info!(service = %format!("{ns}/{name}"), %ip, "load balancer address assigned");
    }
    Ok(Action::requeue(ctx.resync))
}

pub async fn reconcile_node(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let name = node.name_any();
    let api: Api<Node> = Api::all(ctx.client.clone());
    let err = |e| ControllerError::Api { object: name.clone(), source: Box::new(e) };
    match ctx.provider.instance(&name).map_err(|reason| ControllerError::Invalid { object: name.clone(), reason })? {
        None => {
            tracing::warn!(node = %name, "machine is not in the inventory any more; deleting the node");
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404, .. })) => {}
                Err(e) => return Err(err(e)),
            }
        }
        Some(inst) => {
            let addresses: Vec<serde_json::Value> = inst.addresses.iter().map(|(t, a)| json!({"type": t, "address": a})).collect();
            let current: Vec<serde_json::Value> = node
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .map(|a| a.iter().map(|a| json!({"type": a.type_, "address": a.address})).collect())
                .unwrap_or_default();
            if !addresses.is_empty() && addresses != current {
                // Merge patch replaces the list: the inventory is the source of truth for addresses.
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"addresses": addresses}}))).await.map_err(err)?;
            }
            if let Some(zone) = &inst.zone {
                if node.labels().get("topology.kubernetes.io/zone") != Some(zone) {
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"topology.kubernetes.io/zone": zone}}})))
                        .await
                        .map_err(err)?;
                }
            }
            if inst.shutdown {
                let taint_patch = json!({"spec": {"taints": [{"key": "node.cloudprovider.kubernetes.io/shutdown", "effect": "NoSchedule"}]}});
                let has = node.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|t| t.iter().any(|t| t.key == "node.cloudprovider.kubernetes.io/shutdown"));
                if !has {
                    api.patch(&name, &PatchParams::default(), &Patch::Strategic(taint_patch)).await.map_err(err)?;
                }
            }
        }
    }
    Ok(Action::requeue(ctx.resync))
}

/// Run both cloud controllers until `shutdown` resolves.
pub async fn run(client: Client, provider: Arc<dyn CloudProvider>, resync: Duration, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let ctx = Arc::new(Context { client: client.clone(), provider, services: std::sync::Mutex::new(None), resync });
    let svc_controller = Controller::new(Api::<Service>::all(client.clone()), kube::runtime::watcher::Config::default());
    *ctx.services.lock().unwrap_or_else(|e| e.into_inner()) = Some(svc_controller.store());
    let services = svc_controller
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile_service, error_policy, ctx.clone())
        .for_each(|_| async {});
    let nodes = Controller::new(Api::<Node>::all(client), kube::runtime::watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile_node, error_policy, ctx)
        .for_each(|_| async {});
    tokio::join!(services, nodes);
}
