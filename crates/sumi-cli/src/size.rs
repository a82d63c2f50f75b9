//! img2img's working size ([`sumi_pipeline::photo_size`]): both sides given (on the command line
//! or in `--infotext`/`--from-png`) are used as given; one side given, the other follows the
//! init image's aspect; none, the init image's aspect at the model's native area, decided once
//! the model is loaded ([`native`]); `--scale F` is A1111's "Resize by" (`int(side · F)`). A size
//! out of range is refused naming what the user gave.

use anyhow::{bail, Result};
use sumi_pipeline::photo_size::{follow_aspect, native_side, size_at_area};
use sumi_pipeline::request::MAX_SIDE;
use sumi_pipeline::Request;

/// What the user said about the size.
pub struct Given {
    /// `--width`.
    pub width: Option<u32>,
    /// `--height`.
    pub height: Option<u32>,
    /// Whether the infotext has each side (`Size-1`, `Size-2`).
    pub infotext: (bool, bool),
    /// `--scale`.
    pub scale: Option<f64>,
}

fn in_range(v: u32) -> bool {
    (64..=MAX_SIDE).contains(&v)
}

/// Sets `req`'s size for an init image of `image` (width, height) from what was `given`.
/// Returns `Some(image)` when no size was given: [`native`] decides it after loading.
pub fn img2img(
    req: &mut Request,
    given: &Given,
    image: (u32, u32),
    quiet: bool,
) -> Result<Option<(u32, u32)>> {
    let (iw, ih) = image;
    if let Some(f) = given.scale {
        if !(f.is_finite() && f > 0.0 && f <= 16.0) {
            bail!("--scale: {f} is outside (0, 16]");
        }
        // A1111's img2img: width = int(image.width * scale_by)
        req.width = (f64::from(iw) * f) as u32;
        req.height = (f64::from(ih) * f) as u32;
        if !(in_range(req.width) && in_range(req.height)) {
            bail!(
                "--scale {f}: the init image's {iw}x{ih} scaled is {}x{}, outside \
                 64..={MAX_SIDE} pixels per side",
                req.width,
                req.height
            );
        }
        return Ok(None);
    }
    for (flag, v) in [("--width", given.width), ("--height", given.height)] {
        if let Some(v) = v.filter(|&v| !in_range(v)) {
            bail!("{flag} {v}: outside 64..={MAX_SIDE} pixels");
        }
    }
    let w_given = given.width.is_some() || given.infotext.0;
    let h_given = given.height.is_some() || given.infotext.1;
    let follow = |flag: &str, v: u32, other: &str, got: u32| -> Result<()> {
        if !in_range(got) {
            bail!(
                "{flag} {v} with the init image's {iw}x{ih} aspect gives {other} {got}, outside \
                 64..={MAX_SIDE} pixels; give --{other} too"
            );
        }
        if !quiet {
            eprintln!("{other} {got}: follows the init image's {iw}x{ih} aspect");
        }
        Ok(())
    };
    match (w_given, h_given) {
        (true, false) => {
            req.height = follow_aspect(req.width, iw, ih);
            follow("--width", req.width, "height", req.height)?;
        }
        (false, true) => {
            req.width = follow_aspect(req.height, ih, iw);
            follow("--height", req.height, "width", req.width)?;
        }
        (false, false) => {
            // a placeholder that validates; the model decides
            (req.width, req.height) = (512, 512);
            return Ok(Some(image));
        }
        (true, true) => {
            if !(in_range(req.width) && in_range(req.height)) {
                bail!(
                    "the infotext's Size {}x{} is outside 64..={MAX_SIDE} pixels per side; \
                     give --width and --height",
                    req.width,
                    req.height
                );
            }
        }
    }
    Ok(None)
}

/// With no size given: the init image's aspect at `architecture`'s native area; says which.
pub fn native(req: &mut Request, image: (u32, u32), architecture: &str, quiet: bool) -> Result<()> {
    let side = native_side(architecture);
    (req.width, req.height) = size_at_area(image, side);
    if !(in_range(req.width) && in_range(req.height)) {
        bail!(
            "the init image's {}x{} aspect at {side}x{side} pixels gives {}x{}, outside \
             64..={MAX_SIDE} per side; give --width and --height",
            image.0,
            image.1,
            req.width,
            req.height
        );
    }
    if !quiet {
        eprintln!(
            "size {}x{}: the init image's {}x{} aspect at the {side}x{side} area of {architecture} \
             (--width/--height to choose)",
            req.width, req.height, image.0, image.1
        );
    }
    Ok(())
}
