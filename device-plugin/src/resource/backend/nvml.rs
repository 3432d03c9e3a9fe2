//! Real GPUs through NVML (nvml-wrapper, library loaded at run time).
//!
//! Discovery reads per GPU the index, UUID, name, total memory, PCI bus ID,
//! NUMA node (from sysfs, as NVIDIA's plugin does, falling back to NVML),
//! MIG mode and the MIG instances present (profile, memory, GPU/compute
//! instance IDs), and per pair of GPUs the PCIe common ancestor and the
//! NVLink count, with NVSwitch detected from links whose remote end is not
//! a GPU. Health comes from NVML events on a dedicated thread: critical
//! XIDs (see [`super::xid`]) and double-bit ECC errors.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::TopologyLevel;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use proto::inventory::{Backend, Gpu, Health, MigInstance, NodeInventory, PcieLevel};
use tokio::sync::mpsc;

use super::topology::{self, NvLinkEnd, NvmlTopology};
use super::xid::{self, XidPolicy};
use super::{BackendError, BackendEvent, DiscoveryContext, GpuBackend, WatchGuard};

/// NVML reports at most this many NVLinks per GPU.
const MAX_NVLINKS: u32 = 18;

/// Settings of the NVML backend.
#[derive(Debug, Clone)]
pub struct NvmlOptions {
    /// Library path or name given to the loader.
    pub library: String,
    /// sysfs root for NUMA nodes.
    pub sysfs_root: PathBuf,
    /// Which XIDs count.
    pub xids: XidPolicy,
    /// Whether to watch health events at all.
    pub health_checks: bool,
}

/// The NVML backend; NVML is initialized once and shared.
pub struct NvmlBackend {
    nvml: Arc<Nvml>,
    opts: NvmlOptions,
}

fn nvml_err(what: impl Into<String>) -> impl FnOnce(NvmlError) -> BackendError {
    let what = what.into();
    move |e| BackendError::Nvml {
        what,
        detail: e.to_string(),
    }
}

impl NvmlBackend {
    /// Loads and initializes NVML.
    pub fn open(opts: NvmlOptions) -> Result<NvmlBackend, BackendError> {
        let lib = std::ffi::OsString::from(&opts.library);
        let nvml = Nvml::builder().lib_path(&lib).init().map_err(|e| match e {
            NvmlError::LibloadingError(inner) => BackendError::NvmlMissing {
                path: opts.library.clone(),
                detail: inner.to_string(),
            },
            NvmlError::DriverNotLoaded | NvmlError::LibRmVersionMismatch => {
                BackendError::NvmlMissing {
                    path: opts.library.clone(),
                    detail: e.to_string(),
                }
            }
            other => BackendError::Nvml {
                what: "initializing NVML".into(),
                detail: other.to_string(),
            },
        })?;
        Ok(NvmlBackend {
            nvml: Arc::new(nvml),
            opts,
        })
    }

    fn numa_node(&self, device: &Device, bus_id: &str) -> Option<u32> {
        let path = topology::sysfs_numa_path(&self.opts.sysfs_root, bus_id);
        match std::fs::read_to_string(&path) {
            Ok(text) => topology::parse_numa_node(&text),
            Err(_) => device.numa_node_id().ok(),
        }
    }

    fn mig_instances(
        &self,
        gpu: &Device,
        parent_memory: u64,
    ) -> Result<Vec<MigInstance>, BackendError> {
        let mut out = Vec::new();
        let slots = gpu
            .mig_device_count()
            .map_err(nvml_err("counting MIG slots"))?;
        for slot in 0..slots {
            let mig = match gpu.mig_device_by_index(slot) {
                Ok(m) => m,
                Err(NvmlError::NotFound | NvmlError::InvalidArg) => continue,
                Err(e) => return Err(nvml_err(format!("MIG slot {slot}"))(e)),
            };
            let uuid = mig.uuid().map_err(nvml_err("MIG UUID"))?;
            let memory = usable(&mig.memory_info().map_err(nvml_err("MIG memory"))?);
            let attrs = mig.attributes().map_err(nvml_err("MIG attributes"))?;
            if attrs.compute_instance_slice_count != attrs.gpu_instance_slice_count {
                tracing::warn!(mig = %uuid, "skipping MIG instance whose compute slices differ from its GPU slices (not advertised, as NVIDIA's plugin)");
                continue;
            }
            let (gi, ci) = instance_ids(&self.nvml, &mig).unwrap_or((slot + 1, 0));
            out.push(MigInstance {
                uuid,
                profile: topology::mig_profile_name(
                    attrs.gpu_instance_slice_count,
                    memory,
                    parent_memory,
                ),
                memory_bytes: memory,
                gpu_instance_id: gi,
                compute_instance_id: ci,
                health: Health::Healthy,
            });
        }
        Ok(out)
    }
}

/// The memory processes can allocate: NVML's total less what the driver
/// and firmware reserve (`nvmlMemory_v2_t.reserved`; about 480 MiB of an
/// H100's 81559 MiB, which CUDA's own total, 79.18 GiB, leaves out too).
/// Advertising the whole total would let grants add up to memory no
/// engine can have.
fn usable(info: &nvml_wrapper::struct_wrappers::device::MemoryInfo) -> u64 {
    info.total.saturating_sub(info.reserved)
}

/// GPU and compute instance IDs of a MIG device; nvml-wrapper does not wrap
/// these two calls.
#[allow(unsafe_code)]
fn instance_ids(nvml: &Nvml, mig: &Device) -> Option<(u32, u32)> {
    let lib = nvml.lib();
    let gi_fn = lib.nvmlDeviceGetGpuInstanceId.as_ref().ok()?;
    let ci_fn = lib.nvmlDeviceGetComputeInstanceId.as_ref().ok()?;
    let mut gi: std::os::raw::c_uint = 0;
    let mut ci: std::os::raw::c_uint = 0;
    // SAFETY: the handle comes from a live `Device` of this `Nvml`; both
    // functions only write one integer through the pointer they are given,
    // which points at a local that outlives the call.
    let ok = unsafe {
        let handle = mig.handle();
        gi_fn(handle, &mut gi) == 0 && ci_fn(handle, &mut ci) == 0
    };
    ok.then_some((gi, ci))
}

fn level(l: TopologyLevel) -> NvmlTopology {
    match l {
        TopologyLevel::Internal => NvmlTopology::Internal,
        TopologyLevel::Single => NvmlTopology::Single,
        TopologyLevel::Multiple => NvmlTopology::Multiple,
        TopologyLevel::HostBridge => NvmlTopology::HostBridge,
        TopologyLevel::Node => NvmlTopology::Node,
        TopologyLevel::System => NvmlTopology::System,
    }
}

impl GpuBackend for NvmlBackend {
    fn kind(&self) -> Backend {
        Backend::Nvml
    }

    fn discover(&self, ctx: &DiscoveryContext) -> Result<NodeInventory, BackendError> {
        let nvml = &self.nvml;
        let count = nvml.device_count().map_err(nvml_err("counting GPUs"))?;
        let mut devices = Vec::new();
        let mut gpus = Vec::new();
        for i in 0..count {
            let d = nvml
                .device_by_index(i)
                .map_err(nvml_err(format!("GPU {i}")))?;
            let uuid = d.uuid().map_err(nvml_err(format!("GPU {i} UUID")))?;
            let product = d.name().map_err(nvml_err(format!("GPU {i} name")))?;
            let memory_bytes = usable(
                &d.memory_info()
                    .map_err(nvml_err(format!("GPU {i} memory")))?,
            );
            let pci_bus_id = d
                .pci_info()
                .map_err(nvml_err(format!("GPU {i} PCI info")))?
                .bus_id;
            let mig_enabled = match d.mig_mode() {
                Ok(m) => m.current == 1,
                Err(NvmlError::NotSupported) => false,
                Err(e) => return Err(nvml_err(format!("GPU {i} MIG mode"))(e)),
            };
            let mig_instances = if mig_enabled {
                self.mig_instances(&d, memory_bytes)?
            } else {
                vec![]
            };
            gpus.push(Gpu {
                index: d.index().unwrap_or(i),
                numa_node: self.numa_node(&d, &pci_bus_id),
                uuid,
                product,
                memory_bytes,
                pci_bus_id,
                health: Health::Healthy,
                health_reason: None,
                mig_enabled,
                mig_instances,
            });
            devices.push(d);
        }
        let mut pcie: HashMap<(usize, usize), PcieLevel> = HashMap::new();
        for a in 0..devices.len() {
            for b in a + 1..devices.len() {
                let l = nvml
                    .topology_common_ancestor(&devices[a], &devices[b])
                    .map(level)
                    .unwrap_or(NvmlTopology::System);
                pcie.insert((a, b), topology::pcie_level(l));
            }
        }
        let links: Vec<Vec<NvLinkEnd>> = devices
            .iter()
            .map(|d| {
                (0..MAX_NVLINKS)
                    .filter_map(|l| {
                        let link = d.link_wrapper_for(l);
                        if !link.is_active().unwrap_or(false) {
                            return None;
                        }
                        link.remote_pci_info().ok().map(|p| NvLinkEnd {
                            remote_bus_id: p.bus_id,
                        })
                    })
                    .collect()
            })
            .collect();
        let bus: Vec<String> = gpus.iter().map(|g| g.pci_bus_id.clone()).collect();
        let indexes: Vec<u32> = gpus.iter().map(|g| g.index).collect();
        let nv = topology::nvlink_pairs(&bus, &links);
        let inv = NodeInventory {
            node_name: ctx.node_name.clone(),
            backend: Backend::Nvml,
            driver_version: nvml.sys_driver_version().ok(),
            slices_per_gpu: ctx.slices_per_gpu,
            memory_unit_bytes: ctx.memory_unit_bytes,
            gpus,
            links: topology::links(&indexes, &pcie, &nv),
        };
        inv.validate()?;
        Ok(inv)
    }

    fn watch(
        &self,
        _ctx: &DiscoveryContext,
        events: mpsc::UnboundedSender<BackendEvent>,
    ) -> Result<WatchGuard, BackendError> {
        let stop = Arc::new(AtomicBool::new(false));
        if !self.opts.health_checks {
            return Ok(WatchGuard::new(StopOnDrop(stop)));
        }
        let nvml = self.nvml.clone();
        let policy = self.opts.xids.clone();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("nvml-health".into())
            .spawn(move || health_loop(&nvml, &policy, &events, &flag))
            .map_err(|e| BackendError::Watch(e.to_string()))?;
        Ok(WatchGuard::new(StopOnDrop(stop)))
    }
}

struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Registers every GPU for the events it supports (an unsupported mask
/// would free the whole set) and reports critical ones until stopped.
fn health_loop(
    nvml: &Nvml,
    policy: &XidPolicy,
    events: &mpsc::UnboundedSender<BackendEvent>,
    stop: &AtomicBool,
) {
    let wanted = EventTypes::CRITICAL_XID_ERROR | EventTypes::DOUBLE_BIT_ECC_ERROR;
    let count = nvml.device_count().unwrap_or(0);
    let mut registered: Vec<(u32, EventTypes)> = Vec::new();
    let build = |list: &[(u32, EventTypes)]| -> Result<nvml_wrapper::EventSet<'_>, NvmlError> {
        let mut set = nvml.create_event_set()?;
        for (i, mask) in list {
            set = nvml
                .device_by_index(*i)?
                .register_events(*mask, set)
                .map_err(|e| e.error)?;
        }
        Ok(set)
    };
    for i in 0..count {
        let Ok(d) = nvml.device_by_index(i) else {
            continue;
        };
        let supported = match d.supported_event_types() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(gpu = i, error = %e, "GPU cannot report health events; health checks off for it");
                continue;
            }
        };
        let mask = wanted & supported;
        if mask.is_empty() {
            continue;
        }
        let mut trial = registered.clone();
        trial.push((i, mask));
        match build(&trial) {
            Ok(_) => registered = trial,
            Err(e) => {
                let uuid = d.uuid().unwrap_or_default();
                tracing::warn!(gpu = %uuid, error = %e, "cannot register health events; marking unhealthy");
                let _ = events.send(BackendEvent::Critical {
                    uuid,
                    reason: format!("cannot watch NVML events: {e}"),
                });
            }
        }
    }
    let set = match build(&registered) {
        Ok(s) => s,
        Err(e) => {
            let _ = events.send(BackendEvent::CriticalAll {
                reason: format!("cannot create NVML event set: {e}"),
            });
            return;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        match set.wait(1000) {
            Ok(ev) => {
                let uuid = ev.device.uuid().unwrap_or_default();
                if ev.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
                    let code = match ev.event_data {
                        Some(XidError::Value(v)) if v != 999 => Some(v),
                        _ => None,
                    };
                    if policy.is_critical(code) {
                        let _ = events.send(BackendEvent::Critical {
                            uuid: uuid.clone(),
                            reason: xid::describe(code),
                        });
                    } else {
                        tracing::info!(gpu = %uuid, xid = ?code, "ignoring application XID");
                    }
                }
                if ev.event_type.contains(EventTypes::DOUBLE_BIT_ECC_ERROR) {
                    let _ = events.send(BackendEvent::Critical {
                        uuid,
                        reason: "double-bit ECC error".into(),
                    });
                }
            }
            Err(NvmlError::Timeout) => {}
            Err(e) => {
                let _ = events.send(BackendEvent::CriticalAll {
                    reason: format!("NVML event wait failed: {e}"),
                });
                std::thread::sleep(Duration::from_secs(5));
            }
        }
    }
}
