//! A rendered story's CharaConsist results as the built-in world's checker reads them (the
//! consistency figures and the demo's regression test measure with this).

use image::RgbImage;

use super::FrameResult;
use crate::consistency::characonsist::TokenMask;
use crate::model::builtin::checker::{Checker, FrameView, GroundingTally, TokenMaskView};

fn view(mask: &TokenMask) -> TokenMaskView<'_> {
    TokenMaskView {
        rows: mask.rows,
        cols: mask.cols,
        fg: &mask.fg,
    }
}

/// Adds one story (its identity image and frame results) to `tally`. Frames without a
/// CharaConsist analysis are skipped; a story with none adds nothing.
pub fn tally_story(
    tally: &mut GroundingTally,
    checker: &Checker,
    identity: &RgbImage,
    results: &[FrameResult],
) {
    let analysed: Vec<_> = results
        .iter()
        .filter_map(|r| Some((&r.image, r.analysis.characonsist.as_ref()?)))
        .collect();
    let Some((_, first)) = analysed.first() else {
        return;
    };
    let matches: Vec<Vec<(u32, u32)>> = analysed
        .iter()
        .map(|(_, a)| {
            a.matches
                .iter()
                .map(|m| (m.frame_token, m.identity_token))
                .collect()
        })
        .collect();
    let frames: Vec<FrameView<'_>> = analysed
        .iter()
        .zip(&matches)
        .map(|((image, a), matches)| FrameView {
            image,
            mask: view(&a.frame_mask),
            matches,
        })
        .collect();
    tally.add_story(checker, identity, view(&first.identity_mask), &frames);
}
