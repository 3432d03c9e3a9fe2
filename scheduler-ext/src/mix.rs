//! The pods the fragmentation measure's typical pod mix is derived from.
//!
//! FGD scores a placement by how much idle GPU capacity the workload's
//! typical pods could no longer use. The best view of that workload is
//! every pod that asks for GPUs now: the bound ones and those still waiting
//! to be scheduled, whose arrival is exactly what the measure protects room
//! for. Each pod's demand is read from its spec, as the filter reads it,
//! so a pod counts the same before and after it is bound.

use std::collections::HashMap;

use placement::PodDemand;

/// Every GPU pod's demand, by UID, from the two pod watches.
#[derive(Debug, Default)]
pub struct PodMix {
    pending: HashMap<String, PodDemand>,
    bound: HashMap<String, PodDemand>,
    changed: bool,
}

impl PodMix {
    /// A pod not yet bound asks for `demand` (`None`: nothing gpupack
    /// places, or not sizeable yet).
    pub fn set_pending(&mut self, uid: &str, demand: Option<PodDemand>) {
        if self.bound.contains_key(uid) {
            // Bound already: the bound watch owns it.
            return;
        }
        Self::set(&mut self.pending, &mut self.changed, uid, demand);
    }

    /// A bound pod asks for `demand`; it is no longer pending.
    pub fn set_bound(&mut self, uid: &str, demand: Option<PodDemand>) {
        if self.pending.remove(uid).is_some() {
            self.changed = true;
        }
        Self::set(&mut self.bound, &mut self.changed, uid, demand);
    }

    /// A pod was deleted (or left the view of both watches).
    pub fn forget(&mut self, uid: &str) {
        let a = self.pending.remove(uid).is_some();
        let b = self.bound.remove(uid).is_some();
        self.changed |= a || b;
    }

    /// Replaces every pending pod (after the pending watch re-lists).
    pub fn replace_pending(&mut self, pods: Vec<(String, PodDemand)>) {
        let pods: HashMap<String, PodDemand> = pods
            .into_iter()
            .filter(|(uid, _)| !self.bound.contains_key(uid))
            .collect();
        if pods != self.pending {
            self.pending = pods;
            self.changed = true;
        }
    }

    /// Replaces every bound pod (after the bound watch re-lists).
    pub fn replace_bound(&mut self, pods: Vec<(String, PodDemand)>) {
        let pods: HashMap<String, PodDemand> = pods.into_iter().collect();
        let before = self.pending.len();
        self.pending.retain(|uid, _| !pods.contains_key(uid));
        if pods != self.bound || before != self.pending.len() {
            self.bound = pods;
            self.changed = true;
        }
    }

    /// Whether anything changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The demand read from the spec of pod `uid`, pending or bound.
    pub fn get(&self, uid: &str) -> Option<&PodDemand> {
        self.bound.get(uid).or_else(|| self.pending.get(uid))
    }

    /// Pending pods' demands (bound ones are reached through the ledger,
    /// which also holds pods bound before their spec could be sized).
    pub fn pending(&self) -> impl Iterator<Item = (&str, &PodDemand)> {
        self.pending.iter().map(|(u, d)| (u.as_str(), d))
    }

    fn set(
        map: &mut HashMap<String, PodDemand>,
        changed: &mut bool,
        uid: &str,
        demand: Option<PodDemand>,
    ) {
        match demand {
            Some(d) => {
                if map.get(uid) != Some(&d) {
                    map.insert(uid.to_string(), d);
                    *changed = true;
                }
            }
            None => *changed |= map.remove(uid).is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use placement::MemoryNeed;

    fn d(gib: u64) -> PodDemand {
        PodDemand::gpus(1, MemoryNeed::Bytes(gib << 30))
    }

    #[test]
    fn a_pod_counts_once_from_pending_to_bound_to_deleted() {
        let mut m = PodMix::default();
        m.set_pending("u1", Some(d(20)));
        assert!(m.take_changed());
        assert_eq!(m.pending().count(), 1);
        m.set_bound("u1", Some(d(20)));
        assert!(m.take_changed());
        assert_eq!(m.pending().count(), 0);
        assert_eq!(m.get("u1"), Some(&d(20)));
        // The pending watch's late event for a pod already bound.
        m.set_pending("u1", Some(d(20)));
        assert_eq!(m.pending().count(), 0);
        assert!(!m.take_changed());
        m.forget("u1");
        assert!(m.take_changed());
        assert_eq!(m.get("u1"), None);
    }

    #[test]
    fn unchanged_updates_do_not_mark_a_change() {
        let mut m = PodMix::default();
        m.set_pending("u1", Some(d(20)));
        m.take_changed();
        m.set_pending("u1", Some(d(20)));
        m.set_pending("u2", None);
        m.forget("u3");
        m.replace_pending(vec![("u1".into(), d(20))]);
        assert!(!m.take_changed());
        m.replace_pending(vec![]);
        assert!(m.take_changed());
        assert_eq!(m.get("u1"), None);
    }

    #[test]
    fn a_relist_of_bound_pods_drops_them_from_pending() {
        let mut m = PodMix::default();
        m.set_pending("u1", Some(d(20)));
        m.set_pending("u2", Some(d(40)));
        m.take_changed();
        m.replace_bound(vec![("u1".into(), d(20))]);
        assert!(m.take_changed());
        assert_eq!(m.pending().map(|(u, _)| u).collect::<Vec<_>>(), vec!["u2"]);
    }
}
