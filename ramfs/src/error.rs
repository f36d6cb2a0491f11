//! The errors the server answers with: each is one Linux errno and one Plan 9-style message,
//! sent in the form the connection's dialect uses.

use core::fmt;

use bytes::Bytes;
use p9_core::errno::*;
use p9_core::{Dialect, Msg, Rerror, Rlerror};

/// Linux errno values that `p9_core::errno` does not name.
mod errno_ext {
    pub const ENXIO: u32 = 6;
    pub const EBUSY: u32 = 16;
    pub const EMFILE: u32 = 24;
    pub const EFBIG: u32 = 27;
    pub const ELOOP: u32 = 40;
    pub const ENODATA: u32 = 61;
    pub const EMSGSIZE: u32 = 90;
    /// Also `ENOTSUP` on Linux.
    pub const EOPNOTSUPP: u32 = 95;
}
use errno_ext::*;

/// Why a request failed. 9P2000 clients see [`ename`](Error::ename), 9P2000.u clients both,
/// 9P2000.L clients only [`errno`](Error::errno).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    errno: u32,
    ename: &'static str,
}

impl Error {
    const fn new(errno: u32, ename: &'static str) -> Error {
        Error { errno, ename }
    }

    /// The Linux errno (Rlerror's `ecode`, Rerror's `errno` in 9P2000.u).
    pub fn errno(&self) -> u32 {
        self.errno
    }

    /// The message (Rerror's `ename`).
    pub fn ename(&self) -> &'static str {
        self.ename
    }

    /// The error reply in the form of `dialect`; before a version is negotiated, 9P2000's.
    pub(crate) fn to_msg(self, dialect: Option<Dialect>) -> Msg {
        let ename = Bytes::from_static(self.ename.as_bytes());
        match dialect {
            Some(Dialect::DotL) => Rlerror { ecode: self.errno }.into(),
            Some(Dialect::DotU) => Rerror {
                ename,
                errno: Some(self.errno),
            }
            .into(),
            Some(Dialect::Base) | None => Rerror { ename, errno: None }.into(),
        }
    }

    // Files and names.
    pub const NOT_FOUND: Error = Error::new(ENOENT, "file does not exist");
    pub const EXISTS: Error = Error::new(EEXIST, "file already exists");
    pub const NOT_DIR: Error = Error::new(ENOTDIR, "not a directory");
    pub const IS_DIR: Error = Error::new(EISDIR, "is a directory");
    pub const NOT_EMPTY: Error = Error::new(ENOTEMPTY, "directory not empty");
    pub const BAD_NAME: Error = Error::new(EINVAL, "bad file name");
    pub const NAME_TOO_LONG: Error = Error::new(ENAMETOOLONG, "file name too long");
    pub const REMOVED: Error = Error::new(ESTALE, "file has been removed");
    pub const ROOT: Error = Error::new(EBUSY, "cannot remove or rename the root");
    pub const NOT_SYMLINK: Error = Error::new(EINVAL, "not a symbolic link");
    pub const IS_SYMLINK: Error = Error::new(ELOOP, "is a symbolic link");
    pub const SPECIAL: Error = Error::new(ENXIO, "cannot open a device, pipe or socket");
    pub const NOT_FILE: Error = Error::new(EINVAL, "not a regular file");
    pub const LINK_DIR: Error = Error::new(EPERM, "cannot link a directory");
    pub const INTO_ITSELF: Error = Error::new(EINVAL, "cannot move a directory into itself");
    pub const DIR_BIT: Error = Error::new(EINVAL, "cannot change a file's directory bit");
    pub const DIR_LENGTH: Error = Error::new(EISDIR, "cannot change a directory's length");
    pub const INVALID: Error = Error::new(EINVAL, "invalid argument");

    // Limits.
    pub const FILE_TOO_BIG: Error = Error::new(EFBIG, "file too large");
    pub const NO_SPACE: Error = Error::new(ENOSPC, "file system full");
    pub const TOO_MANY_FIDS: Error = Error::new(EMFILE, "too many fids");

    // Fids and opens.
    pub const UNKNOWN_FID: Error = Error::new(EBADF, "unknown fid");
    pub const FID_IN_USE: Error = Error::new(EBADF, "fid already in use");
    pub const FID_OPEN: Error = Error::new(EBADF, "fid is open");
    pub const NOT_OPEN: Error = Error::new(EBADF, "fid not open");
    pub const NOT_READABLE: Error = Error::new(EBADF, "file not open for reading");
    pub const NOT_WRITABLE: Error = Error::new(EBADF, "file not open for writing");
    pub const XATTR_FID: Error = Error::new(EINVAL, "fid is an xattr fid");
    pub const EXCLUSIVE: Error = Error::new(EBUSY, "exclusive use file already open");
    pub const BAD_OFFSET: Error = Error::new(EINVAL, "bad offset in directory read");
    pub const SHORT_COUNT: Error = Error::new(EINVAL, "count too small for a directory entry");

    // Extended attributes.
    pub const NO_XATTR: Error = Error::new(ENODATA, "no such attribute");
    pub const XATTR_UNSUPPORTED: Error =
        Error::new(EOPNOTSUPP, "extended attributes not supported");

    // The session.
    pub const NO_AUTH: Error = Error::new(EOPNOTSUPP, "authentication not required");
    pub const BAD_ANAME: Error = Error::new(ENOENT, "no such attach name");
    pub const NOT_VERSIONED: Error = Error::new(EPROTO, "version not negotiated");
    pub const MSIZE_TOO_SMALL: Error = Error::new(EINVAL, "msize too small");
    pub const BAD_MESSAGE: Error = Error::new(EPROTO, "malformed message");
    pub const UNKNOWN_TYPE: Error = Error::new(ENOSYS, "message type not in this dialect");
    pub const NOT_REQUEST: Error = Error::new(EPROTO, "not a request");
    pub const TOO_LARGE: Error = Error::new(EMSGSIZE, "message larger than msize");
    pub const REPLY_TOO_LARGE: Error = Error::new(EMSGSIZE, "reply does not fit in msize");
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (errno {})", self.ename, self.errno)
    }
}
