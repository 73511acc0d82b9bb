//! Every error path of the weight loader: a clear message naming the tensor, never a panic.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use storyloom::model::dit::FluxConfig;
use storyloom::model::dit::init::random_weights;
use storyloom::model::safetensors_header::HeaderError;
use storyloom::model::weights::{Component, LoadOptions, WeightsError, classify, load_transformer};

fn tiny_weights() -> HashMap<String, Tensor> {
    random_weights(&FluxConfig::tiny(true), 5, DType::F32, &Device::Cpu).unwrap()
}

fn opts() -> LoadOptions {
    LoadOptions {
        axes_dim: Some(vec![4, 6, 6]),
        ..LoadOptions::default()
    }
}

fn save(dir: &Path, name: &str, w: &HashMap<String, Tensor>) -> std::path::PathBuf {
    let p = dir.join(name);
    candle_core::safetensors::save(w, &p).unwrap();
    p
}

#[test]
fn loads_bfl_with_and_without_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let w = tiny_weights();
    let plain = save(dir.path(), "plain.safetensors", &w);
    let prefixed: HashMap<String, Tensor> = w
        .iter()
        .map(|(k, v)| (format!("model.diffusion_model.{k}"), v.clone()))
        .collect();
    let pre = save(dir.path(), "prefixed.safetensors", &prefixed);
    let a = load_transformer(&plain, &opts()).unwrap();
    let b = load_transformer(&pre, &opts()).unwrap();
    assert_eq!(a.config(), b.config());
    assert_eq!(a.config(), &FluxConfig::tiny(true));
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = tiny_weights();
    w.remove("single_blocks.2.linear2.weight");
    let p = save(dir.path(), "m.safetensors", &w);
    let err = load_transformer(&p, &opts()).unwrap_err();
    assert!(
        matches!(&err, WeightsError::MissingTensor { name } if name == "single_blocks.2.linear2.weight"),
        "{err}"
    );
    assert!(err.to_string().contains("single_blocks.2.linear2.weight"));
}

#[test]
fn wrong_shape_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = tiny_weights();
    w.insert(
        "double_blocks.1.txt_attn.proj.weight".into(),
        Tensor::zeros((32, 31), DType::F32, &Device::Cpu).unwrap(),
    );
    let p = save(dir.path(), "s.safetensors", &w);
    let err = load_transformer(&p, &opts()).unwrap_err();
    assert!(
        matches!(&err, WeightsError::WrongShape { name, .. } if name == "double_blocks.1.txt_attn.proj.weight"),
        "{err}"
    );
}

#[test]
fn truncated_file_is_reported_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let p = save(dir.path(), "t.safetensors", &tiny_weights());
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let err = load_transformer(&p, &opts()).unwrap_err();
    assert!(
        matches!(err, WeightsError::Header(HeaderError::Truncated { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("truncated"));
}

#[test]
fn pickle_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("flux1-dev.ckpt");
    std::fs::write(&p, b"PK\x03\x04....").unwrap();
    let err = load_transformer(&p, &opts()).unwrap_err();
    assert!(err.to_string().contains("pickle"), "{err}");
}

#[test]
fn a_vae_file_is_not_a_transformer() {
    let dir = tempfile::tempdir().unwrap();
    let w: HashMap<String, Tensor> = [(
        "decoder.up.0.block.0.conv1.weight".to_string(),
        Tensor::zeros((2, 2, 3, 3), DType::F32, &Device::Cpu).unwrap(),
    )]
    .into();
    let p = save(dir.path(), "ae.safetensors", &w);
    let err = load_transformer(&p, &opts()).unwrap_err();
    assert!(matches!(err, WeightsError::WrongComponent { .. }), "{err}");
    let report = classify(&p).unwrap();
    assert!(matches!(report.component, Component::Vae(_)));
    assert!(
        report
            .to_string()
            .contains("choose the FLUX transformer, the T5 encoder too"),
        "{report}"
    );
}

#[test]
fn classify_says_what_a_transformer_file_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let p = save(dir.path(), "flux.safetensors", &tiny_weights());
    let report = classify(&p).unwrap();
    assert!(matches!(report.component, Component::Transformer(_)));
    assert_eq!(report.parameters, FluxConfig::tiny(true).parameter_count());
    let text = report.to_string();
    assert!(text.contains("this file holds only part of a model; choose the VAE (ae.safetensors), the T5 encoder too"), "{text}");
}

#[test]
fn missing_rope_axes_for_an_unusual_head_width_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let p = save(dir.path(), "x.safetensors", &tiny_weights());
    let err = load_transformer(&p, &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("RoPE axes"), "{err}");
}

#[test]
fn a_folder_without_weights_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_transformer(dir.path(), &opts()).unwrap_err();
    assert!(err.to_string().contains("diffusion_pytorch_model"), "{err}");
}

#[test]
fn diffusers_config_says_what_the_output_means() {
    use storyloom::model::sampler::Prediction;
    use storyloom::model::weights::locate_transformer;
    let dir = tempfile::tempdir().unwrap();
    save(
        dir.path(),
        "diffusion_pytorch_model.safetensors",
        &tiny_weights(),
    );
    let config = dir.path().join("config.json");
    let with = |json: &str| {
        std::fs::write(&config, json).unwrap();
        locate_transformer(dir.path())
    };
    // FLUX's own configs do not name it: the velocity.
    let files = with(r#"{"axes_dims_rope": [4, 6, 6]}"#).unwrap();
    assert_eq!(files.prediction, Prediction::Velocity);
    let files = with(r#"{"axes_dims_rope": [4, 6, 6], "prediction_type": "sample"}"#).unwrap();
    assert_eq!(files.prediction, Prediction::Sample);
    // A meaning the sampler cannot use is refused by name, not sampled wrongly.
    let err = with(r#"{"prediction_type": "epsilon"}"#).unwrap_err();
    assert!(
        matches!(&err, WeightsError::BadFolder { reason, .. } if reason.contains("epsilon")),
        "{err}"
    );
}
