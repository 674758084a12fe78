//! JSON Lines files: whole lines appended under a lock (several processes may append to one file),
//! and read back as the same type, a malformed line an error naming the file and the line.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::error::ReportError;

/// Items as JSON lines, each ending in a newline.
pub fn lines<T: Serialize>(items: &[T]) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    for item in items {
        serde_json::to_writer(&mut buf, item).map_err(std::io::Error::other)?;
        buf.push(b'\n');
    }
    Ok(buf)
}

/// Append whole lines under an exclusive lock (one write per batch).
pub fn append<T: Serialize>(path: &Path, items: &[T]) -> std::io::Result<()> {
    let buf = lines(items)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.lock()?;
    f.write_all(&buf)?;
    f.flush()
}

/// Parse every non-empty line of a JSONL file as `T`; a malformed line is an error naming the
/// file and the line (a report must not silently drop evidence).
pub fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| ReportError::Malformed {
                path: path.to_path_buf(),
                line: i + 1,
                detail: e.to_string(),
            })
        })
        .collect()
}
