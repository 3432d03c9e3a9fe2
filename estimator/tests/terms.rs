//! Each term against hand-computed values, for dense GQA, MHA, MoE, MLA and
//! sliding-window models, quantized and not, at TP 1 to 8.
#![allow(clippy::unwrap_used)]

use estimator::{
    Engine, EstimateError, KvCacheDtype, Quantization, ServingParams, estimate,
    estimate_catalog_model, lookup,
};

fn params(tp: u32, len: u64) -> ServingParams {
    ServingParams {
        tensor_parallel_size: tp,
        max_model_len: Some(len),
        ..ServingParams::default()
    }
}

#[test]
fn dense_gqa_llama_31_8b_tp1() {
    let e = estimate_catalog_model("llama-3.1-8b", &params(1, 8192)).unwrap();
    let w = e.weights_detail;
    assert_eq!(w.embedding, 128_256 * 4096 * 2);
    assert_eq!(w.lm_head, 128_256 * 4096 * 2);
    // q (32 heads) + k, v (8 heads each) + o, 128-wide heads.
    assert_eq!(w.attention, 32 * (4096 * 48 * 128 + 4096 * 4096) * 2);
    assert_eq!(w.dense_mlp, 32 * 3 * 4096 * 14_336 * 2);
    assert_eq!(w.small, (2 * 32 + 1) * 4096 * 2);
    assert_eq!(w.rotary_cache, 131_072 * 128 * 2);
    assert_eq!(e.per_gpu.kv_cache_bytes_per_token, 2 * 32 * 8 * 128 * 2);
    assert_eq!(e.per_gpu.kv_cache_bytes, 131_072 * 8192);
    assert_eq!(
        e.per_gpu.overhead_bytes,
        e.overhead_detail.runtime_bytes + e.overhead_detail.cuda_graph_bytes
    );
    assert_eq!(e.overhead_detail.collective_bytes, 0);
}

#[test]
fn dense_gqa_sharding_across_tp() {
    for tp in [1u32, 2, 4, 8] {
        let e = estimate_catalog_model("llama-3.1-8b", &params(tp, 4096)).unwrap();
        let t = u64::from(tp);
        let kv_rank = (8 / t).max(1);
        assert_eq!(
            e.weights_detail.embedding,
            128_256 / t * 4096 * 2,
            "tp {tp}"
        );
        assert_eq!(
            e.weights_detail.attention,
            32 * (4096 * (32 / t + 2 * kv_rank) * 128 + 32 / t * 128 * 4096) * 2
        );
        assert_eq!(e.weights_detail.dense_mlp, 32 * 3 * 4096 * (14_336 / t) * 2);
        assert_eq!(
            e.per_gpu.kv_cache_bytes_per_token,
            2 * 32 * kv_rank * 128 * 2
        );
        assert_eq!(e.overhead_detail.collective_bytes > 0, tp >= 2);
    }
}

#[test]
fn kv_heads_are_replicated_beyond_their_count() {
    // Llama-3.1-70B: 8 KV heads; at TP 16 each rank still holds one.
    let e8 = estimate_catalog_model("llama-3.1-70b", &params(8, 4096)).unwrap();
    let e16 = estimate_catalog_model("llama-3.1-70b", &params(16, 4096)).unwrap();
    assert_eq!(e8.per_gpu.kv_cache_bytes_per_token, 2 * 80 * 128 * 2);
    assert_eq!(
        e16.per_gpu.kv_cache_bytes_per_token,
        e8.per_gpu.kv_cache_bytes_per_token
    );
}

#[test]
fn mha_llama_2_7b() {
    for tp in [1u32, 2, 4, 8] {
        let e = estimate_catalog_model("meta-llama/Llama-2-7b-hf", &params(tp, 4096)).unwrap();
        let t = u64::from(tp);
        assert_eq!(e.dtype, estimator::DType::Float16);
        assert_eq!(
            e.per_gpu.kv_cache_bytes_per_token,
            2 * 32 * (32 / t) * 128 * 2
        );
        assert_eq!(e.weights_detail.attention, 32 * 4 * 4096 * (4096 / t) * 2);
    }
}

#[test]
fn moe_mixtral_experts_and_router() {
    for tp in [1u32, 2, 4, 8] {
        let e = estimate_catalog_model("mixtral-8x7b", &params(tp, 4096)).unwrap();
        let t = u64::from(tp);
        assert_eq!(
            e.weights_detail.experts,
            32 * 8 * 3 * 4096 * (14_336 / t) * 2,
            "tp {tp}"
        );
        assert_eq!(e.weights_detail.dense_mlp, 0);
        // Router (replicated) plus norms.
        assert_eq!(e.weights_detail.small, (32 * 4096 * 8 + 65 * 4096) * 2);
    }
}

#[test]
fn moe_quantized_int4() {
    let q = ServingParams {
        quantization: Some(Quantization::Gptq {
            bits: 4,
            group_size: 128,
        }),
        ..params(2, 4096)
    };
    let e = estimate_catalog_model("mixtral-8x7b", &q).unwrap();
    let expert_params = 32 * 8 * 3 * 4096 * 7168u64;
    assert_eq!(
        e.weights_detail.experts,
        (expert_params as f64 * 0.51953125).ceil() as u64
    );
    // Embeddings stay 16-bit.
    assert_eq!(e.weights_detail.embedding, 32_000 / 2 * 4096 * 2);
}

#[test]
fn mla_deepseek_latent_does_not_shrink_with_tp() {
    for tp in [1u32, 2, 4, 8] {
        let e = estimate_catalog_model("deepseek-ai/DeepSeek-V2-Lite", &params(tp, 4096)).unwrap();
        // kv_lora_rank 512 + rope 64, one latent per layer, 2 bytes.
        assert_eq!(e.per_gpu.kv_cache_bytes_per_token, 27 * 576 * 2, "tp {tp}");
        let t = u64::from(tp);
        let heads = 16 / t;
        let per_layer = 2048 * heads * 192 + 2048 * 576 + 512 * heads * 256 + heads * 128 * 2048;
        assert_eq!(e.weights_detail.attention, 27 * per_layer * 2);
        // 26 MoE layers: 64 experts + 2 shared (2816 wide); layer 0 dense.
        assert_eq!(
            e.weights_detail.experts,
            26 * 64 * 3 * 2048 * (1408 / t) * 2
        );
        assert_eq!(
            e.weights_detail.dense_mlp,
            (3 * 2048 * (10_944 / t) + 26 * 3 * 2048 * (2816 / t)) * 2
        );
    }
    let fp8 = ServingParams {
        kv_cache_dtype: KvCacheDtype::Fp8E4m3,
        ..params(8, 4096)
    };
    let e = estimate_catalog_model("deepseek-v3", &fp8).unwrap();
    assert_eq!(e.per_gpu.kv_cache_bytes_per_token, 61 * 576);
    assert_eq!(e.quantization, Quantization::Fp8 { block: Some(128) });
}

#[test]
fn sliding_window_gemma2_mistral_gpt_oss() {
    // Gemma 2 9B: 21 full + 21 windowed (4096) layers, 8 KV heads × 256.
    let e = estimate_catalog_model("gemma-2-9b", &params(1, 8192)).unwrap();
    let per_layer = 2 * 8 * 256 * 2;
    assert_eq!(
        e.per_gpu.kv_cache_bytes,
        21 * per_layer * 8192 + 21 * per_layer * 4096
    );
    // Mistral 7B v0.1: every layer windowed; two 32k sequences hold 2 × 4096.
    let two = ServingParams {
        max_num_seqs: Some(2),
        ..params(1, 32_768)
    };
    let e = estimate_catalog_model("mistral-7b-v0.1", &two).unwrap();
    assert_eq!(e.per_gpu.kv_cache_bytes, 32 * 4096 * 2 * 4096);
    assert_eq!(e.kv_cache_tokens, 65_536);
    // gpt-oss-20b at TP 2: 12 full layers, 12 windowed at 128; MXFP4 experts.
    let e = estimate_catalog_model("openai/gpt-oss-20b", &params(2, 131_072)).unwrap();
    let per_layer = 2 * 4 * 64 * 2;
    assert_eq!(
        e.per_gpu.kv_cache_bytes,
        12 * per_layer * 131_072 + 12 * per_layer * 128
    );
    // Experts: per-rank width 1440 padded to 1536 for vLLM's MXFP4 kernels.
    let expert_params = 24 * 32 * 3 * 2880 * 1536u64;
    assert_eq!(
        e.weights_detail.experts,
        (expert_params as f64 * 0.53125).ceil() as u64
    );
    // TGI caches full length on every layer.
    let tgi = ServingParams {
        engine: Engine::Tgi.into(),
        ..params(2, 131_072)
    };
    let e = estimate_catalog_model("openai/gpt-oss-20b", &tgi).unwrap();
    assert_eq!(e.per_gpu.kv_cache_bytes, 24 * per_layer * 131_072);
}

#[test]
fn quantized_dense_awq_and_fp8() {
    let awq = ServingParams {
        quantization: Some("awq".parse().unwrap()),
        ..params(1, 4096)
    };
    let e = estimate_catalog_model("llama-3.1-8b", &awq).unwrap();
    assert_eq!(e.weights_detail.attention, 697_303_040); // 1,342,177,280 × 0.51953125
    assert_eq!(e.weights_detail.dense_mlp, 2_928_672_768); // 5,637,144,576 × 0.51953125
    assert_eq!(e.weights_detail.lm_head, 128_256 * 4096 * 2);
    let fp8 = ServingParams {
        quantization: Some("fp8".parse().unwrap()),
        ..params(4, 4096)
    };
    let e = estimate_catalog_model("llama-3.1-8b", &fp8).unwrap();
    assert_eq!(e.weights_detail.dense_mlp, 32 * 3 * 4096 * 3584);
}

#[test]
fn totals_are_sums_and_budgets_add_up() {
    let p = ServingParams {
        max_num_seqs: Some(16),
        ..params(4, 8192)
    };
    let e = estimate_catalog_model("qwen3-32b", &p).unwrap();
    let g = e.per_gpu;
    assert_eq!(
        g.total_bytes,
        g.weights_bytes + g.kv_cache_bytes + g.activation_bytes + g.overhead_bytes
    );
    assert_eq!(e.kv_cache_tokens, 16 * 8192);
    assert_eq!(g.kv_cache_bytes, g.kv_cache_bytes_per_token * 16 * 8192);
    assert_eq!(e.gpu_memory_gib(), g.total_bytes.div_ceil(1 << 30));
    assert_eq!(e.gpu_count(), 4);
}

#[test]
fn rejects_what_the_engine_rejects() {
    let err = estimate_catalog_model("qwen2.5-7b", &params(8, 4096)).unwrap_err();
    assert!(
        matches!(
            err,
            EstimateError::TensorParallelHeads {
                attention_heads: 28,
                ..
            }
        ),
        "{err}"
    );
    let err = estimate_catalog_model("llama-3-8b", &params(1, 16_384)).unwrap_err();
    assert!(
        matches!(
            err,
            EstimateError::MaxModelLenTooLong {
                model_max: 8192,
                ..
            }
        ),
        "{err}"
    );
    let small = ServingParams {
        kv_cache_tokens: Some(1000),
        ..params(1, 4096)
    };
    let err = estimate_catalog_model("llama-3-8b", &small).unwrap_err();
    assert!(
        err.to_string().contains("1000") && err.to_string().contains("4096"),
        "{err}"
    );
    let err = estimate_catalog_model("llama-9-8b", &params(1, 4096)).unwrap_err();
    assert!(err.to_string().contains("closest"), "{err}");
    let err = estimate_catalog_model("llama-3-8b", &params(0, 4096)).unwrap_err();
    assert_eq!(err, EstimateError::ZeroTensorParallel);
    let huge = ServingParams {
        max_num_seqs: Some(u64::MAX),
        ..params(1, 4096)
    };
    assert!(matches!(
        estimate_catalog_model("llama-3-8b", &huge).unwrap_err(),
        EstimateError::Overflow { .. }
    ));
}

#[test]
fn fit_finds_gpus_needed_and_flags() {
    let spec = lookup("llama-3.1-70b").unwrap().spec();
    let p = ServingParams {
        max_num_seqs: Some(8),
        ..params(1, 8192)
    };
    let h100 = estimator::lookup_gpu("H100-80GB").unwrap();
    let f = estimator::fit(&spec, &p, h100.memory_bytes).unwrap();
    assert!(!f.fits);
    let needed = f.gpus_needed.unwrap();
    assert!(needed >= 2 && f.estimate.total_bytes() <= h100.memory_bytes);
    let below = ServingParams {
        tensor_parallel_size: needed / 2,
        ..p.clone()
    };
    assert!(estimate(&spec, &below).unwrap().total_bytes() > h100.memory_bytes);
    assert!(
        f.flags
            .iter()
            .any(|f| f == &format!("--tensor-parallel-size {needed}"))
    );
    assert!(
        f.alternative_flags
            .iter()
            .any(|f| f.starts_with("--kv-cache-memory-bytes "))
    );
    let sg = ServingParams {
        engine: Engine::Sglang.into(),
        ..p
    };
    let f = estimator::fit(&spec, &sg, h100.memory_bytes).unwrap();
    assert!(
        f.flags
            .iter()
            .any(|f| f.starts_with("--mem-fraction-static 0."))
    );
}
