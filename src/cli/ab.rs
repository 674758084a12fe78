//! `infergate ab`: a paired comparison of two runtimes (or of one with itself, an A/A run) on one
//! backend and scenario, with the regression gate's workload and rule. For a planned bump:
//!
//! ```sh
//! infergate ab --backend ort-cpu --baseline-runtime onnxruntime==1.31.1 --candidate-runtime onnxruntime==1.32.0
//! ```
//!
//! Exit code: 0 same (or faster), 1 slower (a regression), 3 unknown (too noisy to decide), 2 the
//! comparison could not run.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::backend::tweaks::Tweaks;
use crate::baseline::metric::Metric;
use crate::gate::regression::{PairedParams, RegressionParams};
use crate::gate::Check;
use crate::paired::{Answer, PairedResult, Settings, Side, SideRuntime, Workload};
use crate::runner::RunnerConfig;

/// The options of `infergate ab`.
#[derive(Debug, Clone)]
pub struct AbOptions {
    pub repo: PathBuf,
    pub backend: String,
    pub scenario: String,
    /// `package==version[@sha256:…]` of the baseline side.
    pub baseline_runtime: Option<String>,
    /// Of the candidate side; `None` = this process's runtime.
    pub candidate_runtime: Option<String>,
    pub baseline_tweaks: Tweaks,
    pub candidate_tweaks: Tweaks,
    pub rounds: Option<usize>,
    pub extra_rounds: Option<usize>,
    pub max_rounds: Option<usize>,
    pub seed: Option<u64>,
    /// Append the result as one JSON line here.
    pub json: Option<PathBuf>,
}

/// The regression gate's parameters from the checkout's gate files (its workload, metrics and
/// paired rule), or the defaults when it has none.
fn gate_params(repo: &std::path::Path) -> (String, usize, Vec<Metric>, PairedParams) {
    let config = RunnerConfig::from_env(repo, "ci");
    let specs = crate::gate::spec::load_dir(&config.gates_dir).unwrap_or_default();
    let found = specs.iter().find_map(|s| match &s.check {
        Check::Regression(p) => Some((s.model.clone(), p.clone())),
        _ => None,
    });
    match found {
        Some((
            model,
            RegressionParams {
                gen_tokens,
                metrics,
                paired,
                ..
            },
        )) => (model, gen_tokens, metrics, paired),
        None => (
            crate::model::catalog::DEFAULT_MODEL.to_string(),
            32,
            vec![
                Metric::E2eMs,
                Metric::DecodeMs,
                Metric::PrefillMs,
                Metric::DecodeTokensPerS,
                Metric::E2eCpuMs,
            ],
            PairedParams::default(),
        ),
    }
}

fn side(label: &str, pin: Option<&str>, tweaks: Tweaks) -> Result<Side, String> {
    let runtime = match pin {
        None => SideRuntime::Inherited,
        Some(text) => SideRuntime::Pinned {
            artifact: crate::pins::parse(text).map_err(|e| e.to_string())?,
        },
    };
    let what = match &runtime {
        SideRuntime::Inherited => "this build's runtime".to_string(),
        SideRuntime::Pinned { artifact } => {
            format!("{} {}", artifact.package(), artifact.version())
        }
    };
    let extra = if tweaks.is_none() {
        String::new()
    } else {
        format!(" with {}", tweaks.describe())
    };
    Ok(Side {
        label: format!("{label} ({what}{extra})"),
        runtime,
        tweaks,
    })
}

/// Run `infergate ab`.
pub fn ab(o: &AbOptions) -> ExitCode {
    match run_ab(o) {
        Ok(r) => {
            print_result(&r);
            if let Some(path) = &o.json {
                let line = serde_json::to_string(&r).unwrap_or_default();
                let written = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .and_then(|mut f| writeln!(f, "{line}"));
                if let Err(e) = written {
                    eprintln!("error: cannot append to {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            match r.answer {
                Answer::Same | Answer::Faster => ExitCode::SUCCESS,
                Answer::Slower => ExitCode::FAILURE,
                Answer::Unknown => ExitCode::from(3),
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_ab(o: &AbOptions) -> Result<PairedResult, String> {
    if !crate::backend::registry::is_known(&o.backend) {
        return Err(format!("unknown backend `{}`", o.backend));
    }
    let (model, gen_tokens, metrics, params) = gate_params(&o.repo);
    let scenario = crate::workload::scenario(&o.scenario)
        .ok_or_else(|| format!("unknown scenario `{}`", o.scenario))?;
    let encode = crate::runner::load_encoder().map_err(|e| e.to_string())?;
    let prompt = crate::workload::prompt_ids(&scenario, &encode).map_err(|e| e.to_string())?;
    let baseline = side("baseline", o.baseline_runtime.as_deref(), o.baseline_tweaks)?;
    let candidate = side(
        "candidate",
        o.candidate_runtime.as_deref(),
        o.candidate_tweaks,
    )?;
    let seed = o.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let mut settings: Settings = params.settings(seed);
    if let Some(r) = o.rounds {
        settings.rounds = r;
        settings.max_rounds = settings.max_rounds.max(r);
    }
    if let Some(r) = o.extra_rounds {
        settings.extra_rounds = r;
    }
    if let Some(r) = o.max_rounds {
        settings.max_rounds = r;
    }
    let workload = Workload {
        backend: o.backend.clone(),
        model,
        prompt,
        gen_tokens,
        metrics,
    };
    eprintln!(
        "infergate ab: {} on {} / {} ({} prompt tokens, {} generated), seed {seed}",
        o.backend,
        workload.model,
        o.scenario,
        workload.prompt.len(),
        gen_tokens
    );
    crate::paired::run(
        &workload,
        &baseline,
        &candidate,
        &settings,
        &mut std::io::stderr(),
    )
}

fn print_result(r: &PairedResult) {
    println!(
        "{} vs {}: {} ({} rounds, {} look(s), {:.0} s, seed {})",
        r.candidate.label,
        r.baseline.label,
        r.answer.label(),
        r.rounds.len(),
        r.looks,
        r.elapsed_s,
        r.settings.seed
    );
    println!(
        "  baseline:  {} {} at {}",
        r.baseline_info.engine, r.baseline_info.engine_version, r.baseline_info.location
    );
    println!(
        "  candidate: {} {} at {}",
        r.candidate_info.engine, r.candidate_info.engine_version, r.candidate_info.location
    );
    for m in &r.metrics {
        println!("  {}", m.describe());
    }
    if let Some(p) = &r.planted {
        println!(
            "  planted on the candidate: asked ×{:.4}, added ×{:.4} of the stretched phases ({:?})",
            1.0 + p.asked,
            1.0 + p.added,
            p.phases
        );
    }
}
