//! The procedural world the built-in model is trained on: scenes, characters and actions,
//! rendered as small RGB images with the subject's ground-truth mask and a three-part caption.
//!
//! Everything is deterministic from an explicit seed (ChaCha8), so a sample can be regenerated
//! from its seed alone. Shapes are drawn at `supersample` times the output size and box-filtered
//! down, which anti-aliases edges and gives the mask soft (coverage) borders.
//!
//! Colour design: backgrounds and props are muted (chroma <= 0.22 of full scale) and every
//! character colour is vivid (chroma >= 0.55, and >= 0.33 for pattern shades), so the subject can
//! be found in any image by saturation alone, including in blurry generated images.

use image::{GrayImage, Luma, Rgb, RgbImage};
use imageproc::drawing::{
    draw_filled_circle_mut, draw_filled_ellipse_mut, draw_filled_rect_mut, draw_polygon_mut,
};
use imageproc::point::Point;
use imageproc::rect::Rect;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::caption::{Caption, caption_for};

/// The setting behind the character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scene {
    Meadow,
    Beach,
    CityStreet,
    Forest,
    Bedroom,
    NightSky,
    Desert,
    SnowField,
}

/// Nominal colours of a scene; the upper part is sky (or wall), the lower part ground (or floor).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScenePalette {
    pub sky: [u8; 3],
    pub ground: [u8; 3],
    /// Height of the horizon as a fraction of the image height from the top.
    pub horizon: f32,
}

impl Scene {
    pub const ALL: [Scene; 8] = [
        Scene::Meadow,
        Scene::Beach,
        Scene::CityStreet,
        Scene::Forest,
        Scene::Bedroom,
        Scene::NightSky,
        Scene::Desert,
        Scene::SnowField,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scene::Meadow => "meadow",
            Scene::Beach => "beach",
            Scene::CityStreet => "city street",
            Scene::Forest => "forest",
            Scene::Bedroom => "bedroom",
            Scene::NightSky => "night sky",
            Scene::Desert => "desert",
            Scene::SnowField => "snow field",
        }
    }

    pub fn palette(self) -> ScenePalette {
        let (sky, ground, horizon) = match self {
            Scene::Meadow => ([170, 195, 225], [125, 150, 100], 0.6),
            Scene::Beach => ([180, 212, 232], [228, 212, 175], 0.62),
            Scene::CityStreet => ([185, 195, 210], [100, 100, 106], 0.62),
            Scene::Forest => ([140, 160, 140], [95, 85, 62], 0.62),
            Scene::Bedroom => ([225, 205, 180], [150, 120, 95], 0.64),
            Scene::NightSky => ([25, 30, 65], [48, 52, 66], 0.64),
            Scene::Desert => ([235, 215, 180], [205, 180, 150], 0.6),
            Scene::SnowField => ([195, 210, 225], [240, 243, 248], 0.6),
        };
        ScenePalette {
            sky,
            ground,
            horizon,
        }
    }
}

/// The character's main colour. Vivid hues, none of which occurs in a background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Colour {
    Red,
    Orange,
    Yellow,
    Green,
    Teal,
    Blue,
    Purple,
    Pink,
}

impl Colour {
    pub const ALL: [Colour; 8] = [
        Colour::Red,
        Colour::Orange,
        Colour::Yellow,
        Colour::Green,
        Colour::Teal,
        Colour::Blue,
        Colour::Purple,
        Colour::Pink,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Orange => "orange",
            Colour::Yellow => "yellow",
            Colour::Green => "green",
            Colour::Teal => "teal",
            Colour::Blue => "blue",
            Colour::Purple => "purple",
            Colour::Pink => "pink",
        }
    }

    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 40, 40],
            Colour::Orange => [245, 140, 20],
            Colour::Yellow => [240, 220, 30],
            Colour::Green => [30, 185, 60],
            Colour::Teal => [20, 180, 170],
            Colour::Blue => [40, 90, 230],
            Colour::Purple => [145, 50, 215],
            Colour::Pink => [245, 90, 175],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Shape {
    Round,
    Tall,
    Square,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Round, Shape::Tall, Shape::Square];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Pattern {
    Plain,
    Striped,
    Spotted,
}

impl Pattern {
    pub const ALL: [Pattern; 3] = [Pattern::Plain, Pattern::Striped, Pattern::Spotted];
}

/// What the character wears; hats and scarves come in one of the named colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Accessory {
    None,
    Hat(Colour),
    Scarf(Colour),
    Glasses,
}

impl Accessory {
    /// The colour of a hat or scarf.
    pub fn colour(self) -> Option<Colour> {
        match self {
            Accessory::Hat(colour) | Accessory::Scarf(colour) => Some(colour),
            Accessory::None | Accessory::Glasses => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Eyes {
    Dots,
    Big,
    Sleepy,
}

impl Eyes {
    pub const ALL: [Eyes; 3] = [Eyes::Dots, Eyes::Big, Eyes::Sleepy];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Position {
    Left,
    Centre,
    Right,
}

impl Position {
    pub const ALL: [Position; 3] = [Position::Left, Position::Centre, Position::Right];

    /// Horizontal centre of the character as a fraction of the image width. Close-ups sit
    /// nearer the middle so that the bigger body stays inside the frame.
    pub fn centre_x(self, framing: Framing) -> f32 {
        match (self, framing) {
            (Position::Left, Framing::Wide) => 0.2,
            (Position::Right, Framing::Wide) => 0.8,
            (Position::Left, Framing::CloseUp) => 0.28,
            (Position::Right, Framing::CloseUp) => 0.72,
            (Position::Centre, _) => 0.5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Framing {
    CloseUp,
    Wide,
}

impl Framing {
    pub const ALL: [Framing; 2] = [Framing::CloseUp, Framing::Wide];

    /// Body size as a fraction of the image height.
    pub fn body_size(self) -> f32 {
        match self {
            Framing::CloseUp => 0.52,
            Framing::Wide => 0.3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Pose {
    Standing,
    Jumping,
    Sitting,
    Waving,
}

impl Pose {
    pub const ALL: [Pose; 4] = [Pose::Standing, Pose::Jumping, Pose::Sitting, Pose::Waving];
}

/// Who the character is: what must stay the same across the frames of a story.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Character {
    pub shape: Shape,
    pub colour: Colour,
    pub pattern: Pattern,
    pub accessory: Accessory,
    pub eyes: Eyes,
}

/// What the character does in one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Action {
    pub position: Position,
    pub framing: Framing,
    pub pose: Pose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attributes {
    pub scene: Scene,
    pub character: Character,
    pub action: Action,
}

impl Character {
    pub fn random(rng: &mut impl Rng) -> Character {
        let colour = *Colour::ALL.choose(rng).expect("non-empty");
        let accessory = match rng.random_range(0..4) {
            0 => Accessory::None,
            1 => Accessory::Hat(other_colour(colour, rng)),
            2 => Accessory::Scarf(other_colour(colour, rng)),
            _ => Accessory::Glasses,
        };
        Character {
            shape: *Shape::ALL.choose(rng).expect("non-empty"),
            colour,
            pattern: *Pattern::ALL.choose(rng).expect("non-empty"),
            accessory,
            eyes: *Eyes::ALL.choose(rng).expect("non-empty"),
        }
    }
}

impl Action {
    pub fn random(rng: &mut impl Rng) -> Action {
        Action {
            position: *Position::ALL.choose(rng).expect("non-empty"),
            framing: *Framing::ALL.choose(rng).expect("non-empty"),
            pose: *Pose::ALL.choose(rng).expect("non-empty"),
        }
    }
}

impl Attributes {
    pub fn random(rng: &mut impl Rng) -> Attributes {
        Attributes {
            scene: *Scene::ALL.choose(rng).expect("non-empty"),
            character: Character::random(rng),
            action: Action::random(rng),
        }
    }
}

/// An accessory colour different from the body colour, so that it stays visible.
fn other_colour(body: Colour, rng: &mut impl Rng) -> Colour {
    let others: Vec<Colour> = Colour::ALL.into_iter().filter(|&c| c != body).collect();
    *others.choose(rng).expect("seven other colours")
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorldConfig {
    /// Output width and height in pixels.
    pub image_size: u32,
    /// Drawing resolution factor; the image is drawn at `image_size * supersample` and box-filtered.
    pub supersample: u32,
    /// Fraction of captions whose character part is true but incomplete.
    pub under_specified_fraction: f64,
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            image_size: 64,
            supersample: 4,
            under_specified_fraction: 0.15,
        }
    }
}

/// One training example.
#[derive(Debug, Clone)]
pub struct Sample {
    pub seed: u64,
    pub image: RgbImage,
    /// Coverage of the character (body, limbs, accessory) per pixel, 0..=255.
    pub mask: GrayImage,
    pub attrs: Attributes,
    pub caption: Caption,
}

#[derive(Debug, Clone)]
pub struct World {
    config: WorldConfig,
}

impl World {
    pub fn new(config: WorldConfig) -> World {
        World { config }
    }

    pub fn config(&self) -> &WorldConfig {
        &self.config
    }

    /// Draws random attributes, a caption and the image, all from `seed`.
    pub fn sample(&self, seed: u64) -> Sample {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let attrs = Attributes::random(&mut rng);
        let under_specified = rng.random_bool(self.config.under_specified_fraction);
        let caption = caption_for(&attrs, under_specified, &mut rng);
        let render_seed = rng.random::<u64>();
        let (image, mask) = self.render(&attrs, render_seed);
        Sample {
            seed,
            image,
            mask,
            attrs,
            caption,
        }
    }

    /// Renders chosen attributes; `seed` only places props and varies small details.
    pub fn render(&self, attrs: &Attributes, seed: u64) -> (RgbImage, GrayImage) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut canvas = Canvas::new(self.config.image_size * self.config.supersample);
        draw_scene(&mut canvas, attrs.scene, &mut rng);
        draw_character(&mut canvas, &attrs.character, &attrs.action, &mut rng);
        canvas.downsample(self.config.supersample)
    }

    /// Renders a scene without any character (used to calibrate the checker).
    pub fn render_background(&self, scene: Scene, seed: u64) -> RgbImage {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut canvas = Canvas::new(self.config.image_size * self.config.supersample);
        draw_scene(&mut canvas, scene, &mut rng);
        canvas.downsample(self.config.supersample).0
    }
}

/// Drawing surface at supersampled resolution; coordinates passed in are fractions of the side.
struct Canvas {
    image: RgbImage,
    mask: GrayImage,
    side: f32,
}

const SUBJECT: Luma<u8> = Luma([255]);

impl Canvas {
    fn new(side: u32) -> Canvas {
        Canvas {
            image: RgbImage::new(side, side),
            mask: GrayImage::new(side, side),
            side: side as f32,
        }
    }

    fn px(&self, fraction: f32) -> i32 {
        (fraction * self.side).round() as i32
    }

    fn rect(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, colour: [u8; 3], subject: bool) {
        let (left, top) = (self.px(x0), self.px(y0));
        let width = (self.px(x1) - left).max(1) as u32;
        let height = (self.px(y1) - top).max(1) as u32;
        let rect = Rect::at(left, top).of_size(width, height);
        draw_filled_rect_mut(&mut self.image, rect, Rgb(colour));
        if subject {
            draw_filled_rect_mut(&mut self.mask, rect, SUBJECT);
        }
    }

    fn ellipse(&mut self, cx: f32, cy: f32, rx: f32, ry: f32, colour: [u8; 3], subject: bool) {
        let centre = (self.px(cx), self.px(cy));
        let (rx, ry) = (self.px(rx).max(1), self.px(ry).max(1));
        draw_filled_ellipse_mut(&mut self.image, centre, rx, ry, Rgb(colour));
        if subject {
            draw_filled_ellipse_mut(&mut self.mask, centre, rx, ry, SUBJECT);
        }
    }

    fn circle(&mut self, cx: f32, cy: f32, r: f32, colour: [u8; 3], subject: bool) {
        let centre = (self.px(cx), self.px(cy));
        let r = self.px(r).max(1);
        draw_filled_circle_mut(&mut self.image, centre, r, Rgb(colour));
        if subject {
            draw_filled_circle_mut(&mut self.mask, centre, r, SUBJECT);
        }
    }

    fn polygon(&mut self, points: &[(f32, f32)], colour: [u8; 3], subject: bool) {
        let mut poly: Vec<Point<i32>> = points
            .iter()
            .map(|&(x, y)| Point::new(self.px(x), self.px(y)))
            .collect();
        poly.dedup();
        if poly.len() < 3 || poly.first() == poly.last() {
            return;
        }
        draw_polygon_mut(&mut self.image, &poly, Rgb(colour));
        if subject {
            draw_polygon_mut(&mut self.mask, &poly, SUBJECT);
        }
    }

    /// A limb: a quad of the given width between two points, with round ends.
    fn limb(&mut self, from: (f32, f32), to: (f32, f32), width: f32, colour: [u8; 3]) {
        let (dx, dy) = (to.0 - from.0, to.1 - from.1);
        let length = (dx * dx + dy * dy).sqrt().max(1e-6);
        let (nx, ny) = (-dy / length * width / 2.0, dx / length * width / 2.0);
        self.polygon(
            &[
                (from.0 + nx, from.1 + ny),
                (to.0 + nx, to.1 + ny),
                (to.0 - nx, to.1 - ny),
                (from.0 - nx, from.1 - ny),
            ],
            colour,
            true,
        );
        self.circle(from.0, from.1, width / 2.0, colour, true);
        self.circle(to.0, to.1, width / 2.0, colour, true);
    }

    /// Paints every pixel whose centre satisfies `inside` (fraction coordinates) with `paint`.
    fn paint_where(
        &mut self,
        bounds: (f32, f32, f32, f32),
        inside: impl Fn(f32, f32) -> Option<[u8; 3]>,
        subject: bool,
    ) {
        let (x0, y0, x1, y1) = bounds;
        let max = self.side as i32 - 1;
        for py in self.px(y0).clamp(0, max)..=self.px(y1).clamp(0, max) {
            for px in self.px(x0).clamp(0, max)..=self.px(x1).clamp(0, max) {
                let (fx, fy) = ((px as f32 + 0.5) / self.side, (py as f32 + 0.5) / self.side);
                if let Some(colour) = inside(fx, fy) {
                    self.image.put_pixel(px as u32, py as u32, Rgb(colour));
                    if subject {
                        self.mask.put_pixel(px as u32, py as u32, SUBJECT);
                    }
                }
            }
        }
    }

    /// Box filter by `factor`: exact mean of each factor x factor block.
    fn downsample(&self, factor: u32) -> (RgbImage, GrayImage) {
        let out = self.image.width() / factor;
        let area = factor * factor;
        let mut image = RgbImage::new(out, out);
        let mut mask = GrayImage::new(out, out);
        for y in 0..out {
            for x in 0..out {
                let mut rgb = [0u32; 3];
                let mut cover = 0u32;
                for sy in 0..factor {
                    for sx in 0..factor {
                        let p = self.image.get_pixel(x * factor + sx, y * factor + sy).0;
                        for c in 0..3 {
                            rgb[c] += p[c] as u32;
                        }
                        cover += self.mask.get_pixel(x * factor + sx, y * factor + sy).0[0] as u32;
                    }
                }
                let round = |sum: u32| ((sum + area / 2) / area) as u8;
                image.put_pixel(x, y, Rgb([round(rgb[0]), round(rgb[1]), round(rgb[2])]));
                mask.put_pixel(x, y, Luma([round(cover)]));
            }
        }
        (image, mask)
    }
}

/// Adds the same offset to all channels: varies brightness without changing chroma.
fn brighten(colour: [u8; 3], offset: i32) -> [u8; 3] {
    colour.map(|c| (c as i32 + offset).clamp(0, 255) as u8)
}

/// Linear mix of `colour` towards `target` by `amount` in [0, 1].
fn mix(colour: [u8; 3], target: [u8; 3], amount: f32) -> [u8; 3] {
    let mut out = [0u8; 3];
    for c in 0..3 {
        out[c] = (colour[c] as f32 * (1.0 - amount) + target[c] as f32 * amount).round() as u8;
    }
    out
}

const WHITE: [u8; 3] = [250, 250, 250];
const BLACK: [u8; 3] = [20, 20, 24];
const CLOUD: [u8; 3] = [245, 247, 250];
const SUN: [u8; 3] = [250, 240, 195];
const TRUNK: [u8; 3] = [105, 82, 60];
const FOLIAGE: [u8; 3] = [70, 105, 72];

fn draw_scene(canvas: &mut Canvas, scene: Scene, rng: &mut ChaCha8Rng) {
    let palette = scene.palette();
    let offset = rng.random_range(-8..=8);
    let sky = brighten(palette.sky, offset);
    let ground = brighten(palette.ground, offset);
    let h = palette.horizon;
    canvas.rect(0.0, 0.0, 1.0, h, sky, false);
    canvas.rect(0.0, h, 1.0, 1.0, ground, false);
    match scene {
        Scene::Meadow => {
            draw_sun(canvas, rng);
            draw_clouds(canvas, rng, 1..=2);
            for _ in 0..rng.random_range(1..=2) {
                let x = rng.random_range(0.05..0.95);
                draw_tree(canvas, x, h + 0.02, 0.1);
            }
            for _ in 0..rng.random_range(4..=8) {
                let (x, y) = (rng.random_range(0.0..1.0), rng.random_range(h + 0.03..0.98));
                canvas.rect(x, y, x + 0.012, y + 0.03, brighten(ground, -25), false);
            }
        }
        Scene::Beach => {
            canvas.rect(0.0, h - 0.09, 1.0, h, [130, 165, 185], false);
            draw_sun(canvas, rng);
            draw_clouds(canvas, rng, 0..=1);
            for _ in 0..rng.random_range(3..=6) {
                let (x, y) = (rng.random_range(0.0..1.0), rng.random_range(h + 0.03..0.98));
                canvas.ellipse(x, y, 0.02, 0.008, brighten(ground, -20), false);
            }
        }
        Scene::CityStreet => {
            let mut x = rng.random_range(-0.1..0.0);
            let greys = [
                [140, 135, 130],
                [120, 122, 132],
                [160, 150, 142],
                [128, 120, 118],
            ];
            while x < 1.0 {
                let width = rng.random_range(0.16..0.3);
                let top = rng.random_range(0.3..0.45);
                let colour = *greys.choose(rng).expect("non-empty");
                canvas.rect(x, top, x + width - 0.01, h, colour, false);
                let mut wy = top + 0.04;
                while wy < h - 0.08 {
                    let mut wx = x + 0.03;
                    while wx < x + width - 0.06 {
                        canvas.rect(wx, wy, wx + 0.035, wy + 0.045, [205, 205, 180], false);
                        wx += 0.07;
                    }
                    wy += 0.08;
                }
                x += width;
            }
            canvas.rect(0.0, h, 1.0, h + 0.04, [150, 150, 150], false);
            let dash_y = (h + 1.0) / 2.0 + 0.05;
            let mut dx = rng.random_range(0.0..0.1);
            while dx < 1.0 {
                canvas.rect(dx, dash_y, dx + 0.1, dash_y + 0.015, [215, 215, 205], false);
                dx += 0.2;
            }
        }
        Scene::Forest => {
            for _ in 0..rng.random_range(4..=6) {
                let x = rng.random_range(0.0..1.0);
                let width = rng.random_range(0.04..0.07);
                canvas.rect(
                    x - width / 2.0,
                    0.0,
                    x + width / 2.0,
                    h + 0.04,
                    TRUNK,
                    false,
                );
            }
            for _ in 0..rng.random_range(5..=8) {
                let (x, y) = (rng.random_range(0.0..1.0), rng.random_range(0.0..0.2));
                canvas.circle(x, y, rng.random_range(0.08..0.13), FOLIAGE, false);
            }
            for _ in 0..rng.random_range(2..=4) {
                let (x, y) = (rng.random_range(0.0..1.0), rng.random_range(h + 0.03..0.95));
                canvas.ellipse(x, y, 0.04, 0.015, [80, 100, 70], false);
            }
        }
        Scene::Bedroom => {
            let window_x = rng.random_range(0.08..0.7);
            canvas.rect(window_x, 0.1, window_x + 0.22, 0.36, [235, 235, 230], false);
            canvas.rect(
                window_x + 0.02,
                0.12,
                window_x + 0.2,
                0.34,
                [185, 205, 220],
                false,
            );
            canvas.rect(
                window_x + 0.105,
                0.12,
                window_x + 0.115,
                0.34,
                [235, 235, 230],
                false,
            );
            let bed_x = if rng.random_bool(0.5) { 0.02 } else { 0.56 };
            canvas.rect(
                bed_x,
                h - 0.16,
                bed_x + 0.42,
                h + 0.08,
                [120, 92, 72],
                false,
            );
            canvas.rect(
                bed_x + 0.02,
                h - 0.12,
                bed_x + 0.4,
                h + 0.03,
                [175, 160, 165],
                false,
            );
            canvas.rect(
                bed_x + 0.03,
                h - 0.15,
                bed_x + 0.13,
                h - 0.1,
                [240, 238, 232],
                false,
            );
            for i in 0..6 {
                let y = h + 0.06 * i as f32 + 0.04;
                canvas.rect(0.0, y, 1.0, y + 0.005, brighten(ground, -18), false);
            }
        }
        Scene::NightSky => {
            for _ in 0..rng.random_range(12..=20) {
                let (x, y) = (rng.random_range(0.0..1.0), rng.random_range(0.0..h - 0.05));
                canvas.circle(x, y, 0.008, [235, 235, 225], false);
            }
            let (mx, my) = (rng.random_range(0.15..0.85), rng.random_range(0.1..0.2));
            canvas.circle(mx, my, 0.07, [235, 235, 210], false);
            canvas.circle(mx + 0.035, my - 0.02, 0.06, sky, false);
            for _ in 0..rng.random_range(1..=3) {
                let x = rng.random_range(0.0..1.0);
                canvas.ellipse(x, h, 0.18, 0.06, brighten(ground, -12), false);
            }
        }
        Scene::Desert => {
            draw_sun(canvas, rng);
            for _ in 0..rng.random_range(1..=2) {
                let x = rng.random_range(0.0..1.0);
                canvas.ellipse(x, h + 0.01, 0.25, 0.05, brighten(ground, 12), false);
            }
            for _ in 0..rng.random_range(1..=2) {
                let x = rng.random_range(0.05..0.95);
                draw_cactus(canvas, x, h + 0.06);
            }
        }
        Scene::SnowField => {
            draw_clouds(canvas, rng, 1..=2);
            for _ in 0..rng.random_range(1..=3) {
                let x = rng.random_range(0.05..0.95);
                let base = h + 0.02;
                canvas.rect(x - 0.012, base - 0.05, x + 0.012, base, TRUNK, false);
                canvas.polygon(
                    &[
                        (x - 0.08, base - 0.04),
                        (x + 0.08, base - 0.04),
                        (x, base - 0.3),
                    ],
                    [75, 105, 90],
                    false,
                );
            }
            for _ in 0..rng.random_range(10..=18) {
                let (x, y) = (rng.random_range(0.0..1.0), rng.random_range(0.0..h));
                canvas.circle(x, y, 0.007, WHITE, false);
            }
        }
    }
}

fn draw_sun(canvas: &mut Canvas, rng: &mut ChaCha8Rng) {
    let (x, y) = (rng.random_range(0.1..0.9), rng.random_range(0.08..0.16));
    canvas.circle(x, y, 0.065, SUN, false);
}

fn draw_clouds(canvas: &mut Canvas, rng: &mut ChaCha8Rng, count: std::ops::RangeInclusive<u32>) {
    for _ in 0..rng.random_range(count) {
        let (x, y) = (rng.random_range(0.0..1.0), rng.random_range(0.06..0.24));
        canvas.ellipse(x, y, 0.09, 0.03, CLOUD, false);
        canvas.ellipse(x + 0.04, y - 0.02, 0.05, 0.03, CLOUD, false);
    }
}

fn draw_tree(canvas: &mut Canvas, x: f32, base: f32, size: f32) {
    canvas.rect(
        x - 0.2 * size,
        base - 1.6 * size,
        x + 0.2 * size,
        base,
        TRUNK,
        false,
    );
    canvas.circle(x, base - 1.8 * size, size, FOLIAGE, false);
}

fn draw_cactus(canvas: &mut Canvas, x: f32, base: f32) {
    let colour = [105, 140, 95];
    canvas.rect(x - 0.02, base - 0.22, x + 0.02, base, colour, false);
    canvas.circle(x, base - 0.22, 0.02, colour, false);
    canvas.rect(x - 0.07, base - 0.15, x - 0.02, base - 0.12, colour, false);
    canvas.rect(x - 0.07, base - 0.2, x - 0.045, base - 0.12, colour, false);
    canvas.rect(x + 0.02, base - 0.12, x + 0.06, base - 0.09, colour, false);
    canvas.rect(x + 0.035, base - 0.17, x + 0.06, base - 0.09, colour, false);
}

/// Body geometry in fractions of the image side.
#[derive(Debug, Clone, Copy)]
struct Body {
    shape: Shape,
    cx: f32,
    cy: f32,
    half_width: f32,
    half_height: f32,
}

impl Body {
    fn contains(&self, x: f32, y: f32) -> bool {
        let (u, v) = (
            (x - self.cx) / self.half_width,
            (y - self.cy) / self.half_height,
        );
        match self.shape {
            Shape::Round | Shape::Tall => u * u + v * v <= 1.0,
            Shape::Square => u.abs() <= 1.0 && v.abs() <= 1.0,
        }
    }

    fn top(&self) -> f32 {
        self.cy - self.half_height
    }

    fn bottom(&self) -> f32 {
        self.cy + self.half_height
    }

    fn bounds(&self) -> (f32, f32, f32, f32) {
        (
            self.cx - self.half_width,
            self.top(),
            self.cx + self.half_width,
            self.bottom(),
        )
    }
}

fn draw_character(
    canvas: &mut Canvas,
    character: &Character,
    action: &Action,
    rng: &mut ChaCha8Rng,
) {
    let s = action.framing.body_size();
    let cx = action.position.centre_x(action.framing) + rng.random_range(-0.015..0.015);
    // Feet rest on this line; close-ups are cut by the bottom edge like a real close shot.
    let baseline = match action.framing {
        Framing::Wide => 0.86,
        Framing::CloseUp => 1.0,
    };
    let (half_width, half_height) = match character.shape {
        Shape::Round => (0.5 * s, 0.5 * s),
        Shape::Tall => (0.31 * s, 0.6 * s),
        Shape::Square => (0.45 * s, 0.45 * s),
    };
    let leg = 0.18 * s;
    let bottom = match action.pose {
        Pose::Standing | Pose::Waving => baseline - leg,
        Pose::Jumping => baseline - leg - 0.22 * s,
        Pose::Sitting => baseline - 0.05 * s,
    };
    let body = Body {
        shape: character.shape,
        cx,
        cy: bottom - half_height,
        half_width,
        half_height,
    };
    let colour = character.colour.rgb();
    let limb_width = 0.1 * s;

    // Legs first so the body overlaps their tops.
    let hip_x = 0.45 * half_width;
    for side in [-1.0f32, 1.0] {
        let hip = (cx + side * hip_x, bottom - 0.04 * s);
        let foot = match action.pose {
            Pose::Standing | Pose::Waving => (cx + side * hip_x, baseline - limb_width / 2.0),
            Pose::Jumping => (cx + side * (hip_x + 0.08 * s), bottom + 0.1 * s),
            Pose::Sitting => (cx + side * (hip_x + 0.16 * s), bottom + 0.01 * s),
        };
        canvas.limb(hip, foot, limb_width, colour);
    }
    // Arms.
    let shoulder_y = body.cy + 0.05 * s;
    for side in [-1.0f32, 1.0] {
        let shoulder = (cx + side * 0.85 * half_width, shoulder_y);
        let hand = match (action.pose, side > 0.0) {
            (Pose::Standing, _) => (cx + side * (half_width + 0.1 * s), shoulder_y + 0.28 * s),
            (Pose::Jumping, _) => (cx + side * (half_width + 0.2 * s), shoulder_y - 0.42 * s),
            (Pose::Sitting, _) => (cx + side * (half_width + 0.07 * s), shoulder_y + 0.24 * s),
            (Pose::Waving, true) => (cx + half_width + 0.2 * s, shoulder_y - 0.48 * s),
            (Pose::Waving, false) => (cx - half_width - 0.1 * s, shoulder_y + 0.28 * s),
        };
        canvas.limb(shoulder, hand, limb_width, colour);
    }

    draw_body(canvas, &body, character, s, rng);
    if let Accessory::Scarf(scarf) = character.accessory {
        let (y0, y1) = (
            body.top() + 0.42 * 2.0 * half_height,
            body.top() + 0.52 * 2.0 * half_height,
        );
        let scarf_rgb = scarf.rgb();
        canvas.paint_where(
            body.bounds(),
            |x, y| (body.contains(x, y) && y >= y0 && y <= y1).then_some(scarf_rgb),
            true,
        );
        canvas.rect(
            cx + 0.1 * s,
            y1 - 0.01 * s,
            cx + 0.2 * s,
            y1 + 0.22 * s,
            scarf_rgb,
            true,
        );
    }
    draw_face(canvas, &body, character, s);
    if let Accessory::Hat(hat) = character.accessory {
        let top = body.top() + 0.02 * s;
        canvas.rect(
            cx - 0.3 * s,
            top - 0.05 * s,
            cx + 0.3 * s,
            top + 0.01 * s,
            hat.rgb(),
            true,
        );
        canvas.rect(
            cx - 0.18 * s,
            top - 0.3 * s,
            cx + 0.18 * s,
            top - 0.04 * s,
            hat.rgb(),
            true,
        );
    }
}

/// Body fill with its pattern: stripes a darker shade, spots a lighter one (same hue).
fn draw_body(
    canvas: &mut Canvas,
    body: &Body,
    character: &Character,
    s: f32,
    rng: &mut ChaCha8Rng,
) {
    let base = character.colour.rgb();
    let dark = base.map(|c| (c as f32 * 0.68).round() as u8);
    let light = mix(base, [255, 255, 255], 0.42);
    let period = 0.24 * s;
    let phase = rng.random_range(0.0..period);
    let spots: Vec<(f32, f32)> = (0..rng.random_range(5..=7))
        .map(|_| {
            (
                body.cx + rng.random_range(-0.8..0.8) * body.half_width,
                body.cy + rng.random_range(-0.8..0.8) * body.half_height,
            )
        })
        .collect();
    let spot_radius = 0.085 * s;
    let pattern = character.pattern;
    let top = body.top();
    canvas.paint_where(
        body.bounds(),
        |x, y| {
            if !body.contains(x, y) {
                return None;
            }
            Some(match pattern {
                Pattern::Plain => base,
                Pattern::Striped => {
                    if ((y - top + phase) / (period / 2.0)).floor() as i64 % 2 == 1 {
                        dark
                    } else {
                        base
                    }
                }
                Pattern::Spotted => {
                    let in_spot = spots.iter().any(|&(sx, sy)| {
                        (x - sx).powi(2) + (y - sy).powi(2) <= spot_radius * spot_radius
                    });
                    if in_spot { light } else { base }
                }
            })
        },
        true,
    );
}

fn draw_face(canvas: &mut Canvas, body: &Body, character: &Character, s: f32) {
    let eye_y = body.top()
        + match character.shape {
            Shape::Tall => 0.24,
            Shape::Round | Shape::Square => 0.32,
        } * 2.0
            * body.half_height;
    let eye_dx = 0.45 * body.half_width.min(0.4 * s);
    if character.accessory == Accessory::Glasses {
        for side in [-1.0f32, 1.0] {
            canvas.circle(body.cx + side * eye_dx, eye_y, 0.13 * s, BLACK, true);
            canvas.circle(
                body.cx + side * eye_dx,
                eye_y,
                0.1 * s,
                [205, 208, 215],
                true,
            );
        }
        canvas.rect(
            body.cx - eye_dx,
            eye_y - 0.015 * s,
            body.cx + eye_dx,
            eye_y + 0.015 * s,
            BLACK,
            true,
        );
    }
    for side in [-1.0f32, 1.0] {
        let x = body.cx + side * eye_dx;
        match character.eyes {
            Eyes::Dots => canvas.circle(x, eye_y, 0.045 * s, BLACK, true),
            Eyes::Big => {
                canvas.circle(x, eye_y, 0.085 * s, WHITE, true);
                canvas.circle(x, eye_y + 0.01 * s, 0.045 * s, BLACK, true);
            }
            Eyes::Sleepy => canvas.rect(
                x - 0.07 * s,
                eye_y,
                x + 0.07 * s,
                eye_y + 0.025 * s,
                BLACK,
                true,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chroma(rgb: [u8; 3]) -> f32 {
        let max = *rgb.iter().max().expect("three channels") as f32;
        let min = *rgb.iter().min().expect("three channels") as f32;
        (max - min) / 255.0
    }

    #[test]
    fn backgrounds_are_muted_and_characters_vivid() {
        for scene in Scene::ALL {
            let palette = scene.palette();
            assert!(chroma(palette.sky) <= 0.22, "{scene:?} sky");
            assert!(chroma(palette.ground) <= 0.22, "{scene:?} ground");
        }
        for colour in Colour::ALL {
            let rgb = colour.rgb();
            assert!(chroma(rgb) >= 0.55, "{colour:?}");
            assert!(chroma(rgb.map(|c| (c as f32 * 0.68).round() as u8)) >= 0.37);
            assert!(
                chroma(mix(rgb, [255, 255, 255], 0.42)) >= 0.32,
                "{colour:?} light"
            );
        }
    }

    #[test]
    fn brighten_keeps_chroma_and_clamps() {
        assert_eq!(brighten([10, 20, 30], 5), [15, 25, 35]);
        assert_eq!(brighten([250, 100, 3], 10), [255, 110, 13]);
        assert_eq!(brighten([2, 100, 200], -5), [0, 95, 195]);
    }

    #[test]
    fn mix_halfway_between_black_and_white() {
        assert_eq!(mix([0, 0, 0], [255, 255, 255], 0.5), [128, 128, 128]);
        assert_eq!(mix([200, 100, 0], [0, 0, 0], 0.25), [150, 75, 0]);
    }

    #[test]
    fn box_downsample_averages_blocks() {
        let mut canvas = Canvas::new(4);
        canvas.image.put_pixel(0, 0, Rgb([255, 0, 0]));
        canvas.image.put_pixel(1, 1, Rgb([255, 0, 0]));
        canvas.mask.put_pixel(0, 0, SUBJECT);
        let (image, mask) = canvas.downsample(2);
        assert_eq!(image.dimensions(), (2, 2));
        // Two of four pixels red: 510 / 4 = 127.5, rounded half up.
        assert_eq!(image.get_pixel(0, 0).0, [128, 0, 0]);
        assert_eq!(image.get_pixel(1, 1).0, [0, 0, 0]);
        assert_eq!(mask.get_pixel(0, 0).0, [64]);
    }

    #[test]
    fn body_contains_its_centre_but_not_its_corners_when_round() {
        let body = Body {
            shape: Shape::Round,
            cx: 0.5,
            cy: 0.5,
            half_width: 0.2,
            half_height: 0.2,
        };
        assert!(body.contains(0.5, 0.5));
        assert!(!body.contains(0.69, 0.69));
        let square = Body {
            shape: Shape::Square,
            ..body
        };
        assert!(square.contains(0.69, 0.69));
    }

    #[test]
    fn accessories_never_share_the_body_colour() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..500 {
            let character = Character::random(&mut rng);
            assert_ne!(character.accessory.colour(), Some(character.colour));
        }
    }
}
