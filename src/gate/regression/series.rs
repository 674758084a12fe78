//! Measuring a regression trial's series: one run at a time with the machine-speed probe timed
//! between runs, and each metric's values taken from the measured runs.

use std::collections::BTreeMap;

use crate::backend::Backend;
use crate::baseline::cpu;
use crate::baseline::metric::Metric;
use crate::error::BackendError;
use crate::measure::{run_series, RunOutcome, RunPhase, RunRecord, SeriesPlan};
use crate::roofline::probe::Probe;

/// A measured series: per measured run, each metric's value and the probe time around it (mean of
/// the probe just before and just after the run).
pub(super) struct Series {
    pub(super) values: BTreeMap<Metric, Vec<f64>>,
    pub(super) probe_ms: Vec<f64>,
}

/// Run `plan` one run at a time with the probe timed between measured runs (n + 1 probes for n
/// runs; a run's probe time is the mean of the one before and the one after it). Records keep their
/// position in the series as `index`.
pub(super) fn measure(
    opened: &mut Result<Box<dyn Backend>, BackendError>,
    plan: &SeriesPlan,
    probe: &Probe,
    metrics: &[Metric],
) -> (Vec<RunRecord>, Result<Series, String>) {
    let mut records = Vec::with_capacity(plan.stated_runs());
    let mut probe_ms = Vec::with_capacity(plan.repetitions);
    let mut cpu_ms = BTreeMap::new();
    let mut before = None;
    for i in 0..plan.stated_runs() {
        let warmup = i < plan.warmup;
        let one = SeriesPlan {
            warmup: usize::from(warmup),
            repetitions: usize::from(!warmup),
            ..plan.clone()
        };
        if !warmup && before.is_none() {
            before = Some(probe.time_ms());
        }
        let cpu_before = cpu::process_tree_cpu_ms();
        let mut recs = run_series(opened, &one);
        let cpu = cpu_before.and_then(|b| cpu::process_tree_cpu_ms().map(|a| a - b));
        cpu_ms.insert(i, cpu);
        if let (false, Some(b)) = (warmup, before) {
            let after = probe.time_ms();
            probe_ms.push(0.5 * (b + after));
            before = Some(after);
        }
        for r in &mut recs {
            r.index = i;
        }
        records.extend(recs);
    }
    let series = samples(&records, &cpu_ms, metrics).map(|values| Series { values, probe_ms });
    (records, series)
}

/// Values of each metric over the measured runs; every measured run must be ok. `cpu_ms` holds
/// the CPU time of each run by its index in the series.
pub(super) fn samples(
    records: &[RunRecord],
    cpu_ms: &BTreeMap<usize, Result<f64, String>>,
    metrics: &[Metric],
) -> Result<BTreeMap<Metric, Vec<f64>>, String> {
    let mut out: BTreeMap<Metric, Vec<f64>> = metrics.iter().map(|m| (*m, Vec::new())).collect();
    for r in records.iter().filter(|r| r.phase == RunPhase::Measured) {
        let t = match &r.outcome {
            RunOutcome::Ok(t) => t,
            RunOutcome::Degraded { reason } => return Err(format!("measured run {} was degraded ({reason}); a series with failed runs is not compared", r.index)),
            RunOutcome::Error { message } => return Err(format!("measured run {} failed ({message}); a series with failed runs is not compared", r.index)),
            RunOutcome::Projected(p) => return Err(format!("measured run {}: {}; a series with such runs is not compared", r.index, p.describe())),
        };
        for m in metrics {
            let cpu = match cpu_ms.get(&r.index) {
                Some(Ok(c)) => Some(*c),
                Some(Err(e)) if *m == Metric::E2eCpuMs => {
                    return Err(format!(
                        "measured run {}: CPU time unavailable: {e}",
                        r.index
                    ))
                }
                _ => None,
            };
            let Some(v) = m.value(t, cpu) else {
                return Err(format!(
                    "measured run {}: {} was not measured",
                    r.index,
                    m.name()
                ));
            };
            if !(v.is_finite() && v > 0.0) {
                return Err(format!(
                    "measured run {}: {} = {v} is not a positive number",
                    r.index,
                    m.name()
                ));
            }
            out.entry(*m).or_default().push(v);
        }
    }
    if out.values().any(Vec::is_empty) {
        return Err("no measured run".into());
    }
    Ok(out)
}
