//! Errors of the text side: tokenizer files, encoder weights, prompts.

use std::path::PathBuf;

use crate::model::safetensors_header::HeaderError;

/// Which text model a file was meant for; names the file the user has to choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextModelKind {
    T5,
    Clip,
}

impl std::fmt::Display for TextModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextModelKind::T5 => write!(f, "T5"),
            TextModelKind::Clip => write!(f, "CLIP"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("choose the {kind} tokenizer (tokenizer.json): {path} does not exist")]
    MissingTokenizer { kind: TextModelKind, path: PathBuf },
    #[error("{path} is not a usable {kind} tokenizer (tokenizer.json): {reason}")]
    BadTokenizer {
        kind: TextModelKind,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "the tokenizer adds no end-of-sequence token after the text; give its special tokens explicitly"
    )]
    NoEndToken,
    #[error("tokenizing `{text}` failed: {reason}")]
    Tokenize { text: String, reason: String },
    #[error(
        "a prompt of {max_len} tokens cannot hold the {needed} special tokens the tokenizer adds"
    )]
    MaxLenTooSmall { max_len: usize, needed: usize },
    #[error("choose the {kind} encoder weights: {path} does not exist")]
    MissingWeights { kind: TextModelKind, path: PathBuf },
    #[error("{path} holds {found}, not a {kind} text encoder; choose the {kind} encoder weights")]
    WrongFile {
        kind: TextModelKind,
        path: PathBuf,
        found: String,
    },
    #[error("{kind} encoder: tensor `{tensor}` is missing from the weights")]
    MissingTensor { kind: TextModelKind, tensor: String },
    #[error(
        "{kind} encoder: tensor `{tensor}` has shape {found:?}, the configuration needs {expected:?}"
    )]
    ShapeMismatch {
        kind: TextModelKind,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{kind} encoder configuration {path}: {reason}")]
    BadConfig {
        kind: TextModelKind,
        path: PathBuf,
        reason: String,
    },
    #[error("{kind} encoder: {reason}")]
    Unsupported { kind: TextModelKind, reason: String },
    #[error("{kind} encoder weights: {reason}")]
    BadFolder { kind: TextModelKind, reason: String },
    #[error("the text encoders are not loaded")]
    Unloaded,
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
