//! Compares the estimator with memory figures printed by real vLLM and SGLang
//! start-ups (`data/measurements.csv`, one public source URL per row).
//!
//! Weights per GPU must be within 2 % for 16-bit and FP8 checkpoints and 5 %
//! for 4-bit ones. KV bytes per token must be exact: the token count the
//! engine printed times our bytes per token must reproduce the KV size it
//! printed, to the digits printed. The total per GPU (weights, activation
//! peak, runtime and collectives, CUDA graphs, and the KV pool the engine
//! got) must never be more than 3 % below what the engine measured, and no
//! more than 10 % above it on the median: under-sizing breaks pods,
//! over-sizing only wastes a little.
#![allow(clippy::unwrap_used)]

use estimator::{
    EngineRelease, KvCacheDtype, Quantization, ServingParams, WeightFormat, estimate, lookup,
};

const GIB: f64 = (1u64 << 30) as f64;

#[derive(Debug, serde::Deserialize)]
struct Row {
    source_url: String,
    engine: String,
    model: String,
    quantization: String,
    unquantized: String,
    tensor_parallel_size: u32,
    /// Empty: the checkpoint's.
    dtype: String,
    kv_cache_dtype: String,
    measured_weights_gib: Option<f64>,
    kv_tokens: Option<u64>,
    kv_reported_gib: Option<String>,
    /// `kv` (the whole pool) or `k` (SGLang's K half).
    kv_reported_part: String,
    activation_gib: Option<f64>,
    non_torch_gib: Option<f64>,
    cuda_graph_gib: Option<f64>,
    /// The engine's budget where its KV pool is not printed.
    total_gib: Option<f64>,
    #[allow(dead_code)]
    notes: String,
}

impl Row {
    /// The engine's KV pool (GiB), printed or left over from its budget.
    fn kv_pool_gib(&self) -> Option<f64> {
        match (self.kv_reported_gib.as_deref(), self.total_gib) {
            (Some(kv), _) => {
                let kv: f64 = kv.parse().unwrap();
                Some(if self.kv_reported_part == "k" {
                    2.0 * kv
                } else {
                    kv
                })
            }
            (None, Some(total)) => Some(
                total - self.measured_weights_gib? - self.activation_gib? - self.non_torch_gib?,
            ),
            (None, None) => None,
        }
    }

    /// What the engine holds per GPU: weights, activation peak, non-torch
    /// memory, KV pool and CUDA graphs, where every part was printed.
    fn measured_total_gib(&self) -> Option<f64> {
        Some(
            self.measured_weights_gib?
                + self.activation_gib?
                + self.non_torch_gib?
                + self.kv_pool_gib()?
                + self.cuda_graph_gib.unwrap_or(0.0),
        )
    }
}

fn rows() -> Vec<Row> {
    csv::Reader::from_reader(include_str!("../data/measurements.csv").as_bytes())
        .deserialize()
        .map(|r| r.unwrap())
        .collect()
}

fn estimate_row(row: &Row) -> estimator::Estimate {
    let mut spec = lookup(&row.model).unwrap().spec();
    let quantization: Quantization = row.quantization.parse().unwrap();
    if quantization != spec.weights.quantization {
        spec.weights = WeightFormat::new(quantization);
    }
    for part in row.unquantized.split(';').filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            None if part == "attention" => spec.weights.modules.attention = false,
            Some(("mlp_layers", n)) => {
                spec.weights.modules.unquantized_mlp_layers = n.parse().unwrap()
            }
            _ => panic!("unknown unquantized entry {part:?}"),
        }
    }
    let params = ServingParams {
        dtype: (!row.dtype.is_empty()).then(|| row.dtype.parse().unwrap()),
        tensor_parallel_size: row.tensor_parallel_size,
        max_model_len: Some(1024),
        kv_cache_dtype: row.kv_cache_dtype.parse::<KvCacheDtype>().unwrap(),
        engine: row.engine.parse::<EngineRelease>().unwrap(),
        ..ServingParams::default()
    };
    estimate(&spec, &params).unwrap()
}

#[test]
fn at_least_forty_cited_measurements() {
    let rows = rows();
    assert!(rows.len() >= 40, "only {} engine start-ups", rows.len());
    for r in &rows {
        assert!(r.source_url.starts_with("https://"), "{}", r.source_url);
        let measured = r.measured_weights_gib.is_some()
            || r.kv_tokens.is_some()
            || r.measured_total_gib().is_some();
        assert!(measured, "{}: nothing to compare", r.source_url);
    }
}

#[test]
fn total_per_gpu_never_below_and_close_above() {
    let mut failures = Vec::new();
    let mut errors = Vec::new();
    println!(
        "{:<10} {:<14} {:>3} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>7}",
        "engine",
        "model",
        "tp",
        "weights",
        "ours",
        "act+rt",
        "ours",
        "KV pool",
        "measured",
        "estimate",
        "error"
    );
    for row in rows() {
        let Some(measured) = row.measured_total_gib() else {
            continue;
        };
        let e = estimate_row(&row);
        let g = |b: u64| b as f64 / GIB;
        // The KV pool the engine got: from the tokens it printed, sized
        // with our bytes per token, where it printed them.
        let kv = match row.kv_tokens {
            Some(t) => g(t * e.per_gpu.kv_cache_bytes_per_token),
            None => row.kv_pool_gib().unwrap(),
        };
        let ours = g(e.per_gpu.weights_bytes)
            + g(e.per_gpu.activation_bytes)
            + g(e.per_gpu.overhead_bytes)
            + kv;
        let err = (ours - measured) / measured * 100.0;
        println!(
            "{:<10} {:<14} {:>3} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>9.2} {:>+6.2}%",
            row.engine,
            row.model,
            row.tensor_parallel_size,
            row.measured_weights_gib.unwrap(),
            g(e.per_gpu.weights_bytes),
            row.activation_gib.unwrap()
                + row.non_torch_gib.unwrap()
                + row.cuda_graph_gib.unwrap_or(0.0),
            g(e.per_gpu.activation_bytes + e.per_gpu.overhead_bytes),
            kv,
            measured,
            ours,
            err
        );
        if err < -3.0 {
            failures.push(format!("{} {}: {err:+.2}%", row.source_url, row.model));
        }
        errors.push(err);
    }
    assert!(errors.len() >= 10, "only {} totals", errors.len());
    errors.sort_by(f64::total_cmp);
    let median = errors[errors.len() / 2];
    println!("{} totals; median error {median:+.2}%", errors.len());
    assert!(
        failures.is_empty(),
        "below the engine's total: {failures:#?}"
    );
    assert!(
        median <= 10.0,
        "median {median:+.2}% above the engine's total"
    );
}

#[test]
fn weights_within_tolerance() {
    let mut failures = Vec::new();
    println!(
        "{:<58} {:<16} {:<15} {:>3} {:>9} {:>9} {:>7}",
        "source", "model", "quant", "tp", "measured", "estimate", "error"
    );
    for row in rows() {
        let Some(measured) = row.measured_weights_gib else {
            continue;
        };
        let e = estimate_row(&row);
        let est = e.per_gpu.weights_bytes as f64 / GIB;
        let err = (est - measured) / measured * 100.0;
        let bar = if e.quantization.is_four_bit() {
            5.0
        } else {
            2.0
        };
        println!(
            "{:<58} {:<16} {:<15} {:>3} {:>9.3} {:>9.3} {:>+6.2}%",
            row.source_url,
            row.model,
            e.quantization.to_string(),
            row.tensor_parallel_size,
            measured,
            est,
            err
        );
        if err.abs() > bar {
            failures.push(format!(
                "{} {}: {err:+.2}% (bar {bar}%)",
                row.source_url, row.model
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn kv_bytes_per_token_exact() {
    let mut failures = Vec::new();
    for row in rows() {
        let (Some(tokens), Some(reported)) = (row.kv_tokens, row.kv_reported_gib.as_deref()) else {
            continue;
        };
        let e = estimate_row(&row);
        let decimals = reported.split_once('.').map_or(0, |(_, d)| d.len());
        let half_unit = 0.5 * 10f64.powi(-(decimals as i32));
        let share = if row.kv_reported_part == "k" { 2 } else { 1 };
        let ours = (tokens * e.per_gpu.kv_cache_bytes_per_token / share) as f64 / GIB;
        let reported: f64 = reported.parse().unwrap();
        println!(
            "{:<58} {:<16} tokens {:>9} bytes/token {:>7} -> {:.4} GiB, printed {reported}",
            row.source_url, row.model, tokens, e.per_gpu.kv_cache_bytes_per_token, ours
        );
        if (ours - reported).abs() > half_unit + 1e-9 {
            failures.push(format!(
                "{} {}: {ours:.4} vs {reported}",
                row.source_url, row.model
            ));
        }
        // One KV head more or less per layer must not also match: the check
        // can tell a wrong head count apart.
        let layers = lookup(&row.model).unwrap().arch.num_layers as u64;
        let per_layer = e.per_gpu.kv_cache_bytes_per_token / layers;
        let off =
            (tokens * (e.per_gpu.kv_cache_bytes_per_token + per_layer / 2) / share) as f64 / GIB;
        assert!(
            (off - reported).abs() > half_unit,
            "{}: check too loose",
            row.source_url
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
