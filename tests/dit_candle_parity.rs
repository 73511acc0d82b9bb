//! Our DiT against `candle_transformers::models::flux::model::Flux` on the same weights.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::flux::WithForward;
use candle_transformers::models::flux::model::{Config as CandleConfig, Flux};
use storyloom::model::dit::init::{random_weights, seeded_normal};
use storyloom::model::dit::rope::{image_positions, joint_positions};
use storyloom::model::dit::{AttentionCall, Branch, Control, HookCtx, StepCtx, Stream};
use storyloom::model::dit::{
    FluxConfig, FluxInputs, FluxTransformer, NoControl, RopeTables, StepInfo,
};

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

struct Case {
    cfg: FluxConfig,
    grid: (usize, usize),
    txt_len: usize,
    batch: usize,
}

fn ids_tensor(pos: &[[f32; 3]], batch: usize) -> Result<Tensor> {
    let flat: Vec<f32> = pos.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (1, pos.len(), 3), &Device::Cpu)?.repeat((batch, 1, 1))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

fn run_case(case: &Case, seed: u64) -> Result<f32> {
    let dev = Device::Cpu;
    let cfg = &case.cfg;
    let weights = random_weights(cfg, seed, DType::F32, &dev)?;
    let ours = FluxTransformer::new(
        cfg,
        VarBuilder::from_tensors(weights.clone(), DType::F32, &dev),
    )?;
    let theirs = Flux::new(
        &candle_config(cfg),
        VarBuilder::from_tensors(weights, DType::F32, &dev),
    )?;
    let (rows, cols) = case.grid;
    let n = rows * cols;
    let b = case.batch;
    let img = seeded_normal(seed + 1, &[b, n, cfg.in_channels], &dev)?;
    let txt = seeded_normal(seed + 2, &[b, case.txt_len, cfg.context_in_dim], &dev)?;
    let pooled = seeded_normal(seed + 3, &[b, cfg.vec_in_dim], &dev)?;
    let t = Tensor::from_vec(vec![0.73f32; b], b, &dev)?;
    let g = Tensor::from_vec(vec![3.5f32; b], b, &dev)?;
    let rope = RopeTables::from_positions(
        &joint_positions(case.txt_len, rows, cols),
        &cfg.axes_dim,
        cfg.theta,
        &dev,
    )?;
    let inputs = FluxInputs {
        img: &img,
        txt: &txt,
        pooled: &pooled,
        timesteps: &t,
        guidance: cfg.guidance_embed.then_some(&g),
        rope: &rope,
        img_grid: case.grid,
    };
    let a = ours.forward(&inputs)?;
    let img_ids = ids_tensor(&image_positions(rows, cols), b)?;
    let txt_ids = Tensor::zeros((b, case.txt_len, 3), DType::F32, &dev)?;
    let r = theirs.forward(
        &img,
        &img_ids,
        &txt,
        &txt_ids,
        &t,
        &pooled,
        cfg.guidance_embed.then_some(&g),
    )?;
    assert_eq!(a.dims(), r.dims());
    let scale = r.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    assert!(
        scale > 0.1,
        "outputs should not be trivially small ({scale})"
    );
    max_abs_diff(&a, &r)
}

#[test]
fn matches_candle_flux_on_tiny_configs() -> Result<()> {
    let cases = [
        Case {
            cfg: FluxConfig::tiny(true),
            grid: (3, 5),
            txt_len: 7,
            batch: 1,
        },
        Case {
            cfg: FluxConfig::tiny(false),
            grid: (4, 2),
            txt_len: 5,
            batch: 2,
        },
        Case {
            cfg: FluxConfig {
                depth: 3,
                depth_single_blocks: 5,
                num_heads: 4,
                axes_dim: vec![2, 4, 2],
                ..FluxConfig::tiny(true)
            },
            grid: (2, 6),
            txt_len: 9,
            batch: 1,
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let d = run_case(case, 100 + i as u64)?;
        assert!(d <= 1e-5, "case {i}: max |ours - candle| = {d}");
    }
    Ok(())
}

/// A control that implements every hook by handing its input straight back
/// (and asks for the attention probabilities), called through `dyn Control`.
struct PassThrough {
    calls: usize,
}

impl Control for PassThrough {
    fn text_embeddings(&mut self, _: &StepCtx, txt: Tensor) -> Result<Tensor> {
        self.calls += 1;
        Ok(txt)
    }
    fn projections(
        &mut self,
        _: &HookCtx,
        _: Stream,
        q: Tensor,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        self.calls += 1;
        Ok((q, k, v))
    }
    fn qkv(
        &mut self,
        _: &HookCtx,
        q: Tensor,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        self.calls += 1;
        Ok((q, k, v))
    }
    fn attention(&mut self, _: &HookCtx, call: &AttentionCall) -> Result<Tensor> {
        self.calls += 1;
        call.run()
    }
    fn wants_attention_probs(&self, _: &HookCtx) -> bool {
        true
    }
    fn attention_probs(&mut self, _: &HookCtx, q: &Tensor, k: &Tensor) -> Result<()> {
        // Reading the scores must not disturb the forward pass.
        let _ = q.matmul(&k.t()?)?;
        self.calls += 1;
        Ok(())
    }
    fn attention_output(&mut self, _: &HookCtx, out: Tensor) -> Result<Tensor> {
        self.calls += 1;
        Ok(out)
    }
    fn residual(&mut self, _: &HookCtx, _: Stream, _: Branch, x: Tensor) -> Result<Tensor> {
        self.calls += 1;
        Ok(x)
    }
    fn block_output(&mut self, _: &HookCtx, _: Stream, x: Tensor) -> Result<Tensor> {
        self.calls += 1;
        Ok(x)
    }
}

#[test]
fn forward_through_every_hook_is_bit_identical_to_no_control() -> Result<()> {
    let dev = Device::Cpu;
    let cfg = FluxConfig::tiny(true);
    let weights = random_weights(&cfg, 7, DType::F32, &dev)?;
    let model = FluxTransformer::new(&cfg, VarBuilder::from_tensors(weights, DType::F32, &dev))?;
    let (rows, cols, txt_len) = (3, 4, 6);
    let img = seeded_normal(1, &[2, rows * cols, cfg.in_channels], &dev)?;
    let txt = seeded_normal(2, &[2, txt_len, cfg.context_in_dim], &dev)?;
    let pooled = seeded_normal(3, &[2, cfg.vec_in_dim], &dev)?;
    let t = Tensor::new(&[0.5f32, 0.25], &dev)?;
    let g = Tensor::new(&[3.5f32, 3.5], &dev)?;
    let rope = model.rope_tables(txt_len, rows, cols)?;
    let inputs = FluxInputs {
        img: &img,
        txt: &txt,
        pooled: &pooled,
        timesteps: &t,
        guidance: Some(&g),
        rope: &rope,
        img_grid: (rows, cols),
    };
    let step = StepInfo {
        step: 3,
        num_steps: 10,
        batch_index: &[0, 1],
    };
    let plain = model.forward_with(&inputs, &step, &mut NoControl)?;
    let mut pass = PassThrough { calls: 0 };
    let hooked = model.forward_with(&inputs, &step, &mut pass as &mut dyn Control)?;
    // text + per double block (2 projections, qkv, attention, probs, output, 4 residuals, 2 outputs)
    // + per single block (projections, qkv, attention, probs, output, residual, output).
    assert_eq!(pass.calls, 1 + cfg.depth * 12 + cfg.depth_single_blocks * 7);
    let a = plain.flatten_all()?.to_vec1::<f32>()?;
    let b = hooked.flatten_all()?.to_vec1::<f32>()?;
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "outputs differ"
    );
    Ok(())
}
