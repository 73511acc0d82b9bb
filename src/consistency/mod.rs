//! Training-free consistency methods, each a `Control` plugged into the DiT's hook points.

pub mod asemconsist;
pub mod characonsist;
pub mod metrics;
