//! The extender against the Kubernetes API stand-in: restart, deletion,
//! 409 on bind, two replicas racing for one node, malformed annotations.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams};
use proto::assignment::{ANNOTATION, PodAssignment};
use proto::inventory::GpuNodeInventory;
use scheduler_ext::synthetic::{inventory, pod};
use support::*;

async fn assignment(client: &kube::Client, name: &str) -> Option<PodAssignment> {
    let p = Api::<Pod>::namespaced(client.clone(), "ml")
        .get(name)
        .await
        .unwrap();
    let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
    let a = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION))
        .map(|t| PodAssignment::from_json(t).unwrap());
    assert_eq!(
        node.is_some(),
        a.is_some(),
        "node and assignment are written together"
    );
    a
}

async fn fits(ext: &scheduler_ext::Extender, p: &Pod, node: &str) -> bool {
    let r = post_json(ext, "/filter", &args(p, &[node])).await;
    r["NodeNames"].as_array().unwrap().iter().any(|n| n == node)
}

#[tokio::test]
async fn binding_writes_node_and_assignment_at_once() {
    let (_server, client) = cluster().await;
    add_node(&client, &inventory("gpu-1", 8)).await;
    let ext = extender(&client, "a").await;
    let p = add_pod(&client, &pod("ml", "llama", "", 4, Some(160))).await;
    let r = post_json(&ext, "/bind", &bind_args(&p, "gpu-1")).await;
    assert_eq!(r["Error"], "");
    let a = assignment(&client, "llama").await.unwrap();
    assert_eq!(a.node, "gpu-1");
    let gpus = &a.container("server").unwrap().gpus;
    assert_eq!(gpus.len(), 4);
    assert!(gpus.iter().all(|g| g.memory_bytes == 40 << 30));
    // A second bind of the same pod is refused: it is bound already.
    let r = post_json(&ext, "/bind", &bind_args(&p, "gpu-1")).await;
    assert!(
        r["Error"].as_str().unwrap().contains("already bound"),
        "{r}"
    );
    ext.shutdown().await;
}

#[tokio::test]
async fn alike_pods_on_other_gpus_wait_for_kubelet_admission() {
    let (_server, client) = cluster().await;
    add_node(&client, &inventory("gpu-1", 2)).await;
    let ext = extender(&client, "a").await;
    // Each takes most of a GPU, so they land on different GPUs; the device
    // plugin could not tell their containers apart before kubelet admits one.
    let first = add_pod(&client, &pod("ml", "first", "", 1, Some(60))).await;
    let second = add_pod(&client, &pod("ml", "second", "", 1, Some(60))).await;
    let r = post_json(&ext, "/bind", &bind_args(&first, "gpu-1")).await;
    assert_eq!(r["Error"], "");
    let r = post_json(&ext, "/bind", &bind_args(&second, "gpu-1")).await;
    let error = r["Error"].as_str().unwrap();
    assert!(error.contains("still admitting pod ml/first"), "{r}");
    assert!(assignment(&client, "second").await.is_none());
    kubelet_admits_bound_pods(&client, "ml").await;
    // Admission reaches the extender through its pod watch; until then the
    // bind keeps waiting (kube-scheduler retries after its backoff).
    let wait = Duration::from_millis(20);
    let mut r = serde_json::Value::Null;
    for _ in 0..100 {
        r = post_json(&ext, "/bind", &bind_args(&second, "gpu-1")).await;
        if r["Error"] == "" {
            break;
        }
        assert!(
            r["Error"].as_str().unwrap().contains("still admitting"),
            "{r}"
        );
        tokio::time::sleep(wait).await;
    }
    assert_eq!(r["Error"], "");
    let gpu = |a: PodAssignment| a.containers[0].gpus[0].uuid.clone();
    assert_ne!(
        gpu(assignment(&client, "first").await.unwrap()),
        gpu(assignment(&client, "second").await.unwrap())
    );
    ext.shutdown().await;
}

/// A bind that only waits for kubelet to admit an alike pod waits for it
/// (up to a second) instead of refusing: one call binds the pod.
#[tokio::test]
async fn a_bind_waits_briefly_for_an_alike_pods_admission() {
    let (_server, client) = cluster().await;
    add_node(&client, &inventory("gpu-1", 2)).await;
    let ext = std::sync::Arc::new(extender(&client, "a").await);
    let first = add_pod(&client, &pod("ml", "first", "", 1, Some(60))).await;
    let second = add_pod(&client, &pod("ml", "second", "", 1, Some(60))).await;
    let r = post_json(&ext, "/bind", &bind_args(&first, "gpu-1")).await;
    assert_eq!(r["Error"], "");
    let waiting = {
        let ext = ext.clone();
        tokio::spawn(async move { post_json(&ext, "/bind", &bind_args(&second, "gpu-1")).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    kubelet_admits_bound_pods(&client, "ml").await;
    let r = waiting.await.unwrap();
    assert_eq!(r["Error"], "", "{r}");
    assert!(assignment(&client, "second").await.is_some());
}

#[tokio::test]
async fn ledger_is_rebuilt_after_a_restart() {
    let (_server, client) = cluster().await;
    add_node(&client, &inventory("gpu-1", 1)).await;
    let first = extender(&client, "a").await;
    let holder = add_pod(&client, &pod("ml", "holder", "", 1, None)).await;
    assert_eq!(
        post_json(&first, "/bind", &bind_args(&holder, "gpu-1")).await["Error"],
        ""
    );
    first.shutdown().await;

    let second = extender(&client, "b").await;
    let (status, _) = http(&second, "GET", "/readyz", "").await;
    assert_eq!(status, 200);
    let newcomer = add_pod(&client, &pod("ml", "newcomer", "", 1, None)).await;
    let r = post_json(&second, "/filter", &args(&newcomer, &["gpu-1"])).await;
    assert_eq!(r["NodeNames"], serde_json::json!([]), "{r}");
    assert!(
        r["FailedNodes"]["gpu-1"]
            .as_str()
            .unwrap()
            .contains("whole GPU"),
        "{r}"
    );
    second.shutdown().await;
}

/// After a restart the extender is not ready, and refuses binds with an
/// error kube-scheduler retries (writing nothing), until both of its
/// initial lists are in; held back here one at a time by the API failing
/// every list and watch of that resource while serving everything else.
#[tokio::test]
async fn readiness_and_binds_wait_for_the_initial_lists() {
    let (server, client) = cluster().await;
    add_node(&client, &inventory("gpu-1", 3)).await;
    let first = extender(&client, "a").await;
    let holder = add_pod(&client, &pod("ml", "holder", "", 1, None)).await;
    assert_eq!(
        post_json(&first, "/bind", &bind_args(&holder, "gpu-1")).await["Error"],
        ""
    );
    first.shutdown().await;
    kubelet_admits_bound_pods(&client, "ml").await;
    let gpu = |a: PodAssignment| a.container("server").unwrap().gpus[0].index;
    let mut taken = vec![gpu(assignment(&client, "holder").await.unwrap())];
    let writes = || {
        server.requests().count("create", "pods/binding")
            + server.requests().count("patch", "gpunodeinventories")
    };

    for resource in ["gpunodeinventories", "pods"] {
        let name = format!("after-{resource}");
        let newcomer = add_pod(&client, &pod("ml", &name, "", 1, None)).await;
        server.faults().fail_lists(resource, 503);
        let failures = server.faults().injected().failures;
        let ext = start_extender(
            &client,
            scheduler_ext::Args {
                identity: Some(name.clone()),
                ..scheduler_ext::Args::default()
            },
        )
        .await;
        eventually(&format!("a list of {resource} refused"), || async {
            server.faults().injected().failures > failures
        })
        .await;

        let (status, body) = http(&ext, "GET", "/readyz", "").await;
        assert_eq!(status, 503, "{resource}: {body}");
        let before = writes();
        let r = post_json(&ext, "/bind", &bind_args(&newcomer, "gpu-1")).await;
        let e = r["Error"].as_str().unwrap();
        assert!(
            e.contains("ledger is still being built") && e.contains("retry"),
            "{resource}: {r}"
        );
        let r = post_json(&ext, "/filter", &args(&newcomer, &["gpu-1"])).await;
        assert!(r["Error"].as_str().unwrap().contains("retry"), "{r}");
        assert_eq!(writes(), before, "{resource}: nothing written unready");
        assert!(assignment(&client, &name).await.is_none());

        server.faults().clear();
        eventually(&format!("ready once {resource} lists"), || async {
            http(&ext, "GET", "/readyz", "").await.0 == 200
        })
        .await;
        let r = post_json(&ext, "/bind", &bind_args(&newcomer, "gpu-1")).await;
        assert_eq!(r["Error"], "", "{resource}: {r}");
        let placed = gpu(assignment(&client, &name).await.unwrap());
        assert!(
            !taken.contains(&placed),
            "GPU {placed} was taken: {taken:?}"
        );
        taken.push(placed);
        kubelet_admits_bound_pods(&client, "ml").await;
        ext.shutdown().await;
    }
}

#[tokio::test]
async fn deleting_a_pod_releases_its_gpus() {
    let (_server, client) = cluster().await;
    add_node(&client, &inventory("gpu-1", 2)).await;
    let ext = extender(&client, "a").await;
    let big = add_pod(&client, &pod("ml", "big", "", 2, None)).await;
    assert_eq!(
        post_json(&ext, "/bind", &bind_args(&big, "gpu-1")).await["Error"],
        ""
    );
    let next = add_pod(&client, &pod("ml", "next", "", 1, Some(20))).await;
    eventually("the watch sees the bound pod", || async {
        !fits(&ext, &next, "gpu-1").await
    })
    .await;
    Api::<Pod>::namespaced(client.clone(), "ml")
        .delete("big", &DeleteParams::default())
        .await
        .unwrap();
    eventually("deletion frees the GPUs", || async {
        fits(&ext, &next, "gpu-1").await
    })
    .await;
    // The node's reservations annotation still lists the deleted pod until
    // the next write on the node drops its entry. The device plugin
    // re-publishing the inventory must not bring that entry back into the
    // ledger.
    let inventories: Api<GpuNodeInventory> = Api::all(client.clone());
    let reserved = |inv: &GpuNodeInventory| {
        inv.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(scheduler_ext::reservations::ANNOTATION))
            .cloned()
            .unwrap_or_default()
    };
    let big_uid = big.metadata.uid.clone().unwrap();
    assert!(
        reserved(&inventories.get("gpu-1").await.unwrap()).contains(&big_uid),
        "a bound pod's entry stays while the pod holds its GPUs"
    );
    inventories
        .patch(
            "gpu-1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                serde_json::json!({"metadata": {"labels": {"republished": "1"}}}),
            ),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        fits(&ext, &next, "gpu-1").await,
        "a deleted pod's reservation held its GPUs again"
    );
    // The next write of the annotation drops the deleted pod's entry.
    assert_eq!(
        post_json(&ext, "/bind", &bind_args(&next, "gpu-1")).await["Error"],
        ""
    );
    let after = reserved(&inventories.get("gpu-1").await.unwrap());
    assert!(!after.contains(&big_uid), "stale entry kept: {after}");
    ext.shutdown().await;
}

#[tokio::test]
async fn a_409_on_the_binding_releases_the_reservation() {
    let (server, client) = cluster().await;
    add_node(&client, &inventory("gpu-1", 1)).await;
    let ext = extender(&client, "a").await;
    let p = add_pod(&client, &pod("ml", "raced", "", 1, None)).await;
    // Every API answer takes 200 ms; while the extender is between its
    // pre-check and its Binding, someone else binds the pod.
    server.faults().latency(Duration::from_millis(200));
    let store = server.store().clone();
    let racer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(450)).await;
        let mut stored: Pod = store.get_as(Some("ml"), "raced").unwrap().unwrap();
        stored.spec.as_mut().unwrap().node_name = Some("elsewhere".into());
        store.put_as(&stored).unwrap();
    });
    let r = post_json(&ext, "/bind", &bind_args(&p, "gpu-1")).await;
    racer.await.unwrap();
    server.faults().clear();
    assert!(r["Error"].as_str().unwrap().contains("409"), "{r}");
    let inv: GpuNodeInventory = Api::all(client.clone()).get("gpu-1").await.unwrap();
    let reservations = inv
        .metadata
        .annotations
        .unwrap_or_default()
        .get(scheduler_ext::reservations::ANNOTATION)
        .cloned()
        .unwrap_or_default();
    assert!(
        !reservations.contains(p.metadata.uid.as_deref().unwrap()),
        "{reservations}"
    );
    ext.shutdown().await;
}

#[tokio::test]
async fn two_replicas_never_double_book_a_node() {
    let (server, client) = cluster().await;
    add_node(&client, &inventory("gpu-1", 2)).await;
    let a = extender(&client, "a").await;
    let b = extender(&client, "b").await;
    // Room for four 40 GiB pods; eight ask, half through each replica,
    // all at once, with a little API latency to interleave them.
    server.faults().latency(Duration::from_millis(3));
    let mut pods = Vec::new();
    for i in 0..8 {
        pods.push(add_pod(&client, &pod("ml", &format!("p{i}"), "", 1, Some(40))).await);
    }
    let bodies: Vec<_> = pods.iter().map(|p| bind_args(p, "gpu-1")).collect();
    let binds = bodies.iter().enumerate().map(|(i, body)| {
        let ext = if i % 2 == 0 { &a } else { &b };
        post_json(ext, "/bind", body)
    });
    let replies = futures::future::join_all(binds).await;
    let first_round = replies.iter().filter(|r| r["Error"] == "").count();
    assert!(first_round <= 4, "{replies:?}");
    // Retry the refused ones, as kube-scheduler would, until the node is
    // full; kubelet admits what is bound in between.
    for p in &pods {
        kubelet_admits_bound_pods(&client, "ml").await;
        if assignment(&client, p.metadata.name.as_deref().unwrap())
            .await
            .is_none()
        {
            let ext = if first_round % 2 == 0 { &a } else { &b };
            post_json(ext, "/bind", &bind_args(p, "gpu-1")).await;
        }
    }
    let mut used: HashMap<String, u64> = HashMap::new();
    let mut bound = 0;
    for p in &pods {
        if let Some(a) = assignment(&client, p.metadata.name.as_deref().unwrap()).await {
            bound += 1;
            for g in a.containers.iter().flat_map(|c| &c.gpus) {
                *used.entry(g.uuid.clone()).or_default() += g.memory_bytes;
            }
        }
    }
    assert_eq!(bound, 4, "exactly the four that fit are bound: {used:?}");
    assert!(
        used.values().all(|&b| b <= 80 << 30),
        "over-committed: {used:?}"
    );
    server.faults().clear();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn malformed_annotations_get_an_event_and_change_nothing() {
    let (server, client) = cluster().await;
    add_node(&client, &inventory("gpu-1", 2)).await;
    let ext = extender(&client, "a").await;
    let mut bad = pod("ml", "bad", "", 1, None);
    bad.metadata.annotations = Some(
        [
            (
                "gpupack.io/model".to_string(),
                "meta-llama/Llama-3.1-8B-Instruct".to_string(),
            ),
            (
                "gpupack.io/tensor-parallel-size".to_string(),
                "two".to_string(),
            ),
        ]
        .into(),
    );
    let bad = add_pod(&client, &bad).await;
    let good = add_pod(&client, &pod("ml", "good", "", 2, None)).await;
    let before = post_json(&ext, "/filter", &args(&good, &["gpu-1"])).await;
    server.requests().clear();

    let r = post_json(&ext, "/filter", &args(&bad, &["gpu-1"])).await;
    assert_eq!(r["NodeNames"], serde_json::json!([]));
    let reason = r["FailedAndUnresolvableNodes"]["gpu-1"].as_str().unwrap();
    assert!(
        reason.contains("gpupack.io/tensor-parallel-size") && reason.contains("\"two\""),
        "{reason}"
    );
    let r = post_json(&ext, "/bind", &bind_args(&bad, "gpu-1")).await;
    assert!(
        r["Error"]
            .as_str()
            .unwrap()
            .contains("gpupack.io/tensor-parallel-size"),
        "{r}"
    );

    let events: Api<Event> = Api::namespaced(client.clone(), "ml");
    eventually("an Event on the pod", || async {
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("InvalidGpuRequest")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("bad")
                    && e.note
                        .as_deref()
                        .unwrap_or_default()
                        .contains("tensor-parallel-size")
            })
    })
    .await;
    // Nothing but the Event was written, and other pods are answered as before.
    let writes: Vec<_> = server
        .requests()
        .all()
        .into_iter()
        .filter(|r| {
            !matches!(r.verb.as_str(), "get" | "list" | "watch" | "other") && r.resource != "events"
        })
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert_eq!(
        post_json(&ext, "/filter", &args(&good, &["gpu-1"])).await,
        before
    );
    assert!(assignment(&client, "bad").await.is_none());
    ext.shutdown().await;
}

#[tokio::test]
async fn a_reservation_of_another_replica_is_honoured_before_its_pod_is_bound() {
    let (_server, client) = cluster().await;
    let mut inv = inventory("gpu-1", 1);
    // Another replica reserved the only GPU for a pod it has not bound yet.
    let now = scheduler_ext::system_clock()();
    let theirs = format!(
        r#"{{"version":"v1","pods":{{"their-uid":{{"namespace":"ml","name":"theirs","expiresAt":{},"holder":"b",
            "assignment":{{"version":"v1","node":"gpu-1","containers":[{{"name":"server","gpus":[{{"uuid":"GPU-gpu-1-0","index":0,"memoryBytes":{}}}]}}]}}}}}}}}"#,
        now + 120,
        80u64 << 30
    );
    inv.metadata.annotations =
        Some([(scheduler_ext::reservations::ANNOTATION.to_string(), theirs)].into());
    add_node(&client, &inv).await;
    let ext = extender(&client, "a").await;
    let p = add_pod(&client, &pod("ml", "mine", "", 1, Some(10))).await;
    let r = post_json(&ext, "/filter", &args(&p, &["gpu-1"])).await;
    assert!(r["FailedNodes"]["gpu-1"].as_str().is_some(), "{r}");
    let r = post_json(&ext, "/bind", &bind_args(&p, "gpu-1")).await;
    assert!(
        r["Error"].as_str().unwrap().contains("no longer fits"),
        "{r}"
    );
    assert!(assignment(&client, "mine").await.is_none());
    ext.shutdown().await;
}

#[tokio::test]
async fn lost_reservation_races_are_retried() {
    let (server, client) = cluster().await;
    add_node(&client, &inventory("gpu-1", 1)).await;
    let ext = extender(&client, "a").await;
    let p = add_pod(&client, &pod("ml", "p", "", 1, None)).await;
    server.faults().conflict_next_writes(3);
    let r = post_json(&ext, "/bind", &bind_args(&p, "gpu-1")).await;
    assert_eq!(r["Error"], "", "{r}");
    assert!(assignment(&client, "p").await.is_some());
    let (_, metrics) = http(&ext, "GET", "/metrics", "").await;
    assert!(
        metrics.contains("gpupack_extender_bind_conflicts_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gpupack_extender_pods_placed_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"gpupack_extender_gpu_memory_allocated_bytes{node="gpu-1"}"#),
        "{metrics}"
    );
    ext.shutdown().await;
}

/// A bind that cannot finish before its deadline answers an error and
/// leaves the pod unbound: kube-scheduler's view (bind failed) and the API
/// never drift apart, whether the API is slow to read or to write.
#[tokio::test]
async fn a_bind_past_its_deadline_leaves_the_pod_unbound() {
    let (server, client) = cluster().await;
    add_node(&client, &inventory("gpu-1", 2)).await;
    let ext = start_extender(
        &client,
        scheduler_ext::Args {
            identity: Some("a".into()),
            request_timeout_ms: Some(400),
            ..Default::default()
        },
    )
    .await;
    eventually("extender ready", || async { ext.readiness.is_ready() }).await;
    // 500 ms per request: the first read overruns. 150 ms: the reads fit,
    // the reservation write overruns.
    for (i, latency) in [500u64, 150].into_iter().enumerate() {
        let name = format!("slow{i}");
        let p = add_pod(&client, &pod("ml", &name, "", 1, Some(20))).await;
        post_json(&ext, "/filter", &args(&p, &["gpu-1"])).await;
        server.faults().latency(Duration::from_millis(latency));
        let started = std::time::Instant::now();
        let r = post_json(&ext, "/bind", &bind_args(&p, "gpu-1")).await;
        let took = started.elapsed();
        server.faults().clear();
        let error = r["Error"].as_str().unwrap();
        assert!(error.contains("abandoned"), "{latency} ms: {r}");
        assert!(
            took < Duration::from_millis(400 + latency),
            "answered after {took:?}"
        );
        // Nothing lands afterwards, and the reservation is withdrawn.
        tokio::time::sleep(Duration::from_millis(3 * latency)).await;
        assert!(assignment(&client, &name).await.is_none(), "{latency} ms");
        let uid = p.metadata.uid.clone().unwrap();
        eventually("the reservation is withdrawn", || async {
            let inv: GpuNodeInventory = Api::all(client.clone()).get("gpu-1").await.unwrap();
            !inv.metadata
                .annotations
                .unwrap_or_default()
                .get(scheduler_ext::reservations::ANNOTATION)
                .is_some_and(|r| r.contains(&uid))
        })
        .await;
        // And the pod's GPUs were given back in the ledger.
        let whole = add_pod(&client, &pod("ml", &format!("whole{i}"), "", 2, None)).await;
        assert!(fits(&ext, &whole, "gpu-1").await, "{latency} ms");
    }
    assert_eq!(server.requests().count("create", "pods/binding"), 0);
    ext.shutdown().await;
}

/// kube-scheduler filters the next pod while the previous bind runs; the
/// GPUs of that bind already count as taken.
#[tokio::test]
async fn the_next_filter_sees_a_bind_in_flight() {
    let (server, client) = cluster().await;
    add_node(&client, &inventory("gpu-1", 1)).await;
    let ext = extender(&client, "a").await;
    let first = add_pod(&client, &pod("ml", "first", "", 1, None)).await;
    let next = add_pod(&client, &pod("ml", "next", "", 1, None)).await;
    assert!(fits(&ext, &first, "gpu-1").await);
    server.faults().latency(Duration::from_millis(300));
    let body = bind_args(&first, "gpu-1");
    let bind = post_json(&ext, "/bind", &body);
    let probe = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fits(&ext, &next, "gpu-1").await
    };
    let (r, next_fits) = tokio::join!(bind, probe);
    server.faults().clear();
    assert_eq!(r["Error"], "", "{r}");
    assert!(!next_fits, "the filter offered the GPU of a bind in flight");
    ext.shutdown().await;
}

/// Binds for one node inside one replica take turns: none of them loses a
/// race to another, so the API sees no 409 on the reservation write.
#[tokio::test]
async fn concurrent_binds_on_one_node_in_one_replica_do_not_conflict() {
    let (server, client) = cluster().await;
    add_node(&client, &inventory("gpu-1", 8)).await;
    let ext = extender(&client, "a").await;
    server.faults().latency(Duration::from_millis(3));
    let mut pods = Vec::new();
    // Alike replicas: all four share one GPU (four slices a GPU),
    // interchangeably, so none has to wait for kubelet.
    for i in 0..4 {
        pods.push(add_pod(&client, &pod("ml", &format!("c{i}"), "", 1, Some(10))).await);
    }
    let bodies: Vec<_> = pods.iter().map(|p| bind_args(p, "gpu-1")).collect();
    let replies =
        futures::future::join_all(bodies.iter().map(|b| post_json(&ext, "/bind", b))).await;
    server.faults().clear();
    assert!(replies.iter().all(|r| r["Error"] == ""), "{replies:?}");
    let conflicts = server.requests().count_where(|r| r.status == 409);
    assert_eq!(conflicts, 0);
    let (_, metrics) = http(&ext, "GET", "/metrics", "").await;
    assert!(
        metrics.contains("gpupack_extender_bind_conflicts_total 0"),
        "{metrics}"
    );
    ext.shutdown().await;
}
