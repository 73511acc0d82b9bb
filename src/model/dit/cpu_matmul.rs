//! Dense f32 products `x W^T` on the CPU through faer.
//!
//! candle's CPU matmul (the `gemm` crate) reached 64-70 GFLOP/s on a 1088x768 by 768x3072
//! product on a 2-core AMD EPYC (Zen 4, AVX-512), faer 205 GFLOP/s on the same product: faer
//! picks its AVX-512 or AVX2 kernels at run time and packs better for these thin-K shapes.
//! Almost all of a FLUX forward is such products, so linear layers on the CPU use this op;
//! other devices and dtypes keep candle's matmul. Results differ only by f32 rounding order.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// `x` `[..., K]` times `w^T` for `w` `[N, K]`: `[..., N]` (a linear layer's product).
/// CPU f32 only (see [`applies`]).
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let k = w.dim(1)?;
    let lead = &x.dims()[..x.rank() - 1];
    let x2 = x.contiguous()?.reshape(((), k))?;
    let y = x2.apply_op2_no_bwd(
        &w.contiguous()?,
        &Matmul {
            rhs_transposed: true,
        },
    )?;
    let mut shape = lead.to_vec();
    shape.push(w.dim(0)?);
    y.reshape(shape)
}

/// Batched `a` `[..., M, K]` times `b` `[..., K, N]`, or times `b^T` for `b` `[..., N, K]`
/// when `rhs_transposed` (attention's `q k^T`, without copying `k` transposed). CPU f32 only.
pub fn batched_matmul(a: &Tensor, b: &Tensor, rhs_transposed: bool) -> Result<Tensor> {
    a.contiguous()?
        .apply_op2_no_bwd(&b.contiguous()?, &Matmul { rhs_transposed })
}

/// Whether [`matmul_t`] and [`batched_matmul`] serve products of these tensors.
pub fn applies(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32
}

/// The product op: both operands contiguous, the same leading (batch) dimensions.
struct Matmul {
    rhs_transposed: bool,
}

/// The f32 elements of a contiguous CPU tensor (the kernels here and in `cpu_kernels` make
/// their inputs contiguous first).
pub(super) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    if !l.is_contiguous() {
        candle_core::bail!("the CPU kernels need contiguous inputs");
    }
    let all = s.as_slice::<f32>()?;
    Ok(&all[l.start_offset()..l.start_offset() + l.shape().elem_count()])
}

impl CustomOp2 for Matmul {
    fn name(&self) -> &'static str {
        "faer-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (da, db) = (l1.shape().dims(), l2.shape().dims());
        if da.len() < 2 || da.len() != db.len() || da[..da.len() - 2] != db[..db.len() - 2] {
            candle_core::bail!("matmul of {da:?} and {db:?}: batch dimensions differ");
        }
        let r = da.len();
        let (m, k) = (da[r - 2], da[r - 1]);
        let (n, kb) = if self.rhs_transposed {
            (db[r - 2], db[r - 1])
        } else {
            (db[r - 1], db[r - 2])
        };
        if k != kb {
            candle_core::bail!("matmul of {da:?} and {db:?}: inner dimensions differ");
        }
        let batch: usize = da[..r - 2].iter().product();
        let (a, b) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let mut out = vec![0f32; batch * m * n];
        let threads = candle_core::utils::get_num_threads();
        let par = if threads > 1 {
            Par::rayon(threads)
        } else {
            Par::Seq
        };
        for i in 0..batch {
            let a = MatRef::from_row_major_slice(&a[i * m * k..(i + 1) * m * k], m, k);
            let b = &b[i * n * k..(i + 1) * n * k];
            let b = if self.rhs_transposed {
                MatRef::from_row_major_slice(b, n, k).transpose()
            } else {
                MatRef::from_row_major_slice(b, k, n)
            };
            let c = MatMut::from_row_major_slice_mut(&mut out[i * m * n..(i + 1) * m * n], m, n);
            matmul(c, Accum::Replace, a, b, 1.0f32, par);
        }
        let mut shape = da[..r - 2].to_vec();
        shape.extend([m, n]);
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn agrees_with_candles_matmul_on_a_hand_checked_product() -> Result<()> {
        let x = Tensor::new(&[[[1f32, 2., 3.], [4., 5., 6.]]], &Device::Cpu)?;
        let w = Tensor::new(&[[1f32, 0., -1.], [0.5, 0.5, 0.5]], &Device::Cpu)?;
        let y = matmul_t(&x, &w)?;
        assert_eq!(
            y.to_vec3::<f32>()?,
            vec![vec![vec![-2., 3.], vec![-2., 7.5]]]
        );
        // A transposed (non-contiguous) input gives the same as its contiguous copy.
        let xt = Tensor::new(&[[1f32, 4.], [2., 5.], [3., 6.]], &Device::Cpu)?.t()?;
        assert_eq!(
            matmul_t(&xt, &w)?.to_vec2::<f32>()?,
            vec![vec![-2., 3.], vec![-2., 7.5]]
        );
        Ok(())
    }

    #[test]
    fn batched_products_agree_with_candles_matmul() -> Result<()> {
        let a = Tensor::randn(0f32, 1., (2, 3, 17, 40), &Device::Cpu)?;
        let b = Tensor::randn(0f32, 1., (2, 3, 40, 9), &Device::Cpu)?;
        let want = a.matmul(&b)?;
        let plain = batched_matmul(&a, &b, false)?;
        let bt = b.transpose(2, 3)?.contiguous()?;
        let transposed = batched_matmul(&a, &bt, true)?;
        for got in [plain, transposed] {
            assert_eq!(got.dims(), &[2, 3, 17, 9]);
            let err = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err < 1e-4, "{err}");
        }
        Ok(())
    }

    #[test]
    fn agrees_with_candles_matmul_on_random_shapes() -> Result<()> {
        for (m, k, n) in [(1, 1, 1), (7, 33, 5), (130, 64, 96)] {
            let x = Tensor::randn(0f32, 1., (2, m, k), &Device::Cpu)?;
            let w = Tensor::randn(0f32, 1., (n, k), &Device::Cpu)?;
            let want = x.broadcast_matmul(&w.t()?)?;
            let got = matmul_t(&x, &w)?;
            let err = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(err < 1e-4, "{m}x{k}x{n}: {err}");
        }
        Ok(())
    }
}
