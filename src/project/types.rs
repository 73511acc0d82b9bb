//! The document types stored in `project.ron`. Plain data; the frame order is the `Vec` order.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::consistency::MethodSettings;

/// The format this Storyloom writes (and the newest it reads).
pub const CURRENT_FORMAT_VERSION: u32 = 1;

/// A storyboard: one character (identity) across a row of frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Project {
    /// Always [`CURRENT_FORMAT_VERSION`] after loading (older files are migrated).
    pub format_version: u32,
    pub title: String,
    pub identity: Identity,
    /// Style line appended to the character part of every prompt.
    pub style: String,
    pub frames: Vec<Frame>,
    pub generation: GenerationSettings,
    pub methods: MethodSettings,
    pub model: ModelChoice,
    /// Named scenes; frames refer to them by `Scene::id` (mixed-scenes background mode).
    pub scenes: Vec<Scene>,
    /// Next id handed out by [`Project::fresh_id`]; ids are never reused.
    pub next_id: u64,
}

impl Default for Project {
    fn default() -> Self {
        Self {
            format_version: CURRENT_FORMAT_VERSION,
            title: "Untitled storyboard".into(),
            identity: Identity::default(),
            style: String::new(),
            frames: Vec::new(),
            generation: GenerationSettings::default(),
            methods: MethodSettings::default(),
            model: ModelChoice::default(),
            scenes: Vec::new(),
            next_id: 1,
        }
    }
}

impl Project {
    /// A fresh id for a frame or a version, greater than every id in the project.
    pub fn fresh_id(&mut self) -> u64 {
        let used = self.frames.iter().map(|f| f.id).max().unwrap_or(0);
        let id = self.next_id.max(used + 1);
        self.next_id = id + 1;
        id
    }

    pub fn frame(&self, frame_id: u64) -> Option<&Frame> {
        self.frames.iter().find(|f| f.id == frame_id)
    }

    pub fn frame_mut(&mut self, frame_id: u64) -> Option<&mut Frame> {
        self.frames.iter_mut().find(|f| f.id == frame_id)
    }

    /// Every version (identity first, then frames in order) whose image file is missing.
    pub fn missing_versions(&self) -> Vec<&FrameVersion> {
        self.identity
            .versions
            .iter()
            .chain(self.frames.iter().flat_map(|f| f.versions.iter()))
            .filter(|v| v.missing)
            .collect()
    }
}

/// The character, described once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Identity {
    /// Character description (identity prompt).
    pub prompt: String,
    pub seed: u64,
    /// Generated identity images, oldest first.
    pub versions: Vec<FrameVersion>,
    pub active_version: Option<usize>,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            seed: 1,
            versions: Vec::new(),
            active_version: None,
        }
    }
}

/// A named scene of the story.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    pub id: u32,
    pub name: String,
}

/// One shot of the storyboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Frame {
    /// Stable id, unique in the project, never reused.
    pub id: u64,
    /// Environment / background part of the prompt.
    pub background: String,
    /// What the character does.
    pub action: String,
    pub dialogue: String,
    pub notes: String,
    /// Screen time in the animatic.
    pub duration_ms: u32,
    pub seed: u64,
    /// A locked seed is kept when new seeds are drawn for many frames.
    pub seed_locked: bool,
    pub scene: u32,
    /// Generated images of this frame, oldest first.
    pub versions: Vec<FrameVersion>,
    /// Index into `versions` of the version shown and exported.
    pub active_version: Option<usize>,
}

impl Default for Frame {
    fn default() -> Self {
        Frame::new(0, 0)
    }
}

impl Frame {
    /// A new empty frame with the default screen time of two seconds.
    pub fn new(id: u64, seed: u64) -> Self {
        Self {
            id,
            background: String::new(),
            action: String::new(),
            dialogue: String::new(),
            notes: String::new(),
            duration_ms: 2000,
            seed,
            seed_locked: false,
            scene: 0,
            versions: Vec::new(),
            active_version: None,
        }
    }

    pub fn active(&self) -> Option<&FrameVersion> {
        self.active_version.and_then(|i| self.versions.get(i))
    }
}

/// One generated image with everything that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FrameVersion {
    /// PNG path relative to the project folder, with `/` separators (e.g. `frames/0003-02.png`).
    pub file: String,
    /// Seconds since the Unix epoch (UTC).
    pub created: u64,
    pub seed: u64,
    pub steps: usize,
    pub guidance: f32,
    pub width: u32,
    pub height: u32,
    /// Model name as shown to the user (e.g. "FLUX.1-dev", "built-in").
    pub model: String,
    /// Methods that actually ran, e.g. "CharaConsist", "ASemConsist (AFS on)".
    pub methods: Vec<String>,
    /// Foreground mask file (see `project::analysis`), relative to the project folder.
    pub mask_file: Option<String>,
    /// Point-match file (see `project::analysis`), relative to the project folder.
    pub matches_file: Option<String>,
    /// Anything else worth keeping (e.g. "seconds" of generation time).
    pub metadata: BTreeMap<String, String>,
    /// Set on load when `file` is not in the project folder; never saved.
    #[serde(skip)]
    pub missing: bool,
}

impl Default for FrameVersion {
    fn default() -> Self {
        Self {
            file: String::new(),
            created: 0,
            seed: 0,
            steps: 0,
            guidance: 0.0,
            width: 0,
            height: 0,
            model: String::new(),
            methods: Vec::new(),
            mask_file: None,
            matches_file: None,
            metadata: BTreeMap::new(),
            missing: false,
        }
    }
}

/// Frame shapes offered to the artist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum AspectPreset {
    #[default]
    Wide16x9,
    Scope239,
    Square,
    Tall9x16,
    Classic4x3,
    /// Width and height typed in by hand.
    Custom,
}

impl AspectPreset {
    pub const PRESETS: [AspectPreset; 5] = [
        AspectPreset::Wide16x9,
        AspectPreset::Scope239,
        AspectPreset::Square,
        AspectPreset::Tall9x16,
        AspectPreset::Classic4x3,
    ];

    /// Width over height; `None` for [`AspectPreset::Custom`].
    pub fn ratio(self) -> Option<f64> {
        match self {
            AspectPreset::Wide16x9 => Some(16.0 / 9.0),
            AspectPreset::Scope239 => Some(2.39),
            AspectPreset::Square => Some(1.0),
            AspectPreset::Tall9x16 => Some(9.0 / 16.0),
            AspectPreset::Classic4x3 => Some(4.0 / 3.0),
            AspectPreset::Custom => None,
        }
    }

    /// The preset a size matches within 3 % (sizes are snapped to multiples of 16), else
    /// `Custom`.
    pub fn of_size(width: u32, height: u32) -> AspectPreset {
        let r = width as f64 / height.max(1) as f64;
        Self::PRESETS
            .into_iter()
            .find(|p| p.ratio().is_some_and(|q| (q - r).abs() / q < 0.03))
            .unwrap_or(AspectPreset::Custom)
    }
}

/// Settings shared by every frame of a generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationSettings {
    pub steps: usize,
    pub guidance: f32,
    pub width: u32,
    pub height: u32,
    pub aspect: AspectPreset,
}

impl Default for GenerationSettings {
    fn default() -> Self {
        Self {
            steps: 20,
            guidance: 3.5,
            width: 512,
            height: 288,
            aspect: AspectPreset::Wide16x9,
        }
    }
}

/// Which model renders the project. Paths of real weights are the user's own files.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub enum ModelChoice {
    /// The small model shipped with Storyloom.
    #[default]
    Builtin,
    /// Deterministic random tiny model (mechanics only).
    TinyRandom { seed: u64 },
    /// A FLUX.1 set chosen by the user.
    Flux {
        transformer: PathBuf,
        vae: PathBuf,
        t5: PathBuf,
        t5_tokenizer: PathBuf,
        clip: Option<PathBuf>,
        clip_tokenizer: Option<PathBuf>,
    },
}

impl ModelChoice {
    /// Short name for captions and metadata.
    pub fn display_name(&self) -> String {
        match self {
            ModelChoice::Builtin => "built-in".into(),
            ModelChoice::TinyRandom { seed } => format!("tiny-random (seed {seed})"),
            ModelChoice::Flux { transformer, .. } => transformer
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "FLUX.1".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_never_repeat_even_after_a_hand_edited_file() {
        let mut p = Project::default();
        p.frames.push(Frame::new(7, 1));
        p.next_id = 3; // stale counter, e.g. edited by hand
        assert_eq!(p.fresh_id(), 8);
        assert_eq!(p.fresh_id(), 9);
    }

    #[test]
    fn aspect_of_common_sizes() {
        assert_eq!(AspectPreset::of_size(512, 288), AspectPreset::Wide16x9);
        assert_eq!(AspectPreset::of_size(1024, 1024), AspectPreset::Square);
        assert_eq!(AspectPreset::of_size(640, 480), AspectPreset::Classic4x3);
        assert_eq!(AspectPreset::of_size(500, 100), AspectPreset::Custom);
    }

    #[test]
    fn active_version_is_bounds_checked() {
        let mut f = Frame::new(1, 1);
        f.active_version = Some(2);
        assert!(f.active().is_none());
        f.versions.push(FrameVersion::default());
        f.active_version = Some(0);
        assert!(f.active().is_some());
    }
}
