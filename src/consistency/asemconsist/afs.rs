//! Adaptive feature sharing (AFS), ASemConsist sec. 3.4 and appendices B.2, C: the pure parts
//! (ambiguity radius, decision, threshold calibration).
//!
//! The ambiguity test runs the prompt set `{p_id + p_i}` to the probe step and reads the image
//! tokens' residual stream at the probe block; the samples' mean distance to their centroid is
//! the radius. When the radius is above the threshold the identity prompt is ambiguous and the
//! residual features of a `p_id`-only run are shared into every frame.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::AsemError;
use super::schedule::{
    PAPER_AFS_BLOCKS, PAPER_AFS_STEPS, PAPER_PROBE_BLOCK, PAPER_PROBE_STEP, StepWindow,
};

/// When residual sharing is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum AfsMode {
    /// Share only when the measured radius is above the threshold (the paper's method).
    #[default]
    Auto,
    Always,
    Never,
}

/// How a feature sample is scaled before distances are taken. The paper does not publish it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RadiusNormalisation {
    /// Each sample is flattened (all image tokens x channels, n elements) and distances are
    /// divided by `sqrt(n)`: the root-mean-square per-element deviation, which does not grow
    /// with resolution or width, so one threshold serves every image size.
    #[default]
    SqrtElements,
    /// Plain Euclidean distance between the flattened samples.
    None,
}

pub const RADIUS_NORMALISATION_HELP: &str = "How the ambiguity radius is normalised (not \
published). Default: Euclidean distance of the flattened features divided by sqrt(number of \
elements), i.e. RMS per element, so the value does not depend on the image size. Changing it \
requires recalibrating the threshold.";
pub const THRESHOLD_HELP: &str = "Radius above which the identity prompt counts as ambiguous \
and residual sharing is used (Auto mode). Paper: 0.1285 on FLUX.1-dev, the point where Gaussians \
fitted to the radii of 107 ambiguous and 107 clear prompt sets have equal density (appendix C). \
The paper's feature normalisation is unknown: recalibrate on your model with labelled sets.";
pub const MODE_HELP: &str = "Auto: measure the ambiguity of the identity prompt and share \
identity features only when it is ambiguous. Always / Never: force sharing on or off.";
pub const SHARE_WINDOW_HELP: &str = "Blocks 0, 1, 2, 17, 18 of 57 and steps 1..6 of 28 receive the \
cached residual features of an identity-only run (appendix B.2); scaled to other models.";
pub const PROBE_HELP: &str = "The ambiguity test reads the residual stream of the image tokens at \
block 23 of 57, step 4 of 28 (sec. 3.4, appendix C); scaled to other models.";

/// Settings of AFS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AfsSettings {
    pub mode: AfsMode,
    pub threshold: f32,
    pub normalisation: RadiusNormalisation,
    /// Probe block in the paper's global numbering (23 = FLUX.1 single block 4).
    pub probe_block: usize,
    pub probe_step: StepWindow,
    /// Blocks whose residual features are shared (paper's global numbering).
    pub share_blocks: Vec<usize>,
    pub share_steps: StepWindow,
    /// Noise seeds of the probe samples (not published).
    #[serde(default)]
    pub probe_seeds: ProbeSeeds,
}

/// Which seeds the samples `{p_id + p_i}` of the ambiguity probe start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ProbeSeeds {
    /// Sample i uses frame i's seed: the probe sees the start of the plain generation of the
    /// very frames that will be rendered, so the radius measures how much their appearance
    /// would actually spread.
    #[default]
    FrameSeeds,
    /// Every sample uses the identity seed: the radius measures the spread caused by the
    /// frame prompts alone.
    IdentitySeed,
}

pub const PROBE_SEEDS_HELP: &str = "Seeds of the ambiguity probe's samples (not published). \
Default: each frame's own seed, so the probe measures the spread of the frames that will be \
rendered. The threshold must be calibrated with the same choice.";

/// Paper, appendix C: the threshold calibrated on FLUX.1-dev.
pub const PAPER_THRESHOLD: f32 = 0.1285;

impl Default for AfsSettings {
    fn default() -> Self {
        Self {
            mode: AfsMode::Auto,
            threshold: PAPER_THRESHOLD,
            normalisation: RadiusNormalisation::default(),
            probe_block: PAPER_PROBE_BLOCK,
            probe_step: PAPER_PROBE_STEP,
            share_blocks: PAPER_AFS_BLOCKS.to_vec(),
            share_steps: PAPER_AFS_STEPS,
            probe_seeds: ProbeSeeds::default(),
        }
    }
}

impl AfsSettings {
    pub fn help() -> &'static [(&'static str, &'static str)] {
        &[
            ("mode", MODE_HELP),
            ("threshold", THRESHOLD_HELP),
            ("normalisation", RADIUS_NORMALISATION_HELP),
            ("probe", PROBE_HELP),
            ("share", SHARE_WINDOW_HELP),
            ("probe_seeds", PROBE_SEEDS_HELP),
        ]
    }
}

/// The outcome of the ambiguity test, for the pipeline and for display.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AfsDecision {
    /// Measured radius (`None` when not measured, e.g. mode Never/Always without a probe run).
    pub radius: Option<f32>,
    pub threshold: f32,
    pub mode: AfsMode,
    pub use_sharing: bool,
}

/// Sharing is on in `Always`, off in `Never`, and in `Auto` exactly when `radius > threshold`
/// (appendix C: "high ambiguity if radius > 0.1285, low if <= 0.1285"). A missing radius in
/// `Auto` means no sharing.
pub fn decide(mode: AfsMode, radius: Option<f32>, threshold: f32) -> AfsDecision {
    let use_sharing = match mode {
        AfsMode::Always => true,
        AfsMode::Never => false,
        AfsMode::Auto => radius.is_some_and(|r| r > threshold),
    };
    AfsDecision {
        radius,
        threshold,
        mode,
        use_sharing,
    }
}

/// Mean distance of the samples to their centroid. All samples must have the same length.
/// Computed in f64.
pub fn radius(samples: &[Vec<f32>], normalisation: RadiusNormalisation) -> Result<f32, AsemError> {
    let Some(first) = samples.first() else {
        return Err(AsemError::Empty("radius of an empty sample set"));
    };
    let n = first.len();
    if n == 0 {
        return Err(AsemError::Empty("radius of empty samples"));
    }
    if samples.iter().any(|s| s.len() != n) {
        return Err(AsemError::Shape("radius samples differ in length".into()));
    }
    let count = samples.len() as f64;
    let mut centroid = vec![0.0_f64; n];
    for s in samples {
        for (c, &x) in centroid.iter_mut().zip(s) {
            *c += x as f64;
        }
    }
    for c in &mut centroid {
        *c /= count;
    }
    let scale = match normalisation {
        RadiusNormalisation::SqrtElements => 1.0 / (n as f64).sqrt(),
        RadiusNormalisation::None => 1.0,
    };
    let total: f64 = samples
        .iter()
        .map(|s| {
            s.iter()
                .zip(&centroid)
                .map(|(&x, &c)| (x as f64 - c).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .sum();
    Ok((total / count * scale) as f32)
}

/// [`radius`] of a tensor whose first dimension indexes the samples (e.g. `[k, L_img, C]`).
pub fn radius_of_tensor(
    samples: &Tensor,
    normalisation: RadiusNormalisation,
) -> Result<f32, AsemError> {
    let k = samples.dim(0)?;
    let flat = samples.to_dtype(DType::F32)?.reshape((k, ()))?;
    let rows: Vec<Vec<f32>> = flat.to_vec2()?;
    radius(&rows, normalisation)
}

/// Mean and sample standard deviation.
fn mean_std(xs: &[f32]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Calibrates the ambiguity threshold (appendix C).
///
/// Procedure to rerun on a model:
/// 1. Generate many prompt sets `{p_id, p_1..p_k}` with identity prompts from vague ("a man")
///    to detailed; render each set with the plain model (no consistency method).
/// 2. Score the visual similarity within each set (the paper uses DreamSim); label the least
///    similar 15 % "ambiguous" and the most similar 15 % "clear", drop the rest.
/// 3. For each labelled set measure [`radius`] of the probe features (block and step of
///    [`AfsSettings`], same normalisation as in use).
/// 4. Call this function with the two lists of radii.
///
/// Returns the point between the two class means where Gaussians fitted to each class
/// (mean, sample standard deviation) have equal density, i.e. the Bayes boundary for equal
/// class sizes (the paper's 107/107). On the paper's statistics (0.1571 +- 0.0135 ambiguous,
/// 0.1032 +- 0.0116 clear) this gives 0.12855, the published 0.1285. With equal spreads it is
/// the midpoint of the means.
pub fn calibrate_threshold(radii_ambiguous: &[f32], radii_clear: &[f32]) -> Result<f32, AsemError> {
    if radii_ambiguous.is_empty() || radii_clear.is_empty() {
        return Err(AsemError::Empty("calibration needs radii of both classes"));
    }
    let (m1, s1) = mean_std(radii_ambiguous);
    let (m0, s0) = mean_std(radii_clear);
    Ok(gaussian_boundary(m0, s0, m1, s1) as f32)
}

/// Equal-density point of N(m0, s0^2) and N(m1, s1^2) that lies between the means (falls back
/// to the midpoint when a spread is zero or the spreads are equal).
pub fn gaussian_boundary(m0: f64, s0: f64, m1: f64, s1: f64) -> f64 {
    let midpoint = 0.5 * (m0 + m1);
    if s0 <= 0.0 || s1 <= 0.0 || (s0 - s1).abs() <= 1e-12 * s0.max(s1) {
        return midpoint;
    }
    // log N(x; m0, s0) = log N(x; m1, s1)  <=>  a x^2 + b x + c = 0 with:
    let a = 1.0 / (2.0 * s0 * s0) - 1.0 / (2.0 * s1 * s1);
    let b = m1 / (s1 * s1) - m0 / (s0 * s0);
    let c = m0 * m0 / (2.0 * s0 * s0) - m1 * m1 / (2.0 * s1 * s1) + (s0 / s1).ln();
    let disc = b * b - 4.0 * a * c;
    if disc < 0.0 {
        return midpoint;
    }
    let (lo, hi) = (m0.min(m1), m0.max(m1));
    [
        (-b + disc.sqrt()) / (2.0 * a),
        (-b - disc.sqrt()) / (2.0 * a),
    ]
    .into_iter()
    .find(|x| (lo..=hi).contains(x))
    .unwrap_or(midpoint)
}

/// Cohen's d with the pooled standard deviation (the paper reports 4.26 for its two classes).
pub fn cohens_d(radii_ambiguous: &[f32], radii_clear: &[f32]) -> f64 {
    let (m1, s1) = mean_std(radii_ambiguous);
    let (m0, s0) = mean_std(radii_clear);
    let pooled = ((s1 * s1 + s0 * s0) / 2.0).sqrt();
    if pooled == 0.0 {
        f64::INFINITY
    } else {
        (m1 - m0) / pooled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn identical_samples_have_zero_radius() {
        let s = vec![vec![0.3_f32, -1.0, 2.5]; 4];
        assert_eq!(radius(&s, RadiusNormalisation::SqrtElements).unwrap(), 0.0);
    }

    #[test]
    fn radius_by_hand() {
        // Samples (0,0), (2,0), (0,2), (2,2): centroid (1,1), every distance sqrt2.
        let s = vec![
            vec![0.0, 0.0],
            vec![2.0, 0.0],
            vec![0.0, 2.0],
            vec![2.0, 2.0],
        ];
        let plain = radius(&s, RadiusNormalisation::None).unwrap();
        assert!((plain - 2.0_f32.sqrt()).abs() < 1e-6);
        // Divided by sqrt(2 elements): 1.
        let scaled = radius(&s, RadiusNormalisation::SqrtElements).unwrap();
        assert!((scaled - 1.0).abs() < 1e-6);
        // Same through a [4, 1, 2] tensor.
        let flat: Vec<f32> = s.concat();
        let t = Tensor::from_vec(flat, (4, 1, 2), &Device::Cpu).unwrap();
        assert!(
            (radius_of_tensor(&t, RadiusNormalisation::SqrtElements).unwrap() - 1.0).abs() < 1e-6
        );
        assert!(radius(&[], RadiusNormalisation::None).is_err());
        assert!(radius(&[vec![1.0], vec![1.0, 2.0]], RadiusNormalisation::None).is_err());
    }

    #[test]
    fn decision_flips_exactly_at_the_threshold() {
        let t = PAPER_THRESHOLD;
        assert!(!decide(AfsMode::Auto, Some(t), t).use_sharing);
        assert!(decide(AfsMode::Auto, Some(t.next_up()), t).use_sharing);
        assert!(!decide(AfsMode::Auto, Some(t.next_down()), t).use_sharing);
        assert!(!decide(AfsMode::Auto, None, t).use_sharing);
        assert!(decide(AfsMode::Always, Some(0.0), t).use_sharing);
        assert!(!decide(AfsMode::Never, Some(1.0), t).use_sharing);
        let d = decide(AfsMode::Auto, Some(0.2), t);
        assert_eq!(
            (d.radius, d.threshold, d.mode),
            (Some(0.2), t, AfsMode::Auto)
        );
    }

    /// Samples with exactly the given mean and sample standard deviation: m +- s*sqrt((n-1)/n).
    fn two_point(mean: f32, std: f32, n: usize) -> Vec<f32> {
        let spread = std * (((n - 1) as f32) / n as f32).sqrt();
        (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    mean + spread
                } else {
                    mean - spread
                }
            })
            .collect()
    }

    #[test]
    fn calibration_reproduces_the_papers_threshold() {
        let ambiguous = two_point(0.1571, 0.0135, 106);
        let clear = two_point(0.1032, 0.0116, 106);
        let t = calibrate_threshold(&ambiguous, &clear).unwrap();
        // Closed form on the paper's statistics: 0.128550.
        assert!((t - 0.12855).abs() < 2e-5, "{t}");
        assert!((t - PAPER_THRESHOLD).abs() < 1e-4);
        // Pooled Cohen's d = 0.0539 / sqrt((0.0135^2 + 0.0116^2)/2) = 4.28 (paper: 4.26).
        assert!((cohens_d(&ambiguous, &clear) - 4.28).abs() < 0.01);
    }

    #[test]
    fn calibration_with_equal_spreads_is_the_midpoint() {
        let t = calibrate_threshold(&[0.3, 0.5], &[0.1, 0.3]).unwrap();
        assert!((t - 0.3).abs() < 1e-6);
        assert!(calibrate_threshold(&[], &[0.1]).is_err());
    }
}
