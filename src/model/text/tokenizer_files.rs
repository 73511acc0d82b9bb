//! Reading a tokenizer from what the user chose: a `tokenizer.json`, a folder holding one,
//! or — for CLIP, whose folder in diffusers' FLUX repositories has only `vocab.json` and
//! `merges.txt` — a folder with those two files, from which CLIP's BPE tokenizer is built.

use std::path::{Path, PathBuf};

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::error::{TextError, TextModelKind};

/// CLIP's word split (from OpenAI's `SimpleTokenizer`, without its lowercasing which the
/// normalizer does).
const CLIP_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
pub const CLIP_START: &str = "<|startoftext|>";
pub const CLIP_END: &str = "<|endoftext|>";

/// Reads the tokenizer at `path` (see the module docs for what it may be).
pub fn read_tokenizer(path: &Path, kind: TextModelKind) -> Result<Tokenizer, TextError> {
    let missing = || TextError::MissingTokenizer {
        kind,
        path: path.into(),
    };
    let bad = |reason: String| TextError::BadTokenizer {
        kind,
        path: path.into(),
        reason,
    };
    let file: PathBuf = if path.is_dir() {
        let json = path.join("tokenizer.json");
        if json.is_file() {
            json
        } else if kind == TextModelKind::Clip
            && path.join("vocab.json").is_file()
            && path.join("merges.txt").is_file()
        {
            return clip_tokenizer_from_vocab(&path.join("vocab.json"), &path.join("merges.txt"))
                .map_err(bad);
        } else {
            return Err(missing());
        }
    } else if path.is_file() {
        path.into()
    } else {
        return Err(missing());
    };
    Tokenizer::from_file(&file).map_err(|e| bad(e.to_string()))
}

/// Builds CLIP's tokenizer the way transformers converts `CLIPTokenizer` to a fast one:
/// NFC, runs of whitespace to one space, lowercase; CLIP's word split then byte-level
/// characters; BPE with the `</w>` end-of-word suffix; `<|startoftext|> $A <|endoftext|>`.
pub fn clip_tokenizer_from_vocab(vocab: &Path, merges: &Path) -> Result<Tokenizer, String> {
    let text = |p: &Path| p.to_str().map(str::to_owned).ok_or("path is not UTF-8");
    let model = BPE::from_file(&text(vocab)?, &text(merges)?)
        .end_of_word_suffix("</w>".into())
        .unk_token(CLIP_END.into())
        .build()
        .map_err(|e| e.to_string())?;
    let start = model
        .get_vocab()
        .get(CLIP_START)
        .copied()
        .ok_or(format!("vocab.json has no {CLIP_START}"))?;
    let end = model
        .get_vocab()
        .get(CLIP_END)
        .copied()
        .ok_or(format!("vocab.json has no {CLIP_END}"))?;
    let err = |e: tokenizers::Error| e.to_string();
    let normalizer = NormalizerSequence::new(vec![
        NFC.into(),
        Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
            .map_err(err)?
            .into(),
        Lowercase.into(),
    ]);
    let split = Split::new(
        SplitPattern::Regex(CLIP_SPLIT.into()),
        SplitDelimiterBehavior::Removed,
        true,
    )
    .map_err(err)?;
    let pre_tokenizer = PreTokenizerSequence::new(vec![
        split.into(),
        ByteLevel::new(false, true, false).into(),
    ]);
    let post = TemplateProcessing::builder()
        .try_single(format!("{CLIP_START} $A {CLIP_END}"))?
        .special_tokens(vec![
            (CLIP_START.to_string(), start),
            (CLIP_END.to_string(), end),
        ])
        .build()
        .map_err(|e| e.to_string())?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_normalizer(Some(normalizer)).map_err(err)?;
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_post_processor(Some(post));
    tokenizer
        .add_special_tokens([
            AddedToken::from(CLIP_START, true),
            AddedToken::from(CLIP_END, true),
        ])
        .map_err(err)?;
    Ok(tokenizer)
}
