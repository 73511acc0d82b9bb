//! Consistency metrics: the Consistency Quality Score (CQS, ASemConsist eqs. 7-13) and the
//! CHARIS ColorScore, a model-free identity-colour check between foreground regions; token
//! seams, the contrast of generated pictures along the model's token borders.

pub mod color_score;
pub mod cqs;
pub mod seams;

pub use color_score::{
    ColorCombine, ColorScore, ColorScoreSettings, SpaceScore, color_score, color_score_with,
};
pub use cqs::{
    CqsParams, CqsReport, CqsSample, DistanceScaling, PairwiseDistance, VqaScorer, cqs,
    mean_pairwise_distance, score_set,
};
pub use seams::{SeamContrast, seam_contrast};

/// Errors of the metrics.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("invalid metric input: {0}")]
    Input(String),
}
