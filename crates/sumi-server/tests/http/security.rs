//! Hardening: cross-site requests (Host, Origin, JSON content type, `--cors-allow-origins`) and
//! the bounded options store.

use std::io::{Read, Write};

use serde_json::Value;

use crate::common::*;
use crate::fake::Fake;

/// Sends one request on a raw connection with exactly these headers; returns the status,
/// the headers (lower-case names) and the body.
fn raw(
    s: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut tcp = std::net::TcpStream::connect(s.addr()).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
    tcp.write_all(req.as_bytes()).unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status.parse().unwrap(), headers, body.to_string())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

const JSON: (&str, &str) = ("Content-Type", "application/json");
const SMALL: &str = r#"{"seed": 1, "steps": 2, "width": 64, "height": 64}"#;

#[test]
fn cross_site_writes_are_refused_and_same_origin_and_scripts_served() {
    let d = tempfile::tempdir().unwrap();
    let s = TestServer::start(config(d.path()), Fake::new(0));
    let host = s.addr().to_string();
    let own = s.base.clone();
    let h = |extra: &[(&'static str, &'static str)]| {
        let mut v = vec![("Host", host.as_str())];
        v.extend_from_slice(extra);
        v
    };
    // a page's "simple" request: text/plain JSON, no preflight
    for path in [
        "/sdapi/v1/options",
        "/sdapi/v1/txt2img",
        "/sdapi/v1/png-info",
    ] {
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let mut hs = h(&[]);
            if let Some(ct) = ct {
                hs.push(("Content-Type", ct));
            }
            let (st, _, body) = raw(&s, "POST", path, &hs, r#"{"CLIP_stop_at_last_layers": 2}"#);
            assert_eq!(st, 415, "{path} {ct:?}: {body}");
            assert!(body.contains("application/json"), "{body}");
        }
    }
    // a foreign Origin on a write: 403, even with a JSON content type
    for origin in ["http://evil.example", "null", "http://127.0.0.1:1"] {
        for path in [
            "/sdapi/v1/options",
            "/sdapi/v1/txt2img",
            "/sdapi/v1/interrupt",
        ] {
            let (st, _, body) = raw(&s, "POST", path, &h(&[JSON, ("Origin", origin)]), SMALL);
            assert_eq!(st, 403, "{origin} {path}: {body}");
            assert!(body.contains("cross-origin request"), "{body}");
        }
    }
    assert!(s.fake.runs().is_empty(), "a refused request ran");
    assert_eq!(
        get(&s, "/sdapi/v1/options").1["CLIP_stop_at_last_layers"],
        1
    );
    // DNS rebinding: a foreign Host is refused, reads included
    for (method, path) in [("GET", "/sdapi/v1/options"), ("POST", "/sdapi/v1/txt2img")] {
        let hs = [("Host", "evil.example:7860"), JSON];
        let (st, _, body) = raw(&s, method, path, &hs, SMALL);
        assert_eq!(st, 421, "{path}: {body}");
        assert!(body.contains("evil.example"), "{body}");
    }
    // the server's own page (same origin, any loopback name) and scripts (no Origin) are served
    let port = host.rsplit(':').next().unwrap().to_string();
    let local = format!("localhost:{port}");
    let local_origin = format!("http://{local}");
    for hs in [
        vec![("Host", host.as_str()), JSON, ("Origin", own.as_str())],
        vec![
            ("Host", local.as_str()),
            JSON,
            ("Origin", local_origin.as_str()),
        ],
        vec![
            ("Host", host.as_str()),
            ("Content-Type", "application/json; charset=utf-8"),
        ],
    ] {
        let (st, _, body) = raw(&s, "POST", "/sdapi/v1/txt2img", &hs, SMALL);
        assert_eq!(st, 200, "{hs:?}: {body}");
        let (st, _, body) = raw(&s, "POST", "/sdapi/v1/interrupt", &hs[..1], "");
        assert_eq!(st, 200, "{hs:?}: {body}");
    }
    assert_eq!(s.fake.runs().len(), 3);
    // a read from a foreign page is answered, without CORS headers (the browser hides it)
    let (st, hs, _) = raw(
        &s,
        "GET",
        "/sdapi/v1/samplers",
        &h(&[("Origin", "http://evil.example")]),
        "",
    );
    assert_eq!(st, 200);
    assert_eq!(header(&hs, "access-control-allow-origin"), None);
    // the embedded page sends its bodies as JSON
    let page = get(&s, "/assets/api.js").1;
    assert!(
        page.as_str()
            .unwrap()
            .contains(r#"opts.headers["Content-Type"] = "application/json";"#),
        "the page's api() must send JSON"
    );
}

#[test]
fn cors_allow_origins_admits_those_pages_with_preflight() {
    let d = tempfile::tempdir().unwrap();
    let mut c = config(d.path());
    c.cors_allow_origins =
        sumi_server::guard::parse_origins("http://localhost:3000,https://sd.example").unwrap();
    let s = TestServer::start(c, Fake::new(0));
    let host = s.addr().to_string();
    let pre = [
        ("Host", host.as_str()),
        ("Origin", "http://localhost:3000"),
        ("Access-Control-Request-Method", "POST"),
        (
            "Access-Control-Request-Headers",
            "content-type,authorization",
        ),
    ];
    let (st, hs, _) = raw(&s, "OPTIONS", "/sdapi/v1/txt2img", &pre, "");
    assert_eq!(st, 200);
    assert_eq!(
        header(&hs, "access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(
        header(&hs, "access-control-allow-credentials"),
        Some("true")
    );
    assert!(header(&hs, "access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    assert_eq!(
        header(&hs, "access-control-allow-headers"),
        Some("content-type,authorization")
    );
    // a preflight from another origin is not answered
    let mut other = pre;
    other[1].1 = "http://evil.example";
    let (st, hs, _) = raw(&s, "OPTIONS", "/sdapi/v1/txt2img", &other, "");
    assert_eq!(st, 405);
    assert_eq!(header(&hs, "access-control-allow-origin"), None);
    // the allowed origin's writes run and carry the CORS header; another's are refused
    let post = |origin: &'static str, host: &str| {
        raw(
            &s,
            "POST",
            "/sdapi/v1/txt2img",
            &[("Host", host), JSON, ("Origin", origin)],
            SMALL,
        )
    };
    let (st, hs, body) = post("http://localhost:3000", &host);
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        header(&hs, "access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(post("http://localhost:3001", &host).0, 403);
    // a reverse proxy's name for an allowed origin is an accepted Host
    assert_eq!(post("https://sd.example", "sd.example").0, 200);
    assert_eq!(post("https://sd.example", "sd.example.evil").0, 421);
    assert_eq!(s.fake.runs().len(), 2);
    assert_eq!(
        get(&s, "/sdapi/v1/cmd-flags").1["cors_allow_origins"],
        "http://localhost:3000,https://sd.example"
    );
}

#[test]
fn listening_beyond_loopback_serves_any_host_but_still_refuses_foreign_origins() {
    let d = tempfile::tempdir().unwrap();
    let mut c = config(d.path());
    c.host = "0.0.0.0".into();
    let s = TestServer::start(c, Fake::new(0));
    let hs = [("Host", "my-box.lan:7860"), JSON];
    let (st, _, body) = raw(&s, "POST", "/sdapi/v1/txt2img", &hs, SMALL);
    assert_eq!(st, 200, "{body}");
    let hs = [
        ("Host", "my-box.lan:7860"),
        JSON,
        ("Origin", "http://my-box.lan:7860"),
    ];
    assert_eq!(raw(&s, "POST", "/sdapi/v1/txt2img", &hs, SMALL).0, 200);
    let hs = [
        ("Host", "my-box.lan:7860"),
        JSON,
        ("Origin", "http://evil.example"),
    ];
    assert_eq!(raw(&s, "POST", "/sdapi/v1/txt2img", &hs, SMALL).0, 403);
    assert_eq!(s.fake.runs().len(), 2);
    assert_eq!(
        get(&s, "/sdapi/v1/cmd-flags").1["cors_allow_origins"],
        Value::Null
    );
}

#[test]
fn options_keep_a1111_settings_only_each_bounded() {
    let d = tempfile::tempdir().unwrap();
    let s = TestServer::start(config(d.path()), Fake::new(0));
    let set = |v: serde_json::Value| post(&s, "/sdapi/v1/options", &v);
    let before = get(&s, "/sdapi/v1/options").1;
    // a key A1111 does not define: 422 naming it (shortened), nothing kept
    let long_key = "k".repeat(1 << 20);
    for (body, needle) in [
        (
            serde_json::json!({"jpeg_quality": 80, "no_such_option": 1}),
            "setting no_such_option: not an option of A1111 v1.10.1".to_string(),
        ),
        (
            serde_json::json!({ long_key.as_str(): 1 }),
            format!("setting {}: not an option", "k".repeat(80)),
        ),
        (
            serde_json::json!({"samples_filename_pattern": "x".repeat(5000)}),
            "setting samples_filename_pattern: value of 5002 bytes is over the limit of 4096"
                .to_string(),
        ),
    ] {
        let (st, v) = set(body);
        assert_eq!(st, 422, "{v}");
        let detail = v["detail"].as_str().unwrap();
        assert!(detail.contains(&needle), "{detail:.200}");
        assert!(detail.len() < 300, "the detail echoes the key whole");
    }
    assert_eq!(get(&s, "/sdapi/v1/options").1, before);
    // every A1111 option is there with its default (a fresh A1111 answers so)
    assert_eq!(before.as_object().unwrap().len(), 324);
    assert_eq!(before["send_seed"], true);
    assert_eq!(before["jpeg_quality"], 80);
    assert_eq!(before["api_useragent"], "");
    // A1111's options are kept and echoed; those its API may not set are ignored
    let (st, v) = set(serde_json::json!({
        "jpeg_quality": 95,
        "samples_filename_pattern": "[seed]",
        "api_useragent": "x",
    }));
    assert_eq!((st, v), (200, Value::Null));
    let after = get(&s, "/sdapi/v1/options").1;
    assert_eq!(after["jpeg_quality"], 95);
    assert_eq!(after["samples_filename_pattern"], "[seed]");
    assert_eq!(after["api_useragent"], "");
    assert_eq!(after.as_object().unwrap().len(), 324);
}
