//! Resource quantities in pods and nodes, as the real API server stores
//! them (upstream: `resource.Quantity` is decoded and re-encoded in
//! canonical form, `SetDefaults_Pod`'s requests-from-limits defaulting, and
//! `ValidateResourceRequirements`' rules for extended resources in
//! `pkg/apis/core/validation`): parsed, checked and written back in canonical form (`1000` reads
//! back as `1k`, `0.5` as `500m`), with a pod's missing requests defaulted
//! from its limits. Extended resources (`gpupack.io/gpu`) must be whole
//! numbers, with requests equal to limits. Clients in tests thus see the
//! same strings a real cluster hands them.

use proto::quantity::Quantity;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::resource::ResourceType;

/// `IsExtendedResourceName`: a qualified name outside `kubernetes.io/`
/// that is not a quota `requests.` name.
fn is_extended(name: &str) -> bool {
    name.contains('/')
        && !name.starts_with("requests.")
        && !name.contains("kubernetes.io/")
        && !name.starts_with("kubernetes.io/")
}

/// Canonicalises the quantities of a pod or node; other kinds are left
/// alone. Errors are the API server's 422 with the field path.
pub fn canonicalize(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    if rt.group.is_empty() && rt.kind == "Pod" {
        pod(rt, obj)
    } else if rt.group.is_empty() && rt.kind == "Node" {
        let name = name_of(obj);
        for field in ["capacity", "allocatable"] {
            if let Some(list) = obj
                .pointer_mut(&format!("/status/{field}"))
                .and_then(Value::as_object_mut)
            {
                canonical_list(rt, &name, &format!("status.{field}"), list)?;
            }
        }
        Ok(())
    } else {
        Ok(())
    }
}

fn name_of(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn pod(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    let name = name_of(obj);
    for kind in ["initContainers", "containers"] {
        let Some(containers) = obj
            .pointer_mut(&format!("/spec/{kind}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for (i, c) in containers.iter_mut().enumerate() {
            let Some(res) = c.get_mut("resources").and_then(Value::as_object_mut) else {
                continue;
            };
            let path = format!("spec.{kind}[{i}].resources");
            for part in ["limits", "requests"] {
                if let Some(list) = res.get_mut(part).and_then(Value::as_object_mut) {
                    canonical_list(rt, &name, &format!("{path}.{part}"), list)?;
                }
            }
            // Defaulting: a limit without a request sets the request.
            if let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() {
                let requests = res
                    .entry("requests")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(requests) = requests.as_object_mut() {
                    for (k, v) in limits {
                        requests.entry(k).or_insert(v);
                    }
                }
            }
            let limits = res.get("limits").and_then(Value::as_object);
            let requests = res.get("requests").and_then(Value::as_object);
            for (k, v) in requests.into_iter().flatten() {
                if !is_extended(k) {
                    continue;
                }
                match limits.and_then(|l| l.get(k)) {
                    None => {
                        return Err(ApiError::invalid(
                            rt,
                            &name,
                            &format!(
                                "{path}.limits: Required value: Limit must be set for non overcommitable resources"
                            ),
                        ));
                    }
                    Some(limit) if limit != v => {
                        return Err(ApiError::invalid(
                            rt,
                            &name,
                            &format!(
                                "{path}.requests[{k}]: Invalid value: {v}: must be equal to {k} limit of {}",
                                limit.as_str().unwrap_or_default()
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
    }
    Ok(())
}

/// Parses every quantity of one map and writes it back canonically.
fn canonical_list(
    rt: &ResourceType,
    name: &str,
    path: &str,
    list: &mut Map<String, Value>,
) -> Result<(), ApiError> {
    for (k, v) in list.iter_mut() {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(ApiError::bad_request(format!(
                    "json: cannot unmarshal {other} into Go struct field of type resource.Quantity"
                )));
            }
        };
        // The real server fails to decode such a body at all.
        let q = Quantity::parse(&text).map_err(|_| {
            ApiError::bad_request(format!(
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' ({path}[{k}] = {text:?})"
            ))
        })?;
        if q.as_f64() < 0.0 {
            return Err(ApiError::invalid(
                rt,
                name,
                &format!(
                    "{path}[{k}]: Invalid value: \"{text}\": must be greater than or equal to 0"
                ),
            ));
        }
        if is_extended(k) && q.whole().is_none() {
            return Err(ApiError::invalid(
                rt,
                name,
                &format!("{path}[{k}]: Invalid value: \"{text}\": must be an integer"),
            ));
        }
        *v = Value::String(q.canonical());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn pods() -> ResourceType {
        ResourceType::namespaced("", "v1", "pods", "Pod")
    }

    #[test]
    fn pod_quantities_read_back_canonical() {
        let mut pod = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","resources":{
            "limits":{"gpupack.io/gpu-memory":"1000","gpupack.io/gpu":1,"cpu":"0.5","memory":"1.5Gi"}}}]}});
        canonicalize(&pods(), &mut pod).unwrap();
        let res = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(res["limits"]["gpupack.io/gpu-memory"], "1k");
        assert_eq!(res["limits"]["gpupack.io/gpu"], "1");
        assert_eq!(res["limits"]["cpu"], "500m");
        assert_eq!(res["limits"]["memory"], "1536Mi");
        assert_eq!(res["requests"], res["limits"]);
    }

    #[test]
    fn extended_resources_must_be_whole_and_equal() {
        let mut half = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","resources":{
            "limits":{"gpupack.io/gpu":"500m"}}}]}});
        let e = canonicalize(&pods(), &mut half).unwrap_err();
        assert!(e.to_string().contains("must be an integer"), "{e}");
        let mut unequal = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","resources":{
            "limits":{"gpupack.io/gpu":"1"},"requests":{"gpupack.io/gpu":"2"}}}]}});
        let e = canonicalize(&pods(), &mut unequal).unwrap_err();
        assert!(e.to_string().contains("must be equal to"), "{e}");
        let mut no_limit = json!({"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","resources":{
            "requests":{"gpupack.io/gpu":"2"}}}]}});
        let e = canonicalize(&pods(), &mut no_limit).unwrap_err();
        assert!(e.to_string().contains("Limit must be set"), "{e}");
    }
}
