//! Extended resource names gpupack advertises, and the device IDs behind them.
//!
//! A container asks for:
//! - [`GPU`]: how many GPUs it needs. Each one is on a distinct physical GPU;
//!   a physical GPU offers several *slices*, so several containers can share it.
//! - [`GPU_MEMORY`]: GPU memory in units (1 GiB by default), **in total over
//!   the container's GPUs**, split evenly across them. That is what kubelet
//!   counts: a request of 80 units with 2 GPUs is 40 GiB on each.
//! - `gpupack.io/mig-<profile>`: one MIG instance of that profile (see
//!   [`mig_resource_name`]; profile names are read by [`MigProfile`]).
//!
//! Device IDs encode the physical GPU they belong to so that the device plugin
//! can map whatever kubelet hands it back to GPUs: slices are `<uuid>::s<n>`,
//! memory units `<uuid>::m<n>`, MIG instances are their MIG UUID.

use std::fmt;

/// The API group of every gpupack resource, annotation and custom resource.
pub const DOMAIN: &str = "gpupack.io";
/// GPUs per container; each on a distinct physical GPU.
pub const GPU: &str = "gpupack.io/gpu";
/// GPU memory per container, in memory units, summed over its GPUs.
pub const GPU_MEMORY: &str = "gpupack.io/gpu-memory";
/// Prefix of the per-profile MIG resources.
pub const MIG_PREFIX: &str = "gpupack.io/mig-";

/// Slices each GPU offers unless configured otherwise: enough for several
/// small LLM servers on one large GPU while bounding how many share it.
pub const DEFAULT_SLICES_PER_GPU: u32 = 4;
/// Bytes in one `gpupack.io/gpu-memory` unit unless configured otherwise.
pub const DEFAULT_MEMORY_UNIT_BYTES: u64 = 1 << 30;
/// Upper bound on slices per GPU; more would only bloat kubelet's device list.
pub const MAX_SLICES_PER_GPU: u32 = 64;
/// kubelet's documented limit on a device ID's length.
pub const MAX_DEVICE_ID_LEN: usize = 63;

/// The resource name of a MIG profile, following NVIDIA's `mixed` strategy:
/// `1g.10gb` → `gpupack.io/mig-1g.10gb`, and `+` becomes `.`
/// (`1g.10gb+me` → `gpupack.io/mig-1g.10gb.me`).
pub fn mig_resource_name(profile: &str) -> String {
    format!("{MIG_PREFIX}{}", mig_request_form(profile))
}

/// The form pods request a MIG profile in, as NVIDIA's `mixed` strategy
/// names resources: `+` becomes `.` (`1g.10gb+me` → `1g.10gb.me`).
pub fn mig_request_form(profile: &str) -> String {
    profile.trim().replace('+', ".")
}

/// A MIG profile name as NVIDIA writes it: `<compute>g.<memory>gb`, with
/// optional attributes after `+` (`1g.10gb+me`); the request form's `.me`
/// is read too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigProfile {
    /// Compute slices (the `3` of `3g.40gb`).
    pub compute_slices: u32,
    /// Memory the name promises, in GiB (the `40` of `3g.40gb`).
    pub memory_gib: u64,
}

impl MigProfile {
    /// Parses a profile name; `None` when it is not one.
    pub fn parse(profile: &str) -> Option<MigProfile> {
        let (base, attrs) = match profile.split_once('+') {
            Some((b, a)) => (b, Some(a)),
            None => (profile, None),
        };
        let attrs_ok = attrs.is_none_or(|a| {
            !a.is_empty()
                && !a.ends_with('+')
                && a.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'+')
        });
        let base = base.strip_suffix(".me").unwrap_or(base);
        let (g, mem) = base.split_once('.')?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 6 && s.bytes().all(|c| c.is_ascii_digit());
        let g = g.strip_suffix('g').filter(|s| digits(s))?;
        let mem = mem.strip_suffix("gb").filter(|s| digits(s))?;
        let compute_slices: u32 = g.parse().ok()?;
        let memory_gib: u64 = mem.parse().ok()?;
        (attrs_ok && compute_slices > 0 && memory_gib > 0).then_some(MigProfile {
            compute_slices,
            memory_gib,
        })
    }

    /// The memory the name promises, in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_gib << 30
    }
}

/// Memory units that hold `bytes`, rounded up: what a container asks for
/// to get at least that much on a GPU.
pub fn units_needed(bytes: u64, unit_bytes: u64) -> u64 {
    bytes.div_ceil(unit_bytes.max(1))
}

/// Whole memory units a GPU of `memory_bytes` offers, rounded down: a
/// partial unit is never advertised.
pub fn units_offered(memory_bytes: u64, unit_bytes: u64) -> u32 {
    u32::try_from(memory_bytes / unit_bytes.max(1)).unwrap_or(u32::MAX)
}

/// Which of gpupack's resources a resource name is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    /// [`GPU`].
    Gpu,
    /// [`GPU_MEMORY`].
    GpuMemory,
    /// A MIG profile resource; holds the resource-name form of the profile
    /// (after the `mig-` prefix).
    Mig(String),
}

impl Resource {
    /// Classifies a resource name; `None` for names that are not gpupack's.
    pub fn parse(name: &str) -> Option<Resource> {
        match name {
            GPU => Some(Resource::Gpu),
            GPU_MEMORY => Some(Resource::GpuMemory),
            _ => name
                .strip_prefix(MIG_PREFIX)
                .filter(|p| !p.is_empty())
                .map(|p| Resource::Mig(p.to_string())),
        }
    }

    /// The full resource name.
    pub fn name(&self) -> String {
        match self {
            Resource::Gpu => GPU.to_string(),
            Resource::GpuMemory => GPU_MEMORY.to_string(),
            Resource::Mig(p) => format!("{MIG_PREFIX}{p}"),
        }
    }

    /// The plugin socket file name for this resource, inside kubelet's device
    /// plugin directory (one socket per resource, as kubelet expects).
    pub fn socket_name(&self) -> String {
        match self {
            Resource::Gpu => "gpupack-gpu.sock".to_string(),
            Resource::GpuMemory => "gpupack-gpu-memory.sock".to_string(),
            Resource::Mig(p) => format!("gpupack-mig-{p}.sock"),
        }
    }
}

/// A device ID as advertised to kubelet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceId {
    /// Slice `slice` of the GPU with this UUID (`<uuid>::s<slice>`).
    Slice { gpu_uuid: String, slice: u32 },
    /// Memory unit `unit` of the GPU with this UUID (`<uuid>::m<unit>`).
    MemoryUnit { gpu_uuid: String, unit: u32 },
    /// A MIG instance, by its MIG UUID.
    Mig { mig_uuid: String },
}

/// A device ID that does not follow gpupack's scheme.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device ID {id:?}: {problem}")]
pub struct DeviceIdError {
    /// The offending ID.
    pub id: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl DeviceId {
    /// The physical GPU (or MIG instance) UUID this device belongs to.
    pub fn uuid(&self) -> &str {
        match self {
            DeviceId::Slice { gpu_uuid, .. } | DeviceId::MemoryUnit { gpu_uuid, .. } => gpu_uuid,
            DeviceId::Mig { mig_uuid } => mig_uuid,
        }
    }

    /// Parses an ID produced by [`DeviceId`]'s `Display`.
    pub fn parse(id: &str) -> Result<DeviceId, DeviceIdError> {
        let err = |problem| DeviceIdError {
            id: id.to_string(),
            problem,
        };
        if id.len() > MAX_DEVICE_ID_LEN {
            return Err(err("longer than kubelet's 63 characters"));
        }
        match id.split_once("::") {
            None if id.starts_with("MIG-") => Ok(DeviceId::Mig {
                mig_uuid: id.to_string(),
            }),
            None => Err(err("expected <uuid>::s<n>, <uuid>::m<n> or a MIG UUID")),
            Some(("", _)) => Err(err("empty GPU UUID")),
            Some((uuid, rest)) => {
                let (kind, number) = rest.split_at(rest.len().min(1));
                let n: u32 = number
                    .parse()
                    .map_err(|_| err("index after ::s or ::m is not a number"))?;
                match kind {
                    "s" => Ok(DeviceId::Slice {
                        gpu_uuid: uuid.to_string(),
                        slice: n,
                    }),
                    "m" => Ok(DeviceId::MemoryUnit {
                        gpu_uuid: uuid.to_string(),
                        unit: n,
                    }),
                    _ => Err(err("suffix must be ::s<n> (slice) or ::m<n> (memory unit)")),
                }
            }
        }
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceId::Slice { gpu_uuid, slice } => write!(f, "{gpu_uuid}::s{slice}"),
            DeviceId::MemoryUnit { gpu_uuid, unit } => write!(f, "{gpu_uuid}::m{unit}"),
            DeviceId::Mig { mig_uuid } => f.write_str(mig_uuid),
        }
    }
}

/// Environment variables the device plugin sets in each container it
/// allocates, so that a server can size itself (e.g. vLLM's
/// `--gpu-memory-utilization "$GPUPACK_GPU_MEMORY_UTILIZATION"`).
pub mod env {
    /// Comma-separated UUIDs of the container's GPUs, in assignment order.
    pub const GPU_UUIDS: &str = "GPUPACK_GPU_UUIDS";
    /// Number of GPUs the container received.
    pub const GPU_COUNT: &str = "GPUPACK_GPU_COUNT";
    /// Comma-separated bytes assigned on each GPU, aligned with [`GPU_UUIDS`].
    pub const GPU_MEMORY_BYTES: &str = "GPUPACK_GPU_MEMORY_BYTES";
    /// Comma-separated fraction (0–1, four decimals) of each GPU's total memory
    /// assigned to the container, aligned with [`GPU_UUIDS`].
    pub const GPU_MEMORY_FRACTION: &str = "GPUPACK_GPU_MEMORY_FRACTION";
    /// The value to pass to the engine's memory flag (vLLM's
    /// `--gpu-memory-utilization`, SGLang's `--mem-fraction-static`, TGI's
    /// `--cuda-memory-fraction`), four decimals. For a container sized from
    /// its pod's model annotations, the flag the extender computed for that
    /// engine and grant (leaving room for what the engine holds outside the
    /// flag); otherwise the smallest of [`GPU_MEMORY_FRACTION`], rounded
    /// down, and the request must leave that room itself.
    pub const GPU_MEMORY_UTILIZATION: &str = "GPUPACK_GPU_MEMORY_UTILIZATION";
    /// KV-cache bytes per GPU the extender planned for a container sized
    /// from its model annotations (vLLM's `--kv-cache-memory-bytes`, which
    /// takes the place of `--gpu-memory-utilization`); unset otherwise.
    pub const KV_CACHE_BYTES: &str = "GPUPACK_KV_CACHE_BYTES";
    /// Comma-separated MIG instance UUIDs, when MIG resources were allocated.
    pub const MIG_UUIDS: &str = "GPUPACK_MIG_UUIDS";
    /// The NVIDIA container runtime's variable naming the visible devices.
    pub const NVIDIA_VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";

    /// How the fractions above are written: ten-thousandths as `0.3750`.
    pub fn fraction_text(ten_thousandths: u64) -> String {
        format!(
            "{}.{:04}",
            ten_thousandths / 10_000,
            ten_thousandths % 10_000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn resource_names_round_trip() {
        for r in [
            Resource::Gpu,
            Resource::GpuMemory,
            Resource::Mig("1g.10gb".into()),
        ] {
            assert_eq!(Resource::parse(&r.name()), Some(r));
        }
        assert_eq!(Resource::parse("nvidia.com/gpu"), None);
        assert_eq!(Resource::parse("gpupack.io/mig-"), None);
        assert_eq!(mig_resource_name("1g.10gb+me"), "gpupack.io/mig-1g.10gb.me");
    }

    #[test]
    fn sockets_are_distinct_per_resource() {
        let names = [
            Resource::Gpu.socket_name(),
            Resource::GpuMemory.socket_name(),
            Resource::Mig("3g.40gb".into()).socket_name(),
        ];
        assert_eq!(names[0], "gpupack-gpu.sock");
        assert_ne!(names[0], names[1]);
        assert_ne!(names[1], names[2]);
    }

    #[test]
    fn device_ids_reject_garbage_with_reason() {
        for bad in [
            "",
            "GPU-1",
            "::s1",
            "GPU-1::x1",
            "GPU-1::s",
            "GPU-1::s-1",
            "GPU-1::sabc",
        ] {
            let e = DeviceId::parse(bad).unwrap_err();
            assert_eq!(e.id, bad);
        }
        let long = format!("GPU-{}::s1", "a".repeat(60));
        assert!(DeviceId::parse(&long).unwrap_err().problem.contains("63"));
    }

    proptest! {
        #[test]
        fn device_ids_round_trip(uuid in "GPU-[0-9a-f]{8}-[0-9a-f]{4}", n in 0u32..100_000, kind in 0..3) {
            let id = match kind {
                0 => DeviceId::Slice { gpu_uuid: uuid.clone(), slice: n },
                1 => DeviceId::MemoryUnit { gpu_uuid: uuid.clone(), unit: n },
                _ => DeviceId::Mig { mig_uuid: uuid.replace("GPU-", "MIG-") },
            };
            prop_assert_eq!(DeviceId::parse(&id.to_string()).unwrap(), id);
        }
    }

    #[test]
    fn mig_profiles() {
        for (ok, compute, gib) in [
            ("1g.10gb", 1, 10),
            ("7g.80gb", 7, 80),
            ("1g.10gb+me", 1, 10),
            ("1g.24gb+gfx", 1, 24),
            ("1g.10gb.me", 1, 10),
        ] {
            assert_eq!(
                MigProfile::parse(ok),
                Some(MigProfile {
                    compute_slices: compute,
                    memory_gib: gib
                }),
                "{ok}"
            );
        }
        for bad in [
            "", "1g", "g.10gb", "1g.10", "1g.10gb+", "1x.10gb", "0g.10gb", "1g.0gb",
        ] {
            assert_eq!(MigProfile::parse(bad), None, "{bad}");
        }
        assert_eq!(mig_request_form("1g.10gb+me"), "1g.10gb.me");
        assert_eq!(mig_resource_name("1g.10gb+me"), "gpupack.io/mig-1g.10gb.me");
    }
}
