//! Deterministic work bounds. Every pair gets a step budget; parsing and arithmetic spend it.
//! Running out is an ordinary `Err(Limit)`, turned into `correct: false` with the reason: no
//! timers, no signals, no threads.

use std::fmt;

/// Bounds on the work spent on one pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Steps per pair (a step is about one token, tree node or machine word of big arithmetic).
    pub steps: u64,
    /// Longest answer string parsed, in bytes.
    pub max_answer_len: usize,
    /// Deepest nesting of the parse.
    pub max_depth: u32,
    /// Largest exact intermediate, in bits.
    pub max_bits: u64,
    /// Largest `n` in an exact `n!`.
    pub max_factorial: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            steps: 2_000_000,
            max_answer_len: 4096,
            max_depth: 64,
            max_bits: 200_000,
            max_factorial: 5000,
        }
    }
}

/// Which bound was hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    Steps,
    Length,
    Depth,
    Size,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Steps => "step budget exhausted",
            Limit::Length => "answer too long",
            Limit::Depth => "expression nested too deeply",
            Limit::Size => "number too large",
        })
    }
}

pub(crate) struct Budget {
    pub left: u64,
    pub limits: Limits,
}

impl Budget {
    pub fn new(limits: Limits) -> Self {
        Budget {
            left: limits.steps,
            limits,
        }
    }

    #[inline]
    pub fn tick(&mut self, n: u64) -> Result<(), Limit> {
        if self.left < n {
            self.left = 0;
            return Err(Limit::Steps);
        }
        self.left -= n;
        Ok(())
    }

    /// Steps spent so far.
    pub fn spent(&self) -> u64 {
        self.limits.steps - self.left
    }
}
