//! Token economics: the conclusive report's Appendix A formulas (TR119's compute-hour shadow cost,
//! TR121's capacity bound and request cost), with TR119's energy cost as a second term where a gated
//! energy measurement exists.
//!
//! | quantity | formula |
//! |---|---|
//! | throughput | `tokens_per_s = tokens_total / (latency_ms / 1000)` |
//! | compute cost | `seconds_per_1M = 1e6 / tokens_per_s`; `usd_per_1M = (seconds_per_1M / 3600) · usd_per_hour` |
//! | capacity | `avg_tokens_per_s = tokens_per_month / seconds_per_month`; `workers = avg_tokens_per_s / tokens_per_s` |
//! | request cost | `tokens_per_request = prompt + generated`; `cost_per_request = tokens_per_request / 1e6 · usd_per_1M` |
//! | energy cost (TR119) | `kWh_per_1M = J_per_token · 1e6 / 3.6e6`; `energy_usd_per_1M = kWh_per_1M · usd_per_kWh` |
//!
//! The energy term is a number only when the energy module gave a `good` (gated, TR122) energy for
//! the measured window; otherwise it is `no_data` with the reason and the total is the compute cost
//! alone, labelled as such. Costs are shadow prices (§7, AV.3): the tier prices are inputs.
//!
//! Backend ordering: cheapest total first; equal costs are ordered by higher throughput, then by id,
//! so the ordering is a total order that does not depend on input order. Under time-priced compute
//! alone the ordering is the throughput ordering for every tier (the compute cost is `c / tokens_per_s`
//! with the same `c > 0` for every backend); with an energy term it can change with the tier, which
//! is what [`ordering_is_tier_invariant`] checks.
//!
//! All hand-written: five one-line formulas; no crate computes shadow prices.

use serde::{Deserialize, Serialize};

use crate::error::CostError;

/// Seconds in the 30-day month the report's capacity examples use (§7.3: 2,592,000 s).
pub const SECONDS_PER_30_DAY_MONTH: f64 = 30.0 * 24.0 * 3600.0;
/// Joules per kilowatt-hour.
pub const JOULES_PER_KWH: f64 = 3.6e6;

/// An hourly price for one worker (on-demand, reserved, spot …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingTier {
    pub name: String,
    pub usd_per_hour: f64,
}

fn positive(what: &str, value: f64) -> Result<f64, CostError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(CostError::NotPositive {
            what: what.to_string(),
            value,
        })
    }
}

/// `tokens_total / (latency_ms / 1000)`.
pub fn tokens_per_s(tokens_total: f64, latency_ms: f64) -> Result<f64, CostError> {
    Ok(positive("tokens_total", tokens_total)? / (positive("latency_ms", latency_ms)? / 1e3))
}

/// `1e6 / tokens_per_s`.
pub fn seconds_per_1m(tokens_per_s: f64) -> Result<f64, CostError> {
    Ok(1e6 / positive("tokens_per_s", tokens_per_s)?)
}

/// `(1e6 / tokens_per_s) / 3600 · usd_per_hour`.
pub fn usd_per_1m(tokens_per_s: f64, usd_per_hour: f64) -> Result<f64, CostError> {
    Ok(seconds_per_1m(tokens_per_s)? / 3600.0 * positive("usd_per_hour", usd_per_hour)?)
}

/// `tokens_per_month / seconds_per_month`.
pub fn avg_tokens_per_s(tokens_per_month: f64, seconds_per_month: f64) -> Result<f64, CostError> {
    Ok(positive("tokens_per_month", tokens_per_month)?
        / positive("seconds_per_month", seconds_per_month)?)
}

/// `avg_tokens_per_s / tokens_per_s`: the utilization-perfect lower bound on workers (§7.5: multiply
/// by a burst factor before provisioning).
pub fn workers(avg_tokens_per_s: f64, tokens_per_s: f64) -> Result<f64, CostError> {
    Ok(positive("avg_tokens_per_s", avg_tokens_per_s)? / positive("tokens_per_s", tokens_per_s)?)
}

/// `(prompt_tokens + generated_tokens) / 1e6 · usd_per_1M`.
pub fn cost_per_request(
    prompt_tokens: u64,
    generated_tokens: u64,
    usd_per_1m: f64,
) -> Result<f64, CostError> {
    let tokens = (prompt_tokens + generated_tokens) as f64;
    Ok(positive("tokens_per_request", tokens)? / 1e6 * positive("usd_per_1M", usd_per_1m)?)
}

/// `J_per_token · 1e6 / 3.6e6` kWh per million tokens.
pub fn kwh_per_1m(joules_per_token: f64) -> Result<f64, CostError> {
    Ok(positive("joules_per_token", joules_per_token)? * 1e6 / JOULES_PER_KWH)
}

/// `kWh_per_1M · usd_per_kWh`.
pub fn energy_usd_per_1m(joules_per_token: f64, usd_per_kwh: f64) -> Result<f64, CostError> {
    Ok(kwh_per_1m(joules_per_token)? * positive("usd_per_kwh", usd_per_kwh)?)
}

/// Energy per generated token for one backend, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "quality", rename_all = "snake_case")]
pub enum EnergyInput {
    Good { joules_per_token: f64 },
    NoData { reason: String },
}

/// One backend's measured throughput (scenario-aggregated) and energy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendThroughput {
    pub backend: String,
    pub tokens_per_s: f64,
    pub energy: EnergyInput,
}

/// The energy term of one backend's cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "quality", rename_all = "snake_case")]
pub enum EnergyCost {
    Good {
        joules_per_token: f64,
        kwh_per_1m: f64,
        usd_per_1m: f64,
    },
    NoData {
        reason: String,
    },
}

/// One backend's cost under one tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendCost {
    pub backend: String,
    pub tier: String,
    pub tokens_per_s: f64,
    pub compute_usd_per_1m: f64,
    pub energy: EnergyCost,
    /// Compute + energy where the energy term is good, else compute alone.
    pub total_usd_per_1m: f64,
}

impl BackendCost {
    /// Share of the total that is energy (`None` when the energy term is `no_data`).
    pub fn energy_share(&self) -> Option<f64> {
        match self.energy {
            EnergyCost::Good { usd_per_1m, .. } => Some(usd_per_1m / self.total_usd_per_1m),
            EnergyCost::NoData { .. } => None,
        }
    }
}

/// The cost of every backend under `tier`, energy priced at `usd_per_kwh`.
pub fn cost_table(
    backends: &[BackendThroughput],
    tier: &PricingTier,
    usd_per_kwh: f64,
) -> Result<Vec<BackendCost>, CostError> {
    backends
        .iter()
        .map(|b| {
            let compute = usd_per_1m(b.tokens_per_s, tier.usd_per_hour)
                .map_err(|e| e.for_backend(&b.backend))?;
            let energy = match &b.energy {
                EnergyInput::Good { joules_per_token } => EnergyCost::Good {
                    joules_per_token: *joules_per_token,
                    kwh_per_1m: kwh_per_1m(*joules_per_token)
                        .map_err(|e| e.for_backend(&b.backend))?,
                    usd_per_1m: energy_usd_per_1m(*joules_per_token, usd_per_kwh)
                        .map_err(|e| e.for_backend(&b.backend))?,
                },
                EnergyInput::NoData { reason } => EnergyCost::NoData {
                    reason: reason.clone(),
                },
            };
            let total = compute
                + if let EnergyCost::Good { usd_per_1m, .. } = energy {
                    usd_per_1m
                } else {
                    0.0
                };
            Ok(BackendCost {
                backend: b.backend.clone(),
                tier: tier.name.clone(),
                tokens_per_s: b.tokens_per_s,
                compute_usd_per_1m: compute,
                energy,
                total_usd_per_1m: total,
            })
        })
        .collect()
}

/// Backend ids, cheapest total first (ties: higher throughput first, then id).
pub fn ordering(costs: &[BackendCost]) -> Vec<String> {
    let mut v: Vec<&BackendCost> = costs.iter().collect();
    v.sort_by(|a, b| {
        a.total_usd_per_1m
            .total_cmp(&b.total_usd_per_1m)
            .then(b.tokens_per_s.total_cmp(&a.tokens_per_s))
            .then(a.backend.cmp(&b.backend))
    });
    v.into_iter().map(|c| c.backend.clone()).collect()
}

/// The ordering under each tier, and whether all of them are the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierOrderings {
    pub orderings: Vec<(String, Vec<String>)>,
    pub invariant: bool,
}

/// Orders the backends under every tier and compares the orderings.
pub fn ordering_is_tier_invariant(
    backends: &[BackendThroughput],
    tiers: &[PricingTier],
    usd_per_kwh: f64,
) -> Result<TierOrderings, CostError> {
    if tiers.is_empty() {
        return Err(CostError::NoTiers);
    }
    let orderings = tiers
        .iter()
        .map(|t| {
            Ok((
                t.name.clone(),
                ordering(&cost_table(backends, t, usd_per_kwh)?),
            ))
        })
        .collect::<Result<Vec<_>, CostError>>()?;
    let invariant = orderings.windows(2).all(|w| w[0].1 == w[1].1);
    Ok(TierOrderings {
        orderings,
        invariant,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tier(name: &str, usd_per_hour: f64) -> PricingTier {
        PricingTier {
            name: name.into(),
            usd_per_hour,
        }
    }

    fn no_energy(backend: &str, tokens_per_s: f64) -> BackendThroughput {
        BackendThroughput {
            backend: backend.into(),
            tokens_per_s,
            energy: EnergyInput::NoData {
                reason: "no sensor".into(),
            },
        }
    }

    #[test]
    fn the_reports_worked_example_is_reproduced() {
        // §7.3: gpt-oss-20b at 45.9 tokens/s, usd_per_hour 1.006 → 6.093 $/1M and 8.41 workers for 1B tokens/month.
        let usd = usd_per_1m(45.9, 1.006).unwrap();
        assert!((usd - 6.093).abs() < 0.01, "{usd}"); // the report's 45.9 is rounded
        let w = workers(
            avg_tokens_per_s(1e9, SECONDS_PER_30_DAY_MONTH).unwrap(),
            45.9,
        )
        .unwrap();
        assert!((w - 8.41).abs() < 0.01, "{w}");
        // §7.2: qwen2.5:7b at 2.000 $/1M, chat_default (256 + 128 tokens) → 0.768 $ per 1k requests.
        let per_request = cost_per_request(256, 128, 2.000).unwrap();
        assert!((per_request * 1e3 - 0.768).abs() < 1e-9, "{per_request}");
    }

    #[test]
    fn energy_is_a_second_term_only_when_good() {
        // 3.6 J/token → 1 kWh per 1M tokens → 0.10 $ at 0.10 $/kWh.
        let backends = [
            BackendThroughput {
                backend: "a".into(),
                tokens_per_s: 100.0,
                energy: EnergyInput::Good {
                    joules_per_token: 3.6,
                },
            },
            no_energy("b", 100.0),
        ];
        let t = cost_table(&backends, &tier("on_demand", 1.0), 0.10).unwrap();
        assert!((t[0].total_usd_per_1m - (t[0].compute_usd_per_1m + 0.10)).abs() < 1e-12);
        assert!((t[0].energy_share().unwrap() - 0.10 / t[0].total_usd_per_1m).abs() < 1e-12);
        assert_eq!(t[1].total_usd_per_1m, t[1].compute_usd_per_1m);
        assert_eq!(t[1].energy_share(), None);
        // Same throughput, so the one that also pays for energy is more expensive.
        assert_eq!(ordering(&t), ["b", "a"]);
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_quantity() {
        assert!(
            matches!(usd_per_1m(0.0, 1.0), Err(CostError::NotPositive { ref what, .. }) if what == "tokens_per_s")
        );
        assert!(
            matches!(usd_per_1m(10.0, f64::NAN), Err(CostError::NotPositive { ref what, .. }) if what == "usd_per_hour")
        );
        assert!(matches!(
            ordering_is_tier_invariant(&[no_energy("a", 1.0)], &[], 0.1),
            Err(CostError::NoTiers)
        ));
        let e = cost_table(&[no_energy("llama-cpp", -1.0)], &tier("t", 1.0), 0.1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("llama-cpp") && e.contains("tokens_per_s"), "{e}");
    }

    #[test]
    fn an_energy_term_can_break_tier_invariance() {
        // a is faster but draws far more energy per token: cheap compute (spot) lets energy decide.
        let backends = [
            BackendThroughput {
                backend: "a".into(),
                tokens_per_s: 200.0,
                energy: EnergyInput::Good {
                    joules_per_token: 50.0,
                },
            },
            BackendThroughput {
                backend: "b".into(),
                tokens_per_s: 100.0,
                energy: EnergyInput::Good {
                    joules_per_token: 1.0,
                },
            },
        ];
        let r = ordering_is_tier_invariant(
            &backends,
            &[tier("on_demand", 10.0), tier("spot", 0.01)],
            0.30,
        )
        .unwrap();
        assert!(!r.invariant, "{r:?}");
        assert_eq!(r.orderings[0].1, ["a", "b"]);
        assert_eq!(r.orderings[1].1, ["b", "a"]);
    }

    fn throughputs() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(
            prop_oneof![1e-3f64..1e5, (1u32..50).prop_map(|k| k as f64)],
            1..8,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        /// C3 / §7.13: under time-priced compute the backend ordering does not depend on the tier.
        #[test]
        fn ordering_is_invariant_under_the_pricing_tier(tps in throughputs(), prices in prop::collection::vec(1e-4f64..1e3, 2..5)) {
            let backends: Vec<_> = tps.iter().enumerate().map(|(i, &t)| no_energy(&format!("b{i}"), t)).collect();
            let tiers: Vec<_> = prices.iter().enumerate().map(|(i, &p)| tier(&format!("t{i}"), p)).collect();
            let r = ordering_is_tier_invariant(&backends, &tiers, 0.15).unwrap();
            prop_assert!(r.invariant, "{:?}", r);
            // And it is the throughput ordering (fastest first).
            let mut by_speed: Vec<_> = backends.iter().collect();
            by_speed.sort_by(|a, b| b.tokens_per_s.total_cmp(&a.tokens_per_s).then(a.backend.cmp(&b.backend)));
            let expected: Vec<String> = by_speed.iter().map(|b| b.backend.clone()).collect();
            prop_assert_eq!(&r.orderings[0].1, &expected);
        }

        /// With energy priced in, the ordering is still tier-invariant when every backend draws the
        /// same power (energy per token is then proportional to seconds per token, like the compute term).
        #[test]
        fn ordering_is_invariant_when_power_is_equal(tps in throughputs(), watts in 1.0f64..1000.0,
                                                     prices in prop::collection::vec(1e-4f64..1e3, 2..5), usd_per_kwh in 0.01f64..1.0) {
            let backends: Vec<_> = tps.iter().enumerate().map(|(i, &t)| BackendThroughput {
                backend: format!("b{i}"), tokens_per_s: t, energy: EnergyInput::Good { joules_per_token: watts / t },
            }).collect();
            let tiers: Vec<_> = prices.iter().enumerate().map(|(i, &p)| tier(&format!("t{i}"), p)).collect();
            let r = ordering_is_tier_invariant(&backends, &tiers, usd_per_kwh).unwrap();
            prop_assert!(r.invariant, "{:?}", r);
        }

        /// Cost scales linearly with the hourly price (AV.3: pricing is a global scaling factor).
        #[test]
        fn cost_is_linear_in_the_price(t in 1e-3f64..1e5, p in 1e-4f64..1e3, k in 1e-3f64..1e3) {
            let a = usd_per_1m(t, p).unwrap();
            let b = usd_per_1m(t, p * k).unwrap();
            prop_assert!((b / a - k).abs() <= 1e-9 * k);
        }
    }
}
