//! `GET /sdapi/v1/loras` and `POST /sdapi/v1/refresh-loras`: the LoRA folders (`--lora-dir`)
//! as A1111's Lora extension lists them (`create_lora_json`: name, alias, path, metadata).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};
use sumi_pipeline::networks::{list_loras, NetworkOnDisk};

use crate::error::ApiError;
use crate::AppState;

/// A1111's `read_metadata_from_safetensors`: a value that starts with `{` and parses as JSON
/// is given as that JSON, every other as its string.
fn metadata(n: &NetworkOnDisk) -> Map<String, Value> {
    n.metadata
        .iter()
        .map(|(k, v)| {
            let parsed = v
                .starts_with('{')
                .then(|| serde_json::from_str::<Value>(v).ok())
                .flatten();
            (
                k.clone(),
                parsed.unwrap_or_else(|| Value::String(v.clone())),
            )
        })
        .collect()
}

/// `GET /sdapi/v1/loras`: every network file in the LoRA folders.
pub async fn loras(State(s): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let dirs = s.config.load.lora_dirs.clone();
    let list = tokio::task::spawn_blocking(move || list_loras(&dirs))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(Value::Array(
        list.iter()
            .map(|n| {
                json!({
                    "name": n.name,
                    "alias": n.alias,
                    "path": n.path.to_string_lossy(),
                    "metadata": metadata(n),
                })
            })
            .collect(),
    )))
}

/// `POST /sdapi/v1/refresh-loras`: A1111 answers `null` (the folders are read on each
/// listing and whenever a prompt names a LoRA not found).
pub async fn refresh_loras() -> Json<Value> {
    Json(Value::Null)
}
