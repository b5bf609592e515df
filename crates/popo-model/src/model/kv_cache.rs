//! The key/value cache of incremental decoding, and the model's cached forward.

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};

pub(super) struct LayerCache {
    pub(super) k: Tensor, // [b, kv, cap, hd]; [b, kv, hd, cap] when `k_dim` is 3
    pub(super) v: Tensor, // [b, kv, cap, hd]
    /// The slot dimension of `k`. 3 on the CPU: `q k^T` then reads k^T by rows, where from
    /// [.., cap, hd] gemm packs it element by element on every step, for every row and head
    /// (most of what was left of that packing in a batched SmolLM2 evaluation). 2 elsewhere:
    /// CUDA's matmul wants the slots of a row contiguous, which a narrowed [.., hd, cap] is not.
    pub(super) k_dim: usize,
}

impl LayerCache {
    /// An empty cache layer of `cap` slots with keys along `k_dim`.
    pub(super) fn zeros(
        like: (usize, usize, usize),
        cap: usize,
        k_dim: usize,
        dt: DType,
        dev: &Device,
    ) -> Result<Self> {
        let (b, kv, hd) = like;
        let mut k_shape = [b, kv, hd, hd];
        k_shape[k_dim] = cap;
        Ok(Self {
            k: Tensor::zeros(&k_shape[..], dt, dev)?,
            v: Tensor::zeros((b, kv, cap, hd), dt, dev)?,
            k_dim,
        })
    }

    /// Writes `k` and `v` [b, kv, t, hd] at slot `past`.
    pub(super) fn append(&self, k: &Tensor, v: &Tensor, past: usize) -> Result<()> {
        if self.k_dim == 3 {
            self.k
                .slice_set(&k.transpose(2, 3)?.contiguous()?, 3, past)?;
        } else {
            self.k.slice_set(k, 2, past)?;
        }
        Ok(self.v.slice_set(v, 2, past)?)
    }

    /// The first `len` slots of k and v, as k^T [b, kv, hd, len] and v [b, kv, len, hd].
    pub(super) fn keys_t_values(&self, len: usize) -> Result<(Tensor, Tensor)> {
        let k = self.k.narrow(self.k_dim, 0, len)?;
        let k = if self.k_dim == 3 { k } else { k.t()? };
        Ok((k, self.v.narrow(2, 0, len)?))
    }
}

/// Key/value cache for incremental decoding. It also tracks, per row, which cached slots are real
/// tokens and how many real tokens precede the next one (its rotary position).
pub struct KvCache {
    pub(super) layers: Vec<LayerCache>,
    /// [batch][len]: 1 where the cached slot is a real token.
    pub(super) key_mask: Vec<Vec<u8>>,
    /// Per row: number of real tokens cached so far (= position of the next real token).
    pub(super) n_real: Vec<u32>,
    pub(super) len: usize,
    pub(super) cap: usize,
}

impl KvCache {
    pub fn batch_size(&self) -> usize {
        self.key_mask.len()
    }
    /// Number of cached slots (including padding).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Per row: number of real tokens cached.
    pub fn real_lengths(&self) -> &[u32] {
        &self.n_real
    }
    /// Bytes held by the key and value tensors (capacity included).
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.elem_count() + l.v.elem_count()) * l.k.dtype().size_in_bytes())
            .sum()
    }

    /// A cache holding rows `rows` of this one, in that order (repeats allowed: this is how `n`
    /// samples share one prompt prefill, and how finished rows leave the batch, many at a time).
    pub fn select_rows(&self, rows: &[u32]) -> Result<KvCache> {
        let n = self.batch_size() as u32;
        ensure!(rows.iter().all(|&r| r < n), "row index out of range");
        let dev = self.layers.first().map(|l| l.k.device().clone());
        let layers = match dev {
            None => vec![],
            Some(dev) => {
                let idx = Tensor::new(rows, &dev)?;
                self.layers
                    .iter()
                    .map(|l| {
                        Ok(LayerCache {
                            k: l.k.index_select(&idx, 0)?,
                            v: l.v.index_select(&idx, 0)?,
                            k_dim: l.k_dim,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        };
        Ok(KvCache {
            layers,
            key_mask: rows
                .iter()
                .map(|&r| self.key_mask[r as usize].clone())
                .collect(),
            n_real: rows.iter().map(|&r| self.n_real[r as usize]).collect(),
            len: self.len,
            cap: self.cap,
        })
    }

    /// Stacks caches of equal length along the batch dimension.
    pub fn cat(parts: &[KvCache]) -> Result<KvCache> {
        let first = parts.first().context("no caches to concatenate")?;
        ensure!(
            parts.iter().all(|p| p.len == first.len),
            "caches of different lengths cannot be stacked"
        );
        let len = first.len;
        let layers = (0..first.layers.len())
            .map(|i| {
                let k_dim = first.layers[i].k_dim;
                let ks: Vec<Tensor> = parts
                    .iter()
                    .map(|p| p.layers[i].k.narrow(k_dim, 0, len.max(1)))
                    .collect::<candle_core::Result<_>>()?;
                let vs: Vec<Tensor> = parts
                    .iter()
                    .map(|p| p.layers[i].v.narrow(2, 0, len.max(1)))
                    .collect::<candle_core::Result<_>>()?;
                Ok(LayerCache {
                    k: Tensor::cat(&ks, 0)?,
                    v: Tensor::cat(&vs, 0)?,
                    k_dim,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            layers,
            key_mask: parts.iter().flat_map(|p| p.key_mask.clone()).collect(),
            n_real: parts.iter().flat_map(|p| p.n_real.clone()).collect(),
            len,
            cap: len.max(1),
        })
    }

    /// Stacks caches of any lengths along the batch dimension (continuous batching: rows that
    /// joined at different times decode together). Each part first drops its leading slots that
    /// are padding in all of its rows (what is left of rows that have finished), then is
    /// left-padded with masked slots to the longest part: attention never sees masked slots and
    /// rotary positions come from each row's own token count, so every row decodes as it would
    /// alone. The result has room for `extra` more slots before it must grow.
    pub fn merge(parts: &[KvCache], extra: usize) -> Result<KvCache> {
        ensure!(!parts.is_empty(), "no caches to merge");
        // Per part: (first slot kept, slots kept).
        let spans: Vec<(usize, usize)> = parts
            .iter()
            .map(|p| {
                let lead = p
                    .key_mask
                    .iter()
                    .map(|row| row.iter().position(|&m| m > 0).unwrap_or(p.len))
                    .min()
                    .unwrap_or(p.len);
                (lead, p.len - lead)
            })
            .collect();
        let len = spans.iter().map(|s| s.1).max().unwrap_or(0);
        let cap = (len + extra).max(1);
        let layers = (0..parts[0].layers.len())
            .map(|i| {
                let stack = |kv: fn(&LayerCache) -> &Tensor, dim: usize| -> Result<Tensor> {
                    let padded = parts
                        .iter()
                        .zip(&spans)
                        .map(|(p, &(lead, kept))| {
                            kv(&p.layers[i]).narrow(dim, lead, kept)?.pad_with_zeros(
                                dim,
                                len - kept,
                                cap - len,
                            )
                        })
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    Ok(Tensor::cat(&padded, 0)?)
                };
                let k_dim = parts[0].layers[i].k_dim;
                Ok(LayerCache {
                    k: stack(|l| &l.k, k_dim)?,
                    v: stack(|l| &l.v, 2)?,
                    k_dim,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let key_mask = parts
            .iter()
            .zip(&spans)
            .flat_map(|(p, &(lead, kept))| {
                p.key_mask.iter().map(move |row| {
                    let mut m = vec![0u8; len - kept];
                    m.extend_from_slice(&row[lead..]);
                    m
                })
            })
            .collect();
        Ok(KvCache {
            layers,
            key_mask,
            n_real: parts.iter().flat_map(|p| p.n_real.clone()).collect(),
            len,
            cap,
        })
    }

    /// Makes room for `capacity` slots without reallocating later.
    pub fn reserve(&mut self, capacity: usize) -> Result<()> {
        self.grow(capacity)
    }

    pub(super) fn grow(&mut self, need: usize) -> Result<()> {
        if need <= self.cap {
            return Ok(());
        }
        // Grow by a quarter (at least 64 slots): a continuous batch (`sampler::generate_requests`)
        // adds one slot per step to a cache of many rows, and doubling would leave up to half of
        // it unused; a quarter keeps the copies amortised.
        let new_cap = need.max(self.cap + self.cap / 4 + 64);
        for l in self.layers.iter_mut() {
            let (b, kv, _, hd) = l.v.dims4()?;
            let grown =
                LayerCache::zeros((b, kv, hd), new_cap, l.k_dim, l.v.dtype(), l.v.device())?;
            if self.len > 0 {
                let (k_old, v_old) = (
                    l.k.narrow(l.k_dim, 0, self.len)?,
                    l.v.narrow(2, 0, self.len)?,
                );
                grown.k.slice_set(&k_old.contiguous()?, l.k_dim, 0)?;
                grown.v.slice_set(&v_old.contiguous()?, 2, 0)?;
            }
            *l = grown;
        }
        self.cap = new_cap;
        Ok(())
    }
}
