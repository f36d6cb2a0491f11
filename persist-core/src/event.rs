//! What a session gives back: outputs the driver must carry out, and events it may log.

use alloc::string::String;
use core::time::Duration;

use bytes::Bytes;
use p9_core::MsgType;

use crate::fids::LostReason;

/// A backend: one server the session can dial (the mux has several).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendId(pub u32);

/// One connection to a backend, named by the session when it asks for the dial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u64);

/// Work for the driver, in the order it must be done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send this frame to the client.
    ToClient(Bytes),
    /// Send this frame on the link.
    ToLink { link: LinkId, frame: Bytes },
    /// Connect to the backend; report `handle_link_up(link)` or `handle_dial_failed(link)`.
    Dial { link: LinkId, backend: BackendId },
    /// Close the link; report nothing more about it.
    CloseLink { link: LinkId },
    /// Close the client connection: the session is over.
    CloseClient,
}

/// Which side broke the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Client,
    Server,
}

/// How a link to a backend came to an end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkLoss {
    /// The connection ended or failed (the runtime saw end of stream, or a read or write
    /// error).
    Closed,
    /// The server broke the protocol; the session dropped the link.
    Violation,
    /// The server sent nothing for the server timeout while requests waited.
    Silent,
    /// A dial did not complete within the watchdog time.
    DialTimeout,
    /// A recovery made no progress within the watchdog time.
    RecoveryStalled,
}

/// Something worth telling an operator. Events never need an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A link to a backend is up and usable.
    Connected { backend: BackendId, link: LinkId },
    /// The link to the server was lost: `loss` says how (backend health is judged by it),
    /// `reason` says it in words.
    Disconnected {
        backend: BackendId,
        link: LinkId,
        loss: LinkLoss,
        reason: String,
    },
    /// The next dial happens after `delay` (`attempt` counts from 1).
    Redialing { attempt: u32, delay: Duration },
    /// A dial failed.
    DialFailed { backend: BackendId, reason: String },
    /// Service resumed after a reconnect: `fids` rebuilt, `stale` lost, in `elapsed`.
    Recovered {
        fids: usize,
        stale: usize,
        elapsed: Duration,
    },
    /// A fid could not be kept.
    FidLost {
        fid: u32,
        reason: LostReason,
        /// Why, in words: the session's reason, or the server's own error.
        why: alloc::borrow::Cow<'static, str>,
    },
    /// A request was answered with an error because it may have happened on a lost link (or,
    /// in soft mode, because the server stayed away too long, or because the server's replies
    /// to it were invalid twice).
    RequestFailed {
        tag: u16,
        request: MsgType,
        /// The error the client was sent; [`Failure::kind`](crate::Failure::kind) names it.
        failure: crate::Failure,
        why: &'static str,
    },
    /// A create, remove, link or rename in flight when its link died was looked for on the new
    /// link: `done` — it had happened, and was answered as done; otherwise it observably had
    /// not, and was sent again. (When what the server shows settles nothing, the request
    /// fails: [`RequestFailed`](Event::RequestFailed).)
    OutcomeResolved {
        tag: u16,
        request: MsgType,
        done: bool,
    },
    /// Soft mode: the outage passed the give-up time; requests now fail until the server is back.
    GaveUp { outage: Duration },
    /// A recovery made no progress for the watchdog time and was abandoned.
    RecoveryStalled { link: LinkId },
    /// A peer broke the protocol; the client's session or the server's link was closed.
    ProtocolViolation { peer: Peer, what: String },
    /// The client went away; the session is over.
    ClientClosed,
    /// The server answered tag `tag` after it had answered its Tflush; the reply was dropped.
    LateReply { tag: u16 },
    /// The session moved to another backend (mux): `open_fids_lost` fids were open on the one
    /// that failed and now answer I/O errors until clunked.
    Failover {
        from: BackendId,
        to: BackendId,
        open_fids_lost: usize,
    },
}

impl Event {
    /// The event's name in snake case, stable for machine-readable logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Connected { .. } => "connected",
            Event::Disconnected { .. } => "disconnected",
            Event::Redialing { .. } => "redialing",
            Event::DialFailed { .. } => "dial_failed",
            Event::Recovered { .. } => "recovered",
            Event::FidLost { .. } => "fid_lost",
            Event::RequestFailed { .. } => "request_failed",
            Event::OutcomeResolved { .. } => "outcome_resolved",
            Event::GaveUp { .. } => "gave_up",
            Event::RecoveryStalled { .. } => "recovery_stalled",
            Event::ProtocolViolation { .. } => "protocol_violation",
            Event::ClientClosed => "client_closed",
            Event::LateReply { .. } => "late_reply",
            Event::Failover { .. } => "failover",
        }
    }
}
