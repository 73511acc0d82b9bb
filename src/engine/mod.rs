//! The engine: one worker thread that owns the model and device, takes jobs from a channel
//! and sends events back. The UI never waits on it.

pub mod measure;
pub mod messages;
pub mod render;
pub mod story;
pub mod tiny;
pub mod worker;

pub use messages::{
    Event, FluxFiles, FrameJob, FrameResult, GenerationMetadata, Job, ModelSpec, RenderSettings,
    StoryContext,
};
pub use worker::EngineHandle;
