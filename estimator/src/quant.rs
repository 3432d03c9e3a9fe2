//! Weight quantization formats and what they cost per parameter in memory.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::error::ParseError;

/// How a checkpoint stores its linear-layer weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Quantization {
    /// Weights in the model dtype.
    #[default]
    None,
    /// FP8 E4M3 weights; `block` is the side of square scale blocks (DeepSeek
    /// V3 uses 128), `None` for per-tensor or per-channel scales.
    Fp8 { block: Option<u32> },
    /// INT8 weights with per-channel scales (W8A8, SmoothQuant).
    Int8,
    /// AWQ: 4-bit weights, an FP16 scale and a 4-bit zero point per group.
    Awq { group_size: u32 },
    /// GPTQ: `bits`-bit weights, an FP16 scale and a packed zero point per group.
    Gptq { bits: u8, group_size: u32 },
    /// OCP MX FP4: 4-bit E2M1 weights with an 8-bit E8M0 scale per 32.
    Mxfp4,
    /// NVIDIA NVFP4: 4-bit E2M1 weights with an FP8 scale per 16.
    Nvfp4,
}

/// Group size of AWQ and GPTQ checkpoints when none is given: what AutoAWQ
/// and AutoGPTQ default to and what nearly every published checkpoint uses.
pub const DEFAULT_GROUP_SIZE: u32 = 128;

impl Quantization {
    /// Bytes per parameter of a quantized linear weight, scales included.
    ///
    /// AWQ: 4 bits + per group an FP16 scale (2 B) and a 4-bit zero (0.5 B).
    /// GPTQ: `bits` + per group an FP16 scale and a `bits`-bit zero.
    /// FP8 block: 1 B + one FP32 scale per `block`² weights.
    /// MXFP4: 0.5 B + 1 B per 32. NVFP4: 0.5 B + 1 B per 16.
    pub fn bytes_per_param(self, model_dtype_bytes: u64) -> f64 {
        match self {
            Quantization::None => model_dtype_bytes as f64,
            Quantization::Fp8 { block: None } | Quantization::Int8 => 1.0,
            Quantization::Fp8 { block: Some(b) } => 1.0 + 4.0 / (f64::from(b) * f64::from(b)),
            Quantization::Awq { group_size } => 0.5 + 2.5 / f64::from(group_size.max(1)),
            Quantization::Gptq { bits, group_size } => {
                let w = f64::from(bits) / 8.0;
                w + (2.0 + w) / f64::from(group_size.max(1))
            }
            Quantization::Mxfp4 => 0.5 + 1.0 / 32.0,
            Quantization::Nvfp4 => 0.5 + 1.0 / 16.0,
        }
    }

    /// Whether this is a 4-bit format (the accuracy bar is wider for those).
    pub fn is_four_bit(self) -> bool {
        matches!(
            self,
            Quantization::Awq { .. }
                | Quantization::Gptq { bits: 4, .. }
                | Quantization::Mxfp4
                | Quantization::Nvfp4
        )
    }

    /// The `--quantization` value vLLM takes, when it must be given at all.
    pub fn vllm_name(self) -> Option<&'static str> {
        match self {
            Quantization::None => None,
            Quantization::Fp8 { .. } => Some("fp8"),
            Quantization::Int8 => Some("compressed-tensors"),
            Quantization::Awq { .. } => Some("awq_marlin"),
            Quantization::Gptq { .. } => Some("gptq_marlin"),
            Quantization::Mxfp4 => Some("mxfp4"),
            Quantization::Nvfp4 => Some("modelopt_fp4"),
        }
    }
}

/// Serialized as its display string (`awq-g128`), which `FromStr` reads back.
impl Serialize for Quantization {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Display for Quantization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quantization::None => f.write_str("none"),
            Quantization::Fp8 { block: None } => f.write_str("fp8"),
            Quantization::Fp8 { block: Some(b) } => write!(f, "fp8-block{b}"),
            Quantization::Int8 => f.write_str("int8"),
            Quantization::Awq { group_size } => write!(f, "awq-g{group_size}"),
            Quantization::Gptq { bits, group_size } => write!(f, "gptq-int{bits}-g{group_size}"),
            Quantization::Mxfp4 => f.write_str("mxfp4"),
            Quantization::Nvfp4 => f.write_str("nvfp4"),
        }
    }
}

const EXPECTED: &str = "none, fp8, fp8-block128, int8 (w8a8), awq, awq-g<N>, gptq, gptq-int4, gptq-int8, \
gptq-int<bits>-g<N>, mxfp4, nvfp4";

impl FromStr for Quantization {
    type Err = ParseError;

    /// Accepts `awq`, `awq-g64`, `gptq-int4-g128`, `gptq_marlin`, `fp8`,
    /// `fp8-block128`, `mxfp4`, ... (`_` and `-` are interchangeable).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        let err = || ParseError::new("quantization", s, EXPECTED);
        let mut parts = norm.split('-').filter(|p| !p.is_empty());
        let head = parts.next().unwrap_or("none");
        let rest: Vec<&str> = parts.collect();
        let group = |rest: &[&str]| -> Result<u32, ParseError> {
            let mut group = DEFAULT_GROUP_SIZE;
            for part in rest {
                if *part == "marlin" {
                    continue;
                }
                match part.strip_prefix('g').and_then(|n| n.parse::<u32>().ok()) {
                    Some(g) if g > 0 => group = g,
                    _ => return Err(err()),
                }
            }
            Ok(group)
        };
        match head {
            "none" | "auto" => {
                if rest.is_empty() {
                    Ok(Quantization::None)
                } else {
                    Err(err())
                }
            }
            "fp8" => match rest.as_slice() {
                [] | ["e4m3"] | ["dynamic"] => Ok(Quantization::Fp8 { block: None }),
                [b] => b
                    .strip_prefix("block")
                    .and_then(|n| n.parse::<u32>().ok())
                    .filter(|n| *n > 0)
                    .map(|n| Quantization::Fp8 { block: Some(n) })
                    .ok_or_else(err),
                _ => Err(err()),
            },
            "int8" | "w8a8" => {
                if rest.is_empty() {
                    Ok(Quantization::Int8)
                } else {
                    Err(err())
                }
            }
            "awq" => Ok(Quantization::Awq {
                group_size: group(&rest)?,
            }),
            "gptq" => {
                let (bits, rest) = match rest.split_first() {
                    Some((b, tail)) if b.starts_with("int") => {
                        let bits = b[3..].parse::<u8>().map_err(|_| err())?;
                        if !matches!(bits, 2 | 3 | 4 | 8) {
                            return Err(err());
                        }
                        (bits, tail)
                    }
                    _ => (4, rest.as_slice()),
                };
                Ok(Quantization::Gptq {
                    bits,
                    group_size: group(rest)?,
                })
            }
            "mxfp4" if rest.is_empty() => Ok(Quantization::Mxfp4),
            "nvfp4" | "modelopt" if rest.is_empty() || rest == ["fp4"] => Ok(Quantization::Nvfp4),
            _ => Err(err()),
        }
    }
}

/// Which parts of a checkpoint are stored quantized. Embeddings, the LM head,
/// norms, biases and MoE routers always stay in the model dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuantizedModules {
    pub attention: bool,
    pub dense_mlp: bool,
    pub experts: bool,
    /// Decoder layers left entirely unquantized (e.g. Llama 3.1 405B FP8
    /// keeps the MLPs of its first and last layer in BF16).
    pub unquantized_mlp_layers: u32,
}

impl QuantizedModules {
    /// Every linear layer of the decoder quantized.
    pub const ALL: QuantizedModules = QuantizedModules {
        attention: true,
        dense_mlp: true,
        experts: true,
        unquantized_mlp_layers: 0,
    };
    /// Only MoE experts quantized (gpt-oss MXFP4).
    pub const EXPERTS_ONLY: QuantizedModules = QuantizedModules {
        attention: false,
        dense_mlp: false,
        experts: true,
        unquantized_mlp_layers: 0,
    };

    /// What a checkpoint in `quantization` quantizes when nothing says otherwise.
    pub fn default_for(quantization: Quantization) -> QuantizedModules {
        match quantization {
            Quantization::Mxfp4 => QuantizedModules::EXPERTS_ONLY,
            _ => QuantizedModules::ALL,
        }
    }
}

/// A checkpoint's weight storage: the format and what it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WeightFormat {
    pub quantization: Quantization,
    pub modules: QuantizedModules,
}

impl WeightFormat {
    pub fn new(quantization: Quantization) -> Self {
        WeightFormat {
            quantization,
            modules: QuantizedModules::default_for(quantization),
        }
    }
}

impl Default for WeightFormat {
    fn default() -> Self {
        WeightFormat::new(Quantization::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_spellings() {
        assert_eq!(
            "awq".parse::<Quantization>().unwrap(),
            Quantization::Awq { group_size: 128 }
        );
        assert_eq!(
            "AWQ_marlin".parse::<Quantization>().unwrap(),
            Quantization::Awq { group_size: 128 }
        );
        assert_eq!(
            "awq-g64".parse::<Quantization>().unwrap(),
            Quantization::Awq { group_size: 64 }
        );
        assert_eq!(
            "gptq-int8-g32".parse::<Quantization>().unwrap(),
            Quantization::Gptq {
                bits: 8,
                group_size: 32
            }
        );
        assert_eq!(
            "gptq".parse::<Quantization>().unwrap(),
            Quantization::Gptq {
                bits: 4,
                group_size: 128
            }
        );
        assert_eq!(
            "fp8".parse::<Quantization>().unwrap(),
            Quantization::Fp8 { block: None }
        );
        assert_eq!(
            "fp8-block128".parse::<Quantization>().unwrap(),
            Quantization::Fp8 { block: Some(128) }
        );
        assert_eq!(
            "mxfp4".parse::<Quantization>().unwrap(),
            Quantization::Mxfp4
        );
        assert_eq!("none".parse::<Quantization>().unwrap(), Quantization::None);
    }

    #[test]
    fn rejects_with_the_value_and_the_choices() {
        for bad in [
            "int3",
            "awq-64",
            "gptq-int5",
            "fp8-block0",
            "awq-g0",
            "none-x",
        ] {
            let err = bad.parse::<Quantization>().unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("mxfp4"), "{bad}: {err}");
        }
    }

    #[test]
    fn round_trips_through_display() {
        for q in [
            Quantization::None,
            Quantization::Fp8 { block: None },
            Quantization::Fp8 { block: Some(128) },
            Quantization::Int8,
            Quantization::Awq { group_size: 64 },
            Quantization::Gptq {
                bits: 8,
                group_size: 32,
            },
            Quantization::Mxfp4,
            Quantization::Nvfp4,
        ] {
            assert_eq!(q.to_string().parse::<Quantization>().unwrap(), q);
        }
    }

    #[test]
    fn bytes_per_param_hand_computed() {
        // AWQ g128: 0.5 + (2 + 0.5) / 128 = 0.51953125
        assert_eq!(
            Quantization::Awq { group_size: 128 }.bytes_per_param(2),
            0.51953125
        );
        // GPTQ int4 g128: 0.5 + 2.5 / 128, the same layout as AWQ.
        assert_eq!(
            Quantization::Gptq {
                bits: 4,
                group_size: 128
            }
            .bytes_per_param(2),
            0.51953125
        );
        // GPTQ int8 g128: 1 + 3 / 128
        assert_eq!(
            Quantization::Gptq {
                bits: 8,
                group_size: 128
            }
            .bytes_per_param(2),
            1.0234375
        );
        assert_eq!(Quantization::Mxfp4.bytes_per_param(2), 0.53125);
        assert_eq!(
            Quantization::Fp8 { block: Some(128) }.bytes_per_param(2),
            1.0 + 4.0 / 16384.0
        );
        assert_eq!(Quantization::None.bytes_per_param(4), 4.0);
    }
}
