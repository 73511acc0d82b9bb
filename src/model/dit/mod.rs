//! The FLUX transformer (DiT) with hook points.
