//! The paired statistic: per-round log ratios of the two sides, a Student-t interval of their mean
//! (the CI of the geometric-mean ratio), one-sided tests against a minimum effect with Holm's
//! correction across a trial's metrics, and the three-way answer.
//!
//! Why a t-interval and not a bootstrap: the per-round log ratio of two timings of the same work is
//! close to symmetric, and a trial has 12–60 rounds. At those sizes the percentile bootstrap is
//! known to be too narrow (its coverage at n = 20 is about 91 % for a nominal 95 %, Hesterberg
//! 2015), while the t-interval is exact under normality and, when a disturbed round makes the tails
//! heavy, its standard deviation grows with it — the interval widens, the answer becomes
//! `unknown`, never a false alarm. It costs microseconds (`benches/paired.rs`). The A/A
//! calibration in docs/regression.md measures the false-alarm rate this gives on real data.
//!
//! Orientation: every ratio is a *slowdown* (> 1 = the candidate is worse): candidate / baseline
//! for latencies, baseline / candidate for throughputs.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use crate::baseline::store::Direction;
use crate::error::StatsError;

/// One metric's paired estimate over `n` rounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedEstimate {
    pub n: usize,
    /// Geometric mean of the per-round slowdowns (> 1 = candidate slower).
    pub ratio: f64,
    /// Two-sided CI of `ratio` at `level`.
    pub lo: f64,
    pub hi: f64,
    pub level: f64,
    /// Mean and standard deviation of the per-round log slowdowns ("pair spread"), and the
    /// standard error of the mean.
    pub mean_log: f64,
    pub sd_log: f64,
    pub se_log: f64,
}

/// Per-round log slowdowns: `ln(candidate / baseline)` for a lower-is-better metric, inverted
/// for a higher-is-better one. Both series pair round by round.
pub fn log_slowdowns(
    baseline: &[f64],
    candidate: &[f64],
    direction: Direction,
) -> Result<Vec<f64>, StatsError> {
    if baseline.len() != candidate.len() {
        return Err(StatsError::LengthMismatch {
            what: "paired rounds (candidate vs baseline)".into(),
            expected: baseline.len(),
            got: candidate.len(),
        });
    }
    let mut out = Vec::with_capacity(baseline.len());
    for (i, (&b, &c)) in baseline.iter().zip(candidate).enumerate() {
        for v in [b, c] {
            if !v.is_finite() {
                return Err(StatsError::NotFinite {
                    what: "paired sample".into(),
                    index: i,
                    value: v,
                });
            }
            if v <= 0.0 {
                return Err(StatsError::NonPositive {
                    what: "paired sample".into(),
                    index: i,
                    value: v,
                    why: "a log ratio".into(),
                });
            }
        }
        out.push(match direction {
            Direction::LowerIsBetter => (c / b).ln(),
            Direction::HigherIsBetter => (b / c).ln(),
        });
    }
    Ok(out)
}

fn t_quantile(df: usize, p: f64) -> Result<f64, StatsError> {
    let t = StudentsT::new(0.0, 1.0, df as f64).map_err(|e| StatsError::InvalidParameter {
        name: "degrees of freedom".into(),
        value: df as f64,
        expected: e.to_string(),
    })?;
    Ok(t.inverse_cdf(p))
}

fn t_sf(df: usize, x: f64) -> Result<f64, StatsError> {
    let t = StudentsT::new(0.0, 1.0, df as f64).map_err(|e| StatsError::InvalidParameter {
        name: "degrees of freedom".into(),
        value: df as f64,
        expected: e.to_string(),
    })?;
    Ok(1.0 - t.cdf(x))
}

/// The estimate of one metric from its per-round log slowdowns, with a two-sided CI at `level`.
pub fn estimate(log_slowdowns: &[f64], level: f64) -> Result<PairedEstimate, StatsError> {
    let n = log_slowdowns.len();
    if n < 3 {
        return Err(StatsError::TooFewPoints {
            what: "paired rounds".into(),
            needed: 3,
            got: n,
        });
    }
    if !(level > 0.5 && level < 1.0) {
        return Err(StatsError::InvalidParameter {
            name: "level".into(),
            value: level,
            expected: "a confidence level in (0.5, 1)".into(),
        });
    }
    let mean = log_slowdowns.iter().sum::<f64>() / n as f64;
    let var = log_slowdowns
        .iter()
        .map(|x| (x - mean).powi(2))
        .sum::<f64>()
        / (n - 1) as f64;
    let sd = var.sqrt();
    let se = sd / (n as f64).sqrt();
    let t = t_quantile(n - 1, 0.5 + level / 2.0)?;
    Ok(PairedEstimate {
        n,
        ratio: mean.exp(),
        lo: (mean - t * se).exp(),
        hi: (mean + t * se).exp(),
        level,
        mean_log: mean,
        sd_log: sd,
        se_log: se,
    })
}

impl PairedEstimate {
    /// One-sided p-value of "the slowdown is at most `bound`" (small = clearly slower than `bound`).
    pub fn p_above(&self, bound: f64) -> Result<f64, StatsError> {
        self.p_one_sided(self.mean_log - bound.ln())
    }

    /// One-sided p-value of "the slowdown is at least `bound`" (small = clearly faster than it).
    pub fn p_below(&self, bound: f64) -> Result<f64, StatsError> {
        self.p_one_sided(bound.ln() - self.mean_log)
    }

    fn p_one_sided(&self, distance: f64) -> Result<f64, StatsError> {
        if self.se_log == 0.0 {
            return Ok(if distance > 0.0 { 0.0 } else { 1.0 });
        }
        t_sf(self.n - 1, distance / self.se_log)
    }

    /// One-sided upper confidence bound of the ratio at `confidence`.
    pub fn upper_bound(&self, confidence: f64) -> Result<f64, StatsError> {
        Ok((self.mean_log + t_quantile(self.n - 1, confidence)? * self.se_log).exp())
    }

    /// One-sided lower confidence bound of the ratio at `confidence`.
    pub fn lower_bound(&self, confidence: f64) -> Result<f64, StatsError> {
        Ok((self.mean_log - t_quantile(self.n - 1, confidence)? * self.se_log).exp())
    }
}

/// Holm's step-down procedure: which of the hypotheses with p-values `p` are rejected at
/// family-wise error rate `alpha`.
pub fn holm(p: &[f64], alpha: f64) -> Vec<bool> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let m = p.len();
    let mut rejected = vec![false; m];
    for (rank, &i) in order.iter().enumerate() {
        if p[i] <= alpha / (m - rank) as f64 {
            rejected[i] = true;
        } else {
            break;
        }
    }
    rejected
}

/// A metric's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Clearly slower than the minimum effect (Holm-corrected).
    Slower,
    /// Clearly faster than the minimum effect (Holm-corrected).
    Faster,
    /// Neither, and a slowdown of `same_within` or more is excluded.
    Same,
    /// Neither, and the interval is too wide to exclude a slowdown of `same_within`: more rounds,
    /// or no conclusion.
    Unknown,
}

impl Answer {
    pub fn label(self) -> &'static str {
        match self {
            Answer::Slower => "SLOWER",
            Answer::Faster => "faster",
            Answer::Same => "same",
            Answer::Unknown => "unknown",
        }
    }
}

/// The decision rule of a paired trial.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Family-wise false-alarm rate of one trial (all metrics, all looks).
    pub alpha: f64,
    /// Slowdowns up to this fraction are not a regression (0.01 = 1 %): what two processes of the
    /// same build may differ by for reasons of memory placement.
    pub min_effect: f64,
    /// "Same" excludes a slowdown of this fraction or more (0.03 = 3 %).
    pub same_within: f64,
    /// How many times the rounds may be analysed (the first, then after each batch of extra
    /// rounds); `alpha` is split evenly over them (Bonferroni), so looking again cannot raise the
    /// false-alarm rate.
    pub looks: usize,
}

impl Rule {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.alpha > 0.0 && self.alpha < 0.5) {
            return Err(format!("alpha = {} is not in (0, 0.5)", self.alpha));
        }
        if !(self.min_effect >= 0.0 && self.min_effect < 1.0) {
            return Err(format!("min_effect = {} is not in [0, 1)", self.min_effect));
        }
        if !(self.same_within > self.min_effect && self.same_within < 1.0) {
            return Err(format!(
                "same_within = {} must lie in (min_effect = {}, 1)",
                self.same_within, self.min_effect
            ));
        }
        if self.looks == 0 {
            return Err("looks must be at least 1".into());
        }
        Ok(())
    }

    /// The error rate one look may spend.
    pub fn alpha_per_look(&self) -> f64 {
        self.alpha / self.looks as f64
    }
}

/// The answer of every metric of one trial at one look.
pub fn decide(estimates: &[PairedEstimate], rule: &Rule) -> Result<Vec<Answer>, StatsError> {
    let a = rule.alpha_per_look();
    let m = estimates.len().max(1);
    let slower_bound = 1.0 + rule.min_effect;
    let faster_bound = 1.0 / (1.0 + rule.min_effect);
    let p_slow = estimates
        .iter()
        .map(|e| e.p_above(slower_bound))
        .collect::<Result<Vec<_>, _>>()?;
    let p_fast = estimates
        .iter()
        .map(|e| e.p_below(faster_bound))
        .collect::<Result<Vec<_>, _>>()?;
    let slower = holm(&p_slow, a);
    let faster = holm(&p_fast, a);
    let mut out = Vec::with_capacity(estimates.len());
    for (i, e) in estimates.iter().enumerate() {
        // "Same" must hold for every metric at once: Bonferroni-level one-sided bound.
        let ub = e.upper_bound(1.0 - a / m as f64)?;
        out.push(if slower[i] {
            Answer::Slower
        } else if faster[i] {
            Answer::Faster
        } else if ub < 1.0 + rule.same_within {
            Answer::Same
        } else {
            Answer::Unknown
        });
    }
    Ok(out)
}

/// The trial's answer from its metrics': slower if any metric is, else unknown if any is, else
/// same (faster metrics count as same: nothing regressed).
pub fn overall(answers: &[Answer]) -> Answer {
    if answers.contains(&Answer::Slower) {
        Answer::Slower
    } else if answers.contains(&Answer::Unknown) || answers.is_empty() {
        Answer::Unknown
    } else {
        Answer::Same
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use statrs::distribution::Normal;

    const RULE: Rule = Rule {
        alpha: 0.05,
        min_effect: 0.01,
        same_within: 0.03,
        looks: 3,
    };

    fn normal_logs(n: usize, mean: f64, sd: f64, rng: &mut ChaCha8Rng) -> Vec<f64> {
        let z = Normal::new(0.0, 1.0).unwrap();
        (0..n)
            .map(|_| mean + sd * z.inverse_cdf(rng.gen_range(1e-9..1.0 - 1e-9)))
            .collect()
    }

    #[test]
    fn the_interval_is_that_of_the_geometric_mean_ratio() {
        // Known values: logs 0.0, 0.02, 0.04 → mean 0.02, sd 0.02, se 0.02/√3, t(2, .975) = 4.303.
        let e = estimate(&[0.0, 0.02, 0.04], 0.95).unwrap();
        assert!((e.ratio - 0.02f64.exp()).abs() < 1e-12);
        let half = 4.302652729911275 * 0.02 / 3f64.sqrt();
        assert!((e.lo - (0.02 - half).exp()).abs() < 1e-9, "{e:?}");
        assert!((e.hi - (0.02 + half).exp()).abs() < 1e-9, "{e:?}");
        assert!(estimate(&[0.1, 0.2], 0.95).is_err());
        assert!(estimate(&[0.1, 0.2, 0.3], 1.0).is_err());
    }

    #[test]
    fn orientation_makes_greater_than_one_worse() {
        let lat =
            log_slowdowns(&[100.0, 100.0], &[110.0, 110.0], Direction::LowerIsBetter).unwrap();
        let thr = log_slowdowns(&[10.0, 10.0], &[9.0, 9.0], Direction::HigherIsBetter).unwrap();
        assert!(lat.iter().all(|x| *x > 0.0) && thr.iter().all(|x| *x > 0.0));
        assert!(log_slowdowns(&[1.0], &[1.0, 2.0], Direction::LowerIsBetter).is_err());
        assert!(log_slowdowns(&[1.0], &[0.0], Direction::LowerIsBetter).is_err());
        assert!(log_slowdowns(&[f64::NAN], &[1.0], Direction::LowerIsBetter).is_err());
    }

    #[test]
    fn holm_steps_down_and_stops() {
        // α = 0.05, m = 3: thresholds 0.0167, 0.025, 0.05.
        assert_eq!(holm(&[0.01, 0.02, 0.04], 0.05), vec![true, true, true]);
        assert_eq!(holm(&[0.01, 0.03, 0.04], 0.05), vec![true, false, false]);
        assert_eq!(holm(&[0.02, 0.001, 0.9], 0.05), vec![true, true, false]);
        assert_eq!(holm(&[0.2, 0.3], 0.05), vec![false, false]);
        assert!(holm(&[], 0.05).is_empty());
    }

    #[test]
    fn answers_of_clear_cases() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let same = estimate(&normal_logs(30, 0.0, 0.01, &mut rng), 0.95).unwrap();
        let slower = estimate(&normal_logs(30, 0.05, 0.01, &mut rng), 0.95).unwrap();
        let faster = estimate(&normal_logs(30, -0.05, 0.01, &mut rng), 0.95).unwrap();
        let wide = estimate(&normal_logs(30, 0.0, 0.2, &mut rng), 0.95).unwrap();
        let a = decide(&[same, slower, faster, wide], &RULE).unwrap();
        assert_eq!(
            a,
            vec![
                Answer::Same,
                Answer::Slower,
                Answer::Faster,
                Answer::Unknown
            ]
        );
        assert_eq!(overall(&a), Answer::Slower);
        assert_eq!(overall(&[Answer::Same, Answer::Unknown]), Answer::Unknown);
        assert_eq!(overall(&[Answer::Same, Answer::Faster]), Answer::Same);
        // A constant ratio has no spread: its answer is exact.
        let flat = estimate(&[0.05; 5], 0.95).unwrap();
        assert_eq!(decide(&[flat], &RULE).unwrap(), vec![Answer::Slower]);
    }

    /// One simulated trial under the sequential design of [`crate::paired::run`]: 20 rounds, then
    /// 20 more while the answer is unknown, up to 60 (the `looks` of [`RULE`]); 5 metrics sharing
    /// the same rounds (correlated, as real metrics are), pair spread `sd` per round.
    fn sequential_trial(shift: f64, sd: f64, rng: &mut ChaCha8Rng) -> Answer {
        let common = normal_logs(60, 0.0, sd, rng);
        let own: Vec<Vec<f64>> = (0..5).map(|_| normal_logs(60, 0.0, 0.005, rng)).collect();
        let mut answer = Answer::Unknown;
        for n in [20, 40, 60] {
            let estimates: Vec<PairedEstimate> = own
                .iter()
                .map(|o| {
                    let logs: Vec<f64> = (0..n).map(|i| shift + common[i] + o[i]).collect();
                    estimate(&logs, 0.95).unwrap()
                })
                .collect();
            answer = overall(&decide(&estimates, &RULE).unwrap());
            if answer != Answer::Unknown {
                break;
            }
        }
        answer
    }

    #[test]
    fn a_a_false_alarms_stay_below_alpha_and_three_percent_is_caught() {
        // Pair spread of 2 % per round: the quiet-machine order of magnitude.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let trials = 2000;
        let (mut alarms, mut caught) = (0, 0);
        for _ in 0..trials {
            alarms += usize::from(sequential_trial(0.0, 0.02, &mut rng) == Answer::Slower);
            caught += usize::from(sequential_trial(1.03f64.ln(), 0.02, &mut rng) == Answer::Slower);
        }
        assert!(
            alarms as f64 / trials as f64 <= 0.01,
            "{alarms} false alarms"
        );
        assert!(
            caught as f64 / trials as f64 >= 0.95,
            "{caught} of {trials} caught"
        );
        // Under load (pair spread 20 %) an A/A trial must not raise an alarm either; it may
        // end unknown.
        let loaded_alarms = (0..trials)
            .filter(|_| sequential_trial(0.0, 0.20, &mut rng) == Answer::Slower)
            .count();
        assert!(
            loaded_alarms as f64 / trials as f64 <= 0.01,
            "{loaded_alarms} false alarms under load"
        );
    }

    #[test]
    fn the_interval_covers_at_its_level_with_heavy_tails_too() {
        // t3-distributed log ratios (heavy tails): the 95 % interval must not cover less than
        // ~93 % (the percentile bootstrap's known undercoverage at n = 20 is worse).
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let t3 = StudentsT::new(0.0, 0.01, 3.0).unwrap();
        let trials = 4000;
        let mut covered = 0;
        for _ in 0..trials {
            let logs: Vec<f64> = (0..20)
                .map(|_| t3.inverse_cdf(rng.gen_range(1e-9..1.0 - 1e-9)))
                .collect();
            let e = estimate(&logs, 0.95).unwrap();
            if e.lo <= 1.0 && e.hi >= 1.0 {
                covered += 1;
            }
        }
        let rate = covered as f64 / trials as f64;
        assert!(rate >= 0.93, "coverage {rate}");
    }

    #[test]
    fn rules_are_validated() {
        assert!(RULE.validate().is_ok());
        for bad in [
            Rule { alpha: 0.0, ..RULE },
            Rule {
                min_effect: -0.1,
                ..RULE
            },
            Rule {
                same_within: 0.005,
                ..RULE
            },
            Rule { looks: 0, ..RULE },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!((RULE.alpha_per_look() - 0.05 / 3.0).abs() < 1e-15);
    }
}
