//! A1111's img2img strength slicing and "do exact steps".

use sumi_sampling::img2img::{img2img_sigmas, img2img_steps, slice_for_t_enc};

#[test]
fn strength_slices_the_schedule_like_a1111() {
    // t_enc = int(min(strength, 0.999) * steps); run sigmas[steps - t_enc - 1:]
    assert_eq!(img2img_steps(20, 0.75, false), (20, 15));
    assert_eq!(img2img_steps(20, 1.0, false), (20, 19));
    assert_eq!(img2img_steps(20, 0.0, false), (20, 0));
    assert_eq!(img2img_steps(8, 0.6, false), (8, 4));
    let sigmas: Vec<f64> = (0..=20).rev().map(|i| i as f64).collect(); // 20 steps
    let s = img2img_sigmas(&sigmas, 20, 0.75);
    assert_eq!(s.len(), 17); // t_enc + 2 values = t_enc + 1 steps
    assert_eq!(s[0], 16.0);
    assert_eq!(*s.last().unwrap(), 0.0);
    // strength 1.0 (clamped to 0.999): t_enc = 19, the whole schedule
    assert_eq!(img2img_sigmas(&sigmas, 20, 1.0), &sigmas[..]);
    // strength 0: one step from the smallest positive sigma
    assert_eq!(img2img_sigmas(&sigmas, 20, 0.0), &[1.0, 0.0]);
}

#[test]
fn exact_steps_variant() {
    // schedule for int(steps / min(strength, 0.999)), t_enc = steps - 1
    assert_eq!(img2img_steps(20, 0.5, true), (40, 19));
    assert_eq!(img2img_steps(20, 0.3, true), (66, 19));
    assert_eq!(img2img_steps(20, 1.0, true), (20, 19));
    let (total, t_enc) = img2img_steps(10, 0.4, true);
    assert_eq!((total, t_enc), (25, 9));
    let sigmas: Vec<f64> = (0..=total).rev().map(|i| i as f64).collect();
    let s = slice_for_t_enc(&sigmas, total, t_enc);
    assert_eq!(s.len() - 1, 10); // exactly the requested steps run
}
