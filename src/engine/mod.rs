//! The worker thread that owns the model.
