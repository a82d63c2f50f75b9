//! HTTP/1 connections: the router served by hyper, each connection under a header read timeout
//! (a client must send a request's whole header within it, the first request's as every later
//! one's on a kept-alive connection: idle and slow-header connections are closed), and a
//! graceful shutdown (no new connections; running requests finish, idle connections close).
//!
//! `axum::serve` offers no header timeout (it runs hyper without a timer), hence this loop.
//! Request bodies have their own deadline, read in [`crate::body::read_body`].

use std::future::Future;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting, lets every
/// connection finish its running request and close, and returns once all are closed.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    // every connection task holds a sender: `recv` answers `None` once all have ended
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        let alive = alive_tx.clone();
        tokio::spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            let mut stopping = false;
            loop {
                tokio::select! {
                    // a failed connection (a header timeout, a reset) concerns that client only
                    _ = conn.as_mut() => break,
                    _ = stop.wait_for(|s| *s), if !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(alive);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive_tx);
    let _ = alive_rx.recv().await;
}

/// After a failed `accept`: a connection reset before it was accepted concerns that client
/// only; anything else (out of file descriptors) is waited out a little, as hyper's examples
/// and axum do, rather than spinning.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        eprintln!("sumi serve: cannot accept a connection: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
