//! Deterministic random weights of any configuration (for tests, benchmarks and fixtures).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::config::FluxConfig;
use super::model::FluxTransformer;

/// Every tensor name and shape a model of this configuration reads, in BFL names, sorted.
/// Nothing is allocated, so this is as cheap for FLUX.1-dev's 12 B parameters as for a tiny
/// model (it runs before every load to check the file).
pub fn expected_tensors(cfg: &FluxConfig) -> Result<Vec<(String, Vec<usize>)>> {
    let recorder = ShapeRecorder::default();
    let seen = recorder.seen.clone();
    let vb = VarBuilder::from_backend(Box::new(recorder), DType::F32, Device::Cpu);
    FluxTransformer::new(cfg, vb)?;
    let mut out = std::mem::take(&mut *seen.lock().expect("shape recorder lock"));
    out.sort();
    out.dedup();
    Ok(out)
}

/// A weight backend that records what is asked for and hands back a zero-stride view of one
/// zero instead of a tensor of that size.
#[derive(Default)]
struct ShapeRecorder {
    seen: Arc<Mutex<Vec<NamedShape>>>,
}

type NamedShape = (String, Vec<usize>);

impl SimpleBackend for ShapeRecorder {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.seen
            .lock()
            .expect("shape recorder lock")
            .push((name.to_string(), s.dims().to_vec()));
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("the shape of `{name}` is not known without a model")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Random weights in BFL names: linear weights ~ N(0, std^2 / fan_in) scaled so activations
/// stay O(1), biases ~ N(0, 0.02^2), RMSNorm scales ~ 1 + N(0, 0.2^2) so that a port that
/// ignores them is caught. The same seed gives the same weights everywhere.
pub fn random_weights(
    cfg: &FluxConfig,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = HashMap::new();
    for (name, shape) in expected_tensors(cfg)? {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = if name.ends_with(".scale") {
            let d = Normal::new(1.0f32, 0.2).expect("valid normal");
            (0..n).map(|_| d.sample(&mut rng)).collect()
        } else if name.ends_with(".bias") {
            let d = Normal::new(0.0f32, 0.02).expect("valid normal");
            (0..n).map(|_| d.sample(&mut rng)).collect()
        } else {
            let fan_in = *shape.last().unwrap_or(&1) as f32;
            let d = Normal::new(0.0f32, 1.0 / fan_in.sqrt()).expect("valid normal");
            (0..n).map(|_| d.sample(&mut rng)).collect()
        };
        let t = Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Standard-normal tensor from a seed (the same on every run and device).
pub fn seeded_normal(seed: u64, shape: &[usize], device: &Device) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let d = Normal::new(0.0f32, 1.0).expect("valid normal");
    let values: Vec<f32> = (0..n).map(|_| d.sample(&mut rng)).collect();
    Tensor::from_vec(values, shape, device)
}
