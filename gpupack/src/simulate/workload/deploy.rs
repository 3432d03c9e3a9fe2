//! LLM deployments turned into pod demands: the estimator sizes each
//! tensor-parallel rank, the size is rounded up to whole memory units as
//! the scheduler extender does, and a deployment that fits no node even on
//! an empty fleet is marked unplaceable with the reason.

use estimator::{EstimateError, ServingField, ServingParams, ServingText};
use placement::{
    ContainerDemand, GpuNeed, Ledger, LinkLevel, MemoryNeed, PodDemand, model_matches,
};
use proto::resources::DEFAULT_MEMORY_UNIT_BYTES;
use serde::Serialize;

use super::fleet::Fleet;
use super::spec::{DeploymentSpec, MaxLink, WorkloadFile};
use super::{GIB, Invalid, gib};
use proto::resources::mig_request_form as request_form;

/// Most pods one workload may ask for.
pub const MAX_PODS: u64 = 200_000;

/// One deployment, sized.
#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    pub name: String,
    /// The catalog model the estimate is for.
    pub model: String,
    pub tensor_parallel_size: u32,
    pub replicas: u32,
    /// The estimator's bytes per GPU.
    pub estimate_bytes: u64,
    /// What each GPU is asked for: the estimate in whole memory units, or
    /// the MIG instance's memory.
    pub request_bytes: u64,
    pub mig_profile: Option<String>,
    #[serde(skip)]
    pub demand: PodDemand,
    /// Why the deployment fits no node even when the fleet is empty.
    pub unplaceable: Option<String>,
}

impl Deployment {
    /// GPU memory one pod holds once placed.
    pub fn pod_bytes(&self) -> u64 {
        self.request_bytes * u64::from(self.tensor_parallel_size)
    }
}

/// Sizes every deployment; `file` names the source in errors.
pub fn build(file: &str, w: &WorkloadFile, fleet: &Fleet) -> Result<Vec<Deployment>, Invalid> {
    if w.deployments.is_empty() {
        return Err(Invalid::new(file, 0, "deployments", "no deployments given"));
    }
    let mut ledger = Ledger::new();
    for s in &fleet.specs {
        ledger
            .upsert_node(s)
            .map_err(|e| Invalid::new(file, 0, "nodeTypes", e.to_string()))?;
    }
    let mut out = Vec::with_capacity(w.deployments.len());
    let mut pods = 0u64;
    for (i, d) in w.deployments.iter().enumerate() {
        let line = d.referenced.line();
        let d = &d.value;
        let bad = |field: &str, problem: String| {
            Invalid::new(
                file,
                line,
                &format!("deployments[{i}] ({}).{field}", d.name),
                problem,
            )
        };
        if d.name.trim().is_empty() {
            return Err(Invalid::new(
                file,
                line,
                &format!("deployments[{i}].name"),
                "is empty",
            ));
        }
        if let Some(j) = w.deployments[..i]
            .iter()
            .position(|o| o.value.name == d.name)
        {
            return Err(bad(
                "name",
                format!("{:?} is also the name of deployments[{j}]", d.name),
            ));
        }
        if d.replicas == 0 {
            return Err(bad("replicas", "must be at least 1".into()));
        }
        pods += u64::from(d.replicas);
        if pods > MAX_PODS {
            return Err(bad(
                "replicas",
                format!("the workload asks for more than {MAX_PODS} pods"),
            ));
        }
        let mut dep = size(d, fleet, &bad)?;
        if dep.unplaceable.is_none() {
            dep.unplaceable = never_fits(&ledger, fleet, &dep);
        }
        out.push(dep);
    }
    Ok(out)
}

/// The field an estimator error is about.
fn field_of(e: &EstimateError) -> &'static str {
    match e {
        EstimateError::ZeroTensorParallel
        | EstimateError::TensorParallelHeads { .. }
        | EstimateError::TensorParallelKvHeads { .. } => "tensorParallelSize",
        EstimateError::MaxModelLenTooLong { .. } | EstimateError::ZeroMaxModelLen => "maxModelLen",
        EstimateError::KvBudgetTooSmall { .. } => "kvCacheTokens",
        EstimateError::ConflictingKvBudget
        | EstimateError::ZeroSequences
        | EstimateError::Overflow { .. } => "maxNumSeqs",
        _ => "model",
    }
}

fn size(
    d: &DeploymentSpec,
    fleet: &Fleet,
    bad: &dyn Fn(&str, String) -> Invalid,
) -> Result<Deployment, Invalid> {
    let entry = estimator::lookup(&d.model).map_err(|e| bad("model", e.to_string()))?;
    let tp = d.tensor_parallel_size.unwrap_or(1);
    if tp == 0 {
        return Err(bad("tensorParallelSize", "must be at least 1".into()));
    }
    let most = fleet.max_gpus_per_node();
    if tp > most {
        let widest = fleet
            .kinds
            .iter()
            .filter(|k| k.gpus == most)
            .map(|k| k.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(bad(
            "tensorParallelSize",
            format!(
                "{tp} GPUs on one node, but no node type has more than {most} ({widest}); a tensor-parallel server spans one node"
            ),
        ));
    }
    let params = ServingParams {
        tensor_parallel_size: tp,
        max_model_len: d.max_model_len,
        max_num_seqs: d.max_num_seqs,
        kv_cache_tokens: d.kv_cache_tokens,
        ..ServingParams::default()
    }
    .with_text(&ServingText {
        dtype: d.dtype.as_deref(),
        quantization: d.quantization.as_deref(),
        kv_cache_dtype: d.kv_cache_dtype.as_deref(),
        engine: d.engine.as_deref(),
    })
    .map_err(|e| {
        let field = match e.field {
            ServingField::Dtype => "dtype",
            ServingField::Quantization => "quantization",
            ServingField::KvCacheDtype => "kvCacheDtype",
            ServingField::Engine => "engine",
        };
        bad(field, e.source.to_string())
    })?;
    let spec = entry.spec();
    let estimate =
        estimator::estimate(&spec, &params).map_err(|e| bad(field_of(&e), e.to_string()))?;
    let estimate_bytes = estimate.total_bytes();
    let allowed = d.gpu_models.clone().unwrap_or_default();
    for (k, m) in allowed.iter().enumerate() {
        if !fleet
            .kinds
            .iter()
            .any(|kind| model_matches(m, &kind.product))
        {
            let products: Vec<&str> = fleet.kinds.iter().map(|k| k.product.as_str()).collect();
            return Err(bad(
                &format!("gpuModels[{k}]"),
                format!(
                    "{m:?} matches no GPU of the fleet ({})",
                    products.join(", ")
                ),
            ));
        }
    }
    let cpu_milli = match d.cpus {
        None => 0,
        Some(c) if c.is_finite() && (0.0..=1.0e6).contains(&c) => (c * 1000.0).round() as u64,
        Some(c) => return Err(bad("cpus", format!("{c} is not a number of cores"))),
    };
    let memory_bytes = match d.memory_gib {
        None => 0,
        Some(m) if m.is_finite() && (0.0..=1.0e7).contains(&m) => (m * GIB as f64).round() as u64,
        Some(m) => return Err(bad("memoryGiB", format!("{m} is not a memory size in GiB"))),
    };
    let max_link = match d.max_link {
        None | Some(MaxLink::Any) => None,
        Some(MaxLink::Nvswitch) => Some(LinkLevel::NvSwitch),
        Some(MaxLink::Nvlink) => Some(LinkLevel::NvLink),
        Some(MaxLink::PcieSwitch) => Some(LinkLevel::PcieSwitch),
        Some(MaxLink::Numa) => Some(LinkLevel::SameNuma),
    };
    let mut dep = Deployment {
        name: d.name.clone(),
        model: estimate.model.clone(),
        tensor_parallel_size: tp,
        replicas: d.replicas,
        estimate_bytes,
        request_bytes: 0,
        mig_profile: None,
        demand: PodDemand::default(),
        unplaceable: None,
    };
    let gpu = match &d.mig_profile {
        None => {
            let unit = DEFAULT_MEMORY_UNIT_BYTES;
            dep.request_bytes = proto::resources::units_needed(estimate_bytes, unit) * unit;
            GpuNeed::Gpus {
                count: tp,
                memory: MemoryNeed::Bytes(dep.request_bytes),
                max_link,
            }
        }
        Some(p) => {
            if tp != 1 {
                return Err(bad(
                    "migProfile",
                    format!("a MIG instance serves tensorParallelSize 1, not {tp}"),
                ));
            }
            if d.max_link.is_some() {
                return Err(bad("maxLink", "does not apply to a MIG instance".into()));
            }
            let profile = request_form(p);
            // Node types offering the profile, with its memory there.
            let offers: Vec<(&str, u64)> = fleet
                .kinds
                .iter()
                .filter(|k| {
                    allowed.is_empty() || allowed.iter().any(|a| model_matches(a, &k.product))
                })
                .filter_map(|k| {
                    k.mig_instances
                        .iter()
                        .find(|(q, _)| *q == profile)
                        .map(|(_, b)| (k.product.as_str(), *b))
                })
                .collect();
            if offers.is_empty() {
                let mut known: Vec<&str> = fleet
                    .kinds
                    .iter()
                    .flat_map(|k| k.mig_instances.iter().map(|(q, _)| q.as_str()))
                    .collect();
                known.sort();
                known.dedup();
                return Err(bad(
                    "migProfile",
                    format!(
                        "no node type{} has {profile} instances (the fleet has: {})",
                        if allowed.is_empty() {
                            ""
                        } else {
                            " of gpuModels"
                        },
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
            let fitting: Vec<(&str, u64)> = offers
                .iter()
                .copied()
                .filter(|(_, b)| *b >= estimate_bytes)
                .collect();
            dep.mig_profile = Some(profile.clone());
            match fitting.iter().map(|(_, b)| *b).min() {
                Some(b) => dep.request_bytes = b,
                None => {
                    let largest = offers.iter().map(|(_, b)| *b).max().unwrap_or(0);
                    dep.request_bytes = largest;
                    dep.unplaceable = Some(format!(
                        "needs {} GiB of GPU memory; {profile} instances have {} GiB",
                        gib(estimate_bytes),
                        gib(largest)
                    ));
                }
            }
            // Keep the pod to GPU models whose instances are large enough.
            let mut models = if fitting.len() == offers.len() {
                allowed.clone()
            } else {
                fitting.iter().map(|(m, _)| m.to_string()).collect()
            };
            models.sort();
            models.dedup();
            dep.demand.allowed_models = models;
            GpuNeed::Mig {
                profile,
                min_memory: estimate_bytes,
            }
        }
    };
    if dep.demand.allowed_models.is_empty() {
        dep.demand.allowed_models = allowed;
    }
    dep.demand.containers = vec![ContainerDemand {
        name: "server".into(),
        gpu,
    }];
    dep.demand.cpu_milli = cpu_milli;
    dep.demand.memory_bytes = memory_bytes;
    // Estimate at a larger TP for the hint when GPUs are too small.
    if dep.unplaceable.is_none() && d.mig_profile.is_none() {
        let largest = fleet
            .kinds
            .iter()
            .filter(|k| {
                dep.demand.allowed_models.is_empty()
                    || dep
                        .demand
                        .allowed_models
                        .iter()
                        .any(|a| model_matches(a, &k.product))
            })
            .map(|k| (k.gpu_memory_bytes, k.name.as_str()))
            .max();
        if let Some((bytes, kind)) = largest
            && dep.request_bytes > bytes
        {
            let hint = match estimator::fit(&spec, &params, bytes) {
                Ok(f) => match f.gpus_needed {
                    Some(n) => format!("; tensorParallelSize {n} would fit"),
                    None => String::new(),
                },
                Err(_) => String::new(),
            };
            dep.unplaceable = Some(format!(
                "needs {} GiB per GPU; the largest GPU it may use has {} GiB ({kind}){hint}",
                gib(dep.request_bytes),
                gib(bytes)
            ));
        }
    }
    Ok(dep)
}

/// Why a deployment fits no node of the empty fleet, per node type.
fn never_fits(ledger: &Ledger, fleet: &Fleet, dep: &Deployment) -> Option<String> {
    let prep = ledger.prepare(&dep.demand);
    let mut reasons: Vec<String> = Vec::new();
    for (k, kind) in fleet.kinds.iter().enumerate() {
        let Some(id) = fleet
            .kind_of
            .iter()
            .position(|&x| x == k)
            .and_then(|first| ledger.node_id(&fleet.specs[first].name))
        else {
            continue;
        };
        match ledger.check(id, &prep) {
            Ok(()) => return None,
            Err(u) => reasons.push(format!("{}: {}", kind.name, u.shortfall)),
        }
    }
    Some(format!("fits no node type ({})", reasons.join("; ")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::simulate::workload::parse;

    const FLEET: &str = "nodeTypes:
  - { name: l40s, count: 1, gpu: L40S, gpus: 4, interconnect: { kind: pcie } }
  - name: mig
    count: 1
    gpu: A100-80GB
    gpus: 2
    interconnect: { kind: nvlink }
    mig: { gpus: [0], instances: [3g.40gb, 2g.20gb, 1g.10gb, 1g.10gb] }
deployments:
";

    fn deployments(list: &str) -> Result<Vec<Deployment>, Invalid> {
        parse("t.yaml", &format!("{FLEET}{list}")).map(|w| w.deployments)
    }

    #[test]
    fn the_estimate_is_requested_in_whole_gib_per_gpu() {
        let d = deployments(
            "  - { name: a, model: meta-llama/Llama-3.1-8B-Instruct, tensorParallelSize: 2, maxModelLen: 8192, maxNumSeqs: 8, maxLink: numa, cpus: 2.5, replicas: 3 }\n",
        )
        .unwrap();
        let params = ServingParams {
            tensor_parallel_size: 2,
            max_model_len: Some(8192),
            max_num_seqs: Some(8),
            ..ServingParams::default()
        };
        let e = estimator::estimate_catalog_model("Llama-3.1-8B", &params).unwrap();
        let d = &d[0];
        assert_eq!(d.model, "Llama-3.1-8B");
        assert_eq!(d.estimate_bytes, e.total_bytes());
        assert_eq!(d.request_bytes, e.gpu_memory_gib() * GIB);
        assert_eq!(d.pod_bytes(), 2 * d.request_bytes);
        assert_eq!(d.demand.cpu_milli, 2500);
        assert_eq!(
            d.demand.containers[0].gpu,
            GpuNeed::Gpus {
                count: 2,
                memory: MemoryNeed::Bytes(d.request_bytes),
                max_link: Some(LinkLevel::SameNuma)
            }
        );
        // The fleet's nodes give no CPU, so a pod asking for some fits none.
        let why = d.unplaceable.as_deref().unwrap();
        assert!(
            why.starts_with("fits no node type (l40s: needs 2.50 CPU"),
            "{why}"
        );
    }

    #[test]
    fn mig_deployments_fit_the_instance_or_are_unplaceable() {
        let d = deployments(
            "  - { name: tiny, model: Qwen2.5-0.5B, maxModelLen: 4096, maxNumSeqs: 8, migProfile: 1g.10gb, replicas: 2 }\n\
             \x20 - { name: big, model: Llama-3.1-8B, maxModelLen: 8192, maxNumSeqs: 16, migProfile: 1g.10gb, replicas: 1 }\n",
        )
        .unwrap();
        assert!(
            matches!(
                &d[0].demand.containers[0].gpu,
                GpuNeed::Mig { profile, min_memory }
                    if profile == "1g.10gb" && *min_memory == d[0].estimate_bytes
            ),
            "{:?}",
            d[0].demand
        );
        assert_eq!(d[0].request_bytes, 10 * GIB);
        assert!(d[0].unplaceable.is_none());
        let why = d[1].unplaceable.as_deref().unwrap();
        assert!(why.contains("1g.10gb instances have 10.0 GiB"), "{why}");
        let err = deployments(
            "  - { name: x, model: Qwen2.5-0.5B, migProfile: 1g.10gb, tensorParallelSize: 2, replicas: 1 }\n",
        )
        .unwrap_err();
        assert_eq!(err.field, "deployments[0] (x).migProfile");
        let err =
            deployments("  - { name: x, model: Qwen2.5-0.5B, migProfile: 7g.80gb, replicas: 1 }\n")
                .unwrap_err();
        assert!(
            err.problem
                .contains("the fleet has: 1g.10gb, 2g.20gb, 3g.40gb"),
            "{}",
            err.problem
        );
    }

    #[test]
    fn too_large_for_every_gpu_is_unplaceable_with_a_hint() {
        let d =
            deployments("  - { name: a, model: Llama-3.1-70B, maxModelLen: 8192, replicas: 1 }\n")
                .unwrap();
        let why = d[0].unplaceable.as_deref().unwrap();
        assert!(
            why.contains("(mig)") && why.contains("tensorParallelSize 2 would fit"),
            "{why}"
        );
        // Kept to the L40S, it would need more of them.
        let d = deployments(
            "  - { name: a, model: Llama-3.1-70B, maxModelLen: 8192, gpuModels: [L40S], replicas: 1 }\n",
        )
        .unwrap();
        let why = d[0].unplaceable.as_deref().unwrap();
        assert!(
            why.contains("(l40s)") && why.contains("tensorParallelSize 4 would fit"),
            "{why}"
        );
    }

    #[test]
    fn gpu_models_must_name_a_gpu_of_the_fleet_and_names_are_unique() {
        let err =
            deployments("  - { name: a, model: Llama-3.1-8B, gpuModels: [H100], replicas: 1 }\n")
                .unwrap_err();
        assert_eq!(err.field, "deployments[0] (a).gpuModels[0]");
        assert!(err.problem.contains("L40S, A100-80GB"), "{}", err.problem);
        let err = deployments(
            "  - { name: a, model: Llama-3.1-8B, replicas: 1 }\n  - { name: a, model: Llama-3.1-8B, replicas: 1 }\n",
        )
        .unwrap_err();
        assert_eq!(
            (err.line, err.field.as_str()),
            (11, "deployments[1] (a).name")
        );
    }
}
