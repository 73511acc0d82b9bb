//! Viewer overlays: foreground mask tint, similarity heat map and correspondences, drawn by
//! our WGSL shaders through `egui_wgpu` paint callbacks.
//!
//! - [`blend`]: the colour math on the CPU (mirrors the shaders; tests compare read-backs);
//! - [`gpu`]: pipelines, texture cache and the paint callbacks;
//! - this module: the overlay data on token grids, the user's overlay settings, and the pure
//!   geometry that turns matches into marks and a cursor position into a token.

pub mod blend;
pub mod gpu;

use egui::{Pos2, Rect, pos2};
use serde::{Deserialize, Serialize};

pub use blend::TintParams;
pub use gpu::{
    GpuGrid, GpuImage, ImageOverlay, ImageOverlayCallback, Mark, MarksCallback, install,
};

/// A foreground mask on a token grid (row-major).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokenMask {
    pub rows: usize,
    pub cols: usize,
    pub fg: Vec<bool>,
}

impl TokenMask {
    /// CharaConsist's mask, when it is a well-formed, non-empty grid.
    pub fn from_method(m: &crate::consistency::characonsist::TokenMask) -> Option<Self> {
        (m.rows > 0 && m.cols > 0 && m.fg.len() == m.rows * m.cols).then(|| Self {
            rows: m.rows,
            cols: m.cols,
            fg: m.fg.clone(),
        })
    }

    pub fn fraction_foreground(&self) -> f32 {
        if self.fg.is_empty() {
            return 0.0;
        }
        self.fg.iter().filter(|&&b| b).count() as f32 / self.fg.len() as f32
    }

    /// Bytes for the R8 mask texture (255 = foreground).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.fg.iter().map(|&b| if b { 255 } else { 0 }).collect()
    }
}

/// One correspondence: a frame token and the identity token it matched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenMatch {
    pub frame_token: usize,
    pub identity_token: usize,
    pub similarity: f32,
}

/// What the overlays show for one frame (built from the frame's analysis).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OverlayData {
    /// Token grid of the frame and of the identity image: (rows, cols).
    pub frame_grid: (usize, usize),
    pub identity_grid: (usize, usize),
    pub frame_mask: Option<TokenMask>,
    pub identity_mask: Option<TokenMask>,
    pub matches: Vec<TokenMatch>,
}

impl OverlayData {
    /// The overlay data a frame's analysis carries: CharaConsist's foreground masks of the
    /// frame and of the identity at the extraction step, and its point matches. Frames made
    /// without CharaConsist carry none, and the viewer offers no mask or match overlay.
    pub fn from_analysis(analysis: &crate::consistency::FrameAnalysis) -> Self {
        let Some(c) = &analysis.characonsist else {
            return Self::default();
        };
        Self {
            frame_grid: (c.frame_mask.rows, c.frame_mask.cols),
            identity_grid: (c.identity_mask.rows, c.identity_mask.cols),
            frame_mask: TokenMask::from_method(&c.frame_mask),
            identity_mask: TokenMask::from_method(&c.identity_mask),
            matches: c
                .matches
                .iter()
                .map(|m| TokenMatch {
                    frame_token: m.frame_token as usize,
                    identity_token: m.identity_token as usize,
                    similarity: m.similarity,
                })
                .collect(),
        }
    }

    pub fn has_masks(&self) -> bool {
        self.frame_mask.is_some() || self.identity_mask.is_some()
    }

    pub fn has_matches(&self) -> bool {
        !self.matches.is_empty()
    }

    /// The match of a frame token, if it has one.
    pub fn match_of(&self, frame_token: usize) -> Option<&TokenMatch> {
        self.matches.iter().find(|m| m.frame_token == frame_token)
    }
}

/// What is drawn over the images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ImageLayer {
    #[default]
    Plain,
    /// Foreground mask tint with outline.
    Mask,
    /// Match similarity as a heat map.
    Heat,
}

impl ImageLayer {
    pub const ALL: [ImageLayer; 3] = [ImageLayer::Plain, ImageLayer::Mask, ImageLayer::Heat];

    pub fn label(self) -> &'static str {
        match self {
            ImageLayer::Plain => "Image",
            ImageLayer::Mask => "Mask",
            ImageLayer::Heat => "Similarity",
        }
    }
}

/// How correspondences are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum MatchDisplay {
    #[default]
    Off,
    /// The match of the token under the cursor (or the last clicked one).
    Pointer,
    /// A spread of N matches coloured by position.
    Many,
}

impl MatchDisplay {
    pub const ALL: [MatchDisplay; 3] =
        [MatchDisplay::Off, MatchDisplay::Pointer, MatchDisplay::Many];

    pub fn label(self) -> &'static str {
        match self {
            MatchDisplay::Off => "No matches",
            MatchDisplay::Pointer => "Match under pointer",
            MatchDisplay::Many => "Show N matches",
        }
    }
}

/// The user's overlay choices (view state, not part of the document).
#[derive(Debug, Clone, PartialEq)]
pub struct OverlaySettings {
    pub layer: ImageLayer,
    pub matches: MatchDisplay,
    /// N of "show N matches".
    pub match_count: usize,
    pub tint: TintParams,
    /// Outline half-width in screen pixels.
    pub outline_px: f32,
    pub heat_opacity: f32,
    /// The frame token picked by a click (kept while the pointer is elsewhere).
    pub pinned_token: Option<usize>,
}

impl Default for OverlaySettings {
    fn default() -> Self {
        Self {
            layer: ImageLayer::Plain,
            matches: MatchDisplay::Off,
            match_count: 24,
            tint: TintParams::default(),
            outline_px: 1.5,
            heat_opacity: 0.6,
            pinned_token: None,
        }
    }
}

/// Centre of a token's cell inside an image rectangle.
pub fn token_centre(grid: (usize, usize), token: usize, rect: Rect) -> Pos2 {
    let (rows, cols) = grid;
    let (r, c) = (token / cols.max(1), token % cols.max(1));
    pos2(
        rect.min.x + (c as f32 + 0.5) / cols.max(1) as f32 * rect.width(),
        rect.min.y + (r as f32 + 0.5) / rows.max(1) as f32 * rect.height(),
    )
}

/// Token under a position inside an image rectangle (`None` outside or on an empty grid).
pub fn token_at(grid: (usize, usize), rect: Rect, pos: Pos2) -> Option<usize> {
    let (rows, cols) = grid;
    if rows == 0 || cols == 0 || !rect.contains(pos) || rect.width() <= 0.0 {
        return None;
    }
    let u = (pos.x - rect.min.x) / rect.width();
    let v = (pos.y - rect.min.y) / rect.height();
    let c = ((u * cols as f32) as usize).min(cols - 1);
    let r = ((v * rows as f32) as usize).min(rows - 1);
    Some(r * cols + c)
}

/// Per frame token: the similarity of its match (`None` without one).
pub fn frame_heat(tokens: usize, matches: &[TokenMatch]) -> Vec<Option<f32>> {
    let mut heat = vec![None; tokens];
    for m in matches {
        if let Some(h) = heat.get_mut(m.frame_token) {
            *h = Some(m.similarity);
        }
    }
    heat
}

/// Per identity token: the best similarity of the frame tokens that matched it.
pub fn identity_heat(tokens: usize, matches: &[TokenMatch]) -> Vec<Option<f32>> {
    let mut heat: Vec<Option<f32>> = vec![None; tokens];
    for m in matches {
        if let Some(h) = heat.get_mut(m.identity_token) {
            *h = Some(h.map_or(m.similarity, |v| v.max(m.similarity)));
        }
    }
    heat
}

/// `n` matches spread evenly over the frame (in frame token order), so the marks cover the
/// whole character rather than its most similar patch.
pub fn spread_matches(matches: &[TokenMatch], n: usize) -> Vec<TokenMatch> {
    let mut sorted = matches.to_vec();
    sorted.sort_by_key(|m| m.frame_token);
    if n == 0 {
        return Vec::new();
    }
    if sorted.len() <= n {
        return sorted;
    }
    (0..n).map(|i| sorted[i * sorted.len() / n]).collect()
}

fn premultiplied(rgb: [f32; 3], alpha: f32) -> [f32; 4] {
    blend::premultiply(rgb, alpha)
}

/// Marks for a set of matches: a point on the frame, a point on the identity, a line
/// between; coloured by the frame token's position in its grid.
pub fn match_marks(
    data: &OverlayData,
    matches: &[TokenMatch],
    frame_rect: Rect,
    identity_rect: Rect,
    radius: f32,
) -> Vec<Mark> {
    let cols = data.frame_grid.1.max(1);
    // Colours span the shown points' bounding box, so a small character still gets the
    // whole range of hues.
    let (mut c0, mut c1, mut r0, mut r1) = (usize::MAX, 0, usize::MAX, 0);
    for m in matches {
        let (r, c) = (m.frame_token / cols, m.frame_token % cols);
        (c0, c1, r0, r1) = (c0.min(c), c1.max(c), r0.min(r), r1.max(r));
    }
    let norm = |v: usize, lo: usize, hi: usize| {
        if hi > lo {
            (v - lo) as f32 / (hi - lo) as f32
        } else {
            0.5
        }
    };
    let mut lines = Vec::with_capacity(matches.len());
    let mut points = Vec::with_capacity(matches.len() * 2);
    for m in matches {
        let a = token_centre(data.frame_grid, m.frame_token, frame_rect);
        let b = token_centre(data.identity_grid, m.identity_token, identity_rect);
        let x = norm(m.frame_token % cols, c0, c1);
        let y = norm(m.frame_token / cols, r0, r1);
        let colour = blend::position_colour(x, y);
        lines.push(Mark {
            a,
            b,
            radius: radius * 0.3,
            colour: premultiplied(colour, 0.7),
        });
        for p in [a, b] {
            // A dark ring under the coloured dot keeps it visible on any image.
            points.push(Mark {
                a: p,
                b: p,
                radius: radius + 1.0,
                colour: premultiplied([0.0, 0.0, 0.0], 0.8),
            });
            points.push(Mark {
                a: p,
                b: p,
                radius,
                colour: premultiplied(colour, 1.0),
            });
        }
    }
    // Lines first so the points sit on top.
    lines.extend(points);
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_data_from_characonsist_analysis() {
        use crate::consistency::{FrameAnalysis, characonsist};
        let mask = |rows, cols, fg: Vec<bool>| characonsist::TokenMask { rows, cols, fg };
        let analysis = FrameAnalysis {
            characonsist: Some(characonsist::FrameAnalysis {
                frame_mask: mask(2, 3, vec![false, true, true, false, true, false]),
                identity_mask: mask(1, 2, vec![true, false]),
                matches: vec![characonsist::Match {
                    frame_token: 4,
                    identity_token: 0,
                    similarity: 0.75,
                }],
                extraction_step: 10,
            }),
            afs: None,
        };
        let data = OverlayData::from_analysis(&analysis);
        assert_eq!((data.frame_grid, data.identity_grid), ((2, 3), (1, 2)));
        assert_eq!(data.frame_mask.as_ref().unwrap().fraction_foreground(), 0.5);
        assert_eq!(
            data.identity_mask.as_ref().unwrap().to_bytes(),
            vec![255, 0]
        );
        assert_eq!(data.match_of(4).unwrap().identity_token, 0);
        assert_eq!(frame_heat(6, &data.matches)[4], Some(0.75));
        // A malformed mask (wrong length) is dropped, not drawn wrongly.
        let mut bad = analysis.clone();
        bad.characonsist.as_mut().unwrap().identity_mask.fg.pop();
        assert!(OverlayData::from_analysis(&bad).identity_mask.is_none());
        // Without CharaConsist there is nothing to overlay.
        assert!(!OverlayData::from_analysis(&FrameAnalysis::default()).has_masks());
    }

    fn rect(x: f32, y: f32, w: f32, h: f32) -> Rect {
        Rect::from_min_size(pos2(x, y), egui::vec2(w, h))
    }

    #[test]
    fn token_centres_and_picking_agree() {
        let r = rect(10.0, 20.0, 40.0, 20.0);
        // 2 rows x 4 cols: cells are 10 x 10.
        assert_eq!(token_centre((2, 4), 0, r), pos2(15.0, 25.0));
        assert_eq!(token_centre((2, 4), 6, r), pos2(35.0, 35.0));
        assert_eq!(token_at((2, 4), r, pos2(35.0, 35.0)), Some(6));
        assert_eq!(token_at((2, 4), r, pos2(49.9, 39.9)), Some(7));
        assert_eq!(token_at((2, 4), r, pos2(9.0, 25.0)), None);
        assert_eq!(token_at((0, 0), r, pos2(15.0, 25.0)), None);
    }

    fn m(f: usize, i: usize, s: f32) -> TokenMatch {
        TokenMatch {
            frame_token: f,
            identity_token: i,
            similarity: s,
        }
    }

    #[test]
    fn heat_maps_take_match_similarities() {
        let matches = [m(0, 3, 0.6), m(2, 3, 0.9), m(3, 1, 0.7)];
        assert_eq!(
            frame_heat(4, &matches),
            vec![Some(0.6), None, Some(0.9), Some(0.7)]
        );
        assert_eq!(
            identity_heat(4, &matches),
            vec![None, Some(0.7), None, Some(0.9)]
        );
        // Out-of-range tokens are ignored, not a panic.
        assert_eq!(frame_heat(1, &[m(5, 0, 0.5)]), vec![None]);
    }

    #[test]
    fn spread_takes_evenly_spaced_matches_in_frame_order() {
        let matches: Vec<_> = (0..10).rev().map(|t| m(t, t, 0.5)).collect();
        let picked: Vec<usize> = spread_matches(&matches, 4)
            .iter()
            .map(|m| m.frame_token)
            .collect();
        assert_eq!(picked, vec![0, 2, 5, 7]);
        assert_eq!(spread_matches(&matches, 20).len(), 10);
        assert!(spread_matches(&matches, 0).is_empty());
    }

    #[test]
    fn marks_join_frame_and_identity_points() {
        let data = OverlayData {
            frame_grid: (2, 2),
            identity_grid: (2, 2),
            matches: vec![m(1, 2, 0.8)],
            ..Default::default()
        };
        let f = rect(0.0, 0.0, 20.0, 20.0);
        let i = rect(100.0, 0.0, 20.0, 20.0);
        let marks = match_marks(&data, &data.matches, f, i, 4.0);
        // One line and two points with their rings.
        assert_eq!(marks.len(), 5);
        assert_eq!(marks[0].a, pos2(15.0, 5.0));
        assert_eq!(marks[0].b, pos2(105.0, 15.0));
        assert_eq!(marks[2].a, marks[2].b);
        // A single point sits mid-range.
        let expected = blend::position_colour(0.5, 0.5);
        assert_eq!(&marks[2].colour[..3], &expected[..]);
        // Two points take the ends of the range.
        let two = [data.matches[0], m(2, 0, 0.9)];
        let marks = match_marks(&data, &two, f, i, 4.0);
        // Token 1 is (row 0, col 1), token 2 is (row 1, col 0).
        assert_eq!(&marks[3].colour[..3], &blend::position_colour(1.0, 0.0)[..]);
        assert_eq!(&marks[7].colour[..3], &blend::position_colour(0.0, 1.0)[..]);
    }

    #[test]
    fn mask_bytes_and_fraction() {
        let mask = TokenMask {
            rows: 1,
            cols: 4,
            fg: vec![true, false, false, true],
        };
        assert_eq!(mask.to_bytes(), vec![255, 0, 0, 255]);
        assert_eq!(mask.fraction_foreground(), 0.5);
    }
}
