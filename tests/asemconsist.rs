//! ASemConsist through the real pipeline on the tiny model (CPU): identity parameters give the
//! vanilla frames bit for bit, every ablation row but plain FLUX changes them, AFS sharing from
//! the same prompt and seed changes nothing, the probe radius and the decision, and the spans
//! of combined prompts with the built-in model's tokenizer.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor};
use storyloom::consistency::asemconsist::story::{
    AsemPrompt, CombinedPromptError, combined_segments, encode_combined, encode_combined_with,
    frame_roles, measure_ambiguity, prepare, render_frames,
};
use storyloom::consistency::asemconsist::{
    AfsMode, AsemPreset, AsemSettings, PromptLayout, SampleRole, SeparatorTokens,
};
use storyloom::consistency::characonsist::story::{
    BankStrategy, StoryParams, StorySample, render_story,
};
use storyloom::consistency::characonsist::{CharaConsistSettings, PromptSpans};
use storyloom::engine::tiny::{HashedWordEncoder, TINY_TEXT_LEN, tiny_config, tiny_pipeline};
use storyloom::model::dit::NoControl;
use storyloom::model::dit::init::seeded_normal;
use storyloom::model::pipeline::{
    BatchRequest, Conditioning, Pipeline, PipelineError, PromptEncoder, SampleSpec,
};
use storyloom::model::text::{PromptSegments, PromptTokenizer, Separator, TextModelKind};

const SIZE: u32 = 32;
/// The paper's schedule length, so every window is the paper's own.
const STEPS: usize = 28;
const GUIDANCE: f32 = 3.5;
const IDENTITY: &str = "a round red creature";

/// The tiny word encoder with non-zero padding rows, as T5's padding outputs are (the tiny
/// encoder's padding is zeros, which PAD would leave at zero). A padding row is a fixed
/// random vector per position plus the mean of the real rows, so it depends on the prompt.
struct PaddedWordEncoder(HashedWordEncoder);

impl PromptEncoder for PaddedWordEncoder {
    fn encode(&mut self, segments: &[&str]) -> anyhow::Result<Conditioning> {
        let mut c = self.0.encode(segments)?;
        let real_len = c.eos + 1;
        let real = c.txt.narrow(1, 0, real_len)?;
        let n_pad = c.txt.dim(1)? - real_len;
        let pad = seeded_normal(404, &[1, n_pad, self.0.dim], &Device::Cpu)?
            .broadcast_add(&real.mean_keepdim(1)?)?;
        c.txt = Tensor::cat(&[real, pad], 1)?;
        Ok(c)
    }
}

fn setup() -> (Pipeline, PaddedWordEncoder) {
    let pipeline = tiny_pipeline(21, &Device::Cpu).unwrap();
    let encoder = PaddedWordEncoder(HashedWordEncoder {
        dim: tiny_config().context_in_dim,
        max_len: TINY_TEXT_LEN,
        device: Device::Cpu,
    });
    (pipeline, encoder)
}

fn frames() -> Vec<(String, String)> {
    [
        ("in a snowy field", "waving its arm"),
        ("on a sandy beach", "jumping"),
        ("in a dark forest", "sitting still"),
    ]
    .iter()
    .map(|(b, a)| (b.to_string(), a.to_string()))
    .collect()
}

const SEEDS: [u64; 3] = [3, 4, 5];

fn no_cancel() -> AtomicBool {
    AtomicBool::new(false)
}

/// Plain sampling of the given (conditioning, seed) rows in one batch.
fn vanilla(pipeline: &Pipeline, rows: &[(Conditioning, u64)]) -> Tensor {
    let req = BatchRequest {
        samples: rows
            .iter()
            .map(|(conditioning, seed)| SampleSpec {
                conditioning: conditioning.clone(),
                seed: *seed,
            })
            .collect(),
        width: SIZE,
        height: SIZE,
        steps: STEPS,
        guidance: GUIDANCE,
        batch_index: (0..rows.len()).collect(),
        stop_after: None,
    };
    pipeline
        .sample_batch(&req, &mut NoControl, &no_cancel(), |_| Ok(()))
        .unwrap()
}

fn vanilla_frames(pipeline: &Pipeline, prompt: &AsemPrompt, seeds: &[u64]) -> Tensor {
    let rows: Vec<(Conditioning, u64)> = seeds
        .iter()
        .map(|&s| (prompt.conditioning.clone(), s))
        .collect();
    vanilla(pipeline, &rows)
}

fn render(
    pipeline: &Pipeline,
    encoder: &mut PaddedWordEncoder,
    prompt: &AsemPrompt,
    frames: &[(String, String)],
    identity_seed: u64,
    seeds: &[u64],
    settings: &AsemSettings,
) -> storyloom::consistency::asemconsist::AsemFrames {
    render_frames(
        pipeline,
        encoder,
        prompt,
        IDENTITY,
        frames,
        identity_seed,
        seeds,
        SIZE,
        SIZE,
        STEPS,
        GUIDANCE,
        settings,
        &no_cancel(),
        |_| Ok(()),
    )
    .unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn row(t: &Tensor, i: usize) -> Vec<f32> {
    flat(&t.narrow(0, i, 1).unwrap())
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn identity_parameters() -> AsemSettings {
    let mut s = AsemPreset::Full.settings();
    s.stm.expression.alpha = 0.0;
    s.stm.expression.beta = 1.0;
    s.stm.suppression.alpha = 0.0;
    s.stm.suppression.beta = 1.0;
    s.pad.gamma = 0.0;
    s.afs.mode = AfsMode::Never;
    s
}

#[test]
fn identity_parameters_give_the_vanilla_frames_bit_for_bit() {
    let (pipeline, mut encoder) = setup();
    let frames = frames();
    let prompt = encode_combined(&mut encoder, IDENTITY, &frames).unwrap();
    let plain = vanilla_frames(&pipeline, &prompt, &SEEDS);
    for settings in [identity_parameters(), AsemPreset::Flux.settings()] {
        let out = render(
            &pipeline,
            &mut encoder,
            &prompt,
            &frames,
            9,
            &SEEDS,
            &settings,
        );
        assert_eq!(out.decision, None);
        assert_eq!(flat(&out.tokens), flat(&plain));
    }
}

#[test]
fn every_ablation_row_but_plain_flux_changes_the_frames() {
    let (pipeline, mut encoder) = setup();
    let frames = frames();
    let prompt = encode_combined(&mut encoder, IDENTITY, &frames).unwrap();
    let plain = vanilla_frames(&pipeline, &prompt, &SEEDS);
    for preset in AsemPreset::ALL {
        let mut settings = preset.settings();
        // Auto mode with a threshold of 0 shares whenever the probe samples differ at all.
        settings.afs.threshold = 0.0;
        let out = render(
            &pipeline,
            &mut encoder,
            &prompt,
            &frames,
            9,
            &SEEDS,
            &settings,
        );
        let uses_afs = matches!(preset, AsemPreset::Afs | AsemPreset::Full);
        assert_eq!(out.decision.is_some(), uses_afs, "{preset:?}");
        if uses_afs {
            let d = out.decision.unwrap();
            assert!(d.radius.unwrap() > 0.0 && d.use_sharing, "{preset:?}");
            assert!(out.control.residual_cache_len() > 0);
        }
        let changed = (0..SEEDS.len())
            .filter(|&i| row(&out.tokens, i) != row(&plain, i))
            .count();
        let expected = if preset == AsemPreset::Flux {
            0
        } else {
            SEEDS.len()
        };
        assert_eq!(changed, expected, "{preset:?}");
    }
}

/// A story of one empty frame: the combined prompt `[p_id, "", ""]` encodes to exactly the
/// identity prompt's conditioning.
fn one_empty_frame() -> Vec<(String, String)> {
    vec![(String::new(), String::new())]
}

fn sharing_always() -> AsemSettings {
    let mut s = AsemPreset::Afs.settings();
    s.afs.mode = AfsMode::Always;
    s
}

#[test]
fn sharing_from_the_same_prompt_and_seed_leaves_the_frame_unchanged() {
    let (pipeline, mut encoder) = setup();
    let frames = one_empty_frame();
    let prompt = encode_combined(&mut encoder, IDENTITY, &frames).unwrap();
    let identity = encoder.encode(&[IDENTITY]).unwrap();
    assert_eq!(flat(&prompt.conditioning.txt), flat(&identity.txt));
    let out = render(
        &pipeline,
        &mut encoder,
        &prompt,
        &frames,
        7,
        &[7],
        &sharing_always(),
    );
    let d = out.decision.unwrap();
    assert!(d.use_sharing && d.radius.is_none());
    // Tiny model (2 double blocks): paper blocks 0, 1, 2, 17, 18 -> double 0 and 1; paper
    // steps 1..=6 of 28 unchanged: 2 blocks x 6 steps cached.
    assert_eq!(out.control.residual_cache_len(), 12);
    assert_eq!(
        flat(&out.tokens),
        flat(&vanilla_frames(&pipeline, &prompt, &[7]))
    );
    // From another identity seed the substituted features differ: the frame changes.
    let other = render(
        &pipeline,
        &mut encoder,
        &prompt,
        &frames,
        8,
        &[7],
        &sharing_always(),
    );
    assert_ne!(flat(&other.tokens), flat(&out.tokens));
}

#[test]
fn frame_rows_read_the_cache_anywhere_in_a_batch_with_other_roles() {
    let (pipeline, mut encoder) = setup();
    let frames = one_empty_frame();
    let prompt = encode_combined(&mut encoder, IDENTITY, &frames).unwrap();
    let other = encoder
        .encode(&["on a sandy beach", "a tall blue monster", "jumping"])
        .unwrap();
    let cancel = no_cancel();
    let run = |identity_seed: u64, frame_seed: u64, encoder: &mut PaddedWordEncoder| {
        let (mut ctrl, _) = prepare(
            &pipeline,
            encoder,
            &prompt,
            IDENTITY,
            &frames,
            identity_seed,
            &[frame_seed],
            SIZE,
            SIZE,
            STEPS,
            GUIDANCE,
            &sharing_always(),
            &cancel,
            |_| Ok(()),
        )
        .unwrap();
        // Sample 0 is someone else's image (as CharaConsist's identity), sample 1 frame 0.
        ctrl.set_roles(vec![SampleRole::Plain, SampleRole::Frame(0)]);
        let req = BatchRequest {
            samples: vec![
                SampleSpec {
                    conditioning: other.clone(),
                    seed: 11,
                },
                SampleSpec {
                    conditioning: prompt.conditioning.clone(),
                    seed: frame_seed,
                },
            ],
            width: SIZE,
            height: SIZE,
            steps: STEPS,
            guidance: GUIDANCE,
            batch_index: vec![0, 1],
            stop_after: None,
        };
        pipeline
            .sample_batch(&req, &mut ctrl, &cancel, |_| Ok(()))
            .unwrap()
    };
    let plain = |frame_seed: u64| {
        vanilla(
            &pipeline,
            &[
                (other.clone(), 11),
                (prompt.conditioning.clone(), frame_seed),
            ],
        )
    };
    // Same prompt and seed as the identity record: both rows equal plain sampling (the frame
    // row up to the rounding of a batch of 2 against the record's batch of 1).
    let same = run(7, 7, &mut encoder);
    let reference = plain(7);
    assert_eq!(row(&same, 0), row(&reference, 0));
    let worst = max_abs_diff(&row(&same, 1), &row(&reference, 1));
    assert!(worst < 1e-4, "{worst}");
    // Another frame seed: the frame row (second in the batch) takes the identity's features
    // and changes; the plain row does not.
    let shared = run(7, 13, &mut encoder);
    let reference = plain(13);
    assert_eq!(row(&shared, 0), row(&reference, 0));
    let moved = max_abs_diff(&row(&shared, 1), &row(&reference, 1));
    assert!(moved > 1e-2, "{moved}");
}

fn prepare_with(
    pipeline: &Pipeline,
    encoder: &mut PaddedWordEncoder,
    frames: &[(String, String)],
    seeds: &[u64],
    settings: &AsemSettings,
) -> (
    storyloom::consistency::asemconsist::AsemControl,
    Option<storyloom::consistency::asemconsist::AfsDecision>,
) {
    let prompt = encode_combined(encoder, IDENTITY, frames).unwrap();
    let mut probe_steps = Vec::new();
    let out = prepare(
        pipeline,
        encoder,
        &prompt,
        IDENTITY,
        frames,
        9,
        seeds,
        SIZE,
        SIZE,
        STEPS,
        GUIDANCE,
        settings,
        &no_cancel(),
        |r| {
            probe_steps.push(r.step);
            Ok(())
        },
    )
    .unwrap();
    // The probe pass stops at the probe step (4 of 28): steps 0..=4.
    assert_eq!(&probe_steps[..5], &[0, 1, 2, 3, 4]);
    out
}

#[test]
fn the_probe_radius_of_identical_samples_is_zero() {
    let (pipeline, mut encoder) = setup();
    let same = vec![frames()[0].clone(); 3];
    let (ctrl, decision) = prepare_with(
        &pipeline,
        &mut encoder,
        &same,
        &[5, 5, 5],
        &AsemPreset::Full.settings(),
    );
    let d = decision.unwrap();
    assert_eq!(d.radius, Some(0.0));
    assert!(!d.use_sharing);
    assert_eq!(ctrl.residual_cache_len(), 0);
}

#[test]
fn the_decision_flips_at_the_measured_radius() {
    let (pipeline, mut encoder) = setup();
    let frames = frames();
    let mut settings = AsemPreset::Full.settings();
    settings.afs.threshold = f32::MAX;
    let (_, d) = prepare_with(&pipeline, &mut encoder, &frames, &SEEDS, &settings);
    let r = d.unwrap().radius.unwrap();
    assert!(r > 0.0);
    // The calibration entry point measures the same radius.
    let measured = measure_ambiguity(
        &pipeline,
        &mut encoder,
        IDENTITY,
        &frames,
        9,
        &SEEDS,
        SIZE,
        SIZE,
        STEPS,
        GUIDANCE,
        &settings,
        &no_cancel(),
        |_| Ok(()),
    )
    .unwrap();
    assert_eq!(measured, Some(r));
    // Radius > threshold means ambiguous (appendix C), so a threshold of exactly r does not
    // share; one just below does, and the identity record fills the cache.
    for (threshold, shares) in [(r.next_down(), true), (r, false), (r.next_up(), false)] {
        settings.afs.threshold = threshold;
        let (ctrl, d) = prepare_with(&pipeline, &mut encoder, &frames, &SEEDS, &settings);
        let d = d.unwrap();
        assert_eq!(d.radius, Some(r), "the radius is reproducible");
        assert_eq!(d.use_sharing, shares, "threshold {threshold}");
        assert_eq!(ctrl.residual_cache_len() > 0, shares);
    }
}

#[test]
fn asemconsist_runs_after_characonsist_on_the_same_batch() {
    let (pipeline, mut encoder) = setup();
    let frames = frames();
    let prompt = encode_combined(&mut encoder, IDENTITY, &frames).unwrap();
    let params = StoryParams {
        width: SIZE,
        height: SIZE,
        steps: 10,
        guidance: GUIDANCE,
    };
    let id_cond = encoder
        .encode(&["in a quiet town", IDENTITY, "standing"])
        .unwrap();
    let id_spans = PromptSpans::new(
        id_cond.segment_spans[0].clone(),
        id_cond.segment_spans[1].start..id_cond.segment_spans[2].end,
    );
    let identity = StorySample::new(
        SampleSpec {
            conditioning: id_cond,
            seed: 9,
        },
        id_spans,
    );
    let samples: Vec<StorySample> = prompt
        .frame_parts
        .iter()
        .zip(SEEDS)
        .map(|((bg, act), seed)| {
            StorySample::new(
                SampleSpec {
                    conditioning: prompt.conditioning.clone(),
                    seed,
                },
                PromptSpans::new(bg.clone(), prompt.spans.identity.start..act.end),
            )
        })
        .collect();
    let chara = CharaConsistSettings::default();
    let story =
        |other: &mut dyn FnMut() -> Option<storyloom::consistency::asemconsist::AsemControl>| {
            let cancel = no_cancel();
            match other() {
                Some(mut asem) => render_story(
                    &pipeline,
                    &identity,
                    &samples,
                    &params,
                    &chara,
                    BankStrategy::CoBatched,
                    &cancel,
                    &mut asem,
                    |_, _| Ok(()),
                ),
                None => render_story(
                    &pipeline,
                    &identity,
                    &samples,
                    &params,
                    &chara,
                    BankStrategy::CoBatched,
                    &cancel,
                    &mut NoControl,
                    |_, _| Ok(()),
                ),
            }
            .unwrap()
        };
    let without = story(&mut || None);
    let mut settings = AsemPreset::StmPad.settings();
    settings.afs.mode = AfsMode::Never;
    let with = story(&mut || {
        let (mut asem, _) = prepare(
            &pipeline,
            &mut encoder,
            &prompt,
            IDENTITY,
            &frames,
            9,
            &SEEDS,
            SIZE,
            SIZE,
            params.steps,
            GUIDANCE,
            &settings,
            &no_cancel(),
            |_| Ok(()),
        )
        .unwrap();
        let mut roles = vec![SampleRole::Plain];
        roles.extend(frame_roles(frames.len()));
        asem.set_roles(roles);
        Some(asem)
    });
    // CharaConsist's identity image is a Plain row: untouched. The frames change.
    assert_eq!(flat(&with.identity), flat(&without.identity));
    for (a, b) in with.frames.iter().zip(&without.frames) {
        assert_ne!(flat(a), flat(b));
    }
}

// ---- Spans of combined prompts with the built-in model's tokenizer ----

/// The built-in tokenizer with the built-in model's conventions (64 tokens, parts joined by
/// ", "), producing zero features: spans need no text model.
struct TokenizerOnly {
    tokenizer: PromptTokenizer,
}

impl TokenizerOnly {
    fn builtin() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/builtin/tokenizer.json");
        Self {
            tokenizer: PromptTokenizer::from_file(&path, TextModelKind::T5, 64).unwrap(),
        }
    }

    fn pieces(&self, segments: &[&str]) -> Vec<String> {
        self.tokenizer
            .combine(PromptSegments {
                segments,
                separator: Separator::Comma,
            })
            .unwrap()
            .pieces
    }
}

impl PromptEncoder for TokenizerOnly {
    fn encode(&mut self, segments: &[&str]) -> anyhow::Result<Conditioning> {
        let p = self.tokenizer.combine(PromptSegments {
            segments,
            separator: Separator::Comma,
        })?;
        Ok(Conditioning {
            txt: Tensor::zeros((1, p.ids.len(), 4), DType::F32, &Device::Cpu)?,
            pooled: Tensor::zeros((1, 4), DType::F32, &Device::Cpu)?,
            segment_spans: p.segment_spans,
            eos: p.eos,
            padding: p.padding,
            truncated: p.truncated,
        })
    }
}

fn texts(pieces: &[String], range: Range<usize>) -> Vec<&str> {
    pieces[range].iter().map(String::as_str).collect()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(b, a)| (b.to_string(), a.to_string()))
        .collect()
}

#[test]
fn spans_cover_each_segment_with_the_builtin_tokenizer() {
    let mut enc = TokenizerOnly::builtin();
    // "snow-white" is one word in three pieces (snow, <unk> for the hyphen, white); the
    // action carries its own comma and a final full stop.
    let identity = "a snow-white creature with polka dots";
    let frames = owned(&[
        (
            "in a snowy field at night",
            "waving its arm, seen from afar.",
        ),
        ("", "jumping"),
        ("on a sandy beach", ""),
    ]);
    let segments = combined_segments(identity, &frames);
    let refs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let pieces = enc.pieces(&refs);
    let prompt = encode_combined(&mut enc, identity, &frames).unwrap();
    let s = &prompt.spans;

    // Token positions, counted by hand:
    //  0 a  1 snow  2 <unk>  3 white  4 creature  5 with  6 polka  7 dots  8 ,
    //  9 in 10 a 11 snowy 12 field 13 at 14 night 15 , 16 waving 17 its 18 arm 19 , 20 seen
    // 21 from 22 afar 23 .  24 ,  25 jumping  26 ,  27 on 28 a 29 sandy 30 beach  31 </s>
    assert_eq!(s.identity, 0..8);
    assert_eq!(
        texts(&pieces, s.identity.clone()),
        [
            "a", "snow", "<unk>", "white", "creature", "with", "polka", "dots"
        ]
    );
    assert_eq!(prompt.frame_parts[0], (9..15, 16..24));
    // An empty segment's span sits where its tokens would have started.
    assert_eq!(prompt.frame_parts[1], (24..24, 25..26));
    assert_eq!(prompt.frame_parts[2], (27..31, 31..31));
    // e_i runs from the background's first token to the action's last, its inner comma in.
    assert_eq!(s.frames, vec![9..24, 25..26, 27..31]);
    assert_eq!(
        texts(&pieces, s.frames[0].clone()),
        [
            "in", "a", "snowy", "field", "at", "night", ",", "waving", "its", "arm", ",", "seen",
            "from", "afar", "."
        ]
    );
    assert_eq!(texts(&pieces, s.frames[1].clone()), ["jumping"]);
    assert_eq!(
        texts(&pieces, s.frames[2].clone()),
        ["on", "a", "sandy", "beach"]
    );
    // The commas between prompts (8, 24, 26) and the EOS (31) belong to no span.
    for gap in [8, 24, 26] {
        assert_eq!(pieces[gap], ",");
        assert!(!s.identity.contains(&gap) && s.frames.iter().all(|f| !f.contains(&gap)));
    }
    assert_eq!(prompt.conditioning.eos, 31);
    assert_eq!(pieces[31], "</s>");
    assert_eq!(s.padding, 32..64);
    assert!(
        texts(&pieces, s.padding.clone())
            .iter()
            .all(|p| *p == "<pad>")
    );

    // The other layout: commas to the segment before them, the EOS first in the padding.
    let layout = PromptLayout {
        eos_is_padding: true,
        separators: SeparatorTokens::WithPreceding,
    };
    let p = encode_combined_with(&mut enc, identity, &frames, layout).unwrap();
    assert_eq!(p.spans.identity, 0..9);
    assert_eq!(p.spans.frames, vec![9..25, 25..27, 27..31]);
    assert_eq!(p.spans.padding, 31..64);
}

#[test]
fn a_combined_prompt_that_does_not_fit_names_the_frames() {
    let mut enc = TokenizerOnly::builtin();
    // Identity 4 tokens; every frame adds ", " + 4 + ", " + 3 = 9 tokens; 63 fit before the
    // EOS. Six frames take 4 + 54 = 58 tokens and fit.
    let frame = ("in a snowy field", "waving its arm");
    let story = |n: usize| owned(&vec![frame; n]);
    let six = encode_combined(&mut enc, IDENTITY, &story(6)).unwrap();
    assert_eq!(six.conditioning.eos, 58);
    // Seven: frame 7's background takes 59..63, its action is cut.
    match encode_combined(&mut enc, IDENTITY, &story(7)) {
        Err(CombinedPromptError::Truncated {
            max_len,
            identity_cut,
            frames,
        }) => assert_eq!((max_len, identity_cut, frames), (64, false, vec![6])),
        other => panic!("expected a truncation error, got {other:?}"),
    }
    let err = encode_combined(&mut enc, IDENTITY, &story(9)).unwrap_err();
    assert!(
        err.to_string().contains("frames 7, 8, 9 do not fit"),
        "{err}"
    );
    // The tiny word encoder (one token per word, no separators, 31 before the EOS): 4 + 7
    // per frame; frame 4 gets 25..29 and 29..31 of its 7 words, frames 5 and 6 nothing.
    let (_, mut words) = setup();
    let err = encode_combined(&mut words, IDENTITY, &story(6)).unwrap_err();
    assert!(matches!(
        err,
        CombinedPromptError::Truncated { ref frames, .. } if frames == &vec![3, 4, 5]
    ));
}

#[test]
fn prepare_checks_its_inputs() {
    let (pipeline, mut encoder) = setup();
    let frames = frames();
    let prompt = encode_combined(&mut encoder, IDENTITY, &frames).unwrap();
    let err = prepare(
        &pipeline,
        &mut encoder,
        &prompt,
        IDENTITY,
        &frames,
        9,
        &[1, 2],
        SIZE,
        SIZE,
        STEPS,
        GUIDANCE,
        &AsemPreset::Full.settings(),
        &no_cancel(),
        |_| Ok(()),
    )
    .unwrap_err();
    assert!(matches!(err, PipelineError::Input(_)));
    // Cancelled before the probe pass: a cancellation, not another error.
    let cancel = AtomicBool::new(true);
    let err = prepare(
        &pipeline,
        &mut encoder,
        &prompt,
        IDENTITY,
        &frames,
        9,
        &SEEDS,
        SIZE,
        SIZE,
        STEPS,
        GUIDANCE,
        &AsemPreset::Full.settings(),
        &cancel,
        |_| Ok(()),
    )
    .unwrap_err();
    assert!(err.is_cancelled());
}
