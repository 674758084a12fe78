//! The gate runner: every gate × backend × scenario in `gates/` becomes one libtest-mimic trial named
//! `<gate-id>::<backend>[::<scenario>]`. Absent backends are ignored trials whose reason is printed;
//! a failed gate fails `cargo test`. Works with `--list`, `--exact`, name filters and cargo-nextest.
//!
//! After the trials, the run directory's report (`report.md`, `junit.xml`, plots) is rebuilt.
//!
//! Profile: `INFERGATE_PROFILE` (default `ci`). Trials run one at a time (timing gates must not share
//! the CPU) unless `--test-threads` says otherwise.

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use infergate::gate::Verdict;
use infergate::runner::{verdict_line, Runner, RunnerConfig};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    let config = RunnerConfig::from_env(Path::new(env!("CARGO_MANIFEST_DIR")), "ci");
    let runner = match Runner::new(config) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(101);
        }
    };
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    let verdicts = Arc::new(Mutex::new(Vec::new()));
    let mut skipped = Vec::new();
    // Trials ignored at plan time never reach their closure; the selected ones are recorded as SKIP
    // with their reason (results.jsonl, so the decision card and JUnit list every skip), unless
    // --ignored / --include-ignored will run them (then the run records the failure).
    let record_skips = !args.list && !args.ignored && !args.include_ignored;
    let selected = |name: &str| {
        let hit = |pattern: &str| {
            if args.exact {
                name == pattern
            } else {
                name.contains(pattern)
            }
        };
        args.filter.as_deref().is_none_or(hit) && !args.skip.iter().any(|s| hit(s))
    };
    let trials: Vec<Trial> = runner
        .plan()
        .into_iter()
        .map(|plan| {
            let skip = runner.skip_reason(&plan);
            if let Some(reason) = &skip {
                skipped.push(format!("  {}: {reason}", plan.name));
                if record_skips && selected(&plan.name) {
                    let result = runner.run_trial(&plan);
                    verdicts
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(verdict_line(&result));
                }
            }
            let runner = Arc::clone(&runner);
            let verdicts = Arc::clone(&verdicts);
            let name = plan.name.clone();
            let planned_skip = skip.is_some();
            Trial::test(name, move || {
                let result = runner.run_trial(&plan);
                verdicts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(verdict_line(&result));
                match result.verdict {
                    Verdict::Pass { .. } => Ok(()),
                    Verdict::Fail { reason } => Err(Failed::from(reason)),
                    // Reached with --ignored / --include-ignored: running a skipped trial is a failure.
                    Verdict::Skip { reason } if planned_skip => {
                        Err(Failed::from(format!("cannot run: {reason}")))
                    }
                    // A trial that ran and could not conclude (e.g. regression.baseline on a machine
                    // far from its baseline's state): libtest-mimic cannot ignore at run time, so it
                    // is not failed; the SKIP and its reason are printed now and in the verdict list.
                    Verdict::Skip { reason } => {
                        eprintln!("SKIP {}: {reason}", result.trial);
                        Ok(())
                    }
                }
            })
            .with_ignored_flag(skip.is_some())
        })
        .collect();
    if !skipped.is_empty() {
        eprintln!(
            "infergate: {} trial(s) ignored because their backend is absent:\n{}",
            skipped.len(),
            skipped.join("\n")
        );
    }
    if !args.list {
        match runner.write_manifest() {
            Ok(p) => eprintln!(
                "infergate: run {} → {}",
                runner.config.run_id,
                p.parent().unwrap_or(Path::new(".")).display()
            ),
            Err(e) => eprintln!("infergate: cannot write the manifest: {e}"),
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    let lines = verdicts.lock().unwrap_or_else(|e| e.into_inner());
    if !lines.is_empty() {
        println!(
            "infergate verdicts ({}):\n{}",
            runner.config.run_dir().display(),
            lines.join("\n")
        );
        // The decision card of the run directory so far (under nextest, every trial's process
        // rebuilds it, so the last one covers the whole run).
        let dir = runner.config.run_dir();
        match infergate::report::RunData::load(&dir)
            .map(|d| d.with_specs(&runner.specs))
            .and_then(|d| infergate::report::write_all(&d))
        {
            Ok(w) => println!("infergate decision card: {}", w.report_md.display()),
            Err(e) => eprintln!(
                "infergate: cannot write the report of {}: {e}",
                dir.display()
            ),
        }
    }
    conclusion.exit_code()
}
