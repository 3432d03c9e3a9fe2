//! Each node's GPU bookings, kept in the annotation [`ANNOTATION`] on the
//! node's `GpuNodeInventory`.
//!
//! Every extender replica writes a pod's entry here, conditional on the
//! object's resourceVersion, before it creates the pod's Binding on that
//! node. The object is the per-node serialisation point of bind decisions
//! (see `bind.rs` for why this prevents double booking). The device plugin
//! owns the spec and never writes this annotation.
//!
//! An entry lives as long as its pod holds the GPUs: until the pod is
//! deleted or finished. `expiresAt` bounds only an entry whose Binding
//! never happened (the bind failed, or its replica died): past it, and with
//! the pod not bound to the node, later writes drop the entry.
//!
//! A preemptor's nomination is an entry too, naming its victims: the GPUs
//! they free are promised to it, so no third pod takes them in between.

use std::collections::BTreeMap;

use proto::assignment::PodAssignment;
use serde::{Deserialize, Serialize};

/// The annotation on `GpuNodeInventory` holding [`Reservations`] as JSON;
/// its name is a contract, so it lives in `proto`.
pub use proto::assignment::RESERVATIONS_ANNOTATION as ANNOTATION;
/// The format version written and read.
pub const VERSION: &str = "v1";

/// The bookings on one node, by pod UID.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Reservations {
    pub version: String,
    pub pods: BTreeMap<String, Reservation>,
}

/// One pod's booking.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    pub namespace: String,
    pub name: String,
    /// Unix seconds after which the entry holds nothing unless its pod is
    /// bound to the node.
    pub expires_at: u64,
    /// Which replica wrote it, for people reading the object.
    #[serde(default)]
    pub holder: String,
    pub assignment: PodAssignment,
    /// For a preemptor's nomination: the UIDs of the pods being evicted to
    /// free `assignment`. Other pods count the nomination instead of the
    /// victims; the preemptor itself binds only once they are gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub victims: Vec<String>,
}

/// Why the annotation could not be read. A malformed annotation is treated
/// as empty by readers (expiry bounds what it could have held) and
/// overwritten by the next bind on the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ANNOTATION}: {0}")]
pub struct ReservationsError(String);

impl Reservations {
    /// Parses the annotation value; `Ok(empty)` when absent.
    pub fn parse(value: Option<&str>) -> Result<Reservations, ReservationsError> {
        let Some(text) = value else {
            return Ok(Reservations::empty());
        };
        let r: Reservations =
            serde_json::from_str(text).map_err(|e| ReservationsError(e.to_string()))?;
        if r.version != VERSION {
            return Err(ReservationsError(format!(
                "unsupported version {:?}; this build reads {VERSION:?}",
                r.version
            )));
        }
        for (uid, entry) in &r.pods {
            entry
                .assignment
                .validate()
                .map_err(|e| ReservationsError(format!("pods[{uid}]: {e}")))?;
        }
        Ok(r)
    }

    pub fn empty() -> Reservations {
        Reservations {
            version: VERSION.to_string(),
            pods: BTreeMap::new(),
        }
    }

    /// The annotation value.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Entries unexpired at `now` (entries of bound pods hold regardless).
    pub fn live(&self, now: u64) -> impl Iterator<Item = (&String, &Reservation)> {
        self.pods.iter().filter(move |(_, r)| r.expires_at > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(expires_at: u64) -> Reservation {
        Reservation {
            namespace: "ns".into(),
            name: "p".into(),
            expires_at,
            holder: "a".into(),
            victims: vec![],
            assignment: PodAssignment::from_json(
                r#"{"version":"v1","node":"n","containers":[{"name":"c","gpus":[{"uuid":"GPU-1","index":0,"memoryBytes":1024}]}]}"#,
            )
            .unwrap(),
        }
    }

    #[test]
    fn round_trips_and_tells_unexpired_entries() {
        let mut r = Reservations::empty();
        r.pods.insert("old".into(), entry(10));
        r.pods.insert("bound".into(), entry(100));
        r.pods.insert("pending".into(), entry(100));
        let back = Reservations::parse(Some(&r.to_json())).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            back.live(50).map(|(u, _)| u.as_str()).collect::<Vec<_>>(),
            ["bound", "pending"]
        );
    }

    #[test]
    fn absent_is_empty_and_garbage_is_an_error() {
        assert!(Reservations::parse(None).unwrap().pods.is_empty());
        assert!(Reservations::parse(Some("{")).is_err());
        let e = Reservations::parse(Some(r#"{"version":"v9","pods":{}}"#)).unwrap_err();
        assert!(e.to_string().contains("v9"), "{e}");
    }
}
