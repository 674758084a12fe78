//! Descriptive statistics: quantiles, mean, median, standard deviation, geometric mean and a
//! distribution [`Summary`] (TR117: one number hides the tail, so report median, p95, p99 too).

use serde::{Deserialize, Serialize};

use super::{check_finite, check_positive, Result, StatsError};

/// Quantile `q` of `xs` by Hyndman–Fan **type 7** (linear interpolation between order
/// statistics; the default of numpy's `quantile` and R's `quantile`).
///
/// With the sorted sample `x[0] ≤ … ≤ x[n-1]`, `h = (n - 1)·q`, `j = ⌊h⌋`:
/// `Q(q) = x[j] + (h - j)·(x[j+1] - x[j])` (and `x[n-1]` when `j = n - 1`). So `Q(0)` is the
/// minimum, `Q(1)` the maximum and `Q(0.5)` the usual median.
///
/// Errors: empty sample, a non-finite value, `q` outside `[0, 1]`.
pub fn quantile(xs: &[f64], q: f64) -> Result<f64> {
    check_finite("quantile", xs)?;
    let sorted = sorted_copy(xs);
    quantile_sorted(&sorted, q)
}

/// [`quantile`] of an already ascending-sorted, finite, non-empty sample (no copy, no sort).
/// Sortedness is the caller's promise; it is not checked.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Result<f64> {
    check_finite("quantile", sorted)?;
    if !(0.0..=1.0).contains(&q) {
        return Err(StatsError::InvalidParameter {
            name: "q".into(),
            value: q,
            expected: "a probability in [0, 1] (0.95 for p95)".into(),
        });
    }
    let h = (sorted.len() - 1) as f64 * q;
    let j = h.floor() as usize;
    let frac = h - j as f64;
    match sorted.get(j + 1) {
        Some(&next) if frac > 0.0 => Ok(sorted[j] + frac * (next - sorted[j])),
        _ => Ok(sorted[j]),
    }
}

/// Median: [`quantile`] at 0.5 (the mean of the two middle values when `n` is even).
pub fn median(xs: &[f64]) -> Result<f64> {
    quantile(xs, 0.5)
}

/// Arithmetic mean `Σx / n`.
pub fn mean(xs: &[f64]) -> Result<f64> {
    check_finite("mean", xs)?;
    Ok(xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Sample standard deviation with Bessel's correction: `sqrt(Σ(x - mean)² / (n - 1))`
/// (numpy `std(ddof=1)`). Needs at least two values.
pub fn std_dev(xs: &[f64]) -> Result<f64> {
    check_finite("std_dev", xs)?;
    if xs.len() < 2 {
        return Err(StatsError::TooFewPoints {
            what: "std_dev".into(),
            needed: 2,
            got: xs.len(),
        });
    }
    let m = mean(xs)?;
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    Ok((ss / (xs.len() - 1) as f64).sqrt())
}

/// Geometric mean `exp(Σ ln x / n)` (scipy `gmean`); the scenario aggregate of TR121 and the
/// conclusive report (AD.3). Errors on empty input and on any value ≤ 0.
pub fn geometric_mean(xs: &[f64]) -> Result<f64> {
    check_positive("geometric_mean", xs, "the geometric mean")?;
    Ok((xs.iter().map(|x| x.ln()).sum::<f64>() / xs.len() as f64).exp())
}

/// The distribution of one metric: what `stats.distribution` reports per backend × scenario.
/// Quantiles are type 7 ([`quantile`]); `std` is the sample standard deviation ([`std_dev`]),
/// `None` when `n = 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub median: f64,
    pub p95: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
    pub std: Option<f64>,
}

/// Summarizes a non-empty, finite sample.
pub fn summarize(xs: &[f64]) -> Result<Summary> {
    check_finite("summarize", xs)?;
    let sorted = sorted_copy(xs);
    Ok(Summary {
        n: xs.len(),
        mean: mean(xs)?,
        median: quantile_sorted(&sorted, 0.5)?,
        p95: quantile_sorted(&sorted, 0.95)?,
        p99: quantile_sorted(&sorted, 0.99)?,
        min: sorted[0],
        max: sorted[sorted.len() - 1],
        std: if xs.len() >= 2 {
            Some(std_dev(xs)?)
        } else {
            None
        },
    })
}

/// Ascending copy (callers have checked that every value is finite).
fn sorted_copy(xs: &[f64]) -> Vec<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type7_by_hand() {
        // h = 3 * 0.25 = 0.75 → 1 + 0.75 * (2 - 1)
        let xs = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&xs, 0.25).unwrap(), 1.75);
        assert_eq!(quantile(&xs, 0.0).unwrap(), 1.0);
        assert_eq!(quantile(&xs, 1.0).unwrap(), 4.0);
        assert_eq!(median(&xs).unwrap(), 2.5);
        assert_eq!(median(&[7.0]).unwrap(), 7.0);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(quantile(&[], 0.5), Err(StatsError::Empty { .. })));
        assert!(matches!(
            quantile(&[1.0, f64::NAN], 0.5),
            Err(StatsError::NotFinite { index: 1, .. })
        ));
        assert!(matches!(
            quantile(&[1.0], 1.5),
            Err(StatsError::InvalidParameter { .. })
        ));
        assert!(matches!(
            quantile(&[1.0], f64::NAN),
            Err(StatsError::InvalidParameter { .. })
        ));
        assert!(matches!(
            geometric_mean(&[1.0, 0.0]),
            Err(StatsError::NonPositive { index: 1, .. })
        ));
        assert!(matches!(
            std_dev(&[1.0]),
            Err(StatsError::TooFewPoints { .. })
        ));
        assert!(matches!(
            mean(&[f64::INFINITY]),
            Err(StatsError::NotFinite { .. })
        ));
    }

    #[test]
    fn summary_of_one_value_has_no_std() {
        let s = summarize(&[3.0]).unwrap();
        assert_eq!((s.n, s.min, s.max, s.p99, s.std), (1, 3.0, 3.0, 3.0, None));
    }
}
