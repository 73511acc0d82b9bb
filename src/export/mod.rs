//! Frame sheets (PNG/PDF), image sequences, animatics.
