//! The FLUX.1 transformer (DiT) with hook points for the consistency methods.
//!
//! One file per part, as in the original release: embeddings, RoPE, attention, double and
//! single blocks, final layer. Weights use the original (BFL) tensor names; the loader in
//! `model::weights` maps diffusers checkpoints onto them.

pub mod attention;
pub mod config;
pub mod control;
mod cpu_kernels;
mod cpu_matmul;
pub mod double_block;
pub mod embeddings;
pub mod final_layer;
pub mod init;
pub mod layers;
pub mod linear;
pub mod model;
pub mod rope;
pub mod single_block;

pub use attention::{AttentionCall, ExtraKv};
pub use config::FluxConfig;
pub use control::{BlockId, Branch, Control, HookCtx, NoControl, StepCtx, Stream};
pub use linear::{Linear, WeightSource};
pub use model::{FluxInputs, FluxTransformer, StepInfo};
pub use rope::RopeTables;
