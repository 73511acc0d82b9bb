//! The `storyloom` binary headless: demo project, render on the tiny model, export, and
//! clear failures with a non-zero exit code.

use std::process::Command;

fn storyloom() -> Command {
    Command::new(env!("CARGO_BIN_EXE_storyloom"))
}

#[test]
fn renders_and_exports_the_demo_project_headless() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("demo");
    assert!(
        storyloom()
            .arg("demo")
            .arg(&project)
            .status()
            .unwrap()
            .success()
    );
    let out = dir.path().join("out");
    let run = storyloom()
        .args(["render"])
        .arg(&project)
        .args(["--model", "tiny", "--frames", "1,3-4", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for n in [1, 3, 4] {
        let img = image::open(out.join(format!("frame_{n:03}.png"))).unwrap();
        assert_eq!((img.width(), img.height()), (64, 64));
    }
    assert!(!out.join("frame_002.png").exists());
    // The rendered frames are stored in the project as versions, with their settings in the PNG.
    let reopened = storyloom::project::open(&project).unwrap().project;
    assert_eq!(
        reopened
            .frames
            .iter()
            .filter(|f| !f.versions.is_empty())
            .count(),
        3
    );
    // The demo renders with CharaConsist: the identity image is kept, and every frame has its
    // foreground mask beside the PNG and says which method made it.
    assert_eq!(reopened.identity.versions.len(), 1);
    let first = reopened.frames[0].active().unwrap();
    assert!(
        first.methods[0].starts_with("CharaConsist"),
        "{:?}",
        first.methods
    );
    let mask = first.mask_file.as_deref().expect("a mask file");
    assert!(project.join(mask).exists());
    let sheet = dir.path().join("sheet.png");
    let export = storyloom()
        .arg("export")
        .arg(&project)
        .arg("--sheet")
        .arg(&sheet)
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    assert!(image::open(&sheet).unwrap().width() > 64);
}

#[test]
fn a_bad_project_fails_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("project.ron"),
        "(format_version: 1, title: ",
    )
    .unwrap();
    let run = storyloom()
        .arg("render")
        .arg(dir.path())
        .args(["--model", "tiny"])
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("project.ron"), "{err}");
    let missing = storyloom()
        .args(["render", "/nonexistent/story"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
}
