//! Linear layers whose weights are dense tensors or quantized GGUF blocks, and the source the
//! transformer is built from.
//!
//! The transformer never knows which it got: a quantized layer takes and returns the same
//! tensors as a dense one, so the hook points (and the consistency methods on them) work
//! unchanged on a quantized model.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;

/// `y = x W^T + b` with a dense or a quantized `W` `[out, in]`.
#[derive(Debug, Clone)]
pub enum Linear {
    Dense(candle_nn::Linear),
    /// Blocks of a GGUF file, multiplied without dequantizing them. The bias stays in f32.
    Quantized {
        weight: QMatMul,
        bias: Option<Tensor>,
    },
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Dense(l) if super::cpu_matmul::applies(x, l.weight()) => {
                let y = super::cpu_matmul::matmul_t(x, l.weight())?;
                match l.bias() {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                }
            }
            Linear::Dense(l) => l.forward(x),
            Linear::Quantized { weight, bias } => {
                // candle's quantized kernels take f32 activations on every device; a bf16
                // model converts around them.
                let dtype = x.dtype();
                let y = weight.forward(&x.to_dtype(DType::F32)?.contiguous()?)?;
                let y = match bias {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                };
                y.to_dtype(dtype)
            }
        }
    }
}

/// Where the transformer's tensors come from: a `VarBuilder` of dense tensors (safetensors
/// files, random weights), plus the weights a GGUF file keeps quantized, by full name.
#[derive(Clone)]
pub struct WeightSource<'a> {
    dense: VarBuilder<'a>,
    quantized: Arc<HashMap<String, Arc<QTensor>>>,
}

impl<'a> From<VarBuilder<'a>> for WeightSource<'a> {
    fn from(dense: VarBuilder<'a>) -> Self {
        Self {
            dense,
            quantized: Arc::default(),
        }
    }
}

impl<'a> WeightSource<'a> {
    /// `dense` serves every tensor not in `quantized` (whose keys are full names).
    pub fn new(dense: VarBuilder<'a>, quantized: HashMap<String, Arc<QTensor>>) -> Self {
        Self {
            dense,
            quantized: Arc::new(quantized),
        }
    }

    pub fn pp(&self, name: impl ToString) -> Self {
        Self {
            dense: self.dense.pp(name),
            quantized: self.quantized.clone(),
        }
    }

    pub fn dtype(&self) -> DType {
        self.dense.dtype()
    }

    pub fn device(&self) -> &Device {
        self.dense.device()
    }

    /// A dense tensor of the given shape.
    pub fn get<S: Into<Shape>>(&self, shape: S, name: &str) -> Result<Tensor> {
        self.dense.get(shape, name)
    }

    /// The linear layer `name` (`name.weight` `[out, in]`, `name.bias` `[out]` if `bias`).
    pub fn linear(&self, in_dim: usize, out_dim: usize, bias: bool, name: &str) -> Result<Linear> {
        let vb = self.dense.pp(name);
        let Some(q) = self.quantized.get(&full_name(&vb, "weight")) else {
            return candle_nn::linear_b(in_dim, out_dim, bias, vb).map(Linear::Dense);
        };
        if q.shape().dims() != [out_dim, in_dim] {
            candle_core::bail!(
                "tensor `{}` has shape {:?}, expected {:?}",
                full_name(&vb, "weight"),
                q.shape().dims(),
                [out_dim, in_dim]
            );
        }
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?.to_dtype(DType::F32)?)
        } else {
            None
        };
        Ok(Linear::Quantized {
            weight: QMatMul::from_arc(q.clone())?,
            bias,
        })
    }
}

fn full_name(vb: &VarBuilder, leaf: &str) -> String {
    let prefix = vb.prefix();
    if prefix.is_empty() {
        leaf.to_string()
    } else {
        format!("{prefix}.{leaf}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;

    fn ramp(shape: (usize, usize), scale: f32) -> Result<Tensor> {
        let n = shape.0 * shape.1;
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * scale)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
    }

    #[test]
    fn a_quantized_layer_computes_what_its_dequantized_weight_computes() -> Result<()> {
        let w = ramp((8, 64), 0.5)?;
        let b = Tensor::new(
            &[0.1f32, -0.2, 0.3, 0.0, 1.0, -1.0, 0.5, 0.25],
            &Device::Cpu,
        )?;
        let q = Arc::new(QTensor::quantize(&w, GgmlDType::Q8_0)?);
        let mut dense = HashMap::new();
        dense.insert("l.weight".to_string(), q.dequantize(&Device::Cpu)?);
        dense.insert("l.bias".to_string(), b.clone());
        let vb = VarBuilder::from_tensors(dense, DType::F32, &Device::Cpu);
        let reference = WeightSource::from(vb.clone()).linear(64, 8, true, "l")?;
        let mut quantized = HashMap::new();
        quantized.insert("l.weight".to_string(), q);
        let layer = WeightSource::new(vb, quantized).linear(64, 8, true, "l")?;
        assert!(matches!(layer, Linear::Quantized { .. }));
        assert!(matches!(reference, Linear::Dense(_)));

        let x = ramp((3, 64), 1.0)?.reshape((1, 3, 64))?;
        let got = layer.forward(&x)?;
        let want = reference.forward(&x)?;
        assert_eq!(got.dims(), &[1, 3, 8]);
        // The only difference is the activations' own 8-bit blocks (Q8_0 vector dot).
        let err = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err <= 0.01 * scale, "err {err} vs scale {scale}");
        Ok(())
    }

    #[test]
    fn a_quantized_weight_of_the_wrong_shape_is_refused_by_name() -> Result<()> {
        let q = Arc::new(QTensor::quantize(&ramp((8, 64), 1.0)?, GgmlDType::Q8_0)?);
        let vb = VarBuilder::from_tensors(HashMap::new(), DType::F32, &Device::Cpu);
        let mut quantized = HashMap::new();
        quantized.insert("a.b.weight".to_string(), q);
        let err = WeightSource::new(vb, quantized)
            .pp("a")
            .linear(32, 8, false, "b")
            .unwrap_err();
        assert!(err.to_string().contains("`a.b.weight`"), "{err}");
        Ok(())
    }
}
