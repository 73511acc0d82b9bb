//! A story with ASemConsist through the real pipeline: the combined prompt
//! `[p_id, bg_1, act_1, .., bg_k, act_k]` encoded once, the passes before the frames (the AFS
//! probe and the identity record) and the frame pass.
//!
//! Two ways to run the frame pass after [`prepare`]:
//! - ASemConsist alone ([`render_frames`]): frames are samples `0..k` with roles
//!   [`SampleRole::Frame`], every one on the combined prompt's conditioning;
//! - with CharaConsist: sample 0 is CharaConsist's identity image (role [`SampleRole::Plain`]),
//!   samples `1..=k` are the frames (role `Frame(i - 1)`), and the returned control runs after
//!   CharaConsist's on every hook. Rows of other roles pass through untouched, and frame rows
//!   read the identity record's residual cache wherever they sit in the batch (the cache is
//!   keyed by step and block only).

use std::ops::Range;
use std::sync::atomic::AtomicBool;

use candle_core::Tensor;

use super::afs::{AfsDecision, AfsMode, ProbeSeeds};
use super::control::{AsemControl, SampleRole};
use super::pipeline::SegmentSpans;
use super::schedule::{FLUX1_DEPTH, ModelDepth, scale_blocks};
use super::settings::{AsemSettings, PromptLayout, SeparatorTokens};
use crate::model::pipeline::{
    BatchRequest, Conditioning, Pipeline, PipelineError, PromptEncoder, SampleSpec,
};
use crate::model::sampler::StepReport;

/// Segments of the combined prompt: `[identity, bg_1, act_1, bg_2, act_2, ..]` (empty strings
/// allowed; the encoder gives them empty spans).
pub fn combined_segments(identity: &str, frames: &[(String, String)]) -> Vec<String> {
    let mut segments = Vec::with_capacity(1 + 2 * frames.len());
    segments.push(identity.to_string());
    for (background, action) in frames {
        segments.push(background.clone());
        segments.push(action.clone());
    }
    segments
}

/// Why a combined prompt cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CombinedPromptError {
    /// The combined prompt is longer than the encoder's token budget. `frames` are 0-based
    /// indices of the frames whose text was cut (fully or partly).
    #[error(
        "the combined prompt does not fit the text encoder's {max_len} tokens: {}; shorten the prompts",
        describe_cut(*identity_cut, frames)
    )]
    Truncated {
        max_len: usize,
        identity_cut: bool,
        frames: Vec<usize>,
    },
    #[error("the prompt encoder returned {got} segment spans for {expected} segments")]
    SegmentCount { expected: usize, got: usize },
    #[error("encoding the combined prompt: {0}")]
    Encoder(String),
}

fn describe_cut(identity_cut: bool, frames: &[usize]) -> String {
    let numbers: Vec<String> = frames.iter().map(|i| (i + 1).to_string()).collect();
    let frames_text = match numbers.len() {
        0 => String::new(),
        1 => format!("frame {} does not fit", numbers[0]),
        _ => format!("frames {} do not fit", numbers.join(", ")),
    };
    match (identity_cut, frames_text.is_empty()) {
        (true, true) => "the character prompt does not fit".into(),
        (true, false) => format!("the character prompt is cut and {frames_text}"),
        (false, _) => frames_text,
    }
}

/// The combined prompt, encoded once, with the ASemConsist spans and every frame's
/// (background, action) token ranges.
#[derive(Debug, Clone)]
pub struct AsemPrompt {
    pub conditioning: Conditioning,
    /// e_id, each e_i (from the start of bg_i to the end of act_i) and the padding, laid out
    /// as [`encode_combined_with`] was told (the default layout for [`encode_combined`]).
    /// [`prepare`] lays the spans out again from the conditioning with the settings' layout.
    pub spans: SegmentSpans,
    /// Token ranges of each frame's background and action segments.
    pub frame_parts: Vec<(Range<usize>, Range<usize>)>,
}

impl AsemPrompt {
    pub fn num_frames(&self) -> usize {
        self.frame_parts.len()
    }
}

/// Encodes the combined prompt with the default [`PromptLayout`].
pub fn encode_combined(
    encoder: &mut dyn PromptEncoder,
    identity: &str,
    frames: &[(String, String)],
) -> Result<AsemPrompt, CombinedPromptError> {
    encode_combined_with(encoder, identity, frames, PromptLayout::default())
}

/// Encodes the combined prompt once and lays out its spans. A prompt the encoder had to cut is
/// an error that names the frames which did not fit.
pub fn encode_combined_with(
    encoder: &mut dyn PromptEncoder,
    identity: &str,
    frames: &[(String, String)],
    layout: PromptLayout,
) -> Result<AsemPrompt, CombinedPromptError> {
    let segments = combined_segments(identity, frames);
    let refs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let conditioning = encoder
        .encode(&refs)
        .map_err(|e| CombinedPromptError::Encoder(format!("{e:#}")))?;
    check_segment_count(&conditioning, segments.len())?;
    if conditioning.truncated {
        let cut = cut_segments(&conditioning, &segments);
        let max_len = conditioning.txt.dim(1).unwrap_or(conditioning.padding.end);
        let mut frames_cut: Vec<usize> = cut
            .iter()
            .filter(|&&s| s > 0)
            .map(|s| (s - 1) / 2)
            .collect();
        frames_cut.dedup();
        return Err(CombinedPromptError::Truncated {
            max_len,
            identity_cut: cut.first() == Some(&0),
            frames: frames_cut,
        });
    }
    let (spans, frame_parts) = asem_spans(&conditioning, frames.len(), layout)?;
    Ok(AsemPrompt {
        conditioning,
        spans,
        frame_parts,
    })
}

/// Consecutive frames of a story (indices into its frames) whose combined prompt
/// `[identity, bg_i, act_i, ..]` fits the text encoder, with that prompt encoded.
#[derive(Debug, Clone)]
pub struct PromptGroup {
    pub frames: Range<usize>,
    pub prompt: AsemPrompt,
}

/// Encodes a story's combined prompt, split into groups of consecutive frames where the whole
/// story does not fit the text encoder's window (real storyboards have 20-100 frames): every
/// group repeats the identity text and takes, in story order, as many whole frames as fit. A
/// story that fits is one group. Fails, naming the frame, only when the identity alone or the
/// identity with a single frame does not fit.
pub fn encode_groups(
    encoder: &mut dyn PromptEncoder,
    identity: &str,
    frames: &[(String, String)],
) -> Result<Vec<PromptGroup>, CombinedPromptError> {
    let groups = group_greedily(frames.len(), |range| {
        encode_combined(encoder, identity, &frames[range])
    })?;
    Ok(groups
        .into_iter()
        .map(|(frames, prompt)| PromptGroup { frames, prompt })
        .collect())
}

/// The greedy split behind [`encode_groups`], over any encoding that reports the frames it
/// had to cut (indices relative to the range it was given).
fn group_greedily<P>(
    num_frames: usize,
    mut encode: impl FnMut(Range<usize>) -> Result<P, CombinedPromptError>,
) -> Result<Vec<(Range<usize>, P)>, CombinedPromptError> {
    let mut groups = Vec::new();
    let mut start = 0;
    loop {
        let rest = start..num_frames;
        match encode(rest.clone()) {
            Ok(prompt) => {
                groups.push((rest, prompt));
                return Ok(groups);
            }
            Err(CombinedPromptError::Truncated {
                identity_cut: false,
                frames,
                ..
            }) if frames.first().is_some_and(|&first| first > 0) => {
                // The frames before the first cut one fit whole: they are this group.
                let end = start + frames[0];
                groups.push((start..end, encode(start..end)?));
                start = end;
            }
            Err(CombinedPromptError::Truncated {
                max_len,
                identity_cut,
                frames,
            }) => {
                return Err(CombinedPromptError::Truncated {
                    max_len,
                    identity_cut,
                    frames: frames.into_iter().map(|f| f + start).collect(),
                });
            }
            Err(e) => return Err(e),
        }
    }
}

fn check_segment_count(
    conditioning: &Conditioning,
    expected: usize,
) -> Result<(), CombinedPromptError> {
    let got = conditioning.segment_spans.len();
    if got != expected {
        return Err(CombinedPromptError::SegmentCount { expected, got });
    }
    Ok(())
}

/// Indices of the segments a truncated encoding cut: a non-empty segment whose span is empty
/// (nothing of it fit) or reaches the end token (its end may be missing; a segment that fit
/// exactly up to the budget is counted too, since a conditioning does not tell the two apart).
fn cut_segments(conditioning: &Conditioning, segments: &[String]) -> Vec<usize> {
    segments
        .iter()
        .zip(&conditioning.segment_spans)
        .enumerate()
        .filter(|(_, (text, span))| {
            !text.trim().is_empty() && (span.is_empty() || span.end >= conditioning.eos)
        })
        .map(|(i, _)| i)
        .collect()
}

/// The ASemConsist spans of a combined-prompt conditioning with `num_frames` frames:
/// e_id = the identity segment; e_i = bg_i and act_i with the separator between them (either
/// may be empty: e_i is then the other; both empty gives an empty span); separators between
/// the identity and frames per [`PromptLayout::separators`]; padding = the rows after the EOS,
/// or from the EOS on with [`PromptLayout::eos_is_padding`].
pub fn asem_spans(
    conditioning: &Conditioning,
    num_frames: usize,
    layout: PromptLayout,
) -> Result<(SegmentSpans, Vec<(Range<usize>, Range<usize>)>), CombinedPromptError> {
    let seg = &conditioning.segment_spans;
    check_segment_count(conditioning, 1 + 2 * num_frames)?;
    let frame_parts: Vec<(Range<usize>, Range<usize>)> = (0..num_frames)
        .map(|i| (seg[1 + 2 * i].clone(), seg[2 + 2 * i].clone()))
        .collect();
    let mut owners: Vec<Range<usize>> = vec![seg[0].clone()];
    owners.extend(
        frame_parts
            .iter()
            .map(|(bg, act)| match (bg.is_empty(), act.is_empty()) {
                (false, false) => bg.start..act.end,
                (false, true) => bg.clone(),
                (true, _) => act.clone(),
            }),
    );
    if layout.separators == SeparatorTokens::WithPreceding {
        let starts: Vec<Option<usize>> = owners
            .iter()
            .map(|r| (!r.is_empty()).then_some(r.start))
            .collect();
        for j in 0..owners.len() {
            if owners[j].is_empty() {
                continue;
            }
            let next = starts[j + 1..]
                .iter()
                .flatten()
                .next()
                .copied()
                .unwrap_or(conditioning.eos);
            owners[j].end = owners[j].end.max(next);
        }
    }
    let padding = if layout.eos_is_padding {
        conditioning.eos..conditioning.padding.end
    } else {
        conditioning.padding.clone()
    };
    let identity = owners.remove(0);
    Ok((
        SegmentSpans {
            identity,
            frames: owners,
            padding,
        },
        frame_parts,
    ))
}

/// Roles of a frame pass where sample `i` is frame `i`.
pub fn frame_roles(num_frames: usize) -> Vec<SampleRole> {
    (0..num_frames).map(SampleRole::Frame).collect()
}

fn input_error(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Input(e.to_string())
}

fn encoder_error(e: anyhow::Error) -> PipelineError {
    PipelineError::Input(format!("encoding a prompt: {e:#}"))
}

struct PassShape {
    width: u32,
    height: u32,
    steps: usize,
    guidance: f32,
}

impl PassShape {
    fn request(&self, samples: Vec<SampleSpec>, stop_after: Option<usize>) -> BatchRequest {
        let n = samples.len();
        BatchRequest {
            samples,
            width: self.width,
            height: self.height,
            steps: self.steps,
            guidance: self.guidance,
            batch_index: (0..n).collect(),
            stop_after,
        }
    }
}

/// The AFS probe pass on `ctrl`: `{p_id + p_i}` (each encoded as `[identity, bg_i, act_i]`)
/// in one batch up to the probe step, seeded per [`ProbeSeeds`]; the control keeps the probe
/// features. Nothing runs for a story without frames.
#[allow(clippy::too_many_arguments)]
fn probe_pass(
    pipeline: &Pipeline,
    encoder: &mut dyn PromptEncoder,
    ctrl: &mut AsemControl,
    identity: &str,
    frames: &[(String, String)],
    identity_seed: u64,
    frame_seeds: &[u64],
    shape: &PassShape,
    cancel: &AtomicBool,
    on_step: &mut impl FnMut(&StepReport) -> candle_core::Result<()>,
) -> Result<(), PipelineError> {
    if frames.is_empty() {
        return Ok(());
    }
    let settings = ctrl.settings().clone();
    let afs = &settings.afs;
    let samples = frames
        .iter()
        .zip(frame_seeds)
        .map(|((background, action), &frame_seed)| {
            let conditioning = encoder
                .encode(&[identity, background, action])
                .map_err(encoder_error)?;
            let seed = match afs.probe_seeds {
                ProbeSeeds::FrameSeeds => frame_seed,
                ProbeSeeds::IdentitySeed => identity_seed,
            };
            Ok(SampleSpec { conditioning, seed })
        })
        .collect::<Result<Vec<_>, PipelineError>>()?;
    let last = *afs
        .probe_step
        .sampler_steps(shape.steps, settings.step_indexing)
        .end();
    ctrl.set_roles(vec![SampleRole::Probe; samples.len()]);
    pipeline.sample_batch(
        &shape.request(samples, Some(last)),
        &mut *ctrl,
        cancel,
        on_step,
    )?;
    Ok(())
}

/// The ambiguity radius of an identity prompt over a story's frames: exactly the probe pass
/// of [`prepare`] in mode `Auto` (same prompts, seeds, block and step), without a decision.
/// `None` when there are no frames or the model has no block to probe. For calibrating the
/// threshold on a model (see [`super::afs::calibrate_threshold`]).
#[allow(clippy::too_many_arguments)]
pub fn measure_ambiguity(
    pipeline: &Pipeline,
    encoder: &mut dyn PromptEncoder,
    identity: &str,
    frames: &[(String, String)],
    identity_seed: u64,
    frame_seeds: &[u64],
    width: u32,
    height: u32,
    steps: usize,
    guidance: f32,
    settings: &AsemSettings,
    cancel: &AtomicBool,
    mut on_step: impl FnMut(&StepReport) -> candle_core::Result<()>,
) -> Result<Option<f32>, PipelineError> {
    if frame_seeds.len() != frames.len() || steps == 0 {
        return Err(PipelineError::Input(format!(
            "{} frames need as many seeds (got {}) and at least one step",
            frames.len(),
            frame_seeds.len()
        )));
    }
    let empty = SegmentSpans {
        identity: 0..0,
        frames: Vec::new(),
        padding: 0..0,
    };
    let mut ctrl = AsemControl::new(settings.clone(), empty, Vec::new());
    let shape = PassShape {
        width,
        height,
        steps,
        guidance,
    };
    probe_pass(
        pipeline,
        encoder,
        &mut ctrl,
        identity,
        frames,
        identity_seed,
        frame_seeds,
        &shape,
        cancel,
        &mut on_step,
    )?;
    ctrl.probe_radius().map_err(input_error)
}

/// Runs what must happen before the frames and returns the control ready for the frame pass
/// (its roles empty: the caller sets them with [`AsemControl::set_roles`]) and the AFS
/// decision for the UI (`None` when AFS is off).
///
/// 1. Mode `Auto`: the probe pass, the prompts `{p_id + p_i}` (each encoded on its own as
///    `[identity, bg_i, act_i]`) in one batch up to the probe step, seeded per
///    [`ProbeSeeds`]; then the decision (radius > threshold).
/// 2. When sharing is on (`Always`, or `Auto` and ambiguous): the identity record, `p_id`
///    alone from `identity_seed`, up to the last sharing step; its residual features at the
///    sharing blocks fill the control's cache.
///
/// The control's spans are laid out from `prompt.conditioning` with `settings.prompt`.
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    pipeline: &Pipeline,
    encoder: &mut dyn PromptEncoder,
    prompt: &AsemPrompt,
    identity: &str,
    frames: &[(String, String)],
    identity_seed: u64,
    frame_seeds: &[u64],
    width: u32,
    height: u32,
    steps: usize,
    guidance: f32,
    settings: &AsemSettings,
    cancel: &AtomicBool,
    mut on_step: impl FnMut(&StepReport) -> candle_core::Result<()>,
) -> Result<(AsemControl, Option<AfsDecision>), PipelineError> {
    if frame_seeds.len() != frames.len() || prompt.num_frames() != frames.len() {
        return Err(PipelineError::Input(format!(
            "{} frames need as many seeds (got {}) and a combined prompt of as many frames (got {})",
            frames.len(),
            frame_seeds.len(),
            prompt.num_frames()
        )));
    }
    if steps == 0 {
        return Err(PipelineError::Input(
            "a generation needs at least one step".into(),
        ));
    }
    let (spans, _) =
        asem_spans(&prompt.conditioning, frames.len(), settings.prompt).map_err(input_error)?;
    let mut ctrl = AsemControl::new(settings.clone(), spans, Vec::new());
    let afs = &settings.afs;
    if afs.mode == AfsMode::Never {
        return Ok((ctrl, None));
    }
    let shape = PassShape {
        width,
        height,
        steps,
        guidance,
    };

    if afs.mode == AfsMode::Auto {
        probe_pass(
            pipeline,
            encoder,
            &mut ctrl,
            identity,
            frames,
            identity_seed,
            frame_seeds,
            &shape,
            cancel,
            &mut on_step,
        )?;
    }
    let decision = ctrl.decide().map_err(input_error)?;

    let cfg = pipeline.transformer.config();
    let depth = ModelDepth {
        num_double: cfg.depth,
        num_single: cfg.depth_single_blocks,
    };
    let has_share_blocks = !scale_blocks(&afs.share_blocks, FLUX1_DEPTH, depth).is_empty();
    if ctrl.sharing_active() && has_share_blocks {
        let conditioning = encoder.encode(&[identity]).map_err(encoder_error)?;
        let last = *afs
            .share_steps
            .sampler_steps(steps, settings.step_indexing)
            .end();
        ctrl.set_roles(vec![SampleRole::IdentityRecord]);
        let record = vec![SampleSpec {
            conditioning,
            seed: identity_seed,
        }];
        pipeline.sample_batch(
            &shape.request(record, Some(last)),
            &mut ctrl,
            cancel,
            &mut on_step,
        )?;
    }
    ctrl.set_roles(Vec::new());
    Ok((ctrl, Some(decision)))
}

/// The frames of a story rendered with ASemConsist alone.
#[derive(Debug)]
pub struct AsemFrames {
    /// Final packed tokens of every frame, `[k, N, 4C]` in frame order.
    pub tokens: Tensor,
    pub decision: Option<AfsDecision>,
    /// The control after the frame pass (its caches and decision).
    pub control: AsemControl,
}

/// [`prepare`], then all frames in one batch on the combined prompt (sample `i` = frame `i`,
/// seed `frame_seeds[i]`). `on_step` sees every step of every pass.
#[allow(clippy::too_many_arguments)]
pub fn render_frames(
    pipeline: &Pipeline,
    encoder: &mut dyn PromptEncoder,
    prompt: &AsemPrompt,
    identity: &str,
    frames: &[(String, String)],
    identity_seed: u64,
    frame_seeds: &[u64],
    width: u32,
    height: u32,
    steps: usize,
    guidance: f32,
    settings: &AsemSettings,
    cancel: &AtomicBool,
    mut on_step: impl FnMut(&StepReport) -> candle_core::Result<()>,
) -> Result<AsemFrames, PipelineError> {
    let (mut control, decision) = prepare(
        pipeline,
        encoder,
        prompt,
        identity,
        frames,
        identity_seed,
        frame_seeds,
        width,
        height,
        steps,
        guidance,
        settings,
        cancel,
        &mut on_step,
    )?;
    control.set_roles(frame_roles(frames.len()));
    let samples = frame_seeds
        .iter()
        .map(|&seed| SampleSpec {
            conditioning: prompt.conditioning.clone(),
            seed,
        })
        .collect();
    let shape = PassShape {
        width,
        height,
        steps,
        guidance,
    };
    let tokens = pipeline.sample_batch(
        &shape.request(samples, None),
        &mut control,
        cancel,
        &mut on_step,
    )?;
    Ok(AsemFrames {
        tokens,
        decision,
        control,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// A conditioning with the given segment spans, EOS and length (features are zeros).
    fn conditioning(
        spans: Vec<Range<usize>>,
        eos: usize,
        len: usize,
        truncated: bool,
    ) -> Conditioning {
        Conditioning {
            txt: Tensor::zeros((1, len, 4), DType::F32, &Device::Cpu).unwrap(),
            pooled: Tensor::zeros((1, 4), DType::F32, &Device::Cpu).unwrap(),
            segment_spans: spans,
            eos,
            padding: eos + 1..len,
            truncated,
        }
    }

    #[test]
    fn segments_interleave_backgrounds_and_actions() {
        let frames = vec![
            ("forest".to_string(), "runs".to_string()),
            (String::new(), "sleeps".to_string()),
        ];
        assert_eq!(
            combined_segments("a fox", &frames),
            vec!["a fox", "forest", "runs", "", "sleeps"]
        );
    }

    #[test]
    fn spans_by_hand_with_commas() {
        // "a fox , forest , runs , sleeps </s> pad pad": identity 0..2, comma 2, bg_1 3..4,
        // comma 4, act_1 5..6, comma 6, bg_2 empty (at 7), act_2 7..8, EOS 8, padding 9..11.
        let c = conditioning(vec![0..2, 3..4, 5..6, 7..7, 7..8], 8, 11, false);
        let (spans, parts) = asem_spans(&c, 2, PromptLayout::default()).unwrap();
        assert_eq!(spans.identity, 0..2);
        // Frame 1 owns its inner comma (4); the comma 6 between frames belongs to no span.
        assert_eq!(spans.frames, vec![3..6, 7..8]);
        assert_eq!(spans.padding, 9..11);
        assert_eq!(parts, vec![(3..4, 5..6), (7..7, 7..8)]);

        let layout = PromptLayout {
            eos_is_padding: true,
            separators: SeparatorTokens::WithPreceding,
        };
        let (spans, _) = asem_spans(&c, 2, layout).unwrap();
        // Each comma goes to the segment before it; the last frame ends at the EOS.
        assert_eq!(spans.identity, 0..3);
        assert_eq!(spans.frames, vec![3..7, 7..8]);
        assert_eq!(spans.padding, 8..11);
    }

    #[test]
    fn an_empty_frame_owns_nothing() {
        // Identity 0..2, frame 1 empty (spans at 2), frame 2 = 2..4, EOS 4.
        let c = conditioning(vec![0..2, 2..2, 2..2, 2..3, 3..4], 4, 6, false);
        let layout = PromptLayout {
            eos_is_padding: false,
            separators: SeparatorTokens::WithPreceding,
        };
        let (spans, _) = asem_spans(&c, 2, layout).unwrap();
        assert_eq!(spans.identity, 0..2);
        assert_eq!(spans.frames, vec![2..2, 2..4]);
        assert!(asem_spans(&c, 1, layout).is_err());
    }

    /// A fake encoding: the identity takes `identity` tokens, frame `i` `widths[i]`, the
    /// budget is `budget`; frames that do not fit whole are reported cut, as the encoder does.
    fn fake_encode(
        identity: usize,
        widths: &[usize],
        budget: usize,
    ) -> impl FnMut(Range<usize>) -> Result<Range<usize>, CombinedPromptError> + '_ {
        move |range: Range<usize>| {
            let mut used = identity;
            let mut cut = Vec::new();
            for (k, i) in range.clone().enumerate() {
                used += widths[i];
                if used > budget {
                    cut.push(k);
                }
            }
            if identity > budget || !cut.is_empty() {
                return Err(CombinedPromptError::Truncated {
                    max_len: budget,
                    identity_cut: identity > budget,
                    frames: cut,
                });
            }
            Ok(range)
        }
    }

    #[test]
    fn long_stories_split_into_groups_that_fit() {
        // Identity 2 + frames of 3: a budget of 9 holds two frames per group.
        let groups = group_greedily(5, fake_encode(2, &[3, 3, 3, 3, 3], 9)).unwrap();
        let ranges: Vec<Range<usize>> = groups.iter().map(|(r, _)| r.clone()).collect();
        assert_eq!(ranges, vec![0..2, 2..4, 4..5]);
        // What was encoded for each group is exactly that group.
        assert!(groups.iter().all(|(r, encoded)| r == encoded));
        // Uneven widths: 2+4+3 = 9 fits, then 2+5+1+1 = 9, then 2+1.
        let groups = group_greedily(6, fake_encode(2, &[4, 3, 5, 1, 1, 1], 9)).unwrap();
        let ranges: Vec<Range<usize>> = groups.iter().map(|(r, _)| r.clone()).collect();
        assert_eq!(ranges, vec![0..2, 2..5, 5..6]);
        // A story that fits is one group.
        let groups = group_greedily(2, fake_encode(2, &[3, 3], 9)).unwrap();
        assert_eq!(groups.len(), 1);
    }

    #[test]
    fn a_frame_that_cannot_fit_alone_is_named_in_story_numbering() {
        // Frame 3 (index 2) needs 8 tokens next to the identity's 2: more than 9.
        let err = group_greedily(3, fake_encode(2, &[3, 3, 8], 9)).unwrap_err();
        match err {
            CombinedPromptError::Truncated {
                identity_cut,
                frames,
                ..
            } => {
                assert!(!identity_cut);
                assert_eq!(frames, vec![2]);
            }
            other => panic!("unexpected {other}"),
        }
        let err = group_greedily(1, fake_encode(12, &[1], 9)).unwrap_err();
        assert!(err.to_string().contains("character prompt"));
    }

    #[test]
    fn cut_segments_name_the_frames() {
        // Budget of 7 real tokens + EOS: identity 0..2, frame 1 = 2..4, 4..6, frame 2's
        // background clipped to 6..7, its action empty; frame 3 empty text is not cut.
        let c = conditioning(vec![0..2, 2..4, 4..6, 6..7, 7..7, 7..7, 7..7], 7, 8, true);
        let texts: Vec<String> = [
            "a fox",
            "deep forest",
            "runs fast",
            "blue lake",
            "swims",
            "",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(cut_segments(&c, &texts), vec![3, 4]);
        assert_eq!(describe_cut(false, &[1]), "frame 2 does not fit");
        assert_eq!(
            describe_cut(true, &[0, 1]),
            "the character prompt is cut and frames 1, 2 do not fit"
        );
    }
}
