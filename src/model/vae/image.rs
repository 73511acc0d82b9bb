//! Image tensors in [-1, 1] <-> 8-bit RGB images.

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use super::error::VaeError;

/// [3, H, W] or [1, 3, H, W] in [-1, 1] (any float dtype, any device) -> RGB image.
/// Values outside [-1, 1] are clamped; -1 maps to 0 and 1 to 255, rounding to nearest.
pub fn image_tensor_to_rgb8(t: &Tensor) -> Result<RgbImage, VaeError> {
    let chw = match t.dims() {
        [3, _, _] => t.clone(),
        [1, 3, _, _] => t.squeeze(0)?,
        dims => {
            return Err(VaeError::ImageShape {
                dims: dims.to_vec(),
            });
        }
    };
    let (_, h, w) = chw.dims3()?;
    // Interleave to H, W, C so the buffer is the image's row-major RGB bytes.
    let hwc = chw
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .permute((1, 2, 0))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let bytes = hwc.into_iter().map(unit_to_byte).collect();
    RgbImage::from_raw(w as u32, h as u32, bytes).ok_or_else(|| VaeError::ImageShape {
        dims: t.dims().to_vec(),
    })
}

/// RGB image -> [1, 3, H, W] float32 tensor in [-1, 1] on `device`.
pub fn rgb8_to_image_tensor(img: &RgbImage, device: &Device) -> candle_core::Result<Tensor> {
    let (w, h) = img.dimensions();
    let values: Vec<f32> = img.as_raw().iter().map(|&b| byte_to_unit(b)).collect();
    Tensor::from_vec(values, (h as usize, w as usize, 3), device)?
        .permute((2, 0, 1))?
        .unsqueeze(0)?
        .contiguous()
}

fn unit_to_byte(x: f32) -> u8 {
    let x = if x.is_nan() { 0.0 } else { x.clamp(-1.0, 1.0) };
    ((x + 1.0) * 127.5).round() as u8
}

fn byte_to_unit(b: u8) -> f32 {
    b as f32 / 127.5 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_mapping_by_hand() {
        assert_eq!(unit_to_byte(-1.0), 0);
        assert_eq!(unit_to_byte(1.0), 255);
        assert_eq!(unit_to_byte(0.0), 128); // 127.5 rounds up
        assert_eq!(unit_to_byte(-3.0), 0);
        assert_eq!(unit_to_byte(7.0), 255);
        assert_eq!(unit_to_byte(f32::NAN), 128);
        assert_eq!(byte_to_unit(0), -1.0);
        assert_eq!(byte_to_unit(255), 1.0);
        for b in 0..=255u8 {
            assert_eq!(unit_to_byte(byte_to_unit(b)), b);
        }
    }

    #[test]
    fn pixels_keep_their_place_and_channel() {
        let mut img = RgbImage::new(3, 2);
        img.put_pixel(2, 0, image::Rgb([255, 0, 0]));
        img.put_pixel(0, 1, image::Rgb([0, 255, 128]));
        let t = rgb8_to_image_tensor(&img, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 2, 3]);
        let red_at_row0_col2 = t
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .get(2)
            .unwrap();
        assert_eq!(red_at_row0_col2.to_scalar::<f32>().unwrap(), 1.0);
        let green_at_row1_col0 = t
            .get(0)
            .unwrap()
            .get(1)
            .unwrap()
            .get(1)
            .unwrap()
            .get(0)
            .unwrap();
        assert_eq!(green_at_row1_col0.to_scalar::<f32>().unwrap(), 1.0);
        let back = image_tensor_to_rgb8(&t).unwrap();
        assert_eq!(back, img);
        let back3 = image_tensor_to_rgb8(&t.squeeze(0).unwrap()).unwrap();
        assert_eq!(back3, img);
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let t = Tensor::zeros((1, 4, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let err = image_tensor_to_rgb8(&t).unwrap_err();
        assert!(err.to_string().contains("[1, 4, 2, 2]"), "{err}");
        let t = Tensor::zeros((2, 3, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(image_tensor_to_rgb8(&t).is_err());
    }
}
