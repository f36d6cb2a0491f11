//! The drive layer: one [`Session`] with its byte streams — the client's and each link's —
//! framed, backpressured and batched, sans-IO.
//!
//! Everything a runtime would otherwise have to decide lives here, where the simulation and the
//! fuzzer reach it: which link a dial result or a byte belongs to (stale ones are dropped, never
//! replacing the live link), what a failed write does (the link is closed, its pending frames
//! discarded, the session redials), when to read the client (frames already received are handed
//! over as soon as the session wants input again), and how events read in a log. A runtime
//! supplies only sockets, timers and its own wait:
//!
//! ```no_run
//! # use persist_core::*;
//! # use persist_core::drive::*;
//! # fn now() -> Instant { Instant::from_nanos(0) }
//! # fn read_client(_buf: &mut bytes::BytesMut) -> usize { 0 }
//! # fn write_client(_chunks: &[&[u8]]) -> usize { 0 }
//! let mut drive = Drive::new(Config::default(), BackendId(0), now());
//! while !drive.is_finished() {
//!     while let Some(action) = drive.poll_action() {
//!         match action {
//!             Action::Dial { .. } => { /* connect; later: drive.handle_dial_done(now(), link, result) */ }
//!             Action::CloseLink { .. } => { /* drop that socket */ }
//!         }
//!     }
//!     while let Some(event) = drive.poll_event() {
//!         let line = sentence(&event, "client", "server");
//!         eprintln!("{line}");
//!     }
//!     // Write what is queued (as much as the socket takes), read what the drive wants ...
//!     let chunks: Vec<&[u8]> = drive.client_out().chunks().collect();
//!     let n = write_client(&chunks);
//!     drive.client_written(now(), n);
//!     if let Some(buf) = drive.client_read_buf() {
//!         let n = read_client(buf);
//!         drive.handle_client_read(now(), n);
//!     }
//!     // ... and, the same way, each link; sleep until drive.poll_timeout(), then:
//!     drive.handle_timeout(now());
//! }
//! ```

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use bytes::{Bytes, BytesMut};
use p9_core::FrameDecoder;

use crate::config::Config;
use crate::event::{BackendId, Event, LinkId, Output, Peer};
use crate::session::Session;
use crate::time::Instant;

/// Room made in a read buffer before each read that does not finish a frame whose size is
/// known (such a frame got room for all of itself, in one allocation, when its size was read,
/// so big frames arrive in few reads and are never moved).
pub const READ_CHUNK: usize = 16 * 1024;
/// Bytes queued towards a peer past which the client is not read (a peer that does not read
/// what it is sent must not make the proxy buffer without bound).
pub const OUT_HIGH_WATER: usize = 1 << 20;

/// The memory a frame of `len` bytes keeps alive while it is held: a frame is a slice of the
/// buffer it was read into, and keeps all of that buffer (at least a read chunk) in memory.
/// Every bound on held frames counts them this way.
pub fn pinned(len: usize) -> usize {
    len.max(READ_CHUNK)
}

/// What the runtime must do besides moving bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Connect to `backend`; report the outcome with [`Drive::handle_dial_done`].
    Dial { link: LinkId, backend: BackendId },
    /// Drop the connection of `link` (or abandon its dial): the drive has forgotten it.
    CloseLink { link: LinkId },
}

/// How long a session held back by the process's memory budget waits before it looks again
/// (the budget is the runtime's, shared by every session: nothing wakes it when others free).
pub const MEMORY_RECHECK: core::time::Duration = core::time::Duration::from_millis(50);

/// Frames waiting to be written to one peer, in order; the first may be partly written.
#[derive(Debug, Default)]
pub struct OutQueue {
    frames: VecDeque<Bytes>,
    /// Bytes of the first frame already written.
    offset: usize,
    /// Bytes still to write.
    len: usize,
    /// The memory the queued frames keep alive ([`pinned`]).
    charge: usize,
}

impl OutQueue {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes still to write.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The memory the queued frames keep alive, each counted as [`pinned`].
    pub fn charge(&self) -> usize {
        self.charge
    }

    /// The unwritten bytes as slices, in order: hand them to one vectored write.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        self.frames
            .iter()
            .enumerate()
            .map(|(i, f)| if i == 0 { &f[self.offset..] } else { &f[..] })
    }

    fn push(&mut self, frame: Bytes) {
        if !frame.is_empty() {
            self.len += frame.len();
            self.charge += pinned(frame.len());
            self.frames.push_back(frame);
        }
    }

    /// `n` bytes were written (at most [`len`](Self::len)).
    fn advance(&mut self, mut n: usize) {
        n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(first) = self.frames.front() else {
                break;
            };
            let left = first.len() - self.offset;
            if n >= left {
                n -= left;
                self.offset = 0;
                self.charge -= pinned(first.len());
                self.frames.pop_front();
            } else {
                self.offset += n;
                n = 0;
            }
        }
    }

    fn clear(&mut self) {
        self.frames.clear();
        self.offset = 0;
        self.len = 0;
        self.charge = 0;
    }
}

/// One byte stream: frames in, frames out.
#[derive(Debug)]
struct Stream {
    decoder: FrameDecoder,
    out: OutQueue,
}

impl Stream {
    fn new(max_size: u32) -> Stream {
        Stream {
            decoder: FrameDecoder::new(max_size),
            out: OutQueue::default(),
        }
    }
}

#[derive(Debug)]
enum LinkPhase {
    /// The dial was asked for and has not finished.
    Dialing,
    /// Connected: bytes flow.
    Up(Stream),
}

#[derive(Debug)]
struct Link {
    id: LinkId,
    phase: LinkPhase,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientState {
    /// Reading and writing.
    Open,
    /// The session expelled the client: write what is queued, read nothing more.
    Closing,
    /// Gone (end of stream or an I/O error): nothing more is read or written.
    Gone,
}

/// A [`Session`] and its byte streams. See the module docs for the loop that drives it.
pub struct Drive {
    session: Session,
    client: Stream,
    client_state: ClientState,
    /// Links dialing or up (at most a couple: the live one and perhaps one being dialed).
    links: Vec<Link>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    /// What the session was last told of the links: held (not read) or not.
    told_held: bool,
    /// The share of the process's memory budget this session may hold now, while the budget
    /// is spent (`None`: it is not), and when to look at the budget again.
    memory_cap: Option<(usize, Instant)>,
}

impl Drive {
    /// A drive for a client that just connected, served by `backend`.
    pub fn new(cfg: Config, backend: BackendId, now: Instant) -> Drive {
        Drive::with_session(Session::new(cfg, backend, now))
    }

    /// Drive a session whose backends an endpoint chooses (see [`crate::endpoint`]).
    pub fn with_backends(cfg: Config, backends: Box<dyn crate::Backends>, now: Instant) -> Drive {
        Drive::with_session(Session::with_backends(cfg, backends, now))
    }

    /// Drive a session made elsewhere (e.g. with an authenticator set).
    pub fn with_session(session: Session) -> Drive {
        let client = Stream::new(session.client_msize());
        let mut d = Drive {
            session,
            client,
            client_state: ClientState::Open,
            links: Vec::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            told_held: false,
            memory_cap: None,
        };
        d.drain_session();
        d
    }

    /// The session, for inspection.
    pub fn session(&self) -> &Session {
        &self.session
    }

    // ---- outputs ---------------------------------------------------------------------------

    /// The next dial or close to carry out. Drain after every input.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event worth logging ([`sentence`] words it). Drain after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next, if at all (while the memory
    /// budget holds the session back, at least every [`MEMORY_RECHECK`]).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let recheck = self.memory_cap.map(|(_, at)| at);
        match (self.session.poll_timeout(), recheck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next deadline and its reason (for logs: what the session is waiting for).
    pub fn next_timer(&self) -> Option<(crate::Timer, Instant)> {
        self.session.next_timer()
    }

    /// True once the session is over and everything owed to the client was written (or can no
    /// longer be): the runtime closes every socket and stops.
    pub fn is_finished(&self) -> bool {
        self.session.is_closed()
            && (self.client_state == ClientState::Gone || self.client.out.is_empty())
    }

    /// Whether a whole client frame is buffered, not yet handed to the session (it is handed
    /// over as soon as the session wants input: while it does, this stays false).
    pub fn client_frame_waiting(&self) -> bool {
        self.client.decoder.buffered() > 0 && self.client.decoder.wanted() == 0
    }

    /// What is queued for the client.
    pub fn client_out(&self) -> &OutQueue {
        &self.client.out
    }

    /// `n` bytes of [`client_out`](Self::client_out) were written at `now`.
    pub fn client_written(&mut self, now: Instant, n: usize) {
        self.client.out.advance(n);
        self.tell_held(now);
    }

    /// What is queued for `link` (empty for a link that is not up).
    pub fn link_out(&self, link: LinkId) -> &OutQueue {
        const EMPTY: &OutQueue = &OutQueue {
            frames: VecDeque::new(),
            offset: 0,
            len: 0,
            charge: 0,
        };
        match self.links.iter().find(|l| l.id == link) {
            Some(Link {
                phase: LinkPhase::Up(s),
                ..
            }) => &s.out,
            _ => EMPTY,
        }
    }

    /// `n` bytes of [`link_out`](Self::link_out) were written.
    pub fn link_written(&mut self, link: LinkId, n: usize) {
        if let Some(s) = self.link_stream(link) {
            s.out.advance(n);
        }
    }

    /// Whether the client should be read now. False while the session holds all it may, while
    /// a peer is not taking what it is sent, and once the client is closing or gone.
    pub fn wants_client_read(&self) -> bool {
        self.client_state == ClientState::Open
            && self.session.wants_client_input()
            && self.client.out.len() < self.out_limit()
            && self.links.iter().all(|l| match &l.phase {
                LinkPhase::Up(s) => s.out.len() < self.out_limit(),
                LinkPhase::Dialing => true,
            })
            && self
                .memory_cap
                .is_none_or(|(cap, _)| self.peer_held() < cap)
    }

    fn out_limit(&self) -> usize {
        OUT_HIGH_WATER.max(2 * self.session.client_msize() as usize)
    }

    /// Whether the links are not read: the replies queued for the client are at their bound
    /// (the session's `reply_max`, at least two whole frames; while the memory budget is
    /// spent, this session's share of it).
    pub fn links_held(&self) -> bool {
        let queued = self.client.out.charge();
        let own = self
            .session
            .config()
            .reply_max
            .max(2 * pinned(self.session.server_msize() as usize));
        match self.memory_cap {
            Some((cap, _)) => queued >= own.min(cap),
            None => queued >= own,
        }
    }

    /// The memory this session holds for its peers, counted as [`pinned`]: client requests
    /// held, replies queued for the client, frames queued for its links, and bytes read but
    /// not yet framed.
    pub fn peer_held(&self) -> usize {
        let links: usize = self
            .links
            .iter()
            .map(|l| match &l.phase {
                LinkPhase::Up(s) => s.out.charge() + s.decoder.buffered(),
                LinkPhase::Dialing => 0,
            })
            .sum();
        self.session.bytes_held()
            + self.client.out.charge()
            + self.client.decoder.buffered()
            + links
    }

    /// All the memory this session holds that a peer can grow: [`peer_held`](Self::peer_held)
    /// and the unsynced writes kept for replay.
    pub fn memory_held(&self) -> usize {
        self.peer_held() + self.session.replay_kept_bytes()
    }

    /// The process's memory budget is spent (`Some(share)`: this session may hold that much
    /// for its peers) or not (`None`). While it is, a session over its share reads neither its
    /// client nor, while replies wait for the client, its links; the runtime says so again at
    /// least every [`MEMORY_RECHECK`] (that deadline is in [`poll_timeout`](Self::poll_timeout)).
    pub fn set_memory_cap(&mut self, now: Instant, cap: Option<usize>) {
        self.memory_cap = cap.map(|c| (c, now + MEMORY_RECHECK));
        self.tell_held(now);
    }

    /// Tell the session whether its links are held, when that changed.
    fn tell_held(&mut self, now: Instant) {
        let held = self.links_held();
        if held != self.told_held {
            self.told_held = held;
            self.session.set_link_held(now, held);
        }
    }

    /// The buffer to read the client into (read, then call
    /// [`handle_client_read`](Self::handle_client_read)); `None` while it should not be read.
    pub fn client_read_buf(&mut self) -> Option<&mut BytesMut> {
        if !self.wants_client_read() {
            return None;
        }
        Some(self.client.decoder.read_buf_with_room(READ_CHUNK))
    }

    /// The buffer to read `link` into (read, then call
    /// [`handle_link_read`](Self::handle_link_read)); `None` for a link that is not up, and
    /// while the links are [held](Self::links_held).
    pub fn link_read_buf(&mut self, link: LinkId) -> Option<&mut BytesMut> {
        if self.links_held() {
            return None;
        }
        Some(
            self.link_stream(link)?
                .decoder
                .read_buf_with_room(READ_CHUNK),
        )
    }

    // ---- inputs ----------------------------------------------------------------------------

    /// `n` bytes were read into [`client_read_buf`](Self::client_read_buf); 0 is the end of
    /// the client's stream.
    pub fn handle_client_read(&mut self, now: Instant, n: usize) {
        if n == 0 {
            return self.handle_client_gone(now);
        }
        self.pump_client(now);
    }

    /// Bytes from the client that arrived in a buffer of the runtime's own (copied in, a frame
    /// at a time: each frame gets a buffer of its own size, rather than one that grew by
    /// doubling under several frames and stays alive while any of them is held).
    pub fn handle_client_bytes(&mut self, now: Instant, mut bytes: &[u8]) {
        if self.client_state != ClientState::Open {
            return;
        }
        while !bytes.is_empty() {
            let n = self.client.decoder.push(bytes);
            bytes = &bytes[n..];
            if n == 0 {
                // A whole frame waits for the session to want it (or the stream is broken):
                // the rest waits behind it.
                self.client.decoder.read_buf().extend_from_slice(bytes);
                bytes = &[];
            }
            self.pump_client(now);
        }
    }

    /// The client's stream ended or failed (reading or writing).
    pub fn handle_client_gone(&mut self, now: Instant) {
        self.client_state = ClientState::Gone;
        self.client.out.clear();
        self.session.handle_client_closed(now);
        self.drain_session();
        self.tell_held(now);
    }

    /// The dial of `link` finished. Returns whether the connection is wanted: `false` for a
    /// dial the session already gave up on (the runtime closes that connection at once).
    pub fn handle_dial_done(
        &mut self,
        now: Instant,
        link: LinkId,
        result: Result<(), &str>,
    ) -> bool {
        let Some(i) = self
            .links
            .iter()
            .position(|l| l.id == link && matches!(l.phase, LinkPhase::Dialing))
        else {
            return false;
        };
        match result {
            Ok(()) => {
                self.links[i].phase = LinkPhase::Up(Stream::new(self.session.server_msize()));
                self.session.handle_link_up(now, link);
            }
            Err(why) => {
                self.links.remove(i);
                self.session.handle_dial_failed(now, link, why);
            }
        }
        self.drain_session();
        self.pump_client(now);
        result.is_ok()
    }

    /// `n` bytes were read into [`link_read_buf`](Self::link_read_buf); 0 is the end of the
    /// link's stream.
    pub fn handle_link_read(&mut self, now: Instant, link: LinkId, n: usize) {
        if n == 0 {
            return self.handle_link_failed(now, link, "the server closed the connection");
        }
        self.pump_link(now, link);
    }

    /// Bytes from `link` that arrived in a buffer of the runtime's own (copied in a frame at
    /// a time, as [`handle_client_bytes`](Self::handle_client_bytes) does).
    pub fn handle_link_bytes(&mut self, now: Instant, link: LinkId, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let Some(s) = self.link_stream(link) else {
                return;
            };
            let n = s.decoder.push(bytes);
            bytes = &bytes[n..];
            if n == 0 {
                // A bad size field: the pump below says so and drops the link.
                s.decoder.read_buf().extend_from_slice(bytes);
                bytes = &[];
            }
            self.pump_link(now, link);
        }
    }

    /// Reading or writing `link` failed (or it closed): it is forgotten with whatever was
    /// queued for it, the runtime is told to drop it, and the session redials.
    pub fn handle_link_failed(&mut self, now: Instant, link: LinkId, why: &str) {
        if !self.forget_link(link) {
            return;
        }
        self.session.handle_link_down(now, link, why);
        self.drain_session();
        self.pump_client(now);
    }

    /// Time has reached [`poll_timeout`](Self::poll_timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((_, at)) = &mut self.memory_cap {
            // Looked at again now (the runtime may say otherwise); the next look is later.
            if now >= *at {
                *at = now + MEMORY_RECHECK;
            }
        }
        self.session.handle_timeout(now);
        self.drain_session();
        self.pump_client(now);
    }

    // ---- the pump ------------------------------------------------------------------------

    fn link_stream(&mut self, link: LinkId) -> Option<&mut Stream> {
        self.links.iter_mut().find_map(|l| match &mut l.phase {
            LinkPhase::Up(s) if l.id == link => Some(s),
            _ => None,
        })
    }

    /// Remove `link` from the table and tell the runtime to drop it; false if it was unknown.
    fn forget_link(&mut self, link: LinkId) -> bool {
        let Some(i) = self.links.iter().position(|l| l.id == link) else {
            return false;
        };
        self.links.remove(i);
        self.actions.push_back(Action::CloseLink { link });
        true
    }

    /// Hand the session every whole client frame it will take now.
    fn pump_client(&mut self, now: Instant) {
        while self.client_state == ClientState::Open && self.session.wants_client_input() {
            match self.client.decoder.next_frame() {
                Ok(Some(frame)) => self.session.handle_client_frame(now, frame),
                Ok(None) => break,
                Err(e) => {
                    self.session
                        .handle_client_garbage(now, format!("bad framing: {e}"));
                    break;
                }
            }
            // Outputs now, so a reply the session gives at once leaves before later ones.
            self.drain_session();
        }
        self.drain_session();
        self.tell_held(now);
    }

    /// Hand the session every whole frame that arrived on `link`.
    fn pump_link(&mut self, now: Instant, link: LinkId) {
        // The link may close because of what an earlier frame caused.
        while let Some(s) = self.link_stream(link) {
            match s.decoder.next_frame() {
                Ok(Some(frame)) => {
                    self.session.handle_server_frame(now, link, frame);
                    self.drain_session();
                }
                Ok(None) => break,
                Err(e) => {
                    let why = format!("the server sent a bad frame: {e}");
                    self.events.push_back(Event::ProtocolViolation {
                        peer: Peer::Server,
                        what: why.clone(),
                    });
                    self.forget_link(link);
                    self.session.handle_link_down(now, link, &why);
                    self.drain_session();
                    break;
                }
            }
        }
        // Replies may have made room for held client frames.
        self.pump_client(now);
    }

    /// Move the session's outputs into the queues and actions, and keep the decoders' bounds
    /// at the negotiated sizes.
    fn drain_session(&mut self) {
        while let Some(o) = self.session.poll_output() {
            match o {
                Output::ToClient(frame) => {
                    if self.client_state != ClientState::Gone {
                        self.client.out.push(frame);
                    }
                }
                Output::ToLink { link, frame } => {
                    if let Some(s) = self.link_stream(link) {
                        s.out.push(frame);
                    }
                }
                Output::Dial { link, backend } => {
                    self.links.push(Link {
                        id: link,
                        phase: LinkPhase::Dialing,
                    });
                    self.actions.push_back(Action::Dial { link, backend });
                }
                Output::CloseLink { link } => {
                    self.forget_link(link);
                }
                Output::CloseClient => {
                    if self.client_state == ClientState::Open {
                        self.client_state = ClientState::Closing;
                    }
                }
            }
        }
        while let Some(e) = self.session.poll_event() {
            self.events.push_back(e);
        }
        self.client
            .decoder
            .set_max_size(self.session.client_msize());
        let server_msize = self.session.server_msize();
        for l in &mut self.links {
            if let LinkPhase::Up(s) = &mut l.phase {
                s.decoder.set_max_size(server_msize);
            }
        }
    }
}

/// The seed of a proxy's `number`th session, from the proxy's own seed: sessions redial on
/// different schedules (one seed for all would bring every client back in lock-step), and the
/// whole proxy still replays from one seed.
pub fn session_seed(proxy_seed: u64, number: u64) -> u64 {
    crate::rng::mix(proxy_seed ^ number.wrapping_mul(crate::rng::GOLDEN))
}

/// How loud a log line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

/// An event in words a sysadmin reads, with its level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sentence {
    pub level: Level,
    /// The event's [`kind`](Event::kind), for logs that carry fields.
    pub kind: &'static str,
    pub text: String,
}

impl fmt::Display for Sentence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Word `e` for the log of the session serving `client` from `backend` (names as the operator
/// typed them).
pub fn sentence(e: &Event, client: &str, backend: &str) -> Sentence {
    sentence_named(e, client, backend, &|_| String::from(backend))
}

/// [`sentence`] for a session with several backends: `backend` is the one it uses now, and
/// `name` names any by its number.
pub fn sentence_named(
    e: &Event,
    client: &str,
    backend: &str,
    name: &dyn Fn(BackendId) -> String,
) -> Sentence {
    let (level, text) = match e {
        Event::Connected { backend, link } => (
            Level::Info,
            format!(
                "[{client}] connected to {} (link {})",
                name(*backend),
                link.0
            ),
        ),
        Event::Disconnected {
            backend, reason, ..
        } => (
            Level::Warn,
            format!("[{client}] server {} lost: {reason}", name(*backend)),
        ),
        Event::Redialing { attempt, delay } => (
            Level::Info,
            format!(
                "[{client}] redialing {backend} in {:.1} s (attempt {attempt})",
                delay.as_secs_f64()
            ),
        ),
        Event::DialFailed { backend, reason } => (
            Level::Info,
            format!("[{client}] dial {} failed: {reason}", name(*backend)),
        ),
        Event::Recovered {
            fids,
            stale,
            elapsed,
        } => (
            Level::Info,
            format!(
                "[{client}] recovered {fids} fids in {} ms ({stale} stale)",
                elapsed.as_millis()
            ),
        ),
        Event::FidLost { fid, reason, why } => (
            Level::Warn,
            format!("[{client}] fid {fid} is lost ({reason:?}): {why}"),
        ),
        Event::RequestFailed {
            tag, request, why, ..
        } => (
            Level::Warn,
            format!("[{client}] {} (tag {tag}) failed: {why}", request.name()),
        ),
        Event::OutcomeResolved { tag, request, done } => (
            Level::Info,
            match done {
                true => format!(
                    "[{client}] {} (tag {tag}) was in flight when the link died; the server shows it done: answered as done",
                    request.name()
                ),
                false => format!(
                    "[{client}] {} (tag {tag}) was in flight when the link died; the server shows it not done: sent again",
                    request.name()
                ),
            },
        ),
        Event::GaveUp { outage } => (
            Level::Warn,
            format!(
                "[{client}] server away for {:.1} s: failing requests with EIO until it returns",
                outage.as_secs_f64()
            ),
        ),
        Event::RecoveryStalled { .. } => (
            Level::Warn,
            format!("[{client}] recovery made no progress; redialing"),
        ),
        Event::ProtocolViolation { peer, what } => {
            let who = match peer {
                Peer::Client => String::from("client"),
                Peer::Server => format!("server {backend}"),
            };
            (
                Level::Warn,
                format!("[{client}] the {who} broke the protocol: {what}"),
            )
        }
        Event::ClientClosed => (Level::Info, format!("[{client}] client disconnected")),
        Event::Failover {
            from,
            to,
            open_fids_lost,
        } => (
            Level::Info,
            format!(
                "[{client}] failover: {} → {}; {open_fids_lost} open fids now fail with i/o errors",
                name(*from),
                name(*to)
            ),
        ),
        Event::LateReply { tag } => (
            Level::Info,
            format!("[{client}] the server answered tag {tag} after its Rflush; reply dropped"),
        ),
    };
    Sentence {
        level,
        kind: e.kind(),
        text,
    }
}
