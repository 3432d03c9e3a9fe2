//! The four PATCH content types, applied to an object's JSON.
//!
//! Strategic merge patch is a JSON merge patch, except that the lists the
//! Kubernetes types mark `patchStrategy: merge` (containers, conditions,
//! env, ...) are merged element-wise by their merge key and `$patch: delete`
//! removes an element; other `$` directives are refused rather than
//! silently misapplied.

use serde_json::{Map, Value};

use crate::error::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/json-patch+json" => Some(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// A parsed patch body.
#[derive(Clone, Debug)]
pub enum Patch {
    Merge(Value),
    Strategic(Value),
    Json(json_patch::Patch),
    Apply(Value),
}

impl Patch {
    pub fn parse(kind: PatchKind, body: &[u8]) -> Result<Self, ApiError> {
        let object = |v: Value| -> Result<Value, ApiError> {
            if v.is_object() {
                Ok(v)
            } else {
                Err(ApiError::bad_request(
                    "the patch body must be a JSON object",
                ))
            }
        };
        Ok(match kind {
            PatchKind::Merge => Self::Merge(object(parse_json(body)?)?),
            PatchKind::Strategic => Self::Strategic(object(parse_json(body)?)?),
            PatchKind::Json => Self::Json(
                serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?,
            ),
            PatchKind::Apply => {
                // kube-rs sends JSON, which is YAML; accept real YAML too.
                let v = match serde_json::from_slice::<Value>(body) {
                    Ok(v) => v,
                    Err(_) => std::str::from_utf8(body)
                        .map_err(|e| e.to_string())
                        .and_then(|text| serde_saphyr::from_str(text).map_err(|e| e.to_string()))
                        .map_err(|e| {
                            ApiError::bad_request(format!("invalid apply configuration: {e}"))
                        })?,
                };
                Self::Apply(object(v)?)
            }
        })
    }

    /// The `metadata.resourceVersion` the body carries, which the API
    /// server treats as a precondition for merge-style patches.
    pub fn resource_version_precondition(&self) -> Option<&str> {
        match self {
            Self::Merge(v) | Self::Strategic(v) | Self::Apply(v) => v
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty()),
            Self::Json(_) => None,
        }
    }

    /// Applies the patch to `doc`.
    pub fn apply_to(&self, doc: &mut Value) -> Result<(), ApiError> {
        match self {
            Self::Merge(p) => {
                json_patch::merge(doc, p);
                Ok(())
            }
            Self::Apply(p) => {
                apply_single_manager(doc, p);
                Ok(())
            }
            Self::Strategic(p) => strategic_merge(doc, p),
            Self::Json(p) => json_patch::patch(doc, &p.0).map_err(|e| {
                ApiError::unprocessable(format!("the JSON patch could not be applied: {e}"))
            }),
        }
    }
}

/// Server-side apply as it comes out for a single field manager: every
/// top-level field the configuration names is owned by that manager and
/// becomes exactly what it says (so a key dropped from a map disappears),
/// fields it does not name are left alone, and `metadata` is merged (labels
/// and annotations others set survive). Field ownership across several
/// managers, and apply conflicts, are not modelled.
fn apply_single_manager(doc: &mut Value, cfg: &Value) {
    let Some(cfg) = cfg.as_object() else { return };
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Some(target) = doc.as_object_mut() else {
        return;
    };
    for (k, v) in cfg {
        if k == "metadata" {
            json_patch::merge(target.entry(k.clone()).or_insert(Value::Null), v);
        } else {
            target.insert(k.clone(), v.clone());
        }
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the patch body is not valid JSON: {e}")))
}

/// Lists merged element-wise in a strategic merge patch, with their merge key.
const MERGE_KEYS: &[(&str, &str)] = &[
    ("containers", "name"),
    ("initContainers", "name"),
    ("ephemeralContainers", "name"),
    ("conditions", "type"),
    ("env", "name"),
    ("volumes", "name"),
    ("volumeMounts", "mountPath"),
    ("ports", "containerPort"),
    ("ownerReferences", "uid"),
    ("containerStatuses", "name"),
    ("initContainerStatuses", "name"),
    ("addresses", "type"),
];

fn strategic_merge(doc: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let Some(patch) = patch.as_object() else {
        *doc = patch.clone();
        return Ok(());
    };
    if let Some(d) = patch.keys().find(|k| k.starts_with('$')) {
        return Err(ApiError::bad_request(format!(
            "strategic merge directive {d} is not supported by this server"
        )));
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Some(target) = doc.as_object_mut() else {
        return Ok(());
    };
    for (k, pv) in patch {
        if pv.is_null() {
            target.remove(k);
            continue;
        }
        let merge_key = MERGE_KEYS.iter().find(|(f, _)| f == k).map(|(_, key)| *key);
        match (merge_key, target.get_mut(k), pv) {
            (Some(key), Some(Value::Array(cur)), Value::Array(items)) => {
                merge_list(cur, items, key)?;
            }
            (_, Some(cur), Value::Object(_)) => strategic_merge(cur, pv)?,
            _ => {
                let mut fresh = Value::Null;
                strategic_merge_value(&mut fresh, pv)?;
                target.insert(k.clone(), fresh);
            }
        }
    }
    Ok(())
}

/// Sets `slot` to `v` with nulls inside objects dropped, as a merge would.
fn strategic_merge_value(slot: &mut Value, v: &Value) -> Result<(), ApiError> {
    if v.is_object() {
        strategic_merge(slot, v)
    } else {
        *slot = v.clone();
        Ok(())
    }
}

fn merge_list(cur: &mut Vec<Value>, items: &[Value], key: &str) -> Result<(), ApiError> {
    for item in items {
        let Some(obj) = item.as_object() else {
            return Err(ApiError::bad_request(format!(
                "strategic merge patch: list merged by {key:?} holds a non-object"
            )));
        };
        let id = obj.get(key).cloned().ok_or_else(|| {
            ApiError::bad_request(format!(
                "strategic merge patch: list element lacks its merge key {key:?}"
            ))
        })?;
        let pos = cur.iter().position(|e| e.get(key) == Some(&id));
        let delete = obj.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                cur.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut cur[i], item)?,
            (None, false) => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, item)?;
                cur.push(fresh);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(kind: PatchKind, doc: Value, patch: Value) -> Result<Value, ApiError> {
        let p = Patch::parse(kind, &serde_json::to_vec(&patch).unwrap())?;
        let mut d = doc;
        p.apply_to(&mut d)?;
        Ok(d)
    }

    #[test]
    fn merge_replaces_lists_and_deletes_nulls() {
        let out = run(
            PatchKind::Merge,
            json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]}),
            json!({"a": null, "b": {"c": 5}, "l": [9]}),
        )
        .unwrap();
        assert_eq!(out, json!({"b": {"c": 5, "d": 3}, "l": [9]}));
    }

    #[test]
    fn strategic_merges_conditions_by_type() {
        let doc = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False"},
            {"type": "PodScheduled", "status": "True"}]}});
        let out = run(
            PatchKind::Strategic,
            doc,
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Extra", "status": "True"}]}}),
        )
        .unwrap();
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}, {"type": "Extra", "status": "True"}])
        );
    }

    #[test]
    fn strategic_delete_directive_and_refusals() {
        let doc = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let out = run(
            PatchKind::Strategic,
            doc.clone(),
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
        )
        .unwrap();
        assert_eq!(out["spec"]["containers"], json!([{"name": "b"}]));
        let err = run(
            PatchKind::Strategic,
            doc,
            json!({"spec": {"$retainKeys": ["x"]}}),
        )
        .unwrap_err();
        assert_eq!(err.code, 400);
    }

    #[test]
    fn json_patch_test_failure_is_422() {
        let doc = json!({"metadata": {"resourceVersion": "5"}});
        let ok = run(
            PatchKind::Json,
            doc.clone(),
            json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "5"},
                   {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}]),
        )
        .unwrap();
        assert_eq!(ok["metadata"]["labels"]["a"], "b");
        let err = run(
            PatchKind::Json,
            doc,
            json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "4"}]),
        )
        .unwrap_err();
        assert_eq!((err.code, err.reason), (422, "Invalid"));
    }

    #[test]
    fn apply_owns_the_fields_it_names() {
        let doc = json!({"metadata": {"name": "n", "labels": {"other": "x"}},
                         "spec": {"links": {"0-1": "nvlink", "0-2": "pcie"}}, "extra": 1});
        let out = run(
            PatchKind::Apply,
            doc,
            json!({"metadata": {"labels": {"mine": "y"}}, "spec": {"links": {"0-1": "nvlink"}}}),
        )
        .unwrap();
        assert_eq!(out["spec"], json!({"links": {"0-1": "nvlink"}}));
        assert_eq!(
            out["metadata"]["labels"],
            json!({"other": "x", "mine": "y"})
        );
        assert_eq!(out["extra"], 1);
    }

    #[test]
    fn apply_accepts_yaml_and_exposes_precondition() {
        let p = Patch::parse(
            PatchKind::Apply,
            b"metadata:\n  resourceVersion: \"7\"\nspec:\n  x: 1\n",
        )
        .unwrap();
        assert_eq!(p.resource_version_precondition(), Some("7"));
        assert!(Patch::parse(PatchKind::Merge, b"[1]").is_err());
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchKind::Merge)
        );
        assert_eq!(PatchKind::from_content_type("text/plain"), None);
    }
}
