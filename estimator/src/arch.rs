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
    /// The vision encoder of a multimodal model; its weights and its
    /// profiling run come on top of the language model's.
    pub vision: Option<VisionEncoder>,
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
            vision: None,
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
        if let Some(vision) = &self.vision {
            vision.validate()?;
        }
        Ok(())
    }
}

/// A multimodal model's vision encoder (a ViT) and the projector that maps
/// its output into the language model, described by what sizes their
/// weights and the encoder's profiling run.
///
/// Engines keep both in the compute dtype whatever the language model's
/// quantization: AWQ, GPTQ and FP8 checkpoints leave the vision tower in
/// 16 bits. Counted whole on every rank: vLLM shards most encoders over
/// TP, but not in its data-parallel encoder mode, and the tower is small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VisionEncoder {
    /// Encoder layers the engine builds (vLLM's LLaVA stops at
    /// `vision_feature_layer`; Mllama adds its global layers).
    pub num_layers: u32,
    pub hidden_size: u64,
    pub intermediate_size: u64,
    pub mlp: MlpKind,
    /// Biases on Q/K/V and the output projection.
    pub attention_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    /// LayerNorm with bias (CLIP, SigLIP, Mllama) instead of RMSNorm.
    pub norm_bias: bool,
    /// Everything outside the layers: patch and position embeddings, class
    /// token, pre- and post-norms, gates.
    pub embedding_params: u64,
    pub projector: VisionProjector,
    /// Patches the encoder runs for the largest image it accepts.
    pub max_image_patches: u64,
    /// Language-model tokens (encoder-cache entries) that image becomes.
    pub max_image_tokens: u64,
}

/// The multimodal projector: one linear map or a two-layer MLP, with the
/// norms, patch merger and learned separators around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VisionProjector {
    /// Width entering the MLP (merged patches or stacked layers widen it).
    pub input: u64,
    /// Hidden width of a two-layer MLP; `None` for a single linear map.
    pub hidden: Option<u64>,
    /// Width leaving: the language model's hidden size.
    pub output: u64,
    pub bias: bool,
    /// Parameters around the MLP: norms, patch merger, image-newline vector.
    pub extra_params: u64,
}

impl VisionProjector {
    /// A two-layer MLP `input → output → output` (LLaVA, Mistral 3).
    pub const fn two_layer(input: u64, output: u64, bias: bool) -> VisionProjector {
        VisionProjector {
            input,
            hidden: Some(output),
            output,
            bias,
            extra_params: 0,
        }
    }

    pub const fn params(&self) -> u64 {
        let (first_out, second) = match self.hidden {
            Some(h) => (h, h * self.output),
            None => (self.output, 0),
        };
        let mut p = self.input * first_out + second + self.extra_params;
        if self.bias {
            p += first_out;
            if self.hidden.is_some() {
                p += self.output;
            }
        }
        p
    }
}

/// Square patches on a side of a square image.
const fn patches_per_side(image_size: u64, patch_size: u64) -> u64 {
    match image_size.checked_div(patch_size) {
        Some(side) => side,
        None => 0,
    }
}

/// LLaVA-NeXT's default `image_grid_pinpoints` (transformers
/// `LlavaNextConfig`), in pixels.
pub const LLAVA_NEXT_DEFAULT_PINPOINTS: &[[u64; 2]] =
    &[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]];

/// Qwen2-VL and Qwen2.5-VL's default `max_pixels` per image (their
/// `preprocessor_config.json`: 12845056 = 16384 × 28 × 28).
pub const QWEN_VL_MAX_PIXELS: u64 = 12_845_056;

/// Encoder patches and language-model tokens assumed for a tower whose
/// image size no field gives: Qwen2.5-VL's largest image, the largest of
/// the families read here.
pub const UNKNOWN_TOWER_IMAGE_TOKENS: u64 = 16_384;

impl VisionEncoder {
    /// Parameters of the tower and its projector.
    pub const fn params(&self) -> u64 {
        let h = self.hidden_size;
        let i = self.intermediate_size;
        let mut attention = 4 * h * h;
        if self.attention_bias {
            attention += 4 * h;
        }
        let mut mlp = self.mlp.matrices() * h * i;
        if self.mlp_bias {
            mlp += (self.mlp.matrices() - 1) * i + h;
        }
        let norms = if self.norm_bias { 4 * h } else { 2 * h };
        (attention + mlp + norms) * self.num_layers as u64
            + self.embedding_params
            + self.projector.params()
    }

    /// The CLIP (`clip_vision_model`) or SigLIP tower of a LLaVA or
    /// LLaVA-NeXT model as vLLM builds it: `layers` of `total_layers`
    /// (the post-norm only when all are used), a two-layer projector from
    /// `projector_input` to the text width, and for LLaVA-NeXT the image
    /// newline vector and the tiles of the largest `pinpoints` grid.
    #[allow(clippy::too_many_arguments)]
    pub const fn llava(
        clip: bool,
        total_layers: u32,
        layers: u32,
        hidden: u64,
        intermediate: u64,
        image_size: u64,
        patch_size: u64,
        projector_input: u64,
        text_hidden: u64,
        projector_bias: bool,
        pinpoints: Option<&[[u64; 2]]>,
    ) -> VisionEncoder {
        let side = patches_per_side(image_size, patch_size);
        let patches = side * side;
        // CLIP: class token, pre-norm, unbiased patch conv; SigLIP: none of these.
        let (tile_patches, mut embedding) = if clip {
            (
                patches + 1,
                3 * patch_size * patch_size * hidden + hidden + (patches + 1) * hidden + 2 * hidden,
            )
        } else {
            (
                patches,
                3 * patch_size * patch_size * hidden + hidden + patches * hidden,
            )
        };
        if layers >= total_layers {
            embedding += 2 * hidden;
        }
        let mut projector =
            VisionProjector::two_layer(projector_input, text_hidden, projector_bias);
        let (mut image_patches, mut image_tokens) = (tile_patches, patches);
        if let Some(pinpoints) = pinpoints {
            projector.extra_params = text_hidden;
            let tile = if image_size == 0 { 1 } else { image_size };
            // The base tile plus the tiles of the grid, and a newline per
            // row of grid features.
            let mut k = 0;
            while k < pinpoints.len() {
                let [w, h] = pinpoints[k];
                let tiles = w.div_ceil(tile) * h.div_ceil(tile);
                let rows = h.div_ceil(tile) * side;
                let tokens = patches + tiles * patches + rows;
                if tokens > image_tokens {
                    image_tokens = tokens;
                    image_patches = (1 + tiles) * tile_patches;
                }
                k += 1;
            }
        }
        VisionEncoder {
            num_layers: layers,
            hidden_size: hidden,
            intermediate_size: intermediate,
            mlp: MlpKind::Plain,
            attention_bias: true,
            mlp_bias: true,
            norm_bias: true,
            embedding_params: embedding,
            projector,
            max_image_patches: image_patches,
            max_image_tokens: image_tokens,
        }
    }

    /// Mistral 3's Pixtral encoder (gated MLP, RMSNorm, no biases) with its
    /// projector: an RMSNorm, the patch merger (`spatial_merge_size`² patches
    /// into one) and a two-layer MLP. The largest image becomes
    /// (side ÷ merge)² tokens plus a break token per row.
    #[allow(clippy::too_many_arguments)]
    pub const fn pixtral(
        layers: u32,
        hidden: u64,
        intermediate: u64,
        image_size: u64,
        patch_size: u64,
        spatial_merge_size: u64,
        text_hidden: u64,
        projector_bias: bool,
    ) -> VisionEncoder {
        let side = patches_per_side(image_size, patch_size);
        let merge = if spatial_merge_size == 0 {
            1
        } else {
            spatial_merge_size
        };
        let mut projector = VisionProjector::two_layer(hidden, text_hidden, projector_bias);
        projector.extra_params = hidden + merge * merge * hidden * hidden;
        let merged_side = side.div_ceil(merge);
        VisionEncoder {
            num_layers: layers,
            hidden_size: hidden,
            intermediate_size: intermediate,
            mlp: MlpKind::Gated,
            attention_bias: false,
            mlp_bias: false,
            norm_bias: false,
            embedding_params: 3 * patch_size * patch_size * hidden + hidden,
            projector,
            max_image_patches: side * side,
            max_image_tokens: merged_side * merged_side + merged_side,
        }
    }

    /// Gemma 3's SigLIP encoder (all layers, post-norm) and its projector: a
    /// soft-embedding RMSNorm and one unbiased matrix to the text width, after
    /// pooling to `tokens_per_image` tokens.
    #[allow(clippy::too_many_arguments)]
    pub const fn gemma3_siglip(
        layers: u32,
        hidden: u64,
        intermediate: u64,
        image_size: u64,
        patch_size: u64,
        tokens_per_image: u64,
        text_hidden: u64,
    ) -> VisionEncoder {
        let side = patches_per_side(image_size, patch_size);
        let patches = side * side;
        VisionEncoder {
            num_layers: layers,
            hidden_size: hidden,
            intermediate_size: intermediate,
            mlp: MlpKind::Plain,
            attention_bias: true,
            mlp_bias: true,
            norm_bias: true,
            embedding_params: 3 * patch_size * patch_size * hidden
                + hidden
                + patches * hidden
                + 2 * hidden,
            projector: VisionProjector {
                input: hidden,
                hidden: None,
                output: text_hidden,
                bias: false,
                extra_params: hidden,
            },
            max_image_patches: patches,
            max_image_tokens: tokens_per_image,
        }
    }

    /// The Qwen2-VL / Qwen2.5-VL encoder (`depth` layers, Conv3d patch
    /// embedding over `temporal_patch_size` frames, no position table) and
    /// its merger: a norm and a two-layer MLP over `spatial_merge_size`²
    /// patches, out to `out_hidden`. Qwen2.5-VL has a gated MLP and
    /// RMSNorm; Qwen2-VL a plain one and LayerNorm. The largest image is
    /// [`QWEN_VL_MAX_PIXELS`].
    #[allow(clippy::too_many_arguments)]
    pub const fn qwen_vl(
        gated: bool,
        depth: u32,
        hidden: u64,
        intermediate: u64,
        patch_size: u64,
        temporal_patch_size: u64,
        spatial_merge_size: u64,
        out_hidden: u64,
    ) -> VisionEncoder {
        let merge = if spatial_merge_size == 0 {
            1
        } else {
            spatial_merge_size
        };
        let merged = merge * merge * hidden;
        let patches = match QWEN_VL_MAX_PIXELS.checked_div(patch_size * patch_size) {
            Some(p) => p,
            None => 0,
        };
        let norm = if gated { hidden } else { 2 * hidden };
        VisionEncoder {
            num_layers: depth,
            hidden_size: hidden,
            intermediate_size: intermediate,
            mlp: if gated {
                MlpKind::Gated
            } else {
                MlpKind::Plain
            },
            attention_bias: true,
            mlp_bias: true,
            norm_bias: !gated,
            embedding_params: 3 * temporal_patch_size * patch_size * patch_size * hidden,
            projector: VisionProjector {
                input: merged,
                hidden: Some(merged),
                output: out_hidden,
                bias: true,
                extra_params: norm,
            },
            max_image_patches: patches,
            max_image_tokens: patches / (merge * merge),
        }
    }

    /// Llama 3.2 Vision's (Mllama) encoder: `layers` local and
    /// `global_layers` gated global layers, tiled position embeddings for
    /// `aspect_ratios` tile layouts of up to `max_tiles` tiles, and one
    /// biased linear map from the stacked `vision_output_dim` features to
    /// the text width. Each tile's patches are padded to a multiple of 8.
    /// Its output feeds the text model's cross-attention layers, not its
    /// token sequence.
    #[allow(clippy::too_many_arguments)]
    pub const fn mllama(
        layers: u32,
        global_layers: u32,
        hidden: u64,
        intermediate: u64,
        image_size: u64,
        patch_size: u64,
        max_tiles: u64,
        aspect_ratios: u64,
        vision_output_dim: u64,
        text_hidden: u64,
    ) -> VisionEncoder {
        let side = patches_per_side(image_size, patch_size);
        let tile_patches = side * side + 1;
        let ratio_ids = aspect_ratios + 1;
        let embedding = 3 * patch_size * patch_size * hidden
            + hidden
            // gated positional embedding: per-patch and per-tile tables
            + 1
            + tile_patches * hidden
            + ratio_ids * max_tiles * tile_patches * hidden
            // pre- and post-tile positional embeddings
            + 2 * (1 + ratio_ids * max_tiles * hidden)
            // layernorm_pre and layernorm_post
            + 4 * hidden
            // attention and MLP gates of the global layers
            + 2 * global_layers as u64;
        VisionEncoder {
            num_layers: layers + global_layers,
            hidden_size: hidden,
            intermediate_size: intermediate,
            mlp: MlpKind::Plain,
            attention_bias: false,
            mlp_bias: true,
            norm_bias: true,
            embedding_params: embedding,
            projector: VisionProjector {
                input: vision_output_dim,
                hidden: None,
                output: text_hidden,
                bias: true,
                extra_params: 0,
            },
            max_image_patches: max_tiles * tile_patches.div_ceil(8) * 8,
            max_image_tokens: max_tiles * tile_patches,
        }
    }

    /// A tower of an architecture not known here, rounded up: gated MLP,
    /// biases and LayerNorms everywhere, a position table, a two-layer
    /// projector, and [`UNKNOWN_TOWER_IMAGE_TOKENS`] tokens per image when
    /// the image size is not given.
    pub const fn generic(
        layers: u32,
        hidden: u64,
        intermediate: u64,
        image_size: Option<u64>,
        patch_size: u64,
        text_hidden: u64,
    ) -> VisionEncoder {
        let patches = match image_size {
            Some(size) if patch_size > 0 && size >= patch_size => {
                let side = size / patch_size;
                side * side + 1
            }
            _ => UNKNOWN_TOWER_IMAGE_TOKENS,
        };
        VisionEncoder {
            num_layers: layers,
            hidden_size: hidden,
            intermediate_size: intermediate,
            mlp: MlpKind::Gated,
            attention_bias: true,
            mlp_bias: true,
            norm_bias: true,
            embedding_params: 3 * patch_size * patch_size * hidden
                + hidden
                + patches * hidden
                + 4 * hidden,
            projector: VisionProjector::two_layer(hidden, text_hidden, true),
            max_image_patches: patches,
            max_image_tokens: patches,
        }
    }

    /// Checks the numbers are usable and physically plausible, which also
    /// keeps the parameter count within `u64`.
    pub fn validate(&self) -> Result<(), EstimateError> {
        let ranges: [(&'static str, u64, u64); 9] = [
            (
                "vision_config.num_hidden_layers",
                u64::from(self.num_layers),
                1_000,
            ),
            ("vision_config.hidden_size", self.hidden_size, 1 << 16),
            (
                "vision_config.intermediate_size",
                self.intermediate_size,
                1 << 18,
            ),
            (
                "vision tower embedding parameters",
                self.embedding_params,
                1 << 36,
            ),
            ("multimodal projector input", self.projector.input, 1 << 20),
            (
                "multimodal projector hidden size",
                self.projector.hidden.unwrap_or(1),
                1 << 20,
            ),
            (
                "multimodal projector output",
                self.projector.output,
                1 << 20,
            ),
            ("vision patches per image", self.max_image_patches, 1 << 22),
            ("image tokens", self.max_image_tokens, 1 << 22),
        ];
        for (field, value, max) in ranges {
            if value == 0 {
                return Err(EstimateError::InvalidArchitecture {
                    field,
                    requirement: "at least 1",
                    value,
                });
            }
            if value > max {
                return Err(EstimateError::InvalidArchitecture {
                    field,
                    requirement: "within physical limits",
                    value,
                });
            }
        }
        if self.projector.extra_params > 1 << 36 {
            return Err(EstimateError::InvalidArchitecture {
                field: "multimodal projector parameters",
                requirement: "within physical limits",
                value: self.projector.extra_params,
            });
        }
        Ok(())
    }
}
