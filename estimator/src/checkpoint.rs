//! What a checkpoint really stores, read from its safetensors headers (the
//! text; the caller fetches it): bytes and parameters per stored dtype.
//!
//! The architecture formula counts parameters from `config.json` and prices
//! them by the quantization it names; the headers give the exact bytes,
//! scales, zero points and packed integers included, so an estimate made
//! from them cannot mistake a quantized checkpoint for a 16-bit one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::EstimateError;

/// Largest safetensors header read (the format's own readers refuse more
/// than 100 MB; real headers are well under 10 MB).
pub const MAX_HEADER_BYTES: u64 = 100 << 20;

/// Most tensors one header may list; real shards hold a few thousand.
const MAX_TENSORS_PER_HEADER: usize = 1 << 20;

/// Tensors of one stored dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DtypeTally {
    pub tensors: u64,
    /// Elements as stored (a packed `I32` AWQ weight counts 1 per 8 weights).
    pub elements: u64,
    pub bytes: u64,
}

/// Per-dtype tallies of a whole checkpoint (all its shards).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CheckpointWeights {
    /// Keyed by the safetensors dtype name (`BF16`, `F8_E4M3`, `I32`, ...).
    pub by_dtype: BTreeMap<String, DtypeTally>,
}

impl CheckpointWeights {
    /// Bytes of every tensor stored.
    pub fn total_bytes(&self) -> u64 {
        self.by_dtype
            .values()
            .fold(0u64, |sum, t| sum.saturating_add(t.bytes))
    }

    /// Tensors stored.
    pub fn tensors(&self) -> u64 {
        self.by_dtype.values().map(|t| t.tensors).sum()
    }

    /// Adds another shard's tallies.
    pub fn merge(&mut self, other: &CheckpointWeights) {
        for (dtype, t) in &other.by_dtype {
            let mine = self.by_dtype.entry(dtype.clone()).or_default();
            mine.tensors = mine.tensors.saturating_add(t.tensors);
            mine.elements = mine.elements.saturating_add(t.elements);
            mine.bytes = mine.bytes.saturating_add(t.bytes);
        }
    }
}

fn bad(shard: &str, msg: impl std::fmt::Display) -> EstimateError {
    EstimateError::SafetensorsHeader(format!("{shard}: {msg}"))
}

/// Bits per element of a safetensors dtype; `None` for names the format
/// does not define.
fn element_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => 8,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "U16" | "I16" | "F16" | "BF16" => 16,
        "U32" | "I32" | "F32" => 32,
        "U64" | "I64" | "F64" => 64,
        _ => return None,
    })
}

/// Reads the length prefix of a safetensors file: the first 8 bytes, a
/// little-endian `u64`, bounded by [`MAX_HEADER_BYTES`].
pub fn header_length(shard: &str, prefix: &[u8]) -> Result<u64, EstimateError> {
    let bytes: [u8; 8] = prefix
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad(shard, "shorter than the 8-byte header length"))?;
    let n = u64::from_le_bytes(bytes);
    if n == 0 {
        return Err(bad(shard, "header length is 0"));
    }
    if n > MAX_HEADER_BYTES {
        return Err(bad(
            shard,
            format!("header of {n} bytes is beyond the {MAX_HEADER_BYTES}-byte limit"),
        ));
    }
    Ok(n)
}

/// Tallies one shard's JSON header (the bytes after the length prefix).
/// Bytes come from each tensor's `data_offsets`, checked against its dtype
/// and shape, so a header that contradicts itself is refused.
pub fn parse_safetensors_header(
    shard: &str,
    header: &[u8],
) -> Result<CheckpointWeights, EstimateError> {
    let root: Value = serde_json::from_slice(header).map_err(|e| bad(shard, e))?;
    let root = root
        .as_object()
        .ok_or_else(|| bad(shard, "header is not a JSON object"))?;
    if root.len() > MAX_TENSORS_PER_HEADER {
        return Err(bad(shard, format!("{} tensors is too many", root.len())));
    }
    let mut out = CheckpointWeights::default();
    for (name, info) in root {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(shard, format!("tensor {name} has no dtype")))?;
        let bits = element_bits(dtype)
            .ok_or_else(|| bad(shard, format!("tensor {name} has unknown dtype {dtype:?}")))?;
        let elements = info
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(shard, format!("tensor {name} has no shape")))?
            .iter()
            .try_fold(1u64, |acc, d| d.as_u64().and_then(|d| acc.checked_mul(d)))
            .ok_or_else(|| bad(shard, format!("tensor {name} has a malformed shape")))?;
        let offsets = info
            .get("data_offsets")
            .and_then(Value::as_array)
            .filter(|o| o.len() == 2)
            .and_then(|o| Some((o[0].as_u64()?, o[1].as_u64()?)))
            .ok_or_else(|| bad(shard, format!("tensor {name} has malformed data_offsets")))?;
        let bytes = offsets
            .1
            .checked_sub(offsets.0)
            .ok_or_else(|| bad(shard, format!("tensor {name} ends before it starts")))?;
        let expected = elements
            .checked_mul(bits)
            .map(|b| b.div_ceil(8))
            .ok_or_else(|| bad(shard, format!("tensor {name} is too large")))?;
        if bytes != expected {
            return Err(bad(
                shard,
                format!(
                    "tensor {name} spans {bytes} bytes but {dtype} {elements} elements take {expected}"
                ),
            ));
        }
        let t = out.by_dtype.entry(dtype.to_string()).or_default();
        t.tensors += 1;
        t.elements = t.elements.saturating_add(elements);
        t.bytes = t.bytes.saturating_add(bytes);
    }
    Ok(out)
}

/// The quantization a model's name announces (`-AWQ`, `-FP8-Dynamic`,
/// `-w4a16`, `-GPTQ-Int4`, ...), for refusing to size such a model as
/// 16-bit when its config cannot be read.
pub fn quantization_named_in(model: &str) -> Option<&'static str> {
    let base = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    const WORDS: &[(&str, &str)] = &[
        ("fp8", "FP8"),
        ("awq", "AWQ"),
        ("gptq", "GPTQ"),
        ("int4", "INT4"),
        ("int8", "INT8"),
        ("w4a16", "W4A16"),
        ("w8a8", "W8A8"),
        ("w8a16", "W8A16"),
        ("w4a8", "W4A8"),
        ("mxfp4", "MXFP4"),
        ("nvfp4", "NVFP4"),
        ("fp4", "FP4"),
        ("4bit", "4-bit"),
        ("8bit", "8-bit"),
        ("bnb", "bitsandbytes"),
    ];
    base.split(['-', '_', '.'])
        .find_map(|token| WORDS.iter().find(|(w, _)| *w == token).map(|(_, n)| *n))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tallies_bytes_per_dtype_from_offsets() {
        let header = br#"{"__metadata__": {"format": "pt"},
          "model.layers.0.self_attn.q_proj.qweight": {"dtype": "I32", "shape": [4096, 512], "data_offsets": [0, 8388608]},
          "model.layers.0.self_attn.q_proj.scales": {"dtype": "F16", "shape": [32, 4096], "data_offsets": [8388608, 8650752]},
          "model.norm.weight": {"dtype": "BF16", "shape": [4096], "data_offsets": [8650752, 8658944]}}"#;
        let w = parse_safetensors_header("model.safetensors", header).unwrap();
        assert_eq!(w.by_dtype["I32"].elements, 4096 * 512);
        assert_eq!(w.by_dtype["F16"].bytes, 32 * 4096 * 2);
        assert_eq!(w.total_bytes(), 8658944);
        assert_eq!(w.tensors(), 3);
        let mut twice = w.clone();
        twice.merge(&w);
        assert_eq!(twice.total_bytes(), 2 * 8658944);
    }

    #[test]
    fn contradictions_and_oversized_headers_are_refused() {
        let wrong = br#"{"w": {"dtype": "BF16", "shape": [10], "data_offsets": [0, 10]}}"#;
        let e = parse_safetensors_header("a.safetensors", wrong).unwrap_err();
        assert!(
            e.to_string()
                .contains("a.safetensors: tensor w spans 10 bytes"),
            "{e}"
        );
        let unknown = br#"{"w": {"dtype": "Q3", "shape": [1], "data_offsets": [0, 1]}}"#;
        assert!(parse_safetensors_header("a", unknown).is_err());
        assert!(parse_safetensors_header("a", b"[]").is_err());
        assert!(parse_safetensors_header("a", b"{").is_err());
        let huge = (MAX_HEADER_BYTES + 1).to_le_bytes();
        let e = header_length("b.safetensors", &huge).unwrap_err();
        assert!(e.to_string().contains("beyond"), "{e}");
        assert!(header_length("c", &[1, 0]).is_err());
        assert_eq!(header_length("d", &64u64.to_le_bytes()).unwrap(), 64);
    }

    #[test]
    fn quantized_names_are_recognised() {
        assert_eq!(
            quantization_named_in("Qwen/Qwen2.5-72B-Instruct-AWQ"),
            Some("AWQ")
        );
        assert_eq!(
            quantization_named_in("neuralmagic/Meta-Llama-3.1-8B-Instruct-FP8-dynamic"),
            Some("FP8")
        );
        assert_eq!(
            quantization_named_in("org/llama-3-8b-awq-4bit"),
            Some("AWQ")
        );
        assert_eq!(
            quantization_named_in("RedHatAI/Llama-3.3-70B-Instruct-quantized.w4a16"),
            Some("W4A16")
        );
        assert_eq!(quantization_named_in("Qwen/Qwen3-8B"), None);
        // An organisation's name says nothing about the checkpoint.
        assert_eq!(quantization_named_in("awq/Llama-3.1-8B"), None);
    }
}
