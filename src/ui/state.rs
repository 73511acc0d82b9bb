//! The studio's state, apart from drawing: the storyboard with its undo history, the
//! generated images, the selection, the engine connection and the view choices. Every
//! user action is a plain method here, so tests drive the app without a window.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::consistency::FrameAnalysis;
use crate::engine::{EngineHandle, FrameResult, GenerationMetadata, Job, ModelSpec, StoryContext};
use crate::project::{self, Autosaver, FrameVersion, Project, Recovery};

use super::document::{Renders, Storyboard, next_seed};
use super::generation::{FrameStatus, GenerationTracker, ModelState, Outcome};
use super::history::{EditKey, History};
use super::loader::ImageLoader;
use super::models::ModelsPage;
use super::overlay::OverlaySettings;
use crate::project::engine_link::record_decisions;

/// Undo steps kept.
pub const UNDO_LIMIT: usize = 200;
/// Seconds a toast stays.
pub const TOAST_SECONDS: f64 = 6.0;
/// Longest time unsaved edits wait for an autosave.
pub const AUTOSAVE_INTERVAL: Duration = Duration::from_secs(30);

/// Something that waits for the answer to "Save your changes?".
#[derive(Debug, Clone, PartialEq)]
pub enum PendingAction {
    Quit,
    Open(PathBuf),
    New(PathBuf),
}

/// The answers of the unsaved-changes prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsavedChoice {
    Save,
    Discard,
    Cancel,
}

/// Seconds since the Unix epoch, for version records.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The record of an image made while the storyboard has no project folder: no file yet
/// ([`AppState::save_as`] writes it).
fn unsaved_record(meta: &GenerationMetadata, created: u64) -> FrameVersion {
    FrameVersion {
        file: String::new(),
        created,
        seed: meta.seed,
        steps: meta.steps,
        guidance: meta.guidance,
        width: meta.width,
        height: meta.height,
        model: meta.model.clone(),
        methods: meta.methods_used.clone(),
        metadata: [
            ("seconds".to_string(), format!("{:.1}", meta.seconds)),
            ("prompt".to_string(), meta.prompt.clone()),
        ]
        .into(),
        ..Default::default()
    }
}

/// Copies a version's image, mask and matches from one project folder to another (files
/// already there are kept).
fn copy_version_files(
    from: &Path,
    to: &Path,
    record: &FrameVersion,
) -> Result<(), project::ProjectError> {
    let files = std::iter::once(record.file.as_str())
        .chain(record.mask_file.as_deref())
        .chain(record.matches_file.as_deref());
    for rel in files {
        let (Some(src), Some(dst)) = (
            project::store::resolve(from, rel),
            project::store::resolve(to, rel),
        ) else {
            continue;
        };
        if src.is_file() && !dst.exists() {
            std::fs::copy(&src, &dst).map_err(|e| project::ProjectError::io(&dst, "written", e))?;
        }
    }
    Ok(())
}

/// Which frames are selected; `focus` is the one the inspector and viewer show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    pub ids: Vec<u64>,
    pub focus: Option<u64>,
    anchor: Option<u64>,
}

impl Selection {
    pub fn contains(&self, id: u64) -> bool {
        self.ids.contains(&id)
    }

    pub fn select_only(&mut self, id: u64) {
        self.ids = vec![id];
        self.focus = Some(id);
        self.anchor = Some(id);
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// A click on a frame card: plain selects it alone, Ctrl toggles it, Shift selects the
    /// range from the anchor (`order` is the frames' order in the timeline).
    pub fn click(&mut self, id: u64, ctrl: bool, shift: bool, order: &[u64]) {
        let pos = |x: u64| order.iter().position(|&o| o == x);
        if shift && let (Some(a), Some(b)) = (self.anchor.and_then(pos), pos(id)) {
            let (lo, hi) = (a.min(b), a.max(b));
            let range = &order[lo..=hi];
            if ctrl {
                for &r in range {
                    if !self.ids.contains(&r) {
                        self.ids.push(r);
                    }
                }
            } else {
                self.ids = range.to_vec();
            }
            self.focus = Some(id);
            return;
        }
        if ctrl {
            if let Some(i) = self.ids.iter().position(|&x| x == id) {
                self.ids.remove(i);
                if self.focus == Some(id) {
                    self.focus = self.ids.last().copied();
                }
            } else {
                self.ids.push(id);
                self.focus = Some(id);
            }
            self.anchor = Some(id);
            return;
        }
        self.select_only(id);
    }

    /// Arrow keys: moves the focus by `delta` frames; with `extend` the range grows.
    pub fn step(&mut self, delta: isize, extend: bool, order: &[u64]) {
        if order.is_empty() {
            return;
        }
        let current = self.focus.and_then(|f| order.iter().position(|&o| o == f));
        let next = match current {
            Some(i) => (i as isize + delta).clamp(0, order.len() as isize - 1) as usize,
            None if delta < 0 => order.len() - 1,
            None => 0,
        };
        if extend {
            self.click(order[next], false, true, order);
        } else {
            self.select_only(order[next]);
        }
    }

    /// Drops ids no longer in the storyboard.
    pub fn retain(&mut self, order: &[u64]) {
        self.ids.retain(|id| order.contains(id));
        if self.focus.is_some_and(|f| !order.contains(&f)) {
            self.focus = self.ids.last().copied();
        }
        if self.anchor.is_some_and(|a| !order.contains(&a)) {
            self.anchor = self.focus;
        }
    }

    /// The selected ids in timeline order.
    pub fn ordered(&self, order: &[u64]) -> Vec<u64> {
        order
            .iter()
            .copied()
            .filter(|id| self.ids.contains(id))
            .collect()
    }
}

/// Zoom, pan and comparison in the viewer.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewerState {
    /// Scale relative to "fit"; 1 = fit.
    pub zoom: f32,
    /// Offset of the image centre from the pane centre, in points.
    pub pan: egui::Vec2,
    /// Two version indices of the focused frame shown split.
    pub compare: Option<(usize, usize)>,
    /// Where the split line sits (0 = all right image, 1 = all left).
    pub split: f32,
    pub show_identity: bool,
}

impl Default for ViewerState {
    fn default() -> Self {
        Self {
            zoom: 1.0,
            pan: egui::Vec2::ZERO,
            compare: None,
            split: 0.5,
            show_identity: true,
        }
    }
}

impl ViewerState {
    pub fn fit(&mut self) {
        self.zoom = 1.0;
        self.pan = egui::Vec2::ZERO;
    }

    /// Zooms by `factor` keeping the point `around` (relative to the pane centre) still.
    pub fn zoom_by(&mut self, factor: f32, around: egui::Vec2) {
        let new_zoom = (self.zoom * factor).clamp(0.1, 32.0);
        let k = new_zoom / self.zoom;
        self.pan = around + (self.pan - around) * k;
        self.zoom = new_zoom;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToastKind {
    Info,
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Toast {
    pub kind: ToastKind,
    pub message: String,
    /// egui time when shown (set on first draw).
    pub shown_at: Option<f64>,
}

/// Fields of a frame the inspector edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameField {
    Background,
    Action,
    Dialogue,
    Notes,
}

impl FrameField {
    pub fn name(self) -> &'static str {
        match self {
            FrameField::Background => "background",
            FrameField::Action => "action",
            FrameField::Dialogue => "dialogue",
            FrameField::Notes => "notes",
        }
    }
}

/// Fields of the story.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoryField {
    Identity,
    Style,
    Title,
}

/// Everything the studio holds.
pub struct AppState {
    pub doc: Storyboard,
    pub history: History<Storyboard>,
    pub renders: Renders,
    pub selection: Selection,
    pub tracker: GenerationTracker,
    pub overlay: OverlaySettings,
    pub viewer: ViewerState,
    pub models: ModelsPage,
    pub toasts: Vec<Toast>,
    pub show_shortcuts: bool,
    pub show_export: bool,
    pub show_log: bool,
    /// Unsaved edits since the last save.
    pub dirty: bool,
    /// The project folder; `None` until the storyboard is saved somewhere.
    pub project_path: Option<PathBuf>,
    /// When to autosave, and the save state shown in the status bar.
    pub autosaver: Autosaver,
    /// Newer unsaved work found on open, offered to the user.
    pub recovery: Option<Recovery>,
    /// Why a project could not be opened (names the file, line and column).
    pub open_error: Option<String>,
    /// An action waiting for the answer to the unsaved-changes prompt.
    pub confirm: Option<PendingAction>,
    /// The user agreed to quit; the window may close.
    pub quit_confirmed: bool,
    loader: Option<ImageLoader>,
    /// The model asked for (loaded on the first generation if not yet).
    pub model_spec: Option<ModelSpec>,
    engine: Option<EngineHandle>,
    notify: Arc<dyn Fn() + Send + Sync>,
}

impl AppState {
    /// A studio with an empty storyboard. `notify` is called from the engine thread after
    /// each event (the app passes a repaint request).
    pub fn new(model: Option<ModelSpec>, notify: Arc<dyn Fn() + Send + Sync>) -> Self {
        Self {
            doc: Storyboard::default(),
            history: History::new(UNDO_LIMIT),
            renders: Renders::default(),
            selection: Selection::default(),
            tracker: GenerationTracker::default(),
            overlay: OverlaySettings::default(),
            viewer: ViewerState::default(),
            models: ModelsPage::default(),
            toasts: Vec::new(),
            show_shortcuts: false,
            show_export: false,
            show_log: false,
            dirty: false,
            project_path: None,
            autosaver: Autosaver::new(AUTOSAVE_INTERVAL, None),
            recovery: None,
            open_error: None,
            confirm: None,
            quit_confirmed: false,
            loader: None,
            model_spec: model,
            engine: None,
            notify,
        }
    }

    /// Frame ids in timeline order.
    pub fn order(&self) -> Vec<u64> {
        self.doc.frames.iter().map(|f| f.id).collect()
    }

    /// Applies a document edit with an undo step.
    pub fn edit<R>(&mut self, key: EditKey, f: impl FnOnce(&mut Storyboard) -> R) -> R {
        let before = self.doc.clone();
        let r = f(&mut self.doc);
        if self.doc != before {
            self.history.record(&before, key);
            self.mark_dirty();
        }
        r
    }

    /// The document changed (edits, a chosen or deleted version, a finished frame).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
        self.autosaver.mark_dirty(Instant::now());
    }

    pub fn undo(&mut self) -> bool {
        match self.history.undo(&self.doc) {
            Some(doc) => {
                self.doc = doc;
                self.after_restore();
                true
            }
            None => false,
        }
    }

    pub fn redo(&mut self) -> bool {
        match self.history.redo(&self.doc) {
            Some(doc) => {
                self.doc = doc;
                self.after_restore();
                true
            }
            None => false,
        }
    }

    fn after_restore(&mut self) {
        let order = self.order();
        self.selection.retain(&order);
        if self.selection.focus.is_none()
            && let Some(&first) = order.first()
        {
            self.selection.select_only(first);
        }
        self.mark_dirty();
    }

    /// N: a new frame after the focused one (or at the end); it becomes the selection.
    pub fn add_frame(&mut self) -> u64 {
        let at = self
            .selection
            .focus
            .and_then(|f| self.doc.index_of(f))
            .map_or(self.doc.frames.len(), |i| i + 1);
        let id = self.edit(EditKey::Command, |d| d.insert_frame(at));
        self.selection.select_only(id);
        id
    }

    /// Shift+N: a new frame before the focused one.
    pub fn insert_frame_before(&mut self) -> u64 {
        let at = self
            .selection
            .focus
            .and_then(|f| self.doc.index_of(f))
            .unwrap_or(0);
        let id = self.edit(EditKey::Command, |d| d.insert_frame(at));
        self.selection.select_only(id);
        id
    }

    /// D: duplicates the selected frames (each right after itself).
    pub fn duplicate_selected(&mut self) -> Vec<u64> {
        let ids = self.selection.ordered(&self.order());
        let copies = self.edit(EditKey::Command, |d| {
            ids.iter()
                .filter_map(|&id| d.duplicate_frame(id).map(|c| (id, c)))
                .collect::<Vec<_>>()
        });
        for &(from, to) in &copies {
            self.renders.copy_versions(from, to);
        }
        let new: Vec<u64> = copies.iter().map(|&(_, c)| c).collect();
        if let Some(&last) = new.last() {
            self.selection.ids = new.clone();
            self.selection.focus = Some(last);
        }
        new
    }

    /// Delete: removes the selected frames; the focus moves to the next frame.
    pub fn delete_selected(&mut self) -> usize {
        let ids = self.selection.ids.clone();
        if ids.is_empty() {
            return 0;
        }
        let first_index = ids.iter().filter_map(|&id| self.doc.index_of(id)).min();
        let removed = self.edit(EditKey::Command, |d| d.delete_frames(&ids));
        self.selection.clear();
        if let Some(i) = first_index {
            let order = self.order();
            if let Some(&next) = order.get(i).or(order.last()) {
                self.selection.select_only(next);
            }
        }
        removed
    }

    /// Drag and drop: moves the selected frames (or `dragged` if it is not selected) before
    /// the frame now at `to`.
    pub fn move_frames_to(&mut self, dragged: u64, to: usize) {
        let ids = if self.selection.contains(dragged) {
            self.selection.ordered(&self.order())
        } else {
            self.selection.select_only(dragged);
            vec![dragged]
        };
        self.edit(EditKey::Command, |d| d.move_frames(&ids, to));
    }

    /// A PNG dropped on the studio: when Storyloom made it (its settings are in the PNG's text
    /// chunks) a new frame with its environment, action and seed goes after the focused one,
    /// and the generation settings it was made with are restored; the character description
    /// too when the story has none yet. One undo step.
    pub fn import_png(&mut self, path: &std::path::Path) -> Result<u64, String> {
        let s = crate::project::import_png_settings(path).map_err(|e| e.to_string())?;
        let at = self
            .selection
            .focus
            .and_then(|f| self.doc.index_of(f))
            .map_or(self.doc.frames.len(), |i| i + 1);
        let id = self.edit(EditKey::Command, |d| {
            let id = d.insert_frame(at);
            if let Some(f) = d.frame_mut(id) {
                f.background = s.background.clone();
                f.action = s.action.clone();
                f.seed = s.seed;
            }
            if d.identity.trim().is_empty() {
                d.identity = s.identity.clone();
                d.style = s.style.clone();
            }
            let g = &mut d.settings;
            g.steps = s.steps;
            g.guidance = s.guidance;
            g.width = s.width;
            g.height = s.height;
            g.methods = s.methods.clone();
            d.aspect = crate::project::AspectPreset::of_size(s.width, s.height);
            id
        });
        self.selection.select_only(id);
        Ok(id)
    }

    pub fn set_frame_field(&mut self, frame_id: u64, field: FrameField, value: String) {
        self.edit(EditKey::Field(frame_id, field.name()), |d| {
            if let Some(f) = d.frame_mut(frame_id) {
                let slot = match field {
                    FrameField::Background => &mut f.background,
                    FrameField::Action => &mut f.action,
                    FrameField::Dialogue => &mut f.dialogue,
                    FrameField::Notes => &mut f.notes,
                };
                *slot = value;
            }
        });
    }

    pub fn set_story_field(&mut self, field: StoryField, value: String) {
        let name = match field {
            StoryField::Identity => "identity",
            StoryField::Style => "style",
            StoryField::Title => "title",
        };
        self.edit(EditKey::Field(0, name), |d| match field {
            StoryField::Identity => d.identity = value,
            StoryField::Style => d.style = value,
            StoryField::Title => d.title = value,
        });
    }

    /// New seeds for the selected frames that are not locked.
    pub fn new_seeds_for_selected(&mut self) {
        let ids = self.selection.ids.clone();
        self.edit(EditKey::Command, |d| {
            for id in ids {
                if let Some(f) = d.frame_mut(id)
                    && !f.seed_locked
                {
                    f.seed = next_seed(f.seed);
                }
            }
        });
    }

    pub fn show_error(&mut self, message: impl Into<String>) {
        let message = message.into();
        tracing::error!("{message}");
        self.toasts.push(Toast {
            kind: ToastKind::Error,
            message,
            shown_at: None,
        });
    }

    pub fn show_info(&mut self, message: impl Into<String>) {
        self.toasts.push(Toast {
            kind: ToastKind::Info,
            message: message.into(),
            shown_at: None,
        });
    }

    // ----- project -----

    /// The story for the engine, with the project's cache folder for the identity bank.
    pub fn story_context(&self) -> StoryContext {
        let mut story = self.doc.story_context();
        story.cache_dir = self
            .project_path
            .as_ref()
            .map(|dir| dir.join(project::CACHE_DIR));
        story
    }

    /// The project as it would be saved now.
    pub fn project(&self) -> Project {
        self.doc.to_project(&self.renders)
    }

    /// Whether quitting or opening another project now would lose edits.
    pub fn has_unsaved_changes(&self) -> bool {
        self.dirty
    }

    /// The save state for the status bar.
    pub fn save_label(&self) -> String {
        match (&self.project_path, self.dirty) {
            (None, false) => "Not saved to a project folder".into(),
            (None, true) => "Unsaved changes (no project folder yet)".into(),
            (Some(_), _) => self.autosaver.state().label(),
        }
    }

    /// Makes `project` the document (no undo history, nothing dirty) and starts decoding its
    /// images when it lives in a folder.
    pub fn set_project(
        &mut self,
        dir: Option<PathBuf>,
        project: Project,
        saved_at: Option<SystemTime>,
    ) {
        let (doc, renders) = Storyboard::from_project(project);
        self.doc = doc;
        self.renders = renders;
        self.history = History::new(UNDO_LIMIT);
        self.selection.clear();
        if let Some(first) = self.doc.frames.first() {
            self.selection.select_only(first.id);
        }
        self.viewer = ViewerState::default();
        self.dirty = false;
        self.autosaver = Autosaver::new(AUTOSAVE_INTERVAL, saved_at);
        self.recovery = None;
        self.loader = dir.as_ref().map(|d| {
            let notify = self.notify.clone();
            ImageLoader::spawn(self.renders.load_requests(d), notify)
        });
        self.project_path = dir;
    }

    /// Opens a project folder. On failure the current storyboard stays as it was and
    /// `open_error` says why (a file that does not parse is never overwritten: the folder
    /// is not adopted, so nothing saves into it).
    pub fn open_project(&mut self, dir: &Path) -> bool {
        match project::open(dir) {
            Ok(outcome) => {
                let saved_at = std::fs::metadata(dir.join(project::PROJECT_FILE))
                    .and_then(|m| m.modified())
                    .ok();
                self.set_project(Some(dir.to_path_buf()), outcome.project, saved_at);
                self.recovery = outcome.recovery;
                self.open_error = None;
                if !outcome.missing.is_empty() {
                    let first = &outcome.missing[0].file;
                    self.show_error(format!(
                        "{} image(s) missing from the project folder (first: {first}); \
                         those frames show \"missing\"",
                        outcome.missing.len()
                    ));
                }
                for w in outcome.warnings {
                    self.show_info(w);
                }
                tracing::info!("opened project {}", dir.display());
                true
            }
            Err(e) => {
                let message = e.to_string();
                tracing::error!("{message}");
                self.open_error = Some(message);
                false
            }
        }
    }

    /// Recover: the autosaved work becomes the document (still unsaved: `project.ron` is
    /// older until the next save).
    pub fn accept_recovery(&mut self) {
        let Some(recovery) = self.recovery.take() else {
            return;
        };
        let dir = self.project_path.clone();
        self.set_project(dir, recovery.project, None);
        self.mark_dirty();
    }

    /// Open saved: the autosave is removed so it is not offered again.
    pub fn decline_recovery(&mut self) {
        if self.recovery.take().is_some()
            && let Some(dir) = &self.project_path
            && let Err(e) = project::discard_autosave(dir)
        {
            self.show_error(e.to_string());
        }
    }

    /// Saves to the project folder (atomically, keeping a backup). False with a message
    /// when it failed or there is no folder yet.
    pub fn save(&mut self) -> bool {
        let Some(dir) = self.project_path.clone() else {
            self.show_error("Choose a project folder first (File > Save as…)");
            return false;
        };
        match project::save(&dir, &self.project()) {
            Ok(()) => {
                self.dirty = false;
                self.autosaver.saved(SystemTime::now());
                true
            }
            Err(e) => {
                let message = e.to_string();
                self.autosaver.save_failed(message.clone());
                self.show_error(format!("Saving failed: {message}"));
                false
            }
        }
    }

    /// Saves into another folder, which becomes the project folder. The images, masks and
    /// matches come along; images made before there was a folder are written now.
    pub fn save_as(&mut self, dir: &Path) -> bool {
        match self.write_folder(dir) {
            Ok(()) => {
                self.project_path = Some(dir.to_path_buf());
                self.save()
            }
            Err(e) => {
                self.show_error(format!("Saving failed: {e}"));
                false
            }
        }
    }

    fn write_folder(&mut self, dir: &Path) -> Result<(), project::ProjectError> {
        if dir.join(project::PROJECT_FILE).exists() && self.project_path.as_deref() != Some(dir) {
            // Parse it: a folder whose project cannot be read is never overwritten.
            project::load_project_file(&dir.join(project::PROJECT_FILE))?;
        }
        for sub in [project::FRAMES_DIR, project::CACHE_DIR] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path)
                .map_err(|e| project::ProjectError::io(&path, "created", e))?;
        }
        let old = self.project_path.clone().filter(|old| old != dir);
        let story = self.doc.story_context();
        let frame_ids: Vec<Option<u64>> = std::iter::once(None)
            .chain(self.renders.frames.keys().map(|&id| Some(id)))
            .collect();
        for frame_id in frame_ids {
            let job = frame_id
                .and_then(|id| self.doc.frame(id))
                .map(|f| self.doc.frame_job(f));
            let owner = frame_id.map_or("identity".to_string(), |id| format!("{id:05}"));
            let set = match frame_id {
                None => &mut self.renders.identity,
                Some(id) => self.renders.frames.get_mut(&id).expect("listed above"),
            };
            for (n, v) in set.versions.iter_mut().enumerate() {
                if let Some(old) = &old {
                    copy_version_files(old, dir, &v.record)?;
                }
                let Some(image) = v.image().cloned().filter(|_| v.record.file.is_empty()) else {
                    continue;
                };
                let settings = project::ImageSettings {
                    prompt: v.record.metadata.get("prompt").cloned().unwrap_or_default(),
                    identity: story.identity.clone(),
                    style: story.style.clone(),
                    background: job
                        .as_ref()
                        .map(|j| j.background.clone())
                        .unwrap_or_default(),
                    action: job.as_ref().map(|j| j.action.clone()).unwrap_or_default(),
                    seed: v.record.seed,
                    model: v.record.model.clone(),
                    steps: v.record.steps,
                    guidance: v.record.guidance,
                    width: v.record.width,
                    height: v.record.height,
                    methods: self.doc.settings.methods.clone(),
                    methods_used: v.record.methods.clone(),
                };
                let (mask, matches) = project::engine_link::analysis_files(&v.analysis);
                let stored = project::store_image(
                    dir,
                    &owner,
                    n + 1,
                    &image,
                    &settings,
                    mask.as_ref(),
                    &matches,
                    v.record.created,
                )?;
                v.record = FrameVersion {
                    metadata: std::mem::take(&mut v.record.metadata),
                    ..stored
                };
            }
        }
        Ok(())
    }

    /// Creates an empty project in `dir` and makes it the document.
    pub fn new_project(&mut self, dir: &Path) -> bool {
        if dir.join(project::PROJECT_FILE).exists() {
            self.show_error(format!(
                "{} already holds a project: use File > Open project…",
                dir.display()
            ));
            return false;
        }
        let project = Project::default();
        match project::create(dir, &project) {
            Ok(()) => {
                self.set_project(Some(dir.to_path_buf()), project, Some(SystemTime::now()));
                true
            }
            Err(e) => {
                self.show_error(format!("The project could not be created: {e}"));
                false
            }
        }
    }

    /// Writes `autosave.ron` when the autosaver says it is time. Never touches
    /// `project.ron`.
    pub fn autosave_tick(&mut self, now: Instant) {
        let Some(dir) = self.project_path.clone() else {
            return;
        };
        if !self.autosaver.should_autosave(now) {
            return;
        }
        let result = project::write_autosave(&dir, &self.project());
        // Either way the next attempt waits for new work or the interval.
        self.autosaver.autosaved();
        if let Err(e) = result {
            let message = e.to_string();
            self.autosaver.save_failed(message.clone());
            self.show_error(format!("Autosave failed: {message}"));
        }
    }

    /// Images the loader decoded since the last call go into their versions.
    pub fn poll_images(&mut self) -> usize {
        let Some(loader) = &mut self.loader else {
            return 0;
        };
        let loaded = loader.poll();
        let done = loader.remaining() == 0;
        let n = loaded.len();
        for l in loaded {
            self.renders.attach(l);
        }
        if done {
            self.loader = None;
        }
        n
    }

    /// Blocks until every image of the opened project is decoded (tests, benchmark).
    pub fn wait_for_images(&mut self) {
        if let Some(mut loader) = self.loader.take() {
            for l in loader.wait_all() {
                self.renders.attach(l);
            }
        }
    }

    /// Asks before an action that would drop unsaved edits: true when it may go ahead now,
    /// otherwise the prompt is shown and the action waits in `confirm`.
    pub fn request(&mut self, action: PendingAction) -> bool {
        if action == PendingAction::Quit && self.quit_confirmed {
            return true;
        }
        if !self.has_unsaved_changes() {
            if action == PendingAction::Quit {
                self.quit_confirmed = true;
            }
            return true;
        }
        self.confirm = Some(action);
        false
    }

    /// The answer to the unsaved-changes prompt. Returns the action that may now go ahead
    /// (after a successful save, or discarding); `None` keeps working.
    pub fn answer_unsaved(&mut self, choice: UnsavedChoice) -> Option<PendingAction> {
        let action = self.confirm.take()?;
        let go = match choice {
            UnsavedChoice::Cancel => false,
            UnsavedChoice::Discard => true,
            UnsavedChoice::Save => self.save(),
        };
        if !go {
            // A failed save keeps the prompt away; the error toast says why.
            return None;
        }
        if action == PendingAction::Quit {
            self.quit_confirmed = true;
        }
        Some(action)
    }

    /// Carries out an action the user confirmed.
    pub fn perform(&mut self, action: PendingAction) {
        match action {
            PendingAction::Quit => self.quit_confirmed = true,
            PendingAction::Open(dir) => {
                self.open_project(&dir);
            }
            PendingAction::New(dir) => {
                self.new_project(&dir);
            }
        }
    }

    /// A finished frame: its files go into the project folder and it becomes the frame's
    /// active version; the autosave follows at once.
    fn store_frame(&mut self, result: FrameResult, now: Instant) {
        let created = unix_now();
        let mut record = None;
        if let Some(dir) = self.project_path.clone() {
            let mut project = self.project();
            let (mask, matches) = project::engine_link::analysis_files(&result.analysis);
            match project::store_frame_result(
                &dir,
                &mut project,
                &result,
                mask.as_ref(),
                &matches,
                created,
            ) {
                Ok(Some(i)) => {
                    record = project
                        .frame(result.frame_id)
                        .and_then(|f| f.versions.get(i))
                        .cloned();
                }
                Ok(None) => {}
                Err(e) => self.show_error(format!("The finished frame could not be saved: {e}")),
            }
        }
        // A stored version already carries the decisions; an unsaved one gets them here.
        let record = record.unwrap_or_else(|| {
            let mut record = unsaved_record(&result.metadata, created);
            record_decisions(&mut record, &result.analysis);
            record
        });
        self.renders
            .add_version(result.frame_id, record, result.image, result.analysis);
        self.dirty = true;
        self.autosaver.frame_finished(now);
    }

    fn store_identity(
        &mut self,
        image: image::RgbImage,
        analysis: FrameAnalysis,
        metadata: GenerationMetadata,
        now: Instant,
    ) {
        let created = unix_now();
        let mut record = None;
        if let Some(dir) = self.project_path.clone() {
            let mut project = self.project();
            match project::engine_link::store_identity_image(
                &dir,
                &mut project,
                &image,
                &analysis,
                &metadata,
                created,
            ) {
                Ok(i) => record = project.identity.versions.get(i).cloned(),
                Err(e) => self.show_error(format!("The identity image could not be saved: {e}")),
            }
        }
        let record = record.unwrap_or_else(|| {
            let mut record = unsaved_record(&metadata, created);
            record_decisions(&mut record, &analysis);
            record
        });
        self.renders.add_identity_version(record, image, analysis);
        self.dirty = true;
        self.autosaver.frame_finished(now);
    }

    // ----- engine -----

    pub fn engine_running(&self) -> bool {
        self.engine.is_some()
    }

    fn engine(&mut self) -> &EngineHandle {
        let notify = self.notify.clone();
        self.engine
            .get_or_insert_with(|| EngineHandle::spawn(move || notify()))
    }

    /// Loads a model (queued on the engine).
    pub fn load_model(&mut self, spec: ModelSpec) {
        self.model_spec = Some(spec.clone());
        self.tracker.model_loading(spec.clone());
        self.engine().send(Job::LoadModel(spec));
    }

    /// Makes sure a model is loaded or loading; false (with a message) when none is chosen.
    fn ensure_model(&mut self) -> bool {
        match &self.tracker.model {
            ModelState::Loaded { .. } | ModelState::Loading(_) => true,
            ModelState::None | ModelState::Failed(_) => match self.model_spec.clone() {
                Some(spec) => {
                    self.load_model(spec);
                    true
                }
                None => {
                    self.show_error("Choose a model first (Models…)");
                    self.models.open = true;
                    false
                }
            },
        }
    }

    /// Sends frames for generation. Returns how many were sent.
    pub fn generate(&mut self, ids: &[u64]) -> usize {
        let frames: Vec<_> = ids
            .iter()
            .filter_map(|&id| self.doc.frame(id))
            .filter(|f| {
                !matches!(
                    self.tracker.frame_status(f.id),
                    Some(FrameStatus::Queued | FrameStatus::Running { .. })
                )
            })
            .map(|f| self.doc.frame_job(f))
            .collect();
        if frames.is_empty() || !self.ensure_model() {
            return 0;
        }
        let sent: Vec<u64> = frames.iter().map(|f| f.frame_id).collect();
        self.tracker.start(&sent, self.doc.settings.steps);
        let job = Job::Generate {
            story: self.story_context(),
            frames,
            settings: self.doc.render_settings(),
        };
        self.engine().send(job);
        sent.len()
    }

    pub fn generate_all(&mut self) -> usize {
        self.generate(&self.order())
    }

    pub fn generate_selected(&mut self) -> usize {
        let ids = self.selection.ordered(&self.order());
        self.generate(&ids)
    }

    /// Renders the focused frame again (a new version).
    pub fn regenerate_focused(&mut self) -> bool {
        let Some(frame) = self.selection.focus.and_then(|id| self.doc.frame(id)) else {
            return false;
        };
        let job = self.doc.frame_job(frame);
        if !self.ensure_model() {
            return false;
        }
        self.tracker.start(&[job.frame_id], self.doc.settings.steps);
        let job = Job::Regenerate {
            story: self.story_context(),
            frame: job,
            settings: self.doc.render_settings(),
        };
        self.engine().send(job);
        true
    }

    pub fn cancel(&mut self) {
        if let Some(e) = &self.engine {
            e.cancel();
        }
    }

    /// Takes every event the engine sent (never blocks). Returns how many there were.
    pub fn poll_engine(&mut self) -> usize {
        let Some(engine) = &self.engine else {
            return 0;
        };
        let mut events = Vec::new();
        while let Some(e) = engine.try_recv() {
            events.push(e);
        }
        let now = Instant::now();
        let count = events.len();
        for e in events {
            match self.tracker.on_event(e, now) {
                Outcome::Nothing | Outcome::ModelLoaded => {}
                Outcome::FrameDone(result) => self.store_frame(*result, now),
                Outcome::IdentityDone {
                    image,
                    analysis,
                    metadata,
                } => self.store_identity(image, analysis, *metadata, now),
                Outcome::Error { frame_id, message } => {
                    let text = match frame_id.and_then(|id| self.doc.index_of(id)) {
                        Some(i) => format!("Frame {}: {message}", i + 1),
                        None => message,
                    };
                    self.show_error(text);
                }
            }
        }
        count
    }

    /// Blocks until the engine reports something or `timeout` passes (tests only need this;
    /// the UI polls).
    pub fn wait_for_engine(&self, timeout: std::time::Duration) -> bool {
        let Some(engine) = &self.engine else {
            return false;
        };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !engine.events().is_empty() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AppState {
        AppState::new(None, Arc::new(|| {}))
    }

    #[test]
    fn click_ctrl_and_shift_select_like_a_file_list() {
        let order = [1, 2, 3, 4, 5];
        let mut s = Selection::default();
        s.click(2, false, false, &order);
        s.click(4, false, true, &order);
        assert_eq!(s.ids, vec![2, 3, 4]);
        assert_eq!(s.focus, Some(4));
        s.click(3, true, false, &order);
        assert_eq!(s.ids, vec![2, 4]);
        s.click(5, true, false, &order);
        assert_eq!(s.ids, vec![2, 4, 5]);
        s.click(1, false, false, &order);
        assert_eq!(s.ids, vec![1]);
        s.step(1, true, &order);
        s.step(1, true, &order);
        assert_eq!(s.ids, vec![1, 2, 3]);
        s.step(-5, false, &order);
        assert_eq!((s.ids.clone(), s.focus), (vec![1], Some(1)));
    }

    #[test]
    fn frame_commands_with_undo_and_redo() {
        let mut s = state();
        let a = s.add_frame();
        s.set_frame_field(a, FrameField::Action, "waves".into());
        s.set_frame_field(a, FrameField::Action, "waves hello".into());
        let b = s.add_frame();
        assert_eq!(s.order(), vec![a, b]);
        let c = s.insert_frame_before();
        assert_eq!(s.order(), vec![a, c, b]);
        s.selection.click(a, false, false, &s.order());
        let copies = s.duplicate_selected();
        assert_eq!(s.doc.frames[1].action, "waves hello");
        assert_eq!(s.order(), vec![a, copies[0], c, b]);
        s.selection.click(copies[0], false, false, &s.order());
        s.selection.click(c, true, false, &s.order());
        assert_eq!(s.delete_selected(), 2);
        assert_eq!(s.order(), vec![a, b]);
        assert_eq!(s.selection.focus, Some(b));

        assert!(s.undo());
        assert_eq!(s.order().len(), 4);
        assert!(s.undo()); // duplicate
        assert!(s.undo()); // insert
        assert!(s.undo()); // add b
        // Typing the action was one step.
        assert_eq!(s.doc.frames[0].action, "waves hello");
        assert!(s.undo());
        assert_eq!(s.doc.frames[0].action, "");
        assert!(s.redo());
        assert_eq!(s.doc.frames[0].action, "waves hello");
        assert!(s.dirty);
    }

    #[test]
    fn dragging_an_unselected_frame_moves_only_it() {
        let mut s = state();
        let ids: Vec<u64> = (0..4).map(|_| s.add_frame()).collect();
        s.selection.click(ids[0], false, false, &s.order());
        s.selection.click(ids[1], true, false, &s.order());
        s.move_frames_to(ids[0], 4);
        assert_eq!(s.order(), vec![ids[2], ids[3], ids[0], ids[1]]);
        s.move_frames_to(ids[3], 0);
        assert_eq!(s.order(), vec![ids[3], ids[2], ids[0], ids[1]]);
        assert_eq!(s.selection.ids, vec![ids[3]]);
        assert!(s.undo());
        assert_eq!(s.order(), vec![ids[2], ids[3], ids[0], ids[1]]);
    }

    #[test]
    fn locked_seeds_stay() {
        let mut s = state();
        let a = s.add_frame();
        let b = s.add_frame();
        let seed_a = s.doc.frame(a).unwrap().seed;
        let seed_b = s.doc.frame(b).unwrap().seed;
        s.doc.frame_mut(a).unwrap().seed_locked = true;
        s.selection.click(a, false, false, &s.order());
        s.selection.click(b, true, false, &s.order());
        s.new_seeds_for_selected();
        assert_eq!(s.doc.frame(a).unwrap().seed, seed_a);
        assert_eq!(s.doc.frame(b).unwrap().seed, next_seed(seed_b));
    }

    #[test]
    fn generating_without_a_model_asks_for_one() {
        let mut s = state();
        s.add_frame();
        assert_eq!(s.generate_all(), 0);
        assert!(s.models.open);
        assert_eq!(s.toasts[0].kind, ToastKind::Error);
        assert!(!s.engine_running());
    }

    #[test]
    fn zoom_keeps_the_point_under_the_cursor() {
        let mut v = ViewerState::default();
        let around = egui::vec2(100.0, 0.0);
        v.zoom_by(2.0, around);
        // A point at `around` maps to itself: pan' = around + (pan - around) * 2.
        assert_eq!(v.pan, egui::vec2(-100.0, 0.0));
        assert_eq!(v.zoom, 2.0);
        v.fit();
        assert_eq!((v.zoom, v.pan), (1.0, egui::Vec2::ZERO));
    }
}
