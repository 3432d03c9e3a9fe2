//! The plugin against the kubelet stand-in over real unix sockets:
//! registration, device lists, health, restarts, admission without the
//! Kubernetes API.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use device_plugin::server::handoff::{AssignmentState, ContainerRequests, PodRecord};
use kubelet_standin::{Container, Kubelet, Pod};
use proto::resources::Resource;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_each_resource_with_options_and_numa_topology() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = kubelet(dir.path(), 1).await;
    let plugin = start_plugin(args(
        dir.path(),
        &simulated("h100-sxm-8x-nvswitch.yaml"),
        &[],
    ))
    .await;
    kubelet
        .wait_for_healthy("gpupack.io/gpu", 32, Duration::from_secs(5))
        .await
        .unwrap();
    kubelet
        .wait_for_healthy("gpupack.io/gpu-memory", 8 * 79, Duration::from_secs(5))
        .await
        .unwrap();

    let regs = kubelet.registrations();
    assert_eq!(regs.len(), 2, "{regs:?}");
    for r in &regs {
        assert!(r.accepted(), "{r:?}");
        assert_eq!(r.version, "v1beta1");
        let opts = r.options.unwrap();
        assert!(opts.get_preferred_allocation_available);
        assert!(!opts.pre_start_required);
    }
    let gpu = regs
        .iter()
        .find(|r| r.resource == "gpupack.io/gpu")
        .unwrap();
    assert_eq!(gpu.endpoint, "gpupack-gpu.sock");
    let mem = regs
        .iter()
        .find(|r| r.resource == "gpupack.io/gpu-memory")
        .unwrap();
    assert_eq!(mem.endpoint, "gpupack-gpu-memory.sock");

    let devices = kubelet.resource("gpupack.io/gpu").unwrap().devices;
    let inv = plugin.snapshots.borrow().inventory.clone();
    for d in &devices {
        let uuid = d.id.split("::").next().unwrap();
        let want = inv.gpu(uuid).unwrap().numa_node.unwrap();
        assert_eq!(
            d.topology.as_ref().unwrap().nodes[0].id,
            i64::from(want),
            "{}",
            d.id
        );
    }
    let (status, body) = http_get(plugin.http_addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = http_get(plugin.http_addr, "/metrics").await;
    assert!(
        metrics.contains(
            r#"gpupack_device_plugin_devices{resource="gpupack.io/gpu",state="healthy"} 32"#
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"gpupack_device_plugin_registrations_total{resource="gpupack.io/gpu"} 1"#),
        "{metrics}"
    );
    plugin.stop().await.unwrap();
    assert!(
        !dir.path().join("gpupack-gpu.sock").exists(),
        "own sockets are removed on stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mig_profiles_get_their_own_resources() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = kubelet(dir.path(), 2).await;
    let plugin = start_plugin(args(dir.path(), &simulated("a100-mig.yaml"), &[])).await;
    kubelet
        .wait_for_healthy("gpupack.io/mig-1g.10gb", 2, Duration::from_secs(5))
        .await
        .unwrap();
    kubelet
        .wait_for_healthy("gpupack.io/mig-3g.40gb", 1, Duration::from_secs(5))
        .await
        .unwrap();
    kubelet
        .wait_for_healthy("gpupack.io/gpu", 4, Duration::from_secs(5))
        .await
        .unwrap();
    let pod = Pod::new("u-mig", "default", "embed")
        .container(Container::new("c").request("gpupack.io/mig-1g.10gb", 1));
    let admitted = kubelet.admit(&pod).await.unwrap();
    let c = admitted.container("c").unwrap();
    let id = &c.device_ids("gpupack.io/mig-1g.10gb")[0];
    assert!(id.starts_with("MIG-"));
    assert_eq!(c.env("NVIDIA_VISIBLE_DEVICES"), Some(id.as_str()));
    assert_eq!(c.env("GPUPACK_MIG_UUIDS"), Some(id.as_str()));
    plugin.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_changes_reach_kubelet_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    // Not in the device plugin directory: kubelet empties that on start.
    let files = tempfile::tempdir().unwrap();
    let node_file = files.path().join("node.yaml");
    std::fs::copy(simulated("l40s-pcie-4x-2socket.yaml"), &node_file).unwrap();
    let kubelet = kubelet(dir.path(), 3).await;
    let plugin = start_plugin(args(dir.path(), &node_file, &[])).await;
    kubelet
        .wait_for_healthy("gpupack.io/gpu", 16, Duration::from_secs(5))
        .await
        .unwrap();

    // Admin endpoint, by index.
    let t = Instant::now();
    let (status, uuid) = admin_post(&plugin, "/admin/gpus/2/unhealthy?reason=test").await;
    assert_eq!(status, 200, "{uuid}");
    kubelet
        .wait_for_healthy("gpupack.io/gpu", 12, Duration::from_secs(1))
        .await
        .unwrap();
    kubelet
        .wait_for_healthy("gpupack.io/gpu-memory", 3 * 44, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let unhealthy: Vec<String> = kubelet
        .resource("gpupack.io/gpu")
        .unwrap()
        .devices
        .iter()
        .filter(|d| d.health == "Unhealthy")
        .map(|d| d.id.clone())
        .collect();
    assert!(
        unhealthy.iter().all(|id| id.starts_with(&uuid)),
        "{unhealthy:?}"
    );
    let (status, _) = admin_post(&plugin, &format!("/admin/gpus/{uuid}/healthy")).await;
    assert_eq!(status, 200);
    kubelet
        .wait_for_healthy("gpupack.io/gpu", 16, Duration::from_secs(1))
        .await
        .unwrap();
    let (status, body) = admin_post(&plugin, "/admin/gpus/GPU-nope/unhealthy").await;
    assert_eq!(status, 404, "{body}");

    // Editing the simulated file.
    let text = std::fs::read_to_string(&node_file).unwrap();
    let faulty = text.replace(
        "- { numaNode: 0, pciBusId: \"00000000:4A:00.0\" }",
        "- { numaNode: 0, pciBusId: \"00000000:4A:00.0\", health: Unhealthy, healthReason: XID 79 }",
    );
    assert_ne!(faulty, text);
    let t = Instant::now();
    std::fs::write(&node_file, &faulty).unwrap();
    kubelet
        .wait_for_healthy("gpupack.io/gpu", 12, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));
    // An invalid edit is ignored; the last good state stays.
    std::fs::write(&node_file, "gpus: [ { memory: lots } ]\n").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(kubelet.healthy("gpupack.io/gpu"), 12);
    std::fs::write(&node_file, &text).unwrap();
    kubelet
        .wait_for_healthy("gpupack.io/gpu", 16, Duration::from_secs(1))
        .await
        .unwrap();
    plugin.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_restarts_are_followed_by_re_registration_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = kubelet(dir.path(), 4).await;
    let plugin = start_plugin(args(
        dir.path(),
        &simulated("l40s-pcie-4x-2socket.yaml"),
        &[],
    ))
    .await;
    kubelet
        .wait_for_registrations(2, Duration::from_secs(5))
        .await
        .unwrap();
    for round in 1..=3 {
        kubelet.restart().await.unwrap();
        let t = Instant::now();
        kubelet
            .wait_for_registrations(2 * (round + 1), Duration::from_secs(1))
            .await
            .unwrap();
        kubelet
            .wait_for_healthy("gpupack.io/gpu", 16, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "round {round}: {:?}",
            t.elapsed()
        );
    }
    // A plugin socket deleted behind the plugin's back is also noticed:
    // served again and registered again. (Counted from now: a restart may
    // have been answered with more than one round.)
    let before = kubelet.accepted_registrations();
    let socket = dir.path().join("gpupack-gpu.sock");
    std::fs::remove_file(&socket).unwrap();
    kubelet
        .wait_for_registrations(before + 2, Duration::from_secs(1))
        .await
        .unwrap();
    let t = Instant::now();
    while !socket.exists() && t.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(socket.exists(), "the deleted socket was not served again");
    plugin.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_a_kubelet_that_is_not_up_yet() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = Kubelet::stopped(kubelet_options(dir.path(), 5));
    let plugin = start_plugin(args(
        dir.path(),
        &simulated("l40s-pcie-4x-2socket.yaml"),
        &[],
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!plugin.ready.borrow().is_ready());
    let (status, _) = http_get(plugin.http_addr, "/readyz").await;
    assert_eq!(status, 503);
    let t = Instant::now();
    kubelet.start().await.unwrap();
    kubelet
        .wait_for_registrations(2, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));
    plugin.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_without_assignment_get_kubelets_choice_on_nvlink() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = kubelet(dir.path(), 6).await;
    let plugin = start_plugin(args(dir.path(), &simulated("a100-sxm-8x-nvlink.yaml"), &[])).await;
    kubelet
        .wait_for_healthy("gpupack.io/gpu", 32, Duration::from_secs(5))
        .await
        .unwrap();
    kubelet
        .wait_for_healthy("gpupack.io/gpu-memory", 8 * 80, Duration::from_secs(5))
        .await
        .unwrap();
    // The pod cache knows the pod (placed by another scheduler: no assignment).
    plugin.handoff.update(|h| {
        h.upsert(PodRecord {
            uid: "u-1".into(),
            namespace: "default".into(),
            name: "tp4".into(),
            order: 1,
            assignment: AssignmentState::None,
            containers: vec![ContainerRequests {
                name: "server".into(),
                requests: vec![(Resource::Gpu, 4), (Resource::GpuMemory, 40)],
            }],
            terminated: false,
            admitted: false,
        })
    });
    let pod = Pod::new("u-1", "default", "tp4").container(
        Container::new("server")
            .request("gpupack.io/gpu", 4)
            .request("gpupack.io/gpu-memory", 40),
    );
    let admitted = kubelet.admit(&pod).await.unwrap();
    let c = admitted.container("server").unwrap();
    let inv = plugin.snapshots.borrow().inventory.clone();
    let mut islands: Vec<u32> = c
        .device_ids("gpupack.io/gpu")
        .iter()
        .map(|id| inv.gpu(id.split("::").next().unwrap()).unwrap().index / 4)
        .collect();
    islands.dedup();
    assert_eq!(
        islands.len(),
        1,
        "a 4-GPU request stays on one NVLink island"
    );
    assert_eq!(
        c.env("GPUPACK_GPU_COUNT"),
        Some("4"),
        "{:?} {:?}",
        c.resource_order,
        c.responses
    );
    let mem_gpus: std::collections::BTreeSet<String> = c
        .device_ids("gpupack.io/gpu-memory")
        .iter()
        .map(|id| id.split("::").next().unwrap().to_string())
        .collect();
    assert_eq!(
        mem_gpus.len(),
        4,
        "memory follows the container's GPUs, 10 units each"
    );
    let slice_gpus: std::collections::BTreeSet<String> = c
        .device_ids("gpupack.io/gpu")
        .iter()
        .map(|id| id.split("::").next().unwrap().to_string())
        .collect();
    assert_eq!(mem_gpus, slice_gpus);
    assert_eq!(
        c.env("GPUPACK_GPU_MEMORY_BYTES"),
        Some("10737418240,10737418240,10737418240,10737418240")
    );
    plugin.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_kubernetes_calls_do_not_wait_for_a_pod_cache() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = kubelet(dir.path(), 8).await;
    let mut a = args(dir.path(), &simulated("a100-sxm-8x-nvlink.yaml"), &[]);
    let i = a.iter().position(|s| s == "--handoff-wait-ms").unwrap();
    a[i + 1] = "3000".into();
    let plugin = start_plugin(a).await;
    kubelet
        .wait_for_healthy("gpupack.io/gpu-memory", 8 * 80, Duration::from_secs(5))
        .await
        .unwrap();
    let pod = Pod::new("u-nk", "default", "plain").container(
        Container::new("c")
            .request("gpupack.io/gpu", 1)
            .request("gpupack.io/gpu-memory", 10),
    );
    let t = Instant::now();
    let admitted = kubelet.admit(&pod).await.unwrap();
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "--no-kubernetes admission took {took:?}: no pod cache can ever answer"
    );
    assert_eq!(
        admitted.container("c").unwrap().env("GPUPACK_GPU_COUNT"),
        Some("1")
    );
    plugin.stop().await.unwrap();
}

/// kubelet 1.25 and older call the plugin with its socket's path as the
/// HTTP/2 `:authority`; the plugin's gRPC server refuses that, so kubelet
/// never reads a device list. The plugin says so on `/readyz` and in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_kubelet_that_cannot_call_the_plugin_is_named_on_readyz() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = Kubelet::new(kubelet_options(dir.path(), 9).legacy_socket_authority(true))
        .await
        .unwrap();
    let plugin = start_plugin(args(
        dir.path(),
        &simulated("l40s-pcie-4x-2socket.yaml"),
        &[],
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http_get(plugin.http_addr, "/readyz").await;
        if status == 503 && body.contains("kubelet 1.26 or newer") {
            assert!(body.contains(":authority"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readyz still {status}: {body}; kubelet saw {:?}",
            kubelet.failed_plugin_calls()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failures = kubelet.failed_plugin_calls();
    assert!(
        failures.iter().any(|(_, e)| e.contains("PROTOCOL_ERROR")),
        "the plugin refuses the legacy authority: {failures:?}"
    );
    assert_eq!(kubelet.healthy("gpupack.io/gpu"), 0);
    plugin.stop().await.unwrap();
}
