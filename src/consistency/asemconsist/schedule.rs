//! Where (which blocks) and when (which sampler steps) ASemConsist acts, and how the paper's
//! windows for FLUX.1-dev (19 double + 38 single blocks, 28 steps) carry over to other models.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::model::dit::BlockId;

/// Number of double-stream and single-stream blocks of a FLUX-family transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDepth {
    pub num_double: usize,
    pub num_single: usize,
}

/// FLUX.1 (dev and schnell): the depth the paper's block numbers refer to.
pub const FLUX1_DEPTH: ModelDepth = ModelDepth {
    num_double: 19,
    num_single: 38,
};

impl ModelDepth {
    pub fn total(self) -> usize {
        self.num_double + self.num_single
    }

    /// The block with index `global` when blocks are numbered over all of them, double first
    /// (the numbering of Stable Flow and ASemConsist: "block 25 of 57" is `Single(6)`).
    pub fn block(self, global: usize) -> Option<BlockId> {
        if global < self.num_double {
            Some(BlockId::Double(global))
        } else if global < self.total() {
            Some(BlockId::Single(global - self.num_double))
        } else {
            None
        }
    }
}

/// Maps blocks given in the paper's global numbering on `paper` to blocks of `target`.
///
/// Rule: a block keeps its kind (double or single) and its relative depth inside that
/// stack: index `i` of `n` becomes `round(i * (n' - 1) / (n - 1))` of `n'`, so the first and
/// last block of a stack stay first and last. Blocks of a kind the target lacks are dropped;
/// blocks that land on the same target block are kept once. On the paper's own depth the
/// map is the identity.
pub fn scale_blocks(paper_global: &[usize], paper: ModelDepth, target: ModelDepth) -> Vec<BlockId> {
    let rescale = |i: usize, n: usize, n_target: usize| -> Option<usize> {
        match (n, n_target) {
            (_, 0) => None,
            (0 | 1, _) => Some(0),
            _ => Some(((i as f64) * (n_target - 1) as f64 / (n - 1) as f64).round() as usize),
        }
    };
    let mut out: Vec<BlockId> = Vec::new();
    for &g in paper_global {
        let mapped = match paper.block(g) {
            Some(BlockId::Double(i)) => {
                rescale(i, paper.num_double, target.num_double).map(BlockId::Double)
            }
            Some(BlockId::Single(i)) => {
                rescale(i, paper.num_single, target.num_single).map(BlockId::Single)
            }
            None => None,
        };
        if let Some(block) = mapped
            && !out.contains(&block)
        {
            out.push(block);
        }
    }
    out
}

/// Whether the paper's step numbers count from 0 or from 1. The paper does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum StepIndexing {
    /// Paper step `t` is the sampler's step `t` (0-based), as in a diffusers
    /// `for i, t in enumerate(timesteps)` loop, which the paper's FLUX-dev baseline uses.
    #[default]
    ZeroBased,
    /// Paper step `t` is the sampler's step `t - 1`.
    OneBased,
}

pub const STEP_INDEXING_HELP: &str = "How the paper's step numbers are counted (not published). \
Default: 0-based, as in the diffusers sampling loop the paper's FLUX-dev baseline runs on; \
choose 1-based to shift every step window one step earlier.";

/// An inclusive window of denoising steps as numbered in the paper, for a schedule of
/// `of_steps` steps (e.g. steps 7..=11 of 28).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepWindow {
    pub first: usize,
    pub last: usize,
    pub of_steps: usize,
}

impl StepWindow {
    /// The window in 0-based sampler steps for a schedule of `num_steps` steps.
    ///
    /// Rule: the window is taken as the half-open fraction `[first, last + 1) / of_steps` of
    /// the schedule (after converting to 0-based) and scaled to `num_steps`, rounding both
    /// ends; it keeps at least one step and stays inside the schedule. With
    /// `num_steps == of_steps` it is the paper's window unchanged.
    pub fn sampler_steps(&self, num_steps: usize, indexing: StepIndexing) -> RangeInclusive<usize> {
        let shift = match indexing {
            StepIndexing::ZeroBased => 0,
            StepIndexing::OneBased => 1,
        };
        let first0 = self.first.saturating_sub(shift);
        let end0 = (self.last + 1).saturating_sub(shift).max(first0 + 1);
        let scale = num_steps as f64 / self.of_steps.max(1) as f64;
        let last_step = num_steps.saturating_sub(1);
        let start = ((first0 as f64 * scale).round() as usize).min(last_step);
        let end_exclusive = (end0 as f64 * scale).round() as usize;
        let end = end_exclusive.saturating_sub(1).max(start).min(last_step);
        start..=end
    }

    pub fn contains(&self, step: usize, num_steps: usize, indexing: StepIndexing) -> bool {
        num_steps > 0 && self.sampler_steps(num_steps, indexing).contains(&step)
    }
}

/// Paper, appendix B.3: STM inside the transformer at blocks 25, 28, 53, 54, 56 of 57.
pub const PAPER_STM_BLOCKS: [usize; 5] = [25, 28, 53, 54, 56];
/// Paper, appendix B.3: STM inside the transformer at steps 7..=11 of 28.
pub const PAPER_STM_STEPS: StepWindow = StepWindow {
    first: 7,
    last: 11,
    of_steps: 28,
};
/// Paper, appendix B.2: residual sharing at blocks 0, 1, 2, 17, 18 (all double blocks).
pub const PAPER_AFS_BLOCKS: [usize; 5] = [0, 1, 2, 17, 18];
/// Paper, appendix B.2: residual sharing at steps 1..=6 of 28.
pub const PAPER_AFS_STEPS: StepWindow = StepWindow {
    first: 1,
    last: 6,
    of_steps: 28,
};
/// Paper, sec. 3.4 and appendix C: the ambiguity probe reads block 23 of 57 (single block 4).
pub const PAPER_PROBE_BLOCK: usize = 23;
/// Paper, sec. 3.4 and appendix C: the ambiguity probe reads step 4 of 28.
pub const PAPER_PROBE_STEP: StepWindow = StepWindow {
    first: 4,
    last: 4,
    of_steps: 28,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_depth_gives_the_papers_blocks() {
        let blocks = scale_blocks(&PAPER_STM_BLOCKS, FLUX1_DEPTH, FLUX1_DEPTH);
        use BlockId::*;
        assert_eq!(
            blocks,
            vec![Single(6), Single(9), Single(34), Single(35), Single(37)]
        );
        let afs = scale_blocks(&PAPER_AFS_BLOCKS, FLUX1_DEPTH, FLUX1_DEPTH);
        assert_eq!(
            afs,
            vec![Double(0), Double(1), Double(2), Double(17), Double(18)]
        );
        assert_eq!(FLUX1_DEPTH.block(PAPER_PROBE_BLOCK), Some(Single(4)));
    }

    #[test]
    fn small_model_blocks_keep_relative_depth() {
        // 2 double + 4 single: single i of 38 -> round(i * 3 / 37):
        // 6 -> 0.486 -> 0, 9 -> 0.730 -> 1, 34 -> 2.757 -> 3, 35 -> 2.838 -> 3, 37 -> 3.
        let small = ModelDepth {
            num_double: 2,
            num_single: 4,
        };
        use BlockId::*;
        assert_eq!(
            scale_blocks(&PAPER_STM_BLOCKS, FLUX1_DEPTH, small),
            vec![Single(0), Single(1), Single(3)]
        );
        // double i of 19 -> round(i * 1 / 18): 0,1,2 -> 0; 17 -> 0.944 -> 1; 18 -> 1.
        assert_eq!(
            scale_blocks(&PAPER_AFS_BLOCKS, FLUX1_DEPTH, small),
            vec![Double(0), Double(1)]
        );
        let no_double = ModelDepth {
            num_double: 0,
            num_single: 4,
        };
        assert!(scale_blocks(&PAPER_AFS_BLOCKS, FLUX1_DEPTH, no_double).is_empty());
    }

    #[test]
    fn paper_schedule_gives_the_papers_steps() {
        assert_eq!(
            PAPER_STM_STEPS.sampler_steps(28, StepIndexing::ZeroBased),
            7..=11
        );
        assert_eq!(
            PAPER_STM_STEPS.sampler_steps(28, StepIndexing::OneBased),
            6..=10
        );
        assert_eq!(
            PAPER_AFS_STEPS.sampler_steps(28, StepIndexing::ZeroBased),
            1..=6
        );
        assert_eq!(
            PAPER_PROBE_STEP.sampler_steps(28, StepIndexing::ZeroBased),
            4..=4
        );
        assert!(PAPER_STM_STEPS.contains(11, 28, StepIndexing::ZeroBased));
        assert!(!PAPER_STM_STEPS.contains(12, 28, StepIndexing::ZeroBased));
    }

    #[test]
    fn built_in_model_windows_at_twenty_steps() {
        // The table in the built-in model's card. STM: [7, 12) * 20/28 = [5, 8.57) -> 5..=8;
        // AFS: [1, 7) * 20/28 = [0.71, 5) -> 1..=4; probe: [4, 5) * 20/28 = [2.86, 3.57) -> 3..=3.
        let z = StepIndexing::ZeroBased;
        assert_eq!(PAPER_STM_STEPS.sampler_steps(20, z), 5..=8);
        assert_eq!(PAPER_AFS_STEPS.sampler_steps(20, z), 1..=4);
        assert_eq!(PAPER_PROBE_STEP.sampler_steps(20, z), 3..=3);
    }

    #[test]
    fn other_step_counts_scale_the_window() {
        // 50 steps: [7, 12) * 50/28 = [12.5, 21.43) -> [13, 21) -> 13..=20.
        assert_eq!(
            PAPER_STM_STEPS.sampler_steps(50, StepIndexing::ZeroBased),
            13..=20
        );
        // 4 steps: [7, 12) * 4/28 = [1, 1.71) -> [1, 2) -> 1..=1.
        assert_eq!(
            PAPER_STM_STEPS.sampler_steps(4, StepIndexing::ZeroBased),
            1..=1
        );
        // AFS on 4 steps: [1, 7) * 4/28 = [0.14, 1) -> [0, 1) -> 0..=0.
        assert_eq!(
            PAPER_AFS_STEPS.sampler_steps(4, StepIndexing::ZeroBased),
            0..=0
        );
        // The probe at step 4 of 28 on 8 steps: [4, 5) * 8/28 = [1.14, 1.43) -> 1..=1.
        assert_eq!(
            PAPER_PROBE_STEP.sampler_steps(8, StepIndexing::ZeroBased),
            1..=1
        );
        // A 1-step schedule still has its window inside the schedule.
        assert_eq!(
            PAPER_STM_STEPS.sampler_steps(1, StepIndexing::ZeroBased),
            0..=0
        );
    }
}
