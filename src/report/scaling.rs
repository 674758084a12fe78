//! The scaling fit as the report reads it from a trial's metrics (gate `scaling.fit_ci`, TR121:
//! OLS of ln(latency) on ln(params), 95 % CI of the slope, R²; actionable only if R² ≥ 0.2 and the
//! CI excludes zero).
//!
//! Metric names: those the `scaling.fit_ci` gate writes (`src/gate/scaling_fit.rs`; natural logs):
//!
//! | metric | meaning |
//! |---|---|
//! | `<shape>::parameters`, `<shape>::e2e_ms_geomean` | one point per model shape |
//! | `params_only_log_params_slope` | OLS slope of ln(latency) on ln(params) |
//! | `params_only_log_params_t_ci_lo` / `_t_ci_hi` | its t-based 95 % CI |
//! | `params_only_log_params_bootstrap_ci_lo` / `_bootstrap_ci_hi` | its pairs-bootstrap 95 % CI |
//! | `params_only_r_squared` | R² of the fit |
//! | `params_only_log_params_actionable` | 1 if both CIs say actionable (the gate's verdict) |
//!
//! The plotted band spans both CIs (the union: the gate calls a slope actionable only if both
//! exclude zero). An OLS line passes through the centroid of its points, so the line is drawn through
//! it with the reported slope. Absence is normal (the gate did not run): [`ScalingFit::from_trial`]
//! returns `None`.

use crate::gate::TrialResult;
use crate::stats::MIN_R_SQUARED;

#[derive(Debug, Clone, PartialEq)]
pub struct ScalingPoint {
    pub label: String,
    pub params: f64,
    pub latency_ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScalingFit {
    pub trial: String,
    pub points: Vec<ScalingPoint>,
    pub slope: f64,
    pub intercept: f64,
    /// The band: the union of the reported CIs.
    pub slope_ci: (f64, f64),
    pub t_ci: Option<(f64, f64)>,
    pub bootstrap_ci: Option<(f64, f64)>,
    pub r_squared: Option<f64>,
    /// The gate's own actionable flag, when it wrote one.
    pub reported_actionable: Option<bool>,
}

const SLOPE: &str = "params_only_log_params";

fn get(metrics: &std::collections::BTreeMap<String, f64>, name: &str) -> Option<f64> {
    metrics.get(name).copied().filter(|v| v.is_finite())
}

fn pair(
    metrics: &std::collections::BTreeMap<String, f64>,
    lo: &str,
    hi: &str,
) -> Option<(f64, f64)> {
    let (a, b) = (get(metrics, lo)?, get(metrics, hi)?);
    Some((a.min(b), a.max(b)))
}

impl ScalingFit {
    /// `None` when the trial carries no scaling metrics; `Some(Err(why))` when it carries some but
    /// not enough to draw the fit.
    pub fn from_trial(r: &TrialResult) -> Option<Result<ScalingFit, String>> {
        let m = &r.metrics;
        let mut points: Vec<ScalingPoint> = Vec::new();
        for (key, &params) in m.iter() {
            let Some(label) = key.strip_suffix("::parameters") else {
                continue;
            };
            if let Some(&latency_ms) = m.get(&format!("{label}::e2e_ms_geomean")) {
                points.push(ScalingPoint {
                    label: label.to_string(),
                    params,
                    latency_ms,
                });
            }
        }
        let slope = get(m, &format!("{SLOPE}_slope"));
        if points.is_empty() && slope.is_none() {
            // Not a scaling trial, or one that produced no fit (skipped, failed early): said elsewhere.
            return None;
        }
        let fit = (|| {
            if let Some(p) = points
                .iter()
                .find(|p| !(p.params > 0.0 && p.latency_ms > 0.0))
            {
                return Err(format!(
                    "point `{}` has a non-positive value (params {}, latency {} ms)",
                    p.label, p.params, p.latency_ms
                ));
            }
            if points.len() < 2 {
                return Err(format!(
                    "{} point(s): a fit needs at least 2 (`<shape>::parameters` / `<shape>::e2e_ms_geomean`)",
                    points.len()
                ));
            }
            let slope = slope.ok_or(format!(
                "no `{SLOPE}_slope` metric (the gate wrote its points but no fit)"
            ))?;
            let t_ci = pair(m, &format!("{SLOPE}_t_ci_lo"), &format!("{SLOPE}_t_ci_hi"));
            let bootstrap_ci = pair(
                m,
                &format!("{SLOPE}_bootstrap_ci_lo"),
                &format!("{SLOPE}_bootstrap_ci_hi"),
            );
            let slope_ci = match (t_ci, bootstrap_ci) {
                (Some(a), Some(b)) => (a.0.min(b.0), a.1.max(b.1)),
                (Some(c), None) | (None, Some(c)) => c,
                (None, None) => return Err(format!("no CI of the slope (`{SLOPE}_t_ci_lo`/`_hi` or `{SLOPE}_bootstrap_ci_lo`/`_hi`)")),
            };
            let n = points.len() as f64;
            let mean_x = points.iter().map(|p| p.params.ln()).sum::<f64>() / n;
            let mean_y = points.iter().map(|p| p.latency_ms.ln()).sum::<f64>() / n;
            Ok(ScalingFit {
                trial: r.trial.clone(),
                points,
                slope,
                intercept: mean_y - slope * mean_x,
                slope_ci,
                t_ci,
                bootstrap_ci,
                r_squared: get(m, "params_only_r_squared"),
                reported_actionable: get(m, &format!("{SLOPE}_actionable")).map(|v| v >= 0.5),
            })
        })();
        Some(fit)
    }

    /// TR121's rule: R² ≥ 0.2 and every reported CI excludes zero (the band, their union, does).
    /// Unknown R² is not actionable. The gate's own flag, when present, must agree too.
    pub fn actionable(&self) -> bool {
        let excludes_zero = self.slope_ci.0 > 0.0 || self.slope_ci.1 < 0.0;
        self.r_squared.is_some_and(|r2| r2 >= MIN_R_SQUARED)
            && excludes_zero
            && self.reported_actionable != Some(false)
    }

    /// `actionable` or `not identifiable (why)`.
    pub fn verdict_words(&self) -> String {
        if self.actionable() {
            return "actionable".into();
        }
        let mut why = Vec::new();
        match self.r_squared {
            None => why.push("R² not reported".to_string()),
            Some(r2) if r2 < MIN_R_SQUARED => why.push(format!("R² {r2:.2} < {MIN_R_SQUARED}")),
            Some(_) => {}
        }
        if self.slope_ci.0 <= 0.0 && self.slope_ci.1 >= 0.0 {
            why.push("CI includes 0".into());
        }
        if why.is_empty() && self.reported_actionable == Some(false) {
            why.push("the gate says so".into());
        }
        format!("not identifiable ({})", why.join(", "))
    }

    /// Centroid of the points in log space, where the CI band pivots.
    pub fn centroid(&self) -> (f64, f64) {
        let n = self.points.len().max(1) as f64;
        (
            self.points.iter().map(|p| p.params.ln()).sum::<f64>() / n,
            self.points.iter().map(|p| p.latency_ms.ln()).sum::<f64>() / n,
        )
    }

    /// ln(latency) on the fitted line at ln(params) = `x`.
    pub fn line(&self, x: f64) -> f64 {
        self.intercept + self.slope * x
    }

    /// The band at `x`: lines through the fitted line's value at the centroid with the CI's slopes.
    pub fn band(&self, x: f64) -> (f64, f64) {
        let (cx, _) = self.centroid();
        let at_c = self.line(cx);
        let a = at_c + self.slope_ci.0 * (x - cx);
        let b = at_c + self.slope_ci.1 * (x - cx);
        (a.min(b), a.max(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{RunCounts, Verdict};
    use std::collections::BTreeMap;

    fn trial(metrics: &[(&str, f64)]) -> TrialResult {
        TrialResult {
            trial: "scaling.fit_ci::ort-cpu".into(),
            gate: "scaling.fit_ci".into(),
            backend: "ort-cpu".into(),
            scenario: None,
            verdict: Verdict::Pass {
                summary: String::new(),
            },
            metrics: metrics
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>(),
            runs: RunCounts::default(),
            degraded_reasons: vec![],
        }
    }

    const TWO_POINTS: [(&str, f64); 4] = [
        ("a::parameters", 1e6),
        ("a::e2e_ms_geomean", 10.0),
        ("b::parameters", 1e8),
        ("b::e2e_ms_geomean", 100.0),
    ];

    #[test]
    fn reads_points_slope_and_both_cis_and_pivots_the_band_at_the_centroid() {
        let mut m = TWO_POINTS.to_vec();
        m.extend([
            ("params_only_log_params_slope", 0.5),
            ("params_only_log_params_t_ci_lo", 0.25),
            ("params_only_log_params_t_ci_hi", 0.8),
            ("params_only_log_params_bootstrap_ci_lo", 0.2),
            ("params_only_log_params_bootstrap_ci_hi", 0.7),
            ("params_only_log_params_actionable", 1.0),
            ("params_only_r_squared", 0.9),
        ]);
        let f = ScalingFit::from_trial(&trial(&m)).unwrap().unwrap();
        assert_eq!(f.points.len(), 2);
        assert_eq!(
            f.slope_ci,
            (0.2, 0.8),
            "the band is the union of the t and bootstrap CIs"
        );
        assert!(f.actionable(), "{}", f.verdict_words());
        let (cx, cy) = f.centroid();
        assert!(
            (f.line(cx) - cy).abs() < 1e-12,
            "an OLS line goes through the centroid"
        );
        let (lo, hi) = f.band(cx);
        assert!(
            (hi - lo).abs() < 1e-12,
            "the band has zero width at the pivot"
        );
        let (lo, hi) = f.band(cx + 1.0);
        assert!((lo - (cy + 0.2)).abs() < 1e-12 && (hi - (cy + 0.8)).abs() < 1e-12);
    }

    #[test]
    fn a_ci_across_zero_or_low_r2_or_the_gates_flag_is_not_identifiable() {
        let mut m = TWO_POINTS.to_vec();
        m.extend([
            ("params_only_log_params_slope", -0.1),
            ("params_only_log_params_t_ci_lo", -0.5),
            ("params_only_log_params_t_ci_hi", 0.3),
            ("params_only_r_squared", 0.1),
        ]);
        let f = ScalingFit::from_trial(&trial(&m)).unwrap().unwrap();
        assert!(!f.actionable());
        assert_eq!(
            f.verdict_words(),
            "not identifiable (R² 0.10 < 0.2, CI includes 0)"
        );
        let mut m = TWO_POINTS.to_vec();
        m.extend([
            ("params_only_log_params_slope", 0.5),
            ("params_only_log_params_bootstrap_ci_lo", 0.2),
            ("params_only_log_params_bootstrap_ci_hi", 0.7),
            ("params_only_r_squared", 0.9),
            ("params_only_log_params_actionable", 0.0),
        ]);
        let f = ScalingFit::from_trial(&trial(&m)).unwrap().unwrap();
        assert!(!f.actionable());
        assert_eq!(f.verdict_words(), "not identifiable (the gate says so)");
    }

    #[test]
    fn absence_is_none_and_an_incomplete_fit_says_what_is_missing() {
        assert!(ScalingFit::from_trial(&trial(&[("perplexity", 19.0)])).is_none());
        let one = [
            ("a::parameters", 1e6),
            ("a::e2e_ms_geomean", 10.0),
            ("params_only_log_params_slope", 1.0),
        ];
        let e = ScalingFit::from_trial(&trial(&one)).unwrap().unwrap_err();
        assert!(e.contains("at least 2"), "{e}");
        let e = ScalingFit::from_trial(&trial(&TWO_POINTS))
            .unwrap()
            .unwrap_err();
        assert!(e.contains("params_only_log_params_slope"), "{e}");
        let mut m = TWO_POINTS.to_vec();
        m.push(("params_only_log_params_slope", 1.0));
        let e = ScalingFit::from_trial(&trial(&m)).unwrap().unwrap_err();
        assert!(e.contains("no CI"), "{e}");
    }
}
