//! Benchmark names and where their problems are found, for a user with no data directory.
//!
//! A name resolves, in order, to: `<data dir>/<name>.jsonl` (`--data-dir`, else `POPO_DATA`);
//! the copy popo converted earlier (`<cache>/<name>.jsonl`, `POPO_CACHE` or `~/.cache/popo`,
//! under `data/`); the dataset as published, in the Hugging Face hub cache, where
//! `huggingface-cli download` puts it, converted into that copy on first use. Failing all of them,
//! the error prints the download command. Only JSONL publications are converted: popo has no
//! parquet reader yet, so for a parquet dataset the error says how to supply the JSONL instead.

use anyhow::{bail, Context, Result};
use popo_model::data::{load_jsonl, JsonlFormat};
use std::io::Write;
use std::path::{Path, PathBuf};

/// How a dataset is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Parquet,
}

/// Where a benchmark is published on the Hugging Face hub, and which fields hold what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// popo's name for it (`--bench NAME`).
    pub name: &'static str,
    /// The dataset id.
    pub repo: &'static str,
    /// The split the problems are in.
    pub split: &'static str,
    /// The data file in the repository.
    pub file: &'static str,
    pub format: Format,
    pub problem_field: &'static str,
    pub answer_field: &'static str,
}

/// The benchmarks with a public source; the other known names (`KNOWN_BENCHMARKS`) resolve from
/// a data directory only.
pub const SOURCES: &[Source] = &[
    Source {
        name: "math500",
        repo: "HuggingFaceH4/MATH-500",
        split: "test",
        file: "test.jsonl",
        format: Format::Jsonl,
        problem_field: "problem",
        answer_field: "answer",
    },
    Source {
        name: "gsm8k_test",
        repo: "openai/gsm8k",
        split: "test (config main)",
        file: "main/test-00000-of-00001.parquet",
        format: Format::Parquet,
        problem_field: "question",
        // The reference answer is the text after `####`.
        answer_field: "answer",
    },
    Source {
        name: "aime24",
        repo: "HuggingFaceH4/aime_2024",
        split: "train",
        file: "data/train-00000-of-00001.parquet",
        format: Format::Parquet,
        problem_field: "problem",
        answer_field: "answer",
    },
    Source {
        name: "aime25",
        repo: "MathArena/aime_2025",
        split: "train",
        file: "data/train-00000-of-00001.parquet",
        format: Format::Parquet,
        problem_field: "problem",
        answer_field: "answer",
    },
];

/// The public source of a benchmark name, if it has one.
pub fn source(name: &str) -> Option<&'static Source> {
    SOURCES.iter().find(|s| s.name == name)
}

/// Where names are looked up (see the module's order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Places {
    /// `--data-dir`, else `POPO_DATA`.
    pub data_dir: Option<PathBuf>,
    /// Converted copies: `<cache>/data`.
    pub converted: Option<PathBuf>,
    /// The Hugging Face hub cache.
    pub hf_cache: Option<PathBuf>,
}

impl Places {
    /// `data_dir` (the flag, which clap fills from `POPO_DATA`), with the user's caches.
    pub fn from_env(data_dir: Option<&Path>) -> Self {
        let popo_cache = std::env::var_os("POPO_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/popo")));
        Places {
            data_dir: data_dir.map(Path::to_path_buf),
            converted: popo_cache.map(|c| c.join("data")),
            hf_cache: popo_model::hub::hf_hub_cache(),
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
    let published = places.hf_cache.as_deref().and_then(|c| hf_cached(c, src));
    match (published, src.format, &places.converted) {
        (Some(path), Format::Jsonl, Some(converted)) => convert(src, &path, converted),
        (Some(path), Format::Parquet, _) => bail!(
            "benchmark `{name}`: {} is parquet, which popo cannot read yet; write it as \
             {file} (one JSON object a line with `problem` from `{}` and `answer` from `{}`) \
             into --data-dir DIR",
            path.display(),
            src.problem_field,
            src.answer_field
        ),
        _ => bail!(
            "benchmark `{name}` is not downloaded: run `huggingface-cli download --repo-type \
             dataset {} {}` and try again, or pass --data-dir DIR (or set POPO_DATA) with {file} in it",
            src.repo,
            src.file
        ),
    }
}

/// The newest snapshot's copy of `src.file` in the hub cache `cache`.
fn hf_cached(cache: &Path, src: &Source) -> Option<PathBuf> {
    let repo = cache.join(format!("datasets--{}", src.repo.replace('/', "--")));
    let rev = std::fs::read_to_string(repo.join("refs/main")).ok()?;
    let file = repo.join("snapshots").join(rev.trim()).join(src.file);
    file.is_file().then_some(file)
}

/// Writes `<converted>/<name>.jsonl` from the published JSONL `path`: `id`, `problem`, `answer`
/// per line, through a temporary file renamed into place.
fn convert(src: &Source, path: &Path, converted: &Path) -> Result<PathBuf> {
    let fmt = JsonlFormat {
        problem_field: src.problem_field.into(),
        answer_field: src.answer_field.into(),
        skip_invalid: false,
    };
    let (examples, _) = load_jsonl(path, &fmt)?;
    std::fs::create_dir_all(converted)
        .with_context(|| format!("creating {}", converted.display()))?;
    let out = converted.join(format!("{}.jsonl", src.name));
    let tmp = converted.join(format!(".{}.jsonl.tmp", src.name));
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    for (i, ex) in examples.iter().enumerate() {
        let row = serde_json::json!({
            "id": format!("{}-{i}", src.name),
            "problem": ex.problem,
            "answer": ex.answer,
        });
        writeln!(w, "{row}").with_context(|| format!("writing {}", tmp.display()))?;
    }
    w.flush()
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(w);
    std::fs::rename(&tmp, &out)
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    tracing::info!(
        "{}: converted {} into {}",
        src.name,
        path.display(),
        out.display()
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hub cache holding `repo`'s `file` with `text`, as huggingface-cli lays it out.
    fn hub_cache(root: &Path, repo: &str, file: &str, text: &str) {
        let dir = root.join(format!("datasets--{}", repo.replace('/', "--")));
        let snap = dir.join("snapshots/abc123");
        std::fs::create_dir_all(snap.join(file).parent().unwrap()).unwrap();
        std::fs::write(snap.join(file), text).unwrap();
        std::fs::create_dir_all(dir.join("refs")).unwrap();
        std::fs::write(dir.join("refs/main"), "abc123\n").unwrap();
    }

    fn places(root: &Path) -> Places {
        Places {
            data_dir: None,
            converted: Some(root.join("popo/data")),
            hf_cache: Some(root.join("hub")),
        }
    }

    #[test]
    fn a_downloaded_jsonl_benchmark_is_converted_once_and_found_after() {
        let tmp = tempfile::tempdir().unwrap();
        let rows = "{\"problem\": \"1+1?\", \"answer\": \"2\", \"level\": 1}\n\
                    {\"problem\": \"2+2?\", \"answer\": \"4\"}\n";
        hub_cache(
            &tmp.path().join("hub"),
            "HuggingFaceH4/MATH-500",
            "test.jsonl",
            rows,
        );
        let p = places(tmp.path());
        let got = find("math500", &p).unwrap();
        assert_eq!(got, tmp.path().join("popo/data/math500.jsonl"));
        let fmt = JsonlFormat::default();
        let (ex, _) = load_jsonl(&got, &fmt).unwrap();
        assert_eq!(ex.len(), 2);
        assert_eq!(
            (ex[1].problem.as_str(), ex[1].answer.as_str()),
            ("2+2?", "4")
        );
        // Found again without the hub cache.
        std::fs::remove_dir_all(tmp.path().join("hub")).unwrap();
        assert_eq!(find("math500", &p).unwrap(), got);
    }

    #[test]
    fn the_data_directory_comes_first() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mine");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("math500.jsonl"),
            "{\"problem\": \"p\", \"answer\": \"a\"}\n",
        )
        .unwrap();
        hub_cache(
            &tmp.path().join("hub"),
            "HuggingFaceH4/MATH-500",
            "test.jsonl",
            "",
        );
        let p = Places {
            data_dir: Some(dir.clone()),
            ..places(tmp.path())
        };
        assert_eq!(find("math500", &p).unwrap(), dir.join("math500.jsonl"));
    }

    #[test]
    fn errors_say_how_to_get_the_data() {
        let tmp = tempfile::tempdir().unwrap();
        let p = places(tmp.path());
        let msg = format!("{:#}", find("math500", &p).unwrap_err());
        assert!(
            msg.contains(
                "huggingface-cli download --repo-type dataset HuggingFaceH4/MATH-500 test.jsonl"
            ),
            "{msg}"
        );
        let msg = format!("{:#}", find("minerva_math", &p).unwrap_err());
        assert!(msg.contains("--data-dir"), "{msg}");
        hub_cache(
            &tmp.path().join("hub"),
            "openai/gsm8k",
            "main/test-00000-of-00001.parquet",
            "",
        );
        let msg = format!("{:#}", find("gsm8k_test", &p).unwrap_err());
        assert!(
            msg.contains("parquet") && msg.contains("`question`"),
            "{msg}"
        );
        // A malformed published row is an error naming the file and line.
        hub_cache(
            &tmp.path().join("hub"),
            "HuggingFaceH4/MATH-500",
            "test.jsonl",
            "{\"problem\": 1}\n",
        );
        let msg = format!("{:#}", find("math500", &p).unwrap_err());
        assert!(msg.contains("test.jsonl:1:"), "{msg}");
    }
}
