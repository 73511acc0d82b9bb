//! Captions of the procedural world: three parts (background, character, action) with varied
//! wording, and a reader that recovers which attributes a caption part states.
//!
//! Every word a caption can contain comes from the phrase tables below; `vocabulary_phrases`
//! lists them all so the tokenizer's closed vocabulary is derived from the same tables.

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::{Deserialize, Serialize};

use super::world::{
    Accessory, Action, Attributes, Character, Colour, Eyes, Framing, Pattern, Pose, Position,
    Scene, Shape,
};

/// A caption in the order used everywhere: background, then character, then action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caption {
    pub background: String,
    pub character: String,
    pub action: String,
    /// The character part is true but leaves some identity attributes out.
    pub under_specified: bool,
}

impl Caption {
    /// The single prompt string "background, character, action".
    pub fn joined(&self) -> String {
        format!("{}, {}, {}", self.background, self.character, self.action)
    }
}

const CREATURE_NOUNS: [&str; 3] = ["creature", "monster", "critter"];
const VAGUE_ADJECTIVES: [&str; 3] = ["little", "small", "cute"];

fn shape_words(shape: Shape) -> &'static [&'static str] {
    match shape {
        Shape::Round => &["round", "chubby", "plump"],
        Shape::Tall => &["tall", "lanky", "slender"],
        Shape::Square => &["square", "boxy", "blocky"],
    }
}

fn pattern_adjectives(pattern: Pattern) -> &'static [&'static str] {
    match pattern {
        Pattern::Plain => &["plain"],
        Pattern::Striped => &["striped"],
        Pattern::Spotted => &["spotted", "spotty"],
    }
}

fn pattern_phrases(pattern: Pattern) -> &'static [&'static str] {
    match pattern {
        Pattern::Plain => &["with no pattern", "with a plain body"],
        Pattern::Striped => &["with stripes", "with a striped pattern", "with striped fur"],
        Pattern::Spotted => &["with spots", "with a spotted pattern", "with polka dots"],
    }
}

/// `{}` is replaced by the accessory's colour name.
fn accessory_phrases(accessory: Accessory) -> &'static [&'static str] {
    match accessory {
        Accessory::None => &["with no accessories", "without accessories"],
        Accessory::Hat(_) => &["wearing a {} hat", "with a {} hat", "in a {} hat"],
        Accessory::Scarf(_) => &["wearing a {} scarf", "with a {} scarf", "in a {} scarf"],
        Accessory::Glasses => &["wearing glasses", "with glasses", "wearing black glasses"],
    }
}

fn eye_phrases(eyes: Eyes) -> &'static [&'static str] {
    match eyes {
        Eyes::Dots => &["with dot eyes", "with tiny dot eyes", "with beady eyes"],
        Eyes::Big => &["with big eyes", "with large eyes", "with huge eyes"],
        Eyes::Sleepy => &["with sleepy eyes", "with drowsy eyes"],
    }
}

fn scene_nouns(scene: Scene) -> &'static [&'static str] {
    match scene {
        Scene::Meadow => &["meadow", "grassland", "pasture"],
        Scene::Beach => &["beach", "seashore", "seaside"],
        Scene::CityStreet => &["city street", "street", "town street"],
        Scene::Forest => &["forest", "woods", "woodland"],
        Scene::Bedroom => &["bedroom", "bedroom at home"],
        Scene::NightSky => &["night sky", "sky at night"],
        Scene::Desert => &["desert", "desert landscape"],
        Scene::SnowField => &["snow field", "snowy field", "field of snow"],
    }
}

/// Adjectives that are true of every render of the scene.
fn scene_adjectives(scene: Scene) -> &'static [&'static str] {
    match scene {
        Scene::Meadow => &["green", "grassy", "sunny", "quiet"],
        Scene::Beach => &["sunny", "sandy", "quiet"],
        Scene::CityStreet => &["grey", "quiet", "empty"],
        Scene::Forest => &["dark", "green", "quiet", "dense"],
        Scene::Bedroom => &["cozy", "quiet", "small"],
        Scene::NightSky => &["starry", "dark", "quiet"],
        Scene::Desert => &["hot", "sandy", "sunny", "dry"],
        Scene::SnowField => &["white", "cold", "quiet"],
    }
}

fn scene_prepositions(scene: Scene) -> &'static [&'static str] {
    match scene {
        Scene::Meadow => &["in", "on"],
        Scene::Beach => &["on", "at"],
        Scene::CityStreet => &["on", "in"],
        Scene::Forest | Scene::Bedroom | Scene::Desert => &["in"],
        Scene::NightSky => &["under"],
        Scene::SnowField => &["on", "in"],
    }
}

fn position_phrases(position: Position) -> &'static [&'static str] {
    match position {
        Position::Left => &[
            "on the left",
            "at the left",
            "on the left side",
            "to the left",
        ],
        Position::Centre => &[
            "in the centre",
            "in the center",
            "in the middle",
            "at the centre",
        ],
        Position::Right => &[
            "on the right",
            "at the right",
            "on the right side",
            "to the right",
        ],
    }
}

fn framing_phrases(framing: Framing) -> &'static [&'static str] {
    match framing {
        Framing::CloseUp => &["in a close up", "seen up close", "close to the camera"],
        Framing::Wide => &["in a wide shot", "seen from afar", "far from the camera"],
    }
}

fn pose_phrases(pose: Pose) -> &'static [&'static str] {
    match pose {
        Pose::Standing => &["standing", "standing still", "standing up"],
        Pose::Jumping => &["jumping", "leaping", "jumping up", "hopping"],
        Pose::Sitting => &["sitting", "sitting down", "sitting on the ground"],
        Pose::Waving => &["waving", "waving hello", "waving its arm"],
    }
}

/// Words used by the templates themselves (articles, joints).
const TEMPLATE_WORDS: [&str; 7] = ["a", "an", "the", "and", "in", "background", "scene"];

/// Every phrase the caption generator can emit, for building the vocabulary.
pub fn vocabulary_phrases() -> Vec<String> {
    let mut phrases: Vec<String> = Vec::new();
    let mut add = |list: &[&str]| phrases.extend(list.iter().map(|p| p.to_string()));
    add(&CREATURE_NOUNS);
    add(&VAGUE_ADJECTIVES);
    add(&TEMPLATE_WORDS);
    for shape in Shape::ALL {
        add(shape_words(shape));
    }
    for pattern in Pattern::ALL {
        add(pattern_adjectives(pattern));
        add(pattern_phrases(pattern));
    }
    for accessory in [
        Accessory::None,
        Accessory::Hat(Colour::Red),
        Accessory::Scarf(Colour::Red),
        Accessory::Glasses,
    ] {
        add(accessory_phrases(accessory));
    }
    for eyes in Eyes::ALL {
        add(eye_phrases(eyes));
    }
    for scene in super::world::Scene::ALL {
        add(scene_nouns(scene));
        add(scene_adjectives(scene));
        add(scene_prepositions(scene));
    }
    for position in Position::ALL {
        add(position_phrases(position));
    }
    for framing in Framing::ALL {
        add(framing_phrases(framing));
    }
    for pose in Pose::ALL {
        add(pose_phrases(pose));
    }
    for colour in Colour::ALL {
        phrases.push(colour.name().to_string());
    }
    phrases
}

fn pick<'a>(list: &[&'a str], rng: &mut impl Rng) -> &'a str {
    list.choose(rng).expect("phrase lists are never empty")
}

/// "a" or "an" for the word that follows.
fn article(next_word: &str) -> &'static str {
    match next_word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

/// Joins words with single spaces and fixes every "a" to agree with the next word.
fn assemble(words: &[&str]) -> String {
    let mut out: Vec<&str> = Vec::with_capacity(words.len());
    for (i, word) in words.iter().enumerate() {
        if *word == "a" {
            let next = words[i + 1..].iter().find(|w| !w.is_empty()).copied();
            out.push(article(next.unwrap_or("")));
        } else if !word.is_empty() {
            out.push(word);
        }
    }
    out.join(" ")
}

pub fn caption_for(attrs: &Attributes, under_specified: bool, rng: &mut impl Rng) -> Caption {
    Caption {
        background: background_phrase(attrs.scene, rng),
        character: if under_specified {
            vague_character_phrase(&attrs.character, rng)
        } else {
            character_phrase(&attrs.character, rng)
        },
        action: action_phrase(&attrs.action, rng),
        under_specified,
    }
}

fn background_phrase(scene: Scene, rng: &mut impl Rng) -> String {
    let noun = pick(scene_nouns(scene), rng);
    let adjective = if rng.random_bool(0.5) {
        pick(scene_adjectives(scene), rng)
    } else {
        ""
    };
    let determiner = if rng.random_bool(0.5) { "a" } else { "the" };
    match rng.random_range(0..10) {
        0 | 1 => assemble(&[determiner, adjective, noun, "in", "the", "background"]),
        2 => assemble(&[determiner, adjective, noun, "scene"]),
        _ => assemble(&[
            pick(scene_prepositions(scene), rng),
            determiner,
            adjective,
            noun,
        ]),
    }
}

fn character_phrase(character: &Character, rng: &mut impl Rng) -> String {
    let shape = pick(shape_words(character.shape), rng);
    let colour = character.colour.name();
    let mut words: Vec<String> = vec!["a".into()];
    if rng.random_bool(0.7) {
        words.extend([shape.to_string(), colour.to_string()]);
    } else {
        words.extend([colour.to_string(), shape.to_string()]);
    }
    let pattern_as_adjective = rng.random_bool(0.4);
    if pattern_as_adjective {
        words.insert(
            1,
            pick(pattern_adjectives(character.pattern), rng).to_string(),
        );
    }
    words.push(pick(&CREATURE_NOUNS, rng).to_string());

    let mut trailing: Vec<String> = Vec::new();
    if !pattern_as_adjective {
        trailing.push(pick(pattern_phrases(character.pattern), rng).to_string());
    }
    let accessory = pick(accessory_phrases(character.accessory), rng);
    trailing.push(match character.accessory.colour() {
        Some(colour) => accessory.replace("{}", colour.name()),
        None => accessory.to_string(),
    });
    trailing.push(pick(eye_phrases(character.eyes), rng).to_string());
    trailing.shuffle(rng);
    let last = trailing.len() - 1;
    for (i, phrase) in trailing.into_iter().enumerate() {
        if i == last {
            words.push("and".into());
        }
        words.push(phrase);
    }
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    assemble(&refs)
}

/// True but incomplete: at most the shape or the body colour, never both.
fn vague_character_phrase(character: &Character, rng: &mut impl Rng) -> String {
    let noun = pick(&CREATURE_NOUNS, rng);
    let vague = pick(&VAGUE_ADJECTIVES, rng);
    match rng.random_range(0..4) {
        0 => assemble(&["a", vague, noun]),
        1 => assemble(&["a", pick(shape_words(character.shape), rng), noun]),
        2 => assemble(&["a", character.colour.name(), noun]),
        _ => assemble(&["a", vague, pick(shape_words(character.shape), rng), noun]),
    }
}

fn action_phrase(action: &Action, rng: &mut impl Rng) -> String {
    let pose = pick(pose_phrases(action.pose), rng);
    let position = pick(position_phrases(action.position), rng);
    let framing = pick(framing_phrases(action.framing), rng);
    let order: [&str; 3] = match rng.random_range(0..3) {
        0 => [pose, position, framing],
        1 => [pose, framing, position],
        _ => [framing, pose, position],
    };
    assemble(&order)
}

/// The attributes a character phrase states; `None` where it says nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatedCharacter {
    pub shape: Option<Shape>,
    pub colour: Option<Colour>,
    pub pattern: Option<Pattern>,
    pub accessory: Option<Accessory>,
    pub eyes: Option<Eyes>,
}

impl StatedCharacter {
    /// Everything stated is true of `character`.
    pub fn consistent_with(&self, character: &Character) -> bool {
        self.shape.is_none_or(|s| s == character.shape)
            && self.colour.is_none_or(|c| c == character.colour)
            && self.pattern.is_none_or(|p| p == character.pattern)
            && self.accessory.is_none_or(|a| a == character.accessory)
            && self.eyes.is_none_or(|e| e == character.eyes)
    }

    /// Every attribute is stated.
    pub fn complete(&self) -> Option<Character> {
        Some(Character {
            shape: self.shape?,
            colour: self.colour?,
            pattern: self.pattern?,
            accessory: self.accessory?,
            eyes: self.eyes?,
        })
    }
}

fn words_of(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn colour_named(word: &str) -> Option<Colour> {
    Colour::ALL.into_iter().find(|c| c.name() == word)
}

/// Reads back the attributes stated by a character part of a caption.
pub fn read_character(text: &str) -> StatedCharacter {
    let words = words_of(text);
    let mut stated = StatedCharacter::default();
    for (i, word) in words.iter().enumerate() {
        let next = words.get(i + 1).map(String::as_str);
        if let Some(shape) = Shape::ALL
            .into_iter()
            .find(|&s| shape_words(s).contains(&word.as_str()))
        {
            stated.shape = Some(shape);
        }
        if let Some(colour) = colour_named(word) {
            match next {
                Some("hat") => stated.accessory = Some(Accessory::Hat(colour)),
                Some("scarf") => stated.accessory = Some(Accessory::Scarf(colour)),
                _ => stated.colour = Some(colour),
            }
        }
        match word.as_str() {
            "plain" => stated.pattern = Some(Pattern::Plain),
            "no" if next == Some("pattern") => stated.pattern = Some(Pattern::Plain),
            "striped" | "stripes" => stated.pattern = Some(Pattern::Striped),
            "spotted" | "spotty" | "spots" | "polka" => stated.pattern = Some(Pattern::Spotted),
            "glasses" => stated.accessory = Some(Accessory::Glasses),
            "accessories" => stated.accessory = Some(Accessory::None),
            "dot" | "beady" => stated.eyes = Some(Eyes::Dots),
            "big" | "large" | "huge" => stated.eyes = Some(Eyes::Big),
            "sleepy" | "drowsy" => stated.eyes = Some(Eyes::Sleepy),
            _ => {}
        }
    }
    stated
}

/// Reads back the scene named by a background part.
pub fn read_background(text: &str) -> Option<Scene> {
    let words = words_of(text);
    let has = |w: &str| words.iter().any(|x| x == w);
    if has("meadow") || has("grassland") || has("pasture") {
        Some(Scene::Meadow)
    } else if has("beach") || has("seashore") || has("seaside") {
        Some(Scene::Beach)
    } else if has("street") {
        Some(Scene::CityStreet)
    } else if has("forest") || has("woods") || has("woodland") {
        Some(Scene::Forest)
    } else if has("bedroom") {
        Some(Scene::Bedroom)
    } else if has("night") {
        Some(Scene::NightSky)
    } else if has("desert") {
        Some(Scene::Desert)
    } else if has("snow") || has("snowy") {
        Some(Scene::SnowField)
    } else {
        None
    }
}

/// Reads back position, framing and pose from an action part.
pub fn read_action(text: &str) -> (Option<Position>, Option<Framing>, Option<Pose>) {
    let words = words_of(text);
    let has = |w: &str| words.iter().any(|x| x == w);
    let position = if has("left") {
        Some(Position::Left)
    } else if has("right") {
        Some(Position::Right)
    } else if has("centre") || has("center") || has("middle") {
        Some(Position::Centre)
    } else {
        None
    };
    let framing = if has("close") {
        Some(Framing::CloseUp)
    } else if has("wide") || has("afar") || has("far") {
        Some(Framing::Wide)
    } else {
        None
    };
    let pose = if has("standing") {
        Some(Pose::Standing)
    } else if has("jumping") || has("leaping") || has("hopping") {
        Some(Pose::Jumping)
    } else if has("sitting") {
        Some(Pose::Sitting)
    } else if has("waving") {
        Some(Pose::Waving)
    } else {
        None
    };
    (position, framing, pose)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn article_agrees_with_next_word() {
        assert_eq!(assemble(&["a", "orange", "creature"]), "an orange creature");
        assert_eq!(assemble(&["a", "", "empty", "street"]), "an empty street");
        assert_eq!(assemble(&["a", "red", "hat"]), "a red hat");
    }

    #[test]
    fn joined_puts_background_character_action_in_order() {
        let caption = Caption {
            background: "on a beach".into(),
            character: "a red creature".into(),
            action: "jumping on the left".into(),
            under_specified: true,
        };
        assert_eq!(
            caption.joined(),
            "on a beach, a red creature, jumping on the left"
        );
    }

    #[test]
    fn reads_a_hand_written_character() {
        let stated = read_character(
            "a round blue creature with a striped pattern wearing a red hat and with big eyes",
        );
        assert_eq!(
            stated.complete(),
            Some(Character {
                shape: Shape::Round,
                colour: Colour::Blue,
                pattern: Pattern::Striped,
                accessory: Accessory::Hat(Colour::Red),
                eyes: Eyes::Big,
            })
        );
        let vague = read_character("a little critter");
        assert_eq!(vague, StatedCharacter::default());
    }

    #[test]
    fn reads_hand_written_background_and_action() {
        assert_eq!(read_background("on a sunny beach"), Some(Scene::Beach));
        assert_eq!(
            read_background("a snowy field scene"),
            Some(Scene::SnowField)
        );
        assert_eq!(
            read_background("under the starry sky at night"),
            Some(Scene::NightSky)
        );
        assert_eq!(
            read_action("seen up close waving hello in the middle"),
            (
                Some(Position::Centre),
                Some(Framing::CloseUp),
                Some(Pose::Waving)
            )
        );
    }

    #[test]
    fn full_captions_state_every_attribute_and_vague_ones_stay_true() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for _ in 0..400 {
            let attrs = Attributes::random(&mut rng);
            let full = caption_for(&attrs, false, &mut rng);
            assert_eq!(
                read_character(&full.character).complete(),
                Some(attrs.character),
                "{full:?}"
            );
            assert_eq!(
                read_background(&full.background),
                Some(attrs.scene),
                "{full:?}"
            );
            assert_eq!(
                read_action(&full.action),
                (
                    Some(attrs.action.position),
                    Some(attrs.action.framing),
                    Some(attrs.action.pose)
                ),
                "{full:?}"
            );
            let vague = caption_for(&attrs, true, &mut rng);
            let stated = read_character(&vague.character);
            assert!(stated.consistent_with(&attrs.character), "{vague:?}");
            assert_eq!(stated.complete(), None, "{vague:?}");
        }
    }
}
