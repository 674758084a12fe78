//! Stored mode: the trial's series compared with this machine's stored numbers, first series and
//! (after a suspected regression) a re-measured one; and update mode, which records the series
//! instead.

use super::attempt::{clean, compare_attempt, Attempt, MachineState};
use super::details::{ComparisonMode, RegressionDetails, NO_REGRESSION, REMEASURE};
use super::params::RegressionParams;
use super::series::measure;
use crate::backend::registry::{self, Engine};
use crate::baseline::rule;
use crate::baseline::session::{Recording, Session, Stored};
use crate::baseline::{record_command, ProvenanceChange, Settings};
use crate::gate::{Details, Evaluation, Part, Skip, SkipCause, Threshold, TrialContext};
use crate::measure::RunRecord;
use crate::roofline::probe::Probe;
use crate::workload::{prompt_ids, Scenario};

/// Stored mode (`against` = this machine's stored numbers and what changed since their recording)
/// or update mode (`against` = `None`: the first series is recorded as the new baseline through
/// `session`). A suspected regression is measured again before it fails the trial.
pub(super) fn evaluate(
    ctx: &TrialContext<'_>,
    p: &RegressionParams,
    session: &Session<'_>,
    settings: &Settings,
    scenario: &Scenario,
    planted: Option<f64>,
    against: Option<(Stored, Vec<ProvenanceChange>)>,
) -> Evaluation {
    let fail = Evaluation::error;
    let (stored, changes) = match against {
        Some((stored, changes)) => (Some(stored), changes),
        None => (None, Vec::new()),
    };
    let prompt = match prompt_ids(scenario, ctx.encode) {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot build the `{}` prompt: {e}", scenario.name)),
    };
    let plan = |sub: Option<&str>| ctx.series(sub, scenario.name, prompt.clone(), p.gen_tokens);
    let first_plan = plan(None);
    let mut stated = first_plan.stated_runs();
    let probe = Probe::for_this_machine();
    let mut opened = ctx.open();
    // Only in-process ONNX Runtime timings can be stretched (see backend::tweaks).
    let note = match (planted, &opened) {
        (None, _) => String::new(),
        (Some(f), Ok(b)) if registry::spec(&b.info().id).map(|s| s.engine()) == Some(Engine::OnnxRuntime) => format!("[planted test slowdown {f} active (INFERGATE_TEST_SLOWDOWN)] "),
        (Some(f), _) => format!("[INFERGATE_TEST_SLOWDOWN={f} is set but does not affect this backend's engine-reported timings] "),
    };
    let (mut records, first) = measure(&mut opened, &first_plan, &probe, &p.metrics);
    if let Err(e) = ctx.log(&records) {
        return fail(e).with_runs(&records, stated);
    }
    let mut details = RegressionDetails {
        test_slowdown: planted,
        mode: stored.as_ref().map(|_| ComparisonMode::Stored),
        changes: changes.iter().map(ToString::to_string).collect(),
        ..Default::default()
    };
    // Every stored-mode verdict says which mode decided and names what changed since the recording.
    let note = if stored.is_some() {
        let changed = if changes.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = changes.iter().map(ToString::to_string).collect();
            format!(
                "{} (cannot be re-run side by side: compared with the stored numbers): ",
                names.join("; ")
            )
        };
        format!("[{}] {note}{changed}", ComparisonMode::Stored.label())
    } else {
        note
    };
    let first = match first {
        Ok(s) => s,
        Err(e) => {
            return fail(format!("{note}{e}"))
                .with_runs(&records, stated)
                .with_details(Details::Regression(Box::new(details)))
        }
    };
    for (m, v) in &first.values {
        if let Some(med) = crate::gate::median(v) {
            details.medians.insert(*m, med);
        }
    }
    details.probe_ms_median = crate::gate::median(&first.probe_ms);
    let done = |parts: Result<Part, Skip>, records: &[RunRecord], stated, details| match parts {
        Ok(part) => Evaluation::judged(vec![part], String::new())
            .with_runs(records, stated)
            .with_details(Details::Regression(Box::new(details))),
        Err(skip) => Evaluation::skip(skip)
            .with_runs(records, stated)
            .with_details(Details::Regression(Box::new(details))),
    };

    let Some(stored) = stored else {
        let recording = Recording {
            repo: ctx
                .spec
                .path
                .parent()
                .and_then(|g| g.parent())
                .unwrap_or(std::path::Path::new(".")),
            run_id: ctx.run_id,
            profile: profile_name(ctx),
        };
        let recorded = session.record(
            &recording,
            &first.values,
            &first.probe_ms,
            &settings.write_policy(),
        );
        return match recorded {
            Ok(report) => done(
                Ok(Part::reported(
                    NO_REGRESSION,
                    None,
                    format!("{note}recorded baseline (update mode, nothing compared): {report}"),
                )),
                &records,
                stated,
                details,
            ),
            Err(e) => fail(format!("{note}update requested but {e}"))
                .with_runs(&records, stated)
                .with_details(Details::Regression(Box::new(details))),
        };
    };

    let one = match compare_attempt(ctx, p, &first, &stored, "1") {
        Ok(c) => c,
        Err(e) => {
            return fail(format!("{note}{e}"))
                .with_runs(&records, stated)
                .with_details(Details::Regression(Box::new(details)))
        }
    };
    one.insert_into(&mut details, 1);
    let suspects = one.regressed();
    let hint = |a: &Attempt| {
        let improved = a.improved();
        if improved.is_empty() || a.state == MachineState::Faster {
            String::new()
        } else {
            format!("; {} improved beyond the band: if the change is intended, update the baseline with {}", improved.join(", "), record_command(&ctx.spec.id, ctx.backend_id()))
        }
    };
    let against = format!(
        "against baseline run {}",
        stored
            .records
            .first()
            .map_or("?", |b| b.provenance.run_id.as_str())
    );
    if suspects.is_empty() {
        let part = clean(
            one.state,
            &note,
            format!(
                "no clear regression {against}: {}{}",
                one.describe(p),
                hint(&one)
            ),
            &one.machine,
        );
        return done(part, &records, stated, details);
    }

    // A suspected regression: measure again before failing (false alarms p → p²).
    let second_plan = plan(Some(REMEASURE));
    stated += second_plan.stated_runs();
    let (again, second) = measure(&mut opened, &second_plan, &probe, &p.metrics);
    records.extend(again.iter().cloned());
    if let Err(e) = ctx.log(&again) {
        return fail(e).with_runs(&records, stated);
    }
    let two = match second.and_then(|s| compare_attempt(ctx, p, &s, &stored, "2")) {
        Ok(c) => c,
        Err(e) => {
            return fail(format!(
                "{note}re-measurement after a suspected regression of {}: {e}",
                suspects.join(", ")
            ))
            .with_runs(&records, stated)
            .with_details(Details::Regression(Box::new(details)))
        }
    };
    two.insert_into(&mut details, 2);
    let confirmed = rule::confirmed(&one.compared, &two.compared);
    let both = format!("first {}; re-measured {}", one.describe(p), two.describe(p));
    let part = if confirmed.is_empty() {
        clean(
            two.state,
            &note,
            format!(
                "suspected regression of {} not confirmed on re-measurement {against}: {both}{}",
                suspects.join(", "),
                hint(&two)
            ),
            &two.machine,
        )
    } else if two.state == MachineState::Slower {
        Err(Skip::new(
            SkipCause::Inconclusive,
            format!(
                "{note}inconclusive: {} regressed beyond tolerance in both series {against}, but the machine itself is ×{:.3} slower than when the baseline was recorded (probe), which can explain it: {both}. Re-run when the machine is as loaded as at the recording",
                confirmed.join(", "),
                two.machine.slowdown.point
            ),
        ))
    } else {
        Ok(Part::compare(
            NO_REGRESSION,
            confirmed.len() as f64,
            Threshold::equal(0.0),
            format!("{note}regression of {} beyond tolerance, confirmed on re-measurement {against}: {both}", confirmed.join(", ")),
        ))
    };
    done(part, &records, stated, details)
}

/// The profile in use, e.g. `ci (warmup 1, repetitions 10)` (the context carries its settings, so
/// the names are those of the gate file's profiles with these settings).
fn profile_name(ctx: &TrialContext<'_>) -> String {
    let names: Vec<&str> = ctx
        .spec
        .profiles
        .iter()
        .filter(|(_, s)| **s == ctx.profile)
        .map(|(n, _)| n.as_str())
        .collect();
    format!(
        "{} (warmup {}, repetitions {})",
        names.join("/"),
        ctx.profile.warmup,
        ctx.profile.repetitions
    )
}
