//! The node GPU inventory, `gpupack.io/v1` `GpuNodeInventory`.
//!
//! The device plugin on each node publishes one cluster-scoped
//! `GpuNodeInventory` named after its node; the scheduler extender watches
//! them to know every GPU's memory, health, MIG layout and links. Keeping it
//! in its own custom resource (not a Node annotation) lets the extender watch
//! inventories without watching every Node, and lets RBAC give the device
//! plugin no write access to Node objects.
//!
//! A complete document, as the API server stores it:
//!
//! ```
//! let doc = r#"{
//!   "apiVersion": "gpupack.io/v1",
//!   "kind": "GpuNodeInventory",
//!   "metadata": { "name": "gpu-node-1" },
//!   "spec": {
//!     "nodeName": "gpu-node-1",
//!     "backend": "nvml",
//!     "driverVersion": "570.124.06",
//!     "slicesPerGpu": 4,
//!     "memoryUnitBytes": 1073741824,
//!     "gpus": [
//!       { "index": 0, "uuid": "GPU-5c1e2b9a-0000-4000-8000-000000000000",
//!         "product": "NVIDIA H100 80GB HBM3", "memoryBytes": 85018542080,
//!         "pciBusId": "00000000:18:00.0", "numaNode": 0, "health": "Healthy" },
//!       { "index": 1, "uuid": "GPU-5c1e2b9a-0000-4000-8000-000000000001",
//!         "product": "NVIDIA H100 80GB HBM3", "memoryBytes": 85018542080,
//!         "pciBusId": "00000000:2a:00.0", "numaNode": 0,
//!         "health": "Unhealthy", "healthReason": "XID 79 (GPU fell off the bus)" }
//!     ],
//!     "links": [
//!       { "a": 0, "b": 1, "nvlinks": 18, "nvswitch": true, "pcie": "sameNuma" }
//!     ]
//!   }
//! }"#;
//! let inv = proto::inventory::GpuNodeInventory::from_json(doc).unwrap();
//! assert_eq!(inv.spec.gpus.len(), 2);
//! assert_eq!(inv.spec.link_level(0, 1), Some(proto::inventory::LinkLevel::NvSwitch));
//! assert!(!inv.spec.gpus[1].health.is_healthy());
//! ```
//!
//! MIG: a GPU in MIG mode lists its instances; their memory counts against the
//! parent, and only MIG resources are handed out from it.
//!
//! ```
//! let spec = r#"{
//!   "nodeName": "a100-mig", "backend": "simulated", "slicesPerGpu": 4, "memoryUnitBytes": 1073741824,
//!   "gpus": [{ "index": 0, "uuid": "GPU-a100-0", "product": "NVIDIA A100-SXM4-80GB",
//!              "memoryBytes": 85899345920, "pciBusId": "00000000:07:00.0", "numaNode": null,
//!              "health": "Healthy", "migEnabled": true,
//!              "migInstances": [
//!                { "uuid": "MIG-a100-0-3g", "profile": "3g.40gb", "memoryBytes": 42949672960,
//!                  "gpuInstanceId": 1, "computeInstanceId": 0, "health": "Healthy" },
//!                { "uuid": "MIG-a100-0-1g", "profile": "1g.10gb", "memoryBytes": 10737418240,
//!                  "gpuInstanceId": 9, "computeInstanceId": 0, "health": "Healthy" }
//!              ] }],
//!   "links": []
//! }"#;
//! let inv = proto::inventory::NodeInventory::from_json(spec).unwrap();
//! assert_eq!(inv.gpus[0].mig_instances.len(), 2);
//! ```

use std::collections::{BTreeSet, HashSet};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{FormatError, from_json};
use crate::resources::{MAX_DEVICE_ID_LEN, MAX_SLICES_PER_GPU};

const DOC: &str = "inventory";

/// API group/version of the custom resource.
pub const API_VERSION: &str = "gpupack.io/v1";
/// Kind of the custom resource.
pub const KIND: &str = "GpuNodeInventory";
/// Largest plausible memory of one GPU (1 TiB); anything above is a unit mistake.
pub const MAX_GPU_MEMORY_BYTES: u64 = 1 << 40;
/// Most GPUs one node can report (the largest NVSwitch systems have 72).
pub const MAX_GPUS_PER_NODE: usize = 128;
/// Most NVLinks between two GPUs (NVML counts at most 18 per GPU today).
pub const MAX_NVLINKS: u32 = 64;

/// Everything the scheduler needs to know about one node's GPUs.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "gpupack.io",
    version = "v1",
    kind = "GpuNodeInventory",
    plural = "gpunodeinventories",
    shortname = "gpuinv",
    printcolumn = r#"{"name":"Backend","type":"string","jsonPath":".spec.backend"}"#,
    printcolumn = r#"{"name":"Driver","type":"string","jsonPath":".spec.driverVersion"}"#,
    printcolumn = r#"{"name":"Slices","type":"integer","jsonPath":".spec.slicesPerGpu","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NodeInventory {
    /// The Kubernetes node these GPUs are on; equals the object's name.
    pub node_name: String,
    /// Where the facts came from.
    pub backend: Backend,
    /// NVIDIA driver version, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// Slices each non-MIG GPU offers as `gpupack.io/gpu` devices.
    pub slices_per_gpu: u32,
    /// Bytes per `gpupack.io/gpu-memory` device.
    pub memory_unit_bytes: u64,
    /// The GPUs, by NVML index.
    pub gpus: Vec<Gpu>,
    /// One entry per unordered pair of GPUs (`a < b`).
    pub links: Vec<GpuLink>,
}

/// Which discovery backend produced an inventory.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Backend {
    /// Real GPUs through NVML.
    Nvml,
    /// A simulated node described by a file.
    Simulated,
}

/// One physical GPU.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Gpu {
    /// NVML index.
    pub index: u32,
    /// NVML UUID (`GPU-…`), unique in the cluster.
    pub uuid: String,
    /// Product name as NVML reports it, e.g. `NVIDIA H100 80GB HBM3`.
    pub product: String,
    /// Memory processes can allocate, in bytes: NVML's total less what the
    /// driver and firmware reserve (CUDA's total, the figure engines'
    /// memory fractions multiply).
    pub memory_bytes: u64,
    /// PCI bus ID as NVML reports it (`00000000:18:00.0`).
    pub pci_bus_id: String,
    /// NUMA node the GPU is attached to; `null` when the platform has none.
    pub numa_node: Option<u32>,
    /// Health as kubelet will see it.
    pub health: Health,
    /// Why the GPU is unhealthy (e.g. the XID), for people reading the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    /// Whether MIG mode is on.
    #[serde(default)]
    pub mig_enabled: bool,
    /// The MIG instances present, when MIG mode is on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mig_instances: Vec<MigInstance>,
}

/// One MIG instance (a GPU instance with one compute instance).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigInstance {
    /// MIG UUID (`MIG-…`).
    pub uuid: String,
    /// Profile name, e.g. `1g.10gb` or `1g.10gb+me`.
    pub profile: String,
    /// Memory of the instance in bytes.
    pub memory_bytes: u64,
    /// GPU instance ID.
    pub gpu_instance_id: u32,
    /// Compute instance ID.
    pub compute_instance_id: u32,
    /// Health as kubelet will see it.
    pub health: Health,
}

/// Device health, with kubelet's strings.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Health {
    /// Usable.
    Healthy,
    /// Not to be handed out.
    Unhealthy,
}

impl Health {
    /// Whether new work may land here.
    pub fn is_healthy(self) -> bool {
        self == Health::Healthy
    }

    /// The string kubelet expects in `Device.health`.
    pub fn as_kubelet_str(self) -> &'static str {
        match self {
            Health::Healthy => crate::deviceplugin::constants::HEALTHY,
            Health::Unhealthy => crate::deviceplugin::constants::UNHEALTHY,
        }
    }
}

/// How two GPUs are connected.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuLink {
    /// Lower GPU index.
    pub a: u32,
    /// Higher GPU index.
    pub b: u32,
    /// Direct NVLinks between the two (0 when they only meet through a switch).
    pub nvlinks: u32,
    /// Both GPUs are on the same NVSwitch fabric.
    pub nvswitch: bool,
    /// Their closest common PCIe ancestor (NVML's topology level).
    pub pcie: PcieLevel,
}

/// NVML's `TopologyLevel` between two GPUs, nearest first.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum PcieLevel {
    /// Same board (NVML `INTERNAL`), e.g. a dual-GPU card.
    SameBoard,
    /// Behind one PCIe switch (`SINGLE`).
    SingleSwitch,
    /// Behind several PCIe switches without a host bridge (`MULTIPLE`).
    MultiSwitch,
    /// Through a host bridge (`HOSTBRIDGE`).
    HostBridge,
    /// Same NUMA node / CPU socket (`NODE`).
    SameNuma,
    /// Across CPU sockets (`SYSTEM`).
    CrossSocket,
}

/// The link classes placement ranks, best first: NVSwitch or NVLink, then a
/// shared PCIe switch, then the same NUMA node, then across sockets.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub enum LinkLevel {
    /// Same NVSwitch fabric.
    NvSwitch,
    /// Direct NVLink(s).
    NvLink,
    /// Same board or PCIe switch(es), no host bridge in between.
    PcieSwitch,
    /// Same NUMA node, through a host bridge or the CPU.
    SameNuma,
    /// Across CPU sockets.
    CrossSocket,
}

impl GpuLink {
    /// The class of this link.
    pub fn level(&self) -> LinkLevel {
        if self.nvswitch {
            LinkLevel::NvSwitch
        } else if self.nvlinks > 0 {
            LinkLevel::NvLink
        } else {
            match self.pcie {
                PcieLevel::SameBoard | PcieLevel::SingleSwitch | PcieLevel::MultiSwitch => {
                    LinkLevel::PcieSwitch
                }
                PcieLevel::HostBridge | PcieLevel::SameNuma => LinkLevel::SameNuma,
                PcieLevel::CrossSocket => LinkLevel::CrossSocket,
            }
        }
    }
}

impl GpuNodeInventory {
    /// Parses and validates a whole `GpuNodeInventory` object.
    pub fn from_json(text: &str) -> Result<GpuNodeInventory, FormatError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Header {
            api_version: String,
            kind: String,
        }
        let header: Header = from_json(DOC, text)?;
        if header.api_version != API_VERSION {
            return Err(FormatError::Version {
                document: DOC,
                field: "apiVersion",
                found: header.api_version,
                expected: API_VERSION,
            });
        }
        if header.kind != KIND {
            return Err(FormatError::invalid(
                DOC,
                "kind",
                format!("expected {KIND}, found {:?}", header.kind),
            ));
        }
        let inv: GpuNodeInventory = from_json(DOC, text)?;
        inv.validate()?;
        Ok(inv)
    }

    /// Checks the spec and that the object is named after its node.
    pub fn validate(&self) -> Result<(), FormatError> {
        self.spec.validate()?;
        match self.metadata.name.as_deref() {
            Some(name) if name == self.spec.node_name => Ok(()),
            other => Err(FormatError::invalid(
                DOC,
                "metadata.name",
                format!(
                    "must equal spec.nodeName {:?}, found {other:?}",
                    self.spec.node_name
                ),
            )),
        }
    }

    /// A new object for a node, named after it.
    pub fn for_node(spec: NodeInventory) -> GpuNodeInventory {
        GpuNodeInventory::new(&spec.node_name.clone(), spec)
    }
}

impl NodeInventory {
    /// Parses and validates the spec alone.
    pub fn from_json(text: &str) -> Result<NodeInventory, FormatError> {
        let inv: NodeInventory = from_json(DOC, text)?;
        inv.validate()?;
        Ok(inv)
    }

    /// The GPU with this UUID.
    pub fn gpu(&self, uuid: &str) -> Option<&Gpu> {
        self.gpus.iter().find(|g| g.uuid == uuid)
    }

    /// The GPU with this NVML index.
    pub fn gpu_by_index(&self, index: u32) -> Option<&Gpu> {
        self.gpus.iter().find(|g| g.index == index)
    }

    /// The link between two GPUs, in either order.
    pub fn link(&self, a: u32, b: u32) -> Option<&GpuLink> {
        let (a, b) = (a.min(b), a.max(b));
        self.links.iter().find(|l| l.a == a && l.b == b)
    }

    /// The class of the link between two GPUs, in either order.
    pub fn link_level(&self, a: u32, b: u32) -> Option<LinkLevel> {
        self.link(a, b).map(GpuLink::level)
    }

    /// Checks every rule of the format; the first broken one is reported.
    pub fn validate(&self) -> Result<(), FormatError> {
        let bad = |field: String, problem: String| Err(FormatError::invalid(DOC, field, problem));
        if self.node_name.is_empty() || self.node_name.len() > 253 {
            return bad(
                "nodeName".into(),
                "must be a node name of 1 to 253 characters".into(),
            );
        }
        if self.slices_per_gpu == 0 || self.slices_per_gpu > MAX_SLICES_PER_GPU {
            return bad(
                "slicesPerGpu".into(),
                format!(
                    "must be 1 to {MAX_SLICES_PER_GPU}, found {}",
                    self.slices_per_gpu
                ),
            );
        }
        if !(1 << 26..=1 << 36).contains(&self.memory_unit_bytes) {
            return bad(
                "memoryUnitBytes".into(),
                format!("must be 64 MiB to 64 GiB, found {}", self.memory_unit_bytes),
            );
        }
        if self.gpus.len() > MAX_GPUS_PER_NODE {
            return bad(
                "gpus".into(),
                format!(
                    "{} GPUs on one node is beyond the {MAX_GPUS_PER_NODE} supported",
                    self.gpus.len()
                ),
            );
        }
        let mut indexes = HashSet::new();
        let mut uuids = HashSet::new();
        for (i, gpu) in self.gpus.iter().enumerate() {
            let f = |name: &str| format!("gpus[{i}].{name}");
            if !indexes.insert(gpu.index) {
                return bad(f("index"), format!("duplicate GPU index {}", gpu.index));
            }
            check_uuid(&gpu.uuid, "GPU-", &f("uuid"))?;
            if !uuids.insert(gpu.uuid.as_str()) {
                return bad(f("uuid"), format!("duplicate UUID {}", gpu.uuid));
            }
            if gpu.product.is_empty() {
                return bad(f("product"), "must not be empty".into());
            }
            check_memory(gpu.memory_bytes, &f("memoryBytes"))?;
            if gpu.memory_bytes < self.memory_unit_bytes {
                return bad(
                    f("memoryBytes"),
                    format!(
                        "{} bytes is less than one memory unit ({} bytes)",
                        gpu.memory_bytes, self.memory_unit_bytes
                    ),
                );
            }
            if gpu.pci_bus_id.is_empty() {
                return bad(f("pciBusId"), "must not be empty".into());
            }
            if !gpu.mig_enabled && !gpu.mig_instances.is_empty() {
                return bad(
                    f("migInstances"),
                    "MIG instances listed but migEnabled is false".into(),
                );
            }
            let mut mig_total: u64 = 0;
            let mut instance_ids = HashSet::new();
            for (j, mig) in gpu.mig_instances.iter().enumerate() {
                let f = |name: &str| format!("gpus[{i}].migInstances[{j}].{name}");
                check_uuid(&mig.uuid, "MIG-", &f("uuid"))?;
                if !uuids.insert(mig.uuid.as_str()) {
                    return bad(f("uuid"), format!("duplicate UUID {}", mig.uuid));
                }
                if crate::resources::MigProfile::parse(&mig.profile).is_none() {
                    return bad(
                        f("profile"),
                        format!(
                            "{:?} is not a MIG profile like 1g.10gb or 1g.10gb+me",
                            mig.profile
                        ),
                    );
                }
                check_memory(mig.memory_bytes, &f("memoryBytes"))?;
                if !instance_ids.insert((mig.gpu_instance_id, mig.compute_instance_id)) {
                    return bad(
                        f("gpuInstanceId"),
                        "duplicate GPU/compute instance ID pair".into(),
                    );
                }
                mig_total = mig_total.saturating_add(mig.memory_bytes);
            }
            if mig_total > gpu.memory_bytes {
                return bad(
                    f("migInstances"),
                    format!(
                        "MIG instances hold {mig_total} bytes, more than the GPU's {}",
                        gpu.memory_bytes
                    ),
                );
            }
        }
        let mut pairs = BTreeSet::new();
        for (k, link) in self.links.iter().enumerate() {
            let f = |name: &str| format!("links[{k}].{name}");
            if link.a >= link.b {
                return bad(
                    f("b"),
                    format!(
                        "pairs are listed once with a < b, found a={} b={}",
                        link.a, link.b
                    ),
                );
            }
            for (name, idx) in [("a", link.a), ("b", link.b)] {
                if !indexes.contains(&idx) {
                    return bad(f(name), format!("no GPU with index {idx}"));
                }
            }
            if link.nvlinks > MAX_NVLINKS {
                return bad(
                    f("nvlinks"),
                    format!("{} NVLinks is beyond {MAX_NVLINKS}", link.nvlinks),
                );
            }
            if !pairs.insert((link.a, link.b)) {
                return bad(
                    f("a"),
                    format!("pair ({}, {}) listed twice", link.a, link.b),
                );
            }
        }
        let n = self.gpus.len();
        if pairs.len() != n * n.saturating_sub(1) / 2 {
            let mut sorted: Vec<u32> = indexes.into_iter().collect();
            sorted.sort_unstable();
            for (x, &a) in sorted.iter().enumerate() {
                for &b in &sorted[x + 1..] {
                    if !pairs.contains(&(a, b)) {
                        return bad("links".into(), format!("pair ({a}, {b}) is missing"));
                    }
                }
            }
        }
        Ok(())
    }
}

fn check_uuid(uuid: &str, prefix: &str, field: &str) -> Result<(), FormatError> {
    // Device IDs are `<uuid>::m<unit>`; leave room for the suffix within
    // kubelet's 63-character limit.
    const MAX_UUID_LEN: usize = MAX_DEVICE_ID_LEN - 8;
    if !uuid.starts_with(prefix) || uuid.len() <= prefix.len() {
        return Err(FormatError::invalid(
            DOC,
            field,
            format!("{uuid:?} does not start with {prefix}"),
        ));
    }
    if uuid.len() > MAX_UUID_LEN || uuid.contains("::") || uuid.contains(',') {
        return Err(FormatError::invalid(
            DOC,
            field,
            format!("{uuid:?} must be at most {MAX_UUID_LEN} characters without '::' or ','"),
        ));
    }
    Ok(())
}

fn check_memory(bytes: u64, field: &str) -> Result<(), FormatError> {
    if bytes == 0 || bytes > MAX_GPU_MEMORY_BYTES {
        return Err(FormatError::invalid(
            DOC,
            field,
            format!("{bytes} bytes is not a plausible GPU memory size (1 byte to 1 TiB)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32) -> Gpu {
        Gpu {
            index,
            uuid: format!("GPU-0000000{index}-aaaa-bbbb-cccc-dddddddddddd"),
            product: "NVIDIA H100 80GB HBM3".into(),
            memory_bytes: 80 << 30,
            pci_bus_id: format!("00000000:{:02x}:00.0", 0x18 + index),
            numa_node: Some(index / 4),
            health: Health::Healthy,
            health_reason: None,
            mig_enabled: false,
            mig_instances: vec![],
        }
    }

    fn node(n: u32) -> NodeInventory {
        let mut links = vec![];
        for a in 0..n {
            for b in a + 1..n {
                links.push(GpuLink {
                    a,
                    b,
                    nvlinks: 0,
                    nvswitch: true,
                    pcie: if a / 4 == b / 4 {
                        PcieLevel::SameNuma
                    } else {
                        PcieLevel::CrossSocket
                    },
                });
            }
        }
        NodeInventory {
            node_name: "node-a".into(),
            backend: Backend::Simulated,
            driver_version: None,
            slices_per_gpu: 4,
            memory_unit_bytes: 1 << 30,
            gpus: (0..n).map(gpu).collect(),
            links,
        }
    }

    fn rejects(inv: &NodeInventory, field: &str) -> String {
        match inv.validate() {
            Err(FormatError::Invalid {
                field: f, problem, ..
            }) => {
                assert_eq!(f, field, "{problem}");
                problem
            }
            other => panic!("expected Invalid at {field}, got {other:?}"),
        }
    }

    #[test]
    fn round_trips_through_the_custom_resource() {
        let obj = GpuNodeInventory::for_node(node(8));
        let text = serde_json::to_string(&obj).unwrap();
        assert!(text.contains(r#""apiVersion":"gpupack.io/v1""#));
        assert!(text.contains(r#""memoryBytes":85899345920"#));
        let back = GpuNodeInventory::from_json(&text).unwrap();
        assert_eq!(back.spec, obj.spec);
        assert_eq!(back.metadata.name.as_deref(), Some("node-a"));
    }

    #[test]
    fn unknown_version_is_named() {
        let text = serde_json::to_string(&GpuNodeInventory::for_node(node(1)))
            .unwrap()
            .replace("gpupack.io/v1", "gpupack.io/v2");
        let err = GpuNodeInventory::from_json(&text).unwrap_err();
        assert!(matches!(err, FormatError::Version { found, .. } if found == "gpupack.io/v2"));
    }

    #[test]
    fn missing_field_and_negative_size_name_the_field() {
        let mut v = serde_json::to_value(node(2)).unwrap();
        v["gpus"][1].as_object_mut().unwrap().remove("uuid");
        let err = NodeInventory::from_json(&v.to_string()).unwrap_err();
        assert!(err.to_string().contains("gpus[1]"), "{err}");
        assert!(err.to_string().contains("uuid"), "{err}");

        let mut v = serde_json::to_value(node(2)).unwrap();
        v["gpus"][0]["memoryBytes"] = serde_json::json!(-1);
        let err = NodeInventory::from_json(&v.to_string()).unwrap_err();
        assert!(err.to_string().contains("gpus[0].memoryBytes"), "{err}");
    }

    #[test]
    fn rejects_broken_rules() {
        let mut inv = node(2);
        inv.gpus[1].uuid = inv.gpus[0].uuid.clone();
        assert!(rejects(&inv, "gpus[1].uuid").contains("duplicate"));

        let mut inv = node(2);
        inv.gpus[0].memory_bytes = 5 << 40;
        assert!(rejects(&inv, "gpus[0].memoryBytes").contains("plausible"));

        let mut inv = node(2);
        inv.gpus[1].index = 0;
        rejects(&inv, "gpus[1].index");

        let mut inv = node(3);
        inv.links.pop();
        assert!(rejects(&inv, "links").contains("(1, 2)"));

        let mut inv = node(3);
        inv.links[0].a = 1;
        inv.links[0].b = 0;
        rejects(&inv, "links[0].b");

        let mut inv = node(2);
        inv.links[0].b = 7;
        rejects(&inv, "links[0].b");

        let mut inv = node(1);
        inv.slices_per_gpu = 0;
        rejects(&inv, "slicesPerGpu");

        let mut inv = node(1);
        inv.gpus[0].uuid = "5c1e".into();
        rejects(&inv, "gpus[0].uuid");

        let mut inv = node(1);
        inv.gpus[0].mig_instances.push(MigInstance {
            uuid: "MIG-1".into(),
            profile: "1g.10gb".into(),
            memory_bytes: 10 << 30,
            gpu_instance_id: 1,
            compute_instance_id: 0,
            health: Health::Healthy,
        });
        rejects(&inv, "gpus[0].migInstances");
        inv.gpus[0].mig_enabled = true;
        inv.validate().unwrap();
        inv.gpus[0].mig_instances[0].profile = "big".into();
        rejects(&inv, "gpus[0].migInstances[0].profile");
    }

    #[test]
    fn object_name_must_match_node() {
        let mut obj = GpuNodeInventory::for_node(node(1));
        obj.metadata.name = Some("other".into());
        assert!(
            matches!(obj.validate(), Err(FormatError::Invalid { field, .. }) if field == "metadata.name")
        );
    }

    #[test]
    fn link_levels_rank_nvlink_over_pcie() {
        let l = |nvlinks, nvswitch, pcie| GpuLink {
            a: 0,
            b: 1,
            nvlinks,
            nvswitch,
            pcie,
        };
        assert_eq!(
            l(0, true, PcieLevel::CrossSocket).level(),
            LinkLevel::NvSwitch
        );
        assert_eq!(
            l(4, false, PcieLevel::CrossSocket).level(),
            LinkLevel::NvLink
        );
        assert_eq!(
            l(0, false, PcieLevel::SingleSwitch).level(),
            LinkLevel::PcieSwitch
        );
        assert_eq!(
            l(0, false, PcieLevel::HostBridge).level(),
            LinkLevel::SameNuma
        );
        assert_eq!(
            l(0, false, PcieLevel::CrossSocket).level(),
            LinkLevel::CrossSocket
        );
        assert!(LinkLevel::NvLink < LinkLevel::PcieSwitch);
        assert_eq!(node(8).link_level(5, 1), Some(LinkLevel::NvSwitch));
    }
}
