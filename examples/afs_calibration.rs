//! Calibrates ASemConsist's AFS threshold on the built-in model (paper, appendix C).
//!
//! The paper labels prompt sets by how much their plain FLUX images differ. The built-in
//! world knows the answer directly: a fully specified character caption fixes every identity
//! attribute (shape, colour, pattern, accessory, eyes), an under-specified one states at most
//! the shape or the colour, so the model must invent the rest, frame by frame. So:
//! 1. draw `--sets` stories per class: one random character, `--frames` frames with random
//!    scenes and actions; the identity prompt is the character caption, fully specified
//!    ("clear") or under-specified ("ambiguous");
//! 2. measure each story's radius with exactly the probe of `prepare` (prompts
//!    `[identity, bg_i, act_i]`, each frame's own seed, probe block and step scaled to the
//!    model, radius normalisation of the settings);
//! 3. fit the threshold where Gaussians fitted to the two classes have equal density
//!    (`calibrate_threshold`) and report Cohen's d and the accuracy at that threshold.
//!
//! `cargo run --example afs_calibration [-- --sets 107 --frames 4 --steps 20 --seed 1]`

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use storyloom::consistency::asemconsist::afs::{RadiusNormalisation, cohens_d, radius_of_tensor};
use storyloom::consistency::asemconsist::schedule::{FLUX1_DEPTH, ModelDepth, scale_blocks};
use storyloom::consistency::asemconsist::{
    AsemPreset, AsemSettings, ProbeSeeds, calibrate_threshold, measure_ambiguity,
};
use storyloom::model::builtin::caption::caption_for;
use storyloom::model::builtin::model::{BuiltinModel, DEFAULT_STEPS, IMAGE_SIZE};
use storyloom::model::builtin::world::{Action, Attributes, Character, Scene};
use storyloom::model::dit::{BlockId, Control, HookCtx, Stream};
use storyloom::model::pipeline::{BatchRequest, Pipeline, PromptEncoder, SampleSpec};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One story: identity prompt, (background, action) per frame, seeds.
struct Story {
    identity: String,
    frames: Vec<(String, String)>,
    seeds: Vec<u64>,
}

fn story(under_specified: bool, frames: usize, rng: &mut impl Rng) -> Story {
    let character = Character::random(rng);
    let mut identity = String::new();
    let mut parts = Vec::with_capacity(frames);
    for i in 0..frames {
        let attrs = Attributes {
            scene: *Scene::ALL.choose(rng).expect("scenes"),
            character,
            action: Action::random(rng),
        };
        let caption = caption_for(&attrs, under_specified, rng);
        if i == 0 {
            identity = caption.character.clone();
        }
        parts.push((caption.background, caption.action));
    }
    Story {
        identity,
        frames: parts,
        seeds: (0..frames).map(|_| rng.random()).collect(),
    }
}

fn summary(name: &str, radii: &[f32]) {
    let mut sorted = radii.to_vec();
    sorted.sort_by(f32::total_cmp);
    let n = sorted.len() as f64;
    let mean = sorted.iter().map(|&r| r as f64).sum::<f64>() / n;
    let std = (sorted
        .iter()
        .map(|&r| (r as f64 - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0))
        .sqrt();
    let q = |p: f64| sorted[((n - 1.0) * p).round() as usize];
    println!(
        "{name:>9}: n = {}, mean {mean:.4} +- {std:.4}, min {:.4}, q25 {:.4}, median {:.4}, q75 {:.4}, max {:.4}",
        sorted.len(),
        sorted[0],
        q(0.25),
        q(0.5),
        q(0.75),
        sorted[sorted.len() - 1]
    );
}

fn histogram(ambiguous: &[f32], clear: &[f32]) {
    let all: Vec<f32> = ambiguous.iter().chain(clear).copied().collect();
    let lo = all.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = all.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let bins = 16;
    let width = (hi - lo) / bins as f32;
    let count = |xs: &[f32], b: usize| {
        xs.iter()
            .filter(|&&x| {
                let i = (((x - lo) / width) as usize).min(bins - 1);
                i == b
            })
            .count()
    };
    println!("radius bin         ambiguous (A) / clear (C)");
    for b in 0..bins {
        let start = lo + b as f32 * width;
        println!(
            "{start:.4}-{:.4}  {:<24} {}",
            start + width,
            "A".repeat(count(ambiguous, b)),
            "C".repeat(count(clear, b))
        );
    }
}

/// Records the image tokens' residual stream after every block at every step, per batch row:
/// the features the probe reads, at all candidate blocks and steps at once (appendix C scans
/// every block and timestep for the most distinctive one).
#[derive(Default)]
struct Recorder {
    features: HashMap<(usize, BlockId), Tensor>,
}

impl Control for Recorder {
    fn block_output(
        &mut self,
        ctx: &HookCtx,
        stream: Stream,
        x: Tensor,
    ) -> candle_core::Result<Tensor> {
        let img = match stream {
            Stream::Text => return Ok(x),
            Stream::Image => x.clone(),
            Stream::Joint => x.narrow(1, ctx.txt_len, ctx.img_len())?,
        };
        self.features.insert((ctx.step, ctx.block), img);
        Ok(x)
    }
}

/// Radius at every (step, block) of one story, with the probe's prompts and seeds.
#[allow(clippy::too_many_arguments)]
fn radii_per_cell(
    pipeline: &Pipeline,
    encoder: &mut dyn PromptEncoder,
    story: &Story,
    seeds: ProbeSeeds,
    identity_seed: u64,
    steps: usize,
    max_step: usize,
    normalisation: RadiusNormalisation,
) -> anyhow::Result<HashMap<(usize, BlockId), f32>> {
    let samples = story
        .frames
        .iter()
        .zip(&story.seeds)
        .map(|((bg, act), &seed)| {
            Ok(SampleSpec {
                conditioning: encoder.encode(&[&story.identity, bg, act])?,
                seed: match seeds {
                    ProbeSeeds::FrameSeeds => seed,
                    ProbeSeeds::IdentitySeed => identity_seed,
                },
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let n = samples.len();
    let req = BatchRequest {
        samples,
        width: IMAGE_SIZE,
        height: IMAGE_SIZE,
        steps,
        guidance: 0.0,
        batch_index: (0..n).collect(),
        stop_after: Some(max_step),
    };
    let mut rec = Recorder::default();
    pipeline.sample_batch(&req, &mut rec, &AtomicBool::new(false), |_| Ok(()))?;
    rec.features
        .iter()
        .map(|(key, t)| Ok((*key, radius_of_tensor(t, normalisation)?)))
        .collect()
}

fn block_name(b: BlockId) -> String {
    match b {
        BlockId::Double(i) => format!("double {i}"),
        BlockId::Single(i) => format!("single {i}"),
    }
}

/// Scans every block and step up to `max_step` for the cell where the two classes separate
/// best (largest Cohen's d), then reports the threshold there.
#[allow(clippy::too_many_arguments)]
fn scan(
    pipeline: &Pipeline,
    encoder: &mut dyn PromptEncoder,
    stories: &[(bool, Story)],
    seeds: ProbeSeeds,
    steps: usize,
    max_step: usize,
    depth: ModelDepth,
    settings: &AsemSettings,
) -> anyhow::Result<()> {
    println!("\n== probe seeds {seeds:?}: Cohen's d (ambiguous vs clear) per block and step ==");
    let mut per_cell: HashMap<(usize, BlockId), [Vec<f32>; 2]> = HashMap::new();
    for (under_specified, story) in stories {
        let radii = radii_per_cell(
            pipeline,
            encoder,
            story,
            seeds,
            0,
            steps,
            max_step,
            settings.afs.normalisation,
        )?;
        for (key, r) in radii {
            per_cell.entry(key).or_default()[usize::from(!under_specified)].push(r);
        }
    }
    let blocks: Vec<BlockId> = (0..depth.total()).filter_map(|g| depth.block(g)).collect();
    print!("{:>9}", "step");
    for b in &blocks {
        print!("{:>10}", block_name(*b));
    }
    println!();
    let mut best: Option<((usize, BlockId), f64)> = None;
    for step in 0..=max_step {
        print!("{step:>9}");
        for &b in &blocks {
            let [amb, clear] = &per_cell[&(step, b)];
            let d = cohens_d(amb, clear);
            print!("{d:>10.2}");
            if best.is_none_or(|(_, bd)| d > bd) {
                best = Some(((step, b), d));
            }
        }
        println!();
    }
    let default_cell = (
        *settings
            .afs
            .probe_step
            .sampler_steps(steps, settings.step_indexing)
            .start(),
        scale_blocks(&[settings.afs.probe_block], FLUX1_DEPTH, depth)[0],
    );
    for (label, cell) in [
        ("default probe", default_cell),
        ("best", best.expect("cells").0),
    ] {
        let [ambiguous, clear] = &per_cell[&cell];
        let paper_block = (0..FLUX1_DEPTH.total())
            .find(|&g| scale_blocks(&[g], FLUX1_DEPTH, depth) == [cell.1])
            .expect("every block has a paper block");
        println!(
            "-- {label}: step {} of {steps}, {} (paper-numbered block {paper_block}) --",
            cell.0,
            block_name(cell.1)
        );
        summary("ambiguous", ambiguous);
        summary("clear", clear);
        histogram(ambiguous, clear);
        let threshold = calibrate_threshold(ambiguous, clear)?;
        let correct = ambiguous.iter().filter(|&&r| r > threshold).count()
            + clear.iter().filter(|&&r| r <= threshold).count();
        println!(
            "threshold {threshold:.4}, Cohen's d {:.2}, accuracy at the threshold {:.1} % ({correct} of {})",
            cohens_d(ambiguous, clear),
            100.0 * correct as f64 / (ambiguous.len() + clear.len()) as f64,
            ambiguous.len() + clear.len()
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let sets = arg("--sets", 107) as usize;
    let frames = arg("--frames", 4) as usize;
    let steps = arg("--steps", DEFAULT_STEPS as u64) as usize;
    let seed = arg("--seed", 1);

    let started = Instant::now();
    let (pipeline, mut encoder) = BuiltinModel::load(&Device::Cpu)?.into_parts();
    let max_step = arg("--max-step", 8) as usize;
    let settings = AsemPreset::Full.settings();
    let afs = &settings.afs;
    let cfg = pipeline.transformer.config();
    let depth = ModelDepth {
        num_double: cfg.depth,
        num_single: cfg.depth_single_blocks,
    };
    println!(
        "built-in model: {} double + {} single blocks; probe at paper block {} -> {:?}, step {:?} of {steps}; normalisation {:?}; probe seeds {:?}",
        depth.num_double,
        depth.num_single,
        afs.probe_block,
        scale_blocks(&[afs.probe_block], FLUX1_DEPTH, depth),
        afs.probe_step.sampler_steps(steps, settings.step_indexing),
        afs.normalisation,
        afs.probe_seeds,
    );
    println!("blocks and steps scanned: all blocks, steps 0..={max_step}");
    println!("{sets} stories per class, {frames} frames each, world seed {seed}");

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Alternate the classes so both see the same stream of scenes and actions.
    let stories: Vec<(bool, Story)> = (0..2 * sets)
        .map(|i| (i % 2 == 0, story(i % 2 == 0, frames, &mut rng)))
        .collect();
    for (name, under) in [("ambiguous", true), ("clear", false)] {
        for (_, s) in stories.iter().filter(|(u, _)| *u == under).take(2) {
            println!("  e.g. {name:<9} \"{}\" | {:?}", s.identity, s.frames[0]);
        }
    }
    // The scan reads the same features as the probe of `prepare`: check on the first story.
    let first = &stories[0].1;
    let probe = measure_ambiguity(
        &pipeline,
        &mut encoder,
        &first.identity,
        &first.frames,
        0,
        &first.seeds,
        IMAGE_SIZE,
        IMAGE_SIZE,
        steps,
        0.0,
        &settings,
        &AtomicBool::new(false),
        |_| Ok(()),
    )?;
    let cells = radii_per_cell(
        &pipeline,
        &mut encoder,
        first,
        settings.afs.probe_seeds,
        0,
        steps,
        max_step,
        settings.afs.normalisation,
    )?;
    let default_cell = (
        *settings
            .afs
            .probe_step
            .sampler_steps(steps, settings.step_indexing)
            .start(),
        scale_blocks(&[settings.afs.probe_block], FLUX1_DEPTH, depth)[0],
    );
    println!(
        "probe of prepare on the first story: {probe:?}; the scan at that cell: {:?}",
        cells.get(&default_cell)
    );
    for seeds in [ProbeSeeds::FrameSeeds, ProbeSeeds::IdentitySeed] {
        scan(
            &pipeline,
            &mut encoder,
            &stories,
            seeds,
            steps,
            max_step,
            depth,
            &settings,
        )?;
    }
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
