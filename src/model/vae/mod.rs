//! The FLUX autoencoder.
//!
//! Reads BFL `ae.safetensors` files and diffusers `vae/` folders; sizes come from the tensor
//! shapes, so tiny test models load the same way as the real one. Latents in model space are
//! `(z - 0.1159) * 0.3611` (FLUX's shift and scale).

mod autoencoder;
mod blocks;
mod config;
mod error;
mod image;
mod names;
mod network;

pub use autoencoder::{DIFFUSERS_WEIGHTS_FILE, FluxVae, LoadOptions};
pub use config::{FLUX_NUM_GROUPS, FLUX_SCALE_FACTOR, FLUX_SHIFT_FACTOR, VaeConfig};
pub use error::VaeError;
pub use image::{image_tensor_to_rgb8, rgb8_to_image_tensor};
pub use names::{VaeLayout, bfl_to_diffusers, diffusers_to_bfl};
