//! Reviews: objects that are created, answered at once from the authenticator or the authorizer, and never stored.
//!
//! - authentication.k8s.io/v1 `SelfSubjectReview` (`kubectl auth whoami`) and `TokenReview` (is this token valid,
//!   and whose is it; what webhook authenticators and in-cluster servers ask);
//! - authorization.k8s.io/v1 `SelfSubjectAccessReview` (`kubectl auth can-i`), `SelfSubjectRulesReview`
//!   (`kubectl auth can-i --list`), `SubjectAccessReview` and the namespaced `LocalSubjectAccessReview` (may
//!   someone else do this; `kubectl auth can-i --as`, webhook authorizers).
//!
//! Asking about oneself needs only the create permission on the review, which upstream's `system:basic-user` role
//! gives every authenticated user; asking about others or about a token needs it on those resources.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::errors::ApiError;
use super::{codec, ApiServer, Req, Target};
use crate::api::resources::ResourceInfo;
use crate::api::validation::FieldError;
use crate::auth::authn::Identity;
use crate::auth::rbac::Attributes;
use crate::auth::Auth;

fn user_info(id: &Identity) -> Value {
    let mut u = json!({"username": id.user, "groups": id.groups});
    if !id.uid.is_empty() {
        u["uid"] = json!(id.uid);
    }
    if !id.extra.is_empty() {
        u["extra"] = json!(id.extra);
    }
    u
}

/// `POST` of any review resource.
pub async fn create(s: &Arc<ApiServer>, t: &Target, r: &Req) -> Result<Response, ApiError> {
    let Some(auth) = s.auth.as_ref() else {
        return Err(ApiError::new(503, "ServiceUnavailable", "this API server runs without authentication and authorization"));
    };
    let body = codec::decode_object(&r.headers, &r.body)?;
    let api_version = t.info.api_version();
    match (body.get("apiVersion").and_then(Value::as_str), body.get("kind").and_then(Value::as_str)) {
        (None, None) => {}
        (Some(v), Some(k)) if v == api_version && k == t.info.kind => {}
        (v, k) => {
            return Err(ApiError::bad_request(format!(
                "the body must be a {api_version} {}, not {} {}",
                t.info.kind,
                v.unwrap_or("(no apiVersion)"),
                k.unwrap_or("(no kind)")
            )))
        }
    }
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    if !spec.is_object() {
        return Err(ApiError::invalid(t.info, "", &[FieldError::invalid("spec", &spec, "must be an object")]));
    }
    let me = r.user.clone().unwrap_or_default();
    let status = match t.info.kind {
        "SelfSubjectReview" => json!({"userInfo": user_info(&me)}),
        "TokenReview" => token_review(auth, t.info, &spec).await?,
        "SelfSubjectAccessReview" => access_review(auth, t, &me, &spec).await?,
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let who = subject_of(t.info, &spec)?;
            access_review(auth, t, &who, &spec).await?
        }
        "SelfSubjectRulesReview" => rules_review(auth, t.info, &me, &spec)?,
        other => return Err(ApiError::internal(format!("no review handler for {other}"))),
    };
    let mut metadata = body.get("metadata").cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
    metadata["creationTimestamp"] = Value::Null;
    if let Some(ns) = &t.namespace {
        metadata["namespace"] = json!(ns);
    }
    let mut out = json!({"kind": t.info.kind, "apiVersion": api_version, "metadata": metadata});
    if t.info.kind != "SelfSubjectReview" {
        out["spec"] = spec;
    }
    out["status"] = status;
    Ok(codec::json_response(StatusCode::CREATED, &out))
}

async fn token_review(auth: &Auth, info: &ResourceInfo, spec: &Value) -> Result<Value, ApiError> {
    let token = spec.get("token").and_then(Value::as_str).unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::invalid(info, "", &[FieldError::required("spec.token")]));
    }
    let audiences: Vec<String> =
        spec.get("audiences").and_then(Value::as_array).into_iter().flatten().filter_map(|a| a.as_str().map(str::to_string)).collect();
    let api_audiences: Vec<String> =
        auth.service_accounts.as_ref().map(|sa| sa.issuer.api_audiences().to_vec()).unwrap_or_default();
    let result = if crate::auth::satoken::looks_like_jwt(token) && auth.service_accounts.is_some() {
        auth.service_account_token(token, &audiences).await
    } else if !audiences.is_empty() && !audiences.iter().any(|a| api_audiences.contains(a)) {
        // Other tokens are API tokens only.
        Err("token audiences do not include any of the requested audiences".into())
    } else {
        let mut h = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ApiError::bad_request("spec.token is not a valid header value"))?;
        h.insert(axum::http::header::AUTHORIZATION, value);
        match auth.authenticate(None, &h).await {
            Ok(Some(id)) => Ok((id, if audiences.is_empty() { api_audiences.clone() } else { audiences.clone() })),
            Ok(None) => Err("no token".to_string()),
            Err(crate::auth::Refusal::Unauthenticated(why)) | Err(crate::auth::Refusal::Forbidden(why)) => Err(why),
        }
    };
    Ok(match result {
        Ok((id, auds)) => json!({"authenticated": true, "user": user_info(&id), "audiences": auds}),
        Err(why) => {
            tracing::debug!(why, "TokenReview: token not valid");
            json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"})
        }
    })
}

/// The user a SubjectAccessReview asks about.
fn subject_of(info: &ResourceInfo, spec: &Value) -> Result<Identity, ApiError> {
    let user = spec.get("user").and_then(Value::as_str).unwrap_or_default().to_string();
    let groups: Vec<String> =
        spec.get("groups").and_then(Value::as_array).into_iter().flatten().filter_map(|g| g.as_str().map(str::to_string)).collect();
    if user.is_empty() && groups.is_empty() {
        return Err(ApiError::invalid(info, "", &[FieldError::invalid("spec.user", &json!(""), "at least one of user or group must be specified")]));
    }
    let extra = spec
        .get("extra")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_string)).collect()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Identity { user, uid: spec.get("uid").and_then(Value::as_str).unwrap_or_default().to_string(), groups, extra })
}

async fn access_review(auth: &Auth, t: &Target, who: &Identity, spec: &Value) -> Result<Value, ApiError> {
    let res = spec.get("resourceAttributes").filter(|v| v.is_object());
    let non = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let a = match (res, non) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(t.info, "", &[FieldError::invalid("spec.nonResourceAttributes", &json!("..."), "cannot be specified in combination with resourceAttributes")]))
        }
        (None, None) => {
            return Err(ApiError::invalid(t.info, "", &[FieldError::invalid("spec.resourceAttributes", &json!(null), "exactly one of nonResourceAttributes or resourceAttributes must be specified")]))
        }
        (Some(ra), None) => {
            let ns = field(ra, "namespace");
            if let Some(path_ns) = &t.namespace {
                if &ns != path_ns {
                    return Err(ApiError::invalid(
                        t.info,
                        "",
                        &[FieldError::invalid("spec.resourceAttributes.namespace", &json!(ns), "must match metadata.namespace")],
                    ));
                }
            }
            Attributes {
                verb: field(ra, "verb"),
                resource_request: true,
                api_group: field(ra, "group"),
                resource: field(ra, "resource"),
                subresource: field(ra, "subresource"),
                namespace: ns,
                name: field(ra, "name"),
                path: String::new(),
            }
        }
        (None, Some(na)) => Attributes { verb: field(na, "verb"), path: field(na, "path"), ..Default::default() },
    };
    // Every authenticated user is in system:authenticated; a SubjectAccessReview names the groups itself.
    Ok(match auth.authorize(who, &a, None).await {
        Ok(()) => json!({"allowed": true, "reason": allowed_reason(auth, who, &a)}),
        Err(_) => json!({"allowed": false}),
    })
}

fn allowed_reason(auth: &Auth, who: &Identity, a: &Attributes) -> String {
    if who.in_group(crate::auth::authn::MASTERS) {
        return "allowed: member of system:masters".into();
    }
    auth.policy.snapshot().allowed_by(who, a).unwrap_or_default()
}

fn rules_review(auth: &Auth, info: &ResourceInfo, me: &Identity, spec: &Value) -> Result<Value, ApiError> {
    let ns = spec.get("namespace").and_then(Value::as_str).unwrap_or_default();
    if ns.is_empty() {
        return Err(ApiError::invalid(info, "", &[FieldError::required("spec.namespace")]));
    }
    let rules = auth.policy.snapshot().rules_for(me, ns);
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    for r in rules {
        if let Some(urls) = r.non_resource_urls.as_ref().filter(|u| !u.is_empty()) {
            non_resource_rules.push(json!({"verbs": r.verbs, "nonResourceURLs": urls}));
        }
        if r.resources.as_ref().is_some_and(|x| !x.is_empty()) {
            let mut rule = json!({"verbs": r.verbs, "apiGroups": r.api_groups.clone().unwrap_or_default(), "resources": r.resources});
            if let Some(n) = r.resource_names.as_ref().filter(|n| !n.is_empty()) {
                rule["resourceNames"] = json!(n);
            }
            resource_rules.push(rule);
        }
    }
    // The node authorizer's rules depend on the objects asked about: it cannot list them.
    let incomplete = me.node_name().is_some();
    let mut status = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": incomplete});
    if incomplete {
        status["evaluationError"] = json!("the node authorizer does not list rules");
    }
    Ok(status)
}
