//! Pending bind reservations, kept in the annotation [`ANNOTATION`] on a
//! node's `GpuNodeInventory`.
//!
//! Every extender replica writes a reservation here, conditional on the
//! object's resourceVersion, before it creates a Binding on that node. The
//! object is the per-node serialisation point of bind decisions (see
//! `bind.rs` for why this prevents double booking). The device plugin owns
//! the spec and never writes this annotation.
//!
//! An entry lives until the pod shows up bound (its assignment is then on
//! the pod itself), or until it expires because the bind that wrote it
//! failed or its replica died; later writes prune such entries.

use std::collections::BTreeMap;

use proto::assignment::PodAssignment;
use serde::{Deserialize, Serialize};

/// The annotation on `GpuNodeInventory` holding [`Reservations`] as JSON;
/// its name is a contract, so it lives in `proto`.
pub use proto::assignment::RESERVATIONS_ANNOTATION as ANNOTATION;
/// The format version written and read.
pub const VERSION: &str = "v1";

/// The pending reservations on one node, by pod UID.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Reservations {
    pub version: String,
    pub pods: BTreeMap<String, Reservation>,
}

/// One pod's pending reservation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    pub namespace: String,
    pub name: String,
    /// Unix seconds after which the entry no longer holds anything.
    pub expires_at: u64,
    /// Which replica wrote it, for people reading the object.
    #[serde(default)]
    pub holder: String,
    pub assignment: PodAssignment,
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

    /// Drops entries that expired by `now` or whose pod `is_settled` says
    /// is already accounted for elsewhere (bound, or gone).
    pub fn prune(&mut self, now: u64, is_settled: impl Fn(&str) -> bool) {
        self.pods
            .retain(|uid, r| r.expires_at > now && !is_settled(uid));
    }

    /// Entries still holding at `now`.
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
            assignment: PodAssignment::from_json(
                r#"{"version":"v1","node":"n","containers":[{"name":"c","gpus":[{"uuid":"GPU-1","index":0,"memoryBytes":1024}]}]}"#,
            )
            .unwrap(),
        }
    }

    #[test]
    fn round_trips_and_prunes() {
        let mut r = Reservations::empty();
        r.pods.insert("old".into(), entry(10));
        r.pods.insert("bound".into(), entry(100));
        r.pods.insert("pending".into(), entry(100));
        let back = Reservations::parse(Some(&r.to_json())).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.live(50).count(), 2);
        let mut pruned = back;
        pruned.prune(50, |uid| uid == "bound");
        assert_eq!(pruned.pods.keys().collect::<Vec<_>>(), ["pending"]);
    }

    #[test]
    fn absent_is_empty_and_garbage_is_an_error() {
        assert!(Reservations::parse(None).unwrap().pods.is_empty());
        assert!(Reservations::parse(Some("{")).is_err());
        let e = Reservations::parse(Some(r#"{"version":"v9","pods":{}}"#)).unwrap_err();
        assert!(e.to_string().contains("v9"), "{e}");
    }
}
