//! The Inspector: the focused frame's fields, the generation settings and the consistency
//! methods with their settings. Each method is one section function, so new methods slot in
//! as their settings land in `MethodSettings`.

use egui::{DragValue, TextEdit, Ui};

use crate::consistency::MethodSettings;
use crate::consistency::asemconsist::afs::{self, AfsMode};
use crate::consistency::asemconsist::{AsemPreset, AsemSettings, pad, stm};
use crate::consistency::characonsist::{BackgroundMode, CharaConsistSettings};

use super::document::{AspectPreset, GenerationSettings, next_seed};
use super::history::EditKey;
use super::state::{AppState, FrameField};

/// A labelled text field bound to a frame field; edits go through the undo history.
fn frame_text(
    ui: &mut Ui,
    state: &mut AppState,
    frame_id: u64,
    field: FrameField,
    label: &str,
    rows: usize,
) {
    let Some(frame) = state.doc.frame(frame_id) else {
        return;
    };
    let mut text = match field {
        FrameField::Background => frame.background.clone(),
        FrameField::Action => frame.action.clone(),
        FrameField::Dialogue => frame.dialogue.clone(),
        FrameField::Notes => frame.notes.clone(),
    };
    let label_response = ui.label(label);
    let r = ui
        .add(
            TextEdit::multiline(&mut text)
                .desired_rows(rows)
                .desired_width(f32::INFINITY)
                .id_salt(("frame_field", frame_id, field.name())),
        )
        .labelled_by(label_response.id);
    if r.changed() {
        state.set_frame_field(frame_id, field, text);
    }
    if r.lost_focus() {
        state.history.break_merge();
    }
}

/// Draws the inspector.
pub fn inspector_ui(ui: &mut Ui, state: &mut AppState) {
    egui::ScrollArea::vertical()
        .id_salt("inspector_scroll")
        .show(ui, |ui| {
            frame_section(ui, state);
            ui.separator();
            generation_section(ui, state);
            ui.separator();
            methods_section(ui, state);
        });
}

fn frame_section(ui: &mut Ui, state: &mut AppState) {
    let Some(frame_id) = state.selection.focus else {
        ui.heading("Frame");
        ui.weak("Select a frame in the timeline, or press N to add one.");
        return;
    };
    let Some(index) = state.doc.index_of(frame_id) else {
        return;
    };
    ui.heading(format!("Frame {}", index + 1));
    if state.selection.ids.len() > 1 {
        ui.weak(format!("{} frames selected", state.selection.ids.len()));
    }
    frame_text(
        ui,
        state,
        frame_id,
        FrameField::Background,
        "Background / environment",
        2,
    );
    frame_text(ui, state, frame_id, FrameField::Action, "Action", 2);
    frame_text(ui, state, frame_id, FrameField::Dialogue, "Dialogue", 1);
    frame_text(ui, state, frame_id, FrameField::Notes, "Notes", 1);

    let Some(frame) = state.doc.frame(frame_id).cloned() else {
        return;
    };
    let mut edited = frame.clone();
    let mut dragging = false;
    egui::Grid::new("frame_numbers")
        .num_columns(2)
        .show(ui, |ui| {
            ui.label("Duration");
            let r = ui.add(
                DragValue::new(&mut edited.duration)
                    .range(0.1..=60.0)
                    .speed(0.1)
                    .suffix(" s"),
            );
            dragging |= r.dragged() || r.has_focus();
            ui.end_row();
            ui.label("Scene");
            let r = ui.add(DragValue::new(&mut edited.scene).range(0..=999));
            dragging |= r.dragged() || r.has_focus();
            ui.end_row();
            ui.label("Seed");
            ui.horizontal(|ui| {
                let r = ui.add_enabled(!edited.seed_locked, DragValue::new(&mut edited.seed));
                dragging |= r.dragged() || r.has_focus();
                ui.checkbox(&mut edited.seed_locked, "Lock")
                    .on_hover_text("A locked seed keeps its value when new seeds are drawn.");
                if ui
                    .add_enabled(!edited.seed_locked, egui::Button::new("New"))
                    .on_hover_text("Draw a new seed")
                    .clicked()
                {
                    edited.seed = next_seed(edited.seed);
                }
                if ui
                    .add_enabled(!edited.seed_locked, egui::Button::new("+1"))
                    .clicked()
                {
                    edited.seed = edited.seed.wrapping_add(1);
                }
            });
            ui.end_row();
        });
    if edited != frame {
        let key = if dragging {
            EditKey::Field(frame_id, "numbers")
        } else {
            EditKey::Command
        };
        state.edit(key, |d| {
            if let Some(f) = d.frame_mut(frame_id) {
                *f = edited;
            }
        });
    }
    ui.horizontal(|ui| {
        if ui
            .button("Regenerate")
            .on_hover_text("A new version of this frame")
            .clicked()
        {
            state.regenerate_focused();
        }
        if state.selection.ids.len() > 1 && ui.button("New seeds for selection").clicked() {
            state.new_seeds_for_selected();
        }
    });
}

fn generation_section(ui: &mut Ui, state: &mut AppState) {
    ui.heading("Generation");
    let before = state.doc.settings.clone();
    let mut s = before.clone();
    let dragging = generation_settings_ui(ui, &mut s);
    if s != before {
        let key = if dragging {
            EditKey::Field(0, "generation")
        } else {
            EditKey::Command
        };
        state.edit(key, |d| {
            if (s.width, s.height) != (d.settings.width, d.settings.height) {
                // The project keeps the shape's name; it follows a new size.
                d.aspect = crate::project::AspectPreset::of_size(s.width, s.height);
            }
            d.settings = s;
        });
    }
}

/// The generation settings widgets; returns true while a value is being dragged or typed.
pub fn generation_settings_ui(ui: &mut Ui, s: &mut GenerationSettings) -> bool {
    let mut dragging = false;
    egui::Grid::new("generation_grid")
        .num_columns(2)
        .show(ui, |ui| {
            ui.label("Steps");
            let r = ui.add(egui::Slider::new(&mut s.steps, 1..=60));
            dragging |= r.dragged() || r.has_focus();
            ui.end_row();
            ui.label("Guidance");
            let r = ui.add(egui::Slider::new(&mut s.guidance, 1.0..=10.0).step_by(0.1));
            dragging |= r.dragged() || r.has_focus();
            ui.end_row();
            ui.label("Aspect");
            let current = AspectPreset::of_size(s.width, s.height);
            ui.horizontal_wrapped(|ui| {
                for preset in AspectPreset::ALL {
                    if ui
                        .selectable_label(current == Some(preset), preset.label())
                        .clicked()
                    {
                        let pixels = s.width * s.height;
                        (s.width, s.height) = preset.size(pixels);
                    }
                }
            });
            ui.end_row();
            ui.label("Size");
            ui.horizontal(|ui| {
                let r = ui.add(DragValue::new(&mut s.width).range(64..=2048).speed(16));
                dragging |= r.dragged() || r.has_focus();
                ui.label("×");
                let r = ui.add(DragValue::new(&mut s.height).range(64..=2048).speed(16));
                dragging |= r.dragged() || r.has_focus();
            });
            ui.end_row();
        });
    // The model works on 16-pixel cells.
    s.width = s.width.div_ceil(16) * 16;
    s.height = s.height.div_ceil(16) * 16;
    ui.checkbox(&mut s.previews, "Live previews in frame cards")
        .on_hover_text(
            "Shows each step's image while a frame renders; costs a little time per step.",
        );
    dragging
}

fn methods_section(ui: &mut Ui, state: &mut AppState) {
    ui.heading("Consistency methods");
    let before = state.doc.settings.methods.clone();
    let mut m = before.clone();
    let measured = state
        .selection
        .focus
        .and_then(|id| state.renders.active(id))
        .map(|v| AsemMeasured {
            afs: v.analysis.afs,
            group: asem_group(&v.record.methods),
        })
        .unwrap_or_default();
    let dragging = methods_ui(ui, &mut m, &measured);
    if m != before {
        let key = if dragging {
            EditKey::Field(0, "methods")
        } else {
            EditKey::Command
        };
        state.edit(key, |d| d.settings.methods = m);
    }
}

/// What the focused frame's last render found out about ASemConsist.
#[derive(Debug, Clone, Default)]
pub struct AsemMeasured {
    pub afs: Option<afs::AfsDecision>,
    /// "group k of n, frames a-b" when the story was split for the text encoder.
    pub group: Option<String>,
}

/// The group part of a frame's "ASemConsist (…, group k of n, frames a-b)" label.
fn asem_group(methods_used: &[String]) -> Option<String> {
    let label = methods_used.iter().find(|m| m.starts_with("ASemConsist"))?;
    let start = label.find("group ")?;
    Some(label[start..].trim_end_matches(')').to_string())
}

const GROUP_HELP: &str = "ASemConsist encodes the character and every frame's prompts as one \
combined prompt. A story longer than the text encoder's window is rendered in groups of \
consecutive frames that fit, each with the character text; this is the focused frame's group.";

/// All method sections; returns true while a value is being dragged or typed.
pub fn methods_ui(ui: &mut Ui, m: &mut MethodSettings, measured: &AsemMeasured) -> bool {
    let mut dragging = false;
    ui.checkbox(&mut m.characonsist_enabled, "CharaConsist")
        .on_hover_text(
            "Keeps the character's look (face, clothes, colours) the same in every frame by \
             letting each frame look at the identity image while it is drawn, point by \
             point. No training.\n\nPaper: CharaConsist (Wang et al., ICCV 2025).",
        );
    if m.characonsist_enabled {
        ui.indent("chara", |ui| {
            dragging |= characonsist_ui(ui, &mut m.characonsist, &mut m.bank_budget_mib);
        });
    }
    ui.checkbox(&mut m.asemconsist_enabled, "ASemConsist")
        .on_hover_text(
            "Selective text-embedding modification (STM), padding projection (PAD) and \
             adaptive feature sharing (AFS): keeps the character the same from the text \
             side, so a description shared by every frame means the same look each time.\n\n\
             Paper: ASemConsist.",
        );
    if m.asemconsist_enabled {
        ui.indent("asem", |ui| {
            dragging |= asemconsist_ui(ui, &mut m.asemconsist, measured);
        });
    }
    dragging
}

/// CharaConsist's switches and numbers; returns true while a value is being dragged.
fn characonsist_ui(ui: &mut Ui, c: &mut CharaConsistSettings, bank_budget_mib: &mut u64) -> bool {
    let mut dragging = false;
    ui.checkbox(&mut c.point_tracking, "Point tracking")
        .on_hover_text(
            "Each part of the character in a frame is matched to the same part in the \
             identity image (a hand to the hand, a scarf to the scarf), even when the pose \
             changes, so details land where they belong.\n\nCharaConsist: point-tracking \
             attention (eqs. 10-17).",
        );
    ui.checkbox(&mut c.token_merge, "Token merge")
        .on_hover_text(
            "Blends the matched identity details into the frame early on, then lets go, so \
             small details (patterns, buttons) stay consistent.\n\nCharaConsist: adaptive \
             token merge (eq. 20).",
        );
    ui.horizontal(|ui| {
        ui.label("Background").on_hover_text(
            "Keep: every frame shares the identity's place. Switch: only the character is \
             shared, each frame has its own environment. Mixed scenes: the first frame of \
             each scene sets that scene's place.\n\nCharaConsist: background preservation \
             and switching.",
        );
        for (mode, name) in [
            (BackgroundMode::Keep, "Keep"),
            (BackgroundMode::Switch, "Switch"),
            (BackgroundMode::MixedScenes, "Mixed scenes"),
        ] {
            ui.radio_value(&mut c.background, mode, name);
        }
    });
    egui::Grid::new("chara_grid").num_columns(2).show(ui, |ui| {
        let l = ui.label("Mask step").on_hover_text(format!(
            "When the character's outline and the point matches are taken: earlier is \
             faster to settle, later is more precise. Counted on a {}-step schedule and \
             scaled to the steps you use.\n\nCharaConsist: mask extraction (eqs. 6-9).",
            c.num_steps
        ));
        let max = c.num_steps.saturating_sub(1).max(1);
        let r = ui
            .add(DragValue::new(&mut c.extraction_step).range(1..=max))
            .labelled_by(l.id);
        dragging |= r.dragged() || r.has_focus();
        ui.end_row();
        let l = ui.label("Match threshold").on_hover_text(
            "How sure a match must be to be used: higher keeps only clear matches (safer), \
             lower matches more of the character.\n\nCharaConsist: point matching (eq. 5).",
        );
        let r = ui
            .add(
                egui::Slider::new(&mut c.match_threshold, 0.0..=1.0)
                    .step_by(0.01)
                    .max_decimals(2),
            )
            .labelled_by(l.id);
        dragging |= r.dragged() || r.has_focus();
        ui.end_row();
    });
    egui::CollapsingHeader::new("Advanced")
        .id_salt("chara_advanced")
        .default_open(false)
        .show(ui, |ui| {
            egui::Grid::new("chara_advanced_grid")
                .num_columns(2)
                .show(ui, |ui| {
                    let l = ui.label("Identity memory (MiB)").on_hover_text(
                        "Memory the identity's stored attention may use. When the identity \
                         and a frame fit together they run side by side; otherwise the \
                         identity is stored once in half precision and read back.",
                    );
                    let r = ui
                        .add(DragValue::new(bank_budget_mib).range(64..=65536).speed(64))
                        .labelled_by(l.id);
                    dragging |= r.dragged() || r.has_focus();
                    ui.end_row();
                    let l = ui.label("Merge strength").on_hover_text(
                        "How strongly matched identity details are blended in before it \
                         fades out.\n\nCharaConsist: alpha of eq. 20.",
                    );
                    let r = ui
                        .add(DragValue::new(&mut c.alpha).range(0.0..=1.0).speed(0.01))
                        .labelled_by(l.id);
                    dragging |= r.dragged() || r.has_focus();
                    ui.end_row();
                    ui.label("Clean the mask").on_hover_text(
                        "Removes specks and fills small holes in the character's outline \
                         (erosion then dilation).",
                    );
                    ui.checkbox(&mut c.clean_mask, "");
                    ui.end_row();
                });
        });
    dragging
}

fn help<'a>(pairs: &'a [(&'a str, &'a str)], key: &str) -> &'a str {
    pairs.iter().find(|(k, _)| *k == key).map_or("", |(_, h)| h)
}

fn asemconsist_ui(ui: &mut Ui, a: &mut AsemSettings, measured: &AsemMeasured) -> bool {
    let mut dragging = false;
    let preset = AsemPreset::matching(a);
    egui::ComboBox::from_label("Preset")
        .selected_text(preset.map_or("Custom", |p| p.label()))
        .show_ui(ui, |ui| {
            for p in AsemPreset::ALL {
                if ui.selectable_label(preset == Some(p), p.label()).clicked() {
                    *a = p.settings();
                }
            }
        });
    ui.checkbox(&mut a.stm.enabled, "STM")
        .on_hover_text(format!(
            "{}\n\n{}",
            stm::EXPRESSION_HELP,
            stm::SUPPRESSION_HELP
        ));
    ui.checkbox(&mut a.pad.enabled, "PAD")
        .on_hover_text(pad::GAMMA_HELP);
    ui.horizontal(|ui| {
        ui.label("AFS").on_hover_text(afs::MODE_HELP);
        for (mode, name) in [
            (AfsMode::Auto, "Auto"),
            (AfsMode::Always, "Always"),
            (AfsMode::Never, "Never"),
        ] {
            ui.radio_value(&mut a.afs.mode, mode, name)
                .on_hover_text(afs::MODE_HELP);
        }
    });
    match measured.afs {
        Some(d) => {
            let radius = d
                .radius
                .map_or("not measured".to_string(), |r| format!("{r:.4}"));
            ui.label(format!(
                "Measured radius: {radius} (threshold {:.4}) → sharing {}",
                d.threshold,
                if d.use_sharing { "on" } else { "off" }
            ))
            .on_hover_text(afs::THRESHOLD_HELP);
        }
        None => {
            ui.weak("Measured radius: generate a frame to measure it")
                .on_hover_text(afs::THRESHOLD_HELP);
        }
    }
    if let Some(group) = &measured.group {
        ui.label(format!("Combined prompt: {group}"))
            .on_hover_text(GROUP_HELP);
    } else if measured.afs.is_some() {
        ui.weak("Combined prompt: the whole story")
            .on_hover_text(GROUP_HELP);
    }
    egui::CollapsingHeader::new("Advanced")
        .id_salt("asem_advanced")
        .default_open(false)
        .show(ui, |ui| {
            egui::Grid::new("asem_advanced_grid")
                .num_columns(2)
                .show(ui, |ui| {
                    let stm_help = stm::StmSettings::help();
                    let pad_help = pad::PadSettings::help();
                    let afs_help = afs::AfsSettings::help();
                    let mut drag =
                        |ui: &mut Ui, label: &str, tip: &str, value: &mut f64, speed: f64| {
                            ui.label(label).on_hover_text(tip);
                            let r = ui.add(DragValue::new(value).speed(speed).max_decimals(4));
                            dragging |= r.dragged() || r.has_focus();
                            ui.end_row();
                        };
                    drag(
                        ui,
                        "STM α (expression)",
                        help(stm_help, "expression"),
                        &mut a.stm.expression.alpha,
                        0.001,
                    );
                    drag(
                        ui,
                        "STM β (expression)",
                        help(stm_help, "expression"),
                        &mut a.stm.expression.beta,
                        0.01,
                    );
                    drag(
                        ui,
                        "STM α' (suppression)",
                        help(stm_help, "suppression"),
                        &mut a.stm.suppression.alpha,
                        0.001,
                    );
                    drag(
                        ui,
                        "STM β' (suppression)",
                        help(stm_help, "suppression"),
                        &mut a.stm.suppression.beta,
                        0.01,
                    );
                    drag(ui, "PAD γ", help(pad_help, "gamma"), &mut a.pad.gamma, 0.01);
                    let mut threshold = a.afs.threshold as f64;
                    drag(
                        ui,
                        "AFS threshold",
                        help(afs_help, "threshold"),
                        &mut threshold,
                        0.001,
                    );
                    a.afs.threshold = threshold as f32;
                    ui.label("STM inside the transformer")
                        .on_hover_text(help(stm_help, "in_transformer"));
                    ui.checkbox(&mut a.stm.in_transformer, "");
                    ui.end_row();
                });
            ui.weak(AsemSettings::step_indexing_help());
        });
    dragging
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_asem_group_is_read_from_the_frame_label() {
        let used = vec![
            "CharaConsist (switch background)".to_string(),
            "ASemConsist (AFS on, radius 0.8799, group 2 of 3, frames 7-12)".to_string(),
        ];
        assert_eq!(
            asem_group(&used).as_deref(),
            Some("group 2 of 3, frames 7-12")
        );
        assert_eq!(asem_group(&["ASemConsist (AFS on)".to_string()]), None);
        assert_eq!(asem_group(&[]), None);
    }
}
