// Mask tint with outline: draws an image with its foreground mask tinted and outlined.
// Colours are gamma-encoded and the output is premultiplied alpha, as egui blends
// (src + dst * (1 - src.a)) on a non-sRGB target. CPU mirror: src/ui/overlay/blend.rs.

struct Params {
    // Render target size in pixels (xy); zw unused.
    screen: vec4<f32>,
    // Image rectangle in target pixels: min.xy, max.xy.
    rect: vec4<f32>,
    // Tint colour (rgb, gamma); a unused.
    colour: vec4<f32>,
    // x: fill opacity, y: outline opacity, z: layer alpha, w unused.
    amounts: vec4<f32>,
    // xy: outline half-width in uv units per axis; zw unused.
    outline: vec4<f32>,
};

@group(0) @binding(0) var<uniform> params: Params;
@group(1) @binding(0) var image_tex: texture_2d<f32>;
@group(1) @binding(1) var image_sampler: sampler;
@group(2) @binding(0) var mask_tex: texture_2d<f32>;

struct VsOut {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

// A triangle strip of 4 vertices covering the image rectangle.
@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VsOut {
    let corner = vec2<f32>(f32(index & 1u), f32(index >> 1u));
    let px = mix(params.rect.xy, params.rect.zw, corner);
    let ndc = vec2<f32>(px.x / params.screen.x * 2.0 - 1.0, 1.0 - px.y / params.screen.y * 2.0);
    var out: VsOut;
    out.position = vec4<f32>(ndc, 0.0, 1.0);
    out.uv = corner;
    return out;
}

// Mask value of the token cell under `uv` (nearest cell, clamped to the grid).
fn mask_at(uv: vec2<f32>) -> f32 {
    let size = vec2<i32>(textureDimensions(mask_tex));
    let cell = clamp(vec2<i32>(floor(uv * vec2<f32>(size))), vec2<i32>(0), size - vec2<i32>(1));
    return step(0.5, textureLoad(mask_tex, cell, 0).r);
}

@fragment
fn fs_main(in: VsOut) -> @location(0) vec4<f32> {
    let image = textureSample(image_tex, image_sampler, in.uv).rgb;
    let inside = mask_at(in.uv);
    // Outline: any of the 8 neighbours at the outline distance falls in the other region.
    var edge = 0.0;
    for (var dy = -1; dy <= 1; dy++) {
        for (var dx = -1; dx <= 1; dx++) {
            let offset = vec2<f32>(f32(dx), f32(dy)) * params.outline.xy;
            if (mask_at(in.uv + offset) != inside) {
                edge = 1.0;
            }
        }
    }
    let k = max(inside * params.amounts.x, edge * params.amounts.y);
    let rgb = mix(image, params.colour.rgb, k);
    let alpha = params.amounts.z;
    return vec4<f32>(rgb * alpha, alpha);
}
