//! Rollout engine: batching must not change results, seeds reproduce, sampler log-probs agree
//! with the training forward, and the truncation filters do what they say.
//!
//! One test binary, one module per topic; the prompts and row comparisons they share are here.

#[path = "../common/mod.rs"]
mod common;

mod decode_loop;
mod decoding;
mod device;
mod requests;

use popo_model::{generate_requests, Request, SamplingParams};

fn prompts(vocab: usize) -> Vec<Vec<u32>> {
    vec![
        common::tokens(21, 3, vocab),
        common::tokens(22, 11, vocab),
        common::tokens(23, 1, vocab),
        common::tokens(24, 6, vocab),
    ]
}

/// Asserts that two decodes agree row by row: the same tokens and finish reasons, log-probs
/// within `tol`.
fn assert_same_rows(
    got: &[popo_model::Completion],
    want: &[popo_model::Completion],
    tol: f32,
    what: &str,
) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        let at = format!(
            "{what}, request {} sample {}",
            w.prompt_index, w.sample_index
        );
        assert_eq!(g.tokens, w.tokens, "{at}");
        assert_eq!(g.finish_reason, w.finish_reason, "{at}");
        for (a, b) in g.logprobs.iter().zip(&w.logprobs) {
            assert!((a - b).abs() < tol, "{at}: {a} vs {b}");
        }
    }
}

/// Runs `generate_requests` and returns its rows ordered by (request, sample), checking that each
/// row is reported exactly once.
fn requests(
    model: &popo_model::Model,
    reqs: &[Request],
    params: &SamplingParams,
    max_rows: usize,
) -> Vec<popo_model::Completion> {
    let mut got = Vec::new();
    generate_requests(model, reqs, params, None, max_rows, &mut |c| {
        got.push(c);
        Ok(())
    })
    .unwrap();
    got.sort_by_key(|c| (c.prompt_index, c.sample_index));
    let want: Vec<(usize, usize)> = reqs
        .iter()
        .enumerate()
        .flat_map(|(q, r)| (0..r.n + r.greedy_row as usize).map(move |s| (q, s)))
        .collect();
    let keys: Vec<(usize, usize)> = got
        .iter()
        .map(|c| (c.prompt_index, c.sample_index))
        .collect();
    assert_eq!(keys, want);
    got
}
