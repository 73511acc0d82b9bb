//! Adaptive token merge (CharaConsist eqs. 18-20) and row gathering.

use candle_core::{DType, Tensor};

use super::CharaConsistError;
use super::matching::Match;

/// Rows `idx` of `t` along dimension 0 (eqs. 12, 18: `X[C]`).
pub fn gather_rows(t: &Tensor, idx: &[u32]) -> Result<Tensor, CharaConsistError> {
    gather_along(t, 0, idx)
}

/// Entries `idx` of `t` along `dim` (for example the token axis 1 of `[H, N, D]` keys).
pub fn gather_along(t: &Tensor, dim: usize, idx: &[u32]) -> Result<Tensor, CharaConsistError> {
    let n = t.dim(dim)?;
    if let Some(&bad) = idx.iter().find(|&&i| i as usize >= n) {
        return Err(CharaConsistError::TokenOutOfRange { token: bad, len: n });
    }
    let ids = Tensor::from_slice(idx, idx.len(), t.device())?;
    Ok(t.index_select(&ids, dim)?)
}

/// Eq. (20) on the matched foreground tokens of one frame:
/// `H = (1 - a·S)·H_frame + a·S·H_identity[match]`, with `S` the match's similarity.
/// `h_frame` is `[n_frame, C]`, `h_identity` is `[n_identity, C]`; rows of unmatched tokens
/// are returned bit for bit, and `alpha = 0` (or no match) returns the input itself.
/// Matches must name each frame token at most once (as [`super::matching::match_points`]
/// gives them).
pub fn token_merge(
    h_frame: &Tensor,
    h_identity: &Tensor,
    matches: &[Match],
    alpha: f32,
) -> Result<Tensor, CharaConsistError> {
    let (n_frame, c) = h_frame.dims2()?;
    let (n_identity, c_id) = h_identity.dims2()?;
    if c != c_id {
        return Err(CharaConsistError::Shape {
            what: "identity attention output",
            expected: format!("{c} channels as the frame's"),
            got: format!("{c_id}"),
        });
    }
    if alpha == 0.0 || matches.is_empty() {
        return Ok(h_frame.clone());
    }
    let mut source = vec![0u32; n_frame];
    let mut weight = vec![0f32; n_frame];
    let mut merged = vec![0u8; n_frame];
    for m in matches {
        let frame_token = m.frame_token as usize;
        if frame_token >= n_frame {
            return Err(CharaConsistError::TokenOutOfRange {
                token: m.frame_token,
                len: n_frame,
            });
        }
        if m.identity_token as usize >= n_identity {
            return Err(CharaConsistError::TokenOutOfRange {
                token: m.identity_token,
                len: n_identity,
            });
        }
        source[frame_token] = m.identity_token;
        weight[frame_token] = alpha * m.similarity;
        merged[frame_token] = 1;
    }
    let device = h_frame.device();
    let dtype = h_frame.dtype();
    // Computed in f32 whatever the activations' dtype, then cast back.
    let frame = h_frame.to_dtype(DType::F32)?;
    let identity = gather_rows(&h_identity.to_dtype(DType::F32)?, &source)?;
    let w = Tensor::from_vec(weight, (n_frame, 1), device)?;
    let keep = (1.0 - &w)?;
    let blended = (frame.broadcast_mul(&keep)? + identity.broadcast_mul(&w)?)?.to_dtype(dtype)?;
    // Select instead of blending everywhere so unmatched rows stay bit-identical.
    let mask = Tensor::from_vec(merged, (n_frame, 1), device)?.broadcast_as((n_frame, c))?;
    Ok(mask.where_cond(&blended, h_frame)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn frame() -> Tensor {
        Tensor::from_vec(
            vec![1.0f32, 2.0, -0.0, 4.0, 10.0, 20.0],
            (3, 2),
            &Device::Cpu,
        )
        .unwrap()
    }

    fn identity() -> Tensor {
        Tensor::from_vec(vec![100.0f32, 200.0, 0.0, -2.0], (2, 2), &Device::Cpu).unwrap()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    #[test]
    fn three_token_merge_hand_checked() {
        // Frame token 0 <- identity 1 with S = 0.5; frame token 2 <- identity 0 with S = 1.
        // alpha = 0.4 (step 21 of the default schedule is 0.4):
        //   token 0: w = 0.4·0.5 = 0.2 -> 0.8·(1, 2) + 0.2·(0, -2) = (0.8, 1.2)
        //   token 1: unmatched -> (-0, 4) unchanged
        //   token 2: w = 0.4·1 = 0.4 -> 0.6·(10, 20) + 0.4·(100, 200) = (46, 92)
        let matches = [
            Match {
                frame_token: 0,
                identity_token: 1,
                similarity: 0.5,
            },
            Match {
                frame_token: 2,
                identity_token: 0,
                similarity: 1.0,
            },
        ];
        let out = token_merge(&frame(), &identity(), &matches, 0.4).unwrap();
        let v = out.to_vec2::<f32>().unwrap();
        let expect = [[0.8f32, 1.2], [-0.0, 4.0], [46.0, 92.0]];
        for (row, want) in v.iter().zip(expect) {
            for (a, b) in row.iter().zip(want) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
        // The unmatched row keeps even the sign of its zero.
        assert_eq!(bits(&out)[2..4], bits(&frame())[2..4]);
    }

    #[test]
    fn alpha_zero_or_no_match_returns_the_input_bit_for_bit() {
        let matches = [Match {
            frame_token: 1,
            identity_token: 0,
            similarity: 0.9,
        }];
        let out = token_merge(&frame(), &identity(), &matches, 0.0).unwrap();
        assert_eq!(bits(&out), bits(&frame()));
        let out = token_merge(&frame(), &identity(), &[], 0.8).unwrap();
        assert_eq!(bits(&out), bits(&frame()));
    }

    #[test]
    fn out_of_range_tokens_are_errors() {
        let bad = [Match {
            frame_token: 0,
            identity_token: 5,
            similarity: 0.9,
        }];
        assert!(token_merge(&frame(), &identity(), &bad, 0.8).is_err());
        let bad = [Match {
            frame_token: 3,
            identity_token: 0,
            similarity: 0.9,
        }];
        assert!(token_merge(&frame(), &identity(), &bad, 0.8).is_err());
        assert!(gather_rows(&frame(), &[3]).is_err());
    }

    #[test]
    fn gather_picks_rows_and_tokens() {
        let g = gather_rows(&frame(), &[2, 0, 2]).unwrap();
        assert_eq!(
            g.to_vec2::<f32>().unwrap(),
            vec![vec![10.0, 20.0], vec![1.0, 2.0], vec![10.0, 20.0]]
        );
        // [H=1, N=3, D=2] along the token axis.
        let keys = frame().unsqueeze(0).unwrap();
        let g = gather_along(&keys, 1, &[1]).unwrap();
        assert_eq!(g.dims(), &[1, 1, 2]);
        assert_eq!(
            g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![-0.0, 4.0]
        );
    }

    #[test]
    fn merge_follows_the_alpha_schedule_step_by_step() {
        use crate::consistency::characonsist::schedule::alpha_at;
        use crate::consistency::characonsist::settings::CharaConsistSettings;
        // The 3-token frame above; token 0 <- identity 1 (S = 0.5), token 2 <- identity 0
        // (S = 1), token 1 unmatched. With a = alpha_at(step):
        //   token 0: w = a/2 -> (1 - w)·(1, 2) + w·(0, -2) = (1 - w, 2 - 4w)
        //   token 2: w = a   -> (1 - a)·(10, 20) + a·(100, 200) = (10 + 90a, 20 + 180a)
        // step 1 and 11: a = 0.8 -> (0.6, 0.4) and (82, 164)
        // step 12: a = 0.8·(1 + cos(pi/20))/2 = 0.79507534 -> w = 0.39753767:
        //   (0.60246233, 0.40984933) and (81.556780, 163.113561)
        // step 21: a = 0.4 -> (0.8, 1.2) and (46, 92)
        // step 30: a = 0.8·(1 + cos(19 pi/20))/2 = 0.00492466 -> w = 0.00246233:
        //   (0.99753767, 1.99015067) and (10.443220, 20.886440)
        // step 31: a = 0 -> the input bit for bit.
        let s = CharaConsistSettings::default();
        let matches = [
            Match {
                frame_token: 0,
                identity_token: 1,
                similarity: 0.5,
            },
            Match {
                frame_token: 2,
                identity_token: 0,
                similarity: 1.0,
            },
        ];
        let expected: [(usize, [[f32; 2]; 2]); 5] = [
            (1, [[0.6, 0.4], [82.0, 164.0]]),
            (11, [[0.6, 0.4], [82.0, 164.0]]),
            (12, [[0.602_462_3, 0.409_849_3], [81.556_78, 163.113_56]]),
            (21, [[0.8, 1.2], [46.0, 92.0]]),
            (30, [[0.997_537_7, 1.990_150_7], [10.443_22, 20.886_44]]),
        ];
        for (step, [t0, t2]) in expected {
            let out = token_merge(&frame(), &identity(), &matches, alpha_at(step, &s))
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for (got, want) in [(&out[0], t0), (&out[2], t2)] {
                for (a, b) in got.iter().zip(want) {
                    assert!((a - b).abs() < 1e-4, "step {step}: {a} vs {b}");
                }
            }
            assert_eq!(
                bits(&Tensor::new(out[1].as_slice(), &Device::Cpu).unwrap()),
                bits(&frame().get(1).unwrap())
            );
        }
        let out = token_merge(&frame(), &identity(), &matches, alpha_at(31, &s)).unwrap();
        assert_eq!(bits(&out), bits(&frame()));
    }

    #[test]
    fn a_single_match_moves_one_token_only() {
        let one = [Match {
            frame_token: 1,
            identity_token: 0,
            similarity: 0.5,
        }];
        // w = 0.8·0.5 = 0.4: 0.6·(-0, 4) + 0.4·(100, 200) = (40, 82.4).
        let out = token_merge(&frame(), &identity(), &one, 0.8).unwrap();
        let v = out.to_vec2::<f32>().unwrap();
        assert!((v[1][0] - 40.0).abs() < 1e-4 && (v[1][1] - 82.4).abs() < 1e-4);
        let b = bits(&out);
        let f = bits(&frame());
        assert_eq!((&b[0..2], &b[4..6]), (&f[0..2], &f[4..6]));
    }
}
