//! `attribution.compile_real` (TR120; conclusive C1, §5.4.4, §10.2 rule 2): a backend label is not
//! evidence. Each case opens a backend for evidence collection and checks its label's claims against
//! what the engine reports it did: which provider ran the compute nodes, whether the optimizer
//! rewrote the graph, which device holds the outputs. Negative controls are cases whose label lies;
//! they must FAIL — the trial passes only when the lie is caught (a pass or a skip of the inner
//! check fails the trial).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{TrialContext, TrialResult, Verdict};
use crate::backend::evidence::Evidence;
use crate::backend::ort::RequestedProvider;

/// What a label claims.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The execution provider that runs the compute nodes (e.g. `CUDAExecutionProvider`).
    pub provider: Option<String>,
    /// The graph optimizer rewrote the graph (fewer nodes, fused ops).
    pub optimized: Option<bool>,
    /// The device that holds every output (`cuda`, `cpu`).
    pub device: Option<String>,
    /// The decode loop replays a captured CUDA graph: every decode step of a probe generation was
    /// a counted replay of a graph that launches kernels (libtorch).
    #[serde(default)]
    pub cuda_graph: Option<bool>,
}

/// The verdict a case must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Pass,
    /// A negative control: the label lies and the gate must catch it.
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Trial name part: `attribution.compile_real::<name>`.
    pub name: String,
    /// The backend id whose session is built.
    pub backend: String,
    /// An extra execution provider to request on top (`cuda`): the silent-fallback control.
    #[serde(default)]
    pub request_provider: Option<String>,
    /// A negative control that applies only where this backend is absent (where it is present,
    /// the case's label is honest and the trial is skipped with that reason).
    #[serde(default)]
    pub unless_available: Option<String>,
    pub claims: Claims,
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompileRealParams {
    /// Smallest fraction of compute nodes that must run on the claimed provider.
    pub min_compute_fraction: f64,
    pub cases: Vec<Case>,
}

/// Check claims against evidence; `Ok(summary)` when every claim holds, `Err(reasons)` otherwise.
pub fn check_claims(
    claims: &Claims,
    evidence: &Evidence,
    min_fraction: f64,
) -> Result<String, Vec<String>> {
    let mut ok = Vec::new();
    let mut failures = Vec::new();
    if let Some(p) = &claims.provider {
        let f = evidence.compute_fraction_on(p);
        let detail = format!(
            "{:.0}% of compute nodes ran on {p} (executed: {:?}; requested: {:?})",
            100.0 * f,
            evidence.compute_executed_on,
            evidence.requested
        );
        if f >= min_fraction {
            ok.push(detail);
        } else if evidence.requested.iter().any(|r| r == p) {
            failures.push(format!("silent fallback: {p} was requested but {detail}"));
        } else {
            failures.push(format!("label says {p} but {detail}"));
        }
    }
    if let Some(wanted) = claims.optimized {
        match &evidence.graph_optimization {
            Some(g) => {
                let optimized = g.optimized_nodes < g.exported_nodes && !g.fused_ops.is_empty();
                let detail = format!(
                    "optimizer level `{}`: {} → {} nodes, fused ops {:?}",
                    g.level_requested, g.exported_nodes, g.optimized_nodes, g.fused_ops
                );
                if optimized == wanted {
                    ok.push(detail);
                } else if wanted {
                    failures.push(format!(
                        "label says optimized but the graph was not rewritten: {detail}"
                    ));
                } else {
                    failures.push(format!("label says unoptimized but {detail}"));
                }
            }
            None => failures.push(
                "label claims an optimization state but the engine wrote no optimized graph".into(),
            ),
        }
    }
    if let Some(device) = &claims.device {
        let total: usize = evidence.executed_on.values().sum();
        let on: usize = evidence
            .executed_on
            .iter()
            .filter(|(d, _)| d.starts_with(device.as_str()))
            .map(|(_, n)| n)
            .sum();
        let detail = format!(
            "outputs by device {:?}, dtypes {:?}; {}",
            evidence.executed_on,
            evidence.output_dtypes,
            evidence.notes.join("; ")
        );
        if total > 0 && on == total {
            ok.push(detail);
        } else {
            failures.push(format!("label says {device} but {detail}"));
        }
    }
    if let Some(wanted) = claims.cuda_graph {
        match &evidence.cuda_graph {
            Some(g) => {
                let detail = format!(
                    "decode `{}`: {} replays for {} decode steps, {} kernels per replay",
                    g.decode_mode,
                    g.replays,
                    g.decode_steps,
                    g.kernels_per_step
                        .map_or_else(|| "no captured graph, 0".into(), |k| k.to_string())
                );
                if g.every_step_replayed() == wanted {
                    ok.push(detail);
                } else if wanted {
                    failures.push(format!("label says CUDA graph but {detail}"));
                } else {
                    failures.push(format!("label says no CUDA graph but {detail}"));
                }
            }
            None => failures.push(
                "label claims a CUDA-graph state but the backend reports no decode-loop evidence"
                    .into(),
            ),
        }
    }
    if ok.is_empty() && failures.is_empty() {
        failures.push("the case claims nothing".into());
    }
    if failures.is_empty() {
        Ok(ok.join("; "))
    } else {
        Err(failures)
    }
}

/// A silent-fallback negative control is one only where the real thing is absent; and a negative
/// control whose own backend cannot run here would be "caught" by the open failing, which checks
/// nothing, so it is skipped with the reason instead.
pub fn precondition(case: &Case) -> Option<String> {
    if case.expect == Expect::Fail {
        if let crate::backend::registry::Availability::Absent { reason, .. } =
            crate::backend::registry::probe(&case.backend)
        {
            return Some(format!(
                "the negative control needs `{}`, which cannot run here: {reason}",
                case.backend
            ));
        }
    }
    let other = case.unless_available.as_deref()?;
    crate::backend::registry::probe(other)
        .is_available()
        .then(|| format!("not a negative control on this machine: `{other}` is available here, so the label is honest"))
}

fn requested(name: &str) -> Result<RequestedProvider, String> {
    match name {
        "cuda" => Ok(RequestedProvider::Cuda { device_id: 0 }),
        "tensorrt" => Ok(crate::backend::registry::tensorrt_request()),
        other => Err(format!(
            "unknown request_provider `{other}` (cuda, tensorrt)"
        )),
    }
}

pub fn evaluate(ctx: &TrialContext<'_>, p: &CompileRealParams, case: &Case) -> TrialResult {
    let done = |verdict, metrics| ctx.result(verdict, metrics, &[], 0);
    if let Some(reason) = precondition(case) {
        return done(Verdict::Skip { reason }, BTreeMap::new());
    }
    // The inner verdict: do the label's claims hold?
    let inner: Result<(String, Evidence), String> = (|| {
        let extra = case
            .request_provider
            .as_deref()
            .map(requested)
            .transpose()?;
        let mut backend = (ctx.open_evidence)(&case.backend, extra)
            .map_err(|e| format!("backend could not be opened: {e}"))?;
        let evidence = backend
            .evidence()
            .ok_or_else(|| format!("backend `{}` reports no runtime evidence", case.backend))?
            .map_err(|e| e.to_string())?;
        match check_claims(&case.claims, &evidence, p.min_compute_fraction) {
            Ok(summary) => Ok((summary, evidence)),
            Err(f) => Err(f.join("; ")),
        }
    })();
    let mut metrics = BTreeMap::new();
    match (case.expect, inner) {
        (Expect::Pass, Ok((summary, evidence))) => {
            if let Some(p) = &case.claims.provider {
                metrics.insert(
                    "compute_fraction_on_claimed_provider".into(),
                    evidence.compute_fraction_on(p),
                );
            }
            if let Some(g) = &evidence.graph_optimization {
                metrics.insert("exported_nodes".into(), g.exported_nodes as f64);
                metrics.insert("optimized_nodes".into(), g.optimized_nodes as f64);
            }
            done(
                Verdict::Pass {
                    summary: format!("label `{}` proven: {summary}", case.name),
                },
                metrics,
            )
        }
        (Expect::Pass, Err(reason)) => done(
            Verdict::Fail {
                reason: format!("label `{}` not proven: {reason}", case.name),
            },
            metrics,
        ),
        (Expect::Fail, Err(reason)) => done(
            Verdict::Pass {
                summary: format!("negative control caught (the label lies): {reason}"),
            },
            metrics,
        ),
        (Expect::Fail, Ok((summary, _))) => done(
            Verdict::Fail {
                reason: format!(
                    "negative control `{}` was NOT caught: its false label passed ({summary})",
                    case.name
                ),
            },
            metrics,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::evidence::GraphOptimization;

    fn cpu_evidence(optimized: bool) -> Evidence {
        let mut e = Evidence {
            requested: vec![
                "CUDAExecutionProvider".into(),
                "CPUExecutionProvider".into(),
            ],
            ..Default::default()
        };
        e.executed_on.insert("CPUExecutionProvider".into(), 900);
        e.compute_executed_on
            .insert("CPUExecutionProvider".into(), 300);
        e.graph_optimization = Some(GraphOptimization {
            level_requested: "all".into(),
            exported_nodes: 1000,
            optimized_nodes: if optimized { 600 } else { 1000 },
            fused_ops: if optimized {
                [("SimplifiedLayerNormalization".to_string(), 61)].into()
            } else {
                Default::default()
            },
        });
        e
    }

    #[test]
    fn a_silent_fallback_is_a_failure_naming_the_fallback() {
        let claims = Claims {
            provider: Some("CUDAExecutionProvider".into()),
            ..Default::default()
        };
        let err = check_claims(&claims, &cpu_evidence(true), 0.9)
            .unwrap_err()
            .join(";");
        assert!(
            err.contains("silent fallback") && err.contains("0%"),
            "{err}"
        );
    }

    #[test]
    fn an_optimized_label_needs_a_rewritten_graph() {
        let claims = Claims {
            optimized: Some(true),
            ..Default::default()
        };
        assert!(check_claims(&claims, &cpu_evidence(true), 0.9).is_ok());
        let err = check_claims(&claims, &cpu_evidence(false), 0.9)
            .unwrap_err()
            .join(";");
        assert!(err.contains("not rewritten"), "{err}");
    }

    #[test]
    fn a_device_label_needs_every_output_there() {
        let mut e = Evidence::default();
        e.executed_on.insert("cpu".into(), 3);
        let claims = Claims {
            device: Some("cuda".into()),
            ..Default::default()
        };
        assert!(check_claims(&claims, &e, 0.9).is_err());
        e.executed_on.clear();
        e.executed_on.insert("cuda:0".into(), 3);
        assert!(check_claims(&claims, &e, 0.9).is_ok());
    }
}
