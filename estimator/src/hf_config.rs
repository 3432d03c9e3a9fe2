//! Reading a Hugging Face `config.json` (the text; the caller reads the file).

use serde_json::{Map, Value};

use crate::arch::{
    Architecture, AttentionKind, LLAVA_NEXT_DEFAULT_PINPOINTS, Mla, MlpKind, Moe, SlidingWindow,
    VisionEncoder,
};
use crate::catalog::ModelSpec;
use crate::dtype::DType;
use crate::error::EstimateError;
use crate::quant::{DEFAULT_GROUP_SIZE, Quantization, QuantizedModules, WeightFormat};

fn bad(msg: impl Into<String>) -> EstimateError {
    EstimateError::HfConfig(msg.into())
}

struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn value(&self, keys: &[&str]) -> Option<&Value> {
        keys.iter()
            .find_map(|k| self.0.get(*k).filter(|v| !v.is_null()))
    }

    fn opt_u64(&self, keys: &[&str]) -> Result<Option<u64>, EstimateError> {
        match self.value(keys) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                bad(format!(
                    "{} must be a non-negative integer, got {v}",
                    keys[0]
                ))
            }),
        }
    }

    fn u64(&self, keys: &[&str]) -> Result<u64, EstimateError> {
        self.opt_u64(keys)?
            .ok_or_else(|| bad(format!("missing field {}", keys.join(" / "))))
    }

    fn u32(&self, keys: &[&str]) -> Result<u32, EstimateError> {
        let v = self.u64(keys)?;
        u32::try_from(v).map_err(|_| bad(format!("{} is too large: {v}", keys[0])))
    }

    fn opt_u32(&self, keys: &[&str]) -> Result<Option<u32>, EstimateError> {
        match self.opt_u64(keys)? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| bad(format!("{} is too large: {v}", keys[0]))),
        }
    }

    fn bool(&self, keys: &[&str]) -> Result<Option<bool>, EstimateError> {
        match self.value(keys) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| bad(format!("{} must be true or false, got {v}", keys[0]))),
        }
    }

    fn str(&self, keys: &[&str]) -> Option<&str> {
        self.value(keys).and_then(Value::as_str)
    }
}

/// Parses a `config.json`; `name` labels the result (e.g. the file's folder).
///
/// Understands the Llama, Mistral, Mixtral, Qwen2/2.5/3 (dense and MoE),
/// Gemma 2 and 3, Phi-3, DeepSeek V2/V3, Falcon and gpt-oss layouts, the
/// vision towers of LLaVA, LLaVA-NeXT, Mistral 3, Gemma 3, Qwen2-VL,
/// Qwen2.5-VL and Mllama (and any other `vision_config`, rounded up), and
/// the `quantization_config` of FP8, AWQ, GPTQ, compressed-tensors,
/// fbgemm-FP8 and MXFP4 checkpoints.
pub fn parse_hf_config(name: &str, json: &str) -> Result<ModelSpec, EstimateError> {
    let root: Value = serde_json::from_str(json).map_err(|e| bad(format!("not JSON: {e}")))?;
    let root = root
        .as_object()
        .ok_or_else(|| bad("top level must be an object"))?;
    // Multimodal wrappers keep the language model under text_config, which
    // may leave out the fields its model type defaults.
    let completed_text = root
        .get("text_config")
        .and_then(Value::as_object)
        .map(with_text_defaults);
    let text = match &completed_text {
        Some(t) if t.contains_key("num_hidden_layers") => t,
        _ => root,
    };
    let f = Fields(text);
    let wrapper_type = Fields(root)
        .str(&["model_type"])
        .unwrap_or("")
        .to_ascii_lowercase();
    // The language model's own type decides its defaults; a wrapper without
    // a nested text model (Qwen2.5-VL) names it at the top.
    let model_type = if std::ptr::eq(text, root) {
        wrapper_type.clone()
    } else {
        f.str(&["model_type"])
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| wrapper_type.clone())
    };

    let layers = f.u32(&["num_hidden_layers", "n_layer", "num_layers"])?;
    let hidden = f.u64(&["hidden_size", "n_embd", "d_model"])?;
    let heads = f.u32(&["num_attention_heads", "n_head"])?;
    let kv_heads = match f.opt_u32(&["num_key_value_heads", "n_head_kv", "num_kv_heads"])? {
        Some(kv) => kv,
        None if model_type == "falcon" && f.bool(&["multi_query"])? == Some(true) => 1,
        None => heads,
    };
    if heads == 0 {
        return Err(bad("num_attention_heads must be at least 1"));
    }
    let head_dim = f
        .opt_u64(&["head_dim"])?
        .unwrap_or(hidden / u64::from(heads));
    let is_falcon = model_type == "falcon" || model_type == "refinedweb";
    let intermediate = match f.opt_u64(&["intermediate_size", "ffn_hidden_size", "n_inner"])? {
        Some(i) => i,
        None if is_falcon => 4 * hidden,
        None => 0,
    };
    let vocab = f.u64(&["vocab_size"])?;
    let max_pos = match f.opt_u64(&["max_position_embeddings", "n_positions", "max_seq_len"])? {
        Some(m) => m,
        // Falcon's configs carry no length; it was trained on 2048.
        None if is_falcon => 2048,
        None => return Err(bad("missing field max_position_embeddings")),
    };
    let tie_default = matches!(
        model_type.as_str(),
        "gemma" | "gemma2" | "gemma3_text" | "falcon"
    );
    let tie = f.bool(&["tie_word_embeddings"])?.unwrap_or(tie_default);

    let mut arch = Architecture::dense(
        layers,
        hidden,
        heads,
        kv_heads,
        head_dim,
        intermediate,
        vocab,
        max_pos,
    );
    arch.tie_word_embeddings = tie;
    arch.qkv_bias = f
        .bool(&["attention_bias", "qkv_bias", "bias"])?
        .unwrap_or(matches!(
            model_type.as_str(),
            "qwen2" | "qwen2_moe" | "qwen2_vl" | "qwen2_5_vl" | "qwen2_vl_text" | "qwen2_5_vl_text"
        ));
    arch.o_bias = model_type == "gpt_oss";
    arch.qk_norm = matches!(model_type.as_str(), "qwen3" | "qwen3_moe");
    if model_type.starts_with("gemma2") || model_type.starts_with("gemma3") {
        arch.norms_per_layer = 4;
    }
    if is_falcon {
        arch.mlp = MlpKind::Plain;
        arch.norm_bias = true;
    }
    if let Some(v) = f.value(&["partial_rotary_factor"]) {
        let factor = v
            .as_f64()
            .filter(|x| (0.0..=1.0).contains(x))
            .ok_or_else(|| bad(format!("partial_rotary_factor must be in [0, 1], got {v}")))?;
        arch.rotary_percent = (factor * 100.0).round() as u32;
    }

    // Mixture of experts.
    let experts = f.opt_u32(&["num_local_experts", "num_experts", "n_routed_experts"])?;
    if let Some(experts) = experts.filter(|e| *e > 0) {
        let active = f.u32(&["num_experts_per_tok", "experts_per_token", "moe_top_k"])?;
        let expert_inter = f
            .opt_u64(&["moe_intermediate_size"])?
            .unwrap_or(intermediate);
        let shared = match f.opt_u64(&["n_shared_experts"])? {
            Some(n) => n * expert_inter,
            None => f
                .opt_u64(&["shared_expert_intermediate_size"])?
                .unwrap_or(0),
        };
        arch.moe = Some(Moe {
            num_experts: experts,
            experts_per_token: active,
            expert_intermediate_size: expert_inter,
            shared_intermediate_size: shared,
            first_dense_layers: f.opt_u32(&["first_k_dense_replace"])?.unwrap_or(0),
            expert_bias: model_type == "gpt_oss",
        });
    }

    // Multi-head latent attention.
    if let Some(kv_lora_rank) = f.opt_u64(&["kv_lora_rank"])? {
        arch.attention = AttentionKind::Mla(Mla {
            q_lora_rank: f.opt_u64(&["q_lora_rank"])?,
            kv_lora_rank,
            qk_nope_head_dim: f.u64(&["qk_nope_head_dim"])?,
            qk_rope_head_dim: f.u64(&["qk_rope_head_dim"])?,
            v_head_dim: f.u64(&["v_head_dim"])?,
        });
    }

    arch.sliding_window = sliding_window(&f, &model_type, layers)?;
    // The language model first, so the projector's width is a sane one.
    arch.validate()?;
    arch.vision = vision_encoder(root, &wrapper_type, hidden)?;
    arch.validate()?;

    let dtype = match Fields(root)
        .str(&["torch_dtype", "dtype"])
        .or(f.str(&["torch_dtype", "dtype"]))
    {
        Some(s) => s.parse::<DType>()?,
        None => DType::Bfloat16,
    };
    let weights = match root.get("quantization_config") {
        Some(q) if !q.is_null() => quantization(q, layers)?,
        _ => WeightFormat::default(),
    };
    Ok(ModelSpec {
        name: name.to_string(),
        arch,
        dtype,
        weights,
        checkpoint: None,
    })
}

fn sliding_window(
    f: &Fields<'_>,
    model_type: &str,
    layers: u32,
) -> Result<Option<SlidingWindow>, EstimateError> {
    let Some(window) = f.opt_u64(&["sliding_window"])? else {
        return Ok(None);
    };
    if f.bool(&["use_sliding_window"])? == Some(false) || window == 0 {
        return Ok(None);
    }
    // Phi-3 configs carry a window the engines do not apply to its 4k models.
    if model_type.starts_with("phi3") {
        return Ok(None);
    }
    let windowed = if let Some(types) = f.value(&["layer_types"]).and_then(Value::as_array) {
        types
            .iter()
            .filter(|t| t.as_str() == Some("sliding_attention"))
            .count() as u32
    } else if model_type.starts_with("gemma2") {
        layers / 2
    } else if model_type.starts_with("gemma3") {
        // Every `sliding_window_pattern`-th layer (default 6) is global.
        let pattern = f.opt_u32(&["sliding_window_pattern"])?.unwrap_or(6).max(1);
        layers - layers / pattern
    } else if let Some(max_window_layers) = f.opt_u32(&["max_window_layers"])? {
        // Qwen2: layers from max_window_layers on use the window.
        layers.saturating_sub(max_window_layers)
    } else {
        layers
    };
    Ok((windowed > 0).then_some(SlidingWindow {
        window,
        windowed_layers: windowed.min(layers),
    }))
}

/// A nested `text_config` with the defaults of its model type filled in
/// where the file leaves them out, as transformers' config classes do
/// (LLaVA-NeXT's names only what differs from `MistralConfig`, Gemma 3's
/// omits `vocab_size`). Fields present, even as null, are kept.
fn with_text_defaults(text: &Map<String, Value>) -> Map<String, Value> {
    let model_type = text.get("model_type").and_then(Value::as_str).unwrap_or("");
    // transformers MistralConfig, LlamaConfig and Gemma3TextConfig defaults.
    let defaults: &[(&str, u64)] = match model_type {
        "mistral" => &[
            ("vocab_size", 32000),
            ("hidden_size", 4096),
            ("intermediate_size", 14336),
            ("num_hidden_layers", 32),
            ("num_attention_heads", 32),
            ("num_key_value_heads", 8),
            ("max_position_embeddings", 131_072),
            ("sliding_window", 4096),
        ],
        "llama" => &[
            ("vocab_size", 32000),
            ("hidden_size", 4096),
            ("intermediate_size", 11008),
            ("num_hidden_layers", 32),
            ("num_attention_heads", 32),
            ("max_position_embeddings", 2048),
        ],
        "gemma3_text" => &[
            ("vocab_size", 262_208),
            ("hidden_size", 2304),
            ("intermediate_size", 9216),
            ("num_hidden_layers", 26),
            ("num_attention_heads", 8),
            ("num_key_value_heads", 4),
            ("head_dim", 256),
            ("max_position_embeddings", 131_072),
            ("sliding_window", 4096),
        ],
        _ => &[],
    };
    let mut out = text.clone();
    for (key, value) in defaults {
        out.entry(*key).or_insert_with(|| Value::from(*value));
    }
    out
}

/// Bounds on vision fields, well beyond any real tower, that keep the
/// tower arithmetic within `u64`.
const MAX_VISION_LAYERS: u64 = 1_000;
const MAX_IMAGE_SIZE: u64 = 1 << 15;
const MAX_PATCH_SIZE: u64 = 1 << 10;
const MAX_VISION_WIDTH: u64 = 1 << 16;
const MAX_VISION_MLP: u64 = 1 << 18;
const MAX_PROJECTOR_WIDTH: u64 = 1 << 20;
const MAX_SMALL_FACTOR: u64 = 64;
const MAX_IMAGE_TOKENS: u64 = 1 << 22;

/// A vision field (or `default` where absent), between 1 and `max`.
fn vision_u64(
    f: &Fields<'_>,
    keys: &[&str],
    default: Option<u64>,
    max: u64,
) -> Result<u64, EstimateError> {
    let value = match (f.opt_u64(keys)?, default) {
        (Some(v), _) => v,
        (None, Some(d)) => d,
        (None, None) => {
            return Err(bad(format!(
                "missing field vision_config.{}",
                keys.join(" / ")
            )));
        }
    };
    if value == 0 || value > max {
        return Err(bad(format!(
            "{} must be between 1 and {max}, got {value}",
            keys[0]
        )));
    }
    Ok(value)
}

/// [`vision_u64`] for a layer count.
fn vision_layers(
    f: &Fields<'_>,
    keys: &[&str],
    default: Option<u64>,
) -> Result<u32, EstimateError> {
    let layers = vision_u64(f, keys, default, MAX_VISION_LAYERS)?;
    u32::try_from(layers).map_err(|_| bad(format!("{} is too large: {layers}", keys[0])))
}

/// `vision_feature_layer` as vLLM reads it for LLaVA-like models: the
/// encoder layers it builds (negative indices count from the end) and how
/// many layers' features the projector stacks.
fn feature_layers(top: &Fields<'_>, total: u32, default: i64) -> Result<(u32, u64), EstimateError> {
    let index = |i: i64| -> u32 {
        let built = if i < 0 { i64::from(total) + i + 1 } else { i };
        u32::try_from(built.clamp(1, i64::from(total))).unwrap_or(total)
    };
    match top.value(&["vision_feature_layer"]) {
        None => Ok((index(default), 1)),
        Some(Value::Array(list)) => {
            if list.is_empty() || list.len() as u64 > MAX_SMALL_FACTOR {
                return Err(bad(format!(
                    "vision_feature_layer must list 1 to {MAX_SMALL_FACTOR} layers"
                )));
            }
            let mut deepest = 1;
            for v in list {
                let i = v.as_i64().ok_or_else(|| {
                    bad(format!("vision_feature_layer must hold integers, got {v}"))
                })?;
                deepest = deepest.max(index(i));
            }
            Ok((deepest, list.len() as u64))
        }
        Some(v) => v
            .as_i64()
            .map(|i| (index(i), 1))
            .ok_or_else(|| bad(format!("vision_feature_layer must be an integer, got {v}"))),
    }
}

/// The vision tower of a multimodal config (`vision_config`), by family:
/// LLaVA and LLaVA-NeXT (CLIP, SigLIP or Pixtral towers), Mistral 3
/// (Pixtral with patch merger), Gemma 3 (SigLIP), Qwen2-VL and Qwen2.5-VL,
/// and Mllama. Any other `vision_config` is counted from its generic
/// fields, rounded up, rather than ignored. Defaults are transformers'
/// config-class defaults of each family.
fn vision_encoder(
    root: &Map<String, Value>,
    wrapper_type: &str,
    text_hidden: u64,
) -> Result<Option<VisionEncoder>, EstimateError> {
    let Some(vision) = root.get("vision_config").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let vision = vision
        .as_object()
        .ok_or_else(|| bad("vision_config must be an object"))?;
    let top = Fields(root);
    let v = Fields(vision);
    let vision_type = v.str(&["model_type"]).unwrap_or("").to_ascii_lowercase();
    let width =
        |keys: &[&str], default: Option<u64>| vision_u64(&v, keys, default, MAX_VISION_WIDTH);
    let mlp = |keys: &[&str], default: Option<u64>| vision_u64(&v, keys, default, MAX_VISION_MLP);
    let image = |default: Option<u64>| vision_u64(&v, &["image_size"], default, MAX_IMAGE_SIZE);
    let patch = |default: Option<u64>| {
        vision_u64(
            &v,
            &["patch_size", "spatial_patch_size"],
            default,
            MAX_PATCH_SIZE,
        )
    };
    let small = |f: &Fields<'_>, keys: &[&str], default: u64| {
        vision_u64(f, keys, Some(default), MAX_SMALL_FACTOR)
    };
    let encoder = match wrapper_type {
        "llava" | "llava_next" if vision_type != "pixtral" => {
            let clip = vision_type != "siglip_vision_model";
            // CLIPVisionConfig defaults.
            let total = vision_layers(&v, &["num_hidden_layers"], Some(12))?;
            let hidden = width(&["hidden_size"], Some(768))?;
            let (built, stacked) = feature_layers(&top, total, -2)?;
            let pinpoints = if wrapper_type == "llava_next" {
                Some(pinpoints(&top)?)
            } else {
                None
            };
            VisionEncoder::llava(
                clip,
                total,
                built,
                hidden,
                mlp(&["intermediate_size"], Some(3072))?,
                image(Some(224))?,
                patch(Some(32))?,
                hidden * stacked,
                text_hidden,
                top.bool(&["multimodal_projector_bias"])?.unwrap_or(true),
                pinpoints.as_deref(),
            )
        }
        "llava" | "mistral3" | "pixtral" => {
            // PixtralVisionConfig defaults.
            let total = vision_layers(&v, &["num_hidden_layers"], Some(24))?;
            let (built, _) = feature_layers(&top, total, -1)?;
            let mut encoder = VisionEncoder::pixtral(
                built,
                width(&["hidden_size"], Some(1024))?,
                mlp(&["intermediate_size"], Some(4096))?,
                image(Some(1024))?,
                patch(Some(16))?,
                small(&top, &["spatial_merge_size"], 2)?,
                text_hidden,
                top.bool(&["multimodal_projector_bias"])?.unwrap_or(true),
            );
            if wrapper_type != "mistral3" {
                // Pixtral-12B in LLaVA form: no norm, no patch merger.
                encoder.projector.extra_params = 0;
                let side = encoder.max_image_patches.isqrt();
                encoder.max_image_tokens = encoder.max_image_patches + side;
            }
            encoder
        }
        "gemma3" => VisionEncoder::gemma3_siglip(
            vision_layers(&v, &["num_hidden_layers"], Some(27))?,
            width(&["hidden_size"], Some(1152))?,
            mlp(&["intermediate_size"], Some(4304))?,
            image(Some(896))?,
            patch(Some(14))?,
            vision_u64(&top, &["mm_tokens_per_image"], Some(256), MAX_IMAGE_TOKENS)?,
            text_hidden,
        ),
        "qwen2_5_vl" | "qwen2_vl" => {
            let gated = wrapper_type == "qwen2_5_vl";
            // Qwen2-VL names the tower width embed_dim and uses hidden_size
            // for the merger's output.
            let (hidden, intermediate, out) = if gated {
                (
                    width(&["hidden_size"], Some(1280))?,
                    mlp(&["intermediate_size"], Some(3420))?,
                    vision_u64(
                        &v,
                        &["out_hidden_size"],
                        Some(text_hidden),
                        MAX_PROJECTOR_WIDTH,
                    )?,
                )
            } else {
                let hidden = width(&["embed_dim"], Some(1280))?;
                (
                    hidden,
                    hidden * small(&v, &["mlp_ratio"], 4)?,
                    vision_u64(&v, &["hidden_size"], Some(text_hidden), MAX_PROJECTOR_WIDTH)?,
                )
            };
            VisionEncoder::qwen_vl(
                gated,
                vision_layers(&v, &["depth", "num_hidden_layers"], Some(32))?,
                hidden,
                intermediate,
                patch(Some(14))?,
                small(&v, &["temporal_patch_size"], 2)?,
                small(&v, &["spatial_merge_size"], 2)?,
                out,
            )
        }
        "mllama" => {
            let ratios = match v.value(&["supported_aspect_ratios"]) {
                Some(Value::Array(list)) => list.len() as u64,
                _ => 8,
            }
            .clamp(1, MAX_SMALL_FACTOR);
            VisionEncoder::mllama(
                vision_layers(&v, &["num_hidden_layers"], Some(32))?,
                vision_layers(&v, &["num_global_layers"], Some(8))?,
                width(&["hidden_size"], Some(1280))?,
                mlp(&["intermediate_size"], Some(5120))?,
                image(Some(560))?,
                patch(Some(14))?,
                small(&v, &["max_num_tiles"], 4)?,
                ratios,
                vision_u64(&v, &["vision_output_dim"], Some(7680), MAX_PROJECTOR_WIDTH)?,
                text_hidden,
            )
        }
        _ => {
            let hidden = width(&["hidden_size", "embed_dim", "width"], None)?;
            let intermediate = match v.opt_u64(&["intermediate_size"])? {
                Some(_) => mlp(&["intermediate_size"], None)?,
                None => hidden * small(&v, &["mlp_ratio"], 4)?,
            };
            let image_size = match v.opt_u64(&["image_size"])? {
                Some(_) => Some(image(None)?),
                None => None,
            };
            VisionEncoder::generic(
                vision_layers(&v, &["num_hidden_layers", "depth", "num_layers"], None)?,
                hidden,
                intermediate,
                image_size,
                patch(Some(14))?,
                text_hidden,
            )
        }
    };
    Ok(Some(encoder))
}

/// LLaVA-NeXT's `image_grid_pinpoints`, or transformers' default.
fn pinpoints(top: &Fields<'_>) -> Result<Vec<[u64; 2]>, EstimateError> {
    let Some(list) = top.value(&["image_grid_pinpoints"]) else {
        return Ok(LLAVA_NEXT_DEFAULT_PINPOINTS.to_vec());
    };
    let malformed = || bad("image_grid_pinpoints must be a list of [width, height] pairs");
    let list = list.as_array().ok_or_else(malformed)?;
    if list.len() > 1024 {
        return Err(bad(format!(
            "image_grid_pinpoints lists {} grids; at most 1024 are read",
            list.len()
        )));
    }
    list.iter()
        .map(|pair| {
            let pair = pair
                .as_array()
                .filter(|p| p.len() == 2)
                .ok_or_else(malformed)?;
            let side = |v: &Value| v.as_u64().filter(|s| *s <= 1 << 16).ok_or_else(malformed);
            Ok([side(&pair[0])?, side(&pair[1])?])
        })
        .collect()
}

/// Reads `quantization_config`.
fn quantization(q: &Value, layers: u32) -> Result<WeightFormat, EstimateError> {
    let q = q
        .as_object()
        .ok_or_else(|| bad("quantization_config must be an object"))?;
    let f = Fields(q);
    let method = f
        .str(&["quant_method"])
        .ok_or_else(|| bad("quantization_config has no quant_method"))?
        .to_ascii_lowercase();
    let group = |f: &Fields<'_>| -> Result<u32, EstimateError> {
        Ok(match f.value(&["group_size", "q_group_size"]) {
            // -1 means one group per column: scales are negligible.
            Some(v) if v.as_i64() == Some(-1) => u32::MAX,
            Some(_) => f.u32(&["group_size", "q_group_size"])?,
            None => DEFAULT_GROUP_SIZE,
        })
    };
    let quant = match method.as_str() {
        "fp8" => {
            let block = match f.value(&["weight_block_size"]).and_then(Value::as_array) {
                Some(b) => b
                    .first()
                    .and_then(Value::as_u64)
                    .and_then(|v| u32::try_from(v).ok()),
                None => None,
            };
            Quantization::Fp8 { block }
        }
        "fbgemm_fp8" => Quantization::Fp8 { block: None },
        "awq" => {
            let bits = f.opt_u64(&["bits", "w_bit"])?.unwrap_or(4);
            if bits != 4 {
                return Err(bad(format!("AWQ with {bits} bits is not supported")));
            }
            Quantization::Awq {
                group_size: group(&f)?,
            }
        }
        "gptq" => {
            let bits = f.opt_u64(&["bits"])?.unwrap_or(4);
            let bits = u8::try_from(bits)
                .ok()
                .filter(|b| matches!(b, 2 | 3 | 4 | 8))
                .ok_or_else(|| bad(format!("GPTQ bits must be 2, 3, 4 or 8, got {bits}")))?;
            Quantization::Gptq {
                bits,
                group_size: group(&f)?,
            }
        }
        "mxfp4" => Quantization::Mxfp4,
        "modelopt" | "modelopt_fp4" => Quantization::Nvfp4,
        "compressed-tensors" => compressed_tensors(q)?,
        other => {
            return Err(bad(format!(
                "quant_method {other:?} is not supported (fp8, fbgemm_fp8, awq, gptq, mxfp4, compressed-tensors)"
            )));
        }
    };
    let mut modules = QuantizedModules::default_for(quant);
    let skipped: Vec<String> = ["modules_to_not_convert", "ignore", "ignored_layers"]
        .iter()
        .filter_map(|k| q.get(*k).and_then(Value::as_array))
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_ascii_lowercase))
        .collect();
    let attention_skipped = skipped.iter().any(|m| {
        m.contains("self_attn") || m.ends_with(".attn") || m == "attn" || m.contains("attention")
    });
    if attention_skipped {
        modules.attention = false;
    }
    if matches!(quant, Quantization::Mxfp4) {
        modules = QuantizedModules::EXPERTS_ONLY;
    }
    // Layer-specific MLP exclusions such as `model.layers.0.mlp`.
    let mut mlp_layers: Vec<u32> = skipped
        .iter()
        .filter(|m| m.contains(".mlp") && !m.contains("experts") && !m.contains("gate"))
        .filter_map(|m| {
            m.split('.')
                .skip_while(|p| *p != "layers")
                .nth(1)
                .and_then(|n| n.parse::<u32>().ok())
        })
        .filter(|l| *l < layers)
        .collect();
    mlp_layers.sort_unstable();
    mlp_layers.dedup();
    modules.unquantized_mlp_layers = mlp_layers.len() as u32;
    Ok(WeightFormat {
        quantization: quant,
        modules,
    })
}

/// compressed-tensors: the weights of the first config group decide.
fn compressed_tensors(q: &Map<String, Value>) -> Result<Quantization, EstimateError> {
    let weights = q
        .get("config_groups")
        .and_then(Value::as_object)
        .and_then(|g| g.values().next())
        .and_then(|g| g.get("weights"))
        .and_then(Value::as_object)
        .ok_or_else(|| bad("compressed-tensors config has no config_groups.*.weights"))?;
    let f = Fields(weights);
    let bits = f.opt_u64(&["num_bits"])?.unwrap_or(8);
    let kind = f.str(&["type"]).unwrap_or("int");
    let group = f.opt_u32(&["group_size"])?.unwrap_or(DEFAULT_GROUP_SIZE);
    match (kind, bits) {
        ("float", 8) => Ok(Quantization::Fp8 { block: None }),
        ("float", 4) => Ok(Quantization::Nvfp4),
        ("int", 8) => Ok(Quantization::Int8),
        ("int", 4) => Ok(Quantization::Gptq {
            bits: 4,
            group_size: group,
        }),
        _ => Err(bad(format!(
            "compressed-tensors weights of type {kind} with {bits} bits are not supported"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA_31_8B: &str = r#"{
      "architectures": ["LlamaForCausalLM"], "model_type": "llama",
      "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
      "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256,
      "max_position_embeddings": 131072, "tie_word_embeddings": false,
      "torch_dtype": "bfloat16", "rope_scaling": {"rope_type": "llama3", "factor": 8.0}
    }"#;

    #[test]
    fn llama_matches_catalog() {
        let spec = parse_hf_config("llama", LLAMA_31_8B).unwrap();
        let catalog = crate::catalog::lookup("Llama-3.1-8B").unwrap();
        assert_eq!(spec.arch, catalog.arch);
        assert_eq!(spec.dtype, DType::Bfloat16);
        assert_eq!(spec.weights, WeightFormat::default());
    }

    #[test]
    fn awq_and_gptq_configs() {
        let awq = LLAMA_31_8B.replace(
            "\"torch_dtype\"",
            r#""quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": true}, "torch_dtype""#,
        );
        let spec = parse_hf_config("x", &awq).unwrap();
        assert_eq!(
            spec.weights.quantization,
            Quantization::Awq { group_size: 64 }
        );
        let gptq = LLAMA_31_8B.replace(
            "\"torch_dtype\"",
            r#""quantization_config": {"quant_method": "gptq", "bits": 8, "group_size": 128}, "torch_dtype""#,
        );
        let spec = parse_hf_config("x", &gptq).unwrap();
        assert_eq!(
            spec.weights.quantization,
            Quantization::Gptq {
                bits: 8,
                group_size: 128
            }
        );
    }

    #[test]
    fn fp8_with_unquantized_attention_and_edge_layers() {
        let fp8 = LLAMA_31_8B.replace(
            "\"torch_dtype\"",
            r#""quantization_config": {"quant_method": "fbgemm_fp8", "modules_to_not_convert":
              ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj", "model.layers.0.mlp.up_proj",
               "model.layers.31.mlp.down_proj", "lm_head"]}, "torch_dtype""#,
        );
        let spec = parse_hf_config("x", &fp8).unwrap();
        assert_eq!(spec.weights.quantization, Quantization::Fp8 { block: None });
        assert!(!spec.weights.modules.attention);
        assert_eq!(spec.weights.modules.unquantized_mlp_layers, 2);
    }

    /// llava-hf/llava-v1.6-mistral-7b-hf config.json, as copied in
    /// NVIDIA/TensorRT-LLM tests/unittest/_torch/modeling/test_modeling_llava_next.py
    /// (which cuts the tower to 2 layers; the model has 24). Its text_config
    /// names only what differs from MistralConfig.
    const LLAVA_NEXT_MISTRAL_7B: &str = r#"{
      "architectures": ["LlavaNextForConditionalGeneration"], "ignore_index": -100,
      "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
      "image_token_index": 32000, "model_type": "llava_next", "projector_hidden_act": "gelu",
      "text_config": {
        "_name_or_path": "mistralai/Mistral-7B-Instruct-v0.2", "architectures": ["MistralForCausalLM"],
        "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
        "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
        "sliding_window": null, "torch_dtype": "bfloat16", "vocab_size": 32064
      },
      "torch_dtype": "float16", "transformers_version": "4.39.0.dev0",
      "use_image_newline_parameter": true,
      "vision_config": {
        "hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
        "model_type": "clip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 24,
        "patch_size": 14, "projection_dim": 768, "vocab_size": 32000
      },
      "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 32064
    }"#;

    /// mistralai/Mistral-Small-3.1-24B-Instruct-2503 config.json, as copied in
    /// NVIDIA/TensorRT-LLM tests/unittest/_torch/modeling/test_modeling_mistral.py
    /// (which cuts the text model to 4 layers; the model has 40).
    const MISTRAL_SMALL_31: &str = r#"{
      "architectures": ["Mistral3ForConditionalGeneration"], "image_token_index": 10,
      "model_type": "mistral3", "multimodal_projector_bias": false,
      "projector_hidden_act": "gelu", "spatial_merge_size": 2,
      "text_config": {
        "attention_dropout": 0.0, "head_dim": 128, "hidden_act": "silu", "hidden_size": 5120,
        "initializer_range": 0.02, "intermediate_size": 32768, "max_position_embeddings": 131072,
        "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 40,
        "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000000.0,
        "sliding_window": null, "use_cache": true, "vocab_size": 131072
      },
      "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
      "vision_config": {
        "attention_dropout": 0.0, "head_dim": 64, "hidden_act": "silu", "hidden_size": 1024,
        "image_size": 1540, "initializer_range": 0.02, "intermediate_size": 4096,
        "model_type": "pixtral", "num_attention_heads": 16, "num_channels": 3,
        "num_hidden_layers": 24, "patch_size": 14, "rope_theta": 10000.0
      },
      "vision_feature_layer": -1
    }"#;

    /// google/gemma-3-27b-it config.json, as copied in TensorRT-LLM's
    /// Gemma 3 VL test (text layers cut to 6 there; 62 here). Its
    /// text_config leaves vocab_size and max_position_embeddings to
    /// Gemma3TextConfig.
    const GEMMA3_27B: &str = r#"{
      "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
      "eoi_token_index": 256000, "eos_token_id": [1, 106], "image_token_index": 262144,
      "initializer_range": 0.02, "mm_tokens_per_image": 256, "model_type": "gemma3",
      "text_config": {
        "head_dim": 128, "hidden_size": 5376, "intermediate_size": 21504,
        "model_type": "gemma3_text", "num_attention_heads": 32, "num_hidden_layers": 62,
        "num_key_value_heads": 16, "query_pre_attn_scalar": 168,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024
      },
      "torch_dtype": "bfloat16", "transformers_version": "4.50.0.dev0",
      "vision_config": {
        "hidden_size": 1152, "image_size": 896, "intermediate_size": 4304,
        "model_type": "siglip_vision_model", "num_attention_heads": 16,
        "num_hidden_layers": 27, "patch_size": 14, "vision_use_head": false
      }
    }"#;

    /// Qwen/Qwen2.5-VL-7B-Instruct config.json: the text fields at the top,
    /// the tower under vision_config (values as quoted in several public
    /// copies, e.g. a Qwen2_5_VLConfig built for text encoding).
    const QWEN25_VL_7B: &str = r#"{
      "architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0,
      "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu", "hidden_size": 3584,
      "image_token_id": 151655, "initializer_range": 0.02, "intermediate_size": 18944,
      "max_position_embeddings": 128000, "max_window_layers": 28, "model_type": "qwen2_5_vl",
      "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4,
      "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
      "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true,
      "use_sliding_window": false, "video_token_id": 151656,
      "vision_config": {
        "depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420,
        "num_heads": 16, "in_chans": 3, "out_hidden_size": 3584, "patch_size": 14,
        "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
        "temporal_patch_size": 2
      },
      "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
      "vocab_size": 152064
    }"#;

    /// meta-llama/Llama-3.2-11B-Vision-Instruct config.json, trimmed to the
    /// fields that size it (vision_config as quoted in llama.cpp-era notes on
    /// the model; text_config as in public Mllama test configs).
    const MLLAMA_11B: &str = r#"{
      "architectures": ["MllamaForConditionalGeneration"], "image_token_index": 128256,
      "model_type": "mllama", "torch_dtype": "bfloat16",
      "text_config": {
        "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38], "hidden_size": 4096,
        "intermediate_size": 14336, "max_position_embeddings": 131072,
        "model_type": "mllama_text_model", "num_attention_heads": 32, "num_hidden_layers": 40,
        "num_key_value_heads": 8, "rope_theta": 500000.0, "tie_word_embeddings": false,
        "vocab_size": 128256
      },
      "vision_config": {
        "attention_heads": 16, "hidden_act": "gelu", "hidden_size": 1280, "image_size": 560,
        "intermediate_size": 5120, "max_length": 20, "max_num_tiles": 4, "min_length": 0,
        "model_type": "mllama_vision_model", "num_channels": 3, "num_global_layers": 8,
        "num_hidden_layers": 32, "patch_size": 14,
        "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]],
        "vision_output_dim": 7680
      }
    }"#;

    fn tower(json: &str) -> VisionEncoder {
        parse_hf_config("x", json).unwrap().arch.vision.unwrap()
    }

    #[test]
    fn llava_next_reads_text_defaults_and_the_clip_tower() {
        let spec = parse_hf_config("llava", LLAVA_NEXT_MISTRAL_7B).unwrap();
        let catalog = crate::catalog::lookup("llava-hf/llava-v1.6-mistral-7b-hf").unwrap();
        assert_eq!(spec.arch, catalog.arch);
        assert_eq!(spec.dtype, DType::Float16);
        assert_eq!((spec.arch.hidden_size, spec.arch.num_layers), (4096, 32));
        assert_eq!(spec.arch.sliding_window, None);
        let v = spec.arch.vision.unwrap();
        // vision_feature_layer -2: 23 of the 24 CLIP layers, no post-norm.
        assert_eq!(v.num_layers, 23);
        let layer = 4 * (1024 * 1024 + 1024) + 2 * 1024 * 4096 + 4096 + 1024 + 4 * 1024;
        let embedding = 3 * 14 * 14 * 1024 + 1024 + 577 * 1024 + 2 * 1024;
        let projector = 1024 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096;
        assert_eq!(v.params(), 23 * layer + embedding + projector);
        // 672×672: base tile and 2×2 grid tiles of 577 patches; 576 + 4 × 576
        // features plus 48 row newlines.
        assert_eq!((v.max_image_patches, v.max_image_tokens), (5 * 577, 2928));
    }

    #[test]
    fn mistral3_reads_the_pixtral_tower_and_patch_merger() {
        let spec = parse_hf_config("mistral3", MISTRAL_SMALL_31).unwrap();
        let catalog =
            crate::catalog::lookup("mistralai/Mistral-Small-3.1-24B-Instruct-2503").unwrap();
        assert_eq!(spec.arch, catalog.arch);
        let v = spec.arch.vision.unwrap();
        let layer = 4 * 1024 * 1024 + 3 * 1024 * 4096 + 2 * 1024;
        let embedding = 3 * 14 * 14 * 1024 + 1024;
        // RMSNorm, 2×2 patch merger, then 1024 → 5120 → 5120 without bias.
        let projector = 1024 + 4 * 1024 * 1024 + 1024 * 5120 + 5120 * 5120;
        assert_eq!(v.params(), 24 * layer + embedding + projector);
        assert_eq!(v.max_image_patches, 110 * 110);
        assert_eq!(v.max_image_tokens, 55 * 55 + 55);
    }

    #[test]
    fn gemma3_reads_siglip_and_the_text_defaults() {
        let spec = parse_hf_config("gemma3", GEMMA3_27B).unwrap();
        assert_eq!(spec.arch.vocab_size, 262_208);
        assert_eq!(spec.arch.max_position_embeddings, 131_072);
        assert!(spec.arch.tie_word_embeddings);
        assert_eq!(spec.arch.norms_per_layer, 4);
        // One global layer in six: 10 of 62.
        assert_eq!(
            spec.arch.sliding_window,
            Some(SlidingWindow {
                window: 1024,
                windowed_layers: 52
            })
        );
        let v = spec.arch.vision.unwrap();
        assert_eq!(
            (v.num_layers, v.hidden_size, v.intermediate_size),
            (27, 1152, 4304)
        );
        assert_eq!((v.max_image_patches, v.max_image_tokens), (4096, 256));
        assert_eq!(v.projector.params(), 1152 * 5376 + 1152);
        // SigLIP so400m (without its pooling head) and the projector: about 423M.
        assert!(
            (400_000_000..430_000_000).contains(&v.params()),
            "{}",
            v.params()
        );
    }

    #[test]
    fn qwen25_vl_reads_depth_merger_and_qkv_bias() {
        let spec = parse_hf_config("qwen2.5-vl", QWEN25_VL_7B).unwrap();
        let qwen = crate::catalog::lookup("Qwen2.5-7B").unwrap();
        assert_eq!(
            Architecture {
                vision: None,
                max_position_embeddings: qwen.arch.max_position_embeddings,
                ..spec.arch
            },
            qwen.arch
        );
        let v = spec.arch.vision.unwrap();
        assert_eq!(v.num_layers, 32);
        assert_eq!(v.mlp, MlpKind::Gated);
        assert_eq!(v.projector.input, 4 * 1280);
        assert_eq!(v.projector.output, 3584);
        assert_eq!((v.max_image_patches, v.max_image_tokens), (65_536, 16_384));
        // The 7B's tower and merger: about 676M parameters.
        assert!(
            (660_000_000..690_000_000).contains(&v.params()),
            "{}",
            v.params()
        );
    }

    #[test]
    fn mllama_reads_local_and_global_layers() {
        let spec = parse_hf_config("mllama", MLLAMA_11B).unwrap();
        assert_eq!(spec.arch.num_layers, 40);
        let v = spec.arch.vision.unwrap();
        assert_eq!(v.num_layers, 32 + 8);
        assert_eq!(v.projector.params(), 7680 * 4096 + 4096);
        assert_eq!(v.max_image_tokens, 4 * 1601);
        assert_eq!(v.max_image_patches, 4 * 1608);
        // Llama 3.2 11B Vision's encoder and projector: about 0.9B.
        assert!(
            (850_000_000..950_000_000).contains(&v.params()),
            "{}",
            v.params()
        );
    }

    #[test]
    fn an_unknown_vision_config_is_counted_not_ignored() {
        let unknown = LLAMA_31_8B.replace(
            "\"torch_dtype\"",
            r#""vision_config": {"model_type": "new_vit", "depth": 12, "embed_dim": 768},
               "torch_dtype""#,
        );
        let v = tower(&unknown);
        assert_eq!(
            (v.num_layers, v.hidden_size, v.intermediate_size),
            (12, 768, 3072)
        );
        assert_eq!(v.mlp, MlpKind::Gated);
        assert_eq!(v.max_image_tokens, crate::arch::UNKNOWN_TOWER_IMAGE_TOKENS);
        assert_eq!(v.projector.output, 4096);
        let without_width = LLAMA_31_8B.replace(
            "\"torch_dtype\"",
            r#""vision_config": {"model_type": "new_vit", "depth": 12}, "torch_dtype""#,
        );
        let err = parse_hf_config("x", &without_width)
            .unwrap_err()
            .to_string();
        assert!(err.contains("vision_config.hidden_size"), "{err}");
        let huge = LLAMA_31_8B.replace(
            "\"torch_dtype\"",
            r#""vision_config": {"depth": 12, "hidden_size": 768, "image_size": 18446744073709551615},
               "torch_dtype""#,
        );
        let err = parse_hf_config("x", &huge).unwrap_err().to_string();
        assert!(err.contains("image_size"), "{err}");
    }

    #[test]
    fn a_quantized_multimodal_checkpoint_keeps_its_tower_16_bit() {
        let awq = MISTRAL_SMALL_31.replace(
            "\"torch_dtype\"",
            r#""quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128,
               "modules_to_not_convert": ["vision_tower", "multi_modal_projector"]},
               "torch_dtype""#,
        );
        let quantized = parse_hf_config("awq", &awq).unwrap();
        assert_eq!(
            quantized.weights.quantization,
            Quantization::Awq { group_size: 128 }
        );
        let original = parse_hf_config("bf16", MISTRAL_SMALL_31).unwrap();
        let params = crate::ServingParams {
            max_model_len: Some(4096),
            ..crate::ServingParams::default()
        };
        let q = crate::estimate(&quantized, &params).unwrap();
        let o = crate::estimate(&original, &params).unwrap();
        let tower = original.arch.vision.unwrap().params() * 2;
        assert_eq!(q.weights_detail.vision, tower);
        assert_eq!(o.weights_detail.vision, tower);
        assert!(q.weights_detail.dense_mlp * 3 < o.weights_detail.dense_mlp);
    }

    #[test]
    fn errors_name_the_field() {
        let missing = LLAMA_31_8B.replace("\"vocab_size\": 128256,", "");
        let err = parse_hf_config("x", &missing).unwrap_err().to_string();
        assert!(err.contains("vocab_size"), "{err}");
        let wrong =
            LLAMA_31_8B.replace("\"num_hidden_layers\": 32", "\"num_hidden_layers\": \"32\"");
        let err = parse_hf_config("x", &wrong).unwrap_err().to_string();
        assert!(err.contains("num_hidden_layers"), "{err}");
        let q = LLAMA_31_8B.replace(
            "\"torch_dtype\"",
            r#""quantization_config": {"quant_method": "hqq"}, "torch_dtype""#,
        );
        let err = parse_hf_config("x", &q).unwrap_err().to_string();
        assert!(err.contains("hqq"), "{err}");
        assert!(parse_hf_config("x", "[1]").is_err());
        assert!(parse_hf_config("x", "{").is_err());
    }
}
