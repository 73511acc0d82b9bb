//! T5 / CLIP text encoders, tokenizers and combined-prompt token spans.
//!
//! - [`prompt`]: the combined prompt — ordered segments tokenized one by one so every
//!   segment's token span, the EOS position and the padding span are exact;
//! - [`t5`]: the T5 encoder (FLUX's per-token text features);
//! - [`clip`]: the CLIP text encoder (FLUX's pooled vector);
//! - [`encoder`]: [`TextEncoder`], which ties them together, caches encodings and can drop
//!   the weights from memory;
//! - [`files`]: finding and checking the weight files;
//! - [`tokenizer_files`]: reading a tokenizer.json, or building CLIP's from vocab.json + merges.txt.

pub mod clip;
pub mod encoder;
pub mod error;
pub mod files;
pub mod prompt;
pub mod t5;
pub mod tokenizer_files;

pub use clip::ClipEncoder;
pub use encoder::{
    DEV_MAX_LEN, EncoderPaths, PooledSource, SCHNELL_MAX_LEN, TextEncoder, TextEncoderOptions,
    TextEncoding,
};
pub use error::{TextError, TextModelKind};
pub use prompt::{CombinedPrompt, PromptSegments, PromptTokenizer, Separator, SpecialTokens};
pub use t5::T5Encoder;
