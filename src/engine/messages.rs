//! What the UI (or the headless renderer) and the engine say to each other.

use std::path::PathBuf;

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Which model to load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ModelSpec {
    /// The small model shipped with Storyloom.
    Builtin,
    /// Real FLUX.1 files chosen by the user.
    Flux(FluxFiles),
    /// A tiny untrained model of the FLUX architecture with deterministic random weights:
    /// for tests and for trying the app's mechanics; its images are noise-like.
    TinyRandom { seed: u64 },
}

/// The parts of a FLUX.1 set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FluxFiles {
    /// BFL single file, or a diffusers `transformer/` (or pipeline) folder.
    pub transformer: PathBuf,
    /// `ae.safetensors` or a diffusers `vae/` folder.
    pub vae: PathBuf,
    /// T5 encoder weights (file or folder) and its `tokenizer.json`.
    pub t5: PathBuf,
    pub t5_tokenizer: PathBuf,
    /// CLIP-L text encoder and tokenizer (pooled vector).
    pub clip: Option<PathBuf>,
    pub clip_tokenizer: Option<PathBuf>,
}

/// One frame to render.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameJob {
    /// The project's stable frame id (echoed in every event).
    pub frame_id: u64,
    /// Environment / background part of the prompt.
    pub background: String,
    /// What the character does.
    pub action: String,
    pub seed: u64,
    /// Scene number, for the mixed-scenes background mode.
    pub scene: u32,
}

/// Settings shared by every frame of one generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenderSettings {
    pub width: u32,
    pub height: u32,
    pub steps: usize,
    pub guidance: f32,
    /// Send a preview image with every progress event (costs a little time per step).
    pub previews: bool,
    pub methods: crate::consistency::MethodSettings,
}

/// The story part every frame shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoryContext {
    /// The character description (identity prompt).
    pub identity: String,
    /// Style line appended to the character part.
    pub style: String,
    /// Seed of the identity image.
    pub identity_seed: u64,
    /// Every frame of the story in order (not only the ones being rendered): ASemConsist's
    /// combined prompt names them all, and mixed scenes need each scene's first frame.
    #[serde(default)]
    pub frames: Vec<FrameJob>,
    /// Folder for re-creatable data such as a stored identity bank (a project's `cache/`);
    /// `None` keeps it in memory only.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

/// Requests to the engine.
#[derive(Debug, Clone)]
pub enum Job {
    LoadModel(ModelSpec),
    /// Render these frames (queued after anything already queued).
    Generate {
        story: StoryContext,
        frames: Vec<FrameJob>,
        settings: RenderSettings,
    },
    /// Render one frame again, reusing what the engine kept of its story (identity bank).
    Regenerate {
        story: StoryContext,
        frame: FrameJob,
        settings: RenderSettings,
    },
    /// Stop the running frame within one step and drop the queue.
    Cancel,
    Shutdown,
}

/// Everything recorded about how an image was made (goes into the PNG text chunks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationMetadata {
    pub prompt: String,
    pub segments: Vec<String>,
    pub seed: u64,
    pub model: String,
    pub steps: usize,
    pub guidance: f32,
    pub width: u32,
    pub height: u32,
    pub methods: crate::consistency::MethodSettings,
    /// Methods that actually ran (e.g. "CharaConsist", "ASemConsist (AFS on, radius 0.21)").
    pub methods_used: Vec<String>,
    pub seconds: f32,
}

/// A finished frame.
#[derive(Debug, Clone)]
pub struct FrameResult {
    pub frame_id: u64,
    pub image: RgbImage,
    /// Foreground masks, matches and decisions of the methods, when they ran.
    pub analysis: crate::consistency::FrameAnalysis,
    pub metadata: GenerationMetadata,
}

/// What the engine reports.
#[derive(Debug, Clone)]
pub enum Event {
    ModelLoaded {
        name: String,
        description: String,
    },
    /// A frame entered the queue.
    Queued {
        frame_id: u64,
    },
    Progress {
        frame_id: u64,
        step: usize,
        of: usize,
        preview: Option<RgbImage>,
    },
    /// The identity image of a story (the reference the frames follow).
    IdentityDone {
        image: RgbImage,
        analysis: crate::consistency::FrameAnalysis,
        /// How it was made (its prompt is the identity prompt).
        metadata: Box<GenerationMetadata>,
    },
    FrameDone(Box<FrameResult>),
    /// The running frame (and the queue) were cancelled.
    Cancelled {
        frame_id: Option<u64>,
    },
    Error {
        frame_id: Option<u64>,
        message: String,
    },
    /// Nothing left to do.
    Idle,
}
