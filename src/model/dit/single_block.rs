//! Single-stream block: one sequence (text then image), attention and MLP fused in `linear1`.

use candle_core::{D, Result, Tensor};

use super::attention::AttentionCall;
use super::config::FluxConfig;
use super::control::{Branch, Control, HookCtx, Stream};
use super::cpu_kernels::gelu_tanh;
use super::double_block::report_attention_probs;
use super::layers::{Modulation, PlainLayerNorm, QkNorm, split_heads, split_qkv};
use super::linear::{Linear, WeightSource};
use super::rope::RopeTables;

#[derive(Debug, Clone)]
pub struct SingleBlock {
    modulation: Modulation,
    /// Produces q, k, v and the MLP input in one product: `[C] -> [3C + M]`.
    linear1: Linear,
    /// Takes the concatenated attention output and activated MLP: `[C + M] -> [C]`.
    linear2: Linear,
    norm: QkNorm,
    pre_norm: PlainLayerNorm,
    hidden: usize,
    mlp_hidden: usize,
    num_heads: usize,
}

impl SingleBlock {
    pub fn new(cfg: &FluxConfig, vb: WeightSource) -> Result<Self> {
        let h = cfg.hidden_size;
        let m = cfg.mlp_hidden();
        Ok(Self {
            modulation: Modulation::new(h, 1, vb.pp("modulation"))?,
            linear1: vb.linear(h, 3 * h + m, true, "linear1")?,
            linear2: vb.linear(h + m, h, true, "linear2")?,
            norm: QkNorm::new(cfg.head_dim(), vb.pp("norm"))?,
            pre_norm: PlainLayerNorm::new(h, vb.dtype(), vb.device())?,
            hidden: h,
            mlp_hidden: m,
            num_heads: cfg.num_heads,
        })
    }

    /// `x` `[B, L_txt + L_img, C]`, `vec` `[B, C]`.
    pub fn forward<C: Control + ?Sized>(
        &self,
        x: &Tensor,
        vec: &Tensor,
        rope: &RopeTables,
        ctrl: &mut C,
        ctx: &HookCtx,
    ) -> Result<Tensor> {
        let m = self.modulation.forward(vec)?.remove(0);
        let h = m
            .scale_shift(&self.pre_norm.forward(x)?)?
            .apply(&self.linear1)?;
        let (q, k, v) = split_qkv(&h, self.hidden)?;
        let mlp_in = h.narrow(D::Minus1, 3 * self.hidden, self.mlp_hidden)?;
        let (q, k, v) = ctrl.projections(ctx, Stream::Joint, q, k, v)?;
        let (q, k) = self.norm.forward(&q, &k, self.num_heads)?;
        let v = split_heads(&v, self.num_heads)?;
        let (q, k, v) = ctrl.qkv(ctx, q, k, v)?;
        let call = AttentionCall::new(&q, &k, &v, rope);
        report_attention_probs(&call, ctx.txt_len, ctrl, ctx)?;
        let attn = ctrl.attention(ctx, &call)?;
        let attn = ctrl.attention_output(ctx, attn)?;
        let out = Tensor::cat(&[attn, gelu_tanh(&mlp_in)?], D::Minus1)?.apply(&self.linear2)?;
        let branch = m.gate(&out)?;
        let branch = ctrl.residual(ctx, Stream::Joint, Branch::Fused, branch)?;
        let x = (x + branch)?;
        ctrl.block_output(ctx, Stream::Joint, x)
    }
}
