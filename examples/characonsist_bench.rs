//! CharaConsist cost on the "small" FLUX config (hidden 768, 6 heads, 4 double + 8 single
//! blocks) with deterministic random weights: a story of 1 identity + 6 frames at 256x256
//! (256 image tokens, 64 text tokens), vanilla vs CharaConsist with either bank strategy.
//! Prints the time per frame, the ratio to a vanilla frame and the peak extra memory of each
//! strategy (each measured in a child process from VmHWM), then the estimated bank sizes for
//! FLUX.1-dev at 1024x1024 and 50 steps.
//!
//! `cargo run --example characonsist_bench [-- --steps 8]`

use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use storyloom::consistency::characonsist::budget::{
    StoryShape, estimate_co_batched_extra, estimate_stored_bank,
};
use storyloom::consistency::characonsist::story::{
    BankStrategy, StoryParams, StorySample, render_story,
};
use storyloom::consistency::characonsist::{BackgroundMode, CharaConsistSettings, PromptSpans};
use storyloom::engine::tiny::HashedWordEncoder;
use storyloom::model::codec::{Codec, PixelCodec};
use storyloom::model::dit::init::random_weights;
use storyloom::model::dit::{FluxConfig, FluxTransformer, NoControl};
use storyloom::model::pipeline::{BatchRequest, Pipeline, PromptEncoder, SampleSpec};
use storyloom::model::sampler::ScheduleShift;

const SIZE: u32 = 256;
/// Pixels per latent cell side; 2x2 cells make a token, so 256 px -> 16 x 16 tokens.
const FACTOR: usize = 8;
const TEXT_LEN: usize = 64;
const FRAMES: usize = 6;

fn config() -> FluxConfig {
    FluxConfig {
        // Pixel latents: 3·8² channels, packed 2x2.
        in_channels: 3 * FACTOR * FACTOR * 4,
        // The word encoder's pooled vector is the mean of its token features.
        vec_in_dim: FluxConfig::small().context_in_dim,
        ..FluxConfig::small()
    }
}

fn pipeline() -> anyhow::Result<Pipeline> {
    let cfg = config();
    let w = random_weights(&cfg, 0, DType::F32, &Device::Cpu)?;
    let transformer =
        FluxTransformer::new(&cfg, VarBuilder::from_tensors(w, DType::F32, &Device::Cpu))?;
    Ok(Pipeline {
        transformer,
        codec: Codec::Pixels(PixelCodec { factor: FACTOR }),
        shift: ScheduleShift::Resolution,
        prediction: storyloom::model::sampler::Prediction::Velocity,
        preview: None,
    })
}

fn story() -> anyhow::Result<(StorySample, Vec<StorySample>)> {
    let mut enc = HashedWordEncoder {
        dim: config().context_in_dim,
        max_len: TEXT_LEN,
        device: Device::Cpu,
    };
    let character = "a small girl with a red scarf and a yellow hat";
    let mut sample = |place: &str, action: &str, seed: u64| -> anyhow::Result<StorySample> {
        let c = enc.encode(&[place, character, action])?;
        let spans = PromptSpans::new(
            c.segment_spans[0].clone(),
            c.segment_spans[1].start..c.segment_spans[2].end,
        );
        Ok(StorySample::new(
            SampleSpec {
                conditioning: c,
                seed,
            },
            spans,
        ))
    };
    let identity = sample("in a sunny park", "standing and smiling", 7)?;
    let frames = [
        ("in a sunny park", "running after a ball"),
        ("in a busy city street", "waving to a friend"),
        ("on a snowy hill", "sliding on a sled"),
        ("in a small kitchen", "baking cookies"),
        ("on a beach at sunset", "building a sandcastle"),
        ("in a quiet library", "reading a book"),
    ]
    .iter()
    .map(|(place, action)| sample(place, action, 7))
    .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((identity, frames))
}

fn proc_status_mb(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU seconds (user + system, all threads) of this process so far, from /proc/self/stat
/// (clock ticks of 1/100 s): less sensitive than wall time to other work on the machine.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// Renders the story one way in this process; prints `seconds cpu_seconds base_mb peak_mb`
/// for the parent.
fn run_one(which: &str, steps: usize) -> anyhow::Result<()> {
    let p = pipeline()?;
    let (identity, frames) = story()?;
    let params = StoryParams {
        width: SIZE,
        height: SIZE,
        steps,
        guidance: 3.5,
    };
    let cancel = AtomicBool::new(false);
    // Measure the render, not building the random weights.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let base = proc_status_mb("VmRSS:");
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    match which {
        "vanilla" => {
            for f in &frames {
                let req = BatchRequest {
                    samples: vec![f.spec.clone()],
                    width: SIZE,
                    height: SIZE,
                    steps,
                    guidance: 3.5,
                    batch_index: vec![0],
                    stop_after: None,
                };
                p.sample_batch(&req, &mut NoControl, &cancel, |_| Ok(()))?;
            }
        }
        "co-batched" | "stored" => {
            let strategy = if which == "stored" {
                BankStrategy::Stored { dtype: DType::F16 }
            } else {
                BankStrategy::CoBatched
            };
            render_story(
                &p,
                &identity,
                &frames,
                &params,
                &CharaConsistSettings::default(),
                strategy,
                &cancel,
                &mut NoControl,
                |_, _| Ok(()),
            )?;
        }
        other => anyhow::bail!("unknown run {other}"),
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let peak = proc_status_mb("VmHWM:");
    println!("{seconds} {cpu} {base} {peak}");
    Ok(())
}

fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let steps = args
        .iter()
        .position(|a| a == "--steps")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(8usize);
    if let Some(i) = args.iter().position(|a| a == "--only") {
        return run_one(&args[i + 1], steps);
    }
    let cfg = config();
    let scaled = CharaConsistSettings::default().scaled_to(steps, cfg.depth_single_blocks);
    println!(
        "small config ({} single blocks), {SIZE}x{SIZE} = {} image tokens, {TEXT_LEN} text tokens, \
         1 identity + {FRAMES} frames, {steps} steps (extraction step {}, tracking {}..={}, \
         merge {}..={}), {} threads",
        cfg.depth_single_blocks,
        (SIZE as usize / (2 * FACTOR)).pow(2),
        scaled.extraction_step,
        scaled.tracking_steps.first,
        scaled.tracking_steps.last,
        scaled.merge_steps.first,
        scaled.merge_steps.last,
        candle_core::utils::get_num_threads()
    );
    // Each run in a fresh child process, so its peak memory is its own.
    let exe = std::env::current_exe()?;
    let mut results = Vec::new();
    for which in ["vanilla", "co-batched", "stored"] {
        let out = Command::new(&exe)
            .args(["--only", which, "--steps", &steps.to_string()])
            .output()?;
        if !out.status.success() {
            anyhow::bail!("{which}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Vec<f64> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        let [seconds, cpu, base, peak] = v[..] else {
            anyhow::bail!("{which}: unexpected output {text}");
        };
        results.push((which, seconds, cpu, base, peak));
    }
    let (_, vanilla_s, vanilla_cpu, _, vanilla_peak) = results[0];
    let frames = FRAMES as f64;
    for &(which, seconds, cpu, base, peak) in &results {
        println!(
            "{which:>10}: {:6.2} s per frame (ratio {:.2}), {:6.2} CPU s per frame (ratio {:.2}); \
             peak {peak:.0} MB (resident before {base:.0} MB), {:+.0} MB over vanilla",
            seconds / frames,
            seconds / vanilla_s,
            cpu / frames,
            cpu / vanilla_cpu,
            peak - vanilla_peak
        );
    }
    // What the passes cost in forward passes of one sample, per frame (E = extraction step,
    // S = steps, F = frames): vanilla S; co-batched (E + 1 + S)(F + 1)/F for the pre-run and
    // the full run with the identity's row; stored (S + F(E + 1 + S))/F.
    for s in [steps, 50] {
        let e = CharaConsistSettings::default()
            .scaled_to(s, cfg.depth_single_blocks)
            .extraction_step as f64;
        let (s, f) = (s as f64, frames);
        println!(
            "  sample forwards per frame at {s} steps: co-batched {:.2}x, stored {:.2}x a vanilla frame",
            (e + 1.0 + s) * (f + 1.0) / f / s,
            (s + f * (e + 1.0 + s)) / f / s
        );
    }

    // Estimated sizes for FLUX.1-dev at 1024x1024, 50 steps, 512 text tokens.
    let dev = FluxConfig::dev();
    let shape = StoryShape {
        config: &dev,
        text_tokens: 512,
        image_tokens: 4096,
        frames: FRAMES,
        steps: 50,
    };
    let released = 76.5e9 + 14.8e9;
    println!(
        "FLUX.1-dev 1024x1024, 50 steps (released code keeps ~76.5 GB keys/values + ~14.8 GB \
         attention outputs = {:.1} GB):",
        released / 1e9
    );
    println!(
        "  co-batched: nothing kept between steps; {:.2} GB extra activations per block in bf16 \
         (the identity's row plus the borrowed keys of {FRAMES} frames)",
        gb(estimate_co_batched_extra(&shape, DType::BF16))
    );
    for (name, mode, scenes) in [
        ("keep", BackgroundMode::Keep, 0),
        ("switch", BackgroundMode::Switch, 0),
        ("mixed, 2 scenes", BackgroundMode::MixedScenes, 2),
    ] {
        let settings = CharaConsistSettings {
            background: mode,
            ..Default::default()
        };
        let b = estimate_stored_bank(&shape, &settings, DType::F16);
        println!(
            "  stored f16, {name:>15}: keys/values {:.1} GB + attention {:.1} GB{} = {:.1} GB \
             ({:.2} of the released code's)",
            gb(b.identity_kv),
            gb(b.identity_attention),
            if scenes > 0 {
                format!(
                    " + {scenes} scene sources x {:.1} GB",
                    gb(b.per_scene_source_kv)
                )
            } else {
                String::new()
            },
            gb(b.total(scenes)),
            b.total(scenes) as f64 / released
        );
    }
    Ok(())
}
