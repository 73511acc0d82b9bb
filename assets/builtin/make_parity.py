#!/usr/bin/env python3
"""Writes a small reference of the shipped built-in model computed with transformers/diffusers,
so Storyloom's own loader and forward pass can be checked against it on the trained weights.

    python3 assets/builtin/make_parity.py

Output: tests/fixtures/builtin_parity.safetensors with, for one caption (the three parts below,
joined by ", " as in training):
  ids       i64 [1, 64]       token ids (`</s>` appended, padded with 0)
  hidden    f32 [1, 64, 128]  T5 last hidden state (no attention mask, as in training)
  pooled    f32 [1, 128]      mean of `hidden` over the real tokens
  x         f32 [1, 64, 192]  a noisy image-token input (seeded normal)
  t         f32 [1]           its time in [0, 1]
  output    f32 [1, 64, 192]  the transformer's raw output (the clean-image prediction)
  noise     f32 [1, 64, 192]  a start for sampling (seeded normal)
  sampled   f32 [1, 64, 192]  20 Euler steps from `noise` on the shifted schedule, the
                              prediction turned into a velocity as Storyloom's sampler does
"""

import argparse
import json
import os

import torch
from diffusers import FluxTransformer2DModel
from safetensors.torch import save_file
from transformers import T5EncoderModel

import train

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Kept identical to the constants in tests/builtin_model.rs.
BACKGROUND = "on a sunny beach"
CHARACTER = "a red round creature with stripes"
ACTION = "jumping in the middle"
STEPS = 20


def sample(text_encoder, transformer, x, ids, lengths, img_ids, txt_ids, prediction, steps=STEPS):
    """Plain Euler from t = 1 to 0 on FLUX's schedule shifted for 64 image tokens."""
    mu = train.shift_mu(train.IMAGE_TOKENS)
    times = [train.time_shift(mu, 1.0 - k / steps) for k in range(steps)] + [0.0]
    for t, t_next in zip(times[:-1], times[1:]):
        out = train.predict(text_encoder, transformer, x, torch.tensor([t]), ids, lengths, img_ids, txt_ids)
        v = train.to_velocity(prediction, out, x, torch.tensor(t))
        x = x + (t_next - t) * v
    return x


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=HERE)
    parser.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "builtin_parity.safetensors"))
    args = parser.parse_args()
    torch.manual_seed(0)

    tokens = train.TextTokens(os.path.join(args.model, "tokenizer.json"))
    text_encoder = T5EncoderModel.from_pretrained(os.path.join(args.model, "text_encoder")).eval()
    transformer = FluxTransformer2DModel.from_pretrained(os.path.join(args.model, "transformer")).eval()

    caption = ", ".join([BACKGROUND, CHARACTER, ACTION])
    ids, length = tokens.encode(caption)
    ids = torch.tensor([ids], dtype=torch.long)
    lengths = torch.tensor([length])
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(1, train.IMAGE_TOKENS, 192, generator=gen)
    t = torch.tensor([0.7])
    with open(os.path.join(args.model, "transformer", "config.json")) as f:
        prediction = json.load(f).get("prediction_type", "velocity")
    img_ids, txt_ids = train.image_ids(8, 8), torch.zeros(train.TEXT_LEN, 3)
    noise = torch.randn(1, train.IMAGE_TOKENS, 192, generator=gen)
    with torch.no_grad():
        hidden, pooled = train.encode_text(text_encoder, ids, lengths)
        output = train.predict(text_encoder, transformer, x, t, ids, lengths, img_ids, txt_ids)
        sampled = sample(text_encoder, transformer, noise, ids, lengths, img_ids, txt_ids, prediction)
    save_file(
        {
            "ids": ids.contiguous(),
            "hidden": hidden.contiguous(),
            "pooled": pooled.contiguous(),
            "x": x.contiguous(),
            "t": t.contiguous(),
            "output": output.contiguous(),
            "noise": noise.contiguous(),
            "sampled": sampled.contiguous(),
        },
        args.out,
    )
    print(f"wrote {args.out}: caption {caption!r}, {length} real tokens")


if __name__ == "__main__":
    main()
