//! FLUX-family diffusion in candle. Knows nothing of projects or the UI.

pub mod builtin;
pub mod codec;
pub mod dit;
pub mod gguf_header;
pub mod gguf_weights;
pub mod pipeline;
pub mod preview;
pub mod safetensors_header;
pub mod sampler;
pub mod text;
pub mod vae;
pub mod weights;
