use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::patch::PatchKind;

fn pods() -> ResourceType {
    ResourceType::namespaced("", "v1", "pods", "Pod").with_status()
}

fn pod(name: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
}

fn rv_of(v: &Value) -> String {
    str_at(v, "/metadata/resourceVersion").unwrap()
}

#[test]
fn create_assigns_identity_and_bumps_rv() {
    let mut s = Store::new(100, 1);
    let a = s.create(&pods(), Some("ml"), pod("a")).unwrap();
    let b = s.create(&pods(), Some("ml"), pod("b")).unwrap();
    assert_eq!(rv_of(&a), "1");
    assert_eq!(rv_of(&b), "2");
    assert_eq!(a["kind"], "Pod");
    assert_eq!(a["apiVersion"], "v1");
    assert_eq!(a["metadata"]["namespace"], "ml");
    assert_eq!(a["status"]["phase"], "Pending");
    assert!(str_at(&a, "/metadata/uid").unwrap().len() == 36);
    assert_ne!(a["metadata"]["uid"], b["metadata"]["uid"]);
    assert!(
        str_at(&a, "/metadata/creationTimestamp")
            .unwrap()
            .ends_with('Z')
    );
    let dup = s.create(&pods(), Some("ml"), pod("a")).unwrap_err();
    assert_eq!((dup.code, dup.reason), (409, "AlreadyExists"));
    assert_eq!(s.resource_version(), 2, "a failed write changes nothing");
}

#[test]
fn generate_name_and_missing_name() {
    let mut s = Store::new(100, 1);
    let g = s
        .create(
            &pods(),
            Some("ml"),
            json!({"metadata": {"generateName": "llm-"}}),
        )
        .unwrap();
    let name = str_at(&g, "/metadata/name").unwrap();
    assert!(name.starts_with("llm-") && name.len() == 9, "{name}");
    let e = s
        .create(&pods(), Some("ml"), json!({"metadata": {}}))
        .unwrap_err();
    assert_eq!((e.code, e.reason), (422, "Invalid"));
}

#[test]
fn update_with_stale_rv_conflicts() {
    let mut s = Store::new(100, 1);
    let a = s.create(&pods(), Some("ml"), pod("a")).unwrap();
    let mut fresh = a.clone();
    fresh["metadata"]["labels"] = json!({"x": "1"});
    let updated = s
        .update(&pods(), Some("ml"), "a", fresh, Part::Main)
        .unwrap();
    assert_eq!(rv_of(&updated), "2");
    let mut stale = a.clone();
    stale["metadata"]["labels"] = json!({"x": "2"});
    let e = s
        .update(&pods(), Some("ml"), "a", stale, Part::Main)
        .unwrap_err();
    assert_eq!((e.code, e.reason), (409, "Conflict"));
    assert!(
        e.message.contains("the object has been modified"),
        "{}",
        e.message
    );
    // No resourceVersion: an unconditional update.
    let mut unconditional = a;
    unconditional["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    unconditional["metadata"]["labels"] = json!({"x": "3"});
    s.update(&pods(), Some("ml"), "a", unconditional, Part::Main)
        .unwrap();
}

#[test]
fn main_and_status_writes_touch_only_their_part() {
    let mut s = Store::new(100, 1);
    let a = s.create(&pods(), Some("ml"), pod("a")).unwrap();
    let mut body = a.clone();
    body["status"] = json!({"phase": "Running"});
    body["spec"]["nodeName"] = json!("n1");
    let after_main = s
        .update(&pods(), Some("ml"), "a", body.clone(), Part::Main)
        .unwrap();
    assert_eq!(
        after_main["status"]["phase"], "Pending",
        "main write keeps status"
    );
    assert_eq!(after_main["spec"]["nodeName"], "n1");
    assert_eq!(after_main["metadata"]["generation"], 2);
    body["metadata"]["resourceVersion"] = after_main["metadata"]["resourceVersion"].clone();
    body["spec"]["nodeName"] = json!("other");
    let after_status = s
        .update(&pods(), Some("ml"), "a", body, Part::Status)
        .unwrap();
    assert_eq!(after_status["status"]["phase"], "Running");
    assert_eq!(
        after_status["spec"]["nodeName"], "n1",
        "status write keeps spec"
    );
    assert_eq!(
        after_status["metadata"]["generation"], 2,
        "status writes keep generation"
    );
}

#[test]
fn noop_write_keeps_rv_and_logs_nothing() {
    let mut s = Store::new(100, 1);
    let a = s.create(&pods(), Some("ml"), pod("a")).unwrap();
    let same = s
        .update(&pods(), Some("ml"), "a", a.clone(), Part::Main)
        .unwrap();
    assert_eq!(same, a);
    assert_eq!(s.resource_version(), 1);
    assert_eq!(s.changes_since(0).unwrap().0.len(), 1);
}

#[test]
fn merge_patch_rv_precondition() {
    let mut s = Store::new(100, 1);
    let a = s.create(&pods(), Some("ml"), pod("a")).unwrap();
    let p =
        |body: Value| Patch::parse(PatchKind::Merge, &serde_json::to_vec(&body).unwrap()).unwrap();
    let ok = p(json!({"metadata": {"resourceVersion": rv_of(&a), "annotations": {"k": "v"}}}));
    let (patched, created) = s.patch(&pods(), Some("ml"), "a", &ok, Part::Main).unwrap();
    assert!(!created);
    assert_eq!(patched["metadata"]["annotations"]["k"], "v");
    assert_eq!(rv_of(&patched), "2");
    let e = s
        .patch(&pods(), Some("ml"), "a", &ok, Part::Main)
        .unwrap_err();
    assert_eq!(e.code, 409);
    let rename = p(json!({"metadata": {"name": "b"}}));
    assert_eq!(
        s.patch(&pods(), Some("ml"), "a", &rename, Part::Main)
            .unwrap_err()
            .code,
        400
    );
    let missing = s
        .patch(&pods(), Some("ml"), "zz", &p(json!({})), Part::Main)
        .unwrap_err();
    assert_eq!(missing.code, 404);
}

#[test]
fn apply_creates_then_merges() {
    let mut s = Store::new(100, 1);
    let inv = ResourceType::gpu_node_inventory();
    s.register(inv.clone());
    let cfg = |gpus: u32| {
        Patch::parse(
            PatchKind::Apply,
            &serde_json::to_vec(
                &json!({"apiVersion": "gpupack.io/v1", "kind": "GpuNodeInventory",
                "metadata": {"name": "node-a"}, "spec": {"gpus": gpus}}),
            )
            .unwrap(),
        )
        .unwrap()
    };
    let (obj, created) = s.patch(&inv, None, "node-a", &cfg(8), Part::Main).unwrap();
    assert!(created);
    assert_eq!(obj["spec"]["gpus"], 8);
    assert!(obj["metadata"].get("namespace").is_none());
    let (obj, created) = s.patch(&inv, None, "node-a", &cfg(7), Part::Main).unwrap();
    assert!(!created);
    assert_eq!(obj["spec"]["gpus"], 7);
}

#[test]
fn delete_with_preconditions() {
    let mut s = Store::new(100, 1);
    let a = s.create(&pods(), Some("ml"), pod("a")).unwrap();
    let wrong = Preconditions {
        uid: Some("nope".into()),
        resource_version: None,
    };
    assert_eq!(
        s.delete(&pods(), Some("ml"), "a", &wrong).unwrap_err().code,
        409
    );
    let right = Preconditions {
        uid: str_at(&a, "/metadata/uid"),
        resource_version: Some(rv_of(&a)),
    };
    let gone = s.delete(&pods(), Some("ml"), "a", &right).unwrap();
    assert_eq!(
        rv_of(&gone),
        "2",
        "the deleted object carries the delete's rv"
    );
    assert_eq!(s.get(&pods(), Some("ml"), "a").unwrap_err().code, 404);
    assert_eq!(
        s.delete(&pods(), Some("ml"), "a", &Preconditions::default())
            .unwrap_err()
            .code,
        404
    );
}

fn binding(name: &str, node: &str, uid: Option<&str>, ann: Value) -> Value {
    let mut b = json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "annotations": ann},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    if let Some(uid) = uid {
        b["metadata"]["uid"] = json!(uid);
    }
    b
}

#[test]
fn binding_rules() {
    let mut s = Store::new(100, 1);
    let a = s.create(&pods(), Some("ml"), pod("a")).unwrap();
    let uid = str_at(&a, "/metadata/uid").unwrap();
    let e = s
        .bind("ml", "a", &binding("b", "n1", None, json!({})))
        .unwrap_err();
    assert_eq!(e.code, 400);
    let e = s
        .bind("ml", "a", &binding("a", "n1", Some("other-uid"), json!({})))
        .unwrap_err();
    assert_eq!(e.code, 409);
    assert!(e.message.contains("UID in precondition"), "{}", e.message);
    let e = s
        .bind("ml", "a", &binding("a", "", None, json!({})))
        .unwrap_err();
    assert_eq!(e.code, 422);
    assert_eq!(
        s.bind("ml", "zz", &binding("zz", "n1", None, json!({})))
            .unwrap_err()
            .code,
        404
    );
    s.bind(
        "ml",
        "a",
        &binding("a", "n1", Some(&uid), json!({"gpupack.io/assignment": "x"})),
    )
    .unwrap();
    let bound = s.get(&pods(), Some("ml"), "a").unwrap();
    assert_eq!(bound["spec"]["nodeName"], "n1");
    assert_eq!(
        bound["metadata"]["annotations"]["gpupack.io/assignment"],
        "x"
    );
    assert_eq!(bound["status"]["conditions"][0]["type"], "PodScheduled");
    assert_eq!(rv_of(&bound), "2", "bind is one write");
    let e = s
        .bind("ml", "a", &binding("a", "n2", None, json!({})))
        .unwrap_err();
    assert_eq!((e.code, e.reason), (409, "Conflict"));
    assert!(
        e.message.contains("already assigned to node \"n1\""),
        "{}",
        e.message
    );
}

#[test]
fn compaction_expires_old_resource_versions() {
    let mut s = Store::new(3, 1);
    for i in 0..5 {
        s.create(&pods(), Some("ml"), pod(&format!("p{i}")))
            .unwrap();
    }
    // Capacity 3 keeps rvs 3..=5: resuming after 2 is fine, after 1 is not.
    assert_eq!(s.changes_since(2).unwrap().0.len(), 3);
    assert_eq!(s.changes_since(1).unwrap_err().code, 410);
    s.compact();
    assert_eq!(s.changes_since(4).unwrap_err().code, 410);
    assert!(s.changes_since(5).unwrap().0.is_empty());
}

#[test]
fn list_filters_namespace_and_selectors() {
    let mut s = Store::new(100, 1);
    s.create(
        &pods(),
        Some("a"),
        json!({"metadata": {"name": "x", "labels": {"app": "llm"}}}),
    )
    .unwrap();
    s.create(&pods(), Some("b"), json!({"metadata": {"name": "y"}}))
        .unwrap();
    let all = s.list(&pods(), None, &Selectors::default()).0;
    assert_eq!(all.len(), 2);
    assert_eq!(s.list(&pods(), Some("b"), &Selectors::default()).0.len(), 1);
    let sel = Selectors {
        labels: LabelSelector::parse("app=llm").unwrap(),
        ..Selectors::default()
    };
    let (items, rv) = s.list(&pods(), None, &sel);
    assert_eq!((items.len(), rv), (1, 2));
}

#[derive(Clone, Debug)]
enum Op {
    Create(u8),
    Label(u8, u8),
    Status(u8, u8),
    Delete(u8),
    StalePatch(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6).prop_map(Op::Create),
        (0u8..6, 0u8..4).prop_map(|(n, v)| Op::Label(n, v)),
        (0u8..6, 0u8..4).prop_map(|(n, v)| Op::Status(n, v)),
        (0u8..6).prop_map(Op::Delete),
        (0u8..6).prop_map(Op::StalePatch),
    ]
}

proptest! {
    /// Whatever the writes, the change log replayed from empty rebuilds
    /// the store, resourceVersions rise by one per change, and each
    /// object carries the resourceVersion of its last change.
    #[test]
    fn log_replays_to_the_store(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = pods();
        let mut s = Store::new(1000, 7);
        for o in ops {
            let name = |n: u8| format!("p{n}");
            let _ = match o {
                Op::Create(n) => s.create(&rt, Some("ml"), pod(&name(n))).map(|_| ()),
                Op::Label(n, v) => s.get(&rt, Some("ml"), &name(n)).and_then(|mut cur| {
                    cur["metadata"]["labels"] = json!({"v": v.to_string()});
                    s.update(&rt, Some("ml"), &name(n), cur, Part::Main).map(|_| ())
                }),
                Op::Status(n, v) => s.get(&rt, Some("ml"), &name(n)).and_then(|mut cur| {
                    cur["status"] = json!({"phase": format!("P{v}")});
                    s.update(&rt, Some("ml"), &name(n), cur, Part::Status).map(|_| ())
                }),
                Op::Delete(n) => s.delete(&rt, Some("ml"), &name(n), &Preconditions::default()).map(|_| ()),
                Op::StalePatch(n) => {
                    let p = Patch::parse(PatchKind::Merge, br#"{"metadata":{"resourceVersion":"0"}}"#).unwrap();
                    let r = s.patch(&rt, Some("ml"), &name(n), &p, Part::Main);
                    prop_assert!(r.is_err());
                    Ok(())
                }
            };
        }
        let (changes, rv) = s.changes_since(0).unwrap();
        prop_assert_eq!(rv, s.resource_version());
        let mut replay: BTreeMap<String, Value> = BTreeMap::new();
        for (i, c) in changes.iter().enumerate() {
            prop_assert_eq!(c.rv, i as u64 + 1);
            prop_assert_eq!(rv_of(&c.object), c.rv.to_string());
            let name = str_at(&c.object, "/metadata/name").unwrap();
            match c.kind {
                EventType::Added => prop_assert!(replay.insert(name, c.object.clone()).is_none()),
                EventType::Modified => prop_assert!(replay.insert(name, c.object.clone()).is_some()),
                EventType::Deleted => prop_assert!(replay.remove(&name).is_some()),
            }
        }
        let (items, _) = s.list(&rt, None, &Selectors::default());
        let stored: BTreeMap<String, Value> =
            items.into_iter().map(|v| (str_at(&v, "/metadata/name").unwrap(), v)).collect();
        prop_assert_eq!(replay, stored);
    }
}
