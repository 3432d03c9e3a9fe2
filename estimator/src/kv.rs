//! KV-cache bytes of one tensor-parallel rank.

use crate::arch::{Architecture, AttentionKind};
use crate::weights::kv_heads_per_rank;

/// Bytes one token's K and V take on one rank in one layer.
///
/// Standard attention: `2 × KV heads per rank × head_dim × bytes`, with KV
/// heads per rank never below one. MLA caches one latent of
/// `kv_lora_rank + qk_rope_head_dim` that every rank holds whole, so it does
/// not shrink with TP (vLLM `MLACommonBackend.get_kv_cache_shape`).
pub fn kv_bytes_per_token_per_layer(arch: &Architecture, kv_bytes: u64, tp: u32) -> u64 {
    match arch.attention {
        AttentionKind::Standard => 2 * kv_heads_per_rank(arch, tp) * arch.head_dim * kv_bytes,
        AttentionKind::Mla(m) => (m.kv_lora_rank + m.qk_rope_head_dim) * kv_bytes,
    }
}

/// How layers split between full attention and a sliding window, as the
/// engine caches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSplit {
    pub full_layers: u64,
    pub windowed_layers: u64,
    pub window: u64,
}

impl LayerSplit {
    pub fn of(arch: &Architecture, honour_sliding_window: bool) -> LayerSplit {
        let layers = u64::from(arch.num_layers);
        match arch.sliding_window {
            Some(sw) if honour_sliding_window => LayerSplit {
                full_layers: layers - u64::from(sw.windowed_layers),
                windowed_layers: u64::from(sw.windowed_layers),
                window: sw.window,
            },
            _ => LayerSplit {
                full_layers: layers,
                windowed_layers: 0,
                window: 0,
            },
        }
    }
}

/// KV-cache bytes of one rank for `tokens` tokens held in sequences of at
/// most `max_model_len`: full-attention layers hold every token, windowed
/// layers at most `window` tokens of each sequence. `None` on overflow.
pub fn kv_cache_bytes(
    per_token_per_layer: u64,
    split: LayerSplit,
    tokens: u64,
    max_model_len: u64,
) -> Option<u64> {
    let full = per_token_per_layer
        .checked_mul(split.full_layers)?
        .checked_mul(tokens)?;
    if split.windowed_layers == 0 {
        return Some(full);
    }
    let sequences = tokens.div_ceil(max_model_len.max(1));
    let windowed_tokens = tokens.min(sequences.checked_mul(split.window.min(max_model_len))?);
    let windowed = per_token_per_layer
        .checked_mul(split.windowed_layers)?
        .checked_mul(windowed_tokens)?;
    full.checked_add(windowed)
}
