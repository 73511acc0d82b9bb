//! The closed vocabulary of the world's captions and the word-level `tokenizer.json` built
//! from it (T5 conventions: `<pad>` 0, `</s>` 1, `<unk>` 2, `</s>` appended to every sequence).

use std::collections::BTreeSet;

use tokenizers::models::wordlevel::WordLevel;
use tokenizers::normalizers::Lowercase;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::caption::vocabulary_phrases;

pub const PAD_TOKEN: &str = "<pad>";
pub const EOS_TOKEN: &str = "</s>";
pub const UNK_TOKEN: &str = "<unk>";
pub const PAD_ID: u32 = 0;
pub const EOS_ID: u32 = 1;
pub const UNK_ID: u32 = 2;

/// Where the shipped tokenizer lives, relative to the crate root.
pub const TOKENIZER_PATH: &str = "assets/builtin/tokenizer.json";

/// Punctuation a prompt may contain: the joined caption uses ",", prompts typed by hand may end with ".".
const PUNCTUATION: [&str; 2] = [",", "."];

#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    #[error("building the word-level tokenizer failed: {0}")]
    Tokenizer(String),
}

/// Splits a phrase the way the tokenizer's pre-tokenizer does (runs of word characters, runs of
/// other non-space characters), lowercased.
fn split_words(phrase: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut current_is_word = false;
    for c in phrase.chars() {
        if c.is_whitespace() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            continue;
        }
        let is_word = c.is_alphanumeric() || c == '_';
        if !current.is_empty() && is_word != current_is_word {
            words.push(std::mem::take(&mut current));
        }
        current_is_word = is_word;
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Every word the world's captions can contain, plus punctuation, sorted.
pub fn words() -> Vec<String> {
    let mut set: BTreeSet<String> = BTreeSet::new();
    for phrase in vocabulary_phrases() {
        set.extend(split_words(&phrase));
    }
    set.extend(PUNCTUATION.iter().map(|p| p.to_string()));
    set.into_iter().collect()
}

/// Token id of every entry: the three special tokens first, then the sorted words.
pub fn vocabulary() -> Vec<(String, u32)> {
    let specials = [PAD_TOKEN, EOS_TOKEN, UNK_TOKEN];
    specials
        .iter()
        .map(|s| s.to_string())
        .chain(words())
        .enumerate()
        .map(|(id, token)| (token, id as u32))
        .collect()
}

/// Builds the tokenizer: lowercase normalizer, whitespace + punctuation pre-tokenizer,
/// word-level model, `</s>` appended by a template post-processor.
pub fn build_tokenizer() -> Result<Tokenizer, VocabError> {
    let err = |e: tokenizers::Error| VocabError::Tokenizer(e.to_string());
    let model = WordLevel::builder()
        .vocab(vocabulary().into_iter().collect())
        .unk_token(UNK_TOKEN.to_string())
        .build()
        .map_err(err)?;
    let post = TemplateProcessing::builder()
        .try_single(format!("$A {EOS_TOKEN}"))
        .map_err(VocabError::Tokenizer)?
        .try_pair(format!("$A {EOS_TOKEN} $B {EOS_TOKEN}"))
        .map_err(VocabError::Tokenizer)?
        .special_tokens(vec![(EOS_TOKEN, EOS_ID)])
        .build()
        .map_err(|e| VocabError::Tokenizer(e.to_string()))?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_normalizer(Some(Lowercase)).map_err(err)?;
    tokenizer.with_pre_tokenizer(Some(Whitespace));
    tokenizer.with_post_processor(Some(post));
    tokenizer
        .add_special_tokens([
            AddedToken::from(PAD_TOKEN, true),
            AddedToken::from(EOS_TOKEN, true),
            AddedToken::from(UNK_TOKEN, true),
        ])
        .map_err(err)?;
    Ok(tokenizer)
}

/// The `tokenizer.json` text shipped in `assets/builtin/` (pretty-printed, newline-terminated).
pub fn tokenizer_json() -> Result<String, VocabError> {
    let tokenizer = build_tokenizer()?;
    let mut json = tokenizer
        .to_string(true)
        .map_err(|e| VocabError::Tokenizer(e.to_string()))?;
    json.push('\n');
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_words_and_punctuation_like_the_pre_tokenizer() {
        assert_eq!(
            split_words("On a Beach, jumping."),
            ["on", "a", "beach", ",", "jumping", "."]
        );
        assert_eq!(split_words("  two   spaces "), ["two", "spaces"]);
    }

    #[test]
    fn special_tokens_follow_t5_ids() {
        let vocab = vocabulary();
        assert_eq!(vocab[0], (PAD_TOKEN.to_string(), PAD_ID));
        assert_eq!(vocab[1], (EOS_TOKEN.to_string(), EOS_ID));
        assert_eq!(vocab[2], (UNK_TOKEN.to_string(), UNK_ID));
        let ids: BTreeSet<u32> = vocab.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids.len(), vocab.len(), "ids are unique");
    }

    #[test]
    fn encodes_a_hand_written_prompt_with_eos() {
        let tokenizer = build_tokenizer().expect("tokenizer builds");
        let encoding = tokenizer
            .encode("On a beach, a RED creature", true)
            .expect("encodes");
        let tokens = encoding.get_tokens();
        assert_eq!(
            tokens,
            ["on", "a", "beach", ",", "a", "red", "creature", EOS_TOKEN]
        );
        assert_eq!(*encoding.get_ids().last().expect("non-empty"), EOS_ID);
        let unknown = tokenizer.encode("a purple dragon", true).expect("encodes");
        assert_eq!(unknown.get_ids()[2], UNK_ID);
    }
}
