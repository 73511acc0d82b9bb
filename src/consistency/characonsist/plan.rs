//! Which identity keys/values a frame borrows in point-tracking attention, as plain token
//! indices (CharaConsist eqs. 10-15), and the additive mask on them (eq. 16).
//!
//! The extra keys are concatenated after the frame's own joint keys (eq. 14): first the
//! borrowed foreground keys, then the borrowed background keys. The mask built here covers
//! only those extra columns; every query keeps seeing its own joint keys unmasked.

use candle_core::{Device, Tensor};

use super::CharaConsistError;
use super::mask::TokenMask;
use super::matching::Match;
use super::schedule::LayerSharing;

/// The extra keys of one frame in one (step, single block).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtraKeyPlan {
    /// Identity token whose pre-RoPE key and value are borrowed (eqs. 11-12).
    pub fg_identity_tokens: Vec<u32>,
    /// Frame token whose RoPE position each borrowed foreground key is encoded at (eq. 13),
    /// parallel to `fg_identity_tokens`.
    pub fg_positions: Vec<u32>,
    /// Background-source tokens whose keys and values are borrowed at their own positions:
    /// background in the source and not foreground in the frame.
    pub bg_identity_tokens: Vec<u32>,
}

impl ExtraKeyPlan {
    /// Number of extra key columns.
    pub fn len(&self) -> usize {
        self.fg_identity_tokens.len() + self.bg_identity_tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Extra columns `[0, n_fg)` hold foreground keys, `[n_fg, len)` background keys.
    pub fn num_foreground(&self) -> usize {
        self.fg_identity_tokens.len()
    }
}

/// Builds the plan for one frame.
///
/// - Foreground (when `sharing.foreground`): every kept match whose frame token is
///   foreground, in frame-token order; its identity token's key will be re-encoded at the
///   frame token's position (eqs. 10-13).
/// - Background (when `sharing.background` and a source is given): every token of the
///   background source that is background there and not foreground in the frame, encoded at
///   its own position. The source is the identity in "keep" mode and the scene's first frame
///   in "mixed scenes"; its grid may differ from the frame's, in which case tokens are
///   compared at the same (row, col) and tokens outside the frame's grid count as not
///   foreground in the frame.
pub fn plan_extra_keys(
    frame_mask: &TokenMask,
    identity_mask: &TokenMask,
    matches: &[Match],
    background_source: Option<&TokenMask>,
    sharing: LayerSharing,
) -> Result<ExtraKeyPlan, CharaConsistError> {
    let mut plan = ExtraKeyPlan::default();
    if sharing.foreground {
        let mut sorted: Vec<&Match> = matches
            .iter()
            .filter(|m| frame_mask.is_fg(m.frame_token as usize))
            .collect();
        sorted.sort_by_key(|m| m.frame_token);
        for m in sorted {
            if m.identity_token as usize >= identity_mask.len() {
                return Err(CharaConsistError::TokenOutOfRange {
                    token: m.identity_token,
                    len: identity_mask.len(),
                });
            }
            plan.fg_identity_tokens.push(m.identity_token);
            plan.fg_positions.push(m.frame_token);
        }
    }
    if let (true, Some(source)) = (sharing.background, background_source) {
        for (token, &source_fg) in source.fg.iter().enumerate() {
            if source_fg {
                continue;
            }
            let (row, col) = (token / source.cols.max(1), token % source.cols.max(1));
            let frame_fg = row < frame_mask.rows
                && col < frame_mask.cols
                && frame_mask.is_fg(row * frame_mask.cols + col);
            if !frame_fg {
                plan.bg_identity_tokens.push(token as u32);
            }
        }
    }
    Ok(plan)
}

/// Additive mask `[n_txt + n_img, plan.len()]` (f32) on the extra key columns, for the
/// joint query sequence (text first, then the frame's image tokens): 0 where a query may
/// look, `-inf` elsewhere. Foreground image queries see only the extra foreground keys,
/// background image queries only the extra background keys, text queries none (eq. 16's
/// `log(M*)`).
///
/// `-inf` rather than a large negative number: `exp(-inf) = 0` exactly, so the hidden keys
/// get exactly zero probability, and a large finite value would saturate to `-inf` in f16
/// anyway. A row of `-inf` cannot produce NaN because every query also sees its own joint
/// keys, which are not part of this mask.
pub fn additive_mask(
    plan: &ExtraKeyPlan,
    frame_mask: &TokenMask,
    n_txt: usize,
    n_img: usize,
    device: &Device,
) -> Result<Tensor, CharaConsistError> {
    if frame_mask.len() != n_img {
        return Err(CharaConsistError::Shape {
            what: "frame mask",
            expected: format!("{n_img} image tokens"),
            got: format!("{}", frame_mask.len()),
        });
    }
    let n_extra = plan.len();
    let n_fg = plan.num_foreground();
    let mut data = vec![f32::NEG_INFINITY; (n_txt + n_img) * n_extra];
    for (i, &fg) in frame_mask.fg.iter().enumerate() {
        let row = &mut data[(n_txt + i) * n_extra..(n_txt + i + 1) * n_extra];
        let visible = if fg { 0..n_fg } else { n_fg..n_extra };
        row[visible].fill(0.0);
    }
    Ok(Tensor::from_vec(data, (n_txt + n_img, n_extra), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::D;

    fn m(frame_token: u32, identity_token: u32) -> Match {
        Match {
            frame_token,
            identity_token,
            similarity: 0.9,
        }
    }

    /// 2x2 grids. Frame fg = tokens 0, 1; identity fg = tokens 1, 3.
    fn masks() -> (TokenMask, TokenMask) {
        (
            TokenMask::new(2, 2, vec![true, true, false, false]).unwrap(),
            TokenMask::new(2, 2, vec![false, true, false, true]).unwrap(),
        )
    }

    const BOTH: LayerSharing = LayerSharing {
        foreground: true,
        background: true,
    };

    #[test]
    fn plan_lists_matched_fg_and_free_bg_tokens() {
        let (frame, identity) = masks();
        let matches = [m(1, 3), m(0, 1)];
        let plan = plan_extra_keys(&frame, &identity, &matches, Some(&identity), BOTH).unwrap();
        // Sorted by frame token: 0 <- 1, 1 <- 3.
        assert_eq!(plan.fg_identity_tokens, vec![1, 3]);
        assert_eq!(plan.fg_positions, vec![0, 1]);
        // Identity bg = 0, 2; frame fg = 0, so only 2 is borrowed.
        assert_eq!(plan.bg_identity_tokens, vec![2]);
        assert_eq!(plan.len(), 3);
    }

    #[test]
    fn switch_mode_and_fg_only_layers() {
        let (frame, identity) = masks();
        let matches = [m(0, 1)];
        let fg_only = LayerSharing {
            foreground: true,
            background: false,
        };
        let plan = plan_extra_keys(&frame, &identity, &matches, Some(&identity), fg_only).unwrap();
        assert!(plan.bg_identity_tokens.is_empty());
        let bg_only = LayerSharing {
            foreground: false,
            background: true,
        };
        let plan = plan_extra_keys(&frame, &identity, &matches, Some(&identity), bg_only).unwrap();
        assert!(plan.fg_identity_tokens.is_empty());
        assert_eq!(plan.bg_identity_tokens, vec![2]);
        // No matches and no background source: nothing to borrow.
        let plan = plan_extra_keys(&frame, &identity, &[], None, BOTH).unwrap();
        assert!(plan.is_empty());
    }

    #[test]
    fn background_source_on_another_grid() {
        // Source 1x3, all background; frame 2x2 with fg at (0, 1). Source (0,1) is hidden by
        // the frame's fg, (0,2) is outside the frame's grid, so it counts as not foreground.
        let source = TokenMask::empty(1, 3);
        let frame = TokenMask::new(2, 2, vec![false, true, false, false]).unwrap();
        let plan = plan_extra_keys(&frame, &source, &[], Some(&source), BOTH).unwrap();
        assert_eq!(plan.bg_identity_tokens, vec![0, 2]);
    }

    #[test]
    fn mask_rows_follow_the_query_kind() {
        let (frame, identity) = masks();
        let plan = plan_extra_keys(
            &frame,
            &identity,
            &[m(0, 1), m(1, 3)],
            Some(&identity),
            BOTH,
        )
        .unwrap();
        let mask = additive_mask(&plan, &frame, 1, 4, &Device::Cpu).unwrap();
        let rows = mask.to_vec2::<f32>().unwrap();
        let inf = f32::NEG_INFINITY;
        assert_eq!(rows[0], vec![inf, inf, inf]); // text
        assert_eq!(rows[1], vec![0.0, 0.0, inf]); // fg image token 0
        assert_eq!(rows[2], vec![0.0, 0.0, inf]); // fg image token 1
        assert_eq!(rows[3], vec![inf, inf, 0.0]); // bg image token 2
        assert_eq!(rows[4], vec![inf, inf, 0.0]); // bg image token 3
    }

    #[test]
    fn softmax_gives_zero_probability_to_hidden_extra_keys() {
        // Scores of 5 queries (1 text + 4 image) on 2 own keys and 3 extra keys, all finite
        // and large so a leak would show; the mask is added to the extra columns only.
        let (frame, identity) = masks();
        let plan = plan_extra_keys(
            &frame,
            &identity,
            &[m(0, 1), m(1, 3)],
            Some(&identity),
            BOTH,
        )
        .unwrap();
        let dev = Device::Cpu;
        let own =
            Tensor::from_vec((0..10).map(|v| v as f32 * 0.1).collect(), (5, 2), &dev).unwrap();
        let extra = Tensor::from_vec(vec![3.0f32; 15], (5, 3), &dev).unwrap();
        let mask = additive_mask(&plan, &frame, 1, 4, &dev).unwrap();
        let scores = Tensor::cat(&[&own, &(extra + mask).unwrap()], 1).unwrap();
        let p = candle_nn::ops::softmax(&scores, D::Minus1)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // Text query: exactly 0 on every extra key; its own keys share everything.
        assert_eq!(&p[0][2..], &[0.0, 0.0, 0.0]);
        assert!((p[0][0] + p[0][1] - 1.0).abs() < 1e-6);
        // Foreground queries: exactly 0 on the extra background key, > 0 on fg keys.
        for q in [1, 2] {
            assert_eq!(p[q][4], 0.0);
            assert!(p[q][2] > 0.0 && p[q][3] > 0.0);
        }
        // Background queries: exactly 0 on the extra foreground keys.
        for q in [3, 4] {
            assert_eq!(&p[q][2..4], &[0.0, 0.0]);
            assert!(p[q][4] > 0.0);
        }
        assert!(p.iter().flatten().all(|v| v.is_finite()));
    }

    #[test]
    fn mask_checks_the_frame_size() {
        let (frame, _) = masks();
        assert!(additive_mask(&ExtraKeyPlan::default(), &frame, 1, 5, &Device::Cpu).is_err());
    }
}
