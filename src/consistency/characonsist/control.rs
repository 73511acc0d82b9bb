//! CharaConsist as a [`Control`] on the DiT hook points.
//!
//! A story is rendered in passes over the same noise (see [`Pass`]):
//! - `Record` (stored-bank strategy only): the identity image alone; the bank keeps exactly
//!   the keys/values and attention outputs the frames will read.
//! - `PreRun`: the frames (with the identity row in the batch when co-batched) up to the
//!   extraction step without any sharing, to get masks and point matches.
//! - `Full`: the whole trajectory with point-tracking attention (eqs. 10-17) and adaptive
//!   token merge (eq. 20) driven by the pre-run's analysis; at its own extraction step the
//!   analysis is recomputed and used from then on.
//!
//! Co-batched, the identity row (batch order: identity first) writes its keys/values of the
//! current block into the bank in the `qkv` hook and the frame rows read them in the
//! `attention` hook of the same block; they are dropped right after. Stored, the bank was
//! filled by the `Record` pass. The frame rows do the same arithmetic either way.
//!
//! The pre-run shares nothing (the released code already shares background keys there): in
//! a co-batched run the identity's mask does not exist before the extraction step, and both
//! strategies must give the same images.

use std::collections::HashMap;

use candle_core::{DType, IndexOp, Result, Tensor};

use super::FrameAnalysis;
use super::bank::{IdentityBank, encode_keys_at};
use super::mask::{MaskAccumulator, PromptSpans, TokenMask};
use super::matching::{Match, SimilarityAccumulator, match_points};
use super::merge::{gather_along, token_merge};
use super::plan::{additive_mask, plan_extra_keys};
use super::schedule::{LayerSharing, alpha_at};
use super::settings::CharaConsistSettings;
use crate::model::dit::attention::{AttentionCall, ExtraKv};
use crate::model::dit::{BlockId, Control, HookCtx};

/// What a batch row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Identity,
    Frame(usize),
}

/// Which pass of a story render the control is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Record,
    PreRun,
    Full,
}

/// An identity recorded once and reused by later frames.
#[derive(Debug, Clone)]
pub struct StoredIdentity {
    pub bank: IdentityBank,
    pub mask: Option<TokenMask>,
    pub grid: (usize, usize),
}

pub struct CharaConsistControl {
    s: CharaConsistSettings,
    pass: Pass,
    roles: Vec<Role>,
    spans: Vec<PromptSpans>,
    bank: IdentityBank,
    /// Keep the bank after each block (stored strategy) or drop it (co-batched).
    keep_bank: bool,
    axes_dim: Vec<usize>,
    theta: f64,
    identity_grid: (usize, usize),
    frame_grid: (usize, usize),
    /// Per sample, at the extraction step: the mask scores and (frames) the similarity to
    /// the identity, accumulated over the analysis layers.
    mask_acc: HashMap<usize, MaskAccumulator>,
    sim_acc: HashMap<usize, SimilarityAccumulator>,
    masks: HashMap<usize, TokenMask>,
    identity_mask: Option<TokenMask>,
    matches: HashMap<usize, Vec<Match>>,
    pending: Option<usize>,
}

impl CharaConsistControl {
    /// `settings` must already be scaled to the run (see `CharaConsistSettings::scaled_to`);
    /// `roles[s]` and `spans[s]` describe sample `s`.
    pub fn new(
        settings: CharaConsistSettings,
        roles: Vec<Role>,
        spans: Vec<PromptSpans>,
        axes_dim: Vec<usize>,
        theta: f64,
        bank: IdentityBank,
        keep_bank: bool,
    ) -> Self {
        Self {
            s: settings,
            pass: Pass::PreRun,
            roles,
            spans,
            bank,
            keep_bank,
            axes_dim,
            theta,
            identity_grid: (0, 0),
            frame_grid: (0, 0),
            mask_acc: HashMap::new(),
            sim_acc: HashMap::new(),
            masks: HashMap::new(),
            identity_mask: None,
            matches: HashMap::new(),
            pending: None,
        }
    }

    pub fn settings(&self) -> &CharaConsistSettings {
        &self.s
    }

    pub fn set_pass(&mut self, pass: Pass) -> Result<()> {
        self.finish()?;
        self.pass = pass;
        Ok(())
    }

    pub fn bank(&self) -> &IdentityBank {
        &self.bank
    }

    /// Call after sampling: completes the analysis of a last extraction step.
    pub fn finish(&mut self) -> Result<()> {
        if self.pending.take().is_some() {
            self.finalize()?;
        }
        Ok(())
    }

    /// The analysis of frame sample `s` (after the extraction step).
    pub fn analysis(&self, sample: usize) -> Option<FrameAnalysis> {
        Some(FrameAnalysis {
            frame_mask: self.masks.get(&sample)?.clone(),
            identity_mask: self.identity_mask.clone().unwrap_or_default(),
            matches: self.matches.get(&sample).cloned().unwrap_or_default(),
            extraction_step: self.s.extraction_step,
        })
    }

    pub fn identity_mask(&self) -> Option<&TokenMask> {
        self.identity_mask.as_ref()
    }

    /// The identity as recorded: its bank, mask and grid, for regenerating frames later.
    pub fn stored_identity(&self) -> StoredIdentity {
        StoredIdentity {
            bank: self.bank.clone(),
            mask: self.identity_mask.clone(),
            grid: self.identity_grid,
        }
    }

    /// Continues from a stored identity (stored-bank strategy).
    pub fn with_stored_identity(mut self, stored: StoredIdentity) -> Self {
        self.bank = stored.bank;
        self.identity_mask = stored.mask;
        self.identity_grid = stored.grid;
        self.keep_bank = true;
        self
    }

    fn role_of(&self, ctx: &HookCtx, row: usize) -> Role {
        let sample = ctx.batch_index[row];
        self.roles
            .get(sample)
            .copied()
            .unwrap_or(Role::Frame(sample))
    }

    fn sharing(&self, step: usize, block: usize) -> LayerSharing {
        match self.pass {
            Pass::Full => LayerSharing::full_run(&self.s, step, block),
            Pass::Record | Pass::PreRun => LayerSharing::default(),
        }
    }

    /// What the frames of a full run will read at (step, block): recorded by the identity.
    fn identity_kv_needed(&self, step: usize, block: usize) -> bool {
        LayerSharing::full_run(&self.s, step, block).any()
    }

    fn merging(&self, step: usize, block: usize) -> bool {
        self.s.is_foreground_layer(block) && alpha_at(step, &self.s) > 0.0
    }

    /// Completes a finished extraction step when a later step begins.
    fn observe_step(&mut self, ctx: &HookCtx) -> Result<()> {
        if let Some(step) = self.pending {
            if ctx.step != step {
                self.pending = None;
                self.finalize()?;
            }
        }
        if ctx.step == self.s.extraction_step {
            self.pending = Some(ctx.step);
        }
        Ok(())
    }

    /// Masks (eqs. 6-9) and matches (eqs. 4-5) from the accumulated extraction step.
    fn finalize(&mut self) -> Result<()> {
        for (sample, acc) in std::mem::take(&mut self.mask_acc) {
            let Some(spans) = self.spans.get(sample) else {
                continue;
            };
            let identity = self.roles.get(sample) == Some(&Role::Identity);
            let (rows, cols) = if identity {
                self.identity_grid
            } else {
                self.frame_grid
            };
            let mask = acc.mask(rows, cols, spans, &self.s)?;
            if identity {
                self.identity_mask = Some(mask);
            } else {
                self.masks.insert(sample, mask);
            }
        }
        let Some(id_mask) = self.identity_mask.clone() else {
            return Ok(());
        };
        for (sample, acc) in std::mem::take(&mut self.sim_acc) {
            let Some(frame_mask) = self.masks.get(&sample) else {
                continue;
            };
            let similarity = acc.mean()?;
            self.matches.insert(
                sample,
                match_points(&similarity, frame_mask, &id_mask, self.s.match_threshold)?,
            );
        }
        Ok(())
    }

    /// Extra keys/values and mask for one frame row at a single block (eqs. 10-17).
    fn extra_for(
        &self,
        ctx: &HookCtx,
        sample: usize,
        block: usize,
        dtype: DType,
    ) -> Result<Option<ExtraKv>> {
        let sharing = self.sharing(ctx.step, block);
        if !sharing.any() {
            return Ok(None);
        }
        let (Some(frame_mask), Some(id_mask)) =
            (self.masks.get(&sample), self.identity_mask.as_ref())
        else {
            return Ok(None);
        };
        let matches = self.matches.get(&sample).map(Vec::as_slice).unwrap_or(&[]);
        let plan = plan_extra_keys(frame_mask, id_mask, matches, Some(id_mask), sharing)?;
        if plan.is_empty() {
            return Ok(None);
        }
        let Some((k_id, v_id)) = self.bank.kv(ctx.step, block, dtype)? else {
            return Ok(None);
        };
        // Foreground keys move to the frame positions they matched (eqs. 12-13); background
        // keys stay where they are in the identity.
        let mut positions: Vec<[f32; 3]> = plan
            .fg_positions
            .iter()
            .map(|&t| grid_position(t as usize, self.frame_grid))
            .collect();
        positions.extend(
            plan.bg_identity_tokens
                .iter()
                .map(|&t| grid_position(t as usize, self.identity_grid)),
        );
        let mut tokens = plan.fg_identity_tokens.clone();
        tokens.extend(&plan.bg_identity_tokens);
        let k = encode_keys_at(
            &gather_along(&k_id, 1, &tokens)?,
            &positions,
            &self.axes_dim,
            self.theta,
        )?;
        let v = gather_along(&v_id, 1, &tokens)?;
        let mask = additive_mask(&plan, frame_mask, ctx.txt_len, ctx.img_len(), k.device())?;
        Ok(Some(ExtraKv {
            k: k.unsqueeze(0)?,
            v: v.unsqueeze(0)?,
            mask: Some(mask.unsqueeze(0)?),
        }))
    }

    /// The identity's image attention output of this block: live (co-batched) or stored.
    fn identity_attention(
        &self,
        ctx: &HookCtx,
        out: &Tensor,
        block: usize,
    ) -> Result<Option<Tensor>> {
        for row in 0..ctx.batch_size() {
            if self.role_of(ctx, row) == Role::Identity {
                return Ok(Some(
                    out.i(row)?
                        .narrow(0, ctx.txt_len, ctx.img_len())?
                        .contiguous()?,
                ));
            }
        }
        self.bank.attention(ctx.step, block, out.dtype())
    }
}

/// Position ids of token `t` of a grid.
fn grid_position(t: usize, grid: (usize, usize)) -> [f32; 3] {
    [0.0, (t / grid.1.max(1)) as f32, (t % grid.1.max(1)) as f32]
}

fn single(ctx: &HookCtx) -> Option<usize> {
    match ctx.block {
        BlockId::Single(b) => Some(b),
        BlockId::Double(_) => None,
    }
}

impl Control for CharaConsistControl {
    fn qkv(
        &mut self,
        ctx: &HookCtx,
        q: Tensor,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        self.observe_step(ctx)?;
        let Some(block) = single(ctx) else {
            return Ok((q, k, v));
        };
        if self.pass == Pass::PreRun || !self.identity_kv_needed(ctx.step, block) {
            return Ok((q, k, v));
        }
        for row in 0..ctx.batch_size() {
            if self.role_of(ctx, row) == Role::Identity {
                let n = ctx.img_len();
                let k_img = k.i(row)?.narrow(1, ctx.txt_len, n)?;
                let v_img = v.i(row)?.narrow(1, ctx.txt_len, n)?;
                self.bank.put_kv(ctx.step, block, &k_img, &v_img)?;
            }
        }
        Ok((q, k, v))
    }

    fn attention(&mut self, ctx: &HookCtx, call: &AttentionCall) -> Result<Tensor> {
        let Some(block) = single(ctx) else {
            return call.run();
        };
        if !self.sharing(ctx.step, block).any() {
            return call.run();
        }
        let dtype = call.k.dtype();
        let mut extras = Vec::with_capacity(ctx.batch_size());
        for row in 0..ctx.batch_size() {
            extras.push(match self.role_of(ctx, row) {
                Role::Identity => None,
                Role::Frame(_) => self.extra_for(ctx, ctx.batch_index[row], block, dtype)?,
            });
        }
        if !self.keep_bank {
            self.bank.forget(ctx.step, block);
        }
        if extras.iter().all(Option::is_none) {
            return call.run();
        }
        // Rows borrow different keys, so each row attends on its own.
        let mut outs = Vec::with_capacity(extras.len());
        for (row, extra) in extras.iter().enumerate() {
            let (q, k, v) = (
                call.q.narrow(0, row, 1)?,
                call.k.narrow(0, row, 1)?,
                call.v.narrow(0, row, 1)?,
            );
            let one = AttentionCall::new(&q, &k, &v, call.rope);
            outs.push(match extra {
                Some(e) => one.run_with_extra(e)?,
                None => one.run()?,
            });
        }
        Tensor::cat(&outs, 0)
    }

    fn wants_attention_probs(&self, ctx: &HookCtx) -> bool {
        single(ctx).is_some_and(|b| self.s.is_analysis_layer(b))
            && ctx.step == self.s.extraction_step
    }

    /// Image-to-text attention over the real text tokens (eqs. 6-8).
    fn attention_probs(&mut self, ctx: &HookCtx, q_img: &Tensor, k_txt: &Tensor) -> Result<()> {
        for row in 0..ctx.batch_size() {
            let sample = ctx.batch_index[row];
            let Some(spans) = self.spans.get(sample).cloned() else {
                continue;
            };
            let (q, k) = (
                q_img.i(row)?.to_dtype(DType::F32)?,
                k_txt.i(row)?.to_dtype(DType::F32)?,
            );
            self.mask_acc.entry(sample).or_default().add_queries_keys(
                &q,
                &k,
                &spans,
                self.s.mask_variant,
            )?;
            match self.role_of(ctx, row) {
                Role::Identity => self.identity_grid = ctx.img_grid,
                Role::Frame(_) => self.frame_grid = ctx.img_grid,
            }
        }
        Ok(())
    }

    fn attention_output(&mut self, ctx: &HookCtx, out: Tensor) -> Result<Tensor> {
        let Some(block) = single(ctx) else {
            return Ok(out);
        };
        let n = ctx.img_len();
        let extraction = ctx.step == self.s.extraction_step && self.s.is_analysis_layer(block);
        let merge = self.merging(ctx.step, block);
        if self.pass == Pass::Record {
            // Keep what the frames will read: outputs for matching and for merging.
            if extraction || merge {
                self.bank
                    .put_attention(ctx.step, block, &out.i(0)?.narrow(0, ctx.txt_len, n)?)?;
            }
            return Ok(out);
        }
        if extraction {
            if let Some(identity) = self.identity_attention(ctx, &out, block)? {
                for row in 0..ctx.batch_size() {
                    if let Role::Frame(_) = self.role_of(ctx, row) {
                        let frame = out.i(row)?.narrow(0, ctx.txt_len, n)?;
                        self.sim_acc
                            .entry(ctx.batch_index[row])
                            .or_default()
                            .add(&frame, &identity)?;
                    }
                }
            }
        }
        if self.pass != Pass::Full || !merge || !self.s.token_merge {
            return Ok(out);
        }
        let Some(identity) = self.identity_attention(ctx, &out, block)? else {
            return Ok(out);
        };
        let alpha = alpha_at(ctx.step, &self.s);
        let mut rows = Vec::with_capacity(ctx.batch_size());
        for row in 0..ctx.batch_size() {
            let r = out.i(row)?;
            let matches = self.matches.get(&ctx.batch_index[row]);
            rows.push(match (self.role_of(ctx, row), matches) {
                (Role::Frame(_), Some(m)) if !m.is_empty() => {
                    // CharaConsist eq. (20) on the frame's matched image tokens.
                    let img = token_merge(&r.narrow(0, ctx.txt_len, n)?, &identity, m, alpha)?;
                    Tensor::cat(&[r.narrow(0, 0, ctx.txt_len)?, img], 0)?
                }
                _ => r,
            });
        }
        Tensor::stack(&rows, 0)
    }
}
