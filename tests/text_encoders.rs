//! T5 and CLIP encoders against the transformers fixtures (`tests/fixtures/t5_tiny*`,
//! `clip_tiny*`, made by `make_text_fixture.py`), the `TextEncoder` around them, and every
//! error a wrong or damaged file gives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use storyloom::model::pipeline::PromptEncoder;
use storyloom::model::text::{
    ClipEncoder, EncoderPaths, PooledSource, Separator, T5Encoder, TextEncoder, TextEncoderOptions,
    TextError, clip, files, t5,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load_io(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name), &Device::Cpu).unwrap()
}

fn ids_of(io: &HashMap<String, Tensor>) -> Vec<u32> {
    io["input_ids"]
        .i(0)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as u32)
        .collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
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

fn t5_paths() -> EncoderPaths {
    EncoderPaths {
        weights: fixture("t5_tiny.safetensors"),
        config: Some(fixture("t5_tiny.config.json")),
        tokenizer: fixture("t5_tiny_tokenizer.json"),
    }
}

fn clip_paths() -> EncoderPaths {
    EncoderPaths {
        weights: fixture("clip_tiny.safetensors"),
        config: Some(fixture("clip_tiny.config.json")),
        tokenizer: fixture("clip_tiny_tokenizer.json"),
    }
}

fn options(max_len: usize) -> TextEncoderOptions {
    TextEncoderOptions {
        max_len,
        ..TextEncoderOptions::default()
    }
}

const SENTENCE: &str = "A girl in a yellow raincoat";
const CLIP_SENTENCE: &str = "A girl in a yellow raincoat walks through the rainy market.";

#[test]
fn t5_matches_transformers() {
    let io = load_io("t5_tiny.io.safetensors");
    let mut enc = T5Encoder::load(
        &fixture("t5_tiny.safetensors"),
        Some(&fixture("t5_tiny.config.json")),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let hidden = enc.forward(&ids_of(&io)).unwrap();
    let diff = max_abs_diff(&hidden, &io["last_hidden_state"]);
    eprintln!("T5 last hidden state: max abs diff {diff:e}");
    assert!(diff <= 1e-4, "T5 max abs diff {diff}");
}

#[test]
fn clip_matches_transformers_hidden_and_pooled() {
    let io = load_io("clip_tiny.io.safetensors");
    let enc = ClipEncoder::load(
        &fixture("clip_tiny.safetensors"),
        Some(&fixture("clip_tiny.config.json")),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let ids = ids_of(&io);
    // The fixture's pooled output is read at the first end token, position 19.
    let eos = ids.iter().position(|&id| id == 299).unwrap();
    assert_eq!(eos, 19);
    let (hidden, pooled) = enc.forward(&ids, eos).unwrap();
    let d_hidden = max_abs_diff(&hidden, &io["last_hidden_state"]);
    let d_pooled = max_abs_diff(&pooled, &io["pooler_output"]);
    eprintln!("CLIP: max abs diff {d_hidden:e} (last hidden state), {d_pooled:e} (pooled)");
    assert!(d_hidden <= 1e-4, "CLIP hidden max abs diff {d_hidden}");
    assert!(d_pooled <= 1e-4, "CLIP pooled max abs diff {d_pooled}");
}

#[test]
fn text_encoder_reproduces_both_fixtures_from_text() {
    let mut enc =
        TextEncoder::load(t5_paths(), PooledSource::Clip(clip_paths()), options(16)).unwrap();

    let t5_io = load_io("t5_tiny.io.safetensors");
    let e = enc.encode(&[SENTENCE], Separator::Space).unwrap();
    assert_eq!(e.prompt.ids, ids_of(&t5_io));
    assert_eq!(e.prompt.segment_spans, vec![0..12]);
    assert_eq!(e.prompt.eos, 12);
    assert_eq!(e.prompt.padding, 13..16);
    let diff = max_abs_diff(&e.hidden, &t5_io["last_hidden_state"]);
    assert!(diff <= 1e-4, "T5 max abs diff {diff}");

    // The CLIP fixture's sentence given as two segments: CLIP ids equal the fixture's, the
    // pooled vector equals transformers' pooler output; T5 at 16 tokens is cut.
    let clip_io = load_io("clip_tiny.io.safetensors");
    let segments = [SENTENCE, "walks through the rainy market."];
    assert_eq!(Separator::Space.join(&segments), CLIP_SENTENCE);
    let e = enc.encode(&segments, Separator::Space).unwrap();
    let clip_prompt = e.pooled_prompt.as_ref().unwrap();
    assert_eq!(clip_prompt.ids, ids_of(&clip_io));
    assert_eq!(clip_prompt.segment_spans, vec![1..7, 7..19]);
    assert!(!clip_prompt.truncated);
    let diff = max_abs_diff(&e.pooled, &clip_io["pooler_output"]);
    assert!(diff <= 1e-4, "CLIP pooled max abs diff {diff}");
    assert!(e.prompt.truncated);
    assert_eq!(e.prompt.segment_spans, vec![0..12, 12..15]);
    assert_eq!(e.hidden.dims(), &[1, 16, 32]);
}

#[test]
fn t5_mean_pools_the_real_tokens() {
    let mut enc = TextEncoder::load(t5_paths(), PooledSource::T5Mean, options(16)).unwrap();
    let e = enc.encode(&[SENTENCE], Separator::Space).unwrap();
    assert_eq!(e.prompt.real_len, 13);
    assert!(e.pooled_prompt.is_none());
    let expected = load_io("t5_tiny.io.safetensors")["last_hidden_state"]
        .i((.., 0..13))
        .unwrap()
        .mean(1)
        .unwrap();
    assert_eq!(e.pooled.dims(), &[1, 32]);
    let diff = max_abs_diff(&e.pooled, &expected);
    assert!(diff <= 1e-4, "pooled mean max abs diff {diff}");
}

#[test]
fn unload_keeps_cached_encodings_and_reloads_for_new_prompts() {
    let mut enc =
        TextEncoder::load(t5_paths(), PooledSource::Clip(clip_paths()), options(16)).unwrap();
    assert!(enc.is_loaded());
    let first = enc.encode(&[SENTENCE], Separator::Space).unwrap();
    enc.unload();
    assert!(!enc.is_loaded());

    // Cached: answered without loading anything.
    let again = enc.encode(&[SENTENCE], Separator::Space).unwrap();
    assert!(!enc.is_loaded());
    assert_eq!(max_abs_diff(&first.hidden, &again.hidden), 0.0);
    assert_eq!(max_abs_diff(&first.pooled, &again.pooled), 0.0);
    assert_eq!(enc.cached_len(), 1);

    // Another separator is another prompt.
    let comma = enc.encode(&[SENTENCE], Separator::Comma).unwrap();
    assert!(enc.is_loaded());
    assert_eq!(comma.prompt.ids, first.prompt.ids);
    assert_eq!(enc.cached_len(), 2);
}

#[test]
fn cache_drops_the_oldest_beyond_its_capacity() {
    let opts = TextEncoderOptions {
        cache_capacity: 2,
        ..options(16)
    };
    let mut enc = TextEncoder::load(t5_paths(), PooledSource::T5Mean, opts).unwrap();
    for text in ["a girl", "a rainy market", "the detective"] {
        enc.encode(&[text], Separator::Space).unwrap();
    }
    assert_eq!(enc.cached_len(), 2);
    enc.unload();
    // The newest two are cached; the oldest needs the models again.
    enc.encode(&["the detective"], Separator::Space).unwrap();
    assert!(!enc.is_loaded());
    enc.encode(&["a girl"], Separator::Space).unwrap();
    assert!(enc.is_loaded());
}

#[test]
fn prompt_encoder_trait_gives_the_pipeline_conditioning() {
    let mut enc = TextEncoder::load(t5_paths(), PooledSource::T5Mean, options(32)).unwrap();
    let c = PromptEncoder::encode(&mut enc, &[SENTENCE, "walks through the rainy market"]).unwrap();
    assert_eq!(c.txt.dims(), &[1, 32, 32]);
    assert_eq!(c.pooled.dims(), &[1, 32]);
    assert_eq!(c.segment_spans, vec![0..12, 12..24]);
    assert_eq!(c.eos, 24);
    assert_eq!(c.padding, 25..32);
    assert!(!c.truncated);
    PromptEncoder::unload(&mut enc);
    assert!(!enc.is_loaded());
}

#[test]
fn half_precision_weights_load_and_stay_close() {
    let io = load_io("t5_tiny.io.safetensors");
    let mut enc = T5Encoder::load(
        &fixture("t5_tiny.safetensors"),
        Some(&fixture("t5_tiny.config.json")),
        DType::BF16,
        &Device::Cpu,
    )
    .unwrap();
    let hidden = enc.forward(&ids_of(&io)).unwrap();
    assert_eq!(hidden.dtype(), DType::F32);
    // bf16 keeps 8 bits of mantissa; the RMS-normalised outputs are of order 1.
    let diff = max_abs_diff(&hidden, &io["last_hidden_state"]);
    assert!(diff < 0.25, "bf16 T5 max abs diff {diff}");
}

/// Splits a safetensors file into two shards with a transformers-style index json.
fn write_sharded(src: &Path, dir: &Path) -> PathBuf {
    let tensors = candle_core::safetensors::load(src, &Device::Cpu).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut shards = [HashMap::new(), HashMap::new()];
    let mut weight_map = serde_json::Map::new();
    for (i, name) in names.iter().enumerate() {
        let shard = i % 2;
        shards[shard].insert(name.to_string(), tensors[*name].clone());
        let file = format!("model-0000{}-of-00002.safetensors", shard + 1);
        weight_map.insert(name.to_string(), serde_json::Value::String(file));
    }
    for (i, shard) in shards.iter().enumerate() {
        let file = dir.join(format!("model-0000{}-of-00002.safetensors", i + 1));
        candle_core::safetensors::save(shard, file).unwrap();
    }
    let index = dir.join("model.safetensors.index.json");
    let json = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(&index, json.to_string()).unwrap();
    index
}

#[test]
fn sharded_folder_with_config_matches_the_single_file() {
    let dir = tempfile::tempdir().unwrap();
    write_sharded(&fixture("t5_tiny.safetensors"), dir.path());
    std::fs::copy(
        fixture("t5_tiny.config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let io = load_io("t5_tiny.io.safetensors");
    // The folder: its index json and config.json are found.
    let mut enc = T5Encoder::load(dir.path(), None, DType::F32, &Device::Cpu).unwrap();
    let hidden = enc.forward(&ids_of(&io)).unwrap();
    let diff = max_abs_diff(&hidden, &io["last_hidden_state"]);
    assert!(diff <= 1e-4, "sharded T5 max abs diff {diff}");
    // The index json itself.
    let index = dir.path().join("model.safetensors.index.json");
    T5Encoder::load(
        &index,
        Some(&fixture("t5_tiny.config.json")),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
}

#[test]
fn configs_inferred_from_shapes_agree_with_the_config_files() {
    let f = files::locate(
        &fixture("t5_tiny.safetensors"),
        storyloom::model::text::TextModelKind::T5,
    )
    .unwrap();
    let inferred = t5::infer_config(&f, "").unwrap();
    let read = t5::read_config(&fixture("t5_tiny.config.json")).unwrap();
    assert_eq!(inferred.vocab_size, read.vocab_size);
    assert_eq!(inferred.d_model, read.d_model);
    assert_eq!(inferred.d_kv, read.d_kv);
    assert_eq!(inferred.d_ff, read.d_ff);
    assert_eq!(inferred.num_layers, read.num_layers);
    assert_eq!(inferred.num_heads, read.num_heads);
    assert_eq!(
        inferred.relative_attention_num_buckets,
        read.relative_attention_num_buckets
    );
    assert_eq!(inferred.feed_forward_proj, read.feed_forward_proj);
    // The max distance is not in any shape: T5 v1.1's 128 is assumed (the fixture uses 20).
    assert_eq!(inferred.relative_attention_max_distance, 128);

    let f = files::locate(
        &fixture("clip_tiny.safetensors"),
        storyloom::model::text::TextModelKind::Clip,
    )
    .unwrap();
    let inferred = clip::infer_config(&f, "text_model.").unwrap();
    let read = clip::read_config(&fixture("clip_tiny.config.json")).unwrap();
    assert_eq!(inferred.vocab_size, read.vocab_size);
    assert_eq!(inferred.hidden_size, read.hidden_size);
    assert_eq!(inferred.intermediate_size, read.intermediate_size);
    assert_eq!(inferred.num_hidden_layers, read.num_hidden_layers);
    assert_eq!(
        inferred.max_position_embeddings,
        read.max_position_embeddings
    );
    assert_eq!(read.hidden_act, "quick_gelu");
}

/// Writes `src` with one tensor changed (or removed when `replace` gives None).
fn write_modified(
    src: &Path,
    dst: &Path,
    tensor: &str,
    replace: impl Fn(&Tensor) -> Option<Tensor>,
) {
    let mut tensors = candle_core::safetensors::load(src, &Device::Cpu).unwrap();
    let old = tensors.remove(tensor).unwrap();
    if let Some(new) = replace(&old) {
        tensors.insert(tensor.to_string(), new);
    }
    candle_core::safetensors::save(&tensors, dst).unwrap();
}

fn load_t5_error(weights: &Path) -> TextError {
    T5Encoder::load(
        weights,
        Some(&fixture("t5_tiny.config.json")),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_err()
}

#[test]
fn wrong_shape_is_reported_by_tensor_name() {
    let dir = tempfile::tempdir().unwrap();
    let name = "encoder.block.1.layer.1.DenseReluDense.wi_1.weight";
    let bad = dir.path().join("t5.safetensors");
    write_modified(&fixture("t5_tiny.safetensors"), &bad, name, |t| {
        Some(t.narrow(0, 0, 60).unwrap())
    });
    let err = load_t5_error(&bad);
    match &err {
        TextError::ShapeMismatch {
            tensor,
            expected,
            found,
            ..
        } => {
            assert_eq!(tensor, name);
            assert_eq!(expected, &[64, 32]);
            assert_eq!(found, &[60, 32]);
        }
        other => panic!("expected a shape mismatch, got {other}"),
    }
    assert!(err.to_string().contains(name));

    let name = "text_model.encoder.layers.1.mlp.fc2.bias";
    let bad = dir.path().join("clip.safetensors");
    write_modified(&fixture("clip_tiny.safetensors"), &bad, name, |t| {
        Some(t.narrow(0, 0, 31).unwrap())
    });
    let err = ClipEncoder::load(&bad, None, DType::F32, &Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, TextError::ShapeMismatch { tensor, .. } if tensor == name),
        "{err}"
    );
}

#[test]
fn missing_tensor_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let name = "encoder.final_layer_norm.weight";
    let bad = dir.path().join("t5.safetensors");
    write_modified(&fixture("t5_tiny.safetensors"), &bad, name, |_| None);
    let err = load_t5_error(&bad);
    assert!(
        matches!(&err, TextError::MissingTensor { tensor, .. } if tensor == name),
        "{err}"
    );
    assert!(err.to_string().contains(name));
}

#[test]
fn truncated_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("t5_tiny.safetensors")).unwrap();
    let cut = dir.path().join("t5.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_t5_error(&cut);
    assert!(matches!(err, TextError::Header(_)), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn wrong_files_say_what_they_are_and_what_to_choose() {
    // CLIP weights chosen as the T5 encoder.
    let err = load_t5_error(&fixture("clip_tiny.safetensors"));
    assert!(matches!(err, TextError::WrongFile { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("a CLIP text encoder"), "{msg}");
    assert!(msg.contains("choose the T5 encoder weights"), "{msg}");

    // A transformer chosen as CLIP.
    let err = ClipEncoder::load(
        &fixture("flux_tiny_g.bfl.safetensors"),
        None,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(err.to_string().contains("FLUX transformer"), "{err}");

    // Missing weights.
    let err = load_t5_error(&fixture("no_such_t5.safetensors"));
    assert!(matches!(err, TextError::MissingWeights { .. }), "{err}");

    // A config that does not parse.
    let err = T5Encoder::load(
        &fixture("t5_tiny.safetensors"),
        Some(&fixture("clip_tiny.config.json")),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(matches!(err, TextError::BadConfig { .. }), "{err}");

    // A config that parses but does not fit the weights.
    let err = ClipEncoder::load(
        &fixture("clip_tiny.safetensors"),
        Some(&fixture("t5_tiny.config.json")),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            TextError::BadConfig { .. } | TextError::ShapeMismatch { .. }
        ),
        "{err}"
    );
}

#[test]
fn missing_tokenizer_names_the_file_to_choose() {
    let paths = EncoderPaths {
        tokenizer: fixture("missing_tokenizer.json"),
        ..t5_paths()
    };
    let err = TextEncoder::load(paths, PooledSource::T5Mean, options(16)).unwrap_err();
    assert!(
        err.to_string()
            .contains("choose the T5 tokenizer (tokenizer.json)"),
        "{err}"
    );

    let clip = EncoderPaths {
        tokenizer: fixture("missing_tokenizer.json"),
        ..clip_paths()
    };
    let err = TextEncoder::load(t5_paths(), PooledSource::Clip(clip), options(16)).unwrap_err();
    assert!(
        err.to_string()
            .contains("choose the CLIP tokenizer (tokenizer.json)"),
        "{err}"
    );
}
