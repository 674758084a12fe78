//! Statistics for gate verdicts: descriptive summaries, seeded bootstrap intervals, the
//! Mann–Whitney U test and ordinary least squares with identifiability verdicts.
//!
//! Every function is pure over `&[f64]` and returns [`StatsError`] on bad input (empty sample,
//! NaN or infinity, zero variance, too few points) instead of panicking. Randomness is seeded
//! ([`rand_chacha::ChaCha8Rng`]) so a verdict is reproducible from its inputs and seed.
//!
//! - [`describe`]: quantile (Hyndman–Fan type 7), median, mean, standard deviation, geometric
//!   mean, [`Summary`].
//! - [`bootstrap`]: percentile bootstrap CI of any statistic, CI of a ratio of medians
//!   (current / baseline) as used by the regression rule, [`Interval`].
//! - [`mann_whitney`]: two-sided Mann–Whitney U, exact or normal approximation.
//! - [`mod@ols`]: OLS with t-based and pairs-bootstrap slope CIs and the TR121 identifiability rule.
//!
//! Distributions come from `statrs`, linear algebra from `nalgebra`; what is hand-written here
//! (quantiles, resampling loops, the exact U distribution) is a few lines each, and no crate offers
//! them with seeded resampling and typed errors. Reference values from numpy/scipy/statsmodels are
//! in `tests/data/stats_vectors.json`, made by `scripts/stats_vectors.py`.

pub mod bootstrap;
pub mod describe;
pub mod mann_whitney;
pub mod ols;

pub use crate::error::StatsError;
pub use bootstrap::{
    bootstrap_ci, bootstrap_ci_two, ratio_of_geomean_medians_ci, ratio_of_medians_ci, Interval,
};
pub use describe::{
    geometric_mean, mean, median, quantile, quantile_sorted, std_dev, summarize, Summary,
};
pub use mann_whitney::{mann_whitney_u, mann_whitney_u_with, MannWhitney, MannWhitneyMethod};
pub use ols::{
    identifiability, identify_slopes, ols, ols_simple, pairs_bootstrap_slope_cis, FitVerdict,
    Identifiability, OlsFit, SlopeBootstrap, SlopeVerdict, MIN_R_SQUARED,
};

/// Result of a statistics function.
pub type Result<T> = std::result::Result<T, StatsError>;

/// Checks that `xs` is non-empty and every value is finite.
pub(crate) fn check_finite(what: &str, xs: &[f64]) -> Result<()> {
    if xs.is_empty() {
        return Err(StatsError::Empty {
            what: what.to_string(),
        });
    }
    match xs.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(StatsError::NotFinite {
            what: what.to_string(),
            index,
            value: xs[index],
        }),
        None => Ok(()),
    }
}

/// Checks that `xs` is non-empty, finite and strictly positive (`why` names the consumer).
pub(crate) fn check_positive(what: &str, xs: &[f64], why: &str) -> Result<()> {
    check_finite(what, xs)?;
    match xs.iter().position(|&x| x <= 0.0) {
        Some(index) => Err(StatsError::NonPositive {
            what: what.to_string(),
            index,
            value: xs[index],
            why: why.to_string(),
        }),
        None => Ok(()),
    }
}

/// Checks a confidence level in the open interval (0, 1).
pub(crate) fn check_level(level: f64) -> Result<()> {
    if level > 0.0 && level < 1.0 {
        Ok(())
    } else {
        Err(StatsError::InvalidParameter {
            name: "level".into(),
            value: level,
            expected: "a confidence level strictly between 0 and 1, e.g. 0.95".into(),
        })
    }
}
