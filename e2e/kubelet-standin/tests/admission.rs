//! Pod admission and the PodResources API, driven by fake plugins.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{FakePlugin, Preference, devices, options, script};
use kubelet_standin::{
    AdmitError, Call, Container, Kubelet, Options, Order, Pod, RateLimit, Rpc, connect_unix,
};
use proto::podresources::pod_resources_lister_client::PodResourcesListerClient;
use proto::podresources::{
    AllocatableResourcesRequest, GetPodResourcesRequest, ListPodResourcesRequest,
};

const GPU: &str = "example.com/gpu";
const MEM: &str = "example.com/mem";
const WAIT: Duration = Duration::from_secs(10);

/// A kubelet with one registered fake plugin per `(resource, devices, preferred)`.
async fn node(
    dir: &std::path::Path,
    order: Order,
    plugins: &[(&str, usize, bool)],
) -> (Kubelet, Vec<FakePlugin>) {
    let kubelet = Kubelet::new(Options::new(dir).order(order)).await.unwrap();
    let mut fakes = Vec::new();
    for (resource, count, preferred) in plugins {
        let tag = resource.rsplit('/').next().unwrap();
        let env = format!("{}_IDS", tag.to_uppercase());
        let plugin = FakePlugin::serve(
            dir,
            &format!("{tag}.sock"),
            devices(tag, *count),
            options(*preferred),
            &env,
        );
        plugin
            .register(&kubelet.registration_socket(), resource)
            .await
            .unwrap();
        kubelet
            .wait_for_healthy(resource, *count, WAIT)
            .await
            .unwrap();
        fakes.push(plugin);
    }
    (kubelet, fakes)
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn the_plugins_preferred_devices_are_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let (kubelet, plugins) = node(dir.path(), Order::Sorted, &[(GPU, 6, true)]).await;
    let pod = Pod::new("u1", "ns", "p").container(Container::new("c").request(GPU, 2));

    let admitted = kubelet.admit(&pod).await.unwrap();
    let c = admitted.container("c").unwrap();
    // The fake prefers the highest IDs; kubelet alone would take the lowest.
    assert_eq!(c.device_ids(GPU), ids(&["gpu-4", "gpu-5"]));
    assert_eq!(c.env("GPU_IDS"), Some("gpu-4,gpu-5"));

    let preferred = plugins[0].preferred_requests();
    assert_eq!(preferred.len(), 1);
    assert_eq!(preferred[0].container_requests.len(), 1);
    let req = &preferred[0].container_requests[0];
    assert_eq!(req.allocation_size, 2);
    assert_eq!(req.available_device_i_ds.len(), 6);
    assert!(req.must_include_device_i_ds.is_empty());
    let allocated = plugins[0].allocate_requests();
    assert_eq!(allocated.len(), 1);
    let mut sent = allocated[0].container_requests[0].devices_ids.clone();
    sent.sort();
    assert_eq!(sent, ids(&["gpu-4", "gpu-5"]));
    assert_eq!(c.devices[GPU][0].numa_nodes, [1]);
}

#[tokio::test]
async fn too_few_preferred_devices_are_filled_in_and_a_plugin_without_preference_is_not_asked() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = Kubelet::new(Options::new(dir.path()).order(Order::Sorted))
        .await
        .unwrap();
    let stingy = FakePlugin::serve_script(
        dir.path(),
        "gpu.sock",
        devices("gpu", 6),
        script(options(true), "GPU_IDS", Preference::OnlyOne),
    );
    stingy
        .register(&kubelet.registration_socket(), GPU)
        .await
        .unwrap();
    let silent = FakePlugin::serve(
        dir.path(),
        "mem.sock",
        devices("mem", 4),
        options(false),
        "MEM_IDS",
    );
    silent
        .register(&kubelet.registration_socket(), MEM)
        .await
        .unwrap();
    kubelet.wait_for_healthy(GPU, 6, WAIT).await.unwrap();
    kubelet.wait_for_healthy(MEM, 4, WAIT).await.unwrap();

    let pod =
        Pod::new("u1", "ns", "p").container(Container::new("c").request(GPU, 3).request(MEM, 2));
    let c = kubelet
        .admit(&pod)
        .await
        .unwrap()
        .container("c")
        .cloned()
        .unwrap();
    // The one preferred device, then kubelet's own picks.
    assert_eq!(c.device_ids(GPU), ids(&["gpu-0", "gpu-1", "gpu-5"]));
    assert_eq!(c.device_ids(MEM), ids(&["mem-0", "mem-1"]));
    assert!(silent.preferred_requests().is_empty());
    assert_eq!(silent.allocate_requests().len(), 1);
    // Both plugins' settings reach the container.
    assert_eq!(c.env("GPU_IDS"), Some("gpu-0,gpu-1,gpu-5"));
    assert_eq!(c.env("MEM_IDS"), Some("mem-0,mem-1"));
    assert!(c.run.conflicts.is_empty());
}

#[tokio::test]
async fn multi_container_pods_get_one_call_per_container_and_init_devices_are_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (kubelet, plugins) = node(dir.path(), Order::Sorted, &[(GPU, 8, true)]).await;
    let pod = Pod::new("u1", "ns", "p")
        .init_container(Container::new("init").request(GPU, 1))
        .container(Container::new("a").request(GPU, 2))
        .container(Container::new("b").request(GPU, 3))
        .container(Container::new("no-gpu"));

    let admitted = kubelet.admit(&pod).await.unwrap();
    let init = admitted.container("init").unwrap().device_ids(GPU);
    let a = admitted.container("a").unwrap().device_ids(GPU);
    let b = admitted.container("b").unwrap().device_ids(GPU);
    assert_eq!(init, ids(&["gpu-7"]));
    // The first app container reuses the init container's device...
    assert!(a.contains(&init[0]), "{a:?}");
    // ...the second does not get it again, and app containers never share.
    assert!(!b.contains(&init[0]));
    assert!(a.iter().all(|d| !b.contains(d)));
    assert_eq!(a.len() + b.len(), 5);
    assert!(admitted.container("no-gpu").unwrap().devices.is_empty());

    // One container per call, in admission order, each env naming only its own devices.
    let allocs = plugins[0].allocate_requests();
    assert_eq!(allocs.len(), 3);
    assert!(allocs.iter().all(|r| r.container_requests.len() == 1));
    let preferred = plugins[0].preferred_requests();
    assert!(preferred.iter().all(|r| r.container_requests.len() == 1));
    let second = &preferred[1].container_requests[0];
    assert_eq!(second.must_include_device_i_ds, init);
    assert!(second.available_device_i_ds.contains(&init[0]));
    assert_eq!(
        admitted.container("a").unwrap().env("GPU_IDS"),
        Some(a.join(",").as_str())
    );
    assert_eq!(
        admitted.container("b").unwrap().env("GPU_IDS"),
        Some(b.join(",").as_str())
    );
    let calls: Vec<_> = kubelet.calls().into_iter().map(|c| c.container).collect();
    assert_eq!(calls, ["init", "init", "a", "a", "b", "b"]);

    // Admitting the same pod again calls no plugin.
    assert_eq!(kubelet.admit(&pod).await.unwrap(), admitted);
    assert_eq!(plugins[0].allocate_requests().len(), 3);

    // Released devices can be allocated again.
    assert!(kubelet.release("u1"));
    let all = Pod::new("u2", "ns", "q").container(Container::new("c").request(GPU, 8));
    kubelet.admit(&all).await.unwrap();
}

#[tokio::test]
async fn a_sidecars_devices_are_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (kubelet, _plugins) = node(dir.path(), Order::Sorted, &[(GPU, 4, false)]).await;
    let pod = Pod::new("u1", "ns", "p")
        .init_container(Container::new("sidecar").request(GPU, 1).restartable())
        .container(Container::new("a").request(GPU, 1));
    let admitted = kubelet.admit(&pod).await.unwrap();
    assert_eq!(
        admitted.container("sidecar").unwrap().device_ids(GPU),
        ids(&["gpu-0"])
    );
    assert_eq!(
        admitted.container("a").unwrap().device_ids(GPU),
        ids(&["gpu-1"])
    );
}

#[tokio::test]
async fn resources_are_handled_in_the_configured_or_seeded_order() {
    let dir = tempfile::tempdir().unwrap();
    let order = Order::Resources(ids(&[MEM, GPU]));
    let (kubelet, _plugins) = node(dir.path(), order, &[(GPU, 2, true), (MEM, 2, true)]).await;
    let pod =
        Pod::new("u1", "ns", "p").container(Container::new("c").request(GPU, 1).request(MEM, 1));
    let admitted = kubelet.admit(&pod).await.unwrap();
    assert_eq!(admitted.containers[0].resource_order, ids(&[MEM, GPU]));
    let called: Vec<_> = kubelet.calls().into_iter().map(|c| c.resource).collect();
    assert_eq!(called, [MEM, MEM, GPU, GPU]);

    // A random order varies across containers but is fixed by its seed.
    let orders = |seed| async move {
        let dir = tempfile::tempdir().unwrap();
        let (kubelet, _plugins) = node(
            dir.path(),
            Order::Random { seed },
            &[(GPU, 40, false), (MEM, 40, false)],
        )
        .await;
        let mut pod = Pod::new("u", "ns", "p");
        for i in 0..16 {
            pod = pod.container(
                Container::new(format!("c{i}"))
                    .request(GPU, 1)
                    .request(MEM, 1),
            );
        }
        let admitted = kubelet.admit(&pod).await.unwrap();
        admitted
            .containers
            .into_iter()
            .map(|c| c.resource_order)
            .collect::<Vec<_>>()
    };
    let first = orders(42).await;
    assert_eq!(first, orders(42).await);
    assert_eq!(
        first.iter().collect::<BTreeSet<_>>().len(),
        2,
        "both orders occur"
    );
}

#[tokio::test]
async fn a_failed_allocate_names_container_and_resource_and_leaves_nothing_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let order = Order::Resources(ids(&[GPU, MEM]));
    let (kubelet, plugins) = node(dir.path(), order, &[(GPU, 2, false), (MEM, 2, false)]).await;
    plugins[1]
        .script
        .fail_allocate
        .store(true, Ordering::SeqCst);
    let pod = Pod::new("u1", "ns", "p")
        .container(Container::new("first").request(GPU, 1))
        .container(Container::new("second").request(GPU, 1).request(MEM, 1));

    let err = kubelet.admit(&pod).await.unwrap_err();
    match &err {
        AdmitError::Plugin {
            container,
            resource,
            rpc,
            code,
            ..
        } => {
            assert_eq!(
                (container.as_str(), resource.as_str(), *rpc),
                ("second", MEM, Rpc::Allocate)
            );
            assert_eq!(*code, tonic::Code::Internal);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.container(), Some("second"));
    assert_eq!(err.resource(), Some(MEM));
    assert!(kubelet.pods().is_empty());

    // Every GPU is free again.
    plugins[1]
        .script
        .fail_allocate
        .store(false, Ordering::SeqCst);
    let all = Pod::new("u2", "ns", "q").container(Container::new("c").request(GPU, 2));
    kubelet.admit(&all).await.unwrap();
}

#[tokio::test]
async fn too_few_devices_unhealthy_ones_and_unknown_resources_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (kubelet, plugins) = node(dir.path(), Order::Sorted, &[(GPU, 3, true)]).await;
    plugins[0].set_health("gpu-0", false);
    kubelet.wait_for_healthy(GPU, 2, WAIT).await.unwrap();

    let pod = Pod::new("u1", "ns", "p")
        .init_container(Container::new("init").request(GPU, 1))
        .container(Container::new("c").request(GPU, 3));
    let err = kubelet.admit(&pod).await.unwrap_err();
    assert_eq!(
        err,
        AdmitError::Insufficient {
            pod: "ns/p".into(),
            container: "c".into(),
            resource: GPU.into(),
            requested: 3,
            available: 1,
        }
    );
    assert!(kubelet.pods().is_empty());

    let unknown =
        Pod::new("u2", "ns", "q").container(Container::new("c").request("example.com/fpga", 1));
    assert!(matches!(
        kubelet.admit(&unknown).await,
        Err(AdmitError::Unregistered { .. })
    ));

    let dup = Pod::new("u3", "ns", "r")
        .init_container(Container::new("x"))
        .container(Container::new("x"));
    assert!(matches!(
        kubelet.admit(&dup).await,
        Err(AdmitError::InvalidPod { .. })
    ));
    assert_eq!(
        plugins[0].allocate_requests().len(),
        1,
        "only the init container reached Allocate"
    );
}

#[tokio::test]
async fn pre_start_container_is_called_when_the_plugin_requires_it() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = Kubelet::new(Options::new(dir.path()).order(Order::Sorted))
        .await
        .unwrap();
    let mut opts = options(false);
    opts.pre_start_required = true;
    let plugin = FakePlugin::serve(dir.path(), "gpu.sock", devices("gpu", 2), opts, "GPU_IDS");
    plugin
        .register(&kubelet.registration_socket(), GPU)
        .await
        .unwrap();
    kubelet.wait_for_healthy(GPU, 2, WAIT).await.unwrap();
    let pod = Pod::new("u1", "ns", "p").container(Container::new("c").request(GPU, 2));
    kubelet.admit(&pod).await.unwrap();
    let pre = plugin.script.pre_start_requests.lock().unwrap().clone();
    assert_eq!(pre.len(), 1);
    assert_eq!(pre[0].devices_ids, ids(&["gpu-0", "gpu-1"]));
    assert!(matches!(
        kubelet.calls().last().unwrap().call,
        Call::PreStartContainer { .. }
    ));
}

async fn pod_resources(kubelet: &Kubelet) -> PodResourcesListerClient<tonic::transport::Channel> {
    let channel = connect_unix(kubelet.pod_resources_socket().unwrap())
        .await
        .unwrap();
    PodResourcesListerClient::new(channel)
}

#[tokio::test]
async fn pod_resources_list_and_get_reflect_allocations() {
    let dir = tempfile::tempdir().unwrap();
    let (kubelet, _plugins) = node(dir.path(), Order::Sorted, &[(GPU, 4, false)]).await;
    let pod = Pod::new("u1", "ml", "llm")
        .init_container(Container::new("init").request(GPU, 1))
        .init_container(Container::new("proxy").restartable())
        .container(Container::new("server").request(GPU, 2));
    kubelet.admit(&pod).await.unwrap();
    let mut client = pod_resources(&kubelet).await;

    let list = client
        .list(ListPodResourcesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.pod_resources.len(), 1);
    let listed = &list.pod_resources[0];
    assert_eq!(
        (listed.name.as_str(), listed.namespace.as_str()),
        ("llm", "ml")
    );
    // A finished init container is not listed; a sidecar is, first.
    let names: Vec<_> = listed.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["proxy", "server"]);
    let server = &listed.containers[1];
    let ids_and_numa: Vec<_> = server
        .devices
        .iter()
        .map(|d| {
            assert_eq!(d.resource_name, GPU);
            (
                d.device_ids.clone(),
                d.topology.as_ref().unwrap().nodes[0].id,
            )
        })
        .collect();
    assert_eq!(ids_and_numa, [(ids(&["gpu-0"]), 0), (ids(&["gpu-1"]), 0)]);

    let got = client
        .get(GetPodResourcesRequest {
            pod_name: "llm".into(),
            pod_namespace: "ml".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.pod_resources.as_ref(), Some(listed));
    let missing = client
        .get(GetPodResourcesRequest {
            pod_name: "nope".into(),
            pod_namespace: "ml".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.message(), "pod nope in namespace ml not found");

    let allocatable = client
        .get_allocatable_resources(AllocatableResourcesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(allocatable.devices.len(), 4);

    kubelet.release("u1");
    let list = client
        .list(ListPodResourcesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(list.pod_resources.is_empty());
}

#[tokio::test]
async fn pod_resources_is_rate_limited_like_kubelet() {
    let dir = tempfile::tempdir().unwrap();
    let limit = RateLimit {
        qps: 0.001,
        burst: 10,
    };
    let kubelet = Kubelet::new(Options::new(dir.path()).pod_resources_rate_limit(Some(limit)))
        .await
        .unwrap();
    let mut client = pod_resources(&kubelet).await;
    for _ in 0..10 {
        client.list(ListPodResourcesRequest {}).await.unwrap();
    }
    let err = client.list(ListPodResourcesRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert_eq!(err.message(), "rejected by rate limit");
}
