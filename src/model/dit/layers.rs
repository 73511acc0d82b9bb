//! Building blocks shared by the double and single blocks: modulation, norms, MLP.

use super::cpu_kernels::gelu_tanh;
use super::linear::{Linear, WeightSource};
use candle_core::{D, DType, Device, Module, Result, Tensor};

/// LayerNorm without learnt affine parameters (eps 1e-6), as FLUX uses everywhere.
/// Runs the fused kernel with constant weight 1 and bias 0.
#[derive(Debug, Clone)]
pub struct PlainLayerNorm {
    ones: Tensor,
    zeros: Tensor,
}

impl PlainLayerNorm {
    pub fn new(dim: usize, dtype: DType, device: &Device) -> Result<Self> {
        Ok(Self {
            ones: Tensor::ones(dim, dtype, device)?,
            zeros: Tensor::zeros(dim, dtype, device)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(&x.contiguous()?, &self.ones, &self.zeros, 1e-6)
    }
}

/// Shift, scale and gate of one adaLN modulation.
#[derive(Debug, Clone)]
pub struct ModulationOut {
    pub shift: Tensor,
    pub scale: Tensor,
    pub gate: Tensor,
}

impl ModulationOut {
    /// `x * (1 + scale) + shift`
    pub fn scale_shift(&self, x: &Tensor) -> Result<Tensor> {
        x.broadcast_mul(&(&self.scale + 1.0)?)?
            .broadcast_add(&self.shift)
    }

    pub fn gate(&self, x: &Tensor) -> Result<Tensor> {
        x.broadcast_mul(&self.gate)
    }
}

/// `Linear(silu(vec))` chunked into groups of (shift, scale, gate).
#[derive(Debug, Clone)]
pub struct Modulation {
    lin: Linear,
    groups: usize,
}

impl Modulation {
    pub fn new(dim: usize, groups: usize, vb: WeightSource) -> Result<Self> {
        let lin = vb.linear(dim, 3 * groups * dim, true, "lin")?;
        Ok(Self { lin, groups })
    }

    /// `vec` `[B, C]` -> `groups` modulations of `[B, 1, C]`.
    pub fn forward(&self, vec: &Tensor) -> Result<Vec<ModulationOut>> {
        let ys = vec.silu()?.apply(&self.lin)?.unsqueeze(1)?;
        let chunks = ys.chunk(3 * self.groups, D::Minus1)?;
        Ok(chunks
            .chunks(3)
            .map(|c| ModulationOut {
                shift: c[0].clone(),
                scale: c[1].clone(),
                gate: c[2].clone(),
            })
            .collect())
    }
}

/// Per-head RMSNorm of queries and keys (learnt scale, eps 1e-6).
#[derive(Debug, Clone)]
pub struct QkNorm {
    query_scale: Tensor,
    key_scale: Tensor,
}

impl QkNorm {
    pub fn new(head_dim: usize, vb: WeightSource) -> Result<Self> {
        Ok(Self {
            query_scale: vb.get(head_dim, "query_norm.scale")?,
            key_scale: vb.get(head_dim, "key_norm.scale")?,
        })
    }

    /// `[B, L, H*D]` projections -> `[B, H, L, D]` normalised queries and keys.
    pub fn forward(&self, q: &Tensor, k: &Tensor, num_heads: usize) -> Result<(Tensor, Tensor)> {
        let q = rms_heads(q, &self.query_scale, num_heads)?;
        let k = rms_heads(k, &self.key_scale, num_heads)?;
        Ok((q, k))
    }
}

fn rms_heads(x: &Tensor, scale: &Tensor, num_heads: usize) -> Result<Tensor> {
    let (b, l, _) = x.dims3()?;
    let x = x.contiguous()?.reshape((b, l, num_heads, ()))?;
    // The norm runs in f32 like the reference, then returns to the model's dtype.
    let dtype = x.dtype();
    let y = candle_nn::ops::rms_norm(&x.to_dtype(DType::F32)?, &scale.to_dtype(DType::F32)?, 1e-6)?;
    y.to_dtype(dtype)?.transpose(1, 2)?.contiguous()
}

/// `[B, L, H*D]` -> `[B, H, L, D]`.
pub fn split_heads(x: &Tensor, num_heads: usize) -> Result<Tensor> {
    let (b, l, _) = x.dims3()?;
    x.contiguous()?
        .reshape((b, l, num_heads, ()))?
        .transpose(1, 2)?
        .contiguous()
}

/// Two-layer MLP with tanh-approximated GELU (`img_mlp.0`, `img_mlp.2`).
#[derive(Debug, Clone)]
pub struct Mlp {
    lin1: Linear,
    lin2: Linear,
}

impl Mlp {
    pub fn new(dim: usize, hidden: usize, vb: WeightSource) -> Result<Self> {
        Ok(Self {
            lin1: vb.linear(dim, hidden, true, "0")?,
            lin2: vb.linear(hidden, dim, true, "2")?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        gelu_tanh(&x.apply(&self.lin1)?)?.apply(&self.lin2)
    }
}

/// The q, k, v columns of a fused projection output `[B, L, 3C (+ M)]`, each `[B, L, C]`.
pub fn split_qkv(x: &Tensor, hidden: usize) -> Result<(Tensor, Tensor, Tensor)> {
    let q = x.narrow(D::Minus1, 0, hidden)?;
    let k = x.narrow(D::Minus1, hidden, hidden)?;
    let v = x.narrow(D::Minus1, 2 * hidden, hidden)?;
    Ok((q, k, v))
}
