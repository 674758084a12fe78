//! Measuring every backend of a gate on every scenario of the gate inside one trial, for the
//! checks that aggregate over scenarios (`stats.distribution`, `economics.cost`): the scenario
//! prompts, which backends can run here, and one series per backend × scenario.

use super::TrialContext;
use crate::backend::Availability;
use crate::backend::Backend;
use crate::error::BackendError;
use crate::measure::{measured_ok, run_series, RunOutcome, RunRecord, RunTimings};
use crate::workload::{prompt_ids, scenario, Scenario};

/// A check that aggregates over the gate's scenarios needs some.
pub(crate) fn require_scenarios(spec: &super::GateSpec) -> Result<(), String> {
    if spec.scenarios.is_empty() {
        return Err("`scenarios` is empty; this check aggregates over scenarios".into());
    }
    Ok(())
}

/// The prompt of every scenario of the gate, by the gate's tokenizer.
pub(crate) fn prompts(ctx: &TrialContext<'_>) -> Result<Vec<(Scenario, Vec<u32>)>, String> {
    if ctx.spec.scenarios.is_empty() {
        return Err(format!(
            "{}: `scenarios` is empty; this check aggregates over scenarios",
            ctx.spec.path.display()
        ));
    }
    ctx.spec
        .scenarios
        .iter()
        .map(|name| {
            let s = scenario(name).ok_or_else(|| format!("unknown scenario `{name}`"))?;
            let ids = prompt_ids(&s, ctx.encode)
                .map_err(|e| format!("cannot build the `{name}` prompt: {e}"))?;
            Ok((s, ids))
        })
        .collect()
}

/// Each of the gate's backends with `Ok(())` when it can run here or `Err(reason with fix)`.
pub(crate) fn backend_availability(ctx: &TrialContext<'_>) -> Vec<(String, Result<(), String>)> {
    ctx.spec
        .backends
        .iter()
        .map(|b| {
            let a = match ctx.backends.availability(b) {
                Availability::Available { .. } => Ok(()),
                Availability::Absent { reason, fix } => {
                    Err(format!("{b} absent: {reason} (fix: {fix})"))
                }
            };
            (b.clone(), a)
        })
        .collect()
}

/// The runs of one backend in one scenario.
#[derive(Debug, Clone)]
pub(crate) struct ScenarioRuns {
    pub scenario: &'static str,
    pub records: Vec<RunRecord>,
}

impl ScenarioRuns {
    pub fn ok(&self) -> Vec<&RunTimings> {
        measured_ok(&self.records)
    }
    /// The first reason a run was not ok, if any.
    pub fn first_problem(&self) -> Option<String> {
        self.records.iter().find_map(|r| match &r.outcome {
            RunOutcome::Degraded { reason } => Some(reason.clone()),
            RunOutcome::Error { message } => Some(message.clone()),
            RunOutcome::Projected(p) => Some(p.describe()),
            RunOutcome::Ok(_) => None,
        })
    }
}

/// Runs one series per scenario on an opened backend (warmup per the profile, labelled); a backend
/// that failed to open yields degraded runs with the reason. `each` wraps every series (e.g. an
/// energy window around it); records go to the run log.
pub(crate) fn measure_backend(
    ctx: &TrialContext<'_>,
    mut opened: Result<Box<dyn Backend>, BackendError>,
    prompts: &[(Scenario, Vec<u32>)],
    gen_tokens: usize,
    mut each: impl FnMut(&str, &mut dyn FnMut() -> Vec<RunRecord>) -> Vec<RunRecord>,
) -> Result<Vec<ScenarioRuns>, String> {
    let mut out = Vec::with_capacity(prompts.len());
    for (s, prompt) in prompts {
        let plan = ctx.series(None, s.name, prompt.clone(), gen_tokens);
        let records = each(s.name, &mut || run_series(&mut opened, &plan));
        ctx.log(&records)?;
        out.push(ScenarioRuns {
            scenario: s.name,
            records,
        });
    }
    Ok(out)
}
