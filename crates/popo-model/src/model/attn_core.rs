//! Attention's core for training on the CPU as one op: from the projections' outputs q, k, v to
//! the heads' output, `y = softmax(scale rope(q) rope(k)^T + bias) v`, with a written-out
//! backward.
//!
//! Built from ops (rotary embedding, head transposes, the score product, the softmax, the value
//! product, the reshapes back), the core records about a dozen nodes per layer, among them the
//! [b, h, t, s] scores and weights, the largest activations of a layer. candle's backward gives
//! every recorded node a zeroed gradient and adds into it, so each costs two sweeps of its size
//! before its own arithmetic: in a LoRA update that was about 15% of the time (memset and
//! elementwise adds in the profile; BENCHMARKS.md, "LoRA against PEFT"). Here the core is one
//! node: the forward runs on detached operands, keeps what the backward needs (the rotated q and
//! k, v with heads first, the weights p; the scores are not kept), and the backward is, with
//! G the output gradient in the heads-first layout,
//!
//!   dv = p^T G,  dp = G v^T,  ds = scale p (dp - <dp, p>),  dq_rot = ds k_rot,  dk_rot = ds^T q_rot,
//!
//! and dq, dk the rotary embedding's transpose applied to dq_rot, dk_rot (`attn_train.rs`). The
//! products are candle's, in the orientation its own matmul backward uses, and the elementwise
//! steps `attn_train.rs`'s, so the op gives what the ops it replaces gave.
//!
//! GQA: the `rep` query heads of a kv head fold into the rows of one product per kv head, as in
//! `Attention::forward`.

use super::attn_train::{rope_grad, rope_train, softmax_grad, softmax_train};
use super::host::forward_on_cpu;
use anyhow::Result;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

/// The head layout of one attention.
#[derive(Clone, Copy, Debug)]
pub(super) struct Heads {
    pub(super) n_heads: usize,
    pub(super) n_kv: usize,
    pub(super) head_dim: usize,
}

/// The heads' output [b, t, h * hd] for `q` [b, t, h * hd] (or [b, t, h, hd]), `k` and `v`
/// [b, t, kv * hd] (or [b, t, kv, hd]), the rotary tables `rope` ([b, 1, t, hd] each) and `bias`
/// [b, 1, t, t] (0 or -inf, constant), with a graph through q, k and v. f32 / f64 on the CPU.
pub(super) fn attention_train(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rope: &(Tensor, Tensor),
    bias: &Tensor,
    heads: Heads,
) -> Result<Tensor> {
    let core = Core::new(q, k, v, rope, bias, heads)?;
    Ok(q.apply_op3(k, v, core)?)
}

struct Core {
    heads: Heads,
    /// (b, t)
    bt: (usize, usize),
    scale: f64,
    cos: Tensor,
    sin: Tensor,
    /// rope(q), GQA-folded: [b, kv, rep * t, hd].
    q_rot: Tensor,
    /// rope(k): [b, kv, t, hd].
    k_rot: Tensor,
    /// v with heads first: [b, kv, t, hd].
    v: Tensor,
    /// The attention weights: [b, kv, rep * t, t].
    p: Tensor,
    /// The output: [b, t, h * hd].
    y: Tensor,
}

impl Core {
    fn new(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        (cos, sin): &(Tensor, Tensor),
        bias: &Tensor,
        heads: Heads,
    ) -> Result<Self> {
        let Heads {
            n_heads: h,
            n_kv: kv,
            head_dim: hd,
        } = heads;
        let (b, t) = (q.dim(0)?, q.dim(1)?);
        let scale = 1.0 / (hd as f64).sqrt();
        let (cos, sin) = (cos.detach().contiguous()?, sin.detach().contiguous()?);
        let rope = (cos.clone(), sin.clone());
        // Detached operands: the ops below record nothing.
        let q_rot = rope_train(&q.detach().reshape((b, t, h, hd))?, &rope.0, &rope.1)?;
        let k_rot = rope_train(&k.detach().reshape((b, t, kv, hd))?, &rope.0, &rope.1)?;
        let v = v
            .detach()
            .reshape((b, t, kv, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let q_rot = q_rot.reshape((b, kv, (h / kv) * t, hd))?;
        let p = softmax_train(&q_rot.matmul(&k_rot.t()?)?, bias, scale)?;
        let y = p
            .matmul(&v)?
            .reshape((b, h, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, h * hd))?;
        Ok(Self {
            heads,
            bt: (b, t),
            scale,
            cos,
            sin,
            q_rot,
            k_rot,
            v,
            p,
            y,
        })
    }

    /// (dq, dk, dv) for the output gradient `g` [b, t, h * hd], each [b, t, heads, hd].
    fn grads(&self, g: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let Heads {
            n_heads: h,
            n_kv: kv,
            head_dim: hd,
        } = self.heads;
        let (b, t) = self.bt;
        let g = g
            .reshape((b, t, h, hd))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, kv, (h / kv) * t, hd))?;
        let dv = self.p.t()?.matmul(&g)?; // [b, kv, t, hd]
        let dp = g.matmul(&self.v.t()?)?; // [b, kv, rep * t, t]
        let ds = softmax_grad(&dp, &self.p, self.scale)?;
        let dq = ds.matmul(&self.k_rot)?.reshape((b, h, t, hd))?;
        let dk = self.q_rot.t()?.matmul(&ds)?.t()?; // [b, kv, t, hd]
        let dq = rope_grad(&dq, &self.cos, &self.sin, (b, t, h, hd))?;
        let dk = rope_grad(&dk, &self.cos, &self.sin, (b, t, kv, hd))?;
        Ok((dq, dk, dv.transpose(1, 2)?.contiguous()?))
    }
}

impl CustomOp3 for Core {
    fn name(&self) -> &'static str {
        "attention-core-train"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        ql: &Layout,
        _k: &CpuStorage,
        _kl: &Layout,
        _v: &CpuStorage,
        _vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        // The output was formed on the detached operands (`Core::new`); this hands it over.
        let y = forward_on_cpu(
            "attention-core-train",
            &[(q, ql)],
            &[&self.y],
            |v| v[1].to_vec(),
            |v| v[1].to_vec(),
        )?;
        Ok((y, self.y.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dq, dk, dv) = self.grads(g)?;
        let keep = |t: &Tensor, d: Tensor| -> candle_core::Result<Option<Tensor>> {
            match t.track_op() {
                true => Ok(Some(d.reshape(t.shape())?)),
                false => Ok(None),
            }
        };
        Ok((keep(q, dq)?, keep(k, dk)?, keep(v, dv)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::host::testing::{max_abs, max_diff, uniform as rand};
    use crate::model::ops::{apply_rope, softmax_last};
    use candle_core::{DType, Device, Var};

    /// The same attention from candle's primitives (its own backward), GQA by repeating k, v.
    fn primitive(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        rope: &(Tensor, Tensor),
        bias: &Tensor,
        hs: Heads,
    ) -> Tensor {
        let (b, t, _) = q.dims3().unwrap();
        let (h, kv, hd) = (hs.n_heads, hs.n_kv, hs.head_dim);
        let heads = |x: &Tensor, n: usize| {
            x.reshape((b, t, n, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let q = apply_rope(&heads(q, h), &rope.0, &rope.1).unwrap();
        let repeat = |x: Tensor| {
            let x = x
                .unsqueeze(2)
                .unwrap()
                .repeat((1, 1, h / kv, 1, 1))
                .unwrap();
            x.reshape((b, h, t, hd)).unwrap()
        };
        let k = repeat(apply_rope(&heads(k, kv), &rope.0, &rope.1).unwrap());
        let v = repeat(heads(v, kv));
        let s = (q.matmul(&k.t().unwrap()).unwrap() / (hd as f64).sqrt()).unwrap();
        let p = softmax_last(&s.broadcast_add(bias).unwrap()).unwrap();
        p.matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, t, h * hd))
            .unwrap()
    }

    #[test]
    fn the_core_op_matches_candles_primitives_and_their_gradients() {
        let (b, t) = (2, 5);
        for hs in [
            Heads {
                n_heads: 4,
                n_kv: 2,
                head_dim: 6,
            },
            Heads {
                n_heads: 3,
                n_kv: 3,
                head_dim: 4,
            },
        ] {
            let (h, kv, hd) = (hs.n_heads, hs.n_kv, hs.head_dim);
            let q = Var::from_tensor(&rand(&[b, t, h * hd], 1)).unwrap();
            let k = Var::from_tensor(&rand(&[b, t, kv * hd], 2)).unwrap();
            let v = Var::from_tensor(&rand(&[b, t, kv * hd], 3)).unwrap();
            let angles = (rand(&[b, 1, t, hd], 4) * 3.0).unwrap();
            let rope = (angles.cos().unwrap(), angles.sin().unwrap());
            // Causal, with the first key of batch row 1 padded out.
            let mut mask = vec![0f64; b * t * t];
            for (i, m) in mask.iter_mut().enumerate() {
                let (bi, qi, ki) = (i / (t * t), (i / t) % t, i % t);
                if ki > qi || (bi == 1 && ki == 0 && qi > 0) {
                    *m = f64::NEG_INFINITY;
                }
            }
            let bias = Tensor::from_vec(mask, (b, 1, t, t), &Device::Cpu).unwrap();
            let w = rand(&[b, t, h * hd], 5);
            let loss = |y: Tensor| (y * &w).unwrap().sum_all().unwrap();
            let ours = attention_train(&q, &k, &v, &rope, &bias, hs).unwrap();
            let theirs = primitive(&q, &k, &v, &rope, &bias, hs);
            assert_eq!(ours.dtype(), DType::F64);
            assert!(max_diff(&ours, &theirs) < 1e-12, "{hs:?}: outputs differ");
            let (g1, g2) = (
                loss(ours).backward().unwrap(),
                loss(theirs).backward().unwrap(),
            );
            for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
                let (a, e) = (g1.get(x).unwrap(), g2.get(x).unwrap());
                let scale = max_abs(e);
                assert!(scale > 1e-3, "{hs:?}: d{name} vanishes");
                assert!(
                    max_diff(a, e) < 1e-12 * scale.max(1.0),
                    "{hs:?}: d{name} differs by {}",
                    max_diff(a, e)
                );
            }
        }
    }
}
