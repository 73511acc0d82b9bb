//! Identity agreement across the frames of a story on the built-in model, with each
//! combination of consistency methods, and the time per frame of each; with CharaConsist also
//! whether its masks and point matches sit on the character, and whether any configuration
//! leaves token seams. For the model card.
//!
//! `cargo run --release --example story_agreement -- --stories 50`
//!
//! Every story has an under-specified character taken from a held-out world caption that names
//! no colour (e.g. "a little critter": the model must invent colour, pattern and accessory) and six frames with
//! short environment and action phrases of the world's captions (so the combined prompt of
//! ASemConsist fits the model's 64 text tokens); each frame has its own seed.
//! The world checker measures the character of every frame; a pair of frames agrees when
//! colour, pattern and accessory colour all match (`checker::pairwise_agreement`), and on
//! colour alone. Every configuration renders exactly the same stories through the engine's
//! own rendering code.
//!
//! Masks and matches are judged against the checker's subject region on the token grid (a
//! token is the character's where >= 30 % of its pixels are subject pixels): the mean IoU of
//! the identity's and every frame's mask with its image's region, and the share of point
//! matches whose frame and identity tokens both lie on the character. Seams: the mean
//! absolute difference of neighbouring pixels across token borders over that inside tokens.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use clap::Parser;
use storyloom::consistency::MethodSettings;
use storyloom::consistency::characonsist::BackgroundMode;
use storyloom::consistency::metrics::seam_contrast;
use storyloom::engine::measure::tally_story;
use storyloom::engine::render::{LoadedModel, render_frame};
use storyloom::engine::story::render_with_methods;
use storyloom::engine::{Event, FrameJob, RenderSettings, StoryContext};
use storyloom::model::builtin::caption::read_character;
use storyloom::model::builtin::checker::{
    Checker, GroundingTally, Measurement, colour_agreement, pairwise_agreement,
};
use storyloom::model::builtin::model::{BuiltinModel, DEFAULT_STEPS, IMAGE_SIZE, default_dir};
use storyloom::model::builtin::{World, WorldConfig};

#[derive(Parser)]
struct Args {
    /// Number of stories (six frames each).
    #[arg(long, default_value_t = 50)]
    stories: u64,
    /// World seed the stories' captions start from (training used seeds below 1 000 000).
    #[arg(long, default_value_t = 2_000_000)]
    first_seed: u64,
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    steps: usize,
    /// Model folder (default: the shipped built-in model).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Write one contact sheet per configuration into this folder.
    #[arg(long)]
    sheets: Option<PathBuf>,
}

const FRAMES: usize = 6;

/// Short environment and action phrases of the world's captions: six frames of them and a
/// character fit the built-in model's 64 text tokens as one combined prompt (ASemConsist).
const BACKGROUNDS: [&str; 6] = [
    "on a sunny beach",
    "in a dark forest",
    "in a cozy bedroom",
    "in a green meadow",
    "on a snow field",
    "in a sandy desert",
];
const ACTIONS: [&str; 4] = ["standing", "jumping", "waving", "sitting"];

struct Config {
    name: &'static str,
    methods: MethodSettings,
}

fn configs() -> Vec<Config> {
    let mut chara = MethodSettings {
        characonsist_enabled: true,
        ..MethodSettings::default()
    };
    // Frames keep their own environments: the stories change place from frame to frame.
    chara.characonsist.background = BackgroundMode::Switch;
    let asem = MethodSettings {
        asemconsist_enabled: true,
        ..MethodSettings::default()
    };
    let both = MethodSettings {
        asemconsist_enabled: true,
        ..chara.clone()
    };
    vec![
        Config {
            name: "vanilla",
            methods: MethodSettings::default(),
        },
        Config {
            name: "CharaConsist",
            methods: chara,
        },
        Config {
            name: "ASemConsist",
            methods: asem,
        },
        Config {
            name: "both",
            methods: both,
        },
    ]
}

/// A story: an under-specified character and six frames from other captions.
fn story(world: &World, seed: &mut u64, index: u64) -> StoryContext {
    let identity = loop {
        let s = world.sample(*seed);
        *seed += 1;
        // Under-specified and silent about the colour: the colour is the model's to invent.
        if s.caption.under_specified && read_character(&s.caption.character).colour.is_none() {
            break s.caption.character;
        }
    };
    let frames = (0..FRAMES as u64)
        .map(|i| {
            let k = (index * 7 + i * 3) as usize;
            FrameJob {
                frame_id: i + 1,
                background: BACKGROUNDS[k % BACKGROUNDS.len()].into(),
                action: ACTIONS[(k / 2 + i as usize) % ACTIONS.len()].into(),
                seed: 1000 * index + i,
                scene: 0,
            }
        })
        .collect();
    StoryContext {
        identity,
        style: String::new(),
        identity_seed: 1000 * index + 999,
        frames,
        cache_dir: None,
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let device = Device::Cpu;
    let dir = args.weights.clone().unwrap_or_else(default_dir);
    let world = World::new(WorldConfig::default());
    let checker = Checker::calibrated(&world, 8);
    let mut seed = args.first_seed;
    let stories: Vec<StoryContext> = (0..args.stories)
        .map(|i| story(&world, &mut seed, i))
        .collect();
    let cancel = AtomicBool::new(false);
    println!(
        "{} stories x {FRAMES} frames, {} steps, {IMAGE_SIZE}x{IMAGE_SIZE}, model {}",
        stories.len(),
        args.steps,
        dir.display()
    );
    for config in configs() {
        let (pipeline, encoder) = BuiltinModel::load_from(&dir, &device)
            .context("loading the built-in model")?
            .into_parts();
        let mut model = LoadedModel::new(
            "Built-in".into(),
            String::new(),
            pipeline,
            Box::new(encoder),
        );
        let settings = RenderSettings {
            width: IMAGE_SIZE,
            height: IMAGE_SIZE,
            steps: args.steps,
            guidance: 1.0,
            previews: false,
            methods: config.methods.clone(),
        };
        let mut full = Vec::new();
        let mut colour = Vec::new();
        let mut sharing = 0usize;
        let mut images = Vec::new();
        let mut grounding = GroundingTally::default();
        let mut seams = Vec::new();
        let started = Instant::now();
        for s in &stories {
            let frames = if config.methods.any_enabled() {
                let mut identity = None;
                let results = render_with_methods(
                    &mut model,
                    s,
                    &s.frames,
                    &settings,
                    false,
                    &cancel,
                    &mut |event| {
                        if let Event::IdentityDone { image, .. } = event {
                            identity = Some(image);
                        }
                    },
                )?
                .context("not cancelled")?;
                sharing += results
                    .iter()
                    .any(|r| r.analysis.afs.is_some_and(|d| d.use_sharing))
                    as usize;
                if let Some(identity) = &identity {
                    tally_story(&mut grounding, &checker, identity, &results);
                }
                results.into_iter().map(|r| r.image).collect::<Vec<_>>()
            } else {
                s.frames
                    .iter()
                    .map(|f| {
                        render_frame(&mut model, s, f, &settings, &cancel, &mut |_| {})?
                            .map(|r| r.image)
                            .context("not cancelled")
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?
            };
            let m: Vec<Measurement> = frames.iter().map(|i| checker.measure(i)).collect();
            full.push(pairwise_agreement(&m));
            colour.push(colour_agreement(&m));
            seams.extend(frames.iter().map(|f| seam_contrast(f, IMAGE_SIZE / 8)));
            images.extend(frames);
        }
        let per_frame = started.elapsed().as_secs_f64() / (stories.len() * FRAMES) as f64;
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32 * 100.0;
        let across: f32 = seams.iter().map(|s| s.across).sum();
        let inside: f32 = seams.iter().map(|s| s.inside).sum();
        println!(
            "{:<13} identity agreement {:5.1}%  colour agreement {:5.1}%  seams {:.2}  {:.3} s per frame{}",
            config.name,
            mean(&full),
            mean(&colour),
            across / inside.max(f32::MIN_POSITIVE),
            per_frame,
            if config.methods.asemconsist_enabled {
                format!("  (AFS sharing in {sharing} of {} stories)", stories.len())
            } else {
                String::new()
            }
        );
        if !grounding.ious.is_empty() {
            println!(
                "{:<13} masks: IoU with the character {:.2} (mean of {} identity and frame masks)  matches on the character at both ends: {:.1}% of {}  frames in the identity's colour {:.1}%",
                "",
                grounding.mean_iou(),
                grounding.ious.len(),
                100.0 * grounding.matches_on_character_share(),
                grounding.matches,
                100.0 * grounding.identity_colour_share(),
            );
        }
        if let Some(folder) = &args.sheets {
            std::fs::create_dir_all(folder)?;
            let sheet = contact_sheet(&images);
            let path = folder.join(format!("{}.png", config.name.to_lowercase()));
            sheet
                .save(&path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// One row of six frames per story.
fn contact_sheet(images: &[image::RgbImage]) -> image::RgbImage {
    let rows = images.len().div_ceil(FRAMES) as u32;
    let mut sheet = image::RgbImage::new(FRAMES as u32 * IMAGE_SIZE, rows * IMAGE_SIZE);
    for (i, img) in images.iter().enumerate() {
        let (x, y) = (
            (i % FRAMES) as u32 * IMAGE_SIZE,
            (i / FRAMES) as u32 * IMAGE_SIZE,
        );
        image::imageops::replace(&mut sheet, img, x as i64, y as i64);
    }
    sheet
}
