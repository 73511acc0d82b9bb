//! The shipped built-in model: its weights load, Storyloom's forward pass reproduces
//! transformers/diffusers on them, CharaConsist's attention readout (mask and point-matching
//! similarity) reproduces an independent PyTorch computation, and a fixed seed and prompt give
//! a fixed, non-trivial image.
//!
//! `tests/fixtures/builtin_parity.safetensors` comes from `assets/builtin/make_parity.py`,
//! `tests/fixtures/builtin_masks.safetensors` from `assets/builtin/make_mask_reference.py`;
//! `tests/fixtures/builtin_seed7.safetensors` is written by this test when run with
//! `STORYLOOM_BLESS=1` (after retraining the model, regenerate both).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use storyloom::consistency::characonsist::{
    MaskAccumulator, MaskVariant, PromptSpans, SimilarityAccumulator,
};
use storyloom::model::builtin::model::{
    BuiltinModel, DEFAULT_STEPS, IMAGE_SIZE, LATENT_CHANNELS, TEXT_LEN, pixels_to_latent,
};
use storyloom::model::dit::{BlockId, Control, FluxInputs, HookCtx, StepInfo};
use storyloom::model::pipeline::{BatchRequest, SampleSpec};
use storyloom::model::sampler::{Prediction, euler_sample, schedule};
use storyloom::model::text::TextEncoding;

// Kept identical to the constants in assets/builtin/make_parity.py.
const BACKGROUND: &str = "on a sunny beach";
const CHARACTER: &str = "a red round creature with stripes";
const ACTION: &str = "jumping in the middle";
const SEED: u64 = 7;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load_model() -> BuiltinModel {
    BuiltinModel::load(&Device::Cpu).expect("the shipped built-in model loads")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
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

fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Final packed tokens of one vanilla sample.
fn sample_tokens(model: &mut BuiltinModel, seed: u64, steps: usize) -> Tensor {
    let conditioning = model
        .encoder
        .conditioning(&[BACKGROUND, CHARACTER, ACTION])
        .unwrap();
    let req = BatchRequest {
        samples: vec![SampleSpec { conditioning, seed }],
        width: IMAGE_SIZE,
        height: IMAGE_SIZE,
        steps,
        guidance: 0.0,
        batch_index: vec![0],
        stop_after: None,
    };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    model
        .pipeline
        .sample_batch(&req, &mut storyloom::model::dit::NoControl, &cancel, |_| {
            Ok(())
        })
        .unwrap()
}

/// The reference assets/builtin/make_parity.py computed with transformers and diffusers.
fn parity_reference() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("builtin_parity.safetensors"), &Device::Cpu)
        .expect("tests/fixtures/builtin_parity.safetensors (assets/builtin/make_parity.py)")
}

/// The prompt of the parity fixture, encoded as the built-in model encodes prompts.
fn encode_parity_prompt(model: &mut BuiltinModel) -> TextEncoding {
    model
        .encoder
        .text_encoder()
        .encode(
            &[BACKGROUND, CHARACTER, ACTION],
            storyloom::model::builtin::model::SEPARATOR,
        )
        .unwrap()
}

#[test]
fn shipped_weights_load_with_the_documented_sizes() {
    let model = load_model();
    let cfg = model.transformer().config();
    assert_eq!(cfg.in_channels, LATENT_CHANNELS * 4);
    assert_eq!(cfg.context_in_dim, 128, "T5 d_model");
    assert_eq!(cfg.vec_in_dim, 128, "pooled T5 mean");
    assert_eq!(cfg.axes_dim.iter().sum::<usize>(), cfg.head_dim());
    assert!(!cfg.guidance_embed);
    assert!(cfg.depth >= 1 && cfg.depth_single_blocks >= 1);
}

#[test]
fn prompt_encoding_and_transformer_output_match_transformers_and_diffusers() {
    let mut model = load_model();
    let reference = parity_reference();
    let get = |n: &str| reference.get(n).unwrap_or_else(|| panic!("{n} in fixture"));

    let enc = encode_parity_prompt(&mut model);
    let ids: Vec<i64> = get("ids").flatten_all().unwrap().to_vec1().unwrap();
    let ours: Vec<i64> = enc.prompt.ids.iter().map(|&i| i as i64).collect();
    assert_eq!(ours, ids, "token ids");
    assert_eq!(ours.len(), TEXT_LEN);

    let hidden_err = max_abs_diff(&enc.hidden, get("hidden"));
    let pooled_err = max_abs_diff(&enc.pooled, get("pooled"));
    assert!(
        hidden_err <= 1e-4 * max_abs(get("hidden")).max(1.0),
        "T5 hidden: {hidden_err}"
    );
    assert!(
        pooled_err <= 1e-4 * max_abs(get("pooled")).max(1.0),
        "pooled: {pooled_err}"
    );

    let transformer = model.transformer();
    let rope = transformer.rope_tables(TEXT_LEN, 8, 8).unwrap();
    let output = transformer
        .forward(&FluxInputs {
            img: get("x"),
            txt: get("hidden"),
            pooled: get("pooled"),
            timesteps: get("t"),
            guidance: None,
            rope: &rope,
            img_grid: (8, 8),
        })
        .unwrap();
    let out_err = max_abs_diff(&output, get("output"));
    assert!(
        out_err <= 1e-4 * max_abs(get("output")).max(1.0),
        "transformer output: {out_err}"
    );
}

#[test]
fn sampling_loop_matches_a_pytorch_euler_loop() {
    // The whole loop: schedule, clean-image prediction turned into a velocity, Euler steps,
    // from the same start as assets/builtin/make_parity.py's loop.
    let mut model = load_model();
    assert_eq!(model.pipeline.prediction, Prediction::Sample);
    let reference = parity_reference();
    let enc = encode_parity_prompt(&mut model);
    let pipeline = &model.pipeline;
    let rope = pipeline.transformer.rope_tables(TEXT_LEN, 8, 8).unwrap();
    let times = schedule(DEFAULT_STEPS, 64, pipeline.shift);
    let cancel = AtomicBool::new(false);
    let sampled = euler_sample(
        reference["noise"].clone(),
        &times,
        &cancel,
        |_, x, t| {
            let ts = Tensor::new(&[t as f32], &Device::Cpu)?;
            let output = pipeline.transformer.forward(&FluxInputs {
                img: x,
                txt: &enc.hidden,
                pooled: &enc.pooled,
                timesteps: &ts,
                guidance: None,
                rope: &rope,
                img_grid: (8, 8),
            })?;
            pipeline.prediction.to_velocity(output, x, t)
        },
        |_| Ok(()),
    )
    .unwrap();
    let err = max_abs_diff(&sampled, &reference["sampled"]);
    assert!(
        err <= 1e-3 * max_abs(&reference["sampled"]).max(1.0),
        "sampled tokens: {err}"
    );
}

#[test]
fn fixed_seed_and_prompt_give_the_reference_image() {
    let mut model = load_model();
    let tokens = sample_tokens(&mut model, SEED, DEFAULT_STEPS);
    let path = fixture("builtin_seed7.safetensors");
    if std::env::var_os("STORYLOOM_BLESS").is_some() {
        let map = HashMap::from([("tokens".to_string(), tokens.clone())]);
        candle_core::safetensors::save(&map, &path).unwrap();
    }
    let reference = candle_core::safetensors::load(&path, &Device::Cpu)
        .expect("tests/fixtures/builtin_seed7.safetensors (run once with STORYLOOM_BLESS=1)");
    let err = max_abs_diff(&tokens, &reference["tokens"]);
    assert!(
        err <= 1e-4,
        "final tokens differ from the reference by {err}"
    );

    // Same seed again: bit-identical; another seed: another image.
    let again = sample_tokens(&mut model, SEED, DEFAULT_STEPS);
    assert_eq!(max_abs_diff(&tokens, &again), 0.0);
    let other = sample_tokens(&mut model, SEED + 1, DEFAULT_STEPS);
    assert!(max_abs_diff(&tokens, &other) > 0.1);
}

fn channel_std(img: &RgbImage, channel: usize) -> f64 {
    let values: Vec<f64> = img.pixels().map(|p| p.0[channel] as f64).collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt()
}

#[test]
fn generated_image_is_not_trivially_uniform() {
    let mut model = load_model();
    let img = model
        .generate(&[BACKGROUND, CHARACTER, ACTION], SEED, DEFAULT_STEPS)
        .unwrap();
    assert_eq!(img.dimensions(), (IMAGE_SIZE, IMAGE_SIZE));
    let spread: f64 = (0..3).map(|c| channel_std(&img, c)).sum::<f64>() / 3.0;
    assert!(spread > 10.0, "mean per-channel std {spread:.2} of 255");
    // The top rows (sky) and bottom rows (sand) of a beach differ in colour (not in
    // brightness: pale blue and sand are about equally bright).
    let row_mean = |y: u32, c: usize| -> f64 {
        (0..IMAGE_SIZE)
            .map(|x| img.get_pixel(x, y).0[c] as f64)
            .sum::<f64>()
            / IMAGE_SIZE as f64
    };
    let sky_to_sand: f64 = (0..3)
        .map(|c| (row_mean(2, c) - row_mean(IMAGE_SIZE - 3, c)).abs())
        .sum();
    assert!(
        sky_to_sand > 40.0,
        "sky and sand differ by {sky_to_sand:.1}"
    );
    // Structure, not noise: neighbouring pixels differ much less than pixels in general
    // (for white noise the ratio is about 1.4).
    let values = |x: u32, y: u32| img.get_pixel(x, y).0.map(|v| v as f64);
    let mean: [f64; 3] = (0..3)
        .map(|c| {
            img.pixels().map(|p| p.0[c] as f64).sum::<f64>() / (IMAGE_SIZE * IMAGE_SIZE) as f64
        })
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let (mut neighbour, mut deviation, mut count) = (0.0, 0.0, 0.0);
    for y in 0..IMAGE_SIZE {
        for x in 0..IMAGE_SIZE - 1 {
            let (p, q) = (values(x, y), values(x + 1, y));
            for c in 0..3 {
                neighbour += (p[c] - q[c]).abs();
                deviation += (p[c] - mean[c]).abs();
            }
            count += 3.0;
        }
    }
    let ratio = (neighbour / count) / (deviation / count);
    assert!(
        ratio < 0.5,
        "neighbour difference / deviation = {ratio:.3}: looks like noise"
    );
    // The codec round-trips the generated image exactly.
    let z = pixels_to_latent(&img, &Device::Cpu).unwrap();
    assert_eq!(
        storyloom::model::builtin::model::latent_to_pixels(&z).unwrap(),
        img
    );
}

#[test]
fn weights_id_changes_with_the_weights() {
    let shipped = load_model();
    assert_eq!(shipped.weights_id.len(), 8);
    assert!(shipped.weights_id.chars().all(|c| c.is_ascii_hexdigit()));

    // The same layout with one weight's last byte changed: still loads, under another name.
    let source = storyloom::model::builtin::model::default_dir();
    let dir = tempfile::tempdir().unwrap();
    for part in ["transformer", "text_encoder"] {
        std::fs::create_dir(dir.path().join(part)).unwrap();
        for entry in std::fs::read_dir(source.join(part)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(part).join(entry.file_name())).unwrap();
        }
    }
    std::fs::copy(
        source.join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let weights = dir.path().join("text_encoder/model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&weights, bytes).unwrap();
    let changed = BuiltinModel::load_from(dir.path(), &Device::Cpu).unwrap();
    assert_ne!(changed.weights_id, shipped.weights_id);
}

// Kept identical to PROMPTS in assets/builtin/make_mask_reference.py.
const MASK_PROMPTS: [(&str, [&str; 3]); 2] = [
    (
        "frame",
        [
            "on a sunny beach",
            "a red round creature with stripes",
            "jumping on the left",
        ],
    ),
    (
        "identity",
        [
            "in a green meadow",
            "a red round creature with stripes",
            "standing on the right",
        ],
    ),
];

/// Every single block's image queries, text keys and image attention output.
#[derive(Default)]
struct Readout {
    queries_keys: Vec<(Tensor, Tensor)>,
    outputs: Vec<Tensor>,
}

impl Control for Readout {
    fn wants_attention_probs(&self, ctx: &HookCtx) -> bool {
        matches!(ctx.block, BlockId::Single(_))
    }

    fn attention_probs(
        &mut self,
        _: &HookCtx,
        q_img: &Tensor,
        k_txt: &Tensor,
    ) -> candle_core::Result<()> {
        self.queries_keys.push((q_img.get(0)?, k_txt.get(0)?));
        Ok(())
    }

    fn attention_output(&mut self, ctx: &HookCtx, x: Tensor) -> candle_core::Result<Tensor> {
        if let BlockId::Single(_) = ctx.block {
            self.outputs
                .push(x.get(0)?.narrow(0, ctx.txt_len, ctx.img_len())?);
        }
        Ok(x)
    }
}

/// CharaConsist's mask (eqs. 6-9) and point-matching similarity (eq. 4) on the shipped
/// weights equal an independent PyTorch computation (`assets/builtin/make_mask_reference.py`)
/// on the same inputs: the images at the extraction step of two prompts.
#[test]
fn characonsist_readout_matches_a_pytorch_reference() {
    let mut model = load_model();
    let reference =
        candle_core::safetensors::load(fixture("builtin_masks.safetensors"), &Device::Cpu).expect(
            "tests/fixtures/builtin_masks.safetensors (assets/builtin/make_mask_reference.py)",
        );
    let get = |n: &str| reference.get(n).unwrap_or_else(|| panic!("{n} in fixture"));
    let mut outputs = Vec::new();
    for (name, parts) in MASK_PROMPTS {
        let enc = model
            .encoder
            .text_encoder()
            .encode(&parts, storyloom::model::builtin::model::SEPARATOR)
            .unwrap();
        let ids: Vec<i64> = enc.prompt.ids.iter().map(|&i| i as i64).collect();
        let reference_ids: Vec<i64> = get(&format!("{name}.ids"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(ids, reference_ids, "{name}: token ids");
        let spans = &enc.prompt.segment_spans;
        let spans = PromptSpans::new(spans[0].clone(), spans[1].start..spans[2].end);

        let transformer = model.transformer();
        let rope = transformer.rope_tables(TEXT_LEN, 8, 8).unwrap();
        let mut readout = Readout::default();
        transformer
            .forward_with(
                &FluxInputs {
                    img: get(&format!("{name}.x")),
                    txt: &enc.hidden,
                    pooled: &enc.pooled,
                    timesteps: get(&format!("{name}.t")),
                    guidance: None,
                    rope: &rope,
                    img_grid: (8, 8),
                },
                &StepInfo {
                    step: 4,
                    num_steps: DEFAULT_STEPS,
                    batch_index: &[0],
                },
                &mut readout,
            )
            .unwrap();
        assert_eq!(
            readout.queries_keys.len(),
            transformer.config().depth_single_blocks
        );

        let mut acc = MaskAccumulator::new();
        for (q, k) in &readout.queries_keys {
            acc.add_queries_keys(q, k, &spans, MaskVariant::ReleasedCode)
                .unwrap();
        }
        let (bg, fg) = acc.scores();
        for (part, ours) in [("bg", &bg), ("fg", &fg)] {
            let theirs: Vec<f32> = get(&format!("{name}.{part}")).to_vec1().unwrap();
            let err = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err <= 1e-4, "{name}: {part} attention differs by {err}");
        }
        let mask = acc
            .raw_mask(8, 8, &spans, MaskVariant::ReleasedCode)
            .unwrap();
        let theirs: Vec<bool> = get(&format!("{name}.mask"))
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|&m| m > 0.5)
            .collect();
        // A token whose two scores tie within rounding may fall either way.
        let disagree: Vec<usize> = (0..64)
            .filter(|&i| mask.fg[i] != theirs[i] && (bg[i] - fg[i]).abs() > 1e-5)
            .collect();
        assert!(
            disagree.is_empty(),
            "{name}: mask differs at tokens {disagree:?}"
        );
        assert!(
            mask.count() > 0 && mask.count() < 64,
            "{name}: a non-trivial mask"
        );
        outputs.push(readout.outputs);
    }
    let mut similarity = SimilarityAccumulator::new();
    for (frame, identity) in outputs[0].iter().zip(&outputs[1]) {
        similarity.add(frame, identity).unwrap();
    }
    let err = max_abs_diff(&similarity.mean().unwrap(), get("similarity"));
    assert!(err <= 1e-4, "similarity differs by {err}");
}
