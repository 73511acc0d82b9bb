//! Building blocks of the FLUX autoencoder (BFL `flux/modules/autoencoder.py`).

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, Linear, VarBuilder};

/// Group-norm epsilon of every norm in the FLUX autoencoder.
const NORM_EPS: f64 = 1e-6;

fn group_norm(num_groups: usize, channels: usize, vb: VarBuilder) -> Result<GroupNorm> {
    candle_nn::group_norm(num_groups, channels, NORM_EPS, vb)
}

fn conv3x3(c_in: usize, c_out: usize, stride: usize, vb: VarBuilder) -> Result<Conv2d> {
    let padding = if stride == 1 { 1 } else { 0 };
    let cfg = Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    };
    candle_nn::conv2d(c_in, c_out, 3, cfg, vb)
}

/// GroupNorm -> SiLU -> conv3x3, twice, plus a (1x1 projected when the width changes) skip.
#[derive(Debug, Clone)]
pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    nin_shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    pub fn new(c_in: usize, c_out: usize, num_groups: usize, vb: VarBuilder) -> Result<Self> {
        let nin_shortcut = if c_in == c_out {
            None
        } else {
            Some(candle_nn::conv2d(
                c_in,
                c_out,
                1,
                Default::default(),
                vb.pp("nin_shortcut"),
            )?)
        };
        Ok(Self {
            norm1: group_norm(num_groups, c_in, vb.pp("norm1"))?,
            conv1: conv3x3(c_in, c_out, 1, vb.pp("conv1"))?,
            norm2: group_norm(num_groups, c_out, vb.pp("norm2"))?,
            conv2: conv3x3(c_out, c_out, 1, vb.pp("conv2"))?,
            nin_shortcut,
        })
    }
}

impl Module for ResnetBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = xs
            .apply(&self.norm1)?
            .silu()?
            .apply(&self.conv1)?
            .apply(&self.norm2)?
            .silu()?
            .apply(&self.conv2)?;
        match &self.nin_shortcut {
            Some(shortcut) => xs.apply(shortcut)? + h,
            None => xs + h,
        }
    }
}

/// A projection stored either as a 1x1 convolution [C, C, 1, 1] (BFL) or a linear [C, C]
/// (diffusers); both are applied as a linear map over the channels of each pixel.
fn channel_linear(channels: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get_unchecked("weight")?;
    let dims = weight.dims().to_vec();
    let weight = match dims.as_slice() {
        [o, i] | [o, i, 1, 1] if *o == channels && *i == channels => {
            weight.reshape((channels, channels))?
        }
        _ => candle_core::bail!(
            "attention weight `{}` has shape {dims:?}, expected [{channels}, {channels}] or [{channels}, {channels}, 1, 1]",
            vb.prefix()
        ),
    };
    let bias = vb.get(channels, "bias")?;
    Ok(Linear::new(weight, Some(bias)))
}

/// Single-head self-attention over all pixels, with a residual connection.
#[derive(Debug, Clone)]
pub struct AttnBlock {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    proj_out: Linear,
}

impl AttnBlock {
    pub fn new(channels: usize, num_groups: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: group_norm(num_groups, channels, vb.pp("norm"))?,
            q: channel_linear(channels, vb.pp("q"))?,
            k: channel_linear(channels, vb.pp("k"))?,
            v: channel_linear(channels, vb.pp("v"))?,
            proj_out: channel_linear(channels, vb.pp("proj_out"))?,
        })
    }
}

impl Module for AttnBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        // [B, C, H, W] -> [B, HW, C]: one token per pixel.
        let tokens = xs
            .apply(&self.norm)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = tokens.apply(&self.q)?;
        let k = tokens.apply(&self.k)?;
        let v = tokens.apply(&self.v)?;
        let attended = attention_in_query_chunks(&q, &k, &v, MAX_SCORES_PER_CHUNK)?;
        let out = attended
            .apply(&self.proj_out)?
            .transpose(1, 2)?
            .reshape((b, c, h, w))?;
        xs + out
    }
}

/// Largest attention score matrix computed at once (64 MB in f32). At 1024x1024 pixels the
/// mid block attends over 128 x 128 = 16384 tokens: a full score matrix would take 1 GB, and
/// the softmax a second one.
const MAX_SCORES_PER_CHUNK: usize = 1 << 24;

/// softmax(q k^T / sqrt(d)) v for q, k, v [B, N, d], computed for blocks of query rows so that
/// at most `max_scores` scores exist at a time. Each row's softmax only needs its own scores,
/// so the result is the same as in one piece.
fn attention_in_query_chunks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    max_scores: usize,
) -> Result<Tensor> {
    let (b, n, d) = q.dims3()?;
    let keys = k.dim(1)?;
    let scale = 1.0 / (d as f64).sqrt();
    let k_t = k.t()?;
    let rows = (max_scores / (b * keys).max(1)).clamp(1, n.max(1));
    let mut chunks = Vec::with_capacity(n.div_ceil(rows));
    let mut start = 0;
    while start < n {
        let len = rows.min(n - start);
        let scores = (q.narrow(1, start, len)?.matmul(&k_t)? * scale)?;
        chunks.push(candle_nn::ops::softmax_last_dim(&scores)?.matmul(v)?);
        start += len;
    }
    if chunks.len() == 1 {
        Ok(chunks.remove(0))
    } else {
        Tensor::cat(&chunks, 1)
    }
}

/// Stride-2 3x3 convolution after padding one zero row/column at the bottom/right
/// (the asymmetric padding of the reference).
#[derive(Debug, Clone)]
pub struct Downsample {
    conv: Conv2d,
}

impl Downsample {
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: conv3x3(channels, channels, 2, vb.pp("conv"))?,
        })
    }
}

impl Module for Downsample {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.pad_with_zeros(D::Minus1, 0, 1)?
            .pad_with_zeros(D::Minus2, 0, 1)?
            .apply(&self.conv)
    }
}

/// Nearest-neighbour 2x upsampling followed by a 3x3 convolution.
#[derive(Debug, Clone)]
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: conv3x3(channels, channels, 1, vb.pp("conv"))?,
        })
    }
}

impl Module for Upsample {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        xs.upsample_nearest2d(h * 2, w * 2)?.apply(&self.conv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::HashMap;

    fn vb_from<S: ToString>(tensors: Vec<(S, Tensor)>) -> VarBuilder<'static> {
        let map: HashMap<String, Tensor> = tensors
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        VarBuilder::from_tensors(map, DType::F32, &Device::Cpu)
    }

    #[test]
    fn downsample_pads_bottom_right_only() {
        // No padding on the top/left: a 3x3 kernel that picks its centre tap, at stride 2 on a
        // 4x4 input, reads pixels (1,1), (1,3), (3,1), (3,3) (symmetric padding would read
        // (0,0), ...); a kernel that picks its bottom-right tap reads the added zeros.
        let dev = Device::Cpu;
        let mut centre = vec![0f32; 9];
        centre[4] = 1.0;
        let vb = vb_from(vec![
            (
                "conv.weight",
                Tensor::from_vec(centre, (1, 1, 3, 3), &dev).unwrap(),
            ),
            ("conv.bias", Tensor::zeros(1, DType::F32, &dev).unwrap()),
        ]);
        let down = Downsample::new(1, vb).unwrap();
        let x = Tensor::arange(0f32, 16.0, &dev)
            .unwrap()
            .reshape((1, 1, 4, 4))
            .unwrap();
        let y = down.forward(&x).unwrap().flatten_all().unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), vec![5.0, 7.0, 13.0, 15.0]);

        let mut corner = vec![0f32; 9];
        corner[8] = 1.0;
        let vb = vb_from(vec![
            (
                "conv.weight",
                Tensor::from_vec(corner, (1, 1, 3, 3), &dev).unwrap(),
            ),
            ("conv.bias", Tensor::zeros(1, DType::F32, &dev).unwrap()),
        ]);
        let y = Downsample::new(1, vb)
            .unwrap()
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap();
        // Reads (2,2), (2,4)=pad, (4,2)=pad, (4,4)=pad.
        assert_eq!(y.to_vec1::<f32>().unwrap(), vec![10.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn attention_accepts_linear_and_conv_weights_alike() {
        let dev = Device::Cpu;
        let c = 4;
        let eye = Tensor::eye(c, DType::F32, &dev).unwrap();
        let make = |as_conv: bool| {
            let w = if as_conv {
                eye.reshape((c, c, 1, 1)).unwrap()
            } else {
                eye.clone()
            };
            let mut t = vec![
                (
                    "norm.weight".to_string(),
                    Tensor::ones(c, DType::F32, &dev).unwrap(),
                ),
                (
                    "norm.bias".to_string(),
                    Tensor::zeros(c, DType::F32, &dev).unwrap(),
                ),
            ];
            for p in ["q", "k", "v", "proj_out"] {
                t.push((format!("{p}.weight"), w.clone()));
                t.push((
                    format!("{p}.bias"),
                    Tensor::zeros(c, DType::F32, &dev).unwrap(),
                ));
            }
            AttnBlock::new(c, 2, vb_from(t)).unwrap()
        };
        let x = Tensor::arange(0f32, 24.0, &dev)
            .unwrap()
            .reshape((1, c, 2, 3))
            .unwrap();
        let a = make(true).forward(&x).unwrap();
        let b = make(false).forward(&x).unwrap();
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn chunked_attention_equals_one_piece() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (2, 10, 4), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (2, 10, 4), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (2, 10, 4), &dev).unwrap();
        let whole = attention_in_query_chunks(&q, &k, &v, usize::MAX).unwrap();
        // 2 x 3 x 10 scores per chunk: chunks of 3, 3, 3 and 1 query rows.
        let chunked = attention_in_query_chunks(&q, &k, &v, 60).unwrap();
        let diff = (whole - chunked).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
        // Reference for one row: softmax of the scaled scores, by hand.
        let (q0, k0, v0) = (
            q.get(0).unwrap().to_vec2::<f32>().unwrap(),
            k.get(0).unwrap().to_vec2::<f32>().unwrap(),
            v.get(0).unwrap().to_vec2::<f32>().unwrap(),
        );
        let scores: Vec<f32> = k0
            .iter()
            .map(|kr| q0[0].iter().zip(kr).map(|(a, b)| a * b).sum::<f32>() / 2.0)
            .collect();
        let max = scores.iter().cloned().fold(f32::MIN, f32::max);
        let weights: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f32 = weights.iter().sum();
        let expected: Vec<f32> = (0..4)
            .map(|j| {
                weights
                    .iter()
                    .zip(&v0)
                    .map(|(w, vr)| w * vr[j])
                    .sum::<f32>()
                    / total
            })
            .collect();
        let got = attention_in_query_chunks(&q, &k, &v, 60)
            .unwrap()
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() < 1e-5, "{got:?} vs {expected:?}");
        }
    }

    #[test]
    fn attention_rejects_a_wrong_weight_shape() {
        let dev = Device::Cpu;
        let vb = vb_from(vec![
            ("q.weight", Tensor::zeros((4, 2), DType::F32, &dev).unwrap()),
            ("q.bias", Tensor::zeros(4, DType::F32, &dev).unwrap()),
        ]);
        let err = channel_linear(4, vb.pp("q")).unwrap_err().to_string();
        assert!(err.contains("[4, 2]"), "{err}");
    }
}
