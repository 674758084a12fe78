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
//!
//! Files by job: [`process`] (the server process and its HTTP), [`wire`] (the `/completion` request
//! and response), [`load`] (placement and memory traffic), [`perplexity`] (`llama-perplexity`); this
//! file is the [`Backend`] on top of them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::assets::llama_cpp::LlamaCppBuild;
use crate::backend::perplexity::{PerplexityProtocol, PerplexityResult};
use crate::backend::{Backend, BackendInfo, Generation, MemoryTraffic, Recompute};
use crate::error::BackendError;

mod load;
mod perplexity;
mod process;
mod wire;

pub use load::{gguf_memory_traffic, Placement};
pub use perplexity::{llama_perplexity, parse_llama_perplexity};
pub use process::LlamaServer;
pub use wire::{
    completion_body, generation_from, Candidate, CompletionResponse, RecomputeStep, ServerTimings,
    TokenProbabilities,
};

/// Layers llama.cpp offloads to the GPU for the CUDA backend id: all of them.
pub const ALL_LAYERS: u32 = 99;

/// How `llama-server` is started for a backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerSettings<'a> {
    /// `-ngl` for the server and `llama-perplexity` (`None` on the CPU build).
    pub gpu_layers: Option<u32>,
    /// The server's thread count (`None`: every core).
    pub threads: Option<usize>,
    /// Extra `llama-server` arguments. `["-ub", "1"]` makes the server evaluate every prompt one
    /// token at a time, with the single-token kernels of the decode loop: its full recompute then
    /// isolates the KV cache from the batched-prefill arithmetic.
    pub extra_args: &'a [&'a str],
}

pub struct LlamaCppBackend {
    info: BackendInfo,
    server: LlamaServer,
    n_params: Option<u64>,
    memory_traffic: Option<MemoryTraffic>,
    build: LlamaCppBuild,
    gguf: PathBuf,
    gpu_layers: Option<u32>,
}

impl LlamaCppBackend {
    /// `llama-server` over `gguf`, started as `settings` says.
    pub fn open(
        id: &str,
        build: &LlamaCppBuild,
        gguf: &Path,
        precision: &str,
        settings: &ServerSettings,
    ) -> Result<Self, BackendError> {
        let ServerSettings {
            gpu_layers,
            threads,
            extra_args: extra_server_args,
        } = *settings;
        let threads =
            threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let server = LlamaServer::start(
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
        let resp = self.parse_completion(value, what)?;
        self.check_full(&resp, prompt.len(), n_predict, n_probs)?;
        Ok(resp)
    }

    /// A `/completion` reply as a [`CompletionResponse`]; `what` names the call in the error.
    fn parse_completion(
        &self,
        value: serde_json::Value,
        what: &str,
    ) -> Result<CompletionResponse, BackendError> {
        serde_json::from_value(value).map_err(|e| {
            BackendError::run(
                &self.info.id,
                what,
                format!("unexpected /completion response: {e}"),
            )
        })
    }

    /// The server evaluated all `prompt_len` tokens sent (no cached KV reused).
    fn check_prompt_evaluated(
        &self,
        resp: &CompletionResponse,
        prompt_len: usize,
    ) -> Result<(), BackendError> {
        if resp.timings.prompt_n != prompt_len {
            return Err(BackendError::Invariant {
                backend: self.info.id.clone(),
                detail: format!(
                    "server evaluated {} prompt tokens, sent {prompt_len} (prompt cache must be off)",
                    resp.timings.prompt_n
                ),
            });
        }
        Ok(())
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
        self.check_prompt_evaluated(resp, prompt_len)?;
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
        let resp = self.parse_completion(value, "generate")?;
        self.check_prompt_evaluated(&resp, prompt.len())?;
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
