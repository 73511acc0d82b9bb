//! Writing the active image of every frame as a numbered PNG sequence.

use std::path::Path;

use super::state::AppState;

/// Frames that have an active version.
pub fn count_active(state: &AppState) -> usize {
    state
        .doc
        .frames
        .iter()
        .filter(|f| {
            state
                .renders
                .active(f.id)
                .is_some_and(|v| v.image().is_some())
        })
        .count()
}

/// File name of the frame at `index` (0-based) in a sequence.
pub fn sequence_name(index: usize) -> String {
    format!("frame_{:03}.png", index + 1)
}

/// Writes `frame_001.png`, `frame_002.png`… (numbered by timeline position) for the frames
/// that have an image. Returns how many were written.
pub fn write_png_sequence(state: &AppState, dir: &Path) -> Result<usize, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = 0;
    for (i, frame) in state.doc.frames.iter().enumerate() {
        if let Some(image) = state.renders.active(frame.id).and_then(|v| v.image()) {
            let path = dir.join(sequence_name(i));
            image
                .save(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            written += 1;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::consistency::FrameAnalysis;
    use crate::project::FrameVersion;

    #[test]
    fn writes_numbered_pngs_for_frames_with_images() {
        let mut state = AppState::new(None, Arc::new(|| {}));
        let a = state.add_frame();
        let _empty = state.add_frame();
        let c = state.add_frame();
        for id in [a, c] {
            state.renders.add_version(
                id,
                FrameVersion::default(),
                image::RgbImage::from_pixel(4, 2, image::Rgb([10, 20, 30])),
                FrameAnalysis::default(),
            );
        }
        assert_eq!(count_active(&state), 2);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(write_png_sequence(&state, dir.path()), Ok(2));
        let back = image::open(dir.path().join("frame_003.png"))
            .unwrap()
            .to_rgb8();
        assert_eq!(back.get_pixel(3, 1).0, [10, 20, 30]);
        assert!(!dir.path().join("frame_002.png").exists());
    }
}
