//! Point matching between a frame and the identity image (CharaConsist eqs. 4-5).
//!
//! Per single block, the cosine similarity of every frame image token's attention output
//! with every identity image token's; averaged over blocks (eq. 4), each frame token takes
//! the identity token of highest similarity (eq. 5). Matches are kept where both tokens are
//! foreground and the similarity exceeds the threshold.

use candle_core::{D, DType, Tensor};
use serde::{Deserialize, Serialize};

use super::CharaConsistError;
use super::mask::TokenMask;

/// A kept correspondence: frame token -> identity token, with the averaged cosine
/// similarity `S*_max` of eq. (5) (also the merge weight of eq. 20).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Match {
    pub frame_token: u32,
    pub identity_token: u32,
    pub similarity: f32,
}

/// Rows scaled to unit length; all-zero rows stay zero (similarity 0 with everything).
fn unit_rows(t: &Tensor) -> Result<Tensor, CharaConsistError> {
    let t = t.to_dtype(DType::F32)?;
    let norm = t.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    let safe = norm.clamp(f32::MIN_POSITIVE, f32::INFINITY)?;
    Ok(t.broadcast_div(&safe)?)
}

/// Cosine similarity `[n_frame, n_identity]` of the rows of `frame [n_frame, C]` and
/// `identity [n_identity, C]` (one block's term of eq. 4), in f32.
pub fn cosine_similarity(frame: &Tensor, identity: &Tensor) -> Result<Tensor, CharaConsistError> {
    let (_, c_frame) = frame.dims2()?;
    let (_, c_id) = identity.dims2()?;
    if c_frame != c_id {
        return Err(CharaConsistError::Shape {
            what: "identity attention output",
            expected: format!("{c_frame} channels as the frame's"),
            got: format!("{c_id}"),
        });
    }
    let a = unit_rows(frame)?;
    let b = unit_rows(identity)?;
    Ok(a.matmul(&b.t()?.contiguous()?)?)
}

/// The layer average of eq. (4).
#[derive(Debug, Clone, Default)]
pub struct SimilarityAccumulator {
    sum: Option<Tensor>,
    layers: usize,
}

impl SimilarityAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn layers(&self) -> usize {
        self.layers
    }

    /// Adds one block's attention outputs of the image tokens: `frame [n_frame, C]`,
    /// `identity [n_identity, C]`.
    pub fn add(&mut self, frame: &Tensor, identity: &Tensor) -> Result<(), CharaConsistError> {
        let s = cosine_similarity(frame, identity)?;
        self.sum = Some(match self.sum.take() {
            None => s,
            Some(acc) => {
                if acc.dims() != s.dims() {
                    return Err(CharaConsistError::Shape {
                        what: "similarity",
                        expected: format!("{:?} as in earlier blocks", acc.dims()),
                        got: format!("{:?}", s.dims()),
                    });
                }
                (acc + s)?
            }
        });
        self.layers += 1;
        Ok(())
    }

    /// `S*` of eq. (4): `[n_frame, n_identity]`.
    pub fn mean(&self) -> Result<Tensor, CharaConsistError> {
        match &self.sum {
            None => Err(CharaConsistError::NoLayers),
            Some(sum) => Ok((sum / self.layers as f64)?),
        }
    }
}

/// Eq. (5) plus the released code's filters: for every frame token the most similar identity
/// token; kept when the frame token is foreground, the identity token is foreground, and the
/// similarity is above `threshold`. `similarity` is `[n_frame, n_identity]` and the masks are
/// on the frame's and the identity's own grids (they may differ: tokens are matched by
/// index). Matches come out sorted by frame token, at most one per frame token.
pub fn match_points(
    similarity: &Tensor,
    frame_mask: &TokenMask,
    identity_mask: &TokenMask,
    threshold: f32,
) -> Result<Vec<Match>, CharaConsistError> {
    let (n_frame, n_identity) = similarity.dims2()?;
    if frame_mask.len() != n_frame || identity_mask.len() != n_identity {
        return Err(CharaConsistError::Shape {
            what: "masks for matching",
            expected: format!("{n_frame} frame and {n_identity} identity tokens"),
            got: format!("{} and {}", frame_mask.len(), identity_mask.len()),
        });
    }
    if n_identity == 0 || frame_mask.count() == 0 {
        return Ok(Vec::new());
    }
    let similarity = similarity.to_dtype(DType::F32)?;
    let best = similarity.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let best_value = similarity.max(D::Minus1)?.to_vec1::<f32>()?;
    Ok(best
        .into_iter()
        .zip(best_value)
        .enumerate()
        .filter(|&(frame_token, (identity_token, value))| {
            frame_mask.is_fg(frame_token)
                && identity_mask.is_fg(identity_token as usize)
                && value > threshold
        })
        .map(|(frame_token, (identity_token, value))| Match {
            frame_token: frame_token as u32,
            identity_token,
            similarity: value,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(data: Vec<f32>, rows: usize, cols: usize) -> Tensor {
        Tensor::from_vec(data, (rows, cols), &Device::Cpu).unwrap()
    }

    /// Four tokens with distinct directions in 3 channels.
    fn features() -> Tensor {
        t(
            vec![
                1.0, 0.0, 0.0, //
                0.0, 2.0, 0.0, //
                0.0, 0.0, 3.0, //
                1.0, 1.0, 0.0,
            ],
            4,
            3,
        )
    }

    #[test]
    fn identical_inputs_match_themselves() {
        let mut acc = SimilarityAccumulator::new();
        acc.add(&features(), &features()).unwrap();
        acc.add(&features(), &features()).unwrap();
        let s = acc.mean().unwrap();
        let mask = TokenMask::new(2, 2, vec![true; 4]).unwrap();
        let m = match_points(&s, &mask, &mask, 0.5).unwrap();
        assert_eq!(m.len(), 4);
        for (i, m) in m.iter().enumerate() {
            assert_eq!((m.frame_token, m.identity_token), (i as u32, i as u32));
            assert!((m.similarity - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn cosine_values_hand_checked() {
        // (1,1,0) vs (1,0,0): 1/sqrt(2) = 0.70710678; vs (0,0,3): 0; zero row: 0.
        let frame = t(vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0], 2, 3);
        let s = cosine_similarity(&frame, &features())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert!((s[0][0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert_eq!(s[0][2], 0.0);
        assert_eq!(s[1], vec![0.0; 4]);
    }

    #[test]
    fn foreground_and_threshold_filters() {
        // Frame token 0 = (1,0.2,0): best identity 0, cos = 1/sqrt(1.04) = 0.98058068.
        // Frame token 1 = (0,1,-1): best identity 1 at cos 1/sqrt(2) = 0.70710678 (identity
        // 3 gives 0.5, identity 2 gives -0.7071).
        // Frame token 2 = (0,0,1): best identity 2, but frame token 2 is background.
        // Frame token 3 = (1,1,1): best identity 3, cos = 2/sqrt(6) = 0.81649658, but
        // identity token 3 is background.
        let frame = t(
            vec![1.0, 0.2, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0],
            4,
            3,
        );
        let s = cosine_similarity(&frame, &features()).unwrap();
        let frame_mask = TokenMask::new(1, 4, vec![true, true, false, true]).unwrap();
        let id_mask = TokenMask::new(1, 4, vec![true, true, true, false]).unwrap();
        let m = match_points(&s, &frame_mask, &id_mask, 0.5).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].frame_token, m[0].identity_token), (0, 0));
        assert!((m[0].similarity - 0.980_580_7).abs() < 1e-6);
        assert_eq!((m[1].frame_token, m[1].identity_token), (1, 1));
        // A threshold of 0.75 drops the 0.7071 match: one match left.
        let one = match_points(&s, &frame_mask, &id_mask, 0.75).unwrap();
        assert_eq!(one.len(), 1);
        // Above every similarity: zero matches.
        assert!(
            match_points(&s, &frame_mask, &id_mask, 0.99)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn no_foreground_gives_no_matches() {
        let s = cosine_similarity(&features(), &features()).unwrap();
        let none = TokenMask::empty(2, 2);
        let all = TokenMask::new(2, 2, vec![true; 4]).unwrap();
        assert!(match_points(&s, &none, &all, 0.5).unwrap().is_empty());
        assert!(match_points(&s, &all, &none, 0.5).unwrap().is_empty());
    }

    #[test]
    fn frame_grid_may_differ_from_the_identity_grid() {
        // Frame 1x2 tokens, identity 2x2 tokens: indices follow each image's own grid.
        let frame = t(vec![0.0, 0.0, 3.0, 1.0, 1.0, 0.0], 2, 3);
        let s = cosine_similarity(&frame, &features()).unwrap();
        assert_eq!(s.dims(), &[2, 4]);
        let frame_mask = TokenMask::new(1, 2, vec![true, true]).unwrap();
        let id_mask = TokenMask::new(2, 2, vec![true; 4]).unwrap();
        let m = match_points(&s, &frame_mask, &id_mask, 0.5).unwrap();
        let pairs: Vec<_> = m
            .iter()
            .map(|m| (m.frame_token, m.identity_token))
            .collect();
        assert_eq!(pairs, vec![(0, 2), (1, 3)]);
        // Wrong mask sizes are an error, not a silent mismatch.
        assert!(match_points(&s, &id_mask, &frame_mask, 0.5).is_err());
    }

    #[test]
    fn matches_serialise() {
        let m = Match {
            frame_token: 3,
            identity_token: 7,
            similarity: 0.75,
        };
        let text = ron::to_string(&m).unwrap();
        assert_eq!(ron::from_str::<Match>(&text).unwrap(), m);
    }
}
