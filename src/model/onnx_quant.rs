//! Quantized weights for the ONNX export, in the forms ONNX Runtime's CPU kernels run fast.
//!
//! Every quantized linear layer becomes one `com.microsoft::MatMulNBits` node: `B` packed blocks of
//! 32 along K, one fp32 scale per block, and the zero points either absent (symmetric: ONNX Runtime
//! uses 2^(bits−1)), packed `uint8` (two 4-bit zero points per byte), or — only for the bit-exact
//! reference — fp32.
//!
//! What ONNX Runtime 1.31 does with each form on the CPU (`contrib_ops/cpu/quantization/
//! matmul_nbits.cc`; measured per op with its profiler on this repository's exports, see
//! docs/performance.md):
//!
//! - fp32 zero points (`has_unquantized_zero_point_`): the weights are never prepacked; every call
//!   dequantizes the whole matrix to fp32 and runs an sgemm over it — more memory traffic than the
//!   fp32 model itself. This is the slow path the bit-exact Q4_1 reference (`ort-cpu-q4-exact`)
//!   takes on purpose.
//! - `uint8` or absent zero points with `accuracy_level = 4`: MLAS prepacks the blocks once and runs
//!   its integer kernels (`SQNBIT_CompInt8`: the activations quantized to int8 per block of 32 on the
//!   fly, int32 accumulation — AVX-512 VNNI on this CPU). This is the deploy path of `ort-cpu-q4` and
//!   `ort-cpu-int8`.
//!
//! The GGUF's Q4_1 blocks store `x = d·q + m` with a float minimum `m`; MatMulNBits's zero point is an
//! integer, so the deploy form refits each block to `x ≈ s·(j − z)`, `z ∈ 0..16` ([`q4_1_deploy`]):
//! that refit, and the int8 activations, are the real quantization loss the accuracy gate measures.

use ndarray::ArrayView2;

use super::ggml::{GgmlType, Q4_1Block};
use super::gguf::GgufFile;

/// Block size (along K) of every `MatMulNBits` weight: GGUF's Q4_1 and Q8_0 blocks are 32 wide.
pub const BLOCK: usize = 32;

/// `MatMulNBits`'s `accuracy_level`: the compute type ONNX Runtime may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccuracyLevel {
    /// 0 (unset): fp32 activations; MLAS's fp32 kernels where it has them.
    Unset,
    /// 4: int8 activations quantized per block, int32 accumulation (`SQNBIT_CompInt8`).
    Int8,
}

impl AccuracyLevel {
    pub fn attribute(self) -> i64 {
        match self {
            AccuracyLevel::Unset => 0,
            AccuracyLevel::Int8 => 4,
        }
    }
}

/// How a block's zero point is stored.
#[derive(Debug, Clone, PartialEq)]
pub enum ZeroPoints {
    /// None stored: ONNX Runtime's default 2^(bits−1) (8 for 4 bits, 128 for 8 bits).
    Symmetric,
    /// One `uint8` per block for 8 bits; two per byte for 4 bits (block 2i in the low nibble),
    /// shape `[n, ceil(blocks·bits/8)]`.
    Packed(Vec<u8>),
    /// One fp32 per block `[n, blocks]`: exact for Q4_1, but ONNX Runtime's slow path (module doc).
    Float(Vec<f32>),
}

/// The inputs of one `MatMulNBits` node for `x · Wᵀ`, `W` = `[n, k]`.
#[derive(Debug, Clone, PartialEq)]
pub struct NBitsWeight {
    pub n: usize,
    pub k: usize,
    pub bits: u8,
    /// `[n, k/32, 32·bits/8]` bytes; 4 bits: element 2j in the low nibble of byte j.
    pub blob: Vec<u8>,
    /// `[n, k/32]`.
    pub scales: Vec<f32>,
    pub zero_points: ZeroPoints,
    /// Trailing columns of `k` that multiply the activations' block sums rather than the
    /// activations (0: none). The node's input is then `[x, x·S]`, `S` the `[k − c, c]` 0/1 matrix
    /// summing each block of 32 (zero-padded to `c` columns): see [`q4_1_deploy`].
    pub block_sum_columns: usize,
}

impl NBitsWeight {
    /// K of the activations this weight multiplies (without the block-sum columns).
    pub fn input_k(&self) -> usize {
        self.k - self.block_sum_columns
    }

    pub fn blocks_per_row(&self) -> usize {
        self.k / BLOCK
    }

    pub fn blob_dims(&self) -> [usize; 3] {
        [
            self.n,
            self.blocks_per_row(),
            BLOCK * self.bits as usize / 8,
        ]
    }

    pub fn scale_dims(&self) -> [usize; 2] {
        [self.n, self.blocks_per_row()]
    }

    /// Shape of the stored zero points (`None` when symmetric).
    pub fn zero_point_dims(&self) -> Option<[usize; 2]> {
        match self.zero_points {
            ZeroPoints::Symmetric => None,
            ZeroPoints::Packed(_) => Some([
                self.n,
                (self.blocks_per_row() * self.bits as usize).div_ceil(8),
            ]),
            ZeroPoints::Float(_) => Some([self.n, self.blocks_per_row()]),
        }
    }

    /// Bytes a forward reads: blocks, scales and zero points.
    pub fn stored_bytes(&self) -> u64 {
        let zp = match &self.zero_points {
            ZeroPoints::Symmetric => 0,
            ZeroPoints::Packed(z) => z.len(),
            ZeroPoints::Float(z) => 4 * z.len(),
        };
        (self.blob.len() + 4 * self.scales.len() + zp) as u64
    }

    /// Element `(row, col)` of `W` as MatMulNBits defines it: `scale · (q − zero_point)`.
    pub fn value(&self, row: usize, col: usize) -> f32 {
        let b = row * self.blocks_per_row() + col / BLOCK;
        let q = match self.bits {
            4 => {
                let byte = self.blob[b * BLOCK / 2 + (col % BLOCK) / 2];
                if col.is_multiple_of(2) {
                    byte & 0x0f
                } else {
                    byte >> 4
                }
            }
            _ => self.blob[b * BLOCK + col % BLOCK],
        } as f32;
        let zp = match &self.zero_points {
            ZeroPoints::Symmetric => (1u32 << (self.bits - 1)) as f32,
            ZeroPoints::Float(z) => z[b],
            ZeroPoints::Packed(z) => match self.bits {
                4 => {
                    let per_row = self.zero_point_dims().map_or(0, |d| d[1]);
                    let i = col / BLOCK;
                    let byte = z[row * per_row + i / 2];
                    (if i.is_multiple_of(2) {
                        byte & 0x0f
                    } else {
                        byte >> 4
                    }) as f32
                }
                _ => z[b] as f32,
            },
        };
        self.scales[b] * (q - zp)
    }
}

fn check_shape(raw_len: usize, block_bytes: usize, n: usize, k: usize) -> Result<(), String> {
    if !k.is_multiple_of(BLOCK) {
        return Err(format!("K = {k} is not a multiple of {BLOCK}"));
    }
    if raw_len != n * k / BLOCK * block_bytes {
        return Err(format!(
            "{raw_len} bytes of {block_bytes}-byte blocks for a {n}×{k} matrix"
        ));
    }
    Ok(())
}

/// Q4_1 blocks → 4-bit with fp32 zero points `−m/d` and scale `d`: bit-exact (`d·q + m`), the slow
/// path. The accuracy reference `ort-cpu-q4-exact` only.
pub fn q4_1_exact(raw: &[u8], n: usize, k: usize) -> Result<NBitsWeight, String> {
    check_shape(raw.len(), 20, n, k)?;
    let blocks = n * k / BLOCK;
    let mut blob = Vec::with_capacity(blocks * BLOCK / 2);
    let (mut scales, mut zps) = (Vec::with_capacity(blocks), Vec::with_capacity(blocks));
    for b in raw.chunks_exact(20) {
        let q = Q4_1Block::parse(b);
        blob.extend(q.q.chunks_exact(2).map(|p| p[0] | (p[1] << 4)));
        if q.d != 0.0 {
            scales.push(q.d);
            zps.push(-q.m / q.d);
        } else {
            // d = 0: every element is m whatever q is; x = 1·(q − (q − m)) for the block's q.
            if q.q.iter().any(|&v| v != q.q[0]) {
                return Err("a Q4_1 block with d = 0 has differing quants".into());
            }
            scales.push(1.0);
            zps.push(q.q[0] as f32 - q.m);
        }
    }
    Ok(NBitsWeight {
        n,
        k,
        bits: 4,
        blob,
        scales,
        zero_points: ZeroPoints::Float(zps),
        block_sum_columns: 0,
    })
}

/// Q4_1 blocks → the 4-bit form ONNX Runtime's integer kernels take, without losing the blocks'
/// exactness: `d·q + m = d·(q − z) + r` with the integer zero point `z = round(−m/d)` (packed `uint8`)
/// and the residual `r = m + d·z` (`|r| ≤ d/2`, one per block). The residuals ride along as extra
/// columns of the same 4-bit weight: `y = Σ_b d_b·Σ_i x_i(q_i − z_b) + Σ_b r_b·(Σ_{i∈b} x_i)`, so the
/// node's input is `x` followed by its 32-wide block sums, and row n's residuals are 4-bit blocks of
/// their own ([`fit_4bit`]). Rounding `z` alone (no residual) measured +22 % perplexity on this
/// model, a least-squares refit +16 %; with the residual columns +0.06 % (docs/accuracy.md).
pub fn q4_1_deploy(raw: &[u8], n: usize, k: usize) -> Result<NBitsWeight, String> {
    check_shape(raw.len(), 20, n, k)?;
    let per_row = k / BLOCK;
    let extra = per_row.div_ceil(BLOCK); // residual blocks per row
    let blocks_out = per_row + extra;
    let zp_row = blocks_out.div_ceil(2);
    let mut blob = Vec::with_capacity(n * blocks_out * BLOCK / 2);
    let mut scales = Vec::with_capacity(n * blocks_out);
    let mut zps = vec![0u8; n * zp_row];
    let mut residuals = vec![0f32; extra * BLOCK];
    let mut put_zp = |row: usize, i: usize, z: u8| zps[row * zp_row + i / 2] |= z << (4 * (i % 2));
    for (row, row_bytes) in raw.chunks_exact(20 * per_row).enumerate() {
        residuals.fill(0.0);
        for (i, bytes) in row_bytes.chunks_exact(20).enumerate() {
            let q = Q4_1Block::parse(bytes);
            let (scale, z, quants, residual) = if q.d != 0.0 {
                let z = (-q.m / q.d).round().clamp(0.0, 15.0);
                (q.d, z, q.q, q.m + q.d * z)
            } else {
                // d = 0: every element is m, all of it residual; the quants contribute nothing.
                (1.0, 0.0, [0u8; BLOCK], q.m)
            };
            blob.extend(quants.chunks_exact(2).map(|p| p[0] | (p[1] << 4)));
            scales.push(scale);
            put_zp(row, i, z as u8);
            residuals[i] = residual;
        }
        for (j, block) in residuals.chunks_exact(BLOCK).enumerate() {
            let values: &[f32; BLOCK] = block.try_into().expect("chunks of BLOCK");
            let fit = fit_4bit(values, None);
            blob.extend(fit.q.chunks_exact(2).map(|p| p[0] | (p[1] << 4)));
            scales.push(fit.scale);
            put_zp(row, per_row + j, fit.zero_point);
        }
    }
    Ok(NBitsWeight {
        n,
        k: k + extra * BLOCK,
        bits: 4,
        blob,
        scales,
        zero_points: ZeroPoints::Packed(zps),
        block_sum_columns: extra * BLOCK,
    })
}

/// The `[k, columns]` fp32 0/1 matrix whose product with `x` gives `x`'s sums over each block of 32
/// (column b sums elements `32b..32b+32`; columns past `k/32` are zero).
pub fn block_sum_matrix(k: usize, columns: usize) -> Vec<f32> {
    let mut m = vec![0f32; k * columns];
    for i in 0..k {
        m[i * columns + i / BLOCK] = 1.0;
    }
    m
}

/// One block refitted to `scale · (q − zero_point)`, `q, zero_point ∈ 0..16`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit4 {
    pub scale: f32,
    pub zero_point: u8,
    pub q: [u8; BLOCK],
    /// Σ (value − fitted)².
    pub sse: f64,
}

/// The least-squares 4-bit fit of a block with an integer zero point. Starts from the Q4_1 grid
/// (`s = d`, `z = round(−m/d)` and its neighbours) and from the block's range with 0 included
/// (ONNX Runtime's own quantizer), refines each by alternating rounding and the closed-form scale,
/// and keeps the smallest squared error.
pub fn fit_4bit(values: &[f32; BLOCK], grid: Option<(f32, f32)>) -> Fit4 {
    let mut starts: Vec<(f32, i32)> = Vec::with_capacity(4);
    if let Some((d, m)) = grid.filter(|(d, _)| *d > 0.0) {
        let z = (-m / d).round() as i32;
        for dz in [-1, 0, 1] {
            starts.push((d, (z + dz).clamp(0, 15)));
        }
    }
    let lo = values.iter().copied().fold(0f32, f32::min);
    let hi = values.iter().copied().fold(0f32, f32::max);
    if hi > lo {
        let s = (hi - lo) / 15.0;
        starts.push((s, ((-lo / s).round() as i32).clamp(0, 15)));
    }
    let mut best = Fit4 {
        scale: 1.0,
        zero_point: 8,
        q: [8; BLOCK],
        sse: values.iter().map(|&v| (v as f64).powi(2)).sum(),
    };
    for (mut s, z) in starts {
        for _ in 0..4 {
            let fit = assign(values, s, z);
            if fit.sse < best.sse {
                best = fit;
            }
            // Closed-form scale for these integers: Σ v·(q − z) / Σ (q − z)².
            let (num, den) = values
                .iter()
                .zip(&fit.q)
                .fold((0f64, 0f64), |(n, d), (&v, &q)| {
                    let c = q as f64 - z as f64;
                    (n + v as f64 * c, d + c * c)
                });
            if den == 0.0 || num <= 0.0 {
                break;
            }
            let next = (num / den) as f32;
            if next == s {
                break;
            }
            s = next;
        }
    }
    best
}

fn assign(values: &[f32; BLOCK], s: f32, z: i32) -> Fit4 {
    let mut q = [0u8; BLOCK];
    let mut sse = 0f64;
    for (qi, &v) in q.iter_mut().zip(values) {
        let j = ((v / s).round() as i32 + z).clamp(0, 15);
        *qi = j as u8;
        sse += (v as f64 - s as f64 * (j - z) as f64).powi(2);
    }
    Fit4 {
        scale: s,
        zero_point: z as u8,
        q,
        sse,
    }
}

/// Symmetric 8-bit blocks of 32 along each row of `w` (`[n, k]`): `x ≈ s·(u − 128)`,
/// `s = absmax/127`, zero points left to ONNX Runtime's default 128.
pub fn int8_symmetric(w: ArrayView2<f32>) -> Result<NBitsWeight, String> {
    let (n, k) = w.dim();
    if k % BLOCK != 0 {
        return Err(format!("K = {k} is not a multiple of {BLOCK}"));
    }
    let mut blob = Vec::with_capacity(n * k);
    let mut scales = Vec::with_capacity(n * k / BLOCK);
    for row in w.rows() {
        let row = row.to_vec();
        for block in row.chunks(BLOCK) {
            let amax = block.iter().fold(0f32, |a, &v| a.max(v.abs()));
            let scale = if amax > 0.0 { amax / 127.0 } else { 1.0 };
            scales.push(scale);
            blob.extend(
                block
                    .iter()
                    .map(|&v| ((v / scale).round().clamp(-127.0, 127.0) as i32 + 128) as u8),
            );
        }
    }
    Ok(NBitsWeight {
        n,
        k,
        bits: 8,
        blob,
        scales,
        zero_points: ZeroPoints::Symmetric,
        block_sum_columns: 0,
    })
}

/// A GGUF Q8_0 tensor (`[n, k]`, rows in file order) as symmetric 8-bit: `u = q + 128`, scale `d`,
/// exact. `None` when the tensor is not Q8_0.
pub fn q8_0(gguf: &GgufFile, name: &str) -> Result<Option<NBitsWeight>, String> {
    let info = gguf.tensor_info(name).map_err(|e| e.to_string())?;
    if info.ggml_type != GgmlType::Q8_0 {
        return Ok(None);
    }
    let shape = info.shape_row_major();
    let (n, k) = (shape[0], shape[1]);
    let bytes = gguf.tensor_bytes(info).map_err(|e| e.to_string())?;
    check_shape(bytes.len(), 34, n, k)?;
    let mut blob = Vec::with_capacity(n * k);
    let mut scales = Vec::with_capacity(n * k / BLOCK);
    for b in bytes.chunks_exact(34) {
        scales.push(half::f16::from_le_bytes([b[0], b[1]]).to_f32());
        blob.extend(b[2..].iter().map(|&q| (q as i8 as i32 + 128) as u8));
    }
    Ok(Some(NBitsWeight {
        n,
        k,
        bits: 8,
        blob,
        scales,
        zero_points: ZeroPoints::Symmetric,
        block_sum_columns: 0,
    }))
}

/// Raw Q4_1 bytes of a GGUF tensor with rows reordered (`order[i]` = source row of row i).
pub fn q4_1_rows(gguf: &GgufFile, name: &str, order: Option<&[usize]>) -> Result<Vec<u8>, String> {
    let info = gguf.tensor_info(name).map_err(|e| e.to_string())?;
    if info.ggml_type != GgmlType::Q4_1 {
        return Err(format!("{name} is {:?}, not Q4_1", info.ggml_type));
    }
    let bytes = gguf.tensor_bytes(info).map_err(|e| e.to_string())?;
    let shape = info.shape_row_major();
    let row_bytes = shape[1] / BLOCK * 20;
    Ok(match order {
        None => bytes.to_vec(),
        Some(order) => order
            .iter()
            .flat_map(|&r| bytes[r * row_bytes..(r + 1) * row_bytes].iter().copied())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q4_1_block(d: f32, m: f32, q: impl Fn(u8) -> u8) -> Vec<u8> {
        let mut raw = vec![];
        raw.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        raw.extend_from_slice(&half::f16::from_f32(m).to_le_bytes());
        raw.extend((0..16u8).map(|i| q(i) | (q(i + 16) << 4)));
        raw
    }

    #[test]
    fn symmetric_int8_round_trips_within_half_a_step() {
        let w =
            ndarray::Array2::from_shape_fn((2, 64), |(r, c)| ((r * 64 + c) as f32 * 0.37).sin());
        let q = int8_symmetric(w.view()).unwrap();
        for ((r, c), v) in w.indexed_iter() {
            let s = q.scales[r * 2 + c / BLOCK];
            assert!((q.value(r, c) - v).abs() <= s / 2.0 + 1e-7, "({r},{c})");
        }
        assert_eq!(q.zero_point_dims(), None);
    }

    #[test]
    fn exact_q4_1_reproduces_ggml_dequantization() {
        let raw = q4_1_block(0.25, -1.5, |i| i % 16);
        let expected = crate::model::ggml::dequantize(GgmlType::Q4_1, &raw).unwrap();
        let w = q4_1_exact(&raw, 1, 32).unwrap();
        for (i, e) in expected.iter().enumerate() {
            assert!((w.value(0, i) - e).abs() < 1e-6, "element {i}");
        }
    }

    /// `W·x` as the deploy node computes it: the weight over `[x, block sums of x]`.
    fn deploy_product(w: &NBitsWeight, row: usize, x: &[f32]) -> f64 {
        let sums = block_sum_matrix(w.input_k(), w.block_sum_columns);
        let mut ext: Vec<f32> = x.to_vec();
        for c in 0..w.block_sum_columns {
            ext.push(
                (0..x.len())
                    .map(|i| x[i] * sums[i * w.block_sum_columns + c])
                    .sum(),
            );
        }
        (0..w.k)
            .map(|c| w.value(row, c) as f64 * ext[c] as f64)
            .sum()
    }

    #[test]
    fn the_deploy_form_keeps_q4_1_blocks_exact_up_to_the_residuals_4_bits() {
        // Two rows of three off-grid blocks (−m/d not an integer): rounding z alone shifts every
        // value by up to d/2; the residual columns take that shift back.
        let mut raw = vec![];
        for (b, (d, m)) in [
            (0.5f32, -1.7f32),
            (0.25, -2.1),
            (0.3, 0.4),
            (0.1, -0.73),
            (1.0, -7.6),
            (0.0, 0.25),
        ]
        .iter()
        .enumerate()
        {
            raw.extend(q4_1_block(*d, *m, |i| (i * 5 + b as u8 * 3) % 16));
        }
        let w = q4_1_deploy(&raw, 2, 96).unwrap();
        assert_eq!((w.k, w.input_k(), w.block_sum_columns), (128, 96, 32));
        assert_eq!(w.zero_point_dims(), Some([2, 2]));
        let x: Vec<f32> = (0..96).map(|i| ((i as f32) * 0.71).sin()).collect();
        for row in 0..2 {
            let exact: f64 = (0..96)
                .map(|c| {
                    let q = Q4_1Block::parse(&raw[(row * 3 + c / 32) * 20..][..20]);
                    q.dequantize()[c % 32] as f64 * x[c] as f64
                })
                .sum();
            let rounded_only: f64 = (0..96).map(|c| w.value(row, c) as f64 * x[c] as f64).sum();
            let deployed = deploy_product(&w, row, &x);
            // What is left is the residuals' own 4-bit rounding: at most half their step per block
            // sum.
            let step = w.scales[row * 4 + 3] as f64;
            let bound: f64 = (0..3)
                .map(|b| {
                    x[b * 32..(b + 1) * 32]
                        .iter()
                        .map(|&v| v as f64)
                        .sum::<f64>()
                        .abs()
                })
                .sum::<f64>()
                * step
                / 2.0;
            assert!(
                (deployed - exact).abs() <= bound + 1e-6,
                "row {row}: exact {exact}, deployed {deployed} (bound {bound})"
            );
            assert!(
                (deployed - exact).abs() < (rounded_only - exact).abs() / 3.0,
                "row {row}: exact {exact}, deployed {deployed}, rounding alone {rounded_only}"
            );
        }
    }

    #[test]
    fn block_sums_sum_each_block_of_32() {
        let m = block_sum_matrix(64, 32);
        let x: Vec<f32> = (0..64).map(|i| i as f32).collect();
        let sum = |c: usize| (0..64).map(|i| x[i] * m[i * 32 + c]).sum::<f32>();
        assert_eq!(
            (sum(0), sum(1), sum(2)),
            (
                (0..32).sum::<i32>() as f32,
                (32..64).sum::<i32>() as f32,
                0.0
            )
        );
    }

    #[test]
    fn an_off_grid_block_is_refitted_no_worse_than_rounding_its_zero_point() {
        // m = −3.4d: rounding z to 3 shifts every value by 0.4d; the fit must do at least as well.
        let (d, m) = (0.5f32, -1.7f32);
        let raw = q4_1_block(d, m, |i| (i * 5 + 3) % 16);
        let q = Q4_1Block::parse(&raw);
        let values = q.dequantize();
        let rounded: f64 = values
            .iter()
            .zip(&q.q)
            .map(|(&v, &j)| (v as f64 - d as f64 * (j as f64 - 3.0)).powi(2))
            .sum();
        let fit = fit_4bit(&values, Some((q.d, q.m)));
        assert!(fit.sse <= rounded + 1e-9, "{} > {rounded}", fit.sse);
        assert!(fit.sse > 0.0);
    }

    #[test]
    fn packed_zero_points_put_even_blocks_in_the_low_nibble() {
        // Three blocks per row on integer grids (z = 0, 1, 2 and 3, 4, 5) plus one residual block
        // each (all residuals 0: its fit has z = 8, the default of a zero block).
        let mut raw = vec![];
        for (b, m) in [-0.0f32, -1.0, -2.0, -3.0, -4.0, -5.0].iter().enumerate() {
            raw.extend(q4_1_block(1.0, *m, |i| (i + b as u8) % 16));
        }
        let w = q4_1_deploy(&raw, 2, 96).unwrap();
        let ZeroPoints::Packed(z) = &w.zero_points else {
            panic!("packed expected")
        };
        assert_eq!(z, &vec![0x10, 0x82, 0x43, 0x85]);
        for r in 0..2 {
            for c in 0..96 {
                let q = Q4_1Block::parse(&raw[(r * 3 + c / 32) * 20..][..20]);
                assert!((w.value(r, c) - q.dequantize()[c % 32]).abs() < 1e-6);
            }
            for c in 96..128 {
                assert_eq!(w.value(r, c), 0.0);
            }
        }
    }

    #[test]
    fn a_constant_block_is_represented_exactly() {
        for m in [0.75f32, -0.75, 0.0] {
            let fit = fit_4bit(&[m; BLOCK], Some((0.0, m)));
            assert!(fit.sse < 1e-12, "m = {m}: {fit:?}");
        }
    }
}
