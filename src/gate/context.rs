//! What a gate kind gets to run one trial: the trial's id, spec, scenario and profile, the
//! tokenizer, the run log, and [`BackendDoor`] — the gates' only way to the backend registry (so a
//! test can hand in a backend of its own).

use crate::backend::ort::OptLevel;
use crate::backend::Availability;
use crate::backend::Backend;
use crate::error::{BackendError, ModelError};
use crate::measure::RunLog;
use crate::measure::{RunRecord, SeriesPlan};
use crate::model::catalog::{CatalogModel, WeightSource};
use crate::model::onnx_graph::WeightFormat;
use crate::workload::Scenario;

use super::{GateSpec, ProfileSettings, TrialId};

/// The backends a trial may probe and open, on the gate's model unless said otherwise.
pub trait BackendDoor: Sync {
    /// Whether a backend can run here, and if not, what fixes it.
    fn availability(&self, id: &str) -> Availability;
    /// A backend on the gate's model.
    fn open(&self, id: &str) -> Result<Box<dyn Backend>, BackendError>;
    /// The same backend pointed at a model that does not exist (the degraded-runs negative control).
    fn open_broken(&self, id: &str) -> Result<Box<dyn Backend>, BackendError>;
    /// A backend opened to collect runtime evidence, with an extra execution provider requested
    /// on top (`cuda`, `tensorrt`).
    fn open_for_evidence(
        &self,
        id: &str,
        extra_provider: Option<&str>,
    ) -> Result<Box<dyn Backend>, BackendError>;
    /// An ONNX Runtime backend on other weights (the scaling gate's synthetic shapes).
    fn open_onnx(
        &self,
        id: &str,
        weights: &OnnxWeights<'_>,
    ) -> Result<Box<dyn Backend>, BackendError>;
}

/// Which ONNX weights [`BackendDoor::open_onnx`] opens.
#[derive(Debug, Clone, Copy)]
pub struct OnnxWeights<'a> {
    pub source: &'a WeightSource,
    pub format: WeightFormat,
    pub opt: OptLevel,
}

/// What a check needs to run one trial.
pub struct TrialContext<'a> {
    pub run_id: &'a str,
    pub trial: &'a TrialId,
    pub spec: &'a GateSpec,
    pub scenario: Option<Scenario>,
    pub profile: ProfileSettings,
    pub model: CatalogModel,
    pub encode: &'a (dyn Fn(&str) -> Result<Vec<u32>, ModelError> + Sync),
    pub backends: &'a dyn BackendDoor,
    pub run_log: &'a RunLog,
}

impl TrialContext<'_> {
    /// The backend the trial's unit opens (empty for a cross-backend trial).
    pub fn backend_id(&self) -> &str {
        self.trial.unit.single_backend().unwrap_or_default()
    }

    /// The trial's backend on the gate's model.
    pub fn open(&self) -> Result<Box<dyn Backend>, BackendError> {
        self.backends.open(self.backend_id())
    }

    /// A series of this trial (its own, or a named sub-series such as `negative-control`) with the
    /// profile's warmup and repetitions.
    pub fn series(
        &self,
        sub_series: Option<&str>,
        scenario: &str,
        prompt: Vec<u32>,
        gen_tokens: usize,
    ) -> SeriesPlan {
        SeriesPlan {
            run_id: self.run_id.into(),
            trial: self.trial.clone(),
            sub_series: sub_series.map(String::from),
            scenario: scenario.into(),
            prompt,
            gen_tokens,
            warmup: self.profile.warmup,
            repetitions: self.profile.repetitions,
        }
    }

    /// Append records to the run log, or say which file could not be written.
    pub fn log(&self, records: &[RunRecord]) -> Result<(), String> {
        self.run_log
            .append(records)
            .map_err(|e| format!("cannot write {}: {e}", self.run_log.path().display()))
    }
}
