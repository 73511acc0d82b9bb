//! One forward pass of the "small" FLUX config (hidden 768, 6 heads, 4 double + 8 single
//! blocks, 1024 image + 64 text tokens), ours vs `candle_transformers`' `Flux` on the same
//! weights in the same run, our DiT on the same weights quantized to Q8_0 and Q4_K (GGUF
//! files written as the common FLUX conversions type them), and the resident memory of the
//! weights and the peak of the forward for each (measured in a child process each).
//!
//! `cargo run --release --example dit_bench [-- --iters 5] [--variants ours,candle,q8_0,q4_k]`
//! (`scripts/bench-cpu` runs it and PyTorch eager on the same machine, one after the other.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::flux::WithForward;
use candle_transformers::models::flux::model::{Config as CandleConfig, Flux};
use storyloom::model::dit::init::{random_weights, seeded_normal};
use storyloom::model::dit::rope::image_positions;
use storyloom::model::dit::{FluxConfig, FluxInputs, FluxTransformer};
use storyloom::model::gguf_weights::write_quantized_transformer;
use storyloom::model::weights::{LoadOptions, load_transformer};

/// The quantized variants, by the name the command line and the report use.
const QUANTS: [(&str, GgmlDType); 2] = [("q8_0", GgmlDType::Q8_0), ("q4_k", GgmlDType::Q4K)];

const GRID: (usize, usize) = (32, 32);
const TXT: usize = 64;

struct Inputs {
    img: Tensor,
    txt: Tensor,
    pooled: Tensor,
    t: Tensor,
    g: Tensor,
    img_ids: Tensor,
    txt_ids: Tensor,
}

fn inputs(cfg: &FluxConfig) -> anyhow::Result<Inputs> {
    let dev = Device::Cpu;
    let n = GRID.0 * GRID.1;
    let ids: Vec<f32> = image_positions(GRID.0, GRID.1)
        .into_iter()
        .flatten()
        .collect();
    Ok(Inputs {
        img: seeded_normal(1, &[1, n, cfg.in_channels], &dev)?,
        txt: seeded_normal(2, &[1, TXT, cfg.context_in_dim], &dev)?,
        pooled: seeded_normal(3, &[1, cfg.vec_in_dim], &dev)?,
        t: Tensor::new(&[0.7f32], &dev)?,
        g: Tensor::new(&[3.5f32], &dev)?,
        img_ids: Tensor::from_vec(ids, (1, n, 3), &dev)?,
        txt_ids: Tensor::zeros((1, TXT, 3), DType::F32, &dev)?,
    })
}

fn candle_config(cfg: &FluxConfig) -> CandleConfig {
    CandleConfig {
        in_channels: cfg.in_channels,
        vec_in_dim: cfg.vec_in_dim,
        context_in_dim: cfg.context_in_dim,
        hidden_size: cfg.hidden_size,
        mlp_ratio: cfg.mlp_ratio,
        num_heads: cfg.num_heads,
        depth: cfg.depth,
        depth_single_blocks: cfg.depth_single_blocks,
        axes_dim: cfg.axes_dim.clone(),
        theta: cfg.theta as usize,
        qkv_bias: cfg.qkv_bias,
        guidance_embed: cfg.guidance_embed,
    }
}

fn proc_status_mb(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// FLOPs of one forward (multiply-adds count 2), for GFLOP/s.
fn flops(cfg: &FluxConfig) -> f64 {
    let (h, m) = (cfg.hidden_size as f64, cfg.mlp_hidden() as f64);
    let (ni, nt) = ((GRID.0 * GRID.1) as f64, TXT as f64);
    let l = ni + nt;
    let mut f = 2.0 * (ni * cfg.in_channels as f64 * h + nt * cfg.context_in_dim as f64 * h);
    let attn = 2.0 * 2.0 * l * l * h;
    f += cfg.depth as f64 * (2.0 * l * h * (3.0 * h + h + 2.0 * m) + attn);
    f += cfg.depth_single_blocks as f64
        * (2.0 * l * h * (3.0 * h + m) + 2.0 * l * (h + m) * h + attn);
    f + 2.0 * ni * h * cfg.in_channels as f64
}

/// Where one implementation's weights come from.
enum Weights<'a> {
    Dense(&'a HashMap<String, Tensor>),
    Gguf(&'a Path),
}

/// One implementation, built.
enum Model {
    Ours(FluxTransformer),
    Candle(Flux),
}

impl Model {
    fn build(which: &str, w: Weights) -> anyhow::Result<Self> {
        let (cfg, dev) = (FluxConfig::small(), Device::Cpu);
        Ok(match (which, w) {
            (_, Weights::Gguf(path)) => {
                Model::Ours(load_transformer(path, &LoadOptions::default())?)
            }
            ("candle", Weights::Dense(w)) => {
                let vb = VarBuilder::from_tensors(w.clone(), DType::F32, &dev);
                Model::Candle(Flux::new(&candle_config(&cfg), vb)?)
            }
            (_, Weights::Dense(w)) => {
                let vb = VarBuilder::from_tensors(w.clone(), DType::F32, &dev);
                Model::Ours(FluxTransformer::new(&cfg, vb)?)
            }
        })
    }

    fn forward(&self, x: &Inputs) -> anyhow::Result<()> {
        match self {
            Model::Ours(model) => {
                let rope = model.rope_tables(TXT, GRID.0, GRID.1)?;
                let inp = FluxInputs {
                    img: &x.img,
                    txt: &x.txt,
                    pooled: &x.pooled,
                    timesteps: &x.t,
                    guidance: Some(&x.g),
                    rope: &rope,
                    img_grid: GRID,
                };
                model.forward(&inp)?;
            }
            Model::Candle(model) => {
                model.forward(
                    &x.img,
                    &x.img_ids,
                    &x.txt,
                    &x.txt_ids,
                    &x.t,
                    &x.pooled,
                    Some(&x.g),
                )?;
            }
        }
        Ok(())
    }
}

/// Times one forward pass of one implementation (building it is not timed).
fn time_forward(which: &str, w: Weights, x: &Inputs) -> anyhow::Result<f64> {
    let model = Model::build(which, w)?;
    let t0 = Instant::now();
    model.forward(x)?;
    Ok(t0.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let iters = args
        .iter()
        .position(|a| a == "--iters")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(5);
    if let Some(i) = args.iter().position(|a| a == "--only") {
        return child(&args[i + 1], args.get(i + 2).map(PathBuf::from));
    }
    let cfg = FluxConfig::small();
    println!(
        "small config: {:.0} M parameters, {:.0} GFLOP per forward, {} threads",
        cfg.parameter_count() as f64 / 1e6,
        flops(&cfg) / 1e9,
        candle_core::utils::get_num_threads()
    );
    // Timing: both in this process, interleaved, same weights values.
    let w = random_weights(&cfg, 0, DType::F32, &Device::Cpu)?;
    let x = inputs(&cfg)?;
    let dir = tempfile::tempdir()?;
    let mut files = Vec::new();
    for (name, quant) in QUANTS {
        let path = dir.path().join(format!("{name}.gguf"));
        write_quantized_transformer(&path, &w, quant, &cfg.axes_dim)?;
        files.push((name, path));
    }
    let weights = |which: &str| match files.iter().find(|(n, _)| *n == which) {
        Some((_, p)) => Weights::Gguf(p),
        None => Weights::Dense(&w),
    };
    // `--variants ours,candle` times only those (and skips the memory children).
    let chosen: Option<Vec<&str>> = args
        .iter()
        .position(|a| a == "--variants")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').collect());
    let names: Vec<&str> = ["ours", "candle"]
        .into_iter()
        .chain(QUANTS.iter().map(|(n, _)| *n))
        .filter(|n| chosen.as_ref().is_none_or(|c| c.contains(n)))
        .collect();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for which in &names {
        time_forward(which, weights(which), &x)?; // warm-up
    }
    for _ in 0..iters.max(1) {
        for (which, t) in names.iter().zip(&mut times) {
            t.push(time_forward(which, weights(which), &x)?);
        }
    }
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    for (which, m) in names.iter().zip(&medians) {
        println!(
            "{which:<7} median {m:.3} s ({:.0} GFLOP/s), {:.2}x ours",
            flops(&cfg) / m / 1e9,
            m / medians[0]
        );
    }
    if chosen.is_some() {
        return Ok(());
    }
    // Memory: each in a fresh child process.
    let exe = std::env::current_exe()?;
    for which in &names {
        let mut cmd = Command::new(&exe);
        cmd.args(["--only", which]);
        if let Weights::Gguf(p) = weights(which) {
            cmd.arg(p);
        }
        print!("{}", String::from_utf8_lossy(&cmd.output()?.stdout));
    }
    Ok(())
}

/// One implementation in this (child) process: the resident memory its weights add and the
/// peak the forward adds on top.
fn child(which: &str, gguf: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = FluxConfig::small();
    let x = inputs(&cfg)?;
    let before = proc_status_mb("VmRSS:");
    let model = match &gguf {
        Some(p) => Model::build(which, Weights::Gguf(p))?,
        None => Model::build(
            which,
            Weights::Dense(&random_weights(&cfg, 0, DType::F32, &Device::Cpu)?),
        )?,
    };
    let loaded = proc_status_mb("VmRSS:");
    // Reset the peak so it measures the forward pass alone.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    model.forward(&x)?;
    let peak = proc_status_mb("VmHWM:");
    println!(
        "{which:<7} weights resident +{:.0} MB, peak +{:.0} MB during the forward",
        loaded - before,
        peak - loaded
    );
    Ok(())
}
