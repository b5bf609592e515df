//! popo-verify: math answer extraction and equivalence checking.
//!
//! ```
//! let v = popo_verify::verify("\\frac{1}{2}", "so the answer is $\\boxed{0.5}$.");
//! assert!(v.correct);
//! ```
//!
//! The gold answer is trusted: it is parsed whole (or from its box). The response is not: its
//! answer is extracted with an [`Extractor`] and must match the gold as a single mathematical
//! object (a hedge listing several answers does not match a single gold).

mod extract;

pub use extract::{gold_answer, last_boxed, last_number, Extractor, Strategy};

use rayon::prelude::*;

/// The verdict for one (gold, response) pair.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    pub correct: bool,
    /// The gold answer as compared (normalised), if it could be read.
    pub gold_answer: Option<String>,
    /// The extracted prediction (normalised), if one was found.
    pub pred_answer: Option<String>,
    /// Why the verdict is what it is (e.g. `exact`, `numeric`, `no answer found`).
    pub reason: String,
}

/// The candidate answer of a response with the default extraction order.
pub fn extract(response: &str) -> Option<String> {
    Extractor::default().extract(response)
}

/// Verify a response against a gold answer with the default configuration.
pub fn verify(gold: &str, response: &str) -> Verdict {
    verify_with(&Extractor::default(), gold, response)
}

/// Verify with a given extractor.
pub fn verify_with(extractor: &Extractor, gold: &str, response: &str) -> Verdict {
    let g = gold_answer(gold);
    let Some(p) = extractor.extract(response) else {
        return Verdict {
            correct: false,
            gold_answer: Some(g),
            pred_answer: None,
            reason: "no answer found in the response".into(),
        };
    };
    let correct = answers_equivalent(&g, &p);
    Verdict {
        correct,
        gold_answer: Some(g),
        pred_answer: Some(p),
        reason: if correct { "equal" } else { "different" }.into(),
    }
}

/// Verify many `(gold, response)` pairs on `threads` threads (0 = all cores), in input order.
pub fn verify_batch(pairs: &[(String, String)], threads: usize) -> Vec<Verdict> {
    let run = || {
        pairs
            .par_iter()
            .map(|(g, r)| verify(g, r))
            .collect::<Vec<_>>()
    };
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool.install(run),
        Err(_) => run(),
    }
}

/// Whether two already-extracted answers are the same mathematical object (used e.g. to group
/// samples for majority voting). `a` plays the role of the gold.
pub fn answers_equivalent(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String { s.chars().filter(|c| !c.is_whitespace()).collect() };
    norm(a) == norm(b)
}
