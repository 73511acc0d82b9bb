//! FLUX transformers in GGUF files: the quantized conversions most people run FLUX with
//! (ComfyUI-GGUF's and stable-diffusion.cpp's). They hold BFL tensor names (sometimes under
//! `model.diffusion_model.`), the blocks' 2-D weights quantized (Q8_0, Q4_K, ...), the input,
//! embedder and final layers in F32 / F16 / BF16, and 1-D tensors in F32.
//!
//! They load into our own transformer: quantized weights stay quantized and are multiplied
//! by candle's quantized kernels ([`crate::model::dit::Linear::Quantized`]); every other
//! tensor becomes a dense tensor of the requested dtype. The hook points are unchanged.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use super::dit::{FluxConfig, FluxTransformer, WeightSource};
use super::gguf_header::{ARCHITECTURE_KEY, GgmlType, GgufHeader, read_gguf_header};
use super::weights::{
    AXES_METADATA_KEY, BFL_PREFIX, Component, Layout, LoadOptions, WeightsError, check_tensors,
    infer_from_bfl_shapes,
};

/// The transformer layout of a GGUF file from its tensor names (`None`: not a FLUX
/// transformer).
pub fn transformer_layout(header: &GgufHeader) -> Option<Layout> {
    let key = "double_blocks.0.img_attn.qkv.weight";
    if header.tensors.contains_key(key) {
        Some(Layout::Bfl { prefixed: false })
    } else if header.tensors.contains_key(&format!("{BFL_PREFIX}{key}")) {
        Some(Layout::Bfl { prefixed: true })
    } else {
        None
    }
}

/// What a GGUF file holds, by its tensor names.
pub fn component(header: &GgufHeader) -> Component {
    transformer_layout(header).map_or(Component::Unknown, Component::Transformer)
}

/// The first tensor in a type Storyloom cannot run, as an error.
pub fn check_runnable(path: &Path, header: &GgufHeader) -> Result<(), WeightsError> {
    match header
        .tensors
        .iter()
        .find(|(_, t)| t.ggml_type.runnable().is_none())
    {
        None => Ok(()),
        Some((name, t)) => Err(WeightsError::UnsupportedQuant {
            path: path.into(),
            tensor: name.clone(),
            kind: t.ggml_type.name(),
        }),
    }
}

/// Bytes the transformer's weights take once loaded: quantized tensors as stored, floating
/// ones converted to `dense` (the model's dtype). This is the resident size of a load, the
/// figure the memory plan needs.
pub fn resident_bytes(header: &GgufHeader, dense: DType) -> u64 {
    header
        .tensors
        .values()
        .map(|t| {
            if t.ggml_type.is_float() {
                (t.numel() * dense.size_in_bytes()) as u64
            } else {
                t.bytes
            }
        })
        .sum()
}

/// Infers the configuration of a FLUX transformer in a GGUF file.
pub fn infer_gguf_config(
    header: &GgufHeader,
    axes_dim: Option<Vec<usize>>,
) -> Result<FluxConfig, WeightsError> {
    let prefix = bfl_prefix(header);
    let names: BTreeSet<String> = header
        .tensors
        .keys()
        .filter_map(|n| n.strip_prefix(prefix).map(str::to_string))
        .collect();
    let axes = axes_dim.or_else(|| {
        header
            .string(AXES_METADATA_KEY)?
            .split(',')
            .map(|s| s.trim().parse().ok())
            .collect()
    });
    let shape = |n: &str| header.shape(&format!("{prefix}{n}")).map(<[usize]>::to_vec);
    infer_from_bfl_shapes(&shape, &names, axes)
}

fn bfl_prefix(header: &GgufHeader) -> &'static str {
    match transformer_layout(header) {
        Some(Layout::Bfl { prefixed: true }) => BFL_PREFIX,
        _ => "",
    }
}

/// Loads a FLUX transformer from a GGUF file onto `opts.device`.
pub fn load_gguf_transformer(
    path: &Path,
    opts: &LoadOptions,
) -> Result<FluxTransformer, WeightsError> {
    let header = read_gguf_header(path)?;
    if transformer_layout(&header).is_none() {
        return Err(WeightsError::WrongComponent {
            path: path.into(),
            found: component(&header),
            wanted: Component::Transformer(Layout::Bfl { prefixed: false }),
        });
    }
    check_runnable(path, &header)?;
    let cfg = infer_gguf_config(&header, opts.axes_dim.clone())?;
    let prefix = bfl_prefix(&header);
    check_tensors(&cfg, &|n| {
        header.shape(&format!("{prefix}{n}")).map(<[usize]>::to_vec)
    })?;
    let io = |source| WeightsError::Io {
        path: path.into(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let content = gguf_file::Content::read(&mut file)?;
    let mut dense: HashMap<String, Tensor> = HashMap::new();
    let mut quantized: HashMap<String, Arc<QTensor>> = HashMap::new();
    for (name, info) in &header.tensors {
        let Some(bfl) = name.strip_prefix(prefix) else {
            continue;
        };
        let q = content.tensor(&mut file, name, &opts.device)?;
        // Only linear weights (2-D) are multiplied quantized; anything else is dequantized.
        if info.ggml_type.is_float() || info.shape.len() != 2 {
            let t = q.dequantize(&opts.device)?.to_dtype(opts.dtype)?;
            dense.insert(bfl.to_string(), t);
        } else {
            quantized.insert(bfl.to_string(), Arc::new(q));
        }
    }
    let vb = VarBuilder::from_tensors(dense, opts.dtype, &opts.device);
    Ok(FluxTransformer::new(
        &cfg,
        WeightSource::new(vb, quantized),
    )?)
}

/// How much of the file each type holds, for reports: `Q8_0 (98.9 %)`, most first.
pub fn type_summary(header: &GgufHeader) -> Vec<String> {
    let total = header.parameter_count().max(1) as f64;
    header
        .types()
        .into_iter()
        .map(|(t, n)| format!("{} ({:.1} %)", t.name(), 100.0 * n as f64 / total))
        .collect()
}

/// The types a file uses that Storyloom cannot run, by name.
pub fn unsupported_types(header: &GgufHeader) -> Vec<String> {
    let set: BTreeSet<GgmlType> = header
        .tensors
        .values()
        .map(|t| t.ggml_type)
        .filter(|t| t.runnable().is_none())
        .collect();
    set.into_iter().map(GgmlType::name).collect()
}

/// Layers the common FLUX conversions keep in F32 (the input projections, the embedders'
/// first layers and the output projection) and in F16 (the embedders' second layers and the
/// final modulation); llama.cpp's image-model patch never quantizes them.
const KEEP_F32: [&str; 6] = [
    "img_in.",
    "txt_in.",
    "final_layer.linear.",
    "time_in.in_layer.",
    "vector_in.in_layer.",
    "guidance_in.in_layer.",
];
const KEEP_F16: [&str; 4] = [
    "time_in.out_layer.",
    "vector_in.out_layer.",
    "guidance_in.out_layer.",
    "final_layer.adaLN_modulation.",
];

/// The type a tensor gets in a FLUX conversion to `quant` (ComfyUI-GGUF's converter, then
/// llama.cpp's quantizer): 1-D tensors F32, the layers above F32 / F16, the blocks' 2-D
/// weights `quant`, falling back to F16 where a row does not fill whole blocks.
pub fn conversion_type(name: &str, shape: &[usize], quant: GgmlDType) -> GgmlDType {
    if shape.len() != 2 || KEEP_F32.iter().any(|p| name.starts_with(p)) {
        GgmlDType::F32
    } else if KEEP_F16.iter().any(|p| name.starts_with(p))
        || !shape[1].is_multiple_of(quant.block_size())
    {
        GgmlDType::F16
    } else {
        quant
    }
}

/// Writes BFL-named transformer weights as a FLUX GGUF file, typed as [`conversion_type`]
/// says, with the RoPE axes in the metadata. Used by the tests and benchmarks, which need
/// quantized files of their own configurations.
pub fn write_quantized_transformer(
    path: &Path,
    weights: &HashMap<String, Tensor>,
    quant: GgmlDType,
    axes_dim: &[usize],
) -> Result<(), WeightsError> {
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    let tensors = names
        .iter()
        .map(|n| {
            let t = &weights[*n];
            QTensor::quantize(t, conversion_type(n, t.dims(), quant)).map(|q| (n.as_str(), q))
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, q)| (*n, q)).collect();
    let arch = gguf_file::Value::String("flux".into());
    let axes = gguf_file::Value::String(
        axes_dim
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    let meta = [(ARCHITECTURE_KEY, &arch), (AXES_METADATA_KEY, &axes)];
    let io = |source| WeightsError::Io {
        path: path.into(),
        source,
    };
    let mut file = std::io::BufWriter::new(File::create(path).map_err(io)?);
    gguf_file::write(&mut file, &meta, &refs)?;
    std::io::Write::flush(&mut file).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::dit::init::expected_tensors;
    use crate::model::gguf_header::GgufTensor;

    /// The tensor table of a FLUX conversion of `cfg` to `quant`, as a file would hold it.
    fn converted_layout(cfg: &FluxConfig, quant: GgmlDType) -> GgufHeader {
        let mut header = GgufHeader::default();
        for (name, shape) in expected_tensors(cfg).unwrap() {
            let ty = conversion_type(&name, &shape, quant);
            let numel: usize = shape.iter().product();
            let t = GgufTensor {
                ggml_type: GgmlType(ggml_id(ty)),
                bytes: (numel / ty.block_size() * ty.type_size()) as u64,
                shape,
                offset: 0,
            };
            header.tensors.insert(name, t);
        }
        header
    }

    fn ggml_id(t: GgmlDType) -> u32 {
        (0..40)
            .find(|&i| GgmlType(i).runnable() == Some(t))
            .expect("a runnable type")
    }

    #[test]
    fn conversion_types_follow_the_common_flux_files() {
        let q = GgmlDType::Q4K;
        assert_eq!(
            conversion_type("img_in.weight", &[3072, 64], q),
            GgmlDType::F32
        );
        assert_eq!(
            conversion_type("time_in.out_layer.weight", &[3072, 3072], q),
            GgmlDType::F16
        );
        assert_eq!(
            conversion_type("double_blocks.3.img_attn.qkv.bias", &[9216], q),
            GgmlDType::F32
        );
        assert_eq!(
            conversion_type("single_blocks.0.linear2.weight", &[3072, 15360], q),
            q
        );
        // A row of 32 cannot hold a 256-element K block.
        assert_eq!(
            conversion_type("double_blocks.0.img_mlp.0.weight", &[128, 32], q),
            GgmlDType::F16
        );
    }

    #[test]
    fn flux_dev_q8_0_and_q4_k_fit_their_memory_goals() {
        let cfg = FluxConfig::dev();
        let q8 = converted_layout(&cfg, GgmlDType::Q8_0);
        let q4 = converted_layout(&cfg, GgmlDType::Q4K);
        assert_eq!(q8.parameter_count(), cfg.parameter_count());
        // On the CPU the unquantized tensors become f32; on a GPU bf16.
        let (q8_cpu, q4_cpu) = (
            resident_bytes(&q8, DType::F32),
            resident_bytes(&q4, DType::F32),
        );
        let (q8_gpu, q4_gpu) = (
            resident_bytes(&q8, DType::BF16),
            resident_bytes(&q4, DType::BF16),
        );
        assert!(q8_cpu <= 13_000_000_000, "Q8_0: {q8_cpu} bytes");
        assert!(q4_cpu <= 7_500_000_000, "Q4_K: {q4_cpu} bytes");
        assert!(q8_gpu < q8_cpu && q4_gpu < q4_cpu);
        // Against 23.8 GB in bf16: Q8_0 keeps 34 bytes per 32 weights, Q4_K 144 per 256.
        let bf16 = 2 * cfg.parameter_count() as u64;
        assert!((q8_gpu as f64 / bf16 as f64 - 34.0 / 64.0).abs() < 0.01);
        assert!((q4_gpu as f64 / bf16 as f64 - 144.0 / 512.0).abs() < 0.01);
    }

    #[test]
    fn types_candle_cannot_run_are_refused_by_name() {
        let mut h = converted_layout(&FluxConfig::tiny(true), GgmlDType::Q8_0);
        assert!(check_runnable(Path::new("x.gguf"), &h).is_ok());
        h.tensors
            .get_mut("single_blocks.1.linear1.weight")
            .unwrap()
            .ggml_type = GgmlType(23);
        let err = check_runnable(Path::new("x.gguf"), &h).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("IQ4_XS") && msg.contains("single_blocks.1.linear1.weight"),
            "{msg}"
        );
        assert_eq!(unsupported_types(&h), vec!["IQ4_XS".to_string()]);
    }
}
