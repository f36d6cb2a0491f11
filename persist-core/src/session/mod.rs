//! The session: one client, one backend, and everything needed to rebuild the server's view of
//! the client after the link dies. Inputs are `handle_*` calls with the current time; outputs
//! are pulled with `poll_output`, `poll_event` and `poll_timeout`.
//!
//! This file holds the session's state, its outputs and its deadlines (one place computes
//! them all, [`Session::timer`]); by job: [`link`] (dialing, losing and recovering the link,
//! and what each deadline does), [`forward`] (client requests in, server replies out) and
//! [`record`] (what replies do to the fid table). Rebuilding after a reconnect is the
//! [`Recovery`] sub-machine's, the replay table `crate::replay`'s (and the outcome table
//! `crate::resolve`'s), the fid table and names
//! `crate::fids` and `crate::names`', error replies `crate::reply`'s.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use p9_core::{
    dir, peek, Dialect, Fcall, Header, Msg, MsgType, Qid, Rclunk, Rflush, IOHDRSZ, NOFID, NOTAG,
};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::drive::pinned;
use crate::endpoint::{Backends, Health, OneBackend, ServiceRoot};
use crate::event::{BackendId, Event, LinkId, LinkLoss, Output, Peer};
use crate::fids::{flag, FidKind, FidRec, FidTable, LostReason, OpenMode};
use crate::hash::HashMap;
use crate::marks::{Mark, Marks};
use crate::recovery::{Cx, Progress, Recovery};
use crate::replay::{self, Settle};
use crate::reply::{self, Failure};
use crate::resolve::Outcome;
use crate::rng::Rng;
use crate::time::Instant;
use crate::timers::Timer;

pub(crate) use record::record_names;
use record::{lost_failure, lost_fid};

/// Whether a request leaves the fid table and locks as they were (it reads, or writes data).
fn changes_nothing_but_data(ty: MsgType) -> bool {
    matches!(
        ty,
        MsgType::Tread
            | MsgType::Twrite
            | MsgType::Tstat
            | MsgType::Tgetattr
            | MsgType::Treaddir
            | MsgType::Treadlink
            | MsgType::Tstatfs
            | MsgType::Tgetlock
            | MsgType::Tfsync
            | MsgType::Tsetattr
            | MsgType::Tversion
    )
}

/// The least msize a server may offer (a Twalk of one name and its Rwalk must fit).
pub(crate) const MIN_MSIZE: u32 = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkState {
    /// The client has not sent its Tversion yet: no backend is dialed for it until it does.
    Idle { since: Instant },
    /// No link; the next dial is due at `redial_at`.
    Down { redial_at: Instant },
    /// A dial was asked for.
    Dialing { link: LinkId, since: Instant },
    /// Connected; fids are being rebuilt (see `Session::recovery`).
    Recovering { link: LinkId },
    /// Serving the client.
    Up { link: LinkId },
    /// The session is over.
    Closed,
}

/// What the client and server agreed on in the client's Tversion.
#[derive(Clone, Debug)]
pub(crate) struct Negotiated {
    pub version: Bytes,
    pub dialect: Dialect,
    pub msize: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestState {
    /// Held until the link is up.
    Queued,
    /// Sent on this link.
    Sent(LinkId),
    /// Sent on a link that died; settled after the rebuild.
    Orphaned,
    /// A Tflush of an orphan whose fate is not known yet (it may have run): answered once
    /// that request is (flush(5): an Rflush alone would tell the client it never happened).
    AwaitingFlushed,
}

/// A client request the session holds until its reply goes out.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    /// Order of arrival.
    pub seq: u64,
    pub frame: Bytes,
    pub ty: MsgType,
    pub state: RequestState,
    /// When it was last sent (the hung-server timeout counts from the oldest in flight).
    pub sent_at: Instant,
    /// Replies to it that broke the protocol (each cost a reconnect; the second fails it).
    pub bad_replies: u8,
    /// How far a Tattach has come into a service's root (a mux walks there before answering).
    pub rooting: Rooting,
    /// Client Tflushes of this request, held until this request is answered: an attach being
    /// walked to its service's root has made a fid the server must not keep (see
    /// `session/service.rs`).
    pub waiting_flushes: Vec<u16>,
    /// For a create, remove, link or rename orphaned by a lost link: what the recovery saw of
    /// it on the new link (`crate::resolve`), until it is settled.
    pub resolved: Option<Outcome>,
    /// Orphaned by a link the session gave up on (hung, broken) rather than one that closed:
    /// its server may still run it, so a name found absent does not show it never ran.
    pub given_up: bool,
    /// A Tfsync: the count of writes acknowledged when it was last sent (it covers those).
    pub fsync_mark: u64,
}

/// A client's Tattach to a service with a root path: attached, then walked to the path (under
/// the client's own tag, which the request holds until its reply), then — if the path is not
/// there — the fid clunked again before the client hears.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Rooting {
    #[default]
    Attach,
    Walk,
    Clunk,
}

/// What a session lends its recovery for one input (its fields borrowed one by one, so the
/// recovery itself, also a field, can be borrowed beside them).
macro_rules! lend {
    ($s:ident) => {
        Cx {
            cfg: &$s.cfg,
            negotiated: $s.negotiated.as_ref().expect("recovery needs a version"),
            fids: &mut $s.fids,
            marks: &mut $s.marks,
            authenticator: $s.authenticator.as_deref(),
            service: &$s.service,
            server_msize: &mut $s.server_msize,
            out: &mut $s.out,
            events: &mut $s.events,
            requests: &mut $s.requests,
        }
    };
}

/// A 9P session kept alive across the loss of its server. See the crate docs for the drive loop.
pub struct Session {
    cfg: Config,
    /// The backend of the current (or last) link.
    backend: BackendId,
    /// Whether any backend was dialed yet (the endpoint keeps a session where it is).
    dialed: Option<BackendId>,
    /// The backend of the last link that came up: a link to another one is a failover.
    linked: Option<BackendId>,
    backends: Box<dyn Backends>,
    /// Where the current backend's tree begins for the client.
    service: ServiceRoot,
    /// Whether qids sent to the client name paths, not one server's files (`crate::qids`).
    stable_qids: bool,
    /// Whether the server answered anything on the current link (then it is reported up).
    link_answered: bool,
    /// Reused for each reply whose qids are rewritten.
    path_key: crate::qids::PathKey,
    /// This session's number among its endpoint's (spreads sessions over equal backends).
    pick: u64,
    link: LinkState,
    next_link: u64,
    /// Dials since the last recovered link.
    attempt: u32,
    outage_since: Option<Instant>,
    gave_up: bool,
    negotiated: Option<Negotiated>,
    /// The msize of the current link (at most the negotiated one).
    server_msize: u32,
    fids: FidTable,
    requests: HashMap<u16, Request>,
    next_seq: u64,
    queue: VecDeque<u16>,
    held_bytes: usize,
    recovery: Option<Recovery>,
    out: VecDeque<Output>,
    events: VecDeque<Event>,
    rng: Rng,
    authenticator: Option<Box<dyn Authenticator>>,
    marks: Marks,
    /// The time of the latest input.
    now: Instant,
    /// When the server last sent anything on the current link.
    last_server_input: Instant,
    /// When to look again for a silent server (while the link is up).
    silence_check_at: Instant,
    /// Tags the server answered Rflush for on this link, with their request types: a reply to
    /// one of them arriving late is dropped (until the client uses the tag again).
    flushed: HashMap<u16, MsgType>,
    /// The outage clocks (attempts, outage start) are kept across a recovery until the server
    /// answers a request: a recovery that delivers nothing does not end the outage.
    reset_on_reply: bool,
    /// The driver is not reading the link (the client is not taking its replies): the server
    /// is not judged silent meanwhile.
    link_held: bool,
}

impl Session {
    /// A session for a client that just connected, served by `backend`. It dials the backend
    /// when the client's first whole frame (its Tversion) arrives, and closes a client that
    /// sends none within `version_timeout`.
    pub fn new(cfg: Config, backend: BackendId, now: Instant) -> Session {
        Session::with_backends(cfg, Box::new(OneBackend(backend)), now)
    }

    /// A session whose backend is chosen, at each dial, by `backends` (an endpoint shared
    /// with the proxy's other sessions), and told what became of it.
    pub fn with_backends(cfg: Config, backends: Box<dyn Backends>, now: Instant) -> Session {
        let rng = Rng::new(cfg.seed);
        Session {
            pick: cfg.seed,
            cfg,
            backend: BackendId(0),
            dialed: None,
            linked: None,
            service: ServiceRoot::default(),
            stable_qids: backends.stable_qids(),
            path_key: Default::default(),
            link_answered: false,
            backends,
            link: LinkState::Idle { since: now },
            next_link: 0,
            attempt: 0,
            outage_since: Some(now),
            gave_up: false,
            negotiated: None,
            server_msize: u32::MAX,
            fids: FidTable::default(),
            requests: HashMap::default(),
            next_seq: 0,
            queue: VecDeque::new(),
            held_bytes: 0,
            recovery: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
            rng,
            authenticator: None,
            marks: Marks::default(),
            now,
            last_server_input: now,
            silence_check_at: now,
            flushed: HashMap::default(),
            reset_on_reply: false,
            link_held: false,
        }
    }

    /// The backend of the current (or last) link.
    pub fn backend(&self) -> BackendId {
        self.backend
    }

    /// Let the session redo authenticated attaches after a reconnect (see [`Authenticator`]).
    pub fn set_authenticator(&mut self, authenticator: Box<dyn Authenticator>) {
        self.authenticator = Some(authenticator);
    }

    // ---- outputs -------------------------------------------------------------------------

    /// The next thing the driver must do. Drain it (until `None`) after every input.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The next event worth logging. Drain after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When the driver must call [`handle_timeout`](Self::handle_timeout) next, if at all.
    /// Calling it early or late is harmless.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timer().map(|(_, at)| at)
    }

    /// The earliest deadline and its reason.
    pub fn next_timer(&self) -> Option<(Timer, Instant)> {
        self.timers().min_by_key(|(_, at)| *at)
    }

    /// Every deadline the session has now, with its reason.
    pub fn timers(&self) -> impl Iterator<Item = (Timer, Instant)> + '_ {
        Timer::ALL
            .into_iter()
            .filter_map(|t| self.timer(t).map(|at| (t, at)))
    }

    /// The deadline for `reason`, if the session's state has one: the one place deadlines are
    /// computed.
    pub fn timer(&self, reason: Timer) -> Option<Instant> {
        let recovery = || {
            self.recovery
                .as_ref()
                .filter(|_| matches!(self.link, LinkState::Recovering { .. }))
        };
        match reason {
            Timer::VersionTimeout => match self.link {
                LinkState::Idle { since } => Some(since + self.cfg.version_timeout),
                _ => None,
            },
            Timer::Redial => match self.link {
                LinkState::Down { redial_at } => Some(redial_at),
                _ => None,
            },
            Timer::DialWatchdog => match self.link {
                LinkState::Dialing { since, .. } => Some(since + self.cfg.watchdog),
                _ => None,
            },
            // Silence is no sign of a dead server while its link is not being read.
            Timer::RecoveryWatchdog | Timer::ServerSilence if self.link_held => None,
            Timer::RecoveryWatchdog => recovery().map(|r| r.last_progress() + self.cfg.watchdog),
            Timer::ExclusiveRetry => recovery().and_then(|r| r.next_retry()),
            Timer::GiveUp => match (self.outage_since, self.cfg.give_up_after, self.gave_up) {
                (Some(since), Some(limit), false)
                    if !matches!(self.link, LinkState::Up { .. } | LinkState::Closed) =>
                {
                    Some(since + limit)
                }
                _ => None,
            },
            Timer::ServerSilence => match self.link {
                LinkState::Up { .. } => Some(self.silence_check_at),
                _ => None,
            },
        }
    }

    fn due(&self, reason: Timer, now: Instant) -> bool {
        self.timer(reason).is_some_and(|at| now >= at)
    }

    /// Whether the driver should read more from the client. False while the held requests
    /// are at their bound (backpressure) or the session is over.
    pub fn wants_client_input(&self) -> bool {
        self.link != LinkState::Closed
            && self.requests.len() < self.cfg.queue_max_requests
            && self.held_bytes < self.cfg.queue_max_bytes
    }

    /// The driver stops (`true`) or resumes reading the current link for a reason of its own (a
    /// client not taking its replies). While stopped the server is not judged silent, and
    /// when reading resumes its silence counts from then.
    pub fn set_link_held(&mut self, now: Instant, held: bool) {
        if held == self.link_held {
            return;
        }
        self.link_held = held;
        self.marks.hit(match held {
            true => Mark::LinkHeld,
            false => Mark::LinkResumed,
        });
        if !held {
            self.last_server_input = self.last_server_input.max(now);
            self.silence_check_at = self.silence_check_at.max(now);
            if let Some(r) = &mut self.recovery {
                r.progressed(now);
            }
        }
    }

    /// Whether the session is serving over a link (not redialing, not rebuilding).
    pub fn is_up(&self) -> bool {
        matches!(self.link, LinkState::Up { .. })
    }

    /// Whether the session is over (client gone or expelled).
    pub fn is_closed(&self) -> bool {
        self.link == LinkState::Closed
    }

    /// The msize the client negotiated, which bounds the frames it may send; before Tversion,
    /// the bound for a Tversion.
    pub fn client_msize(&self) -> u32 {
        self.negotiated.as_ref().map_or(8192, |n| n.msize)
    }

    /// The session's configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The largest frame the current server may send.
    pub fn server_msize(&self) -> u32 {
        self.server_msize.min(self.client_msize())
    }

    /// How often each rule and recovery step was reached (the simulation's coverage marks).
    pub fn marks(&self) -> &Marks {
        &self.marks
    }

    /// The fids the current server should know: every fid tracked and not lost, in no order.
    pub fn fids_on_server(&self) -> impl Iterator<Item = u32> + '_ {
        self.fids
            .fids
            .iter()
            .filter(|(_, f)| f.is_lost().is_none())
            .map(|(&fid, _)| fid)
    }

    /// Fids tracked.
    pub fn fid_count(&self) -> usize {
        self.fids.len()
    }

    /// Bytes of unsynced writes kept for rewriting after a reconnect, as counted against the
    /// replay budget.
    pub fn replay_kept_bytes(&self) -> usize {
        self.fids.unsynced.charge()
    }

    /// Client requests held (in flight or queued).
    pub fn requests_held(&self) -> usize {
        self.requests.len()
    }

    /// Bytes of client requests held.
    pub fn bytes_held(&self) -> usize {
        self.held_bytes
    }

    /// Distinct path names stored (shared by all fids).
    pub fn path_nodes(&self) -> usize {
        self.fids.names.len()
    }

    /// Approximate heap bytes of the fid records (with lock histories and roots).
    pub fn fid_table_bytes(&self) -> usize {
        self.fids.heap_bytes() - self.fids.names.heap_bytes()
    }

    /// Approximate heap bytes of the shared path names.
    pub fn path_name_bytes(&self) -> usize {
        self.fids.names.heap_bytes()
    }

    fn dialect(&self) -> Option<Dialect> {
        self.negotiated.as_ref().map(|n| n.dialect)
    }

    fn emit(&mut self, o: Output) {
        self.out.push_back(o);
    }

    fn event(&mut self, e: Event) {
        self.events.push_back(e);
    }

    fn send_to_client(&mut self, frame: Bytes) {
        self.out.push_back(Output::ToClient(frame));
    }

    fn current_link(&self) -> Option<LinkId> {
        match self.link {
            LinkState::Dialing { link, .. }
            | LinkState::Recovering { link }
            | LinkState::Up { link } => Some(link),
            _ => None,
        }
    }
}

// After `lend!`, which they use (macros are visible only below their definition).
mod forward;
mod link;
mod record;
mod service;
