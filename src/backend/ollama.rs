//! Ollama backend: `POST /api/generate` over plain HTTP (reqwest, blocking), phases from the
//! engine's own durations (Ollama's API reference: <https://github.com/ollama/ollama/blob/main/docs/api.md>).
//!
//! **Token ids in, text over the wire.** infergate's workloads are exact token-id prefixes; Ollama takes
//! text. The backend holds the catalog model's own tokenizer: [`Backend::generate`] decodes the ids to
//! text, sends it with `raw: true` (no chat template), and checks that Ollama's `prompt_eval_count`
//! equals the number of ids, so a different model or tokenizer behind `INFERGATE_OLLAMA_MODEL` fails
//! loudly instead of measuring another prompt. The trait and the runner stay id-based; callers that
//! start from text use [`OllamaBackend::generate_text`]. Ollama returns text only (raw mode returns
//! no `context`), so [`Generation::tokens`] is the reply re-tokenized with the same tokenizer — as
//! Ollama builds its own `context` — and Ollama's `eval_count` is the count of record.
//!
//! **Phases** (`TimingSource::Engine`, ns → ms): prefill = `prompt_eval_duration` (prompt forward,
//! which yields the first token); decode = `eval_duration` over `eval_count − 1` forward passes (Ollama's
//! runner counts the token sampled from the prompt's logits in `eval_count`); e2e = `total_duration`,
//! which includes `load_duration`, also reported alone as `cold_start_ms`.
//!
//! **Prompt cache.** Ollama cannot switch its prompt cache off. Versions before mid-2024 drop
//! `prompt_eval_count` on a cache hit (ollama/ollama#2068): then no prefill was measured and the run
//! fails with that reason (a degraded run) rather than carrying an invented count. Newer versions
//! report the reused tokens as `prompt_eval_cached_count`, kept as `cached_prompt_tokens`.
//!
//! **Early stop** (EOS cannot be disabled in Ollama): the reply's durations are kept as measured, and
//! [`Generation::early_stop`] records Ollama's own count and `done_reason`. The measurement layer
//! records a run that stopped short of `num_predict` as `projected` ([`crate::measure::ProjectedRun`]),
//! outside every aggregate; its projection divides `eval_duration` by `eval_count − 1`, the forward
//! passes it covers. (Ollama's runner starts the `eval_duration` clock after the prompt's forward pass
//! and counts the token sampled from the prompt's logits in `eval_count`; its API reference says
//! `eval_count` is the output tokens and `eval_duration` the time spent generating them.) A reply
//! with `done_reason: stop` at the full count is marked too: its text holds fewer tokens than
//! `eval_count`, which counts the stop token, and Ollama's count is then the count of record.
//!
//! **KV cache vs full recompute** cannot be checked through Ollama:
//! [`Backend::full_recompute_tokens`] says why ([`RECOMPUTE_NOT_CHECKABLE`]).

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use super::registry::Availability;
use super::{Backend, BackendInfo, EarlyStop, Generation, Recompute, TimingSource};
use crate::error::{BackendError, ModelError};
use crate::model::tokenizer::Tokenizer;

/// Environment variable naming the server, as Ollama's own CLI reads it.
pub const HOST_ENV: &str = "OLLAMA_HOST";
/// Used when `OLLAMA_HOST` is unset or empty.
pub const DEFAULT_HOST: &str = "127.0.0.1:11434";
/// Ollama's port when `OLLAMA_HOST` names none.
pub const DEFAULT_PORT: u16 = 11434;
/// Environment variable naming the Ollama model to run.
pub const MODEL_ENV: &str = "INFERGATE_OLLAMA_MODEL";
/// SmolLM2-135M in Ollama's library: the catalog model's family and tokenizer.
pub const DEFAULT_MODEL: &str = "smollm2:135m";
/// How long the availability probe waits for a TCP connection.
pub const PROBE_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

const ENGINE: &str = "ollama";

/// Why the KV-vs-recompute check cannot run through Ollama's API.
pub const RECOMPUTE_NOT_CHECKABLE: &str = "Ollama's /api/generate cannot switch its prompt cache off \
(the runner loads every completion with the cache on and reuses the longest common prefix), so a \
one-token request over the growing prefix is served by the same cached decode, not a recompute; and \
prompts travel as text, whose re-tokenization need not reproduce the generated ids. Check the engine \
through the `llama-cpp` backend instead";

/// Where the server is and how to ask it.
#[derive(Debug, Clone, PartialEq)]
pub struct OllamaConfig {
    /// Backend id in trial names.
    pub id: String,
    /// `http://host:port/` (with a trailing slash; endpoints are joined onto it).
    pub base_url: Url,
    /// Ollama model name (`name:tag`).
    pub model: String,
    /// Sampling seed (sampling is greedy anyway: temperature 0, top_k 1).
    pub seed: u64,
    /// How long Ollama keeps the model loaded after a request (Ollama duration syntax).
    pub keep_alive: String,
    pub connect_timeout: Duration,
    /// Whole-request limit; a cold model load counts against it.
    pub request_timeout: Duration,
}

impl OllamaConfig {
    pub fn new(base_url: Url, model: impl Into<String>) -> Self {
        OllamaConfig {
            id: ENGINE.into(),
            base_url,
            model: model.into(),
            seed: 42,
            keep_alive: "10m".into(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(300),
        }
    }

    /// `OLLAMA_HOST` (default `127.0.0.1:11434`) and `INFERGATE_OLLAMA_MODEL` (default `smollm2:135m`).
    pub fn from_env() -> Result<Self, String> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let host = var(HOST_ENV).unwrap_or_else(|| DEFAULT_HOST.into());
        let base_url = parse_host(&host).map_err(|e| format!("{HOST_ENV}: {e}"))?;
        Ok(OllamaConfig::new(
            base_url,
            var(MODEL_ENV).unwrap_or_else(|| DEFAULT_MODEL.into()),
        ))
    }

    /// `host:port` for messages.
    pub fn host(&self) -> String {
        let host = self.base_url.host_str().unwrap_or("?");
        match self.base_url.port_or_known_default() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        }
    }
}

/// Parse `OLLAMA_HOST` the way Ollama's CLI accepts it: `host`, `host:port`, `:port`, or
/// `http://host:port[/base]`. A missing host is 127.0.0.1, a missing port 11434.
pub fn parse_host(raw: &str) -> Result<Url, String> {
    let trimmed = raw.trim();
    let (scheme, rest) = match trimmed.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ("http".to_string(), trimmed),
    };
    if scheme != "http" {
        return Err(format!("`{raw}`: scheme `{scheme}` is not supported (this client speaks plain http): use host:port or http://host:port"));
    }
    let rest = if rest.is_empty() || rest.starts_with(':') {
        format!("127.0.0.1{rest}")
    } else {
        rest.to_string()
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let mut url = Url::parse(&format!("http://{rest}"))
        .map_err(|e| format!("`{raw}` is not host:port or http://host:port ({e})"))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{raw}` names no host"));
    }
    // `Url` drops an explicit `:80` (http's default), so look at what was written.
    if url.port().is_none() && !authority.ends_with(":80") {
        url.set_port(Some(DEFAULT_PORT))
            .map_err(|()| format!("`{raw}`: cannot set a port"))?;
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// The body of `POST /api/generate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    pub model: String,
    pub prompt: String,
    /// No template: the prompt text goes to the tokenizer as is.
    pub raw: bool,
    pub stream: bool,
    pub keep_alive: String,
    pub options: GenerateOptions,
}

/// Model options of a request (Ollama's Modelfile parameters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateOptions {
    pub num_predict: usize,
    pub temperature: f64,
    pub seed: u64,
    pub top_k: u32,
}

/// The non-streaming reply of `/api/generate`. Counts and durations (ns) are optional because Ollama
/// omits zero values (`omitempty`), which is how a prompt-cache hit shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateResponse {
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub response: String,
    pub done: bool,
    #[serde(default)]
    pub done_reason: Option<String>,
    #[serde(default)]
    pub total_duration: Option<u64>,
    #[serde(default)]
    pub load_duration: Option<u64>,
    #[serde(default)]
    pub prompt_eval_count: Option<u64>,
    /// Newer Ollama: prompt tokens read from the cache (`prompt_eval_duration` covers the rest).
    #[serde(default)]
    pub prompt_eval_cached_count: Option<u64>,
    #[serde(default)]
    pub prompt_eval_duration: Option<u64>,
    #[serde(default)]
    pub eval_count: Option<u64>,
    #[serde(default)]
    pub eval_duration: Option<u64>,
}

/// `GET /api/version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionResponse {
    pub version: String,
}

/// `GET /api/tags`: the models the server has locally.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagsResponse {
    #[serde(default)]
    pub models: Vec<LocalModel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalModel {
    pub name: String,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub details: Option<ModelDetails>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDetails {
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub parameter_size: Option<String>,
    #[serde(default)]
    pub quantization_level: Option<String>,
}

/// Ollama's error body: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

impl TagsResponse {
    /// The entry for `model`; a name without a tag means `:latest`, as in Ollama.
    pub fn find(&self, model: &str) -> Option<&LocalModel> {
        let norm = |n: &str| {
            if n.contains(':') {
                n.to_string()
            } else {
                format!("{n}:latest")
            }
        };
        let want = norm(model);
        self.models.iter().find(|m| norm(&m.name) == want)
    }
    pub fn names(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.name.as_str()).collect()
    }
}

fn ns_to_ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// An error with its sources (reqwest's own message omits the cause, e.g. "connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The `fix` for a model the server does not have.
fn pull_fix(model: &str) -> String {
    format!("run `ollama pull {model}`, or set {MODEL_ENV} to a model the server has")
}

/// Turn one `/api/generate` reply to a request for `requested` tokens into a [`Generation`] of what was
/// measured (see the module docs for the phase mapping, the cache-hit rule and early stops). `encode`
/// re-tokenizes the reply text.
pub fn generation_from_response(
    backend: &str,
    reply: &GenerateResponse,
    requested: usize,
    encode: impl Fn(&str) -> Result<Vec<u32>, ModelError>,
) -> Result<Generation, BackendError> {
    let broken = |detail: String| BackendError::Invariant {
        backend: backend.into(),
        detail,
    };
    if requested == 0 {
        return Err(BackendError::run(
            backend,
            "generate",
            "gen_tokens must be at least 1",
        ));
    }
    if !reply.done {
        return Err(broken(
            "Ollama answered a non-streaming request with done=false".into(),
        ));
    }
    let Some(prompt_tokens) = reply.prompt_eval_count.filter(|&n| n > 0) else {
        return Err(broken(
            "the prefill was served from Ollama's prompt cache: the reply has no prompt_eval_count (Ollama before mid-2024 \
             omits it on a cache hit, ollama/ollama#2068), so no prefill was measured; upgrade Ollama, or unload the model \
             between runs (keep_alive 0)"
                .into(),
        ));
    };
    let positive = |v: Option<u64>, name: &str| {
        v.filter(|&n| n > 0)
            .ok_or_else(|| broken(format!("the reply has no {name}")))
    };
    let prefill_ms = ns_to_ms(positive(
        reply.prompt_eval_duration,
        "prompt_eval_duration",
    )?);
    let generated = positive(reply.eval_count, "eval_count (no token was generated)")? as usize;
    let decode_ms = ns_to_ms(positive(reply.eval_duration, "eval_duration")?);
    let e2e_ms = ns_to_ms(positive(reply.total_duration, "total_duration")?);
    if generated > requested {
        return Err(broken(format!(
            "Ollama generated {generated} tokens with num_predict = {requested}"
        )));
    }
    let tokens = encode(&reply.response)?;
    // Stopped by the model (EOS or a stop string): the text holds fewer tokens than `eval_count`, which
    // counts the stop token; marked even when it reached the requested count.
    let stopped_itself = reply.done_reason.as_deref() == Some("stop");
    let early_stop = (generated < requested || stopped_itself).then(|| EarlyStop {
        generated_tokens: generated,
        requested_tokens: requested,
        stop_reason: reply
            .done_reason
            .clone()
            .unwrap_or_else(|| "unreported".into()),
    });
    if early_stop.is_none() && tokens.len() != generated {
        return Err(broken(format!(
            "Ollama counted {generated} generated tokens, but its text re-tokenizes to {} with the catalog model's \
             tokenizer (a different model behind {MODEL_ENV}, or a multi-byte character cut at the end)",
            tokens.len()
        )));
    }
    Ok(Generation {
        prompt_tokens: prompt_tokens as usize,
        tokens,
        prefill_ms,
        decode_ms,
        e2e_ms,
        // `eval_duration` starts after the prompt's forward pass, which produced the first of the
        // `eval_count` tokens: it covers the other `eval_count − 1` forward passes.
        decode_steps: generated - 1,
        timing_source: TimingSource::Engine,
        cold_start_ms: reply.load_duration.map(ns_to_ms),
        cached_prompt_tokens: reply
            .prompt_eval_cached_count
            .filter(|&n| n > 0)
            .map(|n| n as usize),
        early_stop,
    })
}

/// A thin client for the three endpoints the backend uses.
#[derive(Debug, Clone)]
pub struct OllamaClient {
    config: OllamaConfig,
    http: Client,
}

impl OllamaClient {
    pub fn new(config: OllamaConfig) -> Result<Self, BackendError> {
        let http = Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // The server is local (or named by OLLAMA_HOST): never route it through a proxy from the environment.
            .no_proxy()
            .build()
            .map_err(|e| BackendError::Unavailable {
                backend: config.id.clone(),
                reason: format!("HTTP client: {}", chain(&e)),
            })?;
        Ok(OllamaClient { config, http })
    }

    pub fn config(&self) -> &OllamaConfig {
        &self.config
    }

    fn url(&self, endpoint: &str) -> Result<Url, BackendError> {
        self.config
            .base_url
            .join(endpoint)
            .map_err(|e| BackendError::run(&self.config.id, endpoint, format!("bad URL: {e}")))
    }

    /// Send within `timeout`, and return the body of a 2xx reply; anything else becomes a typed,
    /// actionable error.
    fn exchange(
        &self,
        endpoint: &str,
        request: RequestBuilder,
        timeout: Duration,
    ) -> Result<String, BackendError> {
        let id = &self.config.id;
        let response = request
            .timeout(timeout)
            .send()
            .map_err(|e| self.transport_error(endpoint, &e, timeout))?;
        let status = response.status();
        let body = response
            .text()
            .map_err(|e| self.transport_error(endpoint, &e, timeout))?;
        if status.is_success() {
            return Ok(body);
        }
        let message = serde_json::from_str::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| body.chars().take(300).collect());
        Err(match status {
            StatusCode::NOT_FOUND if endpoint == "api/generate" && message.contains("not found") => {
                BackendError::load(id, format!("{message}: {}", pull_fix(&self.config.model)))
            }
            StatusCode::NOT_FOUND => BackendError::Unavailable {
                backend: id.clone(),
                reason: format!(
                    "{} answers 404 on /{endpoint} ({message}): not an Ollama server (llama-server answers 404 on /api/*); point {HOST_ENV} at one",
                    self.config.host()
                ),
            },
            _ => BackendError::run(id, endpoint, format!("HTTP {status}: {message}")),
        })
    }

    fn transport_error(
        &self,
        endpoint: &str,
        e: &reqwest::Error,
        timeout: Duration,
    ) -> BackendError {
        let id = &self.config.id;
        if e.is_connect() {
            BackendError::Unavailable {
                backend: id.clone(),
                reason: format!(
                    "no Ollama server at {} ({}): start `ollama serve` or set {HOST_ENV}",
                    self.config.host(),
                    chain(e)
                ),
            }
        } else if e.is_timeout() {
            BackendError::run(
                id,
                endpoint,
                format!(
                    "no complete answer from {} within {timeout:?} (timed out)",
                    self.config.host()
                ),
            )
        } else {
            BackendError::run(id, endpoint, chain(e))
        }
    }

    fn parse<T: for<'de> Deserialize<'de>>(
        &self,
        endpoint: &str,
        body: &str,
    ) -> Result<T, BackendError> {
        serde_json::from_str(body).map_err(|e| {
            let detail = match serde_json::from_str::<ErrorBody>(body) {
                Ok(b) => format!("Ollama error: {}", b.error),
                Err(_) => format!(
                    "unexpected reply ({e}): {}",
                    body.chars().take(200).collect::<String>()
                ),
            };
            BackendError::run(&self.config.id, endpoint, detail)
        })
    }

    /// A metadata GET: answered at once by a live server, so it gets a few connect timeouts, not the
    /// generation limit.
    fn get<T: for<'de> Deserialize<'de>>(&self, endpoint: &str) -> Result<T, BackendError> {
        let timeout = self
            .config
            .request_timeout
            .min(self.config.connect_timeout * 5);
        let body = self.exchange(endpoint, self.http.get(self.url(endpoint)?), timeout)?;
        self.parse(endpoint, &body)
    }

    /// `GET /api/version`: the server's version string.
    pub fn version(&self) -> Result<String, BackendError> {
        self.get::<VersionResponse>("api/version")
            .map(|v| v.version)
    }

    /// `GET /api/tags`: the models the server has.
    pub fn tags(&self) -> Result<TagsResponse, BackendError> {
        self.get("api/tags")
    }

    /// The request [`generate`](Self::generate) sends.
    pub fn generate_request(&self, prompt_text: &str, num_predict: usize) -> GenerateRequest {
        GenerateRequest {
            model: self.config.model.clone(),
            prompt: prompt_text.into(),
            raw: true,
            stream: false,
            keep_alive: self.config.keep_alive.clone(),
            options: GenerateOptions {
                num_predict,
                temperature: 0.0,
                seed: self.config.seed,
                top_k: 1,
            },
        }
    }

    /// `POST /api/generate`, non-streaming, greedy, at most `num_predict` tokens.
    pub fn generate(
        &self,
        prompt_text: &str,
        num_predict: usize,
    ) -> Result<GenerateResponse, BackendError> {
        let request = self.generate_request(prompt_text, num_predict);
        let body = self.exchange(
            "api/generate",
            self.http.post(self.url("api/generate")?).json(&request),
            self.config.request_timeout,
        )?;
        self.parse("api/generate", &body)
    }
}

/// A TCP connect within [`PROBE_CONNECT_TIMEOUT`], then `/api/version` with short timeouts: a client
/// and the server's version, or why there is neither.
fn reach(config: &OllamaConfig) -> Result<(OllamaClient, String), Availability> {
    let host = config.host();
    let absent_server = |why: String| Availability::Absent {
        reason: format!("no Ollama server at {host} ({why})"),
        fix: format!("start `ollama serve` or set {HOST_ENV}"),
    };
    let addrs: Vec<_> = host
        .to_socket_addrs()
        .map_err(|e| absent_server(format!("cannot resolve: {e}")))?
        .collect();
    let mut last_error = "it resolves to no address".to_string();
    let connected =
        addrs.iter().any(
            |a| match TcpStream::connect_timeout(a, PROBE_CONNECT_TIMEOUT) {
                Ok(_) => true,
                Err(e) => {
                    last_error = format!(
                        "TCP connect within {} ms: {e}",
                        PROBE_CONNECT_TIMEOUT.as_millis()
                    );
                    false
                }
            },
        );
    if !connected {
        return Err(absent_server(last_error));
    }
    let quick = OllamaConfig {
        connect_timeout: PROBE_CONNECT_TIMEOUT,
        request_timeout: Duration::from_secs(3),
        ..config.clone()
    };
    let client = OllamaClient::new(quick).map_err(|e| Availability::Absent {
        reason: e.to_string(),
        fix: "report this: the HTTP client could not be built".into(),
    })?;
    let version = client.version().map_err(|e| Availability::Absent {
        reason: format!("{host} accepts connections but /api/version failed: {e}"),
        fix: format!("point {HOST_ENV} at an Ollama server (`ollama serve`)"),
    })?;
    Ok((client, version))
}

/// The version of the server `config` names, if one answers (for the run manifest).
pub fn server_version(config: &OllamaConfig) -> Option<String> {
    reach(config).ok().map(|(_, version)| version)
}

/// Cheap availability check: [`reach`] the server, then whether `/api/tags` lists the model. Loads nothing.
pub fn probe(config: &OllamaConfig) -> Availability {
    let (client, version) = match reach(config) {
        Ok(reached) => reached,
        Err(absent) => return absent,
    };
    let host = config.host();
    match client.tags() {
        Ok(tags) if tags.find(&config.model).is_some() => Availability::Available {
            detail: format!("Ollama {version} at {host}, model {}", config.model),
        },
        Ok(tags) => Availability::Absent {
            reason: format!(
                "Ollama {version} at {host} does not have model `{}` (it has: {})",
                config.model,
                tags.names().join(", ")
            ),
            fix: pull_fix(&config.model),
        },
        Err(e) => Availability::Absent {
            reason: format!("Ollama {version} at {host}: /api/tags failed: {e}"),
            fix: "check the server's log".into(),
        },
    }
}

/// A model on an Ollama server, driven through `/api/generate`.
pub struct OllamaBackend {
    info: BackendInfo,
    client: OllamaClient,
    tokenizer: Tokenizer,
    /// The last raw reply, for callers that want Ollama's own numbers.
    last_reply: Option<GenerateResponse>,
}

impl OllamaBackend {
    /// Connect, read the version, and check the server has the model (it is loaded by the first request,
    /// whose `load_duration` is the cold start). `tokenizer` must be the model's own: it turns the
    /// workload's ids into text and the reply back into ids.
    pub fn open(config: OllamaConfig, tokenizer: Tokenizer) -> Result<Self, BackendError> {
        let client = OllamaClient::new(config)?;
        let config = client.config().clone();
        let version = client.version()?;
        let tags = client.tags()?;
        let local = tags.find(&config.model).ok_or_else(|| {
            BackendError::load(
                &config.id,
                format!(
                    "Ollama {version} at {} does not have model `{}`: {}",
                    config.host(),
                    config.model,
                    pull_fix(&config.model)
                ),
            )
        })?;
        let details = local.details.as_ref();
        let info = BackendInfo {
            id: config.id.clone(),
            engine: ENGINE.into(),
            engine_version: version,
            location: format!(
                "{} model {} ({})",
                config.base_url,
                local.name,
                local.digest.as_deref().unwrap_or("no digest")
            ),
            device: "chosen by the Ollama server".into(),
            precision: details
                .and_then(|d| d.quantization_level.clone())
                .unwrap_or_else(|| "unreported".into()),
        };
        Ok(OllamaBackend {
            info,
            client,
            tokenizer,
            last_reply: None,
        })
    }

    pub fn client(&self) -> &OllamaClient {
        &self.client
    }

    /// The raw reply behind the last generation.
    pub fn last_reply(&self) -> Option<&GenerateResponse> {
        self.last_reply.as_ref()
    }

    /// Generate `gen_tokens` tokens after `prompt_text`; `prompt_tokens` is Ollama's own count.
    pub fn generate_text(
        &mut self,
        prompt_text: &str,
        gen_tokens: usize,
    ) -> Result<Generation, BackendError> {
        if prompt_text.is_empty() || gen_tokens == 0 {
            return Err(BackendError::run(
                &self.info.id,
                "generate",
                "prompt and gen_tokens must be non-empty",
            ));
        }
        let reply = self.client.generate(prompt_text, gen_tokens)?;
        let generation = generation_from_response(&self.info.id, &reply, gen_tokens, |t| {
            self.tokenizer.encode(t)
        });
        self.last_reply = Some(reply);
        generation
    }
}

impl Backend for OllamaBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn generate(&mut self, prompt: &[u32], gen_tokens: usize) -> Result<Generation, BackendError> {
        let text = self.tokenizer.decode(prompt)?;
        let generation = self.generate_text(&text, gen_tokens)?;
        if generation.prompt_tokens != prompt.len() {
            return Err(BackendError::Invariant {
                backend: self.info.id.clone(),
                detail: format!(
                    "Ollama counted {} prompt tokens for a {}-token prompt: `{}` does not tokenize like the catalog model (set {MODEL_ENV} to the same model)",
                    generation.prompt_tokens,
                    prompt.len(),
                    self.client.config().model
                ),
            });
        }
        Ok(generation)
    }

    /// Not checkable through Ollama's API: see [`RECOMPUTE_NOT_CHECKABLE`]. Sends nothing.
    fn full_recompute_tokens(
        &mut self,
        _prompt: &[u32],
        _gen_tokens: usize,
    ) -> Result<Recompute, BackendError> {
        Ok(Recompute::CannotCheck {
            reason: RECOMPUTE_NOT_CHECKABLE.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NORMAL: &str = include_str!("../../tests/data/ollama/generate_normal.json");
    const CACHE_HIT: &str = include_str!("../../tests/data/ollama/generate_cache_hit.json");
    const EARLY_STOP: &str = include_str!("../../tests/data/ollama/generate_early_stop.json");
    const CACHED_PREFIX: &str = include_str!("../../tests/data/ollama/generate_cached_prefix.json");
    const ERROR: &str = include_str!("../../tests/data/ollama/error_model_not_found.json");
    const VERSION: &str = include_str!("../../tests/data/ollama/version.json");
    const TAGS: &str = include_str!("../../tests/data/ollama/tags.json");

    fn reply(json: &str) -> GenerateResponse {
        serde_json::from_str(json).expect("fixture parses")
    }

    /// The catalog model's tokenizer (the GGUF is a pinned, cached asset).
    fn tokenizer() -> &'static Tokenizer {
        static TOKENIZER: std::sync::OnceLock<Tokenizer> = std::sync::OnceLock::new();
        TOKENIZER.get_or_init(|| {
            let path = crate::model::catalog::default_model()
                .and_then(|m| m.gguf_path())
                .expect("SmolLM2 GGUF");
            Tokenizer::from_gguf(&crate::model::GgufFile::open(&path).expect("GGUF"))
                .expect("tokenizer")
        })
    }

    fn encode(text: &str) -> Result<Vec<u32>, ModelError> {
        tokenizer().encode(text)
    }

    #[test]
    fn host_forms_parse_to_one_base_url() {
        for (raw, want) in [
            ("127.0.0.1:11434", "http://127.0.0.1:11434/"),
            ("http://127.0.0.1:11434", "http://127.0.0.1:11434/"),
            ("HTTP://localhost:8080/", "http://localhost:8080/"),
            ("example.org", "http://example.org:11434/"),
            (":9999", "http://127.0.0.1:9999/"),
            ("", "http://127.0.0.1:11434/"),
            ("http://host:80", "http://host/"),
            ("http://host:1234/ollama", "http://host:1234/ollama/"),
            ("[::1]:11434", "http://[::1]:11434/"),
        ] {
            assert_eq!(
                parse_host(raw).map(|u| u.to_string()),
                Ok(want.to_string()),
                "{raw}"
            );
        }
        assert!(parse_host("https://host:443")
            .unwrap_err()
            .contains("not supported"));
        assert!(parse_host("http://exa mple:1").is_err());
    }

    #[test]
    fn normal_reply_maps_engine_durations_to_phases() {
        let r = reply(NORMAL);
        let n = r.eval_count.unwrap() as usize;
        let g = generation_from_response("ollama", &r, n, encode).unwrap();
        assert_eq!(g.prompt_tokens as u64, r.prompt_eval_count.unwrap());
        assert_eq!(g.tokens.len(), n);
        assert_eq!(g.prefill_ms, r.prompt_eval_duration.unwrap() as f64 / 1e6);
        assert_eq!(g.decode_ms, r.eval_duration.unwrap() as f64 / 1e6);
        assert_eq!(g.e2e_ms, r.total_duration.unwrap() as f64 / 1e6);
        assert_eq!(g.cold_start_ms, Some(r.load_duration.unwrap() as f64 / 1e6));
        assert_eq!(g.decode_steps, n - 1);
        assert_eq!(g.timing_source, TimingSource::Engine);
        assert_eq!(g.early_stop, None);
        assert_eq!(g.cached_prompt_tokens, None);
        assert!(g.e2e_ms >= g.prefill_ms + g.decode_ms);
    }

    #[test]
    fn early_stop_keeps_the_measured_durations_and_becomes_a_projected_run() {
        use crate::measure::{outcome_of, RunOutcome};
        let r = reply(EARLY_STOP);
        let generated = r.eval_count.unwrap() as usize;
        let requested = generated * 4;
        let g = generation_from_response("ollama", &r, requested, encode).unwrap();
        let measured = r.eval_duration.unwrap() as f64 / 1e6;
        let stop = g.early_stop.clone().expect("marked as stopped early");
        assert_eq!(
            (
                stop.generated_tokens,
                stop.requested_tokens,
                stop.stop_reason.as_str()
            ),
            (generated, requested, "stop")
        );
        // Nothing is projected in the generation: the durations are Ollama's.
        assert_eq!(g.decode_ms, measured);
        assert_eq!(g.e2e_ms, r.total_duration.unwrap() as f64 / 1e6);
        assert_eq!(
            g.decode_steps,
            generated - 1,
            "eval_duration covers eval_count − 1 passes"
        );
        assert!(
            g.tokens.len() < requested,
            "the tokens are what was generated, not padded"
        );
        // The run record: projected, with the divisor eval_count − 1, and no timings for aggregates.
        let RunOutcome::Projected(p) = outcome_of(&g, requested) else {
            panic!("an early stop must be a projected run")
        };
        assert_eq!(p.measured.gen_tokens, generated);
        assert_eq!(p.measured.decode_ms, measured);
        let want = measured / (generated - 1) as f64 * (requested - 1) as f64;
        assert!((p.projected_decode_ms.unwrap() - want).abs() < 1e-9);
        assert!((p.projected_e2e_ms.unwrap() - (g.e2e_ms + want - measured)).abs() < 1e-9);
        // Stopped by EOS exactly at the requested count: measured at full length, an ok run.
        let exact = generation_from_response("ollama", &r, generated, encode).unwrap();
        assert_eq!(
            exact.early_stop.as_ref().map(|s| s.generated_tokens),
            Some(generated)
        );
        let RunOutcome::Ok(t) = outcome_of(&exact, generated) else {
            panic!("a run measured at the requested length is ok")
        };
        assert_eq!((t.gen_tokens, t.decode_ms), (generated, measured));
    }

    #[test]
    fn an_eos_as_first_token_projects_nothing() {
        use crate::measure::{outcome_of, RunOutcome};
        let r = GenerateResponse {
            response: String::new(),
            eval_count: Some(1),
            eval_duration: Some(20_000),
            ..reply(EARLY_STOP)
        };
        let g = generation_from_response("ollama", &r, 64, encode).unwrap();
        assert_eq!(g.decode_steps, 0);
        let RunOutcome::Projected(p) = outcome_of(&g, 64) else {
            panic!("projected")
        };
        assert_eq!((p.projected_decode_ms, p.projected_e2e_ms), (None, None));
    }

    #[test]
    fn cache_hit_without_prompt_count_is_refused_not_invented() {
        let r = reply(CACHE_HIT);
        assert_eq!(r.prompt_eval_count, None);
        assert!(
            r.prompt_eval_duration.is_some(),
            "the fixture keeps the duration, as ollama/ollama#2068 shows"
        );
        let e = generation_from_response("ollama", &r, r.eval_count.unwrap() as usize, encode)
            .unwrap_err();
        assert!(matches!(e, BackendError::Invariant { .. }), "{e:?}");
        assert!(e.to_string().contains("prompt cache"), "{e}");
        // It becomes a degraded run carrying the reason, with no latency.
        assert_eq!(
            crate::measure::RunOutcome::from_error(&e).label(),
            "degraded"
        );
    }

    #[test]
    fn reused_prompt_tokens_are_recorded() {
        let r = reply(CACHED_PREFIX);
        let g =
            generation_from_response("ollama", &r, r.eval_count.unwrap() as usize, encode).unwrap();
        assert_eq!(
            g.cached_prompt_tokens,
            r.prompt_eval_cached_count.map(|n| n as usize)
        );
        assert!(g.cached_prompt_tokens.is_some());
        assert_eq!(g.prompt_tokens as u64, r.prompt_eval_count.unwrap());
    }

    #[test]
    fn inconsistent_replies_are_invariant_errors() {
        let r = reply(NORMAL);
        let n = r.eval_count.unwrap() as usize;
        let too_many = generation_from_response("ollama", &r, n - 1, encode).unwrap_err();
        assert!(too_many.to_string().contains("num_predict"), "{too_many}");
        let mismatch = generation_from_response("ollama", &r, n, |_| Ok(vec![1, 2])).unwrap_err();
        assert!(
            mismatch.to_string().contains("re-tokenizes to 2"),
            "{mismatch}"
        );
        let not_done = GenerateResponse {
            done: false,
            ..r.clone()
        };
        assert!(generation_from_response("ollama", &not_done, n, encode).is_err());
        let no_eval = GenerateResponse {
            eval_count: None,
            ..r
        };
        assert!(generation_from_response("ollama", &no_eval, n, encode)
            .unwrap_err()
            .to_string()
            .contains("eval_count"));
    }

    #[test]
    fn version_tags_and_error_bodies_parse() {
        let v: VersionResponse = serde_json::from_str(VERSION).unwrap();
        assert!(!v.version.is_empty());
        let tags: TagsResponse = serde_json::from_str(TAGS).unwrap();
        let m = tags
            .find(DEFAULT_MODEL)
            .expect("the fixture lists the default model");
        assert!(m
            .details
            .as_ref()
            .and_then(|d| d.quantization_level.as_deref())
            .is_some());
        assert!(tags.find("smollm2:1.7b").is_none());
        let e: ErrorBody = serde_json::from_str(ERROR).unwrap();
        assert!(e.error.contains("not found"));
        assert!(
            serde_json::from_str::<GenerateResponse>(ERROR).is_err(),
            "an error body is not a reply"
        );
    }

    #[test]
    fn untagged_names_mean_latest() {
        let tags = TagsResponse {
            models: vec![LocalModel {
                name: "llama3:latest".into(),
                digest: None,
                size: None,
                details: None,
            }],
        };
        assert!(tags.find("llama3").is_some());
        assert!(tags.find("llama3:8b").is_none());
    }

    #[test]
    fn the_request_is_greedy_raw_and_non_streaming() {
        let client =
            OllamaClient::new(OllamaConfig::new(parse_host(DEFAULT_HOST).unwrap(), "m:1")).unwrap();
        let v = serde_json::to_value(client.generate_request("hello", 7)).unwrap();
        assert_eq!(v["raw"], true);
        assert_eq!(v["stream"], false);
        assert_eq!(v["options"]["num_predict"], 7);
        assert_eq!(v["options"]["temperature"], 0.0);
        assert_eq!(v["options"]["top_k"], 1);
        assert_eq!(v["model"], "m:1");
    }
}
