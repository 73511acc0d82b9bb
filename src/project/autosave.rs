//! When to autosave, and the honest save state shown to the user.
//!
//! Pure logic: the caller passes the current time, so tests drive it with made-up instants.
//! The UI calls [`Autosaver::mark_dirty`] on every edit, [`Autosaver::frame_finished`] when a
//! generated frame lands, asks [`Autosaver::should_autosave`] once per repaint, and reports
//! what happened with `autosaved`, `saved` and `save_failed`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the status bar says. Only a save that reached the disk counts as saved.
#[derive(Debug, Clone, PartialEq)]
pub enum SaveState {
    Saved {
        at: SystemTime,
    },
    Unsaved,
    /// The last save failed; the message says why (the previous file is intact).
    Failed(String),
}

impl SaveState {
    /// Status-bar text, e.g. "Saved at 14:05 UTC" or "Unsaved changes".
    pub fn label(&self) -> String {
        match self {
            SaveState::Saved { at } => {
                let secs = at
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                format!("Saved at {} UTC", clock_time_utc(secs))
            }
            SaveState::Unsaved => "Unsaved changes".into(),
            SaveState::Failed(why) => format!("Save failed: {why}"),
        }
    }

    /// Whether quitting now would lose work (the UI asks first).
    pub fn has_unsaved_work(&self) -> bool {
        !matches!(self, SaveState::Saved { .. })
    }
}

/// "hh:mm" of a Unix time, UTC.
pub fn clock_time_utc(unix_seconds: u64) -> String {
    let day_seconds = unix_seconds % 86_400;
    format!("{:02}:{:02}", day_seconds / 3600, day_seconds % 3600 / 60)
}

/// Decides when `autosave.ron` is written.
#[derive(Debug, Clone)]
pub struct Autosaver {
    interval: Duration,
    /// First edit not yet in any autosave.
    dirty_since: Option<Instant>,
    /// A frame finished since the last autosave.
    frame_pending: bool,
    state: SaveState,
}

impl Autosaver {
    /// Autosaves at most `interval` after the first unsaved edit, and after every finished
    /// frame. `saved_at` is when the opened project was last saved (`None` for a new one).
    pub fn new(interval: Duration, saved_at: Option<SystemTime>) -> Self {
        Self {
            interval,
            dirty_since: None,
            frame_pending: false,
            state: match saved_at {
                Some(at) => SaveState::Saved { at },
                None => SaveState::Unsaved,
            },
        }
    }

    pub fn state(&self) -> &SaveState {
        &self.state
    }

    /// The document changed.
    pub fn mark_dirty(&mut self, now: Instant) {
        self.dirty_since.get_or_insert(now);
        if !matches!(self.state, SaveState::Failed(_)) {
            self.state = SaveState::Unsaved;
        }
    }

    /// A generated frame landed in the project (expensive work: autosave at once).
    pub fn frame_finished(&mut self, now: Instant) {
        self.mark_dirty(now);
        self.frame_pending = true;
    }

    pub fn should_autosave(&self, now: Instant) -> bool {
        self.frame_pending
            || self
                .dirty_since
                .is_some_and(|since| now.saturating_duration_since(since) >= self.interval)
    }

    /// How long the UI may sleep before `should_autosave` can turn true without new events.
    pub fn next_deadline(&self, now: Instant) -> Option<Duration> {
        if self.frame_pending {
            return Some(Duration::ZERO);
        }
        self.dirty_since.map(|since| {
            self.interval
                .saturating_sub(now.saturating_duration_since(since))
        })
    }

    /// `autosave.ron` was written. The project still has unsaved changes.
    pub fn autosaved(&mut self) {
        self.dirty_since = None;
        self.frame_pending = false;
    }

    /// `project.ron` was written (and any autosave discarded).
    pub fn saved(&mut self, at: SystemTime) {
        self.dirty_since = None;
        self.frame_pending = false;
        self.state = SaveState::Saved { at };
    }

    /// A save failed; the state says so until a save succeeds.
    pub fn save_failed(&mut self, why: impl Into<String>) {
        self.state = SaveState::Failed(why.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn autosaves_interval_after_first_edit_not_after_last() {
        let t0 = Instant::now();
        let mut a = Autosaver::new(secs(30), Some(UNIX_EPOCH));
        assert!(!a.should_autosave(t0 + secs(100)), "clean project");
        a.mark_dirty(t0);
        a.mark_dirty(t0 + secs(20));
        assert!(!a.should_autosave(t0 + secs(29)));
        assert_eq!(a.next_deadline(t0 + secs(29)), Some(secs(1)));
        // Continuous editing must not postpone the autosave forever.
        a.mark_dirty(t0 + secs(29));
        assert!(a.should_autosave(t0 + secs(30)));
        a.autosaved();
        assert!(!a.should_autosave(t0 + secs(90)));
        assert_eq!(a.state(), &SaveState::Unsaved);
    }

    #[test]
    fn finished_frame_autosaves_immediately() {
        let t0 = Instant::now();
        let mut a = Autosaver::new(secs(60), None);
        a.frame_finished(t0);
        assert!(a.should_autosave(t0));
        assert_eq!(a.next_deadline(t0), Some(Duration::ZERO));
        a.autosaved();
        assert!(!a.should_autosave(t0 + secs(1)));
    }

    #[test]
    fn failure_stays_visible_until_a_save_succeeds() {
        let t0 = Instant::now();
        let mut a = Autosaver::new(secs(10), None);
        a.mark_dirty(t0);
        a.save_failed("disk full");
        a.mark_dirty(t0 + secs(1));
        assert_eq!(a.state(), &SaveState::Failed("disk full".into()));
        assert!(a.state().has_unsaved_work());
        let at = UNIX_EPOCH + secs(14 * 3600 + 5 * 60 + 59);
        a.saved(at);
        assert_eq!(a.state().label(), "Saved at 14:05 UTC");
        assert!(!a.state().has_unsaved_work());
    }

    #[test]
    fn clock_time_wraps_days() {
        assert_eq!(clock_time_utc(0), "00:00");
        assert_eq!(clock_time_utc(86_400 + 3600 * 23 + 59 * 60), "23:59");
    }
}
