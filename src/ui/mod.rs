//! The storyboard studio: an eframe app with the Story panel, the Viewer, the Inspector and
//! the Timeline, live generation on the engine thread, and overlays drawn by our shaders.

pub mod generation;
pub mod logging;
pub mod models;
pub mod overlay;
