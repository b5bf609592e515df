//! A SwiGLU MLP's gate and up projections and the SwiGLU itself as one training op on the CPU,
//! here with LoRA on frozen bases:
//!
//!   a = silu(g) u,   g = x W_g^T + h_g B_g^T,   u = x W_u^T + h_u B_u^T,
//!
//! where h_g and h_u [n, r] are the adapters' inputs (`Linear::adapter_input`, with their own
//! small graphs to A). As three ops (`lora_train.rs` twice and `fused.rs`'s SwiGLU) the gate's
//! and up's outputs are recorded nodes, [n, intermediate] each and the largest of a layer after
//! attention's, and candle's backward gives each a zeroed gradient and a sum (`attn_core.rs` says
//! why that matters). Here the op takes x, [h_g h_u] [n, 2r] and [B_g; B_u] [2 i, r], keeps g and
//! u, and its backward is, with (dg, du) SwiGLU's input gradients,
//!
//!   dx = dg W_g + du W_u,   dh = [dg B_g, du B_u],   dB = [dg^T h_g; du^T h_u],
//!
//! the products `lora_train.rs`'s backward forms, in the same orientation. Without adapters (full
//! fine-tuning) the op takes x, W_g and W_u, and gives dW_g = dg^T x and dW_u = du^T x besides.

use super::fused::{swiglu, swiglu_grad};
use super::gemm::{add_product, product, Mat};
use super::host::{forward_on_cpu, on_host, Real};
use super::linear::Linear;
use super::lora_train::adapted_train;
use anyhow::Result;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

/// `silu(gate(x)) * up(x)` [b, t, i] for `x` [b, t, d] as one op, or None where it does not
/// serve: CPU f32 / f64, no biases, and either both projections adapted (one rank, where
/// `Linear::adapter_input` serves) or neither (`full_train`).
pub(super) fn gated_train(
    x: &Tensor,
    gate: &Linear,
    up: &Linear,
    seed: Option<u64>,
) -> Result<Option<Tensor>> {
    if gate.bias.is_some() || up.bias.is_some() {
        return Ok(None);
    }
    let (lg, lu) = match (&gate.lora, &up.lora) {
        (Some(lg), Some(lu)) if lg.b.dims2()? == lu.b.dims2()? => (lg, lu),
        (None, None) => return full_train(x, gate, up),
        _ => return Ok(None),
    };
    let (Some(hg), Some(hu)) = (gate.adapter_input(x, seed)?, up.adapter_input(x, seed)?) else {
        return Ok(None);
    };
    // Detached operands: the forward records nothing; the op below is the one node.
    let xd = x.detach();
    let g = adapted_train(&xd, &hg.detach(), (&gate.weight, None), &lg.b.detach())?;
    let u = adapted_train(&xd, &hu.detach(), (&up.weight, None), &lu.b.detach())?;
    let op = Gated {
        g,
        u,
        frozen: Some((gate.weight.detach(), up.weight.detach())),
    };
    let h = Tensor::cat(&[&hg, &hu], 1)?; // [n, 2r]
    let b = Tensor::cat(&[&lg.b, &lu.b], 0)?; // [2i, r]
    Ok(Some(x.apply_op3(&h, &b, op)?))
}

/// Without adapters the op's operands are x and the two weights, with dW_g = dg^T x and
/// dW_u = du^T x for weights that train.
fn full_train(x: &Tensor, gate: &Linear, up: &Linear) -> Result<Option<Tensor>> {
    let (wg, wu) = (&gate.weight, &up.weight);
    let dt = x.dtype();
    let serves = super::fused::serves(x)
        && gate.weight_t.is_none()
        && up.weight_t.is_none()
        && wg.dtype() == dt
        && wu.dtype() == dt
        && (x.track_op() || wg.track_op() || wu.track_op());
    if !serves {
        return Ok(None);
    }
    let (b, t, d) = x.dims3()?;
    let xd = x.detach().reshape((b * t, d))?;
    let product =
        |w: &Tensor| -> Result<Tensor> { Ok(xd.matmul(&w.detach().t()?)?.reshape((b, t, ()))?) };
    let op = Gated {
        g: product(wg)?,
        u: product(wu)?,
        frozen: None,
    };
    Ok(Some(x.apply_op3(wg, wu, op)?))
}

struct Gated {
    g: Tensor, // [b, t, i]
    u: Tensor,
    /// The adapted form's frozen W_g, W_u [i, d]; None when the op's operands are x, W_g, W_u.
    frozen: Option<(Tensor, Tensor)>,
}

impl CustomOp3 for Gated {
    fn name(&self) -> &'static str {
        "gated-mlp-train"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        _p: &CpuStorage,
        _pl: &Layout,
        _q: &CpuStorage,
        _ql: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let a = forward_on_cpu(
            "gated-mlp-train",
            &[(x, xl)],
            &[&self.g, &self.u],
            |v| swiglu(v[1], v[2]),
            |v| swiglu(v[1], v[2]),
        )?;
        Ok((a, self.g.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        q: &Tensor,
        _a: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, t, i) = self.g.dims3()?;
        let n = b * t;
        let (dg, du) = swiglu_grad(&self.g, &self.u, &grad.detach())?;
        let (dg, du) = (dg.reshape((n, i))?, du.reshape((n, i))?);
        let Some((wg, wu)) = &self.frozen else {
            // Operands x, W_g, W_u.
            let (wg, wu, xd) = (p.detach(), q.detach(), x.detach().reshape((n, ()))?);
            let dx = x
                .track_op()
                .then(|| dx_of(x, (&dg, &wg), (&du, &wu)))
                .transpose()?;
            let dwg = p.track_op().then(|| dg.t()?.matmul(&xd)).transpose()?;
            let dwu = q.track_op().then(|| du.t()?.matmul(&xd)).transpose()?;
            return Ok((dx, dwg, dwu));
        };
        // Operands x, [h_g h_u] [n, 2r], [B_g; B_u] [2i, r].
        let (h, bs) = (p, q);
        let r = h.dim(1)? / 2;
        let dx = x
            .track_op()
            .then(|| dx_of(x, (&dg, wg), (&du, wu)))
            .transpose()?;
        let (hd, bd) = (h.detach(), bs.detach());
        let dh = match h.track_op() {
            true => {
                let (bg, bu) = (bd.narrow(0, 0, i)?, bd.narrow(0, i, i)?);
                Some(Tensor::cat(&[dg.matmul(&bg)?, du.matmul(&bu)?], 1)?)
            }
            false => None,
        };
        let db = match bs.track_op() {
            true => {
                let (hg, hu) = (hd.narrow(1, 0, r)?, hd.narrow(1, r, r)?);
                Some(Tensor::cat(
                    &[dg.t()?.matmul(&hg)?, du.t()?.matmul(&hu)?],
                    0,
                )?)
            }
            false => None,
        };
        Ok((dx, dh, db))
    }
}

/// dx = dg W_g + du W_u, shaped as `x`: the second product adds into the first's buffer.
fn dx_of(
    x: &Tensor,
    (dg, wg): (&Tensor, &Tensor),
    (du, wu): (&Tensor, &Tensor),
) -> candle_core::Result<Tensor> {
    let dims = (dg.dim(0)?, dg.dim(1)?, wg.dim(1)?);
    let mut dx = on_host(
        "gated-mlp-train backward",
        &[dg, wg, du, wu],
        &[x.shape()],
        |v| vec![sum_of_products(v, dims)],
        |v| vec![sum_of_products(v, dims)],
    )?;
    dx.pop()
        .ok_or_else(|| candle_core::Error::Msg("gated-mlp-train backward: no result".into()))
}

/// `a W + c V` [n, d] from a, c [n, i] and W, V [i, d] in `v` as (a, W, c, V).
fn sum_of_products<T: Real + 'static>(v: &[&[T]], (n, i, d): (usize, usize, usize)) -> Vec<T> {
    let mut out = product(Mat::rows(v[0], n, i), Mat::rows(v[1], i, d));
    add_product(&mut out, Mat::rows(v[2], n, i), Mat::rows(v[3], i, d));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::host::testing::{max_abs, max_diff, uniform as rand};
    use crate::model::lora::Lora;
    use candle_core::Var;

    fn adapted(d: usize, i: usize, r: usize, seed: u64) -> (Linear, Var, Var) {
        let (a, b) = (
            Var::from_tensor(&rand(&[r, d], seed)).unwrap(),
            Var::from_tensor(&rand(&[i, r], seed + 1)).unwrap(),
        );
        let lora = Lora {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            scale: 1.5,
            dropout: 0.25,
            salt: seed,
        };
        let linear = Linear {
            weight: rand(&[i, d], seed + 2),
            bias: None,
            weight_t: None,
            lora: Some(lora),
        };
        (linear, a, b)
    }

    /// The op against the two projections and the SwiGLU op, output and the gradients of `vars`.
    fn compare(x: &Var, gate: &Linear, up: &Linear, vars: &[(&str, &Var)]) {
        let w = rand(
            &x.dims()[..2]
                .iter()
                .copied()
                .chain([gate.weight.dim(0).unwrap()])
                .collect::<Vec<_>>(),
            31,
        );
        let loss = |y: Tensor| (y * &w).unwrap().sum_all().unwrap();
        let seed = Some(5);
        let ours = gated_train(x, gate, up, seed)
            .unwrap()
            .expect("the gated op serves");
        let g = gate.forward_seeded(x, seed).unwrap();
        let u = up.forward_seeded(x, seed).unwrap();
        let theirs = crate::model::fused::swiglu_train(&g, &u).unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-12, "outputs differ");
        let (g1, g2) = (
            loss(ours).backward().unwrap(),
            loss(theirs).backward().unwrap(),
        );
        for (name, v) in vars {
            let (a, e) = (g1.get(v).unwrap(), g2.get(v).unwrap());
            let scale = max_abs(e);
            assert!(scale > 1e-3, "d{name} vanishes");
            assert!(
                max_diff(a, e) < 1e-12 * scale.max(1.0),
                "d{name} differs by {}",
                max_diff(a, e)
            );
        }
    }

    #[test]
    fn the_gated_op_matches_the_separate_ops_and_their_gradients() {
        let (d, i, r) = (6, 10, 3);
        let x = Var::from_tensor(&rand(&[2, 4, d], 7)).unwrap();
        let (gate, ag, bg) = adapted(d, i, r, 11);
        let (up, au, bu) = adapted(d, i, r, 21);
        compare(
            &x,
            &gate,
            &up,
            &[
                ("x", &x),
                ("A_gate", &ag),
                ("B_gate", &bg),
                ("A_up", &au),
                ("B_up", &bu),
            ],
        );
        // Without adapters the weights are the operands and train.
        let (wg, wu) = (
            Var::from_tensor(&rand(&[i, d], 41)).unwrap(),
            Var::from_tensor(&rand(&[i, d], 42)).unwrap(),
        );
        let full = |w: &Var| Linear {
            weight: w.as_tensor().clone(),
            bias: None,
            weight_t: None,
            lora: None,
        };
        compare(
            &x,
            &full(&wg),
            &full(&wu),
            &[("x", &x), ("W_gate", &wg), ("W_up", &wu)],
        );
    }
}
