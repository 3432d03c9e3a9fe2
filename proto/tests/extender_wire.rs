//! The extender types read exactly what a real kube-scheduler sent (bodies
//! captured from kube-scheduler, in both `nodeCacheCapable` modes) and write
//! what it reads.

#![allow(clippy::unwrap_used)]

use proto::extender::*;

fn fixture(path: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/extender/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn filter_with_node_names() {
    let args: ExtenderArgs = serde_json::from_str(&fixture("ncc-true/filter-1.json")).unwrap();
    assert!(args.node_cache_capable());
    assert!(args.nodes.is_none());
    assert_eq!(args.pod.metadata.name.as_deref(), Some("gpu-pod-1"));
    let names = args.node_names();
    assert_eq!(names.len(), 2, "{names:?}");

    let reply = ExtenderFilterResult::from_args(
        &args,
        vec![names[0].to_string()],
        [(names[1].to_string(), "no GPU".to_string())].into(),
        Default::default(),
    );
    let v = serde_json::to_value(&reply).unwrap();
    assert_eq!(v["NodeNames"], serde_json::json!([names[0]]));
    assert_eq!(v["FailedNodes"][names[1]], "no GPU");
    assert_eq!(v["Error"], "");
}

#[test]
fn filter_with_full_nodes() {
    let args: ExtenderArgs = serde_json::from_str(&fixture("ncc-false/filter-1.json")).unwrap();
    assert!(!args.node_cache_capable());
    assert!(args.node_names.is_none());
    let names: Vec<String> = args.node_names().iter().map(|s| s.to_string()).collect();
    assert_eq!(names.len(), 2);
    let list = args.nodes.as_ref().unwrap();
    assert!(list.items[0].status.as_ref().unwrap().capacity.is_some());

    let reply = ExtenderFilterResult::from_args(
        &args,
        vec![names[1].clone()],
        Default::default(),
        Default::default(),
    );
    let v = serde_json::to_value(&reply).unwrap();
    assert!(v["NodeNames"].is_null());
    let items = v["Nodes"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["metadata"]["name"], names[1].as_str());
}

#[test]
fn empty_feasible_set_is_an_empty_list_not_null() {
    let args: ExtenderArgs = serde_json::from_str(&fixture("ncc-true/filter-1.json")).unwrap();
    let reply =
        ExtenderFilterResult::from_args(&args, vec![], Default::default(), Default::default());
    let v = serde_json::to_value(&reply).unwrap();
    assert_eq!(v["NodeNames"], serde_json::json!([]));
}

#[test]
fn prioritize_and_bind() {
    let args: ExtenderArgs = serde_json::from_str(&fixture("ncc-true/prioritize-1.json")).unwrap();
    assert_eq!(args.node_names().len(), 2);
    let scores = vec![HostPriority {
        host: "a".into(),
        score: MAX_EXTENDER_PRIORITY,
    }];
    assert_eq!(
        serde_json::to_string(&scores).unwrap(),
        r#"[{"Host":"a","Score":10}]"#
    );

    for mode in ["ncc-true", "ncc-false"] {
        let bind: ExtenderBindingArgs =
            serde_json::from_str(&fixture(&format!("{mode}/bind-1.json"))).unwrap();
        assert_eq!(bind.pod_name, "gpu-pod-1");
        assert_eq!(bind.pod_namespace, "default");
        assert!(!bind.pod_uid.is_empty());
        assert!(!bind.node.is_empty());
        let back = serde_json::to_string(&bind).unwrap();
        assert!(back.contains(r#""PodUID":"#), "{back}");
    }
    assert_eq!(
        serde_json::to_string(&ExtenderBindingResult::default()).unwrap(),
        r#"{"Error":""}"#
    );
}

#[test]
fn upstream_compatibility_shapes() {
    // Shapes pinned by upstream's TestCompatibility.
    let b: ExtenderBindingArgs = serde_json::from_str(
        r#"{"PodName":"pod","PodNamespace":"ns","PodUID":"uid","Node":"node"}"#,
    )
    .unwrap();
    assert_eq!(b.pod_uid, "uid");
    let h: HostPriority = serde_json::from_str(r#"{"Host":"myhost","Score":1}"#).unwrap();
    assert_eq!(h.score, 1);
    let p: ExtenderPreemptionArgs = serde_json::from_str(
        r#"{"Pod":{"metadata":{"name":"p"}},"NodeNameToVictims":null,
            "NodeNameToMetaVictims":{"n":{"Pods":[{"UID":"u"}],"NumPDBViolations":1}}}"#,
    )
    .unwrap();
    let meta = p.node_name_to_meta_victims.unwrap();
    assert_eq!(meta["n"].pods[0].uid, "u");
    assert_eq!(meta["n"].num_pdb_violations, 1);
    let r = ExtenderPreemptionResult {
        node_name_to_meta_victims: meta,
    };
    assert!(
        serde_json::to_string(&r)
            .unwrap()
            .contains(r#""NumPDBViolations":1"#)
    );
}
