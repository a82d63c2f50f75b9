//! Where the Hub is and where its files go, from the environment variables `huggingface_hub`
//! reads, so that Sumi shares one cache with diffusers and ComfyUI users:
//! - cache: `$HF_HUB_CACHE`, else `$HUGGINGFACE_HUB_CACHE` (its old name), else `$HF_HOME/hub`,
//!   else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`;
//! - `HF_ENDPOINT` (default `https://huggingface.co`), a mirror or a local server;
//! - `HF_TOKEN`, else the token file `huggingface-cli login` writes (`$HF_TOKEN_PATH`, else
//!   `$HF_HOME/token`), sent as `Authorization: Bearer` to the endpoint only;
//! - `HF_HUB_OFFLINE` (`1`, `true`, `yes`, `on`): files come from the cache only;
//! - `HF_HUB_DOWNLOAD_TIMEOUT`: seconds without a byte from the server before a transfer is
//!   given up (resumed, then an error): `huggingface_hub`'s read timeout, 60 s here where
//!   `huggingface_hub` waits 10.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{HubError, Result};

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Largest token file read.
const MAX_TOKEN_FILE: u64 = 4096;

/// How long a transfer may go without a byte from the server, unless `HF_HUB_DOWNLOAD_TIMEOUT`
/// says otherwise.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest `HF_HUB_DOWNLOAD_TIMEOUT` taken (a day).
const MAX_READ_TIMEOUT_SECS: f64 = 86_400.0;

/// How to reach the Hub and where its cache is.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Scheme, host and port (and a path prefix, for mirrors), without a trailing `/`.
    pub endpoint: String,
    /// The Hub cache (`…/huggingface/hub`), holding `models--org--name` folders.
    pub cache_dir: PathBuf,
    /// An access token for gated and private repos.
    pub token: Option<String>,
    /// Use the cache only, never the network.
    pub offline: bool,
    /// How long one read may wait for the server (headers or body) before the transfer is
    /// given up: a server that stops sending mid-file ends in an error naming the file, not a
    /// wait forever.
    pub read_timeout: Duration,
}

impl HubConfig {
    /// The configuration the environment describes.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// The configuration `var` describes (`var` answers like `std::env::var`, empty values as
    /// absent).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let home = || var("HOME").map(PathBuf::from);
        let hf_home = var("HF_HOME").map(PathBuf::from).or_else(|| {
            var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| home().map(|h| h.join(".cache")))
                .map(|c| c.join("huggingface"))
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .or_else(|| hf_home.as_ref().map(|h| h.join("hub")))
            .ok_or(HubError::Config {
                var: "HF_HUB_CACHE",
                reason: "not set, and neither HF_HOME nor HOME is set to find the cache".into(),
            })?;
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.into());
        let endpoint = endpoint.trim_end_matches('/').to_string();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            || endpoint.chars().any(|c| !c.is_ascii_graphic())
        {
            return Err(HubError::Config {
                var: "HF_ENDPOINT",
                reason: format!("`{endpoint}` is not an http:// or https:// address"),
            });
        }
        let token = match var("HF_TOKEN") {
            Some(t) => Some(t),
            None => var("HF_TOKEN_PATH")
                .map(PathBuf::from)
                .or_else(|| hf_home.map(|h| h.join("token")))
                .and_then(|p| read_token_file(&p)),
        };
        let token = token
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        if token
            .as_ref()
            .is_some_and(|t| t.chars().any(|c| !c.is_ascii_graphic()))
        {
            return Err(HubError::Config {
                var: "HF_TOKEN",
                reason: "holds characters a token cannot have".into(),
            });
        }
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        let read_timeout = match var("HF_HUB_DOWNLOAD_TIMEOUT") {
            None => DEFAULT_READ_TIMEOUT,
            Some(v) => match v.trim().parse::<f64>() {
                Ok(s) if s > 0.0 && s <= MAX_READ_TIMEOUT_SECS => Duration::from_secs_f64(s),
                _ => {
                    return Err(HubError::Config {
                        var: "HF_HUB_DOWNLOAD_TIMEOUT",
                        reason: format!(
                            "`{}` is not a number of seconds above 0 and up to \
                             {MAX_READ_TIMEOUT_SECS}",
                            v.chars().take(40).collect::<String>()
                        ),
                    })
                }
            },
        };
        Ok(Self {
            endpoint,
            cache_dir,
            token,
            offline,
            read_timeout,
        })
    }
}

/// The token in `path`, if it is a small regular file.
fn read_token_file(path: &std::path::Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?;
    if !m.is_file() || m.len() > MAX_TOKEN_FILE {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> Result<HubConfig> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubConfig::from_vars(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn cache_folder_follows_huggingface_hub() {
        let c = with(&[("HOME", "/h")]).unwrap();
        assert_eq!(c.cache_dir, PathBuf::from("/h/.cache/huggingface/hub"));
        assert_eq!(c.endpoint, DEFAULT_ENDPOINT);
        assert!(!c.offline && c.token.is_none());
        let c = with(&[("HOME", "/h"), ("HF_HOME", "/hf")]).unwrap();
        assert_eq!(c.cache_dir, PathBuf::from("/hf/hub"));
        let c = with(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/c")]).unwrap();
        assert_eq!(c.cache_dir, PathBuf::from("/c"));
        let c = with(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]).unwrap();
        assert_eq!(c.cache_dir, PathBuf::from("/x/huggingface/hub"));
    }

    #[test]
    fn endpoint_token_and_offline() {
        let c = with(&[
            ("HF_HUB_CACHE", "/c"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_TOKEN", "hf_abc\n"),
            ("HF_HUB_OFFLINE", "1"),
        ])
        .unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:9");
        assert_eq!(c.token.as_deref(), Some("hf_abc"));
        assert!(c.offline);
        let e = with(&[("HF_HUB_CACHE", "/c"), ("HF_ENDPOINT", "ftp://x")]).unwrap_err();
        assert!(e.to_string().starts_with("HF_ENDPOINT: `ftp://x`"), "{e}");
        assert!(with(&[("HF_HUB_CACHE", "/c"), ("HF_HUB_OFFLINE", "0")]).is_ok_and(|c| !c.offline));
    }

    #[test]
    fn the_read_timeout_is_60_s_unless_set() {
        let c = with(&[("HF_HUB_CACHE", "/c")]).unwrap();
        assert_eq!(c.read_timeout, Duration::from_secs(60));
        let c = with(&[("HF_HUB_CACHE", "/c"), ("HF_HUB_DOWNLOAD_TIMEOUT", " 2.5 ")]).unwrap();
        assert_eq!(c.read_timeout, Duration::from_millis(2500));
        for bad in ["0", "-1", "x", "1e9", "NaN"] {
            let e = with(&[("HF_HUB_CACHE", "/c"), ("HF_HUB_DOWNLOAD_TIMEOUT", bad)]).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("HF_HUB_DOWNLOAD_TIMEOUT: `{bad}` is not a number")),
                "{e}"
            );
        }
    }
}
