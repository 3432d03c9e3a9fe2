//! Fuzzing the extender's request decoding and demand parsing: generated
//! and mutated `ExtenderArgs` / `ExtenderPreemptionArgs` bodies (odd
//! quantities, model annotations, container counts, megabyte strings,
//! corrupted bytes) through filter, prioritize and preempt. Every answer
//! must come quickly, name only candidate nodes, and carry bounded text.
#![allow(clippy::unwrap_used)]

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use proto::clip::MESSAGE_LIMIT;
use proto::extender::{MAX_EXTENDER_PRIORITY, MIN_EXTENDER_PRIORITY};
use scheduler_ext::cluster_state::ClusterState;
use scheduler_ext::events::Events;
use scheduler_ext::http::{App, filter_reply, preempt_reply, prioritize_reply};
use scheduler_ext::metrics::Metrics;
use scheduler_ext::synthetic::inventory;
use scheduler_ext::watch::Readiness;
use serde_json::{Value, json};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const CASES: u32 = 160;
/// Generous: a debug build answers these in milliseconds.
const ANSWER_LIMIT: Duration = Duration::from_secs(2);

fn app() -> App {
    let mut state = ClusterState::new(placement::Policy::Gpupack);
    for (i, node) in NODES.iter().enumerate() {
        state.apply_inventory(&inventory(node, 2 + 2 * i as u32), 0);
    }
    let app = App {
        state: Arc::new(RwLock::new(state)),
        binder: None,
        events: Events::disabled(),
        metrics: Arc::new(Metrics::new()),
        readiness: Arc::new(Readiness::default()),
        models: Arc::new(model_source::Offline),
        preemptor: None,
    };
    app.readiness.set_ready();
    app
}

/// A string a hostile pod may carry: short and plausible, arbitrary, or
/// very long.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-zA-Z0-9/._-]{0,24}",
        3 => any::<String>(),
        1 => (any::<char>(), 1usize..70_000).prop_map(|(c, n)| c.to_string().repeat(n)),
    ]
}

fn quantity() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0u32..9).prop_map(|n| json!(n.to_string())),
        2 => "[0-9.eEkKMGTPi+-]{0,12}".prop_map(Value::from),
        1 => text().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => Just(Value::Null),
    ]
}

fn model() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(vec![
            "meta-llama/Llama-3.1-8B-Instruct",
            "Qwen/Qwen2.5-72B-Instruct-AWQ",
            "llama-3.1-7b",
        ])
        .prop_map(String::from),
        2 => text(),
    ]
}

fn container() -> impl Strategy<Value = Value> {
    (
        text(),
        proptest::option::of(quantity()),
        proptest::option::of(quantity()),
        proptest::option::of(quantity()),
    )
        .prop_map(|(name, gpu, mem, mig)| {
            let mut requests = serde_json::Map::new();
            if let Some(q) = gpu {
                requests.insert("gpupack.io/gpu".into(), q);
            }
            if let Some(q) = mem {
                requests.insert("gpupack.io/gpu-memory".into(), q);
            }
            if let Some(q) = mig {
                requests.insert("gpupack.io/mig-1g.10gb".into(), q);
            }
            json!({"name": name, "resources": {"requests": requests}})
        })
}

fn pod() -> impl Strategy<Value = Value> {
    (
        text(),
        proptest::collection::vec(container(), 0..4),
        0usize..1100,
        proptest::option::of(model()),
        proptest::collection::btree_map(
            proptest::sample::select(proto::annotations::ALL.to_vec()),
            text(),
            0..4,
        ),
    )
        .prop_map(|(name, mut containers, copies, model, extra)| {
            // Now and then, more containers than a pod may have.
            if copies > 1000 {
                let small = json!({"name": "c", "resources": {"requests": {"gpupack.io/gpu": "1"}}});
                containers.extend(std::iter::repeat_n(small, copies));
            }
            let mut annotations: serde_json::Map<String, Value> = extra
                .into_iter()
                .map(|(k, v)| (k.to_string(), Value::from(v)))
                .collect();
            if let Some(m) = model {
                annotations.insert(proto::annotations::MODEL.into(), m.into());
            }
            json!({"metadata": {"name": name, "namespace": "ns", "uid": "u", "annotations": annotations},
                   "spec": {"containers": containers}})
        })
}

fn candidates() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        prop_oneof![
            3 => proptest::sample::select(NODES.to_vec()).prop_map(String::from),
            1 => text(),
        ],
        0..6,
    )
}

/// A body's bytes, now and then corrupted: cut short, or one byte changed.
fn corrupt(body: Vec<u8>, cut: Option<(usize, u8)>) -> Vec<u8> {
    match cut {
        None => body,
        Some((at, byte)) if byte % 2 == 0 => body[..at % (body.len() + 1)].to_vec(),
        Some((at, byte)) => {
            let mut b = body;
            if !b.is_empty() {
                let i = at % b.len();
                b[i] = byte;
            }
            b
        }
    }
}

/// The candidate nodes a (possibly corrupted) body names, as the
/// extender reads them; none when it is no JSON.
fn names_in(body: &[u8], read: impl Fn(&Value) -> BTreeSet<String>) -> BTreeSet<String> {
    serde_json::from_slice::<Value>(body)
        .map(|v| read(&v))
        .unwrap_or_default()
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        // Shrinking megabyte strings takes long; the failing input is shown.
        max_shrink_iters: 64,
        ..Config::default()
    })
}

fn timed<T>(work: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    let start = Instant::now();
    let out = work();
    let took = start.elapsed();
    prop_assert!(took < ANSWER_LIMIT, "answered in {took:?}");
    Ok(out)
}

#[test]
fn fuzzed_filter_and_prioritize_bodies() {
    let app = app();
    let calls = Cell::new(0u32);
    let bodies = (
        pod(),
        candidates(),
        proptest::option::weighted(0.2, (any::<usize>(), any::<u8>())),
    );
    runner()
        .run(&bodies, |(pod, names, cut)| {
            let body = serde_json::to_vec(&json!({"Pod": pod, "Nodes": null, "NodeNames": names}))
                .unwrap();
            let body = corrupt(body, cut);
            let offered = names_in(&body, |v| {
                v["NodeNames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.as_str().map(String::from))
                    .collect()
            });
            calls.set(calls.get() + 2);

            let (reply, _) = timed(|| filter_reply(&app, &body))?;
            prop_assert!(
                reply.error.len() <= MESSAGE_LIMIT + 64,
                "{}",
                reply.error.len()
            );
            for node in reply.node_names.iter().flatten() {
                prop_assert!(offered.contains(node), "answered {node:?}, not a candidate");
            }
            for (node, reason) in reply
                .failed_nodes
                .iter()
                .chain(&reply.failed_and_unresolvable_nodes)
            {
                prop_assert!(offered.contains(node), "failed {node:?}, not a candidate");
                prop_assert!(
                    reason.len() <= MESSAGE_LIMIT,
                    "{} {reason:.400}",
                    reason.len()
                );
            }

            match timed(|| prioritize_reply(&app, &body))? {
                Ok(hosts) => {
                    for h in hosts {
                        prop_assert!(offered.contains(&h.host), "scored {:?}", h.host);
                        let range = MIN_EXTENDER_PRIORITY..=MAX_EXTENDER_PRIORITY;
                        prop_assert!(range.contains(&h.score), "{}", h.score);
                    }
                }
                Err((status, message, _)) => {
                    prop_assert!(status.is_client_error(), "{status}");
                    prop_assert!(message.len() <= MESSAGE_LIMIT + 64, "{}", message.len());
                }
            }
            Ok(())
        })
        .unwrap();
    println!("filter/prioritize fuzzing: {} calls", calls.get());
}

#[test]
fn fuzzed_preempt_bodies() {
    let app = app();
    let calls = Cell::new(0u32);
    let bodies = (
        pod(),
        proptest::collection::btree_map(
            prop_oneof![
                3 => proptest::sample::select(NODES.to_vec()).prop_map(String::from),
                1 => text(),
            ],
            proptest::collection::vec(text(), 0..3),
            0..5,
        ),
        proptest::option::weighted(0.2, (any::<usize>(), any::<u8>())),
    );
    runner()
        .run(&bodies, |(pod, victims, cut)| {
            let meta: serde_json::Map<String, Value> = victims
                .into_iter()
                .map(|(node, uids)| {
                    let pods: Vec<Value> = uids.into_iter().map(|u| json!({"UID": u})).collect();
                    (node, json!({"Pods": pods, "NumPDBViolations": 0}))
                })
                .collect();
            let body =
                serde_json::to_vec(&json!({"Pod": pod, "NodeNameToMetaVictims": meta})).unwrap();
            let body = corrupt(body, cut);
            let offered = names_in(&body, |v| {
                v["NodeNameToMetaVictims"]
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.keys().cloned())
                    .collect()
            });
            calls.set(calls.get() + 1);
            match timed(|| preempt_reply(&app, &body))? {
                Ok(r) => {
                    for node in r.node_name_to_meta_victims.keys() {
                        prop_assert!(offered.contains(node), "kept {node:?}, not a candidate");
                    }
                }
                Err((status, message, _)) => {
                    prop_assert!(status.is_client_error(), "{status}");
                    prop_assert!(message.len() <= MESSAGE_LIMIT + 64, "{}", message.len());
                }
            }
            Ok(())
        })
        .unwrap();
    println!("preempt fuzzing: {} calls", calls.get());
}
