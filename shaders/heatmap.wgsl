// Similarity heat map: the image mixed toward a viridis-like colour map by a per-token value.
// Values come from an R8 texture: 0 means "no value" (image shown untouched), 1..255 cover
// similarities 0..1. Gamma-space colours, premultiplied output. CPU mirror: blend.rs.

struct Params {
    // Render target size in pixels (xy); zw unused.
    screen: vec4<f32>,
    // Image rectangle in target pixels: min.xy, max.xy.
    rect: vec4<f32>,
    // x: heat opacity, y: layer alpha, zw unused.
    amounts: vec4<f32>,
};

@group(0) @binding(0) var<uniform> params: Params;
@group(1) @binding(0) var image_tex: texture_2d<f32>;
@group(1) @binding(1) var image_sampler: sampler;
@group(2) @binding(0) var heat_tex: texture_2d<f32>;

struct VsOut {
    @builtin(position) position: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

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

// Five stops of viridis at 0, 0.25, 0.5, 0.75, 1, linearly interpolated.
fn viridis(t: f32) -> vec3<f32> {
    var stops = array<vec3<f32>, 5>(
        vec3<f32>(0.267, 0.005, 0.329),
        vec3<f32>(0.231, 0.322, 0.545),
        vec3<f32>(0.129, 0.569, 0.549),
        vec3<f32>(0.369, 0.788, 0.384),
        vec3<f32>(0.992, 0.906, 0.145),
    );
    let x = clamp(t, 0.0, 1.0) * 4.0;
    let i = min(u32(floor(x)), 3u);
    return mix(stops[i], stops[i + 1u], x - f32(i));
}

@fragment
fn fs_main(in: VsOut) -> @location(0) vec4<f32> {
    let image = textureSample(image_tex, image_sampler, in.uv).rgb;
    let size = vec2<i32>(textureDimensions(heat_tex));
    let cell = clamp(vec2<i32>(floor(in.uv * vec2<f32>(size))), vec2<i32>(0), size - vec2<i32>(1));
    let byte = round(textureLoad(heat_tex, cell, 0).r * 255.0);
    var rgb = image;
    if (byte > 0.5) {
        let value = (byte - 1.0) / 254.0;
        rgb = mix(image, viridis(value), params.amounts.x);
    }
    let alpha = params.amounts.y;
    return vec4<f32>(rgb * alpha, alpha);
}
