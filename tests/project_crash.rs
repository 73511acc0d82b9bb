//! Saving never loses work: interrupted saves, write errors, corrupt or newer files, read-only
//! folders, missing images and autosave recovery.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use storyloom::project::{
    self, Frame, Project, ProjectError, SaveHooks, open, save, save_with, write_autosave,
};

fn story(title: &str, frames: u64) -> Project {
    let mut p = Project {
        title: title.into(),
        ..Project::default()
    };
    for id in 1..=frames {
        let mut f = Frame::new(id, id * 10);
        f.action = format!("action {id}");
        p.frames.push(f);
    }
    p.next_id = frames + 1;
    p
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap()
}

/// Files in the folder other than the expected ones (e.g. leftover temporary files).
fn stray_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            ![
                "project.ron",
                "project.ron.bak",
                "autosave.ron",
                "frames",
                "cache",
            ]
            .contains(&n.as_str())
        })
        .collect()
}

/// Models a crash (power cut, kill) after the new file is on disk but before the rename.
struct CrashBeforeRename;

impl SaveHooks for CrashBeforeRename {
    fn before_commit(&mut self, temp: &Path, _target: &Path) -> io::Result<()> {
        // The temporary file really is complete at this point.
        assert!(fs::read_to_string(temp).unwrap().contains("second version"));
        Err(io::Error::other("simulated crash"))
    }
}

/// The disk fills up halfway through writing.
struct DiskFullAfter(usize);

impl SaveHooks for DiskFullAfter {
    fn write_temp(&mut self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        use io::Write;
        file.write_all(&bytes[..self.0.min(bytes.len())])?;
        Err(io::Error::from(io::ErrorKind::StorageFull))
    }
}

#[test]
fn save_interrupted_before_rename_leaves_the_old_project() {
    let dir = tempfile::tempdir().unwrap();
    project::create(dir.path(), &story("first version", 3)).unwrap();
    let before = read(dir.path(), "project.ron");

    let err = save_with(
        dir.path(),
        &story("second version", 4),
        &mut CrashBeforeRename,
    )
    .unwrap_err();
    assert!(err.to_string().contains("project.ron"), "{err}");
    assert_eq!(read(dir.path(), "project.ron"), before);
    assert_eq!(open(dir.path()).unwrap().project, story("first version", 3));
    assert!(
        stray_files(dir.path()).is_empty(),
        "{:?}",
        stray_files(dir.path())
    );
}

#[test]
fn disk_full_during_save_leaves_the_old_project() {
    let dir = tempfile::tempdir().unwrap();
    project::create(dir.path(), &story("first version", 3)).unwrap();
    let before = read(dir.path(), "project.ron");

    let err = save_with(
        dir.path(),
        &story("second version", 50),
        &mut DiskFullAfter(100),
    )
    .unwrap_err();
    assert!(matches!(err, ProjectError::Io { .. }), "{err:?}");
    assert_eq!(read(dir.path(), "project.ron"), before);
    assert!(
        stray_files(dir.path()).is_empty(),
        "{:?}",
        stray_files(dir.path())
    );
}

#[test]
fn backup_holds_the_previous_save() {
    let dir = tempfile::tempdir().unwrap();
    project::create(dir.path(), &story("one", 1)).unwrap();
    assert!(!dir.path().join("project.ron.bak").exists());
    let first = read(dir.path(), "project.ron");
    save(dir.path(), &story("two", 2)).unwrap();
    assert_eq!(read(dir.path(), "project.ron.bak"), first);
    let second = read(dir.path(), "project.ron");
    save(dir.path(), &story("three", 3)).unwrap();
    assert_eq!(read(dir.path(), "project.ron.bak"), second);
    assert_eq!(
        project::load_project_file(&dir.path().join("project.ron.bak")).unwrap(),
        story("two", 2)
    );
}

#[test]
fn corrupt_project_names_line_and_column_and_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    project::create(dir.path(), &story("good", 2)).unwrap();
    let text = read(dir.path(), "project.ron");
    // Break the third line.
    let mut lines: Vec<&str> = text.lines().collect();
    let broken_line = format!("{} ]]", lines[2]);
    lines[2] = &broken_line;
    let corrupt = lines.join("\n");
    fs::write(dir.path().join("project.ron"), &corrupt).unwrap();

    let err = open(dir.path()).unwrap_err();
    match &err {
        ProjectError::Parse { path, line, .. } => {
            assert!(path.ends_with("project.ron"));
            assert_eq!(*line, 3, "{err}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    assert!(err.to_string().contains("project.ron:3:"), "{err}");

    // A save into that folder refuses to replace the unreadable file.
    assert!(save(dir.path(), &story("other", 1)).is_err());
    assert_eq!(read(dir.path(), "project.ron"), corrupt);
}

#[test]
fn newer_format_is_refused_with_a_clear_message_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let newer = "(format_version: 7, title: \"from the future\", hologram: true)";
    fs::write(dir.path().join("project.ron"), newer).unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("was made by a newer Storyloom (format 7); this version reads up to 1"),
        "{err}"
    );
    assert!(save(dir.path(), &story("old", 1)).is_err());
    assert_eq!(read(dir.path(), "project.ron"), newer);
}

struct PermissionDenied;

impl SaveHooks for PermissionDenied {
    fn write_temp(&mut self, _file: &mut File, _bytes: &[u8]) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::PermissionDenied))
    }
}

#[test]
fn unwritable_folder_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    project::create(dir.path(), &story("kept", 1)).unwrap();
    let err = save_with(dir.path(), &story("lost?", 1), &mut PermissionDenied).unwrap_err();
    assert!(matches!(err, ProjectError::Unwritable { .. }));
    assert!(
        err.to_string().contains("read-only or not permitted"),
        "{err}"
    );

    // A real read-only folder (skipped where permissions are not enforced, e.g. as root).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let locked = dir.path().join("locked");
        fs::create_dir(&locked).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o555)).unwrap();
        let enforced = File::create(locked.join("probe")).is_err();
        if enforced {
            let err = save(&locked, &story("x", 1)).unwrap_err();
            assert!(matches!(err, ProjectError::Unwritable { .. }), "{err:?}");
        }
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert_eq!(open(dir.path()).unwrap().project, story("kept", 1));
}

#[test]
fn missing_images_are_reported_and_the_project_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = story("gaps", 2);
    for (frame, file) in p.frames.iter_mut().zip(["frames/a.png", "frames/b.png"]) {
        frame.versions.push(project::FrameVersion {
            file: file.into(),
            ..Default::default()
        });
        frame.active_version = Some(0);
    }
    project::create(dir.path(), &p).unwrap();
    fs::write(dir.path().join("frames/a.png"), b"x").unwrap();

    let outcome = open(dir.path()).unwrap();
    assert_eq!(outcome.missing.len(), 1);
    assert_eq!(outcome.missing[0].frame_id, Some(2));
    assert!(!outcome.project.frames[0].versions[0].missing);
    assert!(outcome.project.frames[1].versions[0].missing);
    assert_eq!(outcome.project.missing_versions().len(), 1);
}

#[test]
fn newer_autosave_is_offered_for_recovery_until_saved() {
    let dir = tempfile::tempdir().unwrap();
    project::create(dir.path(), &story("saved", 1)).unwrap();
    // Make the autosave strictly newer even on coarse-timestamp file systems.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    File::options()
        .write(true)
        .open(dir.path().join("project.ron"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    write_autosave(dir.path(), &story("unsaved edits", 2)).unwrap();

    let outcome = open(dir.path()).unwrap();
    assert_eq!(outcome.project, story("saved", 1));
    let recovery = outcome.recovery.expect("autosave offered");
    assert_eq!(recovery.project, story("unsaved edits", 2));

    // Saving makes the autosave obsolete.
    save(dir.path(), &recovery.project).unwrap();
    assert!(!dir.path().join("autosave.ron").exists());
    let outcome = open(dir.path()).unwrap();
    assert!(outcome.recovery.is_none());
    assert_eq!(outcome.project, story("unsaved edits", 2));
}

#[test]
fn corrupt_autosave_is_a_warning_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    project::create(dir.path(), &story("saved", 1)).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    File::options()
        .write(true)
        .open(dir.path().join("project.ron"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    fs::write(dir.path().join("autosave.ron"), "(title: ").unwrap();
    let outcome = open(dir.path()).unwrap();
    assert!(outcome.recovery.is_none());
    assert_eq!(outcome.warnings.len(), 1);
    assert!(
        outcome.warnings[0].contains("autosave.ron:"),
        "{:?}",
        outcome.warnings
    );
}

#[test]
fn not_a_project_folder() {
    let dir = tempfile::tempdir().unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(matches!(err, ProjectError::NotAProject { .. }));
    assert!(err.to_string().ends_with("project.ron is missing"), "{err}");

    // Only a backup left (e.g. the project file was deleted by hand): say so.
    fs::write(dir.path().join("project.ron.bak"), "()").unwrap();
    let err = open(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("(project.ron.bak found: copy it to project.ron to open it)"),
        "{err}"
    );
}
