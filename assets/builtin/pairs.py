"""Paired training: a second picture of the same character looks at the first one's character.

CharaConsist is training-free on FLUX because a large model's attention, given the keys and
values of another image's character next to its own (point-tracking attention, eqs. 10-16),
takes that character's looks. The small built-in model never saw more than one image at a time,
and measured so: with grounded masks and matches, sharing moved a frame to the identity's
colour in about a third of frames. This stage gives it that ability the way CharaConsist
presents it at inference:

- a batch holds samples A (as in plain training) and partners B (``World::partner``: the same
  character in another scene and action, with an under-specified caption, so only A can tell
  B's looks);
- in the single blocks CharaConsist shares in on the built-in model (0 and 2, its foreground
  layers), B's character tokens also see A's character keys and values (eq. 16's mask: only
  character queries see them, text and background queries do not), each key rotated to a
  position in B's character (eq. 13's point tracking; here A's character moved so its centroid
  lands on B's, since there are no matches during training);
- the loss is the usual flow loss on A and B (plus the grounding loss).

The masks are the world's true character masks here; at inference they are CharaConsist's own,
from the attention the grounding loss trains.
"""

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb

# The built-in model's CharaConsist foreground layers (FLUX's even single blocks, scaled to 4).
SHARED_SINGLE_BLOCKS = (0, 2)


def shifted_ids(truth_a, truth_b, grid=8):
    """Per pair, the image positions [n, 64, 3] of A's tokens moved so the centroid of A's
    character lands on B's (rounded to whole tokens)."""
    rows = torch.arange(grid).repeat_interleave(grid).float()
    cols = torch.arange(grid).repeat(grid).float()

    def centroid(truth):
        w = truth.float()
        total = w.sum(-1).clamp(min=1.0)
        return (w * rows).sum(-1) / total, (w * cols).sum(-1) / total

    (ra, ca), (rb, cb) = centroid(truth_a), centroid(truth_b)
    ids = torch.zeros(truth_a.shape[0], grid * grid, 3)
    ids[..., 1] = rows[None, :] + torch.round(rb - ra)[:, None]
    ids[..., 2] = cols[None, :] + torch.round(cb - ca)[:, None]
    return ids


def _rotate(x, cos, sin):
    """``apply_rotary_emb`` with a table per batch row: x [n, S, H, D], cos/sin [n, S, D]."""
    real, imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
    rotated = torch.stack([-imag, real], dim=-1).flatten(3)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]


def _single_block_shared(block, hidden, encoder_hidden, temb, rotary, share):
    """A single block where rows ``n..2n`` (B) also attend to rows ``0..n`` (A)'s character
    keys and values; ``share`` = (extra rotary (cos, sin) [n, 64, D], attention mask
    [2n, 1, N, N + 64])."""
    text_len = encoder_hidden.shape[1]
    x = torch.cat([encoder_hidden, hidden], dim=1)
    residual = x
    normed, gate = block.norm(x, emb=temb)
    mlp = block.act_mlp(block.proj_mlp(normed))
    attn = block.attn
    q = attn.norm_q(attn.to_q(normed).unflatten(-1, (-1, attn.head_dim)))
    k_pre = attn.norm_k(attn.to_k(normed).unflatten(-1, (-1, attn.head_dim)))
    v = attn.to_v(normed).unflatten(-1, (-1, attn.head_dim))
    q = apply_rotary_emb(q, rotary, sequence_dim=1)
    k = apply_rotary_emb(k_pre, rotary, sequence_dim=1)
    (cos, sin), mask = share
    n = x.shape[0] // 2
    extra_k = _rotate(k_pre[:n, text_len:], cos, sin)
    extra_v = v[:n, text_len:]
    # A's rows get B's... nothing: their extra columns are masked out; zeros keep shapes equal.
    extra_k = torch.cat([torch.zeros_like(extra_k), extra_k], 0)
    extra_v = torch.cat([torch.zeros_like(extra_v), extra_v], 0)
    k = torch.cat([k, extra_k], 1)
    v = torch.cat([v, extra_v], 1)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).flatten(2, 3)
    x = residual + gate.unsqueeze(1) * block.proj_out(torch.cat([out, mlp], dim=2))
    return x[:, :text_len], x[:, text_len:], (q[:, :, text_len:], k[:, :, :text_len], out[:, text_len:])


def sharing_inputs(transformer, truth_a, truth_b, text_len):
    """The extra keys' rotary tables and the attention mask of a paired batch."""
    n, n_img = truth_a.shape
    ids = shifted_ids(truth_a, truth_b)
    cos, sin = transformer.pos_embed(ids.reshape(n * n_img, 3))
    cos, sin = cos.reshape(n, n_img, -1), sin.reshape(n, n_img, -1)
    total = text_len + n_img
    own = torch.ones(2 * n, total, total, dtype=torch.bool)
    extra = torch.zeros(2 * n, total, n_img, dtype=torch.bool)
    # B's character queries see A's character keys (eq. 16 with the true masks).
    extra[n:, text_len:, :] = truth_b[:, :, None] & truth_a[:, None, :]
    mask = torch.cat([own, extra], dim=2)[:, None]
    return (cos, sin), mask


def forward_pairs(transformer, x_t, t, hidden, pooled, img_ids, txt_ids, share):
    """``grounding.forward_with_queries`` for a paired batch (A rows first, then B rows)."""
    from grounding import _single_block

    m = transformer
    x = m.x_embedder(x_t)
    temb = m.time_text_embed(t.to(x.dtype) * 1000, pooled)
    enc = m.context_embedder(hidden)
    rotary = m.pos_embed(torch.cat((txt_ids, img_ids), dim=0))
    for block in m.transformer_blocks:
        enc, x = block(hidden_states=x, encoder_hidden_states=enc, temb=temb, image_rotary_emb=rotary)
    readouts = []
    for index, block in enumerate(m.single_transformer_blocks):
        if index in SHARED_SINGLE_BLOCKS:
            enc, x, readout = _single_block_shared(block, x, enc, temb, rotary, share)
        else:
            enc, x, readout = _single_block(block, x, enc, temb, rotary)
        readouts.append(readout)
    return m.proj_out(m.norm_out(x, temb)), readouts
