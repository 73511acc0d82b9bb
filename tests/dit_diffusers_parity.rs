//! Our loader + DiT against PyTorch diffusers' `FluxTransformer2DModel`
//! (fixtures made by `tests/fixtures/make_flux_fixture.py`).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Result, Tensor};
use storyloom::model::dit::{FluxInputs, RopeTables};
use storyloom::model::weights::{LoadOptions, load_transformer};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

/// Runs one fixture through the model loaded from `weights`.
fn run(name: &str, weights: &Path, axes: Option<Vec<usize>>) -> anyhow::Result<(Tensor, Tensor)> {
    let dev = Device::Cpu;
    let io = candle_core::safetensors::load(fixture(&format!("{name}.io.safetensors")), &dev)?;
    let opts = LoadOptions {
        dtype: DType::F32,
        device: dev.clone(),
        axes_dim: axes,
    };
    let model = load_transformer(weights, &opts)?;
    let cfg = model.config().clone();
    let img_ids = &io["img_ids"];
    let txt_ids = &io["txt_ids"];
    let ids = Tensor::cat(&[txt_ids, img_ids], 0)?;
    let rope = RopeTables::from_ids(&ids, &cfg.axes_dim, cfg.theta)?;
    let rows = img_ids.get_on_dim(1, 1)?.max(0)?.to_scalar::<f32>()? as usize + 1;
    let cols = img_ids.get_on_dim(1, 2)?.max(0)?.to_scalar::<f32>()? as usize + 1;
    let inputs = FluxInputs {
        img: &io["hidden_states"],
        txt: &io["encoder_hidden_states"],
        pooled: &io["pooled_projections"],
        timesteps: &io["timestep"],
        guidance: io.get("guidance"),
        rope: &rope,
        img_grid: (rows, cols),
    };
    Ok((model.forward(&inputs)?, io["output"].clone()))
}

#[test]
fn matches_diffusers_with_and_without_guidance() -> anyhow::Result<()> {
    for name in ["flux_tiny_g", "flux_tiny_nog"] {
        // The diffusers folder layout: config.json beside the weights gives the RoPE axes.
        let dir = tempfile::tempdir()?;
        std::fs::copy(
            fixture(&format!("{name}.diffusers.safetensors")),
            dir.path().join("diffusion_pytorch_model.safetensors"),
        )?;
        std::fs::copy(
            fixture(&format!("{name}.config.json")),
            dir.path().join("config.json"),
        )?;
        let (ours, theirs) = run(name, dir.path(), None)?;
        let d = max_abs_diff(&ours, &theirs)?;
        assert!(d <= 1e-4, "{name}: max |ours - diffusers| = {d}");
    }
    Ok(())
}

#[test]
fn bfl_and_diffusers_layouts_give_identical_outputs() -> anyhow::Result<()> {
    for name in ["flux_tiny_g", "flux_tiny_nog"] {
        let axes = Some(vec![4, 6, 6]);
        let (bfl, _) = run(
            name,
            &fixture(&format!("{name}.bfl.safetensors")),
            axes.clone(),
        )?;
        let (diff, _) = run(
            name,
            &fixture(&format!("{name}.diffusers.safetensors")),
            axes,
        )?;
        assert_eq!(max_abs_diff(&bfl, &diff)?, 0.0, "{name}");
    }
    Ok(())
}

#[test]
fn sharded_diffusers_folder_loads_the_same_model() -> anyhow::Result<()> {
    let name = "flux_tiny_g";
    let dev = Device::Cpu;
    let all =
        candle_core::safetensors::load(fixture(&format!("{name}.diffusers.safetensors")), &dev)?;
    let dir = tempfile::tempdir()?;
    let tdir = dir.path().join("transformer");
    std::fs::create_dir(&tdir)?;
    let mut shards = [
        std::collections::HashMap::new(),
        std::collections::HashMap::new(),
    ];
    let mut weight_map = serde_json::Map::new();
    for (i, (k, v)) in all.iter().enumerate() {
        let shard = i % 2;
        shards[shard].insert(k.clone(), v.clone());
        weight_map.insert(
            k.clone(),
            format!(
                "diffusion_pytorch_model-0000{}-of-00002.safetensors",
                shard + 1
            )
            .into(),
        );
    }
    for (i, s) in shards.iter().enumerate() {
        candle_core::safetensors::save(
            s,
            tdir.join(format!(
                "diffusion_pytorch_model-0000{}-of-00002.safetensors",
                i + 1
            )),
        )?;
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(
        tdir.join("diffusion_pytorch_model.safetensors.index.json"),
        index.to_string(),
    )?;
    std::fs::copy(
        fixture(&format!("{name}.config.json")),
        tdir.join("config.json"),
    )?;
    // The pipeline root folder is accepted too.
    let (ours, theirs) = run(name, dir.path(), None)?;
    assert!(max_abs_diff(&ours, &theirs)? <= 1e-4);
    Ok(())
}
