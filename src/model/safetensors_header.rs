//! Reading and checking a safetensors header without loading any tensor data. The error type
//! serves GGUF headers too (`gguf_header.rs`).
//!
//! Every weight file is classified from its header before anything is mapped, so that a
//! truncated download or a wrong file is reported with the offending tensor's name instead
//! of failing (or crashing) deep inside a load.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Largest header we accept (real FLUX headers are ~100 KB).
const MAX_HEADER_BYTES: u64 = 100 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is a pickle checkpoint ({kind}); pickle files can run code when opened, so Storyloom refuses them. Convert it to .safetensors first"
    )]
    Pickle { path: PathBuf, kind: &'static str },
    #[error(
        "{path} is a GGUF file; Storyloom reads GGUF for the transformer only, choose a .safetensors file for this part"
    )]
    Gguf { path: PathBuf },
    #[error("{path} is not a safetensors file: {reason}")]
    NotSafetensors { path: PathBuf, reason: String },
    #[error("{path} is not a GGUF file this version of Storyloom reads: {reason}")]
    NotGguf { path: PathBuf, reason: String },
    #[error(
        "{path} is truncated or corrupt: tensor `{tensor}` needs bytes up to {needed}, the file has {available} (an incomplete download?)"
    )]
    Truncated {
        path: PathBuf,
        tensor: String,
        needed: u64,
        available: u64,
    },
    #[error("{path}: tensor `{tensor}` is inconsistent: {reason}")]
    BadTensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
}

/// One tensor entry of a header.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TensorInfo {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data_offsets: (u64, u64),
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed header: tensors by name, sorted, plus the free-form metadata.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub tensors: BTreeMap<String, TensorInfo>,
    pub metadata: BTreeMap<String, String>,
    pub file_len: u64,
}

impl Header {
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    pub fn parameter_count(&self) -> usize {
        self.tensors.values().map(TensorInfo::numel).sum()
    }

    /// The distinct dtypes, most common first.
    pub fn dtypes(&self) -> Vec<String> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for t in self.tensors.values() {
            *counts.entry(&t.dtype).or_default() += t.numel();
        }
        let mut v: Vec<(&str, usize)> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1));
        v.into_iter().map(|(d, _)| d.to_string()).collect()
    }
}

/// Bytes per element of a safetensors dtype name.
pub fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "F8_E4M3" | "F8_E5M2" | "I8" | "U8" | "BOOL" => 1,
        _ => return None,
    })
}

/// Refuses formats we never open, by extension and by magic bytes.
fn refuse_other_formats(path: &Path, magic: &[u8]) -> Result<(), HeaderError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let pickle_ext = matches!(ext.as_str(), "ckpt" | "pt" | "pth" | "bin" | "pkl");
    if magic.starts_with(b"GGUF") {
        return Err(HeaderError::Gguf { path: path.into() });
    }
    if magic.starts_with(b"PK\x03\x04") {
        return Err(HeaderError::Pickle {
            path: path.into(),
            kind: "zip archive of pickles",
        });
    }
    if magic.first() == Some(&0x80) && magic.get(1).is_some_and(|p| (2..=5).contains(p)) {
        return Err(HeaderError::Pickle {
            path: path.into(),
            kind: "raw pickle",
        });
    }
    if pickle_ext {
        return Err(HeaderError::Pickle {
            path: path.into(),
            kind: "by its extension",
        });
    }
    Ok(())
}

/// Reads and validates the header of a safetensors file.
pub fn read_header(path: &Path) -> Result<Header, HeaderError> {
    let io = |source| HeaderError::Io {
        path: path.into(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut first = [0u8; 8];
    let got = read_up_to(&mut file, &mut first).map_err(io)?;
    refuse_other_formats(path, &first[..got])?;
    let not_st = |reason: String| HeaderError::NotSafetensors {
        path: path.into(),
        reason,
    };
    if got < 8 {
        return Err(not_st(format!("only {file_len} bytes long")));
    }
    let header_len = u64::from_le_bytes(first);
    if header_len > MAX_HEADER_BYTES || header_len + 8 > file_len {
        return Err(not_st(format!(
            "header length {header_len} does not fit in a file of {file_len} bytes"
        )));
    }
    let mut json = vec![0u8; header_len as usize];
    file.read_exact(&mut json).map_err(io)?;
    parse_header(path, &json, file_len, 8 + header_len)
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn parse_header(
    path: &Path,
    json: &[u8],
    file_len: u64,
    data_start: u64,
) -> Result<Header, HeaderError> {
    let not_st = |reason: String| HeaderError::NotSafetensors {
        path: path.into(),
        reason,
    };
    let raw: BTreeMap<String, serde_json::Value> = serde_json::from_slice(json)
        .map_err(|e| not_st(format!("header is not valid JSON ({e})")))?;
    let mut header = Header {
        file_len,
        ..Default::default()
    };
    let available = file_len - data_start;
    for (name, value) in raw {
        if name == "__metadata__" {
            if let Ok(meta) = serde_json::from_value::<BTreeMap<String, String>>(value) {
                header.metadata = meta;
            }
            continue;
        }
        let bad = |reason: String| HeaderError::BadTensor {
            path: path.into(),
            tensor: name.clone(),
            reason,
        };
        let info: TensorInfo = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        let size =
            dtype_size(&info.dtype).ok_or_else(|| bad(format!("unknown dtype {}", info.dtype)))?;
        let (start, end) = info.data_offsets;
        if end < start || end - start != size * info.numel() as u64 {
            return Err(bad(format!(
                "{} {:?} needs {} bytes, the header gives {}",
                info.dtype,
                info.shape,
                size * info.numel() as u64,
                end.saturating_sub(start)
            )));
        }
        if end > available {
            return Err(HeaderError::Truncated {
                path: path.into(),
                tensor: name,
                needed: data_start + end,
                available: file_len,
            });
        }
        header.tensors.insert(name, info);
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    fn file_with(header: &str, data: usize) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend(std::iter::repeat_n(0u8, data));
        v
    }

    #[test]
    fn reads_a_valid_header() {
        let dir = tempfile::tempdir().unwrap();
        let h =
            r#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"__metadata__":{"k":"v"}}"#;
        let p = write(dir.path(), "ok.safetensors", &file_with(h, 24));
        let header = read_header(&p).unwrap();
        assert_eq!(header.shape("a"), Some(&[2usize, 3][..]));
        assert_eq!(header.metadata.get("k").map(String::as_str), Some("v"));
        assert_eq!(header.parameter_count(), 6);
    }

    #[test]
    fn truncated_data_names_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b.weight":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#;
        let p = write(dir.path(), "cut.safetensors", &file_with(h, 12));
        let err = read_header(&p).unwrap_err();
        assert!(
            matches!(&err, HeaderError::Truncated { tensor, .. } if tensor == "b.weight"),
            "{err}"
        );
    }

    #[test]
    fn inconsistent_sizes_and_garbage_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let h = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        let p = write(dir.path(), "bad.safetensors", &file_with(h, 8));
        assert!(
            matches!(read_header(&p).unwrap_err(), HeaderError::BadTensor { tensor, .. } if tensor == "a")
        );
        let p = write(
            dir.path(),
            "junk.safetensors",
            b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk",
        );
        assert!(matches!(
            read_header(&p).unwrap_err(),
            HeaderError::NotSafetensors { .. }
        ));
        let p = write(dir.path(), "tiny.safetensors", b"abc");
        assert!(matches!(
            read_header(&p).unwrap_err(),
            HeaderError::NotSafetensors { .. }
        ));
        let p = write(dir.path(), "json.safetensors", &file_with("{not json", 0));
        assert!(matches!(
            read_header(&p).unwrap_err(),
            HeaderError::NotSafetensors { .. }
        ));
    }

    #[test]
    fn pickle_and_gguf_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "model.ckpt", b"PK\x03\x04rest");
        assert!(matches!(
            read_header(&p).unwrap_err(),
            HeaderError::Pickle { .. }
        ));
        let p = write(dir.path(), "model.bin", b"\x80\x04\x95data");
        assert!(matches!(
            read_header(&p).unwrap_err(),
            HeaderError::Pickle { .. }
        ));
        let p = write(dir.path(), "weights.pt", b"anything at all");
        assert!(read_header(&p).unwrap_err().to_string().contains("pickle"));
        let p = write(dir.path(), "q.gguf", b"GGUF\x03\x00\x00\x00");
        assert!(matches!(
            read_header(&p).unwrap_err(),
            HeaderError::Gguf { .. }
        ));
    }
}
