//! The re-authentication hook: how a session redoes an authenticated attach after a reconnect.
//!
//! An [`Authenticator`] starts one [`AuthConversation`] per root; the recovery pipeline carries
//! the conversation over an auth fid (Tauth, then Twrite/Tread as it asks) and attaches with that
//! afid when it says [`AuthStep::Done`]. Without an authenticator, fids of authenticated attaches
//! become stale after a reconnect.

use alloc::boxed::Box;

use bytes::Bytes;

/// What the conversation learns from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthInput<'a> {
    /// The auth fid exists; say the first step.
    Start,
    /// A read step returned these bytes.
    Read(&'a [u8]),
    /// A write step was accepted (this many bytes).
    Wrote(u32),
}

/// What the conversation wants next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthStep {
    /// Write these bytes to the auth fid.
    Write(Bytes),
    /// Read up to this many bytes from the auth fid.
    Read(u32),
    /// Authenticated: attach with the auth fid.
    Done,
    /// Give up: the root's fids become stale.
    Fail,
}

/// One authentication exchange, driven by the session. Must be deterministic (no I/O); `Send`
/// so a session can move between threads.
pub trait AuthConversation: Send {
    fn step(&mut self, input: AuthInput<'_>) -> AuthStep;
}

/// Starts conversations for roots that were attached with authentication.
pub trait Authenticator: Send {
    /// A conversation authenticating `uname` for the tree `aname`.
    fn converse(&self, uname: &[u8], aname: &[u8]) -> Box<dyn AuthConversation>;
}
