//! infergate: claims about LLM inference backends, turned into gated tests.
//!
//! Data flows one way: gate file ([`gate`]) → runner ([`runner`]) → backend ([`backend`]) →
//! measurement ([`measure`]) → statistics ([`stats`]) → verdict ([`gate::verdict`]) → run directory
//! ([`record`]) → report ([`report`]).

pub mod accuracy;
pub mod assets;
pub mod backend;
pub mod baseline;
pub mod cli;
pub mod cost;
pub mod energy;
pub mod error;
pub mod gate;
pub mod host;
pub mod id;
pub mod jsonl;
pub mod manifest;
pub mod measure;
pub mod model;
pub mod paired;
pub mod pins;
pub mod progress;
pub mod record;
pub mod report;
pub mod roofline;
pub mod runner;
pub mod stats;
pub mod workload;

/// Generated from `proto/onnx.proto` by `build.rs`.
#[allow(clippy::all, missing_docs)]
pub mod onnx_proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
