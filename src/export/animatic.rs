//! Animatics: every frame shown for its duration, as an animated GIF or APNG.
//!
//! GIF stores delays in hundredths of a second, so durations are rounded to 10 ms; APNG keeps
//! milliseconds. Frames of different sizes are scaled to the first frame's size.

use std::path::Path;

use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, RgbImage, RgbaImage, imageops};

use super::{ExportDocument, ExportError};
use crate::project::store::{RealDisk, atomic_write};

/// The frames at one size, at most `max_width` wide (aspect kept), with their durations.
fn uniform_frames(doc: &ExportDocument, max_width: u32) -> Vec<(RgbImage, u32)> {
    let Some(first) = doc.frames.first() else {
        return Vec::new();
    };
    let (w0, h0) = first.image.dimensions();
    let width = w0.min(max_width.max(1)).max(1);
    let height = ((u64::from(h0) * u64::from(width)) / u64::from(w0.max(1))).max(1) as u32;
    doc.frames
        .iter()
        .map(|f| {
            let image = if f.image.dimensions() == (width, height) {
                f.image.clone()
            } else {
                imageops::resize(&f.image, width, height, imageops::FilterType::Triangle)
            };
            (image, f.duration_ms)
        })
        .collect()
}

/// GIF delay of a duration: hundredths of a second, at least one (browsers treat 0 as fast).
pub fn gif_centiseconds(duration_ms: u32) -> u32 {
    duration_ms.div_ceil(10).max(1)
}

/// Encodes an endlessly looping GIF.
pub fn encode_gif(doc: &ExportDocument, max_width: u32) -> Result<Vec<u8>, image::ImageError> {
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, 10);
        encoder.set_repeat(Repeat::Infinite)?;
        for (image, duration_ms) in uniform_frames(doc, max_width) {
            let rgba: RgbaImage = image::DynamicImage::ImageRgb8(image).to_rgba8();
            let delay = Delay::from_numer_denom_ms(gif_centiseconds(duration_ms) * 10, 1);
            encoder.encode_frame(Frame::from_parts(rgba, 0, 0, delay))?;
        }
    }
    Ok(bytes)
}

/// Writes the animatic as an animated GIF.
pub fn write_gif(path: &Path, doc: &ExportDocument, max_width: u32) -> Result<(), ExportError> {
    if doc.frames.is_empty() {
        return Err(ExportError::NoFrames);
    }
    let bytes = encode_gif(doc, max_width).map_err(|e| ExportError::encode(path, e))?;
    atomic_write(path, &bytes, &mut RealDisk)?;
    Ok(())
}

/// APNG frame delay as (numerator, denominator) seconds: milliseconds when they fit in 16
/// bits, else hundredths (up to about 11 minutes).
pub fn apng_delay(duration_ms: u32) -> (u16, u16) {
    match u16::try_from(duration_ms) {
        Ok(ms) => (ms, 1000),
        Err(_) => (
            duration_ms.div_ceil(10).min(u32::from(u16::MAX)) as u16,
            100,
        ),
    }
}

/// Encodes an endlessly looping APNG (plays as a still first frame where APNG is unknown).
pub fn encode_apng(doc: &ExportDocument, max_width: u32) -> Result<Vec<u8>, png::EncodingError> {
    let frames = uniform_frames(doc, max_width);
    let mut bytes = Vec::new();
    if let Some((first, _)) = frames.first() {
        let mut encoder = png::Encoder::new(&mut bytes, first.width(), first.height());
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_animated(frames.len() as u32, 0)?;
        let mut writer = encoder.write_header()?;
        for (image, duration_ms) in &frames {
            let (num, den) = apng_delay(*duration_ms);
            writer.set_frame_delay(num, den)?;
            writer.write_image_data(image.as_raw())?;
        }
        writer.finish()?;
    }
    Ok(bytes)
}

/// Writes the animatic as an animated PNG.
pub fn write_apng(path: &Path, doc: &ExportDocument, max_width: u32) -> Result<(), ExportError> {
    if doc.frames.is_empty() {
        return Err(ExportError::NoFrames);
    }
    let bytes = encode_apng(doc, max_width).map_err(|e| ExportError::encode(path, e))?;
    atomic_write(path, &bytes, &mut RealDisk)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gif_delays_round_up_to_hundredths() {
        assert_eq!(gif_centiseconds(2000), 200);
        assert_eq!(gif_centiseconds(1234), 124);
        assert_eq!(gif_centiseconds(0), 1);
    }

    #[test]
    fn apng_delays_switch_units_past_16_bits() {
        assert_eq!(apng_delay(1500), (1500, 1000));
        assert_eq!(apng_delay(70_000), (7000, 100));
    }
}
