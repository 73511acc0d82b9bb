//! The overlay renderer: wgpu pipelines for the three WGSL overlays, the textures they read,
//! and the `egui_wgpu` paint callbacks that draw them inside egui's render pass.
//!
//! [`install`] puts an [`OverlayRenderer`] into the renderer's callback resources once (it
//! needs the target format); the callbacks upload what they draw in `prepare` (images and
//! token grids are cached by key, so a still image is uploaded once) and draw in `paint`.
//! Without an installed renderer the callbacks draw nothing.

use std::collections::HashMap;
use std::sync::Arc;

use egui::{Pos2, Rect};
use egui_wgpu::wgpu;
use egui_wgpu::{CallbackResources, CallbackTrait, ScreenDescriptor};

use super::blend::TintParams;

const MASK_TINT_WGSL: &str = include_str!("../../../shaders/mask_tint.wgsl");
const HEATMAP_WGSL: &str = include_str!("../../../shaders/heatmap.wgsl");
const MATCHES_WGSL: &str = include_str!("../../../shaders/matches.wgsl");

/// Cached textures not drawn for this many `prepare` calls are dropped.
const TEXTURE_TTL: u64 = 600;

/// An RGBA8 image (gamma-encoded, straight alpha) identified by a key that changes whenever
/// the pixels do.
#[derive(Clone)]
pub struct GpuImage {
    pub key: u64,
    pub width: u32,
    pub height: u32,
    pub rgba: Arc<[u8]>,
}

/// A token grid of bytes (mask: 0 / 255; heat: see `blend::encode_heat`), row-major.
#[derive(Clone)]
pub struct GpuGrid {
    pub key: u64,
    pub rows: u32,
    pub cols: u32,
    pub bytes: Arc<[u8]>,
}

/// One capsule mark (point or line) in egui points; colour premultiplied, gamma.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mark {
    pub a: Pos2,
    pub b: Pos2,
    pub radius: f32,
    pub colour: [f32; 4],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Uniforms {
    rows: [[f32; 4]; 5],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MarkInstance {
    a: [f32; 2],
    b: [f32; 2],
    radius: f32,
    colour: [f32; 4],
}

struct CachedTexture {
    bind_group: wgpu::BindGroup,
    last_used: u64,
}

struct Slot {
    uniforms: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    instances: Option<wgpu::Buffer>,
    instance_capacity: usize,
    instance_count: u32,
}

/// GPU state of the overlays, kept in egui-wgpu's callback resources.
pub struct OverlayRenderer {
    tint_pipeline: wgpu::RenderPipeline,
    heat_pipeline: wgpu::RenderPipeline,
    marks_pipeline: wgpu::RenderPipeline,
    uniform_layout: wgpu::BindGroupLayout,
    image_layout: wgpu::BindGroupLayout,
    grid_layout: wgpu::BindGroupLayout,
    sampler: wgpu::Sampler,
    images: HashMap<u64, CachedTexture>,
    grids: HashMap<u64, CachedTexture>,
    slots: HashMap<u64, Slot>,
    tick: u64,
}

/// egui-wgpu's blend state (premultiplied alpha, see its renderer).
fn egui_blend() -> wgpu::BlendState {
    wgpu::BlendState {
        color: wgpu::BlendComponent {
            src_factor: wgpu::BlendFactor::One,
            dst_factor: wgpu::BlendFactor::OneMinusSrcAlpha,
            operation: wgpu::BlendOperation::Add,
        },
        alpha: wgpu::BlendComponent {
            src_factor: wgpu::BlendFactor::OneMinusDstAlpha,
            dst_factor: wgpu::BlendFactor::One,
            operation: wgpu::BlendOperation::Add,
        },
    }
}

fn texture_entry(binding: u32) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::FRAGMENT,
        ty: wgpu::BindingType::Texture {
            multisampled: false,
            sample_type: wgpu::TextureSampleType::Float { filterable: true },
            view_dimension: wgpu::TextureViewDimension::D2,
        },
        count: None,
    }
}

impl OverlayRenderer {
    pub fn new(device: &wgpu::Device, target_format: wgpu::TextureFormat) -> Self {
        let uniform_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("overlay_uniforms"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::VERTEX | wgpu::ShaderStages::FRAGMENT,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            }],
        });
        let image_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("overlay_image"),
            entries: &[
                texture_entry(0),
                wgpu::BindGroupLayoutEntry {
                    binding: 1,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Sampler(wgpu::SamplerBindingType::Filtering),
                    count: None,
                },
            ],
        });
        let grid_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("overlay_grid"),
            entries: &[texture_entry(0)],
        });
        let sampler = device.create_sampler(&wgpu::SamplerDescriptor {
            label: Some("overlay_image_sampler"),
            address_mode_u: wgpu::AddressMode::ClampToEdge,
            address_mode_v: wgpu::AddressMode::ClampToEdge,
            mag_filter: wgpu::FilterMode::Linear,
            min_filter: wgpu::FilterMode::Linear,
            ..Default::default()
        });

        let image_pipeline = |label: &str, source: &str| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(label),
                bind_group_layouts: &[
                    Some(&uniform_layout),
                    Some(&image_layout),
                    Some(&grid_layout),
                ],
                immediate_size: 0,
            });
            pipeline(device, label, &module, &layout, &[], target_format)
        };
        let tint_pipeline = image_pipeline("overlay_mask_tint", MASK_TINT_WGSL);
        let heat_pipeline = image_pipeline("overlay_heatmap", HEATMAP_WGSL);

        let marks_module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("overlay_matches"),
            source: wgpu::ShaderSource::Wgsl(MATCHES_WGSL.into()),
        });
        let marks_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("overlay_matches"),
            bind_group_layouts: &[Some(&uniform_layout)],
            immediate_size: 0,
        });
        let instance_layout = wgpu::VertexBufferLayout {
            array_stride: std::mem::size_of::<MarkInstance>() as u64,
            step_mode: wgpu::VertexStepMode::Instance,
            attributes: &wgpu::vertex_attr_array![
                0 => Float32x2, 1 => Float32x2, 2 => Float32, 3 => Float32x4
            ],
        };
        let marks_pipeline = pipeline(
            device,
            "overlay_matches",
            &marks_module,
            &marks_layout,
            &[Some(instance_layout)],
            target_format,
        );

        Self {
            tint_pipeline,
            heat_pipeline,
            marks_pipeline,
            uniform_layout,
            image_layout,
            grid_layout,
            sampler,
            images: HashMap::new(),
            grids: HashMap::new(),
            slots: HashMap::new(),
            tick: 0,
        }
    }

    /// Number of cached textures (images + grids).
    pub fn cached_textures(&self) -> usize {
        self.images.len() + self.grids.len()
    }

    fn begin(&mut self) {
        self.tick += 1;
        let tick = self.tick;
        self.images.retain(|_, t| tick - t.last_used <= TEXTURE_TTL);
        self.grids.retain(|_, t| tick - t.last_used <= TEXTURE_TTL);
    }

    fn ensure_image(&mut self, device: &wgpu::Device, queue: &wgpu::Queue, image: &GpuImage) {
        let tick = self.tick;
        if let Some(t) = self.images.get_mut(&image.key) {
            t.last_used = tick;
            return;
        }
        let view = upload(
            device,
            queue,
            "overlay_image",
            wgpu::TextureFormat::Rgba8Unorm,
            image.width,
            image.height,
            &image.rgba,
            4,
        );
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("overlay_image"),
            layout: &self.image_layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::TextureView(&view),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::Sampler(&self.sampler),
                },
            ],
        });
        self.images.insert(
            image.key,
            CachedTexture {
                bind_group,
                last_used: tick,
            },
        );
    }

    fn ensure_grid(&mut self, device: &wgpu::Device, queue: &wgpu::Queue, grid: &GpuGrid) {
        let tick = self.tick;
        if let Some(t) = self.grids.get_mut(&grid.key) {
            t.last_used = tick;
            return;
        }
        let view = upload(
            device,
            queue,
            "overlay_grid",
            wgpu::TextureFormat::R8Unorm,
            grid.cols,
            grid.rows,
            &grid.bytes,
            1,
        );
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("overlay_grid"),
            layout: &self.grid_layout,
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::TextureView(&view),
            }],
        });
        self.grids.insert(
            grid.key,
            CachedTexture {
                bind_group,
                last_used: tick,
            },
        );
    }

    fn write_slot(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        slot: u64,
        uniforms: &Uniforms,
        instances: &[MarkInstance],
    ) {
        let layout = &self.uniform_layout;
        let entry = self.slots.entry(slot).or_insert_with(|| {
            let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("overlay_uniforms"),
                size: std::mem::size_of::<Uniforms>() as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("overlay_uniforms"),
                layout,
                entries: &[wgpu::BindGroupEntry {
                    binding: 0,
                    resource: uniforms.as_entire_binding(),
                }],
            });
            Slot {
                uniforms,
                bind_group,
                instances: None,
                instance_capacity: 0,
                instance_count: 0,
            }
        });
        queue.write_buffer(&entry.uniforms, 0, bytemuck::bytes_of(uniforms));
        entry.instance_count = instances.len() as u32;
        if instances.is_empty() {
            return;
        }
        if entry.instance_capacity < instances.len() {
            let capacity = instances.len().next_power_of_two();
            entry.instances = Some(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("overlay_marks"),
                size: (capacity * std::mem::size_of::<MarkInstance>()) as u64,
                usage: wgpu::BufferUsages::VERTEX | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
            entry.instance_capacity = capacity;
        }
        if let Some(buffer) = &entry.instances {
            queue.write_buffer(buffer, 0, bytemuck::cast_slice(instances));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn upload(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    label: &str,
    format: wgpu::TextureFormat,
    width: u32,
    height: u32,
    bytes: &[u8],
    bytes_per_texel: u32,
) -> wgpu::TextureView {
    let size = wgpu::Extent3d {
        width: width.max(1),
        height: height.max(1),
        depth_or_array_layers: 1,
    };
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some(label),
        size,
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    let expected = (width * height * bytes_per_texel) as usize;
    if width > 0 && height > 0 && bytes.len() >= expected {
        queue.write_texture(
            wgpu::TexelCopyTextureInfo {
                texture: &texture,
                mip_level: 0,
                origin: wgpu::Origin3d::ZERO,
                aspect: wgpu::TextureAspect::All,
            },
            &bytes[..expected],
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(width * bytes_per_texel),
                rows_per_image: Some(height),
            },
            size,
        );
    }
    texture.create_view(&wgpu::TextureViewDescriptor::default())
}

fn pipeline(
    device: &wgpu::Device,
    label: &str,
    module: &wgpu::ShaderModule,
    layout: &wgpu::PipelineLayout,
    buffers: &[Option<wgpu::VertexBufferLayout<'_>>],
    target_format: wgpu::TextureFormat,
) -> wgpu::RenderPipeline {
    device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some(label),
        layout: Some(layout),
        vertex: wgpu::VertexState {
            module,
            entry_point: Some("vs_main"),
            buffers,
            compilation_options: wgpu::PipelineCompilationOptions::default(),
        },
        primitive: wgpu::PrimitiveState {
            topology: wgpu::PrimitiveTopology::TriangleStrip,
            ..Default::default()
        },
        depth_stencil: None,
        multisample: wgpu::MultisampleState::default(),
        fragment: Some(wgpu::FragmentState {
            module,
            entry_point: Some("fs_main"),
            targets: &[Some(wgpu::ColorTargetState {
                format: target_format,
                blend: Some(egui_blend()),
                write_mask: wgpu::ColorWrites::ALL,
            })],
            compilation_options: wgpu::PipelineCompilationOptions::default(),
        }),
        multiview_mask: None,
        cache: None,
    })
}

/// Puts the overlay renderer into an egui-wgpu render state (once; later calls do nothing).
pub fn install(render_state: &egui_wgpu::RenderState) {
    let mut renderer = render_state.renderer.write();
    if renderer
        .callback_resources
        .get::<OverlayRenderer>()
        .is_none()
    {
        let overlay = OverlayRenderer::new(&render_state.device, render_state.target_format);
        renderer.callback_resources.insert(overlay);
    }
}

fn screen_row(screen: &ScreenDescriptor) -> [f32; 4] {
    [
        screen.size_in_pixels[0] as f32,
        screen.size_in_pixels[1] as f32,
        0.0,
        0.0,
    ]
}

fn rect_row(rect: Rect, pixels_per_point: f32) -> [f32; 4] {
    [
        rect.min.x * pixels_per_point,
        rect.min.y * pixels_per_point,
        rect.max.x * pixels_per_point,
        rect.max.y * pixels_per_point,
    ]
}

fn full_viewport(info: &egui::PaintCallbackInfo, pass: &mut wgpu::RenderPass<'static>) {
    // egui sets the viewport to the callback rect clamped to the screen, which would squash
    // an image that reaches past the screen edge; positions are computed in screen pixels
    // instead and the scissor (egui's clip rect) does the clipping.
    pass.set_viewport(
        0.0,
        0.0,
        info.screen_size_px[0] as f32,
        info.screen_size_px[1] as f32,
        0.0,
        1.0,
    );
}

/// Which image overlay to draw.
#[derive(Clone)]
pub enum ImageOverlay {
    /// Mask tint with outline; `outline_px` is the outline half-width in screen pixels.
    MaskTint {
        mask: GpuGrid,
        params: TintParams,
        outline_px: f32,
    },
    /// Similarity heat map.
    Heat {
        heat: GpuGrid,
        opacity: f32,
        layer_alpha: f32,
    },
}

/// Draws an image with a mask tint or heat map overlay at `image_rect` (points).
pub struct ImageOverlayCallback {
    pub slot: u64,
    pub image: GpuImage,
    pub image_rect: Rect,
    pub overlay: ImageOverlay,
}

impl ImageOverlayCallback {
    fn grid(&self) -> &GpuGrid {
        match &self.overlay {
            ImageOverlay::MaskTint { mask, .. } => mask,
            ImageOverlay::Heat { heat, .. } => heat,
        }
    }

    fn uniforms(&self, screen: &ScreenDescriptor) -> Uniforms {
        let ppp = screen.pixels_per_point;
        let mut rows = [[0.0; 4]; 5];
        rows[0] = screen_row(screen);
        rows[1] = rect_row(self.image_rect, ppp);
        match &self.overlay {
            ImageOverlay::MaskTint {
                params, outline_px, ..
            } => {
                let [r, g, b] = params.colour;
                rows[2] = [r, g, b, 1.0];
                rows[3] = [
                    params.fill_opacity,
                    params.outline_opacity,
                    params.layer_alpha,
                    0.0,
                ];
                let w = (self.image_rect.width() * ppp).max(1.0);
                let h = (self.image_rect.height() * ppp).max(1.0);
                rows[4] = [outline_px / w, outline_px / h, 0.0, 0.0];
            }
            ImageOverlay::Heat {
                opacity,
                layer_alpha,
                ..
            } => {
                rows[2] = [*opacity, *layer_alpha, 0.0, 0.0];
            }
        }
        Uniforms { rows }
    }
}

impl CallbackTrait for ImageOverlayCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        screen: &ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if let Some(r) = resources.get_mut::<OverlayRenderer>() {
            r.begin();
            r.ensure_image(device, queue, &self.image);
            r.ensure_grid(device, queue, self.grid());
            r.write_slot(device, queue, self.slot, &self.uniforms(screen), &[]);
        }
        Vec::new()
    }

    fn paint(
        &self,
        info: egui::PaintCallbackInfo,
        pass: &mut wgpu::RenderPass<'static>,
        resources: &CallbackResources,
    ) {
        let Some(r) = resources.get::<OverlayRenderer>() else {
            return;
        };
        let (Some(slot), Some(image), Some(grid)) = (
            r.slots.get(&self.slot),
            r.images.get(&self.image.key),
            r.grids.get(&self.grid().key),
        ) else {
            return;
        };
        full_viewport(&info, pass);
        let pipeline = match self.overlay {
            ImageOverlay::MaskTint { .. } => &r.tint_pipeline,
            ImageOverlay::Heat { .. } => &r.heat_pipeline,
        };
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &slot.bind_group, &[]);
        pass.set_bind_group(1, &image.bind_group, &[]);
        pass.set_bind_group(2, &grid.bind_group, &[]);
        pass.draw(0..4, 0..1);
    }
}

/// Draws correspondence marks (points and lines).
pub struct MarksCallback {
    pub slot: u64,
    pub marks: Arc<[Mark]>,
}

impl CallbackTrait for MarksCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        screen: &ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if let Some(r) = resources.get_mut::<OverlayRenderer>() {
            let ppp = screen.pixels_per_point;
            let instances: Vec<MarkInstance> = self
                .marks
                .iter()
                .map(|m| MarkInstance {
                    a: [m.a.x * ppp, m.a.y * ppp],
                    b: [m.b.x * ppp, m.b.y * ppp],
                    radius: m.radius * ppp,
                    colour: m.colour,
                })
                .collect();
            let mut rows = [[0.0; 4]; 5];
            rows[0] = screen_row(screen);
            r.write_slot(device, queue, self.slot, &Uniforms { rows }, &instances);
        }
        Vec::new()
    }

    fn paint(
        &self,
        info: egui::PaintCallbackInfo,
        pass: &mut wgpu::RenderPass<'static>,
        resources: &CallbackResources,
    ) {
        let Some(r) = resources.get::<OverlayRenderer>() else {
            return;
        };
        let Some(slot) = r.slots.get(&self.slot) else {
            return;
        };
        let Some(buffer) = &slot.instances else {
            return;
        };
        if slot.instance_count == 0 {
            return;
        }
        full_viewport(&info, pass);
        pass.set_pipeline(&r.marks_pipeline);
        pass.set_bind_group(0, &slot.bind_group, &[]);
        pass.set_vertex_buffer(0, buffer.slice(..));
        pass.draw(0..4, 0..slot.instance_count);
    }
}
