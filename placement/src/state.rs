//! Live per-node state the ledger keeps: free memory, slices and MIG
//! instances per GPU, free CPU and host memory.

use crate::model::{Health, LinkLevel, NodeSpec};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MigState {
    pub uuid: String,
    pub profile: String,
    pub memory: u64,
    pub healthy: bool,
    pub taken: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GpuState {
    pub index: u32,
    pub uuid: String,
    /// Position of the product name in the ledger's model table.
    pub model: u16,
    pub total: u64,
    pub free: u64,
    pub slices_total: u32,
    pub slices_free: u32,
    pub healthy: bool,
    pub mig: Vec<MigState>,
    /// Free memory in thousandths of the GPU (0 when the GPU takes nothing new),
    /// the unit fragmentation measures count in.
    pub free_milli: u32,
}

impl GpuState {
    /// Takes shared (non-MIG) work now.
    pub fn usable(&self) -> bool {
        self.healthy && self.mig.is_empty()
    }

    pub fn fully_free(&self) -> bool {
        self.free == self.total && self.slices_free == self.slices_total
    }

    pub fn refresh_milli(&mut self) {
        self.free_milli = if self.usable() {
            thousandths(self.free, self.total)
        } else {
            0
        };
    }
}

/// `free` in thousandths of `total`, rounded to nearest: the unit
/// fragmentation measures count in.
pub(crate) fn thousandths(free: u64, total: u64) -> u32 {
    let total = total.max(1);
    match free
        .checked_mul(1000)
        .and_then(|f| f.checked_add(total / 2))
    {
        Some(scaled) => (scaled / total) as u32,
        // Beyond 18 PB: never a GPU, but exact all the same.
        None => ((free as u128 * 1000 + total as u128 / 2) / total as u128) as u32,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeState {
    pub name: String,
    /// Hash of the static facts; nodes with equal shape and equal free amounts
    /// score alike.
    pub shape: u64,
    pub gpus: Vec<GpuState>,
    /// Link rank between GPU positions i and j at `i * n + j`.
    pub links: Vec<u8>,
    /// All pairs share one rank, so link search can be skipped.
    pub uniform_links: bool,
    pub cpu_total: u64,
    pub cpu_free: u64,
    pub mem_total: u64,
    pub mem_free: u64,
    /// Hash of shape and device health: nodes alike in what they could
    /// ever hold.
    pub capacity_sig: u64,
    /// Hash of shape and all free amounts.
    pub sig: u64,
}

/// Small multiplicative hash; the ledger only needs it to group equal states.
#[derive(Clone, Copy)]
pub(crate) struct Mix(pub u64);

impl Mix {
    pub fn add(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl NodeState {
    pub fn new(spec: &NodeSpec, model_of: &mut impl FnMut(&str) -> u16) -> NodeState {
        let gpus: Vec<GpuState> = spec
            .gpus
            .iter()
            .map(|g| {
                let mut s = GpuState {
                    index: g.index,
                    uuid: g.uuid.clone(),
                    model: model_of(&g.product),
                    total: g.memory_bytes,
                    free: g.memory_bytes,
                    slices_total: spec.slices_per_gpu,
                    slices_free: spec.slices_per_gpu,
                    healthy: g.health == Health::Healthy,
                    mig: g
                        .mig
                        .iter()
                        .map(|m| MigState {
                            uuid: m.uuid.clone(),
                            profile: m.profile.clone(),
                            memory: m.memory_bytes,
                            healthy: m.health == Health::Healthy,
                            taken: false,
                        })
                        .collect(),
                    free_milli: 0,
                };
                s.refresh_milli();
                s
            })
            .collect();
        let n = gpus.len();
        let mut links = vec![LinkLevel::CrossSocket.rank(); n * n];
        for (i, a) in spec.gpus.iter().enumerate() {
            for (j, b) in spec.gpus.iter().enumerate() {
                if i != j && a.numa_node.is_some() && a.numa_node == b.numa_node {
                    links[i * n + j] = LinkLevel::SameNuma.rank();
                }
            }
        }
        for link in &spec.links {
            let pa = spec.gpus.iter().position(|g| g.index == link.a);
            let pb = spec.gpus.iter().position(|g| g.index == link.b);
            if let (Some(i), Some(j)) = (pa, pb) {
                let r = link.level().rank();
                links[i * n + j] = r;
                links[j * n + i] = r;
            }
        }
        let uniform_links = {
            let mut ranks =
                (0..n).flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)));
            match ranks.next() {
                None => true,
                Some((i0, j0)) => {
                    let r0 = links[i0 * n + j0];
                    ranks.all(|(i, j)| links[i * n + j] == r0)
                }
            }
        };
        let mut shape = Mix(n as u64);
        for g in &gpus {
            shape.add(g.model as u64);
            shape.add(g.total);
            shape.add(g.slices_total as u64);
            for m in &g.mig {
                shape.add(m.memory);
                for b in m.profile.bytes() {
                    shape.add(b as u64);
                }
            }
        }
        for r in &links {
            shape.add(*r as u64);
        }
        shape.add(spec.cpu_milli);
        shape.add(spec.memory_bytes);
        let mut capacity = shape;
        for g in &gpus {
            capacity.add(g.healthy as u64);
            for m in &g.mig {
                capacity.add(m.healthy as u64);
            }
        }
        let mut node = NodeState {
            name: spec.name.clone(),
            shape: shape.0,
            gpus,
            links,
            uniform_links,
            cpu_total: spec.cpu_milli,
            cpu_free: spec.cpu_milli,
            mem_total: spec.memory_bytes,
            mem_free: spec.memory_bytes,
            capacity_sig: capacity.0,
            sig: 0,
        };
        node.refresh_sig();
        node
    }

    pub fn link(&self, i: usize, j: usize) -> u8 {
        self.links[i * self.gpus.len() + j]
    }

    pub fn refresh_sig(&mut self) {
        let mut h = Mix(self.shape);
        h.add(self.cpu_free);
        h.add(self.mem_free);
        for g in &self.gpus {
            h.add(g.free);
            h.add(((g.slices_free as u64) << 1) | g.healthy as u64);
            for m in &g.mig {
                h.add(((m.taken as u64) << 1) | m.healthy as u64);
            }
        }
        self.sig = h.0;
    }

    /// Sum of free thousandths over GPUs that take new work.
    pub fn idle_milli(&self) -> u64 {
        self.gpus.iter().map(|g| g.free_milli as u64).sum()
    }
}
