//! Safetensors checkpoints of Llama-layout models, tensor by tensor as the
//! public checkpoints name and shape them, in the stored formats tests need:
//! BF16 originals, AutoAWQ GEMM re-uploads and compressed-tensors FP8; and
//! LLaVA-NeXT's (a Mistral language model, a CLIP tower and a projector).

use serde_json::{Map, Value, json};

use crate::File;

/// How the linear weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bf16,
    /// AutoAWQ GEMM: `qweight` I32 `[in, out/8]`, `qzeros` I32
    /// `[in/g, out/8]`, `scales` F16 `[in/g, out]`; the rest F16.
    Awq {
        group_size: u64,
    },
    /// compressed-tensors FP8 with per-channel scales: `weight` F8_E4M3,
    /// `weight_scale` F32 `[out, 1]`; the rest BF16.
    Fp8,
}

/// One tensor: name, safetensors dtype, shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<u64>,
}

impl Tensor {
    fn bytes(&self) -> u64 {
        let per = match self.dtype {
            "F8_E4M3" | "U8" | "I8" => 1,
            "BF16" | "F16" => 2,
            _ => 4,
        };
        self.shape.iter().product::<u64>() * per
    }
}

fn field(config: &Map<String, Value>, key: &str) -> u64 {
    config.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The tensors of a Llama-layout `config.json` stored in `scheme`.
pub fn llama_tensors(config: &Value, scheme: Scheme) -> Vec<Tensor> {
    let empty = Map::new();
    let c = config.as_object().unwrap_or(&empty);
    let (h, inter, vocab) = (
        field(c, "hidden_size"),
        field(c, "intermediate_size"),
        field(c, "vocab_size"),
    );
    let heads = field(c, "num_attention_heads").max(1);
    let kv = field(c, "num_key_value_heads").max(1);
    let d = c
        .get("head_dim")
        .and_then(Value::as_u64)
        .unwrap_or(h / heads);
    let tied = c
        .get("tie_word_embeddings")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let plain = match scheme {
        Scheme::Awq { .. } => "F16",
        _ => "BF16",
    };
    let t = |name: String, dtype: &'static str, shape: Vec<u64>| Tensor { name, dtype, shape };
    let mut out = vec![t("model.embed_tokens.weight".into(), plain, vec![vocab, h])];
    for l in 0..field(c, "num_hidden_layers") {
        let p = format!("model.layers.{l}");
        let linears = [
            ("self_attn.q_proj", h, heads * d),
            ("self_attn.k_proj", h, kv * d),
            ("self_attn.v_proj", h, kv * d),
            ("self_attn.o_proj", heads * d, h),
            ("mlp.gate_proj", h, inter),
            ("mlp.up_proj", h, inter),
            ("mlp.down_proj", inter, h),
        ];
        for (m, inp, outp) in linears {
            match scheme {
                Scheme::Bf16 => out.push(t(format!("{p}.{m}.weight"), "BF16", vec![outp, inp])),
                Scheme::Fp8 => {
                    out.push(t(format!("{p}.{m}.weight"), "F8_E4M3", vec![outp, inp]));
                    out.push(t(format!("{p}.{m}.weight_scale"), "F32", vec![outp, 1]));
                }
                Scheme::Awq { group_size } => {
                    let groups = inp / group_size.max(1);
                    out.push(t(format!("{p}.{m}.qweight"), "I32", vec![inp, outp / 8]));
                    out.push(t(format!("{p}.{m}.qzeros"), "I32", vec![groups, outp / 8]));
                    out.push(t(format!("{p}.{m}.scales"), "F16", vec![groups, outp]));
                }
            }
        }
        out.push(t(format!("{p}.input_layernorm.weight"), plain, vec![h]));
        out.push(t(
            format!("{p}.post_attention_layernorm.weight"),
            plain,
            vec![h],
        ));
    }
    out.push(t("model.norm.weight".into(), plain, vec![h]));
    if !tied {
        out.push(t("lm_head.weight".into(), plain, vec![vocab, h]));
    }
    out
}

/// The tensors of a LLaVA-NeXT `config.json` (as `llava-hf` stores them, in
/// FP16): the language model under `language_model.` from `text_config`
/// over MistralConfig's defaults, the CLIP tower under `vision_tower.`, the
/// two-layer projector and `image_newline`.
pub fn llava_next_tensors(config: &Value) -> Vec<Tensor> {
    let mut text = json!({
        "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
        "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 32000
    });
    if let (Some(t), Some(overrides)) = (
        text.as_object_mut(),
        config.get("text_config").and_then(Value::as_object),
    ) {
        for (k, v) in overrides {
            t.insert(k.clone(), v.clone());
        }
    }
    let h_text = text["hidden_size"].as_u64().unwrap_or(0);
    let f16 = |mut t: Tensor| {
        t.dtype = "F16";
        t
    };
    let mut out: Vec<Tensor> = llama_tensors(&text, Scheme::Bf16)
        .into_iter()
        .map(|mut t| {
            t.name = format!("language_model.{}", t.name);
            f16(t)
        })
        .collect();
    let empty = Map::new();
    let v = config
        .get("vision_config")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let (h, inter, patch, image) = (
        field(v, "hidden_size"),
        field(v, "intermediate_size"),
        field(v, "patch_size").max(1),
        field(v, "image_size"),
    );
    let positions = (image / patch) * (image / patch) + 1;
    let t = |name: String, shape: Vec<u64>| Tensor {
        name,
        dtype: "F16",
        shape,
    };
    let vm = "vision_tower.vision_model";
    out.push(t(format!("{vm}.embeddings.class_embedding"), vec![h]));
    out.push(t(
        format!("{vm}.embeddings.patch_embedding.weight"),
        vec![h, 3, patch, patch],
    ));
    out.push(t(
        format!("{vm}.embeddings.position_embedding.weight"),
        vec![positions, h],
    ));
    for norm in ["pre_layrnorm", "post_layernorm"] {
        out.push(t(format!("{vm}.{norm}.weight"), vec![h]));
        out.push(t(format!("{vm}.{norm}.bias"), vec![h]));
    }
    for l in 0..field(v, "num_hidden_layers") {
        let p = format!("{vm}.encoder.layers.{l}");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            out.push(t(format!("{p}.self_attn.{proj}.weight"), vec![h, h]));
            out.push(t(format!("{p}.self_attn.{proj}.bias"), vec![h]));
        }
        for norm in ["layer_norm1", "layer_norm2"] {
            out.push(t(format!("{p}.{norm}.weight"), vec![h]));
            out.push(t(format!("{p}.{norm}.bias"), vec![h]));
        }
        out.push(t(format!("{p}.mlp.fc1.weight"), vec![inter, h]));
        out.push(t(format!("{p}.mlp.fc1.bias"), vec![inter]));
        out.push(t(format!("{p}.mlp.fc2.weight"), vec![h, inter]));
        out.push(t(format!("{p}.mlp.fc2.bias"), vec![h]));
    }
    out.push(t(
        "multi_modal_projector.linear_1.weight".into(),
        vec![h_text, h],
    ));
    out.push(t(
        "multi_modal_projector.linear_1.bias".into(),
        vec![h_text],
    ));
    out.push(t(
        "multi_modal_projector.linear_2.weight".into(),
        vec![h_text, h_text],
    ));
    out.push(t(
        "multi_modal_projector.linear_2.bias".into(),
        vec![h_text],
    ));
    out.push(t("image_newline".into(), vec![h_text]));
    out
}

/// The safetensors header of `tensors`, data laid out in order.
pub fn header(tensors: &[Tensor]) -> (Vec<u8>, u64) {
    let mut map = Map::new();
    map.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0u64;
    for t in tensors {
        let end = offset + t.bytes();
        map.insert(
            t.name.clone(),
            json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    (Value::Object(map).to_string().into_bytes(), offset)
}

/// `tensors` split over `shards` files named as `transformers` names them,
/// with `model.safetensors.index.json` when there are several.
pub fn checkpoint_files(tensors: &[Tensor], shards: usize) -> Vec<(String, File)> {
    let shards = shards.max(1);
    if shards == 1 {
        let (header, data_len) = header(tensors);
        return vec![(
            "model.safetensors".into(),
            File::Safetensors { header, data_len },
        )];
    }
    let per = tensors.len().div_ceil(shards);
    let mut files = Vec::new();
    let mut weight_map = Map::new();
    let mut total = 0u64;
    for (i, chunk) in tensors.chunks(per.max(1)).enumerate() {
        let name = format!("model-{:05}-of-{shards:05}.safetensors", i + 1);
        let (header, data_len) = header(chunk);
        total += data_len;
        for t in chunk {
            weight_map.insert(t.name.clone(), Value::String(name.clone()));
        }
        files.push((name, File::Safetensors { header, data_len }));
    }
    let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    files.push((
        "model.safetensors.index.json".into(),
        File::Bytes(index.to_string().into_bytes()),
    ));
    files
}

/// Bytes the tensors store.
pub fn stored_bytes(tensors: &[Tensor]) -> u64 {
    tensors.iter().map(Tensor::bytes).sum()
}
