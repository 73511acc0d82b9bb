//! The frame sheet: a PNG grid of frames with numbers, labels and captions under a title
//! header.
//!
//! Layout is computed first ([`layout_sheet`], pure) and then drawn ([`render_sheet`]). Captions
//! are word-wrapped to the cell width, and every row is as tall as its tallest image plus
//! caption, so a caption can never run into the next frame.

use std::path::Path;

use ab_glyph::{FontRef, PxScale};
use image::{Rgb, RgbImage, imageops};
use imageproc::drawing::{draw_filled_circle_mut, draw_hollow_rect_mut, draw_text_mut};
use imageproc::rect::Rect;

use super::text::{em_scale, font, line_height, raster_width, wrap_text};
use super::{ExportDocument, ExportError, ExportFrame, PIXELS_PER_TOKEN};
use crate::project::store::{RealDisk, atomic_write};

/// Horizontal padding of captions inside their cell, in pixels.
pub const CAPTION_INSET: u32 = 2;

/// How the sheet looks.
#[derive(Debug, Clone, PartialEq)]
pub struct SheetOptions {
    pub columns: usize,
    /// Width of each frame image on the sheet; heights follow the image's aspect.
    pub cell_width: u32,
    /// Space around the whole sheet.
    pub margin: u32,
    /// Space between cells (and between the header and the first row).
    pub gutter: u32,
    /// Caption font size (em, pixels); the title is 1.6 times larger.
    pub font_size: f32,
    /// Frame number and shot label above each caption.
    pub show_numbers: bool,
    pub show_header: bool,
    /// Bake the foreground mask tint and match points into the images when present.
    pub overlay: bool,
    pub background: Rgb<u8>,
    pub ink: Rgb<u8>,
}

impl Default for SheetOptions {
    fn default() -> Self {
        Self {
            columns: 3,
            cell_width: 320,
            margin: 32,
            gutter: 24,
            font_size: 14.0,
            show_numbers: true,
            show_header: true,
            overlay: false,
            background: Rgb([255, 255, 255]),
            ink: Rgb([20, 20, 24]),
        }
    }
}

/// Style of one caption line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// Frame number and shot label.
    Label,
    Action,
    Dialogue,
}

/// One laid-out line of text: its top-left corner and its scale.
#[derive(Debug, Clone, PartialEq)]
pub struct TextLine {
    pub x: u32,
    pub y: u32,
    pub text: String,
    pub kind: LineKind,
}

/// Where one frame goes.
#[derive(Debug, Clone, PartialEq)]
pub struct CellLayout {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub image_height: u32,
    /// Height of the whole row this cell is in (image + caption of the tallest cell).
    pub row_height: u32,
    pub lines: Vec<TextLine>,
}

/// The whole sheet.
#[derive(Debug, Clone, PartialEq)]
pub struct SheetLayout {
    pub width: u32,
    pub height: u32,
    pub header: Vec<(TextLine, f32)>,
    pub cells: Vec<CellLayout>,
    /// Baseline-to-baseline distance of captions.
    pub line_height: u32,
}

fn caption_lines(frame: &ExportFrame, options: &SheetOptions) -> Vec<(String, LineKind)> {
    let mut lines = Vec::new();
    if options.show_numbers {
        let label = if frame.label.trim().is_empty() {
            format!("{}", frame.number)
        } else {
            format!("{} · {}", frame.number, frame.label.trim())
        };
        let label = if frame.missing {
            format!("{label} (image missing)")
        } else {
            label
        };
        lines.push((label, LineKind::Label));
    }
    if !frame.action.trim().is_empty() {
        lines.push((frame.action.trim().to_string(), LineKind::Action));
    }
    if !frame.dialogue.trim().is_empty() {
        lines.push((
            format!("\u{201c}{}\u{201d}", frame.dialogue.trim()),
            LineKind::Dialogue,
        ));
    }
    lines
}

/// Image height of a frame scaled to `width`, at least 1.
fn scaled_height(image: &RgbImage, width: u32) -> u32 {
    let (w, h) = image.dimensions();
    ((u64::from(width) * u64::from(h) + u64::from(w.max(1)) / 2) / u64::from(w.max(1))).max(1)
        as u32
}

/// Computes where everything goes.
pub fn layout_sheet(doc: &ExportDocument, options: &SheetOptions) -> SheetLayout {
    let font = font();
    let columns = options.columns.clamp(1, doc.frames.len().max(1));
    let cell_width = options.cell_width.max(16);
    let caption_scale = em_scale(&font, options.font_size.max(4.0));
    let line_h = line_height(&font, caption_scale).ceil() as u32;
    let measure = |s: &str| raster_width(&font, caption_scale, s);
    let width =
        2 * options.margin + columns as u32 * cell_width + (columns as u32 - 1) * options.gutter;

    let mut y = options.margin;
    let mut header = Vec::new();
    if options.show_header {
        let title_size = options.font_size * 1.6;
        let title_scale = em_scale(&font, title_size);
        let text_width = (width - 2 * options.margin) as f32;
        for line in wrap_text(&doc.title, text_width, |s| {
            raster_width(&font, title_scale, s)
        }) {
            header.push((
                TextLine {
                    x: options.margin,
                    y,
                    text: line,
                    kind: LineKind::Label,
                },
                title_size,
            ));
            y += line_height(&font, title_scale).ceil() as u32;
        }
        let mut small: Vec<String> = wrap_text(&doc.identity_prompt, text_width, measure);
        if !doc.date.is_empty() {
            small.push(doc.date.clone());
        }
        for line in small {
            header.push((
                TextLine {
                    x: options.margin,
                    y,
                    text: line,
                    kind: LineKind::Action,
                },
                options.font_size,
            ));
            y += line_h;
        }
        y += options.gutter;
    }

    let caption_gap = line_h / 3;
    // Glyphs can overhang their advance box by a pixel (negative side bearings, antialiasing):
    // keep text that far inside the cell so it never touches the neighbour.
    let inset = CAPTION_INSET.min(cell_width / 4);
    let mut cells = Vec::with_capacity(doc.frames.len());
    for row in doc.frames.chunks(columns) {
        let mut row_cells = Vec::with_capacity(row.len());
        for (col, frame) in row.iter().enumerate() {
            let x = options.margin + col as u32 * (cell_width + options.gutter);
            let image_height = scaled_height(&frame.image, cell_width);
            let mut line_y = y + image_height + caption_gap;
            let mut lines = Vec::new();
            for (text, kind) in caption_lines(frame, options) {
                for piece in wrap_text(&text, (cell_width - 2 * inset) as f32, measure) {
                    lines.push(TextLine {
                        x: x + inset,
                        y: line_y,
                        text: piece,
                        kind,
                    });
                    line_y += line_h;
                }
            }
            row_cells.push(CellLayout {
                x,
                y,
                width: cell_width,
                image_height,
                row_height: line_y - y,
                lines,
            });
        }
        let row_height = row_cells.iter().map(|c| c.row_height).max().unwrap_or(0);
        for cell in &mut row_cells {
            cell.row_height = row_height;
        }
        cells.extend(row_cells);
        y += row_height + options.gutter;
    }
    let height = if cells.is_empty() {
        y + options.margin
    } else {
        y - options.gutter + options.margin
    };
    SheetLayout {
        width,
        height,
        header,
        cells,
        line_height: line_h,
    }
}

/// Draws the sheet.
pub fn render_sheet(doc: &ExportDocument, options: &SheetOptions) -> Result<RgbImage, ExportError> {
    if doc.frames.is_empty() {
        return Err(ExportError::NoFrames);
    }
    let layout = layout_sheet(doc, options);
    let font = font();
    let mut sheet = RgbImage::from_pixel(layout.width, layout.height, options.background);
    for (line, size) in &layout.header {
        draw_line(&mut sheet, &font, em_scale(&font, *size), line, options.ink);
    }
    let caption_scale = em_scale(&font, options.font_size.max(4.0));
    let dialogue_ink = Rgb([
        options.ink[0].saturating_add(70),
        options.ink[1].saturating_add(70),
        options.ink[2].saturating_add(90),
    ]);
    for (frame, cell) in doc.frames.iter().zip(&layout.cells) {
        let mut picture = imageops::resize(
            &frame.image,
            cell.width,
            cell.image_height,
            imageops::FilterType::Triangle,
        );
        if options.overlay {
            bake_overlay(&mut picture, frame);
        }
        imageops::replace(&mut sheet, &picture, i64::from(cell.x), i64::from(cell.y));
        draw_hollow_rect_mut(
            &mut sheet,
            Rect::at(cell.x as i32, cell.y as i32).of_size(cell.width, cell.image_height),
            Rgb([120, 120, 120]),
        );
        for line in &cell.lines {
            let ink = match line.kind {
                LineKind::Dialogue => dialogue_ink,
                _ => options.ink,
            };
            draw_line(&mut sheet, &font, caption_scale, line, ink);
        }
    }
    Ok(sheet)
}

fn draw_line(
    sheet: &mut RgbImage,
    font: &FontRef<'_>,
    scale: PxScale,
    line: &TextLine,
    ink: Rgb<u8>,
) {
    draw_text_mut(
        sheet,
        ink,
        line.x as i32,
        line.y as i32,
        scale,
        font,
        &line.text,
    );
}

/// Token grid of a frame: the mask's, or FLUX's 16-pixel tokens of the original image.
fn token_grid(frame: &ExportFrame) -> (u32, u32) {
    match &frame.mask {
        Some(m) if m.rows > 0 && m.cols > 0 => (m.rows, m.cols),
        _ => (
            (frame.image.height() / PIXELS_PER_TOKEN).max(1),
            (frame.image.width() / PIXELS_PER_TOKEN).max(1),
        ),
    }
}

/// Foreground tint (warm, 40 %) and match points (dots at the centres of matched frame tokens).
pub fn bake_overlay(picture: &mut RgbImage, frame: &ExportFrame) {
    let (w, h) = picture.dimensions();
    let (rows, cols) = token_grid(frame);
    if let Some(mask) = &frame.mask {
        let tint = [255.0, 140.0, 0.0];
        for (x, y, px) in picture.enumerate_pixels_mut() {
            let (r, c) = (y * rows / h, x * cols / w);
            if mask.is_foreground(r, c) {
                for ch in 0..3 {
                    px[ch] = (0.6 * f32::from(px[ch]) + 0.4 * tint[ch]).round() as u8;
                }
            }
        }
    }
    let radius = ((w / cols).min(h / rows) / 3).clamp(1, 4) as i32;
    for m in &frame.matches {
        let (r, c) = (m.frame_token / cols, m.frame_token % cols);
        if r >= rows {
            continue;
        }
        let cx = ((2 * c + 1) * w / (2 * cols)) as i32;
        let cy = ((2 * r + 1) * h / (2 * rows)) as i32;
        draw_filled_circle_mut(picture, (cx, cy), radius, Rgb([0, 200, 255]));
    }
}

/// Renders the sheet and writes it as a PNG (atomically).
pub fn write_sheet(
    path: &Path,
    doc: &ExportDocument,
    options: &SheetOptions,
) -> Result<(), ExportError> {
    let sheet = render_sheet(doc, options)?;
    let mut bytes = Vec::new();
    sheet
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| ExportError::encode(path, e))?;
    atomic_write(path, &bytes, &mut RealDisk)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_height_keeps_aspect() {
        assert_eq!(scaled_height(&RgbImage::new(64, 36), 320), 180);
        assert_eq!(scaled_height(&RgbImage::new(100, 1), 10), 1);
    }

    #[test]
    fn grid_falls_back_to_flux_tokens() {
        let frame = ExportFrame {
            number: 1,
            label: String::new(),
            action: String::new(),
            dialogue: String::new(),
            image: RgbImage::new(64, 32),
            duration_ms: 1000,
            mask: None,
            matches: Vec::new(),
            missing: false,
        };
        assert_eq!(token_grid(&frame), (2, 4));
    }
}
