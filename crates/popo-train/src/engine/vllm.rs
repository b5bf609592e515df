//! Rollouts from OpenAI-compatible vLLM servers (`rollout.engine = "vllm"`).
//!
//! Prompts go to `/v1/completions` as token ids and completions come back as token ids
//! (`return_tokens_as_token_ids`), so no text round trip can change a token; one request per
//! prompt with `n` samples, the prompts of a call spread over the servers and sent side by side.
//!
//! After every optimizer update the trainer calls [`Vllm::sync`], a barrier: the policy is
//! written into `rollout.weights_dir` (file by file through a temporary directory and a rename),
//! every server loads it, and every server then scores a fixed probe sequence whose log-probs
//! must match popo's own. With `rollout.sync = "reload"` the directory holds the whole model and
//! servers reload it (`/collective_rpc` `reload_weights`, which needs the servers started with
//! `VLLM_SERVER_DEV_MODE=1`); with `"lora"` it holds a LoRA run's adapter, which every server
//! loads in place under one name (`/v1/load_lora_adapter`, which needs `--enable-lora` and
//! `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`), and requests then name the adapter. A server that still answers with its old probe, or that
//! differs from popo by more than `rollout.sync_tol`, is an error, never an off-policy step.

use super::config::{EngineConfig, SyncMode};
use super::http::{ServerError, Servers};
use super::Engine;
use crate::lm::{Completion, FinishReason, SamplingParams};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Requests in flight per server: enough for vLLM's scheduler to batch a step's prompts.
const INFLIGHT_PER_SERVER: usize = 16;
/// The name of the temporary directory inside `weights_dir` that a sync writes first.
const SYNC_TMP: &str = ".popo-sync-tmp";
/// The name a LoRA run's adapter is served under (`rollout.sync = "lora"`).
pub const ADAPTER_NAME: &str = "popo-policy";

pub struct Vllm {
    servers: Servers,
    model: String,
    weights_dir: PathBuf,
    sync_mode: SyncMode,
    /// The adapter requests name once a `lora` sync has loaded it.
    adapter: Option<String>,
    sync_tol: f64,
    /// Each server's probe log-probs at the last sync, and popo's.
    last: Vec<Option<Vec<f32>>>,
    last_popo: Option<Vec<f32>>,
}

/// What a sync measured.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncReport {
    /// The largest, over servers, mean |log-prob difference| on the probe.
    pub abs_diff: f64,
    pub seconds: f64,
}

impl Vllm {
    /// Reaches every server (an error naming the URL of any that does not answer) and learns
    /// the served model's name.
    pub fn connect(cfg: &EngineConfig) -> Result<Self> {
        let servers = Servers::new(&cfg.servers, cfg.timeout(), cfg.max_retries);
        let mut model = cfg.served_model.clone();
        for s in 0..servers.len() {
            let v = servers.get(s, "/v1/models", "list models").map_err(|e| {
                anyhow::anyhow!(
                    "rollout.servers: vLLM server {} does not answer ({}); start it on \
                     rollout.weights_dir with VLLM_SERVER_DEV_MODE=1 (docs/guide.md, \"The vLLM engine\")",
                    e.server,
                    e.cause
                )
            })?;
            let ids = served_ids(&v);
            if model.is_empty() {
                model = ids.first().cloned().with_context(|| {
                    format!(
                        "vLLM server {} lists no model at /v1/models",
                        servers.url(s)
                    )
                })?;
            }
            if !ids.contains(&model) {
                bail!(
                    "rollout.served_model: vLLM server {} serves {ids:?}, not `{model}`",
                    servers.url(s)
                );
            }
        }
        Ok(Self {
            last: vec![None; servers.len()],
            servers,
            model,
            weights_dir: popo_model::expand_home(&cfg.weights_dir),
            sync_mode: cfg.sync,
            adapter: None,
            sync_tol: cfg.sync_tol,
            last_popo: None,
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The model requests name: the adapter once loaded, else the served model.
    fn served(&self) -> &str {
        self.adapter.as_deref().unwrap_or(&self.model)
    }

    /// Puts every server on the policy: `write` writes it as an HF directory, or a LoRA run's
    /// adapter directory (into a temporary directory that is then published into
    /// `rollout.weights_dir`), every server loads it, and every server's log-probs of `probe` must match `popo_probe`, popo's own (one per token
    /// after the first, at temperature 1).
    pub fn sync(
        &mut self,
        probe: &[u32],
        popo_probe: &[f32],
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<SyncReport> {
        let start = Instant::now();
        publish(&self.weights_dir, write)?;
        let (path, body, request) = self.load_request()?;
        self.on_every_server(|s| self.servers.post(s, path, &body, request).map(|_| ()))?;
        if self.sync_mode == SyncMode::Lora {
            self.adapter = Some(ADAPTER_NAME.to_string());
        }
        let answers = self.on_every_server(|s| self.probe(s, probe))?;
        let mut worst = 0.0f64;
        for (s, lp) in answers.into_iter().enumerate() {
            let diff = check_probe(
                self.servers.url(s),
                &lp,
                popo_probe,
                self.last[s].as_deref(),
                self.last_popo.as_deref(),
                self.sync_tol,
            )?;
            worst = worst.max(diff);
            self.last[s] = Some(lp);
        }
        self.last_popo = Some(popo_probe.to_vec());
        Ok(SyncReport {
            abs_diff: worst,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// The call that makes a server load what `publish` wrote: path, body, and its name in errors.
    fn load_request(&self) -> Result<(&'static str, Value, &'static str)> {
        Ok(match self.sync_mode {
            SyncMode::Reload => (
                "/collective_rpc",
                json!({"method": "reload_weights"}),
                "reload_weights",
            ),
            // The servers read the adapter from this path: absolute, so that a server started
            // in another directory finds it. In place: the same name, new weights.
            SyncMode::Lora => {
                let dir = std::fs::canonicalize(&self.weights_dir).with_context(|| {
                    format!("rollout.weights_dir {}", self.weights_dir.display())
                })?;
                (
                    "/v1/load_lora_adapter",
                    json!({
                        "lora_name": ADAPTER_NAME,
                        "lora_path": dir.to_string_lossy(),
                        "load_inplace": true,
                    }),
                    "load_lora_adapter",
                )
            }
        })
    }

    /// Runs `call` for every server side by side; the first failure (in server order) is the
    /// error. No retry elsewhere: each server must answer for itself.
    fn on_every_server<T: Send>(
        &self,
        call: impl Fn(usize) -> Result<T, ServerError> + Sync,
    ) -> Result<Vec<T>, ServerError> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..self.servers.len())
                .map(|s| {
                    let call = &call;
                    scope.spawn(move || call(s))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a server call panicked"))
                .collect()
        })
    }

    /// Server `s`'s log-probs of every token of `probe` after the first (prompt log-probs).
    fn probe(&self, s: usize, probe: &[u32]) -> Result<Vec<f32>, ServerError> {
        let body = json!({
            "model": self.served(),
            "prompt": probe,
            "max_tokens": 1,
            "temperature": 1.0,
            "prompt_logprobs": 0,
        });
        let v = self
            .servers
            .post(s, "/v1/completions", &body, "sync probe")?;
        parse_prompt_logprobs(&v, probe).map_err(|cause| ServerError {
            server: self.servers.url(s).to_string(),
            request: "sync probe".into(),
            cause,
            retryable: false,
        })
    }

    /// One prompt's `params.n` samples, from server `first` or, after failures, the next ones.
    fn one(&self, i: usize, prompt: &[u32], params: &SamplingParams) -> Result<Vec<Completion>> {
        let body = completion_body(self.served(), prompt, params, prompt_seed(params.seed, i));
        let request = format!("generate prompt {i} ({} samples)", params.n);
        let first = i % self.servers.len();
        let v = self
            .servers
            .post_retrying(first, "/v1/completions", &body, &request)?;
        parse_completions(&v, i, params.n).map_err(|cause| {
            ServerError {
                server: self.servers.url(first).to_string(),
                request,
                cause,
                retryable: false,
            }
            .into()
        })
    }
}

impl Engine for Vllm {
    fn generate(&self, prompts: &[Vec<u32>], params: &SamplingParams) -> Result<Vec<Completion>> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<Option<Result<Vec<Completion>>>>> =
            Mutex::new((0..prompts.len()).map(|_| None).collect());
        let workers = (self.servers.len() * INFLIGHT_PER_SERVER).min(prompts.len());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    // After a failure no new request starts: the step stops anyway.
                    if i >= prompts.len() || failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let r = self.one(i, &prompts[i], params);
                    failed.fetch_or(r.is_err(), Ordering::SeqCst);
                    results.lock().expect("results lock")[i] = Some(r);
                });
            }
        });
        let mut out = Vec::with_capacity(prompts.len() * params.n);
        let mut first_error = None;
        // Prompts skipped after a failure hold None; the failure itself is reported.
        for r in results
            .into_inner()
            .expect("results lock")
            .into_iter()
            .flatten()
        {
            match r {
                Ok(c) => out.extend(c),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(out)
    }
}

/// The model ids of a `/v1/models` answer.
fn served_ids(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A seed per prompt from the call's, so that prompts sent to different servers draw
/// different samples, and the same call draws the same ones (vLLM seeds a request's own RNG).
fn prompt_seed(seed: u64, i: usize) -> u64 {
    let mut z = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    // vLLM reads the seed as a signed 64-bit integer.
    (z ^ (z >> 31)) >> 1
}

/// The `/v1/completions` request for one prompt, with popo's sampling parameters: the same
/// temperature, top-p, top-k, min-p and limit, and stopping at popo's stop ids only (vLLM's own
/// EOS rule is off, so an EOS popo does not stop at does not stop vLLM either).
pub fn completion_body(model: &str, prompt: &[u32], p: &SamplingParams, seed: u64) -> Value {
    let mut body = json!({
        "model": model,
        "prompt": prompt,
        "n": p.n,
        "max_tokens": p.max_new_tokens,
        "temperature": if p.greedy { 0.0 } else { p.temperature },
        "top_p": p.top_p,
        "top_k": if p.top_k == 0 { -1 } else { p.top_k as i64 },
        "min_p": p.min_p,
        "seed": seed,
        "logprobs": 0,
        "return_tokens_as_token_ids": true,
        "stop_token_ids": p.stop_token_ids,
        "ignore_eos": true,
        "skip_special_tokens": false,
    });
    if !p.stop_strings.is_empty() {
        body["stop"] = json!(p.stop_strings);
    }
    body
}

/// `token_id:123` -> 123.
fn token_id(s: &str) -> Option<u32> {
    s.strip_prefix("token_id:")?.parse().ok()
}

/// The `n` choices of one prompt's answer as completions of prompt `i`, in sample order.
pub fn parse_completions(v: &Value, i: usize, n: usize) -> Result<Vec<Completion>, String> {
    let choices = v["choices"]
        .as_array()
        .ok_or("no `choices` in the answer")?;
    if choices.len() != n {
        return Err(format!("{} choices for n = {n}", choices.len()));
    }
    let mut out: Vec<Completion> = Vec::with_capacity(n);
    for (k, c) in choices.iter().enumerate() {
        let lp = &c["logprobs"];
        let tokens = lp["tokens"]
            .as_array()
            .ok_or("a choice has no `logprobs.tokens` (was `logprobs` refused?)")?
            .iter()
            .map(|t| t.as_str().and_then(token_id))
            .collect::<Option<Vec<u32>>>()
            .ok_or("a token is not `token_id:N` (the server ignored return_tokens_as_token_ids)")?;
        let logprobs = lp["token_logprobs"]
            .as_array()
            .ok_or("a choice has no `logprobs.token_logprobs`")?
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect::<Option<Vec<f32>>>()
            .ok_or("a token log-prob is not a number")?;
        if logprobs.len() != tokens.len() {
            return Err(format!(
                "{} log-probs for {} tokens",
                logprobs.len(),
                tokens.len()
            ));
        }
        let finish_reason = match c["finish_reason"].as_str() {
            Some("length") => FinishReason::Length,
            Some("stop") => FinishReason::Stop,
            other => return Err(format!("finish_reason {other:?}")),
        };
        let sample_index = c["index"].as_u64().map_or(k, |x| x as usize);
        out.push(Completion {
            prompt_index: i,
            sample_index,
            tokens,
            logprobs,
            finish_reason,
        });
    }
    out.sort_by_key(|c| c.sample_index);
    Ok(out)
}

/// The log-prob of each token of `probe` after the first, from a `prompt_logprobs` answer (a
/// list with `null` first, then one `{token id: {logprob}}` map per position).
pub fn parse_prompt_logprobs(v: &Value, probe: &[u32]) -> Result<Vec<f32>, String> {
    let per_pos = v["choices"][0]["prompt_logprobs"]
        .as_array()
        .ok_or("no `choices[0].prompt_logprobs` in the answer")?;
    if per_pos.len() != probe.len() {
        return Err(format!(
            "{} prompt log-probs for {} tokens",
            per_pos.len(),
            probe.len()
        ));
    }
    probe
        .iter()
        .zip(per_pos)
        .skip(1)
        .map(|(id, m)| {
            let m = m
                .as_object()
                .ok_or("a prompt log-prob entry is not a map")?;
            let e = m
                .get(&id.to_string())
                .or_else(|| m.get(&format!("token_id:{id}")))
                .ok_or_else(|| format!("no log-prob for probe token {id}"))?;
            e["logprob"]
                .as_f64()
                .map(|f| f as f32)
                .ok_or_else(|| format!("log-prob of token {id} is not a number"))
        })
        .collect()
}

/// Mean |server - popo| on the probe, or the error that stops the run: a server whose answer
/// is bit for bit the one it gave at the last sync while popo's own log-probs moved has not
/// loaded the new weights; one that differs by more than `tol` runs other weights.
pub fn check_probe(
    server: &str,
    theirs: &[f32],
    popo: &[f32],
    their_last: Option<&[f32]>,
    popo_last: Option<&[f32]>,
    tol: f64,
) -> Result<f64, ServerError> {
    let fail = |cause: String| ServerError {
        server: server.to_string(),
        request: "sync probe".into(),
        cause,
        retryable: false,
    };
    if theirs.len() != popo.len() || theirs.is_empty() {
        return Err(fail(format!(
            "{} probe log-probs for {} tokens",
            theirs.len(),
            popo.len()
        )));
    }
    let diff = theirs
        .iter()
        .zip(popo)
        .map(|(&a, &b)| (a as f64 - b as f64).abs())
        .sum::<f64>()
        / popo.len() as f64;
    if let (Some(tl), Some(pl)) = (their_last, popo_last) {
        if tl == theirs && pl != popo {
            return Err(fail(
                "still runs the old weights after reload_weights (its probe log-probs did not move; popo's did)".into(),
            ));
        }
    }
    if diff.is_nan() || diff > tol {
        return Err(fail(format!(
            "runs other weights than popo's: mean |log-prob difference| {diff:.4} on the probe > \
             rollout.sync_tol = {tol} (is it serving rollout.weights_dir, in the policy's dtype?)"
        )));
    }
    Ok(diff)
}

/// Writes the policy into `dir` without a reader ever seeing a half-written file: `write` fills
/// `dir/.popo-sync-tmp`, whose files are fsynced and renamed into `dir` one by one (each rename
/// atomic), then weight files the new layout lacks are removed.
pub fn publish(dir: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = dir.join(SYNC_TMP);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("writing the policy into {}", tmp.display())));
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&tmp)? {
        let path = entry?.path();
        // Readable by servers running as another user (safetensors creates its files 0600).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .with_context(|| format!("making {} readable", path.display()))?;
        }
        std::fs::File::open(&path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", path.display()))?;
        names.push(path.file_name().unwrap_or_default().to_owned());
    }
    // Weights last, so a server that reloads early never pairs new weights with an old index.
    names.sort_by_key(|n| n.to_string_lossy().ends_with(".safetensors"));
    for name in &names {
        std::fs::rename(tmp.join(name), dir.join(name)).with_context(|| {
            format!(
                "publishing {} into {}",
                name.to_string_lossy(),
                dir.display()
            )
        })?;
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let n = name.to_string_lossy();
        let weights = n.ends_with(".safetensors") || n == "model.safetensors.index.json";
        if weights && !names.contains(&name) {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing stale {}", entry.path().display()))?;
        }
    }
    std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    crate::checkpoint::sync_dir(dir)
}

/// Fills an empty (or missing) `weights_dir` with the files of `model_dir`, the model the
/// servers start on, its head written out when tied (`popo_model::untie`: vLLM's CPU build would
/// not refresh a tied head on reload); a directory that holds anything is left alone, and
/// `model_dir` is only ever read. Through a temporary directory, so an interrupted copy is never
/// taken for a model.
pub fn seed_weights_dir(weights_dir: &Path, model_dir: &Path) -> Result<bool> {
    let empty = match std::fs::read_dir(weights_dir) {
        Ok(mut it) => it.next().is_none(),
        Err(_) => true,
    };
    if !empty {
        return Ok(false);
    }
    std::fs::create_dir_all(weights_dir)
        .with_context(|| format!("creating rollout.weights_dir {}", weights_dir.display()))?;
    publish(weights_dir, |tmp| {
        popo_model::untie::copy_untied(model_dir, tmp)?;
        Ok(())
    })?;
    Ok(true)
}

#[cfg(test)]
#[path = "vllm_tests.rs"]
mod tests;
