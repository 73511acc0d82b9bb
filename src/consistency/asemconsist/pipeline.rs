//! The per-frame ASemConsist text work on a combined prompt: PAD on the padding rows, selective
//! expression of the frame's own span, selective suppression of the other frames' spans; and
//! the same selective expression on the text q/k/v projections inside the transformer.

use std::ops::Range;

use candle_core::Tensor;
use faer::{Mat, MatRef};

use super::AsemError;
use super::linalg::{
    ThinSvd, gather_rows, mat_to_tensor, replace_rows, scatter_rows, tensor_rows_to_mat, token_rows,
};
use super::pad::project_padding;
use super::settings::AsemSettings;
use super::stm::{PaddingInExpression, Side, StmSettings, rescale_selected, selective_expression};

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

    fn all(&self) -> impl Iterator<Item = &Range<usize>> {
        std::iter::once(&self.identity)
            .chain(&self.frames)
            .chain(std::iter::once(&self.padding))
    }

    /// Sorted distinct token rows covered by the spans.
    fn covered_rows(&self) -> Vec<usize> {
        let mut rows: Vec<usize> = self.all().flat_map(|r| r.clone()).collect();
        rows.sort_unstable();
        rows.dedup();
        rows
    }

    /// The same spans in the matrix made of only `rows` (sorted, covering every span): a span
    /// whose rows are all kept stays contiguous there.
    fn compacted(&self, rows: &[usize]) -> SegmentSpans {
        let place = |r: &Range<usize>| {
            let start = rows.partition_point(|&row| row < r.start);
            start..start + r.len()
        };
        SegmentSpans {
            identity: place(&self.identity),
            frames: self.frames.iter().map(place).collect(),
            padding: place(&self.padding),
        }
    }

    fn check(&self, rows: usize, frame: usize) -> Result<(), AsemError> {
        if frame >= self.frames.len() {
            return Err(AsemError::Shape(format!(
                "frame {frame} out of range for {} frames",
                self.frames.len()
            )));
        }
        for r in self.all() {
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

    // Eq. (3): each suppression embedding on its own against e_id, whose decomposition is
    // the same for every frame and so is computed once.
    if !stm.suppression.is_identity() && !spans.identity.is_empty() {
        let e_id = gather_rows(e, &SegmentSpans::rows(&spans.identity));
        let id_svd = ThinSvd::new(e_id.as_ref())?;
        for (j, span) in spans.frames.iter().enumerate() {
            if j == frame || span.is_empty() {
                continue;
            }
            let rows = SegmentSpans::rows(span);
            let e_sup = gather_rows(out.as_ref(), &rows);
            let anchor = stm.anchor(e_sup.as_ref(), e_id.as_ref());
            let suppression = stm.suppression;
            let (embedding, _) = rescale_selected(
                (ThinSvd::new(e_sup.as_ref())?, e_sup.as_ref()),
                (id_svd.clone(), e_id.as_ref()),
                &anchor,
                Side::Below,
                stm.rank_tolerance,
                |s| suppression.downscale(s),
            );
            scatter_rows(&mut out, &rows, embedding.as_ref());
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
    let rows_tensor = token_rows(t)?;
    spans.check(rows_tensor.dim(0)?, frame)?;
    // Only the identity, the frames and (for PAD) the padding are read or written.
    let used = SegmentSpans {
        padding: if settings.pad.is_active() {
            spans.padding.clone()
        } else {
            spans.padding.start..spans.padding.start
        },
        ..spans.clone()
    };
    let out = modify_rows(&rows_tensor, &used, frame, |e, compact| {
        modify_text_embeddings(e, compact, frame, settings)
    })?;
    Ok(out.reshape(t.shape())?)
}

/// Runs `modify` on the f64 matrix of only the rows covered by `used` (with `used` remapped
/// onto that matrix) and writes those rows back into a copy of `t` (`[L, d]`). Every step is
/// row-wise, so the result equals running `modify` on the whole matrix; rows outside `used`
/// are copied bit for bit (the f64 round trip is exact for every float dtype anyway).
fn modify_rows(
    t: &Tensor,
    used: &SegmentSpans,
    frame: usize,
    modify: impl FnOnce(MatRef<'_, f64>, &SegmentSpans) -> Result<Mat<f64>, AsemError>,
) -> Result<Tensor, AsemError> {
    let rows = used.covered_rows();
    let compact = used.compacted(&rows);
    debug_assert!(frame < compact.frames.len());
    let e = tensor_rows_to_mat(t, &rows)?;
    let out = modify(e.as_ref(), &compact)?;
    let new_rows = mat_to_tensor(out.as_ref(), t.dtype(), t.device())?;
    replace_rows(t, &rows, &new_rows)
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
    let rows_tensor = token_rows(proj)?;
    spans.check(rows_tensor.dim(0)?, frame)?;
    let pad_active = settings.pad.is_active();
    let exp_span = &spans.frames[frame];
    // Only the identity, this frame and the padding prefix that joins it are read or written.
    let used = SegmentSpans {
        identity: spans.identity.clone(),
        frames: vec![exp_span.clone()],
        padding: if pad_active {
            spans.padding_prefix(exp_span.len())
        } else {
            spans.padding.start..spans.padding.start
        },
    };
    let out = modify_rows(&rows_tensor, &used, 0, |e, compact| {
        let mut e = e.to_owned();
        express_in_place(&mut e, compact, 0, stm, pad_active)?;
        Ok(e)
    })?;
    Ok(out.reshape(proj.shape())?)
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

    /// The full-matrix path: the whole tensor in f64, every stage on it, the whole tensor back
    /// (suppression through `selective_suppression`, one e_id decomposition per frame).
    fn full_matrix_text(
        t: &Tensor,
        spans: &SegmentSpans,
        frame: usize,
        settings: &AsemSettings,
    ) -> Tensor {
        use crate::consistency::asemconsist::linalg::tensor_to_mat;
        use crate::consistency::asemconsist::stm::selective_suppression;
        let e = tensor_to_mat(t).unwrap();
        let mut without_suppression = settings.clone();
        without_suppression.stm.suppression.alpha = 0.0;
        without_suppression.stm.suppression.beta = 1.0;
        let mut out =
            modify_text_embeddings(e.as_ref(), spans, frame, &without_suppression).unwrap();
        let stm = &settings.stm;
        if stm.enabled && !stm.suppression.is_identity() {
            let e_id = gather_rows(e.as_ref(), &SegmentSpans::rows(&spans.identity));
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
                )
                .unwrap();
                if res.selection.is_some() {
                    scatter_rows(&mut out, &rows, res.embedding.as_ref());
                }
            }
        }
        mat_to_tensor(out.as_ref(), t.dtype(), t.device())
            .unwrap()
            .reshape(t.shape())
            .unwrap()
    }

    fn full_matrix_projection(
        t: &Tensor,
        spans: &SegmentSpans,
        frame: usize,
        settings: &AsemSettings,
    ) -> Tensor {
        use crate::consistency::asemconsist::linalg::tensor_to_mat;
        let mut e = tensor_to_mat(t).unwrap();
        express_in_place(
            &mut e,
            spans,
            frame,
            &settings.stm,
            settings.pad.is_active(),
        )
        .unwrap();
        mat_to_tensor(e.as_ref(), t.dtype(), t.device())
            .unwrap()
            .reshape(t.shape())
            .unwrap()
    }

    fn layouts() -> Vec<(usize, SegmentSpans)> {
        vec![
            // Identity, three frames, padding; rows 0 and 19 (a start and an end token) are
            // in no span.
            (
                24,
                SegmentSpans {
                    identity: 1..4,
                    frames: vec![4..9, 9..12, 12..19],
                    padding: 20..24,
                },
            ),
            // Padding shorter than the expression span.
            (
                20,
                SegmentSpans {
                    identity: 0..3,
                    frames: vec![3..5, 5..12, 12..18],
                    padding: 18..20,
                },
            ),
            // No padding at all, frames before the identity.
            (
                18,
                SegmentSpans {
                    identity: 12..18,
                    frames: vec![0..4, 4..12],
                    padding: 18..18,
                },
            ),
            // The identity overlaps the first frame, an empty frame, long padding.
            (
                30,
                SegmentSpans {
                    identity: 0..5,
                    frames: vec![3..8, 8..8, 8..13],
                    padding: 13..30,
                },
            ),
        ]
    }

    #[test]
    fn row_subset_paths_equal_the_full_matrix_paths() {
        let mut variants = vec![
            AsemPreset::Full.settings(),
            AsemPreset::Stm.settings(),
            AsemPreset::Flux.settings(),
        ];
        for padding in [PaddingInExpression::ModifiedOnly, PaddingInExpression::Off] {
            let mut s = AsemPreset::Full.settings();
            s.stm.padding_in_expression = padding;
            variants.push(s);
        }
        let mut sequential = AsemPreset::Full.settings();
        sequential.pad.suppression =
            crate::consistency::asemconsist::pad::PadSuppression::Sequential;
        variants.push(sequential);
        for (seed, (rows, spans)) in layouts().into_iter().enumerate() {
            let width = 12;
            let values = lcg_values(rows * width, 100 + seed as u64);
            let t = Tensor::from_vec(values, (1, rows, width), &Device::Cpu).unwrap();
            for settings in &variants {
                for frame in 0..spans.frames.len() {
                    let new = modify_text_tensor(&t, &spans, frame, settings).unwrap();
                    let old = full_matrix_text(&t, &spans, frame, settings);
                    assert_eq!(new.dims(), t.dims());
                    let new: Vec<f32> = new.flatten_all().unwrap().to_vec1().unwrap();
                    let old: Vec<f32> = old.flatten_all().unwrap().to_vec1().unwrap();
                    assert_eq!(new, old, "text, layout {seed}, frame {frame}");

                    let flat = t.squeeze(0).unwrap();
                    let new = express_projection(&flat, &spans, frame, settings).unwrap();
                    let old = if settings.stm.enabled && settings.stm.in_transformer {
                        full_matrix_projection(&flat, &spans, frame, settings)
                    } else {
                        flat.clone()
                    };
                    assert_eq!(new.dims(), flat.dims());
                    let new: Vec<Vec<f32>> = new.to_vec2().unwrap();
                    let old: Vec<Vec<f32>> = old.to_vec2().unwrap();
                    assert_eq!(new, old, "projection, layout {seed}, frame {frame}");
                }
            }
        }
    }

    #[test]
    fn row_subset_path_handles_bf16_and_strided_input() {
        let (rows, spans) = layouts().remove(0);
        // Built transposed, so the input is also not contiguous.
        let t = Tensor::from_vec(lcg_values(rows * 8, 3), (8, rows), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap()
            .t()
            .unwrap();
        let settings = AsemPreset::Full.settings();
        let new = express_projection(&t, &spans, 1, &settings).unwrap();
        let old = full_matrix_projection(&t, &spans, 1, &settings);
        assert_eq!(new.dtype(), DType::BF16);
        let new: Vec<Vec<f32>> = new.to_dtype(DType::F32).unwrap().to_vec2().unwrap();
        let old: Vec<Vec<f32>> = old.to_dtype(DType::F32).unwrap().to_vec2().unwrap();
        assert_eq!(new, old);
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
