//! One client's session on blocking threads: a session thread owns the [`Drive`] and writes
//! every socket; a reader thread per socket (the client's, each live link's) and a thread per
//! dial send what they get over one channel. The session thread feeds those inputs to the
//! drive, writes what it queued, and waits on the channel until the drive's next timeout.
//! Every decision (stale dials, failed writes, backpressure) is the drive's; this file only
//! moves bytes.

use std::io::{self, IoSlice};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use persist_core::drive::{self, Action, Drive, OutQueue, READ_CHUNK};
use persist_core::{BackendId, Config, Instant, LinkId};
use tracing::{debug, info, warn};

use crate::metrics::SessionMetrics;
use crate::net::{self, Stream};
use crate::{ProxyConfig, Servers};

/// Slices handed to one vectored write.
const MAX_SLICES: usize = 64;
/// Inputs taken in one go before writing what they produced.
const MAX_BATCH: usize = 64;
/// Inputs queued for a session thread at most: a reader that gets ahead of it waits (each
/// input is at most a read chunk, so this bounds what a session's readers hold).
pub(crate) const INPUTS_QUEUED: usize = 1;
/// Stack of a reader or dial thread (they only read into a heap buffer, or connect).
const HELPER_STACK: usize = 256 * 1024;

/// What the helper threads (and the proxy) tell a session thread.
pub(crate) enum Input {
    ClientBytes(Vec<u8>),
    /// The client's stream ended (`None`) or failed. The client reader's last message.
    ClientGone(Option<io::Error>),
    LinkBytes(LinkId, Vec<u8>),
    /// The link's stream ended or failed, and why. Its reader's last message.
    LinkGone(LinkId, String),
    /// A dial finished. Its thread's last message.
    Dialed(LinkId, io::Result<Stream>),
    /// The proxy is shutting down.
    Shutdown,
}

/// Whether the client reader may read: the session thread opens and closes it as
/// [`Drive::wants_client_read`] says, and stops it when the session ends.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum GateState {
    #[default]
    Closed,
    Open,
    Stopped,
}

impl GateState {
    fn open_if(open: bool) -> GateState {
        match open {
            true => GateState::Open,
            false => GateState::Closed,
        }
    }
}

impl Gate {
    /// A gate open or closed.
    fn new(open: bool) -> Gate {
        let gate = Gate::default();
        gate.set(GateState::open_if(open));
        gate
    }

    fn set(&self, to: GateState) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if *state != GateState::Stopped {
            *state = to;
        }
        self.changed.notify_all();
    }

    /// Wait while closed; true once open, false once stopped.
    fn wait_open(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while *state == GateState::Closed {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *state == GateState::Open
    }
}

/// A link the drive knows of (or forgot, with its reader not yet finished).
struct LinkIo {
    id: LinkId,
    /// Whether its reader may read: closed while the drive holds the links (replies wait for
    /// the client).
    gate: Arc<Gate>,
    /// `None` once the drive said to close it.
    stream: Option<Arc<Stream>>,
    /// `None` once it sent its last message and was joined.
    reader: Option<JoinHandle<()>>,
}

/// One session's threads and sockets.
struct SessionIo {
    drive: Drive,
    /// Checked every round: a shutdown must not wait behind queued input.
    shutdown: crate::Shutdown,
    client: String,
    servers: Servers,
    client_r: Arc<Stream>,
    client_w: Arc<Stream>,
    client_reader: Option<JoinHandle<()>>,
    gate: Arc<Gate>,
    gate_open: bool,
    links: Vec<LinkIo>,
    dials: Vec<(LinkId, JoinHandle<()>)>,
    tx: SyncSender<Input>,
    epoch: std::time::Instant,
    /// The last deadline that fired: one that does not move afterwards is retried a
    /// millisecond later, not at once.
    fired: Option<Instant>,
    metrics: Option<SessionMetrics>,
    /// Whether the link readers' gates are open (the drive does not hold the links).
    links_open: bool,
    /// Where the helpers' inputs arrive; dropped first when the session ends, so a helper
    /// waiting to send is let go.
    rx: Option<Receiver<Input>>,
    /// The session's place within the process's limits.
    admitted: crate::Admitted,
}

/// Serve one client until it leaves, is expelled, or [`Input::Shutdown`] arrives on `rx`.
/// `admitted` is its place within the proxy's limits, and numbers it among the proxy's
/// sessions (its random choices derive from that).
pub(crate) fn serve_client(
    client: net::Accepted,
    cfg: ProxyConfig,
    admitted: crate::Admitted,
    tx: SyncSender<Input>,
    rx: Receiver<Input>,
    shutdown: crate::Shutdown,
) {
    let epoch = std::time::Instant::now();
    let number = admitted.number();
    let session_cfg = Config {
        seed: drive::session_seed(cfg.session.seed, number),
        ..cfg.session
    };
    debug!("client {} connected; serving {}", client.name, cfg.servers);
    let client_r = Arc::new(client.reader);
    let client_w = match client.writer {
        Some(w) => Arc::new(w),
        None => client_r.clone(),
    };
    let gate = Arc::new(Gate::default());
    let metrics = cfg
        .metrics
        .clone()
        .map(|m| SessionMetrics::new(m, cfg.servers.namer()));
    let mut io = SessionIo {
        drive: Drive::with_backends(session_cfg, cfg.servers.backends(), Instant::from_nanos(0)),
        shutdown,
        servers: cfg.servers,
        client: client.name,
        client_r: client_r.clone(),
        client_w,
        client_reader: None,
        gate: gate.clone(),
        gate_open: false,
        links: Vec::new(),
        dials: Vec::new(),
        tx: tx.clone(),
        epoch,
        fired: None,
        metrics,
        links_open: true,
        rx: Some(rx),
        admitted,
    };
    match spawn_helper(format!("p9persist-client-{number}"), move || {
        read_client(&client_r, &gate, &tx)
    }) {
        Ok(h) => io.client_reader = Some(h),
        Err(e) => {
            warn!(
                "[{}] cannot start a thread to read the client: {e}",
                io.client
            );
            io.drive.handle_client_gone(io.now());
        }
    }
    if io.run() {
        info!("[{}] shutting down", io.client);
    }
    // Dropping `io` ends every connection and joins the readers.
}

fn spawn_helper(name: String, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(name)
        .stack_size(HELPER_STACK)
        .spawn(f)
}

/// The client reader: read while the gate is open, until the stream ends.
fn read_client(stream: &Stream, gate: &Gate, tx: &SyncSender<Input>) {
    let mut buf = vec![0; READ_CHUNK];
    while gate.wait_open() {
        let input = match stream.read(&mut buf) {
            Ok(0) => Input::ClientGone(None),
            Ok(n) => Input::ClientBytes(buf[..n].to_vec()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Input::ClientGone(Some(e)),
        };
        let last = matches!(input, Input::ClientGone(_));
        if tx.send(input).is_err() || last {
            return;
        }
    }
}

/// A link reader: read while the gate is open, until the stream ends or fails.
fn read_link(link: LinkId, stream: &Stream, gate: &Gate, tx: &SyncSender<Input>) {
    let mut buf = vec![0; READ_CHUNK];
    while gate.wait_open() {
        let input = match stream.read(&mut buf) {
            Ok(0) => Input::LinkGone(link, "the server closed the connection".into()),
            Ok(n) => Input::LinkBytes(link, buf[..n].to_vec()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Input::LinkGone(link, format!("read from server failed: {e}")),
        };
        let last = matches!(input, Input::LinkGone(..));
        if tx.send(input).is_err() || last {
            return;
        }
    }
    // Stopped at the gate: the link was closed; its last message all the same.
    let _ = tx.send(Input::LinkGone(link, "closed".into()));
}

/// Join a helper that sent its last message (so it is returning now).
fn join(handle: JoinHandle<()>) {
    if handle.join().is_err() {
        warn!("a helper thread panicked");
    }
}

impl SessionIo {
    fn now(&self) -> Instant {
        Instant::from_nanos(self.epoch.elapsed().as_nanos() as u64)
    }

    /// Work until the drive is finished (false) or shutdown comes (true). Each round either
    /// consumes an input, writes, fires a timer, or waits: a write waits up to
    /// [`net::WRITE_TIMEOUT`], the channel until the next deadline.
    fn run(&mut self) -> bool {
        let Some(rx) = self.rx.take() else {
            return true;
        };
        let shutdown = self.run_on(&rx);
        self.rx = Some(rx);
        shutdown
    }

    fn run_on(&mut self, rx: &Receiver<Input>) -> bool {
        loop {
            if self.shutdown.is_shutdown() {
                return true;
            }
            self.settle();
            if self.drive.is_finished() {
                return false;
            }
            let busy = self.write_all();
            self.settle();
            if self.drive.is_finished() {
                return false;
            }
            // Queues left to write (or written to just now): look at inputs without waiting,
            // then write again; the write is what waits.
            let wait = if busy {
                Some(Duration::ZERO)
            } else {
                self.deadline().map(|at| at.since(self.now()))
            };
            let first = match wait {
                Some(d) => match rx.recv_timeout(d) {
                    Ok(input) => Some(input),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return true,
                },
                None => match rx.recv() {
                    Ok(input) => Some(input),
                    Err(_) => return true,
                },
            };
            if let Some(input) = first {
                if self.handle(input) {
                    return true;
                }
                for _ in 0..MAX_BATCH {
                    // A gate to close (the drive holds all it may): close it before taking
                    // more, or the readers would keep reading while the batch lasts.
                    if self.gates_stale() {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(input) => {
                            if self.handle(input) {
                                return true;
                            }
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => return true,
                    }
                }
            }
            if let Some(at) = self.deadline() {
                let now = self.now();
                if now >= at {
                    self.fired = Some(at);
                    self.drive.handle_timeout(now);
                }
            }
        }
    }

    /// When to call the drive's timeout next: its own deadline, but at least a millisecond
    /// after the last one fired.
    fn deadline(&self) -> Option<Instant> {
        let at = self.drive.poll_timeout()?;
        Some(match self.fired {
            Some(fired) => at.max(fired + Duration::from_millis(1)),
            None => at,
        })
    }

    /// Whether a gate is open that the drive would have closed.
    fn gates_stale(&self) -> bool {
        (self.gate_open && !self.drive.wants_client_read())
            || (self.links_open && self.drive.links_held())
    }

    /// Carry out the drive's actions, log its events, and open or close the gates.
    fn settle(&mut self) {
        while let Some(action) = self.drive.poll_action() {
            match action {
                Action::Dial { link, backend } => self.dial(link, backend),
                Action::CloseLink { link } => self.close_link(link),
            }
        }
        while let Some(e) = self.drive.poll_event() {
            self.servers.log_event(&e, &self.client, &self.drive);
            if let Some(m) = &mut self.metrics {
                m.event(&e, std::time::Instant::now());
            }
        }
        if let Some(m) = &mut self.metrics {
            if self.drive.session().is_up() {
                m.serving(std::time::Instant::now());
            }
        }
        let cap = self.admitted.report(self.drive.memory_held());
        self.drive.set_memory_cap(self.now(), cap);
        let want = self.drive.wants_client_read();
        if want != self.gate_open {
            self.gate_open = want;
            self.gate.set(GateState::open_if(want));
        }
        let open = !self.drive.links_held();
        if open != self.links_open {
            self.links_open = open;
            for l in &self.links {
                l.gate.set(GateState::open_if(open));
            }
        }
    }

    fn dial(&mut self, link: LinkId, backend: BackendId) {
        let addr = self.servers.get(backend).addr.clone();
        let tx = self.tx.clone();
        let spawned = thread::Builder::new()
            .name(format!("p9persist-dial-{}", link.0))
            .spawn(move || {
                let _ = tx.send(Input::Dialed(link, net::dial(&addr)));
            });
        match spawned {
            Ok(h) => self.dials.push((link, h)),
            Err(e) => {
                let why = format!("cannot start a thread to dial: {e}");
                self.drive.handle_dial_done(self.now(), link, Err(&why));
            }
        }
    }

    /// The drive forgot `link`: end its connection (its reader then sends its last message).
    /// A dial still under way is abandoned: its result will be refused.
    fn close_link(&mut self, link: LinkId) {
        let Some(i) = self.links.iter().position(|l| l.id == link) else {
            return;
        };
        // A reader waiting at its gate is let go too.
        self.links[i].gate.set(GateState::Stopped);
        if let Some(s) = self.links[i].stream.take() {
            s.close();
        }
        if self.links[i].reader.is_none() {
            self.links.remove(i);
        }
    }

    /// Take in one input; true for shutdown.
    fn handle(&mut self, input: Input) -> bool {
        let now = self.now();
        match input {
            Input::ClientBytes(b) => self.drive.handle_client_bytes(now, &b),
            Input::ClientGone(why) => {
                if let Some(e) = why {
                    debug!("[{}] read from client failed: {e}", self.client);
                }
                if let Some(h) = self.client_reader.take() {
                    join(h);
                }
                self.drive.handle_client_gone(now);
            }
            Input::LinkBytes(link, b) => self.drive.handle_link_bytes(now, link, &b),
            Input::LinkGone(link, why) => {
                if let Some(i) = self.links.iter().position(|l| l.id == link) {
                    if let Some(h) = self.links[i].reader.take() {
                        join(h);
                    }
                    if self.links[i].stream.is_none() {
                        self.links.remove(i);
                    }
                }
                self.drive.handle_link_failed(now, link, &why);
            }
            Input::Dialed(link, result) => {
                if let Some(i) = self.dials.iter().position(|(l, _)| *l == link) {
                    join(self.dials.swap_remove(i).1);
                }
                self.dialed(now, link, result);
            }
            Input::Shutdown => return true,
        }
        false
    }

    fn dialed(&mut self, now: Instant, link: LinkId, result: io::Result<Stream>) {
        let stream = match result {
            Ok(s) => s,
            Err(e) => {
                self.drive.handle_dial_done(now, link, Err(&e.to_string()));
                return;
            }
        };
        if !self.drive.handle_dial_done(now, link, Ok(())) {
            stream.close(); // the session gave up on this dial
            return;
        }
        let stream = Arc::new(stream);
        let gate = Arc::new(Gate::new(self.links_open));
        let (s, g, tx) = (stream.clone(), gate.clone(), self.tx.clone());
        match spawn_helper(format!("p9persist-link-{}", link.0), move || {
            read_link(link, &s, &g, &tx)
        }) {
            Ok(h) => self.links.push(LinkIo {
                id: link,
                gate,
                stream: Some(stream),
                reader: Some(h),
            }),
            Err(e) => {
                self.links.push(LinkIo {
                    id: link,
                    gate,
                    stream: Some(stream),
                    reader: None,
                });
                let why = format!("cannot start a thread to read the server: {e}");
                self.drive.handle_link_failed(now, link, &why);
            }
        }
    }

    /// One write to each peer with bytes queued. True if any write moved bytes or left some
    /// queued (look again soon); a write fails the peer as the drive says.
    fn write_all(&mut self) -> bool {
        let mut busy = false;
        if !self.drive.client_out().is_empty() {
            busy = true;
            match write_out(&self.client_w, self.drive.client_out()) {
                Ok(n) => {
                    if let Some(m) = &self.metrics {
                        m.wrote_to_client(n);
                    }
                    self.drive.client_written(self.now(), n)
                }
                Err(e) => {
                    debug!("[{}] write to client failed: {e}", self.client);
                    self.drive.handle_client_gone(self.now());
                }
            }
        }
        for i in 0..self.links.len() {
            let link = self.links[i].id;
            let Some(stream) = self.links[i].stream.clone() else {
                continue;
            };
            if self.drive.link_out(link).is_empty() {
                continue;
            }
            busy = true;
            match write_out(&stream, self.drive.link_out(link)) {
                Ok(n) => {
                    if let Some(m) = &self.metrics {
                        m.wrote_to_server(n);
                    }
                    self.drive.link_written(link, n)
                }
                Err(e) => {
                    let why = format!("write to server failed: {e}");
                    self.drive.handle_link_failed(self.now(), link, &why);
                }
            }
        }
        busy
    }
}

impl Drop for SessionIo {
    /// The session is over (or its thread panicked): stop every helper, end every connection,
    /// join the readers (a socket's reader returns once its socket is shut down; standard
    /// input's cannot be woken and is left to end with the process). Dials under way are left
    /// to finish on their own.
    fn drop(&mut self) {
        // Helpers blocked on a full queue get an error and return.
        self.rx = None;
        self.gate.set(GateState::Stopped);
        self.client_w.close();
        self.client_r.close();
        for l in &mut self.links {
            l.gate.set(GateState::Stopped);
            if let Some(s) = l.stream.take() {
                s.close();
            }
        }
        if let Some(h) = self.client_reader.take() {
            if self.client_r.is_socket() || h.is_finished() {
                join(h);
            }
        }
        for l in self.links.drain(..) {
            if let Some(h) = l.reader {
                join(h);
            }
        }
        self.dials.clear();
    }
}

/// One vectored write of what `out` holds (it is not empty): the bytes written, 0 if the peer
/// took none within [`net::WRITE_TIMEOUT`].
fn write_out(stream: &Stream, out: &OutQueue) -> io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
    let mut n = 0;
    for chunk in out.chunks().take(MAX_SLICES) {
        slices[n] = IoSlice::new(chunk);
        n += 1;
    }
    match stream.write_vectored(&slices[..n]) {
        Ok(0) => Err(io::ErrorKind::WriteZero.into()),
        Ok(written) => Ok(written),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(0)
        }
        Err(e) => Err(e),
    }
}
