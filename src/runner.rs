//! The runner: gate files × backends × scenarios → trials; runs one trial; writes the run's
//! artifacts under `target/infergate/<run-id>/`. Shared by `tests/gates.rs` and `infergate run`.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::backend::registry::{self, Availability};
use crate::error::{GateFileError, ModelError};
use crate::gate::{self, GateSpec, TrialContext, TrialResult, Verdict};
use crate::manifest::{self, GateFileRef, Manifest};
use crate::measure::RunLog;
use crate::model::catalog;
use crate::workload::{self, Scenario};

/// Type of a tokenizer's `encode`.
pub type Encoder = Box<dyn Fn(&str) -> Result<Vec<u32>, ModelError> + Send + Sync>;

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub gates_dir: PathBuf,
    /// `ci` (few repetitions) or `full`.
    pub profile: String,
    /// Artifacts go to `<out_root>/<run_id>/`.
    pub out_root: PathBuf,
    pub run_id: String,
    /// The checkout (for the git commit in the manifest).
    pub repo_dir: PathBuf,
}

impl RunnerConfig {
    /// Defaults for a checkout at `repo_dir`: gate files from `INFERGATE_GATES_DIR` (else
    /// `repo_dir/gates`), `INFERGATE_PROFILE` (else `default_profile`),
    /// `INFERGATE_RUN_ID` or nextest's `NEXTEST_RUN_ID` (so parallel processes share one run
    /// directory), `CARGO_TARGET_DIR` for the artifacts root.
    pub fn from_env(repo_dir: &Path, default_profile: &str) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let run_id = var("INFERGATE_RUN_ID")
            .or_else(|| var("NEXTEST_RUN_ID"))
            .unwrap_or_else(new_run_id);
        let target = var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_dir.join("target"));
        RunnerConfig {
            gates_dir: var("INFERGATE_GATES_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_dir.join("gates")),
            profile: var("INFERGATE_PROFILE").unwrap_or_else(|| default_profile.to_string()),
            out_root: target.join("infergate"),
            run_id,
            repo_dir: repo_dir.to_path_buf(),
        }
    }
    pub fn run_dir(&self) -> PathBuf {
        self.out_root.join(&self.run_id)
    }
}

/// `YYYYmmdd-HHMMSS-<pid>` in UTC.
pub fn new_run_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%d-%H%M%S"),
        std::process::id()
    )
}

/// One gate × backend × scenario.
#[derive(Debug, Clone)]
pub struct TrialPlan {
    /// `<gate-id>::<backend>[::<scenario>]`
    pub name: String,
    pub gate: usize,
    /// The unit in the trial name: a backend id, or a check's case name.
    pub unit: String,
    pub backend: String,
    pub scenario: Option<Scenario>,
}

pub struct Runner {
    pub config: RunnerConfig,
    pub specs: Vec<GateSpec>,
    availability: Mutex<BTreeMap<String, Availability>>,
    encoder: OnceLock<Result<Encoder, String>>,
    run_log: RunLog,
}

impl Runner {
    pub fn new(config: RunnerConfig) -> Result<Self, GateFileError> {
        let specs = gate::spec::load_dir(&config.gates_dir)?;
        if !config.profile.is_empty() && !specs.iter().all(|s| s.profile(&config.profile).is_some())
        {
            let s = specs
                .iter()
                .find(|s| s.profile(&config.profile).is_none())
                .expect("checked above");
            return Err(GateFileError::Invalid {
                path: s.path.clone(),
                detail: format!(
                    "profile `{}` is not defined (INFERGATE_PROFILE)",
                    config.profile
                ),
            });
        }
        let run_log = RunLog::new(config.run_dir().join("runs.jsonl"));
        Ok(Runner {
            config,
            specs,
            availability: Mutex::new(BTreeMap::new()),
            encoder: OnceLock::new(),
            run_log,
        })
    }

    pub fn run_log(&self) -> &RunLog {
        &self.run_log
    }

    /// Every trial, in gate-file order.
    pub fn plan(&self) -> Vec<TrialPlan> {
        let mut out = Vec::new();
        for (gi, spec) in self.specs.iter().enumerate() {
            // A cross-backend check is one unit over all backends (ids joined by `+`); a check that
            // aggregates scenarios is one trial per unit over all of them.
            for (unit, backend) in spec.units() {
                if spec.scenarios.is_empty() || spec.check.aggregates_scenarios() {
                    out.push(TrialPlan {
                        name: format!("{}::{unit}", spec.id),
                        gate: gi,
                        unit: unit.clone(),
                        backend: backend.clone(),
                        scenario: None,
                    });
                    continue;
                }
                for s in &spec.scenarios {
                    let scenario =
                        workload::scenario(s).expect("validated when the gate file was loaded");
                    out.push(TrialPlan {
                        name: format!("{}::{unit}::{s}", spec.id),
                        gate: gi,
                        unit: unit.clone(),
                        backend: backend.clone(),
                        scenario: Some(scenario),
                    });
                }
            }
        }
        out
    }

    /// The planned trials matching the command-line filters: `gate` (a substring of the gate id),
    /// `backends` (a comma list; a cross-backend trial matches any of its backends) and `scenario`.
    pub fn select(
        &self,
        gate: Option<&str>,
        backends: Option<&str>,
        scenario: Option<&str>,
    ) -> Vec<TrialPlan> {
        self.plan()
            .into_iter()
            .filter(|p| gate.is_none_or(|g| self.specs[p.gate].id.contains(g)))
            .filter(|p| {
                backends.is_none_or(|b| {
                    b.split(',')
                        .any(|b| p.backend.split('+').any(|x| x == b.trim()))
                })
            })
            .filter(|p| scenario.is_none_or(|s| p.scenario.is_some_and(|x| x.name == s)))
            .collect()
    }

    /// Probe a backend once per process.
    pub fn availability(&self, backend: &str) -> Availability {
        let mut cache = self.availability.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(backend.to_string())
            .or_insert_with(|| registry::probe(backend))
            .clone()
    }

    /// Why a trial will not run, if it will not.
    /// A cross-backend trial (`a+b+…`) runs when at least one of its backends is available.
    pub fn skip_reason(&self, plan: &TrialPlan) -> Option<String> {
        let spec = &self.specs[plan.gate];
        let mut reasons = Vec::new();
        for backend in plan.backend.split('+') {
            match self.availability(backend) {
                Availability::Available { .. } => {
                    return gate::precondition(spec, &plan.unit).or_else(|| {
                        gate::regression::skip_reason(spec, backend, plan.scenario.as_ref())
                    })
                }
                // Recording an absent backend's runs honestly (degraded, with the reason) is the
                // point of the degraded-runs gate: it runs anyway.
                Availability::Absent { .. }
                    if matches!(spec.check, gate::Check::DegradedRuns { .. }) =>
                {
                    return None
                }
                Availability::Absent { reason, fix } => {
                    reasons.push(format!("{backend} absent: {reason} (fix: {fix})"))
                }
            }
        }
        Some(reasons.join("; "))
    }

    fn encoder(&self) -> Result<&Encoder, String> {
        self.encoder
            .get_or_init(|| load_encoder().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Run one trial; records go to `runs.jsonl`, the result to `results.jsonl`.
    pub fn run_trial(&self, plan: &TrialPlan) -> TrialResult {
        let clock = std::time::Instant::now();
        let spec = &self.specs[plan.gate];
        let skipped = |verdict: Verdict| TrialResult {
            trial: plan.name.clone(),
            gate: spec.id.clone(),
            backend: plan.unit.clone(),
            scenario: plan.scenario.map(|s| s.name.to_string()),
            verdict,
            metrics: BTreeMap::new(),
            runs: Default::default(),
            degraded_reasons: vec![],
        };
        let result = if let Some(reason) = self.skip_reason(plan) {
            skipped(Verdict::Skip { reason })
        } else {
            match (
                self.encoder(),
                catalog::lookup(&spec.model),
                spec.profile(&self.config.profile),
            ) {
                (Err(e), _, _) => skipped(Verdict::Fail {
                    reason: format!("tokenizer unavailable: {e}"),
                }),
                (_, None, _) => skipped(Verdict::Fail {
                    reason: format!(
                        "{}: model `{}` is not in the catalog",
                        spec.path.display(),
                        spec.model
                    ),
                }),
                (_, _, None) => skipped(Verdict::Fail {
                    reason: format!(
                        "{}: no profile `{}`",
                        spec.path.display(),
                        self.config.profile
                    ),
                }),
                (Ok(encode), Some(model), Some(profile)) => {
                    let backend = plan.backend.as_str();
                    let open = || registry::open(backend, &model);
                    let open_broken = || registry::open_broken(backend, &model);
                    let open_named = |id: &str| registry::open(id, &model);
                    let open_evidence =
                        |id: &str, extra| registry::open_for_evidence(id, &model, extra);
                    let ctx = TrialContext {
                        run_id: &self.config.run_id,
                        trial: &plan.name,
                        spec,
                        backend_id: backend,
                        scenario: plan.scenario,
                        profile,
                        model,
                        encode: encode.as_ref(),
                        open: &open,
                        open_broken: &open_broken,
                        open_named: &open_named,
                        open_evidence: &open_evidence,
                        unit: &plan.unit,
                        run_log: &self.run_log,
                    };
                    gate::evaluate(&ctx)
                }
            }
        };
        if let Err(e) = self.append_result(&result, clock.elapsed().as_secs_f64()) {
            eprintln!("infergate: cannot record the result of {}: {e}", plan.name);
        }
        result
    }

    /// One line of `results.jsonl`: the [`TrialResult`] plus `elapsed_s` and `finished_utc` (read back
    /// by [`crate::report::input`] for JUnit times).
    fn append_result(&self, r: &TrialResult, elapsed_s: f64) -> std::io::Result<()> {
        let dir = self.config.run_dir();
        std::fs::create_dir_all(&dir)?;
        let mut value = serde_json::to_value(r).map_err(std::io::Error::other)?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("elapsed_s".into(), serde_json::json!(elapsed_s));
            obj.insert(
                "finished_utc".into(),
                serde_json::json!(chrono::Utc::now().to_rfc3339()),
            );
        }
        let mut line = serde_json::to_vec(&value).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("results.jsonl"))?;
        f.lock()?;
        f.write_all(&line)
    }

    /// Write `manifest.json` once per run directory (parallel processes of one run share it), and
    /// create an empty `runs.jsonl` so a run whose gates time nothing still says "no runs".
    pub fn write_manifest(&self) -> std::io::Result<PathBuf> {
        let dir = self.config.run_dir();
        std::fs::create_dir_all(&dir)?;
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.run_log.path())?;
        let path = dir.join("manifest.json");
        if path.exists() {
            return Ok(path);
        }
        // The decode roofline's bandwidth, measured once per run directory (crate::roofline).
        crate::roofline::record(&dir, &self.config.run_id)?;
        let m = self.manifest();
        let tmp = dir.join(format!(".manifest.{}.tmp", std::process::id()));
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&m).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    pub fn manifest(&self) -> Manifest {
        let (git_commit, git_dirty) = manifest::git_state(&self.config.repo_dir);
        let mut runtimes = BTreeMap::new();
        if let Ok(rt) = crate::backend::ort::runtime() {
            runtimes.insert("onnxruntime".to_string(), rt.version.clone());
        }
        if let Some(build) = crate::backend::llama_cpp::setup::locate() {
            runtimes.insert("llama.cpp".to_string(), build.version.clone());
        }
        if let Some(v) = crate::backend::registry::libtorch_version() {
            runtimes.insert("libtorch".to_string(), v);
        }
        let baseline_fingerprint = self
            .specs
            .iter()
            .find(|s| matches!(s.check, gate::Check::Regression(_)))
            .and_then(|s| {
                let model = catalog::lookup(&s.model)?;
                Some(crate::baseline::Fingerprint::detect(&s.backends, &[model]).id())
            });
        let models = self
            .specs
            .iter()
            .filter_map(|s| catalog::lookup(&s.model))
            .map(|m| (m.name.to_string(), m.asset.member_sha256.to_string()))
            .collect();
        Manifest {
            run_id: self.config.run_id.clone(),
            started_utc: chrono::Utc::now().to_rfc3339(),
            profile: self.config.profile.clone(),
            machine: manifest::machine(),
            gpus: crate::baseline::fingerprint::nvidia_gpus(),
            baseline_fingerprint,
            runtimes,
            crate_versions: manifest::crate_versions(),
            git_commit,
            git_dirty,
            gate_files: self
                .specs
                .iter()
                .map(|s| GateFileRef {
                    id: s.id.clone(),
                    path: s.path.display().to_string(),
                    sha256: s.file_sha256.clone(),
                })
                .collect(),
            models,
            test_slowdown: crate::baseline::slowdown::planted().ok().flatten(),
        }
    }
}

/// The tokenizer of the catalog model, built from its GGUF.
pub fn load_encoder() -> Result<Encoder, ModelError> {
    let path = crate::assets::ensure(&catalog::SMOLLM2_135M.asset)?;
    let gguf = crate::model::GgufFile::open(&path)?;
    let tokenizer = crate::model::tokenizer::Tokenizer::from_gguf(&gguf)?;
    Ok(Box::new(move |text: &str| tokenizer.encode(text)))
}

/// One line per verdict, as printed by `infergate run` and the test runner.
pub fn verdict_line(r: &TrialResult) -> String {
    format!(
        "{:<4} {}: {}",
        r.verdict.label(),
        r.trial,
        r.verdict.message()
    )
}
