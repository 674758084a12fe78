//! The test-only planted slowdown as a backend option: which phases it covers ([`Phases`]), how
//! much ([`Planted`]), and the busy-wait an in-process backend runs after each timed forward pass
//! ([`Stretch`]). Fixed when the backend is opened, never read inside a timed loop; where the
//! setting comes from (`INFERGATE_TEST_SLOWDOWN`, a paired worker's open request) and how a run
//! that used it is kept from ever becoming a baseline is the job of [`super::tweaks`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Which phases a planted slowdown stretches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Phases {
    #[default]
    All,
    Prefill,
    Decode,
}

/// A timed phase of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Prefill,
    Decode,
}

impl Phases {
    fn covers(self, p: Phase) -> bool {
        matches!(
            (self, p),
            (Phases::All, _) | (Phases::Prefill, Phase::Prefill) | (Phases::Decode, Phase::Decode)
        )
    }
}

/// A planted slowdown: `fraction` more time in the phases named.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Planted {
    pub fraction: f64,
    #[serde(default)]
    pub phases: Phases,
}

impl std::fmt::Display for Planted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.phases {
            Phases::All => write!(f, "{}", self.fraction),
            Phases::Prefill => write!(f, "{}:prefill", self.fraction),
            Phases::Decode => write!(f, "{}:decode", self.fraction),
        }
    }
}

/// Stretches timed phases by a planted fraction and counts the time it added; a no-op without one.
#[derive(Debug, Clone, Default)]
pub struct Stretch {
    planted: Option<Planted>,
    added_ns: Arc<AtomicU64>,
}

impl PartialEq for Stretch {
    fn eq(&self, other: &Self) -> bool {
        self.planted == other.planted
    }
}

impl Stretch {
    pub fn new(planted: Option<Planted>) -> Self {
        Stretch {
            planted: planted.filter(|p| p.fraction > 0.0),
            added_ns: Arc::default(),
        }
    }

    pub fn planted(&self) -> Option<Planted> {
        self.planted
    }

    /// Busy-wait, on every core, until `(1 + fraction) ×` the time elapsed since `start` has
    /// passed, when `phase` is one the slowdown covers.
    pub fn apply(&self, phase: Phase, start: Instant) {
        let Some(p) = self.planted.filter(|p| p.phases.covers(phase)) else {
            return;
        };
        let began = Instant::now();
        let until = began + start.elapsed().mul_f64(p.fraction);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(|| spin_until(until));
            }
            spin_until(until);
        });
        let added = began.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.added_ns.fetch_add(added, Ordering::Relaxed);
    }

    /// Time added so far, in ms (shared by clones).
    pub fn added_ms(&self) -> f64 {
        self.added_ns.load(Ordering::Relaxed) as f64 / 1e6
    }
}

fn spin_until(until: Instant) {
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_slowdown_is_a_no_op() {
        assert_eq!(Stretch::new(None), Stretch::default());
        let zero = Planted {
            fraction: 0.0,
            phases: Phases::All,
        };
        assert_eq!(Stretch::new(Some(zero)), Stretch::default());
        let s = Stretch::new(Some(Planted {
            fraction: 0.1,
            phases: Phases::Decode,
        }));
        assert_ne!(s, Stretch::default());
        // A phase the slowdown does not cover adds nothing.
        let start = Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        s.apply(Phase::Prefill, start);
        assert_eq!(s.added_ms(), 0.0);
    }

    /// A lower bound only (busy-waiting can overshoot on a loaded machine, never undershoot), and
    /// the counter holds what was added.
    #[test]
    fn stretch_waits_at_least_the_fraction_and_counts_it() {
        use std::time::Duration;
        let s = Stretch::new(Some(Planted {
            fraction: 0.5,
            phases: Phases::All,
        }));
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(4));
        let before = start.elapsed();
        s.clone().apply(Phase::Decode, start);
        assert!(start.elapsed() >= before.mul_f64(1.5));
        assert!(
            s.added_ms() >= before.as_secs_f64() * 1e3 * 0.5,
            "{}",
            s.added_ms()
        );
    }
}
