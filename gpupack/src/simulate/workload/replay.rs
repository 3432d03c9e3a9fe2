//! Placing a workload's pods one by one under a policy: the same arrival
//! order (shuffled per seed) for every policy, no departures. Each run
//! records what was placed, on which links, why the rest failed, and what
//! GPU memory is left that none of the workload's pod shapes could use.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Result;
use placement::{
    GpuNeed, Ledger, LinkLevel, MemoryNeed, NodeUsage, PodKey, Policy, Shortfall, TypicalPods,
    model_matches,
};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::Workload;
use super::deploy::Deployment;
use super::fleet::NodeKind;

/// Why a pod was not placed; keys of [`Run::failed_by_reason`].
pub mod reason {
    /// Its deployment fits no node even when the fleet is empty.
    pub const FITS_NO_NODE: &str = "fits-no-node";
    /// No node has enough GPUs with the memory free (within the link bound).
    pub const GPUS: &str = "gpus";
    /// No free MIG instance of the profile.
    pub const MIG: &str = "mig";
    pub const CPU: &str = "cpu";
    pub const HOST_MEMORY: &str = "host-memory";
}

/// Name of a link level in reports.
pub fn level_name(l: LinkLevel) -> &'static str {
    match l {
        LinkLevel::NvSwitch => "nvswitch",
        LinkLevel::NvLink => "nvlink",
        LinkLevel::PcieSwitch => "pcie-switch",
        LinkLevel::SameNuma => "numa",
        LinkLevel::CrossSocket => "cross-socket",
    }
}

/// One policy on one seed.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub policy: Policy,
    pub seed: u64,
    pub pods: usize,
    pub placed: usize,
    pub gpus_used: usize,
    /// GPU memory granted to the placed pods.
    pub allocated_bytes: u64,
    /// Grantable GPU memory left: free memory on GPUs that take shared work,
    /// and free MIG instances.
    pub free_bytes: u64,
    /// The part of `free_bytes` that no deployment's pod could use as the
    /// cluster stands at the end (see [`stranded`]).
    pub stranded_bytes: u64,
    /// Placed pods with two or more GPUs, by the worst link among their GPUs.
    pub tp_by_link: BTreeMap<&'static str, usize>,
    pub failed_by_reason: BTreeMap<&'static str, usize>,
    pub placed_by_deployment: Vec<usize>,
    /// Allocated GPU memory (% of the fleet's) at each whole percent of
    /// requested memory arrived, 0 up to all of it.
    #[serde(skip)]
    pub curve: Vec<f64>,
}

/// The arrival order of one seed: each pod as its deployment's index.
pub fn order(deployments: &[Deployment], seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = deployments
        .iter()
        .enumerate()
        .flat_map(|(i, d)| std::iter::repeat_n(i, d.replicas as usize))
        .collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order
}

/// The typical pod mix the fragmentation-driven policies read: every pod of
/// a placeable deployment, 95 % coverage, as the extender takes it from the
/// pods it sees.
pub fn typical_pods(deployments: &[Deployment]) -> TypicalPods {
    let pods = deployments
        .iter()
        .filter(|d| d.unplaceable.is_none())
        .flat_map(|d| std::iter::repeat_n(&d.demand, d.replicas as usize));
    TypicalPods::from_workload(pods, placement::TYPICAL_COVERAGE)
}

/// Every policy on every seed, `jobs` at a time; runs in policy-major order.
pub fn simulate(w: &Workload, policies: &[Policy], seeds: &[u64], jobs: usize) -> Result<Vec<Run>> {
    let typical = typical_pods(&w.deployments);
    let orders: Vec<Vec<usize>> = seeds.iter().map(|&s| order(&w.deployments, s)).collect();
    crate::simulate::run_all(policies, seeds.len(), jobs, |policy, k| {
        replay(w, &orders[k], policy, &typical, seeds[k])
    })
}

/// Places the pods of `order` one by one under `policy`.
pub fn replay(
    w: &Workload,
    order: &[usize],
    policy: Policy,
    typical: &TypicalPods,
    seed: u64,
) -> Result<Run> {
    let fleet = &w.fleet;
    let deps = &w.deployments;
    let mut ledger = Ledger::new();
    let mut node_pos: HashMap<&str, usize> = HashMap::with_capacity(fleet.specs.len());
    for (i, s) in fleet.specs.iter().enumerate() {
        ledger.upsert_node(s)?;
        node_pos.insert(s.name.as_str(), i);
    }
    let scorer = ledger.scorer(policy, typical);
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9).wrapping_add(1));
    let capacity = fleet.capacity_bytes().max(1);
    let mut run = Run {
        policy,
        seed,
        pods: order.len(),
        placed: 0,
        gpus_used: 0,
        allocated_bytes: 0,
        free_bytes: 0,
        stranded_bytes: 0,
        tp_by_link: LinkLevel::ALL.iter().map(|&l| (level_name(l), 0)).collect(),
        failed_by_reason: BTreeMap::new(),
        placed_by_deployment: vec![0; deps.len()],
        curve: Vec::new(),
    };
    let mut taken_mig: HashSet<String> = HashSet::new();
    let mut arrived = 0u64;
    let mut events = Vec::with_capacity(order.len());
    for (k, &d) in order.iter().enumerate() {
        let dep = &deps[d];
        arrived += dep.pod_bytes();
        let decision = if dep.unplaceable.is_some() {
            Err(reason::FITS_NO_NODE)
        } else {
            let prep = ledger.prepare(&dep.demand);
            ledger
                .decide(&prep, &scorer, &mut rng)
                .ok_or_else(|| why_not(&ledger, &prep))
        };
        match decision {
            Ok(alloc) => {
                let gpus: Vec<u32> = alloc
                    .containers
                    .iter()
                    .flat_map(|c| &c.gpus)
                    .filter(|g| g.mig_uuid.is_none())
                    .map(|g| g.index)
                    .collect();
                if gpus.len() >= 2
                    && let Some(&i) = node_pos.get(alloc.node.as_str())
                {
                    let level = fleet.kinds[fleet.kind_of[i]].worst_level(&gpus);
                    *run.tp_by_link.entry(level_name(level)).or_insert(0) += 1;
                }
                taken_mig.extend(
                    alloc
                        .containers
                        .iter()
                        .flat_map(|c| &c.gpus)
                        .filter_map(|g| g.mig_uuid.clone()),
                );
                run.allocated_bytes += alloc.gpu_memory_bytes();
                ledger.place(
                    PodKey::new("workload", format!("{}-{k}", dep.name), ""),
                    alloc,
                )?;
                run.placed += 1;
                run.placed_by_deployment[d] += 1;
            }
            Err(why) => *run.failed_by_reason.entry(why).or_insert(0) += 1,
        }
        events.push((arrived, run.allocated_bytes));
    }
    let shapes: Vec<&Deployment> = deps.iter().filter(|d| d.unplaceable.is_none()).collect();
    for (i, spec) in fleet.specs.iter().enumerate() {
        let Some(usage) = ledger.node_id(&spec.name).and_then(|id| ledger.usage(id)) else {
            continue;
        };
        let kind = &fleet.kinds[fleet.kind_of[i]];
        let s = stranded(kind, spec, &usage, &shapes, &taken_mig);
        run.free_bytes += s.free;
        run.stranded_bytes += s.stranded;
        run.gpus_used += s.gpus_used;
    }
    run.curve = curve(&events, capacity, arrived);
    Ok(run)
}

/// The most common shortfall over the nodes the pod could fit on were they
/// emptier.
fn why_not(ledger: &Ledger, prep: &placement::Prepared<'_>) -> &'static str {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for id in ledger.node_ids() {
        if let Err(u) = ledger.check(id, prep)
            && !u.permanent
        {
            let key = match u.shortfall {
                Shortfall::Gpus { .. } | Shortfall::Model { .. } => reason::GPUS,
                Shortfall::Mig { .. } => reason::MIG,
                Shortfall::Cpu { .. } => reason::CPU,
                Shortfall::Memory { .. } => reason::HOST_MEMORY,
            };
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|&(k, n)| (n, std::cmp::Reverse(k)))
        .map(|(k, _)| k)
        .unwrap_or(reason::FITS_NO_NODE)
}

/// Free and stranded GPU memory of one node, and its GPUs in use.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NodeLeft {
    pub free: u64,
    pub stranded: u64,
    pub gpus_used: usize,
}

/// Free GPU memory on a node, and the part of it that is *stranded*: on a
/// GPU where no deployment's pod (`shapes`) could be placed using that GPU
/// as the node stands — too little memory or no slice left on it, too few
/// other GPUs with room within the pod's link bound, a model the pod does
/// not accept, or too little CPU or host memory on the node. A free MIG
/// instance is stranded when no deployment asks for its profile (or its
/// node lacks CPU or host memory for one that does).
pub fn stranded(
    kind: &NodeKind,
    spec: &placement::NodeSpec,
    usage: &NodeUsage,
    shapes: &[&Deployment],
    taken_mig: &HashSet<String>,
) -> NodeLeft {
    let mut left = NodeLeft::default();
    let host_fits = |d: &Deployment| {
        d.demand.cpu_milli <= usage.cpu_free && d.demand.memory_bytes <= usage.memory_free
    };
    let accepts = |d: &Deployment, product: &str| {
        d.demand.allowed_models.is_empty()
            || d.demand
                .allowed_models
                .iter()
                .any(|a| model_matches(a, product))
    };
    for (g, gs) in usage.gpus.iter().zip(&spec.gpus) {
        if !gs.mig.is_empty() {
            let mut used = false;
            for m in &gs.mig {
                if taken_mig.contains(&m.uuid) {
                    used = true;
                    continue;
                }
                left.free += m.memory_bytes;
                let wanted = shapes.iter().any(|d| {
                    host_fits(d)
                        && accepts(d, &g.product)
                        && d.demand.containers.iter().any(
                            |c| matches!(&c.gpu, GpuNeed::Mig { profile, .. } if *profile == m.profile),
                        )
                });
                if !wanted {
                    left.stranded += m.memory_bytes;
                }
            }
            left.gpus_used += usize::from(used);
            continue;
        }
        if g.free_bytes < g.total_bytes {
            left.gpus_used += 1;
        }
        if !g.healthy || g.free_bytes == 0 {
            continue;
        }
        left.free += g.free_bytes;
        let usable = shapes
            .iter()
            .any(|d| host_fits(d) && accepts(d, &g.product) && fits_using(kind, usage, d, g.index));
        if !usable {
            left.stranded += g.free_bytes;
        }
    }
    left
}

/// Whether `d`'s pod could be placed on this node using GPU `index`.
fn fits_using(kind: &NodeKind, usage: &NodeUsage, d: &Deployment, index: u32) -> bool {
    let Some((count, bytes, max_link)) = d.demand.containers.first().and_then(|c| match c.gpu {
        GpuNeed::Gpus {
            count,
            memory: MemoryNeed::Bytes(b),
            max_link,
        } => Some((count as usize, b, max_link)),
        _ => None,
    }) else {
        return false;
    };
    let room = |i: usize| {
        let g = &usage.gpus[i];
        g.healthy
            && g.mig_total == 0
            && g.slices_free > 0
            && g.free_bytes >= bytes
            && (d.demand.allowed_models.is_empty()
                || d.demand
                    .allowed_models
                    .iter()
                    .any(|a| model_matches(a, &g.product)))
    };
    let Some(me) = usage.gpus.iter().position(|g| g.index == index) else {
        return false;
    };
    if !room(me) {
        return false;
    }
    let within = |a: u32, b: u32| max_link.is_none_or(|l| kind.level(a, b) <= l);
    let others: Vec<u32> = (0..usage.gpus.len())
        .filter(|&i| i != me && room(i))
        .map(|i| usage.gpus[i].index)
        .filter(|&i| within(index, i))
        .collect();
    if max_link.is_none() {
        return others.len() + 1 >= count;
    }
    // A set of `count - 1` others, pairwise within the bound.
    fn extend(
        set: &mut Vec<u32>,
        from: usize,
        others: &[u32],
        need: usize,
        ok: &dyn Fn(u32, u32) -> bool,
    ) -> bool {
        if set.len() == need {
            return true;
        }
        for k in from..others.len() {
            if others.len() - k < need - set.len() {
                return false;
            }
            let c = others[k];
            if set.iter().all(|&s| ok(s, c)) {
                set.push(c);
                if extend(set, k + 1, others, need, ok) {
                    return true;
                }
                set.pop();
            }
        }
        false
    }
    extend(
        &mut Vec::with_capacity(count),
        0,
        &others,
        count.saturating_sub(1),
        &within,
    )
}

/// Allocated % of capacity at each whole percent of arrived requests: the
/// value after the last pod whose arrival stays within that percent.
fn curve(events: &[(u64, u64)], capacity: u64, total: u64) -> Vec<f64> {
    let pct = |b: u64| b as f64 * 100.0 / capacity as f64;
    let top = pct(total).ceil() as usize;
    let mut out = Vec::with_capacity(top + 1);
    let mut k = 0;
    let mut last = 0.0;
    for x in 0..=top {
        while k < events.len() && pct(events[k].0) <= x as f64 + 1e-9 {
            last = pct(events[k].1);
            k += 1;
        }
        out.push(last);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::simulate::workload::{GIB, parse};

    /// One node of 4 L40S (44.42 GiB) and one Llama 3.1 8B deployment of
    /// about 30 GiB per pod: one pod per GPU, and the memory left on a GPU
    /// next to one is too little for another.
    fn l40s(replicas: u32, node_cpus: &str, pod_cpus: &str) -> Workload {
        parse(
            "t.yaml",
            &format!(
                "nodeTypes:\n  - {{ name: l40s, count: 1, gpu: L40S, gpus: 4, interconnect: {{ kind: pcie }}{node_cpus} }}\n\
                 deployments:\n  - {{ name: chat, model: Llama-3.1-8B, maxModelLen: 8192, maxNumSeqs: 8, replicas: {replicas}{pod_cpus} }}\n"
            ),
        )
        .unwrap()
    }

    fn run(w: &Workload, policy: Policy) -> Run {
        let typical = typical_pods(&w.deployments);
        replay(w, &order(&w.deployments, 7), policy, &typical, 7).unwrap()
    }

    #[test]
    fn memory_left_beside_a_pod_too_small_for_another_is_stranded() {
        let w = l40s(6, "", "");
        let req = w.deployments[0].request_bytes;
        let gpu = w.fleet.kinds[0].gpu_memory_bytes;
        assert!(
            req < gpu && 2 * req > gpu && req.is_multiple_of(GIB),
            "{req}"
        );
        for policy in Policy::ALL {
            let r = run(&w, policy);
            assert_eq!((r.placed, r.pods), (4, 6), "{policy}");
            assert_eq!(r.failed_by_reason.get(reason::GPUS), Some(&2), "{policy}");
            assert_eq!(r.gpus_used, 4);
            assert_eq!(r.allocated_bytes, 4 * req);
            assert_eq!(r.free_bytes, 4 * (gpu - req));
            assert_eq!(r.stranded_bytes, r.free_bytes, "{policy}");
            assert_eq!(
                r.curve.last().copied().unwrap(),
                100.0 * (4 * req) as f64 / (4 * gpu) as f64
            );
        }
    }

    #[test]
    fn empty_gpus_are_free_but_not_stranded() {
        let w = l40s(2, "", "");
        let req = w.deployments[0].request_bytes;
        let gpu = w.fleet.kinds[0].gpu_memory_bytes;
        let r = run(&w, Policy::FirstFit);
        assert_eq!(r.placed, 2);
        assert!(r.failed_by_reason.is_empty());
        assert_eq!(r.free_bytes, 2 * gpu + 2 * (gpu - req));
        assert_eq!(r.stranded_bytes, 2 * (gpu - req));
        assert!(r.curve.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn a_node_out_of_cpu_strands_its_gpus_and_fails_pods_for_cpu() {
        let w = l40s(3, ", cpus: 8", ", cpus: 6");
        let r = run(&w, Policy::Gpupack);
        assert_eq!(r.placed, 1);
        assert_eq!(r.failed_by_reason.get(reason::CPU), Some(&2));
        assert_eq!(r.stranded_bytes, r.free_bytes);
    }

    #[test]
    fn a_set_within_the_link_bound_must_include_the_gpu() {
        // Two PCIe switches of two GPUs: a TP-2 pod bound to one switch can
        // use any GPU while its switch partner has room.
        let w = parse(
            "t.yaml",
            "nodeTypes:\n  - { name: p, count: 1, gpu: L40S, gpus: 4, interconnect: { kind: pcie, gpusPerSwitch: 2 } }\n\
             deployments:\n  - { name: pair, model: Qwen2.5-14B, tensorParallelSize: 2, maxModelLen: 8192, maxNumSeqs: 8, maxLink: pcie-switch, replicas: 3 }\n",
        )
        .unwrap();
        let r = run(&w, Policy::FirstFit);
        assert_eq!(r.placed, 2);
        assert_eq!(r.failed_by_reason.get(reason::GPUS), Some(&1));
        assert_eq!(r.tp_by_link["pcie-switch"], 2);
        // Whatever is left on the four GPUs is below a rank's request.
        assert_eq!(r.stranded_bytes, r.free_bytes);
        let kind = &w.fleet.kinds[0];
        let mut ledger = Ledger::new();
        ledger.upsert_node(&w.fleet.specs[0]).unwrap();
        let usage = ledger.usage(ledger.node_id("p-0").unwrap()).unwrap();
        let d = &w.deployments[0];
        assert!(fits_using(kind, &usage, d, 3));
        let left = stranded(kind, &w.fleet.specs[0], &usage, &[d], &HashSet::new());
        assert_eq!((left.stranded, left.gpus_used), (0, 0));
    }
}
