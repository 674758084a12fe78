//! GGUF reader: metadata, tensor directory, and tensors as f32 (dequantized by [`super::ggml`]).
//!
//! Hand-written because no maintained crate reads GGUF without pulling in an inference engine
//! (candle-core does, at the cost of its whole tensor stack). Format: ggml's `docs/gguf.md`, version 2 and 3.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::ggml::{dequantize, GgmlType};
use crate::error::ModelError;

const GGUF_MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// One metadata value (GGUF's `gguf_metadata_value_t`).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// Any integer type as u64 (negative values refuse).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// A tensor's directory entry. `dims[0]` is the fastest-varying (contiguous) dimension, as in ggml.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset relative to the start of the tensor data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn element_count(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Shape in row-major order (slowest first), i.e. `dims` reversed: a `[in, out]` ggml matrix is `(out, in)`.
    pub fn shape_row_major(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
    fn byte_len(&self) -> Option<u64> {
        let (block, bytes) = self.ggml_type.block_layout()?;
        let n = self.element_count();
        if !n.is_multiple_of(block as u64) {
            return None;
        }
        Some(n / block as u64 * bytes as u64)
    }
}

/// A memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    data_start: usize,
    map: Mmap,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| ModelError::Gguf {
                path: self.path.to_path_buf(),
                detail: format!("truncated: needed {n} bytes at offset {}", self.pos),
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], ModelError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }
    fn u8(&mut self) -> Result<u8, ModelError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ModelError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, ModelError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, ModelError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn string(&mut self) -> Result<String, ModelError> {
        let len = self.u64()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.bad("string is not UTF-8"))
    }
    fn bad(&self, detail: &str) -> ModelError {
        ModelError::Gguf {
            path: self.path.to_path_buf(),
            detail: format!("{detail} (offset {})", self.pos),
        }
    }
    fn value(&mut self, type_id: u32, depth: usize) -> Result<MetaValue, ModelError> {
        Ok(match type_id {
            0 => MetaValue::U8(self.u8()?),
            1 => MetaValue::I8(self.u8()? as i8),
            2 => MetaValue::U16(self.u16()?),
            3 => MetaValue::I16(self.u16()? as i16),
            4 => MetaValue::U32(self.u32()?),
            5 => MetaValue::I32(self.u32()? as i32),
            6 => MetaValue::F32(f32::from_le_bytes(self.array()?)),
            7 => MetaValue::Bool(self.u8()? != 0),
            8 => MetaValue::String(self.string()?),
            9 => {
                if depth > 4 {
                    return Err(self.bad("arrays nested deeper than 4"));
                }
                let elem_type = self.u32()?;
                let len = self.u64()? as usize;
                // Each element takes at least one byte: a length beyond the file is corrupt.
                if len > self.bytes.len() - self.pos {
                    return Err(self.bad("array length exceeds file size"));
                }
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(self.value(elem_type, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64()?),
            11 => MetaValue::I64(self.u64()? as i64),
            12 => MetaValue::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(self.bad(&format!("unknown metadata value type {other}"))),
        })
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let file = File::open(path).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        // SAFETY: the file is opened read-only and this process never writes to it; a concurrent
        // writer from another process would be a misuse of the cache directory.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::parse(path, map)
    }

    fn parse(path: &Path, map: Mmap) -> Result<Self, ModelError> {
        let mut c = Cursor {
            bytes: &map,
            pos: 0,
            path,
        };
        if c.take(4)? != GGUF_MAGIC {
            return Err(ModelError::Gguf {
                path: path.to_path_buf(),
                detail: "not a GGUF file (bad magic)".into(),
            });
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(c.bad(&format!(
                "unsupported GGUF version {version} (this reader knows 2 and 3)"
            )));
        }
        let tensor_count = c.u64()? as usize;
        let kv_count = c.u64()? as usize;
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = c.string()?;
            let t = c.u32()?;
            let v = c.value(t, 0)?;
            metadata.insert(key, v);
        }
        let mut tensors = Vec::with_capacity(tensor_count.min(1 << 16));
        for _ in 0..tensor_count {
            let name = c.string()?;
            let n_dims = c.u32()? as usize;
            if n_dims > 8 {
                return Err(c.bad(&format!("tensor {name} has {n_dims} dims")));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(c.u64()?);
            }
            let ggml_type = GgmlType::from_u32(c.u32()?);
            let offset = c.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(MetaValue::as_u64)
            .unwrap_or(DEFAULT_ALIGNMENT)
            .max(1);
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let data_start = data_start as usize;
        for t in &tensors {
            if let Some(len) = t.byte_len() {
                let end = data_start as u64 + t.offset + len;
                if end > map.len() as u64 {
                    return Err(ModelError::Gguf {
                        path: path.to_path_buf(),
                        detail: format!("tensor {} extends past the end of the file", t.name),
                    });
                }
            }
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            data_start,
            map,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo, ModelError> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
            })
    }

    /// The tensor's stored bytes (still quantized).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<&[u8], ModelError> {
        let len = info.byte_len().ok_or_else(|| self.unsupported(info))? as usize;
        let start = self.data_start + info.offset as usize;
        Ok(&self.map[start..start + len])
    }

    fn unsupported(&self, info: &TensorInfo) -> ModelError {
        ModelError::UnsupportedTensorType {
            name: info.name.clone(),
            ggml_type: info.ggml_type.name(),
            supported: GgmlType::supported_list(),
        }
    }

    /// Dequantize a tensor to f32 in ggml element order (dims[0] fastest).
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>, ModelError> {
        let info = self.tensor_info(name)?;
        let bytes = self.tensor_bytes(info)?;
        dequantize(info.ggml_type, bytes).ok_or_else(|| self.unsupported(info))
    }

    /// The type most of the 2-D tensors' elements are stored in (e.g. Q4_K for a Q4_K_M file).
    pub fn dominant_matrix_type(&self) -> GgmlType {
        let mut by_type: BTreeMap<u32, u64> = BTreeMap::new();
        for t in self.tensors.iter().filter(|t| t.dims.len() == 2) {
            *by_type.entry(t.ggml_type.to_u32()).or_insert(0) += t.element_count();
        }
        by_type
            .into_iter()
            .max_by_key(|&(_, n)| n)
            .map_or(GgmlType::F32, |(t, _)| GgmlType::from_u32(t))
    }

    /// Count of tensors per ggml type, e.g. to state "210 Q4_1, 1 Q8_0, 61 F32".
    pub fn type_histogram(&self) -> BTreeMap<String, usize> {
        let mut h = BTreeMap::new();
        for t in &self.tensors {
            *h.entry(t.ggml_type.name()).or_insert(0) += 1;
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsupported_type_is_named_in_the_error() {
        let info = TensorInfo {
            name: "blk.0.attn_q.weight".into(),
            dims: vec![32, 1],
            ggml_type: GgmlType::from_u32(20),
            offset: 0,
        };
        assert_eq!(info.ggml_type.name(), "IQ4_NL (ggml type 20)");
        assert!(dequantize(info.ggml_type, &[0; 18]).is_none());
        let err = ModelError::UnsupportedTensorType {
            name: info.name.clone(),
            ggml_type: info.ggml_type.name(),
            supported: GgmlType::supported_list(),
        }
        .to_string();
        assert!(
            err.contains("IQ4_NL") && err.contains("Q6_K") && err.contains("attn_q"),
            "{err}"
        );
    }

    #[test]
    fn truncated_and_foreign_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gguf");
        std::fs::write(&p, b"GGUF\x03\x00\x00\x00\xff\xff").unwrap();
        assert!(matches!(GgufFile::open(&p), Err(ModelError::Gguf { .. })));
        std::fs::write(&p, b"PK\x03\x04 this is a zip").unwrap();
        let err = GgufFile::open(&p).unwrap_err().to_string();
        assert!(err.contains("bad magic"), "{err}");
    }
}
