//! The working size img2img picks for a photo when the user gives none or only one side.
//!
//! A1111's UI starts at 512×512 whatever the photo; the API takes any size. A phone photo
//! (4032×3024) at its own size runs for ages and a 512×512 square stretches it, so Sumi keeps the
//! photo's aspect at the model's native area ([`native_side`]² pixels: 512² for SD1 and SD2-base,
//! 768² for SD2-v) with each side a multiple of 8 ([`size_at_area`]); with one side given, the
//! other follows the photo's aspect ([`follow_aspect`]).

/// The side of the square a model was trained at: 768 for SD2-v (`sd2-v`), 512 for the others
/// (`sd1`, `sd1-inpaint`, `sd2`, `sd2-inpaint`).
pub fn native_side(architecture: &str) -> u32 {
    match architecture {
        "sd2-v" => 768,
        _ => 512,
    }
}

/// `x` rounded to the nearest multiple of 8 (halves up), at least 8.
fn round8(x: f64) -> u32 {
    let r = (x / 8.0).round() * 8.0;
    if r.is_finite() && r >= 8.0 {
        r.min(f64::from(u32::MAX - 7)) as u32
    } else {
        8
    }
}

/// `image`'s (width, height) aspect at about `side × side` pixels: width `side·√(w/h)` and
/// height `side·√(h/w)`, each rounded to a multiple of 8 (4032×3024 at 512 → 592×440).
pub fn size_at_area(image: (u32, u32), side: u32) -> (u32, u32) {
    let (w, h) = (f64::from(image.0.max(1)), f64::from(image.1.max(1)));
    let r = (w / h).sqrt();
    (round8(f64::from(side) * r), round8(f64::from(side) / r))
}

/// The other side for a `given` side, keeping the aspect `other : this` of the image (both
/// sides of the image, the given one's first), rounded to a multiple of 8: `--width 768` on a
/// 4032×3024 photo gives height `follow_aspect(768, 4032, 3024)` = 576.
pub fn follow_aspect(given: u32, this: u32, other: u32) -> u32 {
    round8(f64::from(given) * f64::from(other) / f64::from(this.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size_at_area((4032, 3024), 512), (592, 440));
        assert_eq!(size_at_area((3024, 4032), 512), (440, 592));
        assert_eq!(size_at_area((4032, 3024), 768), (888, 664));
        assert_eq!(size_at_area((1920, 1080), 512), (680, 384));
        assert_eq!(size_at_area((100, 100), 512), (512, 512));
        assert_eq!(size_at_area((1, 10_000), 512), (8, 51_200));
        assert_eq!(follow_aspect(768, 4032, 3024), 576);
        assert_eq!(follow_aspect(512, 3024, 4032), 680); // 682.67 → 680
        assert_eq!(follow_aspect(1, 1000, 1), 8);
        assert_eq!((native_side("sd1"), native_side("sd2-v")), (512, 768));
    }
}
