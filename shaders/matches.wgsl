// Correspondence marks: instanced capsules (a segment from `a` to `b` with a radius); a point
// is a capsule with a == b, a line joins a frame point to its identity point. Each instance
// covers an oriented quad; the fragment computes the distance to the segment for a smooth
// one-pixel edge. Colours arrive premultiplied and gamma-encoded, as egui blends them.

struct Params {
    // Render target size in pixels (xy); zw unused.
    screen: vec4<f32>,
};

@group(0) @binding(0) var<uniform> params: Params;

struct Instance {
    @location(0) a: vec2<f32>,
    @location(1) b: vec2<f32>,
    @location(2) radius: f32,
    @location(3) colour: vec4<f32>,
};

struct VsOut {
    @builtin(position) position: vec4<f32>,
    @location(0) pixel: vec2<f32>,
    @location(1) a: vec2<f32>,
    @location(2) b: vec2<f32>,
    @location(3) radius: f32,
    @location(4) colour: vec4<f32>,
};

@vertex
fn vs_main(@builtin(vertex_index) index: u32, inst: Instance) -> VsOut {
    let delta = inst.b - inst.a;
    let len = length(delta);
    var dir = vec2<f32>(1.0, 0.0);
    if (len > 1e-4) {
        dir = delta / len;
    }
    let normal = vec2<f32>(-dir.y, dir.x);
    // One pixel of margin for the smooth edge.
    let pad = inst.radius + 1.0;
    let along = f32(index & 1u);
    let side = f32(index >> 1u) * 2.0 - 1.0;
    let base = mix(inst.a - dir * pad, inst.b + dir * pad, along);
    let px = base + normal * pad * side;
    var out: VsOut;
    out.position = vec4<f32>(px.x / params.screen.x * 2.0 - 1.0, 1.0 - px.y / params.screen.y * 2.0, 0.0, 1.0);
    out.pixel = px;
    out.a = inst.a;
    out.b = inst.b;
    out.radius = inst.radius;
    out.colour = inst.colour;
    return out;
}

@fragment
fn fs_main(in: VsOut) -> @location(0) vec4<f32> {
    let ab = in.b - in.a;
    let denom = max(dot(ab, ab), 1e-8);
    let t = clamp(dot(in.pixel - in.a, ab) / denom, 0.0, 1.0);
    let dist = length(in.pixel - (in.a + ab * t));
    let coverage = clamp(in.radius + 0.5 - dist, 0.0, 1.0);
    return in.colour * coverage;
}
