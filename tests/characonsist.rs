//! CharaConsist on the tiny model: invariance, self-matching, bank strategies, mask semantics,
//! and that sharing pulls frames toward the identity.

use std::sync::atomic::AtomicBool;

use candle_core::{D, DType, Device, Tensor};
use storyloom::consistency::characonsist::story::{
    BankStrategy, StoryParams, StorySample, render_story,
};
use storyloom::consistency::characonsist::{
    CharaConsistSettings, ExtraKeyPlan, PromptSpans, TokenMask, additive_mask,
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
    StorySample {
        spec: SampleSpec {
            conditioning: c,
            seed,
        },
        spans,
    }
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
    let d = max_diff(&out.frames[0], &vanilla(&p, &frames[0]));
    assert!(d <= 1e-6, "frame differs from vanilla by {d}");
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
