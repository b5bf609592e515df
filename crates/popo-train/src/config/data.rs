//! `[data]`: the JSONL training and held-out files and how prompts are built from them.

use crate::data::PromptTemplate;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// JSONL training set. Empty: the built-in synthetic arithmetic task.
    pub path: String,
    /// JSONL held-out set for evaluation. Empty: the built-in task's held-out split, or no
    /// held-out evaluation at all when `path` is set.
    pub eval_path: String,
    /// The JSONL field holding the problem text.
    pub problem_field: String,
    /// The JSONL field holding the gold answer.
    pub answer_field: String,
    /// `qwen_math` | `r1_zero` | `chat` (the tokenizer's template) | `plain`.
    pub template: PromptTemplate,
    /// Prompts longer than this (in tokens) are counted and skipped.
    pub max_prompt_len: usize,
    /// Draw training prompts in a seeded shuffled order (false: file order).
    pub shuffle: bool,
    /// Count and skip lines that do not parse instead of failing.
    pub skip_invalid: bool,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            path: String::new(),
            eval_path: String::new(),
            problem_field: "problem".into(),
            answer_field: "answer".into(),
            template: PromptTemplate::QwenMath,
            max_prompt_len: 512,
            shuffle: true,
            skip_invalid: false,
        }
    }
}
