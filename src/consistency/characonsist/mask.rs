//! Foreground masks from image-to-text attention (CharaConsist eqs. 6-9).
//!
//! A prompt is background first, then character and action, so its real text tokens split
//! into a background span `[0, bg_len)` and a foreground span `[bg_len, real_len)` (EOS and
//! padding excluded). Per single block, the image tokens' attention over the real text
//! tokens only (eq. 6) is summed over heads and averaged within each span; averaged over
//! blocks (eqs. 7-8), a token is foreground where it attends more to the foreground text
//! (eq. 9), then the mask is cleaned by erosion and dilation.

use std::ops::Range;

use candle_core::{D, DType, Tensor};
use image::{GrayImage, Luma};
use serde::{Deserialize, Serialize};

use super::CharaConsistError;
use super::morphology;
use super::settings::{CharaConsistSettings, MaskVariant};

/// Where the background and the foreground description sit among the text tokens.
///
/// Each part is a list of token ranges, so a part need not be contiguous: with one combined
/// prompt `[identity, bg_1, act_1, bg_2, act_2, …]` frame `i`'s background is `bg_i` and its
/// foreground is `identity ∪ act_i`. `real_text` is the columns the softmax of eq. (6) runs
/// over (every real token, EOS and padding excluded); both parts lie inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSpans {
    background: Vec<Range<usize>>,
    foreground: Vec<Range<usize>>,
    real_text: Range<usize>,
}

impl PromptSpans {
    /// One contiguous background span and one contiguous foreground span (character and
    /// action); the real text runs from the first start to the last end.
    pub fn new(background: Range<usize>, foreground: Range<usize>) -> Self {
        let real_text = background.start.min(foreground.start)..background.end.max(foreground.end);
        Self {
            background: vec![background],
            foreground: vec![foreground],
            real_text,
        }
    }

    /// Parts made of several ranges, and the softmax columns given explicitly. Ranges are
    /// clipped to `real_text` (columns outside it take no probability, so they cannot count
    /// in a part's mean); overlapping or adjacent ranges of a part are merged (a token counts
    /// once) and empty ones dropped.
    pub fn from_parts(
        background: Vec<Range<usize>>,
        foreground: Vec<Range<usize>>,
        real_text: Range<usize>,
    ) -> Self {
        let clip = |v: Vec<Range<usize>>| -> Vec<Range<usize>> {
            v.into_iter()
                .map(|r| r.start.max(real_text.start)..r.end.min(real_text.end))
                .collect()
        };
        Self {
            background: normalized(clip(background)),
            foreground: normalized(clip(foreground)),
            real_text: real_text.clone(),
        }
    }

    /// The background part's token ranges.
    pub fn background(&self) -> &[Range<usize>] {
        &self.background
    }

    /// The foreground part's token ranges (character and action).
    pub fn foreground(&self) -> &[Range<usize>] {
        &self.foreground
    }

    /// The columns the softmax of eq. (6) runs over.
    pub fn real_text(&self) -> Range<usize> {
        self.real_text.clone()
    }

    /// Whether the prompt has no foreground words.
    pub fn has_foreground(&self) -> bool {
        self.foreground.iter().any(|r| !r.is_empty())
    }

    /// Largest token index + 1 used by either part.
    fn parts_end(&self) -> usize {
        self.background
            .iter()
            .chain(&self.foreground)
            .map(|r| r.end)
            .max()
            .unwrap_or(0)
    }

    /// The same spans with every index moved down by `offset` (columns of a probability
    /// matrix that starts at text token `offset`).
    fn shifted_down(&self, offset: usize) -> Self {
        let shift = |v: &[Range<usize>]| -> Vec<Range<usize>> {
            v.iter().map(|r| r.start - offset..r.end - offset).collect()
        };
        Self {
            background: shift(&self.background),
            foreground: shift(&self.foreground),
            real_text: self.real_text.start - offset..self.real_text.end - offset,
        }
    }
}

/// Sorted, non-empty, non-overlapping ranges covering the same tokens.
fn normalized(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.retain(|r| !r.is_empty());
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// A foreground mask on the image token grid (row-major, `rows x cols`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TokenMask {
    pub rows: usize,
    pub cols: usize,
    pub fg: Vec<bool>,
}

impl TokenMask {
    pub fn new(rows: usize, cols: usize, fg: Vec<bool>) -> Result<Self, CharaConsistError> {
        if fg.len() != rows * cols {
            return Err(CharaConsistError::Shape {
                what: "token mask",
                expected: format!("{rows}x{cols} = {} tokens", rows * cols),
                got: format!("{} tokens", fg.len()),
            });
        }
        Ok(Self { rows, cols, fg })
    }

    /// Everything background.
    pub fn empty(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            fg: vec![false; rows * cols],
        }
    }

    pub fn len(&self) -> usize {
        self.fg.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fg.is_empty()
    }

    /// Number of foreground tokens.
    pub fn count(&self) -> usize {
        self.fg.iter().filter(|&&f| f).count()
    }

    pub fn is_fg(&self, token: usize) -> bool {
        self.fg.get(token).copied().unwrap_or(false)
    }

    /// Foreground token indices in order (eq. 10: `nonzero(M)`).
    pub fn foreground_tokens(&self) -> Vec<u32> {
        self.fg
            .iter()
            .enumerate()
            .filter(|(_, f)| **f)
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// One pixel per token: 255 foreground, 0 background.
    pub fn to_gray_image(&self) -> GrayImage {
        GrayImage::from_fn(self.cols as u32, self.rows as u32, |x, y| {
            let on = self.fg[y as usize * self.cols + x as usize];
            Luma([if on { 255 } else { 0 }])
        })
    }

    /// Any non-zero pixel is foreground.
    pub fn from_gray_image(image: &GrayImage) -> Self {
        Self {
            rows: image.height() as usize,
            cols: image.width() as usize,
            fg: image.pixels().map(|p| p[0] > 0).collect(),
        }
    }

    /// Nearest-neighbour upsampling to a `width x height` pixel mask (255/0).
    pub fn upsample_to_pixels(&self, width: u32, height: u32) -> GrayImage {
        if self.rows == 0 || self.cols == 0 {
            return GrayImage::new(width, height);
        }
        GrayImage::from_fn(width, height, |x, y| {
            let col = (x as usize * self.cols) / width as usize;
            let row = (y as usize * self.rows) / height as usize;
            Luma([if self.fg[row * self.cols + col] {
                255
            } else {
                0
            }])
        })
    }

    /// Erosion then dilation with squares of the given radii (see [`morphology::clean`]).
    pub fn cleaned(&self, erosion_radius: u8, dilation_radius: u8) -> Self {
        Self::from_gray_image(&morphology::clean(
            &self.to_gray_image(),
            erosion_radius,
            dilation_radius,
        ))
    }
}

/// Image-to-text attention probabilities over the real text tokens (eq. 6) from RoPE'd
/// queries of the image tokens `[H, n_img, d]` and keys of the text tokens `[H, n_txt, d]`:
/// softmax over `spans.real_text()` only, so EOS and padding take no probability. Logits are
/// scaled by the variant's factor. Returns `[H, n_img, real_len]` in f32, whose column `j`
/// is text token `spans.real_text().start + j`.
pub fn image_to_text_probs(
    q_img: &Tensor,
    k_txt: &Tensor,
    spans: &PromptSpans,
    variant: MaskVariant,
) -> Result<Tensor, CharaConsistError> {
    let (_, _, head_dim) = q_img.dims3()?;
    let (_, n_txt, _) = k_txt.dims3()?;
    let real = spans.real_text();
    if real.end > n_txt {
        return Err(CharaConsistError::Shape {
            what: "text keys",
            expected: format!("at least {} text tokens", real.end),
            got: format!("{n_txt}"),
        });
    }
    let q = q_img.to_dtype(DType::F32)?;
    let k = k_txt
        .narrow(1, real.start, real.len())?
        .to_dtype(DType::F32)?;
    let logits = q.matmul(&k.transpose(1, 2)?.contiguous()?)?;
    let logits = (logits * variant.logit_scale(head_dim))?;
    Ok(candle_nn::ops::softmax(&logits, D::Minus1)?)
}

/// Per image token, the mean of `summed` `[n_img, n_cols]` over the columns of a part
/// (eqs. 7-8); 0 for an empty part. A single range is averaged directly so the contiguous
/// case computes exactly what it always did.
fn part_mean(summed: &Tensor, part: &[Range<usize>]) -> Result<Vec<f32>, CharaConsistError> {
    let n_img = summed.dim(0)?;
    let part: Vec<&Range<usize>> = part.iter().filter(|r| !r.is_empty()).collect();
    let mean = match part.as_slice() {
        [] => return Ok(vec![0.0; n_img]),
        [one] => summed.narrow(1, one.start, one.len())?.mean(1)?,
        many => {
            let columns: Vec<u32> = many
                .iter()
                .flat_map(|r| (*r).clone())
                .map(|c| c as u32)
                .collect();
            let index = Tensor::from_vec(
                columns,
                many.iter().map(|r| r.len()).sum::<usize>(),
                summed.device(),
            )?;
            summed.index_select(&index, 1)?.mean(1)?
        }
    };
    Ok(mean.to_vec1::<f32>()?)
}

/// Background and foreground attention of every image token, accumulated over blocks
/// (eqs. 7-8).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MaskAccumulator {
    bg: Vec<f32>,
    fg: Vec<f32>,
    layers: usize,
}

impl MaskAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn layers(&self) -> usize {
        self.layers
    }

    /// Adds one block's probabilities `[H, n_img, n_cols]`; `spans` index the columns.
    /// Heads are summed, then each span's columns averaged.
    pub fn add_probs(
        &mut self,
        probs: &Tensor,
        spans: &PromptSpans,
    ) -> Result<(), CharaConsistError> {
        let (_, n_img, n_cols) = probs.dims3()?;
        if spans.parts_end() > n_cols {
            return Err(CharaConsistError::Shape {
                what: "attention probabilities",
                expected: format!("at least {} text columns", spans.parts_end()),
                got: format!("{n_cols}"),
            });
        }
        if self.layers > 0 && self.bg.len() != n_img {
            return Err(CharaConsistError::Shape {
                what: "attention probabilities",
                expected: format!("{} image tokens as in earlier blocks", self.bg.len()),
                got: format!("{n_img}"),
            });
        }
        let summed = probs.to_dtype(DType::F32)?.sum(0)?; // [n_img, n_cols]
        let bg = part_mean(&summed, spans.background())?;
        let fg = part_mean(&summed, spans.foreground())?;
        if self.layers == 0 {
            self.bg = bg;
            self.fg = fg;
        } else {
            self.bg.iter_mut().zip(&bg).for_each(|(a, b)| *a += b);
            self.fg.iter_mut().zip(&fg).for_each(|(a, b)| *a += b);
        }
        self.layers += 1;
        Ok(())
    }

    /// Adds one block from image queries `[H, n_img, d]` and text keys `[H, n_txt, d]`.
    pub fn add_queries_keys(
        &mut self,
        q_img: &Tensor,
        k_txt: &Tensor,
        spans: &PromptSpans,
        variant: MaskVariant,
    ) -> Result<(), CharaConsistError> {
        let probs = image_to_text_probs(q_img, k_txt, spans, variant)?;
        self.add_probs(&probs, &spans.shifted_down(spans.real_text().start))
    }

    /// Per-token averaged attention to the background and the foreground text (eqs. 7-8).
    pub fn scores(&self) -> (Vec<f32>, Vec<f32>) {
        let n = self.layers.max(1) as f32;
        (
            self.bg.iter().map(|v| v / n).collect(),
            self.fg.iter().map(|v| v / n).collect(),
        )
    }

    /// The raw mask of eq. (9) on a `rows x cols` grid. With an empty foreground span
    /// nothing is foreground.
    pub fn raw_mask(
        &self,
        rows: usize,
        cols: usize,
        spans: &PromptSpans,
        variant: MaskVariant,
    ) -> Result<TokenMask, CharaConsistError> {
        if self.layers == 0 {
            return Err(CharaConsistError::NoLayers);
        }
        if !spans.has_foreground() {
            return TokenMask::new(rows, cols, vec![false; self.bg.len()]);
        }
        let (bg, fg) = self.scores();
        let fg = bg
            .iter()
            .zip(&fg)
            .map(|(&b, &f)| variant.is_foreground(b, f))
            .collect();
        TokenMask::new(rows, cols, fg)
    }

    /// The mask as the settings ask for it: eq. (9) with the settings' variant, then
    /// erosion and dilation when `clean_mask` is on, with radii scaled to the grid.
    pub fn mask(
        &self,
        rows: usize,
        cols: usize,
        spans: &PromptSpans,
        settings: &CharaConsistSettings,
    ) -> Result<TokenMask, CharaConsistError> {
        let raw = self.raw_mask(rows, cols, spans, settings.mask_variant)?;
        Ok(if settings.clean_mask {
            let (erosion, dilation) = settings.mask_radii(rows, cols);
            raw.cleaned(erosion, dilation)
        } else {
            raw
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Probabilities `[heads, n_img, 4]` for the text "bg bg fg fg": tokens listed in
    /// `fg_tokens` put 0.4 on each fg column, the others 0.4 on each bg column.
    fn pattern(heads: usize, n_img: usize, fg_tokens: &[usize]) -> Tensor {
        let mut data = Vec::new();
        for _ in 0..heads {
            for i in 0..n_img {
                if fg_tokens.contains(&i) {
                    data.extend_from_slice(&[0.1, 0.1, 0.4, 0.4]);
                } else {
                    data.extend_from_slice(&[0.4, 0.4, 0.1, 0.1]);
                }
            }
        }
        Tensor::from_vec(data, (heads, n_img, 4), &Device::Cpu).unwrap()
    }

    fn spans() -> PromptSpans {
        PromptSpans::new(0..2, 2..4)
    }

    #[test]
    fn tokens_attending_to_the_character_are_foreground() {
        // 3x4 grid; tokens 1, 2, 5 look at the foreground words.
        let mut acc = MaskAccumulator::new();
        acc.add_probs(&pattern(2, 12, &[1, 2, 5]), &spans())
            .unwrap();
        acc.add_probs(&pattern(2, 12, &[1, 2, 5]), &spans())
            .unwrap();
        // Heads summed: bg = 2·0.1 = 0.2 and fg = 2·0.4 = 0.8 for token 1.
        let (bg, fg) = acc.scores();
        assert!((bg[1] - 0.2).abs() < 1e-6 && (fg[1] - 0.8).abs() < 1e-6);
        let mask = acc
            .raw_mask(3, 4, &spans(), MaskVariant::ReleasedCode)
            .unwrap();
        assert_eq!(mask.foreground_tokens(), vec![1, 2, 5]);
        assert_eq!(mask.count(), 3);
    }

    #[test]
    fn layers_are_averaged_before_comparing() {
        // Block A says fg strongly for token 0, block B says bg weakly: the average is fg.
        let mut a = vec![0.0f32; 4];
        a.copy_from_slice(&[0.0, 0.0, 0.5, 0.5]);
        let b = [0.3f32, 0.3, 0.2, 0.2];
        let mut acc = MaskAccumulator::new();
        for row in [a.to_vec(), b.to_vec()] {
            acc.add_probs(
                &Tensor::from_vec(row, (1, 1, 4), &Device::Cpu).unwrap(),
                &spans(),
            )
            .unwrap();
        }
        // bg = (0 + 0.3)/2 = 0.15, fg = (0.5 + 0.2)/2 = 0.35.
        let (bg, fg) = acc.scores();
        assert!((bg[0] - 0.15).abs() < 1e-6 && (fg[0] - 0.35).abs() < 1e-6);
        assert_eq!(
            acc.raw_mask(1, 1, &spans(), MaskVariant::Paper).unwrap().fg,
            vec![true]
        );
    }

    #[test]
    fn variants_differ_exactly_on_ties() {
        // Token 0 ties (0.25 everywhere), token 1 is fg, token 2 is bg.
        let data = vec![
            0.25f32, 0.25, 0.25, 0.25, //
            0.1, 0.1, 0.4, 0.4, //
            0.4, 0.4, 0.1, 0.1,
        ];
        let probs = Tensor::from_vec(data, (1, 3, 4), &Device::Cpu).unwrap();
        let mut acc = MaskAccumulator::new();
        acc.add_probs(&probs, &spans()).unwrap();
        let code = acc
            .raw_mask(1, 3, &spans(), MaskVariant::ReleasedCode)
            .unwrap();
        let paper = acc.raw_mask(1, 3, &spans(), MaskVariant::Paper).unwrap();
        assert_eq!(code.fg, vec![true, true, false]);
        assert_eq!(paper.fg, vec![false, true, false]);
    }

    #[test]
    fn softmax_runs_over_the_real_text_only() {
        // One head, d = 1, text keys [bg, fg, eos, pad] = [1, 2, 50, 50]; the query 1.
        // Over the real tokens only: softmax([1, 2]) = [0.26894142, 0.73105858]; EOS and
        // padding, despite their huge logits, take nothing.
        let q = Tensor::from_vec(vec![1.0f32], (1, 1, 1), &Device::Cpu).unwrap();
        let k = Tensor::from_vec(vec![1.0f32, 2.0, 50.0, 50.0], (1, 4, 1), &Device::Cpu).unwrap();
        let s = PromptSpans::new(0..1, 1..2);
        let p = image_to_text_probs(&q, &k, &s, MaskVariant::ReleasedCode).unwrap();
        let p = p.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(p.len(), 2);
        assert!((p[0] - 0.268_941_42).abs() < 1e-6 && (p[1] - 0.731_058_6).abs() < 1e-6);
        // Paper variant with d = 4 scales logits by 1/2: q = [1,1,1,1]/.. keys give logits
        // 2 and 4 unscaled -> 1 and 2 scaled, so the same probabilities as above.
        let q4 = Tensor::from_vec(vec![0.5f32; 4], (1, 1, 4), &Device::Cpu).unwrap();
        let k4 = Tensor::from_vec(
            [vec![1.0f32; 4], vec![2.0f32; 4]].concat(),
            (1, 2, 4),
            &Device::Cpu,
        )
        .unwrap();
        let p4 = image_to_text_probs(&q4, &k4, &s, MaskVariant::Paper).unwrap();
        let p4 = p4.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!((p4[0] - 0.268_941_42).abs() < 1e-6);
    }

    #[test]
    fn queries_and_keys_give_the_same_mask_as_their_probabilities() {
        let dev = Device::Cpu;
        let q = Tensor::from_vec(
            vec![1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0, -1.0, 0.0],
            (2, 2, 2),
            &dev,
        )
        .unwrap();
        let k = Tensor::from_vec(
            vec![
                2.0f32, 0.0, 0.0, 2.0, 9.0, 9.0, 0.0, 2.0, 2.0, 0.0, 9.0, 9.0,
            ],
            (2, 3, 2),
            &dev,
        )
        .unwrap();
        let s = PromptSpans::new(0..1, 1..2);
        let mut from_qk = MaskAccumulator::new();
        from_qk
            .add_queries_keys(&q, &k, &s, MaskVariant::ReleasedCode)
            .unwrap();
        let probs = image_to_text_probs(&q, &k, &s, MaskVariant::ReleasedCode).unwrap();
        let mut from_p = MaskAccumulator::new();
        from_p.add_probs(&probs, &s).unwrap();
        assert_eq!(from_qk, from_p);
    }

    #[test]
    fn contiguous_parts_are_the_simple_constructor() {
        assert_eq!(
            PromptSpans::from_parts(vec![0..2], vec![2..4], 0..4),
            PromptSpans::new(0..2, 2..4)
        );
        // Overlapping and adjacent ranges merge, empty ones vanish.
        let s = PromptSpans::from_parts(vec![3..4, 0..1, 1..2, 5..5], vec![6..8, 7..9], 0..9);
        assert_eq!(s.background(), &[0..2, 3..4]);
        assert_eq!(s.foreground(), &[6..9]);
        assert_eq!(s.real_text(), 0..9);
        // Parts are clipped to the softmax columns: EOS at 4 is not foreground.
        let s = PromptSpans::from_parts(vec![0..2], vec![2..5, 6..7], 0..4);
        assert_eq!(s.foreground(), &[2..4]);
    }

    #[test]
    fn non_contiguous_parts_of_a_combined_prompt() {
        // Combined prompt [identity 0..2, bg_1 2..3, act_1 3..4, bg_2 4..6, act_2 6..7],
        // EOS 7, padding 8..10. Frame 2: background bg_2, foreground identity ∪ act_2.
        let frame2 = PromptSpans::from_parts(vec![4..6], vec![0..2, 6..7], 0..7);
        let probs = Tensor::from_vec(
            vec![0.1f32, 0.2, 0.05, 0.05, 0.3, 0.1, 0.2],
            (1, 1, 7),
            &Device::Cpu,
        )
        .unwrap();
        let mut acc = MaskAccumulator::new();
        acc.add_probs(&probs, &frame2).unwrap();
        // bg = (0.3 + 0.1)/2 = 0.2; fg = (0.1 + 0.2 + 0.2)/3 = 0.1666667: background.
        let (bg, fg) = acc.scores();
        assert!((bg[0] - 0.2).abs() < 1e-6, "{}", bg[0]);
        assert!((fg[0] - 0.166_666_67).abs() < 1e-6, "{}", fg[0]);
        let mask = acc
            .raw_mask(1, 1, &frame2, MaskVariant::ReleasedCode)
            .unwrap();
        assert_eq!(mask.fg, vec![false]);
        // Frame 1 on the same probabilities: bg = 0.05; fg = (0.1 + 0.2 + 0.05)/3 = 0.1166667.
        let frame1 = PromptSpans::from_parts(vec![2..3], vec![0..2, 3..4], 0..7);
        let mut acc = MaskAccumulator::new();
        acc.add_probs(&probs, &frame1).unwrap();
        let (bg, fg) = acc.scores();
        assert!((bg[0] - 0.05).abs() < 1e-6 && (fg[0] - 0.116_666_67).abs() < 1e-6);
    }

    #[test]
    fn explicit_real_text_sets_the_softmax_columns() {
        // d = 1, query 1; text keys [BOS 50 | 0, 0, ln 2, ln 4 | EOS 50]. Real text 1..5:
        // exp = 1, 1, 2, 4 over 8 -> [1/8, 1/8, 1/4, 1/2]; BOS and EOS take nothing.
        // Background = token 3 -> 1/4; foreground = tokens 1 and 4 -> (1/8 + 1/2)/2 = 0.3125.
        let q = Tensor::from_vec(vec![1.0f32], (1, 1, 1), &Device::Cpu).unwrap();
        let k = Tensor::from_vec(
            vec![
                50.0f32,
                0.0,
                0.0,
                std::f32::consts::LN_2,
                2.0 * std::f32::consts::LN_2,
                50.0,
            ],
            (1, 6, 1),
            &Device::Cpu,
        )
        .unwrap();
        let s = PromptSpans::from_parts(vec![3..4], vec![1..2, 4..5], 1..5);
        let p = image_to_text_probs(&q, &k, &s, MaskVariant::ReleasedCode).unwrap();
        let p = p.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let expect = [0.125f32, 0.125, 0.25, 0.5];
        assert!(
            p.iter().zip(expect).all(|(a, b)| (a - b).abs() < 1e-6),
            "{p:?}"
        );
        let mut acc = MaskAccumulator::new();
        acc.add_queries_keys(&q, &k, &s, MaskVariant::ReleasedCode)
            .unwrap();
        let (bg, fg) = acc.scores();
        assert!((bg[0] - 0.25).abs() < 1e-6 && (fg[0] - 0.3125).abs() < 1e-6);
    }

    #[test]
    fn no_foreground_words_means_no_foreground() {
        let mut acc = MaskAccumulator::new();
        acc.add_probs(&pattern(1, 4, &[0, 1]), &spans()).unwrap();
        let s = PromptSpans::new(0..4, 4..4);
        let mask = acc.raw_mask(2, 2, &s, MaskVariant::ReleasedCode).unwrap();
        assert_eq!(mask.count(), 0);
    }

    #[test]
    fn settings_mask_is_cleaned() {
        // 64x64 grid (FLUX at 1024 px), a single fg token in the middle: erosion removes it.
        let mut acc = MaskAccumulator::new();
        acc.add_probs(&pattern(1, 64 * 64, &[32 * 64 + 32]), &spans())
            .unwrap();
        let settings = CharaConsistSettings::default();
        assert_eq!(
            acc.raw_mask(64, 64, &spans(), settings.mask_variant)
                .unwrap()
                .count(),
            1
        );
        assert_eq!(acc.mask(64, 64, &spans(), &settings).unwrap().count(), 0);
    }

    #[test]
    fn small_grid_keeps_a_character_two_tokens_wide() {
        // 8x8 grid (the built-in model), a 2x2 foreground: the radii scale to 0, so the
        // cleaned mask is the raw one (a 3x3 erosion would leave nothing).
        let mut acc = MaskAccumulator::new();
        acc.add_probs(&pattern(1, 64, &[27, 28, 35, 36]), &spans())
            .unwrap();
        let settings = CharaConsistSettings::default();
        let mask = acc.mask(8, 8, &spans(), &settings).unwrap();
        assert_eq!(mask.foreground_tokens(), vec![27, 28, 35, 36]);
    }

    #[test]
    fn gray_image_and_upsampling() {
        let mask = TokenMask::new(2, 3, vec![true, false, false, false, false, true]).unwrap();
        let img = mask.to_gray_image();
        assert_eq!((img.width(), img.height()), (3, 2));
        assert_eq!(TokenMask::from_gray_image(&img), mask);
        // 6x4 pixels: each token is a 2x2 block.
        let px = mask.upsample_to_pixels(6, 4);
        assert_eq!(px.pixels().filter(|p| p[0] == 255).count(), 8);
        assert_eq!(px.get_pixel(1, 1)[0], 255);
        assert_eq!(px.get_pixel(2, 1)[0], 0);
        assert_eq!(px.get_pixel(5, 3)[0], 255);
        assert!(TokenMask::new(2, 2, vec![true]).is_err());
    }
}
