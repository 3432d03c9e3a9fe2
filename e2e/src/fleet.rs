//! A `gpupack simulate --workload` file as a cluster: every node of its
//! fleet as the device plugin would publish it, and every pod of a replay
//! order as a user would write it, so that kube-scheduler's sequence
//! (the driver, the extender) and the simulator can be compared on the
//! same pods in the same order.

use std::collections::BTreeMap;

use gpupack::simulate::workload::Deployment;
use placement::{Health, NodeSpec, PcieLevel};
use proto::inventory::{self, Backend, Gpu, GpuLink, MigInstance, NodeInventory};
use proto::resources::DEFAULT_MEMORY_UNIT_BYTES;

use crate::spec::PodBuilder;

/// The inventory the device plugin publishes for a node of the fleet: the
/// inverse of the extender's translation into the placement model, with
/// 1 GiB memory units.
pub fn inventory(spec: &NodeSpec) -> NodeInventory {
    let health = |h: Health| match h {
        Health::Healthy => inventory::Health::Healthy,
        Health::Unhealthy => inventory::Health::Unhealthy,
    };
    NodeInventory {
        node_name: spec.name.clone(),
        backend: Backend::Simulated,
        driver_version: None,
        slices_per_gpu: spec.slices_per_gpu,
        memory_unit_bytes: DEFAULT_MEMORY_UNIT_BYTES,
        gpus: spec
            .gpus
            .iter()
            .map(|g| Gpu {
                index: g.index,
                uuid: g.uuid.clone(),
                product: g.product.clone(),
                memory_bytes: g.memory_bytes,
                pci_bus_id: format!("00000000:{:02X}:00.0", 0x10 + g.index),
                numa_node: g.numa_node,
                health: health(g.health),
                health_reason: None,
                mig_enabled: !g.mig.is_empty(),
                mig_instances: g
                    .mig
                    .iter()
                    .zip(1u32..)
                    .map(|(m, id)| MigInstance {
                        uuid: m.uuid.clone(),
                        profile: m.profile.clone(),
                        memory_bytes: m.memory_bytes,
                        gpu_instance_id: id,
                        compute_instance_id: 0,
                        health: health(m.health),
                    })
                    .collect(),
            })
            .collect(),
        links: spec
            .links
            .iter()
            .map(|l| GpuLink {
                a: l.a.min(l.b),
                b: l.a.max(l.b),
                nvlinks: l.nvlinks,
                nvswitch: l.nvswitch,
                pcie: match l.pcie {
                    PcieLevel::SameBoard => inventory::PcieLevel::SameBoard,
                    PcieLevel::SingleSwitch => inventory::PcieLevel::SingleSwitch,
                    PcieLevel::MultipleSwitches => inventory::PcieLevel::MultiSwitch,
                    PcieLevel::HostBridge => inventory::PcieLevel::HostBridge,
                    PcieLevel::SameNuma => inventory::PcieLevel::SameNuma,
                    PcieLevel::CrossSocket => inventory::PcieLevel::CrossSocket,
                },
            })
            .collect(),
    }
}

/// The Node's CPU and memory capacity as quantities (millicores, bytes).
pub fn capacity(spec: &NodeSpec) -> (String, String) {
    (
        format!("{}m", spec.cpu_milli),
        spec.memory_bytes.to_string(),
    )
}

/// The pod for the `k`-th arrival, of deployment `d`: the requests the
/// simulator places (`tensorParallelSize` GPUs with the estimate in whole
/// GiB each, or one MIG instance of its profile), with its CPU and memory.
/// Names sort in arrival order.
pub fn pod(k: usize, d: &Deployment) -> PodBuilder {
    let name = format!("w{k:04}-{}", d.name);
    let mut p = match &d.mig_profile {
        Some(profile) => PodBuilder::mig(&name, profile),
        None => {
            let gib_per_gpu = d.request_bytes.div_ceil(DEFAULT_MEMORY_UNIT_BYTES);
            let total = gib_per_gpu * u64::from(d.tensor_parallel_size);
            PodBuilder::new(&name)
                .limit(proto::resources::GPU, &d.tensor_parallel_size.to_string())
                .limit(proto::resources::GPU_MEMORY, &total.to_string())
        }
    }
    .label("app.kubernetes.io/name", &d.name);
    if d.demand.cpu_milli > 0 {
        p = p.limit("cpu", &format!("{}m", d.demand.cpu_milli));
    }
    if d.demand.memory_bytes > 0 {
        p = p.limit("memory", &d.demand.memory_bytes.to_string());
    }
    p
}

/// Where each pod went: node, and the GPU indexes (or MIG UUIDs) of its
/// assignment, by pod name.
pub type Placements = BTreeMap<String, (String, Vec<String>)>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The inventory of every node of the shipped example reads back, in
    /// the extender's translation, as the node the simulator places on.
    #[test]
    fn inventories_translate_back_to_the_simulated_nodes() {
        let w = gpupack::simulate::workload::parse("example", gpupack::simulate::workload::EXAMPLE)
            .unwrap_or_else(|e| panic!("{e}"));
        for spec in &w.fleet.specs {
            let mut back = scheduler_ext::translate::node_spec(&inventory(spec));
            back.cpu_milli = spec.cpu_milli;
            back.memory_bytes = spec.memory_bytes;
            assert_eq!(&back, spec);
        }
    }
}
