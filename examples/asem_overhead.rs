//! Whole per-frame cost of ASemConsist against plain sampling of the combined prompt, for each
//! row of the paper's ablation, on `FluxConfig::small()` (hidden 768, 4 double + 8 single
//! blocks, T5 width 4096) with deterministic random weights and a pixel codec (so the input
//! width is 48 instead of 64; nothing else changes), a 6-frame story on the CPU.
//!
//! Each row runs everything a story needs: for AFS rows the probe pass (6 samples to the probe
//! step) and, with the threshold set to 0 so that it always happens, the identity record (1
//! sample to the last sharing step); then the 6 frames in one batch. The plain baseline is the
//! 6 frames in one batch on the same combined prompt.
//!
//! `cargo run --example asem_overhead [-- --steps 28 --size 64 --text 256]`

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use storyloom::consistency::asemconsist::{AsemPreset, encode_combined, render_frames};
use storyloom::engine::tiny::HashedWordEncoder;
use storyloom::model::codec::{Codec, PixelCodec};
use storyloom::model::dit::init::{random_weights, seeded_normal};
use storyloom::model::dit::{FluxConfig, FluxTransformer, NoControl};
use storyloom::model::pipeline::{BatchRequest, Conditioning, Pipeline, PromptEncoder, SampleSpec};
use storyloom::model::sampler::ScheduleShift;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One hashed vector per word, and padding rows that are not zero (as T5's are): a fixed
/// random vector per position plus the mean of the real rows. The pooled vector (CLIP's in
/// FLUX) is the first `pooled_dim` features of the mean.
struct WordEncoder(HashedWordEncoder, usize);

impl PromptEncoder for WordEncoder {
    fn encode(&mut self, segments: &[&str]) -> anyhow::Result<Conditioning> {
        let mut c = self.0.encode(segments)?;
        let real_len = c.eos + 1;
        let real = c.txt.narrow(1, 0, real_len)?;
        let n_pad = c.txt.dim(1)? - real_len;
        let pad = seeded_normal(404, &[1, n_pad, self.0.dim], &Device::Cpu)?
            .broadcast_add(&real.mean_keepdim(1)?)?;
        c.txt = Tensor::cat(&[real, pad], 1)?;
        c.pooled = c.pooled.narrow(1, 0, self.1)?;
        Ok(c)
    }
}

const IDENTITY: &str = "a small round red creature with a blue scarf and big dot eyes";
const FRAMES: [(&str, &str); 6] = [
    (
        "in a snowy field at night",
        "waving its arm on the left, seen from afar",
    ),
    (
        "on a sandy beach under a sunny sky",
        "jumping in the middle, close up",
    ),
    ("in a dense dark forest", "sitting still on the right"),
    (
        "a quiet town street in the background",
        "standing in the centre, wide shot",
    ),
    (
        "in a cozy bedroom",
        "sleepy and sitting on the left, close up",
    ),
    ("on a grassy meadow", "hopping to the right, seen from afar"),
];

fn main() -> anyhow::Result<()> {
    let steps = arg("--steps", 28);
    let size = arg("--size", 64) as u32;
    let text_len = arg("--text", 256);
    let dev = Device::Cpu;
    let codec = PixelCodec { factor: 2 };
    let cfg = FluxConfig {
        in_channels: 4 * codec.channels(),
        ..FluxConfig::small()
    };
    let weights = random_weights(&cfg, 7, DType::F32, &dev)?;
    let pipeline = Pipeline {
        transformer: FluxTransformer::new(
            &cfg,
            VarBuilder::from_tensors(weights, DType::F32, &dev),
        )?,
        codec: Codec::Pixels(codec),
        shift: ScheduleShift::Resolution,
        prediction: storyloom::model::sampler::Prediction::Velocity,
        preview: None,
    };
    let mut encoder = WordEncoder(
        HashedWordEncoder {
            dim: cfg.context_in_dim,
            max_len: text_len,
            device: dev.clone(),
        },
        cfg.vec_in_dim,
    );
    let frames: Vec<(String, String)> = FRAMES
        .iter()
        .map(|(b, a)| (b.to_string(), a.to_string()))
        .collect();
    let seeds: Vec<u64> = (1..=frames.len() as u64).collect();
    let prompt = encode_combined(&mut encoder, IDENTITY, &frames)?;
    let (w, h) = pipeline.output_size(size, size);
    let image_tokens = (w as usize / 4) * (h as usize / 4);
    println!(
        "FluxConfig::small() (hidden {}, {} double + {} single blocks), {w}x{h} px = {image_tokens} image tokens, \
         {text_len} text tokens ({} real), {steps} steps, {} frames, {} threads",
        cfg.hidden_size,
        cfg.depth,
        cfg.depth_single_blocks,
        prompt.conditioning.eos + 1,
        frames.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let cancel = AtomicBool::new(false);

    let req = BatchRequest {
        samples: seeds
            .iter()
            .map(|&seed| SampleSpec {
                conditioning: prompt.conditioning.clone(),
                seed,
            })
            .collect(),
        width: w,
        height: h,
        steps,
        guidance: 3.5,
        batch_index: (0..frames.len()).collect(),
        stop_after: None,
    };
    let started = Instant::now();
    pipeline.sample_batch(&req, &mut NoControl, &cancel, |_| Ok(()))?;
    let plain = started.elapsed().as_secs_f64() / frames.len() as f64;
    println!(
        "{:<24} {:>10.0} ms per frame",
        "plain (combined prompt)",
        plain * 1e3
    );

    for preset in AsemPreset::ALL {
        let mut settings = preset.settings();
        settings.afs.threshold = 0.0;
        let mut sample_steps = 0usize;
        let started = Instant::now();
        let out = render_frames(
            &pipeline,
            &mut encoder,
            &prompt,
            IDENTITY,
            &frames,
            99,
            &seeds,
            w,
            h,
            steps,
            3.5,
            &settings,
            &cancel,
            |r| {
                sample_steps += r.latents.dim(0)?;
                Ok(())
            },
        )?;
        let per_frame = started.elapsed().as_secs_f64() / frames.len() as f64;
        let afs = out
            .decision
            .map(|d| {
                format!(
                    ", radius {:.4}, sharing {}",
                    d.radius.unwrap_or(f32::NAN),
                    d.use_sharing
                )
            })
            .unwrap_or_default();
        println!(
            "{:<24} {:>10.0} ms per frame, overhead {:>+7.0} ms ({:>+6.1} %), {} sample-steps{afs}",
            preset.label(),
            per_frame * 1e3,
            (per_frame - plain) * 1e3,
            100.0 * (per_frame - plain) / plain,
            sample_steps,
        );
    }
    Ok(())
}
