//! `popo eval` from loaded model to written results: every benchmark in turn through
//! [`evaluate_bench`] with a progress bar (a log line per problem when stderr is not a terminal),
//! samples.jsonl, results.json and results.md in the output directory, and the summary printed.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::bench::{evaluate_bench, markdown_table, EvalConfig, EvalResults, ModelInfo};
use popo_model::{Model, Tokenizer};

/// One `popo eval` run: the model, what to sample and where the results go.
pub struct EvalJob<'a> {
    pub model: &'a Model,
    pub tokenizer: &'a Tokenizer,
    pub stop_token_ids: &'a [u32],
    pub info: ModelInfo,
    pub cfg: EvalConfig,
    /// (name, JSONL file) of each benchmark, as `resolve_bench` gives them.
    pub benches: Vec<(String, PathBuf)>,
    /// Rows decoding at once.
    pub batch_size: usize,
    /// The output directory (created).
    pub out: PathBuf,
}

/// Runs `job`: writes samples.jsonl, results.json and results.md under `job.out`, reports each
/// benchmark's throughput on stderr, and returns the results with the summary to print.
pub fn run(job: &EvalJob) -> Result<(EvalResults, String)> {
    let out = &job.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let samples_path = out.join("samples.jsonl");
    let file = std::fs::File::create(&samples_path)
        .with_context(|| format!("creating {}", samples_path.display()))?;
    let mut samples = std::io::BufWriter::new(file);
    let mut results = EvalResults {
        model: job.info.clone(),
        config: job.cfg.clone(),
        benchmarks: Vec::new(),
    };
    for (name, path) in &job.benches {
        let progress = Progress::new(name);
        let r = evaluate_bench(
            job.model,
            job.tokenizer,
            job.stop_token_ids,
            name,
            path,
            &job.cfg,
            job.batch_size,
            &mut samples,
            &mut |done, total| progress.update(done, total),
        )?;
        progress.bar.finish_and_clear();
        eprintln!(
            "{name}: {} problems in {:.1}s ({:.2} problems/s), {} tokens generated ({:.1} tok/s), batch size {}",
            r.metrics.num_problems,
            r.wall_time_s,
            r.metrics.num_problems as f64 / r.wall_time_s,
            r.generated_tokens,
            r.generated_tokens as f64 / r.wall_time_s,
            job.batch_size
        );
        results.benchmarks.push(r);
    }
    let json_path = out.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let table = markdown_table(&results);
    let md_path = out.join("results.md");
    std::fs::write(&md_path, &table).with_context(|| format!("writing {}", md_path.display()))?;
    let summary = summary(&results, &table, &json_path, &samples_path);
    Ok((results, summary))
}

/// The table, the settings it was measured with, and the files written.
fn summary(results: &EvalResults, table: &str, json: &Path, samples: &Path) -> String {
    let cfg = &results.config;
    format!(
        "{table}\nmodel {} (checkpoint {}), template {}, temperature {}, top_p {}, n {}, max tokens {}, seed {}\nwrote {}, {}",
        results.model.model,
        results.model.checkpoint,
        cfg.template,
        cfg.temperature,
        cfg.top_p,
        cfg.n,
        cfg.max_new_tokens,
        cfg.seed,
        json.display(),
        samples.display()
    )
}

/// One benchmark's progress: a bar on a terminal, else a line per finished problem (a log
/// file shows how far a long evaluation has got).
struct Progress<'a> {
    name: &'a str,
    bar: ProgressBar,
    tty: bool,
    started: Instant,
}

impl<'a> Progress<'a> {
    fn new(name: &'a str) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} problems, eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(name.to_string());
        let tty = std::io::stderr().is_terminal();
        if !tty {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        Progress {
            name,
            bar,
            tty,
            started: Instant::now(),
        }
    }

    fn update(&self, done: usize, total: usize) {
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
        if !self.tty {
            let elapsed = self.started.elapsed().as_secs_f64();
            let eta = elapsed / done as f64 * (total - done) as f64;
            let name = self.name;
            eprintln!("{name}: {done}/{total} problems, {elapsed:.0}s elapsed, eta {eta:.0}s");
        }
    }
}
