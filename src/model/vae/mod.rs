//! The FLUX autoencoder.
