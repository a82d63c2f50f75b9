//! The web page's files (`/`, `/assets/*`: content types, the size budget, no reference to
//! another origin) and `/sumi/network-preview` (a listed network's `name.preview.png` or
//! `name.png` only; unlisted names, path tricks, oversized files and unknown kinds refused).

use std::path::Path;
use std::time::Duration;

use sumi_server::backend::Embeddings;
use sumi_server::page::{ASSETS, MAX_PREVIEW_BYTES};

use crate::common::*;
use crate::fake::{embedding, Fake};

/// `(status, content type, body)` of a GET.
fn fetch(s: &TestServer, path: &str) -> (u16, String, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut r = agent.get(&s.url(path)).call().unwrap();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = r
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    (r.status().as_u16(), ct, body)
}

#[test]
fn the_page_assets_are_served_with_their_types_within_300_kb() {
    let total: usize = ASSETS.iter().map(|(_, _, b)| b.len()).sum();
    assert!(total < 300 * 1024, "the page's assets take {total} bytes");
    assert!(
        total > 50 * 1024,
        "the page's assets are only {total} bytes"
    );
    let d = tempfile::tempdir().unwrap();
    let s = TestServer::start(config(d.path()), Fake::new(0));
    let (st, ct, body) = fetch(&s, "/");
    assert_eq!((st, ct.as_str()), (200, "text/html; charset=utf-8"));
    let html = String::from_utf8(body).unwrap();
    for (name, kind, text) in ASSETS {
        if *name != "index.html" {
            assert!(
                html.contains(&format!("/assets/{name}")),
                "{name} is not linked"
            );
        }
        let (st, ct, body) = fetch(&s, &format!("/assets/{name}"));
        assert_eq!((st, ct.as_str()), (200, *kind), "{name}");
        assert_eq!(body, text.as_bytes(), "{name}");
        // offline: nothing is loaded from elsewhere
        for needle in ["http://", "https://", "//cdn", "@import"] {
            assert!(!text.contains(needle), "{name} names {needle}");
        }
    }
    assert_eq!(fetch(&s, "/assets/style.css").1, "text/css; charset=utf-8");
    assert_eq!(
        fetch(&s, "/assets/app.js").1,
        "text/javascript; charset=utf-8"
    );
    for bad in ["/assets/nope.js", "/assets/..%2FCargo.toml", "/assets/"] {
        assert_eq!(fetch(&s, bad).0, 404, "{bad}");
    }
}

fn copy_lora(dir: &Path, name: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/lora/sd1/lora_kohya.safetensors");
    std::fs::copy(src, dir.join(format!("{name}.safetensors"))).unwrap();
}

#[test]
fn network_previews_are_served_only_beside_listed_networks() {
    let d = tempfile::tempdir().unwrap();
    let loras = d.path().join("loras");
    copy_lora(&loras, "shown");
    copy_lora(&loras.join("sub"), "bare");
    copy_lora(&loras, "none");
    copy_lora(&loras, "huge");
    let shown = png(3, 2, [1, 2, 3]);
    std::fs::write(loras.join("shown.preview.png"), &shown).unwrap();
    std::fs::write(loras.join("shown.png"), png(5, 5, [9, 9, 9])).unwrap();
    std::fs::write(loras.join("sub/bare.png"), png(4, 4, [7, 7, 7])).unwrap();
    std::fs::write(loras.join("secret.png"), png(2, 2, [0, 0, 0])).unwrap();
    let huge = std::fs::File::create(loras.join("huge.preview.png")).unwrap();
    huge.set_len(MAX_PREVIEW_BYTES + 1).unwrap();
    let hn = d.path().join("hn");
    std::fs::create_dir_all(&hn).unwrap();
    std::fs::write(hn.join("style.pt"), b"x").unwrap();
    std::fs::write(hn.join("style.preview.jpg"), b"jpeg bytes").unwrap();
    let emb = d.path().join("emb");
    std::fs::create_dir_all(emb.join("deep")).unwrap();
    std::fs::write(emb.join("deep/tok.pt"), b"x").unwrap();
    std::fs::write(emb.join("deep/tok.preview.png"), png(1, 1, [5, 5, 5])).unwrap();
    std::fs::write(emb.join("gone.preview.png"), png(1, 1, [5, 5, 5])).unwrap();

    let mut c = config(d.path());
    c.load.lora_dirs = vec![loras.clone()];
    c.load.hypernetwork_dirs = vec![hn];
    c.load.embeddings = Some(emb);
    let fake = Fake {
        embeddings: Embeddings {
            loaded: vec![embedding("tok", 768, 1)],
            skipped: vec![],
        },
        ..Fake::new(0)
    };
    let s = TestServer::start(c, fake);
    let url = |kind: &str, name: &str| format!("/sumi/network-preview?kind={kind}&name={name}");
    // `.preview.png` wins over the bare `.png`, as in A1111
    assert_eq!(
        fetch(&s, &url("lora", "shown")),
        (200, "image/png".into(), shown)
    );
    assert_eq!(fetch(&s, &url("lora", "bare")).0, 200);
    assert_eq!(
        fetch(&s, &url("hypernetwork", "style")),
        (200, "image/jpeg".into(), b"jpeg bytes".to_vec())
    );
    assert_eq!(fetch(&s, &url("embedding", "tok")).0, 200);
    for (kind, name, status) in [
        ("lora", "none", 404),            // listed, no picture beside it
        ("lora", "huge", 404),            // over the size limit
        ("lora", "secret", 404),          // a picture, but no network of that name
        ("lora", "..%2Fhn%2Fstyle", 404), // names are matched, never joined to a path
        ("lora", "sub%2Fbare", 404),
        ("embedding", "gone", 404),     // not a loaded embedding
        ("hypernetwork", "shown", 404), // another kind's name
        ("checkpoint", "shown", 422),
    ] {
        let (st, _, body) = fetch(&s, &url(kind, name));
        assert_eq!(
            st,
            status,
            "{kind} {name}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(fetch(&s, "/sumi/network-preview?kind=lora").0, 400);
}
