//! Replies the session makes itself: errors in the form of the negotiated dialect, and the
//! few success replies it answers locally.

use bytes::Bytes;
use p9_core::{errno, Dialect, Fcall, Msg, Rerror, Rlerror};

/// An error the session answers with: the message for 9P2000.u (with the errno), the errno for
/// .L, and for plain 9P2000 a message the Linux client's error table maps to an errno (it knows
/// nothing else: an unknown string becomes "Unknown error 526").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    pub ename: &'static str,
    pub errno: u32,
    pub base_ename: &'static str,
}

impl Failure {
    /// A non-idempotent request was in flight when the link died.
    pub const NOT_COMPLETED: Failure = Failure {
        ename: "operation possibly not completed",
        errno: errno::EIO,
        base_ename: "i/o error",
    };
    /// The fid could not be rebuilt after a reconnect.
    pub const STALE: Failure = Failure {
        ename: "unable to reopen file",
        errno: errno::ESTALE,
        // Linux's table has no string for ESTALE; a fid gone bad is EBADF.
        base_ename: "fid unknown or out of range",
    };
    /// The fid was open on a backend that failed.
    pub const IO: Failure = Failure {
        ename: "i/o error",
        errno: errno::EIO,
        base_ename: "i/o error",
    };
    /// Soft mode gave up waiting for the server.
    pub const UNAVAILABLE: Failure = Failure {
        ename: "file server unavailable",
        errno: errno::EIO,
        base_ename: "i/o error",
    };
    /// Writes acknowledged on a lost link were never made durable.
    pub const WRITES_LOST: Failure = Failure {
        ename: "written data possibly lost",
        errno: errno::EIO,
        base_ename: "i/o error",
    };
    /// The server's replies to the request broke the protocol (twice: it is not resent).
    pub const INVALID_REPLY: Failure = Failure {
        ename: "server sent an invalid reply",
        errno: errno::EIO,
        base_ename: "i/o error",
    };
    /// A mux's service root path is not on the backend (the client's Tattach fails).
    pub const NO_SERVICE_ROOT: Failure = Failure {
        ename: "service root not found",
        errno: errno::ENOENT,
        base_ename: "file does not exist",
    };
    /// A walk that would leave a mux's service root upwards (`..` at the root): the service's
    /// path is the top of the tree clients see.
    pub const ABOVE_SERVICE_ROOT: Failure = Failure {
        ename: "file does not exist",
        errno: errno::ENOENT,
        base_ename: "file does not exist",
    };
    /// A request before Tversion.
    pub const NOT_VERSIONED: Failure = Failure {
        ename: "version not negotiated",
        errno: errno::EPROTO,
        base_ename: "protocol botch",
    };
    /// A request that does not decode.
    pub const MALFORMED: Failure = Failure {
        ename: "malformed message",
        errno: errno::EINVAL,
        base_ename: "Invalid argument",
    };
    /// A request that cannot fit the current server's smaller msize.
    pub const TOO_LARGE: Failure = Failure {
        ename: "message too large for the server",
        errno: errno::EINVAL,
        base_ename: "Invalid argument",
    };

    /// A short name for the failures a session reports as events (metrics label them so):
    /// `not_completed`, `gave_up`, `writes_lost`, `invalid_reply`; `other` for the rest.
    pub fn kind(&self) -> &'static str {
        match *self {
            Failure::NOT_COMPLETED => "not_completed",
            Failure::UNAVAILABLE => "gave_up",
            Failure::WRITES_LOST => "writes_lost",
            Failure::INVALID_REPLY => "invalid_reply",
            Failure::STALE => "stale",
            Failure::IO => "io",
            _ => "other",
        }
    }

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
                ename: Bytes::from_static(self.base_ename.as_bytes()),
                errno: None,
            }
            .into(),
        };
        local(tag, msg)
    }
}

/// Errno values and the messages Linux's 9P client maps back to them (its error table), for
/// errors that must cross from .L to a dialect of strings, or back.
const ERRNO_NAMES: &[(u32, &str)] = &[
    (1, "Operation not permitted"),
    (2, "No such file or directory"),
    (4, "Interrupted system call"),
    (5, "Input/output error"),
    (6, "No such device or address"),
    (9, "Bad file descriptor"),
    (11, "Resource temporarily unavailable"),
    (12, "Cannot allocate memory"),
    (13, "Permission denied"),
    (16, "Device or resource busy"),
    (17, "File exists"),
    (18, "Invalid cross-device link"),
    (19, "No such device"),
    (20, "Not a directory"),
    (21, "Is a directory"),
    (22, "Invalid argument"),
    (23, "Too many open files in system"),
    (24, "Too many open files"),
    (26, "Text file busy"),
    (27, "File too large"),
    (28, "No space left on device"),
    (29, "Illegal seek"),
    (30, "Read-only file system"),
    (31, "Too many links"),
    (32, "Broken pipe"),
    (34, "Numerical result out of range"),
    (36, "File name too long"),
    (37, "No locks available"),
    (38, "Function not implemented"),
    (39, "Directory not empty"),
    (40, "Too many levels of symbolic links"),
    (61, "No data available"),
    (71, "Protocol error"),
    (74, "Bad message"),
    (95, "Operation not supported"),
    (110, "Connection timed out"),
    (122, "Disk quota exceeded"),
];

fn errno_name(errno: u32) -> &'static str {
    match errno {
        // No string in the table means ESTALE; a handle gone bad is EBADF.
        116 => "Bad file descriptor",
        _ => ERRNO_NAMES
            .iter()
            .find(|(n, _)| *n == errno)
            .map_or("Input/output error", |(_, s)| s),
    }
}

fn name_errno(name: &[u8]) -> u32 {
    ERRNO_NAMES
        .iter()
        .find(|(_, s)| s.as_bytes() == name)
        .map_or(errno::EIO, |(n, _)| *n)
}

/// The server's error in words, if `reply` is an error.
pub(crate) fn describe_error(reply: &Msg) -> Option<alloc::string::String> {
    match reply {
        Msg::Rlerror(e) => Some(alloc::format!(
            "{} (errno {})",
            errno_name(e.ecode),
            e.ecode
        )),
        Msg::Rerror(e) => Some(alloc::string::String::from_utf8_lossy(&e.ename).into_owned()),
        _ => None,
    }
}

/// Whether `reply` says a name was not found (the path is gone, not the server in trouble).
pub(crate) fn is_not_found(reply: &Msg) -> bool {
    match reply {
        Msg::Rlerror(e) => e.ecode == errno::ENOENT,
        Msg::Rerror(e) => {
            e.errno == Some(errno::ENOENT) || {
                let text = alloc::string::String::from_utf8_lossy(&e.ename).to_lowercase();
                ["not found", "no such file", "does not exist", "not exist"]
                    .iter()
                    .any(|w| text.contains(w))
            }
        }
        _ => false,
    }
}

/// Whether a message type is an error reply (Rerror or Rlerror, in any dialect).
pub(crate) fn is_error_type(ty: u8) -> bool {
    p9_core::MsgType::from_u8(ty).is_some_and(p9_core::MsgType::is_error)
}

/// An error reply in whatever shape the server sent it — Rlerror, Rerror with a message and
/// perhaps an errno, or an Rerror carrying a bare errno (as some .L servers send) — in the shape
/// of the client's `dialect` (plain 9P2000 before one is settled). The frame is kept when it
/// already has that shape; the flag says whether it was reshaped. `None` if it does not parse.
pub(crate) fn reshape_error(frame: &Bytes, dialect: Option<Dialect>) -> Option<(Bytes, bool)> {
    let ty = *frame.get(4)?;
    let tag = u16::from_le_bytes([*frame.get(5)?, *frame.get(6)?]);
    let body = frame.get(7..)?;
    let word = |b: &[u8]| b.try_into().ok().map(u32::from_le_bytes);
    // What the server said: a message and/or an errno.
    let (ename, errno): (Option<&[u8]>, Option<u32>) = if ty == p9_core::MsgType::Rlerror as u8 {
        (None, Some(word(body)?))
    } else {
        let text = body
            .get(..2)
            .map(|n| u16::from_le_bytes([n[0], n[1]]) as usize)
            .and_then(|n| body.get(2..2 + n).map(|t| (t, &body[2 + n..])));
        match (text, dialect) {
            // A .L server's Rerror with only an errno.
            (_, Some(Dialect::DotL)) if body.len() == 4 => (None, word(body)),
            (Some((t, [])), _) => (Some(t), None),
            (Some((t, rest)), _) if rest.len() == 4 => (Some(t), word(rest).filter(|&e| e != 0)),
            _ if body.len() == 4 => (None, word(body)),
            _ => return None,
        }
    };
    let kept = match dialect {
        Some(Dialect::DotL) => ty == p9_core::MsgType::Rlerror as u8,
        Some(Dialect::DotU) => ename.is_some() && errno.is_some(),
        Some(Dialect::Base) | None => ename.is_some() && errno.is_none(),
    };
    if kept {
        return Some((frame.clone(), false));
    }
    let errno = errno.unwrap_or_else(|| ename.map_or(errno::EIO, name_errno));
    let ename = || match ename {
        Some(t) => Bytes::copy_from_slice(t),
        None => Bytes::from_static(errno_name(errno).as_bytes()),
    };
    let msg: Msg = match dialect {
        Some(Dialect::DotL) => Rlerror { ecode: errno }.into(),
        Some(Dialect::DotU) => Rerror {
            ename: ename(),
            errno: Some(errno),
        }
        .into(),
        Some(Dialect::Base) | None => Rerror {
            ename: ename(),
            errno: None,
        }
        .into(),
    };
    Some((local(tag, msg), true))
}

/// Encode a reply the session makes itself (always small and valid).
pub(crate) fn local(tag: u16, msg: impl Into<Msg>) -> Bytes {
    Fcall::new(tag, msg)
        .to_frame()
        .expect("locally made replies encode")
}
