//! The hook points: the seam between the transformer and the consistency methods.
//!
//! The DiT calls a [`Control`] at fixed places of every forward pass. Every method has a
//! default that leaves the tensors untouched, so [`NoControl`] is a vanilla model; the forward
//! pass is generic over the control, so with `NoControl` the hooks compile away entirely.

use candle_core::{Result, Tensor};

use super::attention::AttentionCall;

/// Which transformer block a hook is called from (0-based within its kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockId {
    Double(usize),
    Single(usize),
}

impl BlockId {
    /// Index over all blocks, double blocks first, as the papers number them
    /// ("block 25 of 57" of FLUX.1 is `Single(6)`).
    pub fn global_index(self, num_double: usize) -> usize {
        match self {
            BlockId::Double(i) => i,
            BlockId::Single(i) => num_double + i,
        }
    }
}

/// Which token stream a tensor belongs to. Double blocks have separate text and image
/// weights; single blocks process the joint sequence (text first, then image).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Text,
    Image,
    Joint,
}

/// A residual branch: the gated output of a sub-layer right before it is added to its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Branch {
    /// Gated attention output (after the output projection).
    Attention,
    /// Gated feed-forward output.
    FeedForward,
    /// Single blocks fuse attention and MLP into one gated branch.
    Fused,
}

/// Where a forward pass is: handed to every hook.
#[derive(Debug, Clone)]
pub struct HookCtx<'a> {
    /// 0-based sampler step of this forward pass.
    pub step: usize,
    pub num_steps: usize,
    pub block: BlockId,
    pub num_double: usize,
    pub num_single: usize,
    /// Number of text tokens at the front of the joint sequence.
    pub txt_len: usize,
    /// Latent token grid (rows, columns) of the image part.
    pub img_grid: (usize, usize),
    /// For every row of the batch, the index of the sample it belongs to
    /// (set by whoever assembled the batch; e.g. 0 for the identity image, 1.. for frames).
    pub batch_index: &'a [usize],
}

impl HookCtx<'_> {
    pub fn img_len(&self) -> usize {
        self.img_grid.0 * self.img_grid.1
    }

    pub fn batch_size(&self) -> usize {
        self.batch_index.len()
    }
}

/// Context of the whole forward pass (no block yet), for hooks outside the blocks.
#[derive(Debug, Clone)]
pub struct StepCtx<'a> {
    pub step: usize,
    pub num_steps: usize,
    pub txt_len: usize,
    pub img_grid: (usize, usize),
    pub batch_index: &'a [usize],
}

/// Hook points of the FLUX transformer. All tensors have the batch first.
///
/// Shapes use B = batch, L = joint length (text then image), H = heads, D = head width,
/// C = hidden width.
pub trait Control {
    /// T5 features `[B, L_txt, context_dim]` before `txt_in`.
    fn text_embeddings(&mut self, _ctx: &StepCtx, txt: Tensor) -> Result<Tensor> {
        Ok(txt)
    }

    /// q, k, v `[B, L_stream, C]` right after the linear projection, before the head reshape
    /// and the q/k RMSNorm. In double blocks called once for the text and once for the image
    /// stream; in single blocks once for the joint sequence.
    fn projections(
        &mut self,
        _ctx: &HookCtx,
        _stream: Stream,
        q: Tensor,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        Ok((q, k, v))
    }

    /// Joint q, k, v `[B, H, L, D]` after the q/k RMSNorm and before RoPE ("pre-RoPE keys").
    fn qkv(
        &mut self,
        _ctx: &HookCtx,
        q: Tensor,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        Ok((q, k, v))
    }

    /// Replaces the attention. The call carries the pre-RoPE q, k, v and the RoPE tables; the
    /// default runs plain attention. A control may add extra keys/values and an additive mask
    /// with [`AttentionCall::run_with_extra`]. Returns `[B, L, C]`.
    fn attention(&mut self, _ctx: &HookCtx, call: &AttentionCall) -> Result<Tensor> {
        call.run()
    }

    /// Whether [`Control::attention_probs`] should be called for this block (the scores
    /// cost an extra matrix product, so they are computed on demand only).
    fn wants_attention_probs(&self, _ctx: &HookCtx) -> bool {
        false
    }

    /// Image-to-text attention inputs: the RoPE-encoded queries of the image tokens
    /// `[B, H, L_img, D]` and keys of the text tokens `[B, H, L_txt, D]`, so a control can
    /// form the softmax over the real text tokens it cares about, scaled or not.
    fn attention_probs(&mut self, _ctx: &HookCtx, _q_img: &Tensor, _k_txt: &Tensor) -> Result<()> {
        Ok(())
    }

    /// The per-token attention output `[B, L, C]` (joint, text first) before the output
    /// projection (double blocks) or before the concat with the MLP branch (single blocks).
    fn attention_output(&mut self, _ctx: &HookCtx, out: Tensor) -> Result<Tensor> {
        Ok(out)
    }

    /// A gated branch output `[B, L_stream, C]` right before it is added to its stream.
    fn residual(
        &mut self,
        _ctx: &HookCtx,
        _stream: Stream,
        _branch: Branch,
        x: Tensor,
    ) -> Result<Tensor> {
        Ok(x)
    }

    /// The stream after a block: `[B, L_stream, C]`.
    fn block_output(&mut self, _ctx: &HookCtx, _stream: Stream, x: Tensor) -> Result<Tensor> {
        Ok(x)
    }
}

/// A control borrowed for a while (e.g. to run it together with another in a pair).
impl<C: Control + ?Sized> Control for &mut C {
    fn text_embeddings(&mut self, ctx: &StepCtx, txt: Tensor) -> Result<Tensor> {
        (**self).text_embeddings(ctx, txt)
    }
    fn projections(
        &mut self,
        ctx: &HookCtx,
        stream: Stream,
        q: Tensor,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        (**self).projections(ctx, stream, q, k, v)
    }
    fn qkv(
        &mut self,
        ctx: &HookCtx,
        q: Tensor,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        (**self).qkv(ctx, q, k, v)
    }
    fn attention(&mut self, ctx: &HookCtx, call: &AttentionCall) -> Result<Tensor> {
        (**self).attention(ctx, call)
    }
    fn wants_attention_probs(&self, ctx: &HookCtx) -> bool {
        (**self).wants_attention_probs(ctx)
    }
    fn attention_probs(&mut self, ctx: &HookCtx, q_img: &Tensor, k_txt: &Tensor) -> Result<()> {
        (**self).attention_probs(ctx, q_img, k_txt)
    }
    fn attention_output(&mut self, ctx: &HookCtx, out: Tensor) -> Result<Tensor> {
        (**self).attention_output(ctx, out)
    }
    fn residual(
        &mut self,
        ctx: &HookCtx,
        stream: Stream,
        branch: Branch,
        x: Tensor,
    ) -> Result<Tensor> {
        (**self).residual(ctx, stream, branch, x)
    }
    fn block_output(&mut self, ctx: &HookCtx, stream: Stream, x: Tensor) -> Result<Tensor> {
        (**self).block_output(ctx, stream, x)
    }
}

/// The vanilla model.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoControl;

impl Control for NoControl {}

/// Lets one control run several others in order (e.g. CharaConsist and ASemConsist together).
impl<A: Control, B: Control> Control for (A, B) {
    fn text_embeddings(&mut self, ctx: &StepCtx, txt: Tensor) -> Result<Tensor> {
        let txt = self.0.text_embeddings(ctx, txt)?;
        self.1.text_embeddings(ctx, txt)
    }
    fn projections(
        &mut self,
        ctx: &HookCtx,
        stream: Stream,
        q: Tensor,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (q, k, v) = self.0.projections(ctx, stream, q, k, v)?;
        self.1.projections(ctx, stream, q, k, v)
    }
    fn qkv(
        &mut self,
        ctx: &HookCtx,
        q: Tensor,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (q, k, v) = self.0.qkv(ctx, q, k, v)?;
        self.1.qkv(ctx, q, k, v)
    }
    /// The first control that changes attention wins; the second sees the plain call.
    fn attention(&mut self, ctx: &HookCtx, call: &AttentionCall) -> Result<Tensor> {
        self.0.attention(ctx, call)
    }
    fn wants_attention_probs(&self, ctx: &HookCtx) -> bool {
        self.0.wants_attention_probs(ctx) || self.1.wants_attention_probs(ctx)
    }
    fn attention_probs(&mut self, ctx: &HookCtx, q_img: &Tensor, k_txt: &Tensor) -> Result<()> {
        if self.0.wants_attention_probs(ctx) {
            self.0.attention_probs(ctx, q_img, k_txt)?;
        }
        if self.1.wants_attention_probs(ctx) {
            self.1.attention_probs(ctx, q_img, k_txt)?;
        }
        Ok(())
    }
    fn attention_output(&mut self, ctx: &HookCtx, out: Tensor) -> Result<Tensor> {
        let out = self.0.attention_output(ctx, out)?;
        self.1.attention_output(ctx, out)
    }
    fn residual(
        &mut self,
        ctx: &HookCtx,
        stream: Stream,
        branch: Branch,
        x: Tensor,
    ) -> Result<Tensor> {
        let x = self.0.residual(ctx, stream, branch, x)?;
        self.1.residual(ctx, stream, branch, x)
    }
    fn block_output(&mut self, ctx: &HookCtx, stream: Stream, x: Tensor) -> Result<Tensor> {
        let x = self.0.block_output(ctx, stream, x)?;
        self.1.block_output(ctx, stream, x)
    }
}
