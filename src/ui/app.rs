//! The eframe app: menu and toolbar, the four panels, the status bar, keyboard shortcuts,
//! toasts, the log panel and the dialogs (shortcut sheet, export, models).

use std::path::PathBuf;
use std::sync::Arc;

use egui::{Key, Modifiers, Ui};

use crate::engine::ModelSpec;

use super::generation::{ModelState, format_duration};
use super::inspector::inspector_ui;
use super::logging;
use super::models::models_ui;
use super::state::{AppState, PendingAction, TOAST_SECONDS, ToastKind, UnsavedChoice};
use super::story_panel::story_panel_ui;
use super::textures::Textures;
use super::timeline::timeline_ui;
use super::viewer::viewer_ui;

/// How the studio starts.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// A project folder to open.
    pub project: Option<PathBuf>,
    /// The model to load (default: the built-in one).
    pub model: Option<ModelSpec>,
}

/// Everything a key or menu item can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    AddFrame,
    InsertFrameBefore,
    Duplicate,
    Delete,
    Undo,
    Redo,
    GenerateSelected,
    GenerateAll,
    Regenerate,
    Cancel,
    Save,
    SaveAs,
    OpenProject,
    NewProject,
    Export,
    Shortcuts,
    SelectPrevious { extend: bool },
    SelectNext { extend: bool },
}

/// The shortcut sheet (F1): keys and what they do.
pub const SHORTCUTS: &[(&str, &str)] = &[
    ("N", "Add a frame after the selected one"),
    ("Shift+N", "Insert a frame before the selected one"),
    ("D", "Duplicate the selected frames"),
    ("Delete", "Delete the selected frames"),
    (
        "Left / Right",
        "Select the previous / next frame (Shift extends)",
    ),
    (
        "Click / Ctrl+click / Shift+click",
        "Select / toggle / select a range",
    ),
    ("Drag a card", "Reorder frames"),
    ("Ctrl+Enter", "Generate the selected frames (all if none)"),
    ("Esc", "Cancel the generation"),
    ("Ctrl+Z / Ctrl+Shift+Z", "Undo / redo (outside text fields)"),
    ("Ctrl+S", "Save the project (atomically, keeping a backup)"),
    ("Ctrl+E", "Export"),
    ("Wheel / drag / double-click", "Zoom / pan / fit the viewer"),
    ("F1", "This sheet"),
];

/// Reads the shortcut keys of this frame. Edit shortcuts are ignored while a text field
/// has focus (typing "n" must not add a frame; Ctrl+Z there undoes text).
pub fn shortcut_commands(input: &mut egui::InputState, typing: bool) -> Vec<Command> {
    let mut out = Vec::new();
    let mut key = |mods: Modifiers, k: Key, c: Command| {
        if input.consume_key(mods, k) {
            out.push(c);
        }
    };
    key(Modifiers::NONE, Key::F1, Command::Shortcuts);
    key(Modifiers::COMMAND, Key::S, Command::Save);
    key(Modifiers::COMMAND, Key::E, Command::Export);
    key(Modifiers::COMMAND, Key::Enter, Command::GenerateSelected);
    if !typing {
        // More specific modifiers first: consume_key ignores extra Shift.
        key(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z, Command::Redo);
        key(Modifiers::COMMAND, Key::Y, Command::Redo);
        key(Modifiers::COMMAND, Key::Z, Command::Undo);
        key(Modifiers::SHIFT, Key::N, Command::InsertFrameBefore);
        key(Modifiers::NONE, Key::N, Command::AddFrame);
        key(Modifiers::NONE, Key::D, Command::Duplicate);
        key(Modifiers::NONE, Key::Delete, Command::Delete);
        key(
            Modifiers::SHIFT,
            Key::ArrowLeft,
            Command::SelectPrevious { extend: true },
        );
        key(
            Modifiers::NONE,
            Key::ArrowLeft,
            Command::SelectPrevious { extend: false },
        );
        key(
            Modifiers::SHIFT,
            Key::ArrowRight,
            Command::SelectNext { extend: true },
        );
        key(
            Modifiers::NONE,
            Key::ArrowRight,
            Command::SelectNext { extend: false },
        );
        key(Modifiers::NONE, Key::Escape, Command::Cancel);
    }
    out
}

/// Why a folder is being chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum FolderPurpose {
    Open,
    New,
    /// Save as; then carry on with the action that asked for the save.
    SaveAs(Option<PendingAction>),
    /// Where the export writes.
    Export,
}

/// A folder dialog running on its own thread (native dialogs block their thread).
struct FolderDialog {
    purpose: FolderPurpose,
    answer: crossbeam_channel::Receiver<Option<PathBuf>>,
}

impl FolderDialog {
    fn spawn(purpose: FolderPurpose, notify: egui::Context) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let title = match purpose {
            FolderPurpose::Open => "Open a project folder",
            FolderPurpose::New => "Folder for the new project",
            FolderPurpose::SaveAs(_) => "Save the project into a folder",
            FolderPurpose::Export => "Export into a folder",
        };
        std::thread::spawn(move || {
            let chosen = rfd::FileDialog::new().set_title(title).pick_folder();
            let _ = tx.send(chosen);
            notify.request_repaint();
        });
        Self {
            purpose,
            answer: rx,
        }
    }
}

/// The studio app. Constructible without a window (tests drive [`StoryloomApp::show`]).
pub struct StoryloomApp {
    pub state: AppState,
    pub textures: Textures,
    /// True when the wgpu renderer with our overlay pipelines is present.
    pub gpu_overlays: bool,
    /// Time of the last `ui` call, for the benchmark.
    pub last_ui_seconds: f64,
    export_folder: Option<PathBuf>,
    folder_dialog: Option<FolderDialog>,
    /// A folder dialog a command asked for (started on the next UI pass).
    pending_folder: Option<FolderPurpose>,
}

impl StoryloomApp {
    /// `ctx` is used for repaint requests from the engine thread.
    pub fn new(options: AppOptions, ctx: &egui::Context) -> Self {
        let repaint_ctx = ctx.clone();
        let notify: Arc<dyn Fn() + Send + Sync> = Arc::new(move || repaint_ctx.request_repaint());
        let mut state = AppState::new(options.model.clone(), notify);
        let opened = options
            .project
            .as_ref()
            .is_some_and(|p| state.open_project(p));
        // The model asked for, else the project's own, else the built-in one.
        state.model_spec = options.model.clone().or_else(|| {
            Some(if opened {
                state.doc.model.to_model_spec()
            } else {
                ModelSpec::Builtin
            })
        });
        Self {
            state,
            textures: Textures::default(),
            gpu_overlays: false,
            last_ui_seconds: 0.0,
            export_folder: None,
            folder_dialog: None,
            pending_folder: None,
        }
    }

    /// Starts a folder dialog unless one is open.
    fn choose_folder(&mut self, purpose: FolderPurpose, ctx: &egui::Context) {
        if self.folder_dialog.is_none() {
            self.folder_dialog = Some(FolderDialog::spawn(purpose, ctx.clone()));
        }
    }

    /// What to do with a folder the user chose.
    pub fn folder_chosen(&mut self, purpose: FolderPurpose, dir: PathBuf, ctx: &egui::Context) {
        match purpose {
            FolderPurpose::Open => {
                if self.state.request(PendingAction::Open(dir.clone())) {
                    self.state.perform(PendingAction::Open(dir));
                }
            }
            FolderPurpose::New => {
                if self.state.request(PendingAction::New(dir.clone())) {
                    self.state.perform(PendingAction::New(dir));
                }
            }
            FolderPurpose::Export => self.export_folder = Some(dir),
            FolderPurpose::SaveAs(then) => {
                if self.state.save_as(&dir)
                    && let Some(action) = then
                {
                    self.carry_out(action, ctx);
                }
            }
        }
    }

    fn carry_out(&mut self, action: PendingAction, ctx: &egui::Context) {
        let quit = action == PendingAction::Quit;
        self.state.perform(action);
        if quit {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
    }

    /// The unsaved-changes prompt was answered.
    pub fn answer_unsaved(&mut self, choice: UnsavedChoice, ctx: &egui::Context) {
        if choice == UnsavedChoice::Save && self.state.project_path.is_none() {
            // No folder yet: choose one, save, then go on.
            let then = self.state.confirm.take();
            self.choose_folder(FolderPurpose::SaveAs(then), ctx);
            return;
        }
        if let Some(action) = self.state.answer_unsaved(choice) {
            self.carry_out(action, ctx);
        }
    }

    pub fn with_gpu_overlays(mut self, on: bool) -> Self {
        self.gpu_overlays = on;
        self
    }

    pub fn run_command(&mut self, command: Command) {
        let s = &mut self.state;
        match command {
            Command::AddFrame => {
                s.add_frame();
            }
            Command::InsertFrameBefore => {
                s.insert_frame_before();
            }
            Command::Duplicate => {
                s.duplicate_selected();
            }
            Command::Delete => {
                s.delete_selected();
            }
            Command::Undo => {
                s.undo();
            }
            Command::Redo => {
                s.redo();
            }
            Command::GenerateSelected => {
                if s.selection.ids.is_empty() {
                    s.generate_all();
                } else {
                    s.generate_selected();
                }
            }
            Command::GenerateAll => {
                s.generate_all();
            }
            Command::Regenerate => {
                s.regenerate_focused();
            }
            Command::Cancel => s.cancel(),
            Command::Save => {
                if self.state.project_path.is_some() {
                    self.state.save();
                } else {
                    self.pending_folder = Some(FolderPurpose::SaveAs(None));
                }
            }
            Command::SaveAs => self.pending_folder = Some(FolderPurpose::SaveAs(None)),
            Command::OpenProject => self.pending_folder = Some(FolderPurpose::Open),
            Command::NewProject => self.pending_folder = Some(FolderPurpose::New),
            Command::Export => s.show_export = true,
            Command::Shortcuts => s.show_shortcuts = !s.show_shortcuts,
            Command::SelectPrevious { extend } => {
                let order = s.order();
                s.selection.step(-1, extend, &order);
            }
            Command::SelectNext { extend } => {
                let order = s.order();
                s.selection.step(1, extend, &order);
            }
        }
    }

    /// PNGs dragged onto the window from a file manager become frames with their settings.
    fn import_dropped_files(&mut self, ctx: &egui::Context) {
        let paths: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        for path in paths {
            let name = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            match self.state.import_png(&path) {
                Ok(_) => self
                    .state
                    .show_info(format!("Added a frame with the settings of {name}")),
                Err(e) => self.state.show_error(format!("Cannot import {name}: {e}")),
            }
        }
    }

    /// One UI pass: engine events, shortcuts, panels and dialogs.
    pub fn show(&mut self, ui: &mut Ui) {
        let started = std::time::Instant::now();
        let ctx = ui.ctx().clone();
        self.state.poll_engine();
        self.state.poll_images();
        self.import_dropped_files(&ctx);
        self.state.autosave_tick(std::time::Instant::now());
        if let Some(wait) = self
            .state
            .autosaver
            .next_deadline(std::time::Instant::now())
            && self.state.project_path.is_some()
        {
            ctx.request_repaint_after(wait.max(std::time::Duration::from_millis(200)));
        }
        if ctx.input(|i| i.viewport().close_requested()) && !self.state.request(PendingAction::Quit)
        {
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
        }
        if let Some(dialog) = &self.folder_dialog
            && let Ok(answer) = dialog.answer.try_recv()
        {
            let purpose = self.folder_dialog.take().expect("checked above").purpose;
            if let Some(dir) = answer {
                self.folder_chosen(purpose, dir, &ctx);
            }
        }
        if self.state.models.poll() {
            ctx.request_repaint();
        }
        if self.state.models.is_scanning() || self.state.models.dialog_open() {
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
        let typing = ctx.text_edit_focused();
        let commands = ctx.input_mut(|i| shortcut_commands(i, typing));
        for c in commands {
            self.run_command(c);
        }

        egui::Panel::top("menu_bar").show(ui, |ui| self.menu_bar(ui));
        egui::Panel::bottom("status_bar").show(ui, |ui| self.status_bar(ui));
        if self.state.show_log {
            egui::Panel::bottom("log_panel")
                .resizable(true)
                .default_size(140.0)
                .show(ui, log_panel);
        }
        egui::Panel::bottom("timeline")
            .resizable(false)
            .exact_size(196.0)
            .show(ui, |ui| {
                timeline_ui(ui, &mut self.state, &mut self.textures)
            });
        egui::Panel::left("story_panel")
            .resizable(true)
            .default_size(250.0)
            .show(ui, |ui| story_panel_ui(ui, &mut self.state));
        egui::Panel::right("inspector")
            .resizable(true)
            .default_size(300.0)
            .show(ui, |ui| inspector_ui(ui, &mut self.state));
        egui::CentralPanel::default().show(ui, |ui| {
            viewer_ui(ui, &mut self.state, &mut self.textures, self.gpu_overlays);
        });

        if let Some(purpose) = self.pending_folder.take() {
            self.choose_folder(purpose, &ctx);
        }
        self.dialogs(&ctx);
        self.project_dialogs(&ctx);
        self.toasts(&ctx);
        if self.state.tracker.is_busy() {
            // Progress bars and the time estimate move between engine events too.
            ctx.request_repaint_after(std::time::Duration::from_millis(250));
        }
        self.last_ui_seconds = started.elapsed().as_secs_f64();
    }

    fn menu_bar(&mut self, ui: &mut Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            let mut command = None;
            ui.menu_button("File", |ui| {
                if ui.button("New project…").clicked() {
                    command = Some(Command::NewProject);
                }
                if ui.button("Open project…").clicked() {
                    command = Some(Command::OpenProject);
                }
                if ui.button("Save  (Ctrl+S)").clicked() {
                    command = Some(Command::Save);
                }
                if ui.button("Save as…").clicked() {
                    command = Some(Command::SaveAs);
                }
                if ui.button("Export…  (Ctrl+E)").clicked() {
                    command = Some(Command::Export);
                }
                if ui.button("Models…").clicked() {
                    self.state.models.open = true;
                }
            });
            ui.menu_button("Edit", |ui| {
                let can_undo = self.state.history.can_undo();
                let can_redo = self.state.history.can_redo();
                if ui
                    .add_enabled(can_undo, egui::Button::new("Undo  (Ctrl+Z)"))
                    .clicked()
                {
                    command = Some(Command::Undo);
                }
                if ui
                    .add_enabled(can_redo, egui::Button::new("Redo  (Ctrl+Shift+Z)"))
                    .clicked()
                {
                    command = Some(Command::Redo);
                }
                ui.separator();
                if ui.button("Add frame  (N)").clicked() {
                    command = Some(Command::AddFrame);
                }
                if ui.button("Duplicate  (D)").clicked() {
                    command = Some(Command::Duplicate);
                }
                if ui.button("Delete  (Del)").clicked() {
                    command = Some(Command::Delete);
                }
            });
            ui.menu_button("View", |ui| {
                ui.checkbox(&mut self.state.show_log, "Log panel");
                ui.checkbox(&mut self.state.viewer.show_identity, "Identity image");
            });
            ui.menu_button("Help", |ui| {
                if ui.button("Keyboard shortcuts  (F1)").clicked() {
                    command = Some(Command::Shortcuts);
                }
            });
            ui.separator();
            let busy = self.state.tracker.is_busy();
            if ui.button("Generate all").clicked() {
                command = Some(Command::GenerateAll);
            }
            if ui
                .add_enabled(
                    !self.state.selection.ids.is_empty(),
                    egui::Button::new("Generate selected"),
                )
                .on_hover_text("Ctrl+Enter")
                .clicked()
            {
                command = Some(Command::GenerateSelected);
            }
            if ui
                .add_enabled(
                    self.state.selection.focus.is_some(),
                    egui::Button::new("Regenerate"),
                )
                .clicked()
            {
                command = Some(Command::Regenerate);
            }
            if ui
                .add_enabled(busy, egui::Button::new("Cancel"))
                .on_hover_text("Esc")
                .clicked()
            {
                command = Some(Command::Cancel);
            }
            if let Some(c) = command {
                self.run_command(c);
            }
        });
    }

    fn status_bar(&mut self, ui: &mut Ui) {
        ui.horizontal(|ui| {
            let t = &self.state.tracker;
            match t.overall_progress() {
                Some(p) => {
                    let eta = t.eta().map_or("estimating…".to_string(), |d| {
                        format!("{} left", format_duration(d))
                    });
                    ui.add(
                        egui::ProgressBar::new(p)
                            .desired_width(220.0)
                            .text(format!("{:.0}% · {eta}", p * 100.0)),
                    );
                }
                None => {
                    ui.label("Idle");
                }
            }
            ui.separator();
            let model = match &t.model {
                ModelState::None => "no model".to_string(),
                ModelState::Loading(_) => "loading model…".to_string(),
                ModelState::Loaded { name, .. } => name.clone(),
                ModelState::Failed(_) => "model failed".to_string(),
            };
            ui.label(model);
            ui.separator();
            let label = ui.label(self.state.save_label());
            if let Some(dir) = &self.state.project_path {
                label.on_hover_text(dir.display().to_string());
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                let errors = logging::recent()
                    .iter()
                    .filter(|l| l.level == tracing::Level::ERROR)
                    .count();
                let label = if errors > 0 {
                    format!("Log ({errors} errors)")
                } else {
                    "Log".to_string()
                };
                ui.toggle_value(&mut self.state.show_log, label);
            });
        });
    }

    fn dialogs(&mut self, ctx: &egui::Context) {
        if self.state.show_shortcuts {
            let r = egui::Modal::new(egui::Id::unique("shortcut_sheet")).show(ctx, |ui| {
                ui.heading("Keyboard shortcuts");
                egui::Grid::new("shortcut_grid")
                    .striped(true)
                    .show(ui, |ui| {
                        for (keys, what) in SHORTCUTS {
                            ui.strong(*keys);
                            ui.label(*what);
                            ui.end_row();
                        }
                    });
                ui.button("Close").clicked()
            });
            if r.inner || r.should_close() {
                self.state.show_shortcuts = false;
            }
        }
        if self.state.show_export {
            let r = egui::Modal::new(egui::Id::unique("export_dialog")).show(ctx, |ui| {
                ui.heading("Export");
                let done = super::export::count_active(&self.state);
                ui.label(format!(
                    "{done} of {} frames have an image to export.",
                    self.state.doc.frames.len()
                ));
                ui.horizontal(|ui| {
                    if ui.button("Choose folder…").clicked() {
                        self.pending_folder = Some(FolderPurpose::Export);
                    }
                    match &self.export_folder {
                        Some(d) => ui.label(d.display().to_string()),
                        None => ui.weak("no folder chosen"),
                    };
                });
                let mut close = false;
                ui.horizontal(|ui| {
                    if ui
                        .add_enabled(
                            self.export_folder.is_some(),
                            egui::Button::new("Export PNG sequence"),
                        )
                        .clicked()
                        && let Some(dir) = self.export_folder.clone()
                    {
                        match super::export::write_png_sequence(&self.state, &dir) {
                            Ok(n) => self.state.show_info(format!("Exported {n} frames")),
                            Err(e) => self.state.show_error(format!("Export failed: {e}")),
                        }
                        close = true;
                    }
                    if ui.button("Close").clicked() {
                        close = true;
                    }
                });
                close
            });
            if r.inner || r.should_close() {
                self.state.show_export = false;
            }
        }
        if self.state.models.open {
            let mut open = true;
            let mut load = None;
            egui::Window::new("Models")
                .open(&mut open)
                .default_width(640.0)
                .show(ctx, |ui| {
                    load = models_ui(ui, &mut self.state.models);
                });
            self.state.models.open = open;
            if let Some(spec) = load {
                self.state.load_model(spec);
            }
        }
    }

    /// Recovery offer, open errors and the unsaved-changes prompt.
    fn project_dialogs(&mut self, ctx: &egui::Context) {
        if let Some(recovery) = &self.state.recovery {
            let at = recovery
                .autosaved_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let when = crate::project::autosave::clock_time_utc(at);
            let r = egui::Modal::new(egui::Id::unique("recovery_dialog")).show(ctx, |ui| {
                ui.heading(format!("Recover unsaved changes from {when} UTC?"));
                ui.label(
                    "The autosave holds work that was never saved into project.ron \
                     (the studio closed before it was saved).",
                );
                ui.horizontal(|ui| {
                    if ui.button("Recover").clicked() {
                        Some(true)
                    } else if ui.button("Open saved").clicked() {
                        Some(false)
                    } else {
                        None
                    }
                })
                .inner
            });
            match r.inner {
                Some(true) => self.state.accept_recovery(),
                Some(false) => self.state.decline_recovery(),
                None => {}
            }
        }
        if let Some(message) = self.state.open_error.clone() {
            let r = egui::Modal::new(egui::Id::unique("open_error_dialog")).show(ctx, |ui| {
                ui.heading("The project could not be opened");
                ui.colored_label(ui.visuals().error_fg_color, &message);
                ui.label("Nothing was changed on disk.");
                ui.horizontal(|ui| {
                    if ui.button("Choose another folder…").clicked() {
                        Some(true)
                    } else if ui.button("Continue").clicked() {
                        Some(false)
                    } else {
                        None
                    }
                })
                .inner
            });
            if let Some(choose) = r.inner {
                self.state.open_error = None;
                if choose {
                    self.choose_folder(FolderPurpose::Open, ctx);
                }
            }
        }
        if let Some(action) = self.state.confirm.clone() {
            let what = match action {
                PendingAction::Quit => "before quitting",
                PendingAction::Open(_) => "before opening another project",
                PendingAction::New(_) => "before starting a new project",
            };
            let r = egui::Modal::new(egui::Id::unique("unsaved_dialog")).show(ctx, |ui| {
                ui.heading("Unsaved changes");
                ui.label(format!("Save the changes to this storyboard {what}?"));
                ui.horizontal(|ui| {
                    if ui.button("Save").clicked() {
                        Some(UnsavedChoice::Save)
                    } else if ui.button("Discard").clicked() {
                        Some(UnsavedChoice::Discard)
                    } else if ui.button("Cancel").clicked() {
                        Some(UnsavedChoice::Cancel)
                    } else {
                        None
                    }
                })
                .inner
            });
            let choice = r
                .inner
                .or(r.should_close().then_some(UnsavedChoice::Cancel));
            if let Some(choice) = choice {
                self.answer_unsaved(choice, ctx);
            }
        }
    }

    fn toasts(&mut self, ctx: &egui::Context) {
        let now = ctx.input(|i| i.time);
        self.state
            .toasts
            .retain(|t| t.shown_at.is_none_or(|s| now - s < TOAST_SECONDS));
        if self.state.toasts.is_empty() {
            return;
        }
        ctx.request_repaint_after(std::time::Duration::from_millis(500));
        egui::Area::new(egui::Id::unique("toasts"))
            .anchor(egui::Align2::RIGHT_BOTTOM, egui::vec2(-12.0, -40.0))
            .order(egui::Order::Foreground)
            .show(ctx, |ui| {
                let mut dismiss = None;
                for (i, t) in self.state.toasts.iter_mut().enumerate() {
                    t.shown_at.get_or_insert(now);
                    let colour = match t.kind {
                        ToastKind::Error => ui.visuals().error_fg_color,
                        ToastKind::Info => ui.visuals().text_color(),
                    };
                    egui::Frame::popup(ui.style()).show(ui, |ui| {
                        ui.set_max_width(360.0);
                        ui.horizontal(|ui| {
                            ui.colored_label(colour, &t.message);
                            if ui.small_button("Dismiss").clicked() {
                                dismiss = Some(i);
                            }
                        });
                    });
                }
                if let Some(i) = dismiss {
                    self.state.toasts.remove(i);
                }
            });
    }
}

fn log_panel(ui: &mut Ui) {
    egui::ScrollArea::vertical()
        .id_salt("log_scroll")
        .stick_to_bottom(true)
        .show(ui, |ui| {
            for line in logging::recent() {
                let colour = match line.level {
                    tracing::Level::ERROR => ui.visuals().error_fg_color,
                    tracing::Level::WARN => ui.visuals().warn_fg_color,
                    _ => ui.visuals().text_color(),
                };
                ui.colored_label(
                    colour,
                    format!("{} {}: {}", line.level, line.target, line.message),
                );
            }
        });
}

impl eframe::App for StoryloomApp {
    fn ui(&mut self, ui: &mut Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }
}

/// Opens the studio window (wgpu renderer) and runs until it is closed.
pub fn run(options: AppOptions) -> anyhow::Result<()> {
    let native = eframe::NativeOptions {
        renderer: eframe::Renderer::Wgpu,
        viewport: egui::ViewportBuilder::default()
            .with_title("Storyloom")
            .with_inner_size([1440.0, 900.0])
            .with_min_inner_size([900.0, 600.0]),
        ..Default::default()
    };
    eframe::run_native(
        "Storyloom",
        native,
        Box::new(move |cc| {
            let gpu = match &cc.wgpu_render_state {
                Some(rs) => {
                    super::overlay::install(rs);
                    true
                }
                None => false,
            };
            let mut app = StoryloomApp::new(options, &cc.egui_ctx).with_gpu_overlays(gpu);
            if let Some(spec) = app.state.model_spec.clone() {
                app.state.load_model(spec);
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the window could not be opened: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(mods: Modifiers, key: Key) -> egui::RawInput {
        let mut raw = egui::RawInput::default();
        for pressed in [true, false] {
            raw.events.push(egui::Event::Key {
                key,
                physical_key: None,
                pressed,
                repeat: false,
                modifiers: mods,
            });
        }
        raw
    }

    fn commands(mods: Modifiers, key: Key, typing: bool) -> Vec<Command> {
        let ctx = egui::Context::default();
        let mut out = Vec::new();
        let mut output = ctx.run_ui(press(mods, key), |ui| {
            out = ui.ctx().input_mut(|i| shortcut_commands(i, typing));
        });
        // No renderer here: the font atlas upload is dropped on purpose.
        output.textures_delta.clear();
        out
    }

    #[test]
    fn shortcuts_map_to_commands() {
        assert_eq!(
            commands(Modifiers::NONE, Key::N, false),
            vec![Command::AddFrame]
        );
        assert_eq!(
            commands(Modifiers::SHIFT, Key::N, false),
            vec![Command::InsertFrameBefore]
        );
        assert_eq!(
            commands(Modifiers::COMMAND, Key::Z, false),
            vec![Command::Undo]
        );
        assert_eq!(
            commands(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z, false),
            vec![Command::Redo]
        );
        assert_eq!(
            commands(Modifiers::COMMAND, Key::Enter, false),
            vec![Command::GenerateSelected]
        );
        assert_eq!(
            commands(Modifiers::NONE, Key::F1, false),
            vec![Command::Shortcuts]
        );
    }

    #[test]
    fn typing_keeps_edit_keys_for_the_text_field() {
        assert!(commands(Modifiers::NONE, Key::N, true).is_empty());
        assert!(commands(Modifiers::COMMAND, Key::Z, true).is_empty());
        assert_eq!(
            commands(Modifiers::COMMAND, Key::S, true),
            vec![Command::Save]
        );
    }
}
