//! Mask cleaning on the token grid: erosion then dilation with square structuring elements.
//!
//! `imageproc::morphology` with `Norm::LInf` and radius `k` uses a `(2k+1) x (2k+1)` square:
//! `k = 1` is the 3x3 erosion and `k = 2` the 5x5 dilation of the released code. The
//! sequence is an opening (3x3) followed by one more dilation, so isolated foreground
//! specks vanish, one-token holes close, and the outline grows by one token.
//!
//! Border: imageproc computes a distance transform that ignores the outside of the image,
//! but it caps distances at `width + height`, so on a tiny grid a radius can reach that cap
//! (an empty 1x1 mask would dilate to full). Padding by the radius — with foreground for the
//! erosion (like OpenCV's default border, the border never erodes) and background for the
//! dilation — makes the border rule explicit and the tiny-grid case exact.

use image::{GrayImage, Luma};
use imageproc::distance_transform::Norm;
use imageproc::morphology::{dilate, erode};

const ON: u8 = 255;
const OFF: u8 = 0;

fn padded(image: &GrayImage, pad: u32, fill: u8) -> GrayImage {
    let mut out = GrayImage::from_pixel(
        image.width() + 2 * pad,
        image.height() + 2 * pad,
        Luma([fill]),
    );
    image::imageops::replace(&mut out, image, pad as i64, pad as i64);
    out
}

fn cropped(image: &GrayImage, pad: u32, width: u32, height: u32) -> GrayImage {
    image::imageops::crop_imm(image, pad, pad, width, height).to_image()
}

/// Erosion with a `(2r+1)` square; pixels outside the image count as foreground.
pub fn erode_square(mask: &GrayImage, radius: u8) -> GrayImage {
    if radius == 0 {
        return mask.clone();
    }
    let pad = radius as u32;
    let out = erode(&padded(mask, pad, ON), Norm::LInf, radius);
    cropped(&out, pad, mask.width(), mask.height())
}

/// Dilation with a `(2r+1)` square; pixels outside the image count as background.
pub fn dilate_square(mask: &GrayImage, radius: u8) -> GrayImage {
    if radius == 0 {
        return mask.clone();
    }
    let pad = radius as u32;
    let out = dilate(&padded(mask, pad, OFF), Norm::LInf, radius);
    cropped(&out, pad, mask.width(), mask.height())
}

/// The released code's cleaning: erosion (3x3 by default) then dilation (5x5).
pub fn clean(mask: &GrayImage, erosion_radius: u8, dilation_radius: u8) -> GrayImage {
    dilate_square(&erode_square(mask, erosion_radius), dilation_radius)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(rows: &[&str]) -> GrayImage {
        let h = rows.len() as u32;
        let w = rows[0].len() as u32;
        GrayImage::from_fn(w, h, |x, y| {
            let c = rows[y as usize].as_bytes()[x as usize];
            Luma([if c == b'#' { ON } else { OFF }])
        })
    }

    fn show(image: &GrayImage) -> Vec<String> {
        (0..image.height())
            .map(|y| {
                (0..image.width())
                    .map(|x| {
                        if image.get_pixel(x, y)[0] > 0 {
                            '#'
                        } else {
                            '.'
                        }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn all_ones_stays_all_ones() {
        for (w, h) in [(1, 1), (2, 1), (6, 4)] {
            let full = GrayImage::from_pixel(w, h, Luma([ON]));
            assert_eq!(clean(&full, 1, 2), full);
            assert_eq!(erode_square(&full, 1), full);
        }
    }

    #[test]
    fn empty_stays_empty_even_on_tiny_grids() {
        for (w, h) in [(1, 1), (2, 1), (5, 5)] {
            let empty = GrayImage::new(w, h);
            assert_eq!(clean(&empty, 1, 2), empty);
        }
    }

    #[test]
    fn an_isolated_pixel_disappears() {
        let speck = grid(&[".......", ".......", "...#...", ".......", "......."]);
        assert_eq!(clean(&speck, 1, 2), GrayImage::new(7, 5));
    }

    #[test]
    fn a_one_pixel_hole_closes() {
        // A 7x7 block with a hole in the middle, inside a 9x9 grid. The 3x3 erosion leaves
        // the ring of the hole's neighbours eroded: rows/cols 2..=6 minus the 3x3 around the
        // hole; the 5x5 dilation fills everything within 2 of what is left, which covers the
        // hole and grows the block's outline back out by one token beyond the eroded ring.
        let holed = grid(&[
            ".........",
            ".#######.",
            ".#######.",
            ".#######.",
            ".###.###.",
            ".#######.",
            ".#######.",
            ".#######.",
            ".........",
        ]);
        let eroded = erode_square(&holed, 1);
        assert_eq!(
            show(&eroded),
            vec![
                ".........",
                ".........",
                "..#####..",
                "..#...#..",
                "..#...#..",
                "..#...#..",
                "..#####..",
                ".........",
                ".........",
            ]
        );
        let cleaned = clean(&holed, 1, 2);
        assert_eq!(cleaned, GrayImage::from_pixel(9, 9, Luma([ON])));
        assert_eq!(cleaned.get_pixel(4, 4)[0], ON);
    }

    #[test]
    fn the_border_does_not_erode() {
        // Foreground touching the image border keeps its border tokens.
        let edge = grid(&["###...", "###...", "###..."]);
        assert_eq!(
            show(&erode_square(&edge, 1)),
            vec!["##....", "##....", "##...."]
        );
    }

    #[test]
    fn radius_two_dilation_is_a_five_by_five_square() {
        let dot = grid(&[
            ".......", ".......", ".......", "...#...", ".......", ".......", ".......",
        ]);
        let grown = dilate_square(&dot, 2);
        assert_eq!(grown.pixels().filter(|p| p[0] == ON).count(), 25);
        assert_eq!(grown.get_pixel(1, 1)[0], ON);
        assert_eq!(grown.get_pixel(0, 3)[0], OFF);
    }
}
