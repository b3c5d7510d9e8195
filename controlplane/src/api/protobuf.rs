//! Decoding of Kubernetes protobuf request bodies
//! (`Content-Type: application/vnd.kubernetes.protobuf`) into the JSON the same
//! object has when a Go client sends it as JSON.
//!
//! kubectl's generator commands (`kubectl create namespace|deployment|configmap|
//! secret|service|job|serviceaccount`) send protobuf, and kubectl 1.32 does not
//! retry with JSON when the server answers 415, so these bodies must be
//! understood.
//!
//! # Wire format
//!
//! The body is the 4 magic bytes `k8s\0` followed by a `runtime.Unknown`
//! message: `typeMeta {apiVersion, kind}`, `raw` (the object's own protobuf
//! encoding), `contentEncoding` (must be empty) and `contentType` (empty or
//! `application/vnd.kubernetes.protobuf`). `raw` is decoded with the prost types
//! of the `k8s-pb` crate and converted to `serde_json::Value`.
//!
//! # Supported types
//!
//! `v1` Namespace, ConfigMap, Secret, Service, ServiceAccount, Pod, ResourceQuota; `rbac.authorization.k8s.io/v1` Role,
//! ClusterRole, RoleBinding, ClusterRoleBinding; `certificates.k8s.io/v1` CertificateSigningRequest; `apps/v1`
//! Deployment; `batch/v1` Job and CronJob; `policy/v1` PodDisruptionBudget; `scheduling.k8s.io/v1` PriorityClass — each with *every* field that k8s-pb 0.9
//! (Kubernetes 1.35) knows, spec and status, including everything reachable from
//! PodSpec (all volume sources, probes, lifecycle, affinity, security contexts,
//! ephemeral containers, resource claims, ...). Any other apiVersion/kind is
//! [`ProtobufError::UnsupportedType`].
//!
//! # Nothing is lost
//!
//! * Every `to_json` destructures its message exhaustively (`let Self { .. }`
//!   without `..`), so a field that k8s-pb has but the conversion does not
//!   handle is a compile error, not a silent drop.
//! * prost silently skips fields it does not know (a newer client could send
//!   fields k8s-pb 0.9 lacks). So after decoding, the message is re-encoded and
//!   compared with the original bytes at the wire level: a field present in the
//!   body but missing after the round trip is reported as
//!   [`ProtobufError::UnsupportedField`] (named by its protobuf field-number
//!   path). The one tolerated difference: prost leaves a zero key or value out
//!   of a map entry, where Go writes it; so field 1 or 2 of a message that has
//!   no other fields may vanish when it holds 0 / empty.
//!
//! # JSON semantics (what Go's `encoding/json` would produce)
//!
//! Go's gogo-protobuf marshaller writes every non-pointer field, even when it is
//! zero, and writes pointer fields only when non-nil. The conversion mirrors the
//! Go struct tags field by field (transcribed from k8s.io/api and
//! k8s.io/apimachinery):
//!
//! * `omitempty` scalar fields are omitted when absent or zero (`""`, `0`,
//!   `false`); pointer fields (`*string`, `*int32`, `*bool`, `*Struct`) are
//!   emitted whenever present, even when zero (and are `null` when absent if
//!   they lack `omitempty`, e.g. Deployment `spec.selector`); non-`omitempty`
//!   scalars are always emitted (their zero value when absent).
//! * Non-pointer struct fields are always emitted, `{}` when empty — exactly as
//!   Go prints them, e.g. `"resources": {}`, `"strategy": {}`, `"status": {}`.
//!   Structs embedded with `json:",inline"` (VolumeSource, ProbeHandler,
//!   EphemeralContainerCommon) are merged into their parent.
//! * Lists and maps with `omitempty` are omitted when empty; without it they are
//!   `null` when empty (e.g. a PodSpec without containers gives
//!   `"containers": null`, as Go does).
//! * `creationTimestamp` (a non-pointer `metav1.Time`) is `null` when unset —
//!   kubectl always sends it unset. Times are RFC 3339 in UTC with second
//!   precision (`"2024-01-01T00:00:00Z"`); like Go, nanoseconds are ignored.
//! * `IntOrString` becomes a JSON number or string; `Quantity` its string
//!   (passed through verbatim, `"0"` when absent); `bytes` standard base64;
//!   `FieldsV1` (managedFields) its raw JSON.
//! * Object keys follow the Go struct field order; `kind` and `apiVersion` come
//!   first.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::authentication::v1 as authn;
use k8s_pb::api::authorization::v1 as authz;
use k8s_pb::api::batch::v1 as batch;
use k8s_pb::api::certificates::v1 as certificates;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::policy::v1 as policy;
use k8s_pb::api::scheduling::v1 as scheduling;
use k8s_pb::api::rbac::v1 as rbac;
use k8s_pb::apimachinery::pkg::api::resource;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use k8s_pb::apimachinery::pkg::util::intstr;
use prost::Message;
use serde_json::{Map, Value};

/// The 4 bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Why a protobuf body could not be turned into JSON.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The body does not start with `k8s\0`.
    #[error("protobuf body does not start with the Kubernetes magic prefix \"k8s\\x00\"")]
    MissingMagic,
    /// The `runtime.Unknown` envelope is not valid protobuf.
    #[error("invalid protobuf envelope (runtime.Unknown): {0}")]
    Envelope(#[source] prost::DecodeError),
    /// The envelope names a type this decoder does not convert.
    #[error("protobuf decoding of {api_version:?} {kind:?} is not supported")]
    UnsupportedType {
        /// `typeMeta.apiVersion` of the envelope.
        api_version: String,
        /// `typeMeta.kind` of the envelope.
        kind: String,
    },
    /// The object bytes are not a valid protobuf encoding of `kind`.
    #[error("invalid protobuf {kind} object: {source}")]
    Object {
        /// The object's kind.
        kind: String,
        /// What prost reported.
        #[source]
        source: prost::DecodeError,
    },
    /// A field is set that this decoder cannot convert (for instance a field
    /// newer than its Kubernetes schema); converting would lose it. Also used
    /// for the envelope (`kind` "runtime.Unknown") when it declares a content
    /// encoding, a content type other than protobuf, or unknown fields.
    #[error("{kind} field {field} cannot be converted from protobuf")]
    UnsupportedField {
        /// The object's kind, or "runtime.Unknown" for the envelope.
        kind: String,
        /// The field: `<unknown protobuf field 2.1.99>` (the protobuf field
        /// numbers from the object down) for fields unknown to the schema, or
        /// `contentEncoding`/`contentType` (with the value) for the envelope.
        field: String,
    },
    /// A field holds a value that has no JSON form (for instance an
    /// `IntOrString` of unknown type or an out-of-range time).
    #[error("{kind} field {field} has an invalid value: {reason}")]
    InvalidField {
        /// The object's kind.
        kind: String,
        /// JSON path of the field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Decode a protobuf body; returns the object as JSON including "apiVersion" and "kind".
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope_bytes = body
        .strip_prefix(MAGIC)
        .ok_or(ProtobufError::MissingMagic)?;
    let envelope = Unknown::decode(envelope_bytes).map_err(ProtobufError::Envelope)?;
    let envelope_error = |field: String| ProtobufError::UnsupportedField {
        kind: "runtime.Unknown".to_owned(),
        field,
    };
    if let Some(path) = dropped_field(envelope_bytes, &envelope.encode_to_vec()) {
        return Err(envelope_error(format!("<unknown protobuf field {path}>")));
    }
    let Unknown {
        type_meta,
        raw,
        content_encoding,
        content_type,
    } = envelope;
    let encoding = content_encoding.unwrap_or_default();
    if !encoding.is_empty() {
        return Err(envelope_error(format!("contentEncoding {encoding:?}")));
    }
    let content_type = content_type.unwrap_or_default();
    if !content_type.is_empty() && content_type != MEDIA_TYPE {
        return Err(envelope_error(format!("contentType {content_type:?}")));
    }
    let type_meta = type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let raw = raw.unwrap_or_default();
    let body = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => convert_object::<core::Namespace>(&kind, &raw),
        ("v1", "ConfigMap") => convert_object::<core::ConfigMap>(&kind, &raw),
        ("v1", "Secret") => convert_object::<core::Secret>(&kind, &raw),
        ("v1", "Service") => convert_object::<core::Service>(&kind, &raw),
        ("v1", "ServiceAccount") => convert_object::<core::ServiceAccount>(&kind, &raw),
        ("v1", "Pod") => convert_object::<core::Pod>(&kind, &raw),
        ("v1", "ResourceQuota") => convert_object::<core::ResourceQuota>(&kind, &raw),
        ("apps/v1", "Deployment") => convert_object::<apps::Deployment>(&kind, &raw),
        ("batch/v1", "Job") => convert_object::<batch::Job>(&kind, &raw),
        ("batch/v1", "CronJob") => convert_object::<batch::CronJob>(&kind, &raw),
        ("policy/v1", "PodDisruptionBudget") => convert_object::<policy::PodDisruptionBudget>(&kind, &raw),
        ("scheduling.k8s.io/v1", "PriorityClass") => convert_object::<scheduling::PriorityClass>(&kind, &raw),
        ("certificates.k8s.io/v1", "CertificateSigningRequest") => {
            convert_object::<certificates::CertificateSigningRequest>(&kind, &raw)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => convert_object::<rbac::Role>(&kind, &raw),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => convert_object::<rbac::ClusterRole>(&kind, &raw),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => convert_object::<rbac::RoleBinding>(&kind, &raw),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => convert_object::<rbac::ClusterRoleBinding>(&kind, &raw),
        ("authentication.k8s.io/v1", "TokenRequest") => convert_object::<authn::TokenRequest>(&kind, &raw),
        ("authentication.k8s.io/v1", "TokenReview") => convert_object::<authn::TokenReview>(&kind, &raw),
        ("authentication.k8s.io/v1", "SelfSubjectReview") => convert_object::<authn::SelfSubjectReview>(&kind, &raw),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => convert_object::<authz::SelfSubjectAccessReview>(&kind, &raw),
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => convert_object::<authz::SelfSubjectRulesReview>(&kind, &raw),
        ("authorization.k8s.io/v1", "SubjectAccessReview") => convert_object::<authz::SubjectAccessReview>(&kind, &raw),
        ("authorization.k8s.io/v1", "LocalSubjectAccessReview") => convert_object::<authz::LocalSubjectAccessReview>(&kind, &raw),
        _ => return Err(ProtobufError::UnsupportedType { api_version, kind }),
    }?;
    let mut object = Map::new();
    object.insert("kind".to_owned(), Value::String(kind));
    object.insert("apiVersion".to_owned(), Value::String(api_version));
    object.extend(body);
    Ok(Value::Object(object))
}

/// Decode `raw` as `M`, make sure prost dropped nothing, and convert.
fn convert_object<M: Message + Default + ToJson>(
    kind: &str,
    raw: &[u8],
) -> Result<Map<String, Value>, ProtobufError> {
    let message = M::decode(raw).map_err(|source| ProtobufError::Object {
        kind: kind.to_owned(),
        source,
    })?;
    if let Some(path) = dropped_field(raw, &message.encode_to_vec()) {
        return Err(ProtobufError::UnsupportedField {
            kind: kind.to_owned(),
            field: format!("<unknown protobuf field {path}>"),
        });
    }
    match message.to_json() {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ProtobufError::InvalidField {
            kind: kind.to_owned(),
            field: "<object>".to_owned(),
            reason: "object did not convert to a JSON object".to_owned(),
        }),
        Err(FieldError { path, reason }) => Err(ProtobufError::InvalidField {
            kind: kind.to_owned(),
            field: path,
            reason,
        }),
    }
}

// ---------------------------------------------------------------------------
// Wire-level check for fields prost skipped.
// ---------------------------------------------------------------------------

/// One protobuf wire value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

impl Wire<'_> {
    fn is_zero(self) -> bool {
        match self {
            Wire::Varint(v) | Wire::Fixed64(v) => v == 0,
            Wire::Fixed32(v) => v == 0,
            Wire::Bytes(b) => b.is_empty(),
        }
    }
}

fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

fn take<'a>(buf: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if buf.len() < len {
        return None;
    }
    let (head, rest) = buf.split_at(len);
    *buf = rest;
    Some(head)
}

/// Split a message into its fields, grouped by field number (in wire order
/// within a number). `None` if `buf` is not a well-formed message (groups,
/// which Kubernetes never uses, count as malformed).
fn parse_wire(mut buf: &[u8]) -> Option<BTreeMap<u64, Vec<Wire<'_>>>> {
    let mut fields: BTreeMap<u64, Vec<Wire<'_>>> = BTreeMap::new();
    while !buf.is_empty() {
        let key = read_varint(&mut buf)?;
        let value = match key & 7 {
            0 => Wire::Varint(read_varint(&mut buf)?),
            1 => Wire::Fixed64(u64::from_le_bytes(take(&mut buf, 8)?.try_into().ok()?)),
            2 => {
                let len = usize::try_from(read_varint(&mut buf)?).ok()?;
                Wire::Bytes(take(&mut buf, len)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(take(&mut buf, 4)?.try_into().ok()?)),
            _ => return None,
        };
        fields.entry(key >> 3).or_default().push(value);
    }
    Some(fields)
}

/// Compare the original encoding of a message with prost's re-encoding of
/// what it decoded. Returns the field-number path (e.g. `2.1.99`) of the first
/// field that the original has and the re-encoding lost.
fn dropped_field(original: &[u8], reencoded: &[u8]) -> Option<String> {
    let mut path = Vec::new();
    if compare_wire(original, reencoded, &mut path, 0) {
        None
    } else if path.is_empty() {
        Some("<root>".to_owned())
    } else {
        Some(
            path.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join("."),
        )
    }
}

/// Nesting limit of the comparison (prost itself stops decoding at 100).
const MAX_DEPTH: usize = 100;

fn compare_wire(original: &[u8], reencoded: &[u8], path: &mut Vec<u64>, depth: usize) -> bool {
    let (Some(orig), Some(re)) = (parse_wire(original), parse_wire(reencoded)) else {
        return false;
    };
    // prost leaves a zero key or value out of a map entry (a message with
    // fields 1 and 2 only); Go writes both.
    let may_be_map_entry = orig.keys().all(|n| *n == 1 || *n == 2);
    for (number, orig_values) in &orig {
        path.push(*number);
        let same = match re.get(number) {
            None => may_be_map_entry && orig_values.iter().all(|v| v.is_zero()),
            Some(re_values) if orig_values.len() != re_values.len() => false,
            Some(re_values) => {
                // prost writes map entries in key order; a client need not.
                let unordered_entries = orig_values.len() > 1
                    && map_entry_keys(orig_values)
                        .is_some_and(|keys| same_entries(orig_values, &keys, re_values, depth));
                // (Also run when the above fails, to find the path.)
                unordered_entries
                    || orig_values
                        .iter()
                        .zip(re_values)
                        .all(|(o, r)| same_value(*o, *r, path, depth))
            }
        };
        if !same {
            return false;
        }
        path.pop();
    }
    true
}

fn same_value(orig: Wire<'_>, re: Wire<'_>, path: &mut Vec<u64>, depth: usize) -> bool {
    match (orig, re) {
        (Wire::Bytes(o), Wire::Bytes(r)) => {
            o == r || (depth < MAX_DEPTH && compare_wire(o, r, path, depth + 1))
        }
        _ => orig == re,
    }
}

/// The keys (field 1, empty when absent) of values that look like map
/// entries: messages with no fields other than 1 and 2, and a bytes field 1.
fn map_entry_keys<'a>(values: &[Wire<'a>]) -> Option<Vec<&'a [u8]>> {
    values
        .iter()
        .map(|value| {
            let Wire::Bytes(bytes) = value else {
                return None;
            };
            let fields = parse_wire(bytes)?;
            if !fields.keys().all(|n| *n == 1 || *n == 2) {
                return None;
            }
            match fields.get(&1).map(Vec::as_slice) {
                None => Some(&[][..]),
                Some([Wire::Bytes(key)]) => Some(*key),
                Some(_) => None,
            }
        })
        .collect()
}

/// How many same-key candidates one original entry is compared with.
const MAX_CANDIDATES: usize = 16;

/// Whether every original map entry matches a distinct re-encoded entry with
/// the same key (in order among equal keys).
fn same_entries(orig: &[Wire<'_>], orig_keys: &[&[u8]], re: &[Wire<'_>], depth: usize) -> bool {
    let Some(re_keys) = map_entry_keys(re) else {
        return false;
    };
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (i, key) in re_keys.into_iter().enumerate() {
        by_key.entry(key).or_default().push(i);
    }
    let mut used = vec![false; re.len()];
    orig.iter().zip(orig_keys).all(|(value, key)| {
        let candidates = by_key.get(key).map(Vec::as_slice).unwrap_or_default();
        let found = candidates
            .iter()
            .copied()
            .filter(|&i| !used[i])
            .take(MAX_CANDIDATES)
            .find(|&i| same_value(*value, re[i], &mut Vec::new(), depth));
        match found {
            Some(i) => {
                used[i] = true;
                true
            }
            None => false,
        }
    })
}

// ---------------------------------------------------------------------------
// Conversion machinery.
// ---------------------------------------------------------------------------

/// A value that could not be converted; `path` is built up while the error
/// travels out of the nested messages.
#[derive(Debug)]
struct FieldError {
    path: String,
    reason: String,
}

impl FieldError {
    fn new(reason: impl Into<String>) -> Self {
        FieldError {
            path: String::new(),
            reason: reason.into(),
        }
    }

    /// Prefix the path with a field name or `[index]`.
    fn within(mut self, segment: &str) -> Self {
        self.path = if self.path.is_empty() || self.path.starts_with('[') {
            format!("{segment}{}", self.path)
        } else {
            format!("{segment}.{}", self.path)
        };
        self
    }
}

type Res = Result<Value, FieldError>;
type Done = Result<(), FieldError>;

/// Conversion of a decoded protobuf value into its Kubernetes JSON form.
trait ToJson {
    fn to_json(self) -> Res;
}

impl ToJson for String {
    fn to_json(self) -> Res {
        Ok(Value::String(self))
    }
}

impl ToJson for bool {
    fn to_json(self) -> Res {
        Ok(Value::Bool(self))
    }
}

impl ToJson for i32 {
    fn to_json(self) -> Res {
        Ok(Value::from(self))
    }
}

impl ToJson for i64 {
    fn to_json(self) -> Res {
        Ok(Value::from(self))
    }
}

/// `bytes` (Go `[]byte`): standard base64.
impl ToJson for Vec<u8> {
    fn to_json(self) -> Res {
        Ok(Value::String(
            base64::engine::general_purpose::STANDARD.encode(self),
        ))
    }
}

/// Unix seconds of Go's zero `time.Time` (0001-01-01T00:00:00Z).
const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

/// `metav1.Time`: Go decodes an empty message as the zero time and otherwise
/// uses the seconds only; JSON is RFC 3339 in UTC, or `null` for the zero time.
impl ToJson for meta::Time {
    fn to_json(self) -> Res {
        if self == meta::Time::default() {
            return Ok(Value::Null);
        }
        let seconds = self.seconds.unwrap_or(0);
        if seconds == GO_ZERO_TIME_UNIX {
            return Ok(Value::Null);
        }
        let time = chrono::DateTime::from_timestamp(seconds, 0)
            .filter(|t| (0..=9999).contains(&chrono::Datelike::year(t)))
            .ok_or_else(|| FieldError::new(format!("time {seconds}s is out of range")))?;
        Ok(Value::String(time.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
    }
}

/// `resource.Quantity`: its string form; the zero Quantity prints as "0".
impl ToJson for resource::Quantity {
    fn to_json(self) -> Res {
        Ok(Value::String(self.string.unwrap_or_else(|| "0".to_owned())))
    }
}

/// `intstr.IntOrString`: type 0 is an int, type 1 a string.
impl ToJson for intstr::IntOrString {
    fn to_json(self) -> Res {
        match self.r#type.unwrap_or(0) {
            0 => Ok(Value::from(self.int_val.unwrap_or(0))),
            1 => Ok(Value::String(self.str_val.unwrap_or_default())),
            other => Err(FieldError::new(format!(
                "IntOrString of unknown type {other}"
            ))),
        }
    }
}

/// `metav1.FieldsV1`: the raw bytes are the JSON itself.
impl ToJson for meta::FieldsV1 {
    fn to_json(self) -> Res {
        match self.raw {
            None => Ok(Value::Null),
            Some(raw) if raw.is_empty() => Ok(Value::Null),
            Some(raw) => serde_json::from_slice(&raw)
                .map_err(|e| FieldError::new(format!("fieldsV1 is not JSON: {e}"))),
        }
    }
}

/// A JSON object under construction. The method names say which Go field
/// shape a protobuf field has (see the module documentation).
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn put<T: ToJson>(&mut self, key: &str, value: T) -> Done {
        let json = value.to_json().map_err(|e| e.within(key))?;
        self.0.insert(key.to_owned(), json);
        Ok(())
    }

    /// Non-pointer scalar with `omitempty`: omitted when absent or zero.
    fn opt<T: ToJson + Default + PartialEq>(&mut self, key: &str, value: Option<T>) -> Done {
        match value {
            Some(v) if v != T::default() => self.put(key, v),
            _ => Ok(()),
        }
    }

    /// Non-pointer field without `omitempty` (or any non-pointer struct):
    /// always emitted, the zero value when absent.
    fn req<T: ToJson + Default>(&mut self, key: &str, value: Option<T>) -> Done {
        self.put(key, value.unwrap_or_default())
    }

    /// Pointer field with `omitempty`: emitted exactly when present.
    fn ptr<T: ToJson>(&mut self, key: &str, value: Option<T>) -> Done {
        match value {
            Some(v) => self.put(key, v),
            None => Ok(()),
        }
    }

    /// Pointer field without `omitempty`: `null` when absent.
    fn nullable<T: ToJson>(&mut self, key: &str, value: Option<T>) -> Done {
        match value {
            Some(v) => self.put(key, v),
            None => {
                self.0.insert(key.to_owned(), Value::Null);
                Ok(())
            }
        }
    }

    /// Struct embedded with `json:",inline"`: its fields join this object.
    fn inline<T: ToJson + Default>(&mut self, value: Option<T>) -> Done {
        match value.unwrap_or_default().to_json()? {
            Value::Object(map) => {
                self.0.extend(map);
                Ok(())
            }
            _ => Err(FieldError::new("inline member is not an object")),
        }
    }

    /// Slice with `omitempty`: omitted when empty.
    fn list<T: ToJson>(&mut self, key: &str, values: Vec<T>) -> Done {
        if values.is_empty() {
            return Ok(());
        }
        self.list_req(key, values)
    }

    /// Slice without `omitempty`: `null` when empty.
    fn list_req<T: ToJson>(&mut self, key: &str, values: Vec<T>) -> Done {
        let json = if values.is_empty() {
            Value::Null
        } else {
            let mut items = Vec::with_capacity(values.len());
            for (i, v) in values.into_iter().enumerate() {
                items.push(
                    v.to_json()
                        .map_err(|e| e.within(&format!("[{i}]")).within(key))?,
                );
            }
            Value::Array(items)
        };
        self.0.insert(key.to_owned(), json);
        Ok(())
    }

    /// Map with `omitempty`: omitted when empty.
    fn map<T: ToJson>(&mut self, key: &str, values: BTreeMap<String, T>) -> Done {
        if values.is_empty() {
            return Ok(());
        }
        self.map_req(key, values)
    }

    /// Map without `omitempty`: `null` when empty.
    fn map_req<T: ToJson>(&mut self, key: &str, values: BTreeMap<String, T>) -> Done {
        let json = if values.is_empty() {
            Value::Null
        } else {
            let mut map = Map::new();
            for (k, v) in values {
                let json = v
                    .to_json()
                    .map_err(|e| e.within(&format!("[{k}]")).within(key))?;
                map.insert(k, json);
            }
            Value::Object(map)
        };
        self.0.insert(key.to_owned(), json);
        Ok(())
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

/// `convert! { path::Message { rust_field: how "jsonName", other: inline, ... } }`
/// implements [`ToJson`] for a message. Fields are listed in Go struct order
/// (which is the JSON key order); `how` is an [`Obj`] method. The
/// destructuring has no `..`, so every field of the prost struct must appear.
macro_rules! convert {
    ($ty:ty { $($field:ident: $how:ident $($json:literal)?),* $(,)? }) => {
        impl ToJson for $ty {
            fn to_json(self) -> Res {
                let Self { $($field),* } = self;
                let mut o = Obj::default();
                $(convert!(@field o, $how, $field $(, $json)?);)*
                Ok(o.done())
            }
        }
    };
    (@field $o:ident, inline, $field:ident) => {
        $o.inline($field)?
    };
    (@field $o:ident, $how:ident, $field:ident, $json:literal) => {
        $o.$how($json, $field)?
    };
}

// ---------------------------------------------------------------------------
// Per-message conversions.
//
// Field lists are those of the k8s-pb 0.9 structs; JSON names, key order and
// the opt/req/ptr/list/map choice are transcribed from the json tags and Go
// types of k8s.io/api and k8s.io/apimachinery (v0.35, matching k8s-pb 0.9;
// the tags of the fields kubectl 1.32 knows are unchanged since 1.32). The one
// tag ignored is 1.35's `omitzero` on ObjectMeta.creationTimestamp, so that it
// prints `null` when unset, as 1.32 clients do.
// ---------------------------------------------------------------------------

convert! { core::Namespace {
    metadata: req "metadata", spec: req "spec", status: req "status",
} }
convert! { core::ConfigMap {
    metadata: req "metadata", immutable: ptr "immutable", data: map "data",
    binary_data: map "binaryData",
} }
convert! { core::Secret {
    metadata: req "metadata", immutable: ptr "immutable", data: map "data",
    string_data: map "stringData", r#type: opt "type",
} }
convert! { core::Service {
    metadata: req "metadata", spec: req "spec", status: req "status",
} }
convert! { core::ServiceAccount {
    metadata: req "metadata", secrets: list "secrets", image_pull_secrets: list "imagePullSecrets",
    automount_service_account_token: ptr "automountServiceAccountToken",
} }
convert! { core::Pod {
    metadata: req "metadata", spec: req "spec", status: req "status",
} }
convert! { certificates::CertificateSigningRequest {
    metadata: req "metadata", spec: req "spec", status: req "status",
} }
convert! { certificates::CertificateSigningRequestSpec {
    request: req "request", signer_name: req "signerName", expiration_seconds: ptr "expirationSeconds",
    usages: list "usages", username: opt "username", uid: opt "uid", groups: list "groups", extra: map "extra",
} }
convert! { certificates::CertificateSigningRequestStatus {
    conditions: list "conditions", certificate: opt "certificate",
} }
convert! { certificates::CertificateSigningRequestCondition {
    r#type: req "type", status: req "status", reason: opt "reason", message: opt "message",
    last_update_time: req "lastUpdateTime", last_transition_time: req "lastTransitionTime",
} }
/// `ExtraValue` (in certificates, authentication and authorization) is a Go `[]string`: a JSON array.
macro_rules! extra_value {
    ($($ty:ty),*) => {$(
        impl ToJson for $ty {
            fn to_json(self) -> Res {
                Ok(Value::Array(self.items.into_iter().map(Value::String).collect()))
            }
        }
    )*};
}
extra_value!(certificates::ExtraValue, authn::ExtraValue, authz::ExtraValue);
// authentication.k8s.io/v1: TokenRequest (`kubectl create token`), TokenReview, SelfSubjectReview
// (`kubectl auth whoami`).
convert! { authn::TokenRequest {
    metadata: req "metadata", spec: req "spec", status: req "status",
} }
convert! { authn::TokenRequestSpec {
    audiences: list_req "audiences", expiration_seconds: nullable "expirationSeconds",
    bound_object_ref: nullable "boundObjectRef",
} }
convert! { authn::TokenRequestStatus {
    token: req "token", expiration_timestamp: req "expirationTimestamp",
} }
convert! { authn::BoundObjectReference {
    kind: opt "kind", api_version: opt "apiVersion", name: opt "name", u_id: opt "uid",
} }
convert! { authn::TokenReview {
    metadata: req "metadata", spec: req "spec", status: req "status",
} }
convert! { authn::TokenReviewSpec {
    token: opt "token", audiences: list "audiences",
} }
convert! { authn::TokenReviewStatus {
    authenticated: opt "authenticated", user: req "user", audiences: list "audiences", error: opt "error",
} }
convert! { authn::SelfSubjectReview {
    metadata: req "metadata", status: req "status",
} }
convert! { authn::SelfSubjectReviewStatus {
    user_info: req "userInfo",
} }
convert! { authn::UserInfo {
    username: opt "username", uid: opt "uid", groups: list "groups", extra: map "extra",
} }
// authorization.k8s.io/v1: the access and rules reviews (`kubectl auth can-i [--list]`).
convert! { authz::SelfSubjectAccessReview {
    metadata: req "metadata", spec: req "spec", status: req "status",
} }
convert! { authz::SelfSubjectAccessReviewSpec {
    resource_attributes: ptr "resourceAttributes", non_resource_attributes: ptr "nonResourceAttributes",
} }
convert! { authz::SubjectAccessReview {
    metadata: req "metadata", spec: req "spec", status: req "status",
} }
convert! { authz::LocalSubjectAccessReview {
    metadata: req "metadata", spec: req "spec", status: req "status",
} }
convert! { authz::SubjectAccessReviewSpec {
    resource_attributes: ptr "resourceAttributes", non_resource_attributes: ptr "nonResourceAttributes",
    user: opt "user", groups: list "groups", extra: map "extra", uid: opt "uid",
} }
convert! { authz::SubjectAccessReviewStatus {
    allowed: req "allowed", denied: opt "denied", reason: opt "reason", evaluation_error: opt "evaluationError",
} }
convert! { authz::ResourceAttributes {
    namespace: opt "namespace", verb: opt "verb", group: opt "group", version: opt "version",
    resource: opt "resource", subresource: opt "subresource", name: opt "name",
    field_selector: ptr "fieldSelector", label_selector: ptr "labelSelector",
} }
convert! { authz::NonResourceAttributes {
    path: opt "path", verb: opt "verb",
} }
convert! { authz::FieldSelectorAttributes {
    raw_selector: opt "rawSelector", requirements: list "requirements",
} }
convert! { authz::LabelSelectorAttributes {
    raw_selector: opt "rawSelector", requirements: list "requirements",
} }
convert! { meta::FieldSelectorRequirement {
    key: req "key", operator: req "operator", values: list "values",
} }
convert! { authz::SelfSubjectRulesReview {
    metadata: req "metadata", spec: req "spec", status: req "status",
} }
convert! { authz::SelfSubjectRulesReviewSpec {
    namespace: opt "namespace",
} }
convert! { authz::SubjectRulesReviewStatus {
    resource_rules: list_req "resourceRules", non_resource_rules: list_req "nonResourceRules",
    incomplete: req "incomplete", evaluation_error: opt "evaluationError",
} }
convert! { authz::ResourceRule {
    verbs: list_req "verbs", api_groups: list "apiGroups", resources: list "resources",
    resource_names: list "resourceNames",
} }
convert! { authz::NonResourceRule {
    verbs: list_req "verbs", non_resource_ur_ls: list "nonResourceURLs",
} }
convert! { rbac::Role {
    metadata: req "metadata", rules: list_req "rules",
} }
convert! { rbac::ClusterRole {
    metadata: req "metadata", rules: list_req "rules", aggregation_rule: ptr "aggregationRule",
} }
convert! { rbac::RoleBinding {
    metadata: req "metadata", subjects: list "subjects", role_ref: req "roleRef",
} }
convert! { rbac::ClusterRoleBinding {
    metadata: req "metadata", subjects: list "subjects", role_ref: req "roleRef",
} }
convert! { rbac::PolicyRule {
    verbs: list_req "verbs", api_groups: list "apiGroups", resources: list "resources",
    resource_names: list "resourceNames", non_resource_ur_ls: list "nonResourceURLs",
} }
convert! { rbac::AggregationRule {
    cluster_role_selectors: list "clusterRoleSelectors",
} }
convert! { rbac::Subject {
    kind: req "kind", api_group: opt "apiGroup", name: req "name", namespace: opt "namespace",
} }
convert! { rbac::RoleRef {
    api_group: req "apiGroup", kind: req "kind", name: req "name",
} }
convert! { apps::Deployment {
    metadata: req "metadata", spec: req "spec", status: req "status",
} }
convert! { batch::Job {
    metadata: req "metadata", spec: req "spec", status: req "status",
} }
convert! { batch::CronJob {
    metadata: req "metadata", spec: req "spec", status: req "status",
} }
convert! { batch::CronJobSpec {
    schedule: req "schedule", time_zone: ptr "timeZone", starting_deadline_seconds: ptr "startingDeadlineSeconds",
    concurrency_policy: opt "concurrencyPolicy", suspend: ptr "suspend", job_template: req "jobTemplate",
    successful_jobs_history_limit: ptr "successfulJobsHistoryLimit", failed_jobs_history_limit: ptr "failedJobsHistoryLimit",
} }
convert! { batch::CronJobStatus {
    active: list "active", last_schedule_time: ptr "lastScheduleTime", last_successful_time: ptr "lastSuccessfulTime",
} }
convert! { scheduling::PriorityClass {
    metadata: req "metadata", value: req "value", global_default: opt "globalDefault",
    description: opt "description", preemption_policy: ptr "preemptionPolicy",
} }
convert! { core::ResourceQuota {
    metadata: req "metadata", spec: req "spec", status: req "status",
} }
convert! { core::ResourceQuotaSpec {
    hard: map "hard", scopes: list "scopes", scope_selector: ptr "scopeSelector",
} }
convert! { core::ResourceQuotaStatus {
    hard: map "hard", used: map "used",
} }
convert! { core::ScopeSelector {
    match_expressions: list "matchExpressions",
} }
convert! { core::ScopedResourceSelectorRequirement {
    scope_name: req "scopeName", operator: req "operator", values: list "values",
} }
convert! { policy::PodDisruptionBudget {
    metadata: req "metadata", spec: req "spec", status: req "status",
} }
convert! { policy::PodDisruptionBudgetSpec {
    min_available: ptr "minAvailable", selector: ptr "selector", max_unavailable: ptr "maxUnavailable",
    unhealthy_pod_eviction_policy: ptr "unhealthyPodEvictionPolicy",
} }
convert! { policy::PodDisruptionBudgetStatus {
    observed_generation: opt "observedGeneration", disrupted_pods: map "disruptedPods",
    disruptions_allowed: req "disruptionsAllowed", current_healthy: req "currentHealthy",
    desired_healthy: req "desiredHealthy", expected_pods: req "expectedPods", conditions: list "conditions",
} }
convert! { batch::JobTemplateSpec {
    metadata: req "metadata", spec: req "spec",
} }
convert! { meta::ObjectMeta {
    name: opt "name", generate_name: opt "generateName", namespace: opt "namespace",
    self_link: opt "selfLink", uid: opt "uid", resource_version: opt "resourceVersion",
    generation: opt "generation", creation_timestamp: req "creationTimestamp",
    deletion_timestamp: ptr "deletionTimestamp",
    deletion_grace_period_seconds: ptr "deletionGracePeriodSeconds", labels: map "labels",
    annotations: map "annotations", owner_references: list "ownerReferences",
    finalizers: list "finalizers", managed_fields: list "managedFields",
} }
convert! { core::NamespaceSpec {
    finalizers: list "finalizers",
} }
convert! { core::NamespaceStatus {
    phase: opt "phase", conditions: list "conditions",
} }
convert! { core::ServiceSpec {
    ports: list "ports", selector: map "selector", cluster_ip: opt "clusterIP",
    cluster_ips: list "clusterIPs", r#type: opt "type", external_ips: list "externalIPs",
    session_affinity: opt "sessionAffinity", load_balancer_ip: opt "loadBalancerIP",
    load_balancer_source_ranges: list "loadBalancerSourceRanges",
    external_name: opt "externalName", external_traffic_policy: opt "externalTrafficPolicy",
    health_check_node_port: opt "healthCheckNodePort",
    publish_not_ready_addresses: opt "publishNotReadyAddresses",
    session_affinity_config: ptr "sessionAffinityConfig", ip_families: list "ipFamilies",
    ip_family_policy: ptr "ipFamilyPolicy",
    allocate_load_balancer_node_ports: ptr "allocateLoadBalancerNodePorts",
    load_balancer_class: ptr "loadBalancerClass",
    internal_traffic_policy: ptr "internalTrafficPolicy",
    traffic_distribution: ptr "trafficDistribution",
} }
convert! { core::ServiceStatus {
    load_balancer: req "loadBalancer", conditions: list "conditions",
} }
convert! { core::ObjectReference {
    kind: opt "kind", namespace: opt "namespace", name: opt "name", uid: opt "uid",
    api_version: opt "apiVersion", resource_version: opt "resourceVersion",
    field_path: opt "fieldPath",
} }
convert! { core::LocalObjectReference {
    name: opt "name",
} }
convert! { core::PodSpec {
    volumes: list "volumes", init_containers: list "initContainers",
    containers: list_req "containers", ephemeral_containers: list "ephemeralContainers",
    restart_policy: opt "restartPolicy",
    termination_grace_period_seconds: ptr "terminationGracePeriodSeconds",
    active_deadline_seconds: ptr "activeDeadlineSeconds", dns_policy: opt "dnsPolicy",
    node_selector: map "nodeSelector", service_account_name: opt "serviceAccountName",
    service_account: opt "serviceAccount",
    automount_service_account_token: ptr "automountServiceAccountToken", node_name: opt "nodeName",
    host_network: opt "hostNetwork", host_pid: opt "hostPID", host_ipc: opt "hostIPC",
    share_process_namespace: ptr "shareProcessNamespace", security_context: ptr "securityContext",
    image_pull_secrets: list "imagePullSecrets", hostname: opt "hostname",
    subdomain: opt "subdomain", affinity: ptr "affinity", scheduler_name: opt "schedulerName",
    tolerations: list "tolerations", host_aliases: list "hostAliases",
    priority_class_name: opt "priorityClassName", priority: ptr "priority",
    dns_config: ptr "dnsConfig", readiness_gates: list "readinessGates",
    runtime_class_name: ptr "runtimeClassName", enable_service_links: ptr "enableServiceLinks",
    preemption_policy: ptr "preemptionPolicy", overhead: map "overhead",
    topology_spread_constraints: list "topologySpreadConstraints",
    set_hostname_as_fqdn: ptr "setHostnameAsFQDN", os: ptr "os", host_users: ptr "hostUsers",
    scheduling_gates: list "schedulingGates", resource_claims: list "resourceClaims",
    resources: ptr "resources", hostname_override: ptr "hostnameOverride",
    workload_ref: ptr "workloadRef",
} }
convert! { core::PodStatus {
    observed_generation: opt "observedGeneration", phase: opt "phase",
    conditions: list "conditions", message: opt "message", reason: opt "reason",
    nominated_node_name: opt "nominatedNodeName", host_ip: opt "hostIP", host_ips: list "hostIPs",
    pod_ip: opt "podIP", pod_ips: list "podIPs", start_time: ptr "startTime",
    init_container_statuses: list "initContainerStatuses",
    container_statuses: list "containerStatuses", qos_class: opt "qosClass",
    ephemeral_container_statuses: list "ephemeralContainerStatuses", resize: opt "resize",
    resource_claim_statuses: list "resourceClaimStatuses",
    extended_resource_claim_status: ptr "extendedResourceClaimStatus",
    allocated_resources: map "allocatedResources", resources: ptr "resources",
} }
convert! { apps::DeploymentSpec {
    replicas: ptr "replicas", selector: nullable "selector", template: req "template",
    strategy: req "strategy", min_ready_seconds: opt "minReadySeconds",
    revision_history_limit: ptr "revisionHistoryLimit", paused: opt "paused",
    progress_deadline_seconds: ptr "progressDeadlineSeconds",
} }
convert! { apps::DeploymentStatus {
    observed_generation: opt "observedGeneration", replicas: opt "replicas",
    updated_replicas: opt "updatedReplicas", ready_replicas: opt "readyReplicas",
    available_replicas: opt "availableReplicas", unavailable_replicas: opt "unavailableReplicas",
    terminating_replicas: ptr "terminatingReplicas", conditions: list "conditions",
    collision_count: ptr "collisionCount",
} }
convert! { batch::JobSpec {
    parallelism: ptr "parallelism", completions: ptr "completions",
    active_deadline_seconds: ptr "activeDeadlineSeconds",
    pod_failure_policy: ptr "podFailurePolicy", success_policy: ptr "successPolicy",
    backoff_limit: ptr "backoffLimit", backoff_limit_per_index: ptr "backoffLimitPerIndex",
    max_failed_indexes: ptr "maxFailedIndexes", selector: ptr "selector",
    manual_selector: ptr "manualSelector", template: req "template",
    ttl_seconds_after_finished: ptr "ttlSecondsAfterFinished",
    completion_mode: ptr "completionMode", suspend: ptr "suspend",
    pod_replacement_policy: ptr "podReplacementPolicy", managed_by: ptr "managedBy",
} }
convert! { batch::JobStatus {
    conditions: list "conditions", start_time: ptr "startTime",
    completion_time: ptr "completionTime", active: opt "active", succeeded: opt "succeeded",
    failed: opt "failed", terminating: ptr "terminating",
    completed_indexes: opt "completedIndexes", failed_indexes: ptr "failedIndexes",
    uncounted_terminated_pods: ptr "uncountedTerminatedPods", ready: ptr "ready",
} }
convert! { meta::OwnerReference {
    api_version: req "apiVersion", kind: req "kind", name: req "name", uid: req "uid",
    controller: ptr "controller", block_owner_deletion: ptr "blockOwnerDeletion",
} }
convert! { meta::ManagedFieldsEntry {
    manager: opt "manager", operation: opt "operation", api_version: opt "apiVersion",
    time: ptr "time", fields_type: opt "fieldsType", fields_v1: ptr "fieldsV1",
    subresource: opt "subresource",
} }
convert! { core::NamespaceCondition {
    r#type: req "type", status: req "status", last_transition_time: req "lastTransitionTime",
    reason: opt "reason", message: opt "message",
} }
convert! { core::ServicePort {
    name: opt "name", protocol: opt "protocol", app_protocol: ptr "appProtocol", port: req "port",
    target_port: req "targetPort", node_port: opt "nodePort",
} }
convert! { core::SessionAffinityConfig {
    client_ip: ptr "clientIP",
} }
convert! { core::LoadBalancerStatus {
    ingress: list "ingress",
} }
convert! { meta::Condition {
    r#type: req "type", status: req "status", observed_generation: opt "observedGeneration",
    last_transition_time: req "lastTransitionTime", reason: req "reason", message: req "message",
} }
convert! { core::Volume {
    name: req "name", volume_source: inline,
} }
convert! { core::Container {
    name: req "name", image: opt "image", command: list "command", args: list "args",
    working_dir: opt "workingDir", ports: list "ports", env_from: list "envFrom", env: list "env",
    resources: req "resources", resize_policy: list "resizePolicy",
    restart_policy: ptr "restartPolicy", restart_policy_rules: list "restartPolicyRules",
    volume_mounts: list "volumeMounts", volume_devices: list "volumeDevices",
    liveness_probe: ptr "livenessProbe", readiness_probe: ptr "readinessProbe",
    startup_probe: ptr "startupProbe", lifecycle: ptr "lifecycle",
    termination_message_path: opt "terminationMessagePath",
    termination_message_policy: opt "terminationMessagePolicy",
    image_pull_policy: opt "imagePullPolicy", security_context: ptr "securityContext",
    stdin: opt "stdin", stdin_once: opt "stdinOnce", tty: opt "tty",
} }
convert! { core::EphemeralContainer {
    ephemeral_container_common: inline, target_container_name: opt "targetContainerName",
} }
convert! { core::PodSecurityContext {
    se_linux_options: ptr "seLinuxOptions", windows_options: ptr "windowsOptions",
    run_as_user: ptr "runAsUser", run_as_group: ptr "runAsGroup",
    run_as_non_root: ptr "runAsNonRoot", supplemental_groups: list "supplementalGroups",
    supplemental_groups_policy: ptr "supplementalGroupsPolicy", fs_group: ptr "fsGroup",
    sysctls: list "sysctls", fs_group_change_policy: ptr "fsGroupChangePolicy",
    seccomp_profile: ptr "seccompProfile", app_armor_profile: ptr "appArmorProfile",
    se_linux_change_policy: ptr "seLinuxChangePolicy",
} }
convert! { core::Affinity {
    node_affinity: ptr "nodeAffinity", pod_affinity: ptr "podAffinity",
    pod_anti_affinity: ptr "podAntiAffinity",
} }
convert! { core::Toleration {
    key: opt "key", operator: opt "operator", value: opt "value", effect: opt "effect",
    toleration_seconds: ptr "tolerationSeconds",
} }
convert! { core::HostAlias {
    ip: req "ip", hostnames: list "hostnames",
} }
convert! { core::PodDnsConfig {
    nameservers: list "nameservers", searches: list "searches", options: list "options",
} }
convert! { core::PodReadinessGate {
    condition_type: req "conditionType",
} }
convert! { core::TopologySpreadConstraint {
    max_skew: req "maxSkew", topology_key: req "topologyKey",
    when_unsatisfiable: req "whenUnsatisfiable", label_selector: ptr "labelSelector",
    min_domains: ptr "minDomains", node_affinity_policy: ptr "nodeAffinityPolicy",
    node_taints_policy: ptr "nodeTaintsPolicy", match_label_keys: list "matchLabelKeys",
} }
convert! { core::PodOs {
    name: req "name",
} }
convert! { core::PodSchedulingGate {
    name: req "name",
} }
convert! { core::PodResourceClaim {
    name: req "name", resource_claim_name: ptr "resourceClaimName",
    resource_claim_template_name: ptr "resourceClaimTemplateName",
} }
convert! { core::ResourceRequirements {
    limits: map "limits", requests: map "requests", claims: list "claims",
} }
convert! { core::WorkloadReference {
    name: req "name", pod_group: req "podGroup", pod_group_replica_key: opt "podGroupReplicaKey",
} }
convert! { core::PodCondition {
    r#type: req "type", observed_generation: opt "observedGeneration", status: req "status",
    last_probe_time: req "lastProbeTime", last_transition_time: req "lastTransitionTime",
    reason: opt "reason", message: opt "message",
} }
convert! { core::HostIp {
    ip: req "ip",
} }
convert! { core::PodIp {
    ip: req "ip",
} }
convert! { core::ContainerStatus {
    name: req "name", state: req "state", last_state: req "lastState", ready: req "ready",
    restart_count: req "restartCount", image: req "image", image_id: req "imageID",
    container_id: opt "containerID", started: ptr "started",
    allocated_resources: map "allocatedResources", resources: ptr "resources",
    volume_mounts: list "volumeMounts", user: ptr "user",
    allocated_resources_status: list "allocatedResourcesStatus", stop_signal: ptr "stopSignal",
} }
convert! { core::PodResourceClaimStatus {
    name: req "name", resource_claim_name: ptr "resourceClaimName",
} }
convert! { core::PodExtendedResourceClaimStatus {
    request_mappings: list_req "requestMappings", resource_claim_name: req "resourceClaimName",
} }
convert! { meta::LabelSelector {
    match_labels: map "matchLabels", match_expressions: list "matchExpressions",
} }
convert! { core::PodTemplateSpec {
    metadata: req "metadata", spec: req "spec",
} }
convert! { apps::DeploymentStrategy {
    r#type: opt "type", rolling_update: ptr "rollingUpdate",
} }
convert! { apps::DeploymentCondition {
    r#type: req "type", status: req "status", last_update_time: req "lastUpdateTime",
    last_transition_time: req "lastTransitionTime", reason: opt "reason", message: opt "message",
} }
convert! { batch::PodFailurePolicy {
    rules: list_req "rules",
} }
convert! { batch::SuccessPolicy {
    rules: list_req "rules",
} }
convert! { batch::JobCondition {
    r#type: req "type", status: req "status", last_probe_time: req "lastProbeTime",
    last_transition_time: req "lastTransitionTime", reason: opt "reason", message: opt "message",
} }
convert! { batch::UncountedTerminatedPods {
    succeeded: list "succeeded", failed: list "failed",
} }
convert! { core::ClientIpConfig {
    timeout_seconds: ptr "timeoutSeconds",
} }
convert! { core::LoadBalancerIngress {
    ip: opt "ip", hostname: opt "hostname", ip_mode: ptr "ipMode", ports: list "ports",
} }
convert! { core::VolumeSource {
    host_path: ptr "hostPath", empty_dir: ptr "emptyDir",
    gce_persistent_disk: ptr "gcePersistentDisk",
    aws_elastic_block_store: ptr "awsElasticBlockStore", git_repo: ptr "gitRepo",
    secret: ptr "secret", nfs: ptr "nfs", iscsi: ptr "iscsi", glusterfs: ptr "glusterfs",
    persistent_volume_claim: ptr "persistentVolumeClaim", rbd: ptr "rbd",
    flex_volume: ptr "flexVolume", cinder: ptr "cinder", cephfs: ptr "cephfs",
    flocker: ptr "flocker", downward_api: ptr "downwardAPI", fc: ptr "fc",
    azure_file: ptr "azureFile", config_map: ptr "configMap", vsphere_volume: ptr "vsphereVolume",
    quobyte: ptr "quobyte", azure_disk: ptr "azureDisk",
    photon_persistent_disk: ptr "photonPersistentDisk", projected: ptr "projected",
    portworx_volume: ptr "portworxVolume", scale_io: ptr "scaleIO", storageos: ptr "storageos",
    csi: ptr "csi", ephemeral: ptr "ephemeral", image: ptr "image",
} }
convert! { core::ContainerPort {
    name: opt "name", host_port: opt "hostPort", container_port: req "containerPort",
    protocol: opt "protocol", host_ip: opt "hostIP",
} }
convert! { core::EnvFromSource {
    prefix: opt "prefix", config_map_ref: ptr "configMapRef", secret_ref: ptr "secretRef",
} }
convert! { core::EnvVar {
    name: req "name", value: opt "value", value_from: ptr "valueFrom",
} }
convert! { core::ContainerResizePolicy {
    resource_name: req "resourceName", restart_policy: req "restartPolicy",
} }
convert! { core::ContainerRestartRule {
    action: opt "action", exit_codes: ptr "exitCodes",
} }
convert! { core::VolumeMount {
    name: req "name", read_only: opt "readOnly", recursive_read_only: ptr "recursiveReadOnly",
    mount_path: req "mountPath", sub_path: opt "subPath",
    mount_propagation: ptr "mountPropagation", sub_path_expr: opt "subPathExpr",
} }
convert! { core::VolumeDevice {
    name: req "name", device_path: req "devicePath",
} }
convert! { core::Probe {
    handler: inline, initial_delay_seconds: opt "initialDelaySeconds",
    timeout_seconds: opt "timeoutSeconds", period_seconds: opt "periodSeconds",
    success_threshold: opt "successThreshold", failure_threshold: opt "failureThreshold",
    termination_grace_period_seconds: ptr "terminationGracePeriodSeconds",
} }
convert! { core::Lifecycle {
    post_start: ptr "postStart", pre_stop: ptr "preStop", stop_signal: ptr "stopSignal",
} }
convert! { core::SecurityContext {
    capabilities: ptr "capabilities", privileged: ptr "privileged",
    se_linux_options: ptr "seLinuxOptions", windows_options: ptr "windowsOptions",
    run_as_user: ptr "runAsUser", run_as_group: ptr "runAsGroup",
    run_as_non_root: ptr "runAsNonRoot", read_only_root_filesystem: ptr "readOnlyRootFilesystem",
    allow_privilege_escalation: ptr "allowPrivilegeEscalation", proc_mount: ptr "procMount",
    seccomp_profile: ptr "seccompProfile", app_armor_profile: ptr "appArmorProfile",
} }
convert! { core::EphemeralContainerCommon {
    name: req "name", image: opt "image", command: list "command", args: list "args",
    working_dir: opt "workingDir", ports: list "ports", env_from: list "envFrom", env: list "env",
    resources: req "resources", resize_policy: list "resizePolicy",
    restart_policy: ptr "restartPolicy", restart_policy_rules: list "restartPolicyRules",
    volume_mounts: list "volumeMounts", volume_devices: list "volumeDevices",
    liveness_probe: ptr "livenessProbe", readiness_probe: ptr "readinessProbe",
    startup_probe: ptr "startupProbe", lifecycle: ptr "lifecycle",
    termination_message_path: opt "terminationMessagePath",
    termination_message_policy: opt "terminationMessagePolicy",
    image_pull_policy: opt "imagePullPolicy", security_context: ptr "securityContext",
    stdin: opt "stdin", stdin_once: opt "stdinOnce", tty: opt "tty",
} }
convert! { core::SeLinuxOptions {
    user: opt "user", role: opt "role", r#type: opt "type", level: opt "level",
} }
convert! { core::WindowsSecurityContextOptions {
    gmsa_credential_spec_name: ptr "gmsaCredentialSpecName",
    gmsa_credential_spec: ptr "gmsaCredentialSpec", run_as_user_name: ptr "runAsUserName",
    host_process: ptr "hostProcess",
} }
convert! { core::Sysctl {
    name: req "name", value: req "value",
} }
convert! { core::SeccompProfile {
    r#type: req "type", localhost_profile: ptr "localhostProfile",
} }
convert! { core::AppArmorProfile {
    r#type: req "type", localhost_profile: ptr "localhostProfile",
} }
convert! { core::NodeAffinity {
    required_during_scheduling_ignored_during_execution: ptr "requiredDuringSchedulingIgnoredDuringExecution",
    preferred_during_scheduling_ignored_during_execution: list "preferredDuringSchedulingIgnoredDuringExecution",
} }
convert! { core::PodAffinity {
    required_during_scheduling_ignored_during_execution: list "requiredDuringSchedulingIgnoredDuringExecution",
    preferred_during_scheduling_ignored_during_execution: list "preferredDuringSchedulingIgnoredDuringExecution",
} }
convert! { core::PodAntiAffinity {
    required_during_scheduling_ignored_during_execution: list "requiredDuringSchedulingIgnoredDuringExecution",
    preferred_during_scheduling_ignored_during_execution: list "preferredDuringSchedulingIgnoredDuringExecution",
} }
convert! { core::PodDnsConfigOption {
    name: opt "name", value: ptr "value",
} }
convert! { core::ResourceClaim {
    name: req "name", request: opt "request",
} }
convert! { core::ContainerState {
    waiting: ptr "waiting", running: ptr "running", terminated: ptr "terminated",
} }
convert! { core::VolumeMountStatus {
    name: req "name", mount_path: req "mountPath", read_only: opt "readOnly",
    recursive_read_only: ptr "recursiveReadOnly",
} }
convert! { core::ContainerUser {
    linux: ptr "linux",
} }
convert! { core::ResourceStatus {
    name: req "name", resources: list "resources",
} }
convert! { core::ContainerExtendedResourceRequest {
    container_name: req "containerName", resource_name: req "resourceName",
    request_name: req "requestName",
} }
convert! { meta::LabelSelectorRequirement {
    key: req "key", operator: req "operator", values: list "values",
} }
convert! { apps::RollingUpdateDeployment {
    max_unavailable: ptr "maxUnavailable", max_surge: ptr "maxSurge",
} }
convert! { batch::PodFailurePolicyRule {
    action: req "action", on_exit_codes: ptr "onExitCodes",
    on_pod_conditions: list "onPodConditions",
} }
convert! { batch::SuccessPolicyRule {
    succeeded_indexes: ptr "succeededIndexes", succeeded_count: ptr "succeededCount",
} }
convert! { core::PortStatus {
    port: req "port", protocol: req "protocol", error: ptr "error",
} }
convert! { core::HostPathVolumeSource {
    path: req "path", r#type: ptr "type",
} }
convert! { core::EmptyDirVolumeSource {
    medium: opt "medium", size_limit: ptr "sizeLimit",
} }
convert! { core::GcePersistentDiskVolumeSource {
    pd_name: req "pdName", fs_type: opt "fsType", partition: opt "partition",
    read_only: opt "readOnly",
} }
convert! { core::AwsElasticBlockStoreVolumeSource {
    volume_id: req "volumeID", fs_type: opt "fsType", partition: opt "partition",
    read_only: opt "readOnly",
} }
convert! { core::GitRepoVolumeSource {
    repository: req "repository", revision: opt "revision", directory: opt "directory",
} }
convert! { core::SecretVolumeSource {
    secret_name: opt "secretName", items: list "items", default_mode: ptr "defaultMode",
    optional: ptr "optional",
} }
convert! { core::NfsVolumeSource {
    server: req "server", path: req "path", read_only: opt "readOnly",
} }
convert! { core::IscsiVolumeSource {
    target_portal: req "targetPortal", iqn: req "iqn", lun: req "lun",
    iscsi_interface: opt "iscsiInterface", fs_type: opt "fsType", read_only: opt "readOnly",
    portals: list "portals", chap_auth_discovery: opt "chapAuthDiscovery",
    chap_auth_session: opt "chapAuthSession", secret_ref: ptr "secretRef",
    initiator_name: ptr "initiatorName",
} }
convert! { core::GlusterfsVolumeSource {
    endpoints: req "endpoints", path: req "path", read_only: opt "readOnly",
} }
convert! { core::PersistentVolumeClaimVolumeSource {
    claim_name: req "claimName", read_only: opt "readOnly",
} }
convert! { core::RbdVolumeSource {
    monitors: list_req "monitors", image: req "image", fs_type: opt "fsType", pool: opt "pool",
    user: opt "user", keyring: opt "keyring", secret_ref: ptr "secretRef",
    read_only: opt "readOnly",
} }
convert! { core::FlexVolumeSource {
    driver: req "driver", fs_type: opt "fsType", secret_ref: ptr "secretRef",
    read_only: opt "readOnly", options: map "options",
} }
convert! { core::CinderVolumeSource {
    volume_id: req "volumeID", fs_type: opt "fsType", read_only: opt "readOnly",
    secret_ref: ptr "secretRef",
} }
convert! { core::CephFsVolumeSource {
    monitors: list_req "monitors", path: opt "path", user: opt "user",
    secret_file: opt "secretFile", secret_ref: ptr "secretRef", read_only: opt "readOnly",
} }
convert! { core::FlockerVolumeSource {
    dataset_name: opt "datasetName", dataset_uuid: opt "datasetUUID",
} }
convert! { core::DownwardAPIVolumeSource {
    items: list "items", default_mode: ptr "defaultMode",
} }
convert! { core::FcVolumeSource {
    target_ww_ns: list "targetWWNs", lun: ptr "lun", fs_type: opt "fsType",
    read_only: opt "readOnly", wwids: list "wwids",
} }
convert! { core::AzureFileVolumeSource {
    secret_name: req "secretName", share_name: req "shareName", read_only: opt "readOnly",
} }
convert! { core::ConfigMapVolumeSource {
    local_object_reference: inline, items: list "items", default_mode: ptr "defaultMode",
    optional: ptr "optional",
} }
convert! { core::VsphereVirtualDiskVolumeSource {
    volume_path: req "volumePath", fs_type: opt "fsType",
    storage_policy_name: opt "storagePolicyName", storage_policy_id: opt "storagePolicyID",
} }
convert! { core::QuobyteVolumeSource {
    registry: req "registry", volume: req "volume", read_only: opt "readOnly", user: opt "user",
    group: opt "group", tenant: opt "tenant",
} }
convert! { core::AzureDiskVolumeSource {
    disk_name: req "diskName", disk_uri: req "diskURI", caching_mode: ptr "cachingMode",
    fs_type: ptr "fsType", read_only: ptr "readOnly", kind: ptr "kind",
} }
convert! { core::PhotonPersistentDiskVolumeSource {
    pd_id: req "pdID", fs_type: opt "fsType",
} }
convert! { core::ProjectedVolumeSource {
    sources: list_req "sources", default_mode: ptr "defaultMode",
} }
convert! { core::PortworxVolumeSource {
    volume_id: req "volumeID", fs_type: opt "fsType", read_only: opt "readOnly",
} }
convert! { core::ScaleIoVolumeSource {
    gateway: req "gateway", system: req "system", secret_ref: nullable "secretRef",
    ssl_enabled: opt "sslEnabled", protection_domain: opt "protectionDomain",
    storage_pool: opt "storagePool", storage_mode: opt "storageMode",
    volume_name: opt "volumeName", fs_type: opt "fsType", read_only: opt "readOnly",
} }
convert! { core::StorageOsVolumeSource {
    volume_name: opt "volumeName", volume_namespace: opt "volumeNamespace", fs_type: opt "fsType",
    read_only: opt "readOnly", secret_ref: ptr "secretRef",
} }
convert! { core::CSIVolumeSource {
    driver: req "driver", read_only: ptr "readOnly", fs_type: ptr "fsType",
    volume_attributes: map "volumeAttributes", node_publish_secret_ref: ptr "nodePublishSecretRef",
} }
convert! { core::EphemeralVolumeSource {
    volume_claim_template: ptr "volumeClaimTemplate",
} }
convert! { core::ImageVolumeSource {
    reference: opt "reference", pull_policy: opt "pullPolicy",
} }
convert! { core::ConfigMapEnvSource {
    local_object_reference: inline, optional: ptr "optional",
} }
convert! { core::SecretEnvSource {
    local_object_reference: inline, optional: ptr "optional",
} }
convert! { core::EnvVarSource {
    field_ref: ptr "fieldRef", resource_field_ref: ptr "resourceFieldRef",
    config_map_key_ref: ptr "configMapKeyRef", secret_key_ref: ptr "secretKeyRef",
    file_key_ref: ptr "fileKeyRef",
} }
convert! { core::ContainerRestartRuleOnExitCodes {
    operator: opt "operator", values: list "values",
} }
convert! { core::ProbeHandler {
    exec: ptr "exec", http_get: ptr "httpGet", tcp_socket: ptr "tcpSocket", grpc: ptr "grpc",
} }
convert! { core::LifecycleHandler {
    exec: ptr "exec", http_get: ptr "httpGet", tcp_socket: ptr "tcpSocket", sleep: ptr "sleep",
} }
convert! { core::Capabilities {
    add: list "add", drop: list "drop",
} }
convert! { core::NodeSelector {
    node_selector_terms: list_req "nodeSelectorTerms",
} }
convert! { core::PreferredSchedulingTerm {
    weight: req "weight", preference: req "preference",
} }
convert! { core::PodAffinityTerm {
    label_selector: ptr "labelSelector", namespaces: list "namespaces",
    topology_key: req "topologyKey", namespace_selector: ptr "namespaceSelector",
    match_label_keys: list "matchLabelKeys", mismatch_label_keys: list "mismatchLabelKeys",
} }
convert! { core::WeightedPodAffinityTerm {
    weight: req "weight", pod_affinity_term: req "podAffinityTerm",
} }
convert! { core::ContainerStateWaiting {
    reason: opt "reason", message: opt "message",
} }
convert! { core::ContainerStateRunning {
    started_at: req "startedAt",
} }
convert! { core::ContainerStateTerminated {
    exit_code: req "exitCode", signal: opt "signal", reason: opt "reason", message: opt "message",
    started_at: req "startedAt", finished_at: req "finishedAt", container_id: opt "containerID",
} }
convert! { core::LinuxContainerUser {
    uid: req "uid", gid: req "gid", supplemental_groups: list "supplementalGroups",
} }
convert! { core::ResourceHealth {
    resource_id: req "resourceID", health: opt "health",
} }
convert! { batch::PodFailurePolicyOnExitCodesRequirement {
    container_name: ptr "containerName", operator: req "operator", values: list_req "values",
} }
convert! { batch::PodFailurePolicyOnPodConditionsPattern {
    r#type: req "type", status: req "status",
} }
convert! { core::KeyToPath {
    key: req "key", path: req "path", mode: ptr "mode",
} }
convert! { core::DownwardAPIVolumeFile {
    path: req "path", field_ref: ptr "fieldRef", resource_field_ref: ptr "resourceFieldRef",
    mode: ptr "mode",
} }
convert! { core::VolumeProjection {
    secret: ptr "secret", downward_api: ptr "downwardAPI", config_map: ptr "configMap",
    service_account_token: ptr "serviceAccountToken",
    cluster_trust_bundle: ptr "clusterTrustBundle", pod_certificate: ptr "podCertificate",
} }
convert! { core::PersistentVolumeClaimTemplate {
    metadata: req "metadata", spec: req "spec",
} }
convert! { core::ObjectFieldSelector {
    api_version: opt "apiVersion", field_path: req "fieldPath",
} }
convert! { core::ResourceFieldSelector {
    container_name: opt "containerName", resource: req "resource", divisor: req "divisor",
} }
convert! { core::ConfigMapKeySelector {
    local_object_reference: inline, key: req "key", optional: ptr "optional",
} }
convert! { core::SecretKeySelector {
    local_object_reference: inline, key: req "key", optional: ptr "optional",
} }
convert! { core::FileKeySelector {
    volume_name: req "volumeName", path: req "path", key: req "key", optional: ptr "optional",
} }
convert! { core::ExecAction {
    command: list "command",
} }
convert! { core::HttpGetAction {
    path: opt "path", port: req "port", host: opt "host", scheme: opt "scheme",
    http_headers: list "httpHeaders",
} }
convert! { core::TcpSocketAction {
    port: req "port", host: opt "host",
} }
convert! { core::GrpcAction {
    port: req "port", service: nullable "service",
} }
convert! { core::SleepAction {
    seconds: req "seconds",
} }
convert! { core::NodeSelectorTerm {
    match_expressions: list "matchExpressions", match_fields: list "matchFields",
} }
convert! { core::SecretProjection {
    local_object_reference: inline, items: list "items", optional: ptr "optional",
} }
convert! { core::DownwardAPIProjection {
    items: list "items",
} }
convert! { core::ConfigMapProjection {
    local_object_reference: inline, items: list "items", optional: ptr "optional",
} }
convert! { core::ServiceAccountTokenProjection {
    audience: opt "audience", expiration_seconds: ptr "expirationSeconds", path: req "path",
} }
convert! { core::ClusterTrustBundleProjection {
    name: ptr "name", signer_name: ptr "signerName", label_selector: ptr "labelSelector",
    optional: ptr "optional", path: req "path",
} }
convert! { core::PodCertificateProjection {
    signer_name: opt "signerName", key_type: opt "keyType",
    max_expiration_seconds: ptr "maxExpirationSeconds",
    credential_bundle_path: opt "credentialBundlePath", key_path: opt "keyPath",
    certificate_chain_path: opt "certificateChainPath", user_annotations: map "userAnnotations",
} }
convert! { core::PersistentVolumeClaimSpec {
    access_modes: list "accessModes", selector: ptr "selector", resources: req "resources",
    volume_name: opt "volumeName", storage_class_name: ptr "storageClassName",
    volume_mode: ptr "volumeMode", data_source: ptr "dataSource",
    data_source_ref: ptr "dataSourceRef",
    volume_attributes_class_name: ptr "volumeAttributesClassName",
} }
convert! { core::HttpHeader {
    name: req "name", value: req "value",
} }
convert! { core::NodeSelectorRequirement {
    key: req "key", operator: req "operator", values: list "values",
} }
convert! { core::VolumeResourceRequirements {
    limits: map "limits", requests: map "requests",
} }
convert! { core::TypedLocalObjectReference {
    api_group: nullable "apiGroup", kind: req "kind", name: req "name",
} }
convert! { core::TypedObjectReference {
    api_group: nullable "apiGroup", kind: req "kind", name: req "name", namespace: ptr "namespace",
} }

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;
    use serde_json::json;

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    fn string_map(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn quantity(v: &str) -> resource::Quantity {
        resource::Quantity { string: s(v) }
    }

    fn int_or_string(v: i32) -> Option<intstr::IntOrString> {
        Some(intstr::IntOrString {
            r#type: Some(0),
            int_val: Some(v),
            str_val: None,
        })
    }

    fn time(seconds: i64) -> Option<meta::Time> {
        Some(meta::Time {
            seconds: Some(seconds),
            nanos: Some(0),
        })
    }

    /// 2024-01-01T00:00:00Z
    const NEW_YEAR_2024: i64 = 1_704_067_200;

    /// Magic + runtime.Unknown around `raw`, as Go's protobuf serializer
    /// writes it (empty contentEncoding/contentType present).
    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: s(api_version),
                kind: s(kind),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        body
    }

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A length-delimited field `number` holding `payload`.
    fn len_field(number: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(number << 3 | 2, &mut out);
        varint(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }

    /// A varint field `number` holding `value`.
    fn varint_field(number: u64, value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(number << 3, &mut out);
        varint(value, &mut out);
        out
    }

    /// Decode `body` and compare with `expected` as text, so that the key
    /// order (Go's struct order) is checked too; then check that k8s-openapi
    /// understands every key.
    fn assert_same_json(body: &[u8], expected: &str) {
        let expected: Value = serde_json::from_str(expected).expect("expected JSON parses");
        let actual = decode(body).expect("body decodes");
        assert_eq!(
            serde_json::to_string_pretty(&actual).expect("serializes"),
            serde_json::to_string_pretty(&expected).expect("serializes"),
        );
        assert_k8s_openapi_agrees(&actual);
    }

    fn strip_nulls(value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), strip_nulls(v)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(strip_nulls).collect()),
            other => other.clone(),
        }
    }

    fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(value: &Value) -> Value {
        let typed: T = serde_json::from_value(value.clone()).expect("k8s-openapi deserializes");
        serde_json::to_value(typed).expect("k8s-openapi serializes")
    }

    /// Cross-check the JSON names: k8s-openapi (Kubernetes 1.32) drops keys
    /// it does not know, so a misspelt key would not survive its round trip.
    fn assert_k8s_openapi_agrees(actual: &Value) {
        use k8s_openapi::api::{apps::v1 as a, batch::v1 as b, core::v1 as c};
        let back = match actual["kind"].as_str() {
            Some("Namespace") => roundtrip::<c::Namespace>(actual),
            Some("ConfigMap") => roundtrip::<c::ConfigMap>(actual),
            Some("Secret") => roundtrip::<c::Secret>(actual),
            Some("Service") => roundtrip::<c::Service>(actual),
            Some("ServiceAccount") => roundtrip::<c::ServiceAccount>(actual),
            Some("Pod") => roundtrip::<c::Pod>(actual),
            Some("Deployment") => roundtrip::<a::Deployment>(actual),
            Some("Job") => roundtrip::<b::Job>(actual),
            Some("CronJob") => roundtrip::<b::CronJob>(actual),
            Some("ResourceQuota") => roundtrip::<c::ResourceQuota>(actual),
            Some("PriorityClass") => roundtrip::<k8s_openapi::api::scheduling::v1::PriorityClass>(actual),
            Some("PodDisruptionBudget") => roundtrip::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(actual),
            other => panic!("no k8s-openapi type for {other:?}"),
        };
        assert_eq!(strip_nulls(actual), back);
    }

    #[test]
    fn secret_tls_built_like_kubectl() {
        // `kubectl create secret tls t --cert=tls.crt --key=tls.key`, with
        // stand-in PEM bytes; every non-pointer field present, as Go writes it.
        let secret = core::Secret {
            metadata: Some(meta::ObjectMeta {
                name: s("t"),
                generate_name: s(""),
                namespace: s(""),
                self_link: s(""),
                uid: s(""),
                resource_version: s(""),
                generation: Some(0),
                creation_timestamp: Some(meta::Time::default()),
                ..Default::default()
            }),
            immutable: None,
            data: [
                (
                    "tls.crt".to_owned(),
                    b"-----BEGIN CERTIFICATE-----\n".to_vec(),
                ),
                (
                    "tls.key".to_owned(),
                    b"-----BEGIN PRIVATE KEY-----\n".to_vec(),
                ),
            ]
            .into_iter()
            .collect(),
            string_data: BTreeMap::new(),
            r#type: s("kubernetes.io/tls"),
        };
        let body = envelope("v1", "Secret", secret.encode_to_vec());
        assert_same_json(
            &body,
            r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"t","creationTimestamp":null},
                "data":{"tls.crt":"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
                        "tls.key":"LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCg=="},
                "type":"kubernetes.io/tls"}"#,
        );
    }

    #[test]
    fn configmap_binary_data_and_secret_string_data() {
        let configmap = core::ConfigMap {
            metadata: Some(meta::ObjectMeta {
                name: s("c"),
                ..Default::default()
            }),
            immutable: Some(false),
            data: string_map(&[("k", "v")]),
            binary_data: [("bin".to_owned(), vec![0u8, 1, 2, 255])]
                .into_iter()
                .collect(),
        };
        let json =
            decode(&envelope("v1", "ConfigMap", configmap.encode_to_vec())).expect("decodes");
        assert_eq!(
            json,
            json!({"kind": "ConfigMap", "apiVersion": "v1",
                   "metadata": {"name": "c", "creationTimestamp": null},
                   "immutable": false, "data": {"k": "v"}, "binaryData": {"bin": "AAEC/w=="}})
        );
        let secret = core::Secret {
            metadata: Some(meta::ObjectMeta {
                name: s("s"),
                ..Default::default()
            }),
            immutable: Some(true),
            string_data: string_map(&[("password", "hunter2")]),
            r#type: s("Opaque"),
            ..Default::default()
        };
        let json = decode(&envelope("v1", "Secret", secret.encode_to_vec())).expect("decodes");
        assert_eq!(
            json,
            json!({"kind": "Secret", "apiVersion": "v1",
                   "metadata": {"name": "s", "creationTimestamp": null}, "immutable": true,
                   "stringData": {"password": "hunter2"}, "type": "Opaque"})
        );
        assert_k8s_openapi_agrees(&json);
    }

    #[test]
    fn service_spec_fields() {
        let service = core::Service {
            metadata: Some(meta::ObjectMeta {
                name: s("svc"),
                ..Default::default()
            }),
            spec: Some(core::ServiceSpec {
                ports: vec![
                    core::ServicePort {
                        name: s("http"),
                        protocol: s("TCP"),
                        app_protocol: s("http"),
                        port: Some(80),
                        target_port: Some(intstr::IntOrString {
                            r#type: Some(1),
                            int_val: Some(0),
                            str_val: s("web"),
                        }),
                        node_port: Some(30080),
                    },
                    core::ServicePort {
                        port: Some(53),
                        protocol: s("UDP"),
                        ..Default::default()
                    },
                ],
                selector: string_map(&[("app", "web")]),
                cluster_ip: s("10.0.0.10"),
                cluster_ips: strings(&["10.0.0.10", "fd00::10"]),
                r#type: s("LoadBalancer"),
                external_ips: strings(&["192.0.2.1"]),
                session_affinity: s("ClientIP"),
                load_balancer_ip: s("192.0.2.2"),
                load_balancer_source_ranges: strings(&["192.0.2.0/24"]),
                external_name: s(""),
                external_traffic_policy: s("Local"),
                health_check_node_port: Some(32000),
                publish_not_ready_addresses: Some(true),
                session_affinity_config: Some(core::SessionAffinityConfig {
                    client_ip: Some(core::ClientIpConfig {
                        timeout_seconds: Some(600),
                    }),
                }),
                ip_families: strings(&["IPv4", "IPv6"]),
                ip_family_policy: s("PreferDualStack"),
                allocate_load_balancer_node_ports: Some(false),
                load_balancer_class: s("example.com/lb"),
                internal_traffic_policy: s("Cluster"),
                traffic_distribution: s("PreferClose"),
            }),
            status: None,
        };
        let json = decode(&envelope("v1", "Service", service.encode_to_vec())).expect("decodes");
        assert_eq!(
            json,
            json!({
                "kind": "Service", "apiVersion": "v1",
                "metadata": {"name": "svc", "creationTimestamp": null},
                "spec": {
                    "ports": [
                        {"name": "http", "protocol": "TCP", "appProtocol": "http", "port": 80,
                         "targetPort": "web", "nodePort": 30080},
                        // Go prints the non-pointer IntOrString even when it is zero.
                        {"protocol": "UDP", "port": 53, "targetPort": 0}
                    ],
                    "selector": {"app": "web"},
                    "clusterIP": "10.0.0.10",
                    "clusterIPs": ["10.0.0.10", "fd00::10"],
                    "type": "LoadBalancer",
                    "externalIPs": ["192.0.2.1"],
                    "sessionAffinity": "ClientIP",
                    "loadBalancerIP": "192.0.2.2",
                    "loadBalancerSourceRanges": ["192.0.2.0/24"],
                    "externalTrafficPolicy": "Local",
                    "healthCheckNodePort": 32000,
                    "publishNotReadyAddresses": true,
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                    "ipFamilies": ["IPv4", "IPv6"],
                    "ipFamilyPolicy": "PreferDualStack",
                    "allocateLoadBalancerNodePorts": false,
                    "loadBalancerClass": "example.com/lb",
                    "internalTrafficPolicy": "Cluster",
                    "trafficDistribution": "PreferClose"
                },
                "status": {"loadBalancer": {}}
            })
        );
        assert_k8s_openapi_agrees(&json);
    }

    fn rich_pod() -> core::Pod {
        let env = |name: &str, source: core::EnvVarSource| core::EnvVar {
            name: s(name),
            value: None,
            value_from: Some(source),
        };
        let app = core::Container {
            name: s("app"),
            image: s("nginx:1.27"),
            command: strings(&["nginx"]),
            args: strings(&["-g", "daemon off;"]),
            working_dir: s("/srv"),
            ports: vec![
                core::ContainerPort {
                    name: s("http"),
                    container_port: Some(80),
                    protocol: s("TCP"),
                    ..Default::default()
                },
                core::ContainerPort {
                    container_port: Some(53),
                    protocol: s("UDP"),
                    host_port: Some(5353),
                    host_ip: s("127.0.0.1"),
                    ..Default::default()
                },
            ],
            env_from: vec![core::EnvFromSource {
                prefix: s("CM_"),
                config_map_ref: Some(core::ConfigMapEnvSource {
                    local_object_reference: Some(core::LocalObjectReference { name: s("cm") }),
                    optional: Some(true),
                }),
                secret_ref: None,
            }],
            env: vec![
                core::EnvVar {
                    name: s("A"),
                    value: s("1"),
                    value_from: None,
                },
                env(
                    "POD",
                    core::EnvVarSource {
                        field_ref: Some(core::ObjectFieldSelector {
                            api_version: s("v1"),
                            field_path: s("metadata.name"),
                        }),
                        ..Default::default()
                    },
                ),
                env(
                    "SECRET",
                    core::EnvVarSource {
                        secret_key_ref: Some(core::SecretKeySelector {
                            local_object_reference: Some(core::LocalObjectReference {
                                name: s("sec"),
                            }),
                            key: s("k"),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    },
                ),
                env(
                    "CONF",
                    core::EnvVarSource {
                        config_map_key_ref: Some(core::ConfigMapKeySelector {
                            local_object_reference: Some(core::LocalObjectReference {
                                name: s("cm"),
                            }),
                            key: s("k"),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                ),
                env(
                    "MEM",
                    core::EnvVarSource {
                        resource_field_ref: Some(core::ResourceFieldSelector {
                            container_name: s("app"),
                            resource: s("limits.memory"),
                            divisor: None,
                        }),
                        ..Default::default()
                    },
                ),
            ],
            resources: Some(core::ResourceRequirements {
                limits: [
                    ("cpu".to_owned(), quantity("500m")),
                    ("memory".to_owned(), quantity("128Mi")),
                ]
                .into_iter()
                .collect(),
                requests: [("cpu".to_owned(), quantity("100m"))].into_iter().collect(),
                claims: Vec::new(),
            }),
            volume_mounts: vec![core::VolumeMount {
                name: s("data"),
                mount_path: s("/data"),
                read_only: Some(true),
                sub_path: s("x"),
                ..Default::default()
            }],
            liveness_probe: Some(core::Probe {
                handler: Some(core::ProbeHandler {
                    http_get: Some(core::HttpGetAction {
                        path: s("/healthz"),
                        port: Some(intstr::IntOrString {
                            r#type: Some(1),
                            int_val: None,
                            str_val: s("http"),
                        }),
                        scheme: s("HTTP"),
                        http_headers: vec![core::HttpHeader {
                            name: s("X"),
                            value: s("y"),
                        }],
                        host: None,
                    }),
                    ..Default::default()
                }),
                initial_delay_seconds: Some(3),
                period_seconds: Some(10),
                failure_threshold: Some(3),
                ..Default::default()
            }),
            readiness_probe: Some(core::Probe {
                handler: Some(core::ProbeHandler {
                    tcp_socket: Some(core::TcpSocketAction {
                        port: int_or_string(80),
                        host: None,
                    }),
                    ..Default::default()
                }),
                timeout_seconds: Some(1),
                ..Default::default()
            }),
            startup_probe: Some(core::Probe {
                handler: Some(core::ProbeHandler {
                    exec: Some(core::ExecAction {
                        command: strings(&["cat", "/tmp/ready"]),
                    }),
                    ..Default::default()
                }),
                success_threshold: Some(1),
                termination_grace_period_seconds: Some(5),
                ..Default::default()
            }),
            lifecycle: Some(core::Lifecycle {
                post_start: Some(core::LifecycleHandler {
                    exec: Some(core::ExecAction {
                        command: strings(&["echo", "hi"]),
                    }),
                    ..Default::default()
                }),
                pre_stop: Some(core::LifecycleHandler {
                    sleep: Some(core::SleepAction { seconds: Some(5) }),
                    ..Default::default()
                }),
                stop_signal: None,
            }),
            termination_message_path: s("/dev/termination-log"),
            termination_message_policy: s("File"),
            image_pull_policy: s("IfNotPresent"),
            security_context: Some(core::SecurityContext {
                capabilities: Some(core::Capabilities {
                    add: strings(&["NET_BIND_SERVICE"]),
                    drop: strings(&["ALL"]),
                }),
                run_as_user: Some(1000),
                run_as_non_root: Some(true),
                read_only_root_filesystem: Some(true),
                allow_privilege_escalation: Some(false),
                ..Default::default()
            }),
            stdin: Some(true),
            tty: Some(true),
            ..Default::default()
        };
        let sidecar = core::Container {
            name: s("sidecar"),
            image: s("envoy"),
            readiness_probe: Some(core::Probe {
                handler: Some(core::ProbeHandler {
                    grpc: Some(core::GrpcAction {
                        port: Some(9090),
                        service: s(""),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let volume = |name: &str, source: core::VolumeSource| core::Volume {
            name: s(name),
            volume_source: Some(source),
        };
        core::Pod {
            metadata: Some(meta::ObjectMeta {
                name: s("p"),
                generate_name: s("p-"),
                namespace: s("default"),
                uid: s("0b0e7c3c-8c39-4c2f-9d39-6d1d1d2a7c11"),
                resource_version: s("5"),
                generation: Some(2),
                creation_timestamp: time(NEW_YEAR_2024),
                labels: string_map(&[("app", "p")]),
                annotations: string_map(&[("note", "x")]),
                owner_references: vec![meta::OwnerReference {
                    api_version: s("apps/v1"),
                    kind: s("ReplicaSet"),
                    name: s("rs"),
                    uid: s("u-2"),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }],
                finalizers: strings(&["example.com/f"]),
                ..Default::default()
            }),
            spec: Some(core::PodSpec {
                volumes: vec![
                    volume(
                        "data",
                        core::VolumeSource {
                            empty_dir: Some(core::EmptyDirVolumeSource {
                                medium: s(""),
                                size_limit: Some(quantity("1Gi")),
                            }),
                            ..Default::default()
                        },
                    ),
                    volume(
                        "host",
                        core::VolumeSource {
                            host_path: Some(core::HostPathVolumeSource {
                                path: s("/var/log"),
                                r#type: s("Directory"),
                            }),
                            ..Default::default()
                        },
                    ),
                    volume(
                        "cfg",
                        core::VolumeSource {
                            config_map: Some(core::ConfigMapVolumeSource {
                                local_object_reference: Some(core::LocalObjectReference {
                                    name: s("cm"),
                                }),
                                items: vec![core::KeyToPath {
                                    key: s("a"),
                                    path: s("a.txt"),
                                    mode: Some(0o644),
                                }],
                                default_mode: Some(0o644),
                                optional: None,
                            }),
                            ..Default::default()
                        },
                    ),
                    volume(
                        "sec",
                        core::VolumeSource {
                            secret: Some(core::SecretVolumeSource {
                                secret_name: s("s"),
                                default_mode: Some(0o400),
                                optional: Some(false),
                                items: Vec::new(),
                            }),
                            ..Default::default()
                        },
                    ),
                    volume(
                        "claim",
                        core::VolumeSource {
                            persistent_volume_claim: Some(
                                core::PersistentVolumeClaimVolumeSource {
                                    claim_name: s("pvc"),
                                    read_only: Some(true),
                                },
                            ),
                            ..Default::default()
                        },
                    ),
                    volume(
                        "info",
                        core::VolumeSource {
                            downward_api: Some(core::DownwardAPIVolumeSource {
                                items: vec![core::DownwardAPIVolumeFile {
                                    path: s("labels"),
                                    field_ref: Some(core::ObjectFieldSelector {
                                        api_version: None,
                                        field_path: s("metadata.labels"),
                                    }),
                                    ..Default::default()
                                }],
                                default_mode: None,
                            }),
                            ..Default::default()
                        },
                    ),
                    volume(
                        "token",
                        core::VolumeSource {
                            projected: Some(core::ProjectedVolumeSource {
                                sources: vec![core::VolumeProjection {
                                    service_account_token: Some(
                                        core::ServiceAccountTokenProjection {
                                            audience: s("api"),
                                            expiration_seconds: Some(3600),
                                            path: s("token"),
                                        },
                                    ),
                                    ..Default::default()
                                }],
                                default_mode: Some(0o420),
                            }),
                            ..Default::default()
                        },
                    ),
                ],
                init_containers: vec![core::Container {
                    name: s("init"),
                    image: s("busybox"),
                    command: strings(&["sh", "-c"]),
                    args: strings(&["true"]),
                    ..Default::default()
                }],
                containers: vec![app, sidecar],
                restart_policy: s("Always"),
                termination_grace_period_seconds: Some(30),
                active_deadline_seconds: Some(600),
                dns_policy: s("ClusterFirst"),
                node_selector: string_map(&[("disk", "ssd")]),
                service_account_name: s("sa"),
                automount_service_account_token: Some(false),
                node_name: s("node-1"),
                host_network: Some(true),
                host_pid: Some(false),
                host_ipc: Some(true),
                security_context: Some(core::PodSecurityContext {
                    run_as_user: Some(1000),
                    run_as_group: Some(3000),
                    fs_group: Some(2000),
                    supplemental_groups: vec![4000],
                    seccomp_profile: Some(core::SeccompProfile {
                        r#type: s("RuntimeDefault"),
                        localhost_profile: None,
                    }),
                    ..Default::default()
                }),
                image_pull_secrets: vec![core::LocalObjectReference { name: s("regcred") }],
                hostname: s("h"),
                subdomain: s("sub"),
                affinity: Some(core::Affinity {
                    node_affinity: Some(core::NodeAffinity {
                        required_during_scheduling_ignored_during_execution: Some(
                            core::NodeSelector {
                                node_selector_terms: vec![core::NodeSelectorTerm {
                                    match_expressions: vec![core::NodeSelectorRequirement {
                                        key: s("zone"),
                                        operator: s("In"),
                                        values: strings(&["a", "b"]),
                                    }],
                                    match_fields: Vec::new(),
                                }],
                            },
                        ),
                        preferred_during_scheduling_ignored_during_execution: Vec::new(),
                    }),
                    ..Default::default()
                }),
                scheduler_name: s("default-scheduler"),
                tolerations: vec![
                    core::Toleration {
                        key: s("k"),
                        operator: s("Equal"),
                        value: s("v"),
                        effect: s("NoSchedule"),
                        toleration_seconds: None,
                    },
                    core::Toleration {
                        operator: s("Exists"),
                        effect: s("NoExecute"),
                        toleration_seconds: Some(60),
                        ..Default::default()
                    },
                ],
                priority_class_name: s("high"),
                priority: Some(1000),
                dns_config: Some(core::PodDnsConfig {
                    nameservers: strings(&["192.0.2.53"]),
                    searches: Vec::new(),
                    options: vec![core::PodDnsConfigOption {
                        name: s("ndots"),
                        value: s("2"),
                    }],
                }),
                enable_service_links: Some(false),
                ..Default::default()
            }),
            status: Some(core::PodStatus {
                phase: s("Pending"),
                conditions: vec![core::PodCondition {
                    r#type: s("PodScheduled"),
                    status: s("True"),
                    last_transition_time: time(NEW_YEAR_2024 + 61),
                    ..Default::default()
                }],
                host_ip: s("192.0.2.7"),
                pod_ip: s("10.0.0.5"),
                pod_ips: vec![core::PodIp { ip: s("10.0.0.5") }],
                start_time: time(NEW_YEAR_2024),
                qos_class: s("Burstable"),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn pod_with_common_fields() {
        let body = envelope("v1", "Pod", rich_pod().encode_to_vec());
        let json = decode(&body).expect("decodes");
        let expected = json!({
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": "p",
                "generateName": "p-",
                "namespace": "default",
                "uid": "0b0e7c3c-8c39-4c2f-9d39-6d1d1d2a7c11",
                "resourceVersion": "5",
                "generation": 2,
                "creationTimestamp": "2024-01-01T00:00:00Z",
                "labels": {"app": "p"},
                "annotations": {"note": "x"},
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u-2",
                    "controller": true, "blockOwnerDeletion": true
                }],
                "finalizers": ["example.com/f"]
            },
            "spec": {
                "volumes": [
                    {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                    {"name": "host", "hostPath": {"path": "/var/log", "type": "Directory"}},
                    {"name": "cfg", "configMap": {
                        "name": "cm", "items": [{"key": "a", "path": "a.txt", "mode": 420}],
                        "defaultMode": 420}},
                    {"name": "sec", "secret": {"secretName": "s", "defaultMode": 256,
                                               "optional": false}},
                    {"name": "claim", "persistentVolumeClaim": {"claimName": "pvc",
                                                                "readOnly": true}},
                    {"name": "info", "downwardAPI": {"items": [
                        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                    {"name": "token", "projected": {
                        "sources": [{"serviceAccountToken": {
                            "audience": "api", "expirationSeconds": 3600, "path": "token"}}],
                        "defaultMode": 272}}
                ],
                "initContainers": [{
                    "name": "init", "image": "busybox", "command": ["sh", "-c"], "args": ["true"],
                    "resources": {}
                }],
                "containers": [{
                    "name": "app",
                    "image": "nginx:1.27",
                    "command": ["nginx"],
                    "args": ["-g", "daemon off;"],
                    "workingDir": "/srv",
                    "ports": [
                        {"name": "http", "containerPort": 80, "protocol": "TCP"},
                        {"hostPort": 5353, "containerPort": 53, "protocol": "UDP",
                         "hostIP": "127.0.0.1"}
                    ],
                    "envFrom": [{"prefix": "CM_",
                                 "configMapRef": {"name": "cm", "optional": true}}],
                    "env": [
                        {"name": "A", "value": "1"},
                        {"name": "POD", "valueFrom": {"fieldRef": {
                            "apiVersion": "v1", "fieldPath": "metadata.name"}}},
                        {"name": "SECRET", "valueFrom": {"secretKeyRef": {
                            "name": "sec", "key": "k", "optional": false}}},
                        {"name": "CONF", "valueFrom": {"configMapKeyRef": {
                            "name": "cm", "key": "k"}}},
                        // Go prints the non-pointer Quantity divisor even when it is zero.
                        {"name": "MEM", "valueFrom": {"resourceFieldRef": {
                            "containerName": "app", "resource": "limits.memory", "divisor": "0"}}}
                    ],
                    "resources": {
                        "limits": {"cpu": "500m", "memory": "128Mi"},
                        "requests": {"cpu": "100m"}
                    },
                    "volumeMounts": [{"name": "data", "readOnly": true, "mountPath": "/data",
                                      "subPath": "x"}],
                    "livenessProbe": {
                        "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP",
                                    "httpHeaders": [{"name": "X", "value": "y"}]},
                        "initialDelaySeconds": 3, "periodSeconds": 10, "failureThreshold": 3
                    },
                    "readinessProbe": {"tcpSocket": {"port": 80}, "timeoutSeconds": 1},
                    "startupProbe": {"exec": {"command": ["cat", "/tmp/ready"]},
                                     "successThreshold": 1, "terminationGracePeriodSeconds": 5},
                    "lifecycle": {
                        "postStart": {"exec": {"command": ["echo", "hi"]}},
                        "preStop": {"sleep": {"seconds": 5}}
                    },
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                    "securityContext": {
                        "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                        "runAsUser": 1000, "runAsNonRoot": true, "readOnlyRootFilesystem": true,
                        "allowPrivilegeEscalation": false
                    },
                    "stdin": true,
                    "tty": true
                }, {
                    "name": "sidecar",
                    "image": "envoy",
                    "resources": {},
                    "readinessProbe": {"grpc": {"port": 9090, "service": ""}}
                }],
                "restartPolicy": "Always",
                "terminationGracePeriodSeconds": 30,
                "activeDeadlineSeconds": 600,
                "dnsPolicy": "ClusterFirst",
                "nodeSelector": {"disk": "ssd"},
                "serviceAccountName": "sa",
                "automountServiceAccountToken": false,
                "nodeName": "node-1",
                "hostNetwork": true,
                "hostIPC": true,
                "securityContext": {
                    "runAsUser": 1000, "runAsGroup": 3000, "supplementalGroups": [4000],
                    "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}
                },
                "imagePullSecrets": [{"name": "regcred"}],
                "hostname": "h",
                "subdomain": "sub",
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "zone", "operator": "In", "values": ["a", "b"]}]}]}}},
                "schedulerName": "default-scheduler",
                "tolerations": [
                    {"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"},
                    {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}
                ],
                "priorityClassName": "high",
                "priority": 1000,
                "dnsConfig": {"nameservers": ["192.0.2.53"],
                              "options": [{"name": "ndots", "value": "2"}]},
                "enableServiceLinks": false
            },
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                                "lastTransitionTime": "2024-01-01T00:01:01Z"}],
                "hostIP": "192.0.2.7",
                "podIP": "10.0.0.5",
                "podIPs": [{"ip": "10.0.0.5"}],
                "startTime": "2024-01-01T00:00:00Z",
                "qosClass": "Burstable"
            }
        });
        assert_eq!(json, expected);
        assert_k8s_openapi_agrees(&json);
    }

    #[test]
    fn go_zero_values() {
        // A Pod whose spec/status are present but empty: Go prints required
        // lists as null and non-pointer structs as {} / their zero value.
        let pod = core::Pod {
            metadata: None,
            spec: Some(core::PodSpec::default()),
            status: Some(core::PodStatus::default()),
        };
        let json = decode(&envelope("v1", "Pod", pod.encode_to_vec())).expect("decodes");
        assert_eq!(
            json,
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"creationTimestamp": null},
                   "spec": {"containers": null}, "status": {}})
        );
        // Zero-valued omitempty scalars are omitted; pointers are kept.
        let deployment = apps::Deployment {
            spec: Some(apps::DeploymentSpec {
                replicas: Some(0),
                min_ready_seconds: Some(0),
                paused: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        let json = decode(&envelope(
            "apps/v1",
            "Deployment",
            deployment.encode_to_vec(),
        ))
        .expect("decodes");
        assert_eq!(
            json["spec"],
            json!({"replicas": 0, "selector": null,
                   "template": {"metadata": {"creationTimestamp": null},
                                "spec": {"containers": null}},
                   "strategy": {}})
        );
    }

    #[test]
    fn job_spec_fields() {
        let job = batch::Job {
            metadata: Some(meta::ObjectMeta {
                name: s("j"),
                ..Default::default()
            }),
            spec: Some(batch::JobSpec {
                parallelism: Some(2),
                completions: Some(4),
                active_deadline_seconds: Some(100),
                backoff_limit: Some(6),
                ttl_seconds_after_finished: Some(0),
                completion_mode: s("Indexed"),
                suspend: Some(false),
                manual_selector: Some(true),
                selector: Some(meta::LabelSelector {
                    match_labels: string_map(&[("job", "j")]),
                    match_expressions: vec![meta::LabelSelectorRequirement {
                        key: s("tier"),
                        operator: s("NotIn"),
                        values: strings(&["db"]),
                    }],
                }),
                template: Some(core::PodTemplateSpec {
                    metadata: Some(meta::ObjectMeta {
                        labels: string_map(&[("job", "j")]),
                        ..Default::default()
                    }),
                    spec: Some(core::PodSpec {
                        containers: vec![core::Container {
                            name: s("c"),
                            image: s("busybox"),
                            ..Default::default()
                        }],
                        restart_policy: s("OnFailure"),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        };
        let json = decode(&envelope("batch/v1", "Job", job.encode_to_vec())).expect("decodes");
        assert_eq!(
            json,
            json!({
                "kind": "Job", "apiVersion": "batch/v1",
                "metadata": {"name": "j", "creationTimestamp": null},
                "spec": {
                    "parallelism": 2, "completions": 4, "activeDeadlineSeconds": 100,
                    "backoffLimit": 6,
                    "selector": {"matchLabels": {"job": "j"}, "matchExpressions": [
                        {"key": "tier", "operator": "NotIn", "values": ["db"]}]},
                    "manualSelector": true,
                    "template": {
                        "metadata": {"creationTimestamp": null, "labels": {"job": "j"}},
                        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {}}],
                                 "restartPolicy": "OnFailure"}
                    },
                    "ttlSecondsAfterFinished": 0,
                    "completionMode": "Indexed",
                    "suspend": false
                },
                "status": {}
            })
        );
        assert_k8s_openapi_agrees(&json);
    }

    #[test]
    fn priority_class_as_kubectl_create_priorityclass_sends_it() {
        let pc = scheduling::PriorityClass {
            metadata: Some(meta::ObjectMeta { name: s("high"), ..Default::default() }),
            value: Some(1000),
            global_default: Some(false),
            description: s("important"),
            preemption_policy: s("Never"),
        };
        let json = decode(&envelope("scheduling.k8s.io/v1", "PriorityClass", pc.encode_to_vec())).expect("decodes");
        assert_eq!(
            json,
            json!({"kind": "PriorityClass", "apiVersion": "scheduling.k8s.io/v1",
                   "metadata": {"name": "high", "creationTimestamp": null},
                   "value": 1000, "description": "important", "preemptionPolicy": "Never"})
        );
        assert_k8s_openapi_agrees(&json);
    }

    #[test]
    fn quota_as_kubectl_create_quota_sends_it() {
        let q = core::ResourceQuota {
            metadata: Some(meta::ObjectMeta { name: s("q"), ..Default::default() }),
            spec: Some(core::ResourceQuotaSpec {
                hard: [("pods".to_string(), resource::Quantity { string: s("2") })].into(),
                scopes: strings(&["BestEffort"]),
                scope_selector: None,
            }),
            status: Some(core::ResourceQuotaStatus::default()),
        };
        let json = decode(&envelope("v1", "ResourceQuota", q.encode_to_vec())).expect("decodes");
        assert_eq!(
            json,
            json!({"kind": "ResourceQuota", "apiVersion": "v1", "metadata": {"name": "q", "creationTimestamp": null},
                   "spec": {"hard": {"pods": "2"}, "scopes": ["BestEffort"]}, "status": {}})
        );
        assert_k8s_openapi_agrees(&json);
    }

    #[test]
    fn pdb_as_kubectl_create_pdb_sends_it() {
        let pdb = policy::PodDisruptionBudget {
            metadata: Some(meta::ObjectMeta { name: s("web"), ..Default::default() }),
            spec: Some(policy::PodDisruptionBudgetSpec {
                min_available: Some(k8s_pb::apimachinery::pkg::util::intstr::IntOrString { r#type: Some(1), int_val: Some(0), str_val: s("50%") }),
                selector: Some(meta::LabelSelector { match_labels: string_map(&[("app", "web")]), match_expressions: vec![] }),
                ..Default::default()
            }),
            status: Some(policy::PodDisruptionBudgetStatus::default()),
        };
        let json = decode(&envelope("policy/v1", "PodDisruptionBudget", pdb.encode_to_vec())).expect("decodes");
        assert_eq!(
            json,
            json!({
                "kind": "PodDisruptionBudget", "apiVersion": "policy/v1",
                "metadata": {"name": "web", "creationTimestamp": null},
                "spec": {"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}},
                "status": {"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}
            })
        );
        assert_k8s_openapi_agrees(&json);
    }

    #[test]
    fn cronjob_as_kubectl_create_cronjob_sends_it() {
        let cj = batch::CronJob {
            metadata: Some(meta::ObjectMeta { name: s("tick"), ..Default::default() }),
            spec: Some(batch::CronJobSpec {
                schedule: s("*/5 * * * *"),
                time_zone: s("Europe/Berlin"),
                suspend: Some(false),
                job_template: Some(batch::JobTemplateSpec {
                    metadata: Some(meta::ObjectMeta { name: s("tick"), ..Default::default() }),
                    spec: Some(batch::JobSpec {
                        template: Some(core::PodTemplateSpec {
                            metadata: Some(meta::ObjectMeta::default()),
                            spec: Some(core::PodSpec {
                                containers: vec![core::Container { name: s("tick"), image: s("busybox"), ..Default::default() }],
                                restart_policy: s("OnFailure"),
                                ..Default::default()
                            }),
                        }),
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            status: Some(batch::CronJobStatus::default()),
        };
        let json = decode(&envelope("batch/v1", "CronJob", cj.encode_to_vec())).expect("decodes");
        assert_eq!(
            json,
            json!({
                "kind": "CronJob", "apiVersion": "batch/v1",
                "metadata": {"name": "tick", "creationTimestamp": null},
                "spec": {
                    "schedule": "*/5 * * * *", "timeZone": "Europe/Berlin", "suspend": false,
                    "jobTemplate": {
                        "metadata": {"name": "tick", "creationTimestamp": null},
                        "spec": {"template": {"metadata": {"creationTimestamp": null},
                                              "spec": {"containers": [{"name": "tick", "image": "busybox", "resources": {}}],
                                                       "restartPolicy": "OnFailure"}}}
                    }
                },
                "status": {}
            })
        );
        assert_k8s_openapi_agrees(&json);
    }

    #[test]
    fn times() {
        let with_time = |t: Option<meta::Time>| {
            let ns = core::Namespace {
                metadata: Some(meta::ObjectMeta {
                    creation_timestamp: t,
                    deletion_timestamp: t,
                    ..Default::default()
                }),
                ..Default::default()
            };
            decode(&envelope("v1", "Namespace", ns.encode_to_vec()))
        };
        let json = with_time(time(NEW_YEAR_2024)).expect("decodes");
        assert_eq!(
            json["metadata"]["creationTimestamp"],
            json!("2024-01-01T00:00:00Z")
        );
        assert_eq!(
            json["metadata"]["deletionTimestamp"],
            json!("2024-01-01T00:00:00Z")
        );
        // Like Go, nanoseconds are dropped.
        let json = with_time(Some(meta::Time {
            seconds: Some(NEW_YEAR_2024),
            nanos: Some(5),
        }))
        .expect("decodes");
        assert_eq!(
            json["metadata"]["creationTimestamp"],
            json!("2024-01-01T00:00:00Z")
        );
        // Empty message and Go's zero time are null; the epoch is not zero.
        for zero in [Some(meta::Time::default()), time(GO_ZERO_TIME_UNIX)] {
            let json = with_time(zero).expect("decodes");
            assert_eq!(json["metadata"]["creationTimestamp"], Value::Null);
            assert_eq!(json["metadata"]["deletionTimestamp"], Value::Null);
        }
        let json = with_time(time(0)).expect("decodes");
        assert_eq!(
            json["metadata"]["creationTimestamp"],
            json!("1970-01-01T00:00:00Z")
        );
        // Absent: creationTimestamp (non-pointer) is null, deletionTimestamp omitted.
        let json = with_time(None).expect("decodes");
        assert_eq!(json["metadata"], json!({"creationTimestamp": null}));
        match with_time(time(i64::MAX)) {
            Err(ProtobufError::InvalidField { kind, field, .. }) => {
                assert_eq!(kind, "Namespace");
                assert_eq!(field, "metadata.creationTimestamp");
            }
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    #[test]
    fn missing_magic() {
        assert!(matches!(decode(b""), Err(ProtobufError::MissingMagic)));
        assert!(matches!(decode(b"k8s"), Err(ProtobufError::MissingMagic)));
        assert!(matches!(
            decode(br#"{"kind":"Namespace","apiVersion":"v1"}"#),
            Err(ProtobufError::MissingMagic)
        ));
    }

    #[test]
    fn garbage_envelope() {
        let err = decode(b"k8s\0\xff\xff\xff\xff").expect_err("garbage is rejected");
        assert!(matches!(err, ProtobufError::Envelope(_)), "{err:?}");
        // A truncated length-delimited field.
        let err = decode(b"k8s\0\x12\x10abc").expect_err("truncated is rejected");
        assert!(matches!(err, ProtobufError::Envelope(_)), "{err:?}");
    }

    #[test]
    fn garbage_object() {
        let err = decode(&envelope("v1", "Pod", vec![0x12, 0x05, 0x01])).expect_err("rejected");
        match err {
            ProtobufError::Object { kind, .. } => assert_eq!(kind, "Pod"),
            other => panic!("expected Object, got {other:?}"),
        }
    }

    #[test]
    fn unknown_kind() {
        let err = decode(&envelope("apps/v1", "StatefulSet", Vec::new())).expect_err("rejected");
        match &err {
            ProtobufError::UnsupportedType { api_version, kind } => {
                assert_eq!(api_version, "apps/v1");
                assert_eq!(kind, "StatefulSet");
            }
            other => panic!("expected UnsupportedType, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            r#"protobuf decoding of "apps/v1" "StatefulSet" is not supported"#
        );
        // The group/version must match too.
        let err = decode(&envelope("v2", "Pod", Vec::new())).expect_err("rejected");
        assert!(
            matches!(err, ProtobufError::UnsupportedType { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn envelope_encoding_is_checked() {
        let mut unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: s("v1"),
                kind: s("Namespace"),
            }),
            raw: Some(Vec::new()),
            content_encoding: s("gzip"),
            content_type: None,
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        match decode(&body) {
            Err(ProtobufError::UnsupportedField { kind, field }) => {
                assert_eq!(kind, "runtime.Unknown");
                assert_eq!(field, r#"contentEncoding "gzip""#);
            }
            other => panic!("expected UnsupportedField, got {other:?}"),
        }

        unknown.content_encoding = None;
        unknown.content_type = s("application/json");
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        match decode(&body) {
            Err(ProtobufError::UnsupportedField { kind, field }) => {
                assert_eq!(kind, "runtime.Unknown");
                assert_eq!(field, r#"contentType "application/json""#);
            }
            other => panic!("expected UnsupportedField, got {other:?}"),
        }

        unknown.content_type = s(MEDIA_TYPE);
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        assert!(decode(&body).is_ok());
    }

    fn minimal_pod_spec() -> core::PodSpec {
        core::PodSpec {
            containers: vec![core::Container {
                name: s("c"),
                image: s("nginx"),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn pod_with_unknown_field_is_rejected() {
        // PodSpec field number 999 does not exist in the schema: prost would
        // skip it silently, the decoder must not.
        let mut spec = minimal_pod_spec().encode_to_vec();
        spec.extend(varint_field(999, 1));
        let pod = len_field(2, &spec);
        let err = decode(&envelope("v1", "Pod", pod)).expect_err("rejected");
        match &err {
            ProtobufError::UnsupportedField { kind, field } => {
                assert_eq!(kind, "Pod");
                assert_eq!(field, "<unknown protobuf field 2.999>");
            }
            other => panic!("expected UnsupportedField, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "Pod field <unknown protobuf field 2.999> cannot be converted from protobuf"
        );

        // Even when it holds the zero value.
        for zero in [varint_field(999, 0), len_field(999, b"")] {
            let mut spec = minimal_pod_spec().encode_to_vec();
            spec.extend(zero);
            match decode(&envelope("v1", "Pod", len_field(2, &spec))) {
                Err(ProtobufError::UnsupportedField { field, .. }) => {
                    assert_eq!(field, "<unknown protobuf field 2.999>");
                }
                other => panic!("expected UnsupportedField, got {other:?}"),
            }
        }

        // Deeper: an unknown string field inside the first container.
        let mut container = minimal_pod_spec().containers[0].encode_to_vec();
        container.extend(len_field(777, b"surprise"));
        let pod = len_field(2, &len_field(2, &container));
        match decode(&envelope("v1", "Pod", pod)) {
            Err(ProtobufError::UnsupportedField { field, .. }) => {
                assert_eq!(field, "<unknown protobuf field 2.2.777>");
            }
            other => panic!("expected UnsupportedField, got {other:?}"),
        }

        // Inside a map value (limits: {cpu: Quantity with a field 5}).
        let mut quantity = len_field(1, b"1");
        quantity.extend(len_field(5, b"x"));
        let mut entry = len_field(1, b"cpu");
        entry.extend(len_field(2, &quantity));
        let mut container = minimal_pod_spec().containers[0].encode_to_vec();
        container.extend(len_field(8, &len_field(1, &entry)));
        let pod = len_field(2, &len_field(2, &container));
        match decode(&envelope("v1", "Pod", pod)) {
            Err(ProtobufError::UnsupportedField { field, .. }) => {
                assert_eq!(field, "<unknown protobuf field 2.2.8.1.2.5>");
            }
            other => panic!("expected UnsupportedField, got {other:?}"),
        }

        // Unknown fields of the envelope itself are rejected too.
        let mut body = envelope("v1", "Pod", minimal_pod_spec().encode_to_vec());
        body.extend(len_field(9, b"x"));
        match decode(&body) {
            Err(ProtobufError::UnsupportedField { kind, field }) => {
                assert_eq!(kind, "runtime.Unknown");
                assert_eq!(field, "<unknown protobuf field 9>");
            }
            other => panic!("expected UnsupportedField, got {other:?}"),
        }
    }

    #[test]
    fn go_style_zero_map_values_are_accepted() {
        // Go writes both key and value of a map entry even when the value is
        // empty; prost re-encodes without it. That is not a lost field.
        let mut configmap = len_field(1, &len_field(1, b"c"));
        let mut entry = len_field(1, b"a");
        entry.extend(len_field(2, b""));
        configmap.extend(len_field(2, &entry));
        let mut entry = len_field(1, b"");
        entry.extend(len_field(2, b"empty key"));
        configmap.extend(len_field(2, &entry));
        let json = decode(&envelope("v1", "ConfigMap", configmap)).expect("decodes");
        assert_eq!(
            json,
            json!({"kind": "ConfigMap", "apiVersion": "v1",
                   "metadata": {"name": "c", "creationTimestamp": null},
                   "data": {"": "empty key", "a": ""}})
        );
    }

    #[test]
    fn invalid_int_or_string_names_the_field() {
        let service = core::Service {
            spec: Some(core::ServiceSpec {
                ports: vec![core::ServicePort {
                    port: Some(80),
                    target_port: Some(intstr::IntOrString {
                        r#type: Some(7),
                        int_val: Some(1),
                        str_val: None,
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        match decode(&envelope("v1", "Service", service.encode_to_vec())) {
            Err(ProtobufError::InvalidField {
                kind,
                field,
                reason,
            }) => {
                assert_eq!(kind, "Service");
                assert_eq!(field, "spec.ports[0].targetPort");
                assert!(reason.contains("IntOrString"), "{reason}");
            }
            other => panic!("expected InvalidField, got {other:?}"),
        }
    }

    #[test]
    fn managed_fields_keep_their_json() {
        let ns = core::Namespace {
            metadata: Some(meta::ObjectMeta {
                name: s("n"),
                managed_fields: vec![meta::ManagedFieldsEntry {
                    manager: s("kubectl"),
                    operation: s("Update"),
                    api_version: s("v1"),
                    time: time(NEW_YEAR_2024),
                    fields_type: s("FieldsV1"),
                    fields_v1: Some(meta::FieldsV1 {
                        raw: Some(br#"{"f:metadata":{"f:labels":{}}}"#.to_vec()),
                    }),
                    subresource: None,
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let json = decode(&envelope("v1", "Namespace", ns.encode_to_vec())).expect("decodes");
        assert_eq!(
            json["metadata"]["managedFields"],
            json!([{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                    "time": "2024-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {}}}}])
        );
    }
    // Bodies captured from kubectl v1.32.4 (POSTs to a recording server), and
    // the JSON kubectl prints for the same command with --dry-run=client -o json.

    /// `kubectl create namespace demo`
    #[test]
    fn kubectl_create_namespace() {
        let body: &[u8] = b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09Namespace\x12\x1c\x0a\x14\x0a\
          \x04demo\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x00\x1a\x02\x0a\x00\x1a\x00\"\x00";
        let expected = concat!(
            r#"{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"demo","#,
            r#""creationTimestamp":null},"spec":{},"status":{}}"#,
        );
        assert_same_json(body, expected);
    }

    /// `kubectl create deployment web --image=nginx`
    #[test]
    fn kubectl_create_deployment() {
        let body: &[u8] = b"k8s\x00\x0a\x15\x0a\x07apps/v1\x12\x0aDeployment\x12\xab\x01\x0a\
          \x1f\x0a\x03web\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00Z\x0a\x0a\x03app\x12\x03web\x12\
          z\x08\x01\x12\x0c\x0a\x0a\x0a\x03app\x12\x03web\x1a`\x0a\x1c\x0a\x00\x12\x00\x1a\x00\"\
          \x00*\x002\x008\x00B\x00Z\x0a\x0a\x03app\x12\x03web\x12@\x12\"\x0a\x05nginx\x12\x05nginx\
          *\x00B\x00j\x00r\x00\x80\x01\x00\x88\x01\x00\x90\x01\x00\xa2\x01\x00\x1a\x002\x00B\x00J\
          \x00R\x00X\x00`\x00h\x00\x82\x01\x00\x8a\x01\x00\x9a\x01\x00\xc2\x01\x00\"\x02\x0a\x00(\
          \x008\x00\x1a\x0c\x08\x00\x10\x00\x18\x00\x20\x00(\x008\x00\x1a\x00\"\x00";
        let expected = concat!(
            r#"{"kind":"Deployment","apiVersion":"apps/v1","metadata":{"name":"web","#,
            r#""creationTimestamp":null,"labels":{"app":"web"}},"spec":{"replicas":1,"#,
            r#""selector":{"matchLabels":{"app":"web"}},"#,
            r#""template":{"metadata":{"creationTimestamp":null,"labels":{"app":"web"}},"#,
            r#""spec":{"containers":[{"name":"nginx","image":"nginx","resources":{}}]}},"#,
            r#""strategy":{}},"status":{}}"#,
        );
        assert_same_json(body, expected);
    }

    /// `kubectl create deployment web --image=nginx --replicas=3 --port=80`
    #[test]
    fn kubectl_create_deployment_replicas_port() {
        let body: &[u8] = b"k8s\x00\x0a\x15\x0a\x07apps/v1\x12\x0aDeployment\x12\xb8\x01\x0a\
          \x1f\x0a\x03web\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00Z\x0a\x0a\x03app\x12\x03web\x12\
          \x86\x01\x08\x03\x12\x0c\x0a\x0a\x0a\x03app\x12\x03web\x1al\x0a\x1c\x0a\x00\x12\x00\x1a\
          \x00\"\x00*\x002\x008\x00B\x00Z\x0a\x0a\x03app\x12\x03web\x12L\x12.\x0a\x05nginx\x12\x05\
          nginx*\x002\x0a\x0a\x00\x10\x00\x18P\"\x00*\x00B\x00j\x00r\x00\x80\x01\x00\x88\x01\x00\
          \x90\x01\x00\xa2\x01\x00\x1a\x002\x00B\x00J\x00R\x00X\x00`\x00h\x00\x82\x01\x00\x8a\x01\
          \x00\x9a\x01\x00\xc2\x01\x00\"\x02\x0a\x00(\x008\x00\x1a\x0c\x08\x00\x10\x00\x18\x00\x20\
          \x00(\x008\x00\x1a\x00\"\x00";
        let expected = concat!(
            r#"{"kind":"Deployment","apiVersion":"apps/v1","metadata":{"name":"web","#,
            r#""creationTimestamp":null,"labels":{"app":"web"}},"spec":{"replicas":3,"#,
            r#""selector":{"matchLabels":{"app":"web"}},"#,
            r#""template":{"metadata":{"creationTimestamp":null,"labels":{"app":"web"}},"#,
            r#""spec":{"containers":[{"name":"nginx","image":"nginx","#,
            r#""ports":[{"containerPort":80}],"resources":{}}]}},"strategy":{}},"status":{}}"#,
        );
        assert_same_json(body, expected);
    }

    /// `kubectl create configmap c --from-literal=a=b`
    #[test]
    fn kubectl_create_configmap() {
        let body: &[u8] = b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09ConfigMap\x12\x1b\x0a\x11\x0a\
          \x01c\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x06\x0a\x01a\x12\x01b\x1a\x00\"\x00";
        let expected = concat!(
            r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c","#,
            r#""creationTimestamp":null},"data":{"a":"b"}}"#,
        );
        assert_same_json(body, expected);
    }

    /// `kubectl create secret generic s --from-literal=a=b`
    #[test]
    fn kubectl_create_secret_generic() {
        let body: &[u8] = b"k8s\x00\x0a\x0c\x0a\x02v1\x12\x06Secret\x12\x1d\x0a\x11\x0a\x01s\
          \x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12\x06\x0a\x01a\x12\x01b\x1a\x00\x1a\x00\"\
          \x00";
        let expected = concat!(
            r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s","#,
            r#""creationTimestamp":null},"data":{"a":"Yg=="}}"#,
        );
        assert_same_json(body, expected);
    }

    /// `kubectl create secret docker-registry d --docker-server=reg.example.com`
    /// `--docker-username=u --docker-password=p --docker-email=e@x.io`
    #[test]
    fn kubectl_create_secret_docker_registry() {
        let body: &[u8] = b"k8s\x00\x0a\x0c\x0a\x02v1\x12\x06Secret\x12\xa6\x01\x0a\x11\x0a\
          \x01d\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12q\x0a\x11.dockerconfigjson\x12\\{\"au\
          ths\":{\"reg.example.com\":{\"username\":\"u\",\"password\":\"p\",\"email\":\"e@x.io\",\
          \"auth\":\"dTpw\"}}}\x1a\x1ekubernetes.io/dockerconfigjson\x1a\x00\"\x00";
        let expected = concat!(
            r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"d","#,
            r#""creationTimestamp":null},"#,
            r#""data":{".dockerconfigjson":"eyJhdXRocyI6eyJyZWcuZXhhbXBsZS5jb20iOnsidXNlcm5hbWU"#,
            r#"iOiJ1IiwicGFzc3dvcmQiOiJwIiwiZW1haWwiOiJlQHguaW8iLCJhdXRoIjoiZFRwdyJ9fX0="},"#,
            r#""type":"kubernetes.io/dockerconfigjson"}"#,
        );
        assert_same_json(body, expected);
    }

    /// `kubectl create service clusterip my --tcp=80:8080`
    #[test]
    fn kubectl_create_service_clusterip() {
        let body: &[u8] = b"k8s\x00\x0a\x0d\x0a\x02v1\x12\x07Service\x12f\x0a\x1d\x0a\x02my\
          \x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00Z\x09\x0a\x03app\x12\x02my\x12A\x0a\x1b\x0a\
          \x0780-8080\x12\x03TCP\x18P\"\x07\x08\x00\x10\x90?\x1a\x00(\x00\x12\x09\x0a\x03app\x12\
          \x02my\x1a\x00\"\x09ClusterIP:\x00B\x00R\x00Z\x00`\x00h\x00\x1a\x02\x0a\x00\x1a\x00\"\
          \x00";
        let expected = concat!(
            r#"{"kind":"Service","apiVersion":"v1","metadata":{"name":"my","#,
            r#""creationTimestamp":null,"labels":{"app":"my"}},"#,
            r#""spec":{"ports":[{"name":"80-8080","protocol":"TCP","port":80,"#,
            r#""targetPort":8080}],"selector":{"app":"my"},"type":"ClusterIP"},"#,
            r#""status":{"loadBalancer":{}}}"#,
        );
        assert_same_json(body, expected);
    }

    /// `kubectl create service nodeport np --tcp=80:8080 --node-port=30080`
    #[test]
    fn kubectl_create_service_nodeport() {
        let body: &[u8] = b"k8s\x00\x0a\x0d\x0a\x02v1\x12\x07Service\x12g\x0a\x1d\x0a\x02np\
          \x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00Z\x09\x0a\x03app\x12\x02np\x12B\x0a\x1d\x0a\
          \x0780-8080\x12\x03TCP\x18P\"\x07\x08\x00\x10\x90?\x1a\x00(\x80\xeb\x01\x12\x09\x0a\x03a\
          pp\x12\x02np\x1a\x00\"\x08NodePort:\x00B\x00R\x00Z\x00`\x00h\x00\x1a\x02\x0a\x00\x1a\x00\
          \"\x00";
        let expected = concat!(
            r#"{"kind":"Service","apiVersion":"v1","metadata":{"name":"np","#,
            r#""creationTimestamp":null,"labels":{"app":"np"}},"#,
            r#""spec":{"ports":[{"name":"80-8080","protocol":"TCP","port":80,"targetPort":8080,"#,
            r#""nodePort":30080}],"selector":{"app":"np"},"type":"NodePort"},"#,
            r#""status":{"loadBalancer":{}}}"#,
        );
        assert_same_json(body, expected);
    }

    /// `kubectl create service loadbalancer lb --tcp=80:8080`
    #[test]
    fn kubectl_create_service_loadbalancer() {
        let body: &[u8] = b"k8s\x00\x0a\x0d\x0a\x02v1\x12\x07Service\x12i\x0a\x1d\x0a\x02lb\
          \x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00Z\x09\x0a\x03app\x12\x02lb\x12D\x0a\x1b\x0a\
          \x0780-8080\x12\x03TCP\x18P\"\x07\x08\x00\x10\x90?\x1a\x00(\x00\x12\x09\x0a\x03app\x12\
          \x02lb\x1a\x00\"\x0cLoadBalancer:\x00B\x00R\x00Z\x00`\x00h\x00\x1a\x02\x0a\x00\x1a\x00\"\
          \x00";
        let expected = concat!(
            r#"{"kind":"Service","apiVersion":"v1","metadata":{"name":"lb","#,
            r#""creationTimestamp":null,"labels":{"app":"lb"}},"#,
            r#""spec":{"ports":[{"name":"80-8080","protocol":"TCP","port":80,"#,
            r#""targetPort":8080}],"selector":{"app":"lb"},"type":"LoadBalancer"},"#,
            r#""status":{"loadBalancer":{}}}"#,
        );
        assert_same_json(body, expected);
    }

    /// `kubectl create service externalname en --external-name=example.com`
    #[test]
    fn kubectl_create_service_externalname() {
        let body: &[u8] = b"k8s\x00\x0a\x0d\x0a\x02v1\x12\x07Service\x12W\x0a\x1d\x0a\x02en\
          \x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00Z\x09\x0a\x03app\x12\x02en\x122\x12\x09\x0a\
          \x03app\x12\x02en\x1a\x00\"\x0cExternalName:\x00B\x00R\x0bexample.comZ\x00`\x00h\x00\x1a\
          \x02\x0a\x00\x1a\x00\"\x00";
        let expected = concat!(
            r#"{"kind":"Service","apiVersion":"v1","metadata":{"name":"en","#,
            r#""creationTimestamp":null,"labels":{"app":"en"}},"spec":{"selector":{"app":"en"},"#,
            r#""type":"ExternalName","externalName":"example.com"},"#,
            r#""status":{"loadBalancer":{}}}"#,
        );
        assert_same_json(body, expected);
    }

    /// `kubectl create job j --image=busybox -- echo hi`
    #[test]
    fn kubectl_create_job() {
        let body: &[u8] = b"k8s\x00\x0a\x0f\x0a\x08batch/v1\x12\x03Job\x12\x82\x01\x0a\x11\
          \x0a\x01j\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x12c2a\x0a\x10\x0a\x00\x12\x00\x1a\
          \x00\"\x00*\x002\x008\x00B\x00\x12M\x12*\x0a\x01j\x12\x07busybox\x1a\x04echo\x1a\x02hi*\
          \x00B\x00j\x00r\x00\x80\x01\x00\x88\x01\x00\x90\x01\x00\xa2\x01\x00\x1a\x05Never2\x00B\
          \x00J\x00R\x00X\x00`\x00h\x00\x82\x01\x00\x8a\x01\x00\x9a\x01\x00\xc2\x01\x00\x1a\x08\
          \x20\x00(\x000\x00:\x00\x1a\x00\"\x00";
        let expected = concat!(
            r#"{"kind":"Job","apiVersion":"batch/v1","metadata":{"name":"j","#,
            r#""creationTimestamp":null},"#,
            r#""spec":{"template":{"metadata":{"creationTimestamp":null},"#,
            r#""spec":{"containers":[{"name":"j","image":"busybox","command":["echo","hi"],"#,
            r#""resources":{}}],"restartPolicy":"Never"}}},"status":{}}"#,
        );
        assert_same_json(body, expected);
    }

    /// `kubectl create serviceaccount sa`
    #[test]
    fn kubectl_create_serviceaccount() {
        let body: &[u8] = b"k8s\x00\x0a\x14\x0a\x02v1\x12\x0eServiceAccount\x12\x14\x0a\x12\
          \x0a\x02sa\x12\x00\x1a\x00\"\x00*\x002\x008\x00B\x00\x1a\x00\"\x00";
        let expected = concat!(
            r#"{"kind":"ServiceAccount","apiVersion":"v1","metadata":{"name":"sa","#,
            r#""creationTimestamp":null}}"#,
        );
        assert_same_json(body, expected);
    }
}
