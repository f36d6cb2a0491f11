//! How a file appears on the wire: its qid, its 9P2000/.u stat record, its .L attributes and
//! dirent type, and the conversions between 9P2000 mode bits and Unix ones.

use alloc::format;

use bytes::Bytes;
use p9_core::{dm, qid_type, Dialect, Qid, Rgetattr, Stat, StatExt};

use crate::fs::ROOT;
use crate::inode::{Body, Inode, Special};

/// 9P2000.u mode bits p9-core does not name.
pub(crate) mod dm_ext {
    /// Sticky bit.
    pub const SETVTX: u32 = 0x0001_0000;
    /// Tcreate of a hard link; the extension holds the fid of the file to link.
    pub const LINK: u32 = 0x0100_0000;
}

/// Unix file type bits (`S_IFMT` and its values), as .L's mode carries them.
pub(crate) mod s_if {
    pub const FMT: u32 = 0o170000;
    pub const SOCK: u32 = 0o140000;
    pub const LNK: u32 = 0o120000;
    pub const REG: u32 = 0o100000;
    pub const BLK: u32 = 0o060000;
    pub const DIR: u32 = 0o040000;
    pub const CHR: u32 = 0o020000;
    pub const FIFO: u32 = 0o010000;
}

/// Rgetattr `valid` bits for everything this server fills in (`P9_GETATTR_ALL`).
const GETATTR_ALL: u64 = 0x3fff;
/// The `f_type` Linux's 9P client reports (`V9FS_MAGIC`).
pub(crate) const V9FS_MAGIC: u32 = 0x0102_1997;
/// Block size reported in getattr and statfs.
pub(crate) const BLOCK_SIZE: u32 = 4096;

pub(crate) fn qid(ino: u64, inode: &Inode) -> Qid {
    let mut typ = match inode.body {
        Body::Dir(_) => qid_type::DIR,
        Body::Symlink(_) => qid_type::SYMLINK,
        Body::File(_) | Body::Special(_) => qid_type::FILE,
    };
    if inode.is_append_only() {
        typ |= qid_type::APPEND;
    }
    if inode.is_exclusive() {
        typ |= qid_type::EXCL;
    }
    if inode.flags & dm::TMP != 0 {
        typ |= qid_type::TMP;
    }
    Qid {
        typ,
        version: inode.version,
        path: ino,
    }
}

/// The stat mode: permission bits, the directory bit and flags, and in 9P2000.u the special
/// file kinds and set-id bits.
pub(crate) fn dm_mode(inode: &Inode, dialect: Dialect) -> u32 {
    let mut mode = (inode.perm & 0o777) | inode.flags;
    if inode.is_dir() {
        mode |= dm::DIR;
    }
    if dialect == Dialect::DotU {
        mode |= match inode.body {
            Body::Symlink(_) => dm::SYMLINK,
            Body::Special(Special::Char { .. } | Special::Block { .. }) => dm::DEVICE,
            Body::Special(Special::Fifo) => dm::NAMEDPIPE,
            Body::Special(Special::Socket) => dm::SOCKET,
            Body::Dir(_) | Body::File(_) => 0,
        };
        for (unix, ext) in [
            (0o4000, dm::SETUID),
            (0o2000, dm::SETGID),
            (0o1000, dm_ext::SETVTX),
        ] {
            if inode.perm & unix != 0 {
                mode |= ext;
            }
        }
    }
    mode
}

/// Unix permission bits from a 9P2000(.u) mode: set-id and sticky bits only in 9P2000.u.
pub(crate) fn unix_perm(mode: u32, dialect: Dialect) -> u32 {
    let mut perm = mode & 0o777;
    if dialect == Dialect::DotU {
        for (unix, ext) in [
            (0o4000, dm::SETUID),
            (0o2000, dm::SETGID),
            (0o1000, dm_ext::SETVTX),
        ] {
            if mode & ext != 0 {
                perm |= unix;
            }
        }
    }
    perm
}

/// The Unix mode, type bits included.
pub(crate) fn unix_mode(inode: &Inode) -> u32 {
    let typ = match inode.body {
        Body::Dir(_) => s_if::DIR,
        Body::File(_) => s_if::REG,
        Body::Symlink(_) => s_if::LNK,
        Body::Special(Special::Char { .. }) => s_if::CHR,
        Body::Special(Special::Block { .. }) => s_if::BLK,
        Body::Special(Special::Fifo) => s_if::FIFO,
        Body::Special(Special::Socket) => s_if::SOCK,
    };
    typ | (inode.perm & 0o7777)
}

/// The 9P2000.u stat extension: a symlink's target or a device's numbers.
fn extension(inode: &Inode) -> Bytes {
    match &inode.body {
        Body::Symlink(target) => target.clone(),
        Body::Special(Special::Char { major, minor }) => Bytes::from(format!("c {major} {minor}")),
        Body::Special(Special::Block { major, minor }) => Bytes::from(format!("b {major} {minor}")),
        _ => Bytes::new(),
    }
}

fn secs32(t: u64) -> u32 {
    u32::try_from(t).unwrap_or(u32::MAX)
}

/// The stat record of a file under `name` (a directory entry's own name, which for a file with
/// several links may differ from the name its Tstat reports).
pub(crate) fn stat(ino: u64, inode: &Inode, name: &Bytes, dialect: Dialect) -> Stat {
    Stat {
        typ: 0,
        dev: 0,
        qid: qid(ino, inode),
        mode: dm_mode(inode, dialect),
        atime: secs32(inode.atime),
        mtime: secs32(inode.mtime),
        length: inode.len(),
        name: name.clone(),
        uid: inode.uname.clone(),
        gid: inode.gname.clone(),
        muid: inode.muname.clone(),
        ext: (dialect == Dialect::DotU).then(|| StatExt {
            extension: extension(inode),
            n_uid: inode.uid,
            n_gid: inode.gid,
            n_muid: inode.muid,
        }),
    }
}

/// Linux's `new_encode_dev`, the form v9fs decodes `rdev` with.
fn encode_dev(major: u32, minor: u32) -> u64 {
    u64::from((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12))
}

pub(crate) fn getattr(ino: u64, inode: &Inode) -> Rgetattr {
    let size = inode.len();
    let rdev = match inode.body {
        Body::Special(Special::Char { major, minor } | Special::Block { major, minor }) => {
            encode_dev(major, minor)
        }
        _ => 0,
    };
    Rgetattr {
        valid: GETATTR_ALL,
        qid: qid(ino, inode),
        mode: unix_mode(inode),
        uid: inode.uid,
        gid: inode.gid,
        nlink: inode.nlink(ino == ROOT),
        rdev,
        size,
        blksize: u64::from(BLOCK_SIZE),
        blocks: size.div_ceil(512),
        atime_sec: inode.atime,
        atime_nsec: 0,
        mtime_sec: inode.mtime,
        mtime_nsec: 0,
        ctime_sec: inode.ctime,
        ctime_nsec: 0,
        btime_sec: inode.btime,
        btime_nsec: 0,
        gen: 0,
        data_version: u64::from(inode.version),
    }
}

/// The `d_type` of a .L directory entry (Linux `DT_*`).
pub(crate) fn dirent_type(inode: &Inode) -> u8 {
    match inode.body {
        Body::Special(Special::Fifo) => 1,
        Body::Special(Special::Char { .. }) => 2,
        Body::Dir(_) => 4,
        Body::Special(Special::Block { .. }) => 6,
        Body::File(_) => 8,
        Body::Symlink(_) => 10,
        Body::Special(Special::Socket) => 12,
    }
}
