//! Timestep, guidance and pooled-vector embeddings.

use candle_core::{D, DType, Module, Result, Tensor};

use super::linear::{Linear, WeightSource};

/// Width of the sinusoidal embedding of timesteps and guidance.
pub const TIMESTEP_DIM: usize = 256;

/// Sinusoidal embedding of `t` `[B]`: the input is multiplied by 1000 first (FLUX feeds
/// t in [0, 1] and raw guidance), frequencies `exp(-ln(10000) i / half)`, cosines first.
pub fn timestep_embedding(t: &Tensor, dim: usize, dtype: DType) -> Result<Tensor> {
    const TIME_FACTOR: f64 = 1000.0;
    const MAX_PERIOD: f64 = 10_000.0;
    if dim % 2 == 1 {
        candle_core::bail!("timestep embedding width {dim} is odd")
    }
    let half = dim / 2;
    let dev = t.device();
    let t = (t.to_dtype(DType::F32)? * TIME_FACTOR)?;
    let freqs = (Tensor::arange(0u32, half as u32, dev)?.to_dtype(DType::F32)?
        * (-MAX_PERIOD.ln() / half as f64))?
        .exp()?;
    let args = t.unsqueeze(1)?.broadcast_mul(&freqs.unsqueeze(0)?)?;
    Tensor::cat(&[args.cos()?, args.sin()?], D::Minus1)?.to_dtype(dtype)
}

/// `out_layer(silu(in_layer(x)))`.
#[derive(Debug, Clone)]
pub struct MlpEmbedder {
    in_layer: Linear,
    out_layer: Linear,
}

impl MlpEmbedder {
    pub fn new(in_dim: usize, hidden: usize, vb: WeightSource) -> Result<Self> {
        Ok(Self {
            in_layer: vb.linear(in_dim, hidden, true, "in_layer")?,
            out_layer: vb.linear(hidden, hidden, true, "out_layer")?,
        })
    }
}

impl Module for MlpEmbedder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.apply(&self.in_layer)?.silu()?.apply(&self.out_layer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn embedding_of_zero_is_cos_one_then_sin_zero() -> Result<()> {
        let e = timestep_embedding(&Tensor::new(&[0f32], &Device::Cpu)?, 8, DType::F32)?;
        assert_eq!(e.to_vec2::<f32>()?[0], vec![1., 1., 1., 1., 0., 0., 0., 0.]);
        Ok(())
    }

    #[test]
    fn embedding_scales_by_one_thousand() -> Result<()> {
        // t = 0.001 -> argument 1 * freq; the first frequency is 1.
        let e = timestep_embedding(&Tensor::new(&[0.001f32], &Device::Cpu)?, 4, DType::F32)?;
        let v = e.to_vec2::<f32>()?[0].clone();
        assert!((v[0] - 1f32.cos()).abs() < 1e-5);
        assert!((v[2] - 1f32.sin()).abs() < 1e-5);
        // second frequency: exp(-ln(1e4) / 2) = 0.01
        assert!((v[1] - 0.01f32.cos()).abs() < 1e-6);
        Ok(())
    }
}
