//! `popo export --merge CHECKPOINT --out DIR`: a LoRA adapter merged into its base, written as a
//! plain HF model (`popo_model::adapter::export_merged`).
//! `popo export --untie MODEL --out DIR`: a model with its tied LM head written out, the directory
//! to start vLLM servers on for popo's weight sync (`popo_model::untie`).

use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["merge", "untie"])))]
pub struct Args {
    /// The adapter to merge: a LoRA run's checkpoint, its run directory (the latest checkpoint)
    /// or any PEFT LoRA adapter directory.
    #[arg(long, value_name = "CHECKPOINT")]
    pub merge: Option<PathBuf>,
    /// A model to copy with its tied LM head written out as a layer of its own (the same model):
    /// the rollout.weights_dir to start vLLM servers on, whose CPU build does not refresh a tied
    /// head when it reloads weights. A model dir, a cached hub id or a checkpoint.
    #[arg(long, value_name = "MODEL")]
    pub untie: Option<String>,
    /// Where to write the model (must not exist yet).
    #[arg(long)]
    pub out: PathBuf,
    /// With --merge: the base model (default: the adapter's base_model_name_or_path).
    #[arg(long, requires = "merge")]
    pub base: Option<String>,
    /// With --merge: dtype of the written weights: f32, bf16 or f16 (default: the base's
    /// torch_dtype).
    #[arg(long, requires = "merge")]
    pub dtype: Option<String>,
}

pub fn run(args: Args) -> Result<i32> {
    if let Some(model) = &args.untie {
        let path = popo_model::resolve_model_path(model)?;
        let (dir, _) = popo_train::checkpoint::resolve_model_dir(&path)?;
        if !dir.join("config.json").is_file() {
            anyhow::bail!(
                "{} is a LoRA adapter: --untie takes a model (for a LoRA run, start the servers on the base with LoRA on, rollout.sync = \"lora\")",
                dir.display()
            );
        }
        let tied = popo_model::untie::export_untied(&dir, &args.out)?;
        let how = if tied {
            "its tied LM head written out"
        } else {
            "untied already: copied as it is"
        };
        println!("wrote {} ({}, {how})", args.out.display(), dir.display());
        return Ok(0);
    }
    let Some(merge) = &args.merge else {
        unreachable!("clap requires --merge or --untie")
    };
    let (dir, _) = popo_train::checkpoint::resolve_model_dir(merge)?;
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
