//! Label selectors (equality- and set-based) and field selectors, parsed from query strings and matched
//! against JSON objects. Grammar and messages follow k8s.io/apimachinery's `labels` and `fields` packages.
//! Written by hand: no Rust crate parses Kubernetes selector strings.

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("unable to parse requirement: {0}")]
    Label(String),
    #[error("invalid field selector: {0}")]
    Field(String),
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelOp {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelRequirement {
    pub key: String,
    pub op: LabelOp,
}

/// A parsed label selector: all requirements must hold. Empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelRequirement>);

fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty() && p.len() <= 253 && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    });
    name_ok && prefix_ok
}

/// A label value: empty, or up to 63 characters of alphanumerics, '-', '_', '.', starting and ending
/// alphanumeric.
pub fn valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

pub fn valid_label_name(k: &str) -> bool {
    valid_label_key(k)
}

/// Split on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, SelectorError> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(SelectorError::Label(format!("unbalanced ')' in {s:?}")));
                }
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError::Label(format!("unbalanced '(' in {s:?}")));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn parse_set(rest: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError::Label(format!("{whole:?}: expected a parenthesised set of values")))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    for v in &values {
        if !valid_label_value(v) {
            return Err(SelectorError::Label(format!("{whole:?}: invalid label value {v:?}")));
        }
    }
    Ok(values)
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(LabelSelector::default());
        }
        let mut reqs = Vec::new();
        for part in split_top_level(s)? {
            let part = part.trim();
            if part.is_empty() {
                return Err(SelectorError::Label(format!("empty requirement in {s:?}")));
            }
            reqs.push(Self::parse_requirement(part)?);
        }
        Ok(LabelSelector(reqs))
    }

    fn parse_requirement(part: &str) -> Result<LabelRequirement, SelectorError> {
        let check_key = |k: &str| -> Result<String, SelectorError> {
            let k = k.trim();
            if valid_label_key(k) {
                Ok(k.to_string())
            } else {
                Err(SelectorError::Label(format!("{part:?}: invalid label key {k:?}")))
            }
        };
        let check_value = |v: &str| -> Result<String, SelectorError> {
            let v = v.trim();
            if valid_label_value(v) {
                Ok(v.to_string())
            } else {
                Err(SelectorError::Label(format!("{part:?}: invalid label value {v:?}")))
            }
        };
        if let Some(k) = part.strip_prefix('!') {
            return Ok(LabelRequirement { key: check_key(k)?, op: LabelOp::DoesNotExist });
        }
        if let Some((k, v)) = part.split_once("!=") {
            return Ok(LabelRequirement { key: check_key(k)?, op: LabelOp::NotEquals(check_value(v)?) });
        }
        if let Some((k, v)) = part.split_once("==") {
            return Ok(LabelRequirement { key: check_key(k)?, op: LabelOp::Equals(check_value(v)?) });
        }
        if let Some((k, v)) = part.split_once('=') {
            return Ok(LabelRequirement { key: check_key(k)?, op: LabelOp::Equals(check_value(v)?) });
        }
        let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
        if words.len() == 2 {
            let rest = words[1].trim_start();
            if let Some(set) = rest.strip_prefix("notin") {
                return Ok(LabelRequirement { key: check_key(words[0])?, op: LabelOp::NotIn(parse_set(set, part)?) });
            }
            if let Some(set) = rest.strip_prefix("in") {
                return Ok(LabelRequirement { key: check_key(words[0])?, op: LabelOp::In(parse_set(set, part)?) });
            }
            return Err(SelectorError::Label(format!("{part:?}: expected an operator (=, ==, !=, in, notin)")));
        }
        Ok(LabelRequirement { key: check_key(part)?, op: LabelOp::Exists })
    }

    /// Build from a `metav1.LabelSelector` JSON object (`matchLabels`, `matchExpressions`).
    pub fn from_json(sel: &Value) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                let v = v.as_str().ok_or_else(|| SelectorError::Label(format!("matchLabels[{k}] must be a string")))?;
                reqs.push(LabelRequirement { key: k.clone(), op: LabelOp::Equals(v.to_string()) });
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                let op = match e.get("operator").and_then(Value::as_str) {
                    Some("In") => LabelOp::In(values),
                    Some("NotIn") => LabelOp::NotIn(values),
                    Some("Exists") => LabelOp::Exists,
                    Some("DoesNotExist") => LabelOp::DoesNotExist,
                    other => return Err(SelectorError::Label(format!("{other:?} is not a valid label selector operator"))),
                };
                reqs.push(LabelRequirement { key, op });
            }
        }
        Ok(LabelSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches_labels(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        self.0.iter().all(|r| {
            let v = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            match &r.op {
                LabelOp::Equals(x) => v == Some(x.as_str()),
                LabelOp::NotEquals(x) => v != Some(x.as_str()),
                LabelOp::In(set) => v.is_some_and(|v| set.iter().any(|s| s == v)),
                LabelOp::NotIn(set) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
                LabelOp::Exists => v.is_some(),
                LabelOp::DoesNotExist => v.is_none(),
            }
        })
    }

    /// Match an object's `metadata.labels`.
    pub fn matches(&self, obj: &Value) -> bool {
        self.matches_labels(obj.pointer("/metadata/labels").and_then(Value::as_object))
    }
}

impl std::fmt::Display for LabelSelector {
    /// Upstream's string form: `app=web,tier in (a,b),!legacy`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| match &r.op {
                LabelOp::Equals(v) => format!("{}={v}", r.key),
                LabelOp::NotEquals(v) => format!("{}!={v}", r.key),
                LabelOp::In(s) => format!("{} in ({})", r.key, s.join(",")),
                LabelOp::NotIn(s) => format!("{} notin ({})", r.key, s.join(",")),
                LabelOp::Exists => r.key.clone(),
                LabelOp::DoesNotExist => format!("!{}", r.key),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A parsed field selector: `a=b,c!=d` (also `==`). Empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

/// The field labels each resource supports (besides `metadata.name` and `metadata.namespace`), as upstream.
fn supported_fields(group: &str, plural: &str) -> &'static [&'static str] {
    match (group, plural) {
        ("", "pods") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "events") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("", "nodes") => &["spec.unschedulable"],
        ("", "namespaces") => &["status.phase"],
        ("", "secrets") => &["type"],
        ("", "services") => &["spec.clusterIP", "spec.type"],
        ("apps", "replicasets") => &["status.replicas"],
        ("batch", "jobs") => &["status.successful"],
        _ => &[],
    }
}

/// The string value of a field label on an object, as upstream's field-set functions produce it.
fn field_value(obj: &Value, field: &str) -> String {
    if field == "source" {
        return obj.pointer("/source/component").and_then(Value::as_str).unwrap_or_default().to_string();
    }
    let pointer = format!("/{}", field.replace('.', "/"));
    match obj.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        // Upstream renders a missing boolean as "false" and a missing number as "0".
        None if field == "spec.unschedulable" || field == "spec.hostNetwork" => "false".into(),
        None if field == "status.replicas" || field == "status.successful" => "0".into(),
        _ => String::new(),
    }
}

impl FieldSelector {
    /// Parse, checking every field against the resource's supported field labels.
    pub fn parse(s: &str, group: &str, plural: &str) -> Result<Self, SelectorError> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(FieldSelector::default());
        }
        let mut reqs = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(SelectorError::Field(format!("{part:?}: expected field=value or field!=value")));
            };
            let field = field.trim();
            if field != "metadata.name" && field != "metadata.namespace" && !supported_fields(group, plural).contains(&field)
            {
                return Err(SelectorError::UnsupportedField(field.to_string()));
            }
            reqs.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, value)| (field_value(obj, field) == *value) == *eq)
    }

    /// The value required for `field` by an equality term, if any (used to narrow a list to one namespace or
    /// name).
    pub fn required(&self, field: &str) -> Option<&str> {
        self.0.iter().find(|(f, eq, _)| f == field && *eq).map(|(_, _, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels},
               "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn equality_and_set_based() {
        let p = pod(json!({"app": "web", "tier": "front"}));
        for (sel, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app=db", false),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("tier in (front, back)", true),
            ("tier in (back)", false),
            ("tier notin (back)", true),
            ("missing notin (x)", true),
            ("missing in (x)", false),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web,tier in (front),!legacy", true),
            ("missing!=x", true),
        ] {
            assert_eq!(LabelSelector::parse(sel).unwrap().matches(&p), want, "{sel}");
        }
    }

    #[test]
    fn bad_label_selectors() {
        for sel in ["app in web", "app in (web", "app=web)", "=x", "a b", "app=-bad-", ",", "app=web,"] {
            assert!(LabelSelector::parse(sel).is_err(), "{sel} should fail");
        }
    }

    #[test]
    fn display_round_trips() {
        let s = LabelSelector::parse("app=web,tier in (a,b),!legacy,x notin (y)").unwrap();
        assert_eq!(s.to_string(), "app=web,tier in (a,b),!legacy,x notin (y)");
        assert_eq!(LabelSelector::parse(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn from_label_selector_json() {
        let s = LabelSelector::from_json(&json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]}))
        .unwrap();
        assert!(s.matches(&pod(json!({"app": "web", "tier": "front"}))));
        assert!(!s.matches(&pod(json!({"app": "web"}))));
        assert!(LabelSelector::from_json(&json!({"matchExpressions": [{"key": "a", "operator": "Near"}]})).is_err());
    }

    #[test]
    fn field_selectors() {
        let p = pod(json!({}));
        let m = |s: &str| FieldSelector::parse(s, "", "pods").unwrap().matches(&p);
        assert!(m("spec.nodeName=n1"));
        assert!(!m("spec.nodeName=n2"));
        assert!(m("spec.nodeName!=n2"));
        assert!(m("metadata.name=p,metadata.namespace=ns,status.phase=Running"));
        assert!(m("spec.hostNetwork=false"));
        assert_eq!(
            FieldSelector::parse("spec.bogus=1", "", "pods"),
            Err(SelectorError::UnsupportedField("spec.bogus".into()))
        );
        assert!(FieldSelector::parse("nonsense", "", "pods").is_err());
        let ev = json!({"metadata": {"name": "e"}, "involvedObject": {"name": "p", "uid": "u1"}, "source": {"component": "kubelet"}});
        let f = FieldSelector::parse("involvedObject.name=p,involvedObject.uid=u1,source=kubelet", "", "events").unwrap();
        assert!(f.matches(&ev));
        assert_eq!(f.required("involvedObject.name"), Some("p"));
        let node = json!({"metadata": {"name": "n"}, "spec": {}});
        assert!(FieldSelector::parse("spec.unschedulable=false", "", "nodes").unwrap().matches(&node));
    }
}
