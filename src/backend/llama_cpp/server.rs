//! `llama-server` as a backend: started on 127.0.0.1 on a free port, health-checked, always stopped
//! (on drop, so also on failure or panic; and the kernel kills it if this process dies, via
//! `PR_SET_PDEATHSIG`). Generation through `/completion` with the prompt as token ids, temperature
//! 0, a fixed seed, prompt cache off and a fixed `n_predict` with EOS ignored; prefill and decode
//! times are the server's own `timings` (`prompt_ms`, `predicted_ms`).
//!
//! **Full recompute** ([`Backend::full_recompute_tokens`]): one `/completion` request per token with
//! `n_predict = 1` over the growing sequence, the prompt cache off (`cache_prompt: false`, so the
//! server's slot starts from position 0: llama-server's `n_past = 0` branch) and the same sampling
//! fields as generation ([`completion_body`]). Each reply's `timings.prompt_n` must equal the length
//! sent — the proof that the whole sequence was evaluated in one batch and no cached KV was reused.

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::setup::LlamaCppBuild;
use crate::accuracy::{PerplexityProtocol, PerplexityResult};
use crate::backend::{Backend, BackendInfo, Generation, MemoryTraffic, Recompute, TimingSource};
use crate::error::BackendError;

const SEED: u64 = 42;

/// A running `llama-server`; stopped when dropped.
pub struct LlamaServer {
    child: Child,
    base_url: String,
    client: reqwest::blocking::Client,
    log_path: PathBuf,
    _log_dir: tempfile::TempDir,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LlamaServer {
    /// `gpu_layers`: `-ngl` (layers offloaded to the GPU; `None` leaves llama.cpp's default).
    pub fn start(
        build: &LlamaCppBuild,
        model: &Path,
        threads: usize,
        context: usize,
        id: &str,
        gpu_layers: Option<u32>,
    ) -> Result<Self, BackendError> {
        Self::start_with(build, model, threads, context, id, gpu_layers, &[])
    }

    /// As [`start`](Self::start), with extra `llama-server` arguments (e.g. `["-ub", "1"]`).
    pub fn start_with(
        build: &LlamaCppBuild,
        model: &Path,
        threads: usize,
        context: usize,
        id: &str,
        gpu_layers: Option<u32>,
        extra_args: &[&str],
    ) -> Result<Self, BackendError> {
        let load = |d: String| BackendError::load(id, d);
        let port = free_port().map_err(|e| load(format!("no free port on 127.0.0.1: {e}")))?;
        let log_dir = tempfile::tempdir().map_err(|e| load(e.to_string()))?;
        let log_path = log_dir.path().join("llama-server.log");
        let log = std::fs::File::create(&log_path).map_err(|e| load(e.to_string()))?;
        let mut cmd = Command::new(&build.llama_server);
        cmd.arg("-m")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "-t",
                &threads.to_string(),
                "-c",
                &context.to_string(),
                "--parallel",
                "1",
                "--no-webui",
                // Log verbosity 4 keeps llama.cpp's model-load lines (`offloaded N/M layers to GPU`,
                // `<buffer> model buffer size`), the evidence of where the weights went; it adds
                // about 20 lines per request, none per token.
                "-lv",
                "4",
            ])
            .args(
                gpu_layers
                    .map(|n| ["-ngl".to_string(), n.to_string()])
                    .into_iter()
                    .flatten(),
            )
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| load(e.to_string()))?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child when this
        // process exits, so a crashed or killed test leaves no server behind.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            load(format!(
                "cannot start {}: {e}",
                build.llama_server.display()
            ))
        })?;
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| load(e.to_string()))?;
        let mut server = LlamaServer {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            client,
            log_path,
            _log_dir: log_dir,
        };
        server
            .wait_healthy(Duration::from_secs(120))
            .map_err(load)?;
        Ok(server)
    }

    /// The whole server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn wait_healthy(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "llama-server exited ({status}) before becoming healthy:\n{}",
                    self.log_tail()
                ));
            }
            let ok = self
                .client
                .get(format!("{}/health", self.base_url))
                .timeout(Duration::from_secs(2))
                .send()
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(format!(
                    "llama-server not healthy after {limit:?}:\n{}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `POST /completion` with `body` as is, the reply as JSON (for checks of the server itself; the
    /// backend builds its bodies with [`completion_body`]).
    pub fn completion(&self, body: &serde_json::Value) -> Result<serde_json::Value, String> {
        self.post("/completion", body)
    }

    fn post(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, String> {
        let resp = self
            .client
            .post(format!("{}{path}", self.base_url))
            .json(body)
            .send()
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let text = resp.text().map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{path} returned {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{path}: invalid JSON ({e}): {text}"))
    }

    fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        let resp = self
            .client
            .get(format!("{}{path}", self.base_url))
            .send()
            .map_err(|e| e.to_string())?;
        resp.json().map_err(|e| e.to_string())
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `timings` object of a `/completion` response.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerTimings {
    pub prompt_n: usize,
    pub prompt_ms: f64,
    pub predicted_n: usize,
    pub predicted_ms: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionResponse {
    #[serde(default)]
    pub tokens: Vec<u32>,
    pub timings: ServerTimings,
    /// One entry per generated token when the request asked for `n_probs > 0`.
    #[serde(default)]
    pub completion_probabilities: Vec<TokenProbabilities>,
}

/// A generated token with the most likely candidates at its position, log-probabilities from the
/// softmax of the raw logits (before sampling: `post_sampling_probs` off), so the difference of two
/// log-probabilities is the difference of their logits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TokenProbabilities {
    pub id: u32,
    pub logprob: f64,
    #[serde(default)]
    pub top_logprobs: Vec<Candidate>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Candidate {
    pub id: u32,
    pub logprob: f64,
}

impl TokenProbabilities {
    /// Logit of the chosen token minus the best other candidate's (`None` with fewer than two
    /// candidates): how far a numerics difference must move the logits to change a greedy choice.
    pub fn margin(&self) -> Option<f64> {
        let chosen = self
            .top_logprobs
            .iter()
            .find(|c| c.id == self.id)
            .map_or(self.logprob, |c| c.logprob);
        self.top_logprobs
            .iter()
            .filter(|c| c.id != self.id)
            .map(|c| c.logprob)
            .reduce(f64::max)
            .map(|other| chosen - other)
    }
}

/// The `/completion` request every call sends: `prompt` as token ids, `n_predict` tokens, greedy
/// (temperature 0, top-k 1), a fixed seed, repetition penalties off, EOS ignored (its logit biased to
/// −∞, so generation and recompute choose among the same tokens), prompt cache off, and the top
/// `n_probs` candidates per token (0 = none) reported before sampling.
pub fn completion_body(prompt: &[u32], n_predict: usize, n_probs: usize) -> serde_json::Value {
    serde_json::json!({
        "prompt": prompt,
        "n_predict": n_predict,
        "temperature": 0.0,
        "top_k": 1,
        "seed": SEED,
        "repeat_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "dry_multiplier": 0.0,
        "cache_prompt": false,
        "ignore_eos": true,
        "return_tokens": true,
        "n_probs": n_probs,
        "post_sampling_probs": false,
        "stream": false,
    })
}

/// One step of the full recompute: the greedy token after `sequence`, computed from all of it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecomputeStep {
    pub token: u32,
    /// The candidates at this position, when asked for.
    pub probabilities: Option<TokenProbabilities>,
}

/// Turn a `/completion` response into a [`Generation`]; `wall_ms` is the HTTP round trip.
pub fn generation_from(resp: &CompletionResponse, gen_tokens: usize, wall_ms: f64) -> Generation {
    let t = &resp.timings;
    Generation {
        prompt_tokens: t.prompt_n,
        tokens: resp.tokens.clone(),
        prefill_ms: t.prompt_ms,
        decode_ms: t.predicted_ms,
        e2e_ms: wall_ms.max(t.prompt_ms + t.predicted_ms),
        decode_steps: t.predicted_n.saturating_sub(1).min(gen_tokens),
        timing_source: TimingSource::Engine,
        cold_start_ms: None,
        cached_prompt_tokens: None,
        early_stop: None,
    }
}

/// Layers llama.cpp offloads to the GPU for the CUDA backend id: all of them.
pub const ALL_LAYERS: u32 = 99;

pub struct LlamaCppBackend {
    info: BackendInfo,
    server: LlamaServer,
    n_params: Option<u64>,
    memory_traffic: Option<MemoryTraffic>,
    build: LlamaCppBuild,
    gguf: PathBuf,
    gpu_layers: Option<u32>,
}

/// Where llama.cpp put the model, read from its load log: `offloaded N/M layers to GPU` and the
/// `<buffer> model buffer size = X MiB` lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    pub offloaded: Option<(u32, u32)>,
    /// Buffer name (`CUDA0`, `CPU_Mapped`, `CPU`) → MiB.
    pub model_buffers: std::collections::BTreeMap<String, f64>,
}

impl Placement {
    pub fn parse(log: &str) -> Placement {
        let mut p = Placement::default();
        for line in log.lines() {
            if let Some(rest) = line.split("offloaded ").nth(1) {
                if let Some((n, m)) = rest
                    .split_whitespace()
                    .next()
                    .and_then(|f| f.split_once('/'))
                {
                    if let (Ok(n), Ok(m)) = (n.parse(), m.parse()) {
                        p.offloaded = Some((n, m));
                    }
                }
            }
            if let Some((left, right)) = line.split_once(" model buffer size =") {
                let name = left.rsplit(':').next().unwrap_or(left).trim().to_string();
                let mib = right
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<f64>().ok());
                if let (false, Some(mib)) = (name.is_empty(), mib) {
                    p.model_buffers.insert(name, mib);
                }
            }
        }
        p
    }

    /// Layers per device (`cuda:0` for `CUDA0` offload, `cpu` for the rest) for the evidence.
    pub fn layers_by_device(&self) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        match self.offloaded {
            Some((n, total)) => {
                let gpu = self
                    .model_buffers
                    .keys()
                    .find_map(|b| b.strip_prefix("CUDA"))
                    .map_or_else(|| "gpu".to_string(), |i| format!("cuda:{i}"));
                if n > 0 {
                    m.insert(gpu, n as usize);
                }
                if total > n {
                    m.insert("cpu".into(), (total - n) as usize);
                }
            }
            None if !self.model_buffers.is_empty() => {
                // A build without GPU backends reports no offload line: everything is on the CPU.
                m.insert("cpu".into(), 1);
            }
            None => {}
        }
        m
    }
}

/// What a llama.cpp decode step reads: every GGUF tensor in its stored type, except `token_embd`
/// when the model has its own `output.weight` (then the embedding is only row-gathered); the KV cache
/// in llama.cpp's default f16.
pub fn gguf_memory_traffic(gguf: &crate::model::GgufFile) -> Option<MemoryTraffic> {
    let config = crate::model::LlamaConfig::from_gguf(gguf).ok()?;
    let tied = gguf.tensor_info("output.weight").is_err();
    let mut weight_bytes = 0u64;
    for t in &gguf.tensors {
        let bytes = gguf.tensor_bytes(t).ok()?.len() as u64;
        let rows = t.dims.get(1).copied().unwrap_or(1).max(1);
        weight_bytes += if t.name == "token_embd.weight" && !tied {
            bytes / rows
        } else {
            bytes
        };
    }
    Some(MemoryTraffic {
        weight_bytes_per_token: weight_bytes,
        kv_bytes_per_position: 2
            * (config.n_layers * config.n_kv_heads * config.head_dim()) as u64
            * 2,
    })
}

impl LlamaCppBackend {
    /// `gpu_layers`: `-ngl` for the server and `llama-perplexity` (`None` on the CPU build).
    pub fn open(
        id: &str,
        build: &LlamaCppBuild,
        gguf: &Path,
        precision: &str,
        gpu_layers: Option<u32>,
    ) -> Result<Self, BackendError> {
        Self::open_configured(id, build, gguf, precision, gpu_layers, None, &[])
    }

    /// [`LlamaCppBackend::open`] with the server's thread count (`None`: every core).
    pub fn open_with_threads(
        id: &str,
        build: &LlamaCppBuild,
        gguf: &Path,
        precision: &str,
        gpu_layers: Option<u32>,
        threads: Option<usize>,
    ) -> Result<Self, BackendError> {
        Self::open_configured(id, build, gguf, precision, gpu_layers, threads, &[])
    }

    /// As [`open`](Self::open), with extra `llama-server` arguments. `["-ub", "1"]` makes the server
    /// evaluate every prompt one token at a time, with the single-token kernels of the decode loop:
    /// its full recompute then isolates the KV cache from the batched-prefill arithmetic.
    pub fn open_with(
        id: &str,
        build: &LlamaCppBuild,
        gguf: &Path,
        precision: &str,
        gpu_layers: Option<u32>,
        extra_server_args: &[&str],
    ) -> Result<Self, BackendError> {
        Self::open_configured(
            id,
            build,
            gguf,
            precision,
            gpu_layers,
            None,
            extra_server_args,
        )
    }

    fn open_configured(
        id: &str,
        build: &LlamaCppBuild,
        gguf: &Path,
        precision: &str,
        gpu_layers: Option<u32>,
        threads: Option<usize>,
        extra_server_args: &[&str],
    ) -> Result<Self, BackendError> {
        let threads =
            threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let server = LlamaServer::start_with(
            build,
            gguf,
            threads,
            2048,
            id,
            gpu_layers,
            extra_server_args,
        )?;
        let n_params = server
            .get("/v1/models")
            .ok()
            .and_then(|v| v["data"][0]["meta"]["n_params"].as_u64());
        let info = BackendInfo {
            id: id.into(),
            engine: "llama.cpp".into(),
            engine_version: build.version.clone(),
            location: build.bin_dir.display().to_string(),
            device: if gpu_layers.is_some_and(|n| n > 0) {
                "cuda:0".into()
            } else {
                "cpu".into()
            },
            precision: precision.into(),
        };
        let memory_traffic = crate::model::GgufFile::open(gguf)
            .ok()
            .as_ref()
            .and_then(gguf_memory_traffic);
        Ok(LlamaCppBackend {
            info,
            server,
            n_params,
            memory_traffic,
            build: build.clone(),
            gguf: gguf.to_path_buf(),
            gpu_layers,
        })
    }

    pub fn server(&self) -> &LlamaServer {
        &self.server
    }
}

impl LlamaCppBackend {
    /// One untimed `/completion` request ([`completion_body`]) that must evaluate the whole of
    /// `prompt` (no cached KV reused) and return `n_predict` tokens.
    pub fn complete(
        &self,
        prompt: &[u32],
        n_predict: usize,
        n_probs: usize,
        what: &str,
    ) -> Result<CompletionResponse, BackendError> {
        let value = self
            .server
            .post("/completion", &completion_body(prompt, n_predict, n_probs))
            .map_err(|e| BackendError::run(&self.info.id, what, e))?;
        let resp: CompletionResponse = serde_json::from_value(value).map_err(|e| {
            BackendError::run(
                &self.info.id,
                what,
                format!("unexpected /completion response: {e}"),
            )
        })?;
        self.check_full(&resp, prompt.len(), n_predict, n_probs)?;
        Ok(resp)
    }

    fn check_full(
        &self,
        resp: &CompletionResponse,
        prompt_len: usize,
        n_predict: usize,
        n_probs: usize,
    ) -> Result<(), BackendError> {
        let broken = |detail: String| BackendError::Invariant {
            backend: self.info.id.clone(),
            detail,
        };
        if resp.timings.prompt_n != prompt_len {
            return Err(broken(format!(
                "server evaluated {} prompt tokens, sent {prompt_len} (prompt cache must be off)",
                resp.timings.prompt_n
            )));
        }
        if resp.tokens.len() != n_predict {
            return Err(broken(format!(
                "server returned {} tokens for n_predict = {n_predict} with EOS ignored",
                resp.tokens.len()
            )));
        }
        if n_probs > 0 && resp.completion_probabilities.len() != n_predict {
            return Err(broken(format!(
                "server returned candidates for {} of {n_predict} tokens",
                resp.completion_probabilities.len()
            )));
        }
        Ok(())
    }

    /// The full recompute, step by step: for each of `gen_tokens` positions, one request with
    /// `n_predict = 1` over `prompt` + the tokens so far, prompt cache off. With `n_probs > 0` each
    /// step also carries the top candidates (for a margin when cached and recomputed tokens differ).
    pub fn recompute_steps(
        &self,
        prompt: &[u32],
        gen_tokens: usize,
        n_probs: usize,
    ) -> Result<Vec<RecomputeStep>, BackendError> {
        let mut sequence = prompt.to_vec();
        let mut steps = Vec::with_capacity(gen_tokens);
        for _ in 0..gen_tokens {
            let resp = self.complete(&sequence, 1, n_probs, "full recompute")?;
            let token = resp.tokens[0];
            sequence.push(token);
            steps.push(RecomputeStep {
                token,
                probabilities: resp.completion_probabilities.into_iter().next(),
            });
        }
        Ok(steps)
    }
}

impl Backend for LlamaCppBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn generate(&mut self, prompt: &[u32], gen_tokens: usize) -> Result<Generation, BackendError> {
        let body = completion_body(prompt, gen_tokens, 0);
        let start = Instant::now();
        let value = self
            .server
            .post("/completion", &body)
            .map_err(|e| BackendError::run(&self.info.id, "generate", e))?;
        let wall_ms = start.elapsed().as_secs_f64() * 1e3;
        let resp: CompletionResponse = serde_json::from_value(value).map_err(|e| {
            BackendError::run(
                &self.info.id,
                "generate",
                format!("unexpected /completion response: {e}"),
            )
        })?;
        if resp.timings.prompt_n != prompt.len() {
            return Err(BackendError::Invariant {
                backend: self.info.id.clone(),
                detail: format!(
                    "server evaluated {} prompt tokens, sent {} (prompt cache must be off)",
                    resp.timings.prompt_n,
                    prompt.len()
                ),
            });
        }
        Ok(generation_from(&resp, gen_tokens, wall_ms))
    }

    fn loaded_parameter_count(&self) -> Option<u64> {
        self.n_params
    }

    fn memory_traffic(&self) -> Option<MemoryTraffic> {
        self.memory_traffic
    }

    /// One request per token over the growing sequence, prompt cache off; see the module docs.
    fn full_recompute_tokens(
        &mut self,
        prompt: &[u32],
        gen_tokens: usize,
    ) -> Result<Recompute, BackendError> {
        let steps = self.recompute_steps(prompt, gen_tokens, 0)?;
        Ok(Recompute::Tokens(
            steps.into_iter().map(|s| s.token).collect(),
        ))
    }

    /// Where the server put the layers, from its own load log (not from `-ngl`).
    fn evidence(&mut self) -> Option<Result<crate::backend::evidence::Evidence, BackendError>> {
        let placement = Placement::parse(&self.server.log());
        let mut e = crate::backend::evidence::Evidence {
            requested: vec![format!(
                "{} (-ngl {})",
                self.info.device,
                self.gpu_layers
                    .map_or_else(|| "default".into(), |n| n.to_string())
            )],
            executed_on: placement.layers_by_device(),
            ..Default::default()
        };
        e.notes.push(format!(
            "llama-server log: offloaded {:?} layers, model buffers {:?} MiB; {}",
            placement.offloaded, placement.model_buffers, self.build.version
        ));
        Some(Ok(e))
    }

    fn perplexity_native(
        &mut self,
        text: &str,
        protocol: PerplexityProtocol,
    ) -> Option<Result<PerplexityResult, BackendError>> {
        Some(
            llama_perplexity(&self.build, &self.gguf, text, protocol, self.gpu_layers)
                .map_err(|e| BackendError::run(&self.info.id, "llama-perplexity", e)),
        )
    }
}

/// Run `llama-perplexity` on `text` with infergate's protocol (same chunking and scored span) and
/// parse its final estimate.
pub fn llama_perplexity(
    build: &LlamaCppBuild,
    gguf: &Path,
    text: &str,
    protocol: PerplexityProtocol,
    gpu_layers: Option<u32>,
) -> Result<PerplexityResult, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let text_path = dir.path().join("text.txt");
    std::fs::write(&text_path, text).map_err(|e| e.to_string())?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunks = protocol.max_tokens / protocol.context;
    let out = Command::new(&build.llama_perplexity)
        .arg("-m")
        .arg(gguf)
        .arg("-f")
        .arg(&text_path)
        .args([
            "-c",
            &protocol.context.to_string(),
            "--chunks",
            &chunks.to_string(),
            "-t",
            &threads.to_string(),
        ])
        .args(["-b", &protocol.context.to_string()])
        .args(
            gpu_layers
                .map(|n| ["-ngl".to_string(), n.to_string()])
                .into_iter()
                .flatten(),
        )
        .output()
        .map_err(|e| format!("cannot run llama-perplexity: {e}"))?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_llama_perplexity(&log, protocol).ok_or_else(|| {
        let tail: Vec<&str> = log
            .lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!(
            "llama-perplexity ({}) printed no final estimate:\n{}",
            out.status,
            tail.join("\n")
        )
    })
}

/// `Final estimate: PPL = 19.3045 +/- 0.12345` and `calculating perplexity over 8 chunks`.
pub fn parse_llama_perplexity(log: &str, protocol: PerplexityProtocol) -> Option<PerplexityResult> {
    let chunks: usize = log
        .split("perplexity over ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let estimate = log.split("Final estimate: PPL = ").nth(1)?;
    let mut parts = estimate.split_whitespace();
    let ppl: f64 = parts.next()?.parse().ok()?;
    let _ = parts.next()?; // "+/-"
    let ppl_se: f64 = parts.next()?.parse().ok()?;
    let scored_tokens = chunks * (protocol.context - 1 - protocol.first_scored());
    Some(PerplexityResult {
        perplexity: ppl,
        mean_nll: ppl.ln(),
        mean_nll_std_error: ppl_se / ppl,
        perplexity_std_error: ppl_se,
        scored_tokens,
        chunks,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_timings_become_engine_phases() {
        let body = r#"{"content":"x","tokens":[1,2,3],"timings":{"prompt_n":8,"prompt_ms":12.5,"prompt_per_token_ms":1.5,"predicted_n":3,"predicted_ms":30.0}}"#;
        let r: CompletionResponse = serde_json::from_str(body).unwrap();
        let g = generation_from(&r, 3, 50.0);
        assert_eq!(
            (
                g.prompt_tokens,
                g.prefill_ms,
                g.decode_ms,
                g.e2e_ms,
                g.decode_steps
            ),
            (8, 12.5, 30.0, 50.0, 2)
        );
        assert_eq!(g.timing_source, TimingSource::Engine);
    }

    #[test]
    fn placement_is_read_from_the_load_log() {
        let cuda = "load_tensors: offloading 30 repeating layers to GPU\nload_tensors: offloaded 31/31 layers to GPU\nload_tensors:        CUDA0 model buffer size =    98.23 MiB\nload_tensors:   CPU_Mapped model buffer size =    20.25 MiB\n";
        let p = Placement::parse(cuda);
        assert_eq!(p.offloaded, Some((31, 31)));
        assert_eq!(p.model_buffers.get("CUDA0"), Some(&98.23));
        assert_eq!(
            p.layers_by_device(),
            [("cuda:0".to_string(), 31)].into_iter().collect()
        );
        let cpu = "load_tensors:   CPU_Mapped model buffer size =   118.48 MiB\n";
        let p = Placement::parse(cpu);
        assert_eq!(p.offloaded, None);
        assert_eq!(
            p.layers_by_device(),
            [("cpu".to_string(), 1)].into_iter().collect()
        );
        let partial =
            Placement::parse("offloaded 10/31 layers to GPU\nCUDA0 model buffer size = 30.0 MiB\n");
        assert_eq!(partial.layers_by_device().get("cpu"), Some(&21));
        assert!(Placement::parse("").layers_by_device().is_empty());
    }

    #[test]
    fn llama_perplexity_output_is_parsed() {
        let log = "perplexity: calculating perplexity over 8 chunks, n_ctx=512, batch_size=512, n_seq=1\n[1]18.1,[2]19.0,\nFinal estimate: PPL = 19.3045 +/- 0.41000\n";
        let p = PerplexityProtocol {
            context: 512,
            max_tokens: 4096,
        };
        let r = parse_llama_perplexity(log, p).unwrap();
        assert_eq!(
            (r.perplexity, r.chunks, r.scored_tokens),
            (19.3045, 8, 8 * 255)
        );
        assert!(parse_llama_perplexity("error: failed to load model", p).is_none());
    }
}
