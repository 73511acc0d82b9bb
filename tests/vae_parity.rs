//! The FLUX autoencoder against diffusers' `AutoencoderKL` on the tiny fixture
//! (tests/fixtures/make_flux_fixture.py, part C; see tests/fixtures/README.md).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use storyloom::model::vae::{FluxVae, LoadOptions, VaeError};

const TOLERANCE: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn io() -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("flux_vae_tiny.io.safetensors"), &Device::Cpu).unwrap()
}

/// A diffusers `vae/` folder with the fixture's weights and config, as diffusers saves it.
fn diffusers_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("flux_vae_tiny.diffusers.safetensors"),
        dir.path().join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        fixture("flux_vae_tiny.config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    dir
}

/// The BFL file has no config: the tiny model's 4 groups must be given.
fn bfl_options() -> LoadOptions {
    LoadOptions {
        num_groups: Some(4),
        ..LoadOptions::default()
    }
}

fn load_bfl() -> FluxVae {
    FluxVae::load_with(
        &fixture("flux_vae_tiny.bfl.safetensors"),
        &bfl_options(),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn decode_matches_diffusers() {
    let io = io();
    let folder = diffusers_folder();
    let vae = FluxVae::load(folder.path(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(vae.config().num_groups, 4);
    assert_eq!(vae.config().ch_mult, vec![1, 2]);
    let decoded = vae.decode(&io["latents"]).unwrap();
    let diff = max_abs_diff(&decoded, &io["decoded"]);
    eprintln!("decode: max abs difference to diffusers {diff:e}");
    assert!(diff <= TOLERANCE, "decode differs by {diff}");
}

#[test]
fn encode_matches_diffusers_mean() {
    let io = io();
    let folder = diffusers_folder();
    let vae = FluxVae::load(folder.path(), DType::F32, &Device::Cpu).unwrap();
    let encoded = vae.encode(&io["image"]).unwrap();
    let diff = max_abs_diff(&encoded, &io["encoded_mean"]);
    eprintln!("encode: max abs difference to diffusers {diff:e}");
    assert!(diff <= TOLERANCE, "encode differs by {diff}");
    // The mean, not a sample: the same input gives the same latents.
    let again = vae.encode(&io["image"]).unwrap();
    assert_eq!(max_abs_diff(&encoded, &again), 0.0);
}

#[test]
fn bfl_and_diffusers_layouts_give_identical_results() {
    let io = io();
    let bfl = load_bfl();
    let folder = diffusers_folder();
    let diffusers = FluxVae::load(folder.path(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(bfl.config(), diffusers.config());
    let a = bfl.decode(&io["latents"]).unwrap();
    let b = diffusers.decode(&io["latents"]).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let a = bfl.encode(&io["image"]).unwrap();
    let b = diffusers.encode(&io["image"]).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    assert!(max_abs_diff(&bfl.decode(&io["latents"]).unwrap(), &io["decoded"]) <= TOLERANCE);
}

#[test]
fn diffusers_weights_file_loads_with_its_sibling_config() {
    let io = io();
    let folder = diffusers_folder();
    let file = folder.path().join("diffusion_pytorch_model.safetensors");
    let vae = FluxVae::load(&file, DType::F32, &Device::Cpu).unwrap();
    assert!(max_abs_diff(&vae.decode(&io["latents"]).unwrap(), &io["decoded"]) <= TOLERANCE);
}

#[test]
fn half_precision_weights_stay_close() {
    let io = io();
    let vae = FluxVae::load_with(
        &fixture("flux_vae_tiny.bfl.safetensors"),
        &bfl_options(),
        DType::F16,
        &Device::Cpu,
    )
    .unwrap();
    let decoded = vae.decode(&io["latents"]).unwrap();
    assert_eq!(decoded.dtype(), DType::F16);
    let diff = max_abs_diff(&decoded.to_dtype(DType::F32).unwrap(), &io["decoded"]);
    eprintln!("f16 decode: max abs difference to diffusers {diff:e}");
    // f16 keeps 11 bits of mantissa; outputs are O(1). (bf16 cannot be tested here: candle has
    // no bf16 matmul on the CPU.)
    assert!(diff < 0.02, "f16 decode differs by {diff}");
}

/// Rewrite a safetensors fixture without `drop` (and optionally with a tensor replaced).
fn rewrite(
    src: &str,
    drop: &str,
    replace: Option<(&str, Tensor)>,
    dest: &Path,
) -> std::collections::HashMap<String, Tensor> {
    let mut tensors = candle_core::safetensors::load(fixture(src), &Device::Cpu).unwrap();
    assert!(tensors.remove(drop).is_some() || drop.is_empty(), "{drop}");
    if let Some((name, t)) = replace {
        tensors.insert(name.to_string(), t);
    }
    candle_core::safetensors::save(&tensors, dest).unwrap();
    tensors
}

#[test]
fn missing_tensor_is_named_in_the_files_own_layout() {
    let dir = tempfile::tempdir().unwrap();
    let bfl_path = dir.path().join("ae.safetensors");
    rewrite(
        "flux_vae_tiny.bfl.safetensors",
        "decoder.up.0.block.1.conv2.weight",
        None,
        &bfl_path,
    );
    let err = FluxVae::load_with(&bfl_path, &bfl_options(), DType::F32, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, VaeError::MissingTensor { name } if name == "decoder.up.0.block.1.conv2.weight"),
        "{err}"
    );

    let folder = diffusers_folder();
    rewrite(
        "flux_vae_tiny.diffusers.safetensors",
        "decoder.up_blocks.1.resnets.1.conv2.weight",
        None,
        &folder.path().join("diffusion_pytorch_model.safetensors"),
    );
    let err = FluxVae::load(folder.path(), DType::F32, &Device::Cpu).unwrap_err();
    assert!(
        err.to_string()
            .contains("`decoder.up_blocks.1.resnets.1.conv2.weight`"),
        "{err}"
    );
}

#[test]
fn wrong_shape_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ae.safetensors");
    let wrong = Tensor::zeros((8, 16, 3, 3), DType::F32, &Device::Cpu).unwrap();
    rewrite(
        "flux_vae_tiny.bfl.safetensors",
        "",
        Some(("encoder.mid.block_1.conv1.weight", wrong)),
        &path,
    );
    let err = FluxVae::load_with(&path, &bfl_options(), DType::F32, &Device::Cpu).unwrap_err();
    match err {
        VaeError::WrongShape {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "encoder.mid.block_1.conv1.weight");
            assert_eq!(expected, vec![16, 16, 3, 3]);
            assert_eq!(found, vec![8, 16, 3, 3]);
        }
        other => panic!("expected WrongShape, got {other}"),
    }
}

#[test]
fn bad_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();

    let truncated = dir.path().join("truncated.safetensors");
    let bytes = std::fs::read(fixture("flux_vae_tiny.bfl.safetensors")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = FluxVae::load(&truncated, DType::F32, &Device::Cpu).unwrap_err();
    assert!(matches!(err, VaeError::InvalidSafetensors { .. }), "{err}");

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file at all").unwrap();
    let err = FluxVae::load(&garbage, DType::F32, &Device::Cpu).unwrap_err();
    assert!(matches!(err, VaeError::InvalidSafetensors { .. }), "{err}");

    let pickle = dir.path().join("ae.ckpt");
    std::fs::write(&pickle, b"\x80\x02").unwrap();
    let err = FluxVae::load(&pickle, DType::F32, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("pickle"), "{err}");

    let missing = dir.path().join("nowhere.safetensors");
    let err = FluxVae::load(&missing, DType::F32, &Device::Cpu).unwrap_err();
    assert!(matches!(err, VaeError::Io { .. }), "{err}");

    // A transformer file is not an autoencoder.
    let err = FluxVae::load(
        &fixture("flux_tiny_g.bfl.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(matches!(err, VaeError::NotAnAutoencoder { .. }), "{err}");

    // Without the group count the BFL file falls back to FLUX's 32, which 8 channels cannot hold.
    let err = FluxVae::load(
        &fixture("flux_vae_tiny.bfl.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(err.to_string().contains("group-norm groups"), "{err}");
}

#[test]
fn wrong_input_shapes_are_errors() {
    let vae = load_bfl();
    let wrong_channels = Tensor::zeros((1, 4, 4, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(vae.decode(&wrong_channels).is_err());
    let odd_size = Tensor::zeros((1, 3, 7, 8), DType::F32, &Device::Cpu).unwrap();
    assert!(vae.encode(&odd_size).is_err());
}
