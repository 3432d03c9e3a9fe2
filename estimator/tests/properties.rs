//! Invariants over the whole catalog.
#![allow(clippy::unwrap_used)]

use estimator::{CATALOG, KvCacheDtype, ServingParams, estimate};
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
}
