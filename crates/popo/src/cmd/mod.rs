//! One module per subcommand. Each exposes `Args` (clap) and `run(Args) -> anyhow::Result<i32>`,
//! where the integer is the process exit code.

use std::path::PathBuf;

pub mod bench;
pub mod eval;
pub mod experiment;
pub mod export;
pub mod generate;
pub mod plot;
pub mod score;
pub mod train;
pub mod verify;

/// The model flags shared by the commands that load one (`#[command(flatten)]`).
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model directory in Hugging Face layout (or a hub id already in the local HF cache), or a
    /// LoRA adapter directory such as a LoRA run's checkpoint (its base: --base, or the
    /// adapter's base_model_name_or_path).
    #[arg(long)]
    pub model: String,
    /// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) to apply
    /// to --model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// The base model of an adapter given as --model (default: its base_model_name_or_path).
    #[arg(long)]
    pub base: Option<String>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

impl ModelArgs {
    /// Loads the model (and its tokenizer, generation config, ...) on the chosen device.
    pub fn load(&self) -> anyhow::Result<popo_model::Pretrained> {
        let device = popo_model::device_from_str(&self.device)?;
        let dtype = popo_model::dtype_from_str(&self.dtype)?;
        let dir = popo_model::resolve_model_path(&self.model)?;
        popo_model::load_with_adapter(
            &dir,
            self.adapter.as_deref(),
            self.base.as_deref(),
            &device,
            dtype,
        )
    }
}
