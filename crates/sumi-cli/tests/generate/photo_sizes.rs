//! img2img's working size for photos (`sumi_pipeline::photo_size`): none given, the init image's
//! aspect at the model's native area (printed); one side given, the other follows the aspect;
//! a size out of range is refused naming what the user gave.

use std::path::Path;

use super::{fails, ok, sumi};

fn photo(dir: &Path, name: &str, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    })
    .save(dir.join(name))
    .unwrap();
}

#[test]
fn img2img_picks_the_photo_aspect_at_the_native_area() {
    let d = tempfile::tempdir().unwrap();
    let m = sumi_testkit::tiny_model("sd1", d.path());
    photo(d.path(), "wide.png", 200, 100);
    photo(d.path(), "big.png", 400, 300);
    let i2i = |init: &str, extra: &[&str]| {
        let mut c = sumi(d.path());
        c.args(["img2img", "--model"]).arg(&m);
        c.args([
            "--init-image",
            init,
            "--prompt",
            "x",
            "--steps",
            "1",
            "--seed",
            "3",
        ]);
        c.args(extra).output().unwrap()
    };
    // none given: 200x100 (2:1) at 512² → 724.1x362.0 → 728x360 (a latent of 91x45)
    let o = i2i("wide.png", &["--output", "auto.png"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    ok(o);
    assert!(
        err.contains("size 728x360: the init image's 200x100 aspect at the 512x512 area of sd1"),
        "{err}"
    );
    assert_eq!(
        image::image_dimensions(d.path().join("auto.png")).unwrap(),
        (728, 360)
    );
    let info = ok(sumi(d.path())
        .args(["png-info", "auto.png"])
        .output()
        .unwrap());
    assert!(info.contains("Size: 728x360"), "{info}");
    // --width alone: the height follows the aspect
    let o = i2i("wide.png", &["--width", "160", "--output", "w.png"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    ok(o);
    assert!(
        err.contains("height 80: follows the init image's 200x100 aspect"),
        "{err}"
    );
    assert_eq!(
        image::image_dimensions(d.path().join("w.png")).unwrap(),
        (160, 80)
    );
    // --height alone
    ok(i2i(
        "wide.png",
        &["--height", "64", "--output", "h.png", "--quiet"],
    ));
    assert_eq!(
        image::image_dimensions(d.path().join("h.png")).unwrap(),
        (128, 64)
    );
    // out of range: the message names what the user gave
    fails(
        i2i("wide.png", &["--width", "5000"]),
        "'--width <WIDTH>': width: 5000 is outside 64..=4096",
    );
    fails(
        i2i("wide.png", &["--width", "96"]),
        "--width 96 with the init image's 200x100 aspect gives height 48, outside 64..=4096 \
         pixels; give --height too",
    );
    fails(
        i2i("big.png", &["--scale", "16"]),
        "--scale 16: the init image's 400x300 scaled is 6400x4800, outside 64..=4096",
    );
}
