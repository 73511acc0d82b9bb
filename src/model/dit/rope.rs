//! 3-axis rotary position embedding (RoPE) of FLUX.
//!
//! Each token has a position `(index, row, column)`; axis `a` gets `axes_dim[a]` of the head's
//! dimensions, rotated in adjacent pairs `(x[2j], x[2j+1])` by `pos_a * theta^(-2j / axes_dim[a])`.
//! Tables are built in f32 whatever the model's dtype, as the reference does, because bf16
//! angles for positions of 64 and more would be off by whole radians.

use candle_core::{DType, Device, Result, Tensor};

/// Cosine and sine tables `[L, D/2]` (f32) for a sequence of positions.
#[derive(Debug, Clone)]
pub struct RopeTables {
    pub cos: Tensor,
    pub sin: Tensor,
}

/// Per-pair rotation frequencies of one head, axis after axis.
pub fn rope_frequencies(axes_dim: &[usize], theta: f64) -> Vec<(usize, f64)> {
    let mut out = Vec::new();
    for (axis, &dim) in axes_dim.iter().enumerate() {
        for j in (0..dim).step_by(2) {
            out.push((axis, 1.0 / theta.powf(j as f64 / dim as f64)));
        }
    }
    out
}

impl RopeTables {
    /// Tables for positions given as rows of `(index, row, column)`.
    pub fn from_positions(
        positions: &[[f32; 3]],
        axes_dim: &[usize],
        theta: f64,
        device: &Device,
    ) -> Result<Self> {
        let freqs = rope_frequencies(axes_dim, theta);
        let half = freqs.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for pos in positions {
            for &(axis, freq) in &freqs {
                // The angle is formed in f32 like the reference (positions are f32 ids).
                let angle = pos[axis] * freq as f32;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let shape = (positions.len(), half);
        Ok(Self {
            cos: Tensor::from_vec(cos, shape, device)?,
            sin: Tensor::from_vec(sin, shape, device)?,
        })
    }

    /// Tables from an ids tensor `[L, 3]` or `[1, L, 3]` (diffusers / BFL conventions).
    pub fn from_ids(ids: &Tensor, axes_dim: &[usize], theta: f64) -> Result<Self> {
        let ids = if ids.rank() == 3 {
            ids.squeeze(0)?
        } else {
            ids.clone()
        };
        let rows = ids.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let mut positions = Vec::with_capacity(rows.len());
        for r in rows {
            if r.len() != axes_dim.len() {
                candle_core::bail!(
                    "position ids have {} axes, RoPE has {}",
                    r.len(),
                    axes_dim.len()
                );
            }
            let mut p = [0f32; 3];
            for (slot, v) in p.iter_mut().zip(r) {
                *slot = v;
            }
            positions.push(p);
        }
        Self::from_positions(&positions, axes_dim, theta, ids.device())
    }

    pub fn len(&self) -> usize {
        self.cos.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tables of some of the positions, in the given order.
    pub fn select(&self, index: &[u32]) -> Result<Self> {
        let idx = Tensor::new(index, self.cos.device())?;
        Ok(Self {
            cos: self.cos.index_select(&idx, 0)?,
            sin: self.sin.index_select(&idx, 0)?,
        })
    }

    /// Rotates `x` `[B, H, L, D]` (L = number of table rows). Computed in f32 and cast back,
    /// as the reference does for half-precision models.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let x32 = x.to_dtype(DType::F32)?.contiguous()?;
        let out = candle_nn::rotary_emb::rope_i(&x32, &self.cos, &self.sin)?;
        out.to_dtype(dtype)
    }
}

/// Position ids of a latent grid, row-major: `(0, row, col)`.
pub fn image_positions(rows: usize, cols: usize) -> Vec<[f32; 3]> {
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            out.push([0.0, r as f32, c as f32]);
        }
    }
    out
}

/// Joint positions: `txt_len` text tokens at the origin, then the image grid.
pub fn joint_positions(txt_len: usize, rows: usize, cols: usize) -> Vec<[f32; 3]> {
    let mut out = vec![[0.0; 3]; txt_len];
    out.extend(image_positions(rows, cols));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequencies_follow_each_axis() {
        let f = rope_frequencies(&[2, 4], 100.0);
        // axis 0: j=0 -> 1; axis 1: j=0 -> 1, j=2 -> 100^(-1/2) = 0.1
        assert_eq!(f.len(), 3);
        assert_eq!(f[0], (0, 1.0));
        assert_eq!(f[1], (1, 1.0));
        assert!((f[2].1 - 0.1).abs() < 1e-12);
    }

    #[test]
    fn rotation_of_a_pair_by_hand() -> Result<()> {
        // One token at row 1 with axes [0, 2, 0]: the single pair turns by 1 radian.
        let t = RopeTables::from_positions(&[[0.0, 1.0, 0.0]], &[0, 2, 0], 10_000.0, &Device::Cpu)?;
        let x = Tensor::new(&[[[[1f32, 0.0]]]], &Device::Cpu)?;
        let y = t.apply(&x)?.flatten_all()?.to_vec1::<f32>()?;
        assert!((y[0] - 1f32.cos()).abs() < 1e-6);
        assert!((y[1] - 1f32.sin()).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn selecting_positions_equals_building_them() -> Result<()> {
        let pos = joint_positions(2, 2, 3);
        let all = RopeTables::from_positions(&pos, &[2, 4, 4], 10_000.0, &Device::Cpu)?;
        let picked = all.select(&[6, 3])?;
        let direct =
            RopeTables::from_positions(&[pos[6], pos[3]], &[2, 4, 4], 10_000.0, &Device::Cpu)?;
        let d = (picked.cos - direct.cos)?
            .abs()?
            .sum_all()?
            .to_scalar::<f32>()?;
        assert_eq!(d, 0.0);
        Ok(())
    }
}
