//! The tiny test model: the real FLUX architecture at toy size with deterministic random
//! weights, a pixel codec, and a word-hashing prompt encoder. It exercises every mechanism
//! of the engine (queueing, progress, cancellation, methods) in milliseconds; its images
//! are not meant to look like anything.

use std::hash::{Hash, Hasher};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::model::codec::{Codec, PixelCodec};
use crate::model::dit::init::{random_weights, seeded_normal};
use crate::model::dit::{FluxConfig, FluxTransformer};
use crate::model::pipeline::{Conditioning, Pipeline, PromptEncoder};
use crate::model::sampler::ScheduleShift;

/// Text length of the tiny model.
pub const TINY_TEXT_LEN: usize = 32;

pub fn tiny_config() -> FluxConfig {
    FluxConfig {
        in_channels: 48,
        vec_in_dim: 16,
        context_in_dim: 16,
        hidden_size: 32,
        mlp_ratio: 2.0,
        num_heads: 2,
        depth: 2,
        depth_single_blocks: 4,
        axes_dim: vec![4, 6, 6],
        theta: 10_000.0,
        qkv_bias: true,
        guidance_embed: true,
    }
}

pub fn tiny_pipeline(seed: u64, device: &Device) -> candle_core::Result<Pipeline> {
    let cfg = tiny_config();
    let w = random_weights(&cfg, seed, DType::F32, device)?;
    let transformer = FluxTransformer::new(&cfg, VarBuilder::from_tensors(w, DType::F32, device))?;
    Ok(Pipeline {
        transformer,
        codec: Codec::Pixels(PixelCodec { factor: 2 }),
        shift: ScheduleShift::Resolution,
        prediction: crate::model::sampler::Prediction::Velocity,
        preview: None,
    })
}

/// One token per word; each word's features are a fixed random vector seeded by its hash.
pub struct HashedWordEncoder {
    pub dim: usize,
    pub max_len: usize,
    pub device: Device,
}

fn word_vector(word: &str, dim: usize, device: &Device) -> candle_core::Result<Tensor> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    word.hash(&mut h);
    seeded_normal(h.finish(), &[dim], device)
}

impl PromptEncoder for HashedWordEncoder {
    fn encode(&mut self, segments: &[&str]) -> anyhow::Result<Conditioning> {
        let mut rows = Vec::new();
        let mut spans = Vec::new();
        let mut truncated = false;
        for seg in segments {
            let start = rows.len();
            for word in seg.split_whitespace() {
                // Keep one slot for the end token.
                if rows.len() + 1 >= self.max_len {
                    truncated = true;
                    break;
                }
                rows.push(word_vector(&word.to_lowercase(), self.dim, &self.device)?);
            }
            spans.push(start..rows.len());
        }
        let eos = rows.len();
        rows.push(word_vector("</s>", self.dim, &self.device)?);
        let real = Tensor::stack(&rows, 0)?;
        let pooled = real.mean(0)?.unsqueeze(0)?;
        let pad = Tensor::zeros(
            (self.max_len - rows.len(), self.dim),
            DType::F32,
            &self.device,
        )?;
        let txt = Tensor::cat(&[real, pad], 0)?.unsqueeze(0)?;
        Ok(Conditioning {
            txt,
            pooled,
            segment_spans: spans,
            eos,
            padding: eos + 1..self.max_len,
            truncated,
        })
    }
}
