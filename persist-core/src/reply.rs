//! Replies the session makes itself: errors in the form of the negotiated dialect, and the
//! few success replies it answers locally.

use bytes::Bytes;
use p9_core::{errno, Dialect, Fcall, Msg, Rerror, Rlerror};

/// An error the session answers with: the 9P2000 message, the errno for .u and .L.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    pub ename: &'static str,
    pub errno: u32,
}

impl Failure {
    /// A non-idempotent request was in flight when the link died.
    pub const NOT_COMPLETED: Failure = Failure {
        ename: "operation possibly not completed",
        errno: errno::EIO,
    };
    /// The fid could not be rebuilt after a reconnect.
    pub const STALE: Failure = Failure {
        ename: "unable to reopen file",
        errno: errno::ESTALE,
    };
    /// The fid was open on a backend that failed.
    pub const IO: Failure = Failure {
        ename: "i/o error",
        errno: errno::EIO,
    };
    /// Soft mode gave up waiting for the server.
    pub const UNAVAILABLE: Failure = Failure {
        ename: "file server unavailable",
        errno: errno::EIO,
    };
    /// Writes acknowledged on a lost link were never made durable.
    pub const WRITES_LOST: Failure = Failure {
        ename: "written data possibly lost",
        errno: errno::EIO,
    };
    /// A request before Tversion.
    pub const NOT_VERSIONED: Failure = Failure {
        ename: "version not negotiated",
        errno: errno::EPROTO,
    };
    /// A request that does not decode.
    pub const MALFORMED: Failure = Failure {
        ename: "malformed message",
        errno: errno::EINVAL,
    };
    /// A request that cannot fit the current server's smaller msize.
    pub const TOO_LARGE: Failure = Failure {
        ename: "message too large for the server",
        errno: errno::EINVAL,
    };

    /// The error reply for `tag` in `dialect` (plain 9P2000 before a version is settled).
    pub fn reply(&self, tag: u16, dialect: Option<Dialect>) -> Bytes {
        let msg: Msg = match dialect {
            Some(Dialect::DotL) => Rlerror { ecode: self.errno }.into(),
            Some(Dialect::DotU) => Rerror {
                ename: Bytes::from_static(self.ename.as_bytes()),
                errno: Some(self.errno),
            }
            .into(),
            Some(Dialect::Base) | None => Rerror {
                ename: Bytes::from_static(self.ename.as_bytes()),
                errno: None,
            }
            .into(),
        };
        local(tag, msg)
    }
}

/// Encode a reply the session makes itself (always small and valid).
pub(crate) fn local(tag: u16, msg: impl Into<Msg>) -> Bytes {
    Fcall::new(tag, msg)
        .to_frame()
        .expect("locally made replies encode")
}
