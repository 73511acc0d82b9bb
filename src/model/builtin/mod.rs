//! The built-in small model: procedural world, checker, weights.
//!
//! - [`world`]: deterministic procedural scenes with a character, its mask and attributes.
//! - [`caption`]: three-part captions with varied wording, and a reader for them.
//! - [`vocab`]: the closed vocabulary and the word-level `tokenizer.json` built from it.
//! - [`checker`]: model-free measurements of background, character colour, position, identity.
//! - [`model`]: loading the shipped weights (DiT, T5, pixel codec) into a pipeline.

pub mod caption;
pub mod checker;
pub mod model;
pub mod vocab;
pub mod world;

pub use caption::Caption;
pub use world::{
    Accessory, Action, Attributes, Character, Colour, Eyes, Framing, Pattern, Pose, Position,
    Sample, Scene, Shape, World, WorldConfig,
};
