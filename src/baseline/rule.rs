//! The regression rule: a metric regresses only when it is *statistically clearly* worse than its
//! baseline by more than the tolerance.
//!
//! For each metric the **slowdown factor** is `median(current) / median(baseline)` for a
//! lower-is-better metric (latency) and `median(baseline) / median(current)` for a higher-is-better
//! one (throughput), so that `> 1` always means worse and a 10 % slower decode is a factor 1.10 in
//! both `decode_ms` and `decode_tokens_per_s`. Its CI is [`crate::stats::ratio_of_medians_ci`]
//! (independent percentile bootstrap of both samples, seeded). With tolerance `t` the band is
//! `[1/(1+t), 1+t]` (symmetric in log-ratio, so inverting a metric does not move it):
//!
//! - **regressed**: the whole CI lies above `1+t`;
//! - **improved**: the whole CI lies below `1/(1+t)` (passes, with a hint to update the baseline);
//! - **within band**: the whole CI lies inside the band;
//! - **unclear**: the CI crosses an edge of the band (passes: a regression must be clear).
//!
//! A trial whose first series shows a regressed metric is measured again ([`confirmed`]); it fails
//! only when the same metric regresses in the fresh series too. Independent false alarms of rate
//! `p` per series thus become `p²` per trial.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::store::Direction;
use crate::stats::{ratio_of_medians_ci, Interval, StatsError};

/// Default tolerance for latency and throughput metrics (CLAIMS.md; conclusive report Y.3: "if
/// decode throughput drops by >10 %, classify the event as a performance regression").
pub const DEFAULT_TOLERANCE: f64 = 0.10;
pub const DEFAULT_CONFIDENCE: f64 = 0.95;
pub const DEFAULT_RESAMPLES: usize = 4000;

/// Where a metric's slowdown CI lies relative to the tolerance band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Regressed,
    Improved,
    WithinBand,
    Unclear,
}

/// One metric, current series against its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub direction: Direction,
    pub tolerance: f64,
    /// CI of the slowdown factor (> 1 = worse), see the module doc.
    pub slowdown: Interval,
    pub current_median: f64,
    pub baseline_median: f64,
    pub n_current: usize,
    pub n_baseline: usize,
    pub outcome: Outcome,
}

/// The band `[1/(1+t), 1+t]` of slowdown factors that count as unchanged.
pub fn band(tolerance: f64) -> (f64, f64) {
    (1.0 / (1.0 + tolerance), 1.0 + tolerance)
}

/// Classify a slowdown CI against the band of `tolerance`.
pub fn classify(slowdown: &Interval, tolerance: f64) -> Outcome {
    let (lower, upper) = band(tolerance);
    if slowdown.is_above(upper) {
        Outcome::Regressed
    } else if slowdown.is_below(lower) {
        Outcome::Improved
    } else if slowdown.lo >= lower && slowdown.hi <= upper {
        Outcome::WithinBand
    } else {
        Outcome::Unclear
    }
}

/// Compare a current sample with a baseline sample of the same metric.
///
/// Errors: empty, non-finite or non-positive samples; tolerance not in (0, 10); bad confidence or
/// resample count (see [`ratio_of_medians_ci`]).
pub fn compare(
    current: &[f64],
    baseline: &[f64],
    direction: Direction,
    tolerance: f64,
    confidence: f64,
    resamples: usize,
    seed: u64,
) -> Result<Comparison, StatsError> {
    if !(tolerance > 0.0 && tolerance < 10.0) {
        return Err(StatsError::InvalidParameter {
            name: "tolerance".into(),
            value: tolerance,
            expected: "a fraction in (0, 10), e.g. 0.10 for 10 %".into(),
        });
    }
    let slowdown = match direction {
        Direction::LowerIsBetter => {
            ratio_of_medians_ci(current, baseline, confidence, resamples, seed)?
        }
        Direction::HigherIsBetter => {
            ratio_of_medians_ci(baseline, current, confidence, resamples, seed)?
        }
    };
    Ok(Comparison {
        direction,
        tolerance,
        slowdown,
        current_median: crate::stats::median(current)?,
        baseline_median: crate::stats::median(baseline)?,
        n_current: current.len(),
        n_baseline: baseline.len(),
        outcome: classify(&slowdown, tolerance),
    })
}

impl Comparison {
    /// `decode_ms 812.1 → 845.3 ms: slowdown ×1.041 [0.982, 1.093], band ±10 % → within band`.
    pub fn describe(&self, metric: &str, unit: &str) -> String {
        let s = &self.slowdown;
        let outcome = match self.outcome {
            Outcome::Regressed => "REGRESSED",
            Outcome::Improved => "improved",
            Outcome::WithinBand => "within band",
            Outcome::Unclear => "not clear",
        };
        format!(
            "{metric} {:.3} → {:.3} {unit} (n={}/{}): slowdown ×{:.3} [{:.3}, {:.3}] at {:.0} %, band {:.0} % → {outcome}",
            self.baseline_median,
            self.current_median,
            self.n_baseline,
            self.n_current,
            s.point,
            s.lo,
            s.hi,
            s.level * 100.0,
            self.tolerance * 100.0,
        )
    }
}

/// The metrics (by name) that regressed in both the first and the re-measured series.
pub fn confirmed<'a>(
    first: &'a [(String, Comparison)],
    second: &[(String, Comparison)],
) -> Vec<&'a str> {
    first
        .iter()
        .filter(|(_, c)| c.outcome == Outcome::Regressed)
        .filter(|(m, _)| {
            second
                .iter()
                .any(|(n, c)| n == m && c.outcome == Outcome::Regressed)
        })
        .map(|(m, _)| m.as_str())
        .collect()
}

/// A bootstrap seed derived from names (trial, metric, attempt): reproducible, and different per
/// metric so that the intervals of one trial do not share resampling noise.
pub fn seed_for(parts: &[&str]) -> u64 {
    let digest = Sha256::digest(parts.join("\u{1f}").as_bytes());
    u64::from_le_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use statrs::distribution::{ContinuousCDF, Normal};

    /// `n` draws of a noisy latency: `scale × (1 + 0.03·z)`, z standard normal, seeded.
    fn latencies(n: usize, scale: f64, seed: u64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let normal = Normal::new(0.0, 1.0).unwrap();
        (0..n)
            .map(|_| {
                scale
                    * (1.0
                        + 0.03 * normal.inverse_cdf(rand::Rng::gen_range(&mut rng, 0.001..0.999)))
            })
            .collect()
    }

    fn cmp(current: &[f64], baseline: &[f64], direction: Direction) -> Comparison {
        compare(current, baseline, direction, 0.10, 0.95, 2000, 7).unwrap()
    }

    #[test]
    fn a_clear_regression_is_regressed() {
        let c = cmp(
            &latencies(10, 130.0, 1),
            &latencies(10, 100.0, 2),
            Direction::LowerIsBetter,
        );
        assert_eq!(
            c.outcome,
            Outcome::Regressed,
            "{}",
            c.describe("e2e_ms", "ms")
        );
        assert!(c.slowdown.lo > 1.1);
    }

    #[test]
    fn noise_alone_is_not_a_regression() {
        for seed in 0..20 {
            let c = cmp(
                &latencies(10, 100.0, 100 + seed),
                &latencies(10, 100.0, 200 + seed),
                Direction::LowerIsBetter,
            );
            assert!(
                matches!(c.outcome, Outcome::WithinBand | Outcome::Unclear),
                "seed {seed}: {}",
                c.describe("e2e_ms", "ms")
            );
        }
    }

    #[test]
    fn a_clear_improvement_is_improved() {
        let c = cmp(
            &latencies(10, 75.0, 3),
            &latencies(10, 100.0, 4),
            Direction::LowerIsBetter,
        );
        assert_eq!(
            c.outcome,
            Outcome::Improved,
            "{}",
            c.describe("e2e_ms", "ms")
        );
    }

    #[test]
    fn higher_is_better_is_inverted() {
        // Throughput fell from 100 to 70 tokens/s: a slowdown of about 1.43.
        let c = cmp(
            &latencies(9, 70.0, 5),
            &latencies(9, 100.0, 6),
            Direction::HigherIsBetter,
        );
        assert_eq!(
            c.outcome,
            Outcome::Regressed,
            "{}",
            c.describe("tok/s", "tokens/s")
        );
        assert!(c.slowdown.point > 1.3, "{:?}", c.slowdown);
        // And a throughput rise is an improvement.
        let c = cmp(
            &latencies(9, 140.0, 5),
            &latencies(9, 100.0, 6),
            Direction::HigherIsBetter,
        );
        assert_eq!(c.outcome, Outcome::Improved);
    }

    #[test]
    fn a_shift_equal_to_the_tolerance_is_not_clearly_beyond_it() {
        // True slowdown exactly 1.10 with a 10 % band: the CI straddles the edge.
        let base = latencies(10, 100.0, 8);
        let current: Vec<f64> = base.iter().map(|x| x * 1.10).collect();
        let c = cmp(&current, &base, Direction::LowerIsBetter);
        assert_eq!(
            c.outcome,
            Outcome::Unclear,
            "{}",
            c.describe("e2e_ms", "ms")
        );
    }

    #[test]
    fn classification_of_intervals() {
        let iv = |lo, hi| Interval {
            lo,
            hi,
            point: (lo + hi) / 2.0,
            level: 0.95,
        };
        assert_eq!(classify(&iv(1.11, 1.3), 0.1), Outcome::Regressed);
        assert_eq!(classify(&iv(1.05, 1.3), 0.1), Outcome::Unclear);
        assert_eq!(classify(&iv(0.95, 1.05), 0.1), Outcome::WithinBand);
        assert_eq!(classify(&iv(0.7, 0.9), 0.1), Outcome::Improved);
        assert_eq!(classify(&iv(0.7, 0.95), 0.1), Outcome::Unclear);
    }

    #[test]
    fn a_regression_must_be_confirmed_by_the_same_metric() {
        let iv = |lo, hi| Interval {
            lo,
            hi,
            point: (lo + hi) / 2.0,
            level: 0.95,
        };
        let c = |lo, hi| Comparison {
            direction: Direction::LowerIsBetter,
            tolerance: 0.1,
            slowdown: iv(lo, hi),
            current_median: 1.0,
            baseline_median: 1.0,
            n_current: 10,
            n_baseline: 10,
            outcome: classify(&iv(lo, hi), 0.1),
        };
        let first = vec![
            ("e2e_ms".to_string(), c(1.2, 1.3)),
            ("prefill_ms".to_string(), c(1.2, 1.3)),
        ];
        let second_clean = vec![
            ("e2e_ms".to_string(), c(0.98, 1.05)),
            ("prefill_ms".to_string(), c(1.0, 1.15)),
        ];
        assert!(confirmed(&first, &second_clean).is_empty());
        let second_other = vec![
            ("e2e_ms".to_string(), c(0.98, 1.05)),
            ("decode_ms".to_string(), c(1.2, 1.3)),
        ];
        assert!(confirmed(&first, &second_other).is_empty());
        let second_bad = vec![
            ("e2e_ms".to_string(), c(1.15, 1.25)),
            ("prefill_ms".to_string(), c(1.0, 1.15)),
        ];
        assert_eq!(confirmed(&first, &second_bad), vec!["e2e_ms"]);
    }

    #[test]
    fn bad_tolerance_is_an_error() {
        let x = [1.0, 2.0, 3.0];
        for t in [0.0, -0.1, f64::NAN, 10.0] {
            assert!(
                matches!(
                    compare(&x, &x, Direction::LowerIsBetter, t, 0.95, 100, 1),
                    Err(StatsError::InvalidParameter { .. })
                ),
                "{t}"
            );
        }
    }

    #[test]
    fn seeds_differ_by_part() {
        assert_ne!(
            seed_for(&["t", "e2e_ms", "1"]),
            seed_for(&["t", "e2e_ms", "2"])
        );
        assert_eq!(seed_for(&["t", "a"]), seed_for(&["t", "a"]));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn sample(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<f64>> {
            prop::collection::vec(1.0f64..1000.0, n)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

            /// The same sample as current and baseline never regresses or improves.
            #[test]
            fn identical_samples_are_never_a_change(xs in sample(3..15), seed in any::<u64>()) {
                let c = compare(&xs, &xs, Direction::LowerIsBetter, 0.10, 0.95, 1000, seed).unwrap();
                prop_assert!(matches!(c.outcome, Outcome::WithinBand | Outcome::Unclear), "{:?}", c);
            }

            /// Units do not matter: scaling both samples leaves the verdict and interval unchanged.
            #[test]
            fn scale_invariant(cur in sample(3..12), base in sample(3..12), k in 0.01f64..100.0) {
                let a = compare(&cur, &base, Direction::LowerIsBetter, 0.10, 0.95, 500, 3).unwrap();
                let sc: Vec<f64> = cur.iter().map(|x| x * k).collect();
                let sb: Vec<f64> = base.iter().map(|x| x * k).collect();
                let b = compare(&sc, &sb, Direction::LowerIsBetter, 0.10, 0.95, 500, 3).unwrap();
                prop_assert!((a.slowdown.lo - b.slowdown.lo).abs() < 1e-9 * a.slowdown.lo.max(1.0));
                prop_assert!((a.slowdown.hi - b.slowdown.hi).abs() < 1e-9 * a.slowdown.hi.max(1.0));
            }

            /// Slowing the current sample further never turns a regression into a pass.
            #[test]
            fn monotone_in_the_slowdown(cur in sample(3..12), base in sample(3..12), k1 in 0.5f64..3.0, extra in 1.0f64..3.0) {
                let at = |k: f64| {
                    let c: Vec<f64> = cur.iter().map(|x| x * k).collect();
                    compare(&c, &base, Direction::LowerIsBetter, 0.10, 0.95, 500, 9).unwrap().outcome
                };
                if at(k1) == Outcome::Regressed {
                    prop_assert_eq!(at(k1 * extra), Outcome::Regressed);
                }
            }

            /// A throughput sample is the reciprocal of a latency sample: for odd n (the median of
            /// reciprocals is the reciprocal of the median) both directions give the same slowdown.
            #[test]
            fn direction_inversion_agrees(cur in sample(5..6), base in sample(7..8)) {
                let lat = compare(&cur, &base, Direction::LowerIsBetter, 0.10, 0.95, 500, 11).unwrap();
                let inv = |v: &[f64]| v.iter().map(|x| 1.0 / x).collect::<Vec<f64>>();
                let thr = compare(&inv(&cur), &inv(&base), Direction::HigherIsBetter, 0.10, 0.95, 500, 11).unwrap();
                prop_assert!((lat.slowdown.point - thr.slowdown.point).abs() < 1e-9 * lat.slowdown.point);
            }
        }
    }
}
