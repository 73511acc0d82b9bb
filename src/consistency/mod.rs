//! Training-free consistency methods, each a `Control` plugged into the DiT's hook points.

pub mod asemconsist;
pub mod characonsist;
pub mod metrics;

use serde::{Deserialize, Serialize};

/// Which methods run, with their settings (kept in the project).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MethodSettings {
    pub characonsist_enabled: bool,
    pub characonsist: characonsist::CharaConsistSettings,
    /// Memory the CharaConsist identity bank may use, in MiB: the identity runs in the same
    /// batch as the frames when that batch fits, otherwise its tensors are stored once in
    /// half precision (see [`characonsist::story::BankStrategy`]).
    pub bank_budget_mib: u64,
    pub asemconsist_enabled: bool,
    pub asemconsist: asemconsist::AsemSettings,
}

impl Default for MethodSettings {
    fn default() -> Self {
        Self {
            characonsist_enabled: false,
            characonsist: characonsist::CharaConsistSettings::default(),
            bank_budget_mib: 4096,
            asemconsist_enabled: false,
            asemconsist: asemconsist::AsemSettings::default(),
        }
    }
}

impl MethodSettings {
    /// Whether any method needs the whole story at once (identity and all frames).
    pub fn any_enabled(&self) -> bool {
        self.characonsist_enabled || self.asemconsist_enabled
    }

    /// Short names of the enabled methods, for frame cards and metadata.
    pub fn enabled_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.characonsist_enabled {
            v.push("CharaConsist");
        }
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
    /// CharaConsist's masks and point matches at the extraction step, when it ran.
    pub characonsist: Option<characonsist::FrameAnalysis>,
    /// ASemConsist's ambiguity test and sharing decision, when it ran.
    pub afs: Option<asemconsist::AfsDecision>,
}
