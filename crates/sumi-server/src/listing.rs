//! The GET endpoints that list what the server has: samplers, schedulers, checkpoints, VAEs,
//! embeddings, upscalers and the lists Sumi keeps empty (LoRAs, scripts, styles), memory and
//! the command-line flags (credentials never shown).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};
use sumi_pipeline::{Scheduler, ALL_SAMPLERS, ALL_SCHEDULERS};

use crate::error::ApiError;
use crate::AppState;

/// `GET /sdapi/v1/samplers`: A1111's 20 samplers (Sumi runs them all), with its aliases and options.
pub async fn samplers() -> Json<Value> {
    let list: Vec<Value> = ALL_SAMPLERS
        .iter()
        .map(|s| {
            let o = s.options();
            let mut opts = Map::new();
            if let Some(sch) = o.scheduler {
                opts.insert("scheduler".into(), json!(sch.name()));
            }
            if o.discard_next_to_last_sigma {
                opts.insert("discard_next_to_last_sigma".into(), json!(true));
            }
            if o.second_order {
                opts.insert("second_order".into(), json!(true));
            }
            if o.brownian_noise {
                opts.insert("brownian_noise".into(), json!(true));
            }
            if o.solver_heun {
                opts.insert("solver_type".into(), json!("heun"));
            }
            if o.uses_ensd {
                opts.insert("uses_ensd".into(), json!(true));
            }
            json!({ "name": s.label(), "aliases": s.aliases(), "options": opts })
        })
        .collect();
    Json(Value::Array(list))
}

/// `GET /sdapi/v1/schedulers`.
pub async fn schedulers() -> Json<Value> {
    let list: Vec<Value> = ALL_SCHEDULERS
        .iter()
        .map(|s| {
            let aliases = s.aliases();
            json!({
                "name": s.name(),
                "label": s.label(),
                "aliases": if aliases.is_empty() { Value::Null } else { json!(aliases) },
                "default_rho": s.default_rho(),
                "need_inner_model": matches!(
                    s,
                    Scheduler::Uniform | Scheduler::SgmUniform | Scheduler::Simple | Scheduler::Normal | Scheduler::Ddim
                ),
            })
        })
        .collect();
    Json(Value::Array(list))
}

/// `GET /sdapi/v1/sd-models` (hashes computed on first listing, then cached), each with Sumi's
/// `latent_space` (`sd`, `sdxl`, or null where the header does not say: the web page's default
/// size follows it).
pub async fn sd_models(State(s): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let list = tokio::task::spawn_blocking(move || {
        let current = s.current_model();
        s.checkpoints
            .list(&[&s.config.model, &current])
            .iter()
            .map(|e| {
                let mut v = e.to_json();
                let space = sumi_pipeline::checkpoint_report::latent_space_of(&e.path);
                v["latent_space"] = json!(space.map(|l| l.name()));
                v
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(Value::Array(list)))
}

/// `GET /sdapi/v1/sd-vae`.
pub async fn sd_vae(State(s): State<Arc<AppState>>) -> Json<Value> {
    let list: Vec<Value> = s
        .config
        .load
        .vae
        .iter()
        .map(|p| {
            json!({
                "model_name": p.file_name().map(|f| f.to_string_lossy().into_owned()),
                "filename": p.to_string_lossy(),
            })
        })
        .collect();
    Json(Value::Array(list))
}

/// `GET /sdapi/v1/embeddings`: those of the loaded model.
pub async fn embeddings(State(s): State<Arc<AppState>>) -> Json<Value> {
    let list = |l: &[crate::backend::EmbeddingEntry]| -> Map<String, Value> {
        l.iter()
            .map(|e| {
                (
                    e.name.clone(),
                    json!({
                        "step": e.step,
                        "sd_checkpoint": Value::Null,
                        "sd_checkpoint_name": Value::Null,
                        "shape": e.shape,
                        "vectors": e.vectors,
                    }),
                )
            })
            .collect()
    };
    let e = s.embeddings_lock();
    Json(json!({ "loaded": list(&e.loaded), "skipped": list(&e.skipped) }))
}

/// `GET /sdapi/v1/loras`, `scripts`-less lists: empty.
pub async fn empty_list() -> Json<Value> {
    Json(json!([]))
}

/// `GET /sdapi/v1/scripts`: A1111 lists its scripts' names (titles in lower case); Sumi has
/// img2img's SD upscale.
pub async fn scripts() -> Json<Value> {
    let sd_upscale = crate::scripts::SD_UPSCALE.to_lowercase();
    Json(json!({ "txt2img": [], "img2img": [sd_upscale] }))
}

/// `GET /sdapi/v1/latent-upscale-modes`: A1111's latent modes, in its order.
pub async fn latent_upscale_modes() -> Json<Value> {
    let modes = sumi_pipeline::hires::LATENT_UPSCALE_MODES;
    Json(Value::Array(
        modes
            .iter()
            .map(|m| json!({ "name": m.a1111_name() }))
            .collect(),
    ))
}

fn meminfo() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// `GET /sdapi/v1/memory`.
pub async fn memory() -> Json<Value> {
    let ram = match meminfo() {
        Some((total, free)) => {
            json!({ "free": free, "used": total - free.min(total), "total": total })
        }
        None => json!({ "error": "memory statistics are unavailable" }),
    };
    Json(json!({ "ram": ram, "cuda": { "error": "Sumi runs on the CPU" } }))
}

/// `GET /sdapi/v1/cmd-flags`: the flags the server was started with, credentials hidden.
pub async fn cmd_flags(State(s): State<Arc<AppState>>) -> Json<Value> {
    let c = &s.config;
    let path =
        |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
    Json(json!({
        "ckpt": c.model.to_string_lossy(),
        "ckpt_dir": path(&c.models_dir),
        "embeddings_dir": path(&c.load.embeddings),
        "vae_path": path(&c.load.vae),
        "preview_decoder": path(&c.preview_decoder),
        "precision": c.load.precision.name(),
        "listen": c.host != "127.0.0.1" && c.host != "localhost",
        "host": c.host,
        "port": c.port,
        "queue": c.queue,
        "api": true,
        "nowebui": false,
        "api_auth": Value::Null,
        "api_auth_enabled": c.auth.is_some(),
        "body_limit": c.body_limit,
        "cors_allow_origins": (!c.cors_allow_origins.is_empty())
            .then(|| c.cors_allow_origins.join(",")),
    }))
}
