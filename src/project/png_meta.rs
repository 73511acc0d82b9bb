//! Generation settings carried inside every generated PNG, so an image dragged out of the
//! project still says how it was made, and importing it restores the settings.
//!
//! Text chunks written (before the image data, so readers that stop early see them):
//! * `parameters`: human-readable, in the style other image generators use:
//!   the prompt on the first line, then `Steps: 20, Guidance: 3.5, Seed: 7, Size: 512x288,
//!   Model: built-in, Methods: CharaConsist`. tEXt when Latin-1, else iTXt.
//! * `storyloom`: iTXt with the RON of [`ImageSettings`] (complete, machine-readable).
//! * `Software`: `Storyloom <version>`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::error::ProjectError;
use super::store::{RealDisk, atomic_write};
use super::types::{GenerationSettings, MethodSettings};

pub const PARAMETERS_KEY: &str = "parameters";
pub const SETTINGS_KEY: &str = "storyloom";
pub const SOFTWARE_KEY: &str = "Software";

/// Everything that made one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageSettings {
    /// The full prompt as the model saw it.
    pub prompt: String,
    /// Its parts: identity (character), style, background and action.
    pub identity: String,
    pub style: String,
    pub background: String,
    pub action: String,
    pub seed: u64,
    pub model: String,
    pub steps: usize,
    pub guidance: f32,
    pub width: u32,
    pub height: u32,
    pub methods: MethodSettings,
    /// Methods that actually ran.
    pub methods_used: Vec<String>,
}

impl Default for ImageSettings {
    fn default() -> Self {
        let g = GenerationSettings::default();
        Self {
            prompt: String::new(),
            identity: String::new(),
            style: String::new(),
            background: String::new(),
            action: String::new(),
            seed: 0,
            model: String::new(),
            steps: g.steps,
            guidance: g.guidance,
            width: g.width,
            height: g.height,
            methods: MethodSettings::default(),
            methods_used: Vec::new(),
        }
    }
}

impl ImageSettings {
    /// The human-readable `parameters` text.
    pub fn parameters_text(&self) -> String {
        let methods = if self.methods_used.is_empty() {
            "none".to_string()
        } else {
            self.methods_used.join(" + ")
        };
        format!(
            "{}\nSteps: {}, Guidance: {}, Seed: {}, Size: {}x{}, Model: {}, Methods: {}",
            self.prompt,
            self.steps,
            self.guidance,
            self.seed,
            self.width,
            self.height,
            self.model,
            methods
        )
    }

    /// The generation settings to restore on import.
    pub fn generation_settings(&self) -> GenerationSettings {
        GenerationSettings {
            steps: self.steps,
            guidance: self.guidance,
            width: self.width,
            height: self.height,
            aspect: super::types::AspectPreset::of_size(self.width, self.height),
        }
    }
}

/// All text chunks of a PNG, and the settings when Storyloom wrote it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PngMetadata {
    pub texts: BTreeMap<String, String>,
    pub settings: Option<ImageSettings>,
}

fn is_latin1(s: &str) -> bool {
    s.chars().all(|c| (c as u32) < 256)
}

/// Why a PNG with settings could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum PngEncodeError {
    #[error(transparent)]
    Png(#[from] png::EncodingError),
    #[error("settings: {0}")]
    Settings(#[from] ron::Error),
}

/// Encodes an RGB image as PNG with the settings in text chunks.
pub fn encode_png_with_settings(
    image: &RgbImage,
    settings: &ImageSettings,
) -> Result<Vec<u8>, PngEncodeError> {
    let ron_text = ron::to_string(settings)?;
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, image.width(), image.height());
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let parameters = settings.parameters_text();
        if is_latin1(&parameters) {
            encoder.add_text_chunk(PARAMETERS_KEY.into(), parameters)?;
        } else {
            encoder.add_itxt_chunk(PARAMETERS_KEY.into(), parameters)?;
        }
        encoder.add_itxt_chunk(SETTINGS_KEY.into(), ron_text)?;
        encoder.add_text_chunk(
            SOFTWARE_KEY.into(),
            format!("Storyloom {}", env!("CARGO_PKG_VERSION")),
        )?;
        let mut writer = encoder.write_header()?;
        writer.write_image_data(image.as_raw())?;
        writer.finish()?;
    }
    Ok(bytes)
}

/// Writes `image` as a PNG with its settings, atomically.
pub fn write_png_with_settings(
    path: &Path,
    image: &RgbImage,
    settings: &ImageSettings,
) -> Result<(), ProjectError> {
    let bytes = encode_png_with_settings(image, settings).map_err(|e| ProjectError::Encode {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    atomic_write(path, &bytes, &mut RealDisk)
}

/// Reads every text chunk of a PNG (before and after the image data).
pub fn read_png_metadata(path: &Path) -> Result<PngMetadata, ProjectError> {
    let file = File::open(path).map_err(|e| ProjectError::io(path, "read", e))?;
    let image_err = |e: png::DecodingError| ProjectError::Image {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut reader = png::Decoder::new(BufReader::new(file))
        .read_info()
        .map_err(image_err)?;
    // Chunks after the image data are only seen once the image has been read.
    if let Some(size) = reader.output_buffer_size() {
        let mut buf = vec![0; size];
        reader.next_frame(&mut buf).map_err(image_err)?;
        reader.finish().map_err(image_err)?;
    }
    let info = reader.info();
    let mut texts = BTreeMap::new();
    for chunk in &info.uncompressed_latin1_text {
        texts.insert(chunk.keyword.clone(), chunk.text.clone());
    }
    for chunk in &info.compressed_latin1_text {
        if let Ok(text) = chunk.get_text() {
            texts.insert(chunk.keyword.clone(), text);
        }
    }
    for chunk in &info.utf8_text {
        if let Ok(text) = chunk.get_text() {
            texts.insert(chunk.keyword.clone(), text);
        }
    }
    let settings = texts
        .get(SETTINGS_KEY)
        .and_then(|text| ron::from_str::<ImageSettings>(text).ok());
    Ok(PngMetadata { texts, settings })
}

/// "Import PNG": the settings a Storyloom PNG was made with.
pub fn import_png_settings(path: &Path) -> Result<ImageSettings, ProjectError> {
    let meta = read_png_metadata(path)?;
    meta.settings.ok_or_else(|| ProjectError::NoMetadata {
        path: path.to_path_buf(),
        reason: if meta.texts.contains_key(SETTINGS_KEY) {
            format!("its `{SETTINGS_KEY}` text chunk does not parse")
        } else {
            format!("it has no `{SETTINGS_KEY}` text chunk")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ImageSettings {
        ImageSettings {
            prompt: "a rainy street, a fox in a red coat, runs".into(),
            identity: "a fox in a red coat".into(),
            style: "ink wash".into(),
            background: "a rainy street".into(),
            action: "runs — fast".into(),
            seed: 42,
            model: "built-in".into(),
            steps: 12,
            guidance: 3.5,
            width: 64,
            height: 32,
            methods: MethodSettings::default(),
            methods_used: vec!["CharaConsist".into(), "ASemConsist".into()],
        }
    }

    #[test]
    fn parameters_line_reads_like_other_generators() {
        let s = sample();
        assert_eq!(
            s.parameters_text(),
            "a rainy street, a fox in a red coat, runs\nSteps: 12, Guidance: 3.5, Seed: 42, \
             Size: 64x32, Model: built-in, Methods: CharaConsist + ASemConsist"
        );
    }

    #[test]
    fn png_carries_and_restores_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.png");
        let image = RgbImage::from_fn(8, 4, |x, y| image::Rgb([x as u8 * 30, y as u8 * 60, 7]));
        let mut s = sample();
        s.prompt = "café — ünïcode prompt ✓".into();
        write_png_with_settings(&path, &image, &s).unwrap();
        let meta = read_png_metadata(&path).unwrap();
        assert!(meta.texts[PARAMETERS_KEY].starts_with("café — ünïcode prompt ✓\nSteps: 12"));
        assert!(meta.texts[SOFTWARE_KEY].starts_with("Storyloom "));
        assert_eq!(import_png_settings(&path).unwrap(), s);
        let decoded = image::open(&path).unwrap().to_rgb8();
        assert_eq!(decoded, image);
    }

    #[test]
    fn plain_png_has_no_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.png");
        RgbImage::new(2, 2).save(&path).unwrap();
        let err = import_png_settings(&path).unwrap_err();
        assert!(
            err.to_string().contains("no `storyloom` text chunk"),
            "{err}"
        );
    }
}
