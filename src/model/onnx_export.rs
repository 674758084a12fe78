//! Writes a LLaMA decoder with KV cache as an ONNX model in the standard exported-decoder form:
//! inputs `input_ids`, `attention_mask`, `position_ids`, `past_key_values.N.key/value`;
//! outputs `logits`, `present.N.key/value` (shapes `[batch, kv_heads, seq, head_dim]`).
//!
//! The graph uses plain ONNX ops (opset 17), so ONNX Runtime's optimizer has real work to do
//! (RMSNorm → SimplifiedLayerNormalization, MatMul+Add fusions) and that work is visible as evidence.
//! Protobuf types come from ONNX's own `onnx.proto` (see build.rs). Weights go to one external-data
//! file, so the `.onnx` stays small and ONNX Runtime can map the weights.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use super::gguf::GgufFile;
use super::onnx_graph::{
    attr_float, attr_int, attr_ints, rms_norm, rope, Dim, GraphBuilder, WeightFormat, MS_DOMAIN,
};
use super::onnx_quant;
use super::tensors::{LayerPart, TensorId, TensorSource};
use super::weights::{hf_row_order, layer_tensor_name};
use crate::error::ModelError;
use crate::onnx_proto::{
    tensor_proto::DataType, ModelProto, OperatorSetIdProto, StringStringEntryProto,
};

/// Bumped whenever the emitted graph changes, so cached exports are rebuilt.
pub const EXPORTER_VERSION: u32 = 4;
const OPSET: i64 = 17;

/// Names of the graph's inputs and outputs for layer `i`.
pub fn past_key_name(i: usize) -> String {
    format!("past_key_values.{i}.key")
}
pub fn past_value_name(i: usize) -> String {
    format!("past_key_values.{i}.value")
}
pub fn present_key_name(i: usize) -> String {
    format!("present.{i}.key")
}
pub fn present_value_name(i: usize) -> String {
    format!("present.{i}.value")
}

/// What was written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportedModel {
    pub model_path: PathBuf,
    pub data_path: PathBuf,
    pub node_count: usize,
    pub initializer_bytes: u64,
}

/// Export `weights` to `<dir>/model.onnx` + `<dir>/model.onnx.data`.
/// `gguf` supplies the raw quantized blocks for [`WeightFormat::GgufQ4_1`] (ignored otherwise).
///
/// Streams: each tensor is asked of `weights` when its node is built, converted and written to the
/// external-data file, and dropped, so the exporter holds about three copies of the largest tensor
/// (the fp32 tensor, its transpose, the bytes being written), never the model. `&LlamaWeights` is a
/// [`TensorSource`] too.
pub fn export(
    weights: &dyn TensorSource,
    format: WeightFormat,
    gguf: Option<&GgufFile>,
    dir: &Path,
    metadata: &[(&str, String)],
) -> Result<ExportedModel, ModelError> {
    let model_path = dir.join("model.onnx");
    let data_file = "model.onnx.data";
    let data_path = dir.join(data_file);
    let err = |detail: String| ModelError::Export {
        path: model_path.clone(),
        detail,
    };
    fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let data = BufWriter::new(File::create(&data_path).map_err(|e| err(e.to_string()))?);
    let mut g = GraphBuilder::new(data, data_file, format);
    if format.needs_gguf_blocks() && gguf.is_none() {
        return Err(err(format!(
            "the {} format needs the GGUF's raw blocks",
            format.label()
        )));
    }
    build_decoder(&mut g, weights, gguf).map_err(|e| err(e.to_string()))?;
    let (graph, initializer_bytes) = g.finish().map_err(|e| err(e.to_string()))?;
    let node_count = graph.node.len();
    let mut props: Vec<StringStringEntryProto> = metadata
        .iter()
        .map(|(k, v)| StringStringEntryProto {
            key: Some(k.to_string()),
            value: Some(v.clone()),
        })
        .collect();
    props.push(StringStringEntryProto {
        key: Some("infergate.exporter_version".into()),
        value: Some(EXPORTER_VERSION.to_string()),
    });
    props.push(StringStringEntryProto {
        key: Some("infergate.weight_format".into()),
        value: Some(format.label().into()),
    });
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![
            OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(OPSET),
            },
            OperatorSetIdProto {
                domain: Some(MS_DOMAIN.into()),
                version: Some(1),
            },
        ],
        producer_name: Some("infergate".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        metadata_props: props,
        ..Default::default()
    };
    fs::write(&model_path, model.encode_to_vec()).map_err(|e| err(e.to_string()))?;
    Ok(ExportedModel {
        model_path,
        data_path,
        node_count,
        initializer_bytes,
    })
}

/// A tensor of the source, as an I/O error on failure (the builder's error type).
fn fetch_matrix(w: &dyn TensorSource, id: TensorId) -> std::io::Result<ndarray::Array2<f32>> {
    w.matrix(id)
        .map_err(|e| std::io::Error::other(e.to_string()))
}
fn fetch_vector(w: &dyn TensorSource, id: TensorId) -> std::io::Result<ndarray::Array1<f32>> {
    w.vector(id)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

fn build_decoder<W: Write>(
    g: &mut GraphBuilder<W>,
    w: &dyn TensorSource,
    gguf: Option<&GgufFile>,
) -> std::io::Result<()> {
    let c = w.config();
    let act = g.format.activation_type();
    let format = g.format;
    let q4 = |name: &str, order: Option<&[usize]>| -> std::io::Result<Option<Vec<u8>>> {
        match (format, gguf) {
            (f, Some(gguf)) if f.needs_gguf_blocks() => onnx_quant::q4_1_rows(gguf, name, order)
                .map(Some)
                .map_err(std::io::Error::other),
            _ => Ok(None),
        }
    };
    let q_order = hf_row_order(c.n_heads, c.head_dim());
    let k_order = hf_row_order(c.n_kv_heads, c.head_dim());
    let (d, hd, n_kv, n_heads) = (c.d_model, c.head_dim(), c.n_kv_heads, c.n_heads);
    let groups = n_heads / n_kv;

    g.input(
        "input_ids",
        DataType::Int64,
        &[Dim::Symbolic("batch"), Dim::Symbolic("sequence")],
    );
    g.input(
        "attention_mask",
        DataType::Int64,
        &[Dim::Symbolic("batch"), Dim::Symbolic("total_sequence")],
    );
    g.input(
        "position_ids",
        DataType::Int64,
        &[Dim::Symbolic("batch"), Dim::Symbolic("sequence")],
    );
    for i in 0..c.n_layers {
        for name in [past_key_name(i), past_value_name(i)] {
            g.input(
                &name,
                act,
                &[
                    Dim::Symbolic("batch"),
                    Dim::Fixed(n_kv),
                    Dim::Symbolic("past_sequence"),
                    Dim::Fixed(hd),
                ],
            );
        }
    }

    // Constants.
    let two = g.f32_scalar("const_two", 2.0)?;
    let eps = g.f32_scalar("const_rms_eps", c.rms_norm_eps)?;
    let scale = g.f32_scalar("const_attn_scale", 1.0 / (hd as f32).sqrt())?;
    let zero_f = g.f32_scalar("const_zero_f", 0.0)?;
    let mask_value = if act == DataType::Float16 {
        half::f16::MIN.to_f32()
    } else {
        f32::MIN
    };
    let neg_big = g.f32_scalar("const_mask_value", mask_value)?;
    let halves = g.i64_const("const_rope_halves", &[hd as i64 / 2, hd as i64 / 2])?;
    let axis0 = g.i64_const("const_axis0", &[0])?;
    let axis1 = g.i64_const("const_axis1", &[1])?;
    let axis2 = g.i64_const("const_axis2", &[2])?;
    let axis_last = g.i64_const("const_axis_last", &[-1])?;
    let axes_123 = g.i64_const("const_axes_123", &[1, 2, 3])?;
    let one_i = g.initializer("const_one_i", &[], DataType::Int64, &1i64.to_le_bytes())?;
    let idx1 = g.initializer("const_idx1", &[], DataType::Int64, &1i64.to_le_bytes())?;
    let idx2 = g.initializer("const_idx2", &[], DataType::Int64, &2i64.to_le_bytes())?;
    let zero_i = g.initializer("const_zero_i", &[], DataType::Int64, &0i64.to_le_bytes())?;
    let inv_freq = g.f32_tensor("rope_inv_freq", &[hd / 2], &c.rope_inv_freq())?;
    let q_shape = g.i64_const("shape_q", &[0, 0, n_kv as i64, groups as i64, hd as i64])?;
    let kv_shape = g.i64_const("shape_kv", &[0, 0, n_kv as i64, hd as i64])?;
    let merge_shape = g.i64_const("shape_merge", &[0, 0, d as i64])?;

    // RoPE tables from position_ids: [B, S, hd] → unsqueezed for q ([B,1,1,S,hd]) and k ([B,1,S,hd]).
    let pos = g.op("Cast", &["position_ids"], vec![attr_int("to", act as i64)]);
    let pos = g.op("Unsqueeze", &[&pos, &axis_last], vec![]);
    let freqs = g.op("Mul", &[&pos, &inv_freq], vec![]);
    let emb = g.op("Concat", &[&freqs, &freqs], vec![attr_int("axis", -1)]);
    let (cos, sin) = (g.op("Cos", &[&emb], vec![]), g.op("Sin", &[&emb], vec![]));
    let cos_k = g.op("Unsqueeze", &[&cos, &axis1], vec![]);
    let sin_k = g.op("Unsqueeze", &[&sin, &axis1], vec![]);
    let cos_q = g.op("Unsqueeze", &[&cos_k, &axis1], vec![]);
    let sin_q = g.op("Unsqueeze", &[&sin_k, &axis1], vec![]);

    // Additive mask [B,1,1,S,T]: key j visible to query i iff j ≤ past + i and attention_mask[b, j] = 1.
    let mask_shape = g.op("Shape", &["attention_mask"], vec![]);
    let total = g.op("Gather", &[&mask_shape, &idx1], vec![attr_int("axis", 0)]);
    let past_shape = g.op("Shape", &[&past_key_name(0)], vec![]);
    let past = g.op("Gather", &[&past_shape, &idx2], vec![attr_int("axis", 0)]);
    let key_idx = g.op("Range", &[&zero_i, &total, &one_i], vec![]);
    let query_pos = g.op("Range", &[&past, &total, &one_i], vec![]);
    let key_row = g.op("Unsqueeze", &[&key_idx, &axis0], vec![]);
    let query_col = g.op("Unsqueeze", &[&query_pos, &axis1], vec![]);
    let causal = g.op("LessOrEqual", &[&key_row, &query_col], vec![]);
    let padding = g.op(
        "Cast",
        &["attention_mask"],
        vec![attr_int("to", DataType::Bool as i64)],
    );
    let padding = g.op("Unsqueeze", &[&padding, &axes_123], vec![]); // [B,1,1,1,T]
    let allowed = g.op("And", &[&causal, &padding], vec![]);
    let mask = g.op("Where", &[&allowed, &zero_f, &neg_big], vec![]);

    let embed = g.linear_weight_free(
        "model.embed_tokens.weight",
        fetch_matrix(w, TensorId::TokenEmbd)?.view(),
    )?;
    let mut x = g.op("Gather", &[&embed, "input_ids"], vec![attr_int("axis", 0)]);

    for i in 0..c.n_layers {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        let part = |part: LayerPart| TensorId::Layer(i, part);
        let attn_norm = g.vector(
            &p("input_layernorm.weight"),
            fetch_vector(w, part(LayerPart::AttnNorm))?.view(),
        )?;
        let ffn_norm = g.vector(
            &p("post_attention_layernorm.weight"),
            fetch_vector(w, part(LayerPart::FfnNorm))?.view(),
        )?;
        let gguf_name = |part: &str| layer_tensor_name(i, part);
        // q/k/v biases (Qwen2): added after the projection.
        let bias = |g: &mut GraphBuilder<W>, y: String, name: &str, b: LayerPart| {
            if !c.attention_bias {
                return Ok(y);
            }
            let b = g.vector(&p(name), fetch_vector(w, part(b))?.view())?;
            Ok::<_, std::io::Error>(g.op("Add", &[&y, &b], vec![]))
        };

        let h = rms_norm(g, &x, &attn_norm, &eps, &two);
        let raw = q4(&gguf_name("attn_q"), Some(&q_order))?;
        let wq = fetch_matrix(w, part(LayerPart::Q))?;
        let q = g.linear(&h, &p("self_attn.q_proj.weight"), wq.view(), raw)?;
        let q = bias(g, q, "self_attn.q_proj.bias", LayerPart::QBias)?;
        let raw = q4(&gguf_name("attn_k"), Some(&k_order))?;
        let wk = fetch_matrix(w, part(LayerPart::K))?;
        let k = g.linear(&h, &p("self_attn.k_proj.weight"), wk.view(), raw)?;
        let k = bias(g, k, "self_attn.k_proj.bias", LayerPart::KBias)?;
        let raw = q4(&gguf_name("attn_v"), None)?;
        let wv = fetch_matrix(w, part(LayerPart::V))?;
        let v = g.linear(&h, &p("self_attn.v_proj.weight"), wv.view(), raw)?;
        let v = bias(g, v, "self_attn.v_proj.bias", LayerPart::VBias)?;
        drop((wq, wk, wv));
        let q = g.op("Reshape", &[&q, &q_shape], vec![]); // [B,S,kv,g,hd]
        let q = g.op(
            "Transpose",
            &[&q],
            vec![attr_ints("perm", &[0, 2, 3, 1, 4])],
        ); // [B,kv,g,S,hd]
        let k = g.op("Reshape", &[&k, &kv_shape], vec![]);
        let k = g.op("Transpose", &[&k], vec![attr_ints("perm", &[0, 2, 1, 3])]); // [B,kv,S,hd]
        let v = g.op("Reshape", &[&v, &kv_shape], vec![]);
        let v = g.op("Transpose", &[&v], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let q = rope(g, &q, &cos_q, &sin_q, &halves);
        let k = rope(g, &k, &cos_k, &sin_k, &halves);
        let (present_k, present_v) = (present_key_name(i), present_value_name(i));
        g.op_named(
            "Concat",
            &[&past_key_name(i), &k],
            &[&present_k],
            vec![attr_int("axis", 2)],
        );
        g.op_named(
            "Concat",
            &[&past_value_name(i), &v],
            &[&present_v],
            vec![attr_int("axis", 2)],
        );
        // Grouped-query attention by broadcasting: q [B,kv,g,S,hd] · kᵀ [B,kv,1,hd,T].
        let q = g.op("Mul", &[&q, &scale], vec![]);
        let k5 = g.op("Unsqueeze", &[&present_k, &axis2], vec![]);
        let kt = g.op(
            "Transpose",
            &[&k5],
            vec![attr_ints("perm", &[0, 1, 2, 4, 3])],
        );
        let scores = g.op("MatMul", &[&q, &kt], vec![]);
        let scores = g.op("Add", &[&scores, &mask], vec![]);
        let probs = g.op("Softmax", &[&scores], vec![attr_int("axis", -1)]);
        let v5 = g.op("Unsqueeze", &[&present_v, &axis2], vec![]);
        let attn = g.op("MatMul", &[&probs, &v5], vec![]); // [B,kv,g,S,hd]
        let attn = g.op(
            "Transpose",
            &[&attn],
            vec![attr_ints("perm", &[0, 3, 1, 2, 4])],
        );
        let attn = g.op("Reshape", &[&attn, &merge_shape], vec![]);
        let raw = q4(&gguf_name("attn_output"), None)?;
        let wo = fetch_matrix(w, part(LayerPart::O))?;
        let o = g.linear(&attn, &p("self_attn.o_proj.weight"), wo.view(), raw)?;
        let hres = g.op("Add", &[&x, &o], vec![]);

        let h2 = rms_norm(g, &hres, &ffn_norm, &eps, &two);
        let raw = q4(&gguf_name("ffn_gate"), None)?;
        let w_gate = fetch_matrix(w, part(LayerPart::Gate))?;
        let gate = g.linear(&h2, &p("mlp.gate_proj.weight"), w_gate.view(), raw)?;
        drop(w_gate);
        let raw = q4(&gguf_name("ffn_up"), None)?;
        let w_up = fetch_matrix(w, part(LayerPart::Up))?;
        let up = g.linear(&h2, &p("mlp.up_proj.weight"), w_up.view(), raw)?;
        drop(w_up);
        let sig = g.op("Sigmoid", &[&gate], vec![]);
        let silu = g.op("Mul", &[&gate, &sig], vec![]);
        let gated = g.op("Mul", &[&silu, &up], vec![]);
        let raw = q4(&gguf_name("ffn_down"), None)?;
        let w_down = fetch_matrix(w, part(LayerPart::Down))?;
        let down = g.linear(&gated, &p("mlp.down_proj.weight"), w_down.view(), raw)?;
        x = g.op("Add", &[&hres, &down], vec![]);
    }

    let final_norm = g.vector(
        "model.norm.weight",
        fetch_vector(w, TensorId::FinalNorm)?.view(),
    )?;
    let x = rms_norm(g, &x, &final_norm, &eps, &two);
    let logits = match g.format {
        // x · Eᵀ through Gemm(transB=1) over a flattened x, so a tied head shares the embedding.
        WeightFormat::Fp32 | WeightFormat::Fp16 => {
            let head = if c.tied_embeddings {
                embed
            } else {
                g.linear_weight_free("lm_head.weight", fetch_matrix(w, TensorId::LmHead)?.view())?
            };
            let flat_shape = g.i64_const("shape_flat", &[-1, d as i64])?;
            let vocab = g.i64_const("const_vocab", &[c.vocab_size as i64])?;
            let flat = g.op("Reshape", &[&x, &flat_shape], vec![]);
            let logits = g.op(
                "Gemm",
                &[&flat, &head],
                vec![attr_int("transB", 1), attr_float("alpha", 1.0)],
            );
            let ids_shape = g.op("Shape", &["input_ids"], vec![]);
            let out_shape = g.op("Concat", &[&ids_shape, &vocab], vec![attr_int("axis", 0)]);
            g.op("Reshape", &[&logits, &out_shape], vec![])
        }
        // A quantized copy of the head; a tied head is named so the parameter count skips it.
        WeightFormat::Int8 | WeightFormat::Q4 | WeightFormat::GgufQ4_1 => {
            let (name, id, gguf_name) = if c.tied_embeddings {
                (
                    "lm_head.tied_to_embed_tokens",
                    TensorId::TokenEmbd,
                    "token_embd.weight",
                )
            } else {
                ("lm_head.weight", TensorId::LmHead, "output.weight")
            };
            let matrix = fetch_matrix(w, id)?;
            // The GGUF's own 8-bit head blocks where it has them (exact); else 8-bit blocks of the
            // fp32 head.
            let exact = match gguf.filter(|_| g.format.needs_gguf_blocks()) {
                Some(f) => onnx_quant::q8_0(f, gguf_name).map_err(std::io::Error::other)?,
                None => None,
            };
            let head = match exact {
                Some(h) => h,
                None => onnx_quant::int8_symmetric(matrix.view()).map_err(std::io::Error::other)?,
            };
            g.nbits_linear(&x, name, &head)?
        }
    };
    if act == DataType::Float16 {
        g.op_named(
            "Cast",
            &[&logits],
            &["logits"],
            vec![attr_int("to", DataType::Float as i64)],
        );
    } else {
        g.op_named("Identity", &[&logits], &["logits"], vec![]);
    }

    g.output(
        "logits",
        DataType::Float,
        &[
            Dim::Symbolic("batch"),
            Dim::Symbolic("sequence"),
            Dim::Fixed(c.vocab_size),
        ],
    );
    for i in 0..c.n_layers {
        for name in [present_key_name(i), present_value_name(i)] {
            g.output(
                &name,
                act,
                &[
                    Dim::Symbolic("batch"),
                    Dim::Fixed(n_kv),
                    Dim::Symbolic("total_sequence"),
                    Dim::Fixed(hd),
                ],
            );
        }
    }
    Ok(())
}
