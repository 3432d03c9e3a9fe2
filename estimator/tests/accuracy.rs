//! Compares the estimator with memory figures printed by real vLLM and SGLang
//! start-ups (`data/measurements.csv`, one public source URL per row).
//!
//! Weights per GPU must be within 2 % for 16-bit and FP8 checkpoints and 5 %
//! for 4-bit ones. KV bytes per token must be exact: the token count the
//! engine printed times our bytes per token must reproduce the KV size it
//! printed, to the digits printed.
#![allow(clippy::unwrap_used)]

use estimator::{
    Engine, KvCacheDtype, Quantization, ServingParams, WeightFormat, estimate, lookup,
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
    dtype: String,
    kv_cache_dtype: String,
    measured_weights_gib: Option<f64>,
    kv_tokens: Option<u64>,
    kv_reported_gib: Option<String>,
    kv_reported_part: String,
    #[allow(dead_code)]
    notes: String,
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
        dtype: Some(row.dtype.parse().unwrap()),
        tensor_parallel_size: row.tensor_parallel_size,
        max_model_len: Some(1024),
        kv_cache_dtype: row.kv_cache_dtype.parse::<KvCacheDtype>().unwrap(),
        engine: row.engine.parse::<Engine>().unwrap(),
        ..ServingParams::default()
    };
    estimate(&spec, &params).unwrap()
}

#[test]
fn at_least_twenty_cited_measurements() {
    let rows = rows();
    let count: usize = rows
        .iter()
        .map(|r| usize::from(r.measured_weights_gib.is_some()) + usize::from(r.kv_tokens.is_some()))
        .sum();
    assert!(count >= 20, "only {count} measurements");
    for r in &rows {
        assert!(
            r.source_url.starts_with("https://github.com/"),
            "{}",
            r.source_url
        );
    }
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
