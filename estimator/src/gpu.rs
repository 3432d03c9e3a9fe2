//! Common GPUs, whether an estimate fits one, and the engine flags that hold
//! a server to the estimated budget.

use serde::Serialize;

use crate::catalog::ModelSpec;
use crate::dtype::KvCacheDtype;
use crate::engine::Engine;
use crate::error::EstimateError;
use crate::estimate::{Estimate, ServingParams, check_tensor_parallel, estimate};

const MIB: u64 = 1 << 20;

const fn gib_hundredths(h: u64) -> u64 {
    h * (1 << 30) / 100
}

/// A GPU model and the memory CUDA reports for it (slightly under the
/// marketing figure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gpu {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub memory_bytes: u64,
}

/// Figures are `total_gpu_memory` from vLLM start-up logs where one is
/// public, else the `nvidia-smi` total in MiB.
pub static GPUS: &[Gpu] = &[
    // "total_gpu_memory (79.19GiB)", H100 80GB HBM3
    // (https://github.com/kubernetes-sigs/gateway-api-inference-extension/pull/550).
    Gpu {
        name: "H100-80GB",
        aliases: &["h100", "h100-sxm", "h100-pcie", "h800"],
        memory_bytes: gib_hundredths(7919),
    },
    // nvidia-smi "143771MiB" on H200 (https://github.com/sgl-project/sglang/issues/3196).
    Gpu {
        name: "H200-141GB",
        aliases: &["h200", "h20-141gb"],
        memory_bytes: 143_771 * MIB,
    },
    // "Total VRAM: 178.35 GB" on B200 (https://github.com/unslothai/unsloth/issues/3411).
    Gpu {
        name: "B200-180GB",
        aliases: &["b200"],
        memory_bytes: gib_hundredths(17835),
    },
    Gpu {
        name: "A100-80GB",
        aliases: &["a100-80g", "a100-sxm4-80gb", "a100-pcie-80gb"],
        memory_bytes: 81_920 * MIB,
    },
    Gpu {
        name: "A100-40GB",
        aliases: &["a100", "a100-40g", "a100-sxm4-40gb"],
        memory_bytes: 40_960 * MIB,
    },
    // "total_gpu_memory (44.42GiB)" on L40S (https://github.com/vllm-project/vllm/issues/15815).
    Gpu {
        name: "L40S",
        aliases: &["l40s-48gb", "l40", "a40", "rtx-6000-ada"],
        memory_bytes: gib_hundredths(4442),
    },
    Gpu {
        name: "L4",
        aliases: &["l4-24gb"],
        memory_bytes: 23_034 * MIB,
    },
    Gpu {
        name: "A10G",
        aliases: &["a10", "a10g-24gb", "a10-24gb"],
        memory_bytes: 23_028 * MIB,
    },
    // "total_gpu_memory=23.58GiB" on RTX 3090 (https://github.com/vllm-project/vllm/issues/10517).
    Gpu {
        name: "RTX-4090",
        aliases: &["4090", "rtx4090", "rtx-3090", "3090", "rtx3090"],
        memory_bytes: gib_hundredths(2358),
    },
    Gpu {
        name: "V100-32GB",
        aliases: &["v100"],
        memory_bytes: 32_768 * MIB,
    },
    Gpu {
        name: "T4",
        aliases: &["t4-16gb"],
        memory_bytes: 15_360 * MIB,
    },
];

fn key(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace(['_', ' '], "-")
}

/// Finds a GPU by name or alias, case-insensitively.
pub fn lookup_gpu(name: &str) -> Result<&'static Gpu, EstimateError> {
    crate::catalog::check_name_len("GPU name", name)?;
    let k = key(name);
    GPUS.iter()
        .find(|g| key(g.name) == k || g.aliases.iter().any(|a| key(a) == k))
        .ok_or_else(|| {
            let mut scored: Vec<(f64, &str)> = GPUS
                .iter()
                .map(|g| (strsim::normalized_levenshtein(&k, &key(g.name)), g.name))
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            EstimateError::UnknownGpu {
                name: name.to_string(),
                closest: scored
                    .into_iter()
                    .take(3)
                    .map(|(_, n)| n.to_string())
                    .collect(),
            }
        })
}

/// Whether a server fits a GPU, and how to run it so it stays in budget.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fit {
    pub gpu_memory_bytes: u64,
    /// The requested tensor-parallel size fits.
    pub fits: bool,
    /// Smallest tensor-parallel size (≥ the requested) that fits; `None`
    /// when none up to 64 does.
    pub gpus_needed: Option<u32>,
    /// The estimate at `gpus_needed` (or at the requested size if none fits).
    pub estimate: Estimate,
    /// Engine flags for that estimate: the memory budget and the limits it
    /// was computed for.
    pub flags: Vec<String>,
    /// vLLM only: flags that fix the KV cache's size instead of a fraction.
    pub alternative_flags: Vec<String>,
}

/// Largest tensor-parallel size tried when looking for one that fits.
pub const MAX_TENSOR_PARALLEL: u32 = 64;

/// Estimates `model` against a GPU of `gpu_memory_bytes`.
pub fn fit(
    model: &ModelSpec,
    params: &ServingParams,
    gpu_memory_bytes: u64,
) -> Result<Fit, EstimateError> {
    let requested = estimate(model, params)?;
    let fits = requested.total_bytes() <= gpu_memory_bytes;
    let mut needed = fits.then_some((params.tensor_parallel_size, requested.clone()));
    if !fits {
        for tp in params.tensor_parallel_size.saturating_add(1)..=MAX_TENSOR_PARALLEL {
            if check_tensor_parallel(&model.arch, tp).is_err() {
                continue;
            }
            let p = ServingParams {
                tensor_parallel_size: tp,
                ..params.clone()
            };
            let e = estimate(model, &p)?;
            if e.total_bytes() <= gpu_memory_bytes {
                needed = Some((tp, e));
                break;
            }
        }
    }
    let gpus_needed = needed.as_ref().map(|(tp, _)| *tp);
    let chosen = needed.map(|(_, e)| e).unwrap_or(requested);
    let (flags, alternative_flags) = engine_flags(&chosen, params, model, gpu_memory_bytes);
    Ok(Fit {
        gpu_memory_bytes,
        fits,
        gpus_needed,
        estimate: chosen,
        flags,
        alternative_flags,
    })
}

fn engine_flags(
    e: &Estimate,
    params: &ServingParams,
    model: &ModelSpec,
    gpu_memory_bytes: u64,
) -> (Vec<String>, Vec<String>) {
    let p = &e.per_gpu;
    let mut common = Vec::new();
    let quant_flag = (e.quantization != model.weights.quantization)
        .then(|| e.quantization.vllm_name())
        .flatten();
    let seqs = params.max_num_seqs;
    // The flag that holds the engine to this estimate on the GPU.
    let memory_flag = e.memory_flag(p.total_bytes, gpu_memory_bytes);
    match e.engine.engine {
        Engine::Vllm => {
            common.push(format!("--tensor-parallel-size {}", e.tensor_parallel_size));
            common.push(format!("--max-model-len {}", e.max_model_len));
            if let Some(s) = seqs {
                common.push(format!("--max-num-seqs {s}"));
            }
            if e.kv_cache_dtype != KvCacheDtype::Auto {
                common.push(format!("--kv-cache-dtype {}", e.kv_cache_dtype.vllm_name()));
            }
            if let Some(q) = quant_flag {
                common.push(format!("--quantization {q}"));
            }
            let mut flags = common.clone();
            flags.push(format!("--gpu-memory-utilization {memory_flag}"));
            let mut alt = common;
            alt.push(format!("--kv-cache-memory-bytes {}", p.kv_cache_bytes));
            (flags, alt)
        }
        Engine::Sglang => {
            common.push(format!("--tp {}", e.tensor_parallel_size));
            common.push(format!("--context-length {}", e.max_model_len));
            common.push(format!("--max-total-tokens {}", e.kv_cache_tokens));
            if let Some(s) = seqs {
                common.push(format!("--max-running-requests {s}"));
            }
            if e.kv_cache_dtype != KvCacheDtype::Auto {
                common.push(format!("--kv-cache-dtype {}", e.kv_cache_dtype.vllm_name()));
            }
            if let Some(q) = quant_flag {
                common.push(format!("--quantization {q}"));
            }
            common.push(format!("--mem-fraction-static {memory_flag}"));
            (common, Vec::new())
        }
        Engine::Tgi => {
            common.push(format!("--num-shard {}", e.tensor_parallel_size));
            common.push(format!("--max-total-tokens {}", e.max_model_len));
            common.push(format!("--max-batch-total-tokens {}", e.kv_cache_tokens));
            common.push(format!("--cuda-memory-fraction {memory_flag}"));
            (common, Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_lookup_by_alias_and_suggestions() {
        assert_eq!(lookup_gpu("h100").unwrap().name, "H100-80GB");
        assert_eq!(lookup_gpu("A100 40GB").unwrap().name, "A100-40GB");
        let err = lookup_gpu("H300").unwrap_err().to_string();
        assert!(err.contains("H300") && err.contains("H100-80GB"), "{err}");
    }
}
