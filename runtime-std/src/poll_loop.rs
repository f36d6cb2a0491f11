//! The session loop every async runtime shares: one task owns the client's streams and every
//! link's, polls whichever the drive wants read or written, dials when it asks, and sleeps on a
//! timer until its timeouts. Every decision (stale dials, failed writes, backpressure) is the
//! drive's; this loop only moves bytes, and a runtime supplies only what differs between
//! async ecosystems ([`Runtime`]: its streams, a timer, a dial). It needs nothing but std.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use persist_core::drive::{self, Action, Drive, OutQueue};
use persist_core::{Config, Event, Instant, LinkId};
use tracing::debug;

use crate::metrics::SessionMetrics;
use crate::{Addr, Admitted, ProxyConfig, Servers};

/// Longest a single dial may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Slices handed to one vectored write.
const MAX_SLICES: usize = 64;
/// Rounds of work one poll may do before yielding to other tasks.
const ROUNDS_PER_POLL: usize = 64;

/// A dial under way.
pub type Dialing<R> = Pin<
    Box<dyn Future<Output = io::Result<(<R as Runtime>::Reader, <R as Runtime>::Writer)>> + Send>,
>;

/// What an async runtime supplies to the session loop.
pub trait Runtime: Sized + 'static {
    type Reader: Send + 'static;
    type Writer: Send + 'static;
    type Timer: Send + 'static;

    /// Read what has arrived into `buf`'s spare capacity (growing it as the runtime needs); 0
    /// is the end of the stream.
    fn poll_read(
        r: &mut Self::Reader,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>>;
    fn poll_write_vectored(
        w: &mut Self::Writer,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>>;
    fn poll_flush(w: &mut Self::Writer, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// A timer that is not set.
    fn timer() -> Self::Timer;
    fn set_timer(t: &mut Self::Timer, at: std::time::Instant);
    fn poll_timer(t: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()>;
    /// Connect to `addr` (tuned for an upstream link), giving up after [`DIAL_TIMEOUT`].
    fn dial(addr: &Addr) -> Dialing<Self>;
}

enum LinkIo<R: Runtime> {
    Dialing(LinkId, Dialing<R>),
    Up(LinkId, R::Reader, R::Writer),
}

impl<R: Runtime> LinkIo<R> {
    fn id(&self) -> LinkId {
        match self {
            LinkIo::Dialing(id, _) | LinkIo::Up(id, ..) => *id,
        }
    }
}

/// One session's streams and timer, driven by [`poll_run`](Self::poll_run).
pub struct SessionLoop<R: Runtime> {
    drive: Drive,
    client: String,
    /// The servers it may dial, and their names.
    servers: Servers,
    client_r: R::Reader,
    client_w: R::Writer,
    /// Bytes went to the client since its stream was last flushed (a buffering stream such as
    /// stdout holds them until flushed; for sockets a flush does nothing).
    client_unflushed: bool,
    links: Vec<LinkIo<R>>,
    epoch: std::time::Instant,
    timer: R::Timer,
    /// The deadline the timer is set to, and the last one that fired (a timeout that does not
    /// move the deadline must not make the loop spin).
    armed: Option<Instant>,
    fired: Option<Instant>,
    on_event: Option<Box<dyn FnMut(Event) + Send>>,
    metrics: Option<SessionMetrics>,
    /// The session's place within the process's limits.
    admitted: Admitted,
    /// Whether the drive was last told the budget is spent.
    capped: bool,
}

impl<R: Runtime> SessionLoop<R> {
    /// A session for the client on these streams (`client` names it in the log), admitted
    /// within the proxy's [`limits`](crate::limits); its random choices derive from its
    /// number there, through [`drive::session_seed`].
    pub fn new(
        client_r: R::Reader,
        client_w: R::Writer,
        client: String,
        cfg: &ProxyConfig,
        admitted: Admitted,
    ) -> SessionLoop<R> {
        let number = admitted.number();
        let session_cfg = Config {
            seed: drive::session_seed(cfg.session.seed, number),
            ..cfg.session.clone()
        };
        debug!("client {client} connected; serving {}", cfg.servers);
        SessionLoop {
            drive: Drive::with_backends(
                session_cfg,
                cfg.servers.backends(),
                Instant::from_nanos(0),
            ),
            client,
            servers: cfg.servers.clone(),
            client_r,
            client_w,
            client_unflushed: false,
            links: Vec::new(),
            epoch: std::time::Instant::now(),
            timer: R::timer(),
            armed: None,
            fired: None,
            on_event: None,
            metrics: cfg
                .metrics
                .clone()
                .map(|m| SessionMetrics::new(m, cfg.servers.namer())),
            admitted,
            capped: false,
        }
    }

    /// Also hand every event to `f` (after it is logged).
    pub fn on_event(&mut self, f: impl FnMut(Event) + Send + 'static) {
        self.on_event = Some(Box::new(f));
    }

    /// The client's name in the log.
    pub fn client(&self) -> &str {
        &self.client
    }

    /// End the session: the links are dropped, and the client's writer returned to be closed.
    pub fn into_client_writer(self) -> R::Writer {
        self.client_w
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(self.epoch.elapsed().as_nanos() as u64)
    }

    /// The client's stream ended or failed: nothing more is read, written or flushed on it.
    fn client_gone(&mut self) {
        self.client_unflushed = false;
        self.drive.handle_client_gone(self.now());
    }

    /// Run the session until it is over (false) or `stop` resolves first (true).
    pub async fn run_until(&mut self, stop: impl Future) -> bool {
        let mut stop = std::pin::pin!(stop);
        std::future::poll_fn(|cx| {
            if stop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(true);
            }
            self.poll_run(cx).map(|()| false)
        })
        .await
    }

    /// Work until nothing can move, then wait (every branch below either consumed or produced
    /// something, or registered for a wake-up). Ready when the session is over.
    pub fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..ROUNDS_PER_POLL {
            self.carry_out_actions();
            self.log_events();
            if self.drive.is_finished() {
                return Poll::Ready(());
            }
            // The budget's verdict reaches the drive while it is spent, and once when it stops
            // being so (no clock read per round while it is free).
            let cap = self.admitted.report(self.drive.memory_held());
            if cap.is_some() || self.capped {
                self.capped = cap.is_some();
                self.drive.set_memory_cap(self.now(), cap);
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
                Action::Dial { link, backend } => {
                    let dial = R::dial(&self.servers.get(backend).addr);
                    self.links.push(LinkIo::Dialing(link, dial));
                }
                Action::CloseLink { link } => self.links.retain(|l| l.id() != link),
            }
        }
    }

    fn log_events(&mut self) {
        while let Some(e) = self.drive.poll_event() {
            self.servers.log_event(&e, &self.client, &self.drive);
            if let Some(m) = &mut self.metrics {
                m.event(&e, std::time::Instant::now());
            }
            if let Some(f) = &mut self.on_event {
                f(e);
            }
        }
        if let Some(m) = &mut self.metrics {
            if self.drive.session().is_up() {
                m.serving(std::time::Instant::now());
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
            match poll_write_out::<R>(&mut self.client_w, self.drive.client_out(), cx) {
                Poll::Ready(Ok(n)) => {
                    if let Some(m) = &self.metrics {
                        m.wrote_to_client(n);
                    }
                    self.drive.client_written(self.now(), n);
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
            match R::poll_flush(&mut self.client_w, cx) {
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
            let LinkIo::Up(link, _, w) = &mut self.links[i] else {
                continue;
            };
            let link = *link;
            let out = self.drive.link_out(link);
            if out.is_empty() {
                continue;
            }
            match poll_write_out::<R>(w, out, cx) {
                Poll::Ready(Ok(n)) => {
                    if let Some(m) = &self.metrics {
                        m.wrote_to_server(n);
                    }
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
            match R::poll_read(r, cx, buf) {
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
            match R::poll_read(&mut self.client_r, cx, buf) {
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
            if let Some((reason, _)) = self.drive.next_timer() {
                tracing::trace!("[{}] next deadline: {reason:?}", self.client);
            }
            let deadline = self.epoch + Duration::from_nanos(at.as_nanos());
            R::set_timer(&mut self.timer, deadline);
            self.armed = Some(at);
        }
        if R::poll_timer(&mut self.timer, cx).is_pending() {
            return false;
        }
        self.armed = None;
        self.fired = Some(at);
        self.drive.handle_timeout(self.now());
        true
    }
}

/// Write as much of `out` as the stream takes in one vectored write.
fn poll_write_out<R: Runtime>(
    w: &mut R::Writer,
    out: &OutQueue,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
    let mut n = 0;
    for chunk in out.chunks().take(MAX_SLICES) {
        slices[n] = IoSlice::new(chunk);
        n += 1;
    }
    match R::poll_write_vectored(w, cx, &slices[..n]) {
        Poll::Ready(Ok(0)) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
        Poll::Ready(Ok(written)) => Poll::Ready(Ok(written.min(out.len()))),
        other => other,
    }
}
