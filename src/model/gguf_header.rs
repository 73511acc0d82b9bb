//! Reading a GGUF header (metadata and tensor table) without loading any tensor data.
//!
//! candle's own reader stops at the first tensor type it does not know with a bare number;
//! this one reads every entry, so a file in a type Storyloom cannot run is refused with the
//! type's name and the tensor's, and a truncated file names the first tensor it cuts.
//! Format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md> (versions 2 and 3).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use candle_core::quantized::GgmlDType;

use super::safetensors_header::HeaderError;

/// Metadata key of a file's architecture (`flux` for FLUX transformers).
pub const ARCHITECTURE_KEY: &str = "general.architecture";
const ALIGNMENT_KEY: &str = "general.alignment";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Bounds that keep a corrupt header from asking for absurd allocations.
const MAX_STRING_BYTES: u64 = 1 << 20;
const MAX_ENTRIES: u64 = 1 << 20;
const MAX_DIMS: u32 = 4;

/// A ggml tensor type, by its number in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GgmlType(pub u32);

impl GgmlType {
    pub const F32: Self = Self(0);
    pub const F16: Self = Self(1);
    pub const Q4_0: Self = Self(2);
    pub const Q8_0: Self = Self(8);
    pub const Q4_K: Self = Self(12);
    pub const Q5_K: Self = Self(13);
    pub const BF16: Self = Self(30);

    /// (name, elements per block, bytes per block), from ggml's type traits.
    fn traits(self) -> Option<(&'static str, u64, u64)> {
        Some(match self.0 {
            0 => ("F32", 1, 4),
            1 => ("F16", 1, 2),
            2 => ("Q4_0", 32, 18),
            3 => ("Q4_1", 32, 20),
            6 => ("Q5_0", 32, 22),
            7 => ("Q5_1", 32, 24),
            8 => ("Q8_0", 32, 34),
            9 => ("Q8_1", 32, 36),
            10 => ("Q2_K", 256, 84),
            11 => ("Q3_K", 256, 110),
            12 => ("Q4_K", 256, 144),
            13 => ("Q5_K", 256, 176),
            14 => ("Q6_K", 256, 210),
            15 => ("Q8_K", 256, 292),
            16 => ("IQ2_XXS", 256, 66),
            17 => ("IQ2_XS", 256, 74),
            18 => ("IQ3_XXS", 256, 98),
            19 => ("IQ1_S", 256, 50),
            20 => ("IQ4_NL", 32, 18),
            21 => ("IQ3_S", 256, 110),
            22 => ("IQ2_S", 256, 82),
            23 => ("IQ4_XS", 256, 136),
            24 => ("I8", 1, 1),
            25 => ("I16", 1, 2),
            26 => ("I32", 1, 4),
            27 => ("I64", 1, 8),
            28 => ("F64", 1, 8),
            29 => ("IQ1_M", 256, 56),
            30 => ("BF16", 1, 2),
            34 => ("TQ1_0", 256, 54),
            35 => ("TQ2_0", 256, 66),
            39 => ("MXFP4", 32, 17),
            _ => return None,
        })
    }

    pub fn name(self) -> String {
        self.traits()
            .map_or_else(|| format!("type {}", self.0), |t| t.0.to_string())
    }

    /// Bytes of `numel` elements, or `None` for an unknown type or a partial block.
    pub fn bytes(self, numel: u64) -> Option<u64> {
        let (_, block, size) = self.traits()?;
        numel.is_multiple_of(block).then_some(numel / block * size)
    }

    /// Floating types are loaded as dense tensors; the others stay quantized.
    pub fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F16 | Self::BF16)
    }

    /// The candle type a FLUX transformer can run this as (a weight type with CPU and CUDA
    /// kernels), or `None`.
    pub fn runnable(self) -> Option<GgmlDType> {
        Some(match self.0 {
            0 => GgmlDType::F32,
            1 => GgmlDType::F16,
            30 => GgmlDType::BF16,
            2 => GgmlDType::Q4_0,
            3 => GgmlDType::Q4_1,
            6 => GgmlDType::Q5_0,
            7 => GgmlDType::Q5_1,
            8 => GgmlDType::Q8_0,
            10 => GgmlDType::Q2K,
            11 => GgmlDType::Q3K,
            12 => GgmlDType::Q4K,
            13 => GgmlDType::Q5K,
            14 => GgmlDType::Q6K,
            _ => return None,
        })
    }

    /// Names of every type [`runnable`](Self::runnable) accepts, for error messages.
    pub fn runnable_names() -> &'static str {
        "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K"
    }
}

/// One tensor entry: its type, its shape in candle's order (outermost first: `[out, in]`
/// for a linear weight, the reverse of ggml's `ne`) and its bytes in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensor {
    pub ggml_type: GgmlType,
    pub shape: Vec<usize>,
    /// Offset from the start of the data section.
    pub offset: u64,
    pub bytes: u64,
}

impl GgufTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Scalar metadata values (arrays are skipped: FLUX files need none of them).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

/// A parsed header.
#[derive(Debug, Clone, Default)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: BTreeMap<String, GgufTensor>,
    pub file_len: u64,
    /// Where tensor data starts (offsets in [`GgufTensor`] are from here).
    pub data_start: u64,
}

impl GgufHeader {
    pub fn architecture(&self) -> Option<&str> {
        match self.metadata.get(ARCHITECTURE_KEY) {
            Some(MetaValue::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn string(&self, key: &str) -> Option<&str> {
        match self.metadata.get(key) {
            Some(MetaValue::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    pub fn parameter_count(&self) -> usize {
        self.tensors.values().map(GgufTensor::numel).sum()
    }

    /// (type, parameters) for each type in the file, most parameters first.
    pub fn types(&self) -> Vec<(GgmlType, usize)> {
        let mut counts: BTreeMap<GgmlType, usize> = BTreeMap::new();
        for t in self.tensors.values() {
            *counts.entry(t.ggml_type).or_default() += t.numel();
        }
        let mut v: Vec<(GgmlType, usize)> = counts.into_iter().collect();
        v.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        v
    }
}

/// Whether the file starts with the GGUF magic (reads 4 bytes).
pub fn is_gguf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == b"GGUF")
}

/// Reads and validates the header of a GGUF file.
pub fn read_gguf_header(path: &Path) -> Result<GgufHeader, HeaderError> {
    let io = |source| HeaderError::Io {
        path: path.into(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut r = Reader {
        inner: BufReader::new(file),
        pos: 0,
        path,
    };
    r.parse(file_len)
}

struct Reader<'p, R> {
    inner: R,
    pos: u64,
    path: &'p Path,
}

impl<R: Read> Reader<'_, R> {
    fn not_gguf(&self, reason: impl Into<String>) -> HeaderError {
        HeaderError::NotGguf {
            path: self.path.into(),
            reason: reason.into(),
        }
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], HeaderError> {
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                self.not_gguf("the header ends early")
            } else {
                HeaderError::Io {
                    path: self.path.into(),
                    source: e,
                }
            }
        })?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, HeaderError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, HeaderError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn count(&mut self, what: &str) -> Result<u64, HeaderError> {
        let n = self.u64()?;
        if n > MAX_ENTRIES {
            return Err(self.not_gguf(format!("{n} {what} is not believable")));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, HeaderError> {
        let len = self.u64()?;
        if len > MAX_STRING_BYTES {
            return Err(self.not_gguf(format!("a string of {len} bytes")));
        }
        let mut buf = vec![0u8; len as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| self.not_gguf("the header ends early"))?;
        self.pos += len;
        String::from_utf8(buf).map_err(|_| self.not_gguf("a name is not UTF-8"))
    }

    /// A metadata value of type `ty`; arrays are read past and give `None`.
    fn value(&mut self, ty: u32) -> Result<Option<MetaValue>, HeaderError> {
        Ok(Some(match ty {
            0 => MetaValue::Int(self.bytes::<1>()?[0] as i64),
            1 => MetaValue::Int(self.bytes::<1>()?[0] as i8 as i64),
            2 => MetaValue::Int(u16::from_le_bytes(self.bytes()?) as i64),
            3 => MetaValue::Int(i16::from_le_bytes(self.bytes()?) as i64),
            4 => MetaValue::Int(self.u32()? as i64),
            5 => MetaValue::Int(i32::from_le_bytes(self.bytes()?) as i64),
            6 => MetaValue::Float(f32::from_le_bytes(self.bytes()?) as f64),
            7 => MetaValue::Bool(self.bytes::<1>()?[0] != 0),
            8 => MetaValue::Str(self.string()?),
            9 => {
                let elem = self.u32()?;
                let n = self.count("array elements")?;
                for _ in 0..n {
                    self.value(elem)?;
                }
                return Ok(None);
            }
            10 => MetaValue::Int(self.u64()? as i64),
            11 => MetaValue::Int(i64::from_le_bytes(self.bytes()?)),
            12 => MetaValue::Float(f64::from_le_bytes(self.bytes()?)),
            other => return Err(self.not_gguf(format!("unknown metadata type {other}"))),
        }))
    }

    fn parse(&mut self, file_len: u64) -> Result<GgufHeader, HeaderError> {
        if &self.bytes::<4>().map_err(|_| self.not_gguf("too short"))? != b"GGUF" {
            return Err(self.not_gguf("no GGUF magic"));
        }
        let version = self.u32()?;
        if !(2..=3).contains(&version) {
            return Err(self.not_gguf(format!("version {version} (2 and 3 are read)")));
        }
        let n_tensors = self.count("tensors")?;
        let n_meta = self.count("metadata entries")?;
        let mut header = GgufHeader {
            version,
            file_len,
            ..Default::default()
        };
        for _ in 0..n_meta {
            let key = self.string()?;
            let ty = self.u32()?;
            if let Some(v) = self.value(ty)? {
                header.metadata.insert(key, v);
            }
        }
        let mut order = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = self.string()?;
            let n_dims = self.u32()?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(self.bad(&name, format!("{n_dims} dimensions")));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                ne.push(self.u64()? as usize);
            }
            let ggml_type = GgmlType(self.u32()?);
            let offset = self.u64()?;
            let numel: u64 = ne.iter().map(|&d| d as u64).product();
            let bytes = match ggml_type.traits() {
                None => 0,
                // ggml quantizes along rows: each row (ne[0]) must fill whole blocks.
                Some((type_name, block, _)) if !(ne[0] as u64).is_multiple_of(block) => {
                    return Err(self.bad(
                        &name,
                        format!(
                            "rows of {} do not fill {type_name} blocks of {block}",
                            ne[0]
                        ),
                    ));
                }
                Some(_) => ggml_type.bytes(numel).unwrap_or(0),
            };
            ne.reverse();
            order.push(name.clone());
            header.tensors.insert(
                name,
                GgufTensor {
                    ggml_type,
                    shape: ne,
                    offset,
                    bytes,
                },
            );
        }
        let alignment = match header.metadata.get(ALIGNMENT_KEY) {
            Some(MetaValue::Int(a)) if *a > 0 => *a as u64,
            _ => DEFAULT_ALIGNMENT,
        };
        header.data_start = self.pos.div_ceil(alignment) * alignment;
        let available = file_len.saturating_sub(header.data_start);
        for name in order {
            let t = &header.tensors[&name];
            if !t.offset.is_multiple_of(alignment) {
                return Err(self.bad(&name, format!("offset {} is not aligned", t.offset)));
            }
            if t.offset + t.bytes > available {
                return Err(HeaderError::Truncated {
                    path: self.path.into(),
                    needed: header.data_start + t.offset + t.bytes,
                    tensor: name,
                    available: file_len,
                });
            }
        }
        Ok(header)
    }

    fn bad(&self, tensor: &str, reason: String) -> HeaderError {
        HeaderError::BadTensor {
            path: self.path.into(),
            tensor: tensor.into(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    /// A GGUF v3 file written by hand: one metadata string, then the tensors.
    fn gguf_bytes(arch: &str, tensors: &[(&str, &[u64], u32)], data: usize) -> Vec<u8> {
        let mut v = b"GGUF".to_vec();
        v.extend(3u32.to_le_bytes());
        v.extend((tensors.len() as u64).to_le_bytes());
        v.extend(1u64.to_le_bytes());
        let s = |v: &mut Vec<u8>, s: &str| {
            v.extend((s.len() as u64).to_le_bytes());
            v.extend(s.as_bytes());
        };
        s(&mut v, ARCHITECTURE_KEY);
        v.extend(8u32.to_le_bytes());
        s(&mut v, arch);
        let mut offset = 0u64;
        for (name, ne, ty) in tensors {
            s(&mut v, name);
            v.extend((ne.len() as u32).to_le_bytes());
            for d in *ne {
                v.extend(d.to_le_bytes());
            }
            v.extend(ty.to_le_bytes());
            v.extend(offset.to_le_bytes());
            let bytes = GgmlType(*ty).bytes(ne.iter().product()).unwrap_or(0);
            offset += bytes.div_ceil(32) * 32;
        }
        while !v.len().is_multiple_of(32) {
            v.push(0);
        }
        v.extend(std::iter::repeat_n(0u8, data));
        v
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    #[test]
    fn reads_types_shapes_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        // ggml's ne is innermost first: a [out 4, in 64] weight is stored as (64, 4).
        let t: &[(&str, &[u64], u32)] = &[("w", &[64, 4], 8), ("b", &[4], 0)];
        let p = write(
            dir.path(),
            "a.gguf",
            &gguf_bytes("flux", t, 8 * 34 + 32 + 16),
        );
        assert!(is_gguf(&p));
        let h = read_gguf_header(&p).unwrap();
        assert_eq!(h.architecture(), Some("flux"));
        assert_eq!(h.shape("w"), Some(&[4usize, 64][..]));
        assert_eq!(h.tensors["w"].ggml_type, GgmlType::Q8_0);
        // 256 elements = 8 blocks of 34 bytes.
        assert_eq!(h.tensors["w"].bytes, 272);
        assert_eq!(h.tensors["b"].bytes, 16);
        assert_eq!(h.parameter_count(), 260);
        assert_eq!(h.types(), vec![(GgmlType::Q8_0, 256), (GgmlType::F32, 4)]);
    }

    #[test]
    fn a_truncated_file_names_the_first_tensor_it_cuts() {
        let dir = tempfile::tempdir().unwrap();
        let t: &[(&str, &[u64], u32)] = &[("w", &[64, 4], 8), ("b", &[4], 0)];
        let p = write(dir.path(), "cut.gguf", &gguf_bytes("flux", t, 300));
        let err = read_gguf_header(&p).unwrap_err();
        assert!(
            matches!(&err, HeaderError::Truncated { tensor, .. } if tensor == "b"),
            "{err}"
        );
    }

    #[test]
    fn unknown_types_are_read_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let t: &[(&str, &[u64], u32)] = &[("w", &[256, 2], 23), ("x", &[2], 77)];
        let p = write(dir.path(), "iq.gguf", &gguf_bytes("flux", t, 288));
        let h = read_gguf_header(&p).unwrap();
        assert_eq!(h.tensors["w"].ggml_type.name(), "IQ4_XS");
        assert_eq!(h.tensors["w"].ggml_type.runnable(), None);
        assert_eq!(h.tensors["x"].ggml_type.name(), "type 77");
    }

    #[test]
    fn partial_blocks_and_garbage_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let t: &[(&str, &[u64], u32)] = &[("w", &[40, 2], 8)];
        let p = write(dir.path(), "odd.gguf", &gguf_bytes("flux", t, 1024));
        assert!(matches!(
            read_gguf_header(&p).unwrap_err(),
            HeaderError::BadTensor { tensor, .. } if tensor == "w"
        ));
        let p = write(dir.path(), "junk.gguf", b"GGUF\x09\x00\x00\x00");
        assert!(matches!(
            read_gguf_header(&p).unwrap_err(),
            HeaderError::NotGguf { .. }
        ));
        let p = write(dir.path(), "short.gguf", b"GGU");
        assert!(!is_gguf(&p));
        assert!(matches!(
            read_gguf_header(&p).unwrap_err(),
            HeaderError::NotGguf { .. }
        ));
    }

    #[test]
    fn block_sizes_match_candle() {
        for t in (0..40).map(GgmlType) {
            if let Some(d) = t.runnable() {
                let (_, block, size) = t.traits().unwrap();
                assert_eq!(block as usize, d.block_size(), "{}", t.name());
                assert_eq!(size as usize, d.type_size(), "{}", t.name());
            }
        }
    }
}
