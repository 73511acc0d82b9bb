//! Training-free consistency methods, each a `Control` plugged into the DiT's hook points.

pub mod asemconsist;
pub mod characonsist;
pub mod metrics;

use serde::{Deserialize, Serialize};

/// Which methods run, with their settings (kept in the project).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct MethodSettings {
    pub asemconsist_enabled: bool,
    pub asemconsist: asemconsist::AsemSettings,
}

impl MethodSettings {
    /// Short names of the enabled methods, for frame cards and metadata.
    pub fn enabled_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.asemconsist_enabled {
            v.push("ASemConsist");
        }
        v
    }
}

/// What the methods found for one image, for the UI's overlays (serialisable so projects
/// keep it).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FrameAnalysis {
    /// ASemConsist's ambiguity test and sharing decision, when it ran.
    pub afs: Option<asemconsist::AfsDecision>,
}
