//! Seeded nonparametric bootstrap confidence intervals, **percentile method** (Efron):
//!
//! 1. Draw `resamples` resamples, each of the sample's size `n`, uniformly with replacement,
//!    from a [`ChaCha8Rng`] seeded with `seed` (same inputs + seed → same interval).
//! 2. Evaluate the statistic on every resample.
//! 3. The interval at confidence `level` is the type-7 quantiles ([`super::quantile`]) of those
//!    values at `(1 - level) / 2` and `(1 + level) / 2`; the point estimate is the statistic of
//!    the original sample.
//!
//! A percentile interval need not be centred on the point estimate and, for a strongly skewed
//! bootstrap distribution, need not contain it; `lo ≤ hi` always holds.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::describe::quantile_sorted;
use super::{check_finite, check_level, check_positive, Result, StatsError};

/// A confidence interval `[lo, hi]` at confidence `level`, with the point estimate it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
    pub point: f64,
    pub level: f64,
}

impl Interval {
    /// `lo ≤ value ≤ hi`.
    pub fn contains(&self, value: f64) -> bool {
        self.lo <= value && value <= self.hi
    }

    /// The interval does not contain `value` (e.g. a slope CI that excludes zero).
    pub fn excludes(&self, value: f64) -> bool {
        !self.contains(value)
    }

    /// The whole interval lies strictly above `value` (`lo > value`).
    pub fn is_above(&self, value: f64) -> bool {
        self.lo > value
    }

    /// The whole interval lies strictly below `value` (`hi < value`).
    pub fn is_below(&self, value: f64) -> bool {
        self.hi < value
    }

    /// `hi - lo`.
    pub fn width(&self) -> f64 {
        self.hi - self.lo
    }
}

/// Percentile bootstrap CI of `statistic` over one sample (method in the module doc).
///
/// Errors: empty or non-finite sample, `level` outside (0, 1), fewer than
/// `⌈2 / (1 - level)⌉` resamples (one per tail), a non-finite statistic.
pub fn bootstrap_ci(
    xs: &[f64],
    statistic: impl Fn(&[f64]) -> f64,
    level: f64,
    resamples: usize,
    seed: u64,
) -> Result<Interval> {
    check_finite("bootstrap sample", xs)?;
    check_resamples(level, resamples)?;
    let point = finite(statistic(xs), || "the full sample".into())?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut buf = vec![0.0; xs.len()];
    let mut stats = Vec::with_capacity(resamples);
    for r in 0..resamples {
        resample_into(xs, &mut buf, &mut rng);
        stats.push(finite(statistic(&buf), || format!("resample {r}"))?);
    }
    percentile_interval(stats, point, level)
}

/// Percentile bootstrap CI of a two-sample `statistic(a, b)` for **independent** samples: each
/// resample draws `a*` from `a` and `b*` from `b` separately, each with replacement at its own size.
pub fn bootstrap_ci_two(
    a: &[f64],
    b: &[f64],
    statistic: impl Fn(&[f64], &[f64]) -> f64,
    level: f64,
    resamples: usize,
    seed: u64,
) -> Result<Interval> {
    bootstrap_two_in_place(a, b, |a, b| statistic(a, b), level, resamples, seed)
}

/// [`bootstrap_ci_two`] with a statistic that may reorder its (freshly drawn) inputs in place,
/// e.g. a median by selection; the point estimate is computed on copies of `a` and `b`.
fn bootstrap_two_in_place(
    a: &[f64],
    b: &[f64],
    mut statistic: impl FnMut(&mut [f64], &mut [f64]) -> f64,
    level: f64,
    resamples: usize,
    seed: u64,
) -> Result<Interval> {
    check_finite("bootstrap sample a", a)?;
    check_finite("bootstrap sample b", b)?;
    check_resamples(level, resamples)?;
    let (mut buf_a, mut buf_b) = (a.to_vec(), b.to_vec());
    let point = finite(statistic(&mut buf_a, &mut buf_b), || {
        "the full samples".into()
    })?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut stats = Vec::with_capacity(resamples);
    for r in 0..resamples {
        resample_into(a, &mut buf_a, &mut rng);
        resample_into(b, &mut buf_b, &mut rng);
        stats.push(finite(statistic(&mut buf_a, &mut buf_b), || {
            format!("resample {r}")
        })?);
    }
    percentile_interval(stats, point, level)
}

/// CI of `median(current) / median(baseline)` for two independent samples of a positive metric
/// (latency, throughput): [`bootstrap_ci_two`] of `median(a*) / median(b*)`, percentile method.
/// This is the interval the baseline regression rule compares with its tolerance band.
///
/// Errors: empty samples, non-finite or non-positive values, bad `level` / `resamples`.
pub fn ratio_of_medians_ci(
    current: &[f64],
    baseline: &[f64],
    level: f64,
    resamples: usize,
    seed: u64,
) -> Result<Interval> {
    check_positive("current sample", current, "a ratio of medians")?;
    check_positive("baseline sample", baseline, "a ratio of medians")?;
    let ratio = |a: &mut [f64], b: &mut [f64]| median_in_place(a) / median_in_place(b);
    bootstrap_two_in_place(current, baseline, ratio, level, resamples, seed)
}

/// CI of `G(a) / G(b)`, where `G(x)` is the geometric mean over groups (scenarios) of each
/// group's median, for two sets of independent samples matched group by group (`a[i]` and `b[i]`
/// are the same scenario). Every resample redraws every group of both sides with replacement at
/// its own size (stratified percentile bootstrap). A scenario-aggregated winner needs this CI to
/// exclude 1 (conclusive report §10.2 rule 5).
///
/// Errors: no group, a different number of groups, an empty group, non-finite or non-positive
/// values, bad `level` / `resamples`.
pub fn ratio_of_geomean_medians_ci(
    a: &[Vec<f64>],
    b: &[Vec<f64>],
    level: f64,
    resamples: usize,
    seed: u64,
) -> Result<Interval> {
    if a.is_empty() || a.len() != b.len() {
        return Err(StatsError::InvalidParameter {
            name: "groups".into(),
            value: a.len() as f64,
            expected: format!("at least one, the same on both sides (b has {})", b.len()),
        });
    }
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        check_positive(&format!("group {i} of a"), x, "a ratio of medians")?;
        check_positive(&format!("group {i} of b"), y, "a ratio of medians")?;
    }
    check_resamples(level, resamples)?;
    let log_geomean = |groups: &mut [Vec<f64>]| {
        groups
            .iter_mut()
            .map(|g| median_in_place(g).ln())
            .sum::<f64>()
            / groups.len() as f64
    };
    let (mut buf_a, mut buf_b) = (a.to_vec(), b.to_vec());
    let point = finite(
        (log_geomean(&mut buf_a) - log_geomean(&mut buf_b)).exp(),
        || "the full samples".into(),
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut stats = Vec::with_capacity(resamples);
    for r in 0..resamples {
        for (src, buf) in a
            .iter()
            .zip(buf_a.iter_mut())
            .chain(b.iter().zip(buf_b.iter_mut()))
        {
            resample_into(src, buf, &mut rng);
        }
        let ratio = (log_geomean(&mut buf_a) - log_geomean(&mut buf_b)).exp();
        stats.push(finite(ratio, || format!("resample {r}"))?);
    }
    percentile_interval(stats, point, level)
}

/// Type-7 median of a finite, non-empty slice by selection (reorders the slice).
fn median_in_place(xs: &mut [f64]) -> f64 {
    let (n, m) = (xs.len(), xs.len() / 2);
    let (left, mid, _) = xs.select_nth_unstable_by(m, f64::total_cmp);
    let upper = *mid;
    if n % 2 == 1 {
        upper
    } else {
        // The largest of the lower half is the other middle value.
        let lower = left.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        0.5 * (lower + upper)
    }
}

fn resample_into(xs: &[f64], buf: &mut [f64], rng: &mut ChaCha8Rng) {
    for slot in buf.iter_mut() {
        *slot = xs[rng.gen_range(0..xs.len())];
    }
}

/// `value` if finite, else an error naming where it came from (`on` is built only on error).
fn finite(value: f64, on: impl FnOnce() -> String) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(StatsError::NonFiniteStatistic {
            what: "bootstrap".into(),
            on: on(),
            value,
        })
    }
}

/// At least one resample per tail: `resamples ≥ ⌈2 / (1 - level)⌉` (40 for a 95 % interval).
pub(crate) fn check_resamples(level: f64, resamples: usize) -> Result<()> {
    check_level(level)?;
    let needed = (2.0 / (1.0 - level)).ceil();
    if (resamples as f64) < needed {
        return Err(StatsError::InvalidParameter {
            name: "resamples".into(),
            value: resamples as f64,
            expected: format!("at least {needed} for a {level} interval (2000 or more is usual)"),
        });
    }
    Ok(())
}

/// The percentile interval of bootstrap replicates `stats` (finite, non-empty).
pub(crate) fn percentile_interval(mut stats: Vec<f64>, point: f64, level: f64) -> Result<Interval> {
    stats.sort_by(f64::total_cmp);
    let alpha = 1.0 - level;
    Ok(Interval {
        lo: quantile_sorted(&stats, alpha / 2.0)?,
        hi: quantile_sorted(&stats, 1.0 - alpha / 2.0)?,
        point,
        level,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean(xs: &[f64]) -> f64 {
        xs.iter().sum::<f64>() / xs.len() as f64
    }

    #[test]
    fn constant_sample_gives_a_point_interval() {
        let ci = bootstrap_ci(&[2.0; 10], mean, 0.95, 200, 1).unwrap();
        assert_eq!((ci.lo, ci.hi, ci.point), (2.0, 2.0, 2.0));
    }

    #[test]
    fn bad_parameters_are_errors() {
        let xs = [1.0, 2.0, 3.0];
        assert!(matches!(
            bootstrap_ci(&[], mean, 0.95, 100, 1),
            Err(StatsError::Empty { .. })
        ));
        assert!(matches!(
            bootstrap_ci(&xs, mean, 1.0, 100, 1),
            Err(StatsError::InvalidParameter { .. })
        ));
        assert!(matches!(
            bootstrap_ci(&xs, mean, 0.95, 39, 1),
            Err(StatsError::InvalidParameter { .. })
        ));
        assert!(bootstrap_ci(&xs, mean, 0.95, 40, 1).is_ok());
        assert!(matches!(
            bootstrap_ci(&xs, |_| f64::NAN, 0.95, 100, 1),
            Err(StatsError::NonFiniteStatistic { .. })
        ));
        assert!(matches!(
            ratio_of_medians_ci(&xs, &[1.0, 0.0], 0.95, 100, 1),
            Err(StatsError::NonPositive { index: 1, .. })
        ));
    }

    #[test]
    fn interval_predicates() {
        let ci = Interval {
            lo: 1.0,
            hi: 2.0,
            point: 1.5,
            level: 0.95,
        };
        assert!(ci.contains(1.0) && ci.contains(2.0) && ci.excludes(0.0) && ci.excludes(2.5));
        assert!(ci.is_above(0.5) && !ci.is_above(1.0) && ci.is_below(2.5) && !ci.is_below(2.0));
    }

    #[test]
    fn geomean_ratio_ci_separates_clear_differences_only() {
        let noisy = |base: f64, n: usize| -> Vec<f64> {
            (0..n)
                .map(|i| base * (1.0 + 0.02 * ((i * 7 % 5) as f64 - 2.0)))
                .collect()
        };
        // b twice as slow in both scenarios: ratio a/b ≈ 0.5, CI far from 1.
        let a = vec![noisy(10.0, 12), noisy(20.0, 12)];
        let b = vec![noisy(20.0, 12), noisy(40.0, 12)];
        let ci = ratio_of_geomean_medians_ci(&a, &b, 0.95, 2000, 3).unwrap();
        assert!((ci.point - 0.5).abs() < 1e-9 && ci.hi < 1.0, "{ci:?}");
        // The same distributions: the CI contains 1.
        let ci = ratio_of_geomean_medians_ci(&a, &a.clone(), 0.95, 2000, 3).unwrap();
        assert!(ci.contains(1.0), "{ci:?}");
        assert!(ratio_of_geomean_medians_ci(&a, &b[..1], 0.95, 2000, 3).is_err());
    }

    #[test]
    fn median_in_place_matches_describe() {
        for xs in [
            &[5.0, 1.0, 4.0, 2.0][..],
            &[5.0, 1.0, 4.0],
            &[3.0],
            &[2.0, 2.0, 1.0, 9.0, 9.0, 0.5],
        ] {
            assert_eq!(
                median_in_place(&mut xs.to_vec()),
                super::super::median(xs).unwrap()
            );
        }
    }
}
