//! The shipped built-in model: a small FLUX.1-architecture transformer on pixel tokens and a
//! small T5 encoder over the world's vocabulary, trained by `assets/builtin/train.py`.
//!
//! Files (diffusers / transformers layout) under [`default_dir`]:
//! `transformer/{config.json, diffusion_pytorch_model.safetensors}`,
//! `text_encoder/{config.json, model.safetensors}` and `tokenizer.json`.
//!
//! Image space: a 64x64 RGB image in [-1, 1] is rearranged space-to-depth by 4 into
//! `[48, 16, 16]` (channel index `c * 16 + dy * 4 + dx`), which the FLUX 2x2 packing turns
//! into 64 tokens of 192 features on an 8x8 grid. Text: the three caption parts joined by
//! ", ", `</s>` appended, padded with id 0 to 64 tokens; the pooled vector is the mean of the
//! T5 output over the real tokens. The training script mirrors all of this.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use crate::model::codec::{Codec, PixelCodec, rgb_to_tensor, tensor_to_rgb};
use crate::model::dit::{FluxTransformer, NoControl};
use crate::model::pipeline::{
    BatchRequest, Conditioning, Pipeline, PipelineError, PromptEncoder, SampleSpec,
};
use crate::model::sampler::{Prediction, ScheduleShift};
use crate::model::text::{
    EncoderPaths, PooledSource, Separator, TextEncoder, TextEncoderOptions, TextError,
};
use crate::model::weights::{
    LoadOptions, WeightsError, load_located_transformer, locate_transformer,
};

/// Width and height of the images the model was trained on.
pub const IMAGE_SIZE: u32 = 64;
/// Space-to-depth factor of the pixel codec.
pub const PIXEL_FACTOR: usize = 4;
/// Channels of the model-space latent `[48, 16, 16]`.
pub const LATENT_CHANNELS: usize = 3 * PIXEL_FACTOR * PIXEL_FACTOR;
/// Side of the latent grid (before the 2x2 packing).
pub const LATENT_SIZE: usize = IMAGE_SIZE as usize / PIXEL_FACTOR;
/// Padded T5 prompt length used in training.
pub const TEXT_LEN: usize = 64;
/// Default number of sampling steps.
pub const DEFAULT_STEPS: usize = 20;
/// How caption parts are joined: training used the world's `Caption::joined` ("a, b, c").
pub const SEPARATOR: Separator = Separator::Comma;
/// Environment variable that points the loader at another folder of the same layout.
pub const DIR_ENV: &str = "STORYLOOM_BUILTIN_DIR";

#[derive(Debug, thiserror::Error)]
pub enum BuiltinError {
    #[error("built-in model file missing: {0}")]
    Missing(PathBuf),
    #[error("built-in transformer: {0}")]
    Weights(#[from] WeightsError),
    #[error("built-in text encoder: {0}")]
    Text(#[from] TextError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The folder of the shipped model: `$STORYLOOM_BUILTIN_DIR` if set, else `assets/builtin`
/// of the source tree.
pub fn default_dir() -> PathBuf {
    match std::env::var_os(DIR_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/builtin"),
    }
}

/// The pixel codec of the built-in model.
pub fn pixel_codec() -> PixelCodec {
    PixelCodec {
        factor: PIXEL_FACTOR,
    }
}

/// An RGB image (64x64 for this model) -> the model-space latent `[1, 48, H/4, W/4]`.
pub fn pixels_to_latent(img: &RgbImage, device: &Device) -> candle_core::Result<Tensor> {
    pixel_codec().space_to_depth(&rgb_to_tensor(img, device)?)
}

/// A model-space latent `[1, 48, h, w]` (or `[48, h, w]`) -> the RGB image, clamped to [-1, 1].
pub fn latent_to_pixels(latent: &Tensor) -> candle_core::Result<RgbImage> {
    let latent = match latent.rank() {
        3 => latent.unsqueeze(0)?,
        _ => latent.clone(),
    };
    let x = Codec::Pixels(pixel_codec()).decode(&latent)?;
    tensor_to_rgb(&x.get(0)?)
}

/// CRC-32 of the files' bytes in order, as 8 hex digits: cheap (about 10 MB) and enough to
/// tell one training run's weights from another's.
fn weights_checksum(files: &[PathBuf]) -> Result<String, BuiltinError> {
    let mut hasher = crc32fast::Hasher::new();
    for path in files {
        let bytes = std::fs::read(path).map_err(|_| BuiltinError::Missing(path.clone()))?;
        hasher.update(&bytes);
    }
    Ok(format!("{:08x}", hasher.finalize()))
}

/// The built-in T5 with the prompt conventions used in training (parts joined by ", ").
pub struct BuiltinPromptEncoder {
    text: TextEncoder,
}

impl std::fmt::Debug for BuiltinPromptEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinPromptEncoder")
            .field("text", &self.text)
            .finish()
    }
}

impl BuiltinPromptEncoder {
    pub fn load(dir: &Path, device: &Device) -> Result<Self, BuiltinError> {
        let weights = dir.join("text_encoder");
        let tokenizer = dir.join("tokenizer.json");
        for path in [&weights, &tokenizer] {
            if !path.exists() {
                return Err(BuiltinError::Missing(path.clone()));
            }
        }
        let text = TextEncoder::load(
            EncoderPaths {
                weights,
                config: None,
                tokenizer,
            },
            PooledSource::T5Mean,
            TextEncoderOptions {
                max_len: TEXT_LEN,
                dtype: DType::F32,
                device: device.clone(),
                cache_capacity: 64,
            },
        )?;
        Ok(Self { text })
    }

    /// The underlying encoder (tokenizer, spans, cache).
    pub fn text_encoder(&mut self) -> &mut TextEncoder {
        &mut self.text
    }

    /// Conditioning of the ordered caption parts (background, character, action).
    pub fn conditioning(&mut self, segments: &[&str]) -> Result<Conditioning, BuiltinError> {
        let enc = self.text.encode(segments, SEPARATOR)?;
        Ok(Conditioning {
            txt: enc.hidden,
            pooled: enc.pooled,
            segment_spans: enc.prompt.segment_spans,
            eos: enc.prompt.eos,
            padding: enc.prompt.padding,
            truncated: enc.prompt.truncated,
        })
    }
}

impl PromptEncoder for BuiltinPromptEncoder {
    fn encode(&mut self, segments: &[&str]) -> anyhow::Result<Conditioning> {
        Ok(self.conditioning(segments)?)
    }

    fn unload(&mut self) {
        self.text.unload();
    }
}

/// The built-in model ready to sample: its pipeline (DiT + pixel codec + schedule) and its
/// prompt encoder.
pub struct BuiltinModel {
    pub pipeline: Pipeline,
    pub encoder: BuiltinPromptEncoder,
    /// Names these weights (a checksum of the weight files), so that what was recorded with
    /// other weights in the same folder, such as a cached identity bank, is not reused.
    pub weights_id: String,
}

impl BuiltinModel {
    /// Loads from [`default_dir`].
    pub fn load(device: &Device) -> Result<Self, BuiltinError> {
        Self::load_from(&default_dir(), device)
    }

    /// Loads from a folder of the shipped layout.
    pub fn load_from(dir: &Path, device: &Device) -> Result<Self, BuiltinError> {
        let transformer_dir = dir.join("transformer");
        if !transformer_dir.exists() {
            return Err(BuiltinError::Missing(transformer_dir));
        }
        let located = locate_transformer(&transformer_dir)?;
        let transformer = load_located_transformer(
            &located,
            &LoadOptions {
                dtype: DType::F32,
                device: device.clone(),
                axes_dim: None,
            },
        )?;
        let encoder = BuiltinPromptEncoder::load(dir, device)?;
        let mut weight_files = located.files.clone();
        weight_files.push(dir.join("text_encoder").join("model.safetensors"));
        let weights_id = weights_checksum(&weight_files)?;
        Ok(Self {
            pipeline: Self::pipeline_of(transformer, located.prediction),
            encoder,
            weights_id,
        })
    }

    /// The pipeline the built-in model samples with: pixel codec, FLUX.1-dev's schedule shift
    /// for 64 image tokens (what training's timestep distribution was shifted with), and the
    /// output meaning its config.json records (the shipped weights predict the clean image).
    pub fn pipeline_of(transformer: FluxTransformer, prediction: Prediction) -> Pipeline {
        Pipeline {
            transformer,
            codec: Codec::Pixels(pixel_codec()),
            shift: ScheduleShift::Resolution,
            prediction,
            preview: None,
        }
    }

    pub fn transformer(&self) -> &FluxTransformer {
        &self.pipeline.transformer
    }

    /// Splits into the parts the engine holds.
    pub fn into_parts(self) -> (Pipeline, BuiltinPromptEncoder) {
        (self.pipeline, self.encoder)
    }

    /// One vanilla image of caption parts (background, character, action) from `seed`.
    pub fn generate(
        &mut self,
        segments: &[&str],
        seed: u64,
        steps: usize,
    ) -> Result<RgbImage, BuiltinError> {
        let conditioning = self.encoder.conditioning(segments)?;
        let mut images = self.generate_batch(vec![(conditioning, seed)], steps)?;
        Ok(images.remove(0))
    }

    /// Vanilla images of several prompts in one batch.
    pub fn generate_batch(
        &self,
        samples: Vec<(Conditioning, u64)>,
        steps: usize,
    ) -> Result<Vec<RgbImage>, BuiltinError> {
        let n = samples.len();
        let req = BatchRequest {
            samples: samples
                .into_iter()
                .map(|(conditioning, seed)| SampleSpec { conditioning, seed })
                .collect(),
            width: IMAGE_SIZE,
            height: IMAGE_SIZE,
            steps,
            guidance: 0.0,
            batch_index: (0..n).collect(),
            stop_after: None,
        };
        let cancel = AtomicBool::new(false);
        let tokens = self
            .pipeline
            .sample_batch(&req, &mut NoControl, &cancel, |_| Ok(()))?;
        Ok(self.pipeline.decode(&tokens, IMAGE_SIZE, IMAGE_SIZE)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latent_channel_order_is_c16_dy4_dx() -> candle_core::Result<()> {
        // A 4x4 image: pixel (x=1, y=2) red 255, all else black. In [-1, 1] that pixel's red
        // is 1 and everything else -1; it lands in channel 0*16 + 2*4 + 1 = 9 of cell (0, 0).
        let mut img = RgbImage::new(4, 4);
        img.put_pixel(1, 2, image::Rgb([255, 0, 0]));
        let z = pixels_to_latent(&img, &Device::Cpu)?;
        assert_eq!(z.dims(), &[1, 48, 1, 1]);
        let v = z.flatten_all()?.to_vec1::<f32>()?;
        for (i, x) in v.iter().enumerate() {
            let expected = if i == 9 { 1.0 } else { -1.0 };
            assert_eq!(*x, expected, "channel {i}");
        }
        Ok(())
    }

    #[test]
    fn pixels_round_trip_through_the_latent() -> candle_core::Result<()> {
        let mut img = RgbImage::new(IMAGE_SIZE, IMAGE_SIZE);
        for (x, y, px) in img.enumerate_pixels_mut() {
            *px = image::Rgb([(x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8]);
        }
        let z = pixels_to_latent(&img, &Device::Cpu)?;
        assert_eq!(z.dims(), &[1, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE]);
        assert_eq!(latent_to_pixels(&z)?, img);
        assert_eq!(latent_to_pixels(&z.get(0)?)?, img);
        Ok(())
    }

    #[test]
    fn latent_values_outside_range_are_clamped() -> candle_core::Result<()> {
        let z = Tensor::full(3f32, (1, 48, 1, 1), &Device::Cpu)?;
        let img = latent_to_pixels(&z)?;
        assert!(img.pixels().all(|p| p.0 == [255, 255, 255]));
        Ok(())
    }

    #[test]
    fn missing_folder_is_reported() {
        let err = BuiltinModel::load_from(Path::new("no/such/builtin"), &Device::Cpu)
            .err()
            .expect("loading from a missing folder fails");
        assert!(matches!(err, BuiltinError::Missing(p) if p.ends_with("transformer")));
    }
}
