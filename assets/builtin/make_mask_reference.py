#!/usr/bin/env python3
"""Writes an independent reference of CharaConsist's readout on the shipped built-in model:
the image-to-text attention of every single block, the foreground mask it gives, and the
point-matching similarity between a frame and an identity image, computed with
transformers/diffusers and plain PyTorch (``grounding.py``), so Storyloom's own hooks, mask
and similarity code can be checked against it on the trained weights.

    python3 assets/builtin/make_mask_reference.py

Inputs are what Storyloom reads the masks from: two prompts (a frame and an identity), each
sampled with 20 plain Euler steps from a seeded start and stopped at step 4 of 20, the
extraction step on the built-in model. Output: tests/fixtures/builtin_masks.safetensors with,
for ``frame`` and ``identity``:
  {name}.ids       i64 [1, 64]      token ids
  {name}.x         f32 [1, 64, 192] the noisy image tokens at step 4
  {name}.t         f32 [1]          their time
  {name}.bg        f32 [64]         eqs. 7-8: attention to the background words, per image
                                    token, heads summed, averaged over the part and the blocks
  {name}.fg        f32 [64]         the same for the character and action words
  {name}.mask      f32 [64]         eq. 9 (released code: bg <= fg), 1 = foreground
  similarity       f32 [64, 64]     eq. 4: cosine similarity of the frame's and the identity's
                                    image attention outputs, averaged over the single blocks
"""

import argparse
import os

import torch
import torch.nn.functional as F
from diffusers import FluxTransformer2DModel
from safetensors.torch import save_file
from transformers import T5EncoderModel

import train
from grounding import forward_with_queries, part_means, span_columns

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Kept identical to the constants in tests/builtin_model.rs.
PROMPTS = {
    "frame": ("on a sunny beach", "a red round creature with stripes", "jumping on the left"),
    "identity": ("in a green meadow", "a red round creature with stripes", "standing on the right"),
}
SEEDS = {"frame": 11, "identity": 12}
STEPS = 20
EXTRACTION_STEP = 4


def noisy_input_at_extraction(text_encoder, transformer, hidden, pooled, seed, img_ids, txt_ids):
    """Plain Euler from a seeded start to the extraction step, as Storyloom's pre-run does."""
    x = torch.randn(1, train.IMAGE_TOKENS, 192, generator=torch.Generator().manual_seed(seed))
    mu = train.shift_mu(train.IMAGE_TOKENS)
    times = [train.time_shift(mu, 1.0 - k / STEPS) for k in range(STEPS)] + [0.0]
    for k in range(EXTRACTION_STEP):
        t = torch.tensor([times[k]])
        out, _ = forward_with_queries(transformer, x, t, hidden, pooled, img_ids, txt_ids)
        v = train.to_velocity("sample", out, x, t)
        x = x + (times[k + 1] - times[k]) * v
    return x, torch.tensor([times[EXTRACTION_STEP]])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=HERE)
    parser.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "builtin_masks.safetensors"))
    args = parser.parse_args()

    tokens = train.TextTokens(os.path.join(args.model, "tokenizer.json"))
    text_encoder = T5EncoderModel.from_pretrained(os.path.join(args.model, "text_encoder")).eval()
    transformer = FluxTransformer2DModel.from_pretrained(os.path.join(args.model, "transformer")).eval()
    img_ids, txt_ids = train.image_ids(8, 8), torch.zeros(train.TEXT_LEN, 3)

    out = {}
    outputs = {}
    with torch.no_grad():
        for name, (background, character, action) in PROMPTS.items():
            ids, length = tokens.encode(", ".join([background, character, action]))
            ids = torch.tensor([ids], dtype=torch.long)
            lengths = torch.tensor([length])
            bg_len = torch.tensor([len(tokens.tokenizer.encode(background, add_special_tokens=False).ids)])
            bg, fg, real = span_columns(bg_len, lengths, train.TEXT_LEN)
            hidden, pooled = train.encode_text(text_encoder, ids, lengths)
            x, t = noisy_input_at_extraction(text_encoder, transformer, hidden, pooled, SEEDS[name], img_ids, txt_ids)
            _, readout = forward_with_queries(transformer, x, t, hidden, pooled, img_ids, txt_ids)
            means = [part_means(q, k, bg, fg, real) for q, k, _ in readout]
            bg_mean = torch.stack([m[0][0] for m in means]).mean(0)
            fg_mean = torch.stack([m[1][0] for m in means]).mean(0)
            out[f"{name}.ids"] = ids.contiguous()
            out[f"{name}.x"] = x.contiguous()
            out[f"{name}.t"] = t.contiguous()
            out[f"{name}.bg"] = bg_mean.contiguous()
            out[f"{name}.fg"] = fg_mean.contiguous()
            out[f"{name}.mask"] = (bg_mean <= fg_mean).float().contiguous()
            outputs[name] = [o[0] for _, _, o in readout]
            print(f"{name}: {int(out[f'{name}.mask'].sum())} of 64 tokens foreground at t = {t.item():.4f}")
        similarity = torch.stack(
            [F.normalize(f, dim=-1) @ F.normalize(i, dim=-1).T for f, i in zip(outputs["frame"], outputs["identity"])]
        ).mean(0)
    out["similarity"] = similarity.contiguous()
    save_file(out, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
