//! Quantized GGUF transformers in our own DiT.
//!
//! Reference: the `gguf` package's dequantization of the very blocks in each fixture file
//! (`tests/fixtures/make_gguf_fixture.py`), and our dense DiT run on those dequantized weights.
//! The quantized model multiplies the stored blocks directly; its activations are rounded to
//! 8-bit blocks for the integer dot products (Q8_0 for the 32-element types, Q8_K for the
//! K-quants), so it matches the dense model on the same weights within that rounding:
//! the stated tolerance is a relative error (max |difference| / max |reference|) of 2 %
//! (measured: 0.15-0.25 % for the 32-element types, 0.6-0.8 % for the K-quants).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::quantized::{GgmlDType, gguf_file};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use storyloom::consistency::asemconsist::story::{encode_combined, render_frames};
use storyloom::consistency::asemconsist::{AfsMode, AsemPreset};
use storyloom::consistency::characonsist::story::{
    BankStrategy, StoryParams, StorySample, render_story,
};
use storyloom::consistency::characonsist::{CharaConsistSettings, PromptSpans};
use storyloom::engine::tiny::{HashedWordEncoder, TINY_TEXT_LEN, tiny_config, tiny_pipeline};
use storyloom::model::dit::init::{random_weights, seeded_normal};
use storyloom::model::dit::{FluxConfig, FluxInputs, FluxTransformer, NoControl, RopeTables};
use storyloom::model::gguf_weights::write_quantized_transformer;
use storyloom::model::pipeline::{Pipeline, PromptEncoder, SampleSpec};
use storyloom::model::weights::{
    Component, FileFormat, LoadOptions, WeightsError, classify, load_transformer,
};

/// Relative tolerance of a quantized model against the dense model on its dequantized weights.
const TOLERANCE: f32 = 0.02;
const QUANTIZED: [&str; 5] = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"];
const FLOAT: [&str; 2] = ["F16", "BF16"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn gguf_fixture(ty: &str) -> PathBuf {
    fixture(&format!("flux_tiny_g.{ty}.gguf"))
}

fn opts() -> LoadOptions {
    LoadOptions::default()
}

fn relative_error(got: &Tensor, want: &Tensor) -> f32 {
    let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
    let scale = want.abs().unwrap().max_all().unwrap();
    diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap()
}

/// The dense weights the fixture files were made from (double and single block 0 only), with
/// each tensor as the file of type `ty` stores it: the `gguf` package's dequantization for
/// quantized tensors, F16 rounding for the F16 layers, the block weights in `ty` for F16/BF16.
fn dequantized_reference(ty: &str) -> anyhow::Result<HashMap<String, Tensor>> {
    let dev = Device::Cpu;
    let all = candle_core::safetensors::load(fixture("flux_tiny_g.bfl.safetensors"), &dev)?;
    let reference =
        candle_core::safetensors::load(fixture("flux_tiny_g.gguf_ref.safetensors"), &dev)?;
    let gguf = read_content(&gguf_fixture(ty))?;
    let mut out = HashMap::new();
    for (name, t) in all {
        let other_block = (name.starts_with("double_blocks.")
            && !name.starts_with("double_blocks.0."))
            || (name.starts_with("single_blocks.") && !name.starts_with("single_blocks.0."));
        if other_block {
            continue;
        }
        let stored = gguf
            .tensor_infos
            .iter()
            .find(|(n, _)| n.trim_start_matches("model.diffusion_model.") == name)
            .map(|(_, info)| info.ggml_dtype)
            .expect("every kept tensor is in the file");
        let t = match stored {
            GgmlDType::F32 => t,
            GgmlDType::F16 => t.to_dtype(DType::F16)?.to_dtype(DType::F32)?,
            GgmlDType::BF16 => t.to_dtype(DType::BF16)?.to_dtype(DType::F32)?,
            _ => reference[&format!("{ty}.{name}")].clone(),
        };
        out.insert(name, t);
    }
    Ok(out)
}

fn read_content(path: &Path) -> anyhow::Result<gguf_file::Content> {
    let mut f = std::fs::File::open(path)?;
    Ok(gguf_file::Content::read(&mut f)?)
}

/// Every tensor of a GGUF file, dequantized by candle: the dense reference of a file the
/// test quantized itself.
fn dequantized_file(path: &Path) -> anyhow::Result<HashMap<String, Tensor>> {
    let content = read_content(path)?;
    let mut file = std::fs::File::open(path)?;
    let mut out = HashMap::new();
    for name in content.tensor_infos.keys() {
        let q = content.tensor(&mut file, name, &Device::Cpu)?;
        out.insert(name.clone(), q.dequantize(&Device::Cpu)?);
    }
    Ok(out)
}

fn dense_model(
    weights: HashMap<String, Tensor>,
    cfg: &FluxConfig,
) -> anyhow::Result<FluxTransformer> {
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    Ok(FluxTransformer::new(cfg, vb)?)
}

/// The fixture's inputs through a model.
fn forward(model: &FluxTransformer) -> anyhow::Result<Tensor> {
    let io = candle_core::safetensors::load(fixture("flux_tiny_g.io.safetensors"), &Device::Cpu)?;
    let cfg = model.config();
    let ids = Tensor::cat(&[&io["txt_ids"], &io["img_ids"]], 0)?;
    let rope = RopeTables::from_ids(&ids, &cfg.axes_dim, cfg.theta)?;
    let inputs = FluxInputs {
        img: &io["hidden_states"],
        txt: &io["encoder_hidden_states"],
        pooled: &io["pooled_projections"],
        timesteps: &io["timestep"],
        guidance: io.get("guidance"),
        rope: &rope,
        img_grid: (3, 5),
    };
    Ok(model.forward(&inputs)?)
}

#[test]
fn candle_dequantizes_the_stored_blocks_as_the_gguf_package_does() -> anyhow::Result<()> {
    let reference =
        candle_core::safetensors::load(fixture("flux_tiny_g.gguf_ref.safetensors"), &Device::Cpu)?;
    for ty in QUANTIZED {
        let path = gguf_fixture(ty);
        let content = read_content(&path)?;
        let mut file = std::fs::File::open(&path)?;
        let mut checked = 0;
        for name in content.tensor_infos.keys() {
            let bfl = name.trim_start_matches("model.diffusion_model.");
            let Some(want) = reference.get(&format!("{ty}.{bfl}")) else {
                continue;
            };
            let got = content
                .tensor(&mut file, name, &Device::Cpu)?
                .dequantize(&Device::Cpu)?;
            assert_eq!(got.dims(), want.dims(), "{ty} {name}");
            let d = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(d, 0.0, "{ty} {name}");
            checked += 1;
        }
        // Double block 0: 2 streams x (mod, qkv, proj, mlp.0, mlp.2); single block 0: 3.
        assert_eq!(checked, 13, "{ty}");
    }
    Ok(())
}

#[test]
fn a_gguf_model_matches_the_dense_model_on_its_dequantized_weights() -> anyhow::Result<()> {
    for ty in QUANTIZED.iter().chain(&FLOAT) {
        let quantized = load_transformer(&gguf_fixture(ty), &opts())?;
        let cfg = quantized.config().clone();
        assert_eq!((cfg.depth, cfg.depth_single_blocks), (1, 1), "{ty}");
        let dense = dense_model(dequantized_reference(ty)?, &cfg)?;
        let (got, want) = (forward(&quantized)?, forward(&dense)?);
        let err = relative_error(&got, &want);
        if FLOAT.contains(ty) {
            // Nothing is quantized: the same dense products on the same weights.
            assert!(err <= 1e-6, "{ty}: relative error {err}");
        } else {
            assert!(err <= TOLERANCE, "{ty}: relative error {err}");
        }
        eprintln!("{ty}: relative error {err:.5}");
    }
    Ok(())
}

#[test]
fn classify_and_inspect_report_a_gguf_file() -> anyhow::Result<()> {
    let report = classify(&gguf_fixture("Q8_0"))?;
    assert!(matches!(report.component, Component::Transformer(_)));
    match &report.format {
        FileFormat::Gguf {
            architecture,
            unsupported,
            ..
        } => {
            assert_eq!(architecture.as_deref(), Some("flux"));
            assert!(unsupported.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(report.dtypes[0].starts_with("Q8_0"), "{:?}", report.dtypes);
    let cfg = report
        .config
        .clone()
        .expect("the configuration is inferred");
    assert_eq!((cfg.hidden_size, cfg.axes_dim.clone()), (32, vec![4, 6, 6]));
    assert!(report.loaded_bytes < 4 * report.parameters as u64);
    let text = report.to_string();
    assert!(text.contains("GGUF v3, architecture flux"), "{text}");
    assert!(text.contains("Q8_0 ("), "{text}");

    let prefixed = classify(&gguf_fixture("Q4_1"))?;
    assert!(prefixed.config.is_some(), "{prefixed}");
    Ok(())
}

/// A copy of a fixture whose tensor `name` is declared as ggml type `ty`.
fn with_tensor_type(src: &Path, name: &str, ty: u32, dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(src).unwrap();
    let key = [&(name.len() as u64).to_le_bytes()[..], name.as_bytes()].concat();
    let at = bytes
        .windows(key.len())
        .position(|w| w == key)
        .expect("tensor entry");
    let dims_at = at + key.len();
    let n_dims = u32::from_le_bytes(bytes[dims_at..dims_at + 4].try_into().unwrap()) as usize;
    let type_at = dims_at + 4 + 8 * n_dims;
    bytes[type_at..type_at + 4].copy_from_slice(&ty.to_le_bytes());
    let out = dir.join("patched.gguf");
    std::fs::write(&out, bytes).unwrap();
    out
}

#[test]
fn a_file_in_a_type_storyloom_cannot_run_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    // IQ4_NL has Q4_0's block size (32 elements, 18 bytes), so the file stays consistent.
    let name = "double_blocks.0.img_mlp.0.weight";
    let path = with_tensor_type(&gguf_fixture("Q4_0"), name, 20, dir.path());
    let err = load_transformer(&path, &opts()).unwrap_err();
    assert!(
        matches!(err, WeightsError::UnsupportedQuant { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("IQ4_NL") && msg.contains(name), "{msg}");
    let report = classify(&path).unwrap();
    assert!(
        report.to_string().contains("cannot run: IQ4_NL"),
        "{report}"
    );
}

#[test]
fn a_truncated_gguf_file_names_a_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(gguf_fixture("Q8_0")).unwrap();
    let path = dir.path().join("cut.gguf");
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let msg = load_transformer(&path, &opts()).unwrap_err().to_string();
    assert!(msg.contains("truncated") && msg.contains('`'), "{msg}");
}

/// A configuration whose rows fill the K-quants' 256-element blocks.
fn k_quant_config() -> FluxConfig {
    FluxConfig {
        in_channels: 16,
        vec_in_dim: 12,
        context_in_dim: 24,
        hidden_size: 256,
        mlp_ratio: 2.0,
        num_heads: 2,
        depth: 1,
        depth_single_blocks: 1,
        axes_dim: vec![16, 56, 56],
        theta: 10_000.0,
        qkv_bias: true,
        guidance_embed: true,
    }
}

#[test]
fn k_quants_from_candles_quantizer_match_their_dequantized_weights() -> anyhow::Result<()> {
    let cfg = k_quant_config();
    let dev = Device::Cpu;
    let weights = random_weights(&cfg, 5, DType::F32, &dev)?;
    let dir = tempfile::tempdir()?;
    let (grid, txt) = ((4, 4), 6);
    let img = seeded_normal(1, &[1, 16, cfg.in_channels], &dev)?;
    let txt_t = seeded_normal(2, &[1, txt, cfg.context_in_dim], &dev)?;
    let pooled = seeded_normal(3, &[1, cfg.vec_in_dim], &dev)?;
    let t = Tensor::new(&[0.6f32], &dev)?;
    let g = Tensor::new(&[3.5f32], &dev)?;
    for quant in [
        GgmlDType::Q2K,
        GgmlDType::Q3K,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
        GgmlDType::Q8_0,
    ] {
        let path = dir.path().join(format!("{quant:?}.gguf"));
        write_quantized_transformer(&path, &weights, quant, &cfg.axes_dim)?;
        let quantized = load_transformer(&path, &opts())?;
        let dense = dense_model(dequantized_file(&path)?, &cfg)?;
        let rope = quantized.rope_tables(txt, grid.0, grid.1)?;
        let inputs = FluxInputs {
            img: &img,
            txt: &txt_t,
            pooled: &pooled,
            timesteps: &t,
            guidance: Some(&g),
            rope: &rope,
            img_grid: grid,
        };
        let err = relative_error(&quantized.forward(&inputs)?, &dense.forward(&inputs)?);
        eprintln!("{quant:?}: relative error {err:.5}");
        assert!(err <= TOLERANCE, "{quant:?}: relative error {err}");
    }
    Ok(())
}

/// The tiny pipeline of the method tests, its transformer quantized to Q8_0 through a GGUF
/// file, and the same pipeline on the dequantized weights.
fn quantized_and_dense_pipelines() -> anyhow::Result<(Pipeline, Pipeline)> {
    let cfg = tiny_config();
    let dev = Device::Cpu;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tiny.gguf");
    let weights = random_weights(&cfg, 11, DType::F32, &dev)?;
    write_quantized_transformer(&path, &weights, GgmlDType::Q8_0, &cfg.axes_dim)?;
    let mut quantized = tiny_pipeline(11, &dev)?;
    quantized.transformer = load_transformer(&path, &opts())?;
    let mut dense = tiny_pipeline(11, &dev)?;
    dense.transformer = dense_model(dequantized_file(&path)?, &cfg)?;
    Ok((quantized, dense))
}

fn tiny_encoder() -> HashedWordEncoder {
    HashedWordEncoder {
        dim: tiny_config().context_in_dim,
        max_len: TINY_TEXT_LEN,
        device: Device::Cpu,
    }
}

fn story_sample(enc: &mut HashedWordEncoder, bg: &str, action: &str, seed: u64) -> StorySample {
    let c = enc.encode(&[bg, "a round blue creature", action]).unwrap();
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

#[test]
fn characonsist_runs_unchanged_on_a_quantized_model() -> anyhow::Result<()> {
    let (quantized, dense) = quantized_and_dense_pipelines()?;
    let mut enc = tiny_encoder();
    let id = story_sample(&mut enc, "on a beach", "standing", 5);
    let frames = vec![
        story_sample(&mut enc, "in a forest", "jumping", 6),
        story_sample(&mut enc, "in a snowy field", "waving", 7),
    ];
    let params = StoryParams {
        width: 64,
        height: 64,
        steps: 8,
        guidance: 3.5,
    };
    let run = |p: &Pipeline| {
        render_story(
            p,
            &id,
            &frames,
            &params,
            &CharaConsistSettings::default(),
            BankStrategy::CoBatched,
            &AtomicBool::new(false),
            &mut NoControl,
            |_, _| Ok(()),
        )
        .unwrap()
    };
    let (q, d) = (run(&quantized), run(&dense));
    for (i, (a, b)) in q.frames.iter().zip(&d.frames).enumerate() {
        let err = relative_error(a, b);
        eprintln!("CharaConsist frame {i}: relative error {err:.5}");
        assert!(err <= TOLERANCE, "frame {i}: relative error {err}");
    }
    // The analysis the studio draws comes out of the quantized model too.
    assert_eq!(q.analyses.len(), frames.len());
    Ok(())
}

#[test]
fn asemconsist_runs_unchanged_on_a_quantized_model() -> anyhow::Result<()> {
    let (quantized, dense) = quantized_and_dense_pipelines()?;
    let mut enc = tiny_encoder();
    let identity = "a round red creature";
    let frames: Vec<(String, String)> = [("in a snowy field", "waving"), ("on a beach", "jumping")]
        .iter()
        .map(|(b, a)| (b.to_string(), a.to_string()))
        .collect();
    let prompt = encode_combined(&mut enc, identity, &frames)?;
    let mut settings = AsemPreset::Full.settings();
    settings.afs.mode = AfsMode::Always;
    let mut run = |p: &Pipeline| {
        render_frames(
            p,
            &mut enc,
            &prompt,
            identity,
            &frames,
            9,
            &[3, 4],
            32,
            32,
            12,
            3.5,
            &settings,
            &AtomicBool::new(false),
            |_| Ok(()),
        )
        .unwrap()
    };
    let (q, d) = (run(&quantized), run(&dense));
    let err = relative_error(&q.tokens, &d.tokens);
    eprintln!("ASemConsist frames: relative error {err:.5}");
    assert!(err <= TOLERANCE, "relative error {err}");
    Ok(())
}
