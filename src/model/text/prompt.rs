//! The combined prompt: ordered segments (identity prompt then frame prompts, or background /
//! character / action) turned into one padded token sequence with the exact token span of
//! every segment.
//!
//! Spans are exact by construction: every segment is tokenized on its own (without special
//! tokens) and the pieces are concatenated, with the separator's tokens between them, then the
//! end token, then padding:
//!
//! ```text
//! [prefix specials] seg_0 [sep] seg_1 [sep] ... seg_n  EOS  pad pad ... pad
//!                   ^^^^^       ^^^^^       ^^^^^              (max_len in all)
//! ```
//!
//! Separator tokens belong to no segment: they are the gaps between consecutive spans.
//! For the tokenizers FLUX uses (T5 Unigram with a Metaspace pre-tokenizer, CLIP BPE) and for
//! word-level tokenizers that split on whitespace, a space is only a word boundary, so
//! [`Separator::Space`] adds no token and the ids equal those of tokenizing the joined string
//! (`segments.join(" ")`); `tests/prompt_spans.rs` checks this on hand-checked sentences.
//! [`Separator::Comma`] also gives the joined text's ids, with one exception: CLIP's word
//! split reads a segment's final punctuation and the comma as one word (`letter.,`), so that
//! last piece differs (`.</w>` on its own, `.` in the joined text); the span keeps the
//! segment's own tokens.

use std::ops::Range;
use std::path::Path;

use tokenizers::Tokenizer;

use super::error::{TextError, TextModelKind};
use super::tokenizer_files::read_tokenizer;

/// What goes between two consecutive non-empty segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Separator {
    /// Nothing: the segments' tokens are concatenated. With whitespace-splitting tokenizers
    /// this gives the same tokens as [`Separator::Space`].
    None,
    /// One space: a word boundary, which adds no token with the supported tokenizers
    /// (the released CharaConsist code joins background, character and action with spaces).
    #[default]
    Space,
    /// ", ": the comma's token(s) sit between the two spans and belong to neither.
    Comma,
}

impl Separator {
    /// The text this separator stands for in the joined prompt.
    pub fn text(self) -> &'static str {
        match self {
            Separator::None => "",
            Separator::Space => " ",
            Separator::Comma => ", ",
        }
    }

    /// Joins segments the way the combined prompt reads (empty segments are skipped).
    pub fn join(self, segments: &[&str]) -> String {
        let parts: Vec<&str> = segments
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        parts.join(self.text())
    }
}

/// Ordered prompt segments and what goes between them.
#[derive(Debug, Clone, Copy)]
pub struct PromptSegments<'a> {
    pub segments: &'a [&'a str],
    pub separator: Separator,
}

/// One tokenized, padded prompt with the token span of every segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CombinedPrompt {
    /// Token ids, exactly `max_len` of them.
    pub ids: Vec<u32>,
    /// Token positions of every segment, in order (one per segment; empty for an empty
    /// segment or one cut by truncation). Special tokens and separators belong to no span.
    pub segment_spans: Vec<Range<usize>>,
    /// Position of the end-of-sequence token (always present, also after truncation).
    pub eos: usize,
    /// Positions of the padding tokens, `eos + 1 .. max_len`.
    pub padding: Range<usize>,
    /// Tokens that are not padding (prefix specials, segments, separators and the EOS):
    /// `real_len == eos + 1 == padding.start`.
    pub real_len: usize,
    /// The segments did not fit: later segments are clipped or empty (the UI must warn).
    pub truncated: bool,
    /// Token string of every id (same length as `ids`).
    pub pieces: Vec<String>,
}

impl CombinedPrompt {
    /// Tokens between the end of `segment_spans[i]` and the start of the next non-empty span:
    /// the separator tokens after segment `i`.
    pub fn gap_after(&self, i: usize) -> Range<usize> {
        let end = self.segment_spans[i].end;
        let next = self.segment_spans[i + 1..]
            .iter()
            .find(|s| !s.is_empty())
            .map_or(self.eos, |s| s.start);
        end..next.max(end)
    }
}

/// The special tokens a tokenizer puts around the text, and the padding token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Tokens before the text (CLIP: `<|startoftext|>`; T5: none).
    pub prefix: Vec<u32>,
    /// The end-of-sequence token after the text (`</s>`, `<|endoftext|>`).
    pub eos: u32,
    /// The padding token (T5: `<pad>`; CLIP in FLUX's pipelines: `<|endoftext|>`).
    pub pad: u32,
}

/// A tokenizer.json plus what the combined prompt needs to know about it.
#[derive(Clone)]
pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    special: SpecialTokens,
    max_len: usize,
}

impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptTokenizer")
            .field("special", &self.special)
            .field("max_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

impl PromptTokenizer {
    /// Reads a tokenizer.json (or a folder, see [`read_tokenizer`]); the special tokens are
    /// read from its post-processor.
    pub fn from_file(path: &Path, kind: TextModelKind, max_len: usize) -> Result<Self, TextError> {
        Self::new(read_tokenizer(path, kind)?, max_len)
    }

    /// Wraps a tokenizer; the special tokens are read from its post-processor.
    pub fn new(tokenizer: Tokenizer, max_len: usize) -> Result<Self, TextError> {
        let special = detect_special_tokens(&tokenizer)?;
        Self::with_special_tokens(tokenizer, special, max_len)
    }

    /// Wraps a tokenizer with explicitly given special tokens.
    pub fn with_special_tokens(
        mut tokenizer: Tokenizer,
        special: SpecialTokens,
        max_len: usize,
    ) -> Result<Self, TextError> {
        let needed = special.prefix.len() + 1;
        if max_len < needed {
            return Err(TextError::MaxLenTooSmall { max_len, needed });
        }
        // Segments are tokenized one by one: a truncation or padding rule stored in the
        // tokenizer.json would cut or pad every segment on its own.
        tokenizer
            .with_truncation(None)
            .map_err(|e| TextError::Tokenize {
                text: String::new(),
                reason: e.to_string(),
            })?;
        tokenizer.with_padding(None);
        Ok(Self {
            tokenizer,
            special,
            max_len,
        })
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The same tokenizer with another prompt length (e.g. 512 for dev, 256 for schnell).
    pub fn with_max_len(&self, max_len: usize) -> Result<Self, TextError> {
        Self::with_special_tokens(self.tokenizer.clone(), self.special.clone(), max_len)
    }

    /// Token ids and pieces of `text` without special tokens.
    pub fn tokenize(&self, text: &str) -> Result<(Vec<u32>, Vec<String>), TextError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| TextError::Tokenize {
                text: text.into(),
                reason: e.to_string(),
            })?;
        Ok((enc.get_ids().to_vec(), enc.get_tokens().to_vec()))
    }

    /// Ids of `text` as the tokenizer itself encodes it, with its special tokens and no
    /// padding or truncation (the reference the combined prompt is checked against).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, TextError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| TextError::Tokenize {
                text: text.into(),
                reason: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// The tokens a separator adds after `previous` (the segment before it).
    ///
    /// The separator is tokenized in context: `previous` + separator (trimmed) is tokenized
    /// and, when it starts with `previous`'s own tokens, the rest are the separator's tokens;
    /// this gives the comma the same token it gets inside a joined sentence. Otherwise (the
    /// tokenizer merged across the boundary) the separator is tokenized on its own.
    fn separator_tokens(
        &self,
        separator: Separator,
        previous: &str,
        previous_ids: &[u32],
    ) -> Result<(Vec<u32>, Vec<String>), TextError> {
        let sep = separator.text().trim();
        if sep.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let (ids, pieces) = self.tokenize(&format!("{previous}{sep}"))?;
        if ids.len() > previous_ids.len() && ids.starts_with(previous_ids) {
            let n = previous_ids.len();
            return Ok((ids[n..].to_vec(), pieces[n..].to_vec()));
        }
        self.tokenize(sep)
    }

    /// Builds the combined prompt of `segments`.
    pub fn combine(&self, prompt: PromptSegments<'_>) -> Result<CombinedPrompt, TextError> {
        let prefix = &self.special.prefix;
        // Room for the segments and separators: the EOS always stays.
        let capacity = self.max_len - prefix.len() - 1;

        let mut content: Vec<u32> = Vec::new();
        let mut content_pieces: Vec<String> = Vec::new();
        let mut spans: Vec<Range<usize>> = Vec::with_capacity(prompt.segments.len());
        let mut previous: Option<(String, Vec<u32>)> = None;
        for segment in prompt.segments {
            let text = segment.trim();
            if text.is_empty() {
                spans.push(content.len()..content.len());
                continue;
            }
            if let Some((prev_text, prev_ids)) = &previous {
                let (ids, pieces) = self.separator_tokens(prompt.separator, prev_text, prev_ids)?;
                content.extend(ids);
                content_pieces.extend(pieces);
            }
            let (ids, pieces) = self.tokenize(text)?;
            let start = content.len();
            content.extend_from_slice(&ids);
            content_pieces.extend(pieces);
            spans.push(start..content.len());
            previous = Some((text.to_string(), ids));
        }

        let truncated = content.len() > capacity;
        content.truncate(capacity);
        content_pieces.truncate(capacity);
        let offset = prefix.len();
        let segment_spans = spans
            .into_iter()
            .map(|s| offset + s.start.min(capacity)..offset + s.end.min(capacity))
            .collect();

        let mut ids = Vec::with_capacity(self.max_len);
        ids.extend_from_slice(prefix);
        ids.extend_from_slice(&content);
        let eos = ids.len();
        ids.push(self.special.eos);
        let real_len = ids.len();
        ids.resize(self.max_len, self.special.pad);

        let mut pieces: Vec<String> = prefix.iter().map(|&id| self.piece(id)).collect();
        pieces.extend(content_pieces);
        pieces.push(self.piece(self.special.eos));
        let pad_piece = self.piece(self.special.pad);
        pieces.resize(self.max_len, pad_piece);

        Ok(CombinedPrompt {
            ids,
            segment_spans,
            eos,
            padding: real_len..self.max_len,
            real_len,
            truncated,
            pieces,
        })
    }

    fn piece(&self, id: u32) -> String {
        self.tokenizer
            .id_to_token(id)
            .unwrap_or_else(|| format!("<{id}>"))
    }
}

/// Reads the tokens the post-processor puts before and after a text, and the padding token.
fn detect_special_tokens(tokenizer: &Tokenizer) -> Result<SpecialTokens, TextError> {
    let probe = "a";
    let enc = tokenizer
        .encode(probe, true)
        .map_err(|e| TextError::Tokenize {
            text: probe.into(),
            reason: e.to_string(),
        })?;
    let ids = enc.get_ids();
    let mask = enc.get_special_tokens_mask();
    let first_text = mask.iter().position(|&m| m == 0);
    let last_text = mask.iter().rposition(|&m| m == 0);
    let (prefix, suffix) = match (first_text, last_text) {
        (Some(first), Some(last)) => (ids[..first].to_vec(), ids[last + 1..].to_vec()),
        _ => return Err(TextError::NoEndToken),
    };
    // With several trailing specials the end token is the first of them.
    let eos = *suffix.first().ok_or(TextError::NoEndToken)?;
    let pad = tokenizer
        .get_padding()
        .map(|p| p.pad_id)
        .or_else(|| tokenizer.token_to_id("<pad>"))
        .unwrap_or(eos);
    Ok(SpecialTokens { prefix, eos, pad })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;
    use tokenizers::processors::template::TemplateProcessing;

    /// Word-level tokenizer: `<pad>` 0, `</s>` 1, `<unk>` 2, then the words in order.
    fn word_tokenizer(words: &[&str], template: &str, specials: &[(&str, u32)]) -> Tokenizer {
        let mut vocab: HashMap<String, u32> = HashMap::new();
        for (i, w) in ["<pad>", "</s>", "<unk>", "<s>"]
            .iter()
            .chain(words)
            .enumerate()
        {
            vocab.insert(w.to_string(), i as u32);
        }
        let model = WordLevel::builder()
            .vocab(vocab.into_iter().collect())
            .unk_token("<unk>".into())
            .build()
            .unwrap();
        let post = TemplateProcessing::builder()
            .try_single(template)
            .unwrap()
            .special_tokens(
                specials
                    .iter()
                    .map(|&(t, id)| (t.to_string(), id))
                    .collect::<Vec<_>>(),
            )
            .build()
            .unwrap();
        let mut tok = Tokenizer::new(model);
        tok.with_pre_tokenizer(Some(Whitespace));
        tok.with_post_processor(Some(post));
        tok
    }

    fn t5_like(max_len: usize) -> PromptTokenizer {
        // ids: a=4 girl=5 walks=6 home=7 ,=8
        let tok = word_tokenizer(
            &["a", "girl", "walks", "home", ","],
            "$A </s>",
            &[("</s>", 1)],
        );
        PromptTokenizer::new(tok, max_len).unwrap()
    }

    #[test]
    fn detects_end_and_pad_tokens() {
        let t = t5_like(8);
        assert_eq!(
            t.special_tokens(),
            &SpecialTokens {
                prefix: vec![],
                eos: 1,
                pad: 0
            }
        );
        let tok = word_tokenizer(&["a"], "<s> $A </s>", &[("<s>", 3), ("</s>", 1)]);
        let t = PromptTokenizer::new(tok, 8).unwrap();
        assert_eq!(t.special_tokens().prefix, vec![3]);
    }

    #[test]
    fn space_separated_segments_are_contiguous() {
        let p = t5_like(8)
            .combine(PromptSegments {
                segments: &["a girl", "walks home"],
                separator: Separator::Space,
            })
            .unwrap();
        assert_eq!(p.ids, vec![4, 5, 6, 7, 1, 0, 0, 0]);
        assert_eq!(p.segment_spans, vec![0..2, 2..4]);
        assert_eq!(p.eos, 4);
        assert_eq!(p.padding, 5..8);
        assert_eq!(p.real_len, 5);
        assert!(!p.truncated);
        assert_eq!(p.pieces[..5], ["a", "girl", "walks", "home", "</s>"]);
        assert_eq!(p.gap_after(0), 2..2);
    }

    #[test]
    fn comma_tokens_sit_between_spans() {
        let p = t5_like(8)
            .combine(PromptSegments {
                segments: &["a girl", "walks"],
                separator: Separator::Comma,
            })
            .unwrap();
        assert_eq!(p.ids, vec![4, 5, 8, 6, 1, 0, 0, 0]);
        assert_eq!(p.segment_spans, vec![0..2, 3..4]);
        assert_eq!(p.gap_after(0), 2..3);
    }

    #[test]
    fn truncation_keeps_eos_and_clips_later_segments() {
        let p = t5_like(4)
            .combine(PromptSegments {
                segments: &["a girl", "walks home", "a girl"],
                separator: Separator::Space,
            })
            .unwrap();
        assert_eq!(p.ids, vec![4, 5, 6, 1]);
        assert_eq!(p.segment_spans, vec![0..2, 2..3, 3..3]);
        assert_eq!(p.eos, 3);
        assert_eq!(p.padding, 4..4);
        assert!(p.truncated);
    }

    #[test]
    fn empty_segments_get_empty_spans_and_no_separator() {
        let p = t5_like(8)
            .combine(PromptSegments {
                segments: &["", "a girl", "  ", "home"],
                separator: Separator::Comma,
            })
            .unwrap();
        assert_eq!(p.ids[..5], [4, 5, 8, 7, 1]);
        assert_eq!(p.segment_spans, vec![0..0, 0..2, 2..2, 3..4]);
    }

    #[test]
    fn prefix_token_shifts_spans() {
        let tok = word_tokenizer(&["a", "girl"], "<s> $A </s>", &[("<s>", 3), ("</s>", 1)]);
        let p = PromptTokenizer::new(tok, 6)
            .unwrap()
            .combine(PromptSegments {
                segments: &["a", "girl"],
                separator: Separator::Space,
            })
            .unwrap();
        assert_eq!(p.ids, vec![3, 4, 5, 1, 0, 0]);
        assert_eq!(p.segment_spans, vec![1..2, 2..3]);
        assert_eq!(p.eos, 3);
    }

    #[test]
    fn too_short_max_len_is_an_error() {
        let tok = word_tokenizer(&["a"], "<s> $A </s>", &[("<s>", 3), ("</s>", 1)]);
        assert!(matches!(
            PromptTokenizer::new(tok, 1),
            Err(TextError::MaxLenTooSmall {
                max_len: 1,
                needed: 2
            })
        ));
    }

    #[test]
    fn join_skips_empty_segments() {
        assert_eq!(Separator::Comma.join(&["a", " ", "b"]), "a, b");
        assert_eq!(Separator::Space.join(&["a", "b"]), "a b");
    }
}
