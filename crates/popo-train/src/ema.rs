//! The momentum (EMA) update of POPO's target, in place: `xi <- tau * xi + (1 - tau) * theta`.

use anyhow::{bail, Result};
use candle_core::Var;
use std::collections::HashMap;

/// Updates every target Var from the online Var of the same name. `tau = 1` freezes the target,
/// `tau = 0` copies the online weights.
pub fn ema_update(target: &[(String, Var)], online: &[(String, Var)], tau: f64) -> Result<()> {
    let online: HashMap<&str, &Var> = online.iter().map(|(n, v)| (n.as_str(), v)).collect();
    if online.len() != target.len() {
        bail!(
            "EMA: target has {} tensors, policy {}",
            target.len(),
            online.len()
        );
    }
    if tau == 1.0 {
        return Ok(());
    }
    for (name, xi) in target {
        let theta = online
            .get(name.as_str())
            .ok_or_else(|| anyhow::anyhow!("EMA: policy has no tensor `{name}`"))?;
        let theta = theta.as_tensor().detach().to_dtype(xi.dtype())?;
        let new = if tau == 0.0 {
            theta
        } else {
            ((xi.as_tensor().detach() * tau)? + (theta * (1.0 - tau))?)?
        };
        xi.set(&new)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn matches_the_formula() {
        let dev = Device::Cpu;
        let xi = Var::from_tensor(&Tensor::new(&[1.0f64, -2.0, 3.0], &dev).unwrap()).unwrap();
        let th = Var::from_tensor(&Tensor::new(&[0.5f64, 4.0, -1.0], &dev).unwrap()).unwrap();
        let t = [("a".to_string(), xi.clone())];
        let o = [("a".to_string(), th.clone())];
        ema_update(&t, &o, 0.995).unwrap();
        let got = xi.as_tensor().to_vec1::<f64>().unwrap();
        let want = [
            0.995 * 1.0 + 0.005 * 0.5,
            0.995 * -2.0 + 0.005 * 4.0,
            0.995 * 3.0 - 0.005,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{g} vs {w}");
        }
        // Online weights untouched; tau = 1 freezes; tau = 0 copies.
        assert_eq!(
            th.as_tensor().to_vec1::<f64>().unwrap(),
            vec![0.5, 4.0, -1.0]
        );
        ema_update(&t, &o, 1.0).unwrap();
        assert_eq!(xi.as_tensor().to_vec1::<f64>().unwrap(), got);
        ema_update(&t, &o, 0.0).unwrap();
        assert_eq!(
            xi.as_tensor().to_vec1::<f64>().unwrap(),
            vec![0.5, 4.0, -1.0]
        );
        let bad = [("b".to_string(), th)];
        assert!(ema_update(&t, &bad, 0.5)
            .unwrap_err()
            .to_string()
            .contains("`a`"));
    }
}
