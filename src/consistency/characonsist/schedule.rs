//! When the method acts: the merge strength schedule (eq. 20) and the step/layer windows.

use super::settings::CharaConsistSettings;

/// Merge strength `alpha` at `step` (eq. 20, released schedule): 0 outside the merge
/// window; `alpha` up to `alpha_full_until`; then `alpha·(1 + cos(pi·k/K))/2` at step
/// `alpha_full_until + k` with `K = alpha_zero_from - alpha_full_until`; 0 from
/// `alpha_zero_from` on. Defaults: 0.8 at steps 1..=11, cosine decay over 20 steps, 0 from 31.
pub fn alpha_at(step: usize, settings: &CharaConsistSettings) -> f32 {
    if !settings.token_merge || !settings.merge_steps.contains(step) {
        return 0.0;
    }
    let full_until = settings.alpha_full_until;
    let zero_from = settings.alpha_zero_from;
    if step <= full_until {
        return settings.alpha;
    }
    if step >= zero_from {
        return 0.0;
    }
    let k = (step - full_until) as f64;
    let span = (zero_from - full_until) as f64;
    (settings.alpha as f64 * (1.0 + (std::f64::consts::PI * k / span).cos()) / 2.0) as f32
}

/// Which kinds of extra keys a (step, single block) of a frame borrows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerSharing {
    /// Matched identity foreground keys (eqs. 10-13).
    pub foreground: bool,
    /// Identity background keys at their own positions (eq. 14, optional part).
    pub background: bool,
}

impl LayerSharing {
    /// The full run's sharing at `step` in single block `block`.
    pub fn full_run(settings: &CharaConsistSettings, step: usize, block: usize) -> Self {
        let active = settings.point_tracking && settings.tracking_steps.contains(step);
        Self {
            foreground: active && settings.is_foreground_layer(block),
            background: active
                && settings.background.shares_background()
                && settings.is_background_layer(block),
        }
    }

    /// The pre-run (up to the extraction step): no foreground sharing, background sharing
    /// as in the full run so the frame's layout at extraction matches.
    pub fn pre_run(settings: &CharaConsistSettings, step: usize, block: usize) -> Self {
        Self {
            foreground: false,
            ..Self::full_run(settings, step, block)
        }
    }

    pub fn any(self) -> bool {
        self.foreground || self.background
    }
}

/// Whether the frames merge tokens in this (step, single block).
pub fn merges_at(settings: &CharaConsistSettings, step: usize, block: usize) -> bool {
    alpha_at(step, settings) > 0.0 && settings.is_foreground_layer(block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consistency::characonsist::settings::BackgroundMode;

    fn close(a: f32, b: f64) -> bool {
        (a as f64 - b).abs() < 1e-6
    }

    #[test]
    fn alpha_schedule_hand_checked() {
        let s = CharaConsistSettings::default();
        // Step 0 is outside the merge window 1..=30.
        assert_eq!(alpha_at(0, &s), 0.0);
        // Steps 1..=11 merge at full strength 0.8.
        assert_eq!(alpha_at(1, &s), 0.8);
        assert_eq!(alpha_at(11, &s), 0.8);
        // Step 12 = 11 + 1: 0.8·(1 + cos(pi/20))/2 = 0.4·(1 + 0.98768834) = 0.79507534.
        assert!(close(alpha_at(12, &s), 0.795_075_336));
        // Step 21 = 11 + 10: cos(pi/2) = 0, so 0.8·1/2 = 0.4.
        assert!(close(alpha_at(21, &s), 0.4));
        // Step 30 = 11 + 19: 0.4·(1 + cos(19·pi/20)) = 0.4·(1 - 0.98768834) = 0.00492466.
        assert!(close(alpha_at(30, &s), 0.004_924_664));
        // Step 31: outside the window (and the decay reached 0).
        assert_eq!(alpha_at(31, &s), 0.0);
        assert_eq!(alpha_at(49, &s), 0.0);
    }

    #[test]
    fn alpha_is_zero_when_merge_is_off() {
        let s = CharaConsistSettings {
            token_merge: false,
            ..Default::default()
        };
        assert_eq!(alpha_at(5, &s), 0.0);
    }

    #[test]
    fn sharing_windows_follow_the_settings() {
        let s = CharaConsistSettings::default();
        assert_eq!(
            LayerSharing::full_run(&s, 1, 0),
            LayerSharing {
                foreground: true,
                background: true
            }
        );
        assert_eq!(
            LayerSharing::full_run(&s, 40, 1),
            LayerSharing {
                foreground: false,
                background: true
            }
        );
        assert!(!LayerSharing::full_run(&s, 0, 0).any());
        assert!(!LayerSharing::full_run(&s, 41, 0).any());
        assert!(!LayerSharing::pre_run(&s, 5, 0).foreground);
        assert!(LayerSharing::pre_run(&s, 5, 0).background);
        let switch = CharaConsistSettings {
            background: BackgroundMode::Switch,
            ..Default::default()
        };
        assert_eq!(
            LayerSharing::full_run(&switch, 5, 0),
            LayerSharing {
                foreground: true,
                background: false
            }
        );
        assert!(merges_at(&s, 30, 2) && !merges_at(&s, 30, 3) && !merges_at(&s, 31, 2));
    }
}
