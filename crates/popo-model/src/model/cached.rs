//! The model's cached forward: incremental decoding over a [`KvCache`].

use super::kv_cache::{KvCache, LayerCache};
use super::rope::positions_from_mask;
use super::Model;
use anyhow::{ensure, Result};
use candle_core::Tensor;

impl Model {
    /// An empty cache for `batch` rows with room for `capacity` slots (it grows if needed).
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<KvCache> {
        let cap = capacity.max(1);
        let (kv, hd) = (self.cfg.num_key_value_heads, self.cfg.head_dim());
        let k_dim = if self.device.is_cpu() { 3 } else { 2 };
        let layers = (0..self.layers.len())
            .map(|_| LayerCache::zeros((batch, kv, hd), cap, k_dim, self.dtype, &self.device))
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            layers,
            key_mask: vec![Vec::new(); batch],
            n_real: vec![0; batch],
            len: 0,
            cap,
        })
    }

    /// Appends `input_ids` [b, t] to the cache and returns their final hidden states [b, t, d].
    /// `new_mask[b][i]` is 1 for a real token (0 = padding, e.g. the left padding of a prompt).
    /// Use on a `detached()` model: a forward through Vars records an autograd graph.
    pub fn forward_cached(
        &self,
        input_ids: &Tensor,
        new_mask: &[Vec<u8>],
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        ensure!(
            b == cache.batch_size() && new_mask.len() == b,
            "batch of {b} rows does not match the cache ({} rows) or mask ({} rows)",
            cache.batch_size(),
            new_mask.len()
        );
        ensure!(
            new_mask.iter().all(|r| r.len() == t),
            "mask rows must have {t} entries"
        );
        let pos = positions_from_mask(new_mask, &cache.n_real);
        cache.grow(cache.len + t)?;
        for (row, m) in cache.key_mask.iter_mut().zip(new_mask) {
            row.extend_from_slice(m);
        }
        let bias = self.attention_bias(&cache.key_mask, cache.len, t)?;
        let hidden = self.hidden_states(input_ids, &pos, &bias, Some(cache));
        match hidden {
            Ok(h) => {
                for (n, m) in cache.n_real.iter_mut().zip(new_mask) {
                    *n += m.iter().map(|&x| x as u32).sum::<u32>();
                }
                cache.len += t;
                Ok(h)
            }
            Err(e) => {
                for row in cache.key_mask.iter_mut() {
                    row.truncate(cache.len);
                }
                Err(e)
            }
        }
    }
}
