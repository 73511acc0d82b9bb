//! The Timeline strip: a card per frame with its thumbnail, number, action, status and the
//! methods used; click / Ctrl / Shift selection and drag-and-drop reordering. Only the cards
//! in view are drawn, so long storyboards stay cheap.

use egui::{
    Align2, Color32, CornerRadius, FontId, Rect, Sense, Stroke, StrokeKind, Ui, WidgetInfo, pos2,
    vec2,
};

use super::generation::FrameStatus;
use super::state::AppState;
use super::textures::Textures;

pub const CARD_WIDTH: f32 = 150.0;
pub const CARD_HEIGHT: f32 = 150.0;
pub const CARD_GAP: f32 = 8.0;
const THUMB_HEIGHT: f32 = 80.0;

/// What a card shows as its status line.
#[derive(Debug, Clone, PartialEq)]
pub enum CardStatus {
    Empty,
    Queued,
    Running {
        step: usize,
        of: usize,
    },
    Done,
    Failed(String),
    Cancelled,
    /// The active version's image is not in the project folder.
    Missing,
}

impl CardStatus {
    pub fn text(&self) -> String {
        match self {
            CardStatus::Empty => "empty".into(),
            CardStatus::Queued => "queued".into(),
            CardStatus::Running { step, of } => format!("step {step} of {of}"),
            CardStatus::Done => "done".into(),
            CardStatus::Failed(_) => "failed".into(),
            CardStatus::Cancelled => "cancelled".into(),
            CardStatus::Missing => "missing".into(),
        }
    }
}

/// A frame's card status from the tracker and its versions.
pub fn card_status(state: &AppState, frame_id: u64) -> CardStatus {
    match state.tracker.frame_status(frame_id) {
        Some(FrameStatus::Queued) => CardStatus::Queued,
        Some(FrameStatus::Running { step, of }) => CardStatus::Running {
            step: *step,
            of: *of,
        },
        Some(FrameStatus::Failed(m)) => CardStatus::Failed(m.clone()),
        Some(FrameStatus::Cancelled) if state.renders.active(frame_id).is_none() => {
            CardStatus::Cancelled
        }
        _ => match state.renders.active(frame_id) {
            Some(v) if v.missing_reason().is_some() => CardStatus::Missing,
            Some(_) => CardStatus::Done,
            None => CardStatus::Empty,
        },
    }
}

/// Insertion index for a drop at `x` over card `index` whose rect is `rect`: before the
/// card on its left half, after it on its right half.
pub fn drop_index(index: usize, rect: Rect, x: f32) -> usize {
    if x < rect.center().x {
        index
    } else {
        index + 1
    }
}

/// Range of card indices visible in a horizontal viewport `[left, right)`.
pub fn visible_cards(left: f32, right: f32, count: usize) -> std::ops::Range<usize> {
    let pitch = CARD_WIDTH + CARD_GAP;
    let first = ((left / pitch).floor().max(0.0) as usize).min(count);
    let last = ((right / pitch).ceil().max(0.0) as usize + 1).min(count);
    first..last.max(first)
}

/// Draws the strip. Returns nothing; every action goes into `state`.
pub fn timeline_ui(ui: &mut Ui, state: &mut AppState, textures: &mut Textures) {
    ui.horizontal(|ui| {
        ui.strong("Timeline");
        ui.weak(format!(
            "{} frames · {:.1} s",
            state.doc.frames.len(),
            state.doc.duration()
        ));
        if ui.button("Add frame").on_hover_text("N").clicked() {
            state.add_frame();
        }
        let any = !state.selection.ids.is_empty();
        if ui
            .add_enabled(any, egui::Button::new("Insert before"))
            .on_hover_text("Shift+N")
            .clicked()
        {
            state.insert_frame_before();
        }
        if ui
            .add_enabled(any, egui::Button::new("Duplicate"))
            .on_hover_text("D")
            .clicked()
        {
            state.duplicate_selected();
        }
        if ui
            .add_enabled(any, egui::Button::new("Delete"))
            .on_hover_text("Delete")
            .clicked()
        {
            state.delete_selected();
        }
    });
    let count = state.doc.frames.len();
    let total_width = count as f32 * (CARD_WIDTH + CARD_GAP) + CARD_WIDTH;
    egui::ScrollArea::horizontal()
        .id_salt("timeline_scroll")
        .auto_shrink([false, true])
        .show_viewport(ui, |ui, viewport| {
            let (strip, _) =
                ui.allocate_exact_size(vec2(total_width, CARD_HEIGHT + 4.0), Sense::hover());
            let order = state.order();
            let mut drop: Option<(u64, usize)> = None;
            let mut click: Option<(u64, egui::Modifiers)> = None;
            for index in visible_cards(viewport.min.x, viewport.max.x, count) {
                let frame_id = order[index];
                let rect = Rect::from_min_size(
                    pos2(
                        strip.min.x + index as f32 * (CARD_WIDTH + CARD_GAP),
                        strip.min.y + 2.0,
                    ),
                    vec2(CARD_WIDTH, CARD_HEIGHT),
                );
                let id = ui.scope_id().with(("frame_card", frame_id));
                let response = ui.interact(rect, id, Sense::click_and_drag());
                let status = card_status(state, frame_id);
                let label = format!("Frame {} · {}", index + 1, status.text());
                response.widget_info(|| WidgetInfo::labeled(egui::Role::Button, true, &label));
                if response.drag_started() {
                    egui::DragAndDrop::set_payload(ui.ctx(), frame_id);
                }
                if response.clicked() {
                    click = Some((frame_id, ui.input(|i| i.modifiers)));
                }
                if let Some(dragged) = response.dnd_release_payload::<u64>() {
                    let x = ui
                        .input(|i| i.pointer.interact_pos())
                        .map_or(rect.center().x, |p| p.x);
                    drop = Some((*dragged, drop_index(index, rect, x)));
                } else if response.dnd_hover_payload::<u64>().is_some()
                    && let Some(p) = ui.input(|i| i.pointer.hover_pos())
                {
                    let x = if p.x < rect.center().x {
                        rect.min.x - CARD_GAP / 2.0
                    } else {
                        rect.max.x + CARD_GAP / 2.0
                    };
                    ui.painter().vline(
                        x,
                        rect.y_range(),
                        Stroke::new(3.0, ui.visuals().selection.stroke.color),
                    );
                }
                paint_card(
                    ui, state, textures, frame_id, index, rect, &status, &response,
                );
            }
            // Dropping past the last card appends.
            let tail = Rect::from_min_max(
                pos2(
                    strip.min.x + count as f32 * (CARD_WIDTH + CARD_GAP),
                    strip.min.y,
                ),
                strip.max,
            );
            let tail_response =
                ui.interact(tail, ui.scope_id().with("timeline_tail"), Sense::hover());
            if let Some(dragged) = tail_response.dnd_release_payload::<u64>() {
                drop = Some((*dragged, count));
            }
            if let Some((id, mods)) = click {
                state.selection.click(id, mods.command, mods.shift, &order);
            }
            if let Some((dragged, to)) = drop {
                state.move_frames_to(dragged, to);
            }
        });
}

#[allow(clippy::too_many_arguments)]
fn paint_card(
    ui: &Ui,
    state: &AppState,
    textures: &mut Textures,
    frame_id: u64,
    index: usize,
    rect: Rect,
    status: &CardStatus,
    response: &egui::Response,
) {
    let visuals = ui.visuals();
    let selected = state.selection.contains(frame_id);
    let focused = state.selection.focus == Some(frame_id);
    let painter = ui.painter_at(rect.expand(2.0));
    let fill = if selected {
        visuals.selection.bg_fill.gamma_multiply(0.35)
    } else {
        visuals.faint_bg_color
    };
    let stroke = if focused {
        Stroke::new(2.0, visuals.selection.stroke.color)
    } else if selected || response.hovered() {
        Stroke::new(1.0, visuals.selection.stroke.color)
    } else {
        Stroke::new(1.0, visuals.widgets.noninteractive.bg_stroke.color)
    };
    painter.rect(
        rect,
        CornerRadius::same(4),
        fill,
        stroke,
        StrokeKind::Inside,
    );

    // Thumbnail (or the live preview while running, when previews are on).
    let thumb_rect = Rect::from_min_size(
        rect.min + vec2(5.0, 5.0),
        vec2(CARD_WIDTH - 10.0, THUMB_HEIGHT),
    );
    painter.rect_filled(thumb_rect, 2.0, Color32::from_gray(24));
    let preview = state
        .doc
        .settings
        .previews
        .then(|| state.tracker.previews.get(&frame_id))
        .flatten();
    let texture = match (preview, state.renders.active(frame_id)) {
        (Some(p), _) => Some(textures.preview(ui.ctx(), frame_id, p)),
        (None, Some(v)) => textures.thumbnail(ui.ctx(), v),
        _ => None,
    };
    if let Some((tex, size)) = texture {
        let fitted = fit_rect(size, thumb_rect);
        painter.image(
            tex,
            fitted,
            Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0)),
            Color32::WHITE,
        );
    }

    let text_colour = visuals.text_color();
    let weak = visuals.weak_text_color();
    let mut y = thumb_rect.max.y + 4.0;
    painter.text(
        pos2(rect.min.x + 6.0, y),
        Align2::LEFT_TOP,
        format!("{}", index + 1),
        FontId::proportional(13.0),
        text_colour,
    );
    if let Some(frame) = state.doc.frames.get(index) {
        let duration = format!("{:.1} s", frame.duration);
        painter.text(
            pos2(rect.max.x - 6.0, y),
            Align2::RIGHT_TOP,
            duration,
            FontId::proportional(11.0),
            weak,
        );
        painter.text(
            pos2(rect.min.x + 26.0, y),
            Align2::LEFT_TOP,
            frame.short_action(14),
            FontId::proportional(12.0),
            text_colour,
        );
    }
    y += 18.0;
    let status_colour = match status {
        CardStatus::Failed(_) | CardStatus::Missing => visuals.error_fg_color,
        CardStatus::Done => Color32::from_rgb(110, 190, 110),
        _ => weak,
    };
    painter.text(
        pos2(rect.min.x + 6.0, y),
        Align2::LEFT_TOP,
        status.text(),
        FontId::proportional(11.0),
        status_colour,
    );
    if let CardStatus::Running { step, of } = status {
        let bar = Rect::from_min_size(
            pos2(rect.min.x + 70.0, y + 3.0),
            vec2(CARD_WIDTH - 76.0, 7.0),
        );
        painter.rect_filled(bar, 3.0, visuals.extreme_bg_color);
        let fraction = *step as f32 / (*of).max(1) as f32;
        let mut done = bar;
        done.set_width(bar.width() * fraction.clamp(0.0, 1.0));
        painter.rect_filled(done, 3.0, visuals.selection.bg_fill);
    }
    y += 16.0;
    let methods = state
        .renders
        .active(frame_id)
        .map(|v| {
            if v.record.methods.is_empty() {
                "vanilla".to_string()
            } else {
                v.record.methods.join(", ")
            }
        })
        .unwrap_or_default();
    painter.text(
        pos2(rect.min.x + 6.0, y),
        Align2::LEFT_TOP,
        methods,
        FontId::proportional(10.0),
        weak,
    );
}

/// The largest rect of an image's aspect centred in `area`.
pub fn fit_rect(image_size: egui::Vec2, area: Rect) -> Rect {
    if image_size.x <= 0.0 || image_size.y <= 0.0 {
        return area;
    }
    let scale = (area.width() / image_size.x).min(area.height() / image_size.y);
    Rect::from_center_size(area.center(), image_size * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_cards_are_drawn() {
        let pitch = CARD_WIDTH + CARD_GAP;
        assert_eq!(visible_cards(0.0, 3.0 * pitch, 200), 0..4);
        assert_eq!(visible_cards(10.0 * pitch + 1.0, 12.0 * pitch, 200), 10..13);
        assert_eq!(visible_cards(0.0, 1e6, 5), 0..5);
        assert_eq!(visible_cards(1e6, 2e6, 5), 5..5);
    }

    #[test]
    fn drops_land_before_or_after_by_half() {
        let r = Rect::from_min_size(pos2(100.0, 0.0), vec2(150.0, 150.0));
        assert_eq!(drop_index(3, r, 120.0), 3);
        assert_eq!(drop_index(3, r, 200.0), 4);
    }

    #[test]
    fn fit_keeps_the_aspect_and_centres() {
        let area = Rect::from_min_size(pos2(0.0, 0.0), vec2(200.0, 100.0));
        let r = fit_rect(vec2(100.0, 100.0), area);
        assert_eq!(r, Rect::from_min_size(pos2(50.0, 0.0), vec2(100.0, 100.0)));
        let r = fit_rect(vec2(400.0, 100.0), area);
        assert_eq!(r, Rect::from_min_size(pos2(0.0, 25.0), vec2(200.0, 50.0)));
    }
}
