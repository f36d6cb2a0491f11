//! What the session knows of each client fid: its root, its path (a node of the shared name
//! tree), its kind, open mode, qid, directory offset and lock history. Updated only on
//! successful replies.

use alloc::boxed::Box;
use alloc::vec::Vec;

use bytes::Bytes;
use p9_core::Qid;

use crate::hash::HashMap;
use crate::names::{NameTree, NodeId};
pub(crate) use crate::unsynced::Kept;
use crate::unsynced::Unsynced;

/// An attach's identity: what a re-attach must repeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Root {
    pub uname: Bytes,
    pub aname: Bytes,
    pub n_uname: Option<u32>,
    /// Attached with an afid: needs re-authentication to rebuild.
    pub authenticated: bool,
    /// The root of this attach's paths in the name tree.
    pub node: NodeId,
    refs: u32,
}

pub(crate) type RootId = u32;

/// Why a fid can no longer be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostReason {
    /// Could not be rebuilt after a reconnect: "unable to reopen file" (.L: ESTALE).
    Stale,
    /// Was open on a backend that failed (mux): "i/o error" (.L: EIO).
    Io,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FidKind {
    /// Stands for a file, not open.
    Walked,
    /// Open for I/O, with the mode it was opened with.
    Open(OpenMode),
    /// An authentication fid.
    Auth,
    /// An extended-attribute fid (Txattrwalk/Txattrcreate).
    Xattr,
    /// Lost: every request on it fails until it is clunked.
    Lost(LostReason),
}

/// How a fid was opened: the mode byte of a Topen or Tcreate (9P2000, .u), or the flags of a
/// Tlopen or Tlcreate (.L).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenMode {
    Classic(u8),
    DotL(u32),
}

/// Fid flags.
pub(crate) mod flag {
    /// Opened with O_APPEND (.L): its writes append, and are not repeated (kept when the fid
    /// is lost, which forgets how it was opened).
    pub const APPENDS: u16 = 4;
    /// Its directory position was restored after the last reconnect.
    pub const FAST_FORWARDED: u16 = 8;
    /// Lock history overflowed: it cannot be replayed.
    pub const LOCKS_OVERFLOWED: u16 = 16;
}

/// The Tlock requests that succeeded on a fid, oldest first.
#[derive(Clone, Debug, Default)]
pub(crate) struct LockHistory(pub Vec<Bytes>);

#[derive(Clone, Debug)]
pub(crate) struct FidRec {
    pub root: RootId,
    pub node: NodeId,
    pub qid: Qid,
    pub kind: FidKind,
    /// For an open directory: the offset the client's next read will use.
    pub dir_offset: u64,
    pub flags: u16,
    /// Successful Tlock frames, in order, for replay after a reconnect. Boxed: most fids
    /// never lock, and the record stays small.
    pub locks: Option<Box<LockHistory>>,
}

impl FidRec {
    pub fn is_lost(&self) -> Option<LostReason> {
        match self.kind {
            FidKind::Lost(r) => Some(r),
            _ => None,
        }
    }
}

/// The fid table with the roots and name tree it refers to.
#[derive(Default)]
pub(crate) struct FidTable {
    pub fids: HashMap<u32, FidRec>,
    /// How many fids are lost: while none are, requests need no lost-fid lookup.
    lost: usize,
    /// Every file's unsynced writes (by the files the fids stand for).
    pub unsynced: Unsynced,
    pub names: NameTree,
    roots: Vec<Option<Root>>,
}

impl FidTable {
    /// The root for these attach parameters, shared with any fid already using it; one more
    /// reference for the caller.
    pub fn intern_root(
        &mut self,
        uname: &Bytes,
        aname: &Bytes,
        n_uname: Option<u32>,
        authenticated: bool,
    ) -> RootId {
        let found = self.roots.iter().position(|r| {
            r.as_ref().is_some_and(|r| {
                r.uname == *uname
                    && r.aname == *aname
                    && r.n_uname == n_uname
                    && r.authenticated == authenticated
            })
        });
        if let Some(i) = found {
            self.roots[i].as_mut().expect("found").refs += 1;
            return i as RootId;
        }
        let node = self.names.new_root();
        let root = Root {
            uname: Bytes::copy_from_slice(uname),
            aname: Bytes::copy_from_slice(aname),
            n_uname,
            authenticated,
            node,
            refs: 1,
        };
        match self.roots.iter().position(Option::is_none) {
            Some(i) => {
                self.roots[i] = Some(root);
                i as RootId
            }
            None => {
                self.roots.push(Some(root));
                (self.roots.len() - 1) as RootId
            }
        }
    }

    pub fn root(&self, id: RootId) -> &Root {
        self.roots[id as usize].as_ref().expect("live root")
    }

    /// Drop one reference on a root (freeing it and its node at zero).
    pub fn release_root_ref(&mut self, id: RootId) {
        let slot = &mut self.roots[id as usize];
        let root = slot.as_mut().expect("live root");
        root.refs -= 1;
        if root.refs == 0 {
            let node = root.node;
            *slot = None;
            self.names.release(node);
        }
    }

    /// Add or replace `fid` (the record's root and node references pass to the table).
    pub fn insert(&mut self, fid: u32, rec: FidRec) {
        if let Some(old) = self.fids.insert(fid, rec) {
            self.drop_refs(&old);
            self.let_go_of_file(old.qid.path);
        }
    }

    /// Forget `fid`.
    pub fn remove(&mut self, fid: u32) -> Option<FidRec> {
        let rec = self.fids.remove(&fid)?;
        self.drop_refs(&rec);
        self.let_go_of_file(rec.qid.path);
        Some(rec)
    }

    /// A fid of file `path` went: if it was the file's last and the file has unsynced writes,
    /// nothing is left to read them back through (`Unsynced::closed`). The scan runs only for
    /// a file with unsynced writes.
    fn let_go_of_file(&mut self, path: u64) {
        if self.unsynced.has(path) && !self.fids.values().any(|f| f.qid.path == path) {
            self.unsynced.closed(path);
        }
    }

    /// Mark `fid` lost; false if there is no such fid.
    pub fn mark_lost(&mut self, fid: u32, reason: LostReason) -> bool {
        let Some(rec) = self.fids.get_mut(&fid) else {
            return false;
        };
        if rec.is_lost().is_none() {
            self.lost += 1;
        }
        rec.kind = FidKind::Lost(reason);
        rec.locks = None;
        true
    }

    /// A write through `fid` was acknowledged: its file has unsynced writes, and the write —
    /// `data()`, its bytes and what they count against `budget` — is kept to be checked after a
    /// reconnect where it can be (`Unsynced::acked_write`). One lookup of the fid and
    /// one of its file on the way every acknowledged write takes.
    pub fn acked_write(
        &mut self,
        fid: u32,
        offset: u64,
        data: impl FnOnce() -> Option<(Bytes, usize)>,
        budget: usize,
    ) -> Kept {
        let Some(rec) = self.fids.get(&fid) else {
            return Kept::No;
        };
        let (path, appends) = (rec.qid.path, crate::replay::appends(rec));
        self.unsynced
            .acked_write(path, appends, offset, data, budget)
    }

    /// The file `fid` stands for was truncated (or may have been): its kept writes cannot be
    /// checked across that.
    pub fn truncated(&mut self, fid: u32) {
        if let Some(path) = self.fids.get(&fid).map(|r| r.qid.path) {
            self.unsynced.truncated(path);
        }
    }

    /// Why the next fsync through `fid` must fail, if it must: its file's unsynced writes were
    /// lost with a link and not all found on the server since.
    pub fn writes_lost(&self, fid: u32) -> Option<&'static str> {
        let rec = self.fids.get(&fid)?;
        self.unsynced.lost(rec.qid.path)
    }

    /// A Tfsync through `fid`, sent at acknowledgement count `mark`, succeeded or reported the
    /// loss: the writes it covers are settled.
    pub fn fsynced(&mut self, fid: u32, mark: u64) {
        if let Some(path) = self.fids.get(&fid).map(|r| r.qid.path) {
            self.unsynced.fsynced(path, mark);
        }
    }

    /// Whether any fid is lost.
    pub fn any_lost(&self) -> bool {
        self.lost > 0
    }

    fn drop_refs(&mut self, rec: &FidRec) {
        if rec.is_lost().is_some() {
            self.lost -= 1;
        }
        self.names.release(rec.node);
        self.release_root_ref(rec.root);
    }

    /// A new record standing for `node` of `root`, taking one more reference on each.
    pub fn record_at(&mut self, root: RootId, node: NodeId, qid: Qid) -> FidRec {
        self.roots[root as usize].as_mut().expect("live root").refs += 1;
        self.names.retain(node);
        FidRec {
            root,
            node,
            qid,
            kind: FidKind::Walked,
            dir_offset: 0,
            flags: 0,
            locks: None,
        }
    }

    /// Forget every fid (a new Tversion resets the session).
    pub fn clear(&mut self) {
        let fids: Vec<u32> = self.fids.keys().copied().collect();
        for fid in fids {
            self.remove(fid);
        }
        self.unsynced.clear();
    }

    pub fn get(&self, fid: u32) -> Option<&FidRec> {
        self.fids.get(&fid)
    }

    pub fn get_mut(&mut self, fid: u32) -> Option<&mut FidRec> {
        self.fids.get_mut(&fid)
    }

    pub fn len(&self) -> usize {
        self.fids.len()
    }

    /// Approximate heap bytes: fid table, roots and name tree.
    pub fn heap_bytes(&self) -> usize {
        self.fids.allocation_size()
            + self
                .fids
                .values()
                .filter_map(|f| f.locks.as_ref())
                .map(|l| {
                    l.0.capacity() * core::mem::size_of::<Bytes>()
                        + l.0.iter().map(Bytes::len).sum::<usize>()
                })
                .sum::<usize>()
            + self.roots.capacity() * core::mem::size_of::<Option<Root>>()
            + self.names.heap_bytes()
    }
}
