//! The storyboard studio: an eframe app with the Story panel, the Viewer, the Inspector and
//! the Timeline, live generation on the engine thread, and overlays drawn by our shaders.
//!
//! State is kept apart from drawing: [`state::AppState`] holds the storyboard, its undo
//! history, the generated images, the selection and the engine connection, with a plain
//! method per user action; the panel modules draw it and call those methods.

pub mod app;
pub mod document;
pub mod export;
pub mod generation;
pub mod history;
pub mod inspector;
pub mod loader;
pub mod logging;
pub mod models;
pub mod overlay;
pub mod state;
pub mod story_panel;
pub mod textures;
pub mod timeline;
pub mod viewer;

pub use app::{AppOptions, Command, StoryloomApp, run};
pub use state::AppState;
