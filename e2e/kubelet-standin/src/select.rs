//! Which devices a container gets for one resource: kubelet's
//! `devicesToAllocate` without the Topology Manager (every device counts as
//! "no affinity"), as a pure function of the device sets.

use std::collections::BTreeSet;

/// Too few healthy, free devices for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// Healthy devices not allocated to anyone (reusable ones not counted).
    pub available: usize,
}

/// A request in progress: what is already taken (reused from init
/// containers) and what may still be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    required: usize,
    taken: BTreeSet<String>,
    free: BTreeSet<String>,
}

/// Where a request stands after the reusable devices were taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Reusable devices cover the whole request; the plugin is not asked.
    Done(BTreeSet<String>),
    /// More devices are needed; the plugin may state a preference.
    Choose(Selection),
}

/// Starts a request for `required` devices, as kubelet does: first from
/// `reusable` (devices of earlier init containers of the same pod), then it
/// checks that enough `healthy` devices are not `in_use`.
pub fn start(
    required: usize,
    reusable: &BTreeSet<String>,
    healthy: &BTreeSet<String>,
    in_use: &BTreeSet<String>,
) -> Result<Start, Shortfall> {
    let taken: BTreeSet<String> = reusable.iter().take(required).cloned().collect();
    if taken.len() == required {
        return Ok(Start::Done(taken));
    }
    let free: BTreeSet<String> = healthy.difference(in_use).cloned().collect();
    let needed = required - taken.len();
    if free.len() < needed {
        return Err(Shortfall {
            available: free.len(),
        });
    }
    Ok(Start::Choose(Selection {
        required,
        taken,
        free,
    }))
}

impl Selection {
    /// `available_deviceIDs` for `GetPreferredAllocation`: the free devices
    /// plus those already taken, as kubelet sends `available ∪ allocated`.
    pub fn available(&self) -> Vec<String> {
        self.free.union(&self.taken).cloned().collect()
    }

    /// `must_include_deviceIDs`: the devices already taken (reused).
    pub fn must_include(&self) -> Vec<String> {
        self.taken.iter().cloned().collect()
    }

    /// `allocation_size`: the container's whole request.
    pub fn size(&self) -> usize {
        self.required
    }

    /// Completes the request: first the plugin's `preferred` devices that are
    /// free (others are ignored, as kubelet intersects with `available`),
    /// then, if the plugin returned too few, any free devices in ID order.
    pub fn finish(mut self, preferred: &[String]) -> BTreeSet<String> {
        for id in preferred {
            if self.taken.len() == self.required {
                break;
            }
            if self.free.contains(id) {
                self.taken.insert(id.clone());
            }
        }
        for id in &self.free {
            if self.taken.len() == self.required {
                break;
            }
            self.taken.insert(id.clone());
        }
        self.taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reusable_devices_alone_cover_a_request() {
        let got = start(
            2,
            &set(&["a", "b", "c"]),
            &set(&["a", "b", "c", "d"]),
            &set(&["a", "b", "c"]),
        );
        assert_eq!(got, Ok(Start::Done(set(&["a", "b"]))));
    }

    #[test]
    fn preference_request_includes_reused_devices_as_must_include() {
        let Ok(Start::Choose(sel)) =
            start(3, &set(&["a"]), &set(&["a", "b", "c", "d"]), &set(&["a"]))
        else {
            panic!("expected a choice")
        };
        assert_eq!(sel.available(), ["a", "b", "c", "d"]);
        assert_eq!(sel.must_include(), ["a"]);
        assert_eq!(sel.size(), 3);
        assert_eq!(sel.finish(&["d".into(), "c".into()]), set(&["a", "c", "d"]));
    }

    #[test]
    fn too_few_preferred_devices_are_back_filled_and_foreign_ones_ignored() {
        let Ok(Start::Choose(sel)) = start(3, &set(&[]), &set(&["a", "b", "c", "d"]), &set(&["b"]))
        else {
            panic!("expected a choice")
        };
        // "b" is in use and "x" unknown: both ignored; "d" kept; two filled in.
        assert_eq!(
            sel.finish(&["b".into(), "x".into(), "d".into()]),
            set(&["a", "c", "d"])
        );
    }

    #[test]
    fn shortfall_counts_only_free_healthy_devices() {
        assert_eq!(
            start(3, &set(&[]), &set(&["a", "b", "c"]), &set(&["a", "z"])),
            Err(Shortfall { available: 2 })
        );
    }

    proptest! {
        #[test]
        fn result_has_exactly_the_requested_size_of_free_or_reused_devices(
            n in 0usize..12,
            used in proptest::collection::btree_set(0usize..12, 0..12),
            reused in proptest::collection::btree_set(0usize..12, 0..4),
            preferred in proptest::collection::vec(0usize..14, 0..8),
            required in 1usize..8,
        ) {
            let id = |i: &usize| format!("d{i}");
            let healthy: BTreeSet<String> = (0..n).map(|i| id(&i)).collect();
            let reusable: BTreeSet<String> = reused.iter().map(id).collect();
            let in_use: BTreeSet<String> = used.iter().chain(reused.iter()).map(id).collect();
            let preferred: Vec<String> = preferred.iter().map(id).collect();
            match start(required, &reusable, &healthy, &in_use) {
                Ok(Start::Done(got)) => {
                    prop_assert_eq!(got.len(), required);
                    prop_assert!(got.is_subset(&reusable));
                }
                Ok(Start::Choose(sel)) => {
                    let must = sel.must_include();
                    let got = sel.finish(&preferred);
                    prop_assert_eq!(got.len(), required);
                    for d in &got {
                        prop_assert!(reusable.contains(d) || (healthy.contains(d) && !in_use.contains(d)));
                    }
                    for d in must {
                        prop_assert!(got.contains(&d));
                    }
                }
                Err(Shortfall { available }) => {
                    let free = healthy.difference(&in_use).count();
                    prop_assert_eq!(available, free);
                    prop_assert!(free + reusable.len().min(required) < required);
                }
            }
        }
    }
}
