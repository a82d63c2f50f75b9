//! Crafted input gets a clear error (issue 14): prompts past the length limit (finding 5),
//! non-finite latents or pixels (finding 9), truncated PNG and JPEG files (finding 10).

use sumi_pipeline::request::MAX_PROMPT_BYTES;
use sumi_pipeline::{PipelineError, Request};

fn request_error(r: &Request) -> (&'static str, String) {
    match r.validate() {
        Err(PipelineError::Request { field, detail }) => (field, detail),
        other => panic!("expected a request error, got {other:?}"),
    }
}

#[test]
fn prompts_past_64_kib_are_refused_naming_the_limit() {
    assert_eq!(MAX_PROMPT_BYTES, 65_536);
    let at_limit = "a".repeat(MAX_PROMPT_BYTES);
    let over = "a".repeat(MAX_PROMPT_BYTES + 1);
    let ok = Request {
        prompt: at_limit.clone(),
        negative_prompt: at_limit,
        ..Request::default()
    };
    ok.validate().unwrap();
    let (field, detail) = request_error(&Request {
        prompt: over.clone(),
        ..Request::default()
    });
    assert_eq!(field, "prompt");
    assert_eq!(
        detail,
        "65537 bytes is longer than the limit of 65536 bytes (64 KiB)"
    );
    // bytes, not characters: 21,846 three-byte characters are 65,538 bytes
    let (field, _) = request_error(&Request {
        negative_prompt: "猫".repeat(21_846),
        ..Request::default()
    });
    assert_eq!(field, "negative-prompt");
}
