//! ONNX Runtime backend (crate `ort`, `load-dynamic`): the exported LLaMA decoder with a KV cache.
//!
//! The runtime library is the pinned PyPI `onnxruntime` `.so` ([`crate::assets::ONNXRUNTIME`]) unless
//! `ORT_DYLIB_PATH` names another. ONNX Runtime allows one environment per process, so it is created
//! once and shared.//!
//! One job per file: `runtime` finds and loads the library, [`gpu`] checks the CUDA and TensorRT
//! provider libraries, `session` holds the options and builds a session, `decode` runs the
//! KV-cached forward passes, `evidence` reads back what a session executed, and `graph` reads the
//! exported graph. This file is the [`Backend`] over them.

mod decode;
mod evidence;
pub mod gpu;
mod graph;
mod runtime;
mod session;

use std::path::PathBuf;

use ndarray::Array2;

pub use evidence::parse_profile;
pub use graph::{graph_op_histogram, onnx_memory_traffic, onnx_weight_parameter_count};
pub use runtime::{runtime, runtime_providers, OrtRuntime};
pub use session::{
    profile_covers, BindTarget, KvCacheHome, OptLevel, OrtOptions, RequestedProvider,
};

use super::evidence::Evidence;
use super::stretch::Stretch;
use super::{Backend, BackendInfo, Generation, MemoryTraffic};
use crate::error::BackendError;
use decode::Decoder;
use session::{build_session, load_error, EvidenceSetup};

/// An ONNX Runtime session over the exported LLaMA decoder: the backend of every `ort-*` id.
pub struct OrtBackend {
    info: BackendInfo,
    /// TensorRT: the engine cache and the largest shapes its profile covers.
    tensorrt: Option<(PathBuf, String)>,
    /// The session and its KV-cached forward pass.
    decoder: Decoder,
    loaded_parameters: Option<u64>,
    memory_traffic: Option<MemoryTraffic>,
    /// Set when opened for evidence: where the profile and optimized graph go, what was asked for.
    evidence_setup: Option<EvidenceSetup>,
    stretch: Stretch,
}

impl OrtBackend {
    pub fn open(options: OrtOptions) -> Result<Self, BackendError> {
        let rt = runtime()?;
        let load = |e: ort::Error| load_error(&options.id, &options.model_path, e);
        let (session, evidence_setup) = build_session(rt, &options)?;
        let info = BackendInfo {
            id: options.id.clone(),
            engine: "onnxruntime".into(),
            engine_version: rt.version.clone(),
            location: rt.library_path.display().to_string(),
            device: match options.providers.first() {
                Some(
                    RequestedProvider::Cuda { device_id }
                    | RequestedProvider::TensorRt { device_id, .. },
                ) => format!("cuda:{device_id}"),
                None => "cpu".into(),
            },
            precision: options.precision.clone(),
        };
        let loaded_parameters = onnx_weight_parameter_count(&options.model_path);
        let kv_elem_bytes = if options.precision == "fp16" { 2 } else { 4 };
        let memory_traffic =
            onnx_memory_traffic(&options.model_path, &options.config, kv_elem_bytes);
        let tensorrt = options.providers.iter().find_map(|p| match p {
            RequestedProvider::TensorRt {
                engine_cache_dir,
                profile_max_shapes,
                ..
            } => Some((engine_cache_dir.clone(), profile_max_shapes.clone())),
            _ => None,
        });
        let decoder = Decoder::new(
            session,
            options.config,
            options.kv_cache,
            options.id.clone(),
            options.precision == "fp16",
        )
        .map_err(load)?;
        Ok(OrtBackend {
            info,
            tensorrt,
            decoder,
            loaded_parameters,
            memory_traffic,
            evidence_setup,
            stretch: options.stretch,
        })
    }

    fn err(&self, phase: &str, e: impl std::fmt::Display) -> BackendError {
        BackendError::run(&self.info.id, phase, e)
    }

    /// Greedy tokens by recomputing the whole sequence at every step (no cache).
    pub fn generate_full_recompute(
        &mut self,
        prompt: &[u32],
        gen_tokens: usize,
    ) -> Result<Vec<u32>, BackendError> {
        self.decoder.full_recompute(prompt, gen_tokens)
    }
}

impl Backend for OrtBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn generate(&mut self, prompt: &[u32], gen_tokens: usize) -> Result<Generation, BackendError> {
        if prompt.is_empty() || gen_tokens == 0 {
            return Err(self.err("generate", "prompt and gen_tokens must be non-empty"));
        }
        if let Some((_, max_shapes)) = &self.tensorrt {
            let total = prompt.len() + gen_tokens;
            for (input, len) in [("input_ids", prompt.len()), ("attention_mask", total)] {
                if !profile_covers(max_shapes, input, len) {
                    return Err(BackendError::Invariant {
                        backend: self.info.id.clone(),
                        detail: format!("profile_mismatch: {input} needs length {len}, the TensorRT profile's max shapes are `{max_shapes}`"),
                    });
                }
            }
        }
        let generation = self
            .decoder
            .generate_timed(prompt, gen_tokens, &self.stretch)?;
        if let Some((cache, _)) = &self.tensorrt {
            let engines = std::fs::read_dir(cache)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter(|e| e.path().extension().is_some_and(|x| x == "engine"))
                        .count()
                })
                .unwrap_or(0);
            if engines == 0 {
                return Err(BackendError::Invariant {
                    backend: self.info.id.clone(),
                    detail: format!(
                        "TensorRT built no engine: {} holds no .engine file",
                        cache.display()
                    ),
                });
            }
        }
        Ok(generation)
    }

    fn loaded_parameter_count(&self) -> Option<u64> {
        self.loaded_parameters
    }

    fn memory_traffic(&self) -> Option<MemoryTraffic> {
        self.memory_traffic
    }

    fn full_recompute_tokens(
        &mut self,
        prompt: &[u32],
        gen_tokens: usize,
    ) -> Result<super::Recompute, BackendError> {
        self.generate_full_recompute(prompt, gen_tokens)
            .map(super::Recompute::Tokens)
    }

    /// Runs one short forward, ends profiling and reads back where every node ran and what the
    /// optimizer wrote. Only for sessions opened with `collect_evidence`.
    fn evidence(&mut self) -> Option<Result<Evidence, BackendError>> {
        let setup = self.evidence_setup.as_ref()?;
        Some(evidence::collect(&mut self.decoder, setup))
    }

    fn logits(&mut self, tokens: &[u32]) -> Result<Array2<f32>, BackendError> {
        let (logits, _) = self.decoder.forward(tokens, 0, None, "logits")?;
        Array2::from_shape_vec((tokens.len(), self.decoder.config.vocab_size), logits)
            .map_err(|e| self.err("logits", e))
    }
}
