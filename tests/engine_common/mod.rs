//! Helpers shared by the engine tests: waiting for events from the engine thread.

use std::time::Duration;

use storyloom::engine::{EngineHandle, Event, Job, ModelSpec};

/// The next event; a test fails instead of hanging when the engine stops answering.
fn next(engine: &EngineHandle) -> Event {
    engine
        .events()
        .recv_timeout(Duration::from_secs(120))
        .expect("the engine answers")
}

/// Collects events until `stop` says so (the matching event included).
pub fn until(engine: &EngineHandle, mut stop: impl FnMut(&Event) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let e = next(engine);
        let done = stop(&e);
        seen.push(e);
        if done {
            return seen;
        }
    }
}

/// Loads the tiny test model with `seed` and waits until the engine is idle.
pub fn load_tiny(engine: &EngineHandle, seed: u64) {
    engine.send(Job::LoadModel(ModelSpec::TinyRandom { seed }));
    until(engine, |e| matches!(e, Event::ModelLoaded { .. }));
    until(engine, |e| matches!(e, Event::Idle));
}
