//! The estimate: what one tensor-parallel rank of an LLM server needs.

use serde::Serialize;

use crate::arch::Architecture;
use crate::catalog::{self, ModelSpec};
use crate::dtype::{DType, KvCacheDtype};
use crate::engine::{Engine, EngineProfile, EngineRelease, Logits, MemoryFlag};
use crate::error::EstimateError;
use crate::kv::{LayerSplit, kv_bytes_per_token_per_layer, kv_cache_bytes};
use crate::quant::{Quantization, WeightFormat};
use crate::weights::{WeightBreakdown, weights_per_rank};

const GIB: u64 = 1 << 30;

/// Engines sample at most this many rows per step (vLLM's largest default
/// `max_num_seqs`), which bounds the logits buffer.
const MAX_SAMPLED_ROWS: u64 = 1024;

/// How a server is run. `None` fields take the model's or the engine's default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServingParams {
    /// Compute dtype; defaults to the checkpoint's.
    pub dtype: Option<DType>,
    /// Weight quantization; defaults to the checkpoint's own.
    pub quantization: Option<Quantization>,
    /// GPUs the model is split over.
    pub tensor_parallel_size: u32,
    /// Longest sequence (prompt + output); defaults to the model's maximum.
    pub max_model_len: Option<u64>,
    /// Full-length sequences the KV cache must hold at once. With neither this
    /// nor `kv_cache_tokens`, one: the least an engine starts with.
    pub max_num_seqs: Option<u64>,
    /// KV-cache budget in tokens, instead of `max_num_seqs`.
    pub kv_cache_tokens: Option<u64>,
    pub kv_cache_dtype: KvCacheDtype,
    /// The engine, and its release where named.
    pub engine: EngineRelease,
    /// Tokens per forward pass, which sets the activation peak; defaults to
    /// the engine's.
    pub max_num_batched_tokens: Option<u64>,
}

impl Default for ServingParams {
    fn default() -> Self {
        ServingParams {
            dtype: None,
            quantization: None,
            tensor_parallel_size: 1,
            max_model_len: None,
            max_num_seqs: None,
            kv_cache_tokens: None,
            kv_cache_dtype: KvCacheDtype::Auto,
            engine: EngineRelease::new(Engine::Vllm),
            max_num_batched_tokens: None,
        }
    }
}

/// The serving parameters a user writes as words (a pod's annotations, a
/// workload file, command-line flags). Every front end reads them through
/// [`ServingParams::with_text`], so each accepts the same words and names
/// the field of a bad one in its own terms.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServingText<'a> {
    pub dtype: Option<&'a str>,
    pub quantization: Option<&'a str>,
    pub kv_cache_dtype: Option<&'a str>,
    pub engine: Option<&'a str>,
}

/// A field of [`ServingText`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServingField {
    Dtype,
    Quantization,
    KvCacheDtype,
    Engine,
}

/// A field of [`ServingText`] that does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source}")]
pub struct ServingTextError {
    /// Which field; the front end names it (annotation, YAML key, flag).
    pub field: ServingField,
    #[source]
    pub source: crate::error::ParseError,
}

impl ServingParams {
    /// These parameters with the fields `text` sets read into them.
    pub fn with_text(mut self, text: &ServingText<'_>) -> Result<ServingParams, ServingTextError> {
        fn read<T: std::str::FromStr<Err = crate::error::ParseError>>(
            field: ServingField,
            v: Option<&str>,
        ) -> Result<Option<T>, ServingTextError> {
            v.map(|s| s.trim().parse::<T>())
                .transpose()
                .map_err(|source| ServingTextError { field, source })
        }
        if let Some(d) = read(ServingField::Dtype, text.dtype)? {
            self.dtype = Some(d);
        }
        if let Some(q) = read(ServingField::Quantization, text.quantization)? {
            self.quantization = Some(q);
        }
        if let Some(k) = read(ServingField::KvCacheDtype, text.kv_cache_dtype)? {
            self.kv_cache_dtype = k;
        }
        if let Some(e) = read(ServingField::Engine, text.engine)? {
            self.engine = e;
        }
        Ok(self)
    }
}

/// Bytes one GPU (one tensor-parallel rank) needs, by term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PerGpu {
    pub weights_bytes: u64,
    /// KV bytes one token adds on this rank, over all layers.
    pub kv_cache_bytes_per_token: u64,
    pub kv_cache_bytes: u64,
    /// Peak of the forward pass's temporaries.
    pub activation_bytes: u64,
    /// CUDA context and runtime, NCCL buffers (TP ≥ 2) and CUDA graphs.
    pub overhead_bytes: u64,
    /// The sum of the four terms above.
    pub total_bytes: u64,
}

/// The parts of [`PerGpu::overhead_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Overhead {
    pub runtime_bytes: u64,
    pub collective_bytes: u64,
    pub cuda_graph_bytes: u64,
}

/// A model's memory need per GPU, and the settings it was computed for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Estimate {
    pub model: String,
    pub engine: EngineRelease,
    pub dtype: DType,
    pub quantization: Quantization,
    pub kv_cache_dtype: KvCacheDtype,
    pub tensor_parallel_size: u32,
    pub max_model_len: u64,
    /// Tokens the KV cache holds (sequences × max model length, or the budget).
    pub kv_cache_tokens: u64,
    pub max_num_batched_tokens: u64,
    pub per_gpu: PerGpu,
    pub weights_detail: WeightBreakdown,
    pub overhead_detail: Overhead,
    /// Bytes the whole checkpoint stores, when the weights were sized from
    /// its safetensors headers rather than from the architecture alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_bytes: Option<u64>,
}

impl Estimate {
    /// Bytes each GPU needs.
    pub fn total_bytes(&self) -> u64 {
        self.per_gpu.total_bytes
    }

    /// Whole GiB each GPU needs, rounded up.
    pub fn gpu_memory_gib(&self) -> u64 {
        self.per_gpu.total_bytes.div_ceil(GIB)
    }

    /// The `gpupack.io/gpu-memory` request in 1 GiB units: the resource
    /// counts memory over all the container's GPUs, so this is the per-GPU
    /// need times the GPU count.
    pub fn gpu_memory_request_gib(&self) -> u64 {
        self.gpu_memory_gib()
            .saturating_mul(u64::from(self.tensor_parallel_size))
    }

    /// GPUs the server spans: the `gpupack.io/gpu` request.
    pub fn gpu_count(&self) -> u32 {
        self.tensor_parallel_size
    }

    /// The engine's memory flag for a grant of `grant_bytes` on a GPU of
    /// `gpu_bytes` (at least this estimate's total): the largest value, in
    /// ten-thousandths, that keeps the engine within the grant once it has
    /// allocated what it holds outside the flag ([`MemoryFlag`]).
    pub fn memory_flag(&self, grant_bytes: u64, gpu_bytes: u64) -> Fraction {
        let (outside, _) = self.outside_memory_flag();
        match self.engine.profile().memory_flag {
            MemoryFlag::Budget { .. } => {
                Fraction::floor(grant_bytes.saturating_sub(outside), gpu_bytes)
            }
            MemoryFlag::Headroom => Fraction::floor(gpu_bytes.saturating_sub(outside), gpu_bytes),
        }
    }

    /// Bytes per GPU the engine allocates outside its memory flag, and what
    /// they are, for people.
    pub fn outside_memory_flag(&self) -> (u64, &'static str) {
        let o = &self.overhead_detail;
        match self.engine.profile().memory_flag {
            MemoryFlag::Budget {
                runtime_outside: true,
                cuda_graphs_outside: true,
            } => (
                o.runtime_bytes + o.cuda_graph_bytes,
                "its CUDA context and CUDA graphs",
            ),
            MemoryFlag::Budget {
                runtime_outside: true,
                cuda_graphs_outside: false,
            } => (o.runtime_bytes, "its CUDA context"),
            MemoryFlag::Budget {
                runtime_outside: false,
                cuda_graphs_outside: true,
            } => (o.cuda_graph_bytes, "its CUDA graphs"),
            MemoryFlag::Budget {
                runtime_outside: false,
                cuda_graphs_outside: false,
            } => (0, "nothing"),
            MemoryFlag::Headroom => (
                self.per_gpu.activation_bytes + o.cuda_graph_bytes,
                "its activations and CUDA graphs",
            ),
        }
    }
}

/// A share of a GPU's memory in ten-thousandths, written as the engines'
/// memory flags take it (`0.4521`): finer than hundredths, which on a
/// 141 GiB GPU would move a grant by 1.4 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Fraction(u32);

impl Fraction {
    /// The whole GPU.
    pub const WHOLE: Fraction = Fraction(10_000);

    /// `part / whole`, rounded down, at most [`Fraction::WHOLE`]; nothing
    /// of a GPU without memory.
    pub fn floor(part: u64, whole: u64) -> Fraction {
        if whole == 0 {
            return Fraction(0);
        }
        let t = (u128::from(part) * 10_000 / u128::from(whole)).min(10_000);
        Fraction(t as u32)
    }

    /// From ten-thousandths, at most [`Fraction::WHOLE`].
    pub fn from_ten_thousandths(t: u32) -> Fraction {
        Fraction(t.min(10_000))
    }

    pub fn ten_thousandths(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for Fraction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:04}", self.0 / 10_000, self.0 % 10_000)
    }
}

/// Checks TP against the heads the way vLLM's `verify_with_parallel_config`
/// and the attention layers do.
pub fn check_tensor_parallel(arch: &Architecture, tp: u32) -> Result<(), EstimateError> {
    if tp == 0 {
        return Err(EstimateError::ZeroTensorParallel);
    }
    if !arch.num_attention_heads.is_multiple_of(tp) {
        return Err(EstimateError::TensorParallelHeads {
            tensor_parallel_size: tp,
            attention_heads: arch.num_attention_heads,
        });
    }
    let kv = arch.num_kv_heads;
    let divides = if kv >= tp {
        kv.is_multiple_of(tp)
    } else {
        tp.is_multiple_of(kv)
    };
    if matches!(arch.attention, crate::arch::AttentionKind::Standard) && !divides {
        return Err(EstimateError::TensorParallelKvHeads {
            tensor_parallel_size: tp,
            kv_heads: kv,
        });
    }
    Ok(())
}

/// Peak of the profiling run's temporaries for `tokens` tokens in one step.
///
/// The forward pass holds, per token, residual, normed and attention
/// activations (about 8 × hidden) plus the gate/up/act buffers of the MLP
/// (3 × its per-rank width) in the compute dtype. Fitted to "PyTorch
/// activation peak memory 1.26GiB" for Meta-Llama-3-8B at 8192 batched
/// tokens under vLLM V0 (<https://github.com/vllm-project/vllm/pull/10511>):
/// the formula with FP32 logits for the sampled rows gives 1.28 GiB.
///
/// Engines that compute logits for the whole batch while profiling (vLLM
/// V1) peak at the larger of the forward pass and those logits, plus the
/// fused-MoE kernels' intermediate buffers (`tokens × top-k × (2 × expert
/// width + hidden)`), which stay allocated: vLLM 0.19 measured Qwen3-30B-A3B
/// at 2.68 GiB and DeepSeek-V2-Lite at 1.93 GiB against 2.32 and 1.56 GiB of
/// logits alone (sources at [`crate::engine::VLLM_V1`]); the buffer term
/// gives 2.76 and 2.01 GiB.
fn activation_bytes(
    arch: &Architecture,
    dtype: DType,
    tp: u64,
    tokens: u64,
    max_num_seqs: u64,
    logits: Logits,
) -> Option<u64> {
    let forward = |mlp_width: u64| -> Option<u64> {
        (dtype.bytes() * (8 * arch.hidden_size + 3 * mlp_width)).checked_mul(tokens)
    };
    match logits {
        Logits::SampledRows => {
            let mlp_width = match arch.moe {
                Some(m) => {
                    u64::from(m.experts_per_token) * m.expert_intermediate_size.div_ceil(tp)
                        + m.shared_intermediate_size.div_ceil(tp)
                }
                None => arch.intermediate_size.div_ceil(tp),
            }
            .max(arch.intermediate_size.div_ceil(tp));
            let logits = max_num_seqs.checked_mul(arch.vocab_size)?.checked_mul(4)?;
            forward(mlp_width)?.checked_add(logits)
        }
        Logits::BatchBytesPerEntry(bytes) => {
            let logits = tokens.checked_mul(arch.vocab_size)?.checked_mul(bytes)?;
            let dense = forward(arch.intermediate_size.div_ceil(tp))?;
            let moe = match arch.moe {
                Some(m) => tokens
                    .checked_mul(u64::from(m.experts_per_token))?
                    .checked_mul(2 * m.expert_intermediate_size.div_ceil(tp) + arch.hidden_size)?
                    .checked_mul(dtype.bytes())?,
                None => 0,
            };
            dense.max(logits).checked_add(moe)
        }
    }
}

/// What a multimodal model's profiling run adds to the decoder's peak.
///
/// vLLM V1's `profile_run` (`vllm/v1/worker/gpu_model_runner.py`,
/// <https://github.com/vllm-project/vllm/blob/000fc94b754f66aeb60ef5acf1ea2e94cdc65164/vllm/v1/worker/gpu_model_runner.py>)
/// first runs the encoder on a batch of the largest image the processor
/// accepts, as many as the encoder budget holds (`MultiModalBudget.get_max_items`:
/// `max(max_num_batched_tokens, image tokens) // image tokens`, at least
/// one), keeps the outputs in its encoder cache, and only then profiles the
/// decoder, clearing the cache afterwards. Its peak is therefore the larger
/// of the encoder's run and the decoder's, plus the cache; both peaks are
/// summed with the cache here, which rounds up.
///
/// The encoder's temporaries per patch follow the decoder's (8 × hidden +
/// 3 × MLP width, in the compute dtype) over every patch of the batch;
/// the cache holds each image's language-model tokens at the text width.
/// Returns (encoder run, encoder cache), both 0 for a text-only model.
fn encoder_profile_bytes(
    arch: &Architecture,
    dtype: DType,
    batched_tokens: u64,
) -> Option<(u64, u64)> {
    let Some(v) = arch.vision else {
        return Some((0, 0));
    };
    let tokens = v.max_image_tokens.max(1);
    let images = (batched_tokens / tokens).max(1);
    let per_patch = dtype
        .bytes()
        .checked_mul(8 * v.hidden_size + 3 * v.intermediate_size)?;
    let run = images
        .checked_mul(v.max_image_patches)?
        .checked_mul(per_patch)?;
    let cache = images
        .checked_mul(tokens)?
        .checked_mul(arch.hidden_size)?
        .checked_mul(dtype.bytes())?;
    Some((run, cache))
}

fn overhead(arch: &Architecture, tp: u32, profile: &EngineProfile) -> Overhead {
    Overhead {
        runtime_bytes: profile.runtime_bytes,
        collective_bytes: if tp >= 2 { profile.collective_bytes } else { 0 },
        cuda_graph_bytes: (u64::from(arch.num_layers)
            * arch.hidden_size
            * profile.cuda_graph_bytes_per_layer_hidden
            / u64::from(tp.max(1)))
        .max(profile.cuda_graph_floor_bytes),
    }
}

/// Estimates one rank's memory for `model` served with `params`.
pub fn estimate(model: &ModelSpec, params: &ServingParams) -> Result<Estimate, EstimateError> {
    let arch = &model.arch;
    arch.validate()?;
    let tp = params.tensor_parallel_size;
    check_tensor_parallel(arch, tp)?;

    let max_model_len = params.max_model_len.unwrap_or(arch.max_position_embeddings);
    if max_model_len == 0 {
        return Err(EstimateError::ZeroMaxModelLen);
    }
    if max_model_len > arch.max_position_embeddings {
        return Err(EstimateError::MaxModelLenTooLong {
            requested: max_model_len,
            model_max: arch.max_position_embeddings,
        });
    }
    let kv_cache_tokens = match (params.max_num_seqs, params.kv_cache_tokens) {
        (Some(_), Some(_)) => return Err(EstimateError::ConflictingKvBudget),
        (Some(0), None) => return Err(EstimateError::ZeroSequences),
        (Some(n), None) => n
            .checked_mul(max_model_len)
            .ok_or(EstimateError::Overflow {
                what: "KV-cache tokens",
            })?,
        (None, Some(t)) if t < max_model_len => {
            return Err(EstimateError::KvBudgetTooSmall {
                kv_cache_tokens: t,
                max_model_len,
            });
        }
        (None, Some(t)) => t,
        (None, None) => max_model_len,
    };

    let profile = params.engine.profile();
    let dtype = params.dtype.unwrap_or(model.dtype);
    let weights = match params.quantization {
        Some(q) if q != model.weights.quantization => WeightFormat::new(q),
        _ => model.weights,
    };
    let mut weights_detail = weights_per_rank(arch, dtype, &weights, tp, profile);
    // The checkpoint's own bytes stand for the weights only when the server
    // keeps them as stored: same quantization, same width of the dtype.
    let checkpoint_bytes = model
        .checkpoint
        .as_ref()
        .map(|c| c.total_bytes())
        .filter(|b| *b > 0)
        .filter(|_| weights == model.weights && dtype.bytes() == model.dtype.bytes());
    if let Some(stored) = checkpoint_bytes {
        let whole = weights_per_rank(arch, dtype, &weights, 1, profile);
        weights_detail = scale_to_checkpoint(&weights_detail, &whole, stored);
    }

    let kv_bytes = params.kv_cache_dtype.bytes(dtype);
    let per_layer = kv_bytes_per_token_per_layer(arch, kv_bytes, tp);
    let split = LayerSplit::of(arch, profile.honours_sliding_window);
    let kv_cache = kv_cache_bytes(per_layer, split, kv_cache_tokens, max_model_len).ok_or(
        EstimateError::Overflow {
            what: "KV-cache bytes",
        },
    )?;

    let batched = params
        .max_num_batched_tokens
        .unwrap_or(profile.default_max_num_batched_tokens);
    let seqs = params
        .max_num_seqs
        .unwrap_or(profile.default_max_num_seqs)
        .min(MAX_SAMPLED_ROWS);
    let activation = activation_bytes(arch, dtype, u64::from(tp), batched, seqs, profile.logits)
        .and_then(|decoder| {
            let (encoder_run, encoder_cache) = encoder_profile_bytes(arch, dtype, batched)?;
            decoder.checked_add(encoder_run)?.checked_add(encoder_cache)
        })
        .ok_or(EstimateError::Overflow {
            what: "activation bytes",
        })?;
    let overhead_detail = overhead(arch, tp, profile);
    let overhead_bytes = overhead_detail.runtime_bytes
        + overhead_detail.collective_bytes
        + overhead_detail.cuda_graph_bytes;

    let weights_bytes = weights_detail.total();
    let total_bytes = [weights_bytes, kv_cache, activation, overhead_bytes]
        .into_iter()
        .try_fold(0u64, u64::checked_add)
        .ok_or(EstimateError::Overflow {
            what: "total bytes",
        })?;

    Ok(Estimate {
        model: model.name.clone(),
        engine: params.engine,
        dtype,
        quantization: weights.quantization,
        kv_cache_dtype: params.kv_cache_dtype,
        tensor_parallel_size: tp,
        max_model_len,
        kv_cache_tokens,
        max_num_batched_tokens: batched,
        per_gpu: PerGpu {
            weights_bytes,
            kv_cache_bytes_per_token: per_layer * u64::from(arch.num_layers),
            kv_cache_bytes: kv_cache,
            activation_bytes: activation,
            overhead_bytes,
            total_bytes,
        },
        weights_detail,
        overhead_detail,
        checkpoint_bytes,
    })
}

/// One rank's weights with the architecture's parameter split but the
/// checkpoint's real bytes: each part scaled by stored ÷ computed for the
/// whole model, so replicated and sharded parts keep their proportions.
/// The RoPE cache is not in the checkpoint and stays as computed. A
/// multimodal checkpoint stores its vision tower, and the computed whole
/// counts it too, so a 16-bit tower next to a quantized language model
/// neither inflates nor shrinks the rest; tower layers the engine drops
/// (LLaVA's beyond `vision_feature_layer`) are stored but not computed,
/// which rounds the scale up by their share.
fn scale_to_checkpoint(
    rank: &WeightBreakdown,
    whole: &WeightBreakdown,
    stored: u64,
) -> WeightBreakdown {
    let computed = whole.total() - whole.rotary_cache;
    if computed == 0 {
        return *rank;
    }
    let scale = |b: u64| -> u64 {
        let v = (u128::from(b) * u128::from(stored)).div_ceil(u128::from(computed));
        u64::try_from(v).unwrap_or(u64::MAX)
    };
    WeightBreakdown {
        embedding: scale(rank.embedding),
        lm_head: scale(rank.lm_head),
        attention: scale(rank.attention),
        dense_mlp: scale(rank.dense_mlp),
        experts: scale(rank.experts),
        small: scale(rank.small),
        rotary_cache: rank.rotary_cache,
        vision: scale(rank.vision),
    }
}

/// Looks `model` up in the catalog and estimates it. A name that announces
/// a quantized checkpoint (`-AWQ`, `-FP8`, ...) needs `params.quantization`:
/// the catalog holds the 16-bit original, and without the checkpoint's
/// config nothing says how the re-upload stores its weights.
pub fn estimate_catalog_model(
    model: &str,
    params: &ServingParams,
) -> Result<Estimate, EstimateError> {
    let entry = catalog::lookup(model)?;
    if params.quantization.is_none()
        && let Some(named) = crate::checkpoint::quantization_named_in(model)
        && entry.quantization == Quantization::None
    {
        return Err(EstimateError::QuantizationUnconfirmed {
            model: model.to_string(),
            named,
        });
    }
    estimate(&entry.spec(), params)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_quantized_name_without_its_config_is_never_sized_as_16_bit() {
        let params = ServingParams {
            max_model_len: Some(8192),
            ..ServingParams::default()
        };
        let e = estimate_catalog_model("Qwen/Qwen2.5-72B-Instruct-AWQ", &params).unwrap_err();
        assert!(
            matches!(
                e,
                EstimateError::QuantizationUnconfirmed { named: "AWQ", .. }
            ),
            "{e}"
        );
        let awq = ServingParams {
            quantization: Some("awq".parse().unwrap()),
            ..params.clone()
        };
        let quantized = estimate_catalog_model("Qwen/Qwen2.5-72B-Instruct-AWQ", &awq).unwrap();
        let original = estimate_catalog_model("Qwen/Qwen2.5-72B-Instruct", &params).unwrap();
        assert!(
            quantized.per_gpu.weights_bytes * 3 < original.per_gpu.weights_bytes,
            "{} vs {}",
            quantized.per_gpu.weights_bytes,
            original.per_gpu.weights_bytes
        );
    }

    #[test]
    fn checkpoint_bytes_replace_the_computed_weights_when_stored_as_served() {
        let mut spec = catalog::lookup("Llama-3.1-8B").unwrap().spec();
        let params = ServingParams {
            tensor_parallel_size: 2,
            max_model_len: Some(4096),
            ..ServingParams::default()
        };
        let computed = estimate(&spec, &params).unwrap();
        assert_eq!(computed.checkpoint_bytes, None);
        // A checkpoint 10% larger than the formula (say, extra tensors).
        let whole = weights_per_rank(
            &spec.arch,
            spec.dtype,
            &spec.weights,
            1,
            params.engine.profile(),
        );
        let stored = (whole.total() - whole.rotary_cache) * 11 / 10;
        spec.checkpoint = Some(bf16_checkpoint(stored));
        let measured = estimate(&spec, &params).unwrap();
        assert_eq!(measured.checkpoint_bytes, Some(stored));
        let (m, p) = (
            measured.weights_detail.total() - measured.weights_detail.rotary_cache,
            computed.weights_detail.total() - computed.weights_detail.rotary_cache,
        );
        let ratio = m as f64 / p as f64;
        assert!((ratio - 1.1).abs() < 0.001, "{ratio}");
        // Served as FP8 instead of as stored: the stored bytes no longer apply.
        let fp8 = ServingParams {
            quantization: Some("fp8".parse().unwrap()),
            ..params
        };
        assert_eq!(estimate(&spec, &fp8).unwrap().checkpoint_bytes, None);
    }

    /// A checkpoint of `bytes` of BF16 tensors.
    fn bf16_checkpoint(bytes: u64) -> crate::CheckpointWeights {
        let mut c = crate::CheckpointWeights::default();
        c.by_dtype.insert(
            "BF16".into(),
            crate::DtypeTally {
                tensors: 1,
                elements: bytes / 2,
                bytes,
            },
        );
        c
    }

    #[test]
    fn stored_bytes_that_include_the_vision_tower_leave_the_split_as_computed() {
        let mut spec = catalog::lookup("Mistral-Small-3.2-24B").unwrap().spec();
        let params = ServingParams {
            tensor_parallel_size: 2,
            max_model_len: Some(4096),
            ..ServingParams::default()
        };
        let computed = estimate(&spec, &params).unwrap();
        let whole = weights_per_rank(
            &spec.arch,
            spec.dtype,
            &spec.weights,
            1,
            params.engine.profile(),
        );
        // Every rank holds the whole tower.
        assert_eq!(computed.weights_detail.vision, whole.vision);
        assert!(whole.vision > 0);
        // A checkpoint storing exactly the language model and the tower.
        let stored = whole.total() - whole.rotary_cache;
        spec.checkpoint = Some(bf16_checkpoint(stored));
        let measured = estimate(&spec, &params).unwrap();
        assert_eq!(measured.checkpoint_bytes, Some(stored));
        assert_eq!(measured.weights_detail, computed.weights_detail);
    }

    #[test]
    fn a_vision_tower_adds_its_profiling_run_and_encoder_cache() {
        let multimodal = catalog::lookup("Mistral-Small-3.2-24B").unwrap().spec();
        let mut text_only = multimodal.clone();
        text_only.arch.vision = None;
        let params = ServingParams {
            max_model_len: Some(4096),
            engine: "vllm@0.19".parse().unwrap(),
            ..ServingParams::default()
        };
        let with = estimate(&multimodal, &params).unwrap();
        let without = estimate(&text_only, &params).unwrap();
        assert_eq!(without.weights_detail.vision, 0);
        // 8192 batched tokens hold two 3080-token images: 2 × 12100 Pixtral
        // patches of (8 × 1024 + 3 × 4096) × 2 bytes, and 2 × 3080 cached
        // tokens at the text width 5120.
        let run = 2 * 12_100 * (8 * 1024 + 3 * 4096) * 2;
        let cache = 2 * 3080 * 5120 * 2;
        assert_eq!(
            with.per_gpu.activation_bytes - without.per_gpu.activation_bytes,
            run + cache
        );
        assert_eq!(
            with.per_gpu.kv_cache_bytes_per_token,
            without.per_gpu.kv_cache_bytes_per_token
        );
    }

    #[test]
    fn serving_text_names_the_field_that_does_not_read() {
        let base = ServingParams::default();
        let ok = base
            .clone()
            .with_text(&ServingText {
                dtype: Some("bf16"),
                engine: Some("sglang"),
                ..ServingText::default()
            })
            .unwrap();
        assert_eq!(ok.dtype, Some(DType::Bfloat16));
        assert_eq!(ok.engine, EngineRelease::new(Engine::Sglang));
        let e = base
            .with_text(&ServingText {
                kv_cache_dtype: Some("fp7"),
                ..ServingText::default()
            })
            .unwrap_err();
        assert_eq!(e.field, ServingField::KvCacheDtype);
        assert!(e.to_string().contains("fp7"), "{e}");
    }
}
