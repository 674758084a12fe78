//! The scaling fit as the report reads it from a trial's typed details (gate `scaling.fit_ci`,
//! TR121: OLS of ln(latency) on ln(params), 95 % CI of the slope, R²; actionable only if R² ≥ 0.2
//! and the CI excludes zero): the points ([`crate::gate::scaling_fit::ShapePoint`]) and the
//! params-only slope ([`crate::gate::scaling_fit::SlopeSummary`]).
//!
//! The plotted band spans both CIs (the union: the gate calls a slope actionable only if both
//! exclude zero). An OLS line passes through the centroid of its points, so the line is drawn through
//! it with the reported slope. Absence is normal (the gate did not run): [`ScalingFit::from_trial`]
//! returns `None`.

use crate::gate::scaling_fit::{ScalingDetails, PARAMS_ONLY};
use crate::gate::{Details, TrialResult};
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

impl ScalingFit {
    /// `None` when the trial carries no scaling details; `Some(Err(why))` when it carries some but
    /// not enough to draw the fit.
    pub fn from_trial(r: &TrialResult) -> Option<Result<ScalingFit, String>> {
        let Some(Details::Scaling(d)) = &r.details else {
            return None;
        };
        Some(Self::from_details(&r.trial.to_string(), d))
    }

    fn from_details(trial: &str, d: &ScalingDetails) -> Result<ScalingFit, String> {
        let points: Vec<ScalingPoint> = d
            .points
            .iter()
            .map(|p| ScalingPoint {
                label: p.shape.clone(),
                params: p.parameters as f64,
                latency_ms: p.e2e_ms_geomean,
            })
            .collect();
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
            return Err(format!("{} point(s): a fit needs at least 2", points.len()));
        }
        let slope = d
            .slopes
            .iter()
            .find(|s| s.name == PARAMS_ONLY)
            .ok_or("no params-only slope (the gate wrote its points but no fit)")?;
        let ordered =
            |(a, b): (f64, f64)| (a.is_finite() && b.is_finite()).then(|| (a.min(b), a.max(b)));
        let t_ci = ordered(slope.t_ci);
        let bootstrap_ci = ordered(slope.bootstrap_ci);
        let slope_ci = match (t_ci, bootstrap_ci) {
            (Some(a), Some(b)) => (a.0.min(b.0), a.1.max(b.1)),
            (Some(c), None) | (None, Some(c)) => c,
            (None, None) => return Err("no CI of the slope".into()),
        };
        let n = points.len() as f64;
        let mean_x = points.iter().map(|p| p.params.ln()).sum::<f64>() / n;
        let mean_y = points.iter().map(|p| p.latency_ms.ln()).sum::<f64>() / n;
        Ok(ScalingFit {
            trial: trial.to_string(),
            points,
            slope: slope.slope,
            intercept: mean_y - slope.slope * mean_x,
            slope_ci,
            t_ci,
            bootstrap_ci,
            r_squared: Some(slope.r_squared).filter(|r| r.is_finite()),
            reported_actionable: Some(slope.actionable),
        })
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
    use crate::gate::scaling_fit::{ShapePoint, SlopeSummary};

    fn details(points: usize, slope: Option<SlopeSummary>) -> ScalingDetails {
        ScalingDetails {
            points: [("a", 1_000_000u64, 10.0), ("b", 100_000_000, 100.0)]
                .iter()
                .take(points)
                .map(|(s, p, ms)| ShapePoint {
                    shape: s.to_string(),
                    layers: 2,
                    parameters: *p,
                    e2e_ms_geomean: *ms,
                })
                .collect(),
            slopes: slope.into_iter().collect(),
        }
    }

    fn slope(
        slope: f64,
        t_ci: (f64, f64),
        bootstrap_ci: (f64, f64),
        r2: f64,
        actionable: bool,
    ) -> SlopeSummary {
        SlopeSummary {
            name: PARAMS_ONLY.into(),
            slope,
            t_ci,
            bootstrap_ci,
            r_squared: r2,
            actionable,
        }
    }

    #[test]
    fn reads_points_slope_and_both_cis_and_pivots_the_band_at_the_centroid() {
        let d = details(2, Some(slope(0.5, (0.25, 0.8), (0.2, 0.7), 0.9, true)));
        let f = ScalingFit::from_details("t", &d).unwrap();
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
        let d = details(2, Some(slope(-0.1, (-0.5, 0.3), (-0.4, 0.2), 0.1, false)));
        let f = ScalingFit::from_details("t", &d).unwrap();
        assert!(!f.actionable());
        assert_eq!(
            f.verdict_words(),
            "not identifiable (R² 0.10 < 0.2, CI includes 0)"
        );
        let d = details(2, Some(slope(0.5, (0.2, 0.7), (0.2, 0.7), 0.9, false)));
        let f = ScalingFit::from_details("t", &d).unwrap();
        assert!(!f.actionable());
        assert_eq!(f.verdict_words(), "not identifiable (the gate says so)");
    }

    #[test]
    fn an_incomplete_fit_says_what_is_missing() {
        let e = ScalingFit::from_details(
            "t",
            &details(1, Some(slope(1.0, (0.5, 1.5), (0.5, 1.5), 0.9, true))),
        )
        .unwrap_err();
        assert!(e.contains("at least 2"), "{e}");
        let e = ScalingFit::from_details("t", &details(2, None)).unwrap_err();
        assert!(e.contains("params-only slope"), "{e}");
        let nan = (f64::NAN, f64::NAN);
        let e = ScalingFit::from_details("t", &details(2, Some(slope(1.0, nan, nan, 0.9, true))))
            .unwrap_err();
        assert!(e.contains("no CI"), "{e}");
    }
}
