//! Drives one client connection through a persist-core [`Drive`] on futures-io: one task owns
//! the client's halves and every link's, polls whichever the drive wants read or written, dials
//! when it asks, and sleeps on an async-io timer until its timeouts. Every decision (stale
//! dials, failed writes, backpressure) is the drive's; this file only moves bytes.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use async_io::Timer;
use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use persist_core::drive::{self, Action, Drive, OutQueue, READ_CHUNK};
use persist_core::{BackendId, Config, Instant, LinkId};
use tracing::{debug, info};

use crate::net::{self, Reader, Writer};
use crate::{Addr, ProxyConfig, Shutdown};

/// Longest a single dial may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Slices handed to one vectored write.
const MAX_SLICES: usize = 64;
/// Rounds of work one poll may do before yielding to other tasks.
const ROUNDS_PER_POLL: usize = 64;
/// The smallest read: the part of a read buffer zeroed before each read adapts between this
/// and [`READ_CHUNK`] (futures-io reads into initialized memory, and zeroing 64 KiB for every
/// poll of a stream that has a few bytes, or none, would cost more than the read).
const MIN_READ: usize = 4 * 1024;
/// How long a session that ends may spend closing the client's stream (flushing stdout, say).
const CLOSE_GRACE: Duration = Duration::from_millis(300);

type Dialing = Pin<Box<dyn Future<Output = io::Result<(Reader, Writer)>> + Send>>;

enum LinkIo {
    Dialing(LinkId, Dialing),
    Up(LinkId, Reader, Writer, ReadSize),
}

impl LinkIo {
    fn id(&self) -> LinkId {
        match self {
            LinkIo::Dialing(id, _) | LinkIo::Up(id, ..) => *id,
        }
    }
}

/// One session's streams and timer.
struct SessionIo {
    drive: Drive,
    client: String,
    backend: Addr,
    /// `backend` as the log writes it.
    backend_name: String,
    client_r: Reader,
    client_read: ReadSize,
    client_w: Writer,
    /// Bytes were written to the client's stream since it was last flushed; it is flushed
    /// whenever its queue runs empty (streams that buffer, like stdout, hold bytes until
    /// flushed; for sockets a flush does nothing).
    client_unflushed: bool,
    links: Vec<LinkIo>,
    epoch: std::time::Instant,
    timer: Timer,
    /// The deadline the timer is set to, and the last one that fired (a timeout that does not
    /// move the deadline must not make the loop spin).
    armed: Option<Instant>,
    fired: Option<Instant>,
}

/// Serve one client until it leaves, is expelled, or `shutdown` is called. `client` names it
/// in the log; `number` tells this session from the proxy's others (its random choices derive
/// from it, through [`drive::session_seed`]).
pub async fn serve_client(
    client_r: Reader,
    client_w: Writer,
    client: String,
    cfg: ProxyConfig,
    number: u64,
    shutdown: Shutdown,
) {
    let epoch = std::time::Instant::now();
    let session_cfg = Config {
        seed: drive::session_seed(cfg.session.seed, number),
        ..cfg.session
    };
    debug!("client {client} connected; serving {}", cfg.backend);
    let mut io = SessionIo {
        drive: Drive::new(session_cfg, BackendId(0), Instant::from_nanos(0)),
        client,
        backend_name: cfg.backend.to_string(),
        backend: cfg.backend,
        client_r,
        client_read: ReadSize::default(),
        client_w,
        client_unflushed: false,
        links: Vec::new(),
        epoch,
        timer: Timer::never(),
        armed: None,
        fired: None,
    };
    let stopped = {
        let mut stop = pin!(shutdown.wait());
        std::future::poll_fn(|cx| {
            if stop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(true);
            }
            io.poll_run(cx).map(|()| false)
        })
        .await
    };
    if stopped {
        info!("[{}] shutting down", io.client);
    }
    // The links go first; the client's stream is closed (flushed) within a bound, so neither a
    // stuck stdout nor anything else keeps a finished session alive.
    io.links.clear();
    let close = async {
        let _ = io.client_w.close().await;
    };
    futures_lite::future::or(close, async {
        Timer::after(CLOSE_GRACE).await;
    })
    .await;
}

impl SessionIo {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.epoch.elapsed().as_nanos() as u64)
    }

    /// The client's stream ended or failed: nothing more is read, written or flushed on it
    /// (the close at the end still tries).
    fn client_gone(&mut self) {
        self.client_unflushed = false;
        self.drive.handle_client_gone(self.now());
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
        // Still busy: let other tasks run, and come back at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn carry_out_actions(&mut self) {
        while let Some(action) = self.drive.poll_action() {
            match action {
                Action::Dial { link, .. } => {
                    let addr = self.backend.clone();
                    let dial = async move {
                        let timeout = async {
                            Timer::after(DIAL_TIMEOUT).await;
                            Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                format!("no answer within {DIAL_TIMEOUT:?}"),
                            ))
                        };
                        futures_lite::future::or(net::dial(&addr), timeout).await
                    };
                    self.links.push(LinkIo::Dialing(link, Box::pin(dial)));
                }
                Action::CloseLink { link } => self.links.retain(|l| l.id() != link),
            }
        }
    }

    fn log_events(&mut self) {
        while let Some(e) = self.drive.poll_event() {
            runtime_std::log_sentence(&drive::sentence(&e, &self.client, &self.backend_name));
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
                    self.links[i] = LinkIo::Up(link, r, w, ReadSize::default());
                    i += 1;
                }
                // A dial the session gave up on meanwhile: drop the connection.
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
                    self.client_gone();
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
                    self.client_gone();
                    progress = true;
                }
                Poll::Pending => {}
            }
        }
        for i in 0..self.links.len() {
            let LinkIo::Up(link, _, w, _) = &mut self.links[i] else {
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
            let LinkIo::Up(link, r, _, size) = &mut self.links[i] else {
                continue;
            };
            let link = *link;
            let Some(buf) = self.drive.link_read_buf(link) else {
                continue;
            };
            match poll_read_into(r, buf, size, cx) {
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
            match poll_read_into(&mut self.client_r, buf, &mut self.client_read, cx) {
                Poll::Ready(Ok(0)) => {
                    debug!("[{}] the client closed its stream", self.client);
                    self.client_gone();
                    progress = true;
                }
                Poll::Ready(Ok(n)) => {
                    self.drive.handle_client_read(self.now(), n);
                    progress = true;
                }
                Poll::Ready(Err(e)) => {
                    debug!("[{}] read from client failed: {e}", self.client);
                    self.client_gone();
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
            self.timer
                .set_at(self.epoch + Duration::from_nanos(at.as_nanos()));
            self.armed = Some(at);
        }
        if Pin::new(&mut self.timer).poll(cx).is_pending() {
            return false;
        }
        self.armed = None;
        self.fired = Some(at);
        self.drive.handle_timeout(self.now());
        true
    }
}

/// Read what has arrived straight into `buf`'s tail: futures-io reads into initialized memory,
/// so the tail is zeroed first and cut back to what was read.
fn poll_read_into(
    r: &mut Reader,
    buf: &mut BytesMut,
    size: &mut ReadSize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let len = buf.len();
    let want = size.0;
    buf.resize(len + want, 0);
    let res = Pin::new(r).poll_read(cx, &mut buf[len..]);
    let n = match &res {
        Poll::Ready(Ok(n)) => (*n).min(want),
        _ => 0,
    };
    buf.truncate(len + n);
    if res.is_ready() {
        size.update(n);
    }
    res.map_ok(|_| n)
}

/// How much one stream's next read takes: doubled after a read that filled it, halved after
/// one that used a quarter or less, between [`MIN_READ`] and [`READ_CHUNK`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ReadSize(usize);

impl Default for ReadSize {
    fn default() -> ReadSize {
        ReadSize(MIN_READ)
    }
}

impl ReadSize {
    fn update(&mut self, read: usize) {
        if read >= self.0 {
            self.0 = (self.0 * 2).min(READ_CHUNK);
        } else if read <= self.0 / 4 {
            self.0 = (self.0 / 2).max(MIN_READ);
        }
    }
}

/// Write as much of `out` as the stream takes in one vectored write.
fn poll_write_out(w: &mut Writer, out: &OutQueue, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
    let mut n = 0;
    for chunk in out.chunks().take(MAX_SLICES) {
        slices[n] = IoSlice::new(chunk);
        n += 1;
    }
    match Pin::new(w).poll_write_vectored(cx, &slices[..n]) {
        Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
        Poll::Ready(Ok(written)) => Poll::Ready(Ok(written.min(out.len()))),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_size_follows_the_traffic() {
        let mut size = ReadSize::default();
        assert_eq!(size.0, MIN_READ);
        // Bulk: full reads double it up to READ_CHUNK.
        for _ in 0..10 {
            let full = size.0;
            size.update(full);
        }
        assert_eq!(size.0, READ_CHUNK);
        // Partly filled reads keep it.
        size.update(READ_CHUNK / 2);
        assert_eq!(size.0, READ_CHUNK);
        // Small frames: it shrinks back, never below MIN_READ.
        for _ in 0..10 {
            size.update(100);
        }
        assert_eq!(size.0, MIN_READ);
        size.update(0);
        assert_eq!(size.0, MIN_READ);
    }

    #[test]
    fn reads_go_straight_into_the_buffer() {
        let mut r: Reader = Box::new(futures_lite::io::Cursor::new(vec![7u8; 10_000]));
        let mut buf = BytesMut::from(&b"head"[..]);
        let mut size = ReadSize::default();
        let mut read = || {
            futures_lite::future::block_on(std::future::poll_fn(|cx| {
                poll_read_into(&mut r, &mut buf, &mut size, cx)
            }))
            .unwrap()
        };
        assert_eq!(read(), MIN_READ);
        // The full read doubled the next one; the rest of the data fits in it.
        assert_eq!(read(), 10_000 - MIN_READ);
        // The end of the stream reads 0 and leaves the buffer as it was.
        assert_eq!(read(), 0);
        assert_eq!(buf.len(), 4 + 10_000);
        assert_eq!(&buf[..4], b"head");
        assert!(buf[4..].iter().all(|&b| b == 7));
    }
}
