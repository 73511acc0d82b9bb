//! ASemConsist (Kim, Shin, Cho, Uh): selective text-embedding modification (STM), semantic
//! projection on padding embeddings (PAD) and adaptive feature sharing (AFS).
//!
//! This module holds the method's math as pure functions over matrices and tensors:
//! - [`stm`]: eqs. (1)-(3), SVD-based selective expression and suppression;
//! - [`pad`]: eqs. (4)-(6), projection of the padding rows;
//! - [`afs`]: the ambiguity radius, the sharing decision and the threshold calibration;
//! - [`schedule`]: the paper's block and step windows and how they scale to other models;
//! - [`pipeline`]: the per-frame work on a combined prompt and on the text projections;
//! - [`settings`]: every setting with the paper's values, and the ablation presets.
//! - [`control`]: all of it plugged into the DiT hook points as a `Control`;
//! - [`story`]: the combined prompt and the passes of a story through the pipeline.
//!
//! Every choice the paper leaves open is a named setting whose doc comment and `*_HELP`
//! tooltip text say the value chosen and why.

pub mod afs;
pub mod control;
pub mod linalg;
pub mod pad;
pub mod pipeline;
pub mod schedule;
pub mod settings;
pub mod stm;
pub mod story;

pub use afs::{
    AfsDecision, AfsMode, AfsSettings, ProbeSeeds, RadiusNormalisation, calibrate_threshold,
    decide, radius,
};
pub use control::{AsemControl, SampleRole};
pub use linalg::{mat_to_tensor, tensor_to_mat};
pub use pad::{PadSettings, PadSuppression, project_padding};
pub use pipeline::{SegmentSpans, express_projection, modify_text_embeddings, modify_text_tensor};
pub use schedule::{FLUX1_DEPTH, ModelDepth, StepIndexing, StepWindow, scale_blocks};
pub use settings::{AsemPreset, AsemSettings, PromptLayout, SeparatorTokens};
pub use stm::{ScaleParams, Selection, StmSettings, selective_expression, selective_suppression};
pub use story::{
    AsemFrames, AsemPrompt, CombinedPromptError, PromptGroup, asem_spans, combined_segments,
    encode_combined, encode_combined_with, encode_groups, frame_roles, measure_ambiguity, prepare,
    render_frames,
};

/// Errors of the ASemConsist math.
#[derive(Debug, thiserror::Error)]
pub enum AsemError {
    #[error("singular value decomposition failed: {0}")]
    Svd(String),
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("empty input: {0}")]
    Empty(&'static str),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}
