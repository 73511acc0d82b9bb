//! The studio and its project folder, driven through the real UI with egui_kittest: open,
//! edit, Ctrl+S and reopen; recovery of a newer autosave; a file that does not parse; the
//! unsaved-changes prompt; a finished frame stored as a file and a version; missing images.

use std::path::Path;
use std::time::{Duration, Instant};

use egui::{Key, Modifiers, vec2};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use storyloom::engine::ModelSpec;
use storyloom::project::{self, Frame, FrameVersion, Project};
use storyloom::ui::state::{PendingAction, UnsavedChoice};
use storyloom::ui::{AppOptions, StoryloomApp};

fn app(dir: &Path) -> StoryloomApp {
    let ctx = egui::Context::default();
    StoryloomApp::new(
        AppOptions {
            project: Some(dir.to_path_buf()),
            model: Some(ModelSpec::TinyRandom { seed: 1 }),
        },
        &ctx,
    )
}

fn harness(app: StoryloomApp) -> Harness<'static, StoryloomApp> {
    Harness::builder()
        .with_size(vec2(1400.0, 900.0))
        .with_accessibility_check(false)
        .build_ui_state(|ui, app: &mut StoryloomApp| app.show(ui), app)
}

/// A project with every field set and one real image (the others missing on purpose are
/// added by the tests that want them).
fn sample_project(dir: &Path) -> Project {
    let mut p = Project {
        title: "The lighthouse".into(),
        style: "ink wash".into(),
        ..Default::default()
    };
    p.identity.prompt = "a girl in a yellow raincoat".into();
    p.identity.seed = 77;
    p.generation.steps = 9;
    p.generation.guidance = 4.5;
    p.generation.width = 640;
    p.generation.height = 480;
    p.generation.aspect = project::AspectPreset::Classic4x3;
    p.methods.characonsist_enabled = true;
    p.methods.bank_budget_mib = 512;
    p.model = project::ModelChoice::TinyRandom { seed: 5 };
    p.scenes = vec![project::Scene {
        id: 2,
        name: "harbour".into(),
    }];
    for (id, action) in [(4, "walks to the pier"), (9, "looks at the sea")] {
        let mut f = Frame::new(id, id * 3);
        f.action = action.into();
        f.background = "a harbour at dusk".into();
        f.dialogue = "Where is he?".into();
        f.notes = "slow".into();
        f.duration_ms = 1750;
        f.seed_locked = true;
        f.scene = 2;
        p.frames.push(f);
    }
    p.next_id = 12;
    let image = image::RgbImage::from_fn(32, 24, |x, y| image::Rgb([x as u8 * 7, y as u8 * 9, 40]));
    let settings = project::ImageSettings {
        prompt: "a harbour at dusk, a girl, walks".into(),
        seed: 12,
        steps: 9,
        width: 32,
        height: 24,
        ..Default::default()
    };
    let mut v =
        project::store_image(dir, "00004", 1, &image, &settings, None, &[], 1_700_000_000).unwrap();
    v.methods = vec!["CharaConsist".into()];
    v.metadata.insert("seconds".into(), "2.0".into());
    p.frames[0].versions.push(v);
    p.frames[0].active_version = Some(0);
    p
}

fn create(dir: &Path) -> Project {
    let p = sample_project(dir);
    project::create(dir, &p).unwrap();
    project::open(dir).unwrap().project
}

#[test]
fn open_edit_save_and_reopen_keeps_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let original = create(dir.path());
    let mut h = harness(app(dir.path()));
    h.run();
    assert_eq!(h.state().state.project_path.as_deref(), Some(dir.path()));
    assert_eq!(h.state().state.project(), original);
    assert_eq!(
        h.state().state.save_label(),
        h.state().state.autosaver.state().label()
    );
    h.get_by_label_contains("Frame 1 ·").click();
    h.run();
    h.get_by_label("Dialogue").click();
    h.run();
    h.get_by_label("Dialogue").type_text(" Over there!");
    h.run();
    assert!(h.state().state.has_unsaved_changes());
    h.key_press_modifiers(Modifiers::COMMAND, Key::S);
    h.run();
    assert!(!h.state().state.has_unsaved_changes());
    assert!(h.state().state.save_label().starts_with("Saved at "));

    let reopened = project::open(dir.path()).unwrap();
    assert!(reopened.recovery.is_none());
    let mut expected = original.clone();
    expected.frames[0].dialogue = "Where is he? Over there!".into();
    assert_eq!(reopened.project, expected);
    // The previous file is the backup.
    let backup = project::load_project_file(&dir.path().join(project::BACKUP_FILE)).unwrap();
    assert_eq!(backup.frames[0].dialogue, "Where is he?");
}

#[test]
fn images_load_off_the_ui_thread_and_missing_ones_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = sample_project(dir.path());
    p.frames[1].versions.push(FrameVersion {
        file: "frames/00009-01.png".into(),
        width: 32,
        height: 24,
        ..Default::default()
    });
    p.frames[1].active_version = Some(0);
    project::create(dir.path(), &p).unwrap();
    let mut a = app(dir.path());
    // A toast names the missing image.
    assert!(
        a.state
            .toasts
            .iter()
            .any(|t| t.message.contains("00009-01.png"))
    );
    a.state.wait_for_images();
    let loaded = a.state.renders.active(4).unwrap().image().unwrap().clone();
    assert_eq!(loaded.dimensions(), (32, 24));
    assert_eq!(loaded.get_pixel(3, 2).0, [21, 18, 40]);
    let mut h = harness(a);
    h.run();
    h.get_by_label_contains("Frame 1 · done");
    h.get_by_label_contains("Frame 2 · missing");
    // The app keeps working: a new frame, and the missing version survives a save.
    h.key_press(Key::N);
    h.run();
    assert_eq!(h.state().state.doc.frames.len(), 3);
    assert!(h.state_mut().state.save());
    let back = project::open(dir.path()).unwrap().project;
    let missing = back.frames.iter().find(|f| f.id == 9).unwrap();
    assert_eq!(missing.versions[0].file, "frames/00009-01.png");
    assert_eq!(back.frames.len(), 3);
}

#[test]
fn a_newer_autosave_is_offered_for_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let original = create(dir.path());
    let mut newer = original.clone();
    newer.frames[1].action = "runs along the pier".into();
    std::thread::sleep(Duration::from_millis(20));
    project::write_autosave(dir.path(), &newer).unwrap();

    let mut h = harness(app(dir.path()));
    h.run();
    assert!(h.state().state.recovery.is_some());
    h.get_by_label_contains("Recover unsaved changes from");
    h.get_by_label("Recover").click();
    h.run();
    let s = &h.state().state;
    assert!(s.recovery.is_none());
    assert_eq!(s.doc.frames[1].action, "runs along the pier");
    // Recovered work is not in project.ron yet: it is unsaved.
    assert!(s.has_unsaved_changes());
    assert_eq!(s.save_label(), "Unsaved changes");
    h.key_press_modifiers(Modifiers::COMMAND, Key::S);
    h.run();
    assert_eq!(project::open(dir.path()).unwrap().project, newer);
    assert!(!dir.path().join(project::AUTOSAVE_FILE).exists());

    // "Open saved" keeps project.ron and drops the autosave.
    let mut other = newer.clone();
    other.title = "Another title".into();
    std::thread::sleep(Duration::from_millis(20));
    project::write_autosave(dir.path(), &other).unwrap();
    let mut h = harness(app(dir.path()));
    h.run();
    h.get_by_label("Open saved").click();
    h.run();
    assert_eq!(h.state().state.doc.title, "The lighthouse");
    assert!(!h.state().state.has_unsaved_changes());
    assert!(!dir.path().join(project::AUTOSAVE_FILE).exists());
}

#[test]
fn a_file_that_does_not_parse_is_reported_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    create(dir.path());
    let path = dir.path().join(project::PROJECT_FILE);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.insert_str(text.find("title").unwrap(), "@@");
    std::fs::write(&path, &text).unwrap();

    let mut h = harness(app(dir.path()));
    h.run();
    let message = h.state().state.open_error.clone().expect("an open error");
    assert!(message.contains("project.ron:"), "{message}");
    // file:line:column
    let location = message.split("project.ron:").nth(1).unwrap();
    let mut parts = location.split(':');
    assert!(parts.next().unwrap().parse::<usize>().is_ok(), "{message}");
    assert!(parts.next().unwrap().parse::<usize>().is_ok(), "{message}");
    h.get_by_label("The project could not be opened");
    assert!(h.state().state.project_path.is_none());
    h.get_by_label("Continue").click();
    h.run();
    // The studio works with an empty storyboard; saving does not touch the broken file.
    h.key_press(Key::N);
    h.run();
    assert_eq!(h.state().state.doc.frames.len(), 1);
    assert!(
        !h.state_mut().state.save(),
        "no project folder to save into"
    );
    h.run();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert!(!dir.path().join(project::BACKUP_FILE).exists());
}

#[test]
fn quitting_with_unsaved_changes_asks_first() {
    let dir = tempfile::tempdir().unwrap();
    create(dir.path());
    let mut h = harness(app(dir.path()));
    h.run();
    // Nothing changed: the window may close at once.
    assert!(h.state_mut().state.request(PendingAction::Quit));
    h.state_mut().state.quit_confirmed = false;

    h.key_press(Key::N);
    h.run();
    assert!(!h.state_mut().state.request(PendingAction::Quit));
    h.run();
    h.get_by_label_contains("before quitting?");
    assert_eq!(
        h.state_mut().state.answer_unsaved(UnsavedChoice::Cancel),
        None
    );
    h.run();
    assert!(h.state().state.confirm.is_none());
    assert!(!h.state().state.quit_confirmed);
    assert!(h.state().state.has_unsaved_changes());

    assert!(!h.state_mut().state.request(PendingAction::Quit));
    h.run();
    h.get_by_label("Save").click();
    h.run();
    assert!(h.state().state.quit_confirmed);
    assert_eq!(project::open(dir.path()).unwrap().project.frames.len(), 3);

    // Discard quits without writing.
    let mut h = harness(app(dir.path()));
    h.run();
    h.key_press(Key::N);
    h.run();
    let s = &mut h.state_mut().state;
    assert!(!s.request(PendingAction::Quit));
    assert_eq!(
        s.answer_unsaved(UnsavedChoice::Discard),
        Some(PendingAction::Quit)
    );
    assert!(s.quit_confirmed);
    assert_eq!(project::open(dir.path()).unwrap().project.frames.len(), 3);
}

/// Steps the harness until `done` holds or time runs out.
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
fn a_finished_frame_becomes_a_file_and_a_saved_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Project::default();
    p.identity.prompt = "a fox".into();
    p.generation.width = 64;
    p.generation.height = 64;
    p.generation.steps = 3;
    let mut f = Frame::new(1, 5);
    f.action = "jumps".into();
    p.frames.push(f);
    p.next_id = 2;
    project::create(dir.path(), &p).unwrap();

    let mut h = harness(app(dir.path()));
    h.run();
    // Showing a project (scene 0, default settings) is not an edit.
    assert!(!h.state().state.has_unsaved_changes());
    assert!(h.state().state.save_label().starts_with("Saved at "));
    h.get_by_label("Generate all").click();
    h.step();
    let finished = step_until(&mut h, Duration::from_secs(120), |app| {
        app.state.renders.active(1).is_some()
    });
    assert!(finished, "the frame was not generated in time");
    h.step();
    let record = h.state().state.renders.active(1).unwrap().record.clone();
    assert_eq!(record.file, "frames/00001-01.png");
    assert_eq!((record.width, record.height, record.steps), (64, 64, 3));
    let png = dir.path().join(&record.file);
    assert!(png.is_file());
    // The PNG says how it was made.
    let settings = project::import_png_settings(&png).unwrap();
    assert_eq!(settings.action, "jumps");
    assert_eq!(settings.seed, 5);
    // A finished frame is autosaved at once; project.ron waits for the user.
    let autosaved = project::load_project_file(&dir.path().join(project::AUTOSAVE_FILE)).unwrap();
    assert_eq!(autosaved.frames[0].versions, vec![record.clone()]);
    assert!(project::open(dir.path()).unwrap().recovery.is_some());
    h.key_press_modifiers(Modifiers::COMMAND, Key::S);
    h.run();
    let saved = project::open(dir.path()).unwrap();
    assert!(saved.recovery.is_none());
    assert_eq!(saved.project.frames[0].versions, vec![record]);
    assert_eq!(saved.project.frames[0].active_version, Some(0));
    h.get_by_label_contains("Frame 1 · done");
}
