//! A project with every field set survives save + open unchanged; the format-0 fixture
//! migrates to the expected current project.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use storyloom::consistency::asemconsist::AsemPreset;
use storyloom::project::{
    self, AspectPreset, CURRENT_FORMAT_VERSION, Frame, FrameVersion, GenerationSettings, Identity,
    MethodSettings, ModelChoice, Project, Scene,
};

fn version(file: &str, seed: u64) -> FrameVersion {
    FrameVersion {
        file: file.into(),
        created: 1_795_000_000 + seed,
        seed,
        steps: 28,
        guidance: 3.5,
        width: 64,
        height: 32,
        model: "FLUX.1-dev".into(),
        methods: vec!["CharaConsist".into(), "ASemConsist (AFS on)".into()],
        mask_file: Some(file.replace(".png", ".mask.png")),
        matches_file: Some(file.replace(".png", ".matches.csv")),
        metadata: BTreeMap::from([("seconds".to_string(), "12.5".to_string())]),
        missing: false,
    }
}

/// Every field differs from its default, including unicode text and awkward floats.
fn full_project() -> Project {
    let mut frame_a = Frame {
        id: 3,
        background: "a harbour at dawn, fog".into(),
        action: "waves at a passing ship \"Aurora\"".into(),
        dialogue: "Ahoy! — ça va?".into(),
        notes: "close-up\nkeep the lantern".into(),
        duration_ms: 1750,
        seed: 987_654_321,
        seed_locked: true,
        scene: 2,
        versions: vec![
            version("frames/0003-01.png", 5),
            version("frames/0003-02.png", 6),
        ],
        active_version: Some(1),
    };
    frame_a.versions[0].guidance = 0.1 + 0.2;
    let frame_b = Frame {
        id: 9,
        background: "inside the lighthouse".into(),
        action: "climbs the stairs".into(),
        dialogue: String::new(),
        notes: String::new(),
        duration_ms: 500,
        seed: 1,
        seed_locked: false,
        scene: 7,
        versions: vec![],
        active_version: None,
    };
    // Field by field, so settings other methods add later keep their defaults here.
    let mut methods = MethodSettings::default();
    methods.asemconsist_enabled = true;
    methods.asemconsist = AsemPreset::StmPad.settings();
    Project {
        format_version: CURRENT_FORMAT_VERSION,
        title: "The keeper 🌊".into(),
        identity: Identity {
            prompt: "an old keeper, white beard, yellow raincoat".into(),
            seed: u64::MAX,
            versions: vec![version("frames/identity-01.png", 42)],
            active_version: Some(0),
        },
        style: "ink wash, muted colours".into(),
        frames: vec![frame_a, frame_b],
        generation: GenerationSettings {
            steps: 50,
            guidance: 4.25,
            width: 1024,
            height: 1024,
            aspect: AspectPreset::Square,
        },
        methods,
        model: ModelChoice::Flux {
            transformer: PathBuf::from("weights/flux1-dev.safetensors"),
            vae: PathBuf::from("weights/ae.safetensors"),
            t5: PathBuf::from("weights/t5"),
            t5_tokenizer: PathBuf::from("weights/t5/tokenizer.json"),
            clip: Some(PathBuf::from("weights/clip")),
            clip_tokenizer: None,
        },
        scenes: vec![
            Scene {
                id: 2,
                name: "Harbour".into(),
            },
            Scene {
                id: 7,
                name: "Tower".into(),
            },
        ],
        next_id: 10,
    }
}

/// Creates every image file the project refers to, so nothing is reported missing.
fn touch_images(dir: &Path, project: &Project) {
    let versions = project
        .identity
        .versions
        .iter()
        .chain(project.frames.iter().flat_map(|f| f.versions.iter()));
    for v in versions {
        let path = dir.join(&v.file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"png").unwrap();
    }
}

#[test]
fn full_project_round_trips_equal() {
    let dir = tempfile::tempdir().unwrap();
    let original = full_project();
    project::create(dir.path(), &original).unwrap();
    touch_images(dir.path(), &original);
    assert!(dir.path().join("frames").is_dir());
    assert!(dir.path().join("cache").is_dir());

    let outcome = project::open(dir.path()).unwrap();
    assert_eq!(outcome.project, original);
    assert!(outcome.recovery.is_none());
    assert!(outcome.missing.is_empty());
    assert!(outcome.warnings.is_empty());

    // Saving the loaded project again writes the same text.
    let first = fs::read_to_string(dir.path().join("project.ron")).unwrap();
    project::save(dir.path(), &outcome.project).unwrap();
    let second = fs::read_to_string(dir.path().join("project.ron")).unwrap();
    assert_eq!(first, second);
    assert!(first.contains("format_version: 1"));
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn expected_v0_migration() -> Project {
    let generation = GenerationSettings {
        steps: 24,
        guidance: 3.0,
        width: 64,
        height: 32,
        aspect: AspectPreset::Custom,
    };
    let frame = |id: u64, action: &str, seed: u64, duration_ms: u32, image: Option<&str>| {
        let mut f = Frame::new(id, seed);
        f.action = action.into();
        f.duration_ms = duration_ms;
        if let Some(file) = image {
            f.versions.push(FrameVersion {
                file: file.into(),
                seed,
                steps: 24,
                guidance: 3.0,
                width: 64,
                height: 32,
                model: "built-in".into(),
                missing: file == "frames/2.png",
                ..FrameVersion::default()
            });
            f.active_version = Some(0);
        }
        f
    };
    Project {
        format_version: CURRENT_FORMAT_VERSION,
        title: "The lighthouse keeper".into(),
        identity: Identity {
            prompt: "an old lighthouse keeper with a white beard and a yellow raincoat".into(),
            seed: 1234,
            versions: vec![],
            active_version: None,
        },
        frames: vec![
            frame(
                1,
                "climbs the spiral stairs with a lantern",
                11,
                1500,
                Some("frames/1.png"),
            ),
            frame(
                2,
                "looks out over the stormy sea",
                12,
                2000,
                Some("frames/2.png"),
            ),
            frame(3, "writes in the logbook by candlelight", 13, 3000, None),
        ],
        generation,
        model: ModelChoice::Builtin,
        next_id: 4,
        ..Project::default()
    }
}

#[test]
fn v0_fixture_migrates_to_the_current_format() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/project_v0");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture, dir.path());
    let v0_text = fs::read_to_string(dir.path().join("project.ron")).unwrap();

    let outcome = project::open(dir.path()).unwrap();
    assert_eq!(outcome.project, expected_v0_migration());
    // frames/2.png is absent from the fixture on purpose.
    assert_eq!(outcome.missing.len(), 1);
    assert_eq!(outcome.missing[0].frame_id, Some(2));
    assert_eq!(outcome.missing[0].file, "frames/2.png");

    // Opening does not touch the old file; saving upgrades it and keeps the old one as backup.
    assert_eq!(
        fs::read_to_string(dir.path().join("project.ron")).unwrap(),
        v0_text
    );
    project::save(dir.path(), &outcome.project).unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join("project.ron.bak")).unwrap(),
        v0_text
    );
    let reopened = project::open(dir.path()).unwrap();
    assert_eq!(reopened.project, expected_v0_migration());
}
