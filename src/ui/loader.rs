//! Decoding a project's images off the UI thread: the first frame of the studio draws at
//! once, and each image appears when its PNG (with its mask and matches) is read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::{Receiver, unbounded};

use crate::consistency::asemconsist::afs::AfsDecision;
use crate::consistency::{FrameAnalysis, characonsist};
use crate::project::FrameVersion;
use crate::project::analysis::{TokenGridMask, TokenMatch, read_mask, read_matches};
use crate::project::engine_link::{AFS_KEY, MASK_STEP_KEY};
use crate::project::store::resolve;

use super::document::Pixels;

/// One version to decode.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadRequest {
    pub version_id: u64,
    pub image: Option<PathBuf>,
    pub mask: Option<PathBuf>,
    pub matches: Option<PathBuf>,
    /// The identity's mask (the other side of the matches).
    pub identity_mask: Option<PathBuf>,
    pub afs: Option<AfsDecision>,
    pub extraction_step: usize,
}

impl LoadRequest {
    /// What to read for a version of the project in `dir`.
    pub fn for_version(
        dir: &Path,
        version_id: u64,
        record: &FrameVersion,
        identity_mask: Option<&str>,
    ) -> Self {
        let file = |f: Option<&str>| f.and_then(|f| resolve(dir, f));
        Self {
            version_id,
            image: file(Some(&record.file)),
            mask: file(record.mask_file.as_deref()),
            matches: file(record.matches_file.as_deref()),
            identity_mask: file(identity_mask),
            afs: record
                .metadata
                .get(AFS_KEY)
                .and_then(|text| ron::from_str(text).ok()),
            extraction_step: record
                .metadata
                .get(MASK_STEP_KEY)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        }
    }
}

/// What the loader read for one version.
#[derive(Debug, Clone)]
pub struct LoadedVersion {
    pub version_id: u64,
    /// The pixels, or why there are none (shown on the frame card).
    pub pixels: Result<Pixels, String>,
    pub analysis: FrameAnalysis,
}

fn method_mask(mask: &TokenGridMask) -> characonsist::TokenMask {
    characonsist::TokenMask {
        rows: mask.rows as usize,
        cols: mask.cols as usize,
        fg: mask.values.iter().map(|&v| v != 0).collect(),
    }
}

/// The analysis kept in a version's files: CharaConsist's masks and matches, ASemConsist's
/// decision. Unreadable mask or match files only drop the overlay.
pub fn analysis_from_files(
    mask: Option<TokenGridMask>,
    identity_mask: Option<TokenGridMask>,
    matches: Vec<TokenMatch>,
    afs: Option<AfsDecision>,
    extraction_step: usize,
) -> FrameAnalysis {
    let characonsist = (mask.is_some() || !matches.is_empty()).then(|| {
        let empty = characonsist::TokenMask {
            rows: 0,
            cols: 0,
            fg: Vec::new(),
        };
        characonsist::FrameAnalysis {
            frame_mask: mask.as_ref().map_or(empty.clone(), method_mask),
            identity_mask: identity_mask.as_ref().map_or(empty, method_mask),
            matches: matches
                .iter()
                .map(|m| characonsist::Match {
                    frame_token: m.frame_token,
                    identity_token: m.identity_token,
                    similarity: m.similarity,
                })
                .collect(),
            extraction_step,
        }
    });
    FrameAnalysis { characonsist, afs }
}

/// Reads one version (blocking; the loader thread calls it).
pub fn load_version(request: &LoadRequest) -> LoadedVersion {
    let pixels = match &request.image {
        None => Err("no image file".to_string()),
        Some(path) => image::open(path)
            .map(|img| Pixels::new(img.to_rgb8()))
            .map_err(|e| format!("{} could not be read: {e}", path.display())),
    };
    let mask = request.mask.as_deref().and_then(|p| read_mask(p).ok());
    let identity_mask = request
        .identity_mask
        .as_deref()
        .and_then(|p| read_mask(p).ok());
    let matches = request
        .matches
        .as_deref()
        .and_then(|p| read_matches(p).ok())
        .unwrap_or_default();
    LoadedVersion {
        version_id: request.version_id,
        pixels,
        analysis: analysis_from_files(
            mask,
            identity_mask,
            matches,
            request.afs,
            request.extraction_step,
        ),
    }
}

/// A background thread decoding a list of versions in order.
pub struct ImageLoader {
    results: Receiver<LoadedVersion>,
    remaining: usize,
}

impl ImageLoader {
    /// Starts decoding; `notify` runs after each version (the app asks for a repaint).
    pub fn spawn(requests: Vec<LoadRequest>, notify: Arc<dyn Fn() + Send + Sync>) -> Self {
        let (tx, rx) = unbounded();
        let remaining = requests.len();
        std::thread::Builder::new()
            .name("storyloom-images".into())
            .spawn(move || {
                for request in requests {
                    if tx.send(load_version(&request)).is_err() {
                        // The project was closed meanwhile.
                        return;
                    }
                    notify();
                }
            })
            .expect("a thread can be started");
        Self {
            results: rx,
            remaining,
        }
    }

    /// The versions decoded since the last call (never blocks).
    pub fn poll(&mut self) -> Vec<LoadedVersion> {
        let out: Vec<LoadedVersion> = self.results.try_iter().collect();
        self.remaining = self.remaining.saturating_sub(out.len());
        out
    }

    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Waits until every version is decoded (tests and the benchmark).
    pub fn wait_all(&mut self) -> Vec<LoadedVersion> {
        let mut out = Vec::new();
        while self.remaining > 0 {
            match self.results.recv() {
                Ok(v) => {
                    out.push(v);
                    self.remaining -= 1;
                }
                Err(_) => break,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analysis_rebuilt_from_files() {
        let mask = TokenGridMask::from_flags(1, 3, &[true, false, true]);
        let identity = TokenGridMask {
            rows: 2,
            cols: 1,
            values: vec![0, 7],
        };
        let matches = vec![TokenMatch {
            frame_token: 2,
            identity_token: 1,
            similarity: 0.5,
        }];
        let a = analysis_from_files(Some(mask), Some(identity), matches, None, 4);
        let c = a.characonsist.unwrap();
        assert_eq!(c.frame_mask.fg, vec![true, false, true]);
        assert_eq!((c.identity_mask.rows, c.identity_mask.cols), (2, 1));
        // Soft mask values are foreground when non-zero.
        assert_eq!(c.identity_mask.fg, vec![false, true]);
        assert_eq!(c.matches[0].frame_token, 2);
        assert_eq!(c.extraction_step, 4);
        // Nothing stored: no CharaConsist analysis at all.
        assert!(
            analysis_from_files(None, None, vec![], None, 0)
                .characonsist
                .is_none()
        );
    }

    #[test]
    fn a_missing_file_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let record = FrameVersion {
            file: "frames/00001-01.png".into(),
            ..Default::default()
        };
        let request = LoadRequest::for_version(dir.path(), 3, &record, None);
        let loaded = load_version(&request);
        assert_eq!(loaded.version_id, 3);
        assert!(loaded.pixels.unwrap_err().contains("00001-01.png"));
    }
}
