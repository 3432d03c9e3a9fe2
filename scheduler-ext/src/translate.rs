//! Translation between gpupack's documents (inventory, assignment) and the
//! placement core's types (`NodeSpec`, `Allocation`).
//!
//! The core knows nothing of wire formats; this is the only place that maps
//! one onto the other, so a format change touches one file.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use placement::{
    Allocation, ContainerGrant, GpuGrant, GpuSpec, Health, LinkSpec, MigSpec, NodeSpec, PcieLevel,
    PodKey,
};
use proto::assignment::{self, AssignedGpu, AssignedMig, ContainerAssignment, PodAssignment};
use proto::inventory::{self, NodeInventory};

use proto::resources::mig_request_form;

/// The placement model of a node's inventory. A GPU in MIG mode with no
/// instances takes nothing (it is neither shareable nor partitioned), so it
/// enters the model as unhealthy.
pub fn node_spec(inv: &NodeInventory) -> NodeSpec {
    let health = |h: inventory::Health| {
        if h.is_healthy() {
            Health::Healthy
        } else {
            Health::Unhealthy
        }
    };
    NodeSpec {
        name: inv.node_name.clone(),
        gpus: inv
            .gpus
            .iter()
            .map(|g| GpuSpec {
                index: g.index,
                uuid: g.uuid.clone(),
                product: g.product.clone(),
                memory_bytes: g.memory_bytes,
                health: if g.mig_enabled && g.mig_instances.is_empty() {
                    Health::Unhealthy
                } else {
                    health(g.health)
                },
                numa_node: g.numa_node,
                mig: g
                    .mig_instances
                    .iter()
                    .map(|m| MigSpec {
                        uuid: m.uuid.clone(),
                        profile: mig_request_form(&m.profile),
                        memory_bytes: m.memory_bytes,
                        health: health(m.health),
                    })
                    .collect(),
            })
            .collect(),
        links: inv
            .links
            .iter()
            .map(|l| LinkSpec {
                a: l.a,
                b: l.b,
                nvlinks: l.nvlinks,
                nvswitch: l.nvswitch,
                pcie: match l.pcie {
                    inventory::PcieLevel::SameBoard => PcieLevel::SameBoard,
                    inventory::PcieLevel::SingleSwitch => PcieLevel::SingleSwitch,
                    inventory::PcieLevel::MultiSwitch => PcieLevel::MultipleSwitches,
                    inventory::PcieLevel::HostBridge => PcieLevel::HostBridge,
                    inventory::PcieLevel::SameNuma => PcieLevel::SameNuma,
                    inventory::PcieLevel::CrossSocket => PcieLevel::CrossSocket,
                },
            })
            .collect(),
        slices_per_gpu: inv.slices_per_gpu,
        // kube-scheduler checks CPU and host memory itself.
        cpu_milli: 0,
        memory_bytes: 0,
    }
}

/// The assignment annotation value for an allocation, containers merged by
/// name (a container with MIG instances has one grant per instance).
pub fn assignment_of(alloc: &Allocation, inv: &NodeInventory) -> PodAssignment {
    let mut containers: Vec<ContainerAssignment> = Vec::new();
    for grant in &alloc.containers {
        let pos = match containers.iter().position(|c| c.name == grant.name) {
            Some(p) => p,
            None => {
                containers.push(ContainerAssignment {
                    name: grant.name.clone(),
                    gpus: Vec::new(),
                    mig: Vec::new(),
                    engine: None,
                });
                containers.len() - 1
            }
        };
        let c = &mut containers[pos];
        for g in &grant.gpus {
            match &g.mig_uuid {
                None => c.gpus.push(AssignedGpu {
                    uuid: g.uuid.clone(),
                    index: g.index,
                    memory_bytes: g.memory_bytes,
                }),
                Some(mig) => {
                    let profile = inv
                        .gpu(&g.uuid)
                        .and_then(|p| p.mig_instances.iter().find(|m| &m.uuid == mig))
                        .map(|m| m.profile.clone())
                        .unwrap_or_default();
                    c.mig.push(AssignedMig {
                        uuid: mig.clone(),
                        parent_uuid: g.uuid.clone(),
                        profile,
                    });
                }
            }
        }
    }
    PodAssignment {
        version: assignment::VERSION.to_string(),
        node: alloc.node.clone(),
        containers,
    }
}

/// The allocation an assignment holds on a node, or why it names devices
/// the node does not have. A grant of a GPU's whole memory holds all its
/// slices (that is how whole GPUs are granted; a shared grant of all the
/// memory leaves nothing for others either way).
pub fn allocation_of(a: &PodAssignment, inv: &NodeInventory) -> Result<Allocation, String> {
    let mut containers = Vec::new();
    for c in &a.containers {
        let mut gpus = Vec::new();
        for g in &c.gpus {
            let gpu = inv
                .gpu(&g.uuid)
                .ok_or_else(|| format!("container {}: node has no GPU {}", c.name, g.uuid))?;
            let slices = if g.memory_bytes >= gpu.memory_bytes {
                inv.slices_per_gpu
            } else {
                1
            };
            gpus.push(GpuGrant {
                index: gpu.index,
                uuid: gpu.uuid.clone(),
                memory_bytes: g.memory_bytes.min(gpu.memory_bytes),
                slices,
                mig_uuid: None,
            });
        }
        for m in &c.mig {
            let (gpu, mig) = inv
                .gpus
                .iter()
                .find_map(|g| {
                    g.mig_instances
                        .iter()
                        .find(|i| i.uuid == m.uuid)
                        .map(|i| (g, i))
                })
                .ok_or_else(|| {
                    format!("container {}: node has no MIG instance {}", c.name, m.uuid)
                })?;
            gpus.push(GpuGrant {
                index: gpu.index,
                uuid: gpu.uuid.clone(),
                memory_bytes: mig.memory_bytes,
                slices: 0,
                mig_uuid: Some(mig.uuid.clone()),
            });
        }
        containers.push(ContainerGrant {
            name: c.name.clone(),
            gpus,
        });
    }
    Ok(Allocation {
        node: a.node.clone(),
        containers,
        cpu_milli: 0,
        memory_bytes: 0,
    })
}

/// The ledger key of a pod; `None` without a name or UID.
pub fn pod_key(pod: &Pod) -> Option<PodKey> {
    let m = &pod.metadata;
    Some(PodKey::new(
        m.namespace.clone().unwrap_or_else(|| "default".into()),
        m.name.clone()?,
        m.uid.clone()?,
    ))
}

/// What a pod holds: its assignment, when it is bound and has not
/// finished. Pods being deleted still hold their GPUs (their containers
/// may still run) until they are gone or have finished.
pub enum Held {
    /// Holds nothing: unbound, finished, or no assignment.
    Nothing,
    /// Bound with this assignment.
    Assignment(PodAssignment),
    /// Bound with an assignment that does not parse; holds nothing, and the
    /// reason is logged.
    Malformed(String),
}

/// Reads what a pod holds from its assignment annotation.
pub fn held(pod: &Pod) -> Held {
    let bound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    if !bound || proto::pod::is_finished(pod) {
        return Held::Nothing;
    }
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    match annotations.get(assignment::ANNOTATION) {
        None => Held::Nothing,
        Some(text) => match PodAssignment::from_json(text) {
            Ok(a) => Held::Assignment(a),
            Err(e) => Held::Malformed(e.to_string()),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use placement::{Ledger, Policy, TypicalPods};
    use serde_json::json;

    /// Four H100s named `GPU-n-0` … on node `n`.
    pub(crate) fn h100_inventory() -> NodeInventory {
        inventory("n", 4)
    }

    fn inventory(name: &str, gpus: u32) -> NodeInventory {
        let mut links = vec![];
        for a in 0..gpus {
            for b in a + 1..gpus {
                links.push(
                    json!({"a": a, "b": b, "nvlinks": 0, "nvswitch": true, "pcie": "sameNuma"}),
                );
            }
        }
        let gpus: Vec<_> = (0..gpus)
            .map(|i| {
                json!({"index": i, "uuid": format!("GPU-{name}-{i}"), "product": "NVIDIA H100 80GB HBM3",
                   "memoryBytes": 80u64 << 30, "pciBusId": format!("00000000:{i:02x}:00.0"),
                   "numaNode": 0, "health": "Healthy"})
            })
            .collect();
        serde_json::from_value(
            json!({"nodeName": name, "backend": "simulated", "slicesPerGpu": 4,
            "memoryUnitBytes": 1u64 << 30, "gpus": gpus, "links": links}),
        )
        .unwrap()
    }

    #[test]
    fn assignment_round_trips_through_allocation() {
        let inv = inventory("n1", 4);
        let mut ledger = Ledger::new();
        ledger.upsert_node(&node_spec(&inv)).unwrap();
        let needs = crate::demand::PodNeeds::from_pod(
            &serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
                {"name": "a", "resources": {"requests": {"gpupack.io/gpu": "2", "gpupack.io/gpu-memory": "20"}}},
                {"name": "b", "resources": {"requests": {"gpupack.io/gpu": "1"}}}]}}))
            .unwrap(),
        )
        .unwrap();
        let demand = needs.demand(1 << 30);
        let prep = ledger.prepare(&demand);
        let scorer = ledger.scorer(Policy::Gpupack, &TypicalPods::default());
        let id = ledger.node_id("n1").unwrap();
        let alloc = ledger.choose(id, &prep, &scorer, &mut rand::rng()).unwrap();
        let a = assignment_of(&alloc, &inv);
        a.validate().unwrap();
        assert_eq!(a.container("a").unwrap().gpus.len(), 2);
        assert_eq!(a.container("a").unwrap().gpus[0].memory_bytes, 10 << 30);
        let back = allocation_of(&PodAssignment::from_json(&a.to_json()).unwrap(), &inv).unwrap();
        assert_eq!(back, alloc);
        // Placing the round-tripped allocation takes exactly what choose took.
        ledger.place(PodKey::new("ns", "p", "u"), back).unwrap();
        let second = ledger.choose(id, &prep, &scorer, &mut rand::rng()).unwrap();
        ledger.place(PodKey::new("ns", "q", "v"), second).unwrap();
        let third = ledger.choose(id, &prep, &scorer, &mut rand::rng());
        assert!(third.is_err(), "no whole GPU is left for container b");
    }

    #[test]
    fn unknown_devices_are_named() {
        let inv = inventory("n1", 1);
        let a = PodAssignment::from_json(
            r#"{"version":"v1","node":"n1","containers":[{"name":"c","gpus":[{"uuid":"GPU-other","index":0,"memoryBytes":1024}]}]}"#,
        )
        .unwrap();
        assert!(allocation_of(&a, &inv).unwrap_err().contains("GPU-other"));
    }

    #[test]
    fn mig_mode_without_instances_takes_nothing() {
        let mut inv = inventory("n1", 1);
        inv.gpus[0].mig_enabled = true;
        assert_eq!(node_spec(&inv).gpus[0].health, Health::Unhealthy);
    }
}
