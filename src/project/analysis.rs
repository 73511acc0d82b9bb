//! Per-frame mask and match data, stored beside the frame's PNG.
//!
//! * Mask: `<frame>.mask.png`, an 8-bit grayscale PNG of the token grid (one pixel per image
//!   token, row-major, `cols` x `rows`); 0 = background, any other value = foreground (the value
//!   is kept, so soft masks survive). Any image viewer shows it.
//! * Matches: `<frame>.matches.csv`, UTF-8 text. First line `frame_token,identity_token,similarity`,
//!   then one match per line: two token indices (row-major on the respective token grid) and the
//!   cosine similarity written with Rust's shortest round-trip float formatting, so it reloads
//!   bit-exact.

use std::fs::{self, File};
use std::path::Path;

use super::error::ProjectError;
use super::store::{RealDisk, atomic_write};

const MATCHES_HEADER: &str = "frame_token,identity_token,similarity";

/// A mask on the image-token grid.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TokenGridMask {
    pub rows: u32,
    pub cols: u32,
    /// `rows * cols` values, row-major; non-zero = foreground.
    pub values: Vec<u8>,
}

impl TokenGridMask {
    /// A mask from foreground flags (255 = foreground).
    pub fn from_flags(rows: u32, cols: u32, fg: &[bool]) -> Self {
        Self {
            rows,
            cols,
            values: fg.iter().map(|&f| if f { 255 } else { 0 }).collect(),
        }
    }

    pub fn is_foreground(&self, row: u32, col: u32) -> bool {
        row < self.rows
            && col < self.cols
            && self
                .values
                .get((row * self.cols + col) as usize)
                .is_some_and(|&v| v != 0)
    }
}

/// One point correspondence between a frame token and an identity token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenMatch {
    pub frame_token: u32,
    pub identity_token: u32,
    pub similarity: f32,
}

/// Writes a mask PNG (atomically).
pub fn write_mask(path: &Path, mask: &TokenGridMask) -> Result<(), ProjectError> {
    if mask.rows == 0 || mask.cols == 0 || mask.values.len() != (mask.rows * mask.cols) as usize {
        return Err(ProjectError::Encode {
            path: path.to_path_buf(),
            message: format!(
                "mask has {} values for a {}x{} grid",
                mask.values.len(),
                mask.rows,
                mask.cols
            ),
        });
    }
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, mask.cols, mask.rows);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let encode_err = |e: png::EncodingError| ProjectError::Encode {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let mut writer = encoder.write_header().map_err(encode_err)?;
        writer.write_image_data(&mask.values).map_err(encode_err)?;
        writer.finish().map_err(encode_err)?;
    }
    atomic_write(path, &bytes, &mut RealDisk)
}

/// Reads a mask PNG written by [`write_mask`] (any 8-bit grayscale PNG works).
pub fn read_mask(path: &Path) -> Result<TokenGridMask, ProjectError> {
    let file = File::open(path).map_err(|e| ProjectError::io(path, "read", e))?;
    let image_err = |message: String| ProjectError::Image {
        path: path.to_path_buf(),
        message,
    };
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let mut reader = decoder.read_info().map_err(|e| image_err(e.to_string()))?;
    let info = reader.info();
    if info.color_type != png::ColorType::Grayscale || info.bit_depth != png::BitDepth::Eight {
        return Err(image_err(format!(
            "mask must be 8-bit grayscale, found {:?} {:?}",
            info.color_type, info.bit_depth
        )));
    }
    let (cols, rows) = (info.width, info.height);
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| image_err("mask too large".into()))?;
    let mut buf = vec![0; size];
    let frame = reader
        .next_frame(&mut buf)
        .map_err(|e| image_err(e.to_string()))?;
    buf.truncate(frame.buffer_size());
    // Rows may be padded to the line size; keep exactly `cols` values per row.
    let line = frame.line_size;
    let values = buf
        .chunks(line)
        .take(rows as usize)
        .flat_map(|r| r[..cols as usize].iter().copied())
        .collect();
    Ok(TokenGridMask { rows, cols, values })
}

/// Formats matches as the CSV text described in the module docs.
pub fn matches_to_csv(matches: &[TokenMatch]) -> String {
    let mut out = String::with_capacity(MATCHES_HEADER.len() + 1 + matches.len() * 24);
    out.push_str(MATCHES_HEADER);
    out.push('\n');
    for m in matches {
        out.push_str(&format!(
            "{},{},{}\n",
            m.frame_token, m.identity_token, m.similarity
        ));
    }
    out
}

/// Parses the CSV text; errors name the line and column. `path` is only for messages.
pub fn matches_from_csv(path: &Path, text: &str) -> Result<Vec<TokenMatch>, ProjectError> {
    let err = |line: usize, column: usize, message: String| ProjectError::Parse {
        path: path.to_path_buf(),
        line,
        column,
        message,
    };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim() == MATCHES_HEADER => {}
        _ => return Err(err(1, 1, format!("expected the header `{MATCHES_HEADER}`"))),
    }
    let mut matches = Vec::new();
    for (index, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = index + 1;
        let mut fields = Vec::with_capacity(3);
        let mut column = 1;
        for field in line.split(',') {
            fields.push((column, field.trim()));
            column += field.chars().count() + 1;
        }
        if fields.len() != 3 {
            return Err(err(
                line_no,
                1,
                format!("expected 3 fields, found {}", fields.len()),
            ));
        }
        let int = |(col, s): (usize, &str)| {
            s.parse::<u32>()
                .map_err(|e| err(line_no, col, format!("`{s}`: {e}")))
        };
        let (sim_col, sim_text) = fields[2];
        let similarity = sim_text
            .parse::<f32>()
            .map_err(|e| err(line_no, sim_col, format!("`{sim_text}`: {e}")))?;
        matches.push(TokenMatch {
            frame_token: int(fields[0])?,
            identity_token: int(fields[1])?,
            similarity,
        });
    }
    Ok(matches)
}

/// Writes a matches file (atomically).
pub fn write_matches(path: &Path, matches: &[TokenMatch]) -> Result<(), ProjectError> {
    atomic_write(path, matches_to_csv(matches).as_bytes(), &mut RealDisk)
}

/// Reads a matches file.
pub fn read_matches(path: &Path) -> Result<Vec<TokenMatch>, ProjectError> {
    let text = fs::read_to_string(path).map_err(|e| ProjectError::io(path, "read", e))?;
    matches_from_csv(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_csv_round_trips_exactly() {
        let matches = vec![
            TokenMatch {
                frame_token: 3,
                identity_token: 17,
                similarity: 0.1 + 0.2,
            },
            TokenMatch {
                frame_token: 4095,
                identity_token: 0,
                similarity: 0.50000006,
            },
        ];
        let text = matches_to_csv(&matches);
        assert!(text.starts_with("frame_token,identity_token,similarity\n3,17,"));
        let back = matches_from_csv(Path::new("m.csv"), &text).unwrap();
        assert_eq!(back, matches);
    }

    #[test]
    fn bad_matches_name_line_and_column() {
        let text = "frame_token,identity_token,similarity\n1,2,0.5\n1,x,0.5\n";
        match matches_from_csv(Path::new("m.csv"), text).unwrap_err() {
            ProjectError::Parse { line, column, .. } => assert_eq!((line, column), (3, 3)),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn mask_lookup_is_row_major_and_bounds_checked() {
        let m = TokenGridMask::from_flags(2, 3, &[false, false, true, true, false, false]);
        assert!(m.is_foreground(0, 2));
        assert!(m.is_foreground(1, 0));
        assert!(!m.is_foreground(1, 1));
        assert!(!m.is_foreground(2, 0));
    }

    #[test]
    fn mask_png_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mask.png");
        let mask = TokenGridMask {
            rows: 3,
            cols: 5,
            values: (0..15).map(|i| (i * 17) as u8).collect(),
        };
        write_mask(&path, &mask).unwrap();
        assert_eq!(read_mask(&path).unwrap(), mask);
    }
}
