//! Baseline files: `baselines/<fingerprint>/fingerprint.json` (every component of the fingerprint)
//! and `baselines/<fingerprint>/<gate-id>.json` (one record per backend × scenario × metric, with
//! the measured samples). Loading validates everything it can and turns any doubt into a
//! [`BaselineError`] naming the file; writing is atomic (temp file in the same directory + rename,
//! under a lock file so parallel trial processes do not lose each other's records).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fingerprint::Fingerprint;
use super::provenance::Provenance;
use crate::error::BaselineError;

/// The schema this infergate reads and writes. A file with a higher number is refused; one with a
/// lower number is migrated by `infergate baseline migrate` ([`migrate`]).
/// 2: the fingerprint is the machine only; runtimes and GPU drivers moved into each record's
/// [`Provenance`].
pub const SCHEMA_VERSION: u64 = 2;

/// Name of the fingerprint description in every fingerprint directory.
pub const FINGERPRINT_FILE: &str = "fingerprint.json";

/// Which way is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Latencies.
    LowerIsBetter,
    /// Throughputs.
    HigherIsBetter,
}

/// The workload a record was measured on; a baseline for another workload is not comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
}

/// One stored series: gate × backend × scenario × metric (the gate is the file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineRecord {
    pub backend: String,
    pub scenario: Option<String>,
    /// Metric name as the gate file spells it (`e2e_ms`, `decode_tokens_per_s` …).
    pub metric: String,
    pub direction: Direction,
    pub unit: String,
    /// Every measured (non-warmup, ok) value, in run order: the regression rule resamples them.
    pub samples: Vec<f64>,
    /// Type-7 median of `samples` (checked on load: a hand-edited file that disagrees is corrupt).
    pub median: f64,
    pub workload: Workload,
    pub provenance: Provenance,
}

/// `(backend, scenario, metric)`.
pub type RecordKey = (String, Option<String>, String);

impl BaselineRecord {
    pub fn key(&self) -> RecordKey {
        (
            self.backend.clone(),
            self.scenario.clone(),
            self.metric.clone(),
        )
    }
    /// `backend[::scenario] metric`.
    pub fn label(&self) -> String {
        key_label(&self.key())
    }
}

pub fn key_label((backend, scenario, metric): &RecordKey) -> String {
    match scenario {
        Some(s) => format!("{backend}::{s} {metric}"),
        None => format!("{backend} {metric}"),
    }
}

/// The content of `baselines/<fingerprint>/<gate-id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateBaselines {
    pub schema_version: u64,
    pub gate: String,
    /// The fingerprint id; must equal the directory's name.
    pub fingerprint: String,
    pub records: Vec<BaselineRecord>,
    /// Where it was read from (not stored).
    #[serde(skip)]
    pub path: PathBuf,
}

impl GateBaselines {
    pub fn get(
        &self,
        backend: &str,
        scenario: Option<&str>,
        metric: &str,
    ) -> Option<&BaselineRecord> {
        self.records.iter().find(|r| {
            r.backend == backend && r.scenario.as_deref() == scenario && r.metric == metric
        })
    }
}

/// The content of `baselines/<fingerprint>/fingerprint.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FingerprintFile {
    pub schema_version: u64,
    pub id: String,
    /// sha256 of the canonical JSON of `components`.
    pub hash: String,
    pub components: Fingerprint,
}

/// Whether writing is allowed; see [`super::Settings::write_policy`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WritePolicy {
    /// `CI` is set (to anything but empty, `0` or `false`).
    pub ci: bool,
    /// `INFERGATE_FORCE_BASELINE_WRITE=1` or `--force`.
    pub force: bool,
    /// A test-only backend option is set (a planted slowdown, fewer threads): never record.
    pub tweaks: crate::backend::tweaks::Tweaks,
}

impl WritePolicy {
    /// `Err(reason)` when nothing may be written.
    pub fn refusal(&self) -> Option<String> {
        if !self.tweaks.is_none() {
            return Some(format!(
                "{} is set: a run with a test-only slowdown can never become a baseline (unset it); nothing was written",
                self.tweaks.describe()
            ));
        }
        if self.ci && !self.force {
            return Some(
                "CI is set: baselines are not written in CI unless forced (set INFERGATE_FORCE_BASELINE_WRITE=1 or pass `infergate baseline update --force`); nothing was written"
                    .into(),
            );
        }
        None
    }
}

/// What one record write changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: RecordKey,
    pub unit: String,
    /// `(median, n)` before; `None` for a new record.
    pub old: Option<(f64, usize)>,
    pub new: (f64, usize),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (new, n) = self.new;
        match self.old {
            None => write!(
                f,
                "{}: (new) → {new:.3} {} (n={n})",
                key_label(&self.key),
                self.unit
            ),
            Some((old, m)) => {
                let pct = (new / old - 1.0) * 100.0;
                write!(
                    f,
                    "{}: {old:.3} {} (n={m}) → {new:.3} {} (n={n}), {pct:+.1} %",
                    key_label(&self.key),
                    self.unit,
                    self.unit
                )
            }
        }
    }
}

/// The result of a write.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteReport {
    pub path: PathBuf,
    pub changes: Vec<Change>,
}

impl std::fmt::Display for WriteReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "wrote {}", self.path.display())?;
        for c in &self.changes {
            write!(f, "\n  {c}")?;
        }
        Ok(())
    }
}

/// A `baselines/` directory.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineStore {
    root: PathBuf,
}

impl BaselineStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        BaselineStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self, fingerprint_id: &str) -> PathBuf {
        self.root.join(fingerprint_id)
    }

    pub fn gate_path(&self, fingerprint_id: &str, gate: &str) -> PathBuf {
        self.dir(fingerprint_id).join(format!("{gate}.json"))
    }

    /// Fingerprint directories present (sorted); an absent root has none.
    pub fn fingerprint_ids(&self) -> Result<Vec<String>, BaselineError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.root, e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The validated `fingerprint.json` of a directory; `None` when the directory does not exist.
    pub fn read_fingerprint(
        &self,
        fingerprint_id: &str,
    ) -> Result<Option<FingerprintFile>, BaselineError> {
        let dir = self.dir(fingerprint_id);
        if !dir.is_dir() {
            return Ok(None);
        }
        let path = dir.join(FINGERPRINT_FILE);
        let value = read_json(&path)?.ok_or_else(|| BaselineError::Corrupt {
            path: path.clone(),
            detail: format!("the directory {} has no {FINGERPRINT_FILE}, so its baselines cannot be attributed to a machine", dir.display()),
        })?;
        let file: FingerprintFile = parse_versioned(&path, value)?;
        let (id, hash) = (file.components.id(), file.components.hash());
        if file.hash != hash || file.id != id {
            return Err(BaselineError::Corrupt {
                path,
                detail: format!(
                    "its components hash to `{id}`, but it claims `{}` (edited by hand?)",
                    file.id
                ),
            });
        }
        if file.id != fingerprint_id {
            return Err(BaselineError::Foreign {
                path,
                found: file.id,
                expected: fingerprint_id.to_string(),
            });
        }
        Ok(Some(file))
    }

    /// The validated baselines of `gate` for a fingerprint; `None` when none were recorded.
    pub fn load(
        &self,
        fingerprint_id: &str,
        gate: &str,
    ) -> Result<Option<GateBaselines>, BaselineError> {
        if self.read_fingerprint(fingerprint_id)?.is_none() {
            return Ok(None);
        }
        let path = self.gate_path(fingerprint_id, gate);
        let Some(value) = read_json(&path)? else {
            return Ok(None);
        };
        let mut file: GateBaselines = parse_versioned(&path, value)?;
        file.path = path.clone();
        if file.fingerprint != fingerprint_id {
            return Err(BaselineError::Foreign {
                path,
                found: file.fingerprint,
                expected: fingerprint_id.to_string(),
            });
        }
        if file.gate != gate {
            return Err(BaselineError::Corrupt {
                path,
                detail: format!("it holds gate `{}`, but its name says `{gate}`", file.gate),
            });
        }
        validate_records(&path, &file.records)?;
        Ok(Some(file))
    }

    /// Add or replace `records` in `<fingerprint>/<gate>.json` (other records are kept), atomically.
    /// Refused (nothing written) when `policy` says so. A corrupt or foreign existing file is an
    /// error, never overwritten.
    pub fn write(
        &self,
        fingerprint: &Fingerprint,
        gate: &str,
        records: Vec<BaselineRecord>,
        policy: &WritePolicy,
    ) -> Result<WriteReport, BaselineError> {
        let id = fingerprint.id();
        let dir = self.dir(&id);
        let path = self.gate_path(&id, gate);
        if let Some(reason) = policy.refusal() {
            return Err(BaselineError::WriteRefused { path, reason });
        }
        validate_records(&path, &records)?;
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let lock_path = dir.join(".lock");
        let lock = File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
        lock.lock().map_err(|e| io(&lock_path, e))?;

        let fp_path = dir.join(FINGERPRINT_FILE);
        if !fp_path.exists() {
            let file = FingerprintFile {
                schema_version: SCHEMA_VERSION,
                id: id.clone(),
                hash: fingerprint.hash(),
                components: fingerprint.clone(),
            };
            write_atomic(&fp_path, &file)?;
        }
        let stored = self.read_fingerprint(&id)?.map(|f| f.components);
        if stored.as_ref() != Some(fingerprint) {
            return Err(BaselineError::Corrupt {
                path: fp_path,
                detail: format!("it describes {stored:?}, not this machine"),
            });
        }

        let mut existing = self.load(&id, gate)?.map(|g| g.records).unwrap_or_default();
        let mut changes = Vec::new();
        for r in records {
            let old = existing
                .iter()
                .position(|o| o.key() == r.key())
                .map(|i| existing.remove(i));
            changes.push(Change {
                key: r.key(),
                unit: r.unit.clone(),
                old: old.map(|o| (o.median, o.samples.len())),
                new: (r.median, r.samples.len()),
            });
            existing.push(r);
        }
        existing.sort_by_key(|a| a.key());
        let file = GateBaselines {
            schema_version: SCHEMA_VERSION,
            gate: gate.to_string(),
            fingerprint: id,
            records: existing,
            path: PathBuf::new(),
        };
        write_atomic(&path, &file)?;
        Ok(WriteReport { path, changes })
    }
}

/// Build a record from measured samples (computes the median; rejects unusable samples).
#[allow(clippy::too_many_arguments)]
pub fn record(
    backend: &str,
    scenario: Option<&str>,
    metric: &str,
    direction: Direction,
    unit: &str,
    samples: Vec<f64>,
    workload: Workload,
    provenance: Provenance,
) -> Result<BaselineRecord, BaselineError> {
    let median = crate::stats::median(&samples)
        .map_err(|e| BaselineError::Invalid(format!("{backend} {metric}: {e}")))?;
    Ok(BaselineRecord {
        backend: backend.into(),
        scenario: scenario.map(str::to_string),
        metric: metric.into(),
        direction,
        unit: unit.into(),
        samples,
        median,
        workload,
        provenance,
    })
}

fn io(path: &Path, source: std::io::Error) -> BaselineError {
    BaselineError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The JSON value of a file; `None` when it does not exist.
fn read_json(path: &Path) -> Result<Option<serde_json::Value>, BaselineError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| BaselineError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("not JSON ({e})"),
        })
}

/// Check `schema_version` first (a newer file may have fields this version does not know), then parse.
fn parse_versioned<T: serde::de::DeserializeOwned>(
    path: &Path,
    value: serde_json::Value,
) -> Result<T, BaselineError> {
    let corrupt = |detail: String| BaselineError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let version = value
        .get("schema_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| corrupt("no integer `schema_version`".into()))?;
    if version > SCHEMA_VERSION {
        return Err(BaselineError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < SCHEMA_VERSION {
        return Err(BaselineError::OlderSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
}

fn validate_records(path: &Path, records: &[BaselineRecord]) -> Result<(), BaselineError> {
    let corrupt = |detail: String| BaselineError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let mut seen = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        let what = format!("record {i} ({})", r.label());
        if let Some(j) = seen.insert(r.key(), i) {
            return Err(corrupt(format!("{what} repeats record {j}")));
        }
        if r.samples.is_empty() {
            return Err(corrupt(format!("{what} has no samples")));
        }
        if let Some(x) = r.samples.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
            return Err(corrupt(format!(
                "{what} has the sample {x}; every sample must be a positive number"
            )));
        }
        let median =
            crate::stats::median(&r.samples).map_err(|e| corrupt(format!("{what}: {e}")))?;
        if (median - r.median).abs() > 1e-9 * median.abs().max(1.0) {
            return Err(corrupt(format!(
                "{what} states median {} but its samples have median {median}",
                r.median
            )));
        }
    }
    Ok(())
}

/// Write pretty JSON to a temp file in the same directory, flush it to disk, rename it over `path`.
/// A reader sees the old file or the new one, never a partial one.
pub fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), BaselineError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut json =
        serde_json::to_vec_pretty(value).map_err(|e| BaselineError::Invalid(e.to_string()))?;
    json.push(b'\n');
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .suffix(".json")
        .tempfile_in(dir)
        .map_err(|e| io(dir, e))?;
    tmp.write_all(&json).map_err(|e| io(tmp.path(), e))?;
    tmp.as_file().sync_all().map_err(|e| io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| io(path, e.error))?;
    Ok(())
}
