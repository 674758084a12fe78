//! `INFERGATE_TEST_SLOWDOWN`: a **test-only** knob that exists for one purpose — proving that the
//! regression gate catches a real slowdown (docs/regression.md). With `INFERGATE_TEST_SLOWDOWN=0.25`
//! the ONNX Runtime backend busy-waits after every forward pass (prefill and each decode step) for
//! 0.25 × the time that pass took, inside the timed region, so prefill, decode and end-to-end times
//! all grow by 25 % and throughput falls by the same factor. It spins on as many threads as the
//! machine has cores (as ONNX Runtime's intra-op pool computes on all of them), so it also costs
//! about 25 % more CPU time, like slower code would.
//!
//! So that a run with it can never be mistaken for a clean one: the run manifest records it
//! (`test_slowdown`), every regression verdict names it, and no baseline is ever written while it is
//! set ([`super::WritePolicy`]). Only in-process backends can be slowed; engine-timed backends
//! (llama.cpp, Ollama) report their own clocks and are not affected.

use std::time::Instant;

/// The environment variable.
pub const ENV: &str = "INFERGATE_TEST_SLOWDOWN";

/// The largest accepted factor (a 10× slowdown is already far beyond any tolerance).
const MAX: f64 = 10.0;

/// Parse a slowdown fraction: a finite number in `[0, 10]` (`0.10` = 10 % slower).
pub fn parse(value: &str) -> Result<f64, String> {
    let f: f64 = value.trim().parse().map_err(|_| format!("{ENV}={value:?} is not a number; use a fraction such as 0.10 for 10 % slower, or unset it"))?;
    if !(f.is_finite() && (0.0..=MAX).contains(&f)) {
        return Err(format!("{ENV}={value} is out of range: use a fraction in [0, {MAX}], e.g. 0.10 for 10 % slower, or unset it"));
    }
    Ok(f)
}

/// The planted slowdown, if `INFERGATE_TEST_SLOWDOWN` is set (to anything but the empty string).
pub fn planted() -> Result<Option<f64>, String> {
    match std::env::var(ENV) {
        Ok(v) if !v.trim().is_empty() => parse(&v).map(Some),
        _ => Ok(None),
    }
}

/// Stretches timed sections by a factor; a no-op when no slowdown is planted.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stretch(Option<f64>);

impl Stretch {
    pub fn new(fraction: Option<f64>) -> Self {
        Stretch(fraction.filter(|f| *f > 0.0))
    }

    /// From the environment; an invalid value is an error with the fix.
    pub fn from_env() -> Result<Self, String> {
        planted().map(Stretch::new)
    }

    /// Busy-wait, on every core, until `(1 + fraction) ×` the time elapsed since `start` has passed.
    pub fn apply(&self, start: Instant) {
        let Some(f) = self.0 else { return };
        let until = Instant::now() + start.elapsed().mul_f64(f);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(|| spin_until(until));
            }
            spin_until(until);
        });
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
    fn parses_fractions_and_rejects_nonsense() {
        assert_eq!(parse("0.10"), Ok(0.10));
        assert_eq!(parse(" 0.25 "), Ok(0.25));
        assert_eq!(parse("0"), Ok(0.0));
        for bad in ["abc", "-0.1", "NaN", "inf", "11"] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(ENV), "{e}");
        }
    }

    #[test]
    fn no_slowdown_is_a_no_op() {
        assert_eq!(Stretch::new(None), Stretch::default());
        assert_eq!(Stretch::new(Some(0.0)), Stretch::default());
        assert_ne!(Stretch::new(Some(0.1)), Stretch::default());
    }

    /// A lower bound only (busy-waiting can overshoot on a loaded machine, never undershoot).
    #[test]
    fn stretch_waits_at_least_the_fraction() {
        use std::time::Duration;
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(4));
        let before = start.elapsed();
        Stretch::new(Some(0.5)).apply(start);
        assert!(start.elapsed() >= before.mul_f64(1.5));
    }
}
