//! The requests only 9P2000.L has: Linux-style open and create, attributes, directory entries
//! by cookie, links, renames by name, locks, and the (empty) extended attributes.

use alloc::vec::Vec;

use bytes::{Bytes, BytesMut};
use p9_core::dir::Dirent;
use p9_core::{
    lflags, Data, Msg, Rgetattr, Rgetlock, Rlcreate, Rlink, Rlock, Rlopen, Rmkdir, Rmknod,
    Rreaddir, Rreadlink, Rrename, Rrenameat, Rsetattr, Rstatfs, Rsymlink, Runlinkat, Rxattrwalk,
    Tgetattr, Tgetlock, Tlcreate, Tlink, Tlock, Tlopen, Tmkdir, Tmknod, Treaddir, Treadlink,
    Trename, Trenameat, Tsetattr, Tstatfs, Tsymlink, Tunlinkat, Txattrwalk,
};

use crate::classic::check_openable;
use crate::conn::{Conn, FidUse, Open};
use crate::error::Error;
use crate::fs::{decimal, Fs, NewFile, Want, NAME_MAX, PATH_MAX, ROOT};
use crate::inode::{Body, Dir, Special};
use crate::lock::{lock_range, lock_type, LockOwner};
use crate::stat::{self, s_if, BLOCK_SIZE, V9FS_MAGIC};

/// Tsetattr `valid` bits (Linux `P9_ATTR_*`).
mod attr {
    pub const MODE: u32 = 0x1;
    pub const UID: u32 = 0x2;
    pub const GID: u32 = 0x4;
    pub const SIZE: u32 = 0x8;
    pub const ATIME: u32 = 0x10;
    pub const MTIME: u32 = 0x20;
    /// Set the time given rather than the current time.
    pub const ATIME_SET: u32 = 0x80;
    pub const MTIME_SET: u32 = 0x100;
}

/// Tunlinkat flag: remove a directory (rmdir), not a file.
const AT_REMOVEDIR: u32 = 0x200;

/// The read and write access of Linux open flags.
fn access(flags: u32) -> Result<(bool, bool), Error> {
    match flags & 3 {
        lflags::RDONLY => Ok((true, false)),
        lflags::WRONLY => Ok((false, true)),
        lflags::RDWR => Ok((true, true)),
        _ => Err(Error::INVALID),
    }
}

impl Conn {
    /// The directory a fid names, for the requests that make or remove entries in it.
    fn dir_fid(&self, fs: &Fs, fid: p9_core::Fid) -> Result<u64, Error> {
        let ino = self.fid(fid)?.ino;
        if !fs.inode(ino)?.is_dir() {
            return Err(Error::NOT_DIR);
        }
        Ok(ino)
    }

    /// A new file in directory `dir`, owned by the fid's user and group `gid`.
    fn make(
        &self,
        fs: &mut Fs,
        fid: p9_core::Fid,
        name: &[u8],
        body: Body,
        mode: u32,
        gid: u32,
    ) -> Result<u64, Error> {
        let dir = self.dir_fid(fs, fid)?;
        let owner = self.fid(fid)?.user.clone();
        let new = NewFile {
            body,
            perm: mode & 0o7777,
            flags: 0,
            owner: &owner,
            gid,
            gname: decimal(gid),
        };
        fs.create(dir, name, new)
    }

    pub(crate) fn statfs(&mut self, fs: &mut Fs, m: Tstatfs) -> Result<Msg, Error> {
        self.fid(m.fid)?;
        let limits = *fs.limits();
        let block = u64::from(BLOCK_SIZE);
        let free = limits.max_bytes.saturating_sub(fs.bytes_used()) / block;
        Ok(Rstatfs {
            typ: V9FS_MAGIC,
            bsize: BLOCK_SIZE,
            blocks: limits.max_bytes / block,
            bfree: free,
            bavail: free,
            files: limits.max_files,
            ffree: limits.max_files.saturating_sub(fs.file_count() as u64),
            fsid: 0,
            namelen: NAME_MAX as u32,
        }
        .into())
    }

    pub(crate) fn lopen(&mut self, fs: &mut Fs, m: Tlopen) -> Result<Msg, Error> {
        let ino = self.unopened(m.fid)?.ino;
        let (read, write) = access(m.flags)?;
        // The fid names a file that exists: O_CREAT|O_EXCL fails, as open(2) does on a server
        // that passes the flags through (diod).
        if m.flags & (lflags::CREATE | lflags::EXCL) == lflags::CREATE | lflags::EXCL {
            return Err(Error::EXISTS);
        }
        let truncate = m.flags & lflags::TRUNC != 0;
        let inode = fs.inode(ino)?;
        if m.flags & lflags::DIRECTORY != 0 && !inode.is_dir() {
            return Err(Error::NOT_DIR);
        }
        check_openable(inode, write || truncate)?;
        let open = Open {
            read,
            write,
            append: m.flags & lflags::APPEND != 0,
            ..Open::default()
        };
        let qid = self.finish_open(fs, m.fid, open, truncate)?;
        Ok(Rlopen {
            qid,
            iounit: self.iounit(),
        }
        .into())
    }

    /// Make a regular file; the fid (a directory) becomes the new file, open with `flags`.
    pub(crate) fn lcreate(&mut self, fs: &mut Fs, m: Tlcreate) -> Result<Msg, Error> {
        let st = self.unopened(m.fid)?.clone();
        let (read, write) = access(m.flags)?;
        let body = Body::File(Vec::new());
        let ino = self.make(fs, m.fid, &m.name, body, m.mode, m.gid)?;
        let open = Open {
            read,
            write,
            append: m.flags & lflags::APPEND != 0,
            ..Open::default()
        };
        self.bind(fs, m.fid, ino, st.user, FidUse::Open(open))?;
        Ok(Rlcreate {
            qid: fs.qid(ino)?,
            iounit: self.iounit(),
        }
        .into())
    }

    pub(crate) fn symlink(&mut self, fs: &mut Fs, m: Tsymlink) -> Result<Msg, Error> {
        if m.symtgt.is_empty() {
            return Err(Error::NOT_FOUND);
        }
        if m.symtgt.len() > PATH_MAX {
            return Err(Error::NAME_TOO_LONG);
        }
        let body = Body::Symlink(Bytes::copy_from_slice(&m.symtgt));
        let ino = self.make(fs, m.fid, &m.name, body, 0o777, m.gid)?;
        Ok(Rsymlink { qid: fs.qid(ino)? }.into())
    }

    /// mknod(2): devices, pipes, sockets, and (with `S_IFREG` or no type) regular files.
    pub(crate) fn mknod(&mut self, fs: &mut Fs, m: Tmknod) -> Result<Msg, Error> {
        let (major, minor) = (m.major, m.minor);
        let body = match m.mode & s_if::FMT {
            0 | s_if::REG => Body::File(Vec::new()),
            s_if::CHR => Body::Special(Special::Char { major, minor }),
            s_if::BLK => Body::Special(Special::Block { major, minor }),
            s_if::FIFO => Body::Special(Special::Fifo),
            s_if::SOCK => Body::Special(Special::Socket),
            _ => return Err(Error::INVALID),
        };
        let ino = self.make(fs, m.dfid, &m.name, body, m.mode, m.gid)?;
        Ok(Rmknod { qid: fs.qid(ino)? }.into())
    }

    pub(crate) fn mkdir(&mut self, fs: &mut Fs, m: Tmkdir) -> Result<Msg, Error> {
        let body = Body::Dir(Dir::new());
        let ino = self.make(fs, m.dfid, &m.name, body, m.mode, m.gid)?;
        Ok(Rmkdir { qid: fs.qid(ino)? }.into())
    }

    /// Move the fid's file (by the name its stat shows) to `name` in directory `dfid`.
    pub(crate) fn rename(&mut self, fs: &mut Fs, m: Trename) -> Result<Msg, Error> {
        let ino = self.fid(m.fid)?.ino;
        let ndir = self.dir_fid(fs, m.dfid)?;
        if ino == ROOT {
            return Err(Error::ROOT);
        }
        let (odir, oname) = fs.inode(ino)?.primary_link().ok_or(Error::REMOVED)?;
        fs.rename(odir, &oname, ndir, &m.name, true)?;
        Ok(Rrename {}.into())
    }

    pub(crate) fn renameat(&mut self, fs: &mut Fs, m: Trenameat) -> Result<Msg, Error> {
        let odir = self.dir_fid(fs, m.olddirfid)?;
        let ndir = self.dir_fid(fs, m.newdirfid)?;
        fs.rename(odir, &m.oldname, ndir, &m.newname, true)?;
        Ok(Rrenameat {}.into())
    }

    pub(crate) fn unlinkat(&mut self, fs: &mut Fs, m: Tunlinkat) -> Result<Msg, Error> {
        let dir = self.dir_fid(fs, m.dirfid)?;
        let want = if m.flags & AT_REMOVEDIR != 0 {
            Want::Dir
        } else {
            Want::NonDir
        };
        fs.unlink(dir, &m.name, want)?;
        Ok(Runlinkat {}.into())
    }

    pub(crate) fn link(&mut self, fs: &mut Fs, m: Tlink) -> Result<Msg, Error> {
        let dir = self.dir_fid(fs, m.dfid)?;
        let ino = self.fid(m.fid)?.ino;
        fs.link(dir, &m.name, ino)?;
        Ok(Rlink {}.into())
    }

    pub(crate) fn readlink(&mut self, fs: &mut Fs, m: Treadlink) -> Result<Msg, Error> {
        match &fs.inode(self.fid(m.fid)?.ino)?.body {
            Body::Symlink(target) => Ok(Rreadlink {
                target: target.clone(),
            }
            .into()),
            _ => Err(Error::NOT_SYMLINK),
        }
    }

    /// Every attribute is always filled in, whatever the request mask asks for.
    pub(crate) fn getattr(&mut self, fs: &mut Fs, m: Tgetattr) -> Result<Msg, Error> {
        let ino = self.fid(m.fid)?.ino;
        let reply: Rgetattr = stat::getattr(ino, fs.inode(ino)?);
        Ok(reply.into())
    }

    /// Change the attributes `valid` selects; a size change is checked first so that a failing
    /// request changes nothing.
    pub(crate) fn setattr(&mut self, fs: &mut Fs, m: Tsetattr) -> Result<Msg, Error> {
        let ino = self.fid(m.fid)?.ino;
        fs.inode(ino)?;
        if m.valid & attr::SIZE != 0 {
            fs.resize(ino, m.size)?;
        }
        let now = fs.time();
        let inode = fs.inode_mut(ino)?;
        if m.valid & attr::MODE != 0 {
            inode.perm = m.mode & 0o7777;
        }
        if m.valid & attr::UID != 0 && m.uid != inode.uid {
            inode.uid = m.uid;
            inode.uname = decimal(m.uid);
        }
        if m.valid & attr::GID != 0 && m.gid != inode.gid {
            inode.gid = m.gid;
            inode.gname = decimal(m.gid);
        }
        if m.valid & attr::ATIME != 0 {
            inode.atime = if m.valid & attr::ATIME_SET != 0 {
                m.atime_sec
            } else {
                now
            };
        }
        if m.valid & attr::MTIME != 0 {
            inode.mtime = if m.valid & attr::MTIME_SET != 0 {
                m.mtime_sec
            } else {
                now
            };
        }
        // Any attribute change is a status change.
        inode.ctime = now;
        Ok(Rsetattr {}.into())
    }

    /// Files here have no extended attributes: the list of names (the empty name) is an empty
    /// xattr fid of size 0, and any named attribute is ENODATA, as getxattr(2) reports it.
    pub(crate) fn xattrwalk(&mut self, fs: &mut Fs, m: Txattrwalk) -> Result<Msg, Error> {
        let st = self.fid(m.fid)?.clone();
        if m.newfid != m.fid && self.fids.contains_key(&m.newfid) {
            return Err(Error::FID_IN_USE);
        }
        if !m.name.is_empty() {
            return Err(Error::NO_XATTR);
        }
        self.bind(fs, m.newfid, st.ino, st.user, FidUse::Xattr)?;
        Ok(Rxattrwalk { size: 0 }.into())
    }

    /// Directory entries from the one after cookie `offset` (0: from the start, "." and ".."
    /// first), as many as fit in `count`. Each entry's offset is the cookie to continue from.
    pub(crate) fn readdir(&mut self, fs: &mut Fs, m: Treaddir) -> Result<Msg, Error> {
        let count = m.count.min(self.max_read()) as usize;
        let st = self.fid(m.fid)?;
        let FidUse::Open(open) = st.state else {
            return Err(Error::NOT_OPEN);
        };
        if !open.read {
            return Err(Error::NOT_READABLE);
        }
        let ino = st.ino;
        let dir = fs.inode(ino)?.dir().ok_or(Error::NOT_DIR)?;
        let dots = [(1, &b"."[..], ino), (2, &b".."[..], fs.parent(ino))];
        let dots = dots
            .into_iter()
            .filter(|&(cookie, _, _)| cookie > m.offset)
            .map(|(cookie, name, ino)| (cookie, Bytes::from_static(name), ino));
        let entries = dir
            .after(m.offset.max(2))
            .map(|(cookie, name, ino)| (cookie, name.clone(), ino));
        let mut buf = BytesMut::new();
        for (cookie, name, child) in dots.chain(entries) {
            let Ok(inode) = fs.inode(child) else {
                continue;
            };
            let dirent = Dirent {
                qid: stat::qid(child, inode),
                offset: cookie,
                typ: stat::dirent_type(inode),
                name,
            };
            if buf.len() + dirent.encoded_len() > count {
                if buf.is_empty() {
                    return Err(Error::SHORT_COUNT);
                }
                break;
            }
            dirent.encode(&mut buf);
        }
        Ok(Rreaddir {
            data: Data(buf.freeze()),
        }
        .into())
    }

    pub(crate) fn lock(&mut self, fs: &mut Fs, m: Tlock) -> Result<Msg, Error> {
        let ino = self.fid(m.fid)?.ino;
        if m.typ > lock_type::UNLCK {
            return Err(Error::INVALID);
        }
        fs.inode(ino)?;
        let owner = LockOwner {
            conn: self.id,
            proc_id: m.proc_id,
            client_id: Bytes::copy_from_slice(&m.client_id),
        };
        let status = fs.lock(ino, owner, m.typ, lock_range(m.start, m.length));
        Ok(Rlock { status }.into())
    }

    /// F_GETLK: the first conflicting lock, or the request back with type F_UNLCK if none.
    pub(crate) fn getlock(&mut self, fs: &mut Fs, m: Tgetlock) -> Result<Msg, Error> {
        let ino = self.fid(m.fid)?.ino;
        if m.typ > lock_type::UNLCK {
            return Err(Error::INVALID);
        }
        fs.inode(ino)?;
        let owner = LockOwner {
            conn: self.id,
            proc_id: m.proc_id,
            client_id: m.client_id.clone(),
        };
        let reply = match fs.conflicting_lock(ino, &owner, m.typ, lock_range(m.start, m.length)) {
            Some(l) => Rgetlock {
                typ: l.typ,
                start: l.start,
                length: l.length(),
                proc_id: l.owner.proc_id,
                client_id: l.owner.client_id,
            },
            None => Rgetlock {
                typ: lock_type::UNLCK,
                start: m.start,
                length: m.length,
                proc_id: m.proc_id,
                client_id: m.client_id,
            },
        };
        Ok(reply.into())
    }
}
