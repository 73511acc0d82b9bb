//! egui textures of the storyboard's images, made on first use and kept by version id, and
//! the same pixels prepared for the overlay shaders.

use std::collections::HashMap;
use std::sync::Arc;

use egui::{ColorImage, Context, TextureHandle, TextureId, TextureOptions, Vec2, vec2};
use image::RgbImage;

use super::document::Version;
use super::overlay::GpuImage;

fn colour_image(image: &RgbImage) -> ColorImage {
    ColorImage::from_rgb(
        [image.width() as usize, image.height() as usize],
        image.as_raw(),
    )
}

fn size_of(image: &RgbImage) -> Vec2 {
    vec2(image.width() as f32, image.height() as f32)
}

/// Texture handles by key; dropping a handle frees the texture.
#[derive(Default)]
pub struct Textures {
    full: HashMap<u64, TextureHandle>,
    thumbs: HashMap<u64, TextureHandle>,
    previews: HashMap<u64, (usize, TextureHandle)>,
    gpu: HashMap<u64, GpuImage>,
}

impl Textures {
    /// The full-size texture of a version (`None` while its image is loading or missing).
    pub fn full(&mut self, ctx: &Context, version: &Version) -> Option<(TextureId, Vec2)> {
        let image = version.image()?;
        let tex = self.full.entry(version.id).or_insert_with(|| {
            ctx.load_texture(
                format!("version-{}", version.id),
                colour_image(image),
                TextureOptions::LINEAR,
            )
        });
        Some((tex.id(), size_of(image)))
    }

    pub fn thumbnail(&mut self, ctx: &Context, version: &Version) -> Option<(TextureId, Vec2)> {
        let image = version.thumbnail()?;
        let tex = self.thumbs.entry(version.id).or_insert_with(|| {
            ctx.load_texture(
                format!("thumb-{}", version.id),
                colour_image(image),
                TextureOptions::LINEAR,
            )
        });
        Some((tex.id(), size_of(image)))
    }

    /// The live preview of a running frame (re-uploaded only when its pixels change size or
    /// content pointer).
    pub fn preview(&mut self, ctx: &Context, frame_id: u64, image: &RgbImage) -> (TextureId, Vec2) {
        let stamp = image.as_raw().as_ptr() as usize;
        match self.previews.get_mut(&frame_id) {
            Some((s, tex)) if *s == stamp => (tex.id(), size_of(image)),
            Some((s, tex)) => {
                tex.set(colour_image(image), TextureOptions::LINEAR);
                *s = stamp;
                (tex.id(), size_of(image))
            }
            None => {
                let tex = ctx.load_texture(
                    format!("preview-{frame_id}"),
                    colour_image(image),
                    TextureOptions::LINEAR,
                );
                let id = tex.id();
                self.previews.insert(frame_id, (stamp, tex));
                (id, size_of(image))
            }
        }
    }

    /// RGBA pixels of a version for the overlay shaders (converted once).
    pub fn gpu_image(&mut self, version: &Version) -> Option<GpuImage> {
        let image = version.image()?;
        Some(
            self.gpu
                .entry(version.id)
                .or_insert_with(|| {
                    let rgba: Vec<u8> = image
                        .pixels()
                        .flat_map(|p| [p.0[0], p.0[1], p.0[2], 255])
                        .collect();
                    GpuImage {
                        key: version.id,
                        width: image.width(),
                        height: image.height(),
                        rgba: Arc::from(rgba),
                    }
                })
                .clone(),
        )
    }

    /// Drops the textures of versions that no longer exist.
    pub fn retain(&mut self, alive: impl Fn(u64) -> bool) {
        self.full.retain(|k, _| alive(*k));
        self.thumbs.retain(|k, _| alive(*k));
        self.gpu.retain(|k, _| alive(*k));
    }

    pub fn drop_previews_except(&mut self, running: impl Fn(u64) -> bool) {
        self.previews.retain(|k, _| running(*k));
    }

    pub fn len(&self) -> usize {
        self.full.len() + self.thumbs.len() + self.previews.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
