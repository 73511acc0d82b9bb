//! Tensor names of the two autoencoder layouts.
//!
//! The network is built with Black Forest Labs names (`ae.safetensors`); diffusers `vae/` folders
//! are read through a renaming. Differences: diffusers says `down_blocks.{i}.resnets.{j}` for
//! `down.{i}.block.{j}`, `conv_shortcut` for `nin_shortcut`, `conv_norm_out` for `norm_out`,
//! `mid_block.resnets.{0,1}` / `mid_block.attentions.0` for `mid.block_{1,2}` / `mid.attn_1`, and
//! counts decoder levels from the lowest resolution (`up_blocks.0` is BFL's last `up` level).

/// How the tensors of an autoencoder file are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaeLayout {
    /// Black Forest Labs `ae.safetensors` names (`encoder.down.0.block.0.conv1.weight`).
    Bfl,
    /// diffusers `AutoencoderKL` names (`encoder.down_blocks.0.resnets.0.conv1.weight`).
    Diffusers,
}

impl VaeLayout {
    /// Guess the layout from one tensor name; `None` if the name belongs to neither.
    pub fn of_name(name: &str) -> Option<Self> {
        let rest = name
            .strip_prefix("encoder.")
            .or_else(|| name.strip_prefix("decoder."))?;
        if rest.starts_with("down.") || rest.starts_with("up.") || rest.starts_with("mid.") {
            Some(Self::Bfl)
        } else if rest.starts_with("down_blocks.")
            || rest.starts_with("up_blocks.")
            || rest.starts_with("mid_block.")
        {
            Some(Self::Diffusers)
        } else {
            None
        }
    }
}

/// BFL attention part -> diffusers attention part.
const ATTENTION_PARTS: [(&str, &str); 5] = [
    ("norm", "group_norm"),
    ("q", "to_q"),
    ("k", "to_k"),
    ("v", "to_v"),
    ("proj_out", "to_out.0"),
];

/// Older diffusers checkpoints name the mid-block attention differently.
const LEGACY_ATTENTION_PARTS: [(&str, &str); 4] = [
    ("q", "query"),
    ("k", "key"),
    ("v", "value"),
    ("proj_out", "proj_attn"),
];

fn resnet_part_to_diffusers(part: &str) -> &str {
    match part {
        "nin_shortcut" => "conv_shortcut",
        other => other,
    }
}

fn resnet_part_to_bfl(part: &str) -> &str {
    match part {
        "conv_shortcut" => "nin_shortcut",
        other => other,
    }
}

/// Split "side.rest" where side is encoder or decoder.
fn split_side(name: &str) -> Option<(&str, &str)> {
    let (side, rest) = name.split_once('.')?;
    matches!(side, "encoder" | "decoder").then_some((side, rest))
}

/// BFL name -> diffusers name. `num_levels` is the length of `ch_mult`. Names that are the same in
/// both layouts (`conv_in`, `conv_out`) and unknown names are returned unchanged.
pub fn bfl_to_diffusers(name: &str, num_levels: usize) -> String {
    let Some((side, rest)) = split_side(name) else {
        return name.to_string();
    };
    let parts: Vec<&str> = rest.split('.').collect();
    let mapped = match parts.as_slice() {
        ["norm_out", param] => format!("conv_norm_out.{param}"),
        ["down", level, "block", j, part, param] => format!(
            "down_blocks.{level}.resnets.{j}.{}.{param}",
            resnet_part_to_diffusers(part)
        ),
        ["down", level, "downsample", "conv", param] => {
            format!("down_blocks.{level}.downsamplers.0.conv.{param}")
        }
        ["up", level, "block", j, part, param] => match diffusers_up_index(level, num_levels) {
            Some(i) => format!(
                "up_blocks.{i}.resnets.{j}.{}.{param}",
                resnet_part_to_diffusers(part)
            ),
            None => rest.to_string(),
        },
        ["up", level, "upsample", "conv", param] => match diffusers_up_index(level, num_levels) {
            Some(i) => format!("up_blocks.{i}.upsamplers.0.conv.{param}"),
            None => rest.to_string(),
        },
        ["mid", block @ ("block_1" | "block_2"), part, param] => {
            let index = if *block == "block_1" { 0 } else { 1 };
            format!(
                "mid_block.resnets.{index}.{}.{param}",
                resnet_part_to_diffusers(part)
            )
        }
        ["mid", "attn_1", part, param] => match ATTENTION_PARTS.iter().find(|(b, _)| b == part) {
            Some((_, d)) => format!("mid_block.attentions.0.{d}.{param}"),
            None => rest.to_string(),
        },
        _ => rest.to_string(),
    };
    format!("{side}.{mapped}")
}

fn diffusers_up_index(bfl_level: &str, num_levels: usize) -> Option<usize> {
    let level: usize = bfl_level.parse().ok()?;
    (level < num_levels).then(|| num_levels - 1 - level)
}

/// diffusers name -> BFL name, or `None` for a name that is not part of a FLUX autoencoder.
/// `num_levels` is the number of `down_blocks`.
pub fn diffusers_to_bfl(name: &str, num_levels: usize) -> Option<String> {
    let (side, rest) = split_side(name)?;
    let parts: Vec<&str> = rest.split('.').collect();
    let bfl_up_level = |i: &str| -> Option<usize> {
        let i: usize = i.parse().ok()?;
        (i < num_levels).then(|| num_levels - 1 - i)
    };
    let mapped = match parts.as_slice() {
        [part @ ("conv_in" | "conv_out"), param] => format!("{part}.{param}"),
        ["conv_norm_out", param] => format!("norm_out.{param}"),
        ["down_blocks", level, "resnets", j, part, param] => {
            format!(
                "down.{level}.block.{j}.{}.{param}",
                resnet_part_to_bfl(part)
            )
        }
        ["down_blocks", level, "downsamplers", "0", "conv", param] => {
            format!("down.{level}.downsample.conv.{param}")
        }
        ["up_blocks", i, "resnets", j, part, param] => format!(
            "up.{}.block.{j}.{}.{param}",
            bfl_up_level(i)?,
            resnet_part_to_bfl(part)
        ),
        ["up_blocks", i, "upsamplers", "0", "conv", param] => {
            format!("up.{}.upsample.conv.{param}", bfl_up_level(i)?)
        }
        ["mid_block", "resnets", index @ ("0" | "1"), part, param] => {
            let block = if *index == "0" { "block_1" } else { "block_2" };
            format!("mid.{block}.{}.{param}", resnet_part_to_bfl(part))
        }
        ["mid_block", "attentions", "0", "to_out", "0", param] => {
            format!("mid.attn_1.proj_out.{param}")
        }
        ["mid_block", "attentions", "0", part, param] => {
            let bfl = ATTENTION_PARTS
                .iter()
                .chain(LEGACY_ATTENTION_PARTS.iter())
                .find(|(_, d)| d == part)?
                .0;
            format!("mid.attn_1.{bfl}.{param}")
        }
        _ => return None,
    };
    Some(format!("{side}.{mapped}"))
}

/// Number of resolution levels of a diffusers autoencoder, from its `encoder.down_blocks.{i}` names.
pub fn diffusers_num_levels<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names
        .filter_map(|n| n.strip_prefix("encoder.down_blocks."))
        .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_levels_are_counted_from_opposite_ends() {
        assert_eq!(
            bfl_to_diffusers("decoder.up.3.block.2.conv1.weight", 4),
            "decoder.up_blocks.0.resnets.2.conv1.weight"
        );
        assert_eq!(
            bfl_to_diffusers("decoder.up.1.upsample.conv.bias", 4),
            "decoder.up_blocks.2.upsamplers.0.conv.bias"
        );
        assert_eq!(
            diffusers_to_bfl("decoder.up_blocks.0.resnets.2.conv1.weight", 4).as_deref(),
            Some("decoder.up.3.block.2.conv1.weight")
        );
    }

    #[test]
    fn renamed_parts() {
        assert_eq!(
            bfl_to_diffusers("encoder.down.1.block.0.nin_shortcut.weight", 4),
            "encoder.down_blocks.1.resnets.0.conv_shortcut.weight"
        );
        assert_eq!(
            bfl_to_diffusers("encoder.norm_out.bias", 4),
            "encoder.conv_norm_out.bias"
        );
        assert_eq!(
            bfl_to_diffusers("decoder.mid.block_2.norm1.weight", 4),
            "decoder.mid_block.resnets.1.norm1.weight"
        );
        assert_eq!(
            bfl_to_diffusers("decoder.mid.attn_1.proj_out.weight", 4),
            "decoder.mid_block.attentions.0.to_out.0.weight"
        );
        assert_eq!(
            bfl_to_diffusers("encoder.mid.attn_1.norm.weight", 4),
            "encoder.mid_block.attentions.0.group_norm.weight"
        );
        assert_eq!(
            bfl_to_diffusers("encoder.down.0.downsample.conv.weight", 4),
            "encoder.down_blocks.0.downsamplers.0.conv.weight"
        );
        assert_eq!(
            bfl_to_diffusers("encoder.conv_in.weight", 4),
            "encoder.conv_in.weight"
        );
    }

    #[test]
    fn every_bfl_name_round_trips() {
        let names = [
            "encoder.conv_in.weight",
            "encoder.down.0.block.1.norm2.bias",
            "encoder.down.2.block.0.nin_shortcut.bias",
            "encoder.down.2.downsample.conv.weight",
            "encoder.mid.block_1.conv2.weight",
            "encoder.mid.attn_1.q.weight",
            "encoder.mid.attn_1.norm.bias",
            "encoder.norm_out.weight",
            "encoder.conv_out.bias",
            "decoder.conv_in.weight",
            "decoder.mid.attn_1.proj_out.bias",
            "decoder.up.0.block.2.conv2.weight",
            "decoder.up.3.upsample.conv.weight",
            "decoder.norm_out.bias",
            "decoder.conv_out.weight",
        ];
        for name in names {
            let diffusers = bfl_to_diffusers(name, 4);
            assert_eq!(
                diffusers_to_bfl(&diffusers, 4).as_deref(),
                Some(name),
                "{diffusers}"
            );
        }
    }

    #[test]
    fn legacy_attention_names_and_foreign_names() {
        assert_eq!(
            diffusers_to_bfl("decoder.mid_block.attentions.0.proj_attn.weight", 4).as_deref(),
            Some("decoder.mid.attn_1.proj_out.weight")
        );
        assert_eq!(diffusers_to_bfl("quant_conv.weight", 4), None);
        assert_eq!(
            diffusers_to_bfl("encoder.up_blocks.9.resnets.0.conv1.weight", 4),
            None
        );
    }

    #[test]
    fn layout_of_names_and_level_count() {
        assert_eq!(
            VaeLayout::of_name("decoder.up.0.block.0.conv1.weight"),
            Some(VaeLayout::Bfl)
        );
        assert_eq!(
            VaeLayout::of_name("encoder.mid_block.resnets.0.conv1.weight"),
            Some(VaeLayout::Diffusers)
        );
        assert_eq!(VaeLayout::of_name("encoder.conv_in.weight"), None);
        assert_eq!(VaeLayout::of_name("img_in.weight"), None);
        let names = [
            "encoder.down_blocks.0.resnets.0.conv1.weight",
            "encoder.down_blocks.3.resnets.1.conv1.weight",
            "decoder.up_blocks.5.resnets.0.conv1.weight",
        ];
        assert_eq!(diffusers_num_levels(names.into_iter()), 4);
    }
}
