//! Serving engines and the memory each adds beyond weights and KV cache.
//!
//! Every figure is calibrated from a public start-up log, cited next to it.
//! vLLM and SGLang print sizes in "GB" or "GiB" but both divide by 2^30.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::error::ParseError;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

const fn gib_hundredths(h: u64) -> u64 {
    h * (1 << 30) / 100
}

/// An LLM serving engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    #[default]
    Vllm,
    Sglang,
    Tgi,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Vllm => "vllm",
            Engine::Sglang => "sglang",
            Engine::Tgi => "tgi",
        })
    }
}

impl FromStr for Engine {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "vllm" => Ok(Engine::Vllm),
            "sglang" => Ok(Engine::Sglang),
            "tgi" | "text-generation-inference" => Ok(Engine::Tgi),
            _ => Err(ParseError::new("engine", s, "vllm, sglang, tgi")),
        }
    }
}

/// The engine-specific figures the estimate uses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EngineProfile {
    /// Vocabulary rows are padded to a multiple of this before TP sharding
    /// (vLLM `DEFAULT_VOCAB_PADDING_SIZE = 64`; SGLang copies vLLM's layer).
    pub vocab_padding: u64,
    /// Per-rank expert width of MXFP4 MoE weights is padded to this.
    pub mxfp4_intermediate_alignment: u64,
    /// The RoPE cos/sin cache (`max_position × rotary_dim` in the model dtype)
    /// is allocated with the weights and counted in "model loading took".
    pub keeps_rotary_cache: bool,
    /// Windowed layers cache only their window (vLLM's hybrid KV-cache
    /// manager, SGLang's SWA pool); TGI caches full length on every layer.
    pub honours_sliding_window: bool,
    /// CUDA context, cuBLAS workspaces and allocator reserve on every rank.
    pub runtime_bytes: u64,
    /// NCCL and custom all-reduce buffers, added on every rank when TP ≥ 2.
    pub collective_bytes: u64,
    /// CUDA-graph memory per unit of `layers × hidden_size / TP`.
    pub cuda_graph_bytes_per_layer_hidden: u64,
    /// Tokens in one forward pass when the user sets none (the activation peak
    /// is profiled at this size).
    pub default_max_num_batched_tokens: u64,
    /// Sequences in one decode step when the user sets none.
    pub default_max_num_seqs: u64,
}

/// vLLM. Calibration:
/// - runtime 1.79 GiB: "non_torch_memory 1.79GiB" for Meta-Llama-3-8B TP 1 on
///   an H100 (<https://github.com/vllm-project/vllm/pull/10511>).
/// - collectives 1.79 GiB: the same log shows 3.58 GiB at TP 2; the difference
///   is NCCL and custom all-reduce buffers.
/// - CUDA graphs: "Graph capturing finished in 14 secs, took 0.21 GiB" for
///   Llama-3.2-1B TP 1 (16 layers × 2048) (<https://github.com/vllm-project/vllm/pull/11349>)
///   gives 0.21 GiB / 32768 ≈ 6.9 KB per layer·hidden; captured buffers are
///   per-rank activations, so the figure divides by TP. Check: Llama-3-70B AWQ
///   TP 8 "Cudagraph took 0.6172 GB" (<https://github.com/vllm-project/vllm/pull/5515>),
///   where the rate gives 80 × 8192 × 6880 / 8 = 0.53 GiB.
/// - MXFP4 alignment 256: gpt-oss-120b TP 1 "Model loading took 64.38 GiB"
///   (<https://github.com/vllm-project/vllm/issues/33155>) matches experts
///   padded from 2880 to 3072 (64.5 GiB) and not unpadded ones (60.7 GiB).
pub const VLLM: EngineProfile = EngineProfile {
    vocab_padding: 64,
    mxfp4_intermediate_alignment: 256,
    keeps_rotary_cache: true,
    honours_sliding_window: true,
    runtime_bytes: gib_hundredths(179),
    collective_bytes: gib_hundredths(179),
    cuda_graph_bytes_per_layer_hidden: 6_880,
    default_max_num_batched_tokens: 8192,
    default_max_num_seqs: 256,
};

/// SGLang. Calibration (<https://github.com/sgl-project/sglang/pull/7873>,
/// Meta-Llama-3-8B-Instruct TP 2 on H200): "before tp worker initialize:
/// 1.6GB", "torch.init_distributed(nccl): 1 GB", "cuda graph 0.6 GB" (the
/// vLLM rate above gives 0.84 GiB for that model, kept as the upper figure).
/// Chunked prefill defaults to 8192 tokens on large GPUs.
pub const SGLANG: EngineProfile = EngineProfile {
    vocab_padding: 64,
    mxfp4_intermediate_alignment: 256,
    keeps_rotary_cache: true,
    honours_sliding_window: true,
    runtime_bytes: gib_hundredths(160),
    collective_bytes: gib_hundredths(100),
    cuda_graph_bytes_per_layer_hidden: 6_880,
    default_max_num_batched_tokens: 8192,
    default_max_num_seqs: 256,
};

/// TGI shards like vLLM (its flash layers pad vocabularies the same way) but
/// allocates its paged KV cache for full length on every layer. No public
/// TGI measurement separates runtime from activations, so vLLM's figures stand.
pub const TGI: EngineProfile = EngineProfile {
    honours_sliding_window: false,
    mxfp4_intermediate_alignment: 1,
    ..VLLM
};

impl Engine {
    pub const fn profile(self) -> &'static EngineProfile {
        match self {
            Engine::Vllm => &VLLM,
            Engine::Sglang => &SGLANG,
            Engine::Tgi => &TGI,
        }
    }
}

/// Bytes in GiB, for display.
pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / GIB
}
