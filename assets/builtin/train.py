#!/usr/bin/env python3
"""Trains Storyloom's built-in model on the procedural world.

The shipped weights come from four runs of this script (``train_all.sh`` beside it runs the
export and all four in one command). One run, after exporting the data set with the Rust
exporter:

    cargo run --release --locked --example export_world_dataset -- --count 30000 --out /tmp/world
    python3 assets/builtin/train.py --data /tmp/world --out assets/builtin

What is trained, jointly and from scratch:
- a FLUX.1-architecture transformer (diffusers ``FluxTransformer2DModel``, patch size 1) on
  pixel tokens: a 64x64 RGB image in [-1, 1] is rearranged space-to-depth by 4 into
  [48, 16, 16] (channel index c*16 + dy*4 + dx) and packed 2x2 as FLUX packs latents
  (channel-major inside a token, tokens row-major): 64 tokens of 192 features on an 8x8 grid;
- a small T5 encoder (``T5EncoderModel``) over the world's word-level tokenizer.

Conditioning follows FLUX.1: the T5 output (64 tokens, `</s>` appended, padded with id 0, no
attention mask anywhere) enters the transformer's text stream; the pooled vector is the mean of
the T5 output over the real tokens (including `</s>`, excluding padding). No guidance embedding,
no classifier-free guidance: plain conditional rectified flow, x_t = (1 - t) x0 + t eps, t drawn
logit-normal and shifted with FLUX's resolution shift for 64 image tokens, the same shift
Storyloom's sampler applies at inference.

The network predicts the clean image x0 ("sample" prediction), not the velocity: a pixel token
has 192 features and the hidden width is 128, so the network cannot carry the per-pixel noise a
velocity (eps - x0) or eps target contains, while clean images lie on a low-dimensional
manifold it can reach (Li & He, "Back to Basics: Let Denoising Generative Models Denoise",
2025). The loss is still measured on the velocity, v = (x_t - x0_hat) / max(t, T_MIN) against
eps - x0, which weights the x0 error by 1/t^2 as the velocity loss does; ``--loss-space sample``
measures the x0 error itself instead (later stages: it gives high noise, where only the caption
can tell the character's colour, as much weight as low noise). Storyloom's sampler
converts the prediction the same way; ``prediction_type`` in transformer/config.json tells it
which output the weights give. ``--prediction velocity`` trains the plain FLUX objective.

The exponential moving average of the weights is what gets saved, in diffusers / transformers
folder layout (``transformer/`` and ``text_encoder/`` under --out), every few minutes, so an
interrupted run still leaves a usable model. The loss curve goes to --out/loss.png and the raw
log to --out/train_log.csv.
"""

import argparse
import copy
import csv
import json
import math
import os
import shutil
import time

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import FluxTransformer2DModel
from PIL import Image, ImageDraw
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import T5Config, T5EncoderModel

from grounding import (
    character_tokens,
    format_report,
    forward_with_queries,
    grounding_loss,
    grounding_report,
    span_columns,
)

HERE = os.path.dirname(os.path.abspath(__file__))

IMAGE_SIZE = 64
PIXEL_FACTOR = 4
TEXT_LEN = 64
IMAGE_TOKENS = (IMAGE_SIZE // PIXEL_FACTOR // 2) ** 2


def space_to_depth(x, factor=PIXEL_FACTOR):
    """[B, C, H, W] -> [B, C f^2, H/f, W/f], channel index c f^2 + dy f + dx."""
    b, c, h, w = x.shape
    f = factor
    x = x.reshape(b, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * f * f, h // f, w // f)


def pack_latents(x):
    """[B, C, H, W] -> [B, (H/2)(W/2), 4C]: 2x2 patches, channel-major, tokens row-major."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def images_to_tokens(images_u8):
    """u8 [B, H, W, 3] -> model tokens [B, 64, 192] in [-1, 1]."""
    x = images_u8.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return pack_latents(space_to_depth(x))


def shift_mu(image_seq_len):
    """FLUX's shift line through (256, 0.5) and (4096, 1.15)."""
    return 0.5 + (1.15 - 0.5) / (4096 - 256) * (image_seq_len - 256)


def time_shift(mu, t):
    """t' = e^mu / (e^mu + 1/t - 1)."""
    return math.exp(mu) / (math.exp(mu) + (1.0 / t - 1.0))


def sample_timesteps(batch, generator, uniform_fraction=0.0):
    """Logit-normal t (a fraction of them uniform instead), shifted as the sampler's schedule
    is for 64 image tokens."""
    t = torch.sigmoid(torch.randn(batch, generator=generator))
    if uniform_fraction > 0.0:
        # Uniform draws give the high-noise end, where a small model is weakest, more weight.
        uniform = torch.rand(batch, generator=generator)
        pick = torch.rand(batch, generator=generator) < uniform_fraction
        t = torch.where(pick, uniform, t)
    t = t.clamp(1e-5, 1.0 - 1e-5)
    mu = shift_mu(IMAGE_TOKENS)
    return math.exp(mu) / (math.exp(mu) + (1.0 / t - 1.0))


def image_ids(rows, cols):
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3)


class TextTokens:
    """The world tokenizer with T5's conventions: `</s>` appended, padded with id 0."""

    def __init__(self, path):
        self.tokenizer = Tokenizer.from_file(path)
        vocab = self.tokenizer.get_vocab()
        self.pad_id = vocab["<pad>"]
        self.eos_id = vocab["</s>"]
        assert self.pad_id == 0, "T5 convention: <pad> has id 0"
        self.vocab_size = self.tokenizer.get_vocab_size()

    def encode(self, text):
        ids = list(self.tokenizer.encode(text).ids)
        # The tokenizer may or may not append `</s>` itself; the model always sees exactly one.
        if not ids or ids[-1] != self.eos_id:
            ids.append(self.eos_id)
        if len(ids) > TEXT_LEN:
            raise ValueError(f"caption longer than {TEXT_LEN} tokens: {text!r}")
        return ids + [self.pad_id] * (TEXT_LEN - len(ids)), len(ids)


def build_models(vocab_size, hidden_heads, double_blocks, single_blocks):
    t5_config = T5Config(
        vocab_size=vocab_size,
        d_model=128,
        d_kv=32,
        d_ff=256,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        is_encoder_decoder=False,
        use_cache=False,
    )
    text_encoder = T5EncoderModel(t5_config)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=3 * PIXEL_FACTOR**2 * 4,
        num_layers=double_blocks,
        num_single_layers=single_blocks,
        attention_head_dim=64,
        num_attention_heads=hidden_heads,
        joint_attention_dim=t5_config.d_model,
        pooled_projection_dim=t5_config.d_model,
        guidance_embeds=False,
        axes_dims_rope=(8, 28, 28),
    )
    return text_encoder, transformer


def encode_text(text_encoder, ids, lengths):
    """T5 output [B, L, D] and its mean over the real tokens [B, D]."""
    hidden = text_encoder(input_ids=ids).last_hidden_state
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).float()
    pooled = (hidden * mask[..., None]).sum(1) / lengths[:, None].float()
    return hidden, pooled


# Smallest t the x0 -> velocity conversion divides by; Storyloom's sampler uses the same.
T_MIN = 0.05

# The noise level of step 4 of 20, where CharaConsist reads the built-in model's masks.
MASK_T = 0.865


def predict(text_encoder, transformer, x_t, t, ids, lengths, img_ids, txt_ids):
    """The transformer's raw output: x0 ("sample") or the velocity, per --prediction."""
    hidden, pooled = encode_text(text_encoder, ids, lengths)
    return transformer(
        hidden_states=x_t,
        encoder_hidden_states=hidden,
        pooled_projections=pooled,
        timestep=t,
        img_ids=img_ids,
        txt_ids=txt_ids,
        return_dict=False,
    )[0]


def to_velocity(prediction, out, x_t, t_b):
    if prediction == "sample":
        return (x_t - out) / t_b.clamp(min=T_MIN)
    return out


def flow_loss(text_encoder, transformer, x0, ids, lengths, t, eps, img_ids, txt_ids, prediction, space="velocity"):
    """Mean squared error of the implied velocity, or (``space="sample"``, x0 prediction only)
    of the clean image itself: the velocity error is the x0 error weighted by 1/t^2, which puts
    most of the weight on low noise, where the picture is already decided and the caption
    hardly matters; the plain x0 error weights every t alike."""
    t_b = t[:, None, None]
    x_t = (1.0 - t_b) * x0 + t_b * eps
    out = predict(text_encoder, transformer, x_t, t, ids, lengths, img_ids, txt_ids)
    return _flow_error(out, x0, x_t, t_b, eps, prediction, space)


def _flow_error(out, x0, x_t, t_b, eps, prediction, space):
    if space == "sample" and prediction == "sample":
        return F.mse_loss(out, x0)
    return F.mse_loss(to_velocity(prediction, out, x_t, t_b), eps - x0)


def grounded_flow_loss(text_encoder, transformer, x0, ids, lengths, t, eps, img_ids, txt_ids, prediction, space, grounding):
    """The flow loss and the grounding loss of the single blocks' image-to-text attention
    (``grounding.py``); ``grounding`` is (character tokens, background, foreground and real
    text columns) of the batch."""
    t_b = t[:, None, None]
    x_t = (1.0 - t_b) * x0 + t_b * eps
    hidden, pooled = encode_text(text_encoder, ids, lengths)
    out, queries_keys = forward_with_queries(transformer, x_t, t, hidden, pooled, img_ids, txt_ids)
    return _flow_error(out, x0, x_t, t_b, eps, prediction, space), grounding_loss(queries_keys, *grounding)


def save_models(out_dir, text_encoder, transformer, prediction):
    """Writes both folders next to each other, replacing earlier ones only once complete."""
    staging = os.path.join(out_dir, ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    transformer.save_pretrained(os.path.join(staging, "transformer"), safe_serialization=True)
    # Storyloom reads what the output means from the transformer's config (absent = velocity).
    config_path = os.path.join(staging, "transformer", "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["prediction_type"] = prediction
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    text_encoder.save_pretrained(os.path.join(staging, "text_encoder"), safe_serialization=True)
    for part in ("transformer", "text_encoder"):
        final = os.path.join(out_dir, part)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(os.path.join(staging, part), final)
    shutil.rmtree(staging, ignore_errors=True)


def draw_loss_curve(path, steps, losses, val_steps, val_losses, width=640, height=360):
    """Training loss (mean over windows of 50 steps) and held-out EMA loss, log scale."""
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 60, width - 20, 20, height - 40
    if len(losses) < 2:
        img.save(path)
        return
    window = 50
    smooth_x, smooth_y = [], []
    for i in range(0, len(losses), window):
        chunk = losses[i : i + window]
        smooth_x.append(steps[min(i + len(chunk) - 1, len(steps) - 1)])
        smooth_y.append(sum(chunk) / len(chunk))
    all_y = smooth_y + list(val_losses)
    lo, hi = math.log(min(all_y)), math.log(max(all_y))
    if hi - lo < 1e-6:
        hi = lo + 1.0
    max_step = max(steps[-1], 1)

    def px(step, loss):
        x = left + (right - left) * step / max_step
        y = bottom - (bottom - top) * (math.log(loss) - lo) / (hi - lo)
        return x, y

    d.line([(left, top), (left, bottom), (right, bottom)], fill="black")
    for k in range(5):
        value = math.exp(lo + (hi - lo) * k / 4)
        _, y = px(0, value)
        d.text((4, y - 6), f"{value:.3f}", fill="black")
    d.text((right - 60, bottom + 8), f"step {max_step}", fill="black")
    d.text((left, bottom + 22), "train loss (50-step mean, blue); held-out EMA loss (red)", fill="black")
    d.line([px(s, l) for s, l in zip(smooth_x, smooth_y)], fill=(30, 80, 200), width=2)
    if len(val_losses) >= 2:
        d.line([px(s, l) for s, l in zip(val_steps, val_losses)], fill=(200, 40, 40), width=2)
    img.save(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/tmp/world", help="folder written by export_world_dataset")
    parser.add_argument("--out", default=HERE, help="where transformer/ and text_encoder/ go")
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer.json (default: the one shipped next to this script, else the data set's)",
    )
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (2x slower steps)")
    parser.add_argument("--steps", type=int, default=4500, help="planned optimiser steps")
    parser.add_argument("--minutes", type=float, default=75.0, help="stop earlier after this long")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--ema", type=float, default=0.995)
    parser.add_argument("--heads", type=int, default=2, help="attention heads of 64 features")
    parser.add_argument("--double-blocks", type=int, default=2)
    parser.add_argument("--single-blocks", type=int, default=4)
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--held-out", type=int, default=256, help="last samples kept out of training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop-step", type=int, default=None, help="stop after this step (schedule still planned over --steps)")
    parser.add_argument("--uniform-t", type=float, default=0.0, help="fraction of training times drawn uniform before the shift")
    parser.add_argument("--init", default=None, help="start from the transformer/ and text_encoder/ saved in this folder")
    parser.add_argument("--first-step", type=int, default=0, help="step number the --init weights were saved at (continues the log)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--grounding-weight",
        type=float,
        default=0.0,
        help="weight of the loss that grounds the single blocks' image-to-text attention on the character (grounding.py); 0 trains the flow loss alone",
    )
    parser.add_argument(
        "--loss-space",
        choices=["velocity", "sample"],
        default="velocity",
        help="train on the implied velocity's error (default) or the clean image's (x0 prediction only); the held-out loss is always the velocity's",
    )
    parser.add_argument(
        "--prediction",
        choices=["sample", "velocity"],
        default="sample",
        help="what the transformer outputs: the clean image (default) or FLUX's velocity",
    )
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)

    data = load_file(os.path.join(args.data, "images.safetensors"))
    images = data["images"]
    assert images.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE, 3), images.shape
    # The packing must be Storyloom's, bit for bit: the exporter computed these in Rust.
    ours = images_to_tokens(images[:2])
    err = (ours - data["packed_check"]).abs().max().item()
    assert err < 1e-6, f"packing differs from Storyloom's by {err}"
    print(f"packing matches Storyloom's (max difference {err:.2e})")

    tokenizer_path = args.tokenizer or os.path.join(HERE, "tokenizer.json")
    if args.tokenizer is None and not os.path.exists(tokenizer_path):
        tokenizer_path = os.path.join(args.data, "tokenizer.json")
    tokens = TextTokens(tokenizer_path)
    with open(os.path.join(args.data, "captions.jsonl")) as f:
        records = [json.loads(line) for line in f]
    captions = [r["caption"] for r in records]
    assert len(captions) == images.shape[0]
    encoded = [tokens.encode(c) for c in captions]
    all_ids = torch.tensor([e[0] for e in encoded], dtype=torch.long)
    all_lengths = torch.tensor([e[1] for e in encoded], dtype=torch.long)
    # Where each caption's background words end: the grounding loss and report need the spans.
    all_background_lengths = torch.tensor(
        [len(tokens.tokenizer.encode(r["background"], add_special_tokens=False).ids) for r in records],
        dtype=torch.long,
    )
    all_truth = character_tokens(data["masks"]) if "masks" in data else None
    if args.grounding_weight > 0 and all_truth is None:
        raise SystemExit("--grounding-weight needs the character masks: export the data set again")

    def grounding_inputs(idx):
        columns = span_columns(all_background_lengths[idx], all_lengths[idx], TEXT_LEN)
        return (all_truth[idx], *columns)
    print(f"{len(captions)} samples, vocabulary {tokens.vocab_size}, longest caption {all_lengths.max().item()} tokens")

    n_train = images.shape[0] - args.held_out
    text_encoder, transformer = build_models(tokens.vocab_size, args.heads, args.double_blocks, args.single_blocks)
    n_dit = sum(p.numel() for p in transformer.parameters())
    n_t5 = sum(p.numel() for p in text_encoder.parameters())
    print(f"transformer {n_dit / 1e6:.2f} M parameters, text encoder {n_t5 / 1e6:.2f} M")
    if args.init:
        text_encoder = T5EncoderModel.from_pretrained(os.path.join(args.init, "text_encoder"))
        transformer = FluxTransformer2DModel.from_pretrained(os.path.join(args.init, "transformer"))
        print(f"initialised from {args.init} (saved at step {args.first_step})")
    ema_text, ema_dit = copy.deepcopy(text_encoder).eval(), copy.deepcopy(transformer).eval()
    for p in list(ema_text.parameters()) + list(ema_dit.parameters()):
        p.requires_grad_(False)

    params = list(transformer.parameters()) + list(text_encoder.parameters())
    ema_params = list(ema_dit.parameters()) + list(ema_text.parameters())
    optimiser = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        progress = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
        return args.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))

    img_ids = image_ids(8, 8)
    txt_ids = torch.zeros(TEXT_LEN, 3)
    gen = torch.Generator().manual_seed(args.seed + 1)

    # A fixed held-out batch with fixed noise and times: comparable across checkpoints.
    val_gen = torch.Generator().manual_seed(args.seed + 2)
    val_idx = torch.arange(n_train, images.shape[0])[:64]
    val_x0 = images_to_tokens(images[val_idx])
    val_eps = torch.randn(val_x0.shape, generator=val_gen)
    val_t = sample_timesteps(len(val_idx), val_gen)

    log_path = os.path.join(args.out, "train_log.csv")
    steps, losses, val_steps, val_losses = [], [], [], []
    earlier_rows = []
    if args.first_step > 0 and os.path.exists(log_path):
        # Continue the earlier stage's log up to the step its weights were saved at.
        with open(log_path, newline="") as f:
            earlier_rows = [r for r in csv.DictReader(f) if int(r["step"]) <= args.first_step]
    log_file = open(log_path, "w", newline="")
    log = csv.writer(log_file)
    log.writerow(["step", "seconds", "lr", "loss", "held_out_ema_loss"])
    for r in earlier_rows:
        log.writerow([r["step"], r["seconds"], r["lr"], r["loss"], r["held_out_ema_loss"]])
        if r["loss"]:
            steps.append(int(r["step"]))
            losses.append(float(r["loss"]))
        if r["held_out_ema_loss"]:
            val_steps.append(int(r["step"]))
            val_losses.append(float(r["held_out_ema_loss"]))

    # Grounding is read where Storyloom reads the masks: step 4 of 20, t = 0.865.
    val_t_mask = torch.full((len(val_idx),), MASK_T)

    def report_grounding():
        x_t = (1.0 - MASK_T) * val_x0 + MASK_T * val_eps
        hidden, pooled = encode_text(ema_text, all_ids[val_idx], all_lengths[val_idx])
        _, queries_keys = forward_with_queries(ema_dit, x_t, val_t_mask, hidden, pooled, img_ids, txt_ids)
        return grounding_report(queries_keys, *grounding_inputs(val_idx))

    def checkpoint(step, elapsed):
        with torch.no_grad():
            val = flow_loss(ema_text, ema_dit, val_x0, all_ids[val_idx], all_lengths[val_idx], val_t, val_eps, img_ids, txt_ids, args.prediction).item()
            if all_truth is not None:
                print(f"held-out grounding at t = {MASK_T}: {format_report(report_grounding())}", flush=True)
        val_steps.append(args.first_step + step)
        val_losses.append(val)
        log.writerow([args.first_step + step, f"{elapsed:.1f}", "", "", f"{val:.5f}"])
        log_file.flush()
        save_models(args.out, ema_text, ema_dit, args.prediction)
        draw_loss_curve(os.path.join(args.out, "loss.png"), steps, losses, val_steps, val_losses)
        print(f"checkpoint at step {args.first_step + step} ({elapsed / 60:.1f} min): held-out EMA loss {val:.4f}", flush=True)

    # Fusing the many small element-wise ops roughly halves a CPU step; compiling takes ~3 min.
    grounded = args.grounding_weight > 0
    loss_fn = grounded_flow_loss if grounded else flow_loss
    train_loss = loss_fn if args.no_compile else torch.compile(loss_fn)

    start = time.time()
    last_checkpoint = start
    step = 0
    stop_step = args.steps if args.stop_step is None else min(args.steps, args.stop_step)
    transformer.train()
    text_encoder.train()
    while step < stop_step and time.time() - start < args.minutes * 60:
        idx = torch.randint(0, n_train, (args.batch,), generator=gen)
        x0 = images_to_tokens(images[idx])
        eps = torch.randn(x0.shape, generator=gen)
        t = sample_timesteps(args.batch, gen, args.uniform_t)
        lr = lr_at(step)
        for group in optimiser.param_groups:
            group["lr"] = lr
        if grounded:
            flow, ground = train_loss(text_encoder, transformer, x0, all_ids[idx], all_lengths[idx], t, eps, img_ids, txt_ids, args.prediction, args.loss_space, grounding_inputs(idx))
            loss = flow + args.grounding_weight * ground
        else:
            loss = train_loss(text_encoder, transformer, x0, all_ids[idx], all_lengths[idx], t, eps, img_ids, txt_ids, args.prediction, args.loss_space)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        # EMA with a short horizon early on, so early checkpoints are not dominated by the init.
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1.0 - decay)
        step += 1
        elapsed = time.time() - start
        steps.append(args.first_step + step)
        losses.append(loss.item())
        log.writerow([args.first_step + step, f"{elapsed:.1f}", f"{lr:.2e}", f"{loss.item():.5f}", ""])
        if step % 10 == 0:
            log_file.flush()
            parts = f" (flow {flow.item():.4f}, grounding {ground.item():.4f})" if grounded else ""
            print(f"step {step} loss {loss.item():.4f}{parts} lr {lr:.2e} {elapsed / step:.2f} s/step", flush=True)
        if time.time() - last_checkpoint > args.checkpoint_minutes * 60:
            checkpoint(step, elapsed)
            last_checkpoint = time.time()
    checkpoint(step, time.time() - start)
    log_file.close()
    print(f"done: {step} steps in {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
