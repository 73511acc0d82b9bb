//! FLUX-family diffusion in candle. Knows nothing of projects or the UI.

pub mod builtin;
pub mod dit;
pub mod text;
pub mod vae;
