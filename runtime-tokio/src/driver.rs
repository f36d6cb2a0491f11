//! Drives one client connection through a persist-core [`Drive`] on tokio: one task owns the
//! client's socket and every link's, polls whichever the drive wants read or written, dials when
//! it asks, and sleeps until its timeouts. Every decision (stale dials, failed writes,
//! backpressure) is the drive's; this file only moves bytes.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use persist_core::drive::{self, Action, Drive, OutQueue};
use persist_core::{BackendId, Config, Event, Instant, LinkId};
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use crate::addr::Addr;
use crate::net::{self, Reader, Writer};

/// Longest a single dial may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Slices handed to one vectored write.
const MAX_SLICES: usize = 64;
/// Rounds of work one poll may do before yielding to other sessions.
const ROUNDS_PER_POLL: usize = 64;

pub use runtime_std::ProxyConfig;

/// Where a driver's session events go besides the log (the demo counts them).
pub type EventSink = Option<mpsc::UnboundedSender<Event>>;

type Dialing = Pin<Box<dyn Future<Output = io::Result<(Reader, Writer)>> + Send>>;

enum LinkIo {
    Dialing(LinkId, Dialing),
    Up(LinkId, Reader, Writer),
}

impl LinkIo {
    fn id(&self) -> LinkId {
        match self {
            LinkIo::Dialing(id, _) | LinkIo::Up(id, ..) => *id,
        }
    }
}

/// One session's sockets and timer.
struct SessionIo {
    drive: Drive,
    client: String,
    backend: Addr,
    client_r: Reader,
    client_w: Writer,
    links: Vec<LinkIo>,
    epoch: tokio::time::Instant,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// The deadline the sleep is set to, and the last one that fired (a timeout that does not
    /// move the deadline must not make the loop spin).
    armed: Option<Instant>,
    fired: Option<Instant>,
    /// Bytes went to the client since its stream was last flushed (a buffering stream such as
    /// stdout holds them until flushed; for sockets a flush does nothing).
    client_unflushed: bool,
    events: EventSink,
}

/// Serve one client until it leaves, is expelled, or `shutdown` turns true. `number` tells
/// this session from the proxy's others (its random choices derive from it).
pub async fn serve_client(
    client_r: Reader,
    client_w: Writer,
    client: String,
    cfg: ProxyConfig,
    number: u64,
    events: EventSink,
    mut shutdown: watch::Receiver<bool>,
) {
    let epoch = tokio::time::Instant::now();
    let session_cfg = Config {
        seed: drive::session_seed(cfg.session.seed, number),
        ..cfg.session
    };
    debug!("client {client} connected; serving {}", cfg.backend);
    let mut io = SessionIo {
        drive: Drive::new(session_cfg, BackendId(0), Instant::from_nanos(0)),
        client,
        backend: cfg.backend,
        client_r,
        client_w,
        links: Vec::new(),
        epoch,
        sleep: Box::pin(tokio::time::sleep_until(epoch)),
        armed: None,
        fired: None,
        client_unflushed: false,
        events,
    };
    let stopped = {
        let shutdown = crate::shutdown_requested(&mut shutdown);
        tokio::pin!(shutdown);
        std::future::poll_fn(|cx| {
            if shutdown.as_mut().poll(cx).is_ready() {
                return Poll::Ready(true);
            }
            io.poll_run(cx).map(|()| false)
        })
        .await
    };
    if stopped {
        info!("[{}] shutting down", io.client);
    }
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut io.client_w).await;
}

impl SessionIo {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.epoch.elapsed().as_nanos() as u64)
    }

    /// Work until nothing can move, then wait (every branch below either consumed or produced
    /// something, or registered for a wake-up).
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..ROUNDS_PER_POLL {
            self.carry_out_actions();
            self.log_events();
            if self.drive.is_finished() {
                return Poll::Ready(());
            }
            let mut progress = self.poll_dials(cx);
            progress |= self.poll_writes(cx);
            progress |= self.poll_reads(cx);
            progress |= self.poll_timer(cx);
            if !progress {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn carry_out_actions(&mut self) {
        while let Some(action) = self.drive.poll_action() {
            match action {
                Action::Dial { link, .. } => {
                    let addr = self.backend.clone();
                    let dial = async move {
                        match tokio::time::timeout(DIAL_TIMEOUT, net::dial(&addr)).await {
                            Ok(r) => r,
                            Err(_) => Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                format!("no answer within {DIAL_TIMEOUT:?}"),
                            )),
                        }
                    };
                    self.links.push(LinkIo::Dialing(link, Box::pin(dial)));
                }
                Action::CloseLink { link } => self.links.retain(|l| l.id() != link),
            }
        }
    }

    fn log_events(&mut self) {
        while let Some(e) = self.drive.poll_event() {
            runtime_std::log_sentence(&drive::sentence(
                &e,
                &self.client,
                &self.backend.to_string(),
            ));
            if let Some(sink) = &self.events {
                let _ = sink.send(e);
            }
        }
    }

    fn poll_dials(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let mut i = 0;
        while i < self.links.len() {
            let LinkIo::Dialing(link, dial) = &mut self.links[i] else {
                i += 1;
                continue;
            };
            let link = *link;
            let Poll::Ready(result) = dial.as_mut().poll(cx) else {
                i += 1;
                continue;
            };
            progress = true;
            let now = self.now();
            match result {
                Ok((r, w)) if self.drive.handle_dial_done(now, link, Ok(())) => {
                    self.links[i] = LinkIo::Up(link, r, w);
                    i += 1;
                }
                Ok(_) => {
                    self.links.remove(i);
                }
                Err(e) => {
                    self.links.remove(i);
                    self.drive.handle_dial_done(now, link, Err(&e.to_string()));
                }
            }
        }
        progress
    }

    fn poll_writes(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        if !self.drive.client_out().is_empty() {
            match poll_write_out(&mut self.client_w, self.drive.client_out(), cx) {
                Poll::Ready(Ok(n)) => {
                    self.drive.client_written(n);
                    self.client_unflushed = true;
                    progress = true;
                }
                Poll::Ready(Err(e)) => {
                    debug!("[{}] write to client failed: {e}", self.client);
                    self.drive.handle_client_gone(self.now());
                    progress = true;
                }
                Poll::Pending => {}
            }
        }
        if self.client_unflushed && self.drive.client_out().is_empty() {
            match Pin::new(&mut self.client_w).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.client_unflushed = false;
                    progress = true;
                }
                Poll::Ready(Err(e)) => {
                    debug!("[{}] flushing the client's stream failed: {e}", self.client);
                    self.client_unflushed = false;
                    self.drive.handle_client_gone(self.now());
                    progress = true;
                }
                Poll::Pending => {}
            }
        }
        for i in 0..self.links.len() {
            let LinkIo::Up(link, _, w) = &mut self.links[i] else {
                continue;
            };
            let link = *link;
            let out = self.drive.link_out(link);
            if out.is_empty() {
                continue;
            }
            match poll_write_out(w, out, cx) {
                Poll::Ready(Ok(n)) => {
                    self.drive.link_written(link, n);
                    progress = true;
                }
                Poll::Ready(Err(e)) => {
                    let why = format!("write to server failed: {e}");
                    self.drive.handle_link_failed(self.now(), link, &why);
                    progress = true;
                }
                Poll::Pending => {}
            }
        }
        progress
    }

    fn poll_reads(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        for i in 0..self.links.len() {
            let LinkIo::Up(link, r, _) = &mut self.links[i] else {
                continue;
            };
            let link = *link;
            let Some(buf) = self.drive.link_read_buf(link) else {
                continue;
            };
            match tokio_util::io::poll_read_buf(Pin::new(r), cx, buf) {
                Poll::Ready(Ok(n)) => {
                    self.drive.handle_link_read(self.now(), link, n);
                    progress = true;
                }
                Poll::Ready(Err(e)) => {
                    let why = format!("read from server failed: {e}");
                    self.drive.handle_link_failed(self.now(), link, &why);
                    progress = true;
                }
                Poll::Pending => {}
            }
        }
        if let Some(buf) = self.drive.client_read_buf() {
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.client_r), cx, buf) {
                Poll::Ready(Ok(n)) => {
                    self.drive.handle_client_read(self.now(), n);
                    progress = true;
                }
                Poll::Ready(Err(e)) => {
                    debug!("[{}] read from client failed: {e}", self.client);
                    self.drive.handle_client_gone(self.now());
                    progress = true;
                }
                Poll::Pending => {}
            }
        }
        progress
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(mut at) = self.drive.poll_timeout() else {
            self.armed = None;
            return false;
        };
        if let Some(fired) = self.fired {
            // A deadline that did not move after firing is retried a millisecond later.
            at = at.max(fired + Duration::from_millis(1));
        }
        if self.armed != Some(at) {
            let deadline = self.epoch + Duration::from_nanos(at.as_nanos());
            self.sleep.as_mut().reset(deadline);
            self.armed = Some(at);
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.armed = None;
        self.fired = Some(at);
        self.drive.handle_timeout(self.now());
        true
    }
}

/// Write as much of `out` as the socket takes in one vectored write.
fn poll_write_out(w: &mut Writer, out: &OutQueue, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
    let mut n = 0;
    for chunk in out.chunks().take(MAX_SLICES) {
        slices[n] = IoSlice::new(chunk);
        n += 1;
    }
    match Pin::new(w).poll_write_vectored(cx, &slices[..n]) {
        Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
        other => other,
    }
}
