//! Synthetic inventories and pods, shaped like the real ones, for the
//! benchmarks and tests (no cluster needed).

use k8s_openapi::api::core::v1::Pod;
use proto::inventory::{GpuNodeInventory, NodeInventory};
use serde_json::{Value, json};

/// A node of `gpus` 80 GiB H100s on one NVSwitch fabric, two NUMA nodes.
pub fn inventory(node: &str, gpus: u32) -> GpuNodeInventory {
    let mut links = Vec::new();
    for a in 0..gpus {
        for b in a + 1..gpus {
            let pcie = if a / 4 == b / 4 {
                "sameNuma"
            } else {
                "crossSocket"
            };
            links.push(json!({"a": a, "b": b, "nvlinks": 18, "nvswitch": true, "pcie": pcie}));
        }
    }
    let gpus: Vec<Value> = (0..gpus)
        .map(|i| {
            json!({"index": i, "uuid": format!("GPU-{node}-{i}"), "product": "NVIDIA H100 80GB HBM3",
                   "memoryBytes": 80u64 << 30, "pciBusId": format!("00000000:{:02x}:00.0", 0x18 + i),
                   "numaNode": i / 4, "health": "Healthy"})
        })
        .collect();
    let spec: NodeInventory = serde_json::from_value(json!({
        "nodeName": node, "backend": "simulated", "slicesPerGpu": 4,
        "memoryUnitBytes": 1u64 << 30, "gpus": gpus, "links": links
    }))
    .unwrap_or_else(|e| unreachable!("a fixed, valid document: {e}"));
    GpuNodeInventory::for_node(spec)
}

/// A pending pod whose container `server` requests `gpus` GPUs and
/// `memory_units` memory units in total (none: whole GPUs).
pub fn pod(namespace: &str, name: &str, uid: &str, gpus: u32, memory_units: Option<u64>) -> Pod {
    let mut requests = serde_json::Map::new();
    requests.insert("cpu".into(), json!("1"));
    requests.insert(proto::resources::GPU.into(), json!(gpus.to_string()));
    if let Some(m) = memory_units {
        requests.insert(proto::resources::GPU_MEMORY.into(), json!(m.to_string()));
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": {"schedulerName": "gpupack-scheduler", "containers": [{
            "name": "server", "image": "vllm/vllm-openai",
            "resources": {"requests": Value::Object(requests.clone()), "limits": Value::Object(requests)}
        }]},
        "status": {"phase": "Pending"}
    }))
    .unwrap_or_else(|e| unreachable!("a fixed, valid document: {e}"))
}
