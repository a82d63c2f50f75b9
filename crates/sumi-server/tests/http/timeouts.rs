//! Slow and idle clients: a connection whose request header does not arrive within the header
//! timeout is closed (half a header, nothing at all, or idle after a response), a body that
//! does not arrive within the body timeout is answered 408; a request that takes longer than
//! either to *answer* is not cut.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use sumi_server::Timeouts;

use crate::common::*;
use crate::fake::Fake;

const HEADER: Duration = Duration::from_millis(600);
const BODY: Duration = Duration::from_millis(900);

fn server(step_ms: u64) -> (tempfile::TempDir, TestServer) {
    let d = tempfile::tempdir().unwrap();
    let t = Timeouts {
        header: HEADER,
        body: BODY,
    };
    let s = TestServer::start_with(config(d.path()), Fake::new(step_ms), t);
    (d, s)
}

/// Sends `sent`, then reads until the server closes the connection (5 s at most); returns what
/// came back and when the connection was closed, counted from the connection's start.
fn until_closed(s: &TestServer, sent: &[u8]) -> (String, Duration) {
    let t0 = Instant::now();
    let mut tcp = TcpStream::connect(s.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(sent).unwrap();
    let mut got = Vec::new();
    let r = tcp.read_to_end(&mut got);
    let took = t0.elapsed();
    assert!(
        r.is_ok(),
        "the connection was still open after {took:?} ({r:?}); got {:?}",
        String::from_utf8_lossy(&got)
    );
    (String::from_utf8_lossy(&got).into_owned(), took)
}

#[test]
fn a_header_not_sent_in_time_closes_the_connection() {
    let (_d, s) = server(0);
    let host = s.addr().to_string();
    let half = format!("GET /health HTTP/1.1\r\nHost: {host}\r\n");
    let whole = format!("GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n");
    for (what, sent) in [
        ("half a header", half.as_bytes()),
        ("nothing", &b""[..]),
        ("a request, then idle", whole.as_bytes()),
    ] {
        let (got, took) = until_closed(&s, sent);
        assert!(
            took >= HEADER - Duration::from_millis(50) && took < HEADER * 4,
            "{what}: closed after {took:?}, the header timeout is {HEADER:?}"
        );
        if what == "a request, then idle" {
            assert!(got.starts_with("HTTP/1.1 200"), "{what}: {got}");
        } else {
            assert!(!got.contains(" 200 "), "{what}: {got}");
        }
    }
    // the server serves on
    assert_eq!(get(&s, "/health").0, 200);
}

#[test]
fn a_body_not_sent_in_time_is_answered_408() {
    let (_d, s) = server(0);
    let head = format!(
        "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"seed\": 1,",
        s.addr()
    );
    let (got, took) = until_closed(&s, head.as_bytes());
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(
        got.contains("the request body did not arrive within 0.9 s"),
        "{got}"
    );
    assert!(
        took >= BODY - Duration::from_millis(50) && took < BODY * 3,
        "answered after {took:?}, the body timeout is {BODY:?}"
    );
    assert!(s.fake.runs().is_empty());
}

#[test]
fn a_job_longer_than_the_timeouts_is_answered() {
    // 300 steps of 5 ms: 1.5 s, longer than both timeouts
    let (_d, s) = server(5);
    let t0 = Instant::now();
    let (st, v) = post(
        &s,
        "/sdapi/v1/txt2img",
        &json!({"seed": 1, "steps": 300, "width": 64, "height": 64}),
    );
    assert_eq!(st, 200, "{v}");
    assert!(t0.elapsed() > HEADER + BODY, "{:?}", t0.elapsed());
    assert_eq!(s.fake.runs().len(), 1);
}
