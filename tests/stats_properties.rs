//! Properties of `infergate::stats` that reference packages cannot pin down bit for bit:
//! seeded bootstrap intervals (determinism, coverage, ordering), the ratio-of-medians CI, the
//! identifiability verdicts, and invariants of quantiles, Mann–Whitney and OLS.

use infergate::stats::{self, Identifiability, MannWhitneyMethod, MIN_R_SQUARED};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Standard normal draws by Box–Muller (rand 0.8 has no normal distribution without rand_distr).
fn normals(rng: &mut ChaCha8Rng, n: usize, mu: f64, sigma: f64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]
            let u2: f64 = rng.gen();
            mu + sigma * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect()
}

#[test]
fn bootstrap_ci_of_the_mean_covers_the_true_mean_about_95_percent_of_the_time() {
    let (trials, true_mean) = (200, 10.0);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let covered = (0..trials)
        .filter(|&t| {
            let xs = normals(&mut rng, 60, true_mean, 3.0);
            stats::bootstrap_ci(&xs, mean, 0.95, 1000, t as u64)
                .unwrap()
                .contains(true_mean)
        })
        .count();
    let rate = covered as f64 / trials as f64;
    eprintln!("coverage {rate}");
    assert!(
        (0.88..=0.99).contains(&rate),
        "coverage {rate} outside 88–99 %"
    );
}

#[test]
fn ratio_of_medians_ci_covers_the_true_ratio_of_independent_scaled_samples() {
    // current ~ 1.3 × baseline in distribution (log-normal latencies), drawn independently.
    let (trials, ratio) = (200, 1.3);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let covered = (0..trials)
        .filter(|&t| {
            let base: Vec<f64> = normals(&mut rng, 31, 0.0, 0.2)
                .iter()
                .map(|z| 20.0 * z.exp())
                .collect();
            let cur: Vec<f64> = normals(&mut rng, 31, 0.0, 0.2)
                .iter()
                .map(|z| ratio * 20.0 * z.exp())
                .collect();
            stats::ratio_of_medians_ci(&cur, &base, 0.95, 500, t as u64)
                .unwrap()
                .contains(ratio)
        })
        .count();
    let rate = covered as f64 / trials as f64;
    eprintln!("coverage {rate}");
    assert!(
        (0.88..=0.995).contains(&rate),
        "coverage {rate} outside 88–99.5 %"
    );
}

#[test]
fn t_and_bootstrap_slope_cis_cover_the_true_slope() {
    let (trials, slope) = (200, 0.5);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (mut by_t, mut by_boot) = (0, 0);
    for t in 0..trials {
        let x: Vec<f64> = (0..30).map(|i| i as f64).collect();
        let noise = normals(&mut rng, 30, 0.0, 2.0);
        let y: Vec<f64> = x
            .iter()
            .zip(&noise)
            .map(|(x, e)| 1.0 + slope * x + e)
            .collect();
        let v = stats::identify_slopes(&y, &[x], MIN_R_SQUARED, 0.95, 400, t).unwrap();
        by_t += v.slopes[0].t_ci.contains(slope) as usize;
        by_boot += v.slopes[0].bootstrap_ci.contains(slope) as usize;
    }
    for (name, covered) in [("t", by_t), ("pairs bootstrap", by_boot)] {
        let rate = covered as f64 / trials as f64;
        eprintln!("{name} coverage {rate}");
        assert!(
            (0.88..=0.99).contains(&rate),
            "{name} coverage {rate} outside 88–99 %"
        );
    }
}

#[test]
fn scaling_verdicts_follow_tr121_rule() {
    // Strong log-log relation over 6 shapes → actionable and positive by both CIs.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let log_params: Vec<f64> = [0.135e9, 0.36e9, 0.5e9, 1.1e9, 1.5e9, 3.0e9]
        .iter()
        .map(|p: &f64| p.ln())
        .collect();
    let noise = normals(&mut rng, 6, 0.0, 0.05);
    let y: Vec<f64> = log_params
        .iter()
        .zip(&noise)
        .map(|(x, e)| -9.0 + 0.65 * x + e)
        .collect();
    let v = stats::identify_slopes(
        &y,
        std::slice::from_ref(&log_params),
        MIN_R_SQUARED,
        0.95,
        2000,
        1,
    )
    .unwrap();
    let s = &v.slopes[0];
    assert!(s.is_actionable() && s.agree && s.slope > 0.0, "{s:?}");
    assert!(s.t_ci.is_above(0.0) && s.bootstrap_ci.is_above(0.0));

    // Pure noise → not identifiable, and both methods say so.
    let y_noise = normals(&mut rng, 6, 3.0, 0.3);
    let v = stats::identify_slopes(&y_noise, &[log_params], MIN_R_SQUARED, 0.95, 2000, 1).unwrap();
    let s = &v.slopes[0];
    assert!(!s.is_actionable(), "{s:?} (R² {})", v.fit.r_squared);
    assert!(matches!(s.by_t, Identifiability::NotIdentifiable { .. }));
    assert_eq!(v.bootstrap.resamples, 2000);
    assert!(v.bootstrap.usable >= 1000 && v.bootstrap.usable <= 2000);
}

fn positive_sample() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(0.1f64..1000.0, 1..60)
}

/// Where proptest records failing cases (its default cannot find a `lib.rs` next to `tests/`).
const REGRESSIONS: &str = "tests/stats_properties.proptest-regressions";

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn bootstrap_is_deterministic_per_seed_and_ordered(
        xs in prop::collection::vec(-1e3f64..1e3, 1..60), seed in any::<u64>(), level in 0.5f64..0.99,
    ) {
        let a = stats::bootstrap_ci(&xs, mean, level, 400, seed).unwrap();
        let b = stats::bootstrap_ci(&xs, mean, level, 400, seed).unwrap();
        prop_assert_eq!(a, b);
        prop_assert!(a.lo <= a.hi);
        prop_assert!(a.lo <= a.point && a.point <= a.hi, "{:?}", a);
        prop_assert_eq!(a.level, level);
        let med = stats::bootstrap_ci(&xs, |s| stats::median(s).unwrap(), level, 400, seed).unwrap();
        prop_assert!(med.lo <= med.hi);
    }

    #[test]
    fn a_different_seed_gives_a_different_interval(
        xs in prop::collection::hash_set(-1_000_000i64..1_000_000, 20..60), seed in 0u64..u64::MAX,
    ) {
        let xs: Vec<f64> = xs.into_iter().map(|v| v as f64).collect();
        let a = stats::bootstrap_ci(&xs, mean, 0.95, 400, seed).unwrap();
        let b = stats::bootstrap_ci(&xs, mean, 0.95, 400, seed + 1).unwrap();
        prop_assert!(a.lo != b.lo || a.hi != b.hi);
    }

    #[test]
    fn ratio_ci_of_a_scaled_copy_contains_the_scale(
        base in positive_sample(), scale in 0.5f64..2.0, seed in any::<u64>(),
    ) {
        let cur: Vec<f64> = base.iter().map(|v| v * scale).collect();
        let ci = stats::ratio_of_medians_ci(&cur, &base, 0.95, 400, seed).unwrap();
        let tol = 1e-12 * scale;
        prop_assert!((ci.point - scale).abs() <= tol, "{:?}", ci);
        prop_assert!(ci.lo <= scale + tol && scale - tol <= ci.hi, "{:?} vs {}", ci, scale);
        prop_assert!(ci.lo <= ci.point + tol && ci.point - tol <= ci.hi);
        prop_assert_eq!(ci, stats::ratio_of_medians_ci(&cur, &base, 0.95, 400, seed).unwrap());
    }

    #[test]
    fn quantiles_are_monotone_and_bounded(
        xs in prop::collection::vec(-1e6f64..1e6, 1..80), q1 in 0.0f64..=1.0, q2 in 0.0f64..=1.0,
    ) {
        let (lo, hi) = (q1.min(q2), q1.max(q2));
        let (a, b) = (stats::quantile(&xs, lo).unwrap(), stats::quantile(&xs, hi).unwrap());
        let s = stats::summarize(&xs).unwrap();
        prop_assert!(s.min <= a && a <= b && b <= s.max);
        prop_assert!(s.median <= s.p95 && s.p95 <= s.p99);
    }

    #[test]
    fn geometric_mean_is_at_most_the_mean(xs in positive_sample()) {
        let g = stats::geometric_mean(&xs).unwrap();
        prop_assert!(g <= stats::mean(&xs).unwrap() * (1.0 + 1e-12));
    }

    #[test]
    fn mann_whitney_is_symmetric_in_its_samples(
        x in prop::collection::vec(-100i32..100, 1..25), y in prop::collection::vec(-100i32..100, 1..25),
    ) {
        let x: Vec<f64> = x.into_iter().map(f64::from).collect();
        let y: Vec<f64> = y.into_iter().map(f64::from).collect();
        let a = stats::mann_whitney_u(&x, &y).unwrap();
        let b = stats::mann_whitney_u(&y, &x).unwrap();
        prop_assert_eq!(a.u1, b.u2);
        prop_assert!((a.p_value - b.p_value).abs() < 1e-12);
        prop_assert!((0.0..=1.0).contains(&a.p_value));
        if !a.ties && x.len().max(y.len()) <= 20 {
            prop_assert_eq!(a.method, MannWhitneyMethod::Exact);
        }
    }

    #[test]
    fn ols_scales_with_y_and_keeps_r_squared(
        pts in prop::collection::vec((-100.0f64..100.0, -100.0f64..100.0), 4..40), k in 0.1f64..10.0,
    ) {
        let x: Vec<f64> = pts.iter().map(|p| p.0).collect();
        let y: Vec<f64> = pts.iter().map(|p| p.1).collect();
        let ky: Vec<f64> = y.iter().map(|v| v * k).collect();
        let (Ok(fit), Ok(scaled)) = (stats::ols_simple(&y, &x), stats::ols_simple(&ky, &x)) else {
            return Ok(()); // constant x or y: the errors are tested elsewhere
        };
        let expected = k * fit.coefficients[1];
        prop_assert!((scaled.coefficients[1] - expected).abs() <= 1e-9 * (1.0 + expected.abs()));
        prop_assert!((scaled.r_squared - fit.r_squared).abs() <= 1e-9);
        prop_assert!((0.0..=1.0 + 1e-12).contains(&fit.r_squared));
    }
}
