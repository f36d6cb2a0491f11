//! Drives one client connection on tokio: the session loop every async runtime shares
//! ([`runtime_std::poll_loop`]), with tokio's streams, timer and dialing. One task owns the
//! client's socket and every link's; no per-frame channel hand-offs.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use persist_core::Event;
pub use runtime_std::poll_loop::DIAL_TIMEOUT;
use runtime_std::poll_loop::{Dialing, Runtime, SessionLoop};
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::addr::Addr;
use crate::net::{self, Reader, Writer};

pub use runtime_std::ProxyConfig;

/// Where a driver's session events go besides the log (the demo counts them).
pub type EventSink = Option<mpsc::UnboundedSender<Event>>;

/// Tokio's part of the session loop.
pub struct Tokio;

impl Runtime for Tokio {
    type Reader = Reader;
    type Writer = Writer;
    type Timer = Pin<Box<tokio::time::Sleep>>;

    fn poll_read(
        r: &mut Reader,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        tokio_util::io::poll_read_buf(Pin::new(r), cx, buf)
    }

    fn poll_write_vectored(
        w: &mut Writer,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(w).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(w: &mut Writer, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(w).poll_flush(cx)
    }

    fn timer() -> Self::Timer {
        Box::pin(tokio::time::sleep(std::time::Duration::ZERO))
    }

    fn set_timer(t: &mut Self::Timer, at: std::time::Instant) {
        t.as_mut().reset(tokio::time::Instant::from_std(at));
    }

    fn poll_timer(t: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()> {
        t.as_mut().poll(cx)
    }

    fn dial(addr: &Addr) -> Dialing<Self> {
        let addr = addr.clone();
        Box::pin(async move {
            match tokio::time::timeout(DIAL_TIMEOUT, net::dial(&addr)).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {DIAL_TIMEOUT:?}"),
                )),
            }
        })
    }
}

/// Serve one client until it leaves, is expelled, or `shutdown` turns true. `admitted` is its
/// place within the proxy's limits ([`runtime_std::Limits::admit`]), and numbers it among the
/// proxy's sessions (its random choices derive from that).
pub async fn serve_client(
    client_r: Reader,
    client_w: Writer,
    client: String,
    cfg: ProxyConfig,
    admitted: runtime_std::Admitted,
    events: EventSink,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut session = SessionLoop::<Tokio>::new(client_r, client_w, client, &cfg, admitted);
    if let Some(sink) = events {
        session.on_event(move |e| {
            let _ = sink.send(e);
        });
    }
    if session
        .run_until(crate::shutdown_requested(&mut shutdown))
        .await
    {
        info!("[{}] shutting down", session.client());
    }
    let mut client_w = session.into_client_writer();
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut client_w).await;
}
