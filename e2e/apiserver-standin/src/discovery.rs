//! Discovery documents (`/api`, `/apis`, resource lists, `/version`), built
//! from the registered types, for clients that discover before they call.

use std::collections::BTreeMap;

use axum::response::Response;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::response::json_response;
use crate::state::AppState;

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub(crate) fn respond(
    app: &AppState,
    group: Option<String>,
    version: Option<String>,
) -> Result<Response, ApiError> {
    let types = app.store.read(|s| s.resource_types());
    let doc = match (group, version) {
        (None, None) => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": app.addr.to_string()}],
        }),
        (Some(g), None) if g.is_empty() => {
            let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for t in types.iter().filter(|t| !t.group.is_empty()) {
                let versions = groups.entry(t.group.as_str()).or_default();
                if !versions.contains(&t.version.as_str()) {
                    versions.push(t.version.as_str());
                }
            }
            let groups: Vec<Value> = groups.iter().map(|(g, vs)| api_group(g, vs)).collect();
            json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
        }
        (Some(g), None) => {
            let versions: Vec<&str> = types
                .iter()
                .filter(|t| t.group == g)
                .map(|t| t.version.as_str())
                .collect();
            if versions.is_empty() {
                return Err(ApiError::no_such_resource());
            }
            let mut doc = api_group(&g, &versions);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            doc
        }
        (g, Some(v)) => {
            let g = g.unwrap_or_default();
            let mut resources = Vec::new();
            for t in types.iter().filter(|t| t.group == g && t.version == v) {
                resources.push(json!({
                    "name": t.plural, "singularName": t.kind.to_lowercase(), "namespaced": t.namespaced,
                    "kind": t.kind, "verbs": VERBS,
                }));
                if t.status_subresource {
                    resources.push(json!({
                        "name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced,
                        "kind": t.kind, "verbs": ["get", "patch", "update"],
                    }));
                }
                if t.is_core("pods") {
                    resources.push(json!({
                        "name": "pods/binding", "singularName": "", "namespaced": true,
                        "kind": "Binding", "verbs": ["create"],
                    }));
                }
            }
            if resources.is_empty() {
                return Err(ApiError::no_such_resource());
            }
            let gv = if g.is_empty() { v } else { format!("{g}/{v}") };
            json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources })
        }
    };
    Ok(json_response(200, &doc))
}

fn api_group(group: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v }))
        .collect();
    let preferred = vs.first().cloned().unwrap_or(Value::Null);
    json!({ "name": group, "versions": vs, "preferredVersion": preferred })
}

/// `/version`, as kube's `Client::apiserver_version` reads it.
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0+apiserver-standin",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "",
        "platform": "linux/amd64",
    })
}
