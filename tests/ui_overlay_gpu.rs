//! The overlay shaders on a real wgpu device (Mesa's software rasteriser in CI): render
//! through egui's own render pass with our paint callbacks, read the pixels back and compare
//! them with the CPU formulas in `ui::overlay::blend`.
//!
//! Needs a wgpu adapter: Mesa's lavapipe (`mesa-vulkan-drivers libvulkan1`) or llvmpipe
//! (`libegl1 libegl-mesa0 libgl1-mesa-dri`).

mod ui_common;

use std::sync::Arc;

use egui::{Color32, Rect, pos2, vec2};
use egui_kittest::Harness;
use storyloom::ui::overlay::blend::{
    TintParams, blend_over, decode_heat, encode_heat, heat_pixel, tint_pixel, to_byte,
};
use storyloom::ui::overlay::{
    GpuGrid, GpuImage, ImageOverlay, ImageOverlayCallback, Mark, MarksCallback,
};
use ui_common::overlay_renderer;

const BG: Color32 = Color32::from_rgb(40, 60, 200);

fn test_image() -> GpuImage {
    let (w, h) = (32u32, 32u32);
    let mut rgba = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            rgba.extend([(x * 8) as u8, (y * 8) as u8, 128, 255]);
        }
    }
    GpuImage {
        key: 1,
        width: w,
        height: h,
        rgba: Arc::from(rgba),
    }
}

/// 4 x 4 token mask: foreground in the two middle columns.
fn test_mask() -> (GpuGrid, Vec<bool>) {
    let fg: Vec<bool> = (0..16).map(|i| matches!(i % 4, 1 | 2)).collect();
    let bytes: Vec<u8> = fg.iter().map(|&b| if b { 255 } else { 0 }).collect();
    (
        GpuGrid {
            key: 2,
            rows: 4,
            cols: 4,
            bytes: Arc::from(bytes),
        },
        fg,
    )
}

fn gamma(c: Color32) -> [f32; 4] {
    [
        c.r() as f32 / 255.0,
        c.g() as f32 / 255.0,
        c.b() as f32 / 255.0,
        c.a() as f32 / 255.0,
    ]
}

fn render(paint: impl Fn(&egui::Painter) + 'static) -> image::RgbaImage {
    let mut harness = Harness::builder()
        .with_size(vec2(120.0, 80.0))
        .with_pixels_per_point(1.0)
        .renderer(overlay_renderer())
        .build_ui(move |ui| {
            let painter = ui.painter();
            painter.rect_filled(
                Rect::from_min_max(pos2(10.0, 10.0), pos2(110.0, 70.0)),
                0.0,
                BG,
            );
            paint(painter);
        });
    harness.run();
    harness.render().expect("rendering with wgpu")
}

fn assert_close(got: [u8; 4], want: [f32; 4], what: &str) {
    for c in 0..4 {
        let w = to_byte(want[c]);
        assert!(
            (got[c] as i32 - w as i32).abs() <= 1,
            "{what}: channel {c}: GPU {got:?}, CPU {:?}",
            want.map(to_byte)
        );
    }
}

#[test]
fn mask_tint_read_back_matches_the_cpu_blend() {
    let image = test_image();
    let (mask, fg) = test_mask();
    let params = TintParams {
        colour: [0.2, 0.8, 0.4],
        fill_opacity: 0.5,
        outline_opacity: 1.0,
        layer_alpha: 0.5,
    };
    let origin = pos2(20.0, 20.0);
    let rect = Rect::from_min_size(origin, vec2(32.0, 32.0));
    let (img, m) = (image.clone(), mask.clone());
    let pixels = render(move |p| {
        p.add(egui_wgpu::Callback::new_paint_callback(
            p.clip_rect(),
            ImageOverlayCallback {
                slot: 1,
                image: img.clone(),
                image_rect: rect,
                overlay: ImageOverlay::MaskTint {
                    mask: m.clone(),
                    params,
                    outline_px: 1.5,
                },
            },
        ));
    });
    let bg = gamma(BG);
    let mut checked = 0;
    // Cell centres (interior pixels) and one pixel on each side of a mask boundary.
    for (x, y) in [(4, 4), (12, 4), (20, 12), (28, 28), (4, 20), (7, 4), (8, 4)] {
        let texel = &image.rgba[(y * 32 + x) * 4..][..3];
        let base = [
            texel[0] as f32 / 255.0,
            texel[1] as f32 / 255.0,
            texel[2] as f32 / 255.0,
        ];
        let inside = fg[(y / 8) * 4 + x / 8];
        let outline = matches!(x, 7 | 8);
        let want = blend_over(tint_pixel(base, inside, outline, &params), bg);
        let got = pixels.get_pixel(20 + x as u32, 20 + y as u32).0;
        assert_close(got, want, &format!("pixel ({x}, {y})"));
        checked += 1;
    }
    assert_eq!(checked, 7);
    // Outside the image rectangle the background is untouched.
    assert_close(pixels.get_pixel(15, 15).0, bg, "background");
}

#[test]
fn heat_map_read_back_matches_the_cpu_colour_map() {
    let image = test_image();
    let values: Vec<Option<f32>> = (0..16)
        .map(|i| (i % 3 != 0).then_some(i as f32 / 15.0))
        .collect();
    let heat = GpuGrid {
        key: 3,
        rows: 4,
        cols: 4,
        bytes: Arc::from(values.iter().map(|v| encode_heat(*v)).collect::<Vec<u8>>()),
    };
    let rect = Rect::from_min_size(pos2(20.0, 20.0), vec2(32.0, 32.0));
    let (img, h) = (image.clone(), heat.clone());
    let pixels = render(move |p| {
        p.add(egui_wgpu::Callback::new_paint_callback(
            p.clip_rect(),
            ImageOverlayCallback {
                slot: 2,
                image: img.clone(),
                image_rect: rect,
                overlay: ImageOverlay::Heat {
                    heat: h.clone(),
                    opacity: 0.75,
                    layer_alpha: 1.0,
                },
            },
        ));
    });
    for cell in 0..16usize {
        let (x, y) = ((cell % 4) * 8 + 4, (cell / 4) * 8 + 4);
        let texel = &image.rgba[(y * 32 + x) * 4..][..3];
        let base = [
            texel[0] as f32 / 255.0,
            texel[1] as f32 / 255.0,
            texel[2] as f32 / 255.0,
        ];
        let value = decode_heat(heat.bytes[cell]);
        let want = blend_over(heat_pixel(base, value, 0.75, 1.0), gamma(BG));
        let got = pixels.get_pixel(20 + x as u32, 20 + y as u32).0;
        assert_close(got, want, &format!("cell {cell}"));
    }
}

#[test]
fn match_marks_draw_points_and_lines() {
    let colour = [0.9, 0.1, 0.3, 1.0];
    let marks: Arc<[Mark]> = Arc::from(vec![
        Mark {
            a: pos2(30.0, 40.0),
            b: pos2(90.0, 40.0),
            radius: 1.5,
            colour: [0.0, 0.5, 0.0, 0.5],
        },
        Mark {
            a: pos2(30.0, 40.0),
            b: pos2(30.0, 40.0),
            radius: 5.0,
            colour,
        },
    ]);
    let pixels = render(move |p| {
        p.add(egui_wgpu::Callback::new_paint_callback(
            p.clip_rect(),
            MarksCallback {
                slot: 3,
                marks: marks.clone(),
            },
        ));
    });
    let bg = gamma(BG);
    // Pixel centres: (30.5, 40.5) is inside the point; (60.5, 39.5) is on the line, 0.5 px
    // from its axis; (60.5, 45.5) is off both.
    assert_close(
        pixels.get_pixel(30, 40).0,
        blend_over(colour, blend_over([0.0, 0.5, 0.0, 0.5], bg)),
        "point",
    );
    assert_close(
        pixels.get_pixel(60, 39).0,
        blend_over([0.0, 0.5, 0.0, 0.5], bg),
        "line",
    );
    assert_close(pixels.get_pixel(60, 45).0, bg, "outside");
}
