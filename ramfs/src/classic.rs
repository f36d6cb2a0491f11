//! The requests of 9P2000 and 9P2000.u that 9P2000.L replaced: open, create, stat, wstat, and
//! directory reads as stat records. Opening is shared with .L's Tlopen.

use alloc::vec::Vec;

use bytes::{Bytes, BytesMut};
use p9_core::{
    dm, open_mode, Data, Dialect, Fid, Msg, Qid, Rcreate, Ropen, Rread, Rstat, Rwstat, Tcreate,
    Topen, Tstat, Twstat,
};

use crate::conn::{Conn, DirCursor, FidUse, Open};
use crate::error::Error;
use crate::fs::{check_name, parse_device, Fs, NewFile, PATH_MAX, ROOT};
use crate::inode::{Body, Dir, Inode, Special};
use crate::stat::{self, dm_ext, unix_perm};

/// Whether a file can be opened, for writing (or truncating) or not.
pub(crate) fn check_openable(inode: &Inode, write: bool) -> Result<(), Error> {
    match inode.body {
        Body::Dir(_) if write => Err(Error::IS_DIR),
        Body::Dir(_) | Body::File(_) => Ok(()),
        Body::Symlink(_) => Err(Error::IS_SYMLINK),
        Body::Special(_) => Err(Error::SPECIAL),
    }
}

/// The read and write access of a Topen/Tcreate mode.
fn access(mode: u8) -> (bool, bool) {
    match mode & 3 {
        open_mode::READ | open_mode::EXEC => (true, false),
        open_mode::WRITE => (false, true),
        _ => (true, true),
    }
}

impl Conn {
    /// Open a walked fid: take the exclusive open if the file needs one, then truncate if asked.
    /// Truncation never applies to an append-only file, whose contents only grow.
    pub(crate) fn finish_open(
        &mut self,
        fs: &mut Fs,
        fid: Fid,
        mut open: Open,
        truncate: bool,
    ) -> Result<Qid, Error> {
        let ino = self.unopened(fid)?.ino;
        let inode = fs.inode(ino)?;
        let truncate = truncate && matches!(inode.body, Body::File(_)) && !inode.is_append_only();
        if inode.is_exclusive() {
            fs.open_exclusive(ino, self.id)?;
            open.exclusive = true;
        }
        if truncate {
            if let Err(e) = fs.resize(ino, 0) {
                fs.close_exclusive(ino, self.id);
                return Err(e);
            }
        }
        if let Some(st) = self.fids.get_mut(&fid) {
            st.state = FidUse::Open(open);
        }
        fs.qid(ino)
    }

    pub(crate) fn open(&mut self, fs: &mut Fs, m: Topen) -> Result<Msg, Error> {
        let ino = self.unopened(m.fid)?.ino;
        let (read, write) = access(m.mode);
        let truncate = m.mode & open_mode::TRUNC != 0;
        check_openable(fs.inode(ino)?, write || truncate)?;
        let open = Open {
            read,
            write,
            orclose: m.mode & open_mode::RCLOSE != 0,
            ..Open::default()
        };
        let qid = self.finish_open(fs, m.fid, open, truncate)?;
        Ok(Ropen {
            qid,
            iounit: self.iounit(),
        }
        .into())
    }

    /// create(5): make a file in the fid's directory; the fid becomes the new file, open.
    /// In 9P2000.u the perm's special-file bits make symlinks, devices, pipes, sockets and
    /// hard links, described by the extension string.
    pub(crate) fn create(&mut self, fs: &mut Fs, m: Tcreate) -> Result<Msg, Error> {
        let dialect = self.dialect_or_base();
        let st = self.unopened(m.fid)?.clone();
        let dir = fs.inode(st.ino)?;
        if !dir.is_dir() {
            return Err(Error::NOT_DIR);
        }
        let (read, write) = access(m.mode);
        let is_dir = m.perm & dm::DIR != 0;
        if is_dir && (write || m.mode & open_mode::TRUNC != 0) {
            return Err(Error::IS_DIR);
        }
        // As in Plan 9, the new file gets no permission its directory lacks.
        let perm = if is_dir {
            m.perm & (!0o777 | (dir.perm & 0o777))
        } else {
            m.perm & (!0o666 | (dir.perm & 0o666))
        };
        let (gid, gname) = (dir.gid, dir.gname.clone());
        let ext = match (dialect, &m.extension) {
            (Dialect::DotU, Some(e)) => e.clone(),
            _ => Bytes::new(),
        };
        let special = if dialect == Dialect::DotU && !is_dir {
            perm & (dm::SYMLINK | dm_ext::LINK | dm::DEVICE | dm::NAMEDPIPE | dm::SOCKET)
        } else {
            0
        };
        let mut exclusive = false;
        let ino = if special & dm_ext::LINK != 0 {
            let target = self.fid(link_fid(&ext).ok_or(Error::INVALID)?)?.ino;
            // The create opens the target: an exclusive-use one must be free before it is linked.
            if fs.inode(target)?.is_exclusive() {
                fs.open_exclusive(target, self.id)?;
                exclusive = true;
            }
            if let Err(e) = fs.link(st.ino, &m.name, target) {
                if exclusive {
                    fs.close_exclusive(target, self.id);
                }
                return Err(e);
            }
            target
        } else {
            let body = if is_dir {
                Body::Dir(Dir::new())
            } else if special & dm::SYMLINK != 0 {
                if ext.len() > PATH_MAX {
                    return Err(Error::NAME_TOO_LONG);
                }
                Body::Symlink(Bytes::copy_from_slice(&ext))
            } else if special & dm::DEVICE != 0 {
                Body::Special(parse_device(&ext).ok_or(Error::INVALID)?)
            } else if special & dm::NAMEDPIPE != 0 {
                Body::Special(Special::Fifo)
            } else if special & dm::SOCKET != 0 {
                Body::Special(Special::Socket)
            } else {
                Body::File(Vec::new())
            };
            let new = NewFile {
                body,
                perm: unix_perm(perm, dialect),
                flags: if is_dir { 0 } else { perm },
                owner: &st.user,
                gid,
                gname,
            };
            let ino = fs.create(st.ino, &m.name, new)?;
            // Creating an exclusive-use file is its one open; nobody else can have it yet.
            if fs.inode(ino)?.is_exclusive() {
                exclusive = fs.open_exclusive(ino, self.id).is_ok();
            }
            ino
        };
        let open = Open {
            read,
            write,
            orclose: m.mode & open_mode::RCLOSE != 0,
            exclusive,
            ..Open::default()
        };
        self.bind(fs, m.fid, ino, st.user, FidUse::Open(open))?;
        Ok(Rcreate {
            qid: fs.qid(ino)?,
            iounit: self.iounit(),
        }
        .into())
    }

    pub(crate) fn stat(&mut self, fs: &mut Fs, m: Tstat) -> Result<Msg, Error> {
        let ino = self.fid(m.fid)?.ino;
        let inode = fs.inode(ino)?;
        let stat = stat::stat(ino, inode, &inode.name, self.dialect_or_base());
        Ok(Rstat { stat }.into())
    }

    /// wstat(5): all of it or none of it. Everything is checked before anything changes; fields
    /// holding "don't touch" (~0, or an empty string) are left alone. Name (within the same
    /// directory), length, mode, times, and uid/gid may change; type, dev, qid and muid are
    /// ignored.
    pub(crate) fn wstat(&mut self, fs: &mut Fs, m: Twstat) -> Result<Msg, Error> {
        let dialect = self.dialect_or_base();
        let ino = self.fid(m.fid)?.ino;
        let s = &m.stat;
        let inode = fs.inode(ino)?;
        if s.mode != !0 && (s.mode & dm::DIR != 0) != inode.is_dir() {
            return Err(Error::DIR_BIT);
        }
        let length = match (s.length, &inode.body) {
            (u64::MAX, _) => None,
            (0, Body::Dir(_)) => None,
            (_, Body::Dir(_)) => return Err(Error::DIR_LENGTH),
            (len, _) => {
                fs.check_resize(ino, len)?;
                Some(len)
            }
        };
        let rename = if s.name.is_empty() || s.name == inode.name {
            None
        } else {
            if ino == ROOT {
                return Err(Error::ROOT);
            }
            check_name(&s.name)?;
            let (dir, old) = inode.primary_link().ok_or(Error::REMOVED)?;
            if fs.walk1(dir, &s.name).is_ok() {
                return Err(Error::EXISTS);
            }
            Some((dir, old))
        };
        // Checked: from here on nothing fails.
        if let Some((dir, old)) = rename {
            fs.rename(dir, &old, dir, &s.name, false)?;
        }
        if let Some(len) = length {
            fs.resize(ino, len)?;
        }
        let now = fs.time();
        let inode = fs.inode_mut(ino)?;
        if s.mode != !0 {
            inode.perm = match dialect {
                Dialect::DotU => unix_perm(s.mode, dialect),
                // 9P2000 has no set-id bits to say, so it keeps them.
                _ => (inode.perm & 0o7000) | (s.mode & 0o777),
            };
            if !inode.is_dir() {
                inode.flags = s.mode & (dm::APPEND | dm::EXCL | dm::TMP);
            }
        }
        if s.mtime != !0 {
            inode.mtime = u64::from(s.mtime);
        }
        if s.atime != !0 {
            inode.atime = u64::from(s.atime);
        }
        if !s.uid.is_empty() {
            inode.uname = Bytes::copy_from_slice(&s.uid);
        }
        if !s.gid.is_empty() {
            inode.gname = Bytes::copy_from_slice(&s.gid);
        }
        if let Some(ext) = &s.ext {
            if ext.n_uid != !0 {
                inode.uid = ext.n_uid;
            }
            if ext.n_gid != !0 {
                inode.gid = ext.n_gid;
            }
        }
        inode.ctime = now;
        Ok(Rwstat {}.into())
    }

    /// A directory read in 9P2000/.u: whole stat records, as many as fit in `count`. As in Plan
    /// 9, the offset must be 0 (start again) or where this fid's previous read ended.
    pub(crate) fn read_dir_stats(
        &mut self,
        fs: &mut Fs,
        fid: Fid,
        ino: u64,
        offset: u64,
        count: u32,
    ) -> Result<Msg, Error> {
        let dialect = self.dialect_or_base();
        let Some(FidUse::Open(open)) = self.fids.get(&fid).map(|st| &st.state) else {
            return Err(Error::NOT_OPEN);
        };
        let after = match offset {
            0 => 0,
            o if o == open.dir.offset => open.dir.cookie,
            _ => return Err(Error::BAD_OFFSET),
        };
        let dir = fs.inode(ino)?.dir().ok_or(Error::NOT_DIR)?;
        let mut buf = BytesMut::new();
        let mut last = after;
        for (cookie, name, child) in dir.after(after) {
            let Ok(inode) = fs.inode(child) else {
                continue;
            };
            let record = stat::stat(child, inode, name, dialect);
            if record.check().is_err() {
                continue;
            }
            if buf.len() + record.record_len() > count as usize {
                if buf.is_empty() {
                    return Err(Error::SHORT_COUNT);
                }
                break;
            }
            record.encode_record(&mut buf);
            last = cookie;
        }
        let cursor = DirCursor {
            offset: offset.saturating_add(buf.len() as u64),
            cookie: last,
        };
        if let Some(FidUse::Open(open)) = self.fids.get_mut(&fid).map(|st| &mut st.state) {
            open.dir = cursor;
        }
        Ok(Rread {
            data: Data(buf.freeze()),
        }
        .into())
    }
}

/// The fid a 9P2000.u hard-link Tcreate names: decimal, perhaps with a trailing newline.
fn link_fid(ext: &[u8]) -> Option<Fid> {
    let text = core::str::from_utf8(ext).ok()?;
    text.trim().parse().ok().map(Fid)
}
