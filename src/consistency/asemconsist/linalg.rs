//! Dense linear algebra shared by STM and PAD: tensor <-> matrix conversion, a thin SVD with
//! a deterministic sign convention, row-space projection.
//!
//! Embeddings are `L x d` matrices (tokens x features). All arithmetic is done in f64: the
//! selection in STM compares cosines against their mean, and f32 round-off in a 4096-wide SVD
//! would be enough to move components across that threshold.

use candle_core::{DType, Device, Tensor};
use faer::{Mat, MatRef};

use super::AsemError;

/// A `[L, d]` or `[1, L, d]` tensor as `[L, d]`.
pub fn token_rows(t: &Tensor) -> Result<Tensor, AsemError> {
    match t.dims() {
        [_, _] => Ok(t.clone()),
        [1, _, _] => Ok(t.squeeze(0)?),
        dims => Err(AsemError::Shape(format!(
            "expected a [L, d] or [1, L, d] tensor, got {dims:?}"
        ))),
    }
}

/// Copies a `[L, d]` (or `[1, L, d]`) tensor of any float dtype into an f64 matrix.
pub fn tensor_to_mat(t: &Tensor) -> Result<Mat<f64>, AsemError> {
    let t = token_rows(t)?;
    let (rows, cols) = t.dims2()?;
    let data = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    Ok(MatRef::from_row_major_slice(&data, rows, cols).to_owned())
}

/// Copies an f64 matrix into a `[L, d]` tensor of the given dtype and device.
pub fn mat_to_tensor(
    m: MatRef<'_, f64>,
    dtype: DType,
    device: &Device,
) -> Result<Tensor, AsemError> {
    let (rows, cols) = (m.nrows(), m.ncols());
    // faer stores columns contiguously: copy them whole and let candle transpose.
    let mut data = Vec::with_capacity(rows * cols);
    for j in 0..cols {
        data.extend(m.col(j).iter().copied());
    }
    let columns = Tensor::from_vec(data, (cols, rows), device)?;
    Ok(columns.t()?.to_dtype(dtype)?.contiguous()?)
}

/// Rows `rows` (in order) of a `[L, d]` tensor as an f64 matrix; only those rows are converted.
pub fn tensor_rows_to_mat(t: &Tensor, rows: &[usize]) -> Result<Mat<f64>, AsemError> {
    let index: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    let index = Tensor::from_vec(index, rows.len(), t.device())?;
    tensor_to_mat(&t.contiguous()?.index_select(&index, 0)?)
}

/// `t` (`[L, d]`) with row `rows[k]` replaced by row `k` of `new_rows`; every other row is
/// copied bit for bit. `rows` must be distinct.
pub fn replace_rows(t: &Tensor, rows: &[usize], new_rows: &Tensor) -> Result<Tensor, AsemError> {
    let len = t.dim(0)?;
    // Source row of every output row in `[t; new_rows]`.
    let mut source: Vec<u32> = (0..len as u32).collect();
    for (k, &r) in rows.iter().enumerate() {
        source[r] = (len + k) as u32;
    }
    let source = Tensor::from_vec(source, len, t.device())?;
    let stacked = Tensor::cat(&[t, &new_rows.to_dtype(t.dtype())?], 0)?;
    Ok(stacked.index_select(&source, 0)?)
}

/// Stacks the given rows of `m` (in order) into a new matrix.
pub fn gather_rows(m: MatRef<'_, f64>, rows: &[usize]) -> Mat<f64> {
    let mut out = Mat::zeros(rows.len(), m.ncols());
    for (k, &r) in rows.iter().enumerate() {
        out.row_mut(k).copy_from(m.row(r));
    }
    out
}

/// Writes the rows of `src` back into `dst` at the given row indices.
pub fn scatter_rows(dst: &mut Mat<f64>, rows: &[usize], src: MatRef<'_, f64>) {
    for (k, &r) in rows.iter().enumerate() {
        dst.row_mut(r).copy_from(src.row(k));
    }
}

/// Vertical concatenation `[a; b]`.
pub fn vstack(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    assert_eq!(a.ncols(), b.ncols(), "vstack needs equal widths");
    let top = a.nrows();
    Mat::from_fn(top + b.nrows(), a.ncols(), |i, j| {
        if i < top { a[(i, j)] } else { b[(i - top, j)] }
    })
}

/// Mean of the rows of `m`, in `R^d`.
pub fn mean_row(m: MatRef<'_, f64>) -> Vec<f64> {
    let rows = m.nrows().max(1) as f64;
    (0..m.ncols())
        .map(|j| (0..m.nrows()).map(|i| m[(i, j)]).sum::<f64>() / rows)
        .collect()
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// Cosine similarity; 0 when either vector is zero (a zero vector points nowhere).
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let denom = norm(a) * norm(b);
    if denom == 0.0 { 0.0 } else { dot(a, b) / denom }
}

/// Thin SVD `m = U diag(s) V^T` with `r = min(L, d)` components, singular values in
/// non-increasing order. `v` is `d x r`: its columns are the right singular vectors.
#[derive(Debug, Clone)]
pub struct ThinSvd {
    pub u: Mat<f64>,
    pub s: Vec<f64>,
    pub v: Mat<f64>,
}

impl ThinSvd {
    pub fn new(m: MatRef<'_, f64>) -> Result<Self, AsemError> {
        let svd = m.thin_svd().map_err(|e| AsemError::Svd(format!("{e:?}")))?;
        let s = svd.S().column_vector().iter().copied().collect();
        Ok(Self {
            u: svd.U().to_owned(),
            s,
            v: svd.V().to_owned(),
        })
    }

    pub fn rank(&self) -> usize {
        self.s.len()
    }

    /// Right singular vector `i` as a slice of length d.
    pub fn right(&self, i: usize) -> &[f64] {
        self.v.col_as_slice(i)
    }

    /// Flips the sign of component `i` (both singular vectors, so `U S V^T` is unchanged).
    pub fn flip(&mut self, i: usize) {
        for x in self.u.col_as_slice_mut(i) {
            *x = -*x;
        }
        for x in self.v.col_as_slice_mut(i) {
            *x = -*x;
        }
    }

    /// Orients every component so that its right singular vector points along `anchor`.
    ///
    /// Rule, in order (each test is odd in `v`, so a flipped input gives the same output):
    /// 1. the sign of `v . anchor`;
    /// 2. when `v` is orthogonal to the anchor (|cos| < 1e-12): the sign statistic of
    ///    Bro, Acar & Kolda (2008), `sum_j sign(x_j . v) (x_j . v)^2` over the rows `x_j` of
    ///    the decomposed matrix `data`, i.e. the side where most of the data's energy lies;
    /// 3. when that is zero too: the entry of `v` with the largest magnitude is made positive.
    pub fn orient(&mut self, anchor: &[f64], data: MatRef<'_, f64>) {
        let anchor_norm = norm(anchor);
        for i in 0..self.rank() {
            let v = self.right(i);
            let v_norm = norm(v);
            let along_anchor = dot(v, anchor);
            let sign = if along_anchor.abs() > 1e-12 * v_norm * anchor_norm {
                along_anchor
            } else {
                let bro: f64 = (0..data.nrows())
                    .map(|j| {
                        let p: f64 = (0..data.ncols()).map(|c| data[(j, c)] * v[c]).sum();
                        p.signum() * p * p
                    })
                    .sum();
                if bro != 0.0 {
                    bro
                } else {
                    v.iter().copied().fold(
                        0.0_f64,
                        |best, x| {
                            if x.abs() > best.abs() { x } else { best }
                        },
                    )
                }
            };
            if sign < 0.0 {
                self.flip(i);
            }
        }
    }

    /// `U diag(sigma) V^T` with replacement singular values.
    pub fn reconstruct_with(&self, sigma: &[f64]) -> Mat<f64> {
        assert_eq!(sigma.len(), self.rank());
        let scaled_u = Mat::from_fn(self.u.nrows(), self.rank(), |i, k| {
            self.u[(i, k)] * sigma[k]
        });
        &scaled_u * self.v.transpose()
    }

    /// `sum_i sigma_i v_i`: the reference vector of eq. (1).
    pub fn weighted_direction(&self) -> Vec<f64> {
        let d = self.v.nrows();
        let mut out = vec![0.0; d];
        for (i, &sigma) in self.s.iter().enumerate() {
            for (o, &x) in out.iter_mut().zip(self.right(i)) {
                *o += sigma * x;
            }
        }
        out
    }

    /// Number of components whose singular value is above `relative_tolerance * sigma_max`
    /// (the numerical rank). Singular values are sorted, so these are the first ones.
    pub fn numerical_rank(&self, relative_tolerance: f64) -> usize {
        let sigma_max = self.s.first().copied().unwrap_or(0.0);
        self.s
            .iter()
            .take_while(|&&s| s > relative_tolerance * sigma_max && s > 0.0)
            .count()
    }
}

/// Orthonormal basis (`d x r`) of the row space of `e`: the right singular vectors with
/// singular value above `relative_tolerance * sigma_max`.
pub fn row_space_basis(e: MatRef<'_, f64>, relative_tolerance: f64) -> Result<Mat<f64>, AsemError> {
    if e.nrows() == 0 {
        return Ok(Mat::zeros(e.ncols(), 0));
    }
    let svd = ThinSvd::new(e)?;
    let r = svd.numerical_rank(relative_tolerance);
    Ok(svd.v.subcols(0, r).to_owned())
}

/// `x V V^T`: the rows of `x` projected onto the span of the orthonormal columns of `basis`.
/// Never forms the `d x d` projector.
pub fn project_rows(x: MatRef<'_, f64>, basis: MatRef<'_, f64>) -> Mat<f64> {
    if basis.ncols() == 0 {
        return Mat::zeros(x.nrows(), x.ncols());
    }
    let coefficients = x * basis;
    &coefficients * basis.transpose()
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

    #[test]
    fn tensor_round_trip_is_exact_for_f32() {
        let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.37 - 1.1).collect();
        let t = Tensor::from_vec(values.clone(), (3, 4), &Device::Cpu).unwrap();
        let m = tensor_to_mat(&t).unwrap();
        assert_eq!((m.nrows(), m.ncols()), (3, 4));
        assert_eq!(m[(1, 2)], values[6] as f64);
        let back = mat_to_tensor(m.as_ref(), DType::F32, &Device::Cpu).unwrap();
        let back: Vec<f32> = back.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(back, values);
        let batched = t.unsqueeze(0).unwrap();
        assert_eq!(tensor_to_mat(&batched).unwrap()[(2, 3)], values[11] as f64);
    }

    #[test]
    fn row_subsets_are_read_and_replaced_exactly() {
        let values: Vec<f32> = (0..15).map(|i| i as f32 * 0.5).collect();
        let t = Tensor::from_vec(values, (5, 3), &Device::Cpu).unwrap();
        let m = tensor_rows_to_mat(&t, &[1, 3]).unwrap();
        assert_eq!((m.nrows(), m.ncols()), (2, 3));
        assert_eq!((m[(0, 0)], m[(1, 2)]), (1.5, 5.5));
        let new_rows = Tensor::from_vec(
            vec![-1.0f64, -2.0, -3.0, -4.0, -5.0, -6.0],
            (2, 3),
            &Device::Cpu,
        )
        .unwrap();
        let out: Vec<Vec<f32>> = replace_rows(&t, &[3, 0], &new_rows)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(
            out,
            vec![
                vec![-4.0, -5.0, -6.0],
                vec![1.5, 2.0, 2.5],
                vec![3.0, 3.5, 4.0],
                vec![-1.0, -2.0, -3.0],
                vec![6.0, 6.5, 7.0],
            ]
        );
    }

    #[test]
    fn svd_of_a_diagonal_matrix_is_read_off() {
        // [[3,0,0,0],[0,0,2,0]]: sigma = (3, 2), v1 = e1, v2 = e3 (up to sign).
        let m = mat(&[&[3.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 2.0, 0.0]]);
        let mut svd = ThinSvd::new(m.as_ref()).unwrap();
        assert!((svd.s[0] - 3.0).abs() < 1e-12 && (svd.s[1] - 2.0).abs() < 1e-12);
        svd.orient(&[1.0, 1.0, 1.0, 1.0], m.as_ref());
        assert!((svd.right(0)[0] - 1.0).abs() < 1e-12);
        assert!((svd.right(1)[2] - 1.0).abs() < 1e-12);
        let rebuilt = svd.reconstruct_with(&svd.s.clone());
        assert!(max_abs_diff(rebuilt.as_ref(), m.as_ref()) < 1e-12);
    }

    #[test]
    fn orientation_ignores_input_signs() {
        let m = mat(&[
            &[1.0, 2.0, 0.5, -1.0],
            &[0.3, -0.7, 2.0, 1.0],
            &[-1.5, 0.2, 0.1, 0.4],
        ]);
        let anchor = mean_row(m.as_ref());
        let mut a = ThinSvd::new(m.as_ref()).unwrap();
        let mut b = a.clone();
        b.flip(0);
        b.flip(2);
        a.orient(&anchor, m.as_ref());
        b.orient(&anchor, m.as_ref());
        assert!(max_abs_diff(a.v.as_ref(), b.v.as_ref()) < 1e-15);
        assert!(max_abs_diff(a.u.as_ref(), b.u.as_ref()) < 1e-15);
    }

    #[test]
    fn orthogonal_anchor_falls_back_to_data_energy() {
        // Rows (1,0) and (-3,0): v = +-e1 is orthogonal to the anchor e2; the data's energy
        // lies on the negative side (9 > 1), so the rule makes v = -e1.
        let m = mat(&[&[1.0, 0.0], &[-3.0, 0.0]]);
        let mut svd = ThinSvd::new(m.as_ref()).unwrap();
        svd.orient(&[0.0, 1.0], m.as_ref());
        assert!((svd.right(0)[0] + 1.0).abs() < 1e-12);
    }

    #[test]
    fn projection_keeps_row_space_and_drops_orthogonal_rows() {
        let e = mat(&[&[1.0, 1.0, 0.0, 0.0], &[0.0, 1.0, 1.0, 0.0]]);
        let basis = row_space_basis(e.as_ref(), 1e-12).unwrap();
        // 2*row0 - row1 lies in the row space; (1,-1,1,0) and e4 are orthogonal to it.
        let x = mat(&[
            &[2.0, 1.0, -1.0, 0.0],
            &[1.0, -1.0, 1.0, 0.0],
            &[0.0, 0.0, 0.0, 5.0],
        ]);
        let p = project_rows(x.as_ref(), basis.as_ref());
        for j in 0..4 {
            assert!((p[(0, j)] - x[(0, j)]).abs() < 1e-12);
            assert!(p[(1, j)].abs() < 1e-12);
            assert!(p[(2, j)].abs() < 1e-12);
        }
    }
}
