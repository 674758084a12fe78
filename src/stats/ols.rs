//! Ordinary least squares with an intercept, slope confidence intervals, and TR121's
//! identifiability rule (conclusive report §10.2 rule 1): a slope is *actionable* only if
//! `R² ≥ 0.2` **and** its CI excludes zero; otherwise it is *not identifiable*.
//!
//! - Fit: `y = b0 + b1·x1 + … + bk·xk + e`, solved by Householder QR of the design matrix
//!   (`nalgebra`, already in the tree through `statrs`; QR avoids squaring the condition number
//!   as the normal equations do). `Var(b) = s²·(XᵀX)⁻¹ = s²·R⁻¹R⁻ᵀ`, `s² = SSR / (n - k - 1)`.
//! - `R² = 1 - SSR / SST` with `SST = Σ(y - ȳ)²`.
//! - t-based CI: `b ± t_{(1+level)/2, n-k-1} · se(b)` (Student's t from `statrs`).
//! - Pairs bootstrap CI: resample the `(y, x)` rows with replacement (seeded), refit, take the
//!   percentile interval of each slope (see [`super::bootstrap`]). Resamples whose design is
//!   singular (too few distinct rows, a constant regressor) are skipped and counted; at least half
//!   must be usable.
//!
//! The gate requires both CIs to agree: [`identify_slopes`] gives both verdicts per slope and
//! whether they agree; [`SlopeVerdict::is_actionable`] is true only when both say actionable.

use std::cmp::Ordering;

use nalgebra::{DMatrix, DVector};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use super::bootstrap::{check_resamples, percentile_interval, Interval};
use super::{check_finite, check_level, Result, StatsError};

/// TR121's minimum R² for an actionable scaling fit.
pub const MIN_R_SQUARED: f64 = 0.2;

/// A fitted OLS model. Coefficient index 0 is the intercept; index `j + 1` the slope of
/// regressor `j` (in the order given to [`ols`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OlsFit {
    pub n: usize,
    pub coefficients: Vec<f64>,
    pub std_errors: Vec<f64>,
    pub r_squared: f64,
    pub adj_r_squared: f64,
    /// `n - k - 1`.
    pub residual_df: usize,
    /// Residual standard error `s = sqrt(SSR / residual_df)`.
    pub sigma: f64,
}

impl OlsFit {
    /// Slope of regressor `j` (0-based), if there is one.
    pub fn slope(&self, j: usize) -> Option<f64> {
        self.coefficients.get(j + 1).copied()
    }

    /// t-based CI of coefficient `index` (0 = intercept): `b ± t_{(1+level)/2, df} · se`.
    pub fn t_ci(&self, index: usize, level: f64) -> Result<Interval> {
        check_level(level)?;
        let (Some(&b), Some(&se)) = (self.coefficients.get(index), self.std_errors.get(index))
        else {
            return Err(StatsError::InvalidParameter {
                name: "coefficient index".into(),
                value: index as f64,
                expected: format!("less than {}", self.coefficients.len()),
            });
        };
        let t = StudentsT::new(0.0, 1.0, self.residual_df as f64)
            .map_err(|e| StatsError::InvalidParameter {
                name: "residual_df".into(),
                value: self.residual_df as f64,
                expected: format!("at least 1 ({e})"),
            })?
            .inverse_cdf((1.0 + level) / 2.0);
        Ok(Interval {
            lo: b - t * se,
            hi: b + t * se,
            point: b,
            level,
        })
    }

    /// t-based CI of the slope of regressor `j` (0-based).
    pub fn slope_t_ci(&self, j: usize, level: f64) -> Result<Interval> {
        self.t_ci(j + 1, level)
    }
}

/// OLS of `y` on the regressors `xs` (one `Vec` per regressor, each as long as `y`) plus an
/// intercept.
///
/// Errors: non-finite values, no regressor, length mismatch, fewer than `k + 2` points (no
/// residual degree of freedom), a constant regressor or constant `y` (R² undefined), linearly
/// dependent regressors.
pub fn ols(y: &[f64], xs: &[Vec<f64>]) -> Result<OlsFit> {
    check_design(y, xs)?;
    let (n, p) = (y.len(), xs.len() + 1);
    let y_mean = y.iter().sum::<f64>() / n as f64;
    let sst: f64 = y.iter().map(|v| (v - y_mean).powi(2)).sum();
    if sst == 0.0 {
        return Err(StatsError::ZeroVariance {
            what: "y".into(),
            why: "R² is undefined".into(),
        });
    }
    let design = design_matrix(xs, &(0..n).collect::<Vec<_>>());
    let (beta, r_inv) = solve(&design, &DVector::from_column_slice(y))?;
    let fitted = &design * &beta;
    let ssr: f64 = y
        .iter()
        .zip(fitted.iter())
        .map(|(v, f)| (v - f).powi(2))
        .sum();
    let df = n - p;
    let s2 = ssr / df as f64;
    let cov_diag = (&r_inv * r_inv.transpose()).diagonal();
    let r_squared = 1.0 - ssr / sst;
    Ok(OlsFit {
        n,
        coefficients: beta.iter().copied().collect(),
        std_errors: cov_diag.iter().map(|c| (s2 * c).sqrt()).collect(),
        r_squared,
        adj_r_squared: 1.0 - (1.0 - r_squared) * (n - 1) as f64 / df as f64,
        residual_df: df,
        sigma: s2.sqrt(),
    })
}

/// OLS with one regressor: `y = b0 + b1·x`.
pub fn ols_simple(y: &[f64], x: &[f64]) -> Result<OlsFit> {
    ols(y, &[x.to_vec()])
}

/// Pairs-bootstrap CIs of every slope, and how many resamples were usable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlopeBootstrap {
    /// One percentile interval per regressor; `point` is the full-sample slope.
    pub intervals: Vec<Interval>,
    pub resamples: usize,
    /// Resamples with a non-singular design (the others were skipped).
    pub usable: usize,
}

/// Seeded pairs bootstrap of the slopes (method in the module doc).
pub fn pairs_bootstrap_slope_cis(
    y: &[f64],
    xs: &[Vec<f64>],
    level: f64,
    resamples: usize,
    seed: u64,
) -> Result<SlopeBootstrap> {
    check_resamples(level, resamples)?;
    let fit = ols(y, xs)?;
    let n = y.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut slopes: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); xs.len()];
    let mut rows = vec![0usize; n];
    for _ in 0..resamples {
        rows.iter_mut().for_each(|r| *r = rng.gen_range(0..n));
        let y_star = DVector::from_iterator(n, rows.iter().map(|&r| y[r]));
        match solve(&design_matrix(xs, &rows), &y_star) {
            Ok((beta, _)) => slopes
                .iter_mut()
                .zip(beta.iter().skip(1))
                .for_each(|(s, b)| s.push(*b)),
            Err(StatsError::Collinear { .. }) => {} // singular resample: skipped, counted below
            Err(e) => return Err(e),
        }
    }
    let usable = slopes[0].len();
    let needed = resamples.div_ceil(2);
    if usable < needed {
        return Err(StatsError::TooManyDegenerateResamples {
            resamples,
            usable,
            needed,
        });
    }
    let intervals = slopes
        .into_iter()
        .enumerate()
        .map(|(j, s)| percentile_interval(s, fit.coefficients[j + 1], level))
        .collect::<Result<Vec<_>>>()?;
    Ok(SlopeBootstrap {
        intervals,
        resamples,
        usable,
    })
}

/// TR121's verdict on one slope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Identifiability {
    /// `R² ≥ min_r2` and the CI excludes zero.
    Actionable,
    /// Reported, but not to be acted on; the flags say which condition failed.
    NotIdentifiable {
        low_r_squared: bool,
        ci_includes_zero: bool,
    },
}

impl Identifiability {
    pub fn is_actionable(&self) -> bool {
        matches!(self, Identifiability::Actionable)
    }
}

/// Actionable iff `r_squared ≥ min_r2` and `ci` excludes zero.
pub fn identifiability(r_squared: f64, min_r2: f64, ci: &Interval) -> Identifiability {
    // NaN on either side counts as "too low": never actionable by accident.
    let low_r_squared = !matches!(
        r_squared.partial_cmp(&min_r2),
        Some(Ordering::Greater | Ordering::Equal)
    );
    let ci_includes_zero = ci.contains(0.0);
    if low_r_squared || ci_includes_zero {
        Identifiability::NotIdentifiable {
            low_r_squared,
            ci_includes_zero,
        }
    } else {
        Identifiability::Actionable
    }
}

/// Both verdicts on the slope of one regressor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlopeVerdict {
    /// Regressor index (0-based, order of `xs`).
    pub regressor: usize,
    pub slope: f64,
    pub t_ci: Interval,
    pub bootstrap_ci: Interval,
    pub by_t: Identifiability,
    pub by_bootstrap: Identifiability,
    /// Both methods reach the same actionable / not-identifiable verdict.
    pub agree: bool,
}

impl SlopeVerdict {
    /// Actionable only if the t-based and bootstrap verdicts are both actionable.
    pub fn is_actionable(&self) -> bool {
        self.by_t.is_actionable() && self.by_bootstrap.is_actionable()
    }
}

/// A fit with a verdict per slope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitVerdict {
    pub fit: OlsFit,
    pub slopes: Vec<SlopeVerdict>,
    pub bootstrap: SlopeBootstrap,
    pub min_r2: f64,
}

/// Fits `y` on `xs`, and judges every slope by the t-based and the pairs-bootstrap CI at `level`.
pub fn identify_slopes(
    y: &[f64],
    xs: &[Vec<f64>],
    min_r2: f64,
    level: f64,
    resamples: usize,
    seed: u64,
) -> Result<FitVerdict> {
    let fit = ols(y, xs)?;
    let bootstrap = pairs_bootstrap_slope_cis(y, xs, level, resamples, seed)?;
    let slopes = (0..xs.len())
        .map(|j| {
            let t_ci = fit.slope_t_ci(j, level)?;
            let bootstrap_ci = bootstrap.intervals[j];
            let by_t = identifiability(fit.r_squared, min_r2, &t_ci);
            let by_bootstrap = identifiability(fit.r_squared, min_r2, &bootstrap_ci);
            let agree = by_t.is_actionable() == by_bootstrap.is_actionable();
            Ok(SlopeVerdict {
                regressor: j,
                slope: t_ci.point,
                t_ci,
                bootstrap_ci,
                by_t,
                by_bootstrap,
                agree,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(FitVerdict {
        fit,
        slopes,
        bootstrap,
        min_r2,
    })
}

fn check_design(y: &[f64], xs: &[Vec<f64>]) -> Result<()> {
    check_finite("y", y)?;
    if xs.is_empty() {
        return Err(StatsError::InvalidParameter {
            name: "number of regressors".into(),
            value: 0.0,
            expected: "at least 1".into(),
        });
    }
    let needed = xs.len() + 2;
    if y.len() < needed {
        return Err(StatsError::TooFewPoints {
            what: "OLS".into(),
            needed,
            got: y.len(),
        });
    }
    for (j, x) in xs.iter().enumerate() {
        let what = format!("regressor {j}");
        if x.len() != y.len() {
            return Err(StatsError::LengthMismatch {
                what,
                expected: y.len(),
                got: x.len(),
            });
        }
        check_finite(&what, x)?;
        if x.iter().all(|v| *v == x[0]) {
            return Err(StatsError::ZeroVariance {
                what,
                why: "its slope is not estimable".into(),
            });
        }
    }
    Ok(())
}

/// Design matrix `[1, x1, …, xk]` over the given rows.
fn design_matrix(xs: &[Vec<f64>], rows: &[usize]) -> DMatrix<f64> {
    DMatrix::from_fn(rows.len(), xs.len() + 1, |i, j| {
        if j == 0 {
            1.0
        } else {
            xs[j - 1][rows[i]]
        }
    })
}

/// Least-squares coefficients and `R⁻¹` from the QR factorization of `design`.
/// Errors with [`StatsError::Collinear`] when a column is (numerically) in the span of those before it.
fn solve(design: &DMatrix<f64>, y: &DVector<f64>) -> Result<(DVector<f64>, DMatrix<f64>)> {
    let p = design.ncols();
    let qr = design.clone().qr();
    let r = qr.r();
    for j in 0..p {
        if r[(j, j)].abs() <= 1e-10 * design.column(j).norm() {
            return Err(StatsError::Collinear {
                index: j.saturating_sub(1),
            });
        }
    }
    let qty = qr.q().transpose() * y;
    let singular = || StatsError::Collinear { index: p - 2 };
    let beta = r.solve_upper_triangular(&qty).ok_or_else(singular)?;
    let r_inv = r
        .solve_upper_triangular(&DMatrix::identity(p, p))
        .ok_or_else(singular)?;
    Ok((beta, r_inv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_line_is_recovered() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y: Vec<f64> = x.iter().map(|v| 3.0 - 2.0 * v).collect();
        let fit = ols_simple(&y, &x).unwrap();
        assert!(
            (fit.coefficients[0] - 3.0).abs() < 1e-12 && (fit.coefficients[1] + 2.0).abs() < 1e-12
        );
        assert!((fit.r_squared - 1.0).abs() < 1e-12);
    }

    #[test]
    fn bad_designs_are_errors() {
        let y = [1.0, 2.0, 4.0, 3.0];
        assert!(matches!(
            ols_simple(&y, &[1.0; 4]),
            Err(StatsError::ZeroVariance { .. })
        ));
        assert!(matches!(
            ols_simple(&[1.0; 4], &y),
            Err(StatsError::ZeroVariance { .. })
        ));
        assert!(matches!(
            ols_simple(&y[..2], &y[..2]),
            Err(StatsError::TooFewPoints { needed: 3, .. })
        ));
        assert!(matches!(
            ols_simple(&y, &y[..3]),
            Err(StatsError::LengthMismatch { .. })
        ));
        assert!(matches!(
            ols(&y, &[]),
            Err(StatsError::InvalidParameter { .. })
        ));
        let x1 = vec![1.0, 2.0, 3.0, 5.0];
        let x2: Vec<f64> = x1.iter().map(|v| 2.0 * v + 1.0).collect();
        assert!(matches!(
            ols(&y, &[x1, x2]),
            Err(StatsError::Collinear { index: 1 })
        ));
    }

    #[test]
    fn identifiability_rule() {
        let ci = |lo, hi| Interval {
            lo,
            hi,
            point: (lo + hi) / 2.0,
            level: 0.95,
        };
        assert_eq!(
            identifiability(0.5, MIN_R_SQUARED, &ci(0.1, 0.3)),
            Identifiability::Actionable
        );
        assert_eq!(
            identifiability(0.1, MIN_R_SQUARED, &ci(0.1, 0.3)),
            Identifiability::NotIdentifiable {
                low_r_squared: true,
                ci_includes_zero: false
            }
        );
        assert_eq!(
            identifiability(0.9, MIN_R_SQUARED, &ci(-0.1, 0.3)),
            Identifiability::NotIdentifiable {
                low_r_squared: false,
                ci_includes_zero: true
            }
        );
        assert!(!identifiability(f64::NAN, MIN_R_SQUARED, &ci(0.1, 0.3)).is_actionable());
    }
}
