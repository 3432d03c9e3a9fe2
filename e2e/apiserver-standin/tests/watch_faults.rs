//! Watches (raw and through kube-runtime's watcher and reflector) and
//! fault injection, against the stand-in over HTTP.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use apiserver_standin::{ApiServer, Options};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::Status;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "vllm"}]}
    }))
    .unwrap()
}

async fn start(bookmark_interval: Duration) -> (ApiServer, Client) {
    let server = ApiServer::start_with(Options {
        bookmark_interval,
        ..Options::default()
    })
    .await
    .unwrap();
    let client = server.client().await.unwrap();
    (server, client)
}

/// Polls `f` until it holds, for at most 15 s.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn names(reader: &reflector::Store<Pod>) -> Vec<String> {
    let mut v: Vec<String> = reader.state().iter().map(|p| p.name_any()).collect();
    v.sort();
    v
}

/// Runs a watcher+reflector over all pods; returns the reader once ready.
async fn reflect_pods(client: Client) -> reflector::Store<Pod> {
    let (reader, writer) = reflector::store::<Pod>();
    let stream = watcher(Api::<Pod>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    tokio::spawn(stream.for_each(|_| async {}));
    tokio::time::timeout(Duration::from_secs(15), reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    reader
}

fn kind(e: &WatchEvent<Pod>) -> String {
    match e {
        WatchEvent::Added(p) => format!("ADDED {}", p.name_any()),
        WatchEvent::Modified(p) => format!("MODIFIED {}", p.name_any()),
        WatchEvent::Deleted(p) => format!("DELETED {}", p.name_any()),
        WatchEvent::Bookmark(_) => "BOOKMARK".into(),
        WatchEvent::Error(s) => format!("ERROR {}", s.code),
    }
}

#[tokio::test]
async fn raw_watch_streams_changes_in_order_with_bookmarks() {
    let (_server, client) = start(Duration::from_millis(100)).await;
    let pods: Api<Pod> = Api::namespaced(client, "ml");
    let before = pods
        .create(&PostParams::default(), &pod("old"))
        .await
        .unwrap();
    let rv = before.resource_version().unwrap();
    let mut stream = pods
        .watch(&WatchParams::default().timeout(3), &rv)
        .await
        .unwrap()
        .boxed();

    pods.create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    pods.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await
    .unwrap();
    pods.delete("a", &DeleteParams::default()).await.unwrap();

    let mut seen = Vec::new();
    let mut rvs = Vec::new();
    while let Some(ev) = stream.try_next().await.unwrap() {
        if let WatchEvent::Added(p) | WatchEvent::Modified(p) | WatchEvent::Deleted(p) = &ev {
            rvs.push(p.resource_version().unwrap().parse::<u64>().unwrap());
        }
        let k = kind(&ev);
        if seen.last() != Some(&k) {
            seen.push(k);
        }
    }
    // The stream ends by itself at timeoutSeconds.
    let changes: Vec<&String> = seen.iter().filter(|k| *k != "BOOKMARK").collect();
    assert_eq!(changes, ["ADDED a", "MODIFIED a", "DELETED a"]);
    assert!(seen.iter().any(|k| k == "BOOKMARK"), "{seen:?}");
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");
}

#[tokio::test]
async fn watch_from_a_compacted_version_gets_410() {
    let (server, client) = start(Duration::from_secs(3600)).await;
    let pods: Api<Pod> = Api::namespaced(client, "ml");
    pods.create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("b"))
        .await
        .unwrap();
    server.store().compact();
    let mut stream = pods
        .watch(&WatchParams::default().timeout(5), "1")
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
        }
        other => panic!(
            "expected a 410 ERROR event, got {:?}",
            other.map(|e| kind(&e))
        ),
    }
    // Resuming from the current version is fine.
    let now = server.store().resource_version().to_string();
    let mut ok = pods
        .watch(&WatchParams::default().timeout(5), &now)
        .await
        .unwrap()
        .boxed();
    pods.create(&PostParams::default(), &pod("c"))
        .await
        .unwrap();
    let first = ok.try_next().await.unwrap().unwrap();
    assert_eq!(kind(&first), "ADDED c");
}

#[tokio::test]
async fn field_selected_watch_sees_a_pod_bound_onto_its_node() {
    let (_server, client) = start(Duration::from_secs(3600)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ml");
    let p = pods
        .create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    let on_node: Api<Pod> = Api::all(client);
    let rv = p.resource_version().unwrap();
    let mut stream = on_node
        .watch(
            &WatchParams::default().fields("spec.nodeName=n1").timeout(5),
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some("a".into()),
            ..Default::default()
        },
        target: ObjectReference {
            kind: Some("Node".into()),
            name: Some("n1".into()),
            ..Default::default()
        },
    };
    let _: Status = pods
        .create_subresource("binding", "a", &PostParams::default(), &binding)
        .await
        .unwrap();
    let first = stream.try_next().await.unwrap().unwrap();
    assert_eq!(kind(&first), "ADDED a", "entering the selector is ADDED");
    pods.delete("a", &DeleteParams::default()).await.unwrap();
    let second = stream.try_next().await.unwrap().unwrap();
    assert_eq!(kind(&second), "DELETED a");
}

#[tokio::test]
async fn reflector_follows_changes_and_closed_watches() {
    let (server, client) = start(Duration::from_millis(200)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ml");
    pods.create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    let reader = reflect_pods(client.clone()).await;
    assert_eq!(names(&reader), ["a"]);

    pods.create(&PostParams::default(), &pod("b"))
        .await
        .unwrap();
    pods.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"v": "2"}}})),
    )
    .await
    .unwrap();
    eventually("b added and a updated", || {
        names(&reader) == ["a", "b"]
            && reader
                .state()
                .iter()
                .any(|p| p.name_any() == "a" && p.labels().get("v").is_some())
    })
    .await;
    pods.delete("b", &DeleteParams::default()).await.unwrap();
    eventually("b deleted", || names(&reader) == ["a"]).await;

    let watches_before = server.requests().count("watch", "pods");
    let lists_before = server.requests().count("list", "pods");
    server.close_watches();
    pods.create(&PostParams::default(), &pod("c"))
        .await
        .unwrap();
    eventually("c seen after the watch was closed", || {
        names(&reader) == ["a", "c"]
    })
    .await;
    eventually("re-watched", || {
        server.requests().count("watch", "pods") > watches_before
    })
    .await;
    assert_eq!(
        server.requests().count("list", "pods"),
        lists_before,
        "a closed watch resumes without relisting"
    );
}

#[tokio::test]
async fn streaming_list_reflector() {
    let (_server, client) = start(Duration::from_millis(200)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ml");
    pods.create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    let (reader, writer) = reflector::store::<Pod>();
    let stream = watcher(
        Api::<Pod>::all(client),
        watcher::Config::default().streaming_lists(),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects();
    tokio::spawn(stream.for_each(|_| async {}));
    tokio::time::timeout(Duration::from_secs(15), reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(names(&reader), ["a"]);
    pods.create(&PostParams::default(), &pod("b"))
        .await
        .unwrap();
    eventually("b streamed", || names(&reader) == ["a", "b"]).await;
}

#[tokio::test]
async fn reflector_relists_after_410() {
    // No bookmarks: the watcher's resourceVersion only moves with pod events.
    let (server, client) = start(Duration::from_secs(3600)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ml");
    let reader = reflect_pods(client.clone()).await;
    pods.create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    eventually("a seen", || names(&reader) == ["a"]).await;
    assert_eq!(server.requests().count("list", "pods"), 1);

    // Hold the watcher off (its re-watch fails with 500) while the world
    // moves on and the history is compacted: when it comes back, its
    // resourceVersion is too old, it gets 410, and only a relist finds the
    // changes.
    server.faults().fail_for(500, Duration::from_secs(60));
    server.close_watches();
    server.store().delete_as::<Pod>(Some("ml"), "a").unwrap();
    let mut b = pod("b");
    b.metadata.namespace = Some("ml".into());
    server.store().put_as(&b).unwrap();
    server.store().compact();
    server.faults().clear();

    eventually("relisted after 410", || {
        server.requests().count("list", "pods") >= 2
    })
    .await;
    eventually("state rebuilt", || names(&reader) == ["b"]).await;
}

#[tokio::test]
async fn injected_conflicts_latency_and_errors() {
    let (server, client) = start(Duration::from_secs(1)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ml");

    server.faults().conflict_next_writes(2);
    for _ in 0..2 {
        let e = pods
            .create(&PostParams::default(), &pod("a"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
            "{e:?}"
        );
    }
    pods.get("zz").await.unwrap_err(); // reads are not hit
    pods.create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    assert_eq!(
        server
            .requests()
            .count_where(|r| r.injected && r.status == 409),
        2
    );
    assert_eq!(server.faults().injected().conflicts, 2);

    // Seeded probability: retries converge; the count matches what was injected.
    server.faults().conflict_probability(0.5, 7);
    let mut conflicts = 0;
    for i in 0..20 {
        loop {
            match pods
                .create(&PostParams::default(), &pod(&format!("p{i}")))
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(s)) if s.code == 409 => conflicts += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    assert!(conflicts > 0);
    assert_eq!(server.faults().injected().conflicts, 2 + conflicts);
    server.faults().clear();

    server.faults().latency(Duration::from_millis(150));
    let t = Instant::now();
    pods.get("a").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
    server.faults().latency(Duration::ZERO);

    // The stand-in's clients do not retry (as gpupack's, and client-go
    // without Retry-After): a 503 reaches the caller, and the next request
    // after the outage is served.
    server.faults().fail_for(503, Duration::from_millis(300));
    let e = pods.get("a").await.unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 503),
        "{e:?}"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    pods.get("a").await.unwrap();
    assert!(
        server
            .requests()
            .count_where(|r| r.injected && r.status == 503)
            >= 1
    );
    // A 500 is not retried.
    server.faults().fail_next(500, 1);
    let e = pods.get("a").await.unwrap_err();
    assert!(
        matches!(e, kube::Error::Api(ref s) if s.code == 500 && s.reason == "InternalError"),
        "{e:?}"
    );
    pods.get("a").await.unwrap();
}

#[tokio::test]
async fn outage_and_recovery() {
    let (server, client) = start(Duration::from_millis(200)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ml");
    pods.create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    let reader = reflect_pods(client.clone()).await;
    let port = server.port();

    server.stop().await;
    assert!(!server.is_serving().await);
    let e = pods.get("a").await.unwrap_err();
    assert!(
        !matches!(e, kube::Error::Api(_)),
        "a refused connection, not an API answer: {e:?}"
    );
    // The world moves on while the API is down.
    server
        .store()
        .put_as(&{
            let mut p = pod("during-outage");
            p.metadata.namespace = Some("ml".into());
            p
        })
        .unwrap();

    server.restart().await.unwrap();
    assert_eq!(server.port(), port);
    assert_eq!(
        pods.get("a").await.unwrap().name_any(),
        "a",
        "the store survives"
    );
    eventually("reflector caught up after the outage", || {
        names(&reader) == ["a", "during-outage"]
    })
    .await;

    // A timed outage in one call.
    let s2 = server.clone();
    let outage = tokio::spawn(async move { s2.outage(Duration::from_millis(300)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(pods.get("a").await.is_err());
    outage.await.unwrap().unwrap();
    pods.create(&PostParams::default(), &pod("after"))
        .await
        .unwrap();
    eventually("reflector sees writes after the second outage", || {
        names(&reader).len() == 3
    })
    .await;
}

#[tokio::test]
async fn consistent_lists_cost_per_stored_object() {
    let server = ApiServer::start_with(Options {
        consistent_list_cost: Duration::from_millis(1),
        ..Options::default()
    })
    .await
    .unwrap();
    let client = server.client().await.unwrap();
    for i in 0..300 {
        let mut p = pod(&format!("p{i}"));
        p.metadata.namespace = Some("ml".into());
        server.store().put_as(&p).unwrap();
    }
    let all: Api<Pod> = Api::all(client.clone());
    let one_node = ListParams::default().fields("spec.nodeName=node-a");

    // Consistent: read from etcd, every stored pod paid for although the
    // selector keeps none.
    let t = Instant::now();
    assert!(all.list(&one_node).await.unwrap().items.is_empty());
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    // A namespace is its own key range.
    let t = Instant::now();
    let other: Api<Pod> = Api::namespaced(client.clone(), "other");
    assert!(
        other
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );

    // resourceVersion=0: the watch cache, no such cost.
    let t = Instant::now();
    let cached = all.list(&one_node.clone().match_any()).await.unwrap();
    assert!(cached.items.is_empty());
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        all.list(&ListParams::default().match_any())
            .await
            .unwrap()
            .items
            .len(),
        300
    );

    // While the consistent list waits, the store serves others.
    let slow = tokio::spawn({
        let all = all.clone();
        let one_node = one_node.clone();
        async move { all.list(&one_node).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    Api::<Pod>::namespaced(client.clone(), "ml")
        .create(&PostParams::default(), &pod("during"))
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    slow.await.unwrap();

    // The fault plan sets the cost over the admin endpoint; clearing the
    // faults restores the server's setting.
    let plan = |body: &'static [u8]| {
        http::Request::post("/_standin/faults")
            .header("content-type", "application/json")
            .body(body.to_vec())
            .unwrap()
    };
    client
        .request_text(plan(br#"{"consistentListCostUs":0}"#))
        .await
        .unwrap();
    let t = Instant::now();
    all.list(&one_node).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    server.faults().clear();
    let t = Instant::now();
    all.list(&one_node).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn write_and_list_latency_apply_apart() {
    let server = ApiServer::start_with(Options {
        consistent_list_cost: Duration::ZERO,
        ..Options::default()
    })
    .await
    .unwrap();
    let client = server.client().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ml");
    pods.create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();

    let req = http::Request::post("/_standin/faults")
        .header("content-type", "application/json")
        .body(br#"{"writeLatencyMs":300}"#.to_vec())
        .unwrap();
    client.request_text(req).await.unwrap();
    let t = Instant::now();
    pods.create(&PostParams::default(), &pod("b"))
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some("b".into()),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            kind: Some("Node".into()),
            name: Some("node-a".into()),
            ..ObjectReference::default()
        },
    };
    let _: Status = pods
        .create_subresource("binding", "b", &PostParams::default(), &binding)
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    pods.get("a").await.unwrap();
    pods.list(&ListParams::default()).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );

    server.faults().clear();
    server.faults().list_latency(Duration::from_millis(300));
    let t = Instant::now();
    pods.list(&ListParams::default().match_any()).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    pods.get("a").await.unwrap();
    pods.create(&PostParams::default(), &pod("c"))
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
}
