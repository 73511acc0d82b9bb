//! Selective text-embedding modification (STM), ASemConsist sec. 3.2, eqs. (1)-(3).
//!
//! Both stages share one shape: decompose the embedding to modify and a reference embedding,
//! build the reference vector `sum sigma_i v_i` (eq. 1), compare each right singular vector of
//! the modified embedding with it, take the mean cosine as threshold, rescale the singular
//! values on one side of the threshold and rebuild `U diag(sigma') V^T`.

use faer::{Mat, MatRef};
use serde::{Deserialize, Serialize};

use super::AsemError;
use super::linalg::{ThinSvd, cosine, mean_row};
use super::schedule::{PAPER_STM_BLOCKS, PAPER_STM_STEPS, StepWindow};

/// Parameters of a singular-value rescaling `sigma <- beta * exp(+-alpha * sigma) * sigma`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScaleParams {
    pub alpha: f64,
    pub beta: f64,
}

impl ScaleParams {
    /// `alpha = 0, beta = 1`: the rescaling is the identity, so the stage is skipped and its
    /// input returned untouched (bit for bit).
    pub fn is_identity(self) -> bool {
        self.alpha == 0.0 && self.beta == 1.0
    }

    /// `U_exp(sigma) = beta * exp(alpha * sigma) * sigma`, eq. (2).
    pub fn amplify(self, sigma: f64) -> f64 {
        self.beta * (self.alpha * sigma).exp() * sigma
    }

    /// `D_sup(sigma) = beta' * exp(-alpha' * sigma) * sigma`, eq. (3).
    pub fn downscale(self, sigma: f64) -> f64 {
        self.beta * (-self.alpha * sigma).exp() * sigma
    }
}

/// Which rows the first `L_exp` padding rows join when PAD is on (sec. 3.3: "we use only the
/// first L_exp padding embeddings ... concatenated with e_exp").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PaddingInExpression {
    /// The padding rows extend e_exp everywhere e_exp appears: in the matrix that is
    /// rescaled and in the reference `[e_id, e_exp]` of eq. (1).
    #[default]
    ModifiedAndReference,
    /// The padding rows are rescaled with e_exp but the reference stays `[e_id, e_exp]`.
    ModifiedOnly,
    /// The padding rows are not used by the expression stage.
    Off,
}

pub const PADDING_IN_EXPRESSION_HELP: &str = "With PAD on, how the first L_exp padding rows take \
part in selective expression. Default: they extend e_exp both in the rescaled matrix and in the \
reference [e_id, e_exp], because sec. 3.3 says they are concatenated with e_exp and eq. (1) is \
defined on e_exp. The paper does not say whether the reference includes them.";

/// The anchor that fixes the sign of every singular vector before cosines are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SignAnchor {
    /// Mean row of the embedding being modified (e_exp, or e_sup in the suppression stage).
    #[default]
    ModifiedMean,
    /// Mean row of the reference embedding ([e_id, e_exp], or e_id).
    ReferenceMean,
}

pub const SIGN_ANCHOR_HELP: &str = "Singular vectors have arbitrary signs; both matrices' \
vectors are turned to point along one anchor before cosines are compared, otherwise the \
selection would be random. Default: the mean row of the embedding being modified (the paper \
aligns to the weighted mean of e_exp; the mean row is U S V^T averaged over tokens, a sigma-weighted \
mix of the singular vectors). Vectors orthogonal to the anchor fall back to the Bro-Acar-Kolda \
data-energy sign.";

/// Settings of STM. Defaults are the paper's (appendix B.3) where it publishes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StmSettings {
    pub enabled: bool,
    /// Selective expression, eq. (2): `sigma <- beta * exp(alpha * sigma) * sigma` where the
    /// cosine is above the threshold. Paper: alpha_exp = 0.025, beta_exp = 1.0.
    pub expression: ScaleParams,
    /// Selective suppression, eq. (3): `sigma <- beta' * exp(-alpha' * sigma) * sigma` where
    /// the cosine is below the threshold. Paper: alpha_sup = -0.01, beta_sup = 0.05.
    pub suppression: ScaleParams,
    /// Also apply selective expression to the expression prompt's text q/k/v projections
    /// inside the transformer (appendix B.3, "before head reshape").
    pub in_transformer: bool,
    /// Blocks for the in-transformer STM, numbered over all 57 FLUX.1 blocks (double first);
    /// scaled to other depths by [`super::schedule::scale_blocks`].
    pub transformer_blocks: Vec<usize>,
    /// Steps for the in-transformer STM, as numbered in the paper.
    pub transformer_steps: StepWindow,
    /// Which of q, k, v the in-transformer STM rewrites.
    pub transformer_projections: QkvSelection,
    pub padding_in_expression: PaddingInExpression,
    pub sign_anchor: SignAnchor,
    /// Components with `sigma <= rank_tolerance * sigma_max` are left out of the threshold
    /// mean and never rescaled.
    pub rank_tolerance: f64,
}

pub const EXPRESSION_HELP: &str = "Selective expression, eq. (2): singular values of the frame's \
own embedding whose direction agrees with identity+frame more than average are scaled by \
beta*exp(alpha*sigma). Paper: alpha 0.025, beta 1.0. alpha 0 and beta 1 switch it off.";
pub const SUPPRESSION_HELP: &str = "Selective suppression, eq. (3): singular values of the other \
frames' embeddings whose direction agrees with the identity less than average are scaled by \
beta'*exp(-alpha'*sigma). Paper: alpha' -0.01, beta' 0.05. alpha' 0 and beta' 1 switch it off.";
pub const IN_TRANSFORMER_HELP: &str = "Also apply selective expression to the expression \
prompt's text q/k/v inside blocks 25, 28, 53, 54, 56 of 57 at steps 7..11 of 28 (appendix B.3), \
before the head reshape; windows are scaled to other models and step counts.";
pub const TRANSFORMER_PROJECTIONS_HELP: &str = "Which projections the in-transformer STM rewrites. \
Default: q, k and v, as the paper applies it to the text features of the attention module. The \
per-head RMSNorm of q and k removes a uniform scaling but not this selective one.";
pub const RANK_TOLERANCE_HELP: &str = "Singular values below this fraction of the largest are \
treated as zero: their singular vectors are arbitrary, so they are kept out of the mean-cosine \
threshold. Default 1e-9 (only numerically rank-deficient inputs are affected).";

/// Which of the q, k, v projections a transformer-level modification touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QkvSelection {
    pub q: bool,
    pub k: bool,
    pub v: bool,
}

impl Default for StmSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            expression: ScaleParams {
                alpha: 0.025,
                beta: 1.0,
            },
            suppression: ScaleParams {
                alpha: -0.01,
                beta: 0.05,
            },
            in_transformer: true,
            transformer_blocks: PAPER_STM_BLOCKS.to_vec(),
            transformer_steps: PAPER_STM_STEPS,
            transformer_projections: QkvSelection {
                q: true,
                k: true,
                v: true,
            },
            padding_in_expression: PaddingInExpression::default(),
            sign_anchor: SignAnchor::default(),
            rank_tolerance: 1e-9,
        }
    }
}

impl StmSettings {
    /// (field name, tooltip) pairs for the settings UI.
    pub fn help() -> &'static [(&'static str, &'static str)] {
        &[
            ("expression", EXPRESSION_HELP),
            ("suppression", SUPPRESSION_HELP),
            ("in_transformer", IN_TRANSFORMER_HELP),
            ("transformer_projections", TRANSFORMER_PROJECTIONS_HELP),
            ("padding_in_expression", PADDING_IN_EXPRESSION_HELP),
            ("sign_anchor", SIGN_ANCHOR_HELP),
            ("rank_tolerance", RANK_TOLERANCE_HELP),
        ]
    }

    /// The anchor vector for one stage.
    pub fn anchor(&self, modified: MatRef<'_, f64>, reference: MatRef<'_, f64>) -> Vec<f64> {
        match self.sign_anchor {
            SignAnchor::ModifiedMean => mean_row(modified),
            SignAnchor::ReferenceMean => mean_row(reference),
        }
    }
}

/// Which side of the threshold is rescaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `cos > zeta` (selective expression).
    Above,
    /// `cos < zeta` (selective suppression).
    Below,
}

/// What a stage selected and did, for tests and for display.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// `cos(v_i, v_ref)` per component of the modified embedding (after orientation).
    pub cosines: Vec<f64>,
    /// The mean-cosine threshold zeta.
    pub threshold: f64,
    /// Indices (into the sorted singular values) that were rescaled.
    pub selected: Vec<usize>,
    pub sigma_before: Vec<f64>,
    pub sigma_after: Vec<f64>,
}

/// A modified embedding and, when the stage ran, its selection.
#[derive(Debug, Clone)]
pub struct StmOutcome {
    pub embedding: Mat<f64>,
    pub selection: Option<Selection>,
}

/// The selection rule on already decomposed and oriented matrices.
///
/// `zeta = mean_i cos(v_i, v_ref)` over the numerically non-zero components of `target`
/// (eqs. 1-2 / 3); returns the cosines, zeta and the indices on `side` of zeta.
pub fn select(
    target: &ThinSvd,
    reference: &ThinSvd,
    side: Side,
    rank_tolerance: f64,
) -> (Vec<f64>, f64, Vec<usize>) {
    // Eq. (1): v_ref = sum_i sigma_i v_i of the reference.
    let v_ref = reference.weighted_direction();
    let rank = target.numerical_rank(rank_tolerance);
    let cosines: Vec<f64> = (0..target.rank())
        .map(|i| cosine(target.right(i), &v_ref))
        .collect();
    if rank == 0 {
        return (cosines, 0.0, Vec::new());
    }
    let threshold = cosines[..rank].iter().sum::<f64>() / rank as f64;
    let selected = (0..rank)
        .filter(|&i| match side {
            Side::Above => cosines[i] > threshold,
            Side::Below => cosines[i] < threshold,
        })
        .collect();
    (cosines, threshold, selected)
}

/// Orients both decompositions against `anchor`, selects, rescales the selected singular
/// values of `target` with `rescale` and rebuilds it.
/// `target` and `reference` pair each decomposition with the rows it was computed from (used
/// by the sign fallback of [`ThinSvd::orient`]).
pub fn rescale_selected(
    (mut target, target_rows): (ThinSvd, MatRef<'_, f64>),
    (mut reference, reference_rows): (ThinSvd, MatRef<'_, f64>),
    anchor: &[f64],
    side: Side,
    rank_tolerance: f64,
    rescale: impl Fn(f64) -> f64,
) -> (Mat<f64>, Selection) {
    target.orient(anchor, target_rows);
    reference.orient(anchor, reference_rows);
    let (cosines, threshold, selected) = select(&target, &reference, side, rank_tolerance);
    let sigma_before = target.s.clone();
    let mut sigma_after = sigma_before.clone();
    for &i in &selected {
        sigma_after[i] = rescale(sigma_before[i]);
    }
    let embedding = target.reconstruct_with(&sigma_after);
    let selection = Selection {
        cosines,
        threshold,
        selected,
        sigma_before,
        sigma_after,
    };
    (embedding, selection)
}

fn check_widths(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Result<(), AsemError> {
    if a.ncols() != b.ncols() {
        return Err(AsemError::Shape(format!(
            "embedding widths differ: {} vs {}",
            a.ncols(),
            b.ncols()
        )));
    }
    Ok(())
}

/// Selective expression (eqs. 1-2): amplifies the components of `e_exp` whose right singular
/// vector is closer than average to the reference vector of `e_ref` (= `[e_id, e_exp]`).
pub fn selective_expression(
    e_exp: MatRef<'_, f64>,
    e_ref: MatRef<'_, f64>,
    anchor: &[f64],
    params: ScaleParams,
    rank_tolerance: f64,
) -> Result<StmOutcome, AsemError> {
    check_widths(e_exp, e_ref)?;
    if params.is_identity() || e_exp.nrows() == 0 || e_ref.nrows() == 0 {
        return Ok(StmOutcome {
            embedding: e_exp.to_owned(),
            selection: None,
        });
    }
    let (embedding, selection) = rescale_selected(
        (ThinSvd::new(e_exp)?, e_exp),
        (ThinSvd::new(e_ref)?, e_ref),
        anchor,
        Side::Above,
        rank_tolerance,
        |s| params.amplify(s),
    );
    Ok(StmOutcome {
        embedding,
        selection: Some(selection),
    })
}

/// Selective suppression (eq. 3): downscales the components of `e_sup` whose right singular
/// vector is further than average from the reference vector of `e_id`.
pub fn selective_suppression(
    e_sup: MatRef<'_, f64>,
    e_id: MatRef<'_, f64>,
    anchor: &[f64],
    params: ScaleParams,
    rank_tolerance: f64,
) -> Result<StmOutcome, AsemError> {
    check_widths(e_sup, e_id)?;
    if params.is_identity() || e_sup.nrows() == 0 || e_id.nrows() == 0 {
        return Ok(StmOutcome {
            embedding: e_sup.to_owned(),
            selection: None,
        });
    }
    let (embedding, selection) = rescale_selected(
        (ThinSvd::new(e_sup)?, e_sup),
        (ThinSvd::new(e_id)?, e_id),
        anchor,
        Side::Below,
        rank_tolerance,
        |s| params.downscale(s),
    );
    Ok(StmOutcome {
        embedding,
        selection: Some(selection),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consistency::asemconsist::linalg::vstack;

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

    /// A hand-made case whose SVDs are read off:
    /// e_exp = [[4,0,0,0],[0,3,0,0],[0,0,0,2]] (3x4): sigma = (4,3,2), v = e1, e2, e4.
    /// e_id  = [[2,1,0,0],[0,0,1,0]]: its rows are orthogonal, so sigma = (sqrt5, 1) with
    ///         v = (2,1,0,0)/sqrt5 and e3.
    fn hand_case() -> (Mat<f64>, Mat<f64>) {
        let e_exp = mat(&[
            &[4.0, 0.0, 0.0, 0.0],
            &[0.0, 3.0, 0.0, 0.0],
            &[0.0, 0.0, 0.0, 2.0],
        ]);
        let e_id = mat(&[&[2.0, 1.0, 0.0, 0.0], &[0.0, 0.0, 1.0, 0.0]]);
        (e_exp, e_id)
    }

    #[test]
    fn unchanged_sigmas_reconstruct_the_input() {
        let (e_exp, e_id) = hand_case();
        let e_ref = vstack(e_id.as_ref(), e_exp.as_ref());
        let anchor = mean_row(e_exp.as_ref());
        let (rebuilt, selection) = rescale_selected(
            (ThinSvd::new(e_exp.as_ref()).unwrap(), e_exp.as_ref()),
            (ThinSvd::new(e_ref.as_ref()).unwrap(), e_ref.as_ref()),
            &anchor,
            Side::Above,
            1e-9,
            |s| s,
        );
        assert_eq!(selection.sigma_after, selection.sigma_before);
        assert!(max_abs_diff(rebuilt.as_ref(), e_exp.as_ref()) <= 1e-5);
    }

    #[test]
    fn expression_selects_and_amplifies_as_computed_by_hand() {
        let (e_exp, e_id) = hand_case();
        // Reference R = [e_id; e_exp] = rows (2,1,0,0), (0,0,1,0), (4,0,0,0), (0,3,0,0), (0,0,0,2).
        // Its Gram matrix R^T R = [[20,2,0,0],[2,10,0,0],[0,0,1,0],[0,0,0,4]], so the right
        // singular vectors are the eigenvectors, sigma = sqrt(eigenvalue):
        //   block [[20,2],[2,10]]: lambda = 15 +- sqrt(29) = 20.385, 9.615 with eigenvector
        //   (2, lambda - 20); then e3 (lambda 1) and e4 (lambda 4).
        // Computed here in closed form, independently of the SVD routine.
        let disc = 29.0_f64.sqrt();
        let (l1, l2) = (15.0 + disc, 15.0 - disc);
        let unit = |x: f64, y: f64| {
            let n = (x * x + y * y).sqrt();
            (x / n, y / n)
        };
        // Anchor = mean row of e_exp = (4/3, 1, 0, 2/3).
        let anchor = [4.0 / 3.0, 1.0, 0.0, 2.0 / 3.0];
        let orient = |(x, y): (f64, f64)| {
            if x * anchor[0] + y * anchor[1] < 0.0 {
                (-x, -y)
            } else {
                (x, y)
            }
        };
        let w1 = orient(unit(2.0, l1 - 20.0));
        let w2 = orient(unit(2.0, l2 - 20.0));
        // w1 = (0.982, 0.189), w2 = (-0.189, 0.982) after orientation.
        // v_ref = sqrt(l1) w1 + sqrt(l2) w2 + 1*e3 + 2*e4 = (3.847, 3.899, 1, 2): e3 has a zero
        // anchor product; the reference's data energy along it is +1, so it stays +e3.
        let v_ref = [
            l1.sqrt() * w1.0 + l2.sqrt() * w2.0,
            l1.sqrt() * w1.1 + l2.sqrt() * w2.1,
            1.0,
            2.0,
        ];
        let n = v_ref.iter().map(|x| x * x).sum::<f64>().sqrt();
        // e_exp's v are e1, e2, e4 (all along the anchor): cosines are v_ref[0]/n, v_ref[1]/n,
        // v_ref[3]/n = (0.650, 0.659, 0.338), zeta = 0.549.
        let expected_cos = [v_ref[0] / n, v_ref[1] / n, v_ref[3] / n];
        let zeta = expected_cos.iter().sum::<f64>() / 3.0;

        let e_ref = vstack(e_id.as_ref(), e_exp.as_ref());
        let params = ScaleParams {
            alpha: 0.025,
            beta: 1.0,
        };
        let out =
            selective_expression(e_exp.as_ref(), e_ref.as_ref(), &anchor, params, 1e-9).unwrap();
        let sel = out.selection.unwrap();
        for (got, want) in sel.cosines.iter().zip(expected_cos) {
            assert!((got - want).abs() < 1e-9, "{sel:?}");
        }
        assert!((sel.threshold - zeta).abs() < 1e-9);
        let expected_selected: Vec<usize> = (0..3).filter(|&k| expected_cos[k] > zeta).collect();
        assert_eq!(sel.selected, expected_selected);
        // sigma 4 and 3 (cosines 0.650, 0.659 > 0.549) are amplified, sigma 2 is not.
        assert_eq!(sel.selected, vec![0, 1]);
        // 4 -> 1.0 * exp(0.025 * 4) * 4 = 4 e^0.1 = 4.4207; 3 -> 3 e^0.075 = 3.2337.
        assert!((sel.sigma_after[0] - 4.0 * 0.1_f64.exp()).abs() < 1e-12);
        assert!((sel.sigma_after[1] - 3.0 * 0.075_f64.exp()).abs() < 1e-12);
        assert_eq!(sel.sigma_after[2], 2.0);
        // Rebuilt: rows 0 and 1 grow (row k is sigma_k u_k v_k^T here).
        let expected = mat(&[
            &[4.0 * 0.1_f64.exp(), 0.0, 0.0, 0.0],
            &[0.0, 3.0 * 0.075_f64.exp(), 0.0, 0.0],
            &[0.0, 0.0, 0.0, 2.0],
        ]);
        assert!(max_abs_diff(out.embedding.as_ref(), expected.as_ref()) < 1e-12);
    }

    #[test]
    fn suppression_selects_and_downscales_as_computed_by_hand() {
        // e_sup = [[0,0,3,0],[1,0,0,0]]: sigma = (3, 1), v = e3, e1.
        // e_id  = [[2,1,0,0],[0,0,1,0]]: v_ref = 2*e1 + 1*e2 + e3 (row0 ⟂ row1, so
        //   sigma_1 v_1 = (2,1,0,0) and sigma_2 v_2 = (0,0,1,0)); |v_ref| = sqrt(6).
        // Anchor = mean of e_sup = (0.5, 0, 1.5, 0): e3 and e1 stay positive.
        // cos(e3, v_ref) = 1/sqrt6 = 0.408, cos(e1, v_ref) = 2/sqrt6 = 0.816, zeta = 0.612.
        // Below zeta: component 0 (sigma 3) -> 0.05 * exp(0.01 * 3) * 3 = 0.15 e^0.03.
        let e_sup = mat(&[&[0.0, 0.0, 3.0, 0.0], &[1.0, 0.0, 0.0, 0.0]]);
        let e_id = mat(&[&[2.0, 1.0, 0.0, 0.0], &[0.0, 0.0, 1.0, 0.0]]);
        let params = ScaleParams {
            alpha: -0.01,
            beta: 0.05,
        };
        let anchor = mean_row(e_sup.as_ref());
        let out =
            selective_suppression(e_sup.as_ref(), e_id.as_ref(), &anchor, params, 1e-9).unwrap();
        let sel = out.selection.unwrap();
        let s6 = 6.0_f64.sqrt();
        assert!((sel.cosines[0] - 1.0 / s6).abs() < 1e-12);
        assert!((sel.cosines[1] - 2.0 / s6).abs() < 1e-12);
        assert!((sel.threshold - 1.5 / s6).abs() < 1e-12);
        assert_eq!(sel.selected, vec![0]);
        let shrunk = 0.05 * 0.03_f64.exp() * 3.0;
        assert!((sel.sigma_after[0] - shrunk).abs() < 1e-12);
        let expected = mat(&[&[0.0, 0.0, shrunk, 0.0], &[1.0, 0.0, 0.0, 0.0]]);
        assert!(max_abs_diff(out.embedding.as_ref(), expected.as_ref()) < 1e-12);
    }

    #[test]
    fn flipped_singular_vectors_select_the_same_components() {
        let e_exp = mat(&[
            &[0.9, -0.2, 0.4, 0.1, 0.0],
            &[0.1, 0.8, -0.3, 0.2, 0.5],
            &[-0.4, 0.3, 0.7, -0.6, 0.2],
        ]);
        let e_id = mat(&[&[0.5, 0.5, 0.1, -0.2, 0.3], &[0.2, -0.1, 0.9, 0.4, -0.3]]);
        let e_ref = vstack(e_id.as_ref(), e_exp.as_ref());
        let anchor = mean_row(e_exp.as_ref());
        let run = |flip_target: &[usize], flip_reference: &[usize]| {
            let mut t = ThinSvd::new(e_exp.as_ref()).unwrap();
            let mut r = ThinSvd::new(e_ref.as_ref()).unwrap();
            for &i in flip_target {
                t.flip(i);
            }
            for &i in flip_reference {
                r.flip(i);
            }
            rescale_selected(
                (t, e_exp.as_ref()),
                (r, e_ref.as_ref()),
                &anchor,
                Side::Above,
                1e-9,
                |s| 2.0 * s,
            )
        };
        let (base_m, base) = run(&[], &[]);
        for (ft, fr) in [
            (&[0usize][..], &[][..]),
            (&[1, 2], &[0, 3]),
            (&[0, 1, 2], &[0, 1, 2, 3, 4]),
        ] {
            let (m, sel) = run(ft, fr);
            assert_eq!(sel.selected, base.selected);
            assert!((sel.threshold - base.threshold).abs() < 1e-12);
            assert!(max_abs_diff(m.as_ref(), base_m.as_ref()) < 1e-12);
        }
    }

    #[test]
    fn identity_parameters_return_the_input_bit_for_bit() {
        let (e_exp, e_id) = hand_case();
        let anchor = mean_row(e_exp.as_ref());
        let off = ScaleParams {
            alpha: 0.0,
            beta: 1.0,
        };
        let out = selective_expression(e_exp.as_ref(), e_id.as_ref(), &anchor, off, 1e-9).unwrap();
        assert!(out.selection.is_none());
        assert_eq!(out.embedding, e_exp);
        let out = selective_suppression(e_exp.as_ref(), e_id.as_ref(), &anchor, off, 1e-9).unwrap();
        assert!(out.selection.is_none());
        assert_eq!(out.embedding, e_exp);
    }

    #[test]
    fn rank_deficient_components_are_left_out_of_the_threshold() {
        // Two equal rows: rank 1, the second singular vector is arbitrary and must not count.
        let e = mat(&[&[1.0, 2.0, 0.0], &[1.0, 2.0, 0.0]]);
        let e_id = mat(&[&[0.0, 1.0, 1.0]]);
        let anchor = mean_row(e.as_ref());
        let params = ScaleParams {
            alpha: 0.0,
            beta: 2.0,
        };
        let out = selective_suppression(e.as_ref(), e_id.as_ref(), &anchor, params, 1e-9).unwrap();
        let sel = out.selection.unwrap();
        // One component: its cosine is the mean, nothing is strictly below it.
        assert!((sel.threshold - sel.cosines[0]).abs() < 1e-15);
        assert!(sel.selected.is_empty());
        assert!(max_abs_diff(out.embedding.as_ref(), e.as_ref()) < 1e-12);
    }

    #[test]
    fn paper_defaults() {
        let s = StmSettings::default();
        assert_eq!((s.expression.alpha, s.expression.beta), (0.025, 1.0));
        assert_eq!((s.suppression.alpha, s.suppression.beta), (-0.01, 0.05));
        assert_eq!(s.transformer_blocks, vec![25, 28, 53, 54, 56]);
        assert!(StmSettings::help().iter().all(|(_, h)| !h.is_empty()));
    }
}
