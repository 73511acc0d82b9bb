//! Flow-matching Euler sampler with FLUX's resolution-dependent schedule shift.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{Device, Result as CandleResult, Tensor};

use super::dit::init::seeded_normal;

/// The schedule's shift line: mu grows linearly with the number of image tokens from
/// (256, 0.5) to (4096, 1.15), as in FLUX.1-dev.
pub fn shift_mu(image_seq_len: usize) -> f64 {
    const BASE_LEN: f64 = 256.0;
    const MAX_LEN: f64 = 4096.0;
    const BASE_SHIFT: f64 = 0.5;
    const MAX_SHIFT: f64 = 1.15;
    let slope = (MAX_SHIFT - BASE_SHIFT) / (MAX_LEN - BASE_LEN);
    BASE_SHIFT + slope * (image_seq_len as f64 - BASE_LEN)
}

/// t' = e^mu / (e^mu + 1/t - 1); keeps 0 at 0.
pub fn time_shift(mu: f64, t: f64) -> f64 {
    if t <= 0.0 {
        return 0.0;
    }
    mu.exp() / (mu.exp() + (1.0 / t - 1.0))
}

/// How timesteps are spread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScheduleShift {
    /// FLUX.1-dev: shift by the image token count.
    Resolution,
    /// FLUX.1-schnell: plain linear.
    None,
}

/// `num_steps + 1` timesteps from 1 down to 0: t_k = 1 - k/N, shifted.
pub fn schedule(num_steps: usize, image_seq_len: usize, shift: ScheduleShift) -> Vec<f64> {
    let mu = shift_mu(image_seq_len);
    (0..=num_steps)
        .map(|k| {
            let t = 1.0 - k as f64 / num_steps as f64;
            match shift {
                ScheduleShift::Resolution => time_shift(mu, t),
                ScheduleShift::None => t,
            }
        })
        .collect()
}

/// `[B, C, H, W]` latents -> `[B, (H/2)(W/2), 4C]` tokens: 2x2 patches, channel-major
/// inside a token, tokens row-major.
pub fn pack_latents(x: &Tensor) -> CandleResult<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h / 2, 2, w / 2, 2))?
        .permute((0, 2, 4, 1, 3, 5))?
        .reshape((b, (h / 2) * (w / 2), c * 4))
}

/// Inverse of [`pack_latents`] for a latent of `h x w` (the grid is `h/2 x w/2`).
pub fn unpack_latents(x: &Tensor, h: usize, w: usize) -> CandleResult<Tensor> {
    let (b, _n, f) = x.dims3()?;
    let c = f / 4;
    x.reshape((b, h / 2, w / 2, c, 2, 2))?
        .permute((0, 3, 1, 4, 2, 5))?
        .reshape((b, c, h, w))
}

/// Initial noise for one image: the same seed gives the same noise on every run and device
/// (drawn on the CPU from a ChaCha stream in the unpacked `[1, C, H, W]` layout).
pub fn initial_noise(
    seed: u64,
    channels: usize,
    h: usize,
    w: usize,
    device: &Device,
) -> CandleResult<Tensor> {
    seeded_normal(seed, &[1, channels, h, w], &Device::Cpu)?.to_device(device)
}

/// Smallest t a clean-image prediction is divided by when turned into a velocity; the
/// built-in model's training used the same bound (`assets/builtin/train.py`, `T_MIN`).
pub const SAMPLE_PREDICTION_T_MIN: f64 = 0.05;

/// What a transformer's output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prediction {
    /// The flow velocity `eps - x0` (FLUX.1).
    #[default]
    Velocity,
    /// The clean sample `x0` (the built-in model: a 192-feature pixel token is wider than its
    /// 128-wide hidden state, so it is trained to predict the image, not the noise in it).
    Sample,
}

impl Prediction {
    /// Reads diffusers' `prediction_type` name; `None` for names this sampler cannot use.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "velocity" | "flow" | "flow_prediction" => Some(Self::Velocity),
            "sample" => Some(Self::Sample),
            _ => None,
        }
    }

    /// The velocity the Euler step integrates. For a clean-image prediction x0 at time t,
    /// x_t = (1 - t) x0 + t eps gives v = eps - x0 = (x_t - x0) / t.
    pub fn to_velocity(self, output: Tensor, x: &Tensor, t: f64) -> CandleResult<Tensor> {
        match self {
            Self::Velocity => Ok(output),
            Self::Sample => (x - output)? / t.max(SAMPLE_PREDICTION_T_MIN),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("cancelled at step {step}")]
    Cancelled { step: usize },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// What the step callback sees after each step.
pub struct StepReport<'a> {
    /// 0-based index of the step just taken.
    pub step: usize,
    pub num_steps: usize,
    /// Latents after the step.
    pub latents: &'a Tensor,
    /// The clean image the model predicts at this step: x - t v.
    pub predicted_x0: &'a Tensor,
}

/// Plain Euler integration of the flow from noise (t = 1) to data (t = 0):
/// x_{k+1} = x_k + (t_{k+1} - t_k) v(x_k, t_k). `velocity(step, x, t)` runs the model.
/// `cancel` is checked before every step, so a cancel takes effect within one step.
pub fn euler_sample(
    mut x: Tensor,
    timesteps: &[f64],
    cancel: &AtomicBool,
    mut velocity: impl FnMut(usize, &Tensor, f64) -> CandleResult<Tensor>,
    mut on_step: impl FnMut(&StepReport) -> CandleResult<()>,
) -> Result<Tensor, SampleError> {
    let num_steps = timesteps.len().saturating_sub(1);
    for step in 0..num_steps {
        if cancel.load(Ordering::Relaxed) {
            return Err(SampleError::Cancelled { step });
        }
        let (t, t_next) = (timesteps[step], timesteps[step + 1]);
        let v = velocity(step, &x, t)?;
        let x0 = (&x - (&v * t)?)?;
        x = (&x + (&v * (t_next - t))?)?;
        on_step(&StepReport {
            step,
            num_steps,
            latents: &x,
            predicted_x0: &x0,
        })?;
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_prediction_becomes_the_velocity_of_the_straight_path() -> CandleResult<()> {
        // x0 = 2, eps = -1, t = 0.25: x_t = 0.75 * 2 + 0.25 * -1 = 1.25, v = eps - x0 = -3.
        let x = Tensor::new(&[1.25f32], &Device::Cpu)?;
        let x0 = Tensor::new(&[2f32], &Device::Cpu)?;
        let v = Prediction::Sample.to_velocity(x0.clone(), &x, 0.25)?;
        assert!((v.to_vec1::<f32>()?[0] + 3.0).abs() < 1e-6);
        // One Euler step to t = 0 lands on x0.
        let landed = (&x + (&v * -0.25)?)?;
        assert!((landed.to_vec1::<f32>()?[0] - 2.0).abs() < 1e-6);
        // Below the bound, t is clamped: (1.25 - 2) / 0.05 = -15.
        let v = Prediction::Sample.to_velocity(x0.clone(), &x, 0.01)?;
        assert!((v.to_vec1::<f32>()?[0] + 15.0).abs() < 1e-4);
        // A velocity model's output passes through untouched.
        let v = Prediction::Velocity.to_velocity(x0, &x, 0.25)?;
        assert_eq!(v.to_vec1::<f32>()?, vec![2.0]);
        Ok(())
    }

    #[test]
    fn prediction_names_follow_diffusers() {
        assert_eq!(Prediction::from_name("sample"), Some(Prediction::Sample));
        assert_eq!(
            Prediction::from_name("velocity"),
            Some(Prediction::Velocity)
        );
        assert_eq!(Prediction::from_name("epsilon"), None);
        assert_eq!(Prediction::default(), Prediction::Velocity);
    }

    #[test]
    fn mu_hits_both_ends_of_the_line() {
        assert!((shift_mu(256) - 0.5).abs() < 1e-12);
        assert!((shift_mu(4096) - 1.15).abs() < 1e-12);
    }

    #[test]
    fn schedule_at_1024_px_by_hand() {
        // 1024x1024 px -> 64x64 tokens = 4096, mu = 1.15.
        // Step 10 of 50: t = 0.8 -> e^1.15 / (e^1.15 + 0.25) = 3.1582 / 3.4082 = 0.92665
        let ts = schedule(50, 4096, ScheduleShift::Resolution);
        assert_eq!(ts.len(), 51);
        assert!((ts[10] - 0.92665).abs() < 1e-4, "{}", ts[10]);
        assert_eq!(ts[0], 1.0);
        assert_eq!(ts[50], 0.0);
        assert!(ts.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn schnell_schedule_is_linear() {
        assert_eq!(
            schedule(4, 4096, ScheduleShift::None),
            vec![1.0, 0.75, 0.5, 0.25, 0.0]
        );
    }

    #[test]
    fn pack_then_unpack_is_identity() -> CandleResult<()> {
        let x = seeded_normal(3, &[2, 4, 6, 8], &Device::Cpu)?;
        let p = pack_latents(&x)?;
        assert_eq!(p.dims(), &[2, 12, 16]);
        let y = unpack_latents(&p, 6, 8)?;
        let d = (x - y)?.abs()?.sum_all()?.to_scalar::<f32>()?;
        assert_eq!(d, 0.0);
        Ok(())
    }

    #[test]
    fn packed_token_holds_a_2x2_patch_channel_major() -> CandleResult<()> {
        // One channel, 2x2 latent: the single token is [x00, x01, x10, x11].
        let x = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu)?;
        let p = pack_latents(&x)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(p, vec![1., 2., 3., 4.]);
        Ok(())
    }

    #[test]
    fn same_seed_same_noise() -> CandleResult<()> {
        let a = initial_noise(42, 16, 8, 8, &Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let b = initial_noise(42, 16, 8, 8, &Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let c = initial_noise(43, 16, 8, 8, &Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(a, b);
        assert_ne!(a, c);
        Ok(())
    }

    #[test]
    fn euler_on_a_constant_field_lands_on_x_minus_v() -> Result<(), SampleError> {
        // With v = x0_noise - data constant, integrating from t=1 to 0 moves x by -v.
        let x = Tensor::new(&[1f32, 2.0], &Device::Cpu)?;
        let v = Tensor::new(&[0.5f32, -1.0], &Device::Cpu)?;
        let cancel = AtomicBool::new(false);
        let ts = schedule(7, 1024, ScheduleShift::Resolution);
        let out = euler_sample(x, &ts, &cancel, |_, _, _| Ok(v.clone()), |_| Ok(()))?;
        let out = out.to_vec1::<f32>()?;
        assert!(
            (out[0] - 0.5).abs() < 1e-6 && (out[1] - 3.0).abs() < 1e-6,
            "{out:?}"
        );
        Ok(())
    }

    #[test]
    fn cancel_stops_before_the_next_step() {
        let x = Tensor::new(&[0f32], &Device::Cpu).unwrap();
        let cancel = AtomicBool::new(false);
        let ts = schedule(10, 256, ScheduleShift::None);
        let mut model_calls = 0;
        let err = euler_sample(
            x,
            &ts,
            &cancel,
            |_, x, _| {
                model_calls += 1;
                Ok(x.clone())
            },
            |r| {
                if r.step == 2 {
                    cancel.store(true, Ordering::Relaxed);
                }
                Ok(())
            },
        )
        .unwrap_err();
        assert!(matches!(err, SampleError::Cancelled { step: 3 }));
        assert_eq!(model_calls, 3);
    }
}
