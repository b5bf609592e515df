//! One decoder-only transformer covering Qwen2/Qwen2.5, Qwen3 and Llama 3, written from primitive
//! candle ops so that autograd reaches every weight (candle-nn's fused softmax/rms_norm/rope detach
//! their outputs, see STACK.md).
//!
//! Positions come from the attention mask (`cumsum - 1`), and attention adds a causal plus
//! key-padding bias, so left-padded prompts (sampling) and right-padded sequences (training) both
//! give each row exactly what it would get alone.

use crate::batch::{TokenBatch, TrainOutput};
use crate::config::{Arch, ModelConfig, RopeScaling};
use anyhow::{bail, ensure, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{Init, VarBuilder, VarMap};

/// Additive attention bias for disallowed (future or padding) keys. Infinite, because glibc's
/// `expf` of a finite value below -104 takes a slow underflow path that sets errno: with -1e30
/// the masked half of every causal softmax cost more than the rest of the exps (8% of a batched
/// SmolLM2 evaluation). A query with no allowed key (left padding) attends to its own slot
/// instead, so that no softmax row is all -inf (NaN).
const MASKED: f32 = f32::NEG_INFINITY;

/// Upper bound on the elements of one logits chunk in `forward_train` (rows x vocab).
pub const LOGIT_CHUNK_ELEMS: usize = 1 << 24;

const INIT_STD: f64 = 0.02;

#[derive(Clone)]
struct Linear {
    weight: Tensor, // [out, in]
    bias: Option<Tensor>,
    /// Decoding copies on the CPU only: the weight transposed, [in, out] contiguous. gemm packs
    /// `x W^T` element by element from the [out, in] layout on every call, which at 2-64 rows
    /// cost more than the product (38% of a SmolLM2 decode step); from [in, out] it packs by rows
    /// (BENCHMARKS.md). Training keeps [out, in]: at thousands of rows the packing is amortised.
    weight_t: Option<Tensor>,
}

impl Linear {
    fn new(vb: VarBuilder, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        let weight = vb.get_with_hints(
            (d_out, d_in),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: INIT_STD,
            },
        )?;
        let bias = if bias {
            Some(vb.get_with_hints(d_out, "bias", Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            weight_t: None,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d_in) = x.dims3()?;
        let d_out = self.weight.dim(0)?;
        let x = x.reshape((b * t, d_in))?;
        let y = match &self.weight_t {
            Some(wt) => x.matmul(wt)?,
            None => x.matmul(&self.weight.t()?)?,
        }; // [b*t, out]
        let y = match &self.bias {
            Some(bias) if bias.track_op() => (&y + spread_rows(bias, &y)?)?,
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        };
        Ok(y.reshape((b, t, d_out))?)
    }

    fn detached(&self) -> Self {
        Self {
            weight: self.weight.detach(),
            bias: self.bias.as_ref().map(|b| b.detach()),
            weight_t: None,
        }
    }

    /// A detached copy that keeps its weight transposed when `layout.transpose`.
    fn for_decoding(&self, layout: DecodeLayout) -> Result<Self> {
        let mut l = self.detached();
        if layout.transpose {
            l.weight_t = Some(l.weight.t()?.contiguous()?);
        }
        Ok(l)
    }

    /// One projection whose outputs are those of `parts`, side by side (a copy of the weights:
    /// it does not follow later optimizer updates).
    fn stacked(parts: &[&Linear], layout: DecodeLayout) -> Result<Self> {
        let weights: Vec<Tensor> = parts.iter().map(|l| l.weight.detach()).collect();
        let weight = Tensor::cat(&weights, 0)?; // [sum out, in]
                                                // The projections of one block share `attention_bias`: all have a bias or none has.
        let biases: Vec<Tensor> = parts.iter().filter_map(|l| l.bias.clone()).collect();
        let bias = match biases.len() {
            0 => None,
            n if n == parts.len() => Some(Tensor::cat(&biases, 0)?.detach()),
            _ => bail!("cannot stack projections where only some have a bias"),
        };
        Self {
            weight,
            bias,
            weight_t: None,
        }
        .for_decoding(layout)
    }
}

/// How `Model::for_decoding` lays out its copies of the weights.
#[derive(Clone, Copy, Debug)]
struct DecodeLayout {
    /// Keep every layer matrix as [in, out] (`Linear::weight_t`).
    transpose: bool,
}

#[derive(Clone)]
struct RmsNorm {
    weight: Tensor, // [d]
    eps: f64,
    /// No-graph copies only: the scale of candle's fused kernel (one op instead of eight; it has
    /// no backward). The weight itself for an f32 model; ones in f32 for a bf16 / f16 model, whose
    /// weight is applied after rounding back, as transformers does.
    fused: Option<Tensor>,
    /// f32 ones [d] for low-precision models, made once.
    ones: Option<Tensor>,
}

impl RmsNorm {
    fn new(vb: VarBuilder, d: usize, eps: f64) -> Result<Self> {
        let low = matches!(vb.dtype(), DType::F16 | DType::BF16);
        let ones = if low {
            Some(Tensor::ones(d, DType::F32, vb.device())?)
        } else {
            None
        };
        let weight = vb.get_with_hints(d, "weight", Init::Const(1.0))?;
        Ok(Self {
            weight,
            eps,
            fused: None,
            ones,
        })
    }

    /// Normalises over the last dim in f32 (f64 stays f64), like transformers' RMSNorm.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dt = x.dtype();
        let low = matches!(dt, DType::F16 | DType::BF16);
        let xf = if low {
            x.to_dtype(DType::F32)?
        } else {
            x.clone()
        };
        if let Some(alpha) = &self.fused {
            let y = candle_nn::ops::rms_norm(&xf.contiguous()?, alpha, self.eps as f32)?;
            return Ok(if low {
                y.to_dtype(dt)?.broadcast_mul(&self.weight)?
            } else {
                y
            });
        }
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let y = xf.broadcast_div(&(var + self.eps)?.sqrt()?)?.to_dtype(dt)?;
        Ok(if self.weight.track_op() {
            (&y * spread_rows(&self.weight, &y)?)?
        } else {
            y.broadcast_mul(&self.weight)?
        })
    }

    fn detached(&self) -> Self {
        let weight = self.weight.detach();
        // f64 models (finite-difference tests) stay on primitives.
        let fused = match weight.dtype() {
            DType::F32 => Some(weight.clone()),
            _ => self.ones.clone(),
        };
        Self {
            weight,
            eps: self.eps,
            fused,
            ones: self.ones.clone(),
        }
    }
}

/// A per-column weight `w` [d] laid over every row of `like` [.., d], for an op whose result
/// needs w's gradient. A plain broadcast sends that gradient through candle's sum over the
/// leading dims, which reduces element by element with two integer divisions each (0.69 ms for
/// a [16, 62, 128] sum against 0.011 ms as a matmul; BENCHMARKS.md); an outer product with a
/// ones column has a matmul for a backward. Exact: each entry is the single product 1 * w_j.
fn spread_rows(w: &Tensor, like: &Tensor) -> Result<Tensor> {
    let d = w.elem_count();
    let ones = Tensor::ones((like.elem_count() / d, 1), w.dtype(), w.device())?;
    Ok(ones.matmul(&w.reshape((1, d))?)?.reshape(like.shape())?) // [.., d]
}

/// rotate_half convention (first half / second half), as in transformers.
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    // x: [b, h, t, hd]; cos/sin: [b, 1, t, hd]
    let hd = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
    let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

/// Softmax over the last dim; the max shift is detached because softmax is invariant to it.
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

#[derive(Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    n_heads: usize,
    n_kv: usize,
    head_dim: usize,
    /// No-graph copies only: candle's fused softmax and RoPE kernels.
    fused: bool,
    /// Decoding copies only (`Model::for_decoding`): q, k and v in one matmul.
    qkv: Option<Linear>,
}

impl Attention {
    fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let (d, hd) = (cfg.hidden_size, cfg.head_dim());
        let (h, kv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let qk_norm = cfg.arch == Arch::Qwen3;
        Ok(Self {
            q_proj: Linear::new(vb.pp("q_proj"), d, h * hd, cfg.attention_bias)?,
            k_proj: Linear::new(vb.pp("k_proj"), d, kv * hd, cfg.attention_bias)?,
            v_proj: Linear::new(vb.pp("v_proj"), d, kv * hd, cfg.attention_bias)?,
            o_proj: Linear::new(vb.pp("o_proj"), h * hd, d, cfg.o_proj_bias)?,
            q_norm: if qk_norm {
                Some(RmsNorm::new(vb.pp("q_norm"), hd, cfg.rms_norm_eps)?)
            } else {
                None
            },
            k_norm: if qk_norm {
                Some(RmsNorm::new(vb.pp("k_norm"), hd, cfg.rms_norm_eps)?)
            } else {
                None
            },
            n_heads: h,
            n_kv: kv,
            head_dim: hd,
            fused: false,
            qkv: None,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        bias: &Tensor,
        cache: Option<(&mut LayerCache, usize)>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, kv, hd) = (self.n_heads, self.n_kv, self.head_dim);
        let (mut q, mut k, v) = match &self.qkv {
            Some(qkv) => {
                // Views of one [b, t, h + 2 kv, hd]: the head split below copies them anyway.
                let y = qkv.forward(x)?.reshape((b, t, h + 2 * kv, hd))?;
                (
                    y.narrow(2, 0, h)?,
                    y.narrow(2, h, kv)?,
                    y.narrow(2, h + kv, kv)?,
                )
            }
            None => (
                self.q_proj.forward(x)?.reshape((b, t, h, hd))?,
                self.k_proj.forward(x)?.reshape((b, t, kv, hd))?,
                self.v_proj.forward(x)?.reshape((b, t, kv, hd))?,
            ),
        };
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        let rotate = |x: &Tensor| -> Result<Tensor> {
            let x = x.transpose(1, 2)?.contiguous()?;
            if self.fused {
                // cos/sin: [b, t, hd/2]
                Ok(candle_nn::rotary_emb::rope(&x, &rope.0, &rope.1)?)
            } else {
                apply_rope(&x, &rope.0, &rope.1) // cos/sin: [b, 1, t, hd]
            }
        };
        let q = rotate(&q)?; // [b, h, t, hd]
        let k = rotate(&k)?; // [b, kv, t, hd]
        let v = v.transpose(1, 2)?.contiguous()?; // [b, kv, t, hd]
        let (k_t, v) = match cache {
            Some((c, past)) => {
                c.append(&k, &v, past)?;
                c.keys_t_values(past + t)? // [b, kv, hd, s], [b, kv, s, hd]
            }
            None => (k.t()?, v),
        };
        let s = v.dim(2)?;
        // GQA without copying k/v: query head g*rep + r reads kv head g, so fold the `rep`
        // query heads of a group into the row dimension of one matmul per kv head.
        let rep = h / kv;
        let q = q.reshape((b, kv, rep * t, hd))?;
        let scores = (q.matmul(&k_t)? * (1.0 / (hd as f64).sqrt()))?; // [b, kv, rep*t, s]
        let scores = scores.reshape((b, h, t, s))?;
        let dt = scores.dtype();
        let scores = match dt {
            DType::F16 | DType::BF16 => scores.to_dtype(DType::F32)?,
            _ => scores,
        };
        let scores = scores.broadcast_add(bias)?;
        let probs = if self.fused {
            candle_nn::ops::softmax_last_dim(&scores)?
        } else {
            softmax_last(&scores)?
        }
        .to_dtype(dt)?; // [b, h, t, s]
        let y = probs.reshape((b, kv, rep * t, s))?.matmul(&v)?; // [b, kv, rep*t, hd]
        let y = y
            .reshape((b, h, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, h * hd))?;
        self.o_proj.forward(&y)
    }

    fn detached(&self) -> Self {
        Self {
            q_proj: self.q_proj.detached(),
            k_proj: self.k_proj.detached(),
            v_proj: self.v_proj.detached(),
            o_proj: self.o_proj.detached(),
            q_norm: self.q_norm.as_ref().map(|n| n.detached()),
            k_norm: self.k_norm.as_ref().map(|n| n.detached()),
            // f64 models (finite-difference tests) keep every op primitive.
            fused: self.q_proj.weight.dtype() != DType::F64,
            qkv: None,
            ..*self
        }
    }

    fn for_decoding(&self, layout: DecodeLayout) -> Result<Self> {
        let qkv = [&self.q_proj, &self.k_proj, &self.v_proj];
        Ok(Self {
            qkv: Some(Linear::stacked(&qkv, layout)?),
            o_proj: self.o_proj.for_decoding(layout)?,
            ..self.detached()
        })
    }
}

#[derive(Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
    /// Decoding copies only (`Model::for_decoding`): gate and up in one matmul.
    gate_up: Option<Linear>,
}

impl Mlp {
    fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let (d, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: Linear::new(vb.pp("gate_proj"), d, i, false)?,
            up_proj: Linear::new(vb.pp("up_proj"), d, i, false)?,
            down_proj: Linear::new(vb.pp("down_proj"), i, d, false)?,
            gate_up: None,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (g, u) = match &self.gate_up {
            Some(gate_up) => {
                let i = self.up_proj.weight.dim(0)?;
                let y = gate_up.forward(x)?; // [b, t, 2i]
                (y.narrow(2, 0, i)?, y.narrow(2, i, i)?)
            }
            None => (self.gate_proj.forward(x)?, self.up_proj.forward(x)?),
        };
        self.down_proj.forward(&(g.silu()? * u)?)
    }
    fn detached(&self) -> Self {
        Self {
            gate_proj: self.gate_proj.detached(),
            up_proj: self.up_proj.detached(),
            down_proj: self.down_proj.detached(),
            gate_up: None,
        }
    }
    fn for_decoding(&self, layout: DecodeLayout) -> Result<Self> {
        Ok(Self {
            gate_up: Some(Linear::stacked(&[&self.gate_proj, &self.up_proj], layout)?),
            down_proj: self.down_proj.for_decoding(layout)?,
            ..self.detached()
        })
    }
}

#[derive(Clone)]
struct Layer {
    attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl Layer {
    /// x + attn(norm(x)), then + mlp(norm(.)): one pre-norm decoder block.
    fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        bias: &Tensor,
        cache: Option<(&mut LayerCache, usize)>,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(x)?;
        let x = (x + self.attn.forward(&h, rope, bias, cache)?)?;
        let h = self.post_attention_layernorm.forward(&x)?;
        Ok((&x + self.mlp.forward(&h)?)?)
    }

    fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(Self {
            attn: Attention::new(cfg, vb.pp("self_attn"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
            input_layernorm: RmsNorm::new(vb.pp("input_layernorm"), d, cfg.rms_norm_eps)?,
            post_attention_layernorm: RmsNorm::new(
                vb.pp("post_attention_layernorm"),
                d,
                cfg.rms_norm_eps,
            )?,
        })
    }
    fn detached(&self) -> Self {
        Self {
            attn: self.attn.detached(),
            mlp: self.mlp.detached(),
            input_layernorm: self.input_layernorm.detached(),
            post_attention_layernorm: self.post_attention_layernorm.detached(),
        }
    }
    fn for_decoding(&self, layout: DecodeLayout) -> Result<Self> {
        Ok(Self {
            attn: self.attn.for_decoding(layout)?,
            mlp: self.mlp.for_decoding(layout)?,
            ..self.detached()
        })
    }
}

struct LayerCache {
    k: Tensor, // [b, kv, cap, hd]; [b, kv, hd, cap] when `k_dim` is 3
    v: Tensor, // [b, kv, cap, hd]
    /// The slot dimension of `k`. 3 on the CPU: `q k^T` then reads k^T by rows, where from
    /// [.., cap, hd] gemm packs it element by element on every step, for every row and head
    /// (most of what was left of that packing in a batched SmolLM2 evaluation). 2 elsewhere:
    /// CUDA's matmul wants the slots of a row contiguous, which a narrowed [.., hd, cap] is not.
    k_dim: usize,
}

impl LayerCache {
    /// An empty cache layer of `cap` slots with keys along `k_dim`.
    fn zeros(
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
    fn append(&self, k: &Tensor, v: &Tensor, past: usize) -> Result<()> {
        if self.k_dim == 3 {
            self.k
                .slice_set(&k.transpose(2, 3)?.contiguous()?, 3, past)?;
        } else {
            self.k.slice_set(k, 2, past)?;
        }
        Ok(self.v.slice_set(v, 2, past)?)
    }

    /// The first `len` slots of k and v, as k^T [b, kv, hd, len] and v [b, kv, len, hd].
    fn keys_t_values(&self, len: usize) -> Result<(Tensor, Tensor)> {
        let k = self.k.narrow(self.k_dim, 0, len)?;
        let k = if self.k_dim == 3 { k } else { k.t()? };
        Ok((k, self.v.narrow(2, 0, len)?))
    }
}

/// Key/value cache for incremental decoding. It also tracks, per row, which cached slots are real
/// tokens and how many real tokens precede the next one (its rotary position).
pub struct KvCache {
    layers: Vec<LayerCache>,
    /// [batch][len]: 1 where the cached slot is a real token.
    key_mask: Vec<Vec<u8>>,
    /// Per row: number of real tokens cached so far (= position of the next real token).
    n_real: Vec<u32>,
    len: usize,
    cap: usize,
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

    fn grow(&mut self, need: usize) -> Result<()> {
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

/// Qwen2 / Qwen3 / Llama decoder with HF tensor names.
#[derive(Clone)]
pub struct Model {
    cfg: ModelConfig,
    embed_tokens: Tensor, // [vocab, d]
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Tensor, // [vocab, d]; the embedding itself when tied
    inv_freq: Vec<f64>,
    device: Device,
    dtype: DType,
    /// A `detached()` copy: no autograd graph, so the forward uses candle's fused kernels and
    /// skips the log-prob gradient carriers.
    no_grad: bool,
}

fn rope_inv_freq(cfg: &ModelConfig) -> Vec<f64> {
    let hd = cfg.head_dim();
    let base: Vec<f64> = (0..hd / 2)
        .map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f64 / hd as f64))
        .collect();
    match &cfg.rope_scaling {
        None => base,
        Some(RopeScaling::Linear { factor }) => base.iter().map(|f| f / factor).collect(),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => {
            let old = *original_max_position_embeddings as f64;
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            base.iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

/// Rotary positions from a 0/1 mask: each real token's index among the real tokens of its row.
fn positions_from_mask(mask: &[Vec<u8>], start: &[u32]) -> Vec<Vec<u32>> {
    mask.iter()
        .zip(start)
        .map(|(row, &s)| {
            let mut n = s;
            row.iter()
                .map(|&m| {
                    let p = n;
                    n += m as u32;
                    // padding gets the next real position; it is never attended to
                    p
                })
                .collect()
        })
        .collect()
}

impl Model {
    /// Builds the model from a VarBuilder using HF tensor names. Over an empty VarMap this creates
    /// freshly initialised trainable Vars (normal(0, 0.02) weights, zero biases, unit norms).
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Model> {
        let d = cfg.hidden_size;
        let vbm = vb.pp("model");
        let embed_tokens = vbm
            .get_with_hints(
                (cfg.vocab_size, d),
                "embed_tokens.weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: INIT_STD,
                },
            )
            .context("model.embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            layers.push(
                Layer::new(cfg, vbm.pp(format!("layers.{i}")))
                    .with_context(|| format!("in model.layers.{i}"))?,
            );
        }
        let norm = RmsNorm::new(vbm.pp("norm"), d, cfg.rms_norm_eps).context("model.norm")?;
        let lm_head = if cfg.tie_word_embeddings {
            embed_tokens.clone()
        } else {
            vb.get_with_hints(
                (cfg.vocab_size, d),
                "lm_head.weight",
                Init::Randn {
                    mean: 0.0,
                    stdev: INIT_STD,
                },
            )
            .context("lm_head.weight")?
        };
        Ok(Model {
            cfg: cfg.clone(),
            device: embed_tokens.device().clone(),
            dtype: embed_tokens.dtype(),
            no_grad: false,
            embed_tokens,
            layers,
            norm,
            lm_head,
            inv_freq: rope_inv_freq(cfg),
        })
    }

    /// A freshly initialised trainable model with reproducible weights: normal(0, `std`) matrices
    /// and embeddings, zero biases, unit norm weights, drawn in sorted-name order from `seed`.
    pub fn new_seeded(
        cfg: &ModelConfig,
        device: &Device,
        dtype: DType,
        seed: u64,
        std: f64,
    ) -> Result<(VarMap, Model)> {
        use rand::{Rng, SeedableRng};
        let varmap = VarMap::new();
        let model = Model::new(cfg, VarBuilder::from_varmap(&varmap, dtype, device))?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let data = varmap.data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for name in names {
            let var = &data[name];
            let shape = var.shape().clone();
            let t = if name.ends_with("norm.weight") {
                Tensor::ones(&shape, DType::F64, device)?
            } else if name.ends_with(".bias") {
                Tensor::zeros(&shape, DType::F64, device)?
            } else {
                let vals: Vec<f64> = (0..shape.elem_count())
                    .map(|_| {
                        // Box-Muller
                        let u1: f64 = rng.random::<f64>().max(1e-300);
                        let u2: f64 = rng.random();
                        std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
                    })
                    .collect();
                Tensor::from_vec(vals, &shape, device)?
            };
            var.set(&t.to_dtype(dtype)?)?;
        }
        drop(data);
        Ok((varmap, model))
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    pub fn device(&self) -> &Device {
        &self.device
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Same storage (sees in-place Var updates made by the optimizer), records no autograd graph.
    pub fn detached(&self) -> Model {
        Model {
            cfg: self.cfg.clone(),
            embed_tokens: self.embed_tokens.detach(),
            layers: self.layers.iter().map(|l| l.detached()).collect(),
            norm: self.norm.detached(),
            lm_head: self.lm_head.detach(),
            inv_freq: self.inv_freq.clone(),
            device: self.device.clone(),
            dtype: self.dtype,
            no_grad: true,
        }
    }

    /// A `detached()` model for decoding: its q/k/v and gate/up projections each run as one
    /// matmul (fewer, wider matmuls; 2 kernel launches fewer per layer on a GPU), and on the CPU
    /// every layer matrix is kept transposed (`Linear::weight_t`). The same layout whatever the
    /// batch, so that a row's floats do not depend on the rows beside it. The copies (about 2/3
    /// of the layers' weights; all of them on the CPU) must not outlive an optimizer step: make
    /// one per generation call. f64 models (finite-difference tests) get the plain detached model.
    pub fn for_decoding(&self) -> Result<Model> {
        let mut model = self.detached();
        if self.dtype != DType::F64 {
            let layout = DecodeLayout {
                transpose: self.device.is_cpu(),
            };
            model.layers = self
                .layers
                .iter()
                .map(|l| l.for_decoding(layout))
                .collect::<Result<_>>()?;
        }
        Ok(model)
    }

    /// Whether the forward uses candle's fused kernels (a `detached()` model, not f64).
    fn fused(&self) -> bool {
        self.no_grad && self.dtype != DType::F64
    }

    /// dtype of masks, rotary tables and log-prob outputs: f64 for an f64 model, else f32.
    fn float_dtype(&self) -> DType {
        if self.dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        }
    }

    /// cos/sin tables in the compute dtype: [b, 1, t, hd] for the primitive RoPE, [b, t, hd/2]
    /// for candle's fused kernel.
    fn rope_tables(&self, positions: &[Vec<u32>]) -> Result<(Tensor, Tensor)> {
        let b = positions.len();
        let t = positions.first().map_or(0, |r| r.len());
        let fdt = self.float_dtype();
        let pos: Vec<f64> = positions.iter().flatten().map(|&p| p as f64).collect();
        let pos = Tensor::from_vec(pos, (b, t, 1), &self.device)?.to_dtype(fdt)?;
        let half = self.inv_freq.len();
        let inv =
            Tensor::from_vec(self.inv_freq.clone(), (1, 1, half), &self.device)?.to_dtype(fdt)?;
        let freqs = pos.broadcast_mul(&inv)?; // [b, t, hd/2]
        if self.fused() {
            let cos = freqs.cos()?.to_dtype(self.dtype)?.contiguous()?;
            let sin = freqs.sin()?.to_dtype(self.dtype)?.contiguous()?;
            return Ok((cos, sin));
        }
        let emb = Tensor::cat(&[&freqs, &freqs], D::Minus1)?; // [b, t, hd]
        let cos = emb.cos()?.unsqueeze(1)?.to_dtype(self.dtype)?;
        let sin = emb.sin()?.unsqueeze(1)?.to_dtype(self.dtype)?;
        Ok((cos, sin))
    }

    /// Additive bias [b, 1, t, s] for `t` new queries after `past` cached slots.
    fn attention_bias(&self, key_mask: &[Vec<u8>], past: usize, t: usize) -> Result<Tensor> {
        let b = key_mask.len();
        let s = past + t;
        let mut bias = vec![MASKED; b * t * s];
        for (r, keys) in key_mask.iter().enumerate() {
            for i in 0..t {
                // [b, t, s]: query i of row r sees the real slots up to its own.
                let row = &mut bias[(r * t + i) * s..(r * t + i + 1) * s];
                let own = past + i;
                for (j, x) in row[..=own].iter_mut().enumerate() {
                    if keys[j] > 0 {
                        *x = 0.0;
                    }
                }
                if keys[..=own].iter().all(|&m| m == 0) {
                    row[own] = 0.0;
                }
            }
        }
        Ok(Tensor::from_vec(bias, (b, 1, t, s), &self.device)?.to_dtype(self.float_dtype())?)
    }

    fn check_ids(&self, ids: &Tensor, positions: &[Vec<u32>]) -> Result<()> {
        let max_pos = positions.iter().flatten().copied().max().unwrap_or(0) as usize;
        if max_pos >= self.cfg.max_position_embeddings {
            bail!(
                "sequence of {} tokens is longer than max_position_embeddings ({})",
                max_pos + 1,
                self.cfg.max_position_embeddings
            );
        }
        let max_id = ids.flatten_all()?.max(0)?.to_scalar::<u32>()? as usize;
        if max_id >= self.cfg.vocab_size {
            bail!(
                "token id {max_id} is out of range for vocab_size {}",
                self.cfg.vocab_size
            );
        }
        Ok(())
    }

    /// Runs the decoder; returns the final (post-norm) hidden states [b, t, d].
    fn hidden_states(
        &self,
        ids: &Tensor,
        positions: &[Vec<u32>],
        bias: &Tensor,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        self.check_ids(ids, positions)?;
        let rope = self.rope_tables(positions)?;
        let mut x = self.embed(ids, b, t)?; // [b, t, d]
        let past = cache.as_ref().map_or(0, |c| c.len);
        for (i, layer) in self.layers.iter().enumerate() {
            let lc = cache.as_deref_mut().map(|c| (&mut c.layers[i], past));
            x = layer.forward(&x, &rope, bias, lc)?;
        }
        self.norm.forward(&x)
    }

    /// Token embeddings [b, t, d] of `ids` [b, t].
    fn embed(&self, ids: &Tensor, b: usize, t: usize) -> Result<Tensor> {
        Ok(self
            .embed_tokens
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, self.cfg.hidden_size))?)
    }

    /// Logits [.., vocab] in the compute dtype for hidden states [.., d].
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        let dims = hidden.dims().to_vec();
        let d = *dims.last().context("hidden must have a last dim")?;
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let logits = hidden.reshape((rows, d))?.matmul(&self.lm_head.t()?)?; // [rows, vocab]
        let mut out = dims;
        *out.last_mut().unwrap() = self.cfg.vocab_size;
        Ok(logits.reshape(out)?)
    }

    /// Full forward without a cache: final hidden states [b, t, d] for `input_ids` [b, t] u32
    /// and `attention_mask` [b, t] (1 = real token; any padding side).
    pub fn forward_hidden(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let mask = mask_to_host(attention_mask)?;
        let zeros = vec![0u32; mask.len()];
        let pos = positions_from_mask(&mask, &zeros);
        let bias = self.attention_bias(&mask, 0, input_ids.dim(1)?)?;
        self.hidden_states(input_ids, &pos, &bias, None)
    }

    /// Full-sequence logits [b, t, vocab] (materialises all of them: for tests and small vocabularies).
    pub fn forward_logits(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        self.lm_head(&self.forward_hidden(input_ids, attention_mask)?)
    }

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

    /// Log-probs of `targets` and entropies, each [n, 1] in f32 (f64 for f64 models), for hidden
    /// rows `h` [n, d] at `temperature`.
    ///
    /// Values come from a detached f32 log-softmax over the logits. Gradients flow through
    /// surrogates that need no [n, vocab] tensor in the graph except the detached probabilities:
    /// with z = h W^T / T, d logsumexp(z) / dz = p and dH / dz = -p (z - E_p[z]) =: -r, so
    /// `h/T . (p W)` and `h/T . (r W)` have exactly those gradients with respect to h and W.
    /// Autograd therefore keeps two [n, vocab] tensors per chunk instead of the half-dozen a
    /// plain log-softmax leaves behind, and no elementwise [n, vocab] op is differentiated.
    fn chunk_logprob_entropy(
        &self,
        h: &Tensor,
        targets: &Tensor,
        temperature: f64,
    ) -> Result<(Tensor, Tensor)> {
        let fdt = self.float_dtype();
        let w = &self.lm_head; // [vocab, d]
        let h_t = (h / temperature)?; // [n, d]
                                      // Detached statistics.
        let z = h_t.detach().matmul(&w.detach().t()?)?.to_dtype(fdt)?; // [n, vocab]
        let max = z.max_keepdim(1)?; // [n, 1]
        let e = z.broadcast_sub(&max)?.exp()?; // [n, vocab]
        let sum_e = e.sum_keepdim(1)?; // [n, 1]
        let p = e.broadcast_div(&sum_e)?; // [n, vocab]
        let lse = (sum_e.log()? + max)?; // [n, 1]
        let mean_z = (&p * &z)?.sum_keepdim(1)?; // [n, 1]
        let entropy = (&lse - &mean_z)?; // [n, 1]
        let tgt = targets.unsqueeze(1)?; // [n, 1]
        let z_tgt = z.gather(&tgt, 1)?; // [n, 1]
        if self.no_grad {
            // No graph to carry gradients for: skip the two [n, vocab] x [vocab, d] products.
            return Ok(((z_tgt - lse)?, entropy));
        }
        let r = p.mul(&z.broadcast_sub(&mean_z)?)?; // [n, vocab]
        drop((z, e));
        // Gradient carriers: value zero, gradient as described above.
        let zero_value = |x: Tensor| -> Result<Tensor> {
            let x = x.to_dtype(fdt)?;
            Ok((&x - x.detach())?)
        };
        let dot = |a: &Tensor, b: &Tensor| -> Result<Tensor> { Ok((a * b)?.sum_keepdim(1)?) };
        let w_tgt = w.index_select(targets, 0)?; // [n, d]
        let g_tgt = zero_value(dot(&h_t, &w_tgt)?)?; // d z_tgt
        let g_lse = zero_value(dot(&h_t, &p.to_dtype(self.dtype)?.matmul(w)?)?)?; // d lse
        let g_ent = zero_value(dot(&h_t, &r.to_dtype(self.dtype)?.matmul(w)?)?)?; // -dH
        let logprob = ((z_tgt - lse)? + (g_tgt - g_lse)?)?;
        let entropy = (entropy - g_ent)?;
        Ok((logprob, entropy))
    }

    /// Differentiable training forward over a padded batch (see `TrainOutput`). The log-softmax is
    /// computed in row chunks of at most `LOGIT_CHUNK_ELEMS` logits, never as one [b, t, vocab].
    pub fn forward_train(&self, batch: &TokenBatch, temperature: f64) -> Result<TrainOutput> {
        ensure!(
            temperature > 0.0,
            "temperature must be positive, got {temperature}"
        );
        let hidden = self.forward_hidden(&batch.input_ids, &batch.attention_mask)?; // [b, t, d]
        self.head(batch, hidden, temperature)
    }

    /// Log-probs and entropies from the final hidden states (the rest of `forward_train`).
    fn head(&self, batch: &TokenBatch, hidden: Tensor, temperature: f64) -> Result<TrainOutput> {
        let ids = &batch.input_ids;
        let (b, t) = ids.dims2()?;
        let fdt = self.float_dtype();
        let mask = batch.attention_mask.to_dtype(fdt)?; // [b, t]
        if t < 2 {
            let zeros = Tensor::zeros((b, t), fdt, &self.device)?;
            return Ok(TrainOutput {
                logprobs: zeros.clone(),
                entropy: zeros,
                hidden,
            });
        }
        let d = self.cfg.hidden_size;
        let rows = b * (t - 1);
        let prev = hidden.narrow(1, 0, t - 1)?.reshape((rows, d))?; // [b*(t-1), d]
        let targets = ids.narrow(1, 1, t - 1)?.reshape((rows, 1))?; // [b*(t-1), 1]
                                                                    // With `completion_only`, the rows whose target is a completion token: [n].
        let picked = if batch.completion_only {
            Some(Tensor::new(batch.completion_targets(), &self.device)?)
        } else {
            None
        };
        let (prev, targets) = match &picked {
            Some(idx) => (prev.index_select(idx, 0)?, targets.index_select(idx, 0)?),
            None => (prev, targets),
        };
        let n = prev.dim(0)?;
        let chunk = (LOGIT_CHUNK_ELEMS / self.cfg.vocab_size).max(1);
        let mut lps = Vec::new();
        let mut ents = Vec::new();
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let (lp, ent) = self.chunk_logprob_entropy(
                &prev.narrow(0, start, len)?,
                &targets.narrow(0, start, len)?.squeeze(1)?,
                temperature,
            )?;
            lps.push(lp);
            ents.push(ent);
            start += len;
        }
        // Back to [b, t-1]: picked rows to their places (through index_select, which has a
        // backward), zero elsewhere.
        let place = match &picked {
            None => None,
            Some(_) => {
                let mut at = vec![n as u32; rows];
                for (k, &r) in batch.completion_targets().iter().enumerate() {
                    at[r as usize] = k as u32;
                }
                Some(Tensor::from_vec(at, rows, &self.device)?)
            }
        };
        let zero = Tensor::zeros((1, 1), fdt, &self.device)?;
        let shift = |mut parts: Vec<Tensor>| -> Result<Tensor> {
            let x = match &place {
                None => Tensor::cat(&parts, 0)?, // [b*(t-1), 1]
                Some(at) => {
                    parts.push(zero.clone());
                    Tensor::cat(&parts, 0)?.index_select(at, 0)?
                }
            };
            let x = x.reshape((b, t - 1))?; // [b, t-1]
            Ok(x.pad_with_zeros(1, 1, 0)?.mul(&mask)?) // [b, t]
        };
        Ok(TrainOutput {
            logprobs: shift(lps)?,
            entropy: shift(ents)?,
            hidden,
        })
    }

    /// The gradients of `loss(forward_train(batch))`, with per-layer activation recomputation
    /// (gradient checkpointing): the forward keeps only each layer's input, and the backward runs
    /// the layers again one at a time, last first, each with its own small graph. Peak memory is
    /// one layer's activations instead of all of them, for about one more forward of compute.
    /// The gradients equal those of `loss(forward_train(batch)).backward()` up to float rounding.
    ///
    /// Hands `sink` one `GradStore` per stage (head, each layer, embedding) as soon as it is
    /// computed, so that the caller keeps the weights' gradients and the rest is freed; a weight's
    /// gradient is the sum of its entries across them (a tied embedding appears twice).
    pub fn backward_checkpointed(
        &self,
        batch: &TokenBatch,
        temperature: f64,
        loss: &mut dyn FnMut(&TrainOutput) -> Result<Tensor>,
        sink: &mut dyn FnMut(GradStore) -> Result<()>,
    ) -> Result<()> {
        ensure!(
            temperature > 0.0,
            "temperature must be positive, got {temperature}"
        );
        let ids = &batch.input_ids;
        let (b, t) = ids.dims2()?;
        let mask = mask_to_host(&batch.attention_mask)?;
        let pos = positions_from_mask(&mask, &vec![0; mask.len()]);
        self.check_ids(ids, &pos)?;
        let rope = self.rope_tables(&pos)?;
        let bias = self.attention_bias(&mask, 0, t)?;
        // Forward: each layer's graph is dropped as soon as its output is detached.
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut x = self.embed(ids, b, t)?.detach();
        for layer in &self.layers {
            let next = layer.forward(&x, &rope, &bias, None)?.detach();
            inputs.push(x);
            x = next;
        }
        // Head and loss, back to the last layer's output.
        let top = Var::from_tensor(&x)?;
        let out = self.head(batch, self.norm.forward(top.as_tensor())?, temperature)?;
        let store = loss(&out)?.backward()?;
        drop(out);
        let mut grad = stage_grad(&store, &top)?;
        sink(store)?;
        // Layers, last first: recompute with a graph, push the gradient through.
        for (layer, input) in self.layers.iter().zip(inputs).rev() {
            let input = Var::from_tensor(&input)?;
            let y = layer.forward(input.as_tensor(), &rope, &bias, None)?;
            let store = (y * &grad)?.sum_all()?.backward()?;
            grad = stage_grad(&store, &input)?;
            sink(store)?;
        }
        sink((self.embed(ids, b, t)? * &grad)?.sum_all()?.backward()?)
    }
}

/// The gradient a stage's backward left on its input (zeros when the loss did not reach it).
fn stage_grad(store: &GradStore, input: &Var) -> Result<Tensor> {
    Ok(match store.get(input.as_tensor()) {
        Some(g) => g.clone(),
        None => input.as_tensor().zeros_like()?,
    })
}

/// [b, t] mask tensor (any numeric dtype) as host 0/1 rows.
pub(crate) fn mask_to_host(mask: &Tensor) -> Result<Vec<Vec<u8>>> {
    let m = mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    Ok(m.into_iter()
        .map(|r| r.into_iter().map(|x| (x > 0.5) as u8).collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_skip_padding() {
        let pos = positions_from_mask(&[vec![0, 0, 1, 1, 1], vec![1, 1, 1, 0, 0]], &[0, 0]);
        assert_eq!(pos, vec![vec![0, 0, 0, 1, 2], vec![0, 1, 2, 3, 3]]);
        let pos = positions_from_mask(&[vec![1]], &[7]);
        assert_eq!(pos, vec![vec![7]]);
    }

    #[test]
    fn llama3_inv_freq_matches_hand_values() {
        let mut cfg = ModelConfig::qwen2_tiny(16, 8, 1, 1, 1, 16);
        cfg.rope_theta = 500_000.0;
        cfg.rope_scaling = Some(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        });
        let inv = rope_inv_freq(&cfg);
        // head_dim 8: base freqs 1, theta^-1/4, theta^-1/2, theta^-3/4.
        let base: Vec<f64> = (0..4).map(|i| 500_000f64.powf(-(i as f64) / 4.0)).collect();
        // wavelengths 2pi/f: 6.28 (< 2048, kept), 166 (kept), 4443 (ramp), 118k (> 8192, /8)
        assert_eq!(inv[0], base[0]);
        assert_eq!(inv[1], base[1]);
        let wl = 2.0 * std::f64::consts::PI / base[2];
        let s = (8192.0 / wl - 1.0) / 3.0;
        assert!((inv[2] - ((1.0 - s) * base[2] / 8.0 + s * base[2])).abs() < 1e-15);
        assert!((inv[3] - base[3] / 8.0).abs() < 1e-18);
    }
}
