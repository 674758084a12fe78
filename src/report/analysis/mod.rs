//! The numbers of the decision card, computed only from one run directory: latency distributions
//! per backend × scenario, decode fraction per backend, the routing recommendation, cost under
//! pricing tiers, the claim table, and every skip, degraded run and `no_data` with its reason.
//!
//! Aggregation follows the conclusive report: measured runs only (warmup and non-ok runs never
//! enter a number), medians and type-7 percentiles per backend × scenario, scenarios combined by
//! geometric mean (§3.10).
//!
//! Files by job: [`latency`] (distributions, decode fraction, routing), [`trials`] (cost, claims,
//! issues).

mod latency;
mod trials;

pub use latency::{
    decode_fraction_rows, latency_rows, routing, variant_of, DecodeFractionRow, LatencyRow,
    Routing, DECODE_HEAVY_FRACTION, DECODE_HEAVY_GEN_TOKENS,
};
pub use trials::{claim_rows, cost_rows, issues, ClaimRow, CostRow, Issue, IssueKind};
