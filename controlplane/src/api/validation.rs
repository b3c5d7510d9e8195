//! Validation of objects on create and update, with upstream's field paths and messages, so that kubectl
//! prints e.g. `The Pod "bad" is invalid: spec.containers[0].image: Required value`.

use serde_json::Value;

use super::selectors::{valid_label_name, valid_label_value, LabelSelector};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Upstream's cause reason: FieldValueRequired, FieldValueInvalid, FieldValueNotSupported, ...
    pub reason: &'static str,
    pub field: String,
    /// The body of the message, e.g. `Required value` or `Invalid value: "x": must be ...`.
    pub message: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>) -> Self {
        FieldError { reason: "FieldValueRequired", field: field.into(), message: "Required value".into() }
    }

    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        FieldError {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {shown}: {detail}"),
        }
    }

    pub fn not_supported(field: impl Into<String>, value: &Value, allowed: &[&str]) -> Self {
        let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        FieldError {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!("Unsupported value: {value}: supported values: {}", list.join(", ")),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: &Value) -> Self {
        FieldError { reason: "FieldValueDuplicate", field: field.into(), message: format!("Duplicate value: {value}") }
    }

    pub fn forbidden(field: impl Into<String>, detail: &str) -> Self {
        FieldError { reason: "FieldValueForbidden", field: field.into(), message: format!("Forbidden: {detail}") }
    }

    pub fn immutable(field: impl Into<String>, value: &Value) -> Self {
        FieldError::invalid(field, value, "field is immutable")
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// Which rule a resource's names follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    Dns1123Subdomain,
    Dns1123Label,
    Dns1035Label,
    /// Any name usable as one path segment (RBAC objects: `system:node`, ...).
    PathSegment,
}

pub fn name_rule(type_key: &str) -> NameRule {
    match type_key {
        "v1/Namespace" => NameRule::Dns1123Label,
        "v1/Service" => NameRule::Dns1035Label,
        t if t.starts_with("rbac.authorization.k8s.io/") => NameRule::PathSegment,
        _ => NameRule::Dns1123Subdomain,
    }
}

/// Check an object name; `None` when valid, else upstream's message.
pub fn check_name(rule: NameRule, name: &str) -> Option<&'static str> {
    match rule {
        NameRule::Dns1123Subdomain if !is_dns1123_subdomain(name) => Some(DNS1123_SUBDOMAIN_MSG),
        NameRule::Dns1123Label if !is_dns1123_label(name) => Some(DNS1123_LABEL_MSG),
        NameRule::Dns1035Label if !is_dns1035_label(name) => Some(DNS1035_LABEL_MSG),
        NameRule::PathSegment if name == "." || name == ".." => Some("may not be '.' or '..'"),
        NameRule::PathSegment if name.contains('/') || name.contains('%') => Some("may not contain '/' or '%'"),
        _ => None,
    }
}

struct Errs(Vec<FieldError>);

impl Errs {
    fn push(&mut self, e: FieldError) {
        self.0.push(e);
    }
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn check_enum(errs: &mut Errs, v: &Value, key: &str, path: &str, allowed: &[&str]) {
    if let Some(x) = v.get(key).filter(|x| !x.is_null()) {
        if !x.as_str().is_some_and(|x| allowed.contains(&x)) {
            errs.push(FieldError::not_supported(format!("{path}.{key}"), x, allowed));
        }
    }
}

fn check_port(errs: &mut Errs, v: Option<&Value>, path: &str, required: bool) {
    match v {
        None | Some(Value::Null) if required => errs.push(FieldError::required(path)),
        None | Some(Value::Null) => {}
        Some(p) => {
            if !p.as_i64().is_some_and(|n| (1..=65535).contains(&n)) {
                errs.push(FieldError::invalid(path, p, "must be between 1 and 65535, inclusive"));
            }
        }
    }
}

fn validate_metadata(errs: &mut Errs, type_key: &str, meta: &Value, namespaced: bool) {
    let name = s(meta, "name").unwrap_or_default();
    if name.is_empty() {
        errs.push(FieldError::required("metadata.name"));
    } else if let Some(msg) = check_name(name_rule(type_key), name) {
        errs.push(FieldError::invalid("metadata.name", &Value::from(name), msg));
    }
    if namespaced {
        if let Some(ns) = s(meta, "namespace") {
            if !is_dns1123_label(ns) {
                errs.push(FieldError::invalid("metadata.namespace", &Value::from(ns), DNS1123_LABEL_MSG));
            }
        }
    }
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if !valid_label_name(k) {
                errs.push(FieldError::invalid("metadata.labels", &Value::from(k.as_str()), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"));
            }
            if !v.as_str().is_some_and(valid_label_value) {
                errs.push(FieldError::invalid("metadata.labels", v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"));
            }
        }
    }
    if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
        let total: usize = ann.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum();
        if total > 256 * 1024 {
            errs.push(FieldError { reason: "FieldValueTooLong", field: "metadata.annotations".into(), message: format!("Too long: must have at most {} bytes", 256 * 1024) });
        }
        for (k, v) in ann {
            if !valid_label_name(k) {
                errs.push(FieldError::invalid("metadata.annotations", &Value::from(k.as_str()), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
            if !v.is_string() {
                errs.push(FieldError::invalid(format!("metadata.annotations[{k}]"), v, "must be a string"));
            }
        }
    }
}

fn validate_container(errs: &mut Errs, c: &Value, path: &str, names: &mut Vec<String>) {
    match s(c, "name") {
        None | Some("") => errs.push(FieldError::required(format!("{path}.name"))),
        Some(n) => {
            if !is_dns1123_label(n) {
                errs.push(FieldError::invalid(format!("{path}.name"), &Value::from(n), DNS1123_LABEL_MSG));
            }
            if names.iter().any(|x| x == n) {
                errs.push(FieldError::duplicate(format!("{path}.name"), &Value::from(n)));
            }
            names.push(n.to_string());
        }
    }
    if s(c, "image").is_none_or(|i| i.trim().is_empty()) {
        errs.push(FieldError::required(format!("{path}.image")));
    }
    check_enum(errs, c, "imagePullPolicy", path, &["Always", "IfNotPresent", "Never"]);
    for (i, p) in arr(c, "ports").iter().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        check_port(errs, p.get("containerPort"), &format!("{pp}.containerPort"), true);
        check_port(errs, p.get("hostPort"), &format!("{pp}.hostPort"), false);
        check_enum(errs, p, "protocol", &pp, &["TCP", "UDP", "SCTP"]);
    }
    for (i, e) in arr(c, "env").iter().enumerate() {
        if s(e, "name").is_none_or(str::is_empty) {
            errs.push(FieldError::required(format!("{path}.env[{i}].name")));
        }
    }
    for (i, m) in arr(c, "volumeMounts").iter().enumerate() {
        if s(m, "name").is_none_or(str::is_empty) {
            errs.push(FieldError::required(format!("{path}.volumeMounts[{i}].name")));
        }
        if s(m, "mountPath").is_none_or(str::is_empty) {
            errs.push(FieldError::required(format!("{path}.volumeMounts[{i}].mountPath")));
        }
    }
    validate_resources(errs, c.get("resources"), &format!("{path}.resources"));
}

/// Upstream's ValidateResourceRequirements: every amount a quantity, none negative, no request above its limit.
fn validate_resources(errs: &mut Errs, res: Option<&Value>, path: &str) {
    use crate::scheduler::plugins::parse_quantity_milli;
    let amounts = |kind: &str| -> Vec<(String, &Value, Option<i128>)> {
        res.and_then(|r| r.get(kind)).and_then(Value::as_object).map_or_else(Vec::new, |m| {
            m.iter().map(|(k, v)| (k.clone(), v, v.as_str().and_then(parse_quantity_milli))).collect()
        })
    };
    let (limits, requests) = (amounts("limits"), amounts("requests"));
    for (kind, list) in [("limits", &limits), ("requests", &requests)] {
        for (name, v, milli) in list {
            let field = format!("{path}.{kind}[{name}]");
            match milli {
                None => errs.push(FieldError::invalid(
                    field,
                    v,
                    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                )),
                Some(m) if *m < 0 => errs.push(FieldError::invalid(field, v, "must be greater than or equal to 0")),
                Some(_) => {}
            }
        }
    }
    for (name, v, request) in &requests {
        let limit = limits.iter().find(|(l, _, _)| l == name);
        if let (Some(r), Some((_, lv, Some(l)))) = (request, limit) {
            if r > l {
                let shown = lv.as_str().unwrap_or_default();
                errs.push(FieldError::invalid(format!("{path}.requests"), v, &format!("must be less than or equal to {name} limit of {shown}")));
            }
        }
    }
}

fn validate_pod_spec(errs: &mut Errs, spec: Option<&Value>, path: &str) {
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        errs.push(FieldError::required(format!("{path}.containers")));
        return;
    };
    let containers = arr(spec, "containers");
    if containers.is_empty() {
        errs.push(FieldError::required(format!("{path}.containers")));
    }
    let mut names = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        validate_container(errs, c, &format!("{path}.containers[{i}]"), &mut names);
    }
    for (i, c) in arr(spec, "initContainers").iter().enumerate() {
        validate_container(errs, c, &format!("{path}.initContainers[{i}]"), &mut names);
    }
    check_enum(errs, spec, "restartPolicy", path, &["Always", "OnFailure", "Never"]);
    check_enum(errs, spec, "dnsPolicy", path, &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"]);
    let mut vols: Vec<&str> = Vec::new();
    for (i, v) in arr(spec, "volumes").iter().enumerate() {
        let vp = format!("{path}.volumes[{i}]");
        match s(v, "name") {
            None | Some("") => errs.push(FieldError::required(format!("{vp}.name"))),
            // The node agent names the volume's directory after it: a label, never a path.
            Some(n) if !is_dns1123_label(n) => errs.push(FieldError::invalid(format!("{vp}.name"), &Value::from(n), DNS1123_LABEL_MSG)),
            Some(n) if vols.contains(&n) => errs.push(FieldError::duplicate(format!("{vp}.name"), &Value::from(n))),
            Some(n) => vols.push(n),
        }
        validate_volume_modes(errs, v, &vp);
    }
    validate_ids(errs, spec.get("securityContext"), &format!("{path}.securityContext"), true);
    for kind in ["containers", "initContainers"] {
        for (i, c) in arr(spec, kind).iter().enumerate() {
            validate_ids(errs, c.get("securityContext"), &format!("{path}.{kind}[{i}].securityContext"), false);
        }
    }
    if let Some(g) = spec.get("terminationGracePeriodSeconds").filter(|g| !g.is_null()) {
        if g.as_i64().is_none_or(|g| g < 0) {
            errs.push(FieldError::invalid(format!("{path}.terminationGracePeriodSeconds"), g, "must be greater than or equal to 0"));
        }
    }
}

/// Upstream's file mode rule for volume sources and their items: permission bits only (no setuid, setgid or
/// sticky bit on files the node agent writes for the pod).
fn validate_volume_modes(errs: &mut Errs, vol: &Value, path: &str) {
    const MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";
    let check = |errs: &mut Errs, v: &Value, key: &str, field: String| {
        if let Some(m) = v.get(key).filter(|m| !m.is_null()) {
            if m.as_i64().is_none_or(|m| !(0..=0o777).contains(&m)) {
                errs.push(FieldError::invalid(field, m, MSG));
            }
        }
    };
    for source in ["configMap", "secret", "downwardAPI", "projected"] {
        let Some(src) = vol.get(source).filter(|v| v.is_object()) else { continue };
        let sp = format!("{path}.{source}");
        check(errs, src, "defaultMode", format!("{sp}.defaultMode"));
        for (i, item) in arr(src, "items").iter().enumerate() {
            check(errs, item, "mode", format!("{sp}.items[{i}].mode"));
        }
        for (j, proj) in arr(src, "sources").iter().enumerate() {
            for inner in ["configMap", "secret", "downwardAPI"] {
                let Some(p) = proj.get(inner).filter(|v| v.is_object()) else { continue };
                for (i, item) in arr(p, "items").iter().enumerate() {
                    check(errs, item, "mode", format!("{sp}.sources[{j}].{inner}.items[{i}].mode"));
                }
            }
        }
    }
}

/// Upstream's range for user and group ids in security contexts (the node agent runs processes and chowns files
/// with them as 32-bit ids).
fn validate_ids(errs: &mut Errs, ctx: Option<&Value>, path: &str, pod_level: bool) {
    const MSG: &str = "must be between 0 and 2147483647, inclusive";
    let Some(ctx) = ctx.filter(|c| c.is_object()) else { return };
    let ok = |v: &Value| v.as_i64().is_some_and(|n| (0..=i64::from(i32::MAX)).contains(&n));
    let mut keys = vec!["runAsUser", "runAsGroup"];
    if pod_level {
        keys.push("fsGroup");
    }
    for key in keys {
        if let Some(v) = ctx.get(key).filter(|v| !v.is_null() && !ok(v)) {
            errs.push(FieldError::invalid(format!("{path}.{key}"), v, MSG));
        }
    }
    if pod_level {
        for (i, g) in arr(ctx, "supplementalGroups").iter().enumerate() {
            if !ok(g) {
                errs.push(FieldError::invalid(format!("{path}.supplementalGroups[{i}]"), g, MSG));
            }
        }
    }
}

fn validate_selector_matches_template(errs: &mut Errs, spec: &Value, required: bool) {
    let selector = spec.get("selector").filter(|s| !s.is_null());
    let Some(selector) = selector else {
        if required {
            errs.push(FieldError::required("spec.selector"));
        }
        return;
    };
    match LabelSelector::from_json(selector) {
        Err(e) => errs.push(FieldError::invalid("spec.selector", selector, &e.to_string())),
        Ok(sel) if sel.is_empty() => {
            errs.push(FieldError::invalid("spec.selector", selector, "empty selector is invalid for deployment"))
        }
        Ok(sel) => {
            let labels = spec.pointer("/template/metadata/labels").and_then(Value::as_object);
            if !sel.matches_labels(labels) {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    &labels.map(|l| Value::Object(l.clone())).unwrap_or_default(),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
}

fn non_negative(errs: &mut Errs, v: &Value, key: &str, path: &str) {
    if let Some(x) = v.get(key).filter(|x| !x.is_null()) {
        if x.as_i64().is_none_or(|n| n < 0) {
            errs.push(FieldError::invalid(format!("{path}.{key}"), x, "must be greater than or equal to 0"));
        }
    }
}

/// Validate an object of `type_key` as it will be stored (after defaulting).
pub fn validate(type_key: &str, obj: &Value, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Errs(Vec::new());
    validate_metadata(&mut errs, type_key, obj.get("metadata").unwrap_or(&Value::Null), namespaced);
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    match type_key {
        "v1/Pod" => validate_pod_spec(&mut errs, obj.get("spec"), "spec"),
        "apps/v1/Deployment" | "apps/v1/ReplicaSet" | "apps/v1/DaemonSet" => {
            validate_selector_matches_template(&mut errs, spec, true);
            non_negative(&mut errs, spec, "replicas", "spec");
            validate_pod_spec(&mut errs, spec.pointer("/template/spec"), "spec.template.spec");
            if let Some(rp) = spec.pointer("/template/spec/restartPolicy").and_then(Value::as_str) {
                if rp != "Always" {
                    errs.push(FieldError::not_supported("spec.template.spec.restartPolicy", &Value::from(rp), &["Always"]));
                }
            }
        }
        "apps/v1/StatefulSet" => {
            validate_selector_matches_template(&mut errs, spec, true);
            for k in ["replicas", "minReadySeconds", "revisionHistoryLimit"] {
                non_negative(&mut errs, spec, k, "spec");
            }
            non_negative(&mut errs, spec.pointer("/updateStrategy/rollingUpdate").unwrap_or(&Value::Null), "partition", "spec.updateStrategy.rollingUpdate");
            validate_pod_spec(&mut errs, spec.pointer("/template/spec"), "spec.template.spec");
            if let Some(rp) = spec.pointer("/template/spec/restartPolicy").and_then(Value::as_str) {
                if rp != "Always" {
                    errs.push(FieldError::not_supported("spec.template.spec.restartPolicy", &Value::from(rp), &["Always"]));
                }
            }
            if let Some(p) = spec.get("podManagementPolicy").and_then(Value::as_str) {
                if !["OrderedReady", "Parallel"].contains(&p) {
                    errs.push(FieldError::not_supported("spec.podManagementPolicy", &Value::from(p), &["OrderedReady", "Parallel"]));
                }
            }
            if let Some(t) = spec.pointer("/updateStrategy/type").and_then(Value::as_str) {
                if !["RollingUpdate", "OnDelete"].contains(&t) {
                    errs.push(FieldError::not_supported("spec.updateStrategy.type", &Value::from(t), &["OnDelete", "RollingUpdate"]));
                }
            }
            for field in ["whenDeleted", "whenScaled"] {
                if let Some(v) = spec.pointer(&format!("/persistentVolumeClaimRetentionPolicy/{field}")).and_then(Value::as_str) {
                    if !["Retain", "Delete"].contains(&v) {
                        errs.push(FieldError::not_supported(format!("spec.persistentVolumeClaimRetentionPolicy.{field}"), &Value::from(v), &["Retain", "Delete"]));
                    }
                }
            }
            let mut seen = std::collections::HashSet::new();
            for (i, t) in spec.get("volumeClaimTemplates").and_then(Value::as_array).into_iter().flatten().enumerate() {
                let at = format!("spec.volumeClaimTemplates[{i}]");
                match t.pointer("/metadata/name").and_then(Value::as_str) {
                    None | Some("") => errs.push(FieldError::required(format!("{at}.metadata.name"))),
                    Some(n) if !is_dns1123_label(n) => errs.push(FieldError::invalid(format!("{at}.metadata.name"), &Value::from(n), "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character")),
                    Some(n) if !seen.insert(n.to_string()) => errs.push(FieldError::duplicate(format!("{at}.metadata.name"), &Value::from(n))),
                    Some(_) => {}
                }
                // The claim template's spec, with its own path.
                let mut inner = Errs(Vec::new());
                validate_pvc(&mut inner, t.get("spec").unwrap_or(&Value::Null));
                errs.0.extend(inner.0.into_iter().map(|mut e| {
                    e.field = format!("{at}.{}", e.field);
                    e
                }));
            }
        }
        "scheduling.k8s.io/v1/PriorityClass" => errs.0.extend(crate::apiserver::priority::validate(obj)),
        "v1/LimitRange" => errs.0.extend(crate::apiserver::limits::validate(obj)),
        "v1/ResourceQuota" => {
            for (k, v) in spec.get("hard").and_then(Value::as_object).into_iter().flatten() {
                if !crate::api::quota::valid_name(k) {
                    errs.push(FieldError::invalid(format!("spec.hard[{k}]"), &Value::from(k.as_str()), "must be a standard resource for quota"));
                } else if crate::api::quota::amounts(Some(&serde_json::json!({ k: v }))).get(k).is_none_or(|n| *n < 0) {
                    errs.push(FieldError::invalid(format!("spec.hard[{k}]"), v, "must be greater than or equal to 0"));
                }
            }
            for s in spec.get("scopes").and_then(Value::as_array).into_iter().flatten() {
                let ok = ["Terminating", "NotTerminating", "BestEffort", "NotBestEffort", "PriorityClass", "CrossNamespacePodAffinity"];
                if !s.as_str().is_some_and(|s| ok.contains(&s)) {
                    errs.push(FieldError::not_supported("spec.scopes", s, &ok));
                }
            }
        }
        "policy/v1/PodDisruptionBudget" => {
            let int_or_percent = |errs: &mut Errs, field: &str| {
                let Some(v) = spec.get(field).filter(|v| !v.is_null()) else { return };
                let ok = match v {
                    Value::Number(n) => n.as_i64().is_some_and(|n| n >= 0),
                    Value::String(s) => s.strip_suffix('%').and_then(|p| p.parse::<u32>().ok()).is_some_and(|p| p <= 100),
                    _ => false,
                };
                if !ok {
                    errs.push(FieldError::invalid(format!("spec.{field}"), v, "must be a non-negative integer or a percentage between 0% and 100%"));
                }
            };
            int_or_percent(&mut errs, "minAvailable");
            int_or_percent(&mut errs, "maxUnavailable");
            if spec.get("minAvailable").is_some_and(|v| !v.is_null()) && spec.get("maxUnavailable").is_some_and(|v| !v.is_null()) {
                errs.push(FieldError::invalid("spec", spec, "minAvailable and maxUnavailable cannot be both set"));
            }
            if let Some(sel) = spec.get("selector").filter(|s| !s.is_null()) {
                if let Err(e) = LabelSelector::from_json(sel) {
                    errs.push(FieldError::invalid("spec.selector", sel, &e.to_string()));
                }
            }
            if let Some(p) = spec.get("unhealthyPodEvictionPolicy").and_then(Value::as_str) {
                if !["IfHealthyBudget", "AlwaysAllow"].contains(&p) {
                    errs.push(FieldError::not_supported("spec.unhealthyPodEvictionPolicy", &Value::from(p), &["AlwaysAllow", "IfHealthyBudget"]));
                }
            }
        }
        "batch/v1/CronJob" => {
            match spec.get("schedule").and_then(Value::as_str) {
                None | Some("") => errs.push(FieldError::required("spec.schedule")),
                Some(s) => {
                    if let Err(e) = crate::controllers::cronjob::parse_schedule(s) {
                        errs.push(FieldError::invalid("spec.schedule", &Value::from(s), &e));
                    }
                }
            }
            if let Some(tz) = spec.get("timeZone").and_then(Value::as_str) {
                if let Err(e) = crate::controllers::cronjob::parse_time_zone(tz) {
                    errs.push(FieldError::invalid("spec.timeZone", &Value::from(tz), &e));
                }
            }
            if let Some(p) = spec.get("concurrencyPolicy").and_then(Value::as_str) {
                if !["Allow", "Forbid", "Replace"].contains(&p) {
                    errs.push(FieldError::not_supported("spec.concurrencyPolicy", &Value::from(p), &["Allow", "Forbid", "Replace"]));
                }
            }
            for k in ["startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
                non_negative(&mut errs, spec, k, "spec");
            }
            let job_spec = spec.pointer("/jobTemplate/spec").unwrap_or(&Value::Null);
            if job_spec.pointer("/template/spec").is_none() {
                errs.push(FieldError::required("spec.jobTemplate.spec.template.spec"));
            } else {
                validate_pod_spec(&mut errs, job_spec.pointer("/template/spec"), "spec.jobTemplate.spec.template.spec");
                match job_spec.pointer("/template/spec/restartPolicy").and_then(Value::as_str) {
                    Some("OnFailure") | Some("Never") => {}
                    other => errs.push(FieldError::not_supported(
                        "spec.jobTemplate.spec.template.spec.restartPolicy",
                        &other.map(Value::from).unwrap_or_default(),
                        &["OnFailure", "Never"],
                    )),
                }
            }
            for k in ["parallelism", "completions", "backoffLimit", "activeDeadlineSeconds"] {
                non_negative(&mut errs, job_spec, k, "spec.jobTemplate.spec");
            }
        }
        "batch/v1/Job" => {
            validate_selector_matches_template(&mut errs, spec, false);
            for k in ["parallelism", "completions", "backoffLimit", "activeDeadlineSeconds"] {
                non_negative(&mut errs, spec, k, "spec");
            }
            validate_pod_spec(&mut errs, spec.pointer("/template/spec"), "spec.template.spec");
            match spec.pointer("/template/spec/restartPolicy").and_then(Value::as_str) {
                Some("OnFailure") | Some("Never") => {}
                other => errs.push(FieldError::not_supported(
                    "spec.template.spec.restartPolicy",
                    &other.map(Value::from).unwrap_or_default(),
                    &["OnFailure", "Never"],
                )),
            }
        }
        "v1/Service" => validate_service(&mut errs, spec),
        "v1/PersistentVolume" => validate_pv(&mut errs, spec),
        "v1/PersistentVolumeClaim" => validate_pvc(&mut errs, spec),
        "storage.k8s.io/v1/StorageClass" => validate_storage_class(&mut errs, obj),
        "v1/ConfigMap" | "v1/Secret" => {
            for field in ["data", "binaryData", "stringData"] {
                if let Some(m) = obj.get(field).and_then(Value::as_object) {
                    for k in m.keys() {
                        let ok = !k.is_empty()
                            && k.len() <= 253
                            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
                        if !ok {
                            errs.push(FieldError::invalid(format!("{field}[{k}]"), &Value::from(k.as_str()), "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"));
                        }
                    }
                }
            }
        }
        "v1/Event" if obj.pointer("/involvedObject").is_none_or(|o| !o.is_object()) => {
            errs.push(FieldError::required("involvedObject"));
        }
        "coordination.k8s.io/v1/Lease" => {
            non_negative(&mut errs, spec, "leaseDurationSeconds", "spec");
        }
        "certificates.k8s.io/v1/CertificateSigningRequest" => {
            match spec.get("signerName").and_then(Value::as_str) {
                None | Some("") => errs.push(FieldError::required("spec.signerName")),
                Some(n) if !n.contains('/') => {
                    errs.push(FieldError::invalid("spec.signerName", &Value::from(n), "must be a fully qualified domain and path of the form 'example.com/signer-name'"))
                }
                Some(_) => {}
            }
            let pem = spec.get("request").and_then(Value::as_str).and_then(|b| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(b).ok()
            });
            match pem {
                None => errs.push(FieldError::required("spec.request")),
                Some(p) if !String::from_utf8_lossy(&p).contains("-----BEGIN CERTIFICATE REQUEST-----") => {
                    errs.push(FieldError::invalid("spec.request", &Value::from("<bytes>"), "PEM block type must be CERTIFICATE REQUEST"))
                }
                Some(_) => {}
            }
            const USAGES: &[&str] = &["signing", "digital signature", "content commitment", "key encipherment", "key agreement",
                "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any", "server auth", "client auth",
                "code signing", "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping",
                "ocsp signing", "microsoft sgc", "netscape sgc"];
            match spec.get("usages").and_then(Value::as_array) {
                None => errs.push(FieldError::required("spec.usages")),
                Some(u) => {
                    for (i, v) in u.iter().enumerate() {
                        if !v.as_str().is_some_and(|v| USAGES.contains(&v)) {
                            errs.push(FieldError::not_supported(format!("spec.usages[{i}]"), v, USAGES));
                        }
                    }
                }
            }
        }
        "rbac.authorization.k8s.io/v1/Role" | "rbac.authorization.k8s.io/v1/ClusterRole" => {
            for (i, rule) in obj.get("rules").and_then(Value::as_array).into_iter().flatten().enumerate() {
                let empty = |k: &str| rule.get(k).and_then(Value::as_array).is_none_or(|a| a.is_empty());
                if empty("verbs") {
                    errs.push(FieldError::required(format!("rules[{i}].verbs")));
                }
                let non_resource = !empty("nonResourceURLs");
                if non_resource && (!empty("resources") || !empty("apiGroups")) {
                    errs.push(FieldError::invalid(format!("rules[{i}].nonResourceURLs"), rule.get("nonResourceURLs").unwrap_or(&Value::Null), "rules cannot apply to both regular resources and non-resource URLs"));
                }
                if non_resource && type_key == "rbac.authorization.k8s.io/v1/Role" {
                    errs.push(FieldError::invalid(format!("rules[{i}].nonResourceURLs"), rule.get("nonResourceURLs").unwrap_or(&Value::Null), "namespaced rules cannot apply to non-resource URLs"));
                }
                if !non_resource && empty("apiGroups") {
                    errs.push(FieldError::required(format!("rules[{i}].apiGroups")));
                }
                if !non_resource && empty("resources") {
                    errs.push(FieldError::required(format!("rules[{i}].resources")));
                }
            }
        }
        "rbac.authorization.k8s.io/v1/RoleBinding" | "rbac.authorization.k8s.io/v1/ClusterRoleBinding" => {
            let kinds: &[&str] = if type_key.ends_with("/RoleBinding") { &["Role", "ClusterRole"] } else { &["ClusterRole"] };
            match obj.pointer("/roleRef/kind").and_then(Value::as_str) {
                None => errs.push(FieldError::required("roleRef.kind")),
                Some(k) if !kinds.contains(&k) => errs.push(FieldError::not_supported("roleRef.kind", &Value::from(k), kinds)),
                Some(_) => {}
            }
            if obj.pointer("/roleRef/name").and_then(Value::as_str).is_none_or(str::is_empty) {
                errs.push(FieldError::required("roleRef.name"));
            }
            for (i, s) in obj.get("subjects").and_then(Value::as_array).into_iter().flatten().enumerate() {
                match s.get("kind").and_then(Value::as_str) {
                    Some("User") | Some("Group") => {}
                    Some("ServiceAccount") if type_key.ends_with("/ClusterRoleBinding") && s.get("namespace").and_then(Value::as_str).is_none_or(str::is_empty) => {
                        errs.push(FieldError::required(format!("subjects[{i}].namespace")))
                    }
                    Some("ServiceAccount") => {}
                    k => errs.push(FieldError::not_supported(format!("subjects[{i}].kind"), &Value::from(k.unwrap_or("")), &["ServiceAccount", "User", "Group"])),
                }
                if s.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                    errs.push(FieldError::required(format!("subjects[{i}].name")));
                }
            }
        }
        "discovery.k8s.io/v1/EndpointSlice" => match obj.get("addressType").filter(|t| !t.is_null()) {
            None => errs.push(FieldError::required("addressType")),
            Some(t) if !t.as_str().is_some_and(|t| ["IPv4", "IPv6", "FQDN"].contains(&t)) => {
                errs.push(FieldError::not_supported("addressType", t, &["IPv4", "IPv6", "FQDN"]))
            }
            Some(_) => {}
        },
        _ => {}
    }
    errs.0
}

fn validate_service(errs: &mut Errs, spec: &Value) {
    check_enum(errs, spec, "type", "spec", &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]);
    check_enum(errs, spec, "sessionAffinity", "spec", &["ClientIP", "None"]);
    let ty = s(spec, "type").unwrap_or("ClusterIP");
    if ty == "ExternalName" {
        if s(spec, "externalName").is_none_or(str::is_empty) {
            errs.push(FieldError::required("spec.externalName"));
        }
        return;
    }
    let ports = arr(spec, "ports");
    let headless = s(spec, "clusterIP") == Some("None");
    if ports.is_empty() && !headless {
        errs.push(FieldError::required("spec.ports"));
    }
    let mut names: Vec<&str> = Vec::new();
    let mut seen: Vec<(i64, &str)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        check_port(errs, p.get("port"), &format!("{path}.port"), true);
        check_enum(errs, p, "protocol", &path, &["SCTP", "TCP", "UDP"]);
        let name = s(p, "name").unwrap_or_default();
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(format!("{path}.name")));
        }
        if !name.is_empty() {
            if !is_dns1123_label(name) {
                errs.push(FieldError::invalid(format!("{path}.name"), &Value::from(name), DNS1123_LABEL_MSG));
            }
            if names.contains(&name) {
                errs.push(FieldError::duplicate(format!("{path}.name"), &Value::from(name)));
            }
            names.push(name);
        }
        if let (Some(port), proto) = (p.get("port").and_then(Value::as_i64), s(p, "protocol").unwrap_or("TCP")) {
            if seen.contains(&(port, proto)) {
                errs.push(FieldError::duplicate(path.clone(), &serde_json::json!({"port": port, "protocol": proto})));
            }
            seen.push((port, proto));
        }
        if let Some(tp) = p.get("targetPort") {
            let ok = match tp {
                Value::Number(n) => n.as_i64().is_some_and(|n| (1..=65535).contains(&n)),
                Value::String(s) => !s.is_empty() && s.len() <= 15,
                _ => false,
            };
            if !ok {
                errs.push(FieldError::invalid(format!("{path}.targetPort"), tp, "must be between 1 and 65535, inclusive, or a valid port name"));
            }
        }
        if let Some(np) = p.get("nodePort").filter(|n| !n.is_null() && n.as_i64() != Some(0)) {
            if ty == "ClusterIP" {
                errs.push(FieldError::forbidden(format!("{path}.nodePort"), "may not be used when `type` is 'ClusterIP'"));
            }
            check_port(errs, Some(np), &format!("{path}.nodePort"), false);
        }
    }
    if let Some(ip) = s(spec, "clusterIP") {
        if !ip.is_empty() && ip != "None" && ip.parse::<std::net::IpAddr>().is_err() {
            errs.push(FieldError::invalid("spec.clusterIPs[0]", &Value::from(ip), "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"));
        }
    }
}

/// Checks that only apply to updates: immutable fields.
const ACCESS_MODES: &[&str] = &["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"];

fn validate_access_modes(errs: &mut Errs, spec: &Value) {
    let modes = arr(spec, "accessModes");
    if modes.is_empty() {
        errs.push(FieldError { message: "Required value: at least 1 access mode is required".into(), ..FieldError::required("spec.accessModes") });
    }
    for m in modes {
        if !m.as_str().is_some_and(|m| ACCESS_MODES.contains(&m)) {
            errs.push(FieldError::not_supported("spec.accessModes", m, ACCESS_MODES));
        }
    }
    if modes.len() > 1 && modes.iter().any(|m| m.as_str() == Some("ReadWriteOncePod")) {
        errs.push(FieldError::forbidden("spec.accessModes", "may not use ReadWriteOncePod with other access modes"));
    }
}

fn storage_quantity_ok(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).and_then(crate::scheduler::plugins::parse_quantity_milli).is_some_and(|m| m > 0)
}

/// The volume sources a PersistentVolume may have (spec keys); Skiff's agent mounts hostPath and local.
const PV_SOURCES: &[&str] = &[
    "hostPath", "local", "nfs", "iscsi", "csi", "fc", "rbd", "cephfs", "cinder", "flexVolume", "flocker", "glusterfs",
    "azureFile", "azureDisk", "awsElasticBlockStore", "gcePersistentDisk", "portworxVolume", "quobyte",
    "scaleIO", "storageos", "vsphereVolume", "photonPersistentDisk",
];

fn validate_pv(errs: &mut Errs, spec: &Value) {
    match spec.get("capacity").and_then(Value::as_object) {
        None => errs.push(FieldError::required("spec.capacity")),
        Some(c) => {
            if !storage_quantity_ok(c.get("storage")) {
                errs.push(FieldError::invalid("spec.capacity[storage]", c.get("storage").unwrap_or(&Value::Null), "must be a positive quantity"));
            }
        }
    }
    validate_access_modes(errs, spec);
    if let Some(p) = spec.get("persistentVolumeReclaimPolicy").filter(|p| !p.is_null()) {
        if !p.as_str().is_some_and(|p| ["Delete", "Recycle", "Retain"].contains(&p)) {
            errs.push(FieldError::not_supported("spec.persistentVolumeReclaimPolicy", p, &["Delete", "Recycle", "Retain"]));
        }
    }
    let sources: Vec<&str> = PV_SOURCES.iter().copied().filter(|k| spec.get(*k).is_some_and(|v| !v.is_null())).collect();
    match sources.as_slice() {
        [] => errs.push(FieldError { message: "Required value: must specify a volume type".into(), ..FieldError::required("spec") }),
        [_] => {}
        [_, rest @ ..] => {
            for k in rest {
                errs.push(FieldError::forbidden(format!("spec.{k}"), "may not specify more than 1 volume type"));
            }
        }
    }
    for k in ["hostPath", "local"] {
        if let Some(src) = spec.get(k).filter(|v| v.is_object()) {
            match s(src, "path") {
                Some(p) if p.starts_with('/') => {}
                Some(p) if !p.is_empty() => errs.push(FieldError::invalid(format!("spec.{k}.path"), &Value::from(p), "must be an absolute path")),
                _ => errs.push(FieldError::required(format!("spec.{k}.path"))),
            }
        }
    }
    if spec.get("local").is_some_and(Value::is_object) && spec.pointer("/nodeAffinity/required").is_none_or(Value::is_null) {
        errs.push(FieldError { message: "Required value: Local volumes require node affinity".into(), ..FieldError::required("spec.nodeAffinity") });
    }
}

fn validate_pvc(errs: &mut Errs, spec: &Value) {
    validate_access_modes(errs, spec);
    if !storage_quantity_ok(spec.pointer("/resources/requests/storage")) {
        match spec.pointer("/resources/requests/storage") {
            None | Some(Value::Null) => errs.push(FieldError::required("spec.resources[storage]")),
            Some(v) => errs.push(FieldError::invalid("spec.resources[storage]", v, "must be greater than zero")),
        }
    }
    if let Some(m) = spec.get("volumeMode").and_then(Value::as_str) {
        if !["Filesystem", "Block"].contains(&m) {
            errs.push(FieldError::not_supported("spec.volumeMode", &Value::from(m), &["Block", "Filesystem"]));
        }
    }
}

fn validate_storage_class(errs: &mut Errs, obj: &Value) {
    if s(obj, "provisioner").is_none_or(str::is_empty) {
        errs.push(FieldError::required("provisioner"));
    }
    if let Some(p) = obj.get("reclaimPolicy").and_then(Value::as_str) {
        if !["Delete", "Retain"].contains(&p) {
            errs.push(FieldError::not_supported("reclaimPolicy", &Value::from(p), &["Delete", "Retain"]));
        }
    }
    if let Some(m) = obj.get("volumeBindingMode").and_then(Value::as_str) {
        if !["Immediate", "WaitForFirstConsumer"].contains(&m) {
            errs.push(FieldError::not_supported("volumeBindingMode", &Value::from(m), &["Immediate", "WaitForFirstConsumer"]));
        }
    }
}

pub fn validate_update(type_key: &str, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let same = |ptr: &str| new.pointer(ptr) == old.pointer(ptr);
    match type_key {
        "v1/Pod" => {
            // Upstream allows only images, activeDeadlineSeconds, added tolerations and the grace period to change.
            let strip = |v: &Value| {
                let mut spec = v.get("spec").cloned().unwrap_or_default();
                for list in ["containers", "initContainers"] {
                    if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
                        for c in cs {
                            if let Some(m) = c.as_object_mut() {
                                m.remove("image");
                            }
                        }
                    }
                }
                if let Some(m) = spec.as_object_mut() {
                    for k in ["activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "nodeName"] {
                        m.remove(k);
                    }
                }
                spec
            };
            if strip(new) != strip(old) {
                errs.push(FieldError::forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"));
            }
            let old_node = old.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
            if !old_node.is_empty() && !same("/spec/nodeName") {
                errs.push(FieldError::immutable("spec.nodeName", new.pointer("/spec/nodeName").unwrap_or(&Value::Null)));
            }
        }
        "v1/Service" => {
            let old_ip = old.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or_default();
            let new_ip = new.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or_default();
            let old_type = old.pointer("/spec/type").and_then(Value::as_str);
            let new_type = new.pointer("/spec/type").and_then(Value::as_str);
            if !old_ip.is_empty() && !new_ip.is_empty() && old_ip != new_ip && old_type == new_type {
                errs.push(FieldError::immutable("spec.clusterIPs[0]", &Value::from(new_ip)));
            }
        }
        "apps/v1/StatefulSet" => {
            // Upstream: only these spec fields may change.
            let strip = |v: &Value| {
                let mut spec = v.get("spec").cloned().unwrap_or_default();
                if let Some(m) = spec.as_object_mut() {
                    for k in ["replicas", "ordinals", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy", "minReadySeconds"] {
                        m.remove(k);
                    }
                }
                spec
            };
            if strip(new) != strip(old) {
                errs.push(FieldError::forbidden("spec", "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"));
            }
        }
        "scheduling.k8s.io/v1/PriorityClass" => errs.extend(crate::apiserver::priority::validate_update(new, old)),
        "apps/v1/ControllerRevision" if !same("/data") => {
            errs.push(FieldError::immutable("data", &Value::from("{...}")));
        }
        "apps/v1/Deployment" | "apps/v1/ReplicaSet" | "apps/v1/DaemonSet" | "batch/v1/Job" => {
            if !same("/spec/selector") {
                errs.push(FieldError::immutable("spec.selector", new.pointer("/spec/selector").unwrap_or(&Value::Null)));
            }
            if type_key == "batch/v1/Job" && !same("/spec/template") {
                errs.push(FieldError::immutable("spec.template", &Value::from("{...}")));
            }
        }
        "v1/PersistentVolumeClaim" => {
            // Upstream: the spec is immutable, except the requests (expansion) and the volume name the binder sets.
            let strip = |v: &Value| {
                let mut spec = v.get("spec").cloned().unwrap_or_default();
                if let Some(m) = spec.as_object_mut() {
                    m.remove("resources");
                    if old.pointer("/spec/volumeName").and_then(Value::as_str).is_none_or(str::is_empty) {
                        m.remove("volumeName");
                    }
                }
                spec
            };
            if strip(new) != strip(old) {
                errs.push(FieldError::forbidden("spec", "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"));
            }
        }
        "v1/PersistentVolume" => {
            for k in PV_SOURCES {
                if !same(&format!("/spec/{k}")) {
                    errs.push(FieldError::forbidden("spec.persistentvolumesource", "spec.persistentvolumesource is immutable after creation"));
                    break;
                }
            }
        }
        "storage.k8s.io/v1/StorageClass" => {
            for (ptr, field) in [("/parameters", "parameters"), ("/provisioner", "provisioner"), ("/reclaimPolicy", "reclaimPolicy"), ("/volumeBindingMode", "volumeBindingMode")] {
                if !same(ptr) {
                    errs.push(FieldError::forbidden(field, &format!("updates to {field} are forbidden.")));
                }
            }
        }
        "v1/Node" => {
            let old_cidr = old.pointer("/spec/podCIDR").and_then(Value::as_str).unwrap_or_default();
            if !old_cidr.is_empty() && !same("/spec/podCIDR") {
                errs.push(FieldError::forbidden("spec.podCIDR", "node updates may not change podCIDR except from \"\" to valid"));
            }
        }
        _ => {}
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_without_image() {
        let pod = json!({"metadata": {"name": "bad"}, "spec": {"containers": [{"name": "c"}]}});
        let errs = validate("v1/Pod", &pod, true);
        assert_eq!(errs, [FieldError::required("spec.containers[0].image")]);
        assert_eq!(errs[0].to_string(), "spec.containers[0].image: Required value");
    }

    #[test]
    fn volumes_and_ids_as_upstream() {
        let pod = |spec: serde_json::Value| {
            let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
            json_patch::merge(&mut p["spec"], &spec);
            p
        };
        let fields = |p: &serde_json::Value| validate("v1/Pod", p, true).into_iter().map(|e| e.field).collect::<Vec<_>>();
        assert!(fields(&pod(json!({"volumes": [{"name": "conf", "configMap": {"name": "c", "defaultMode": 0o644}}],
            "securityContext": {"runAsUser": 1000, "fsGroup": 2000, "supplementalGroups": [3000]}}))).is_empty());
        for name in ["/etc", "../../etc", "a/b", "UPPER", ".."] {
            let p = pod(json!({"volumes": [{"name": name, "emptyDir": {}}]}));
            assert_eq!(fields(&p), ["spec.volumes[0].name"], "{name}");
        }
        let p = pod(json!({"volumes": [
            {"name": "a", "configMap": {"name": "c", "defaultMode": 0o4755, "items": [{"key": "k", "path": "k", "mode": -1}]}},
            {"name": "b", "projected": {"sources": [{"secret": {"name": "s", "items": [{"key": "k", "path": "k", "mode": 0o1777}]}}]}}]}));
        assert_eq!(fields(&p), ["spec.volumes[0].configMap.defaultMode", "spec.volumes[0].configMap.items[0].mode",
            "spec.volumes[1].projected.sources[0].secret.items[0].mode"]);
        let p = pod(json!({"securityContext": {"runAsUser": 4294967296u64, "supplementalGroups": [1, -1]},
            "containers": [{"name": "c", "image": "x", "securityContext": {"runAsGroup": 2147483648u64}}]}));
        assert_eq!(fields(&p), ["spec.securityContext.runAsUser", "spec.securityContext.supplementalGroups[1]",
            "spec.containers[0].securityContext.runAsGroup"]);
    }

    #[test]
    fn container_resources_as_upstream() {
        let pod = |res: serde_json::Value| json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x", "resources": res}]}});
        assert!(validate("v1/Pod", &pod(json!({"limits": {"cpu": "1", "memory": "64Mi"}, "requests": {"cpu": "500m"}})), true).is_empty());
        let errs = validate("v1/Pod", &pod(json!({"limits": {"cpu": "-1"}, "requests": {"memory": "lots"}})), true);
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert_eq!(text[0], "spec.containers[0].resources.limits[cpu]: Invalid value: \"-1\": must be greater than or equal to 0");
        assert!(text[1].starts_with("spec.containers[0].resources.requests[memory]: Invalid value: \"lots\": quantities must match"), "{text:?}");
        let errs = validate("v1/Pod", &pod(json!({"limits": {"cpu": "1"}, "requests": {"cpu": "2"}})), true);
        assert_eq!(errs[0].to_string(), "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1");
    }

    #[test]
    fn names() {
        let pod = json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
        let errs = validate("v1/Pod", &pod, true);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.starts_with("Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"));
        let ns = json!({"metadata": {"name": "a.b"}});
        assert_eq!(validate("v1/Namespace", &ns, false).len(), 1);
        let svc = json!({"metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 80}]}});
        assert_eq!(validate("v1/Service", &svc, true).len(), 1);
        assert!(validate("v1/ConfigMap", &json!({"metadata": {}}), true).contains(&FieldError::required("metadata.name")));
    }

    #[test]
    fn deployment_selector_must_match() {
        let d = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        let errs = validate("apps/v1/Deployment", &d, true);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.template.metadata.labels");
    }

    #[test]
    fn service_ports() {
        let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP", "ports": [{"port": 70000}, {"port": 80}]}});
        let errs = validate("v1/Service", &svc, true);
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"spec.ports[0].port"));
        assert!(fields.contains(&"spec.ports[0].name"));
        let bad_type = json!({"metadata": {"name": "s"}, "spec": {"type": "Weird", "ports": [{"port": 80}]}});
        assert_eq!(validate("v1/Service", &bad_type, true)[0].reason, "FieldValueNotSupported");
    }

    #[test]
    fn immutable_fields() {
        let old = json!({"spec": {"containers": [{"name": "c", "image": "a"}], "restartPolicy": "Always"}});
        let image = json!({"spec": {"containers": [{"name": "c", "image": "b"}], "restartPolicy": "Always"}});
        assert!(validate_update("v1/Pod", &image, &old).is_empty());
        let other = json!({"spec": {"containers": [{"name": "c", "image": "a"}], "restartPolicy": "Never"}});
        assert_eq!(validate_update("v1/Pod", &other, &old)[0].reason, "FieldValueForbidden");
        let d_old = json!({"spec": {"selector": {"matchLabels": {"a": "b"}}}});
        let d_new = json!({"spec": {"selector": {"matchLabels": {"a": "c"}}}});
        assert_eq!(validate_update("apps/v1/Deployment", &d_new, &d_old)[0].field, "spec.selector");
    }
}
