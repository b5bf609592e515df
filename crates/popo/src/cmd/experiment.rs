//! `popo experiment FILE.toml`: a grid of `popo train` runs (variants x seeds, plus a base cell
//! per seed when the runs report pass@k), then report.md, summary.json and plots with a band over
//! seeds.

use anyhow::Result;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use popo_eval::experiment::{run_grid, ExperimentSpec};
use popo_eval::report::write_report;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Experiment file (see popo_eval::experiment for the format).
    pub file: PathBuf,
    /// Output directory (overrides `out_dir` in the file).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Rerun finished runs (and base cells) too.
    #[arg(long)]
    pub force: bool,
    /// Only rebuild report.md, summary.json and the plots from finished runs.
    #[arg(long)]
    pub report_only: bool,
    /// Print the grid (run directories and configs) and exit.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: Args) -> Result<i32> {
    let mut spec = ExperimentSpec::from_file(&args.file)?;
    spec.build = format!("popo {}", env!("POPO_BUILD"));
    if let Some(o) = &args.out {
        spec.out_dir = o.clone();
    }
    if args.dry_run {
        if spec.has_base()? {
            for &seed in &spec.seeds {
                println!(
                    "base seed {seed}: {} (the starting model, 0 steps: pass@k before training)",
                    spec.base_dir(seed).display()
                );
            }
        }
        for r in &spec.runs {
            for &seed in &spec.seeds {
                spec.train_config(r, seed)?;
                println!(
                    "{} seed {seed}: {}",
                    r.name,
                    spec.run_dir(r, seed).display()
                );
            }
        }
        return Ok(0);
    }
    let command = {
        let mut c = format!("popo experiment {}", args.file.display());
        if let Some(o) = &args.out {
            c.push_str(&format!(" --out {}", o.display()));
        }
        c
    };
    if !args.report_only {
        if let (Some(r), Some(&seed)) = (spec.runs.first(), spec.seeds.first()) {
            // The runs share their model and device, so the first one's settings hold for all.
            popo_train::parallel::configure_process(&spec.train_config(r, seed)?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if s.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\ninterrupt: stopping after this step (again to abort)");
        });
        run_grid(&spec, args.force, stop)?;
    }
    let summary = write_report(&spec, &command)?;
    for v in &summary.verdicts {
        println!("{v}");
    }
    println!("report: {}", spec.out_dir.join("report.md").display());
    Ok(0)
}
