//! Frame sheets (PNG/PDF), image sequences, animatics.
//!
//! Every export takes an [`ExportDocument`]: the frames in story order with their images,
//! captions, durations and (optionally) mask and match data. [`collect`] builds one from a
//! project folder; tests and other callers can build one by hand.

pub mod animatic;
pub mod pdf;
pub mod sequence;
pub mod sheet;
pub mod text;

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};

use crate::project::analysis::{TokenGridMask, TokenMatch, read_mask, read_matches};
use crate::project::store::resolve;
use crate::project::{FrameVersion, Project};

pub use animatic::{write_apng, write_gif};
pub use pdf::{PageGrid, PageOrientation, PageSize, PdfOptions, write_pdf};
pub use sequence::write_sequence;
pub use sheet::{SheetOptions, render_sheet, write_sheet};

/// Pixels per image token side in FLUX (8x autoencoder, 2x2 packing): used to place match
/// points when a frame has matches but no mask telling its grid.
pub const PIXELS_PER_TOKEN: u32 = 16;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("nothing to export: the storyboard has no frames")]
    NoFrames,
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Encode { path: PathBuf, message: String },
    #[error("{0}")]
    Project(#[from] crate::project::ProjectError),
}

impl ExportError {
    pub(crate) fn encode(path: &Path, message: impl ToString) -> Self {
        ExportError::Encode {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}

/// One frame as exported.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportFrame {
    /// 1-based position in the story.
    pub number: usize,
    /// Shot label shown after the number (e.g. the scene name); may be empty.
    pub label: String,
    pub action: String,
    pub dialogue: String,
    pub image: RgbImage,
    pub duration_ms: u32,
    /// Foreground mask on the token grid, when the methods produced one.
    pub mask: Option<TokenGridMask>,
    /// Point matches (frame token -> identity token), when present.
    pub matches: Vec<TokenMatch>,
    /// The image file was missing; `image` is a placeholder.
    pub missing: bool,
}

/// A storyboard ready for export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportDocument {
    pub title: String,
    /// The character description, printed in the header.
    pub identity_prompt: String,
    /// Date printed in the header, e.g. "2026-11-23".
    pub date: String,
    pub frames: Vec<ExportFrame>,
}

/// Neutral grey shown where an image is missing or not generated yet.
pub const PLACEHOLDER: Rgb<u8> = Rgb([200, 200, 200]);

/// Builds the export document from a project folder: each frame's active version (or a
/// placeholder of the generation size), its mask and matches when their files exist. Problems
/// that do not stop the export (missing images, unreadable masks) are returned as warnings.
pub fn collect(
    dir: &Path,
    project: &Project,
    date: &str,
) -> Result<(ExportDocument, Vec<String>), ExportError> {
    let mut warnings = Vec::new();
    let (w, h) = (
        project.generation.width.max(1),
        project.generation.height.max(1),
    );
    let mut frames = Vec::with_capacity(project.frames.len());
    for (index, frame) in project.frames.iter().enumerate() {
        let number = index + 1;
        let label = project
            .scenes
            .iter()
            .find(|s| s.id == frame.scene)
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let mut exported = ExportFrame {
            number,
            label,
            action: frame.action.clone(),
            dialogue: frame.dialogue.clone(),
            image: RgbImage::from_pixel(w, h, PLACEHOLDER),
            duration_ms: frame.duration_ms,
            mask: None,
            matches: Vec::new(),
            missing: false,
        };
        if let Some(version) = frame.active() {
            load_version(dir, version, number, &mut exported, &mut warnings);
        }
        frames.push(exported);
    }
    Ok((
        ExportDocument {
            title: project.title.clone(),
            identity_prompt: project.identity.prompt.clone(),
            date: date.to_string(),
            frames,
        },
        warnings,
    ))
}

/// Opens the project folder `dir` and builds its export document dated `unix_seconds` (UTC);
/// the warnings include frames whose image is missing. For `storyloom export`.
pub fn collect_from_folder(
    dir: &Path,
    unix_seconds: u64,
) -> Result<(ExportDocument, Vec<String>), ExportError> {
    let outcome = crate::project::open(dir)?;
    let (doc, mut warnings) = collect(dir, &outcome.project, &date_utc(unix_seconds))?;
    warnings.extend(outcome.warnings);
    Ok((doc, warnings))
}

fn load_version(
    dir: &Path,
    version: &FrameVersion,
    number: usize,
    out: &mut ExportFrame,
    warnings: &mut Vec<String>,
) {
    match resolve(dir, &version.file).map(image::open) {
        Some(Ok(img)) => out.image = img.to_rgb8(),
        Some(Err(e)) => {
            out.missing = true;
            warnings.push(format!("frame {number}: image {}: {e}", version.file));
        }
        None => {
            out.missing = true;
            warnings.push(format!(
                "frame {number}: image path {} leaves the project folder",
                version.file
            ));
        }
    }
    if let Some(path) = version.mask_file.as_deref().and_then(|f| resolve(dir, f)) {
        match read_mask(&path) {
            Ok(mask) => out.mask = Some(mask),
            Err(e) => warnings.push(format!("frame {number}: {e}")),
        }
    }
    if let Some(path) = version
        .matches_file
        .as_deref()
        .and_then(|f| resolve(dir, f))
    {
        match read_matches(&path) {
            Ok(matches) => out.matches = matches,
            Err(e) => warnings.push(format!("frame {number}: {e}")),
        }
    }
}

/// "YYYY-MM-DD" of a Unix time (UTC), for headers.
pub fn date_utc(unix_seconds: u64) -> String {
    // Civil-from-days (proleptic Gregorian), counting 400-year eras from 0000-03-01.
    let days = (unix_seconds / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_unix_time() {
        assert_eq!(date_utc(0), "1970-01-01");
        assert_eq!(date_utc(951_782_400), "2000-02-29");
        assert_eq!(date_utc(1_798_761_599), "2026-12-31");
        assert_eq!(date_utc(1_798_761_600), "2027-01-01");
    }
}
