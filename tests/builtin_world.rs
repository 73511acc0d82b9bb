//! The built-in world, its captions and tokenizer, and the checker validated on the world's
//! own renders (clean and degraded to look generated).
//!
//! The shipped tokenizer is regenerated with `STORYLOOM_BLESS=1 cargo test --test builtin_world`.

use std::path::Path;

use storyloom::model::builtin::caption::{read_action, read_background, read_character};
use storyloom::model::builtin::checker::{
    Checker, chroma, degrade, identity_agreement, pairwise_agreement,
};
use storyloom::model::builtin::vocab::{
    EOS_TOKEN, TOKENIZER_PATH, UNK_ID, build_tokenizer, tokenizer_json,
};
use storyloom::model::builtin::{Action, Attributes, World, WorldConfig};

fn world() -> World {
    World::new(WorldConfig::default())
}

#[test]
fn same_seed_gives_identical_bytes_and_caption() {
    let world = world();
    for seed in [0, 7, 123_456_789] {
        let a = world.sample(seed);
        let b = world.sample(seed);
        assert_eq!(a.image.as_raw(), b.image.as_raw());
        assert_eq!(a.mask.as_raw(), b.mask.as_raw());
        assert_eq!(a.caption, b.caption);
        assert_eq!(a.attrs, b.attrs);
    }
    assert_ne!(
        world.sample(1).image.as_raw(),
        world.sample(2).image.as_raw()
    );
}

#[test]
fn image_size_is_a_parameter() {
    let world = World::new(WorldConfig {
        image_size: 32,
        supersample: 2,
        ..WorldConfig::default()
    });
    let sample = world.sample(5);
    assert_eq!(sample.image.dimensions(), (32, 32));
    assert_eq!(sample.mask.dimensions(), (32, 32));
}

#[test]
fn everything_outside_the_mask_is_muted_and_the_mask_is_mostly_vivid() {
    let world = world();
    for seed in 0..150 {
        let sample = world.sample(seed);
        let mut inside = 0usize;
        let mut vivid_inside = 0usize;
        for (pixel, coverage) in sample.image.pixels().zip(sample.mask.pixels()) {
            let c = chroma(pixel.0);
            if coverage.0[0] == 0 {
                assert!(c <= 0.225, "seed {seed}: background pixel {:?}", pixel.0);
            } else if coverage.0[0] == 255 {
                inside += 1;
                vivid_inside += (c >= 0.27) as usize;
            }
        }
        assert!(inside > 40, "seed {seed}: subject of {inside} pixels");
        // Eyes, glasses and black outlines are the only muted parts of a character.
        assert!(
            vivid_inside * 10 >= inside * 7,
            "seed {seed}: {vivid_inside}/{inside} vivid"
        );
    }
}

#[test]
fn captions_describe_the_rendered_attributes() {
    let world = world();
    let mut under_specified = 0;
    let n = 1000;
    for seed in 0..n {
        let sample = world.sample(seed);
        let caption = &sample.caption;
        assert_eq!(
            read_background(&caption.background),
            Some(sample.attrs.scene)
        );
        let action = sample.attrs.action;
        assert_eq!(
            read_action(&caption.action),
            (
                Some(action.position),
                Some(action.framing),
                Some(action.pose)
            )
        );
        let stated = read_character(&caption.character);
        assert!(
            stated.consistent_with(&sample.attrs.character),
            "{caption:?}"
        );
        if caption.under_specified {
            under_specified += 1;
            assert_eq!(stated.complete(), None, "{caption:?}");
        } else {
            assert_eq!(
                stated.complete(),
                Some(sample.attrs.character),
                "{caption:?}"
            );
        }
        assert_eq!(
            caption.joined(),
            format!(
                "{}, {}, {}",
                caption.background, caption.character, caption.action
            )
        );
    }
    // 15% expected: 150 of 1000, binomial standard deviation about 11.
    assert!(
        (100..=200).contains(&under_specified),
        "{under_specified} under-specified"
    );
}

#[test]
fn shipped_tokenizer_matches_the_generator() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(TOKENIZER_PATH);
    let generated = tokenizer_json().expect("tokenizer builds");
    if std::env::var_os("STORYLOOM_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("has a folder")).expect("create folder");
        std::fs::write(&path, &generated).expect("write tokenizer.json");
    }
    let shipped = std::fs::read_to_string(&path).expect("assets/builtin/tokenizer.json exists");
    assert!(
        shipped == generated,
        "shipped tokenizer.json is stale; regenerate it"
    );
    // The shipped file loads as a tokenizer of its own.
    let loaded = tokenizers::Tokenizer::from_file(&path).expect("loads");
    let encoding = loaded
        .encode("on a beach, a red creature", true)
        .expect("encodes");
    assert_eq!(
        encoding.get_tokens().last().map(String::as_str),
        Some(EOS_TOKEN)
    );
}

#[test]
fn every_caption_tokenizes_without_unknown_words_and_round_trips() {
    let tokenizer = build_tokenizer().expect("tokenizer builds");
    let world = world();
    for seed in 0..1000 {
        let prompt = world.sample(seed).caption.joined();
        let encoding = tokenizer.encode(prompt.as_str(), true).expect("encodes");
        assert!(
            !encoding.get_ids().contains(&UNK_ID),
            "unknown word in {prompt:?}"
        );
        let mut expected: Vec<String> = prompt
            .replace(',', " , ")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        expected.push(EOS_TOKEN.to_string());
        assert_eq!(encoding.get_tokens(), expected.as_slice());
        let decoded = tokenizer.decode(encoding.get_ids(), true).expect("decodes");
        assert_eq!(decoded, prompt.replace(',', " ,"));
    }
}

/// (background, colour, position, pattern) hit counts over `n` samples.
fn accuracy(world: &World, checker: &Checker, n: u64, blur: f32, noise: f32) -> [usize; 4] {
    let mut hits = [0usize; 4];
    for seed in 0..n {
        let sample = world.sample(50_000 + seed);
        let image = degrade(&sample.image, blur, noise, seed);
        let report = checker.check(&image, &sample.attrs);
        for (hit, ok) in hits.iter_mut().zip([
            report.background,
            report.colour,
            report.position,
            report.pattern,
        ]) {
            *hit += ok as usize;
        }
    }
    hits
}

#[test]
fn checker_is_accurate_on_clean_renders() {
    let world = world();
    let checker = Checker::calibrated(&world, 8);
    let [background, colour, position, pattern] = accuracy(&world, &checker, 200, 0.0, 0.0);
    assert!(background >= 190, "background {background}/200");
    assert!(colour >= 190, "colour {colour}/200");
    assert!(position >= 190, "position {position}/200");
    assert!(pattern >= 160, "pattern {pattern}/200");
}

#[test]
fn checker_stays_accurate_on_blurred_noisy_renders() {
    let world = world();
    let checker = Checker::calibrated(&world, 8);
    let [background, colour, position, pattern] = accuracy(&world, &checker, 200, 1.0, 8.0);
    assert!(background >= 180, "background {background}/200");
    assert!(colour >= 180, "colour {colour}/200");
    assert!(position >= 180, "position {position}/200");
    assert!(pattern >= 140, "pattern {pattern}/200");
}

#[test]
fn checker_subject_overlaps_the_true_mask() {
    let world = world();
    let checker = Checker::calibrated(&world, 4);
    let mut iou_sum = 0.0;
    let n = 60;
    for seed in 0..n {
        let sample = world.sample(seed);
        let measured = checker.measure(&sample.image);
        let (mut both, mut either) = (0usize, 0usize);
        for (truth, found) in sample.mask.pixels().zip(measured.subject.pixels()) {
            let (t, f) = (truth.0[0] >= 128, found.0[0] > 0);
            both += (t && f) as usize;
            either += (t || f) as usize;
        }
        iou_sum += both as f64 / either as f64;
    }
    let mean_iou = iou_sum / n as f64;
    assert!(mean_iou >= 0.75, "mean IoU {mean_iou:.3}");
}

#[test]
fn identity_agrees_for_the_same_character_and_rarely_for_different_ones() {
    let world = world();
    let checker = Checker::calibrated(&world, 4);
    let mut same = 0;
    let mut false_agreement = 0;
    let mut different_pairs = 0;
    let n = 100;
    for seed in 0..n {
        let sample = world.sample(seed);
        let mut frames = vec![checker.measure(&sample.image)];
        for k in 1..4u64 {
            let other = world.sample(seed * 31 + k + 10_000);
            let frame = Attributes {
                scene: other.attrs.scene,
                character: sample.attrs.character,
                action: Action {
                    pose: other.attrs.action.pose,
                    ..sample.attrs.action
                },
            };
            let (image, _) = world.render(&frame, seed + k);
            frames.push(checker.measure(&image));
        }
        same += (pairwise_agreement(&frames) >= 0.99) as usize;
        let stranger = world.sample(seed + 777_777);
        if stranger.attrs.character != sample.attrs.character {
            different_pairs += 1;
            let agreement = identity_agreement(&frames[0], &checker.measure(&stranger.image));
            false_agreement += agreement.all() as usize;
        }
    }
    assert!(
        same >= 75,
        "{same}/{n} characters agree with themselves in all frames"
    );
    assert!(
        false_agreement * 10 <= different_pairs,
        "{false_agreement}/{different_pairs} different characters agree"
    );
}
