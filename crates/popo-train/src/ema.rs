//! The momentum (EMA) update of POPO's target, in place: `xi <- tau * xi + (1 - tau) * theta`.
//!
//! Both sides are full precision: `theta` is the policy's f32 master (or its f32 weights) and `xi`
//! is updated in its own f32 master when the target computes in bf16 or f16. In bf16 alone, a
//! move of `0.005 * (theta - xi)` is far below half a ULP and `tau = 0.995` would barely move it.

use crate::params::{full_dtype, Params};
use anyhow::{bail, Result};
use candle_core::Tensor;
use std::collections::HashMap;

/// Updates every target parameter from the online weight of the same name (`online` may hold
/// more, such as the predictor). `tau = 1` freezes the target, `tau = 0` copies the online
/// weights.
pub fn ema_update(target: &mut Params, online: &[(String, Tensor)], tau: f64) -> Result<()> {
    let online: HashMap<&str, &Tensor> = online.iter().map(|(n, t)| (n.as_str(), t)).collect();
    if let Some(missing) = target
        .names()
        .iter()
        .find(|n| !online.contains_key(n.as_str()))
    {
        bail!("EMA: policy has no tensor `{missing}`");
    }
    if tau == 1.0 {
        return Ok(());
    }
    for i in 0..target.len() {
        let xi = target.full(i)?;
        let theta = online[target.names()[i].as_str()].to_dtype(xi.dtype())?;
        let new = if tau == 0.0 {
            theta
        } else {
            ((xi * tau)? + (theta * (1.0 - tau))?)?
        };
        target.set_full(i, new)?;
    }
    Ok(())
}

/// The target's full-precision weights, `<prefix><name>`, for checkpoints.
pub fn state(target: &Params, prefix: &str) -> Result<Vec<(String, Tensor)>> {
    Ok(target
        .full_named()?
        .into_iter()
        .map(|(n, t)| (format!("{prefix}{n}"), t))
        .collect())
}

/// Restores what [`state`] saved (f32 values, or a bf16 target of an older checkpoint).
pub fn load_state(
    target: &mut Params,
    tensors: &HashMap<String, Tensor>,
    prefix: &str,
) -> Result<()> {
    for i in 0..target.len() {
        let key = format!("{prefix}{}", target.names()[i]);
        let Some(t) = tensors.get(&key) else {
            bail!("trainer state: missing tensor `{key}`")
        };
        let var = &target.vars()[i];
        if t.shape() != var.shape() {
            bail!(
                "trainer state: tensor `{key}` has shape {:?}, expected {:?}",
                t.shape(),
                var.shape()
            );
        }
        let t = t
            .to_dtype(full_dtype(var.dtype()))?
            .to_device(var.device())?;
        target.set_full(i, t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn params(vals: &[f64], dtype: DType) -> (Params, Var) {
        with_master(vals, dtype, true)
    }

    fn with_master(vals: &[f64], dtype: DType, keep_master: bool) -> (Params, Var) {
        let t = Tensor::new(vals, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let v = Var::from_tensor(&t).unwrap();
        let p = Params::new(vec![("a".into(), v.clone())], keep_master).unwrap();
        (p, v)
    }

    #[test]
    fn matches_the_formula() {
        let (mut t, xi) = params(&[1.0, -2.0, 3.0], DType::F64);
        let th = Tensor::new(&[0.5f64, 4.0, -1.0], &Device::Cpu).unwrap();
        let o = [("a".to_string(), th.clone())];
        ema_update(&mut t, &o, 0.995).unwrap();
        let got = xi.as_tensor().to_vec1::<f64>().unwrap();
        let want = [
            0.995 * 1.0 + 0.005 * 0.5,
            0.995 * -2.0 + 0.005 * 4.0,
            0.995 * 3.0 - 0.005,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{g} vs {w}");
        }
        // tau = 1 freezes; tau = 0 copies.
        ema_update(&mut t, &o, 1.0).unwrap();
        assert_eq!(xi.as_tensor().to_vec1::<f64>().unwrap(), got);
        ema_update(&mut t, &o, 0.0).unwrap();
        assert_eq!(
            xi.as_tensor().to_vec1::<f64>().unwrap(),
            vec![0.5, 4.0, -1.0]
        );
        let bad = [("b".to_string(), th)];
        assert!(ema_update(&mut t, &bad, 0.5)
            .unwrap_err()
            .to_string()
            .contains("`a`"));
    }

    /// A bf16 target moved 10 times at tau = 0.995 equals the f32 formula's result rounded to
    /// bf16; without the f32 master, most of its elements would not have moved at all.
    #[test]
    fn a_bf16_target_follows_the_f32_formula() {
        let start = [0.02f32, -0.5, 1.0, 0.003, -0.07, 0.25];
        // 20% away: one step moves xi by 0.1%, under half a bf16 ULP (0.2%); ten steps by 1%.
        let online = [0.024f32, -0.6, 1.2, 0.0036, -0.084, 0.3];
        let bf = |x: f32| half::bf16::from_f32(x).to_f32();
        let as64: Vec<f64> = start.iter().map(|&x| bf(x) as f64).collect();
        let theta = Tensor::new(&online[..], &Device::Cpu).unwrap();
        let o = [("a".to_string(), theta)];
        let (mut t, xi) = params(&as64, DType::BF16);
        let (mut plain, xi_plain) = with_master(&as64, DType::BF16, false);
        let tau = 0.995f64;
        let mut want: Vec<f32> = start.iter().map(|&x| bf(x)).collect();
        for _ in 0..10 {
            ema_update(&mut t, &o, tau).unwrap();
            ema_update(&mut plain, &o, tau).unwrap();
            for (w, th) in want.iter_mut().zip(online) {
                *w = *w * tau as f32 + th * (1.0 - tau) as f32;
            }
        }
        let got = xi.as_tensor().to_vec1::<half::bf16>().unwrap();
        let want_bf: Vec<half::bf16> = want.iter().map(|&w| half::bf16::from_f32(w)).collect();
        assert_eq!(got, want_bf);
        let moved = |v: &Var| {
            v.as_tensor()
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .zip(&as64)
                .filter(|(a, b)| **a as f64 != **b)
                .count()
        };
        assert!(
            moved(&xi) > moved(&xi_plain),
            "the master moves more weights"
        );
    }

    #[test]
    fn state_round_trips_the_f32_target() {
        let (mut t, _) = params(&[0.02, 0.5], DType::BF16);
        let o = [(
            "a".to_string(),
            Tensor::new(&[0.03f32, 0.6], &Device::Cpu).unwrap(),
        )];
        ema_update(&mut t, &o, 0.9).unwrap();
        let st: HashMap<String, Tensor> = state(&t, "target.").unwrap().into_iter().collect();
        assert_eq!(st["target.a"].dtype(), DType::F32);
        let (mut u, v) = params(&[0.0, 0.0], DType::BF16);
        load_state(&mut u, &st, "target.").unwrap();
        assert_eq!(
            u.full(0).unwrap().to_vec1::<f32>().unwrap(),
            t.full(0).unwrap().to_vec1::<f32>().unwrap()
        );
        assert_eq!(v.as_tensor().dtype(), DType::BF16);
        let e = load_state(&mut u, &HashMap::new(), "target.").unwrap_err();
        assert!(e.to_string().contains("target.a"), "{e}");
    }
}
