//! Kubernetes resource quantities, read and written as the API server does.
//!
//! Every part reads extended-resource amounts (`gpupack.io/gpu: 4`,
//! `gpupack.io/gpu-memory: 1k`) through [`extended_count`], so no two parts
//! can disagree on what a pod asks for. The API server stores quantities in
//! canonical form (a pod created with `1000` reads back as `1k`, `1.5Gi` as
//! `1536Mi`, `0.5` as `500m`); [`Quantity::canonical`] writes that form, so
//! the API stand-in hands clients what a real cluster does.
//!
//! The grammar and the canonical form follow apimachinery's
//! `resource.Quantity` (`ParseQuantity`, `CanonicalizeBytes`): a signed
//! decimal number, then a binary suffix (`Ki` … `Ei`), a decimal suffix
//! (`n`, `u`, `m`, none, `k`, `M`, `G`, `T`, `P`, `E`) or a decimal exponent
//! (`e3`, `E-2`). Values finer than a nano-unit round up to one, as there.

use std::fmt;

/// Why a quantity was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not a Kubernetes quantity at all.
    #[error(
        "{text:?} is not a quantity (expected a number with an optional suffix such as 4, 500m, 1k or 2Gi)"
    )]
    Syntax {
        /// The text, shortened.
        text: String,
    },
    /// A valid quantity, but not a whole number; extended resources are
    /// counted in whole units (the API server answers "must be an integer").
    #[error("{text:?} is not a whole number (extended resources are counted in whole units)")]
    NotWhole {
        /// The text, shortened.
        text: String,
    },
    /// Negative, where an amount is asked for.
    #[error("{text:?} is negative")]
    Negative {
        /// The text, shortened.
        text: String,
    },
    /// Larger than the receiver can count.
    #[error("{text:?} is too large (at most {max})")]
    TooLarge {
        /// The text, shortened.
        text: String,
        /// The largest value accepted.
        max: u64,
    },
}

/// How a quantity is written; kept from the input, as the API server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `k`, `M`, `m`, no suffix …
    DecimalSi,
    /// `Ki`, `Mi`, `Gi` …
    BinarySi,
    /// `1e3`, `5E-2`.
    DecimalExponent,
}

/// A parsed quantity: exactly `mantissa × 10^exponent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    mantissa: i128,
    exponent: i32,
    format: Format,
}

/// Longest input, in bytes, echoed back in an error.
const ECHO: usize = 96;

fn echo(text: &str) -> String {
    crate::clip::clip_to(text, ECHO).to_string()
}

/// Largest magnitude kept; the API server caps quantities at 2^63-1 units.
const MAX_DIGITS: usize = 36;

impl Quantity {
    /// Parses a quantity as `resource.ParseQuantity` does.
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let syntax = || QuantityError::Syntax { text: echo(text) };
        let s = text.as_bytes();
        let mut i = 0;
        let negative = match s.first() {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let (mut mantissa, mut exponent, used) = digits(&s[i..]).ok_or_else(syntax)?;
        i += used;
        let suffix = &text[i..];
        let format = match suffix {
            "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => {
                exponent += match suffix {
                    "n" => -9,
                    "u" => -6,
                    "m" => -3,
                    "k" => 3,
                    "M" => 6,
                    "G" => 9,
                    "T" => 12,
                    "P" => 15,
                    "E" => 18,
                    _ => 0,
                };
                Format::DecimalSi
            }
            "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
                let power = match suffix {
                    "Ki" => 1,
                    "Mi" => 2,
                    "Gi" => 3,
                    "Ti" => 4,
                    "Pi" => 5,
                    _ => 6,
                };
                for _ in 0..power {
                    mantissa = mantissa.checked_mul(1024).ok_or_else(syntax)?;
                }
                Format::BinarySi
            }
            _ => {
                let rest = suffix
                    .strip_prefix('e')
                    .or_else(|| suffix.strip_prefix('E'))
                    .ok_or_else(syntax)?;
                let (sign, body) = match rest.as_bytes().first() {
                    Some(b'-') => (-1, &rest[1..]),
                    Some(b'+') => (1, &rest[1..]),
                    _ => (1, rest),
                };
                if body.is_empty() || body.len() > 4 || !body.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(syntax());
                }
                let e: i32 = body.parse().map_err(|_| syntax())?;
                exponent += sign * e;
                Format::DecimalExponent
            }
        };
        if negative {
            mantissa = -mantissa;
        }
        let mut q = Quantity {
            mantissa,
            exponent,
            format,
        };
        q.normalize();
        q.round_up_to_nano();
        Ok(q)
    }

    /// Strips trailing zeros of the mantissa into the exponent.
    fn normalize(&mut self) {
        if self.mantissa == 0 {
            self.exponent = 0;
            return;
        }
        while self.mantissa % 10 == 0 {
            self.mantissa /= 10;
            self.exponent += 1;
        }
    }

    /// Values finer than 1n become the next nano-unit away from zero.
    fn round_up_to_nano(&mut self) {
        if self.exponent >= -9 {
            return;
        }
        let drop = (-9 - self.exponent) as u32;
        let divisor = 10i128.checked_pow(drop);
        let (whole, exact) = match divisor {
            Some(d) => (self.mantissa / d, self.mantissa % d == 0),
            None => (0, self.mantissa == 0),
        };
        self.mantissa = if exact {
            whole
        } else {
            whole + self.mantissa.signum()
        };
        self.exponent = -9;
        self.normalize();
    }

    /// The value when it is a whole number.
    pub fn whole(&self) -> Option<i128> {
        if self.exponent < 0 {
            return None;
        }
        let scale = 10i128.checked_pow(self.exponent as u32)?;
        self.mantissa.checked_mul(scale)
    }

    /// The value as a float, for sums where a rounding error does not matter
    /// (the scheduler driver's CPU and memory fit).
    pub fn as_f64(&self) -> f64 {
        self.mantissa as f64 * 10f64.powi(self.exponent)
    }

    /// The form the API server stores and returns (`CanonicalizeBytes`).
    pub fn canonical(&self) -> String {
        if self.mantissa == 0 {
            return "0".into();
        }
        // Binary only for whole values of at least 1Ki; below, or with a
        // fraction, it would round, so the API server writes decimal.
        if self.format == Format::BinarySi
            && let Some(mut value) = self.whole()
            && value.unsigned_abs() >= 1024
        {
            let mut power = 0;
            while power < 6 && value % 1024 == 0 {
                value /= 1024;
                power += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power];
            return format!("{value}{suffix}");
        }
        // Decimal: the exponent goes to a multiple of three, the mantissa
        // takes the rest.
        let mut mantissa = self.mantissa;
        let mut exponent = self.exponent;
        match exponent.rem_euclid(3) {
            1 => {
                mantissa *= 10;
                exponent -= 1;
            }
            2 => {
                mantissa *= 100;
                exponent -= 2;
            }
            _ => {}
        }
        if self.format == Format::DecimalExponent {
            return if exponent == 0 {
                format!("{mantissa}")
            } else {
                format!("{mantissa}e{exponent}")
            };
        }
        let suffix = match exponent {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            18 => "E",
            _ => return format!("{mantissa}e{exponent}"),
        };
        format!("{mantissa}{suffix}")
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// Reads `digits[.digits]`: the mantissa, the decimal exponent the fraction
/// gives, and the bytes used. `None` without a digit or when too long.
fn digits(s: &[u8]) -> Option<(i128, i32, usize)> {
    let mut mantissa: i128 = 0;
    let mut exponent = 0i32;
    let mut seen = 0usize;
    let mut significant = 0usize;
    let mut i = 0;
    let mut point = false;
    while i < s.len() {
        match s[i] {
            b'0'..=b'9' => {
                seen += 1;
                let d = i128::from(s[i] - b'0');
                if significant > 0 || d != 0 {
                    significant += 1;
                }
                if significant > MAX_DIGITS {
                    return None;
                }
                mantissa = mantissa * 10 + d;
                if point {
                    exponent -= 1;
                }
            }
            b'.' if !point => point = true,
            _ => break,
        }
        i += 1;
    }
    (seen > 0).then_some((mantissa, exponent, i))
}

/// The count an extended resource asks for (`gpupack.io/gpu: "4"`,
/// `gpupack.io/gpu-memory: "1k"`): any quantity the API server accepts for
/// an extended resource, which must be a whole, non-negative number.
pub fn extended_count(text: &str) -> Result<u64, QuantityError> {
    let q = Quantity::parse(text.trim())?;
    if q.mantissa < 0 {
        return Err(QuantityError::Negative { text: echo(text) });
    }
    if q.exponent < 0 {
        return Err(QuantityError::NotWhole { text: echo(text) });
    }
    q.whole()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v <= i64::MAX as u64)
        .ok_or(QuantityError::TooLarge {
            text: echo(text),
            max: i64::MAX as u64,
        })
}

/// [`extended_count`] for counts that must fit 32 bits (device counts).
pub fn extended_count_u32(text: &str) -> Result<u32, QuantityError> {
    let n = extended_count(text)?;
    u32::try_from(n).map_err(|_| QuantityError::TooLarge {
        text: echo(text),
        max: u64::from(u32::MAX),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn canon(s: &str) -> String {
        Quantity::parse(s).unwrap().canonical()
    }

    #[test]
    fn canonical_forms_match_the_api_server() {
        // Pairs as apimachinery's quantity tests and a real API server give them.
        for (input, want) in [
            ("0", "0"),
            ("1000", "1k"),
            ("1500", "1500"),
            ("10000", "10k"),
            ("2000000", "2M"),
            ("0.5", "500m"),
            ("1.5", "1500m"),
            ("2000m", "2"),
            ("1e3", "1e3"),
            ("1E3", "1e3"),
            ("1.5e3", "1500"),
            ("1024", "1024"),
            ("1Ki", "1Ki"),
            ("1.5Gi", "1536Mi"),
            ("1024Mi", "1Gi"),
            ("0.5Ki", "512"),
            ("100Mi", "100Mi"),
            ("1k", "1k"),
            ("0.1m", "100u"),
            ("1n", "1n"),
            ("0.1n", "1n"),
            ("+5", "5"),
            ("-5", "-5"),
            ("5.", "5"),
            (".5", "500m"),
            ("1E", "1E"),
            ("12e2", "1200"),
        ] {
            assert_eq!(canon(input), want, "{input}");
        }
    }

    #[test]
    fn extended_counts() {
        assert_eq!(extended_count("4").unwrap(), 4);
        assert_eq!(extended_count("1k").unwrap(), 1000);
        assert_eq!(extended_count("1e3").unwrap(), 1000);
        assert_eq!(extended_count("1Ki").unwrap(), 1024);
        assert_eq!(extended_count("2000m").unwrap(), 2);
        assert_eq!(extended_count("1.5k").unwrap(), 1500);
        assert!(matches!(
            extended_count("1500m"),
            Err(QuantityError::NotWhole { .. })
        ));
        assert!(matches!(
            extended_count("-1"),
            Err(QuantityError::Negative { .. })
        ));
        assert!(matches!(
            extended_count("x"),
            Err(QuantityError::Syntax { .. })
        ));
        assert!(matches!(
            extended_count("1Qi"),
            Err(QuantityError::Syntax { .. })
        ));
        assert!(matches!(
            extended_count("10E"),
            Err(QuantityError::TooLarge { .. })
        ));
        assert!(matches!(
            extended_count_u32("5G"),
            Err(QuantityError::TooLarge { .. })
        ));
        let long = "9".repeat(10_000);
        assert!(extended_count(&long).is_err());
    }
}
