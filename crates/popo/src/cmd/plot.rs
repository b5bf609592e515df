//! `popo plot RUN_DIR... [--metrics a,b] [--out DIR]`: metric curves of runs from their metrics.jsonl.

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run directories (each holding a metrics.jsonl), or metrics.jsonl files.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Metrics to draw, comma-separated (default: the usual training curves present in the runs).
    #[arg(long, value_delimiter = ',')]
    pub metrics: Vec<String>,
    /// Output directory (default: `plots` inside the first run directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let out = args.out.clone().unwrap_or_else(|| {
        let first = &args.runs[0];
        let dir = if first.is_dir() {
            first.clone()
        } else {
            first.parent().map(PathBuf::from).unwrap_or_default()
        };
        dir.join("plots")
    });
    let files = popo_eval::plot::plot_runs(&args.runs, &args.metrics, &out)?;
    for f in &files {
        println!("{}", f.display());
    }
    Ok(0)
}
