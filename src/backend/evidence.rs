//! Runtime evidence of what a backend actually did, as opposed to what its label says (TR120: the
//! "compile" label compiled nothing; ONNX Runtime falls back to CPU silently; libtorch reports no CUDA
//! unless `libtorch_cuda` is loaded). Collected from the engine itself, never from configuration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a graph optimizer did, read from the optimized graph it wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphOptimization {
    pub level_requested: String,
    /// Nodes in the graph as exported.
    pub exported_nodes: usize,
    /// Nodes in the graph the session runs (`optimized_model_path`).
    pub optimized_nodes: usize,
    /// Op types in the optimized graph that the exported graph does not contain (fusions), with counts.
    pub fused_ops: BTreeMap<String, usize>,
}

/// How a probe generation's decode loop ran: kernels launched from a captured CUDA graph, or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphReplayEvidence {
    /// The decode mode the backend was opened with (`eager`, `static`, `cuda_graph`).
    pub decode_mode: String,
    /// Decode steps of the probe generation.
    pub decode_steps: u64,
    /// Graph replays during the probe generation (counted by the graph wrapper, not the label).
    pub replays: u64,
    /// Kernel launches one replay performs (node count of the captured graph), if one was captured.
    pub kernels_per_step: Option<i64>,
}

impl GraphReplayEvidence {
    /// Every decode step was a replay of a captured graph that launches kernels.
    pub fn every_step_replayed(&self) -> bool {
        self.decode_steps > 0
            && self.replays == self.decode_steps
            && self.kernels_per_step.is_some_and(|k| k > 0)
    }
}

/// Evidence from one backend session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Execution providers / devices the configuration asked for.
    pub requested: Vec<String>,
    /// Providers compiled into the runtime library (ONNX Runtime `GetAvailableProviders`).
    pub runtime_providers: Vec<String>,
    /// Nodes that actually ran, per provider (ONNX Runtime profiling events), or output tensors per
    /// device (libtorch).
    pub executed_on: BTreeMap<String, usize>,
    /// Heavy compute nodes (MatMul, Gemm, MatMulNBits, attention, normalization) per provider.
    pub compute_executed_on: BTreeMap<String, usize>,
    /// Output tensor dtypes seen (libtorch).
    pub output_dtypes: BTreeMap<String, usize>,
    pub graph_optimization: Option<GraphOptimization>,
    /// How the decode loop ran (libtorch): graph replays counted during a probe generation.
    #[serde(default)]
    pub cuda_graph: Option<GraphReplayEvidence>,
    /// Facts that matter for a claim but fit no field (e.g. "libtorch_cuda.so not loaded: …").
    pub notes: Vec<String>,
}

impl Evidence {
    /// Fraction of heavy compute nodes (or outputs) that ran on `provider`.
    pub fn compute_fraction_on(&self, provider: &str) -> f64 {
        let source = if self.compute_executed_on.is_empty() {
            &self.executed_on
        } else {
            &self.compute_executed_on
        };
        let total: usize = source.values().sum();
        if total == 0 {
            return 0.0;
        }
        source.get(provider).copied().unwrap_or(0) as f64 / total as f64
    }
}

/// Op types whose placement decides where the work happens.
pub fn is_compute_op(op: &str) -> bool {
    matches!(
        op,
        "MatMul"
            | "Gemm"
            | "MatMulNBits"
            | "FusedMatMul"
            | "Attention"
            | "MultiHeadAttention"
            | "GroupQueryAttention"
            | "Softmax"
            | "SimplifiedLayerNormalization"
            | "SkipSimplifiedLayerNormalization"
            | "LayerNormalization"
            | "SkipLayerNormalization"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_fraction_counts_only_the_named_provider() {
        let mut e = Evidence::default();
        e.compute_executed_on
            .insert("CPUExecutionProvider".into(), 3);
        e.compute_executed_on
            .insert("CUDAExecutionProvider".into(), 1);
        assert_eq!(e.compute_fraction_on("CUDAExecutionProvider"), 0.25);
        assert_eq!(e.compute_fraction_on("TensorrtExecutionProvider"), 0.0);
        assert_eq!(
            Evidence::default().compute_fraction_on("CPUExecutionProvider"),
            0.0
        );
    }
}
