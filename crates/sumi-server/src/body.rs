//! Reading request bodies under the size limit. A body over the limit is read on (and thrown
//! away) up to a bound, so that the client, still sending, gets its 413 instead of a reset.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use http_body_util::BodyExt;

use crate::error::ApiError;

/// How much of an oversized body is drained before answering, as a multiple of the limit.
const DRAIN_FACTOR: usize = 4;
/// How long an oversized body is drained at most.
const DRAIN_TIME: Duration = Duration::from_secs(20);

/// The whole body, or 413 when it is over `limit` bytes, 400 when it cannot be read.
pub async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
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
