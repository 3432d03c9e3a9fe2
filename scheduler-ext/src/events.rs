//! Kubernetes Events on pods the extender cannot place or cannot read.
//!
//! A handler never waits for the API: it hands the event to a bounded
//! queue (dropping it when the queue is full) and a background task
//! publishes. The same (pod, reason) is published at most once per
//! interval, since kube-scheduler retries an unplaceable pod often.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

/// Why an Event is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The pod's GPU request or model annotations cannot be read.
    InvalidGpuRequest,
    /// No candidate node can ever fit the pod.
    GpuUnplaceable,
    /// The pod's model could not be read from the Hub (gated, missing,
    /// unreachable, malformed); retried with backoff.
    ModelUnavailable,
    /// Lower-priority pods are being evicted to free GPUs for this pod.
    Preempting,
    /// This pod was evicted to free GPUs for a higher-priority pod.
    Preempted,
    /// A preemption for this pod is not possible (budgets forbid it).
    PreemptionBlocked,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidGpuRequest => "InvalidGpuRequest",
            Reason::GpuUnplaceable => "GpuUnplaceable",
            Reason::ModelUnavailable => "ModelUnavailable",
            Reason::Preempting => "Preempting",
            Reason::Preempted => "Preempted",
            Reason::PreemptionBlocked => "PreemptionBlocked",
        }
    }

    /// Normal for what goes as intended, Warning for what needs a look.
    fn event_type(self) -> EventType {
        match self {
            Reason::Preempting | Reason::Preempted => EventType::Normal,
            _ => EventType::Warning,
        }
    }
}

/// A pending Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub reason: Reason,
    pub message: String,
}

/// The handlers' side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Events {
    tx: Option<mpsc::Sender<PodEvent>>,
}

impl Events {
    /// Events that go nowhere (benchmarks, tests of the pure parts).
    pub fn disabled() -> Events {
        Events { tx: None }
    }

    /// Starts the publishing task.
    pub fn start(client: Client, reporter: Reporter, every: Duration) -> Events {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(publish(Recorder::new(client, reporter), rx, every));
        Events { tx: Some(tx) }
    }

    /// Queues an Event; drops it when the queue is full.
    pub fn emit(&self, event: PodEvent) {
        if let Some(tx) = &self.tx
            && tx.try_send(event).is_err()
        {
            tracing::debug!("event queue full; dropping an event");
        }
    }
}

/// Decides which events to publish: at most one per (pod, reason) per
/// interval.
pub struct RateLimit {
    every: Duration,
    last: HashMap<(String, Reason), Instant>,
}

impl RateLimit {
    pub fn new(every: Duration) -> RateLimit {
        RateLimit {
            every,
            last: HashMap::new(),
        }
    }

    /// Whether to publish `e` at `now`; remembers it if so.
    pub fn admit(&mut self, e: &PodEvent, now: Instant) -> bool {
        if self.last.len() > 10_000 {
            let every = self.every;
            self.last.retain(|_, t| now.duration_since(*t) < every);
        }
        let key = (e.uid.clone(), e.reason);
        match self.last.get(&key) {
            Some(t) if now.duration_since(*t) < self.every => false,
            _ => {
                self.last.insert(key, now);
                true
            }
        }
    }
}

async fn publish(recorder: Recorder, mut rx: mpsc::Receiver<PodEvent>, every: Duration) {
    let mut limit = RateLimit::new(every);
    while let Some(e) = rx.recv().await {
        if !limit.admit(&e, Instant::now()) {
            continue;
        }
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(e.namespace.clone()),
            name: Some(e.name.clone()),
            uid: Some(e.uid.clone()),
            ..Default::default()
        };
        // The API refuses a note over 1 kB.
        let note = proto::clip::clip_to(&e.message, 1000).to_string();
        let event = Event {
            type_: e.reason.event_type(),
            reason: e.reason.as_str().into(),
            note: Some(note),
            action: match e.reason {
                Reason::Preempting | Reason::Preempted => "Preempting".into(),
                _ => "Scheduling".into(),
            },
            secondary: None,
        };
        if let Err(err) = recorder.publish(&event, &reference).await {
            tracing::warn!(pod = %format!("{}/{}", proto::clip::clip(&e.namespace), proto::clip::clip(&e.name)), error = %err, "could not publish an event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_pod_and_reason_per_interval() {
        let mut r = RateLimit::new(Duration::from_secs(60));
        let e = PodEvent {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            reason: Reason::InvalidGpuRequest,
            message: "m".into(),
        };
        let t = Instant::now();
        assert!(r.admit(&e, t));
        assert!(!r.admit(&e, t + Duration::from_secs(30)));
        let other = PodEvent {
            reason: Reason::GpuUnplaceable,
            ..e.clone()
        };
        assert!(r.admit(&other, t + Duration::from_secs(30)));
        assert!(r.admit(&e, t + Duration::from_secs(61)));
    }
}
