//! Semantic projection on padding embeddings (PAD), ASemConsist sec. 3.3, eqs. (4)-(6).
//!
//! `P_i = e_i^T (e_i e_i^T)^+ e_i` is the orthogonal projector onto the row space of `e_i`.
//! With `e_i = U S V^T` (thin SVD, non-zero sigmas only) it equals `V V^T`, so `e_pad P_i` is
//! computed as `(e_pad V) V^T`: two `L x d x r` products instead of a `d x d` matrix
//! (d = 4096 would mean 128 MiB per projector in f64).

use faer::{Mat, MatRef};
use serde::{Deserialize, Serialize};

use super::AsemError;
use super::linalg::{project_rows, row_space_basis};

/// Settings of PAD.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PadSettings {
    pub enabled: bool,
    /// Weight of eqs. (4)-(5). Not published.
    pub gamma: f64,
    pub suppression: PadSuppression,
    /// Singular values below this fraction of the largest do not span the row space (the
    /// cut-off of the pseudo-inverse).
    pub rank_tolerance: f64,
}

/// How eq. (5) treats several suppression embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PadSuppression {
    /// One projector onto the row space of all suppression embeddings stacked: every
    /// direction any other frame uses is removed once, by gamma, whatever the frame order.
    #[default]
    Joint,
    /// Eq. (5) applied once per suppression embedding, in frame order; directions shared by
    /// several frames are removed several times.
    Sequential,
}

pub const GAMMA_HELP: &str = "PAD weight gamma of eqs. (4)-(5) (not published). Default 0.5: the \
padding rows become half their own content and half their projection onto the frame's own \
embedding, then lose half of what lies in the other frames' embeddings - a middle value, so the \
padding keeps some of its own signal, which the paper finds mostly but not only 'dummy' (appendix D). \
0 switches PAD off.";
pub const PAD_SUPPRESSION_HELP: &str = "How the other frames' embeddings are removed from the \
padding (eq. 5, not published for several frames). Default: joint - one projection onto the span \
of all of them, so shared directions are removed once and frame order does not matter.";
pub const PAD_RANK_TOLERANCE_HELP: &str = "Singular values below this fraction of the largest are \
treated as zero in the pseudo-inverse of eq. (6). Default 1e-9.";

impl Default for PadSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            gamma: 0.5,
            suppression: PadSuppression::default(),
            rank_tolerance: 1e-9,
        }
    }
}

impl PadSettings {
    pub fn help() -> &'static [(&'static str, &'static str)] {
        &[
            ("gamma", GAMMA_HELP),
            ("suppression", PAD_SUPPRESSION_HELP),
            ("rank_tolerance", PAD_RANK_TOLERANCE_HELP),
        ]
    }

    /// Whether PAD changes anything: off, or gamma = 0, returns the padding untouched.
    pub fn is_active(&self) -> bool {
        self.enabled && self.gamma != 0.0
    }
}

/// `P = e^T (e e^T)^+ e` formed explicitly (`d x d`), eq. (6). For small sizes and tests; the
/// pipeline uses [`project_onto`].
pub fn projector_pseudo_inverse(e: MatRef<'_, f64>) -> Mat<f64> {
    let gram = e * e.transpose();
    let gram_pinv = gram
        .thin_svd()
        .map(|svd| svd.pseudoinverse())
        .unwrap_or_else(|_| Mat::zeros(e.nrows(), e.nrows()));
    let left = e.transpose() * &gram_pinv;
    &left * e
}

/// `x P_e` computed through the row-space basis of `e` (eq. 6, transposed form
/// `(P^T x^T)^T = x P` since `P` is symmetric).
pub fn project_onto(
    x: MatRef<'_, f64>,
    e: MatRef<'_, f64>,
    rank_tolerance: f64,
) -> Result<Mat<f64>, AsemError> {
    let basis = row_space_basis(e, rank_tolerance)?;
    Ok(project_rows(x, basis.as_ref()))
}

/// Eqs. (4)-(5): `e_pad <- (1 - gamma) e_pad + gamma e_pad P_exp`, then
/// `e_pad <- e_pad - gamma e_pad P_sup`. Returns the input unchanged when PAD is inactive.
pub fn project_padding(
    e_pad: MatRef<'_, f64>,
    e_exp: MatRef<'_, f64>,
    e_sups: &[MatRef<'_, f64>],
    settings: &PadSettings,
) -> Result<Mat<f64>, AsemError> {
    if !settings.is_active() || e_pad.nrows() == 0 {
        return Ok(e_pad.to_owned());
    }
    for e in std::iter::once(&e_exp).chain(e_sups) {
        if e.ncols() != e_pad.ncols() {
            return Err(AsemError::Shape(format!(
                "padding width {} differs from embedding width {}",
                e_pad.ncols(),
                e.ncols()
            )));
        }
    }
    let gamma = settings.gamma;
    let tol = settings.rank_tolerance;
    // Eq. (4).
    let along_exp = project_onto(e_pad, e_exp, tol)?;
    let mut pad = Mat::from_fn(e_pad.nrows(), e_pad.ncols(), |i, j| {
        (1.0 - gamma) * e_pad[(i, j)] + gamma * along_exp[(i, j)]
    });
    // Eq. (5).
    let sups: Vec<MatRef<'_, f64>> = e_sups.iter().copied().filter(|e| e.nrows() > 0).collect();
    if sups.is_empty() {
        return Ok(pad);
    }
    match settings.suppression {
        PadSuppression::Joint => {
            let total: usize = sups.iter().map(|e| e.nrows()).sum();
            let mut stacked = Mat::zeros(total, e_pad.ncols());
            let mut row = 0;
            for e in &sups {
                for i in 0..e.nrows() {
                    for j in 0..e.ncols() {
                        stacked[(row, j)] = e[(i, j)];
                    }
                    row += 1;
                }
            }
            subtract_projection(&mut pad, stacked.as_ref(), gamma, tol)?;
        }
        PadSuppression::Sequential => {
            for e in sups {
                subtract_projection(&mut pad, e, gamma, tol)?;
            }
        }
    }
    Ok(pad)
}

fn subtract_projection(
    pad: &mut Mat<f64>,
    e_sup: MatRef<'_, f64>,
    gamma: f64,
    tol: f64,
) -> Result<(), AsemError> {
    let along_sup = project_onto(pad.as_ref(), e_sup, tol)?;
    for i in 0..pad.nrows() {
        for j in 0..pad.ncols() {
            pad[(i, j)] -= gamma * along_sup[(i, j)];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mat(rows: &[&[f64]]) -> Mat<f64> {
        Mat::from_fn(rows.len(), rows[0].len(), |i, j| rows[i][j])
    }

    fn max_abs_diff(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> f64 {
        let mut worst = 0.0_f64;
        for i in 0..a.nrows() {
            for j in 0..a.ncols() {
                worst = worst.max((a[(i, j)] - b[(i, j)]).abs());
            }
        }
        worst
    }

    /// Deterministic pseudo-random matrix (a small LCG) so tests need no rng crate.
    fn lcg_mat(rows: usize, cols: usize, seed: u64) -> Mat<f64> {
        let mut state = seed;
        Mat::from_fn(rows, cols, |_, _| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
    }

    #[test]
    fn rows_in_the_row_space_are_kept_and_orthogonal_rows_vanish() {
        let e = mat(&[&[1.0, 0.0, 1.0, 0.0], &[0.0, 2.0, 0.0, 0.0]]);
        // (3, 1, 3, 0) = 3 row0 + 0.5 row1; (1, 0, -1, 0) and (0, 0, 0, 7) are orthogonal.
        let x = mat(&[
            &[3.0, 1.0, 3.0, 0.0],
            &[1.0, 0.0, -1.0, 0.0],
            &[0.0, 0.0, 0.0, 7.0],
        ]);
        for projected in [
            project_onto(x.as_ref(), e.as_ref(), 1e-9).unwrap(),
            &x * projector_pseudo_inverse(e.as_ref()),
        ] {
            for j in 0..4 {
                assert!((projected[(0, j)] - x[(0, j)]).abs() < 1e-12);
                assert!(projected[(1, j)].abs() < 1e-12);
                assert!(projected[(2, j)].abs() < 1e-12);
            }
        }
    }

    #[test]
    fn basis_projection_agrees_with_the_pseudo_inverse_projector() {
        let e = lcg_mat(5, 12, 1);
        let x = lcg_mat(7, 12, 2);
        let fast = project_onto(x.as_ref(), e.as_ref(), 1e-9).unwrap();
        let slow = &x * projector_pseudo_inverse(e.as_ref());
        assert!(max_abs_diff(fast.as_ref(), slow.as_ref()) < 1e-10);
        // Rank-deficient: a repeated row must not change the projector.
        let mut e_dup = Mat::zeros(6, 12);
        for j in 0..12 {
            for i in 0..5 {
                e_dup[(i, j)] = e[(i, j)];
            }
            e_dup[(5, j)] = e[(0, j)];
        }
        let fast_dup = project_onto(x.as_ref(), e_dup.as_ref(), 1e-9).unwrap();
        let slow_dup = &x * projector_pseudo_inverse(e_dup.as_ref());
        assert!(max_abs_diff(fast_dup.as_ref(), fast.as_ref()) < 1e-10);
        assert!(max_abs_diff(slow_dup.as_ref(), fast.as_ref()) < 1e-8);
    }

    #[test]
    fn eqs_4_and_5_on_a_hand_example() {
        // e_exp spans e1, e_sup spans e2. Padding row (2, 4, 6):
        // eq. (4), gamma 0.5: 0.5 (2,4,6) + 0.5 (2,0,0) = (2, 2, 3);
        // eq. (5): (2,2,3) - 0.5 (0,2,0) = (2, 1, 3).
        let pad = mat(&[&[2.0, 4.0, 6.0]]);
        let e_exp = mat(&[&[5.0, 0.0, 0.0]]);
        let e_sup = mat(&[&[0.0, -3.0, 0.0]]);
        let settings = PadSettings::default();
        let out =
            project_padding(pad.as_ref(), e_exp.as_ref(), &[e_sup.as_ref()], &settings).unwrap();
        let expected = mat(&[&[2.0, 1.0, 3.0]]);
        assert!(max_abs_diff(out.as_ref(), expected.as_ref()) < 1e-12);
    }

    #[test]
    fn joint_and_sequential_suppression_differ_only_on_shared_directions() {
        // Two suppression embeddings that both contain e2: joint removes gamma of it once,
        // sequential twice ((1 - 0.5)^2 = 0.25 left).
        let pad = mat(&[&[0.0, 8.0, 0.0]]);
        let e_exp = mat(&[&[1.0, 0.0, 0.0]]);
        let s1 = mat(&[&[0.0, 1.0, 0.0]]);
        let s2 = mat(&[&[0.0, 2.0, 0.0]]);
        let joint = PadSettings::default();
        let sequential = PadSettings {
            suppression: PadSuppression::Sequential,
            ..joint
        };
        let sups = [s1.as_ref(), s2.as_ref()];
        // Eq. (4) first: 0.5 * (0,8,0) + 0.5 * 0 = (0,4,0).
        let j = project_padding(pad.as_ref(), e_exp.as_ref(), &sups, &joint).unwrap();
        let s = project_padding(pad.as_ref(), e_exp.as_ref(), &sups, &sequential).unwrap();
        assert!((j[(0, 1)] - 2.0).abs() < 1e-12);
        assert!((s[(0, 1)] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn gamma_zero_returns_the_input_bit_for_bit() {
        let pad = lcg_mat(4, 6, 3);
        let e_exp = lcg_mat(2, 6, 4);
        let e_sup = lcg_mat(2, 6, 5);
        let settings = PadSettings {
            gamma: 0.0,
            ..PadSettings::default()
        };
        let out =
            project_padding(pad.as_ref(), e_exp.as_ref(), &[e_sup.as_ref()], &settings).unwrap();
        assert_eq!(out, pad);
    }
}
