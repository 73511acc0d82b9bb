//! The T5 encoder (FLUX uses T5-XXL v1.1, gated-gelu): candle-transformers' `T5EncoderModel`
//! behind a loader that checks every tensor's name and shape before mapping the weights.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::Activation;
use candle_transformers::models::t5::{ActivationWithOptionalGating, Config, T5EncoderModel};

use super::error::{TextError, TextModelKind};
use super::files::{EncoderFiles, locate};

const KIND: TextModelKind = TextModelKind::T5;
/// The tensor that marks a T5 encoder, with whatever prefix a bundle puts before it.
const MARKER: &str = "encoder.block.0.layer.0.SelfAttention.q.weight";

/// A loaded T5 encoder.
pub struct T5Encoder {
    model: T5EncoderModel,
    config: Config,
    device: Device,
}

impl std::fmt::Debug for T5Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T5Encoder")
            .field("d_model", &self.config.d_model)
            .field("num_layers", &self.config.num_layers)
            .finish_non_exhaustive()
    }
}

impl T5Encoder {
    /// Loads from a safetensors file, an index json of shards, or a folder; `config` is a
    /// config.json (the folder's own one is used when not given; without any, the sizes are
    /// inferred from the tensor shapes).
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
        check_shapes(&files, &prefix, &config)?;
        let vb = files.var_builder(dtype, device)?;
        let vb = if prefix.is_empty() {
            vb
        } else {
            vb.pp(prefix.trim_end_matches('.'))
        };
        let model = T5EncoderModel::load(vb, &config)?;
        Ok(Self {
            model,
            config,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn hidden_size(&self) -> usize {
        self.config.d_model
    }

    /// Last hidden state `[1, ids.len(), d_model]` in f32. No attention mask: FLUX lets the
    /// padding tokens attend and be attended.
    pub fn forward(&mut self, ids: &[u32]) -> Result<Tensor, TextError> {
        let input = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let hidden = self.model.forward(&input)?;
        Ok(hidden.to_dtype(DType::F32)?)
    }
}

/// The prefix before the Hugging Face names (empty for transformers' files; bundles put the
/// encoder under a name such as `text_encoders.t5xxl.transformer.`).
fn tensor_prefix(files: &EncoderFiles) -> Option<String> {
    files
        .header
        .tensors
        .keys()
        .find(|k| k.ends_with(MARKER))
        .map(|k| k[..k.len() - MARKER.len()].to_string())
}

/// Reads a transformers `config.json` of a T5 model.
pub fn read_config(path: &Path) -> Result<Config, TextError> {
    let text = std::fs::read_to_string(path).map_err(|source| TextError::Io {
        path: path.into(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| TextError::BadConfig {
        kind: KIND,
        path: path.into(),
        reason: e.to_string(),
    })
}

/// Infers a T5 v1.1 encoder config from tensor shapes. What shapes cannot tell takes T5 v1.1's
/// values: relative attention max distance 128, layer-norm epsilon 1e-6, gelu_new gating.
pub fn infer_config(files: &EncoderFiles, prefix: &str) -> Result<Config, TextError> {
    let name = |n: &str| format!("{prefix}{n}");
    let embedding = [name("shared.weight"), name("encoder.embed_tokens.weight")]
        .into_iter()
        .find(|n| files.header.tensors.contains_key(n))
        .unwrap_or_else(|| name("shared.weight"));
    let emb = files.shape(KIND, &embedding)?;
    let q = files.shape(KIND, &name(MARKER))?;
    let bias = files.shape(
        KIND,
        &name("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
    )?;
    let unsupported = |reason: String| TextError::Unsupported { kind: KIND, reason };
    let (&[vocab_size, d_model], &[inner, _], &[buckets, num_heads]) = (emb, q, bias) else {
        return Err(unsupported(format!(
            "unexpected ranks: embedding {emb:?}, query {q:?}, relative attention bias {bias:?}"
        )));
    };
    if num_heads == 0 || inner % num_heads != 0 {
        return Err(unsupported(format!(
            "query width {inner} is not a multiple of {num_heads} heads"
        )));
    }
    let gated = files
        .header
        .tensors
        .contains_key(&name("encoder.block.0.layer.1.DenseReluDense.wi_0.weight"));
    let wi = if gated { "wi_0" } else { "wi" };
    let d_ff = files.shape(
        KIND,
        &name(&format!(
            "encoder.block.0.layer.1.DenseReluDense.{wi}.weight"
        )),
    )?[0];
    let num_layers =
        files.count_numbered(&name("encoder.block."), ".layer.0.SelfAttention.q.weight");
    Ok(Config {
        vocab_size,
        d_model,
        d_kv: inner / num_heads,
        d_ff,
        num_layers,
        num_decoder_layers: None,
        num_heads,
        relative_attention_num_buckets: buckets,
        relative_attention_max_distance: 128,
        dropout_rate: 0.0,
        layer_norm_epsilon: 1e-6,
        initializer_factor: 1.0,
        feed_forward_proj: ActivationWithOptionalGating {
            gated,
            activation: if gated {
                Activation::NewGelu
            } else {
                Activation::Relu
            },
        },
        tie_word_embeddings: false,
        is_decoder: false,
        is_encoder_decoder: false,
        use_cache: false,
        pad_token_id: 0,
        eos_token_id: 1,
        decoder_start_token_id: None,
    })
}

/// Checks every tensor the encoder reads, so a wrong or damaged file is reported by name.
pub fn check_shapes(files: &EncoderFiles, prefix: &str, cfg: &Config) -> Result<(), TextError> {
    let name = |n: String| format!("{prefix}{n}");
    let d = cfg.d_model;
    let inner = cfg.num_heads * cfg.d_kv;
    let embedding = ["shared.weight", "encoder.embed_tokens.weight"]
        .into_iter()
        .map(|n| name(n.into()))
        .find(|n| files.header.tensors.contains_key(n))
        .unwrap_or_else(|| name("shared.weight".into()));
    files.expect(KIND, &embedding, &[cfg.vocab_size, d])?;
    for i in 0..cfg.num_layers {
        let b = |n: &str| name(format!("encoder.block.{i}.{n}"));
        for p in ["q", "k", "v"] {
            files.expect(
                KIND,
                &b(&format!("layer.0.SelfAttention.{p}.weight")),
                &[inner, d],
            )?;
        }
        files.expect(KIND, &b("layer.0.SelfAttention.o.weight"), &[d, inner])?;
        if i == 0 {
            files.expect(
                KIND,
                &b("layer.0.SelfAttention.relative_attention_bias.weight"),
                &[cfg.relative_attention_num_buckets, cfg.num_heads],
            )?;
        }
        files.expect(KIND, &b("layer.0.layer_norm.weight"), &[d])?;
        let ff = |n: &str| b(&format!("layer.1.DenseReluDense.{n}.weight"));
        if cfg.feed_forward_proj.gated {
            files.expect(KIND, &ff("wi_0"), &[cfg.d_ff, d])?;
            files.expect(KIND, &ff("wi_1"), &[cfg.d_ff, d])?;
        } else {
            files.expect(KIND, &ff("wi"), &[cfg.d_ff, d])?;
        }
        files.expect(KIND, &ff("wo"), &[d, cfg.d_ff])?;
        files.expect(KIND, &b("layer.1.layer_norm.weight"), &[d])?;
    }
    files.expect(KIND, &name("encoder.final_layer_norm.weight".into()), &[d])?;
    Ok(())
}
