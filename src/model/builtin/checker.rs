//! Model-free measurements on images of the procedural world.
