//! The runner: gate files × backends × scenarios → trials; runs one trial; writes the run's
//! artifacts under `target/infergate/<run-id>/`. Shared by `tests/gates.rs` and `infergate run`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::backend::ort::RequestedProvider;
use crate::backend::registry::{self, Engine};
use crate::backend::Availability;
use crate::backend::Backend;
use crate::error::{BackendError, GateFileError, ModelError};
use crate::gate::context::OnnxWeights;
use crate::gate::verdict::fails_run;
pub use crate::gate::verdict::strict;
use crate::gate::{self, BackendDoor, Counts, GateSpec, Skip, TrialContext, TrialId, TrialResult};
use crate::manifest::{self, GateFileRef, Manifest};
use crate::measure::RunLog;
use crate::model::catalog::{self, CatalogModel};
use crate::record::{PlanRecord, RunDir};
use crate::workload::{self, Scenario};

/// Type of a tokenizer's `encode`.
pub type Encoder = Box<dyn Fn(&str) -> Result<Vec<u32>, ModelError> + Send + Sync>;

/// A model's encoder, built once on first use (or why it could not be), shared across threads.
type LazyEncoder = Arc<OnceLock<Result<Encoder, String>>>;

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
    /// Run every gate on this declared model instead of the one its file names
    /// (`infergate run --model`, `INFERGATE_MODEL`).
    pub model: Option<String>,
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
            model: var("INFERGATE_MODEL"),
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

/// One gate × unit × scenario, as planned.
#[derive(Debug, Clone)]
pub struct TrialPlan {
    pub id: TrialId,
    /// Index of the gate in [`Runner::specs`].
    pub gate: usize,
    pub scenario: Option<Scenario>,
}

pub struct Runner {
    pub config: RunnerConfig,
    pub specs: Vec<GateSpec>,
    availability: Mutex<BTreeMap<String, Availability>>,
    /// One tokenizer per model, built on first use.
    encoders: Mutex<BTreeMap<String, LazyEncoder>>,
    dir: RunDir,
    run_log: RunLog,
}

impl Runner {
    pub fn new(config: RunnerConfig) -> Result<Self, GateFileError> {
        let mut specs = gate::spec::load_dir(&config.gates_dir)?;
        if let Some(model) = &config.model {
            for spec in &mut specs {
                catalog::find(model).map_err(|e| GateFileError::Invalid {
                    path: spec.path.clone(),
                    detail: format!("--model / INFERGATE_MODEL: {e}"),
                })?;
                spec.model = model.clone();
            }
        }
        if let Some(s) = specs
            .iter()
            .find(|s| !config.profile.is_empty() && s.profile(&config.profile).is_none())
        {
            return Err(GateFileError::Invalid {
                path: s.path.clone(),
                detail: format!(
                    "profile `{}` is not defined (INFERGATE_PROFILE)",
                    config.profile
                ),
            });
        }
        let dir = RunDir::new(config.run_dir());
        let run_log = dir.run_log();
        Ok(Runner {
            config,
            specs,
            availability: Mutex::new(BTreeMap::new()),
            encoders: Mutex::new(BTreeMap::new()),
            dir,
            run_log,
        })
    }

    pub fn run_log(&self) -> &RunLog {
        &self.run_log
    }

    pub fn run_dir(&self) -> &RunDir {
        &self.dir
    }

    /// Every trial, in gate-file order.
    pub fn plan(&self) -> Vec<TrialPlan> {
        let mut out = Vec::new();
        for (gi, spec) in self.specs.iter().enumerate() {
            let aggregates = spec.check.kind().aggregates_scenarios();
            for unit in spec.units() {
                if spec.scenarios.is_empty() || aggregates {
                    out.push(TrialPlan {
                        id: TrialId::new(&spec.id, unit, None),
                        gate: gi,
                        scenario: None,
                    });
                    continue;
                }
                for s in &spec.scenarios {
                    let scenario =
                        workload::scenario(s).expect("validated when the gate file was loaded");
                    out.push(TrialPlan {
                        id: TrialId::new(&spec.id, unit.clone(), Some(s)),
                        gate: gi,
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
        let wanted = backends.map(backend_list).unwrap_or_default();
        self.plan()
            .into_iter()
            .filter(|p| gate.is_none_or(|g| p.id.gate.contains(g)))
            .filter(|p| {
                wanted.is_empty() || p.id.unit.backends().iter().any(|b| wanted.contains(b))
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

    /// Why a trial will not run here, if it will not ([`gate::skip_reason`]).
    pub fn skip_reason(&self, plan: &TrialPlan) -> Option<Skip> {
        gate::skip_reason(
            &self.specs[plan.gate],
            &plan.id.unit,
            plan.scenario.as_ref(),
            &|b| self.availability(b),
        )
    }

    /// The plan records of `plans` (with their plan-time skips).
    pub fn plan_records(&self, plans: &[TrialPlan]) -> Vec<PlanRecord> {
        plans
            .iter()
            .map(|p| PlanRecord {
                trial: p.id.clone(),
                skip: self.skip_reason(p),
            })
            .collect()
    }

    /// The tokenizer of `model` (built once per model and process).
    fn encoder(&self, model: &str) -> Arc<OnceLock<Result<Encoder, String>>> {
        let slot = Arc::clone(
            self.encoders
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(model.to_string())
                .or_default(),
        );
        slot.get_or_init(|| {
            catalog::find(model)
                .and_then(|m| load_encoder_for(&m))
                .map_err(|e| e.to_string())
        });
        slot
    }

    /// Run one trial; records go to `runs.jsonl`, the result to `results.jsonl`.
    pub fn run_trial(&self, plan: &TrialPlan) -> TrialResult {
        let clock = std::time::Instant::now();
        let spec = &self.specs[plan.gate];
        let result = match self.skip_reason(plan) {
            Some(skip) => TrialResult::skipped(plan.id.clone(), skip),
            None => self.evaluate(spec, plan),
        };
        if let Err(e) = self
            .dir
            .append_result(&result, clock.elapsed().as_secs_f64())
        {
            eprintln!("infergate: cannot record the result of {}: {e}", plan.id);
        }
        result
    }

    fn evaluate(&self, spec: &GateSpec, plan: &TrialPlan) -> TrialResult {
        let encoder = self.encoder(&spec.model);
        let encode = match encoder.get() {
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                return TrialResult::error(plan.id.clone(), format!("tokenizer unavailable: {e}"))
            }
            None => {
                return TrialResult::error(plan.id.clone(), "tokenizer was not built".to_string())
            }
        };
        let Some(model) = catalog::lookup(&spec.model) else {
            return TrialResult::error(
                plan.id.clone(),
                format!(
                    "{}: model `{}` is not in the catalog",
                    spec.path.display(),
                    spec.model
                ),
            );
        };
        let Some(profile) = spec.profile(&self.config.profile) else {
            return TrialResult::error(
                plan.id.clone(),
                format!(
                    "{}: no profile `{}`",
                    spec.path.display(),
                    self.config.profile
                ),
            );
        };
        let door = RegistryDoor {
            runner: self,
            model: model.clone(),
        };
        let ctx = TrialContext {
            run_id: &self.config.run_id,
            trial: &plan.id,
            spec,
            scenario: plan.scenario,
            profile,
            model,
            encode: encode.as_ref(),
            backends: &door,
            run_log: &self.run_log,
        };
        TrialResult::judge(spec, plan.id.clone(), spec.check.kind().evaluate(&ctx))
    }

    /// Write `manifest.json` once per run directory (parallel processes of one run share it), and
    /// create an empty `runs.jsonl` so a run whose gates time nothing still says "no runs".
    pub fn write_manifest(&self) -> std::io::Result<PathBuf> {
        self.dir.start(|| {
            // The decode roofline's bandwidth, measured once per run directory (crate::roofline).
            if let Err(e) = crate::roofline::record(self.dir.path(), &self.config.run_id) {
                eprintln!("infergate: memory bandwidth not measured (no roofline): {e}");
            }
            self.manifest()
        })
    }

    pub fn manifest(&self) -> Manifest {
        let (git_commit, git_dirty) = manifest::git_state(&self.config.repo_dir);
        let runtimes: BTreeMap<String, String> = Engine::ALL
            .into_iter()
            .filter_map(|e| Some((e.name().to_string(), registry::runtime_version(e)?)))
            .collect();
        let baseline_fingerprint = crate::gate::regression::fingerprint_of_suite(&self.specs);
        let models = self
            .specs
            .iter()
            .filter_map(|s| catalog::lookup(&s.model))
            .map(|m| (m.name, m.sha256))
            .collect();
        Manifest {
            run_id: self.config.run_id.clone(),
            started_utc: chrono::Utc::now().to_rfc3339(),
            profile: self.config.profile.clone(),
            machine: crate::host::machine(),
            gpus: crate::host::nvidia_gpus(),
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
            test_slowdown: crate::backend::tweaks::planted().ok().flatten(),
        }
    }
}

/// The tokenizer of the default model, built from its GGUF.
pub fn load_encoder() -> Result<Encoder, ModelError> {
    load_encoder_for(&catalog::default_model()?)
}

/// The tokenizer of a declared model, built from its GGUF.
pub fn load_encoder_for(model: &catalog::CatalogModel) -> Result<Encoder, ModelError> {
    let gguf = crate::model::GgufFile::open(&model.gguf_path()?)?;
    let tokenizer = crate::model::tokenizer::Tokenizer::from_gguf(&gguf)?;
    Ok(Box::new(move |text: &str| tokenizer.encode(text)))
}

/// One line per verdict, as printed by `infergate run` and the test runner.
pub fn verdict_line(r: &TrialResult) -> String {
    format!("{:<5} {}: {}", r.verdict.label(), r.trial, r.message)
}

/// The harness's own summary line: every verdict counted (a SKIP decided while a trial ran is a
/// SKIP here, although libtest counted it as passed).
pub fn summary_line(results: &[TrialResult]) -> String {
    let counts = Counts::of(results.iter().map(|r| r.verdict));
    format!("infergate summary: {counts} ({} trials)", counts.total())
}

/// Why a trial's result fails the test harness (libtest-mimic), if it does: what fails the run
/// ([`fails_run`]), and a skip reached with `--ignored` / `--include-ignored` (running a trial that
/// cannot run here is a failure, with its reason).
pub fn harness_failure(r: &TrialResult, strict: bool, planned_skip: bool) -> Option<String> {
    fails_run(r, strict).or_else(|| match r.skip() {
        Some(skip) if planned_skip => Some(format!("cannot run: {}", skip.reason)),
        _ => None,
    })
}

/// Split test-harness arguments into name filters and the rest: libtest accepts several filters
/// (`-- a b`), libtest-mimic's parser one, so the harness filters the trial list itself. Options
/// that take a value (`--skip X`, `--test-threads N`, …) keep their value.
pub fn split_test_filters(args: &[String]) -> (Vec<String>, Vec<String>) {
    const WITH_VALUE: [&str; 6] = [
        "--skip",
        "--test-threads",
        "--logfile",
        "--color",
        "--format",
        "-Z",
    ];
    let (mut filters, mut rest) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            filters.extend(it.by_ref().cloned());
        } else if WITH_VALUE.contains(&a.as_str()) {
            rest.push(a.clone());
            rest.extend(it.next().cloned());
        } else if a.starts_with('-') {
            rest.push(a.clone());
        } else {
            filters.push(a.clone());
        }
    }
    (filters, rest)
}

/// `a, b` → `["a", "b"]`.
fn backend_list(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .collect()
}

/// Backends named with `--backend` that are absent here, each with its reason and fix: a run asked
/// for them cannot be green without them.
pub fn absent_named_backends(runner: &Runner, list: &str) -> Vec<String> {
    backend_list(list)
        .into_iter()
        .filter_map(|b| match runner.availability(b) {
            Availability::Available { .. } => None,
            Availability::Absent { reason, fix } => {
                Some(format!("{b} absent: {reason} (fix: {fix})"))
            }
        })
        .collect()
}

/// The registry as the gates see it ([`BackendDoor`]): availability through the runner's cache,
/// backends on the trial's model.
struct RegistryDoor<'a> {
    runner: &'a Runner,
    model: CatalogModel,
}

impl BackendDoor for RegistryDoor<'_> {
    fn availability(&self, id: &str) -> Availability {
        self.runner.availability(id)
    }
    fn open(&self, id: &str) -> Result<Box<dyn Backend>, BackendError> {
        registry::open(id, &self.model)
    }
    fn open_broken(&self, id: &str) -> Result<Box<dyn Backend>, BackendError> {
        registry::open_broken(id, &self.model)
    }
    fn open_for_evidence(
        &self,
        id: &str,
        extra_provider: Option<&str>,
    ) -> Result<Box<dyn Backend>, BackendError> {
        let extra = match extra_provider {
            None => None,
            Some("cuda") => Some(RequestedProvider::Cuda { device_id: 0 }),
            Some("tensorrt") => Some(registry::tensorrt_request()),
            Some(other) => {
                return Err(BackendError::Unsupported {
                    backend: id.into(),
                    feature: format!("request_provider `{other}` (cuda, tensorrt)"),
                })
            }
        };
        registry::open_for_evidence(id, &self.model, extra)
    }
    fn open_onnx(
        &self,
        id: &str,
        weights: &OnnxWeights<'_>,
    ) -> Result<Box<dyn Backend>, BackendError> {
        registry::open_ort(id, weights.source, weights.format, weights.opt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{Skip, SkipCause, Unit};

    fn strings(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn several_filters_are_split_from_options_and_their_values() {
        // Item 12: `cargo test --test gates -- a b` exited 2 (libtest-mimic takes one filter).
        let (filters, rest) = split_test_filters(&strings(&[
            "decode",
            "--skip",
            "ollama",
            "--test-threads",
            "1",
            "integrity",
            "--exact",
            "--format=terse",
        ]));
        assert_eq!(filters, ["decode", "integrity"]);
        assert_eq!(
            rest,
            [
                "--skip",
                "ollama",
                "--test-threads",
                "1",
                "--exact",
                "--format=terse"
            ]
        );
    }

    fn skipped(cause: SkipCause) -> TrialResult {
        TrialResult::skipped(
            TrialId::new("g", Unit::backend("ort-cpu"), None),
            Skip::new(cause, "no readable power sensor (fix: …)"),
        )
    }

    #[test]
    fn a_run_time_skip_passes_libtest_only_outside_strict_mode() {
        // Item 3: a SKIP decided while a trial ran returned Ok and counted as passed.
        let r = skipped(SkipCause::Inconclusive);
        assert_eq!(harness_failure(&r, false, false), None);
        assert!(harness_failure(&r, true, false).is_some_and(|m| m.contains("INFERGATE_STRICT")));
        // An absent backend is not a strict failure; running it with --ignored is.
        let absent = skipped(SkipCause::BackendAbsent);
        assert_eq!(harness_failure(&absent, true, false), None);
        assert!(harness_failure(&absent, false, true).is_some_and(|m| m.starts_with("cannot run")));
        // An XPASS passes, except under strict: the stale declaration must go.
        let mut xpass = skipped(SkipCause::BackendAbsent);
        xpass.verdict = crate::gate::Verdict::Xpass;
        assert_eq!(harness_failure(&xpass, false, false), None);
        assert!(harness_failure(&xpass, true, false).is_some_and(|m| m.contains("XPASS")));
        assert_eq!(
            summary_line(&[r, absent]),
            "infergate summary: 0 PASS, 0 FAIL, 0 XFAIL, 0 XPASS, 0 INFO, 2 SKIP (2 trials)"
        );
    }
}
