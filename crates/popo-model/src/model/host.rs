//! Host access for the CPU training ops with written-out backwards (`fused.rs`, `attn_train.rs`):
//! the elements of operands, constants and gradients as slices, borrowed where they are
//! contiguous, and one dispatch on f32 / f64 for a forward and a backward.

use candle_core::{CpuStorage, Device, Layout, Shape, Storage, Tensor, WithDType};

pub(super) fn msg(what: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("{what}: f32 or f64 CPU operands of one dtype only"))
}

/// A contiguous layout's elements.
fn elems<'a, T>(s: &'a [T], l: &Layout) -> candle_core::Result<&'a [T]> {
    let (a, b) = l.contiguous_offsets().ok_or_else(|| msg("fused op"))?;
    Ok(&s[a..b])
}

#[derive(Clone, Copy)]
enum Elems<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

fn of_storage<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<Elems<'a>> {
    Ok(match s {
        CpuStorage::F32(v) => Elems::F32(elems(v, l)?),
        CpuStorage::F64(v) => Elems::F64(elems(v, l)?),
        _ => return Err(msg("fused op")),
    })
}

/// Slices of one dtype.
enum Typed<'a> {
    F32(Vec<&'a [f32]>),
    F64(Vec<&'a [f64]>),
}

fn typed<'a>(parts: &[Elems<'a>], what: &str) -> candle_core::Result<Typed<'a>> {
    let f32s: Option<Vec<&[f32]>> = parts
        .iter()
        .map(|p| match p {
            Elems::F32(v) => Some(*v),
            _ => None,
        })
        .collect();
    if let Some(v) = f32s {
        return Ok(Typed::F32(v));
    }
    parts
        .iter()
        .map(|p| match p {
            Elems::F64(v) => Some(*v),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .map(Typed::F64)
        .ok_or_else(|| msg(what))
}

/// Runs `f` on the elements of `ts` (copied only where not contiguous).
fn with_tensors<R>(
    ts: &[&Tensor],
    f: impl FnOnce(&[Elems]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let owned: Vec<Tensor> = ts
        .iter()
        .map(|t| t.contiguous())
        .collect::<candle_core::Result<_>>()?;
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let parts = guards
        .iter()
        .map(|(s, l)| match &**s {
            Storage::Cpu(s) => of_storage(s, l),
            _ => Err(msg("fused op")),
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    f(&parts)
}

/// A forward: `f32s` or `f64s` on the elements of the op's operands `args` and then of the
/// constants `consts` (all of one dtype), giving the result's elements.
pub(super) fn forward_on_cpu(
    what: &str,
    args: &[(&CpuStorage, &Layout)],
    consts: &[&Tensor],
    f32s: impl FnOnce(&[&[f32]]) -> Vec<f32>,
    f64s: impl FnOnce(&[&[f64]]) -> Vec<f64>,
) -> candle_core::Result<CpuStorage> {
    with_tensors(consts, |c| {
        let mut parts = args
            .iter()
            .map(|(s, l)| of_storage(s, l))
            .collect::<candle_core::Result<Vec<_>>>()?;
        parts.extend_from_slice(c);
        Ok(match typed(&parts, what)? {
            Typed::F32(v) => CpuStorage::F32(f32s(&v)),
            Typed::F64(v) => CpuStorage::F64(f64s(&v)),
        })
    })
}

fn shaped<T: WithDType>(
    vs: Vec<Vec<T>>,
    shapes: &[&Shape],
    dev: &Device,
) -> candle_core::Result<Vec<Tensor>> {
    vs.into_iter()
        .zip(shapes)
        .map(|(v, s)| Tensor::from_vec(v, *s, dev))
        .collect()
}

/// `f32s` or `f64s` on the elements of `ts` (a backward's gradients, operands, outputs and
/// constants, or any CPU tensors, all of one dtype), giving one result per entry of `shapes`.
pub(super) fn on_host(
    what: &str,
    ts: &[&Tensor],
    shapes: &[&Shape],
    f32s: impl FnOnce(&[&[f32]]) -> Vec<Vec<f32>>,
    f64s: impl FnOnce(&[&[f64]]) -> Vec<Vec<f64>>,
) -> candle_core::Result<Vec<Tensor>> {
    let dev = ts
        .first()
        .map(|t| t.device().clone())
        .ok_or_else(|| msg(what))?;
    with_tensors(ts, |parts| match typed(parts, what)? {
        Typed::F32(v) => shaped(f32s(&v), shapes, &dev),
        Typed::F64(v) => shaped(f64s(&v), shapes, &dev),
    })
}

/// An element type the ops compute in, with its own precision for exponentials.
pub(super) trait Real: Copy + Send + Sync + Default + Into<f64> {
    fn of(v: f64) -> Self;
    /// exp at this type's precision (f32's is several times cheaper than f64's).
    fn exp_at(v: f64) -> f64;
}

impl Real for f32 {
    fn of(v: f64) -> Self {
        v as f32
    }
    fn exp_at(v: f64) -> f64 {
        (v as f32).exp() as f64
    }
}

impl Real for f64 {
    fn of(v: f64) -> Self {
        v
    }
    fn exp_at(v: f64) -> f64 {
        v.exp()
    }
}

/// f64 test operands uniform in [-1, 1) from `seed`, and the largest difference of two tensors.
#[cfg(test)]
pub(super) mod testing {
    use candle_core::{Device, Tensor};

    pub(crate) fn uniform(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::data::SplitMix64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|_| (rng.next_u64() as f64 / u64::MAX as f64) * 2.0 - 1.0)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    pub(crate) fn max_abs(t: &Tensor) -> f64 {
        let m = t.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        m.to_scalar::<f64>().unwrap()
    }

    pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        max_abs(&(a - b).unwrap())
    }
}
