//! Over 600 lines: 229 of them are this gate's tests.
//!
//! `attribution.compile_real` (TR120; conclusive C1, §5.4.4, §10.2 rule 2): a backend label is not
//! evidence. Each case opens a backend for evidence collection and checks its label's claims against
//! what the engine reports it did: which provider ran the compute nodes, whether the optimizer
//! rewrote the graph, which device holds the outputs, whether every decode step replayed a captured
//! CUDA graph — one part per claim of the label.
//!
//! Negative controls are cases whose label lies. Their one part, `lie_caught`, holds only when
//! evidence was collected **and** the label was rejected by it: a backend that failed to open or
//! reported no evidence proves nothing (that is a FAIL with the error, never "caught"). A control
//! whose own backend cannot run on this machine is not run at all: the trial is SKIP
//! (`backend_absent`) with the backend's reason, never "caught" by the open failing.

use serde::{Deserialize, Serialize};

use super::{
    Evaluation, GateKind, Metrics, Part, PlanContext, Skip, SkipCause, Threshold, TrialContext,
    Unit,
};
use crate::backend::evidence::Evidence;

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

pub const PROVIDER: &str = "provider";
pub const OPTIMIZED: &str = "optimized";
pub const DEVICE: &str = "device";
pub const CUDA_GRAPH: &str = "cuda_graph";
pub const LIE_CAUGHT: &str = "lie_caught";

/// One claim of a label against the evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimCheck {
    pub part: Part,
    /// What the label says and what the evidence shows, in words.
    pub words: String,
}

impl ClaimCheck {
    pub fn held(&self) -> bool {
        matches!(self.part.finding, super::Finding::Held { .. })
    }
}

/// Check each claim of a label against evidence (empty when the label claims nothing).
pub fn check_claims(claims: &Claims, evidence: &Evidence, min_fraction: f64) -> Vec<ClaimCheck> {
    let mut out = Vec::new();
    if let Some(p) = &claims.provider {
        let f = evidence.compute_fraction_on(p);
        let detail = format!(
            "{:.0}% of compute nodes ran on {p} (executed: {:?}; requested: {:?})",
            100.0 * f,
            evidence.compute_executed_on,
            evidence.requested
        );
        let words = if f >= min_fraction {
            detail.clone()
        } else if evidence.requested.iter().any(|r| r == p) {
            format!("silent fallback: {p} was requested but {detail}")
        } else {
            format!("label says {p} but {detail}")
        };
        out.push(ClaimCheck {
            part: Part::compare(
                PROVIDER,
                f,
                Threshold::at_least(min_fraction),
                words.clone(),
            ),
            words,
        });
    }
    if let Some(wanted) = claims.optimized {
        out.push(match &evidence.graph_optimization {
            Some(g) => {
                let optimized = g.optimized_nodes < g.exported_nodes && !g.fused_ops.is_empty();
                let detail = format!(
                    "optimizer level `{}`: {} → {} nodes, fused ops {:?}",
                    g.level_requested, g.exported_nodes, g.optimized_nodes, g.fused_ops
                );
                let words = match (optimized == wanted, wanted) {
                    (true, _) => detail,
                    (false, true) => {
                        format!("label says optimized but the graph was not rewritten: {detail}")
                    }
                    (false, false) => format!("label says unoptimized but {detail}"),
                };
                ClaimCheck {
                    part: Part::compare(
                        OPTIMIZED,
                        f64::from(u8::from(optimized)),
                        Threshold::equal(f64::from(u8::from(wanted))),
                        words.clone(),
                    ),
                    words,
                }
            }
            None => ClaimCheck {
                part: Part::no_data(
                    OPTIMIZED,
                    "the label claims an optimization state but the engine wrote no optimized graph",
                ),
                words: "label claims an optimization state but the engine wrote no optimized graph"
                    .into(),
            },
        });
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
        let words = if total > 0 && on == total {
            detail
        } else {
            format!("label says {device} but {detail}")
        };
        out.push(ClaimCheck {
            part: if total == 0 {
                Part::no_data(DEVICE, "the engine reported no output device")
            } else {
                Part::compare(
                    DEVICE,
                    on as f64 / total as f64,
                    Threshold::equal(1.0),
                    words.clone(),
                )
            },
            words,
        });
    }
    if let Some(wanted) = claims.cuda_graph {
        out.push(match &evidence.cuda_graph {
            Some(g) => {
                let replayed = g.every_step_replayed();
                let detail = format!(
                    "decode `{}`: {} replays for {} decode steps, {} kernels per replay",
                    g.decode_mode,
                    g.replays,
                    g.decode_steps,
                    g.kernels_per_step
                        .map_or_else(|| "no captured graph, 0".into(), |k| k.to_string())
                );
                let words = match (replayed == wanted, wanted) {
                    (true, _) => detail,
                    (false, true) => format!("label says CUDA graph but {detail}"),
                    (false, false) => format!("label says no CUDA graph but {detail}"),
                };
                ClaimCheck {
                    part: Part::compare(
                        CUDA_GRAPH,
                        f64::from(u8::from(replayed)),
                        Threshold::equal(f64::from(u8::from(wanted))),
                        words.clone(),
                    ),
                    words,
                }
            }
            None => ClaimCheck {
                part: Part::no_data(
                    CUDA_GRAPH,
                    "the label claims a CUDA-graph state but the backend reports no decode-loop evidence",
                ),
                words: "label claims a CUDA-graph state but the backend reports no decode-loop evidence"
                    .into(),
            },
        });
    }
    out
}

/// A silent-fallback negative control is one only where the real thing is absent.
fn not_a_control_here(
    case: &Case,
    availability: &dyn Fn(&str) -> crate::backend::Availability,
) -> Option<Skip> {
    let other = case.unless_available.as_deref()?;
    availability(other).is_available().then(|| {
        Skip::new(
            SkipCause::NotApplicable,
            format!("not a negative control on this machine: `{other}` is available here, so the label is honest"),
        )
    })
}

/// The request a case names: `cuda` or `tensorrt`.
const PROVIDERS: [&str; 2] = ["cuda", "tensorrt"];

/// What collecting the evidence of one case gave.
#[derive(Debug)]
pub enum Collected {
    /// The backend could not be opened, or reported no evidence: nothing proven either way.
    Failed(String),
    Evidence(Box<Evidence>),
}

fn joined(checks: &[&ClaimCheck]) -> String {
    checks
        .iter()
        .map(|c| c.words.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The findings of one case from what was collected.
pub fn judge_case(case: &Case, collected: Collected, min_fraction: f64) -> Vec<Part> {
    let evidence = match collected {
        Collected::Evidence(e) => e,
        Collected::Failed(e) => {
            let part = match case.expect {
                Expect::Pass => PROVIDER,
                Expect::Fail => LIE_CAUGHT,
            };
            return vec![Part::no_data(part, format!("no evidence collected: {e}"))];
        }
    };
    let checks = check_claims(&case.claims, &evidence, min_fraction);
    match case.expect {
        Expect::Pass => {
            let parts: Vec<Part> = checks.into_iter().map(|c| c.part).collect();
            if parts.is_empty() {
                vec![Part::no_data(PROVIDER, "the case's label claims nothing")]
            } else {
                parts
            }
        }
        Expect::Fail => {
            let rejected: Vec<&ClaimCheck> = checks
                .iter()
                .filter(|c| matches!(c.part.finding, super::Finding::NotHeld { .. }))
                .collect();
            let unproven: Vec<&ClaimCheck> = checks
                .iter()
                .filter(|c| !c.held() && !matches!(c.part.finding, super::Finding::NotHeld { .. }))
                .collect();
            if rejected.is_empty() && !unproven.is_empty() {
                return vec![Part::no_data(
                    LIE_CAUGHT,
                    format!("the evidence cannot judge the label: {}", joined(&unproven)),
                )];
            }
            let words = if rejected.is_empty() {
                format!(
                    "the false label passed: {}",
                    joined(&checks.iter().collect::<Vec<_>>())
                )
            } else {
                format!("evidence rejected the label: {}", joined(&rejected))
            };
            vec![Part::compare(
                LIE_CAUGHT,
                rejected.len() as f64,
                Threshold::at_least(1.0),
                words,
            )]
        }
    }
}

impl GateKind for CompileRealParams {
    fn parts(&self) -> &'static [&'static str] {
        &[PROVIDER, OPTIMIZED, DEVICE, CUDA_GRAPH, LIE_CAUGHT]
    }

    fn units(&self, _backends: &[String]) -> Vec<Unit> {
        self.cases
            .iter()
            .map(|c| Unit::Case {
                case: c.name.clone(),
                backend: c.backend.clone(),
            })
            .collect()
    }

    fn validate(&self, _spec: &super::GateSpec) -> Result<(), String> {
        for c in &self.cases {
            if let Some(p) = c.request_provider.as_deref() {
                if !PROVIDERS.contains(&p) {
                    return Err(format!(
                        "case `{}`: unknown request_provider `{p}` ({})",
                        c.name,
                        PROVIDERS.join(", ")
                    ));
                }
            }
        }
        Ok(())
    }

    fn precondition(&self, plan: &PlanContext<'_>) -> Option<Skip> {
        let Unit::Case { case, .. } = plan.unit else {
            return None;
        };
        let case = self.cases.iter().find(|c| &c.name == case)?;
        not_a_control_here(case, plan.availability)
    }

    fn evaluate(&self, ctx: &TrialContext<'_>) -> Evaluation {
        let Unit::Case { case: name, .. } = &ctx.trial.unit else {
            return Evaluation::error("attribution.compile_real runs its cases, not a backend");
        };
        let Some(case) = self.cases.iter().find(|c| &c.name == name) else {
            return Evaluation::error(format!("no case `{name}` in {}", ctx.spec.path.display()));
        };
        if let Some(skip) = not_a_control_here(case, &|b| ctx.backends.availability(b)) {
            return Evaluation::skip(skip);
        }
        let collected = match ctx
            .backends
            .open_for_evidence(&case.backend, case.request_provider.as_deref())
        {
            Err(e) => Collected::Failed(format!("backend could not be opened: {e}")),
            Ok(mut backend) => match backend.evidence() {
                None => Collected::Failed(format!(
                    "backend `{}` reports no runtime evidence",
                    case.backend
                )),
                Some(Err(e)) => Collected::Failed(e.to_string()),
                Some(Ok(evidence)) => Collected::Evidence(Box::new(evidence)),
            },
        };
        let mut metrics = Metrics::default();
        if let Collected::Evidence(evidence) = &collected {
            if let Some(p) = &case.claims.provider {
                metrics.insert(
                    "compute_fraction_on_claimed_provider",
                    evidence.compute_fraction_on(p),
                );
            }
            if let Some(g) = &evidence.graph_optimization {
                metrics.insert("exported_nodes", g.exported_nodes as f64);
                metrics.insert("optimized_nodes", g.optimized_nodes as f64);
            }
        }
        let summary = match case.expect {
            Expect::Pass => format!("label `{}` against runtime evidence", case.name),
            Expect::Fail => format!(
                "negative control `{}`: its label lies and must be rejected by evidence",
                case.name
            ),
        };
        Evaluation::judged(
            judge_case(case, collected, self.min_compute_fraction),
            summary,
        )
        .with_metrics(metrics)
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
        let checks = check_claims(&claims, &cpu_evidence(true), 0.9);
        assert!(!checks[0].held());
        let err = &checks[0].words;
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
        assert!(check_claims(&claims, &cpu_evidence(true), 0.9)[0].held());
        let checks = check_claims(&claims, &cpu_evidence(false), 0.9);
        assert!(!checks[0].held());
        assert!(checks[0].words.contains("not rewritten"), "{:?}", checks[0]);
    }

    #[test]
    fn a_device_label_needs_every_output_there() {
        let mut e = Evidence::default();
        e.executed_on.insert("cpu".into(), 3);
        let claims = Claims {
            device: Some("cuda".into()),
            ..Default::default()
        };
        assert!(!check_claims(&claims, &e, 0.9)[0].held());
        e.executed_on.clear();
        e.executed_on.insert("cuda:0".into(), 3);
        assert!(check_claims(&claims, &e, 0.9)[0].held());
    }

    fn control() -> Case {
        Case {
            name: "negative.ort-cuda-requested-without-cuda".into(),
            backend: "ort-cpu".into(),
            request_provider: Some("cuda".into()),
            unless_available: None,
            claims: Claims {
                provider: Some("CUDAExecutionProvider".into()),
                ..Default::default()
            },
            expect: Expect::Fail,
        }
    }

    fn verdict(parts: Vec<Part>) -> crate::gate::Verdict {
        crate::gate::verdict::derive(&crate::gate::Outcome::Judged { parts }, "", &[]).0
    }

    #[test]
    fn a_negative_control_is_caught_only_when_evidence_rejects_the_label() {
        use crate::gate::Verdict;
        // Item 5: the session failed to open. Before, any error counted as "caught" (PASS).
        let open_failed = judge_case(
            &control(),
            Collected::Failed("backend could not be opened: libonnxruntime.so missing".into()),
            0.95,
        );
        assert_eq!(verdict(open_failed.clone()), Verdict::Fail);
        assert!(format!("{open_failed:?}").contains("libonnxruntime.so missing"));
        // Evidence collected, and it shows the CPU ran everything: the lie is caught.
        let caught = judge_case(
            &control(),
            Collected::Evidence(Box::new(cpu_evidence(true))),
            0.95,
        );
        assert_eq!(verdict(caught), Verdict::Pass);
        // Evidence that agrees with the false label: the control was not caught.
        let mut cuda = cpu_evidence(true);
        cuda.compute_executed_on.clear();
        cuda.compute_executed_on
            .insert("CUDAExecutionProvider".into(), 300);
        assert_eq!(
            verdict(judge_case(
                &control(),
                Collected::Evidence(Box::new(cuda)),
                0.95
            )),
            Verdict::Fail
        );
    }

    fn replay(mode: &str, replays: u64, kernels: Option<i64>) -> Evidence {
        let mut e = Evidence::default();
        e.executed_on.insert("cuda:0".into(), 3);
        e.cuda_graph = Some(crate::backend::evidence::GraphReplayEvidence {
            decode_mode: mode.into(),
            decode_steps: 63,
            replays,
            kernels_per_step: kernels,
        });
        e
    }

    #[test]
    fn a_cuda_graph_label_needs_every_decode_step_replayed() {
        use crate::gate::{Finding, Verdict};
        let claims = Claims {
            cuda_graph: Some(true),
            ..Default::default()
        };
        let graph = check_claims(&claims, &replay("cuda_graph", 63, Some(459)), 0.9);
        assert!(graph[0].held(), "{:?}", graph[0]);
        assert_eq!(graph[0].part.name, CUDA_GRAPH);
        // The eager loop launches from the host: no replay, the label is rejected with the count.
        let eager = check_claims(&claims, &replay("eager", 0, None), 0.9);
        assert!(matches!(eager[0].part.finding, Finding::NotHeld { .. }));
        assert!(
            eager[0]
                .words
                .contains("label says CUDA graph but decode `eager`: 0 replays"),
            "{}",
            eager[0].words
        );
        // A graph captured but replayed for only some steps is not "every step".
        assert!(!check_claims(&claims, &replay("cuda_graph", 62, Some(459)), 0.9)[0].held());
        // No decode-loop evidence at all: nothing to judge with, never a PASS.
        let none = check_claims(&claims, &Evidence::default(), 0.9);
        assert!(matches!(none[0].part.finding, Finding::NoData { .. }));
        // The negative control (a CUDA-graph label on the eager decode loop) is caught by evidence.
        let control = Case {
            name: "negative.cuda-graph-label-on-eager-decode".into(),
            backend: "tch-cuda-bf16".into(),
            request_provider: None,
            unless_available: None,
            claims,
            expect: Expect::Fail,
        };
        assert_eq!(
            verdict(judge_case(
                &control,
                Collected::Evidence(Box::new(replay("eager", 0, None))),
                0.95
            )),
            Verdict::Pass
        );
        assert_eq!(
            verdict(judge_case(
                &control,
                Collected::Evidence(Box::default()),
                0.95
            )),
            Verdict::Fail,
            "no evidence is not a caught lie"
        );
    }

    #[test]
    fn a_negative_control_whose_backend_cannot_run_here_is_skipped_not_caught() {
        use crate::backend::Availability;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("gates/attribution.compile_real.toml");
        let spec = crate::gate::GateSpec::load(&path).unwrap();
        let units = spec.units();
        let unit = units
            .iter()
            .find(|u| u.to_string() == "negative.cuda-graph-label-on-eager-decode")
            .expect("the gate file has the eager-decode control");
        let no_gpu = |b: &str| {
            if b.starts_with("tch-cuda") {
                Availability::Absent {
                    reason: "libtorch_cuda.so not loaded".into(),
                    fix: "install a CUDA libtorch".into(),
                }
            } else {
                Availability::Available {
                    detail: String::new(),
                }
            }
        };
        // Before: opening the absent backend failed, and the failure counted as the lie caught.
        let skip = crate::gate::skip_reason(&spec, unit, None, &no_gpu)
            .expect("an absent backend's control does not run");
        assert_eq!(skip.cause, SkipCause::BackendAbsent);
        assert!(
            skip.reason
                .contains("tch-cuda-bf16 absent: libtorch_cuda.so not loaded"),
            "{}",
            skip.reason
        );
        let cpu_control = units
            .iter()
            .find(|u| u.to_string() == "negative.cuda-label-on-llama-cpp-cpu-build")
            .expect("the llama.cpp CPU-build control");
        assert_eq!(
            crate::gate::skip_reason(&spec, cpu_control, None, &no_gpu),
            None
        );
    }
}
