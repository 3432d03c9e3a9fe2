//! From a model's files to the estimator's [`ModelSpec`]: `config.json`
//! (with its `quantization_config`), ModelOpt's `hf_quant_config.json`, and
//! the safetensors headers for the bytes each dtype really takes.

use std::collections::BTreeSet;

use estimator::ModelSpec;
use estimator::checkpoint::{self, CheckpointWeights};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::error::SourceError;
use crate::files::ModelFiles;

/// Largest `config.json` / `hf_quant_config.json` read; real ones are a few KB.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Largest safetensors index read; a 600B model's is about 10 MB.
const MAX_INDEX_BYTES: u64 = 64 << 20;
/// Most shards an index may name.
const MAX_SHARDS: usize = 4096;
/// First read of a shard: most headers fit, so one request usually does.
const FIRST_READ: u64 = 256 << 10;
/// Shard headers read at once.
const PARALLEL_READS: usize = 8;

const INDEX: &str = "model.safetensors.index.json";
const SINGLE: &str = "model.safetensors";

/// What resolution reads of a model: its `config.json` (with a ModelOpt
/// checkpoint's quantization folded in) and its safetensors tallies; small
/// enough to keep on disk (see [`crate::disk`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelFacts {
    pub config: String,
    pub checkpoint: Option<CheckpointWeights>,
}

/// Reads the model behind `files`; `name` labels the spec.
pub async fn resolve<F: ModelFiles>(files: &F, name: &str) -> Result<ModelSpec, SourceError> {
    let facts = read_facts(files).await?;
    spec_of(name, &files.describe(), &facts)
}

/// Reads what sizing needs of the model behind `files`.
pub async fn read_facts<F: ModelFiles>(files: &F) -> Result<ModelFacts, SourceError> {
    let what = files.describe();
    let config = files
        .read("config.json", MAX_CONFIG_BYTES)
        .await?
        .ok_or_else(|| SourceError::FileNotFound {
            repo: what.clone(),
            file: "config.json".into(),
        })?;
    let quant = files.read("hf_quant_config.json", MAX_CONFIG_BYTES).await?;
    let config = with_modelopt_quantization(&what, &config, quant.as_deref())?;
    // A config the estimator cannot read fails before any shard is read.
    estimator::parse_hf_config(&what, &config).map_err(|source| SourceError::Malformed {
        what: format!("{what}/config.json"),
        source,
    })?;
    let checkpoint = read_checkpoint(files).await?;
    match &checkpoint {
        Some(c) => {
            tracing::debug!(model = %what, tensors = c.tensors(), bytes = c.total_bytes(), "read safetensors headers")
        }
        None => {
            tracing::info!(model = %what, "no safetensors checkpoint; weights sized from the architecture")
        }
    }
    Ok(ModelFacts { config, checkpoint })
}

/// The spec `facts` describe; `what` names their source in messages.
pub fn spec_of(name: &str, what: &str, facts: &ModelFacts) -> Result<ModelSpec, SourceError> {
    let mut spec = estimator::parse_hf_config(name, &facts.config).map_err(|source| {
        SourceError::Malformed {
            what: format!("{what}/config.json"),
            source,
        }
    })?;
    spec.checkpoint = facts.checkpoint.clone();
    Ok(spec)
}

fn malformed(what: String, msg: impl Into<String>) -> SourceError {
    SourceError::Malformed {
        what,
        source: estimator::EstimateError::HfConfig(msg.into()),
    }
}

/// `config.json` as text, with the quantization of a ModelOpt checkpoint
/// (`hf_quant_config.json`, which TensorRT Model Optimizer writes instead
/// of a `quantization_config`) folded in.
fn with_modelopt_quantization(
    what: &str,
    config: &[u8],
    quant: Option<&[u8]>,
) -> Result<String, SourceError> {
    let text = String::from_utf8(config.to_vec())
        .map_err(|_| malformed(format!("{what}/config.json"), "not UTF-8"))?;
    let Some(quant) = quant else {
        return Ok(text);
    };
    let file = format!("{what}/hf_quant_config.json");
    let mut root: Value = serde_json::from_str(&text)
        .map_err(|e| malformed(format!("{what}/config.json"), format!("not JSON: {e}")))?;
    if root
        .get("quantization_config")
        .is_some_and(|q| !q.is_null())
    {
        return Ok(text);
    }
    let q: Value = serde_json::from_slice(quant)
        .map_err(|e| malformed(file.clone(), format!("not JSON: {e}")))?;
    let section = q.get("quantization").unwrap_or(&q);
    let algo = section
        .get("quant_algo")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(file.clone(), "no quantization.quant_algo"))?;
    let method = match algo.to_ascii_uppercase().as_str() {
        "FP8" => "fp8",
        "NVFP4" => "modelopt_fp4",
        other => {
            return Err(malformed(
                file,
                format!("quant_algo {other:?} is not supported (FP8, NVFP4)"),
            ));
        }
    };
    let ignore = section
        .get("exclude_modules")
        .cloned()
        .unwrap_or_else(|| json!([]));
    if let Some(obj) = root.as_object_mut() {
        obj.insert(
            "quantization_config".into(),
            json!({"quant_method": method, "ignore": ignore}),
        );
    }
    Ok(root.to_string())
}

/// The safetensors shards: those the index names, or the single file.
async fn shard_names<F: ModelFiles>(files: &F) -> Result<Vec<String>, SourceError> {
    let what = files.describe();
    let Some(index) = files.read(INDEX, MAX_INDEX_BYTES).await? else {
        return Ok(vec![SINGLE.to_string()]);
    };
    let index: Value = serde_json::from_slice(&index)
        .map_err(|e| malformed(format!("{what}/{INDEX}"), format!("not JSON: {e}")))?;
    let map = index
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| malformed(format!("{what}/{INDEX}"), "no weight_map"))?;
    let mut shards = BTreeSet::new();
    for v in map.values() {
        let shard = v
            .as_str()
            .filter(|s| s.ends_with(".safetensors") && !s.contains("..") && !s.starts_with('/'))
            .ok_or_else(|| {
                malformed(
                    format!("{what}/{INDEX}"),
                    format!("weight_map names {v}, not a .safetensors file of the repo"),
                )
            })?;
        shards.insert(shard.to_string());
        if shards.len() > MAX_SHARDS {
            return Err(malformed(
                format!("{what}/{INDEX}"),
                format!("more than {MAX_SHARDS} shards"),
            ));
        }
    }
    Ok(shards.into_iter().collect())
}

/// The bytes an index says the whole checkpoint takes (`metadata.total_size`),
/// for sources that hold the index but not the shards; `None` without one.
async fn index_total<F: ModelFiles>(files: &F) -> Result<Option<CheckpointWeights>, SourceError> {
    let what = format!("{}/{INDEX}", files.describe());
    let Some(index) = files.read(INDEX, MAX_INDEX_BYTES).await? else {
        return Ok(None);
    };
    let index: Value = serde_json::from_slice(&index)
        .map_err(|e| malformed(what.clone(), format!("not JSON: {e}")))?;
    let total = index
        .pointer("/metadata/total_size")
        .and_then(Value::as_u64)
        .filter(|t| *t > 0)
        .ok_or_else(|| malformed(what, "no metadata.total_size"))?;
    let mut weights = CheckpointWeights::default();
    weights.by_dtype.insert(
        "total_size (index)".into(),
        checkpoint::DtypeTally {
            tensors: 0,
            elements: 0,
            bytes: total,
        },
    );
    Ok(Some(weights))
}

/// Tallies every shard's header; `None` when the model has no safetensors.
async fn read_checkpoint<F: ModelFiles>(
    files: &F,
) -> Result<Option<CheckpointWeights>, SourceError> {
    if !files.has_shards() {
        return index_total(files).await;
    }
    let shards = shard_names(files).await?;
    let single = shards.len() == 1 && shards[0] == SINGLE;
    let tallies: Vec<Option<CheckpointWeights>> = futures::stream::iter(shards)
        .map(|shard| async move { read_header(files, &shard).await })
        .buffer_unordered(PARALLEL_READS)
        .try_collect()
        .await?;
    let mut total = CheckpointWeights::default();
    for (i, t) in tallies.iter().enumerate() {
        match t {
            Some(t) => total.merge(t),
            // A missing single file means a checkpoint in another format.
            None if single && i == 0 => return Ok(None),
            None => {
                return Err(SourceError::FileNotFound {
                    repo: files.describe(),
                    file: "a shard its safetensors index names".into(),
                });
            }
        }
    }
    Ok(Some(total))
}

/// One shard's header, by range reads: the length prefix and as much as
/// one read brings, then the rest if the header is longer.
async fn read_header<F: ModelFiles>(
    files: &F,
    shard: &str,
) -> Result<Option<CheckpointWeights>, SourceError> {
    let what = format!("{}/{shard}", files.describe());
    let Some(mut head) = files.read_range(shard, 0, FIRST_READ).await? else {
        return Ok(None);
    };
    let malformed_header = |source| SourceError::Malformed {
        what: what.clone(),
        source,
    };
    let len = checkpoint::header_length(shard, &head).map_err(malformed_header)?;
    let end = 8 + len;
    if (head.len() as u64) < end {
        let have = head.len() as u64;
        let rest = files
            .read_range(shard, have, end - have)
            .await?
            .unwrap_or_default();
        head.extend_from_slice(&rest);
    }
    let header = head
        .get(8..end as usize)
        .ok_or_else(|| malformed(what.clone(), format!("ends within its {len}-byte header")))?;
    checkpoint::parse_safetensors_header(shard, header)
        .map(Some)
        .map_err(malformed_header)
}
