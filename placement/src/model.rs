//! The cluster model: what each node has, independent of what is placed on it.
//!
//! These are the placement core's own types. Adapters (the scheduler extender,
//! the simulator) convert their inputs into them, so the core never depends on
//! a wire format.

use serde::{Deserialize, Serialize};

/// Health of a GPU or MIG instance. Unhealthy devices take no new work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Health {
    Healthy,
    Unhealthy,
}

/// Closest common PCIe ancestor of two GPUs (NVML's topology level), nearest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PcieLevel {
    SameBoard,
    SingleSwitch,
    MultipleSwitches,
    HostBridge,
    SameNuma,
    CrossSocket,
}

/// The link classes placement ranks, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LinkLevel {
    /// Same NVSwitch fabric.
    NvSwitch,
    /// Direct NVLink(s).
    NvLink,
    /// Same board or PCIe switch(es), no host bridge in between.
    PcieSwitch,
    /// Same NUMA node, through a host bridge or the CPU.
    SameNuma,
    /// Across CPU sockets, or nothing is known about the link.
    CrossSocket,
}

impl LinkLevel {
    /// All levels, best first.
    pub const ALL: [LinkLevel; 5] = [
        LinkLevel::NvSwitch,
        LinkLevel::NvLink,
        LinkLevel::PcieSwitch,
        LinkLevel::SameNuma,
        LinkLevel::CrossSocket,
    ];

    /// Words for messages ("on one NVLink domain").
    pub fn domain_words(self) -> &'static str {
        match self {
            LinkLevel::NvSwitch => "one NVSwitch fabric",
            LinkLevel::NvLink => "one NVLink domain",
            LinkLevel::PcieSwitch => "one PCIe switch",
            LinkLevel::SameNuma => "one NUMA node",
            LinkLevel::CrossSocket => "one node",
        }
    }

    pub(crate) fn rank(self) -> u8 {
        self as u8
    }
}

/// A pre-partitioned MIG instance on a GPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigSpec {
    /// Device identifier handed to the container (MIG UUID).
    pub uuid: String,
    /// Profile name, e.g. `1g.10gb`.
    pub profile: String,
    pub memory_bytes: u64,
    pub health: Health,
}

/// One physical GPU of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuSpec {
    /// NVML index on the node.
    pub index: u32,
    pub uuid: String,
    /// Product name, e.g. `NVIDIA H100 80GB HBM3` or a short model name (`T4`).
    pub product: String,
    pub memory_bytes: u64,
    pub health: Health,
    pub numa_node: Option<u32>,
    /// MIG instances; a GPU with any is in MIG mode and takes only MIG requests.
    pub mig: Vec<MigSpec>,
}

/// How two GPUs of a node are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSpec {
    /// NVML index of one GPU.
    pub a: u32,
    /// NVML index of the other GPU.
    pub b: u32,
    /// Direct NVLinks between the two.
    pub nvlinks: u32,
    /// Both GPUs are on one NVSwitch fabric.
    pub nvswitch: bool,
    pub pcie: PcieLevel,
}

impl LinkSpec {
    /// The class of this link.
    pub fn level(&self) -> LinkLevel {
        if self.nvswitch {
            LinkLevel::NvSwitch
        } else if self.nvlinks > 0 {
            LinkLevel::NvLink
        } else {
            match self.pcie {
                PcieLevel::SameBoard | PcieLevel::SingleSwitch | PcieLevel::MultipleSwitches => {
                    LinkLevel::PcieSwitch
                }
                PcieLevel::HostBridge | PcieLevel::SameNuma => LinkLevel::SameNuma,
                PcieLevel::CrossSocket => LinkLevel::CrossSocket,
            }
        }
    }
}

/// A node's GPU inventory and allocatable host resources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub name: String,
    pub gpus: Vec<GpuSpec>,
    /// Pairwise links; pairs without an entry count as [`LinkLevel::CrossSocket`]
    /// unless both GPUs report the same NUMA node.
    pub links: Vec<LinkSpec>,
    /// Time-slicing replicas per GPU: how many containers may share one GPU.
    pub slices_per_gpu: u32,
    pub cpu_milli: u64,
    pub memory_bytes: u64,
}

/// Why a node inventory cannot enter the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("node name is empty")]
    EmptyName,
    #[error("node {node}: {count} GPUs; at most {max} are supported")]
    TooManyGpus {
        node: String,
        count: usize,
        max: usize,
    },
    #[error("node {node}: GPU index {index} appears twice")]
    DuplicateGpu { node: String, index: u32 },
    #[error("node {node}: GPU {index} has 0 bytes of memory")]
    ZeroMemory { node: String, index: u32 },
    #[error("node {node}: slices per GPU is 0")]
    ZeroSlices { node: String },
    #[error("node {node}: link {a}-{b} names a GPU the node does not have")]
    UnknownLinkGpu { node: String, a: u32, b: u32 },
}

/// Most GPUs one node may have; keeps per-node arrays small and searches bounded.
pub const MAX_GPUS_PER_NODE: usize = 64;

impl NodeSpec {
    /// Checks the facts the ledger relies on.
    pub fn validate(&self) -> Result<(), ModelError> {
        let node = || self.name.clone();
        if self.name.is_empty() {
            return Err(ModelError::EmptyName);
        }
        if self.gpus.len() > MAX_GPUS_PER_NODE {
            return Err(ModelError::TooManyGpus {
                node: node(),
                count: self.gpus.len(),
                max: MAX_GPUS_PER_NODE,
            });
        }
        if self.slices_per_gpu == 0 && !self.gpus.is_empty() {
            return Err(ModelError::ZeroSlices { node: node() });
        }
        for (i, gpu) in self.gpus.iter().enumerate() {
            if self.gpus[..i].iter().any(|g| g.index == gpu.index) {
                return Err(ModelError::DuplicateGpu {
                    node: node(),
                    index: gpu.index,
                });
            }
            if gpu.memory_bytes == 0 {
                return Err(ModelError::ZeroMemory {
                    node: node(),
                    index: gpu.index,
                });
            }
        }
        for link in &self.links {
            let known = |i: u32| self.gpus.iter().any(|g| g.index == i);
            if !known(link.a) || !known(link.b) {
                return Err(ModelError::UnknownLinkGpu {
                    node: node(),
                    a: link.a,
                    b: link.b,
                });
            }
        }
        Ok(())
    }
}

/// Case-insensitive match of an allowed model name against a GPU product name:
/// the whole name, or one of its words (`A100` matches `NVIDIA A100-SXM4-80GB`,
/// `A10` does not).
pub fn model_matches(allowed: &str, product: &str) -> bool {
    if allowed.eq_ignore_ascii_case(product) {
        return true;
    }
    product
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| !word.is_empty() && word.eq_ignore_ascii_case(allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_match_uses_words() {
        assert!(model_matches("A100", "NVIDIA A100-SXM4-80GB"));
        assert!(!model_matches("A10", "NVIDIA A100-SXM4-80GB"));
        assert!(model_matches("t4", "T4"));
        assert!(!model_matches("V100M16", "V100M32"));
    }

    #[test]
    fn link_level_prefers_nvswitch_then_nvlink() {
        let l = LinkSpec {
            a: 0,
            b: 1,
            nvlinks: 2,
            nvswitch: false,
            pcie: PcieLevel::CrossSocket,
        };
        assert_eq!(l.level(), LinkLevel::NvLink);
        let p = LinkSpec {
            nvlinks: 0,
            pcie: PcieLevel::HostBridge,
            ..l
        };
        assert_eq!(p.level(), LinkLevel::SameNuma);
    }
}
