//! CharaConsist settings: the defaults of the authors' released code (50 steps, 38 single
//! blocks), each one a field, and their proportional mapping to other step counts and depths.

use serde::{Deserialize, Serialize};

/// How the foreground mask compares the background and foreground attention (eq. 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MaskVariant {
    /// Released code: unscaled logits `q·k`, and a token is foreground when `bg <= fg`
    /// (ties go to the foreground).
    #[default]
    ReleasedCode,
    /// Paper: logits scaled by `1/sqrt(d)` and strict `fg > bg`.
    Paper,
}

impl MaskVariant {
    /// Factor applied to the logits `q·k` before the softmax.
    pub fn logit_scale(self, head_dim: usize) -> f64 {
        match self {
            MaskVariant::ReleasedCode => 1.0,
            MaskVariant::Paper => 1.0 / (head_dim as f64).sqrt(),
        }
    }

    /// Eq. (9), with the variant's tie rule.
    pub fn is_foreground(self, bg: f32, fg: f32) -> bool {
        match self {
            MaskVariant::ReleasedCode => bg <= fg,
            MaskVariant::Paper => fg > bg,
        }
    }
}

/// What happens to the environment of the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BackgroundMode {
    /// Frames also borrow the identity's background keys: same place, new action.
    #[default]
    Keep,
    /// Only the character is shared; every frame keeps its own environment.
    Switch,
    /// The first frame of each scene becomes that scene's background source.
    MixedScenes,
}

impl BackgroundMode {
    /// Whether background keys are shared at all.
    pub fn shares_background(self) -> bool {
        !matches!(self, BackgroundMode::Switch)
    }
}

/// Which single blocks a part of the method acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerSelection {
    /// Every single block.
    All,
    /// Blocks `offset, offset + stride, offset + 2·stride, …`.
    Every { stride: usize, offset: usize },
    /// These blocks (indices into the single blocks of the model the settings are for).
    Explicit(Vec<usize>),
}

impl LayerSelection {
    /// The selected block indices for a model with `num_single_blocks` single blocks.
    pub fn indices(&self, num_single_blocks: usize) -> Vec<usize> {
        match self {
            LayerSelection::All => (0..num_single_blocks).collect(),
            LayerSelection::Every { stride, offset } => (*offset..num_single_blocks)
                .step_by((*stride).max(1))
                .collect(),
            LayerSelection::Explicit(v) => v
                .iter()
                .copied()
                .filter(|&b| b < num_single_blocks)
                .collect(),
        }
    }

    pub fn contains(&self, block: usize, num_single_blocks: usize) -> bool {
        if block >= num_single_blocks {
            return false;
        }
        match self {
            LayerSelection::All => true,
            LayerSelection::Every { stride, offset } => {
                block >= *offset && (block - offset) % (*stride).max(1) == 0
            }
            LayerSelection::Explicit(v) => v.contains(&block),
        }
    }

    /// Patterns (`All`, `Every`) keep their meaning at any depth; explicit lists map each
    /// block proportionally (`round(b · to / from)`, duplicates removed).
    fn scaled(&self, from: usize, to: usize) -> Self {
        match self {
            LayerSelection::Explicit(v) => {
                let mut out: Vec<usize> = v
                    .iter()
                    .map(|&b| scale_index(b, from, to).min(to.saturating_sub(1)))
                    .collect();
                out.dedup();
                LayerSelection::Explicit(out)
            }
            other => other.clone(),
        }
    }
}

/// An inclusive window of (0-based) denoising steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepWindow {
    pub first: usize,
    pub last: usize,
}

impl StepWindow {
    pub fn contains(&self, step: usize) -> bool {
        (self.first..=self.last).contains(&step)
    }
}

/// CharaConsist settings. Steps are 0-based indices into the denoising schedule; blocks
/// are indices into the model's single blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CharaConsistSettings {
    /// Step count the step fields below refer to (released code: 50).
    pub num_steps: usize,
    /// Single-block count the layer fields refer to (FLUX.1: 38).
    pub num_single_blocks: usize,
    /// Point-tracking attention (eqs. 10-17) on/off.
    pub point_tracking: bool,
    /// Adaptive token merge (eq. 20) on/off.
    pub token_merge: bool,
    /// Keep, switch or per-scene background.
    pub background: BackgroundMode,
    /// Blocks with foreground key sharing and token merge (released code: even single
    /// blocks 0, 2, …, 36).
    pub foreground_layers: LayerSelection,
    /// Blocks with background key sharing (released code: all single blocks).
    pub background_layers: LayerSelection,
    /// Blocks whose attention gives the mask and the point matching (released code: all
    /// single blocks).
    pub analysis_layers: LayerSelection,
    /// Step at which mask and matches are extracted (released code: 10).
    pub extraction_step: usize,
    /// Steps with point-tracking attention (released code: 1..=40).
    pub tracking_steps: StepWindow,
    /// Steps with token merge (released code: 1..=30).
    pub merge_steps: StepWindow,
    /// Merge strength before its decay (eq. 20; released code: 0.8).
    pub alpha: f32,
    /// Last step merged at full `alpha` (released code: 11, one past extraction).
    pub alpha_full_until: usize,
    /// First step where the cosine decay reaches 0 (released code: 31, so the decay spans
    /// 20 steps: `alpha·(1 + cos(pi·k/20))/2` at step `11 + k`).
    pub alpha_zero_from: usize,
    /// Matches at or below this averaged cosine similarity are dropped (eq. 5; 0.5).
    pub match_threshold: f32,
    /// Released-code or paper mask (logit scale and tie rule).
    pub mask_variant: MaskVariant,
    /// Clean the raw mask by erosion then dilation (released code: on).
    pub clean_mask: bool,
    /// Erosion radius in tokens of a 64-token grid (FLUX at 1024 px): 1 = 3x3 square. Scales
    /// with the grid (see [`CharaConsistSettings::mask_radii`]).
    pub erosion_radius: u8,
    /// Dilation radius in tokens of a 64-token grid: 2 = 5x5 square. Scales with the grid.
    pub dilation_radius: u8,
}

impl Default for CharaConsistSettings {
    fn default() -> Self {
        Self {
            num_steps: 50,
            num_single_blocks: 38,
            point_tracking: true,
            token_merge: true,
            background: BackgroundMode::Keep,
            foreground_layers: LayerSelection::Every {
                stride: 2,
                offset: 0,
            },
            background_layers: LayerSelection::All,
            analysis_layers: LayerSelection::All,
            extraction_step: 10,
            tracking_steps: StepWindow { first: 1, last: 40 },
            merge_steps: StepWindow { first: 1, last: 30 },
            alpha: 0.8,
            alpha_full_until: 11,
            alpha_zero_from: 31,
            match_threshold: 0.5,
            mask_variant: MaskVariant::ReleasedCode,
            clean_mask: true,
            erosion_radius: 1,
            dilation_radius: 2,
        }
    }
}

/// `round(i · to / from)` in integers (halves round up); the identity when `to == from`.
fn scale_index(i: usize, from: usize, to: usize) -> usize {
    if from == 0 {
        return i;
    }
    (2 * i * to + from) / (2 * from)
}

/// Side in tokens of the image grid the released code's mask radii were chosen for (FLUX.1
/// at 1024x1024: 64x64 tokens).
pub const REFERENCE_MASK_GRID: usize = 64;

impl CharaConsistSettings {
    /// Erosion and dilation radii on a `rows x cols` token grid: the settings' radii scale
    /// with the grid's shorter side against [`REFERENCE_MASK_GRID`] (rounded, halves up), so
    /// they are the released code's at 1024 px, while on a small grid (the built-in model's
    /// 8x8) a 3x3 erosion does not wipe out a character two tokens wide.
    pub fn mask_radii(&self, rows: usize, cols: usize) -> (u8, u8) {
        let side = rows.min(cols);
        let scale = |r: u8| {
            let scaled = scale_index(r as usize, REFERENCE_MASK_GRID, side);
            scaled.min(u8::MAX as usize) as u8
        };
        (scale(self.erosion_radius), scale(self.dilation_radius))
    }

    /// The same settings for a schedule of `num_steps` steps and a model with
    /// `num_single_blocks` single blocks.
    ///
    /// Rule: every step index `s` becomes `round(s · num_steps / self.num_steps)`; a window
    /// that starts after step 0 still starts at step 1 or later (step 0 never borrows from
    /// the identity); every step is clamped to the last step. Layer patterns (`All`, every
    /// second block) keep their meaning; explicit block lists map proportionally. With the
    /// settings' own step count and depth this is the identity.
    pub fn scaled_to(&self, num_steps: usize, num_single_blocks: usize) -> Self {
        let last = num_steps.saturating_sub(1);
        let step = |s: usize| scale_index(s, self.num_steps, num_steps).min(last);
        let window_start = |s: usize| {
            let mapped = step(s);
            if s > 0 {
                mapped.max(1).min(last)
            } else {
                mapped
            }
        };
        let window = |w: StepWindow| {
            let first = window_start(w.first);
            StepWindow {
                first,
                last: step(w.last).max(first),
            }
        };
        Self {
            num_steps,
            num_single_blocks,
            foreground_layers: self
                .foreground_layers
                .scaled(self.num_single_blocks, num_single_blocks),
            background_layers: self
                .background_layers
                .scaled(self.num_single_blocks, num_single_blocks),
            analysis_layers: self
                .analysis_layers
                .scaled(self.num_single_blocks, num_single_blocks),
            extraction_step: step(self.extraction_step),
            tracking_steps: window(self.tracking_steps),
            merge_steps: window(self.merge_steps),
            alpha_full_until: step(self.alpha_full_until),
            alpha_zero_from: scale_index(self.alpha_zero_from, self.num_steps, num_steps),
            ..self.clone()
        }
    }

    /// Whether block `block` shares foreground keys and merges tokens.
    pub fn is_foreground_layer(&self, block: usize) -> bool {
        self.foreground_layers
            .contains(block, self.num_single_blocks)
    }

    /// Whether block `block` shares background keys.
    pub fn is_background_layer(&self, block: usize) -> bool {
        self.background_layers
            .contains(block, self.num_single_blocks)
    }

    /// Whether block `block` contributes to the mask and the matching.
    pub fn is_analysis_layer(&self, block: usize) -> bool {
        self.analysis_layers.contains(block, self.num_single_blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_released_code() {
        let s = CharaConsistSettings::default();
        assert_eq!(
            s.foreground_layers.indices(38),
            (0..38).step_by(2).collect::<Vec<_>>()
        );
        assert_eq!(s.foreground_layers.indices(38).last(), Some(&36));
        assert_eq!(s.background_layers.indices(38).len(), 38);
        assert!(s.is_foreground_layer(0) && !s.is_foreground_layer(1) && s.is_foreground_layer(36));
        assert!(!s.is_foreground_layer(38));
        assert_eq!((s.tracking_steps.first, s.tracking_steps.last), (1, 40));
        assert_eq!((s.merge_steps.first, s.merge_steps.last), (1, 30));
        assert_eq!(s.extraction_step, 10);
    }

    #[test]
    fn scaling_to_the_own_size_is_the_identity() {
        let s = CharaConsistSettings::default();
        assert_eq!(s.scaled_to(50, 38), s);
        let explicit = CharaConsistSettings {
            foreground_layers: LayerSelection::Explicit(vec![0, 5, 37]),
            ..s
        };
        assert_eq!(explicit.scaled_to(50, 38), explicit);
    }

    #[test]
    fn scaling_to_fewer_steps_is_proportional() {
        // 20 steps: 10·20/50 = 4; 1·20/50 = 0.4 -> 0 but a window after step 0 starts at 1;
        // 40·20/50 = 16; 30·20/50 = 12; 11·20/50 = 4.4 -> 4; 31·20/50 = 12.4 -> 12.
        let s = CharaConsistSettings::default().scaled_to(20, 8);
        assert_eq!(s.extraction_step, 4);
        assert_eq!(s.tracking_steps, StepWindow { first: 1, last: 16 });
        assert_eq!(s.merge_steps, StepWindow { first: 1, last: 12 });
        assert_eq!((s.alpha_full_until, s.alpha_zero_from), (4, 12));
        assert_eq!(s.foreground_layers.indices(8), vec![0, 2, 4, 6]);
        // The built-in model's 4 single blocks.
        assert_eq!(s.foreground_layers.indices(4), vec![0, 2]);
        assert_eq!(s.background_layers.indices(4), vec![0, 1, 2, 3]);
        // 28 steps: 10·28/50 = 5.6 -> 6; 40·28/50 = 22.4 -> 22.
        let s = CharaConsistSettings::default().scaled_to(28, 38);
        assert_eq!(s.extraction_step, 6);
        assert_eq!(s.tracking_steps.last, 22);
    }

    #[test]
    fn mask_radii_follow_the_grid() {
        let s = CharaConsistSettings::default();
        // 1024 px (64 tokens) and 1024x768 (48): the released code's 1 and 2.
        assert_eq!(s.mask_radii(64, 64), (1, 2));
        assert_eq!(s.mask_radii(48, 64), (1, 2));
        // 512 px: 1·32/64 = 0.5 -> 1, 2·32/64 = 1. 2048 px: 2 and 4.
        assert_eq!(s.mask_radii(32, 32), (1, 1));
        assert_eq!(s.mask_radii(128, 128), (2, 4));
        // The built-in model's 8x8: 0.125 and 0.25 -> no cleaning.
        assert_eq!(s.mask_radii(8, 8), (0, 0));
    }

    #[test]
    fn explicit_layers_map_proportionally() {
        // 37·8/38 = 7.79 -> 8, clamped to block 7; 19·8/38 = 4.
        let sel = LayerSelection::Explicit(vec![0, 19, 37]);
        assert_eq!(sel.scaled(38, 8), LayerSelection::Explicit(vec![0, 4, 7]));
    }

    #[test]
    fn mask_variants_differ_on_ties_only() {
        assert!(MaskVariant::ReleasedCode.is_foreground(0.5, 0.5));
        assert!(!MaskVariant::Paper.is_foreground(0.5, 0.5));
        assert!(MaskVariant::Paper.is_foreground(0.4, 0.5));
        assert!(!MaskVariant::ReleasedCode.is_foreground(0.6, 0.5));
        assert_eq!(MaskVariant::Paper.logit_scale(64), 0.125);
    }

    #[test]
    fn settings_round_trip_through_ron() {
        let s = CharaConsistSettings {
            background: BackgroundMode::MixedScenes,
            ..Default::default()
        };
        let text = ron::to_string(&s).unwrap();
        assert_eq!(ron::from_str::<CharaConsistSettings>(&text).unwrap(), s);
    }
}
