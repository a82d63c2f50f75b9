//! The embedded web page: `/` (index.html), `/assets/<file>` (its scripts and style sheet,
//! compiled into the binary, each with its content type) and `/sumi/network-preview`, the
//! preview image that sits beside a listed LoRA, hypernetwork or embedding file (A1111's
//! `<name>.preview.png` / `<name>.png` convention), for the page's extra-network cards.
//!
//! The preview route serves only a file whose name is made from a listed network's own path
//! (its stem, a fixed suffix list), never a path taken from the request, and only up to
//! [`MAX_PREVIEW_BYTES`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::AppState;

/// The page's files: name under `/assets/`, content type, bytes. `index.html` is served at `/`.
pub const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../assets/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../assets/style.css"),
    ),
    (
        "i18n.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/i18n.js"),
    ),
    (
        "prompt.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/prompt.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/api.js"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/app.js"),
    ),
    (
        "canvas.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/canvas.js"),
    ),
    (
        "panels.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/panels.js"),
    ),
];

/// The largest preview image served, in bytes.
pub const MAX_PREVIEW_BYTES: u64 = 8 * 1024 * 1024;

/// The preview names A1111 looks for beside a network file, in its order
/// (`ExtraNetworksPage.find_preview`: `.preview.` first, then the bare stem).
const PREVIEW_SUFFIXES: &[(&str, &str)] = &[
    (".preview.png", "image/png"),
    (".preview.jpg", "image/jpeg"),
    (".preview.jpeg", "image/jpeg"),
    (".preview.webp", "image/webp"),
    (".preview.gif", "image/gif"),
    (".png", "image/png"),
    (".jpg", "image/jpeg"),
    (".jpeg", "image/jpeg"),
    (".webp", "image/webp"),
    (".gif", "image/gif"),
];

/// How many directory entries the embeddings folder walk looks at, at most.
const MAX_WALK_ENTRIES: usize = 20_000;

/// The page's routes (added to the server's router, inside its guard and authentication).
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
        .route("/sumi/network-preview", get(network_preview))
}

/// The asset called `name`: its content type and text.
pub fn asset_named(name: &str) -> Option<(&'static str, &'static str)> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, t, b)| (*t, *b))
}

fn serve(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    let (t, b) = asset_named("index.html").unwrap_or(("text/plain", ""));
    serve(t, b)
}

async fn asset(UrlPath(file): UrlPath<String>) -> Response {
    match asset_named(&file) {
        Some((t, b)) => serve(t, b),
        None => ApiError::not_found(format!("no page asset named '{file}'")).into_response(),
    }
}

/// `?kind=lora|hypernetwork|embedding&name=NAME`.
#[derive(serde::Deserialize)]
struct PreviewQuery {
    kind: String,
    name: String,
}

/// `GET /sumi/network-preview`: the preview image of a listed network, 404 when it has none.
async fn network_preview(
    State(s): State<Arc<AppState>>,
    Query(q): Query<PreviewQuery>,
) -> Result<Response, ApiError> {
    let file = match q.kind.as_str() {
        "lora" => {
            let dirs = s.config.load.lora_dirs.clone();
            let name = q.name.clone();
            blocking(move || {
                let list = sumi_pipeline::networks::list_loras(&dirs).ok()?;
                let n = list.iter().find(|n| n.name == name)?;
                Some(n.path.clone())
            })
            .await?
        }
        "hypernetwork" => {
            let dirs = s.config.load.hypernetwork_dirs.clone();
            let name = q.name.clone();
            blocking(move || {
                let list = sumi_pipeline::networks::list_hypernetworks(&dirs).ok()?;
                let n = list.iter().find(|n| n.name == name)?;
                Some(n.path.clone())
            })
            .await?
        }
        "embedding" => {
            let known = s.embeddings_lock().loaded.iter().any(|e| e.name == q.name);
            match (known, s.config.load.embeddings.clone()) {
                (true, Some(dir)) => {
                    let name = q.name.clone();
                    blocking(move || find_embedding(&dir, &name)).await?
                }
                _ => None,
            }
        }
        other => {
            return Err(ApiError::invalid(format!(
                "kind: '{other}' is not one of lora, hypernetwork, embedding"
            )))
        }
    };
    let no_preview = || ApiError::not_found(format!("no preview for {} '{}'", q.kind, q.name));
    let file = file.ok_or_else(no_preview)?;
    let found = blocking(move || read_preview(&file)).await?;
    let (content_type, bytes) = found.ok_or_else(no_preview)?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        bytes,
    )
        .into_response())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// The preview beside the network file `file`: the first of [`PREVIEW_SUFFIXES`] that is a
/// regular file of at most [`MAX_PREVIEW_BYTES`], with its content type.
pub fn read_preview(file: &Path) -> Option<(&'static str, Vec<u8>)> {
    let stem = file.file_stem()?.to_string_lossy().into_owned();
    let dir = file.parent()?;
    for (suffix, content_type) in PREVIEW_SUFFIXES {
        let p = dir.join(format!("{stem}{suffix}"));
        if p == file {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if !meta.is_file() || meta.len() > MAX_PREVIEW_BYTES {
            continue;
        }
        let Ok(bytes) = std::fs::read(&p) else {
            continue;
        };
        // the file may have grown between the two calls
        if bytes.len() as u64 <= MAX_PREVIEW_BYTES {
            return Some((content_type, bytes));
        }
    }
    None
}

/// The embedding file called `name` under `dir` (a `.safetensors`, `.pt` or `.bin` whose stem
/// is the name), walking at most [`MAX_WALK_ENTRIES`] entries, 16 levels deep.
fn find_embedding(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    let mut seen = 0usize;
    while let Some((d, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            seen += 1;
            if seen > MAX_WALK_ENTRIES {
                return None;
            }
            let p = entry.path();
            if p.is_dir() {
                if depth < 16 {
                    stack.push((p, depth + 1));
                }
                continue;
            }
            let ext = p
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
            if matches!(ext.as_str(), "safetensors" | "pt" | "bin") && stem.as_deref() == Some(name)
            {
                return Some(p);
            }
        }
    }
    None
}
