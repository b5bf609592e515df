//! A LoRA-adapted SwiGLU MLP's gate and up projections and the SwiGLU itself as one training op
//! on the CPU, with frozen bases:
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
//! the products `lora_train.rs`'s backward forms, in the same orientation.

use super::fused::{swiglu, swiglu_grad};
use super::host::forward_on_cpu;
use super::linear::Linear;
use super::lora_train::adapted_train;
use anyhow::Result;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

/// `silu(gate(x)) * up(x)` [b, t, i] for `x` [b, t, d] as one op, or None where it does not
/// serve: both projections adapted (one rank), without biases, where `Linear::adapter_input`
/// serves.
pub(super) fn gated_train(
    x: &Tensor,
    gate: &Linear,
    up: &Linear,
    seed: Option<u64>,
) -> Result<Option<Tensor>> {
    let (Some(lg), Some(lu)) = (&gate.lora, &up.lora) else {
        return Ok(None);
    };
    if gate.bias.is_some() || up.bias.is_some() || lg.b.dims2()? != lu.b.dims2()? {
        return Ok(None);
    }
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
        w_gate: gate.weight.detach(),
        w_up: up.weight.detach(),
    };
    let h = Tensor::cat(&[&hg, &hu], 1)?; // [n, 2r]
    let b = Tensor::cat(&[&lg.b, &lu.b], 0)?; // [2i, r]
    Ok(Some(x.apply_op3(&h, &b, op)?))
}

struct Gated {
    g: Tensor, // [b, t, i]
    u: Tensor,
    w_gate: Tensor, // [i, d]
    w_up: Tensor,
}

impl CustomOp3 for Gated {
    fn name(&self) -> &'static str {
        "gated-mlp-train"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        _h: &CpuStorage,
        _hl: &Layout,
        _b: &CpuStorage,
        _bl: &Layout,
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
        h: &Tensor,
        b: &Tensor,
        _a: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, r2) = h.dims2()?;
        let (i, r) = (b.dim(0)? / 2, r2 / 2);
        let (dg, du) = swiglu_grad(&self.g, &self.u, &grad.detach())?;
        let (dg, du) = (dg.reshape((n, i))?, du.reshape((n, i))?);
        let dx = match x.track_op() {
            true => Some((dg.matmul(&self.w_gate)? + du.matmul(&self.w_up)?)?.reshape(x.shape())?),
            false => None,
        };
        let (hd, bd) = (h.detach(), b.detach());
        let dh = match h.track_op() {
            true => {
                let (bg, bu) = (bd.narrow(0, 0, i)?, bd.narrow(0, i, i)?);
                Some(Tensor::cat(&[dg.matmul(&bg)?, du.matmul(&bu)?], 1)?)
            }
            false => None,
        };
        let db = match b.track_op() {
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

    #[test]
    fn the_gated_op_matches_the_separate_ops_and_their_gradients() {
        let (d, i, r) = (6, 10, 3);
        let x = Var::from_tensor(&rand(&[2, 4, d], 7)).unwrap();
        let (gate, ag, bg) = adapted(d, i, r, 11);
        let (up, au, bu) = adapted(d, i, r, 21);
        let w = rand(&[2, 4, i], 31);
        let loss = |y: Tensor| (y * &w).unwrap().sum_all().unwrap();
        let seed = Some(5);
        let ours = gated_train(&x, &gate, &up, seed)
            .unwrap()
            .expect("the gated op serves");
        let g = gate.forward_seeded(&x, seed).unwrap();
        let u = up.forward_seeded(&x, seed).unwrap();
        let theirs = crate::model::fused::swiglu_train(&g, &u).unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-12, "outputs differ");
        let (g1, g2) = (
            loss(ours).backward().unwrap(),
            loss(theirs).backward().unwrap(),
        );
        for (name, v) in [
            ("x", &x),
            ("A_gate", &ag),
            ("B_gate", &bg),
            ("A_up", &au),
            ("B_up", &bu),
        ] {
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
}
