//! Text-side ASemConsist work for one frame at FLUX.1-dev size: a 512-token combined prompt of
//! 4096-wide T5 features (identity span, six frame spans of 30-60 tokens, padding), running
//! PAD + selective expression + selective suppression, and the in-transformer selective
//! expression on one 512 x 3072 text projection.

use std::hint::black_box;

use candle_core::{Device, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use faer::Mat;
use storyloom::consistency::asemconsist::{
    AsemPreset, SegmentSpans, express_projection, modify_text_embeddings, modify_text_tensor,
};

const TOKENS: usize = 512;
const T5_WIDTH: usize = 4096;
const HIDDEN: usize = 3072;

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

fn bench(c: &mut Criterion) {
    let spans = spans();
    let settings = AsemPreset::Full.settings();
    let data = values(TOKENS * T5_WIDTH, 1);
    let e = Mat::from_fn(TOKENS, T5_WIDTH, |i, j| data[i * T5_WIDTH + j] as f64);
    let t5 = Tensor::from_vec(data, (1, TOKENS, T5_WIDTH), &Device::Cpu).unwrap();
    let proj = Tensor::from_vec(
        values(TOKENS * HIDDEN, 2),
        (1, TOKENS, HIDDEN),
        &Device::Cpu,
    )
    .unwrap();

    let mut group = c.benchmark_group("asem_text_one_frame");
    group.sample_size(10);
    group.bench_function("stm_pad_f64_matrix_512x4096", |b| {
        b.iter(|| modify_text_embeddings(black_box(e.as_ref()), &spans, 2, &settings).unwrap())
    });
    group.bench_function("stm_pad_f32_tensor_512x4096", |b| {
        b.iter(|| modify_text_tensor(black_box(&t5), &spans, 2, &settings).unwrap())
    });
    group.bench_function("projection_stm_512x3072", |b| {
        b.iter(|| express_projection(black_box(&proj), &spans, 2, &settings).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
