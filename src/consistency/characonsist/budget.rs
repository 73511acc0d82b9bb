//! Memory of the two bank strategies, estimated without running anything, and the automatic
//! choice between them from a budget.
//!
//! Stored: the identity keeps, in the bank's dtype, exactly what the frames of a full run
//! read (the same rules as the control's recording): keys and values of its image tokens on
//! the foreground layers during the tracking steps, on the background layers too when frames
//! borrow its background ("keep"), and its attention outputs at the extraction step on the
//! analysis layers and on the merge steps (alpha > 0) on the foreground layers. In "mixed
//! scenes" every scene's first frame keeps keys and values on the background layers.
//!
//! Co-batched: nothing is kept between blocks; the cost is one more sample in the batch
//! (its activations) plus, per frame, the borrowed keys/values and their scores.

use candle_core::DType;

use super::schedule::{LayerSharing, alpha_at};
use super::settings::{BackgroundMode, CharaConsistSettings};
use crate::model::dit::FluxConfig;

/// The story an estimate is for.
#[derive(Debug, Clone, Copy)]
pub struct StoryShape<'a> {
    pub config: &'a FluxConfig,
    /// Padded text tokens per prompt.
    pub text_tokens: usize,
    /// Image tokens of the identity (and of the frames).
    pub image_tokens: usize,
    /// Frames rendered with the identity.
    pub frames: usize,
    pub steps: usize,
}

/// Bytes of a stored bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoredBankBytes {
    /// The identity's keys and values.
    pub identity_kv: u64,
    /// The identity's attention outputs.
    pub identity_attention: u64,
    /// Keys and values of one scene source ("mixed scenes"; 0 otherwise).
    pub per_scene_source_kv: u64,
}

impl StoredBankBytes {
    /// Everything, with `scenes` scene sources.
    pub fn total(&self, scenes: usize) -> u64 {
        self.identity_kv + self.identity_attention + self.per_scene_source_kv * scenes as u64
    }
}

/// (step, single block) pairs of the full run that satisfy `keep`, with the settings scaled
/// to the run.
fn count_pairs(
    settings: &CharaConsistSettings,
    steps: usize,
    blocks: usize,
    keep: impl Fn(&CharaConsistSettings, usize, usize) -> bool,
) -> u64 {
    let s = settings.scaled_to(steps, blocks);
    (0..steps)
        .flat_map(|step| (0..blocks).map(move |block| (step, block)))
        .filter(|&(step, block)| keep(&s, step, block))
        .count() as u64
}

/// The stored bank's bytes for a story, in `dtype`. Settings are scaled to the shape's step
/// count and the config's depth, as a render does.
pub fn estimate_stored_bank(
    shape: &StoryShape,
    settings: &CharaConsistSettings,
    dtype: DType,
) -> StoredBankBytes {
    let blocks = shape.config.depth_single_blocks;
    // One tensor of the image tokens, `[N, C]` (keys and values are `[H, N, D]`, the same size).
    let tensor = (shape.image_tokens * shape.config.hidden_size * dtype.size_in_bytes()) as u64;
    let keep = settings.background == BackgroundMode::Keep;
    let identity_kv_pairs = count_pairs(settings, shape.steps, blocks, |s, step, block| {
        let full = LayerSharing::full_run(s, step, block);
        full.foreground || (full.background && keep)
    });
    let attention_pairs = count_pairs(settings, shape.steps, blocks, |s, step, block| {
        let extraction = step == s.extraction_step && s.is_analysis_layer(block);
        let merge = s.is_foreground_layer(block) && alpha_at(step, s) > 0.0;
        extraction || merge
    });
    let source_pairs = if settings.background == BackgroundMode::MixedScenes {
        count_pairs(settings, shape.steps, blocks, |s, step, block| {
            LayerSharing::full_run(s, step, block).background
        })
    } else {
        0
    };
    StoredBankBytes {
        identity_kv: 2 * tensor * identity_kv_pairs,
        identity_attention: tensor * attention_pairs,
        per_scene_source_kv: 2 * tensor * source_pairs,
    }
}

/// Activation bytes of one sample in one single block, the peak of a forward pass: the
/// joint sequence `L` in the residual, norm, fused projection (`3C + mlp·C`), RoPE'd q/k/v,
/// attention output, MLP activation, the concatenated input of the output projection and
/// its output (`(11 + 3·mlp)·L·C`), plus the attention scores and probabilities
/// (`2·H·L²`). An estimate, not a measurement.
pub fn sample_activation_bytes(shape: &StoryShape, dtype: DType) -> u64 {
    let c = shape.config;
    let l = (shape.text_tokens + shape.image_tokens) as f64;
    let per_token = (11.0 + 3.0 * c.mlp_ratio) * c.hidden_size as f64;
    let scores = 2.0 * c.num_heads as f64 * l * l;
    ((l * per_token + scores) * dtype.size_in_bytes() as f64) as u64
}

/// Extra bytes of the co-batched strategy over rendering the frames without CharaConsist:
/// the identity's row, one block of its keys/values, and per frame at most every identity
/// token borrowed (keys, values and the scores on them).
pub fn estimate_co_batched_extra(shape: &StoryShape, dtype: DType) -> u64 {
    let c = shape.config;
    let b = dtype.size_in_bytes() as u64;
    let n = shape.image_tokens as u64;
    let l = (shape.text_tokens + shape.image_tokens) as u64;
    let kv = 2 * n * c.hidden_size as u64 * b;
    let per_frame = kv + 2 * c.num_heads as u64 * l * n * b;
    sample_activation_bytes(shape, dtype) + kv + shape.frames as u64 * per_frame
}

/// Bytes of the whole co-batched batch (identity + frames) during one block.
pub fn estimate_co_batched_batch(shape: &StoryShape, dtype: DType) -> u64 {
    shape.frames as u64 * sample_activation_bytes(shape, dtype)
        + estimate_co_batched_extra(shape, dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> FluxConfig {
        FluxConfig::tiny(true)
    }

    #[test]
    fn stored_bank_of_a_tiny_story_by_hand() {
        // Tiny config: hidden 32, 4 single blocks. 10 steps: extraction 2, tracking 1..=8,
        // merge 1..=6 with alpha 0 from step 6 (so merging at 1..=5), fg layers 0 and 2.
        let config = tiny();
        let shape = StoryShape {
            config: &config,
            text_tokens: 8,
            image_tokens: 16,
            frames: 2,
            steps: 10,
        };
        // One [16, 32] tensor in f16: 1024 bytes.
        let keep = estimate_stored_bank(&shape, &CharaConsistSettings::default(), DType::F16);
        // Keep: every block shares background keys at 8 steps -> 32 pairs of K and V.
        assert_eq!(keep.identity_kv, 32 * 2 * 1024);
        // Attention: step 2 on 4 analysis layers + steps 1..=5 on 2 fg layers, 2 overlap:
        // 4 + 10 - 2 = 12 pairs.
        assert_eq!(keep.identity_attention, 12 * 1024);
        assert_eq!(keep.per_scene_source_kv, 0);
        assert_eq!(keep.total(3), (64 + 12) * 1024);
        let switch = CharaConsistSettings {
            background: BackgroundMode::Switch,
            ..Default::default()
        };
        // Switch: fg layers only, 8 steps x 2 blocks.
        let s = estimate_stored_bank(&shape, &switch, DType::F16);
        assert_eq!(s.identity_kv, 16 * 2 * 1024);
        let mixed = CharaConsistSettings {
            background: BackgroundMode::MixedScenes,
            ..Default::default()
        };
        // Mixed: the identity as in switch, each scene source 8 steps x 4 blocks.
        let m = estimate_stored_bank(&shape, &mixed, DType::F32);
        assert_eq!(m.identity_kv, 16 * 2 * 2048);
        assert_eq!(m.per_scene_source_kv, 32 * 2 * 2048);
        assert_eq!(m.total(2), (32 + 12 + 128) * 2048);
    }

    #[test]
    fn flux_dev_at_1024_keeps_what_the_released_code_keeps_per_layer() {
        // 4096 tokens x 3072 channels x 2 bytes = 25,165,824 bytes per tensor. Keep mode:
        // 40 steps x 38 blocks of K and V = 76.5 GB; attention: 30 merge steps x 19 fg
        // layers + the 19 odd layers at step 10 = 589 tensors = 14.8 GB.
        let config = FluxConfig::dev();
        let shape = StoryShape {
            config: &config,
            text_tokens: 512,
            image_tokens: 4096,
            frames: 6,
            steps: 50,
        };
        let b = estimate_stored_bank(&shape, &CharaConsistSettings::default(), DType::F16);
        assert_eq!(b.identity_kv, 1520 * 2 * 25_165_824);
        assert_eq!(b.identity_attention, 589 * 25_165_824);
        // Switch: fg layers only, 40 x 19 pairs: half the keys and values.
        let switch = CharaConsistSettings {
            background: BackgroundMode::Switch,
            ..Default::default()
        };
        let s = estimate_stored_bank(&shape, &switch, DType::F16);
        assert_eq!(s.identity_kv, 760 * 2 * 25_165_824);
    }

    #[test]
    fn co_batched_memory_by_hand() {
        // Tiny: C = 32, H = 2, mlp 4; L = 8 + 16 = 24; f32.
        // Per sample: (11 + 12)·24·32 + 2·2·24² = 17664 + 2304 = 19968 values = 79872 bytes.
        let config = tiny();
        let shape = StoryShape {
            config: &config,
            text_tokens: 8,
            image_tokens: 16,
            frames: 2,
            steps: 10,
        };
        assert_eq!(sample_activation_bytes(&shape, DType::F32), 79_872);
        // Extra: one sample + one block's K, V (2·16·32·4 = 4096) + per frame K, V and
        // scores on 16 extra keys (4096 + 2·2·24·16·4 = 4096 + 6144) x 2 frames.
        assert_eq!(
            estimate_co_batched_extra(&shape, DType::F32),
            79_872 + 4096 + 2 * (4096 + 6144)
        );
        assert_eq!(
            estimate_co_batched_batch(&shape, DType::F32),
            2 * 79_872 + 79_872 + 4096 + 2 * (4096 + 6144)
        );
    }
}
