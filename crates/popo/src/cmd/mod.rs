//! One module per subcommand. Each exposes `Args` (clap) and `run(Args) -> anyhow::Result<i32>`,
//! where the integer is the process exit code.

pub mod bench;
pub mod eval;
pub mod experiment;
pub mod generate;
pub mod plot;
pub mod score;
pub mod train;
pub mod verify;

/// The model flags shared by the commands that load one (`#[command(flatten)]`).
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model directory in Hugging Face layout (or a hub id already in the local HF cache).
    #[arg(long)]
    pub model: String,
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
        popo_model::load_pretrained(&dir, &device, dtype)
    }
}
