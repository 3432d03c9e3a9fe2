//! Watches: replay the change log from a resourceVersion as
//! newline-delimited `{"type":..,"object":..}` events, the way the real API
//! server streams them (ADDED/MODIFIED/DELETED, BOOKMARK, and an ERROR
//! event with 410 when the requested resourceVersion is compacted away).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::handle::StoreHandle;
use crate::resource::ResourceType;
use crate::store::{Change, EventType, ResourceId, Selectors};

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// After this resourceVersion.
    After(u64),
    /// With a synthetic ADDED for every current object (`resourceVersion`
    /// unset or "0"); with a closing BOOKMARK annotated
    /// `k8s.io/initial-events-end` for streaming lists.
    Snapshot { end_bookmark: bool },
}

/// What one watch request asked for.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    pub rt: Arc<ResourceType>,
    pub namespace: Option<String>,
    pub selectors: Selectors,
    pub start: Start,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    pub bookmark_interval: Duration,
}

/// What a change looks like through a watch's filter: a change that moves
/// an object into the selector is ADDED, out of it DELETED, as the real
/// API server's watch cache reports it.
pub fn translate<'a>(
    rt: &ResourceType,
    namespace: Option<&str>,
    sel: &Selectors,
    change: &'a Change,
) -> Option<(EventType, &'a Value)> {
    if change.resource != ResourceId::of(rt) {
        return None;
    }
    if let Some(ns) = namespace {
        let obj_ns = change
            .object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str);
        if rt.namespaced && obj_ns != Some(ns) {
            return None;
        }
    }
    let now = sel.matches(rt, &change.object);
    match change.kind {
        EventType::Added | EventType::Deleted => now.then_some((change.kind, &change.object)),
        EventType::Modified => {
            let before = change.previous.as_ref().is_some_and(|p| sel.matches(rt, p));
            match (before, now) {
                (true, true) => Some((EventType::Modified, &change.object)),
                (false, true) => Some((EventType::Added, &change.object)),
                (true, false) => Some((EventType::Deleted, &change.object)),
                (false, false) => None,
            }
        }
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({ "resourceVersion": rv.to_string() });
    if initial_end {
        meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    line(
        "BOOKMARK",
        &json!({ "kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta }),
    )
}

/// Streams the watch into `tx` until the client goes away, the timeout
/// passes, watches are reset, or the server stops.
pub async fn run(
    store: StoreHandle,
    spec: WatchSpec,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    stop: CancellationToken,
    mut resets: watch::Receiver<u64>,
) {
    resets.mark_unchanged();
    let mut changed = store.subscribe();
    changed.mark_unchanged();
    let rt = &spec.rt;
    let ns = spec.namespace.as_deref();
    let send = |b: Bytes| {
        let tx = tx.clone();
        async move { tx.send(Ok(b)).await.is_ok() }
    };
    let deadline = spec.timeout.map(|t| Instant::now() + t);
    let mut cursor = match spec.start {
        Start::After(rv) => rv,
        Start::Snapshot { end_bookmark } => {
            let (items, rv) = store.read(|s| s.list(rt, ns, &spec.selectors));
            for item in &items {
                if !send(line("ADDED", item)).await {
                    return;
                }
            }
            if end_bookmark && spec.bookmarks && !send(bookmark(rt, rv, true)).await {
                return;
            }
            rv
        }
    };
    let mut last_sent = Instant::now();
    loop {
        changed.mark_unchanged();
        match store.read(|s| s.changes_since(cursor)) {
            Err(e) => {
                send(line("ERROR", &e.status_json())).await;
                return;
            }
            Ok((changes, rv)) => {
                for c in &changes {
                    if let Some((kind, obj)) = translate(rt, ns, &spec.selectors, c) {
                        if !send(line(kind.as_str(), obj)).await {
                            return;
                        }
                        last_sent = Instant::now();
                    }
                }
                cursor = rv;
            }
        }
        let next_bookmark = last_sent + spec.bookmark_interval;
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = stop.cancelled() => return,
            _ = resets.changed() => return,
            _ = tx.closed() => return,
            _ = async { match deadline { Some(d) => sleep_until(d).await, None => std::future::pending().await } } => return,
            _ = sleep_until(next_bookmark), if spec.bookmarks => {
                if !send(bookmark(rt, cursor, false)).await {
                    return;
                }
                last_sent = Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::FieldSelector;

    fn pods() -> ResourceType {
        ResourceType::namespaced("", "v1", "pods", "Pod")
    }

    fn change(kind: EventType, prev_node: Option<&str>, node: &str) -> Change {
        let pod = |n: &str| json!({"metadata":{"name":"p","namespace":"ml"},"spec":{"nodeName":n}});
        Change {
            rv: 2,
            kind,
            resource: ResourceId::of(&pods()),
            object: pod(node),
            previous: prev_node.map(pod),
        }
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let rt = pods();
        let sel = Selectors {
            fields: FieldSelector::parse("spec.nodeName=n1", &rt).unwrap(),
            ..Selectors::default()
        };
        let kind = |c: &Change| translate(&rt, None, &sel, c).map(|(k, _)| k);
        assert_eq!(
            kind(&change(EventType::Modified, Some(""), "n1")),
            Some(EventType::Added)
        );
        assert_eq!(
            kind(&change(EventType::Modified, Some("n1"), "n1")),
            Some(EventType::Modified)
        );
        assert_eq!(
            kind(&change(EventType::Modified, Some("n1"), "n2")),
            Some(EventType::Deleted)
        );
        assert_eq!(kind(&change(EventType::Modified, Some("n2"), "n3")), None);
        assert_eq!(kind(&change(EventType::Added, None, "n2")), None);
        assert_eq!(
            kind(&change(EventType::Deleted, None, "n1")),
            Some(EventType::Deleted)
        );
    }

    #[test]
    fn other_namespaces_and_types_are_filtered() {
        let rt = pods();
        let c = change(EventType::Added, None, "n1");
        assert!(translate(&rt, Some("ml"), &Selectors::default(), &c).is_some());
        assert!(translate(&rt, Some("other"), &Selectors::default(), &c).is_none());
        let nodes = ResourceType::cluster("", "v1", "nodes", "Node");
        assert!(translate(&nodes, None, &Selectors::default(), &c).is_none());
    }
}
