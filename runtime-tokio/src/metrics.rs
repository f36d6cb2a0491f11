//! The `--metrics` endpoint: a minimal HTTP/1.x responder that answers `GET /metrics` (or `/`)
//! with the proxy's counters in Prometheus's text format, one request per connection.
//!
//! A scraper is trusted no more than a client: a request must arrive whole, within
//! [`REQUEST_TIMEOUT`] and [`MAX_REQUEST`] bytes, or the connection is closed; at most
//! [`MAX_SCRAPES`] are answered at once, the rest wait in the listen queue.

use std::sync::Arc;
use std::time::Duration;

use runtime_std::accept::AcceptErrors;
use runtime_std::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};
use tracing::debug;

use crate::net::{Listener, Reader, Writer};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REQUEST: usize = 8 * 1024;
const MAX_SCRAPES: usize = 16;

/// Answer scrapes on `listener` until `shutdown` turns true.
pub async fn serve_metrics(
    mut listener: Listener,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    let mut accept_errors = AcceptErrors::accepting("a metrics scrape");
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
            _ = crate::shutdown_requested(&mut shutdown) => return,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(Some((r, w, peer))) => {
                    accept_errors.succeeded();
                    let metrics = metrics.clone();
                    tokio::spawn(async move {
                        if let Err(why) = answer(r, w, &metrics).await {
                            debug!("metrics: request from {peer} not answered: {why}");
                        }
                        drop(slot);
                    });
                }
                Ok(None) => return,
                Err(e) => {
                    let pause = accept_errors.failed(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = crate::shutdown_requested(&mut shutdown) => return,
                    }
                }
            },
            _ = crate::shutdown_requested(&mut shutdown) => return,
        }
    }
}

async fn answer(mut r: Reader, mut w: Writer, metrics: &Metrics) -> Result<(), String> {
    let mut request = Vec::with_capacity(1024);
    let head = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        loop {
            if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(end);
            }
            if request.len() > MAX_REQUEST {
                return Err(format!("request head longer than {MAX_REQUEST} bytes"));
            }
            match r.read(&mut buf).await {
                Ok(0) => return Err("connection closed before the request ended".into()),
                Ok(n) => request.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| format!("no whole request within {REQUEST_TIMEOUT:?}"))??;
    let line = String::from_utf8_lossy(&request[..head]);
    let mut words = line.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, kind, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics" | "/") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "p9persist serves its metrics at /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_string(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        response.extend_from_slice(body.as_bytes());
    }
    let write = async {
        w.write_all(&response).await?;
        w.shutdown().await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, write)
        .await
        .map_err(|_| "the scraper did not read the answer".to_string())?
        .map_err(|e| e.to_string())
}
