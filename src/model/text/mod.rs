//! T5 / CLIP text encoders, tokenizers and combined-prompt token spans.
