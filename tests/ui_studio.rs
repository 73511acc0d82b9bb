//! The studio driven through its real UI with egui_kittest: keys, clicks, typing, drag and
//! drop, undo/redo, overlay toggles, and a generation on the tiny model with progress, a
//! done status and a cancel.

use std::time::{Duration, Instant};

use egui::{Key, Modifiers, PointerButton, Pos2, vec2};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use storyloom::engine::ModelSpec;
use storyloom::ui::generation::FrameStatus;
use storyloom::ui::overlay::{ImageLayer, MatchDisplay};
use storyloom::ui::{AppOptions, StoryloomApp};

fn app(model: Option<ModelSpec>) -> StoryloomApp {
    let ctx = egui::Context::default();
    StoryloomApp::new(
        AppOptions {
            project: None,
            model: model.or(Some(ModelSpec::TinyRandom { seed: 1 })),
        },
        &ctx,
    )
}

fn harness(app: StoryloomApp) -> Harness<'static, StoryloomApp> {
    Harness::builder()
        .with_size(vec2(1400.0, 900.0))
        // Value fields are named through `labelled_by`, which this check does not follow.
        .with_accessibility_check(false)
        .build_ui_state(|ui, app: &mut StoryloomApp| app.show(ui), app)
}

fn actions(h: &Harness<'_, StoryloomApp>) -> Vec<String> {
    h.state()
        .state
        .doc
        .frames
        .iter()
        .map(|f| f.action.clone())
        .collect()
}

#[test]
fn add_frames_type_prompts_undo_and_redo() {
    let mut h = harness(app(None));
    h.key_press(Key::N);
    h.run();
    h.key_press(Key::N);
    h.run();
    assert_eq!(h.state().state.doc.frames.len(), 2);
    h.get_by_label_contains("Frame 2 ·").hover();
    h.get_by_label_contains("Frame 1 ·").click();
    h.run();
    assert_eq!(h.state().state.selection.ids.len(), 1);

    h.get_by_label("Action").click();
    h.run();
    h.get_by_label("Action").type_text("opens the red door");
    h.run();
    assert_eq!(actions(&h)[0], "opens the red door");
    // While the text field has focus, N types a letter instead of adding a frame.
    h.key_press(Key::N);
    h.run();
    assert_eq!(h.state().state.doc.frames.len(), 2);

    h.get_by_label("Character").click();
    h.run();
    h.get_by_label("Character")
        .type_text("a tall courier in a yellow raincoat");
    h.run();
    assert_eq!(
        h.state().state.doc.identity,
        "a tall courier in a yellow raincoat"
    );

    // Leave the text field, then undo twice: the character, then the whole typed action.
    h.get_by_label_contains("Frame 2 ·").click();
    h.run();
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run();
    assert_eq!(h.state().state.doc.identity, "");
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run();
    assert_eq!(actions(&h)[0], "");
    h.key_press_modifiers(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z);
    h.run();
    assert!(actions(&h)[0].starts_with("opens the red door"));

    // D duplicates, Delete removes.
    h.key_press(Key::D);
    h.run();
    assert_eq!(h.state().state.doc.frames.len(), 3);
    h.key_press(Key::Delete);
    h.run();
    assert_eq!(h.state().state.doc.frames.len(), 2);
}

#[test]
fn multi_select_with_ctrl_and_shift_clicks() {
    let mut h = harness(app(None));
    for _ in 0..4 {
        h.key_press(Key::N);
        h.run();
    }
    h.get_by_label_contains("Frame 1 ·").click();
    h.run();
    h.get_by_label_contains("Frame 3 ·")
        .click_modifiers(Modifiers::SHIFT);
    h.run();
    assert_eq!(h.state().state.selection.ids.len(), 3);
    h.get_by_label_contains("Frame 2 ·")
        .click_modifiers(Modifiers::COMMAND);
    h.run();
    assert_eq!(h.state().state.selection.ids.len(), 2);
    h.key_press(Key::ArrowRight);
    h.run();
    assert_eq!(h.state().state.selection.ids.len(), 1);
}

#[test]
fn reorder_frames_by_dragging_a_card() {
    let mut a = app(None);
    for name in ["one", "two", "three"] {
        let id = a.state.add_frame();
        a.state.doc.frame_mut(id).unwrap().action = name.into();
    }
    let mut h = harness(a);
    h.run();
    let from = h.get_by_label_contains("Frame 1 ·").rect().center();
    let target = h.get_by_label_contains("Frame 3 ·").rect();
    let to = Pos2::new(target.max.x - 10.0, target.center().y);
    h.hover_at(from);
    h.step();
    h.drag_at(from);
    h.step();
    for k in 1..=8 {
        h.hover_at(from + (to - from) * (k as f32 / 8.0));
        h.step();
    }
    h.event(egui::Event::PointerButton {
        pos: to,
        button: PointerButton::Primary,
        pressed: false,
        modifiers: Modifiers::NONE,
    });
    h.step();
    h.remove_cursor();
    h.run();
    assert_eq!(actions(&h), ["two", "three", "one"]);
    // The move is one undo step.
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run();
    assert_eq!(actions(&h), ["one", "two", "three"]);
}

#[test]
fn overlay_toggles_and_shortcut_sheet() {
    let mut a = app(None);
    a.state.add_frame();
    let mut h = harness(a);
    h.run();
    h.get_by_label("Mask").click();
    h.run();
    assert_eq!(h.state().state.overlay.layer, ImageLayer::Mask);
    h.get_by_label("Similarity").click();
    h.run();
    assert_eq!(h.state().state.overlay.layer, ImageLayer::Heat);
    h.get_by_label("Matches").click();
    h.run();
    h.get_by_label("Show N matches").click();
    h.run();
    assert_eq!(h.state().state.overlay.matches, MatchDisplay::Many);

    h.key_press(Key::F1);
    h.run();
    assert!(h.state().state.show_shortcuts);
    h.get_by_label("Keyboard shortcuts").hover();
    h.get_by_label("Close").click();
    h.run();
    assert!(!h.state().state.show_shortcuts);
}

/// Steps the harness (the engine works meanwhile) until `done` holds or time runs out.
fn step_until(
    h: &mut Harness<'_, StoryloomApp>,
    timeout: Duration,
    mut done: impl FnMut(&StoryloomApp) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        h.step();
        if done(h.state()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn generation_on_the_tiny_model_shows_progress_then_done() {
    let mut a = app(None);
    let id = a.state.add_frame();
    a.state.doc.settings.width = 64;
    a.state.doc.settings.height = 64;
    a.state.doc.settings.steps = 6;
    a.state.doc.settings.previews = true;
    let mut h = harness(a);
    h.run();
    h.get_by_label("Generate all").click();
    h.step();
    let mut saw_progress = false;
    let finished = step_until(&mut h, Duration::from_secs(60), |app| {
        if let Some(FrameStatus::Running { .. }) = app.state.tracker.frame_status(id) {
            saw_progress = true;
        }
        app.state.renders.active(id).is_some()
    });
    assert!(finished, "the frame was not generated in time");
    assert!(saw_progress, "no progress was seen");
    h.step();
    h.get_by_label_contains("Frame 1 · done");
    let version = h.state().state.renders.active(id).unwrap().clone();
    assert_eq!(version.record.steps, 6);
    assert_eq!(version.image().unwrap().dimensions(), (64, 64));
    // Without a project folder the image stays in memory until "Save as".
    assert!(version.record.file.is_empty());
}

#[test]
fn cancel_stops_a_generation_mid_way() {
    let mut a = app(None);
    let first = a.state.add_frame();
    let second = a.state.add_frame();
    a.state.doc.settings.width = 128;
    a.state.doc.settings.height = 128;
    a.state.doc.settings.steps = 60;
    let order = a.state.order();
    a.state.selection.click(first, false, false, &order);
    a.state.selection.click(second, false, true, &order);
    let mut h = harness(a);
    h.run();
    h.key_press_modifiers(Modifiers::COMMAND, Key::Enter);
    h.step();
    let running = step_until(&mut h, Duration::from_secs(60), |app| {
        matches!(
            app.state.tracker.frame_status(first),
            Some(FrameStatus::Running { step, .. }) if *step >= 2
        )
    });
    assert!(running, "the generation did not start");
    h.get_by_label("Cancel").click();
    h.step();
    let stopped = step_until(&mut h, Duration::from_secs(30), |app| {
        !app.state.tracker.is_busy()
    });
    assert!(stopped, "cancel did not stop the engine");
    let s = &h.state().state;
    assert_eq!(s.tracker.frame_status(first), Some(&FrameStatus::Cancelled));
    assert_eq!(
        s.tracker.frame_status(second),
        Some(&FrameStatus::Cancelled)
    );
    assert!(s.renders.active(first).is_none());
}

#[test]
fn a_model_that_cannot_load_becomes_an_error_message() {
    let missing = storyloom::engine::FluxFiles {
        transformer: "no-such-folder/flux1-dev.safetensors".into(),
        ..Default::default()
    };
    let mut a = app(Some(ModelSpec::Flux(missing)));
    let id = a.state.add_frame();
    let mut h = harness(a);
    h.run();
    h.get_by_label("Generate all").click();
    h.step();
    let reported = step_until(&mut h, Duration::from_secs(30), |app| {
        matches!(
            app.state.tracker.frame_status(id),
            Some(FrameStatus::Failed(_))
        )
    });
    assert!(reported, "the failure was not reported");
    let s = &h.state().state;
    assert!(matches!(
        s.tracker.model,
        storyloom::ui::generation::ModelState::Failed(_)
    ));
    assert!(
        s.toasts
            .iter()
            .any(|t| t.kind == storyloom::ui::state::ToastKind::Error)
    );
    assert!(!s.tracker.is_busy());
    h.get_by_label_contains("Frame 1 · failed");
}

#[test]
fn method_toggles_edit_the_project_settings_with_undo() {
    let mut a = app(None);
    a.state.add_frame();
    let mut h = harness(a);
    h.run();
    assert!(!h.state().state.doc.settings.methods.characonsist_enabled);
    h.get_by_label("CharaConsist").click();
    h.run();
    let m = &h.state().state.doc.settings.methods;
    assert!(m.characonsist_enabled);
    assert!(m.characonsist.point_tracking && m.characonsist.token_merge);
    // Its settings appear once it is on.
    h.get_by_label("Point tracking").click();
    h.run();
    h.get_by_label("Switch").click();
    h.run();
    let m = &h.state().state.doc.settings.methods;
    assert!(!m.characonsist.point_tracking);
    assert_eq!(
        m.characonsist.background,
        storyloom::consistency::characonsist::BackgroundMode::Switch
    );
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run();
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run();
    let m = &h.state().state.doc.settings.methods;
    assert!(m.characonsist_enabled && m.characonsist.point_tracking);
    assert!(h.state().state.has_unsaved_changes());
}

/// A file dropped from a file manager, as the windowing layer hands it over.
#[derive(Debug)]
struct DroppedPath(std::path::PathBuf);

impl egui::DroppedFile for DroppedPath {
    fn path(&self) -> &std::path::Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

#[test]
fn a_dropped_png_with_settings_becomes_a_frame() {
    use storyloom::project::{ImageSettings, write_png_with_settings};
    let dir = tempfile::tempdir().unwrap();
    let made = dir.path().join("frame.png");
    let settings = ImageSettings {
        identity: "a round red creature".into(),
        background: "in a dark forest".into(),
        action: "waving on the left".into(),
        seed: 4242,
        steps: 12,
        guidance: 2.5,
        width: 64,
        height: 64,
        ..ImageSettings::default()
    };
    write_png_with_settings(&made, &image::RgbImage::new(64, 64), &settings).unwrap();
    let plain = dir.path().join("plain.png");
    image::RgbImage::new(8, 8).save(&plain).unwrap();

    let mut h = harness(app(None));
    h.run();
    for path in [made, plain] {
        h.input_mut()
            .dropped_files
            .push(std::sync::Arc::new(DroppedPath(path)));
        h.run();
    }
    let state = &h.state().state;
    // The PNG without settings adds nothing (an error toast says why).
    assert_eq!(state.doc.frames.len(), 1);
    let f = &state.doc.frames[0];
    assert_eq!(
        (f.background.as_str(), f.action.as_str(), f.seed),
        ("in a dark forest", "waving on the left", 4242)
    );
    assert_eq!(state.doc.identity, "a round red creature");
    let g = &state.doc.settings;
    assert_eq!((g.steps, g.guidance, g.width, g.height), (12, 2.5, 64, 64));
}
