use std::path::PathBuf;

/// Why an autoencoder could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum VaeError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    UnsupportedFile { path: PathBuf, reason: String },
    #[error("{path} is not a valid safetensors file (truncated or corrupt?): {message}")]
    InvalidSafetensors { path: PathBuf, message: String },
    #[error("{path} holds no FLUX autoencoder tensors (no `encoder.`/`decoder.` down/up blocks)")]
    NotAnAutoencoder { path: PathBuf },
    #[error("{path}: bad autoencoder config.json: {message}")]
    BadConfig { path: PathBuf, message: String },
    #[error("missing autoencoder tensor `{name}`")]
    MissingTensor { name: String },
    #[error("autoencoder tensor `{name}` has shape {found:?}, expected {expected:?}")]
    WrongShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("autoencoder tensor `{name}` is not supported: {reason}")]
    UnsupportedTensor { name: String, reason: String },
    #[error("inconsistent autoencoder: {0}")]
    Inconsistent(String),
    #[error("expected an image tensor [3, H, W] or [1, 3, H, W], got {dims:?}")]
    ImageShape { dims: Vec<usize> },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
