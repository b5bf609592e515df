//! Benchmark names and where their problems are found, for a user with no data directory.
//!
//! Every known name maps to a public Hugging Face dataset, a file in it and the fields holding
//! the problem and the gold answer (`sources`). A name resolves, in order, to:
//!
//! 1. `<data dir>/<name>.jsonl` (`--data-dir`, else `POPO_DATA`);
//! 2. the copy popo converted earlier: `<cache>/data/<name>.jsonl` (`POPO_CACHE`, else
//!    `~/.cache/popo`);
//! 3. the file as published, in the Hugging Face hub cache (`$HF_HUB_CACHE`, `$HF_HOME/hub`,
//!    `$XDG_CACHE_HOME/huggingface/hub` or `~/.cache/huggingface/hub`, the layout
//!    `datasets--org--name/snapshots/<rev>/<file>` that `hf download` writes), converted into
//!    that copy on first use: JSONL or parquet (`publication`), one `id`, `problem`, `answer`
//!    object a line, written to a temporary file and renamed into place;
//! 4. in a build with the `hub` feature, and unless `HF_HUB_OFFLINE` is set, that file
//!    downloaded into the hub cache first (`download`), then converted.
//!
//! Failing all of them, the error prints the download command.

mod download;
mod parquet_rows;
mod publication;
pub mod sources;

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

pub use sources::{source, Format, Gold, Source, SOURCES};

/// Where names are looked up (see the module's order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Places {
    /// `--data-dir`, else `POPO_DATA`.
    pub data_dir: Option<PathBuf>,
    /// Converted copies: `<cache>/data`.
    pub converted: Option<PathBuf>,
    /// The Hugging Face hub cache.
    pub hf_cache: Option<PathBuf>,
    /// Whether a file missing from the hub cache is downloaded into it (a `hub` build without
    /// `HF_HUB_OFFLINE`); off, the error prints the command instead.
    pub download: bool,
}

impl Places {
    /// `data_dir` (the flag, which clap fills from `POPO_DATA`), with the user's caches.
    pub fn from_env(data_dir: Option<&Path>) -> Self {
        let popo_cache = std::env::var_os("POPO_CACHE")
            .filter(|c| !c.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/popo")));
        Places {
            data_dir: data_dir.map(Path::to_path_buf),
            converted: popo_cache.map(|c| c.join("data")),
            hf_cache: popo_model::hub::hf_hub_cache(),
            download: cfg!(feature = "hub") && !download::offline_from_env(),
        }
    }
}

/// The JSONL file of benchmark `name` (see the module's order).
pub fn find(name: &str, places: &Places) -> Result<PathBuf> {
    let file = format!("{name}.jsonl");
    let local = [&places.data_dir, &places.converted];
    if let Some(found) = local
        .iter()
        .filter_map(|d| d.as_ref())
        .map(|d| d.join(&file))
        .find(|p| p.is_file())
    {
        return Ok(found);
    }
    let Some(src) = source(name) else {
        match &places.data_dir {
            Some(dir) => bail!(
                "benchmark `{name}`: {} does not exist",
                dir.join(&file).display()
            ),
            None => bail!(
                "benchmark `{name}` has no public source popo knows of: pass --data-dir DIR (or \
                 set POPO_DATA) with {file} in it"
            ),
        }
    };
    let published = match places.hf_cache.as_deref().and_then(|c| hf_cached(c, src)) {
        Some(path) => path,
        None => fetch(src, places)?,
    };
    let Some(converted) = &places.converted else {
        bail!(
            "benchmark `{name}`: nowhere to write popo's copy of {}: set POPO_CACHE",
            published.display()
        )
    };
    convert(src, &published, converted)
        .with_context(|| format!("converting benchmark `{name}` ({})", src.repo))
}

/// The newest snapshot's copy of `src.file` in the hub cache `cache`.
fn hf_cached(cache: &Path, src: &Source) -> Option<PathBuf> {
    let repo = cache.join(format!("datasets--{}", src.repo.replace('/', "--")));
    let rev = std::fs::read_to_string(repo.join("refs/main")).ok()?;
    let file = repo.join("snapshots").join(rev.trim()).join(src.file);
    file.is_file().then_some(file)
}

/// `src`'s file downloaded into the hub cache, where `places` allow it; else the error that
/// says how to get it.
fn fetch(src: &Source, places: &Places) -> Result<PathBuf> {
    let file = format!("{}.jsonl", src.name);
    if let (Some(cache), true) = (&places.hf_cache, places.download) {
        return download::fetch(src, cache).with_context(|| {
            format!(
                "benchmark `{}`: download it yourself with `{}`, or pass --data-dir DIR (or \
                 set POPO_DATA) with {file} in it",
                src.name,
                download::command(src)
            )
        });
    }
    let why = match &places.hf_cache {
        None => " (and there is no Hugging Face cache: set HF_HUB_CACHE or HOME)".to_string(),
        Some(_) if !cfg!(feature = "hub") => {
            " (this build does not download: build popo with `--features hub` for that)".into()
        }
        Some(_) if download::offline_from_env() => " (HF_HUB_OFFLINE is set)".into(),
        Some(_) => String::new(),
    };
    let cache = places
        .hf_cache
        .as_ref()
        .map_or(String::new(), |c| format!(" ({})", c.display()));
    bail!(
        "benchmark `{}` is not downloaded{why}: run `{}` (or `{}` with huggingface_hub before \
         1.0), which puts it in the Hugging Face cache{cache}, and try again; or pass \
         --data-dir DIR (or set POPO_DATA) with {file} in it",
        src.name,
        download::command(src),
        download::legacy_command(src)
    )
}

/// Writes `<converted>/<name>.jsonl` from the published file `path`: `id`, `problem`, `answer`
/// per line, through a temporary file renamed into place (named by process, so that two popo
/// runs converting at once do not write into one file).
fn convert(src: &Source, path: &Path, converted: &Path) -> Result<PathBuf> {
    let examples = publication::read(src, path)?;
    std::fs::create_dir_all(converted)
        .with_context(|| format!("creating {}", converted.display()))?;
    let out = converted.join(format!("{}.jsonl", src.name));
    let tmp = converted.join(format!(".{}.jsonl.{}.tmp", src.name, std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for (i, ex) in examples.iter().enumerate() {
            let row = serde_json::json!({
                "id": format!("{}-{i}", src.name),
                "problem": ex.problem,
                "answer": ex.answer,
            });
            writeln!(w, "{row}")?;
        }
        w.into_inner()?.sync_all()?;
        std::fs::rename(&tmp, &out)
    };
    if let Err(e) = write() {
        // Half a copy would be found as the benchmark next time.
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", out.display()));
    }
    tracing::info!(
        "{}: converted {} ({} problems) into {}",
        src.name,
        path.display(),
        examples.len(),
        out.display()
    );
    Ok(out)
}
