//! Final adaLN + linear projection back to latent token features.

use candle_core::{Result, Tensor};

use super::linear::{Linear, WeightSource};

use super::layers::PlainLayerNorm;

#[derive(Debug, Clone)]
pub struct FinalLayer {
    norm: PlainLayerNorm,
    linear: Linear,
    /// `adaLN_modulation.1`: produces (shift, scale) in that order (BFL layout; diffusers
    /// stores the halves the other way round, the loader swaps them).
    ada_ln: Linear,
}

impl FinalLayer {
    pub fn new(hidden: usize, out_channels: usize, vb: WeightSource) -> Result<Self> {
        Ok(Self {
            norm: PlainLayerNorm::new(hidden, vb.dtype(), vb.device())?,
            linear: vb.linear(hidden, out_channels, true, "linear")?,
            ada_ln: vb.linear(hidden, 2 * hidden, true, "adaLN_modulation.1")?,
        })
    }

    /// `x` `[B, L_img, C]`, `vec` `[B, C]`.
    pub fn forward(&self, x: &Tensor, vec: &Tensor) -> Result<Tensor> {
        let chunks = vec.silu()?.apply(&self.ada_ln)?.chunk(2, 1)?;
        let (shift, scale) = (chunks[0].unsqueeze(1)?, chunks[1].unsqueeze(1)?);
        let x = self
            .norm
            .forward(x)?
            .broadcast_mul(&(scale + 1.0)?)?
            .broadcast_add(&shift)?;
        x.apply(&self.linear)
    }
}
