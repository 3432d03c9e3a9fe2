//! Reading a model's sizing facts from where it lives: a Hugging Face Hub
//! repository (`HF_ENDPOINT`, `HF_TOKEN`), a local directory, or files
//! held in memory (an air-gapped cluster's ConfigMap).
//!
//! The estimator is pure and takes text; this crate does the I/O it needs:
//! `config.json` with its `quantization_config`, ModelOpt's
//! `hf_quant_config.json`, and each safetensors shard's header by `Range`
//! requests (the 8-byte length, then the JSON), never the weights. The
//! result is an [`estimator::ModelSpec`] whose checkpoint tallies give the
//! exact bytes per stored dtype.
//!
//! - [`resolve::resolve`]: one model, now, from any [`files::ModelFiles`];
//! - [`registry::Registry`]: a bounded in-memory cache that resolves in the
//!   background and retries failures with backoff, for callers that must
//!   not wait (the extender's filter);
//! - [`disk::DiskCache`]: optionally, what was read from the Hub kept on
//!   disk, bounded, across restarts.

pub mod disk;
pub mod error;
pub mod files;
pub mod hub;
pub mod registry;
pub mod resolve;

pub use disk::DiskCache;
pub use error::SourceError;
pub use files::{InMemory, LocalDir, ModelFiles};
pub use hub::{DEFAULT_ENDPOINT, Hub, HubSettings};
pub use registry::{Fetch, Lookup, ModelLookup, Offline, Registry, RegistrySettings};
pub use resolve::{ModelFacts, read_facts, resolve, spec_of};
