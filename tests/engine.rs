//! The engine thread on the tiny test model: queueing, progress, results, cancellation,
//! errors, all through the channels.

mod engine_common;

use engine_common::{load_tiny, until};
use storyloom::consistency::MethodSettings;
use storyloom::engine::{
    EngineHandle, Event, FrameJob, Job, ModelSpec, RenderSettings, StoryContext,
};

fn story() -> StoryContext {
    StoryContext {
        identity: "a round blue creature".into(),
        style: String::new(),
        identity_seed: 7,
        frames: (1..=3).map(frame).collect(),
        cache_dir: None,
    }
}

fn frame(id: u64) -> FrameJob {
    FrameJob {
        frame_id: id,
        background: "on a beach".into(),
        action: "jumping".into(),
        seed: 100 + id,
        scene: 0,
    }
}

fn settings(steps: usize) -> RenderSettings {
    RenderSettings {
        width: 32,
        height: 32,
        steps,
        guidance: 3.5,
        previews: true,
        methods: MethodSettings::default(),
    }
}

fn loaded(engine: &EngineHandle) {
    load_tiny(engine, 1);
}

#[test]
fn generates_frames_with_progress_and_results() {
    let engine = EngineHandle::spawn(|| {});
    loaded(&engine);
    engine.send(Job::Generate {
        story: story(),
        frames: vec![frame(1), frame(2)],
        settings: settings(3),
    });
    let events = until(&engine, |e| matches!(e, Event::Idle));
    let progress: Vec<(u64, usize, usize)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress {
                frame_id,
                step,
                of,
                preview,
            } => {
                assert!(preview.is_some());
                Some((*frame_id, *step, *of))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        progress,
        vec![
            (1, 1, 3),
            (1, 2, 3),
            (1, 3, 3),
            (2, 1, 3),
            (2, 2, 3),
            (2, 3, 3)
        ]
    );
    let done: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::FrameDone(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(done.len(), 2);
    assert_eq!(done[0].frame_id, 1);
    assert_eq!((done[0].image.width(), done[0].image.height()), (32, 32));
    assert_eq!(done[1].metadata.seed, 102);
    assert_eq!(
        done[0].metadata.segments,
        vec!["on a beach", "a round blue creature", "jumping"]
    );
}

#[test]
fn same_seed_gives_the_same_image_across_runs() {
    let engine = EngineHandle::spawn(|| {});
    loaded(&engine);
    let mut images = Vec::new();
    for _ in 0..2 {
        engine.send(Job::Generate {
            story: story(),
            frames: vec![frame(5)],
            settings: settings(2),
        });
        let events = until(&engine, |e| matches!(e, Event::FrameDone(_)));
        if let Some(Event::FrameDone(r)) = events.last() {
            images.push(r.image.clone());
        }
    }
    assert_eq!(images[0], images[1]);
}

#[test]
fn cancel_stops_within_a_step_and_the_engine_keeps_working() {
    let engine = EngineHandle::spawn(|| {});
    loaded(&engine);
    engine.send(Job::Generate {
        story: story(),
        frames: vec![frame(1), frame(2), frame(3)],
        settings: settings(10_000),
    });
    until(&engine, |e| matches!(e, Event::Progress { .. }));
    engine.cancel();
    let events = until(&engine, |e| matches!(e, Event::Idle));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Cancelled { frame_id: Some(1) }))
    );
    assert!(!events.iter().any(|e| matches!(e, Event::FrameDone(_))));
    let steps_after: usize = events
        .iter()
        .filter(|e| matches!(e, Event::Progress { .. }))
        .count();
    assert!(steps_after <= 2, "{steps_after} steps ran after the cancel");
    // The queue behind it is gone, and new work runs normally.
    engine.send(Job::Generate {
        story: story(),
        frames: vec![frame(4)],
        settings: settings(2),
    });
    let events = until(&engine, |e| matches!(e, Event::Idle));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::FrameDone(r) if r.frame_id == 4))
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::FrameDone(r) if r.frame_id == 2 || r.frame_id == 3))
    );
}

#[test]
fn errors_are_events_not_crashes() {
    let engine = EngineHandle::spawn(|| {});
    engine.send(Job::Generate {
        story: story(),
        frames: vec![frame(1)],
        settings: settings(2),
    });
    let events = until(&engine, |e| matches!(e, Event::Error { .. }));
    assert!(
        matches!(events.last(), Some(Event::Error { frame_id: Some(1), message }) if message.contains("no model"))
    );
    // A bad model path is an error event too, and the engine still answers afterwards.
    engine.send(Job::LoadModel(ModelSpec::Flux(
        storyloom::engine::FluxFiles {
            transformer: "/nonexistent/flux1-dev.safetensors".into(),
            ..Default::default()
        },
    )));
    until(&engine, |e| {
        matches!(e, Event::Error { frame_id: None, .. })
    });
    loaded(&engine);
}

#[test]
fn dropping_the_engine_right_after_a_cancel_does_not_hang() {
    // A cancel drains the job channel; a shutdown that arrives during that drain must still
    // end the worker, or dropping the handle waits forever.
    for _ in 0..5 {
        let engine = EngineHandle::spawn(|| {});
        loaded(&engine);
        engine.send(Job::Generate {
            story: story(),
            frames: (1..=3).map(frame).collect(),
            settings: settings(50),
        });
        until(&engine, |e| matches!(e, Event::Progress { .. }));
        engine.cancel();
        drop(engine);
    }
}
