//! One forward pass of the "small" FLUX config (hidden 768, 6 heads, 4 double + 8 single
//! blocks, 1024 image + 64 text tokens), ours vs `candle_transformers`' `Flux` on the same
//! weights in the same run, and the peak memory of each (measured in a child process).
//!
//! `cargo run --release --example dit_bench [-- --iters 5]`

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::flux::WithForward;
use candle_transformers::models::flux::model::{Config as CandleConfig, Flux};
use storyloom::model::dit::init::{random_weights, seeded_normal};
use storyloom::model::dit::rope::image_positions;
use storyloom::model::dit::{FluxConfig, FluxInputs, FluxTransformer};

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

/// Times `iters` forward passes of one implementation, with weights `w`.
fn time_forward(
    which: &str,
    w: &HashMap<String, Tensor>,
    x: &Inputs,
    iters: usize,
) -> anyhow::Result<Vec<f64>> {
    let dev = Device::Cpu;
    let cfg = FluxConfig::small();
    let vb = VarBuilder::from_tensors(w.clone(), DType::F32, &dev);
    let mut times = Vec::new();
    if which == "ours" {
        let model = FluxTransformer::new(&cfg, vb)?;
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
        for _ in 0..iters {
            let t0 = Instant::now();
            model.forward(&inp)?;
            times.push(t0.elapsed().as_secs_f64());
        }
    } else {
        let model = Flux::new(&candle_config(&cfg), vb)?;
        for _ in 0..iters {
            let t0 = Instant::now();
            model.forward(
                &x.img,
                &x.img_ids,
                &x.txt,
                &x.txt_ids,
                &x.t,
                &x.pooled,
                Some(&x.g),
            )?;
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    Ok(times)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let iters = args
        .iter()
        .position(|a| a == "--iters")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(5);
    if let Some(i) = args.iter().position(|a| a == "--only") {
        let which = &args[i + 1];
        let cfg = FluxConfig::small();
        let w = random_weights(&cfg, 0, DType::F32, &Device::Cpu)?;
        let x = inputs(&cfg)?;
        // Reset the peak so it measures the forward pass, not building the random weights.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let base = proc_status_mb("VmRSS:");
        let times = time_forward(which, &w, &x, iters)?;
        let peak = proc_status_mb("VmHWM:");
        println!(
            "{which}: resident before {base:.0} MB, peak {peak:.0} MB (+{:.0} MB during the forward)",
            peak - base
        );
        let _ = times;
        return Ok(());
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
    time_forward("ours", &w, &x, 1)?; // warm-up both
    time_forward("candle", &w, &x, 1)?;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..iters.max(1) {
        ours.extend(time_forward("ours", &w, &x, 1)?);
        theirs.extend(time_forward("candle", &w, &x, 1)?);
    }
    let (mo, mt) = (median(ours), median(theirs));
    println!(
        "ours:   median {mo:.3} s ({:.0} GFLOP/s)",
        flops(&cfg) / mo / 1e9
    );
    println!(
        "candle: median {mt:.3} s ({:.0} GFLOP/s)",
        flops(&cfg) / mt / 1e9
    );
    println!("ratio ours/candle: {:.3}", mo / mt);
    // Peak memory: each in a fresh child process.
    let exe = std::env::current_exe()?;
    for which in ["ours", "candle"] {
        let out = Command::new(&exe)
            .args(["--only", which, "--iters", "1"])
            .output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}
