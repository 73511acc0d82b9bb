//! ASemConsist as a [`Control`] on the DiT's hook points: STM + PAD on the T5 features, STM
//! on the text q/k/v projections inside the chosen blocks and steps, and AFS (the ambiguity
//! probe and the residual-feature sharing).
//!
//! Every batch row belongs to a sample (`HookCtx::batch_index`); each sample has a
//! [`SampleRole`]. A generation with AFS in `Auto` mode runs in three passes:
//! 1. the prompt set `{p_id + p_i}` as [`SampleRole::Probe`] samples up to the probe step,
//!    then [`AsemControl::decide`];
//! 2. if sharing is on, `p_id` alone as a [`SampleRole::IdentityRecord`] sample, which fills
//!    the residual cache;
//! 3. the frames as [`SampleRole::Frame`] samples on the combined prompt.
//!
//! Passes 2 and 3 may share one batch: the identity row is recorded at a block before the
//! frame rows of the same block read it (rows are handled in batch order, identity first).

use std::collections::HashMap;

use candle_core::{Result, Tensor};

use super::afs::{AfsDecision, AfsMode, decide, radius_of_tensor};
use super::pipeline::{SegmentSpans, express_projection, modify_text_tensor, text_stage_is_active};
use super::schedule::{ModelDepth, scale_blocks};
use super::settings::AsemSettings;
use crate::model::dit::{BlockId, Branch, Control, HookCtx, StepCtx, Stream};

/// What a sample of the batch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleRole {
    /// Generates frame `i` of the combined prompt (expression = frame i, suppression = others).
    Frame(usize),
    /// A plain `{p_id + p_i}` run whose image features at the probe block and step feed the
    /// ambiguity radius.
    Probe,
    /// A plain `p_id`-only run whose residual features are cached for sharing.
    IdentityRecord,
    /// Untouched.
    Plain,
}

/// The ASemConsist control.
#[derive(Debug)]
pub struct AsemControl {
    settings: AsemSettings,
    spans: SegmentSpans,
    /// Role of each sample index.
    roles: Vec<SampleRole>,
    /// Modified T5 features per sample (the text is the same at every step).
    text_cache: HashMap<usize, Tensor>,
    /// Residual features of the identity run, per (step, block): `[1, L_img, C]`.
    residual_cache: HashMap<(usize, BlockId), Tensor>,
    /// Probe features per sample: `[1, L_img, C]`.
    probes: HashMap<usize, Tensor>,
    decision: Option<AfsDecision>,
}

fn err(e: super::AsemError) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

fn depth(ctx: &HookCtx) -> ModelDepth {
    ModelDepth {
        num_double: ctx.num_double,
        num_single: ctx.num_single,
    }
}

impl AsemControl {
    pub fn new(settings: AsemSettings, spans: SegmentSpans, roles: Vec<SampleRole>) -> Self {
        Self {
            settings,
            spans,
            roles,
            text_cache: HashMap::new(),
            residual_cache: HashMap::new(),
            probes: HashMap::new(),
            decision: None,
        }
    }

    pub fn settings(&self) -> &AsemSettings {
        &self.settings
    }

    /// Sets the roles for the next pass; the caches are kept (the residual cache of an
    /// identity pass is what the frame pass reads).
    pub fn set_roles(&mut self, roles: Vec<SampleRole>) {
        self.roles = roles;
        self.text_cache.clear();
    }

    fn role(&self, sample: usize) -> SampleRole {
        self.roles.get(sample).copied().unwrap_or(SampleRole::Plain)
    }

    fn row_roles(&self, batch_index: &[usize]) -> Vec<SampleRole> {
        batch_index.iter().map(|&s| self.role(s)).collect()
    }

    /// The ambiguity radius of the recorded probe features (`None` before any probe pass).
    pub fn probe_radius(&self) -> std::result::Result<Option<f32>, super::AsemError> {
        if self.probes.is_empty() {
            return Ok(None);
        }
        let mut samples: Vec<(&usize, &Tensor)> = self.probes.iter().collect();
        samples.sort_by_key(|(s, _)| **s);
        let stacked = Tensor::cat(
            &samples
                .iter()
                .map(|(_, t)| (*t).clone())
                .collect::<Vec<_>>(),
            0,
        )?;
        Ok(Some(radius_of_tensor(
            &stacked,
            self.settings.afs.normalisation,
        )?))
    }

    /// Takes the AFS decision from the probe radius and the settings; the UI shows it.
    pub fn decide(&mut self) -> std::result::Result<AfsDecision, super::AsemError> {
        let radius = self.probe_radius()?;
        let d = decide(self.settings.afs.mode, radius, self.settings.afs.threshold);
        self.decision = Some(d);
        Ok(d)
    }

    pub fn decision(&self) -> Option<AfsDecision> {
        self.decision
    }

    /// Whether frames receive the cached residual features.
    pub fn sharing_active(&self) -> bool {
        match self.settings.afs.mode {
            AfsMode::Always => true,
            AfsMode::Never => false,
            AfsMode::Auto => self.decision.is_some_and(|d| d.use_sharing),
        }
    }

    /// Number of cached residual tensors.
    pub fn residual_cache_len(&self) -> usize {
        self.residual_cache.len()
    }

    fn stm_here(&self, ctx: &HookCtx) -> bool {
        let stm = &self.settings.stm;
        stm.enabled
            && stm.in_transformer
            && !stm.expression.is_identity()
            && stm
                .transformer_steps
                .contains(ctx.step, ctx.num_steps, self.settings.step_indexing)
            && scale_blocks(
                &stm.transformer_blocks,
                super::schedule::FLUX1_DEPTH,
                depth(ctx),
            )
            .contains(&ctx.block)
    }

    fn sharing_window_here(&self, ctx: &HookCtx) -> bool {
        let afs = &self.settings.afs;
        afs.share_steps
            .contains(ctx.step, ctx.num_steps, self.settings.step_indexing)
            && scale_blocks(&afs.share_blocks, super::schedule::FLUX1_DEPTH, depth(ctx))
                .contains(&ctx.block)
    }

    fn probe_here(&self, ctx: &HookCtx) -> bool {
        let afs = &self.settings.afs;
        afs.probe_step
            .contains(ctx.step, ctx.num_steps, self.settings.step_indexing)
            && scale_blocks(&[afs.probe_block], super::schedule::FLUX1_DEPTH, depth(ctx))
                .contains(&ctx.block)
    }

    /// STM on the text rows of one projection `[B, L, C]`, row by row.
    fn express_rows(
        &self,
        ctx: &HookCtx,
        stream: Stream,
        x: Tensor,
        roles: &[SampleRole],
    ) -> Result<Tensor> {
        let mut rows = Vec::with_capacity(roles.len());
        for (b, role) in roles.iter().enumerate() {
            let row = x.narrow(0, b, 1)?;
            let SampleRole::Frame(frame) = *role else {
                rows.push(row);
                continue;
            };
            let out = match stream {
                Stream::Text => {
                    express_projection(&row, &self.spans, frame, &self.settings).map_err(err)?
                }
                Stream::Joint => {
                    let txt = row.narrow(1, 0, ctx.txt_len)?;
                    let img = row.narrow(1, ctx.txt_len, row.dim(1)? - ctx.txt_len)?;
                    let txt = express_projection(&txt, &self.spans, frame, &self.settings)
                        .map_err(err)?;
                    Tensor::cat(&[txt, img], 1)?
                }
                Stream::Image => row,
            };
            rows.push(out);
        }
        Tensor::cat(&rows, 0)
    }
}

impl Control for AsemControl {
    fn text_embeddings(&mut self, ctx: &StepCtx, txt: Tensor) -> Result<Tensor> {
        if !text_stage_is_active(&self.settings) {
            return Ok(txt);
        }
        let roles: Vec<SampleRole> = ctx.batch_index.iter().map(|&s| self.role(s)).collect();
        if !roles.iter().any(|r| matches!(r, SampleRole::Frame(_))) {
            return Ok(txt);
        }
        let mut rows = Vec::with_capacity(roles.len());
        for (b, role) in roles.iter().enumerate() {
            let row = txt.narrow(0, b, 1)?;
            let SampleRole::Frame(frame) = *role else {
                rows.push(row);
                continue;
            };
            let sample = ctx.batch_index[b];
            let cached = self
                .text_cache
                .get(&sample)
                .filter(|t| t.dims() == row.dims())
                .cloned();
            let out = match cached {
                Some(t) => t,
                None => {
                    let t = modify_text_tensor(&row, &self.spans, frame, &self.settings)
                        .map_err(err)?;
                    self.text_cache.insert(sample, t.clone());
                    t
                }
            };
            rows.push(out);
        }
        Tensor::cat(&rows, 0)
    }

    fn projections(
        &mut self,
        ctx: &HookCtx,
        stream: Stream,
        q: Tensor,
        k: Tensor,
        v: Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        if stream == Stream::Image || !self.stm_here(ctx) {
            return Ok((q, k, v));
        }
        let roles = self.row_roles(ctx.batch_index);
        if !roles.iter().any(|r| matches!(r, SampleRole::Frame(_))) {
            return Ok((q, k, v));
        }
        let which = self.settings.stm.transformer_projections;
        let q = if which.q {
            self.express_rows(ctx, stream, q, &roles)?
        } else {
            q
        };
        let k = if which.k {
            self.express_rows(ctx, stream, k, &roles)?
        } else {
            k
        };
        let v = if which.v {
            self.express_rows(ctx, stream, v, &roles)?
        } else {
            v
        };
        Ok((q, k, v))
    }

    /// AFS: the image stream's gated feed-forward output of the sharing blocks (the "residual
    /// feature" of ReFlex, which ASemConsist cites) is recorded from the identity run and
    /// substituted in the frames.
    fn residual(
        &mut self,
        ctx: &HookCtx,
        stream: Stream,
        branch: Branch,
        x: Tensor,
    ) -> Result<Tensor> {
        if stream != Stream::Image
            || branch != Branch::FeedForward
            || self.settings.afs.mode == AfsMode::Never
            || !self.sharing_window_here(ctx)
        {
            return Ok(x);
        }
        let roles = self.row_roles(ctx.batch_index);
        let key = (ctx.step, ctx.block);
        let mut changed = false;
        let mut rows = Vec::with_capacity(roles.len());
        for (b, role) in roles.iter().enumerate() {
            let row = x.narrow(0, b, 1)?;
            match role {
                SampleRole::IdentityRecord => {
                    self.residual_cache.insert(key, row.clone());
                    rows.push(row);
                }
                SampleRole::Frame(_) if self.sharing_active() => {
                    match self.residual_cache.get(&key) {
                        Some(cached) if cached.dims() == row.dims() => {
                            rows.push(cached.to_dtype(row.dtype())?);
                            changed = true;
                        }
                        Some(cached) => {
                            candle_core::bail!(
                                "cached identity features {:?} do not match the frame's {:?} (same resolution needed)",
                                cached.dims(),
                                row.dims()
                            )
                        }
                        None => rows.push(row),
                    }
                }
                _ => rows.push(row),
            }
        }
        if changed {
            Tensor::cat(&rows, 0)
        } else {
            Ok(x)
        }
    }

    /// AFS probe: the image tokens of the residual stream after the probe block.
    fn block_output(&mut self, ctx: &HookCtx, stream: Stream, x: Tensor) -> Result<Tensor> {
        if self.settings.afs.mode == AfsMode::Never
            || stream == Stream::Text
            || !self.probe_here(ctx)
        {
            return Ok(x);
        }
        for (b, &sample) in ctx.batch_index.iter().enumerate() {
            if self.role(sample) != SampleRole::Probe {
                continue;
            }
            let row = x.narrow(0, b, 1)?;
            let img = match stream {
                Stream::Joint => row.narrow(1, ctx.txt_len, ctx.img_len())?,
                _ => row,
            };
            self.probes.insert(sample, img);
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consistency::asemconsist::settings::AsemPreset;
    use crate::model::dit::init::{random_weights, seeded_normal};
    use crate::model::dit::rope::joint_positions;
    use crate::model::dit::{FluxConfig, FluxInputs, FluxTransformer, RopeTables, StepInfo};
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    const TXT: usize = 12;
    const GRID: (usize, usize) = (2, 3);

    fn spans() -> SegmentSpans {
        SegmentSpans {
            identity: 0..3,
            frames: vec![3..6, 6..9],
            padding: 9..TXT,
        }
    }

    struct Rig {
        model: FluxTransformer,
        img: Tensor,
        txt: Tensor,
        pooled: Tensor,
        t: Tensor,
        rope: RopeTables,
    }

    impl Rig {
        fn new(batch: usize) -> Self {
            Self::with_text_seed(batch, 12)
        }

        fn with_text_seed(batch: usize, text_seed: u64) -> Self {
            let dev = Device::Cpu;
            let cfg = FluxConfig::tiny(false);
            let weights = random_weights(&cfg, 3, DType::F32, &dev).unwrap();
            let model =
                FluxTransformer::new(&cfg, VarBuilder::from_tensors(weights, DType::F32, &dev))
                    .unwrap();
            let n = GRID.0 * GRID.1;
            // The same noise and text in every row, as for frames of one seed and prompt.
            let img = seeded_normal(11, &[1, n, cfg.in_channels], &dev)
                .unwrap()
                .repeat((batch, 1, 1))
                .unwrap();
            let txt = seeded_normal(text_seed, &[1, TXT, cfg.context_in_dim], &dev)
                .unwrap()
                .repeat((batch, 1, 1))
                .unwrap();
            let pooled = seeded_normal(13, &[1, cfg.vec_in_dim], &dev)
                .unwrap()
                .repeat((batch, 1))
                .unwrap();
            let t = Tensor::from_vec(vec![0.6f32; batch], batch, &dev).unwrap();
            let rope = RopeTables::from_positions(
                &joint_positions(TXT, GRID.0, GRID.1),
                &cfg.axes_dim,
                cfg.theta,
                &dev,
            )
            .unwrap();
            Self {
                model,
                img,
                txt,
                pooled,
                t,
                rope,
            }
        }

        fn run(&self, ctrl: Option<&mut AsemControl>, step: usize, num_steps: usize) -> Tensor {
            let inputs = FluxInputs {
                img: &self.img,
                txt: &self.txt,
                pooled: &self.pooled,
                timesteps: &self.t,
                guidance: None,
                rope: &self.rope,
                img_grid: GRID,
            };
            let batch: Vec<usize> = (0..self.img.dim(0).unwrap()).collect();
            let info = StepInfo {
                step,
                num_steps,
                batch_index: &batch,
            };
            match ctrl {
                Some(c) => self.model.forward_with(&inputs, &info, c).unwrap(),
                None => self
                    .model
                    .forward_with(&inputs, &info, &mut crate::model::dit::NoControl)
                    .unwrap(),
            }
        }
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// Steps where the scaled STM window (paper 7..=11 of 28) is active on a 4-step schedule:
    /// [7, 12) * 4/28 -> 1..=1.
    const STM_STEP: usize = 1;

    #[test]
    fn identity_settings_are_bit_identical_to_vanilla() {
        let rig = Rig::new(2);
        let vanilla = rig.run(None, STM_STEP, 4);
        let mut settings = AsemPreset::Full.settings();
        settings.stm.expression.alpha = 0.0;
        settings.stm.expression.beta = 1.0;
        settings.stm.suppression.alpha = 0.0;
        settings.stm.suppression.beta = 1.0;
        settings.pad.gamma = 0.0;
        settings.afs.mode = AfsMode::Never;
        let mut ctrl = AsemControl::new(
            settings,
            spans(),
            vec![SampleRole::Frame(0), SampleRole::Frame(1)],
        );
        assert_eq!(flat(&rig.run(Some(&mut ctrl), STM_STEP, 4)), flat(&vanilla));
        let mut flux = AsemControl::new(
            AsemPreset::Flux.settings(),
            spans(),
            vec![SampleRole::Frame(0), SampleRole::Frame(1)],
        );
        assert_eq!(flat(&rig.run(Some(&mut flux), STM_STEP, 4)), flat(&vanilla));
    }

    #[test]
    fn full_settings_change_the_frames_and_differ_per_frame() {
        let rig = Rig::new(2);
        let vanilla = rig.run(None, STM_STEP, 4);
        let mut settings = AsemPreset::StmPad.settings();
        settings.stm.expression.alpha = 0.5;
        let mut ctrl = AsemControl::new(
            settings,
            spans(),
            vec![SampleRole::Frame(0), SampleRole::Frame(1)],
        );
        let out = rig.run(Some(&mut ctrl), STM_STEP, 4);
        let rows: Vec<Vec<f32>> = (0..2)
            .map(|b| flat(&out.narrow(0, b, 1).unwrap()))
            .collect();
        assert_ne!(flat(&out), flat(&vanilla));
        assert_ne!(rows[0], rows[1]);
    }

    #[test]
    fn sharing_from_the_same_prompt_and_seed_changes_nothing() {
        // Pass 1: identity run records the residual features at the sharing blocks.
        let rig = Rig::new(1);
        let mut settings = AsemPreset::Afs.settings();
        settings.afs.mode = AfsMode::Always;
        let mut ctrl = AsemControl::new(settings, spans(), vec![SampleRole::IdentityRecord]);
        // Paper steps 1..=6 of 28 on 4 steps -> step 0.
        let recorded = rig.run(Some(&mut ctrl), 0, 4);
        assert!(ctrl.residual_cache_len() > 0);
        // Pass 2: a frame with the same inputs receives them: bit-identical output.
        ctrl.set_roles(vec![SampleRole::Frame(0)]);
        let shared = rig.run(Some(&mut ctrl), 0, 4);
        assert_eq!(flat(&shared), flat(&recorded));
        // Identity and frame in one batch (identity first): the frame row equals the identity
        // row bit for bit, and the single-sample run up to the matmul blocking of batch 2.
        let rig2 = Rig::new(2);
        let mut together = AsemControl::new(
            ctrl.settings().clone(),
            spans(),
            vec![SampleRole::IdentityRecord, SampleRole::Frame(0)],
        );
        let out = rig2.run(Some(&mut together), 0, 4);
        let frame_row = flat(&out.narrow(0, 1, 1).unwrap());
        assert_eq!(frame_row, flat(&out.narrow(0, 0, 1).unwrap()));
        let worst = frame_row
            .iter()
            .zip(flat(&recorded))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0_f32, f32::max);
        assert!(worst < 1e-5, "{worst}");
    }

    #[test]
    fn sharing_substitutes_the_identity_features() {
        let identity = Rig::new(1);
        let frame = Rig::with_text_seed(1, 99);
        let mut settings = AsemPreset::Afs.settings();
        settings.afs.mode = AfsMode::Always;
        let mut ctrl = AsemControl::new(settings, spans(), vec![SampleRole::IdentityRecord]);
        identity.run(Some(&mut ctrl), 0, 4);
        ctrl.set_roles(vec![SampleRole::Frame(0)]);
        let shared = flat(&frame.run(Some(&mut ctrl), 0, 4));
        let own = flat(&frame.run(None, 0, 4));
        assert_ne!(shared, own);
        // Outside the sharing window (step 2 of 4) the frame runs unchanged.
        assert_eq!(
            flat(&frame.run(Some(&mut ctrl), 2, 4)),
            flat(&frame.run(None, 2, 4))
        );
    }

    #[test]
    fn probe_records_radius_and_decides() {
        let rig = Rig::new(2);
        let mut ctrl = AsemControl::new(
            AsemPreset::Full.settings(),
            spans(),
            vec![SampleRole::Probe, SampleRole::Probe],
        );
        assert_eq!(ctrl.probe_radius().unwrap(), None);
        // Probe step 4 of 28 on 8 steps -> step 1.
        rig.run(Some(&mut ctrl), 1, 8);
        // Identical inputs in both rows: the radius is 0, so Auto does not share.
        let d = ctrl.decide().unwrap();
        assert_eq!(d.radius, Some(0.0));
        assert!(!d.use_sharing && !ctrl.sharing_active());
        let mut settings = AsemPreset::Full.settings();
        settings.afs.threshold = -1.0;
        let mut eager = AsemControl::new(
            settings,
            spans(),
            vec![SampleRole::Probe, SampleRole::Probe],
        );
        rig.run(Some(&mut eager), 1, 8);
        assert!(eager.decide().unwrap().use_sharing);
    }
}
