//! Opening and saving a 1000-frame project (two versions per frame, every image present),
//! the size of a long storyboard. Goal: open in under 200 ms. Prints the process's peak
//! resident memory (VmHWM) where /proc is available.

use std::collections::BTreeMap;
use std::fs;
use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use storyloom::project::{self, Frame, FrameVersion, Project};

const FRAMES: u64 = 1000;

fn big_project() -> Project {
    let mut p = Project {
        title: "A long storyboard".into(),
        ..Project::default()
    };
    p.identity.prompt = "an old lighthouse keeper with a white beard and a yellow raincoat".into();
    for id in 1..=FRAMES {
        let mut f = Frame::new(id, id * 7919);
        f.background = format!("the lighthouse gallery at dusk, storm clouds, shot {id}");
        f.action = "climbs the spiral stairs holding a lantern, breathing hard".into();
        f.dialogue = "Almost there. One more night.".into();
        f.notes = "low angle; match the previous frame's lantern glow".into();
        f.versions = (1..=2)
            .map(|v| FrameVersion {
                file: format!("frames/{id:05}-{v:02}.png"),
                created: 1_795_000_000 + id * 10 + v,
                seed: id * 7919 + v,
                steps: 28,
                guidance: 3.5,
                width: 1024,
                height: 576,
                model: "FLUX.1-dev".into(),
                methods: vec!["CharaConsist".into(), "ASemConsist".into()],
                mask_file: Some(format!("frames/{id:05}-{v:02}.mask.png")),
                matches_file: Some(format!("frames/{id:05}-{v:02}.matches.csv")),
                metadata: BTreeMap::from([("seconds".into(), "41.7".into())]),
                missing: false,
            })
            .collect();
        f.active_version = Some(1);
        p.frames.push(f);
    }
    p.next_id = FRAMES + 1;
    p
}

fn peak_memory_kb() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn touch_images(dir: &Path, p: &Project) {
    fs::create_dir_all(dir.join("frames")).unwrap();
    for v in p.frames.iter().flat_map(|f| f.versions.iter()) {
        fs::write(dir.join(&v.file), b"").unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let original = big_project();
    project::create(dir.path(), &original).unwrap();
    touch_images(dir.path(), &original);
    let size = fs::metadata(dir.path().join("project.ron")).unwrap().len();
    println!("project.ron: {FRAMES} frames, {} KiB", size / 1024);
    if let Some(kb) = peak_memory_kb() {
        println!("peak memory before the benchmark: {} MiB", kb / 1024);
    }

    let mut group = c.benchmark_group("project_1000_frames");
    group.sample_size(20);
    group.bench_function("open", |b| {
        b.iter(|| black_box(project::open(dir.path()).unwrap()))
    });
    group.bench_function("save", |b| {
        b.iter(|| project::save(dir.path(), black_box(&original)).unwrap())
    });
    group.finish();

    let opened = project::open(dir.path()).unwrap();
    assert_eq!(opened.project, original);
    assert!(opened.missing.is_empty());
    if let Some(kb) = peak_memory_kb() {
        println!(
            "peak memory (VmHWM) after opening and saving: {} MiB",
            kb / 1024
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
