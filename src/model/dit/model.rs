//! The FLUX transformer: embeddings, double blocks, single blocks, final layer.

use candle_core::{DType, Device, Result, Tensor};

use super::config::FluxConfig;
use super::control::{BlockId, Control, HookCtx, NoControl, StepCtx};
use super::double_block::DoubleBlock;
use super::embeddings::{MlpEmbedder, TIMESTEP_DIM, timestep_embedding};
use super::final_layer::FinalLayer;
use super::linear::{Linear, WeightSource};
use super::rope::{RopeTables, joint_positions};
use super::single_block::SingleBlock;

/// Inputs of one forward pass.
#[derive(Debug, Clone)]
pub struct FluxInputs<'a> {
    /// Packed latent tokens `[B, L_img, in_channels]`, row-major over `img_grid`.
    pub img: &'a Tensor,
    /// Text features `[B, L_txt, context_in_dim]`.
    pub txt: &'a Tensor,
    /// Pooled text vector `[B, vec_in_dim]`.
    pub pooled: &'a Tensor,
    /// Timestep in [0, 1] per sample `[B]`.
    pub timesteps: &'a Tensor,
    /// Distilled guidance per sample `[B]` (ignored by models without a guidance embedding).
    pub guidance: Option<&'a Tensor>,
    /// RoPE tables for the joint sequence (text then image), see [`FluxTransformer::rope_tables`].
    pub rope: &'a RopeTables,
    /// (rows, columns) of the latent token grid.
    pub img_grid: (usize, usize),
}

/// Where in the sampling loop a forward pass is, and which sample each batch row is.
#[derive(Debug, Clone)]
pub struct StepInfo<'a> {
    pub step: usize,
    pub num_steps: usize,
    pub batch_index: &'a [usize],
}

#[derive(Debug, Clone)]
pub struct FluxTransformer {
    cfg: FluxConfig,
    img_in: Linear,
    txt_in: Linear,
    time_in: MlpEmbedder,
    vector_in: MlpEmbedder,
    guidance_in: Option<MlpEmbedder>,
    double_blocks: Vec<DoubleBlock>,
    single_blocks: Vec<SingleBlock>,
    final_layer: FinalLayer,
    dtype: DType,
    device: Device,
}

impl FluxTransformer {
    /// Builds the model from weights in the original (BFL) names: a `VarBuilder` of dense
    /// tensors, or a [`WeightSource`] that also holds quantized ones.
    pub fn new<'a>(cfg: &FluxConfig, vb: impl Into<WeightSource<'a>>) -> Result<Self> {
        let vb = vb.into();
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let h = cfg.hidden_size;
        let double_blocks = (0..cfg.depth)
            .map(|i| DoubleBlock::new(cfg, vb.pp("double_blocks").pp(i)))
            .collect::<Result<_>>()?;
        let single_blocks = (0..cfg.depth_single_blocks)
            .map(|i| SingleBlock::new(cfg, vb.pp("single_blocks").pp(i)))
            .collect::<Result<_>>()?;
        let guidance_in = if cfg.guidance_embed {
            Some(MlpEmbedder::new(TIMESTEP_DIM, h, vb.pp("guidance_in"))?)
        } else {
            None
        };
        Ok(Self {
            cfg: cfg.clone(),
            img_in: vb.linear(cfg.in_channels, h, true, "img_in")?,
            txt_in: vb.linear(cfg.context_in_dim, h, true, "txt_in")?,
            time_in: MlpEmbedder::new(TIMESTEP_DIM, h, vb.pp("time_in"))?,
            vector_in: MlpEmbedder::new(cfg.vec_in_dim, h, vb.pp("vector_in"))?,
            guidance_in,
            double_blocks,
            single_blocks,
            final_layer: FinalLayer::new(h, cfg.in_channels, vb.pp("final_layer"))?,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &FluxConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// RoPE tables for `txt_len` text tokens followed by a `rows x cols` image grid.
    pub fn rope_tables(&self, txt_len: usize, rows: usize, cols: usize) -> Result<RopeTables> {
        let pos = joint_positions(txt_len, rows, cols);
        RopeTables::from_positions(&pos, &self.cfg.axes_dim, self.cfg.theta, &self.device)
    }

    /// The vanilla forward pass (no hooks).
    pub fn forward(&self, inputs: &FluxInputs) -> Result<Tensor> {
        let batch: Vec<usize> = (0..inputs.img.dim(0)?).collect();
        let step = StepInfo {
            step: 0,
            num_steps: 1,
            batch_index: &batch,
        };
        self.forward_with(inputs, &step, &mut NoControl)
    }

    /// The forward pass with a control on the hook points. Returns the velocity
    /// prediction `[B, L_img, in_channels]`.
    pub fn forward_with<C: Control + ?Sized>(
        &self,
        inputs: &FluxInputs,
        step: &StepInfo,
        ctrl: &mut C,
    ) -> Result<Tensor> {
        let (b, img_len, _) = inputs.img.dims3()?;
        let txt_len = inputs.txt.dim(1)?;
        let (rows, cols) = inputs.img_grid;
        if rows * cols != img_len {
            candle_core::bail!("image grid {rows}x{cols} does not match {img_len} tokens");
        }
        if inputs.rope.len() != txt_len + img_len {
            candle_core::bail!(
                "RoPE tables cover {} positions, the sequence has {}",
                inputs.rope.len(),
                txt_len + img_len
            );
        }
        if step.batch_index.len() != b {
            candle_core::bail!(
                "batch index has {} rows, batch has {b}",
                step.batch_index.len()
            );
        }
        let step_ctx = StepCtx {
            step: step.step,
            num_steps: step.num_steps,
            txt_len,
            img_grid: inputs.img_grid,
            batch_index: step.batch_index,
        };
        let txt = ctrl.text_embeddings(&step_ctx, inputs.txt.to_dtype(self.dtype)?)?;
        let mut txt = txt.apply(&self.txt_in)?;
        let mut img = inputs.img.to_dtype(self.dtype)?.apply(&self.img_in)?;
        let vec = self.conditioning(inputs)?;

        let mut ctx = HookCtx {
            step: step.step,
            num_steps: step.num_steps,
            block: BlockId::Double(0),
            num_double: self.double_blocks.len(),
            num_single: self.single_blocks.len(),
            txt_len,
            img_grid: inputs.img_grid,
            batch_index: step.batch_index,
        };
        for (i, block) in self.double_blocks.iter().enumerate() {
            ctx.block = BlockId::Double(i);
            (img, txt) = block.forward(&img, &txt, &vec, inputs.rope, ctrl, &ctx)?;
        }
        let mut x = Tensor::cat(&[&txt, &img], 1)?;
        for (i, block) in self.single_blocks.iter().enumerate() {
            ctx.block = BlockId::Single(i);
            x = block.forward(&x, &vec, inputs.rope, ctrl, &ctx)?;
        }
        let img = x.narrow(1, txt_len, img_len)?;
        self.final_layer.forward(&img, &vec)
    }

    /// The conditioning vector `[B, C]` from timestep, guidance and pooled text.
    fn conditioning(&self, inputs: &FluxInputs) -> Result<Tensor> {
        let t = timestep_embedding(inputs.timesteps, TIMESTEP_DIM, self.dtype)?;
        let mut vec = t.apply(&self.time_in)?;
        if let (Some(g_in), Some(g)) = (&self.guidance_in, inputs.guidance) {
            vec = (vec + timestep_embedding(g, TIMESTEP_DIM, self.dtype)?.apply(g_in))?;
        }
        vec + inputs.pooled.to_dtype(self.dtype)?.apply(&self.vector_in)
    }
}
