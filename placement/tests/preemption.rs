#![allow(clippy::unwrap_used)]
//! Victim selection: only lower-priority pods, the chosen set lets the pod
//! fit and is minimal, and no cheaper set exists (checked by brute force).

use placement::*;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const GIB: u64 = 1 << 30;

/// `gpus` GPUs of 80 GiB; NVLink pairs (0-1, 2-3, ...) or one NVSwitch
/// domain; GPU 0 in MIG mode (two 1g.10gb and one 3g.40gb) when `mig`.
fn node_spec(gpus: u32, nvswitch: bool, mig: bool) -> NodeSpec {
    let mut links = vec![];
    for a in 0..gpus {
        for b in a + 1..gpus {
            let nv = nvswitch || a / 2 == b / 2;
            links.push(LinkSpec {
                a,
                b,
                nvlinks: if nv { 4 } else { 0 },
                nvswitch: nvswitch && nv,
                pcie: PcieLevel::CrossSocket,
            });
        }
    }
    NodeSpec {
        name: "n1".into(),
        gpus: (0..gpus)
            .map(|i| GpuSpec {
                index: i,
                uuid: format!("GPU-{i}"),
                product: "NVIDIA H100 80GB HBM3".into(),
                memory_bytes: 80 * GIB,
                health: Health::Healthy,
                numa_node: Some(0),
                mig: if mig && i == 0 {
                    [("1g.10gb", 10), ("1g.10gb", 10), ("3g.40gb", 40)]
                        .iter()
                        .enumerate()
                        .map(|(k, (p, g))| MigSpec {
                            uuid: format!("MIG-{i}-{k}"),
                            profile: (*p).into(),
                            memory_bytes: g * GIB,
                            health: Health::Healthy,
                        })
                        .collect()
                } else {
                    vec![]
                },
            })
            .collect(),
        links,
        slices_per_gpu: 4,
        cpu_milli: 64_000,
        memory_bytes: 512 * GIB,
    }
}

#[derive(Clone, Debug)]
enum Kind {
    Shared(u64),
    Whole,
    /// Tensor parallelism over two NVLink-connected GPUs.
    Pair(u64),
    Mig(&'static str),
}

fn demand(kind: &Kind) -> PodDemand {
    let gpu = match kind {
        Kind::Shared(g) => GpuNeed::Gpus {
            count: 1,
            memory: MemoryNeed::Bytes(g * GIB),
            max_link: None,
        },
        Kind::Whole => GpuNeed::Gpus {
            count: 1,
            memory: MemoryNeed::Whole,
            max_link: None,
        },
        Kind::Pair(g) => GpuNeed::Gpus {
            count: 2,
            memory: MemoryNeed::Bytes(g * GIB),
            max_link: Some(LinkLevel::NvLink),
        },
        Kind::Mig(p) => GpuNeed::Mig {
            profile: (*p).into(),
            min_memory: 0,
        },
    };
    PodDemand {
        containers: vec![ContainerDemand {
            name: "server".into(),
            gpu,
        }],
        ..Default::default()
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => (1u64..8).prop_map(|g| Kind::Shared(g * 10)),
        1 => Just(Kind::Whole),
        2 => (1u64..8).prop_map(|g| Kind::Pair(g * 10)),
        1 => prop_oneof![Just(Kind::Mig("1g.10gb")), Just(Kind::Mig("3g.40gb"))],
    ]
}

fn key(i: usize) -> PodKey {
    PodKey::new("ns", format!("p{i}"), format!("uid-{i}"))
}

/// A node filled with `pods` (those that fit, in order) and their candidates.
fn filled(
    spec: &NodeSpec,
    pods: &[(Kind, i32, Option<usize>)],
) -> (Ledger, NodeId, Vec<Candidate>) {
    let mut l = Ledger::new();
    let (id, _) = l.upsert_node(spec).unwrap();
    let scorer = l.scorer(Policy::Gpupack, &TypicalPods::default());
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut candidates = vec![];
    for (i, (k, prio, budget)) in pods.iter().enumerate() {
        let d = demand(k);
        if let Ok(a) = l.choose(id, &l.prepare(&d), &scorer, &mut rng) {
            l.place(key(i), a).unwrap();
            candidates.push(Candidate {
                pod: key(i),
                priority: *prio,
                budgets: budget.iter().copied().collect(),
            });
        }
    }
    (l, id, candidates)
}

fn fits_without(l: &Ledger, id: NodeId, d: &PodDemand, gone: &[&PodKey]) -> bool {
    let mut l = l.clone();
    for k in gone {
        l.release(k).unwrap();
    }
    l.check(id, &l.prepare(d)).is_ok()
}

/// The cost of a set, computed apart from the library: each victim is in at
/// most one budget here, so violations are what exceeds each budget.
fn cost_of(set: &[&Candidate], budgets: &[DisruptionBudget], l: &Ledger) -> PreemptionCost {
    let mut used = vec![0u32; budgets.len()];
    for c in set {
        for &b in &c.budgets {
            used[b] += 1;
        }
    }
    PreemptionCost {
        budget_violations: used
            .iter()
            .zip(budgets)
            .map(|(u, b)| u.saturating_sub(b.disruptions_allowed))
            .sum(),
        highest_priority: set.iter().map(|c| c.priority).max(),
        victims: set.len() as u32,
        gpu_memory_bytes: set
            .iter()
            .map(|c| l.holding(&c.pod).unwrap().0.gpu_memory_bytes())
            .sum(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn victims_rank_below_free_enough_are_minimal_and_cheapest(
        gpus in 2u32..=6,
        nvswitch in any::<bool>(),
        mig in any::<bool>(),
        pods in prop::collection::vec((kind(), 0i32..4, prop::option::of(0usize..2)), 1..14),
        allowed in (0u32..3, 0u32..3),
        preemptor in kind(),
        priority in 0i32..5,
    ) {
        let spec = node_spec(gpus, nvswitch, mig);
        let (l, id, candidates) = filled(&spec, &pods);
        let budgets = vec![
            DisruptionBudget { name: "a".into(), disruptions_allowed: allowed.0 },
            DisruptionBudget { name: "b".into(), disruptions_allowed: allowed.1 },
        ];
        let d = demand(&preemptor);
        let query = PreemptionQuery { priority, candidates: &candidates, budgets: &budgets };
        let before = l.clone();
        let answer = l.select_victims(id, &l.prepare(&d), &query);
        prop_assert!(l == before, "selection changed the ledger");
        let eligible: Vec<&Candidate> =
            candidates.iter().filter(|c| c.priority < priority).collect();
        match answer {
            Err(PreemptionError::NotEnough { .. }) => {
                let all: Vec<&PodKey> = eligible.iter().map(|c| &c.pod).collect();
                prop_assert!(!fits_without(&l, id, &d, &all),
                    "refused, yet evicting every lower-priority pod makes room");
            }
            Err(e) => prop_assert!(false, "unexpected error: {e}"),
            Ok(p) => {
                for v in &p.victims {
                    let c = candidates.iter().find(|c| &c.pod == v).unwrap();
                    prop_assert!(c.priority < priority,
                        "victim {v} has priority {} against the preemptor's {priority}", c.priority);
                }
                let victims: Vec<&PodKey> = p.victims.iter().collect();
                prop_assert!(fits_without(&l, id, &d, &victims), "the pod does not fit after");
                let mut after = l.clone();
                for v in &victims {
                    after.release(v).unwrap();
                }
                prop_assert!(after.place(key(999), p.allocation.clone()).is_ok(),
                    "the planned allocation does not fit after the evictions");
                for (k, v) in victims.iter().enumerate() {
                    let mut rest = victims.clone();
                    rest.remove(k);
                    prop_assert!(!fits_without(&l, id, &d, &rest),
                        "victim {v} could be spared: {:?}", p.victims);
                }
                let chosen: Vec<&Candidate> = p.victims.iter()
                    .map(|v| candidates.iter().find(|c| &c.pod == v).unwrap()).collect();
                prop_assert_eq!(p.cost, cost_of(&chosen, &budgets, &l));
                if p.exhaustive && eligible.len() <= 9 {
                    let mut best: Option<PreemptionCost> = None;
                    for mask in 0u32..(1 << eligible.len()) {
                        let set: Vec<&Candidate> = eligible.iter().enumerate()
                            .filter(|(i, _)| mask & (1 << i) != 0).map(|(_, c)| *c).collect();
                        let keys: Vec<&PodKey> = set.iter().map(|c| &c.pod).collect();
                        if fits_without(&l, id, &d, &keys) {
                            let c = cost_of(&set, &budgets, &l);
                            best = Some(best.map_or(c, |b| b.min(c)));
                        }
                    }
                    prop_assert_eq!(Some(p.cost), best, "a cheaper set exists");
                }
            }
        }
    }
}

fn pair_node() -> (Ledger, NodeId) {
    let mut l = Ledger::new();
    let (id, _) = l.upsert_node(&node_spec(4, false, false)).unwrap();
    (l, id)
}

fn place_on(l: &mut Ledger, i: usize, gpu: u32, gib: u64) {
    l.place(
        key(i),
        Allocation {
            node: "n1".into(),
            containers: vec![ContainerGrant {
                name: "server".into(),
                gpus: vec![GpuGrant {
                    index: gpu,
                    uuid: format!("GPU-{gpu}"),
                    memory_bytes: gib * GIB,
                    slices: 1,
                    mig_uuid: None,
                }],
            }],
            cpu_milli: 0,
            memory_bytes: 0,
        },
    )
    .unwrap();
}

fn cand(i: usize, priority: i32, budgets: &[usize]) -> Candidate {
    Candidate {
        pod: key(i),
        priority,
        budgets: budgets.to_vec(),
    }
}

#[test]
fn tensor_parallel_pod_frees_the_cheapest_nvlinked_pair() {
    let (mut l, id) = pair_node();
    // GPUs 0,1 hold two 50 GiB pods each side; GPUs 2,3 one 50 GiB pod each.
    place_on(&mut l, 0, 0, 50);
    place_on(&mut l, 1, 1, 50);
    place_on(&mut l, 2, 2, 50);
    place_on(&mut l, 3, 3, 50);
    let cands = [
        cand(0, 10, &[]),
        cand(1, 10, &[]),
        cand(2, 0, &[]),
        cand(3, 0, &[]),
    ];
    let d = demand(&Kind::Pair(60));
    let q = PreemptionQuery {
        priority: 100,
        candidates: &cands,
        budgets: &[],
    };
    let p = l.select_victims(id, &l.prepare(&d), &q).unwrap();
    assert_eq!(
        p.victims,
        vec![key(2), key(3)],
        "the lower priority pair goes"
    );
    assert_eq!(p.cost.highest_priority, Some(0));
    let gpus: Vec<u32> = p.allocation.containers[0]
        .gpus
        .iter()
        .map(|g| g.index)
        .collect();
    assert_eq!(gpus, vec![2, 3]);
}

#[test]
fn a_budget_that_forbids_eviction_steers_to_other_victims() {
    let (mut l, id) = pair_node();
    for g in 0..4 {
        place_on(&mut l, g as usize, g, 50);
    }
    // The 2-3 pair is cheaper by priority but its pods' budget allows none.
    let budgets = [DisruptionBudget {
        name: "batch".into(),
        disruptions_allowed: 0,
    }];
    let cands = [
        cand(0, 10, &[]),
        cand(1, 10, &[]),
        cand(2, 0, &[0]),
        cand(3, 0, &[0]),
    ];
    let d = demand(&Kind::Pair(60));
    let q = PreemptionQuery {
        priority: 100,
        candidates: &cands,
        budgets: &budgets,
    };
    let p = l.select_victims(id, &l.prepare(&d), &q).unwrap();
    assert_eq!(p.victims, vec![key(0), key(1)]);
    assert_eq!(p.cost.budget_violations, 0);
}

#[test]
fn equal_priority_is_never_a_victim() {
    let (mut l, id) = pair_node();
    for g in 0..4 {
        place_on(&mut l, g as usize, g, 50);
    }
    let cands: Vec<Candidate> = (0..4).map(|i| cand(i, 100, &[])).collect();
    let d = demand(&Kind::Pair(60));
    let q = PreemptionQuery {
        priority: 100,
        candidates: &cands,
        budgets: &[],
    };
    let err = l.select_victims(id, &l.prepare(&d), &q).unwrap_err();
    assert!(
        matches!(err, PreemptionError::NotEnough { eligible: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("0 of them"), "{err}");
}

#[test]
fn a_pod_that_fits_needs_no_victims() {
    let (mut l, id) = pair_node();
    place_on(&mut l, 0, 0, 50);
    let cands = [cand(0, 0, &[])];
    let d = demand(&Kind::Pair(60));
    let q = PreemptionQuery {
        priority: 100,
        candidates: &cands,
        budgets: &[],
    };
    let p = l.select_victims(id, &l.prepare(&d), &q).unwrap();
    assert!(p.victims.is_empty());
    assert_eq!(p.cost, PreemptionCost::default());
}

#[test]
fn a_budget_index_out_of_range_is_refused() {
    let (mut l, id) = pair_node();
    place_on(&mut l, 0, 0, 50);
    let cands = [cand(0, 0, &[3])];
    let d = demand(&Kind::Pair(60));
    let q = PreemptionQuery {
        priority: 100,
        candidates: &cands,
        budgets: &[],
    };
    let err = l.select_victims(id, &l.prepare(&d), &q).unwrap_err();
    assert_eq!(
        err.to_string(),
        "candidate ns/p0 names PodDisruptionBudget #3, but only 0 were given"
    );
}
