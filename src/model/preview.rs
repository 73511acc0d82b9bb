//! Cheap live previews: a fixed linear map from latent channels to RGB.
//!
//! Decoding with the VAE at every step would cost more than the step itself; a 16x3 linear
//! map (plus bias) of the predicted clean latents gives a recognisable thumbnail for free.

use candle_core::{DType, Result, Tensor};
use image::RgbImage;

/// `rgb = latent · weights + bias`, per latent pixel, in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct LatentPreview {
    /// One row per latent channel.
    pub weights: Vec<[f32; 3]>,
    pub bias: [f32; 3],
}

impl LatentPreview {
    /// A widely used least-squares fit for the FLUX.1 autoencoder's 16 channels.
    pub fn flux() -> Self {
        let weights = vec![
            [-0.0346, 0.0244, 0.0681],
            [0.0034, 0.0210, 0.0687],
            [0.0275, -0.0668, -0.0433],
            [-0.0174, 0.0160, 0.0617],
            [0.0859, 0.0721, 0.0329],
            [0.0004, 0.0383, 0.0115],
            [0.0405, 0.0861, 0.0915],
            [-0.0236, -0.0185, -0.0259],
            [-0.0245, 0.0250, 0.1180],
            [0.1008, 0.0755, -0.0421],
            [-0.0515, 0.0201, 0.0011],
            [0.0428, -0.0012, -0.0036],
            [0.0817, 0.0765, 0.0749],
            [-0.1264, -0.0522, -0.1103],
            [-0.0280, -0.0881, -0.0499],
            [-0.1262, -0.0982, -0.0778],
        ];
        Self {
            weights,
            bias: [-0.0329, -0.0718, -0.0851],
        }
    }

    /// Fits the map by least squares from latent pixels `[N, C]` to RGB `[N, 3]` (both f32),
    /// e.g. from VAE-encoded images, so a new autoencoder gets its own preview.
    pub fn fit(latents: &[Vec<f32>], rgb: &[[f32; 3]]) -> Option<Self> {
        let c = latents.first()?.len();
        let n = latents.len();
        if n != rgb.len() || n <= c {
            return None;
        }
        // Normal equations with a bias column: (X^T X) W = X^T Y, solved by faer's LU.
        let x = faer::Mat::<f64>::from_fn(
            n,
            c + 1,
            |i, j| if j < c { latents[i][j] as f64 } else { 1.0 },
        );
        let y = faer::Mat::<f64>::from_fn(n, 3, |i, j| rgb[i][j] as f64);
        let xtx = x.transpose() * &x;
        let xty = x.transpose() * &y;
        let w = faer::linalg::solvers::Solve::solve(&xtx.full_piv_lu(), &xty);
        let weights = (0..c)
            .map(|i| [w[(i, 0)] as f32, w[(i, 1)] as f32, w[(i, 2)] as f32])
            .collect();
        Some(Self {
            weights,
            bias: [w[(c, 0)] as f32, w[(c, 1)] as f32, w[(c, 2)] as f32],
        })
    }

    /// Unpacked latents `[1, C, h, w]` -> an `w x h` RGB image.
    pub fn to_rgb(&self, latents: &Tensor) -> Result<RgbImage> {
        let (_, c, h, w) = latents.dims4()?;
        if c != self.weights.len() {
            candle_core::bail!(
                "preview map has {} channels, latents have {c}",
                self.weights.len()
            );
        }
        let flat: Vec<f32> = latents
            .get(0)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let mut img = RgbImage::new(w as u32, h as u32);
        for (i, px) in img.pixels_mut().enumerate() {
            let mut rgb = self.bias;
            for (ch, wrow) in self.weights.iter().enumerate() {
                let v = flat[ch * h * w + i];
                for k in 0..3 {
                    rgb[k] += v * wrow[k];
                }
            }
            px.0 = rgb.map(|v| (((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round()) as u8);
        }
        Ok(img)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn maps_channels_by_hand() -> Result<()> {
        let p = LatentPreview {
            weights: vec![[1.0, 0.0, 0.0], [0.0, 0.5, 0.0]],
            bias: [0.0, 0.0, -1.0],
        };
        // One pixel: channel 0 = 1 -> red 1 -> 255; channel 1 = 0 -> green 0 -> 128; blue -1 -> 0.
        let t = Tensor::new(&[[[[1f32]], [[0f32]]]], &Device::Cpu)?;
        let img = p.to_rgb(&t)?;
        assert_eq!(img.get_pixel(0, 0).0, [255, 128, 0]);
        Ok(())
    }

    #[test]
    fn fit_recovers_a_known_map() {
        let truth = LatentPreview {
            weights: vec![[0.2, -0.1, 0.0], [0.0, 0.3, 0.1]],
            bias: [0.05, 0.0, -0.2],
        };
        let lat: Vec<Vec<f32>> = (0..20)
            .map(|i| vec![(i as f32 * 0.37).sin(), (i as f32 * 0.91).cos()])
            .collect();
        let rgb: Vec<[f32; 3]> = lat
            .iter()
            .map(|l| {
                let mut o = truth.bias;
                for (c, w) in truth.weights.iter().enumerate() {
                    for k in 0..3 {
                        o[k] += l[c] * w[k];
                    }
                }
                o
            })
            .collect();
        let fit = LatentPreview::fit(&lat, &rgb).unwrap();
        for (a, b) in fit.weights.iter().zip(&truth.weights) {
            for k in 0..3 {
                assert!((a[k] - b[k]).abs() < 1e-4);
            }
        }
    }
}
