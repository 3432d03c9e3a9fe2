//! `gpupack estimate`: size an LLM server's GPU memory before deploying it.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::ValueEnum;
use estimator::{
    Architecture, DType, Estimate, Fit, ModelSpec, Moe, ServingField, ServingParams, ServingText,
    SlidingWindow, WeightFormat,
};
use serde::Serialize;

const GIB: f64 = (1u64 << 30) as f64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Arguments of `gpupack estimate`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    gpupack estimate meta-llama/Llama-3.1-70B-Instruct --tp 4 --max-model-len 8192 --max-num-seqs 16\n  \
    gpupack estimate qwen2.5-72b --quantization awq --gpu L40S --format json\n  \
    gpupack estimate --hf-config ./config.json --gpu-memory 80\n  \
    gpupack estimate --layers 32 --hidden-size 4096 --heads 32 --kv-heads 8 --intermediate-size 14336 \\\n    \
    --vocab-size 128256 --max-position-embeddings 8192")]
pub struct Args {
    /// Model: a catalog name (see --list-models), any Hugging Face id (its
    /// config.json and safetensors headers are read from HF_ENDPOINT with
    /// HF_TOKEN), or a local model directory.
    #[arg(conflicts_with = "hf_config")]
    pub model: Option<String>,

    /// Read a catalog model from the Hub too, for its checkpoint's exact bytes.
    #[arg(long)]
    pub from_hub: bool,

    /// Read the architecture and quantization from a Hugging Face config.json.
    #[arg(long, value_name = "PATH")]
    pub hf_config: Option<PathBuf>,

    #[command(flatten)]
    pub arch: ArchArgs,

    /// Compute dtype (bfloat16, float16, float32); defaults to the checkpoint's.
    #[arg(long)]
    pub dtype: Option<String>,

    /// Weight quantization (fp8, awq, awq-g64, gptq-int4, gptq-int8, mxfp4, ...);
    /// defaults to the checkpoint's own.
    #[arg(long)]
    pub quantization: Option<String>,

    /// Tensor-parallel size (GPUs per server).
    #[arg(
        long = "tensor-parallel-size",
        visible_alias = "tp",
        default_value_t = 1
    )]
    pub tensor_parallel_size: u32,

    /// Longest sequence in tokens; defaults to the model's maximum.
    #[arg(long)]
    pub max_model_len: Option<u64>,

    /// Full-length sequences the KV cache must hold at once (default 1).
    #[arg(long, conflicts_with = "kv_cache_tokens")]
    pub max_num_seqs: Option<u64>,

    /// KV-cache budget in tokens, instead of --max-num-seqs.
    #[arg(long)]
    pub kv_cache_tokens: Option<u64>,

    /// KV-cache dtype (auto, fp8, fp8_e5m2, bfloat16, ...).
    #[arg(long, default_value = "auto")]
    pub kv_cache_dtype: String,

    /// Serving engine (vllm, sglang, tgi), optionally with its release
    /// (vllm@0.19); without one, the largest figures of vLLM's V1 releases.
    #[arg(long, default_value = "vllm")]
    pub engine: String,

    /// Tokens per forward pass (sets the activation peak); defaults to the engine's.
    #[arg(long)]
    pub max_num_batched_tokens: Option<u64>,

    /// Target GPU by name (see --list-gpus).
    #[arg(long, conflicts_with = "gpu_memory")]
    pub gpu: Option<String>,

    /// Target GPU memory in GiB.
    #[arg(long, value_name = "GIB")]
    pub gpu_memory: Option<f64>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// List the catalog models and exit.
    #[arg(long)]
    pub list_models: bool,

    /// List the known GPUs and exit.
    #[arg(long)]
    pub list_gpus: bool,
}

/// Explicit architecture numbers, for a model in neither the catalog nor a config file.
#[derive(clap::Args, Debug, Default)]
pub struct ArchArgs {
    /// Decoder layers.
    #[arg(long, help_heading = "Architecture")]
    pub layers: Option<u32>,
    #[arg(long, help_heading = "Architecture")]
    pub hidden_size: Option<u64>,
    /// Attention heads.
    #[arg(long, help_heading = "Architecture")]
    pub heads: Option<u32>,
    /// KV heads (defaults to --heads).
    #[arg(long, help_heading = "Architecture")]
    pub kv_heads: Option<u32>,
    /// Head dim (defaults to hidden size / heads).
    #[arg(long, help_heading = "Architecture")]
    pub head_dim: Option<u64>,
    #[arg(long, help_heading = "Architecture")]
    pub intermediate_size: Option<u64>,
    #[arg(long, help_heading = "Architecture")]
    pub vocab_size: Option<u64>,
    #[arg(long, help_heading = "Architecture")]
    pub max_position_embeddings: Option<u64>,
    #[arg(long, help_heading = "Architecture")]
    pub tie_word_embeddings: bool,
    /// MoE experts per layer.
    #[arg(long, help_heading = "Architecture", requires_all = ["experts_per_token", "expert_intermediate_size"])]
    pub experts: Option<u32>,
    #[arg(long, help_heading = "Architecture")]
    pub experts_per_token: Option<u32>,
    #[arg(long, help_heading = "Architecture")]
    pub expert_intermediate_size: Option<u64>,
    /// Sliding-window size in tokens.
    #[arg(long, help_heading = "Architecture", requires = "windowed_layers")]
    pub sliding_window: Option<u64>,
    /// Layers that use the sliding window.
    #[arg(long, help_heading = "Architecture")]
    pub windowed_layers: Option<u32>,
}

impl ArchArgs {
    fn given(&self) -> bool {
        self.layers.is_some() || self.hidden_size.is_some() || self.heads.is_some()
    }

    fn to_spec(&self) -> anyhow::Result<ModelSpec> {
        let need = |v: Option<u64>, flag: &str| {
            v.with_context(|| format!("explicit architecture needs --{flag}"))
        };
        let layers = self
            .layers
            .context("explicit architecture needs --layers")?;
        let hidden = need(self.hidden_size, "hidden-size")?;
        let heads = self.heads.context("explicit architecture needs --heads")?;
        if heads == 0 {
            bail!("--heads must be at least 1");
        }
        let mut arch = Architecture::dense(
            layers,
            hidden,
            heads,
            self.kv_heads.unwrap_or(heads),
            self.head_dim.unwrap_or(hidden / u64::from(heads)),
            need(self.intermediate_size, "intermediate-size")?,
            need(self.vocab_size, "vocab-size")?,
            need(self.max_position_embeddings, "max-position-embeddings")?,
        );
        arch.tie_word_embeddings = self.tie_word_embeddings;
        if let (Some(e), Some(k), Some(i)) = (
            self.experts,
            self.experts_per_token,
            self.expert_intermediate_size,
        ) {
            arch.moe = Some(Moe {
                num_experts: e,
                experts_per_token: k,
                expert_intermediate_size: i,
                shared_intermediate_size: 0,
                first_dense_layers: 0,
                expert_bias: false,
            });
        }
        if let (Some(window), Some(windowed_layers)) = (self.sliding_window, self.windowed_layers) {
            arch.sliding_window = Some(SlidingWindow {
                window,
                windowed_layers,
            });
        }
        arch.validate().context("explicit architecture")?;
        Ok(ModelSpec {
            name: "custom".to_string(),
            arch,
            dtype: DType::Bfloat16,
            weights: WeightFormat::default(),
            checkpoint: None,
        })
    }
}

/// What `--format json` prints: the estimate, and the target's verdict when one is given.
#[derive(Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    estimate: &'a Estimate,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<Target<'a>>,
}

#[derive(Serialize)]
struct Target<'a> {
    gpu: String,
    gpu_memory_bytes: u64,
    fits: bool,
    gpus_needed: Option<u32>,
    /// Per-GPU figures at `gpus_needed` GPUs.
    per_gpu_at_gpus_needed: Option<&'a estimator::PerGpu>,
    engine_flags: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    alternative_engine_flags: &'a [String],
}

fn model_spec(args: &Args) -> anyhow::Result<ModelSpec> {
    model_spec_from(args, model_source::HubSettings::from_env())
}

/// A named model: a local directory, the catalog, or the Hub. The catalog
/// answers without the network unless the name announces a quantized
/// re-upload (whose config alone says how it stores its weights).
fn named_model(
    args: &Args,
    name: &str,
    hub: model_source::HubSettings,
) -> anyhow::Result<ModelSpec> {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the I/O runtime")
    };
    let dir = std::path::Path::new(name);
    if dir.is_dir() {
        let label = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| name.to_string());
        return runtime()?
            .block_on(model_source::resolve(
                &model_source::LocalDir::new(dir),
                &label,
            ))
            .with_context(|| format!("reading the model directory {name}"));
    }
    let named = estimator::quantization_named_in(name);
    let catalog = estimator::lookup(name);
    if let Ok(entry) = &catalog
        && !args.from_hub
        && (named.is_none() || args.quantization.is_some())
    {
        return Ok(entry.spec());
    }
    if model_source::hub::check_repo_id(name).is_err() {
        return Err(catalog.err().map(anyhow::Error::from).unwrap_or_else(|| {
            anyhow::anyhow!("{name:?} is not a Hugging Face id (organisation/name)")
        }));
    }
    let offline =
        std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "yes"));
    let hint = match named {
        Some(q) if args.quantization.is_none() => format!(
            "; the name says {q}: give --quantization (e.g. awq, fp8) to size it from the catalog's architecture"
        ),
        _ => String::new(),
    };
    if offline {
        bail!("{name} is not in the catalog and HF_HUB_OFFLINE is set{hint}");
    }
    let hub = model_source::Hub::new(hub)?;
    runtime()?
        .block_on(async { model_source::resolve(&hub.repo(name)?, name).await })
        .with_context(|| format!("reading {name} from {}{hint}", hub.settings().endpoint))
}

fn model_spec_from(args: &Args, hub: model_source::HubSettings) -> anyhow::Result<ModelSpec> {
    match (&args.model, &args.hf_config, args.arch.given()) {
        (Some(name), None, false) => named_model(args, name, hub),
        (None, Some(path), false) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let name = path
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string());
            estimator::parse_hf_config(&name, &text)
                .with_context(|| format!("in {}", path.display()))
        }
        (None, None, true) => args.arch.to_spec(),
        (None, None, false) => {
            bail!(
                "name a model, or give --hf-config PATH or the architecture flags (--layers, ...)"
            )
        }
        _ => bail!("give only one of: a model name, --hf-config, the architecture flags"),
    }
}

fn params(args: &Args) -> anyhow::Result<ServingParams> {
    ServingParams {
        tensor_parallel_size: args.tensor_parallel_size,
        max_model_len: args.max_model_len,
        max_num_seqs: args.max_num_seqs,
        kv_cache_tokens: args.kv_cache_tokens,
        max_num_batched_tokens: args.max_num_batched_tokens,
        ..ServingParams::default()
    }
    .with_text(&ServingText {
        dtype: args.dtype.as_deref(),
        quantization: args.quantization.as_deref(),
        kv_cache_dtype: Some(&args.kv_cache_dtype),
        engine: Some(&args.engine),
    })
    .map_err(|e| {
        let flag = match e.field {
            ServingField::Dtype => "--dtype",
            ServingField::Quantization => "--quantization",
            ServingField::KvCacheDtype => "--kv-cache-dtype",
            ServingField::Engine => "--engine",
        };
        anyhow::anyhow!("{flag}: {}", e.source)
    })
}

fn target(args: &Args) -> anyhow::Result<Option<(String, u64)>> {
    if let Some(name) = &args.gpu {
        let gpu = estimator::lookup_gpu(name)?;
        return Ok(Some((gpu.name.to_string(), gpu.memory_bytes)));
    }
    match args.gpu_memory {
        Some(g) if !(g.is_finite() && g > 0.0 && g < 1.0e6) => {
            bail!("--gpu-memory must be a positive number of GiB, got {g}")
        }
        Some(g) => Ok(Some((format!("{g} GiB"), (g * GIB) as u64))),
        None => Ok(None),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.list_models {
        print!("{}", list_models());
        return Ok(());
    }
    if args.list_gpus {
        for g in estimator::GPUS {
            println!(
                "{:<12} {:>7.2} GiB  {}",
                g.name,
                g.memory_bytes as f64 / GIB,
                g.aliases.join(", ")
            );
        }
        return Ok(());
    }
    let spec = model_spec(&args)?;
    let params = params(&args)?;
    let estimate = estimator::estimate(&spec, &params)?;
    let fit = match target(&args)? {
        Some((name, bytes)) => Some((name, estimator::fit(&spec, &params, bytes)?)),
        None => None,
    };
    let text = match args.format {
        Format::Json => {
            let out = Output {
                estimate: &estimate,
                target: fit.as_ref().map(|(gpu, f)| Target {
                    gpu: gpu.clone(),
                    gpu_memory_bytes: f.gpu_memory_bytes,
                    fits: f.fits,
                    gpus_needed: f.gpus_needed,
                    per_gpu_at_gpus_needed: f.gpus_needed.map(|_| &f.estimate.per_gpu),
                    engine_flags: &f.flags,
                    alternative_engine_flags: &f.alternative_flags,
                }),
            };
            serde_json::to_string_pretty(&out)? + "\n"
        }
        Format::Table => table(&estimate, &params, fit.as_ref()),
    };
    print!("{text}");
    Ok(())
}

fn list_models() -> String {
    let mut s = String::new();
    for e in estimator::CATALOG {
        let _ = writeln!(s, "{:<18} {:<36} {}", e.name, e.hf_id, e.quantization);
    }
    s
}

fn gib(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / GIB)
}

fn table(e: &Estimate, params: &ServingParams, fit: Option<&(String, Fit)>) -> String {
    let p = &e.per_gpu;
    let mut s = String::new();
    let _ = writeln!(s, "model              {}", e.model);
    let _ = writeln!(
        s,
        "engine             {} (dtype {}, weights {}, KV cache {})",
        e.engine, e.dtype, e.quantization, e.kv_cache_dtype
    );
    if let Some(stored) = e.checkpoint_bytes {
        let _ = writeln!(
            s,
            "checkpoint         {} GiB stored (weights sized from its safetensors headers)",
            gib(stored)
        );
    }
    let _ = writeln!(s, "tensor parallel    {} GPU(s)", e.tensor_parallel_size);
    let _ = writeln!(s, "max model length   {} tokens", e.max_model_len);
    let seqs = match params.max_num_seqs {
        Some(n) => format!(" ({n} full-length sequences)"),
        None if params.kv_cache_tokens.is_none() => " (1 full-length sequence)".to_string(),
        None => String::new(),
    };
    let _ = writeln!(s, "KV cache tokens    {}{seqs}", e.kv_cache_tokens);
    let _ = writeln!(s);
    let _ = writeln!(s, "per GPU                    GiB              bytes");
    for (label, bytes) in [
        ("weights", p.weights_bytes),
        ("KV cache", p.kv_cache_bytes),
        ("activations", p.activation_bytes),
        ("overhead", p.overhead_bytes),
        ("total", p.total_bytes),
    ] {
        let _ = writeln!(s, "  {label:<18} {:>10} {:>18}", gib(bytes), bytes);
    }
    let _ = writeln!(s, "  KV bytes per token {:>29}", p.kv_cache_bytes_per_token);
    let _ = writeln!(
        s,
        "\nrequest            gpupack.io/gpu: {}, gpupack.io/gpu-memory: {} ({} GiB on each GPU)",
        e.gpu_count(),
        e.gpu_memory_request_gib(),
        e.gpu_memory_gib()
    );
    if let Some((name, f)) = fit {
        let _ = writeln!(
            s,
            "\ntarget             {name} ({} GiB)",
            gib(f.gpu_memory_bytes)
        );
        let verdict = if f.fits {
            format!("fits on {} GPU(s)", e.tensor_parallel_size)
        } else {
            format!(
                "does not fit at tensor-parallel size {}",
                e.tensor_parallel_size
            )
        };
        let _ = writeln!(s, "verdict            {verdict}");
        match f.gpus_needed {
            Some(n) => {
                let _ = writeln!(
                    s,
                    "GPUs needed        {n} ({} GiB per GPU)",
                    gib(f.estimate.per_gpu.total_bytes)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "GPUs needed        none up to {} fits",
                    estimator::gpu::MAX_TENSOR_PARALLEL
                );
            }
        }
        let _ = writeln!(s, "{} flags", e.engine);
        let _ = writeln!(s, "  {}", f.flags.join(" "));
        let (outside, what) = f.estimate.outside_memory_flag();
        if outside > 0 {
            let _ = writeln!(
                s,
                "  (the fraction leaves {} GiB for {what}, which {} allocates outside it)",
                gib(outside),
                e.engine
            );
        }
        if !f.alternative_flags.is_empty() {
            let _ = writeln!(s, "  or, fixing the KV cache size:");
            let _ = writeln!(s, "  {}", f.alternative_flags.join(" "));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("estimate").chain(argv.iter().copied()))
            .map(|c| c.args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn json_has_the_documented_keys() {
        let args = parse(&["llama-3.1-8b", "--max-model-len", "8192", "--gpu", "L4"]);
        let spec = model_spec(&args).unwrap();
        let params = params(&args).unwrap();
        let e = estimator::estimate(&spec, &params).unwrap();
        let f = estimator::fit(&spec, &params, 23_034 << 20).unwrap();
        let out = Output {
            estimate: &e,
            target: Some(Target {
                gpu: "L4".into(),
                gpu_memory_bytes: f.gpu_memory_bytes,
                fits: f.fits,
                gpus_needed: f.gpus_needed,
                per_gpu_at_gpus_needed: f.gpus_needed.map(|_| &f.estimate.per_gpu),
                engine_flags: &f.flags,
                alternative_engine_flags: &f.alternative_flags,
            }),
        };
        let v = serde_json::to_value(&out).unwrap();
        for key in [
            "model",
            "tensor_parallel_size",
            "kv_cache_tokens",
            "per_gpu",
            "target",
        ] {
            assert!(v.get(key).is_some(), "{key} missing: {v}");
        }
        for key in [
            "weights_bytes",
            "kv_cache_bytes_per_token",
            "kv_cache_bytes",
            "activation_bytes",
            "overhead_bytes",
            "total_bytes",
        ] {
            assert!(v["per_gpu"].get(key).is_some(), "per_gpu.{key} missing");
        }
        assert_eq!(v["kv_cache_tokens"], 8192);
        // 16 GB of BF16 weights cannot fit a 22.5 GiB L4 with overhead? It does: check flags agree.
        let flags = v["target"]["engine_flags"].as_array().unwrap();
        assert!(
            flags
                .iter()
                .any(|f| f.as_str().unwrap().starts_with("--gpu-memory-utilization"))
        );
    }

    #[test]
    fn table_names_every_term_and_the_verdict() {
        let args = parse(&[
            "qwen2.5-72b",
            "--tp",
            "2",
            "--max-model-len",
            "4096",
            "--gpu",
            "h100",
        ]);
        let spec = model_spec(&args).unwrap();
        let params = params(&args).unwrap();
        let e = estimator::estimate(&spec, &params).unwrap();
        let f = estimator::fit(&spec, &params, target(&args).unwrap().unwrap().1).unwrap();
        let t = table(&e, &params, Some(&("H100-80GB".into(), f)));
        for word in [
            "weights",
            "KV cache",
            "activations",
            "overhead",
            "total",
            "verdict",
            "--tensor-parallel-size",
        ] {
            assert!(t.contains(word), "{word} missing:\n{t}");
        }
    }

    #[test]
    fn bad_input_is_named() {
        let args = parse(&["llama-3.1-8b", "--quantization", "int3"]);
        let err = params(&args).unwrap_err().to_string();
        assert!(err.contains("int3"), "{err}");
        let args = parse(&["no-such-model"]);
        let err = model_spec(&args).unwrap_err().to_string();
        assert!(err.contains("closest"), "{err}");
        let args = parse(&["--layers", "32"]);
        let err = model_spec(&args).unwrap_err().to_string();
        assert!(err.contains("--hidden-size"), "{err}");
        let args = parse(&["llama-3.1-8b", "--gpu-memory=-3"]);
        assert!(target(&args).is_err());
    }

    #[test]
    fn a_local_directory_and_a_quantized_name_without_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama",
          "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
          "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256,
          "max_position_embeddings": 131072, "torch_dtype": "bfloat16",
          "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128}}"#;
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let path = dir.path().to_string_lossy().into_owned();
        let spec = model_spec(&parse(&[&path])).unwrap();
        assert_eq!(
            spec.weights.quantization,
            estimator::Quantization::Awq { group_size: 128 }
        );
        // Named AWQ, the Hub unreachable: refused, naming --quantization.
        let offline = model_source::HubSettings {
            endpoint: "http://127.0.0.1:1".into(),
            token: None,
            revision: "main".into(),
            timeout: std::time::Duration::from_secs(2),
            cache: None,
        };
        let args = parse(&["Qwen/Qwen2.5-72B-Instruct-AWQ"]);
        let err = format!("{:#}", model_spec_from(&args, offline.clone()).unwrap_err());
        assert!(
            err.contains("--quantization") && err.contains("AWQ"),
            "{err}"
        );
        let args = parse(&["Qwen/Qwen2.5-72B-Instruct-AWQ", "--quantization", "awq"]);
        assert!(model_spec_from(&args, offline).is_ok());
    }

    #[test]
    fn explicit_architecture_equals_catalog() {
        let args = parse(&[
            "--layers",
            "32",
            "--hidden-size",
            "4096",
            "--heads",
            "32",
            "--kv-heads",
            "8",
            "--intermediate-size",
            "14336",
            "--vocab-size",
            "128256",
            "--max-position-embeddings",
            "131072",
        ]);
        let spec = model_spec(&args).unwrap();
        assert_eq!(spec.arch, estimator::lookup("Llama-3.1-8B").unwrap().arch);
    }
}
