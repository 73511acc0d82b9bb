//! Text-side ASemConsist work per frame at FLUX.1-dev size, timed in whatever profile this is
//! built with (`--release` for the figure that matters on a user's machine).
//!
//! A 512-token combined prompt of 4096-wide T5 features (identity span of 24 tokens, six frame
//! spans of 30-60 tokens, padding): PAD + selective expression + selective suppression on the
//! features (once per frame), and selective expression on one 512 x 3072 text projection
//! (repeated for every q/k/v projection, block and step of the in-transformer window).
//!
//! `cargo run --release --example asem_text [-- --iters 5]`

use std::time::Instant;

use candle_core::{Device, Tensor};
use storyloom::consistency::asemconsist::linalg::ThinSvd;
use storyloom::consistency::asemconsist::schedule::FLUX1_DEPTH;
use storyloom::consistency::asemconsist::{
    AsemPreset, SegmentSpans, express_projection, modify_text_tensor, scale_blocks,
};

const TOKENS: usize = 512;
const T5_WIDTH: usize = 4096;
const HIDDEN: usize = 3072;
const FLUX_DEV_STEPS: usize = 28;

/// Deterministic values in [-1, 1) from a small linear congruential generator.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn spans() -> SegmentSpans {
    let identity = 0..24;
    let lengths = [30, 45, 60, 38, 52, 41];
    let mut start = identity.end;
    let frames = lengths
        .iter()
        .map(|&len| {
            let r = start..start + len;
            start += len;
            r
        })
        .collect();
    SegmentSpans {
        identity,
        frames,
        padding: start..TOKENS,
    }
}

fn median_ms(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let iters = args
        .iter()
        .position(|a| a == "--iters")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let spans = spans();
    let settings = AsemPreset::Full.settings();
    let t5 = Tensor::from_vec(
        values(TOKENS * T5_WIDTH, 1),
        (1, TOKENS, T5_WIDTH),
        &Device::Cpu,
    )?;
    let proj = Tensor::from_vec(
        values(TOKENS * HIDDEN, 2),
        (1, TOKENS, HIDDEN),
        &Device::Cpu,
    )?;
    let profile = if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    };
    println!(
        "profile {profile}, {} threads available, median of {iters}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let mut frame_ms = Vec::new();
    for frame in 0..spans.frames.len() {
        frame_ms.push(median_ms(iters, || {
            modify_text_tensor(&t5, &spans, frame, &settings).unwrap();
        }));
    }
    let text_ms = frame_ms.iter().sum::<f64>() / frame_ms.len() as f64;
    println!(
        "PAD + STM on the T5 features (512 x 4096), per frame: {}  -> mean {text_ms:.1} ms",
        frame_ms
            .iter()
            .map(|m| format!("{m:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let proj_ms = median_ms(iters, || {
        express_projection(&proj, &spans, 2, &settings).unwrap();
    });
    println!("STM on one text projection (512 x 3072): {proj_ms:.1} ms");
    // The two thin SVDs inside that call (e_exp with its padding prefix, e_ref = [e_id, e_exp]),
    // on their own: the floor for this projection.
    let exp_rows = spans.frames[2].len() + spans.padding_prefix(spans.frames[2].len()).len();
    let ref_rows = spans.identity.len() + exp_rows;
    let matrices: Vec<faer::Mat<f64>> = [exp_rows, ref_rows]
        .iter()
        .map(|&rows| {
            let data = values(rows * HIDDEN, 3);
            faer::MatRef::from_row_major_slice(&data, rows, HIDDEN).map(|x| *x as f64)
        })
        .collect();
    let svd_ms = median_ms(iters, || {
        for m in &matrices {
            ThinSvd::new(m.as_ref()).unwrap();
        }
    });
    println!(
        "  of which thin SVDs of {exp_rows} x {HIDDEN} and {ref_rows} x {HIDDEN}: {svd_ms:.1} ms"
    );

    let stm = &settings.stm;
    let blocks = scale_blocks(&stm.transformer_blocks, FLUX1_DEPTH, FLUX1_DEPTH).len();
    let steps = stm
        .transformer_steps
        .sampler_steps(FLUX_DEV_STEPS, settings.step_indexing)
        .count();
    let which = stm.transformer_projections;
    let per_call = [which.q, which.k, which.v].iter().filter(|&&b| b).count();
    let calls = blocks * steps * per_call;
    let total = text_ms + calls as f64 * proj_ms;
    println!(
        "per frame on a {FLUX_DEV_STEPS}-step FLUX.1-dev schedule: {text_ms:.1} ms + {calls} projections \
         ({blocks} blocks x {steps} steps x {per_call}) x {proj_ms:.1} ms = {total:.0} ms, i.e. {:.1} ms per step",
        total / FLUX_DEV_STEPS as f64
    );
    Ok(())
}
