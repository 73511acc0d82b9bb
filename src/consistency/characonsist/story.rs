//! Rendering a story with CharaConsist: the identity and the frames over the passes of
//! [`Pass`], with either bank strategy.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Tensor};

use super::FrameAnalysis;
use super::bank::IdentityBank;
use super::budget::{StoryShape, estimate_co_batched_batch};
use super::control::{CharaConsistControl, Pass, Role, StoredIdentity, background_sources};
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
    /// Co-batched when the batch of identity + frames fits `budget_bytes` (its estimated
    /// activations in `compute` dtype, see [`estimate_co_batched_batch`]), otherwise the
    /// stored bank in `half` (f16 on the CPU; bf16 suits a GPU). The budget is
    /// `MethodSettings::bank_budget_mib` MiB.
    pub fn auto(shape: &StoryShape, compute: DType, budget_bytes: u64, half: DType) -> Self {
        if estimate_co_batched_batch(shape, compute) <= budget_bytes {
            BankStrategy::CoBatched
        } else {
            BankStrategy::Stored { dtype: half }
        }
    }

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
    /// Scene of a frame for "mixed scenes" (the first frame of a scene is its background
    /// source); ignored for the identity and in the other modes.
    pub scene: u32,
}

impl StorySample {
    /// A sample in scene 0.
    pub fn new(spec: SampleSpec, spans: PromptSpans) -> Self {
        Self {
            spec,
            spans,
            scene: 0,
        }
    }
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
    /// Per frame index, the scene source recorded by a scene's first frame ("mixed scenes",
    /// stored strategy), for regenerating the later frames of that scene.
    pub scene_sources: BTreeMap<usize, StoredIdentity>,
}

fn request(
    params: &StoryParams,
    (width, height): (u32, u32),
    samples: Vec<SampleSpec>,
    batch_index: Vec<usize>,
    stop_after: Option<usize>,
) -> BatchRequest {
    BatchRequest {
        samples,
        width,
        height,
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
    let settings = &settings.scaled_to(params.steps, cfg.depth_single_blocks);
    let mut roles = vec![Role::Identity];
    roles.extend((0..frames.len()).map(Role::Frame));
    let mut spans = vec![identity.spans.clone()];
    spans.extend(frames.iter().map(|f| f.spans.clone()));
    let mut scenes = vec![identity.scene];
    scenes.extend(frames.iter().map(|f| f.scene));
    let all_specs: Vec<SampleSpec> = std::iter::once(identity.spec.clone())
        .chain(frames.iter().map(|f| f.spec.clone()))
        .collect();
    let extraction = settings.extraction_step;
    let story_size = (params.width, params.height);
    match strategy {
        BankStrategy::CoBatched => {
            let bank = IdentityBank::new(pipeline.transformer.dtype());
            // Batch order is sample order, so every scene's first frame comes before the
            // frames reading its background (a block's keys/values of all rows are recorded
            // before any row attends).
            let mut ctrl =
                CharaConsistControl::new(settings.clone(), roles, spans, axes, theta, bank, false)
                    .with_scenes(&scenes);
            let batch: Vec<usize> = (0..all_specs.len()).collect();
            ctrl.set_pass(Pass::PreRun)?;
            let pre = request(
                params,
                story_size,
                all_specs.clone(),
                batch.clone(),
                Some(extraction),
            );
            pipeline.sample_batch(&pre, &mut (&mut ctrl, &mut *other), cancel, |r| {
                on_step(Pass::PreRun, r)
            })?;
            ctrl.set_pass(Pass::Full)?;
            let pre_run_analyses = (1..=frames.len())
                .map(|s| ctrl.analysis(s).unwrap_or_default())
                .collect();
            let full = request(params, story_size, all_specs, batch, None);
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
                scene_sources: BTreeMap::new(),
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
            )
            .with_scenes(&scenes);
            ctrl.set_pass(Pass::Record)?;
            let rec = request(
                params,
                story_size,
                vec![identity.spec.clone()],
                vec![0],
                None,
            );
            let id_tokens =
                pipeline.sample_batch(&rec, &mut (&mut ctrl, &mut *other), cancel, |r| {
                    on_step(Pass::Record, r)
                })?;
            ctrl.finish()?;
            let stored = ctrl.stored_identity();
            let sources = background_sources(settings.background, &roles, &scenes);
            let mut scene_sources: BTreeMap<usize, StoredIdentity> = BTreeMap::new();
            let mut frames_out = Vec::with_capacity(frames.len());
            let mut analyses = Vec::with_capacity(frames.len());
            let mut pre_run_analyses = Vec::with_capacity(frames.len());
            for (i, frame) in frames.iter().enumerate() {
                let sample = i + 1;
                let mut scene = SceneRole::Alone;
                if settings.background == BackgroundMode::MixedScenes {
                    if let Some(source) = sources[sample] {
                        scene = SceneRole::Reader(&scene_sources[&(source - 1)]);
                    } else if sources.contains(&Some(sample)) {
                        scene = SceneRole::Source;
                    }
                }
                let out = render_frame_stored_in_scene(
                    pipeline,
                    &stored,
                    scene,
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
                if let Some(source) = out.scene_source {
                    scene_sources.insert(i, source);
                }
            }
            Ok(StoryOutput {
                identity: id_tokens,
                frames: frames_out,
                analyses,
                pre_run_analyses,
                stored: Some(stored),
                scene_sources,
            })
        }
    }
}

/// A frame rendered against a stored identity.
pub struct StoredFrame {
    pub tokens: Tensor,
    pub analysis: FrameAnalysis,
    pub pre_run_analysis: FrameAnalysis,
    /// What the frame recorded as its scene's background source (`SceneRole::Source`).
    pub scene_source: Option<StoredIdentity>,
}

/// A frame's part in "mixed scenes" when rendered against a stored identity.
#[derive(Debug, Clone, Copy)]
pub enum SceneRole<'a> {
    /// Not in a mixed-scenes story, or a scene's first frame whose readers are not rendered
    /// (it keeps its own background, as in "switch").
    Alone,
    /// A scene's first frame: keeps its own background and records its keys/values for the
    /// later frames of its scene.
    Source,
    /// A later frame of a scene: borrows background keys from the scene's recorded source.
    Reader(&'a StoredIdentity),
}

/// One frame against a stored identity: pre-run, then the full run. In "mixed scenes" this
/// renders the frame as a scene's first frame (own background); use
/// [`render_frame_stored_in_scene`] for the later frames of a scene.
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
    render_frame_stored_in_scene(
        pipeline,
        stored,
        SceneRole::Alone,
        frame,
        frame_index,
        params,
        settings,
        spans,
        cancel,
        other,
        on_step,
    )
}

/// One frame against a stored identity, with its part in its scene. `spans` are the story's
/// spans by sample (identity first); `frame_index` is the frame's index among the frames.
///
/// `params` give the frame's size, which may differ from the identity's: tokens are matched
/// by index, the frame's own grid gives its positions and mask, and background keys are
/// compared at the same (row, column). (A co-batched story has one size for all.)
#[allow(clippy::too_many_arguments)]
pub fn render_frame_stored_in_scene<O: Control>(
    pipeline: &Pipeline,
    stored: &StoredIdentity,
    scene: SceneRole<'_>,
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
    roles.extend((0..spans.len().saturating_sub(1).max(sample)).map(Role::Frame));
    let mut spans = spans.to_vec();
    if spans.len() <= sample {
        spans.resize(sample + 1, frame.spans.clone());
    }
    spans[sample] = frame.spans.clone();
    let mut ctrl = CharaConsistControl::new(
        settings.clone(),
        roles,
        spans,
        cfg.axes_dim.clone(),
        cfg.theta,
        IdentityBank::new(stored.bank.storage_dtype()),
        true,
    )
    .with_stored_identity(stored.clone());
    if settings.background == BackgroundMode::MixedScenes {
        // Scenes are decided by the caller here: every frame on its own scene first.
        let scenes: Vec<u32> = (0..=sample as u32).collect();
        ctrl = ctrl.with_scenes(&scenes);
        match scene {
            SceneRole::Alone => {}
            SceneRole::Source => ctrl = ctrl.recording_background_source(sample),
            SceneRole::Reader(source) => {
                ctrl = ctrl.with_stored_background_source(sample, source.clone())
            }
        }
    }
    let size = (params.width, params.height);
    ctrl.set_pass(Pass::PreRun)?;
    let pre = request(
        params,
        size,
        vec![frame.spec.clone()],
        vec![sample],
        Some(settings.extraction_step),
    );
    pipeline.sample_batch(&pre, &mut (&mut ctrl, &mut *other), cancel, |r| {
        on_step(Pass::PreRun, r)
    })?;
    ctrl.set_pass(Pass::Full)?;
    let pre_run_analysis = ctrl.analysis(sample).unwrap_or_default();
    let full = request(params, size, vec![frame.spec.clone()], vec![sample], None);
    let tokens = pipeline.sample_batch(&full, &mut (&mut ctrl, &mut *other), cancel, |r| {
        on_step(Pass::Full, r)
    })?;
    ctrl.finish()?;
    let analysis = ctrl.analysis(sample).unwrap_or_default();
    let scene_source = match scene {
        SceneRole::Source if settings.background == BackgroundMode::MixedScenes => {
            Some(StoredIdentity {
                bank: ctrl
                    .recorded_bank(sample)
                    .cloned()
                    .unwrap_or_else(|| IdentityBank::new(stored.bank.storage_dtype())),
                mask: Some(pre_run_analysis.frame_mask.clone()),
                full_run_mask: Some(analysis.frame_mask.clone()),
                grid: (analysis.frame_mask.rows, analysis.frame_mask.cols),
            })
        }
        _ => None,
    };
    Ok(StoredFrame {
        tokens,
        analysis,
        pre_run_analysis,
        scene_source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::dit::FluxConfig;

    #[test]
    fn the_strategy_follows_the_budget() {
        // Tiny config, 8 text + 16 image tokens, 2 frames, f32: the batch needs
        // 3·79,872 + 4,096 + 2·10,240 = 264,192 bytes (see the budget tests).
        let config = FluxConfig::tiny(true);
        let shape = StoryShape {
            config: &config,
            text_tokens: 8,
            image_tokens: 16,
            frames: 2,
            steps: 10,
        };
        assert_eq!(estimate_co_batched_batch(&shape, DType::F32), 264_192);
        assert_eq!(
            BankStrategy::auto(&shape, DType::F32, 264_192, DType::F16),
            BankStrategy::CoBatched
        );
        assert_eq!(
            BankStrategy::auto(&shape, DType::F32, 264_191, DType::F16),
            BankStrategy::Stored { dtype: DType::F16 }
        );
        // FLUX.1-dev at 1024x1024 with 6 frames needs ~2.7 GB per sample in bf16: the
        // default 4096 MiB budget stores the bank, a large one co-batches.
        let dev = FluxConfig::dev();
        let shape = StoryShape {
            config: &dev,
            text_tokens: 512,
            image_tokens: 4096,
            frames: 6,
            steps: 50,
        };
        assert_eq!(
            BankStrategy::auto(&shape, DType::BF16, 4096 << 20, DType::BF16),
            BankStrategy::Stored { dtype: DType::BF16 }
        );
        assert_eq!(
            BankStrategy::auto(&shape, DType::BF16, 64 << 30, DType::BF16),
            BankStrategy::CoBatched
        );
    }

    #[test]
    fn scene_sources_come_first_in_their_scene() {
        let roles = [
            Role::Identity,
            Role::Frame(0),
            Role::Frame(1),
            Role::Frame(2),
            Role::Frame(3),
        ];
        // Frames in scenes 1, 2, 1, 2 (the identity's scene is ignored).
        let scenes = [9, 1, 2, 1, 2];
        assert_eq!(
            background_sources(BackgroundMode::MixedScenes, &roles, &scenes),
            vec![None, None, None, Some(1), Some(2)]
        );
        assert_eq!(
            background_sources(BackgroundMode::Keep, &roles, &scenes),
            vec![None, Some(0), Some(0), Some(0), Some(0)]
        );
        assert_eq!(
            background_sources(BackgroundMode::Switch, &roles, &scenes),
            vec![None; 5]
        );
    }
}
