//! Paired A/B mode: both sides of a comparison measured in this job, interleaved.
//!
//! Comparing with numbers stored in an earlier job on a shared machine caps what can be seen (the
//! machine's state between jobs moves timings by 10–25 %). Run in the same job, interleaved in
//! randomized order, two sides share every disturbance, and the per-round ratio cancels most of it
//! — RMIT (Abedi & Brecht, ICPE'17), Duet benchmarking (Bulej et al., ICPE'20), Laaber et al.
//! (EMSE 2019). A runtime bump is exactly the case where the old side can be reproduced: every
//! runtime here is a pinned, hash-checked artifact ([`crate::pins`]).
//!
//! How a paired trial runs ([`run`]):
//! 1. Each side is its own worker process ([`worker`]) with its own runtime (one ONNX Runtime
//!    library per process; one llama.cpp build per side), opened once.
//! 2. `warmup` generations per side, discarded.
//! 3. Rounds: in each, both sides generate once, in an order drawn from a seeded RNG (the seed
//!    and every round's order are recorded).
//! 4. Per metric, the per-round log slowdowns give a t-interval of the geometric-mean ratio;
//!    each metric is tested against the minimum effect with Holm's correction ([`stats`]).
//! 5. Answer: slower (a regression), same, or unknown. Unknown — the pair spread is too wide to
//!    exclude a slowdown, e.g. under load — gets `extra_rounds` more rounds, up to `max_rounds`;
//!    the error rate is split over the looks, so looking again cannot raise the false-alarm rate.
//!    Still unknown then: no conclusion, never a guess.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::backend::stretch::Phases;
use crate::backend::tweaks::Tweaks;
use crate::backend::BackendInfo;
use crate::baseline::metric::Metric;
use crate::pins::{Artifact, Fetched};

pub mod stats;
pub mod worker;

pub use stats::{Answer, PairedEstimate, Rule};
pub use worker::{Launch, Sample, Worker};

/// Where a side's runtime comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum SideRuntime {
    /// A pinned artifact (fetched, or built, before the workers start).
    Pinned { artifact: Artifact },
    /// Whatever this process would use (its own pins and overrides).
    Inherited,
}

/// One side of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Side {
    /// `baseline` or `candidate` with what it runs, e.g. `onnxruntime 1.31.1`.
    pub label: String,
    pub runtime: SideRuntime,
    #[serde(default, skip_serializing_if = "Tweaks::is_none")]
    pub tweaks: Tweaks,
}

/// What to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub backend: String,
    /// Catalog model name.
    pub model: String,
    pub prompt: Vec<u32>,
    pub gen_tokens: usize,
    pub metrics: Vec<Metric>,
}

/// Rounds and the decision rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Generations per side before the rounds, discarded.
    pub warmup: usize,
    /// Rounds before the first look.
    pub rounds: usize,
    /// Rounds added after an unknown answer.
    pub extra_rounds: usize,
    /// Cap on rounds.
    pub max_rounds: usize,
    /// Two-sided level of the reported intervals.
    pub level: f64,
    /// Family-wise false-alarm rate of a trial.
    pub alpha: f64,
    pub min_effect: f64,
    pub same_within: f64,
    pub seed: u64,
}

impl Settings {
    /// How many times the rounds can be analysed.
    pub fn looks(&self) -> usize {
        1 + self
            .max_rounds
            .saturating_sub(self.rounds)
            .div_ceil(self.extra_rounds.max(1))
    }

    pub fn rule(&self) -> Rule {
        Rule {
            alpha: self.alpha,
            min_effect: self.min_effect,
            same_within: self.same_within,
            looks: self.looks(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.rounds < 5 {
            return Err(format!("rounds = {} is fewer than 5", self.rounds));
        }
        if self.max_rounds < self.rounds {
            return Err(format!(
                "max_rounds = {} is fewer than rounds = {}",
                self.max_rounds, self.rounds
            ));
        }
        if self.max_rounds > self.rounds && self.extra_rounds == 0 {
            return Err("extra_rounds must be at least 1 when max_rounds > rounds".into());
        }
        if !(self.level > 0.5 && self.level < 1.0) {
            return Err(format!("level = {} is not in (0.5, 1)", self.level));
        }
        self.rule().validate()
    }
}

/// Which side went first in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Which {
    Baseline,
    Candidate,
}

/// One round: both sides' generations, and which ran first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    pub index: usize,
    pub first: Which,
    pub baseline: Sample,
    pub candidate: Sample,
}

/// One metric's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    pub metric: Metric,
    pub estimate: PairedEstimate,
    pub answer: Answer,
}

impl MetricResult {
    /// `e2e_ms ×1.009 [0.999, 1.020] same (pair SD 1.6 %)`.
    pub fn describe(&self) -> String {
        let e = &self.estimate;
        format!(
            "{} ×{:.3} [{:.3}, {:.3}] {} (pair SD {:.1} %)",
            self.metric.name(),
            e.ratio,
            e.lo,
            e.hi,
            self.answer.label(),
            e.sd_log * 100.0
        )
    }
}

/// The planted slowdown asked of a side and what was added, as a fraction of the phases it
/// stretched (summed over the rounds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlantedCheck {
    pub asked: f64,
    pub phases: Phases,
    pub added: f64,
}

/// Everything a paired comparison measured and concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedResult {
    pub backend: String,
    pub baseline: Side,
    pub candidate: Side,
    pub baseline_info: BackendInfo,
    pub candidate_info: BackendInfo,
    pub settings: Settings,
    pub rounds: Vec<Round>,
    /// How many times the rounds were analysed (1 = no extra rounds).
    pub looks: usize,
    pub metrics: Vec<MetricResult>,
    pub answer: Answer,
    pub elapsed_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planted: Option<PlantedCheck>,
}

impl PairedResult {
    /// Metric lines joined: `e2e_ms ×1.009 [0.999, 1.020] same; …`.
    pub fn describe_metrics(&self) -> String {
        self.metrics
            .iter()
            .map(MetricResult::describe)
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The metrics with a given answer.
    pub fn with_answer(&self, a: Answer) -> Vec<&'static str> {
        self.metrics
            .iter()
            .filter(|m| m.answer == a)
            .map(|m| m.metric.name())
            .collect()
    }
}

/// Fetch (or build) a side's runtime and return how its worker is launched. A llama.cpp sdist is
/// built on first use (minutes, cached per version).
pub fn prepare(side: &Side, progress: &mut dyn std::io::Write) -> Result<Launch, String> {
    let remove = vec!["ORT_DYLIB_PATH".to_string()];
    match &side.runtime {
        SideRuntime::Inherited => Ok(Launch::default()),
        SideRuntime::Pinned { artifact } => {
            match crate::pins::fetch(artifact, progress)
                .map_err(|e| format!("{}: {e}", side.label))?
            {
                Fetched::Library(_) => Ok(Launch {
                    set: vec![(crate::pins::ONNXRUNTIME_ENV.into(), artifact.requirement())],
                    remove,
                }),
                Fetched::LlamaCppBin { bin_dir, .. } => Ok(Launch {
                    set: vec![(
                        crate::assets::llama_cpp::ENV_BIN.into(),
                        bin_dir.display().to_string(),
                    )],
                    remove: Vec::new(),
                }),
            }
        }
    }
}

/// Measure `workload` on both sides in randomized interleaved rounds and decide. `progress` gets
/// one line per step and per look.
pub fn run(
    workload: &Workload,
    baseline: &Side,
    candidate: &Side,
    settings: &Settings,
    progress: &mut dyn std::io::Write,
) -> Result<PairedResult, String> {
    settings.validate()?;
    if workload.metrics.is_empty() {
        return Err("no metric to compare".into());
    }
    let clock = Instant::now();
    let launches = [prepare(baseline, progress)?, prepare(candidate, progress)?];
    let mut workers = Vec::with_capacity(2);
    let mut infos = Vec::with_capacity(2);
    for (side, launch) in [baseline, candidate].into_iter().zip(&launches) {
        let mut w = Worker::spawn(&side.label, launch)?;
        let info = w.open(&workload.backend, &workload.model, &side.tweaks)?;
        let _ = writeln!(
            progress,
            "paired: {} → {} {} at {}",
            side.label, info.engine, info.engine_version, info.location
        );
        infos.push(info);
        workers.push(w);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let generate = |w: &mut Worker| w.generate(&workload.prompt, workload.gen_tokens);
    for _ in 0..settings.warmup {
        let order = if rng.gen_bool(0.5) { [0, 1] } else { [1, 0] };
        for i in order {
            generate(&mut workers[i])?;
        }
    }
    let rule = settings.rule();
    let mut rounds: Vec<Round> = Vec::with_capacity(settings.max_rounds);
    let mut target = settings.rounds;
    let mut looks = 0;
    let (metrics, answer) = loop {
        while rounds.len() < target {
            let first = if rng.gen_bool(0.5) {
                Which::Baseline
            } else {
                Which::Candidate
            };
            let (b, c) = match first {
                Which::Baseline => {
                    let b = generate(&mut workers[0])?;
                    (b, generate(&mut workers[1])?)
                }
                Which::Candidate => {
                    let c = generate(&mut workers[1])?;
                    (generate(&mut workers[0])?, c)
                }
            };
            rounds.push(Round {
                index: rounds.len(),
                first,
                baseline: b,
                candidate: c,
            });
        }
        looks += 1;
        let metrics = analyse(&rounds, &workload.metrics, settings.level, &rule)?;
        let answers: Vec<Answer> = metrics.iter().map(|m| m.answer).collect();
        let answer = stats::overall(&answers);
        let _ = writeln!(
            progress,
            "paired: look {looks} after {} rounds: {} → {}",
            rounds.len(),
            metrics
                .iter()
                .map(MetricResult::describe)
                .collect::<Vec<_>>()
                .join("; "),
            answer.label()
        );
        if answer == Answer::Unknown && rounds.len() < settings.max_rounds {
            target = (rounds.len() + settings.extra_rounds).min(settings.max_rounds);
            continue;
        }
        break (metrics, answer);
    };
    let planted = candidate
        .tweaks
        .planted
        .map(|p| planted_check(&rounds, p.fraction, p.phases));
    Ok(PairedResult {
        backend: workload.backend.clone(),
        baseline: baseline.clone(),
        candidate: candidate.clone(),
        baseline_info: infos.remove(0),
        candidate_info: infos.remove(0),
        settings: *settings,
        rounds,
        looks,
        metrics,
        answer,
        elapsed_s: clock.elapsed().as_secs_f64(),
        planted,
    })
}

/// Estimates and answers of every metric over `rounds`.
pub fn analyse(
    rounds: &[Round],
    metrics: &[Metric],
    level: f64,
    rule: &Rule,
) -> Result<Vec<MetricResult>, String> {
    let mut estimates = Vec::with_capacity(metrics.len());
    for m in metrics {
        let values = |pick: &dyn Fn(&Round) -> &Sample| {
            rounds
                .iter()
                .map(|r| {
                    let s = pick(r);
                    m.value(&s.timings, s.cpu_ms)
                        .ok_or_else(|| format!("round {}: {} was not measured", r.index, m.name()))
                })
                .collect::<Result<Vec<f64>, String>>()
        };
        let b = values(&|r| &r.baseline)?;
        let c = values(&|r| &r.candidate)?;
        let logs = stats::log_slowdowns(&b, &c, m.direction())
            .map_err(|e| format!("{}: {e}", m.name()))?;
        estimates.push(stats::estimate(&logs, level).map_err(|e| format!("{}: {e}", m.name()))?);
    }
    let answers = stats::decide(&estimates, rule).map_err(|e| e.to_string())?;
    Ok(metrics
        .iter()
        .zip(estimates)
        .zip(answers)
        .map(|((m, estimate), answer)| MetricResult {
            metric: *m,
            estimate,
            answer,
        })
        .collect())
}

/// What a planted slowdown added on the candidate side, as a fraction of the phases it stretched.
fn planted_check(rounds: &[Round], asked: f64, phases: Phases) -> PlantedCheck {
    let (mut added, mut stretched) = (0.0, 0.0);
    for r in rounds {
        let t = &r.candidate.timings;
        added += r.candidate.planted_ms;
        stretched += match phases {
            Phases::All => t.prefill_ms + t.decode_ms,
            Phases::Prefill => t.prefill_ms,
            Phases::Decode => t.decode_ms,
        };
    }
    let base = stretched - added;
    PlantedCheck {
        asked,
        phases,
        added: if base > 0.0 { added / base } else { f64::NAN },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TimingSource;
    use crate::measure::RunTimings;

    fn settings() -> Settings {
        Settings {
            warmup: 1,
            rounds: 20,
            extra_rounds: 20,
            max_rounds: 60,
            level: 0.95,
            alpha: 0.05,
            min_effect: 0.01,
            same_within: 0.03,
            seed: 1,
        }
    }

    fn sample(e2e: f64, planted: f64) -> Sample {
        Sample {
            timings: RunTimings {
                prompt_tokens: 10,
                gen_tokens: 8,
                prefill_ms: e2e * 0.1,
                decode_ms: e2e * 0.9,
                e2e_ms: e2e,
                decode_steps: 7,
                timing_source: TimingSource::Harness,
                cold_start_ms: None,
                cached_prompt_tokens: None,
                memory_traffic: None,
            },
            cpu_ms: Some(e2e * 2.0),
            planted_ms: planted,
        }
    }

    #[test]
    fn looks_follow_the_round_budget() {
        assert_eq!(settings().looks(), 3);
        let s = Settings {
            max_rounds: 20,
            ..settings()
        };
        assert_eq!(s.looks(), 1);
        let s = Settings {
            max_rounds: 50,
            ..settings()
        };
        assert_eq!(s.looks(), 3);
        assert!(Settings {
            rounds: 3,
            ..settings()
        }
        .validate()
        .is_err());
        assert!(Settings {
            max_rounds: 10,
            ..settings()
        }
        .validate()
        .is_err());
        assert!(settings().validate().is_ok());
    }

    #[test]
    fn analysis_reads_every_metric_the_same_way_round_by_round() {
        // Candidate 10 % slower in every round, with round-to-round drift shared by both sides.
        let rounds: Vec<Round> = (0..20)
            .map(|i| {
                let drift = 1.0 + 0.05 * ((i % 5) as f64);
                Round {
                    index: i,
                    first: if i % 2 == 0 {
                        Which::Baseline
                    } else {
                        Which::Candidate
                    },
                    baseline: sample(100.0 * drift, 0.0),
                    candidate: sample(110.0 * drift, 10.0 * drift),
                }
            })
            .collect();
        let metrics = [Metric::E2eMs, Metric::DecodeTokensPerS, Metric::E2eCpuMs];
        let r = analyse(&rounds, &metrics, 0.95, &settings().rule()).unwrap();
        for m in &r {
            assert!((m.estimate.ratio - 1.1).abs() < 1e-9, "{}", m.describe());
            assert_eq!(m.answer, Answer::Slower, "{}", m.describe());
        }
        let check = planted_check(&rounds, 0.1, Phases::All);
        assert!((check.added - 0.1).abs() < 1e-9, "{check:?}");
        // A metric the rounds lack is an error naming it.
        let mut missing = rounds.clone();
        missing[3].candidate.cpu_ms = None;
        let e = analyse(&missing, &[Metric::E2eCpuMs], 0.95, &settings().rule()).unwrap_err();
        assert!(e.contains("round 3") && e.contains("e2e_cpu_ms"), "{e}");
    }
}
