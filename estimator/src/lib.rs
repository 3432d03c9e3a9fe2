//! GPU memory estimation for LLM inference servers.
//!
//! Sizes a server from the model itself, per tensor-parallel rank: weights as
//! the checkpoint stores them and the engine shards them, the KV cache for the
//! sequences it must hold, the forward pass's activation peak, and the
//! runtime's own overhead. Pure: no I/O; callers read files and pass text.
//!
//! ```
//! use estimator::{ServingParams, estimate_catalog_model};
//!
//! let params = ServingParams {
//!     tensor_parallel_size: 2,
//!     max_model_len: Some(8192),
//!     max_num_seqs: Some(16),
//!     kv_cache_dtype: "fp8".parse().unwrap(),
//!     ..ServingParams::default()
//! };
//! let e = estimate_catalog_model("meta-llama/Llama-3.1-70B-Instruct", &params).unwrap();
//! assert_eq!(e.gpu_count(), 2);
//! assert!(e.gpu_memory_gib() > 70);
//! // `gpupack.io/gpu-memory` counts GiB over all the server's GPUs.
//! assert_eq!(e.gpu_memory_request_gib(), 2 * e.gpu_memory_gib());
//! ```

pub mod arch;
pub mod catalog;
pub mod checkpoint;
pub mod dtype;
pub mod engine;
pub mod error;
pub mod estimate;
pub mod gpu;
pub mod hf_config;
pub mod kv;
pub mod quant;
pub mod weights;

pub use arch::{
    Architecture, AttentionKind, Mla, MlpKind, Moe, SlidingWindow, VisionEncoder, VisionProjector,
};
pub use catalog::{CATALOG, CatalogEntry, ModelSpec, lookup};
pub use checkpoint::{CheckpointWeights, DtypeTally, quantization_named_in};
pub use dtype::{DType, KvCacheDtype};
pub use engine::{Engine, EngineRelease, MemoryFlag, Version};
pub use error::{EstimateError, ParseError};
pub use estimate::{
    Estimate, Fraction, Overhead, PerGpu, ServingField, ServingParams, ServingText,
    ServingTextError, estimate, estimate_catalog_model,
};
pub use gpu::{Fit, GPUS, Gpu, fit, lookup_gpu};
pub use hf_config::parse_hf_config;
pub use quant::{Quantization, QuantizedModules, WeightFormat};
pub use weights::WeightBreakdown;
