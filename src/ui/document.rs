//! The storyboard the studio edits: the story (identity and style), the frames with their
//! versions, and the generation settings. Plain data with small edit methods; images are
//! shared (`Arc`) so snapshots for undo are cheap.

use std::sync::Arc;

use image::RgbImage;

use crate::consistency::{FrameAnalysis, MethodSettings};
use crate::engine::{FrameJob, RenderSettings, StoryContext};
use crate::project::{
    AspectPreset as ProjectAspect, FrameVersion, Identity, ModelChoice, Project, Scene,
};

use super::loader::LoadedVersion;
use super::overlay::OverlayData;

/// Longest side of a timeline thumbnail, in pixels.
pub const THUMBNAIL_SIZE: u32 = 160;

/// Decoded pixels of a version, with the thumbnail for the timeline.
#[derive(Debug, Clone)]
pub struct Pixels {
    pub image: Arc<RgbImage>,
    pub thumbnail: Arc<RgbImage>,
}

impl Pixels {
    pub fn new(image: RgbImage) -> Self {
        let thumbnail = Arc::new(make_thumbnail(&image));
        Self {
            image: Arc::new(image),
            thumbnail,
        }
    }
}

/// Where a version's pixels are.
#[derive(Debug, Clone, Default)]
pub enum ImageState {
    /// In the project folder, not decoded yet (the loader thread is on it).
    #[default]
    Loading,
    Loaded(Pixels),
    /// The file is not in the project folder (or could not be decoded): the reason.
    Missing(String),
}

/// One generated image of a frame, with everything that made it.
#[derive(Debug, Clone)]
pub struct Version {
    /// Unique in the studio session; also keys the image's textures.
    pub id: u64,
    /// What the project file says about this version (files, seed, steps, methods used).
    pub record: FrameVersion,
    pub pixels: ImageState,
    pub analysis: FrameAnalysis,
    /// Masks and matches on token grids for the overlays (from the analysis).
    pub overlay: Arc<OverlayData>,
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        // Pixels never change once made: the id and the record say which image it is.
        self.id == other.id && self.record == other.record && self.analysis == other.analysis
    }
}

impl Version {
    pub fn image(&self) -> Option<&Arc<RgbImage>> {
        match &self.pixels {
            ImageState::Loaded(p) => Some(&p.image),
            _ => None,
        }
    }

    pub fn thumbnail(&self) -> Option<&Arc<RgbImage>> {
        match &self.pixels {
            ImageState::Loaded(p) => Some(&p.thumbnail),
            _ => None,
        }
    }

    /// Why there is no image to show, if there is none.
    pub fn missing_reason(&self) -> Option<&str> {
        match &self.pixels {
            ImageState::Missing(why) => Some(why),
            _ => None,
        }
    }

    /// Seconds the generation took, when recorded.
    pub fn seconds(&self) -> Option<f32> {
        self.record.metadata.get("seconds")?.parse().ok()
    }

    fn set_analysis(&mut self, analysis: FrameAnalysis) {
        self.overlay = Arc::new(OverlayData::from_analysis(&analysis));
        self.analysis = analysis;
    }
}

/// A shot of the storyboard.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Stable id (the engine echoes it).
    pub id: u64,
    /// Environment / background.
    pub background: String,
    /// What the character does.
    pub action: String,
    pub dialogue: String,
    pub notes: String,
    /// Screen time in seconds.
    pub duration: f32,
    pub seed: u64,
    /// A locked seed is kept by "new seed" on many frames.
    pub seed_locked: bool,
    pub scene: u32,
}

impl Frame {
    /// First words of the action, for the frame card.
    pub fn short_action(&self, max_chars: usize) -> String {
        let text = self.action.trim();
        if text.chars().count() <= max_chars {
            return text.to_string();
        }
        let cut: String = text.chars().take(max_chars.saturating_sub(1)).collect();
        format!("{}…", cut.trim_end())
    }
}

/// Frame shapes offered in the inspector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AspectPreset {
    Wide16x9,
    Scope239,
    Square,
    Tall9x16,
    Classic4x3,
}

impl AspectPreset {
    pub const ALL: [AspectPreset; 5] = [
        AspectPreset::Wide16x9,
        AspectPreset::Scope239,
        AspectPreset::Square,
        AspectPreset::Tall9x16,
        AspectPreset::Classic4x3,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AspectPreset::Wide16x9 => "16:9",
            AspectPreset::Scope239 => "2.39:1",
            AspectPreset::Square => "1:1",
            AspectPreset::Tall9x16 => "9:16",
            AspectPreset::Classic4x3 => "4:3",
        }
    }

    pub fn ratio(self) -> f64 {
        match self {
            AspectPreset::Wide16x9 => 16.0 / 9.0,
            AspectPreset::Scope239 => 2.39,
            AspectPreset::Square => 1.0,
            AspectPreset::Tall9x16 => 9.0 / 16.0,
            AspectPreset::Classic4x3 => 4.0 / 3.0,
        }
    }

    /// Width and height with about `pixels` pixels in all, both multiples of 16 (FLUX packs
    /// 2x2 latent cells of an 8x autoencoder).
    pub fn size(self, pixels: u32) -> (u32, u32) {
        let r = self.ratio();
        let h = (pixels as f64 / r).sqrt();
        let w = h * r;
        let snap = |x: f64| ((x / 16.0).round() as u32).max(1) * 16;
        (snap(w), snap(h))
    }

    /// The preset a size matches (within rounding), if any.
    pub fn of_size(width: u32, height: u32) -> Option<AspectPreset> {
        let r = width as f64 / height.max(1) as f64;
        Self::ALL
            .into_iter()
            .find(|p| (p.ratio() - r).abs() / p.ratio() < 0.03)
    }
}

/// Settings shared by all frames.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationSettings {
    pub width: u32,
    pub height: u32,
    pub steps: usize,
    pub guidance: f32,
    /// Live previews in the frame cards (costs time per step).
    pub previews: bool,
    pub methods: MethodSettings,
}

impl Default for GenerationSettings {
    fn default() -> Self {
        Self {
            width: 512,
            height: 288,
            steps: 20,
            guidance: 3.5,
            previews: false,
            methods: MethodSettings::default(),
        }
    }
}

/// The whole storyboard as the artist edits it (undoable). Generated images live in
/// [`Renders`]: they are results, not edits, and undo must not drop them.
#[derive(Debug, Clone, PartialEq)]
pub struct Storyboard {
    pub title: String,
    /// Character description (identity prompt).
    pub identity: String,
    /// Style line appended to the character part of every prompt.
    pub style: String,
    pub identity_seed: u64,
    pub frames: Vec<Frame>,
    pub settings: GenerationSettings,
    /// The project's aspect choice (kept as the file says until the size changes).
    pub aspect: ProjectAspect,
    /// The project's model; the studio loads it unless told otherwise.
    pub model: ModelChoice,
    pub scenes: Vec<Scene>,
    next_id: u64,
}

impl Default for Storyboard {
    fn default() -> Self {
        Self {
            title: "Untitled storyboard".into(),
            identity: String::new(),
            style: String::new(),
            identity_seed: 1,
            frames: Vec::new(),
            settings: GenerationSettings::default(),
            aspect: ProjectAspect::Wide16x9,
            model: ModelChoice::default(),
            scenes: Vec::new(),
            next_id: 1,
        }
    }
}

/// A deterministic new seed from a previous one (splitmix64), so "new seed" is reproducible.
pub fn next_seed(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % 1_000_000_000
}

impl Storyboard {
    /// A fresh id for a frame or a version.
    pub fn fresh_id(&mut self) -> u64 {
        // Never reuse an id, even when an opened file's counter is stale.
        let used = self.frames.iter().map(|f| f.id).max().unwrap_or(0);
        let id = self.next_id.max(used + 1);
        self.next_id = id + 1;
        id
    }

    pub fn index_of(&self, frame_id: u64) -> Option<usize> {
        self.frames.iter().position(|f| f.id == frame_id)
    }

    pub fn frame(&self, frame_id: u64) -> Option<&Frame> {
        self.frames.iter().find(|f| f.id == frame_id)
    }

    pub fn frame_mut(&mut self, frame_id: u64) -> Option<&mut Frame> {
        self.frames.iter_mut().find(|f| f.id == frame_id)
    }

    /// A new empty frame at `index` (clamped), continuing the scene of the frame before it.
    /// Returns its id.
    pub fn insert_frame(&mut self, index: usize) -> u64 {
        let index = index.min(self.frames.len());
        let id = self.fresh_id();
        let prev = index.checked_sub(1).and_then(|i| self.frames.get(i));
        let seed = next_seed(prev.map_or(self.identity_seed, |f| f.seed) ^ id);
        let frame = Frame {
            id,
            background: prev.map(|f| f.background.clone()).unwrap_or_default(),
            action: String::new(),
            dialogue: String::new(),
            notes: String::new(),
            duration: 2.0,
            seed,
            seed_locked: false,
            scene: prev.map_or(1, |f| f.scene),
        };
        self.frames.insert(index, frame);
        id
    }

    /// Appends a frame; returns its id.
    pub fn add_frame(&mut self) -> u64 {
        self.insert_frame(self.frames.len())
    }

    /// Copies a frame (texts and seed) right after it; returns the copy's id.
    pub fn duplicate_frame(&mut self, frame_id: u64) -> Option<u64> {
        let index = self.index_of(frame_id)?;
        let id = self.fresh_id();
        let mut copy = self.frames[index].clone();
        copy.id = id;
        self.frames.insert(index + 1, copy);
        Some(id)
    }

    /// Removes frames; returns how many were removed.
    pub fn delete_frames(&mut self, ids: &[u64]) -> usize {
        let before = self.frames.len();
        self.frames.retain(|f| !ids.contains(&f.id));
        before - self.frames.len()
    }

    /// Moves the given frames (kept in their order) so they sit before the frame that is at
    /// `to` now (`to == len` appends).
    pub fn move_frames(&mut self, ids: &[u64], to: usize) {
        let to = to.min(self.frames.len());
        // Frames before the drop slot that move shift it left.
        let shift = self.frames[..to]
            .iter()
            .filter(|f| ids.contains(&f.id))
            .count();
        let (moving, staying): (Vec<Frame>, Vec<Frame>) = std::mem::take(&mut self.frames)
            .into_iter()
            .partition(|f| ids.contains(&f.id));
        self.frames = staying;
        let at = to - shift;
        for (k, f) in moving.into_iter().enumerate() {
            self.frames.insert(at + k, f);
        }
    }

    pub fn story_context(&self) -> StoryContext {
        StoryContext {
            identity: self.identity.clone(),
            style: self.style.clone(),
            identity_seed: self.identity_seed,
            frames: self.frames.iter().map(|f| self.frame_job(f)).collect(),
            cache_dir: None,
        }
    }

    pub fn render_settings(&self) -> RenderSettings {
        let s = &self.settings;
        RenderSettings {
            width: s.width,
            height: s.height,
            steps: s.steps,
            guidance: s.guidance,
            previews: s.previews,
            methods: s.methods.clone(),
        }
    }

    pub fn frame_job(&self, frame: &Frame) -> FrameJob {
        FrameJob {
            frame_id: frame.id,
            background: frame.background.clone(),
            action: frame.action.clone(),
            seed: frame.seed,
            scene: frame.scene,
        }
    }

    /// Total screen time.
    pub fn duration(&self) -> f32 {
        self.frames.iter().map(|f| f.duration).sum()
    }
}

/// The versions of one frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameVersions {
    pub versions: Vec<Version>,
    /// Index into `versions` of the version shown and exported.
    pub active: Option<usize>,
}

impl FrameVersions {
    pub fn active_version(&self) -> Option<&Version> {
        self.active.and_then(|i| self.versions.get(i))
    }
}

/// Every generated image: frame versions by frame id, and the identity's versions.
#[derive(Debug, Clone, Default)]
pub struct Renders {
    pub frames: std::collections::HashMap<u64, FrameVersions>,
    pub identity: FrameVersions,
}

/// Version ids are unique for the whole session, so textures cached by id never show an
/// image of a previously opened project.
static NEXT_VERSION_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Renders {
    fn fresh_id(&mut self) -> u64 {
        NEXT_VERSION_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    pub fn of(&self, frame_id: u64) -> Option<&FrameVersions> {
        self.frames.get(&frame_id)
    }

    pub fn active(&self, frame_id: u64) -> Option<&Version> {
        self.frames.get(&frame_id)?.active_version()
    }

    /// The identity image shown beside the frames.
    pub fn identity_active(&self) -> Option<&Version> {
        self.identity.active_version()
    }

    pub fn set_active(&mut self, frame_id: u64, index: usize) {
        if let Some(v) = self.frames.get_mut(&frame_id)
            && index < v.versions.len()
        {
            v.active = Some(index);
        }
    }

    fn new_version(
        &mut self,
        record: FrameVersion,
        pixels: ImageState,
        analysis: FrameAnalysis,
    ) -> Version {
        let overlay = Arc::new(OverlayData::from_analysis(&analysis));
        Version {
            id: self.fresh_id(),
            record,
            pixels,
            analysis,
            overlay,
        }
    }

    /// Records a finished generation as the frame's new active version; returns its id.
    pub fn add_version(
        &mut self,
        frame_id: u64,
        record: FrameVersion,
        image: RgbImage,
        analysis: FrameAnalysis,
    ) -> u64 {
        let version = self.new_version(record, ImageState::Loaded(Pixels::new(image)), analysis);
        let id = version.id;
        let entry = self.frames.entry(frame_id).or_default();
        entry.versions.push(version);
        entry.active = Some(entry.versions.len() - 1);
        id
    }

    /// Records a new identity image as the active one; returns its id.
    pub fn add_identity_version(
        &mut self,
        record: FrameVersion,
        image: RgbImage,
        analysis: FrameAnalysis,
    ) -> u64 {
        let version = self.new_version(record, ImageState::Loaded(Pixels::new(image)), analysis);
        let id = version.id;
        self.identity.versions.push(version);
        self.identity.active = Some(self.identity.versions.len() - 1);
        id
    }

    /// A duplicated frame starts with the versions of its original.
    pub fn copy_versions(&mut self, from: u64, to: u64) {
        if let Some(v) = self.frames.get(&from).cloned() {
            self.frames.insert(to, v);
        }
    }

    /// Deletes a version, keeping the active one pointing at the same image when it stays.
    pub fn delete_version(&mut self, frame_id: u64, index: usize) {
        let Some(entry) = self.frames.get_mut(&frame_id) else {
            return;
        };
        if index >= entry.versions.len() {
            return;
        }
        entry.versions.remove(index);
        entry.active = match entry.active {
            _ if entry.versions.is_empty() => None,
            Some(a) if a > index => Some(a - 1),
            Some(a) if a == index => Some(index.min(entry.versions.len() - 1)),
            other => other,
        };
    }

    /// Every version, identity first.
    pub fn versions_mut(&mut self) -> impl Iterator<Item = &mut Version> {
        self.identity
            .versions
            .iter_mut()
            .chain(self.frames.values_mut().flat_map(|f| f.versions.iter_mut()))
    }

    /// Puts what the loader decoded into the versions with this id (a duplicated frame
    /// shares its original's versions, so there can be several).
    pub fn attach(&mut self, loaded: LoadedVersion) {
        for v in self.versions_mut().filter(|v| v.id == loaded.version_id) {
            v.pixels = match &loaded.pixels {
                Ok(p) => ImageState::Loaded(p.clone()),
                Err(why) => ImageState::Missing(why.clone()),
            };
            v.set_analysis(loaded.analysis.clone());
        }
    }
}

/// The timeline thumbnail: at most [`THUMBNAIL_SIZE`] on the longer side, same aspect.
pub fn make_thumbnail(image: &RgbImage) -> RgbImage {
    let (w, h) = image.dimensions();
    let scale = THUMBNAIL_SIZE as f32 / w.max(h).max(1) as f32;
    if scale < 1.0 {
        image::imageops::thumbnail(
            image,
            ((w as f32 * scale).round() as u32).max(1),
            ((h as f32 * scale).round() as u32).max(1),
        )
    } else {
        image.clone()
    }
}

/// Whole milliseconds of a screen time in seconds (the project keeps milliseconds).
fn to_millis(seconds: f32) -> u32 {
    (seconds.max(0.0) as f64 * 1000.0).round() as u32
}

impl Storyboard {
    /// The project document for these edits and renders (what `project.ron` holds).
    pub fn to_project(&self, renders: &Renders) -> Project {
        let records = |v: Option<&FrameVersions>| match v {
            Some(v) => (
                v.versions.iter().map(|x| x.record.clone()).collect(),
                v.active,
            ),
            None => (Vec::new(), None),
        };
        let (identity_versions, identity_active) = records(Some(&renders.identity));
        let frames = self
            .frames
            .iter()
            .map(|f| {
                let (versions, active_version) = records(renders.of(f.id));
                crate::project::Frame {
                    id: f.id,
                    background: f.background.clone(),
                    action: f.action.clone(),
                    dialogue: f.dialogue.clone(),
                    notes: f.notes.clone(),
                    duration_ms: to_millis(f.duration),
                    seed: f.seed,
                    seed_locked: f.seed_locked,
                    scene: f.scene,
                    versions,
                    active_version,
                }
            })
            .collect();
        let s = &self.settings;
        Project {
            format_version: crate::project::CURRENT_FORMAT_VERSION,
            title: self.title.clone(),
            identity: Identity {
                prompt: self.identity.clone(),
                seed: self.identity_seed,
                versions: identity_versions,
                active_version: identity_active,
            },
            style: self.style.clone(),
            frames,
            generation: crate::project::GenerationSettings {
                steps: s.steps,
                guidance: s.guidance,
                width: s.width,
                height: s.height,
                aspect: self.aspect,
            },
            methods: s.methods.clone(),
            model: self.model.clone(),
            scenes: self.scenes.clone(),
            next_id: self.next_id,
        }
    }

    /// The storyboard and renders of an opened project. Version pixels start as
    /// [`ImageState::Loading`] (or `Missing` for files the project folder lacks); the
    /// caller decodes them with [`Renders::load_requests`].
    pub fn from_project(project: Project) -> (Storyboard, Renders) {
        let mut renders = Renders::default();
        let mut take = |versions: Vec<FrameVersion>, active: Option<usize>| {
            let versions: Vec<Version> = versions
                .into_iter()
                .map(|record| {
                    let pixels = if record.missing {
                        ImageState::Missing(format!("{} is missing", record.file))
                    } else {
                        ImageState::Loading
                    };
                    renders.new_version(record, pixels, FrameAnalysis::default())
                })
                .collect();
            FrameVersions { versions, active }
        };
        let identity = take(project.identity.versions, project.identity.active_version);
        let mut frames = Vec::with_capacity(project.frames.len());
        let mut versions = Vec::with_capacity(project.frames.len());
        for f in project.frames {
            versions.push((f.id, take(f.versions, f.active_version)));
            frames.push(Frame {
                id: f.id,
                background: f.background,
                action: f.action,
                dialogue: f.dialogue,
                notes: f.notes,
                duration: f.duration_ms as f32 / 1000.0,
                seed: f.seed,
                seed_locked: f.seed_locked,
                scene: f.scene,
            });
        }
        renders.identity = identity;
        renders.frames = versions.into_iter().collect();
        let g = project.generation;
        let board = Storyboard {
            title: project.title,
            identity: project.identity.prompt,
            style: project.style,
            identity_seed: project.identity.seed,
            frames,
            settings: GenerationSettings {
                width: g.width,
                height: g.height,
                steps: g.steps,
                guidance: g.guidance,
                previews: false,
                methods: project.methods,
            },
            aspect: g.aspect,
            model: project.model,
            scenes: project.scenes,
            next_id: project.next_id,
        };
        (board, renders)
    }
}

impl Renders {
    /// What to decode for every version still loading, active versions first (they are on
    /// screen), then the older ones for the version lists.
    pub fn load_requests(&self, dir: &std::path::Path) -> Vec<super::loader::LoadRequest> {
        let identity_mask = self
            .identity_active()
            .and_then(|v| v.record.mask_file.as_deref());
        let mut all: Vec<(bool, &Version)> = Vec::new();
        for set in std::iter::once(&self.identity).chain(self.frames.values()) {
            for (i, v) in set.versions.iter().enumerate() {
                all.push((set.active == Some(i), v));
            }
        }
        // Stable order: active first, then by id (the project's order).
        all.sort_by_key(|(active, v)| (!active, v.id));
        let mut seen = std::collections::HashSet::new();
        all.into_iter()
            .filter(|(_, v)| matches!(v.pixels, ImageState::Loading) && seen.insert(v.id))
            .map(|(_, v)| {
                super::loader::LoadRequest::for_version(dir, v.id, &v.record, identity_mask)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(n: usize) -> Storyboard {
        let mut b = Storyboard::default();
        for i in 0..n {
            let id = b.add_frame();
            b.frame_mut(id).unwrap().action = format!("action {i}");
        }
        b
    }

    fn actions(b: &Storyboard) -> Vec<String> {
        b.frames.iter().map(|f| f.action.clone()).collect()
    }

    fn record(file: &str) -> FrameVersion {
        FrameVersion {
            file: file.into(),
            steps: 2,
            ..Default::default()
        }
    }

    #[test]
    fn insert_duplicate_delete() {
        let mut b = board(2);
        b.frames[0].background = "a kitchen".into();
        let id = b.insert_frame(1);
        assert_eq!(b.index_of(id), Some(1));
        // An inserted frame continues the background of the frame before it.
        assert_eq!(b.frames[1].background, "a kitchen");
        let copy = b.duplicate_frame(b.frames[0].id).unwrap();
        assert_eq!(b.index_of(copy), Some(1));
        assert_eq!(b.frames[1].action, "action 0");
        assert_ne!(copy, b.frames[0].id);
        assert_eq!(b.delete_frames(&[copy, id]), 2);
        assert_eq!(actions(&b), ["action 0", "action 1"]);
    }

    #[test]
    fn move_frames_keeps_their_order_and_the_drop_slot() {
        let mut b = board(5);
        let ids: Vec<u64> = b.frames.iter().map(|f| f.id).collect();
        // Drag frames 0 and 2 before frame 4.
        b.move_frames(&[ids[0], ids[2]], 4);
        assert_eq!(
            actions(&b),
            ["action 1", "action 3", "action 0", "action 2", "action 4"]
        );
        // Drag the last frame to the front.
        b.move_frames(&[ids[4]], 0);
        assert_eq!(actions(&b)[0], "action 4");
        // Appending.
        b.move_frames(&[ids[4]], 5);
        assert_eq!(actions(&b)[4], "action 4");
    }

    #[test]
    fn versions_become_active_and_deleting_keeps_the_choice() {
        let mut r = Renders::default();
        let f = 7;
        for _ in 0..3 {
            r.add_version(
                f,
                record("frames/a.png"),
                RgbImage::new(400, 200),
                FrameAnalysis::default(),
            );
        }
        assert_eq!(r.of(f).unwrap().active, Some(2));
        // Thumbnails keep the aspect ratio.
        assert_eq!(
            r.of(f).unwrap().versions[0]
                .thumbnail()
                .unwrap()
                .dimensions(),
            (160, 80)
        );
        r.delete_version(f, 0);
        assert_eq!(r.of(f).unwrap().active, Some(1));
        r.delete_version(f, 1);
        assert_eq!(r.of(f).unwrap().active, Some(0));
        r.copy_versions(f, 8);
        assert_eq!(r.of(8).unwrap().versions.len(), 1);
        r.delete_version(f, 0);
        assert_eq!(r.of(f).unwrap().active, None);
        assert!(r.active(8).is_some());
    }

    #[test]
    fn aspect_presets_give_sizes_in_multiples_of_16() {
        assert_eq!(AspectPreset::Square.size(512 * 512), (512, 512));
        assert_eq!(AspectPreset::Wide16x9.size(1024 * 576), (1024, 576));
        let (w, h) = AspectPreset::Scope239.size(1024 * 1024);
        assert_eq!((w % 16, h % 16), (0, 0));
        assert_eq!(AspectPreset::of_size(w, h), Some(AspectPreset::Scope239));
        assert_eq!(
            AspectPreset::of_size(576, 1024),
            Some(AspectPreset::Tall9x16)
        );
        assert_eq!(AspectPreset::of_size(1000, 100), None);
    }

    #[test]
    fn short_action_cuts_on_characters() {
        let mut b = board(1);
        b.frames[0].action = "runs across the rooftop".into();
        assert_eq!(b.frames[0].short_action(10), "runs acro…");
        assert_eq!(b.frames[0].short_action(40), "runs across the rooftop");
    }

    #[test]
    fn seeds_are_deterministic_and_differ() {
        assert_eq!(next_seed(5), next_seed(5));
        assert_ne!(next_seed(5), next_seed(6));
        assert!(next_seed(u64::MAX) < 1_000_000_000);
    }

    /// A project with every field away from its default.
    pub(crate) fn full_project() -> Project {
        let version = |file: &str, seed: u64| FrameVersion {
            file: file.into(),
            created: 1_700_000_000,
            seed,
            steps: 7,
            guidance: 2.5,
            width: 64,
            height: 48,
            model: "built-in".into(),
            methods: vec!["CharaConsist".into()],
            mask_file: Some(format!("{file}.mask.png")),
            matches_file: Some(format!("{file}.matches.csv")),
            metadata: [("seconds".to_string(), "1.5".to_string())].into(),
            missing: true,
        };
        let mut methods = MethodSettings::default();
        methods.characonsist_enabled = true;
        methods.asemconsist_enabled = true;
        methods.bank_budget_mib = 123;
        let frame = |id: u64, ms: u32| crate::project::Frame {
            id,
            background: format!("room {id}"),
            action: format!("act {id}"),
            dialogue: "hi".into(),
            notes: "n".into(),
            duration_ms: ms,
            seed: id * 11,
            seed_locked: id % 2 == 0,
            scene: 3,
            versions: vec![version("frames/a.png", 1), version("frames/b.png", 2)],
            active_version: Some(0),
        };
        Project {
            format_version: crate::project::CURRENT_FORMAT_VERSION,
            title: "T".into(),
            identity: Identity {
                prompt: "a fox".into(),
                seed: 42,
                versions: vec![version("frames/identity-01.png", 9)],
                active_version: Some(0),
            },
            style: "ink".into(),
            frames: vec![frame(5, 1234), frame(2, 33), frame(9, 2500)],
            generation: crate::project::GenerationSettings {
                steps: 9,
                guidance: 4.25,
                width: 640,
                height: 480,
                aspect: ProjectAspect::Custom,
            },
            methods,
            model: ModelChoice::TinyRandom { seed: 3 },
            scenes: vec![Scene {
                id: 3,
                name: "roof".into(),
            }],
            next_id: 17,
        }
    }

    #[test]
    fn project_round_trips_through_the_storyboard() {
        let project = full_project();
        let (board, renders) = Storyboard::from_project(project.clone());
        assert_eq!(board.to_project(&renders), project);
        // Missing files are shown as missing, not loaded.
        assert!(renders.active(5).unwrap().missing_reason().is_some());
        assert_eq!(board.frames[0].duration, 1.234);
    }

    #[test]
    fn load_requests_put_active_versions_first() {
        let mut project = full_project();
        for f in &mut project.frames {
            for v in &mut f.versions {
                v.missing = false;
            }
            f.active_version = Some(1);
        }
        let (_, renders) = Storyboard::from_project(project);
        let requests = renders.load_requests(std::path::Path::new("p"));
        // Identity missing; 3 frames x 2 versions.
        assert_eq!(requests.len(), 6);
        let active_ids: Vec<u64> = [5, 2, 9]
            .iter()
            .map(|&f| renders.active(f).unwrap().id)
            .collect();
        for r in &requests[..3] {
            assert!(active_ids.contains(&r.version_id));
        }
        assert_eq!(
            requests[0].identity_mask.as_deref(),
            Some(std::path::Path::new("p/frames/identity-01.png.mask.png"))
        );
    }
}
