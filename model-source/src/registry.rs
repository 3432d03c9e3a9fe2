//! Models resolved in the background for callers that must never wait on
//! the network (the extender's filter): a lookup answers at once with the
//! spec, "pending", or the last failure and when it is retried.
//!
//! Bounded: at most `capacity` models are remembered (the least recently
//! used resolved or failed one makes room) and at most `parallel` are
//! fetched at once. A failure is never cached as a result: it is retried
//! with exponential backoff on the next lookup after its delay. With
//! `refresh_after`, a resolved model is fetched again in the background
//! once it is that old, the old answer standing until the new one is in
//! (for sources users edit in place, such as ConfigMaps).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use estimator::ModelSpec;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::hub::Hub;

/// What a lookup finds.
#[derive(Debug, Clone)]
pub enum Lookup {
    Ready(Arc<ModelSpec>),
    /// Being fetched; `last_error` is the previous attempt's failure.
    Pending {
        last_error: Option<String>,
    },
    Failed {
        error: String,
        retry_in: Duration,
    },
}

/// Answers lookups of models by name without waiting.
pub trait ModelLookup: Send + Sync {
    fn lookup(&self, model: &str) -> Lookup;

    /// The model whose files are in ConfigMap `name` of `namespace` (an
    /// air-gapped cluster's alternative to the Hub).
    fn lookup_config_map(&self, namespace: &str, name: &str) -> Lookup {
        Lookup::Failed {
            error: format!(
                "model configs are not read from ConfigMaps here (ConfigMap {namespace}/{name})"
            ),
            retry_in: Duration::MAX,
        }
    }
}

/// Where a [`Registry`] resolves a key from.
pub trait Fetch: Send + Sync + 'static {
    /// Refuses a key no fetch could succeed for, before any fetch.
    fn check(&self, key: &str) -> Result<(), String>;

    /// Resolves `key`.
    fn fetch(&self, key: String) -> futures::future::BoxFuture<'static, Result<ModelSpec, String>>;
}

/// Limits of a [`Registry`].
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub capacity: usize,
    pub parallel: usize,
    /// First retry delay after a failure; doubles per failure.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Resolved models older than this are fetched again in the background.
    pub refresh_after: Option<Duration>,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            capacity: 512,
            parallel: 4,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(600),
            refresh_after: None,
        }
    }
}

#[derive(Debug)]
enum State {
    Pending {
        last_error: Option<String>,
    },
    /// `refreshing`: fetched again in the background, this answer standing.
    Ready {
        spec: Arc<ModelSpec>,
        at: Instant,
        refreshing: bool,
    },
    Failed {
        error: String,
        retry_at: Instant,
    },
}

#[derive(Debug)]
struct Entry {
    state: State,
    failures: u32,
    last_used: Instant,
}

struct Inner {
    entries: Mutex<HashMap<String, Entry>>,
    source: Arc<dyn Fetch>,
    settings: RegistrySettings,
    permits: Semaphore,
    runtime: Handle,
}

/// Models from one source (a Hub, ConfigMaps), resolved in the background
/// and kept in memory.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Registry {
    /// Models from `hub`. Must be created inside a Tokio runtime:
    /// resolutions run on it.
    pub fn new(hub: Hub, settings: RegistrySettings) -> Registry {
        Registry::with_source(Arc::new(hub), settings)
    }

    /// Models from `source`, keyed as it reads them.
    pub fn with_source(source: Arc<dyn Fetch>, settings: RegistrySettings) -> Registry {
        Registry {
            inner: Arc::new(Inner {
                entries: Mutex::new(HashMap::new()),
                permits: Semaphore::new(settings.parallel.max(1)),
                source,
                settings,
                runtime: Handle::current(),
            }),
        }
    }

    /// Models remembered (any state).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves `model` now, through the cache: what a one-shot caller
    /// (the command line, a benchmark) uses.
    pub async fn resolve(&self, model: &str) -> Result<Arc<ModelSpec>, String> {
        loop {
            match self.lookup(model) {
                Lookup::Ready(spec) => return Ok(spec),
                Lookup::Failed { error, .. } => return Err(error),
                Lookup::Pending { .. } => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    }

    /// Makes room for one more entry: drops the least recently used entry
    /// that is not being fetched. False when every entry is in flight.
    fn make_room(entries: &mut HashMap<String, Entry>, capacity: usize) -> bool {
        while entries.len() >= capacity.max(1) {
            let victim = entries
                .iter()
                .filter(|(_, e)| {
                    !matches!(
                        e.state,
                        State::Pending { .. }
                            | State::Ready {
                                refreshing: true,
                                ..
                            }
                    )
                })
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => {
                    entries.remove(&k);
                }
                None => return false,
            }
        }
        true
    }

    fn spawn(&self, model: String) {
        let this = self.clone();
        self.inner.runtime.spawn(async move {
            let result = match this.inner.permits.acquire().await {
                Ok(_permit) => this.inner.source.fetch(model.clone()).await,
                Err(_) => Err("the model registry is shutting down".to_string()),
            };
            this.settle(&model, result);
        });
    }

    fn settle(&self, model: &str, result: Result<ModelSpec, String>) {
        let settings = &self.inner.settings;
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(model) else {
            return;
        };
        match result {
            Ok(spec) => {
                tracing::info!(model, "model resolved");
                entry.state = State::Ready {
                    spec: Arc::new(spec),
                    at: Instant::now(),
                    refreshing: false,
                };
                entry.failures = 0;
            }
            // A failed refresh keeps the answer it would have replaced, and
            // tries again after the refresh interval.
            Err(error) if matches!(entry.state, State::Ready { .. }) => {
                tracing::warn!(model, %error, "cannot refresh model; keeping the last answer");
                if let State::Ready { at, refreshing, .. } = &mut entry.state {
                    *at = Instant::now();
                    *refreshing = false;
                }
            }
            Err(error) => {
                entry.failures = entry.failures.saturating_add(1);
                let delay = settings
                    .backoff_base
                    .saturating_mul(1u32 << entry.failures.saturating_sub(1).min(16))
                    .min(settings.backoff_max);
                tracing::warn!(model, %error, retry_in = ?delay, "cannot resolve model");
                entry.state = State::Failed {
                    error,
                    retry_at: Instant::now() + delay,
                };
            }
        }
    }
}

impl ModelLookup for Registry {
    fn lookup(&self, model: &str) -> Lookup {
        let now = Instant::now();
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(model) {
            entry.last_used = now;
            match &mut entry.state {
                State::Ready {
                    spec,
                    at,
                    refreshing,
                } => {
                    let spec = spec.clone();
                    let due = self
                        .inner
                        .settings
                        .refresh_after
                        .is_some_and(|after| now.duration_since(*at) >= after);
                    if due && !*refreshing {
                        *refreshing = true;
                        drop(entries);
                        tracing::debug!(model, "refreshing model");
                        self.spawn(model.to_string());
                    }
                    return Lookup::Ready(spec);
                }
                State::Pending { last_error } => {
                    return Lookup::Pending {
                        last_error: last_error.clone(),
                    };
                }
                State::Failed { error, retry_at } if *retry_at > now => {
                    return Lookup::Failed {
                        error: error.clone(),
                        retry_in: *retry_at - now,
                    };
                }
                State::Failed { error, .. } => {
                    let last_error = Some(error.clone());
                    entry.state = State::Pending {
                        last_error: last_error.clone(),
                    };
                    drop(entries);
                    self.spawn(model.to_string());
                    return Lookup::Pending { last_error };
                }
            }
        }
        // A bad name is answered at once and never remembered.
        if let Err(error) = self.inner.source.check(model) {
            return Lookup::Failed {
                error,
                retry_in: self.inner.settings.backoff_max,
            };
        }
        if !Self::make_room(&mut entries, self.inner.settings.capacity) {
            return Lookup::Failed {
                error: format!(
                    "{} models are being fetched already; retrying",
                    entries.len()
                ),
                retry_in: self.inner.settings.backoff_base,
            };
        }
        entries.insert(
            model.to_string(),
            Entry {
                state: State::Pending { last_error: None },
                failures: 0,
                last_used: now,
            },
        );
        drop(entries);
        tracing::info!(model, "fetching model config");
        self.spawn(model.to_string());
        Lookup::Pending { last_error: None }
    }
}

/// Resolves nothing: every model outside the catalog is unknown. For
/// callers that work offline (`HF_HUB_OFFLINE`) and for tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Offline;

impl ModelLookup for Offline {
    fn lookup(&self, model: &str) -> Lookup {
        Lookup::Failed {
            error: match estimator::lookup(model) {
                Ok(_) => format!("{model} is not resolved: the Hub is not consulted (offline)"),
                Err(e) => e.to_string(),
            },
            retry_in: Duration::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// Serves the catalog's Llama 3.1 8B under any key, its name carrying
    /// the fetch count; fails the fetches `failing` says.
    struct Counting {
        fetches: Arc<AtomicU64>,
        failing: fn(u64) -> bool,
    }

    impl Fetch for Counting {
        fn check(&self, key: &str) -> Result<(), String> {
            if key.is_empty() {
                Err("empty".into())
            } else {
                Ok(())
            }
        }

        fn fetch(
            &self,
            key: String,
        ) -> futures::future::BoxFuture<'static, Result<ModelSpec, String>> {
            let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            let fail = (self.failing)(n);
            Box::pin(async move {
                if fail {
                    return Err(format!("fetch {n} of {key} failed"));
                }
                let mut spec = estimator::lookup("Llama-3.1-8B").unwrap().spec();
                spec.name = format!("{key}#{n}");
                Ok(spec)
            })
        }
    }

    /// Polls until `done`, for at most five seconds (a loaded machine may
    /// run the background fetch late, never wrongly).
    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn ready(r: &Registry, key: &str) -> Arc<ModelSpec> {
        let mut found = None;
        eventually(&format!("{key} resolved"), || {
            if let Lookup::Ready(spec) = r.lookup(key) {
                found = Some(spec);
            }
            found.is_some()
        })
        .await;
        found.unwrap()
    }

    #[tokio::test]
    async fn a_resolved_model_is_refreshed_in_the_background_keeping_its_answer() {
        let fetches = Arc::new(AtomicU64::new(0));
        let r = Registry::with_source(
            Arc::new(Counting {
                fetches: fetches.clone(),
                // The second fetch (the first refresh) fails.
                failing: |n| n == 2,
            }),
            RegistrySettings {
                refresh_after: Some(Duration::from_millis(300)),
                ..RegistrySettings::default()
            },
        );
        assert!(matches!(r.lookup("ns/cm"), Lookup::Pending { .. }));
        assert_eq!(ready(&r, "ns/cm").await.name, "ns/cm#1");
        // Not yet due: no fetch.
        assert_eq!(ready(&r, "ns/cm").await.name, "ns/cm#1");
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(350)).await;
        // Due: answered at once with the old spec while it is fetched again;
        // the failed refresh keeps it.
        assert_eq!(ready(&r, "ns/cm").await.name, "ns/cm#1");
        eventually("the refresh fetched", || {
            fetches.load(Ordering::SeqCst) == 2
        })
        .await;
        assert_eq!(ready(&r, "ns/cm").await.name, "ns/cm#1");
        // The next refresh succeeds and replaces it.
        eventually(
            "the refreshed spec answered",
            || matches!(r.lookup("ns/cm"), Lookup::Ready(spec) if spec.name == "ns/cm#3"),
        )
        .await;
        // A key the source refuses is answered at once and not remembered.
        assert!(matches!(r.lookup(""), Lookup::Failed { .. }));
        assert_eq!(r.len(), 1);
    }

    #[tokio::test]
    async fn without_refresh_a_resolved_model_is_fetched_once() {
        let fetches = Arc::new(AtomicU64::new(0));
        let r = Registry::with_source(
            Arc::new(Counting {
                fetches: fetches.clone(),
                failing: |_| false,
            }),
            RegistrySettings::default(),
        );
        ready(&r, "m").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..10 {
            ready(&r, "m").await;
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }
}
