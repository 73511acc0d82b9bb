//! Runs our DiT on inputs saved in diffusers' conventions and writes the output, so any
//! other implementation can be compared with ours.
//!
//! `cargo run --release --example dit_forward -- --weights W --inputs in.safetensors --out out.safetensors`
//!
//! The inputs file holds `hidden_states [1,N,C]`, `encoder_hidden_states [1,L,D]`,
//! `pooled_projections [1,P]`, `timestep [1]` (in [0, 1]), optionally `guidance [1]`,
//! `img_ids [N,3]` and `txt_ids [L,3]` (default: zeros for text, the image grid from `--grid`).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use storyloom::model::dit::{FluxInputs, RopeTables};
use storyloom::model::weights::{LoadOptions, load_transformer};

#[derive(Parser)]
struct Args {
    /// Transformer weights: a BFL file, a diffusers transformer folder or pipeline folder.
    #[arg(long)]
    weights: PathBuf,
    #[arg(long)]
    inputs: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// RoPE axes, e.g. 16,56,56 (needed only when the weights do not say).
    #[arg(long, value_delimiter = ',')]
    axes: Option<Vec<usize>>,
    /// Latent grid ROWSxCOLS when the inputs have no img_ids.
    #[arg(long)]
    grid: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dev = Device::Cpu;
    let io = candle_core::safetensors::load(&args.inputs, &dev)
        .with_context(|| format!("reading {}", args.inputs.display()))?;
    let get = |k: &str| {
        io.get(k)
            .with_context(|| format!("the inputs file has no `{k}`"))
    };
    let model = load_transformer(
        &args.weights,
        &LoadOptions {
            dtype: DType::F32,
            device: dev.clone(),
            axes_dim: args.axes.clone(),
        },
    )?;
    let cfg = model.config().clone();
    let img = get("hidden_states")?;
    let txt = get("encoder_hidden_states")?;
    let (n, l) = (img.dim(1)?, txt.dim(1)?);
    let (rows, cols, img_ids) = match (io.get("img_ids"), &args.grid) {
        (Some(ids), _) => {
            let ids = if ids.rank() == 3 {
                ids.squeeze(0)?
            } else {
                ids.clone()
            };
            let max = |axis| -> anyhow::Result<usize> {
                Ok(ids.get_on_dim(1, axis)?.max(0)?.to_scalar::<f32>()? as usize + 1)
            };
            (max(1)?, max(2)?, ids)
        }
        (None, Some(g)) => {
            let (r, c) = g.split_once('x').context("--grid is ROWSxCOLS")?;
            let (r, c): (usize, usize) = (r.parse()?, c.parse()?);
            let pos: Vec<f32> = storyloom::model::dit::rope::image_positions(r, c)
                .into_iter()
                .flatten()
                .collect();
            (r, c, Tensor::from_vec(pos, (r * c, 3), &dev)?)
        }
        (None, None) => anyhow::bail!("no img_ids in the inputs: give --grid ROWSxCOLS"),
    };
    anyhow::ensure!(
        rows * cols == n,
        "grid {rows}x{cols} does not match {n} image tokens"
    );
    let txt_ids = match io.get("txt_ids") {
        Some(t) if t.rank() == 3 => t.squeeze(0)?,
        Some(t) => t.clone(),
        None => Tensor::zeros((l, 3), DType::F32, &dev)?,
    };
    let rope = RopeTables::from_ids(
        &Tensor::cat(&[&txt_ids, &img_ids], 0)?,
        &cfg.axes_dim,
        cfg.theta,
    )?;
    let inputs = FluxInputs {
        img,
        txt,
        pooled: get("pooled_projections")?,
        timesteps: get("timestep")?,
        guidance: io.get("guidance"),
        rope: &rope,
        img_grid: (rows, cols),
    };
    let out = model.forward(&inputs)?;
    let map: HashMap<String, Tensor> = [("output".to_string(), out)].into();
    candle_core::safetensors::save(&map, &args.out)?;
    println!(
        "wrote {} ({} double + {} single blocks)",
        args.out.display(),
        cfg.depth,
        cfg.depth_single_blocks
    );
    Ok(())
}
