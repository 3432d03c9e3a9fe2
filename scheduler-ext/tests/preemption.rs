//! The extender's own GPU preemption against the Kubernetes API stand-in:
//! the fewest lower-priority pods are evicted through the Eviction API, the
//! freed GPUs wait for the preemptor, budgets and priorities are honoured,
//! and one preemption happens per pod whatever the replicas.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use scheduler_ext::synthetic::{inventory, pod};
use support::*;

/// A pod of `gpus` GPUs and `units` GiB in total, of a PriorityClass
/// (admission resolves its priority and preemption policy).
fn prio(name: &str, gpus: u32, units: u64, class: &str) -> Pod {
    let mut p = pod("ml", name, "", gpus, Some(units));
    p.spec.as_mut().unwrap().priority_class_name = Some(class.into());
    p
}

/// `batch` (0), `serving` (1000), and `serving-polite` (1000, never preempts).
async fn priority_classes(client: &Client) {
    for (name, value, policy) in [
        ("batch", 0, "PreemptLowerPriority"),
        ("serving", 1000, "PreemptLowerPriority"),
        ("serving-polite", 1000, "Never"),
    ] {
        let pc: PriorityClass = serde_json::from_value(serde_json::json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "preemptionPolicy": policy
        }))
        .unwrap();
        Api::<PriorityClass>::all(client.clone())
            .create(&PostParams::default(), &pc)
            .await
            .unwrap();
    }
}

async fn names(client: &Client) -> Vec<String> {
    let mut n: Vec<String> = Api::<Pod>::namespaced(client.clone(), "ml")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    n.sort();
    n
}

async fn events_with(client: &Client, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), "ml")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

/// Two low-priority pods, 60 GiB each on the two 80 GiB GPUs of `gpu-1`,
/// bound and running.
async fn full_node(client: &Client, ext: &scheduler_ext::Extender) -> (Pod, Pod) {
    add_node(client, &inventory("gpu-1", 2)).await;
    priority_classes(client).await;
    let mut low = Vec::new();
    for name in ["low-a", "low-b"] {
        let mut p = prio(name, 1, 60, "batch");
        p.metadata.labels = Some([("app".to_string(), "batch".to_string())].into());
        let p = add_pod(client, &p).await;
        // The second waits until the watch shows kubelet admitting the first.
        eventually("bound", || async {
            post_json(ext, "/bind", &bind_args(&p, "gpu-1")).await["Error"] == ""
        })
        .await;
        kubelet_admits_bound_pods(client, "ml").await;
        low.push(p);
    }
    sees_both_bound(ext).await;
    let b = low.pop().unwrap();
    (low.pop().unwrap(), b)
}

/// Waits until `ext`'s pod watch shows both pods of [`full_node`] bound.
async fn sees_both_bound(ext: &scheduler_ext::Extender) {
    eventually("the watch sees both bound", || async {
        ext.state.read().unwrap().bound_on("gpu-1").len() == 2
    })
    .await;
}

/// The note of the first PreemptionBlocked Event, once there is one.
async fn blocked_note(client: &Client) -> String {
    eventually("a PreemptionBlocked Event", || async {
        !events_with(client, "PreemptionBlocked").await.is_empty()
    })
    .await;
    events_with(client, "PreemptionBlocked").await[0]
        .note
        .clone()
        .unwrap()
}

async fn feasible(ext: &scheduler_ext::Extender, p: &Pod) -> serde_json::Value {
    post_json(ext, "/filter", &args(p, &["gpu-1"])).await
}

#[tokio::test]
async fn a_high_priority_pod_evicts_the_fewest_pods_and_gets_their_gpu() {
    let (server, client) = cluster().await;
    let ext = extender(&client, "a").await;
    full_node(&client, &ext).await;
    let urgent = add_pod(&client, &prio("urgent", 1, 70, "serving")).await;
    let r = feasible(&ext, &urgent).await;
    assert_eq!(r["NodeNames"], serde_json::json!([]), "{r}");
    // One victim is enough: exactly one of the two goes.
    eventually("one victim evicted", || async {
        names(&client).await.len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left = names(&client).await;
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&"urgent".to_string()));
    let stored = Api::<Pod>::namespaced(client.clone(), "ml")
        .get("urgent")
        .await
        .unwrap();
    assert_eq!(
        stored
            .status
            .as_ref()
            .unwrap()
            .nominated_node_name
            .as_deref(),
        Some("gpu-1")
    );
    let claim = scheduler_ext::preemption::claim_of(&stored).unwrap();
    assert_eq!((claim.node.as_str(), claim.victims.len()), ("gpu-1", 1));
    // A third pod does not get the freed GPU in between...
    let third = add_pod(&client, &prio("third", 1, 30, "batch")).await;
    eventually("the eviction reaches the ledger", || async {
        ext.state.read().unwrap().bound_on("gpu-1").len() == 1
    })
    .await;
    let r = feasible(&ext, &third).await;
    assert_eq!(r["NodeNames"], serde_json::json!([]), "{r}");
    let r = post_json(&ext, "/bind", &bind_args(&third, "gpu-1")).await;
    assert!(
        r["Error"].as_str().unwrap().contains("no longer fits"),
        "{r}"
    );
    // ... the preemptor does.
    let r = feasible(&ext, &urgent).await;
    assert_eq!(r["NodeNames"], serde_json::json!(["gpu-1"]), "{r}");
    let r = post_json(&ext, "/bind", &bind_args(&urgent, "gpu-1")).await;
    assert_eq!(r["Error"], "", "{r}");
    eventually("Events on the preemptor and the victim", || async {
        !events_with(&client, "Preempting").await.is_empty()
            && !events_with(&client, "Preempted").await.is_empty()
    })
    .await;
    let note = events_with(&client, "Preempting").await[0]
        .note
        .clone()
        .unwrap();
    assert!(note.contains("on node gpu-1 to free GPU"), "{note}");
    assert_eq!(server.requests().count("create", "pods/eviction"), 1);
    let (_, metrics) = http(&ext, "GET", "/metrics", "").await;
    assert!(
        metrics.contains(r#"gpupack_extender_preemptions_total{decision="preempted"} 1"#),
        "{metrics}"
    );
    ext.shutdown().await;
}

#[tokio::test]
async fn equal_priority_and_preemption_policy_never_evict_nothing() {
    let (server, client) = cluster().await;
    let ext = extender(&client, "a").await;
    full_node(&client, &ext).await;
    let peer = add_pod(&client, &prio("peer", 1, 70, "batch")).await;
    let polite = add_pod(&client, &prio("polite", 1, 70, "serving-polite")).await;
    for p in [&peer, &polite] {
        let r = feasible(&ext, p).await;
        assert_eq!(r["NodeNames"], serde_json::json!([]), "{r}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(names(&client).await.len(), 4);
    assert_eq!(server.requests().count("create", "pods/eviction"), 0);
    ext.shutdown().await;
}

#[tokio::test]
async fn a_budget_that_forbids_the_eviction_leaves_the_pod_pending_with_the_reason() {
    let (server, client) = cluster().await;
    let ext = extender(&client, "a").await;
    full_node(&client, &ext).await;
    budget(&client, "batch", 2, 0).await;
    let urgent = add_pod(&client, &prio("urgent", 1, 70, "serving")).await;
    let r = feasible(&ext, &urgent).await;
    assert_eq!(r["NodeNames"], serde_json::json!([]), "{r}");
    let note = blocked_note(&client).await;
    assert!(note.contains("PodDisruptionBudgets forbid"), "{note}");
    assert_eq!(names(&client).await.len(), 3);
    assert_eq!(server.requests().count("create", "pods/eviction"), 0);
    ext.shutdown().await;
}

/// A PodDisruptionBudget over `app=<app>` pods in `ml` whose status (as
/// the disruption controller writes it) allows `allowed` disruptions.
async fn budget(client: &Client, app: &str, healthy: i32, allowed: i32) {
    let pdbs = Api::<PodDisruptionBudget>::namespaced(client.clone(), "ml");
    let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": app, "namespace": "ml"},
        "spec": {"minAvailable": healthy - allowed, "selector": {"matchLabels": {"app": app}}}
    }))
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    let status = serde_json::json!({"status": {
        "disruptionsAllowed": allowed, "currentHealthy": healthy,
        "desiredHealthy": healthy - allowed, "expectedPods": healthy, "observedGeneration": 1
    }});
    pdbs.patch_status(
        app,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&status),
    )
    .await
    .unwrap();
}

/// A budget that allows one disruption lets one of its pods go, beside a
/// budget of other pods that allows none.
#[tokio::test]
async fn a_budget_with_disruptions_left_allows_the_eviction() {
    let (server, client) = cluster().await;
    let ext = extender(&client, "a").await;
    full_node(&client, &ext).await;
    budget(&client, "elsewhere", 3, 0).await;
    budget(&client, "batch", 2, 1).await;
    let urgent = add_pod(&client, &prio("urgent", 1, 70, "serving")).await;
    let r = feasible(&ext, &urgent).await;
    assert_eq!(r["NodeNames"], serde_json::json!([]), "{r}");
    eventually("one victim evicted", || async {
        names(&client).await.len() == 2
    })
    .await;
    assert_eq!(server.requests().count("create", "pods/eviction"), 1);
    assert!(events_with(&client, "PreemptionBlocked").await.is_empty());
    ext.shutdown().await;
}

/// A budget that lost its allowance after the extender read it (the API
/// refuses the eviction with 429): the preemption stops at once with the
/// reason, the freed-GPU promise is withdrawn, and nothing is evicted.
#[tokio::test]
async fn a_refused_eviction_stops_the_preemption_at_once() {
    let (server, client) = cluster().await;
    let ext = extender(&client, "a").await;
    full_node(&client, &ext).await;
    server.faults().refuse_evictions(1);
    let urgent = add_pod(&client, &prio("urgent", 1, 70, "serving")).await;
    let r = feasible(&ext, &urgent).await;
    assert_eq!(r["NodeNames"], serde_json::json!([]), "{r}");
    // Within `eventually`'s 10 s: a client that retried the 429 would
    // still be backing off.
    let note = blocked_note(&client).await;
    assert!(note.contains("is refused"), "{note}");
    assert_eq!(names(&client).await.len(), 3);
    let uid = urgent.uid().unwrap();
    eventually("the nomination withdrawn", || async {
        ext.state.read().unwrap().nomination_for(&uid).is_none()
    })
    .await;
    ext.shutdown().await;
}

#[tokio::test]
async fn two_replicas_preempt_once_for_a_pod() {
    let (server, client) = cluster().await;
    let a = extender(&client, "a").await;
    let b = extender(&client, "b").await;
    full_node(&client, &a).await;
    sees_both_bound(&b).await;
    let urgent = add_pod(&client, &prio("urgent", 1, 70, "serving")).await;
    // kube-scheduler behind each replica tries the pod at once.
    let (ra, rb) = tokio::join!(feasible(&a, &urgent), feasible(&b, &urgent));
    assert_eq!(ra["NodeNames"], serde_json::json!([]));
    assert_eq!(rb["NodeNames"], serde_json::json!([]));
    eventually("one victim evicted", || async {
        names(&client).await.len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // And again, once more from each, while the first is under way.
    feasible(&a, &urgent).await;
    feasible(&b, &urgent).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(names(&client).await.len(), 2);
    assert_eq!(server.requests().count("create", "pods/eviction"), 1);
    a.shutdown().await;
    b.shutdown().await;
}
