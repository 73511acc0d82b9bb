//! Sizes of a FLUX-family transformer.

use serde::{Deserialize, Serialize};

/// Architecture hyper-parameters of a FLUX.1-style DiT (names follow the original release).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FluxConfig {
    /// Features of one packed latent token (16 latent channels x 2x2 patch = 64 for FLUX.1).
    pub in_channels: usize,
    /// Width of the pooled text vector (CLIP-L: 768).
    pub vec_in_dim: usize,
    /// Width of the per-token text features (T5-XXL: 4096).
    pub context_in_dim: usize,
    pub hidden_size: usize,
    pub mlp_ratio: f64,
    pub num_heads: usize,
    /// Number of double-stream blocks.
    pub depth: usize,
    /// Number of single-stream blocks.
    pub depth_single_blocks: usize,
    /// RoPE dimensions per position axis (index, row, column); they sum to the head width.
    pub axes_dim: Vec<usize>,
    pub theta: f64,
    pub qkv_bias: bool,
    /// Distilled guidance embedding (FLUX.1-dev has one, schnell does not).
    pub guidance_embed: bool,
}

impl FluxConfig {
    /// FLUX.1-dev.
    pub fn dev() -> Self {
        Self {
            in_channels: 64,
            vec_in_dim: 768,
            context_in_dim: 4096,
            hidden_size: 3072,
            mlp_ratio: 4.0,
            num_heads: 24,
            depth: 19,
            depth_single_blocks: 38,
            axes_dim: vec![16, 56, 56],
            theta: 10_000.0,
            qkv_bias: true,
            guidance_embed: true,
        }
    }

    /// FLUX.1-schnell: the dev architecture without the guidance embedding.
    pub fn schnell() -> Self {
        Self {
            guidance_embed: false,
            ..Self::dev()
        }
    }

    /// The "small" configuration used by the benchmarks: FLUX-dev's head width and
    /// text width with 6 heads, 4 double and 8 single blocks (163 M parameters).
    pub fn small() -> Self {
        Self {
            hidden_size: 768,
            num_heads: 6,
            depth: 4,
            depth_single_blocks: 8,
            ..Self::dev()
        }
    }

    /// A tiny configuration for tests: every part of the architecture, a few thousand weights.
    pub fn tiny(guidance_embed: bool) -> Self {
        Self {
            in_channels: 16,
            vec_in_dim: 12,
            context_in_dim: 24,
            hidden_size: 32,
            mlp_ratio: 4.0,
            num_heads: 2,
            depth: 2,
            depth_single_blocks: 4,
            axes_dim: vec![4, 6, 6],
            theta: 10_000.0,
            qkv_bias: true,
            guidance_embed,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    pub fn mlp_hidden(&self) -> usize {
        (self.hidden_size as f64 * self.mlp_ratio) as usize
    }

    /// Total number of transformer blocks (double then single), as the papers count them.
    pub fn num_blocks(&self) -> usize {
        self.depth + self.depth_single_blocks
    }

    /// Checks the invariants the forward pass relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.num_heads == 0 || self.hidden_size % self.num_heads != 0 {
            return Err(format!(
                "hidden size {} is not a multiple of {} heads",
                self.hidden_size, self.num_heads
            ));
        }
        let rope: usize = self.axes_dim.iter().sum();
        if rope != self.head_dim() {
            return Err(format!(
                "RoPE axes {:?} sum to {rope}, but a head is {} wide",
                self.axes_dim,
                self.head_dim()
            ));
        }
        if self.axes_dim.iter().any(|d| d % 2 == 1) {
            return Err(format!("RoPE axes {:?} must all be even", self.axes_dim));
        }
        Ok(())
    }

    /// Number of parameters of a model of this size.
    pub fn parameter_count(&self) -> usize {
        let h = self.hidden_size;
        let m = self.mlp_hidden();
        let hd = self.head_dim();
        let lin = |i: usize, o: usize| i * o + o;
        let mlp_embedder = |i: usize| lin(i, h) + lin(h, h);
        let mut n = lin(self.in_channels, h) + lin(self.context_in_dim, h);
        n += mlp_embedder(256) + mlp_embedder(self.vec_in_dim);
        if self.guidance_embed {
            n += mlp_embedder(256);
        }
        let qkv = if self.qkv_bias {
            lin(h, 3 * h)
        } else {
            h * 3 * h
        };
        let stream = lin(h, 6 * h) + qkv + 2 * hd + lin(h, h) + lin(h, m) + lin(m, h);
        n += self.depth * 2 * stream;
        n +=
            self.depth_single_blocks * (lin(h, 3 * h + m) + lin(h + m, h) + 2 * hd + lin(h, 3 * h));
        n += lin(h, 2 * h) + lin(h, self.in_channels);
        n
    }
}
