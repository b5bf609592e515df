//! Training prompts: rendered and tokenised problems with length filtering, and a resumable
//! seed-determined shuffle over epochs. JSONL problem files, prompt templates and the seeded RNG
//! live in `popo_model::data`, shared with evaluation, and are re-exported here.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use popo_model::data::{
    chatml, load_jsonl, ChatTemplater, Example, JsonlFormat, LoadStats, PromptTemplate,
    PromptTokenizer, SplitMix64, QWEN_MATH_SYSTEM, R1_ZERO_TEMPLATE,
};

/// A problem ready for rollouts: its rendered, tokenised prompt and gold answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    pub problem: String,
    pub answer: String,
    pub text: String,
    pub ids: Vec<u32>,
}

/// Renders and tokenises every example, skipping (and counting in `stats`) prompts longer than
/// `max_prompt_len` tokens.
pub fn prepare_prompts<T: PromptTokenizer>(
    examples: &[Example],
    template: PromptTemplate,
    tokenizer: &T,
    max_prompt_len: usize,
    stats: &mut LoadStats,
) -> Result<Vec<Prompt>> {
    let mut out = Vec::with_capacity(examples.len());
    for (i, ex) in examples.iter().enumerate() {
        let text = template
            .render(&ex.problem, Some(tokenizer as &dyn ChatTemplater))
            .with_context(|| format!("example {i}"))?;
        let ids = tokenizer
            .encode_prompt(&text)
            .with_context(|| format!("tokenising example {i}"))?;
        if ids.len() > max_prompt_len {
            stats.skipped_too_long += 1;
            continue;
        }
        out.push(Prompt {
            problem: ex.problem.clone(),
            answer: ex.answer.clone(),
            text,
            ids,
        });
    }
    Ok(out)
}

/// Where a [`Shuffler`] is: enough to continue exactly (saved in checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCursor {
    pub seed: u64,
    pub epoch: u64,
    /// Position inside this epoch's permutation.
    pub index: usize,
}

/// Visits `0..len` in a fresh seed-determined order each epoch (or in file order, see
/// [`Shuffler::in_order`]). The permutation is a Fisher-Yates shuffle driven by SplitMix64, so
/// it is the same on every platform and every version of `rand`.
#[derive(Debug, Clone)]
pub struct Shuffler {
    len: usize,
    cursor: DataCursor,
    order: Vec<usize>,
    shuffle: bool,
}

impl Shuffler {
    pub fn new(len: usize, seed: u64) -> Result<Self> {
        Self::from_cursor(
            len,
            DataCursor {
                seed,
                epoch: 0,
                index: 0,
            },
        )
    }

    pub fn from_cursor(len: usize, cursor: DataCursor) -> Result<Self> {
        if len == 0 {
            bail!("the dataset is empty (nothing left after loading and filtering)");
        }
        if cursor.index > len {
            bail!(
                "data cursor index {} is past the dataset size {len}: resuming with different data?",
                cursor.index
            );
        }
        Ok(Shuffler {
            len,
            cursor,
            order: permutation(len, cursor.seed, cursor.epoch),
            shuffle: true,
        })
    }

    /// Every epoch in index order instead (`data.shuffle = false`); the cursor is kept.
    pub fn in_order(mut self) -> Self {
        self.shuffle = false;
        self.order = (0..self.len).collect();
        self
    }

    pub fn cursor(&self) -> DataCursor {
        self.cursor
    }

    pub fn epoch(&self) -> u64 {
        self.cursor.epoch
    }

    /// The next `n` indices, rolling over into the next epoch (reshuffled) as needed.
    pub fn next_batch(&mut self, n: usize) -> Vec<usize> {
        (0..n).map(|_| self.next_index()).collect()
    }

    pub fn next_index(&mut self) -> usize {
        if self.cursor.index == self.len {
            self.cursor.epoch += 1;
            self.cursor.index = 0;
            if self.shuffle {
                self.order = permutation(self.len, self.cursor.seed, self.cursor.epoch);
            }
        }
        let i = self.order[self.cursor.index];
        self.cursor.index += 1;
        i
    }
}

/// The independent random streams of a training step.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    Rollout = 1,
    Noise = 2,
    Probe = 3,
    Refill = 4,
    /// The end-of-run pass@k samples (`extra`: the chunk of held-out prompts).
    PassAtK = 5,
}

/// The seed of `stream` at `step` of a run seeded `base`: derived, never carried, so that the
/// step number is the whole RNG state and a resumed run draws what an uninterrupted one would.
pub fn stream_seed(base: u64, step: u64, stream: Stream, extra: u64) -> u64 {
    SplitMix64(
        base ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((stream as u64) << 56) ^ (extra << 40),
    )
    .next_u64()
}

fn permutation(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = SplitMix64(seed ^ epoch.wrapping_mul(0xd1b5_4a32_d192_ed03));
    let mut order: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_render_with_the_tokenizers_template_and_long_ones_are_counted() {
        let tok = crate::tiny::tokenizer().unwrap();
        let examples = vec![
            Example {
                problem: "1+1?".into(),
                answer: "2".into(),
            },
            Example {
                problem: "x".repeat(200),
                answer: "0".into(),
            },
        ];
        let mut stats = LoadStats::default();
        let prompts =
            prepare_prompts(&examples, PromptTemplate::Chat, &tok, 64, &mut stats).unwrap();
        assert_eq!(stats.skipped_too_long, 1);
        assert_eq!(prompts.len(), 1);
        assert_eq!(
            prompts[0].text,
            "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(prompts[0].ids, tok.encode(&prompts[0].text, false).unwrap());
        assert_eq!(prompts[0].ids.len(), 1 + 4 + 1 + 4 + 1 + 1 + 1 + 9 + 1);
        // qwen_math goes through the tokenizer's template too: same markup as built-in ChatML.
        let q = PromptTemplate::QwenMath.render("1+1?", Some(&tok)).unwrap();
        assert_eq!(q, PromptTemplate::QwenMath.render("1+1?", None).unwrap());
    }

    #[test]
    fn shuffler_covers_each_epoch_and_is_seeded() {
        let mut s = Shuffler::new(10, 7).unwrap();
        let e0 = s.next_batch(10);
        let e1 = s.next_batch(10);
        let mut sorted = e0.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        let mut sorted1 = e1.clone();
        sorted1.sort();
        assert_eq!(sorted1, sorted);
        assert_ne!(e0, e1, "each epoch reshuffles");
        assert_ne!(e0, (0..10).collect::<Vec<_>>());
        assert_eq!(s.epoch(), 1);
        let mut same = Shuffler::new(10, 7).unwrap();
        assert_eq!(same.next_batch(10), e0);
        let mut other = Shuffler::new(10, 8).unwrap();
        assert_ne!(other.next_batch(10), e0);
    }

    #[test]
    fn shuffler_resumes_exactly_from_a_serialised_cursor() {
        let mut a = Shuffler::new(7, 42).unwrap();
        let _ = a.next_batch(12); // into epoch 1
        let saved = serde_json::to_string(&a.cursor()).unwrap();
        let expected = a.next_batch(20);
        let cursor: DataCursor = serde_json::from_str(&saved).unwrap();
        let mut b = Shuffler::from_cursor(7, cursor).unwrap();
        assert_eq!(b.next_batch(20), expected);
        assert!(Shuffler::from_cursor(3, cursor).is_err());
        assert!(Shuffler::new(0, 1).is_err());
        // data.shuffle = false: file order, every epoch, and from a resumed cursor.
        let mut o = Shuffler::new(4, 9).unwrap().in_order();
        assert_eq!(o.next_batch(6), [0, 1, 2, 3, 0, 1]);
        let mut r = Shuffler::from_cursor(4, o.cursor()).unwrap().in_order();
        assert_eq!(r.next_batch(3), [2, 3, 0]);
    }
}
