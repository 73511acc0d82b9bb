//! Shared set-up of the UI tests: a headless wgpu renderer with the overlay pipelines.
#![allow(dead_code)]

use egui_kittest::wgpu::{WgpuTestRenderer, create_render_state, default_wgpu_setup};

/// A kittest wgpu renderer with Storyloom's overlay renderer installed (the app does the
/// same with eframe's render state). kittest prefers CPU adapters; the backend is pinned to
/// GL (Mesa's llvmpipe, which rendered the stored snapshots) unless `WGPU_BACKEND` names
/// another, so machines with and without lavapipe render the same pixels.
pub fn overlay_renderer() -> WgpuTestRenderer {
    let mut setup = default_wgpu_setup();
    if std::env::var_os("WGPU_BACKEND").is_none()
        && let egui_wgpu::WgpuSetup::CreateNew(create) = &mut setup
    {
        create.instance_descriptor.backends = egui_wgpu::wgpu::Backends::GL;
    }
    let state = create_render_state(setup, egui_wgpu::RendererOptions::PREDICTABLE);
    let info = state.adapter.get_info();
    eprintln!(
        "wgpu adapter: {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    );
    storyloom::ui::overlay::install(&state);
    WgpuTestRenderer::from_render_state(state)
}
