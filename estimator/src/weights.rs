//! Weight memory of one tensor-parallel rank, counted tensor by tensor the
//! way vLLM and SGLang shard a checkpoint.
//!
//! Sharding (vLLM `model_executor/layers/linear.py`, `vocab_parallel_embedding.py`,
//! `fused_moe/layer.py`): Q/K/V, gate/up and expert weights are split by output
//! columns, O and down by input rows, embeddings and LM head by vocabulary rows
//! padded to a multiple of 64. K/V heads are replicated when TP exceeds them.
//! Norms, routers and MLA's low-rank down-projections are replicated.
//! A vision tower is counted whole on every rank (see [`crate::arch::VisionEncoder`]).

use serde::Serialize;

use crate::arch::{Architecture, AttentionKind};
use crate::dtype::DType;
use crate::engine::EngineProfile;
use crate::quant::{Quantization, WeightFormat};

/// Per-rank weight bytes by part of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct WeightBreakdown {
    pub embedding: u64,
    pub lm_head: u64,
    pub attention: u64,
    pub dense_mlp: u64,
    pub experts: u64,
    /// Norms, biases, routers and attention sinks: always in the model dtype.
    pub small: u64,
    /// RoPE cos/sin cache the engines keep next to the weights.
    pub rotary_cache: u64,
    /// A multimodal model's vision encoder and projector: in the compute
    /// dtype whatever the quantization, whole on every rank.
    pub vision: u64,
}

impl WeightBreakdown {
    pub fn total(&self) -> u64 {
        self.embedding
            + self.lm_head
            + self.attention
            + self.dense_mlp
            + self.experts
            + self.small
            + self.rotary_cache
            + self.vision
    }
}

/// Parameter counts of one rank, before bytes are applied.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    embedding: u64,
    lm_head: u64,
    attention: u64,
    dense_mlp: u64,
    unquantized_mlp: u64,
    experts: u64,
    small: u64,
}

fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b.max(1))
}

fn round_up(a: u64, to: u64) -> u64 {
    ceil_div(a, to) * to.max(1)
}

/// KV heads one rank holds: at least one, as heads are replicated when TP
/// exceeds them.
pub fn kv_heads_per_rank(arch: &Architecture, tp: u32) -> u64 {
    u64::from((arch.num_kv_heads / tp.max(1)).max(1))
}

fn counts(arch: &Architecture, format: &WeightFormat, tp: u64, engine: &EngineProfile) -> Counts {
    let h = arch.hidden_size;
    let layers = u64::from(arch.num_layers);
    let heads_rank = u64::from(arch.num_attention_heads) / tp;
    let kv_rank = kv_heads_per_rank(arch, tp as u32);
    let mut c = Counts::default();

    let vocab_rank = ceil_div(round_up(arch.vocab_size, engine.vocab_padding), tp);
    c.embedding = vocab_rank * h;
    if !arch.tie_word_embeddings {
        c.lm_head = vocab_rank * h;
    }

    // Attention.
    let (attn_per_layer, attn_small_per_layer) = match arch.attention {
        AttentionKind::Standard => {
            let d = arch.head_dim;
            let qkv_out = (heads_rank + 2 * kv_rank) * d;
            let linear = h * qkv_out + heads_rank * d * h;
            let mut small = 0;
            if arch.qkv_bias {
                small += qkv_out;
            }
            if arch.o_bias {
                small += h;
            }
            if arch.qk_norm {
                small += 2 * d;
            }
            (linear, small)
        }
        AttentionKind::Mla(m) => {
            let qk = m.qk_nope_head_dim + m.qk_rope_head_dim;
            let q = match m.q_lora_rank {
                Some(r) => h * r + r * heads_rank * qk,
                None => h * heads_rank * qk,
            };
            let kv_a = h * (m.kv_lora_rank + m.qk_rope_head_dim);
            let kv_b = m.kv_lora_rank * heads_rank * (m.qk_nope_head_dim + m.v_head_dim);
            let o = heads_rank * m.v_head_dim * h;
            let norms = m.kv_lora_rank + m.q_lora_rank.unwrap_or(0);
            (q + kv_a + kv_b + o, norms)
        }
    };
    c.attention = attn_per_layer * layers;
    c.small += attn_small_per_layer * layers;

    // MLPs.
    let moe_layers = u64::from(arch.moe_layers());
    let dense_layers = layers - moe_layers;
    let dense_mlp_per_layer = arch.mlp.matrices() * h * ceil_div(arch.intermediate_size, tp);
    let unquantized = u64::from(format.modules.unquantized_mlp_layers).min(dense_layers);
    c.dense_mlp = dense_mlp_per_layer * (dense_layers - unquantized);
    c.unquantized_mlp = dense_mlp_per_layer * unquantized;
    if let Some(m) = arch.moe {
        let mut inter_rank = ceil_div(m.expert_intermediate_size, tp);
        if format.quantization == Quantization::Mxfp4 {
            inter_rank = round_up(inter_rank, engine.mxfp4_intermediate_alignment);
        }
        let experts = u64::from(m.num_experts);
        c.experts = moe_layers * experts * arch.mlp.matrices() * h * inter_rank;
        // Shared experts are an ordinary (quantized) dense MLP.
        c.dense_mlp +=
            moe_layers * arch.mlp.matrices() * h * ceil_div(m.shared_intermediate_size, tp);
        let router = h * experts;
        let bias = if m.expert_bias {
            experts * ((arch.mlp.matrices() - 1) * inter_rank + h)
        } else {
            0
        };
        c.small += moe_layers * (router + bias);
    }

    // Norms: per layer, plus the final one.
    let norm_width = if arch.norm_bias { 2 * h } else { h };
    c.small += u64::from(arch.norms_per_layer) * norm_width * layers + norm_width;
    c
}

/// Bytes of the weights one tensor-parallel rank holds.
pub fn weights_per_rank(
    arch: &Architecture,
    dtype: DType,
    format: &WeightFormat,
    tensor_parallel_size: u32,
    engine: &EngineProfile,
) -> WeightBreakdown {
    let tp = u64::from(tensor_parallel_size.max(1));
    let c = counts(arch, format, tp, engine);
    let model = dtype.bytes();
    let q = format.quantization.bytes_per_param(model);
    let bytes = |params: u64, quantized: bool| -> u64 {
        if quantized {
            (params as f64 * q).ceil() as u64
        } else {
            params * model
        }
    };
    let rotary_dim = match arch.attention {
        AttentionKind::Standard => arch.head_dim * u64::from(arch.rotary_percent) / 100,
        AttentionKind::Mla(m) => m.qk_rope_head_dim,
    };
    WeightBreakdown {
        embedding: bytes(c.embedding, false),
        lm_head: bytes(c.lm_head, false),
        attention: bytes(c.attention, format.modules.attention),
        dense_mlp: bytes(c.dense_mlp, format.modules.dense_mlp) + bytes(c.unquantized_mlp, false),
        experts: bytes(c.experts, format.modules.experts),
        small: bytes(c.small, false),
        rotary_cache: if engine.keeps_rotary_cache {
            arch.max_position_embeddings * rotary_dim * model
        } else {
            0
        },
        vision: arch.vision.map_or(0, |v| v.params() * model),
    }
}
