//! Kubernetes strategic merge patch (`application/strategic-merge-patch+json`) over `serde_json::Value`.
//!
//! This is the patch `kubectl apply` (client side) and `kubectl patch --type strategic` send. It is JSON
//! merge patch (RFC 7386) plus two things:
//! - lists whose upstream Go field is tagged `patchStrategy:"merge"` are merged instead of replaced: lists
//!   of objects item by item on the field's `patchMergeKey`, lists of scalars as a union;
//! - `$`-prefixed directives in the patch steer the merge: `$patch` (`replace`, `delete`, `merge`),
//!   `$retainKeys`, `$setElementOrder/<field>` and `$deleteFromPrimitiveList/<field>`.
//!
//! No Rust crate does this (the `json-patch` crate covers RFC 6902 and RFC 7386 only; kube-rs only *sends*
//! strategic patches), so it is written by hand here. The behaviour follows upstream
//! `k8s.io/apimachinery/pkg/util/strategicpatch` as the API server runs it (`StrategicMergePatch`: parallel
//! deletion lists applied, nulls in new values dropped), including its ordering rules: a merged list takes
//! the order of the patch, and items only the server has keep their place relative to the patched ones.
//!
//! As upstream, `$patch: delete` on a map that exists leaves an empty map (`{}`) behind; on one that does
//! not, nothing. Deliberate differences from upstream, all about inputs upstream mishandles:
//! - directive keys never reach the output: values the original does not have are merged into nothing
//!   rather than copied, so nested directives inside them are resolved too (upstream copies them verbatim,
//!   and drops a new map carrying `$patch: replace` altogether);
//! - `$patch: merge` is accepted as the explicit default (upstream rejects it);
//! - items of non-merge lists that are `$patch` markers are removed instead of being stored;
//! - a `$setElementOrder` for a list without a known merge key (an unknown type) identifies items by the
//!   single field its entries name, instead of failing.
//!
//! The merge strategies come from a table (`list_strategy`) transcribed from the `patchStrategy` /
//! `patchMergeKey` tags of kubernetes/api (`core/v1`, `apps/v1`, `batch/v1`) and kubernetes/apimachinery
//! (`meta/v1` ObjectMeta). For a type not in the table every list is replaced, as in JSON merge patch, but
//! directives are still honoured.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

/// Why a strategic merge patch could not be applied. `path` is the dotted field path (list indexes left
/// out) where the problem was found.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("strategic merge patch must be a JSON object at {path}")]
    NotAnObject { path: String },
    #[error("the object being patched is not a JSON object")]
    OriginalNotAnObject,
    #[error("invalid {directive} directive at {path}: {reason}")]
    InvalidDirective { path: String, directive: String, reason: &'static str },
    #[error("list item at {path} does not contain declared merge key {key:?}")]
    MissingMergeKey { path: String, key: String },
    #[error("list at {path} mixes objects, scalars or nested lists, which cannot be merged")]
    MixedListItems { path: String },
    #[error("list of objects at {path} has no merge key and cannot be merged")]
    NoMergeKey { path: String },
    #[error("patch sets {key:?} at {path}, which its $retainKeys list does not keep")]
    RetainKeysViolation { path: String, key: String },
    #[error("order of the patch list at {path} does not match its $setElementOrder list")]
    OrderMismatch { path: String },
    #[error("$setElementOrder at {path} applies to a value that is not a list")]
    NotAList { path: String },
    #[error("patch nests deeper than {max} levels at {path}")]
    TooDeep { path: String, max: usize },
}

/// Applies the strategic merge patch `patch` to `original` and returns the result; neither input is
/// modified.
///
/// `type_key` is `"<apiVersion>/<Kind>"`, e.g. "v1/Pod", "apps/v1/Deployment", "v1/Service"; unknown types
/// fall back to JSON merge-patch semantics for lists (replace) but still honour directives.
pub fn apply(type_key: &str, original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject { path: ROOT.to_owned() });
    };
    // A missing object (null) is patched like an empty one, the way upstream treats a nil map.
    let original = match original {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        _ => return Err(PatchError::OriginalNotAnObject),
    };
    let merger = Merger { type_key };
    let merged = merger.merge_map(&mut Path::default(), original, patch)?;
    Ok(Value::Object(merged))
}

// ---------------------------------------------------------------------------------------------------------
// The merge-key table.

/// How a list field is merged. A field with no entry is replaced wholesale by the patch's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListStrategy {
    /// `patchStrategy:"merge"` with `patchMergeKey`: objects are matched on this key.
    MergeByKey(&'static str),
    /// `patchStrategy:"merge"` without a key: a list of scalars, merged as a set union.
    MergeScalars,
}

use ListStrategy::{MergeByKey as Key, MergeScalars as Set};

/// The types this table knows. All of them have an ObjectMeta under `metadata`.
const KNOWN_TYPES: &[&str] = &[
    "v1/Pod",
    "v1/Node",
    "v1/Service",
    "v1/Endpoints",
    "v1/ConfigMap",
    "v1/Secret",
    "v1/Namespace",
    "v1/Event",
    "v1/ServiceAccount",
    "apps/v1/Deployment",
    "apps/v1/ReplicaSet",
    "apps/v1/DaemonSet",
    "apps/v1/StatefulSet",
    "batch/v1/Job",
    "batch/v1/CronJob",
    "policy/v1/PodDisruptionBudget",
    "coordination.k8s.io/v1/Lease",
    "discovery.k8s.io/v1/EndpointSlice",
];

/// The merge strategy of the list at `path` (field names from the object's root, list indexes left out) in
/// an object of type `type_key`, from upstream's struct tags (checked against kubernetes/api 10b39a39 and
/// kubernetes/apimachinery eed236ce, July 2026; evictionResponders and nodeAllocatableResourceClaimStatuses
/// are alpha fields there). Types and fields not listed here have atomic lists upstream: Endpoints,
/// ConfigMap, Secret, Event, Lease and EndpointSlice carry no tags beyond ObjectMeta; PodStatus's container
/// statuses, NodeSpec.taints, NodeStatus.images and NamespaceSpec.finalizers are atomic too.
fn list_strategy(type_key: &str, path: &[&str]) -> Option<ListStrategy> {
    if !KNOWN_TYPES.contains(&type_key) {
        return None;
    }
    const WORKLOADS_WITH_POD_TEMPLATE: &[&str] =
        &["apps/v1/Deployment", "apps/v1/ReplicaSet", "apps/v1/DaemonSet", "apps/v1/StatefulSet", "batch/v1/Job"];
    match path {
        ["metadata", rest @ ..] => object_meta(rest),
        ["spec", rest @ ..] if type_key == "v1/Pod" => pod_spec(rest),
        ["status", rest @ ..] if type_key == "v1/Pod" => pod_status(rest),
        ["spec", "template", rest @ ..] if WORKLOADS_WITH_POD_TEMPLATE.contains(&type_key) => pod_template(rest),
        ["spec", "jobTemplate", "spec", "template", rest @ ..] if type_key == "batch/v1/CronJob" => pod_template(rest),
        // DeploymentStatus, ReplicaSetStatus, DaemonSetStatus, StatefulSetStatus, JobStatus.
        ["status", "conditions"] if WORKLOADS_WITH_POD_TEMPLATE.contains(&type_key) => Some(Key("type")),
        ["spec", "podCIDRs"] if type_key == "v1/Node" => Some(Set),
        ["status", "conditions" | "addresses"] if type_key == "v1/Node" => Some(Key("type")),
        ["spec", "ports"] if type_key == "v1/Service" => Some(Key("port")),
        // ServiceStatus (metav1.Condition) and NamespaceStatus.
        ["status", "conditions"] if type_key == "v1/Service" || type_key == "v1/Namespace" => Some(Key("type")),
        // PodDisruptionBudgetStatus (metav1.Condition).
        ["status", "conditions"] if type_key == "policy/v1/PodDisruptionBudget" => Some(Key("type")),
        ["secrets"] if type_key == "v1/ServiceAccount" => Some(Key("name")),
        _ => None,
    }
}

/// meta/v1 ObjectMeta.
fn object_meta(path: &[&str]) -> Option<ListStrategy> {
    match path {
        ["ownerReferences"] => Some(Key("uid")),
        ["finalizers"] => Some(Set),
        _ => None,
    }
}

/// core/v1 PodTemplateSpec.
fn pod_template(path: &[&str]) -> Option<ListStrategy> {
    match path {
        ["metadata", rest @ ..] => object_meta(rest),
        ["spec", rest @ ..] => pod_spec(rest),
        _ => None,
    }
}

/// core/v1 PodSpec.
fn pod_spec(path: &[&str]) -> Option<ListStrategy> {
    match path {
        ["containers" | "initContainers" | "ephemeralContainers"] => Some(Key("name")),
        // Container and EphemeralContainerCommon carry the same tags.
        ["containers" | "initContainers" | "ephemeralContainers", rest @ ..] => container(rest),
        // volumes and resourceClaims are "merge,retainKeys"; retainKeys only matters when a client computes
        // a patch, and `$retainKeys` is honoured wherever it appears.
        ["volumes" | "imagePullSecrets" | "schedulingGates" | "resourceClaims" | "evictionResponders"] => {
            Some(Key("name"))
        }
        ["hostAliases"] => Some(Key("ip")),
        ["topologySpreadConstraints"] => Some(Key("topologyKey")),
        _ => None,
    }
}

/// core/v1 Container.
fn container(path: &[&str]) -> Option<ListStrategy> {
    match path {
        ["env"] => Some(Key("name")),
        ["ports"] => Some(Key("containerPort")),
        ["volumeMounts"] => Some(Key("mountPath")),
        ["volumeDevices"] => Some(Key("devicePath")),
        _ => None,
    }
}

/// core/v1 PodStatus. Its container status lists are atomic, so the tags inside ContainerStatus are never
/// reached by a merge and are left out.
fn pod_status(path: &[&str]) -> Option<ListStrategy> {
    match path {
        ["conditions"] => Some(Key("type")),
        ["podIPs" | "hostIPs"] => Some(Key("ip")),
        ["resourceClaimStatuses"] => Some(Key("name")),
        ["nodeAllocatableResourceClaimStatuses"] => Some(Key("resourceClaimName")),
        ["nodeAllocatableResourceClaimStatuses", "mapping" | "overhead"] => Some(Key("name")),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------------------
// Directives.

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const SET_ORDER_PREFIX: &str = "$setElementOrder";
const DELETE_FROM_LIST_PREFIX: &str = "$deleteFromPrimitiveList";

/// Deepest nesting the merge recurses into. serde_json's parser stops at the same depth, so no body it
/// parsed is refused (Kubernetes objects are a few dozen levels deep at most); values built any other way
/// cannot run the stack out (128 levels take about 1 MiB in a debug build, a 2 MiB thread has room).
const MAX_DEPTH: usize = 128;

const ROOT: &str = "(root)";

/// The value of a `$patch` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PatchDirective {
    Replace,
    Delete,
    Merge,
}

fn is_directive_key(key: &str) -> bool {
    key == PATCH_DIRECTIVE
        || key == RETAIN_KEYS_DIRECTIVE
        || key.starts_with(SET_ORDER_PREFIX)
        || key.starts_with(DELETE_FROM_LIST_PREFIX)
}

/// Reads the `$patch` directive of a patch map, if it has one.
fn patch_directive(path: &Path, map: &Map<String, Value>) -> Result<Option<PatchDirective>, PatchError> {
    let Some(value) = map.get(PATCH_DIRECTIVE) else {
        return Ok(None);
    };
    match value.as_str() {
        Some("replace") => Ok(Some(PatchDirective::Replace)),
        Some("delete") => Ok(Some(PatchDirective::Delete)),
        Some("merge") => Ok(Some(PatchDirective::Merge)),
        _ => Err(invalid(path, PATCH_DIRECTIVE, "must be \"replace\", \"delete\" or \"merge\"")),
    }
}

fn invalid(path: &Path, directive: &str, reason: &'static str) -> PatchError {
    PatchError::InvalidDirective { path: path.render(), directive: directive.to_owned(), reason }
}

/// The map-level directives of one patch map, checked up front so a malformed one fails before anything
/// is merged.
#[derive(Default)]
struct MapDirectives<'p> {
    retain_keys: Option<Vec<&'p str>>,
    /// `$deleteFromPrimitiveList/<field>`: (field, scalars to remove).
    delete_from_lists: Vec<(&'p str, &'p [Value])>,
    /// `$setElementOrder/<field>`: (field, the wanted order).
    set_orders: Vec<(&'p str, &'p [Value])>,
}

impl<'p> MapDirectives<'p> {
    fn parse(path: &Path, patch: &'p Map<String, Value>) -> Result<Self, PatchError> {
        let mut out = MapDirectives::default();
        for (key, value) in patch {
            if key == RETAIN_KEYS_DIRECTIVE {
                out.retain_keys = Some(retain_keys_list(path, value)?);
            } else if let Some(field) = directive_field(path, key, SET_ORDER_PREFIX)? {
                let list = value.as_array().ok_or_else(|| invalid(path, key, "value must be a list"))?;
                out.set_orders.push((field, list));
            } else if let Some(field) = directive_field(path, key, DELETE_FROM_LIST_PREFIX)? {
                let list = value.as_array().filter(|items| items.iter().all(is_scalar));
                let list = list.ok_or_else(|| invalid(path, key, "value must be a list of scalars"))?;
                out.delete_from_lists.push((field, list));
            }
        }
        Ok(out)
    }
}

fn retain_keys_list<'p>(path: &Path, value: &'p Value) -> Result<Vec<&'p str>, PatchError> {
    let not_strings = || invalid(path, RETAIN_KEYS_DIRECTIVE, "value must be a list of field names");
    let items = value.as_array().ok_or_else(not_strings)?;
    items.iter().map(|item| item.as_str().ok_or_else(not_strings)).collect()
}

/// For `key` = `"<prefix>/<field>"` returns the field; `None` when `key` is not this directive.
fn directive_field<'p>(path: &Path, key: &'p str, prefix: &str) -> Result<Option<&'p str>, PatchError> {
    let Some(rest) = key.strip_prefix(prefix) else {
        return Ok(None);
    };
    match rest.strip_prefix('/') {
        Some(field) if !field.is_empty() => Ok(Some(field)),
        _ => Err(invalid(path, key, "expected \"<directive>/<field>\"")),
    }
}

/// `$retainKeys`: the map keeps only the listed fields (before the patch is merged in). Every field the
/// patch sets must be among them, as upstream requires, or the patch contradicts itself.
fn apply_retain_keys(
    path: &Path,
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    keep: &[&str],
) -> Result<(), PatchError> {
    let stray =
        patch.iter().find(|(key, value)| !value.is_null() && !is_directive_key(key) && !keep.contains(&key.as_str()));
    if let Some((key, _)) = stray {
        return Err(PatchError::RetainKeysViolation { path: path.render(), key: key.clone() });
    }
    original.retain(|key, _| keep.contains(&key.as_str()));
    Ok(())
}

/// `$deleteFromPrimitiveList/<field>`: removes the given scalars from the original list. Upstream does this
/// whatever the field's strategy, and ignores it when the field is absent or not a list.
fn delete_from_list(original: &mut Map<String, Value>, field: &str, remove: &[Value]) {
    if let Some(Value::Array(items)) = original.get_mut(field) {
        let remove: HashSet<String> = remove.iter().map(identity_key).collect();
        items.retain(|item| !remove.contains(&identity_key(item)));
    }
}

// ---------------------------------------------------------------------------------------------------------
// The merge.

/// Field names from the root down to the value being merged, plus the nesting depth (which also counts
/// list levels, so lists of lists are bounded too).
#[derive(Default)]
struct Path<'p> {
    fields: Vec<&'p str>,
    depth: usize,
}

impl<'p> Path<'p> {
    /// Runs `f` one level further down, inside `field` when given (list items have no field name).
    fn descend<T>(
        &mut self,
        field: Option<&'p str>,
        f: impl FnOnce(&mut Self) -> Result<T, PatchError>,
    ) -> Result<T, PatchError> {
        if self.depth >= MAX_DEPTH {
            return Err(PatchError::TooDeep { path: self.render(), max: MAX_DEPTH });
        }
        self.depth += 1;
        self.fields.extend(field);
        let result = f(self);
        if field.is_some() {
            self.fields.pop();
        }
        self.depth -= 1;
        result
    }

    fn render(&self) -> String {
        if self.fields.is_empty() {
            ROOT.to_owned()
        } else {
            self.fields.join(".")
        }
    }
}

struct Merger<'a> {
    type_key: &'a str,
}

impl Merger<'_> {
    fn strategy(&self, path: &Path) -> Option<ListStrategy> {
        list_strategy(self.type_key, &path.fields)
    }

    /// Merges patch map `patch` into `original`. The steps run in upstream's order: `$patch`, then
    /// `$retainKeys`, then the fields, each list together with its `$setElementOrder`.
    fn merge_map<'p>(
        &self,
        path: &mut Path<'p>,
        mut original: Map<String, Value>,
        patch: &'p Map<String, Value>,
    ) -> Result<Map<String, Value>, PatchError> {
        match patch_directive(path, patch)? {
            // Upstream leaves an empty map behind, not a missing field; callers drop maps that did not
            // exist before.
            Some(PatchDirective::Delete) => return Ok(Map::new()),
            // The map becomes exactly what the patch says; merging into nothing also resolves any
            // directives nested in it.
            Some(PatchDirective::Replace) => original.clear(),
            Some(PatchDirective::Merge) | None => {}
        }
        let directives = MapDirectives::parse(path, patch)?;
        if let Some(keep) = &directives.retain_keys {
            apply_retain_keys(path, &mut original, patch, keep)?;
        }
        // Upstream removes these after merging the field; before is equivalent (kubectl never lists an
        // item in both) and keeps `$setElementOrder` from ranking items that are about to go.
        for (field, remove) in &directives.delete_from_lists {
            delete_from_list(&mut original, field, remove);
        }
        for (key, value) in patch {
            if !is_directive_key(key) {
                let order = directives.set_orders.iter().find(|(field, _)| field == key).map(|(_, order)| *order);
                self.merge_field(path, &mut original, key, value, order)?;
            }
        }
        // An order for a list the patch does not otherwise touch just reorders it.
        for (field, order) in &directives.set_orders {
            if !patch.contains_key(*field) {
                path.descend(Some(field), |path| self.reorder_untouched(path, &mut original, order))?;
            }
        }
        Ok(original)
    }

    /// Merges one field of a patch map into `original`, keeping the field's position in the map. `order`
    /// is the field's `$setElementOrder` list, if the patch has one.
    fn merge_field<'p>(
        &self,
        path: &mut Path<'p>,
        original: &mut Map<String, Value>,
        key: &'p str,
        patch: &'p Value,
        order: Option<&'p [Value]>,
    ) -> Result<(), PatchError> {
        if patch.is_null() {
            original.shift_remove(key);
            return Ok(());
        }
        let merged = path.descend(Some(key), |path| {
            let old = original.get_mut(key).map(std::mem::take);
            self.merge_value(path, old, patch, order)
        })?;
        match merged {
            Some(value) => {
                original.insert(key.to_owned(), value);
            }
            None => {
                original.shift_remove(key);
            }
        }
        Ok(())
    }

    /// Merges `patch` into `original`; `None` means the value is to be removed.
    fn merge_value<'p>(
        &self,
        path: &mut Path<'p>,
        original: Option<Value>,
        patch: &'p Value,
        order: Option<&'p [Value]>,
    ) -> Result<Option<Value>, PatchError> {
        match (original, patch, order) {
            (Some(Value::Array(original)), Value::Array(patch), _) => {
                Ok(Some(Value::Array(self.merge_list(path, original, patch, order)?)))
            }
            // A list the original lacks (or has as something else) is taken from the patch, then ordered.
            (_, Value::Array(patch), Some(order)) => {
                let order = self.element_order(path, order)?;
                order.check_patch(path, patch)?;
                let items = self.materialize_list(path, patch)?;
                Ok(Some(Value::Array(order.apply(path, items, &[])?)))
            }
            (_, _, Some(_)) => Err(PatchError::NotAList { path: path.render() }),
            (Some(Value::Object(original)), Value::Object(patch), None) => {
                Ok(Some(Value::Object(self.merge_map(path, original, patch)?)))
            }
            // Absent, or a different type: the patch value wins.
            (_, patch, None) => self.materialize(path, patch),
        }
    }

    /// Turns a patch value with nothing to merge into into a plain value: directives resolved, nulls in
    /// maps dropped, `$patch: delete` maps removed.
    fn materialize<'p>(&self, path: &mut Path<'p>, patch: &'p Value) -> Result<Option<Value>, PatchError> {
        match patch {
            Value::Object(map) => {
                if patch_directive(path, map)? == Some(PatchDirective::Delete) {
                    return Ok(None);
                }
                Ok(Some(Value::Object(self.merge_map(path, Map::new(), map)?)))
            }
            Value::Array(items) => Ok(Some(Value::Array(self.materialize_list(path, items)?))),
            scalar => Ok(Some(scalar.clone())),
        }
    }

    /// A list taken from the patch as is (an atomic list, or one the original does not have). Items are
    /// not merged with each other: upstream keeps e.g. two ports with the same containerPort and different
    /// protocols. Marker items (`$patch: replace` / `delete`) are dropped.
    fn materialize_list<'p>(&self, path: &mut Path<'p>, items: &'p [Value]) -> Result<Vec<Value>, PatchError> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            path.descend(None, |path| {
                if let Value::Object(map) = item {
                    if matches!(patch_directive(path, map)?, Some(PatchDirective::Replace | PatchDirective::Delete)) {
                        return Ok(());
                    }
                }
                out.extend(self.materialize(path, item)?);
                Ok(())
            })?;
        }
        Ok(out)
    }

    /// Merges a patch list into an original list, then applies the list's `$setElementOrder`, if any.
    fn merge_list<'p>(
        &self,
        path: &mut Path<'p>,
        original: Vec<Value>,
        patch: &'p [Value],
        order: Option<&'p [Value]>,
    ) -> Result<Vec<Value>, PatchError> {
        let order = order.map(|order| self.element_order(path, order)).transpose()?;
        if let Some(order) = &order {
            order.check_patch(path, patch)?;
        }
        // What a `$setElementOrder` ranks server-only items by: the original list, except after a keyed
        // merge (see `KeyedMerge`).
        let (merged, server_ids) = match self.strategy(path) {
            None => {
                let server_ids = order.as_ref().map(|o| o.ids_of(path, &original)).transpose()?;
                (self.materialize_list(path, patch)?, server_ids)
            }
            // Upstream decides between the two kinds of merge by what the items are, not by the tag.
            Some(strategy) => match item_kind(path, &original, patch)? {
                ItemKind::None => return Ok(original),
                ItemKind::Scalars => {
                    let server_ids = order.as_ref().map(|o| o.ids_of(path, &original)).transpose()?;
                    (union_scalars(original, patch), server_ids)
                }
                ItemKind::Objects => {
                    let ListStrategy::MergeByKey(key) = strategy else {
                        return Err(PatchError::NoMergeKey { path: path.render() });
                    };
                    let merged = self.merge_keyed_list(path, original, patch, key)?;
                    (merged.items, Some(merged.server_ids))
                }
            },
        };
        match order {
            Some(order) => order.apply(path, merged, server_ids.as_deref().unwrap_or_default()),
            None => Ok(merged),
        }
    }

    /// Merges a list of objects on `key`: `$patch: delete` items remove their match, a `$patch: replace`
    /// item makes the list exactly the patch's other items, the rest merge into their match or are
    /// appended; then the list takes the patch's order.
    fn merge_keyed_list<'p>(
        &self,
        path: &mut Path<'p>,
        mut original: Vec<Value>,
        patch: &'p [Value],
        key: &str,
    ) -> Result<KeyedMerge, PatchError> {
        let mut replace = false;
        let mut deleted = 0;
        let mut updates = Vec::with_capacity(patch.len());
        // Deletions remove every item with a deleted key; all at once, by identity key (linear in the list).
        let mut delete_keys = HashSet::new();
        for item in patch {
            let map = item.as_object().ok_or_else(|| PatchError::MixedListItems { path: path.render() })?;
            match patch_directive(path, map)? {
                Some(PatchDirective::Delete) => {
                    delete_keys.insert(identity_key(&merge_key_of(path, item, key)?));
                }
                // Upstream prunes the marker item itself, whatever else it holds.
                Some(PatchDirective::Replace) => replace = true,
                Some(PatchDirective::Merge) | None => updates.push(item),
            }
        }
        if !delete_keys.is_empty() {
            let before = original.len();
            original.retain(|o| o.get(key).is_none_or(|v| !delete_keys.contains(&identity_key(v))));
            deleted += before - original.len();
        }
        let mut server_ids = identities(path, &original, Some(key))?;
        if replace {
            let mut items = Vec::with_capacity(updates.len());
            for item in updates {
                merge_key_of(path, item, key)?;
                items.extend(path.descend(None, |path| self.materialize(path, item))?);
            }
            return Ok(KeyedMerge { items, server_ids });
        }

        let mut patch_ids = Vec::with_capacity(updates.len());
        let mut added_ids = Vec::new();
        // The first item of each identity, kept up to date as items are added.
        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, o) in original.iter().enumerate() {
            if let Some(v) = o.get(key) {
                index.entry(identity_key(v)).or_insert(i);
            }
        }
        for item in updates {
            let id = merge_key_of(path, item, key)?;
            let id_key = identity_key(&id);
            let found = index.get(&id_key).copied();
            if found.is_none() {
                // The materialized item (if any) lands at the end.
                index.insert(id_key, original.len());
            }
            path.descend(None, |path| match found {
                Some(index) => {
                    if let (Some(Value::Object(target)), Value::Object(update)) = (original.get_mut(index), item) {
                        let old = std::mem::take(target);
                        *target = self.merge_map(path, old, update)?;
                    }
                    Ok(())
                }
                None => {
                    added_ids.push(id.clone());
                    original.extend(self.materialize(path, item)?);
                    Ok(())
                }
            })?;
            patch_ids.push(id);
        }
        let ids = identities(path, &original, Some(key))?;
        let items = enforce_order(original.into_iter().zip(ids).collect(), &patch_ids, &server_ids);
        server_ids.extend(added_ids.into_iter().take(deleted));
        Ok(KeyedMerge { items, server_ids })
    }

    /// `$setElementOrder` for a list the patch does not touch: ranks it against itself.
    fn reorder_untouched(
        &self,
        path: &Path,
        original: &mut Map<String, Value>,
        order: &[Value],
    ) -> Result<(), PatchError> {
        let Some(slot) = path.fields.last().and_then(|field| original.get_mut(*field)) else {
            return Ok(());
        };
        let Value::Array(items) = slot else {
            return Err(PatchError::NotAList { path: path.render() });
        };
        let order = self.element_order(path, order)?;
        let items = std::mem::take(items);
        let server_ids = order.ids_of(path, &items)?;
        *slot = Value::Array(order.apply(path, items, &server_ids)?);
        Ok(())
    }

    fn element_order<'o>(&self, path: &Path, order: &'o [Value]) -> Result<ElementOrder<'o>, PatchError> {
        let key = match self.strategy(path) {
            Some(ListStrategy::MergeByKey(key)) => Some(key),
            _ => inferred_merge_key(order),
        };
        Ok(ElementOrder { key, ids: identities(path, order, key)? })
    }
}

/// A merged keyed list, and what a `$setElementOrder` ranks its server-only items by. Upstream compares
/// them against the original list as its merge left it in memory: deletions close up the list and the
/// first additions are appended into the slots that frees (its merge works in place on the original
/// slice). So the first `deleted` added items count as having been there, after the surviving originals.
/// Upstream's "add map and delete map from merging list" tests depend on this.
struct KeyedMerge {
    items: Vec<Value>,
    server_ids: Vec<Value>,
}

/// A `$setElementOrder/<field>` list: the identities of the items in the wanted order, and the key those
/// identities are taken from (`None`: items are their own identity, as in lists of scalars).
struct ElementOrder<'o> {
    key: Option<&'o str>,
    ids: Vec<Value>,
}

impl ElementOrder<'_> {
    fn ids_of(&self, path: &Path, items: &[Value]) -> Result<Vec<Value>, PatchError> {
        identities(path, items, self.key)
    }

    /// Upstream checks that the patch list's items appear in the order list in the same order (ignoring
    /// `$patch` items); an empty order list constrains nothing.
    fn check_patch(&self, path: &Path, patch: &[Value]) -> Result<(), PatchError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        let mut remaining = self.ids.iter();
        for item in patch.iter().filter(|item| item.get(PATCH_DIRECTIVE).is_none()) {
            let id = match self.key {
                Some(key) => merge_key_of(path, item, key)?,
                None => item.clone(),
            };
            if !remaining.any(|wanted| same_value(wanted, &id)) {
                return Err(PatchError::OrderMismatch { path: path.render() });
            }
        }
        Ok(())
    }

    /// Puts `items` into the wanted order; `server_ids` ranks the items the order list does not name.
    fn apply(&self, path: &Path, items: Vec<Value>, server_ids: &[Value]) -> Result<Vec<Value>, PatchError> {
        let ids = self.ids_of(path, &items)?;
        Ok(enforce_order(items.into_iter().zip(ids).collect(), &self.ids, server_ids))
    }
}

// ---------------------------------------------------------------------------------------------------------
// List helpers.

enum ItemKind {
    /// Both lists are empty.
    None,
    Scalars,
    Objects,
}

/// What the items of a merge list are; upstream refuses lists that mix kinds or hold lists.
fn item_kind(path: &Path, original: &[Value], patch: &[Value]) -> Result<ItemKind, PatchError> {
    let mut kind = ItemKind::None;
    for item in original.iter().chain(patch) {
        kind = match (kind, item) {
            (_, Value::Array(_)) => return Err(PatchError::MixedListItems { path: path.render() }),
            (ItemKind::None | ItemKind::Objects, Value::Object(_)) => ItemKind::Objects,
            (ItemKind::None | ItemKind::Scalars, scalar) if is_scalar(scalar) => ItemKind::Scalars,
            _ => return Err(PatchError::MixedListItems { path: path.render() }),
        };
    }
    Ok(kind)
}

fn is_scalar(value: &Value) -> bool {
    !matches!(value, Value::Object(_) | Value::Array(_))
}

/// Set union of two scalar lists, ordered like upstream: the patch's items in the patch's order, the
/// original's other items around them in their old places.
fn union_scalars(original: Vec<Value>, patch: &[Value]) -> Vec<Value> {
    let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
    let mut seen = HashSet::new();
    for item in original.iter().chain(patch) {
        if seen.insert(identity_key(item)) {
            merged.push(item.clone());
        }
    }
    let pairs = merged.into_iter().map(|item| (item.clone(), item)).collect();
    enforce_order(pairs, patch, &original)
}

/// The merge key of a list item.
fn merge_key_of(path: &Path, item: &Value, key: &str) -> Result<Value, PatchError> {
    item.get(key).cloned().ok_or_else(|| PatchError::MissingMergeKey { path: path.render(), key: key.to_owned() })
}

/// What identifies each item: its merge key, or the whole item in a list without one.
fn identities(path: &Path, items: &[Value], key: Option<&str>) -> Result<Vec<Value>, PatchError> {
    match key {
        Some(key) => items.iter().map(|item| merge_key_of(path, item, key)).collect(),
        None => Ok(items.to_vec()),
    }
}

/// The merge key of a list the table has none for (an unknown type, or an atomic list), guessed from its
/// `$setElementOrder` list: clients send one single-field object per item there, `{<mergeKey>: value}`.
/// Without this such an order list would never match any item.
fn inferred_merge_key(order: &[Value]) -> Option<&str> {
    let mut key = None;
    for item in order {
        let map = item.as_object().filter(|map| map.len() == 1)?;
        let field = map.keys().next()?.as_str();
        if key.is_some_and(|k| k != field) {
            return None;
        }
        key = Some(field);
    }
    key
}

/// The index of the first item of each identity in `list`.
fn positions(list: &[Value]) -> HashMap<String, usize> {
    let mut map = HashMap::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        map.entry(identity_key(v)).or_insert(i);
    }
    map
}

/// Upstream's `normalizeElementOrder`: items named in `order` come in that order; the others ("server
/// only") keep their order in `server_order`, and each is slotted in before the first ordered item that
/// came after it in `server_order`. Items are paired with their identity.
fn enforce_order(items: Vec<(Value, Value)>, order: &[Value], server_order: &[Value]) -> Vec<Value> {
    // Each item with its place in `order` and in `server_order`, looked up once (lists can be long).
    let (in_order, in_server) = (positions(order), positions(server_order));
    let items = items.into_iter().map(|(item, id)| {
        let k = identity_key(&id);
        (item, (in_order.get(&k).copied(), in_server.get(&k).copied()))
    });
    let (mut ordered, mut server_only): (Vec<_>, Vec<_>) = items.partition(|(_, (o, _))| o.is_some());
    // Both sorts are stable, so duplicates keep their relative order.
    ordered.sort_by_key(|(_, (o, _))| *o);
    server_only.sort_by_key(|(_, (_, s))| s.unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(ordered.len() + server_only.len());
    let mut ordered = ordered.into_iter().peekable();
    let mut server_only = server_only.into_iter().peekable();
    loop {
        // upstream's mergeSortedSlice: a server-only item goes first only when both items were in the
        // original and it came first there.
        let take_server_only = match (server_only.peek(), ordered.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((_, (_, left))), Some((_, (_, right)))) => matches!((left, right), (Some(l), Some(r)) if l < r),
        };
        let next = if take_server_only { server_only.next() } else { ordered.next() };
        out.extend(next.map(|(item, _)| item));
    }
    out
}

/// A string equal for two values exactly when [`same_value`] holds: numbers as float64 (at the top, as
/// `same_value` compares them), objects with sorted keys (serde_json compares maps regardless of order).
fn identity_key(v: &Value) -> String {
    fn zero_free(f: f64) -> f64 {
        if f == 0.0 { 0.0 } else { f }
    }
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Number(n) if n.is_f64() => out.push_str(&format!("{:?}", zero_free(n.as_f64().unwrap_or_default()))),
            Value::String(s) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).unwrap_or_default());
                    out.push(':');
                    write(&m[k], out);
                }
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    match v {
        Value::Number(n) => format!("#{:?}", zero_free(n.as_f64().unwrap_or_default())),
        other => {
            let mut out = String::new();
            write(other, &mut out);
            out
        }
    }
}

/// JSON equality where 80 and 80.0 are the same number, as they are for upstream (Go decodes every JSON
/// number to float64).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(p), Some(q)) if p == q)
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identity_keys_agree_with_same_value() {
        let values = [
            json!(80), json!(80.0), json!(-0.0), json!(0), json!(1.5), json!("80"), json!(null), json!(true),
            json!([80]), json!([80.0]), json!({"a": 1, "b": [2]}), json!({"b": [2], "a": 1}), json!({"a": 1.0, "b": [2]}),
            json!(9007199254740993u64), json!(9007199254740992u64), json!("a\"b"), json!(["a", "b"]), json!("[\"a\",\"b\"]"),
        ];
        for a in &values {
            for b in &values {
                assert_eq!(identity_key(a) == identity_key(b), same_value(a, b), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn long_lists_merge_in_linear_time() {
        // 100,000 scalars and 100,000 keyed items: quadratic code would take minutes here.
        let n = 100_000;
        let finalizers: Vec<Value> = (0..n).map(|i| json!(format!("f{i}"))).collect();
        let original = json!({"metadata": {"name": "p", "finalizers": finalizers[..n / 2]},
            "spec": {"containers": (0..n).map(|i| json!({"name": format!("c{i}"), "image": "a"})).collect::<Vec<_>>()}});
        let p = json!({"metadata": {"finalizers": finalizers[n / 4..]},
            "spec": {"containers": (0..n).rev().map(|i| json!({"name": format!("c{i}"), "image": "b"})).collect::<Vec<_>>()}});
        let out = patch("v1/Pod", original, p);
        assert_eq!(out["metadata"]["finalizers"].as_array().unwrap().len(), n);
        let containers = out["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), n);
        assert!(containers.iter().all(|c| c["image"] == "b"));
    }

    fn patch(type_key: &str, original: Value, patch: Value) -> Value {
        let out = apply(type_key, &original, &patch).unwrap_or_else(|e| panic!("patch failed: {e}"));
        assert_no_directives(&out);
        out
    }

    fn patch_err(type_key: &str, original: Value, patch: Value) -> PatchError {
        match apply(type_key, &original, &patch) {
            Ok(out) => panic!("expected an error, got {out}"),
            Err(e) => e,
        }
    }

    fn assert_no_directives(value: &Value) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    assert!(!is_directive_key(key), "directive {key} left in output");
                    assert_no_directives(value);
                }
            }
            Value::Array(items) => items.iter().for_each(assert_no_directives),
            _ => {}
        }
    }

    fn names(list: &Value, key: &str) -> Vec<Value> {
        list.as_array().expect("a list").iter().map(|item| item[key].clone()).collect()
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}, "finalizers": ["a", "b"]},
            "spec": {
                "containers": [
                    {"name": "app", "image": "app:1", "args": ["--a", "--b"],
                     "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                    {"name": "sidecar", "image": "proxy:1"}
                ],
                "volumes": [{"name": "data", "emptyDir": {}}]
            }
        })
    }

    #[test]
    fn kubectl_apply_of_new_image_keeps_other_containers() {
        // What kubectl apply sends after the image of one container changed.
        let out = patch(
            "v1/Pod",
            pod(),
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                "containers": [{"name": "app", "image": "app:2"}]
            }}),
        );
        let containers = &out["spec"]["containers"];
        assert_eq!(names(containers, "name"), [json!("app"), json!("sidecar")]);
        assert_eq!(containers[0]["image"], "app:2");
        assert_eq!(containers[0]["args"], json!(["--a", "--b"]), "untouched fields survive");
        assert_eq!(containers[1], json!({"name": "sidecar", "image": "proxy:1"}));
    }

    #[test]
    fn new_container_is_added_and_pod_template_is_covered() {
        let deployment = json!({"spec": {"replicas": 1, "template": pod()}});
        let out = patch(
            "apps/v1/Deployment",
            deployment,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "log", "image": "log:1"}]}}}}),
        );
        let containers = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(names(containers, "name"), [json!("log"), json!("app"), json!("sidecar")]);
        assert_eq!(out["spec"]["replicas"], 1);
    }

    #[test]
    fn env_merges_by_name() {
        let out = patch(
            "v1/Pod",
            pod(),
            json!({"spec": {"containers": [{"name": "app", "env": [
                {"name": "B", "value": "two"}, {"name": "C", "value": "3"}
            ]}]}}),
        );
        let env = &out["spec"]["containers"][0]["env"];
        assert_eq!(
            env,
            &json!([{"name": "A", "value": "1"}, {"name": "B", "value": "two"}, {"name": "C", "value": "3"}])
        );
    }

    #[test]
    fn patch_delete_removes_list_items() {
        let out = patch(
            "v1/Pod",
            pod(),
            json!({"spec": {
                "containers": [{"name": "app", "env": [{"name": "A", "$patch": "delete"}]},
                               {"name": "sidecar", "$patch": "delete"}],
                "volumes": [{"name": "nope", "$patch": "delete"}]
            }}),
        );
        let containers = &out["spec"]["containers"];
        assert_eq!(names(containers, "name"), [json!("app")]);
        assert_eq!(containers[0]["env"], json!([{"name": "B", "value": "2"}]));
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "data", "emptyDir": {}}]),
            "deleting a missing item is a no-op"
        );
    }

    #[test]
    fn patch_delete_removes_duplicates_too() {
        let original = json!({"metadata": {"ownerReferences": [
            {"uid": "1"}, {"uid": "1", "name": "dup"}, {"uid": "2", "name": "keep"}
        ]}});
        let out = patch(
            "v1/ConfigMap",
            original,
            json!({"metadata": {"ownerReferences": [{"uid": "1", "$patch": "delete"}]}}),
        );
        assert_eq!(out["metadata"]["ownerReferences"], json!([{"uid": "2", "name": "keep"}]));
    }

    #[test]
    fn patch_replace_in_list_and_on_map() {
        let out = patch(
            "v1/Pod",
            pod(),
            json!({
                "metadata": {"labels": {"$patch": "replace", "only": "this"}},
                "spec": {"containers": [{"$patch": "replace"}, {"name": "solo", "image": "solo:1"}]}
            }),
        );
        assert_eq!(out["metadata"]["labels"], json!({"only": "this"}));
        assert_eq!(out["spec"]["containers"], json!([{"name": "solo", "image": "solo:1"}]));
    }

    #[test]
    fn patch_delete_and_merge_on_maps() {
        let original = json!({"spec": {"selector": {"app": "web"}, "type": "ClusterIP"}});
        let out = patch(
            "v1/Service",
            original,
            json!({"spec": {"selector": {"$patch": "delete"}, "new": {"$patch": "delete", "x": 1},
                            "extra": {"$patch": "merge", "a": 1}}}),
        );
        // Upstream leaves an emptied map behind; a map that was not there stays absent.
        assert_eq!(out["spec"], json!({"selector": {}, "type": "ClusterIP", "extra": {"a": 1}}));
    }

    #[test]
    fn top_level_directives() {
        let original = json!({"a": 1, "b": {"c": 2}});
        assert_eq!(patch("v1/ConfigMap", original.clone(), json!({"$patch": "delete"})), json!({}));
        assert_eq!(patch("v1/ConfigMap", original, json!({"$patch": "replace", "z": 1})), json!({"z": 1}));
    }

    #[test]
    fn set_element_order_interleaves_server_only_items_like_upstream() {
        // Upstream test "set elements order in a list with server-only items 2": the list's current state
        // has item 9, which only the server knows about.
        let original = json!({"status": {"conditions": [
            {"type": "1", "other": "a"}, {"type": "2", "value": 2}, {"type": "9"},
            {"type": "3", "value": 3}, {"type": "4", "value": 4}
        ]}});
        let out = patch(
            "v1/Node",
            original,
            json!({"status": {"$setElementOrder/conditions": [{"type": "2"}, {"type": "1"}, {"type": "4"}, {"type": "3"}]}}),
        );
        assert_eq!(
            names(&out["status"]["conditions"], "type"),
            [json!("2"), json!("1"), json!("9"), json!("4"), json!("3")]
        );
        assert_eq!(out["status"]["conditions"][1], json!({"type": "1", "other": "a"}));
    }

    #[test]
    fn set_element_order_places_new_items_and_orders_scalars() {
        let original =
            json!({"metadata": {"finalizers": ["1", "3"]}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let out = patch(
            "v1/Pod",
            original,
            json!({
                "metadata": {"$setElementOrder/finalizers": ["3", "2", "1"]},
                "spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "new"}, {"name": "a"}],
                         "containers": [{"name": "new", "image": "n"}]}
            }),
        );
        // "2" is named in the order but is in neither list: ignored, as upstream does.
        assert_eq!(out["metadata"]["finalizers"], json!(["3", "1"]));
        assert_eq!(names(&out["spec"]["containers"], "name"), [json!("b"), json!("new"), json!("a")]);
    }

    #[test]
    fn set_element_order_after_delete_and_add_matches_upstream() {
        // Upstream test "add map and delete map from merging list" (three-way): the new item lands after the
        // server-only one because it took the deleted item's slot.
        let original =
            json!({"spec": {"containers": [{"name": "1"}, {"name": "2", "other": "b"}, {"name": "4", "other": "c"}]}});
        let out = patch(
            "v1/Pod",
            original,
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "2"}, {"name": "3"}],
                "containers": [{"name": "3"}, {"name": "1", "$patch": "delete"}]
            }}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "2", "other": "b"}, {"name": "4", "other": "c"}, {"name": "3"}])
        );
    }

    #[test]
    fn set_element_order_on_unknown_type_infers_the_key() {
        let original = json!({"spec": {"items": [{"id": "a", "v": 1}, {"id": "b", "v": 2}]}});
        let out = patch(
            "example.com/v1/Widget",
            original,
            json!({"spec": {"$setElementOrder/items": [{"id": "b"}, {"id": "a"}]}}),
        );
        assert_eq!(out["spec"]["items"], json!([{"id": "b", "v": 2}, {"id": "a", "v": 1}]));
    }

    #[test]
    fn merge_list_takes_patch_order() {
        // Upstream test "preserve the order from the patch in a merging list 2".
        let original = json!({"spec": {"hostAliases": [{"ip": "1"}, {"ip": "2", "v": "b"}, {"ip": "3"}]}});
        let out =
            patch("v1/Pod", original, json!({"spec": {"hostAliases": [{"ip": "3", "v": "c"}, {"ip": "1", "v": "a"}]}}));
        assert_eq!(
            out["spec"]["hostAliases"],
            json!([{"ip": "2", "v": "b"}, {"ip": "3", "v": "c"}, {"ip": "1", "v": "a"}])
        );
    }

    #[test]
    fn retain_keys_clears_other_fields() {
        // kubectl apply switching a Deployment from RollingUpdate to Recreate.
        let original = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let out = patch(
            "apps/v1/Deployment",
            original,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));

        // ... and a volume changing source, inside a merge list.
        let out = patch(
            "v1/Pod",
            pod(),
            json!({"spec": {"volumes": [{"$retainKeys": ["configMap", "name"], "name": "data", "configMap": {"name": "cm"}}]}}),
        );
        assert_eq!(out["spec"]["volumes"], json!([{"name": "data", "configMap": {"name": "cm"}}]));
    }

    #[test]
    fn delete_from_primitive_list() {
        let out = patch(
            "v1/Pod",
            pod(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "zzz"]},
                   "spec": {"containers": [{"name": "app", "$deleteFromPrimitiveList/args": ["--a"]}]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        // Works on atomic lists too, as upstream.
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["--b"]));
    }

    #[test]
    fn finalizers_are_unioned() {
        let out = patch("v1/Pod", pod(), json!({"metadata": {"finalizers": ["c", "a"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
        // Upstream test "preserve the order from the patch in a merging int list".
        let out = patch("v1/Node", json!({"spec": {"podCIDRs": [1, 2, 3]}}), json!({"spec": {"podCIDRs": [3, 1]}}));
        assert_eq!(out["spec"]["podCIDRs"], json!([2, 3, 1]));
    }

    #[test]
    fn null_deletes_keys() {
        let out = patch(
            "v1/Pod",
            pod(),
            json!({"metadata": {"labels": {"tier": null, "absent": null}}, "spec": {"volumes": null},
                   "status": {"new": {"gone": null, "kept": 1}}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
        assert!(out["spec"].get("volumes").is_none());
        assert_eq!(out["status"], json!({"new": {"kept": 1}}), "nulls inside new values are dropped");
    }

    #[test]
    fn non_merge_lists_are_replaced() {
        let out = patch("v1/Pod", pod(), json!({"spec": {"containers": [{"name": "app", "args": ["--c"]}]}}));
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["--c"]));
        let node = json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}});
        let out = patch("v1/Node", node, json!({"spec": {"taints": [{"key": "b", "effect": "NoExecute"}]}}));
        assert_eq!(out["spec"]["taints"], json!([{"key": "b", "effect": "NoExecute"}]));
    }

    #[test]
    fn empty_patch_list_leaves_merge_list_alone() {
        let out = patch("v1/Pod", pod(), json!({"spec": {"containers": []}}));
        assert_eq!(out, pod());
    }

    #[test]
    fn new_list_keeps_items_sharing_a_merge_key() {
        // DNS on 53/TCP and 53/UDP: the merge key is containerPort alone, but a fresh list is not merged.
        let ports = json!([{"containerPort": 53, "protocol": "TCP"}, {"containerPort": 53, "protocol": "UDP"}]);
        let out = patch("v1/Pod", json!({}), json!({"spec": {"containers": [{"name": "dns", "ports": ports}]}}));
        assert_eq!(out["spec"]["containers"][0]["ports"], ports);
    }

    #[test]
    fn merge_keys_of_other_types() {
        let svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}});
        let out = patch("v1/Service", svc, json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}));
        assert_eq!(out["spec"]["ports"][1], json!({"port": 443, "name": "https", "targetPort": 8443}));

        let node = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}]}});
        let out = patch("v1/Node", node, json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}));
        assert_eq!(out["status"]["conditions"][0], json!({"type": "Ready", "status": "True"}));
        assert_eq!(out["status"]["conditions"].as_array().map(Vec::len), Some(2));

        let cm = json!({"metadata": {"ownerReferences": [{"uid": "u1", "name": "a"}]}});
        let out = patch("v1/ConfigMap", cm, json!({"metadata": {"ownerReferences": [{"uid": "u2", "name": "b"}]}}));
        assert_eq!(names(&out["metadata"]["ownerReferences"], "uid"), [json!("u2"), json!("u1")]);

        // 80 and 80.0 are the same merge key.
        let svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}]}});
        let out = patch("v1/Service", svc, json!({"spec": {"ports": [{"port": 80.0, "protocol": "TCP"}]}}));
        assert_eq!(out["spec"]["ports"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn unknown_type_replaces_lists_but_honours_directives() {
        let out = patch(
            "example.com/v1/Widget",
            pod(),
            json!({
                "metadata": {"finalizers": ["z"], "labels": {"$retainKeys": ["app"], "app": "w"}},
                "spec": {"containers": [{"name": "only"}, {"name": "gone", "$patch": "delete"}]}
            }),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["z"]));
        assert_eq!(out["metadata"]["labels"], json!({"app": "w"}));
        assert_eq!(out["spec"]["containers"], json!([{"name": "only"}]));
        assert_eq!(out["spec"]["volumes"], pod()["spec"]["volumes"]);
    }

    #[test]
    fn nested_directives_in_new_values_are_resolved() {
        let out = patch(
            "v1/Pod",
            json!({}),
            json!({"spec": {"containers": [{"name": "a", "$setElementOrder/env": [{"name": "X"}],
                                            "env": [{"name": "X", "value": "1"}, {"name": "Y", "$patch": "delete"}]}]}}),
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "a", "env": [{"name": "X", "value": "1"}]}]));
    }

    #[test]
    fn original_is_not_modified_and_null_original_is_empty() {
        let original = pod();
        let p = json!({"metadata": {"labels": {"app": null}}});
        apply("v1/Pod", &original, &p).expect("applies");
        assert_eq!(original, pod());
        assert_eq!(patch("v1/Pod", Value::Null, json!({"a": 1})), json!({"a": 1}));
    }

    #[test]
    fn errors_on_bad_input() {
        use PatchError as E;
        assert!(matches!(patch_err("v1/Pod", pod(), json!([1])), E::NotAnObject { .. }));
        assert!(matches!(patch_err("v1/Pod", json!("x"), json!({})), E::OriginalNotAnObject));
        assert!(matches!(
            patch_err("v1/Pod", pod(), json!({"spec": {"$patch": "explode"}})),
            E::InvalidDirective { ref path, .. } if path == "spec"
        ));
        assert!(matches!(
            patch_err("v1/Pod", pod(), json!({"spec": {"containers": [{"image": "x"}]}})),
            E::MissingMergeKey { ref path, ref key } if path == "spec.containers" && key == "name"
        ));
        assert!(matches!(
            patch_err("v1/Pod", pod(), json!({"spec": {"containers": [{"$patch": "delete"}]}})),
            E::MissingMergeKey { .. }
        ));
        assert!(matches!(
            patch_err("v1/Pod", pod(), json!({"spec": {"$setElementOrder/containers": "app"}})),
            E::InvalidDirective { .. }
        ));
        assert!(matches!(
            patch_err("v1/Pod", pod(), json!({"spec": {"$setElementOrder": []}})),
            E::InvalidDirective { .. }
        ));
        assert!(matches!(
            patch_err(
                "v1/Pod",
                pod(),
                json!({"spec": {
                    "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                    "containers": [{"name": "sidecar"}, {"name": "app"}]
                }})
            ),
            E::OrderMismatch { .. }
        ));
        assert!(matches!(
            patch_err("v1/Pod", pod(), json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [{"a": 1}]}})),
            E::InvalidDirective { .. }
        ));
        assert!(matches!(
            patch_err("v1/Pod", pod(), json!({"metadata": {"labels": {"$retainKeys": "app"}}})),
            E::InvalidDirective { .. }
        ));
        assert!(matches!(
            patch_err("v1/Pod", pod(), json!({"metadata": {"labels": {"$retainKeys": ["app"], "tier": "x"}}})),
            E::RetainKeysViolation { ref key, .. } if key == "tier"
        ));
        assert!(matches!(
            patch_err("v1/Pod", pod(), json!({"metadata": {"finalizers": [{"x": 1}]}})),
            E::MixedListItems { .. }
        ));
        assert!(matches!(
            patch_err(
                "v1/Pod",
                json!({"metadata": {"finalizers": []}}),
                json!({"metadata": {"finalizers": [{"x": 1}]}})
            ),
            E::NoMergeKey { .. }
        ));
        assert!(matches!(
            patch_err("v1/Pod", pod(), json!({"metadata": {"$setElementOrder/labels": []}})),
            E::NotAList { .. }
        ));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let mut deep = json!(1);
        for _ in 0..(MAX_DEPTH + 10) {
            deep = json!({ "a": deep });
        }
        assert!(matches!(apply("v1/Pod", &json!({}), &deep), Err(PatchError::TooDeep { .. })));
    }

    #[test]
    fn table_matches_upstream_tags() {
        assert_eq!(list_strategy("v1/Pod", &["spec", "containers"]), Some(Key("name")));
        assert_eq!(list_strategy("v1/Pod", &["spec", "initContainers", "volumeMounts"]), Some(Key("mountPath")));
        assert_eq!(list_strategy("v1/Pod", &["spec", "containers", "ports"]), Some(Key("containerPort")));
        assert_eq!(list_strategy("v1/Pod", &["spec", "containers", "args"]), None);
        assert_eq!(list_strategy("v1/Pod", &["status", "containerStatuses"]), None);
        assert_eq!(list_strategy("batch/v1/Job", &["spec", "template", "spec", "volumes"]), Some(Key("name")));
        assert_eq!(list_strategy("apps/v1/DaemonSet", &["spec", "template", "metadata", "finalizers"]), Some(Set));
        assert_eq!(list_strategy("v1/Node", &["spec", "taints"]), None);
        assert_eq!(list_strategy("coordination.k8s.io/v1/Lease", &["metadata", "ownerReferences"]), Some(Key("uid")));
        assert_eq!(list_strategy("discovery.k8s.io/v1/EndpointSlice", &["endpoints"]), None);
        assert_eq!(list_strategy("example.com/v1/Widget", &["metadata", "finalizers"]), None);
    }
}
