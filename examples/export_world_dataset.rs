//! Writes samples of the procedural world for training the built-in model.
//!
//! `cargo run --release --example export_world_dataset -- --count 30000 --out DIR`
//!
//! Produces in DIR:
//! - `images.safetensors`: `images` u8 `[N, 64, 64, 3]` (row-major RGB) and `packed_check`
//!   f32 `[2, 64, 192]`, the packed model tokens of samples 0 and 1 as Storyloom computes them
//!   (pixels in [-1, 1] -> space-to-depth by 4 -> FLUX 2x2 packing), so the training script can
//!   assert that its own packing is identical; `masks` u8 `[N, 64, 64]`, the character's
//!   coverage of every pixel (0..=255), which the grounding loss of the training script reads;
//! - `captions.jsonl`: one JSON object per sample, in the same order: seed, the joined caption,
//!   its three parts, whether the character is under-specified, and the generating attributes;
//! - `tokenizer.json`: the world's word-level tokenizer, as shipped in `assets/builtin/`.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use candle_core::{Device, Tensor};
use clap::Parser;
use storyloom::model::builtin::{World, WorldConfig, vocab};
use storyloom::model::codec::{PixelCodec, rgb_to_tensor};
use storyloom::model::sampler::pack_latents;

#[derive(Parser)]
struct Args {
    /// Number of samples.
    #[arg(long, default_value_t = 30_000)]
    count: u64,
    /// Seed of the first sample; sample i uses `first_seed + i`.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
}

/// Space-to-depth factor of the built-in model's pixel codec.
const PIXEL_FACTOR: usize = 4;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let tokenizer_path = args.out.join("tokenizer.json");
    std::fs::write(&tokenizer_path, vocab::tokenizer_json()?)
        .with_context(|| format!("writing {}", tokenizer_path.display()))?;
    let world = World::new(WorldConfig::default());
    let size = world.config().image_size as usize;
    let codec = PixelCodec {
        factor: PIXEL_FACTOR,
    };

    let captions_path = args.out.join("captions.jsonl");
    let mut captions = BufWriter::new(
        std::fs::File::create(&captions_path)
            .with_context(|| format!("creating {}", captions_path.display()))?,
    );
    let mut pixels: Vec<u8> = Vec::with_capacity(args.count as usize * size * size * 3);
    let mut masks: Vec<u8> = Vec::with_capacity(args.count as usize * size * size);
    let mut packed = Vec::new();
    for i in 0..args.count {
        let seed = args.first_seed + i;
        let sample = world.sample(seed);
        pixels.extend_from_slice(sample.image.as_raw());
        masks.extend_from_slice(sample.mask.as_raw());
        if packed.len() < 2 {
            let x = rgb_to_tensor(&sample.image, &Device::Cpu)?;
            packed.push(pack_latents(&codec.space_to_depth(&x)?)?);
        }
        let record = serde_json::json!({
            "seed": seed,
            "caption": sample.caption.joined(),
            "background": sample.caption.background,
            "character": sample.caption.character,
            "action": sample.caption.action,
            "under_specified": sample.caption.under_specified,
            "attributes": sample.attrs,
        });
        writeln!(captions, "{record}")?;
        if (i + 1) % 5000 == 0 {
            eprintln!("{} / {}", i + 1, args.count);
        }
    }
    captions.flush()?;

    let n = args.count as usize;
    let images = Tensor::from_vec(pixels, (n, size, size, 3), &Device::Cpu)?;
    let mut tensors = HashMap::new();
    tensors.insert("images".to_string(), images);
    let masks = Tensor::from_vec(masks, (n, size, size), &Device::Cpu)?;
    tensors.insert("masks".to_string(), masks);
    if !packed.is_empty() {
        tensors.insert("packed_check".to_string(), Tensor::cat(&packed, 0)?);
    }
    let images_path = args.out.join("images.safetensors");
    candle_core::safetensors::save(&tensors, &images_path)
        .with_context(|| format!("writing {}", images_path.display()))?;
    eprintln!(
        "wrote {n} samples to {} and {}",
        images_path.display(),
        captions_path.display()
    );
    Ok(())
}
