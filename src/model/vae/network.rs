//! Encoder and decoder of the FLUX autoencoder, built with BFL tensor names.
//!
//! Written here rather than reusing `candle_transformers::models::flux::autoencoder` because that
//! one fixes 32 group-norm groups (so no smaller test model or differently grouped checkpoint can
//! be expressed) and its `encode` draws a random sample instead of returning the mean.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, VarBuilder};

use super::blocks::{AttnBlock, Downsample, ResnetBlock, Upsample};
use super::config::VaeConfig;

fn conv3x3(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        ..Default::default()
    };
    candle_nn::conv2d(c_in, c_out, 3, cfg, vb)
}

/// ResNet, attention, ResNet at the lowest resolution (shared by encoder and decoder).
#[derive(Debug, Clone)]
struct MidBlock {
    block_1: ResnetBlock,
    attn_1: AttnBlock,
    block_2: ResnetBlock,
}

impl MidBlock {
    fn new(channels: usize, num_groups: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            block_1: ResnetBlock::new(channels, channels, num_groups, vb.pp("block_1"))?,
            attn_1: AttnBlock::new(channels, num_groups, vb.pp("attn_1"))?,
            block_2: ResnetBlock::new(channels, channels, num_groups, vb.pp("block_2"))?,
        })
    }
}

impl Module for MidBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.apply(&self.block_1)?
            .apply(&self.attn_1)?
            .apply(&self.block_2)
    }
}

#[derive(Debug, Clone)]
struct Level {
    blocks: Vec<ResnetBlock>,
    /// `Downsample` in the encoder, `Upsample` in the decoder.
    resample: Option<Resample>,
}

#[derive(Debug, Clone)]
enum Resample {
    Down(Downsample),
    Up(Upsample),
}

impl Module for Level {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut h = xs.clone();
        for block in &self.blocks {
            h = h.apply(block)?;
        }
        match &self.resample {
            Some(Resample::Down(d)) => h.apply(d),
            Some(Resample::Up(u)) => h.apply(u),
            None => Ok(h),
        }
    }
}

/// Image [B, in, H, W] -> moments [B, 2 z, H / f, W / f] (mean then log-variance).
#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv2d,
    down: Vec<Level>,
    mid: MidBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    pub fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let g = cfg.num_groups;
        let conv_in = conv3x3(cfg.in_channels, cfg.ch, vb.pp("conv_in"))?;
        let mut c_in = cfg.ch;
        let mut down = Vec::with_capacity(cfg.num_levels());
        for level in 0..cfg.num_levels() {
            let vb_level = vb.pp("down").pp(level);
            let c_out = cfg.level_channels(level);
            let mut blocks = Vec::with_capacity(cfg.num_res_blocks);
            for j in 0..cfg.num_res_blocks {
                blocks.push(ResnetBlock::new(
                    c_in,
                    c_out,
                    g,
                    vb_level.pp("block").pp(j),
                )?);
                c_in = c_out;
            }
            let resample = if level + 1 != cfg.num_levels() {
                Some(Resample::Down(Downsample::new(
                    c_out,
                    vb_level.pp("downsample"),
                )?))
            } else {
                None
            };
            down.push(Level { blocks, resample });
        }
        Ok(Self {
            conv_in,
            down,
            mid: MidBlock::new(c_in, g, vb.pp("mid"))?,
            norm_out: candle_nn::group_norm(g, c_in, 1e-6, vb.pp("norm_out"))?,
            conv_out: conv3x3(c_in, 2 * cfg.z_channels, vb.pp("conv_out"))?,
        })
    }
}

impl Module for Encoder {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut h = xs.apply(&self.conv_in)?;
        for level in &self.down {
            h = h.apply(level)?;
        }
        h.apply(&self.mid)?
            .apply(&self.norm_out)?
            .silu()?
            .apply(&self.conv_out)
    }
}

/// Latents [B, z, h, w] (after un-scaling) -> image [B, out, h f, w f].
#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: Conv2d,
    mid: MidBlock,
    /// Indexed by BFL level: `up[0]` is the highest resolution and runs last.
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    pub fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let g = cfg.num_groups;
        let last = cfg.level_channels(cfg.num_levels() - 1);
        let conv_in = conv3x3(cfg.z_channels, last, vb.pp("conv_in"))?;
        let mid = MidBlock::new(last, g, vb.pp("mid"))?;
        let mut c_in = last;
        let mut up = Vec::with_capacity(cfg.num_levels());
        for level in (0..cfg.num_levels()).rev() {
            let vb_level = vb.pp("up").pp(level);
            let c_out = cfg.level_channels(level);
            let mut blocks = Vec::with_capacity(cfg.num_res_blocks + 1);
            for j in 0..=cfg.num_res_blocks {
                blocks.push(ResnetBlock::new(
                    c_in,
                    c_out,
                    g,
                    vb_level.pp("block").pp(j),
                )?);
                c_in = c_out;
            }
            let resample = if level != 0 {
                Some(Resample::Up(Upsample::new(c_out, vb_level.pp("upsample"))?))
            } else {
                None
            };
            up.push(Level { blocks, resample });
        }
        up.reverse();
        Ok(Self {
            conv_in,
            mid,
            up,
            norm_out: candle_nn::group_norm(g, c_in, 1e-6, vb.pp("norm_out"))?,
            conv_out: conv3x3(c_in, cfg.out_channels, vb.pp("conv_out"))?,
        })
    }
}

impl Module for Decoder {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut h = xs.apply(&self.conv_in)?.apply(&self.mid)?;
        for level in self.up.iter().rev() {
            h = h.apply(level)?;
        }
        h.apply(&self.norm_out)?.silu()?.apply(&self.conv_out)
    }
}
