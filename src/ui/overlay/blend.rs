//! The overlay colour math on the CPU: the same formulas as the WGSL shaders, so tests can
//! check GPU read-backs against them and the CPU can colour match points.
//!
//! Everything is in egui's colour space: gamma-encoded values in 0..=1 and premultiplied
//! alpha, blended with `src + dst * (1 - src.a)` (egui-wgpu's blend state).

/// Parameters of the mask tint (mirrors `shaders/mask_tint.wgsl`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TintParams {
    /// Tint colour, gamma-encoded RGB.
    pub colour: [f32; 3],
    /// How much of the tint covers foreground pixels (0 = none, 1 = flat colour).
    pub fill_opacity: f32,
    /// How much of the tint covers outline pixels.
    pub outline_opacity: f32,
    /// Opacity of the whole layer (image included).
    pub layer_alpha: f32,
}

impl Default for TintParams {
    fn default() -> Self {
        Self {
            colour: [1.0, 0.35, 0.2],
            fill_opacity: 0.35,
            outline_opacity: 1.0,
            layer_alpha: 1.0,
        }
    }
}

fn mix3(a: [f32; 3], b: [f32; 3], k: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * k,
        a[1] + (b[1] - a[1]) * k,
        a[2] + (b[2] - a[2]) * k,
    ]
}

/// The tinted pixel as premultiplied RGBA: the image mixed toward the tint colour by the
/// fill opacity inside the mask and by the outline opacity on the outline (the larger wins).
pub fn tint_pixel(image: [f32; 3], inside: bool, outline: bool, p: &TintParams) -> [f32; 4] {
    let fill = if inside { p.fill_opacity } else { 0.0 };
    let edge = if outline { p.outline_opacity } else { 0.0 };
    let rgb = mix3(image, p.colour, fill.max(edge));
    premultiply(rgb, p.layer_alpha)
}

pub fn premultiply(rgb: [f32; 3], alpha: f32) -> [f32; 4] {
    [rgb[0] * alpha, rgb[1] * alpha, rgb[2] * alpha, alpha]
}

/// egui-wgpu's blend state: colour `src + dst * (1 - src.a)`, alpha `src.a * (1 - dst.a) + dst.a`.
pub fn blend_over(src: [f32; 4], dst: [f32; 4]) -> [f32; 4] {
    let k = 1.0 - src[3];
    [
        src[0] + dst[0] * k,
        src[1] + dst[1] * k,
        src[2] + dst[2] * k,
        src[3] * (1.0 - dst[3]) + dst[3],
    ]
}

/// Five stops of matplotlib's viridis (0, 0.25, 0.5, 0.75, 1), gamma-encoded.
pub const VIRIDIS_STOPS: [[f32; 3]; 5] = [
    [0.267, 0.005, 0.329],
    [0.231, 0.322, 0.545],
    [0.129, 0.569, 0.549],
    [0.369, 0.788, 0.384],
    [0.992, 0.906, 0.145],
];

/// A viridis-like colour map: piecewise linear between [`VIRIDIS_STOPS`]; `t` is clamped to
/// 0..=1 (mirrors `viridis()` in `shaders/heatmap.wgsl`).
pub fn viridis(t: f32) -> [f32; 3] {
    let x = t.clamp(0.0, 1.0) * 4.0;
    let i = (x.floor() as usize).min(3);
    mix3(VIRIDIS_STOPS[i], VIRIDIS_STOPS[i + 1], x - i as f32)
}

/// Heat map pixel: the image mixed toward the colour map by `opacity` where the cell has a
/// value; cells without one (encoded 0) show the image untouched.
pub fn heat_pixel(image: [f32; 3], value: Option<f32>, opacity: f32, layer_alpha: f32) -> [f32; 4] {
    let rgb = match value {
        Some(v) => mix3(image, viridis(v), opacity),
        None => image,
    };
    premultiply(rgb, layer_alpha)
}

/// Encodes a similarity for the R8 heat texture: 0 means "no value", 1..=255 cover 0..=1.
pub fn encode_heat(value: Option<f32>) -> u8 {
    match value {
        Some(v) if v.is_finite() => 1 + (v.clamp(0.0, 1.0) * 254.0).round() as u8,
        _ => 0,
    }
}

/// Inverse of [`encode_heat`] (what the shader computes from the normalised texel).
pub fn decode_heat(byte: u8) -> Option<f32> {
    (byte > 0).then(|| (byte - 1) as f32 / 254.0)
}

/// HSV (all in 0..=1) to gamma RGB.
pub fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = h.rem_euclid(1.0) * 6.0;
    let c = v * s;
    let x = c * (1.0 - ((h6 % 2.0) - 1.0).abs());
    let (r, g, b) = match h6 as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r + m, g + m, b + m]
}

/// Colour of a correspondence by the frame token's position (x, y in 0..=1 across the
/// grid): hue runs with x, brightness falls with y, so neighbouring points get neighbouring
/// colours as in CharaConsist's correspondence figures.
pub fn position_colour(x: f32, y: f32) -> [f32; 3] {
    hsv_to_rgb(
        0.83 * x.clamp(0.0, 1.0),
        0.85,
        1.0 - 0.45 * y.clamp(0.0, 1.0),
    )
}

/// Whether the token cell under `uv` lies on the mask outline: one of the 8 neighbours at
/// distance `offset` (in uv units per axis) has a different mask value (mirrors the shader).
pub fn is_outline(mask: &[bool], rows: usize, cols: usize, uv: [f32; 2], offset: [f32; 2]) -> bool {
    let at = |u: f32, v: f32| {
        let c = ((u * cols as f32).floor() as i64).clamp(0, cols as i64 - 1) as usize;
        let r = ((v * rows as f32).floor() as i64).clamp(0, rows as i64 - 1) as usize;
        mask[r * cols + c]
    };
    let centre = at(uv[0], uv[1]);
    for dy in [-1.0, 0.0, 1.0] {
        for dx in [-1.0, 0.0, 1.0] {
            if at(uv[0] + dx * offset[0], uv[1] + dy * offset[1]) != centre {
                return true;
            }
        }
    }
    false
}

/// Converts a gamma value in 0..=1 to a byte as the GPU does for unorm targets.
pub fn to_byte(x: f32) -> u8 {
    (x.clamp(0.0, 1.0) * 255.0).round() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn tint_mixes_toward_the_colour_inside_the_mask_only() {
        let p = TintParams {
            colour: [1.0, 0.0, 0.0],
            fill_opacity: 0.25,
            outline_opacity: 1.0,
            layer_alpha: 1.0,
        };
        // 0.4 + (1 - 0.4) * 0.25 = 0.55; 0.8 * 0.75 = 0.6
        assert!(close(
            &tint_pixel([0.4, 0.8, 0.2], true, false, &p),
            &[0.55, 0.6, 0.15, 1.0]
        ));
        assert!(close(
            &tint_pixel([0.4, 0.8, 0.2], false, false, &p),
            &[0.4, 0.8, 0.2, 1.0]
        ));
        // The outline is the flat colour at opacity 1.
        assert!(close(
            &tint_pixel([0.4, 0.8, 0.2], true, true, &p),
            &[1.0, 0.0, 0.0, 1.0]
        ));
    }

    #[test]
    fn half_transparent_layer_blends_like_egui() {
        let p = TintParams {
            colour: [0.0, 0.0, 1.0],
            fill_opacity: 0.5,
            outline_opacity: 0.0,
            layer_alpha: 0.5,
        };
        let src = tint_pixel([1.0, 0.0, 0.0], true, false, &p);
        // rgb (0.5, 0, 0.5) premultiplied by 0.5.
        assert!(close(&src, &[0.25, 0.0, 0.25, 0.5]));
        let out = blend_over(src, [0.0, 1.0, 0.0, 1.0]);
        assert!(close(&out, &[0.25, 0.5, 0.25, 1.0]));
    }

    #[test]
    fn viridis_hits_its_stops_and_interpolates() {
        assert!(close(&viridis(0.0), &VIRIDIS_STOPS[0]));
        assert!(close(&viridis(0.5), &VIRIDIS_STOPS[2]));
        assert!(close(&viridis(1.0), &VIRIDIS_STOPS[4]));
        assert!(close(&viridis(7.0), &VIRIDIS_STOPS[4]));
        assert!(close(&viridis(-1.0), &VIRIDIS_STOPS[0]));
        let mid = viridis(0.125);
        assert!((mid[0] - 0.249).abs() < 1e-6 && (mid[2] - 0.437).abs() < 1e-6);
    }

    #[test]
    fn heat_encoding_round_trips_and_keeps_zero_for_missing() {
        assert_eq!(encode_heat(None), 0);
        assert_eq!(encode_heat(Some(f32::NAN)), 0);
        assert_eq!(encode_heat(Some(0.0)), 1);
        assert_eq!(encode_heat(Some(1.0)), 255);
        assert_eq!(decode_heat(0), None);
        assert_eq!(decode_heat(128), Some(0.5));
        let v = decode_heat(encode_heat(Some(0.73))).unwrap();
        assert!((v - 0.73).abs() <= 0.5 / 254.0 + 1e-6);
    }

    #[test]
    fn hsv_primaries() {
        assert!(close(&hsv_to_rgb(0.0, 1.0, 1.0), &[1.0, 0.0, 0.0]));
        assert!(close(&hsv_to_rgb(1.0 / 3.0, 1.0, 1.0), &[0.0, 1.0, 0.0]));
        assert!(close(&hsv_to_rgb(2.0 / 3.0, 1.0, 0.5), &[0.0, 0.0, 0.5]));
        assert!(close(&hsv_to_rgb(0.5, 0.0, 0.7), &[0.7, 0.7, 0.7]));
    }

    #[test]
    fn position_colours_differ_along_both_axes() {
        let a = position_colour(0.0, 0.0);
        let b = position_colour(1.0, 0.0);
        let c = position_colour(0.0, 1.0);
        assert!(close(&a, &[1.0, 0.15, 0.15]));
        assert!(!close(&a, &b) && !close(&a, &c));
        // Brightness (max channel) falls from 1 to 0.55 down the grid.
        assert!((c.iter().cloned().fold(0.0, f32::max) - 0.55).abs() < 1e-6);
    }

    #[test]
    fn outline_where_a_neighbour_differs() {
        // 2 x 4 grid, foreground in the right half.
        let mask = [false, false, true, true, false, false, true, true];
        let off = [0.05, 0.05];
        assert!(!is_outline(&mask, 2, 4, [0.1, 0.25], off));
        assert!(!is_outline(&mask, 2, 4, [0.9, 0.75], off));
        assert!(is_outline(&mask, 2, 4, [0.49, 0.25], off));
        assert!(is_outline(&mask, 2, 4, [0.52, 0.75], off));
    }

    #[test]
    fn bytes_round_like_unorm_targets() {
        assert_eq!(to_byte(0.0), 0);
        assert_eq!(to_byte(1.0), 255);
        assert_eq!(to_byte(0.5), 128);
        assert_eq!(to_byte(2.0), 255);
    }
}
