//! What the UI knows about the engine's work: each frame's status, the model state, overall
//! progress and the time left. Fed with the engine's events; pure state, no drawing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::engine::{Event, FrameResult, ModelSpec};

/// A frame's generation status as the timeline shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameStatus {
    /// Waiting in the engine's queue.
    Queued,
    /// Sampling: step `step` of `of` (1-based).
    Running {
        step: usize,
        of: usize,
    },
    Failed(String),
    Cancelled,
}

/// The model as far as the UI knows.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ModelState {
    #[default]
    None,
    Loading(ModelSpec),
    Loaded {
        name: String,
        description: String,
    },
    Failed(String),
}

/// What an event means for the rest of the app.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing beyond the status change.
    Nothing,
    FrameDone(Box<FrameResult>),
    IdentityDone {
        image: RgbImage,
        analysis: crate::consistency::FrameAnalysis,
        metadata: Box<crate::engine::GenerationMetadata>,
    },
    /// An error to show (toast + log).
    Error {
        frame_id: Option<u64>,
        message: String,
    },
    ModelLoaded,
}

/// Frame statuses, previews and progress.
#[derive(Debug, Default)]
pub struct GenerationTracker {
    pub status: HashMap<u64, FrameStatus>,
    /// Latest preview per running frame (only when previews are on).
    pub previews: HashMap<u64, RgbImage>,
    pub model: ModelState,
    /// Frames sent in the current run, and how many of them finished (done, failed or
    /// cancelled).
    run_total: usize,
    run_finished: usize,
    /// Steps per frame of the current run (for the time estimate of queued frames).
    steps_per_frame: usize,
    /// Seconds per sampling step, smoothed.
    seconds_per_step: Option<f64>,
    last_step: Option<(u64, usize, Instant)>,
}

/// Exponential smoothing weight of a new step duration.
const STEP_SMOOTHING: f64 = 0.3;

/// Seconds left: the remaining steps at the measured pace.
pub fn eta_seconds(remaining_steps: usize, seconds_per_step: f64) -> f64 {
    remaining_steps as f64 * seconds_per_step
}

/// "1 min 05 s" / "42 s".
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    if s >= 60 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

impl GenerationTracker {
    /// Records that frames were sent for generation (the engine echoes `Queued` too).
    pub fn start(&mut self, frame_ids: &[u64], steps: usize) {
        if !self.is_busy() {
            self.run_total = 0;
            self.run_finished = 0;
        }
        self.run_total += frame_ids.len();
        self.steps_per_frame = steps;
        for id in frame_ids {
            self.status.insert(*id, FrameStatus::Queued);
        }
    }

    pub fn model_loading(&mut self, spec: ModelSpec) {
        self.model = ModelState::Loading(spec);
    }

    /// True while frames are queued or running.
    pub fn is_busy(&self) -> bool {
        self.status
            .values()
            .any(|s| matches!(s, FrameStatus::Queued | FrameStatus::Running { .. }))
    }

    pub fn frame_status(&self, frame_id: u64) -> Option<&FrameStatus> {
        self.status.get(&frame_id)
    }

    /// Fraction of the current run done, counting the running frame's steps.
    pub fn overall_progress(&self) -> Option<f32> {
        if self.run_total == 0 || !self.is_busy() {
            return None;
        }
        let running: f32 = self
            .status
            .values()
            .map(|s| match s {
                FrameStatus::Running { step, of } if *of > 0 => *step as f32 / *of as f32,
                _ => 0.0,
            })
            .sum();
        Some(((self.run_finished as f32 + running) / self.run_total as f32).clamp(0.0, 1.0))
    }

    /// Steps still to run: the rest of the running frame plus every queued frame.
    pub fn remaining_steps(&self) -> usize {
        self.status
            .values()
            .map(|s| match s {
                FrameStatus::Queued => self.steps_per_frame,
                FrameStatus::Running { step, of } => of.saturating_sub(*step),
                _ => 0,
            })
            .sum()
    }

    pub fn eta(&self) -> Option<Duration> {
        let pace = self.seconds_per_step?;
        self.is_busy()
            .then(|| Duration::from_secs_f64(eta_seconds(self.remaining_steps(), pace)))
    }

    fn finish(&mut self, frame_id: u64, status: Option<FrameStatus>) {
        let was_active = matches!(
            self.status.get(&frame_id),
            Some(FrameStatus::Queued | FrameStatus::Running { .. })
        );
        if was_active {
            self.run_finished += 1;
        }
        match status {
            Some(s) => self.status.insert(frame_id, s),
            None => self.status.remove(&frame_id),
        };
        self.previews.remove(&frame_id);
    }

    /// Applies an engine event.
    pub fn on_event(&mut self, event: Event, now: Instant) -> Outcome {
        match event {
            Event::ModelLoaded { name, description } => {
                self.model = ModelState::Loaded { name, description };
                Outcome::ModelLoaded
            }
            Event::Queued { frame_id } => {
                self.status.insert(frame_id, FrameStatus::Queued);
                Outcome::Nothing
            }
            Event::Progress {
                frame_id,
                step,
                of,
                preview,
            } => {
                if let Some((id, prev_step, at)) = self.last_step
                    && id == frame_id
                    && step == prev_step + 1
                {
                    let dt = now.duration_since(at).as_secs_f64();
                    self.seconds_per_step = Some(match self.seconds_per_step {
                        Some(p) => p + STEP_SMOOTHING * (dt - p),
                        None => dt,
                    });
                }
                self.last_step = Some((frame_id, step, now));
                self.status
                    .insert(frame_id, FrameStatus::Running { step, of });
                if let Some(p) = preview {
                    self.previews.insert(frame_id, p);
                }
                Outcome::Nothing
            }
            Event::IdentityDone {
                image,
                analysis,
                metadata,
            } => Outcome::IdentityDone {
                image,
                analysis,
                metadata,
            },
            Event::FrameDone(result) => {
                self.finish(result.frame_id, None);
                Outcome::FrameDone(result)
            }
            Event::Cancelled { frame_id } => {
                if let Some(id) = frame_id {
                    self.finish(id, Some(FrameStatus::Cancelled));
                }
                // Everything still queued was dropped by the engine.
                let queued: Vec<u64> = self
                    .status
                    .iter()
                    .filter(|(_, s)| matches!(s, FrameStatus::Queued | FrameStatus::Running { .. }))
                    .map(|(id, _)| *id)
                    .collect();
                for id in queued {
                    self.finish(id, Some(FrameStatus::Cancelled));
                }
                Outcome::Nothing
            }
            Event::Error { frame_id, message } => {
                match frame_id {
                    Some(id) => self.finish(id, Some(FrameStatus::Failed(message.clone()))),
                    None => {
                        if matches!(self.model, ModelState::Loading(_)) {
                            self.model = ModelState::Failed(message.clone());
                        }
                    }
                }
                Outcome::Error { frame_id, message }
            }
            // Every frame the engine drops is reported (done, error or cancelled), and an
            // `Idle` sent before a new job arrives may still be in the channel: no change.
            Event::Idle => Outcome::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_finished_frames_and_the_running_steps() {
        let mut t = GenerationTracker::default();
        let now = Instant::now();
        t.start(&[1, 2], 4);
        assert_eq!(t.overall_progress(), Some(0.0));
        assert_eq!(t.remaining_steps(), 8);
        t.on_event(
            Event::Progress {
                frame_id: 1,
                step: 2,
                of: 4,
                preview: None,
            },
            now,
        );
        // (0 + 2/4) / 2
        assert_eq!(t.overall_progress(), Some(0.25));
        assert_eq!(t.remaining_steps(), 2 + 4);
        assert_eq!(
            t.frame_status(1),
            Some(&FrameStatus::Running { step: 2, of: 4 })
        );
        t.on_event(
            Event::Error {
                frame_id: Some(1),
                message: "bad".into(),
            },
            now,
        );
        assert_eq!(t.overall_progress(), Some(0.5));
        assert_eq!(t.frame_status(1), Some(&FrameStatus::Failed("bad".into())));
        assert!(t.is_busy());
        t.on_event(Event::Cancelled { frame_id: None }, now);
        assert!(!t.is_busy());
        assert_eq!(t.frame_status(2), Some(&FrameStatus::Cancelled));
        assert_eq!(t.overall_progress(), None);
    }

    #[test]
    fn eta_uses_the_smoothed_step_time() {
        let mut t = GenerationTracker::default();
        let t0 = Instant::now();
        t.start(&[7], 10);
        let step = |t: &mut GenerationTracker, s: usize, ms: u64| {
            t.on_event(
                Event::Progress {
                    frame_id: 7,
                    step: s,
                    of: 10,
                    preview: None,
                },
                t0 + Duration::from_millis(ms),
            );
        };
        step(&mut t, 1, 0);
        assert_eq!(t.eta(), None);
        step(&mut t, 2, 1000);
        // 8 steps left at 1 s.
        assert_eq!(t.eta(), Some(Duration::from_secs(8)));
        step(&mut t, 3, 3000);
        // pace 1 + 0.3 * (2 - 1) = 1.3 s, 7 steps left.
        let eta = t.eta().unwrap().as_secs_f64();
        assert!((eta - 9.1).abs() < 1e-9, "{eta}");
    }

    #[test]
    fn a_model_error_while_loading_marks_the_model_failed() {
        let mut t = GenerationTracker::default();
        t.model_loading(ModelSpec::Builtin);
        let out = t.on_event(
            Event::Error {
                frame_id: None,
                message: "not part of this build".into(),
            },
            Instant::now(),
        );
        assert!(matches!(out, Outcome::Error { frame_id: None, .. }));
        assert_eq!(t.model, ModelState::Failed("not part of this build".into()));
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Duration::from_secs(42)), "42 s");
        assert_eq!(format_duration(Duration::from_secs(65)), "1 min 05 s");
    }
}
