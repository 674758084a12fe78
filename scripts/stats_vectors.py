#!/usr/bin/env python3
"""Reference values for infergate's `src/stats` from independent packages (numpy, scipy, statsmodels).

Writes tests/data/stats_vectors.json, read by tests/stats_vectors.rs. Inputs are generated here
with fixed seeds and stored in the JSON next to the expected outputs, so the Rust side computes on
exactly the same numbers.

Made with (pip into a throwaway directory, nothing installed system-wide):

    python3 -m pip install --target /tmp/statsref numpy==2.4.6 scipy==1.17.1 statsmodels==0.15.0
    PYTHONPATH=/tmp/statsref python3 scripts/stats_vectors.py tests/data/stats_vectors.json

What each reference is:
- quantiles: numpy.quantile(method="linear") = Hyndman-Fan type 7; median numpy.median; mean
  numpy.mean; std numpy.std(ddof=1); geometric mean scipy.stats.gmean.
- Mann-Whitney U: scipy.stats.mannwhitneyu(x, y, alternative="two-sided"), method="exact" for small
  samples without ties, method="asymptotic" with use_continuity=True otherwise; U is scipy's
  statistic (U1, for x).
- OLS: statsmodels OLS with an intercept (params, bse, rsquared, rsquared_adj, df_resid, scale,
  conf_int at 95 % and 90 %), cross-checked here against numpy.linalg.lstsq and a t interval built
  from scipy.stats.t.ppf.
"""

import json
import platform
import sys

import numpy as np
import scipy
import statsmodels
import statsmodels.api as sm
from scipy import stats

QS = [0.0, 0.01, 0.025, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975, 0.99, 1.0]


def r6(a):
    """Round to 6 decimals and return a plain list (short, exact-looking JSON inputs)."""
    return [round(float(v), 6) for v in a]


def describe_case(name, xs):
    a = np.asarray(xs, dtype=float)
    case = {
        "name": name,
        "xs": list(map(float, a)),
        "qs": QS,
        "quantiles": [float(np.quantile(a, q, method="linear")) for q in QS],
        "median": float(np.median(a)),
        "mean": float(np.mean(a)),
        "std": float(np.std(a, ddof=1)) if len(a) > 1 else None,
        "min": float(a.min()),
        "max": float(a.max()),
        "gmean": float(stats.gmean(a)) if np.all(a > 0) else None,
    }
    return case


def mwu_case(name, x, y, method):
    pooled = list(x) + list(y)
    has_ties = len(set(pooled)) < len(pooled)
    if method == "exact":
        assert not has_ties, name
        res = stats.mannwhitneyu(x, y, alternative="two-sided", method="exact")
    else:
        res = stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic", use_continuity=True)
    return {
        "name": name,
        "x": list(map(float, x)),
        "y": list(map(float, y)),
        "method": method,
        "ties": has_ties,
        "u1": float(res.statistic),
        "p_value": float(res.pvalue),
    }


def ols_case(name, y, xs):
    y = np.asarray(y, dtype=float)
    X = sm.add_constant(np.column_stack(xs), has_constant="add")
    res = sm.OLS(y, X).fit()
    # Cross-check statsmodels against numpy lstsq and a t interval from scipy.
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    assert np.allclose(beta, res.params, rtol=1e-10, atol=1e-12), name
    out = {"name": name, "y": list(map(float, y)), "xs": [list(map(float, x)) for x in xs]}
    out.update(
        coefficients=list(map(float, res.params)),
        std_errors=list(map(float, res.bse)),
        r_squared=float(res.rsquared),
        adj_r_squared=float(res.rsquared_adj),
        residual_df=int(round(res.df_resid)),
        sigma=float(np.sqrt(res.scale)),
        t_ci={},
    )
    for level in (0.95, 0.90):
        ci = res.conf_int(alpha=1 - level)
        t = stats.t.ppf((1 + level) / 2, res.df_resid)
        assert np.allclose(ci[:, 0], res.params - t * res.bse, rtol=1e-12), name
        out["t_ci"][str(level)] = {"t_crit": float(t), "lo": list(map(float, ci[:, 0])), "hi": list(map(float, ci[:, 1]))}
    return out


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "tests/data/stats_vectors.json"
    rng = np.random.default_rng(20240611)

    describe = [
        describe_case("one", [3.5]),
        describe_case("two", [1.0, 4.0]),
        describe_case("small", [4.2, 1.1, 3.3, 9.9, 2.0]),
        describe_case("ties", [2, 2, 2, 5, 5, 1, 7, 7, 7, 7]),
        describe_case("mixed_sign", [-3.0, 0.5, 2.0, -1.25, 7.0, 0.0]),
        describe_case("lognormal_101", r6(rng.lognormal(mean=3.0, sigma=0.5, size=101))),
        describe_case("normal_1000", r6(rng.normal(100.0, 15.0, size=1000))),
        describe_case("latency_like_64", r6(20.0 + rng.exponential(2.0, size=64))),
    ]

    def cont(n, shift=0.0):
        return r6(rng.normal(shift, 1.0, size=n))

    mann_whitney = [
        mwu_case("separated_5_6", [1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11], "exact"),
        mwu_case("one_vs_five", [2.5], [1.0, 2.0, 3.0, 4.0, 5.0], "exact"),
        mwu_case("normal_7_9_shift", cont(7), cont(9, 0.5), "exact"),
        mwu_case("normal_10_10_null", cont(10), cont(10), "exact"),
        mwu_case("normal_3_20", cont(3), cont(20, 1.0), "exact"),
        mwu_case("normal_20_20_shift", cont(20), cont(20, 0.8), "exact"),
        mwu_case("normal_13_17_shift", cont(13), cont(17, -0.6), "exact"),
        mwu_case("normal_8_9_asymptotic", cont(8), cont(9, 0.4), "asymptotic"),
        mwu_case("ints_ties_15_18", list(map(float, rng.integers(0, 10, 15))), list(map(float, rng.integers(2, 12, 18))), "asymptotic"),
        mwu_case("normal_50_60", cont(50), cont(60, 0.3), "asymptotic"),
        mwu_case("rounded_ties_40_35", [round(v, 1) for v in cont(40)], [round(v, 1) for v in cont(35, 0.2)], "asymptotic"),
        mwu_case("all_tied", [1.0, 1.0, 1.0], [1.0, 1.0], "asymptotic"),
    ]

    # OLS: shapes like TR121's fits (log latency on log params, and on log params + log layers).
    params = np.array([135e6, 360e6, 494e6, 1.1e9, 1.54e9, 3.2e9, 7.0e9])
    layers = np.array([30.0, 32.0, 24.0, 22.0, 28.0, 26.0, 32.0])
    lp, ll = np.log(params), np.log(layers)
    weak_y = r6(2.0 + 0.04 * lp + rng.normal(0, 0.3, size=7))
    multi_y = r6(1.0 - 0.06 * lp + 0.73 * ll + rng.normal(0, 0.02, size=7))
    p5 = np.log(np.array([0.5e9, 1.5e9, 3.0e9, 7.0e9, 13.0e9]))
    strong_y = r6(-9.0 + 0.65 * p5 + rng.normal(0, 0.05, size=5))
    x12a, x12b = r6(rng.uniform(0, 10, 12)), r6(rng.uniform(-5, 5, 12))
    y12 = r6(3.0 + 0.5 * np.array(x12a) - 1.2 * np.array(x12b) + rng.normal(0, 1.0, 12))
    x30 = r6(rng.uniform(0, 100, 30))
    y30 = r6(10.0 + 0.2 * np.array(x30) + rng.normal(0, 5.0, 30))
    ols = [
        ols_case("weak_params_only_7", weak_y, [r6(lp)]),
        ols_case("params_and_layers_7", multi_y, [r6(lp), r6(ll)]),
        ols_case("strong_params_only_5", strong_y, [r6(p5)]),
        ols_case("two_regressors_12", y12, [x12a, x12b]),
        ols_case("simple_30", y30, [x30]),
    ]

    doc = {
        "generated_by": {
            "script": "scripts/stats_vectors.py",
            "command": "python3 -m pip install --target /tmp/statsref numpy==2.4.6 scipy==1.17.1 statsmodels==0.15.0 && "
            "PYTHONPATH=/tmp/statsref python3 scripts/stats_vectors.py tests/data/stats_vectors.json",
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "statsmodels": statsmodels.__version__,
        },
        "describe": describe,
        "mann_whitney": mann_whitney,
        "ols": ols,
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
