//! The Viewer: the focused frame large beside the identity image, zoom (wheel), pan (drag),
//! fit (double-click), its versions, a split comparison of two versions, and the overlays.

use std::sync::Arc;

use egui::{Color32, Rect, Sense, Stroke, Ui, pos2, vec2};

use super::document::Version;
use super::overlay::{
    GpuGrid, ImageLayer, ImageOverlay, ImageOverlayCallback, MarksCallback, MatchDisplay,
    OverlayData, blend, frame_heat, identity_heat, match_marks, spread_matches, token_at,
};
use super::state::AppState;
use super::textures::Textures;
use super::timeline::fit_rect;

/// Where the two images sit: the frame pane takes this share of the width.
const FRAME_SHARE: f32 = 0.62;

/// Grid texture keys: version id and what the grid holds.
fn grid_key(version_id: u64, kind: u64) -> u64 {
    (version_id << 3) | kind
}

/// The rect of an image in a pane, after zoom and pan.
pub fn zoomed_rect(image_size: egui::Vec2, pane: Rect, zoom: f32, pan: egui::Vec2) -> Rect {
    let fitted = fit_rect(image_size, pane);
    Rect::from_center_size(pane.center() + pan, fitted.size() * zoom)
}

fn uv_full() -> Rect {
    Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0))
}

fn heat_grid(key: u64, grid: (usize, usize), values: &[Option<f32>]) -> GpuGrid {
    GpuGrid {
        key,
        rows: grid.0 as u32,
        cols: grid.1 as u32,
        bytes: Arc::from(
            values
                .iter()
                .map(|v| blend::encode_heat(*v))
                .collect::<Vec<u8>>(),
        ),
    }
}

/// Draws an image with the chosen overlay layer (GPU callback) or plain (egui mesh).
#[allow(clippy::too_many_arguments)]
fn draw_image(
    ui: &Ui,
    state: &AppState,
    textures: &mut Textures,
    gpu_overlays: bool,
    version: &Version,
    data: &OverlayData,
    is_identity: bool,
    rect: Rect,
    clip: Rect,
    slot: u64,
) {
    let layer = state.overlay.layer;
    let grid_size = if is_identity {
        data.identity_grid
    } else {
        data.frame_grid
    };
    let overlay = match layer {
        ImageLayer::Mask => {
            let mask = if is_identity {
                &data.identity_mask
            } else {
                &data.frame_mask
            };
            mask.as_ref().map(|m| ImageOverlay::MaskTint {
                mask: GpuGrid {
                    key: grid_key(version.id, if is_identity { 1 } else { 0 }),
                    rows: m.rows as u32,
                    cols: m.cols as u32,
                    bytes: Arc::from(m.to_bytes()),
                },
                params: state.overlay.tint,
                outline_px: state.overlay.outline_px,
            })
        }
        ImageLayer::Heat if data.has_matches() && grid_size.0 * grid_size.1 > 0 => {
            let tokens = grid_size.0 * grid_size.1;
            let values = if is_identity {
                identity_heat(tokens, &data.matches)
            } else {
                frame_heat(tokens, &data.matches)
            };
            Some(ImageOverlay::Heat {
                heat: heat_grid(
                    grid_key(version.id, if is_identity { 3 } else { 2 }),
                    grid_size,
                    &values,
                ),
                opacity: state.overlay.heat_opacity,
                layer_alpha: 1.0,
            })
        }
        _ => None,
    };
    let painter = ui.painter_at(clip);
    match overlay {
        Some(overlay) if gpu_overlays && version.image().is_some() => {
            let image = textures.gpu_image(version).expect("checked above");
            painter.add(egui_wgpu::Callback::new_paint_callback(
                clip,
                ImageOverlayCallback {
                    slot,
                    image,
                    image_rect: rect,
                    overlay,
                },
            ));
        }
        _ => match textures.full(ui.ctx(), version) {
            Some((tex, _)) => {
                painter.image(tex, rect, uv_full(), Color32::WHITE);
            }
            None => {
                let text = match version.missing_reason() {
                    Some(why) => format!("Image missing\n{why}"),
                    None => "Loading…".to_string(),
                };
                painter.text(
                    rect.center(),
                    egui::Align2::CENTER_CENTER,
                    text,
                    egui::FontId::proportional(14.0),
                    ui.visuals().weak_text_color(),
                );
            }
        },
    }
}

/// Size of a version's image: the decoded pixels, else the size recorded in the project.
fn version_size(version: &Version) -> egui::Vec2 {
    match version.image() {
        Some(img) => vec2(img.width() as f32, img.height() as f32),
        None => vec2(
            version.record.width.max(1) as f32,
            version.record.height.max(1) as f32,
        ),
    }
}

/// Draws the viewer.
pub fn viewer_ui(ui: &mut Ui, state: &mut AppState, textures: &mut Textures, gpu_overlays: bool) {
    let focus = state.selection.focus;
    let versions = focus
        .and_then(|id| state.renders.of(id))
        .map(|v| (v.versions.clone(), v.active))
        .unwrap_or_default();
    toolbar(ui, state, &versions.0, versions.1);
    let area = ui.available_rect_before_wrap();
    ui.allocate_rect(area, Sense::hover());
    if focus.is_none() {
        ui.painter().text(
            area.center(),
            egui::Align2::CENTER_CENTER,
            "No frame selected",
            egui::FontId::proportional(16.0),
            ui.visuals().weak_text_color(),
        );
        return;
    }
    let show_identity = state.viewer.show_identity;
    let (frame_pane, identity_pane) = if show_identity {
        let split = area.min.x + area.width() * FRAME_SHARE;
        (
            Rect::from_min_max(area.min, pos2(split - 4.0, area.max.y)),
            Some(Rect::from_min_max(pos2(split + 4.0, area.min.y), area.max)),
        )
    } else {
        (area, None)
    };
    let painter = ui.painter();
    painter.rect_filled(frame_pane, 0.0, Color32::from_gray(18));

    // Pan, zoom and fit.
    let response = ui.interact(
        frame_pane,
        ui.scope_id().with("frame_pane"),
        Sense::click_and_drag(),
    );
    if response.dragged() {
        state.viewer.pan += response.drag_delta();
    }
    if response.double_clicked() {
        state.viewer.fit();
    }
    if response.hovered() {
        let scroll = ui.input(|i| i.smooth_scroll_delta.y);
        if scroll != 0.0
            && let Some(p) = response.hover_pos()
        {
            state
                .viewer
                .zoom_by((scroll * 0.002).exp(), p - frame_pane.center());
        }
    }

    let active = versions.1.and_then(|i| versions.0.get(i)).cloned();
    let Some(version) = active else {
        painter.text(
            frame_pane.center(),
            egui::Align2::CENTER_CENTER,
            "Not generated yet — Ctrl+Enter generates the selection",
            egui::FontId::proportional(15.0),
            ui.visuals().weak_text_color(),
        );
        identity_placeholder(ui, state, textures, identity_pane);
        return;
    };
    let image_size = version_size(&version);
    let frame_rect = zoomed_rect(image_size, frame_pane, state.viewer.zoom, state.viewer.pan);
    let data = version.overlay.clone();

    match state.viewer.compare {
        Some((a, b)) if a < versions.0.len() && b < versions.0.len() => {
            let split_x = frame_rect.min.x + frame_rect.width() * state.viewer.split;
            let left = Rect::from_min_max(
                frame_pane.min,
                pos2(split_x.max(frame_pane.min.x), frame_pane.max.y),
            );
            let right = Rect::from_min_max(
                pos2(split_x.min(frame_pane.max.x), frame_pane.min.y),
                frame_pane.max,
            );
            for (index, clip) in [(a, left), (b, right)] {
                if let Some((tex, _)) = textures.full(ui.ctx(), &versions.0[index]) {
                    ui.painter_at(clip.intersect(frame_pane)).image(
                        tex,
                        frame_rect,
                        uv_full(),
                        Color32::WHITE,
                    );
                }
            }
            ui.painter_at(frame_pane).vline(
                split_x,
                frame_rect.y_range(),
                Stroke::new(2.0, Color32::WHITE),
            );
        }
        _ => draw_image(
            ui,
            state,
            textures,
            gpu_overlays,
            &version,
            &data,
            false,
            frame_rect,
            frame_pane,
            1,
        ),
    }

    let identity = state.renders.identity_active().cloned();
    let identity_rect = match (identity_pane, &identity) {
        (Some(pane), Some(id_version)) => {
            ui.painter().rect_filled(pane, 0.0, Color32::from_gray(18));
            let size = version_size(id_version);
            let rect = fit_rect(size, pane.shrink(8.0));
            draw_image(
                ui,
                state,
                textures,
                gpu_overlays,
                id_version,
                &data,
                true,
                rect,
                pane,
                2,
            );
            ui.painter().text(
                pane.left_top() + vec2(6.0, 4.0),
                egui::Align2::LEFT_TOP,
                "Identity",
                egui::FontId::proportional(12.0),
                Color32::from_gray(200),
            );
            Some(rect)
        }
        _ => {
            identity_placeholder(ui, state, textures, identity_pane);
            None
        }
    };

    // Correspondences.
    let Some(identity_rect) = identity_rect else {
        return;
    };
    if !data.has_matches() {
        return;
    }
    let hovered = response
        .hover_pos()
        .and_then(|p| token_at(data.frame_grid, frame_rect, p));
    if response.clicked()
        && let Some(t) = hovered
    {
        state.overlay.pinned_token = Some(t);
    }
    let chosen = match state.overlay.matches {
        MatchDisplay::Off => Vec::new(),
        MatchDisplay::Pointer => hovered
            .or(state.overlay.pinned_token)
            .and_then(|t| data.match_of(t).copied())
            .into_iter()
            .collect(),
        MatchDisplay::Many => spread_matches(&data.matches, state.overlay.match_count),
    };
    if chosen.is_empty() {
        return;
    }
    let marks = match_marks(&data, &chosen, frame_rect, identity_rect, 4.0);
    if gpu_overlays {
        ui.painter_at(area)
            .add(egui_wgpu::Callback::new_paint_callback(
                area,
                MarksCallback {
                    slot: 3,
                    marks: Arc::from(marks),
                },
            ));
    } else {
        // Without the wgpu renderer the same marks are drawn as egui shapes.
        let painter = ui.painter_at(area);
        for m in marks {
            let c = m.colour.map(blend::to_byte);
            let colour = Color32::from_rgba_premultiplied(c[0], c[1], c[2], c[3]);
            if m.a == m.b {
                painter.circle_filled(m.a, m.radius, colour);
            } else {
                painter.line_segment([m.a, m.b], Stroke::new(m.radius * 2.0, colour));
            }
        }
    }
}

fn identity_placeholder(ui: &Ui, state: &AppState, textures: &mut Textures, pane: Option<Rect>) {
    let Some(pane) = pane else {
        return;
    };
    ui.painter().rect_filled(pane, 0.0, Color32::from_gray(18));
    match state
        .renders
        .identity_active()
        .and_then(|v| textures.full(ui.ctx(), v))
    {
        Some((tex, size)) => {
            ui.painter().image(
                tex,
                fit_rect(size, pane.shrink(8.0)),
                uv_full(),
                Color32::WHITE,
            );
        }
        None => {
            ui.painter().text(
                pane.center(),
                egui::Align2::CENTER_CENTER,
                "Identity image\n(made with the first consistent generation)",
                egui::FontId::proportional(13.0),
                ui.visuals().weak_text_color(),
            );
        }
    }
}

fn toolbar(ui: &mut Ui, state: &mut AppState, versions: &[Version], active: Option<usize>) {
    ui.horizontal_wrapped(|ui| {
        if ui
            .button("Fit")
            .on_hover_text("Double-click the image")
            .clicked()
        {
            state.viewer.fit();
        }
        ui.label(format!("{:.0}%", state.viewer.zoom * 100.0));
        ui.separator();
        for layer in ImageLayer::ALL {
            ui.selectable_value(&mut state.overlay.layer, layer, layer.label());
        }
        ui.separator();
        egui::ComboBox::from_label("Matches")
            .selected_text(state.overlay.matches.label())
            .show_ui(ui, |ui| {
                for d in MatchDisplay::ALL {
                    ui.selectable_value(&mut state.overlay.matches, d, d.label());
                }
            });
        if state.overlay.matches == MatchDisplay::Many {
            let l = ui.label("N");
            ui.add(egui::DragValue::new(&mut state.overlay.match_count).range(1..=512))
                .labelled_by(l.id)
                .on_hover_text("How many matches to show");
        }
        ui.checkbox(&mut state.viewer.show_identity, "Identity");
    });
    let Some(frame_id) = state.selection.focus else {
        return;
    };
    if versions.is_empty() {
        return;
    }
    ui.horizontal_wrapped(|ui| {
        ui.label("Versions:");
        for (i, v) in versions.iter().enumerate() {
            let text = format!("v{}", i + 1);
            let r = &v.record;
            let tip = format!(
                "seed {} · {} steps · guidance {:.1} · {}×{}{}{}{}",
                r.seed,
                r.steps,
                r.guidance,
                r.width,
                r.height,
                v.seconds()
                    .map_or(String::new(), |s| format!(" · {s:.1} s")),
                if r.methods.is_empty() {
                    String::new()
                } else {
                    format!(" · {}", r.methods.join(", "))
                },
                if r.file.is_empty() {
                    String::new()
                } else {
                    format!(" · {}", r.file)
                }
            );
            if ui
                .selectable_label(active == Some(i), text)
                .on_hover_text(tip)
                .clicked()
            {
                state.renders.set_active(frame_id, i);
                state.mark_dirty();
            }
        }
        if let Some(a) = active
            && ui
                .small_button("Delete version")
                .on_hover_text("Delete the shown version")
                .clicked()
        {
            state.renders.delete_version(frame_id, a);
            state.viewer.compare = None;
            state.mark_dirty();
        }
        if versions.len() >= 2 {
            let mut comparing = state.viewer.compare.is_some();
            if ui.checkbox(&mut comparing, "Compare").changed() {
                state.viewer.compare = comparing.then(|| {
                    let b = active.unwrap_or(versions.len() - 1);
                    let a = if b == 0 { 1 } else { b - 1 };
                    (a, b)
                });
            }
            if let Some((a, b)) = &mut state.viewer.compare {
                let n = versions.len();
                ui.add(
                    egui::DragValue::new(a)
                        .range(0..=n - 1)
                        .custom_formatter(|v, _| format!("v{}", v as usize + 1)),
                );
                ui.label("|");
                ui.add(
                    egui::DragValue::new(b)
                        .range(0..=n - 1)
                        .custom_formatter(|v, _| format!("v{}", v as usize + 1)),
                );
                ui.add(egui::Slider::new(&mut state.viewer.split, 0.0..=1.0).text("Split"));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoom_and_pan_move_the_fitted_rect() {
        let pane = Rect::from_min_size(pos2(0.0, 0.0), vec2(200.0, 100.0));
        let r = zoomed_rect(vec2(100.0, 100.0), pane, 1.0, egui::Vec2::ZERO);
        assert_eq!(r, Rect::from_min_size(pos2(50.0, 0.0), vec2(100.0, 100.0)));
        let r = zoomed_rect(vec2(100.0, 100.0), pane, 2.0, vec2(10.0, 0.0));
        assert_eq!(
            r,
            Rect::from_center_size(pos2(110.0, 50.0), vec2(200.0, 200.0))
        );
    }

    #[test]
    fn grid_keys_differ_by_kind_and_version() {
        assert_ne!(grid_key(1, 0), grid_key(1, 1));
        assert_ne!(grid_key(1, 2), grid_key(2, 2));
    }
}
