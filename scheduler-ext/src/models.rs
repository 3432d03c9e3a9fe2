//! Where the extender reads models outside the catalog from: the Hugging
//! Face Hub (`HF_ENDPOINT`, `HF_TOKEN`), and, for clusters that cannot reach
//! it, ConfigMaps that `gpupack.io/model-config` names in the pod's
//! namespace. Both are resolved in the background and cached; a ConfigMap
//! is read again every minute, so an edit reaches the estimate without a
//! restart.

use std::sync::Arc;
use std::time::Duration;

use estimator::ModelSpec;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use model_source::{Fetch, InMemory, Lookup, ModelLookup, Registry, RegistrySettings};

/// Longest a ConfigMap read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a resolved ConfigMap is read again.
pub const CONFIG_MAP_REFRESH: Duration = Duration::from_secs(60);

/// Model configs kept in ConfigMaps, keyed `namespace/name`.
pub struct ConfigMaps {
    client: Client,
}

impl ConfigMaps {
    pub fn new(client: Client) -> ConfigMaps {
        ConfigMaps { client }
    }
}

/// A registry key's namespace and name.
fn namespace_and_name(key: &str) -> Result<(&str, &str), String> {
    match key.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok((ns, name)),
        _ => Err(format!("{key:?} is not namespace/name of a ConfigMap")),
    }
}

impl Fetch for ConfigMaps {
    fn check(&self, key: &str) -> Result<(), String> {
        namespace_and_name(key).map(|_| ())
    }

    fn fetch(&self, key: String) -> BoxFuture<'static, Result<ModelSpec, String>> {
        let client = self.client.clone();
        Box::pin(async move {
            let (ns, name) = namespace_and_name(&key)?;
            let api: Api<ConfigMap> = Api::namespaced(client, ns);
            let read = tokio::time::timeout(READ_TIMEOUT, api.get_opt(name))
                .await
                .map_err(|_| format!("reading ConfigMap {key} took over {READ_TIMEOUT:?}"))?
                .map_err(|e| format!("reading ConfigMap {key}: {e}"))?;
            let cm = read.ok_or_else(|| {
                format!("ConfigMap {key} not found; create it with the model's config.json")
            })?;
            let files = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .chain(
                    cm.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
            let files = InMemory::new(format!("ConfigMap {key}"), files);
            model_source::resolve(&files, &key)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// The Hub for model ids, ConfigMaps where the pod names one.
pub struct ModelSources {
    hub: Arc<dyn ModelLookup>,
    config_maps: Registry,
}

impl ModelSources {
    /// Must be created inside a Tokio runtime: resolutions run on it.
    pub fn new(hub: Arc<dyn ModelLookup>, client: Client) -> ModelSources {
        ModelSources {
            hub,
            config_maps: Registry::with_source(
                Arc::new(ConfigMaps::new(client)),
                RegistrySettings {
                    backoff_max: Duration::from_secs(60),
                    refresh_after: Some(CONFIG_MAP_REFRESH),
                    ..RegistrySettings::default()
                },
            ),
        }
    }
}

impl ModelLookup for ModelSources {
    fn lookup(&self, model: &str) -> Lookup {
        self.hub.lookup(model)
    }

    fn lookup_config_map(&self, namespace: &str, name: &str) -> Lookup {
        self.config_maps.lookup(&format!("{namespace}/{name}"))
    }
}
