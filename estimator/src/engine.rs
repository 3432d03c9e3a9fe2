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
            _ => Err(ParseError::new(
                "engine",
                s,
                "vllm, sglang, tgi, optionally with a release (vllm@0.11)",
            )),
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
    /// The least CUDA-graph memory on any rank.
    pub cuda_graph_floor_bytes: u64,
    /// How the profiling run's logits are sized.
    pub logits: Logits,
    /// Tokens in one forward pass when the user sets none (the activation peak
    /// is profiled at this size).
    pub default_max_num_batched_tokens: u64,
    /// Sequences in one decode step when the user sets none.
    pub default_max_num_seqs: u64,
    /// How the engine's memory flag divides the GPU.
    pub memory_flag: MemoryFlag,
}

/// What an engine's memory flag (`--gpu-memory-utilization`,
/// `--mem-fraction-static`, `--cuda-memory-fraction`) stands for, and which
/// of the estimate's terms the engine allocates outside it. A flag set to
/// the grant's share of the GPU would let the engine hold those terms on
/// top of the grant, at the expense of the pods beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryFlag {
    /// vLLM: the flag times the GPU's memory is the process's budget, and
    /// the KV pool is that budget less weights, the profiled activation
    /// peak and non-torch memory. V1 starts counting after its CUDA context
    /// ("Free memory on device 78.57/79.18 GiB" at start-up, before the
    /// budget is taken); releases before 0.21 capture CUDA graphs after
    /// sizing the pool, outside the budget
    /// (<https://github.com/vllm-project/vllm/issues/17549>), and 0.21
    /// profiles them into it ("CUDA graph memory profiling is enabled
    /// (default since v0.21.0)",
    /// <https://github.com/gpustack/runner/pull/251>).
    Budget {
        runtime_outside: bool,
        cuda_graphs_outside: bool,
    },
    /// SGLang (`--mem-fraction-static`) and TGI (`--cuda-memory-fraction`):
    /// the KV pool takes the memory free after loading less (1 − flag) of
    /// the GPU's total, which must hold what the engine allocates after the
    /// pool (activations and CUDA graphs). Free memory already excludes the
    /// pods beside it, and the token cap the flags also set
    /// (`--max-total-tokens`, `--max-batch-total-tokens`) keeps the pool to
    /// the plan.
    Headroom,
}

/// The logits buffer of the engine's profiling run, which sets the
/// activation peak of most models (vocabularies of 128k–262k entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Logits {
    /// FP32 logits for the sampled rows (`max_num_seqs`) only, on top of
    /// the forward pass's temporaries.
    SampledRows,
    /// This many bytes per entry for every token of the profiling batch
    /// (`max_num_batched_tokens × vocabulary`); the peak is the larger of
    /// that and the forward pass's temporaries.
    BatchBytesPerEntry(u64),
}

/// vLLM before V1 (0.7 and earlier). Calibration:
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
pub const VLLM_V0: EngineProfile = EngineProfile {
    vocab_padding: 64,
    mxfp4_intermediate_alignment: 256,
    keeps_rotary_cache: true,
    honours_sliding_window: true,
    runtime_bytes: gib_hundredths(179),
    collective_bytes: gib_hundredths(179),
    cuda_graph_bytes_per_layer_hidden: 6_880,
    cuda_graph_floor_bytes: 0,
    logits: Logits::SampledRows,
    default_max_num_batched_tokens: 8192,
    default_max_num_seqs: 256,
    // V0 counts its non-torch memory within the budget ("non_torch_memory
    // takes 0.39GiB" in its budget line) and captures graphs after.
    memory_flag: MemoryFlag::Budget {
        runtime_outside: false,
        cuda_graphs_outside: true,
    },
};

/// vLLM V1 from 0.8 to 0.16. Its profiling run computes logits for the
/// whole batch: "torch peak memory increase" on an H100 at 8192 batched
/// tokens was 4.76 GiB for Llama-3.1-8B (vocabulary 128256), 5.56 GiB for
/// Qwen3-0.6B and 5.64 GiB for Qwen3-32B (151936), 7.38 GiB for gpt-oss-20b
/// and -120b (201088) under v0.11
/// (<https://github.com/llm-d/llm-d-benchmark/blob/4f4d44943c39b76b28e30dfa1fb0dfaf1ee894b5/config_explorer/empirical-vllm-memory-results.md>),
/// and 5.64 GiB for Qwen3-14B under v0.15 and v0.16
/// (<https://github.com/llm-d-incubation/llm-d-planner/blob/313476899acd0d946d4ddda39719e84c32ee2832/accuracy/blog-gpu-capacity.md>):
/// 4.6–4.9 bytes per token·entry, rounded up to 5.
/// - runtime 1 GiB: "non-torch memory" 0.13 GiB at TP 1 plus the CUDA
///   context vLLM leaves out of its budget ("Free memory on device
///   78.57/79.18 GiB" at start-up: 0.61 GiB), same source;
/// - collectives 1 GiB: non-torch 0.54–0.55 GiB at TP 2 (same source);
/// - CUDA graphs at least 1 GiB: "Graph capturing finished … took 0.50 GiB"
///   (Qwen2-7B, TP 1) and 0.65 GiB (TP 2) under v0.10.1
///   (<https://github.com/dennislee22/vLLM-benchmarking/tree/391660db66f5a6e44ea8ed82decf48a88e55e992/log>),
///   0.39–1.03 GiB for gpt-oss (llm-d-benchmark above); they no longer
///   shrink with TP.
pub const VLLM_V1_EARLY: EngineProfile = EngineProfile {
    runtime_bytes: gib_hundredths(100),
    collective_bytes: gib_hundredths(100),
    cuda_graph_floor_bytes: gib_hundredths(100),
    logits: Logits::BatchBytesPerEntry(5),
    memory_flag: MemoryFlag::Budget {
        runtime_outside: true,
        cuda_graphs_outside: true,
    },
    ..VLLM_V0
};

/// vLLM V1 from 0.17: the profiling run's peak fell by 60 % (Qwen3-14B
/// 5.64 → 2.23 GiB). Under v0.19 on an H100 at 8192 batched tokens
/// (<https://github.com/llm-d-incubation/llm-d-planner/blob/964c9dce4053d800cc2a0742e821b69b128b4a56/data/configuration/vllm_memory_constants.json>,
/// from the runs of
/// <https://github.com/llm-d-incubation/llm-d-planner/blob/fbd68515a903397a1b785a2189dc7512b0d55680/accuracy/results/v0.19.0/accuracy_report.md>):
/// Llama 1.89 GiB (vocabulary 128256), Qwen3 2.21 (151936), Gemma 2 3.65
/// (256000), Gemma 3 3.94 (262208): 1.9–2.0 bytes per token·entry, so 2.
/// - runtime 1 GiB: non-torch 0.25–0.27 GiB at TP 1 plus the CUDA context;
/// - collectives 2 GiB: non-torch 2.06–2.13 GiB per GPU at TP 2 and 4;
/// - CUDA graphs at least 1 GiB: 0.51–1.85 GiB, mean 1.03, in those runs.
pub const VLLM_V1: EngineProfile = EngineProfile {
    collective_bytes: gib_hundredths(200),
    logits: Logits::BatchBytesPerEntry(2),
    ..VLLM_V1_EARLY
};

/// vLLM V1 from 0.21: the figures of [`VLLM_V1`], with CUDA graphs
/// profiled into the budget of `--gpu-memory-utilization`.
pub const VLLM_V1_GRAPHS_PROFILED: EngineProfile = EngineProfile {
    memory_flag: MemoryFlag::Budget {
        runtime_outside: true,
        cuda_graphs_outside: false,
    },
    ..VLLM_V1
};

/// vLLM when no version is named: each term the larger of the V1 releases',
/// so that the estimate holds whichever V1 release runs (naming the
/// version, `vllm@0.19`, gives the tighter figure).
pub const VLLM: EngineProfile = EngineProfile {
    collective_bytes: gib_hundredths(200),
    logits: Logits::BatchBytesPerEntry(5),
    ..VLLM_V1_EARLY
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
    cuda_graph_floor_bytes: 0,
    logits: Logits::SampledRows,
    default_max_num_batched_tokens: 8192,
    default_max_num_seqs: 256,
    memory_flag: MemoryFlag::Headroom,
};

/// TGI shards like vLLM (its flash layers pad vocabularies the same way) but
/// allocates its paged KV cache for full length on every layer. No public
/// TGI measurement separates runtime from activations, so vLLM's figures stand.
pub const TGI: EngineProfile = EngineProfile {
    honours_sliding_window: false,
    mxfp4_intermediate_alignment: 1,
    memory_flag: MemoryFlag::Headroom,
    ..VLLM_V0
};

impl Engine {
    /// The figures for this engine when no release is named.
    pub const fn profile(self) -> &'static EngineProfile {
        match self {
            Engine::Vllm => &VLLM,
            Engine::Sglang => &SGLANG,
            Engine::Tgi => &TGI,
        }
    }
}

/// An engine's release, `major.minor` (patch releases keep the memory
/// behaviour of their minor release).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32) -> Version {
        Version { major, minor }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for Version {
    type Err = ParseError;

    /// `0.11`, `0.10.1.1`, `v0.19.0`, `0.8.3.dev172+g2b93162f`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseError::new("engine version", s, "MAJOR.MINOR, e.g. 0.11 or 0.10.1");
        let t = s.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let mut parts = t.split('.');
        let number = |p: Option<&str>| -> Result<u32, ParseError> {
            let p = p.ok_or_else(bad)?;
            if p.is_empty() || p.len() > 6 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            p.parse().map_err(|_| bad())
        };
        Ok(Version {
            major: number(parts.next())?,
            minor: number(parts.next())?,
        })
    }
}

/// An engine and, optionally, its release: `vllm`, `vllm@0.11`,
/// `sglang@0.4.6` — as `gpupack.io/engine`, a workload's `engine:` and
/// `gpupack estimate --engine` write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EngineRelease {
    pub engine: Engine,
    pub version: Option<Version>,
}

impl EngineRelease {
    pub const fn new(engine: Engine) -> EngineRelease {
        EngineRelease {
            engine,
            version: None,
        }
    }

    /// The memory figures of this release: vLLM's by release (V0 before
    /// 0.8, V1 before 0.17, V1 from 0.17, with graphs in the budget from
    /// 0.21; the largest of the V1 figures when no release is named);
    /// SGLang's and TGI's are one each.
    pub fn profile(&self) -> &'static EngineProfile {
        match (self.engine, self.version) {
            (Engine::Vllm, Some(v)) if v < Version::new(0, 8) => &VLLM_V0,
            (Engine::Vllm, Some(v)) if v < Version::new(0, 17) => &VLLM_V1_EARLY,
            (Engine::Vllm, Some(v)) if v < Version::new(0, 21) => &VLLM_V1,
            (Engine::Vllm, Some(_)) => &VLLM_V1_GRAPHS_PROFILED,
            (engine, _) => engine.profile(),
        }
    }
}

impl From<Engine> for EngineRelease {
    fn from(engine: Engine) -> Self {
        EngineRelease::new(engine)
    }
}

impl fmt::Display for EngineRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(v) => write!(f, "{}@{v}", self.engine),
            None => write!(f, "{}", self.engine),
        }
    }
}

impl FromStr for EngineRelease {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('@') {
            None => Ok(EngineRelease::new(s.parse()?)),
            Some((engine, version)) => Ok(EngineRelease {
                engine: engine.parse()?,
                version: Some(version.parse()?),
            }),
        }
    }
}

impl Serialize for EngineRelease {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Bytes in GiB, for display.
pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / GIB
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_read_as_users_write_them() {
        let r: EngineRelease = "vllm@0.10.1.1".parse().unwrap();
        assert_eq!(r.version, Some(Version::new(0, 10)));
        assert_eq!(r.to_string(), "vllm@0.10");
        let r: EngineRelease = " SGLang ".parse().unwrap();
        assert_eq!(r, EngineRelease::new(Engine::Sglang));
        assert_eq!(
            "vllm@v0.8.3.dev172+g2b93162f"
                .parse::<EngineRelease>()
                .unwrap()
                .version,
            Some(Version::new(0, 8))
        );
        for bad in [
            "vllm@",
            "vllm@latest",
            "vllm@0",
            "ollama@0.1",
            "vllm@-1.2",
            "vllm@99999999.1",
        ] {
            let e = bad.parse::<EngineRelease>().unwrap_err();
            assert!(e.to_string().contains("expected"), "{bad}: {e}");
        }
    }

    #[test]
    fn each_vllm_release_has_its_figures_and_no_release_takes_the_largest() {
        let at = |v: &str| {
            *format!("vllm@{v}")
                .parse::<EngineRelease>()
                .unwrap()
                .profile()
        };
        assert_eq!(at("0.6"), VLLM_V0);
        assert_eq!(at("0.8"), VLLM_V1_EARLY);
        assert_eq!(at("0.16.1"), VLLM_V1_EARLY);
        assert_eq!(at("0.17"), VLLM_V1);
        assert_eq!(at("0.20.2"), VLLM_V1);
        assert_eq!(at("0.21"), VLLM_V1_GRAPHS_PROFILED);
        assert_eq!(at("1.2"), VLLM_V1_GRAPHS_PROFILED);
        let any = *EngineRelease::new(Engine::Vllm).profile();
        // With no release named, the flag leaves room for everything any
        // V1 release holds outside it.
        assert_eq!(
            any.memory_flag,
            MemoryFlag::Budget {
                runtime_outside: true,
                cuda_graphs_outside: true
            }
        );
        for v1 in [VLLM_V1_EARLY, VLLM_V1, VLLM_V1_GRAPHS_PROFILED] {
            assert!(any.runtime_bytes >= v1.runtime_bytes);
            assert!(any.collective_bytes >= v1.collective_bytes);
            assert!(any.cuda_graph_floor_bytes >= v1.cuda_graph_floor_bytes);
            let (Logits::BatchBytesPerEntry(a), Logits::BatchBytesPerEntry(b)) =
                (any.logits, v1.logits)
            else {
                panic!("V1 sizes logits by batch");
            };
            assert!(a >= b);
        }
    }
}
