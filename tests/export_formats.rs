//! Animatics, image sequences and PDF pages decoded back and checked.

use std::fs::{self, File};
use std::io::BufReader;

use image::codecs::gif::GifDecoder;
use image::{AnimationDecoder, Rgb, RgbImage};
use storyloom::export::{
    ExportDocument, ExportError, ExportFrame, PageGrid, PageOrientation, PageSize, PdfOptions,
    write_apng, write_gif, write_pdf, write_sequence,
};

fn doc(frames: usize) -> ExportDocument {
    ExportDocument {
        title: "Animatic".into(),
        identity_prompt: "a red kite".into(),
        date: "2026-11-23".into(),
        frames: (1..=frames)
            .map(|n| ExportFrame {
                number: n,
                label: String::new(),
                action: format!(
                    "the kite dives, shot {n}, and the string goes slack over the hill"
                ),
                dialogue: if n % 2 == 0 {
                    "Hold on!".into()
                } else {
                    String::new()
                },
                image: RgbImage::from_fn(48, 24, |x, y| {
                    Rgb([(x * 5) as u8, (y * 10) as u8, (n * 60 % 256) as u8])
                }),
                duration_ms: [1000, 250, 3333, 40][(n - 1) % 4],
                mask: None,
                matches: Vec::new(),
                missing: false,
            })
            .collect(),
    }
}

#[test]
fn gif_has_every_frame_with_its_duration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("animatic.gif");
    let doc = doc(4);
    write_gif(&path, &doc, 32).unwrap();
    let decoder = GifDecoder::new(BufReader::new(File::open(&path).unwrap())).unwrap();
    let frames = decoder.into_frames().collect_frames().unwrap();
    assert_eq!(frames.len(), 4);
    let delays: Vec<u32> = frames
        .iter()
        .map(|f| {
            let (num, den) = f.delay().numer_denom_ms();
            num / den
        })
        .collect();
    // GIF counts hundredths of a second: 3333 ms rounds up to 3340.
    assert_eq!(delays, vec![1000, 250, 3340, 40]);
    for f in &frames {
        assert_eq!(
            f.buffer().dimensions(),
            (32, 16),
            "scaled to max width, aspect kept"
        );
    }
}

#[test]
fn apng_has_every_frame_with_its_duration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("animatic.png");
    let doc = doc(3);
    write_apng(&path, &doc, 1000).unwrap();
    let mut reader = png::Decoder::new(BufReader::new(File::open(&path).unwrap()))
        .read_info()
        .unwrap();
    let actl = reader.info().animation_control.expect("animated");
    assert_eq!(actl.num_frames, 3);
    assert_eq!(actl.num_plays, 0, "loops forever");
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let mut delays = Vec::new();
    for _ in 0..3 {
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (48, 24));
        let fc = reader.info().frame_control.expect("frame control");
        delays.push((fc.delay_num, fc.delay_den));
    }
    assert_eq!(delays, vec![(1000, 1000), (250, 1000), (3333, 1000)]);
    // A viewer without APNG support still shows the first frame.
    assert_eq!(image::open(&path).unwrap().to_rgb8(), doc.frames[0].image);
}

#[test]
fn sequence_writes_numbered_frames_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("seq");
    let doc = doc(3);
    let paths = write_sequence(&out, &doc).unwrap();
    let names: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["frame_001.png", "frame_002.png", "frame_003.png"]);
    for (path, frame) in paths.iter().zip(&doc.frames) {
        assert_eq!(image::open(path).unwrap().to_rgb8(), frame.image);
    }
}

/// The PDF name following each occurrence of `key` (e.g. `/Type` -> `Page`), whitespace
/// between them allowed, as PDF syntax permits.
fn names_after(pdf: &[u8], key: &[u8]) -> Vec<String> {
    let is_delim = |b: u8| b.is_ascii_whitespace() || b"/[]<>()".contains(&b);
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = pdf[i..].windows(key.len()).position(|w| w == key) {
        let mut j = i + pos + key.len();
        while j < pdf.len() && pdf[j].is_ascii_whitespace() {
            j += 1;
        }
        if j < pdf.len() && pdf[j] == b'/' {
            let start = j + 1;
            let mut end = start;
            while end < pdf.len() && !is_delim(pdf[end]) {
                end += 1;
            }
            out.push(String::from_utf8_lossy(&pdf[start..end]).into_owned());
        }
        i = i + pos + key.len();
    }
    out
}

/// The numbers of every `/MediaBox [..]`.
fn media_boxes(pdf: &[u8]) -> Vec<Vec<f32>> {
    let key = b"/MediaBox";
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = pdf[i..].windows(key.len()).position(|w| w == key) {
        let start = i + pos + key.len();
        let open = start + pdf[start..].iter().position(|&b| b == b'[').unwrap();
        let close = open + pdf[open..].iter().position(|&b| b == b']').unwrap();
        let numbers = String::from_utf8_lossy(&pdf[open + 1..close])
            .split_whitespace()
            .map(|t| t.parse::<f32>().unwrap())
            .collect();
        out.push(numbers);
        i = close;
    }
    out
}

#[test]
fn pdf_pages_follow_the_grid() {
    let dir = tempfile::tempdir().unwrap();
    for (grid, size, orientation, frames, pages) in [
        (
            PageGrid::TwoByThree,
            PageSize::A4,
            PageOrientation::Portrait,
            7,
            2,
        ),
        (
            PageGrid::OneByThree,
            PageSize::Letter,
            PageOrientation::Landscape,
            7,
            3,
        ),
        (
            PageGrid::ThreeByThree,
            PageSize::A4,
            PageOrientation::Landscape,
            9,
            1,
        ),
    ] {
        let path = dir.path().join(format!("{grid:?}.pdf"));
        let options = PdfOptions {
            size,
            orientation,
            grid,
            ..PdfOptions::default()
        };
        write_pdf(&path, &doc(frames), &options).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert!(bytes.starts_with(b"%PDF-"));
        let types = names_after(&bytes, b"/Type");
        assert_eq!(
            types.iter().filter(|t| *t == "Page").count(),
            pages,
            "{grid:?}: {types:?}"
        );
        assert!(bytes.windows(9).any(|w| w == b"/FontFile"), "font embedded");
        let (w, h) = options.page_points();
        let boxes = media_boxes(&bytes);
        assert!(!boxes.is_empty());
        for b in &boxes {
            assert_eq!(b.len(), 4);
            assert!(
                (b[2] - w).abs() < 0.01 && (b[3] - h).abs() < 0.01,
                "{b:?} vs {w}x{h}"
            );
        }
    }
}

#[test]
fn empty_storyboards_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = doc(0);
    assert!(matches!(
        write_gif(&dir.path().join("a.gif"), &empty, 100),
        Err(ExportError::NoFrames)
    ));
    assert!(matches!(
        write_pdf(&dir.path().join("a.pdf"), &empty, &PdfOptions::default()),
        Err(ExportError::NoFrames)
    ));
}

/// The ToUnicode map of the (single) embedded font: glyph code -> text.
fn to_unicode(pdf: &[u8]) -> std::collections::HashMap<u16, String> {
    let text = String::from_utf8_lossy(pdf);
    let start = text.find("beginbfchar").expect("ToUnicode map");
    let end = start + text[start..].find("endbfchar").unwrap();
    let hex: Vec<&str> = text[start + "beginbfchar".len()..end]
        .split(['<', '>'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    hex.chunks(2)
        .map(|pair| {
            let code = u16::from_str_radix(pair[0], 16).unwrap();
            let units: Vec<u16> = (0..pair[1].len())
                .step_by(4)
                .map(|i| u16::from_str_radix(&pair[1][i..i + 4], 16).unwrap())
                .collect();
            (code, String::from_utf16(&units).unwrap())
        })
        .collect()
}

/// Bytes of every PDF literal string `( … )` in `ops`, escapes resolved.
fn literal_strings(ops: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < ops.len() {
        if ops[i] != b'(' {
            i += 1;
            continue;
        }
        i += 1;
        while i < ops.len() && ops[i] != b')' {
            if ops[i] == b'\\' {
                i += 1;
                match ops[i] {
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    d @ b'0'..=b'7' => {
                        let mut value = u32::from(d - b'0');
                        for _ in 0..2 {
                            if matches!(ops.get(i + 1), Some(b'0'..=b'7')) {
                                i += 1;
                                value = value * 8 + u32::from(ops[i] - b'0');
                            }
                        }
                        out.push(value as u8);
                    }
                    other => out.push(other),
                }
            } else {
                out.push(ops[i]);
            }
            i += 1;
        }
        i += 1;
    }
    out
}

/// Text of every text object (`BT … ET`) of an uncompressed PDF, one string per object.
fn pdf_text_lines(pdf: &[u8]) -> Vec<String> {
    let map = to_unicode(pdf);
    let mut lines = Vec::new();
    let mut i = 0;
    while let Some(pos) = pdf[i..].windows(3).position(|w| w == b"BT ") {
        let start = i + pos;
        let end = start + pdf[start..].windows(2).position(|w| w == b"ET").unwrap();
        let codes = literal_strings(&pdf[start..end]);
        let line: String = codes
            .chunks(2)
            .map(|c| {
                map.get(&u16::from_be_bytes([c[0], c[1]]))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        lines.push(line);
        i = end;
    }
    lines
}

#[test]
fn pdf_pages_carry_the_captions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("captions.pdf");
    let options = PdfOptions {
        compress: false,
        grid: PageGrid::OneByThree,
        ..PdfOptions::default()
    };
    let doc = doc(2);
    write_pdf(&path, &doc, &options).unwrap();
    let lines = pdf_text_lines(&fs::read(&path).unwrap());
    assert_eq!(lines[0], "Animatic");
    assert!(lines[1].starts_with("a red kite · 2026-11-23"), "{lines:?}");
    // Wrapping only breaks at spaces: the lines of a caption joined by spaces give it back.
    let joined = lines.join(" ");
    for frame in &doc.frames {
        assert!(
            joined.contains(&frame.action),
            "{:?} not in {lines:?}",
            frame.action
        );
    }
    assert!(joined.contains("\u{201c}Hold on!\u{201d}"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "1") && lines.iter().any(|l| l == "2"));
}
