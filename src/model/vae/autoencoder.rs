//! `FluxVae`: loading (BFL file or diffusers folder) and the latent <-> image maps.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

use super::config::{FLUX_NUM_GROUPS, FLUX_SCALE_FACTOR, FLUX_SHIFT_FACTOR, VaeConfig};
use super::error::VaeError;
use super::names::{VaeLayout, bfl_to_diffusers, diffusers_num_levels, diffusers_to_bfl};
use super::network::{Decoder, Encoder};

/// Weights file name inside a diffusers `vae/` folder.
pub const DIFFUSERS_WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";

/// Settings that tensor shapes cannot tell. `None` takes the value from a diffusers
/// `config.json` when there is one, else FLUX's (32 groups, scale 0.3611, shift 0.1159).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadOptions {
    pub num_groups: Option<usize>,
    pub scale_factor: Option<f64>,
    pub shift_factor: Option<f64>,
}

/// The FLUX autoencoder: model-space latents [B, z, h, w] <-> images [B, 3, f h, f w] in [-1, 1].
#[derive(Debug, Clone)]
pub struct FluxVae {
    cfg: VaeConfig,
    // Boxed so that a `FluxVae` is a few pointers wide and cheap to keep in enums.
    encoder: Box<Encoder>,
    decoder: Box<Decoder>,
    dtype: DType,
}

impl FluxVae {
    /// Load from a BFL `ae.safetensors` file (optionally under a prefix such as
    /// `first_stage_model.`), a diffusers `vae/` folder, or a diffusers pipeline folder holding
    /// `vae/`. Sizes are inferred from the tensor shapes.
    pub fn load(path: &Path, dtype: DType, device: &Device) -> Result<Self, VaeError> {
        Self::load_with(path, &LoadOptions::default(), dtype, device)
    }

    pub fn load_with(
        path: &Path,
        options: &LoadOptions,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, VaeError> {
        let (weights, config_json) = locate_files(path)?;
        let json = match &config_json {
            Some(p) => read_diffusers_config(p)?,
            None => DiffusersConfig::default(),
        };
        // SAFETY: the file is mapped read-only; Storyloom never writes weight files while they are open.
        let safetensors = unsafe { MmapedSafetensors::new(&weights) }.map_err(|e| {
            VaeError::InvalidSafetensors {
                path: weights.clone(),
                message: e.to_string(),
            }
        })?;
        let shapes: Vec<(String, Vec<usize>)> = safetensors
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, view.shape().to_vec()))
            .collect();
        let index = TensorIndex::new(&shapes).ok_or_else(|| VaeError::NotAnAutoencoder {
            path: weights.clone(),
        })?;

        let cfg = VaeConfig::infer(
            &index.bfl_shapes(),
            options
                .num_groups
                .or(json.num_groups)
                .unwrap_or(FLUX_NUM_GROUPS),
            options
                .scale_factor
                .or(json.scale_factor)
                .unwrap_or(FLUX_SCALE_FACTOR),
            options
                .shift_factor
                .or(json.shift_factor)
                .unwrap_or(FLUX_SHIFT_FACTOR),
        )
        .map_err(|e| index.rename_error(e))?;
        index.validate(&cfg)?;

        let vb = VarBuilder::from_backend(Box::new(safetensors), dtype, device.clone());
        let renames = index.bfl_to_source;
        let vb = vb.rename_f(move |bfl: &str| {
            renames.get(bfl).cloned().unwrap_or_else(|| bfl.to_string())
        });
        Ok(Self::build(cfg, vb)?)
    }

    /// Build from any `VarBuilder` holding the tensors in `layout` names (no prefix).
    pub fn from_varbuilder(
        cfg: VaeConfig,
        vb: VarBuilder,
        layout: VaeLayout,
    ) -> candle_core::Result<Self> {
        match layout {
            VaeLayout::Bfl => Self::build(cfg, vb),
            VaeLayout::Diffusers => {
                let levels = cfg.num_levels();
                let vb = vb.rename_f(move |bfl: &str| bfl_to_diffusers(bfl, levels));
                Self::build(cfg, vb)
            }
        }
    }

    fn build(cfg: VaeConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let dtype = vb.dtype();
        Ok(Self {
            encoder: Box::new(Encoder::new(&cfg, vb.pp("encoder"))?),
            decoder: Box::new(Decoder::new(&cfg, vb.pp("decoder"))?),
            cfg,
            dtype,
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Model-space latents [B, z, h, w] -> image [B, 3, f h, f w], roughly in [-1, 1]
    /// (f = 8 for FLUX). Undoes the latent normalisation first: `z / scale + shift`.
    pub fn decode(&self, latents: &Tensor) -> candle_core::Result<Tensor> {
        self.check_channels(latents, self.cfg.z_channels, "latents")?;
        let z = ((latents.to_dtype(self.dtype)? / self.cfg.scale_factor)? + self.cfg.shift_factor)?;
        self.decoder.forward(&z)
    }

    /// Image [B, 3, H, W] in [-1, 1] (H, W multiples of f) -> model-space latents
    /// `(mean - shift) * scale`. Deterministic: the posterior's mean, never a sample.
    pub fn encode(&self, image: &Tensor) -> candle_core::Result<Tensor> {
        self.check_channels(image, self.cfg.in_channels, "image")?;
        let (_, _, h, w) = image.dims4()?;
        let f = self.cfg.downscale();
        if h % f != 0 || w % f != 0 {
            candle_core::bail!("image size {h}x{w} is not a multiple of the autoencoder's {f}");
        }
        let moments = self.encoder.forward(&image.to_dtype(self.dtype)?)?;
        // Moments are (mean, log-variance) stacked on the channels.
        let mean = moments.narrow(1, 0, self.cfg.z_channels)?;
        (mean - self.cfg.shift_factor)? * self.cfg.scale_factor
    }

    fn check_channels(&self, t: &Tensor, channels: usize, what: &str) -> candle_core::Result<()> {
        match t.dims() {
            [_, c, _, _] if *c == channels => Ok(()),
            dims => candle_core::bail!("{what} must be [B, {channels}, H, W], got {dims:?}"),
        }
    }
}

/// The weights file and, for diffusers, its `config.json`.
fn locate_files(path: &Path) -> Result<(PathBuf, Option<PathBuf>), VaeError> {
    let io_error = |source| VaeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io_error)?;
    if meta.is_dir() {
        let folder = if path.join("vae").is_dir() {
            path.join("vae")
        } else {
            path.to_path_buf()
        };
        let weights = folder.join(DIFFUSERS_WEIGHTS_FILE);
        if !weights.is_file() {
            return Err(VaeError::UnsupportedFile {
                path: folder,
                reason: format!("folder has no {DIFFUSERS_WEIGHTS_FILE}"),
            });
        }
        let config = folder.join("config.json");
        return Ok((weights, config.is_file().then_some(config)));
    }
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match extension.as_str() {
        "safetensors" => {
            let sibling = path.with_file_name("config.json");
            let is_diffusers_file =
                path.file_name().and_then(|n| n.to_str()) == Some(DIFFUSERS_WEIGHTS_FILE);
            Ok((
                path.to_path_buf(),
                (is_diffusers_file && sibling.is_file()).then_some(sibling),
            ))
        }
        "ckpt" | "pt" | "pth" | "bin" => Err(VaeError::UnsupportedFile {
            path: path.to_path_buf(),
            reason: "pickle checkpoints can run code when opened and are refused; convert to .safetensors".to_string(),
        }),
        _ => Err(VaeError::UnsupportedFile {
            path: path.to_path_buf(),
            reason: "expected a .safetensors file or a diffusers vae folder".to_string(),
        }),
    }
}

#[derive(Debug, Default)]
struct DiffusersConfig {
    num_groups: Option<usize>,
    scale_factor: Option<f64>,
    shift_factor: Option<f64>,
}

fn read_diffusers_config(path: &Path) -> Result<DiffusersConfig, VaeError> {
    let bad = |message: String| VaeError::BadConfig {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| VaeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let number = |key: &str| -> Result<Option<f64>, VaeError> {
        match value.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| bad(format!("`{key}` is not a number"))),
        }
    };
    let num_groups = match number("norm_num_groups")? {
        Some(g) if g >= 1.0 && g.fract() == 0.0 => Some(g as usize),
        Some(g) => return Err(bad(format!("`norm_num_groups` = {g} is not a count"))),
        None => None,
    };
    Ok(DiffusersConfig {
        num_groups,
        scale_factor: number("scaling_factor")?,
        shift_factor: number("shift_factor")?,
    })
}

/// The autoencoder tensors of a file, keyed by BFL name.
struct TensorIndex {
    layout: VaeLayout,
    prefix: String,
    num_levels: usize,
    bfl_to_source: HashMap<String, String>,
    shapes: HashMap<String, Vec<usize>>,
}

impl TensorIndex {
    /// `None` when no name looks like an autoencoder tensor.
    fn new(tensors: &[(String, Vec<usize>)]) -> Option<Self> {
        let (prefix, layout) = tensors.iter().find_map(|(name, _)| find_prefix(name))?;
        let own: Vec<(&str, &Vec<usize>)> = tensors
            .iter()
            .filter_map(|(n, s)| Some((n.strip_prefix(prefix.as_str())?, s)))
            .collect();
        let num_levels = match layout {
            VaeLayout::Diffusers => diffusers_num_levels(own.iter().map(|(n, _)| *n)),
            VaeLayout::Bfl => (0..)
                .take_while(|i| {
                    own.iter()
                        .any(|(n, _)| n.starts_with(&format!("encoder.down.{i}.")))
                })
                .count(),
        };
        let mut bfl_to_source = HashMap::new();
        let mut shapes = HashMap::new();
        for (name, shape) in own {
            let bfl = match layout {
                VaeLayout::Bfl => Some(name.to_string()),
                VaeLayout::Diffusers => diffusers_to_bfl(name, num_levels),
            };
            if let Some(bfl) = bfl {
                bfl_to_source.insert(bfl.clone(), format!("{prefix}{name}"));
                shapes.insert(bfl, shape.clone());
            } else {
                shapes.insert(format!("unmapped:{name}"), shape.clone());
            }
        }
        Some(Self {
            layout,
            prefix,
            num_levels,
            bfl_to_source,
            shapes,
        })
    }

    fn bfl_shapes(&self) -> HashMap<String, Vec<usize>> {
        self.shapes
            .iter()
            .filter(|(k, _)| !k.starts_with("unmapped:"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A BFL name as the file would spell it.
    fn source_name(&self, bfl: &str) -> String {
        if let Some(source) = self.bfl_to_source.get(bfl) {
            return source.clone();
        }
        match self.layout {
            VaeLayout::Bfl => format!("{}{bfl}", self.prefix),
            VaeLayout::Diffusers => {
                format!("{}{}", self.prefix, bfl_to_diffusers(bfl, self.num_levels))
            }
        }
    }

    fn rename_error(&self, e: VaeError) -> VaeError {
        match e {
            VaeError::MissingTensor { name } => VaeError::MissingTensor {
                name: self.source_name(&name),
            },
            other => other,
        }
    }

    /// Every tensor the network needs is there with the right shape, and nothing that would
    /// change the computation is left unused.
    fn validate(&self, cfg: &VaeConfig) -> Result<(), VaeError> {
        for name in self.shapes.keys() {
            if let Some(unmapped) = name.strip_prefix("unmapped:")
                && (unmapped.starts_with("quant_conv.") || unmapped.starts_with("post_quant_conv."))
            {
                return Err(VaeError::UnsupportedTensor {
                    name: format!("{}{unmapped}", self.prefix),
                    reason: "FLUX autoencoders have no quant convolutions".to_string(),
                });
            }
        }
        for (bfl, expected) in cfg.expected_tensors() {
            let Some(found) = self.shapes.get(&bfl) else {
                return Err(VaeError::MissingTensor {
                    name: self.source_name(&bfl),
                });
            };
            // diffusers stores the attention projections as [C, C] linears.
            let is_attention_linear = bfl.contains(".attn_1.") && expected.len() == 4;
            let matches =
                found == &expected || (is_attention_linear && found.as_slice() == &expected[..2]);
            if !matches {
                return Err(VaeError::WrongShape {
                    name: self.source_name(&bfl),
                    expected,
                    found: found.clone(),
                });
            }
        }
        Ok(())
    }
}

/// The prefix before `encoder.`/`decoder.` and the layout, if `name` is an autoencoder tensor.
fn find_prefix(name: &str) -> Option<(String, VaeLayout)> {
    let mut start = 0;
    loop {
        let rest = &name[start..];
        if let Some(layout) = VaeLayout::of_name(rest) {
            return Some((name[..start].to_string(), layout));
        }
        start += rest.find('.')? + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_found_at_segment_boundaries() {
        assert_eq!(
            find_prefix("first_stage_model.decoder.up.0.block.0.conv1.weight"),
            Some(("first_stage_model.".to_string(), VaeLayout::Bfl))
        );
        assert_eq!(
            find_prefix("encoder.down_blocks.0.resnets.0.conv1.weight"),
            Some((String::new(), VaeLayout::Diffusers))
        );
        assert_eq!(find_prefix("double_blocks.0.img_attn.qkv.weight"), None);
        assert_eq!(find_prefix("text_encoder.layers.0.weight"), None);
    }

    #[test]
    fn diffusers_index_maps_names_and_spots_quant_convs() {
        let cfg = VaeConfig {
            in_channels: 3,
            out_channels: 3,
            ch: 4,
            ch_mult: vec![1, 2],
            num_res_blocks: 1,
            z_channels: 2,
            num_groups: 2,
            scale_factor: 1.0,
            shift_factor: 0.0,
        };
        let mut tensors: Vec<(String, Vec<usize>)> = cfg
            .expected_tensors()
            .into_iter()
            .map(|(n, s)| (format!("vae.{}", bfl_to_diffusers(&n, 2)), s))
            .collect();
        let index = TensorIndex::new(&tensors).unwrap();
        assert_eq!(index.layout, VaeLayout::Diffusers);
        assert_eq!(index.num_levels, 2);
        index.validate(&cfg).unwrap();
        assert_eq!(
            index.source_name("decoder.up.1.block.0.conv1.weight"),
            "vae.decoder.up_blocks.0.resnets.0.conv1.weight"
        );

        tensors.push(("vae.quant_conv.weight".to_string(), vec![4, 4, 1, 1]));
        let err = TensorIndex::new(&tensors)
            .unwrap()
            .validate(&cfg)
            .unwrap_err();
        assert!(err.to_string().contains("vae.quant_conv.weight"), "{err}");
    }

    #[test]
    fn diffusers_config_values_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(
            &p,
            r#"{"norm_num_groups": 4, "scaling_factor": 0.5, "shift_factor": null}"#,
        )
        .unwrap();
        let c = read_diffusers_config(&p).unwrap();
        assert_eq!(
            (c.num_groups, c.scale_factor, c.shift_factor),
            (Some(4), Some(0.5), None)
        );
        std::fs::write(&p, r#"{"norm_num_groups": 2.5}"#).unwrap();
        assert!(read_diffusers_config(&p).is_err());
    }
}
