//! The stand-in driven by real kube-rs clients: CRUD, optimistic
//! concurrency, patches, binding, status, selectors, CRDs, events, leases,
//! discovery, kubeconfig files and the binary.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use apiserver_standin::{ApiServer, ResourceType};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Binding, Event as CoreEvent, Node, ObjectReference, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::Status;
use kube::{Client, CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "gpupack.io",
    version = "v1",
    kind = "GpuNodeInventory",
    plural = "gpunodeinventories"
)]
struct GpuNodeInventorySpec {
    gpus: u32,
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "llm"}},
        "spec": {"containers": [{"name": "main", "image": "vllm"}]}
    }))
    .unwrap()
}

async fn setup() -> (ApiServer, Client) {
    let server = ApiServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    (server, client)
}

fn api_err(e: kube::Error) -> Box<Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn pod_crud() {
    let (server, client) = setup().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ml");
    let created = pods
        .create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    assert!(created.uid().is_some());
    assert!(created.creation_timestamp().is_some());
    assert_eq!(created.namespace().as_deref(), Some("ml"));
    assert_eq!(
        created.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );

    let got = pods.get("a").await.unwrap();
    assert_eq!(got.resource_version(), created.resource_version());

    let mut gen_pod = pod("");
    gen_pod.metadata.name = None;
    gen_pod.metadata.generate_name = Some("llm-".into());
    let generated = pods.create(&PostParams::default(), &gen_pod).await.unwrap();
    assert!(generated.name_any().starts_with("llm-"));

    let e = api_err(
        pods.create(&PostParams::default(), &pod("a"))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));

    let list = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 2);
    assert_eq!(
        list.metadata.resource_version,
        Some(server.store().resource_version().to_string())
    );

    let mut changed = got.clone();
    changed.labels_mut().insert("tier".into(), "gpu".into());
    let replaced = pods
        .replace("a", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(replaced.labels()["tier"], "gpu");
    assert!(replaced.resource_version() > got.resource_version());

    let deleted = pods.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(deleted.left().unwrap().name_any(), "a");
    let e = api_err(pods.get("a").await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "pods \"a\" not found");

    // Collections across namespaces, and paging.
    let other: Api<Pod> = Api::namespaced(client.clone(), "other");
    for i in 0..5 {
        other
            .create(&PostParams::default(), &pod(&format!("p{i}")))
            .await
            .unwrap();
    }
    let all: Api<Pod> = Api::all(client.clone());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        6
    );
    let page = all.list(&ListParams::default().limit(4)).await.unwrap();
    assert_eq!(page.items.len(), 4);
    let token = page.metadata.continue_.clone().unwrap();
    let rest = all
        .list(&ListParams::default().limit(4).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 2);
    assert!(rest.metadata.continue_.is_none());
    let removed = other
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    assert_eq!(removed.left().unwrap().items.len(), 5);
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
}

#[tokio::test]
async fn stale_writes_conflict() {
    let (_server, client) = setup().await;
    let pods: Api<Pod> = Api::namespaced(client, "ml");
    let first = pods
        .create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    let rv = first.resource_version().unwrap();

    // A merge patch carrying the resourceVersion read is a precondition.
    let annotate = |rv: &str, v: &str| {
        Patch::Merge(json!({"metadata": {"resourceVersion": rv, "annotations": {"k": v}}}))
    };
    let patched = pods
        .patch("a", &PatchParams::default(), &annotate(&rv, "1"))
        .await
        .unwrap();
    assert_eq!(patched.annotations()["k"], "1");
    let e = api_err(
        pods.patch("a", &PatchParams::default(), &annotate(&rv, "2"))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(e.message.contains("the object has been modified"));

    // PUT of the object as first read is stale too.
    let e = api_err(
        pods.replace("a", &PostParams::default(), &first)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);

    // A merge patch without a resourceVersion is unconditional.
    pods.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .unwrap();

    // JSON patch with a `test` op on the resourceVersion.
    let current = pods.get("a").await.unwrap().resource_version().unwrap();
    let test_op = |rv: &str| {
        let ops: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/metadata/annotations/j", "value": "p"}
        ]))
        .unwrap();
        Patch::<()>::Json(ops)
    };
    let e = api_err(
        pods.patch("a", &PatchParams::default(), &test_op(&rv))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    let ok = pods
        .patch("a", &PatchParams::default(), &test_op(&current))
        .await
        .unwrap();
    assert_eq!(ok.annotations()["j"], "p");

    // Strategic merge: containers merge by name.
    let sp =
        Patch::Strategic(json!({"spec": {"containers": [{"name": "main", "image": "vllm:2"}]}}));
    let ok = pods.patch("a", &PatchParams::default(), &sp).await.unwrap();
    let containers = ok.spec.unwrap().containers;
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0].image.as_deref(), Some("vllm:2"));
}

#[tokio::test]
async fn binding_subresource() {
    let (server, client) = setup().await;
    let pods: Api<Pod> = Api::namespaced(client, "ml");
    let p = pods
        .create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    let bind = |uid: Option<String>, node: &str, ann: &[(&str, &str)]| Binding {
        metadata: ObjectMeta {
            name: Some("a".into()),
            namespace: Some("ml".into()),
            uid,
            annotations: Some(
                ann.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.into()),
            ..Default::default()
        },
    };

    let e = api_err(
        pods.create_subresource::<_, Status>(
            "binding",
            "a",
            &PostParams::default(),
            &bind(Some("wrong".into()), "n1", &[]),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    assert!(e.message.contains("UID in precondition"), "{}", e.message);

    let st: Status = pods
        .create_subresource(
            "binding",
            "a",
            &PostParams::default(),
            &bind(p.uid(), "n1", &[("gpupack.io/gpus", "0,1")]),
        )
        .await
        .unwrap();
    assert!(st.is_success());
    let bound = pods.get("a").await.unwrap();
    assert_eq!(
        bound.spec.as_ref().unwrap().node_name.as_deref(),
        Some("n1")
    );
    assert_eq!(bound.annotations()["gpupack.io/gpus"], "0,1");
    let conds = bound.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True")
    );

    let e = api_err(
        pods.create_subresource::<_, Status>(
            "binding",
            "a",
            &PostParams::default(),
            &bind(None, "n2", &[]),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("already assigned to node \"n1\""),
        "{}",
        e.message
    );
    let unchanged = pods.get("a").await.unwrap();
    assert_eq!(
        unchanged.resource_version(),
        bound.metadata.resource_version
    );

    // URL name must equal the Binding's name.
    let mut other = bind(None, "n1", &[]);
    other.metadata.name = Some("b".into());
    let e = api_err(
        pods.create_subresource::<_, Status>("binding", "a", &PostParams::default(), &other)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    assert_eq!(server.requests().count("create", "pods/binding"), 4);
}

#[tokio::test]
async fn status_subresource_and_field_selectors() {
    let (_server, client) = setup().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ml");
    for (name, node) in [("a", "n1"), ("b", "n2"), ("c", "")] {
        let mut p = pod(name);
        if !node.is_empty() {
            p.spec.as_mut().unwrap().node_name = Some(node.into());
        }
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    let st = pods
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}, "spec": {"nodeName": "zz"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        st.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert_eq!(
        st.spec.as_ref().unwrap().node_name.as_deref(),
        Some("n1"),
        "status patch leaves spec"
    );

    // A main-resource patch cannot change status.
    let main = pods
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Failed"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        main.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );

    let mut b = pods.get_status("b").await.unwrap();
    b.status.as_mut().unwrap().phase = Some("Succeeded".into());
    pods.replace_status("b", &PostParams::default(), &b)
        .await
        .unwrap();

    let names =
        |l: kube::core::ObjectList<Pod>| l.items.iter().map(|p| p.name_any()).collect::<Vec<_>>();
    let all: Api<Pod> = Api::all(client);
    let on_n1 = all
        .list(&ListParams::default().fields("spec.nodeName=n1"))
        .await
        .unwrap();
    assert_eq!(names(on_n1), ["a"]);
    let unbound = all
        .list(&ListParams::default().fields("spec.nodeName="))
        .await
        .unwrap();
    assert_eq!(names(unbound), ["c"]);
    let running = all
        .list(&ListParams::default().fields("status.phase=Running"))
        .await
        .unwrap();
    assert_eq!(names(running), ["a"]);
    let not_b = all
        .list(&ListParams::default().fields("metadata.name!=b,metadata.namespace=ml"))
        .await
        .unwrap();
    assert_eq!(names(not_b), ["a", "c"]);
    let labelled = all
        .list(&ListParams::default().labels("app in (llm),!tier"))
        .await
        .unwrap();
    assert_eq!(labelled.items.len(), 3);
    let e = api_err(
        all.list(&ListParams::default().fields("spec.bogus=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    assert!(e.message.contains("spec.bogus"));
}

#[tokio::test]
async fn cluster_scoped_custom_resource() {
    let (server, client) = setup().await;
    let unknown: Api<GpuNodeInventory> = Api::all(client.clone());
    let e = api_err(unknown.get("node-a").await.unwrap_err());
    assert_eq!(e.code, 404);

    server.register_crd(&GpuNodeInventory::crd()).unwrap();
    let inv: Api<GpuNodeInventory> = Api::all(client.clone());
    let obj = GpuNodeInventory::new("node-a", GpuNodeInventorySpec { gpus: 8 });
    let created = inv.create(&PostParams::default(), &obj).await.unwrap();
    assert!(created.metadata.namespace.is_none());
    let ssa = PatchParams::apply("device-plugin").force();
    let applied = inv
        .patch(
            "node-b",
            &ssa,
            &Patch::Apply(
                json!({"apiVersion": "gpupack.io/v1", "kind": "GpuNodeInventory",
                "metadata": {"name": "node-b"}, "spec": {"gpus": 4}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(applied.spec.gpus, 4);
    let reapplied = inv
        .patch(
            "node-b",
            &ssa,
            &Patch::Apply(
                json!({"apiVersion": "gpupack.io/v1", "kind": "GpuNodeInventory",
                "metadata": {"name": "node-b"}, "spec": {"gpus": 3}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(reapplied.spec.gpus, 3);
    assert_eq!(reapplied.uid(), applied.uid());

    // Custom resources have no strategic merge, as on a cluster.
    let e = api_err(
        inv.patch(
            "node-a",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"gpus": 1}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 415);

    // The store reads back what the API wrote, typed.
    let stored: GpuNodeInventory = server.store().get_as(None, "node-b").unwrap().unwrap();
    assert_eq!(stored.spec.gpus, 3);
    let from_store = server
        .store()
        .put_as(&GpuNodeInventory::new(
            "node-c",
            GpuNodeInventorySpec { gpus: 2 },
        ))
        .unwrap();
    assert_eq!(inv.get("node-c").await.unwrap().uid(), from_store.uid());
    assert_eq!(
        inv.list(&ListParams::default()).await.unwrap().items.len(),
        3
    );

    let e = api_err(
        inv.list(&ListParams::default().fields("spec.gpus=3"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
}

#[tokio::test]
async fn crd_created_through_the_api_is_served() {
    let (_server, client) = setup().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let created = crds
        .create(&PostParams::default(), &GpuNodeInventory::crd())
        .await
        .unwrap();
    let conds = created.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    let inv: Api<GpuNodeInventory> = Api::all(client);
    inv.create(
        &PostParams::default(),
        &GpuNodeInventory::new("n", GpuNodeInventorySpec { gpus: 1 }),
    )
    .await
    .unwrap();
    assert_eq!(inv.get("n").await.unwrap().spec.gpus, 1);
}

#[tokio::test]
async fn events_leases_nodes_and_discovery() {
    let (_server, client) = setup().await;
    // kube-runtime's recorder writes events.k8s.io/v1 Events (create, then merge patches).
    let recorder = kube::runtime::events::Recorder::new(client.clone(), "gpupack-scheduler".into());
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some("a".into()),
        namespace: Some("ml".into()),
        ..Default::default()
    };
    let ev = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: "FailedScheduling".into(),
        note: Some("needs 2 GPUs".into()),
        action: "Scheduling".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "ml");
    let listed = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].series.as_ref().unwrap().count, 2);

    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "ml");
    let e: CoreEvent = serde_json::from_value(json!({
        "metadata": {"generateName": "a."},
        "involvedObject": {"kind": "Pod", "name": "a", "namespace": "ml"},
        "reason": "GpuAssigned", "message": "GPUs 0,1", "type": "Normal"
    }))
    .unwrap();
    core.create(&PostParams::default(), &e).await.unwrap();
    let found = core
        .list(&ListParams::default().fields("involvedObject.name=a,reason=GpuAssigned"))
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "gpupack-scheduler"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    let l1 = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut take = l1.clone();
    take.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("gpupack-scheduler", &PostParams::default(), &take)
        .await
        .unwrap();
    let mut late = l1;
    late.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let err = api_err(
        leases
            .replace("gpupack-scheduler", &PostParams::default(), &late)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);

    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "n1"},
        "status": {"capacity": {"gpupack.io/gpu": "8"}}
    }))
    .unwrap();
    let n = nodes.create(&PostParams::default(), &node).await.unwrap();
    assert_eq!(
        n.status.unwrap().capacity.unwrap()["gpupack.io/gpu"].0,
        "8",
        "nodes keep status on create"
    );
    let unschedulable = nodes
        .list(&ListParams::default().fields("spec.unschedulable=false"))
        .await
        .unwrap();
    assert_eq!(unschedulable.items.len(), 1);

    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    let groups = client.list_api_groups().await.unwrap();
    assert!(
        groups
            .groups
            .iter()
            .any(|g| g.name == "coordination.k8s.io")
    );
    let core_resources = client.list_core_api_resources("v1").await.unwrap();
    assert!(
        core_resources
            .resources
            .iter()
            .any(|r| r.name == "pods/binding")
    );
}

#[tokio::test]
async fn kubeconfig_file_and_in_process_store() {
    let server = ApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let client = apiserver_standin::client_from_file(&path).await.unwrap();
    assert_eq!(client.default_namespace(), "default");

    // Objects put in-process are seen through the API, and vice versa.
    let node: Node =
        serde_json::from_value(json!({"metadata": {"name": "n1", "labels": {"gpu": "h100"}}}))
            .unwrap();
    server.store().put_as(&node).unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    assert_eq!(nodes.get("n1").await.unwrap().labels()["gpu"], "h100");
    let pods: Api<Pod> = Api::default_namespaced(client);
    pods.create(&PostParams::default(), &pod("x"))
        .await
        .unwrap();
    let stored: Vec<Pod> = server.store().list_as(Some("default")).unwrap();
    assert_eq!(stored.len(), 1);
    let rt = ResourceType::of::<Pod>();
    assert!(server.store().get(&rt, Some("default"), "x").is_some());
    server
        .store()
        .delete_as::<Pod>(Some("default"), "x")
        .unwrap();
    assert_eq!(api_err(pods.get("x").await.unwrap_err()).code, 404);
}

#[tokio::test]
async fn binary_serves_and_writes_kubeconfig() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_apiserver-standin"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        // The manifest the cluster gets, so the served type is what it declares.
        .arg("--crd-file")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../daemonset/helm/gpupack/files/gpunodeinventories.yaml"
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let url = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let client = apiserver_standin::client_from_file(&kubeconfig)
        .await
        .unwrap();
    let inv: Api<GpuNodeInventory> = Api::all(client.clone());
    inv.create(
        &PostParams::default(),
        &GpuNodeInventory::new("n", GpuNodeInventorySpec { gpus: 8 }),
    )
    .await
    .unwrap();

    // The admin endpoint injects faults into the running process.
    let req = http::Request::post("/_standin/faults")
        .header("content-type", "application/json")
        .body(br#"{"conflictNextWrites":1}"#.to_vec())
        .unwrap();
    client.request_text(req).await.unwrap();
    let e = api_err(
        inv.create(
            &PostParams::default(),
            &GpuNodeInventory::new("m", GpuNodeInventorySpec { gpus: 8 }),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    inv.create(
        &PostParams::default(),
        &GpuNodeInventory::new("m", GpuNodeInventorySpec { gpus: 8 }),
    )
    .await
    .unwrap();

    // An outage asked for over HTTP: down shortly after answering, back after 600 ms.
    let req = http::Request::post("/_standin/outage?ms=600")
        .body(Vec::new())
        .unwrap();
    client.request_text(req).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let e = inv.list(&ListParams::default()).await.unwrap_err();
    assert!(!matches!(e, kube::Error::Api(_)), "{e:?}");
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert_eq!(
        inv.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    child.kill().await.unwrap();
}

/// Priority admission: the class sets priority and preemption policy; a pod
/// may not claim a priority of its own, nor name a class that is missing.
#[tokio::test]
async fn priority_classes_resolve_as_the_admission_plugin_does() {
    let (_server, client) = setup().await;
    let classes: Api<k8s_openapi::api::scheduling::v1::PriorityClass> = Api::all(client.clone());
    classes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "serving"}, "value": 1000, "preemptionPolicy": "Never"
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut p = pod("classy");
    p.spec.as_mut().unwrap().priority_class_name = Some("serving".into());
    let made = pods.create(&PostParams::default(), &p).await.unwrap();
    let spec = made.spec.unwrap();
    assert_eq!(spec.priority, Some(1000));
    assert_eq!(spec.preemption_policy.as_deref(), Some("Never"));
    let plain = pods
        .create(&PostParams::default(), &pod("plain"))
        .await
        .unwrap();
    assert_eq!(plain.spec.unwrap().priority, Some(0));
    let mut claims = pod("claims");
    claims.spec.as_mut().unwrap().priority = Some(5);
    let e = pods
        .create(&PostParams::default(), &claims)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 403 && s.message.contains("must not be provided in pod spec")),
        "{e}"
    );
    let mut missing = pod("missing");
    missing.spec.as_mut().unwrap().priority_class_name = Some("nope".into());
    let e = pods
        .create(&PostParams::default(), &missing)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 403 && s.message.contains("no PriorityClass with name nope")),
        "{e}"
    );
}

/// The Eviction API: a budget with no disruptions left refuses with 429;
/// otherwise the budget's allowance drops by one and the pod goes.
#[tokio::test]
async fn evictions_honour_disruption_budgets() {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let (_server, client) = setup().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for name in ["a", "b"] {
        pods.create(&PostParams::default(), &pod(name))
            .await
            .unwrap();
    }
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let pdb = pdbs
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "llm"},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "llm"}}},
                "status": {"disruptionsAllowed": 5, "currentHealthy": 2, "desiredHealthy": 1,
                           "expectedPods": 2}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    // As the registry strategy does: the status comes from the disruption
    // controller, never from the creator.
    assert_eq!(
        pdb.status.clone().unwrap_or_default().disruptions_allowed,
        0
    );
    let mut with_status = pdb.clone();
    with_status.status = Some(
        serde_json::from_value(json!({
            "disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2
        }))
        .unwrap(),
    );
    pdbs.replace_status("llm", &PostParams::default(), &with_status)
        .await
        .unwrap();
    pods.evict("a", &Default::default()).await.unwrap();
    assert!(pods.get_opt("a").await.unwrap().is_none());
    let left = pdbs.get("llm").await.unwrap();
    assert_eq!(left.status.unwrap().disruptions_allowed, 0);
    let e = pods.evict("b", &Default::default()).await.unwrap_err();
    assert!(
        matches!(&e, kube::Error::Api(s) if s.code == 429 && s.message.contains("disruption budget")),
        "{e}"
    );
    assert!(pods.get_opt("b").await.unwrap().is_some());
}
