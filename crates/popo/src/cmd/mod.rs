//! One module per subcommand. Each exposes `Args` (clap) and `run(Args) -> anyhow::Result<i32>`,
//! where the integer is the process exit code.

pub mod eval;
pub mod experiment;
pub mod generate;
pub mod plot;
pub mod score;
pub mod train;
pub mod verify;
