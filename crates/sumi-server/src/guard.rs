//! Cross-site request guard: a web page the user visits must not drive the API.
//!
//! - **Host** (DNS rebinding): when the server listens on a loopback address, a request whose
//!   `Host` is not a loopback name or address (`localhost`, `127.x.y.z`, `[::1]`), the `--host`
//!   itself, or the host of an allowed origin is refused 421. Listening on another address
//!   (`--host 0.0.0.0`, a LAN address), any `Host` is served: the server is then reachable by
//!   whatever names point at it, and the origin check below still applies.
//! - **Origin**: a state-changing request (any method but GET, HEAD, OPTIONS) that carries an
//!   `Origin` is refused 403 unless the origin is the server's own (its host and port are the
//!   request's `Host`) or one of `--cors-allow-origins`. Clients that are not browsers (Python
//!   `requests`, curl) send no `Origin` and are not concerned.
//! - **CORS** for the allowed origins, as A1111's `--cors-allow-origins` (Starlette's
//!   `CORSMiddleware` with every method and header and credentials): their responses carry
//!   `Access-Control-Allow-Origin`, and their preflight `OPTIONS` is answered 200.
//!
//! JSON bodies must also be sent as `application/json` (415 otherwise; see [`crate::body`]), so
//! that a cross-site `<form>` or `text/plain` fetch never reaches a handler.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::AppState;

/// The methods a preflight is told are allowed (Starlette's `ALL_METHODS`, as A1111 allows "*").
const ALLOW_METHODS: &str = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT";
/// How long a browser may cache a preflight answer, in seconds (Starlette's default).
const PREFLIGHT_MAX_AGE: &str = "600";

/// Parses `--cors-allow-origins`: a comma-separated list of origins (`scheme://host[:port]`, or
/// `*` for any), normalised to lower case without a trailing `/`. Empty items are skipped.
pub fn parse_origins(list: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let o = item.trim_end_matches('/').to_ascii_lowercase();
        let ok = o == "*"
            || o.strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
        if !ok {
            return Err(format!(
                "{item}: expected an origin such as http://localhost:3000, or *"
            ));
        }
        out.push(o);
    }
    Ok(out)
}

/// The host part of a `Host` value or an origin's authority (`name`, `1.2.3.4`, `[::1]`),
/// without the port, in lower case.
fn host_name(authority: &str) -> String {
    let a = authority.trim();
    let name = if a.starts_with('[') {
        a.split_inclusive(']').next().unwrap_or(a)
    } else if a.matches(':').count() == 1 {
        a.split(':').next().unwrap_or(a)
    } else {
        a
    };
    name.to_ascii_lowercase()
}

/// Whether `name` (no port) is a loopback name or address.
fn is_loopback_name(name: &str) -> bool {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name.ends_with(".localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The authority of an origin (`http://host:port` → `host:port`), if it has the form of one.
fn origin_authority(origin: &str) -> Option<&str> {
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
}

/// The `--host` and `--cors-allow-origins` rules of one server.
struct Rules<'a> {
    host: &'a str,
    allowed: &'a [String],
}

impl Rules<'_> {
    /// Whether `origin` (normalised) is one of the allowed origins.
    fn allows_origin(&self, origin: &str) -> bool {
        self.allowed.iter().any(|a| a == "*" || a == origin)
    }

    /// Whether a request naming `host` (its `Host` header) is served.
    fn allows_host(&self, host: &str) -> bool {
        let listen = host_name(self.host);
        if !is_loopback_name(&listen) {
            return true;
        }
        let name = host_name(host);
        is_loopback_name(&name)
            || name == listen
            || self
                .allowed
                .iter()
                .filter_map(|o| origin_authority(o))
                .any(|a| host_name(a) == name)
    }
}

/// The request's `Host` (or its URI's authority, as HTTP/2 sends it).
fn request_host(req: &Request) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

/// Whether `method` may change state (everything but GET, HEAD, OPTIONS).
fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Adds the CORS answer headers for an allowed `origin`.
fn cors_headers(h: &mut HeaderMap, origin: &HeaderValue) {
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    h.append(header::VARY, HeaderValue::from_static("Origin"));
}

/// The answer to a CORS preflight from an allowed origin.
fn preflight(origin: &HeaderValue, req_headers: &HeaderMap) -> Response {
    let mut r = (StatusCode::OK, "OK").into_response();
    let h = r.headers_mut();
    cors_headers(h, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    if let Some(asked) = req_headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
    );
    r
}

/// The middleware: Host and Origin checks, CORS for the allowed origins.
pub async fn check(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    check_with(&s.config.host, &s.config.cors_allow_origins, req, next).await
}

/// [`check`] for a server listening on `host` with the `allowed` origins (a broker front).
pub async fn check_with(host: &str, allowed: &[String], req: Request, next: Next) -> Response {
    let listen = host;
    let rules = Rules { host, allowed };
    let host = request_host(&req);
    if let Some(h) = &host {
        if !rules.allows_host(h) {
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "MisdirectedRequest",
                format!(
                    "Host {h} is not served: the server listens on {} (loopback) and answers \
                     loopback names only",
                    listen
                ),
            )
            .into_response();
        }
    }
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.run(req).await;
    };
    let text = origin
        .to_str()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_ascii_lowercase();
    let allowed = rules.allows_origin(&text);
    let same = host
        .as_deref()
        .is_some_and(|h| origin_authority(&text).is_some_and(|a| a.eq_ignore_ascii_case(h.trim())));
    if req.method() == Method::OPTIONS
        && allowed
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(&origin, req.headers());
    }
    if is_write(req.method()) && !allowed && !same {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "cross-origin request from {text} refused (start the server with \
                 --cors-allow-origins {text} to allow it)"
            ),
        )
        .into_response();
    }
    let mut r = next.run(req).await;
    if allowed {
        cors_headers(r.headers_mut(), &origin);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_and_normalise() {
        assert_eq!(
            parse_origins("http://Localhost:3000/, https://a.example ,,*").unwrap(),
            ["http://localhost:3000", "https://a.example", "*"]
        );
        for bad in ["localhost:3000", "ftp://x", "http://", "http://a/b"] {
            assert!(parse_origins(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_on_loopback_and_elsewhere() {
        let allowed = vec!["https://sd.example".to_string()];
        let lo = Rules {
            host: "127.0.0.1",
            allowed: &allowed,
        };
        for ok in [
            "127.0.0.1:7860",
            "localhost",
            "LOCALHOST:7860",
            "[::1]:7860",
            "127.1.2.3",
            "app.localhost:1",
            "sd.example",
        ] {
            assert!(lo.allows_host(ok), "{ok}");
        }
        for no in [
            "evil.example:7860",
            "192.168.1.5:7860",
            "[::2]",
            "sd.example.evil",
        ] {
            assert!(!lo.allows_host(no), "{no}");
        }
        let any = Rules {
            host: "0.0.0.0",
            allowed: &[],
        };
        assert!(any.allows_host("evil.example"));
        let named = Rules {
            host: "box.lan",
            allowed: &[],
        };
        assert!(named.allows_host("box.lan:7860"));
    }
}
