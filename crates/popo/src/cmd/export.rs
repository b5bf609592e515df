//! `popo export --merge CHECKPOINT --out DIR`: a LoRA adapter merged into its base, written as a
//! plain HF model (`popo_model::adapter::export_merged`).

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The adapter to merge: a LoRA run's checkpoint, its run directory (the latest checkpoint)
    /// or any PEFT LoRA adapter directory.
    #[arg(long, value_name = "CHECKPOINT")]
    pub merge: PathBuf,
    /// Where to write the merged model (must not exist yet).
    #[arg(long)]
    pub out: PathBuf,
    /// The base model (default: the adapter's base_model_name_or_path).
    #[arg(long)]
    pub base: Option<String>,
    /// dtype of the written weights: f32, bf16 or f16 (default: the base's torch_dtype).
    #[arg(long)]
    pub dtype: Option<String>,
}

pub fn run(args: Args) -> Result<i32> {
    let (dir, _) = popo_train::checkpoint::resolve_model_dir(&args.merge)?;
    let dtype = args
        .dtype
        .as_deref()
        .map(popo_model::dtype_from_str)
        .transpose()?;
    popo_model::adapter::export_merged(&dir, args.base.as_deref(), &args.out, dtype)?;
    println!(
        "wrote {} (adapter {} merged)",
        args.out.display(),
        dir.display()
    );
    Ok(0)
}
