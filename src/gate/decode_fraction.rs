//! `phase.decode_fraction` (TR121, C2): at a fixed generation length, the KV-cached decode loop
//! dominates end-to-end latency; and the cached loop computes the same tokens as full recompute.

use std::collections::BTreeMap;

use super::{median, TrialContext, TrialResult, Verdict};
use crate::backend::Recompute;
use crate::measure::{measured_ok, run_series, SeriesPlan};
use crate::workload::prompt_ids;

pub fn evaluate(
    ctx: &TrialContext<'_>,
    gen_tokens: usize,
    claim_threshold: f64,
    backend_threshold: Option<f64>,
    check_kv: bool,
) -> TrialResult {
    let threshold = backend_threshold.unwrap_or(claim_threshold);
    let fail = |reason: String| ctx.result(Verdict::Fail { reason }, BTreeMap::new(), &[], 0);
    let Some(scenario) = ctx.scenario else {
        return fail("phase.decode_fraction needs a scenario".into());
    };
    let prompt = match prompt_ids(&scenario, ctx.encode) {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot build the `{}` prompt: {e}", scenario.name)),
    };
    let plan = SeriesPlan {
        run_id: ctx.run_id.into(),
        trial: ctx.trial.into(),
        scenario: scenario.name.into(),
        prompt: prompt.clone(),
        gen_tokens,
        warmup: ctx.profile.warmup,
        repetitions: ctx.profile.repetitions,
    };
    let mut opened = (ctx.open)();
    let records = run_series(&mut opened, &plan);
    if let Err(e) = ctx.log(&records) {
        return ctx.result(
            Verdict::Fail { reason: e },
            BTreeMap::new(),
            &records,
            plan.stated_runs(),
        );
    }
    let ok = measured_ok(&records);
    let result = |verdict, metrics| ctx.result(verdict, metrics, &records, plan.stated_runs());
    if ok.is_empty() {
        let first = records.iter().find_map(|r| match &r.outcome {
            crate::measure::RunOutcome::Degraded { reason } => Some(reason.clone()),
            crate::measure::RunOutcome::Error { message } => Some(message.clone()),
            _ => None,
        });
        let reason = format!(
            "no successful measured run ({} recorded): {}",
            records.len(),
            first.unwrap_or_default()
        );
        return result(Verdict::Fail { reason }, BTreeMap::new());
    }
    let col =
        |f: fn(&crate::measure::RunTimings) -> f64| ok.iter().map(|t| f(t)).collect::<Vec<f64>>();
    let fractions = col(|t| t.decode_fraction());
    let mut metrics = BTreeMap::new();
    let med = median(&fractions).unwrap_or(f64::NAN);
    metrics.insert("decode_fraction_median".into(), med);
    for (name, values) in [
        ("prefill_ms_median", col(|t| t.prefill_ms)),
        ("decode_ms_median", col(|t| t.decode_ms)),
        ("e2e_ms_median", col(|t| t.e2e_ms)),
        (
            "decode_tokens_per_s_median",
            col(|t| t.decode_tokens_per_s()),
        ),
    ] {
        if let Some(m) = median(&values) {
            metrics.insert(name.into(), m);
        }
    }
    metrics.insert("measured_runs".into(), ok.len() as f64);

    let mut failures = Vec::new();
    if med.is_nan() || med <= threshold {
        failures.push(format!("median decode fraction {med:.4} ≤ {threshold} over {} runs (gen_tokens = {gen_tokens})", ok.len()));
    }
    let below_claim = if med <= claim_threshold && backend_threshold.is_some() {
        format!(" (`{}`'s threshold in the gate file; below the claim's {claim_threshold}: the claim does not hold on this backend)", ctx.backend_id)
    } else {
        String::new()
    };
    let mut kv_note = String::new();
    if check_kv {
        if let Ok(backend) = opened.as_deref_mut() {
            let cached = backend.generate(&prompt, gen_tokens).map(|g| g.tokens);
            match (cached, backend.full_recompute_tokens(&prompt, gen_tokens)) {
                (_, Ok(Recompute::CannotCheck { reason })) => {
                    kv_note = format!("; KV-vs-recompute not checked: {reason}")
                }
                (Ok(c), Ok(Recompute::Tokens(r))) if c == r => {
                    kv_note = format!("; {gen_tokens} KV-cached tokens = full recompute")
                }
                (Ok(c), Ok(Recompute::Tokens(r))) => {
                    let at = c
                        .iter()
                        .zip(&r)
                        .position(|(a, b)| a != b)
                        .unwrap_or(c.len().min(r.len()));
                    failures.push(format!(
                        "KV-cached tokens differ from full recompute at position {at}"
                    ));
                }
                (Err(e), _) | (_, Err(e)) => {
                    failures.push(format!("KV-vs-recompute check failed to run: {e}"))
                }
            }
        }
    }
    let verdict = if failures.is_empty() {
        Verdict::Pass { summary: format!("median decode fraction {med:.4} > {threshold}{below_claim} ({} runs, {} prompt tokens){kv_note}", ok.len(), prompt.len()) }
    } else {
        Verdict::Fail {
            reason: failures.join("; "),
        }
    };
    result(verdict, metrics)
}
