//! Feasibility: can a pod fit on a node, on which GPUs, and if not, why.

use std::cell::RefCell;
use std::fmt;

use smallvec::SmallVec;

use crate::demand::{GpuNeed, MemoryNeed, PodDemand};
use crate::model::{LinkLevel, model_matches};
use crate::state::{GpuState, NodeState};

/// A demand resolved against the ledger's model table, ready to test against
/// many nodes.
#[derive(Clone, Debug)]
pub struct Prepared<'d> {
    pub(crate) demand: &'d PodDemand,
    /// Allowed flag per model id; `None` when any model will do.
    pub(crate) allowed: Option<Vec<bool>>,
    /// Whether the demand could ever fit, per node capacity signature, as
    /// learned from the nodes tested: a cluster has few node shapes.
    ever_fits: RefCell<SmallVec<[(u64, bool); 8]>>,
}

/// Most node shapes a [`Prepared`] remembers.
const EVER_FITS_MAX: usize = 64;

impl<'d> Prepared<'d> {
    pub(crate) fn new(demand: &'d PodDemand, models: &[String]) -> Self {
        let allowed = if demand.allowed_models.is_empty() {
            None
        } else {
            Some(
                models
                    .iter()
                    .map(|m| demand.allowed_models.iter().any(|a| model_matches(a, m)))
                    .collect(),
            )
        };
        Prepared {
            demand,
            allowed,
            ever_fits: RefCell::default(),
        }
    }

    /// Whether the demand could fit on `node` were nothing placed there,
    /// measured once per node shape.
    fn ever_fits(&self, node: &NodeState, w: &mut Work) -> bool {
        let key = node.capacity_sig;
        if let Some(&(_, fits)) = self.ever_fits.borrow().iter().find(|(k, _)| *k == key) {
            return fits;
        }
        let fits = plan(node, self, View::Empty, &mut Tightest, w).is_ok();
        let mut memo = self.ever_fits.borrow_mut();
        if memo.len() < EVER_FITS_MAX {
            memo.push((key, fits));
        }
        fits
    }

    pub fn demand(&self) -> &'d PodDemand {
        self.demand
    }

    pub(crate) fn allows(&self, model: u16) -> bool {
        match &self.allowed {
            None => true,
            Some(a) => a.get(model as usize).copied().unwrap_or(false),
        }
    }
}

/// Which node state to test against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum View {
    /// What is free now.
    Now,
    /// The node with nothing placed (healthy devices only): "could it ever fit".
    Empty,
}

/// What is short on a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shortfall {
    /// No GPU of an allowed model.
    Model {
        allowed: String,
    },
    Cpu {
        need: u64,
        free: u64,
    },
    Memory {
        need: u64,
        free: u64,
    },
    /// A container's GPUs: `available` is the largest set that would qualify.
    Gpus {
        container: String,
        count: u32,
        memory: MemoryNeed,
        max_link: Option<LinkLevel>,
        available: u32,
    },
    Mig {
        container: String,
        profile: String,
        /// Bytes the container needs from the instance (0: any).
        min_memory: u64,
        /// Memory of this profile's instances here when they are all too
        /// small for `min_memory`.
        too_small: Option<u64>,
    },
}

/// A node the pod does not fit on, and whether it ever could (false: it
/// fits once other pods leave; true: its capacity is too small, the models
/// are wrong, or its devices are unhealthy — kube-scheduler's
/// FailedAndUnresolvableNodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unfit {
    pub shortfall: Shortfall,
    pub permanent: bool,
}

/// Bytes in GiB to one decimal, rounded half to even as `{:.1}` would, in
/// integers: filter answers carry one such reason per node that does not fit.
fn gib(bytes: u64) -> String {
    const HALF: u128 = 1 << 29;
    let scaled = bytes as u128 * 10;
    let (mut tenths, rest) = (scaled >> 30, scaled & ((1 << 30) - 1));
    if rest > HALF || (rest == HALF && tenths % 2 == 1) {
        tenths += 1;
    }
    format!("{}.{} GiB", tenths / 10, tenths % 10)
}

fn cores(milli: u64) -> String {
    if milli.is_multiple_of(1000) {
        format!("{}", milli / 1000)
    } else {
        format!("{:.2}", milli as f64 / 1000.0)
    }
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shortfall::Model { allowed } => write!(f, "no GPU of an allowed model ({allowed})"),
            Shortfall::Cpu { need, free } => {
                write!(f, "needs {} CPU; free: {}", cores(*need), cores(*free))
            }
            Shortfall::Memory { need, free } => {
                write!(f, "needs {} host memory; free: {}", gib(*need), gib(*free))
            }
            Shortfall::Gpus {
                container,
                count,
                memory,
                max_link,
                available,
            } => {
                let plural = if *count == 1 { "" } else { "s" };
                let what = match memory {
                    MemoryNeed::Whole | MemoryNeed::Milli(1000..) => {
                        format!("{count} whole GPU{plural}")
                    }
                    MemoryNeed::Bytes(b) => format!("{count} GPU{plural} with {} free", gib(*b)),
                    MemoryNeed::Milli(m) => {
                        format!("{count} GPU{plural} with {:.1}% free", *m as f64 / 10.0)
                    }
                };
                let link = match max_link {
                    Some(l) if *count > 1 => format!(" on {}", l.domain_words()),
                    _ => String::new(),
                };
                write!(
                    f,
                    "container {container} needs {what}{link}; largest free: {available}"
                )
            }
            Shortfall::Mig {
                container,
                profile,
                min_memory,
                too_small: Some(has),
            } => {
                write!(
                    f,
                    "container {container} needs {} on a MIG {profile} instance; those here have {}",
                    gib(*min_memory),
                    gib(*has)
                )
            }
            Shortfall::Mig {
                container, profile, ..
            } => {
                write!(
                    f,
                    "container {container} needs a free MIG {profile} instance; none free"
                )
            }
        }
    }
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shortfall.fmt(f)
    }
}

/// One device a container gets, by position in the node's GPU list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Take {
    pub pos: usize,
    pub bytes: u64,
    pub slices: u32,
    pub mig: Option<usize>,
}

/// Devices per container, in demand order, kept flat so that one plan's
/// buffers serve every node tested.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    takes: Vec<Take>,
    /// End of each container's devices in `takes`.
    ends: Vec<usize>,
}

impl Plan {
    fn clear(&mut self) {
        self.takes.clear();
        self.ends.clear();
    }

    /// Every device of every container.
    pub fn takes(&self) -> &[Take] {
        &self.takes
    }

    /// The devices of each container, in demand order.
    pub fn containers(&self) -> impl Iterator<Item = &[Take]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let c = &self.takes[start..end];
            start = end;
            c
        })
    }
}

/// Picks one GPU among candidates (positions) for a single-GPU shared container.
pub(crate) trait Picker {
    fn pick(&mut self, node: &NodeState, free: &[u64], candidates: &[usize], need: u64) -> usize;
}

/// The candidate with the least free memory (best fit); lowest position on ties.
pub(crate) struct Tightest;

impl Picker for Tightest {
    fn pick(&mut self, _: &NodeState, free: &[u64], c: &[usize], _: u64) -> usize {
        let mut best = c[0];
        for &p in &c[1..] {
            if free[p] < free[best] {
                best = p;
            }
        }
        best
    }
}

/// Working buffers for planning on node after node: the node's free amounts
/// while a plan is made, then the plan and what it leaves. Reused, so that
/// testing a node allocates nothing once the buffers have grown.
#[derive(Debug, Default)]
pub(crate) struct Work {
    /// Free bytes per GPU position; after a plan, what it leaves.
    pub free: Vec<u64>,
    slices: Vec<u32>,
    /// Taken flags per MIG instance; empty when the node has no MIG GPUs.
    mig_taken: Vec<Vec<bool>>,
    cands: Vec<usize>,
    /// The last plan made.
    pub plan: Plan,
}

impl Work {
    fn reset(&mut self, node: &NodeState, view: View) {
        self.free.clear();
        self.slices.clear();
        self.mig_taken.clear();
        self.plan.clear();
        for g in &node.gpus {
            let (free, slices) = match view {
                View::Now => (g.free, g.slices_free),
                View::Empty => (g.total, g.slices_total),
            };
            self.free.push(free);
            self.slices.push(slices);
        }
        if node.gpus.iter().any(|g| !g.mig.is_empty()) {
            self.mig_taken.extend(
                node.gpus
                    .iter()
                    .map(|g| g.mig.iter().map(|m| view == View::Now && m.taken).collect()),
            );
        }
    }
}

thread_local! {
    static WORK: std::cell::RefCell<Work> = std::cell::RefCell::new(Work::default());
}

/// Runs `f` with this thread's planning buffers (fresh ones if they are in use).
pub(crate) fn with_work<R>(f: impl FnOnce(&mut Work) -> R) -> R {
    WORK.with(|cell| match cell.try_borrow_mut() {
        Ok(mut w) => f(&mut w),
        Err(_) => f(&mut Work::default()),
    })
}

/// Bytes `memory` takes from GPU `g` given what is free on it, or `None` if it
/// does not fit there.
fn take_on(g: &GpuState, memory: MemoryNeed, free: u64, slices: u32) -> Option<(u64, u32)> {
    if !g.usable() {
        return None;
    }
    match memory.bytes_on(g.total) {
        None => (free == g.total && slices == g.slices_total).then_some((g.total, g.slices_total)),
        Some(b) => (b <= free && slices >= 1).then_some((b, 1)),
    }
}

/// Finds GPUs for every container of the pod on `node`, or says what is
/// short. On success `w.plan` holds the devices and `w.free` what they leave.
pub(crate) fn plan(
    node: &NodeState,
    prep: &Prepared<'_>,
    view: View,
    picker: &mut dyn Picker,
    w: &mut Work,
) -> Result<(), Shortfall> {
    let d = prep.demand;
    let (cpu_free, mem_free) = match view {
        View::Now => (node.cpu_free, node.mem_free),
        View::Empty => (node.cpu_total, node.mem_total),
    };
    if !d.containers.is_empty()
        && prep.allowed.is_some()
        && !node.gpus.iter().any(|g| prep.allows(g.model))
    {
        return Err(Shortfall::Model {
            allowed: d.allowed_models.join("|"),
        });
    }
    if d.cpu_milli > cpu_free {
        return Err(Shortfall::Cpu {
            need: d.cpu_milli,
            free: cpu_free,
        });
    }
    if d.memory_bytes > mem_free {
        return Err(Shortfall::Memory {
            need: d.memory_bytes,
            free: mem_free,
        });
    }
    w.reset(node, view);
    for c in &d.containers {
        match &c.gpu {
            GpuNeed::Gpus {
                count,
                memory,
                max_link,
            } => {
                let mut first_take = 0;
                w.cands.clear();
                for (p, g) in node.gpus.iter().enumerate() {
                    if !prep.allows(g.model) {
                        continue;
                    }
                    if let Some(t) = take_on(g, *memory, w.free[p], w.slices[p]) {
                        if w.cands.is_empty() {
                            first_take = t.0;
                        }
                        w.cands.push(p);
                    }
                }
                let count = *count as usize;
                if w.cands.len() < count {
                    return Err(Shortfall::Gpus {
                        container: c.name.clone(),
                        count: count as u32,
                        memory: *memory,
                        max_link: *max_link,
                        available: w.cands.len() as u32,
                    });
                }
                let start = w.plan.takes.len();
                if count == 1 && max_link.is_none() {
                    let shared = memory.bytes_on(node.gpus[w.cands[0]].total).is_some();
                    let p = if shared {
                        picker.pick(node, &w.free, &w.cands, first_take)
                    } else {
                        w.cands[0]
                    };
                    w.take(node, p, *memory);
                } else if count > 0 {
                    // Preference among equally linked sets: whole GPUs in index
                    // order, shared ones tightest first.
                    if memory.bytes_on(u64::MAX).is_some() {
                        let free = &w.free;
                        w.cands.sort_by_key(|&p| (free[p], p));
                    }
                    match crate::topology::best_set(node, &w.cands, count, *max_link) {
                        Some(set) => {
                            for p in set {
                                w.take(node, p, *memory);
                            }
                        }
                        None => {
                            return Err(Shortfall::Gpus {
                                container: c.name.clone(),
                                count: count as u32,
                                memory: *memory,
                                max_link: *max_link,
                                available: crate::topology::largest_group(node, &w.cands, *max_link)
                                    as u32,
                            });
                        }
                    }
                }
                debug_assert!(w.plan.takes.len() - start == count);
                w.plan.ends.push(w.plan.takes.len());
            }
            GpuNeed::Mig {
                profile,
                min_memory,
            } => {
                // Pack MIG work: the GPU with the fewest free instances first.
                let mut best: Option<(usize, usize, usize)> = None;
                // A free instance of the profile, but smaller than needed.
                let mut too_small: Option<u64> = None;
                for (p, g) in node.gpus.iter().enumerate() {
                    if !g.healthy || g.mig.is_empty() || !prep.allows(g.model) {
                        continue;
                    }
                    let free_count = w.mig_taken[p].iter().filter(|t| !**t).count();
                    let mut fitting = None;
                    for (i, m) in g.mig.iter().enumerate() {
                        if !m.healthy || w.mig_taken[p][i] || &m.profile != profile {
                            continue;
                        }
                        if m.memory < *min_memory {
                            too_small = Some(too_small.map_or(m.memory, |t| t.max(m.memory)));
                            continue;
                        }
                        fitting = Some(i);
                        break;
                    }
                    if let Some(m) = fitting
                        && best.is_none_or(|(_, _, f)| free_count < f)
                    {
                        best = Some((p, m, free_count));
                    }
                }
                match best {
                    Some((p, m, _)) => {
                        w.mig_taken[p][m] = true;
                        w.plan.takes.push(Take {
                            pos: p,
                            bytes: node.gpus[p].mig[m].memory,
                            slices: 0,
                            mig: Some(m),
                        });
                        w.plan.ends.push(w.plan.takes.len());
                    }
                    None => {
                        return Err(Shortfall::Mig {
                            container: c.name.clone(),
                            profile: profile.clone(),
                            min_memory: *min_memory,
                            too_small,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

impl Work {
    /// Takes what `memory` needs from GPU `p` (all of it for a whole GPU).
    fn take(&mut self, node: &NodeState, p: usize, memory: MemoryNeed) {
        let g = &node.gpus[p];
        let (bytes, slices) = match memory.bytes_on(g.total) {
            None => (g.total, g.slices_total),
            Some(b) => (b, 1),
        };
        self.free[p] -= bytes;
        self.slices[p] -= slices;
        self.plan.takes.push(Take {
            pos: p,
            bytes,
            slices,
            mig: None,
        });
    }
}

/// Feasibility with the "ever fits" judgement attached.
pub(crate) fn check(
    node: &NodeState,
    prep: &Prepared<'_>,
    picker: &mut dyn Picker,
    w: &mut Work,
) -> Result<(), Unfit> {
    plan(node, prep, View::Now, picker, w).map_err(|shortfall| Unfit {
        shortfall,
        permanent: !prep.ever_fits(node, w),
    })
}

#[cfg(test)]
mod tests {
    use super::gib;

    #[test]
    fn gib_rounds_like_float_formatting() {
        for bytes in [
            0,
            1,
            (1 << 28) - 1,
            1 << 28,
            3 << 28,
            (1 << 30) + (1 << 26),
            38 << 30,
            80 * (1 << 30) - 1,
            123_456_789_012,
            u64::MAX,
        ] {
            let float = format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64);
            assert_eq!(gib(bytes), float, "{bytes} bytes");
        }
    }
}
