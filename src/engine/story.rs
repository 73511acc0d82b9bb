//! Rendering with the consistency methods. CharaConsist and ASemConsist need the whole
//! story at once (the identity image, every frame's prompt), so a generation with either
//! method on renders its frames together instead of one by one.

use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use candle_core::DType;
use image::RgbImage;

use super::messages::{
    Event, FrameJob, FrameResult, GenerationMetadata, RenderSettings, StoryContext,
};
use super::render::{LoadedModel, character_text, frame_segments, joined_prompt};
use crate::consistency::asemconsist::{self, AfsDecision, SampleRole};
use crate::consistency::characonsist::control::{Pass, StoredIdentity};
use crate::consistency::characonsist::story::{
    BankStrategy, StoryParams, StorySample, render_frame_stored, render_story,
};
use crate::consistency::characonsist::{self, BankFingerprint, PromptSpans, StoryShape};
use crate::consistency::{FrameAnalysis, MethodSettings};
use crate::model::dit::{Control, NoControl};
use crate::model::pipeline::{
    BatchRequest, Conditioning, Pipeline, PipelineError, SampleSpec, latent_geometry,
};
use crate::model::sampler::StepReport;

/// An identity bank kept between jobs, with what it was recorded for (a later regeneration
/// reuses it only when that is unchanged).
pub struct CachedIdentity {
    fingerprint: BankFingerprint,
    stored: StoredIdentity,
    image: RgbImage,
}

/// The frames of the story the methods read: the whole story when the caller sent it,
/// otherwise the frames being rendered.
fn story_frames<'a>(story: &'a StoryContext, jobs: &'a [FrameJob]) -> &'a [FrameJob] {
    if story.frames.is_empty() {
        jobs
    } else {
        &story.frames
    }
}

/// The identity image's prompt: the first frame's environment, the character, no action.
/// With the keep-background mode every frame takes this environment over.
pub fn identity_segments(story: &StoryContext, frames: &[FrameJob]) -> Vec<String> {
    let background = frames
        .first()
        .map(|f| f.background.trim().to_string())
        .unwrap_or_default();
    vec![background, character_text(story), String::new()]
}

/// CharaConsist's spans of a `[background, character, action]` prompt: background, then
/// character and action together (eqs. 6-9 compare the two).
fn plain_spans(c: &Conditioning) -> PromptSpans {
    let spans = &c.segment_spans;
    let background = spans.first().cloned().unwrap_or(0..0);
    let fg_start = spans.get(1).map_or(background.end, |r| r.start);
    let fg_end = spans[1..]
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| r.end)
        .max()
        .unwrap_or(fg_start);
    PromptSpans::new(background, fg_start..fg_end.max(fg_start))
}

/// Reports progress of every frame of a pass as one count over all passes.
struct Progress<'a> {
    report: &'a mut dyn FnMut(Event),
    /// Frames of the batch, in order.
    frame_ids: Vec<u64>,
    /// Frames the caller asked for (others render along and stay silent).
    requested: Vec<u64>,
    done: usize,
    total: usize,
    /// Steps one frame is expected to take.
    planned: usize,
    /// Stored strategy: frames run one after another; this is the one running.
    sequential: Option<usize>,
    seen_full: bool,
    /// Send a preview of each frame with its progress (the user's setting).
    previews: bool,
    width: u32,
    height: u32,
}

/// Where the frames of a step's batch are: the pipeline and the batch row of the first one.
struct FrameRows<'p> {
    pipeline: &'p Pipeline,
    first_frame_row: usize,
}

impl Progress<'_> {
    fn step(&mut self, pass: Option<Pass>, r: &StepReport, rows: Option<FrameRows<'_>>) {
        if let Some(current) = self.sequential.as_mut() {
            // A new pre-run after a full run is the next frame, which counts from zero.
            if pass == Some(Pass::PreRun) && self.seen_full && r.step == 0 {
                *current += 1;
                self.seen_full = false;
                self.done = 0;
                self.total = self.planned;
            }
            self.seen_full |= pass == Some(Pass::Full);
        }
        self.done += 1;
        self.total = self.total.max(self.done);
        // Stored identity: one frame per batch, in its first frame row.
        let positions: Vec<(usize, usize)> = match self.sequential {
            Some(i) => vec![(i, 0)],
            None => (0..self.frame_ids.len()).map(|k| (k, k)).collect(),
        };
        for (k, offset) in positions {
            let Some(&frame_id) = self.frame_ids.get(k) else {
                continue;
            };
            if !self.requested.contains(&frame_id) {
                continue;
            }
            // The identity's own recording pass shows no frame.
            let preview = match &rows {
                Some(at) if self.previews && pass != Some(Pass::Record) => at
                    .pipeline
                    .preview(
                        r.predicted_x0,
                        at.first_frame_row + offset,
                        self.width,
                        self.height,
                    )
                    .ok()
                    .flatten(),
                _ => None,
            };
            (self.report)(Event::Progress {
                frame_id,
                step: self.done,
                of: self.total,
                preview,
            });
        }
    }
}

/// What ran, for the frame cards and the PNG metadata.
fn methods_used(
    methods: &MethodSettings,
    afs: Option<AfsDecision>,
    strategy: Option<BankStrategy>,
) -> Vec<String> {
    let mut used = Vec::new();
    if methods.characonsist_enabled {
        let c = &methods.characonsist;
        let mode = match c.background {
            characonsist::BackgroundMode::Keep => "keep background",
            characonsist::BackgroundMode::Switch => "switch background",
            characonsist::BackgroundMode::MixedScenes => "mixed scenes",
        };
        let bank = match strategy {
            Some(BankStrategy::Stored { .. }) => ", stored identity",
            _ => "",
        };
        used.push(format!("CharaConsist ({mode}{bank})"));
    }
    if methods.asemconsist_enabled {
        let afs = match afs {
            Some(d) => match d.radius {
                Some(r) => format!(
                    "AFS {}, radius {r:.4}",
                    if d.use_sharing { "on" } else { "off" }
                ),
                None => format!("AFS {}", if d.use_sharing { "on" } else { "off" }),
            },
            None => "AFS off".into(),
        };
        used.push(format!("ASemConsist ({afs})"));
    }
    used
}

/// Renders `jobs` of `story` with the enabled methods. `Ok(None)` means it was cancelled.
/// With CharaConsist the identity image is reported first (`Event::IdentityDone`).
pub fn render_with_methods(
    model: &mut LoadedModel,
    story: &StoryContext,
    jobs: &[FrameJob],
    settings: &RenderSettings,
    regenerate: bool,
    cancel: &AtomicBool,
    report: &mut dyn FnMut(Event),
) -> anyhow::Result<Option<Vec<FrameResult>>> {
    let started = Instant::now();
    let methods = &settings.methods;
    let all = story_frames(story, jobs);
    let requested: Vec<u64> = jobs.iter().map(|j| j.frame_id).collect();
    let with_sources;
    let jobs = if regenerate
        && methods.characonsist_enabled
        && methods.characonsist.background == characonsist::BackgroundMode::MixedScenes
    {
        with_sources = with_scene_sources(all, jobs);
        &with_sources[..]
    } else {
        jobs
    };
    let (width, height) = model.pipeline.output_size(settings.width, settings.height);
    let params = StoryParams {
        width,
        height,
        steps: settings.steps,
        guidance: settings.guidance,
    };

    // ASemConsist's combined prompt names every frame of the story; a job frame's index in it
    // is its position in the story.
    let story_index = |job: &FrameJob| -> anyhow::Result<usize> {
        all.iter()
            .position(|f| f.frame_id == job.frame_id)
            .with_context(|| {
                format!(
                    "frame {} is not part of the story it was sent with",
                    job.frame_id
                )
            })
    };
    let indices: Vec<usize> = jobs
        .iter()
        .map(&story_index)
        .collect::<anyhow::Result<_>>()?;

    let mut progress = Progress {
        report,
        frame_ids: jobs.iter().map(|j| j.frame_id).collect(),
        requested: requested.clone(),
        done: 0,
        total: planned_steps(methods, settings.steps),
        planned: planned_steps(methods, settings.steps),
        sequential: None,
        seen_full: false,
        previews: settings.previews,
        width,
        height,
    };

    let outcome = if methods.asemconsist_enabled {
        let run = StoryRun {
            story,
            all,
            params: &params,
            methods,
            regenerate,
            cancel,
        };
        asem_story(model, &run, jobs, &indices, &mut progress)?
    } else {
        let frame_inputs = jobs
            .iter()
            .map(|job| {
                let segments = frame_segments(story, job);
                let refs: Vec<&str> = segments.iter().map(String::as_str).collect();
                let conditioning = model.encoder.encode(&refs)?;
                let spans = plain_spans(&conditioning);
                Ok(FrameInput {
                    job: job.clone(),
                    conditioning,
                    spans,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        chara_story(
            model,
            story,
            all,
            &frame_inputs,
            &params,
            methods,
            regenerate,
            cancel,
            &mut NoControl,
            &mut progress,
        )?
    };
    let Some(outcome) = outcome else {
        return Ok(None);
    };

    let used = methods_used(methods, outcome.afs, outcome.strategy);
    let frame_used = |i: usize| -> (Option<AfsDecision>, Vec<String>) {
        match outcome.asem_frames.get(i) {
            Some(note) => {
                let mut used = methods_used(methods, note.afs, outcome.strategy);
                if let Some(asem) = used.iter_mut().find(|u| u.starts_with("ASemConsist")) {
                    *asem = note.label(asem);
                }
                (note.afs, used)
            }
            None => (outcome.afs, used.clone()),
        }
    };
    if let Some((image, analysis)) = outcome.identity.clone() {
        let segments = identity_segments(story, all);
        let metadata = Box::new(GenerationMetadata {
            prompt: joined_prompt(&segments),
            segments,
            seed: story.identity_seed,
            model: model.name.clone(),
            steps: settings.steps,
            guidance: settings.guidance,
            width,
            height,
            methods: methods.clone(),
            methods_used: used.clone(),
            seconds: 0.0,
        });
        (progress.report)(Event::IdentityDone {
            image,
            analysis,
            metadata,
        });
    }
    let seconds = started.elapsed().as_secs_f32() / jobs.len().max(1) as f32;
    let results = jobs
        .iter()
        .zip(outcome.images)
        .zip(outcome.analyses)
        .enumerate()
        .filter(|(_, ((job, _), _))| requested.contains(&job.frame_id))
        .map(|(i, ((job, image), chara))| {
            let segments = frame_segments(story, job);
            let (afs, used) = frame_used(i);
            FrameResult {
                frame_id: job.frame_id,
                image,
                analysis: FrameAnalysis {
                    characonsist: chara,
                    afs,
                },
                metadata: GenerationMetadata {
                    prompt: joined_prompt(&segments),
                    segments,
                    seed: job.seed,
                    model: model.name.clone(),
                    steps: settings.steps,
                    guidance: settings.guidance,
                    width,
                    height,
                    methods: methods.clone(),
                    methods_used: used,
                    seconds,
                },
            }
        })
        .collect();
    Ok(Some(results))
}

/// "Mixed scenes": a later frame of a scene borrows its background from the scene's first
/// frame, so regenerating it renders that first frame along (same seed, same image; its
/// result is not reported).
fn with_scene_sources(all: &[FrameJob], jobs: &[FrameJob]) -> Vec<FrameJob> {
    let mut out: Vec<FrameJob> = Vec::new();
    for job in jobs {
        if let Some(source) = all.iter().find(|f| f.scene == job.scene)
            && source.frame_id != job.frame_id
            && !out
                .iter()
                .chain(jobs)
                .any(|j| j.frame_id == source.frame_id)
        {
            out.push(source.clone());
        }
    }
    out.extend(jobs.iter().cloned());
    // Story order, so every scene's source comes before its readers.
    out.sort_by_key(|j| all.iter().position(|f| f.frame_id == j.frame_id));
    out
}

/// Steps one frame's render is expected to take, for the progress bar (the count grows if a
/// pass turns out longer, e.g. when ASemConsist records the identity's features, or a stored
/// identity is recorded before the first frame).
fn planned_steps(methods: &MethodSettings, steps: usize) -> usize {
    let mut total = 0;
    if methods.characonsist_enabled {
        let c = methods
            .characonsist
            .scaled_to(steps, methods.characonsist.num_single_blocks);
        total += c.extraction_step + 1 + steps;
    } else {
        total += steps;
    }
    if methods.asemconsist_enabled {
        total += steps / 4;
    }
    total.max(1)
}

/// One frame to render with its conditioning and CharaConsist spans.
struct FrameInput {
    job: FrameJob,
    conditioning: Conditioning,
    spans: PromptSpans,
}

/// CharaConsist's spans of frame `i` inside the combined prompt `[identity, bg_1, act_1, …]`:
/// background = bg_i, foreground = identity and act_i, softmax over every real token.
fn combined_spans(
    identity: &Range<usize>,
    bg: Range<usize>,
    act: Range<usize>,
    eos: usize,
) -> PromptSpans {
    PromptSpans::from_parts(vec![bg], vec![identity.clone(), act], 0..eos)
}

/// Images and analyses of a method run, in job order.
struct Outcome {
    images: Vec<RgbImage>,
    analyses: Vec<Option<characonsist::FrameAnalysis>>,
    identity: Option<(RgbImage, FrameAnalysis)>,
    afs: Option<AfsDecision>,
    strategy: Option<BankStrategy>,
    /// With ASemConsist, per job: its group's sharing decision and where the group lies.
    asem_frames: Vec<AsemFrameNote>,
}

impl Outcome {
    fn with_afs(mut self, afs: Option<AfsDecision>) -> Self {
        self.afs = afs;
        if let Some((_, a)) = self.identity.as_mut() {
            a.afs = afs;
        }
        self
    }
}

/// Which ASemConsist group a frame was rendered in: a story longer than the text encoder's
/// window is split into groups of consecutive frames, each with its own combined prompt.
#[derive(Debug, Clone)]
struct AsemFrameNote {
    afs: Option<AfsDecision>,
    /// 0-based group index, number of groups, and the group's frames (story positions).
    group: usize,
    groups: usize,
    frames: std::ops::Range<usize>,
}

impl AsemFrameNote {
    /// The "ASemConsist (...)" label with the group added when the story was split.
    fn label(&self, used: &str) -> String {
        if self.groups <= 1 {
            return used.to_string();
        }
        let group = format!(
            "group {} of {}, frames {}-{}",
            self.group + 1,
            self.groups,
            self.frames.start + 1,
            self.frames.end
        );
        match used.strip_suffix(')') {
            Some(open) => format!("{open}, {group})"),
            None => format!("{used} ({group})"),
        }
    }
}

/// What every pass of one story render shares.
struct StoryRun<'a> {
    story: &'a StoryContext,
    /// The whole story's frames (the methods read all of them).
    all: &'a [FrameJob],
    params: &'a StoryParams,
    methods: &'a MethodSettings,
    regenerate: bool,
    cancel: &'a AtomicBool,
}

/// ASemConsist (alone or with CharaConsist) over a story in groups whose combined prompt fits
/// the text encoder; the results come back in job order, every job with its group's note.
fn asem_story(
    model: &mut LoadedModel,
    run: &StoryRun<'_>,
    jobs: &[FrameJob],
    indices: &[usize],
    progress: &mut Progress<'_>,
) -> anyhow::Result<Option<Outcome>> {
    let (story, all) = (run.story, run.all);
    let pairs: Vec<(String, String)> = all
        .iter()
        .map(|f| (f.background.trim().to_string(), f.action.trim().to_string()))
        .collect();
    let character = character_text(story);
    let groups = asemconsist::story::encode_groups(model.encoder.as_mut(), &character, &pairs)
        .context("encoding the combined prompt")?;
    let mut parts: Vec<(Vec<usize>, Outcome)> = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        // The jobs in this group, by their position among the jobs.
        let members: Vec<usize> = (0..jobs.len())
            .filter(|&j| group.frames.contains(&indices[j]))
            .collect();
        if members.is_empty() {
            continue;
        }
        let group_jobs: Vec<FrameJob> = members.iter().map(|&j| jobs[j].clone()).collect();
        let local: Vec<usize> = members
            .iter()
            .map(|&j| indices[j] - group.frames.start)
            .collect();
        let Some(outcome) = asem_group(
            model,
            run,
            AsemGroupInput {
                pairs: &pairs[group.frames.clone()],
                seeds: &all[group.frames.clone()]
                    .iter()
                    .map(|f| f.seed)
                    .collect::<Vec<_>>(),
                prompt: &group.prompt,
                jobs: &group_jobs,
                local_indices: &local,
            },
            progress,
        )?
        else {
            return Ok(None);
        };
        let note = AsemFrameNote {
            afs: outcome.afs,
            group: g,
            groups: groups.len(),
            frames: group.frames.clone(),
        };
        let mut outcome = outcome;
        outcome.asem_frames = vec![note; members.len()];
        parts.push((members, outcome));
    }
    Ok(Some(merge_outcomes(jobs.len(), parts)))
}

/// One ASemConsist group's frames and combined prompt.
struct AsemGroupInput<'a> {
    /// (background, action) of every frame of the group, and their seeds.
    pairs: &'a [(String, String)],
    seeds: &'a [u64],
    prompt: &'a asemconsist::story::AsemPrompt,
    /// The jobs to render from this group and their positions in it.
    jobs: &'a [FrameJob],
    local_indices: &'a [usize],
}

fn asem_group(
    model: &mut LoadedModel,
    run: &StoryRun<'_>,
    group: AsemGroupInput<'_>,
    progress: &mut Progress<'_>,
) -> anyhow::Result<Option<Outcome>> {
    let (story, params, methods) = (run.story, run.params, run.methods);
    let character = character_text(story);
    let prompt = group.prompt;
    let prepared = asemconsist::story::prepare(
        &model.pipeline,
        model.encoder.as_mut(),
        prompt,
        &character,
        group.pairs,
        story.identity_seed,
        group.seeds,
        params.width,
        params.height,
        params.steps,
        params.guidance,
        &methods.asemconsist,
        run.cancel,
        |r| {
            progress.step(None, r, None);
            Ok(())
        },
    );
    let (mut asem, decision) = match prepared {
        Ok(p) => p,
        Err(e) if e.is_cancelled() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let frame_inputs: Vec<FrameInput> = group
        .jobs
        .iter()
        .zip(group.local_indices)
        .map(|(job, &i)| {
            let (bg, act) = prompt.frame_parts[i].clone();
            FrameInput {
                job: job.clone(),
                conditioning: prompt.conditioning.clone(),
                spans: combined_spans(&prompt.spans.identity, bg, act, prompt.conditioning.eos),
            }
        })
        .collect();
    // With CharaConsist, batch row 0 is its identity image, which ASemConsist leaves alone.
    let frame_roles = group.local_indices.iter().map(|&i| SampleRole::Frame(i));
    let roles = if methods.characonsist_enabled {
        std::iter::once(SampleRole::Plain)
            .chain(frame_roles)
            .collect()
    } else {
        frame_roles.collect()
    };
    asem.set_roles(roles);
    Ok(chara_story(
        model,
        story,
        run.all,
        &frame_inputs,
        params,
        methods,
        run.regenerate,
        run.cancel,
        &mut asem,
        progress,
    )?
    .map(|o| o.with_afs(decision)))
}

/// The groups' outcomes put back in job order (`parts` holds each group's job positions; the
/// groups together hold every job once). The identity, bank strategy and story-wide decision
/// come from the first group.
fn merge_outcomes(num_jobs: usize, parts: Vec<(Vec<usize>, Outcome)>) -> Outcome {
    let (identity, afs, strategy) = parts
        .first()
        .map(|(_, o)| (o.identity.clone(), o.afs, o.strategy))
        .unwrap_or_default();
    let mut per_job: Vec<Option<JobResult>> = vec![None; num_jobs];
    for (members, outcome) in parts {
        let results = outcome
            .images
            .into_iter()
            .zip(outcome.analyses)
            .zip(outcome.asem_frames);
        for (&j, ((image, analysis), note)) in members.iter().zip(results) {
            per_job[j] = Some((image, analysis, note));
        }
    }
    let (mut images, mut analyses, mut asem_frames) = (Vec::new(), Vec::new(), Vec::new());
    for (image, analysis, note) in per_job.into_iter().flatten() {
        images.push(image);
        analyses.push(analysis);
        asem_frames.push(note);
    }
    Outcome {
        images,
        analyses,
        identity,
        afs,
        strategy,
        asem_frames,
    }
}

/// One job's image, CharaConsist analysis and ASemConsist group.
type JobResult = (RgbImage, Option<characonsist::FrameAnalysis>, AsemFrameNote);

/// Frames as one batch with a control (ASemConsist alone).
fn plain_batch(
    model: &LoadedModel,
    frames: &[FrameInput],
    params: &StoryParams,
    cancel: &AtomicBool,
    control: &mut impl Control,
    progress: &mut Progress<'_>,
) -> anyhow::Result<Option<Outcome>> {
    let req = BatchRequest {
        samples: frames
            .iter()
            .map(|f| SampleSpec {
                conditioning: f.conditioning.clone(),
                seed: f.job.seed,
            })
            .collect(),
        width: params.width,
        height: params.height,
        steps: params.steps,
        guidance: params.guidance,
        batch_index: (0..frames.len()).collect(),
        stop_after: None,
    };
    let tokens = match model.pipeline.sample_batch(&req, control, cancel, |r| {
        progress.step(
            None,
            r,
            Some(FrameRows {
                pipeline: &model.pipeline,
                first_frame_row: 0,
            }),
        );
        Ok(())
    }) {
        Ok(t) => t,
        Err(e) if e.is_cancelled() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let images = model
        .pipeline
        .decode(&tokens, params.width, params.height)?;
    Ok(Some(Outcome {
        analyses: vec![None; images.len()],
        images,
        identity: None,
        afs: None,
        strategy: None,

        asem_frames: Vec::new(),
    }))
}

/// The identity and the frames with CharaConsist (and `other` on the same hooks); without
/// CharaConsist, the frames as one batch with `other`.
#[allow(clippy::too_many_arguments)]
fn chara_story(
    model: &mut LoadedModel,
    story: &StoryContext,
    all: &[FrameJob],
    frames: &[FrameInput],
    params: &StoryParams,
    methods: &MethodSettings,
    regenerate: bool,
    cancel: &AtomicBool,
    other: &mut impl Control,
    progress: &mut Progress<'_>,
) -> anyhow::Result<Option<Outcome>> {
    if !methods.characonsist_enabled {
        return plain_batch(model, frames, params, cancel, other, progress);
    }
    let settings = &methods.characonsist;
    let id_segments = identity_segments(story, all);
    let refs: Vec<&str> = id_segments.iter().map(String::as_str).collect();
    let id_conditioning = model.encoder.encode(&refs)?;
    let identity = StorySample {
        spans: plain_spans(&id_conditioning),
        spec: SampleSpec {
            conditioning: id_conditioning,
            seed: story.identity_seed,
        },
        scene: all.first().map_or(0, |f| f.scene),
    };
    let samples: Vec<StorySample> = frames
        .iter()
        .map(|f| StorySample {
            spec: SampleSpec {
                conditioning: f.conditioning.clone(),
                seed: f.job.seed,
            },
            spans: f.spans.clone(),
            scene: f.job.scene,
        })
        .collect();
    let cfg = model.pipeline.transformer.config().clone();
    let compute = model.pipeline.transformer.dtype();
    let scaled = settings.scaled_to(params.steps, cfg.depth_single_blocks);
    // The description names the weights (a FLUX set's transformer file), so a bank recorded
    // with other weights of the same family is never reused.
    let fingerprint = BankFingerprint::identity(
        &format!("{} ({})", model.name, model.description),
        &scaled,
        &identity.spec,
        params.width,
        params.height,
        params.steps,
        params.guidance,
    )?;
    let (_, _, rows, cols) = latent_geometry(
        params.width,
        params.height,
        model.pipeline.codec.downscale(),
    );
    let shape = StoryShape {
        config: &cfg,
        text_tokens: identity.spec.conditioning.txt.dim(1)?,
        image_tokens: rows * cols,
        frames: samples.len(),
        steps: params.steps,
    };
    let budget = methods.bank_budget_mib.saturating_mul(1024 * 1024);
    // Half precision halves a stored bank; f16 on the CPU, bf16 on GPUs.
    let half = if model.pipeline.device().is_cpu() {
        DType::F16
    } else {
        DType::BF16
    };

    // Regenerating single frames reuses a stored identity (in memory, or in the project's
    // cache folder) when one was recorded for exactly this identity. In "mixed scenes" a
    // later frame also needs its scene's source, so those render afresh.
    let mixed = settings.background == characonsist::BackgroundMode::MixedScenes;
    let cached = if regenerate && !mixed {
        match model
            .identity_bank
            .take()
            .filter(|c| c.fingerprint == fingerprint)
        {
            Some(c) => Some(c),
            None => load_cached_identity(story, &fingerprint, model.pipeline.device()),
        }
    } else {
        None
    };
    if let Some(cached) = cached {
        progress.sequential = Some(0);
        let spans: Vec<PromptSpans> = std::iter::once(identity.spans.clone())
            .chain(samples.iter().map(|s| s.spans.clone()))
            .collect();
        let mut images = Vec::new();
        let mut analyses = Vec::new();
        for (i, frame) in samples.iter().enumerate() {
            let out = render_frame_stored(
                &model.pipeline,
                &cached.stored,
                frame,
                i,
                params,
                settings,
                &spans,
                cancel,
                &mut *other,
                &mut |pass, r| {
                    progress.step(
                        Some(pass),
                        r,
                        Some(FrameRows {
                            pipeline: &model.pipeline,
                            first_frame_row: 0,
                        }),
                    );
                    Ok(())
                },
            );
            let out = match out {
                Ok(o) => o,
                Err(e) if e.is_cancelled() => {
                    model.identity_bank = Some(cached);
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            };
            images.push(
                model
                    .pipeline
                    .decode(&out.tokens, params.width, params.height)?
                    .remove(0),
            );
            analyses.push(Some(out.analysis));
        }
        let identity = identity_report(&cached.image, cached.stored.mask.clone());
        let dtype = cached.stored.bank.storage_dtype();
        model.identity_bank = Some(cached);
        return Ok(Some(Outcome {
            images,
            analyses,
            identity: Some(identity),
            afs: None,
            strategy: Some(BankStrategy::Stored { dtype }),

            asem_frames: Vec::new(),
        }));
    }

    let strategy = if regenerate {
        // Record the identity so the next regeneration reuses it; in the compute dtype when
        // that fits the budget, so the frame equals its co-batched render.
        let full = characonsist::estimate_stored_bank(&shape, settings, compute).total(0);
        BankStrategy::Stored {
            dtype: if full <= budget { compute } else { half },
        }
    } else {
        BankStrategy::auto(&shape, compute, budget, half)
    };
    if matches!(strategy, BankStrategy::Stored { .. }) {
        progress.sequential = Some(0);
    }
    let result = render_story(
        &model.pipeline,
        &identity,
        &samples,
        params,
        settings,
        strategy,
        cancel,
        other,
        |pass, r| {
            // Co-batched, row 0 is the identity.
            let first_frame_row = match strategy {
                BankStrategy::CoBatched => 1,
                BankStrategy::Stored { .. } => 0,
            };
            progress.step(
                Some(pass),
                r,
                Some(FrameRows {
                    pipeline: &model.pipeline,
                    first_frame_row,
                }),
            );
            Ok(())
        },
    );
    let out = match result {
        Ok(o) => o,
        Err(e) if e.is_cancelled() => return Ok(None),
        Err(PipelineError::Input(message)) => anyhow::bail!(message),
        Err(e) => return Err(e.into()),
    };
    let id_image = model
        .pipeline
        .decode(&out.identity, params.width, params.height)?
        .remove(0);
    let id_mask = out
        .stored
        .as_ref()
        .and_then(|s| s.mask.clone())
        .or_else(|| out.analyses.first().map(|a| a.identity_mask.clone()));
    let mut images = Vec::new();
    for t in &out.frames {
        images.push(
            model
                .pipeline
                .decode(t, params.width, params.height)?
                .remove(0),
        );
    }
    if let Some(stored) = out.stored.filter(|_| !mixed) {
        let cached = CachedIdentity {
            fingerprint,
            stored,
            image: id_image.clone(),
        };
        save_cached_identity(story, &cached);
        model.identity_bank = Some(cached);
    }
    Ok(Some(Outcome {
        images,
        analyses: out.analyses.into_iter().map(Some).collect(),
        identity: Some(identity_report(&id_image, id_mask)),
        afs: None,
        strategy: Some(strategy),

        asem_frames: Vec::new(),
    }))
}

/// The identity image with its own mask (as frame and identity mask, no matches).
fn identity_report(
    image: &RgbImage,
    mask: Option<characonsist::TokenMask>,
) -> (RgbImage, FrameAnalysis) {
    let analysis = mask.map(|m| characonsist::FrameAnalysis {
        frame_mask: m.clone(),
        identity_mask: m,
        matches: Vec::new(),
        extraction_step: 0,
    });
    (
        image.clone(),
        FrameAnalysis {
            characonsist: analysis,
            afs: None,
        },
    )
}

/// Where a story's stored identity goes: `<cache>/identity-<hash of the fingerprint>.bank`.
fn bank_path(story: &StoryContext, fingerprint: &BankFingerprint) -> Option<std::path::PathBuf> {
    use std::hash::{Hash, Hasher};
    let dir = story.cache_dir.as_ref()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{fingerprint:?}").hash(&mut h);
    Some(dir.join(format!("identity-{:016x}.bank", h.finish())))
}

/// Keeps the stored identity under the project's cache folder (best effort: the cache is
/// re-creatable, so a failure is logged, not reported).
fn save_cached_identity(story: &StoryContext, cached: &CachedIdentity) {
    let Some(path) = bank_path(story, &cached.fingerprint) else {
        return;
    };
    if let Some(dir) = path.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        tracing::warn!(path = %dir.display(), error = %e, "could not create the cache folder");
        return;
    }
    if let Err(e) = cached
        .stored
        .save(&path, &cached.fingerprint, Some(&cached.image))
    {
        tracing::warn!(path = %path.display(), error = %e, "could not cache the identity bank");
    }
}

fn load_cached_identity(
    story: &StoryContext,
    fingerprint: &BankFingerprint,
    device: &candle_core::Device,
) -> Option<CachedIdentity> {
    let path = bank_path(story, fingerprint)?;
    if !path.exists() {
        return None;
    }
    match StoredIdentity::load(&path, fingerprint, device) {
        Ok((stored, Some(image))) => Some(CachedIdentity {
            fingerprint: fingerprint.clone(),
            stored,
            image,
        }),
        Ok((_, None)) => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring the cached identity bank");
            None
        }
    }
}
