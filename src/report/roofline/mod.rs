//! The decode roofline on the decision card: per backend × scenario, median decode tokens/s against
//! the limit `bandwidth ÷ bytes read per token` (the bytes from what the backend loaded,
//! [`MemoryTraffic`](crate::backend::MemoryTraffic)). The bandwidth is that of the device the
//! backend computes on ([`registry::requested_device`](crate::backend::registry::requested_device)),
//! measured in the run: a CPU backend's is the CPU probe's ([`crate::roofline`]), a `cuda:N`
//! backend's is the copy bandwidth of `cuda:N` that the tools measured ([`super::tools`]). A GPU
//! backend without its device's bandwidth has no limit — never the CPU's.
//!
//! Two findings say "check its configuration", and keep a backend out of the routing
//! recommendation — a ranking that a configuration choice explains is not a finding about engines:
//!
//! - **below the roofline**: decode runs under [`MIN_FRACTION`] of its limit;
//! - **slower than its fp32 parent**: a lower-precision variant of the same engine reads fewer bytes
//!   per token, so in decode (memory-bound at batch 1) it must not be slower than the fp32 model it
//!   was made from, on the same workload.
//!
//! Files by job: [`model`] (the numbers), [`section`] (the roofline table and findings), [`gpu`]
//! (the GPU section against the tools).

mod gpu;
mod model;
mod section;
#[cfg(test)]
mod tests;

pub use gpu::{
    gpu_rows, gpu_section, GpuRow, LlamaBenchCheck, ToolComparison, LLAMA_BENCH_TOLERANCE,
    LLAMA_CPP_CUDA, TCH_GRAPH,
};
pub use model::{
    quiet_enough, BandwidthSource, ParentComparison, Roofline, RooflineRow, UsedBandwidth,
    MAX_LOAD_PER_THREAD, MIN_FRACTION,
};
pub use section::section;
