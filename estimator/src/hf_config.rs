//! Reading a Hugging Face `config.json` (the text; the caller reads the file).

use serde_json::{Map, Value};

use crate::arch::{Architecture, AttentionKind, Mla, MlpKind, Moe, SlidingWindow};
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
/// Gemma 2, Phi-3, DeepSeek V2/V3, Falcon and gpt-oss layouts, and the
/// `quantization_config` of FP8, AWQ, GPTQ, compressed-tensors, fbgemm-FP8
/// and MXFP4 checkpoints.
pub fn parse_hf_config(name: &str, json: &str) -> Result<ModelSpec, EstimateError> {
    let root: Value = serde_json::from_str(json).map_err(|e| bad(format!("not JSON: {e}")))?;
    let root = root
        .as_object()
        .ok_or_else(|| bad("top level must be an object"))?;
    // Multimodal wrappers keep the language model under text_config.
    let text = match root.get("text_config").and_then(Value::as_object) {
        Some(t) if t.contains_key("num_hidden_layers") => t,
        _ => root,
    };
    let f = Fields(text);
    let model_type = Fields(root)
        .str(&["model_type"])
        .or(f.str(&["model_type"]))
        .unwrap_or("")
        .to_ascii_lowercase();

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
        .unwrap_or(matches!(model_type.as_str(), "qwen2" | "qwen2_moe"));
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
