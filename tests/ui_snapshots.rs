//! Image snapshots of the studio rendered with wgpu (Mesa's software rasteriser in CI): the
//! main layout and each overlay kind. Images, masks and matches are made here
//! deterministically, so the snapshots do not depend on a model.
//!
//! Update after an intended change: `UPDATE_SNAPSHOTS=1 cargo test --test ui_snapshots`.

mod ui_common;

use egui::vec2;
use egui_kittest::{Harness, SnapshotOptions};
use image::{Rgb, RgbImage};
use storyloom::consistency::{FrameAnalysis, characonsist};
use storyloom::engine::ModelSpec;
use storyloom::project::FrameVersion;
use storyloom::ui::overlay::{ImageLayer, MatchDisplay, TokenMask, TokenMatch};
use storyloom::ui::{AppOptions, StoryloomApp};

const TOKEN: u32 = 8;

/// A scene: a gradient background with an orange disc (the "character").
fn scene(w: u32, h: u32, centre: (f32, f32), radius: f32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f32 + 0.5 - centre.0, y as f32 + 0.5 - centre.1);
        if dx * dx + dy * dy <= radius * radius {
            Rgb([230, 140, 60])
        } else {
            Rgb([
                (40 + x * 80 / w) as u8,
                (60 + y * 90 / h) as u8,
                (120 + (x + y) * 40 / (w + h)) as u8,
            ])
        }
    })
}

fn disc_mask(w: u32, h: u32, centre: (f32, f32), radius: f32) -> TokenMask {
    let (rows, cols) = ((h / TOKEN) as usize, (w / TOKEN) as usize);
    let fg = (0..rows * cols)
        .map(|t| {
            let x = ((t % cols) as f32 + 0.5) * TOKEN as f32 - centre.0;
            let y = ((t / cols) as f32 + 0.5) * TOKEN as f32 - centre.1;
            x * x + y * y <= radius * radius
        })
        .collect();
    TokenMask { rows, cols, fg }
}

const IDENTITY: (u32, u32, (f32, f32), f32) = (96, 96, (48.0, 48.0), 30.0);

/// Matches: each foreground frame token maps to the identity token at the same relative
/// place on the disc; similarity falls toward the rim.
fn disc_matches(mask: &TokenMask, centre: (f32, f32), radius: f32) -> Vec<TokenMatch> {
    let (iw, _ih, ic, ir) = IDENTITY;
    let icols = (iw / TOKEN) as usize;
    mask.fg
        .iter()
        .enumerate()
        .filter(|(_, fg)| **fg)
        .map(|(t, _)| {
            let x = ((t % mask.cols) as f32 + 0.5) * TOKEN as f32 - centre.0;
            let y = ((t / mask.cols) as f32 + 0.5) * TOKEN as f32 - centre.1;
            let k = ir / radius;
            let ix = ((ic.0 + x * k) / TOKEN as f32) as usize;
            let iy = ((ic.1 + y * k) / TOKEN as f32) as usize;
            let d = (x * x + y * y).sqrt() / radius;
            TokenMatch {
                frame_token: t,
                identity_token: iy * icols + ix,
                similarity: 0.95 - 0.45 * d,
            }
        })
        .collect()
}

fn record(seed: u64) -> FrameVersion {
    FrameVersion {
        seed,
        model: "snapshot scenes".into(),
        steps: 20,
        guidance: 3.5,
        width: 128,
        height: 72,
        methods: vec!["CharaConsist".into()],
        metadata: [("seconds".to_string(), "1.0".to_string())].into(),
        ..Default::default()
    }
}

fn method_mask(m: &TokenMask) -> characonsist::TokenMask {
    characonsist::TokenMask {
        rows: m.rows,
        cols: m.cols,
        fg: m.fg.clone(),
    }
}

/// What CharaConsist reports for a frame; the studio turns it into overlay data.
fn analysis(frame: &TokenMask, identity: &TokenMask, matches: &[TokenMatch]) -> FrameAnalysis {
    FrameAnalysis {
        characonsist: Some(characonsist::FrameAnalysis {
            frame_mask: method_mask(frame),
            identity_mask: method_mask(identity),
            matches: matches
                .iter()
                .map(|m| characonsist::Match {
                    frame_token: m.frame_token as u32,
                    identity_token: m.identity_token as u32,
                    similarity: m.similarity,
                })
                .collect(),
            extraction_step: 10,
        }),
        afs: None,
    }
}

fn demo_app() -> StoryloomApp {
    let ctx = egui::Context::default();
    let mut app = StoryloomApp::new(
        AppOptions {
            project: None,
            model: Some(ModelSpec::TinyRandom { seed: 1 }),
        },
        &ctx,
    )
    .with_gpu_overlays(true);
    let s = &mut app.state;
    s.doc.title = "The courier".into();
    s.doc.identity = "a courier in an orange raincoat".into();
    s.doc.style = "flat colours, ink outlines".into();
    let actions = [
        "walks into the rain",
        "checks the address",
        "climbs the stairs",
        "knocks on the door",
        "hands over the parcel",
    ];
    let (iw, ih, ic, ir) = IDENTITY;
    s.renders
        .add_identity_version(record(1), scene(iw, ih, ic, ir), FrameAnalysis::default());
    let identity_mask = disc_mask(iw, ih, ic, ir);
    for (i, action) in actions.iter().enumerate() {
        let id = s.add_frame();
        let f = s.doc.frame_mut(id).unwrap();
        f.action = action.to_string();
        f.background = "a rainy street at night".into();
        if i == actions.len() - 1 {
            // The last frame is not generated yet.
            continue;
        }
        let centre = (28.0 + 18.0 * i as f32, 38.0);
        let radius = 20.0;
        let mask = disc_mask(128, 72, centre, radius);
        let matches = disc_matches(&mask, centre, radius);
        s.renders.add_version(
            id,
            record(i as u64),
            scene(128, 72, centre, radius),
            analysis(&mask, &identity_mask, &matches),
        );
    }
    let first = s.doc.frames[1].id;
    s.selection.select_only(first);
    s.dirty = false;
    app
}

fn harness(app: StoryloomApp) -> Harness<'static, StoryloomApp> {
    Harness::builder()
        .with_size(vec2(1280.0, 800.0))
        .with_pixels_per_point(1.0)
        .renderer(ui_common::overlay_renderer())
        // Value fields are named through `labelled_by`, which this check does not follow.
        .with_accessibility_check(false)
        .build_ui_state(|ui, app: &mut StoryloomApp| app.show(ui), app)
}

fn options() -> SnapshotOptions {
    // Software rasterisers differ in anti-aliasing; layout changes still fail.
    SnapshotOptions::new().threshold(2.0).max_failed_pixels(400)
}

fn snapshot_with(name: &str, setup: impl FnOnce(&mut StoryloomApp)) {
    let mut app = demo_app();
    setup(&mut app);
    let mut h = harness(app);
    h.run();
    h.remove_cursor();
    h.run();
    h.snapshot_options(name, &options());
}

#[test]
fn studio_layout() {
    snapshot_with("studio_layout", |_| {});
}

#[test]
fn overlay_mask_tint() {
    snapshot_with("overlay_mask_tint", |app| {
        app.state.overlay.layer = ImageLayer::Mask;
    });
}

#[test]
fn overlay_similarity_heat_map() {
    snapshot_with("overlay_heat_map", |app| {
        app.state.overlay.layer = ImageLayer::Heat;
    });
}

#[test]
fn overlay_many_matches() {
    snapshot_with("overlay_matches", |app| {
        app.state.overlay.matches = MatchDisplay::Many;
        app.state.overlay.match_count = 16;
    });
}

#[test]
fn overlay_match_of_a_clicked_point() {
    snapshot_with("overlay_match_pinned", |app| {
        app.state.overlay.matches = MatchDisplay::Pointer;
        // The disc of the focused frame covers token (row 4, col 5).
        app.state.overlay.pinned_token = Some(4 * 16 + 5);
    });
}
