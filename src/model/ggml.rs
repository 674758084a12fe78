//! ggml's tensor types ([`GgmlType`]: block layouts) and the dequantization of the ones
//! LLaMA-family GGUFs ship with (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K), each
//! a transcription of ggml's own `dequantize_row_*` (`ggml/src/ggml-quants.c`) and checked against
//! llama.cpp's output (tests/dequant_agreement.rs).

use half::f16;

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
}
