//! The shipped font and text measuring / word wrapping shared by the PNG and PDF exports.
//!
//! The font is DejaVu Sans (Bitstream Vera licence, see `assets/fonts/LICENSE-DejaVu.txt`),
//! compiled into the binary so exports look the same on every machine.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};

/// DejaVu Sans 2.37.
pub static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The shipped font, parsed (cheap: it only reads the table directory).
pub fn font() -> FontRef<'static> {
    FontRef::try_from_slice(DEJAVU_SANS).expect("the font compiled into the binary is valid")
}

/// The ab_glyph scale whose em square is `em_px` pixels (what "font size" means in PDF and
/// elsewhere; ab_glyph's own scale is the ascent-to-descent height).
pub fn em_scale(font: &impl Font, em_px: f32) -> PxScale {
    let units_per_em = font.units_per_em().unwrap_or(1000.0);
    PxScale::from(em_px * font.height_unscaled() / units_per_em)
}

/// Distance between baselines of consecutive lines, in pixels.
pub fn line_height(font: &impl Font, scale: PxScale) -> f32 {
    let f = font.as_scaled(scale);
    f.height() + f.line_gap()
}

/// Width of a line as raster text is drawn (`imageproc`'s layout, rounded up).
pub fn raster_width(font: &impl Font, scale: PxScale, text: &str) -> f32 {
    imageproc::drawing::text_size(scale, font, text).0 as f32
}

/// Width of a line as a PDF viewer lays it out: the sum of the glyph advances.
pub fn advance_width(font: &impl Font, scale: PxScale, text: &str) -> f32 {
    let f = font.as_scaled(scale);
    text.chars().map(|c| f.h_advance(f.glyph_id(c))).sum()
}

/// Greedy word wrap: each line's `measure` is at most `max_width`; explicit newlines start new
/// lines; a single word wider than the line is broken between characters. Whitespace runs
/// collapse to one space.
pub fn wrap_text(text: &str, max_width: f32, measure: impl Fn(&str) -> f32) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            let candidate = if line.is_empty() {
                word.to_string()
            } else {
                format!("{line} {word}")
            };
            if measure(&candidate) <= max_width {
                line = candidate;
                continue;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            if measure(word) <= max_width {
                line = word.to_string();
            } else {
                // Break the long word; every piece holds at least one character so this ends.
                for ch in word.chars() {
                    let mut longer = line.clone();
                    longer.push(ch);
                    if !line.is_empty() && measure(&longer) > max_width {
                        lines.push(std::mem::take(&mut line));
                        line.push(ch);
                    } else {
                        line = longer;
                    }
                }
            }
        }
        if !line.is_empty() {
            lines.push(line);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One unit per character: makes expected wraps easy to check by hand.
    fn chars(s: &str) -> f32 {
        s.chars().count() as f32
    }

    #[test]
    fn wraps_at_word_boundaries() {
        assert_eq!(
            wrap_text("the fox runs into the rain", 10.0, chars),
            vec!["the fox", "runs into", "the rain"]
        );
    }

    #[test]
    fn breaks_words_longer_than_the_line() {
        assert_eq!(
            wrap_text("ab abcdefghij", 4.0, chars),
            vec!["ab", "abcd", "efgh", "ij"]
        );
    }

    #[test]
    fn keeps_explicit_newlines_and_drops_empty_text() {
        assert_eq!(wrap_text("a\nb  c", 10.0, chars), vec!["a", "b c"]);
        assert!(wrap_text("   ", 10.0, chars).is_empty());
    }

    #[test]
    fn em_scale_matches_the_fonts_metrics() {
        let f = font();
        // DejaVu Sans: 2048 units per em, ascent 1901, descent -483.
        let s = em_scale(&f, 20.48);
        assert!((s.y - (1901.0 + 483.0) / 100.0).abs() < 1e-3, "{s:?}");
        let w = advance_width(&f, s, "ii");
        assert!(w > 0.0 && (w - 2.0 * advance_width(&f, s, "i")).abs() < 1e-4);
    }
}
