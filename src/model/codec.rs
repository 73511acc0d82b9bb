//! Between pixels and the transformer's latent space: the FLUX autoencoder, or the
//! space-to-depth pixel codec of the built-in model.

use candle_core::{DType, Device, Result, Tensor};
use image::RgbImage;

use super::vae::FluxVae;

/// The built-in model works on pixels directly: `[3, H, W]` in [-1, 1] is rearranged into
/// `[3 f^2, H/f, W/f]` (space-to-depth by `factor`), channel index `c f^2 + dy f + dx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelCodec {
    pub factor: usize,
}

impl PixelCodec {
    pub fn channels(&self) -> usize {
        3 * self.factor * self.factor
    }

    /// `[B, 3, H, W]` -> `[B, 3 f^2, H/f, W/f]`.
    pub fn space_to_depth(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let f = self.factor;
        x.reshape((b, c, h / f, f, w / f, f))?
            .permute((0, 1, 3, 5, 2, 4))?
            .reshape((b, c * f * f, h / f, w / f))
    }

    /// Inverse of [`PixelCodec::space_to_depth`].
    pub fn depth_to_space(&self, z: &Tensor) -> Result<Tensor> {
        let (b, cf, h, w) = z.dims4()?;
        let f = self.factor;
        let c = cf / (f * f);
        z.reshape((b, c, f, f, h, w))?
            .permute((0, 1, 4, 2, 5, 3))?
            .reshape((b, c, h * f, w * f))
    }
}

/// Image codec of a pipeline.
#[derive(Debug, Clone)]
pub enum Codec {
    Vae(FluxVae),
    Pixels(PixelCodec),
}

impl Codec {
    pub fn latent_channels(&self) -> usize {
        match self {
            Codec::Vae(v) => v.config().z_channels,
            Codec::Pixels(p) => p.channels(),
        }
    }

    /// Pixels per latent cell along each side.
    pub fn downscale(&self) -> usize {
        match self {
            Codec::Vae(v) => v.config().downscale(),
            Codec::Pixels(p) => p.factor,
        }
    }

    /// Model-space latents `[B, C, h, w]` -> images `[B, 3, H, W]` in [-1, 1].
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        match self {
            Codec::Vae(v) => v.decode(z),
            Codec::Pixels(p) => p
                .depth_to_space(&z.to_dtype(DType::F32)?)?
                .clamp(-1f32, 1f32),
        }
    }

    /// Images `[B, 3, H, W]` in [-1, 1] -> model-space latents.
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Codec::Vae(v) => v.encode(x),
            Codec::Pixels(p) => p.space_to_depth(x),
        }
    }
}

/// `[3, H, W]` in [-1, 1] -> an RGB image.
pub fn tensor_to_rgb(t: &Tensor) -> Result<RgbImage> {
    let (c, h, w) = t.dims3()?;
    if c != 3 {
        candle_core::bail!("expected 3 colour channels, got {c}");
    }
    let data: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let mut img = RgbImage::new(w as u32, h as u32);
    for (i, px) in img.pixels_mut().enumerate() {
        for k in 0..3 {
            let v = data[k * h * w + i].clamp(-1.0, 1.0);
            px.0[k] = ((v + 1.0) * 127.5).round() as u8;
        }
    }
    Ok(img)
}

/// An RGB image -> `[1, 3, H, W]` in [-1, 1].
pub fn rgb_to_tensor(img: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut data = vec![0f32; 3 * h * w];
    for (i, px) in img.pixels().enumerate() {
        for k in 0..3 {
            data[k * h * w + i] = px.0[k] as f32 / 127.5 - 1.0;
        }
    }
    Tensor::from_vec(data, (1, 3, h, w), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_to_depth_channel_order_by_hand() -> Result<()> {
        // One channel, 2x2 image, factor 2: the single cell holds [x00, x01, x10, x11]
        // (channel index dy * 2 + dx).
        let x = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu)?;
        let z = PixelCodec { factor: 2 }.space_to_depth(&x)?;
        assert_eq!(z.dims(), &[1, 4, 1, 1]);
        assert_eq!(z.flatten_all()?.to_vec1::<f32>()?, vec![1., 2., 3., 4.]);
        Ok(())
    }

    #[test]
    fn round_trips() -> Result<()> {
        let codec = PixelCodec { factor: 4 };
        let x = crate::model::dit::init::seeded_normal(1, &[2, 3, 16, 8], &Device::Cpu)?;
        let back = codec.depth_to_space(&codec.space_to_depth(&x)?)?;
        assert_eq!((x - back)?.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
        let mut img = RgbImage::new(4, 2);
        img.put_pixel(3, 1, image::Rgb([255, 0, 128]));
        let t = rgb_to_tensor(&img, &Device::Cpu)?;
        assert_eq!(tensor_to_rgb(&t.get(0)?)?, img);
        Ok(())
    }
}
