//! The HTTP face of the store: every `/api` and `/apis` request goes
//! through [`handle`], which applies injected faults, serves the verb and
//! records the outcome.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, StatusCode, Uri, header};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::discovery;
use crate::error::{ApiError, success_status};
use crate::patch::{Patch, PatchKind};
use crate::record::RequestRecord;
use crate::resource::ResourceType;
use crate::response::json_response;
use crate::route::{self, ResourcePath, Target};
use crate::selector::{FieldSelector, LabelSelector};
use crate::state::AppState;
use crate::store::{Part, Preconditions, Selectors, str_at};
use crate::watch::{self, Start, WatchSpec};

/// Query parameters the API server reads (all as strings, parsed with
/// specific errors below).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Params {
    watch: Option<String>,
    label_selector: Option<String>,
    field_selector: Option<String>,
    resource_version: Option<String>,
    resource_version_match: Option<String>,
    allow_watch_bookmarks: Option<String>,
    timeout_seconds: Option<String>,
    limit: Option<String>,
    #[serde(rename = "continue")]
    continue_token: Option<String>,
    send_initial_events: Option<String>,
    field_manager: Option<String>,
    dry_run: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true" | "1"))
}

fn number<T: std::str::FromStr>(name: &str, v: &Option<String>) -> Result<Option<T>, ApiError> {
    v.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse().map_err(|_| {
                ApiError::bad_request(format!("query parameter {name}: invalid value {s:?}"))
            })
        })
        .transpose()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.status_json())
}

/// Entry point for every API request.
pub(crate) async fn handle(
    State(app): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or_default().to_string();
    let params: Params = serde_urlencoded_params(&query);
    let target = route::parse(&path);
    let user = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let (verb, resource, group, namespace, name) = match &target {
        Some(Target::Resource(p)) => (
            route::verb(&method, p, truthy(&params.watch)),
            p.resource_label(),
            p.group.clone(),
            p.namespace.clone(),
            p.name.clone(),
        ),
        _ => ("other", String::new(), String::new(), None, None),
    };
    let mut decision = app.faults.decide(route::is_write(verb), verb == "list");
    if decision.fail.is_none() && matches!(verb, "list" | "watch") {
        decision.fail = app.faults.list_failure(&resource);
    }
    if decision.fail.is_none()
        && verb == "list"
        && let Some(Target::Resource(p)) = &target
    {
        decision.latency += consistent_list_cost(&app, p, &params);
    }
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    let (response, injected) = if let Some(code) = decision.fail {
        let e = ApiError::server(code, format!("injected fault: the server answers {code}"));
        (error_response(&e), true)
    } else if decision.conflict {
        let rt = ResourceType::namespaced("", "", &resource, "");
        let e = ApiError::stale(&rt, name.as_deref().unwrap_or_default());
        (error_response(&e), true)
    } else {
        let r = match target {
            Some(Target::Discovery { group, version }) => discovery::respond(&app, group, version),
            Some(Target::Resource(p)) => serve(&app, &method, &p, &params, &headers, &body),
            None => Err(ApiError::no_such_resource()),
        };
        (r.unwrap_or_else(|e| error_response(&e)), false)
    };
    let status = response.status().as_u16();
    tracing::debug!(%method, %path, verb, status, injected, "request");
    app.requests.push(RequestRecord {
        method: method.to_string(),
        path,
        query,
        user,
        group,
        verb: verb.to_string(),
        resource,
        namespace,
        name,
        status,
        injected,
    });
    response
}

/// What serving a list costs beyond the faults: nothing from the watch
/// cache (`resourceVersion` given, `0` included); a consistent list (none,
/// or empty) is read from etcd, whose cost grows with every stored object
/// of the resource in the key range, whatever the selectors keep (see
/// [`crate::faults::DEFAULT_CONSISTENT_LIST_COST`]). Every page of a paged
/// consistent list pays for the whole range. Counted under the store lock,
/// waited out after it is released.
fn consistent_list_cost(app: &AppState, p: &ResourcePath, params: &Params) -> Duration {
    if params
        .resource_version
        .as_deref()
        .is_some_and(|rv| !rv.is_empty())
    {
        return Duration::ZERO;
    }
    let objects = app.store.read(|s| {
        s.resource_type(&p.group, &p.version, &p.plural)
            .map_or(0, |rt| s.count(&rt, p.namespace.as_deref()))
    });
    app.faults.consistent_list_delay(objects)
}

fn serde_urlencoded_params(query: &str) -> Params {
    // Unknown keys are ignored; a malformed pair makes the whole query
    // unreadable, which then reads as "no parameters" like an empty query.
    let uri = format!("/?{query}");
    uri.parse::<Uri>()
        .ok()
        .and_then(|u| axum::extract::Query::<Params>::try_from_uri(&u).ok())
        .map(|q| q.0)
        .unwrap_or_default()
}

fn serve(
    app: &Arc<AppState>,
    method: &Method,
    p: &ResourcePath,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    if params.dry_run.as_deref().is_some_and(|d| !d.is_empty()) {
        return Err(ApiError::bad_request(
            "dryRun is not supported by this server",
        ));
    }
    // The legacy `POST namespaces/{ns}/bindings` form.
    if p.group.is_empty() && p.plural == "bindings" && p.name.is_none() && *method == Method::POST {
        let ns = p
            .namespace
            .as_deref()
            .ok_or_else(ApiError::no_such_resource)?;
        let binding = parse_body(body)?;
        let name = str_at(&binding, "/metadata/name").unwrap_or_default();
        app.store.write(|s| s.bind(ns, &name, &binding))?;
        return Ok(json_response(201, &success_status(201)));
    }
    let rt = app
        .store
        .read(|s| s.resource_type(&p.group, &p.version, &p.plural))
        .ok_or_else(ApiError::no_such_resource)?;
    if (!rt.namespaced && p.namespace.is_some())
        || (rt.namespaced && p.namespace.is_none() && p.name.is_some())
    {
        return Err(ApiError::no_such_resource());
    }
    let ns = p.namespace.as_deref();
    let part = match p.subresource.as_deref() {
        None => Part::Main,
        Some("status") if rt.status_subresource => Part::Status,
        Some("binding") if rt.is_core("pods") => {
            if *method != Method::POST {
                return Err(ApiError::method_not_allowed(
                    "pods/binding only accepts POST",
                ));
            }
            let (ns, name) = (
                ns.unwrap_or_default(),
                p.name.as_deref().unwrap_or_default(),
            );
            let binding = parse_body(body)?;
            app.store.write(|s| s.bind(ns, name, &binding))?;
            return Ok(json_response(201, &success_status(201)));
        }
        Some("eviction") if rt.is_core("pods") => {
            if *method != Method::POST {
                return Err(ApiError::method_not_allowed(
                    "pods/eviction only accepts POST",
                ));
            }
            let (ns, name) = (
                ns.unwrap_or_default(),
                p.name.as_deref().unwrap_or_default(),
            );
            let eviction = parse_body(body)?;
            if app.faults.take_eviction_refusal() {
                return Err(ApiError::server(
                    429,
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                ));
            }
            app.store.write(|s| s.evict(ns, name, &eviction))?;
            return Ok(json_response(201, &success_status(201)));
        }
        Some(_) => return Err(ApiError::no_such_resource()),
    };
    match (method.as_str(), p.name.as_deref()) {
        ("GET", None) if truthy(&params.watch) => watch(app, rt, ns, params),
        ("GET", None) => list(app, &rt, ns, params),
        ("GET", Some(name)) => Ok(json_response(
            200,
            &app.store.read(|s| s.get(&rt, ns, name))?,
        )),
        ("POST", None) if part == Part::Main => create(app, &rt, ns, body),
        ("PUT", Some(name)) => {
            let obj = parse_body(body)?;
            Ok(json_response(
                200,
                &app.store.write(|s| s.update(&rt, ns, name, obj, part))?,
            ))
        }
        ("PATCH", Some(name)) => patch(app, &rt, ns, name, part, params, headers, body),
        ("DELETE", Some(name)) if part == Part::Main => {
            let pre = delete_preconditions(body)?;
            let gone = app.store.write(|s| s.delete(&rt, ns, name, &pre))?;
            Ok(json_response(200, &gone))
        }
        ("DELETE", None) if part == Part::Main => {
            let sel = selectors(&rt, params)?;
            let items = app.store.write(|s| s.delete_collection(&rt, ns, &sel));
            let rv = app.store.resource_version();
            Ok(json_response(200, &list_body(&rt, items, rv, None)))
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on {}",
            p.resource_label()
        ))),
    }
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn selectors(rt: &ResourceType, params: &Params) -> Result<Selectors, ApiError> {
    Ok(Selectors {
        labels: LabelSelector::parse(params.label_selector.as_deref().unwrap_or_default())?,
        fields: FieldSelector::parse(params.field_selector.as_deref().unwrap_or_default(), rt)?,
    })
}

fn list_body(rt: &ResourceType, items: Vec<Value>, rv: u64, cont: Option<String>) -> Value {
    let mut meta = json!({ "resourceVersion": rv.to_string() });
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({ "kind": rt.list_kind(), "apiVersion": rt.api_version(), "metadata": meta, "items": items })
}

fn object_key(v: &Value) -> (String, String) {
    (
        str_at(v, "/metadata/namespace").unwrap_or_default(),
        str_at(v, "/metadata/name").unwrap_or_default(),
    )
}

/// A list, paged with `limit`/`continue`. Later pages are served from the
/// current state, labelled with the first page's resourceVersion; a watch
/// from that resourceVersion then replays whatever changed in between.
fn list(
    app: &AppState,
    rt: &ResourceType,
    ns: Option<&str>,
    params: &Params,
) -> Result<Response, ApiError> {
    let sel = selectors(rt, params)?;
    let (mut items, current) = app.store.read(|s| s.list(rt, ns, &sel));
    let requested: Option<u64> = number("resourceVersion", &params.resource_version)?;
    if params.resource_version_match.as_deref() == Some("Exact")
        && let Some(rv) = requested
        && rv != current
    {
        return Err(ApiError::expired(format!(
            "too old resource version: {rv} ({current})"
        )));
    }
    let mut rv = current;
    if let Some(token) = params.continue_token.as_deref().filter(|t| !t.is_empty()) {
        let mut parts = token.splitn(3, '/');
        let (Some(tok_rv), Some(after_ns), Some(after_name)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(ApiError::bad_request(format!(
                "invalid continue token {token:?}"
            )));
        };
        rv = tok_rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid continue token {token:?}")))?;
        let after = (after_ns.to_string(), after_name.to_string());
        items.retain(|v| object_key(v) > after);
    }
    let limit: Option<usize> = number("limit", &params.limit)?;
    let mut cont = None;
    if let Some(limit) = limit.filter(|l| *l > 0 && items.len() > *l) {
        items.truncate(limit);
        if let Some(last) = items.last() {
            let (ns, name) = object_key(last);
            cont = Some(format!("{rv}/{ns}/{name}"));
        }
    }
    Ok(json_response(200, &list_body(rt, items, rv, cont)))
}

fn watch(
    app: &Arc<AppState>,
    rt: Arc<ResourceType>,
    ns: Option<&str>,
    params: &Params,
) -> Result<Response, ApiError> {
    let selectors = selectors(&rt, params)?;
    let initial = truthy(&params.send_initial_events);
    let start =
        match params.resource_version.as_deref() {
            None | Some("" | "0") => Start::Snapshot {
                end_bookmark: initial,
            },
            Some(_) if initial => Start::Snapshot { end_bookmark: true },
            Some(s) => Start::After(s.parse().map_err(|_| {
                ApiError::bad_request(format!("resourceVersion: invalid value {s:?}"))
            })?),
        };
    let timeout: Option<u64> = number("timeoutSeconds", &params.timeout_seconds)?;
    let spec = WatchSpec {
        rt,
        namespace: ns.map(str::to_string),
        selectors,
        start,
        bookmarks: truthy(&params.allow_watch_bookmarks),
        timeout: timeout.filter(|t| *t > 0).map(Duration::from_secs),
        bookmark_interval: app.options.bookmark_interval,
    };
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(watch::run(
        app.store.clone(),
        spec,
        tx,
        app.stop_token(),
        app.watch_resets.subscribe(),
    ));
    let body = Body::from_stream(ReceiverStream::new(rx));
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

fn create(
    app: &AppState,
    rt: &ResourceType,
    ns: Option<&str>,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let obj = parse_body(body)?;
    let crd_types = if rt.group == "apiextensions.k8s.io"
        && rt.plural == "customresourcedefinitions"
    {
        let crd: CustomResourceDefinition = serde_json::from_value(obj.clone())
            .map_err(|e| ApiError::bad_request(format!("invalid CustomResourceDefinition: {e}")))?;
        Some(ResourceType::from_crd(&crd)?)
    } else {
        None
    };
    let created = app.store.write(|s| s.create(rt, ns, obj))?;
    let Some(types) = crd_types else {
        return Ok(json_response(201, &created));
    };
    // Serve the new types at once and report the CRD established, so that
    // code waiting for the Established condition proceeds.
    for t in types {
        app.store.register(t);
    }
    let mut established = created.clone();
    established["status"] = json!({
        "acceptedNames": created.pointer("/spec/names").cloned().unwrap_or(json!({})),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}
        ],
    });
    let name = str_at(&created, "/metadata/name").unwrap_or_default();
    let stored = app
        .store
        .write(|s| s.update(rt, None, &name, established, Part::Status))?;
    Ok(json_response(201, &stored))
}

#[allow(clippy::too_many_arguments)]
fn patch(
    app: &AppState,
    rt: &ResourceType,
    ns: Option<&str>,
    name: &str,
    part: Part,
    params: &Params,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let accepted = "accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml";
    let kind = PatchKind::from_content_type(ct).ok_or_else(|| {
        ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - {accepted}"
        ))
    })?;
    if kind == PatchKind::Strategic && rt.is_custom() {
        // As on a real cluster: custom resources have no patch strategies.
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - {accepted}"
        )));
    }
    if kind == PatchKind::Apply && params.field_manager.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::unprocessable(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    let patch = Patch::parse(kind, body)?;
    let (obj, created) = app.store.write(|s| s.patch(rt, ns, name, &patch, part))?;
    Ok(json_response(if created { 201 } else { 200 }, &obj))
}

fn delete_preconditions(body: &Bytes) -> Result<Preconditions, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Preconditions::default());
    }
    let opts = parse_body(body)?;
    Ok(Preconditions {
        uid: str_at(&opts, "/preconditions/uid"),
        resource_version: str_at(&opts, "/preconditions/resourceVersion"),
    })
}
