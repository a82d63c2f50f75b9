//! A1111's selectable scripts (`script_name`, `script_args`): img2img's "SD upscale" is the one
//! Sumi runs. A1111 finds a script by its title, case-insensitively (`script_name_to_index`),
//! and answers 422 `Script '…' not found` for any other name — and for any name on txt2img,
//! whose scripts (X/Y/Z plot, prompt matrix, prompts from file) Sumi does not have.
//!
//! SD upscale's `script_args` are `[info, overlap, upscaler, scale]` (`scripts/sd_upscale.py`
//! `run(p, _, overlap, upscaler_index, scale_factor)`): the upscaler an index into the
//! upscaler list or a name in any case. Missing trailing arguments take the UI's defaults
//! (64, the first upscaler `None`, 2: A1111 itself fails on a short list); more than four, or a
//! value of the wrong type, is a 422 naming the argument.

use serde_json::Value;
use sumi_pipeline::sd_upscale::{SdUpscale, SdUpscaler};

use crate::error::ApiError;
use crate::models::{Endpoint, GenerationFields};

/// The title A1111 gives the SD upscale script (`Script.title()`).
pub const SD_UPSCALE: &str = "SD upscale";

/// Largest overlap accepted, in pixels (the tile is at most 4096 a side).
const MAX_OVERLAP: i64 = 4096;

/// The script a request selects: `None` without a `script_name`, the SD upscale settings for
/// img2img's "SD upscale", else a 422.
pub fn selectable_script(
    endpoint: Endpoint,
    f: &GenerationFields,
) -> Result<Option<SdUpscale>, ApiError> {
    let Some(name) = f.script_name.as_deref().filter(|s| !s.is_empty()) else {
        if f.script_args.as_ref().is_some_and(|a| !a.is_empty()) {
            return Err(ApiError::invalid(
                "script_args: given without a script_name (they would not be used)",
            ));
        }
        return Ok(None);
    };
    if endpoint != Endpoint::Img2Img || !name.eq_ignore_ascii_case(SD_UPSCALE) {
        return Err(ApiError::invalid(format!("Script '{name}' not found")));
    }
    sd_upscale_args(f.script_args.as_deref().unwrap_or_default()).map(Some)
}

/// SD upscale's `[info, overlap, upscaler, scale]`.
fn sd_upscale_args(args: &[Value]) -> Result<SdUpscale, ApiError> {
    if args.len() > 4 {
        return Err(ApiError::invalid(format!(
            "script_args: SD upscale takes 4 arguments ([\"\", overlap, upscaler, scale]), not {}",
            args.len()
        )));
    }
    let bad = |i: usize, what: &str| {
        ApiError::invalid(format!(
            "script_args[{i}]: {} is not {what}",
            args.get(i).map_or_else(String::new, Value::to_string)
        ))
    };
    let mut s = SdUpscale::default();
    if let Some(v) = args.get(1).filter(|v| !v.is_null()) {
        s.overlap = v
            .as_f64()
            .filter(|x| x.fract() == 0.0 && (0.0..=MAX_OVERLAP as f64).contains(x))
            .map(|x| x as u32)
            .ok_or_else(|| bad(1, &format!("an overlap in pixels (0 to {MAX_OVERLAP})")))?;
    }
    if let Some(v) = args.get(2).filter(|v| !v.is_null()) {
        s.upscaler = match v {
            Value::String(n) => SdUpscaler::Name(n.clone()),
            Value::Number(n) => SdUpscaler::Index(
                n.as_u64()
                    .and_then(|i| usize::try_from(i).ok())
                    .ok_or_else(|| bad(2, "an upscaler's name or index"))?,
            ),
            _ => return Err(bad(2, "an upscaler's name or index")),
        };
    }
    if let Some(v) = args.get(3).filter(|v| !v.is_null()) {
        s.scale = v.as_f64().ok_or_else(|| bad(3, "a scale factor"))?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> GenerationFields {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn sd_upscale_is_found_in_any_case_with_its_arguments() {
        let f =
            fields(json!({"script_name": "sd upscale", "script_args": ["", 8, "Lanczos", 2.0]}));
        let s = selectable_script(Endpoint::Img2Img, &f).unwrap().unwrap();
        assert_eq!(
            s,
            SdUpscale {
                overlap: 8,
                upscaler: SdUpscaler::Name("Lanczos".into()),
                scale: 2.0
            }
        );
        let f = fields(json!({"script_name": "SD Upscale", "script_args": [null, 32.0, 1]}));
        let s = selectable_script(Endpoint::Img2Img, &f).unwrap().unwrap();
        assert_eq!(
            (s.overlap, s.upscaler, s.scale),
            (32, SdUpscaler::Index(1), 2.0)
        );
        let f = fields(json!({"script_name": "SD upscale"}));
        assert_eq!(
            selectable_script(Endpoint::Img2Img, &f).unwrap(),
            Some(SdUpscale::default())
        );
        assert_eq!(
            selectable_script(Endpoint::Img2Img, &fields(json!({}))).unwrap(),
            None
        );
    }

    #[test]
    fn other_scripts_and_bad_arguments_are_422() {
        let err = |endpoint, v| {
            let e = selectable_script(endpoint, &fields(v)).unwrap_err();
            (e.status.as_u16(), e.to_string())
        };
        let (code, msg) = err(Endpoint::Img2Img, json!({"script_name": "x/y/z plot"}));
        assert_eq!(code, 422);
        assert!(msg.contains("Script 'x/y/z plot' not found"), "{msg}");
        let (code, _) = err(Endpoint::Txt2Img, json!({"script_name": "sd upscale"}));
        assert_eq!(code, 422);
        for (args, what) in [
            (json!(["", 8.5]), "script_args[1]"),
            (json!(["", -8]), "script_args[1]"),
            (json!(["", 8, true]), "script_args[2]"),
            (json!(["", 8, -1]), "script_args[2]"),
            (json!(["", 8, "None", "big"]), "script_args[3]"),
            (json!(["", 8, "None", 2, 5]), "4 arguments"),
        ] {
            let (code, msg) = err(
                Endpoint::Img2Img,
                json!({"script_name": "sd upscale", "script_args": args}),
            );
            assert_eq!(code, 422, "{args}");
            assert!(msg.contains(what), "{args}: {msg}");
        }
        let (code, msg) = err(Endpoint::Img2Img, json!({"script_args": [1]}));
        assert_eq!(code, 422);
        assert!(msg.contains("without a script_name"), "{msg}");
    }
}
