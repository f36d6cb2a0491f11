//! One file of the tree: its kind, what it holds, its attributes, and the names it is linked by.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::ops::Bound;

use bytes::Bytes;

/// A .L directory listing gives "." cookie 1 and ".." cookie 2, so real entries count from 3.
pub(crate) const FIRST_COOKIE: u64 = 3;

/// Who acts: the user a fid was attached as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct User {
    pub name: Bytes,
    /// Numeric id (`n_uname`), or `NONUNAME` when the client gave only a name.
    pub id: u32,
}

/// A directory's entries. Each entry gets a cookie when it is linked, from a counter that never
/// goes back, and listings run in cookie order: a listing resumed from a cookie is unaffected by
/// entries added or removed meanwhile, and a cookie stays valid for as long as the tree lives.
#[derive(Clone, Debug)]
pub(crate) struct Dir {
    entries: BTreeMap<Bytes, Entry>,
    order: BTreeMap<u64, Bytes>,
    next_cookie: u64,
    /// How many entries are directories (each has a ".." link to this one, for nlink).
    subdirs: u64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    ino: u64,
    cookie: u64,
    is_dir: bool,
}

impl Dir {
    pub fn new() -> Dir {
        Dir {
            entries: BTreeMap::new(),
            order: BTreeMap::new(),
            next_cookie: FIRST_COOKIE,
            subdirs: 0,
        }
    }

    pub fn get(&self, name: &[u8]) -> Option<u64> {
        self.entries.get(name).map(|e| e.ino)
    }

    /// Link `name` to `ino`; the caller has checked that `name` is free.
    pub fn insert(&mut self, name: Bytes, ino: u64, is_dir: bool) {
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        self.order.insert(cookie, name.clone());
        self.entries.insert(
            name,
            Entry {
                ino,
                cookie,
                is_dir,
            },
        );
        self.subdirs += u64::from(is_dir);
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<u64> {
        let e = self.entries.remove(name)?;
        self.order.remove(&e.cookie);
        self.subdirs -= u64::from(e.is_dir);
        Some(e.ino)
    }

    /// Whether entry `name` was linked as a directory.
    pub fn entry_is_dir(&self, name: &[u8]) -> Option<bool> {
        self.entries.get(name).map(|e| e.is_dir)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn subdirs(&self) -> u64 {
        self.subdirs
    }

    /// The entries after `cookie`, in listing order: `(cookie, name, ino)`.
    pub fn after(&self, cookie: u64) -> impl Iterator<Item = (u64, &Bytes, u64)> + '_ {
        self.order
            .range((Bound::Excluded(cookie), Bound::Unbounded))
            .filter_map(|(&c, name)| Some((c, name, self.entries.get(name)?.ino)))
    }

    /// Whether the two indexes agree (for [`crate::Fs::check`]).
    pub(crate) fn consistent(&self) -> bool {
        self.entries.len() == self.order.len()
            && self.entries.values().filter(|e| e.is_dir).count() as u64 == self.subdirs
            && self.order.iter().all(|(c, name)| {
                self.entries
                    .get(name)
                    .is_some_and(|e| e.cookie == *c && *c < self.next_cookie)
            })
    }
}

/// Device numbers, pipes and sockets: files with no contents here (9P2000.u and .L only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    Char { major: u32, minor: u32 },
    Block { major: u32, minor: u32 },
    Fifo,
    Socket,
}

/// What a file is, with what it holds.
#[derive(Clone, Debug)]
pub(crate) enum Body {
    Dir(Dir),
    File(Vec<u8>),
    Symlink(Bytes),
    Special(Special),
}

/// A file. Its qid path is its key in the inode table.
#[derive(Clone, Debug)]
pub(crate) struct Inode {
    pub body: Body,
    /// Bumped on every change of contents (the qid's version).
    pub version: u32,
    /// Unix permission bits, `0o7777`.
    pub perm: u32,
    /// The 9P2000 mode bits that are not the file's type: `DMAPPEND`, `DMEXCL`, `DMTMP`.
    pub flags: u32,
    pub uid: u32,
    pub gid: u32,
    pub muid: u32,
    pub uname: Bytes,
    pub gname: Bytes,
    /// Who last changed the contents.
    pub muname: Bytes,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub btime: u64,
    /// Every `(directory, name)` that names this file. A directory has at most one; the root has
    /// none, and neither has a removed file that a fid still holds.
    pub links: BTreeSet<(u64, Bytes)>,
    /// The name a stat reports: the latest link made, or the last one if it was removed.
    pub name: Bytes,
}

impl Inode {
    pub fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir(_))
    }

    pub fn dir(&self) -> Option<&Dir> {
        match &self.body {
            Body::Dir(d) => Some(d),
            _ => None,
        }
    }

    pub fn is_append_only(&self) -> bool {
        self.flags & p9_core::dm::APPEND != 0
    }

    pub fn is_exclusive(&self) -> bool {
        self.flags & p9_core::dm::EXCL != 0
    }

    /// Length as stat reports it: bytes for files, the target for symlinks, 0 otherwise.
    pub fn len(&self) -> u64 {
        match &self.body {
            Body::File(b) => b.len() as u64,
            Body::Symlink(t) => t.len() as u64,
            Body::Dir(_) | Body::Special(_) => 0,
        }
    }

    /// The contents changed: a new qid version and modification time.
    pub fn changed(&mut self, now: u64) {
        self.version = self.version.wrapping_add(1);
        self.mtime = now;
        self.ctime = now;
    }

    /// The link a rename or remove of the file itself acts on: the one its stat name shows.
    pub fn primary_link(&self) -> Option<(u64, Bytes)> {
        self.links
            .iter()
            .find(|(_, n)| *n == self.name)
            .or_else(|| self.links.first())
            .cloned()
    }

    /// The directory holding this one (meaningful for directories, which have one link).
    pub fn parent(&self) -> Option<u64> {
        self.links.first().map(|(d, _)| *d)
    }

    /// Link count as .L reports it.
    pub fn nlink(&self, is_root: bool) -> u64 {
        match &self.body {
            // Its entry in the parent (or the root's own "."), its own ".", and each child's "..".
            Body::Dir(d) => u64::from(is_root || !self.links.is_empty()) + 1 + d.subdirs(),
            _ => self.links.len() as u64,
        }
    }
}
