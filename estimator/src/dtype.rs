//! Number formats of weights and of the KV cache.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::error::ParseError;

/// The dtype the engine computes in, and stores unquantized weights in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Float32,
    Float16,
    Bfloat16,
}

impl DType {
    /// Bytes one element takes.
    pub const fn bytes(self) -> u64 {
        match self {
            DType::Float32 => 4,
            DType::Float16 | DType::Bfloat16 => 2,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::Float32 => "float32",
            DType::Float16 => "float16",
            DType::Bfloat16 => "bfloat16",
        })
    }
}

impl FromStr for DType {
    type Err = ParseError;

    /// Accepts the spellings vLLM's `--dtype` and Hugging Face's `torch_dtype` use.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bfloat16" | "bf16" | "torch.bfloat16" => Ok(DType::Bfloat16),
            "float16" | "fp16" | "half" | "f16" | "torch.float16" => Ok(DType::Float16),
            "float32" | "fp32" | "float" | "f32" | "torch.float32" => Ok(DType::Float32),
            _ => Err(ParseError::new(
                "dtype",
                s,
                "bfloat16, float16 (half), float32 (float)",
            )),
        }
    }
}

/// The dtype of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvCacheDtype {
    /// Same as the model dtype (the engines' default).
    #[default]
    Auto,
    Bfloat16,
    Float16,
    Float32,
    /// FP8 E4M3 (vLLM `fp8`/`fp8_e4m3`, SGLang `fp8_e4m3`).
    Fp8E4m3,
    /// FP8 E5M2 (vLLM `fp8_e5m2`).
    Fp8E5m2,
}

impl KvCacheDtype {
    /// Bytes per cached element, given the model dtype that `Auto` follows.
    pub const fn bytes(self, model: DType) -> u64 {
        match self {
            KvCacheDtype::Auto => model.bytes(),
            KvCacheDtype::Bfloat16 | KvCacheDtype::Float16 => 2,
            KvCacheDtype::Float32 => 4,
            KvCacheDtype::Fp8E4m3 | KvCacheDtype::Fp8E5m2 => 1,
        }
    }

    /// The spelling vLLM's `--kv-cache-dtype` takes.
    pub const fn vllm_name(self) -> &'static str {
        match self {
            KvCacheDtype::Auto => "auto",
            KvCacheDtype::Bfloat16 => "bfloat16",
            KvCacheDtype::Float16 => "float16",
            KvCacheDtype::Float32 => "float32",
            KvCacheDtype::Fp8E4m3 => "fp8_e4m3",
            KvCacheDtype::Fp8E5m2 => "fp8_e5m2",
        }
    }
}

impl fmt::Display for KvCacheDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.vllm_name())
    }
}

impl FromStr for KvCacheDtype {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(KvCacheDtype::Auto),
            "bfloat16" | "bf16" => Ok(KvCacheDtype::Bfloat16),
            "float16" | "fp16" | "half" => Ok(KvCacheDtype::Float16),
            "float32" | "fp32" => Ok(KvCacheDtype::Float32),
            "fp8" | "fp8_e4m3" | "fp8-e4m3" | "e4m3" => Ok(KvCacheDtype::Fp8E4m3),
            "fp8_e5m2" | "fp8-e5m2" | "e5m2" => Ok(KvCacheDtype::Fp8E5m2),
            _ => Err(ParseError::new(
                "KV-cache dtype",
                s,
                "auto, bfloat16, float16, float32, fp8 (fp8_e4m3), fp8_e5m2",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_spellings() {
        assert_eq!("BF16".parse::<DType>().unwrap(), DType::Bfloat16);
        assert_eq!("half".parse::<DType>().unwrap(), DType::Float16);
        assert_eq!("torch.float32".parse::<DType>().unwrap(), DType::Float32);
        let err = "int3".parse::<DType>().unwrap_err().to_string();
        assert!(err.contains("int3") && err.contains("bfloat16"), "{err}");
    }

    #[test]
    fn kv_dtype_bytes_follow_model_for_auto() {
        assert_eq!(KvCacheDtype::Auto.bytes(DType::Float32), 4);
        assert_eq!(KvCacheDtype::Auto.bytes(DType::Bfloat16), 2);
        assert_eq!(
            "fp8"
                .parse::<KvCacheDtype>()
                .unwrap()
                .bytes(DType::Bfloat16),
            1
        );
        assert!("int4".parse::<KvCacheDtype>().is_err());
    }
}
