//! Turning a frame job into an image with the loaded model.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;

use super::messages::{
    Event, FrameJob, FrameResult, GenerationMetadata, ModelSpec, RenderSettings, StoryContext,
};
use super::story::CachedIdentity;
use super::tiny::{HashedWordEncoder, TINY_TEXT_LEN, tiny_config, tiny_pipeline};
use crate::consistency::FrameAnalysis;
use crate::model::dit::NoControl;
use crate::model::pipeline::{BatchRequest, Pipeline, PromptEncoder, SampleSpec};
use crate::model::sampler::ScheduleShift;

/// A model ready to render: the pipeline and its prompt encoder.
pub struct LoadedModel {
    pub name: String,
    pub description: String,
    pub pipeline: Pipeline,
    pub encoder: Box<dyn PromptEncoder>,
    /// The CharaConsist identity of the last story rendered with a stored bank, for
    /// regenerating single frames without recomputing it.
    pub(crate) identity_bank: Option<CachedIdentity>,
}

impl LoadedModel {
    pub fn new(
        name: String,
        description: String,
        pipeline: Pipeline,
        encoder: Box<dyn PromptEncoder>,
    ) -> Self {
        Self {
            name,
            description,
            pipeline,
            encoder,
            identity_bank: None,
        }
    }
}

/// Where models run, and, when a CUDA build runs on the CPU, why.
#[derive(Debug, Clone)]
pub struct DeviceChoice {
    pub device: Device,
    /// Said to the user (model description, log) when a CUDA build falls back to the CPU.
    pub fallback: Option<String>,
}

/// The first CUDA GPU when built with `cuda` and one can be opened, otherwise the CPU (with
/// the reason in a CUDA build: no driver, no device, a library missing).
pub fn default_device() -> DeviceChoice {
    #[cfg(feature = "cuda")]
    {
        match Device::new_cuda(0) {
            Ok(device) => DeviceChoice {
                device,
                fallback: None,
            },
            Err(e) => {
                // candle appends a backtrace to the message when RUST_BACKTRACE is set.
                let error = e.to_string();
                let error = error.lines().next().unwrap_or_default();
                let reason =
                    format!("running on the CPU: CUDA GPU 0 could not be opened ({error})");
                tracing::warn!("{reason}");
                DeviceChoice {
                    device: Device::Cpu,
                    fallback: Some(reason),
                }
            }
        }
    }
    #[cfg(not(feature = "cuda"))]
    DeviceChoice {
        device: Device::Cpu,
        fallback: None,
    }
}

pub fn load_model(spec: &ModelSpec) -> anyhow::Result<LoadedModel> {
    let DeviceChoice { device, fallback } = default_device();
    let mut model = load_model_on(spec, device)?;
    if let Some(reason) = fallback {
        model.description = format!("{} · {reason}", model.description);
    }
    Ok(model)
}

fn load_model_on(spec: &ModelSpec, device: Device) -> anyhow::Result<LoadedModel> {
    match spec {
        ModelSpec::TinyRandom { seed } => {
            let pipeline = tiny_pipeline(*seed, &device)?;
            let cfg = tiny_config();
            let encoder = HashedWordEncoder {
                dim: cfg.context_in_dim,
                max_len: TINY_TEXT_LEN,
                device,
            };
            Ok(LoadedModel::new(
                "Tiny test model".into(),
                "untrained FLUX-architecture model for testing the app's mechanics".into(),
                pipeline,
                Box::new(encoder),
            ))
        }
        ModelSpec::Builtin => {
            let model = crate::model::builtin::model::BuiltinModel::load(&device)
                .context("loading the built-in model")?;
            let weights_id = model.weights_id.clone();
            let (pipeline, encoder) = model.into_parts();
            Ok(LoadedModel::new(
                "Built-in".into(),
                format!(
                    "Storyloom's small model (64x64, trained on the built-in world; weights {weights_id})"
                ),
                pipeline,
                Box::new(encoder),
            ))
        }
        ModelSpec::Flux(files) => load_flux(files, &device),
    }
}

/// Loads a FLUX.1 set: transformer, autoencoder, T5 (+ CLIP for the pooled vector).
fn load_flux(files: &super::messages::FluxFiles, device: &Device) -> anyhow::Result<LoadedModel> {
    use crate::model::text::{EncoderPaths, PooledSource, TextEncoder, TextEncoderOptions};
    // bf16 on GPUs; on the CPU candle has no bf16 matmul, so f32.
    let dtype = if device.is_cpu() {
        candle_core::DType::F32
    } else {
        candle_core::DType::BF16
    };
    let opts = crate::model::weights::LoadOptions {
        dtype,
        device: device.clone(),
        axes_dim: None,
    };
    let transformer_context = || format!("transformer {}", files.transformer.display());
    let located = crate::model::weights::locate_transformer(&files.transformer)
        .with_context(transformer_context)?;
    let transformer = crate::model::weights::load_located_transformer(&located, &opts)
        .with_context(transformer_context)?;
    let prediction = located.prediction;
    let vae = crate::model::vae::FluxVae::load(&files.vae, dtype, device)
        .with_context(|| format!("autoencoder {}", files.vae.display()))?;
    let guidance = transformer.config().guidance_embed;
    let t5 = EncoderPaths {
        weights: files.t5.clone(),
        config: None,
        tokenizer: files.t5_tokenizer.clone(),
    };
    let pooled = match (&files.clip, &files.clip_tokenizer) {
        (Some(w), Some(t)) => PooledSource::Clip(EncoderPaths {
            weights: w.clone(),
            config: None,
            tokenizer: t.clone(),
        }),
        _ => anyhow::bail!(
            "choose the CLIP-L text encoder and its tokenizer too (FLUX.1 needs its pooled vector)"
        ),
    };
    let options = TextEncoderOptions {
        max_len: if guidance { 512 } else { 256 },
        dtype,
        device: device.clone(),
        ..TextEncoderOptions::default()
    };
    let encoder = TextEncoder::load(t5, pooled, options).context("text encoders")?;
    let shift = if guidance {
        ScheduleShift::Resolution
    } else {
        ScheduleShift::None
    };
    let pipeline = Pipeline {
        transformer,
        codec: crate::model::codec::Codec::Vae(vae),
        shift,
        prediction,
        preview: Some(crate::model::preview::LatentPreview::flux()),
    };
    Ok(LoadedModel::new(
        if guidance {
            "FLUX.1-dev".into()
        } else {
            "FLUX.1-schnell".into()
        },
        format!("{}", files.transformer.display()),
        pipeline,
        Box::new(encoder),
    ))
}

/// The character part of every prompt: the identity description plus the style line.
pub fn character_text(story: &StoryContext) -> String {
    match story.style.trim() {
        "" => story.identity.trim().to_string(),
        style => format!("{}, {style}", story.identity.trim()),
    }
}

/// Prompt segments of a frame: background, character, action (the order the methods expect).
pub fn frame_segments(story: &StoryContext, frame: &FrameJob) -> Vec<String> {
    vec![
        frame.background.trim().to_string(),
        character_text(story),
        frame.action.trim().to_string(),
    ]
}

/// The prompt as one line, for metadata: the non-empty segments joined with commas.
pub fn joined_prompt(segments: &[String]) -> String {
    segments
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(", ")
}

/// Renders one frame without consistency methods. `Ok(None)` means it was cancelled.
pub fn render_frame(
    model: &mut LoadedModel,
    story: &StoryContext,
    frame: &FrameJob,
    settings: &RenderSettings,
    cancel: &AtomicBool,
    report: &mut dyn FnMut(Event),
) -> anyhow::Result<Option<FrameResult>> {
    let started = Instant::now();
    let segments = frame_segments(story, frame);
    let refs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let conditioning = model.encoder.encode(&refs)?;
    let (width, height) = model.pipeline.output_size(settings.width, settings.height);
    let req = BatchRequest {
        samples: vec![SampleSpec {
            conditioning,
            seed: frame.seed,
        }],
        width,
        height,
        steps: settings.steps,
        guidance: settings.guidance,
        batch_index: vec![1],
        stop_after: None,
    };
    let pipeline = &model.pipeline;
    let frame_id = frame.frame_id;
    let result = pipeline.sample_batch(&req, &mut NoControl, cancel, |r| {
        let preview = if settings.previews {
            pipeline.preview(r.predicted_x0, 0, width, height)?
        } else {
            None
        };
        report(Event::Progress {
            frame_id,
            step: r.step + 1,
            of: r.num_steps,
            preview,
        });
        Ok(())
    });
    let tokens = match result {
        Ok(t) => t,
        Err(e) if e.is_cancelled() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let image = pipeline.decode(&tokens, width, height)?.remove(0);
    let metadata = GenerationMetadata {
        prompt: joined_prompt(&segments),
        segments,
        seed: frame.seed,
        model: model.name.clone(),
        steps: settings.steps,
        guidance: settings.guidance,
        width,
        height,
        methods: settings.methods.clone(),
        methods_used: vec![],
        seconds: started.elapsed().as_secs_f32(),
    };
    Ok(Some(FrameResult {
        frame_id,
        image,
        analysis: FrameAnalysis::default(),
        metadata,
    }))
}
