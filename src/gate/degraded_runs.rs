//! `integrity.degraded_runs` (TR117 §7.2: 546 degraded runs carried 0.30 ms placeholder latencies;
//! TR118v2: stated run counts did not match the data). Runs a real series and a negative control (the
//! same backend pointed at a missing model), then audits what was actually written to `runs.jsonl`:
//! no latency on any non-ok run, and recorded counts equal stated counts.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Evaluation, GateKind, Metrics, Part, Threshold, TrialContext, TrialId};
use crate::measure::{run_series, RunOutcome};
use crate::workload::{prompt_ids, SCENARIOS};

pub const RECORDED_AS_STATED: &str = "recorded_as_stated";
pub const NO_PLACEHOLDER_LATENCY: &str = "no_placeholder_latency";
pub const NEGATIVE_CONTROL_DEGRADED: &str = "negative_control_degraded";

/// The sub-series of the negative control (the same backend pointed at a missing model).
pub const NEGATIVE_CONTROL: &str = "negative-control";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DegradedRunsParams {
    pub gen_tokens: usize,
}

/// Latency-like keys that must never appear on a non-ok record.
pub const LATENCY_KEYS: [&str; 5] = [
    "prefill_ms",
    "decode_ms",
    "e2e_ms",
    "latency_ms",
    "tokens_per_s",
];

/// What an audit of a JSONL run file found for one run id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Audit {
    /// Records per trial and sub-series.
    pub recorded: BTreeMap<(TrialId, Option<String>), usize>,
    /// Non-ok records that carry a latency, with the offending key.
    pub placeholder_violations: Vec<String>,
    pub ok: usize,
    pub not_ok: usize,
}

impl Audit {
    /// Records of `trial` (and its `sub_series`) in the audited file.
    pub fn recorded_for(&self, trial: &TrialId, sub_series: Option<&str>) -> usize {
        self.recorded
            .get(&(trial.clone(), sub_series.map(String::from)))
            .copied()
            .unwrap_or(0)
    }
}

fn series_label(trial: &TrialId, sub_series: Option<&str>) -> String {
    match sub_series {
        Some(s) => format!("{trial} [{s}]"),
        None => trial.to_string(),
    }
}

/// Audit the raw JSON of a run file (not the typed records: a foreign or hand-edited file could
/// carry fields the types would drop). Lines are attributed to a series by their typed `trial`
/// and `sub_series`; a line whose trial is not a trial id is a violation of its own.
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
        let trial = match v
            .get("trial")
            .cloned()
            .map(serde_json::from_value::<TrialId>)
        {
            Some(Ok(t)) => t,
            _ => {
                audit.placeholder_violations.push(format!(
                    "{}:{}: the record names no trial id",
                    path.display(),
                    n + 1
                ));
                continue;
            }
        };
        let sub_series = v.get("sub_series").and_then(|s| s.as_str());
        let label = series_label(&trial, sub_series);
        *audit
            .recorded
            .entry((trial, sub_series.map(String::from)))
            .or_default() += 1;
        if v.get("status").and_then(|s| s.as_str()) == Some("ok") {
            audit.ok += 1;
            continue;
        }
        audit.not_ok += 1;
        for key in LATENCY_KEYS {
            if v.get(key).is_some_and(|x| !x.is_null()) {
                let index = v.get("index").map(|i| i.to_string()).unwrap_or_default();
                audit.placeholder_violations.push(format!(
                    "{label} run {index} is not ok but carries `{key}` = {}",
                    v[key]
                ));
            }
        }
    }
    Ok(audit)
}

impl GateKind for DegradedRunsParams {
    fn parts(&self) -> &'static [&'static str] {
        &[
            RECORDED_AS_STATED,
            NO_PLACEHOLDER_LATENCY,
            NEGATIVE_CONTROL_DEGRADED,
        ]
    }

    /// Recording an absent backend's runs honestly (degraded, with the reason) is the check.
    fn runs_with_absent_backend(&self) -> bool {
        true
    }

    fn evaluate(&self, ctx: &TrialContext<'_>) -> Evaluation {
        let scenario = ctx.scenario.unwrap_or(SCENARIOS[0]);
        let prompt = match prompt_ids(&scenario, ctx.encode) {
            Ok(p) => p,
            Err(e) => return Evaluation::error(format!("cannot build the prompt: {e}")),
        };
        let real_plan = ctx.series(None, scenario.name, prompt.clone(), self.gen_tokens);
        let control_plan = ctx.series(
            Some(NEGATIVE_CONTROL),
            scenario.name,
            prompt,
            self.gen_tokens,
        );
        let mut real = ctx.open();
        let real_records = run_series(&mut real, &real_plan);
        drop(real);
        let mut control = ctx.backends.open_broken(ctx.backend_id());
        let control_records = run_series(&mut control, &control_plan);
        for records in [&real_records, &control_records] {
            if let Err(e) = ctx.log(records) {
                return Evaluation::error(e).with_runs(&real_records, real_plan.stated_runs());
            }
        }
        let audit = match audit_jsonl(ctx.run_log.path(), ctx.run_id) {
            Ok(a) => a,
            Err(e) => {
                return Evaluation::error(e).with_runs(&real_records, real_plan.stated_runs())
            }
        };
        let mismatches: Vec<String> = [
            (None, real_plan.stated_runs()),
            (Some(NEGATIVE_CONTROL), control_plan.stated_runs()),
        ]
        .into_iter()
        .filter_map(|(sub, stated)| {
            let recorded = audit.recorded_for(ctx.trial, sub);
            (recorded != stated).then(|| {
                format!(
                    "{}: stated {stated} runs, {recorded} recorded in {}",
                    series_label(ctx.trial, sub),
                    ctx.run_log.path().display()
                )
            })
        })
        .collect();
        let control_ok = control_records
            .iter()
            .filter(|r| r.timings().is_some())
            .count();
        let control_reason = control_records.iter().find_map(|r| match &r.outcome {
            RunOutcome::Degraded { reason } if !reason.is_empty() => Some(reason.clone()),
            _ => None,
        });
        let parts = vec![
            Part::compare(
                RECORDED_AS_STATED,
                mismatches.len() as f64,
                Threshold::equal(0.0),
                if mismatches.is_empty() {
                    format!(
                        "{} + {} runs recorded as stated (real series, negative control)",
                        real_plan.stated_runs(),
                        control_plan.stated_runs()
                    )
                } else {
                    mismatches.join("; ")
                },
            ),
            Part::compare(
                NO_PLACEHOLDER_LATENCY,
                audit.placeholder_violations.len() as f64,
                Threshold::equal(0.0),
                if audit.placeholder_violations.is_empty() {
                    format!("{} non-ok records in the run file, none with a latency", audit.not_ok)
                } else {
                    audit.placeholder_violations.join("; ")
                },
            ),
            match &control_reason {
                Some(reason) => Part::compare(
                    NEGATIVE_CONTROL_DEGRADED,
                    control_ok as f64,
                    Threshold::equal(0.0),
                    format!(
                        "ok runs of the negative control (missing model); {} degraded with \"{}\"",
                        control_records.len() - control_ok,
                        reason.chars().take(80).collect::<String>()
                    ),
                ),
                None => Part::no_data(
                    NEGATIVE_CONTROL_DEGRADED,
                    format!("the negative control's {control_ok} ok runs and no degraded run with a reason"),
                ),
            },
        ];
        let mut metrics = Metrics::default();
        let result = Evaluation::judged(parts, String::new())
            .with_runs(&real_records, real_plan.stated_runs());
        metrics.insert("success_rate", result.runs.success_rate());
        metrics.insert("negative_control_degraded", control_records.len() as f64);
        let summary = format!(
            "real series: success rate {:.0}% over {} runs",
            100.0 * result.runs.success_rate(),
            result.runs.recorded
        );
        Evaluation { summary, ..result }.with_metrics(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::Unit;

    #[test]
    fn a_placeholder_latency_on_a_degraded_line_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("runs.jsonl");
        let t = TrialId::new("g", Unit::backend("b"), None);
        let tj = serde_json::to_string(&t).unwrap();
        std::fs::write(
            &p,
            format!(
                "{{\"run_id\":\"r\",\"trial\":{tj},\"index\":0,\"status\":\"ok\",\"e2e_ms\":12.0}}\n\
                 {{\"run_id\":\"r\",\"trial\":{tj},\"index\":1,\"status\":\"degraded\",\"reason\":\"trt missing\",\"e2e_ms\":0.30}}\n\
                 {{\"run_id\":\"other\",\"trial\":{tj},\"index\":0,\"status\":\"degraded\",\"reason\":\"x\",\"e2e_ms\":0.30}}\n"
            ),
        )
        .unwrap();
        let a = audit_jsonl(&p, "r").unwrap();
        assert_eq!(a.recorded_for(&t, None), 2);
        assert_eq!(
            a.placeholder_violations.len(),
            1,
            "{:?}",
            a.placeholder_violations
        );
        assert!(a.placeholder_violations[0].contains("e2e_ms"));
    }
}
