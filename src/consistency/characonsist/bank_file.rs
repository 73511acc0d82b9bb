//! A stored identity (or scene source) in a file, so regenerating one frame does not recompute
//! the identity: the bank's tensors in safetensors (and optionally the identity's decoded
//! image, for showing it without decoding again), and in its metadata a small JSON header
//! with the masks, the grid and a fingerprint of what the bank was recorded for. Loading
//! refuses a file whose fingerprint differs from the one expected (other settings, prompt,
//! seed, size, steps or model), naming what differs.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::bank::IdentityBank;
use super::control::StoredIdentity;
use super::mask::TokenMask;
use super::settings::CharaConsistSettings;
use crate::model::pipeline::SampleSpec;

/// Metadata key of the header in the safetensors file.
const HEADER_KEY: &str = "storyloom.characonsist.bank";
/// Bumped when the layout changes; older files are refused.
const FORMAT: u32 = 1;
/// Tensor name of the optional image (`[height, width, 3]` u8).
const IMAGE_TENSOR: &str = "identity.image";

#[derive(Debug, thiserror::Error)]
pub enum BankFileError {
    #[error("cannot {action} the identity bank {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an identity bank: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error(
        "the identity bank {path} was recorded for another {differences}; it must be recomputed"
    )]
    Mismatch { path: PathBuf, differences: String },
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// What a bank was recorded for. Two banks with equal fingerprints hold the same tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BankFingerprint {
    /// The model's name or weights id, as the caller knows it.
    pub model: String,
    /// The settings as the render used them (scaled to its steps and depth).
    pub settings: CharaConsistSettings,
    pub width: u32,
    pub height: u32,
    pub steps: usize,
    pub guidance: f32,
    pub seed: u64,
    /// FNV-1a hash of the prompt's conditioning tensors (shapes and values), in hex.
    pub prompt: String,
    /// For a scene source, the identity it borrowed its foreground from.
    pub identity: Option<Box<BankFingerprint>>,
}

impl BankFingerprint {
    /// The identity's fingerprint.
    #[allow(clippy::too_many_arguments)]
    pub fn identity(
        model: &str,
        settings: &CharaConsistSettings,
        spec: &SampleSpec,
        width: u32,
        height: u32,
        steps: usize,
        guidance: f32,
    ) -> Result<Self, candle_core::Error> {
        Ok(Self {
            model: model.to_string(),
            settings: settings.clone(),
            width,
            height,
            steps,
            guidance,
            seed: spec.seed,
            prompt: conditioning_hash(spec)?,
            identity: None,
        })
    }

    /// A scene's first frame recorded as a background source, after `identity`.
    pub fn scene_source(
        identity: &BankFingerprint,
        spec: &SampleSpec,
        width: u32,
        height: u32,
    ) -> Result<Self, candle_core::Error> {
        Ok(Self {
            width,
            height,
            seed: spec.seed,
            prompt: conditioning_hash(spec)?,
            identity: Some(Box::new(identity.clone())),
            ..identity.clone()
        })
    }

    /// Names of the fields that differ, for the error message.
    pub fn differences(&self, other: &Self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |differs: bool, name: &'static str| {
            if differs {
                out.push(name);
            }
        };
        check(self.model != other.model, "model");
        check(self.settings != other.settings, "settings");
        check(
            (self.width, self.height) != (other.width, other.height),
            "size",
        );
        check(self.steps != other.steps, "step count");
        check(self.guidance != other.guidance, "guidance");
        check(self.seed != other.seed, "seed");
        check(self.prompt != other.prompt, "prompt");
        check(self.identity != other.identity, "identity");
        out
    }
}

/// FNV-1a (64-bit) over the conditioning's shapes and f32 values.
fn conditioning_hash(spec: &SampleSpec) -> Result<String, candle_core::Error> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for t in [&spec.conditioning.txt, &spec.conditioning.pooled] {
        for &d in t.dims() {
            feed(&(d as u64).to_le_bytes());
        }
        for v in t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()? {
            feed(&v.to_le_bytes());
        }
    }
    Ok(format!("{h:016x}"))
}

/// The JSON header kept in the file's metadata.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: u32,
    fingerprint: BankFingerprint,
    mask: Option<TokenMask>,
    full_run_mask: Option<TokenMask>,
    grid: (usize, usize),
    /// The mask-cleaning radii (erosion, dilation) the masks were made with on `grid`. They
    /// follow from the settings and the grid by a rule that has changed before (banks made
    /// before it was recorded lack it and are recomputed).
    #[serde(default)]
    mask_radii: Option<(u8, u8)>,
    /// Storage dtype, e.g. "f16" (also that of an empty bank).
    dtype: String,
    /// Names of the tensors, so a file with a missing tensor is refused.
    tensors: Vec<String>,
}

fn dtype_name(dtype: DType) -> String {
    dtype.as_str().to_string()
}

fn dtype_from_name(name: &str) -> Option<DType> {
    [DType::F16, DType::BF16, DType::F32, DType::F64]
        .into_iter()
        .find(|d| d.as_str() == name)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed to disk,
/// then renamed over `path` (and the folder synced where the platform allows).
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bank".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        #[cfg(unix)]
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl StoredIdentity {
    /// Writes the stored identity to `path` (atomically), with the fingerprint of what it was
    /// recorded for and optionally the identity's image.
    pub fn save(
        &self,
        path: &Path,
        fingerprint: &BankFingerprint,
        image: Option<&RgbImage>,
    ) -> Result<(), BankFileError> {
        let mut tensors = self.bank.named_tensors();
        if let Some(img) = image {
            let (w, h) = img.dimensions();
            let pixels = Tensor::from_vec(
                img.as_raw().clone(),
                (h as usize, w as usize, 3),
                &Device::Cpu,
            )?;
            tensors.push((IMAGE_TENSOR.to_string(), pixels));
        }
        let header = Header {
            format: FORMAT,
            fingerprint: fingerprint.clone(),
            mask: self.mask.clone(),
            full_run_mask: self.full_run_mask.clone(),
            grid: self.grid,
            mask_radii: Some(fingerprint.settings.mask_radii(self.grid.0, self.grid.1)),
            dtype: dtype_name(self.bank.storage_dtype()),
            tensors: tensors.iter().map(|(n, _)| n.clone()).collect(),
        };
        let json = serde_json::to_string(&header).map_err(|e| BankFileError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let metadata = HashMap::from([(HEADER_KEY.to_string(), json)]);
        let bytes =
            safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
                .map_err(|e| BankFileError::Format {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
        write_atomically(path, &bytes).map_err(|source| BankFileError::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a stored identity written by [`Self::save`] (with its image when one was saved),
    /// refusing it unless it was recorded for `expected`.
    pub fn load(
        path: &Path,
        expected: &BankFingerprint,
        device: &Device,
    ) -> Result<(Self, Option<RgbImage>), BankFileError> {
        let format_error = |reason: String| BankFileError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|source| BankFileError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| format_error(e.to_string()))?;
        let json = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get(HEADER_KEY))
            .ok_or_else(|| format_error("no bank header".into()))?;
        let header: Header = serde_json::from_str(json).map_err(|e| format_error(e.to_string()))?;
        if header.format != FORMAT {
            return Err(format_error(format!(
                "format {} (this version reads {FORMAT})",
                header.format
            )));
        }
        let mut differences = header.fingerprint.differences(expected);
        let radii = expected.settings.mask_radii(header.grid.0, header.grid.1);
        if header.mask_radii != Some(radii) {
            differences.push("mask cleaning radii");
        }
        if !differences.is_empty() {
            return Err(BankFileError::Mismatch {
                path: path.to_path_buf(),
                differences: differences.join(", "),
            });
        }
        let dtype = dtype_from_name(&header.dtype)
            .ok_or_else(|| format_error(format!("unknown dtype {}", header.dtype)))?;
        let mut tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
        if let Some(missing) = header.tensors.iter().find(|n| !tensors.contains_key(*n)) {
            return Err(format_error(format!("tensor `{missing}` is missing")));
        }
        let image = match tensors.remove(IMAGE_TENSOR) {
            None => None,
            Some(t) => {
                let (h, w, _) = t.dims3()?;
                let raw = t.flatten_all()?.to_vec1::<u8>()?;
                Some(
                    RgbImage::from_raw(w as u32, h as u32, raw)
                        .ok_or_else(|| format_error("the image has a wrong size".into()))?,
                )
            }
        };
        let bank = IdentityBank::from_named_tensors(dtype, tensors)
            .map_err(|e| format_error(e.to_string()))?;
        let stored = StoredIdentity {
            bank,
            mask: header.mask,
            full_run_mask: header.full_run_mask,
            grid: header.grid,
        };
        Ok((stored, image))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::dit::init::seeded_normal;
    use crate::model::pipeline::Conditioning;

    fn spec(seed: u64, value: f32) -> SampleSpec {
        let txt =
            (Tensor::ones((1, 3, 4), DType::F32, &Device::Cpu).unwrap() * value as f64).unwrap();
        let pooled = Tensor::zeros((1, 2), DType::F32, &Device::Cpu).unwrap();
        SampleSpec {
            conditioning: Conditioning {
                txt,
                pooled,
                segment_spans: vec![0..3],
                eos: 3,
                padding: 3..3,
                truncated: false,
            },
            seed,
        }
    }

    fn fingerprint(seed: u64, value: f32, steps: usize) -> BankFingerprint {
        BankFingerprint::identity(
            "tiny",
            &CharaConsistSettings::default(),
            &spec(seed, value),
            64,
            64,
            steps,
            3.5,
        )
        .unwrap()
    }

    fn stored() -> StoredIdentity {
        let mut bank = IdentityBank::new(DType::F16);
        let k = seeded_normal(2, &[2, 4, 3], &Device::Cpu).unwrap();
        bank.put_kv(1, 0, &k, &(&k * 2.0).unwrap()).unwrap();
        bank.put_attention(2, 1, &k.flatten_from(1).unwrap().t().unwrap())
            .unwrap();
        StoredIdentity {
            bank,
            mask: Some(TokenMask::new(2, 2, vec![true, false, false, true]).unwrap()),
            full_run_mask: None,
            grid: (2, 2),
        }
    }

    #[test]
    fn a_bank_file_round_trips_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.bank");
        let fp = fingerprint(7, 0.5, 10);
        let s = stored();
        let image = RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8, y as u8, 7]));
        s.save(&path, &fp, Some(&image)).unwrap();
        let (back, back_image) = StoredIdentity::load(&path, &fp, &Device::Cpu).unwrap();
        assert_eq!(back_image, Some(image));
        assert_eq!(back.mask, s.mask);
        assert_eq!(back.full_run_mask, None);
        assert_eq!(back.grid, (2, 2));
        assert_eq!(back.bank.storage_dtype(), DType::F16);
        assert_eq!(back.bank.bytes(), s.bank.bytes());
        let (k1, v1) = s.bank.kv(1, 0, DType::F32).unwrap().unwrap();
        let (k2, v2) = back.bank.kv(1, 0, DType::F32).unwrap().unwrap();
        assert_eq!(
            k1.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            k2.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        assert_eq!(
            v1.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            v2.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        assert!(back.bank.attention(2, 1, DType::F32).unwrap().is_some());
        // Nothing but the bank is left in the folder (the temporary file was renamed).
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("identity.bank")]);
    }

    #[test]
    fn a_bank_for_other_settings_or_prompt_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.bank");
        stored()
            .save(&path, &fingerprint(7, 0.5, 10), None)
            .unwrap();
        let (_, image) =
            StoredIdentity::load(&path, &fingerprint(7, 0.5, 10), &Device::Cpu).unwrap();
        assert!(image.is_none());
        let err = StoredIdentity::load(&path, &fingerprint(7, 0.25, 10), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("prompt") && err.contains("recomputed"),
            "{err}"
        );
        let err = StoredIdentity::load(&path, &fingerprint(8, 0.5, 12), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("step count") && err.contains("seed"), "{err}");
        let mut other = fingerprint(7, 0.5, 10);
        other.settings.alpha = 0.5;
        let err = StoredIdentity::load(&path, &other, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("settings"), "{err}");
        // A plain safetensors file without the header is not a bank.
        let plain = dir.path().join("plain.safetensors");
        candle_core::safetensors::save(
            &HashMap::from([(
                "x".to_string(),
                Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
            )]),
            &plain,
        )
        .unwrap();
        let err = StoredIdentity::load(&plain, &fingerprint(7, 0.5, 10), &Device::Cpu).unwrap_err();
        assert!(matches!(err, BankFileError::Format { .. }), "{err}");
    }

    #[test]
    fn a_bank_without_or_with_other_mask_radii_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.bank");
        let fp = fingerprint(7, 0.5, 10);
        stored().save(&path, &fp, None).unwrap();
        // Rewrite the header as an older version wrote it (no radii), then with other radii.
        let bytes = std::fs::read(&path).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let json = meta.metadata().as_ref().unwrap()[HEADER_KEY].clone();
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let ours = value["mask_radii"].clone();
        assert!(ours.is_array(), "{json}");
        for radii in [serde_json::Value::Null, serde_json::json!([9, 9])] {
            value["mask_radii"] = radii;
            let metadata = HashMap::from([(HEADER_KEY.to_string(), value.to_string())]);
            let out = safetensors::serialize(tensors.iter(), Some(metadata)).unwrap();
            std::fs::write(&path, out).unwrap();
            let err = StoredIdentity::load(&path, &fp, &Device::Cpu)
                .unwrap_err()
                .to_string();
            assert!(err.contains("mask cleaning radii"), "{err}");
        }
    }

    #[test]
    fn scene_source_fingerprints_name_their_identity() {
        let id = fingerprint(7, 0.5, 10);
        let a = BankFingerprint::scene_source(&id, &spec(9, 1.0), 64, 64).unwrap();
        let b = BankFingerprint::scene_source(&fingerprint(7, 0.75, 10), &spec(9, 1.0), 64, 64)
            .unwrap();
        assert_eq!(a.differences(&b), vec!["identity"]);
        assert_eq!(a.differences(&a.clone()), Vec::<&str>::new());
    }
}
