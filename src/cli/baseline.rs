//! `infergate baseline show`, `update` and `migrate`.

use std::io::Write;
use std::process::ExitCode;

use crate::baseline::{Fingerprint, Overrides, Settings};
use crate::gate::verdict::fails_run;
use crate::gate::{Check, GateSpec, Verdict};
use crate::runner::{verdict_line, Runner, RunnerConfig};

/// Regression gates of a gate directory (their baselines are what `show` and `update` are about).
fn regression_specs(specs: &[GateSpec]) -> Vec<&GateSpec> {
    specs
        .iter()
        .filter(|s| matches!(s.check, Check::Regression(_)))
        .collect()
}

/// The gate files of the checkout; an error is printed and is exit status 2.
fn load_specs(config: &RunnerConfig) -> Result<Vec<GateSpec>, ExitCode> {
    crate::gate::spec::load_dir(&config.gates_dir).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

/// Print what is stored for this machine, gate by gate. Fails on a corrupt, foreign or
/// newer-schema file (the error names it).
pub fn show(config: &RunnerConfig, out: &mut dyn Write) -> ExitCode {
    let specs = match load_specs(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let settings = Settings::current();
    let mut code = ExitCode::SUCCESS;
    let gates = regression_specs(&specs);
    if gates.is_empty() {
        let _ = writeln!(out, "no regression gate in {}", config.gates_dir.display());
    }
    for spec in gates {
        let Some(model) = crate::model::catalog::lookup(&spec.model) else {
            continue;
        };
        let fp = Fingerprint::detect(&[model]);
        let store = settings.store_for(&spec.path);
        let id = fp.id();
        let _ = writeln!(
            out,
            "{}: this machine is fingerprint {id} ({})",
            spec.id,
            store.dir(&id).display()
        );
        let gpus = if fp.gpus.is_empty() {
            "none".to_string()
        } else {
            fp.gpus.join(", ")
        };
        let _ = writeln!(
            out,
            "  cpu: {}, {} cores; gpus: {gpus}; infergate build: {}",
            fp.cpu_model, fp.available_cores, fp.build_profile
        );
        let drivers = crate::baseline::fingerprint::gpu_drivers();
        let runtimes: Vec<String> = spec
            .backends
            .iter()
            .map(|b| match crate::baseline::fingerprint::current_runtime(b) {
                Some(pin) => format!("{b}: {}", pin.short()),
                None => format!("{b}: (no pinnable runtime here)"),
            })
            .collect();
        let _ = writeln!(
            out,
            "  runtimes now (provenance, not part of the fingerprint): {}",
            runtimes.join("; ")
        );
        let _ = writeln!(
            out,
            "  models: {}",
            fp.models
                .iter()
                .map(|(k, v)| format!("{k} sha256 {v}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        match store.load(&id, &spec.id) {
            Err(e) => {
                let _ = writeln!(out, "  ERROR: {e}");
                code = ExitCode::FAILURE;
            }
            Ok(None) => {
                let others: Vec<String> = store
                    .fingerprint_ids()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|d| *d != id)
                    .collect();
                let _ = writeln!(out, "  no baseline recorded for this machine; record one with `infergate baseline update --gate {}` (until then a trial compares only in paired mode, when another machine's record ran on a runtime that differs from this one's)", spec.id);
                if !others.is_empty() {
                    let _ = writeln!(
                        out,
                        "  stored for other fingerprints: {}",
                        others.join(", ")
                    );
                }
            }
            Ok(Some(file)) => {
                let _ = writeln!(
                    out,
                    "  {} ({} records):",
                    file.path.display(),
                    file.records.len()
                );
                for r in &file.records {
                    let commit = r
                        .provenance
                        .git_commit
                        .as_deref()
                        .map_or("?", |c| &c[..c.len().min(10)]);
                    let dirty = if r.provenance.git_dirty == Some(true) {
                        "+dirty"
                    } else {
                        ""
                    };
                    let _ = writeln!(
                        out,
                        "    {:<40} median {:>10.3} {:<8} n={:<3} {:?}  recorded {} commit {commit}{dirty} run {}",
                        r.label(),
                        r.median,
                        r.unit,
                        r.samples.len(),
                        r.direction,
                        r.provenance.recorded_utc,
                        r.provenance.run_id
                    );
                    let changes = r.provenance.changes(
                        crate::baseline::fingerprint::current_runtime(&r.backend).as_ref(),
                        &drivers,
                    );
                    if !changes.is_empty() {
                        let names: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
                        let _ = writeln!(out, "      compared across: {}", names.join("; "));
                    }
                }
            }
        }
    }
    code
}

/// Run the regression trials matching the filters in record mode (the same as
/// `INFERGATE_UPDATE_BASELINES=1`), printing one verdict line per trial with what changed.
pub fn update(
    config: RunnerConfig,
    gate: Option<String>,
    backend: Option<String>,
    scenario: Option<String>,
    force: bool,
) -> ExitCode {
    let overrides = Overrides {
        update: true,
        force_write: force,
    };
    crate::baseline::set_overrides(Some(overrides));
    let settings = Settings::current();
    if let Err(e) = &settings.test_slowdown {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Some(reason) = settings.write_policy().refusal() {
        eprintln!("error: baselines not updated: {reason}");
        return ExitCode::from(2);
    }
    let runner = match Runner::new(config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let plans: Vec<_> = runner
        .select(gate.as_deref(), backend.as_deref(), scenario.as_deref())
        .into_iter()
        .filter(|p| matches!(runner.specs[p.gate].check, Check::Regression(_)))
        .collect();
    if plans.is_empty() {
        eprintln!("error: no regression trial matches the filters");
        return ExitCode::from(2);
    }
    if let Err(e) = runner.write_manifest() {
        eprintln!(
            "error: cannot write the manifest in {}: {e}",
            runner.config.run_dir().display()
        );
        return ExitCode::from(2);
    }
    eprintln!(
        "infergate: recording baselines, run {} ({} trials, profile {})",
        runner.config.run_id,
        plans.len(),
        runner.config.profile
    );
    let (mut failed, mut skipped) = (0, 0);
    for (i, plan) in plans.iter().enumerate() {
        eprintln!("[{}/{}] {} …", i + 1, plans.len(), plan.id);
        let r = runner.run_trial(plan);
        println!("{}", verdict_line(&r));
        failed += usize::from(fails_run(&r, false).is_some());
        skipped += usize::from(r.verdict == Verdict::Skip);
    }
    eprintln!(
        "infergate: {} recorded, {failed} failed, {skipped} skipped",
        plans.len() - failed - skipped
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `infergate baseline migrate`: rewrite older-schema baselines of the checkout's regression gates.
pub fn migrate(config: &RunnerConfig, out: &mut dyn Write) -> ExitCode {
    let specs = match load_specs(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let settings = Settings::current();
    let mut stores: Vec<crate::baseline::BaselineStore> = regression_specs(&specs)
        .iter()
        .map(|s| settings.store_for(&s.path))
        .collect();
    stores.dedup();
    for store in stores {
        match crate::baseline::migrate::migrate(&store) {
            Ok(done) if done.is_empty() => {
                let _ = writeln!(out, "{}: nothing to migrate", store.root().display());
            }
            Ok(done) => {
                for m in done {
                    let _ = writeln!(out, "{}: {m}", store.root().display());
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
