//! GGUF reader: metadata, tensor directory, and dequantization of the tensor types LLaMA-family
//! GGUFs ship with (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K), each a transcription
//! of ggml's own `dequantize_row_*` (`ggml/src/ggml-quants.c`) and checked against llama.cpp's output
//! (tests/dequant_agreement.rs).
//!
//! Hand-written because no maintained crate reads GGUF without pulling in an inference engine
//! (candle-core does, at the cost of its whole tensor stack). Format: ggml's `docs/gguf.md`, version 2 and 3.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use half::f16;
use memmap2::Mmap;

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

/// The ggml tensor types this reader dequantizes. Others are kept by number (and named, where
/// ggml names them) and refused on dequantize with an error naming the type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[allow(non_camel_case_types)] // ggml's names
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4_K,
    Q5_K,
    Q6_K,
    Other(u32),
}

/// Elements per super-block of the K-quants.
const QK_K: usize = 256;

impl GgmlType {
    /// Every type [`dequantize`] implements.
    pub const SUPPORTED: [GgmlType; 11] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ];

    pub fn from_u32(v: u32) -> Self {
        match v {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    /// ggml's type number (`enum ggml_type`).
    pub fn to_u32(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::BF16 => 30,
            GgmlType::Other(v) => v,
        }
    }

    /// ggml's name for the type (`ggml_type_name`), e.g. `Q4_K`, `IQ4_NL`.
    pub fn name(self) -> String {
        let other = |v: u32| match v {
            9 => "Q8_1",
            10 => "Q2_K",
            11 => "Q3_K",
            15 => "Q8_K",
            16 => "IQ2_XXS",
            17 => "IQ2_XS",
            18 => "IQ3_XXS",
            19 => "IQ1_S",
            20 => "IQ4_NL",
            21 => "IQ3_S",
            22 => "IQ2_S",
            23 => "IQ4_XS",
            24 => "I8",
            25 => "I16",
            26 => "I32",
            27 => "I64",
            28 => "F64",
            29 => "IQ1_M",
            34 => "TQ1_0",
            35 => "TQ2_0",
            39 => "MXFP4",
            _ => "unknown",
        };
        match self {
            GgmlType::Other(v) => format!("{} (ggml type {v})", other(v)),
            t => format!("{t:?}"),
        }
    }

    /// (elements per block, bytes per block)
    pub fn block_layout(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::BF16 => Some((1, 2)),
            GgmlType::Q4_0 => Some((32, 18)),
            GgmlType::Q4_1 => Some((32, 20)),
            GgmlType::Q5_0 => Some((32, 22)),
            GgmlType::Q5_1 => Some((32, 24)),
            GgmlType::Q8_0 => Some((32, 34)),
            GgmlType::Q4_K => Some((QK_K, 144)),
            GgmlType::Q5_K => Some((QK_K, 176)),
            GgmlType::Q6_K => Some((QK_K, 210)),
            GgmlType::Other(_) => None,
        }
    }

    /// The supported types, as a list for messages.
    pub fn supported_list() -> String {
        Self::SUPPORTED
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", ")
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

/// Dequantize raw ggml blocks. Returns `None` for types this reader does not implement.
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Option<Vec<f32>> {
    let (block, size) = ty.block_layout()?;
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / size * block);
    match ty {
        GgmlType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        GgmlType::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        GgmlType::Q8_0 => {
            for b in bytes.chunks_exact(size) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                out.extend(b[2..].iter().map(|&q| d * (q as i8) as f32));
            }
        }
        GgmlType::Q4_0 => {
            for b in bytes.chunks_exact(size) {
                let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                let qs = &b[2..];
                out.extend(qs.iter().map(|&q| d * ((q & 0x0f) as f32 - 8.0)));
                out.extend(qs.iter().map(|&q| d * ((q >> 4) as f32 - 8.0)));
            }
        }
        GgmlType::Q4_1 => {
            for b in bytes.chunks_exact(size) {
                let q = Q4_1Block::parse(b);
                out.extend_from_slice(&q.dequantize());
            }
        }
        GgmlType::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            // d (and m for Q5_1), then qh: bit j is the 5th bit of element j; qs as in Q4_0.
            let with_min = ty == GgmlType::Q5_1;
            for b in bytes.chunks_exact(size) {
                let d = f16_at(b, 0);
                let (m, rest) = if with_min {
                    (f16_at(b, 2), &b[4..])
                } else {
                    (0.0, &b[2..])
                };
                let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let qs = &rest[4..20];
                let mut block = [0f32; 32];
                for j in 0..16 {
                    let h0 = ((qh >> j) << 4) & 0x10;
                    let h1 = (qh >> (j + 12)) & 0x10;
                    let x0 = ((qs[j] & 0x0f) as u32 | h0) as f32;
                    let x1 = ((qs[j] >> 4) as u32 | h1) as f32;
                    if with_min {
                        block[j] = x0 * d + m;
                        block[j + 16] = x1 * d + m;
                    } else {
                        block[j] = (x0 - 16.0) * d;
                        block[j + 16] = (x1 - 16.0) * d;
                    }
                }
                out.extend_from_slice(&block);
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            // d, dmin, 12 bytes of 6-bit scales/mins for 8 sub-blocks of 32, (Q5_K: 32 bytes qh),
            // 128 bytes of nibbles: each 32 bytes hold sub-blocks 2i (low) and 2i+1 (high).
            let five = ty == GgmlType::Q5_K;
            for b in bytes.chunks_exact(size) {
                let d = f16_at(b, 0);
                let dmin = f16_at(b, 2);
                let scales = &b[4..16];
                let (qh, mut ql) = if five {
                    (&b[16..48], &b[48..176])
                } else {
                    (&b[0..0], &b[16..144])
                };
                let (mut u1, mut u2) = (1u8, 2u8);
                for pair in 0..4 {
                    let (sc0, m0) = scale_min_k4(2 * pair, scales);
                    let (sc1, m1) = scale_min_k4(2 * pair + 1, scales);
                    let (d1, min1) = (d * sc0 as f32, dmin * m0 as f32);
                    let (d2, min2) = (d * sc1 as f32, dmin * m1 as f32);
                    for l in 0..32 {
                        let high = if five && qh[l] & u1 != 0 { 16.0 } else { 0.0 };
                        out.push(d1 * ((ql[l] & 0x0f) as f32 + high) - min1);
                    }
                    for l in 0..32 {
                        let high = if five && qh[l] & u2 != 0 { 16.0 } else { 0.0 };
                        out.push(d2 * ((ql[l] >> 4) as f32 + high) - min2);
                    }
                    ql = &ql[32..];
                    u1 <<= 2;
                    u2 <<= 2;
                }
            }
        }
        GgmlType::Q6_K => {
            // ql (128 bytes: low nibbles), qh (64 bytes: 2 high bits), 16 signed 8-bit scales, d.
            for b in bytes.chunks_exact(size) {
                let d = f16_at(b, 208);
                for half in 0..2 {
                    let ql = &b[half * 64..half * 64 + 64];
                    let qh = &b[128 + half * 32..128 + half * 32 + 32];
                    let sc = &b[192 + half * 8..192 + half * 8 + 8];
                    let mut y = [0f32; 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                        y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                        y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                        y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                    }
                    out.extend_from_slice(&y);
                }
            }
        }
        GgmlType::Other(_) => return None,
    }
    Some(out)
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// One Q4_1 block: 32 weights `x = d * q + m`, q in 0..16. Element i < 16 is the low nibble of byte i,
/// element i >= 16 the high nibble of byte i - 16 (ggml's layout).
#[derive(Debug, Clone, Copy)]
pub struct Q4_1Block {
    pub d: f32,
    pub m: f32,
    pub q: [u8; 32],
}

impl Q4_1Block {
    pub fn parse(b: &[u8]) -> Self {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
        let mut q = [0u8; 32];
        for (i, &byte) in b[4..20].iter().enumerate() {
            q[i] = byte & 0x0f;
            q[i + 16] = byte >> 4;
        }
        Q4_1Block { d, m, q }
    }
    pub fn dequantize(&self) -> [f32; 32] {
        let mut out = [0f32; 32];
        for (o, &q) in out.iter_mut().zip(&self.q) {
            *o = self.d * q as f32 + self.m;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_1_block_layout_matches_ggml() {
        // d = 0.5, m = -1.0; byte i holds element i (low) and i+16 (high).
        let mut b = vec![];
        b.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        for i in 0..16u8 {
            b.push(i | ((15 - i) << 4));
        }
        let v = dequantize(GgmlType::Q4_1, &b).unwrap();
        assert_eq!(v.len(), 32);
        assert_eq!(v[0], -1.0);
        assert_eq!(v[3], 0.5);
        assert_eq!(v[16], 0.5 * 15.0 - 1.0);
        assert_eq!(v[31], -1.0);
    }

    #[test]
    fn q8_0_dequantizes_signed() {
        let mut b = vec![];
        b.extend_from_slice(&f16::from_f32(0.25).to_le_bytes());
        for i in 0..32i32 {
            b.push((i - 16) as i8 as u8);
        }
        let v = dequantize(GgmlType::Q8_0, &b).unwrap();
        assert_eq!(v[0], -4.0);
        assert_eq!(v[31], 15.0 * 0.25);
    }

    #[test]
    fn q4_k_sub_block_scales_mins_and_nibbles_follow_ggml() {
        // d = 1, dmin = 0.5; every sub-block scale 2 and min 1 (6-bit packing of get_scale_min_k4).
        let mut b = vec![];
        b.extend_from_slice(&f16::from_f32(1.0).to_le_bytes());
        b.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b.extend_from_slice(&[2, 2, 2, 2, 1, 1, 1, 1, 0x12, 0x12, 0x12, 0x12]);
        for l in 0..128u8 {
            b.push((l % 16) | ((15 - l % 16) << 4));
        }
        let v = dequantize(GgmlType::Q4_K, &b).unwrap();
        assert_eq!(v.len(), 256);
        for pair in 0..4 {
            for l in 0..32 {
                let q = (l % 16) as f32;
                assert_eq!(v[pair * 64 + l], 2.0 * q - 0.5, "low nibble, pair {pair}");
                assert_eq!(v[pair * 64 + 32 + l], 2.0 * (15.0 - q) - 0.5, "high nibble");
            }
        }
    }

    #[test]
    fn q5_0_takes_the_fifth_bit_from_qh() {
        let mut b = vec![];
        b.extend_from_slice(&f16::from_f32(1.0).to_le_bytes());
        // 5th bit set for elements 0 and 16 only.
        b.extend_from_slice(&(1u32 | (1 << 16)).to_le_bytes());
        b.extend(std::iter::repeat_n(0u8, 16));
        let v = dequantize(GgmlType::Q5_0, &b).unwrap();
        assert_eq!((v[0], v[1], v[16], v[17]), (0.0, -16.0, 0.0, -16.0));
    }

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
