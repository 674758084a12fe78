//! Runtime evidence of what an ONNX Runtime session executes: where every node ran (from the
//! session's profile) and what the graph optimizer fused (from the optimized graph it wrote).

use std::collections::BTreeMap;

use super::decode::Decoder;
use super::graph::graph_op_histogram;
use super::runtime::runtime_providers;
use super::session::EvidenceSetup;
use crate::backend::evidence::{is_compute_op, Evidence, GraphOptimization};
use crate::error::BackendError;

/// Runs one short forward, ends profiling and reads back where every node ran and what the
/// optimizer wrote (a session opened with `collect_evidence`, whose `setup` this is).
pub(super) fn collect(
    decoder: &mut Decoder,
    setup: &EvidenceSetup,
) -> Result<Evidence, BackendError> {
    let id = decoder.id.clone();
    let err = |e: String| BackendError::run(&id, "evidence", e);
    decoder.forward(&[1, 2, 3, 4], 0, None, "evidence")?;
    let profile = decoder
        .session
        .end_profiling()
        .map_err(|e| err(e.to_string()))?;
    let profile_text = std::fs::read_to_string(&profile)
        .or_else(|_| std::fs::read_to_string(setup.dir.path().join(&profile)))
        .map_err(|e| err(format!("cannot read the profile {profile}: {e}")))?;
    let (executed_on, compute_executed_on) = parse_profile(&profile_text).map_err(err)?;
    let exported = graph_op_histogram(&setup.exported_model)
        .ok_or_else(|| err("cannot read the exported graph".into()))?;
    let optimized_path = setup.dir.path().join("optimized.onnx");
    let graph_optimization =
        graph_op_histogram(&optimized_path).map(|optimized| GraphOptimization {
            level_requested: format!("{:?}", setup.opt_level).to_lowercase(),
            exported_nodes: exported.values().sum(),
            optimized_nodes: optimized.values().sum(),
            fused_ops: optimized
                .into_iter()
                .filter(|(op, _)| !exported.contains_key(op))
                .collect(),
        });
    let mut notes = Vec::new();
    if graph_optimization.is_none() {
        notes.push(format!(
            "no optimized graph was written to {}",
            optimized_path.display()
        ));
    }
    Ok(Evidence {
        requested: setup.requested.clone(),
        runtime_providers: runtime_providers(),
        executed_on,
        compute_executed_on,
        output_dtypes: Default::default(),
        graph_optimization,
        cuda_graph: None,
        notes,
    })
}

/// Node counts per provider from an ONNX Runtime profile (JSON array of trace events; node events
/// have `cat = "Node"` and `args.provider`, `args.op_name`): all nodes, and heavy compute nodes.
#[allow(clippy::type_complexity)]
pub fn parse_profile(
    text: &str,
) -> Result<(BTreeMap<String, usize>, BTreeMap<String, usize>), String> {
    let events: Vec<serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| format!("profile is not a JSON event array: {e}"))?;
    let mut seen = std::collections::BTreeSet::new();
    let (mut all, mut compute) = (BTreeMap::new(), BTreeMap::new());
    for e in &events {
        if e["cat"] != "Node" {
            continue;
        }
        let (Some(name), Some(provider)) = (e["name"].as_str(), e["args"]["provider"].as_str())
        else {
            continue;
        };
        let node = name
            .trim_end_matches("_kernel_time")
            .trim_end_matches("_fence_before")
            .trim_end_matches("_fence_after");
        if !seen.insert(node.to_string()) {
            continue;
        }
        *all.entry(provider.to_string()).or_insert(0) += 1;
        if e["args"]["op_name"].as_str().is_some_and(is_compute_op) {
            *compute.entry(provider.to_string()).or_insert(0) += 1;
        }
    }
    if all.is_empty() {
        return Err("the profile holds no node events".into());
    }
    Ok((all, compute))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_events_are_counted_per_provider_once_per_node() {
        let text = r#"[
            {"cat":"Session","name":"model_run","args":{}},
            {"cat":"Node","name":"MatMul_1_kernel_time","args":{"op_name":"MatMul","provider":"CUDAExecutionProvider"}},
            {"cat":"Node","name":"MatMul_1_kernel_time","args":{"op_name":"MatMul","provider":"CUDAExecutionProvider"}},
            {"cat":"Node","name":"Shape_2_kernel_time","args":{"op_name":"Shape","provider":"CPUExecutionProvider"}}
        ]"#;
        let (all, compute) = parse_profile(text).unwrap();
        assert_eq!(all["CUDAExecutionProvider"], 1);
        assert_eq!(all["CPUExecutionProvider"], 1);
        assert_eq!(compute.get("CPUExecutionProvider"), None);
        assert!(parse_profile("[]").is_err());
    }
}
