//! The environment and devices a container receives from Allocate.

use std::collections::HashMap;

use proto::deviceplugin::{CdiDevice, ContainerAllocateResponse};
use proto::inventory::NodeInventory;
use proto::resources::env;

use crate::server::handoff::Plan;

/// How the container runtime learns which GPUs to expose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceListStrategy {
    /// `NVIDIA_VISIBLE_DEVICES=<uuids>` for the NVIDIA container runtime.
    Envvar,
    /// CDI device names (`<kind>=<uuid>`) in `cdi_devices`.
    Cdi {
        /// CDI kind, e.g. `nvidia.com/gpu`.
        kind: String,
    },
}

/// Builds the response for one container.
pub fn container_response(
    plan: &Plan,
    inv: &NodeInventory,
    strategy: &DeviceListStrategy,
) -> ContainerAllocateResponse {
    let mut envs = HashMap::new();
    let visible: Vec<&str> = plan
        .gpus
        .iter()
        .map(|(u, _)| u.as_str())
        .chain(plan.mig.iter().map(String::as_str))
        .collect();
    let mut cdi_devices = Vec::new();
    match strategy {
        DeviceListStrategy::Envvar => {
            envs.insert(env::NVIDIA_VISIBLE_DEVICES.to_string(), visible.join(","));
        }
        DeviceListStrategy::Cdi { kind } => {
            cdi_devices = visible
                .iter()
                .map(|u| CdiDevice {
                    name: format!("{kind}={u}"),
                })
                .collect();
        }
    }
    if !plan.gpus.is_empty() {
        let uuids: Vec<&str> = plan.gpus.iter().map(|(u, _)| u.as_str()).collect();
        envs.insert(env::GPU_UUIDS.to_string(), uuids.join(","));
        envs.insert(env::GPU_COUNT.to_string(), plan.gpus.len().to_string());
        let bytes: Option<Vec<u64>> = plan.gpus.iter().map(|(_, b)| *b).collect();
        if let Some(bytes) = bytes {
            let fractions: Vec<u64> = plan
                .gpus
                .iter()
                .zip(&bytes)
                .map(|((u, _), b)| {
                    let total = inv.gpu(u).map_or(0, |g| g.memory_bytes);
                    floor_fraction(*b, total)
                })
                .collect();
            envs.insert(
                env::GPU_MEMORY_BYTES.to_string(),
                bytes
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            );
            envs.insert(
                env::GPU_MEMORY_FRACTION.to_string(),
                fractions
                    .iter()
                    .map(|f| env::fraction_text(*f))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            // The extender's flag for a sized engine leaves room for what
            // the engine holds outside it; a plain request's share is the
            // user's to size.
            let utilization = match plan.engine {
                Some(e) => u64::from(e.memory_flag),
                None => fractions.iter().copied().min().unwrap_or(0) / 100 * 100,
            };
            envs.insert(
                env::GPU_MEMORY_UTILIZATION.to_string(),
                env::fraction_text(utilization),
            );
        }
        if let Some(e) = plan.engine {
            envs.insert(
                env::KV_CACHE_BYTES.to_string(),
                e.kv_cache_bytes.to_string(),
            );
        }
    }
    if !plan.mig.is_empty() {
        envs.insert(env::MIG_UUIDS.to_string(), plan.mig.join(","));
    }
    ContainerAllocateResponse {
        envs,
        cdi_devices,
        ..Default::default()
    }
}

/// `bytes / total` in ten-thousandths, rounded down, at most 1.
fn floor_fraction(bytes: u64, total: u64) -> u64 {
    if total == 0 {
        return 0;
    }
    (u128::from(bytes) * 10_000 / u128::from(total)).min(10_000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::backend::{DiscoveryContext, simulated};

    fn inv() -> NodeInventory {
        let ctx = DiscoveryContext {
            node_name: "n".into(),
            slices_per_gpu: 4,
            memory_unit_bytes: 1 << 30,
        };
        simulated::parse(
            "t",
            "defaults: { product: X, memory: 80GiB }\ngpus: [ { uuid: GPU-a }, { uuid: GPU-b } ]\n",
            &ctx,
        )
        .unwrap()
    }

    #[test]
    fn envs_carry_uuids_bytes_and_fractions() {
        let plan = Plan {
            gpus: vec![
                ("GPU-b".into(), Some(30 << 30)),
                ("GPU-a".into(), Some(20 << 30)),
            ],
            mig: vec![],
            engine: None,
        };
        let r = container_response(&plan, &inv(), &DeviceListStrategy::Envvar);
        assert_eq!(r.envs["NVIDIA_VISIBLE_DEVICES"], "GPU-b,GPU-a");
        assert_eq!(r.envs["GPUPACK_GPU_UUIDS"], "GPU-b,GPU-a");
        assert_eq!(r.envs["GPUPACK_GPU_COUNT"], "2");
        assert_eq!(
            r.envs["GPUPACK_GPU_MEMORY_BYTES"],
            "32212254720,21474836480"
        );
        assert_eq!(r.envs["GPUPACK_GPU_MEMORY_FRACTION"], "0.3750,0.2500");
        assert_eq!(r.envs["GPUPACK_GPU_MEMORY_UTILIZATION"], "0.2500");
        assert!(r.cdi_devices.is_empty());
    }

    #[test]
    fn utilization_rounds_down_to_hundredths() {
        let plan = Plan {
            gpus: vec![("GPU-a".into(), Some((80u64 << 30) / 3))],
            mig: vec![],
            engine: None,
        };
        let r = container_response(&plan, &inv(), &DeviceListStrategy::Envvar);
        assert_eq!(r.envs["GPUPACK_GPU_MEMORY_FRACTION"], "0.3333");
        assert_eq!(r.envs["GPUPACK_GPU_MEMORY_UTILIZATION"], "0.3300");
        assert!(!r.envs.contains_key("GPUPACK_KV_CACHE_BYTES"));
    }

    #[test]
    fn a_sized_engine_gets_the_extenders_flag_and_kv_bytes() {
        let plan = Plan {
            gpus: vec![("GPU-a".into(), Some(30 << 30))],
            mig: vec![],
            engine: Some(proto::assignment::EngineSizing {
                memory_flag: 3518,
                kv_cache_bytes: 12 << 30,
            }),
        };
        let r = container_response(&plan, &inv(), &DeviceListStrategy::Envvar);
        assert_eq!(r.envs["GPUPACK_GPU_MEMORY_FRACTION"], "0.3750");
        assert_eq!(r.envs["GPUPACK_GPU_MEMORY_UTILIZATION"], "0.3518");
        assert_eq!(r.envs["GPUPACK_KV_CACHE_BYTES"], "12884901888");
    }

    #[test]
    fn cdi_names_and_unknown_bytes() {
        let plan = Plan {
            gpus: vec![("GPU-a".into(), None)],
            mig: vec!["MIG-x".into()],
            engine: None,
        };
        let r = container_response(
            &plan,
            &inv(),
            &DeviceListStrategy::Cdi {
                kind: "nvidia.com/gpu".into(),
            },
        );
        assert!(!r.envs.contains_key("NVIDIA_VISIBLE_DEVICES"));
        assert_eq!(r.cdi_devices[0].name, "nvidia.com/gpu=GPU-a");
        assert_eq!(r.cdi_devices[1].name, "nvidia.com/gpu=MIG-x");
        assert!(!r.envs.contains_key("GPUPACK_GPU_MEMORY_BYTES"));
        assert_eq!(r.envs["GPUPACK_MIG_UUIDS"], "MIG-x");
    }
}
