//! The session: one client, one backend, and everything needed to rebuild the server's view of
//! the client after the link dies. Inputs are `handle_*` calls with the current time; outputs
//! are pulled with `poll_output`, `poll_event` and `poll_timeout`.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use p9_core::{
    dir, Dialect, Fcall, Header, Msg, MsgType, Qid, Rclunk, Rflush, IOHDRSZ, NOFID, NOTAG,
};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::event::{BackendId, Event, LinkId, Output, Peer};
use crate::fids::{flag, FidKind, FidRec, FidTable, LostReason};
use crate::hash::HashMap;
use crate::marks::{Mark, Marks};
use crate::recovery::{Cx, Progress, Recovery};
use crate::replay::{self, Settle};
use crate::reply::{self, Failure};
use crate::rng::Rng;
use crate::time::Instant;
use crate::timers::Timer;

/// Rread's fixed part: size[4] type[1] tag[2] count[4].
const RREAD_HEADER: u32 = 11;
/// Twrite's fixed part: size[4] type[1] tag[2] fid[4] offset[8] count[4].
const TWRITE_HEADER: usize = 23;
/// An Rwrite: size[4] type[1] tag[2] count[4].
const RWRITE_LEN: usize = 11;
/// A Tread is all fixed fields: size[4] type[1] tag[2] fid[4] offset[8] count[4].
const TREAD_LEN: usize = 23;

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

/// A little-endian u32 at `at` of a frame whose length was checked.
fn field_u32(frame: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]])
}

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
            server_msize: &mut $s.server_msize,
            out: &mut $s.out,
            events: &mut $s.events,
        }
    };
}

/// A 9P session kept alive across the loss of its server. See the crate docs for the drive loop.
pub struct Session {
    pub(crate) cfg: Config,
    pub(crate) backend: BackendId,
    pub(crate) link: LinkState,
    next_link: u64,
    /// Dials since the last recovered link.
    attempt: u32,
    outage_since: Option<Instant>,
    gave_up: bool,
    pub(crate) negotiated: Option<Negotiated>,
    /// The msize of the current link (at most the negotiated one).
    pub(crate) server_msize: u32,
    pub(crate) fids: FidTable,
    pub(crate) requests: HashMap<u16, Request>,
    next_seq: u64,
    queue: VecDeque<u16>,
    held_bytes: usize,
    pub(crate) recovery: Option<Recovery>,
    out: VecDeque<Output>,
    events: VecDeque<Event>,
    pub(crate) rng: Rng,
    pub(crate) authenticator: Option<Box<dyn Authenticator>>,
    pub(crate) marks: Marks,
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
}

impl Session {
    /// A session for a client that just connected, served by `backend`. It dials the backend
    /// when the client's first whole frame (its Tversion) arrives, and closes a client that
    /// sends none within `version_timeout`.
    pub fn new(cfg: Config, backend: BackendId, now: Instant) -> Session {
        let rng = Rng::new(cfg.seed);
        Session {
            cfg,
            backend,
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
        }
    }

    /// Let the session redo authenticated attaches after a reconnect (see [`Authenticator`]).
    pub fn set_authenticator(&mut self, authenticator: Box<dyn Authenticator>) {
        self.authenticator = Some(authenticator);
    }

    // ---- outputs -------------------------------------------------------------------------

    /// The next thing the driver must do. Drain it (until `None`) after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The next event worth logging. Drain after every input.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When the driver must call [`handle_timeout`](Self::handle_timeout) next, if at all.
    /// Calling it early or late is harmless.
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
            && self.queue.len() < self.cfg.queue_max_requests
            && self.held_bytes < self.cfg.queue_max_bytes
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

    pub(crate) fn dialect(&self) -> Option<Dialect> {
        self.negotiated.as_ref().map(|n| n.dialect)
    }

    pub(crate) fn emit(&mut self, o: Output) {
        self.out.push_back(o);
    }

    pub(crate) fn event(&mut self, e: Event) {
        self.events.push_back(e);
    }

    pub(crate) fn send_to_client(&mut self, frame: Bytes) {
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

    // ---- link lifecycle --------------------------------------------------------------------

    fn dial(&mut self, now: Instant) {
        self.next_link += 1;
        let link = LinkId(self.next_link);
        self.link = LinkState::Dialing { link, since: now };
        self.emit(Output::Dial {
            link,
            backend: self.backend,
        });
    }

    /// The dial of `link` succeeded.
    pub fn handle_link_up(&mut self, now: Instant, link: LinkId) {
        if !matches!(self.link, LinkState::Dialing { link: l, .. } if l == link) {
            return;
        }
        self.event(Event::Connected {
            backend: self.backend,
            link,
        });
        self.last_server_input = now;
        self.flushed.clear();
        if self.negotiated.is_none() {
            // Nothing to rebuild: the client has not even settled a version.
            self.server_msize = u32::MAX;
            self.link_recovered(now, link);
        } else {
            self.link = LinkState::Recovering { link };
            let recovery = Recovery::start(now, link, &mut lend!(self));
            self.recovery = Some(recovery);
        }
    }

    /// The dial of `link` failed.
    pub fn handle_dial_failed(&mut self, now: Instant, link: LinkId, reason: &str) {
        if !matches!(self.link, LinkState::Dialing { link: l, .. } if l == link) {
            return;
        }
        self.event(Event::DialFailed {
            backend: self.backend,
            reason: reason.to_string(),
        });
        self.schedule_redial(now);
    }

    /// `link` closed or failed.
    pub fn handle_link_down(&mut self, now: Instant, link: LinkId, reason: &str) {
        if self.current_link() != Some(link) {
            return;
        }
        if matches!(self.link, LinkState::Dialing { .. }) {
            return self.handle_dial_failed(now, link, reason);
        }
        self.event(Event::Disconnected {
            link,
            reason: reason.to_string(),
        });
        self.lose_link(now);
    }

    /// Give up on the current link ourselves (violation, watchdog) and redial.
    pub(crate) fn abandon_link(&mut self, now: Instant, link: LinkId, reason: String) {
        self.emit(Output::CloseLink { link });
        self.event(Event::Disconnected { link, reason });
        if matches!(self.link, LinkState::Dialing { .. }) {
            self.schedule_redial(now);
        } else {
            self.lose_link(now);
        }
    }

    /// The link is gone: orphan what was in flight on it, remember which fids had writes
    /// not yet made durable, and schedule a redial.
    fn lose_link(&mut self, now: Instant) {
        let Some(link) = self.current_link() else {
            return;
        };
        self.recovery = None;
        let mut flushes = Vec::new();
        for (tag, req) in self.requests.iter_mut() {
            if req.state == RequestState::Sent(link) {
                req.state = RequestState::Orphaned;
                if req.ty == MsgType::Tflush {
                    flushes.push((req.seq, *tag));
                }
            }
        }
        // A Tremove in flight is never resent and forgets its fid whatever happens, so its fid
        // is not rebuilt: rebuilt, the new server would keep it and refuse its number later.
        let removed: Vec<u32> = self
            .requests
            .values()
            .filter(|r| r.state == RequestState::Orphaned && r.ty == MsgType::Tremove)
            .filter(|r| r.frame.len() >= 11)
            .map(|r| field_u32(&r.frame, 7)) // Tremove: size[4] type[1] tag[2] fid[4]
            .collect();
        for fid in removed {
            if self.fids.remove(fid).is_some() {
                self.marks.hit(Mark::RecoveryRemovedNotRebuilt);
            }
        }
        // A flush in flight is answered now: its request will never be answered.
        flushes.sort_unstable();
        for (_, tag) in flushes {
            self.marks.hit(Mark::ReplayFlushLocally);
            self.flush_locally(tag);
        }
        for rec in self.fids.fids.values_mut() {
            if rec.flags & flag::UNSYNCED != 0 {
                rec.flags |= flag::WRITES_LOST;
            }
            rec.flags &= !flag::FAST_FORWARDED;
        }
        if self.outage_since.is_none() {
            self.outage_since = Some(now);
        }
        self.schedule_redial(now);
    }

    fn schedule_redial(&mut self, now: Instant) {
        let age = self.outage_since.map_or(Duration::ZERO, |s| now.since(s));
        let delay = self.cfg.backoff.delay(self.attempt, age, &mut self.rng);
        self.attempt = self.attempt.saturating_add(1);
        self.link = LinkState::Down {
            redial_at: now + delay,
        };
        self.event(Event::Redialing {
            attempt: self.attempt,
            delay,
        });
    }

    /// What the recovery of `link` said after an input: keep going, resume service, or drop
    /// the link the server broke.
    fn recovery_progress(&mut self, now: Instant, link: LinkId, progress: Progress) {
        match progress {
            Progress::Working => {}
            Progress::Broken(what) => {
                self.recovery = None;
                self.event(Event::ProtocolViolation {
                    peer: Peer::Server,
                    what: what.clone(),
                });
                self.abandon_link(now, link, what);
            }
            Progress::Done {
                fids,
                stale,
                elapsed,
            } => {
                self.recovery = None;
                self.event(Event::Recovered {
                    fids,
                    stale,
                    elapsed,
                });
                self.link_recovered(now, link);
            }
        }
    }

    /// The link is usable again: settle what was orphaned, then release the queue.
    pub(crate) fn link_recovered(&mut self, now: Instant, link: LinkId) {
        self.link = LinkState::Up { link };
        self.recovery = None;
        self.gave_up = false;
        self.last_server_input = now;
        self.silence_check_at = now + self.server_timeout();
        // With nothing to deliver the outage is over; otherwise it is when the server answers
        // (a server that breaks on what is resent must not reset the backoff or soft clocks).
        if self.requests.is_empty() {
            self.end_outage();
        } else {
            self.reset_on_reply = true;
        }
        let mut orphans: Vec<(u64, u16)> = self
            .requests
            .iter()
            .filter(|(_, r)| r.state == RequestState::Orphaned)
            .map(|(t, r)| (r.seq, *t))
            .collect();
        orphans.sort_unstable();
        for (_, tag) in orphans {
            self.settle_orphan(tag);
        }
        while let Some(tag) = self.queue.pop_front() {
            self.dispatch(tag);
        }
    }

    fn end_outage(&mut self) {
        self.attempt = 0;
        self.outage_since = None;
        self.reset_on_reply = false;
    }

    /// How long a live link may stay silent while requests wait (at least 100 ms: the check is
    /// a timer, and a zero one would fire without end on an idle link).
    fn server_timeout(&self) -> Duration {
        let t = match self.cfg.give_up_after {
            Some(g) => g.min(self.cfg.server_timeout),
            None => self.cfg.server_timeout,
        };
        t.max(Duration::from_millis(100))
    }

    /// Apply the replay table to one orphaned request.
    fn settle_orphan(&mut self, tag: u16) {
        let Some(req) = self.requests.get(&tag) else {
            return; // answered meanwhile (flushed)
        };
        if req.state != RequestState::Orphaned {
            return;
        }
        let Some(msg) = self.decode_request(&req.frame) else {
            return self.fail(tag, Failure::MALFORMED, "undecodable");
        };
        let fid = msg.primary_fid().and_then(|f| self.fids.get(f));
        let (settle, mark) = replay::settle(&msg, fid);
        self.marks.hit(mark);
        match settle {
            Settle::Resend => self.dispatch(tag),
            Settle::Fail(f) => {
                self.apply_failure(&msg);
                self.fail(tag, f, "in flight when the link died")
            }
            Settle::ClunkLocally => self.clunk_locally(tag, &msg),
            Settle::FlushLocally => self.flush_locally(tag),
        }
    }

    // ---- timeouts ------------------------------------------------------------------------

    /// Time has reached (or passed) `poll_timeout`: whatever is due is done — first the link
    /// state's own deadline, then (with the state that left) soft mode's give-up.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        match self.link {
            LinkState::Idle { .. } if self.due(Timer::VersionTimeout, now) => {
                self.event(Event::ProtocolViolation {
                    peer: Peer::Client,
                    what: alloc::format!(
                        "no Tversion within {:?} of connecting",
                        self.cfg.version_timeout
                    ),
                });
                self.emit(Output::CloseClient);
                self.close();
            }
            LinkState::Up { link } if self.due(Timer::ServerSilence, now) => {
                self.check_silence(now, link)
            }
            LinkState::Down { .. } if self.due(Timer::Redial, now) => self.dial(now),
            LinkState::Dialing { link, .. } if self.due(Timer::DialWatchdog, now) => {
                self.marks.hit(Mark::DialWatchdog);
                self.abandon_link(now, link, "dial timed out".into())
            }
            LinkState::Recovering { link } => {
                if self.due(Timer::RecoveryWatchdog, now) {
                    self.marks.hit(Mark::RecoveryWatchdog);
                    self.event(Event::RecoveryStalled { link });
                    self.abandon_link(now, link, "recovery made no progress".into());
                } else {
                    // Exclusive opens whose retry is due (and nothing if none is).
                    if let Some(r) = &mut self.recovery {
                        let progress = r.handle_timeout(now, &mut lend!(self));
                        self.recovery_progress(now, link, progress);
                    }
                }
            }
            _ => {}
        }
        if self.due(Timer::GiveUp, now) {
            let since = self.outage_since.unwrap_or(now);
            self.give_up(now.since(since));
        }
    }

    /// A live link is dead if requests have waited the server timeout with nothing arriving.
    fn check_silence(&mut self, now: Instant, link: LinkId) {
        let timeout = self.server_timeout();
        let oldest = self
            .requests
            .values()
            .filter(|r| r.state == RequestState::Sent(link))
            .map(|r| r.sent_at)
            .min();
        let Some(oldest) = oldest else {
            self.silence_check_at = now + timeout;
            return;
        };
        let silent_since = oldest.max(self.last_server_input);
        if now < silent_since + timeout {
            self.silence_check_at = silent_since + timeout;
            return;
        }
        let waiting = self
            .requests
            .values()
            .filter(|r| r.state == RequestState::Sent(link))
            .count();
        self.marks.hit(Mark::ServerSilent);
        // The outage began when the server fell silent (soft mode counts from then).
        if self.outage_since.is_none() {
            self.outage_since = Some(silent_since);
        }
        let what = alloc::format!(
            "the server sent nothing for {:?} while {waiting} requests waited",
            now.since(silent_since)
        );
        self.abandon_link(now, link, what);
    }

    /// Soft mode: the outage is too long. Everything held fails; so will new requests until
    /// the server is back.
    fn give_up(&mut self, outage: Duration) {
        self.gave_up = true;
        self.marks.hit(Mark::SoftGiveUp);
        self.event(Event::GaveUp { outage });
        let mut held: Vec<(u64, u16)> = self
            .requests
            .iter()
            .filter(|(_, r)| matches!(r.state, RequestState::Orphaned | RequestState::Queued))
            .map(|(t, r)| (r.seq, *t))
            .collect();
        held.sort_unstable();
        self.queue.clear();
        for (_, tag) in held {
            self.fail_unavailable(tag);
        }
    }

    /// Answer a held request now that soft mode gave up: orphans by the replay table (a request
    /// that may have happened still says so), everything else "unavailable".
    fn fail_unavailable(&mut self, tag: u16) {
        let Some(req) = self.requests.get(&tag) else {
            return;
        };
        let orphaned = req.state == RequestState::Orphaned;
        let Some(msg) = self.decode_request(&req.frame) else {
            return self.fail(tag, Failure::MALFORMED, "undecodable");
        };
        let fid = msg.primary_fid().and_then(|f| self.fids.get(f));
        match replay::settle(&msg, fid).0 {
            Settle::ClunkLocally | Settle::Resend if matches!(msg, Msg::Tclunk(_)) => {
                self.clunk_locally(tag, &msg)
            }
            Settle::FlushLocally => self.flush_locally(tag),
            Settle::Fail(f) if orphaned => {
                self.apply_failure(&msg);
                self.fail(tag, f, "in flight when the link died")
            }
            _ => {
                self.apply_failure(&msg);
                self.fail(tag, Failure::UNAVAILABLE, "server unavailable (soft mode)")
            }
        }
    }

    // ---- client input --------------------------------------------------------------------

    /// The client went away.
    pub fn handle_client_closed(&mut self, _now: Instant) {
        if self.link == LinkState::Closed {
            return;
        }
        self.event(Event::ClientClosed);
        self.close();
    }

    fn close(&mut self) {
        if let Some(link) = self.current_link() {
            self.emit(Output::CloseLink { link });
        }
        self.link = LinkState::Closed;
        self.recovery = None;
        self.requests.clear();
        self.queue.clear();
        self.held_bytes = 0;
        self.fids.clear();
    }

    fn client_violation(&mut self, what: String) {
        self.event(Event::ProtocolViolation {
            peer: Peer::Client,
            what,
        });
        self.emit(Output::CloseClient);
        self.close();
    }

    /// The client's byte stream cannot be framed (`what` says why): its session is closed,
    /// as for any other client protocol violation.
    pub fn handle_client_garbage(&mut self, _now: Instant, what: String) {
        if self.link != LinkState::Closed {
            self.client_violation(what);
        }
    }

    /// One whole frame from the client (the driver frames the stream with
    /// [`client_msize`](Self::client_msize) as the bound).
    pub fn handle_client_frame(&mut self, now: Instant, frame: Bytes) {
        self.now = now;
        if self.link == LinkState::Closed {
            return;
        }
        let header = match Header::parse(&frame) {
            Ok(h) => h,
            Err(e) => return self.client_violation(alloc::format!("bad frame: {e}")),
        };
        let Some(ty) = MsgType::from_u8(header.msg_type).filter(|t| t.is_request()) else {
            return self.client_violation(alloc::format!(
                "message type {} is not a request",
                header.msg_type
            ));
        };
        let frame = match self.link {
            LinkState::Up { link } => match self.forward_io(link, &header, frame) {
                Some(frame) => frame,
                None => return,
            },
            _ => frame,
        };
        let tag = header.tag;
        if self.requests.contains_key(&tag) {
            return self.client_violation(alloc::format!("tag {tag} is already in use"));
        }
        if !self.flushed.is_empty() {
            // The tag is the client's again: a late reply to its flushed use is now ambiguous.
            self.flushed.remove(&tag);
        }
        if let LinkState::Idle { .. } = self.link {
            // The client has earned a backend.
            self.outage_since = Some(now);
            self.dial(now);
        }
        if ty == MsgType::Tversion && tag != NOTAG || ty != MsgType::Tversion && tag == NOTAG {
            // Answerable: the tag is ours to reply to.
            let dialect = self.dialect();
            return self.send_to_client(Failure::MALFORMED.reply(tag, dialect));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.held_bytes += frame.len();
        self.requests.insert(
            tag,
            Request {
                seq,
                frame,
                ty,
                state: RequestState::Queued,
                sent_at: now,
                bad_replies: 0,
            },
        );
        match self.link {
            LinkState::Up { .. } => self.dispatch(tag),
            _ if ty == MsgType::Tflush => self.flush_locally(tag),
            _ if self.gave_up => self.fail_unavailable(tag),
            _ => self.queue.push_back(tag),
        }
    }

    /// The hot path: a well-formed Tread or Twrite on a fid that is not lost, fitting the
    /// server, goes straight to the link with one table insert and no decoding. Gives the frame
    /// back to leave it to the general path.
    fn forward_io(&mut self, link: LinkId, header: &Header, frame: Bytes) -> Option<Bytes> {
        let len = frame.len();
        let ty = match MsgType::from_u8(header.msg_type) {
            Some(MsgType::Tread) if len == TREAD_LEN => MsgType::Tread,
            Some(MsgType::Twrite)
                if len >= TWRITE_HEADER
                    && field_u32(&frame, 19) as usize == len - TWRITE_HEADER =>
            {
                MsgType::Twrite
            }
            _ => return Some(frame),
        };
        let msize = self.server_msize();
        let fits = match ty {
            MsgType::Tread => field_u32(&frame, 19) <= msize.saturating_sub(IOHDRSZ),
            _ => (len - TWRITE_HEADER) as u32 <= msize.saturating_sub(IOHDRSZ),
        };
        if !fits || header.tag == NOTAG || self.negotiated.is_none() {
            return Some(frame);
        }
        if self.fids.any_lost()
            && self
                .fids
                .get(field_u32(&frame, 7))
                .is_some_and(|f| f.is_lost().is_some())
        {
            return Some(frame);
        }
        let hashbrown::hash_map::Entry::Vacant(slot) = self.requests.entry(header.tag) else {
            return Some(frame);
        };
        slot.insert(Request {
            seq: self.next_seq,
            frame: frame.clone(),
            ty,
            state: RequestState::Sent(link),
            sent_at: self.now,
            bad_replies: 0,
        });
        self.next_seq += 1;
        self.held_bytes += len;
        self.out.push_back(Output::ToLink { link, frame });
        None
    }

    pub(crate) fn decode_request(&self, frame: &Bytes) -> Option<Msg> {
        // Before a version is settled only Tversion is decodable, and it is the same in all.
        let dialect = self.dialect().unwrap_or(Dialect::DotL);
        Fcall::decode(frame, dialect).ok().map(|f| f.msg)
    }

    /// Remove a request, answering it with `frame`.
    fn answer(&mut self, tag: u16, frame: Bytes) {
        if let Some(req) = self.requests.remove(&tag) {
            self.held_bytes -= req.frame.len();
            self.send_to_client(frame);
        }
    }

    pub(crate) fn fail(&mut self, tag: u16, failure: Failure, why: &'static str) {
        let Some(req) = self.requests.get(&tag) else {
            return;
        };
        if matches!(
            failure,
            Failure::NOT_COMPLETED
                | Failure::UNAVAILABLE
                | Failure::WRITES_LOST
                | Failure::INVALID_REPLY
        ) {
            let request = req.ty;
            self.event(Event::RequestFailed {
                tag,
                request,
                failure,
                why,
            });
        }
        let frame = failure.reply(tag, self.dialect());
        self.answer(tag, frame);
    }

    /// What a failed request still does to the fid table: Tremove forgets its fid even when it
    /// fails, and a failed fsync has reported the lost writes.
    fn apply_failure(&mut self, msg: &Msg) {
        match msg {
            Msg::Tremove(r) => self.forget_fid(r.fid.0),
            Msg::Tfsync(f) => {
                if let Some(rec) = self.fids.get_mut(f.fid.0) {
                    rec.flags &= !(flag::UNSYNCED | flag::WRITES_LOST);
                }
            }
            _ => {}
        }
    }

    fn clunk_locally(&mut self, tag: u16, msg: &Msg) {
        if let Msg::Tclunk(c) = msg {
            self.forget_fid(c.fid.0);
        }
        self.answer(tag, reply::local(tag, Rclunk {}));
    }

    /// Forget a fid without telling the server. A recovery under way may be rebuilding it on
    /// the new link: it clunks it there before it ends.
    fn forget_fid(&mut self, fid: u32) {
        if self.fids.remove(fid).is_some() {
            if let Some(r) = &mut self.recovery {
                r.forget(fid);
            }
        }
    }

    /// Answer a Tflush here: drop the request it names (never to be answered) and reply Rflush.
    fn flush_locally(&mut self, tag: u16) {
        let oldtag = self
            .requests
            .get(&tag)
            .and_then(|r| self.decode_request(&r.frame))
            .and_then(|m| match m {
                Msg::Tflush(f) => Some(f.oldtag),
                _ => None,
            });
        if let Some(old) = oldtag.filter(|&o| o != tag) {
            if let Some(req) = self.requests.remove(&old) {
                self.held_bytes -= req.frame.len();
                self.queue.retain(|&t| t != old);
            }
        }
        self.queue.retain(|&t| t != tag);
        self.answer(tag, reply::local(tag, Rflush {}));
    }

    /// Send a held request to the server, or answer it here when it names a lost fid, cannot
    /// fit the current server, or reports lost writes.
    fn dispatch(&mut self, tag: u16) {
        let LinkState::Up { link } = self.link else {
            if let Some(req) = self.requests.get_mut(&tag) {
                req.state = RequestState::Queued;
                self.queue.push_back(tag);
            }
            return;
        };
        let Some(req) = self.requests.get(&tag) else {
            return;
        };
        let (ty, frame) = (req.ty, req.frame.clone());
        if self.negotiated.is_none() && ty != MsgType::Tversion {
            return self.fail(tag, Failure::NOT_VERSIONED, "before Tversion");
        }
        // Reads and writes on a live link took `forward_io`; what reaches here is queued,
        // orphaned or unusual, so it is decoded and checked in full.
        let Some(msg) = self.decode_request(&frame) else {
            return self.fail(tag, Failure::MALFORMED, "undecodable");
        };
        if let Some(lost) = lost_fid(&self.fids, &msg) {
            return match msg {
                Msg::Tclunk(_) => self.clunk_locally(tag, &msg),
                _ => self.fail(tag, lost_failure(lost), "fid lost"),
            };
        }
        match &msg {
            Msg::Tfsync(f) => {
                let lost = self
                    .fids
                    .get(f.fid.0)
                    .is_some_and(|r| r.flags & flag::WRITES_LOST != 0);
                if lost {
                    self.apply_failure(&msg);
                    return self.fail(tag, Failure::WRITES_LOST, "writes lost with a link");
                }
            }
            Msg::Tversion(_) => self.start_version_reset(tag),
            _ => {}
        }
        let Some(wire) = self.fit_to_server(&frame, ty) else {
            return self.fail(tag, Failure::TOO_LARGE, "larger than the server's msize");
        };
        // A fitted frame is a new buffer; one that fits is the same bytes.
        if wire.as_ptr() != frame.as_ptr() {
            self.marks.hit(Mark::MsizeClamp);
        }
        if let Some(req) = self.requests.get_mut(&tag) {
            req.state = RequestState::Sent(link);
            req.sent_at = self.now;
        }
        self.emit(Output::ToLink { link, frame: wire });
    }

    /// A later Tversion resets the session: every other request is abandoned (version(5)).
    fn start_version_reset(&mut self, tag: u16) {
        let others: Vec<u16> = self
            .requests
            .keys()
            .copied()
            .filter(|&t| t != tag)
            .collect();
        for t in others {
            if let Some(req) = self.requests.remove(&t) {
                self.held_bytes -= req.frame.len();
            }
        }
        self.queue.clear();
    }

    /// The frame as the current server can take it: reads clamped and writes shortened when
    /// its msize is smaller than the client's (short reads and writes are legal 9P).
    fn fit_to_server(&self, frame: &Bytes, ty: MsgType) -> Option<Bytes> {
        let msize = self.server_msize();
        let limit = msize as usize;
        match ty {
            MsgType::Tread | MsgType::Treaddir => {
                let count = u32::from_le_bytes(frame.get(19..23)?.try_into().ok()?);
                let most = msize.saturating_sub(IOHDRSZ);
                if count <= most {
                    return Some(frame.clone());
                }
                let mut f = BytesMut::from(&frame[..]);
                f[19..23].copy_from_slice(&most.to_le_bytes());
                Some(f.freeze())
            }
            MsgType::Twrite
                if frame.len() - TWRITE_HEADER > msize.saturating_sub(IOHDRSZ) as usize =>
            {
                let keep = msize.checked_sub(IOHDRSZ)? as usize;
                let mut f = BytesMut::with_capacity(TWRITE_HEADER + keep);
                f.put_u32_le((TWRITE_HEADER + keep) as u32);
                f.put_slice(&frame[4..19]);
                f.put_u32_le(keep as u32);
                f.put_slice(&frame[TWRITE_HEADER..TWRITE_HEADER + keep]);
                Some(f.freeze())
            }
            _ if frame.len() > limit => None,
            _ => Some(frame.clone()),
        }
    }

    // ---- server input --------------------------------------------------------------------

    fn server_violation(&mut self, now: Instant, link: LinkId, what: String) {
        self.event(Event::ProtocolViolation {
            peer: Peer::Server,
            what: what.clone(),
        });
        self.abandon_link(now, link, what);
    }

    /// One whole frame from the server on `link`.
    pub fn handle_server_frame(&mut self, now: Instant, link: LinkId, frame: Bytes) {
        self.now = now;
        if self.current_link() == Some(link) {
            self.last_server_input = now;
        }
        match self.link {
            LinkState::Up { link: l } if l == link => self.server_reply(now, link, frame),
            LinkState::Recovering { link: l } if l == link => {
                if let Some(r) = &mut self.recovery {
                    let progress = r.handle_reply(now, &frame, &mut lend!(self));
                    self.recovery_progress(now, link, progress);
                }
            }
            _ => {} // a link we no longer use
        }
    }

    fn server_reply(&mut self, now: Instant, link: LinkId, frame: Bytes) {
        let header = match Header::parse(&frame) {
            Ok(h) => h,
            Err(e) => return self.server_violation(now, link, alloc::format!("bad frame: {e}")),
        };
        let tag = header.tag;
        let sent_here = self
            .requests
            .get(&tag)
            .is_some_and(|r| r.state == RequestState::Sent(link));
        if !sent_here {
            // A reply after the server's Rflush for it: the server answered before it saw the
            // flush, and sent both. Dropped; the client was told the request never happened.
            if let Some(ty) = self.flushed.remove(&tag) {
                self.marks.hit(Mark::LateReplyDropped);
                self.event(Event::LateReply { tag });
                // A request that changes fids or locks did so on the server, while the client
                // was told it never happened: the link goes, and the fids are rebuilt as the
                // client knows them.
                let failed = reply::is_error_type(header.msg_type);
                if !failed && !changes_nothing_but_data(ty) {
                    let what = alloc::format!(
                        "{} (tag {tag}) was carried out after the server answered its Tflush",
                        ty.name()
                    );
                    self.abandon_link(now, link, what);
                }
                return;
            }
            return self.server_violation(now, link, alloc::format!("reply to unknown tag {tag}"));
        }
        let Some(req) = self.requests.remove(&tag) else {
            return;
        };
        // Hot path: Rread and Rwrite are checked by their lengths alone (and a read by the count
        // it asked for).
        let len = frame.len();
        let fast = match (req.ty, MsgType::from_u8(header.msg_type)) {
            (MsgType::Tread, Some(MsgType::Rread)) => {
                len >= RREAD_HEADER as usize
                    && field_u32(&frame, 7) as usize == len - RREAD_HEADER as usize
                    && field_u32(&frame, 7) <= field_u32(&req.frame, 19)
            }
            (MsgType::Twrite, Some(MsgType::Rwrite)) => len == RWRITE_LEN,
            _ => false,
        };
        // One fid lookup: a file's read has nothing to record; a directory's is checked on the
        // general path; a write marks its fid unsynced.
        if fast && (req.ty == MsgType::Twrite || !self.is_dir_read(&req)) {
            self.held_bytes -= req.frame.len();
            if req.ty == MsgType::Twrite {
                self.apply_io_reply(&req, len);
            }
            self.answered_after_outage();
            return self.send_to_client(frame);
        }
        let dialect = if req.ty == MsgType::Tversion {
            None // before the version is settled, errors come in plain 9P2000
        } else {
            self.dialect()
        };
        // Errors in any shape are errors: forwarded in the shape the client's dialect has.
        if reply::is_error_type(header.msg_type) {
            let Some(frame) = reply::reshape_error(&frame, dialect) else {
                return self.bad_reply(now, link, tag, req, "undecodable error reply".into());
            };
            if frame.1 {
                self.marks.hit(Mark::ErrorReshaped);
            }
            self.held_bytes -= req.frame.len();
            self.apply_error(&req);
            self.answered_after_outage();
            return self.send_to_client(frame.0);
        }
        let reply = match Fcall::decode(&frame, dialect.unwrap_or(Dialect::DotL)) {
            Ok(f) => f.msg,
            Err(e) => return self.bad_reply(now, link, tag, req, alloc::format!("{e}")),
        };
        let reply_ty = reply.msg_type();
        if Some(reply_ty) != req.ty.reply() {
            let what = alloc::format!("answered with {}", reply_ty.name());
            return self.bad_reply(now, link, tag, req, what);
        }
        // The request is decoded once: to check the reply against it, and to record it.
        let request = self.decode_request(&req.frame);
        if let Some(what) = request
            .as_ref()
            .and_then(|msg| self.invalid_reply(&req, msg, &reply))
        {
            return self.bad_reply(now, link, tag, req, what);
        }
        // The msize is the smaller of what the client asked and what the server offers.
        let (frame, reply) = match (reply, &request) {
            (Msg::Rversion(mut rv), Some(Msg::Tversion(tv))) if rv.msize > tv.msize => {
                rv.msize = tv.msize;
                (reply::local(tag, rv.clone()), Msg::Rversion(rv))
            }
            (reply, _) => (frame, reply),
        };
        self.held_bytes -= req.frame.len();
        match (req.ty, request) {
            (MsgType::Tread | MsgType::Twrite, _) => self.apply_reply(&req, &reply, false),
            (_, Some(msg)) => self.record(&msg, &reply, &req.frame),
            (_, None) => {}
        }
        self.answered_after_outage();
        self.send_to_client(frame);
    }

    /// The server answered a request on a recovered link: the outage is over.
    fn answered_after_outage(&mut self) {
        if self.reset_on_reply {
            self.end_outage();
        }
    }

    /// Whether `req` reads a directory (its entries are checked before they are forwarded).
    fn is_dir_read(&self, req: &Request) -> bool {
        req.ty == MsgType::Tread
            && self
                .fids
                .get(field_u32(&req.frame, 7))
                .is_some_and(|f| f.qid.is_dir())
    }

    /// What makes a well-formed reply of the right type still wrong for its request, if
    /// anything: a walk answered with more qids than names, a read with more bytes than asked,
    /// directory entries that do not parse, an msize no one can use.
    fn invalid_reply(&self, req: &Request, msg: &Msg, reply: &Msg) -> Option<String> {
        match (msg, reply) {
            (Msg::Twalk(w), Msg::Rwalk(r)) if r.wqids.len() > w.wnames.len() => Some(
                alloc::format!("{} qids for {} names", r.wqids.len(), w.wnames.len()),
            ),
            (Msg::Tread(t), Msg::Rread(r)) if r.data.0.len() > t.count as usize => Some(
                alloc::format!("{} bytes for a read of {}", r.data.0.len(), t.count),
            ),
            (Msg::Treaddir(t), Msg::Rreaddir(r)) => {
                if r.data.0.len() > t.count as usize {
                    return Some(alloc::format!(
                        "{} bytes for a readdir of {}",
                        r.data.0.len(),
                        t.count
                    ));
                }
                dir::dirents(&r.data.0)
                    .find_map(Result::err)
                    .map(|e| alloc::format!("bad directory entry: {e}"))
            }
            (Msg::Tread(t), Msg::Rread(r)) if self.is_dir_read(req) => {
                let dialect = self.dialect().unwrap_or(Dialect::Base);
                let _ = t;
                dir::stat_records(&r.data.0, dialect)
                    .find_map(Result::err)
                    .map(|e| alloc::format!("bad directory entry: {e}"))
            }
            (Msg::Tversion(_), Msg::Rversion(rv)) if rv.msize < MIN_MSIZE => Some(alloc::format!(
                "msize {} is below the least usable, {MIN_MSIZE}",
                rv.msize
            )),
            _ => None,
        }
    }

    /// A reply that breaks the protocol, for request `tag`: the link goes (the server may be
    /// confused about what it did), and the request is resent by the replay table — but a
    /// request that draws a second bad reply is failed, never to be resent (a poison pill).
    fn bad_reply(&mut self, now: Instant, link: LinkId, tag: u16, mut req: Request, what: String) {
        req.bad_replies = req.bad_replies.saturating_add(1);
        let what = alloc::format!("{} (tag {tag}) got an invalid reply: {what}", req.ty.name());
        let poison = req.bad_replies >= 2;
        let msg = self.decode_request(&req.frame);
        self.requests.insert(tag, req);
        if poison {
            self.marks.hit(Mark::InvalidReplyFailed);
            if let Some(msg) = &msg {
                self.apply_failure(msg);
            }
            self.fail(
                tag,
                Failure::INVALID_REPLY,
                "the server's replies to it were invalid",
            );
        }
        self.server_violation(now, link, what);
    }

    /// What an error reply still does: clunk and remove forget their fid whatever the outcome.
    fn apply_error(&mut self, req: &Request) {
        if matches!(req.ty, MsgType::Tclunk | MsgType::Tremove) && req.frame.len() >= 11 {
            self.fids.remove(field_u32(&req.frame, 7));
        }
    }

    /// What a successful read or write changes: a directory's position, a fid's unsynced mark.
    fn apply_io_reply(&mut self, req: &Request, reply_len: usize) {
        let Some(rec) = self.fids.get_mut(field_u32(&req.frame, 7)) else {
            return;
        };
        if req.ty == MsgType::Twrite {
            rec.flags |= flag::UNSYNCED;
        } else if rec.qid.is_dir() {
            let offset = u64::from_le_bytes(req.frame[11..19].try_into().expect("8 bytes"));
            rec.dir_offset = offset + (reply_len - RREAD_HEADER as usize) as u64;
        }
    }

    /// Record what a reply did: the fid table changes only on success (but clunk and remove
    /// forget their fid whatever the outcome).
    fn apply_reply(&mut self, req: &Request, reply: &Msg, is_error: bool) {
        match (req.ty, reply) {
            (MsgType::Tread, Msg::Rread(r)) => {
                return self.apply_io_reply(req, RREAD_HEADER as usize + r.data.0.len())
            }
            (MsgType::Twrite, Msg::Rwrite(_)) => return self.apply_io_reply(req, RWRITE_LEN),
            _ => {}
        }
        let Some(msg) = self.decode_request(&req.frame) else {
            return;
        };
        if is_error {
            match msg {
                Msg::Tclunk(c) => drop(self.fids.remove(c.fid.0)),
                Msg::Tremove(r) => drop(self.fids.remove(r.fid.0)),
                _ => {}
            }
            return;
        }
        self.record(&msg, reply, &req.frame);
    }

    /// The fid-table effect of a successful request.
    pub(crate) fn record(&mut self, msg: &Msg, reply: &Msg, frame: &Bytes) {
        let fids = &mut self.fids;
        match (msg, reply) {
            (Msg::Tversion(_), Msg::Rversion(rv)) => {
                fids.clear();
                self.negotiated = Dialect::from_version(&rv.version).map(|dialect| Negotiated {
                    version: Bytes::copy_from_slice(&rv.version),
                    dialect,
                    msize: rv.msize,
                });
                self.server_msize = rv.msize;
            }
            (Msg::Tattach(a), Msg::Rattach(r)) => {
                let root = fids.intern_root(&a.uname, &a.aname, a.n_uname, a.afid != NOFID);
                let node = fids.root(root).node;
                let rec = fids.record_at(root, node, r.qid);
                fids.insert(a.fid.0, rec);
                fids.release_root_ref(root);
            }
            (Msg::Tauth(a), Msg::Rauth(r)) => {
                let root = fids.intern_root(&a.uname, &a.aname, a.n_uname, true);
                let node = fids.root(root).node;
                let mut rec = fids.record_at(root, node, r.aqid);
                rec.kind = FidKind::Auth;
                fids.insert(a.afid.0, rec);
                fids.release_root_ref(root);
            }
            (Msg::Twalk(w), Msg::Rwalk(r)) if r.wqids.len() == w.wnames.len() => {
                let Some(src) = fids.get(w.fid.0) else {
                    return;
                };
                let (root, start, src_qid) = (src.root, src.node, src.qid);
                let mut node = start;
                fids.names.retain(node);
                for name in w.wnames.iter() {
                    let next = fids.names.child(node, name);
                    fids.names.release(node);
                    node = next;
                }
                let qid = r.wqids.last().unwrap_or(src_qid);
                let rec = fids.record_at(root, node, qid);
                fids.names.release(node);
                fids.insert(w.newfid.0, rec);
            }
            (Msg::Topen(o), Msg::Ropen(r)) => open(fids, o.fid.0, o.mode as u32, r.qid, false),
            (Msg::Tlopen(o), Msg::Rlopen(r)) => open(fids, o.fid.0, o.flags, r.qid, true),
            (Msg::Tcreate(c), Msg::Rcreate(r)) => {
                move_to_child(fids, c.fid.0, &c.name);
                open(fids, c.fid.0, c.mode as u32, r.qid, false)
            }
            (Msg::Tlcreate(c), Msg::Rlcreate(r)) => {
                move_to_child(fids, c.fid.0, &c.name);
                open(fids, c.fid.0, c.flags, r.qid, true)
            }
            (Msg::Tclunk(c), _) => drop(fids.remove(c.fid.0)),
            (Msg::Tremove(r), _) => drop(fids.remove(r.fid.0)),
            (Msg::Twstat(w), Msg::Rwstat(_)) if !w.stat.name.is_empty() => {
                if let Some(node) = fids.get(w.fid.0).map(|f| f.node) {
                    if let Some(parent) = fids.names.parent(node) {
                        fids.names.rename(node, parent, &w.stat.name);
                    }
                }
            }
            (Msg::Trename(t), Msg::Rrename(_)) => {
                let (Some(node), Some(dir)) = (
                    fids.get(t.fid.0).map(|f| f.node),
                    fids.get(t.dfid.0).map(|f| f.node),
                ) else {
                    return;
                };
                fids.names.rename(node, dir, &t.name);
            }
            (Msg::Trenameat(t), Msg::Rrenameat(_)) => {
                let (Some(old), Some(new)) = (
                    fids.get(t.olddirfid.0).map(|f| f.node),
                    fids.get(t.newdirfid.0).map(|f| f.node),
                ) else {
                    return;
                };
                if let Some(node) = fids.names.lookup(old, &t.oldname) {
                    fids.names.rename(node, new, &t.newname);
                }
            }
            (Msg::Treaddir(t), Msg::Rreaddir(r)) => {
                let last = dir::dirents(&r.data.0).filter_map(Result::ok).last();
                if let Some(rec) = fids.get_mut(t.fid.0) {
                    rec.dir_offset = last.map_or(t.offset, |d| d.offset);
                }
            }
            (Msg::Tfsync(f), Msg::Rfsync(_)) => {
                if let Some(rec) = fids.get_mut(f.fid.0) {
                    rec.flags &= !(flag::UNSYNCED | flag::WRITES_LOST);
                }
            }
            (Msg::Tlock(l), Msg::Rlock(r)) if r.status == p9_core::lock_status::SUCCESS => {
                let max = self.cfg.max_lock_history;
                if let Some(rec) = fids.get_mut(l.fid.0) {
                    if l.typ == p9_core::lock_type::UNLCK && l.start == 0 && l.length == 0 {
                        rec.locks = None;
                    } else {
                        let history = rec.locks.get_or_insert_with(Default::default);
                        if history.0.len() < max {
                            history.0.push(frame.clone());
                        } else {
                            rec.flags |= flag::LOCKS_OVERFLOWED;
                        }
                    }
                }
            }
            (Msg::Txattrwalk(x), Msg::Rxattrwalk(_)) => {
                if let Some((root, node, qid)) = fids.get(x.fid.0).map(|f| (f.root, f.node, f.qid))
                {
                    let mut rec = fids.record_at(root, node, qid);
                    rec.kind = FidKind::Xattr;
                    fids.insert(x.newfid.0, rec);
                }
            }
            (Msg::Txattrcreate(x), Msg::Rxattrcreate(_)) => {
                if let Some(rec) = fids.get_mut(x.fid.0) {
                    rec.kind = FidKind::Xattr;
                }
            }
            (Msg::Tflush(f), Msg::Rflush(_)) => {
                // flush(5): after Rflush the old request gets no reply (one that comes anyway is
                // dropped).
                if let Some(old) = self.requests.remove(&f.oldtag) {
                    self.held_bytes -= old.frame.len();
                    if matches!(old.state, RequestState::Sent(_)) {
                        self.flushed.insert(f.oldtag, old.ty);
                    }
                }
            }
            _ => {}
        }
    }
}

fn lost_fid(fids: &FidTable, msg: &Msg) -> Option<LostReason> {
    msg.used_fids()
        .as_slice()
        .iter()
        .find_map(|&f| fids.get(f).and_then(FidRec::is_lost))
}

fn lost_failure(reason: LostReason) -> Failure {
    match reason {
        LostReason::Stale => Failure::STALE,
        LostReason::Io => Failure::IO,
    }
}

fn open(fids: &mut FidTable, fid: u32, mode: u32, qid: Qid, dotl: bool) {
    if let Some(rec) = fids.get_mut(fid) {
        rec.kind = FidKind::Open;
        rec.mode = mode;
        rec.qid = qid;
        rec.dir_offset = 0;
        if dotl {
            rec.flags |= flag::DOTL_FLAGS;
        } else {
            rec.flags &= !flag::DOTL_FLAGS;
        }
    }
}

/// Tcreate/Tlcreate: the fid becomes the new file inside the directory it stood for.
fn move_to_child(fids: &mut FidTable, fid: u32, name: &[u8]) {
    let Some(node) = fids.get(fid).map(|f| f.node) else {
        return;
    };
    let child = fids.names.child(node, name);
    fids.names.release(node);
    if let Some(rec) = fids.get_mut(fid) {
        rec.node = child;
    }
}
