//! Paired mode inside the regression gate: the baseline's runtime and this process's, measured
//! side by side in this job ([`crate::paired`]).

use super::details::{ComparisonMode, PairedSummary, RegressionDetails, NO_REGRESSION};
use super::params::RegressionParams;
use crate::baseline::rule;
use crate::baseline::ProvenanceChange;
use crate::gate::{Details, Evaluation, Part, Skip, SkipCause, Threshold, TrialContext};
use crate::paired::Answer;
use crate::pins::RuntimePin;
use crate::workload::{prompt_ids, Scenario};

/// Paired mode inside the gate: the baseline's runtime (fetched by its pin) and this process's
/// runtime, each in its own worker, rounds interleaved in a seeded random order; the answer of
/// [`crate::paired`] decides: slower → FAIL, same or faster → PASS, unknown after the capped
/// extra rounds → SKIP (inconclusive). A planted test slowdown goes to the current side.
pub(super) fn evaluate(
    ctx: &TrialContext<'_>,
    p: &RegressionParams,
    scenario: &Scenario,
    baseline: &RuntimePin,
    current: &RuntimePin,
    why: &str,
    tweaks: crate::backend::tweaks::Tweaks,
) -> Evaluation {
    let mode = ComparisonMode::Paired;
    let change = ProvenanceChange::Runtime {
        from: Box::new(baseline.clone()),
        to: Box::new(current.clone()),
    };
    let head = format!("[{}] {change}: ", mode.label());
    let fail = |e: String| Evaluation::error(format!("{head}{e}"));
    let Some(artifact) = baseline.artifact.clone() else {
        return fail(format!("{} has no fetchable artifact", baseline.short()));
    };
    let prompt = match prompt_ids(scenario, ctx.encode) {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot build the `{}` prompt: {e}", scenario.name)),
    };
    let workload = crate::paired::Workload {
        backend: ctx.backend_id().to_string(),
        model: ctx.model.name.clone(),
        prompt,
        gen_tokens: p.gen_tokens,
        metrics: p.metrics.clone(),
    };
    let planted = if tweaks.is_none() {
        String::new()
    } else {
        format!(" with {}", tweaks.describe())
    };
    let sides = (
        crate::paired::Side {
            label: format!("baseline ({})", baseline.short()),
            runtime: crate::paired::SideRuntime::Pinned { artifact },
            tweaks: Default::default(),
        },
        crate::paired::Side {
            label: format!("current ({}{planted})", current.short()),
            runtime: crate::paired::SideRuntime::Inherited,
            tweaks,
        },
    );
    let trial = ctx.trial.to_string();
    let seed = rule::seed_for(&[&trial, "paired"]);
    let settings = p.paired.settings(seed);
    let mut progress = std::io::sink();
    let r = match crate::paired::run(&workload, &sides.0, &sides.1, &settings, &mut progress) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let slower = r.with_answer(Answer::Slower);
    let text = format!(
        "{why}; {} rounds in {} look(s), seed {}, {:.0} s: {}",
        r.rounds.len(),
        r.looks,
        r.settings.seed,
        r.elapsed_s,
        r.describe_metrics()
    );
    let details = RegressionDetails {
        test_slowdown: tweaks.planted.map(|p| p.fraction),
        mode: Some(mode),
        changes: vec![change.to_string()],
        paired: Some(PairedSummary {
            baseline: baseline.clone(),
            candidate: current.clone(),
            rounds: r.rounds.len(),
            looks: r.looks,
            seed: r.settings.seed,
            answer: r.answer,
            metrics: r.metrics.clone(),
            elapsed_s: r.elapsed_s,
        }),
        ..Default::default()
    };
    let eval = match r.answer {
        Answer::Slower => Evaluation::judged(
            vec![Part::compare(
                NO_REGRESSION,
                slower.len() as f64,
                Threshold::equal(0.0),
                format!("{head}regression of {} (slower beyond {:.0} % at family-wise α {}): {text}", slower.join(", "), p.paired.min_effect * 100.0, p.paired.alpha),
            )],
            String::new(),
        ),
        Answer::Same | Answer::Faster => Evaluation::judged(
            vec![Part::compare(
                NO_REGRESSION,
                0.0,
                Threshold::equal(0.0),
                format!("{head}{}: {text}", r.answer.label()),
            )],
            String::new(),
        ),
        Answer::Unknown => Evaluation::skip(Skip::new(
            SkipCause::Inconclusive,
            format!("{head}inconclusive after the capped {} rounds (the pair spread is too wide to tell a {:.0} % slowdown from none, e.g. under load): {text}. Re-run on a quieter machine", r.rounds.len(), p.paired.same_within * 100.0),
        )),
    };
    eval.with_details(Details::Regression(Box::new(details)))
}
