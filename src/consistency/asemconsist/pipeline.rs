//! The per-frame ASemConsist text work on a combined prompt: PAD on the padding rows, selective
//! expression of the frame's own span, selective suppression of the other frames' spans; and
//! the same selective expression on the text q/k/v projections inside the transformer.

use std::ops::Range;

use candle_core::Tensor;
use faer::{Mat, MatRef};

use super::AsemError;
use super::linalg::{gather_rows, mat_to_tensor, scatter_rows, tensor_to_mat};
use super::pad::project_padding;
use super::settings::AsemSettings;
use super::stm::{PaddingInExpression, StmSettings, selective_expression, selective_suppression};

/// Token spans of a combined prompt `[p_id, p_1, .., p_k]` followed by padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSpans {
    pub identity: Range<usize>,
    pub frames: Vec<Range<usize>>,
    pub padding: Range<usize>,
}

impl SegmentSpans {
    fn rows(range: &Range<usize>) -> Vec<usize> {
        range.clone().collect()
    }

    /// The first `len` padding rows (fewer when the padding is shorter).
    pub fn padding_prefix(&self, len: usize) -> Range<usize> {
        self.padding.start..self.padding.end.min(self.padding.start + len)
    }

    fn check(&self, rows: usize, frame: usize) -> Result<(), AsemError> {
        if frame >= self.frames.len() {
            return Err(AsemError::Shape(format!(
                "frame {frame} out of range for {} frames",
                self.frames.len()
            )));
        }
        let all = std::iter::once(&self.identity)
            .chain(&self.frames)
            .chain(std::iter::once(&self.padding));
        for r in all {
            if r.start > r.end || r.end > rows {
                return Err(AsemError::Shape(format!(
                    "span {r:?} does not fit {rows} tokens"
                )));
            }
        }
        Ok(())
    }
}

/// Selective expression on the rows of `e` belonging to frame `frame` (plus, when PAD is on,
/// the first `L_exp` padding rows, as set by [`StmSettings::padding_in_expression`]).
/// Writes the result back into `e`.
fn express_in_place(
    e: &mut Mat<f64>,
    spans: &SegmentSpans,
    frame: usize,
    stm: &StmSettings,
    pad_active: bool,
) -> Result<(), AsemError> {
    let exp_span = &spans.frames[frame];
    let mut modified_rows = SegmentSpans::rows(exp_span);
    let pad_rows = if pad_active {
        SegmentSpans::rows(&spans.padding_prefix(exp_span.len()))
    } else {
        Vec::new()
    };
    let (with_pad_modified, with_pad_reference) = match stm.padding_in_expression {
        PaddingInExpression::ModifiedAndReference => (true, true),
        PaddingInExpression::ModifiedOnly => (true, false),
        PaddingInExpression::Off => (false, false),
    };
    if with_pad_modified {
        modified_rows.extend(&pad_rows);
    }
    // e_ref-exp = [e_id, e_exp] (sec. 3.2), e_exp extended by the padding rows if chosen.
    let mut reference_rows = SegmentSpans::rows(&spans.identity);
    reference_rows.extend(exp_span.clone());
    if with_pad_reference {
        reference_rows.extend(&pad_rows);
    }
    let e_exp = gather_rows(e.as_ref(), &modified_rows);
    let e_ref = gather_rows(e.as_ref(), &reference_rows);
    let anchor = stm.anchor(e_exp.as_ref(), e_ref.as_ref());
    let out = selective_expression(
        e_exp.as_ref(),
        e_ref.as_ref(),
        &anchor,
        stm.expression,
        stm.rank_tolerance,
    )?;
    if out.selection.is_some() {
        scatter_rows(e, &modified_rows, out.embedding.as_ref());
    }
    Ok(())
}

/// The text-embedding side of ASemConsist for frame `frame` of a combined prompt `e`
/// (`L x d`): PAD (eqs. 4-6), then selective expression (eqs. 1-2), then selective
/// suppression of every other frame (eq. 3). Identity and padding outside the handled rows
/// are untouched. With every stage off or at identity parameters the result equals `e`.
pub fn modify_text_embeddings(
    e: MatRef<'_, f64>,
    spans: &SegmentSpans,
    frame: usize,
    settings: &AsemSettings,
) -> Result<Mat<f64>, AsemError> {
    spans.check(e.nrows(), frame)?;
    let mut out = e.to_owned();
    let pad_active = settings.pad.is_active();

    // Sec. 3.3: PAD first; the refined padding is then reused by selective expression.
    if pad_active && !spans.padding.is_empty() {
        let pad = gather_rows(e, &SegmentSpans::rows(&spans.padding));
        let e_exp = gather_rows(e, &SegmentSpans::rows(&spans.frames[frame]));
        let sups: Vec<Mat<f64>> = spans
            .frames
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != frame)
            .map(|(_, r)| gather_rows(e, &SegmentSpans::rows(r)))
            .collect();
        let sup_refs: Vec<MatRef<'_, f64>> = sups.iter().map(|m| m.as_ref()).collect();
        let new_pad = project_padding(pad.as_ref(), e_exp.as_ref(), &sup_refs, &settings.pad)?;
        scatter_rows(
            &mut out,
            &SegmentSpans::rows(&spans.padding),
            new_pad.as_ref(),
        );
    }

    let stm = &settings.stm;
    if !stm.enabled {
        return Ok(out);
    }
    express_in_place(&mut out, spans, frame, stm, pad_active)?;

    // Eq. (3): each suppression embedding on its own against e_id.
    if !stm.suppression.is_identity() {
        let e_id = gather_rows(e, &SegmentSpans::rows(&spans.identity));
        for (j, span) in spans.frames.iter().enumerate() {
            if j == frame || span.is_empty() {
                continue;
            }
            let rows = SegmentSpans::rows(span);
            let e_sup = gather_rows(out.as_ref(), &rows);
            let anchor = stm.anchor(e_sup.as_ref(), e_id.as_ref());
            let res = selective_suppression(
                e_sup.as_ref(),
                e_id.as_ref(),
                &anchor,
                stm.suppression,
                stm.rank_tolerance,
            )?;
            if res.selection.is_some() {
                scatter_rows(&mut out, &rows, res.embedding.as_ref());
            }
        }
    }
    Ok(out)
}

/// Whether the text-embedding stage changes anything for these settings.
pub fn text_stage_is_active(settings: &AsemSettings) -> bool {
    settings.pad.is_active()
        || (settings.stm.enabled
            && !(settings.stm.expression.is_identity() && settings.stm.suppression.is_identity()))
}

/// [`modify_text_embeddings`] on a `[L, d]` or `[1, L, d]` tensor; returns a tensor of the same
/// shape and dtype. When nothing is active the input tensor itself is returned (bit for bit).
pub fn modify_text_tensor(
    t: &Tensor,
    spans: &SegmentSpans,
    frame: usize,
    settings: &AsemSettings,
) -> Result<Tensor, AsemError> {
    if !text_stage_is_active(settings) {
        return Ok(t.clone());
    }
    let e = tensor_to_mat(t)?;
    let out = modify_text_embeddings(e.as_ref(), spans, frame, settings)?;
    let back = mat_to_tensor(out.as_ref(), t.dtype(), t.device())?;
    Ok(back.reshape(t.shape())?)
}

/// Selective expression on one text projection (`[L_txt, C]` or `[1, L_txt, C]`, the output of
/// the q, k or v linear layer before the head reshape), appendix B.3. Only the expression
/// rows (and padding rows, with PAD on) change; the rest is copied.
pub fn express_projection(
    proj: &Tensor,
    spans: &SegmentSpans,
    frame: usize,
    settings: &AsemSettings,
) -> Result<Tensor, AsemError> {
    let stm = &settings.stm;
    if !stm.enabled || !stm.in_transformer || stm.expression.is_identity() {
        return Ok(proj.clone());
    }
    let mut e = tensor_to_mat(proj)?;
    spans.check(e.nrows(), frame)?;
    express_in_place(&mut e, spans, frame, stm, settings.pad.is_active())?;
    let back = mat_to_tensor(e.as_ref(), proj.dtype(), proj.device())?;
    Ok(back.reshape(proj.shape())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consistency::asemconsist::settings::AsemPreset;
    use candle_core::{DType, Device};

    fn lcg_values(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn spans() -> SegmentSpans {
        SegmentSpans {
            identity: 0..3,
            frames: vec![3..6, 6..8, 8..11],
            padding: 11..16,
        }
    }

    #[test]
    fn identity_settings_are_bit_identical() {
        let t = Tensor::from_vec(lcg_values(16 * 8, 7), (1, 16, 8), &Device::Cpu).unwrap();
        let mut settings = AsemPreset::Full.settings();
        settings.stm.expression.alpha = 0.0;
        settings.stm.expression.beta = 1.0;
        settings.stm.suppression.alpha = 0.0;
        settings.stm.suppression.beta = 1.0;
        settings.pad.gamma = 0.0;
        let out = modify_text_tensor(&t, &spans(), 1, &settings).unwrap();
        let a: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b);
        let p = express_projection(&t, &spans(), 1, &settings).unwrap();
        let c: Vec<f32> = p.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, c);
        let flux = modify_text_tensor(&t, &spans(), 1, &AsemPreset::Flux.settings()).unwrap();
        let d: Vec<f32> = flux.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, d);
    }

    #[test]
    fn full_settings_touch_only_the_expected_rows() {
        let values = lcg_values(16 * 8, 11);
        let e = Mat::from_fn(16, 8, |i, j| values[i * 8 + j] as f64);
        let settings = AsemPreset::Full.settings();
        let out = modify_text_embeddings(e.as_ref(), &spans(), 1, &settings).unwrap();
        let row_changed = |i: usize| (0..8).any(|j| (out[(i, j)] - e[(i, j)]).abs() > 1e-12);
        // Identity rows never change.
        assert!((0..3).all(|i| !row_changed(i)));
        // Padding rows are rewritten by PAD.
        assert!((11..16).all(row_changed));
        // STM without PAD: padding untouched, the expression span and suppression spans change.
        let stm_only = AsemPreset::Stm.settings();
        let out = modify_text_embeddings(e.as_ref(), &spans(), 1, &stm_only).unwrap();
        let changed = |i: usize| (0..8).any(|j| (out[(i, j)] - e[(i, j)]).abs() > 1e-12);
        assert!((11..16).all(|i| !changed(i)));
        assert!((0..3).all(|i| !changed(i)));
        assert!((6..8).any(changed));
        assert!((3..6).chain(8..11).any(changed));
    }

    #[test]
    fn projection_modifies_only_expression_and_padding_prefix_rows() {
        let t = Tensor::from_vec(lcg_values(16 * 8, 5), (16, 8), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let settings = AsemPreset::Full.settings();
        let out = express_projection(&t, &spans(), 0, &settings).unwrap();
        assert_eq!(out.dims(), t.dims());
        let a: Vec<Vec<f32>> = t.to_vec2().unwrap();
        let b: Vec<Vec<f32>> = out.to_vec2().unwrap();
        // Expression span 3..6 and the first 3 padding rows 11..14 may change; others are copied.
        for i in (0..3).chain(6..11).chain(14..16) {
            assert_eq!(a[i], b[i], "row {i}");
        }
    }

    #[test]
    fn bad_spans_are_errors() {
        let e = Mat::<f64>::zeros(10, 4);
        let settings = AsemPreset::Full.settings();
        assert!(modify_text_embeddings(e.as_ref(), &spans(), 0, &settings).is_err());
        let e = Mat::<f64>::zeros(16, 4);
        assert!(modify_text_embeddings(e.as_ref(), &spans(), 3, &settings).is_err());
    }
}
