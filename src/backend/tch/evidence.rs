//! What a libtorch backend really did, for the compile-is-real gate: where its weights and outputs
//! lived and in which dtype ([`TchEvidence`], tallied by [`Tally`]).

use std::collections::BTreeMap;

use serde::Serialize;
use tch::Tensor;

use super::options::{device_label, kind_label};
use crate::backend::evidence::GraphEvidence;

/// Device and dtype of tensors, with how many were seen (outputs) or how many elements (weights).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub device: String,
    pub dtype: String,
    pub count: u64,
}

/// What the run really did, for the compile-is-real gate: a `cuda`/`bf16` label passes only if the
/// tensors were there and of that type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TchEvidence {
    pub backend_id: String,
    pub requested_device: String,
    pub requested_dtype: String,
    pub libtorch_path: Option<String>,
    pub libtorch_version: String,
    pub cuda_available: bool,
    pub cuda_device_count: i64,
    pub libtorch_cuda_loaded: bool,
    pub libtorch_cuda_path: Option<String>,
    /// "loaded from …", or why not.
    pub libtorch_cuda_reason: String,
    pub cudnn_available: bool,
    /// How the decode loop runs (`eager`, `static`, `cuda_graph`).
    pub decode_mode: String,
    /// The captured decode step and its replays (CUDA-graph mode, once a generation ran).
    pub graph: Option<GraphEvidence>,
    /// Loaded weight tensors: device, dtype, number of elements.
    pub weights: Vec<Placement>,
    /// Every output tensor of a forward (the logits as computed, before the fp32 host copy):
    /// device, dtype, number of tensors.
    pub outputs: Vec<Placement>,
}

impl TchEvidence {
    /// True when at least one output was seen and every output and weight is on `device` in `dtype`.
    pub fn all_on(&self, device: &str, dtype: &str) -> bool {
        let ok = |p: &Placement| p.device == device && p.dtype == dtype;
        !self.outputs.is_empty() && self.outputs.iter().all(ok) && self.weights.iter().all(ok)
    }
}

/// Device and dtype of tensors seen, with an amount each (tensors or elements).
#[derive(Debug, Default)]
pub(super) struct Tally(BTreeMap<(String, String), u64>);

impl Tally {
    pub(super) fn add(&mut self, t: &Tensor, amount: u64) {
        let kind = t
            .f_kind()
            .map(kind_label)
            .unwrap_or_else(|e| format!("unknown ({e})"));
        *self.0.entry((device_label(t.device()), kind)).or_default() += amount;
    }
    pub(super) fn total(&self) -> u64 {
        self.0.values().sum()
    }
    pub(super) fn to_vec(&self) -> Vec<Placement> {
        self.0
            .iter()
            .map(|((device, dtype), &count)| Placement {
                device: device.clone(),
                dtype: dtype.clone(),
                count,
            })
            .collect()
    }
}
