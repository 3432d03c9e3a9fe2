//! Model annotations an LLM server pod may carry, so the scheduler sizes it
//! from the model instead of a guessed memory request.
//!
//! The pod still requests `gpupack.io/gpu` (so kube-scheduler sends it to the
//! extender and kubelet calls the device plugin); the extender derives the
//! memory per GPU from these annotations.
//!
//! ```yaml
//! metadata:
//!   annotations:
//!     gpupack.io/model: meta-llama/Llama-3.1-70B-Instruct
//!     gpupack.io/dtype: bfloat16
//!     gpupack.io/tensor-parallel-size: "4"
//!     gpupack.io/max-model-len: "8192"
//!     gpupack.io/max-num-seqs: "16"
//!     gpupack.io/kv-cache-dtype: fp8
//!     gpupack.io/engine: vllm@0.19
//! ```
//!
//! In a cluster that cannot reach the Hugging Face Hub, a model outside the
//! catalog is sized from its `config.json` (and optionally
//! `hf_quant_config.json` and `model.safetensors.index.json`) kept in a
//! ConfigMap of the pod's namespace, named by `gpupack.io/model-config`.
//!
//! ```
//! use std::collections::BTreeMap;
//! let annotations = BTreeMap::from([
//!     ("gpupack.io/model".to_string(), "meta-llama/Llama-3.1-70B-Instruct".to_string()),
//!     ("gpupack.io/tensor-parallel-size".to_string(), "4".to_string()),
//!     ("gpupack.io/max-model-len".to_string(), "8192".to_string()),
//! ]);
//! let m = proto::annotations::ModelAnnotations::from_annotations(&annotations).unwrap().unwrap();
//! assert_eq!(m.tensor_parallel_size, Some(4));
//! assert_eq!(m.kv_cache_tokens, None);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::FormatError;

const DOC: &str = "annotations";

/// Model id: a catalog name or a Hugging Face id. Its presence opts the pod in.
pub const MODEL: &str = "gpupack.io/model";
/// Weight dtype (`bfloat16`, `float16`, ...).
pub const DTYPE: &str = "gpupack.io/dtype";
/// Weight quantization (`fp8`, `awq`, `gptq`, `mxfp4`, ...).
pub const QUANTIZATION: &str = "gpupack.io/quantization";
/// Tensor-parallel size: the number of GPUs.
pub const TENSOR_PARALLEL_SIZE: &str = "gpupack.io/tensor-parallel-size";
/// Maximum model length (prompt + output tokens).
pub const MAX_MODEL_LEN: &str = "gpupack.io/max-model-len";
/// How many full-length sequences must fit in the KV cache at once.
pub const MAX_NUM_SEQS: &str = "gpupack.io/max-num-seqs";
/// KV-cache budget in tokens (instead of [`MAX_NUM_SEQS`]).
pub const KV_CACHE_TOKENS: &str = "gpupack.io/kv-cache-tokens";
/// KV-cache dtype (`auto`, `fp8`, ...).
pub const KV_CACHE_DTYPE: &str = "gpupack.io/kv-cache-dtype";
/// Serving engine (`vllm`, `sglang`, `tgi`), optionally with its release
/// (`vllm@0.19`): vLLM's runtime memory differs by release, and without one
/// the largest figure of its V1 releases is assumed.
pub const ENGINE: &str = "gpupack.io/engine";
/// Which container runs the server, when the pod has several using GPUs.
pub const CONTAINER: &str = "gpupack.io/container";
/// A ConfigMap of the pod's namespace holding the model's `config.json`:
/// the model is sized from it instead of the catalog or the Hub.
pub const MODEL_CONFIG: &str = "gpupack.io/model-config";

/// Every model annotation key, for listing in error messages and docs.
pub const ALL: &[&str] = &[
    MODEL,
    DTYPE,
    QUANTIZATION,
    TENSOR_PARALLEL_SIZE,
    MAX_MODEL_LEN,
    MAX_NUM_SEQS,
    KV_CACHE_TOKENS,
    KV_CACHE_DTYPE,
    ENGINE,
    CONTAINER,
    MODEL_CONFIG,
];

/// The most GPUs one tensor-parallel server can span on a node.
pub const MAX_TENSOR_PARALLEL_SIZE: u32 = 64;
/// Longest context any model supports today, with room to spare.
pub const MAX_MODEL_LEN_LIMIT: u64 = 16 << 20;

/// A pod's model annotations, syntactically checked. The meaning of the
/// names (is the model known, is the dtype valid for it) is the estimator's
/// to judge.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelAnnotations {
    /// [`MODEL`].
    pub model: String,
    /// [`DTYPE`].
    pub dtype: Option<String>,
    /// [`QUANTIZATION`].
    pub quantization: Option<String>,
    /// [`TENSOR_PARALLEL_SIZE`].
    pub tensor_parallel_size: Option<u32>,
    /// [`MAX_MODEL_LEN`].
    pub max_model_len: Option<u64>,
    /// [`MAX_NUM_SEQS`].
    pub max_num_seqs: Option<u64>,
    /// [`KV_CACHE_TOKENS`].
    pub kv_cache_tokens: Option<u64>,
    /// [`KV_CACHE_DTYPE`].
    pub kv_cache_dtype: Option<String>,
    /// [`ENGINE`].
    pub engine: Option<String>,
    /// [`CONTAINER`].
    pub container: Option<String>,
    /// [`MODEL_CONFIG`].
    pub model_config: Option<String>,
}

impl ModelAnnotations {
    /// Reads the model annotations from a pod's annotations: `Ok(None)` when
    /// the pod has no [`MODEL`] annotation (and no other model annotation).
    pub fn from_annotations(
        annotations: &BTreeMap<String, String>,
    ) -> Result<Option<ModelAnnotations>, FormatError> {
        let get = |key: &str| annotations.get(key).map(|v| v.trim());
        let Some(model) = get(MODEL) else {
            if let Some(stray) = ALL.iter().find(|k| annotations.contains_key(**k)) {
                return Err(FormatError::invalid(
                    DOC,
                    *stray,
                    format!("is set but {MODEL} is missing"),
                ));
            }
            return Ok(None);
        };
        if model.is_empty() {
            return Err(FormatError::invalid(DOC, MODEL, "must not be empty"));
        }
        let m = ModelAnnotations {
            model: model.to_string(),
            dtype: token(annotations, DTYPE, b"")?,
            quantization: token(annotations, QUANTIZATION, b"")?,
            tensor_parallel_size: number(
                annotations,
                TENSOR_PARALLEL_SIZE,
                1,
                MAX_TENSOR_PARALLEL_SIZE.into(),
            )?
            .map(|n| n as u32),
            max_model_len: number(annotations, MAX_MODEL_LEN, 1, MAX_MODEL_LEN_LIMIT)?,
            max_num_seqs: number(annotations, MAX_NUM_SEQS, 1, 1 << 20)?,
            kv_cache_tokens: number(annotations, KV_CACHE_TOKENS, 1, 1 << 40)?,
            kv_cache_dtype: token(annotations, KV_CACHE_DTYPE, b"")?,
            // A release may follow the engine: `vllm@0.8.3.dev172+g2b93162f`.
            engine: token(annotations, ENGINE, b"@+")?,
            container: token(annotations, CONTAINER, b"")?,
            model_config: config_map_name(annotations, MODEL_CONFIG)?,
        };
        if m.max_num_seqs.is_some() && m.kv_cache_tokens.is_some() {
            return Err(FormatError::invalid(
                DOC,
                KV_CACHE_TOKENS,
                format!("set either {MAX_NUM_SEQS} or {KV_CACHE_TOKENS}, not both"),
            ));
        }
        Ok(Some(m))
    }

    /// The annotations that express this value (the inverse of
    /// [`ModelAnnotations::from_annotations`]).
    pub fn to_annotations(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::from([(MODEL.to_string(), self.model.clone())]);
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                out.insert(k.to_string(), v);
            }
        };
        put(DTYPE, self.dtype.clone());
        put(QUANTIZATION, self.quantization.clone());
        put(
            TENSOR_PARALLEL_SIZE,
            self.tensor_parallel_size.map(|n| n.to_string()),
        );
        put(MAX_MODEL_LEN, self.max_model_len.map(|n| n.to_string()));
        put(MAX_NUM_SEQS, self.max_num_seqs.map(|n| n.to_string()));
        put(KV_CACHE_TOKENS, self.kv_cache_tokens.map(|n| n.to_string()));
        put(KV_CACHE_DTYPE, self.kv_cache_dtype.clone());
        put(ENGINE, self.engine.clone());
        put(CONTAINER, self.container.clone());
        put(MODEL_CONFIG, self.model_config.clone());
        out
    }
}

/// A short lowercase-insensitive word such as a dtype or engine name, of
/// letters, digits, `-`, `_`, `.` and the bytes of `extra`.
fn token(
    annotations: &BTreeMap<String, String>,
    key: &str,
    extra: &[u8],
) -> Result<Option<String>, FormatError> {
    let Some(v) = annotations.get(key).map(|v| v.trim()) else {
        return Ok(None);
    };
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.') || extra.contains(&c)
        });
    if !ok {
        let extra: String = extra
            .iter()
            .map(|c| format!(", '{}'", *c as char))
            .collect();
        return Err(FormatError::invalid(
            DOC,
            key,
            format!(
                "{:?} must be 1-63 of: letters, digits, '-', '_', '.'{extra}",
                crate::clip::clip(v).to_string()
            ),
        ));
    }
    Ok(Some(v.to_string()))
}

/// A ConfigMap name: a DNS subdomain (RFC 1123), as the API server requires.
fn config_map_name(
    annotations: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<String>, FormatError> {
    let Some(v) = annotations.get(key).map(|v| v.trim()) else {
        return Ok(None);
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if v.is_empty() || v.len() > 253 || !v.split('.').all(label_ok) {
        return Err(FormatError::invalid(
            DOC,
            key,
            format!(
                "{:?} is not a ConfigMap name (lowercase letters, digits, '-' and '.', at most 253)",
                crate::clip::clip(v).to_string()
            ),
        ));
    }
    Ok(Some(v.to_string()))
}

fn number(
    annotations: &BTreeMap<String, String>,
    key: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, FormatError> {
    let Some(v) = annotations.get(key).map(|v| v.trim()) else {
        return Ok(None);
    };
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        Ok(n) => Err(FormatError::invalid(
            DOC,
            key,
            format!("{n} is outside {min}..={max}"),
        )),
        Err(_) => Err(FormatError::invalid(
            DOC,
            key,
            format!(
                "{:?} is not a whole number",
                crate::clip::clip(v).to_string()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn absent_model_means_not_opted_in() {
        assert_eq!(
            ModelAnnotations::from_annotations(&ann(&[("a", "b")])).unwrap(),
            None
        );
    }

    #[test]
    fn stray_key_without_model_is_an_error() {
        let err =
            ModelAnnotations::from_annotations(&ann(&[(TENSOR_PARALLEL_SIZE, "2")])).unwrap_err();
        assert!(err.to_string().contains(TENSOR_PARALLEL_SIZE), "{err}");
    }

    #[test]
    fn a_model_config_names_a_config_map() {
        let m = ModelAnnotations::from_annotations(&ann(&[
            (MODEL, "acme/internal-8b"),
            (MODEL_CONFIG, "internal-8b.config"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(m.model_config.as_deref(), Some("internal-8b.config"));
        assert_eq!(
            ModelAnnotations::from_annotations(&m.to_annotations())
                .unwrap()
                .unwrap(),
            m
        );
        for bad in ["", "Upper", "-x", "a..b", "a_b", &"x".repeat(254)] {
            let err =
                ModelAnnotations::from_annotations(&ann(&[(MODEL, "m"), (MODEL_CONFIG, bad)]))
                    .unwrap_err();
            assert!(err.to_string().contains(MODEL_CONFIG), "{bad}: {err}");
        }
    }

    #[test]
    fn an_engine_may_name_its_release() {
        let m = ModelAnnotations::from_annotations(&ann(&[
            (MODEL, "m"),
            (ENGINE, "vllm@0.8.3.dev172+g2b93162f"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(m.engine.as_deref(), Some("vllm@0.8.3.dev172+g2b93162f"));
        let err = ModelAnnotations::from_annotations(&ann(&[(MODEL, "m"), (DTYPE, "bf16@1")]))
            .unwrap_err();
        assert!(err.to_string().contains(DTYPE), "{err}");
    }

    #[test]
    fn rejects_bad_values_naming_the_key() {
        for (key, value) in [
            (TENSOR_PARALLEL_SIZE, "0"),
            (TENSOR_PARALLEL_SIZE, "-2"),
            (TENSOR_PARALLEL_SIZE, "two"),
            (TENSOR_PARALLEL_SIZE, "65"),
            (MAX_MODEL_LEN, "1e9"),
            (MAX_MODEL_LEN, "99999999999"),
            (DTYPE, "bf 16"),
            (ENGINE, ""),
            (MODEL, " "),
        ] {
            let err =
                ModelAnnotations::from_annotations(&ann(&[(MODEL, "llama-3.1-8b"), (key, value)]))
                    .unwrap_err();
            assert!(err.to_string().contains(key), "{key}={value}: {err}");
        }
        let err = ModelAnnotations::from_annotations(&ann(&[
            (MODEL, "m"),
            (MAX_NUM_SEQS, "4"),
            (KV_CACHE_TOKENS, "4096"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
    }

    proptest! {
        #[test]
        fn round_trips(tp in proptest::option::of(1u32..=64), len in proptest::option::of(1u64..1_000_000),
                       seqs in proptest::option::of(1u64..1000), dtype in proptest::option::of("[a-z0-9]{1,10}")) {
            let m = ModelAnnotations {
                model: "meta-llama/Llama-3.1-8B".into(),
                dtype,
                tensor_parallel_size: tp,
                max_model_len: len,
                max_num_seqs: seqs,
                ..Default::default()
            };
            prop_assert_eq!(ModelAnnotations::from_annotations(&m.to_annotations()).unwrap(), Some(m));
        }

        #[test]
        fn never_panics(values in proptest::collection::vec(".{0,20}", 10)) {
            let mut a = BTreeMap::new();
            for (k, v) in ALL.iter().zip(values) {
                a.insert(k.to_string(), v);
            }
            let _ = ModelAnnotations::from_annotations(&a);
        }
    }
}
