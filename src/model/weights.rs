//! Loading FLUX weights: BFL single files (with or without the `model.diffusion_model.`
//! prefix) and diffusers folders (sharded, with an index), in f32 / bf16 / f16, memory-mapped;
//! and quantized GGUF transformers (see [`super::gguf_weights`]).
//!
//! Files are classified from their safetensors or GGUF header first (see [`classify`]), so
//! the user is told exactly what a file is and what is still missing before anything is loaded.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::dit::{FluxConfig, FluxTransformer, init::expected_tensors};
use super::gguf_header::{GgufHeader, is_gguf, read_gguf_header};
use super::gguf_weights;
use super::safetensors_header::{Header, HeaderError, dtype_size, read_header};
use super::sampler::Prediction;

/// Prefix of the transformer in BFL-style all-in-one checkpoints.
pub const BFL_PREFIX: &str = "model.diffusion_model.";
/// Metadata key our own files use to record RoPE axes (weights alone cannot tell them).
pub const AXES_METADATA_KEY: &str = "storyloom.axes_dim";

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(
        "{path}: tensor `{tensor}` is {kind}, a type Storyloom cannot run (it runs {})",
        crate::model::gguf_header::GgmlType::runnable_names()
    )]
    UnsupportedQuant {
        path: PathBuf,
        tensor: String,
        kind: String,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds {found}, not {wanted}")]
    WrongComponent {
        path: PathBuf,
        found: Component,
        wanted: Component,
    },
    #[error("the transformer weights lack tensor `{name}`")]
    MissingTensor { name: String },
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    WrongShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("cannot infer the model size: {0}")]
    Config(String),
    #[error("{path}: {reason}")]
    BadFolder { path: PathBuf, reason: String },
    #[error("loading tensor data failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Tensor naming of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Original Black Forest Labs names, optionally under [`BFL_PREFIX`].
    Bfl {
        prefixed: bool,
    },
    Diffusers,
}

/// What a weight file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Component {
    Transformer(Layout),
    Vae(Layout),
    T5Encoder,
    ClipText,
    /// One file with several parts (e.g. transformer + VAE + text encoders).
    Bundle(Vec<Component>),
    Unknown,
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Component::Transformer(Layout::Bfl { .. }) => {
                write!(f, "a FLUX transformer (original layout)")
            }
            Component::Transformer(Layout::Diffusers) => {
                write!(f, "a FLUX transformer (diffusers layout)")
            }
            Component::Vae(_) => write!(f, "the FLUX autoencoder (VAE)"),
            Component::T5Encoder => write!(f, "a T5 text encoder"),
            Component::ClipText => write!(f, "a CLIP text encoder"),
            Component::Bundle(parts) => {
                let names: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
                write!(f, "several parts: {}", names.join(", "))
            }
            Component::Unknown => write!(f, "no tensors Storyloom recognises"),
        }
    }
}

fn has_any(header: &Header, pred: impl Fn(&str) -> bool) -> bool {
    header.tensors.keys().any(|k| pred(k))
}

/// Classifies a header by its tensor names.
pub fn classify_header(header: &Header) -> Component {
    let mut parts = Vec::new();
    let bfl_plain = header
        .tensors
        .contains_key("double_blocks.0.img_attn.qkv.weight");
    let bfl_prefixed = header
        .tensors
        .contains_key("model.diffusion_model.double_blocks.0.img_attn.qkv.weight");
    if bfl_plain || bfl_prefixed {
        parts.push(Component::Transformer(Layout::Bfl {
            prefixed: bfl_prefixed && !bfl_plain,
        }));
    } else if has_any(header, |k| k.starts_with("transformer_blocks.0.attn.to_q")) {
        parts.push(Component::Transformer(Layout::Diffusers));
    }
    if has_any(header, |k| k.contains("decoder.up.0.block.0.conv1")) {
        parts.push(Component::Vae(Layout::Bfl { prefixed: false }));
    } else if has_any(header, |k| {
        k.contains("decoder.up_blocks.0.resnets.0.conv1")
    }) {
        parts.push(Component::Vae(Layout::Diffusers));
    }
    if has_any(header, |k| {
        k.contains("encoder.block.0.layer.0.SelfAttention.q.weight")
    }) {
        parts.push(Component::T5Encoder);
    }
    if has_any(header, |k| {
        k.contains("text_model.encoder.layers.0.self_attn.q_proj.weight")
    }) {
        parts.push(Component::ClipText);
    }
    match parts.len() {
        0 => Component::Unknown,
        1 => parts.remove(0),
        _ => Component::Bundle(parts),
    }
}

/// The container format of a weight file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileFormat {
    Safetensors,
    Gguf {
        version: u32,
        architecture: Option<String>,
        /// Types in the file that Storyloom cannot run (the file is refused when loaded).
        unsupported: Vec<String>,
    },
}

/// A user-facing description of one weight file.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub path: PathBuf,
    pub format: FileFormat,
    pub component: Component,
    /// Tensor types, most common first (GGUF: with their share of the parameters).
    pub dtypes: Vec<String>,
    pub parameters: usize,
    /// Bytes on disk.
    pub file_bytes: u64,
    /// Bytes the weights take once loaded on the CPU (GGUF: quantized tensors as stored,
    /// the others in f32).
    pub loaded_bytes: u64,
    pub config: Option<FluxConfig>,
    /// Why the configuration could not be inferred, for a transformer file.
    pub config_error: Option<String>,
    /// What a complete FLUX set still needs besides this file.
    pub missing: Vec<&'static str>,
}

impl fmt::Display for FileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.path.display())?;
        if let FileFormat::Gguf {
            version,
            architecture,
            unsupported,
        } = &self.format
        {
            let arch = architecture.as_deref().unwrap_or("not given");
            writeln!(f, "  format:     GGUF v{version}, architecture {arch}")?;
            if !unsupported.is_empty() {
                writeln!(
                    f,
                    "  cannot run: {} (Storyloom runs {})",
                    unsupported.join(", "),
                    crate::model::gguf_header::GgmlType::runnable_names()
                )?;
            }
        }
        writeln!(f, "  holds:      {}", self.component)?;
        writeln!(f, "  dtype:      {}", self.dtypes.join(", "))?;
        writeln!(
            f,
            "  size:       {} on disk, {} loaded on the CPU",
            gigabytes(self.file_bytes),
            gigabytes(self.loaded_bytes)
        )?;
        if self.parameters >= 1_000_000 {
            writeln!(f, "  parameters: {:.1} M", self.parameters as f64 / 1e6)?;
        } else {
            writeln!(f, "  parameters: {}", self.parameters)?;
        }
        if let Some(e) = &self.config_error {
            writeln!(f, "  config:     {e}")?;
        }
        if let Some(c) = &self.config {
            writeln!(
                f,
                "  config:     {} double + {} single blocks, hidden {}, {} heads, guidance embedding {}",
                c.depth,
                c.depth_single_blocks,
                c.hidden_size,
                c.num_heads,
                if c.guidance_embed {
                    "yes (dev-like)"
                } else {
                    "no (schnell-like)"
                }
            )?;
        }
        if !self.missing.is_empty() {
            write!(
                f,
                "  this file holds only part of a model; choose {} too",
                self.missing.join(", ")
            )?;
        }
        Ok(())
    }
}

fn gigabytes(bytes: u64) -> String {
    if bytes >= 100_000_000 {
        format!("{:.2} GB", bytes as f64 / 1e9)
    } else {
        format!("{:.2} MB", bytes as f64 / 1e6)
    }
}

/// Parts of a complete FLUX set, in the order a user is asked for them.
const PARTS: [&str; 3] = [
    "the FLUX transformer",
    "the VAE (ae.safetensors)",
    "the T5 encoder",
];

fn parts_of(c: &Component) -> Vec<&'static str> {
    match c {
        Component::Transformer(_) => vec![PARTS[0]],
        Component::Vae(_) => vec![PARTS[1]],
        Component::T5Encoder => vec![PARTS[2]],
        Component::Bundle(p) => p.iter().flat_map(parts_of).collect(),
        _ => vec![],
    }
}

/// Whether a path names a weight file Storyloom classifies, by its extension.
pub fn is_weight_file(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e == "safetensors" || e == "gguf")
}

/// Reads a file's header (safetensors or GGUF) and says what it is.
pub fn classify(path: &Path) -> Result<FileReport, WeightsError> {
    if is_gguf(path) {
        return Ok(classify_gguf(path, &read_gguf_header(path)?));
    }
    let header = read_header(path)?;
    let component = classify_header(&header);
    let (config, config_error) =
        transformer_config(&component, |layout| infer_config(&header, layout, None));
    let loaded_bytes = header
        .tensors
        .values()
        .map(|t| dtype_size(&t.dtype).unwrap_or(4) * t.numel() as u64)
        .sum();
    Ok(FileReport {
        path: path.into(),
        format: FileFormat::Safetensors,
        dtypes: header.dtypes(),
        parameters: header.parameter_count(),
        file_bytes: header.file_len,
        loaded_bytes,
        missing: missing_parts(&component),
        component,
        config,
        config_error,
    })
}

fn classify_gguf(path: &Path, header: &GgufHeader) -> FileReport {
    let component = gguf_weights::component(header);
    let (config, config_error) = transformer_config(&component, |_| {
        gguf_weights::infer_gguf_config(header, None)
    });
    FileReport {
        path: path.into(),
        format: FileFormat::Gguf {
            version: header.version,
            architecture: header.architecture().map(str::to_string),
            unsupported: gguf_weights::unsupported_types(header),
        },
        dtypes: gguf_weights::type_summary(header),
        parameters: header.parameter_count(),
        file_bytes: header.file_len,
        loaded_bytes: gguf_weights::resident_bytes(header, DType::F32),
        missing: missing_parts(&component),
        component,
        config,
        config_error,
    }
}

/// The configuration of a transformer file, or why it could not be inferred.
fn transformer_config(
    component: &Component,
    infer: impl FnOnce(Layout) -> Result<FluxConfig, WeightsError>,
) -> (Option<FluxConfig>, Option<String>) {
    match component {
        Component::Transformer(layout) => match infer(*layout) {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e.to_string())),
        },
        _ => (None, None),
    }
}

fn missing_parts(component: &Component) -> Vec<&'static str> {
    let have = parts_of(component);
    if have.is_empty() {
        return vec![];
    }
    PARTS
        .iter()
        .copied()
        .filter(|p| !have.contains(p))
        .collect()
}

/// Infers the transformer configuration from BFL-named shapes.
pub(super) fn infer_from_bfl_shapes(
    shape: &dyn Fn(&str) -> Option<Vec<usize>>,
    names: &BTreeSet<String>,
    axes_dim: Option<Vec<usize>>,
) -> Result<FluxConfig, WeightsError> {
    let need = |n: &str| shape(n).ok_or_else(|| WeightsError::MissingTensor { name: n.into() });
    let count = |prefix: &str| {
        names
            .iter()
            .filter_map(|n| {
                n.strip_prefix(prefix)?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |m| m + 1)
    };
    let img_in = need("img_in.weight")?;
    let hidden = img_in[0];
    let head_dim = need("double_blocks.0.img_attn.norm.query_norm.scale")
        .or_else(|_| need("single_blocks.0.norm.query_norm.scale"))?[0];
    let mlp = need("double_blocks.0.img_mlp.0.weight")
        .map(|s| s[0])
        .or_else(|_| need("single_blocks.0.linear1.weight").map(|s| s[0] - 3 * hidden))?;
    let axes_dim = match axes_dim {
        Some(a) => a,
        None if head_dim == 128 => vec![16, 56, 56],
        None => {
            return Err(WeightsError::Config(format!(
                "the RoPE axes of a {head_dim}-wide head are not stored in the weights; \
                 give them (config.json `axes_dims_rope` or metadata `{AXES_METADATA_KEY}`)"
            )));
        }
    };
    let cfg = FluxConfig {
        in_channels: img_in[1],
        vec_in_dim: need("vector_in.in_layer.weight")?[1],
        context_in_dim: need("txt_in.weight")?[1],
        hidden_size: hidden,
        mlp_ratio: mlp as f64 / hidden as f64,
        num_heads: hidden / head_dim.max(1),
        depth: count("double_blocks."),
        depth_single_blocks: count("single_blocks."),
        axes_dim,
        theta: 10_000.0,
        qkv_bias: names.contains("double_blocks.0.img_attn.qkv.bias")
            || (count("double_blocks.") == 0),
        guidance_embed: names.contains("guidance_in.in_layer.weight"),
    };
    cfg.validate().map_err(WeightsError::Config)?;
    Ok(cfg)
}

fn axes_from_metadata(header: &Header) -> Option<Vec<usize>> {
    let raw = header.metadata.get(AXES_METADATA_KEY)?;
    raw.split(',').map(|s| s.trim().parse().ok()).collect()
}

/// Infers the configuration of a transformer file from its header.
pub fn infer_config(
    header: &Header,
    layout: Layout,
    axes_dim: Option<Vec<usize>>,
) -> Result<FluxConfig, WeightsError> {
    let axes = axes_dim.or_else(|| axes_from_metadata(header));
    match layout {
        Layout::Bfl { prefixed } => {
            let strip = |n: &str| -> Option<String> {
                if prefixed {
                    n.strip_prefix(BFL_PREFIX).map(str::to_string)
                } else {
                    Some(n.to_string())
                }
            };
            let names: BTreeSet<String> = header.tensors.keys().filter_map(|n| strip(n)).collect();
            let prefix = if prefixed { BFL_PREFIX } else { "" };
            let shape = |n: &str| header.shape(&format!("{prefix}{n}")).map(<[usize]>::to_vec);
            infer_from_bfl_shapes(&shape, &names, axes)
        }
        Layout::Diffusers => {
            let map = diffusers_to_bfl_plan(header.tensors.keys().map(String::as_str));
            let names: BTreeSet<String> = map.keys().cloned().collect();
            let shape = |n: &str| {
                map.get(n)
                    .and_then(|src| src.shape(&|s| header.shape(s).map(<[usize]>::to_vec)))
            };
            infer_from_bfl_shapes(&shape, &names, axes)
        }
    }
}

/// How one BFL tensor is made from diffusers tensors.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The same tensor under another name.
    Rename(String),
    /// Several tensors concatenated along dim 0 (fused q/k/v, `linear1`).
    Concat(Vec<String>),
    /// The two halves along dim 0 swapped (diffusers' `norm_out.linear` is (scale, shift)).
    SwapHalves(String),
}

impl Source {
    fn inputs(&self) -> Vec<&str> {
        match self {
            Source::Rename(n) | Source::SwapHalves(n) => vec![n],
            Source::Concat(v) => v.iter().map(String::as_str).collect(),
        }
    }

    fn shape(&self, shape_of: &dyn Fn(&str) -> Option<Vec<usize>>) -> Option<Vec<usize>> {
        match self {
            Source::Rename(n) | Source::SwapHalves(n) => shape_of(n),
            Source::Concat(parts) => {
                let shapes: Option<Vec<Vec<usize>>> = parts.iter().map(|p| shape_of(p)).collect();
                let shapes = shapes?;
                let mut out = shapes.first()?.clone();
                out[0] = shapes.iter().map(|s| s[0]).sum();
                Some(out)
            }
        }
    }
}

/// The BFL name of every tensor a diffusers transformer provides, and how to build it.
/// Only sources whose inputs all exist are listed; what is absent shows up as missing later.
pub fn diffusers_to_bfl_plan<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<String, Source> {
    let names: BTreeSet<&str> = names.collect();
    let mut plan = HashMap::new();
    let mut add = |bfl: String, src: Source| {
        if src.inputs().iter().all(|n| names.contains(n)) {
            plan.insert(bfl, src);
        }
    };
    let rename = |s: &str| Source::Rename(s.to_string());
    for suffix in ["weight", "bias"] {
        let pairs = [
            ("img_in", "x_embedder"),
            ("txt_in", "context_embedder"),
            (
                "time_in.in_layer",
                "time_text_embed.timestep_embedder.linear_1",
            ),
            (
                "time_in.out_layer",
                "time_text_embed.timestep_embedder.linear_2",
            ),
            (
                "guidance_in.in_layer",
                "time_text_embed.guidance_embedder.linear_1",
            ),
            (
                "guidance_in.out_layer",
                "time_text_embed.guidance_embedder.linear_2",
            ),
            (
                "vector_in.in_layer",
                "time_text_embed.text_embedder.linear_1",
            ),
            (
                "vector_in.out_layer",
                "time_text_embed.text_embedder.linear_2",
            ),
            ("final_layer.linear", "proj_out"),
        ];
        for (bfl, d) in pairs {
            add(format!("{bfl}.{suffix}"), rename(&format!("{d}.{suffix}")));
        }
        add(
            format!("final_layer.adaLN_modulation.1.{suffix}"),
            Source::SwapHalves(format!("norm_out.linear.{suffix}")),
        );
    }
    let blocks = |prefix: &str| {
        names
            .iter()
            .filter_map(|n| {
                n.strip_prefix(prefix)?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .collect::<BTreeSet<usize>>()
    };
    for i in blocks("transformer_blocks.") {
        let d = format!("transformer_blocks.{i}");
        let b = format!("double_blocks.{i}");
        for suffix in ["weight", "bias"] {
            let s = suffix;
            add(
                format!("{b}.img_mod.lin.{s}"),
                rename(&format!("{d}.norm1.linear.{s}")),
            );
            add(
                format!("{b}.txt_mod.lin.{s}"),
                rename(&format!("{d}.norm1_context.linear.{s}")),
            );
            add(
                format!("{b}.img_attn.qkv.{s}"),
                Source::Concat(
                    ["to_q", "to_k", "to_v"]
                        .map(|p| format!("{d}.attn.{p}.{s}"))
                        .to_vec(),
                ),
            );
            add(
                format!("{b}.txt_attn.qkv.{s}"),
                Source::Concat(
                    ["add_q_proj", "add_k_proj", "add_v_proj"]
                        .map(|p| format!("{d}.attn.{p}.{s}"))
                        .to_vec(),
                ),
            );
            add(
                format!("{b}.img_attn.proj.{s}"),
                rename(&format!("{d}.attn.to_out.0.{s}")),
            );
            add(
                format!("{b}.txt_attn.proj.{s}"),
                rename(&format!("{d}.attn.to_add_out.{s}")),
            );
            add(
                format!("{b}.img_mlp.0.{s}"),
                rename(&format!("{d}.ff.net.0.proj.{s}")),
            );
            add(
                format!("{b}.img_mlp.2.{s}"),
                rename(&format!("{d}.ff.net.2.{s}")),
            );
            add(
                format!("{b}.txt_mlp.0.{s}"),
                rename(&format!("{d}.ff_context.net.0.proj.{s}")),
            );
            add(
                format!("{b}.txt_mlp.2.{s}"),
                rename(&format!("{d}.ff_context.net.2.{s}")),
            );
        }
        add(
            format!("{b}.img_attn.norm.query_norm.scale"),
            rename(&format!("{d}.attn.norm_q.weight")),
        );
        add(
            format!("{b}.img_attn.norm.key_norm.scale"),
            rename(&format!("{d}.attn.norm_k.weight")),
        );
        add(
            format!("{b}.txt_attn.norm.query_norm.scale"),
            rename(&format!("{d}.attn.norm_added_q.weight")),
        );
        add(
            format!("{b}.txt_attn.norm.key_norm.scale"),
            rename(&format!("{d}.attn.norm_added_k.weight")),
        );
    }
    for i in blocks("single_transformer_blocks.") {
        let d = format!("single_transformer_blocks.{i}");
        let b = format!("single_blocks.{i}");
        for s in ["weight", "bias"] {
            add(
                format!("{b}.modulation.lin.{s}"),
                rename(&format!("{d}.norm.linear.{s}")),
            );
            add(
                format!("{b}.linear1.{s}"),
                Source::Concat(
                    ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"]
                        .map(|p| format!("{d}.{p}.{s}"))
                        .to_vec(),
                ),
            );
            add(
                format!("{b}.linear2.{s}"),
                rename(&format!("{d}.proj_out.{s}")),
            );
        }
        add(
            format!("{b}.norm.query_norm.scale"),
            rename(&format!("{d}.attn.norm_q.weight")),
        );
        add(
            format!("{b}.norm.key_norm.scale"),
            rename(&format!("{d}.attn.norm_k.weight")),
        );
    }
    plan
}

/// Checks that every tensor the model reads is present with the right shape.
pub(super) fn check_tensors(
    cfg: &FluxConfig,
    shape_of: &dyn Fn(&str) -> Option<Vec<usize>>,
) -> Result<(), WeightsError> {
    for (name, expected) in expected_tensors(cfg)? {
        match shape_of(&name) {
            None => return Err(WeightsError::MissingTensor { name }),
            Some(got) if got != expected => {
                return Err(WeightsError::WrongShape {
                    name,
                    expected,
                    got,
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Where a transformer's tensors live.
#[derive(Debug, Clone)]
pub struct TransformerFiles {
    /// Safetensors files (several for a sharded diffusers folder), or one GGUF file.
    pub files: Vec<PathBuf>,
    pub quantized: bool,
    pub layout: Layout,
    /// `axes_dims_rope` of a diffusers config.json, when there is one.
    pub axes_dim: Option<Vec<usize>>,
    /// `prediction_type` of a diffusers config.json; FLUX's velocity when absent.
    pub prediction: Prediction,
}

/// Finds the transformer in a path: a single file, a diffusers `transformer/` folder, or a
/// diffusers pipeline folder containing one.
pub fn locate_transformer(path: &Path) -> Result<TransformerFiles, WeightsError> {
    if path.is_file() && is_gguf(path) {
        let header = read_gguf_header(path)?;
        return match gguf_weights::transformer_layout(&header) {
            Some(layout) => Ok(TransformerFiles {
                files: vec![path.into()],
                quantized: true,
                layout,
                axes_dim: None,
                prediction: Prediction::Velocity,
            }),
            None => Err(WeightsError::WrongComponent {
                path: path.into(),
                found: gguf_weights::component(&header),
                wanted: Component::Transformer(Layout::Bfl { prefixed: false }),
            }),
        };
    }
    if path.is_file() {
        let header = read_header(path)?;
        return match classify_header(&header) {
            Component::Transformer(layout) => Ok(TransformerFiles {
                files: vec![path.into()],
                quantized: false,
                layout,
                axes_dim: None,
                prediction: Prediction::Velocity,
            }),
            Component::Bundle(parts) => parts
                .into_iter()
                .find_map(|p| match p {
                    Component::Transformer(layout) => Some(TransformerFiles {
                        files: vec![path.into()],
                        quantized: false,
                        layout,
                        axes_dim: None,
                        prediction: Prediction::Velocity,
                    }),
                    _ => None,
                })
                .ok_or_else(|| WeightsError::WrongComponent {
                    path: path.into(),
                    found: classify_header(&header),
                    wanted: Component::Transformer(Layout::Diffusers),
                }),
            found => Err(WeightsError::WrongComponent {
                path: path.into(),
                found,
                wanted: Component::Transformer(Layout::Bfl { prefixed: false }),
            }),
        };
    }
    let dir = if path.join("transformer").is_dir() {
        path.join("transformer")
    } else {
        path.to_path_buf()
    };
    let bad = |reason: String| WeightsError::BadFolder {
        path: dir.clone(),
        reason,
    };
    let io = |source| WeightsError::Io {
        path: dir.clone(),
        source,
    };
    let DiffusersConfig {
        axes_dim,
        prediction,
    } = read_diffusers_config(&dir.join("config.json"))?;
    let index = dir.join("diffusion_pytorch_model.safetensors.index.json");
    let single = dir.join("diffusion_pytorch_model.safetensors");
    let files = if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(io)?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("index json is invalid: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("index json has no weight_map".into()))?;
        let shards: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
        shards.into_iter().map(|s| dir.join(s)).collect()
    } else if single.is_file() {
        vec![single]
    } else {
        return Err(bad(
            "no diffusion_pytorch_model.safetensors or index json found".into(),
        ));
    };
    Ok(TransformerFiles {
        files,
        quantized: false,
        layout: Layout::Diffusers,
        axes_dim,
        prediction,
    })
}

/// What Storyloom reads from a diffusers transformer's config.json.
#[derive(Debug, Default)]
struct DiffusersConfig {
    axes_dim: Option<Vec<usize>>,
    prediction: Prediction,
}

fn read_diffusers_config(path: &Path) -> Result<DiffusersConfig, WeightsError> {
    if !path.is_file() {
        return Ok(DiffusersConfig::default());
    }
    let text = std::fs::read_to_string(path).map_err(|source| WeightsError::Io {
        path: path.into(),
        source,
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| WeightsError::BadFolder {
            path: path.into(),
            reason: format!("invalid config.json: {e}"),
        })?;
    let axes_dim = json
        .get("axes_dims_rope")
        .and_then(|a| a.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64().map(|x| x as usize))
                .collect()
        });
    let prediction = match json.get("prediction_type").and_then(|p| p.as_str()) {
        None => Prediction::Velocity,
        Some(name) => Prediction::from_name(name).ok_or_else(|| WeightsError::BadFolder {
            path: path.into(),
            reason: format!(
                "prediction_type \"{name}\" is not supported (use \"velocity\" or \"sample\")"
            ),
        })?,
    };
    Ok(DiffusersConfig {
        axes_dim,
        prediction,
    })
}

/// Options of [`load_transformer`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub dtype: DType,
    pub device: Device,
    /// RoPE axes when neither the file nor a config.json says them.
    pub axes_dim: Option<Vec<usize>>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            axes_dim: None,
        }
    }
}

/// Loads a transformer from a file or folder (see [`locate_transformer`]).
pub fn load_transformer(path: &Path, opts: &LoadOptions) -> Result<FluxTransformer, WeightsError> {
    load_located_transformer(&locate_transformer(path)?, opts)
}

/// Loads a transformer from files [`locate_transformer`] found, for callers that also need
/// what else it read (such as `prediction`) without locating the files twice.
pub fn load_located_transformer(
    files: &TransformerFiles,
    opts: &LoadOptions,
) -> Result<FluxTransformer, WeightsError> {
    if files.quantized {
        let opts = LoadOptions {
            axes_dim: opts.axes_dim.clone().or(files.axes_dim.clone()),
            ..opts.clone()
        };
        return gguf_weights::load_gguf_transformer(&files.files[0], &opts);
    }
    let headers: Vec<Header> = files
        .files
        .iter()
        .map(|f| read_header(f))
        .collect::<Result<_, _>>()?;
    let mut merged = Header::default();
    for h in &headers {
        merged.tensors.extend(h.tensors.clone());
        merged.metadata.extend(h.metadata.clone());
    }
    let axes = opts.axes_dim.clone().or(files.axes_dim.clone());
    let cfg = infer_config(&merged, files.layout, axes)?;
    // Safety: the files are memory-mapped read-only; Storyloom never writes to weight files
    // while a model is loaded.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files.files)? };
    let shape_of_file = |n: &str| merged.shape(n).map(<[usize]>::to_vec);
    let vb = match files.layout {
        Layout::Bfl { prefixed } => {
            let prefix = if prefixed { BFL_PREFIX } else { "" };
            check_tensors(&cfg, &|n| shape_of_file(&format!("{prefix}{n}")))?;
            let vb = VarBuilder::from_backend(Box::new(st), opts.dtype, opts.device.clone());
            if prefixed {
                vb.pp("model.diffusion_model")
            } else {
                vb
            }
        }
        Layout::Diffusers => {
            let plan = diffusers_to_bfl_plan(merged.tensors.keys().map(String::as_str));
            check_tensors(&cfg, &|n| plan.get(n).and_then(|s| s.shape(&shape_of_file)))?;
            let tensors = build_from_plan(&plan, &st, opts)?;
            VarBuilder::from_tensors(tensors, opts.dtype, &opts.device)
        }
    };
    Ok(FluxTransformer::new(&cfg, vb)?)
}

/// Builds the BFL tensors of a diffusers checkpoint (fusing and swapping as planned).
fn build_from_plan(
    plan: &HashMap<String, Source>,
    st: &candle_core::safetensors::MmapedSafetensors,
    opts: &LoadOptions,
) -> Result<HashMap<String, Tensor>, WeightsError> {
    let load = |n: &str| -> Result<Tensor, WeightsError> {
        Ok(st.load(n, &opts.device)?.to_dtype(opts.dtype)?)
    };
    let mut out = HashMap::with_capacity(plan.len());
    for (bfl, src) in plan {
        let t = match src {
            Source::Rename(n) => load(n)?,
            Source::Concat(parts) => {
                let ts = parts
                    .iter()
                    .map(|p| load(p))
                    .collect::<Result<Vec<_>, _>>()?;
                Tensor::cat(&ts, 0)?
            }
            Source::SwapHalves(n) => {
                let t = load(n)?;
                let half = t.dim(0)? / 2;
                Tensor::cat(&[t.narrow(0, half, half)?, t.narrow(0, 0, half)?], 0)?
            }
        };
        out.insert(bfl.clone(), t);
    }
    Ok(out)
}
