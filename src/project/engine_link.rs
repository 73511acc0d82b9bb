//! Between the document and the engine: jobs from a project, and finished frames stored
//! back into the project folder (PNG with settings, mask and match files, a new version).

use std::path::Path;

use image::RgbImage;

use super::analysis::{TokenGridMask, TokenMatch, write_mask, write_matches};
use super::error::ProjectError;
use super::png_meta::{ImageSettings, write_png_with_settings};
use super::store::FRAMES_DIR;
use super::types::{FrameVersion, ModelChoice, Project};
use crate::consistency::FrameAnalysis;
use crate::engine::{
    FluxFiles, FrameJob, FrameResult, GenerationMetadata, ModelSpec, RenderSettings, StoryContext,
};

impl ModelChoice {
    /// What the engine loads for this choice.
    pub fn to_model_spec(&self) -> ModelSpec {
        match self {
            ModelChoice::Builtin => ModelSpec::Builtin,
            ModelChoice::TinyRandom { seed } => ModelSpec::TinyRandom { seed: *seed },
            ModelChoice::Flux {
                transformer,
                vae,
                t5,
                t5_tokenizer,
                clip,
                clip_tokenizer,
            } => ModelSpec::Flux(FluxFiles {
                transformer: transformer.clone(),
                vae: vae.clone(),
                t5: t5.clone(),
                t5_tokenizer: t5_tokenizer.clone(),
                clip: clip.clone(),
                clip_tokenizer: clip_tokenizer.clone(),
            }),
        }
    }
}

impl Project {
    /// The story part every frame shares.
    pub fn story_context(&self) -> StoryContext {
        StoryContext {
            identity: self.identity.prompt.clone(),
            style: self.style.clone(),
            identity_seed: self.identity.seed,
            frames: self.frame_jobs(None),
            cache_dir: None,
        }
    }

    /// Settings for one generation of this project.
    pub fn render_settings(&self, previews: bool) -> RenderSettings {
        RenderSettings {
            width: self.generation.width,
            height: self.generation.height,
            steps: self.generation.steps,
            guidance: self.generation.guidance,
            previews,
            methods: self.methods.clone(),
        }
    }

    /// Jobs for the frames at the given 1-based positions (all frames for `None`), in story
    /// order.
    pub fn frame_jobs(&self, positions: Option<&[usize]>) -> Vec<FrameJob> {
        let job = |f: &super::types::Frame| FrameJob {
            frame_id: f.id,
            background: f.background.clone(),
            action: f.action.clone(),
            seed: f.seed,
            scene: f.scene,
        };
        match positions {
            None => self.frames.iter().map(job).collect(),
            Some(list) => list
                .iter()
                .filter_map(|&n| n.checked_sub(1).and_then(|i| self.frames.get(i)))
                .map(job)
                .collect(),
        }
    }
}

/// Parses a frame selection such as `1,3-5` into sorted, distinct 1-based positions, each at
/// most `count`.
pub fn parse_frame_selection(text: &str, count: usize) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{s}` is not a frame number"))
                .and_then(|n| {
                    if (1..=count).contains(&n) {
                        Ok(n)
                    } else {
                        Err(format!(
                            "frame {n} does not exist (the project has {count})"
                        ))
                    }
                })
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if a > b {
                    return Err(format!("range `{part}` runs backwards"));
                }
                out.extend(a..=b);
            }
            None => out.push(number(part)?),
        }
    }
    if out.is_empty() {
        return Err("no frames selected".into());
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

impl ImageSettings {
    /// The settings recorded for an image the engine made.
    pub fn from_generation(
        meta: &GenerationMetadata,
        story: &StoryContext,
        frame: Option<&FrameJob>,
    ) -> Self {
        Self {
            prompt: meta.prompt.clone(),
            identity: story.identity.clone(),
            style: story.style.clone(),
            background: frame.map(|f| f.background.clone()).unwrap_or_default(),
            action: frame.map(|f| f.action.clone()).unwrap_or_default(),
            seed: meta.seed,
            model: meta.model.clone(),
            steps: meta.steps,
            guidance: meta.guidance,
            width: meta.width,
            height: meta.height,
            methods: meta.methods.clone(),
            methods_used: meta.methods_used.clone(),
        }
    }
}

/// A free file stem in `frames/`: `<frame id>-<version>` (identity images use `identity`).
fn free_stem(dir: &Path, owner: &str, first_version: usize) -> String {
    (first_version..)
        .map(|v| format!("{owner}-{v:02}"))
        .find(|stem| !dir.join(FRAMES_DIR).join(format!("{stem}.png")).exists())
        .expect("an unbounded range always has a free name")
}

/// Writes an image (with its settings in the PNG), its mask and matches into `frames/`, and
/// returns the version describing them. `created` is seconds since the Unix epoch.
#[allow(clippy::too_many_arguments)]
pub fn store_image(
    dir: &Path,
    owner: &str,
    next_version: usize,
    image: &RgbImage,
    settings: &ImageSettings,
    mask: Option<&TokenGridMask>,
    matches: &[TokenMatch],
    created: u64,
) -> Result<FrameVersion, ProjectError> {
    let frames = dir.join(FRAMES_DIR);
    std::fs::create_dir_all(&frames).map_err(|e| ProjectError::io(&frames, "created", e))?;
    let stem = free_stem(dir, owner, next_version);
    let file = format!("{FRAMES_DIR}/{stem}.png");
    write_png_with_settings(&dir.join(&file), image, settings)?;
    let mask_file = match mask {
        Some(m) => {
            let f = format!("{FRAMES_DIR}/{stem}.mask.png");
            write_mask(&dir.join(&f), m)?;
            Some(f)
        }
        None => None,
    };
    let matches_file = if matches.is_empty() {
        None
    } else {
        let f = format!("{FRAMES_DIR}/{stem}.matches.csv");
        write_matches(&dir.join(&f), matches)?;
        Some(f)
    };
    Ok(FrameVersion {
        file,
        created,
        seed: settings.seed,
        steps: settings.steps,
        guidance: settings.guidance,
        width: image.width(),
        height: image.height(),
        model: settings.model.clone(),
        methods: settings.methods_used.clone(),
        mask_file,
        matches_file,
        metadata: Default::default(),
        missing: false,
    })
}

/// The mask and match files of a frame's analysis (CharaConsist's foreground mask at the
/// extraction step and the kept point matches), when the method ran.
pub fn analysis_files(analysis: &FrameAnalysis) -> (Option<TokenGridMask>, Vec<TokenMatch>) {
    let Some(chara) = &analysis.characonsist else {
        return (None, Vec::new());
    };
    let m = &chara.frame_mask;
    let mask = (m.rows > 0 && m.cols > 0 && m.fg.len() == m.rows * m.cols)
        .then(|| TokenGridMask::from_flags(m.rows as u32, m.cols as u32, &m.fg));
    let matches = chara
        .matches
        .iter()
        .map(|x| TokenMatch {
            frame_token: x.frame_token,
            identity_token: x.identity_token,
            similarity: x.similarity,
        })
        .collect();
    (mask, matches)
}

/// Keys of `FrameVersion::metadata` that keep what the methods decided (the masks and
/// matches have their own files).
pub const AFS_KEY: &str = "afs";
pub const MASK_STEP_KEY: &str = "mask_step";

/// Keeps what the methods decided in a version's record: ASemConsist's sharing decision and
/// CharaConsist's mask step. The studio and `storyloom render` store results through here.
pub fn record_decisions(record: &mut FrameVersion, analysis: &FrameAnalysis) {
    if let Some(afs) = &analysis.afs
        && let Ok(text) = ron::to_string(afs)
    {
        record.metadata.insert(AFS_KEY.into(), text);
    }
    if let Some(c) = &analysis.characonsist {
        record
            .metadata
            .insert(MASK_STEP_KEY.into(), c.extraction_step.to_string());
    }
}

/// Stores a story's identity image (with its mask) as the identity's new active version.
pub fn store_identity_image(
    dir: &Path,
    project: &mut Project,
    image: &RgbImage,
    analysis: &FrameAnalysis,
    metadata: &GenerationMetadata,
    created: u64,
) -> Result<usize, ProjectError> {
    let story = project.story_context();
    let settings = ImageSettings::from_generation(metadata, &story, None);
    let (mask, _) = analysis_files(analysis);
    let next = project.identity.versions.len() + 1;
    let mut version = store_image(
        dir,
        "identity",
        next,
        image,
        &settings,
        mask.as_ref(),
        &[],
        created,
    )?;
    record_decisions(&mut version, analysis);
    project.identity.versions.push(version);
    project.identity.active_version = Some(project.identity.versions.len() - 1);
    Ok(project.identity.versions.len() - 1)
}

/// Stores a finished frame in the project folder and adds it to its frame as the new active
/// version. Returns `Ok(None)` when the frame was deleted meanwhile (files are not written).
/// The project itself is not saved: the caller marks it dirty (autosave follows).
pub fn store_frame_result(
    dir: &Path,
    project: &mut Project,
    result: &FrameResult,
    mask: Option<&TokenGridMask>,
    matches: &[TokenMatch],
    created: u64,
) -> Result<Option<usize>, ProjectError> {
    let story = project.story_context();
    let Some(frame) = project.frame(result.frame_id) else {
        return Ok(None);
    };
    let job = FrameJob {
        frame_id: frame.id,
        background: frame.background.clone(),
        action: frame.action.clone(),
        seed: result.metadata.seed,
        scene: frame.scene,
    };
    let settings = ImageSettings::from_generation(&result.metadata, &story, Some(&job));
    let owner = format!("{:05}", frame.id);
    let next = frame.versions.len() + 1;
    let mut version = store_image(
        dir,
        &owner,
        next,
        &result.image,
        &settings,
        mask,
        matches,
        created,
    )?;
    version
        .metadata
        .insert("seconds".into(), format!("{:.1}", result.metadata.seconds));
    record_decisions(&mut version, &result.analysis);
    let frame = project.frame_mut(result.frame_id).expect("looked up above");
    frame.versions.push(version);
    frame.active_version = Some(frame.versions.len() - 1);
    Ok(frame.active_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_selection_ranges() {
        assert_eq!(parse_frame_selection("1,3-5", 6).unwrap(), vec![1, 3, 4, 5]);
        assert_eq!(parse_frame_selection(" 2 , 2,1 ", 3).unwrap(), vec![1, 2]);
        assert!(
            parse_frame_selection("7", 6)
                .unwrap_err()
                .contains("does not exist")
        );
        assert!(
            parse_frame_selection("5-3", 6)
                .unwrap_err()
                .contains("backwards")
        );
        assert!(parse_frame_selection("x", 6).is_err());
        assert!(parse_frame_selection("", 6).is_err());
    }

    #[test]
    fn jobs_follow_story_order_and_positions() {
        let mut p = Project::default();
        for id in [10, 20, 30] {
            p.frames.push(super::super::types::Frame::new(id, id + 1));
        }
        let ids: Vec<u64> = p
            .frame_jobs(Some(&[3, 1, 9]))
            .iter()
            .map(|j| j.frame_id)
            .collect();
        assert_eq!(ids, vec![30, 10]);
        assert_eq!(p.frame_jobs(None).len(), 3);
        assert_eq!(p.frame_jobs(None)[1].seed, 21);
    }

    #[test]
    fn finished_frames_become_new_active_versions_with_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Project::default();
        p.identity.prompt = "a fox".into();
        let mut f = super::super::types::Frame::new(4, 9);
        f.action = "runs".into();
        p.frames.push(f);
        let result = FrameResult {
            frame_id: 4,
            image: RgbImage::from_pixel(32, 16, image::Rgb([1, 2, 3])),
            analysis: Default::default(),
            metadata: GenerationMetadata {
                prompt: "a field, a fox, runs".into(),
                segments: vec!["a field".into(), "a fox".into(), "runs".into()],
                seed: 9,
                model: "built-in".into(),
                steps: 4,
                guidance: 3.5,
                width: 32,
                height: 16,
                methods: Default::default(),
                methods_used: vec!["CharaConsist".into()],
                seconds: 1.25,
            },
        };
        let mask = TokenGridMask::from_flags(1, 2, &[true, false]);
        let matches = [TokenMatch {
            frame_token: 0,
            identity_token: 1,
            similarity: 0.8,
        }];
        for expected in 0..2 {
            let index =
                store_frame_result(dir.path(), &mut p, &result, Some(&mask), &matches, 7).unwrap();
            assert_eq!(index, Some(expected));
        }
        let v = &p.frames[0].versions[1];
        assert_eq!(v.file, "frames/00004-02.png");
        assert_eq!(v.mask_file.as_deref(), Some("frames/00004-02.mask.png"));
        assert_eq!(v.metadata["seconds"], "1.2");
        assert!(
            !v.metadata.contains_key(AFS_KEY),
            "no method decided anything"
        );
        let restored =
            super::super::png_meta::import_png_settings(&dir.path().join(&v.file)).unwrap();
        assert_eq!(restored.action, "runs");
        assert_eq!(restored.identity, "a fox");
        assert_eq!(restored.seed, 9);
        // What the methods decided is kept with the version, for the studio and the CLI alike.
        let decided = FrameResult {
            analysis: FrameAnalysis {
                afs: Some(crate::consistency::asemconsist::decide(
                    crate::consistency::asemconsist::AfsMode::Auto,
                    Some(0.5),
                    0.25,
                )),
                characonsist: Some(crate::consistency::characonsist::FrameAnalysis {
                    extraction_step: 4,
                    ..Default::default()
                }),
            },
            ..result.clone()
        };
        let index = store_frame_result(dir.path(), &mut p, &decided, None, &[], 7)
            .unwrap()
            .unwrap();
        let v = &p.frames[0].versions[index];
        let afs: crate::consistency::asemconsist::AfsDecision =
            ron::from_str(&v.metadata[AFS_KEY]).unwrap();
        assert!(afs.use_sharing && afs.radius == Some(0.5));
        assert_eq!(v.metadata[MASK_STEP_KEY], "4");
        let unknown = FrameResult {
            frame_id: 99,
            ..result
        };
        assert_eq!(
            store_frame_result(dir.path(), &mut p, &unknown, None, &[], 7).unwrap(),
            None
        );
    }
}
