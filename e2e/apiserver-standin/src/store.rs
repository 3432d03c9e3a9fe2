//! The object store: every object as JSON, one global resourceVersion
//! counter (like etcd's revision) and an ordered log of changes that watches
//! replay. Pure: no I/O, no clocks beyond the creation timestamp, so it is
//! tested directly.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::patch::Patch;
use crate::resource::{ResourceType, StatusOnCreate, builtin_types};
use crate::selector::{FieldSelector, LabelSelector};

/// How a change reached an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One entry in the change log.
#[derive(Clone, Debug)]
pub struct Change {
    pub rv: u64,
    pub kind: EventType,
    pub resource: ResourceId,
    /// The object after the change (for a delete: its last state, carrying
    /// the delete's resourceVersion, as the real API server sends it).
    pub object: Value,
    /// The object before the change (modify and delete), so that a
    /// filtered watch can tell an object entering or leaving its selector.
    pub previous: Option<Value>,
}

/// Identifies a resource independently of version (`group`, `plural`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId {
    pub group: String,
    pub plural: String,
}

impl ResourceId {
    pub fn of(rt: &ResourceType) -> Self {
        Self {
            group: rt.group.clone(),
            plural: rt.plural.clone(),
        }
    }
}

/// Which part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The main resource: everything but `.status` where the type has a
    /// status subresource.
    Main,
    /// The `/status` subresource: only `.status`.
    Status,
}

/// Label and field selectors of a list or watch.
#[derive(Clone, Debug, Default)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn matches(&self, rt: &ResourceType, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(rt, obj)
    }
}

/// Preconditions a delete may carry (`DeleteOptions.preconditions`).
#[derive(Clone, Debug, Default)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

type Key = (String, String);

/// The store. Callers serialise access (the server keeps it in a mutex).
pub struct Store {
    types: HashMap<(String, String, String), Arc<ResourceType>>,
    objects: HashMap<ResourceId, BTreeMap<Key, Value>>,
    rv: u64,
    log: VecDeque<Change>,
    log_capacity: usize,
    /// Highest resourceVersion no longer in the log; watching from below it is 410.
    compacted: u64,
    rng: ChaCha8Rng,
}

impl Store {
    /// A store serving the built-in types, keeping `log_capacity` changes
    /// for watches to resume from. `seed` drives generated names and uids.
    pub fn new(log_capacity: usize, seed: u64) -> Self {
        let mut s = Self {
            types: HashMap::new(),
            objects: HashMap::new(),
            rv: 0,
            log: VecDeque::new(),
            log_capacity: log_capacity.max(1),
            compacted: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        };
        for rt in builtin_types() {
            s.register(rt);
        }
        s
    }

    pub fn register(&mut self, rt: ResourceType) {
        let key = (rt.group.clone(), rt.version.clone(), rt.plural.clone());
        self.types.insert(key, Arc::new(rt));
    }

    pub fn resource_type(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<Arc<ResourceType>> {
        self.types
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    pub fn resource_types(&self) -> Vec<Arc<ResourceType>> {
        let mut v: Vec<_> = self.types.values().cloned().collect();
        v.sort_by(|a, b| (&a.group, &a.version, &a.plural).cmp(&(&b.group, &b.version, &b.plural)));
        v
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Drops the whole change log, as etcd compaction does: any watch
    /// resuming from an older resourceVersion gets 410 Gone.
    pub fn compact(&mut self) {
        self.log.clear();
        self.compacted = self.rv;
    }

    fn key(rt: &ResourceType, namespace: Option<&str>, name: &str) -> Key {
        let ns = if rt.namespaced {
            namespace.unwrap_or_default()
        } else {
            ""
        };
        (ns.to_string(), name.to_string())
    }

    pub fn get(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.objects
            .get(&ResourceId::of(rt))
            .and_then(|m| m.get(&Self::key(rt, namespace, name)))
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Objects of `rt` (in `namespace` if given) that match, in
    /// namespace/name order, and the resourceVersion they are current at.
    pub fn list(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        sel: &Selectors,
    ) -> (Vec<Value>, u64) {
        let items = self
            .objects
            .get(&ResourceId::of(rt))
            .map(|m| {
                m.iter()
                    .filter(|((ns, _), _)| {
                        !rt.namespaced || namespace.is_none_or(|want| want == ns)
                    })
                    .filter(|(_, obj)| sel.matches(rt, obj))
                    .map(|(_, obj)| obj.clone())
                    .collect()
            })
            .unwrap_or_default();
        (items, self.rv)
    }

    /// How many objects of `rt` are stored (in `namespace` if given and
    /// `rt` is namespaced): the key range etcd reads for a list.
    pub fn count(&self, rt: &ResourceType, namespace: Option<&str>) -> usize {
        self.objects.get(&ResourceId::of(rt)).map_or(0, |m| {
            match namespace.filter(|_| rt.namespaced) {
                Some(ns) => m.keys().filter(|(n, _)| n == ns).count(),
                None => m.len(),
            }
        })
    }

    /// Changes after `rv`, oldest first, and the resourceVersion they reach;
    /// 410 Expired if some of them have been compacted away.
    pub fn changes_since(&self, rv: u64) -> Result<(Vec<Change>, u64), ApiError> {
        if rv < self.compacted {
            return Err(ApiError::expired(format!(
                "too old resource version: {rv} ({})",
                self.compacted
            )));
        }
        let start = self.log.partition_point(|c| c.rv <= rv);
        Ok((self.log.iter().skip(start).cloned().collect(), self.rv))
    }

    /// `POST` a new object.
    pub fn create(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        body: Value,
    ) -> Result<Value, ApiError> {
        let mut obj = check_body(rt, body)?;
        check_namespace(rt, namespace, &obj)?;
        if rt.is_core("pods") {
            self.admit_priority(rt, &mut obj)?;
        }
        let meta = meta_mut(&mut obj);
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let generate = meta
            .get("generateName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = if !name.is_empty() {
            name
        } else if !generate.is_empty() {
            self.generate_name(rt, namespace, &generate)
        } else {
            return Err(ApiError::invalid(
                rt,
                "",
                "metadata.name: Required value: name or generateName is required",
            ));
        };
        let key = Self::key(rt, namespace, &name);
        if self
            .objects
            .get(&ResourceId::of(rt))
            .is_some_and(|m| m.contains_key(&key))
        {
            return Err(ApiError::already_exists(rt, &name));
        }
        let uid = self.new_uid();
        let meta = meta_mut(&mut obj);
        meta.insert("name".into(), json!(name));
        if rt.namespaced {
            meta.insert("namespace".into(), json!(key.0));
        } else {
            meta.remove("namespace");
        }
        meta.insert("uid".into(), json!(uid));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.insert("generation".into(), json!(1));
        meta.remove("deletionTimestamp");
        meta.remove("resourceVersion");
        if let Some(o) = obj.as_object_mut() {
            match rt.status_on_create() {
                StatusOnCreate::Keep => {}
                StatusOnCreate::Drop => {
                    o.remove("status");
                }
                StatusOnCreate::Reset(s) => {
                    o.insert("status".into(), s);
                }
            }
        }
        Ok(self.commit(rt, key, Some(obj), EventType::Added, None))
    }

    /// `PUT` the whole object (or its status), with the resourceVersion in
    /// the body as an optimistic-concurrency precondition.
    pub fn update(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        body: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        let body = check_body(rt, body)?;
        check_namespace(rt, namespace, &body)?;
        let body_name = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let old = self.get(rt, namespace, name)?;
        check_preconditions(
            rt,
            name,
            &old,
            &Preconditions {
                uid: str_at(&body, "/metadata/uid"),
                resource_version: str_at(&body, "/metadata/resourceVersion"),
            },
        )?;
        let new = merge_part(rt, &old, body, part);
        Ok(self.write(rt, namespace, name, old, new, part))
    }

    /// `PATCH`. A resourceVersion in a merge-style body is a precondition.
    /// Server-side apply creates the object when it is missing.
    pub fn patch(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch,
        part: Part,
    ) -> Result<(Value, bool), ApiError> {
        let old = match self.get(rt, namespace, name) {
            Ok(old) => old,
            Err(e) => {
                if let (Patch::Apply(cfg), Part::Main) = (patch, part) {
                    if patch.resource_version_precondition().is_some() {
                        return Err(e);
                    }
                    let mut obj = cfg.clone();
                    let meta = meta_mut(&mut obj);
                    let body_name = meta.get("name").and_then(Value::as_str).unwrap_or(name);
                    if body_name != name {
                        return Err(ApiError::bad_request(format!(
                            "the name of the object ({body_name}) does not match the name on the URL ({name})"
                        )));
                    }
                    meta.insert("name".into(), json!(name));
                    return Ok((self.create(rt, namespace, obj)?, true));
                }
                return Err(e);
            }
        };
        if let Some(rv) = patch.resource_version_precondition() {
            check_preconditions(
                rt,
                name,
                &old,
                &Preconditions {
                    uid: None,
                    resource_version: Some(rv.to_string()),
                },
            )?;
        }
        let mut patched = old.clone();
        patch.apply_to(&mut patched)?;
        let patched = check_body(rt, patched)?;
        check_namespace(rt, namespace, &patched)?;
        if str_at(&patched, "/metadata/name").as_deref() != Some(name) {
            return Err(ApiError::bad_request(
                "a patch may not change metadata.name",
            ));
        }
        if str_at(&patched, "/metadata/uid") != str_at(&old, "/metadata/uid") {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                    str_at(&patched, "/metadata/uid").unwrap_or_default(),
                    str_at(&old, "/metadata/uid").unwrap_or_default()
                ),
            ));
        }
        let new = merge_part(rt, &old, patched, part);
        Ok((self.write(rt, namespace, name, old, new, part), false))
    }

    /// Upserts an object without preconditions (in-process test setup).
    /// The whole object is taken as given, status included.
    pub fn put(&mut self, rt: &ResourceType, obj: Value) -> Result<Value, ApiError> {
        let obj = check_body(rt, obj)?;
        let namespace = str_at(&obj, "/metadata/namespace");
        let name = str_at(&obj, "/metadata/name").unwrap_or_default();
        if rt.namespaced && namespace.is_none() {
            return Err(ApiError::invalid(
                rt,
                &name,
                "metadata.namespace: Required value",
            ));
        }
        match self.get(rt, namespace.as_deref(), &name) {
            Err(_) => {
                let status = obj.get("status").cloned();
                let created = self.create(rt, namespace.as_deref(), obj)?;
                match status {
                    Some(status) if created.get("status") != Some(&status) => {
                        let mut with_status = created.clone();
                        with_status["status"] = status;
                        let key = Self::key(rt, namespace.as_deref(), &name);
                        Ok(self.commit(
                            rt,
                            key,
                            Some(with_status),
                            EventType::Modified,
                            Some(created),
                        ))
                    }
                    _ => Ok(created),
                }
            }
            Ok(old) => {
                let mut new = obj;
                keep_identity(&old, &mut new);
                Ok(self.write(rt, namespace.as_deref(), &name, old, new, Part::Main))
            }
        }
    }

    /// `DELETE`: immediate (no graceful deletion), returns the last state.
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        pre: &Preconditions,
    ) -> Result<Value, ApiError> {
        let old = self.get(rt, namespace, name)?;
        check_preconditions(rt, name, &old, pre)?;
        let key = Self::key(rt, namespace, name);
        Ok(self.commit(rt, key, None, EventType::Deleted, Some(old)))
    }

    /// The Priority admission plugin (`plugin/pkg/admission/priority`): a
    /// pod's `priorityClassName` resolves to `spec.priority` and
    /// `spec.preemptionPolicy` from its PriorityClass (priority 0 and
    /// `PreemptLowerPriority` without one; a `globalDefault` class is not
    /// modelled). A pod that sets either itself to something else is
    /// refused, with the plugin's words.
    fn admit_priority(&self, rt: &ResourceType, pod: &mut Value) -> Result<(), ApiError> {
        let name = str_at(pod, "/metadata/name").unwrap_or_default();
        let (value, policy) = match str_at(pod, "/spec/priorityClassName").filter(|c| !c.is_empty())
        {
            None => (0, "PreemptLowerPriority".to_string()),
            Some(class) => {
                let classes = self
                    .resource_type("scheduling.k8s.io", "v1", "priorityclasses")
                    .ok_or_else(ApiError::no_such_resource)?;
                let pc = self.get(&classes, None, &class).map_err(|_| {
                    ApiError::forbidden(
                        rt,
                        &name,
                        &format!("no PriorityClass with name {class} was found"),
                    )
                })?;
                (
                    pc.pointer("/value").and_then(Value::as_i64).unwrap_or(0),
                    str_at(&pc, "/preemptionPolicy")
                        .unwrap_or_else(|| "PreemptLowerPriority".to_string()),
                )
            }
        };
        if let Some(given) = pod.pointer("/spec/priority").and_then(Value::as_i64)
            && given != value
        {
            return Err(ApiError::forbidden(
                rt,
                &name,
                &format!(
                    "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
                ),
            ));
        }
        if let Some(given) = str_at(pod, "/spec/preemptionPolicy")
            && given != policy
        {
            return Err(ApiError::forbidden(
                rt,
                &name,
                &format!(
                    "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
                ),
            ));
        }
        if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("priority".into(), json!(value));
            spec.insert("preemptionPolicy".into(), json!(policy));
        }
        Ok(())
    }

    /// `POST pods/{name}/eviction`, as the API server's eviction REST does
    /// it: a pod selected by a PodDisruptionBudget that allows no more
    /// disruptions is refused with 429; otherwise the budget's
    /// `status.disruptionsAllowed` drops by one and the pod is deleted
    /// (immediately: this server has no graceful deletion).
    pub fn evict(&mut self, namespace: &str, name: &str, eviction: &Value) -> Result<(), ApiError> {
        let pods = self
            .resource_type("", "v1", "pods")
            .ok_or_else(ApiError::no_such_resource)?;
        let url_name = str_at(eviction, "/metadata/name").unwrap_or_default();
        if url_name != name {
            return Err(ApiError::bad_request(
                "name in URL does not match name in Eviction object",
            ));
        }
        let pod = self.get(&pods, Some(namespace), name)?;
        let labels: std::collections::BTreeMap<String, String> = pod
            .pointer("/metadata/labels")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let mut budgets = Vec::new();
        if let Some(pdbs) = self.resource_type("policy", "v1", "poddisruptionbudgets") {
            let (all, _) = self.list(&pdbs, Some(namespace), &Selectors::default());
            for pdb in all {
                // A budget without a selector selects nothing (policy/v1).
                let Some(sel) = pdb.pointer("/spec/selector").cloned().and_then(|v| {
                    serde_json::from_value::<
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
                    >(v)
                    .ok()
                }) else {
                    continue;
                };
                let Ok(sel) = kube::core::Selector::try_from(sel) else {
                    continue;
                };
                if kube::core::SelectorExt::matches(&sel, &labels) {
                    budgets.push(pdb);
                }
            }
            if budgets.len() > 1 {
                return Err(ApiError::server(
                    500,
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ));
            }
            if let Some(pdb) = budgets.pop() {
                let allowed = pdb
                    .pointer("/status/disruptionsAllowed")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if allowed <= 0 {
                    return Err(ApiError::server(
                        429,
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                    ));
                }
                let pdb_name = str_at(&pdb, "/metadata/name").unwrap_or_default();
                let mut new = pdb.clone();
                new["status"]["disruptionsAllowed"] = json!(allowed - 1);
                self.write(&pdbs, Some(namespace), &pdb_name, pdb, new, Part::Status);
            }
        }
        let uid = str_at(eviction, "/deleteOptions/preconditions/uid");
        self.delete(
            &pods,
            Some(namespace),
            name,
            &Preconditions {
                uid,
                resource_version: None,
            },
        )?;
        Ok(())
    }

    /// `DELETE` on a collection.
    pub fn delete_collection(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        sel: &Selectors,
    ) -> Vec<Value> {
        let (victims, _) = self.list(rt, namespace, sel);
        victims
            .into_iter()
            .filter_map(|v| {
                let ns = str_at(&v, "/metadata/namespace");
                let name = str_at(&v, "/metadata/name")?;
                self.delete(rt, ns.as_deref(), &name, &Preconditions::default())
                    .ok()
            })
            .collect()
    }

    /// `POST pods/{name}/binding`, with the real `BindingREST` rules: the
    /// URL name must match, uid/resourceVersion are preconditions, a pod
    /// already on a node is a 409, and the Binding's annotations land on
    /// the pod in the same write as `spec.nodeName`.
    pub fn bind(
        &mut self,
        namespace: &str,
        url_name: &str,
        binding: &Value,
    ) -> Result<(), ApiError> {
        let pods = self
            .resource_type("", "v1", "pods")
            .ok_or_else(ApiError::no_such_resource)?;
        let name = binding
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if name != url_name {
            return Err(ApiError::bad_request(
                "name in URL does not match name in Binding object",
            ));
        }
        if let Some(ns) = str_at(binding, "/metadata/namespace")
            && ns != namespace
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let binding_type = ResourceType::namespaced("", "v1", "bindings", "Binding");
        let target = str_at(binding, "/target/name").unwrap_or_default();
        if target.is_empty() {
            return Err(ApiError::invalid(
                &binding_type,
                name,
                "target.name: Required value",
            ));
        }
        if let Some(kind) = str_at(binding, "/target/kind")
            && kind != "Node"
        {
            return Err(ApiError::invalid(
                &binding_type,
                name,
                &format!("target.kind: Unsupported value: {kind:?}: supported values: \"Node\""),
            ));
        }
        let old = self.get(&pods, Some(namespace), name)?;
        check_preconditions(
            &pods,
            name,
            &old,
            &Preconditions {
                uid: str_at(binding, "/metadata/uid"),
                resource_version: str_at(binding, "/metadata/resourceVersion"),
            },
        )?;
        let pods_binding = ResourceType::namespaced("", "v1", "pods/binding", "Binding");
        if old
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null())
        {
            return Err(ApiError::conflict(
                &pods_binding,
                name,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(node) = str_at(&old, "/spec/nodeName").filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict(
                &pods_binding,
                name,
                &format!("pod {name} is already assigned to node {node:?}"),
            ));
        }
        let mut new = old.clone();
        new["spec"]["nodeName"] = json!(target);
        if let Some(ann) = binding
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
        {
            let meta = meta_mut(&mut new);
            let pod_ann = meta.entry("annotations").or_insert_with(|| json!({}));
            if !pod_ann.is_object() {
                *pod_ann = json!({});
            }
            if let Some(pod_ann) = pod_ann.as_object_mut() {
                for (k, v) in ann {
                    pod_ann.insert(k.clone(), v.clone());
                }
            }
        }
        set_condition(&mut new, "PodScheduled", "True");
        let key = Self::key(&pods, Some(namespace), name);
        self.commit(&pods, key, Some(new), EventType::Modified, Some(old));
        Ok(())
    }

    /// Commits `new` over `old` unless nothing changed: like the real API
    /// server, a no-op write keeps the resourceVersion and emits no event.
    fn write(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        old: Value,
        mut new: Value,
        part: Part,
    ) -> Value {
        keep_identity(&old, &mut new);
        let spec_changed = without_meta_status(&old) != without_meta_status(&new);
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let generation = if spec_changed && part == Part::Main {
            generation + 1
        } else {
            generation
        };
        meta_mut(&mut new).insert("generation".into(), json!(generation));
        if new == old {
            return old;
        }
        let key = Self::key(rt, namespace, name);
        self.commit(rt, key, Some(new), EventType::Modified, Some(old))
    }

    fn commit(
        &mut self,
        rt: &ResourceType,
        key: Key,
        new: Option<Value>,
        kind: EventType,
        previous: Option<Value>,
    ) -> Value {
        self.rv += 1;
        let rv = self.rv.to_string();
        let id = ResourceId::of(rt);
        let objects = self.objects.entry(id.clone()).or_default();
        let object = match new {
            Some(mut obj) => {
                meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv));
                objects.insert(key, obj.clone());
                obj
            }
            None => {
                objects.remove(&key);
                let mut last = previous.clone().unwrap_or(Value::Null);
                meta_mut(&mut last).insert("resourceVersion".into(), json!(rv));
                last
            }
        };
        self.log.push_back(Change {
            rv: self.rv,
            kind,
            resource: id,
            object: object.clone(),
            previous,
        });
        while self.log.len() > self.log_capacity {
            if let Some(dropped) = self.log.pop_front() {
                self.compacted = dropped.rv;
            }
        }
        object
    }

    fn generate_name(
        &mut self,
        rt: &ResourceType,
        namespace: Option<&str>,
        prefix: &str,
    ) -> String {
        // The real API server's alphabet: no vowels, no look-alike digits.
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        loop {
            let suffix: String = (0..5)
                .map(|_| char::from(ALPHABET[self.rng.random_range(0..ALPHABET.len())]))
                .collect();
            let name = format!("{prefix}{suffix}");
            let taken = self
                .objects
                .get(&ResourceId::of(rt))
                .is_some_and(|m| m.contains_key(&Self::key(rt, namespace, &name)));
            if !taken {
                return name;
            }
        }
    }

    fn new_uid(&mut self) -> String {
        let b: [u8; 16] = self.rng.random();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_be_bytes([b[4], b[5]]),
            u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
            (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
            u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
        )
    }
}

fn now() -> String {
    let t =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub(crate) fn str_at(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// `metadata` as a mutable map, created where missing.
fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let Some(o) = obj.as_object_mut() else {
        unreachable!("made an object above")
    };
    let meta = o.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    match meta.as_object_mut() {
        Some(m) => m,
        None => unreachable!("made an object above"),
    }
}

/// The body must be an object of this type; apiVersion and kind are filled
/// in where missing.
fn check_body(rt: &ResourceType, mut body: Value) -> Result<Value, ApiError> {
    let Some(o) = body.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let api_version = rt.api_version();
    match o.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            o.insert("apiVersion".into(), json!(api_version));
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match o.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            o.insert("kind".into(), json!(rt.kind));
        }
        Some(k) if k == rt.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
    }
    if let Some(m) = o.get("metadata")
        && !m.is_object()
    {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    crate::quantities::canonicalize(rt, &mut body)?;
    Ok(body)
}

fn check_namespace(rt: &ResourceType, url_ns: Option<&str>, obj: &Value) -> Result<(), ApiError> {
    if !rt.namespaced {
        return Ok(());
    }
    let body_ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match url_ns {
        Some(ns) if !body_ns.is_empty() && body_ns != ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        None => Err(ApiError::bad_request(format!(
            "{} must be written in a namespace",
            rt.qualified_plural()
        ))),
        _ => Ok(()),
    }
}

fn check_preconditions(
    rt: &ResourceType,
    name: &str,
    current: &Value,
    pre: &Preconditions,
) -> Result<(), ApiError> {
    if let Some(uid) = pre.uid.as_deref().filter(|u| !u.is_empty()) {
        let actual = str_at(current, "/metadata/uid").unwrap_or_default();
        if uid != actual {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
    }
    if let Some(rv) = pre.resource_version.as_deref().filter(|r| !r.is_empty()) {
        let actual = str_at(current, "/metadata/resourceVersion").unwrap_or_default();
        if rv != actual {
            return Err(ApiError::stale(rt, name));
        }
    }
    Ok(())
}

/// The object a write to `part` produces: a main write keeps the old
/// status where the type has a status subresource; a status write keeps
/// everything but the status.
fn merge_part(rt: &ResourceType, old: &Value, body: Value, part: Part) -> Value {
    match part {
        Part::Main if rt.status_subresource => {
            let mut new = body;
            if let Some(o) = new.as_object_mut() {
                match old.get("status") {
                    Some(s) => {
                        o.insert("status".into(), s.clone());
                    }
                    None => {
                        o.remove("status");
                    }
                }
            }
            new
        }
        Part::Main => body,
        Part::Status => {
            let mut new = old.clone();
            if let Some(o) = new.as_object_mut() {
                match body.get("status") {
                    Some(s) => {
                        o.insert("status".into(), s.clone());
                    }
                    None => {
                        o.remove("status");
                    }
                }
            }
            new
        }
    }
}

/// Fields the server owns are carried over from the stored object.
fn keep_identity(old: &Value, new: &mut Value) {
    let meta = meta_mut(new);
    for field in ["uid", "creationTimestamp", "resourceVersion", "generation"] {
        match old.pointer(&format!("/metadata/{field}")) {
            Some(v) => {
                meta.insert(field.into(), v.clone());
            }
            None => {
                meta.remove(field);
            }
        }
    }
}

fn without_meta_status(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
    }
    v
}

fn set_condition(pod: &mut Value, kind: &str, status: &str) {
    let Some(pod) = pod.as_object_mut() else {
        return;
    };
    let st = pod.entry("status").or_insert_with(|| json!({}));
    if !st.is_object() {
        *st = json!({});
    }
    let conds = &mut st["conditions"];
    if !conds.is_array() {
        *conds = json!([]);
    }
    let Some(conds) = conds.as_array_mut() else {
        return;
    };
    let fresh =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now()});
    match conds
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
    {
        Some(c) if c.get("status").and_then(Value::as_str) == Some(status) => {}
        Some(c) => *c = fresh,
        None => conds.push(fresh),
    }
}

#[cfg(test)]
mod tests;
