//! `infergate run`, `list` and `report`: the gate suite outside `cargo test`, and rebuilding the
//! report of a run directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use crate::gate::verdict::{fails_run, strict};
use crate::gate::{Counts, TrialResult};
use crate::runner::{absent_named_backends, summary_line, verdict_line, Runner, RunnerConfig};

/// Model declarations come from `<repo>/models` when the checkout has one and
/// `INFERGATE_MODELS_DIR` is not set (the default is the directory this binary was built from).
pub fn use_repo_models(repo: &Path) {
    let dir = repo.join("models");
    let env = crate::model::catalog::MODELS_DIR_ENV;
    if std::env::var_os(env).is_none_or(|v| v.is_empty()) && dir.is_dir() {
        // Set before any thread starts and before the registry is first read.
        std::env::set_var(env, dir);
    }
}

fn load(config: RunnerConfig) -> Result<Runner, ExitCode> {
    Runner::new(config).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

pub fn run(
    config: RunnerConfig,
    gate: Option<String>,
    backend: Option<String>,
    scenario: Option<String>,
    no_build_llama_cpp: bool,
) -> ExitCode {
    let runner = match load(config) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let plans = runner.select(gate.as_deref(), backend.as_deref(), scenario.as_deref());
    if plans.is_empty() {
        eprintln!("error: no trial matches the filters");
        return ExitCode::from(2);
    }
    // Every CPU backend from this one command: llama.cpp is built on first use (cached).
    if plans
        .iter()
        .any(|p| p.id.unit.backends().contains(&"llama-cpp"))
    {
        use crate::assets::llama_cpp::{prepare_for_run, RunSetup};
        if let RunSetup::NotBuilt { reason } =
            prepare_for_run(no_build_llama_cpp, &mut std::io::stderr())
        {
            eprintln!("infergate: the llama-cpp trials will be skipped: {reason}");
        }
    }
    let dir = runner.config.run_dir();
    if let Err(e) = runner.write_manifest() {
        eprintln!("error: cannot write the manifest in {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    if let Err(e) = runner.run_dir().append_plan(&runner.plan_records(&plans)) {
        eprintln!("error: cannot write the plan in {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    eprintln!(
        "infergate: run {} ({} trials, profile {}) → {}",
        runner.config.run_id,
        plans.len(),
        runner.config.profile,
        dir.display()
    );
    crate::progress::set_enabled(true);
    let run_clock = Instant::now();
    let mut results = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        crate::progress::trial_started(i + 1, plans.len(), &plan.id.to_string());
        let trial_clock = Instant::now();
        let r = runner.run_trial(plan);
        crate::progress::trial_finished(
            i + 1,
            plans.len(),
            &plan.id.to_string(),
            r.verdict.label(),
            trial_clock.elapsed(),
            run_clock.elapsed(),
        );
        println!("{}", verdict_line(&r));
        results.push(r);
    }
    match crate::report::RunData::load(&dir)
        .map(|d| d.with_specs(&runner.specs))
        .and_then(|d| crate::report::write_all(&d))
    {
        Ok(w) => eprintln!(
            "infergate: report → {} (junit.xml, summary.json, {} plot(s) beside it)",
            w.report_md.display(),
            w.plots.len()
        ),
        Err(e) => {
            eprintln!("error: cannot write the report: {e}");
            if let Err(e) = crate::report::write_summary(&dir, &results) {
                eprintln!("error: cannot write the summary either: {e}");
            }
        }
    }
    let absent = backend
        .as_deref()
        .map(|b| absent_named_backends(&runner, b))
        .unwrap_or_default();
    exit_code(&results, &absent)
}

/// 1 if a result fails the run ([`fails_run`]); 2 if no trial ran or a backend named on the
/// command line is absent (a broken install must not turn CI green); 0 otherwise.
fn exit_code(results: &[TrialResult], absent_named: &[String]) -> ExitCode {
    println!("{}", summary_line(results));
    let strict = strict();
    let failing: Vec<String> = results
        .iter()
        .filter_map(|r| fails_run(r, strict).map(|why| format!("  {}: {why}", r.trial)))
        .collect();
    let counts = Counts::of(results.iter().map(|r| r.verdict));
    if !failing.is_empty() {
        eprintln!(
            "infergate: {} trial(s) fail the run{}:\n{}",
            failing.len(),
            if strict { " (INFERGATE_STRICT=1)" } else { "" },
            failing
                .iter()
                .map(|l| l.chars().take(400).collect::<String>())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    if !absent_named.is_empty() {
        eprintln!(
            "error: backend(s) named with --backend are absent here: {}",
            absent_named.join("; ")
        );
        return ExitCode::from(2);
    }
    if counts.ran() == 0 {
        eprintln!(
            "error: no trial ran ({} skipped): nothing was checked; fix the reasons above",
            counts.skip
        );
        return ExitCode::from(2);
    }
    if failing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub fn list(config: RunnerConfig) -> ExitCode {
    let runner = match load(config) {
        Ok(r) => r,
        Err(code) => return code,
    };
    for plan in runner.plan() {
        match runner.skip_reason(&plan) {
            None => println!("{}", plan.id),
            Some(skip) => println!("{} (ignored: {})", plan.id, skip.reason),
        }
    }
    ExitCode::SUCCESS
}

/// The directory to report on: the one given, or the shards merged into `--into`.
pub fn merge_shards(dirs: &[PathBuf], into: Option<&Path>) -> Result<PathBuf, ExitCode> {
    match (dirs, into) {
        ([one], None) => Ok(one.clone()),
        (_, None) => {
            eprintln!(
                "error: {} run directories given: name the merged directory with --into <dir>",
                dirs.len()
            );
            Err(ExitCode::from(2))
        }
        (shards, Some(into)) => match crate::report::merge::merge(shards, into) {
            Ok(m) => {
                for (shard, n) in &m.trials_per_shard {
                    eprintln!("infergate: merged {n} trial(s) from {}", shard.display());
                }
                for other in &m.other_machines {
                    eprintln!("infergate: warning: shard on a different machine: {other}");
                }
                Ok(m.dir)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Err(ExitCode::from(2))
            }
        },
    }
}

pub fn report(run_dir: &Path) -> ExitCode {
    match crate::report::rebuild(run_dir) {
        Ok((data, w)) => {
            println!("{}", w.report_md.display());
            println!("{}", w.junit.display());
            println!("{}", w.summary.display());
            for p in &w.plots {
                println!("{}", p.display());
            }
            let results: Vec<TrialResult> = data.trials.iter().map(|t| t.result.clone()).collect();
            exit_code(&results, &[])
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
