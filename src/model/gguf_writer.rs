//! GGUF writer (version 3, little-endian), the mirror of [`super::gguf`]: metadata as
//! [`MetaValue`]s, tensors as raw ggml blocks. Used to write synthetic models (seeded random weights
//! of any LLaMA-family shape, in F32/F16/BF16) that llama.cpp runs and `llama-quantize` turns into
//! every other tensor type.
//!
//! Hand-written for the same reason the reader is: the format is small (ggml's `docs/gguf.md`), and
//! the crates that write it either pull in an inference engine or carry their own metadata model.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use half::{bf16, f16};

use super::config::Architecture;
use super::ggml::GgmlType;
use super::gguf::{GgufFile, MetaValue};
use super::tensors::{hf_row_order, LayerPart, TensorId, TensorSource};
use crate::error::ModelError;

const ALIGNMENT: u64 = 32;

/// One tensor to write: its ggml dims (`dims[0]` fastest) and raw bytes of `ggml_type`.
pub struct TensorData {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    pub bytes: Vec<u8>,
}

fn type_id(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::String(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.push(*x as u8),
        MetaValue::U16(x) => out.extend(x.to_le_bytes()),
        MetaValue::I16(x) => out.extend(x.to_le_bytes()),
        MetaValue::U32(x) => out.extend(x.to_le_bytes()),
        MetaValue::I32(x) => out.extend(x.to_le_bytes()),
        MetaValue::F32(x) => out.extend(x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(*x as u8),
        MetaValue::String(s) => put_str(out, s),
        MetaValue::Array(items) => {
            let elem = items.first().map_or(0, type_id);
            out.extend(elem.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, i);
            }
        }
        MetaValue::U64(x) => out.extend(x.to_le_bytes()),
        MetaValue::I64(x) => out.extend(x.to_le_bytes()),
        MetaValue::F64(x) => out.extend(x.to_le_bytes()),
    }
}

/// Write a GGUF file with `metadata` (in order) and `tensors` (data aligned to 32 bytes).
pub fn write_gguf(
    path: &Path,
    metadata: &[(String, MetaValue)],
    tensors: &[TensorData],
) -> Result<(), ModelError> {
    let io = |e: std::io::Error| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut head = Vec::new();
    head.extend(b"GGUF");
    head.extend(3u32.to_le_bytes());
    head.extend((tensors.len() as u64).to_le_bytes());
    head.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut head, k);
        head.extend(type_id(v).to_le_bytes());
        put_value(&mut head, v);
    }
    let mut offset = 0u64;
    for t in tensors {
        put_str(&mut head, &t.name);
        head.extend((t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            head.extend(d.to_le_bytes());
        }
        head.extend(t.ggml_type.to_u32().to_le_bytes());
        head.extend(offset.to_le_bytes());
        offset = (offset + t.bytes.len() as u64).next_multiple_of(ALIGNMENT);
    }
    let pad = |len: u64| vec![0u8; (len.next_multiple_of(ALIGNMENT) - len) as usize];
    let mut out = BufWriter::new(File::create(path).map_err(io)?);
    out.write_all(&head).map_err(io)?;
    out.write_all(&pad(head.len() as u64)).map_err(io)?;
    for t in tensors {
        out.write_all(&t.bytes).map_err(io)?;
        out.write_all(&pad(t.bytes.len() as u64)).map_err(io)?;
    }
    out.flush().map_err(io)
}

/// fp32 values as raw bytes of a float type (F32, F16 or BF16).
pub fn float_bytes(values: &[f32], ty: GgmlType) -> Result<Vec<u8>, ModelError> {
    Ok(match ty {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => values
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::BF16 => values
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
        other => {
            return Err(ModelError::Config(format!(
                "the GGUF writer stores float types only, not {}; quantize with llama-quantize",
                other.name()
            )))
        }
    })
}

/// Write the model of `source` as a GGUF in llama.cpp's layout: matrices in `ty` (a float type),
/// norms, biases and rope factors in F32, `llama` Q/K rows permuted back for ggml's RoPE, and the
/// tokenizer (every `tokenizer.*` key) copied from `tokenizer_from`, whose vocabulary size must be
/// the config's.
pub fn write_model(
    path: &Path,
    source: &dyn TensorSource,
    ty: GgmlType,
    tokenizer_from: &GgufFile,
    name: &str,
) -> Result<(), ModelError> {
    let c = source.config();
    let arch = c.arch.key();
    let u32v = |v: usize| MetaValue::U32(v as u32);
    let mut meta: Vec<(String, MetaValue)> = vec![
        (
            "general.architecture".into(),
            MetaValue::String(arch.into()),
        ),
        ("general.name".into(), MetaValue::String(name.into())),
        // llama_ftype: 0 = all F32, 1 = mostly F16, 32 = mostly BF16.
        (
            "general.file_type".into(),
            u32v(match ty {
                GgmlType::F16 => 1,
                GgmlType::BF16 => 32,
                _ => 0,
            }),
        ),
        (format!("{arch}.block_count"), u32v(c.n_layers)),
        (format!("{arch}.context_length"), u32v(c.context_length)),
        (format!("{arch}.embedding_length"), u32v(c.d_model)),
        (format!("{arch}.feed_forward_length"), u32v(c.ffn_dim)),
        (format!("{arch}.attention.head_count"), u32v(c.n_heads)),
        (
            format!("{arch}.attention.head_count_kv"),
            u32v(c.n_kv_heads),
        ),
        (
            format!("{arch}.rope.freq_base"),
            MetaValue::F32(c.rope_theta),
        ),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            MetaValue::F32(c.rms_norm_eps),
        ),
        (format!("{arch}.vocab_size"), u32v(c.vocab_size)),
    ];
    if c.rope_scaling.factor != 1.0 {
        meta.push((
            format!("{arch}.rope.scaling.type"),
            MetaValue::String("linear".into()),
        ));
        meta.push((
            format!("{arch}.rope.scaling.factor"),
            MetaValue::F32(c.rope_scaling.factor),
        ));
    }
    let mut vocab = None;
    for (k, v) in &tokenizer_from.metadata {
        if k.starts_with("tokenizer.") {
            if k == "tokenizer.ggml.tokens" {
                vocab = v.as_array().map(|a| a.len());
            }
            meta.push((k.clone(), v.clone()));
        }
    }
    if vocab != Some(c.vocab_size) {
        return Err(ModelError::Config(format!(
            "the tokenizer of {} has {vocab:?} tokens; the config's vocabulary is {}",
            tokenizer_from.path().display(),
            c.vocab_size
        )));
    }

    let q_order = hf_row_order(c.n_heads, c.head_dim());
    let k_order = hf_row_order(c.n_kv_heads, c.head_dim());
    // GGUF row order[i] holds HF row i.
    let to_gguf = |hf: Vec<f32>, cols: usize, order: &[usize]| {
        let mut out = vec![0f32; hf.len()];
        for (i, &g) in order.iter().enumerate() {
            out[g * cols..(g + 1) * cols].copy_from_slice(&hf[i * cols..(i + 1) * cols]);
        }
        out
    };
    let mut ids = vec![TensorId::TokenEmbd, TensorId::FinalNorm];
    if !c.tied_embeddings {
        ids.push(TensorId::LmHead);
    }
    for l in 0..c.n_layers {
        let mut parts = vec![
            LayerPart::AttnNorm,
            LayerPart::Q,
            LayerPart::K,
            LayerPart::V,
            LayerPart::O,
            LayerPart::FfnNorm,
            LayerPart::Gate,
            LayerPart::Up,
            LayerPart::Down,
        ];
        if c.attention_bias {
            parts.extend([LayerPart::QBias, LayerPart::KBias, LayerPart::VBias]);
        }
        ids.extend(parts.into_iter().map(|p| TensorId::Layer(l, p)));
    }
    let mut tensors = Vec::with_capacity(ids.len() + 1);
    for id in ids {
        let shape = id.shape(c);
        let mut data = source.tensor(id)?;
        let cols = if shape.len() == 2 { shape[1] } else { 1 };
        if c.arch == Architecture::Llama {
            match id {
                TensorId::Layer(_, LayerPart::Q | LayerPart::QBias) => {
                    data = to_gguf(data, cols, &q_order)
                }
                TensorId::Layer(_, LayerPart::K | LayerPart::KBias) => {
                    data = to_gguf(data, cols, &k_order)
                }
                _ => {}
            }
        }
        let tensor_ty = if shape.len() == 2 { ty } else { GgmlType::F32 };
        tensors.push(TensorData {
            name: id.gguf_name(),
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            ggml_type: tensor_ty,
            bytes: float_bytes(&data, tensor_ty)?,
        });
    }
    if let Some(ff) = &c.rope_scaling.freq_factors {
        tensors.push(TensorData {
            name: "rope_freqs.weight".into(),
            dims: vec![ff.len() as u64],
            ggml_type: GgmlType::F32,
            bytes: float_bytes(ff, GgmlType::F32)?,
        });
    }
    write_gguf(path, &meta, &tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_read_back_with_the_same_metadata_and_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.gguf");
        let meta = vec![
            (
                "general.architecture".to_string(),
                MetaValue::String("llama".into()),
            ),
            ("x.u32".to_string(), MetaValue::U32(7)),
            (
                "x.arr".to_string(),
                MetaValue::Array(vec![
                    MetaValue::String("a".into()),
                    MetaValue::String("bc".into()),
                ]),
            ),
            ("x.f".to_string(), MetaValue::F32(0.5)),
        ];
        let values: Vec<f32> = (0..6).map(|i| i as f32 * 0.25 - 0.5).collect();
        let tensors = vec![
            TensorData {
                name: "a".into(),
                dims: vec![3, 2],
                ggml_type: GgmlType::F32,
                bytes: float_bytes(&values, GgmlType::F32).unwrap(),
            },
            TensorData {
                name: "b".into(),
                dims: vec![6],
                ggml_type: GgmlType::BF16,
                bytes: float_bytes(&values, GgmlType::BF16).unwrap(),
            },
        ];
        write_gguf(&p, &meta, &tensors).unwrap();
        let g = GgufFile::open(&p).unwrap();
        for (k, v) in &meta {
            assert_eq!(g.meta(k), Some(v), "{k}");
        }
        assert_eq!(g.tensor_info("a").unwrap().shape_row_major(), vec![2, 3]);
        assert_eq!(g.tensor_f32("a").unwrap(), values);
        // These values are exact in bf16.
        assert_eq!(g.tensor_f32("b").unwrap(), values);
    }
}
