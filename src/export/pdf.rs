//! PDF storyboard pages (krilla): A4 or Letter, portrait or landscape, 1x3, 2x3 or 3x3 frames
//! per page, each with its number, label and captions. The font is embedded (subset).
//!
//! Page cells have a fixed size, so the image shrinks (down to 45 % of the cell height) to
//! leave room for long captions; a caption longer than that is cut with an ellipsis rather
//! than spilling into the next cell.

use std::path::Path;

use ab_glyph::{Font as _, FontRef};
use krilla::color::rgb;
use krilla::geom::{PathBuilder, Point, Rect, Size, Transform};
use krilla::image::Image;
use krilla::page::PageSettings;
use krilla::paint::{Fill, Stroke};
use krilla::text::{Font, TextDirection};
use krilla::{Document, SerializeSettings};

use super::text::{DEJAVU_SANS, advance_width, em_scale, font, wrap_text};
use super::{ExportDocument, ExportError, ExportFrame};
use crate::project::store::{RealDisk, atomic_write};

/// Paper size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PageSize {
    #[default]
    A4,
    Letter,
}

impl PageSize {
    /// Portrait width and height in PDF points (1/72 inch).
    pub fn portrait_points(self) -> (f32, f32) {
        match self {
            PageSize::A4 => (595.28, 841.89),
            PageSize::Letter => (612.0, 792.0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PageOrientation {
    #[default]
    Portrait,
    Landscape,
}

/// Frames per page, columns x rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PageGrid {
    /// One column of three frames.
    OneByThree,
    /// Two columns, three rows.
    #[default]
    TwoByThree,
    ThreeByThree,
}

impl PageGrid {
    pub fn columns_rows(self) -> (usize, usize) {
        match self {
            PageGrid::OneByThree => (1, 3),
            PageGrid::TwoByThree => (2, 3),
            PageGrid::ThreeByThree => (3, 3),
        }
    }

    pub fn per_page(self) -> usize {
        let (c, r) = self.columns_rows();
        c * r
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PdfOptions {
    pub size: PageSize,
    pub orientation: PageOrientation,
    pub grid: PageGrid,
    /// Caption size in points.
    pub font_size: f32,
    /// Page margin in points.
    pub margin: f32,
    /// Deflate the page contents (much smaller files; off only to inspect a PDF by eye).
    pub compress: bool,
}

impl Default for PdfOptions {
    fn default() -> Self {
        Self {
            size: PageSize::A4,
            orientation: PageOrientation::Portrait,
            grid: PageGrid::TwoByThree,
            font_size: 9.0,
            margin: 36.0,
            compress: true,
        }
    }
}

impl PdfOptions {
    /// Page width and height in points.
    pub fn page_points(&self) -> (f32, f32) {
        let (w, h) = self.size.portrait_points();
        match self.orientation {
            PageOrientation::Portrait => (w, h),
            PageOrientation::Landscape => (h, w),
        }
    }
}

/// Number of pages for `frames` frames.
pub fn page_count(frames: usize, grid: PageGrid) -> usize {
    frames.div_ceil(grid.per_page()).max(1)
}

/// Lines of `text` that fit in `max_lines`; the last kept line ends with an ellipsis when
/// something was cut.
pub fn fit_lines(mut lines: Vec<String>, max_lines: usize) -> Vec<String> {
    if lines.len() <= max_lines {
        return lines;
    }
    lines.truncate(max_lines);
    if let Some(last) = lines.last_mut() {
        let mut kept: String = last.chars().collect();
        // Room for the ellipsis: drop the last character when the line is not short.
        if kept.chars().count() > 1 {
            kept.pop();
        }
        *last = format!("{}…", kept.trim_end());
    }
    lines
}

struct PdfText<'a> {
    raster: FontRef<'a>,
    pdf: Font,
}

impl PdfText<'_> {
    fn width(&self, size: f32, text: &str) -> f32 {
        advance_width(&self.raster, em_scale(&self.raster, size), text)
    }

    fn ascent(&self, size: f32) -> f32 {
        let units = self.raster.units_per_em().unwrap_or(1000.0);
        self.raster.ascent_unscaled() / units * size
    }

    fn line_height(&self, size: f32) -> f32 {
        let units = self.raster.units_per_em().unwrap_or(1000.0);
        (self.raster.height_unscaled() + self.raster.line_gap_unscaled()) / units * size
    }
}

fn fill(r: u8, g: u8, b: u8) -> Fill {
    Fill {
        paint: rgb::Color::new(r, g, b).into(),
        ..Fill::default()
    }
}

fn draw_line(
    surface: &mut krilla::surface::Surface<'_>,
    text: &PdfText<'_>,
    x: f32,
    top: f32,
    size: f32,
    line: &str,
) {
    surface.draw_text(
        Point::from_xy(x, top + text.ascent(size)),
        text.pdf.clone(),
        size,
        line,
        false,
        TextDirection::LeftToRight,
    );
}

/// Builds the PDF in memory.
pub fn encode_pdf(doc: &ExportDocument, options: &PdfOptions) -> Result<Vec<u8>, String> {
    let text = PdfText {
        raster: font(),
        pdf: Font::new(DEJAVU_SANS.into(), 0).ok_or("the embedded font is unusable")?,
    };
    let (page_w, page_h) = options.page_points();
    let (cols, rows) = options.grid.columns_rows();
    let size = options.font_size.max(4.0);
    let title_size = size * 1.5;
    let gutter = size * 1.5;
    let margin = options.margin.max(0.0);
    let header_h = text.line_height(title_size) + text.line_height(size) + gutter * 0.5;
    let cell_w = (page_w - 2.0 * margin - (cols as f32 - 1.0) * gutter) / cols as f32;
    let cell_h = (page_h - 2.0 * margin - header_h - (rows as f32 - 1.0) * gutter) / rows as f32;
    if cell_w <= 10.0 || cell_h <= 10.0 {
        return Err(format!(
            "margins of {margin} pt leave no room for frames on a {page_w}x{page_h} pt page"
        ));
    }
    let pages = page_count(doc.frames.len(), options.grid);
    let mut document = Document::new_with(SerializeSettings {
        compress_content_streams: options.compress,
        ..SerializeSettings::default()
    });
    let chunks: Vec<&[ExportFrame]> = if doc.frames.is_empty() {
        vec![&[]]
    } else {
        doc.frames.chunks(options.grid.per_page()).collect()
    };
    for (page_index, frames) in chunks.into_iter().enumerate() {
        let settings = PageSettings::from_wh(page_w, page_h).ok_or("invalid page size")?;
        let mut page = document.start_page_with(settings);
        let mut surface = page.surface();
        surface.set_fill(Some(fill(20, 20, 24)));
        let title_w = page_w - 2.0 * margin;
        let title = fit_lines(
            wrap_text(&doc.title, title_w, |s| text.width(title_size, s)),
            1,
        );
        draw_line(
            &mut surface,
            &text,
            margin,
            margin,
            title_size,
            title.first().map(String::as_str).unwrap_or(""),
        );
        let sub = format!(
            "{}{}{}   page {} of {}",
            doc.identity_prompt.trim(),
            if doc.identity_prompt.trim().is_empty() {
                ""
            } else {
                " · "
            },
            doc.date,
            page_index + 1,
            pages
        );
        let sub = fit_lines(wrap_text(&sub, title_w, |s| text.width(size, s)), 1);
        draw_line(
            &mut surface,
            &text,
            margin,
            margin + text.line_height(title_size),
            size,
            sub.first().map(String::as_str).unwrap_or(""),
        );

        for (slot, frame) in frames.iter().enumerate() {
            let (col, row) = (slot % cols, slot / cols);
            let x = margin + col as f32 * (cell_w + gutter);
            let y = margin + header_h + row as f32 * (cell_h + gutter);
            draw_cell(&mut surface, &text, frame, x, y, cell_w, cell_h, size)?;
        }
        surface.finish();
        page.finish();
    }
    document.finish().map_err(|e| format!("{e:?}"))
}

#[allow(clippy::too_many_arguments)]
fn draw_cell(
    surface: &mut krilla::surface::Surface<'_>,
    text: &PdfText<'_>,
    frame: &ExportFrame,
    x: f32,
    y: f32,
    cell_w: f32,
    cell_h: f32,
    size: f32,
) -> Result<(), String> {
    let line_h = text.line_height(size);
    let mut caption = Vec::new();
    let label = if frame.label.trim().is_empty() {
        format!("{}", frame.number)
    } else {
        format!("{} · {}", frame.number, frame.label.trim())
    };
    if frame.missing {
        caption.push(format!("{label} (image missing)"));
    } else {
        caption.push(label);
    }
    let measure = |s: &str| text.width(size, s);
    caption.extend(wrap_text(frame.action.trim(), cell_w, measure));
    if !frame.dialogue.trim().is_empty() {
        let quoted = format!("\u{201c}{}\u{201d}", frame.dialogue.trim());
        caption.extend(wrap_text(&quoted, cell_w, measure));
    }
    let (iw, ih) = frame.image.dimensions();
    let natural_h = cell_w * ih as f32 / iw.max(1) as f32;
    let gap = line_h * 0.3;
    let wanted_h = cell_h - gap - caption.len() as f32 * line_h;
    let mut image_h = natural_h.min(wanted_h.max(cell_h * 0.45));
    let mut image_w = cell_w;
    if image_h < natural_h {
        image_w = image_h * iw as f32 / ih.max(1) as f32;
    }
    image_h = image_h.max(1.0);
    let max_lines = ((cell_h - image_h - gap) / line_h).floor().max(0.0) as usize;
    let caption = fit_lines(caption, max_lines);

    let mut rgba = Vec::with_capacity((iw * ih * 4) as usize);
    for p in frame.image.pixels() {
        rgba.extend_from_slice(&[p[0], p[1], p[2], 255]);
    }
    let image = Image::from_rgba8(rgba, iw, ih);
    surface.push_transform(&Transform::from_translate(x, y));
    surface.draw_image(
        image,
        Size::from_wh(image_w, image_h).ok_or("frame image has no size")?,
    );
    surface.pop();
    if let Some(rect) = Rect::from_xywh(x, y, image_w, image_h) {
        let mut pb = PathBuilder::new();
        pb.push_rect(rect);
        if let Some(path) = pb.finish() {
            surface.set_fill(None);
            surface.set_stroke(Some(Stroke {
                paint: rgb::Color::new(120, 120, 120).into(),
                width: 0.5,
                ..Stroke::default()
            }));
            surface.draw_path(&path);
            surface.set_stroke(None);
            surface.set_fill(Some(fill(20, 20, 24)));
        }
    }
    let mut top = y + image_h + gap;
    for line in &caption {
        draw_line(surface, text, x, top, size, line);
        top += line_h;
    }
    Ok(())
}

/// Writes the storyboard PDF (atomically).
pub fn write_pdf(
    path: &Path,
    doc: &ExportDocument,
    options: &PdfOptions,
) -> Result<(), ExportError> {
    if doc.frames.is_empty() {
        return Err(ExportError::NoFrames);
    }
    let bytes = encode_pdf(doc, options).map_err(|e| ExportError::encode(path, e))?;
    atomic_write(path, &bytes, &mut RealDisk)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_hold_the_grid() {
        assert_eq!(page_count(7, PageGrid::TwoByThree), 2);
        assert_eq!(page_count(6, PageGrid::TwoByThree), 1);
        assert_eq!(page_count(10, PageGrid::ThreeByThree), 2);
        assert_eq!(page_count(4, PageGrid::OneByThree), 2);
        assert_eq!(page_count(0, PageGrid::OneByThree), 1);
    }

    #[test]
    fn landscape_swaps_sides() {
        let o = PdfOptions {
            size: PageSize::Letter,
            orientation: PageOrientation::Landscape,
            ..PdfOptions::default()
        };
        assert_eq!(o.page_points(), (792.0, 612.0));
    }

    #[test]
    fn cut_captions_end_with_an_ellipsis() {
        let lines = vec!["one two".to_string(), "three".into(), "four".into()];
        assert_eq!(fit_lines(lines.clone(), 2), vec!["one two", "thre…"]);
        assert_eq!(fit_lines(lines.clone(), 3), lines);
        assert!(fit_lines(lines, 0).is_empty());
    }
}
