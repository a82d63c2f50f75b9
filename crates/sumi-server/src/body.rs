//! Reading request bodies: JSON content only (415 otherwise: a cross-site `<form>` or
//! `text/plain` fetch never reaches a handler), under the size limit and within a time limit
//! (408 when a slow client has not sent it all in time). A body over the limit is read on (and
//! thrown away) up to a bound, so that the client, still sending, gets its 413 instead of a
//! reset.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;

use crate::error::ApiError;

/// How much of an oversized body is drained before answering, as a multiple of the limit.
const DRAIN_FACTOR: usize = 4;
/// How long an oversized body is drained at most.
const DRAIN_TIME: Duration = Duration::from_secs(20);

/// Whether a `Content-Type` value is JSON: `application/json` or `application/*+json`, with any
/// parameters (as FastAPI, hence A1111, accepts).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence
        .strip_prefix("application/")
        .is_some_and(|sub| sub == "json" || sub.ends_with("+json"))
}

/// 415 unless the request says its body is JSON.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let sent = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if sent.as_deref().is_some_and(is_json) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        format!(
            "the request body must be sent as Content-Type: application/json (got {})",
            sent.as_deref().unwrap_or("none")
        ),
    ))
}

/// The whole JSON body: 415 when it is not sent as JSON ([`require_json`]), 413 when it is
/// over `limit` bytes, 408 when it has not all arrived within `timeout`, 400 when it cannot be
/// read.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    require_json(headers)?;
    tokio::time::timeout(timeout, read_limited(headers, body, limit))
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeout",
                format!(
                    "the request body did not arrive within {} s",
                    timeout.as_secs_f64()
                ),
            ))
        })
}

/// The body, under `limit` bytes (413 over it, the excess drained up to a bound).
async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > (limit * DRAIN_FACTOR) as u64) {
        return Err(ApiError::too_large(limit));
    }
    let mut body = body;
    let mut buf: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    let start = Instant::now();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if seen > limit {
                ApiError::too_large(limit)
            } else {
                ApiError::bad_request(format!("cannot read the request body: {e}"))
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen > limit {
            buf = Vec::new();
            if seen > limit * DRAIN_FACTOR || start.elapsed() > DRAIN_TIME {
                break;
            }
        } else {
            buf.extend_from_slice(&data);
        }
    }
    if seen > limit {
        return Err(ApiError::too_large(limit));
    }
    Ok(Bytes::from(buf))
}

/// The body as a JSON object (422 for malformed JSON or another JSON type).
pub fn json_object(bytes: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::invalid("the request body must be a JSON object")),
        Err(e) => Err(ApiError::invalid(format!("malformed JSON: {e}"))),
    }
}
