//! The project document and its files on disk.
//!
//! A project is a folder:
//!
//! ```text
//! my-story/
//!   project.ron        the document (RON, with `format_version`)
//!   project.ron.bak    the previous save
//!   autosave.ron       newer unsaved work, offered for recovery on open
//!   frames/            one PNG per frame version, plus its mask (`*.mask.png`) and matches
//!                      (`*.matches.csv`), see [`analysis`]
//!   cache/             re-creatable data, safe to delete
//! ```
//!
//! Saving is atomic and keeps a backup ([`store`]); older formats are migrated on open
//! ([`migrate`]); a file that does not parse is reported with its line and column and never
//! overwritten.
//!
//! # Loader robustness test
//!
//! `tests/project_fuzz.rs` feeds the loader generated and mutated project files (byte flips,
//! truncations, insertions into valid RON) and requires zero panics. CI runs the default
//! short run; the long run is
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test --locked --test project_fuzz
//! ```

pub mod analysis;
pub mod autosave;
pub mod engine_link;
pub mod error;
pub mod migrate;
pub mod png_meta;
pub mod store;
pub mod types;

pub use autosave::{Autosaver, SaveState};
pub use engine_link::{parse_frame_selection, store_frame_result, store_image};
pub use error::ProjectError;
pub use png_meta::{
    ImageSettings, PngMetadata, import_png_settings, read_png_metadata, write_png_with_settings,
};
pub use store::{
    AUTOSAVE_FILE, BACKUP_FILE, CACHE_DIR, FRAMES_DIR, MissingImage, OpenOutcome, PROJECT_FILE,
    RealDisk, Recovery, SaveHooks, create, discard_autosave, load_project_file, open, save,
    save_with, write_autosave,
};
pub use types::{
    AspectPreset, CURRENT_FORMAT_VERSION, Frame, FrameVersion, GenerationSettings, Identity,
    MethodSettings, ModelChoice, Project, Scene,
};
