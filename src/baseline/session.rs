//! One trial's baselines on this machine: what the regression gate asks the store. "What is the
//! baseline for this trial here" ([`Session::choose`]: this machine's stored numbers, or a runtime
//! pin to re-run side by side in paired mode, or why there is nothing to compare) and "record this
//! series as the new baseline" ([`Session::record`]). The gate compares and decides; only this
//! module reads and writes the files for it.

use std::collections::BTreeMap;
use std::path::Path;

use super::fingerprint::{current_runtime, gpu_drivers};
use super::metric::Metric;
use super::provenance::{Provenance, ProvenanceChange};
use super::store::{self, BaselineRecord, Direction, Workload};
use super::{record_command, BaselineStore, Fingerprint, WritePolicy, WriteReport};
use crate::error::BaselineError;
use crate::pins::RuntimePin;
use crate::roofline::probe::PROBE_METRIC;

/// The stored side of a trial: one record per metric (in the session's `metrics` order) and the
/// probe times of the same runs.
#[derive(Debug, Clone)]
pub struct Stored {
    pub records: Vec<BaselineRecord>,
    pub probe: BaselineRecord,
}

/// Either the stored records for this trial or why there are none (a missing baseline: skip, or
/// fail under `INFERGATE_REQUIRE_BASELINE=1`).
pub type Lookup = Result<Stored, String>;

/// How a trial compares, chosen before anything is measured ([`Session::choose`]).
#[derive(Debug)]
pub enum Mode {
    /// With this machine's stored numbers. `changes` names what differs from the recording and
    /// could not be re-run (a runtime without a fetchable pin, a GPU driver).
    Stored {
        stored: Stored,
        changes: Vec<ProvenanceChange>,
    },
    /// Both runtimes measured in this job ([`crate::paired`]): the baseline's, fetched by its
    /// pin, and this process's.
    Paired {
        baseline: RuntimePin,
        current: RuntimePin,
        /// Why paired mode decides (which baseline's recipe is re-run).
        why: String,
    },
}

/// One trial (gate × backend × scenario) of a regression gate, on this machine's fingerprint.
#[derive(Debug, Clone)]
pub struct Session<'a> {
    /// Where the baselines live.
    pub store: BaselineStore,
    /// This machine (and the gate's model weights).
    pub fingerprint: Fingerprint,
    /// Gate id.
    pub gate: &'a str,
    /// Backend id.
    pub backend: &'a str,
    /// Scenario name.
    pub scenario: &'a str,
    /// Prompt and generated tokens the gate measures.
    pub workload: Workload,
    /// Metrics compared, in the gate file's order.
    pub metrics: &'a [Metric],
}

/// What a recording says about itself beyond the series: where the checkout is (for its git
/// state), which run, which profile.
#[derive(Debug, Clone)]
pub struct Recording<'a> {
    /// The checkout the gate file belongs to.
    pub repo: &'a Path,
    pub run_id: &'a str,
    /// E.g. `ci (warmup 1, repetitions 10)`.
    pub profile: String,
}

impl Session<'_> {
    /// This machine's stored records for the trial, or why there are none.
    pub fn lookup(&self) -> Result<Lookup, BaselineError> {
        let (store, gate, backend) = (&self.store, self.gate, self.backend);
        let id = self.fingerprint.id();
        let missing = |what: String| {
            Ok(Err(format!("no baseline for this machine: {what}; record one with {} (INFERGATE_REQUIRE_BASELINE=1 makes this a failure)", record_command(gate, backend))))
        };
        let Some(file) = store.load(&id, gate)? else {
            let path = store.gate_path(&id, gate);
            let others = store
                .fingerprint_ids()?
                .into_iter()
                .filter(|d| *d != id)
                .collect::<Vec<_>>();
            let others = if others.is_empty() {
                String::new()
            } else {
                format!(" (stored for other fingerprints: {})", others.join(", "))
            };
            return missing(format!("{} does not exist{others}", path.display()));
        };
        let want = self.workload;
        let mut records = Vec::new();
        let mut absent = Vec::new();
        let probe = file
            .get(backend, Some(self.scenario), PROBE_METRIC)
            .cloned();
        if probe.is_none() {
            absent.push(PROBE_METRIC);
        }
        for (name, direction, unit) in self
            .metrics
            .iter()
            .map(|m| (m.name(), m.direction(), m.unit()))
            .chain(probe.iter().map(|r| (PROBE_METRIC, r.direction, "ms")))
        {
            match file.get(backend, Some(self.scenario), name) {
                None => absent.push(name),
                Some(r) if r.workload != want => {
                    return missing(format!(
                        "{} holds {} for {} prompt / {} generated tokens, the gate now measures {} / {}",
                        file.path.display(),
                        r.label(),
                        r.workload.prompt_tokens,
                        r.workload.gen_tokens,
                        want.prompt_tokens,
                        want.gen_tokens
                    ));
                }
                Some(r) if r.direction != direction || r.unit != unit => {
                    return Err(BaselineError::Corrupt {
                        path: file.path.clone(),
                        detail: format!(
                            "{} is stored as {:?} in {}, but the metric is {direction:?} in {unit}",
                            r.label(),
                            r.direction,
                            r.unit
                        ),
                    });
                }
                Some(r)
                    if probe
                        .as_ref()
                        .is_some_and(|pr| pr.samples.len() != r.samples.len()) =>
                {
                    return Err(BaselineError::Corrupt {
                        path: file.path.clone(),
                        detail: format!(
                            "{} has {} samples but {PROBE_METRIC} has {}: they must pair run by run",
                            r.label(),
                            r.samples.len(),
                            probe.as_ref().map_or(0, |p| p.samples.len())
                        ),
                    });
                }
                Some(r) if name != PROBE_METRIC => records.push(r.clone()),
                Some(_) => {}
            }
        }
        match probe {
            Some(probe) if absent.is_empty() => Ok(Ok(Stored { records, probe })),
            _ => missing(format!(
                "{} has no record for {backend}::{} {}",
                file.path.display(),
                self.scenario,
                absent.join(", ")
            )),
        }
    }

    /// A baseline recorded on another machine for this trial whose runtime pin can be re-run here:
    /// `(fingerprint id, pin)`. Only a record of the same model weights counts (the recipe is the
    /// runtime pin, the model hash and the gate's parameters).
    pub fn recipe_elsewhere(&self) -> Result<Vec<(String, RuntimePin)>, BaselineError> {
        let store = &self.store;
        let mut out = Vec::new();
        let here = self.fingerprint.id();
        for id in store.fingerprint_ids()? {
            if id == here {
                continue;
            }
            let Some(theirs) = store.read_fingerprint(&id)? else {
                continue;
            };
            if theirs.components.models != self.fingerprint.models {
                continue;
            }
            let Some(file) = store.load(&id, self.gate)? else {
                continue;
            };
            let pin = self.metrics.first().and_then(|m| {
                file.get(self.backend, Some(self.scenario), m.name())
                    .and_then(|r| r.provenance.runtime.clone())
            });
            out.extend(pin.map(|pin| (id, pin)));
        }
        Ok(out)
    }

    /// The comparison a trial makes: paired when the runtime differs from the baseline's and the
    /// baseline's pin can be fetched (from this machine's record, else from another machine's
    /// recipe); stored with this machine's numbers otherwise; `Err(reason)` when there is nothing
    /// to compare (a counted SKIP, or a failure under `INFERGATE_REQUIRE_BASELINE=1`).
    pub fn choose(
        &self,
        current: Option<&RuntimePin>,
    ) -> Result<Result<Mode, String>, BaselineError> {
        let drivers = gpu_drivers();
        match self.lookup()? {
            Ok(stored) => {
                let prov = stored
                    .records
                    .first()
                    .map(|r| r.provenance.clone())
                    .unwrap_or_else(|| stored.probe.provenance.clone());
                if let (Some(base), Some(cur)) = (&prov.runtime, current) {
                    if !base.same_build(cur) && base.fetchable() {
                        return Ok(Ok(Mode::Paired {
                            baseline: base.clone(),
                            current: cur.clone(),
                            why: format!(
                                "this machine's baseline (run {}) ran on {}",
                                prov.run_id,
                                base.short()
                            ),
                        }));
                    }
                }
                Ok(Ok(Mode::Stored {
                    changes: prov.changes(current, &drivers),
                    stored,
                }))
            }
            Err(missing) => {
                let Some(cur) = current else {
                    return Ok(Err(missing));
                };
                let recipes = self.recipe_elsewhere()?;
                if let Some((id, pin)) = recipes
                    .iter()
                    .find(|(_, pin)| pin.fetchable() && !pin.same_build(cur))
                {
                    return Ok(Ok(Mode::Paired {
                        baseline: pin.clone(),
                        current: cur.clone(),
                        why: format!(
                            "no stored numbers for this machine; the baseline recorded on {id} ran on {}, re-run here from its pin",
                            pin.short()
                        ),
                    }));
                }
                if recipes.is_empty() {
                    Ok(Err(missing))
                } else {
                    let on: Vec<String> = recipes
                        .iter()
                        .map(|(id, pin)| format!("{id} ({})", pin.short()))
                        .collect();
                    Ok(Err(format!(
                        "{missing}; the baselines of other machines ({}) ran on this machine's runtime ({}) or cannot be fetched, so paired mode has nothing to compare either",
                        on.join(", "),
                        cur.short()
                    )))
                }
            }
        }
    }

    /// Write a measured series (each metric's values and the probe times of the same runs) as this
    /// trial's baseline records.
    pub fn record(
        &self,
        recording: &Recording<'_>,
        values: &BTreeMap<Metric, Vec<f64>>,
        probe_ms: &[f64],
        policy: &WritePolicy,
    ) -> Result<WriteReport, BaselineError> {
        let (git_commit, git_dirty) = crate::manifest::git_state(recording.repo);
        let provenance = Provenance {
            recorded_utc: chrono::Utc::now().to_rfc3339(),
            git_commit,
            git_dirty,
            run_id: recording.run_id.to_string(),
            profile: recording.profile.clone(),
            runtime: current_runtime(self.backend),
            gpu_drivers: gpu_drivers(),
        };
        let rec = |name: &str, direction, unit: &str, values: Vec<f64>| {
            store::record(
                self.backend,
                Some(self.scenario),
                name,
                direction,
                unit,
                values,
                self.workload,
                provenance.clone(),
            )
        };
        let mut records = self
            .metrics
            .iter()
            .map(|m| {
                rec(
                    m.name(),
                    m.direction(),
                    m.unit(),
                    values.get(m).cloned().unwrap_or_default(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        records.push(rec(
            PROBE_METRIC,
            Direction::LowerIsBetter,
            "ms",
            probe_ms.to_vec(),
        )?);
        self.store
            .write(&self.fingerprint, self.gate, records, policy)
    }
}

#[cfg(test)]
impl Session<'_> {
    /// Test fixture: every metric and the probe of this trial stored with `samples` and
    /// `provenance` (written even in CI).
    pub(crate) fn record_fixture(&self, provenance: Provenance, samples: Vec<f64>) {
        let mut records: Vec<BaselineRecord> = self
            .metrics
            .iter()
            .map(|m| (m.name(), m.direction(), m.unit()))
            .chain([(PROBE_METRIC, Direction::LowerIsBetter, "ms")])
            .map(|(name, d, unit)| {
                store::record(
                    self.backend,
                    Some(self.scenario),
                    name,
                    d,
                    unit,
                    samples.clone(),
                    self.workload,
                    provenance.clone(),
                )
                .unwrap()
            })
            .collect();
        records.sort_by_key(|r| r.key());
        let policy = WritePolicy {
            ci: false,
            force: true,
            tweaks: Default::default(),
        };
        self.store
            .write(&self.fingerprint, self.gate, records, &policy)
            .unwrap();
    }
}
