//! Combined-prompt token spans against the tokenizers themselves, on the hand-checked
//! sentences of `tests/fixtures/text_spans.json` (made by `make_text_fixture.py` with the
//! Python `tokenizers`), for the T5 Unigram, the CLIP BPE and a word-level tokenizer.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;
use storyloom::model::text::{
    CombinedPrompt, PromptSegments, PromptTokenizer, Separator, SpecialTokens, TextError,
    TextModelKind,
};
use tokenizers::Tokenizer;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::normalizers::Lowercase;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::processors::template::TemplateProcessing;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[derive(Deserialize)]
struct Tokenized {
    ids: Vec<u32>,
    tokens: Vec<String>,
}

#[derive(Deserialize)]
struct Sentence {
    text: String,
    t5: Tokenized,
    clip: Tokenized,
}

#[derive(Deserialize)]
struct Combined {
    segments: Vec<String>,
    t5: Tokenized,
    clip: Tokenized,
    t5_segment_token_counts: Vec<usize>,
    clip_segment_token_counts: Vec<usize>,
}

#[derive(Deserialize)]
struct Spans {
    sentences: Vec<Sentence>,
    combined: Combined,
}

fn spans_fixture() -> Spans {
    let text = std::fs::read_to_string(fixture("text_spans.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn t5(max_len: usize) -> PromptTokenizer {
    PromptTokenizer::from_file(
        &fixture("t5_tiny_tokenizer.json"),
        TextModelKind::T5,
        max_len,
    )
    .unwrap()
}

fn clip(max_len: usize) -> PromptTokenizer {
    PromptTokenizer::from_file(
        &fixture("clip_tiny_tokenizer.json"),
        TextModelKind::Clip,
        max_len,
    )
    .unwrap()
}

fn combine(tok: &PromptTokenizer, segments: &[&str], separator: Separator) -> CombinedPrompt {
    tok.combine(PromptSegments {
        segments,
        separator,
    })
    .unwrap()
}

/// The invariants every combined prompt keeps, whatever the tokenizer.
fn check_layout(tok: &PromptTokenizer, p: &CombinedPrompt) {
    let special = tok.special_tokens();
    assert_eq!(p.ids.len(), tok.max_len());
    assert_eq!(p.pieces.len(), tok.max_len());
    assert_eq!(p.ids[..special.prefix.len()], special.prefix[..]);
    assert_eq!(p.ids[p.eos], special.eos);
    assert_eq!(p.real_len, p.eos + 1);
    assert_eq!(p.padding, p.real_len..tok.max_len());
    assert!(p.ids[p.padding.clone()].iter().all(|&id| id == special.pad));
    let mut last_end = special.prefix.len();
    for span in &p.segment_spans {
        assert!(
            span.start >= last_end && span.end <= p.eos,
            "{span:?} out of order"
        );
        if !span.is_empty() {
            last_end = span.end;
        }
    }
}

#[test]
fn special_tokens_are_read_from_the_post_processors() {
    assert_eq!(
        t5(8).special_tokens(),
        &SpecialTokens {
            prefix: vec![],
            eos: 1,
            pad: 0
        }
    );
    // FLUX's CLIP tokenizer pads with the end token.
    assert_eq!(
        clip(77).special_tokens(),
        &SpecialTokens {
            prefix: vec![298],
            eos: 299,
            pad: 299
        }
    );
}

#[test]
fn single_sentences_match_the_reference_tokenization() {
    let spans = spans_fixture();
    assert_eq!(spans.sentences.len(), 5);
    let (t5, clip) = (t5(64), clip(77));
    for s in &spans.sentences {
        let p = combine(&t5, &[&s.text], Separator::Space);
        check_layout(&t5, &p);
        let n = s.t5.ids.len();
        assert_eq!(p.ids[..n], s.t5.ids[..], "{}", s.text);
        assert_eq!(p.pieces[..n], s.t5.tokens[..], "{}", s.text);
        assert_eq!(p.segment_spans, vec![0..n - 1]);
        assert_eq!(p.eos, n - 1);
        assert!(!p.truncated);

        let p = combine(&clip, &[&s.text], Separator::Space);
        check_layout(&clip, &p);
        let n = s.clip.ids.len();
        assert_eq!(p.ids[..n], s.clip.ids[..], "{}", s.text);
        assert_eq!(p.pieces[..n], s.clip.tokens[..], "{}", s.text);
        assert_eq!(p.segment_spans, vec![1..n - 1]);
        assert_eq!(p.eos, n - 1);
    }
}

#[test]
fn hand_checked_spans_of_a_two_segment_prompt() {
    let c = spans_fixture().combined;
    let segs: Vec<&str> = c.segments.iter().map(String::as_str).collect();
    assert_eq!(c.t5_segment_token_counts, [12, 12]);
    assert_eq!(c.clip_segment_token_counts, [6, 11]);

    // T5: "▁A ▁g ir l ▁in ▁a ▁ ye llow ▁rain co at" | "▁walk s ▁th ro ugh ▁ the ▁rain y ▁m ark et" </s>
    let tok = t5(32);
    let p = combine(&tok, &segs, Separator::Space);
    check_layout(&tok, &p);
    assert_eq!(p.segment_spans, vec![0..12, 12..24]);
    assert_eq!(p.eos, 24);
    assert_eq!(p.padding, 25..32);
    assert_eq!(p.ids[..25], c.t5.ids[..]);
    assert_eq!(p.pieces[..25], c.t5.tokens[..]);
    assert_eq!(p.pieces[12], "▁walk");

    // CLIP: <|startoftext|> "a girl in a yellow raincoat" | "wal ks through the ra in y m ar k et" <|endoftext|>
    let tok = clip(77);
    let p = combine(&tok, &segs, Separator::Space);
    check_layout(&tok, &p);
    assert_eq!(p.segment_spans, vec![1..7, 7..18]);
    assert_eq!(p.eos, 18);
    assert_eq!(p.ids[..19], c.clip.ids[..]);
    assert_eq!(p.pieces[7], "wal");
}

/// Every span holds exactly the tokens of its segment, and with spaces between segments the
/// whole sequence equals the tokenizer's own encoding of the joined text, for every ordered
/// pair of the hand-checked sentences (including the ones split into many pieces and the one
/// with a character T5 does not know).
#[test]
fn spans_hold_each_segments_tokens_and_space_joins_equal_the_joined_text() {
    let spans = spans_fixture();
    for tok in [t5(96), clip(77)] {
        for a in &spans.sentences {
            for b in &spans.sentences {
                let segs = [a.text.as_str(), b.text.as_str()];
                let p = combine(&tok, &segs, Separator::Space);
                check_layout(&tok, &p);
                for (seg, span) in segs.iter().zip(&p.segment_spans) {
                    let (ids, _) = tok.tokenize(seg).unwrap();
                    assert_eq!(p.ids[span.clone()], ids[..], "{seg}");
                }
                assert_eq!(
                    p.gap_after(0),
                    p.segment_spans[0].end..p.segment_spans[0].end
                );
                let joined = tok.encode_plain(&Separator::Space.join(&segs)).unwrap();
                assert_eq!(p.ids[..p.real_len], joined[..], "{segs:?}");
            }
        }
    }
}

/// The comma belongs to no segment: it fills the gap between the two spans, with the token
/// it gets inside the joined sentence.
#[test]
fn comma_separator_tokens_fill_the_gap_between_spans() {
    let spans = spans_fixture();
    for tok in [t5(96), clip(77)] {
        for a in &spans.sentences {
            for b in &spans.sentences {
                let segs = [a.text.as_str(), b.text.as_str()];
                let p = combine(&tok, &segs, Separator::Comma);
                check_layout(&tok, &p);
                let gap = p.gap_after(0);
                assert_eq!(gap.start, p.segment_spans[0].end);
                assert_eq!(gap.end, p.segment_spans[1].start);
                assert!(!gap.is_empty(), "{segs:?}");
                let gap_text: String = p.pieces[gap].concat();
                assert!(gap_text.contains(','), "{gap_text}");
                for (seg, span) in segs.iter().zip(&p.segment_spans) {
                    let (ids, _) = tok.tokenize(seg).unwrap();
                    assert_eq!(p.ids[span.clone()], ids[..], "{seg}");
                }
                // Equal to the joined text, except where CLIP's split regex reads a segment's
                // final punctuation and the comma as one word (".," below).
                let joined = tok.encode_plain(&Separator::Comma.join(&segs)).unwrap();
                let ends_in_mark = a.text.ends_with('.');
                if tok.special_tokens().prefix.is_empty() || !ends_in_mark {
                    assert_eq!(p.ids[..p.real_len], joined[..], "{segs:?}");
                }
            }
        }
    }
    // Hand-checked difference: "... letter., A girl ..." in one string gives "." (7) then
    // ",</w>" (87); segment by segment the first segment ends with ".</w>" (77) as it does
    // on its own, so its span keeps its own tokens.
    let tok = clip(77);
    let segs = ["reads a letter.", "A girl"];
    let p = combine(&tok, &segs, Separator::Comma);
    let joined = tok.encode_plain(&Separator::Comma.join(&segs)).unwrap();
    assert_eq!(p.pieces[p.segment_spans[0].end - 1], ".</w>");
    assert_eq!(p.pieces[p.gap_after(0)], [",</w>"]);
    assert_eq!(joined.len(), p.real_len);
    let differing: Vec<usize> = (0..p.real_len).filter(|&i| p.ids[i] != joined[i]).collect();
    assert_eq!(differing, [p.segment_spans[0].end - 1]);
    assert_eq!((p.ids[differing[0]], joined[differing[0]]), (77, 7));
    // Hand-checked: "A girl in a yellow raincoat, walks" -> the comma is one token after "at".
    let tok = clip(77);
    let p = combine(
        &tok,
        &["A girl in a yellow raincoat", "walks"],
        Separator::Comma,
    );
    assert_eq!(p.segment_spans, vec![1..7, 8..10]);
    assert_eq!(p.pieces[7], ",</w>");
    let joined = tok
        .encode_plain("A girl in a yellow raincoat, walks")
        .unwrap();
    assert_eq!(p.ids[..p.real_len], joined[..]);
}

#[test]
fn truncation_keeps_the_eos_and_clips_later_segments() {
    let c = spans_fixture().combined;
    let segs: Vec<&str> = c.segments.iter().map(String::as_str).collect();

    // 20 tokens: 19 for text + EOS; the second segment keeps 7 of its 12 tokens.
    let tok = t5(20);
    let p = combine(&tok, &segs, Separator::Space);
    check_layout(&tok, &p);
    assert!(p.truncated);
    assert_eq!(p.segment_spans, vec![0..12, 12..19]);
    assert_eq!(p.eos, 19);
    assert_eq!(p.ids[19], 1);
    assert!(p.padding.is_empty());
    assert_eq!(p.ids[..19], c.t5.ids[..19]);

    // 10 tokens: the first segment is cut, the second is empty at the cut.
    let tok = t5(10);
    let p = combine(&tok, &segs, Separator::Space);
    assert!(p.truncated);
    assert_eq!(p.segment_spans, vec![0..9, 9..9]);
    assert_eq!(p.eos, 9);

    // CLIP keeps its start token: 77 - 2 = 75 text tokens at most.
    let tok = clip(77);
    let long = "a girl in a yellow raincoat ".repeat(20);
    let p = combine(&tok, &[&long, "walks"], Separator::Space);
    check_layout(&tok, &p);
    assert!(p.truncated);
    assert_eq!(p.segment_spans, vec![1..76, 76..76]);
    assert_eq!(p.eos, 76);

    // Exactly full is not truncated.
    let tok = t5(25);
    let p = combine(&tok, &segs, Separator::Space);
    assert!(!p.truncated);
    assert_eq!(p.eos, 24);
    assert!(p.padding.is_empty());
}

#[test]
fn empty_prompt_is_just_the_end_token() {
    let tok = clip(77);
    let p = combine(&tok, &["", " "], Separator::Space);
    check_layout(&tok, &p);
    assert_eq!(p.ids[..2], [298, 299]);
    assert_eq!(p.segment_spans, vec![1..1, 1..1]);
    assert_eq!(p.eos, 1);
    assert_eq!(p.padding, 2..77);
}

/// Identity prompt then three frame prompts, as ASemConsist's combined prompt: spans tile the
/// text part without gaps and padding starts right after the EOS.
#[test]
fn identity_then_frames_spans_tile_the_prompt() {
    let tok = t5(128);
    let segs = [
        "A girl in a yellow raincoat",
        "walks through the rainy market",
        "The detective with the green scarf reads a letter.",
        "An extraordinarily unbelievable transformation",
    ];
    let p = combine(&tok, &segs, Separator::Space);
    check_layout(&tok, &p);
    assert_eq!(p.segment_spans[0], 0..12);
    for w in p.segment_spans.windows(2) {
        assert_eq!(w[0].end, w[1].start);
    }
    assert_eq!(p.segment_spans[3].end, p.eos);
    // 12 + 12 + 22 + 19 tokens.
    let lens: Vec<usize> = p.segment_spans.iter().map(|s| s.len()).collect();
    assert_eq!(lens, [12, 12, 22, 19]);
}

fn word_level() -> Tokenizer {
    let words = [
        "<pad>", "</s>", "<unk>", "a", "girl", "in", "yellow", "raincoat", "walks", "home", ",",
        ".",
    ];
    let vocab: HashMap<String, u32> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), i as u32))
        .collect();
    let model = WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token("<unk>".into())
        .build()
        .unwrap();
    let post = TemplateProcessing::builder()
        .try_single("$A </s>")
        .unwrap()
        .special_tokens(vec![("</s>".to_string(), 1)])
        .build()
        .unwrap();
    let mut tok = Tokenizer::new(model);
    tok.with_normalizer(Some(Lowercase)).unwrap();
    tok.with_pre_tokenizer(Some(Whitespace));
    tok.with_post_processor(Some(post));
    tok
}

#[test]
fn word_level_tokenizer_gives_exact_spans() {
    let tok = PromptTokenizer::new(word_level(), 12).unwrap();
    assert_eq!(tok.special_tokens().pad, 0);
    let segs = ["A girl in a Yellow raincoat", "walks home."];
    let p = combine(&tok, &segs, Separator::Space);
    check_layout(&tok, &p);
    assert_eq!(p.ids, [3, 4, 5, 3, 6, 7, 8, 9, 11, 1, 0, 0]);
    assert_eq!(p.segment_spans, vec![0..6, 6..9]);
    assert_eq!(p.eos, 9);
    assert_eq!(p.padding, 10..12);
    assert_eq!(p.ids[..10], tok.encode_plain(&segs.join(" ")).unwrap()[..]);

    let p = combine(&tok, &segs, Separator::Comma);
    assert_eq!(p.ids[..11], [3, 4, 5, 3, 6, 7, 10, 8, 9, 11, 1]);
    assert_eq!(p.segment_spans, vec![0..6, 7..10]);
    assert_eq!(p.gap_after(0), 6..7);

    // Unknown words become <unk> inside their segment's span.
    let p = combine(&tok, &["a zebra", "walks"], Separator::None);
    assert_eq!(p.ids[..4], [3, 2, 8, 1]);
    assert_eq!(p.segment_spans, vec![0..2, 2..3]);
}

#[test]
fn missing_and_wrong_tokenizer_files_are_reported() {
    let err =
        PromptTokenizer::from_file(&fixture("no_such_tokenizer.json"), TextModelKind::T5, 512)
            .unwrap_err();
    assert!(matches!(err, TextError::MissingTokenizer { .. }));
    assert!(
        err.to_string()
            .contains("choose the T5 tokenizer (tokenizer.json)"),
        "{err}"
    );

    // A config.json is not a tokenizer.
    let err = PromptTokenizer::from_file(&fixture("t5_tiny.config.json"), TextModelKind::T5, 512)
        .unwrap_err();
    assert!(matches!(err, TextError::BadTokenizer { .. }), "{err}");
    assert!(err.to_string().contains("T5 tokenizer"), "{err}");
}

/// diffusers' FLUX folders ship CLIP's tokenizer as vocab.json + merges.txt only: the BPE
/// tokenizer built from them gives the same tokens as the tokenizer.json.
#[test]
fn clip_folder_with_vocab_and_merges_tokenizes_like_its_tokenizer_json() {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("clip_tiny_tokenizer.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vocab = &json["model"]["vocab"];
    std::fs::write(dir.path().join("vocab.json"), vocab.to_string()).unwrap();
    let mut merges = String::from("#version: 0.2\n");
    for pair in json["model"]["merges"].as_array().unwrap() {
        let pair = pair.as_array().unwrap();
        merges += &format!(
            "{} {}\n",
            pair[0].as_str().unwrap(),
            pair[1].as_str().unwrap()
        );
    }
    std::fs::write(dir.path().join("merges.txt"), merges).unwrap();

    let built = PromptTokenizer::from_file(dir.path(), TextModelKind::Clip, 77).unwrap();
    let reference = clip(77);
    assert_eq!(built.special_tokens(), reference.special_tokens());
    let spans = spans_fixture();
    for s in &spans.sentences {
        assert_eq!(
            built.encode_plain(&s.text).unwrap(),
            s.clip.ids,
            "{}",
            s.text
        );
    }
    let segs: Vec<&str> = spans.combined.segments.iter().map(String::as_str).collect();
    assert_eq!(
        combine(&built, &segs, Separator::Space),
        combine(&reference, &segs, Separator::Space)
    );
    // Upper case, runs of spaces and punctuation go through the same normalizer and split.
    let messy = "THE  Detective's\tgreen scarf, 42 letters!";
    assert_eq!(
        built.encode_plain(messy).unwrap(),
        reference.encode_plain(messy).unwrap()
    );

    // A folder with a tokenizer.json uses it; a folder with neither is reported.
    let with_json = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("t5_tiny_tokenizer.json"),
        with_json.path().join("tokenizer.json"),
    )
    .unwrap();
    let t5_from_folder =
        PromptTokenizer::from_file(with_json.path(), TextModelKind::T5, 8).unwrap();
    assert_eq!(t5_from_folder.special_tokens(), t5(8).special_tokens());
    let empty = tempfile::tempdir().unwrap();
    let err = PromptTokenizer::from_file(empty.path(), TextModelKind::T5, 8).unwrap_err();
    assert!(matches!(err, TextError::MissingTokenizer { .. }), "{err}");
}
