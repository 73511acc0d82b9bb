//! The engine thread: owns the model and device, runs jobs in order, reports events.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::messages::{Event, FrameJob, Job, RenderSettings, StoryContext};
use super::render::{LoadedModel, load_model, render_frame};
use super::story::render_with_methods;

/// The UI's side of the engine.
pub struct EngineHandle {
    jobs: Sender<Job>,
    events: Receiver<Event>,
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EngineHandle {
    /// Starts the engine thread. `notify` is called after every event (the UI passes a
    /// repaint request, so it never has to poll).
    pub fn spawn(notify: impl Fn() + Send + 'static) -> Self {
        let (job_tx, job_rx) = unbounded();
        let (event_tx, event_rx) = unbounded();
        let cancel = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            jobs: job_rx,
            events: event_tx,
            notify: Box::new(notify),
            cancel: cancel.clone(),
            queue: VecDeque::new(),
            model: None,
            shutdown: false,
        };
        let thread = std::thread::Builder::new()
            .name("storyloom-engine".into())
            .spawn(move || worker.run())
            .expect("spawning the engine thread");
        Self {
            jobs: job_tx,
            events: event_rx,
            cancel,
            thread: Some(thread),
        }
    }

    /// Sends a job. A cancel takes effect at once: the running frame stops before its next step.
    pub fn send(&self, job: Job) {
        if matches!(job, Job::Cancel) {
            self.cancel.store(true, Ordering::SeqCst);
        }
        // The engine only stops receiving on shutdown; a job sent after that is moot.
        let _ = self.jobs.send(job);
    }

    pub fn cancel(&self) {
        self.send(Job::Cancel);
    }

    /// The next event, if any (never blocks).
    pub fn try_recv(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// The event channel, for blocking consumers such as the headless renderer.
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::SeqCst);
        let _ = self.jobs.send(Job::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One unit of queued work.
enum Work {
    Load(super::messages::ModelSpec),
    Frame {
        story: StoryContext,
        frame: FrameJob,
        settings: RenderSettings,
    },
    /// Frames rendered together because a consistency method needs the whole story.
    Story {
        story: StoryContext,
        frames: Vec<FrameJob>,
        settings: RenderSettings,
        regenerate: bool,
    },
}

struct Worker {
    jobs: Receiver<Job>,
    events: Sender<Event>,
    notify: Box<dyn Fn() + Send>,
    cancel: Arc<AtomicBool>,
    queue: VecDeque<Work>,
    model: Option<LoadedModel>,
    /// A shutdown arrived (possibly while a cancelled job drained the channel).
    shutdown: bool,
}

impl Worker {
    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
        (self.notify)();
    }

    /// Takes a job into the queue. Returns false on shutdown.
    fn accept(&mut self, job: Job) -> bool {
        match job {
            Job::Shutdown => {
                self.shutdown = true;
                return false;
            }
            Job::Cancel => {
                // The flag was raised when the cancel was sent, so the running frame has
                // stopped; everything queued before the cancel goes, what comes after stays.
                self.cancel.store(false, Ordering::SeqCst);
                let dropped = self.queue.len();
                self.queue.clear();
                tracing::info!(dropped, "cancel: queue cleared");
                self.emit(Event::Cancelled { frame_id: None });
            }
            Job::LoadModel(spec) => self.queue.push_back(Work::Load(spec)),
            Job::Generate {
                story,
                frames,
                settings,
            } => {
                for frame in &frames {
                    self.emit(Event::Queued {
                        frame_id: frame.frame_id,
                    });
                }
                if settings.methods.any_enabled() {
                    self.queue.push_back(Work::Story {
                        story,
                        frames,
                        settings,
                        regenerate: false,
                    });
                } else {
                    for frame in frames {
                        self.queue.push_back(Work::Frame {
                            story: story.clone(),
                            frame,
                            settings: settings.clone(),
                        });
                    }
                }
            }
            Job::Regenerate {
                story,
                frame,
                settings,
            } => {
                self.emit(Event::Queued {
                    frame_id: frame.frame_id,
                });
                if settings.methods.any_enabled() {
                    self.queue.push_back(Work::Story {
                        story,
                        frames: vec![frame],
                        settings,
                        regenerate: true,
                    });
                } else {
                    self.queue.push_back(Work::Frame {
                        story,
                        frame,
                        settings,
                    });
                }
            }
        }
        true
    }

    /// Drains whatever the UI sent meanwhile. Returns false on shutdown.
    fn drain(&mut self) -> bool {
        while let Ok(job) = self.jobs.try_recv() {
            if !self.accept(job) {
                return false;
            }
        }
        true
    }

    fn run(mut self) {
        loop {
            if !self.drain() || self.shutdown {
                return;
            }
            let Some(work) = self.queue.pop_front() else {
                self.emit(Event::Idle);
                match self.jobs.recv() {
                    Ok(job) => {
                        if !self.accept(job) {
                            return;
                        }
                        continue;
                    }
                    Err(_) => return,
                }
            };
            self.execute(work);
        }
    }

    fn execute(&mut self, work: Work) {
        match work {
            Work::Load(spec) => {
                let result = catch_unwind(AssertUnwindSafe(|| load_model(&spec)));
                match flatten_panic(result) {
                    Ok(model) => {
                        let (name, description) = (model.name.clone(), model.description.clone());
                        self.model = Some(model);
                        self.emit(Event::ModelLoaded { name, description });
                    }
                    Err(message) => self.emit(Event::Error {
                        frame_id: None,
                        message,
                    }),
                }
            }
            Work::Story {
                story,
                frames,
                settings,
                regenerate,
            } => self.execute_story(story, frames, settings, regenerate),
            Work::Frame {
                story,
                frame,
                settings,
            } => {
                let frame_id = frame.frame_id;
                let Some(mut model) = self.model.take() else {
                    self.emit(Event::Error {
                        frame_id: Some(frame_id),
                        message: "no model is loaded".into(),
                    });
                    return;
                };
                let cancel = self.cancel.clone();
                let events = self.events.clone();
                let result = {
                    let notify = &self.notify;
                    let mut report = |e: Event| {
                        let _ = events.send(e);
                        notify();
                    };
                    catch_unwind(AssertUnwindSafe(|| {
                        render_frame(&mut model, &story, &frame, &settings, &cancel, &mut report)
                    }))
                };
                self.model = Some(model);
                match flatten_panic(result) {
                    Ok(Some(done)) => self.emit(Event::FrameDone(Box::new(done))),
                    Ok(None) => {
                        // Cancelled: whatever is queued behind the cancel goes too.
                        self.drain();
                        self.emit(Event::Cancelled {
                            frame_id: Some(frame_id),
                        });
                    }
                    Err(message) => self.emit(Event::Error {
                        frame_id: Some(frame_id),
                        message,
                    }),
                }
            }
        }
    }
}

impl Worker {
    /// Renders frames together with the consistency methods; every frame gets its
    /// `FrameDone`, or every frame its `Error`.
    fn execute_story(
        &mut self,
        story: StoryContext,
        frames: Vec<FrameJob>,
        settings: RenderSettings,
        regenerate: bool,
    ) {
        let Some(mut model) = self.model.take() else {
            for f in &frames {
                self.emit(Event::Error {
                    frame_id: Some(f.frame_id),
                    message: "no model is loaded".into(),
                });
            }
            return;
        };
        let cancel = self.cancel.clone();
        let events = self.events.clone();
        let result = {
            let notify = &self.notify;
            let mut report = |e: Event| {
                let _ = events.send(e);
                notify();
            };
            catch_unwind(AssertUnwindSafe(|| {
                render_with_methods(
                    &mut model,
                    &story,
                    &frames,
                    &settings,
                    regenerate,
                    &cancel,
                    &mut report,
                )
            }))
        };
        self.model = Some(model);
        match flatten_panic(result) {
            Ok(Some(done)) => {
                for result in done {
                    self.emit(Event::FrameDone(Box::new(result)));
                }
            }
            Ok(None) => {
                self.drain();
                self.emit(Event::Cancelled { frame_id: None });
            }
            Err(message) => {
                for f in &frames {
                    self.emit(Event::Error {
                        frame_id: Some(f.frame_id),
                        message: message.clone(),
                    });
                }
            }
        }
    }
}

/// Turns a panic inside a job into an error message; the engine lives on.
fn flatten_panic<T>(r: std::thread::Result<anyhow::Result<T>>) -> Result<T, String> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(%what, "panic inside an engine job");
            Err(format!("internal error: {what}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_message() {
        let r = catch_unwind(|| -> anyhow::Result<()> { panic!("boom") });
        assert_eq!(flatten_panic(r).unwrap_err(), "internal error: boom");
        let r = catch_unwind(|| -> anyhow::Result<u8> { anyhow::bail!("bad input") });
        assert_eq!(flatten_panic(r).unwrap_err(), "bad input");
    }
}
