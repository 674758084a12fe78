//! `infergate::stats` against reference values from numpy / scipy / statsmodels, computed by
//! `scripts/stats_vectors.py` into `tests/data/stats_vectors.json` (versions and command inside).
//! Tolerance: 1e-9 relative (1e-6 for p-values), with a 1e-12 absolute floor for values near 0.

use std::collections::BTreeMap;

use approx::{assert_relative_eq, relative_eq};
use infergate::stats::{self, MannWhitneyMethod};
use serde::Deserialize;

const REL: f64 = 1e-9;
const REL_P: f64 = 1e-6;
const ABS: f64 = 1e-12;

#[derive(Deserialize)]
struct Vectors {
    describe: Vec<DescribeCase>,
    mann_whitney: Vec<MwuCase>,
    ols: Vec<OlsCase>,
}

#[derive(Deserialize)]
struct DescribeCase {
    name: String,
    xs: Vec<f64>,
    qs: Vec<f64>,
    quantiles: Vec<f64>,
    median: f64,
    mean: f64,
    std: Option<f64>,
    min: f64,
    max: f64,
    gmean: Option<f64>,
}

#[derive(Deserialize)]
struct MwuCase {
    name: String,
    x: Vec<f64>,
    y: Vec<f64>,
    method: String,
    ties: bool,
    u1: f64,
    p_value: f64,
}

#[derive(Deserialize)]
struct OlsCase {
    name: String,
    y: Vec<f64>,
    xs: Vec<Vec<f64>>,
    coefficients: Vec<f64>,
    std_errors: Vec<f64>,
    r_squared: f64,
    adj_r_squared: f64,
    residual_df: usize,
    sigma: f64,
    t_ci: BTreeMap<String, TCi>,
}

#[derive(Deserialize)]
struct TCi {
    lo: Vec<f64>,
    hi: Vec<f64>,
}

fn vectors() -> Vectors {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/stats_vectors.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn close(actual: f64, expected: f64, rel: f64, what: &str) {
    assert!(
        relative_eq!(actual, expected, max_relative = rel, epsilon = ABS),
        "{what}: got {actual}, numpy/scipy/statsmodels say {expected}"
    );
}

fn close_all(actual: &[f64], expected: &[f64], rel: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            relative_eq!(*a, *e, max_relative = rel, epsilon = ABS),
            "{what}[{i}]: got {a}, numpy/scipy/statsmodels say {e}"
        );
    }
}

#[test]
fn describe_matches_numpy_and_scipy() {
    let v = vectors();
    assert!(v.describe.len() >= 5);
    for c in &v.describe {
        let name = &c.name;
        let qs: Vec<f64> =
            c.qs.iter()
                .map(|&q| stats::quantile(&c.xs, q).unwrap())
                .collect();
        close_all(&qs, &c.quantiles, REL, &format!("{name} quantiles"));
        close(
            stats::median(&c.xs).unwrap(),
            c.median,
            REL,
            &format!("{name} median"),
        );
        close(
            stats::mean(&c.xs).unwrap(),
            c.mean,
            REL,
            &format!("{name} mean"),
        );
        match c.gmean {
            Some(g) => close(
                stats::geometric_mean(&c.xs).unwrap(),
                g,
                REL,
                &format!("{name} gmean"),
            ),
            None => assert!(
                stats::geometric_mean(&c.xs).is_err(),
                "{name}: gmean of non-positive data"
            ),
        }
        let s = stats::summarize(&c.xs).unwrap();
        assert_eq!(s.n, c.xs.len(), "{name}");
        close_all(
            &[s.mean, s.median, s.min, s.max],
            &[c.mean, c.median, c.min, c.max],
            REL,
            &format!("{name} summary"),
        );
        let at = |q: f64| {
            c.qs.iter()
                .position(|&x| x == q)
                .map(|i| c.quantiles[i])
                .unwrap()
        };
        close_all(
            &[s.p95, s.p99],
            &[at(0.95), at(0.99)],
            REL,
            &format!("{name} p95/p99"),
        );
        match (s.std, c.std) {
            (Some(a), Some(e)) => close(a, e, REL, &format!("{name} std")),
            (None, None) => {}
            (a, e) => panic!("{name}: std {a:?} vs numpy {e:?}"),
        }
    }
}

#[test]
fn mann_whitney_matches_scipy() {
    let v = vectors();
    assert!(v.mann_whitney.iter().any(|c| c.method == "exact"));
    assert!(v
        .mann_whitney
        .iter()
        .any(|c| c.method == "asymptotic" && c.ties));
    for c in &v.mann_whitney {
        let method = match c.method.as_str() {
            "exact" => MannWhitneyMethod::Exact,
            "asymptotic" => MannWhitneyMethod::NormalApprox,
            other => panic!("{}: unknown method {other}", c.name),
        };
        let r = stats::mann_whitney_u_with(&c.x, &c.y, method).unwrap();
        let n1n2 = (c.x.len() * c.y.len()) as f64;
        assert_eq!(r.ties, c.ties, "{}", c.name);
        assert!(
            relative_eq!(r.u1, c.u1, max_relative = REL, epsilon = ABS),
            "{}: U1 {} vs {}",
            c.name,
            r.u1,
            c.u1
        );
        assert_relative_eq!(r.u1 + r.u2, n1n2);
        assert!(
            relative_eq!(r.p_value, c.p_value, max_relative = REL_P, epsilon = ABS),
            "{}: p {} vs scipy {}",
            c.name,
            r.p_value,
            c.p_value
        );
        // The automatic choice: exact for small samples without ties, else the normal approximation.
        let auto = stats::mann_whitney_u(&c.x, &c.y).unwrap();
        let small = c.x.len().max(c.y.len()) <= stats::mann_whitney::EXACT_AUTO_MAX;
        let expected = if small && !c.ties {
            MannWhitneyMethod::Exact
        } else {
            MannWhitneyMethod::NormalApprox
        };
        assert_eq!(auto.method, expected, "{}", c.name);
    }
}

#[test]
fn ols_matches_statsmodels() {
    let v = vectors();
    assert!(v.ols.iter().any(|c| c.xs.len() == 2) && v.ols.iter().any(|c| c.xs.len() == 1));
    for c in &v.ols {
        let name = &c.name;
        let fit = stats::ols(&c.y, &c.xs).unwrap();
        close_all(
            &fit.coefficients,
            &c.coefficients,
            REL,
            &format!("{name} coefficients"),
        );
        close_all(
            &fit.std_errors,
            &c.std_errors,
            REL,
            &format!("{name} std errors"),
        );
        close(
            fit.r_squared,
            c.r_squared,
            REL,
            &format!("{name} r_squared"),
        );
        close(
            fit.adj_r_squared,
            c.adj_r_squared,
            REL,
            &format!("{name} adj_r_squared"),
        );
        close(fit.sigma, c.sigma, REL, &format!("{name} sigma"));
        assert_eq!(fit.residual_df, c.residual_df, "{name}");
        assert_eq!(c.t_ci.len(), 2, "{name}: two levels");
        for (level, ci) in &c.t_ci {
            let level: f64 = level.parse().unwrap();
            let ours: Vec<_> = (0..fit.coefficients.len())
                .map(|i| fit.t_ci(i, level).unwrap())
                .collect();
            let lo: Vec<f64> = ours.iter().map(|i| i.lo).collect();
            let hi: Vec<f64> = ours.iter().map(|i| i.hi).collect();
            close_all(&lo, &ci.lo, REL, &format!("{name} t CI lo at {level}"));
            close_all(&hi, &ci.hi, REL, &format!("{name} t CI hi at {level}"));
        }
    }
}
