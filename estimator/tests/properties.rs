//! Invariants over the whole catalog.
#![allow(clippy::unwrap_used)]

use estimator::{
    CATALOG, Engine, EngineRelease, Fraction, KvCacheDtype, MemoryFlag, ServingParams, Version,
    estimate,
};
use proptest::prelude::*;

fn valid_tps(entry: &estimator::CatalogEntry) -> Vec<u32> {
    (1..=16)
        .filter(|tp| estimator::estimate::check_tensor_parallel(&entry.arch, *tp).is_ok())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn more_tp_never_raises_weights_per_gpu(i in 0..CATALOG.len(), a in 0usize..16, b in 0usize..16) {
        let entry = &CATALOG[i];
        let tps = valid_tps(entry);
        let (lo, hi) = (tps[a % tps.len()].min(tps[b % tps.len()]), tps[a % tps.len()].max(tps[b % tps.len()]));
        let spec = entry.spec();
        let w = |tp| estimate(&spec, &ServingParams { tensor_parallel_size: tp, max_model_len: Some(1024), ..Default::default() })
            .unwrap().per_gpu.weights_bytes;
        prop_assert!(w(hi) <= w(lo), "{} tp {lo}->{hi}", entry.name);
    }

    #[test]
    fn more_tokens_never_lower_kv_bytes(i in 0..CATALOG.len(), len in 1u64..65_536, t1 in 0u64..2_000_000, t2 in 0u64..2_000_000, fp8 in any::<bool>()) {
        let entry = &CATALOG[i];
        let len = len.min(entry.arch.max_position_embeddings);
        let kv = |extra: u64| {
            let p = ServingParams {
                max_model_len: Some(len),
                kv_cache_tokens: Some(len + extra),
                kv_cache_dtype: if fp8 { KvCacheDtype::Fp8E4m3 } else { KvCacheDtype::Auto },
                ..Default::default()
            };
            estimate(&entry.spec(), &p).unwrap().per_gpu.kv_cache_bytes
        };
        let (lo, hi) = (t1.min(t2), t1.max(t2));
        prop_assert!(kv(lo) <= kv(hi));
    }

    #[test]
    fn totals_are_sums_of_parts(i in 0..CATALOG.len(), a in 0usize..16, seqs in 1u64..64, len in 1u64..32_768) {
        let entry = &CATALOG[i];
        let tps = valid_tps(entry);
        let p = ServingParams {
            tensor_parallel_size: tps[a % tps.len()],
            max_model_len: Some(len.min(entry.arch.max_position_embeddings)),
            max_num_seqs: Some(seqs),
            ..Default::default()
        };
        let e = estimate(&entry.spec(), &p).unwrap();
        let g = e.per_gpu;
        prop_assert_eq!(g.total_bytes, g.weights_bytes + g.kv_cache_bytes + g.activation_bytes + g.overhead_bytes);
        prop_assert_eq!(g.weights_bytes, e.weights_detail.total());
        let o = e.overhead_detail;
        prop_assert_eq!(g.overhead_bytes, o.runtime_bytes + o.collective_bytes + o.cuda_graph_bytes);
    }

    /// The memory flag for a grant keeps the engine within the grant on a
    /// GPU shared with others, and gives away no more than a ten-thousandth
    /// of the GPU: a vLLM budget plus what vLLM holds outside it fits the
    /// grant; SGLang's and TGI's headroom holds what they allocate after
    /// the KV pool.
    #[test]
    fn memory_flags_hold_the_engine_to_its_grant(
        i in 0..CATALOG.len(),
        engine in 0usize..6,
        extra in 0u64..(64 << 30),
        room in 0u64..(200 << 30),
    ) {
        let release = [
            EngineRelease::new(Engine::Vllm),
            "vllm@0.6".parse().unwrap(),
            "vllm@0.11".parse().unwrap(),
            EngineRelease { engine: Engine::Vllm, version: Some(Version::new(0, 21)) },
            EngineRelease::new(Engine::Sglang),
            EngineRelease::new(Engine::Tgi),
        ][engine];
        let len = CATALOG[i].arch.max_position_embeddings.min(4096);
        let p = ServingParams { engine: release, max_model_len: Some(len), ..Default::default() };
        let e = estimate(&CATALOG[i].spec(), &p).unwrap();
        let grant = e.total_bytes() + extra;
        let gpu = grant + room;
        let flag = e.memory_flag(grant, gpu);
        prop_assert!(flag <= Fraction::WHOLE);
        let share = u128::from(flag.ten_thousandths()) * u128::from(gpu) / 10_000;
        let step = u128::from(gpu) / 10_000 + 1;
        let o = e.overhead_detail;
        match release.profile().memory_flag {
            MemoryFlag::Budget { runtime_outside, cuda_graphs_outside } => {
                let outside = u128::from(if runtime_outside { o.runtime_bytes } else { 0 })
                    + u128::from(if cuda_graphs_outside { o.cuda_graph_bytes } else { 0 });
                prop_assert!(share + outside <= u128::from(grant), "{release}: {share} + {outside} > {grant}");
                prop_assert!(share + outside + step > u128::from(grant), "{release}: gives away more than a step");
            }
            MemoryFlag::Headroom => {
                let after = u128::from(e.per_gpu.activation_bytes + o.cuda_graph_bytes);
                prop_assert!(u128::from(gpu) - share >= after, "{release}: headroom below {after}");
                prop_assert!(u128::from(gpu) - share < after + step);
            }
        }
    }
}
