//! Defaulting, as upstream's `SetDefaults_*` functions and the default admission plugins apply it, on JSON
//! objects. Only absent fields are filled; nothing a client set is changed.

use serde_json::{json, Map, Value};

/// Set `obj[key] = value` if `obj` is an object without that key (or with null there).
fn default(obj: &mut Value, key: &str, value: Value) {
    if let Some(m) = obj.as_object_mut() {
        match m.get(key) {
            None | Some(Value::Null) => {
                m.insert(key.to_string(), value);
            }
            Some(_) => {}
        }
    }
}

/// The object at `obj[key]`, created empty if absent.
fn child<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let m = obj.as_object_mut()?;
    let v = m.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if v.is_null() {
        *v = Value::Object(Map::new());
    }
    v.is_object().then_some(v)
}

fn each_mut<'a>(obj: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    obj.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten()
}

/// Apply the defaults of `kind` (`<apiVersion>/<Kind>`).
pub fn apply(type_key: &str, obj: &mut Value) {
    match type_key {
        "v1/Pod" => {
            if let Some(spec) = child(obj, "spec") {
                pod_spec(spec);
            }
        }
        "v1/Service" => {
            if let Some(spec) = child(obj, "spec") {
                service_spec(spec);
            }
        }
        "v1/Namespace" => {
            let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            if let Some(labels) = obj.get_mut("metadata").and_then(|m| child(m, "labels")) {
                default(labels, "kubernetes.io/metadata.name", json!(name));
            }
            if let Some(spec) = child(obj, "spec") {
                default(spec, "finalizers", json!(["kubernetes"]));
            }
        }
        "v1/Secret" => default(obj, "type", json!("Opaque")),
        "v1/PersistentVolume" => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                default(spec, "volumeMode", json!("Filesystem"));
                if let Some(hp) = spec.get_mut("hostPath").filter(|h| h.is_object()) {
                    default(hp, "type", json!(""));
                }
            }
        }
        "v1/LimitRange" => crate::apiserver::limits::apply_defaults(obj),
        "v1/PersistentVolumeClaim" => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "volumeMode", json!("Filesystem"));
            }
        }
        "storage.k8s.io/v1/StorageClass" => {
            default(obj, "reclaimPolicy", json!("Delete"));
            default(obj, "volumeBindingMode", json!("Immediate"));
        }
        "v1/Endpoints" => {
            for subset in each_mut(obj, "subsets") {
                for port in each_mut(subset, "ports") {
                    default(port, "protocol", json!("TCP"));
                }
            }
        }
        "discovery.k8s.io/v1/EndpointSlice" => {
            for port in each_mut(obj, "ports") {
                default(port, "protocol", json!("TCP"));
            }
            for ep in each_mut(obj, "endpoints") {
                let conditions = child(ep, "conditions");
                if let Some(c) = conditions {
                    default(c, "ready", json!(true));
                }
            }
        }
        "apps/v1/Deployment" => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "replicas", json!(1));
                default(spec, "revisionHistoryLimit", json!(10));
                default(spec, "progressDeadlineSeconds", json!(600));
                if let Some(strategy) = child(spec, "strategy") {
                    default(strategy, "type", json!("RollingUpdate"));
                    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                        if let Some(ru) = child(strategy, "rollingUpdate") {
                            default(ru, "maxUnavailable", json!("25%"));
                            default(ru, "maxSurge", json!("25%"));
                        }
                    }
                }
                pod_template(spec);
            }
        }
        "apps/v1/ReplicaSet" => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "replicas", json!(1));
                pod_template(spec);
            }
        }
        "apps/v1/DaemonSet" => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "revisionHistoryLimit", json!(10));
                if let Some(strategy) = child(spec, "updateStrategy") {
                    default(strategy, "type", json!("RollingUpdate"));
                    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                        if let Some(ru) = child(strategy, "rollingUpdate") {
                            default(ru, "maxUnavailable", json!(1));
                            default(ru, "maxSurge", json!(0));
                        }
                    }
                }
                pod_template(spec);
            }
        }
        "apps/v1/StatefulSet" => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "replicas", json!(1));
                default(spec, "revisionHistoryLimit", json!(10));
                default(spec, "podManagementPolicy", json!("OrderedReady"));
                if let Some(strategy) = child(spec, "updateStrategy") {
                    default(strategy, "type", json!("RollingUpdate"));
                    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                        if let Some(ru) = child(strategy, "rollingUpdate") {
                            default(ru, "partition", json!(0));
                        }
                    }
                }
                if let Some(policy) = child(spec, "persistentVolumeClaimRetentionPolicy") {
                    default(policy, "whenDeleted", json!("Retain"));
                    default(policy, "whenScaled", json!("Retain"));
                }
                if let Some(templates) = spec.get_mut("volumeClaimTemplates").and_then(Value::as_array_mut) {
                    for t in templates {
                        if let Some(pvc_spec) = child(t, "spec") {
                            default(pvc_spec, "volumeMode", json!("Filesystem"));
                        }
                    }
                }
                pod_template(spec);
            }
        }
        "scheduling.k8s.io/v1/PriorityClass" => default(obj, "preemptionPolicy", json!("PreemptLowerPriority")),
        "batch/v1/CronJob" => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "concurrencyPolicy", json!("Allow"));
                default(spec, "suspend", json!(false));
                default(spec, "successfulJobsHistoryLimit", json!(3));
                default(spec, "failedJobsHistoryLimit", json!(1));
                if let Some(job_spec) = child(spec, "jobTemplate").and_then(|t| child(t, "spec")) {
                    pod_template(job_spec);
                }
            }
        }
        "batch/v1/Job" => {
            if let Some(spec) = child(obj, "spec") {
                default(spec, "parallelism", json!(1));
                default(spec, "completions", json!(1));
                default(spec, "backoffLimit", json!(6));
                default(spec, "completionMode", json!("NonIndexed"));
                default(spec, "suspend", json!(false));
                pod_template(spec);
            }
        }
        _ => {}
    }
}

fn pod_template(spec: &mut Value) {
    if let Some(template) = child(spec, "template") {
        if let Some(pod) = child(template, "spec") {
            pod_spec(pod);
        }
    }
}

fn pod_spec(spec: &mut Value) {
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "securityContext", json!({}));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "enableServiceLinks", json!(true));
    for list in ["containers", "initContainers"] {
        for c in each_mut(spec, list) {
            container(c);
        }
    }
}

fn container(c: &mut Value) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
    // Upstream: Always when the tag is "latest" or missing (and no digest), else IfNotPresent.
    let last = image.rsplit('/').next().unwrap_or_default();
    let policy = if image.contains('@') {
        "IfNotPresent"
    } else {
        match last.split_once(':') {
            None => "Always",
            Some((_, "latest")) => "Always",
            Some(_) => "IfNotPresent",
        }
    };
    default(c, "imagePullPolicy", json!(policy));
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    for p in each_mut(c, "ports") {
        default(p, "protocol", json!("TCP"));
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).filter(|p| p.is_object()) {
            default(p, "timeoutSeconds", json!(1));
            default(p, "periodSeconds", json!(10));
            default(p, "successThreshold", json!(1));
            default(p, "failureThreshold", json!(3));
            if let Some(h) = p.get_mut("httpGet").filter(|h| h.is_object()) {
                default(h, "path", json!("/"));
                default(h, "scheme", json!("HTTP"));
            }
        }
    }
}

fn service_spec(spec: &mut Value) {
    default(spec, "type", json!("ClusterIP"));
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    if ty != "ExternalName" {
        default(spec, "sessionAffinity", json!("None"));
        default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    for p in each_mut(spec, "ports") {
        default(p, "protocol", json!("TCP"));
        if let Some(port) = p.get("port").cloned() {
            default(p, "targetPort", port);
        }
    }
}

/// Upstream's DefaultTolerationSeconds admission: a pod that does not tolerate the not-ready and unreachable
/// NoExecute taints tolerates them for `seconds`, so it is evicted from a lost node after that long.
pub fn pod_default_tolerations(pod: &mut Value, seconds: i64) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return };
    let list = spec.entry("tolerations").or_insert_with(|| json!([]));
    if !list.is_array() {
        return;
    }
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let covered = list.as_array().is_some_and(|l| {
            l.iter().any(|t| {
                let k = t.get("key").and_then(Value::as_str).unwrap_or("");
                let e = t.get("effect").and_then(Value::as_str).unwrap_or("");
                let exists = t.get("operator").and_then(Value::as_str) == Some("Exists");
                (k == key || (k.is_empty() && exists)) && (e.is_empty() || e == "NoExecute")
            })
        });
        if !covered {
            if let Some(l) = list.as_array_mut() {
                l.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
            }
        }
    }
    if list.as_array().is_some_and(Vec::is_empty) {
        spec.remove("tolerations");
    }
}

/// The pod's QoS class from its containers' requests and limits (upstream's `GetPodQOS`).
pub fn pod_qos_class(spec: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    let containers = ["containers", "initContainers"]
        .into_iter()
        .filter_map(|k| spec.get(k).and_then(Value::as_array))
        .flatten();
    for c in containers {
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        for res in ["cpu", "memory"] {
            let req = requests.and_then(|r| r.get(res));
            let lim = limits.and_then(|l| l.get(res));
            if req.is_some() || lim.is_some() {
                any = true;
            }
            match (req, lim) {
                // A limit without a request means request = limit.
                (None, Some(_)) => {}
                (Some(r), Some(l)) if r == l => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults_fill_only_absent_fields() {
        let mut pod = json!({"spec": {"restartPolicy": "Never", "containers": [
            {"name": "a", "image": "busybox", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "nginx:1.25", "imagePullPolicy": "Never"},
            {"name": "c", "image": "reg:5000/app", "readinessProbe": {"httpGet": {"port": 80}}}]}});
        apply("v1/Pod", &mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(pod["spec"]["containers"][1]["imagePullPolicy"], "Never");
        assert_eq!(pod["spec"]["containers"][2]["imagePullPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][2]["readinessProbe"]["httpGet"]["scheme"], "HTTP");
        assert_eq!(pod["spec"]["containers"][2]["readinessProbe"]["periodSeconds"], 10);
    }

    #[test]
    fn service_and_deployment_defaults() {
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        apply("v1/Service", &mut svc);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["externalTrafficPolicy"], "Cluster");
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "x", "image": "x:1"}]}}}});
        apply("apps/v1/Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
    }

    #[test]
    fn default_tolerations_added_once() {
        let mut pod = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}});
        pod_default_tolerations(&mut pod, 300);
        let t = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["tolerationSeconds"], 5);
        assert_eq!(t[1]["key"], "node.kubernetes.io/not-ready");
        assert_eq!(t[1]["tolerationSeconds"], 300);
        let mut tolerates_all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        pod_default_tolerations(&mut tolerates_all, 300);
        assert_eq!(tolerates_all["spec"]["tolerations"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn qos_classes() {
        assert_eq!(pod_qos_class(&json!({"containers": [{"name": "a"}]})), "BestEffort");
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]});
        assert_eq!(pod_qos_class(&g), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]});
        assert_eq!(pod_qos_class(&b), "Burstable");
    }
}
