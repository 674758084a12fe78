//! The graph builder the exporter writes with ([`GraphBuilder`]): the weight formats
//! ([`WeightFormat`]) and how a linear layer is stored in each, nodes with unique names,
//! initializers streamed to the external-data file, ONNX proto helpers, and the op patterns ORT
//! fuses (RMSNorm, RoPE).

use std::io::Write;

use ndarray::{ArrayView1, ArrayView2};

use super::onnx_external;
use super::onnx_quant::{self, AccuracyLevel, NBitsWeight, ZeroPoints};
use crate::onnx_proto::{
    attribute_proto::AttributeType, tensor_proto::DataLocation, tensor_proto::DataType,
    tensor_shape_proto, type_proto, AttributeProto, GraphProto, NodeProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

const INLINE_LIMIT: usize = 1024;
pub(super) const MS_DOMAIN: &str = "com.microsoft";

/// How the weight matrices are stored in the exported graph. The quantized forms and why they were
/// chosen are in [`super::onnx_quant`] and docs/performance.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightFormat {
    /// Every weight as fp32 (dequantized from the GGUF).
    Fp32,
    /// Deploy form, 8 bits: linear layers and the head as symmetric 8-bit blocks of 32
    /// (`MatMulNBits` bits=8, no zero points, scale = absmax/127 per block) quantized from the fp32
    /// weights, `accuracy_level = 4` (int8 activations: ONNX Runtime's integer kernels).
    Int8,
    /// Deploy form, 4 bits: linear layers as `MatMulNBits` bits=4 refitted from the GGUF's own Q4_1
    /// blocks to packed `uint8` zero points, the head from its Q8_0 blocks (8-bit, exact), both with
    /// `accuracy_level = 4`.
    Q4,
    /// Bit-exact Q4_1 (the accuracy reference of the 4-bit form, not a deploy form): `MatMulNBits`
    /// bits=4 with scale d and fp32 zero point −m/d, so `x = d·q + m` exactly; the head from its Q8_0
    /// blocks; `accuracy_level` unset. ONNX Runtime runs fp32 zero points on its slow path.
    GgufQ4_1,
    /// Every weight and activation in fp16 (KV cache fp16; logits cast back to fp32).
    Fp16,
}

impl WeightFormat {
    pub fn label(self) -> &'static str {
        match self {
            WeightFormat::Fp32 => "fp32",
            WeightFormat::Int8 => "int8",
            WeightFormat::Q4 => "q4",
            WeightFormat::GgufQ4_1 => "q4_1",
            WeightFormat::Fp16 => "fp16",
        }
    }
    /// Element type of activations and of the KV cache.
    pub fn activation_type(self) -> DataType {
        match self {
            WeightFormat::Fp16 => DataType::Float16,
            _ => DataType::Float,
        }
    }
    /// Whether the export reads the GGUF's quantized blocks (not only the fp32 weights).
    pub fn needs_gguf_blocks(self) -> bool {
        matches!(self, WeightFormat::Q4 | WeightFormat::GgufQ4_1)
    }
    /// `MatMulNBits`'s accuracy level for this format's quantized nodes.
    fn accuracy_level(self) -> AccuracyLevel {
        match self {
            WeightFormat::Int8 | WeightFormat::Q4 => AccuracyLevel::Int8,
            _ => AccuracyLevel::Unset,
        }
    }
}

/// Builds graph nodes with unique names and streams large initializers to the external-data file.
pub(super) struct GraphBuilder<W: Write> {
    graph: GraphProto,
    pub(super) format: WeightFormat,
    data: W,
    data_file: String,
    data_offset: u64,
    counter: usize,
    /// Activation name → its `[x, block sums]` extension (see [`GraphBuilder::with_block_sums`]).
    block_sums: std::collections::HashMap<String, String>,
}

impl<W: Write> GraphBuilder<W> {
    pub(super) fn new(data: W, data_file: &str, format: WeightFormat) -> Self {
        GraphBuilder {
            graph: GraphProto {
                name: Some("llama_decoder".into()),
                ..Default::default()
            },
            format,
            data,
            data_file: data_file.into(),
            data_offset: 0,
            counter: 0,
            block_sums: Default::default(),
        }
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Add a node with one output; returns the output name.
    pub(super) fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.op_named(op, inputs, &[&out], attrs);
        out
    }

    pub(super) fn op_named(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) {
        let name = self.fresh(op);
        let domain = (op == "MatMulNBits").then(|| MS_DOMAIN.to_string());
        self.graph.node.push(NodeProto {
            op_type: Some(op.into()),
            domain,
            name: Some(name),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        });
    }

    pub(super) fn initializer(
        &mut self,
        name: &str,
        dims: &[usize],
        data_type: DataType,
        bytes: &[u8],
    ) -> std::io::Result<String> {
        let mut t = TensorProto {
            name: Some(name.into()),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(data_type as i32),
            ..Default::default()
        };
        if bytes.len() <= INLINE_LIMIT {
            t.raw_data = Some(bytes.to_vec());
            self.graph.initializer.push(t);
            return Ok(name.into());
        }
        self.data_offset = onnx_external::pad_to_alignment(&mut self.data, self.data_offset)?;
        self.data.write_all(bytes)?;
        self.push_external(t, bytes.len() as u64);
        Ok(name.into())
    }

    /// Record `t` as stored at the current data offset with `len` bytes, and advance the offset.
    fn push_external(&mut self, mut t: TensorProto, len: u64) {
        t.data_location = Some(DataLocation::External as i32);
        t.external_data = vec![
            kv("location", &self.data_file),
            kv("offset", &self.data_offset.to_string()),
            kv("length", &len.to_string()),
        ];
        self.data_offset += len;
        self.graph.initializer.push(t);
    }

    /// A float initializer (fp32 or fp16) converted chunk by chunk into the external-data file.
    fn float_initializer(
        &mut self,
        name: &str,
        dims: &[usize],
        values: &[f32],
        data_type: DataType,
    ) -> std::io::Result<String> {
        let as_f16 = data_type == DataType::Float16;
        let len = values.len() * if as_f16 { 2 } else { 4 };
        if len <= INLINE_LIMIT {
            let bytes = onnx_external::float_bytes(values, as_f16);
            return self.initializer(name, dims, data_type, &bytes);
        }
        let t = TensorProto {
            name: Some(name.into()),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(data_type as i32),
            ..Default::default()
        };
        self.data_offset = onnx_external::pad_to_alignment(&mut self.data, self.data_offset)?;
        let written = onnx_external::write_floats(&mut self.data, values, as_f16)?;
        self.push_external(t, written);
        Ok(name.into())
    }

    /// A float tensor in the activation type (fp32, or fp16 for the fp16 format).
    pub(super) fn f32_tensor(
        &mut self,
        name: &str,
        dims: &[usize],
        values: &[f32],
    ) -> std::io::Result<String> {
        let ty = self.format.activation_type();
        self.float_initializer(name, dims, values, ty)
    }

    /// A float tensor that stays fp32 whatever the format (quantization scales).
    fn exact_f32_tensor(
        &mut self,
        name: &str,
        dims: &[usize],
        values: &[f32],
    ) -> std::io::Result<String> {
        self.float_initializer(name, dims, values, DataType::Float)
    }

    pub(super) fn i64_const(&mut self, name: &str, values: &[i64]) -> std::io::Result<String> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, &[values.len()], DataType::Int64, &bytes)
    }

    pub(super) fn f32_scalar(&mut self, name: &str, v: f32) -> std::io::Result<String> {
        self.f32_tensor(name, &[], &[v])
    }

    /// `x · Wᵀ` for `W` = `[out, in]`, in the builder's weight format: MatMul over a stored `Wᵀ`,
    /// or MatMulNBits over blocks (`q4` = the GGUF's raw Q4_1 bytes of W, rows in HF order).
    pub(super) fn linear(
        &mut self,
        x: &str,
        name: &str,
        w: ArrayView2<f32>,
        q4: Option<Vec<u8>>,
    ) -> std::io::Result<String> {
        let (n, k) = w.dim();
        let quantized = match (self.format, q4) {
            (WeightFormat::Q4, Some(raw)) => onnx_quant::q4_1_deploy(&raw, n, k),
            (WeightFormat::GgufQ4_1, Some(raw)) => onnx_quant::q4_1_exact(&raw, n, k),
            (WeightFormat::Int8 | WeightFormat::Q4 | WeightFormat::GgufQ4_1, _) => {
                onnx_quant::int8_symmetric(w)
            }
            (WeightFormat::Fp32 | WeightFormat::Fp16, _) => {
                let t = w.t().as_standard_layout().to_owned();
                let wt = self.f32_tensor(
                    &format!("{name}_t"),
                    &[k, n],
                    t.as_slice().expect("standard layout"),
                )?;
                return Ok(self.op("MatMul", &[x, &wt], vec![]));
            }
        };
        let quantized = quantized.map_err(std::io::Error::other)?;
        self.nbits_linear(x, name, &quantized)
    }

    /// One `MatMulNBits` node over `w`'s blocks, scales and zero points (if any), at the format's
    /// accuracy level.
    pub(super) fn nbits_linear(
        &mut self,
        x: &str,
        name: &str,
        w: &NBitsWeight,
    ) -> std::io::Result<String> {
        let extended;
        let x = if w.block_sum_columns > 0 {
            extended = self.with_block_sums(x, w.input_k(), w.block_sum_columns)?;
            extended.as_str()
        } else {
            x
        };
        let b = self.initializer(
            &format!("{name}.qweight"),
            &w.blob_dims(),
            DataType::Uint8,
            &w.blob,
        )?;
        let s = self.exact_f32_tensor(&format!("{name}.scales"), &w.scale_dims(), &w.scales)?;
        let mut inputs = vec![x.to_string(), b, s];
        if let Some(dims) = w.zero_point_dims() {
            let zp_name = format!("{name}.zero_points");
            inputs.push(match &w.zero_points {
                ZeroPoints::Packed(z) => self.initializer(&zp_name, &dims, DataType::Uint8, z)?,
                ZeroPoints::Float(z) => self.exact_f32_tensor(&zp_name, &dims, z)?,
                ZeroPoints::Symmetric => unreachable!("symmetric blocks have no zero-point shape"),
            });
        }
        let attrs = vec![
            attr_int("K", w.k as i64),
            attr_int("N", w.n as i64),
            attr_int("bits", w.bits as i64),
            attr_int("block_size", onnx_quant::BLOCK as i64),
            attr_int("accuracy_level", self.format.accuracy_level().attribute()),
        ];
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.op("MatMulNBits", &inputs, attrs))
    }

    /// `[x, x·S]`: `x` followed by its sums over each block of 32 (`S` from
    /// [`onnx_quant::block_sum_matrix`], one initializer per shape), built once per `x` and shared by
    /// every node that reads it (q, k and v share one; gate and up another).
    fn with_block_sums(&mut self, x: &str, k: usize, columns: usize) -> std::io::Result<String> {
        if let Some(done) = self.block_sums.get(x) {
            return Ok(done.clone());
        }
        let matrix = format!("const_block_sums_{k}x{columns}");
        if !self
            .graph
            .initializer
            .iter()
            .any(|t| t.name.as_deref() == Some(&matrix))
        {
            let m = onnx_quant::block_sum_matrix(k, columns);
            self.exact_f32_tensor(&matrix, &[k, columns], &m)?;
        }
        let sums = self.op("MatMul", &[x, &matrix], vec![]);
        let extended = self.op("Concat", &[x, &sums], vec![attr_int("axis", -1)]);
        self.block_sums.insert(x.to_string(), extended.clone());
        Ok(extended)
    }

    pub(super) fn vector(&mut self, name: &str, v: ArrayView1<f32>) -> std::io::Result<String> {
        let standard = v.as_standard_layout();
        self.f32_tensor(name, &[v.len()], standard.as_slice().expect("contiguous"))
    }

    pub(super) fn input(&mut self, name: &str, elem: DataType, dims: &[Dim]) {
        self.graph.input.push(value_info(name, elem, dims));
    }

    pub(super) fn output(&mut self, name: &str, elem: DataType, dims: &[Dim]) {
        self.graph.output.push(value_info(name, elem, dims));
    }

    pub(super) fn finish(mut self) -> std::io::Result<(GraphProto, u64)> {
        self.data.flush()?;
        Ok((self.graph, self.data_offset))
    }
}

pub(super) enum Dim {
    Fixed(usize),
    Symbolic(&'static str),
}

fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                Dim::Symbolic(s) => tensor_shape_proto::dimension::Value::DimParam(s.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem as i32),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn kv(k: &str, v: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    }
}

pub(super) fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}
pub(super) fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}
pub(super) fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

/// RMSNorm as primitive ops (Pow, ReduceMean, Add, Sqrt, Div, Mul): the pattern ORT fuses.
pub(super) fn rms_norm<W: Write>(
    g: &mut GraphBuilder<W>,
    x: &str,
    weight: &str,
    eps: &str,
    two: &str,
) -> String {
    let sq = g.op("Pow", &[x, two], vec![]);
    let mean = g.op(
        "ReduceMean",
        &[&sq],
        vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)],
    );
    let plus = g.op("Add", &[&mean, eps], vec![]);
    let root = g.op("Sqrt", &[&plus], vec![]);
    let normed = g.op("Div", &[x, &root], vec![]);
    g.op("Mul", &[&normed, weight], vec![])
}

/// Hugging Face rotate-half RoPE: `x·cos + rotate_half(x)·sin`, with `rotate_half(x) = [-x₂, x₁]`.
pub(super) fn rope<W: Write>(
    g: &mut GraphBuilder<W>,
    x: &str,
    cos: &str,
    sin: &str,
    halves: &str,
) -> String {
    let (x1, x2) = (g.fresh("rope_x1"), g.fresh("rope_x2"));
    g.op_named(
        "Split",
        &[x, halves],
        &[&x1, &x2],
        vec![attr_int("axis", -1)],
    );
    let neg = g.op("Neg", &[&x2], vec![]);
    let rotated = g.op("Concat", &[&neg, &x1], vec![attr_int("axis", -1)]);
    let a = g.op("Mul", &[x, cos], vec![]);
    let b = g.op("Mul", &[&rotated, sin], vec![]);
    g.op("Add", &[&a, &b], vec![])
}

impl<W: Write> GraphBuilder<W> {
    /// A `[rows, cols]` matrix stored as is (no transpose).
    pub(super) fn linear_weight_free(
        &mut self,
        name: &str,
        m: ArrayView2<f32>,
    ) -> std::io::Result<String> {
        // Borrowed when already row-major (no copy of the largest tensor).
        let standard = m.as_standard_layout();
        let (rows, cols) = standard.dim();
        self.f32_tensor(
            name,
            &[rows, cols],
            standard.as_slice().expect("standard layout"),
        )
    }
}
