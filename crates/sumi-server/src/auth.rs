//! `--api-auth USER:PASS`: HTTP basic authentication on every route but `/health` and `/ready`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::error::ApiError;
use crate::AppState;

/// Byte-wise comparison that does not stop at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Whether an `Authorization` header carries these credentials.
pub fn authorized(header_value: Option<&HeaderValue>, user: &str, pass: &str) -> bool {
    let Some(v) = header_value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    // RFC 7235 §2.1: `credentials = auth-scheme [ 1*SP token68 ]`, the scheme case-insensitive
    let Some((scheme, b64)) = v.trim_start().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
        return false;
    };
    let expected = format!("{user}:{pass}");
    same(&raw, expected.as_bytes())
}

/// The 401 answer when `auth` is set and `req` lacks its credentials (`/health` and `/ready`
/// are open).
pub fn refusal(auth: Option<&(String, String)>, req: &Request) -> Option<Response> {
    let (user, pass) = auth?;
    let open = matches!(req.uri().path(), "/health" | "/ready");
    if open || authorized(req.headers().get(header::AUTHORIZATION), user, pass) {
        return None;
    }
    let mut r = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "Incorrect username or password",
    )
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"sumi\""),
    );
    Some(r)
}

/// The middleware.
pub async fn require(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match refusal(s.config.auth.as_ref(), &req) {
        Some(r) => r,
        None => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_basic_scheme_is_case_insensitive_and_the_credentials_exact() {
        // "alice:pw" in base64
        let ok = |v: &str| authorized(Some(&HeaderValue::from_str(v).unwrap()), "alice", "pw");
        for v in [
            "Basic YWxpY2U6cHc=",
            "basic YWxpY2U6cHc=",
            "BASIC YWxpY2U6cHc=",
            "bAsIc YWxpY2U6cHc=",
            "Basic   YWxpY2U6cHc=",
        ] {
            assert!(ok(v), "{v}");
        }
        for v in [
            "Basic",
            "Basic ",
            "BasicYWxpY2U6cHc=",
            "Bearer YWxpY2U6cHc=",
            "Basics YWxpY2U6cHc=",
            "Basic YWxpY2U6cHd4",
            "Basic YWxpY2U6cA==",
        ] {
            assert!(!ok(v), "{v}");
        }
        assert!(!authorized(None, "alice", "pw"));
    }
}
