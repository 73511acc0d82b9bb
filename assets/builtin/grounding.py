"""Where the built-in transformer's image tokens look among the caption's words.

CharaConsist makes its foreground masks from the image-to-text attention of the single blocks
(eqs. 6-9 of the paper, the released code's variant: unscaled logits q.k, softmax over the real
text tokens only, heads summed, each part's columns averaged, blocks averaged, a token is
foreground where it attends at least as much to the character and action words as to the
background words). Large FLUX models ground their words this way; the small built-in model,
trained on the flow loss alone, did not (mask IoU with the character 0.1-0.26 per block).

This module computes exactly that readout during training, so that

- ``grounding_loss`` can ask every single block to ground the caption (a logistic loss on the
  eq. 9 margin log fg - log bg against the world's true character tokens), and
- ``grounding_report`` can measure it (per block and averaged as the method averages) on a
  held-out batch at the noise level where Storyloom reads the masks.

The forward pass is diffusers' ``FluxTransformer2DModel.forward`` written out (no ControlNet,
no IP-Adapter, no guidance embedding), with the single blocks' attention spelled out so their
RoPE'd queries and keys come back with the output; the output is identical to the module's.
"""

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb

# A token is the character's where the character covers at least this share of its pixels
# (the model card's figures use the same 30 % on the checker's subject pixels).
CHARACTER_COVERAGE = 0.3


def character_tokens(masks_u8, grid=8):
    """u8 coverage [B, H, W] -> bool [B, grid*grid], row-major as the model's tokens."""
    b, h, w = masks_u8.shape
    cov = masks_u8.float().reshape(b, grid, h // grid, grid, w // grid).mean(dim=(2, 4)) / 255.0
    return (cov >= CHARACTER_COVERAGE).reshape(b, grid * grid)


def span_columns(background_lengths, lengths, text_len):
    """Column masks [B, text_len] of the background words, the character and action words,
    and the real text (EOS and padding excluded), for captions ``background, character,
    action``: the background is the first ``background_lengths`` tokens, a comma follows, the
    foreground runs to the token before EOS (Storyloom's ``plain_spans``)."""
    j = torch.arange(text_len)[None, :]
    bg = j < background_lengths[:, None]
    real = j < (lengths[:, None] - 1)
    fg = (j >= background_lengths[:, None] + 1) & real
    return bg, fg, real


def _single_block(block, hidden, encoder_hidden, temb, rotary):
    """``FluxSingleTransformerBlock.forward`` with its attention written out; returns the new
    streams plus the image queries [B, H, n_img, d], the text keys [B, H, n_txt, d] and the
    image tokens' attention output [B, n_img, H d] (before the concat with the MLP branch)."""
    text_len = encoder_hidden.shape[1]
    x = torch.cat([encoder_hidden, hidden], dim=1)
    residual = x
    normed, gate = block.norm(x, emb=temb)
    mlp = block.act_mlp(block.proj_mlp(normed))
    attn = block.attn
    q = attn.norm_q(attn.to_q(normed).unflatten(-1, (-1, attn.head_dim)))
    k = attn.norm_k(attn.to_k(normed).unflatten(-1, (-1, attn.head_dim)))
    v = attn.to_v(normed).unflatten(-1, (-1, attn.head_dim))
    q = apply_rotary_emb(q, rotary, sequence_dim=1)
    k = apply_rotary_emb(k, rotary, sequence_dim=1)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, N, d]
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2, 3)
    x = residual + gate.unsqueeze(1) * block.proj_out(torch.cat([out, mlp], dim=2))
    return x[:, :text_len], x[:, text_len:], (q[:, :, text_len:], k[:, :, :text_len], out[:, text_len:])


def forward_with_queries(transformer, x_t, t, hidden, pooled, img_ids, txt_ids):
    """The transformer's output and, per single block, (image queries, text keys, image
    attention output)."""
    m = transformer
    x = m.x_embedder(x_t)
    temb = m.time_text_embed(t.to(x.dtype) * 1000, pooled)
    enc = m.context_embedder(hidden)
    rotary = m.pos_embed(torch.cat((txt_ids, img_ids), dim=0))
    for block in m.transformer_blocks:
        enc, x = block(hidden_states=x, encoder_hidden_states=enc, temb=temb, image_rotary_emb=rotary)
    queries_keys = []
    for block in m.single_transformer_blocks:
        enc, x, readout = _single_block(block, x, enc, temb, rotary)
        queries_keys.append(readout)
    out = m.proj_out(m.norm_out(x, temb))
    return out, queries_keys


def foreground_margin(q_img, k_txt, bg_cols, fg_cols, real_cols):
    """Eq. 9's margin log(fg) - log(bg) per image token [B, n_img] of one block: softmax of the
    unscaled logits over the real text (eq. 6), heads summed, each part's columns averaged
    (eqs. 7-8), all in log space so a peaked softmax stays finite."""
    logits = torch.einsum("bhid,bhjd->bhij", q_img, k_txt)
    neg = torch.finfo(logits.dtype).min
    log_p = torch.log_softmax(logits.masked_fill(~real_cols[:, None, None, :], neg), dim=-1)

    def log_part_mean(cols):
        picked = log_p.masked_fill(~cols[:, None, None, :], neg)
        # log of sum over heads and the part's columns, minus log of the part's width.
        total = torch.logsumexp(picked.permute(0, 2, 1, 3).flatten(2), dim=-1)
        return total - torch.log(cols.sum(-1, keepdim=True).clamp(min=1).float())

    return log_part_mean(fg_cols) - log_part_mean(bg_cols)


def grounding_loss(queries_keys, truth, bg_cols, fg_cols, real_cols):
    """Mean over single blocks of a class-balanced logistic loss on eq. 9's margin: character
    tokens should attend more to the character and action words, the rest to the background
    words."""
    truth = truth.float()
    positives = truth.sum().clamp(min=1.0)
    pos_weight = (truth.numel() - positives) / positives
    losses = [
        F.binary_cross_entropy_with_logits(
            foreground_margin(q, k, bg_cols, fg_cols, real_cols), truth, pos_weight=pos_weight
        )
        for q, k, _ in queries_keys
    ]
    return torch.stack(losses).mean()


def _iou(pred, truth):
    inter = (pred & truth).sum().item()
    union = (pred | truth).sum().item()
    return inter / union if union else 1.0


def _auc(score, truth):
    """Probability that a character token scores above a background token (ties count half)."""
    pos, neg = score[truth], score[~truth]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).float().mean().item()
    ties = (pos[:, None] == neg[None, :]).float().mean().item()
    return greater + 0.5 * ties


def part_means(q_img, k_txt, bg_cols, fg_cols, real_cols):
    """Eqs. 6-8 for one block, as probabilities: softmax of the unscaled logits over the real
    text, heads summed, each part's columns averaged. Returns (bg, fg), each [B, n_img]."""
    logits = torch.einsum("bhid,bhjd->bhij", q_img, k_txt).masked_fill(~real_cols[:, None, None, :], float("-inf"))
    p = torch.softmax(logits, dim=-1).sum(1)

    def mean(cols):
        return (p * cols[:, None, :]).sum(-1) / cols.sum(-1, keepdim=True).clamp(min=1)

    return mean(bg_cols), mean(fg_cols)


@torch.no_grad()
def grounding_report(queries_keys, truth, bg_cols, fg_cols, real_cols):
    """Per block and for the method's average over all single blocks: mask IoU with the
    character tokens (pooled over the batch) and the ranking AUC of the margin."""
    report = {}
    means = []
    for b, (q, k, _) in enumerate(queries_keys):
        margin = foreground_margin(q, k, bg_cols, fg_cols, real_cols)
        report[f"single{b}"] = (_iou(margin >= 0, truth), _auc(margin.flatten(), truth.flatten()))
        # The method averages the blocks' part means themselves (eqs. 7-8), not the margins.
        means.append(part_means(q, k, bg_cols, fg_cols, real_cols))
    bg = torch.stack([m[0] for m in means]).mean(0)
    fg = torch.stack([m[1] for m in means]).mean(0)
    report["method"] = (_iou(bg <= fg, truth), _auc((fg - bg).flatten(), truth.flatten()))
    return report


def format_report(report):
    return ", ".join(f"{name} IoU {iou:.2f} AUC {auc:.2f}" for name, (iou, auc) in report.items())
