//! Prompt(s) + settings -> images: text conditioning, seeded noise, the Euler loop over the
//! DiT (with a control on its hook points), decoding.

use std::ops::Range;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;

use super::codec::{Codec, tensor_to_rgb};
use super::dit::{Control, FluxInputs, FluxTransformer, StepInfo};
use super::preview::LatentPreview;
use super::sampler::{
    Prediction, SampleError, ScheduleShift, StepReport, euler_sample, initial_noise, pack_latents,
    schedule, unpack_latents,
};

/// Text conditioning of one prompt, ready for the DiT.
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// Per-token features `[1, L, context_dim]`.
    pub txt: Tensor,
    /// Pooled vector `[1, vec_dim]`.
    pub pooled: Tensor,
    /// Token span of every prompt segment, in order.
    pub segment_spans: Vec<Range<usize>>,
    /// Position of the end-of-sequence token.
    pub eos: usize,
    /// Padding tokens after the EOS.
    pub padding: Range<usize>,
    /// The prompt did not fit and was cut (the UI warns).
    pub truncated: bool,
}

/// Anything that turns prompt segments into conditioning (T5 + CLIP for FLUX, the small
/// T5 of the built-in model).
pub trait PromptEncoder: Send {
    /// Encodes the ordered segments of one prompt (e.g. background, character, action).
    fn encode(&mut self, segments: &[&str]) -> anyhow::Result<Conditioning>;
    /// Frees the encoder weights (cached encodings may stay).
    fn unload(&mut self) {}
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Sample(#[from] SampleError),
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl PipelineError {
    pub fn is_cancelled(&self) -> bool {
        matches!(self, PipelineError::Sample(SampleError::Cancelled { .. }))
    }
}

/// One image of a batch.
#[derive(Debug, Clone)]
pub struct SampleSpec {
    pub conditioning: Conditioning,
    pub seed: u64,
}

/// What to sample: every image of a batch shares size, steps and guidance.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    pub samples: Vec<SampleSpec>,
    pub width: u32,
    pub height: u32,
    pub steps: usize,
    pub guidance: f32,
    /// Sample index of every batch row, handed to the control (see `HookCtx::batch_index`).
    pub batch_index: Vec<usize>,
    /// Stop after this step (0-based) instead of running the whole schedule, e.g. for a
    /// pre-run that only needs the first steps.
    pub stop_after: Option<usize>,
}

/// The transformer with its codec and schedule.
pub struct Pipeline {
    pub transformer: FluxTransformer,
    pub codec: Codec,
    pub shift: ScheduleShift,
    /// What the transformer's output means (FLUX: the velocity).
    pub prediction: Prediction,
    pub preview: Option<LatentPreview>,
}

/// Latent grid of one image: `(latent_h, latent_w, token_rows, token_cols)`.
pub fn latent_geometry(width: u32, height: u32, downscale: usize) -> (usize, usize, usize, usize) {
    // Latents must be even for the 2x2 packing: round each side down to a multiple of
    // 2 * downscale pixels (16 for FLUX), never below one token.
    let cell = 2 * downscale;
    let lh = ((height as usize / cell).max(1)) * 2;
    let lw = ((width as usize / cell).max(1)) * 2;
    (lh, lw, lh / 2, lw / 2)
}

impl Pipeline {
    pub fn device(&self) -> &Device {
        self.transformer.device()
    }

    /// Image size actually produced for a requested size.
    pub fn output_size(&self, width: u32, height: u32) -> (u32, u32) {
        let d = self.codec.downscale();
        let (lh, lw, _, _) = latent_geometry(width, height, d);
        ((lw * d) as u32, (lh * d) as u32)
    }

    /// The initial noise of a sample, packed into tokens `[1, N, 4C]`.
    pub fn initial_tokens(
        &self,
        seed: u64,
        width: u32,
        height: u32,
    ) -> candle_core::Result<Tensor> {
        let (lh, lw, _, _) = latent_geometry(width, height, self.codec.downscale());
        let noise = initial_noise(seed, self.codec.latent_channels(), lh, lw, self.device())?;
        pack_latents(&noise)
    }

    /// Samples a batch; returns the final packed tokens `[B, N, 4C]`.
    /// `on_step` sees every step (for previews, progress and analysis).
    pub fn sample_batch<C: Control + ?Sized>(
        &self,
        req: &BatchRequest,
        ctrl: &mut C,
        cancel: &AtomicBool,
        mut on_step: impl FnMut(&StepReport) -> candle_core::Result<()>,
    ) -> Result<Tensor, PipelineError> {
        let b = req.samples.len();
        if b == 0 || req.batch_index.len() != b {
            return Err(PipelineError::Input(format!(
                "a batch of {b} samples needs as many batch indices (got {})",
                req.batch_index.len()
            )));
        }
        let txt_len = req.samples[0].conditioning.txt.dim(1)?;
        if req
            .samples
            .iter()
            .any(|s| s.conditioning.txt.dim(1).ok() != Some(txt_len))
        {
            return Err(PipelineError::Input(
                "all prompts of a batch must have the same padded length".into(),
            ));
        }
        let (_, _, rows, cols) = latent_geometry(req.width, req.height, self.codec.downscale());
        let dtype = self.transformer.dtype();
        let cat = |f: &dyn Fn(&SampleSpec) -> &Tensor| -> candle_core::Result<Tensor> {
            let parts: Vec<&Tensor> = req.samples.iter().map(f).collect();
            Tensor::cat(&parts, 0)?.to_dtype(dtype)
        };
        let txt = cat(&|s| &s.conditioning.txt)?;
        let pooled = cat(&|s| &s.conditioning.pooled)?;
        let x = {
            let parts = req
                .samples
                .iter()
                .map(|s| self.initial_tokens(s.seed, req.width, req.height))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&parts, 0)?
        };
        let rope = self.transformer.rope_tables(txt_len, rows, cols)?;
        let guidance = Tensor::from_vec(vec![req.guidance; b], b, self.device())?;
        let mut timesteps = schedule(req.steps, rows * cols, self.shift);
        if let Some(last) = req.stop_after {
            timesteps.truncate((last + 2).min(timesteps.len()));
        }
        let out = euler_sample(
            x,
            &timesteps,
            cancel,
            |step, x, t| {
                let ts = Tensor::from_vec(vec![t as f32; b], b, self.device())?;
                let inputs = FluxInputs {
                    img: x,
                    txt: &txt,
                    pooled: &pooled,
                    timesteps: &ts,
                    guidance: Some(&guidance),
                    rope: &rope,
                    img_grid: (rows, cols),
                };
                let info = StepInfo {
                    step,
                    num_steps: req.steps,
                    batch_index: &req.batch_index,
                };
                let output = self
                    .transformer
                    .forward_with(&inputs, &info, ctrl)?
                    .to_dtype(DType::F32)?;
                self.prediction.to_velocity(output, x, t)
            },
            &mut on_step,
        )?;
        Ok(out)
    }

    /// Packed tokens `[B, N, 4C]` -> images.
    pub fn decode(
        &self,
        tokens: &Tensor,
        width: u32,
        height: u32,
    ) -> candle_core::Result<Vec<RgbImage>> {
        let (lh, lw, _, _) = latent_geometry(width, height, self.codec.downscale());
        let z = unpack_latents(tokens, lh, lw)?;
        let x = self.codec.decode(&z)?;
        (0..x.dim(0)?).map(|i| tensor_to_rgb(&x.get(i)?)).collect()
    }

    /// A cheap preview of packed tokens (the predicted clean image) of batch row `row`.
    pub fn preview(
        &self,
        tokens: &Tensor,
        row: usize,
        width: u32,
        height: u32,
    ) -> candle_core::Result<Option<RgbImage>> {
        let (lh, lw, _, _) = latent_geometry(width, height, self.codec.downscale());
        let z = unpack_latents(&tokens.narrow(0, row, 1)?, lh, lw)?;
        match (&self.codec, &self.preview) {
            // Pixel latents are the image itself.
            (Codec::Pixels(_), _) => Ok(Some(tensor_to_rgb(&self.codec.decode(&z)?.get(0)?)?)),
            (_, Some(p)) => Ok(Some(p.to_rgb(&z)?)),
            _ => Ok(None),
        }
    }
}
