//! Reading every format version and bringing it up to [`CURRENT_FORMAT_VERSION`].
//!
//! Format 0 (the first prototype) kept one prompt string and at most one image per frame:
//!
//! ```ron
//! (format_version: 0, title: "..", character: "..", seed: 7, steps: 20, guidance: 3.5,
//!  width: 512, height: 288,
//!  frames: [(prompt: "..", image: Some("frames/1.png"), seed: 3, duration: 1.5)])
//! ```

use std::path::Path;

use serde::Deserialize;

use super::error::ProjectError;
use super::types::{
    AspectPreset, CURRENT_FORMAT_VERSION, Frame, FrameVersion, GenerationSettings, Identity,
    ModelChoice, Project,
};

/// Only the version field; everything else is skipped.
#[derive(Deserialize)]
#[serde(rename = "Project")]
struct VersionProbe {
    #[serde(default)]
    format_version: u32,
}

/// Parses a project file of any supported version. `path` is only used in error messages.
pub fn parse_project(path: &Path, bytes: &[u8]) -> Result<Project, ProjectError> {
    let options = ron::Options::default();
    let probe: VersionProbe = options
        .from_bytes(bytes)
        .map_err(|e| ProjectError::parse(path, &e))?;
    match probe.format_version {
        0 => {
            let old: ProjectV0 = options
                .from_bytes(bytes)
                .map_err(|e| ProjectError::parse(path, &e))?;
            Ok(old.migrate())
        }
        CURRENT_FORMAT_VERSION => {
            let mut project: Project = options
                .from_bytes(bytes)
                .map_err(|e| ProjectError::parse(path, &e))?;
            project.format_version = CURRENT_FORMAT_VERSION;
            Ok(project)
        }
        found => Err(ProjectError::NewerFormat {
            path: path.to_path_buf(),
            found,
            supported: CURRENT_FORMAT_VERSION,
        }),
    }
}

/// Format 0 as it was written.
#[derive(Debug, Deserialize)]
#[serde(rename = "Project")]
struct ProjectV0 {
    #[serde(default)]
    title: String,
    /// The identity prompt.
    character: String,
    seed: u64,
    #[serde(default = "default_v0_steps")]
    steps: usize,
    #[serde(default = "default_v0_guidance")]
    guidance: f32,
    #[serde(default = "default_v0_width")]
    width: u32,
    #[serde(default = "default_v0_height")]
    height: u32,
    frames: Vec<FrameV0>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "Frame")]
struct FrameV0 {
    prompt: String,
    #[serde(default)]
    image: Option<String>,
    seed: u64,
    /// Seconds; 0 meant "default".
    #[serde(default)]
    duration: f32,
}

// Format 0 always used these when a field was absent.
fn default_v0_steps() -> usize {
    20
}
fn default_v0_guidance() -> f32 {
    3.5
}
fn default_v0_width() -> u32 {
    512
}
fn default_v0_height() -> u32 {
    288
}

impl ProjectV0 {
    fn migrate(self) -> Project {
        let generation = GenerationSettings {
            steps: self.steps,
            guidance: self.guidance,
            width: self.width,
            height: self.height,
            aspect: AspectPreset::of_size(self.width, self.height),
        };
        let frames: Vec<Frame> = self
            .frames
            .into_iter()
            .enumerate()
            .map(|(i, old)| {
                let mut frame = Frame::new(i as u64 + 1, old.seed);
                // Format 0 had no background/action split: the whole prompt was the action.
                frame.action = old.prompt;
                if old.duration.is_finite() && old.duration > 0.0 {
                    frame.duration_ms = (old.duration * 1000.0).round().min(u32::MAX as f32) as u32;
                }
                if let Some(file) = old.image {
                    frame.versions.push(FrameVersion {
                        file,
                        seed: old.seed,
                        steps: generation.steps,
                        guidance: generation.guidance,
                        width: generation.width,
                        height: generation.height,
                        model: "built-in".into(),
                        ..FrameVersion::default()
                    });
                    frame.active_version = Some(0);
                }
                frame
            })
            .collect();
        let next_id = frames.len() as u64 + 1;
        Project {
            format_version: CURRENT_FORMAT_VERSION,
            title: if self.title.is_empty() {
                "Untitled storyboard".into()
            } else {
                self.title
            },
            identity: Identity {
                prompt: self.character,
                seed: self.seed,
                versions: Vec::new(),
                active_version: None,
            },
            frames,
            generation,
            model: ModelChoice::Builtin,
            next_id,
            ..Project::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Project, ProjectError> {
        parse_project(Path::new("p/project.ron"), text.as_bytes())
    }

    #[test]
    fn v0_frames_become_frames_with_one_version() {
        let p = parse(
            r#"(format_version: 0, title: "Rain", character: "a fox in a coat", seed: 9,
                frames: [(prompt: "runs", image: Some("frames/1.png"), seed: 4, duration: 1.5),
                         (prompt: "sits", image: None, seed: 5)])"#,
        )
        .unwrap();
        assert_eq!(p.format_version, CURRENT_FORMAT_VERSION);
        assert_eq!(p.identity.prompt, "a fox in a coat");
        assert_eq!(p.identity.seed, 9);
        assert_eq!(p.frames.len(), 2);
        assert_eq!(p.frames[0].id, 1);
        assert_eq!(p.frames[0].duration_ms, 1500);
        assert_eq!(p.frames[0].versions[0].file, "frames/1.png");
        assert_eq!(p.frames[0].active_version, Some(0));
        assert_eq!(p.frames[1].duration_ms, 2000);
        assert!(p.frames[1].versions.is_empty());
        assert_eq!(p.next_id, 3);
    }

    #[test]
    fn newer_format_is_refused_by_number() {
        let e = parse("(format_version: 7, title: \"x\", whatever: [1, 2])").unwrap_err();
        assert!(matches!(
            e,
            ProjectError::NewerFormat {
                found: 7,
                supported: 1,
                ..
            }
        ));
    }

    #[test]
    fn parse_errors_carry_line_and_column() {
        let e = parse("(\n  format_version: 1,\n  title: \"x\" oops\n)").unwrap_err();
        match e {
            ProjectError::Parse { line, column, .. } => {
                assert_eq!(line, 3);
                assert!(column > 1, "column {column}");
            }
            other => panic!("unexpected {other}"),
        }
    }
}
