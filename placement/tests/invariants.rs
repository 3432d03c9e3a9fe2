#![allow(clippy::unwrap_used)]
//! Property tests: whatever the sequence of placements, reservations and
//! releases, the ledger never over-commits, multi-GPU containers stay on one
//! node on distinct healthy GPUs, and a release restores the exact state.

use placement::*;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const GIB: u64 = 1 << 30;

fn cluster(gpus_per_node: &[(u32, u64, u32)], unhealthy: &[bool]) -> Ledger {
    let mut l = Ledger::new();
    for (n, &(count, gib, slices)) in gpus_per_node.iter().enumerate() {
        let spec = NodeSpec {
            name: format!("n{n}"),
            gpus: (0..count)
                .map(|i| GpuSpec {
                    index: i,
                    uuid: format!("n{n}-g{i}"),
                    product: if n % 2 == 0 {
                        "A100".into()
                    } else {
                        "L40S".into()
                    },
                    memory_bytes: gib * GIB,
                    health: if unhealthy
                        .get((n * 8 + i as usize) % unhealthy.len().max(1))
                        .copied()
                        .unwrap_or(false)
                    {
                        Health::Unhealthy
                    } else {
                        Health::Healthy
                    },
                    numa_node: Some(i / 2),
                    mig: vec![],
                })
                .collect(),
            links: vec![],
            slices_per_gpu: slices,
            cpu_milli: 32_000,
            memory_bytes: 256 * GIB,
        };
        l.upsert_node(&spec).unwrap();
    }
    l
}

#[derive(Clone, Debug)]
enum Op {
    Place {
        count: u32,
        gib: u64,
        whole: bool,
        cpu: u64,
        policy: usize,
    },
    Reserve {
        count: u32,
        gib: u64,
        until: u64,
    },
    Release(usize),
    Expire(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u32..4, 1u64..48, any::<bool>(), 0u64..12_000, 0usize..7)
            .prop_map(|(count, gib, whole, cpu, policy)| Op::Place { count, gib, whole, cpu, policy }),
        2 => (1u32..3, 1u64..48, 0u64..50).prop_map(|(count, gib, until)| Op::Reserve { count, gib, until }),
        2 => (0usize..64).prop_map(Op::Release),
        1 => (0u64..60).prop_map(Op::Expire),
    ]
}

fn demand(count: u32, gib: u64, whole: bool, cpu: u64) -> PodDemand {
    let mem = if whole {
        MemoryNeed::Whole
    } else {
        MemoryNeed::Bytes(gib * GIB)
    };
    PodDemand::gpus(count, mem).with_cpu(cpu, GIB)
}

/// Free plus everything granted equals capacity on every GPU; nothing negative.
fn check_accounting(l: &Ledger) {
    let mut held: std::collections::HashMap<String, (u64, u32)> = Default::default();
    for (_, a) in l.pods() {
        let mut seen = std::collections::HashSet::new();
        for c in &a.containers {
            for g in &c.gpus {
                assert!(
                    seen.insert(g.uuid.clone()) || c.gpus.len() == 1,
                    "GPU twice in one pod"
                );
                let e = held.entry(g.uuid.clone()).or_default();
                e.0 += g.memory_bytes;
                e.1 += g.slices;
            }
        }
    }
    for id in l.node_ids() {
        let u = l.usage(id).unwrap();
        assert!(u.cpu_free <= u.cpu_total);
        for g in &u.gpus {
            let (bytes, slices) = held.get(&g.uuid).copied().unwrap_or_default();
            assert_eq!(g.free_bytes + bytes, g.total_bytes, "memory of {}", g.uuid);
            assert_eq!(
                g.slices_free + slices,
                g.slices_total,
                "slices of {}",
                g.uuid
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn ledger_invariants_hold(
        nodes in prop::collection::vec((1u32..9, 16u64..96, 1u32..5), 1..5),
        unhealthy in prop::collection::vec(prop::bool::weighted(0.15), 1..16),
        ops in prop::collection::vec(op(), 1..40),
        seed in any::<u64>(),
    ) {
        let mut l = cluster(&nodes, &unhealthy);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut live: Vec<PodKey> = vec![];
        for (k, op) in ops.into_iter().enumerate() {
            let pod = PodKey::new("ns", format!("p{k}"), format!("u{k}"));
            match op {
                Op::Place { count, gib, whole, cpu, policy } => {
                    let d = demand(count, gib, whole, cpu);
                    let s = l.scorer(Policy::ALL[policy], &TypicalPods::from_workload([&d], placement::TYPICAL_COVERAGE));
                    let before = l.clone();
                    if let Some(a) = l.decide(&l.prepare(&d), &s, &mut rng) {
                        // One node, distinct healthy GPUs, as many as asked.
                        let id = l.node_id(&a.node).unwrap();
                        let u = l.usage(id).unwrap();
                        let gpus = &a.containers[0].gpus;
                        prop_assert_eq!(gpus.len(), count as usize);
                        let mut idx: Vec<u32> = gpus.iter().map(|g| g.index).collect();
                        idx.sort();
                        idx.dedup();
                        prop_assert_eq!(idx.len(), count as usize);
                        for g in gpus {
                            prop_assert!(u.gpus.iter().any(|x| x.uuid == g.uuid && x.healthy));
                        }
                        // `admits` answers as `place` does, and a second
                        // copy of a placed allocation is refused only where
                        // it would over-commit.
                        prop_assert!(l.admits(&a).is_ok());
                        l.place(pod.clone(), a.clone()).unwrap();
                        let mut twice = l.clone();
                        let again = PodKey::new("ns", format!("again{k}"), format!("again{k}"));
                        prop_assert_eq!(l.admits(&a).is_ok(), twice.place(again, a).is_ok());
                        // Release restores the exact previous state.
                        let mut undo = l.clone();
                        undo.release(&pod).unwrap();
                        prop_assert!(undo == before);
                        live.push(pod);
                    } else {
                        // Nothing fits: every node says so, and why.
                        let p = l.prepare(&d);
                        for id in l.node_ids() {
                            prop_assert!(l.check(id, &p).is_err());
                        }
                    }
                }
                Op::Reserve { count, gib, until } => {
                    let d = demand(count, gib, false, 0);
                    let s = l.scorer(Policy::Gpupack, &TypicalPods::default());
                    if let Some(a) = l.decide(&l.prepare(&d), &s, &mut rng) {
                        l.reserve(pod.clone(), a, until).unwrap();
                        live.push(pod);
                    }
                }
                Op::Release(i) => {
                    if !live.is_empty() {
                        let p = live.remove(i % live.len());
                        let _ = l.release(&p);
                    }
                }
                Op::Expire(now) => {
                    for (p, _) in l.expire(now) {
                        live.retain(|x| x != &p);
                    }
                }
            }
            check_accounting(&l);
        }
        // Releasing everything gives back the empty cluster.
        for p in live {
            let _ = l.release(&p);
        }
        prop_assert!(l == cluster(&nodes, &unhealthy));
    }
}
