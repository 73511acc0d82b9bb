//! Shared set-up of the UI tests: a headless wgpu renderer with the overlay pipelines.
#![allow(dead_code)]

use egui_kittest::wgpu::{WgpuTestRenderer, create_render_state, default_wgpu_setup};

/// A kittest wgpu renderer with Storyloom's overlay renderer installed (the app does the
/// same with eframe's render state). kittest prefers CPU adapters, so on a machine without
/// a GPU this is Mesa's lavapipe (Vulkan) or llvmpipe (GL); `WGPU_BACKEND` can pin one.
pub fn overlay_renderer() -> WgpuTestRenderer {
    let state = create_render_state(
        default_wgpu_setup(),
        egui_wgpu::RendererOptions::PREDICTABLE,
    );
    let info = state.adapter.get_info();
    eprintln!(
        "wgpu adapter: {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    );
    storyloom::ui::overlay::install(&state);
    WgpuTestRenderer::from_render_state(state)
}
