//! `TextEncoder`: tokenizers + T5 (+ CLIP) turned into FLUX's text conditioning, with the
//! combined prompt's spans, a cache of encodings keyed by prompt, and unloading.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

use candle_core::{D, DType, Device, Tensor};

use super::clip::ClipEncoder;
use super::error::{TextError, TextModelKind};
use super::prompt::{CombinedPrompt, PromptSegments, PromptTokenizer, Separator};
use super::t5::T5Encoder;
use crate::model::pipeline::{Conditioning, PromptEncoder};

/// Prompt length of FLUX.1-dev's T5 input.
pub const DEV_MAX_LEN: usize = 512;
/// Prompt length of FLUX.1-schnell's T5 input.
pub const SCHNELL_MAX_LEN: usize = 256;

/// Where one encoder's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderPaths {
    /// A `.safetensors` file, an `*.index.json` of shards, or a folder holding either.
    pub weights: PathBuf,
    /// A `config.json`; when absent, a folder's own one is used, else sizes are inferred.
    pub config: Option<PathBuf>,
    /// The `tokenizer.json`.
    pub tokenizer: PathBuf,
}

/// Where the pooled vector (the DiT's `vector_in` input) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PooledSource {
    /// CLIP's pooled output, as FLUX.1 does.
    Clip(EncoderPaths),
    /// The mean of the T5 hidden states over the real tokens (segments, separators and the
    /// EOS; no padding), for models without CLIP such as the built-in one.
    T5Mean,
}

/// Settings of a [`TextEncoder`].
#[derive(Debug, Clone)]
pub struct TextEncoderOptions {
    /// T5 prompt length: [`DEV_MAX_LEN`] or [`SCHNELL_MAX_LEN`].
    pub max_len: usize,
    /// Dtype the weights are loaded in (outputs are always f32).
    pub dtype: DType,
    pub device: Device,
    /// Encodings kept; the oldest is dropped beyond this.
    pub cache_capacity: usize,
}

impl Default for TextEncoderOptions {
    fn default() -> Self {
        Self {
            max_len: DEV_MAX_LEN,
            dtype: DType::F32,
            device: Device::Cpu,
            cache_capacity: 32,
        }
    }
}

/// The text conditioning of one combined prompt.
#[derive(Debug, Clone)]
pub struct TextEncoding {
    /// T5 last hidden state `[1, max_len, d_model]`, f32.
    pub hidden: Tensor,
    /// Pooled vector `[1, p]`, f32 (CLIP: p = 768 for ViT-L; T5 mean: p = d_model).
    pub pooled: Tensor,
    /// The T5 token sequence and spans (the ones `hidden`'s rows follow).
    pub prompt: CombinedPrompt,
    /// The CLIP token sequence, when the pooled vector comes from CLIP (77 tokens; its
    /// `truncated` flag says the CLIP side was cut, which FLUX does silently).
    pub pooled_prompt: Option<CombinedPrompt>,
}

type CacheKey = (Vec<String>, Separator);

/// Tokenizers and text encoders; models can be unloaded and are loaded again on demand.
pub struct TextEncoder {
    t5_paths: EncoderPaths,
    pooled_source: PooledSource,
    options: TextEncoderOptions,
    t5_tokenizer: PromptTokenizer,
    clip_tokenizer: Option<PromptTokenizer>,
    t5: Option<T5Encoder>,
    clip: Option<ClipEncoder>,
    cache: HashMap<CacheKey, TextEncoding>,
    cache_order: VecDeque<CacheKey>,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("t5_paths", &self.t5_paths)
            .field("pooled_source", &self.pooled_source)
            .field("loaded", &self.is_loaded())
            .field("cached", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl TextEncoder {
    /// Reads the tokenizers and loads the encoders.
    pub fn load(
        t5: EncoderPaths,
        pooled_source: PooledSource,
        options: TextEncoderOptions,
    ) -> Result<Self, TextError> {
        let t5_tokenizer =
            PromptTokenizer::from_file(&t5.tokenizer, TextModelKind::T5, options.max_len)?;
        let mut encoder = Self {
            t5_paths: t5,
            pooled_source,
            options,
            t5_tokenizer,
            clip_tokenizer: None,
            t5: None,
            clip: None,
            cache: HashMap::new(),
            cache_order: VecDeque::new(),
        };
        encoder.reload()?;
        Ok(encoder)
    }

    /// Loads the models that are not in memory (after [`TextEncoder::unload`]).
    pub fn reload(&mut self) -> Result<(), TextError> {
        let opts = &self.options;
        if self.t5.is_none() {
            let paths = &self.t5_paths;
            self.t5 = Some(T5Encoder::load(
                &paths.weights,
                paths.config.as_deref(),
                opts.dtype,
                &opts.device,
            )?);
        }
        if let (PooledSource::Clip(paths), None) = (&self.pooled_source, &self.clip) {
            let clip = ClipEncoder::load(
                &paths.weights,
                paths.config.as_deref(),
                opts.dtype,
                &opts.device,
            )?;
            if self.clip_tokenizer.is_none() {
                self.clip_tokenizer = Some(PromptTokenizer::from_file(
                    &paths.tokenizer,
                    TextModelKind::Clip,
                    clip.max_len(),
                )?);
            }
            self.clip = Some(clip);
        }
        Ok(())
    }

    /// Drops the encoder weights from memory; tokenizers and cached encodings stay.
    pub fn unload(&mut self) {
        self.t5 = None;
        self.clip = None;
    }

    pub fn is_loaded(&self) -> bool {
        self.t5.is_some() && (self.clip.is_some() || self.pooled_source == PooledSource::T5Mean)
    }

    pub fn t5_tokenizer(&self) -> &PromptTokenizer {
        &self.t5_tokenizer
    }

    pub fn cached_len(&self) -> usize {
        self.cache.len()
    }

    pub fn clear_cache(&mut self) {
        self.cache.clear();
        self.cache_order.clear();
    }

    /// The T5 token sequence and spans of a prompt, without running any model.
    pub fn combine(
        &self,
        segments: &[&str],
        separator: Separator,
    ) -> Result<CombinedPrompt, TextError> {
        self.t5_tokenizer.combine(PromptSegments {
            segments,
            separator,
        })
    }

    /// Encodes the ordered segments of one prompt. Cached prompts are returned without
    /// running a model (also after [`TextEncoder::unload`]); otherwise unloaded models are
    /// loaded again first.
    pub fn encode(
        &mut self,
        segments: &[&str],
        separator: Separator,
    ) -> Result<TextEncoding, TextError> {
        let key: CacheKey = (segments.iter().map(|s| s.to_string()).collect(), separator);
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit.clone());
        }
        let encoding = self.encode_uncached(segments, separator)?;
        self.remember(key, encoding.clone());
        Ok(encoding)
    }

    fn encode_uncached(
        &mut self,
        segments: &[&str],
        separator: Separator,
    ) -> Result<TextEncoding, TextError> {
        self.reload()?;
        let prompt = self.combine(segments, separator)?;
        let t5 = self.t5.as_mut().ok_or(TextError::Unloaded)?;
        let hidden = t5.forward(&prompt.ids)?;
        let (pooled, pooled_prompt) = match (&self.clip, &self.clip_tokenizer) {
            (Some(clip), Some(tokenizer)) => {
                let clip_prompt = tokenizer.combine(PromptSegments {
                    segments,
                    separator,
                })?;
                let (_, pooled) = clip.forward(&clip_prompt.ids, clip_prompt.eos)?;
                (pooled, Some(clip_prompt))
            }
            _ => (mean_over_real_tokens(&hidden, prompt.real_len)?, None),
        };
        Ok(TextEncoding {
            hidden,
            pooled,
            prompt,
            pooled_prompt,
        })
    }

    fn remember(&mut self, key: CacheKey, encoding: TextEncoding) {
        if self.options.cache_capacity == 0 {
            return;
        }
        while self.cache.len() >= self.options.cache_capacity {
            match self.cache_order.pop_front() {
                Some(oldest) => {
                    self.cache.remove(&oldest);
                }
                None => break,
            }
        }
        self.cache_order.push_back(key.clone());
        self.cache.insert(key, encoding);
    }
}

/// Mean of `hidden` `[1, L, d]` over its first `real_len` rows -> `[1, d]`.
pub fn mean_over_real_tokens(hidden: &Tensor, real_len: usize) -> Result<Tensor, TextError> {
    Ok(hidden.narrow(1, 0, real_len)?.mean(D::Minus2)?)
}

impl PromptEncoder for TextEncoder {
    /// Segments joined by spaces (the released CharaConsist code joins background, character
    /// and action that way).
    fn encode(&mut self, segments: &[&str]) -> anyhow::Result<Conditioning> {
        let enc = TextEncoder::encode(self, segments, Separator::Space)?;
        Ok(Conditioning {
            txt: enc.hidden,
            pooled: enc.pooled,
            segment_spans: enc.prompt.segment_spans,
            eos: enc.prompt.eos,
            padding: enc.prompt.padding,
            truncated: enc.prompt.truncated,
        })
    }

    fn unload(&mut self) {
        TextEncoder::unload(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_skips_padding_rows() {
        // Rows (1, 2), (3, 4), (100, 100): mean over the first two = (2, 3).
        let h = Tensor::new(&[[[1f32, 2.], [3., 4.], [100., 100.]]], &Device::Cpu).unwrap();
        let m = mean_over_real_tokens(&h, 2).unwrap();
        assert_eq!(m.to_vec2::<f32>().unwrap(), vec![vec![2.0, 3.0]]);
    }
}
