//! The public Hugging Face datasets behind popo's benchmark names: the dataset id, the file
//! in it and the fields that hold the problem and the gold answer, as published.
//!
//! The ids are the hub copies evaluation suites load (Qwen2.5-Math's and SimpleRL's ship their
//! own JSONL in their GitHub repositories; these are the same benchmarks as hub datasets, the
//! ones verl recipes and other RL evaluations name). Facts were read from the datasets' cards
//! and file listings; where one was not seen directly, the entry says so.

/// How a dataset file is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object a line.
    Jsonl,
    /// Apache Parquet (what `datasets.push_to_hub` writes).
    Parquet,
}

/// How the gold answer is read from the answer field's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gold {
    /// The field as it is: text, a number as its decimal text, a list joined by ", ".
    Whole,
    /// The text after the last `####`, trimmed: GSM8K's `answer` is a worked solution ending
    /// `#### 18`.
    AfterHashes,
}

/// Where a benchmark is published on the Hugging Face hub, and which fields hold what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// popo's name for it (`--bench NAME`).
    pub name: &'static str,
    /// The dataset id.
    pub repo: &'static str,
    /// The split the problems are in (for the reader; the file is what popo fetches).
    pub split: &'static str,
    /// The data file in the repository.
    pub file: &'static str,
    pub format: Format,
    pub problem_field: &'static str,
    pub answer_field: &'static str,
    pub gold: Gold,
}

/// Every benchmark name popo knows (`bench::KNOWN_BENCHMARKS`) with its public source.
pub const SOURCES: &[Source] = &[
    // 500 problems; the file is PRM800K's MATH-500 split with `problem`, `solution`, `answer`.
    Source {
        name: "math500",
        repo: "HuggingFaceH4/MATH-500",
        split: "test",
        file: "test.jsonl",
        format: Format::Jsonl,
        problem_field: "problem",
        answer_field: "answer",
        gold: Gold::Whole,
    },
    // 1,319 problems; config `main` is a directory of the repository.
    Source {
        name: "gsm8k_test",
        repo: "openai/gsm8k",
        split: "test (config main)",
        file: "main/test-00000-of-00001.parquet",
        format: Format::Parquet,
        problem_field: "question",
        answer_field: "answer",
        gold: Gold::AfterHashes,
    },
    // 30 problems (AIME 2024 I and II); `answer` is a string ("033"). The card's data files are
    // `data/train-*`; the single shard's name is the one `push_to_hub` writes, not seen listed.
    Source {
        name: "aime24",
        repo: "HuggingFaceH4/aime_2024",
        split: "train",
        file: "data/train-00000-of-00001.parquet",
        format: Format::Parquet,
        problem_field: "problem",
        answer_field: "answer",
        gold: Gold::Whole,
    },
    // 30 problems (AIME 2025 I and II). Uncertain: this card was not seen; MathArena's sibling
    // AIME datasets (aime_2024_I, aime_2026) publish `data/train-*` with an int64 `answer`,
    // which is read as its decimal text.
    Source {
        name: "aime25",
        repo: "MathArena/aime_2025",
        split: "train",
        file: "data/train-00000-of-00001.parquet",
        format: Format::Parquet,
        problem_field: "problem",
        answer_field: "answer",
        gold: Gold::Whole,
    },
    // 40 problems, the file at the repository's root. Uncertain: the answer column's type (the
    // Qwen2.5-Math copy has floats such as 27.0); a number is read as its text.
    Source {
        name: "amc23",
        repo: "math-ai/amc23",
        split: "test",
        file: "test-00000-of-00001.parquet",
        format: Format::Parquet,
        problem_field: "question",
        answer_field: "answer",
        gold: Gold::Whole,
    },
    // 272 problems (Minerva's OCW set) with a final `answer` per problem.
    Source {
        name: "minerva_math",
        repo: "math-ai/minervamath",
        split: "test",
        file: "test.jsonl",
        format: Format::Jsonl,
        problem_field: "question",
        answer_field: "answer",
        gold: Gold::Whole,
    },
    // OlympiadBench's English open-ended, text-only maths (OE_TO_maths_en_COMP, 675 problems;
    // one user of it reports ~674). `final_answer` is a list of strings, joined by ", ".
    Source {
        name: "olympiadbench",
        repo: "math-ai/olympiadbench",
        split: "test",
        file: "test.jsonl",
        format: Format::Jsonl,
        problem_field: "question",
        answer_field: "final_answer",
        gold: Gold::Whole,
    },
];

/// The public source of a benchmark name, if it has one.
pub fn source(name: &str) -> Option<&'static Source> {
    SOURCES.iter().find(|s| s.name == name)
}
