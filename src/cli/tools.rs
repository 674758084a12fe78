//! `infergate fetch`, `prompts` and `build-llama-cpp`: the pinned assets, the scenarios' prompt
//! token ids, and llama.cpp builds.

use std::process::ExitCode;

/// `build-llama-cpp [--sdist PIN] [--cuda]`: the pinned sdist (or the one named) in the CPU or
/// CUDA flavor; every build lands in its own cache directory (`llama_cpp::build_key`).
pub fn build_llama_cpp(sdist: Option<&str>, cuda: bool) -> ExitCode {
    use crate::assets::llama_cpp;
    let flavor = if cuda {
        match llama_cpp::Flavor::cuda_from_env() {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        llama_cpp::Flavor::Cpu
    };
    let built = match sdist {
        None => llama_cpp::ensure_flavor_built(&flavor, &mut std::io::stderr())
            .map_err(|e| e.to_string()),
        Some(text) => match crate::pins::parse(text) {
            Ok(crate::pins::Artifact::Sdist {
                version, sha256, ..
            }) => llama_cpp::ensure_built_sdist(
                &llama_cpp::Sdist { version, sha256 },
                &flavor,
                &mut std::io::stderr(),
            )
            .map_err(|e| e.to_string()),
            Ok(other) => Err(format!("{} is not a llama.cpp sdist", other.requirement())),
            Err(e) => Err(e.to_string()),
        },
    };
    match built {
        Ok(b) => {
            println!("llama.cpp {} → {}", b.version, b.bin_dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn prompts() -> ExitCode {
    let encode = match crate::runner::load_encoder() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = serde_json::Map::new();
    for s in crate::workload::SCENARIOS {
        match crate::workload::prompt_ids(&s, &encode) {
            Ok(ids) => {
                out.insert(s.name.to_string(), serde_json::json!(ids));
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{}", serde_json::Value::Object(out));
    ExitCode::SUCCESS
}

pub fn fetch() -> ExitCode {
    let mut code = ExitCode::SUCCESS;
    for asset in crate::assets::ALL {
        match crate::assets::ensure(&asset) {
            Ok(p) => println!("ok     {} → {}", asset.name, p.display()),
            Err(e) => {
                println!("FAILED {e}");
                code = ExitCode::FAILURE;
            }
        }
    }
    // Every declared model: fetched (pinned), hash-checked (local) or derived (recipe).
    match crate::model::catalog::registry() {
        Ok(r) => {
            for m in r.models() {
                match m.gguf_path() {
                    Ok(p) => println!("ok     model {} → {}", m.name, p.display()),
                    Err(e) => {
                        println!("FAILED {e}");
                        code = ExitCode::FAILURE;
                    }
                }
            }
        }
        Err(e) => {
            println!("FAILED {e}");
            code = ExitCode::FAILURE;
        }
    }
    code
}
