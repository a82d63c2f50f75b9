//! The server's request path up to the queue, through its public API as `routes.rs` chains
//! it: body → JSON object (`body::json_object`) → infotext fill → `GenerationFields` → the
//! settings with `override_settings` (`GenOptions::read`) → the checked pipeline request
//! (`convert::prepare`, which decodes img2img images) → the echoed `parameters`; for both
//! endpoints. The `/options` check (`options::check_new`) gets the same object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sumi_server::models::{echo, Endpoint, GenerationFields};
use sumi_server::options::{self, GenOptions};
use sumi_server::{body, convert, infotext_fill};

fuzz_target!(|data: &[u8]| {
    let Ok(sent) = body::json_object(data) else {
        return;
    };
    let _ = options::check_new(sent.clone());
    let defaults = options::defaults(false);
    for endpoint in [Endpoint::Txt2Img, Endpoint::Img2Img] {
        let mut sent = sent.clone();
        infotext_fill::apply(endpoint, &mut sent);
        let Ok(f) =
            serde_json::from_value::<GenerationFields>(serde_json::Value::Object(sent.clone()))
        else {
            continue;
        };
        let Ok(opts) = GenOptions::read(&defaults, f.override_settings.as_ref()) else {
            continue;
        };
        if let Ok(p) = convert::prepare(endpoint, &f, &opts) {
            p.request.validate().expect("a prepared request is valid");
        }
        let _ = echo(endpoint, &sent);
    }
});
