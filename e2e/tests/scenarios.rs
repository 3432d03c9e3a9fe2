//! The scenarios, on the local target (what CI runs): the real device
//! plugin and extender binaries, the kubelet and API server stand-ins, and
//! a driver replaying kube-scheduler's extender calls. With
//! `E2E_TARGET=cluster` the cluster scenario runs against `KUBECONFIG`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::local::{LocalCluster, LocalOptions, Stop, identity};
use e2e::process::Programs;
use e2e::spec::{self, NodeSpec, PodBuilder};
use e2e::view::ClusterView;
use proto::resources::GPU;

fn programs() -> Programs {
    Programs::new(env!("CARGO_BIN_EXE_e2e"))
}

/// One scenario at a time: each runs several processes, and CI has two
/// cores; run in parallel they would measure the machine, not gpupack.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start(nodes: Vec<NodeSpec>, extenders: usize) -> LocalCluster {
    let mut o = LocalOptions::new(nodes);
    o.extenders = extenders;
    LocalCluster::start(programs(), o).await.unwrap()
}

fn running(names: &[String]) -> impl Fn(&ClusterView) -> bool + '_ {
    move |v| {
        names
            .iter()
            .all(|n| v.phase(n).as_deref() == Some("Running"))
    }
}

fn names(pods: &[PodBuilder]) -> Vec<String> {
    pods.iter().map(|p| p.name().to_string()).collect()
}

fn assert_clean(view: &ClusterView) {
    let f = view.check();
    assert!(
        f.is_clean(),
        "invariants broken: {f:#?}\n{}",
        view.summary()
    );
}

/// The ledger an extender reports equals the memory bound pods hold.
async fn assert_ledger_matches(cluster: &LocalCluster, i: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let view = cluster.view().await.unwrap();
        let mut bound: BTreeMap<String, u64> = BTreeMap::new();
        for ((node, uuid), holders) in view.bookings() {
            let mig = view
                .inventory(&node)
                .and_then(|inv| {
                    inv.spec
                        .gpus
                        .iter()
                        .flat_map(|g| &g.mig_instances)
                        .find(|m| m.uuid == uuid)
                })
                .map(|m| m.memory_bytes);
            let held: u64 = holders.iter().map(|(_, b)| mig.unwrap_or(*b)).sum();
            *bound.entry(node).or_insert(0) += held;
        }
        let ledger = cluster.ledger(i).await.unwrap();
        let ledger: BTreeMap<String, u64> = ledger.into_iter().filter(|(_, v)| *v > 0).collect();
        let bound: BTreeMap<String, u64> = bound.into_iter().filter(|(_, v)| *v > 0).collect();
        if ledger == bound {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "extender {i}'s ledger {ledger:?} differs from what is bound {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every API call of a component is allowed by what each way of installing
/// gpupack (kustomize directories, chart renders) grants the service account
/// its container runs as.
fn assert_rbac_covers(cluster: &LocalCluster) {
    let renders = match e2e::manifests::all_renders() {
        Ok(r) => r,
        Err(e) => panic!("rendering the manifests: {e:#}"),
    };
    let records = cluster.api.requests().all();
    for (user, container) in [
        (identity::DEVICE_PLUGIN, "device-plugin"),
        (identity::SCHEDULER_EXT, "extender"),
    ] {
        let calls = e2e::rbac::calls_of(&records, user);
        assert!(
            !calls.is_empty(),
            "{user} made no API calls; is it using its kubeconfig?"
        );
        for render in &renders {
            let source = &render.source;
            let (workload, _) = e2e::manifests::container(&render.objects, container).unwrap();
            let account = workload
                .pod
                .service_account_name
                .clone()
                .unwrap_or_default();
            let grants = e2e::rbac::grants_of(&render.objects, &workload.namespace, &account);
            let denied: Vec<String> = calls
                .iter()
                .filter(|c| !e2e::rbac::permitted(&grants, c))
                .map(|c| c.to_string())
                .collect();
            assert!(
                denied.is_empty(),
                "{source}: ServiceAccount {account} of {} does not allow what {user} did: \
                 {denied:#?}",
                workload.name
            );
        }
    }
}

/// 1. The LLM mix on four nodes: every pod lands, TP pods on NVLink, each
/// container's environment names exactly its GPUs and memory, no GPU's
/// memory over-committed, the extender's ledger equals what is bound, and
/// RBAC covers every call the components made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_mix_lands_everywhere_with_exact_environments() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = start(spec::default_cluster(), 1).await;
    let workload = spec::default_workload();
    let names = names(&workload);
    cluster.submit(&workload).await.unwrap();
    let view = cluster
        .wait_for(
            "every pod running",
            Duration::from_secs(60),
            running(&names),
        )
        .await
        .unwrap();
    assert_clean(&view);
    let admitted: usize = view.admitted.as_ref().unwrap().values().map(Vec::len).sum();
    assert_eq!(
        admitted,
        names.len(),
        "each pod admitted once by its node's kubelet"
    );
    for tp in ["llama-70b-tp4-a", "mixtral-tp2-a", "mixtral-tp2-b"] {
        let pod = view.pod(tp).unwrap();
        let a = ClusterView::assignment(pod).unwrap();
        assert!(
            a.containers[0].gpus.len() > 1,
            "{tp} got {:?}",
            a.containers[0].gpus
        );
    }
    for mig in ["mig-1g-a", "mig-3g"] {
        assert_eq!(view.node_of(mig).as_deref(), Some("a100-mig"));
    }
    assert_ledger_matches(&cluster, 0).await;
    assert_rbac_covers(&cluster);
    let stats = cluster.drivers[0].stats();
    assert!(
        stats.prioritize_calls > 0 && stats.filter_calls >= names.len() as u64,
        "{stats:?}"
    );
}

/// 2. kubelet restarts while pods are admitted: the plugins register again
/// and no device is given twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_restart_during_admission_double_allocates_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = start(vec![NodeSpec::new("h100-a", spec::H100_NVSWITCH)], 1).await;
    let first: Vec<PodBuilder> = (0..8)
        .map(|i| PodBuilder::explicit(&format!("before-{i}"), 1, 20))
        .collect();
    cluster.submit(&first).await.unwrap();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        cluster.restart_kubelet(0).await.unwrap();
    }
    // Pods whose admission met the restart fail as on kubelet
    // (UnexpectedAdmissionError); none may stay unadmitted or share a device.
    let names_first = names(&first);
    let view = cluster
        .wait_for(
            "every pod admitted or rejected",
            Duration::from_secs(60),
            |v| {
                names_first
                    .iter()
                    .all(|n| matches!(v.phase(n).as_deref(), Some("Running" | "Failed")))
            },
        )
        .await
        .unwrap();
    assert_clean(&view);
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.healthy_gpu_devices(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "the device plugin did not register again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after: Vec<PodBuilder> = (0..4)
        .map(|i| PodBuilder::explicit(&format!("after-{i}"), 1, 20))
        .collect();
    cluster.submit(&after).await.unwrap();
    let view = cluster
        .wait_for(
            "pods after the restart running",
            Duration::from_secs(60),
            running(&names(&after)),
        )
        .await
        .unwrap();
    assert_clean(&view);
}

/// 2b. The device plugin is killed (a crash) or stopped (a rolling update)
/// and started again while pods run on its GPUs, and new pods arrive within
/// a second of the restart: the restarted plugin knows which devices the
/// running pods hold, and no container receives another pod's GPUs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_plugin_restart_hands_no_running_pods_gpus_to_new_pods() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = start(vec![NodeSpec::new("h100-a", spec::H100_NVSWITCH)], 1).await;
    // Running servers on four GPUs, with more memory than the newcomers.
    let running_pods: Vec<PodBuilder> = (0..4)
        .map(|i| PodBuilder::explicit(&format!("server-{i}"), 1, 51))
        .collect();
    cluster.submit(&running_pods).await.unwrap();
    let mut all = names(&running_pods);
    cluster
        .wait_for("servers running", Duration::from_secs(60), running(&all))
        .await
        .unwrap();
    for (round, stop) in [Stop::Kill, Stop::Terminate].into_iter().enumerate() {
        cluster.restart_device_plugin_with(0, stop).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let newcomers: Vec<PodBuilder> = (0..3)
            .map(|i| PodBuilder::explicit(&format!("new-{round}-{i}"), 1, 10))
            .collect();
        cluster.submit(&newcomers).await.unwrap();
        all.extend(names(&newcomers));
        let view = cluster
            .wait_for(
                &format!("newcomers after a {stop:?} running"),
                Duration::from_secs(90),
                running(&all),
            )
            .await
            .unwrap();
        assert_clean(&view);
    }
    // A rolling update under a wave: pods arriving while the plugin stops
    // and starts again. Those kubelet admits while the plugin is away fail
    // as on kubelet (UnexpectedAdmissionError, no devices); none may get
    // another pod's GPUs.
    let wave: Vec<PodBuilder> = (0..6)
        .map(|i| PodBuilder::explicit(&format!("wave-{i}"), 1, 8))
        .collect();
    cluster.submit(&wave).await.unwrap();
    cluster
        .restart_device_plugin_with(0, Stop::Terminate)
        .await
        .unwrap();
    let wave_names = names(&wave);
    let view = cluster
        .wait_for(
            "the wave admitted or rejected after a rolling update",
            Duration::from_secs(90),
            |v| {
                wave_names
                    .iter()
                    .all(|n| matches!(v.phase(n).as_deref(), Some("Running" | "Failed")))
                    && all.iter().all(|n| v.phase(n).as_deref() == Some("Running"))
            },
        )
        .await
        .unwrap();
    assert_clean(&view);
}

/// 3. The extender is killed and restarted, repeatedly, mid-run: every pod
/// lands, nothing is booked twice, no assignment is lost, and the ledger
/// rebuilt from the API equals what is bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extender_killed_and_restarted_loses_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = start(
        vec![
            NodeSpec::new("h100-a", spec::H100_NVSWITCH),
            NodeSpec::new("l40s-a", spec::L40S_PCIE),
        ],
        1,
    )
    .await;
    let mut all = Vec::new();
    for wave in 0..3 {
        let pods: Vec<PodBuilder> = (0..6)
            .map(|i| match i % 3 {
                0 => PodBuilder::explicit(&format!("w{wave}-explicit-{i}"), 1, 10),
                1 => PodBuilder::model(
                    &format!("w{wave}-small-{i}"),
                    "Qwen/Qwen2.5-0.5B-Instruct",
                    1,
                    4096,
                ),
                _ => PodBuilder::explicit(&format!("w{wave}-pair-{i}"), 2, 16),
            })
            .collect();
        cluster.submit(&pods).await.unwrap();
        all.extend(pods);
        tokio::time::sleep(Duration::from_millis(100 + 150 * wave)).await;
        cluster.kill_extender(0).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        cluster.restart_extender(0).await.unwrap();
    }
    let view = cluster
        .wait_for(
            "every pod running",
            Duration::from_secs(90),
            running(&names(&all)),
        )
        .await
        .unwrap();
    assert_clean(&view);
    assert_ledger_matches(&cluster, 0).await;
}

/// 3b. Pods created while the extender is down fail with kube-scheduler's
/// SchedulerError and wait in its unschedulable pool, which nothing in a
/// quiet cluster flushes for five minutes; once the extender is back and
/// ready it re-queues them, and they land within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_failed_while_the_extender_was_down_are_retried_once_it_is_back() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut cluster = start(vec![NodeSpec::new("h100-a", spec::H100_NVSWITCH)], 1).await;
    cluster.kill_extender(0).await;
    let pods: Vec<PodBuilder> = (0..2)
        .map(|i| PodBuilder::explicit(&format!("during-outage-{i}"), 1, 20))
        .collect();
    cluster.submit(&pods).await.unwrap();
    let wanted = names(&pods);
    cluster
        .wait_for(
            "the scheduler failing them on the unreachable extender",
            Duration::from_secs(20),
            |v| {
                wanted.iter().all(|n| {
                    v.pod_condition(n, "PodScheduled")
                        .is_some_and(|(status, reason)| {
                            status == "False" && reason == "SchedulerError"
                        })
                })
            },
        )
        .await
        .unwrap();
    let back = Instant::now();
    cluster.restart_extender(0).await.unwrap();
    let view = cluster
        .wait_for(
            "pods running soon after the extender is back",
            Duration::from_secs(30),
            running(&wanted),
        )
        .await
        .unwrap();
    assert_clean(&view);
    eprintln!(
        "running {:.1} s after the extender restart",
        back.elapsed().as_secs_f64()
    );
}

/// H100 nodes behind `extenders` replicas, the scenario PriorityClasses,
/// and on each `(node, prefix)` eight batch pods of 60 GiB (one per GPU,
/// kept to the node by `nodeSelector`, labelled `app=<prefix>`) running.
async fn nodes_full_of_batch(
    extenders: usize,
    nodes: &[(&str, &str)],
) -> (LocalCluster, Vec<String>, ClusterView) {
    let cluster = start(
        nodes
            .iter()
            .map(|(node, _)| NodeSpec::new(node, spec::H100_NVSWITCH))
            .collect(),
        extenders,
    )
    .await;
    spec::create_priority_classes(&cluster.client)
        .await
        .unwrap();
    let batch: Vec<PodBuilder> = nodes
        .iter()
        .flat_map(|(node, prefix)| {
            (0..8).map(move |i| {
                PodBuilder::explicit(&format!("{prefix}-{i}"), 1, 60)
                    .priority_class(spec::BATCH_CLASS)
                    .label("app", prefix)
                    .on_node(node)
            })
        })
        .collect();
    cluster.submit(&batch).await.unwrap();
    let batch_names = names(&batch);
    let view = cluster
        .wait_for(
            "every batch pod running",
            Duration::from_secs(90),
            running(&batch_names),
        )
        .await
        .unwrap();
    (cluster, batch_names, view)
}

/// Issue 16: a high-priority TP-2 pod on a node full of batch pods evicts the
/// fewest of them that free two NVLink-connected GPUs (through the Eviction
/// API) and then runs on those GPUs; nothing else takes them in between;
/// equal priority and `preemptionPolicy: Never` evict nothing; with two
/// extender replicas behind two schedulers, the pod is preempted for once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_priority_tp2_pod_preempts_the_fewest_batch_pods() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (cluster, batch_names, before) = nodes_full_of_batch(2, &[("h100-a", "batch")]).await;
    let gpu_of = |v: &ClusterView, n: &str| {
        v.pod(n)
            .and_then(ClusterView::assignment)
            .map(|a| {
                a.containers[0]
                    .gpus
                    .iter()
                    .map(|g| g.uuid.clone())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    // Equal priority, and a pod that never preempts: nothing is evicted.
    let peer = PodBuilder::explicit("peer", 2, 140).priority_class(spec::BATCH_CLASS);
    let polite = PodBuilder::explicit("polite", 2, 140).priority_class(spec::POLITE_CLASS);
    cluster.submit(&[peer, polite]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cluster.api.requests().count("create", "pods/eviction"), 0);
    let urgent = PodBuilder::explicit("urgent-tp2", 2, 140).priority_class(spec::SERVING_CLASS);
    cluster.submit(&[urgent]).await.unwrap();
    let view = cluster
        .wait_for(
            "the serving pod running",
            Duration::from_secs(90),
            running(&["urgent-tp2".to_string()]),
        )
        .await
        .unwrap();
    let evicted: Vec<&String> = batch_names
        .iter()
        .filter(|n| view.pod(n).is_none())
        .collect();
    assert_eq!(evicted.len(), 2, "the fewest victims: {evicted:?}");
    let mut freed: Vec<String> = evicted.iter().flat_map(|n| gpu_of(&before, n)).collect();
    let mut got = gpu_of(&view, "urgent-tp2");
    freed.sort();
    got.sort();
    assert_eq!(got, freed, "the preemptor runs on the victims' GPUs");
    assert_eq!(cluster.api.requests().count("create", "pods/eviction"), 2);
    for n in ["peer", "polite"] {
        assert_eq!(view.node_of(n), None, "{n} took GPUs it may not");
    }
    assert_clean(&view);
    // The extender reports through events.k8s.io/v1 (the stand-in keeps
    // those apart from core/v1 Events).
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(cluster.client.clone(), spec::NAMESPACE);
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|e| Some((e.regarding?.name?, e.reason?, e.note.unwrap_or_default())))
            .collect::<Vec<_>>();
        let on = |pod: &str, reason: &str| seen.iter().any(|(p, r, _)| p == pod && r == reason);
        if on("urgent-tp2", "Preempting") && evicted.iter().all(|v| on(v, "Preempted")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let note = seen
        .iter()
        .find(|(p, r, _)| p == "urgent-tp2" && r == "Preempting")
        .map(|(_, _, n)| n.clone())
        .unwrap_or_default();
    assert!(note.contains("on node h100-a to free GPU"), "{seen:?}");
    assert!(
        evicted
            .iter()
            .all(|v| seen.iter().any(|(p, r, _)| p == *v && r == "Preempted")),
        "{seen:?}"
    );
    assert_rbac_covers(&cluster);
}

/// A PodDisruptionBudget over the pods labelled `app=<app>` that allows
/// `allowed` more disruptions, its status written as the disruption
/// controller would for eight healthy pods (the API server clears a status
/// given on create).
async fn disruption_budget(cluster: &LocalCluster, app: &str, allowed: i32) {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let pdbs =
        kube::Api::<PodDisruptionBudget>::namespaced(cluster.client.clone(), spec::NAMESPACE);
    let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": app, "namespace": spec::NAMESPACE},
        "spec": {"minAvailable": 8 - allowed, "selector": {"matchLabels": {"app": app}}}
    }))
    .unwrap();
    pdbs.create(&Default::default(), &pdb).await.unwrap();
    let status = serde_json::json!({"status": {
        "disruptionsAllowed": allowed, "currentHealthy": 8,
        "desiredHealthy": 8 - allowed, "expectedPods": 8, "observedGeneration": 1
    }});
    pdbs.patch_status(app, &Default::default(), &kube::api::Patch::Merge(&status))
        .await
        .unwrap();
}

/// The note of the first events.k8s.io/v1 Event with `reason` about `pod`,
/// waiting up to 20 s for it.
async fn event_note(cluster: &LocalCluster, pod: &str, reason: &str) -> Option<String> {
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(cluster.client.clone(), spec::NAMESPACE);
    for _ in 0..100 {
        let found = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod)
            });
        if let Some(e) = found {
            return Some(e.note.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Issue 16: PodDisruptionBudgets steer preemption. On h100-a a budget
/// allows no eviction, on h100-b one allows two: the first serving TP-2 pod
/// evicts two pods of h100-b (none of h100-a) and runs there; the second
/// (smaller, so that both nodes pass kube-scheduler's own resource filter)
/// finds both budgets exhausted, so nothing more is evicted and it stays
/// Pending with the reason in an Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disruption_budgets_steer_preemption_to_another_node_or_keep_the_pod_pending() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (cluster, batch_names, _) =
        nodes_full_of_batch(1, &[("h100-a", "kept"), ("h100-b", "spare")]).await;
    disruption_budget(&cluster, "kept", 0).await;
    disruption_budget(&cluster, "spare", 2).await;
    let created = Instant::now();
    let first = PodBuilder::explicit("urgent-1", 2, 140).priority_class(spec::SERVING_CLASS);
    cluster.submit(&[first]).await.unwrap();
    let view = cluster
        .wait_for(
            "the first serving pod running",
            Duration::from_secs(90),
            running(&["urgent-1".to_string()]),
        )
        .await
        .unwrap();
    eprintln!(
        "preemptor running {:.2} s after it was created",
        created.elapsed().as_secs_f64()
    );
    assert_eq!(view.node_of("urgent-1").as_deref(), Some("h100-b"));
    let evicted: Vec<&String> = batch_names
        .iter()
        .filter(|n| view.pod(n).is_none())
        .collect();
    assert_eq!(evicted.len(), 2, "{evicted:?}");
    assert!(
        evicted.iter().all(|n| n.starts_with("spare-")),
        "{evicted:?}"
    );

    let second = PodBuilder::explicit("urgent-2", 2, 100).priority_class(spec::SERVING_CLASS);
    cluster.submit(&[second]).await.unwrap();
    let blocked = event_note(&cluster, "urgent-2", "PreemptionBlocked")
        .await
        .expect("a PreemptionBlocked Event on urgent-2");
    assert!(blocked.contains("PodDisruptionBudgets forbid"), "{blocked}");
    assert!(
        blocked.contains("h100-a") && blocked.contains("h100-b"),
        "{blocked}"
    );
    let view = cluster.view().await.unwrap();
    assert_eq!(view.node_of("urgent-2"), None);
    assert_eq!(cluster.api.requests().count("create", "pods/eviction"), 2);
    assert!(
        batch_names
            .iter()
            .filter(|n| !evicted.contains(n))
            .all(|n| view.phase(n).as_deref() == Some("Running"))
    );
    assert_clean(&view);
}

/// Issue 17, item 5: alike replicas created at once (a Deployment's) bind
/// in one go, not in waves behind kubelet admission, with kube-scheduler's
/// own backoffs; the hand-off guarantee holds (clean invariants).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alike_replicas_bind_at_once_not_in_waves() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut o = LocalOptions::new(vec![
        NodeSpec::new("h100-a", spec::H100_NVSWITCH),
        NodeSpec::new("h100-b", spec::H100_NVSWITCH),
    ]);
    o.kube_scheduler_backoff = true;
    let cluster = LocalCluster::start(programs(), o).await.unwrap();
    let pods: Vec<PodBuilder> = (0..6)
        .map(|i| PodBuilder::explicit(&format!("replica-{i}"), 1, 20))
        .collect();
    let wanted = names(&pods);
    let created = Instant::now();
    cluster.submit(&pods).await.unwrap();
    cluster
        .wait_for("every replica bound", Duration::from_secs(60), |v| {
            wanted.iter().all(|n| v.node_of(n).is_some())
        })
        .await
        .unwrap();
    let bound_after = created.elapsed();
    let view = cluster
        .wait_for(
            "every replica running",
            Duration::from_secs(60),
            running(&wanted),
        )
        .await
        .unwrap();
    let running_after = created.elapsed();
    let stats = cluster.drivers[0].stats();
    eprintln!(
        "6 alike replicas: all bound after {:.2} s, all running after {:.2} s, {} bind rejections",
        bound_after.as_secs_f64(),
        running_after.as_secs_f64(),
        stats.bind_errors
    );
    assert_clean(&view);
    assert_eq!(stats.bind_errors, 0, "{:?}", stats.failures);
    assert!(bound_after < Duration::from_secs(2), "{bound_after:?}");
}

/// 4. Two extender replicas, each behind its own scheduler, both binding
/// the same pods at once: no double booking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_extender_replicas_never_double_book() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = start(
        vec![
            NodeSpec::new("h100-a", spec::H100_NVSWITCH),
            NodeSpec::new("l40s-a", spec::L40S_PCIE),
        ],
        2,
    )
    .await;
    // More demand than fits, so the replicas compete for the last memory.
    let pods: Vec<PodBuilder> = (0..30)
        .map(|i| PodBuilder::explicit(&format!("p-{i}"), 1, 24))
        .collect();
    cluster.submit(&pods).await.unwrap();
    let names = names(&pods);
    // 8 H100 hold 3 each, 4 L40S hold 1 each. A bind that must wait for
    // kubelet to admit an alike pod is retried after a backoff, so a
    // moment with every bound pod running can come before the last binds:
    // wait for all 28 (then check below that no more than that run).
    let view = cluster
        .wait_for("scheduling settled", Duration::from_secs(60), |v| {
            v.running() >= 28
                && names
                    .iter()
                    .all(|n| v.node_of(n).is_none() || v.phase(n).as_deref() == Some("Running"))
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let view = cluster.view().await.unwrap_or(view);
    assert_clean(&view);
    assert_eq!(view.running(), 28, "{}", view.summary());
    let binds: u64 = cluster.drivers.iter().map(|d| d.stats().binds_ok).sum();
    assert_eq!(binds, 28, "each pod bound exactly once");
}

/// 5. A GPU turns unhealthy: no new pod lands on it; once it recovers it
/// takes pods again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_gpu_takes_no_pods_until_it_recovers() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = start(vec![NodeSpec::new("l40s-a", spec::L40S_PCIE)], 1).await;
    cluster.set_gpu_health(0, 0, false).await.unwrap();
    cluster
        .wait_for(
            "GPU 0 unhealthy in the inventory",
            Duration::from_secs(20),
            |v| {
                v.inventory("l40s-a")
                    .is_some_and(|i| !i.spec.gpus[0].health.is_healthy())
            },
        )
        .await
        .unwrap();
    let pods: Vec<PodBuilder> = (0..4)
        .map(|i| PodBuilder::explicit(&format!("g-{i}"), 1, 40))
        .collect();
    cluster.submit(&pods).await.unwrap();
    let view = cluster
        .wait_for("three pods running", Duration::from_secs(30), |v| {
            v.running() == 3
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let view = cluster.view().await.unwrap_or(view);
    assert_eq!(view.running(), 3, "{}", view.summary());
    let gpu0 = view.inventory("l40s-a").unwrap().spec.gpus[0].uuid.clone();
    assert!(
        !view.bookings().keys().any(|(_, u)| *u == gpu0),
        "a pod landed on the unhealthy GPU: {:?}",
        view.bookings()
    );
    cluster.set_gpu_health(0, 0, true).await.unwrap();
    let view = cluster
        .wait_for(
            "the fourth pod running",
            Duration::from_secs(30),
            running(&names(&pods)),
        )
        .await
        .unwrap();
    assert!(view.bookings().keys().any(|(_, u)| *u == gpu0));
    assert_clean(&view);
}

/// 6. Bad input: malformed annotations, an unknown model, impossible
/// requests. Each pod gets an Event with the reason and stays Pending;
/// nothing else changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_leaves_pods_pending_with_the_reason() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = start(vec![NodeSpec::new("h100-a", spec::H100_NVSWITCH)], 1).await;
    let bad = vec![
        PodBuilder::model("bad-tp", "meta-llama/Llama-3.1-8B-Instruct", 1, 4096)
            .annotation(proto::annotations::TENSOR_PARALLEL_SIZE, "two"),
        PodBuilder::model("unknown-model", "acme/NoSuchModel-13B", 1, 4096),
        PodBuilder::explicit("too-many-gpus", 9, 90),
        PodBuilder::explicit("too-much-memory", 1, 200),
        PodBuilder::explicit("uneven-memory", 2, 3),
    ];
    let good = vec![PodBuilder::explicit("good", 1, 10)];
    cluster.submit(&bad).await.unwrap();
    cluster.submit(&good).await.unwrap();
    let bad_names = names(&bad);
    let view = cluster
        .wait_for(
            "good pod running, bad pods explained",
            Duration::from_secs(30),
            |v| {
                v.phase("good").as_deref() == Some("Running")
                    && bad_names.iter().all(|n| !v.events_of(n).is_empty())
            },
        )
        .await
        .unwrap();
    for n in &bad_names {
        assert_eq!(view.node_of(n), None, "{n} was bound");
        let pod = view.pod(n).unwrap();
        assert!(
            ClusterView::assignment(pod).is_none(),
            "{n} got an assignment"
        );
        let events = view.events_of(n);
        assert!(events.iter().all(|(_, m)| !m.is_empty()), "{n}: {events:?}");
    }
    let tp = view.events_of("bad-tp");
    assert!(
        tp.iter().any(|(_, m)| m.contains("tensor-parallel-size")),
        "the event names the annotation: {tp:?}"
    );
    let unknown = view.events_of("unknown-model");
    assert!(
        unknown.iter().any(|(_, m)| m.contains("NoSuchModel")),
        "{unknown:?}"
    );
    assert_clean(&view);
    assert_eq!(view.bookings().len(), 1, "only the good pod holds memory");
    assert_ledger_matches(&cluster, 0).await;
}

/// 7. API faults: conflicts on writes, slow responses and a burst of
/// 503s; everything converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_conflicts_and_latency_converge() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = start(
        vec![
            NodeSpec::new("h100-a", spec::H100_NVSWITCH),
            NodeSpec::new("a100-mig", spec::A100_MIG),
        ],
        1,
    )
    .await;
    cluster.api.faults().conflict_probability(0.3, 11);
    cluster.api.faults().latency(Duration::from_millis(20));
    cluster.api.faults().fail_next(503, 5);
    let pods: Vec<PodBuilder> = (0..10)
        .map(|i| match i % 3 {
            0 => PodBuilder::model(
                &format!("m-{i}"),
                "meta-llama/Llama-3.1-8B-Instruct",
                1,
                4096,
            ),
            1 => PodBuilder::explicit(&format!("e-{i}"), 2, 40),
            // The A100 has two 1g.10gb instances and one 2g.20gb.
            _ => PodBuilder::mig(
                &format!("mig-{i}"),
                if i == 8 { "2g.20gb" } else { "1g.10gb" },
            ),
        })
        .collect();
    // The harness's own writes may meet injected conflicts too: retry.
    for p in &pods {
        let mut tries = 0;
        while let Err(e) = cluster.submit(std::slice::from_ref(p)).await {
            tries += 1;
            assert!(tries < 20, "creating {}: {e:#}", p.name());
        }
    }
    let view = cluster
        .wait_for(
            "every pod running under faults",
            Duration::from_secs(90),
            running(&names(&pods)),
        )
        .await
        .unwrap();
    let injected = cluster.api.faults().injected();
    assert!(
        injected.conflicts > 0,
        "no conflict was injected: {injected:?}"
    );
    cluster.api.faults().clear();
    assert_clean(&view);
    assert_ledger_matches(&cluster, 0).await;
    let _ = GPU;
}

/// The estimate, made here without the extender, of a model served as the
/// model scenarios below annotate it: `PodBuilder::model` with 8192 tokens
/// (16 sequences) on vLLM 0.19.
fn estimate_as_served(model: &estimator::ModelSpec) -> estimator::Estimate {
    estimator::estimate(
        model,
        &estimator::ServingParams {
            max_model_len: Some(8192),
            max_num_seqs: Some(16),
            engine: "vllm@0.19".parse().unwrap(),
            ..Default::default()
        },
    )
    .unwrap()
}

/// A model outside the catalog, a fine-tune on the Hub: the extender sizes
/// it from the model's own config and safetensors headers (read from a
/// stand-in of the Hub's file API through `HF_ENDPOINT`), answering the
/// filter at once while the files are fetched, and the pod lands with the
/// memory those files call for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_outside_the_catalog_is_sized_from_the_hub_and_lands() {
    use hub_standin::checkpoint::{Scheme, llama_tensors};
    use hub_standin::{HubStandin, Repo, checkpoint_files};
    use proto::annotations;

    const MODEL: &str = "NousResearch/Hermes-3-Llama-3.1-8B";
    let _serial = ONE_AT_A_TIME.lock().await;
    // The fixture shared with model-source's tests (its attribution is in
    // that folder's README).
    let config = include_str!(
        "../../model-source/tests/fixtures/hub/NousResearch/Hermes-3-Llama-3.1-8B/config.json"
    );
    let tensors = llama_tensors(&serde_json::from_str(config).unwrap(), Scheme::Bf16);
    let repo = Repo::default()
        .file("config.json", config)
        .files(checkpoint_files(&tensors, 4));
    let hub = HubStandin::start(BTreeMap::from([(MODEL.to_string(), repo)]))
        .await
        .unwrap();
    assert!(
        estimator::lookup(MODEL).is_err(),
        "{MODEL} must be outside the catalog"
    );

    let mut options = LocalOptions::new(vec![NodeSpec::new("h100-a", spec::H100_NVSWITCH)]);
    options.hub_endpoint = Some(hub.endpoint());
    let cluster = LocalCluster::start(programs(), options).await.unwrap();
    let pod =
        PodBuilder::model("hermes", MODEL, 1, 8192).annotation(annotations::ENGINE, "vllm@0.19");
    cluster.submit(std::slice::from_ref(&pod)).await.unwrap();
    let view = cluster
        .wait_for(
            "the fine-tune running",
            Duration::from_secs(60),
            running(&names(std::slice::from_ref(&pod))),
        )
        .await
        .unwrap();
    assert_clean(&view);
    assert!(hub.requests() > 0, "the extender never read the Hub");

    // The estimate of the same files, made here without the extender.
    let source = model_source::Hub::new(model_source::HubSettings {
        endpoint: hub.endpoint(),
        token: None,
        revision: "main".into(),
        timeout: Duration::from_secs(5),
        cache: None,
    })
    .unwrap();
    let model = model_source::resolve(&source.repo(MODEL).unwrap(), MODEL)
        .await
        .unwrap();
    let e = estimate_as_served(&model);
    let gib = proto::resources::DEFAULT_MEMORY_UNIT_BYTES;
    let expected = e.per_gpu.total_bytes.div_ceil(gib) * gib;
    let a = ClusterView::assignment(view.pod("hermes").unwrap()).unwrap();
    let held: Vec<u64> = a.containers[0]
        .gpus
        .iter()
        .map(|g| g.memory_bytes)
        .collect();
    assert_eq!(
        held,
        vec![expected],
        "the pod holds {held:?}; its files call for {} GiB",
        expected / gib
    );
    // vLLM 0.19 keeps its CUDA context and graphs outside
    // --gpu-memory-utilization: the flag handed over (checked against the
    // container's environment by assert_clean) leaves room for them.
    let gpu_total = view.inventories[0]
        .spec
        .gpu(&a.containers[0].gpus[0].uuid)
        .unwrap()
        .memory_bytes;
    let sized = a.containers[0]
        .engine
        .expect("the server's engine is sized");
    assert_eq!(
        sized.memory_flag,
        e.memory_flag(expected, gpu_total).ten_thousandths()
    );
    let outside = e.overhead_detail.runtime_bytes + e.overhead_detail.cuda_graph_bytes;
    assert!(
        u64::from(sized.memory_flag) * gpu_total / 10_000 + outside <= expected,
        "flag {} lets vLLM hold more than the grant",
        sized.memory_flag
    );
    assert_eq!(sized.kv_cache_bytes, e.per_gpu.kv_cache_bytes);
}

/// An air-gapped cluster: no Hub, the model's `config.json` and safetensors
/// index in a ConfigMap the pod names in `gpupack.io/model-config`. The
/// extender reads it (as its RBAC allows), sizes the weights from the
/// index's `total_size`, and the pod lands with that memory; a pod naming a
/// ConfigMap that does not exist stays Pending with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_in_a_config_map_is_sized_without_the_hub() {
    use hub_standin::checkpoint::{Scheme, llama_tensors, stored_bytes};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};
    use proto::annotations;

    let _serial = ONE_AT_A_TIME.lock().await;
    let config = include_str!(
        "../../model-source/tests/fixtures/hub/NousResearch/Hermes-3-Llama-3.1-8B/config.json"
    );
    let tensors = llama_tensors(&serde_json::from_str(config).unwrap(), Scheme::Bf16);
    let index = serde_json::json!({
        "metadata": {"total_size": stored_bytes(&tensors)},
        "weight_map": {"lm_head.weight": "model-00004-of-00004.safetensors"}
    })
    .to_string();
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "support-8b"},
        "data": {"config.json": config, "model.safetensors.index.json": index}
    }))
    .unwrap();

    // No Hub at all: the extenders run offline.
    let cluster = start(vec![NodeSpec::new("h100-a", spec::H100_NVSWITCH)], 1).await;
    Api::<ConfigMap>::namespaced(cluster.client.clone(), spec::NAMESPACE)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    let pod = PodBuilder::model("support", "acme/support-8b", 1, 8192)
        .annotation(annotations::ENGINE, "vllm@0.19")
        .annotation(annotations::MODEL_CONFIG, "support-8b");
    let missing = PodBuilder::model("missing", "acme/support-8b", 1, 8192)
        .annotation(annotations::MODEL_CONFIG, "no-such-config");
    cluster.submit(&[pod, missing]).await.unwrap();
    let view = cluster
        .wait_for(
            "the model from the ConfigMap running",
            Duration::from_secs(60),
            running(&["support".to_string()]),
        )
        .await
        .unwrap();
    assert_clean(&view);

    let files = model_source::InMemory::new(
        "ConfigMap",
        [
            ("config.json".to_string(), config.as_bytes().to_vec()),
            (
                "model.safetensors.index.json".to_string(),
                index.into_bytes(),
            ),
        ],
    );
    let model = model_source::resolve(&files, "acme/support-8b")
        .await
        .unwrap();
    assert_eq!(
        model.checkpoint.as_ref().map(|c| c.total_bytes()),
        Some(stored_bytes(&tensors))
    );
    let e = estimate_as_served(&model);
    let gib = proto::resources::DEFAULT_MEMORY_UNIT_BYTES;
    let a = ClusterView::assignment(view.pod("support").unwrap()).unwrap();
    assert_eq!(
        a.containers[0]
            .gpus
            .iter()
            .map(|g| g.memory_bytes)
            .collect::<Vec<_>>(),
        vec![e.per_gpu.total_bytes.div_ceil(gib) * gib]
    );
    let view = cluster
        .wait_for(
            "the pod naming a missing ConfigMap told why",
            Duration::from_secs(30),
            |v| {
                v.events_of("missing")
                    .iter()
                    .any(|(_, m)| m.contains("no-such-config not found"))
            },
        )
        .await
        .unwrap();
    assert_eq!(view.phase("missing").as_deref(), Some("Pending"));
    assert_rbac_covers(&cluster);
}

/// The cluster target: the LLM mix against a real cluster (`E2E_TARGET=cluster`
/// and `KUBECONFIG`, e.g. after `daemonset/kind/run.sh`). Skipped otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_target_llm_mix() {
    if !e2e::cluster::selected() {
        eprintln!("skipped: set E2E_TARGET=cluster and KUBECONFIG to run against a real cluster");
        return;
    }
    let cluster = e2e::cluster::RealCluster::connect().await.unwrap();
    let workload = spec::default_workload();
    let names = names(&workload);
    cluster.submit(&workload).await.unwrap();
    let view = cluster
        .wait_for(
            "every pod running",
            Duration::from_secs(300),
            running(&names),
        )
        .await
        .unwrap();
    assert_clean(&view);
}
