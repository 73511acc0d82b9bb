//! Deterministic random weights of any configuration (for tests, benchmarks and fixtures).

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::config::FluxConfig;
use super::model::FluxTransformer;

/// Every tensor name and shape a model of this configuration reads, in BFL names, sorted.
pub fn expected_tensors(cfg: &FluxConfig) -> Result<Vec<(String, Vec<usize>)>> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    FluxTransformer::new(cfg, vb)?;
    let data = varmap.data().lock().expect("var map lock");
    let mut out: Vec<(String, Vec<usize>)> = data
        .iter()
        .map(|(name, var)| (name.clone(), var.dims().to_vec()))
        .collect();
    out.sort();
    Ok(out)
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
