//! Why a session wants to be woken. Every deadline is derived from the session's state in one
//! place ([`Session::timer`](crate::Session::timer)), so `poll_timeout` and `handle_timeout`
//! cannot disagree, and a driver or a log can say what it is waiting for.

/// A reason for a deadline; a session has at most one deadline per reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Timer {
    /// The client must have sent its Tversion by then, or it is closed.
    VersionTimeout,
    /// The next dial of the backend.
    Redial,
    /// A dial not completed by then is abandoned.
    DialWatchdog,
    /// A recovery that has made no progress by then is abandoned, and the backend redialed.
    RecoveryWatchdog,
    /// An exclusive open the server refused during recovery is tried again.
    ExclusiveRetry,
    /// Soft mode: held requests fail with EIO.
    GiveUp,
    /// A live link with requests waiting is checked for a silent (hung) server.
    ServerSilence,
}

impl Timer {
    /// Every reason, in the order deadlines at the same instant are reported.
    pub const ALL: [Timer; 7] = [
        Timer::VersionTimeout,
        Timer::Redial,
        Timer::DialWatchdog,
        Timer::RecoveryWatchdog,
        Timer::ExclusiveRetry,
        Timer::GiveUp,
        Timer::ServerSilence,
    ];
}
