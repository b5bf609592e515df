//! Complex floating point for the numeric fallback of `eval` (`i`, square roots of negatives,
//! powers of negatives), and the gamma function for factorials of non-integers.

/// A complex number for numeric evaluation (`i`, square roots of negatives).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct C {
    pub re: f64,
    pub im: f64,
}

impl C {
    pub fn real(re: f64) -> C {
        C { re, im: 0.0 }
    }
    pub fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }
    pub fn is_finite(self) -> bool {
        self.re.is_finite() && self.im.is_finite()
    }
    pub fn is_real(self) -> bool {
        self.im.abs() <= 1e-12 * self.re.abs().max(1.0)
    }
    pub fn add(self, o: C) -> C {
        C {
            re: self.re + o.re,
            im: self.im + o.im,
        }
    }
    pub fn sub(self, o: C) -> C {
        C {
            re: self.re - o.re,
            im: self.im - o.im,
        }
    }
    pub fn mul(self, o: C) -> C {
        C {
            re: self.re * o.re - self.im * o.im,
            im: self.re * o.im + self.im * o.re,
        }
    }
    pub fn div(self, o: C) -> C {
        if o.im == 0.0 {
            return C {
                re: self.re / o.re,
                im: self.im / o.re,
            };
        }
        let d = o.re * o.re + o.im * o.im;
        C {
            re: (self.re * o.re + self.im * o.im) / d,
            im: (self.im * o.re - self.re * o.im) / d,
        }
    }
    pub fn neg(self) -> C {
        C {
            re: -self.re,
            im: -self.im,
        }
    }
    pub fn ln(self) -> C {
        C {
            re: self.abs().ln(),
            im: self.im.atan2(self.re),
        }
    }
    pub fn exp(self) -> C {
        let m = self.re.exp();
        if self.im == 0.0 {
            return C::real(m);
        }
        C {
            re: m * self.im.cos(),
            im: m * self.im.sin(),
        }
    }
    pub fn pow(self, e: C) -> C {
        if self.is_real() && e.is_real() {
            let (a, x) = (self.re, e.re);
            if a >= 0.0 || x.fract() == 0.0 {
                return C::real(a.powf(x));
            }
            // Odd roots of negatives are real: (-8)^(1/3) = -2.
            let inv = 1.0 / x;
            if (inv.round() - inv).abs() < 1e-9 && (inv.round() as i64) % 2 != 0 {
                return C::real(-(-a).powf(x));
            }
        }
        if self.re == 0.0 && self.im == 0.0 {
            return C::real(0.0);
        }
        e.mul(self.ln()).exp()
    }
    pub fn sqrt(self) -> C {
        if self.im == 0.0 {
            return if self.re >= 0.0 {
                C::real(self.re.sqrt())
            } else {
                C {
                    re: 0.0,
                    im: (-self.re).sqrt(),
                }
            };
        }
        self.pow(C::real(0.5))
    }
    pub fn sin(self) -> C {
        C {
            re: self.re.sin() * self.im.cosh(),
            im: self.re.cos() * self.im.sinh(),
        }
    }
    pub fn cos(self) -> C {
        C {
            re: self.re.cos() * self.im.cosh(),
            im: -self.re.sin() * self.im.sinh(),
        }
    }
}

pub(crate) fn gamma(x: f64) -> f64 {
    // Lanczos approximation (g = 7, 9 terms); enough for factorials of non-integers.
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        return std::f64::consts::PI / ((std::f64::consts::PI * x).sin() * gamma(1.0 - x));
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    (2.0 * std::f64::consts::PI).sqrt() * t.powf(x + 0.5) * (-t).exp() * a
}
