//! A sans-IO in-memory 9P file server for 9P2000, 9P2000.u and 9P2000.L.
//!
//! - [`Fs`] is the file tree, "the disk": directories, files, symlinks and device nodes, with
//!   qids whose paths are never reused and whose versions change with the contents. It survives
//!   its connections, so a crash is modelled by dropping every [`Conn`] and keeping the `Fs`.
//! - [`Conn`] is one client connection: negotiated dialect and msize, fids, opens. It turns one
//!   request frame into one reply frame with [`Conn::handle`]; there is no I/O, no clock (time is
//!   what [`Fs::set_time`] says) and no randomness, so the same requests give the same replies.
//!
//! Any bytes are a valid input: a frame that does not decode gets an error reply with its tag,
//! and every allocation a request can cause is bounded by the msize or by [`Limits`].
//!
//! ```
//! use bytes::Bytes;
//! use p9_core::{Dialect, Fcall, Msg, Tversion, NOTAG};
//! use ramfs::{Conn, Fs};
//!
//! let mut fs = Fs::new();
//! fs.write_file("/motd", b"hello\n").unwrap();
//!
//! let mut conn = Conn::new(&mut fs, 8192);
//! let tversion = Fcall::new(NOTAG, Tversion { msize: 65536, version: Bytes::from("9P2000.L") });
//! let reply = conn.handle(&mut fs, &tversion.to_frame().unwrap());
//!
//! let rversion = Fcall::decode(&reply, Dialect::DotL).unwrap();
//! assert!(matches!(rversion.msg, Msg::Rversion(r) if r.msize == 8192));
//! assert_eq!(conn.dialect(), Some(Dialect::DotL));
//! ```
//!
//! What each dialect gets:
//!
//! | | 9P2000 | 9P2000.u | 9P2000.L |
//! |---|---|---|---|
//! | files, directories | yes | yes | yes |
//! | symlinks, devices, pipes, sockets | — | Tcreate with `DMSYMLINK`, `DMDEVICE` ("c 1 3"), `DMNAMEDPIPE`, `DMSOCKET` | Tsymlink, Tmknod |
//! | hard links | — | Tcreate with `DMLINK`, extension = the target's fid | Tlink |
//! | append-only, exclusive-use files | `DMAPPEND`, `DMEXCL` | the same | made with [`Fs::set_mode`]; O_APPEND opens |
//! | directory listing | Tread: stat records, from offset 0 or where the last read ended | the same | Treaddir: dirents with stable cookies |
//! | byte-range locks | — | — | Tlock (F_SETLK, never blocks), Tgetlock |
//! | extended attributes | — | — | none: the name list is empty (size 0), a named one is ENODATA, Txattrcreate is EOPNOTSUPP |
//! | authentication | none: Tauth is an error, aname must be "" or "/" | the same | the same |
//!
//! Permission bits are stored and reported but never enforced.
//!
//! A crash: drop every `Conn` and keep the `Fs`. The dropped connections' locks and exclusive
//! opens stop counting at once; their ORCLOSE files stay (as on a disk after a crash); removed
//! files only they held open are freed at the tree's next request ([`Fs::sweep`]). New
//! connections must version and attach again.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod classic;
mod conn;
mod dotl;
mod error;
mod fs;
mod inode;
mod lock;
mod owner;
mod stat;

pub use conn::{Conn, DEFAULT_MSIZE, MIN_MSIZE};
pub use error::Error;
pub use fs::{Fs, Limits, NAME_MAX, PATH_MAX};
pub use lock::{lock_status, lock_type};
