//! Getting a benchmark's published file into the Hugging Face hub cache: the command a user
//! runs, or, in a build with the `hub` feature, the download itself (hf-hub, through
//! `popo_model::hub`), into the same cache and layout.

use super::sources::Source;
use std::path::{Path, PathBuf};

/// How long one download may take before popo gives up: benchmark files are a few MB at most.
#[cfg(feature = "hub")]
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The command that puts `src`'s file into the hub cache (`$HF_HUB_CACHE`, `$HF_HOME/hub`, ...),
/// where popo looks: `hf` is huggingface_hub's CLI from 1.0 on, where `huggingface-cli` no
/// longer works; both download into the cache unless given `--local-dir`.
pub fn command(src: &Source) -> String {
    format!("hf download --repo-type dataset {} {}", src.repo, src.file)
}

/// The same with the CLI of huggingface_hub before 1.0.
pub fn legacy_command(src: &Source) -> String {
    format!(
        "huggingface-cli download --repo-type dataset {} {}",
        src.repo, src.file
    )
}

/// Whether `HF_HUB_OFFLINE` asks for no network, read as huggingface_hub reads it.
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// Downloads `src`'s file into the hub cache `cache`; the path of its snapshot copy.
#[cfg(feature = "hub")]
pub fn fetch(src: &Source, cache: &Path) -> anyhow::Result<PathBuf> {
    tracing::info!(
        "{}: downloading {} of dataset {} into {}",
        src.name,
        src.file,
        src.repo,
        cache.display()
    );
    popo_model::hub::download_dataset_file(src.repo, src.file, cache, TIMEOUT)
}

/// Without the `hub` feature nothing downloads; `find` prints the command instead.
#[cfg(not(feature = "hub"))]
pub fn fetch(src: &Source, cache: &Path) -> anyhow::Result<PathBuf> {
    anyhow::bail!(
        "this build cannot download {} of dataset {} into {} (build with `--features hub`)",
        src.file,
        src.repo,
        cache.display()
    )
}
