//! Python bindings of `popo-verify` (the native module `popo_verify._popo_verify`).
//!
//! A thin layer: it converts arguments, builds a [`popo_verify::Config`] from the keyword
//! arguments, calls the crate, and converts the results. Every call into the crate runs inside
//! [`guarded`], so a Rust panic (a bug) comes back as the Python exception
//! `popo_verify.InternalError` instead of crossing the boundary; batch calls run with the GIL
//! released, on rayon, and keep the input order.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::LazyLock;

use popo_verify as pv;
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use serde::de::IntoDeserializer;
use serde::Deserialize;

create_exception!(
    popo_verify,
    InternalError,
    PyRuntimeError,
    "A bug in popo-verify: a Rust panic, caught at the Python boundary. Please report it with the input that caused it."
);

static DEFAULT_CONFIG: LazyLock<pv::Config> = LazyLock::new(pv::Config::default);

/// Run `f`, turning a panic into `InternalError` (naming `what` and the panic message).
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> PyResult<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_string());
        InternalError::new_err(format!(
            "popo-verify panicked in {what}: {msg} (a bug: please report it with this input)"
        ))
    })
}

/// The name of a strategy as Python spells it (`"boxed"`, `"answer_tag"`, ...).
fn strategy_name(s: pv::Strategy) -> String {
    match serde_json::to_value(s) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{s:?}"),
    }
}

/// A list of strategy names -> an extraction order. Unknown names are a `ValueError` listing
/// the known ones.
fn parse_order(order: &Bound<'_, PyAny>) -> PyResult<Vec<pv::Strategy>> {
    if order.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "order must be a list of strategy names such as [\"boxed\", \"answer_is\"], not a str",
        ));
    }
    let mut out = Vec::new();
    for (i, item) in order.try_iter()?.enumerate() {
        let item = item?;
        let name = item.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!(
                "order[{i}] must be a str (a strategy name), not {}",
                type_name(&item)
            ))
        })?;
        let name = name.to_cow()?;
        let strategy = pv::Strategy::deserialize(name.as_ref().into_deserializer()).map_err(
            |e: serde::de::value::Error| PyValueError::new_err(format!("order[{i}]: {e}")),
        )?;
        out.push(strategy);
    }
    if out.is_empty() {
        return Err(PyValueError::new_err(
            "order is empty: no answer would ever be found (name at least one strategy)",
        ));
    }
    Ok(out)
}

/// The configuration for the keyword arguments: the shared default when they are the defaults.
fn config(
    extract_gold: bool,
    literal_numbers: bool,
    order: Option<&Bound<'_, PyAny>>,
) -> PyResult<Cow<'static, pv::Config>> {
    let extractor = match order {
        None if extract_gold && !literal_numbers => return Ok(Cow::Borrowed(&*DEFAULT_CONFIG)),
        None => DEFAULT_CONFIG.extractor.clone(),
        Some(order) => pv::Extractor::new(parse_order(order)?),
    };
    Ok(Cow::Owned(pv::Config {
        extract_gold,
        literal_numbers,
        extractor,
        ..pv::Config::default()
    }))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// Every item of an iterable of str, copied out (so the GIL can be released); `what` names the
/// argument in errors. A bare str is refused: it would be read as one-character answers.
fn strings(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<String>> {
    if obj.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a list of str, not a str"
        )));
    }
    let iter = obj.try_iter().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what} must be a list of str, not {}",
            type_name(obj)
        ))
    })?;
    let mut out = Vec::with_capacity(obj.len().unwrap_or(0));
    for (i, item) in iter.enumerate() {
        let item = item?;
        let s = item.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!(
                "{what}[{i}] must be a str, not {}",
                type_name(&item)
            ))
        })?;
        out.push(s.to_cow()?.into_owned());
    }
    Ok(out)
}

/// `threads=None` -> every core (rayon's global pool, 0 in Rust); otherwise a positive count.
fn thread_count(threads: Option<i64>) -> PyResult<usize> {
    match threads {
        None => Ok(0),
        Some(n) if n >= 1 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        Some(n) => Err(PyValueError::new_err(format!(
            "threads must be None (every core) or a positive int, not {n}"
        ))),
    }
}

fn pairs(
    golds: &Bound<'_, PyAny>,
    responses: &Bound<'_, PyAny>,
) -> PyResult<Vec<(String, String)>> {
    let golds = strings(golds, "golds")?;
    let responses = strings(responses, "responses")?;
    if golds.len() != responses.len() {
        return Err(PyValueError::new_err(format!(
            "golds and responses differ in length: {} and {}",
            golds.len(),
            responses.len()
        )));
    }
    Ok(golds.into_iter().zip(responses).collect())
}

/// The verdict on one (gold, response) pair.
///
/// Attributes: ``correct`` (bool); ``gold_answer`` and ``pred_answer`` (the normalised answers
/// as compared, or None when none was found); ``reason`` (why: ``exact``, ``rounded``,
/// ``numeric``, ``structural``, ``text``, ``different``, ``no answer found``, or the work
/// bound that was hit). ``bool(verdict)`` is ``verdict.correct``.
#[pyclass(frozen, eq, module = "popo_verify", name = "Verdict")]
#[derive(Clone, PartialEq)]
pub struct Verdict {
    #[pyo3(get)]
    correct: bool,
    #[pyo3(get)]
    gold_answer: Option<String>,
    #[pyo3(get)]
    pred_answer: Option<String>,
    #[pyo3(get)]
    reason: String,
}

impl From<pv::Verdict> for Verdict {
    fn from(v: pv::Verdict) -> Self {
        Verdict {
            correct: v.correct,
            gold_answer: v.gold_answer,
            pred_answer: v.pred_answer,
            reason: v.reason,
        }
    }
}

fn py_repr(py: Python<'_>, s: &Option<String>) -> PyResult<String> {
    match s {
        None => Ok("None".to_string()),
        Some(s) => Ok(PyString::new(py, s).repr()?.to_cow()?.into_owned()),
    }
}

#[pymethods]
impl Verdict {
    #[new]
    #[pyo3(signature = (correct, gold_answer=None, pred_answer=None, reason=String::new()))]
    fn new(
        correct: bool,
        gold_answer: Option<String>,
        pred_answer: Option<String>,
        reason: String,
    ) -> Self {
        Verdict {
            correct,
            gold_answer,
            pred_answer,
            reason,
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Verdict(correct={}, gold_answer={}, pred_answer={}, reason={})",
            if self.correct { "True" } else { "False" },
            py_repr(py, &self.gold_answer)?,
            py_repr(py, &self.pred_answer)?,
            py_repr(py, &Some(self.reason.clone()))?,
        ))
    }

    fn __bool__(&self) -> bool {
        self.correct
    }

    /// Pickling (multiprocessing, Ray): rebuilt from its four fields.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let v = slf.get();
        let args = PyTuple::new(
            py,
            [
                v.correct.into_pyobject(py)?.to_owned().into_any(),
                v.gold_answer.clone().into_pyobject(py)?.into_any(),
                v.pred_answer.clone().into_pyobject(py)?.into_any(),
                v.reason.clone().into_pyobject(py)?.into_any(),
            ],
        )?;
        Ok((slf.get_type().into_any(), args))
    }

    /// The four fields as a dict (for logging, JSON).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("correct", self.correct)?;
        d.set_item("gold_answer", self.gold_answer.clone())?;
        d.set_item("pred_answer", self.pred_answer.clone())?;
        d.set_item("reason", self.reason.clone())?;
        Ok(d)
    }
}

/// verify(gold, response, *, extract_gold=True, literal_numbers=False, order=None) -> Verdict
///
/// Verify a model response against a gold answer.
///
/// gold: the reference answer (``"\\frac{1}{2}"``) or a worked solution: with
/// ``extract_gold=True`` (the default) its final ``\boxed{}`` is the answer when it has one;
/// ``extract_gold=False`` compares the gold string whole.
/// literal_numbers: with True, a number gold takes only a number written out as the answer
/// (``123``, ``-4.5``, ``3/4``, ``x = 123``), not an expression equal to it (``24 + 65 + 34``);
/// the trainer's reward does this, because RL learns to restate a question's sum. The default,
/// False, accepts any expression of the same value, as math-verify does.
/// response: the model's output; its answer is extracted (a ``\boxed{}``, an "answer is"
/// phrase, ``#### N``, ..., else the last candidate), in the order ``order`` gives (a list
/// of strategy names; default ``DEFAULT_ORDER``).
///
/// Never raises for any gold or response text; raises TypeError for non-str arguments and
/// ValueError for an unknown strategy name. The GIL is released while it runs.
#[pyfunction]
#[pyo3(signature = (gold, response, *, extract_gold=true, literal_numbers=false, order=None))]
fn verify(
    py: Python<'_>,
    gold: String,
    response: String,
    extract_gold: bool,
    literal_numbers: bool,
    order: Option<&Bound<'_, PyAny>>,
) -> PyResult<Verdict> {
    let cfg = config(extract_gold, literal_numbers, order)?;
    let v = py.detach(|| guarded("verify", || pv::verify_with(&cfg, &gold, &response)))?;
    Ok(v.into())
}

/// verify_batch(golds, responses, threads=None, *, extract_gold=True, literal_numbers=False, order=None) -> list[bool]
///
/// ``verify`` on every pair ``(golds[i], responses[i])``; whether each is correct, in input
/// order. Runs with the GIL released on ``threads`` threads (None: every core, rayon's global
/// pool, which ``RAYON_NUM_THREADS`` sizes; 1: the calling thread only).
#[pyfunction]
#[pyo3(signature = (golds, responses, threads=None, *, extract_gold=true, literal_numbers=false, order=None))]
fn verify_batch(
    py: Python<'_>,
    golds: &Bound<'_, PyAny>,
    responses: &Bound<'_, PyAny>,
    threads: Option<i64>,
    extract_gold: bool,
    literal_numbers: bool,
    order: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<bool>> {
    let cfg = config(extract_gold, literal_numbers, order)?;
    let verdicts = batch(py, golds, responses, threads, &cfg)?;
    Ok(verdicts.into_iter().map(|v| v.correct).collect())
}

/// verify_batch_verdicts(golds, responses, threads=None, *, extract_gold=True, literal_numbers=False, order=None) -> list[Verdict]
///
/// ``verify_batch`` returning the full ``Verdict`` of every pair, in input order.
#[pyfunction]
#[pyo3(signature = (golds, responses, threads=None, *, extract_gold=true, literal_numbers=false, order=None))]
fn verify_batch_verdicts(
    py: Python<'_>,
    golds: &Bound<'_, PyAny>,
    responses: &Bound<'_, PyAny>,
    threads: Option<i64>,
    extract_gold: bool,
    literal_numbers: bool,
    order: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<Verdict>> {
    let cfg = config(extract_gold, literal_numbers, order)?;
    let verdicts = batch(py, golds, responses, threads, &cfg)?;
    Ok(verdicts.into_iter().map(Verdict::from).collect())
}

fn batch(
    py: Python<'_>,
    golds: &Bound<'_, PyAny>,
    responses: &Bound<'_, PyAny>,
    threads: Option<i64>,
    cfg: &pv::Config,
) -> PyResult<Vec<pv::Verdict>> {
    let threads = thread_count(threads)?;
    let pairs = pairs(golds, responses)?;
    py.detach(|| {
        guarded("verify_batch", || {
            pv::verify_batch_with(cfg, &pairs, threads)
        })
    })
}

/// extract(response, *, order=None) -> str | None
///
/// The answer a response gives (trimmed), or None when it gives none. ``order`` is a list of
/// strategy names tried in turn (default ``DEFAULT_ORDER``); the others are ``"last_math"``
/// (the last ``$...$`` / ``\(...\)`` / ``\[...\]``) and ``"last_number"``.
#[pyfunction]
#[pyo3(signature = (response, *, order=None))]
fn extract(
    py: Python<'_>,
    response: String,
    order: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<String>> {
    let cfg = config(true, false, order)?;
    py.detach(|| guarded("extract", || cfg.extractor.extract(&response)))
}

/// equivalent(a, b) -> bool
///
/// Whether two answers (already extracted: ``"\\frac{1}{2}"``, ``"0.5"``) are the same
/// mathematical object, e.g. to group samples for a majority vote. ``a`` plays the gold.
#[pyfunction]
fn equivalent(py: Python<'_>, a: String, b: String) -> PyResult<bool> {
    py.detach(|| guarded("equivalent", || pv::answers_equivalent(&a, &b)))
}

/// benchmark_pairs(golds) -> list[tuple[str, str]]
///
/// The speed-benchmark pairs that ``popo verify --bench`` builds from MATH500's golds: four per
/// gold (two against itself, two against other golds, each boxed in a sentence).
#[pyfunction]
fn benchmark_pairs(golds: &Bound<'_, PyAny>) -> PyResult<Vec<(String, String)>> {
    let golds = strings(golds, "golds")?;
    guarded("benchmark_pairs", || pv::bench::benchmark_pairs(&golds))
}

/// Test hook: panics inside the guard, to show the panic comes back as ``InternalError``.
#[pyfunction]
fn _panic_for_tests(py: Python<'_>) -> PyResult<()> {
    py.detach(|| guarded("_panic_for_tests", || panic!("deliberate panic")))
}

/// Fast, thread-safe math answer verification (the native part of ``popo_verify``).
#[pymodule]
mod _popo_verify {
    use super::*;

    #[pymodule_export]
    use super::{
        _panic_for_tests, benchmark_pairs, equivalent, extract, verify, verify_batch,
        verify_batch_verdicts, Verdict,
    };

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        let py = m.py();
        m.add("InternalError", py.get_type::<InternalError>())?;
        let names: Vec<String> = pv::Strategy::DEFAULT_ORDER
            .iter()
            .map(|s| strategy_name(*s))
            .collect();
        m.add("DEFAULT_ORDER", PyTuple::new(py, names)?)?;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        Ok(())
    }
}
