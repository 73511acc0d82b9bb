//! The project folder on disk: opening (with recovery and missing-image checks) and atomic
//! saving.
//!
//! A save never leaves a moment where `project.ron` is half written: the new text goes to a
//! temporary file in the same folder, is flushed to disk (fsync), and only then renamed over
//! `project.ron` (rename is atomic on one file system); the folder is fsynced so the rename
//! itself survives a power cut. The previous `project.ron` is first copied (also atomically)
//! to `project.ron.bak`. A `project.ron` that does not parse is never overwritten.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::error::ProjectError;
use super::migrate::parse_project;
use super::types::{CURRENT_FORMAT_VERSION, FrameVersion, Project};

pub const PROJECT_FILE: &str = "project.ron";
pub const BACKUP_FILE: &str = "project.ron.bak";
pub const AUTOSAVE_FILE: &str = "autosave.ron";
/// Generated images, masks and matches.
pub const FRAMES_DIR: &str = "frames";
/// Re-creatable data (thumbnails, identity banks); safe to delete.
pub const CACHE_DIR: &str = "cache";

/// Points of a save where a test can inject a failure. The default methods are the real
/// behaviour; production code uses [`RealDisk`].
pub trait SaveHooks {
    /// Writes `bytes` to the freshly created temporary file.
    fn write_temp(&mut self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        file.write_all(bytes)
    }

    /// Called after the temporary file is complete and synced, right before the rename that
    /// makes it the project file. An error here models a crash at the worst moment.
    fn before_commit(&mut self, _temp: &Path, _target: &Path) -> io::Result<()> {
        Ok(())
    }
}

/// No injected faults.
pub struct RealDisk;

impl SaveHooks for RealDisk {}

/// A frame version whose image file is not in the project folder.
#[derive(Debug, Clone, PartialEq)]
pub struct MissingImage {
    /// `None` for an identity image.
    pub frame_id: Option<u64>,
    pub version: usize,
    pub file: String,
}

/// An autosave newer than the saved project: the UI offers to restore it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    pub autosaved_at: SystemTime,
    pub project: Project,
}

/// What opening a project found.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenOutcome {
    pub project: Project,
    /// Present when `autosave.ron` holds newer, different work.
    pub recovery: Option<Recovery>,
    /// Versions whose image is missing (also flagged with `FrameVersion::missing`).
    pub missing: Vec<MissingImage>,
    /// Problems that did not stop the opening, e.g. an unreadable autosave.
    pub warnings: Vec<String>,
}

/// Reads and migrates one project file (`project.ron`, `autosave.ron` or a backup).
pub fn load_project_file(path: &Path) -> Result<Project, ProjectError> {
    let bytes = fs::read(path).map_err(|e| ProjectError::io(path, "read", e))?;
    parse_project(path, &bytes)
}

/// Serialises a project as the text of `project.ron`.
pub fn to_ron_string(project: &Project) -> Result<String, ron::Error> {
    let mut current = project.clone();
    current.format_version = CURRENT_FORMAT_VERSION;
    let config = ron::ser::PrettyConfig::new()
        .indentor("  ".to_string())
        .struct_names(false);
    ron::ser::to_string_pretty(&current, config)
}

/// Opens the project folder `dir`.
pub fn open(dir: &Path) -> Result<OpenOutcome, ProjectError> {
    let path = dir.join(PROJECT_FILE);
    if !path.exists() {
        let leftovers: Vec<&str> = [BACKUP_FILE, AUTOSAVE_FILE]
            .into_iter()
            .filter(|name| dir.join(name).is_file())
            .collect();
        let hint = if leftovers.is_empty() {
            String::new()
        } else {
            format!(
                " ({} found: copy it to {PROJECT_FILE} to open it)",
                leftovers.join(" and ")
            )
        };
        return Err(ProjectError::NotAProject {
            path: dir.to_path_buf(),
            hint,
        });
    }
    let mut project = load_project_file(&path)?;
    let mut warnings = Vec::new();
    let mut recovery = find_recovery(dir, &path, &project, &mut warnings);
    if let Some(r) = &mut recovery {
        mark_missing_images(dir, &mut r.project);
    }
    let missing = mark_missing_images(dir, &mut project);
    Ok(OpenOutcome {
        project,
        recovery,
        missing,
        warnings,
    })
}

fn find_recovery(
    dir: &Path,
    project_path: &Path,
    project: &Project,
    warnings: &mut Vec<String>,
) -> Option<Recovery> {
    let autosave_path = dir.join(AUTOSAVE_FILE);
    let autosaved_at = fs::metadata(&autosave_path).ok()?.modified().ok()?;
    let saved_at = fs::metadata(project_path).and_then(|m| m.modified()).ok();
    if saved_at.is_some_and(|saved| saved >= autosaved_at) {
        return None;
    }
    match load_project_file(&autosave_path) {
        Ok(autosaved) if autosaved != *project => Some(Recovery {
            autosaved_at,
            project: autosaved,
        }),
        Ok(_) => None,
        Err(e) => {
            warnings.push(format!("the autosave could not be read: {e}"));
            None
        }
    }
}

/// Flags every version whose image file is absent and lists them.
pub fn mark_missing_images(dir: &Path, project: &mut Project) -> Vec<MissingImage> {
    let mut missing = Vec::new();
    let mut check = |frame_id: Option<u64>, versions: &mut [FrameVersion]| {
        for (index, version) in versions.iter_mut().enumerate() {
            version.missing = !resolve(dir, &version.file).is_some_and(|p| p.is_file());
            if version.missing {
                missing.push(MissingImage {
                    frame_id,
                    version: index,
                    file: version.file.clone(),
                });
            }
        }
    };
    check(None, &mut project.identity.versions);
    for frame in &mut project.frames {
        check(Some(frame.id), &mut frame.versions);
    }
    missing
}

/// The path of a project-relative file; `None` when it would leave the project folder.
pub fn resolve(dir: &Path, relative: &str) -> Option<PathBuf> {
    let rel = Path::new(relative);
    let inside = !relative.is_empty()
        && rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    inside.then(|| dir.join(rel))
}

/// Creates a project folder (with `frames/` and `cache/`) and saves `project` into it.
pub fn create(dir: &Path, project: &Project) -> Result<(), ProjectError> {
    for sub in [FRAMES_DIR, CACHE_DIR] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(|e| ProjectError::io(&path, "created", e))?;
    }
    save(dir, project)
}

/// Saves `project` as `dir/project.ron` atomically, keeping the previous file as
/// `project.ron.bak`, and removes an autosave the save has made obsolete.
pub fn save(dir: &Path, project: &Project) -> Result<(), ProjectError> {
    save_with(dir, project, &mut RealDisk)
}

/// [`save`] with injectable faults.
pub fn save_with(
    dir: &Path,
    project: &Project,
    hooks: &mut dyn SaveHooks,
) -> Result<(), ProjectError> {
    let target = dir.join(PROJECT_FILE);
    let text = to_ron_string(project).map_err(|e| ProjectError::Encode {
        path: target.clone(),
        message: e.to_string(),
    })?;
    match fs::read(&target) {
        Ok(previous) => {
            // Refuse to replace work this version cannot read (corrupt, or from a newer
            // Storyloom): the user must see the error and decide.
            parse_project(&target, &previous)?;
            atomic_write(&dir.join(BACKUP_FILE), &previous, &mut RealDisk)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ProjectError::io(&target, "read", e)),
    }
    atomic_write(&target, text.as_bytes(), hooks)?;
    // The autosave is now older than the project; keeping it would offer a stale recovery.
    let _ = fs::remove_file(dir.join(AUTOSAVE_FILE));
    Ok(())
}

/// Writes `dir/autosave.ron` atomically; `project.ron` is not touched.
pub fn write_autosave(dir: &Path, project: &Project) -> Result<(), ProjectError> {
    let target = dir.join(AUTOSAVE_FILE);
    let text = to_ron_string(project).map_err(|e| ProjectError::Encode {
        path: target.clone(),
        message: e.to_string(),
    })?;
    atomic_write(&target, text.as_bytes(), &mut RealDisk)
}

/// Removes `autosave.ron` (after the user declined or accepted recovery and saved).
pub fn discard_autosave(dir: &Path) -> Result<(), ProjectError> {
    let path = dir.join(AUTOSAVE_FILE);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ProjectError::io(path, "removed", e)),
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Temp file, write, fsync, rename, fsync the folder. On any error the target is untouched
/// and the temporary file removed.
pub fn atomic_write(
    target: &Path,
    bytes: &[u8],
    hooks: &mut dyn SaveHooks,
) -> Result<(), ProjectError> {
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let temp = dir.join(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_temp_and_commit(&temp, target, bytes, hooks);
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result?;
    sync_dir(&dir);
    Ok(())
}

fn write_temp_and_commit(
    temp: &Path,
    target: &Path,
    bytes: &[u8],
    hooks: &mut dyn SaveHooks,
) -> Result<(), ProjectError> {
    let mut file = File::create(temp).map_err(|e| ProjectError::io(temp, "created", e))?;
    hooks
        .write_temp(&mut file, bytes)
        .map_err(|e| ProjectError::io(temp, "written", e))?;
    file.sync_all()
        .map_err(|e| ProjectError::io(temp, "flushed to disk", e))?;
    drop(file);
    hooks
        .before_commit(temp, target)
        .map_err(|e| ProjectError::io(target, "replaced", e))?;
    fs::rename(temp, target).map_err(|e| ProjectError::io(target, "replaced", e))
}

/// Makes a rename durable. Not every platform can open a folder for syncing; there the rename
/// is as durable as the OS makes it.
fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_keeps_paths_inside_the_project() {
        let dir = Path::new("proj");
        assert_eq!(
            resolve(dir, "frames/a.png"),
            Some(PathBuf::from("proj/frames/a.png"))
        );
        assert_eq!(resolve(dir, "../secret.png"), None);
        assert_eq!(resolve(dir, "/etc/passwd"), None);
        assert_eq!(resolve(dir, ""), None);
    }
}
