//! The regression gate's trial: whether it can run here (a baseline to compare with), and which
//! comparison decides it — this machine's stored numbers ([`super::stored`]), both runtimes side
//! by side ([`super::paired`]), or recording a new baseline (update mode). The baselines
//! themselves come from a [`Session`].

use super::details::NO_REGRESSION;
use super::params::RegressionParams;
use super::{paired, stored};
use crate::baseline::fingerprint::current_runtime;
use crate::baseline::session::{Mode, Session};
use crate::baseline::{Fingerprint, Settings, Workload};
use crate::gate::{Evaluation, GateKind, GateSpec, PlanContext, Skip, SkipCause, TrialContext};
use crate::workload::Scenario;

impl GateKind for RegressionParams {
    fn parts(&self) -> &'static [&'static str] {
        &[NO_REGRESSION]
    }

    fn validate(&self, _spec: &GateSpec) -> Result<(), String> {
        RegressionParams::validate(self)
    }

    /// No baseline for this machine (and neither update nor require mode): skipped before running.
    /// When loading fails the trial runs and fails with the error, never skips past it.
    fn precondition(&self, plan: &PlanContext<'_>) -> Option<Skip> {
        let backend = plan.unit.single_backend()?;
        skip_reason(plan.spec, self, backend, plan.scenario)
            .map(|reason| Skip::new(SkipCause::Precondition, reason))
    }

    fn evaluate(&self, ctx: &TrialContext<'_>) -> Evaluation {
        evaluate(ctx, self)
    }
}

/// The baseline session of one trial: `gate` × `backend` × `scenario` under the gate's workload
/// and metrics, on the fingerprint `fp`.
pub(super) fn session<'a>(
    settings: &Settings,
    spec: &'a GateSpec,
    fp: Fingerprint,
    backend: &'a str,
    scenario: &Scenario,
    p: &'a RegressionParams,
) -> Session<'a> {
    Session {
        store: settings.store_for(&spec.path),
        fingerprint: fp,
        gate: &spec.id,
        backend,
        scenario: scenario.name,
        workload: Workload {
            prompt_tokens: scenario.prompt_tokens,
            gen_tokens: p.gen_tokens,
        },
        metrics: &p.metrics,
    }
}

fn skip_reason(
    spec: &GateSpec,
    p: &RegressionParams,
    backend: &str,
    scenario: Option<&Scenario>,
) -> Option<String> {
    let settings = Settings::current();
    if settings.update || settings.require {
        return None;
    }
    let model = crate::model::catalog::lookup(&spec.model)?;
    let fp = Fingerprint::detect(&[model]);
    let session = session(&settings, spec, fp, backend, scenario?, p);
    match session.choose(current_runtime(backend).as_ref()) {
        Ok(Err(missing)) => Some(missing),
        _ => None,
    }
}

fn evaluate(ctx: &TrialContext<'_>, p: &RegressionParams) -> Evaluation {
    let settings = Settings::current();
    let fail = Evaluation::error;
    if let Err(e) = p.validate() {
        return fail(format!("{}: {e}", ctx.spec.path.display()));
    }
    let planted = match &settings.test_slowdown {
        Ok(s) => *s,
        Err(e) => return fail(e.clone()),
    };
    let Some(scenario) = ctx.scenario else {
        return fail(format!(
            "{}: a regression gate needs `scenarios`",
            ctx.spec.path.display()
        ));
    };
    let fp = Fingerprint::detect(std::slice::from_ref(&ctx.model));
    let session = session(&settings, ctx.spec, fp, ctx.backend_id(), &scenario, p);
    let current = current_runtime(ctx.backend_id());
    let against = if settings.update {
        None
    } else {
        match session.choose(current.as_ref()) {
            Err(e) => return fail(e.to_string()),
            Ok(Err(missing)) if settings.require => {
                return fail(format!(
                    "{missing} (INFERGATE_REQUIRE_BASELINE=1: a missing baseline is a failure)"
                ))
            }
            Ok(Err(missing)) => {
                return Evaluation::skip(Skip::new(SkipCause::Precondition, missing))
            }
            Ok(Ok(Mode::Paired {
                baseline,
                current,
                why,
            })) => {
                let tweaks = settings.tweaks.clone().unwrap_or_default();
                return paired::evaluate(ctx, p, &scenario, &baseline, &current, &why, tweaks);
            }
            Ok(Ok(Mode::Stored { stored, changes })) => Some((stored, changes)),
        }
    };
    stored::evaluate(ctx, p, &session, &settings, &scenario, planted, against)
}
