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
    /// Which tokens of the combined prompt the spans hold (not published).
    #[serde(default)]
    pub prompt: PromptLayout,
}

/// Which tokens of the combined prompt `[p_id, p_1, .., p_k]` belong to which span. The paper
/// speaks of e_id, e_i and the padding only; the end token and the separators between
/// segments are left open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PromptLayout {
    /// Whether the end-of-sequence token is the first padding row. Default `false`: the
    /// padding are the rows after the EOS, the tokens a tokenizer's attention mask marks as
    /// padding (FLUX runs T5 on `max_length` tokens, EOS included among the real ones); the EOS
    /// is shared by every frame and stays untouched.
    pub eos_is_padding: bool,
    pub separators: SeparatorTokens,
}

/// Where the separator tokens between segments go (the tokens of `Separator::Comma`; the
/// space separator adds none). Inside a frame, the separator between its background and its
/// action always belongs to that frame's span, since `p_i` is one prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SeparatorTokens {
    /// Separators between the identity and a frame or between two frames belong to no span:
    /// they are neither expressed nor suppressed nor used as a reference, like the tokenizer's
    /// own special tokens, so frame i's suppression never touches punctuation frame i shares.
    #[default]
    Unassigned,
    /// Each separator belongs to the segment before it (the identity or the previous frame),
    /// as if every prompt carried its trailing comma.
    WithPreceding,
}

pub const EOS_IS_PADDING_HELP: &str = "Whether the end token counts as padding for PAD (not \
published). Default: no - padding are the tokens after the end token, as a tokenizer's \
attention mask marks them; the end token is shared by every frame and left untouched.";
pub const SEPARATORS_HELP: &str = "Where the commas between the identity prompt and the frame \
prompts go (not published). Default: to no span - they are neither expressed nor suppressed. \
The comma between a frame's background and its action always belongs to that frame.";

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

    /// Tooltips of the prompt-layout choices.
    pub fn prompt_layout_help() -> &'static [(&'static str, &'static str)] {
        &[
            ("eos_is_padding", EOS_IS_PADDING_HELP),
            ("separators", SEPARATORS_HELP),
        ]
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
            prompt: PromptLayout::default(),
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
    fn settings_saved_without_the_prompt_layout_still_load() {
        let text = ron::to_string(&AsemPreset::Stm.settings()).unwrap();
        let old = text
            .replace(",prompt:(eos_is_padding:false,separators:Unassigned)", "")
            .replace(",probe_seeds:FrameSeeds", "");
        assert_ne!(old, text);
        let back: AsemSettings = ron::from_str(&old).unwrap();
        assert_eq!(back, AsemPreset::Stm.settings());
    }

    #[test]
    fn settings_round_trip_through_ron() {
        let s = AsemPreset::StmPad.settings();
        let text = ron::to_string(&s).unwrap();
        let back: AsemSettings = ron::from_str(&text).unwrap();
        assert_eq!(back, s);
    }
}
