//! Consistency Quality Score, ASemConsist sec. 5.1, eqs. (7)-(13).
//!
//! Per image i of a set generated from `[p_id, p_1..p_k]`:
//! `t_i = VQA(x_i, [p_id, p_i])`, `a_i = VQA(x_i, p_i)` (eq. 7),
//! `d_i = mean_{j != i} D(x_i, x_j)` with D a perceptual distance such as DreamSim (eq. 8).
//! `1 - d_i` is min-max scaled to the range of the VQA scores; the alignment gap
//! `Delta_i = a_i - t_i` moves it by a penalty or reward (eqs. 9-11); the per-image score is
//! the harmonic mean of `t_i` and the adjusted identity score (eq. 12), averaged (eq. 13).

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::MetricsError;

/// A visual question answering scorer: probability that the image shows the prompt
/// (VQAScore: P("Yes" | "Does this image show {prompt}?")).
pub trait VqaScorer {
    fn score(&self, image: &RgbImage, prompt: &str) -> f32;
}

/// A perceptual distance between two images (e.g. 1 - cosine of DreamSim embeddings).
pub trait PairwiseDistance {
    fn distance(&self, a: &RgbImage, b: &RgbImage) -> f32;
}

/// How the identity similarity `1 - d_i` is brought to the VQA scores' range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub enum DistanceScaling {
    /// Min-max scale `1 - d_i` over all images given to [`cqs`] onto `[min t, max t]`
    /// (the range of the VQA scores it is combined with in eq. 12).
    #[default]
    ToObservedVqaRange,
    /// Min-max scale onto `[0, 1]`, the nominal range of a VQA probability.
    ToUnitRange,
    /// Use `1 - d_i` as it is.
    None,
}

/// Parameters of CQS. Defaults: the paper's footnote 3 (mu = tau = 0.5, lambda = 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CqsParams {
    /// Penalty weight when per-image alignment falls below combined alignment.
    pub mu: f32,
    /// Reward weight when per-image alignment exceeds combined alignment.
    pub tau: f32,
    /// Mix of dataset-level (0) and instance-level (1) gaps, eq. (10).
    pub lambda: f32,
    /// Stabiliser of the harmonic mean, eq. (12). Not published; 1e-8.
    pub epsilon: f32,
    pub scaling: DistanceScaling,
}

impl Default for CqsParams {
    fn default() -> Self {
        Self {
            mu: 0.5,
            tau: 0.5,
            lambda: 1.0,
            epsilon: 1e-8,
            scaling: DistanceScaling::default(),
        }
    }
}

/// Scores of one image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CqsSample {
    /// `VQA(x_i, [p_id, p_i])`.
    pub t: f32,
    /// `VQA(x_i, p_i)`.
    pub a: f32,
    /// Mean perceptual distance to the other images of its set, eq. (8).
    pub d: f32,
}

/// Intermediate values, for display and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct CqsReport {
    /// Identity similarity after the `1 - d` transform and scaling.
    pub identity: Vec<f32>,
    /// `Delta_i = a_i - t_i`.
    pub gaps: Vec<f32>,
    /// Mean positive gap, eq. (9) (0 when there is none).
    pub mean_positive_gap: f32,
    /// Mean negative gap, eq. (9), a value <= 0 (0 when there is none).
    pub mean_negative_gap: f32,
    /// `d*_i`, eq. (11).
    pub adjusted_identity: Vec<f32>,
    /// `h_i`, eq. (12).
    pub per_image: Vec<f32>,
    /// CQS_har, eq. (13).
    pub score: f32,
}

/// Eq. (8): `d_i = 1/(k-1) sum_{j != i} D_ij` from a `k x k` distance matrix.
pub fn mean_pairwise_distance(distances: &[Vec<f32>]) -> Result<Vec<f32>, MetricsError> {
    let k = distances.len();
    if k < 2 {
        return Err(MetricsError::Input(
            "eq. (8) needs at least two images".into(),
        ));
    }
    if distances.iter().any(|row| row.len() != k) {
        return Err(MetricsError::Input("distance matrix is not square".into()));
    }
    Ok((0..k)
        .map(|i| {
            (0..k)
                .filter(|&j| j != i)
                .map(|j| distances[i][j])
                .sum::<f32>()
                / (k - 1) as f32
        })
        .collect())
}

/// Scores one image set with real scorers: eq. (7) and (8), ready for [`cqs`]. The combined
/// prompt of `t_i` is `p_id` and `p_i` joined by a space.
pub fn score_set(
    images: &[RgbImage],
    identity_prompt: &str,
    frame_prompts: &[&str],
    vqa: &dyn VqaScorer,
    distance: &dyn PairwiseDistance,
) -> Result<Vec<CqsSample>, MetricsError> {
    if images.len() != frame_prompts.len() {
        return Err(MetricsError::Input(format!(
            "{} images for {} prompts",
            images.len(),
            frame_prompts.len()
        )));
    }
    let k = images.len();
    let mut matrix = vec![vec![0.0; k]; k];
    for i in 0..k {
        for j in (i + 1)..k {
            let dij = distance.distance(&images[i], &images[j]);
            matrix[i][j] = dij;
            matrix[j][i] = dij;
        }
    }
    let d = mean_pairwise_distance(&matrix)?;
    Ok(images
        .iter()
        .zip(frame_prompts)
        .zip(d)
        .map(|((img, p), d)| CqsSample {
            t: vqa.score(img, &format!("{identity_prompt} {p}")),
            a: vqa.score(img, p),
            d,
        })
        .collect())
}

fn min_max(xs: impl Iterator<Item = f32>) -> (f32, f32) {
    xs.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    })
}

/// Eqs. (9)-(13) over all given samples (one set, or a whole benchmark: the min-max scaling
/// and the mean gaps are taken over everything passed in).
///
/// When all identity similarities are equal the min-max scaling is undefined; `1 - d`
/// itself (already a [0, 1] quantity like the VQA scores) is used then.
pub fn cqs(samples: &[CqsSample], params: &CqsParams) -> Result<CqsReport, MetricsError> {
    if samples.is_empty() {
        return Err(MetricsError::Input("CQS of no samples".into()));
    }
    // Eq. (8) note: DreamSim distances become similarities (1 - d), scaled to the VQA range.
    let similarity: Vec<f32> = samples.iter().map(|s| 1.0 - s.d).collect();
    let (s_lo, s_hi) = min_max(similarity.iter().copied());
    let target = match params.scaling {
        DistanceScaling::ToObservedVqaRange => Some(min_max(samples.iter().map(|s| s.t))),
        DistanceScaling::ToUnitRange => Some((0.0, 1.0)),
        DistanceScaling::None => None,
    };
    let identity: Vec<f32> = match target {
        Some((lo, hi)) if s_hi > s_lo => similarity
            .iter()
            .map(|&s| lo + (s - s_lo) / (s_hi - s_lo) * (hi - lo))
            .collect(),
        _ => similarity,
    };

    // Eq. (9): dataset-level mean positive and negative gaps.
    let gaps: Vec<f32> = samples.iter().map(|s| s.a - s.t).collect();
    let mean_of = |keep: fn(f32) -> bool| {
        let picked: Vec<f32> = gaps.iter().copied().filter(|&g| keep(g)).collect();
        if picked.is_empty() {
            0.0
        } else {
            picked.iter().sum::<f32>() / picked.len() as f32
        }
    };
    let mean_positive_gap = mean_of(|g| g > 0.0);
    let mean_negative_gap = mean_of(|g| g < 0.0);

    let lambda = params.lambda;
    let mut adjusted_identity = Vec::with_capacity(samples.len());
    let mut per_image = Vec::with_capacity(samples.len());
    for ((s, &gap), &d) in samples.iter().zip(&gaps).zip(&identity) {
        // Eq. (10).
        let penalty = (1.0 - lambda) * mean_negative_gap.abs() + lambda * (-gap).max(0.0);
        let reward = (1.0 - lambda) * mean_positive_gap + lambda * gap.max(0.0);
        // Eq. (11).
        let mut d_star = d;
        if gap < 0.0 {
            d_star -= params.mu * penalty;
        }
        if gap > 0.0 {
            d_star += params.tau * reward;
        }
        // Eq. (12).
        let h = 2.0 * s.t * d_star / (s.t + d_star + params.epsilon);
        adjusted_identity.push(d_star);
        per_image.push(h);
    }
    // Eq. (13).
    let score = per_image.iter().sum::<f32>() / per_image.len() as f32;
    Ok(CqsReport {
        identity,
        gaps,
        mean_positive_gap,
        mean_negative_gap,
        adjusted_identity,
        per_image,
        score,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-5
    }

    #[test]
    fn three_image_example_by_hand() {
        // Distances: D12 = 0.2, D13 = 0.4, D23 = 0.6.
        // Eq. (8): d1 = (0.2+0.4)/2 = 0.3, d2 = (0.2+0.6)/2 = 0.4, d3 = (0.4+0.6)/2 = 0.5.
        let matrix = vec![
            vec![0.0, 0.2, 0.4],
            vec![0.2, 0.0, 0.6],
            vec![0.4, 0.6, 0.0],
        ];
        let d = mean_pairwise_distance(&matrix).unwrap();
        assert!(close(d[0], 0.3) && close(d[1], 0.4) && close(d[2], 0.5));
        // t = (0.8, 0.6, 0.7), a = (0.9, 0.5, 0.7).
        let t = [0.8, 0.6, 0.7];
        let a = [0.9, 0.5, 0.7];
        let samples: Vec<CqsSample> = (0..3)
            .map(|i| CqsSample {
                t: t[i],
                a: a[i],
                d: d[i],
            })
            .collect();
        let r = cqs(&samples, &CqsParams::default()).unwrap();
        // 1 - d = (0.7, 0.6, 0.5), min-max onto [min t, max t] = [0.6, 0.8]: (0.8, 0.7, 0.6).
        assert!(
            close(r.identity[0], 0.8) && close(r.identity[1], 0.7) && close(r.identity[2], 0.6)
        );
        // Gaps a - t = (0.1, -0.1, 0): mean positive 0.1, mean negative -0.1.
        assert!(close(r.mean_positive_gap, 0.1) && close(r.mean_negative_gap, -0.1));
        // lambda = 1: reward_1 = 0.1, penalty_2 = 0.1.
        // d*_1 = 0.8 + 0.5*0.1 = 0.85; d*_2 = 0.7 - 0.5*0.1 = 0.65; d*_3 = 0.6.
        let ds = &r.adjusted_identity;
        assert!(close(ds[0], 0.85) && close(ds[1], 0.65) && close(ds[2], 0.6));
        // h1 = 2*0.8*0.85/1.65 = 0.824242; h2 = 2*0.6*0.65/1.25 = 0.624; h3 = 2*0.7*0.6/1.3 = 0.646154.
        let h = &r.per_image;
        assert!(close(h[0], 1.36 / 1.65) && close(h[1], 0.78 / 1.25) && close(h[2], 0.84 / 1.3));
        // CQS = (0.824242 + 0.624 + 0.646154) / 3 = 0.698132.
        assert!(close(
            r.score,
            (1.36 / 1.65 + 0.78 / 1.25 + 0.84 / 1.3) / 3.0
        ));
    }

    #[test]
    fn lambda_zero_uses_the_dataset_mean_gaps() {
        // Same example, lambda = 0: reward = mean positive gap 0.1, penalty = |mean neg| 0.1,
        // so here the instance and dataset terms coincide for images 1 and 2.
        // Make them differ: gaps (0.3, 0.1, -0.2) -> mean positive 0.2, mean negative -0.2.
        let samples = [
            CqsSample {
                t: 0.5,
                a: 0.8,
                d: 0.2,
            },
            CqsSample {
                t: 0.6,
                a: 0.7,
                d: 0.2,
            },
            CqsSample {
                t: 0.7,
                a: 0.5,
                d: 0.2,
            },
        ];
        let params = CqsParams {
            lambda: 0.0,
            ..CqsParams::default()
        };
        let r = cqs(&samples, &params).unwrap();
        // All d equal: no min-max possible, identity = 1 - 0.2 = 0.8.
        assert!(r.identity.iter().all(|&x| close(x, 0.8)));
        // d* = 0.8 + 0.5*0.2 = 0.9 (images 1, 2), 0.8 - 0.5*0.2 = 0.7 (image 3).
        let ds = &r.adjusted_identity;
        assert!(close(ds[0], 0.9) && close(ds[1], 0.9) && close(ds[2], 0.7));
    }

    #[test]
    fn all_gaps_positive() {
        // Gaps (0.2, 0.1): no negative gap, mean negative = 0, every image rewarded.
        let samples = [
            CqsSample {
                t: 0.4,
                a: 0.6,
                d: 0.3,
            },
            CqsSample {
                t: 0.8,
                a: 0.9,
                d: 0.5,
            },
        ];
        let r = cqs(&samples, &CqsParams::default()).unwrap();
        assert_eq!(r.mean_negative_gap, 0.0);
        assert!(close(r.mean_positive_gap, 0.15));
        // 1 - d = (0.7, 0.5) -> onto [0.4, 0.8]: (0.8, 0.4); d* = 0.8 + 0.1, 0.4 + 0.05.
        assert!(close(r.adjusted_identity[0], 0.9) && close(r.adjusted_identity[1], 0.45));
        // h = 2*0.4*0.9/1.3 = 0.553846, 2*0.8*0.45/1.25 = 0.576.
        assert!(close(r.score, (0.72 / 1.3 + 0.72 / 1.25) / 2.0));
    }

    #[test]
    fn all_gaps_negative() {
        let samples = [
            CqsSample {
                t: 0.9,
                a: 0.5,
                d: 0.3,
            },
            CqsSample {
                t: 0.7,
                a: 0.6,
                d: 0.5,
            },
        ];
        let r = cqs(&samples, &CqsParams::default()).unwrap();
        assert_eq!(r.mean_positive_gap, 0.0);
        assert!(close(r.mean_negative_gap, -0.25));
        // 1 - d = (0.7, 0.5) -> onto [0.7, 0.9]: (0.9, 0.7); d* = 0.9 - 0.2, 0.7 - 0.05.
        assert!(close(r.adjusted_identity[0], 0.7) && close(r.adjusted_identity[1], 0.65));
        assert!(close(
            r.score,
            (2.0 * 0.9 * 0.7 / 1.6 + 2.0 * 0.7 * 0.65 / 1.35) / 2.0
        ));
    }

    #[test]
    fn two_images_share_one_distance() {
        // k = 2: d1 = d2 = D12, so min-max is degenerate and 1 - D12 is used.
        let d = mean_pairwise_distance(&[vec![0.0, 0.35], vec![0.35, 0.0]]).unwrap();
        assert_eq!(d, vec![0.35, 0.35]);
        let samples = [
            CqsSample {
                t: 0.6,
                a: 0.6,
                d: d[0],
            },
            CqsSample {
                t: 0.8,
                a: 0.8,
                d: d[1],
            },
        ];
        let r = cqs(&samples, &CqsParams::default()).unwrap();
        // No gaps: d* = 0.65 for both; h = 2*0.6*0.65/1.25 = 0.624, 2*0.8*0.65/1.45 = 0.717241.
        assert!(close(r.score, (0.78 / 1.25 + 1.04 / 1.45) / 2.0));
        assert!(mean_pairwise_distance(&[vec![0.0]]).is_err());
        assert!(cqs(&[], &CqsParams::default()).is_err());
    }

    struct ConstantVqa;
    impl VqaScorer for ConstantVqa {
        fn score(&self, image: &RgbImage, prompt: &str) -> f32 {
            // Longer prompts are harder; brighter images are "better": a deterministic stand-in.
            let brightness = image.get_pixel(0, 0).0[0] as f32 / 255.0;
            brightness / (1.0 + prompt.len() as f32 / 100.0)
        }
    }
    struct RedDistance;
    impl PairwiseDistance for RedDistance {
        fn distance(&self, a: &RgbImage, b: &RgbImage) -> f32 {
            (a.get_pixel(0, 0).0[0] as f32 - b.get_pixel(0, 0).0[0] as f32).abs() / 255.0
        }
    }

    #[test]
    fn scorers_plug_in() {
        let img = |r: u8| RgbImage::from_pixel(2, 2, image::Rgb([r, 0, 0]));
        let images = [img(255), img(102), img(51)];
        let samples = score_set(
            &images,
            "a fox",
            &["runs", "sits", "naps"],
            &ConstantVqa,
            &RedDistance,
        )
        .unwrap();
        // Distances: |255-102|/255 = 0.6, |255-51|/255 = 0.8, |102-51|/255 = 0.2.
        // d = (0.7, 0.4, 0.5).
        assert!(close(samples[0].d, 0.7) && close(samples[1].d, 0.4) && close(samples[2].d, 0.5));
        // t uses "a fox runs" (10 chars): 1.0 / 1.1; a uses "runs" (4 chars): 1.0 / 1.04.
        assert!(close(samples[0].t, 1.0 / 1.1) && close(samples[0].a, 1.0 / 1.04));
        assert!(score_set(&images, "a fox", &["runs"], &ConstantVqa, &RedDistance).is_err());
    }
}
