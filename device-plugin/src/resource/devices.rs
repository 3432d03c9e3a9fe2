//! The resource manager: which devices each resource advertises to kubelet.
//!
//! - `gpupack.io/gpu`: `slicesPerGpu` slices on every GPU not in MIG mode;
//! - `gpupack.io/gpu-memory`: one device per whole memory unit of those GPUs;
//! - `gpupack.io/mig-<profile>`: one device per MIG instance of that profile.
//!
//! Every device carries its GPU's health and NUMA node (kubelet's Topology
//! Manager aligns on it).

use proto::deviceplugin::{Device, NumaNode, TopologyInfo};
use proto::inventory::NodeInventory;
use proto::resources::{DeviceId, Resource, mig_resource_name};

/// One advertised device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    /// The device ID kubelet sees.
    pub id: DeviceId,
    /// UUID of the physical GPU it lives on.
    pub gpu_uuid: String,
    /// Whether kubelet may hand it out.
    pub healthy: bool,
    /// NUMA node of the GPU.
    pub numa_node: Option<u32>,
}

/// The resources this node advertises: GPU slices and memory always (so the
/// socket set does not change when MIG mode does), plus one per MIG profile.
pub fn resources(inv: &NodeInventory) -> Vec<Resource> {
    let mut out = vec![Resource::Gpu, Resource::GpuMemory];
    let mut profiles: Vec<String> = inv
        .gpus
        .iter()
        .flat_map(|g| g.mig_instances.iter())
        .filter_map(|m| Resource::parse(&mig_resource_name(&m.profile)))
        .map(|r| r.name())
        .collect();
    profiles.sort();
    profiles.dedup();
    out.extend(profiles.iter().filter_map(|p| Resource::parse(p)));
    out
}

/// The devices of one resource, in a stable order.
pub fn devices(inv: &NodeInventory, resource: &Resource) -> Vec<DeviceEntry> {
    let mut out = Vec::new();
    for gpu in &inv.gpus {
        let healthy = gpu.health.is_healthy();
        let entry = |id| DeviceEntry {
            id,
            gpu_uuid: gpu.uuid.clone(),
            healthy,
            numa_node: gpu.numa_node,
        };
        match resource {
            Resource::Gpu if !gpu.mig_enabled => {
                out.extend((0..inv.slices_per_gpu).map(|slice| {
                    entry(DeviceId::Slice {
                        gpu_uuid: gpu.uuid.clone(),
                        slice,
                    })
                }));
            }
            Resource::GpuMemory if !gpu.mig_enabled => {
                out.extend(
                    (0..proto::resources::units_offered(gpu.memory_bytes, inv.memory_unit_bytes))
                        .map(|unit| {
                            entry(DeviceId::MemoryUnit {
                                gpu_uuid: gpu.uuid.clone(),
                                unit,
                            })
                        }),
                );
            }
            Resource::Mig(profile) => {
                for mig in &gpu.mig_instances {
                    if Resource::parse(&mig_resource_name(&mig.profile)).as_ref() == Some(resource)
                        || &mig.profile == profile
                    {
                        out.push(DeviceEntry {
                            id: DeviceId::Mig {
                                mig_uuid: mig.uuid.clone(),
                            },
                            gpu_uuid: gpu.uuid.clone(),
                            healthy: healthy && mig.health.is_healthy(),
                            numa_node: gpu.numa_node,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// kubelet's form of a device list.
pub fn to_kubelet(entries: &[DeviceEntry]) -> Vec<Device> {
    entries
        .iter()
        .map(|d| Device {
            id: d.id.to_string(),
            health: if d.healthy {
                proto::deviceplugin::constants::HEALTHY
            } else {
                proto::deviceplugin::constants::UNHEALTHY
            }
            .to_string(),
            topology: d.numa_node.map(|n| TopologyInfo {
                nodes: vec![NumaNode { id: i64::from(n) }],
            }),
        })
        .collect()
}

/// Counts of healthy and unhealthy devices of a resource.
pub fn health_counts(entries: &[DeviceEntry]) -> (usize, usize) {
    let healthy = entries.iter().filter(|d| d.healthy).count();
    (healthy, entries.len() - healthy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::backend::simulated;

    fn load(file: &str) -> NodeInventory {
        simulated::load_example(file)
    }

    #[test]
    fn h100_node_advertises_slices_and_units_with_numa() {
        let inv = load("h100-sxm-8x-nvswitch.yaml");
        assert_eq!(resources(&inv), vec![Resource::Gpu, Resource::GpuMemory]);
        let slices = devices(&inv, &Resource::Gpu);
        assert_eq!(slices.len(), 32);
        let units = devices(&inv, &Resource::GpuMemory);
        // 81559 MiB is 79.6 GiB: 79 whole units per GPU.
        assert_eq!(units.len(), 8 * 79);
        let k = to_kubelet(&slices);
        assert_eq!(k[0].health, "Healthy");
        assert_eq!(k[0].topology.as_ref().unwrap().nodes[0].id, 0);
        assert_eq!(k[31].topology.as_ref().unwrap().nodes[0].id, 1);
        assert!(
            k.iter()
                .all(|d| d.id.len() <= proto::resources::MAX_DEVICE_ID_LEN)
        );
        let mut ids: Vec<&str> = k.iter().map(|d| d.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 32);
    }

    #[test]
    fn mig_gpu_offers_only_mig_resources() {
        let inv = load("a100-mig.yaml");
        let rs = resources(&inv);
        assert_eq!(
            rs.iter().map(Resource::name).collect::<Vec<_>>(),
            vec![
                "gpupack.io/gpu",
                "gpupack.io/gpu-memory",
                "gpupack.io/mig-1g.10gb",
                "gpupack.io/mig-2g.20gb",
                "gpupack.io/mig-3g.40gb"
            ]
        );
        assert_eq!(
            devices(&inv, &Resource::Gpu).len(),
            4,
            "only GPU 1 is sliced"
        );
        assert_eq!(devices(&inv, &Resource::Mig("1g.10gb".into())).len(), 2);
        assert!(
            devices(&inv, &Resource::Mig("1g.10gb".into()))[0]
                .id
                .to_string()
                .starts_with("MIG-")
        );
    }

    #[test]
    fn unhealthy_gpu_marks_its_devices() {
        let mut inv = load("l40s-pcie-4x-2socket.yaml");
        inv.gpus[2].health = proto::inventory::Health::Unhealthy;
        let d = devices(&inv, &Resource::GpuMemory);
        let (ok, bad) = health_counts(&d);
        assert_eq!(bad, 44);
        assert_eq!(ok, 3 * 44);
        assert!(to_kubelet(&d).iter().any(|x| x.health == "Unhealthy"));
    }
}
