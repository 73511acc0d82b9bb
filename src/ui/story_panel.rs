//! The Story panel: the character description (identity prompt), the style line and the
//! model in use.

use egui::{TextEdit, Ui};

use super::generation::ModelState;
use super::state::{AppState, StoryField};

fn story_text(
    ui: &mut Ui,
    state: &mut AppState,
    field: StoryField,
    label: &str,
    hint: &str,
    rows: usize,
) {
    let mut text = match field {
        StoryField::Identity => state.doc.identity.clone(),
        StoryField::Style => state.doc.style.clone(),
        StoryField::Title => state.doc.title.clone(),
    };
    let label_response = ui.label(label);
    let r = ui
        .add(
            TextEdit::multiline(&mut text)
                .hint_text(hint)
                .desired_rows(rows)
                .desired_width(f32::INFINITY),
        )
        .labelled_by(label_response.id);
    if r.changed() {
        state.set_story_field(field, text);
    }
    if r.lost_focus() {
        state.history.break_merge();
    }
}

pub fn story_panel_ui(ui: &mut Ui, state: &mut AppState) {
    ui.heading("Story");
    story_text(
        ui,
        state,
        StoryField::Title,
        "Title",
        "Untitled storyboard",
        1,
    );
    story_text(
        ui,
        state,
        StoryField::Identity,
        "Character",
        "Describe the character once: who they are, what they wear…",
        5,
    );
    story_text(
        ui,
        state,
        StoryField::Style,
        "Style",
        "e.g. ink sketch, muted colours",
        2,
    );
    ui.horizontal(|ui| {
        let l = ui.label("Identity seed");
        let mut seed = state.doc.identity_seed;
        if ui
            .add(egui::DragValue::new(&mut seed))
            .labelled_by(l.id)
            .changed()
        {
            state.edit(super::history::EditKey::Field(0, "identity_seed"), |d| {
                d.identity_seed = seed;
            });
        }
    });
    ui.separator();
    ui.heading("Model");
    match &state.tracker.model {
        ModelState::None => {
            ui.weak("No model loaded");
        }
        ModelState::Loading(_) => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Loading…");
            });
        }
        ModelState::Loaded { name, description } => {
            ui.label(name).on_hover_text(description);
        }
        ModelState::Failed(message) => {
            ui.colored_label(ui.visuals().error_fg_color, "Model failed to load")
                .on_hover_text(message);
        }
    }
    if ui.button("Models…").clicked() {
        state.models.open = true;
        if state.models.files.is_empty() && !state.models.is_scanning() {
            state.models.start_scan();
        }
    }
}
