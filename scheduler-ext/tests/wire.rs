//! The extender answering the exact bodies a real kube-scheduler sent, in
//! both `nodeCacheCapable` modes (fixtures from `proto`, with the
//! resource renamed from `example.com/gpu-memory` to gpupack's), and the
//! HTTP surface's limits.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use support::*;

async fn setup() -> (
    apiserver_standin::ApiServer,
    kube::Client,
    scheduler_ext::Extender,
) {
    let (server, client) = cluster().await;
    add_fixture_nodes(&client).await;
    let ext = extender(&client, "a").await;
    (server, client, ext)
}

async fn post(ext: &scheduler_ext::Extender, path: &str, body: &str) -> Value {
    let (status, text) = http(ext, "POST", path, body).await;
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn filter_in_both_cache_modes() {
    let (_server, _client, ext) = setup().await;

    let r = post(&ext, "/filter", &fixture("ncc-true", "filter-1.json")).await;
    assert_eq!(r["NodeNames"], json!([NODE_OK]));
    assert_eq!(r["Nodes"], Value::Null);
    assert_eq!(r["Error"], "");
    assert_eq!(r["FailedNodes"], json!({}));
    let why = r["FailedAndUnresolvableNodes"][NODE_NEVER]
        .as_str()
        .unwrap();
    assert!(
        why.contains("container c needs 1 GPU with 10.0 GiB free"),
        "{why}"
    );

    let r = post(&ext, "/filter", &fixture("ncc-false", "filter-1.json")).await;
    let items = r["Nodes"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["metadata"]["name"], NODE_OK);
    assert!(
        items[0]["status"].is_object(),
        "the full Node object is returned"
    );
    assert!(r["FailedAndUnresolvableNodes"][NODE_NEVER].is_string());
    ext.shutdown().await;
}

#[tokio::test]
async fn prioritize_in_both_cache_modes() {
    let (_server, _client, ext) = setup().await;
    for mode in ["ncc-true", "ncc-false"] {
        let r = post(&ext, "/prioritize", &fixture(mode, "prioritize-1.json")).await;
        let list = r.as_array().unwrap();
        assert_eq!(list.len(), 2, "{mode}: {r}");
        let score = |host: &str| {
            list.iter()
                .find(|h| h["Host"] == host)
                .map(|h| h["Score"].as_i64().unwrap())
                .unwrap()
        };
        assert_eq!(
            score(NODE_OK),
            10,
            "{mode}: the only fitting node gets the top score"
        );
        assert_eq!(score(NODE_NEVER), 0, "{mode}");
    }
    ext.shutdown().await;
}

#[tokio::test]
async fn bind_from_the_captured_body() {
    let (_server, client, ext) = setup().await;
    let filter: Value = serde_json::from_str(&fixture("ncc-true", "filter-1.json")).unwrap();
    let mut pod: k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(filter["Pod"].clone()).unwrap();
    pod.metadata.resource_version = None;
    pod.metadata.creation_timestamp = None;
    pod.metadata.managed_fields = None;
    let stored = add_pod(&client, &pod).await;
    let captured: Value = serde_json::from_str(&fixture("ncc-true", "bind-1.json")).unwrap();
    let body = fixture("ncc-true", "bind-1.json").replace(
        captured["PodUID"].as_str().unwrap(),
        stored.metadata.uid.as_deref().unwrap(),
    );
    let r = post(&ext, "/bind", &body).await;
    assert_eq!(r, json!({"Error": ""}));
    let bound = kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client, "default")
        .get("gpu-pod-1")
        .await
        .unwrap();
    assert_eq!(bound.spec.unwrap().node_name.as_deref(), Some(NODE_OK));
    let a = proto::assignment::PodAssignment::from_json(
        &bound.metadata.annotations.unwrap()[proto::assignment::ANNOTATION],
    )
    .unwrap();
    assert_eq!(a.container("c").unwrap().gpus[0].memory_bytes, 10 << 30);
    ext.shutdown().await;
}

#[tokio::test]
async fn preempt_keeps_only_nodes_where_the_victims_free_enough() {
    let (_server, client, ext) = setup().await;
    let holder = add_pod(
        &client,
        &scheduler_ext::synthetic::pod("ml", "holder", "", 8, None),
    )
    .await;
    assert_eq!(
        post_json(&ext, "/bind", &bind_args(&holder, NODE_OK)).await["Error"],
        ""
    );
    let filter: Value = serde_json::from_str(&fixture("ncc-true", "filter-1.json")).unwrap();
    let uid = holder.metadata.uid.clone().unwrap();
    eventually("the holder is in the ledger", || async {
        let r = post(&ext, "/filter", &fixture("ncc-true", "filter-1.json")).await;
        r["NodeNames"] == json!([])
    })
    .await;
    // The holder has no priority (0); the preemptor outranks it.
    let mut urgent = filter["Pod"].clone();
    urgent["spec"]["priority"] = json!(100_000);
    let body = json!({
        "Pod": urgent,
        "NodeNameToVictims": null,
        "NodeNameToMetaVictims": {
            NODE_OK: {"Pods": [{"UID": uid}, {"UID": "holds-no-gpu"}], "NumPDBViolations": 1},
            NODE_NEVER: {"Pods": [], "NumPDBViolations": 0},
        }
    });
    let r = post(&ext, "/preempt", &body.to_string()).await;
    assert_eq!(
        r,
        json!({"NodeNameToMetaVictims": {NODE_OK: {"Pods": [{"UID": "holds-no-gpu"}, {"UID": uid}], "NumPDBViolations": 1}}}),
        "the GPU holder is needed; a victim holding no GPU is kube-scheduler's call"
    );
    let body = json!({
        "Pod": urgent, "NodeNameToVictims": null,
        "NodeNameToMetaVictims": {NODE_OK: {"Pods": [], "NumPDBViolations": 0}}
    });
    let r = post(&ext, "/preempt", &body.to_string()).await;
    assert_eq!(
        r,
        json!({"NodeNameToMetaVictims": {}}),
        "evicting nobody frees nothing"
    );
    let body = json!({
        "Pod": filter["Pod"], "NodeNameToVictims": null,
        "NodeNameToMetaVictims": {NODE_OK: {"Pods": [{"UID": uid}], "NumPDBViolations": 0}}
    });
    // Until the pod watch reports the holder bound, its priority is
    // unknown and kube-scheduler's word (lower) stands; then it is known.
    eventually("a pod of equal priority is never a victim", || async {
        let r = post(&ext, "/preempt", &body.to_string()).await;
        r == json!({"NodeNameToMetaVictims": {}})
    })
    .await;
    ext.shutdown().await;
}

#[tokio::test]
async fn malformed_and_oversized_bodies_and_health() {
    let (_server, _client, ext) = setup().await;
    let r = post(&ext, "/filter", r#"{"Pod": 5}"#).await;
    assert!(
        r["Error"]
            .as_str()
            .unwrap()
            .starts_with("malformed filter request"),
        "{r}"
    );
    assert_eq!(
        r["NodeNames"],
        json!([]),
        "never null, which would mean nothing either way"
    );
    let r = post(&ext, "/bind", "{}").await;
    assert!(r["Error"].as_str().unwrap().contains("PodName"), "{r}");
    let (status, _) = http(&ext, "POST", "/prioritize", "[").await;
    assert_eq!(status, 400);
    let huge = format!(r#"{{"Pod":{{}},"NodeNames":["{}"]}}"#, "x".repeat(65 << 20));
    let (status, _) = http(&ext, "POST", "/filter", &huge).await;
    assert_eq!(status, 413);
    assert_eq!(http(&ext, "GET", "/healthz", "").await.0, 200);
    assert_eq!(http(&ext, "GET", "/readyz", "").await.0, 200);
    let (_, metrics) = http(&ext, "GET", "/metrics", "").await;
    assert!(
        metrics
            .contains(r#"gpupack_extender_requests_total{verb="filter",outcome="bad_request"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("gpupack_extender_request_duration_seconds_bucket"),
        "{metrics}"
    );
    ext.shutdown().await;
}

#[tokio::test]
async fn verbs_and_operations_can_listen_apart() {
    let (_server, client) = cluster().await;
    let config = scheduler_ext::Config::resolve(scheduler_ext::Args {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        url_prefix: Some("/gpupack".into()),
        ..scheduler_ext::Args::default()
    })
    .unwrap();
    let ext = scheduler_ext::Extender::start(client, &config, scheduler_ext::system_clock())
        .await
        .unwrap();
    let ops = ext.metrics_addr().unwrap();
    eventually("ready on the operations address", || async {
        http_at(ops, "GET", "/readyz", "").await.0 == 200
    })
    .await;
    assert_eq!(http_at(ops, "GET", "/healthz", "").await.0, 200);
    let (status, text) = http_at(ops, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    assert!(text.contains("gpupack"), "{text}");
    // The verbs are not on the operations address, and operations are not
    // on the verbs address.
    assert_eq!(http_at(ops, "POST", "/gpupack/bind", "{}").await.0, 404);
    assert_eq!(http(&ext, "GET", "/metrics", "").await.0, 404);
    let (status, _) = http(&ext, "POST", "/gpupack/filter", "{}").await;
    assert_eq!(status, 200, "the verbs answer on --listen");
    ext.shutdown().await;
}
