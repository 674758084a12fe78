//! `integrity.degraded_runs` (TR117 §7.2: 546 degraded runs carried 0.30 ms placeholder latencies;
//! TR118v2: stated run counts did not match the data). Runs a real series and a negative control (the
//! same backend pointed at a missing model), then audits what was actually written to `runs.jsonl`:
//! no latency on any non-ok run, and recorded counts equal stated counts.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::{TrialContext, TrialResult, Verdict};
use crate::measure::{run_series, SeriesPlan};
use crate::workload::{prompt_ids, SCENARIOS};

/// Latency-like keys that must never appear on a non-ok record.
pub const LATENCY_KEYS: [&str; 5] = [
    "prefill_ms",
    "decode_ms",
    "e2e_ms",
    "latency_ms",
    "tokens_per_s",
];

/// What an audit of a JSONL run file found for one run id.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Audit {
    /// Records per trial name.
    pub recorded: BTreeMap<String, usize>,
    /// `(trial, index)` of non-ok records that carry a latency, with the offending key.
    pub placeholder_violations: Vec<String>,
    pub ok: usize,
    pub not_ok: usize,
}

/// Audit the raw JSON of a run file (not the typed records: a foreign or hand-edited file could
/// carry fields the types would drop).
pub fn audit_jsonl(path: &Path, run_id: &str) -> Result<Audit, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut audit = Audit::default();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?;
        if v.get("run_id").and_then(|r| r.as_str()) != Some(run_id) {
            continue;
        }
        let trial = v
            .get("trial")
            .and_then(|t| t.as_str())
            .unwrap_or("?")
            .to_string();
        *audit.recorded.entry(trial.clone()).or_default() += 1;
        if v.get("status").and_then(|s| s.as_str()) == Some("ok") {
            audit.ok += 1;
            continue;
        }
        audit.not_ok += 1;
        for key in LATENCY_KEYS {
            if v.get(key).is_some_and(|x| !x.is_null()) {
                let index = v.get("index").map(|i| i.to_string()).unwrap_or_default();
                audit.placeholder_violations.push(format!(
                    "{trial} run {index} is not ok but carries `{key}` = {}",
                    v[key]
                ));
            }
        }
    }
    Ok(audit)
}

pub fn evaluate(ctx: &TrialContext<'_>, gen_tokens: usize) -> TrialResult {
    let scenario = ctx.scenario.unwrap_or(SCENARIOS[0]);
    let fail = |reason: String| ctx.result(Verdict::Fail { reason }, BTreeMap::new(), &[], 0);
    let prompt = match prompt_ids(&scenario, ctx.encode) {
        Ok(p) => p,
        Err(e) => return fail(format!("cannot build the prompt: {e}")),
    };
    let control_trial = format!("{}::negative-control", ctx.trial);
    let plan = |trial: &str| SeriesPlan {
        run_id: ctx.run_id.into(),
        trial: trial.into(),
        scenario: scenario.name.into(),
        prompt: prompt.clone(),
        gen_tokens,
        warmup: ctx.profile.warmup,
        repetitions: ctx.profile.repetitions,
    };
    let (real_plan, control_plan) = (plan(ctx.trial), plan(&control_trial));
    let mut real = (ctx.open)();
    let real_records = run_series(&mut real, &real_plan);
    drop(real);
    let mut control = (ctx.open_broken)();
    let control_records = run_series(&mut control, &control_plan);
    for records in [&real_records, &control_records] {
        if let Err(e) = ctx.log(records) {
            return fail(e);
        }
    }
    let audit = match audit_jsonl(ctx.run_log.path(), ctx.run_id) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let mut failures = audit.placeholder_violations.clone();
    for (trial, stated) in [
        (ctx.trial, real_plan.stated_runs()),
        (control_trial.as_str(), control_plan.stated_runs()),
    ] {
        let recorded = audit.recorded.get(trial).copied().unwrap_or(0);
        if recorded != stated {
            failures.push(format!(
                "{trial}: stated {stated} runs, {recorded} recorded in {}",
                ctx.run_log.path().display()
            ));
        }
    }
    let control_ok = control_records
        .iter()
        .filter(|r| r.timings().is_some())
        .count();
    if control_ok > 0 {
        failures.push(format!(
            "negative control (missing model) produced {control_ok} ok runs with latencies"
        ));
    }
    let control_reason = control_records.iter().find_map(|r| match &r.outcome {
        crate::measure::RunOutcome::Degraded { reason } if !reason.is_empty() => {
            Some(reason.clone())
        }
        _ => None,
    });
    if control_reason.is_none() {
        failures.push("negative control runs are not degraded with a reason".into());
    }
    let result = ctx.result(
        Verdict::Pass {
            summary: String::new(),
        },
        BTreeMap::new(),
        &real_records,
        real_plan.stated_runs(),
    );
    let mut metrics = BTreeMap::new();
    metrics.insert("success_rate".into(), result.runs.success_rate());
    metrics.insert(
        "negative_control_degraded".into(),
        control_records.len() as f64,
    );
    let verdict = if failures.is_empty() {
        Verdict::Pass {
            summary: format!(
                "{} runs recorded as stated, success rate {:.0}%; negative control: {} degraded runs, no latency (\"{}\")",
                real_plan.stated_runs(),
                100.0 * result.runs.success_rate(),
                control_records.len(),
                control_reason.unwrap_or_default().chars().take(80).collect::<String>()
            ),
        }
    } else {
        Verdict::Fail {
            reason: failures.join("; "),
        }
    };
    TrialResult {
        verdict,
        metrics,
        ..result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placeholder_latency_on_a_degraded_line_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("runs.jsonl");
        std::fs::write(
            &p,
            concat!(
                r#"{"run_id":"r","trial":"t","index":0,"status":"ok","e2e_ms":12.0}"#, "\n",
                r#"{"run_id":"r","trial":"t","index":1,"status":"degraded","reason":"trt missing","e2e_ms":0.30}"#, "\n",
                r#"{"run_id":"other","trial":"t","index":0,"status":"degraded","reason":"x","e2e_ms":0.30}"#, "\n",
            ),
        )
        .unwrap();
        let a = audit_jsonl(&p, "r").unwrap();
        assert_eq!(a.recorded["t"], 2);
        assert_eq!(
            a.placeholder_violations.len(),
            1,
            "{:?}",
            a.placeholder_violations
        );
        assert!(a.placeholder_violations[0].contains("e2e_ms"));
    }
}
