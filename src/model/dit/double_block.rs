//! Double-stream block: separate weights for text and image tokens, joint attention.

use candle_core::{Result, Tensor};

use super::attention::AttentionCall;
use super::config::FluxConfig;
use super::control::{Branch, Control, HookCtx, Stream};
use super::layers::{
    Mlp, Modulation, ModulationOut, PlainLayerNorm, QkNorm, split_heads, split_qkv,
};
use super::linear::{Linear, WeightSource};
use super::rope::RopeTables;

/// The weights of one stream (`img_*` or `txt_*`) of a double block.
#[derive(Debug, Clone)]
struct StreamWeights {
    modulation: Modulation,
    qkv: Linear,
    norm: QkNorm,
    proj: Linear,
    mlp: Mlp,
}

impl StreamWeights {
    fn new(cfg: &FluxConfig, vb: WeightSource, prefix: &str) -> Result<Self> {
        let h = cfg.hidden_size;
        let attn = vb.pp(format!("{prefix}_attn"));
        Ok(Self {
            modulation: Modulation::new(h, 2, vb.pp(format!("{prefix}_mod")))?,
            qkv: attn.linear(h, 3 * h, cfg.qkv_bias, "qkv")?,
            norm: QkNorm::new(cfg.head_dim(), attn.pp("norm"))?,
            proj: attn.linear(h, h, true, "proj")?,
            mlp: Mlp::new(h, cfg.mlp_hidden(), vb.pp(format!("{prefix}_mlp")))?,
        })
    }
}

/// State of one stream between the attention and the feed-forward halves.
struct StreamState {
    attn_mod: ModulationOut,
    mlp_mod: ModulationOut,
}

#[derive(Debug, Clone)]
pub struct DoubleBlock {
    img: StreamWeights,
    txt: StreamWeights,
    norm: PlainLayerNorm,
    hidden: usize,
    num_heads: usize,
}

impl DoubleBlock {
    pub fn new(cfg: &FluxConfig, vb: WeightSource) -> Result<Self> {
        Ok(Self {
            img: StreamWeights::new(cfg, vb.clone(), "img")?,
            txt: StreamWeights::new(cfg, vb.clone(), "txt")?,
            norm: PlainLayerNorm::new(cfg.hidden_size, vb.dtype(), vb.device())?,
            hidden: cfg.hidden_size,
            num_heads: cfg.num_heads,
        })
    }

    /// Projects one stream: returns its modulations and per-head q, k, v `[B, H, L, D]`.
    fn project<C: Control + ?Sized>(
        &self,
        w: &StreamWeights,
        x: &Tensor,
        vec: &Tensor,
        stream: Stream,
        ctrl: &mut C,
        ctx: &HookCtx,
    ) -> Result<(StreamState, Tensor, Tensor, Tensor)> {
        let mut mods = w.modulation.forward(vec)?.into_iter();
        let (attn_mod, mlp_mod) = (mods.next().unwrap(), mods.next().unwrap());
        let x = attn_mod.scale_shift(&self.norm.forward(x)?)?;
        let qkv = x.apply(&w.qkv)?;
        let (q, k, v) = split_qkv(&qkv, self.hidden)?;
        let (q, k, v) = ctrl.projections(ctx, stream, q, k, v)?;
        let (q, k) = w.norm.forward(&q, &k, self.num_heads)?;
        let v = split_heads(&v, self.num_heads)?;
        Ok((StreamState { attn_mod, mlp_mod }, q, k, v))
    }

    /// Adds the attention and feed-forward branches of one stream.
    #[allow(clippy::too_many_arguments)]
    fn finish<C: Control + ?Sized>(
        &self,
        w: &StreamWeights,
        state: &StreamState,
        x: &Tensor,
        attn: &Tensor,
        stream: Stream,
        ctrl: &mut C,
        ctx: &HookCtx,
    ) -> Result<Tensor> {
        let branch = state.attn_mod.gate(&attn.apply(&w.proj)?)?;
        let branch = ctrl.residual(ctx, stream, Branch::Attention, branch)?;
        let x = (x + branch)?;
        let ff = state
            .mlp_mod
            .scale_shift(&self.norm.forward(&x)?)?
            .apply(&w.mlp)?;
        let branch = state.mlp_mod.gate(&ff)?;
        let branch = ctrl.residual(ctx, stream, Branch::FeedForward, branch)?;
        let x = (x + branch)?;
        ctrl.block_output(ctx, stream, x)
    }

    /// `img` `[B, L_img, C]`, `txt` `[B, L_txt, C]`, `vec` `[B, C]`; returns (img, txt).
    pub fn forward<C: Control + ?Sized>(
        &self,
        img: &Tensor,
        txt: &Tensor,
        vec: &Tensor,
        rope: &RopeTables,
        ctrl: &mut C,
        ctx: &HookCtx,
    ) -> Result<(Tensor, Tensor)> {
        let txt_len = txt.dim(1)?;
        let (img_state, iq, ik, iv) =
            self.project(&self.img, img, vec, Stream::Image, ctrl, ctx)?;
        let (txt_state, tq, tk, tv) = self.project(&self.txt, txt, vec, Stream::Text, ctrl, ctx)?;
        let q = Tensor::cat(&[tq, iq], 2)?;
        let k = Tensor::cat(&[tk, ik], 2)?;
        let v = Tensor::cat(&[tv, iv], 2)?;
        let (q, k, v) = ctrl.qkv(ctx, q, k, v)?;
        let call = AttentionCall::new(&q, &k, &v, rope);
        report_attention_probs(&call, txt_len, ctrl, ctx)?;
        let attn = ctrl.attention(ctx, &call)?;
        let attn = ctrl.attention_output(ctx, attn)?;
        let txt_attn = attn.narrow(1, 0, txt_len)?;
        let img_attn = attn.narrow(1, txt_len, attn.dim(1)? - txt_len)?;
        let img = self.finish(
            &self.img,
            &img_state,
            img,
            &img_attn,
            Stream::Image,
            ctrl,
            ctx,
        )?;
        let txt = self.finish(
            &self.txt,
            &txt_state,
            txt,
            &txt_attn,
            Stream::Text,
            ctrl,
            ctx,
        )?;
        Ok((img, txt))
    }
}

/// Hands the image-to-text attention inputs to a control that asked for them.
pub(crate) fn report_attention_probs<C: Control + ?Sized>(
    call: &AttentionCall,
    txt_len: usize,
    ctrl: &mut C,
    ctx: &HookCtx,
) -> Result<()> {
    if !ctrl.wants_attention_probs(ctx) {
        return Ok(());
    }
    let q = call.q_rope()?;
    let img_len = q.dim(2)? - txt_len;
    let q_img = q.narrow(2, txt_len, img_len)?;
    let k_txt = call.k_rope()?.narrow(2, 0, txt_len)?;
    ctrl.attention_probs(ctx, &q_img, &k_txt)
}
