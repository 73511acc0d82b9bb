#!/usr/bin/env python3
"""PyTorch eager reference for `examples/dit_bench.rs`: one forward pass of the same "small"
FLUX configuration (hidden 768, 6 heads of 128, 4 double + 8 single blocks, 1024 image + 64
text tokens, f32) with diffusers' FluxTransformer2DModel, median of N after one warm-up.

    pip install torch diffusers
    python3 scripts/bench_dit_pytorch.py [--iters 5] [--threads 2]

Run by hand (scripts/bench-cpu runs it after the Rust benchmark), never in CI. Random
weights: the time of dense f32 products does not depend on the values.
"""

import argparse
import statistics
import time

import torch
from diffusers import FluxTransformer2DModel

GRID, TXT = (32, 32), 64


def flops(h=768, m=3072, depth=4, single=8, c_in=64, ctx=4096):
    """The same count as dit_bench.rs (multiply-adds count 2)."""
    ni, nt = GRID[0] * GRID[1], TXT
    l = ni + nt
    f = 2.0 * (ni * c_in * h + nt * ctx * h)
    attn = 2.0 * 2.0 * l * l * h
    f += depth * (2.0 * l * h * (3 * h + h + 2 * m) + attn)
    f += single * (2.0 * l * h * (3 * h + m) + 2.0 * l * (h + m) * h + attn)
    return f + 2.0 * ni * h * c_in


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=4, num_single_layers=8,
        attention_head_dim=128, num_attention_heads=6, joint_attention_dim=4096,
        pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
    ).eval()
    n = GRID[0] * GRID[1]
    rows = torch.arange(GRID[0]).repeat_interleave(GRID[1])
    cols = torch.arange(GRID[1]).repeat(GRID[0])
    img_ids = torch.stack([torch.zeros(n), rows.float(), cols.float()], 1)
    inputs = dict(
        hidden_states=torch.randn(1, n, 64),
        encoder_hidden_states=torch.randn(1, TXT, 4096),
        pooled_projections=torch.randn(1, 768),
        timestep=torch.tensor([0.7]),
        guidance=torch.tensor([3.5]),
        img_ids=img_ids,
        txt_ids=torch.zeros(TXT, 3),
    )
    times = []
    with torch.inference_mode():
        model(**inputs)
        for _ in range(args.iters):
            t0 = time.perf_counter()
            model(**inputs)
            times.append(time.perf_counter() - t0)
    m = statistics.median(times)
    print(f"pytorch median {m:.3f} s ({flops() / m / 1e9:.0f} GFLOP/s), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, times {', '.join(f'{t:.3f}' for t in times)}")


if __name__ == "__main__":
    main()
