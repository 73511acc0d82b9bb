//! Autoencoder sizes, inferred from tensor shapes so that any FLUX-shaped autoencoder loads.

use std::collections::HashMap;

use super::error::VaeError;

/// FLUX.1 latent scale and shift: model-space latents are `(z - shift) * scale`.
pub const FLUX_SCALE_FACTOR: f64 = 0.3611;
pub const FLUX_SHIFT_FACTOR: f64 = 0.1159;
/// Group-norm groups of the FLUX autoencoder (the number cannot be read from tensor shapes).
pub const FLUX_NUM_GROUPS: usize = 32;

/// Sizes of a FLUX-style autoencoder (BFL `AutoEncoderParams` plus the group count).
#[derive(Debug, Clone, PartialEq)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Channels of the first level; level `i` has `ch * ch_mult[i]`.
    pub ch: usize,
    pub ch_mult: Vec<usize>,
    /// Resnet blocks per encoder level (the decoder has one more per level).
    pub num_res_blocks: usize,
    pub z_channels: usize,
    pub num_groups: usize,
    pub scale_factor: f64,
    pub shift_factor: f64,
}

impl VaeConfig {
    /// The FLUX.1 dev/schnell autoencoder.
    pub fn flux() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            ch: 128,
            ch_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            z_channels: 16,
            num_groups: FLUX_NUM_GROUPS,
            scale_factor: FLUX_SCALE_FACTOR,
            shift_factor: FLUX_SHIFT_FACTOR,
        }
    }

    pub fn num_levels(&self) -> usize {
        self.ch_mult.len()
    }

    /// Pixels per latent along each side: one halving per level but the last.
    pub fn downscale(&self) -> usize {
        1 << self.num_levels().saturating_sub(1)
    }

    /// Channels of level `i`.
    pub fn level_channels(&self, level: usize) -> usize {
        self.ch * self.ch_mult[level]
    }

    /// Infer the sizes from tensor shapes given in BFL names. `num_groups`, `scale_factor` and
    /// `shift_factor` are not visible in shapes and are passed in.
    pub fn infer(
        shapes: &HashMap<String, Vec<usize>>,
        num_groups: usize,
        scale_factor: f64,
        shift_factor: f64,
    ) -> Result<Self, VaeError> {
        let shape = |name: &str, rank: usize| -> Result<&[usize], VaeError> {
            let s = shapes.get(name).ok_or_else(|| VaeError::MissingTensor {
                name: name.to_string(),
            })?;
            if s.len() != rank {
                return Err(VaeError::Inconsistent(format!(
                    "`{name}` has shape {s:?}, expected {rank} dimensions"
                )));
            }
            Ok(s)
        };
        let conv_in = shape("encoder.conv_in.weight", 4)?;
        let (ch, in_channels) = (conv_in[0], conv_in[1]);
        let num_levels = (0..)
            .take_while(|i| shapes.contains_key(&format!("encoder.down.{i}.block.0.conv1.weight")))
            .count();
        if num_levels == 0 {
            return Err(VaeError::MissingTensor {
                name: "encoder.down.0.block.0.conv1.weight".to_string(),
            });
        }
        let num_res_blocks = (0..)
            .take_while(|j| shapes.contains_key(&format!("encoder.down.0.block.{j}.conv1.weight")))
            .count();
        let mut ch_mult = Vec::with_capacity(num_levels);
        for level in 0..num_levels {
            let out = shape(&format!("encoder.down.{level}.block.0.conv1.weight"), 4)?[0];
            if ch == 0 || out % ch != 0 {
                return Err(VaeError::Inconsistent(format!(
                    "level {level} has {out} channels, not a multiple of the first level's {ch}"
                )));
            }
            ch_mult.push(out / ch);
        }
        let z_channels = shape("decoder.conv_in.weight", 4)?[1];
        let out_channels = shape("decoder.conv_out.weight", 4)?[0];
        let cfg = Self {
            in_channels,
            out_channels,
            ch,
            ch_mult,
            num_res_blocks,
            z_channels,
            num_groups,
            scale_factor,
            shift_factor,
        };
        cfg.check_groups()?;
        Ok(cfg)
    }

    /// Every channel count must split into `num_groups` equal groups.
    pub fn check_groups(&self) -> Result<(), VaeError> {
        let widths = (0..self.num_levels()).map(|l| self.level_channels(l));
        for c in std::iter::once(self.ch).chain(widths) {
            if self.num_groups == 0 || c % self.num_groups != 0 {
                return Err(VaeError::Inconsistent(format!(
                    "{c} channels cannot be split into {} group-norm groups",
                    self.num_groups
                )));
            }
        }
        Ok(())
    }

    /// Every tensor of the network with its shape, in BFL names (attention projections as
    /// 1x1 convolutions, as `ae.safetensors` stores them).
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let mut list = TensorList::default();
        let last = self.level_channels(self.num_levels() - 1);

        list.conv("encoder.conv_in", self.ch, self.in_channels, 3);
        let mut c_in = self.ch;
        for level in 0..self.num_levels() {
            let c_out = self.level_channels(level);
            for j in 0..self.num_res_blocks {
                list.resnet(&format!("encoder.down.{level}.block.{j}"), c_in, c_out);
                c_in = c_out;
            }
            if level + 1 != self.num_levels() {
                list.conv(
                    &format!("encoder.down.{level}.downsample.conv"),
                    c_out,
                    c_out,
                    3,
                );
            }
        }
        for side in ["encoder", "decoder"] {
            list.resnet(&format!("{side}.mid.block_1"), last, last);
            list.norm(&format!("{side}.mid.attn_1.norm"), last);
            for part in ["q", "k", "v", "proj_out"] {
                list.conv(&format!("{side}.mid.attn_1.{part}"), last, last, 1);
            }
            list.resnet(&format!("{side}.mid.block_2"), last, last);
        }
        list.norm("encoder.norm_out", last);
        list.conv("encoder.conv_out", 2 * self.z_channels, last, 3);

        list.conv("decoder.conv_in", last, self.z_channels, 3);
        let mut c_in = last;
        for level in (0..self.num_levels()).rev() {
            let c_out = self.level_channels(level);
            for j in 0..=self.num_res_blocks {
                list.resnet(&format!("decoder.up.{level}.block.{j}"), c_in, c_out);
                c_in = c_out;
            }
            if level != 0 {
                list.conv(
                    &format!("decoder.up.{level}.upsample.conv"),
                    c_out,
                    c_out,
                    3,
                );
            }
        }
        list.norm("decoder.norm_out", self.ch);
        list.conv("decoder.conv_out", self.out_channels, self.ch, 3);
        list.0
    }
}

#[derive(Default)]
struct TensorList(Vec<(String, Vec<usize>)>);

impl TensorList {
    fn conv(&mut self, name: &str, c_out: usize, c_in: usize, kernel: usize) {
        self.0
            .push((format!("{name}.weight"), vec![c_out, c_in, kernel, kernel]));
        self.0.push((format!("{name}.bias"), vec![c_out]));
    }

    fn norm(&mut self, name: &str, channels: usize) {
        self.0.push((format!("{name}.weight"), vec![channels]));
        self.0.push((format!("{name}.bias"), vec![channels]));
    }

    fn resnet(&mut self, name: &str, c_in: usize, c_out: usize) {
        self.norm(&format!("{name}.norm1"), c_in);
        self.conv(&format!("{name}.conv1"), c_out, c_in, 3);
        self.norm(&format!("{name}.norm2"), c_out);
        self.conv(&format!("{name}.conv2"), c_out, c_out, 3);
        if c_in != c_out {
            self.conv(&format!("{name}.nin_shortcut"), c_out, c_in, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> VaeConfig {
        VaeConfig {
            in_channels: 3,
            out_channels: 3,
            ch: 8,
            ch_mult: vec![1, 2],
            num_res_blocks: 1,
            z_channels: 16,
            num_groups: 4,
            scale_factor: FLUX_SCALE_FACTOR,
            shift_factor: FLUX_SHIFT_FACTOR,
        }
    }

    fn shapes(cfg: &VaeConfig) -> HashMap<String, Vec<usize>> {
        cfg.expected_tensors().into_iter().collect()
    }

    #[test]
    fn flux_has_factor_eight_and_the_released_tensor_count() {
        let cfg = VaeConfig::flux();
        assert_eq!(cfg.downscale(), 8);
        // diffusers AutoencoderKL with the FLUX.1 config (no quant convs) has 244 tensors.
        assert_eq!(cfg.expected_tensors().len(), 244);
    }

    #[test]
    fn tiny_count_by_hand() {
        // Encoder: conv_in 2, level 0: resnet 8 + downsample 2, level 1: resnet 8 + shortcut 2,
        // mid 8 + 10 + 8, norm_out 2, conv_out 2 = 52. Decoder: conv_in 2, mid 26,
        // level 1: 2 resnets 16 + upsample 2, level 0: 2 resnets with a shortcut on the first 18,
        // norm_out 2, conv_out 2 = 68.
        assert_eq!(tiny().expected_tensors().len(), 52 + 68);
        assert_eq!(tiny().downscale(), 2);
    }

    #[test]
    fn infer_recovers_the_sizes() {
        for cfg in [tiny(), VaeConfig::flux()] {
            let inferred = VaeConfig::infer(
                &shapes(&cfg),
                cfg.num_groups,
                cfg.scale_factor,
                cfg.shift_factor,
            )
            .unwrap();
            assert_eq!(inferred, cfg);
        }
    }

    #[test]
    fn infer_rejects_groups_that_do_not_divide() {
        let err = VaeConfig::infer(&shapes(&tiny()), 32, 1.0, 0.0).unwrap_err();
        assert!(err.to_string().contains("32 group-norm groups"), "{err}");
    }

    #[test]
    fn infer_names_a_missing_tensor() {
        let mut s = shapes(&tiny());
        s.remove("decoder.conv_in.weight");
        let err = VaeConfig::infer(&s, 4, 1.0, 0.0).unwrap_err();
        assert!(err.to_string().contains("decoder.conv_in.weight"), "{err}");
    }
}
