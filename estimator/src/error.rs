//! Errors of the estimator. Every message names the field and the value at fault.

use thiserror::Error;

/// A string that does not name a known dtype, quantization, engine or GPU.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown {what} {value:?}; expected one of: {expected}")]
pub struct ParseError {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, value: &str, expected: &'static str) -> Self {
        ParseError {
            what,
            value: value.to_string(),
            expected,
        }
    }
}

/// Why an estimate cannot be made: each is something the engine itself would
/// refuse at start-up, or input the estimator cannot interpret.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EstimateError {
    #[error("unknown model {name:?}; closest catalog entries: {}", closest.join(", "))]
    UnknownModel { name: String, closest: Vec<String> },

    /// Longer than any catalog name or Hugging Face id could be; refused
    /// before any lookup, so no work grows with the input.
    #[error("{what} is {len} bytes long; a name is at most {max} bytes")]
    NameTooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },

    #[error("unknown GPU {name:?}; closest known GPUs: {}", closest.join(", "))]
    UnknownGpu { name: String, closest: Vec<String> },

    #[error(transparent)]
    Parse(#[from] ParseError),

    #[error("invalid architecture: {field} must be {requirement} (got {value})")]
    InvalidArchitecture {
        field: &'static str,
        requirement: &'static str,
        value: u64,
    },

    #[error("tensor-parallel size must be at least 1")]
    ZeroTensorParallel,

    #[error(
        "tensor-parallel size {tensor_parallel_size} does not divide the {attention_heads} attention heads"
    )]
    TensorParallelHeads {
        tensor_parallel_size: u32,
        attention_heads: u32,
    },

    #[error(
        "tensor-parallel size {tensor_parallel_size} and the {kv_heads} KV heads must divide one another"
    )]
    TensorParallelKvHeads {
        tensor_parallel_size: u32,
        kv_heads: u32,
    },

    #[error("max model length {requested} exceeds the model's maximum of {model_max} tokens")]
    MaxModelLenTooLong { requested: u64, model_max: u64 },

    #[error("max model length must be at least 1 token")]
    ZeroMaxModelLen,

    #[error(
        "KV-cache budget of {kv_cache_tokens} tokens is smaller than one full-length sequence of {max_model_len} tokens"
    )]
    KvBudgetTooSmall {
        kv_cache_tokens: u64,
        max_model_len: u64,
    },

    #[error("give either a number of sequences or a KV-cache token budget, not both")]
    ConflictingKvBudget,

    #[error("number of concurrent sequences must be at least 1")]
    ZeroSequences,

    #[error("{what} is too large to compute")]
    Overflow { what: &'static str },

    #[error("invalid Hugging Face config: {0}")]
    HfConfig(String),

    #[error("invalid safetensors header: {0}")]
    SafetensorsHeader(String),

    /// The name announces a quantized checkpoint but nothing confirms its
    /// format: sizing it as 16-bit would ask for 2-4x the memory.
    #[error(
        "model {model:?} is named as {named}-quantized but its config.json was not read, so its \
         weight format is unknown; give the quantization explicitly rather than size it as 16-bit"
    )]
    QuantizationUnconfirmed { model: String, named: &'static str },
}
