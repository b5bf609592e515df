//! Hugging Face directory layout in and out: config.json, model.safetensors (or shards plus
//! model.safetensors.index.json), tokenizer files and generation_config.json.

use crate::config::ModelConfig;
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use anyhow::{anyhow, bail, Context, Result};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Checkpoints above this many bytes are written as shards (transformers' default is 5 GB).
pub const DEFAULT_SHARD_BYTES: usize = 5_000_000_000;

pub struct Pretrained {
    pub config: ModelConfig,
    /// The weights as trainable Vars, keyed by HF tensor name.
    pub varmap: VarMap,
    pub model: Model,
    pub tokenizer: Option<Tokenizer>,
    pub generation_config: Option<Value>,
    pub dir: PathBuf,
}

/// The checkpoint's safetensors files (`weight_files`), memory-mapped.
pub(crate) fn map_weights(dir: &Path) -> Result<MmapedSafetensors> {
    let files = weight_files(dir)?;
    // SAFETY: the files are only read; a file modified while mapped is the caller's problem, as
    // with every memory-mapped checkpoint loader.
    unsafe { MmapedSafetensors::multi(&files) }.map_err(|e| {
        anyhow!(
            "corrupt or unreadable safetensors file in {}: {e}",
            dir.display()
        )
    })
}

/// Whether a file of a model directory holds its weights: `model.safetensors`, a shard, or the
/// shards' index.
pub(crate) fn is_weight_file(name: &str) -> bool {
    name == "model.safetensors.index.json"
        || (name.starts_with("model") && name.ends_with(".safetensors"))
}

/// Writes the new directory `out` whole or not at all: `write` fills a temporary sibling
/// (`.tmp-NAME`), renamed to `out` when it succeeds and removed when anything fails. An existing
/// `out` is refused before `write` starts.
pub(crate) fn write_new_dir<T>(out: &Path, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    if out.exists() {
        bail!("{} already exists: choose a new --out", out.display());
    }
    let name = out.file_name().context("--out needs a directory name")?;
    let tmp = out.with_file_name(format!(".tmp-{}", name.to_string_lossy()));
    let _ = std::fs::remove_dir_all(&tmp);
    let written = write(&tmp).and_then(|v| {
        std::fs::rename(&tmp, out)
            .with_context(|| format!("renaming {} -> {}", tmp.display(), out.display()))?;
        Ok(v)
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
}

/// safetensors files of a checkpoint: `model.safetensors`, or the shards named by the index.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if !index.exists() {
        bail!(
            "no model.safetensors or model.safetensors.index.json in {}",
            dir.display()
        );
    }
    let text = std::fs::read_to_string(&index)
        .with_context(|| format!("cannot read {}", index.display()))?;
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", index.display()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| anyhow!("{}: missing object \"weight_map\"", index.display()))?;
    let mut files: Vec<String> = map
        .values()
        .map(|f| {
            f.as_str()
                .map(String::from)
                .ok_or_else(|| anyhow!("{}: weight_map values must be file names", index.display()))
        })
        .collect::<Result<HashSet<_>>>()?
        .into_iter()
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let p = dir.join(&f);
            if p.exists() {
                Ok(p)
            } else {
                Err(anyhow!(
                    "shard {} named in {} is missing",
                    p.display(),
                    index.display()
                ))
            }
        })
        .collect()
}

fn dtype_name(dt: DType) -> &'static str {
    match dt {
        DType::F32 => "float32",
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        DType::F64 => "float64",
        _ => "unknown",
    }
}

/// Loads a local HF-layout model directory; weights are memory-mapped, cast to `dtype` and become
/// trainable Vars.
pub fn load_pretrained(dir: &Path, device: &Device, dtype: DType) -> Result<Pretrained> {
    if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16 | DType::F64) {
        bail!("unsupported compute dtype {dtype:?} (use f32, bf16, f16 or f64)");
    }
    if !dir.is_dir() {
        bail!("model directory {} does not exist", dir.display());
    }
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let st = map_weights(dir)?;

    let varmap = VarMap::new();
    let mut loaded = HashSet::new();
    {
        let mut data = varmap.data().lock().unwrap();
        for (name, view) in st.tensors() {
            let file_dtype = view.dtype();
            use safetensors::Dtype as S;
            if !matches!(file_dtype, S::F32 | S::BF16 | S::F16 | S::F64) {
                bail!("tensor {name} has unsupported dtype {file_dtype:?} (supported: F32, BF16, F16)");
            }
            let t: Tensor = st
                .load(&name, device)
                .map_err(|e| anyhow!("cannot read tensor {name}: {e}"))?
                .to_dtype(dtype)?;
            data.insert(name.clone(), Var::from_tensor(&t)?);
            loaded.insert(name);
        }
    }
    let model = Model::new(&config, VarBuilder::from_varmap(&varmap, dtype, device))
        .with_context(|| format!("weights in {} do not fit config.json", dir.display()))?;
    {
        let mut data = varmap.data().lock().unwrap();
        let mut missing: Vec<&String> = data.keys().filter(|k| !loaded.contains(*k)).collect();
        if !missing.is_empty() {
            missing.sort();
            bail!(
                "checkpoint {} is missing tensor(s): {}",
                dir.display(),
                missing
                    .iter()
                    .take(8)
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        // Tensors the model does not use (a tied lm_head copy, rotary buffers) are not trained or saved.
        let used: HashSet<String> = used_names(&config);
        data.retain(|k, _| used.contains(k));
    }
    let tokenizer = if dir.join("tokenizer.json").exists() {
        Some(Tokenizer::from_dir(dir)?)
    } else {
        None
    };
    let gc_path = dir.join("generation_config.json");
    let generation_config = if gc_path.exists() {
        let text = std::fs::read_to_string(&gc_path)
            .with_context(|| format!("cannot read {}", gc_path.display()))?;
        Some(
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", gc_path.display()))?,
        )
    } else {
        None
    };
    Ok(Pretrained {
        config,
        varmap,
        model,
        tokenizer,
        generation_config,
        dir: dir.to_path_buf(),
    })
}

impl Pretrained {
    /// The ids that end generation for this checkpoint; see [`stop_ids`].
    pub fn stop_ids(&self) -> Result<Vec<u32>> {
        stop_ids(
            &self.config,
            self.generation_config.as_ref(),
            self.tokenizer.as_ref(),
        )
    }
}

/// The one rule for where generation stops, used by `generate`, `eval` and `train`: every EOS id
/// of config.json, of generation_config.json (an int or a list: Qwen2.5-Instruct lists both
/// `<|im_end|>` and `<|endoftext|>`) and the tokenizer's EOS token, sorted and deduplicated.
pub fn stop_ids(
    config: &ModelConfig,
    generation_config: Option<&Value>,
    tokenizer: Option<&Tokenizer>,
) -> Result<Vec<u32>> {
    let mut ids = config.eos_token_id.clone();
    if let Some(v) = generation_config.and_then(|g| g.get("eos_token_id")) {
        let bad = || {
            anyhow!(
                "generation_config.json: `eos_token_id` must be a token id or a list of token \
                 ids, got {v}"
            )
        };
        let id = |x: &Value| {
            x.as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(bad)
        };
        match v {
            Value::Null => {}
            Value::Array(a) => {
                for x in a {
                    ids.push(id(x)?);
                }
            }
            x => ids.push(id(x)?),
        }
    }
    ids.extend(tokenizer.and_then(Tokenizer::eos_token_id));
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// The HF tensor names `Model::new` reads for this config.
pub fn used_names(cfg: &ModelConfig) -> HashSet<String> {
    let mut names = HashSet::new();
    names.insert("model.embed_tokens.weight".to_string());
    names.insert("model.norm.weight".to_string());
    if !cfg.tie_word_embeddings {
        names.insert("lm_head.weight".to_string());
    }
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            names.insert(format!("{p}.self_attn.{proj}.weight"));
        }
        if cfg.attention_bias {
            for proj in ["q_proj", "k_proj", "v_proj"] {
                names.insert(format!("{p}.self_attn.{proj}.bias"));
            }
        }
        if cfg.o_proj_bias {
            names.insert(format!("{p}.self_attn.o_proj.bias"));
        }
        if cfg.arch == crate::config::Arch::Qwen3 {
            names.insert(format!("{p}.self_attn.q_norm.weight"));
            names.insert(format!("{p}.self_attn.k_norm.weight"));
        }
        for proj in ["gate_proj", "up_proj", "down_proj"] {
            names.insert(format!("{p}.mlp.{proj}.weight"));
        }
        names.insert(format!("{p}.input_layernorm.weight"));
        names.insert(format!("{p}.post_attention_layernorm.weight"));
    }
    names
}

/// Writes config.json + model.safetensors (sharded above `DEFAULT_SHARD_BYTES`) in `save_dtype`,
/// plus the tokenizer and generation_config if given.
pub fn save_pretrained(
    dir: &Path,
    config: &ModelConfig,
    varmap: &VarMap,
    save_dtype: DType,
    tokenizer: Option<&Tokenizer>,
    generation_config: Option<&Value>,
) -> Result<()> {
    save_pretrained_sharded(
        dir,
        config,
        varmap,
        save_dtype,
        tokenizer,
        generation_config,
        DEFAULT_SHARD_BYTES,
    )
}

/// `save_pretrained` with an explicit shard size in bytes.
pub fn save_pretrained_sharded(
    dir: &Path,
    config: &ModelConfig,
    varmap: &VarMap,
    save_dtype: DType,
    tokenizer: Option<&Tokenizer>,
    generation_config: Option<&Value>,
    shard_bytes: usize,
) -> Result<()> {
    let weights: Vec<(String, Tensor)> = {
        let data = varmap.data().lock().unwrap();
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    };
    save_weights(
        dir,
        config,
        &weights,
        save_dtype,
        tokenizer,
        generation_config,
        shard_bytes,
    )
}

/// Writes HF tensors given by name (for instance a trainer's f32 master weights rather than the
/// model's compute weights), each rounded once to `save_dtype`; otherwise as `save_pretrained`.
pub fn save_weights(
    dir: &Path,
    config: &ModelConfig,
    weights: &[(String, Tensor)],
    save_dtype: DType,
    tokenizer: Option<&Tokenizer>,
    generation_config: Option<&Value>,
    shard_bytes: usize,
) -> Result<()> {
    if !matches!(save_dtype, DType::F32 | DType::BF16 | DType::F16) {
        bail!("unsupported save dtype {save_dtype:?} (use f32, bf16 or f16)");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cfg = config.clone();
    cfg.torch_dtype = Some(dtype_name(save_dtype).into());
    let cfg_path = dir.join("config.json");
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg.to_hf_json())?)
        .with_context(|| format!("cannot write {}", cfg_path.display()))?;

    let tensors: BTreeMap<String, Tensor> = weights
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_dtype(save_dtype)?.to_device(&Device::Cpu)?)))
        .collect::<Result<_>>()?;
    // Greedy sharding in name order.
    let mut shards: Vec<Vec<(String, Tensor)>> = vec![vec![]];
    let mut size = 0;
    let mut total = 0;
    for (name, t) in tensors {
        let bytes = t.elem_count() * save_dtype.size_in_bytes();
        if size > 0 && size + bytes > shard_bytes {
            shards.push(vec![]);
            size = 0;
        }
        size += bytes;
        total += bytes;
        shards.last_mut().unwrap().push((name, t));
    }
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    // Remove a previous layout so a directory never holds both.
    for old in std::fs::read_dir(dir)?.flatten() {
        if is_weight_file(&old.file_name().to_string_lossy()) {
            std::fs::remove_file(old.path())?;
        }
    }
    if shards.len() == 1 {
        let path = dir.join("model.safetensors");
        safetensors::serialize_to_file(shards.remove(0), Some(metadata), &path)
            .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    } else {
        let n = shards.len();
        let mut weight_map = serde_json::Map::new();
        for (i, shard) in shards.into_iter().enumerate() {
            let fname = format!("model-{:05}-of-{:05}.safetensors", i + 1, n);
            for (name, _) in &shard {
                weight_map.insert(name.clone(), json!(fname));
            }
            let path = dir.join(&fname);
            safetensors::serialize_to_file(shard, Some(metadata.clone()), &path)
                .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
        }
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            serde_json::to_string_pretty(&index)?,
        )?;
    }
    if let Some(t) = tokenizer {
        t.save(dir)?;
    }
    if let Some(g) = generation_config {
        std::fs::write(
            dir.join("generation_config.json"),
            serde_json::to_string_pretty(g)?,
        )?;
    }
    Ok(())
}

/// `~/x` as `$HOME/x` (as a shell would), so configs and experiment files can name the user's
/// cache (`~/.cache/popo/...`) without a machine's absolute path. Other paths are unchanged.
pub fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// A local directory, or a hub id (`org/name`): found in the local Hugging Face cache, or, in a
/// build with the `hub` feature, downloaded through hf-hub (into that same cache).
pub fn resolve_model_path(name_or_dir: &str) -> Result<PathBuf> {
    let p = expand_home(name_or_dir);
    if p.is_dir() {
        return Ok(p);
    }
    // A hub id looks like "org/name" and is not an existing path.
    let looks_like_hub_id = name_or_dir.split('/').count() == 2
        && !name_or_dir.starts_with('.')
        && !name_or_dir.starts_with('/');
    if looks_like_hub_id {
        if let Some(cached) = hf_cache_snapshot(name_or_dir) {
            return Ok(cached);
        }
        #[cfg(feature = "hub")]
        return download(name_or_dir);
        #[cfg(not(feature = "hub"))]
        bail!(
            "{name_or_dir:?} is not a local directory and is not in the Hugging Face cache; \
             this build cannot download models (build with `--features hub`, or run \
             `hf download {name_or_dir}` (`huggingface-cli download {name_or_dir}` with \
             huggingface_hub before 1.0), or pass a local directory)"
        );
    }
    bail!("model directory {name_or_dir} does not exist")
}

/// Downloads config, weights (single or sharded), tokenizer and generation config of a hub repo.
#[cfg(feature = "hub")]
fn download(repo: &str) -> Result<PathBuf> {
    let cache = hf_hub_cache()
        .context("no Hugging Face cache to download into: set HF_HUB_CACHE or HOME")?;
    let r = hub_api(&cache)?.model(repo.to_string());
    let get = |f: &str| {
        r.get(f).map_err(|e| {
            anyhow!("cannot download {f} of {repo} (no network, or no such repo/file?): {e}")
        })
    };
    let config = get("config.json")?;
    let dir = config
        .parent()
        .context("downloaded file has no parent directory")?
        .to_path_buf();
    if get("model.safetensors").is_err() {
        let index = get("model.safetensors.index.json")?;
        for shard in weight_files_from_index(&index)? {
            get(&shard)?;
        }
    }
    for optional in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        let _ = r.get(optional);
    }
    Ok(dir)
}

#[cfg(feature = "hub")]
fn weight_files_from_index(index: &Path) -> Result<Vec<String>> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(index)?)
        .with_context(|| format!("{} is not valid JSON", index.display()))?;
    let mut files: Vec<String> = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .context("index has no weight_map")?
        .values()
        .filter_map(|f| f.as_str().map(String::from))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// A hub client that downloads into `cache`: hf-hub's own default ignores `HF_HUB_CACHE` and
/// `XDG_CACHE_HOME` (and panics without a home directory), so files would land where popo does
/// not look. `HF_ENDPOINT` (a mirror) is honoured as huggingface_hub honours it.
#[cfg(feature = "hub")]
fn hub_api(cache: &Path) -> Result<hf_hub::api::sync::Api> {
    let mut builder =
        hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(cache.to_path_buf()));
    if let Some(endpoint) = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()) {
        builder = builder.with_endpoint(endpoint);
    }
    builder
        .build()
        .map_err(|e| anyhow!("cannot start the Hugging Face hub client: {e}"))
}

/// Downloads `file` of dataset `repo` into the hub cache `cache`, in its standard layout
/// (`datasets--org--name/snapshots/<rev>/<file>` with `refs/main`), giving up after `timeout`.
/// The path of the snapshot's copy.
#[cfg(feature = "hub")]
pub fn download_dataset_file(
    repo: &str,
    file: &str,
    cache: &Path,
    timeout: std::time::Duration,
) -> Result<PathBuf> {
    let api = hub_api(cache)?;
    let what = format!("{file} of dataset {repo}");
    let (tx, rx) = std::sync::mpsc::channel();
    let (r, f) = (repo.to_string(), file.to_string());
    // hf-hub's blocking client has no overall timeout (a stalled transfer waits for ever), so
    // the download runs on a thread of its own; one that outlives `timeout` is left behind,
    // the caller fails and the process ends. A panic in it ends the thread, not popo.
    std::thread::spawn(move || {
        let _ = tx.send(api.dataset(r).get(&f).map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(path)) => Ok(path),
        Ok(Err(e)) => bail!(
            "cannot download {what} into {} (no network, or no such dataset or file?): {e}",
            cache.display()
        ),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => bail!(
            "downloading {what} into {} took over {} s; gave up",
            cache.display(),
            timeout.as_secs()
        ),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            bail!("downloading {what} into {} failed", cache.display())
        }
    }
}

/// The standard Hugging Face hub cache, where huggingface_hub (and `hf download`) put files:
/// `$HF_HUB_CACHE` (or its older name `$HUGGINGFACE_HUB_CACHE`), `$HF_HOME/hub`,
/// `$XDG_CACHE_HOME/huggingface/hub` or `~/.cache/huggingface/hub` (models and datasets alike).
/// Empty variables count as unset.
pub fn hf_hub_cache() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface/hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")))
}

/// The newest snapshot of `repo` in the standard Hugging Face cache (`$HF_HOME/hub` or
/// `~/.cache/huggingface/hub`), if one holds a config.json.
fn hf_cache_snapshot(repo: &str) -> Option<PathBuf> {
    let hub = hf_hub_cache()?;
    let repo_dir = hub.join(format!("models--{}", repo.replace('/', "--")));
    let rev = std::fs::read_to_string(repo_dir.join("refs/main")).ok()?;
    let snap = repo_dir.join("snapshots").join(rev.trim());
    snap.join("config.json").exists().then_some(snap)
}

/// `cpu` or `cuda` / `cuda:N` (the latter needs the `cuda` feature).
pub fn device_from_str(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(|e| anyhow!("cannot open CUDA device 0: {e}")),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => {
                Device::new_cuda(i).map_err(|e| anyhow!("cannot open CUDA device {i}: {e}"))
            }
            _ => bail!("unknown device {other:?} (use cpu, cuda or cuda:N)"),
        },
    }
}

/// `f32`, `bf16`, `f16` or `f64`.
pub fn dtype_from_str(s: &str) -> Result<DType> {
    match s {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        "f64" | "float64" => Ok(DType::F64),
        other => bail!("unknown dtype {other:?} (use f32, bf16, f16 or f64)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_ids_join_config_generation_config_and_tokenizer() {
        let mut cfg = ModelConfig::qwen2_tiny(64, 16, 2, 2, 1, 32);
        cfg.eos_token_id = vec![9];
        let tok = Tokenizer::char_level("abc", &["<eos>"], None).unwrap();
        let eos = tok.eos_token_id().unwrap();
        assert_eq!(stop_ids(&cfg, None, Some(&tok)).unwrap(), vec![eos, 9]);
        // Qwen2.5-Instruct style: a list with a second EOS, in any order, with repeats.
        let g = json!({"eos_token_id": [12, 9, 12]});
        assert_eq!(
            stop_ids(&cfg, Some(&g), Some(&tok)).unwrap(),
            vec![eos, 9, 12]
        );
        let g = json!({"eos_token_id": 7, "do_sample": true});
        assert_eq!(stop_ids(&cfg, Some(&g), None).unwrap(), vec![7, 9]);
        let g = json!({"eos_token_id": null});
        assert_eq!(stop_ids(&cfg, Some(&g), None).unwrap(), vec![9]);
        for bad in [
            json!("two"),
            json!([1, -1]),
            json!(1.5),
            json!(5_000_000_000u64),
        ] {
            let g = json!({ "eos_token_id": bad });
            let e = stop_ids(&cfg, Some(&g), None).unwrap_err().to_string();
            assert!(
                e.contains("generation_config.json") && e.contains("eos_token_id"),
                "{e}"
            );
        }
    }
}
