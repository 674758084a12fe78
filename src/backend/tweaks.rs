//! Planted slowdowns and fewer threads: **test-only** changes to how a backend is opened, which
//! exist for one purpose — measuring what the regression gate catches (docs/regression.md).
//!
//! - A planted slowdown ([`Planted`]): with `0.25` the ONNX Runtime backend busy-waits after every
//!   forward pass (prefill and each decode step, or only the phases named: `0.25:decode`) for
//!   0.25 × the time that pass took, inside the timed region, so the slowed phases take exactly
//!   ×1.25 and throughput falls by the same factor. It spins on as many threads as the machine has
//!   cores (as ONNX Runtime's intra-op pool computes on all of them), so CPU time grows too, like
//!   slower code. The backend counts the time it added
//!   ([`Stretch::added_ms`](crate::backend::stretch::Stretch::added_ms)), so the planted
//!   factor can be checked against the measured one.
//! - Fewer threads ([`Tweaks::threads`]): llama.cpp started with fewer threads than it was
//!   recorded with — a real slowdown of an engine whose timings come from the engine itself.
//!
//! Both are options of the backend, fixed when it is opened ([`Tweaks`]); nothing is read inside a
//! timed loop. For the in-process suite they come from `INFERGATE_TEST_SLOWDOWN` and
//! `INFERGATE_TEST_THREADS`, read once per open; a paired worker gets them in its open request.
//! So that a run with them can never be mistaken for a clean one: the run manifest records the
//! slowdown, every regression verdict names them, and no baseline is ever written while one is
//! set ([`crate::baseline::WritePolicy`]).

use serde::{Deserialize, Serialize};

use super::stretch::{Phases, Planted};

/// The environment variable of the planted slowdown (`0.10`, `0.25:decode`).
pub const ENV: &str = "INFERGATE_TEST_SLOWDOWN";
/// The environment variable of the thread count llama.cpp is started with.
pub const THREADS_ENV: &str = "INFERGATE_TEST_THREADS";

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

/// Parse `fraction[:all|prefill|decode]`.
pub fn parse_planted(value: &str) -> Result<Planted, String> {
    let (f, phases) = match value.trim().split_once(':') {
        None => (value, Phases::All),
        Some((f, "all")) => (f, Phases::All),
        Some((f, "prefill")) => (f, Phases::Prefill),
        Some((f, "decode")) => (f, Phases::Decode),
        Some((_, other)) => {
            return Err(format!(
                "{ENV}={value:?}: unknown phase `{other}` (all, prefill or decode)"
            ))
        }
    };
    Ok(Planted {
        fraction: parse(f)?,
        phases,
    })
}

/// The planted slowdown's fraction, if `INFERGATE_TEST_SLOWDOWN` is set (to anything but empty).
pub fn planted() -> Result<Option<f64>, String> {
    Ok(Tweaks::from_env()?.planted.map(|p| p.fraction))
}

/// Test-only options of a backend, fixed when it is opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tweaks {
    /// Stretch the timed phases of an in-process backend (ONNX Runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planted: Option<Planted>,
    /// Threads an engine server (llama.cpp) is started with, instead of every core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
}

impl Tweaks {
    /// From variables looked up by `get` (the environment in [`Tweaks::from_env`]).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Tweaks, String> {
        let planted = match get(ENV) {
            Some(v) if !v.trim().is_empty() => Some(parse_planted(&v)?),
            _ => None,
        }
        .filter(|p| p.fraction > 0.0);
        let threads = match get(THREADS_ENV) {
            Some(v) if !v.trim().is_empty() => match v.trim().parse::<usize>() {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    return Err(format!(
                        "{THREADS_ENV}={v:?} is not a thread count (1 or more); unset it"
                    ))
                }
            },
            _ => None,
        };
        Ok(Tweaks { planted, threads })
    }

    /// `INFERGATE_TEST_SLOWDOWN` and `INFERGATE_TEST_THREADS`.
    pub fn from_env() -> Result<Tweaks, String> {
        Tweaks::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn is_none(&self) -> bool {
        self.planted.is_none() && self.threads.is_none()
    }

    /// `planted slowdown 0.25:decode, 1 thread` (empty when none).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = self.planted {
            parts.push(format!("planted slowdown {p} ({ENV})"));
        }
        if let Some(t) = self.threads {
            parts.push(format!("{t} thread(s) ({THREADS_ENV})"));
        }
        parts.join(", ")
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
        assert_eq!(
            parse_planted("0.25:decode"),
            Ok(Planted {
                fraction: 0.25,
                phases: Phases::Decode
            })
        );
        assert!(parse_planted("0.25:warmup").is_err());
        assert_eq!(parse_planted("0.1").unwrap().to_string(), "0.1");
        assert_eq!(
            parse_planted("0.1:decode").unwrap().to_string(),
            "0.1:decode"
        );
    }

    #[test]
    fn tweaks_from_variables() {
        let get = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(Tweaks::from_lookup(get(&[])).unwrap().is_none());
        let t = Tweaks::from_lookup(get(&[(ENV, "0.03:decode"), (THREADS_ENV, "1")])).unwrap();
        assert_eq!(t.threads, Some(1));
        assert_eq!(t.planted.unwrap().phases, Phases::Decode);
        assert!(t.describe().contains("0.03:decode") && t.describe().contains("1 thread"));
        assert!(Tweaks::from_lookup(get(&[(THREADS_ENV, "0")])).is_err());
        // A zero slowdown plants nothing.
        assert!(Tweaks::from_lookup(get(&[(ENV, "0")])).unwrap().is_none());
    }
}
