//! Scaled dot-product attention, with optional extra keys/values and an additive mask.

use std::cell::OnceCell;

use candle_core::{D, Result, Tensor};

use super::cpu_kernels;
use super::cpu_matmul;
use super::rope::RopeTables;

/// Score matrices above this many bytes are computed a group of heads at a time,
/// so a 1024x1024 FLUX forward does not need gigabytes for one attention.
const SCORE_BUDGET_BYTES: usize = 256 << 20;

/// Keys and values added to a self-attention, already RoPE-encoded.
#[derive(Debug, Clone)]
pub struct ExtraKv {
    /// `[B, H, E, D]`
    pub k: Tensor,
    /// `[B, H, E, D]`
    pub v: Tensor,
    /// Additive mask on the extra columns only: `[B or 1, L, E]` (0 = visible, -inf = hidden).
    /// The sequence's own keys stay visible to every query.
    pub mask: Option<Tensor>,
}

/// One attention call as the DiT makes it: pre-RoPE q, k, v `[B, H, L, D]` and the tables.
pub struct AttentionCall<'a> {
    pub q: &'a Tensor,
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub rope: &'a RopeTables,
    q_rope: OnceCell<Tensor>,
    k_rope: OnceCell<Tensor>,
}

impl<'a> AttentionCall<'a> {
    pub fn new(q: &'a Tensor, k: &'a Tensor, v: &'a Tensor, rope: &'a RopeTables) -> Self {
        Self {
            q,
            k,
            v,
            rope,
            q_rope: OnceCell::new(),
            k_rope: OnceCell::new(),
        }
    }

    /// RoPE-encoded queries (computed once).
    pub fn q_rope(&self) -> Result<&Tensor> {
        if let Some(t) = self.q_rope.get() {
            return Ok(t);
        }
        let t = self.rope.apply(self.q)?;
        Ok(self.q_rope.get_or_init(|| t))
    }

    /// RoPE-encoded keys (computed once).
    pub fn k_rope(&self) -> Result<&Tensor> {
        if let Some(t) = self.k_rope.get() {
            return Ok(t);
        }
        let t = self.rope.apply(self.k)?;
        Ok(self.k_rope.get_or_init(|| t))
    }

    /// Plain attention; returns `[B, L, H*D]`.
    pub fn run(&self) -> Result<Tensor> {
        let out = sdpa(self.q_rope()?, self.k_rope()?, self.v, None)?;
        merge_heads(&out)
    }

    /// Attention over the sequence's own keys plus `extra`; returns `[B, L, H*D]`.
    pub fn run_with_extra(&self, extra: &ExtraKv) -> Result<Tensor> {
        let out = sdpa(self.q_rope()?, self.k_rope()?, self.v, Some(extra))?;
        merge_heads(&out)
    }
}

/// `[B, H, L, D]` -> `[B, L, H*D]`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    x.transpose(1, 2)?.flatten_from(2)
}

/// softmax(q k^T / sqrt(D)) v over `[B, H, L, D]` (q, k already RoPE-encoded), with extra
/// keys/values whose scores get an additive mask.
pub fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor, extra: Option<&ExtraKv>) -> Result<Tensor> {
    let (b, h, l, d) = q.dims4()?;
    let lk = k.dim(2)? + extra.map(|e| e.k.dim(2)).transpose()?.unwrap_or(0);
    let bytes = b * h * l * lk * q.dtype().size_in_bytes();
    let groups = bytes.div_ceil(SCORE_BUDGET_BYTES).clamp(1, h);
    if groups == 1 {
        return sdpa_heads(q, k, v, extra, d);
    }
    let per = h.div_ceil(groups);
    let mut outs = Vec::with_capacity(groups);
    let mut start = 0;
    while start < h {
        let n = per.min(h - start);
        let sub = |t: &Tensor| t.narrow(1, start, n);
        let e = extra
            .map(|e| -> Result<ExtraKv> {
                Ok(ExtraKv {
                    k: sub(&e.k)?,
                    v: sub(&e.v)?,
                    mask: e.mask.clone(),
                })
            })
            .transpose()?;
        outs.push(sdpa_heads(&sub(q)?, &sub(k)?, &sub(v)?, e.as_ref(), d)?);
        start += n;
    }
    Tensor::cat(&outs, 1)
}

fn sdpa_heads(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    extra: Option<&ExtraKv>,
    d: usize,
) -> Result<Tensor> {
    let scale = 1.0 / (d as f64).sqrt();
    let q = (q * scale)?.contiguous()?;
    let scores = times_transposed(&q, k)?;
    let Some(extra) = extra else {
        let p = cpu_kernels::softmax_last_dim(&scores)?;
        return times(&p, v);
    };
    let mut extra_scores = times_transposed(&q, &extra.k)?;
    if let Some(mask) = &extra.mask {
        // [B|1, L, E] -> [B|1, 1, L, E], broadcast over heads.
        let mask = mask.unsqueeze(1)?.to_dtype(extra_scores.dtype())?;
        extra_scores = extra_scores.broadcast_add(&mask)?;
    }
    let own = scores.dim(D::Minus1)?;
    let all = Tensor::cat(&[&scores, &extra_scores], D::Minus1)?;
    let p = cpu_kernels::softmax_last_dim(&all)?;
    let p_own = p.narrow(D::Minus1, 0, own)?;
    let p_extra = p.narrow(D::Minus1, own, extra_scores.dim(D::Minus1)?)?;
    times(&p_own, v)? + times(&p_extra, &extra.v)?
}

/// `a b^T` over the last two dimensions.
fn times_transposed(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if cpu_matmul::applies(a, b) {
        cpu_matmul::batched_matmul(a, b, true)
    } else {
        a.matmul(&b.t()?)
    }
}

/// `a b` over the last two dimensions.
fn times(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if cpu_matmul::applies(a, b) {
        cpu_matmul::batched_matmul(a, b, false)
    } else {
        a.matmul(&b.contiguous()?)
    }
}
