//! CharaConsist: masks, point matching, point-tracking attention, token merge.
//!
//! The pure math lives in `settings`, `schedule`, `mask`, `morphology`, `matching`,
//! `merge` and `plan`; the control on the DiT hook points uses it.

pub mod bank;
pub mod bank_file;
pub mod budget;
pub mod control;
pub mod mask;
pub mod matching;
pub mod merge;
pub mod morphology;
pub mod plan;
pub mod schedule;
pub mod settings;
pub mod story;

use serde::{Deserialize, Serialize};

pub use bank_file::{BankFileError, BankFingerprint};
pub use budget::{StoredBankBytes, StoryShape, estimate_co_batched_extra, estimate_stored_bank};
pub use control::StoredIdentity;
pub use mask::{MaskAccumulator, PromptSpans, TokenMask};
pub use matching::{Match, SimilarityAccumulator, match_points};
pub use merge::{gather_along, gather_rows, token_merge};
pub use plan::{ExtraKeyPlan, additive_mask, plan_extra_keys};
pub use schedule::{LayerSharing, alpha_at};
pub use settings::{BackgroundMode, CharaConsistSettings, LayerSelection, MaskVariant, StepWindow};

/// Errors of the CharaConsist math.
#[derive(Debug, thiserror::Error)]
pub enum CharaConsistError {
    #[error("{what}: expected {expected}, got {got}")]
    Shape {
        what: &'static str,
        expected: String,
        got: String,
    },
    #[error("token {token} is out of range for {len} tokens")]
    TokenOutOfRange { token: u32, len: usize },
    #[error("no layer was accumulated before asking for the result")]
    NoLayers,
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// Lets the control's hooks (which return candle results) use `?` on these functions.
impl From<CharaConsistError> for candle_core::Error {
    fn from(err: CharaConsistError) -> Self {
        match err {
            CharaConsistError::Tensor(e) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}

/// What CharaConsist found for one frame at the extraction step, for the UI and the
/// project file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FrameAnalysis {
    pub frame_mask: TokenMask,
    pub identity_mask: TokenMask,
    pub matches: Vec<Match>,
    pub extraction_step: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_analysis_round_trips_through_ron() {
        let analysis = FrameAnalysis {
            frame_mask: TokenMask::new(1, 2, vec![true, false]).unwrap(),
            identity_mask: TokenMask::new(2, 1, vec![false, true]).unwrap(),
            matches: vec![Match {
                frame_token: 0,
                identity_token: 1,
                similarity: 0.875,
            }],
            extraction_step: 10,
        };
        let text = ron::to_string(&analysis).unwrap();
        assert_eq!(ron::from_str::<FrameAnalysis>(&text).unwrap(), analysis);
    }

    #[test]
    fn errors_convert_into_tensor_errors() {
        let err: candle_core::Error = CharaConsistError::NoLayers.into();
        assert!(err.to_string().contains("no layer"));
    }
}
