//! The built-in model's figures for its model card: the world checker's accuracy on images
//! generated from held-out world captions, and the time to generate one frame on this machine.
//!
//! `cargo run --release --example builtin_figures -- --prompts 200`
//!
//! Prompts are world samples from seed 1 000 000 on (training used seeds below 1 000 000); each
//! image is sampled with the sample's own seed at `--steps` steps, vanilla (no consistency method).

use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use clap::Parser;
use image::RgbImage;
use storyloom::model::builtin::checker::Checker;
use storyloom::model::builtin::model::{BuiltinModel, DEFAULT_STEPS, IMAGE_SIZE};
use storyloom::model::builtin::{World, WorldConfig};

#[derive(Parser)]
struct Args {
    /// Number of prompts.
    #[arg(long, default_value_t = 200)]
    prompts: u64,
    /// Seed of the first world sample.
    #[arg(long, default_value_t = 1_000_000)]
    first_seed: u64,
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    steps: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Single-frame generations timed.
    #[arg(long, default_value_t = 10)]
    timed: u64,
    /// Optional contact sheet: generated image above the world's render, per prompt.
    #[arg(long)]
    sheet: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct Tally {
    total: usize,
    background: usize,
    colour: usize,
    position: usize,
    pattern: usize,
    accessory_colour: usize,
}

impl Tally {
    fn percent(&self, hits: usize) -> f64 {
        100.0 * hits as f64 / self.total.max(1) as f64
    }

    fn print(&self, name: &str) {
        println!(
            "{name:<18} n={:<4} background {:5.1}%  colour {:5.1}%  position {:5.1}%  pattern {:5.1}%  accessory colour {:5.1}%",
            self.total,
            self.percent(self.background),
            self.percent(self.colour),
            self.percent(self.position),
            self.percent(self.pattern),
            self.percent(self.accessory_colour),
        );
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let device = Device::Cpu;
    let mut model = BuiltinModel::load(&device).context("loading the built-in model")?;
    let world = World::new(WorldConfig::default());
    let checker = Checker::calibrated(&world, 8);
    let samples: Vec<_> = (0..args.prompts)
        .map(|i| world.sample(args.first_seed + i))
        .collect();

    let mut generated: Vec<RgbImage> = Vec::with_capacity(samples.len());
    let started = Instant::now();
    for chunk in samples.chunks(args.batch.max(1)) {
        let batch = chunk
            .iter()
            .map(|s| {
                let c = &s.caption;
                let parts = [
                    c.background.as_str(),
                    c.character.as_str(),
                    c.action.as_str(),
                ];
                Ok((model.encoder.conditioning(&parts)?, s.seed))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        generated.extend(model.generate_batch(batch, args.steps)?);
    }
    let batched_seconds = started.elapsed().as_secs_f64();

    let (mut full, mut under) = (Tally::default(), Tally::default());
    for (sample, image) in samples.iter().zip(&generated) {
        let report = checker.check(image, &sample.attrs);
        let tally = if sample.caption.under_specified {
            &mut under
        } else {
            &mut full
        };
        tally.total += 1;
        tally.background += report.background as usize;
        tally.colour += report.colour as usize;
        tally.position += report.position as usize;
        tally.pattern += report.pattern as usize;
        tally.accessory_colour += report.accessory_colour as usize;
    }
    println!(
        "checker on {} generated images ({} steps, prompts from seed {}):",
        samples.len(),
        args.steps,
        args.first_seed
    );
    full.print("fully specified");
    under.print("under-specified");
    println!(
        "(under-specified prompts do not state every checked attribute: their colour/pattern/accessory figures compare with attributes the prompt left open)"
    );

    let mut single = Vec::new();
    for i in 0..args.timed {
        let s = &samples[i as usize % samples.len()];
        let parts = [
            s.caption.background.as_str(),
            s.caption.character.as_str(),
            s.caption.action.as_str(),
        ];
        let t = Instant::now();
        model.generate(&parts, s.seed + 17, args.steps)?;
        single.push(t.elapsed().as_secs_f64());
    }
    single.sort_by(f64::total_cmp);
    if !single.is_empty() {
        println!(
            "one {IMAGE_SIZE}x{IMAGE_SIZE} frame at {} steps on the CPU (prompt encoding included, cached after first use): median {:.3} s, min {:.3} s over {} runs; batched: {:.3} s per image",
            args.steps,
            single[single.len() / 2],
            single[0],
            single.len(),
            batched_seconds / samples.len() as f64,
        );
    }

    if let Some(path) = &args.sheet {
        let columns = 20u32;
        let rows = (samples.len() as u32).div_ceil(columns);
        let mut sheet = RgbImage::new(columns * IMAGE_SIZE, rows * 2 * IMAGE_SIZE);
        for (i, (sample, image)) in samples.iter().zip(&generated).enumerate() {
            let (x, y) = (
                (i as u32 % columns) * IMAGE_SIZE,
                (i as u32 / columns) * 2 * IMAGE_SIZE,
            );
            image::imageops::replace(&mut sheet, image, x as i64, y as i64);
            image::imageops::replace(&mut sheet, &sample.image, x as i64, (y + IMAGE_SIZE) as i64);
        }
        sheet
            .save(path)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("contact sheet: {}", path.display());
    }
    Ok(())
}
