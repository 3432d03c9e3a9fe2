//! What a pod asks for.

use serde::{Deserialize, Serialize};

use crate::model::LinkLevel;

/// Identity of a pod in the ledger. The UID tells a re-created pod of the same
/// name apart from its predecessor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodKey {
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        uid: impl Into<String>,
    ) -> Self {
        PodKey {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How much of each GPU a container needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemoryNeed {
    /// The whole GPU, exclusively: all memory and all slices.
    Whole,
    /// This many bytes of GPU memory, and one slice.
    Bytes(u64),
    /// A share of the chosen GPU's memory in thousandths (1000 = the whole GPU,
    /// exclusively), and one slice. This is the Alibaba trace's `gpu_milli`.
    Milli(u32),
}

impl MemoryNeed {
    /// Bytes this need takes on a GPU of `total` bytes; `None` means the whole GPU.
    pub(crate) fn bytes_on(self, total: u64) -> Option<u64> {
        match self {
            MemoryNeed::Whole => None,
            MemoryNeed::Bytes(b) => Some(b),
            MemoryNeed::Milli(m) if m >= 1000 => None,
            MemoryNeed::Milli(m) => Some(((total as u128 * m as u128) / 1000) as u64),
        }
    }

    /// The need in thousandths of a GPU of `total` bytes (rounded up), as
    /// fragmentation measures count it.
    pub(crate) fn milli_on(self, total: u64) -> u32 {
        match self {
            MemoryNeed::Whole => 1000,
            MemoryNeed::Milli(m) => m.min(1000),
            MemoryNeed::Bytes(b) => {
                if total == 0 {
                    return 1001;
                }
                let m = (b as u128 * 1000).div_ceil(total as u128);
                m.min(1001) as u32
            }
        }
    }
}

/// The GPUs one container needs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GpuNeed {
    /// `count` distinct GPUs on one node, each with `memory` free. `max_link`
    /// bounds the worst link between any two of them (e.g. NVLink only).
    Gpus {
        count: u32,
        memory: MemoryNeed,
        max_link: Option<LinkLevel>,
    },
    /// One free MIG instance of this profile with at least `min_memory`
    /// bytes (0: any): an LLM server sized by its model must fit the
    /// instance's real memory, which is below the profile name's figure.
    Mig {
        profile: String,
        #[serde(default)]
        min_memory: u64,
    },
}

/// What one container of a pod needs; containers without GPU needs can be
/// left out (their CPU and memory go in [`PodDemand`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContainerDemand {
    pub name: String,
    pub gpu: GpuNeed,
}

/// Everything a pod needs from one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodDemand {
    pub containers: Vec<ContainerDemand>,
    /// GPU models the pod accepts (matched by [`crate::model_matches`]); empty = any.
    pub allowed_models: Vec<String>,
    pub cpu_milli: u64,
    pub memory_bytes: u64,
}

impl PodDemand {
    /// A pod whose single container needs `count` GPUs with `memory` each.
    pub fn gpus(count: u32, memory: MemoryNeed) -> Self {
        PodDemand {
            containers: vec![ContainerDemand {
                name: "main".into(),
                gpu: GpuNeed::Gpus {
                    count,
                    memory,
                    max_link: None,
                },
            }],
            ..PodDemand::default()
        }
    }

    pub fn with_cpu(mut self, cpu_milli: u64, memory_bytes: u64) -> Self {
        self.cpu_milli = cpu_milli;
        self.memory_bytes = memory_bytes;
        self
    }

    pub fn with_models(mut self, models: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.allowed_models = models.into_iter().map(Into::into).collect();
        self
    }

    /// Total GPUs over all containers (MIG instances count as one).
    pub fn gpu_count(&self) -> u32 {
        self.containers
            .iter()
            .map(|c| match &c.gpu {
                GpuNeed::Gpus { count, .. } => *count,
                GpuNeed::Mig { .. } => 1,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milli_resolves_against_gpu_memory() {
        assert_eq!(MemoryNeed::Milli(500).bytes_on(1001), Some(500));
        assert_eq!(MemoryNeed::Milli(1000).bytes_on(1001), None);
        assert_eq!(MemoryNeed::Bytes(10).milli_on(30), 334);
        assert_eq!(MemoryNeed::Whole.milli_on(30), 1000);
    }
}
