//! Two-sided Mann–Whitney U test (Wilcoxon rank-sum) for two independent samples.
//!
//! `U1 = R1 - n1(n1+1)/2`, with `R1` the sum of the (tie-averaged) ranks of `x` in the pooled
//! sample; `U2 = n1·n2 - U1`; `U1` counts the pairs with `x > y` (ties count ½). The p-value uses
//! `U = max(U1, U2)` (as scipy does):
//!
//! - **Exact** (no ties): `p = min(1, 2·P(U' ≥ U))` under H0, where the null distribution of `U'`
//!   is enumerated by the standard recurrence `f(m, n, u) = f(m-1, n, u-n) + f(m, n-1, u)`
//!   (number of arrangements of `m` x's and `n` y's with statistic `u`), divided by `C(m+n, m)`.
//! - **Normal approximation** with tie and continuity corrections:
//!   `z = (U - n1·n2/2 - ½) / σ`, `σ² = n1·n2/12 · ((N+1) - Σ(t³-t) / (N(N-1)))` over tie-group
//!   sizes `t`, `N = n1+n2`; `p = min(1, 2·(1 - Φ(z)))` with Φ from `statrs`.
//!
//! [`mann_whitney_u`] picks exact when there are no ties and both samples have at most
//! [`EXACT_AUTO_MAX`] values, the normal approximation otherwise.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use super::{check_finite, Result, StatsError};

/// Largest per-sample size for which [`mann_whitney_u`] uses the exact distribution.
pub const EXACT_AUTO_MAX: usize = 20;
/// Largest per-sample size the exact distribution supports (its counts fit in `u64`).
pub const EXACT_MAX: usize = 30;

/// How the p-value was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MannWhitneyMethod {
    Exact,
    NormalApprox,
}

/// Result of a two-sided Mann–Whitney U test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// `U1`, the statistic of the first sample (scipy's `statistic`).
    pub u1: f64,
    /// `U2 = n1·n2 - U1`.
    pub u2: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    pub method: MannWhitneyMethod,
    /// Whether the pooled sample has ties.
    pub ties: bool,
}

/// Two-sided test; exact when there are no ties and `n1, n2 ≤ EXACT_AUTO_MAX`, else normal.
pub fn mann_whitney_u(x: &[f64], y: &[f64]) -> Result<MannWhitney> {
    let ranked = rank(x, y)?;
    let exact = !ranked.has_ties() && x.len().max(y.len()) <= EXACT_AUTO_MAX;
    let method = if exact {
        MannWhitneyMethod::Exact
    } else {
        MannWhitneyMethod::NormalApprox
    };
    finish(ranked, x.len(), y.len(), method)
}

/// Two-sided test with the method forced. `Exact` errors on ties or a sample over [`EXACT_MAX`].
pub fn mann_whitney_u_with(x: &[f64], y: &[f64], method: MannWhitneyMethod) -> Result<MannWhitney> {
    let ranked = rank(x, y)?;
    finish(ranked, x.len(), y.len(), method)
}

struct Ranked {
    /// Rank sum of the first sample.
    r1: f64,
    /// Sizes of tie groups (only groups of size > 1).
    ties: Vec<usize>,
}

impl Ranked {
    fn has_ties(&self) -> bool {
        !self.ties.is_empty()
    }
}

/// Pools `x` and `y`, assigns average ranks (1-based) to tie groups.
fn rank(x: &[f64], y: &[f64]) -> Result<Ranked> {
    check_finite("Mann-Whitney sample x", x)?;
    check_finite("Mann-Whitney sample y", y)?;
    let mut pooled: Vec<(f64, bool)> = x
        .iter()
        .map(|&v| (v, true))
        .chain(y.iter().map(|&v| (v, false)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut r1, mut ties, mut i) = (0.0, Vec::new(), 0);
    while i < pooled.len() {
        let mut j = i + 1;
        while j < pooled.len() && pooled[j].0 == pooled[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j share their average.
        let avg = (i + 1 + j) as f64 / 2.0;
        r1 += avg * pooled[i..j].iter().filter(|p| p.1).count() as f64;
        if j - i > 1 {
            ties.push(j - i);
        }
        i = j;
    }
    Ok(Ranked { r1, ties })
}

fn finish(ranked: Ranked, n1: usize, n2: usize, method: MannWhitneyMethod) -> Result<MannWhitney> {
    let (m, n) = (n1 as f64, n2 as f64);
    let u1 = ranked.r1 - m * (m + 1.0) / 2.0;
    let u2 = m * n - u1;
    let u = u1.max(u2);
    let p = match method {
        MannWhitneyMethod::Exact => {
            if ranked.has_ties() {
                return Err(StatsError::TiesInExactTest {
                    what: "Mann-Whitney".into(),
                });
            }
            if n1.max(n2) > EXACT_MAX {
                return Err(StatsError::InvalidParameter {
                    name: "sample size".into(),
                    value: n1.max(n2) as f64,
                    expected: format!(
                        "at most {EXACT_MAX} per sample for the exact test; use NormalApprox"
                    ),
                });
            }
            // No ties → U is an integer. P(U' ≥ u) = P(U' ≤ mn - u) by symmetry.
            2.0 * exact_cdf(n1, n2, n1 * n2 - u.round() as usize)
        }
        MannWhitneyMethod::NormalApprox => {
            let big_n = m + n;
            let tie_term: f64 = ranked
                .ties
                .iter()
                .map(|&t| (t as f64).powi(3) - t as f64)
                .sum();
            let var = m * n / 12.0 * ((big_n + 1.0) - tie_term / (big_n * (big_n - 1.0)));
            if var <= 0.0 {
                1.0 // every value tied: the samples are indistinguishable
            } else {
                let z = (u - m * n / 2.0 - 0.5) / var.sqrt();
                let normal = Normal::standard();
                2.0 * normal.sf(z)
            }
        }
    };
    Ok(MannWhitney {
        u1,
        u2,
        p_value: p.clamp(0.0, 1.0),
        method,
        ties: ranked.has_ties(),
    })
}

/// `P(U ≤ k)` under H0 for sample sizes `m`, `n` without ties.
fn exact_cdf(m: usize, n: usize, k: usize) -> f64 {
    let counts = exact_counts(m, n);
    let total: u64 = counts.iter().sum(); // = C(m+n, m)
    let below: u64 = counts.iter().take(k + 1).sum();
    below as f64 / total as f64
}

/// `f(m, n, u)` for `u = 0..=m·n` by `f(i, j, u) = f(i-1, j, u-j) + f(i, j-1, u)`,
/// `f(0, j, ·) = f(i, 0, ·) = [u = 0]`. Row `i` keeps one vector per `j`.
fn exact_counts(m: usize, n: usize) -> Vec<u64> {
    let mut prev: Vec<Vec<u64>> = (0..=n).map(|_| vec![1]).collect(); // i = 0
    for i in 1..=m {
        let mut row: Vec<Vec<u64>> = Vec::with_capacity(n + 1);
        row.push(vec![1]); // j = 0
        for j in 1..=n {
            let mut f = vec![0u64; i * j + 1];
            for (u, c) in prev[j].iter().enumerate() {
                f[u + j] += c; // the largest value is an x: it beats all j y's
            }
            for (u, c) in row[j - 1].iter().enumerate() {
                f[u] += c; // the largest value is a y
            }
            row.push(f);
        }
        prev = row;
    }
    prev.swap_remove(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_counts_sum_to_binomial_and_are_symmetric() {
        let f = exact_counts(4, 6);
        assert_eq!(f.iter().sum::<u64>(), 210); // C(10, 4)
        assert!(f.iter().eq(f.iter().rev()));
        assert_eq!(
            exact_counts(30, 30).iter().sum::<u64>(),
            118_264_581_564_861_424
        );
        // C(60, 30)
    }

    #[test]
    fn separated_samples_by_hand() {
        // U1 = 0; only 1 of C(11, 5) = 462 arrangements is as extreme on each side.
        let r = mann_whitney_u(
            &[1.0, 2.0, 3.0, 4.0, 5.0],
            &[6.0, 7.0, 8.0, 9.0, 10.0, 11.0],
        )
        .unwrap();
        assert_eq!(
            (r.u1, r.u2, r.method),
            (0.0, 30.0, MannWhitneyMethod::Exact)
        );
        assert!((r.p_value - 2.0 / 462.0).abs() < 1e-15);
    }

    #[test]
    fn ties_choose_the_normal_approximation_and_block_exact() {
        let (x, y) = ([1.0, 2.0, 2.0], [2.0, 3.0, 4.0]);
        assert_eq!(
            mann_whitney_u(&x, &y).unwrap().method,
            MannWhitneyMethod::NormalApprox
        );
        assert!(matches!(
            mann_whitney_u_with(&x, &y, MannWhitneyMethod::Exact),
            Err(StatsError::TiesInExactTest { .. })
        ));
        let all_tied = mann_whitney_u(&[1.0, 1.0], &[1.0]).unwrap();
        assert_eq!((all_tied.u1, all_tied.p_value), (1.0, 1.0));
        assert!(matches!(
            mann_whitney_u(&[], &y),
            Err(StatsError::Empty { .. })
        ));
    }
}
