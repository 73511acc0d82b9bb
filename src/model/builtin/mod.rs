//! The built-in small model: procedural world, checker, weights.
