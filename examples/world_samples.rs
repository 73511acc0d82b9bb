//! Writes a contact sheet of the built-in world's samples with their captions.
//!
//! cargo run --example world_samples -- sheet.png --count 12 --first-seed 0

use std::path::PathBuf;

use ab_glyph::{FontRef, PxScale};
use anyhow::Context;
use clap::Parser;
use image::{Rgb, RgbImage, imageops};
use imageproc::drawing::draw_text_mut;
use storyloom::model::builtin::{World, WorldConfig};

#[derive(Parser)]
struct Args {
    /// Output PNG path.
    output: PathBuf,
    /// Number of samples on the sheet.
    #[arg(long, default_value_t = 12)]
    count: u64,
    /// Seed of the first sample; the others follow.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Also show the ground-truth mask next to each image.
    #[arg(long)]
    masks: bool,
}

const TEXT_WIDTH: u32 = 360;
const LINE_HEIGHT: u32 = 13;
const CHARS_PER_LINE: usize = 58;

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("at least one line");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let world = World::new(WorldConfig {
        image_size: args.size,
        ..WorldConfig::default()
    });
    // The UI's bundled font, so the sheet needs no font file.
    let fonts = egui::FontDefinitions::default();
    let font_data = fonts
        .font_data
        .get("Ubuntu-Light")
        .context("egui's default fonts include Ubuntu-Light")?;
    let font =
        FontRef::try_from_slice((*font_data.font).as_ref()).context("reading the bundled font")?;
    let scale = PxScale::from(12.0);

    let thumb = 128.max(args.size);
    let image_columns = if args.masks { 2 } else { 1 };
    let cell_width = thumb * image_columns + TEXT_WIDTH + 8;
    let cell_height = thumb + 8;
    let columns = 2u32;
    let rows = (args.count as u32).div_ceil(columns);
    let mut sheet = RgbImage::from_pixel(
        cell_width * columns,
        cell_height * rows,
        Rgb([255, 255, 255]),
    );

    for i in 0..args.count {
        let sample = world.sample(args.first_seed + i);
        let (col, row) = (i as u32 % columns, i as u32 / columns);
        let (x0, y0) = (col * cell_width + 4, row * cell_height + 4);
        let big = imageops::resize(&sample.image, thumb, thumb, imageops::FilterType::Nearest);
        imageops::replace(&mut sheet, &big, x0 as i64, y0 as i64);
        if args.masks {
            let mask = image::DynamicImage::ImageLuma8(sample.mask.clone()).to_rgb8();
            let big_mask = imageops::resize(&mask, thumb, thumb, imageops::FilterType::Nearest);
            imageops::replace(&mut sheet, &big_mask, (x0 + thumb) as i64, y0 as i64);
        }
        let tx = (x0 + thumb * image_columns + 6) as i32;
        let mut ty = y0 as i32;
        let caption = &sample.caption;
        let marker = if caption.under_specified {
            " (under-specified)"
        } else {
            ""
        };
        let parts = [
            (
                format!("seed {}{}", sample.seed, marker),
                Rgb([120, 120, 120]),
            ),
            (caption.background.clone(), Rgb([30, 90, 30])),
            (caption.character.clone(), Rgb([20, 20, 140])),
            (caption.action.clone(), Rgb([140, 40, 20])),
        ];
        for (text, colour) in parts {
            for line in wrap(&text, CHARS_PER_LINE) {
                draw_text_mut(&mut sheet, colour, tx, ty, scale, &font, &line);
                ty += LINE_HEIGHT as i32;
            }
        }
    }
    sheet
        .save(&args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!("wrote {} samples to {}", args.count, args.output.display());
    Ok(())
}
