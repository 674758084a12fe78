//! The backend table: one row per backend id a gate file can name, with everything infergate knows
//! about that backend before opening it — its engine (and so the runtime it loads and how that
//! runtime's version is read), the recipe its engine is opened with (weight format, optimization
//! level, execution provider, device, dtype, decode loop), the device it computes on and the fp32
//! backend a lower-precision variant was made from. Every place that needs per-backend knowledge
//! reads this table ([`spec`]); a new backend id of an existing engine is one row here.

use crate::model::onnx_graph::WeightFormat;
use crate::pins::Runtime;

use crate::backend::evidence::DecodeMode;
use crate::backend::ort::OptLevel;
use crate::host::ComputeDevice;
use DecodeMode::{CudaGraph, Eager, Static};
use OptLevel::{All, Disabled};
use TorchDevice::{Cuda, CudaIfAvailable};
use TorchDtype::{Bf16, Fp16, Fp32};

/// The inference engine behind a backend id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Engine {
    /// ONNX Runtime, loaded in-process (`ort`).
    OnnxRuntime,
    /// llama.cpp's `llama-server`, built from the pinned sdist.
    LlamaCpp,
    /// A remote Ollama server.
    Ollama,
    /// libtorch, loaded in-process (`tch`, cargo feature `torch`).
    Libtorch,
}

impl Engine {
    /// Every engine, in report order.
    pub const ALL: [Engine; 4] = [
        Engine::OnnxRuntime,
        Engine::LlamaCpp,
        Engine::Ollama,
        Engine::Libtorch,
    ];

    /// The engine's name as its backends report it ([`crate::backend::BackendInfo::engine`]).
    pub fn name(self) -> &'static str {
        match self {
            Engine::OnnxRuntime => "onnxruntime",
            Engine::LlamaCpp => "llama.cpp",
            Engine::Ollama => "ollama",
            Engine::Libtorch => "libtorch",
        }
    }

    /// The runtime this process loads for the engine, which a baseline records and a pin can
    /// fetch again; `None` for a remote server.
    pub fn runtime(self) -> Option<Runtime> {
        match self {
            Engine::OnnxRuntime => Some(Runtime::OnnxRuntime),
            Engine::LlamaCpp => Some(Runtime::LlamaCpp),
            Engine::Libtorch => Some(Runtime::Libtorch),
            Engine::Ollama => None,
        }
    }
}

/// Where an ONNX Runtime backend computes: its execution provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrtDevice {
    /// The CPU provider alone.
    Cpu,
    /// The CUDA provider on device 0, the KV cache kept on the GPU between steps.
    Cuda,
    /// The TensorRT provider on device 0 (engine cache and shape profiles: [`super::tensorrt_request`]).
    TensorRt,
}

/// Where a libtorch backend computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchDevice {
    Cpu,
    /// CUDA device 0.
    Cuda,
    /// `cuda if available, else cpu`, decided when opened: the silent-fallback pattern behind
    /// TR117's "gpu" labels, kept as a negative control.
    CudaIfAvailable,
}

/// The element type a libtorch backend computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchDtype {
    Fp32,
    Bf16,
    Fp16,
}

/// How a backend's engine is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    /// An ONNX Runtime session over the cached export of the model in `format`.
    Ort {
        format: WeightFormat,
        opt: OptLevel,
        device: OrtDevice,
    },
    /// `llama-server` over the model's GGUF: the CPU build, or the CUDA build with every layer
    /// offloaded.
    LlamaCpp { cuda: bool },
    /// The Ollama server named by `OLLAMA_HOST`.
    Ollama,
    /// The libtorch LLaMA forward over the model's dequantized weights.
    Tch {
        device: TorchDevice,
        dtype: TorchDtype,
        decode: DecodeMode,
    },
}

/// One backend id and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendSpec {
    /// The id gate files, trial ids and records name it by.
    pub id: &'static str,
    pub recipe: Recipe,
    /// The fp32 backend this lower-precision variant was made from (same engine, same device): it
    /// reads fewer bytes per token, so in memory-bound decode it must be at least as fast
    /// ([`crate::report`]'s roofline).
    pub fp32_parent: Option<&'static str>,
}

impl BackendSpec {
    pub fn engine(&self) -> Engine {
        match self.recipe {
            Recipe::Ort { .. } => Engine::OnnxRuntime,
            Recipe::LlamaCpp { .. } => Engine::LlamaCpp,
            Recipe::Ollama => Engine::Ollama,
            Recipe::Tch { .. } => Engine::Libtorch,
        }
    }

    /// The device it computes on, known without opening it; `None` where the backend does not
    /// decide it (Ollama: its server chooses; `tch-auto`: decided when opened — use the opened
    /// backend's [`crate::backend::BackendInfo::compute_device`]).
    pub fn requested_device(&self) -> Option<ComputeDevice> {
        match self.recipe {
            Recipe::Ort {
                device: OrtDevice::Cpu,
                ..
            } => Some(ComputeDevice::Cpu),
            Recipe::Ort { .. } => Some(ComputeDevice::Cuda(0)),
            Recipe::LlamaCpp { cuda: false } => Some(ComputeDevice::Cpu),
            Recipe::LlamaCpp { cuda: true } => Some(ComputeDevice::Cuda(0)),
            Recipe::Ollama => None,
            Recipe::Tch {
                device: TorchDevice::Cpu,
                ..
            } => Some(ComputeDevice::Cpu),
            Recipe::Tch {
                device: TorchDevice::Cuda,
                ..
            } => Some(ComputeDevice::Cuda(0)),
            Recipe::Tch {
                device: TorchDevice::CudaIfAvailable,
                ..
            } => None,
        }
    }
}

const fn ort(
    id: &'static str,
    format: WeightFormat,
    opt: OptLevel,
    device: OrtDevice,
) -> BackendSpec {
    let fp32_parent = match (format, device) {
        (WeightFormat::Fp32, _) => None,
        (_, OrtDevice::Cpu) => Some("ort-cpu"),
        (_, _) => Some("ort-cuda"),
    };
    BackendSpec {
        id,
        recipe: Recipe::Ort {
            format,
            opt,
            device,
        },
        fp32_parent,
    }
}

const fn tch(
    id: &'static str,
    device: TorchDevice,
    dtype: TorchDtype,
    decode: DecodeMode,
) -> BackendSpec {
    // The static and graph steps are their own decode loops, not variants of the eager fp32 one.
    let fp32_parent = match (dtype, decode) {
        (TorchDtype::Bf16 | TorchDtype::Fp16, DecodeMode::Eager) => Some("tch-cuda"),
        _ => None,
    };
    BackendSpec {
        id,
        recipe: Recipe::Tch {
            device,
            dtype,
            decode,
        },
        fp32_parent,
    }
}

/// Every backend id, in report order.
pub const BACKENDS: &[BackendSpec] = &[
    ort("ort-cpu", WeightFormat::Fp32, All, OrtDevice::Cpu),
    // The accuracy reference: fp32 with every graph optimization disabled.
    ort("ort-cpu-ref", WeightFormat::Fp32, Disabled, OrtDevice::Cpu),
    // The deploy forms ONNX Runtime's integer CPU kernels run (docs/performance.md).
    ort("ort-cpu-int8", WeightFormat::Int8, All, OrtDevice::Cpu),
    ort("ort-cpu-q4", WeightFormat::Q4, All, OrtDevice::Cpu),
    // The bit-exact Q4_1 blocks (fp32 zero points, ONNX Runtime's slow path): an accuracy
    // reference for the 4-bit form, never a speed candidate.
    ort(
        "ort-cpu-q4-exact",
        WeightFormat::GgufQ4_1,
        All,
        OrtDevice::Cpu,
    ),
    ort("ort-cpu-fp16", WeightFormat::Fp16, All, OrtDevice::Cpu),
    ort("ort-cuda", WeightFormat::Fp32, All, OrtDevice::Cuda),
    ort("ort-cuda-fp16", WeightFormat::Fp16, All, OrtDevice::Cuda),
    ort("ort-tensorrt", WeightFormat::Fp32, All, OrtDevice::TensorRt),
    BackendSpec {
        id: "llama-cpp",
        recipe: Recipe::LlamaCpp { cuda: false },
        fp32_parent: None,
    },
    BackendSpec {
        id: "llama-cpp-cuda",
        recipe: Recipe::LlamaCpp { cuda: true },
        fp32_parent: None,
    },
    BackendSpec {
        id: "ollama",
        recipe: Recipe::Ollama,
        fp32_parent: None,
    },
    tch("tch-cpu", TorchDevice::Cpu, Fp32, Eager),
    tch("tch-auto", CudaIfAvailable, Fp32, Eager),
    tch("tch-cuda", Cuda, Fp32, Eager),
    tch("tch-cuda-bf16", Cuda, Bf16, Eager),
    tch("tch-cuda-fp16", Cuda, Fp16, Eager),
    // The static-shape decode step, launched from the host per token (same kernels as the graph).
    tch("tch-cuda-static-bf16", Cuda, Bf16, Static),
    // That step captured once as a CUDA graph and replayed per token.
    tch("tch-cuda-graph-bf16", Cuda, Bf16, CudaGraph),
];

/// The row of backend `id`; `None` for an id no gate file may name.
pub fn spec(id: &str) -> Option<&'static BackendSpec> {
    BACKENDS.iter().find(|s| s.id == id)
}

/// The runtime backend `id` loads (what its baselines record); `None` for a remote server or an
/// unknown id.
pub fn runtime_of(id: &str) -> Option<Runtime> {
    spec(id)?.engine().runtime()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_parents_are_fp32_rows_of_the_same_engine_and_device() {
        for (i, s) in BACKENDS.iter().enumerate() {
            assert!(BACKENDS[..i].iter().all(|o| o.id != s.id), "{} twice", s.id);
            if let Some(p) = s.fp32_parent {
                let parent = spec(p).unwrap_or_else(|| panic!("{}: parent {p} is no row", s.id));
                assert_eq!(parent.engine(), s.engine(), "{}", s.id);
                assert_eq!(parent.requested_device(), s.requested_device(), "{}", s.id);
                assert!(parent.fp32_parent.is_none(), "{p} is itself a variant");
            }
        }
        assert_eq!(
            spec("ort-cpu-int8").and_then(|s| s.fp32_parent),
            Some("ort-cpu")
        );
        assert_eq!(spec("ort-cpu-ref").and_then(|s| s.fp32_parent), None);
        assert_eq!(
            spec("tch-cuda-graph-bf16").and_then(|s| s.fp32_parent),
            None
        );
        assert!(spec("tch-gpu").is_none());
        // `Engine::ALL` is a fixed-size list the compiler does not extend with a new variant.
        for s in BACKENDS {
            assert!(
                Engine::ALL.contains(&s.engine()),
                "{}: {:?} missing from Engine::ALL",
                s.id,
                s.engine()
            );
        }
        assert_eq!(runtime_of("ort-cpu-int8"), Some(Runtime::OnnxRuntime));
        assert_eq!(runtime_of("llama-cpp-cuda"), Some(Runtime::LlamaCpp));
        assert_eq!(runtime_of("tch-cuda-graph-bf16"), Some(Runtime::Libtorch));
        assert_eq!(runtime_of("ollama"), None);
    }
}
