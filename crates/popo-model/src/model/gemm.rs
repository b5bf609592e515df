//! Matrix products written straight into buffers the CPU training ops own. candle's matmul
//! zero-fills every result before the product overwrites it, and a sum of two products costs a
//! third buffer and a pass over it; here the first product writes a fresh buffer without filling
//! it and the next one adds into it (BENCHMARKS.md, "Products into the ops' own buffers").

use super::host::{on_host, Real};
use candle_core::{Shape, Tensor};
use gemm::{gemm, Parallelism};

/// A matrix over a slice: `rows` x `cols`, element (i, j) at `i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(super) struct Mat<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A row-major [rows, cols] matrix.
    pub(super) fn rows(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose, over the same elements.
    pub(super) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Whether every element the strides reach lies in `data`.
    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `a b` as a row-major [a.rows, b.cols] buffer.
pub(super) fn product<T: Real + 'static>(a: Mat<T>, b: Mat<T>) -> Vec<T> {
    let len = a.rows * b.cols;
    if a.cols == 0 {
        return vec![T::of(0.0); len];
    }
    let mut dst = Vec::with_capacity(len);
    run(dst.as_mut_ptr(), len, false, a, b);
    // SAFETY: with read_dst = false and a.cols > 0 the product wrote all `len` elements.
    unsafe { dst.set_len(len) };
    dst
}

/// `dst += a b`, for a row-major `dst` [a.rows, b.cols].
pub(super) fn add_product<T: Real + 'static>(dst: &mut [T], a: Mat<T>, b: Mat<T>) {
    if a.cols > 0 {
        run(dst.as_mut_ptr(), dst.len(), true, a, b);
    }
}

/// `x w^T` [n, out] for CPU f32 / f64 `x` [n, d] and a contiguous `w` [out, d] of the same
/// dtype, as a tensor without a graph (for operands that take no gradient: the no-grad forwards
/// and the head's detached logits). None where it does not serve; candle's matmul does then.
pub(super) fn x_wt(x: &Tensor, w: &Tensor) -> candle_core::Result<Option<Tensor>> {
    let serves = super::fused::serves(x)
        && w.device().is_cpu()
        && w.dtype() == x.dtype()
        && w.is_contiguous()
        && x.rank() == 2
        && w.rank() == 2
        && x.dim(1)? == w.dim(1)?;
    if !serves {
        return Ok(None);
    }
    let dims = (x.dim(0)?, x.dim(1)?, w.dim(0)?);
    let shape = Shape::from((dims.0, dims.2));
    let mut y = on_host(
        "x w^T",
        &[x, w],
        &[&shape],
        |v| xwt(v, dims),
        |v| xwt(v, dims),
    )?;
    Ok(y.pop())
}

fn xwt<T: Real + 'static>(v: &[&[T]], (n, d, out): (usize, usize, usize)) -> Vec<Vec<T>> {
    vec![product(Mat::rows(v[0], n, d), Mat::rows(v[1], out, d).t())]
}

/// The one unsafe call. The shapes are the callers' invariants (checked against their operands
/// with errors before), so a mismatch here is a bug and stops rather than writes out of bounds.
fn run<T: Real + 'static>(dst: *mut T, len: usize, read_dst: bool, a: Mat<T>, b: Mat<T>) {
    assert!(
        a.cols == b.rows && len == a.rows * b.cols && a.fits() && b.fits(),
        "product of {}x{} and {}x{} into {len} elements",
        a.rows,
        a.cols,
        b.rows,
        b.cols
    );
    // As candle's matmul: split over rayon's threads unless ops run on one core each.
    let threads = candle_core::utils::get_num_threads();
    let parallelism = match threads {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    };
    // SAFETY: the assert above keeps every read inside `a.data` and `b.data` and every write
    // inside the `len` elements behind `dst`, which nothing else borrows during the call.
    unsafe {
        gemm(
            a.rows,
            b.cols,
            a.cols,
            dst,
            1,
            b.cols as isize,
            read_dst,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::of(1.0), // dst's factor, read only with read_dst
            T::of(1.0), // the product's
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook triple loop.
    fn naive(a: Mat<f64>, b: Mat<f64>) -> Vec<f64> {
        let at = |m: &Mat<f64>, i: usize, j: usize| m.data[i * m.rs + j * m.cs];
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] = (0..a.cols).map(|k| at(&a, i, k) * at(&b, k, j)).sum();
            }
        }
        out
    }

    fn close(x: &[f64], y: &[f64]) -> bool {
        x.len() == y.len() && x.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-12)
    }

    #[test]
    fn products_and_sums_of_products_match_the_triple_loop_in_every_orientation() {
        let v = |n: usize, s: f64| (0..n).map(|i| ((i as f64) * s).sin()).collect::<Vec<_>>();
        let (m, k, n) = (37, 19, 23);
        let (xa, xb, xc) = (v(m * k, 0.7), v(k * n, 1.3), v(m * n, 0.4));
        let a = Mat::rows(&xa, m, k);
        let at = Mat::rows(&xa, k, m).t(); // the same elements read as a transpose
        let b = Mat::rows(&xb, k, n);
        let bt = Mat::rows(&xb, n, k).t();
        for (l, r) in [(a, b), (a, bt), (at, b), (at, bt)] {
            assert!(close(&product(l, r), &naive(l, r)));
        }
        // dst += a b keeps what dst held.
        let mut acc = xc.clone();
        add_product(&mut acc, a, b);
        let want: Vec<f64> = naive(a, b).iter().zip(&xc).map(|(p, q)| p + q).collect();
        assert!(close(&acc, &want));
        // A product over nothing is zero; adding it changes nothing.
        let empty = Mat::rows(&[] as &[f64], m, 0);
        assert_eq!(product(empty, Mat::rows(&[], 0, n)), vec![0.0; m * n]);
        let mut same = xc.clone();
        add_product(&mut same, empty, Mat::rows(&[], 0, n));
        assert_eq!(same, xc);
    }

    #[test]
    fn x_wt_matches_candle_and_leaves_what_it_does_not_serve() {
        let dev = candle_core::Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (9, 5), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (7, 5), &dev).unwrap();
        let ours = x_wt(&x, &w).unwrap().expect("serves f32 on the CPU");
        let theirs = x.matmul(&w.t().unwrap()).unwrap();
        let diff = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        // A transposed (non-contiguous) weight, another dtype, a mismatched width: not served.
        assert!(x_wt(&x, &w.t().unwrap().t().unwrap().t().unwrap())
            .unwrap()
            .is_none());
        let w16 = w.to_dtype(candle_core::DType::BF16).unwrap();
        assert!(x_wt(&x, &w16).unwrap().is_none());
        assert!(x_wt(&x, &x.t().unwrap().contiguous().unwrap())
            .unwrap()
            .is_none());
    }

    #[test]
    #[should_panic(expected = "product of")]
    fn operands_that_do_not_fit_stop_before_any_write() {
        let x = vec![1.0f64; 6];
        let _ = product(Mat::rows(&x, 2, 3), Mat::rows(&x, 2, 3));
    }
}
