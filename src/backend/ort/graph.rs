//! What the exported ONNX graph holds, read from the file (weights are external, so only the graph
//! is parsed): parameters, bytes a decode step reads, op counts.

use std::collections::BTreeMap;
use std::path::Path;

use crate::backend::MemoryTraffic;
use crate::model::LlamaConfig;

/// The graph of the ONNX file at `path` (`None` if it cannot be read or decoded).
fn read_graph(path: &Path) -> Option<crate::onnx_proto::GraphProto> {
    use prost::Message;
    let bytes = std::fs::read(path).ok()?;
    crate::onnx_proto::ModelProto::decode(bytes.as_slice())
        .ok()?
        .graph
}

/// Parameters in the weights of the graph the session loaded: plain weight initializers
/// (`model.*`, `lm_head.*`) by element count, `MatMulNBits` weights by their `N·K` attributes; a
/// quantized copy of a tied head (`*tied_to*`) is the embedding again and is not counted twice.
pub fn onnx_weight_parameter_count(model_path: &Path) -> Option<u64> {
    let graph = read_graph(model_path)?;
    // A deploy 4-bit node reads `[x, block sums of x]` (model::onnx_quant::q4_1_deploy): its K
    // includes the block-sum columns, which are corrections, not parameters.
    let producer: std::collections::HashMap<&str, &crate::onnx_proto::NodeProto> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let block_sum_columns = |input: &str| -> i64 {
        let sums = producer
            .get(input)
            .filter(|n| n.op_type.as_deref() == Some("Concat"))
            .and_then(|concat| producer.get(concat.input.get(1)?.as_str()))
            .filter(|n| n.op_type.as_deref() == Some("MatMul"))
            .and_then(|matmul| matmul.input.get(1))
            .filter(|m| m.starts_with("const_block_sums_"));
        sums.and_then(|m| {
            graph
                .initializer
                .iter()
                .find(|t| t.name.as_ref() == Some(m))
        })
        .and_then(|t| t.dims.get(1).copied())
        .unwrap_or(0)
    };
    let mut quantized_inputs = std::collections::HashSet::new();
    let mut count = 0u64;
    for node in graph
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("MatMulNBits"))
    {
        let attr = |name: &str| {
            node.attribute
                .iter()
                .find(|a| a.name.as_deref() == Some(name))
                .and_then(|a| a.i)
        };
        quantized_inputs.extend(node.input.iter().cloned());
        if !node
            .input
            .first()
            .is_some_and(|_| node.input.get(1).is_some_and(|b| b.contains("tied_to")))
        {
            let k = attr("K")? - node.input.first().map_or(0, |x| block_sum_columns(x));
            count += (attr("N")? * k).max(0) as u64;
        }
    }
    count += graph
        .initializer
        .iter()
        .filter(|t| {
            t.name.as_deref().is_some_and(|n| {
                (n.starts_with("model.") || n.starts_with("lm_head."))
                    && !quantized_inputs.contains(n)
            })
        })
        .map(|t| t.dims.iter().product::<i64>().max(0) as u64)
        .sum::<u64>();
    Some(count)
}

/// What one decode step of the exported decoder reads ([`MemoryTraffic`]), from the graph the session
/// loads: every initializer in its stored type (a `MatMulNBits` weight as its blocks, scales and
/// zero points), except that one consumed only by `Gather` (the embedding table) counts one row.
/// The KV cache holds keys and values of every layer in the activation type (`kv_elem_bytes`).
pub fn onnx_memory_traffic(
    model_path: &Path,
    config: &LlamaConfig,
    kv_elem_bytes: u64,
) -> Option<MemoryTraffic> {
    use crate::onnx_proto::tensor_proto::DataType;
    let graph = read_graph(model_path)?;
    let mut gather_only: BTreeMap<&str, bool> = BTreeMap::new();
    for node in &graph.node {
        for (i, input) in node.input.iter().enumerate() {
            let gathered = node.op_type.as_deref() == Some("Gather") && i == 0;
            gather_only
                .entry(input.as_str())
                .and_modify(|g| *g &= gathered)
                .or_insert(gathered);
        }
    }
    let mut weight_bytes = 0u64;
    for t in &graph.initializer {
        let elem = match DataType::try_from(t.data_type.unwrap_or(0)).ok()? {
            DataType::Float | DataType::Int32 | DataType::Uint32 => 4,
            DataType::Float16 | DataType::Bfloat16 | DataType::Int16 | DataType::Uint16 => 2,
            DataType::Int64 | DataType::Uint64 | DataType::Double => 8,
            _ => 1,
        };
        let dims: Vec<u64> = t.dims.iter().map(|&d| d.max(0) as u64).collect();
        let total = dims.iter().product::<u64>() * elem;
        let name = t.name.as_deref().unwrap_or_default();
        weight_bytes += match (gather_only.get(name), dims.first()) {
            (Some(true), Some(&rows)) if rows > 0 => total / rows,
            _ => total,
        };
    }
    Some(MemoryTraffic {
        weight_bytes_per_token: weight_bytes,
        kv_bytes_per_position: 2
            * (config.n_layers * config.n_kv_heads * config.head_dim()) as u64
            * kv_elem_bytes,
    })
}

/// Op type → count of an ONNX file's graph (weights are external, so this reads only the graph).
pub fn graph_op_histogram(path: &Path) -> Option<BTreeMap<String, usize>> {
    let graph = read_graph(path)?;
    let mut h = BTreeMap::new();
    for n in &graph.node {
        *h.entry(n.op_type.clone().unwrap_or_default()).or_insert(0) += 1;
    }
    Some(h)
}
