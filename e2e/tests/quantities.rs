//! Every part reads an extended-resource quantity as the same count: the
//! extender's demand, the device plugin's pod cache and the kubelet
//! stand-in, for every form Kubernetes accepts for a whole number and for
//! the canonical form the API server stores it in (`1000` reads back as
//! `1k`). A part that went back to its own parser (plain integers only,
//! say) fails here on the first `k`, exponent or binary form.
#![allow(clippy::unwrap_used)]

use k8s_openapi::api::core::v1::Pod;
use proptest::prelude::*;
use serde_json::json;

/// Ways to write `n` that Kubernetes accepts for an extended resource.
fn forms(n: u64) -> Vec<String> {
    let mut out = vec![
        n.to_string(),
        format!("+{n}"),
        format!("{n}.0"),
        format!("{n}000m"),
    ];
    if n.is_multiple_of(1000) {
        out.push(format!("{}k", n / 1000));
        out.push(format!("{}e3", n / 1000));
        out.push(format!("{}E3", n / 1000));
    } else {
        out.push(format!("{}.{:03}k", n / 1000, n % 1000));
    }
    if n.is_multiple_of(1024) {
        out.push(format!("{}Ki", n / 1024));
    }
    if n.is_multiple_of(1_000_000) {
        out.push(format!("{}M", n / 1_000_000));
    }
    out
}

/// The form the API stand-in stores, as the real API server does.
fn stored(text: &str) -> String {
    let mut pod = pod_json(text);
    apiserver_standin::quantities::canonicalize(
        &apiserver_standin::ResourceType::namespaced("", "v1", "pods", "Pod"),
        &mut pod,
    )
    .unwrap();
    pod["spec"]["containers"][0]["resources"]["limits"]["gpupack.io/gpu-memory"]
        .as_str()
        .unwrap()
        .to_string()
}

fn pod_json(memory: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ai", "uid": "u1"},
        "spec": {"nodeName": "n1", "containers": [{"name": "server", "resources": {
            "limits": {"gpupack.io/gpu": "1", "gpupack.io/gpu-memory": memory}}}]}
    })
}

/// (extender, device plugin, kubelet stand-in) memory units.
fn counts(text: &str) -> (Option<u64>, Option<u64>, Option<u64>) {
    let pod: Pod = serde_json::from_value(pod_json(text)).unwrap();
    let extender = scheduler_ext::demand::PodNeeds::from_pod(&pod)
        .ok()
        .and_then(|n| match n.containers.first()?.memory {
            scheduler_ext::demand::MemoryPerGpu::Units(u) => Some(u),
            _ => None,
        });
    let plugin = device_plugin::kubernetes::pods::record_from_pod(&pod, "n1", 1).and_then(|r| {
        r.containers[0]
            .requests
            .iter()
            .find(|(res, _)| *res == proto::resources::Resource::GpuMemory)
            .map(|(_, n)| u64::from(*n))
    });
    let kubelet = kubelet_standin::Pod::from_k8s(&pod).ok().and_then(|p| {
        p.containers[0]
            .requests
            .get("gpupack.io/gpu-memory")
            .map(|n| u64::from(*n))
    });
    (extender, plugin, kubelet)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_part_reads_the_same_count(n in prop_oneof![1u64..2_000, (1u64..200).prop_map(|k| k * 1000), (1u64..64).prop_map(|k| k * 1024)]) {
        for text in forms(n) {
            let want = Some(n);
            prop_assert_eq!(counts(&text), (want, want, want), "as written: {}", text);
            let canonical = stored(&text);
            prop_assert_eq!(counts(&canonical), (want, want, want), "as stored: {}", canonical);
        }
    }

    #[test]
    fn what_is_not_whole_is_refused_by_all(n in 1u64..10_000) {
        let text = format!("{n}500m");
        let (extender, plugin, kubelet) = counts(&text);
        prop_assert_eq!((extender, plugin, kubelet), (None, None, None));
    }
}

#[test]
fn the_api_server_writes_1000_as_1k() {
    assert_eq!(stored("1000"), "1k");
    assert_eq!(counts("1k"), (Some(1000), Some(1000), Some(1000)));
}
