//! The gate runner: every gate × backend × scenario in `gates/` becomes one libtest-mimic trial named
//! `<gate-id>::<backend>[::<scenario>]`. Absent backends are ignored trials whose reason is printed;
//! a failed gate fails `cargo test`. Works with `--list`, `--exact`, several name filters (as
//! libtest takes them) and cargo-nextest.
//!
//! libtest knows pass, fail and ignored only. After its summary the harness prints its own, with
//! every verdict counted (PASS, FAIL, XFAIL, XPASS, INFO, SKIP — a SKIP decided while a trial ran
//! is counted as skipped there, although libtest counts it as passed). `INFERGATE_STRICT=1` fails
//! the run on every SKIP of a trial whose backend is usable here and on every XPASS. A run in which
//! no selected trial ran exits 2 (outside nextest, where each process runs one trial).
//!
//! After the trials, the run directory's report (`report.md`, `junit.xml`, plots) is rebuilt; the
//! plan (`plan.jsonl`) records every selected trial's plan-time skip, so the card lists them.
//!
//! Profile: `INFERGATE_PROFILE` (default `ci`). Trials run one at a time (timing gates must not share
//! the CPU) unless `--test-threads` says otherwise.

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use infergate::gate::verdict::strict;
use infergate::gate::TrialResult;
use infergate::runner::{
    harness_failure, split_test_filters, summary_line, verdict_line, Runner, RunnerConfig,
};
use libtest_mimic::{Arguments, Failed, Trial};

fn main() -> ExitCode {
    // The regression gate's paired mode starts this executable as a worker for each side.
    if let Some(code) = infergate::paired::worker::main_if_worker() {
        return code;
    }
    let raw: Vec<String> = std::env::args().collect();
    let (filters, rest) = split_test_filters(raw.get(1..).unwrap_or_default());
    let mut args = Arguments::from_iter(raw.iter().take(1).cloned().chain(rest));
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
    let strict = strict();
    // nextest runs every trial in its own process (`--exact <name>`): no process sees the whole
    // selection, so the first one records the whole plan.
    let under_nextest = std::env::var_os("NEXTEST_RUN_ID").is_some();
    let hit = |name: &str, pattern: &str| {
        if args.exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    };
    let selected = |name: &str| {
        (filters.is_empty() || filters.iter().any(|f| hit(name, f)))
            && !args.skip.iter().any(|s| hit(name, s))
    };
    let plan = runner.plan();
    let total = plan.len();
    let plans: Vec<_> = plan
        .into_iter()
        .filter(|p| selected(&p.id.to_string()))
        .collect();
    let records = runner.plan_records(&plans);
    let results: Arc<Mutex<Vec<TrialResult>>> = Arc::new(Mutex::new(Vec::new()));
    // Trials ignored at plan time never reach their closure: their skips count in the summary
    // (unless --ignored / --include-ignored runs them, then the run records the failure).
    let mut ignored = Vec::new();
    let trials: Vec<Trial> = plans
        .into_iter()
        .zip(&records)
        .map(|(plan, record)| {
            let skip = record.skip.clone();
            // Under strict, a skip of a usable backend is not ignored: it runs and fails.
            let ignore = skip
                .as_ref()
                .is_some_and(|s| !(strict && s.cause.fails_strict()));
            if let (true, Some(s)) = (ignore, &skip) {
                ignored.push(TrialResult::skipped(plan.id.clone(), s.clone()));
            }
            let runner = Arc::clone(&runner);
            let results = Arc::clone(&results);
            let planned_skip = skip.is_some();
            Trial::test(plan.id.to_string(), move || {
                let result = runner.run_trial(&plan);
                let failure = harness_failure(&result, strict, planned_skip);
                if result.skip().is_some() && failure.is_none() {
                    eprintln!(
                        "SKIP {} (counted as skipped in the infergate summary; libtest counts it as passed): {}",
                        result.trial, result.message
                    );
                }
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(result);
                failure.map_or(Ok(()), |m| Err(Failed::from(m)))
            })
            .with_ignored_flag(ignore)
        })
        .collect();
    if trials.len() < total {
        eprintln!(
            "infergate: {} of {total} trials selected by the filters",
            trials.len()
        );
    }
    if !ignored.is_empty() && !args.list {
        eprintln!(
            "infergate: {} trial(s) ignored, each with its reason:\n{}",
            ignored.len(),
            ignored
                .iter()
                .map(|r| format!("  {}: {}", r.trial, r.message))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let runs_ignored = args.ignored || args.include_ignored;
    if !args.list {
        let dir = runner.run_dir();
        match runner.write_manifest() {
            Ok(p) => eprintln!(
                "infergate: run {} → {}",
                runner.config.run_id,
                p.parent().unwrap_or(Path::new(".")).display()
            ),
            Err(e) => eprintln!("infergate: cannot write the manifest: {e}"),
        }
        let written = if under_nextest {
            dir.write_plan_once(&runner.plan_records(&runner.plan()))
                .map(|_| ())
        } else if runs_ignored {
            Ok(())
        } else {
            dir.append_plan(&records)
        };
        if let Err(e) = written {
            eprintln!("infergate: cannot write the plan: {e}");
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if args.list {
        return conclusion.exit_code();
    }
    let mut all = results.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if !runs_ignored {
        all.extend(ignored);
    }
    if all.is_empty() {
        return conclusion.exit_code();
    }
    println!(
        "infergate verdicts ({}):\n{}",
        runner.config.run_dir().display(),
        all.iter().map(verdict_line).collect::<Vec<_>>().join("\n")
    );
    println!("{}", summary_line(&all));
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
    if !under_nextest && all.iter().all(|r| !r.verdict.ran()) {
        eprintln!(
            "error: none of the {} selected trial(s) ran: nothing was checked; fix the reasons above",
            all.len()
        );
        return ExitCode::from(2);
    }
    conclusion.exit_code()
}
