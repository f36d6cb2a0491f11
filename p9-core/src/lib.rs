//! The 9P wire protocol — 9P2000, 9P2000.u and 9P2000.L — without I/O.
//!
//! - [`Fcall`] decodes and encodes every message of the three dialects. The dialect is given at
//!   decode time because the same type numbers carry different bodies (and some exist only in
//!   one dialect). Decoding is strict and total: it returns a [`DecodeError`] for any malformed
//!   input and never panics.
//! - Decoding is zero-copy: a frame is a [`bytes::Bytes`], and the strings and payloads of the
//!   decoded message are slices of it.
//! - [`Header`] and [`request_fids`] read the size, type, tag and fids of a frame without
//!   decoding it, [`peek`] the fields of the read/write hot path; [`set_tag`] rewrites a tag
//!   in place.
//! - [`FrameDecoder`] cuts a byte stream into frames, bounded by the negotiated msize.
//! - [`dir`] iterates directory contents (stat records, .L dirents) and rewrites their qids.
//! - [`client`] is a small sans-IO 9P client: tags, fids, replies matched to requests.
//!
//! ```
//! use bytes::Bytes;
//! use p9_core::{Dialect, Fcall, Msg, Tread, Fid};
//!
//! let frame = Fcall::new(1, Tread { fid: Fid(3), offset: 0, count: 8192 }).to_frame().unwrap();
//! let back = Fcall::decode(&frame, Dialect::DotL).unwrap();
//! assert!(matches!(back.msg, Msg::Tread(Tread { count: 8192, .. })));
//! ```
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "arbitrary")]
pub mod arbitrary;
pub mod client;
pub mod dir;
mod error;
mod frame;
mod message;
pub mod peek;
mod types;
mod wire;

pub use error::{DecodeError, DecodeErrorKind, EncodeError};
pub use frame::{FrameDecoder, FrameError};
pub use message::*;
pub use types::*;
pub use wire::{Data, Fid, FidList, Reader, Wire, NOFID};

/// The protocol dialect a session negotiated with Tversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// `9P2000`: Plan 9 and Inferno (Styx).
    Base,
    /// `9P2000.u`: Unix extensions (numeric ids, errno, special files).
    DotU,
    /// `9P2000.L`: Linux extensions (the Linux kernel client, diod, QEMU).
    DotL,
}

impl Dialect {
    pub const ALL: [Dialect; 3] = [Dialect::Base, Dialect::DotU, Dialect::DotL];

    /// The version string a Tversion carries for this dialect.
    pub fn version_string(self) -> &'static str {
        match self {
            Dialect::Base => "9P2000",
            Dialect::DotU => "9P2000.u",
            Dialect::DotL => "9P2000.L",
        }
    }

    /// The dialect an Rversion's version string names exactly, if any.
    pub fn from_version(version: &[u8]) -> Option<Dialect> {
        Dialect::ALL
            .into_iter()
            .find(|d| d.version_string().as_bytes() == version)
    }

    /// What a server speaking all three dialects answers to a client's version string, as
    /// version(5) says: an exact match, else plain 9P2000 for `9P2000.anything`, else none
    /// (reply "unknown").
    pub fn negotiate(client_version: &[u8]) -> Option<Dialect> {
        Dialect::from_version(client_version).or_else(|| {
            client_version
                .strip_prefix(b"9P2000.")
                .map(|_| Dialect::Base)
        })
    }

    /// Whether the dialect has the 9P2000.u extension fields (n_uname, errno, ...).
    pub fn is_extended(self) -> bool {
        self != Dialect::Base
    }
}

impl core::fmt::Display for Dialect {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.version_string())
    }
}
