//! CHARIS ColorScore (Algorithm 1 of "Taming Identity Consistency and Prompt Diversity via
//! Latent Concatenation and Masked Conditional Flow Matching"): how well two images agree in
//! the mean colour of matched regions, in RGB, HSV and CIE Lab.
//!
//! Here the matched regions are the foreground masks of two frames (the character), so the
//! score is a model-free identity-colour check usable on Storyloom's own output.
//!
//! Per colour space sigma: `delta = || mean(r1^sigma) - mean(r2^sigma) ||_2` (Algorithm 1,
//! line 6). The per-space similarity the algorithm sums (line 7 is not printed in the paper)
//! is taken as `S = 1 - delta / delta_max`, with `delta_max` the largest distance two colours
//! can have in that space, so every S lies in [0, 1]. The spaces are combined by a weighted
//! geometric mean (CHARIS combines its axes that way so that one bad axis pulls the score
//! down); Algorithm 1's plain average is available as [`ColorCombine::ArithmeticMean`].

use image::{GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

use super::MetricsError;

/// sRGB with components in [0, 1] to HSV: hue in turns [0, 1), saturation and value in [0, 1].
pub fn rgb_to_hsv(rgb: [f64; 3]) -> [f64; 3] {
    let [r, g, b] = rgb;
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let chroma = max - min;
    let hue_sextant = if chroma == 0.0 {
        0.0
    } else if max == r {
        ((g - b) / chroma).rem_euclid(6.0)
    } else if max == g {
        (b - r) / chroma + 2.0
    } else {
        (r - g) / chroma + 4.0
    };
    let saturation = if max == 0.0 { 0.0 } else { chroma / max };
    [hue_sextant / 6.0, saturation, max]
}

fn srgb_to_linear(c: f64) -> f64 {
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

/// Linear sRGB to CIE XYZ (D65), IEC 61966-2-1.
const RGB_TO_XYZ: [[f64; 3]; 3] = [
    [0.4124564, 0.3575761, 0.1804375],
    [0.2126729, 0.7151522, 0.0721750],
    [0.0193339, 0.1191920, 0.9503041],
];

/// sRGB with components in [0, 1] to CIE L*a*b* (D65). The white point is the XYZ of sRGB
/// white (the matrix rows' sums), so neutral greys get a* = b* = 0 exactly.
pub fn rgb_to_lab(rgb: [f64; 3]) -> [f64; 3] {
    let linear = rgb.map(srgb_to_linear);
    let xyz: [f64; 3] = std::array::from_fn(|k| dot3(RGB_TO_XYZ[k], linear));
    let white: [f64; 3] = std::array::from_fn(|k| RGB_TO_XYZ[k].iter().sum());
    // CIE 1976: cube root above (6/29)^3, linear segment below.
    let delta: f64 = 6.0 / 29.0;
    let f = |t: f64| {
        if t > delta.powi(3) {
            t.cbrt()
        } else {
            t / (3.0 * delta * delta) + 4.0 / 29.0
        }
    };
    let [fx, fy, fz] = std::array::from_fn(|k| f(xyz[k] / white[k]));
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

fn dot3(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn euclid(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// Largest CIE76 distance between two sRGB colours: green (0,1,0) vs blue (0,0,1), 258.68
/// (found over the corners of the RGB cube, where Lab's extremes lie).
pub fn lab_max_distance() -> f64 {
    let corners: Vec<[f64; 3]> = (0..8)
        .map(|i| [(i & 1) as f64, ((i >> 1) & 1) as f64, ((i >> 2) & 1) as f64])
        .collect();
    let labs: Vec<[f64; 3]> = corners.into_iter().map(rgb_to_lab).collect();
    labs.iter()
        .flat_map(|a| labs.iter().map(move |b| euclid(*a, *b)))
        .fold(0.0, f64::max)
}

/// How the three per-space similarities are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ColorCombine {
    /// `(prod S_sigma^w_sigma)^(1 / sum w)`, CHARIS's combination rule.
    #[default]
    WeightedGeometricMean,
    /// `sum w S / sum w`: Algorithm 1 line 10 taken literally (with equal weights).
    ArithmeticMean,
}

/// Settings of the colour score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ColorScoreSettings {
    /// Weights of RGB, HSV and Lab. Default equal (CHARIS benchmarks with equal weights).
    pub weights: [f64; 3],
    pub combine: ColorCombine,
    /// Mask pixels at or above this value are foreground.
    pub mask_threshold: u8,
}

impl Default for ColorScoreSettings {
    fn default() -> Self {
        Self {
            weights: [1.0, 1.0, 1.0],
            combine: ColorCombine::default(),
            mask_threshold: 128,
        }
    }
}

/// Distance of the regions' mean colours in one space and the similarity derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpaceScore {
    /// `|| mean_a - mean_b ||_2` in the space's own units (RGB and HSV in [0, 1], Lab in
    /// CIE76 units).
    pub distance: f64,
    /// `1 - distance / max distance`, in [0, 1]; 1 = same mean colour.
    pub similarity: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ColorScore {
    pub rgb: SpaceScore,
    pub hsv: SpaceScore,
    pub lab: SpaceScore,
    /// The per-space similarities combined, in [0, 1].
    pub combined: f64,
}

/// Mean colour of a region in the three spaces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionColor {
    pub rgb: [f64; 3],
    /// Hue as the saturation-weighted circular mean (turns), `None` for a colourless
    /// region; saturation and value as plain means.
    pub hue: Option<f64>,
    pub saturation: f64,
    pub value: f64,
    pub lab: [f64; 3],
}

/// Mean colours of the pixels of `img` where `mask >= threshold`.
pub fn region_color(
    img: &RgbImage,
    mask: &GrayImage,
    threshold: u8,
) -> Result<RegionColor, MetricsError> {
    if img.dimensions() != mask.dimensions() {
        return Err(MetricsError::Input(format!(
            "image {:?} and mask {:?} differ in size",
            img.dimensions(),
            mask.dimensions()
        )));
    }
    let mut count = 0usize;
    let mut rgb_sum = [0.0; 3];
    let mut lab_sum = [0.0; 3];
    let (mut hue_x, mut hue_y, mut sat_sum, mut val_sum) = (0.0, 0.0, 0.0, 0.0);
    for (px, m) in img.pixels().zip(mask.pixels()) {
        if m.0[0] < threshold {
            continue;
        }
        let rgb = px.0.map(|c| c as f64 / 255.0);
        let [h, s, v] = rgb_to_hsv(rgb);
        let lab = rgb_to_lab(rgb);
        for k in 0..3 {
            rgb_sum[k] += rgb[k];
            lab_sum[k] += lab[k];
        }
        // Hue is an angle: average it on the circle, weighted by saturation (a grey pixel's
        // hue means nothing).
        let angle = h * std::f64::consts::TAU;
        hue_x += s * angle.cos();
        hue_y += s * angle.sin();
        sat_sum += s;
        val_sum += v;
        count += 1;
    }
    if count == 0 {
        return Err(MetricsError::Input("mask selects no pixel".into()));
    }
    let n = count as f64;
    let hue = (sat_sum > 0.0).then(|| (hue_y.atan2(hue_x) / std::f64::consts::TAU).rem_euclid(1.0));
    Ok(RegionColor {
        rgb: rgb_sum.map(|x| x / n),
        hue,
        saturation: sat_sum / n,
        value: val_sum / n,
        lab: lab_sum.map(|x| x / n),
    })
}

/// HSV distance of two region colours: hue difference on the circle in half-turns (so in
/// [0, 1]), saturation and value differences; max sqrt(3). When either region has no hue the
/// hue term is 0 and the saturation difference carries the change.
pub fn hsv_distance(a: &RegionColor, b: &RegionColor) -> f64 {
    let hue_term = match (a.hue, b.hue) {
        (Some(ha), Some(hb)) => {
            let diff = (ha - hb).rem_euclid(1.0);
            2.0 * diff.min(1.0 - diff)
        }
        _ => 0.0,
    };
    (hue_term.powi(2) + (a.saturation - b.saturation).powi(2) + (a.value - b.value).powi(2)).sqrt()
}

fn space_score(distance: f64, max: f64) -> SpaceScore {
    SpaceScore {
        distance,
        similarity: (1.0 - distance / max).clamp(0.0, 1.0),
    }
}

/// Combines per-space similarities with weights.
pub fn combine(similarities: [f64; 3], weights: [f64; 3], rule: ColorCombine) -> f64 {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    match rule {
        ColorCombine::WeightedGeometricMean => {
            if similarities
                .iter()
                .zip(&weights)
                .any(|(&s, &w)| s <= 0.0 && w > 0.0)
            {
                return 0.0;
            }
            let log_sum: f64 = similarities
                .iter()
                .zip(&weights)
                .filter(|&(_, &w)| w > 0.0)
                .map(|(&s, &w)| w * s.ln())
                .sum();
            (log_sum / total).exp()
        }
        ColorCombine::ArithmeticMean => {
            similarities
                .iter()
                .zip(&weights)
                .map(|(s, w)| s * w)
                .sum::<f64>()
                / total
        }
    }
}

/// ColorScore of the foreground of `img_a` (where `mask_a` is set) against that of `img_b`.
pub fn color_score_with(
    img_a: &RgbImage,
    mask_a: &GrayImage,
    img_b: &RgbImage,
    mask_b: &GrayImage,
    settings: &ColorScoreSettings,
) -> Result<ColorScore, MetricsError> {
    let a = region_color(img_a, mask_a, settings.mask_threshold)?;
    let b = region_color(img_b, mask_b, settings.mask_threshold)?;
    let sqrt3 = 3.0_f64.sqrt();
    let rgb = space_score(euclid(a.rgb, b.rgb), sqrt3);
    let hsv = space_score(hsv_distance(&a, &b), sqrt3);
    let lab = space_score(euclid(a.lab, b.lab), lab_max_distance());
    let combined = combine(
        [rgb.similarity, hsv.similarity, lab.similarity],
        settings.weights,
        settings.combine,
    );
    Ok(ColorScore {
        rgb,
        hsv,
        lab,
        combined,
    })
}

/// [`color_score_with`] with the default settings.
pub fn color_score(
    img_a: &RgbImage,
    mask_a: &GrayImage,
    img_b: &RgbImage,
    mask_b: &GrayImage,
) -> Result<ColorScore, MetricsError> {
    color_score_with(img_a, mask_a, img_b, mask_b, &ColorScoreSettings::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb};

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() < tol
    }

    fn full_mask(w: u32, h: u32) -> GrayImage {
        GrayImage::from_pixel(w, h, Luma([255]))
    }

    #[test]
    fn lab_of_known_colours() {
        let red = rgb_to_lab([1.0, 0.0, 0.0]);
        assert!(
            close(red[0], 53.24, 0.01) && close(red[1], 80.09, 0.01) && close(red[2], 67.20, 0.01)
        );
        let blue = rgb_to_lab([0.0, 0.0, 1.0]);
        assert!(
            close(blue[0], 32.30, 0.01)
                && close(blue[1], 79.19, 0.01)
                && close(blue[2], -107.86, 0.01)
        );
        let white = rgb_to_lab([1.0, 1.0, 1.0]);
        assert!(
            close(white[0], 100.0, 1e-4)
                && close(white[1], 0.0, 1e-9)
                && close(white[2], 0.0, 1e-9)
        );
        assert_eq!(rgb_to_lab([0.0, 0.0, 0.0]), [0.0, 0.0, 0.0]);
        // Mid grey 0.5: linear 0.21404, L = 116 * 0.21404^(1/3) - 16 = 53.39.
        assert!(close(rgb_to_lab([0.5, 0.5, 0.5])[0], 53.39, 0.01));
        assert!(close(lab_max_distance(), 258.68, 0.01));
    }

    #[test]
    fn hsv_of_known_colours() {
        assert_eq!(rgb_to_hsv([1.0, 0.0, 0.0]), [0.0, 1.0, 1.0]);
        assert_eq!(rgb_to_hsv([0.0, 1.0, 0.0]), [1.0 / 3.0, 1.0, 1.0]);
        assert_eq!(rgb_to_hsv([0.0, 0.0, 1.0]), [2.0 / 3.0, 1.0, 1.0]);
        // Magenta-ish (1, 0, 0.5): max r, (g - b)/C = -0.5 -> 5.5 sextants -> 330 deg.
        let h = rgb_to_hsv([1.0, 0.0, 0.5]);
        assert!(close(h[0], 330.0 / 360.0, 1e-12) && h[1] == 1.0 && h[2] == 1.0);
        // (0.5, 0.25, 0.25): hue 0, s = 0.25/0.5 = 0.5, v = 0.5.
        assert_eq!(rgb_to_hsv([0.5, 0.25, 0.25]), [0.0, 0.5, 0.5]);
        assert_eq!(rgb_to_hsv([0.3, 0.3, 0.3]), [0.0, 0.0, 0.3]);
    }

    #[test]
    fn identical_images_score_perfectly() {
        let mut img = RgbImage::new(4, 4);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = Rgb([(x * 60) as u8, (y * 50) as u8, 120]);
        }
        let mask = full_mask(4, 4);
        let s = color_score(&img, &mask, &img, &mask).unwrap();
        assert_eq!(
            (s.rgb.distance, s.hsv.distance, s.lab.distance),
            (0.0, 0.0, 0.0)
        );
        assert_eq!(s.combined, 1.0);
    }

    #[test]
    fn red_against_blue_by_hand() {
        let red = RgbImage::from_pixel(2, 2, Rgb([255, 0, 0]));
        let blue = RgbImage::from_pixel(3, 1, Rgb([0, 0, 255]));
        let s = color_score(&red, &full_mask(2, 2), &blue, &full_mask(3, 1)).unwrap();
        // RGB: |(1,0,0) - (0,0,1)| = sqrt2; S = 1 - sqrt2/sqrt3 = 0.183503.
        assert!(close(s.rgb.distance, 2.0_f64.sqrt(), 1e-12));
        assert!(close(s.rgb.similarity, 1.0 - (2.0_f64 / 3.0).sqrt(), 1e-12));
        // HSV: hues 0 and 2/3 turn are 1/3 turn apart = 2/3 half-turn; s, v equal.
        // distance 2/3; S = 1 - (2/3)/sqrt3 = 0.615100.
        assert!(close(s.hsv.distance, 2.0 / 3.0, 1e-12));
        // Lab: (53.24, 80.09, 67.20) vs (32.30, 79.19, -107.86): CIE76 = 176.314.
        assert!(close(s.lab.distance, 176.314, 1e-3));
        let sims = [s.rgb.similarity, s.hsv.similarity, s.lab.similarity];
        let geometric = (sims[0] * sims[1] * sims[2]).cbrt();
        assert!(close(s.combined, geometric, 1e-12));
    }

    #[test]
    fn only_masked_pixels_count() {
        // Left half red, right half green; the mask keeps the left half.
        let mut img = RgbImage::new(4, 2);
        let mut mask = GrayImage::new(4, 2);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = if x < 2 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 255, 0])
            };
            mask.put_pixel(x, y, Luma([if x < 2 { 200 } else { 10 }]));
        }
        let red = RgbImage::from_pixel(1, 1, Rgb([255, 0, 0]));
        let s = color_score(&img, &mask, &red, &full_mask(1, 1)).unwrap();
        assert_eq!(s.combined, 1.0);
        assert!(color_score(&img, &GrayImage::new(4, 2), &red, &full_mask(1, 1)).is_err());
        assert!(color_score(&img, &full_mask(1, 1), &red, &full_mask(1, 1)).is_err());
    }

    #[test]
    fn hue_wraps_around_red() {
        // Hues 350 deg and 10 deg average to 0 deg, not 180 deg.
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, Rgb([255, 0, 43])); // ~350 deg
        img.put_pixel(1, 0, Rgb([255, 43, 0])); // ~10 deg
        let c = region_color(&img, &full_mask(2, 1), 128).unwrap();
        let hue = c.hue.unwrap();
        assert!(!(1e-9..=1.0 - 1e-9).contains(&hue), "{hue}");
        // A grey region has no hue; against red only saturation and value differ.
        let grey = RgbImage::from_pixel(1, 1, Rgb([255, 255, 255]));
        let g = region_color(&grey, &full_mask(1, 1), 128).unwrap();
        assert_eq!(g.hue, None);
        let red = region_color(
            &RgbImage::from_pixel(1, 1, Rgb([255, 0, 0])),
            &full_mask(1, 1),
            128,
        )
        .unwrap();
        assert!(close(hsv_distance(&g, &red), 1.0, 1e-12));
    }

    #[test]
    fn combination_rules() {
        let s = [0.25, 1.0, 0.5];
        // Geometric, equal weights: (0.25 * 1 * 0.5)^(1/3) = 0.125^(1/3) = 0.5.
        assert!(close(
            combine(s, [1.0; 3], ColorCombine::WeightedGeometricMean),
            0.5,
            1e-12
        ));
        // Arithmetic: 1.75 / 3.
        assert!(close(
            combine(s, [1.0; 3], ColorCombine::ArithmeticMean),
            1.75 / 3.0,
            1e-12
        ));
        // Weights (2, 0, 1): (0.25^2 * 0.5)^(1/3) = 0.03125^(1/3) = 0.31498.
        assert!(close(
            combine(s, [2.0, 0.0, 1.0], ColorCombine::WeightedGeometricMean),
            0.03125_f64.cbrt(),
            1e-12
        ));
        assert_eq!(
            combine(
                [0.0, 1.0, 1.0],
                [1.0; 3],
                ColorCombine::WeightedGeometricMean
            ),
            0.0
        );
    }
}
