//! Built-in catalog of popular open models.
//!
//! Numbers come from each model's Hugging Face `config.json`; `source` names
//! where they were read. `data/models.csv` holds the same facts with their
//! sources and a test keeps the two in step.

use serde::Serialize;

use crate::arch::{
    Architecture, AttentionKind, LLAVA_NEXT_DEFAULT_PINPOINTS, Mla, MlpKind, Moe, SlidingWindow,
    VisionEncoder,
};
use crate::checkpoint::CheckpointWeights;
use crate::dtype::DType;
use crate::error::EstimateError;
use crate::quant::{Quantization, WeightFormat};

/// A model ready to estimate: its architecture and how its checkpoint stores it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpec {
    pub name: String,
    pub arch: Architecture,
    /// The checkpoint's dtype (`torch_dtype`).
    pub dtype: DType,
    /// The checkpoint's own quantization (gpt-oss ships MXFP4 experts,
    /// DeepSeek V3 block FP8).
    pub weights: WeightFormat,
    /// What the checkpoint's safetensors headers say it stores, when they
    /// were read: the weights are then sized from these bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointWeights>,
}

/// One catalog entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CatalogEntry {
    pub name: &'static str,
    pub hf_id: &'static str,
    pub arch: Architecture,
    pub dtype: DType,
    pub quantization: Quantization,
    pub source: &'static str,
}

impl CatalogEntry {
    pub fn spec(&self) -> ModelSpec {
        ModelSpec {
            name: self.name.to_string(),
            arch: self.arch,
            dtype: self.dtype,
            weights: WeightFormat::new(self.quantization),
            checkpoint: None,
        }
    }
}

#[allow(clippy::too_many_arguments)]
const fn dense(
    layers: u32,
    hidden: u64,
    heads: u32,
    kv: u32,
    head_dim: u64,
    inter: u64,
    vocab: u64,
    max_pos: u64,
) -> Architecture {
    Architecture::dense(layers, hidden, heads, kv, head_dim, inter, vocab, max_pos)
}

const fn tied(mut a: Architecture) -> Architecture {
    a.tie_word_embeddings = true;
    a
}

const fn qwen2(mut a: Architecture) -> Architecture {
    a.qkv_bias = true;
    a
}

const fn qwen3(mut a: Architecture) -> Architecture {
    a.qk_norm = true;
    a
}

const fn moe(mut a: Architecture, experts: u32, active: u32, inter: u64) -> Architecture {
    a.moe = Some(Moe {
        num_experts: experts,
        experts_per_token: active,
        expert_intermediate_size: inter,
        shared_intermediate_size: 0,
        first_dense_layers: 0,
        expert_bias: false,
    });
    a
}

const fn window(mut a: Architecture, window: u64, windowed_layers: u32) -> Architecture {
    a.sliding_window = Some(SlidingWindow {
        window,
        windowed_layers,
    });
    a
}

const fn vision(mut a: Architecture, tower: VisionEncoder) -> Architecture {
    a.vision = Some(tower);
    a
}

/// LLaVA-v1.6-Mistral-7B: Mistral-7B-Instruct-v0.2 (vocabulary 32064, no
/// window) and CLIP ViT-L/14-336, of which vLLM builds the 23 layers up to
/// `vision_feature_layer` -2, with LLaVA-NeXT's default grid pinpoints.
const fn llava_v16_mistral_7b() -> Architecture {
    vision(
        dense(32, 4096, 32, 8, 128, 14336, 32064, 32768),
        VisionEncoder::llava(
            true,
            24,
            23,
            1024,
            4096,
            336,
            14,
            1024,
            4096,
            true,
            Some(LLAVA_NEXT_DEFAULT_PINPOINTS),
        ),
    )
}

/// Mistral Small 3.1 and 3.2 (24B): a Mistral text model and the Pixtral
/// encoder (24 layers, 1024 wide, 1540-pixel images in 14-pixel patches,
/// 2×2 patch merger, unbiased projector).
const fn mistral_small_3_24b() -> Architecture {
    vision(
        dense(40, 5120, 32, 8, 128, 32768, 131072, 131072),
        VisionEncoder::pixtral(24, 1024, 4096, 1540, 14, 2, 5120, false),
    )
}

const fn gemma2(a: Architecture) -> Architecture {
    let mut a = tied(a);
    a.norms_per_layer = 4;
    window(a, 4096, a.num_layers / 2)
}

const fn deepseek(
    mut a: Architecture,
    experts: u32,
    active: u32,
    expert_inter: u64,
    shared: u64,
    first_dense: u32,
    q_lora_rank: Option<u64>,
) -> Architecture {
    a.moe = Some(Moe {
        num_experts: experts,
        experts_per_token: active,
        expert_intermediate_size: expert_inter,
        shared_intermediate_size: shared,
        first_dense_layers: first_dense,
        expert_bias: false,
    });
    a.attention = AttentionKind::Mla(Mla {
        q_lora_rank,
        kv_lora_rank: 512,
        qk_nope_head_dim: 128,
        qk_rope_head_dim: 64,
        v_head_dim: 128,
    });
    a
}

const fn gpt_oss(layers: u32, experts: u32) -> Architecture {
    let mut a = dense(layers, 2880, 64, 8, 64, 2880, 201088, 131072);
    a.qkv_bias = true;
    a.o_bias = true;
    a.moe = Some(Moe {
        num_experts: experts,
        experts_per_token: 4,
        expert_intermediate_size: 2880,
        shared_intermediate_size: 0,
        first_dense_layers: 0,
        expert_bias: true,
    });
    window(a, 128, layers / 2)
}

const fn falcon_40b() -> Architecture {
    let mut a = tied(dense(60, 8192, 128, 8, 64, 32768, 65024, 2048));
    a.mlp = MlpKind::Plain;
    a.norm_bias = true;
    a
}

const BF16: DType = DType::Bfloat16;
const NONE: Quantization = Quantization::None;

const GENZ: &str = "github:abhibambhaniya/GenZ-LLM-Analyzer@091bdd0";
const MLC: &str = "github:mlc-ai/mlc-llm@79d603f:python/mlc_llm/model/model_preset.py";
const AIC: &str =
    "github:ai-dynamo/aiconfigurator@095f58a:aic-core/src/aiconfigurator_core/model_configs";
const TRTLLM: &str = "github:NVIDIA/TensorRT-LLM:tests/unittest/_torch/modeling";

macro_rules! entry {
    ($name:expr, $hf:expr, $arch:expr, $source:expr) => {
        entry!($name, $hf, $arch, BF16, NONE, $source)
    };
    ($name:expr, $hf:expr, $arch:expr, $dtype:expr, $quant:expr, $source:expr) => {
        CatalogEntry {
            name: $name,
            hf_id: $hf,
            arch: $arch,
            dtype: $dtype,
            quantization: $quant,
            source: $source,
        }
    };
}

/// Every model the catalog knows.
pub static CATALOG: &[CatalogEntry] = &[
    entry!(
        "Llama-2-7B",
        "meta-llama/Llama-2-7b-hf",
        dense(32, 4096, 32, 32, 128, 11008, 32000, 4096),
        DType::Float16,
        NONE,
        "HF meta-llama/Llama-2-7b-hf config.json via GenZ meta.py and mlc llama2_7b"
    ),
    entry!(
        "Llama-2-13B",
        "meta-llama/Llama-2-13b-hf",
        dense(40, 5120, 40, 40, 128, 13824, 32000, 4096),
        DType::Float16,
        NONE,
        "HF meta-llama/Llama-2-13b-hf config.json via GenZ meta.py and mlc llama2_13b"
    ),
    entry!(
        "Llama-2-70B",
        "meta-llama/Llama-2-70b-hf",
        dense(80, 8192, 64, 8, 128, 28672, 32000, 4096),
        DType::Float16,
        NONE,
        "HF meta-llama/Llama-2-70b-hf config.json via GenZ meta.py and mlc llama2_70b"
    ),
    entry!(
        "Llama-3-8B",
        "meta-llama/Meta-Llama-3-8B",
        dense(32, 4096, 32, 8, 128, 14336, 128256, 8192),
        "HF meta-llama/Meta-Llama-3-8B config.json; dims as Llama-3.1-8B (aiconfigurator)"
    ),
    entry!(
        "Llama-3-70B",
        "meta-llama/Meta-Llama-3-70B",
        dense(80, 8192, 64, 8, 128, 28672, 128256, 8192),
        "HF meta-llama/Meta-Llama-3-70B config.json; dims as Llama-3.1-70B (aiconfigurator)"
    ),
    entry!(
        "Llama-3.1-8B",
        "meta-llama/Llama-3.1-8B",
        dense(32, 4096, 32, 8, 128, 14336, 128256, 131072),
        "aiconfigurator meta-llama--Meta-Llama-3.1-8B_config.json; mlc llama3_1_8b"
    ),
    entry!(
        "Llama-3.1-70B",
        "meta-llama/Llama-3.1-70B",
        dense(80, 8192, 64, 8, 128, 28672, 128256, 131072),
        "aiconfigurator meta-llama--Meta-Llama-3.1-70B_config.json; mlc llama3_1_70b"
    ),
    entry!(
        "Llama-3.1-405B",
        "meta-llama/Llama-3.1-405B",
        dense(126, 16384, 128, 8, 128, 53248, 128256, 131072),
        "aiconfigurator meta-llama--Meta-Llama-3.1-405B_config.json"
    ),
    entry!(
        "Llama-3.2-1B",
        "meta-llama/Llama-3.2-1B",
        tied(dense(16, 2048, 32, 8, 64, 8192, 128256, 131072)),
        "mlc llama3_2_1b (verbatim HF config.json)"
    ),
    entry!(
        "Llama-3.2-3B",
        "meta-llama/Llama-3.2-3B",
        tied(dense(28, 3072, 24, 8, 128, 8192, 128256, 131072)),
        "mlc llama3_2_3b (verbatim HF config.json)"
    ),
    entry!(
        "Llama-3.3-70B",
        "meta-llama/Llama-3.3-70B-Instruct",
        dense(80, 8192, 64, 8, 128, 28672, 128256, 131072),
        "HF meta-llama/Llama-3.3-70B-Instruct config.json: same dims as Llama-3.1-70B"
    ),
    entry!(
        "Mistral-7B-v0.1",
        "mistralai/Mistral-7B-v0.1",
        window(dense(32, 4096, 32, 8, 128, 14336, 32000, 32768), 4096, 32),
        "mlc mistral_7b (verbatim HF config.json): sliding_window 4096"
    ),
    entry!(
        "Mistral-7B-v0.3",
        "mistralai/Mistral-7B-v0.3",
        dense(32, 4096, 32, 8, 128, 14336, 32768, 32768),
        "mlc mistral_7b_v03 (verbatim HF config.json): vocab 32768, sliding_window null"
    ),
    entry!(
        "LLaVA-v1.6-Mistral-7B",
        "llava-hf/llava-v1.6-mistral-7b-hf",
        llava_v16_mistral_7b(),
        DType::Float16,
        NONE,
        "llava-hf/llava-v1.6-mistral-7b-hf config.json via TensorRT-LLM test_modeling_llava_next.py (24 CLIP layers)"
    ),
    entry!(
        "Mistral-Small-3.1-24B",
        "mistralai/Mistral-Small-3.1-24B-Instruct-2503",
        mistral_small_3_24b(),
        "mistralai/Mistral-Small-3.1-24B-Instruct-2503 config.json via TensorRT-LLM test_modeling_mistral.py (40 text layers)"
    ),
    entry!(
        "Mistral-Small-3.2-24B",
        "mistralai/Mistral-Small-3.2-24B-Instruct-2506",
        mistral_small_3_24b(),
        "HF mistralai/Mistral-Small-3.2-24B-Instruct-2506 config.json: same architecture as 3.1"
    ),
    entry!(
        "Mixtral-8x7B",
        "mistralai/Mixtral-8x7B-v0.1",
        moe(
            dense(32, 4096, 32, 8, 128, 14336, 32000, 32768),
            8,
            2,
            14336
        ),
        "aiconfigurator mistralai--Mixtral-8x7B-v0.1_config.json"
    ),
    entry!(
        "Mixtral-8x22B",
        "mistralai/Mixtral-8x22B-v0.1",
        moe(
            dense(56, 6144, 48, 8, 128, 16384, 32000, 65536),
            8,
            2,
            16384
        ),
        "aiconfigurator mistralai--Mixtral-8x22B-v0.1_config.json"
    ),
    entry!(
        "Qwen2.5-0.5B",
        "Qwen/Qwen2.5-0.5B",
        tied(qwen2(dense(24, 896, 14, 2, 64, 4864, 151936, 32768))),
        "mlc qwen2_0_5b; GenZ alibaba.py"
    ),
    entry!(
        "Qwen2.5-7B",
        "Qwen/Qwen2.5-7B",
        qwen2(dense(28, 3584, 28, 4, 128, 18944, 152064, 131072)),
        "citsjtu2020/LLM-Prof sglang/Model_Config.md; GenZ alibaba.py"
    ),
    entry!(
        "Qwen2.5-14B",
        "Qwen/Qwen2.5-14B",
        qwen2(dense(48, 5120, 40, 8, 128, 13824, 152064, 131072)),
        "citsjtu2020/LLM-Prof sglang/Model_Config.md; GenZ alibaba.py"
    ),
    entry!(
        "Qwen2.5-32B",
        "Qwen/Qwen2.5-32B",
        qwen2(dense(64, 5120, 40, 8, 128, 27648, 152064, 131072)),
        "citsjtu2020/LLM-Prof sglang/Model_Config.md; GenZ alibaba.py"
    ),
    entry!(
        "Qwen2.5-72B",
        "Qwen/Qwen2.5-72B",
        qwen2(dense(80, 8192, 64, 8, 128, 29568, 152064, 131072)),
        "GenZ alibaba.py (HF config.json)"
    ),
    entry!(
        "Qwen3-0.6B",
        "Qwen/Qwen3-0.6B",
        tied(qwen3(dense(28, 1024, 16, 8, 128, 3072, 151936, 40960))),
        "aiconfigurator Qwen--Qwen3-0.6B_config.json; mlc qwen3_0.6b"
    ),
    entry!(
        "Qwen3-8B",
        "Qwen/Qwen3-8B",
        qwen3(dense(36, 4096, 32, 8, 128, 12288, 151936, 40960)),
        "aiconfigurator Qwen--Qwen3-8B_config.json"
    ),
    entry!(
        "Qwen3-14B",
        "Qwen/Qwen3-14B",
        qwen3(dense(40, 5120, 40, 8, 128, 17408, 151936, 40960)),
        "citsjtu2020/LLM-Prof sglang/Model_Config.md"
    ),
    entry!(
        "Qwen3-32B",
        "Qwen/Qwen3-32B",
        qwen3(dense(64, 5120, 64, 8, 128, 25600, 151936, 40960)),
        "aiconfigurator Qwen--Qwen3-32B_config.json"
    ),
    entry!(
        "Qwen3-30B-A3B",
        "Qwen/Qwen3-30B-A3B",
        moe(
            qwen3(dense(48, 2048, 32, 4, 128, 6144, 151936, 40960)),
            128,
            8,
            768
        ),
        "aiconfigurator Qwen--Qwen3-30B-A3B_config.json: moe_intermediate_size 768"
    ),
    entry!(
        "Qwen3-235B-A22B",
        "Qwen/Qwen3-235B-A22B",
        moe(
            qwen3(dense(94, 4096, 64, 4, 128, 12288, 151936, 40960)),
            128,
            8,
            1536
        ),
        "aiconfigurator Qwen--Qwen3-235B-A22B_config.json: moe_intermediate_size 1536"
    ),
    entry!(
        "Gemma-2-9B",
        "google/gemma-2-9b",
        gemma2(dense(42, 3584, 16, 8, 256, 14336, 256000, 8192)),
        "mlc gemma2_9b (verbatim HF config.json): sliding_window 4096 on alternate layers"
    ),
    entry!(
        "Gemma-2-27B",
        "google/gemma-2-27b",
        gemma2(dense(46, 4608, 32, 16, 128, 36864, 256000, 8192)),
        "mlc gemma2_27b (verbatim HF config.json): head_dim 128"
    ),
    entry!(
        "Phi-3-mini-4k",
        "microsoft/Phi-3-mini-4k-instruct",
        dense(32, 3072, 32, 32, 96, 8192, 32064, 4096),
        "mlc phi-3_5 (same dims); GenZ microsoft.py"
    ),
    entry!(
        "Phi-3-medium-4k",
        "microsoft/Phi-3-medium-4k-instruct",
        dense(40, 5120, 40, 10, 128, 17920, 32064, 4096),
        "GenZ microsoft.py (HF config.json)"
    ),
    entry!(
        "DeepSeek-V2-Lite",
        "deepseek-ai/DeepSeek-V2-Lite",
        deepseek(
            dense(27, 2048, 16, 16, 192, 10944, 102400, 163840),
            64,
            6,
            1408,
            2816,
            1,
            None
        ),
        "mlc deepseek_v2_lite (verbatim HF config.json): kv_lora_rank 512, 2 shared experts"
    ),
    entry!(
        "DeepSeek-V3",
        "deepseek-ai/DeepSeek-V3",
        deepseek(
            dense(61, 7168, 128, 128, 192, 18432, 129280, 163840),
            256,
            8,
            2048,
            2048,
            3,
            Some(1536)
        ),
        BF16,
        Quantization::Fp8 { block: Some(128) },
        "aiconfigurator deepseek-ai--DeepSeek-V3_config.json: FP8 e4m3 block 128x128"
    ),
    entry!(
        "DeepSeek-R1",
        "deepseek-ai/DeepSeek-R1",
        deepseek(
            dense(61, 7168, 128, 128, 192, 18432, 129280, 163840),
            256,
            8,
            2048,
            2048,
            3,
            Some(1536)
        ),
        BF16,
        Quantization::Fp8 { block: Some(128) },
        "HF deepseek-ai/DeepSeek-R1 config.json: same architecture as DeepSeek-V3"
    ),
    entry!(
        "Falcon-40B",
        "tiiuae/falcon-40b",
        falcon_40b(),
        "falcon-40b-instruct config.json (n_head 128, n_head_kv 8, n_layer 60); RahulSChand/gpu_poor all_configs.json"
    ),
    entry!(
        "gpt-oss-20b",
        "openai/gpt-oss-20b",
        gpt_oss(24, 32),
        BF16,
        Quantization::Mxfp4,
        "aiconfigurator openai--gpt-oss-20b_config.json: MXFP4 experts, sliding window 128 on half the layers"
    ),
    entry!(
        "gpt-oss-120b",
        "openai/gpt-oss-120b",
        gpt_oss(36, 128),
        BF16,
        Quantization::Mxfp4,
        "aiconfigurator openai--gpt-oss-120b_config.json: MXFP4 experts, 18 sliding + 18 full layers"
    ),
];

/// Where the entries were transcribed from, for attribution.
pub const SOURCES: &[&str] = &[GENZ, MLC, AIC, TRTLLM];

/// Lower-case, drop the organisation and the words that name a fine-tune or
/// a packaging rather than an architecture.
pub fn normalize(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase().replace(['_', ' '], "-");
    let base = lower.rsplit('/').next().unwrap_or(&lower);
    let base = base.strip_prefix("meta-").unwrap_or(base);
    const DROP: &[&str] = &[
        "instruct", "it", "chat", "hf", "base", "awq", "gptq", "int4", "int8", "fp8", "dynamic",
    ];
    base.split('-')
        .filter(|t| !t.is_empty() && !DROP.contains(t))
        .filter(|t| !(t.len() == 4 && t.bytes().all(|b| b.is_ascii_digit())))
        .collect::<Vec<_>>()
        .join("-")
}

/// Longest model name looked up: a Hugging Face id is an organisation and a
/// repository name of at most 96 characters each. Closest-name suggestions
/// cost the product of the lengths, so longer input is refused first.
pub const MAX_NAME_LEN: usize = 96 + 1 + 96;

/// Finds a model by catalog name or Hugging Face id, case-insensitively;
/// `Meta-Llama-3.1-8B-Instruct` finds `Llama-3.1-8B`.
pub fn lookup(name: &str) -> Result<&'static CatalogEntry, EstimateError> {
    check_name_len("model name", name)?;
    let key = normalize(name);
    CATALOG
        .iter()
        .find(|e| normalize(e.name) == key || normalize(e.hf_id) == key)
        .ok_or_else(|| EstimateError::UnknownModel {
            name: name.to_string(),
            closest: closest(name, 3),
        })
}

/// Refuses a name longer than [`MAX_NAME_LEN`] (after trimming).
pub(crate) fn check_name_len(what: &'static str, name: &str) -> Result<(), EstimateError> {
    let len = name.trim().len();
    if len > MAX_NAME_LEN {
        return Err(EstimateError::NameTooLong {
            what,
            len,
            max: MAX_NAME_LEN,
        });
    }
    Ok(())
}

/// The `n` catalog names closest to `name`; none for a name longer than
/// [`MAX_NAME_LEN`], which no entry resembles.
pub fn closest(name: &str, n: usize) -> Vec<String> {
    if name.trim().len() > MAX_NAME_LEN {
        return Vec::new();
    }
    let key = normalize(name);
    let mut scored: Vec<(f64, &str)> = CATALOG
        .iter()
        .map(|e| {
            let s = strsim::normalized_levenshtein(&key, &normalize(e.name))
                .max(strsim::normalized_levenshtein(&key, &normalize(e.hf_id)));
            (s, e.name)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored
        .into_iter()
        .take(n)
        .map(|(_, n)| n.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_valid_and_unique() {
        for e in CATALOG {
            e.arch
                .validate()
                .unwrap_or_else(|err| panic!("{}: {err}", e.name));
            let dupes = CATALOG
                .iter()
                .filter(|o| normalize(o.name) == normalize(e.name))
                .count();
            assert_eq!(dupes, 1, "{}", e.name);
        }
    }

    #[test]
    fn finds_by_short_name_and_hf_id() {
        assert_eq!(lookup("llama-3.1-8b").unwrap().name, "Llama-3.1-8B");
        assert_eq!(
            lookup("meta-llama/Llama-3.1-8B-Instruct").unwrap().name,
            "Llama-3.1-8B"
        );
        assert_eq!(
            lookup("meta-llama/Meta-Llama-3-70B-Instruct").unwrap().name,
            "Llama-3-70B"
        );
        assert_eq!(
            lookup("mistralai/Mixtral-8x7B-Instruct-v0.1").unwrap().name,
            "Mixtral-8x7B"
        );
        assert_eq!(
            lookup("Qwen/Qwen2.5-72B-Instruct-AWQ").unwrap().name,
            "Qwen2.5-72B"
        );
        assert_eq!(
            lookup("Qwen/Qwen3-30B-A3B-Instruct-2507").unwrap().name,
            "Qwen3-30B-A3B"
        );
        assert_eq!(lookup("google/gemma-2-9b-it").unwrap().name, "Gemma-2-9B");
        assert_eq!(lookup("OPENAI/GPT-OSS-120B").unwrap().name, "gpt-oss-120b");
        assert_eq!(
            lookup("deepseek-ai/DeepSeek-R1").unwrap().name,
            "DeepSeek-R1"
        );
    }

    #[test]
    fn unknown_model_names_the_closest() {
        let err = lookup("llama-3.1-7b").unwrap_err();
        let EstimateError::UnknownModel { closest, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(closest.len(), 3);
        assert!(closest.iter().any(|c| c == "Llama-3.1-8B"), "{closest:?}");
        assert!(err.to_string().contains("llama-3.1-7b"));
    }

    #[test]
    fn overlong_names_are_refused_before_any_matching() {
        let longest = format!("{}/{}", "o".repeat(96), "r".repeat(96));
        assert!(matches!(
            lookup(&longest),
            Err(EstimateError::UnknownModel { .. })
        ));
        let long = "m".repeat(4 << 20);
        let start = std::time::Instant::now();
        let err = lookup(&long).unwrap_err();
        let took = start.elapsed();
        assert_eq!(
            err,
            EstimateError::NameTooLong {
                what: "model name",
                len: 4 << 20,
                max: MAX_NAME_LEN
            }
        );
        assert!(err.to_string().len() < 100, "{err}");
        assert!(closest(&long, 3).is_empty());
        assert!(crate::lookup_gpu(&long).is_err());
        println!("4 MiB model name refused in {took:?}");
    }
}
