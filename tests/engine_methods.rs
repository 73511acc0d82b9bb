//! The engine with the consistency methods on the tiny test model: a story renders its
//! identity and frames together, each frame comes back with its analysis, a regenerated
//! frame reuses the stored identity and reproduces its image, cancel and bad input.

mod engine_common;

use engine_common::{load_tiny, until};
use storyloom::consistency::MethodSettings;
use storyloom::consistency::asemconsist::AfsMode;
use storyloom::consistency::characonsist::BackgroundMode;
use storyloom::engine::{
    EngineHandle, Event, FrameJob, FrameResult, Job, RenderSettings, StoryContext,
};

fn frame(id: u64, background: &str, action: &str) -> FrameJob {
    FrameJob {
        frame_id: id,
        background: background.into(),
        action: action.into(),
        seed: 100 + id,
        scene: 0,
    }
}

fn story(cache_dir: Option<std::path::PathBuf>) -> StoryContext {
    StoryContext {
        identity: "a round blue creature".into(),
        style: String::new(),
        identity_seed: 7,
        frames: vec![
            frame(1, "on a beach", "jumping"),
            frame(2, "in a forest", "sitting"),
            frame(3, "on a beach", "waving"),
        ],
        cache_dir,
    }
}

fn settings(methods: MethodSettings) -> RenderSettings {
    RenderSettings {
        width: 32,
        height: 32,
        steps: 6,
        guidance: 3.5,
        previews: false,
        methods,
    }
}

fn chara() -> MethodSettings {
    let mut m = MethodSettings {
        characonsist_enabled: true,
        ..MethodSettings::default()
    };
    m.characonsist.background = BackgroundMode::Switch;
    m
}

fn loaded() -> EngineHandle {
    let engine = EngineHandle::spawn(|| {});
    load_tiny(&engine, 3);
    engine
}

fn done(events: &[Event]) -> Vec<&FrameResult> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::FrameDone(r) => Some(r.as_ref()),
            _ => None,
        })
        .collect()
}

fn errors(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Error { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn max_u8_diff(a: &image::RgbImage, b: &image::RgbImage) -> u8 {
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

#[test]
fn characonsist_story_reports_identity_then_frames_with_analyses() {
    let engine = loaded();
    let s = story(None);
    engine.send(Job::Generate {
        story: s.clone(),
        frames: s.frames.clone(),
        settings: settings(chara()),
    });
    let events = until(&engine, |e| matches!(e, Event::Idle));
    assert!(errors(&events).is_empty(), "{:?}", errors(&events));
    let identity_at = events
        .iter()
        .position(|e| matches!(e, Event::IdentityDone { .. }))
        .expect("the identity image is reported");
    let first_done = events
        .iter()
        .position(|e| matches!(e, Event::FrameDone(_)))
        .unwrap();
    assert!(identity_at < first_done);
    let results = done(&events);
    assert_eq!(
        results.iter().map(|r| r.frame_id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    for r in &results {
        let a = r
            .analysis
            .characonsist
            .as_ref()
            .expect("CharaConsist analysis");
        // 32x32 pixels through the tiny model's codec give a 4x4 token grid.
        assert_eq!(a.frame_mask.fg.len(), a.frame_mask.rows * a.frame_mask.cols);
        assert!(a.frame_mask.rows > 0);
        assert_eq!(a.identity_mask.rows, a.frame_mask.rows);
        assert!(a.matches.iter().all(|m| m.similarity > 0.5));
        assert!(r.metadata.methods_used[0].starts_with("CharaConsist (switch background"));
    }
    // Progress counts rise over the passes and end at their total.
    let last = events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Progress { step, of, .. } => Some((*step, *of)),
            _ => None,
        })
        .unwrap();
    assert_eq!(last.0, last.1);
}

#[test]
fn regenerating_a_frame_reuses_the_stored_identity_and_reproduces_it() {
    let cache = tempfile::tempdir().unwrap();
    let engine = loaded();
    let s = story(Some(cache.path().to_path_buf()));
    engine.send(Job::Generate {
        story: s.clone(),
        frames: s.frames.clone(),
        settings: settings(chara()),
    });
    let events = until(&engine, |e| matches!(e, Event::Idle));
    let first = done(&events)[1].image.clone();

    // The first regeneration records the identity (stored bank), the second reuses it.
    for round in 0..2 {
        engine.send(Job::Regenerate {
            story: s.clone(),
            frame: s.frames[1].clone(),
            settings: settings(chara()),
        });
        let events = until(&engine, |e| matches!(e, Event::Idle));
        assert!(errors(&events).is_empty(), "{:?}", errors(&events));
        let again = done(&events);
        assert_eq!(again.len(), 1);
        assert!(again[0].metadata.methods_used[0].contains("stored identity"));
        // Co-batched and stored identities give the same image (f32 bank on the CPU).
        assert!(
            max_u8_diff(&first, &again[0].image) <= 1,
            "round {round}: images differ by {}",
            max_u8_diff(&first, &again[0].image)
        );
    }
    // The stored identity went to the cache folder, so a new engine reuses it too.
    assert!(std::fs::read_dir(cache.path()).unwrap().count() >= 1);
    drop(engine);
    let engine = loaded();
    engine.send(Job::Regenerate {
        story: s.clone(),
        frame: s.frames[1].clone(),
        settings: settings(chara()),
    });
    let events = until(&engine, |e| matches!(e, Event::Idle));
    assert!(errors(&events).is_empty(), "{:?}", errors(&events));
    assert!(max_u8_diff(&first, &done(&events)[0].image) <= 1);
}

#[test]
fn asemconsist_reports_its_ambiguity_decision() {
    let engine = loaded();
    let s = story(None);
    let mut methods = MethodSettings {
        asemconsist_enabled: true,
        ..MethodSettings::default()
    };
    methods.asemconsist.afs.mode = AfsMode::Auto;
    engine.send(Job::Generate {
        story: s.clone(),
        frames: s.frames[..2].to_vec(),
        settings: settings(methods),
    });
    let events = until(&engine, |e| matches!(e, Event::Idle));
    assert!(errors(&events).is_empty(), "{:?}", errors(&events));
    let results = done(&events);
    assert_eq!(results.len(), 2);
    for r in results {
        let afs = r.analysis.afs.expect("the AFS decision is reported");
        assert!(afs.radius.is_some_and(|x| x.is_finite() && x >= 0.0));
        assert!(r.metadata.methods_used[0].starts_with("ASemConsist (AFS"));
    }
}

#[test]
fn both_methods_together_render_every_frame() {
    let engine = loaded();
    let s = story(None);
    let mut methods = chara();
    methods.asemconsist_enabled = true;
    engine.send(Job::Generate {
        story: s.clone(),
        frames: s.frames.clone(),
        settings: settings(methods),
    });
    let events = until(&engine, |e| matches!(e, Event::Idle));
    assert!(errors(&events).is_empty(), "{:?}", errors(&events));
    let results = done(&events);
    assert_eq!(results.len(), 3);
    assert!(
        results
            .iter()
            .all(|r| r.analysis.characonsist.is_some() && r.analysis.afs.is_some())
    );
    assert_eq!(results[0].metadata.methods_used.len(), 2);
}

#[test]
fn a_method_story_can_be_cancelled_and_the_engine_goes_on() {
    let engine = loaded();
    let s = story(None);
    let mut long = settings(chara());
    long.steps = 40;
    engine.send(Job::Generate {
        story: s.clone(),
        frames: s.frames.clone(),
        settings: long,
    });
    until(&engine, |e| matches!(e, Event::Progress { .. }));
    engine.cancel();
    let events = until(&engine, |e| matches!(e, Event::Idle));
    assert!(events.iter().any(|e| matches!(e, Event::Cancelled { .. })));
    assert!(done(&events).is_empty());
    engine.send(Job::Generate {
        story: s.clone(),
        frames: s.frames[..1].to_vec(),
        settings: settings(chara()),
    });
    let events = until(&engine, |e| matches!(e, Event::Idle));
    assert_eq!(done(&events).len(), 1);
}

#[test]
fn a_frame_outside_its_story_is_a_clear_error() {
    let engine = loaded();
    let s = story(None);
    engine.send(Job::Generate {
        story: s,
        frames: vec![frame(9, "in a city", "running")],
        settings: settings(chara()),
    });
    let events = until(&engine, |e| matches!(e, Event::Idle));
    let errs = errors(&events);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains("not part of the story"), "{}", errs[0]);
}

#[test]
fn live_previews_follow_every_frame_of_a_method_story() {
    let engine = loaded();
    let s = story(None);
    for methods in [chara(), {
        let mut m = MethodSettings {
            asemconsist_enabled: true,
            ..MethodSettings::default()
        };
        m.asemconsist.afs.mode = AfsMode::Never;
        m
    }] {
        let mut with_previews = settings(methods);
        with_previews.previews = true;
        engine.send(Job::Generate {
            story: s.clone(),
            frames: s.frames.clone(),
            settings: with_previews,
        });
        let events = until(&engine, |e| matches!(e, Event::Idle));
        assert!(errors(&events).is_empty(), "{:?}", errors(&events));
        for id in [1, 2, 3] {
            let previews: Vec<(u32, u32)> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Progress {
                        frame_id,
                        preview: Some(p),
                        ..
                    } if *frame_id == id => Some(p.dimensions()),
                    _ => None,
                })
                .collect();
            // Every step of the frame passes has the frame's own preview at the frame's size.
            assert!(
                previews.len() >= 6,
                "frame {id}: {} previews",
                previews.len()
            );
            assert!(previews.iter().all(|&d| d == (32, 32)));
            // The last step's prediction is the finished image: the preview came from this
            // frame's batch row, not a neighbour's.
            let last = events
                .iter()
                .rev()
                .find_map(|e| match e {
                    Event::Progress {
                        frame_id,
                        preview: Some(p),
                        ..
                    } if *frame_id == id => Some(p.clone()),
                    _ => None,
                })
                .unwrap();
            let finished = &done(&events)
                .into_iter()
                .find(|r| r.frame_id == id)
                .unwrap()
                .image;
            assert!(max_u8_diff(&last, finished) <= 1, "frame {id}");
        }
    }
}

/// Renders `frames` of `story` with ASemConsist alone; every event until the engine is idle.
fn generate_with_asem(
    engine: &EngineHandle,
    story: &StoryContext,
    frames: &[FrameJob],
) -> Vec<Event> {
    engine.send(Job::Generate {
        story: story.clone(),
        frames: frames.to_vec(),
        settings: settings(MethodSettings {
            asemconsist_enabled: true,
            ..MethodSettings::default()
        }),
    });
    until(engine, |e| matches!(e, Event::Idle))
}

#[test]
fn a_story_longer_than_the_text_window_renders_in_groups() {
    // The tiny encoder holds 31 words: the identity (4 words) and 8 frames of 6 words make
    // 52, so ASemConsist splits the story into groups of 4 frames (4 + 4·6 = 28 words).
    let engine = loaded();
    let mut s = story(None);
    s.frames = (1..=8)
        .map(|i| frame(i, "on a sunny beach", "jumping high"))
        .collect();
    let events = generate_with_asem(&engine, &s, &s.frames);
    assert!(errors(&events).is_empty(), "{:?}", errors(&events));
    let results = done(&events);
    assert_eq!(results.len(), 8);
    for r in &results {
        assert!(r.analysis.afs.is_some());
        let label = &r.metadata.methods_used[0];
        let expected = if r.frame_id <= 4 {
            "group 1 of 2, frames 1-4)"
        } else {
            "group 2 of 2, frames 5-8)"
        };
        assert!(label.ends_with(expected), "frame {}: {label}", r.frame_id);
    }
    // A frame of the second group rendered alone is rendered in its group, as in the story.
    let events = generate_with_asem(&engine, &s, &s.frames[5..6]);
    assert!(errors(&events).is_empty(), "{:?}", errors(&events));
    let again = done(&events);
    assert_eq!(again.len(), 1);
    assert!(again[0].metadata.methods_used[0].ends_with("group 2 of 2, frames 5-8)"));
}

#[test]
fn a_frame_too_long_for_the_text_window_is_named() {
    let engine = loaded();
    let mut s = story(None);
    s.frames = vec![
        frame(1, "on a beach", "jumping"),
        frame(2, &"far away ".repeat(20), "sitting"),
    ];
    let events = generate_with_asem(&engine, &s, &s.frames);
    let errors = errors(&events);
    assert!(!errors.is_empty());
    for e in &errors {
        assert!(e.contains("frame 2 does not fit"), "{e}");
    }
}
