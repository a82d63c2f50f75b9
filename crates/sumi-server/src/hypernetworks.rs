//! `GET /sdapi/v1/hypernetworks`: the hypernetwork folders (`--hypernetwork-dir`) as A1111
//! v1.10.1's `get_hypernetworks` lists `shared.hypernetworks`: `name` (the file stem) and
//! `path`, in the order the folders' `**/*.pt` files sort.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use sumi_pipeline::networks::list_hypernetworks;

use crate::error::ApiError;
use crate::AppState;

/// `GET /sdapi/v1/hypernetworks`: every hypernetwork file, listed now.
pub async fn hypernetworks(State(s): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let dirs = s.config.load.hypernetwork_dirs.clone();
    let list = tokio::task::spawn_blocking(move || list_hypernetworks(&dirs))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(Value::Array(
        list.iter()
            .map(|h| json!({ "name": h.name, "path": h.path.to_string_lossy() }))
            .collect(),
    )))
}
