//! `popo eval`: sample a model on math benchmarks and score it (avg@n, pass@k, maj@n, greedy).
//!
//! Sampling is reproducible: the samples of problem `i` are seeded by `(seed, i)` alone (each
//! decode row has its own RNG), so they do not depend on which other problems are evaluated, in
//! what order, or how many rows decode together (`--batch-size`), up to float rounding.

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use popo_model::data::{load_jsonl, JsonlFormat, PromptTemplate, SplitMix64};
use popo_model::{Model, Request, SamplingParams, Tokenizer};
use popo_train::scored::{generate_scored, Draw, ScoredCompletion};

use crate::metrics::{aggregate, majority_vote, Aggregate, ProblemScore, Vote};

/// Benchmark names: each resolves to `<data dir>/<name>.jsonl` or to its public dataset
/// (`datasets::SOURCES`).
pub const KNOWN_BENCHMARKS: &[&str] = &[
    "math500",
    "aime24",
    "aime25",
    "amc23",
    "minerva_math",
    "olympiadbench",
    "gsm8k_test",
];

/// A path to a JSONL file, a name in the data directory, or a known benchmark name, found as
/// `datasets::find` finds it (the data directory, popo's converted copy, the Hugging Face cache,
/// a download in a `hub` build). Returns the benchmark's display name and file.
pub fn resolve_bench(name_or_path: &str, data_dir: Option<&Path>) -> Result<(String, PathBuf)> {
    resolve_bench_in(name_or_path, &crate::datasets::Places::from_env(data_dir))
}

/// `resolve_bench` with the places to look in given (tests give their own, not the user's).
pub fn resolve_bench_in(
    name_or_path: &str,
    places: &crate::datasets::Places,
) -> Result<(String, PathBuf)> {
    let data_dir = places.data_dir.as_deref();
    let as_path = Path::new(name_or_path);
    if as_path.is_file() {
        let name = as_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| name_or_path.to_string());
        return Ok((name, as_path.to_path_buf()));
    }
    let file = format!("{name_or_path}.jsonl");
    let in_data_dir = data_dir.is_some_and(|d| d.join(&file).is_file());
    if !in_data_dir && !KNOWN_BENCHMARKS.contains(&name_or_path) {
        let looked = match data_dir {
            Some(d) => format!("nor is {} a file", d.join(&file).display()),
            None => "and no data directory is set (pass --data-dir or set POPO_DATA)".into(),
        };
        bail!(
            "benchmark `{name_or_path}` is not a file or a known name ({}), {looked}",
            KNOWN_BENCHMARKS.join(", ")
        );
    }
    let found = crate::datasets::find(name_or_path, places)?;
    Ok((name_or_path.to_string(), found))
}

/// Everything that determines an evaluation's samples (recorded in results.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalConfig {
    /// Samples per problem (0 with `greedy`: greedy only).
    pub n: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: usize,
    pub template: PromptTemplate,
    pub seed: u64,
    /// Also decode greedily once per problem and report greedy accuracy.
    pub greedy: bool,
    /// A number gold takes only a number written out (`popo_verify::Config::literal_numbers`).
    pub literal_numbers: bool,
    /// Evaluate only the first `limit` problems of each benchmark.
    pub limit: Option<usize>,
    pub problem_field: String,
    pub answer_field: String,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            n: 16,
            temperature: 0.6,
            top_p: 0.95,
            max_new_tokens: 4096,
            template: PromptTemplate::QwenMath,
            seed: 0,
            greedy: false,
            literal_numbers: true,
            limit: None,
            problem_field: "problem".into(),
            answer_field: "answer".into(),
        }
    }
}

/// One sample, as written to samples.jsonl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSample {
    pub bench: String,
    pub problem_index: usize,
    /// `None` for the greedy sample.
    pub sample_index: Option<usize>,
    pub problem: String,
    pub gold: String,
    pub completion: String,
    pub extracted: Option<String>,
    pub correct: bool,
    /// The verifier's reason (`exact`, `numeric`, `different`, `no answer found`, ...).
    pub reason: String,
    pub num_tokens: usize,
    pub finish_reason: popo_model::FinishReason,
}

/// One benchmark's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    pub name: String,
    pub path: PathBuf,
    #[serde(flatten)]
    pub metrics: Aggregate,
    pub wall_time_s: f64,
    /// Completion tokens generated (samples and greedy), for throughput.
    #[serde(default)]
    pub generated_tokens: usize,
}

/// What a model directory is: recorded with the results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The directory given.
    pub model: String,
    /// The HF directory actually loaded (a run directory resolves to its latest checkpoint).
    pub checkpoint: String,
    /// The training step, when the checkpoint was written by `popo train`.
    pub step: Option<u64>,
}

/// Scores one problem's completions with the verifier; returns the per-sample verdicts (in
/// order) and the problem's scores. `greedy` is the greedy completion, if any.
pub fn score_problem(
    gold: &str,
    completions: &[String],
    greedy: Option<&str>,
) -> (
    Vec<popo_verify::Verdict>,
    Option<popo_verify::Verdict>,
    ProblemScore,
) {
    let verdicts: Vec<popo_verify::Verdict> = completions
        .iter()
        .map(|c| popo_verify::verify(gold, c))
        .collect();
    let greedy_verdict = greedy.map(|g| popo_verify::verify(gold, g));
    let score = problem_score(
        &verdicts.iter().collect::<Vec<_>>(),
        greedy_verdict.as_ref(),
    );
    (verdicts, greedy_verdict, score)
}

/// A problem's scores from its samples' verdicts (majority vote over equivalent answers) and
/// its greedy verdict, if any.
fn problem_score(
    verdicts: &[&popo_verify::Verdict],
    greedy: Option<&popo_verify::Verdict>,
) -> ProblemScore {
    let votes: Vec<Vote> = verdicts
        .iter()
        .map(|v| Vote {
            answer: v.pred_answer.as_deref(),
            correct: v.correct,
        })
        .collect();
    let (maj_correct, maj_answer, _) = majority_vote(&votes, popo_verify::answers_equivalent);
    ProblemScore {
        n: verdicts.len(),
        correct: verdicts.iter().filter(|v| v.correct).count(),
        maj_correct,
        maj_answer: maj_answer.map(String::from),
        greedy_correct: greedy.map(|v| v.correct),
    }
}

fn problem_seed(seed: u64, index: usize) -> u64 {
    SplitMix64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).next_u64()
}

/// Default `batch_size` (decode rows at once): CPU decode throughput stops growing around 64
/// rows, a GPU's keeps growing to a few hundred.
pub fn default_batch_size(device: &candle_core::Device) -> usize {
    if device.is_cpu() {
        64
    } else {
        256
    }
}

/// A finished problem, waiting for its turn in samples.jsonl.
struct Scored {
    lines: Vec<String>,
    score: ProblemScore,
    tokens: usize,
}

/// Evaluates one benchmark file. Samples are appended to `samples_out` as JSON lines, ordered by
/// problem then sample (the greedy sample last); `progress(done, total)` is called whenever a
/// problem is finished (problems finish out of order, `done` counts them).
///
/// All problems go through one continuous-batching `generate_requests` call with at most
/// `batch_size` rows decoding at once: the `n` samples and the greedy row of each problem, many
/// problems side by side, longest prompt first, waiting problems joining as rows finish. Problem
/// `i`'s samples are seeded from `(cfg.seed, i)` alone, so they are the same whatever the batch
/// size, the benchmark subset or the order (up to float rounding deciding a near-tie between two
/// tokens: see `popo_model::generate_requests`).
///
/// Why continuous batching rather than fixed batches of problems sorted by length: completion
/// lengths vary far more than prompt lengths (GSM8K greedy with SmolLM2: 53 to 256+ tokens), and
/// a fixed batch decodes until its longest row ends, shrinking as the others finish, so its
/// average occupancy is mean/max length; refilling keeps every row slot busy until the queue is
/// empty, for the price of one cache copy per admission group.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_bench(
    model: &Model,
    tokenizer: &Tokenizer,
    stop_token_ids: &[u32],
    name: &str,
    path: &Path,
    cfg: &EvalConfig,
    batch_size: usize,
    samples_out: &mut dyn Write,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<BenchResult> {
    if cfg.n == 0 && !cfg.greedy {
        bail!("nothing to do: --n 0 without --greedy");
    }
    if batch_size == 0 {
        bail!("the batch size must be at least 1");
    }
    let start = Instant::now();
    let fmt = JsonlFormat {
        problem_field: cfg.problem_field.clone(),
        answer_field: cfg.answer_field.clone(),
        skip_invalid: false,
    };
    let (mut examples, _) = load_jsonl(path, &fmt)?;
    if let Some(l) = cfg.limit {
        examples.truncate(l);
    }
    if examples.is_empty() {
        bail!("{}: no problems", path.display());
    }
    let total = examples.len();
    let requests = requests(&examples, cfg, tokenizer, path)?;
    // Sampled rows; the greedy row, when asked for, is sample `n` and ignores temperature/top-p.
    let params = SamplingParams {
        temperature: cfg.temperature,
        top_p: cfg.top_p,
        max_new_tokens: cfg.max_new_tokens,
        stop_token_ids: stop_token_ids.to_vec(),
        ..Default::default()
    };
    let golds: Vec<&str> = examples.iter().map(|ex| ex.answer.as_str()).collect();
    let verifier = popo_verify::Config {
        literal_numbers: cfg.literal_numbers,
        ..Default::default()
    };
    let draw = Draw::Requests {
        model,
        requests: &requests,
        params: &params,
        max_rows: batch_size,
    };
    let mut book = InOrder::new(total);
    generate_scored(
        draw,
        tokenizer,
        &golds,
        &|text, gold| popo_verify::verify_with(&verifier, gold, text),
        &mut |i, rows| {
            let scored = score_completions(name, i, &examples[i], &rows, cfg)?;
            progress(book.finish(i, scored, samples_out)?, total);
            Ok(())
        },
    )
    .with_context(|| format!("sampling {name}"))?;
    let written = book.scores.len();
    ensure!(
        written == total,
        "{name}: only {written} of {total} problems finished"
    );
    samples_out.flush()?;
    Ok(BenchResult {
        name: name.to_string(),
        path: path.to_path_buf(),
        metrics: aggregate(&book.scores),
        wall_time_s: start.elapsed().as_secs_f64(),
        generated_tokens: book.tokens,
    })
}

/// Problems finish out of order; samples.jsonl lists them in order. Holds each finished problem
/// until every earlier one is written.
struct InOrder {
    scored: Vec<Option<Scored>>,
    /// The scores written so far, in problem order.
    scores: Vec<ProblemScore>,
    tokens: usize,
    done: usize,
}

impl InOrder {
    fn new(problems: usize) -> Self {
        InOrder {
            scored: (0..problems).map(|_| None).collect(),
            scores: Vec::with_capacity(problems),
            tokens: 0,
            done: 0,
        }
    }

    /// Files problem `i`'s result and writes every problem now next in line; returns the count of
    /// problems finished.
    fn finish(&mut self, i: usize, scored: Scored, out: &mut dyn Write) -> Result<usize> {
        self.scored[i] = Some(scored);
        self.done += 1;
        while let Some(p) = self
            .scored
            .get_mut(self.scores.len())
            .and_then(Option::take)
        {
            for l in &p.lines {
                writeln!(out, "{l}")?;
            }
            self.scores.push(p.score);
            self.tokens += p.tokens;
        }
        Ok(self.done)
    }
}

/// One request per problem: its prompt in `cfg.template`, `cfg.n` samples seeded from
/// `(cfg.seed, i)`, and the greedy row when `cfg.greedy`.
fn requests(
    examples: &[popo_model::data::Example],
    cfg: &EvalConfig,
    tokenizer: &Tokenizer,
    path: &Path,
) -> Result<Vec<Request>> {
    examples
        .iter()
        .enumerate()
        .map(|(i, ex)| {
            let text = cfg
                .template
                .render(&ex.problem, Some(tokenizer))
                .with_context(|| format!("{}: problem {i}", path.display()))?;
            Ok(Request {
                prompt: tokenizer.encode(&text, false)?,
                n: cfg.n,
                seed: problem_seed(cfg.seed, i),
                greedy_row: cfg.greedy,
            })
        })
        .collect()
}

/// Problem `i`'s scored completions (its `n` samples, then the greedy one when `cfg.greedy`) as
/// samples.jsonl lines and its score.
fn score_completions(
    name: &str,
    i: usize,
    ex: &popo_model::data::Example,
    rows: &[ScoredCompletion<popo_verify::Verdict>],
    cfg: &EvalConfig,
) -> Result<Scored> {
    let (sampled, greedy) = rows.split_at(cfg.n);
    let greedy = greedy.first();
    let verdicts: Vec<&popo_verify::Verdict> = sampled.iter().map(|r| &r.score).collect();
    let score = problem_score(&verdicts, greedy.map(|r| &r.score));
    let line = |sample_index: Option<usize>,
                c: &popo_model::Completion,
                completion: &str,
                v: &popo_verify::Verdict|
     -> Result<String> {
        Ok(serde_json::to_string(&EvalSample {
            bench: name.to_string(),
            problem_index: i,
            sample_index,
            problem: ex.problem.clone(),
            gold: ex.answer.clone(),
            completion: completion.to_string(),
            extracted: v.pred_answer.clone(),
            correct: v.correct,
            reason: v.reason.clone(),
            num_tokens: c.tokens.len(),
            finish_reason: c.finish_reason,
        })?)
    };
    let mut lines = Vec::with_capacity(rows.len());
    for (j, r) in sampled.iter().enumerate() {
        lines.push(line(Some(j), &r.completion, &r.text, &r.score)?);
    }
    if let Some(r) = greedy {
        lines.push(line(None, &r.completion, &r.text, &r.score)?);
    }
    Ok(Scored {
        lines,
        score,
        tokens: rows.iter().map(|r| r.completion.tokens.len()).sum(),
    })
}

/// results.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResults {
    #[serde(flatten)]
    pub model: ModelInfo,
    #[serde(flatten)]
    pub config: EvalConfig,
    pub benchmarks: Vec<BenchResult>,
}

/// The results as a markdown table (one row per benchmark, values in percent).
pub fn markdown_table(results: &EvalResults) -> String {
    let n = results.config.n;
    let ks = crate::metrics::pass_ks(n);
    let mut head = vec!["benchmark".to_string(), "problems".to_string()];
    if n > 0 {
        head.push(format!("avg@{n}"));
        head.extend(ks.iter().map(|k| format!("pass@{k}")));
        head.push(format!("maj@{n}"));
    }
    if results.config.greedy {
        head.push("greedy".into());
    }
    let mut s = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
    let pct = |v: f64| format!("{:.1}", 100.0 * v);
    for b in &results.benchmarks {
        let m = &b.metrics;
        let mut row = vec![b.name.clone(), m.num_problems.to_string()];
        if n > 0 {
            row.push(pct(m.avg_at_n));
            row.extend(ks.iter().map(|k| {
                m.pass_at_k
                    .get(&format!("pass@{k}"))
                    .map_or("-".into(), |v| pct(*v))
            }));
            row.push(pct(m.maj_at_n));
        }
        if results.config.greedy {
            row.push(m.greedy_accuracy.map_or("-".into(), pct));
        }
        s.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoring_uses_the_verifier_and_groups_equivalent_answers() {
        let completions: Vec<String> = [
            "so \\boxed{1/2}",
            "\\boxed{0.5}",
            "\\boxed{3}",
            "no idea",
            "\\boxed{3}",
            "\\boxed{\\frac{1}{2}}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (verdicts, greedy, score) = score_problem("\\frac12", &completions, Some("\\boxed{3}"));
        assert_eq!(
            verdicts.iter().map(|v| v.correct).collect::<Vec<_>>(),
            [true, true, false, false, false, true]
        );
        // 1/2, 0.5 and \frac{1}{2} are one group of 3 against "3" with 2.
        assert_eq!(score.n, 6);
        assert_eq!(score.correct, 3);
        assert!(score.maj_correct);
        assert_eq!(score.greedy_correct, Some(false));
        assert!(!greedy.unwrap().correct);
    }

    #[test]
    fn benchmarks_resolve_by_name_or_path() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("amc23.jsonl");
        std::fs::write(&f, "{\"problem\":\"1+1\",\"answer\":\"2\"}\n").unwrap();
        // Empty caches of the test's own, and no download: the user's caches play no part.
        let places = |data_dir: Option<&Path>| crate::datasets::Places {
            data_dir: data_dir.map(Path::to_path_buf),
            converted: Some(dir.path().join("popo")),
            hf_cache: Some(dir.path().join("hub")),
            download: false,
        };
        assert_eq!(
            resolve_bench_in("amc23", &places(Some(dir.path()))).unwrap(),
            ("amc23".to_string(), f.clone())
        );
        assert_eq!(
            resolve_bench_in(f.to_str().unwrap(), &places(None)).unwrap(),
            ("amc23".to_string(), f.clone())
        );
        let err = format!(
            "{:#}",
            resolve_bench_in("aime24", &places(Some(dir.path()))).unwrap_err()
        );
        assert!(err.contains("aime24.jsonl"), "{err}");
        let err = format!(
            "{:#}",
            resolve_bench_in("aime24", &places(None)).unwrap_err()
        );
        assert!(err.contains("POPO_DATA"), "{err}");
        let err = format!("{:#}", resolve_bench_in("nope", &places(None)).unwrap_err());
        assert!(err.contains("not a file or a known name"), "{err}");
    }

    /// The shared benchmark data (`POPO_DATA`, else `../shared/data` next to the repository).
    /// Without it the test checks nothing, right for a user's clone; under CI (`CI=true`) that
    /// would be a silent pass, so it fails.
    #[test]
    fn shared_benchmarks_resolve_when_the_data_dir_exists() {
        let data = std::env::var_os("POPO_DATA").map_or_else(
            || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data")),
            PathBuf::from,
        );
        if !data.is_dir() {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
                "CI is set but the shared data ({}) is missing: set POPO_DATA",
                data.display()
            );
            eprintln!("skipping: {} is missing", data.display());
            return;
        }
        for name in KNOWN_BENCHMARKS {
            let (_, path) = resolve_bench(name, Some(&data)).unwrap();
            let (ex, _) = load_jsonl(&path, &JsonlFormat::default()).unwrap();
            assert!(!ex.is_empty(), "{name}");
        }
    }
}
