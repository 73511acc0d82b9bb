//! Logging for the studio: `tracing` to a file under the user's data folder, warnings to
//! stderr, and the most recent lines in memory for the log panel.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How many lines the log panel keeps.
pub const KEEP_LINES: usize = 500;

/// One log record as shown in the log panel.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub level: Level,
    pub target: String,
    pub message: String,
}

fn buffer() -> &'static Mutex<VecDeque<LogLine>> {
    static BUFFER: OnceLock<Mutex<VecDeque<LogLine>>> = OnceLock::new();
    BUFFER.get_or_init(|| Mutex::new(VecDeque::with_capacity(KEEP_LINES)))
}

/// Adds a line to the in-memory log (the subscriber does this for every event; the UI also
/// calls it for engine errors so they show even without a subscriber).
pub fn push(line: LogLine) {
    let mut b = buffer().lock().unwrap_or_else(|e| e.into_inner());
    if b.len() == KEEP_LINES {
        b.pop_front();
    }
    b.push_back(line);
}

/// The most recent lines, oldest first.
pub fn recent() -> Vec<LogLine> {
    buffer()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect()
}

/// Folder of the log file: `<data dir>/logs`.
pub fn log_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("org", "Storyloom", "Storyloom")
        .map(|d| d.data_local_dir().join("logs"))
}

/// Collects an event's message and fields into one line.
#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: String,
}

impl Visit for LineVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

/// The layer that feeds the log panel.
struct PanelLayer;

impl<S: Subscriber> Layer<S> for PanelLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut v = LineVisitor::default();
        event.record(&mut v);
        push(LogLine {
            level: *event.metadata().level(),
            target: event.metadata().target().to_string(),
            message: format!("{}{}", v.message, v.fields),
        });
    }
}

/// Installs the global subscriber: `RUST_LOG`-style filter (default `info`), a log file
/// `storyloom.log` under [`log_dir`], warnings on stderr, and the log panel's buffer.
/// Returns the log file's path (`None` when no data folder exists; logging then goes to
/// stderr and the panel only). Calling it twice is harmless.
pub fn init() -> Option<PathBuf> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let dir = log_dir().filter(|d| std::fs::create_dir_all(d).is_ok());
    let file_layer = dir.as_ref().map(|d| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(tracing_appender::rolling::never(d, "storyloom.log"))
            .with_filter(filter())
    });
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(tracing_subscriber::filter::LevelFilter::WARN);
    let result = tracing_subscriber::registry()
        .with(file_layer)
        .with(stderr_layer)
        .with(PanelLayer.with_filter(filter()))
        .try_init();
    if result.is_err() {
        // A subscriber was already set (tests, or a second call): keep it.
        return None;
    }
    dir.map(|d| d.join("storyloom.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the buffer is global, so parallel tests would race on it.
    #[test]
    fn events_reach_the_panel_buffer_which_keeps_the_latest_lines() {
        let subscriber = tracing_subscriber::registry().with(PanelLayer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(frame = 3, "panel layer check");
        });
        let line = recent().pop().expect("the event was captured");
        assert_eq!(line.message, "panel layer check frame=3");
        assert_eq!(line.level, Level::WARN);

        for i in 0..KEEP_LINES + 3 {
            push(LogLine {
                level: Level::INFO,
                target: "test".into(),
                message: format!("line {i}"),
            });
        }
        let lines = recent();
        assert_eq!(lines.len(), KEEP_LINES);
        assert_eq!(lines[0].message, "line 3");
        assert_eq!(
            lines.last().unwrap().message,
            format!("line {}", KEEP_LINES + 2)
        );
    }
}
