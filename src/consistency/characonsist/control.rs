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
//! Background keys come from the sample's background source: the identity in "keep" mode,
//! nothing in "switch" mode, and in "mixed scenes" the scene's first frame for the later
//! frames of that scene (see [`background_sources`]). A source frame's keys/values are put
//! into its own bank the same way as the identity's.
//!
//! The pre-run shares nothing (the released code already shares background keys there): in
//! a co-batched run the identity's mask does not exist before the extraction step, and both
//! strategies must give the same images.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use candle_core::{DType, IndexOp, Result, Tensor};

use super::FrameAnalysis;
use super::bank::{IdentityBank, encode_keys_at};
use super::mask::{MaskAccumulator, PromptSpans, TokenMask};
use super::matching::{Match, SimilarityAccumulator, match_points};
use super::merge::{gather_along, token_merge};
use super::plan::{additive_mask, plan_extra_keys};
use super::schedule::{LayerSharing, alpha_at};
use super::settings::{BackgroundMode, CharaConsistSettings};
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

/// A recorded trajectory reused by later frames: the identity's (read for foreground keys,
/// attention outputs and, in "keep" mode, background keys), or a scene's first frame (read
/// for background keys by the later frames of its scene).
#[derive(Debug, Clone)]
pub struct StoredIdentity {
    pub bank: IdentityBank,
    /// Its mask from the pre-run's extraction step (used by readers up to their own
    /// extraction step).
    pub mask: Option<TokenMask>,
    /// Its mask from the full run's extraction step, used after it, when it differs from
    /// `mask` (a scene source that itself borrows the identity's foreground); `None` for the
    /// identity, whose trajectory does not change.
    pub full_run_mask: Option<TokenMask>,
    /// Token grid (rows, cols).
    pub grid: (usize, usize),
}

/// Per sample, which sample it borrows background keys from (eqs. 14-15's optional part):
/// "keep" reads the identity, "switch" nothing, "mixed scenes" the first frame (in sample
/// order) of the frame's scene, and the first frame of a scene keeps its own background.
/// `scenes[s]` is sample `s`'s scene (ignored for the identity).
pub fn background_sources(
    mode: BackgroundMode,
    roles: &[Role],
    scenes: &[u32],
) -> Vec<Option<usize>> {
    let identity = roles.iter().position(|r| *r == Role::Identity);
    let mut first_of_scene: BTreeMap<u32, usize> = BTreeMap::new();
    roles
        .iter()
        .enumerate()
        .map(|(sample, role)| match (role, mode) {
            (Role::Identity, _) | (_, BackgroundMode::Switch) => None,
            (Role::Frame(_), BackgroundMode::Keep) => identity,
            (Role::Frame(_), BackgroundMode::MixedScenes) => {
                let scene = scenes.get(sample).copied().unwrap_or(0);
                match first_of_scene.get(&scene) {
                    Some(&source) => Some(source),
                    None => {
                        first_of_scene.insert(scene, sample);
                        None
                    }
                }
            }
        })
        .collect()
}

pub struct CharaConsistControl {
    s: CharaConsistSettings,
    pass: Pass,
    roles: Vec<Role>,
    spans: Vec<PromptSpans>,
    /// Sample index of the identity.
    identity: usize,
    /// Recorded keys/values (and the identity's attention outputs) per source sample.
    banks: BTreeMap<usize, IdentityBank>,
    bank_dtype: DType,
    /// Keep the banks after each block (stored strategy) or drop them (co-batched).
    keep_bank: bool,
    /// Per sample, the sample it borrows background keys from.
    background_sources: Vec<Option<usize>>,
    /// Samples that record their keys/values for readers that are not in this control's
    /// story (a scene source rendered on its own).
    extra_sources: BTreeSet<usize>,
    axes_dim: Vec<usize>,
    theta: f64,
    /// Token grid of every sample seen (or stored).
    grids: HashMap<usize, (usize, usize)>,
    /// Per sample, at the extraction step: the mask scores and (frames) the similarity to
    /// the identity, accumulated over the analysis layers.
    mask_acc: HashMap<usize, MaskAccumulator>,
    sim_acc: HashMap<usize, SimilarityAccumulator>,
    masks: HashMap<usize, TokenMask>,
    /// Stored sources' full-run masks, taken over at the full run's extraction step.
    late_masks: HashMap<usize, TokenMask>,
    identity_mask: Option<TokenMask>,
    matches: HashMap<usize, Vec<Match>>,
    pending: Option<usize>,
}

impl CharaConsistControl {
    /// `settings` must already be scaled to the run (see `CharaConsistSettings::scaled_to`);
    /// `roles[s]` and `spans[s]` describe sample `s`. Background sources follow the
    /// settings' mode with every frame in scene 0 (see [`Self::with_scenes`]).
    pub fn new(
        settings: CharaConsistSettings,
        roles: Vec<Role>,
        spans: Vec<PromptSpans>,
        axes_dim: Vec<usize>,
        theta: f64,
        bank: IdentityBank,
        keep_bank: bool,
    ) -> Self {
        let identity = roles.iter().position(|r| *r == Role::Identity).unwrap_or(0);
        let background_sources = background_sources(settings.background, &roles, &[]);
        let bank_dtype = bank.storage_dtype();
        Self {
            s: settings,
            pass: Pass::PreRun,
            roles,
            spans,
            identity,
            banks: BTreeMap::from([(identity, bank)]),
            bank_dtype,
            keep_bank,
            background_sources,
            extra_sources: BTreeSet::new(),
            axes_dim,
            theta,
            grids: HashMap::new(),
            mask_acc: HashMap::new(),
            sim_acc: HashMap::new(),
            masks: HashMap::new(),
            late_masks: HashMap::new(),
            identity_mask: None,
            matches: HashMap::new(),
            pending: None,
        }
    }

    /// Every sample's scene (`scenes[s]`, the identity's ignored), for "mixed scenes".
    pub fn with_scenes(mut self, scenes: &[u32]) -> Self {
        self.background_sources = background_sources(self.s.background, &self.roles, scenes);
        self
    }

    /// The sample each sample borrows background keys from.
    pub fn background_source(&self, sample: usize) -> Option<usize> {
        self.background_sources.get(sample).copied().flatten()
    }

    pub fn settings(&self) -> &CharaConsistSettings {
        &self.s
    }

    pub fn set_pass(&mut self, pass: Pass) -> Result<()> {
        self.finish()?;
        self.pass = pass;
        Ok(())
    }

    /// The identity's bank.
    pub fn bank(&self) -> &IdentityBank {
        &self.banks[&self.identity]
    }

    /// What sample `sample` recorded as a background source (stored strategy).
    pub fn recorded_bank(&self, sample: usize) -> Option<&IdentityBank> {
        self.banks.get(&sample)
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
            bank: self.bank().clone(),
            mask: self.identity_mask.clone(),
            full_run_mask: None,
            grid: self.grids.get(&self.identity).copied().unwrap_or_default(),
        }
    }

    /// Continues from a stored identity (stored-bank strategy).
    pub fn with_stored_identity(mut self, stored: StoredIdentity) -> Self {
        self.banks.insert(self.identity, stored.bank);
        self.identity_mask = stored.mask;
        self.grids.insert(self.identity, stored.grid);
        self.keep_bank = true;
        self
    }

    /// Frame sample `reader` borrows its background keys from a stored scene source (a
    /// scene's first frame rendered earlier) instead of from its own mode's source.
    pub fn with_stored_background_source(mut self, reader: usize, stored: StoredIdentity) -> Self {
        // A sample index no row of this story uses.
        let key = self.roles.len().max(self.background_sources.len()) + self.banks.len();
        if self.background_sources.len() <= reader {
            self.background_sources.resize(reader + 1, None);
        }
        self.background_sources[reader] = Some(key);
        self.banks.insert(key, stored.bank);
        if let Some(mask) = stored.mask {
            self.masks.insert(key, mask);
        }
        if let Some(late) = stored.full_run_mask {
            self.late_masks.insert(key, late);
        }
        self.grids.insert(key, stored.grid);
        self.keep_bank = true;
        self
    }

    /// Sample `sample` records its keys/values as a background source although its readers
    /// are rendered later (a scene's first frame on the stored strategy).
    pub fn recording_background_source(mut self, sample: usize) -> Self {
        self.extra_sources.insert(sample);
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

    /// Whether some frame borrows background keys from `sample`.
    fn is_background_source(&self, sample: usize) -> bool {
        self.extra_sources.contains(&sample)
            || self.background_sources.iter().any(|s| *s == Some(sample))
    }

    /// Whether sample `sample`'s keys/values at (step, block) are read by frames of a full
    /// run: the identity's on foreground layers, and any background source's on background
    /// layers (only those; `budget` estimates the same).
    fn kv_needed(&self, sample: usize, step: usize, block: usize) -> bool {
        let full = LayerSharing::full_run(&self.s, step, block);
        let foreground = full.foreground && sample == self.identity;
        let background = full.background && self.is_background_source(sample);
        foreground || background
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
            let (rows, cols) = self.grids.get(&sample).copied().unwrap_or_default();
            let mask = acc.mask(rows, cols, spans, &self.s)?;
            if sample == self.identity {
                self.identity_mask = Some(mask);
            } else {
                self.masks.insert(sample, mask);
            }
        }
        if self.pass == Pass::Full {
            // Stored scene sources switch to their full-run masks at this step, as they do
            // when they run in the same batch.
            for (key, mask) in self.late_masks.drain() {
                self.masks.insert(key, mask);
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
        let source = self.background_source(sample);
        let full = self.sharing(ctx.step, block);
        let sharing = LayerSharing {
            foreground: full.foreground,
            background: full.background && source.is_some(),
        };
        if !sharing.any() {
            return Ok(None);
        }
        let (Some(frame_mask), Some(id_mask)) =
            (self.masks.get(&sample), self.identity_mask.as_ref())
        else {
            return Ok(None);
        };
        let source_mask = match source {
            Some(s) if s == self.identity => Some(id_mask),
            Some(s) => self.masks.get(&s),
            None => None,
        };
        let matches = self.matches.get(&sample).map(Vec::as_slice).unwrap_or(&[]);
        let plan = plan_extra_keys(frame_mask, id_mask, matches, source_mask, sharing)?;
        if plan.is_empty() {
            return Ok(None);
        }
        let mut ks = Vec::with_capacity(2);
        let mut vs = Vec::with_capacity(2);
        if !plan.fg_identity_tokens.is_empty() {
            // Foreground keys move to the frame positions they matched (eqs. 12-13).
            let (k_id, v_id) = self.bank_kv(self.identity, ctx.step, block, dtype)?;
            let positions: Vec<[f32; 3]> = plan
                .fg_positions
                .iter()
                .map(|&t| grid_position(t as usize, ctx.img_grid))
                .collect();
            ks.push(encode_keys_at(
                &gather_along(&k_id, 1, &plan.fg_identity_tokens)?,
                &positions,
                &self.axes_dim,
                self.theta,
            )?);
            vs.push(gather_along(&v_id, 1, &plan.fg_identity_tokens)?);
        }
        if let (false, Some(source)) = (plan.bg_identity_tokens.is_empty(), source) {
            // Background keys stay where they are in their source.
            let (k_src, v_src) = self.bank_kv(source, ctx.step, block, dtype)?;
            let grid = self.grids.get(&source).copied().unwrap_or(ctx.img_grid);
            let positions: Vec<[f32; 3]> = plan
                .bg_identity_tokens
                .iter()
                .map(|&t| grid_position(t as usize, grid))
                .collect();
            ks.push(encode_keys_at(
                &gather_along(&k_src, 1, &plan.bg_identity_tokens)?,
                &positions,
                &self.axes_dim,
                self.theta,
            )?);
            vs.push(gather_along(&v_src, 1, &plan.bg_identity_tokens)?);
        }
        let (k, v) = (Tensor::cat(&ks, 1)?, Tensor::cat(&vs, 1)?);
        let mask = additive_mask(&plan, frame_mask, ctx.txt_len, ctx.img_len(), k.device())?;
        Ok(Some(ExtraKv {
            k: k.unsqueeze(0)?,
            v: v.unsqueeze(0)?,
            mask: Some(mask.unsqueeze(0)?),
        }))
    }

    /// Keys and values of a source at (step, block); a hole is a bug or a bank recorded for
    /// other settings, never silently skipped.
    fn bank_kv(
        &self,
        source: usize,
        step: usize,
        block: usize,
        dtype: DType,
    ) -> Result<(Tensor, Tensor)> {
        let kv = match self.banks.get(&source) {
            Some(bank) => bank.kv(step, block, dtype)?,
            None => None,
        };
        kv.ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "the bank of sample {source} has no keys for step {step}, single block {block}"
            ))
        })
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
        self.bank().attention(ctx.step, block, out.dtype())
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
        if self.pass == Pass::PreRun {
            return Ok((q, k, v));
        }
        for row in 0..ctx.batch_size() {
            let sample = ctx.batch_index[row];
            if self.kv_needed(sample, ctx.step, block) {
                let n = ctx.img_len();
                let k_img = k.i(row)?.narrow(1, ctx.txt_len, n)?;
                let v_img = v.i(row)?.narrow(1, ctx.txt_len, n)?;
                let dtype = self.bank_dtype;
                self.banks
                    .entry(sample)
                    .or_insert_with(|| IdentityBank::new(dtype))
                    .put_kv(ctx.step, block, &k_img, &v_img)?;
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
            for bank in self.banks.values_mut() {
                bank.forget(ctx.step, block);
            }
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
            self.grids.insert(sample, ctx.img_grid);
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
                let identity = out.i(0)?.narrow(0, ctx.txt_len, n)?;
                self.banks
                    .entry(self.identity)
                    .or_insert_with(|| IdentityBank::new(self.bank_dtype))
                    .put_attention(ctx.step, block, &identity)?;
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
