//! Our schedule against diffusers' `FlowMatchEulerDiscreteScheduler` as FluxPipeline sets it up
//! (fixture `tests/fixtures/flux_sigmas.json`).

use storyloom::model::sampler::{ScheduleShift, schedule, shift_mu};

#[test]
fn sigmas_match_diffusers() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/flux_sigmas.json"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut checked = 0;
    for (family, shift) in [
        ("dev", ScheduleShift::Resolution),
        ("schnell", ScheduleShift::None),
    ] {
        for case in json[family].as_array().unwrap() {
            let n = case["image_seq_len"].as_u64().unwrap() as usize;
            let steps = case["steps"].as_u64().unwrap() as usize;
            let theirs: Vec<f64> = case["sigmas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let ours = schedule(steps, n, shift);
            assert_eq!(ours.len(), theirs.len(), "{family} {n} {steps}");
            for (k, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                // The reference values are float32.
                assert!(
                    (a - b).abs() < 1e-6,
                    "{family} ({n}, {steps}) step {k}: {a} vs {b}"
                );
            }
            if shift == ScheduleShift::Resolution {
                let mu = case["mu"].as_f64().unwrap();
                assert!((shift_mu(n) - mu).abs() < 1e-6);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 7);
}
