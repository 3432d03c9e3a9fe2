//! How a stand-in is set up: where its sockets live, how it orders work that
//! kubelet leaves to Go's map iteration, and kubelet's timeouts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// File name of kubelet's checkpoint in the device plugin directory; kubelet
/// keeps it when it deletes the plugin sockets on start.
pub const CHECKPOINT_FILE: &str = "kubelet_internal_checkpoint";

/// Setup of a [`crate::Kubelet`].
#[derive(Debug, Clone)]
pub struct Options {
    /// kubelet's device plugin directory (`/var/lib/kubelet/device-plugins`);
    /// `kubelet.sock` and every plugin socket live here.
    pub device_plugin_dir: PathBuf,
    /// Directory of the PodResources socket (`kubelet.sock` inside it);
    /// `None` serves no PodResources API.
    pub pod_resources_dir: Option<PathBuf>,
    /// The order of a container's resources and of device IDs in requests.
    pub order: Order,
    /// How long `Register` keeps dialling the plugin's socket (kubelet: 10 s).
    pub dial_timeout: Duration,
    /// How long a resource whose plugin went away stays in capacity
    /// (kubelet's `endpointStopGracePeriod`: 5 min).
    pub endpoint_stop_grace_period: Duration,
    /// PodResources rate limit (kubelet: 100 qps, burst 10); `None` for none.
    pub pod_resources_rate_limit: Option<RateLimit>,
    /// Behave as kubelet 1.25 and older: `Register` is answered at once and
    /// the plugin is then called with its socket's path as the HTTP/2
    /// `:authority` (grpc-go dials the path as its target). Only the
    /// outcome of that first call is modelled: a refusal is recorded in
    /// [`crate::Kubelet::failed_plugin_calls`] and the resource gets no
    /// devices.
    pub legacy_socket_authority: bool,
}

/// A token bucket's refill rate and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub qps: f64,
    pub burst: u32,
}

impl RateLimit {
    /// kubelet's PodResources limit.
    pub const KUBELET: RateLimit = RateLimit {
        qps: 100.0,
        burst: 10,
    };
}

impl Options {
    /// kubelet's defaults, with the device plugin directory at `dir` and the
    /// PodResources socket in `dir/pod-resources`, resources in a random order
    /// drawn from a fresh seed (logged when the stand-in starts).
    pub fn new(dir: impl AsRef<Path>) -> Options {
        let dir = dir.as_ref();
        Options {
            device_plugin_dir: dir.to_path_buf(),
            pod_resources_dir: Some(dir.join("pod-resources")),
            order: Order::Random {
                seed: rand::random(),
            },
            dial_timeout: Duration::from_secs(10),
            endpoint_stop_grace_period: Duration::from_secs(5 * 60),
            pod_resources_rate_limit: Some(RateLimit::KUBELET),
            legacy_socket_authority: false,
        }
    }

    pub fn legacy_socket_authority(mut self, legacy: bool) -> Options {
        self.legacy_socket_authority = legacy;
        self
    }

    pub fn pod_resources_dir(mut self, dir: Option<PathBuf>) -> Options {
        self.pod_resources_dir = dir;
        self
    }

    pub fn order(mut self, order: Order) -> Options {
        self.order = order;
        self
    }

    pub fn dial_timeout(mut self, timeout: Duration) -> Options {
        self.dial_timeout = timeout;
        self
    }

    pub fn endpoint_stop_grace_period(mut self, period: Duration) -> Options {
        self.endpoint_stop_grace_period = period;
        self
    }

    pub fn pod_resources_rate_limit(mut self, limit: Option<RateLimit>) -> Options {
        self.pod_resources_rate_limit = limit;
        self
    }
}

/// kubelet walks a container's `limits` (a Go map) in random order, and sends
/// device IDs from Go sets in random order: a plugin must not depend on
/// either. This chooses how the stand-in orders them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// Shuffled by a generator seeded with `seed`: varied, yet reproducible.
    Random { seed: u64 },
    /// Resources and device IDs sorted by name.
    Sorted,
    /// Resources in this order (unlisted ones after, sorted); IDs sorted.
    Resources(Vec<String>),
}

/// The generator behind [`Order`].
#[derive(Debug)]
pub(crate) struct Orderer {
    order: Order,
    rng: ChaCha8Rng,
}

impl Orderer {
    pub(crate) fn new(order: Order) -> Orderer {
        let seed = match order {
            Order::Random { seed } => seed,
            _ => 0,
        };
        Orderer {
            order,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A container's resources in the order to allocate them.
    pub(crate) fn resources(&mut self, mut names: Vec<String>) -> Vec<String> {
        names.sort();
        match &self.order {
            Order::Random { .. } => names.shuffle(&mut self.rng),
            Order::Sorted => {}
            Order::Resources(first) => {
                names.sort_by_key(|n| first.iter().position(|f| f == n).unwrap_or(usize::MAX));
            }
        }
        names
    }

    /// Device IDs in the order to send them.
    pub(crate) fn ids(&mut self, mut ids: Vec<String>) -> Vec<String> {
        ids.sort();
        if let Order::Random { .. } = self.order {
            ids.shuffle(&mut self.rng);
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn given_order_puts_listed_resources_first() {
        let mut o = Orderer::new(Order::Resources(names(&["z/b", "z/a"])));
        assert_eq!(
            o.resources(names(&["z/a", "y/c", "z/b"])),
            names(&["z/b", "z/a", "y/c"])
        );
    }

    #[test]
    fn random_order_is_reproducible_from_its_seed_and_varies() {
        let all = names(&["a/1", "a/2", "a/3", "a/4", "a/5"]);
        let run = |seed| {
            let mut o = Orderer::new(Order::Random { seed });
            (0..20)
                .map(|_| o.resources(all.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        let orders: std::collections::BTreeSet<_> = run(7).into_iter().collect();
        assert!(
            orders.len() > 1,
            "a seeded shuffle should not always give one order"
        );
    }
}
