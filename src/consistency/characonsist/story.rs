//! Rendering a story with CharaConsist: the identity and the frames over the passes of
//! [`Pass`], with either bank strategy.

use std::sync::atomic::AtomicBool;

use candle_core::{DType, Tensor};

use super::FrameAnalysis;
use super::bank::IdentityBank;
use super::control::{CharaConsistControl, Pass, Role, StoredIdentity};
use super::mask::PromptSpans;
use super::settings::{BackgroundMode, CharaConsistSettings};
use crate::model::dit::Control;
use crate::model::pipeline::{BatchRequest, Pipeline, PipelineError, SampleSpec};
use crate::model::sampler::StepReport;

/// How frames get the identity's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BankStrategy {
    /// The identity runs in the same batch as the frames; nothing is kept between steps.
    CoBatched,
    /// The identity runs once and keeps what frames read, in `dtype`.
    Stored { dtype: DType },
}

impl BankStrategy {
    /// Co-batched when a batch of identity + frames fits the memory budget (bytes of one
    /// forward's activations per sample times the batch), otherwise stored in half precision.
    pub fn choose(per_sample_bytes: u64, samples: usize, budget_bytes: u64) -> Self {
        if per_sample_bytes.saturating_mul(samples as u64) <= budget_bytes {
            BankStrategy::CoBatched
        } else {
            BankStrategy::Stored { dtype: DType::F16 }
        }
    }
}

/// One prompt of the story with its spans.
#[derive(Debug, Clone)]
pub struct StorySample {
    pub spec: SampleSpec,
    pub spans: PromptSpans,
}

/// Shared sampling parameters.
#[derive(Debug, Clone, Copy)]
pub struct StoryParams {
    pub width: u32,
    pub height: u32,
    pub steps: usize,
    pub guidance: f32,
}

/// The result: final tokens of the identity and of each frame, and each frame's analysis.
pub struct StoryOutput {
    pub identity: Tensor,
    pub frames: Vec<Tensor>,
    pub analyses: Vec<FrameAnalysis>,
    /// Each frame's analysis from its pre-run (what the full run used up to its own
    /// extraction step).
    pub pre_run_analyses: Vec<FrameAnalysis>,
    /// The identity as stored (stored strategy), for regenerating single frames later.
    pub stored: Option<StoredIdentity>,
}

fn request(
    params: &StoryParams,
    samples: Vec<SampleSpec>,
    batch_index: Vec<usize>,
    stop_after: Option<usize>,
) -> BatchRequest {
    BatchRequest {
        samples,
        width: params.width,
        height: params.height,
        steps: params.steps,
        guidance: params.guidance,
        batch_index,
        stop_after,
    }
}

/// Renders the identity and the frames. `on_step(pass, report)` sees every step of every
/// pass; `other` is a second control run after CharaConsist on every hook (e.g. ASemConsist,
/// or `NoControl`).
#[allow(clippy::too_many_arguments)]
pub fn render_story<O: Control>(
    pipeline: &Pipeline,
    identity: &StorySample,
    frames: &[StorySample],
    params: &StoryParams,
    settings: &CharaConsistSettings,
    strategy: BankStrategy,
    cancel: &AtomicBool,
    other: &mut O,
    mut on_step: impl FnMut(Pass, &StepReport) -> candle_core::Result<()>,
) -> Result<StoryOutput, PipelineError> {
    let cfg = pipeline.transformer.config();
    let (axes, theta) = (cfg.axes_dim.clone(), cfg.theta);
    if settings.background == BackgroundMode::MixedScenes {
        return Err(PipelineError::Input(
            "the mixed-scenes background mode is not available yet; choose keep or switch".into(),
        ));
    }
    let settings = &settings.scaled_to(params.steps, cfg.depth_single_blocks);
    let mut roles = vec![Role::Identity];
    roles.extend((0..frames.len()).map(Role::Frame));
    let mut spans = vec![identity.spans.clone()];
    spans.extend(frames.iter().map(|f| f.spans.clone()));
    let all_specs: Vec<SampleSpec> = std::iter::once(identity.spec.clone())
        .chain(frames.iter().map(|f| f.spec.clone()))
        .collect();
    let extraction = settings.extraction_step;
    match strategy {
        BankStrategy::CoBatched => {
            let bank = IdentityBank::new(pipeline.transformer.dtype());
            let mut ctrl =
                CharaConsistControl::new(settings.clone(), roles, spans, axes, theta, bank, false);
            let batch: Vec<usize> = (0..all_specs.len()).collect();
            ctrl.set_pass(Pass::PreRun)?;
            let pre = request(params, all_specs.clone(), batch.clone(), Some(extraction));
            pipeline.sample_batch(&pre, &mut (&mut ctrl, &mut *other), cancel, |r| {
                on_step(Pass::PreRun, r)
            })?;
            ctrl.set_pass(Pass::Full)?;
            let pre_run_analyses = (1..=frames.len())
                .map(|s| ctrl.analysis(s).unwrap_or_default())
                .collect();
            let full = request(params, all_specs, batch, None);
            let tokens =
                pipeline.sample_batch(&full, &mut (&mut ctrl, &mut *other), cancel, |r| {
                    on_step(Pass::Full, r)
                })?;
            ctrl.finish()?;
            let frames_out = (1..tokens.dim(0)?)
                .map(|i| tokens.narrow(0, i, 1))
                .collect::<candle_core::Result<_>>()?;
            let analyses = (1..=frames.len())
                .map(|s| ctrl.analysis(s).unwrap_or_default())
                .collect();
            Ok(StoryOutput {
                identity: tokens.narrow(0, 0, 1)?,
                frames: frames_out,
                analyses,
                pre_run_analyses,
                stored: None,
            })
        }
        BankStrategy::Stored { dtype } => {
            let mut ctrl = CharaConsistControl::new(
                settings.clone(),
                roles.clone(),
                spans.clone(),
                axes.clone(),
                theta,
                IdentityBank::new(dtype),
                true,
            );
            ctrl.set_pass(Pass::Record)?;
            let rec = request(params, vec![identity.spec.clone()], vec![0], None);
            let id_tokens =
                pipeline.sample_batch(&rec, &mut (&mut ctrl, &mut *other), cancel, |r| {
                    on_step(Pass::Record, r)
                })?;
            ctrl.finish()?;
            let stored = ctrl.stored_identity();
            let mut frames_out = Vec::with_capacity(frames.len());
            let mut analyses = Vec::with_capacity(frames.len());
            let mut pre_run_analyses = Vec::with_capacity(frames.len());
            for (i, frame) in frames.iter().enumerate() {
                let out = render_frame_stored(
                    pipeline,
                    &stored,
                    frame,
                    i,
                    params,
                    settings,
                    &spans,
                    cancel,
                    &mut *other,
                    &mut on_step,
                )?;
                frames_out.push(out.tokens);
                analyses.push(out.analysis);
                pre_run_analyses.push(out.pre_run_analysis);
            }
            Ok(StoryOutput {
                identity: id_tokens,
                frames: frames_out,
                analyses,
                pre_run_analyses,
                stored: Some(stored),
            })
        }
    }
}

/// A frame rendered against a stored identity.
pub struct StoredFrame {
    pub tokens: Tensor,
    pub analysis: FrameAnalysis,
    pub pre_run_analysis: FrameAnalysis,
}

/// One frame against a stored identity: pre-run, then the full run.
#[allow(clippy::too_many_arguments)]
pub fn render_frame_stored<O: Control>(
    pipeline: &Pipeline,
    stored: &StoredIdentity,
    frame: &StorySample,
    frame_index: usize,
    params: &StoryParams,
    settings: &CharaConsistSettings,
    spans: &[PromptSpans],
    cancel: &AtomicBool,
    other: &mut O,
    on_step: &mut impl FnMut(Pass, &StepReport) -> candle_core::Result<()>,
) -> Result<StoredFrame, PipelineError> {
    let cfg = pipeline.transformer.config();
    let settings = &settings.scaled_to(params.steps, cfg.depth_single_blocks);
    let sample = frame_index + 1;
    let mut roles = vec![Role::Identity];
    roles.extend((0..spans.len().saturating_sub(1)).map(Role::Frame));
    let mut ctrl = CharaConsistControl::new(
        settings.clone(),
        roles,
        spans.to_vec(),
        cfg.axes_dim.clone(),
        cfg.theta,
        IdentityBank::new(stored.bank.storage_dtype()),
        true,
    )
    .with_stored_identity(stored.clone());
    ctrl.set_pass(Pass::PreRun)?;
    let pre = request(
        params,
        vec![frame.spec.clone()],
        vec![sample],
        Some(settings.extraction_step),
    );
    pipeline.sample_batch(&pre, &mut (&mut ctrl, &mut *other), cancel, |r| {
        on_step(Pass::PreRun, r)
    })?;
    ctrl.set_pass(Pass::Full)?;
    let pre_run_analysis = ctrl.analysis(sample).unwrap_or_default();
    let full = request(params, vec![frame.spec.clone()], vec![sample], None);
    let tokens = pipeline.sample_batch(&full, &mut (&mut ctrl, &mut *other), cancel, |r| {
        on_step(Pass::Full, r)
    })?;
    ctrl.finish()?;
    Ok(StoredFrame {
        tokens,
        analysis: ctrl.analysis(sample).unwrap_or_default(),
        pre_run_analysis,
    })
}
