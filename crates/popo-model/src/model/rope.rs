//! Rotary frequencies (with Llama 3 / linear scaling) and positions from attention masks.

use crate::config::{ModelConfig, RopeScaling};

pub(super) fn rope_inv_freq(cfg: &ModelConfig) -> Vec<f64> {
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
pub(super) fn positions_from_mask(mask: &[Vec<u8>], start: &[u32]) -> Vec<Vec<u32>> {
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
