//! 1. Compiles ONNX's own schema (`proto/onnx.proto`, copied verbatim from the PyPI `onnx==1.20.1`
//!    wheel) into Rust types with prost; protox is a pure-Rust protobuf compiler, so no `protoc`.
//! 2. Records the resolved versions of this crate's dependencies (cargo_metadata) for the manifest.
//! 3. With feature `torch`: an rpath to libtorch's lib dir (from torch-sys's `DEP_TCH_LIBTORCH_LIB`) on
//!    this crate's binaries and tests, so they run without LD_LIBRARY_PATH; tch's own rpath does not
//!    reach downstream binaries. On another machine, LD_LIBRARY_PATH still wins over this RUNPATH.
use std::collections::BTreeMap;

fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let descriptors =
        protox::compile(["proto/onnx.proto"], ["proto"]).expect("proto/onnx.proto must compile");
    prost_build::Config::new()
        .compile_fds(descriptors)
        .expect("prost code generation for onnx.proto");

    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let versions = dependency_versions().unwrap_or_else(|e| {
        println!("cargo:warning=crate versions for the manifest unavailable: {e}");
        BTreeMap::new()
    });
    std::fs::write(
        out.join("crate_versions.json"),
        serde_json::to_string_pretty(&versions).expect("json"),
    )
    .expect("write crate_versions.json");
    libtorch_rpath();
}

/// Feature `torch`: link libtorch's lib dir into the RUNPATH of binaries and tests, and record it.
fn libtorch_rpath() {
    if std::env::var_os("CARGO_FEATURE_TORCH").is_none() {
        return;
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(dir) => {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
            println!("cargo:rustc-env=INFERGATE_LIBTORCH_LIB={dir}");
        }
        Err(_) => println!(
            "cargo:warning=feature `torch`: torch-sys did not report DEP_TCH_LIBTORCH_LIB; binaries need LD_LIBRARY_PATH=$LIBTORCH/lib"
        ),
    }
}

/// Direct dependencies of this crate → resolved version.
fn dependency_versions() -> Result<BTreeMap<String, String>, String> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?;
    let mut cmd = cargo_metadata::MetadataCommand::new();
    if let Ok(cargo) = std::env::var("CARGO") {
        cmd.cargo_path(cargo);
    }
    let meta = cmd
        .manifest_path(format!("{manifest_dir}/Cargo.toml"))
        .other_options(vec![
            "--offline".into(),
            "--filter-platform".into(),
            std::env::var("TARGET").map_err(|e| e.to_string())?,
        ])
        .exec()
        .map_err(|e| e.to_string())?;
    let root = meta.root_package().ok_or("no root package")?;
    let resolve = meta.resolve.as_ref().ok_or("no resolve graph")?;
    let node = resolve
        .nodes
        .iter()
        .find(|n| n.id == root.id)
        .ok_or("root not in resolve graph")?;
    let mut versions = BTreeMap::new();
    for dep in &node.deps {
        if let Some(pkg) = meta.packages.iter().find(|p| p.id == dep.pkg) {
            versions.insert(pkg.name.to_string(), pkg.version.to_string());
        }
    }
    versions.insert(root.name.to_string(), root.version.to_string());
    Ok(versions)
}
