//! Token seams: whether a generated picture shows the model's token grid.
//!
//! Token merge and attention sharing change tokens one by one, so a method that pushes
//! neighbouring tokens apart leaves visible edges along the token borders. The measure
//! compares neighbouring pixels across a token border with neighbouring pixels inside a
//! token; a picture without seams has about the same contrast in both.

use image::RgbImage;

/// Mean absolute difference of neighbouring pixels (mean over the three channels, 0..=255).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeamContrast {
    /// Pairs on either side of a token border.
    pub across: f32,
    /// Pairs inside one token.
    pub inside: f32,
}

impl SeamContrast {
    /// `across / inside`; 1 for a picture with no edges at all.
    pub fn ratio(&self) -> f32 {
        if self.inside > 0.0 {
            self.across / self.inside
        } else if self.across > 0.0 {
            f32::INFINITY
        } else {
            1.0
        }
    }
}

/// Seam contrast of `image` on a grid of square tokens `token_px` pixels wide, horizontal
/// and vertical neighbours together.
pub fn seam_contrast(image: &RgbImage, token_px: u32) -> SeamContrast {
    let (w, h) = image.dimensions();
    let diff = |a: [u8; 3], b: [u8; 3]| -> f32 {
        a.iter()
            .zip(&b)
            .map(|(x, y)| (*x as f32 - *y as f32).abs())
            .sum::<f32>()
            / 3.0
    };
    let (mut across, mut n_across, mut inside, mut n_inside) = (0.0f64, 0usize, 0.0f64, 0usize);
    let mut add = |border: bool, d: f32| {
        if border {
            across += d as f64;
            n_across += 1;
        } else {
            inside += d as f64;
            n_inside += 1;
        }
    };
    for y in 0..h {
        for x in 0..w {
            let here = image.get_pixel(x, y).0;
            if x + 1 < w {
                add(
                    (x + 1) % token_px == 0,
                    diff(here, image.get_pixel(x + 1, y).0),
                );
            }
            if y + 1 < h {
                add(
                    (y + 1) % token_px == 0,
                    diff(here, image.get_pixel(x, y + 1).0),
                );
            }
        }
    }
    let mean = |sum: f64, n: usize| if n == 0 { 0.0 } else { (sum / n as f64) as f32 };
    SeamContrast {
        across: mean(across, n_across),
        inside: mean(inside, n_inside),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn flat_tokens_have_all_their_contrast_across_borders() {
        // 4x4 pixels, tokens of 2x2: left tokens black, right tokens grey 90.
        let image = RgbImage::from_fn(4, 4, |x, _| {
            if x < 2 {
                Rgb([0, 0, 0])
            } else {
                Rgb([90, 90, 90])
            }
        });
        let s = seam_contrast(&image, 2);
        // 24 neighbour pairs: 8 cross a border (4 horizontal at x=1|2, of which all differ by 90;
        // 4 vertical at y=1|2, all equal), 16 inside. Across: 4·90 / 8 = 45; inside: 0.
        assert_eq!(s.across, 45.0);
        assert_eq!(s.inside, 0.0);
        assert_eq!(s.ratio(), f32::INFINITY);
    }

    #[test]
    fn a_smooth_ramp_has_no_seams() {
        // A horizontal ramp of 10 per pixel: every horizontal pair differs by 10, every
        // vertical pair by 0, inside or across; ratio 1.
        let image = RgbImage::from_fn(8, 8, |x, _| Rgb([(x * 10) as u8; 3]));
        let s = seam_contrast(&image, 4);
        // Horizontal pairs: 7 per row, 1 across (x=3|4) and 6 inside; vertical pairs: 7 per
        // column, 1 across, 6 inside. Across: (8·10 + 8·0) / 16 = 5; inside: (48·10) / 96 = 5.
        assert_eq!(s.across, 5.0);
        assert_eq!(s.inside, 5.0);
        assert_eq!(s.ratio(), 1.0);
        assert_eq!(seam_contrast(&RgbImage::new(4, 4), 2).ratio(), 1.0);
    }
}
