//! The checker's figures on the built-in world's own renders: accuracy of background, character
//! colour, position, pattern and accessory colour, on clean renders and on renders degraded
//! (Gaussian blur + noise) to look like a small generator's output; and identity agreement
//! between renders of the same and of different characters.
//!
//! cargo run --example checker_figures -- --samples 200

use clap::Parser;
use storyloom::model::builtin::checker::{
    Checker, degrade, identity_agreement, texture_statistics,
};
use storyloom::model::builtin::{Action, Attributes, Pattern, World, WorldConfig};

#[derive(Parser)]
struct Args {
    /// Number of samples per condition.
    #[arg(long, default_value_t = 200)]
    samples: u64,
    /// Seed of the first sample.
    #[arg(long, default_value_t = 1_000_000)]
    first_seed: u64,
    /// Print texture statistics per true pattern (for calibrating the pattern thresholds).
    #[arg(long)]
    texture: bool,
}

/// (name, blur sigma in pixels, noise standard deviation in 0..255 units)
const CONDITIONS: [(&str, f32, f32); 4] = [
    ("clean", 0.0, 0.0),
    ("blur 0.7 + noise 4", 0.7, 4.0),
    ("blur 1.0 + noise 8", 1.0, 8.0),
    ("blur 1.5 + noise 12", 1.5, 12.0),
];

fn percent(hits: usize, total: usize) -> f64 {
    100.0 * hits as f64 / total.max(1) as f64
}

fn main() {
    let args = Args::parse();
    let world = World::new(WorldConfig::default());
    let checker = Checker::calibrated(&world, 8);
    let samples: Vec<_> = (0..args.samples)
        .map(|i| world.sample(args.first_seed + i))
        .collect();

    println!(
        "checker accuracy on {} samples of {}x{} (percent)",
        args.samples,
        world.config().image_size,
        world.config().image_size
    );
    println!(
        "{:<22} {:>10} {:>7} {:>9} {:>8} {:>10}",
        "condition", "background", "colour", "position", "pattern", "accessory"
    );
    for (name, sigma, noise) in CONDITIONS {
        let mut hits = [0usize; 5];
        for sample in &samples {
            let image = degrade(&sample.image, sigma, noise, sample.seed);
            let report = checker.check(&image, &sample.attrs);
            let flags = [
                report.background,
                report.colour,
                report.position,
                report.pattern,
                report.accessory_colour,
            ];
            for (hit, flag) in hits.iter_mut().zip(flags) {
                *hit += flag as usize;
            }
        }
        let n = samples.len();
        println!(
            "{:<22} {:>10.1} {:>7.1} {:>9.1} {:>8.1} {:>10.1}",
            name,
            percent(hits[0], n),
            percent(hits[1], n),
            percent(hits[2], n),
            percent(hits[3], n),
            percent(hits[4], n)
        );
    }

    // Identity agreement: the same character in another scene and action should agree; a
    // different random character should mostly not.
    let (sigma, noise) = (1.0, 8.0);
    let mut same = 0usize;
    let mut different = 0usize;
    for (i, sample) in samples.iter().enumerate() {
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(sample.seed);
        let other_frame = Attributes {
            scene: Attributes::random(&mut rng).scene,
            character: sample.attrs.character,
            action: Action::random(&mut rng),
        };
        let (frame, _) = world.render(&other_frame, sample.seed ^ 0xF00D);
        let a = checker.measure(&degrade(&sample.image, sigma, noise, sample.seed));
        let b = checker.measure(&degrade(&frame, sigma, noise, sample.seed + 1));
        same += identity_agreement(&a, &b).all() as usize;
        let other = &samples[(i + 1) % samples.len()];
        let c = checker.measure(&degrade(&other.image, sigma, noise, other.seed));
        if other.attrs.character != sample.attrs.character {
            different += identity_agreement(&a, &c).all() as usize;
        }
    }
    println!(
        "identity agreement (blur {sigma} + noise {noise}): same character {:.1}%, different characters {:.1}% (false agreement)",
        percent(same, samples.len()),
        percent(different, samples.len())
    );

    if args.texture {
        for ((sigma, noise), pattern) in [(0.0, 0.0), (1.0, 8.0)]
            .into_iter()
            .flat_map(|condition| Pattern::ALL.map(|p| (condition, p)))
        {
            let mut stats: Vec<_> = samples
                .iter()
                .filter(|s| s.attrs.character.pattern == pattern)
                .filter_map(|s| {
                    let image = degrade(&s.image, sigma, noise, s.seed);
                    texture_statistics(&image, &checker.measure(&image))
                })
                .collect();
            stats.sort_by(|a, b| a.row_step.total_cmp(&b.row_step));
            let text: Vec<String> = stats
                .iter()
                .map(|t| {
                    format!(
                        "{:.0}/{:.0}/{:.0}",
                        t.row_step, t.column_step, t.bright_spread
                    )
                })
                .collect();
            println!(
                "{pattern:?}, blur {sigma} noise {noise} (row step/column step/bright spread): {}",
                text.join(" ")
            );
        }
    }
}
