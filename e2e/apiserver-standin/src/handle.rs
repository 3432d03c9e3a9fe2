//! Shared, in-process access to the store: what the HTTP layer uses, and
//! what tests use to set up and inspect state without going through HTTP.
//! Every write here is a real write: it bumps the resourceVersion and
//! reaches watches exactly like one made over the API.

use std::sync::{Arc, Mutex, MutexGuard};

use kube::core::Resource;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::resource::ResourceType;
use crate::store::{Preconditions, Selectors, Store};

/// Errors of the typed in-process accessors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("{kind} {name:?} does not fit its Rust type: {source}")]
    Decode {
        kind: String,
        name: String,
        source: serde_json::Error,
    },
    #[error("cannot serialize {kind}: {source}")]
    Encode {
        kind: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("resource {0} is not served; register it first")]
    NotServed(String),
}

/// A handle on the store; cheap to clone.
#[derive(Clone)]
pub struct StoreHandle {
    store: Arc<Mutex<Store>>,
    changed: Arc<watch::Sender<u64>>,
}

impl StoreHandle {
    pub(crate) fn new(store: Store) -> Self {
        let rv = store.resource_version();
        Self {
            store: Arc::new(Mutex::new(store)),
            changed: Arc::new(watch::Sender::new(rv)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads under the lock.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        f(&self.lock())
    }

    /// Writes under the lock, then wakes the watches.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let (r, rv) = {
            let mut s = self.lock();
            let r = f(&mut s);
            (r, s.resource_version())
        };
        self.changed.send_if_modified(|cur| {
            let moved = *cur != rv;
            *cur = rv;
            moved
        });
        r
    }

    /// Wakes on every change of the resourceVersion.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Serves a further resource type (e.g. a CRD) from now on.
    pub fn register(&self, rt: ResourceType) {
        self.write(|s| s.register(rt));
    }

    pub fn resource_type(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.read(|s| {
            s.resource_type(group, version, plural)
                .map(|rt| (*rt).clone())
        })
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.read(Store::resource_version)
    }

    /// Forgets the change history: watches resuming from before now get 410.
    pub fn compact(&self) {
        self.write(Store::compact);
    }

    pub fn get(&self, rt: &ResourceType, namespace: Option<&str>, name: &str) -> Option<Value> {
        self.read(|s| s.get(rt, namespace, name).ok())
    }

    pub fn list(&self, rt: &ResourceType, namespace: Option<&str>) -> Vec<Value> {
        self.read(|s| s.list(rt, namespace, &Selectors::default()).0)
    }

    /// Creates as `POST` would (uid, timestamps, generateName).
    pub fn create(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        obj: Value,
    ) -> Result<Value, ApiError> {
        self.write(|s| s.create(rt, namespace, obj))
    }

    /// Creates or replaces, status included, with no preconditions.
    pub fn put(&self, rt: &ResourceType, obj: Value) -> Result<Value, ApiError> {
        self.write(|s| s.put(rt, obj))
    }

    pub fn delete(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.write(|s| s.delete(rt, namespace, name, &Preconditions::default()))
    }

    fn type_of<K: Resource<DynamicType = ()>>(&self) -> Result<ResourceType, StoreError> {
        self.resource_type(&K::group(&()), &K::version(&()), &K::plural(&()))
            .ok_or_else(|| {
                StoreError::NotServed(format!("{}/{}", K::api_version(&()), K::plural(&())))
            })
    }

    /// Typed get (`Pod`, `Node`, a CRD type, ...).
    pub fn get_as<K>(&self, namespace: Option<&str>, name: &str) -> Result<Option<K>, StoreError>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let rt = self.type_of::<K>()?;
        self.get(&rt, namespace, name)
            .map(|v| decode(&rt, v))
            .transpose()
    }

    /// Typed list, in namespace/name order.
    pub fn list_as<K>(&self, namespace: Option<&str>) -> Result<Vec<K>, StoreError>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let rt = self.type_of::<K>()?;
        self.list(&rt, namespace)
            .into_iter()
            .map(|v| decode(&rt, v))
            .collect()
    }

    /// Typed create-or-replace; returns the stored object.
    pub fn put_as<K>(&self, obj: &K) -> Result<K, StoreError>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let rt = self.type_of::<K>()?;
        let v = serde_json::to_value(obj).map_err(|source| StoreError::Encode {
            kind: rt.kind.clone(),
            source,
        })?;
        let stored = self.put(&rt, v)?;
        decode(&rt, stored)
    }

    pub fn delete_as<K>(&self, namespace: Option<&str>, name: &str) -> Result<K, StoreError>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let rt = self.type_of::<K>()?;
        let v = self.delete(&rt, namespace, name)?;
        decode(&rt, v)
    }
}

fn decode<K: DeserializeOwned>(rt: &ResourceType, v: Value) -> Result<K, StoreError> {
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    serde_json::from_value(v).map_err(|source| StoreError::Decode {
        kind: rt.kind.clone(),
        name,
        source,
    })
}
