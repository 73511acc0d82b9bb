//! Frame sheet PNG decoded back: sizes, captions present, long captions stay inside their
//! cell, overlays baked in; and building the export from a project folder.

use image::{Rgb, RgbImage};
use storyloom::export::sheet::{SheetLayout, layout_sheet, render_sheet};
use storyloom::export::{ExportDocument, ExportFrame, SheetOptions, collect, write_sheet};
use storyloom::project::analysis::{TokenGridMask, TokenMatch, write_mask, write_matches};
use storyloom::project::{self, FrameVersion, ImageSettings, Project, write_png_with_settings};

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);

fn frame(number: usize, action: &str, dialogue: &str) -> ExportFrame {
    let shade = (number * 40 % 200) as u8;
    ExportFrame {
        number,
        label: format!("Scene {}", number.div_ceil(2)),
        action: action.into(),
        dialogue: dialogue.into(),
        image: RgbImage::from_pixel(64, 36, Rgb([shade, 90, 200 - shade])),
        duration_ms: 1000 + number as u32 * 250,
        mask: None,
        matches: Vec::new(),
        missing: false,
    }
}

const LONG: &str = "The keeper climbs all two hundred steps of the spiral stair while the storm \
    rattles every window, stops twice to catch his breath, checks the oil in the lantern, \
    mutters about the supply boat that never came, and finally reaches the lamp room where \
    the great lens waits in the dark for him to bring it back to life before the ships arrive";

fn doc() -> ExportDocument {
    ExportDocument {
        title: "The lighthouse keeper".into(),
        identity_prompt: "an old keeper with a white beard and a yellow raincoat".into(),
        date: "2026-11-23".into(),
        frames: vec![
            frame(1, "opens the door", "Who's there?"),
            frame(2, LONG, ""),
            frame(3, "looks at the sea", ""),
            frame(4, "lights the lamp", "There."),
            frame(5, "sleeps", ""),
        ],
    }
}

fn options() -> SheetOptions {
    SheetOptions {
        columns: 3,
        cell_width: 160,
        margin: 20,
        gutter: 12,
        font_size: 12.0,
        ..SheetOptions::default()
    }
}

fn has_ink(img: &RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> bool {
    (y0..y1.min(img.height()))
        .any(|y| (x0..x1.min(img.width())).any(|x| *img.get_pixel(x, y) != WHITE))
}

#[test]
fn sheet_png_has_the_layout_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sheet.png");
    let (doc, opts) = (doc(), options());
    write_sheet(&path, &doc, &opts).unwrap();
    let decoded = image::open(&path).unwrap().to_rgb8();
    let layout = layout_sheet(&doc, &opts);
    assert_eq!(decoded.dimensions(), (layout.width, layout.height));
    assert_eq!(layout.width, 2 * 20 + 3 * 160 + 2 * 12);
    assert_eq!(layout.cells.len(), 5);
    // Image 64x36 scaled to 160 wide.
    assert!(layout.cells.iter().all(|c| c.image_height == 90));
}

#[test]
fn every_caption_band_has_ink_and_the_header_too() {
    let (doc, opts) = (doc(), options());
    let sheet = render_sheet(&doc, &opts).unwrap();
    let layout = layout_sheet(&doc, &opts);
    for cell in &layout.cells {
        let top = cell.y + cell.image_height + 1;
        assert!(
            has_ink(
                &sheet,
                cell.x,
                top,
                cell.x + cell.width,
                cell.y + cell.row_height
            ),
            "no caption under the cell at ({}, {})",
            cell.x,
            cell.y
        );
    }
    let first_row = layout.cells[0].y;
    assert!(has_ink(&sheet, 0, 0, sheet.width(), first_row));
}

fn assert_gutters_clean(sheet: &RgbImage, layout: &SheetLayout, columns: usize) {
    for (i, cell) in layout.cells.iter().enumerate() {
        let bottom = cell.y + cell.row_height;
        // Nothing to the right of the cell, down to the row's bottom (next column's gutter).
        if (i + 1) % columns != 0 {
            assert!(
                !has_ink(
                    sheet,
                    cell.x + cell.width,
                    cell.y,
                    cell.x + cell.width + 12,
                    bottom
                ),
                "ink in the gutter right of frame {}",
                i + 1
            );
        }
        // Nothing between this row's bottom and the next row (or the sheet's end).
        let next_top = layout.cells.get(i + columns).map_or(layout.height, |c| c.y);
        assert!(
            !has_ink(sheet, cell.x, bottom, cell.x + cell.width, next_top),
            "ink below frame {} (bottom {bottom}, next row {next_top})",
            i + 1
        );
    }
}

#[test]
fn long_captions_wrap_inside_their_cell_and_grow_the_row() {
    let (doc, opts) = (doc(), options());
    let sheet = render_sheet(&doc, &opts).unwrap();
    let layout = layout_sheet(&doc, &opts);
    let long_cell = &layout.cells[1];
    assert!(long_cell.lines.len() > 8, "{} lines", long_cell.lines.len());
    // The whole first row is as tall as the long caption needs.
    let needed = long_cell.lines.last().unwrap().y + layout.line_height - long_cell.y;
    assert!(layout.cells[0].row_height >= needed);
    assert_eq!(layout.cells[0].row_height, layout.cells[2].row_height);
    // The second row is shorter: rows grow only for their own captions.
    assert!(layout.cells[3].row_height < layout.cells[0].row_height);
    assert_gutters_clean(&sheet, &layout, 3);
}

#[test]
fn font_size_and_columns_are_adjustable() {
    let doc = doc();
    let small = layout_sheet(&doc, &options());
    let big = layout_sheet(
        &doc,
        &SheetOptions {
            font_size: 20.0,
            ..options()
        },
    );
    assert!(big.line_height > small.line_height);
    assert!(big.cells[1].lines.len() > small.cells[1].lines.len());
    assert!(big.height > small.height);

    let opts = SheetOptions {
        columns: 1,
        show_header: false,
        show_numbers: false,
        ..options()
    };
    let sheet = render_sheet(&doc, &opts).unwrap();
    let one = layout_sheet(&doc, &opts);
    assert_eq!(one.width, 2 * 20 + 160);
    assert_eq!(one.cells[0].y, 20, "no header");
    assert_gutters_clean(&sheet, &one, 1);
}

#[test]
fn overlay_bakes_the_mask_tint_and_match_points() {
    let mut doc = doc();
    doc.frames.truncate(1);
    // 2 x 4 token grid, foreground = left half.
    doc.frames[0].mask = Some(TokenGridMask::from_flags(
        2,
        4,
        &[true, true, false, false, true, true, false, false],
    ));
    doc.frames[0].matches = vec![TokenMatch {
        frame_token: 7, // row 1, col 3: in the background half, bottom right
        identity_token: 0,
        similarity: 0.9,
    }];
    let plain = render_sheet(&doc, &options()).unwrap();
    let baked = render_sheet(
        &doc,
        &SheetOptions {
            overlay: true,
            ..options()
        },
    )
    .unwrap();
    let cell = &layout_sheet(&doc, &options()).cells[0];
    let (cx, cy) = (cell.x, cell.y);
    // Foreground quarter tinted, background quarter unchanged away from the match dot.
    assert_ne!(
        plain.get_pixel(cx + 20, cy + 20),
        baked.get_pixel(cx + 20, cy + 20)
    );
    assert_eq!(
        plain.get_pixel(cx + 100, cy + 20),
        baked.get_pixel(cx + 100, cy + 20)
    );
    // Match dot at the centre of token (1, 3): x = 7/8 of 160, y = 3/4 of 90.
    assert_eq!(*baked.get_pixel(cx + 140, cy + 67), Rgb([0, 200, 255]));
}

#[test]
fn collect_reads_the_project_folder_and_survives_missing_images() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Project {
        title: "Collected".into(),
        ..Project::default()
    };
    p.identity.prompt = "a fox".into();
    for id in 1..=3u64 {
        let mut f = project::Frame::new(id, id);
        f.action = format!("shot {id}");
        let file = format!("frames/{id}.png");
        f.versions.push(FrameVersion {
            file,
            mask_file: (id == 1).then(|| "frames/1.mask.png".to_string()),
            matches_file: (id == 1).then(|| "frames/1.matches.csv".to_string()),
            ..FrameVersion::default()
        });
        f.active_version = Some(0);
        p.frames.push(f);
    }
    project::create(dir.path(), &p).unwrap();
    for id in [1u32, 3] {
        let img = RgbImage::from_pixel(32, 16, Rgb([id as u8 * 50, 0, 0]));
        write_png_with_settings(
            &dir.path().join(format!("frames/{id}.png")),
            &img,
            &ImageSettings::default(),
        )
        .unwrap();
    }
    let mask = TokenGridMask::from_flags(1, 2, &[true, false]);
    write_mask(&dir.path().join("frames/1.mask.png"), &mask).unwrap();
    let matches = vec![TokenMatch {
        frame_token: 0,
        identity_token: 1,
        similarity: 0.75,
    }];
    write_matches(&dir.path().join("frames/1.matches.csv"), &matches).unwrap();

    let opened = project::open(dir.path()).unwrap();
    let (doc, warnings) = collect(dir.path(), &opened.project, "2026-11-23").unwrap();
    assert_eq!(doc.frames.len(), 3);
    assert_eq!(doc.frames[0].image.get_pixel(0, 0), &Rgb([50, 0, 0]));
    assert_eq!(doc.frames[0].mask.as_ref(), Some(&mask));
    assert_eq!(doc.frames[0].matches, matches);
    assert!(doc.frames[1].missing);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("frame 2"), "{warnings:?}");
    // The export still works with the placeholder.
    let sheet = render_sheet(&doc, &options()).unwrap();
    assert!(sheet.width() > 0);
}
