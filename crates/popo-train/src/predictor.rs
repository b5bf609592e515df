//! BYOL-style predictor h_phi on POPO's online branch:
//! `[Linear(d, hidden) -> LayerNorm -> ReLU] x (L - 1) -> Linear(-> d)`, Xavier-uniform weights,
//! zero biases. Built from differentiable primitive ops only (candle's fused layer norm drops grads).

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use rand::{Rng, SeedableRng};

struct Layer {
    weight: Var,              // [out, in]
    bias: Var,                // [out]
    norm: Option<(Var, Var)>, // LayerNorm gamma, beta: [out]
}

pub struct Predictor {
    layers: Vec<Layer>,
}

const LN_EPS: f64 = 1e-5;

impl Predictor {
    /// `layers` is L, the number of Linear layers (L = 1 is a single Linear(d, d)).
    pub fn new(d: usize, hidden: usize, layers: usize, seed: u64, device: &Device) -> Result<Self> {
        if layers == 0 || d == 0 || hidden == 0 {
            bail!("predictor: need d, hidden and layers >= 1 (got d {d}, hidden {hidden}, layers {layers})");
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(layers);
        for l in 0..layers {
            let fan_in = if l == 0 { d } else { hidden };
            let last = l + 1 == layers;
            let fan_out = if last { d } else { hidden };
            let a = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
            let w: Vec<f32> = (0..fan_in * fan_out)
                .map(|_| rng.random_range(-a..a))
                .collect();
            let weight = Var::from_tensor(&Tensor::from_vec(w, (fan_out, fan_in), device)?)?;
            let bias = Var::zeros(fan_out, DType::F32, device)?;
            let norm = if last {
                None
            } else {
                Some((
                    Var::ones(fan_out, DType::F32, device)?,
                    Var::zeros(fan_out, DType::F32, device)?,
                ))
            };
            out.push(Layer { weight, bias, norm });
        }
        Ok(Self { layers: out })
    }

    /// `[N, d] -> [N, d]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for layer in &self.layers {
            h = h
                .matmul(&layer.weight.as_tensor().t()?)?
                .broadcast_add(layer.bias.as_tensor())?; // [N, out]
            if let Some((g, b)) = &layer.norm {
                let mean = h.mean_keepdim(D::Minus1)?; // [N, 1]
                let c = h.broadcast_sub(&mean)?;
                let var = c.sqr()?.mean_keepdim(D::Minus1)?;
                h = c
                    .broadcast_div(&(var + LN_EPS)?.sqrt()?)?
                    .broadcast_mul(g.as_tensor())?
                    .broadcast_add(b.as_tensor())?;
                h = h.relu()?;
            }
        }
        Ok(h)
    }

    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            out.push((
                format!("predictor.layers.{i}.linear.weight"),
                l.weight.clone(),
            ));
            out.push((format!("predictor.layers.{i}.linear.bias"), l.bias.clone()));
            if let Some((g, b)) = &l.norm {
                out.push((format!("predictor.layers.{i}.norm.weight"), g.clone()));
                out.push((format!("predictor.layers.{i}.norm.bias"), b.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_init_and_layernorm() {
        let dev = Device::Cpu;
        let p = Predictor::new(6, 16, 3, 7, &dev).unwrap();
        assert_eq!(p.named_vars().len(), 4 + 4 + 2);
        // Xavier-uniform bound and zero biases.
        for (n, v) in p.named_vars() {
            let vals = v
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            if n.ends_with("linear.bias") || n.ends_with("norm.bias") {
                assert!(vals.iter().all(|&x| x == 0.0), "{n}");
            }
            if n == "predictor.layers.0.linear.weight" {
                let a = (6.0f32 / 22.0).sqrt();
                assert!(
                    vals.iter().all(|&x| x.abs() <= a) && vals.iter().any(|&x| x.abs() > a / 2.0)
                );
            }
        }
        let x = Tensor::randn(0f32, 1.0, (5, 6), &dev).unwrap();
        let y = p.forward(&x).unwrap();
        assert_eq!(y.dims(), &[5, 6]);
        // Reference: first layer + layer norm + relu in f64 loops.
        let one = Predictor::new(3, 4, 2, 1, &dev).unwrap();
        let xv = [[0.5f32, -1.0, 2.0]];
        let xt = Tensor::new(&xv, &dev).unwrap();
        let w0 = one.layers[0].weight.as_tensor().to_vec2::<f32>().unwrap();
        let w1 = one.layers[1].weight.as_tensor().to_vec2::<f32>().unwrap();
        let h: Vec<f64> = (0..4)
            .map(|o| (0..3).map(|i| w0[o][i] as f64 * xv[0][i] as f64).sum())
            .collect();
        let mean = h.iter().sum::<f64>() / 4.0;
        let var = h.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4.0;
        let hn: Vec<f64> = h
            .iter()
            .map(|v| ((v - mean) / (var + LN_EPS).sqrt()).max(0.0))
            .collect();
        let want: Vec<f64> = (0..3)
            .map(|o| (0..4).map(|i| w1[o][i] as f64 * hn[i]).sum())
            .collect();
        let got = one.forward(&xt).unwrap().to_vec2::<f32>().unwrap();
        for o in 0..3 {
            assert!(
                (got[0][o] as f64 - want[o]).abs() < 1e-5,
                "{got:?} vs {want:?}"
            );
        }
    }
}
