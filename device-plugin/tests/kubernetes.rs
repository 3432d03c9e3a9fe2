//! The plugin with the API server stand-in: assignments from pod
//! annotations, inventory publishing, verification, API outages.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use apiserver_standin::{ApiServer, ResourceType};
use common::*;
use k8s_openapi::api::core::v1::Pod as K8sPod;
use kube::Api;
use kube::api::PostParams;
use kubelet_standin::Pod;
use proto::assignment::{ANNOTATION, AssignedGpu, ContainerAssignment, PodAssignment};
use proto::inventory::NodeInventory;

fn assignment(containers: Vec<ContainerAssignment>) -> String {
    PodAssignment {
        version: "v1".into(),
        node: NODE.into(),
        containers,
    }
    .to_json()
}

fn share(inv: &NodeInventory, name: &str, gpus: &[(u32, u64)]) -> ContainerAssignment {
    ContainerAssignment {
        name: name.into(),
        gpus: gpus
            .iter()
            .map(|&(i, gib)| AssignedGpu {
                uuid: inv.gpu_by_index(i).unwrap().uuid.clone(),
                index: i,
                memory_bytes: gib << 30,
            })
            .collect(),
        mig: vec![],
        engine: None,
    }
}

fn k8s_pod(
    name: &str,
    annotation: Option<String>,
    containers: &[(&str, u32, Option<u32>)],
) -> K8sPod {
    let cs: Vec<serde_json::Value> = containers
        .iter()
        .map(|(n, gpus, mem)| {
            let mut limits = serde_json::json!({ "gpupack.io/gpu": gpus.to_string() });
            if let Some(m) = mem {
                limits["gpupack.io/gpu-memory"] = serde_json::json!(m.to_string());
            }
            serde_json::json!({ "name": n, "image": "vllm", "resources": { "limits": limits } })
        })
        .collect();
    let annotations = match annotation {
        Some(a) => serde_json::json!({ ANNOTATION: a }),
        None => serde_json::json!({}),
    };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "ai", "annotations": annotations },
        "spec": { "nodeName": NODE, "containers": cs }
    }))
    .unwrap()
}

async fn api_server(files: &std::path::Path) -> (ApiServer, std::path::PathBuf) {
    let server = ApiServer::start().await.unwrap();
    server.register(ResourceType::gpu_node_inventory());
    let kubeconfig = files.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    (server, kubeconfig)
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn gpus_of(ids: &[String]) -> Vec<String> {
    let mut v: Vec<String> = ids
        .iter()
        .map(|i| i.split("::").next().unwrap().to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigned_pods_get_exactly_their_gpus_and_mismatches_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (server, kubeconfig) = api_server(files.path()).await;
    let kubelet = kubelet(dir.path(), 11).await;
    let kc = kubeconfig.display().to_string();
    let plugin = start_plugin(args(
        dir.path(),
        &simulated("h100-sxm-8x-nvswitch.yaml"),
        &["--kubeconfig", &kc],
    ))
    .await;
    kubelet
        .wait_for_healthy("gpupack.io/gpu-memory", 8 * 79, Duration::from_secs(5))
        .await
        .unwrap();
    kubelet
        .wait_for_healthy("gpupack.io/gpu", 32, Duration::from_secs(5))
        .await
        .unwrap();
    let inv = plugin.snapshots.borrow().inventory.clone();

    // The inventory lands in the API, named after the node.
    let client = server.client().await.unwrap();
    let invs: Api<proto::inventory::GpuNodeInventory> = Api::all(client.clone());
    let t = Instant::now();
    let published = loop {
        if let Ok(Some(o)) = invs.get_opt(NODE).await {
            break o;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "inventory not published"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(published.spec, inv);
    published.validate().unwrap();

    // Three pods, bound in this order: a two-container pod, then two pods
    // sharing GPU 5 with different memory.
    let pods: Api<K8sPod> = Api::namespaced(client.clone(), "ai");
    let a = k8s_pod(
        "a",
        Some(assignment(vec![
            share(&inv, "tp2", &[(2, 30), (3, 30)]),
            share(&inv, "embed", &[(5, 10)]),
        ])),
        &[("tp2", 2, Some(60)), ("embed", 1, None)],
    );
    let b = k8s_pod(
        "b",
        Some(assignment(vec![share(&inv, "server", &[(5, 20)])])),
        &[("server", 1, Some(20))],
    );
    let c = k8s_pod(
        "c",
        Some(assignment(vec![share(&inv, "server", &[(0, 40)])])),
        &[("server", 1, Some(40))],
    );
    let mut created = vec![];
    for p in [a, b, c] {
        created.push(pods.create(&PostParams::default(), &p).await.unwrap());
    }
    wait_for("pod cache", Duration::from_secs(5), || {
        plugin.handoff.lock().len() == 3
    })
    .await;

    // kubelet admits the last pod first: its devices still identify it.
    for (k8s, expect) in [
        (&created[2], vec![("server", vec![0u32])]),
        (&created[0], vec![("tp2", vec![2, 3]), ("embed", vec![5])]),
        (&created[1], vec![("server", vec![5])]),
    ] {
        let pod = Pod::from_k8s(k8s).unwrap();
        let admitted = kubelet.admit(&pod).await.unwrap();
        for (name, indexes) in expect {
            let c = admitted.container(name).unwrap();
            let mut want: Vec<String> = indexes
                .iter()
                .map(|&i| inv.gpu_by_index(i).unwrap().uuid.clone())
                .collect();
            assert_eq!(
                c.env("NVIDIA_VISIBLE_DEVICES"),
                Some(want.join(",").as_str()),
                "{name}"
            );
            want.sort();
            assert_eq!(gpus_of(&c.device_ids("gpupack.io/gpu")), want, "{name}");
            if name != "embed" {
                assert_eq!(
                    gpus_of(&c.device_ids("gpupack.io/gpu-memory")),
                    want,
                    "{name}"
                );
            }
        }
    }
    let b_server = kubelet
        .container(created[1].metadata.uid.as_deref().unwrap(), "server")
        .unwrap();
    assert_eq!(
        b_server.env("GPUPACK_GPU_MEMORY_BYTES"),
        Some("21474836480")
    );
    assert_eq!(b_server.device_ids("gpupack.io/gpu-memory").len(), 20);
    // Let verification pass over the correct allocations first.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, metrics) = http_get(plugin.http_addr, "/metrics").await;
    assert!(metrics.contains(r#"gpupack_device_plugin_allocations_total{resource="gpupack.io/gpu",outcome="assigned"} 4"#), "{metrics}");
    assert!(!metrics.contains("handoff_mismatches_total{"), "{metrics}");

    // A pod whose assignment no longer matches what it holds is reported:
    // log, metric and an Event on the pod.
    let mut moved = pods.get("c").await.unwrap();
    moved.metadata.annotations.as_mut().unwrap().insert(
        ANNOTATION.into(),
        assignment(vec![share(&inv, "server", &[(7, 40)])]),
    );
    pods.replace("c", &PostParams::default(), &moved)
        .await
        .unwrap();
    let t = Instant::now();
    loop {
        let (_, metrics) = http_get(plugin.http_addr, "/metrics").await;
        if metrics.contains(
            r#"gpupack_device_plugin_handoff_mismatches_total{resource="gpupack.io/gpu"} 1"#,
        ) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = ResourceType::namespaced("events.k8s.io", "v1", "events", "Event");
    let t = Instant::now();
    loop {
        let found = server
            .store()
            .list(&events, Some("ai"))
            .iter()
            .any(|e| e["reason"] == "GpuAssignmentMismatch" && e["regarding"]["name"] == "c");
        if found {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "no mismatch event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    plugin.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_away_keeps_kubelet_served_and_publishes_later() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (server, kubeconfig) = api_server(files.path()).await;
    server.stop().await;
    let kubelet = kubelet(dir.path(), 12).await;
    let kc = kubeconfig.display().to_string();
    let plugin = start_plugin(args(
        dir.path(),
        &simulated("l40s-pcie-4x-2socket.yaml"),
        &["--kubeconfig", &kc],
    ))
    .await;
    kubelet
        .wait_for_healthy("gpupack.io/gpu", 16, Duration::from_secs(5))
        .await
        .unwrap();
    kubelet
        .wait_for_healthy("gpupack.io/gpu-memory", 4 * 44, Duration::from_secs(5))
        .await
        .unwrap();
    // An unknown pod is still admitted (after the short wait for the cache).
    let pod = Pod::new("u-away", "default", "p")
        .container(kubelet_standin::Container::new("c").request("gpupack.io/gpu", 2));
    let admitted = kubelet.admit(&pod).await.unwrap();
    assert!(
        admitted
            .container("c")
            .unwrap()
            .env("NVIDIA_VISIBLE_DEVICES")
            .is_some()
    );
    let (status, _) = http_get(plugin.http_addr, "/readyz").await;
    assert_eq!(status, 200);

    server.restart().await.unwrap();
    let client = server.client().await.unwrap();
    let invs: Api<proto::inventory::GpuNodeInventory> = Api::all(client);
    let t = Instant::now();
    while invs.get_opt(NODE).await.ok().flatten().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "inventory not published after the API came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = http_get(plugin.http_addr, "/metrics").await;
    assert!(
        !metrics.contains("gpupack_device_plugin_inventory_publish_failures_total 0"),
        "{metrics}"
    );
    plugin.stop().await.unwrap();
}
