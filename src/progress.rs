//! Progress on stderr for long work: `infergate run` turns it on; library users and the libtest
//! harness keep it off (their output stays libtest's).
//!
//! Trial start/finish lines are printed by the caller ([`trial_started`], [`trial_finished`]); the
//! run counter inside a long series comes from [`crate::measure::run_series`] through
//! [`series_run`]. A process-wide switch is enough: one CLI run is one progress stream.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Series with at least this many runs (warmup included) print a counter line per run.
pub const LONG_SERIES: usize = 5;

/// Turn stderr progress on or off for this process.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn emit(line: &str) {
    if enabled() {
        // Progress is best effort: a closed stderr must not fail a measurement.
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

/// `1.2 s`, `3 min 04 s`.
pub fn format_elapsed(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        let whole = s.round() as u64;
        format!("{} min {:02} s", whole / 60, whole % 60)
    }
}

/// `[3/12] start phase.decode_fraction::ort-cpu::short`
pub fn trial_started(position: usize, total: usize, trial: &str) {
    emit(&format!("[{position}/{total}] start  {trial}"));
}

/// `[3/12] PASS   phase.decode_fraction::ort-cpu::short (4.2 s, run total 31.0 s)`
pub fn trial_finished(
    position: usize,
    total: usize,
    trial: &str,
    label: &str,
    took: Duration,
    run_elapsed: Duration,
) {
    emit(&format!(
        "[{position}/{total}] {label:<6} {trial} ({}, run total {})",
        format_elapsed(took),
        format_elapsed(run_elapsed)
    ));
}

/// One run of a series finished: printed only for series of [`LONG_SERIES`] runs or more.
/// `run` counts from 1; `phase` is `warmup` or `measured`; `outcome` is `ok`, `degraded`, `error`.
pub fn series_run(
    trial: &str,
    run: usize,
    total: usize,
    phase: &str,
    outcome: &str,
    took: Duration,
) {
    if total >= LONG_SERIES {
        emit(&format!(
            "      {trial}: run {run}/{total} ({phase}) {outcome} in {}",
            format_elapsed(took)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_is_seconds_below_a_minute_and_minutes_above() {
        assert_eq!(format_elapsed(Duration::from_millis(1234)), "1.2 s");
        assert_eq!(format_elapsed(Duration::from_secs(184)), "3 min 04 s");
    }
}
