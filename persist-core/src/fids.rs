//! What the session knows of each client fid: its root, its path (a node of the shared name
//! tree), its kind, open mode, qid, directory offset and lock history. Updated only on
//! successful replies.

use alloc::boxed::Box;
use alloc::vec::Vec;

use bytes::Bytes;
use p9_core::Qid;

use crate::hash::HashMap;
use crate::names::{NameTree, NodeId};

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
    /// Writes acknowledged since the last successful fsync.
    pub const UNSYNCED: u16 = 1;
    /// Some of those were acknowledged on a link that died: the next fsync must fail.
    pub const WRITES_LOST: u16 = 2;
    /// Opened with O_APPEND (.L): its writes append, and are not repeated (kept when the fid
    /// is lost, which forgets how it was opened).
    pub const APPENDS: u16 = 4;
    /// Its directory position was restored after the last reconnect.
    pub const FAST_FORWARDED: u16 = 8;
    /// Lock history overflowed: it cannot be replayed.
    pub const LOCKS_OVERFLOWED: u16 = 16;
    /// Some unsynced writes are not kept: the session's replay budget was spent.
    pub const OVER_BUDGET: u16 = 32;
    /// Some unsynced writes are not kept: they appended (O_APPEND or an append-only file),
    /// and an append cannot be repeated.
    pub const APPENDED: u16 = 64;
    /// Writing kept writes again after a reconnect failed.
    pub const REWRITE_FAILED: u16 = 128;
    /// The file was truncated through the fid since its last fsync: writes across a
    /// truncation are not written again (they would bring back what it cut off).
    pub const TRUNCATED: u16 = 256;
    /// The file was written through another fid too since the last fsync: the two fids'
    /// writes cannot be put back in the order they happened, so neither's are kept.
    pub const SHARED: u16 = 512;
    /// The reasons a fid's unsynced writes cannot all be written again.
    pub const NOT_KEPT: u16 = OVER_BUDGET | APPENDED | REWRITE_FAILED | TRUNCATED | SHARED;
}

/// The writes acknowledged on a fid since its last successful fsync, kept to be written again
/// after a reconnect (as an NFS client keeps uncommitted data until COMMIT): each an offset and
/// the data, a slice of the client's own Twrite frame (no copy).
#[derive(Clone, Debug, Default)]
pub(crate) struct KeptWrites {
    pub writes: Vec<(u64, Bytes)>,
    /// What they count against the session's replay budget (see `FidTable::acked_write`).
    pub charge: usize,
}

/// The file as the kept writes leave it, where they touch it: disjoint ranges, each with the
/// data the last write covering it left there (slices of the kept frames, no copy). Written
/// back in any order, or only in part, these never put older data over newer: on a server that
/// lost nothing they change nothing.
pub(crate) fn final_image(writes: &[(u64, Bytes)]) -> Vec<(u64, Bytes)> {
    // start → data, disjoint; each new write cuts what it overlaps.
    let mut image: alloc::collections::BTreeMap<u64, Bytes> = Default::default();
    for (offset, data) in writes {
        let (start, end) = (*offset, *offset + data.len() as u64);
        if start == end {
            continue;
        }
        let overlapping: Vec<u64> = image
            .range(..end)
            .filter(|(s, d)| **s + d.len() as u64 > start)
            .map(|(s, _)| *s)
            .collect();
        for s in overlapping {
            let d = image.remove(&s).expect("listed");
            let e = s + d.len() as u64;
            if s < start {
                image.insert(s, d.slice(..(start - s) as usize));
            }
            if e > end {
                image.insert(end, d.slice((end - s) as usize..));
            }
        }
        image.insert(start, data.clone());
    }
    image.into_iter().collect()
}

/// What became of an acknowledged write (`FidTable::acked_write`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kept {
    Yes,
    /// Not kept: the fid's unsynced writes are already not all kept (or it is gone).
    No,
    /// Not kept: the replay budget is spent.
    OverBudget,
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
    /// Unsynced writes kept for a rewrite after a reconnect (boxed, as locks are).
    pub kept: Option<Box<KeptWrites>>,
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
    /// What every fid's kept writes count against the replay budget.
    kept_charge: usize,
    /// For each file (the server's qid.path) with kept writes, the fid keeping them.
    kept_by_file: HashMap<u64, u32>,
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
        self.drop_kept(fid);
        if let Some(old) = self.fids.insert(fid, rec) {
            self.drop_refs(&old);
        }
    }

    /// Forget `fid`.
    pub fn remove(&mut self, fid: u32) -> Option<FidRec> {
        self.drop_kept(fid);
        let rec = self.fids.remove(&fid)?;
        self.drop_refs(&rec);
        Some(rec)
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
        self.drop_kept(fid);
        true
    }

    /// A write through `fid` was acknowledged: the fid has unsynced writes (appended ones when
    /// it appends), and the write — `data()`, its bytes and what they count against `budget`
    /// (shared by every fid) — is kept to be written again after a reconnect, unless the fid's
    /// unsynced writes are already not all kept. Past the budget the fid's kept writes are
    /// dropped and it is marked `OVER_BUDGET` until its next successful fsync; written through
    /// two fids, the file's writes are kept by neither (`SHARED`). One lookup of the fid on the
    /// way every acknowledged write takes.
    pub fn acked_write(
        &mut self,
        fid: u32,
        offset: u64,
        data: impl FnOnce() -> Option<(Bytes, usize)>,
        budget: usize,
    ) -> Kept {
        let Some(rec) = self.fids.get_mut(&fid) else {
            return Kept::No;
        };
        rec.flags |= flag::UNSYNCED;
        if crate::replay::appends(rec) {
            rec.flags |= flag::APPENDED;
        }
        if rec.flags & flag::NOT_KEPT != 0 {
            return Kept::No;
        }
        let Some((data, charge)) = data() else {
            return Kept::No;
        };
        let path = rec.qid.path;
        if self.kept_charge + charge > budget {
            if let Some(k) = rec.kept.take() {
                self.kept_charge -= k.charge;
            }
            rec.flags |= flag::OVER_BUDGET;
            if self.kept_by_file.get(&path) == Some(&fid) {
                self.kept_by_file.remove(&path);
            }
            return Kept::OverBudget;
        }
        match self.kept_by_file.get(&path) {
            Some(&other) if other != fid => {
                // Written through two fids: which came last cannot be told after a loss.
                rec.flags |= flag::SHARED;
                self.stop_keeping_as(other, flag::SHARED);
                return Kept::No;
            }
            Some(_) => {}
            None => {
                self.kept_by_file.insert(path, fid);
            }
        }
        let kept = rec.kept.get_or_insert_with(Default::default);
        kept.writes.push((offset, data));
        kept.charge += charge;
        self.kept_charge += charge;
        Kept::Yes
    }

    /// A truncation through `fid`: kept writes cannot be written again across it (a rewrite
    /// would bring back what it cut off), so they are let go and the fid marked: its next
    /// fsync after a loss fails, as it would without keeping.
    pub fn stop_keeping(&mut self, fid: u32) {
        self.stop_keeping_as(fid, flag::TRUNCATED);
        // Another fid's writes to the same file would be written back over the cut too.
        let path = self.fids.get(&fid).map(|r| r.qid.path);
        if let Some(&holder) = path.and_then(|p| self.kept_by_file.get(&p)) {
            self.stop_keeping_as(holder, flag::TRUNCATED);
        }
    }

    /// The file whose qid.path is `path` was truncated by opening it (O_TRUNC): whichever fid
    /// keeps writes for it stops.
    pub fn truncated_file(&mut self, path: u64) {
        if let Some(&holder) = self.kept_by_file.get(&path) {
            self.stop_keeping_as(holder, flag::TRUNCATED);
        }
    }

    /// Let go of `fid`'s kept writes, and mark why its unsynced writes are not all kept.
    fn stop_keeping_as(&mut self, fid: u32, why: u16) {
        self.drop_kept(fid);
        if self
            .fids
            .get(&fid)
            .is_some_and(|r| r.flags & flag::UNSYNCED != 0)
        {
            self.flag(fid, why);
        }
    }

    fn flag(&mut self, fid: u32, bits: u16) {
        if let Some(rec) = self.fids.get_mut(&fid) {
            rec.flags |= bits;
        }
    }

    /// Let go of `fid`'s kept writes (an fsync made them durable, or reported them lost).
    pub fn drop_kept(&mut self, fid: u32) {
        let Some(rec) = self.fids.get_mut(&fid) else {
            return;
        };
        let path = rec.qid.path;
        if let Some(k) = rec.kept.take() {
            self.kept_charge -= k.charge;
        }
        if self.kept_by_file.get(&path) == Some(&fid) {
            self.kept_by_file.remove(&path);
        }
    }

    /// What all kept writes count against the replay budget.
    pub fn kept_charge(&self) -> usize {
        self.kept_charge
    }

    /// Whether any fid is lost.
    pub fn any_lost(&self) -> bool {
        self.lost > 0
    }

    fn drop_refs(&mut self, rec: &FidRec) {
        if rec.is_lost().is_some() {
            self.lost -= 1;
        }
        debug_assert!(
            rec.kept.is_none(),
            "kept writes are let go before the record"
        );
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
            kept: None,
        }
    }

    /// Forget every fid (a new Tversion resets the session).
    pub fn clear(&mut self) {
        let fids: Vec<u32> = self.fids.keys().copied().collect();
        for fid in fids {
            self.remove(fid);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn image(writes: &[(u64, &[u8])]) -> Vec<(u64, Vec<u8>)> {
        let writes: Vec<(u64, Bytes)> = writes
            .iter()
            .map(|(o, d)| (*o, Bytes::copy_from_slice(d)))
            .collect();
        final_image(&writes)
            .into_iter()
            .map(|(o, d)| (o, d.to_vec()))
            .collect()
    }

    #[test]
    fn the_final_image_keeps_the_last_data_for_each_byte() {
        // A later write over the middle of an earlier one splits it.
        assert_eq!(
            image(&[(0, b"aaaaaaaa"), (2, b"bb")]),
            [
                (0, b"aa".to_vec()),
                (2, b"bb".to_vec()),
                (4, b"aaaa".to_vec())
            ]
        );
        // An earlier write wholly covered is gone; touching ranges stay apart.
        assert_eq!(
            image(&[(4, b"xy"), (2, b"cccccc"), (8, b"d")]),
            [(2, b"cccccc".to_vec()), (8, b"d".to_vec())]
        );
        // Overlaps at either end.
        assert_eq!(
            image(&[(2, b"eeee"), (0, b"fff"), (5, b"gg")]),
            [
                (0, b"fff".to_vec()),
                (3, b"ee".to_vec()),
                (5, b"gg".to_vec())
            ]
        );
        assert!(image(&[(3, b"")]).is_empty());
    }
}
