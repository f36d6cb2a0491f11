//! The file tree ("the disk"): inodes by qid path, the operations that change them, and what
//! connections hold in it. It outlives connections: a crash drops the connections, not this.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use bytes::Bytes;
use p9_core::{dm, MsgType, Qid};

use crate::error::Error;
use crate::inode::{Body, Dir, Inode, Special, User};
use crate::lock::{lock_type, Lock, LockOwner, LockTable};
use crate::owner::{ConnId, EndNotice, Owners};
use crate::stat;

/// The root directory's qid path. Paths start above 0 because some clients treat inode 0 as
/// "no file".
pub(crate) const ROOT: u64 = 1;

/// Longest name of a file (Linux's `NAME_MAX`, which Rstatfs reports).
pub const NAME_MAX: usize = 255;
/// Longest symbolic link target (Linux's `PATH_MAX`).
pub const PATH_MAX: usize = 4096;

/// Bounds on what clients can make the server hold. Every allocation a request can cause is
/// bounded by one of these or by the negotiated msize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest length of one file; writes and truncations past it fail with "file too large".
    pub max_file_size: u64,
    /// Most bytes of file contents in the whole tree ("file system full" past it).
    pub max_bytes: u64,
    /// Most files (inodes) in the tree, the root included.
    pub max_files: u64,
    /// Most fids one connection may have.
    pub max_fids: usize,
    /// Most byte-range locks in the tree.
    pub max_locks: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_file_size: 64 << 20,
            max_bytes: 1 << 30,
            max_files: 1 << 20,
            max_fids: 1 << 16,
            max_locks: 1 << 16,
        }
    }
}

/// What a new file is and who owns it.
pub(crate) struct NewFile<'a> {
    pub body: Body,
    pub perm: u32,
    pub flags: u32,
    pub owner: &'a User,
    pub gid: u32,
    pub gname: Bytes,
}

/// Which kinds of file an unlink accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    Any,
    Dir,
    NonDir,
}

/// The in-memory file tree, shared by every [`crate::Conn`] that serves it.
///
/// Besides the files it keeps what live connections hold in them (byte-range locks, exclusive
/// opens, removed files still open), so that connections can conflict; see [`crate::Conn`] for
/// how that is released.
#[derive(Debug)]
pub struct Fs {
    inodes: BTreeMap<u64, Inode>,
    /// The next qid path; paths are never reused, so a qid names one file forever.
    next_path: u64,
    now: u64,
    limits: Limits,
    used_bytes: u64,
    ops: u64,
    op_counts: BTreeMap<u8, u64>,
    pub(crate) owners: Owners,
    pub(crate) locks: LockTable,
}

impl Default for Fs {
    fn default() -> Fs {
        Fs::new()
    }
}

/// Check a name a client wants to create or rename to.
pub(crate) fn check_name(name: &[u8]) -> Result<(), Error> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(Error::BAD_NAME);
    }
    if name.len() > NAME_MAX {
        return Err(Error::NAME_TOO_LONG);
    }
    Ok(())
}

/// The decimal form of a numeric id, for the name fields of files made by number only.
pub(crate) fn decimal(n: u32) -> Bytes {
    Bytes::from(format!("{n}"))
}

impl Fs {
    /// An empty tree with the default [`Limits`].
    pub fn new() -> Fs {
        Fs::with_limits(Limits::default())
    }

    /// An empty tree: just the root directory, owned by `root` (uid 0), mode 0777.
    pub fn with_limits(limits: Limits) -> Fs {
        let root_name = Bytes::from_static(b"root");
        let root = Inode {
            body: Body::Dir(Dir::new()),
            version: 0,
            perm: 0o777,
            flags: 0,
            uid: 0,
            gid: 0,
            muid: 0,
            uname: root_name.clone(),
            gname: root_name.clone(),
            muname: root_name,
            atime: 0,
            mtime: 0,
            ctime: 0,
            btime: 0,
            links: BTreeSet::new(),
            name: Bytes::from_static(b"/"),
        };
        Fs {
            inodes: BTreeMap::from([(ROOT, root)]),
            next_path: ROOT + 1,
            now: 0,
            limits,
            used_bytes: 0,
            ops: 0,
            op_counts: BTreeMap::new(),
            owners: Owners::default(),
            locks: LockTable::default(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Set the clock, in seconds since the epoch. There is no other source of time: files
    /// created or changed get this value, which is 0 until set.
    pub fn set_time(&mut self, secs: u64) {
        self.now = secs;
    }

    pub fn time(&self) -> u64 {
        self.now
    }

    /// Requests handled so far, by every connection (malformed ones included).
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Requests of one type handled so far.
    pub fn op_count(&self, msg_type: MsgType) -> u64 {
        self.op_counts.get(&(msg_type as u8)).copied().unwrap_or(0)
    }

    /// Files in the tree, the root and removed-but-open files included.
    pub fn file_count(&self) -> usize {
        self.inodes.len()
    }

    /// Bytes of file contents held.
    pub fn bytes_used(&self) -> u64 {
        self.used_bytes
    }

    /// Byte-range locks held (including those of dropped connections not yet swept).
    pub fn lock_count(&self) -> usize {
        self.locks.count()
    }

    /// Connections whose [`crate::Conn`] still exists.
    pub fn connection_count(&self) -> usize {
        self.owners.live_count()
    }

    pub(crate) fn count_request(&mut self, msg_type: Option<u8>) {
        self.ops += 1;
        if let Some(t) = msg_type {
            *self.op_counts.entry(t).or_insert(0) += 1;
        }
    }

    // ---- Connections ----

    /// Forget the connections whose [`crate::Conn`] was dropped without
    /// [`close`](crate::Conn::close): free the removed files only they held open, and their
    /// locks and exclusive opens (which already stopped counting when they were dropped). This
    /// happens by itself at the next request, new connection or close; call it to see the
    /// counts settle right after a crash.
    pub fn sweep(&mut self) {
        if self.owners.any_ended() {
            for conn in self.owners.dead() {
                self.unregister(conn);
            }
        }
    }

    pub(crate) fn register(&mut self, alive: &Arc<()>) -> (ConnId, EndNotice) {
        self.sweep();
        self.owners.register(alive)
    }

    pub(crate) fn unregister(&mut self, conn: ConnId) {
        self.locks.forget_conn(conn);
        for ino in self.owners.unregister(conn) {
            self.collect(ino);
        }
    }

    /// A fid of `conn` now names `ino`.
    pub(crate) fn hold(&mut self, ino: u64, conn: ConnId) {
        self.owners.hold(ino, conn);
    }

    /// A fid of `conn` no longer names `ino`. When none does, the connection can no longer
    /// unlock the file, so its locks there go, and a removed file may be freed.
    pub(crate) fn release(&mut self, ino: u64, conn: ConnId) {
        if self.owners.release(ino, conn) {
            self.locks.forget_conn_file(conn, ino);
            self.collect(ino);
        }
    }

    pub(crate) fn open_exclusive(&mut self, ino: u64, conn: ConnId) -> Result<(), Error> {
        self.owners.open_exclusive(ino, conn)
    }

    pub(crate) fn close_exclusive(&mut self, ino: u64, conn: ConnId) {
        self.owners.close_exclusive(ino, conn)
    }

    /// F_SETLK on a file; returns an Rlock status.
    pub(crate) fn lock(&mut self, ino: u64, owner: LockOwner, typ: u8, range: (u64, u64)) -> u8 {
        let owners = &self.owners;
        self.locks
            .set(ino, owner, typ, range, self.limits.max_locks, |c| {
                owners.is_live(c)
            })
    }

    /// F_GETLK: a lock of another owner that conflicts with the one described.
    pub(crate) fn conflicting_lock(
        &mut self,
        ino: u64,
        owner: &LockOwner,
        typ: u8,
        (start, end): (u64, u64),
    ) -> Option<Lock> {
        if typ == lock_type::UNLCK {
            return None;
        }
        let owners = &self.owners;
        self.locks
            .conflict(ino, owner, typ, start, end, |c| owners.is_live(c))
            .cloned()
    }

    // ---- Looking things up ----

    pub(crate) fn inode(&self, ino: u64) -> Result<&Inode, Error> {
        self.inodes.get(&ino).ok_or(Error::REMOVED)
    }

    pub(crate) fn inode_mut(&mut self, ino: u64) -> Result<&mut Inode, Error> {
        self.inodes.get_mut(&ino).ok_or(Error::REMOVED)
    }

    pub(crate) fn qid(&self, ino: u64) -> Result<Qid, Error> {
        Ok(stat::qid(ino, self.inode(ino)?))
    }

    /// Whether a file has no name left (removed while a fid still holds it).
    pub(crate) fn is_orphan(&self, ino: u64, inode: &Inode) -> bool {
        ino != ROOT && inode.links.is_empty()
    }

    /// One step of a walk: `name` in directory `dir`. `..` of the root is the root.
    pub(crate) fn walk1(&self, dir: u64, name: &[u8]) -> Result<u64, Error> {
        let inode = self.inode(dir)?;
        let entries = inode.dir().ok_or(Error::NOT_DIR)?;
        if name == b".." {
            if dir == ROOT {
                return Ok(ROOT);
            }
            return inode.parent().ok_or(Error::NOT_FOUND);
        }
        entries.get(name).ok_or(Error::NOT_FOUND)
    }

    /// The directory that `..` of `dir` names (itself for the root and removed directories).
    pub(crate) fn parent(&self, dir: u64) -> u64 {
        self.inodes.get(&dir).and_then(Inode::parent).unwrap_or(dir)
    }

    /// The file a slash-separated path from the root names (empty, `.` and `..` steps allowed).
    fn resolve(&self, path: &[u8]) -> Result<u64, Error> {
        let mut ino = ROOT;
        for name in path.split(|&b| b == b'/') {
            if !name.is_empty() && name != b"." {
                ino = self.walk1(ino, name)?;
            }
        }
        Ok(ino)
    }

    // ---- Changing the tree ----

    /// Check that `name` can be added to `dir`.
    fn check_can_add(&self, dir: u64, name: &[u8]) -> Result<(), Error> {
        let inode = self.inode(dir)?;
        let entries = inode.dir().ok_or(Error::NOT_DIR)?;
        if self.is_orphan(dir, inode) {
            // Nothing can be created in a removed directory.
            return Err(Error::NOT_FOUND);
        }
        if entries.get(name).is_some() {
            return Err(Error::EXISTS);
        }
        Ok(())
    }

    fn add_entry(&mut self, dir: u64, name: Bytes, ino: u64, is_dir: bool) {
        let now = self.now;
        if let Some(d) = self.inodes.get_mut(&dir) {
            if let Body::Dir(entries) = &mut d.body {
                entries.insert(name, ino, is_dir);
            }
            d.changed(now);
        }
    }

    fn remove_entry(&mut self, dir: u64, name: &[u8]) {
        let now = self.now;
        if let Some(d) = self.inodes.get_mut(&dir) {
            if let Body::Dir(entries) = &mut d.body {
                entries.remove(name);
            }
            d.changed(now);
        }
    }

    /// Make a new file `name` in `dir`.
    pub(crate) fn create(&mut self, dir: u64, name: &[u8], new: NewFile<'_>) -> Result<u64, Error> {
        check_name(name)?;
        self.check_can_add(dir, name)?;
        if self.inodes.len() as u64 >= self.limits.max_files {
            return Err(Error::NO_SPACE);
        }
        let ino = self.next_path;
        self.next_path += 1;
        // Copy the name: it may be a slice of a large request frame, which must not be kept.
        let name = Bytes::copy_from_slice(name);
        let is_dir = matches!(new.body, Body::Dir(_));
        let inode = Inode {
            body: new.body,
            version: 0,
            perm: new.perm & 0o7777,
            flags: new.flags & (dm::APPEND | dm::EXCL | dm::TMP),
            uid: new.owner.id,
            gid: new.gid,
            muid: new.owner.id,
            uname: new.owner.name.clone(),
            gname: new.gname,
            muname: new.owner.name.clone(),
            atime: self.now,
            mtime: self.now,
            ctime: self.now,
            btime: self.now,
            links: BTreeSet::from([(dir, name.clone())]),
            name: name.clone(),
        };
        self.inodes.insert(ino, inode);
        self.add_entry(dir, name, ino, is_dir);
        Ok(ino)
    }

    /// Give file `ino` another name, `name` in `dir` (a hard link).
    pub(crate) fn link(&mut self, dir: u64, name: &[u8], ino: u64) -> Result<(), Error> {
        check_name(name)?;
        let target = self.inode(ino)?;
        if target.is_dir() {
            return Err(Error::LINK_DIR);
        }
        if self.is_orphan(ino, target) {
            return Err(Error::NOT_FOUND);
        }
        self.check_can_add(dir, name)?;
        let name = Bytes::copy_from_slice(name);
        let now = self.now;
        if let Some(t) = self.inodes.get_mut(&ino) {
            t.links.insert((dir, name.clone()));
            t.name = name.clone();
            t.ctime = now;
        }
        self.add_entry(dir, name, ino, false);
        Ok(())
    }

    /// Remove the entry `name` from `dir`; a directory must be empty.
    pub(crate) fn unlink(&mut self, dir: u64, name: &[u8], want: Want) -> Result<(), Error> {
        if name == b"." || name == b".." {
            return Err(Error::BAD_NAME);
        }
        let entries = self.inode(dir)?.dir().ok_or(Error::NOT_DIR)?;
        let ino = entries.get(name).ok_or(Error::NOT_FOUND)?;
        let target = self.inode(ino)?;
        match (want, target.dir()) {
            (Want::Dir, None) => return Err(Error::NOT_DIR),
            (Want::NonDir, Some(_)) => return Err(Error::IS_DIR),
            (_, Some(d)) if !d.is_empty() => return Err(Error::NOT_EMPTY),
            _ => {}
        }
        self.drop_link(dir, name, ino);
        Ok(())
    }

    /// Remove file `ino` by the name its stat shows (Tremove, ORCLOSE).
    pub(crate) fn remove(&mut self, ino: u64) -> Result<(), Error> {
        if ino == ROOT {
            return Err(Error::ROOT);
        }
        let (dir, name) = self.inode(ino)?.primary_link().ok_or(Error::REMOVED)?;
        self.unlink(dir, &name, Want::Any)
    }

    fn drop_link(&mut self, dir: u64, name: &[u8], ino: u64) {
        self.remove_entry(dir, name);
        let now = self.now;
        if let Some(t) = self.inodes.get_mut(&ino) {
            t.links.retain(|(d, n)| !(*d == dir && n == name));
            if t.name == name {
                if let Some((_, other)) = t.links.first() {
                    t.name = other.clone();
                }
            }
            t.ctime = now;
        }
        self.collect(ino);
    }

    /// Free `ino` if it has no name and no live connection holds it.
    fn collect(&mut self, ino: u64) {
        let Some(inode) = self.inodes.get(&ino) else {
            return;
        };
        if !self.is_orphan(ino, inode) || self.owners.is_held(ino) {
            return;
        }
        if let Some(inode) = self.inodes.remove(&ino) {
            self.used_bytes -= match &inode.body {
                Body::File(b) => b.len() as u64,
                _ => 0,
            };
        }
        self.locks.forget_file(ino);
        self.owners.forget_file(ino);
    }

    /// Whether `ancestor` is `ino` or a directory above it.
    fn is_ancestor(&self, ancestor: u64, mut ino: u64) -> bool {
        // A tree has no cycles, but bound the climb anyway.
        for _ in 0..=self.inodes.len() {
            if ino == ancestor {
                return true;
            }
            match self.inodes.get(&ino).and_then(Inode::parent) {
                Some(p) if ino != ROOT => ino = p,
                _ => return false,
            }
        }
        false
    }

    /// Move entry `oname` of `odir` to `nname` in `ndir`. With `replace`, an existing target is
    /// replaced as rename(2) does; without, it is an error (as wstat(5) wants).
    pub(crate) fn rename(
        &mut self,
        odir: u64,
        oname: &[u8],
        ndir: u64,
        nname: &[u8],
        replace: bool,
    ) -> Result<(), Error> {
        if oname == b"." || oname == b".." {
            return Err(Error::BAD_NAME);
        }
        check_name(nname)?;
        let src = self
            .inode(odir)?
            .dir()
            .ok_or(Error::NOT_DIR)?
            .get(oname)
            .ok_or(Error::NOT_FOUND)?;
        let nd = self.inode(ndir)?;
        let target_entries = nd.dir().ok_or(Error::NOT_DIR)?;
        if self.is_orphan(ndir, nd) {
            return Err(Error::NOT_FOUND);
        }
        if odir == ndir && oname == nname {
            return Ok(());
        }
        let src_is_dir = self.inode(src)?.is_dir();
        if src_is_dir && self.is_ancestor(src, ndir) {
            return Err(Error::INTO_ITSELF);
        }
        if let Some(victim) = target_entries.get(nname) {
            if !replace {
                return Err(Error::EXISTS);
            }
            if victim == src {
                // Two names of one file: rename(2) does nothing.
                return Ok(());
            }
            match (src_is_dir, self.inode(victim)?.dir()) {
                (true, None) => return Err(Error::NOT_DIR),
                (false, Some(_)) => return Err(Error::IS_DIR),
                (_, Some(d)) if !d.is_empty() => return Err(Error::NOT_EMPTY),
                _ => {}
            }
            self.drop_link(ndir, nname, victim);
        }
        self.remove_entry(odir, oname);
        let nname = Bytes::copy_from_slice(nname);
        self.add_entry(ndir, nname.clone(), src, src_is_dir);
        let now = self.now;
        if let Some(s) = self.inodes.get_mut(&src) {
            s.links.retain(|(d, n)| !(*d == odir && n == oname));
            s.links.insert((ndir, nname.clone()));
            s.name = nname;
            s.ctime = now;
        }
        Ok(())
    }

    /// Read up to `count` bytes of a regular file at `offset`.
    pub(crate) fn read(&mut self, ino: u64, offset: u64, count: u32) -> Result<Bytes, Error> {
        let now = self.now;
        let inode = self.inode_mut(ino)?;
        let Body::File(data) = &inode.body else {
            return Err(not_a_file(inode));
        };
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let end = start.saturating_add(count as usize).min(data.len());
        let out = Bytes::copy_from_slice(data.get(start..end).unwrap_or_default());
        inode.atime = now;
        Ok(out)
    }

    /// Write `data` at `offset`, or at the end for an append-only file or an `append` open.
    /// Returns the count written (all of it, or an error).
    pub(crate) fn write(
        &mut self,
        ino: u64,
        offset: u64,
        data: &[u8],
        append: bool,
        who: &User,
    ) -> Result<u32, Error> {
        let (limits, now, used) = (self.limits, self.now, self.used_bytes);
        let inode = self.inodes.get_mut(&ino).ok_or(Error::REMOVED)?;
        let append = append || inode.is_append_only();
        let Body::File(buf) = &mut inode.body else {
            return Err(not_a_file(inode));
        };
        if data.is_empty() {
            return Ok(0);
        }
        let len = buf.len() as u64;
        let start = if append { len } else { offset };
        let end = start
            .checked_add(data.len() as u64)
            .filter(|&e| e <= limits.max_file_size)
            .ok_or(Error::FILE_TOO_BIG)?;
        let growth = end.saturating_sub(len);
        if used.saturating_add(growth) > limits.max_bytes {
            return Err(Error::NO_SPACE);
        }
        let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else {
            return Err(Error::FILE_TOO_BIG);
        };
        if buf.len() < end {
            buf.resize(end, 0);
        }
        let Some(dest) = buf.get_mut(start..end) else {
            return Err(Error::INVALID);
        };
        dest.copy_from_slice(data);
        inode.changed(now);
        inode.muid = who.id;
        inode.muname = who.name.clone();
        self.used_bytes += growth;
        Ok(data.len() as u32)
    }

    /// Whether file `ino` may be given length `len`.
    pub(crate) fn check_resize(&self, ino: u64, len: u64) -> Result<(), Error> {
        let inode = self.inode(ino)?;
        let Body::File(buf) = &inode.body else {
            return Err(not_a_file(inode));
        };
        if len > self.limits.max_file_size || usize::try_from(len).is_err() {
            return Err(Error::FILE_TOO_BIG);
        }
        let growth = len.saturating_sub(buf.len() as u64);
        if self.used_bytes.saturating_add(growth) > self.limits.max_bytes {
            return Err(Error::NO_SPACE);
        }
        Ok(())
    }

    /// Truncate or extend (with zeros) file `ino` to `len` bytes.
    pub(crate) fn resize(&mut self, ino: u64, len: u64) -> Result<(), Error> {
        self.check_resize(ino, len)?;
        let now = self.now;
        let inode = self.inode_mut(ino)?;
        let Body::File(buf) = &mut inode.body else {
            return Err(Error::NOT_FILE);
        };
        let old = buf.len() as u64;
        if old == len {
            return Ok(());
        }
        buf.resize(len as usize, 0);
        // Give memory back when a file shrinks a lot, so a truncated file does not pin its past.
        if buf.len() < buf.capacity() / 4 {
            buf.shrink_to_fit();
        }
        inode.changed(now);
        self.used_bytes = self.used_bytes - old + len;
        Ok(())
    }

    // ---- For programs and tests that set up or inspect the tree directly ----

    /// Make directory `path` and any missing parents (mode 0777, owner `root`); an existing
    /// directory is fine. Returns its qid.
    pub fn mkdir_p(&mut self, path: impl AsRef<[u8]>) -> Result<Qid, Error> {
        let mut ino = ROOT;
        for name in path.as_ref().split(|&b| b == b'/') {
            if name.is_empty() || name == b"." {
                continue;
            }
            ino = match self.walk1(ino, name) {
                Ok(next) => next,
                Err(e) if e == Error::NOT_FOUND && name != b".." => {
                    self.create(ino, name, self.root_owned(Body::Dir(Dir::new()), 0o777))?
                }
                Err(e) => return Err(e),
            };
        }
        if !self.inode(ino)?.is_dir() {
            return Err(Error::NOT_DIR);
        }
        self.qid(ino)
    }

    /// Make or overwrite regular file `path` (mode 0666, owner `root`) with `data`, making
    /// missing parent directories. Returns its qid.
    pub fn write_file(&mut self, path: impl AsRef<[u8]>, data: &[u8]) -> Result<Qid, Error> {
        let (dir, name) = self.split_path(path.as_ref(), true)?;
        // Check the limits first, so that a write that cannot be done changes nothing.
        let old_len = match self.walk1(dir, name).and_then(|ino| self.inode(ino)) {
            Ok(inode) if matches!(inode.body, Body::File(_)) => inode.len(),
            Ok(inode) => return Err(not_a_file(inode)),
            Err(_) => 0,
        };
        let len = data.len() as u64;
        if len > self.limits.max_file_size {
            return Err(Error::FILE_TOO_BIG);
        }
        if (self.used_bytes - old_len).saturating_add(len) > self.limits.max_bytes {
            return Err(Error::NO_SPACE);
        }
        let ino = match self.walk1(dir, name) {
            Ok(ino) => {
                self.resize(ino, 0)?;
                ino
            }
            Err(e) if e == Error::NOT_FOUND => {
                self.create(dir, name, self.root_owned(Body::File(Vec::new()), 0o666))?
            }
            Err(e) => return Err(e),
        };
        let root = User {
            name: Bytes::from_static(b"root"),
            id: 0,
        };
        self.write(ino, 0, data, false, &root)?;
        self.qid(ino)
    }

    /// The contents of regular file `path`.
    pub fn read_file(&self, path: impl AsRef<[u8]>) -> Result<&[u8], Error> {
        let inode = self.inode(self.resolve(path.as_ref())?)?;
        match &inode.body {
            Body::File(b) => Ok(b),
            _ => Err(not_a_file(inode)),
        }
    }

    /// The names in directory `path`, in listing order (the order they were linked).
    pub fn list_dir(&self, path: impl AsRef<[u8]>) -> Result<Vec<Bytes>, Error> {
        let inode = self.inode(self.resolve(path.as_ref())?)?;
        let dir = inode.dir().ok_or(Error::NOT_DIR)?;
        Ok(dir.after(0).map(|(_, name, _)| name.clone()).collect())
    }

    /// The qid of the file `path` names.
    pub fn qid_of(&self, path: impl AsRef<[u8]>) -> Result<Qid, Error> {
        self.qid(self.resolve(path.as_ref())?)
    }

    /// The target of symbolic link `path`.
    pub fn read_link(&self, path: impl AsRef<[u8]>) -> Result<Bytes, Error> {
        match &self.inode(self.resolve(path.as_ref())?)?.body {
            Body::Symlink(t) => Ok(t.clone()),
            _ => Err(Error::NOT_SYMLINK),
        }
    }

    /// Make symbolic link `path` pointing at `target`.
    pub fn symlink(&mut self, path: impl AsRef<[u8]>, target: &[u8]) -> Result<Qid, Error> {
        if target.len() > PATH_MAX {
            return Err(Error::NAME_TOO_LONG);
        }
        let (dir, name) = self.split_path(path.as_ref(), false)?;
        let body = Body::Symlink(Bytes::copy_from_slice(target));
        let ino = self.create(dir, name, self.root_owned(body, 0o777))?;
        self.qid(ino)
    }

    /// Set the mode of `path` as a 9P2000 stat's mode: permission bits plus `DMAPPEND`, `DMEXCL`
    /// and `DMTMP` (the `DMDIR` bit must match the file). This is how a 9P2000.L client's tree
    /// gets append-only and exclusive-use files, which .L cannot ask for.
    pub fn set_mode(&mut self, path: impl AsRef<[u8]>, mode: u32) -> Result<(), Error> {
        let ino = self.resolve(path.as_ref())?;
        let now = self.now;
        let inode = self.inode_mut(ino)?;
        if (mode & dm::DIR != 0) != inode.is_dir() {
            return Err(Error::DIR_BIT);
        }
        inode.perm = (inode.perm & 0o7000) | (mode & 0o777);
        inode.flags = mode & (dm::APPEND | dm::EXCL | dm::TMP);
        inode.ctime = now;
        Ok(())
    }

    /// Remove `path` (a directory must be empty). A file some fid still holds lives on, nameless,
    /// until the last such fid is clunked.
    pub fn remove_path(&mut self, path: impl AsRef<[u8]>) -> Result<(), Error> {
        let (dir, name) = self.split_path(path.as_ref(), false)?;
        self.unlink(dir, name, Want::Any)
    }

    /// Split a path into its directory (which must exist, or is made with `make_parents`) and
    /// its last name.
    fn split_path<'p>(
        &mut self,
        path: &'p [u8],
        make_parents: bool,
    ) -> Result<(u64, &'p [u8]), Error> {
        let trimmed = path.strip_suffix(b"/").unwrap_or(path);
        let (parent, name) = match trimmed.iter().rposition(|&b| b == b'/') {
            Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
            None => (&b""[..], trimmed),
        };
        check_name(name)?;
        let dir = if make_parents {
            self.mkdir_p(parent)?;
            self.resolve(parent)?
        } else {
            self.resolve(parent)?
        };
        Ok((dir, name))
    }

    fn root_owned(&self, body: Body, perm: u32) -> NewFile<'static> {
        static ROOT_USER: User = User {
            name: Bytes::from_static(b"root"),
            id: 0,
        };
        NewFile {
            body,
            perm,
            flags: 0,
            owner: &ROOT_USER,
            gid: 0,
            gname: Bytes::from_static(b"root"),
        }
    }

    /// Check the tree's internal consistency: every entry names a file that links back to it,
    /// counts agree with contents, and no file lingers unreachable and unheld. Returns the first
    /// problem found. Tests and the simulation call this after each step.
    pub fn check(&self) -> Result<(), String> {
        let mut used = 0u64;
        let root = self.inodes.get(&ROOT).ok_or("the root is missing")?;
        if !root.is_dir() || !root.links.is_empty() {
            return Err("the root is not a directory without links".into());
        }
        for (&ino, inode) in &self.inodes {
            if ino >= self.next_path {
                return Err(format!("file {ino} is beyond the next qid path"));
            }
            for (dir, name) in &inode.links {
                let back = self
                    .inodes
                    .get(dir)
                    .and_then(Inode::dir)
                    .and_then(|d| d.get(name));
                if back != Some(ino) {
                    return Err(format!(
                        "file {ino} claims link {dir}/{name:?} that is not there"
                    ));
                }
                check_name(name).map_err(|e| format!("file {ino} is named {name:?}: {e}"))?;
            }
            if inode.is_dir() && inode.links.len() > 1 {
                return Err(format!("directory {ino} has {} links", inode.links.len()));
            }
            if self.is_orphan(ino, inode) && !self.owners.has_any_hold(ino) {
                return Err(format!("file {ino} has no name and no fid holds it"));
            }
            if !self.is_orphan(ino, inode)
                && ino != ROOT
                && !inode.links.iter().any(|(_, n)| *n == inode.name)
            {
                return Err(format!(
                    "file {ino}'s stat name {:?} is not one of its links",
                    inode.name
                ));
            }
            match &inode.body {
                Body::File(b) => {
                    used += b.len() as u64;
                    if b.len() as u64 > self.limits.max_file_size {
                        return Err(format!("file {ino} is larger than the limit"));
                    }
                }
                Body::Dir(d) => {
                    if !d.consistent() {
                        return Err(format!("directory {ino}'s indexes disagree"));
                    }
                    for (_, name, child) in d.after(0) {
                        let linked = self.inodes.get(&child).is_some_and(|c| {
                            c.links.contains(&(ino, name.clone()))
                                && d.entry_is_dir(name) == Some(c.is_dir())
                        });
                        if !linked {
                            return Err(format!(
                                "entry {ino}/{name:?} names a file that does not link back"
                            ));
                        }
                    }
                }
                Body::Symlink(_) | Body::Special(_) => {}
            }
        }
        if used != self.used_bytes {
            return Err(format!(
                "{used} bytes in files but {} counted",
                self.used_bytes
            ));
        }
        if !self.locks.consistent() {
            return Err("the lock table is inconsistent".into());
        }
        if let Some(ino) = self
            .owners
            .exclusive_files()
            .find(|i| !self.inodes.contains_key(i))
        {
            return Err(format!("exclusive open of missing file {ino}"));
        }
        Ok(())
    }
}

/// The error for a file operation on something that is not a regular file.
fn not_a_file(inode: &Inode) -> Error {
    match inode.body {
        Body::Dir(_) => Error::IS_DIR,
        _ => Error::NOT_FILE,
    }
}

/// Parse a 9P2000.u device extension, `b major minor` or `c major minor`.
pub(crate) fn parse_device(ext: &[u8]) -> Option<Special> {
    let text = core::str::from_utf8(ext).ok()?;
    let mut words = text.split_ascii_whitespace();
    let kind = words.next()?;
    let major = words.next()?.parse().ok()?;
    let minor = words.next()?.parse().ok()?;
    if words.next().is_some() {
        return None;
    }
    match kind {
        "b" => Some(Special::Block { major, minor }),
        "c" => Some(Special::Char { major, minor }),
        _ => None,
    }
}
