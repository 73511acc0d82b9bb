//! All ASemConsist settings in one place, and the paper's ablation rows as presets.

use serde::{Deserialize, Serialize};

use super::afs::{AfsMode, AfsSettings};
use super::pad::PadSettings;
use super::schedule::{STEP_INDEXING_HELP, StepIndexing};
use super::stm::StmSettings;

/// Settings of the whole method. `Default` is the full method with the paper's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AsemSettings {
    pub stm: StmSettings,
    pub pad: PadSettings,
    pub afs: AfsSettings,
    /// How the paper's step numbers map to sampler steps (not published).
    pub step_indexing: StepIndexing,
}

impl Default for AsemSettings {
    fn default() -> Self {
        AsemPreset::Full.settings()
    }
}

impl AsemSettings {
    /// Tooltip of the step-indexing choice.
    pub fn step_indexing_help() -> &'static str {
        STEP_INDEXING_HELP
    }
}

/// The rows of the paper's ablation (Tables 2 and A1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AsemPreset {
    /// (a) plain FLUX on the combined prompt.
    Flux,
    /// (b) FLUX + STM.
    Stm,
    /// (c) FLUX + STM & PAD.
    StmPad,
    /// (d) FLUX + AFS.
    Afs,
    /// (f) FLUX + PAD.
    Pad,
    /// (e) the full method: STM + PAD + AFS.
    Full,
}

impl AsemPreset {
    pub const ALL: [AsemPreset; 6] = [
        AsemPreset::Flux,
        AsemPreset::Stm,
        AsemPreset::StmPad,
        AsemPreset::Afs,
        AsemPreset::Pad,
        AsemPreset::Full,
    ];

    pub fn label(self) -> &'static str {
        match self {
            AsemPreset::Flux => "FLUX",
            AsemPreset::Stm => "FLUX + STM",
            AsemPreset::StmPad => "FLUX + STM & PAD",
            AsemPreset::Afs => "FLUX + AFS",
            AsemPreset::Pad => "FLUX + PAD",
            AsemPreset::Full => "Full (STM + PAD + AFS)",
        }
    }

    pub fn settings(self) -> AsemSettings {
        let (stm, pad, afs) = match self {
            AsemPreset::Flux => (false, false, false),
            AsemPreset::Stm => (true, false, false),
            AsemPreset::StmPad => (true, true, false),
            AsemPreset::Afs => (false, false, true),
            AsemPreset::Pad => (false, true, false),
            AsemPreset::Full => (true, true, true),
        };
        AsemSettings {
            stm: StmSettings {
                enabled: stm,
                ..StmSettings::default()
            },
            pad: PadSettings {
                enabled: pad,
                ..PadSettings::default()
            },
            afs: AfsSettings {
                mode: if afs { AfsMode::Auto } else { AfsMode::Never },
                ..AfsSettings::default()
            },
            step_indexing: StepIndexing::default(),
        }
    }

    /// The preset these settings equal, if any.
    pub fn matching(settings: &AsemSettings) -> Option<AsemPreset> {
        Self::ALL.into_iter().find(|p| &p.settings() == settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_switch_the_papers_components() {
        let on = |p: AsemPreset| {
            let s = p.settings();
            (s.stm.enabled, s.pad.enabled, s.afs.mode != AfsMode::Never)
        };
        assert_eq!(on(AsemPreset::Flux), (false, false, false));
        assert_eq!(on(AsemPreset::Stm), (true, false, false));
        assert_eq!(on(AsemPreset::StmPad), (true, true, false));
        assert_eq!(on(AsemPreset::Afs), (false, false, true));
        assert_eq!(on(AsemPreset::Pad), (false, true, false));
        assert_eq!(on(AsemPreset::Full), (true, true, true));
        for p in AsemPreset::ALL {
            assert_eq!(AsemPreset::matching(&p.settings()), Some(p));
        }
        assert_eq!(AsemSettings::default(), AsemPreset::Full.settings());
    }

    #[test]
    fn settings_round_trip_through_ron() {
        let s = AsemPreset::StmPad.settings();
        let text = ron::to_string(&s).unwrap();
        let back: AsemSettings = ron::from_str(&text).unwrap();
        assert_eq!(back, s);
    }
}
