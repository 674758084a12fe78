//! The ONNX export's external-data writer: tensors go to one `.onnx.data` file at 64 KiB-aligned
//! offsets (ONNX Runtime maps them), converted to their element type in fixed-size chunks so a
//! tensor is never held twice (fp32 values and their bytes). Past 2 GB of weights this is what keeps
//! the `.onnx` protobuf under its 2 GB limit: it holds names, shapes and offsets only.

use std::io::Write;

/// Elements converted per write.
const CHUNK: usize = 16 * 1024;

/// Offset alignment of every external tensor (ONNX Runtime can map aligned data).
pub const EXTERNAL_ALIGN: u64 = 64 * 1024;

/// Zero bytes that bring `offset` to the next multiple of [`EXTERNAL_ALIGN`]; returns the new offset.
pub fn pad_to_alignment(out: &mut impl Write, offset: u64) -> std::io::Result<u64> {
    let aligned = offset.next_multiple_of(EXTERNAL_ALIGN);
    let zeros = [0u8; 4096];
    let mut left = (aligned - offset) as usize;
    while left > 0 {
        let n = left.min(zeros.len());
        out.write_all(&zeros[..n])?;
        left -= n;
    }
    Ok(aligned)
}

/// Write `values` as little-endian fp32 (or fp16 when `as_f16`), chunk by chunk; returns the bytes
/// written.
pub fn write_floats(out: &mut impl Write, values: &[f32], as_f16: bool) -> std::io::Result<u64> {
    let mut buf = Vec::with_capacity(CHUNK * 4);
    let mut written = 0u64;
    for chunk in values.chunks(CHUNK) {
        buf.clear();
        if as_f16 {
            buf.extend(
                chunk
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes()),
            );
        } else {
            buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
        }
        out.write_all(&buf)?;
        written += buf.len() as u64;
    }
    Ok(written)
}

/// The bytes [`write_floats`] writes, for tensors small enough to inline in the protobuf.
pub fn float_bytes(values: &[f32], as_f16: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * if as_f16 { 2 } else { 4 });
    write_floats(&mut out, values, as_f16).expect("writing to a Vec cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_floats_equal_the_plain_encoding_and_padding_aligns() {
        let values: Vec<f32> = (0..(CHUNK * 2 + 7)).map(|i| i as f32 * 0.5 - 3.0).collect();
        let plain: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(float_bytes(&values, false), plain);
        let half: Vec<u8> = values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        assert_eq!(float_bytes(&values, true), half);
        let mut out = Vec::new();
        out.extend([1u8; 10]);
        let at = pad_to_alignment(&mut out, 10).unwrap();
        assert_eq!((at, out.len() as u64), (EXTERNAL_ALIGN, EXTERNAL_ALIGN));
        assert_eq!(pad_to_alignment(&mut out, at).unwrap(), at);
    }
}
