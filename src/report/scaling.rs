//! The scaling fit as the report reads it from a trial's metrics (gate `scaling.fit_ci`, TR121:
//! OLS of ln(latency) on ln(params), 95 % CI of the slope, R²; actionable only if R² ≥ 0.2 and the
//! CI excludes zero).
//!
//! Metric names (the contract with the scaling gate; natural logarithms):
//!
//! | metric | meaning |
//! |---|---|
//! | `slope` (or `slope_log_params`) | OLS slope of ln(latency_ms) on ln(params) |
//! | `slope_ci_low`, `slope_ci_high` | the slope's 95 % CI (the gate's bootstrap CI) |
//! | `r_squared` (or `r2`) | R² of the fit |
//! | `intercept` (optional) | else the line is put through the points' centroid, as OLS lines are |
//! | `point.<label>.params`, `point.<label>.latency_ms` | one point per model (`<label>` = model name) |
//!
//! Absence is normal (the gate did not run): [`ScalingFit::from_trial`] returns `None`.

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
    pub slope_ci: (f64, f64),
    pub r_squared: Option<f64>,
}

fn first(metrics: &std::collections::BTreeMap<String, f64>, names: &[&str]) -> Option<f64> {
    names.iter().find_map(|n| metrics.get(*n).copied()).filter(|v| v.is_finite())
}

impl ScalingFit {
    /// `None` when the trial carries no scaling metrics; `Some(Err(why))` when it carries some but
    /// not enough to draw the fit.
    pub fn from_trial(r: &TrialResult) -> Option<Result<ScalingFit, String>> {
        let m = &r.metrics;
        let mut points: Vec<ScalingPoint> = Vec::new();
        for (key, &params) in m.iter() {
            let Some(label) = key.strip_prefix("point.").and_then(|k| k.strip_suffix(".params")) else { continue };
            if let Some(&latency_ms) = m.get(&format!("point.{label}.latency_ms")) {
                points.push(ScalingPoint { label: label.to_string(), params, latency_ms });
            }
        }
        let slope = first(m, &["slope", "slope_log_params"]);
        let ci = (first(m, &["slope_ci_low"]), first(m, &["slope_ci_high"]));
        if points.is_empty() && slope.is_none() {
            // Not a scaling trial, or one that produced no fit (skipped, failed early): said elsewhere.
            return None;
        }
        let fit = (|| {
            if let Some(p) = points.iter().find(|p| !(p.params > 0.0 && p.latency_ms > 0.0)) {
                return Err(format!("point `{}` has a non-positive value (params {}, latency {} ms)", p.label, p.params, p.latency_ms));
            }
            if points.len() < 2 {
                return Err(format!("{} point(s): a fit needs at least 2 (`point.<label>.params` / `.latency_ms`)", points.len()));
            }
            let slope = slope.ok_or("no `slope` metric")?;
            let (Some(lo), Some(hi)) = ci else { return Err("no `slope_ci_low` / `slope_ci_high` metrics".to_string()) };
            let n = points.len() as f64;
            let mean_x = points.iter().map(|p| p.params.ln()).sum::<f64>() / n;
            let mean_y = points.iter().map(|p| p.latency_ms.ln()).sum::<f64>() / n;
            let intercept = first(m, &["intercept"]).unwrap_or(mean_y - slope * mean_x);
            Ok(ScalingFit {
                trial: r.trial.clone(),
                points,
                slope,
                intercept,
                slope_ci: (lo.min(hi), lo.max(hi)),
                r_squared: first(m, &["r_squared", "r2"]),
            })
        })();
        Some(fit)
    }

    /// TR121's rule: R² ≥ 0.2 and the CI excludes zero. Unknown R² is not actionable.
    pub fn actionable(&self) -> bool {
        let excludes_zero = self.slope_ci.0 > 0.0 || self.slope_ci.1 < 0.0;
        self.r_squared.is_some_and(|r2| r2 >= MIN_R_SQUARED) && excludes_zero
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
            verdict: Verdict::Pass { summary: String::new() },
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            runs: RunCounts::default(),
            degraded_reasons: vec![],
        }
    }

    #[test]
    fn reads_points_slope_and_ci_and_pivots_the_band_at_the_centroid() {
        let t = trial(&[
            ("point.a.params", 1e6),
            ("point.a.latency_ms", 10.0),
            ("point.b.params", 1e8),
            ("point.b.latency_ms", 100.0),
            ("slope", 0.5),
            ("slope_ci_low", 0.2),
            ("slope_ci_high", 0.8),
            ("r_squared", 0.9),
        ]);
        let f = ScalingFit::from_trial(&t).unwrap().unwrap();
        assert_eq!(f.points.len(), 2);
        assert!(f.actionable(), "{}", f.verdict_words());
        let (cx, cy) = f.centroid();
        assert!((f.line(cx) - cy).abs() < 1e-12, "an OLS line goes through the centroid");
        let (lo, hi) = f.band(cx);
        assert!((hi - lo).abs() < 1e-12, "the band has zero width at the pivot");
        let (lo, hi) = f.band(cx + 1.0);
        assert!((lo - (cy + 0.2)).abs() < 1e-12 && (hi - (cy + 0.8)).abs() < 1e-12);
    }

    #[test]
    fn a_ci_across_zero_or_low_r2_is_not_identifiable() {
        let base = [("point.a.params", 1e6), ("point.a.latency_ms", 10.0), ("point.b.params", 2e6), ("point.b.latency_ms", 9.0), ("slope", -0.1)];
        let mut m = base.to_vec();
        m.extend([("slope_ci_low", -0.5), ("slope_ci_high", 0.3), ("r_squared", 0.1)]);
        let f = ScalingFit::from_trial(&trial(&m)).unwrap().unwrap();
        assert!(!f.actionable());
        assert_eq!(f.verdict_words(), "not identifiable (R² 0.10 < 0.2, CI includes 0)");
    }

    #[test]
    fn absence_is_none_and_an_incomplete_fit_says_what_is_missing() {
        assert!(ScalingFit::from_trial(&trial(&[("perplexity", 19.0)])).is_none());
        let e = ScalingFit::from_trial(&trial(&[("point.a.params", 1e6), ("point.a.latency_ms", 10.0), ("slope", 1.0)])).unwrap().unwrap_err();
        assert!(e.contains("at least 2"), "{e}");
        let e = ScalingFit::from_trial(&trial(&[
            ("point.a.params", 1e6),
            ("point.a.latency_ms", 10.0),
            ("point.b.params", 2e6),
            ("point.b.latency_ms", 12.0),
            ("slope", 1.0),
        ]))
        .unwrap()
        .unwrap_err();
        assert!(e.contains("slope_ci_low"), "{e}");
    }
}
