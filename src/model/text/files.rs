//! Finding a text encoder's safetensors files (single file, sharded with an index json, or a
//! diffusers/transformers folder) and checking their headers before anything is mapped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::error::{TextError, TextModelKind};
use crate::model::safetensors_header::{Header, read_header};
use crate::model::weights::classify_header;

/// The weight files of one encoder, their merged header and an optional config.json.
#[derive(Debug, Clone)]
pub struct EncoderFiles {
    pub files: Vec<PathBuf>,
    pub header: Header,
    /// config.json found next to the weights (folder form), if any.
    pub config: Option<PathBuf>,
}

/// Names transformers and diffusers give encoder weights inside a folder.
const INDEX_NAMES: [&str; 2] = [
    "model.safetensors.index.json",
    "diffusion_pytorch_model.safetensors.index.json",
];
const SINGLE_NAMES: [&str; 2] = ["model.safetensors", "diffusion_pytorch_model.safetensors"];

/// Locates and checks the weights: a `.safetensors` file, an `*.index.json` of shards, or a
/// folder holding either (with its `config.json`).
pub fn locate(path: &Path, kind: TextModelKind) -> Result<EncoderFiles, TextError> {
    if !path.exists() {
        return Err(TextError::MissingWeights {
            kind,
            path: path.into(),
        });
    }
    let (files, config) = if path.is_dir() {
        let config = Some(path.join("config.json")).filter(|p| p.is_file());
        if let Some(index) = INDEX_NAMES
            .iter()
            .map(|n| path.join(n))
            .find(|p| p.is_file())
        {
            (shards_of_index(&index, kind)?, config)
        } else if let Some(single) = SINGLE_NAMES
            .iter()
            .map(|n| path.join(n))
            .find(|p| p.is_file())
        {
            (vec![single], config)
        } else {
            return Err(TextError::BadFolder {
                kind,
                reason: format!(
                    "{} holds no model.safetensors or model.safetensors.index.json",
                    path.display()
                ),
            });
        }
    } else if path.to_string_lossy().ends_with(".index.json") {
        (shards_of_index(path, kind)?, None)
    } else {
        (vec![path.to_path_buf()], None)
    };

    let mut header = Header::default();
    for file in &files {
        let h = read_header(file)?;
        header.file_len += h.file_len;
        header.tensors.extend(h.tensors);
        header.metadata.extend(h.metadata);
    }
    Ok(EncoderFiles {
        files,
        header,
        config,
    })
}

fn shards_of_index(index: &Path, kind: TextModelKind) -> Result<Vec<PathBuf>, TextError> {
    let text = std::fs::read_to_string(index).map_err(|source| TextError::Io {
        path: index.into(),
        source,
    })?;
    let bad = |reason: String| TextError::BadFolder { kind, reason };
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("{} is not valid json: {e}", index.display())))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad(format!("{} has no weight_map", index.display())))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let shards: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
    let files: Vec<PathBuf> = shards.into_iter().map(|s| dir.join(s)).collect();
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(TextError::MissingWeights {
            kind,
            path: missing.clone(),
        });
    }
    Ok(files)
}

impl EncoderFiles {
    /// Shape of a tensor, or the error naming it.
    pub fn shape(&self, kind: TextModelKind, name: &str) -> Result<&[usize], TextError> {
        self.header
            .shape(name)
            .ok_or_else(|| TextError::MissingTensor {
                kind,
                tensor: name.into(),
            })
    }

    /// Checks that a tensor exists with exactly this shape.
    pub fn expect(
        &self,
        kind: TextModelKind,
        name: &str,
        expected: &[usize],
    ) -> Result<(), TextError> {
        let found = self.shape(kind, name)?;
        if found != expected {
            return Err(TextError::ShapeMismatch {
                kind,
                tensor: name.into(),
                expected: expected.to_vec(),
                found: found.to_vec(),
            });
        }
        Ok(())
    }

    /// Reports what the file holds when it is not the wanted encoder.
    pub fn wrong_file(&self, kind: TextModelKind) -> TextError {
        TextError::WrongFile {
            kind,
            path: self.files[0].clone(),
            found: classify_header(&self.header).to_string(),
        }
    }

    /// Memory-maps the files.
    pub fn var_builder(
        &self,
        dtype: DType,
        device: &Device,
    ) -> Result<VarBuilder<'static>, TextError> {
        // Safety: the weight files are mapped read-only; Storyloom never writes to weight
        // files while a model is loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&self.files, dtype, device)? };
        Ok(vb)
    }

    /// Number of `prefix{i}suffix` tensors with consecutive `i` from 0.
    pub fn count_numbered(&self, prefix: &str, suffix: &str) -> usize {
        (0..)
            .take_while(|i| {
                self.header
                    .tensors
                    .contains_key(&format!("{prefix}{i}{suffix}"))
            })
            .count()
    }
}
