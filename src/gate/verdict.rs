//! The verdict rule, in one place.
//!
//! A gate reports one [`Finding`] per part of its claim ([`Part`]); [`derive`] turns the findings,
//! the gate file's known-failure declarations and the health of the trial's runs into one
//! [`Verdict`]:
//!
//! | verdict | when |
//! |---|---|
//! | PASS  | every part was checked on this backend and held, and no run failed |
//! | FAIL  | a part did not hold (and is not a declared known failure); a part that can be checked here produced no data; a run failed beyond the gate's tolerated fraction; a declared known failure fell past its guard; the trial could not be set up |
//! | XFAIL | every part that did not hold is a declared known failure of this backend (× scenario), within its guard |
//! | XPASS | a part declared as a known failure held: the declaration is stale and must be removed |
//! | INFO  | nothing failed, but a part was not checked on this backend (it cannot be, e.g. no cache-free recompute path) or only reports (no threshold, or one that cannot fail by construction) |
//! | SKIP  | the trial could not run here; the reason says why and what fixes it |
//!
//! Precedence when parts disagree: FAIL > XPASS > XFAIL > INFO > PASS.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::finding::{Finding, Part, Threshold};
use super::known::KnownFailure;
use super::RunCounts;

/// Why a trial did not run, and whether that is acceptable under `INFERGATE_STRICT=1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipCause {
    /// A backend of the trial cannot run on this machine (runtime not installed, no GPU).
    BackendAbsent,
    /// The trial means nothing on this machine (a negative control whose "lie" is true here).
    NotApplicable,
    /// The backend runs here but something the trial needs is missing (a power sensor, a stored
    /// baseline). Fails the run under `INFERGATE_STRICT=1`.
    Precondition,
    /// The trial ran and could not conclude (e.g. the machine's own speed moved since the
    /// baseline). Fails the run under `INFERGATE_STRICT=1`.
    Inconclusive,
}

impl SkipCause {
    /// Whether `INFERGATE_STRICT=1` turns a skip of this cause into a failure: every skip of a
    /// trial whose backend is usable here, unless the trial means nothing on this machine.
    pub fn fails_strict(self) -> bool {
        matches!(self, SkipCause::Precondition | SkipCause::Inconclusive)
    }
}

/// A trial that could not run: the cause and the reason with its fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skip {
    pub cause: SkipCause,
    pub reason: String,
}

impl Skip {
    pub fn new(cause: SkipCause, reason: impl Into<String>) -> Skip {
        Skip {
            cause,
            reason: reason.into(),
        }
    }
}

/// What a trial produced, before the rule is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The trial ran: one finding per part of its claim.
    Judged {
        parts: Vec<Part>,
    },
    Skipped(Skip),
    /// The trial could not be set up or its evidence could not be written (a FAIL with the error).
    Error {
        message: String,
    },
}

/// The verdict of one trial (see the module documentation for the rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Xfail,
    Xpass,
    Info,
    Skip,
}

impl Verdict {
    pub const ALL: [Verdict; 6] = [
        Verdict::Pass,
        Verdict::Fail,
        Verdict::Xfail,
        Verdict::Xpass,
        Verdict::Info,
        Verdict::Skip,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Xfail => "XFAIL",
            Verdict::Xpass => "XPASS",
            Verdict::Info => "INFO",
            Verdict::Skip => "SKIP",
        }
    }

    /// Whether the trial ran (everything but SKIP).
    pub fn ran(self) -> bool {
        self != Verdict::Skip
    }

    /// Rank for aggregating trials: the worst verdict of a gate leads its row.
    fn severity(self) -> u8 {
        match self {
            Verdict::Fail => 5,
            Verdict::Xpass => 4,
            Verdict::Xfail => 3,
            Verdict::Info => 2,
            Verdict::Pass => 1,
            Verdict::Skip => 0,
        }
    }

    /// The worst of several verdicts (FAIL > XPASS > XFAIL > INFO > PASS > SKIP).
    pub fn worst(vs: impl IntoIterator<Item = Verdict>) -> Option<Verdict> {
        vs.into_iter().max_by_key(|v| v.severity())
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Trials per verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub pass: usize,
    pub fail: usize,
    pub xfail: usize,
    pub xpass: usize,
    pub info: usize,
    pub skip: usize,
}

impl Counts {
    pub fn of(verdicts: impl IntoIterator<Item = Verdict>) -> Counts {
        let mut c = Counts::default();
        for v in verdicts {
            *c.slot(v) += 1;
        }
        c
    }
    fn slot(&mut self, v: Verdict) -> &mut usize {
        match v {
            Verdict::Pass => &mut self.pass,
            Verdict::Fail => &mut self.fail,
            Verdict::Xfail => &mut self.xfail,
            Verdict::Xpass => &mut self.xpass,
            Verdict::Info => &mut self.info,
            Verdict::Skip => &mut self.skip,
        }
    }
    pub fn get(&self, v: Verdict) -> usize {
        match v {
            Verdict::Pass => self.pass,
            Verdict::Fail => self.fail,
            Verdict::Xfail => self.xfail,
            Verdict::Xpass => self.xpass,
            Verdict::Info => self.info,
            Verdict::Skip => self.skip,
        }
    }
    pub fn total(&self) -> usize {
        Verdict::ALL.iter().map(|v| self.get(*v)).sum()
    }
    pub fn ran(&self) -> usize {
        self.total() - self.skip
    }
}

/// `3 PASS, 1 FAIL, 2 XFAIL, 0 XPASS, 4 INFO, 5 SKIP`: every verdict, zeros included.
impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = Verdict::ALL
            .iter()
            .map(|v| format!("{} {}", self.get(*v), v.label()))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

/// How many of a trial's runs may fail before the trial fails (the gate file's
/// `tolerated_failed_run_fraction`, default 0: a run that lost samples makes the trial invalid,
/// MLPerf's rule, not a smaller PASS).
pub const RUNS_PART: &str = "failed_runs";

/// The `failed_runs` part every trial with recorded runs gets: the fraction of its runs that were
/// degraded or errored, against the tolerated fraction. `None` when the trial recorded no run.
pub fn runs_part(runs: &RunCounts, reasons: &[String], tolerated: f64) -> Option<Part> {
    if runs.recorded == 0 {
        return None;
    }
    let failed = runs.degraded + runs.error;
    let fraction = failed as f64 / runs.recorded as f64;
    let detail = if failed == 0 && runs.projected == 0 {
        format!("all {} recorded runs ok", runs.recorded)
    } else if failed == 0 {
        format!(
            "no recorded run failed; {} of {} stopped early and were projected, kept out of every aggregate",
            runs.projected, runs.recorded
        )
    } else {
        format!(
            "{failed} of {} recorded runs failed ({} errored, {} degraded{}): {}",
            runs.recorded,
            runs.error,
            runs.degraded,
            if runs.projected > 0 {
                format!("; {} more stopped early and were projected", runs.projected)
            } else {
                String::new()
            },
            reasons
                .iter()
                .map(|r| r.chars().take(160).collect::<String>())
                .collect::<Vec<_>>()
                .join(" | ")
        )
    };
    Some(Part::compare(
        RUNS_PART,
        fraction,
        Threshold::at_most(tolerated),
        detail,
    ))
}

/// The verdict and its message, derived from everything a trial produced (the only place a
/// verdict is decided). `declared` are the gate file's known failures that apply to this trial;
/// the one that made the verdict XFAIL or XPASS is returned with it.
pub fn derive(
    outcome: &Outcome,
    summary: &str,
    declared: &[KnownFailure],
) -> (Verdict, String, Option<KnownFailure>) {
    let with_summary = |head: String| {
        if summary.is_empty() {
            head
        } else if head.is_empty() {
            summary.to_string()
        } else {
            format!("{head} | {summary}")
        }
    };
    let parts = match outcome {
        Outcome::Skipped(s) => return (Verdict::Skip, s.reason.clone(), None),
        Outcome::Error { message } => return (Verdict::Fail, with_summary(message.clone()), None),
        Outcome::Judged { parts } => parts,
    };
    if parts.is_empty() {
        return (
            Verdict::Fail,
            with_summary("the gate judged no part of its claim".into()),
            None,
        );
    }
    let mut verdicts = Vec::with_capacity(parts.len());
    let mut words = Vec::with_capacity(parts.len());
    let mut applied = None;
    for p in parts {
        let declaration = declared.iter().find(|k| k.part == p.name);
        let (v, text) = match (&p.finding, declaration) {
            (Finding::Held { .. }, None) => (Verdict::Pass, p.describe()),
            (Finding::Held { .. }, Some(k)) => {
                applied = Some(k.clone());
                (
                    Verdict::Xpass,
                    format!(
                        "{} — it holds although it is declared a known failure ({}): remove that declaration from the gate file",
                        p.describe(),
                        k.describe()
                    ),
                )
            }
            (Finding::NotHeld { .. }, None) => (Verdict::Fail, format!("NOT HELD: {}", p.describe())),
            (
                Finding::NotHeld {
                    measured,
                    threshold,
                },
                Some(k),
            ) => match k.guard {
                Some(g) if !threshold.with_value(g).holds(*measured) => (
                    Verdict::Fail,
                    format!(
                        "NOT HELD beyond the guard: {} — declared a known failure ({}) but past its guard {}: the measured level itself regressed",
                        p.describe(),
                        k.describe(),
                        threshold.with_value(g)
                    ),
                ),
                guard => {
                    applied = Some(k.clone());
                    let guard = guard
                        .map(|g| format!(", within its guard {}", threshold.with_value(g)))
                        .unwrap_or_default();
                    (
                        Verdict::Xfail,
                        format!(
                            "known failure: {} ({}{guard})",
                            p.describe(),
                            k.describe()
                        ),
                    )
                }
            },
            (Finding::NoData { .. }, _) => (Verdict::Fail, format!("NO DATA: {}", p.describe())),
            (Finding::NotChecked { .. }, _) | (Finding::Reported { .. }, _) => {
                (Verdict::Info, p.describe())
            }
        };
        verdicts.push(v);
        words.push(text);
    }
    let verdict = Verdict::worst(verdicts).unwrap_or(Verdict::Fail);
    (verdict, with_summary(words.join("; ")), applied)
}

/// `INFERGATE_STRICT=1` (for guarding CI jobs and release sign-off): every SKIP of a trial whose
/// backend is usable here ([`crate::gate::SkipCause::fails_strict`]) fails the run, and so does
/// every XPASS (a known-failure declaration that no longer applies must be removed).
pub fn strict() -> bool {
    std::env::var("INFERGATE_STRICT").is_ok_and(|v| v == "1")
}

/// Why a result fails the run, if it does: FAIL always; under strict, a SKIP of a usable backend
/// and an XPASS.
pub fn fails_run(r: &super::TrialResult, strict: bool) -> Option<String> {
    match r.verdict {
        Verdict::Fail => Some(r.message.clone()),
        Verdict::Xpass if strict => Some(format!(
            "INFERGATE_STRICT=1: XPASS fails the run until the stale known-failure declaration is removed: {}",
            r.message
        )),
        Verdict::Skip if strict && r.skip().is_some_and(|s| s.cause.fails_strict()) => Some(format!(
            "INFERGATE_STRICT=1: a skip of a trial whose backend is usable here fails the run: {}",
            r.message
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::finding::number;

    fn known(part: &str, guard: Option<f64>) -> KnownFailure {
        KnownFailure {
            backends: vec!["llama-cpp".into()],
            scenarios: vec!["long".into()],
            models: vec!["smollm2-135m-instruct".into()],
            part: part.into(),
            measured: 0.86,
            guard,
            date: chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
            machine: "2-core CI machine".into(),
            reason: "prefill-heavy on 2 cores".into(),
        }
    }

    fn judged(parts: Vec<Part>) -> Outcome {
        Outcome::Judged { parts }
    }

    #[test]
    fn pass_only_when_every_part_held() {
        let held = Part::compare("decode_fraction", 0.95, Threshold::above(0.9), "");
        let (v, m, _) = derive(&judged(vec![held.clone()]), "s", &[]);
        assert_eq!(v, Verdict::Pass, "{m}");
        // Planted: a second part the backend cannot check (item 2): not a PASS.
        let not_checked = Part::not_checked("kv_equals_recompute", "no cache-free path");
        let (v, m, _) = derive(&judged(vec![held.clone(), not_checked]), "s", &[]);
        assert_eq!(v, Verdict::Info, "{m}");
        assert!(m.contains("not checked: no cache-free path"), "{m}");
        // Planted: a part that can be checked but produced nothing: FAIL.
        let no_data = Part::no_data("kv_equals_recompute", "recompute failed to run");
        assert_eq!(
            derive(&judged(vec![held, no_data]), "", &[]).0,
            Verdict::Fail
        );
    }

    #[test]
    fn a_lowered_threshold_is_not_a_pass_but_a_declared_known_failure() {
        // Item 1: 0.89 against the claim's 0.9 used to PASS under a per-backend 0.8.
        let part = Part::compare("decode_fraction", 0.89, Threshold::above(0.9), "");
        let (v, m, _) = derive(&judged(vec![part.clone()]), "", &[]);
        assert_eq!(v, Verdict::Fail, "{m}");
        let (v, m, applied) = derive(
            &judged(vec![part]),
            "",
            &[known("decode_fraction", Some(0.8))],
        );
        assert_eq!(v, Verdict::Xfail, "{m}");
        assert!(
            m.contains("0.86") && m.contains("2026-11-27") && m.contains("> 0.8"),
            "{m}"
        );
        assert!(applied.is_some());
        // Past the guard: the measured level regressed, FAIL despite the declaration.
        let low = Part::compare("decode_fraction", 0.75, Threshold::above(0.9), "");
        let (v, m, _) = derive(
            &judged(vec![low]),
            "",
            &[known("decode_fraction", Some(0.8))],
        );
        assert_eq!(v, Verdict::Fail, "{m}");
        assert!(m.contains("guard"), "{m}");
    }

    #[test]
    fn a_declared_failure_that_holds_is_an_xpass_asking_to_remove_it() {
        let part = Part::compare("decode_fraction", 0.93, Threshold::above(0.9), "");
        let (v, m, _) = derive(&judged(vec![part]), "", &[known("decode_fraction", None)]);
        assert_eq!(v, Verdict::Xpass);
        assert!(m.contains("remove that declaration"), "{m}");
        // A declaration for another part does not excuse this one.
        let part = Part::compare("decode_fraction", 0.5, Threshold::above(0.9), "");
        assert_eq!(
            derive(
                &judged(vec![part]),
                "",
                &[known("kv_equals_recompute", None)]
            )
            .0,
            Verdict::Fail
        );
    }

    #[test]
    fn reports_only_is_info_and_failures_lead() {
        let info = Part::reported("winner", None, "no winner: n = 3 < 10 per side");
        assert_eq!(
            derive(&judged(vec![info.clone()]), "", &[]).0,
            Verdict::Info
        );
        let fail = Part::compare("x", 2.0, Threshold::below(1.0), "");
        assert_eq!(derive(&judged(vec![info, fail]), "", &[]).0, Verdict::Fail);
        assert_eq!(derive(&judged(vec![]), "", &[]).0, Verdict::Fail);
        let nan = Part::compare("x", f64::NAN, Threshold::below(1.0), "");
        assert!(matches!(nan.finding, Finding::NoData { .. }));
    }

    #[test]
    fn failed_runs_fail_the_trial_unless_tolerated() {
        // Item 13: 4 of 10 measured runs errored (llama-server killed) and the trial said PASS.
        let runs = RunCounts {
            stated: 13,
            recorded: 13,
            ok: 9,
            degraded: 0,
            error: 4,
            warmup: 3,
            projected: 0,
        };
        let reasons = vec!["llama-server: connection refused".to_string()];
        let part = runs_part(&runs, &reasons, 0.0).unwrap();
        let held = Part::compare("decode_fraction", 0.95, Threshold::above(0.9), "");
        let (v, m, _) = derive(&judged(vec![held.clone(), part]), "", &[]);
        assert_eq!(v, Verdict::Fail, "{m}");
        assert!(
            m.contains("4 of 13 recorded runs failed") && m.contains("connection refused"),
            "{m}"
        );
        let tolerated = runs_part(&runs, &reasons, 0.5).unwrap();
        assert_eq!(
            derive(&judged(vec![held, tolerated]), "", &[]).0,
            Verdict::Pass
        );
        assert!(runs_part(&RunCounts::default(), &[], 0.0).is_none());
        // Item 7: runs that stopped early are kept out of the aggregates and named, not "all ok".
        let projected = RunCounts {
            stated: 13,
            recorded: 13,
            ok: 10,
            projected: 3,
            warmup: 3,
            ..RunCounts::default()
        };
        let part = runs_part(&projected, &[], 0.0).unwrap();
        assert!(
            part.detail
                .contains("3 of 13 stopped early and were projected"),
            "{part:?}"
        );
    }

    #[test]
    fn counts_name_every_verdict() {
        let c = Counts::of([Verdict::Pass, Verdict::Skip, Verdict::Xfail, Verdict::Skip]);
        assert_eq!(
            c.to_string(),
            "1 PASS, 0 FAIL, 1 XFAIL, 0 XPASS, 0 INFO, 2 SKIP"
        );
        assert_eq!((c.ran(), c.total()), (2, 4));
        assert_eq!(number(0.891234), "0.8912");
        assert_eq!(number(134515008.0), "134515008");
        assert_eq!(number(12.3456), "12.35");
        assert_eq!(number(0.001), "0.001");
        assert_eq!(number(0.00000001215), "1.215e-8");
        assert_eq!(number(0.9), "0.9");
    }
}
