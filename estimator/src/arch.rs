//! The architecture facts that decide a model's memory.

use serde::Serialize;

use crate::error::EstimateError;

/// A decoder-only transformer, described by the numbers in its `config.json`
/// that change how much memory it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Architecture {
    pub num_layers: u32,
    pub hidden_size: u64,
    pub num_attention_heads: u32,
    /// Equal to `num_attention_heads` for multi-head attention.
    pub num_kv_heads: u32,
    pub head_dim: u64,
    /// Width of the dense MLP (of the dense layers of an MoE model).
    pub intermediate_size: u64,
    pub vocab_size: u64,
    pub max_position_embeddings: u64,
    pub tie_word_embeddings: bool,
    pub mlp: MlpKind,
    pub attention: AttentionKind,
    /// Bias on the Q/K/V projections (Qwen2, gpt-oss).
    pub qkv_bias: bool,
    /// Bias on the attention output projection (gpt-oss).
    pub o_bias: bool,
    /// RMSNorm on queries and keys per head (Qwen3).
    pub qk_norm: bool,
    /// Norm vectors per layer: 2 for most, 4 for Gemma 2 (pre and post norms).
    pub norms_per_layer: u32,
    /// LayerNorm with bias (Falcon) instead of RMSNorm.
    pub norm_bias: bool,
    /// Fraction of the head dim rotated by RoPE, in percent (Phi, NeoX).
    pub rotary_percent: u32,
    pub moe: Option<Moe>,
    pub sliding_window: Option<SlidingWindow>,
}

/// The MLP of a decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MlpKind {
    /// gate, up and down projections (SwiGLU/GeGLU).
    Gated,
    /// up and down projections (Falcon's GELU MLP).
    Plain,
}

impl MlpKind {
    pub const fn matrices(self) -> u64 {
        match self {
            MlpKind::Gated => 3,
            MlpKind::Plain => 2,
        }
    }
}

/// How attention stores its keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AttentionKind {
    /// MHA, GQA and MQA: K and V per KV head.
    Standard,
    /// DeepSeek's multi-head latent attention: one compressed latent per token.
    Mla(Mla),
}

/// Multi-head latent attention dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mla {
    pub q_lora_rank: Option<u64>,
    pub kv_lora_rank: u64,
    pub qk_nope_head_dim: u64,
    pub qk_rope_head_dim: u64,
    pub v_head_dim: u64,
}

/// Mixture-of-experts MLPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Moe {
    pub num_experts: u32,
    pub experts_per_token: u32,
    pub expert_intermediate_size: u64,
    /// Always-active shared experts (DeepSeek), as a total width.
    pub shared_intermediate_size: u64,
    /// Leading layers with a dense MLP instead of experts (DeepSeek `first_k_dense_replace`).
    pub first_dense_layers: u32,
    /// Biases on the expert projections (gpt-oss).
    pub expert_bias: bool,
}

/// Sliding-window attention on some or all layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SlidingWindow {
    /// Tokens a windowed layer attends to, and so at most caches per sequence.
    pub window: u64,
    /// How many of the layers are windowed; the rest attend to everything.
    pub windowed_layers: u32,
}

impl Architecture {
    /// A dense model with full attention and the common defaults, for building
    /// on. The arguments are `config.json`'s core fields in their usual order.
    #[allow(clippy::too_many_arguments)]
    pub const fn dense(
        num_layers: u32,
        hidden_size: u64,
        num_attention_heads: u32,
        num_kv_heads: u32,
        head_dim: u64,
        intermediate_size: u64,
        vocab_size: u64,
        max_position_embeddings: u64,
    ) -> Architecture {
        Architecture {
            num_layers,
            hidden_size,
            num_attention_heads,
            num_kv_heads,
            head_dim,
            intermediate_size,
            vocab_size,
            max_position_embeddings,
            tie_word_embeddings: false,
            mlp: MlpKind::Gated,
            attention: AttentionKind::Standard,
            qkv_bias: false,
            o_bias: false,
            qk_norm: false,
            norms_per_layer: 2,
            norm_bias: false,
            rotary_percent: 100,
            moe: None,
            sliding_window: None,
        }
    }

    /// Layers whose MLP is a mixture of experts.
    pub fn moe_layers(&self) -> u32 {
        match self.moe {
            Some(m) => self.num_layers.saturating_sub(m.first_dense_layers),
            None => 0,
        }
    }

    /// Checks the numbers are usable, so later arithmetic cannot divide by zero.
    pub fn validate(&self) -> Result<(), EstimateError> {
        let positive: [(&'static str, u64); 7] = [
            ("num_hidden_layers", u64::from(self.num_layers)),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", u64::from(self.num_attention_heads)),
            ("num_key_value_heads", u64::from(self.num_kv_heads)),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(EstimateError::InvalidArchitecture {
                    field,
                    requirement: "at least 1",
                    value,
                });
            }
        }
        if self.num_kv_heads > self.num_attention_heads {
            return Err(EstimateError::InvalidArchitecture {
                field: "num_key_value_heads",
                requirement: "at most num_attention_heads",
                value: u64::from(self.num_kv_heads),
            });
        }
        if !self.num_attention_heads.is_multiple_of(self.num_kv_heads) {
            return Err(EstimateError::InvalidArchitecture {
                field: "num_key_value_heads",
                requirement: "a divisor of num_attention_heads",
                value: u64::from(self.num_kv_heads),
            });
        }
        if self.rotary_percent > 100 {
            return Err(EstimateError::InvalidArchitecture {
                field: "partial_rotary_factor",
                requirement: "at most 1.0",
                value: u64::from(self.rotary_percent),
            });
        }
        // Physical sizes beyond these are typos, and keep u64 arithmetic safe.
        let limits: [(&'static str, u64, u64); 5] = [
            ("num_hidden_layers", u64::from(self.num_layers), 10_000),
            ("hidden_size", self.hidden_size, 1 << 20),
            ("head_dim", self.head_dim, 1 << 16),
            ("intermediate_size", self.intermediate_size, 1 << 22),
            ("vocab_size", self.vocab_size, 1 << 24),
        ];
        for (field, value, max) in limits {
            if value > max {
                return Err(EstimateError::InvalidArchitecture {
                    field,
                    requirement: "within physical limits",
                    value,
                });
            }
        }
        if self.intermediate_size == 0 && self.moe.is_none_or(|m| m.first_dense_layers > 0) {
            return Err(EstimateError::InvalidArchitecture {
                field: "intermediate_size",
                requirement: "at least 1 for dense MLP layers",
                value: 0,
            });
        }
        if let Some(m) = self.moe {
            if m.num_experts == 0 || m.experts_per_token == 0 || m.expert_intermediate_size == 0 {
                return Err(EstimateError::InvalidArchitecture {
                    field: "num_experts / num_experts_per_tok / moe_intermediate_size",
                    requirement: "at least 1",
                    value: 0,
                });
            }
            if m.experts_per_token > m.num_experts {
                return Err(EstimateError::InvalidArchitecture {
                    field: "num_experts_per_tok",
                    requirement: "at most the number of experts",
                    value: u64::from(m.experts_per_token),
                });
            }
            if m.first_dense_layers > self.num_layers || m.num_experts > 4096 {
                return Err(EstimateError::InvalidArchitecture {
                    field: "first_k_dense_replace / num_experts",
                    requirement: "within the number of layers / at most 4096",
                    value: u64::from(m.first_dense_layers.max(m.num_experts)),
                });
            }
            if m.expert_intermediate_size > 1 << 22 || m.shared_intermediate_size > 1 << 22 {
                return Err(EstimateError::InvalidArchitecture {
                    field: "moe_intermediate_size",
                    requirement: "within physical limits",
                    value: m.expert_intermediate_size.max(m.shared_intermediate_size),
                });
            }
        }
        if let AttentionKind::Mla(mla) = self.attention {
            if mla.kv_lora_rank == 0 || mla.v_head_dim == 0 {
                return Err(EstimateError::InvalidArchitecture {
                    field: "kv_lora_rank / v_head_dim",
                    requirement: "at least 1",
                    value: 0,
                });
            }
            let dims = [
                mla.q_lora_rank.unwrap_or(0),
                mla.kv_lora_rank,
                mla.qk_nope_head_dim,
                mla.qk_rope_head_dim,
                mla.v_head_dim,
            ];
            if let Some(&big) = dims.iter().find(|d| **d > 1 << 16) {
                return Err(EstimateError::InvalidArchitecture {
                    field: "MLA dimensions",
                    requirement: "within physical limits",
                    value: big,
                });
            }
        }
        if let Some(sw) = self.sliding_window
            && (sw.window == 0 || sw.windowed_layers > self.num_layers)
        {
            return Err(EstimateError::InvalidArchitecture {
                field: "sliding_window",
                requirement: "at least 1 token, on at most every layer",
                value: sw.window,
            });
        }
        Ok(())
    }
}
