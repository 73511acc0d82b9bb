//! Model-free measurements on images of the procedural world: which scene, which character
//! colour, where the character stands, its pattern and accessory colour, and whether two images
//! show the same character. This is the ground truth the built-in model and the consistency
//! methods are scored against, so it only uses robust image statistics that also hold on
//! blurry, noisy generated images.
//!
//! The subject is found by saturation: the world draws every background muted and every
//! character vivid (see `world.rs`), so chroma (max - min channel) separates them.

use image::{GrayImage, Luma, Rgb, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::world::{Attributes, Colour, Pattern, Position, Scene, World};

/// Pixels at least this saturated (chroma as a fraction of full scale) belong to the character.
/// Backgrounds stay at or below 0.22, characters and their pattern shades at or above 0.32.
pub const SUBJECT_CHROMA: f32 = 0.27;
/// Below this fraction of the image the character is considered absent.
pub const MIN_SUBJECT_FRACTION: f32 = 0.004;
/// Centroid x (fraction of width) below which the character is on the left, and its mirror.
pub const LEFT_OF: f32 = 0.39;
/// A second colour needs this share of the hue votes to count as a hat or scarf.
pub const ACCESSORY_SHARE: f32 = 0.03;
/// Only clearly saturated pixels vote for a hue: where two vivid colours blur into each other
/// the mix is duller, so it does not invent a third colour.
pub const VOTE_CHROMA: f32 = 0.4;
/// Row-profile step (0..255 luminance) from which a body reads as striped...
pub const STRIPE_ROW_STEP: f32 = 7.0;
/// ...provided rows differ this many times more than columns.
pub const STRIPE_RATIO: f32 = 2.0;
/// Bright spread (0..255 luminance) from which a body reads as spotted.
pub const SPOT_SPREAD: f32 = 9.0;

/// Everything measured on one image.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub scene: Scene,
    /// Distance in RGB units from the image's sky/ground statistics to the chosen scene's.
    pub scene_distance: f32,
    /// Binary subject mask (0 or 255) found by saturation.
    pub subject: GrayImage,
    pub subject_fraction: f32,
    /// Dominant named colour inside the subject.
    pub colour: Option<Colour>,
    /// Second named colour with a noticeable share (a hat or scarf), if any.
    pub accessory_colour: Option<Colour>,
    pub pattern: Option<Pattern>,
    /// Centroid of the subject, as fractions of width and height.
    pub centroid: Option<(f32, f32)>,
    pub position: Option<Position>,
}

/// A token of the model's grid is the character's where at least this share of its pixels
/// are subject pixels (the consistency figures' ground truth for masks and matches).
pub const SUBJECT_TOKEN_SHARE: f32 = 0.3;

impl Measurement {
    /// The subject on a `rows x cols` token grid, row-major: a token counts where at least
    /// [`SUBJECT_TOKEN_SHARE`] of the pixels it covers are subject pixels.
    pub fn subject_tokens(&self, rows: usize, cols: usize) -> Vec<bool> {
        let (w, h) = (
            self.subject.width() as usize,
            self.subject.height() as usize,
        );
        let span = |i: usize, n: usize, size: usize| (i * size / n)..((i + 1) * size / n);
        let mut tokens = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for c in 0..cols {
                let (ys, xs) = (span(r, rows, h), span(c, cols, w));
                let total = ys.len() * xs.len();
                let on = ys
                    .clone()
                    .flat_map(|y| xs.clone().map(move |x| (x, y)))
                    .filter(|&(x, y)| self.subject.get_pixel(x as u32, y as u32).0[0] > 0)
                    .count();
                tokens.push(total > 0 && on as f32 >= SUBJECT_TOKEN_SHARE * total as f32);
            }
        }
        tokens
    }
}

/// Intersection over union of two token masks of the same grid; two empty masks agree (1).
pub fn token_iou(a: &[bool], b: &[bool]) -> f32 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    if union == 0 {
        1.0
    } else {
        inter as f32 / union as f32
    }
}

/// A consistency method's foreground mask of one image, row-major on a `rows x cols` grid.
#[derive(Debug, Clone, Copy)]
pub struct TokenMaskView<'a> {
    pub rows: usize,
    pub cols: usize,
    pub fg: &'a [bool],
}

/// One frame as a method saw it: the image, its mask and its point matches
/// (frame token, identity token).
#[derive(Debug, Clone, Copy)]
pub struct FrameView<'a> {
    pub image: &'a RgbImage,
    pub mask: TokenMaskView<'a>,
    pub matches: &'a [(u32, u32)],
}

/// Whether a method's masks and point matches sit on the character the checker finds, and
/// whether the frames took the identity's colour, tallied over stories.
#[derive(Debug, Clone, Default)]
pub struct GroundingTally {
    /// IoU of every mask (identities and frames) with its image's subject tokens.
    pub ious: Vec<f32>,
    pub matches: usize,
    /// Matches whose frame token and identity token both lie on the character.
    pub matches_on_character: usize,
    pub frames: usize,
    /// Frames whose character has the identity image's colour.
    pub frames_in_identity_colour: usize,
}

impl GroundingTally {
    pub fn add_story(
        &mut self,
        checker: &Checker,
        identity: &RgbImage,
        identity_mask: TokenMaskView<'_>,
        frames: &[FrameView<'_>],
    ) {
        let identity = checker.measure(identity);
        let identity_truth = identity.subject_tokens(identity_mask.rows, identity_mask.cols);
        self.ious.push(token_iou(identity_mask.fg, &identity_truth));
        for frame in frames {
            let measured = checker.measure(frame.image);
            self.frames += 1;
            self.frames_in_identity_colour +=
                (identity_agreement(&identity, &measured).colour == Some(true)) as usize;
            let truth = measured.subject_tokens(frame.mask.rows, frame.mask.cols);
            self.ious.push(token_iou(frame.mask.fg, &truth));
            for &(frame_token, identity_token) in frame.matches {
                self.matches += 1;
                let on = |t: &[bool], i: u32| t.get(i as usize).copied().unwrap_or(false);
                self.matches_on_character +=
                    (on(&truth, frame_token) && on(&identity_truth, identity_token)) as usize;
            }
        }
    }

    pub fn mean_iou(&self) -> f32 {
        self.ious.iter().sum::<f32>() / self.ious.len().max(1) as f32
    }

    pub fn matches_on_character_share(&self) -> f32 {
        self.matches_on_character as f32 / self.matches.max(1) as f32
    }

    pub fn identity_colour_share(&self) -> f32 {
        self.frames_in_identity_colour as f32 / self.frames.max(1) as f32
    }
}

/// Fraction of pairs of measurements whose character colours were measured and agree (1 for
/// fewer than two).
pub fn colour_agreement(m: &[Measurement]) -> f32 {
    let (mut pairs, mut agree) = (0usize, 0usize);
    for i in 0..m.len() {
        for j in i + 1..m.len() {
            pairs += 1;
            agree += (identity_agreement(&m[i], &m[j]).colour == Some(true)) as usize;
        }
    }
    if pairs == 0 {
        1.0
    } else {
        agree as f32 / pairs as f32
    }
}

/// Which measured attributes match the generating attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckReport {
    pub background: bool,
    pub colour: bool,
    pub position: bool,
    pub pattern: bool,
    pub accessory_colour: bool,
}

/// Whether two images show the same character, attribute by attribute. `None` where one of
/// the two could not be measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityAgreement {
    pub colour: Option<bool>,
    pub pattern: Option<bool>,
    pub accessory_colour: Option<bool>,
}

impl IdentityAgreement {
    /// Every measurable attribute agrees (and at least the colour was measured).
    pub fn all(&self) -> bool {
        self.colour == Some(true)
            && self.pattern != Some(false)
            && self.accessory_colour != Some(false)
    }
}

/// Sky (top third) and ground (bottom third) colour statistics of the non-subject region.
type SceneFeature = [f32; 6];

#[derive(Debug, Clone)]
pub struct Checker {
    prototypes: Vec<(Scene, SceneFeature)>,
}

impl Checker {
    /// Learns each scene's sky/ground statistics from `renders_per_scene` background renders.
    pub fn calibrated(world: &World, renders_per_scene: u64) -> Checker {
        let prototypes = Scene::ALL
            .into_iter()
            .map(|scene| {
                let mut sum = [0.0f32; 6];
                for seed in 0..renders_per_scene.max(1) {
                    let image = world.render_background(scene, 0x5CE0_0000 + seed);
                    let background =
                        GrayImage::from_pixel(image.width(), image.height(), Luma([255]));
                    let feature = scene_feature(&image, &background);
                    for (s, f) in sum.iter_mut().zip(feature) {
                        *s += f;
                    }
                }
                (scene, sum.map(|s| s / renders_per_scene.max(1) as f32))
            })
            .collect();
        Checker { prototypes }
    }

    pub fn measure(&self, image: &RgbImage) -> Measurement {
        let subject = subject_mask(image);
        let (width, height) = image.dimensions();
        let count = subject.pixels().filter(|p| p.0[0] > 0).count();
        let subject_fraction = count as f32 / (width * height) as f32;

        let background = invert(&dilate(&subject));
        let feature = scene_feature(image, &background);
        let (scene, scene_distance) = self
            .prototypes
            .iter()
            .map(|(scene, prototype)| (*scene, distance(&feature, prototype)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("one prototype per scene");

        let mut measurement = Measurement {
            scene,
            scene_distance,
            subject,
            subject_fraction,
            colour: None,
            accessory_colour: None,
            pattern: None,
            centroid: None,
            position: None,
        };
        if subject_fraction < MIN_SUBJECT_FRACTION {
            return measurement;
        }
        let centroid = centroid(&measurement.subject);
        measurement.centroid = Some(centroid);
        measurement.position = Some(position_of(centroid.0));

        let interior = erode(&measurement.subject);
        let votes = hue_votes(image, &measurement.subject);
        let (colour, accessory_colour) = main_and_second_colour(&votes);
        measurement.colour = colour;
        measurement.accessory_colour = accessory_colour;
        if let Some(colour) = colour {
            // Two pixels in from every edge, so blended eye, glasses and outline pixels stay out.
            measurement.pattern = Some(pattern_of(image, &erode(&interior), colour));
        }
        measurement
    }

    /// Measures `image` and compares with the attributes it was generated from.
    pub fn check(&self, image: &RgbImage, attrs: &Attributes) -> CheckReport {
        let m = self.measure(image);
        CheckReport {
            background: m.scene == attrs.scene,
            colour: m.colour == Some(attrs.character.colour),
            position: m.position == Some(attrs.action.position),
            pattern: m.pattern == Some(attrs.character.pattern),
            accessory_colour: m.accessory_colour == attrs.character.accessory.colour(),
        }
    }
}

/// Compares the identity attributes measured on two images.
pub fn identity_agreement(a: &Measurement, b: &Measurement) -> IdentityAgreement {
    let measured = a.colour.is_some() && b.colour.is_some();
    IdentityAgreement {
        colour: measured.then(|| a.colour == b.colour),
        pattern: a.pattern.zip(b.pattern).map(|(p, q)| p == q),
        accessory_colour: measured.then(|| a.accessory_colour == b.accessory_colour),
    }
}

/// Fraction of image pairs among `measurements` whose identities fully agree.
pub fn pairwise_agreement(measurements: &[Measurement]) -> f32 {
    let mut pairs = 0usize;
    let mut agreeing = 0usize;
    for i in 0..measurements.len() {
        for j in i + 1..measurements.len() {
            pairs += 1;
            if identity_agreement(&measurements[i], &measurements[j]).all() {
                agreeing += 1;
            }
        }
    }
    if pairs == 0 {
        1.0
    } else {
        agreeing as f32 / pairs as f32
    }
}

/// Gaussian blur then additive Gaussian noise (both in pixels / 0..255 units), to mimic the
/// softness and grain of a small generator's output when validating the checker.
pub fn degrade(image: &RgbImage, blur_sigma: f32, noise_std: f32, seed: u64) -> RgbImage {
    let mut out = if blur_sigma > 0.0 {
        imageproc::filter::gaussian_blur_f32(image, blur_sigma)
    } else {
        image.clone()
    };
    if noise_std > 0.0 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let normal = Normal::new(0.0f32, noise_std).expect("positive standard deviation");
        for pixel in out.pixels_mut() {
            for c in pixel.0.iter_mut() {
                *c = (*c as f32 + normal.sample(&mut rng))
                    .round()
                    .clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Chroma (max - min channel) as a fraction of full scale.
pub fn chroma(rgb: [u8; 3]) -> f32 {
    let max = rgb.iter().copied().max().unwrap_or(0) as f32;
    let min = rgb.iter().copied().min().unwrap_or(0) as f32;
    (max - min) / 255.0
}

/// HSV hue in degrees [0, 360); 0 for greys.
pub fn hue(rgb: [u8; 3]) -> f32 {
    let [r, g, b] = rgb.map(|c| c as f32);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    if delta == 0.0 {
        return 0.0;
    }
    let sector = if max == r {
        ((g - b) / delta).rem_euclid(6.0)
    } else if max == g {
        (b - r) / delta + 2.0
    } else {
        (r - g) / delta + 4.0
    };
    sector * 60.0
}

fn hue_gap(a: f32, b: f32) -> f32 {
    let d = (a - b).abs() % 360.0;
    d.min(360.0 - d)
}

/// The named colour whose hue is nearest. Hue is unchanged by darkening and by mixing with
/// white or grey, so stripe and spot shades and soft edges vote for the body's own colour.
pub fn nearest_colour(rgb: [u8; 3]) -> Colour {
    let h = hue(rgb);
    Colour::ALL
        .into_iter()
        .min_by(|a, b| hue_gap(h, hue(a.rgb())).total_cmp(&hue_gap(h, hue(b.rgb()))))
        .expect("eight colours")
}

/// Saturated pixels, cleaned by a 3x3 majority vote so isolated noisy pixels drop out.
fn subject_mask(image: &RgbImage) -> GrayImage {
    let (w, h) = image.dimensions();
    let raw: Vec<bool> = image
        .pixels()
        .map(|p| chroma(p.0) >= SUBJECT_CHROMA)
        .collect();
    GrayImage::from_fn(w, h, |x, y| {
        let mut votes = 0;
        let mut cells = 0;
        for dy in -1i32..=1 {
            for dx in -1i32..=1 {
                let (nx, ny) = (x as i32 + dx, y as i32 + dy);
                if nx >= 0 && ny >= 0 && nx < w as i32 && ny < h as i32 {
                    cells += 1;
                    if raw[(ny as u32 * w + nx as u32) as usize] {
                        votes += 1;
                    }
                }
            }
        }
        Luma([if votes * 2 > cells { 255 } else { 0 }])
    })
}

/// 3x3 binary morphology: `keep_if_all` true erodes, false dilates.
fn morph(mask: &GrayImage, keep_if_all: bool) -> GrayImage {
    let (w, h) = mask.dimensions();
    GrayImage::from_fn(w, h, |x, y| {
        let mut all = true;
        let mut any = false;
        for dy in -1i32..=1 {
            for dx in -1i32..=1 {
                let nx = (x as i32 + dx).clamp(0, w as i32 - 1) as u32;
                let ny = (y as i32 + dy).clamp(0, h as i32 - 1) as u32;
                let on = mask.get_pixel(nx, ny).0[0] > 0;
                all &= on;
                any |= on;
            }
        }
        Luma([if (keep_if_all && all) || (!keep_if_all && any) {
            255
        } else {
            0
        }])
    })
}

fn erode(mask: &GrayImage) -> GrayImage {
    morph(mask, true)
}

fn dilate(mask: &GrayImage) -> GrayImage {
    morph(mask, false)
}

fn invert(mask: &GrayImage) -> GrayImage {
    GrayImage::from_fn(mask.width(), mask.height(), |x, y| {
        Luma([255 - mask.get_pixel(x, y).0[0]])
    })
}

fn median(values: &mut [u8]) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable();
    values[values.len() / 2] as f32
}

/// Per-channel medians of the allowed pixels in the top and bottom thirds; medians ignore props
/// (sun, trees, windows) that cover a minority of each band. A band fully hidden by the
/// subject falls back to all of its pixels.
fn scene_feature(image: &RgbImage, allowed: &GrayImage) -> SceneFeature {
    let (w, h) = image.dimensions();
    let band = |rows: std::ops::Range<u32>| -> [f32; 3] {
        let collect = |only_allowed: bool| {
            let mut channels: [Vec<u8>; 3] = Default::default();
            for y in rows.clone() {
                for x in 0..w {
                    if !only_allowed || allowed.get_pixel(x, y).0[0] > 0 {
                        let p = image.get_pixel(x, y).0;
                        for c in 0..3 {
                            channels[c].push(p[c]);
                        }
                    }
                }
            }
            channels
        };
        let mut channels = collect(true);
        if channels[0].is_empty() {
            channels = collect(false);
        }
        channels.map(|mut values| median(&mut values))
    };
    let top = band(0..h / 3);
    let bottom = band(h - h / 3..h);
    [top[0], top[1], top[2], bottom[0], bottom[1], bottom[2]]
}

fn distance(a: &SceneFeature, b: &SceneFeature) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

fn centroid(mask: &GrayImage) -> (f32, f32) {
    let (mut sx, mut sy, mut n) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y, p) in mask.enumerate_pixels() {
        if p.0[0] > 0 {
            sx += x as f64 + 0.5;
            sy += y as f64 + 0.5;
            n += 1.0;
        }
    }
    let (w, h) = mask.dimensions();
    ((sx / n / w as f64) as f32, (sy / n / h as f64) as f32)
}

pub fn position_of(centroid_x: f32) -> Position {
    if centroid_x < LEFT_OF {
        Position::Left
    } else if centroid_x > 1.0 - LEFT_OF {
        Position::Right
    } else {
        Position::Centre
    }
}

/// Chroma-weighted votes of the interior pixels for each named colour, in `Colour::ALL` order.
fn hue_votes(image: &RgbImage, interior: &GrayImage) -> [f32; 8] {
    let mut votes = [0.0f32; 8];
    for (x, y, p) in interior.enumerate_pixels() {
        if p.0[0] == 0 {
            continue;
        }
        let rgb = image.get_pixel(x, y).0;
        let c = chroma(rgb);
        if c < VOTE_CHROMA {
            continue;
        }
        let index = Colour::ALL
            .iter()
            .position(|&colour| colour == nearest_colour(rgb))
            .expect("colour is one of ALL");
        votes[index] += c;
    }
    votes
}

fn main_and_second_colour(votes: &[f32; 8]) -> (Option<Colour>, Option<Colour>) {
    let total: f32 = votes.iter().sum();
    if total <= 0.0 {
        return (None, None);
    }
    let mut order: Vec<usize> = (0..8).collect();
    order.sort_by(|&a, &b| votes[b].total_cmp(&votes[a]));
    let main = Colour::ALL[order[0]];
    let second = (votes[order[1]] / total >= ACCESSORY_SHARE).then(|| Colour::ALL[order[1]]);
    (Some(main), second)
}

fn luminance(rgb: [u8; 3]) -> f32 {
    0.299 * rgb[0] as f32 + 0.587 * rgb[1] as f32 + 0.114 * rgb[2] as f32
}

/// Texture statistics of the body region (luminance on the 0..255 scale).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Texture {
    /// Upper-quartile step between the mean luminances of consecutive rows. Averaging a row
    /// first suppresses pixel noise; horizontal stripes make this large.
    pub row_step: f32,
    /// The same between consecutive columns; stripes leave it small.
    pub column_step: f32,
    /// 90th minus 50th percentile of the 3x3-smoothed luminance: light spots raise it.
    pub bright_spread: f32,
}

/// Rows (or columns) need this many body pixels for their mean to count.
const MIN_LINE_PIXELS: usize = 4;
/// Quantile of the absolute steps between consecutive row (column) means.
const PROFILE_QUANTILE: f32 = 0.75;

fn profile_step(sums: &[(f32, usize)]) -> f32 {
    let means: Vec<Option<f32>> = sums
        .iter()
        .map(|&(sum, n)| (n >= MIN_LINE_PIXELS).then(|| sum / n as f32))
        .collect();
    let mut steps: Vec<f32> = means
        .windows(2)
        .filter_map(|pair| Some((pair[1]? - pair[0]?).abs()))
        .collect();
    if steps.is_empty() {
        return 0.0;
    }
    // An upper quantile: narrow stripes change between only about half of the row pairs,
    // while a few edge rows of a plain body must not count.
    steps.sort_by(f32::total_cmp);
    steps[((steps.len() - 1) as f32 * PROFILE_QUANTILE).round() as usize]
}

fn texture(image: &RgbImage, interior: &GrayImage, body: Colour) -> Texture {
    let (w, h) = image.dimensions();
    let on_body: Vec<bool> = interior
        .enumerate_pixels()
        .map(|(x, y, p)| {
            let rgb = image.get_pixel(x, y).0;
            p.0[0] > 0 && chroma(rgb) >= SUBJECT_CHROMA && nearest_colour(rgb) == body
        })
        .collect();
    let at = |x: u32, y: u32| on_body[(y * w + x) as usize];
    let lum = |x: u32, y: u32| luminance(image.get_pixel(x, y).0);
    let mut rows = vec![(0.0f32, 0usize); h as usize];
    let mut columns = vec![(0.0f32, 0usize); w as usize];
    let mut smoothed = Vec::new();
    for y in 0..h {
        for x in 0..w {
            if !at(x, y) {
                continue;
            }
            let l = lum(x, y);
            rows[y as usize].0 += l;
            rows[y as usize].1 += 1;
            columns[x as usize].0 += l;
            columns[x as usize].1 += 1;
            let (mut sum, mut n) = (0.0f32, 0usize);
            for ny in y.saturating_sub(1)..(y + 2).min(h) {
                for nx in x.saturating_sub(1)..(x + 2).min(w) {
                    if at(nx, ny) {
                        sum += lum(nx, ny);
                        n += 1;
                    }
                }
            }
            smoothed.push(sum / n as f32);
        }
    }
    smoothed.sort_by(f32::total_cmp);
    let percentile = |q: f32| {
        smoothed
            .get(((smoothed.len() as f32 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Texture {
        row_step: profile_step(&rows),
        column_step: profile_step(&columns),
        bright_spread: percentile(0.9) - percentile(0.5),
    }
}

/// Stripes: rows differ much more than columns; spots: a bright minority; otherwise plain.
fn pattern_from_texture(texture: &Texture) -> Pattern {
    if texture.row_step >= STRIPE_ROW_STEP && texture.row_step >= STRIPE_RATIO * texture.column_step
    {
        Pattern::Striped
    } else if texture.bright_spread >= SPOT_SPREAD {
        Pattern::Spotted
    } else {
        Pattern::Plain
    }
}

fn pattern_of(image: &RgbImage, interior: &GrayImage, body: Colour) -> Pattern {
    pattern_from_texture(&texture(image, interior, body))
}

/// The texture statistics behind [`Measurement::pattern`], for calibrating the thresholds.
pub fn texture_statistics(image: &RgbImage, measurement: &Measurement) -> Option<Texture> {
    let body = measurement.colour?;
    Some(texture(image, &erode(&erode(&measurement.subject)), body))
}

/// Paints a subject mask over an image (for figures): subject pixels tinted magenta.
pub fn overlay(image: &RgbImage, mask: &GrayImage) -> RgbImage {
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let p = image.get_pixel(x, y).0;
        if mask.get_pixel(x, y).0[0] > 0 {
            Rgb([p[0] / 2 + 127, p[1] / 2, p[2] / 2 + 127])
        } else {
            Rgb(p)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hue_of_primaries_and_grey() {
        assert_eq!(hue([255, 0, 0]), 0.0);
        assert_eq!(hue([0, 255, 0]), 120.0);
        assert_eq!(hue([0, 0, 255]), 240.0);
        assert_eq!(hue([255, 0, 255]), 300.0);
        assert_eq!(hue([128, 128, 128]), 0.0);
        // 128 / 255 of the way from red to yellow: 60 * 128 / 255 = 30.1176...
        assert!((hue([255, 128, 0]) - 30.117_647).abs() < 1e-4);
    }

    #[test]
    fn chroma_of_hand_picked_colours() {
        assert_eq!(chroma([255, 0, 0]), 1.0);
        assert_eq!(chroma([100, 100, 100]), 0.0);
        assert_eq!(chroma([51, 102, 0]), 0.4);
    }

    #[test]
    fn nearest_colour_survives_darkening_and_whitening() {
        for colour in Colour::ALL {
            let rgb = colour.rgb();
            assert_eq!(nearest_colour(rgb), colour);
            assert_eq!(nearest_colour(rgb.map(|c| (c as f32 * 0.6) as u8)), colour);
            let whiter = rgb.map(|c| (c as f32 * 0.5 + 127.0) as u8);
            assert_eq!(nearest_colour(whiter), colour);
        }
    }

    #[test]
    fn hue_gap_wraps_around() {
        assert_eq!(hue_gap(350.0, 10.0), 20.0);
        assert_eq!(hue_gap(10.0, 350.0), 20.0);
        assert_eq!(hue_gap(90.0, 270.0), 180.0);
    }

    #[test]
    fn positions_split_at_the_thresholds() {
        assert_eq!(position_of(0.2), Position::Left);
        assert_eq!(position_of(0.5), Position::Centre);
        assert_eq!(position_of(0.8), Position::Right);
        assert_eq!(position_of(0.38), Position::Left);
        assert_eq!(position_of(0.62), Position::Right);
    }

    #[test]
    fn median_of_odd_and_even_lists() {
        assert_eq!(median(&mut [5, 1, 3]), 3.0);
        assert_eq!(median(&mut [4, 1, 3, 2]), 3.0);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn morphology_grows_and_shrinks_a_square() {
        let mut mask = GrayImage::new(7, 7);
        for y in 2..5 {
            for x in 2..5 {
                mask.put_pixel(x, y, Luma([255]));
            }
        }
        let count = |m: &GrayImage| m.pixels().filter(|p| p.0[0] > 0).count();
        assert_eq!(count(&dilate(&mask)), 25);
        assert_eq!(count(&erode(&mask)), 1);
        assert_eq!(count(&invert(&mask)), 40);
    }

    #[test]
    fn subject_tokens_count_tokens_at_least_30_percent_covered() {
        // 8x4 pixels, 2x2 tokens of 4x2 pixels (8 each): token 0 has 3 subject pixels
        // (37.5 %), token 1 has 2 (25 %), token 3 all 8, token 2 none.
        let mut subject = GrayImage::new(8, 4);
        for (x, y) in [(0, 0), (1, 0), (2, 1), (4, 0), (5, 1)] {
            subject.put_pixel(x, y, Luma([255]));
        }
        for y in 2..4 {
            for x in 4..8 {
                subject.put_pixel(x, y, Luma([255]));
            }
        }
        let m = Measurement {
            scene: Scene::Beach,
            scene_distance: 0.0,
            subject,
            subject_fraction: 0.0,
            colour: None,
            accessory_colour: None,
            pattern: None,
            centroid: None,
            position: None,
        };
        assert_eq!(m.subject_tokens(2, 2), vec![true, false, false, true]);
    }

    #[test]
    fn token_iou_hand_checked() {
        let a = [true, true, false, false];
        let b = [false, true, true, false];
        // One token in both, three in either.
        assert!((token_iou(&a, &b) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(token_iou(&[false; 4], &[false; 4]), 1.0);
        assert_eq!(token_iou(&a, &a), 1.0);
    }

    #[test]
    fn subject_mask_drops_isolated_saturated_pixels() {
        let mut image = RgbImage::from_pixel(9, 9, Rgb([120, 120, 120]));
        image.put_pixel(1, 1, Rgb([255, 0, 0]));
        for y in 4..8 {
            for x in 4..8 {
                image.put_pixel(x, y, Rgb([0, 0, 255]));
            }
        }
        let mask = subject_mask(&image);
        assert_eq!(mask.get_pixel(1, 1).0, [0]);
        assert_eq!(mask.get_pixel(5, 5).0, [255]);
        assert_eq!(centroid(&mask), (6.0 / 9.0, 6.0 / 9.0));
    }

    #[test]
    fn pattern_thresholds() {
        let texture = |row_step, column_step, bright_spread| Texture {
            row_step,
            column_step,
            bright_spread,
        };
        assert_eq!(
            pattern_from_texture(&texture(1.0, 1.0, 1.0)),
            Pattern::Plain
        );
        assert_eq!(
            pattern_from_texture(&texture(20.0, 4.0, 30.0)),
            Pattern::Striped
        );
        assert_eq!(
            pattern_from_texture(&texture(20.0, 15.0, 30.0)),
            Pattern::Spotted
        );
        assert_eq!(
            pattern_from_texture(&texture(3.0, 1.0, 2.0)),
            Pattern::Plain
        );
    }

    #[test]
    fn profile_step_skips_thin_lines() {
        // Means 10, 20, (skipped), 40, 10, 16: steps 10, 30, 6; upper quartile 30.
        let sums = [
            (40.0, 4),
            (80.0, 4),
            (100.0, 1),
            (160.0, 4),
            (40.0, 4),
            (64.0, 4),
        ];
        assert_eq!(profile_step(&sums), 30.0);
        assert_eq!(profile_step(&[]), 0.0);
    }

    #[test]
    fn second_colour_needs_its_share() {
        let mut votes = [0.0f32; 8];
        votes[0] = 90.0;
        votes[5] = 10.0;
        assert_eq!(
            main_and_second_colour(&votes),
            (Some(Colour::Red), Some(Colour::Blue))
        );
        votes[5] = 2.0;
        assert_eq!(main_and_second_colour(&votes), (Some(Colour::Red), None));
        assert_eq!(main_and_second_colour(&[0.0; 8]), (None, None));
    }
}
