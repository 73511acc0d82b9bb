//! Numbered image sequence: `frame_001.png`, `frame_002.png`, … in story order.

use std::fs;
use std::path::{Path, PathBuf};

use super::{ExportDocument, ExportError};
use crate::project::store::{RealDisk, atomic_write};

/// File name of frame `number` (1-based) in a sequence of `count` frames: at least three
/// digits, more when the count needs them, so names sort in story order.
pub fn sequence_name(number: usize, count: usize) -> String {
    let digits = count.max(1).to_string().len().max(3);
    format!("frame_{number:0digits$}.png")
}

/// Writes every frame's image into `out_dir` (created if needed); returns the paths in order.
pub fn write_sequence(out_dir: &Path, doc: &ExportDocument) -> Result<Vec<PathBuf>, ExportError> {
    if doc.frames.is_empty() {
        return Err(ExportError::NoFrames);
    }
    fs::create_dir_all(out_dir).map_err(|source| ExportError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let count = doc.frames.len();
    let mut paths = Vec::with_capacity(count);
    for (index, frame) in doc.frames.iter().enumerate() {
        let path = out_dir.join(sequence_name(index + 1, count));
        let mut bytes = Vec::new();
        frame
            .image
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .map_err(|e| ExportError::encode(&path, e))?;
        atomic_write(&path, &bytes, &mut RealDisk)?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_story_order() {
        assert_eq!(sequence_name(1, 12), "frame_001.png");
        assert_eq!(sequence_name(42, 1000), "frame_0042.png");
        assert_eq!(sequence_name(1000, 1000), "frame_1000.png");
    }
}
