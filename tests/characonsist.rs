//! CharaConsist on the tiny model: invariance, self-matching, bank strategies, mask semantics,
//! and that sharing pulls frames toward the identity.

use std::sync::atomic::AtomicBool;

use candle_core::{D, DType, Device, Tensor};
use storyloom::consistency::characonsist::story::{
    BankStrategy, StoryOutput, StoryParams, StorySample, render_frame_stored, render_story,
};
use storyloom::consistency::characonsist::{
    BackgroundMode, BankFingerprint, CharaConsistSettings, ExtraKeyPlan, PromptSpans,
    StoredIdentity, TokenMask, additive_mask,
};
use storyloom::engine::tiny::{HashedWordEncoder, TINY_TEXT_LEN, tiny_config, tiny_pipeline};
use storyloom::model::dit::attention::{ExtraKv, sdpa};
use storyloom::model::dit::init::seeded_normal;
use storyloom::model::dit::{BlockId, Control, HookCtx, NoControl};
use storyloom::model::pipeline::{BatchRequest, Pipeline, PromptEncoder, SampleSpec};

const PARAMS: StoryParams = StoryParams {
    width: 64,
    height: 64,
    steps: 10,
    guidance: 3.5,
};

fn sample(
    enc: &mut HashedWordEncoder,
    bg: &str,
    character: &str,
    action: &str,
    seed: u64,
) -> StorySample {
    let c = enc.encode(&[bg, character, action]).unwrap();
    let spans = PromptSpans::new(
        c.segment_spans[0].clone(),
        c.segment_spans[1].start..c.segment_spans[2].end,
    );
    StorySample::new(
        SampleSpec {
            conditioning: c,
            seed,
        },
        spans,
    )
}

fn setup() -> (Pipeline, HashedWordEncoder) {
    let p = tiny_pipeline(11, &Device::Cpu).unwrap();
    let enc = HashedWordEncoder {
        dim: tiny_config().context_in_dim,
        max_len: TINY_TEXT_LEN,
        device: Device::Cpu,
    };
    (p, enc)
}

fn vanilla(p: &Pipeline, s: &StorySample) -> Tensor {
    let req = BatchRequest {
        samples: vec![s.spec.clone()],
        width: PARAMS.width,
        height: PARAMS.height,
        steps: PARAMS.steps,
        guidance: PARAMS.guidance,
        batch_index: vec![0],
        stop_after: None,
    };
    p.sample_batch(&req, &mut NoControl, &AtomicBool::new(false), |_| Ok(()))
        .unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn settings() -> CharaConsistSettings {
    CharaConsistSettings::default()
}

#[test]
fn sharing_off_and_alpha_zero_is_vanilla() {
    let (p, mut enc) = setup();
    let id = sample(
        &mut enc,
        "on a beach",
        "a round blue creature",
        "standing",
        5,
    );
    let frames = vec![sample(
        &mut enc,
        "in a forest",
        "a round blue creature",
        "jumping",
        5,
    )];
    let w = CharaConsistSettings {
        point_tracking: false,
        token_merge: false,
        alpha: 0.0,
        ..settings()
    };
    let out = render_story(
        &p,
        &id,
        &frames,
        &PARAMS,
        &w,
        BankStrategy::CoBatched,
        &AtomicBool::new(false),
        &mut NoControl,
        |_, _| Ok(()),
    )
    .unwrap();
    // The story batch holds the identity and the frame, vanilla the frame alone: the CPU
    // products may sum in another order for another batch size (f32 rounding, ~1e-6).
    let d = max_diff(&out.frames[0], &vanilla(&p, &frames[0]));
    assert!(d <= 1e-5, "frame differs from vanilla by {d}");
}

#[test]
fn a_frame_equal_to_the_identity_matches_itself() {
    let (p, mut enc) = setup();
    let id = sample(
        &mut enc,
        "on a beach",
        "a round blue creature with a hat",
        "standing",
        9,
    );
    let frames = vec![sample(
        &mut enc,
        "on a beach",
        "a round blue creature with a hat",
        "standing",
        9,
    )];
    // The untrained tiny model's raw masks are speckled; the cleanup would erase them.
    let w = CharaConsistSettings {
        clean_mask: false,
        ..settings()
    };
    let out = render_story(
        &p,
        &id,
        &frames,
        &PARAMS,
        &w,
        BankStrategy::CoBatched,
        &AtomicBool::new(false),
        &mut NoControl,
        |_, _| Ok(()),
    )
    .unwrap();
    // The pre-run (no sharing yet) sees the same image twice.
    let a = &out.pre_run_analyses[0];
    assert_eq!(a.frame_mask, a.identity_mask, "masks differ");
    let fg = a.frame_mask.count();
    assert!(fg > 0, "no foreground found");
    let selfish = a
        .matches
        .iter()
        .filter(|m| m.frame_token == m.identity_token)
        .count();
    assert!(
        selfish as f32 >= 0.95 * fg as f32,
        "{selfish} of {fg} foreground tokens match themselves"
    );
    assert!(a.matches.iter().all(|m| (m.similarity - 1.0).abs() < 1e-4));
}

#[test]
fn co_batched_and_stored_bank_give_the_same_images() {
    let (p, mut enc) = setup();
    let id = sample(
        &mut enc,
        "on a beach",
        "a round blue creature",
        "standing",
        3,
    );
    let frames = vec![
        sample(
            &mut enc,
            "in a city street",
            "a round blue creature",
            "waving",
            3,
        ),
        sample(
            &mut enc,
            "on a beach",
            "a round blue creature",
            "sitting",
            3,
        ),
    ];
    let w = settings();
    let cancel = AtomicBool::new(false);
    let a = render_story(
        &p,
        &id,
        &frames,
        &PARAMS,
        &w,
        BankStrategy::CoBatched,
        &cancel,
        &mut NoControl,
        |_, _| Ok(()),
    )
    .unwrap();
    let b = render_story(
        &p,
        &id,
        &frames,
        &PARAMS,
        &w,
        BankStrategy::Stored { dtype: DType::F32 },
        &cancel,
        &mut NoControl,
        |_, _| Ok(()),
    )
    .unwrap();
    for i in 0..frames.len() {
        let d = max_diff(&a.frames[i], &b.frames[i]);
        assert!(d <= 1e-5, "frame {i}: co-batched vs stored differ by {d}");
        assert_eq!(a.analyses[i].matches.len(), b.analyses[i].matches.len());
    }
    assert!(b.stored.as_ref().is_some_and(|s| s.bank.bytes() > 0));
}

/// Keeps the image part of every single block's attention output (after the method's own
/// changes: this control runs second).
#[derive(Default)]
struct AttentionOutputs {
    per: std::collections::BTreeMap<(usize, usize), Tensor>,
}

impl Control for AttentionOutputs {
    fn attention_output(&mut self, ctx: &HookCtx, x: Tensor) -> candle_core::Result<Tensor> {
        if let BlockId::Single(b) = ctx.block {
            self.per
                .insert((ctx.step, b), x.narrow(1, ctx.txt_len, ctx.img_len())?);
        }
        Ok(x)
    }
}

#[test]
fn sharing_moves_matched_tokens_toward_the_identity() {
    let (p, mut enc) = setup();
    // Another seed than the identity's, so the frame starts out different from it.
    let id = sample(
        &mut enc,
        "on a beach",
        "a round blue creature",
        "standing",
        21,
    );
    let frames = vec![sample(
        &mut enc,
        "in a forest",
        "a round blue creature",
        "jumping",
        22,
    )];
    let cancel = AtomicBool::new(false);
    let full = CharaConsistSettings {
        clean_mask: false,
        ..settings()
    };
    let tracking_only = CharaConsistSettings {
        token_merge: false,
        ..full.clone()
    };
    let off = CharaConsistSettings {
        point_tracking: false,
        token_merge: false,
        ..full.clone()
    };
    // Mean cosine between matched frame tokens and their identity tokens in the attention
    // outputs of the foreground layers, over the point-tracking steps.
    let scaled = full.scaled_to(PARAMS.steps, tiny_config().depth_single_blocks);
    let measure = |w: &CharaConsistSettings| -> (f32, usize) {
        let mut rec = AttentionOutputs::default();
        let out = render_story(
            &p,
            &id,
            &frames,
            &PARAMS,
            w,
            BankStrategy::CoBatched,
            &cancel,
            &mut rec,
            |_, _| Ok(()),
        )
        .unwrap();
        let matches = out.pre_run_analyses[0].matches.clone();
        let (mut total, mut n) = (0.0, 0);
        for step in scaled.tracking_steps.first..=scaled.tracking_steps.last {
            for b in scaled.foreground_layers.indices(scaled.num_single_blocks) {
                let x = &rec.per[&(step, b)];
                let (idr, fr) = (x.get(0).unwrap(), x.get(1).unwrap());
                for m in &matches {
                    let a = fr.get(m.frame_token as usize).unwrap();
                    let c = idr.get(m.identity_token as usize).unwrap();
                    let dot = (&a * &c)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    let na = a
                        .sqr()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .sqrt()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    let nc = c
                        .sqr()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .sqrt()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    total += dot / (na * nc);
                    n += 1;
                }
            }
        }
        (total / n as f32, matches.len())
    };
    let ((c_off, n), (c_track, _), (c_full, _)) =
        (measure(&off), measure(&tracking_only), measure(&full));
    println!(
        "cosine to the identity on {n} matches: off {c_off:.4}, point tracking {c_track:.4}, + token merge {c_full:.4}"
    );
    assert!(n > 0, "no matches to test with");
    assert!(
        c_track > c_off + 0.005,
        "point tracking: {c_track} vs {c_off}"
    );
    assert!(
        c_full > c_track + 0.05,
        "token merge: {c_full} vs {c_track}"
    );
}

#[test]
fn mask_semantics_of_the_extra_keys() {
    let dev = Device::Cpu;
    // 2 text tokens, 4 image tokens (0 and 1 foreground); 2 extra fg keys, 3 extra bg keys.
    let frame = TokenMask::new(2, 2, vec![true, true, false, false]).unwrap();
    let plan = ExtraKeyPlan {
        fg_identity_tokens: vec![0, 1],
        fg_positions: vec![0, 1],
        bg_identity_tokens: vec![2, 3, 3],
    };
    let mask = additive_mask(&plan, &frame, 2, 4, &dev)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let q = seeded_normal(1, &[1, 2, 6, 8], &dev).unwrap();
    let k = seeded_normal(2, &[1, 2, 6, 8], &dev).unwrap();
    let v = seeded_normal(3, &[1, 2, 6, 8], &dev).unwrap();
    let ek = seeded_normal(4, &[1, 2, 5, 8], &dev).unwrap();
    let scores_own = q.matmul(&k.t().unwrap()).unwrap();
    let scores_extra = q
        .matmul(&ek.t().unwrap())
        .unwrap()
        .broadcast_add(&mask.unsqueeze(1).unwrap())
        .unwrap();
    let all = Tensor::cat(&[scores_own, scores_extra], D::Minus1).unwrap();
    let p: Vec<Vec<Vec<f32>>> = candle_nn::ops::softmax_last_dim(&all)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec3()
        .unwrap();
    for head in &p {
        for (row, probs) in head.iter().enumerate() {
            let extra = &probs[6..];
            match row {
                0 | 1 => assert!(
                    extra.iter().all(|&x| x == 0.0),
                    "text query sees an extra key"
                ),
                2 | 3 => assert!(
                    extra[2..].iter().all(|&x| x == 0.0) && extra[..2].iter().any(|&x| x > 0.0)
                ),
                _ => assert!(
                    extra[..2].iter().all(|&x| x == 0.0) && extra[2..].iter().any(|&x| x > 0.0)
                ),
            }
        }
    }
    // Switch mode (no background keys): background queries are untouched by the extra keys.
    let fg_only = ExtraKeyPlan {
        bg_identity_tokens: vec![],
        ..plan
    };
    let mask = additive_mask(&fg_only, &frame, 2, 4, &dev)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let ev = seeded_normal(5, &[1, 2, 2, 8], &dev).unwrap();
    let extra = ExtraKv {
        k: ek.narrow(2, 0, 2).unwrap(),
        v: ev,
        mask: Some(mask),
    };
    let with = sdpa(&q, &k, &v, Some(&extra)).unwrap();
    let without = sdpa(&q, &k, &v, None).unwrap();
    assert!(
        max_diff(
            &with.narrow(2, 4, 2).unwrap(),
            &without.narrow(2, 4, 2).unwrap()
        ) <= 1e-6
    );
    assert!(
        max_diff(
            &with.narrow(2, 2, 2).unwrap(),
            &without.narrow(2, 2, 2).unwrap()
        ) > 1e-3
    );
}

fn in_scene(s: StorySample, scene: u32) -> StorySample {
    StorySample { scene, ..s }
}

fn render(
    p: &Pipeline,
    id: &StorySample,
    frames: &[StorySample],
    w: &CharaConsistSettings,
    strategy: BankStrategy,
) -> StoryOutput {
    render_story(
        p,
        id,
        frames,
        &PARAMS,
        w,
        strategy,
        &AtomicBool::new(false),
        &mut NoControl,
        |_, _| Ok(()),
    )
    .unwrap()
}

/// Identity and four frames: scene 1 = frames 0 (source) and 1, scene 2 = frames 2
/// (source) and 3.
fn two_scenes(
    enc: &mut HashedWordEncoder,
    scene1_seed: u64,
    scene2_place: &str,
) -> (StorySample, Vec<StorySample>) {
    let c = "a round blue creature";
    let id = sample(enc, "on a beach", c, "standing", 31);
    let frames = vec![
        in_scene(sample(enc, "in a forest", c, "jumping", scene1_seed), 1),
        in_scene(sample(enc, "in a forest", c, "sitting", 33), 1),
        in_scene(sample(enc, scene2_place, c, "waving", 34), 2),
        in_scene(sample(enc, "in a city street", c, "running", 35), 2),
    ];
    (id, frames)
}

#[test]
fn mixed_scenes_read_the_background_of_their_own_scene_source() {
    let (p, mut enc) = setup();
    let mixed = CharaConsistSettings {
        background: BackgroundMode::MixedScenes,
        clean_mask: false,
        ..settings()
    };
    let switch = CharaConsistSettings {
        background: BackgroundMode::Switch,
        ..mixed.clone()
    };
    let (id, frames) = two_scenes(&mut enc, 32, "in a city street");
    let m = render(&p, &id, &frames, &mixed, BankStrategy::CoBatched);
    let s = render(&p, &id, &frames, &switch, BankStrategy::CoBatched);
    // A scene's first frame keeps its own background: exactly its switch-mode image.
    for i in [0, 2] {
        let d = max_diff(&m.frames[i], &s.frames[i]);
        assert!(
            d <= 1e-6,
            "scene source {i} differs from switch mode by {d}"
        );
    }
    // The later frames borrow background keys: a measurable change.
    for i in [1, 3] {
        let d = max_diff(&m.frames[i], &s.frames[i]);
        assert!(
            d > 1e-3,
            "frame {i} is unchanged by its scene's background ({d})"
        );
    }
    // Another first frame of scene 1 changes frame 1 but not frame 3 (scene 2), so frame 3
    // reads nothing from scene 1.
    let (id_b, frames_b) = two_scenes(&mut enc, 77, "in a city street");
    let m_b = render(&p, &id_b, &frames_b, &mixed, BankStrategy::CoBatched);
    assert!(max_diff(&m.frames[1], &m_b.frames[1]) > 1e-3);
    assert_eq!(max_diff(&m.frames[3], &m_b.frames[3]), 0.0);
    // Another first frame of scene 2 changes frame 3.
    let (id_c, frames_c) = two_scenes(&mut enc, 32, "in a snowy mountain pass");
    let m_c = render(&p, &id_c, &frames_c, &mixed, BankStrategy::CoBatched);
    assert!(max_diff(&m.frames[3], &m_c.frames[3]) > 1e-3);
    assert_eq!(max_diff(&m.frames[1], &m_c.frames[1]), 0.0);
    // The stored bank gives the same images, and records both scene sources.
    let st = render(
        &p,
        &id,
        &frames,
        &mixed,
        BankStrategy::Stored { dtype: DType::F32 },
    );
    for i in 0..frames.len() {
        let d = max_diff(&m.frames[i], &st.frames[i]);
        assert!(d <= 1e-5, "frame {i}: co-batched vs stored differ by {d}");
    }
    assert_eq!(
        st.scene_sources.keys().copied().collect::<Vec<_>>(),
        vec![0, 2]
    );
    assert!(st.scene_sources.values().all(|s| s.bank.bytes() > 0));
}

#[test]
fn a_stored_bank_loaded_from_a_file_renders_the_same_frame() {
    let (p, mut enc) = setup();
    let c = "a round blue creature";
    let id = sample(&mut enc, "on a beach", c, "standing", 3);
    let frames = vec![
        sample(&mut enc, "in a city street", c, "waving", 4),
        sample(&mut enc, "on a beach", c, "sitting", 5),
    ];
    let w = settings();
    let co = render(&p, &id, &frames, &w, BankStrategy::CoBatched);
    let st = render(
        &p,
        &id,
        &frames,
        &w,
        BankStrategy::Stored { dtype: DType::F32 },
    );
    let stored = st.stored.unwrap();
    let fingerprint = |seed: u64| {
        BankFingerprint::identity(
            "tiny-11",
            &w,
            &SampleSpec {
                seed,
                ..id.spec.clone()
            },
            PARAMS.width,
            PARAMS.height,
            PARAMS.steps,
            PARAMS.guidance,
        )
        .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.bank");
    stored.save(&path, &fingerprint(3), None).unwrap();
    let (loaded, _) = StoredIdentity::load(&path, &fingerprint(3), &Device::Cpu).unwrap();
    assert_eq!(loaded.bank.bytes(), stored.bank.bytes());
    let spans: Vec<PromptSpans> = std::iter::once(&id)
        .chain(&frames)
        .map(|s| s.spans.clone())
        .collect();
    let frame = |bank: &StoredIdentity| {
        render_frame_stored(
            &p,
            bank,
            &frames[1],
            1,
            &PARAMS,
            &w,
            &spans,
            &AtomicBool::new(false),
            &mut NoControl,
            &mut |_, _| Ok(()),
        )
        .unwrap()
        .tokens
    };
    let (from_file, from_memory) = (frame(&loaded), frame(&stored));
    assert_eq!(max_diff(&from_file, &from_memory), 0.0);
    let d = max_diff(&from_file, &co.frames[1]);
    assert!(d <= 1e-5, "file bank vs co-batched story: {d}");
    // A bank recorded for another seed is refused, naming the difference.
    let err = StoredIdentity::load(&path, &fingerprint(4), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("seed"), "{err}");
}

#[test]
fn a_frame_of_another_size_renders_on_the_stored_bank() {
    let (p, mut enc) = setup();
    let c = "a round blue creature";
    let id = sample(&mut enc, "on a beach", c, "standing", 3);
    let frames = vec![sample(&mut enc, "in a forest", c, "waving", 3)];
    let w = CharaConsistSettings {
        clean_mask: false,
        ..settings()
    };
    // The identity at 64x64 (16 x 16 tokens), recorded once.
    let story = render(
        &p,
        &id,
        &frames,
        &w,
        BankStrategy::Stored { dtype: DType::F32 },
    );
    let stored = story.stored.unwrap();
    // The frame at 64x48 pixels: 12 rows x 16 columns of tokens.
    let wide = StoryParams {
        height: 48,
        ..PARAMS
    };
    let spans = vec![id.spans.clone(), frames[0].spans.clone()];
    let out = render_frame_stored(
        &p,
        &stored,
        &frames[0],
        0,
        &wide,
        &w,
        &spans,
        &AtomicBool::new(false),
        &mut NoControl,
        &mut |_, _| Ok(()),
    )
    .unwrap();
    let a = &out.analysis;
    assert_eq!((a.frame_mask.rows, a.frame_mask.cols), (12, 16));
    assert_eq!((a.identity_mask.rows, a.identity_mask.cols), (16, 16));
    assert_eq!(out.tokens.dims()[1], 12 * 16);
    assert!(!a.matches.is_empty(), "no matches to check");
    for m in &a.matches {
        assert!(a.frame_mask.is_fg(m.frame_token as usize));
        assert!(a.identity_mask.is_fg(m.identity_token as usize));
    }
    // The method acts on it: the frame differs from its vanilla sample at that size.
    let req = BatchRequest {
        samples: vec![frames[0].spec.clone()],
        width: wide.width,
        height: wide.height,
        steps: PARAMS.steps,
        guidance: PARAMS.guidance,
        batch_index: vec![0],
        stop_after: None,
    };
    let plain = p
        .sample_batch(&req, &mut NoControl, &AtomicBool::new(false), |_| Ok(()))
        .unwrap();
    assert!(max_diff(&plain, &out.tokens) > 1e-3);
}

#[test]
fn a_frame_without_foreground_words_is_vanilla_in_switch_mode() {
    let (p, mut enc) = setup();
    let id = sample(
        &mut enc,
        "on a beach",
        "a round blue creature",
        "standing",
        5,
    );
    let mut frame = sample(&mut enc, "in a quiet empty forest", "", "", 5);
    let n = frame.spec.conditioning.segment_spans[0].end;
    frame.spans = PromptSpans::new(0..n, n..n);
    let w = CharaConsistSettings {
        background: BackgroundMode::Switch,
        ..settings()
    };
    let frames = vec![frame];
    for strategy in [
        BankStrategy::CoBatched,
        BankStrategy::Stored { dtype: DType::F32 },
    ] {
        let out = render(&p, &id, &frames, &w, strategy);
        assert_eq!(out.analyses[0].frame_mask.count(), 0);
        assert!(out.analyses[0].matches.is_empty());
        // Another batch size than vanilla's: f32 rounding of the CPU products only.
        let d = max_diff(&out.frames[0], &vanilla(&p, &frames[0]));
        assert!(d <= 1e-5, "{strategy:?}: differs from vanilla by {d}");
    }
}

#[test]
fn switch_mode_leaves_background_tokens_untouched_where_sharing_starts() {
    // Everything before step 1's first single block is vanilla; there the foreground tokens
    // borrow identity keys and merge, the background tokens must come out exactly as without
    // the method.
    let (p, mut enc) = setup();
    let c = "a round blue creature";
    let id = sample(&mut enc, "on a beach", c, "standing", 21);
    let frames = vec![sample(&mut enc, "in a forest", c, "jumping", 22)];
    let on = CharaConsistSettings {
        background: BackgroundMode::Switch,
        clean_mask: false,
        ..settings()
    };
    let off = CharaConsistSettings {
        point_tracking: false,
        token_merge: false,
        ..on.clone()
    };
    let outputs = |w: &CharaConsistSettings| {
        let mut rec = AttentionOutputs::default();
        let out = render_story(
            &p,
            &id,
            &frames,
            &PARAMS,
            w,
            BankStrategy::CoBatched,
            &AtomicBool::new(false),
            &mut rec,
            |_, _| Ok(()),
        )
        .unwrap();
        (
            rec.per[&(1, 0)].get(1).unwrap(),
            out.pre_run_analyses[0].clone(),
        )
    };
    let ((x_on, analysis), (x_off, _)) = (outputs(&on), outputs(&off));
    let mask = &analysis.frame_mask;
    assert!(mask.count() > 0 && mask.count() < mask.len());
    let (mut bg_max, mut fg_max) = (0.0f32, 0.0f32);
    for t in 0..mask.len() {
        let d = max_diff(&x_on.get(t).unwrap(), &x_off.get(t).unwrap());
        if mask.is_fg(t) {
            fg_max = fg_max.max(d);
        } else {
            bg_max = bg_max.max(d);
        }
    }
    assert_eq!(bg_max, 0.0, "a background token changed");
    assert!(fg_max > 1e-3, "the foreground did not change ({fg_max})");
}
