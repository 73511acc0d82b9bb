//! The CLIP text encoder whose pooled output FLUX takes as its vector input (CLIP ViT-L/14):
//! candle-transformers' `ClipTextTransformer` for the hidden states, pooled here.
//!
//! Pooling: transformers takes the hidden state at the **first** end token (`eos_token_id`),
//! candle's `ClipTextTransformer::forward` at the position of the largest id. The two agree
//! for released CLIP vocabularies (the end token has the largest id) but not in general, so
//! the pooled vector is read here at the combined prompt's EOS position, which is the first
//! end token by construction.

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_transformers::models::clip::text_model::{
    Activation, ClipTextConfig, ClipTextTransformer,
};
use serde::Deserialize;

use super::error::{TextError, TextModelKind};
use super::files::{EncoderFiles, locate};

const KIND: TextModelKind = TextModelKind::Clip;
const EMBEDDING: &str = "embeddings.token_embedding.weight";
const MARKER: &str = "encoder.layers.0.self_attn.q_proj.weight";

/// The fields of a transformers `CLIPTextConfig` the encoder needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub projection_dim: Option<usize>,
}

fn default_positions() -> usize {
    77
}

fn default_act() -> String {
    "quick_gelu".into()
}

impl ClipConfig {
    fn to_candle(&self) -> Result<ClipTextConfig, TextError> {
        if self.hidden_act != "quick_gelu" {
            return Err(TextError::Unsupported {
                kind: KIND,
                reason: format!(
                    "activation `{}`; only quick_gelu (CLIP ViT-L/14, as in FLUX) is supported",
                    self.hidden_act
                ),
            });
        }
        Ok(ClipTextConfig {
            vocab_size: self.vocab_size,
            embed_dim: self.hidden_size,
            activation: Activation::QuickGelu,
            intermediate_size: self.intermediate_size,
            max_position_embeddings: self.max_position_embeddings,
            pad_with: None,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            projection_dim: self.projection_dim.unwrap_or(self.hidden_size),
        })
    }
}

/// A loaded CLIP text encoder.
pub struct ClipEncoder {
    model: ClipTextTransformer,
    config: ClipConfig,
    device: Device,
}

impl std::fmt::Debug for ClipEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipEncoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ClipEncoder {
    /// Loads from a safetensors file, an index json of shards, or a folder. Tensor names may
    /// carry a prefix (`text_model.` in released CLIP text encoders). Without a config.json the
    /// sizes are inferred from the shapes, with 64-wide heads as in every released CLIP.
    pub fn load(
        weights: &Path,
        config: Option<&Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, TextError> {
        let files = locate(weights, KIND)?;
        let prefix = tensor_prefix(&files).ok_or_else(|| files.wrong_file(KIND))?;
        let config = match config.or(files.config.as_deref()) {
            Some(path) => read_config(path)?,
            None => infer_config(&files, &prefix)?,
        };
        let candle_config = config.to_candle()?;
        check_shapes(&files, &prefix, &config)?;
        let vb = files.var_builder(dtype, device)?;
        let vb = if prefix.is_empty() {
            vb
        } else {
            vb.pp(prefix.trim_end_matches('.'))
        };
        let model = ClipTextTransformer::new(vb, &candle_config)?;
        Ok(Self {
            model,
            config,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// Longest prompt the position table holds (77).
    pub fn max_len(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// Last hidden state `[1, L, hidden]` and the pooled vector `[1, hidden]` taken at
    /// `eos` (both f32). Causal mask only, no padding mask, as FLUX's pipelines call it.
    pub fn forward(&self, ids: &[u32], eos: usize) -> Result<(Tensor, Tensor), TextError> {
        if ids.len() > self.max_len() || eos >= ids.len() {
            return Err(TextError::Unsupported {
                kind: KIND,
                reason: format!(
                    "{} tokens with the end token at {eos}; the encoder holds {} positions",
                    ids.len(),
                    self.max_len()
                ),
            });
        }
        let input = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let hidden = self
            .model
            .forward_with_mask(&input, usize::MAX)?
            .to_dtype(DType::F32)?;
        let pooled = hidden.i((.., eos))?;
        Ok((hidden, pooled))
    }
}

/// The prefix before `embeddings.token_embedding.weight` of the text model (e.g. `text_model.`).
fn tensor_prefix(files: &EncoderFiles) -> Option<String> {
    let candidates: Vec<String> = files
        .header
        .tensors
        .keys()
        .filter(|k| k.ends_with(EMBEDDING))
        .map(|k| k[..k.len() - EMBEDDING.len()].to_string())
        .filter(|p| files.header.tensors.contains_key(&format!("{p}{MARKER}")))
        .collect();
    // A whole CLIP model also holds a vision tower; prefer the text model.
    candidates
        .iter()
        .find(|p| p.ends_with("text_model."))
        .or_else(|| candidates.first())
        .cloned()
}

/// Reads a `config.json` of a CLIP text model (or of a whole CLIP model, from `text_config`).
pub fn read_config(path: &Path) -> Result<ClipConfig, TextError> {
    let text = std::fs::read_to_string(path).map_err(|source| TextError::Io {
        path: path.into(),
        source,
    })?;
    let bad = |reason: String| TextError::BadConfig {
        kind: KIND,
        path: path.into(),
        reason,
    };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let text_config = json.get("text_config").cloned().unwrap_or(json);
    serde_json::from_value(text_config).map_err(|e| bad(e.to_string()))
}

/// Infers the config from tensor shapes; heads are 64 wide as in every released CLIP.
pub fn infer_config(files: &EncoderFiles, prefix: &str) -> Result<ClipConfig, TextError> {
    let name = |n: &str| format!("{prefix}{n}");
    let emb = files.shape(KIND, &name(EMBEDDING))?;
    let pos = files.shape(KIND, &name("embeddings.position_embedding.weight"))?;
    let fc1 = files.shape(KIND, &name("encoder.layers.0.mlp.fc1.weight"))?;
    let (&[vocab_size, hidden_size], &[positions, _], &[intermediate_size, _]) = (emb, pos, fc1)
    else {
        return Err(TextError::Unsupported {
            kind: KIND,
            reason: format!("unexpected ranks: embedding {emb:?}, positions {pos:?}, fc1 {fc1:?}"),
        });
    };
    Ok(ClipConfig {
        vocab_size,
        hidden_size,
        intermediate_size,
        num_hidden_layers: files
            .count_numbered(&name("encoder.layers."), ".self_attn.q_proj.weight"),
        num_attention_heads: (hidden_size / 64).max(1),
        max_position_embeddings: positions,
        hidden_act: default_act(),
        projection_dim: None,
    })
}

/// Checks every tensor the encoder reads, so a wrong or damaged file is reported by name.
pub fn check_shapes(files: &EncoderFiles, prefix: &str, cfg: &ClipConfig) -> Result<(), TextError> {
    let name = |n: String| format!("{prefix}{n}");
    let d = cfg.hidden_size;
    if cfg.num_attention_heads == 0 || d % cfg.num_attention_heads != 0 {
        return Err(TextError::Unsupported {
            kind: KIND,
            reason: format!(
                "width {d} is not a multiple of {} heads",
                cfg.num_attention_heads
            ),
        });
    }
    files.expect(KIND, &name(EMBEDDING.into()), &[cfg.vocab_size, d])?;
    files.expect(
        KIND,
        &name("embeddings.position_embedding.weight".into()),
        &[cfg.max_position_embeddings, d],
    )?;
    for i in 0..cfg.num_hidden_layers {
        let l = |n: &str| name(format!("encoder.layers.{i}.{n}"));
        for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            files.expect(KIND, &l(&format!("self_attn.{p}.weight")), &[d, d])?;
            files.expect(KIND, &l(&format!("self_attn.{p}.bias")), &[d])?;
        }
        for n in ["layer_norm1", "layer_norm2"] {
            files.expect(KIND, &l(&format!("{n}.weight")), &[d])?;
            files.expect(KIND, &l(&format!("{n}.bias")), &[d])?;
        }
        files.expect(KIND, &l("mlp.fc1.weight"), &[cfg.intermediate_size, d])?;
        files.expect(KIND, &l("mlp.fc1.bias"), &[cfg.intermediate_size])?;
        files.expect(KIND, &l("mlp.fc2.weight"), &[d, cfg.intermediate_size])?;
        files.expect(KIND, &l("mlp.fc2.bias"), &[d])?;
    }
    files.expect(KIND, &name("final_layer_norm.weight".into()), &[d])?;
    files.expect(KIND, &name("final_layer_norm.bias".into()), &[d])?;
    Ok(())
}
