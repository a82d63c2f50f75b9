//! One line on stderr per request, as A1111's server (uvicorn) prints one: the method, the path
//! (without the query, which may hold data), the status and the time until the response began.
//! The path comes from a parsed URI, so it holds visible ASCII only (nothing for a terminal to
//! act on).

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

/// The middleware: runs the request, then prints its line.
pub async fn log(req: Request, next: Next) -> Response {
    let line = format!("{} {}", req.method(), req.uri().path());
    let start = Instant::now();
    let res = next.run(req).await;
    eprintln!(
        "{line} {} {:.3}s",
        res.status().as_u16(),
        start.elapsed().as_secs_f64()
    );
    res
}
