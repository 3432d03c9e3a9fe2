//! A pod's GPU needs, read from its resource requests or its model
//! annotations, and turned into a placement demand.
//!
//! Rules (each broken one is a [`DemandError`] that names the container and
//! the resource or annotation):
//! - `gpupack.io/gpu: N` asks for N distinct GPUs. Without a memory request
//!   they are whole GPUs, held exclusively: a container that states no memory
//!   bound cannot safely share a GPU.
//! - `gpupack.io/gpu-memory: M` is in memory units, **in total** over the
//!   container's GPUs (that is what kubelet counts), split evenly: M must be a
//!   multiple of N. Alone it means one GPU.
//! - `gpupack.io/mig-<profile>: K` asks for K MIG instances of that profile.
//! - With model annotations (`gpupack.io/model`, ...), the estimator sizes
//!   the server container: `tensor-parallel-size` GPUs, each with the
//!   estimate per rank rounded up to whole memory units (never less than an
//!   explicit `gpu-memory` request).
//!
//! A model outside the catalog (or named as a quantized re-upload) is sized
//! from its own files through a [`ModelLookup`] that never waits (from the
//! Hub, or from the ConfigMap `gpupack.io/model-config` names): until the
//! lookup has them the pod gets a retriable [`DemandError::ModelPending`],
//! and a failure to read them a [`DemandError::ModelUnavailable`] naming
//! the cause and what to set.
//!
//! Memory units are a node's setting (`memoryUnitBytes` in its inventory),
//! so [`PodNeeds`] keeps units and [`PodNeeds::demand`] resolves them per
//! unit size.

use std::collections::BTreeMap;

use std::sync::Arc;

use estimator::ModelSpec;
use k8s_openapi::api::core::v1::{Container, Pod};
use model_source::{Lookup, ModelLookup, Offline};
use placement::{ContainerDemand, GpuNeed, MemoryNeed, PodDemand};
use proto::annotations::ModelAnnotations;
use proto::assignment::{EngineSizing, PodAssignment};
use proto::clip::clip;
use proto::inventory::NodeInventory;
use proto::resources::{GPU, GPU_MEMORY, Resource};

/// Why a pod's GPU request cannot be read. Reported to kube-scheduler as
/// the reason on every node, and as an Event on the pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemandError {
    #[error("container {container}: {resource}: {problem}")]
    Resource {
        container: String,
        resource: String,
        problem: String,
    },
    #[error("container {container}: {resource}: {source}")]
    Quantity {
        container: String,
        resource: String,
        #[source]
        source: proto::quantity::QuantityError,
    },
    #[error("{0}")]
    Annotations(#[from] proto::FormatError),
    #[error("annotation {annotation}: {problem}")]
    Annotation {
        annotation: &'static str,
        problem: String,
    },
    #[error("cannot size model {model:?}: {problem}")]
    Estimate { model: String, problem: String },
    #[error("{what} {name:?} is {len} bytes long; at most {MAX_NAME_LABEL}")]
    NameTooLong {
        what: &'static str,
        name: String,
        len: usize,
    },
    #[error("the pod has {count} containers; gpupack reads at most {MAX_CONTAINERS}")]
    TooManyContainers { count: usize },
    /// Retriable: the model's files are being fetched in the background.
    #[error("sizing model {model}: fetching its config from {from}; retry{}",
        last_error.as_ref().map(|e| format!(" (the last attempt failed: {e})")).unwrap_or_default())]
    ModelPending {
        model: String,
        /// The Hub, or the ConfigMap.
        from: String,
        last_error: Option<String>,
    },
    /// Retriable: the model's files could not be read; tried again after
    /// `retry_in_seconds`.
    #[error("cannot size model {model}: {reason}{hint}; retrying in {retry_in_seconds}s")]
    ModelUnavailable {
        model: String,
        reason: String,
        /// What else would size it (e.g. the quantization annotation).
        hint: String,
        retry_in_seconds: u64,
    },
}

impl DemandError {
    /// Whether a later attempt may succeed without the pod changing.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            DemandError::ModelPending { .. } | DemandError::ModelUnavailable { .. }
        )
    }
}

/// Most containers (init and regular) read from one pod: far more than any
/// real pod has, and a bound on the work one request can ask for.
pub const MAX_CONTAINERS: usize = 1024;

/// How much memory each of a container's GPUs needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryPerGpu {
    /// Whole GPUs, exclusively.
    Whole,
    /// This many memory units on each GPU.
    Units(u64),
    /// The estimator's bytes per GPU, rounded up to whole units of the
    /// node, and at least `min_units` (an explicit request).
    Estimated { bytes: u64, min_units: u64 },
}

/// One container's needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerNeeds {
    pub name: String,
    pub gpus: u32,
    pub memory: MemoryPerGpu,
    /// MIG profiles in resource-name form (`1g.10gb`, `1g.10gb.me`), one per instance.
    pub mig: Vec<String>,
    /// Bytes each MIG instance must have (0: any): the estimate of a model
    /// server that runs on one.
    pub mig_min_bytes: u64,
    /// The estimate a model server on GPUs was sized from: its engine's
    /// settings for the grant go into the assignment.
    pub estimate: Option<Box<estimator::Estimate>>,
}

/// A pod's GPU needs, independent of any node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodNeeds {
    pub containers: Vec<ContainerNeeds>,
    /// The model the memory was estimated for, when annotated.
    pub model: Option<String>,
}

impl PodNeeds {
    /// Reads the needs of a pod, sizing models from the catalog only; `Ok`
    /// with no containers when the pod asks for nothing gpupack places.
    pub fn from_pod(pod: &Pod) -> Result<PodNeeds, DemandError> {
        Self::from_pod_with(pod, &Offline)
    }

    /// Reads the needs of a pod, sizing a model outside the catalog through
    /// `models` (which answers at once).
    pub fn from_pod_with(pod: &Pod, models: &dyn ModelLookup) -> Result<PodNeeds, DemandError> {
        let spec = pod.spec.as_ref();
        let count = spec.map_or(0, |s| {
            s.containers.len() + s.init_containers.as_ref().map_or(0, Vec::len)
        });
        if count > MAX_CONTAINERS {
            return Err(DemandError::TooManyContainers { count });
        }
        let containers = spec
            .into_iter()
            .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers));
        let mut needs = PodNeeds::default();
        for c in containers {
            if let Some(n) = container_needs(c)? {
                needs.containers.push(n);
            }
        }
        let empty = BTreeMap::new();
        let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
        if let Some(model) = ModelAnnotations::from_annotations(annotations)? {
            apply_model(&mut needs, pod, &model, models)?;
        }
        Ok(needs)
    }

    /// Whether the pod asks for nothing gpupack places.
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
    }

    /// Sets, on each container of `assignment` that this pod's model
    /// annotations sized, its engine's memory flag for the memory granted
    /// on the GPUs of `inv` (the smallest over its GPUs) and the KV bytes
    /// planned; clears it on the others.
    pub fn size_engines(&self, assignment: &mut PodAssignment, inv: &NodeInventory) {
        for c in &mut assignment.containers {
            c.engine = None;
            let Some(estimate) = self
                .containers
                .iter()
                .find(|n| n.name == c.name)
                .and_then(|n| n.estimate.as_deref())
            else {
                continue;
            };
            let flag = c
                .gpus
                .iter()
                .filter_map(|g| {
                    let total = inv.gpu(&g.uuid)?.memory_bytes;
                    Some(estimate.memory_flag(g.memory_bytes, total))
                })
                .min();
            c.engine = flag
                .filter(|f| f.ten_thousandths() > 0)
                .map(|f| EngineSizing {
                    memory_flag: f.ten_thousandths(),
                    kv_cache_bytes: estimate.per_gpu.kv_cache_bytes,
                });
        }
    }

    /// The placement demand on nodes whose memory unit is `unit_bytes`.
    pub fn demand(&self, unit_bytes: u64) -> PodDemand {
        let mut containers = Vec::new();
        for c in &self.containers {
            if c.gpus > 0 {
                let memory = match c.memory {
                    MemoryPerGpu::Whole => MemoryNeed::Whole,
                    MemoryPerGpu::Units(u) => MemoryNeed::Bytes(u.saturating_mul(unit_bytes)),
                    MemoryPerGpu::Estimated { bytes, min_units } => MemoryNeed::Bytes(
                        proto::resources::units_needed(bytes, unit_bytes)
                            .max(min_units)
                            .saturating_mul(unit_bytes),
                    ),
                };
                containers.push(ContainerDemand {
                    name: c.name.clone(),
                    gpu: GpuNeed::Gpus {
                        count: c.gpus,
                        memory,
                        max_link: None,
                    },
                });
            }
            for profile in &c.mig {
                containers.push(ContainerDemand {
                    name: c.name.clone(),
                    gpu: GpuNeed::Mig {
                        profile: profile.clone(),
                        min_memory: c.mig_min_bytes,
                    },
                });
            }
        }
        PodDemand {
            containers,
            ..PodDemand::default()
        }
    }
}

/// Longest container name, and longest name part of a resource name: both
/// are DNS labels in Kubernetes. Names are copied into the reason for every
/// candidate node, so longer ones are refused before any work.
pub const MAX_NAME_LABEL: usize = 63;

fn container_needs(c: &Container) -> Result<Option<ContainerNeeds>, DemandError> {
    if c.name.len() > MAX_NAME_LABEL {
        return Err(DemandError::NameTooLong {
            what: "container name",
            name: clip(&c.name).to_string(),
            len: c.name.len(),
        });
    }
    let resources = c.resources.as_ref();
    // The API server defaults an extended resource's request to its limit,
    // so a pod straight from the API has requests; read limits for pods
    // that never went through it.
    let requests = resources.and_then(|r| r.requests.as_ref());
    let limits = resources.and_then(|r| r.limits.as_ref());
    let mut names: Vec<&String> = requests.into_iter().flat_map(|r| r.keys()).collect();
    for k in limits.into_iter().flat_map(|l| l.keys()) {
        if !names.contains(&k) {
            names.push(k);
        }
    }
    let mut gpus: Option<u64> = None;
    let mut units: Option<u64> = None;
    let mut mig = Vec::new();
    for name in names {
        let Some(resource) = Resource::parse(name) else {
            continue;
        };
        let q = requests
            .and_then(|r| r.get(name))
            .or_else(|| limits.and_then(|l| l.get(name)));
        let Some(q) = q else { continue };
        let n = proto::quantity::extended_count(&q.0).map_err(|source| DemandError::Quantity {
            container: clip(&c.name).to_string(),
            resource: clip(name).to_string(),
            source,
        })?;
        match resource {
            Resource::Gpu => gpus = Some(n),
            Resource::GpuMemory => units = Some(n),
            Resource::Mig(profile) => {
                if profile.len() > MAX_NAME_LABEL {
                    return Err(DemandError::NameTooLong {
                        what: "MIG profile",
                        name: clip(&profile).to_string(),
                        len: profile.len(),
                    });
                }
                let k = usize::try_from(n).unwrap_or(usize::MAX).min(64);
                if n > 64 {
                    return Err(DemandError::Resource {
                        container: clip(&c.name).to_string(),
                        resource: clip(name).to_string(),
                        problem: format!(
                            "{n} MIG instances is beyond the 64 one container may use"
                        ),
                    });
                }
                mig.extend(std::iter::repeat_n(profile, k));
            }
        }
    }
    let bad = |resource: &str, problem: String| DemandError::Resource {
        container: clip(&c.name).to_string(),
        resource: resource.to_string(),
        problem,
    };
    let limit = proto::annotations::MAX_TENSOR_PARALLEL_SIZE as u64;
    let (count, memory) = match (gpus, units) {
        (None | Some(0), None | Some(0)) => (0, MemoryPerGpu::Whole),
        (Some(n), _) if n > limit => {
            return Err(bad(
                GPU,
                format!("{n} GPUs is beyond the {limit} one container may span"),
            ));
        }
        (None | Some(0), Some(m)) => (1, MemoryPerGpu::Units(m)),
        (Some(n), None | Some(0)) => (n as u32, MemoryPerGpu::Whole),
        (Some(n), Some(m)) => {
            if m % n != 0 {
                return Err(bad(
                    GPU_MEMORY,
                    format!(
                        "{m} units do not split evenly over {n} GPUs ({GPU_MEMORY} is the total over the container's GPUs); use a multiple of {n}"
                    ),
                ));
            }
            (n as u32, MemoryPerGpu::Units(m / n))
        }
    };
    if count == 0 && mig.is_empty() {
        return Ok(None);
    }
    Ok(Some(ContainerNeeds {
        name: c.name.clone(),
        gpus: count,
        memory,
        mig,
        mig_min_bytes: 0,
        estimate: None,
    }))
}

/// Sizes the server container from the model annotations.
fn apply_model(
    needs: &mut PodNeeds,
    pod: &Pod,
    m: &ModelAnnotations,
    models: &dyn ModelLookup,
) -> Result<(), DemandError> {
    use proto::annotations as ann;
    let names: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| c.name.as_str())
        .collect();
    let target = match &m.container {
        Some(name) if names.contains(&name.as_str()) => name.clone(),
        Some(name) => {
            return Err(DemandError::Annotation {
                annotation: ann::CONTAINER,
                problem: format!(
                    "no container named {:?}; containers: {}",
                    clip(name).to_string(),
                    clip(&names.join(", "))
                ),
            });
        }
        None => {
            let gpu_containers: Vec<&str> = needs
                .containers
                .iter()
                .filter(|c| c.gpus > 0 && names.contains(&c.name.as_str()))
                .map(|c| c.name.as_str())
                .collect();
            match (gpu_containers.as_slice(), names.as_slice()) {
                ([one], _) => one.to_string(),
                ([], [one]) => one.to_string(),
                _ => {
                    return Err(DemandError::Annotation {
                        annotation: ann::CONTAINER,
                        problem: format!(
                            "must name the server container: the pod has {} containers ({})",
                            names.len(),
                            clip(&names.join(", "))
                        ),
                    });
                }
            }
        }
    };
    let existing = needs.containers.iter().position(|c| c.name == target);
    // A server on a MIG instance: it gets that instance only, which must
    // hold the estimate (checked per node against the instance's memory).
    if let Some(i) =
        existing.filter(|&i| needs.containers[i].gpus == 0 && !needs.containers[i].mig.is_empty())
    {
        let instances = needs.containers[i].mig.len();
        if instances > 1 {
            return Err(DemandError::Annotation {
                annotation: ann::MODEL,
                problem: format!(
                    "container {target} asks for {instances} MIG instances; a model server runs on one"
                ),
            });
        }
        if let Some(tp) = m.tensor_parallel_size.filter(|tp| *tp != 1) {
            return Err(DemandError::Annotation {
                annotation: ann::TENSOR_PARALLEL_SIZE,
                problem: format!(
                    "is {tp} but container {target} runs on one MIG instance, which serves one rank"
                ),
            });
        }
        let estimate = size(m, namespace(pod), &serving_params(m, 1)?, models)?;
        needs.containers[i].mig_min_bytes = estimate.total_bytes();
        needs.model = Some(m.model.clone());
        return Ok(());
    }
    let requested_gpus = existing
        .map(|i| needs.containers[i].gpus)
        .filter(|g| *g > 0);
    let tp = match (m.tensor_parallel_size, requested_gpus) {
        (Some(tp), Some(g)) if tp != g => {
            return Err(DemandError::Annotation {
                annotation: ann::TENSOR_PARALLEL_SIZE,
                problem: format!(
                    "is {tp} but container {target} requests {GPU}: {g}; they must be equal"
                ),
            });
        }
        (Some(tp), _) => tp,
        (None, Some(g)) => g,
        (None, None) => 1,
    };
    let params = serving_params(m, tp)?;
    let estimate = size(m, namespace(pod), &params, models)?;
    let per_gpu = estimate.total_bytes();
    let estimate = Some(Box::new(estimate));
    // An explicit per-GPU request larger than the estimate wins; the two are
    // compared once the node's unit is known.
    let min_units = match existing.map(|i| needs.containers[i].memory) {
        Some(MemoryPerGpu::Units(u)) => u,
        _ => 0,
    };
    let memory = MemoryPerGpu::Estimated {
        bytes: per_gpu,
        min_units,
    };
    match existing {
        Some(i) => {
            needs.containers[i].gpus = tp;
            needs.containers[i].memory = memory;
            needs.containers[i].estimate = estimate;
        }
        None => needs.containers.push(ContainerNeeds {
            name: target,
            gpus: tp,
            memory,
            mig: Vec::new(),
            mig_min_bytes: 0,
            estimate,
        }),
    }
    needs.model = Some(m.model.clone());
    Ok(())
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// The model's spec: from the ConfigMap `gpupack.io/model-config` names
/// when set; else the catalog's when it holds the model (unless the name
/// announces a quantized re-upload and no quantization is annotated: then
/// only the checkpoint's own config says how it is stored); else the
/// model's own files on the Hub, through `models`.
fn model_spec(
    m: &ModelAnnotations,
    namespace: &str,
    models: &dyn ModelLookup,
) -> Result<Arc<ModelSpec>, DemandError> {
    use proto::annotations as ann;
    if let Some(config_map) = &m.model_config {
        let from = format!("ConfigMap {namespace}/{config_map}");
        return looked_up(
            m,
            models.lookup_config_map(namespace, config_map),
            from,
            String::new(),
        );
    }
    let named = estimator::quantization_named_in(&m.model);
    match estimator::lookup(&m.model) {
        Ok(entry) if named.is_none() || m.quantization.is_some() => {
            return Ok(Arc::new(entry.spec()));
        }
        // Refused before any matching or fetching: no model id is that long.
        Err(e @ estimator::EstimateError::NameTooLong { .. }) => {
            return Err(DemandError::Estimate {
                model: clip(&m.model).to_string(),
                problem: e.to_string(),
            });
        }
        _ => {}
    }
    let hint = match named {
        Some(q) if m.quantization.is_none() => format!(
            "; the name says {q}: it is never sized as 16-bit without its config, so set {} \
             (e.g. awq, gptq-int4, fp8) to size it from the catalog's architecture",
            ann::QUANTIZATION
        ),
        _ => format!(
            "; where the Hub is out of reach, put the model's config.json in a ConfigMap and name it in {}",
            ann::MODEL_CONFIG
        ),
    };
    looked_up(
        m,
        models.lookup(&m.model),
        "the Hugging Face Hub".to_string(),
        hint,
    )
}

/// What a lookup found, as the pod's spec or the error to tell its user.
fn looked_up(
    m: &ModelAnnotations,
    found: Lookup,
    from: String,
    hint: String,
) -> Result<Arc<ModelSpec>, DemandError> {
    match found {
        Lookup::Ready(spec) => Ok(spec),
        Lookup::Pending { last_error } => Err(DemandError::ModelPending {
            model: clip(&m.model).to_string(),
            from,
            last_error,
        }),
        Lookup::Failed { error, retry_in } => {
            // A lookup that never retries (offline) makes the model unknown.
            if retry_in == std::time::Duration::MAX {
                return Err(DemandError::Estimate {
                    model: clip(&m.model).to_string(),
                    problem: format!("{error}{hint}"),
                });
            }
            Err(DemandError::ModelUnavailable {
                model: clip(&m.model).to_string(),
                reason: error,
                hint,
                retry_in_seconds: retry_in.as_secs().min(24 * 3600),
            })
        }
    }
}

/// Estimates the model with `params`.
fn size(
    m: &ModelAnnotations,
    namespace: &str,
    params: &estimator::ServingParams,
    models: &dyn ModelLookup,
) -> Result<estimator::Estimate, DemandError> {
    let spec = model_spec(m, namespace, models)?;
    estimator::estimate(&spec, params).map_err(|e| DemandError::Estimate {
        model: clip(&m.model).to_string(),
        problem: e.to_string(),
    })
}

fn serving_params(m: &ModelAnnotations, tp: u32) -> Result<estimator::ServingParams, DemandError> {
    use estimator::ServingField;
    use proto::annotations as ann;
    estimator::ServingParams {
        tensor_parallel_size: tp,
        max_model_len: m.max_model_len,
        max_num_seqs: m.max_num_seqs,
        kv_cache_tokens: m.kv_cache_tokens,
        ..Default::default()
    }
    .with_text(&estimator::ServingText {
        dtype: m.dtype.as_deref(),
        quantization: m.quantization.as_deref(),
        kv_cache_dtype: m.kv_cache_dtype.as_deref(),
        engine: m.engine.as_deref(),
    })
    .map_err(|e| DemandError::Annotation {
        annotation: match e.field {
            ServingField::Dtype => ann::DTYPE,
            ServingField::Quantization => ann::QUANTIZATION,
            ServingField::KvCacheDtype => ann::KV_CACHE_DTYPE,
            ServingField::Engine => ann::ENGINE,
        },
        problem: e.source.to_string(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: serde_json::Value, annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "annotations": annotations},
            "spec": {"containers": containers}
        }))
        .unwrap()
    }

    fn one(requests: serde_json::Value) -> Pod {
        pod(
            json!([{"name": "server", "resources": {"requests": requests, "limits": requests}}]),
            json!({}),
        )
    }

    #[test]
    fn plain_pod_needs_nothing() {
        let p = one(json!({"cpu": "1", "memory": "1Gi"}));
        assert!(PodNeeds::from_pod(&p).unwrap().is_empty());
    }

    #[test]
    fn memory_is_split_evenly_over_gpus() {
        let p = one(json!({GPU: "2", GPU_MEMORY: "80"}));
        let n = PodNeeds::from_pod(&p).unwrap();
        assert_eq!(n.containers[0].gpus, 2);
        assert_eq!(n.containers[0].memory, MemoryPerGpu::Units(40));
        let d = n.demand(1 << 30);
        assert_eq!(
            d.containers[0].gpu,
            GpuNeed::Gpus {
                count: 2,
                memory: MemoryNeed::Bytes(40 << 30),
                max_link: None
            }
        );
    }

    #[test]
    fn gpus_without_memory_are_whole_and_memory_alone_is_one_gpu() {
        let n = PodNeeds::from_pod(&one(json!({GPU: "4"}))).unwrap();
        assert_eq!(
            (n.containers[0].gpus, n.containers[0].memory),
            (4, MemoryPerGpu::Whole)
        );
        let n = PodNeeds::from_pod(&one(json!({GPU_MEMORY: "10"}))).unwrap();
        assert_eq!(
            (n.containers[0].gpus, n.containers[0].memory),
            (1, MemoryPerGpu::Units(10))
        );
    }

    #[test]
    fn uneven_split_and_fractions_are_refused_naming_the_resource() {
        let e = PodNeeds::from_pod(&one(json!({GPU: "2", GPU_MEMORY: "81"}))).unwrap_err();
        assert!(
            e.to_string()
                .contains("container server: gpupack.io/gpu-memory"),
            "{e}"
        );
        assert!(e.to_string().contains("multiple of 2"), "{e}");
        let e = PodNeeds::from_pod(&one(json!({GPU: "0.5"}))).unwrap_err();
        assert!(
            e.to_string()
                .contains("gpupack.io/gpu: \"0.5\" is not a whole number"),
            "{e}"
        );
        let e = PodNeeds::from_pod(&one(json!({GPU: "65"}))).unwrap_err();
        assert!(e.to_string().contains("beyond"), "{e}");
    }

    #[test]
    fn oversized_names_and_container_counts_are_refused() {
        let long = "c".repeat(1 << 20);
        let p = pod(
            json!([{"name": long, "resources": {"requests": {GPU: "1"}}}]),
            json!({}),
        );
        let e = PodNeeds::from_pod(&p).unwrap_err();
        assert!(e.to_string().contains("container name"), "{e:.200}");
        assert!(e.to_string().len() < 400, "{}", e.to_string().len());
        let mig = format!("gpupack.io/mig-{}", "1".repeat(100));
        let e = PodNeeds::from_pod(&one(json!({mig: "1"}))).unwrap_err();
        assert!(e.to_string().contains("MIG profile"), "{e}");
        let many: Vec<serde_json::Value> = (0..=MAX_CONTAINERS)
            .map(|i| json!({"name": format!("c{i}")}))
            .collect();
        let e = PodNeeds::from_pod(&pod(json!(many), json!({}))).unwrap_err();
        assert_eq!(
            e,
            DemandError::TooManyContainers {
                count: MAX_CONTAINERS + 1
            }
        );
    }

    #[test]
    fn mig_instances_repeat_per_count() {
        let n = PodNeeds::from_pod(&one(json!({"gpupack.io/mig-1g.10gb": "2"}))).unwrap();
        let d = n.demand(1 << 30);
        assert_eq!(d.containers.len(), 2);
        assert!(d.containers.iter().all(|c| c.gpu
            == GpuNeed::Mig {
                profile: "1g.10gb".into(),
                min_memory: 0,
            }));
    }

    #[test]
    fn limits_alone_count() {
        let p = pod(
            json!([{"name": "c", "resources": {"limits": {GPU: "1"}}}]),
            json!({}),
        );
        assert_eq!(PodNeeds::from_pod(&p).unwrap().containers[0].gpus, 1);
    }

    #[test]
    fn model_annotations_size_the_server_in_whole_units() {
        let p = pod(
            json!([{"name": "vllm", "resources": {"requests": {GPU: "2"}}}, {"name": "sidecar"}]),
            json!({
                "gpupack.io/model": "meta-llama/Llama-3.1-8B-Instruct",
                "gpupack.io/tensor-parallel-size": "2",
                "gpupack.io/max-model-len": "8192",
            }),
        );
        let n = PodNeeds::from_pod(&p).unwrap();
        assert_eq!(n.model.as_deref(), Some("meta-llama/Llama-3.1-8B-Instruct"));
        let MemoryPerGpu::Estimated { bytes: b, .. } = n.containers[0].memory else {
            panic!("{n:?}")
        };
        assert!(b > 4 << 30 && b < 40 << 30, "{b}");
        let GpuNeed::Gpus {
            count,
            memory: MemoryNeed::Bytes(rounded),
            ..
        } = n.demand(1 << 30).containers[0].gpu
        else {
            panic!()
        };
        assert_eq!(count, 2);
        assert_eq!(rounded % (1 << 30), 0);
        assert!(rounded >= b && rounded - b < 1 << 30);
    }

    #[test]
    fn the_engine_flag_leaves_room_for_what_the_engine_holds_outside_it() {
        use proto::assignment::{AssignedGpu, ContainerAssignment, PodAssignment};
        let p = pod(
            json!([{"name": "vllm", "resources": {"requests": {GPU: "2"}}}, {"name": "sidecar", "resources": {"requests": {GPU: "1"}}}]),
            json!({
                "gpupack.io/model": "meta-llama/Llama-3.1-8B-Instruct",
                "gpupack.io/tensor-parallel-size": "2",
                "gpupack.io/max-model-len": "8192",
                "gpupack.io/engine": "vllm@0.11",
                "gpupack.io/container": "vllm",
            }),
        );
        let n = PodNeeds::from_pod(&p).unwrap();
        let inv = crate::translate::tests::h100_inventory();
        let grant = 40u64 << 30;
        let container = |name: &str, gpus: &[usize]| ContainerAssignment {
            name: name.into(),
            gpus: gpus
                .iter()
                .map(|&i| AssignedGpu {
                    uuid: inv.gpus[i].uuid.clone(),
                    index: inv.gpus[i].index,
                    memory_bytes: grant,
                })
                .collect(),
            mig: vec![],
            // Set by someone else: replaced or cleared.
            engine: Some(proto::assignment::EngineSizing {
                memory_flag: 10_000,
                kv_cache_bytes: 1,
            }),
        };
        let mut a = PodAssignment {
            version: proto::assignment::VERSION.into(),
            node: "n".into(),
            containers: vec![container("vllm", &[0, 1]), container("sidecar", &[2])],
        };
        n.size_engines(&mut a, &inv);
        let e = n.containers[0].estimate.as_deref().unwrap();
        let total = inv.gpus[0].memory_bytes;
        let sized = a.containers[0].engine.unwrap();
        assert_eq!(
            sized.memory_flag,
            e.memory_flag(grant, total).ten_thousandths()
        );
        assert_eq!(sized.kv_cache_bytes, e.per_gpu.kv_cache_bytes);
        // vLLM 0.11 holds its CUDA context and graphs beyond the flag.
        let outside = e.overhead_detail.runtime_bytes + e.overhead_detail.cuda_graph_bytes;
        let budget = u64::from(sized.memory_flag) * total / 10_000;
        assert!(budget + outside <= grant, "{budget} + {outside} > {grant}");
        assert!(budget + outside + total / 10_000 + 1 > grant);
        assert_eq!(a.containers[1].engine, None, "the sidecar is not sized");
    }

    /// A model server on a MIG instance: the instance only, sized by the
    /// model (checked against each node's instances), never an extra GPU.
    pub(crate) fn mig_server(model: &str, extra: serde_json::Value) -> Pod {
        let mut a = json!({"gpupack.io/model": model, "gpupack.io/max-model-len": "4096"});
        a.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        pod(
            json!([{"name": "vllm", "resources": {"limits": {"gpupack.io/mig-1g.10gb": "1"}}}]),
            a,
        )
    }

    #[test]
    fn a_model_on_a_mig_instance_needs_that_instance_only() {
        let n = PodNeeds::from_pod(&mig_server("Qwen/Qwen2.5-0.5B", json!({}))).unwrap();
        let d = n.demand(1 << 30);
        assert_eq!(d.containers.len(), 1, "{d:?}");
        match &d.containers[0].gpu {
            GpuNeed::Mig {
                profile,
                min_memory,
            } => {
                assert_eq!(profile, "1g.10gb");
                assert!(*min_memory > 0 && *min_memory < 10 << 30, "{min_memory}");
            }
            other => panic!("{other:?}"),
        }
        let e = PodNeeds::from_pod(&mig_server(
            "Qwen/Qwen2.5-0.5B",
            json!({"gpupack.io/tensor-parallel-size": "2"}),
        ))
        .unwrap_err();
        assert!(e.to_string().contains("one MIG instance"), "{e}");
    }

    #[test]
    fn model_annotation_errors_are_specific() {
        let base = |extra: serde_json::Value| {
            let mut a = json!({"gpupack.io/model": "meta-llama/Llama-3.1-8B-Instruct"});
            a.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            pod(
                json!([{"name": "vllm", "resources": {"requests": {GPU: "2"}}}]),
                a,
            )
        };
        let e =
            PodNeeds::from_pod(&base(json!({"gpupack.io/tensor-parallel-size": "4"}))).unwrap_err();
        assert!(e.to_string().contains("must be equal"), "{e}");
        let e = PodNeeds::from_pod(&base(json!({"gpupack.io/dtype": "int3"}))).unwrap_err();
        assert!(e.to_string().contains("gpupack.io/dtype"), "{e}");
        let e =
            PodNeeds::from_pod(&base(json!({"gpupack.io/tensor-parallel-size": "x"}))).unwrap_err();
        assert!(
            e.to_string().contains("gpupack.io/tensor-parallel-size"),
            "{e}"
        );
        let e = PodNeeds::from_pod(&pod(
            json!([{"name": "vllm"}]),
            json!({"gpupack.io/model": "no-such-model-xyz"}),
        ))
        .unwrap_err();
        assert!(e.to_string().contains("no-such-model-xyz"), "{e}");
        let e = PodNeeds::from_pod(&base(json!({"gpupack.io/container": "other"}))).unwrap_err();
        assert!(
            e.to_string().contains("no container named \"other\""),
            "{e}"
        );
    }
}
