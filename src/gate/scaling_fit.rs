//! Over 600 lines: 169 of them are this gate's tests.
//!
//! `scaling.fit_ci` (TR121; conclusive report C4, C5, §3.5, §3.10, §10.2 rule 1): scaling is a regime,
//! not a law. Over a family of model shapes that vary depth and width (like TR121's HF set), the
//! check fits `log(latency)` on `log(params)`, and on `log(params) + log(layers)`, and classifies
//! every slope **actionable** (R² ≥ `min_r_squared` and the 95 % CI excludes zero, by the t-based
//! *and* the pairs-bootstrap CI, [`crate::stats::identify_slopes`]) or **not identifiable** (with
//! which condition failed). One part per slope: it holds when the classification matches the
//! expectation the gate file writes down (`any` = reported, not asserted).
//!
//! Method (TR121 M.5): each shape is the exporter's seeded-random LLaMA
//! ([`WeightSource::Synthetic`], fp32 ONNX, cached), run on the trial's ONNX Runtime backend. Per
//! shape × scenario: the median end-to-end latency (prefill + KV decode of a fixed `gen_tokens`,
//! EOS ignored; warmup runs labelled and excluded); per shape: the geometric mean of those medians
//! over the gate's scenarios; the fit uses one point per shape. Prompts are the scenario prompts of
//! the catalog tokenizer; ids at or above a shape's vocabulary are folded (`id mod vocab`), which
//! keeps lengths exact (latency does not depend on which ids they are). Parameters are counted from
//! the exported weights and must equal the count the config implies.
//!
//! Runs are recorded with the shape as their sub-series (e.g. `l4-d384`), so every record names
//! the model it measured.

use serde::{Deserialize, Serialize};

use super::context::OnnxWeights;
use super::{median, Details, Evaluation, GateKind, Part, Threshold, TrialContext};
use crate::backend::ort::OptLevel;
use crate::backend::registry::{self, OrtDevice, Recipe};
use crate::measure::{measured_ok, run_series, RunOutcome, RunRecord};
use crate::model::catalog::{self, WeightSource};
use crate::model::onnx_graph::WeightFormat;
use crate::model::LlamaConfig;
use crate::stats::{geometric_mean, identify_slopes, FitVerdict, Identifiability, SlopeVerdict};
use crate::workload::{prompt_ids, scenario};

/// One member of the synthetic family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapeSpec {
    pub layers: usize,
    pub d_model: usize,
    /// Default: `d_model / 64` (head dim 64, as SmolLM2).
    #[serde(default)]
    pub heads: Option<usize>,
    /// Default: `heads` (multi-head attention).
    #[serde(default)]
    pub kv_heads: Option<usize>,
    /// Default: `8/3 · d_model` rounded up to a multiple of 64 (SmolLM2: 576 → 1536).
    #[serde(default)]
    pub ffn_dim: Option<usize>,
}

impl ShapeSpec {
    pub fn label(&self) -> String {
        format!("l{}-d{}", self.layers, self.d_model)
    }

    pub fn config(&self, vocab_size: usize) -> LlamaConfig {
        let heads = self.heads.unwrap_or((self.d_model / 64).max(1));
        LlamaConfig {
            n_layers: self.layers,
            d_model: self.d_model,
            n_heads: heads,
            n_kv_heads: self.kv_heads.unwrap_or(heads),
            ffn_dim: self
                .ffn_dim
                .unwrap_or((self.d_model * 8).div_ceil(3).div_ceil(64) * 64),
            vocab_size,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            tied_embeddings: true,
            context_length: 2048,
            bos_token_id: None,
            eos_token_id: None,
            arch: Default::default(),
            attention_bias: false,
            rope_scaling: Default::default(),
        }
    }
}

/// What the gate file expects of one slope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    ActionablePositive,
    ActionableNegative,
    Actionable,
    NotIdentifiable,
    /// Reported, not asserted.
    Any,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// Slope of `log(params)` in the params-only fit.
    pub params_only: Expect,
    /// Slope of `log(params)` in the params + layers fit.
    pub multivariate_params: Expect,
    /// Slope of `log(layers)` in the params + layers fit.
    pub multivariate_layers: Expect,
}

/// Parameters of the check, from the gate file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingFitParams {
    pub gen_tokens: usize,
    pub vocab_size: usize,
    /// Weight seed of every shape.
    pub seed: u64,
    pub shapes: Vec<ShapeSpec>,
    /// TR121 / §10.2 rule 1: 0.2.
    pub min_r_squared: f64,
    /// Confidence level of both slope CIs (0.95).
    pub confidence: f64,
    pub bootstrap_resamples: usize,
    pub bootstrap_seed: u64,
    pub expect: Expectations,
}

/// The classification of one slope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum SlopeClass {
    Actionable { positive: bool },
    NotIdentifiable { why: String },
}

impl SlopeClass {
    pub fn of(v: &SlopeVerdict, r_squared: f64, min_r2: f64) -> SlopeClass {
        if v.is_actionable() {
            return SlopeClass::Actionable {
                positive: v.slope > 0.0,
            };
        }
        let mut why = Vec::new();
        if !matches!(
            r_squared.partial_cmp(&min_r2),
            Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
        ) {
            why.push(format!("R² {r_squared:.3} < {min_r2}"));
        }
        if matches!(
            v.by_t,
            Identifiability::NotIdentifiable {
                ci_includes_zero: true,
                ..
            }
        ) {
            why.push("t CI includes 0".to_string());
        }
        if matches!(
            v.by_bootstrap,
            Identifiability::NotIdentifiable {
                ci_includes_zero: true,
                ..
            }
        ) {
            why.push("bootstrap CI includes 0".to_string());
        }
        if !v.agree {
            why.push("t-based and bootstrap verdicts disagree".to_string());
        }
        SlopeClass::NotIdentifiable {
            why: why.join(", "),
        }
    }

    pub fn meets(&self, e: Expect) -> bool {
        match (e, self) {
            (Expect::Any, _) => true,
            (Expect::Actionable, SlopeClass::Actionable { .. }) => true,
            (Expect::ActionablePositive, SlopeClass::Actionable { positive }) => *positive,
            (Expect::ActionableNegative, SlopeClass::Actionable { positive }) => !*positive,
            (Expect::NotIdentifiable, SlopeClass::NotIdentifiable { .. }) => true,
            _ => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            SlopeClass::Actionable { positive: true } => "actionable (positive)".into(),
            SlopeClass::Actionable { positive: false } => "actionable (negative)".into(),
            SlopeClass::NotIdentifiable { why } => format!("not identifiable ({why})"),
        }
    }
}

/// One point of the fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapePoint {
    pub shape: String,
    pub layers: usize,
    pub parameters: u64,
    /// Geometric mean over scenarios of the median e2e latency (ms).
    pub e2e_ms_geomean: f64,
}

/// One fitted slope with its classification (or the reason the fit could not be made).
#[derive(Debug, Clone, PartialEq)]
pub struct JudgedSlope {
    pub name: &'static str,
    pub verdict: Option<SlopeVerdict>,
    pub r_squared: f64,
    pub class: SlopeClass,
}

impl JudgedSlope {
    pub fn describe(&self) -> String {
        match &self.verdict {
            Some(v) => format!(
                "{} slope {:+.3} (t CI [{:+.3}, {:+.3}], bootstrap CI [{:+.3}, {:+.3}], R² {:.3}) → {}",
                self.name,
                v.slope,
                v.t_ci.lo,
                v.t_ci.hi,
                v.bootstrap_ci.lo,
                v.bootstrap_ci.hi,
                self.r_squared,
                self.class.describe()
            ),
            None => format!("{} → {}", self.name, self.class.describe()),
        }
    }
}

/// Fits both models on the points and judges every slope.
pub fn judge(points: &[ShapePoint], p: &ScalingFitParams) -> Vec<JudgedSlope> {
    let y: Vec<f64> = points.iter().map(|s| s.e2e_ms_geomean.ln()).collect();
    let lp: Vec<f64> = points.iter().map(|s| (s.parameters as f64).ln()).collect();
    let ll: Vec<f64> = points.iter().map(|s| (s.layers as f64).ln()).collect();
    let fit = |xs: Vec<Vec<f64>>| {
        identify_slopes(
            &y,
            &xs,
            p.min_r_squared,
            p.confidence,
            p.bootstrap_resamples,
            p.bootstrap_seed,
        )
    };
    let judged = |names: &[&'static str],
                  fit: Result<FitVerdict, crate::stats::StatsError>|
     -> Vec<JudgedSlope> {
        match fit {
            Ok(f) => names
                .iter()
                .zip(&f.slopes)
                .map(|(&name, v)| JudgedSlope {
                    name,
                    verdict: Some(v.clone()),
                    r_squared: f.fit.r_squared,
                    class: SlopeClass::of(v, f.fit.r_squared, p.min_r_squared),
                })
                .collect(),
            Err(e) => names
                .iter()
                .map(|&name| JudgedSlope {
                    name,
                    verdict: None,
                    r_squared: f64::NAN,
                    class: SlopeClass::NotIdentifiable {
                        why: format!("no fit: {e}"),
                    },
                })
                .collect(),
        }
    };
    let mut out = judged(&["params-only: log(params)"], fit(vec![lp.clone()]));
    out.extend(judged(
        &["params+layers: log(params)", "params+layers: log(layers)"],
        fit(vec![lp, ll]),
    ));
    out
}

/// The backend's weight format and optimization level for the synthetic family: its row in the
/// backend table, when that is an ONNX Runtime CPU backend whose weight format can be made from
/// random fp32 weights (the 4-bit forms refit a GGUF's own Q4_1 blocks, which the family lacks).
fn ort_setup(backend: &str) -> Option<(WeightFormat, OptLevel)> {
    match registry::spec(backend)?.recipe {
        Recipe::Ort {
            format: format @ (WeightFormat::Fp32 | WeightFormat::Int8 | WeightFormat::Fp16),
            opt,
            device: OrtDevice::Cpu,
        } => Some((format, opt)),
        _ => None,
    }
}

/// `id mod vocab` for ids outside the vocabulary; whether any was folded.
pub fn fold_ids(ids: &[u32], vocab: usize) -> (Vec<u32>, bool) {
    let v = vocab as u32;
    (
        ids.iter()
            .map(|&i| if i >= v { i % v } else { i })
            .collect(),
        ids.iter().any(|&i| i >= v),
    )
}

pub const PARAMS_ONLY: &str = "params_only";
pub const MULTIVARIATE_PARAMS: &str = "multivariate_params";
pub const MULTIVARIATE_LAYERS: &str = "multivariate_layers";
pub const SHAPES: &str = "shapes";

/// One fitted slope as the report reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlopeSummary {
    /// The part name: `params_only`, `multivariate_params`, `multivariate_layers`.
    pub name: String,
    pub slope: f64,
    pub t_ci: (f64, f64),
    pub bootstrap_ci: (f64, f64),
    pub r_squared: f64,
    pub actionable: bool,
}

/// What the report reads: one point per shape and the fitted slopes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingDetails {
    pub points: Vec<ShapePoint>,
    pub slopes: Vec<SlopeSummary>,
}

/// One part per judged slope: the classification against the gate file's expectation.
/// A slope the gate file expects nothing of (`any`) is not part of the claim: it is described in
/// the summary only. When no slope is asserted, the trial only reports (INFO).
pub fn slope_parts(judged: &[JudgedSlope], p: &ScalingFitParams) -> Vec<Part> {
    let expects = [
        (PARAMS_ONLY, p.expect.params_only),
        (MULTIVARIATE_PARAMS, p.expect.multivariate_params),
        (MULTIVARIATE_LAYERS, p.expect.multivariate_layers),
    ];
    let parts: Vec<Part> = judged
        .iter()
        .zip(expects)
        .filter(|(_, (_, expect))| *expect != Expect::Any)
        .map(|(j, (name, expect))| {
            Part::compare(
                name,
                f64::from(u8::from(j.class.meets(expect))),
                Threshold::equal(1.0),
                format!("1 = {} as expected ({expect:?})", j.describe()),
            )
        })
        .collect();
    if parts.is_empty() {
        return vec![Part::reported(
            PARAMS_ONLY,
            judged
                .first()
                .and_then(|j| j.verdict.as_ref())
                .map(|v| v.slope),
            "the gate file asserts no slope (every expectation is `any`)",
        )];
    }
    parts
}

/// The slopes the gate file expects nothing of, in words.
fn reported_slopes(judged: &[JudgedSlope], p: &ScalingFitParams) -> String {
    let expects = [
        p.expect.params_only,
        p.expect.multivariate_params,
        p.expect.multivariate_layers,
    ];
    judged
        .iter()
        .zip(expects)
        .filter(|(_, e)| *e == Expect::Any)
        .map(|(j, _)| j.describe())
        .collect::<Vec<_>>()
        .join("; ")
}

impl GateKind for ScalingFitParams {
    fn parts(&self) -> &'static [&'static str] {
        &[
            PARAMS_ONLY,
            MULTIVARIATE_PARAMS,
            MULTIVARIATE_LAYERS,
            SHAPES,
        ]
    }

    fn aggregates_scenarios(&self) -> bool {
        true
    }

    fn validate(&self, spec: &super::GateSpec) -> Result<(), String> {
        if let Some(b) = spec.backends.iter().find(|b| ort_setup(b).is_none()) {
            return Err(format!("scaling.fit_ci runs the synthetic ONNX family on ort-cpu, ort-cpu-ref, ort-cpu-int8 or ort-cpu-fp16, not `{b}`"));
        }
        if self.shapes.len() < 4 {
            return Err(format!(
                "{} shapes; the params + layers fit needs at least 4 (TR121 used 7)",
                self.shapes.len()
            ));
        }
        if spec.scenarios.is_empty() {
            return Err("`scenarios` is empty".into());
        }
        Ok(())
    }

    fn evaluate(&self, ctx: &TrialContext<'_>) -> Evaluation {
        evaluate(ctx, self)
    }
}

fn evaluate(ctx: &TrialContext<'_>, p: &ScalingFitParams) -> Evaluation {
    let fail = Evaluation::error;
    let Some((format, opt)) = ort_setup(ctx.backend_id()) else {
        return fail(format!(
            "{}: scaling.fit_ci runs the synthetic ONNX family on ort-cpu, ort-cpu-ref, ort-cpu-int8 or ort-cpu-fp16, not `{}`",
            ctx.spec.path.display(),
            ctx.backend_id()
        ));
    };
    let mut prompts = Vec::new();
    let mut folded = false;
    for name in &ctx.spec.scenarios {
        let Some(s) = scenario(name) else {
            return fail(format!("unknown scenario `{name}`"));
        };
        match prompt_ids(&s, ctx.encode) {
            Ok(ids) => {
                let (ids, f) = fold_ids(&ids, p.vocab_size);
                folded |= f;
                prompts.push((s, ids));
            }
            Err(e) => return fail(format!("cannot build the `{name}` prompt: {e}")),
        }
    }

    let mut records: Vec<RunRecord> = Vec::new();
    let mut points = Vec::new();
    let mut failures = Vec::new();
    let mut run_shapes = 0usize;
    for shape in &p.shapes {
        let config = shape.config(p.vocab_size);
        let source = WeightSource::Synthetic {
            config: config.clone(),
            seed: p.seed,
        };
        let label = shape.label();
        let prepared = match catalog::ensure_onnx(&source, format) {
            Ok(x) => x,
            Err(e) => {
                failures.push(format!("{label}: export failed: {e}"));
                continue;
            }
        };
        if prepared.parameter_count != config.parameter_count() {
            failures.push(format!(
                "{label}: exported weights hold {} parameters, the config implies {}",
                prepared.parameter_count,
                config.parameter_count()
            ));
            continue;
        }
        let mut backend = ctx.backends.open_onnx(
            ctx.backend_id(),
            &OnnxWeights {
                source: &source,
                format,
                opt,
            },
        );
        run_shapes += 1;
        let mut medians = Vec::new();
        for (s, prompt) in &prompts {
            let plan = ctx.series(Some(&label), s.name, prompt.clone(), p.gen_tokens);
            let recs = run_series(&mut backend, &plan);
            if let Err(e) = ctx.log(&recs) {
                return fail(e).with_runs(&records, records.len());
            }
            match median(
                &measured_ok(&recs)
                    .iter()
                    .map(|t| t.e2e_ms)
                    .collect::<Vec<_>>(),
            ) {
                Some(m) => medians.push(m),
                None => failures.push(format!(
                    "{label} × {}: no successful measured run ({})",
                    s.name,
                    recs.iter()
                        .find_map(|r| match &r.outcome {
                            RunOutcome::Degraded { reason } => Some(reason.clone()),
                            RunOutcome::Error { message } => Some(message.clone()),
                            RunOutcome::Projected(p) => Some(p.describe()),
                            RunOutcome::Ok(_) => None,
                        })
                        .unwrap_or_default()
                )),
            }
            records.extend(recs);
        }
        drop(backend);
        if medians.len() == prompts.len() {
            if let Ok(g) = geometric_mean(&medians) {
                points.push(ShapePoint {
                    shape: label,
                    layers: config.n_layers,
                    parameters: prepared.parameter_count,
                    e2e_ms_geomean: g,
                });
            }
        }
    }
    // What the plan states: every shape that reached the run stage × scenario × (warmup + repetitions).
    let stated = run_shapes * prompts.len() * (ctx.profile.warmup + ctx.profile.repetitions);
    if !failures.is_empty() {
        return Evaluation::judged(
            vec![Part::no_data(SHAPES, failures.join("; "))],
            String::new(),
        )
        .with_runs(&records, stated)
        .with_details(Details::Scaling(ScalingDetails {
            points,
            slopes: Vec::new(),
        }));
    }

    let judged = judge(&points, p);
    let names = [PARAMS_ONLY, MULTIVARIATE_PARAMS, MULTIVARIATE_LAYERS];
    let slopes = judged
        .iter()
        .zip(names)
        .filter_map(|(j, name)| {
            j.verdict.as_ref().map(|v| SlopeSummary {
                name: name.into(),
                slope: v.slope,
                t_ci: (v.t_ci.lo, v.t_ci.hi),
                bootstrap_ci: (v.bootstrap_ci.lo, v.bootstrap_ci.hi),
                r_squared: j.r_squared,
                actionable: j.class.meets(Expect::Actionable),
            })
        })
        .collect();
    let shapes = points
        .iter()
        .map(|pt| {
            format!(
                "{} {:.1}M {:.0} ms",
                pt.shape,
                pt.parameters as f64 / 1e6,
                pt.e2e_ms_geomean
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let reported = reported_slopes(&judged, p);
    let summary = format!(
        "{} shapes × {} scenarios, {} tokens, geomean of median e2e: {shapes}{}{}",
        points.len(),
        prompts.len(),
        p.gen_tokens,
        if folded {
            " (prompt ids folded into the vocabulary)"
        } else {
            ""
        },
        if reported.is_empty() {
            String::new()
        } else {
            format!("; reported, not asserted: {reported}")
        }
    );
    Evaluation::judged(slope_parts(&judged, p), summary)
        .with_runs(&records, stated)
        .with_details(Details::Scaling(ScalingDetails { points, slopes }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(expect: Expectations) -> ScalingFitParams {
        ScalingFitParams {
            gen_tokens: 8,
            vocab_size: 1000,
            seed: 1,
            shapes: vec![],
            min_r_squared: 0.2,
            confidence: 0.95,
            bootstrap_resamples: 2000,
            bootstrap_seed: 7,
            expect,
        }
    }
    const ANY: Expectations = Expectations {
        params_only: Expect::Any,
        multivariate_params: Expect::Any,
        multivariate_layers: Expect::Any,
    };

    fn point(layers: usize, parameters: u64, ms: f64) -> ShapePoint {
        ShapePoint {
            shape: format!("l{layers}"),
            layers,
            parameters,
            e2e_ms_geomean: ms,
        }
    }

    #[test]
    fn latency_proportional_to_params_is_actionable_positive() {
        // latency = c · params^0.9 with small multiplicative noise that does not follow layers.
        let noise = [1.02, 0.97, 1.01, 0.99, 1.03, 0.98, 1.0];
        let shapes: [(usize, f64); 7] = [
            (2, 14e6),
            (8, 8e6),
            (12, 22e6),
            (4, 26e6),
            (6, 44e6),
            (3, 59e6),
            (16, 17e6),
        ];
        let pts: Vec<_> = shapes
            .iter()
            .zip(noise)
            .map(|(&(l, n), e)| point(l, n as u64, 1e-4 * n.powf(0.9) * e))
            .collect();
        let j = judge(&pts, &params(ANY));
        assert_eq!(j.len(), 3);
        assert_eq!(
            j[0].class,
            SlopeClass::Actionable { positive: true },
            "{:?}",
            j[0]
        );
        let v = j[0].verdict.as_ref().unwrap();
        assert!(
            v.t_ci.contains(0.9) && v.slope > 0.8 && v.slope < 1.0,
            "{v:?}"
        );
        assert!(
            j[0].class.meets(Expect::ActionablePositive)
                && !j[0].class.meets(Expect::NotIdentifiable)
        );
    }

    #[test]
    fn latency_unrelated_to_params_is_not_identifiable() {
        // TR121's GPU regime: latency set by depth alone, params scattered independently.
        let shapes: [(usize, f64); 7] = [
            (2, 60e6),
            (8, 8e6),
            (12, 22e6),
            (4, 14e6),
            (6, 44e6),
            (3, 26e6),
            (16, 17e6),
        ];
        let pts: Vec<_> = shapes
            .iter()
            .map(|&(l, n)| point(l, n as u64, 5.0 * l as f64))
            .collect();
        let j = judge(&pts, &params(ANY));
        assert!(
            matches!(j[0].class, SlopeClass::NotIdentifiable { .. }),
            "{:?}",
            j[0]
        );
        assert!(!j[0].class.meets(Expect::ActionablePositive));
        // …while the layers term of the multivariate fit carries it.
        assert_eq!(
            j[2].class,
            SlopeClass::Actionable { positive: true },
            "{:?}",
            j[2]
        );
    }

    #[test]
    fn slopes_expected_to_be_anything_are_not_parts_of_the_claim() {
        use crate::gate::{verdict::derive, Outcome, Verdict};
        let noise = [1.02, 0.97, 1.01, 0.99, 1.03];
        let pts: Vec<_> = [(2, 14e6), (8, 8e6), (12, 22e6), (4, 26e6), (6, 44e6)]
            .iter()
            .zip(noise)
            .map(|(&(l, n), e): (&(usize, f64), f64)| point(l, n as u64, 1e-4 * n * e))
            .collect();
        let mut p = params(ANY);
        let verdict = |p: &ScalingFitParams| {
            let parts = slope_parts(&judge(&pts, p), p);
            derive(&Outcome::Judged { parts }, "", &[]).0
        };
        assert_eq!(
            verdict(&p),
            Verdict::Info,
            "nothing asserted: it only reports"
        );
        p.expect.params_only = Expect::ActionablePositive;
        assert_eq!(verdict(&p), Verdict::Pass);
        p.expect.params_only = Expect::NotIdentifiable;
        assert_eq!(verdict(&p), Verdict::Fail);
    }

    #[test]
    fn too_few_points_is_not_identifiable_not_a_panic() {
        let pts = vec![
            point(2, 1_000_000, 10.0),
            point(4, 2_000_000, 20.0),
            point(8, 4_000_000, 41.0),
        ];
        let j = judge(&pts, &params(ANY));
        assert!(j.iter().skip(1).all(|s| matches!(&s.class, SlopeClass::NotIdentifiable { why } if why.contains("no fit"))), "{j:?}");
    }

    #[test]
    fn shape_defaults_follow_smollm2() {
        let c = ShapeSpec {
            layers: 30,
            d_model: 576,
            heads: Some(9),
            kv_heads: Some(3),
            ffn_dim: None,
        }
        .config(49152);
        assert_eq!((c.ffn_dim, c.parameter_count()), (1536, 134_515_008));
        let d = ShapeSpec {
            layers: 2,
            d_model: 256,
            heads: None,
            kv_heads: None,
            ffn_dim: None,
        }
        .config(49152);
        assert_eq!((d.n_heads, d.n_kv_heads, d.ffn_dim), (4, 4, 704));
        assert!(d.validate().is_ok());
    }

    #[test]
    fn ids_outside_the_vocab_are_folded() {
        assert_eq!(
            fold_ids(&[1, 999, 1000, 2500], 1000),
            (vec![1, 999, 0, 500], true)
        );
        assert_eq!(fold_ids(&[1, 2], 1000), (vec![1, 2], false));
    }
}
