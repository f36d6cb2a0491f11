//! Unsynced writes, per file (DESIGN §3.6): the Twrites acknowledged since a file's last
//! successful Tfsync, through any of its fids, kept by reference (slices of the client's own
//! frames, no copy) within the replay budget, so that after a reconnect the session can tell
//! whether the server still holds them and a later fsync tells the truth.
//!
//! Per file, not per fid: Linux writes back through one fid and fsyncs through another (and
//! `sync FILE` opens a third), so a file's fsync must answer for every write to it. Writes are
//! numbered as they are acknowledged; a Tfsync covers those acknowledged before it was sent,
//! and no later ones. After a lost link every file with unsynced writes is *lost* until a
//! rebuilt fid of it reads them back and finds the server holding the newest acknowledged data
//! in every range (a network blip, or a server restart that lost nothing). Where the server's
//! bytes differ, the session cannot tell a crash that lost them from another client's newer
//! write, so it writes nothing over them (an old write laid over a newer one is a history no
//! server could give); the file's next fsync fails with EIO, saying why.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use bytes::Bytes;

use crate::hash::HashMap;

/// Why some of a file's unsynced writes are not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotKept {
    /// The replay budget was spent.
    OverBudget,
    /// They appended (O_APPEND or an append-only file): an append cannot be repeated.
    Appended,
    /// The file was truncated since: what the writes left there is gone (or may be), so the
    /// server's file cannot be checked against them.
    Truncated,
    /// After a reconnect the server's file differs from them where they were written.
    Differs,
    /// Reading them back after a reconnect failed.
    CheckFailed,
    /// Every fid of the file was let go: the writes were let go with them.
    Closed,
}

impl NotKept {
    /// Why the file's next fsync fails, in the event's words.
    pub fn why(self) -> &'static str {
        match self {
            NotKept::OverBudget => {
                "its unsynced writes outgrew the replay budget before a reconnect"
            }
            NotKept::Appended => "unsynced appends cannot be checked after a reconnect",
            NotKept::Truncated => {
                "it was truncated since its last fsync, and writes across that cannot be checked"
            }
            NotKept::Differs => {
                "after a reconnect the server's file differs from what was written since its last fsync (lost with the server's memory, or written since by another client: nothing was written over it)"
            }
            NotKept::CheckFailed => {
                "reading its unsynced writes back after a reconnect failed"
            }
            NotKept::Closed => {
                "it was written through fids let go since its last fsync, whose writes were let go too"
            }
        }
    }
}

/// Files let go of with unsynced writes that are remembered (a few words each): a Linux
/// client that writes and closes more files than this between fsyncs and then loses its server
/// may find a forgotten one's later fsync succeeding (the data was never kept).
const MAX_CLOSED: usize = 65_536;

/// Why a lost file whose writes were all kept was not checked.
const NOT_CHECKED: &str =
    "its unsynced writes were not read back after a reconnect (no fid of it open for reading)";

/// A write kept to be written again: its acknowledgement number, offset and data.
#[derive(Clone, Debug)]
struct KeptWrite {
    ack: u64,
    offset: u64,
    data: Bytes,
    charge: usize,
}

/// One file's unsynced writes.
#[derive(Clone, Debug, Default)]
struct FileWrites {
    writes: Vec<KeptWrite>,
    charge: usize,
    /// Some unsynced writes are not kept, and why; with the count of writes acknowledged when
    /// that last happened (an fsync sent at that count or later covers it).
    not_kept: Option<(NotKept, u64)>,
    /// A link died since these writes were acknowledged, and they are not written again yet:
    /// the next fsync fails — the acknowledgement count then (an fsync sent after it reports
    /// the loss).
    lost: Option<u64>,
    /// A rebuilt fid is reading them back now.
    checking: bool,
}

/// What became of an acknowledged write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kept {
    Yes,
    /// Not kept: the file's unsynced writes are already not all kept.
    No,
    /// Not kept: the replay budget is spent.
    OverBudget,
}

/// Every file's unsynced writes, by the server's qid.path. A file's record lives until an fsync
/// (or the failure that reports the loss) settles it, whatever becomes of its fids: the replay
/// budget bounds the data kept, and a record without data is a few words.
#[derive(Default)]
pub(crate) struct Unsynced {
    files: HashMap<u64, FileWrites>,
    /// Files let go of with unsynced writes, oldest first: past `MAX_CLOSED` the oldest are
    /// forgotten (their records hold no data, only what a later fsync after a loss must say).
    closed: VecDeque<u64>,
    /// What every file's kept writes count against the replay budget.
    charge: usize,
    /// Writes acknowledged so far: the number of the next.
    acks: u64,
}

impl Unsynced {
    /// The acknowledgement number a Tfsync sent now covers up to (exclusive).
    pub fn fsync_mark(&self) -> u64 {
        self.acks
    }

    /// A write to file `path` was acknowledged. `appends`: its fid appends. `data()`: its bytes
    /// and what they count against `budget` (shared by every file). Past the budget the file's
    /// kept writes are let go and it is marked, until an fsync covers that.
    pub fn acked_write(
        &mut self,
        path: u64,
        appends: bool,
        offset: u64,
        data: impl FnOnce() -> Option<(Bytes, usize)>,
        budget: usize,
    ) -> Kept {
        let ack = self.acks;
        self.acks += 1;
        // The count of writes acknowledged once this one is: an fsync sent from then on
        // covers it.
        let after = self.acks;
        let file = self.files.entry(path).or_default();
        if appends {
            return Self::not_keeping(&mut self.charge, file, NotKept::Appended, after);
        }
        if file.not_kept.is_some() {
            file.not_kept = file.not_kept.map(|(why, _)| (why, after));
            return Kept::No;
        }
        let Some((data, charge)) = data() else {
            return Kept::No;
        };
        if self.charge + charge > budget {
            Self::not_keeping(&mut self.charge, file, NotKept::OverBudget, after);
            return Kept::OverBudget;
        }
        file.writes.push(KeptWrite {
            ack,
            offset,
            data,
            charge,
        });
        file.charge += charge;
        self.charge += charge;
        Kept::Yes
    }

    /// Let go of `file`'s kept writes: until an fsync sent once `after` writes were acknowledged,
    /// its unsynced writes are not all kept, for `why`.
    fn not_keeping(total: &mut usize, file: &mut FileWrites, why: NotKept, after: u64) -> Kept {
        *total -= file.charge;
        file.charge = 0;
        file.writes.clear();
        // The first reason stays: it is the one the client most needs to hear.
        let why = file.not_kept.map_or(why, |(w, _)| w);
        file.not_kept = Some((why, after));
        Kept::No
    }

    /// File `path` was truncated (or a truncation of it may have run): its kept writes cannot
    /// be written again across that. Nothing changes for a file with nothing unsynced.
    pub fn truncated(&mut self, path: u64) {
        let ack = self.acks;
        if let Some(file) = self.files.get_mut(&path) {
            Self::not_keeping(&mut self.charge, file, NotKept::Truncated, ack);
        }
    }

    /// The last fid of file `path` was let go: its kept writes are let go too (no fid is left
    /// to read them back through), and a later fsync after a loss says so.
    pub fn closed(&mut self, path: u64) {
        let ack = self.acks;
        let Some(file) = self.files.get_mut(&path) else {
            return;
        };
        // A check under way carries its own image of them to its end.
        Self::not_keeping(&mut self.charge, file, NotKept::Closed, ack);
        self.closed.push_back(path);
        if self.closed.len() > MAX_CLOSED {
            // The oldest, if still only a record of writes not kept (none kept since, none
            // lost): whatever the reason they were not kept (closed, appended, over budget).
            let old = self.closed.pop_front().expect("not empty");
            let forget = self
                .files
                .get(&old)
                .is_some_and(|f| f.writes.is_empty() && f.lost.is_none() && !f.checking);
            if forget {
                self.files.remove(&old);
            }
        }
    }

    /// File `path` was removed: its unsynced writes no longer matter.
    pub fn removed(&mut self, path: u64) {
        if let Some(file) = self.files.remove(&path) {
            self.charge -= file.charge;
        }
    }

    /// Whether file `path` has a record here.
    pub fn has(&self, path: u64) -> bool {
        !self.files.is_empty() && self.files.contains_key(&path)
    }

    /// A Tfsync of file `path`, sent when the acknowledgement count was `mark`, was answered
    /// (`ok`), or failed reporting the loss: the writes it covers are settled. Later ones stay.
    pub fn fsynced(&mut self, path: u64, mark: u64) {
        let Some(file) = self.files.get_mut(&path) else {
            return;
        };
        let settled: usize = file
            .writes
            .iter()
            .filter(|w| w.ack < mark)
            .map(|w| w.charge)
            .sum();
        file.writes.retain(|w| w.ack >= mark);
        file.charge -= settled;
        self.charge -= settled;
        if file.not_kept.is_some_and(|(_, after)| after <= mark) {
            file.not_kept = None;
        }
        // Reported or made durable: what was lost before it is said.
        if file.lost.is_some_and(|at| at <= mark) {
            file.lost = None;
        }
        if file.writes.is_empty()
            && file.not_kept.is_none()
            && file.lost.is_none()
            && !file.checking
        {
            self.files.remove(&path);
        }
    }

    /// A link died: every file with unsynced writes may have lost them with the server's
    /// memory, until they are written again.
    pub fn link_lost(&mut self) {
        for file in self.files.values_mut() {
            file.lost = Some(self.acks);
            file.checking = false;
        }
    }

    /// Why file `path`'s next fsync must fail, if it must: unsynced writes lost with a link
    /// and not (all) written again since.
    pub fn lost(&self, path: u64) -> Option<&'static str> {
        let file = self.files.get(&path).filter(|f| f.lost.is_some())?;
        Some(file.not_kept.map_or(NOT_CHECKED, |(why, _)| why.why()))
    }

    /// A fid of file `path`, open for reading, was rebuilt: if the file's writes are lost and
    /// all kept, and no other fid reads them back already, this one does — the final image of
    /// them to compare with the server's file (`final_image`).
    pub fn claim_check(&mut self, path: u64) -> Option<Vec<(u64, Bytes)>> {
        let file = self.files.get_mut(&path)?;
        if file.lost.is_none() || file.checking || file.not_kept.is_some() {
            return None;
        }
        file.checking = true;
        let writes: Vec<(u64, Bytes)> = file
            .writes
            .iter()
            .map(|w| (w.offset, w.data.clone()))
            .collect();
        Some(final_image(&writes))
    }

    /// The check of file `path` ended: the server holds what was acknowledged (`Ok`), or
    /// why not.
    pub fn checked(&mut self, path: u64, result: Result<(), NotKept>) {
        let ack = self.acks;
        let Some(file) = self.files.get_mut(&path) else {
            return;
        };
        file.checking = false;
        match result {
            Ok(()) => file.lost = None,
            Err(why) => {
                Self::not_keeping(&mut self.charge, file, why, ack);
            }
        }
    }

    /// What all kept writes count against the replay budget.
    pub fn charge(&self) -> usize {
        self.charge
    }

    /// Forget everything (a new Tversion; or another backend, whose files these are not).
    pub fn clear(&mut self) {
        self.files.clear();
        self.closed.clear();
        self.charge = 0;
    }
}

/// The file as the kept writes leave it, where they touch it: disjoint ranges, each with the
/// data the last write covering it left there (slices of the kept frames, no copy): what the
/// server must hold there if it lost nothing.
pub(crate) fn final_image(writes: &[(u64, Bytes)]) -> Vec<(u64, Bytes)> {
    // start → data, disjoint; each new write cuts what it overlaps.
    let mut image: BTreeMap<u64, Bytes> = Default::default();
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

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
        // A later write that ends where an earlier one ends leaves nothing of it after.
        assert_eq!(
            image(&[(0, b"aaaa"), (2, b"bb")]),
            [(0, b"aa".to_vec()), (2, b"bb".to_vec())]
        );
        // A later write over the start of one that begins past its own length.
        assert_eq!(
            image(&[(10, b"aaaa"), (10, b"b")]),
            [(10, b"b".to_vec()), (11, b"aaa".to_vec())]
        );
    }

    /// An fsync settles the writes it covers and gives back their budget; a file with nothing
    /// left unsynced has no record; a not-kept mark is cleared only by an fsync sent after it.
    #[test]
    fn an_fsync_settles_what_it_covers_and_no_more() {
        let mut u = Unsynced::default();
        write(&mut u, 1, 0, b"aaaa");
        u.fsynced(1, u.fsync_mark());
        assert!(!u.has(1), "settled: no record");
        write(&mut u, 1, 0, b"bb");
        let mark = u.fsync_mark();
        write(&mut u, 1, 2, b"c");
        u.fsynced(1, mark);
        assert_eq!(u.charge(), 1, "the later write still counts");
        u.removed(1);
        assert_eq!(u.charge(), 0);
        write(&mut u, 2, 0, b"cc");
        let before = u.fsync_mark();
        u.truncated(2);
        write(&mut u, 2, 0, b"dd");
        u.fsynced(2, before);
        u.link_lost();
        assert!(
            u.lost(2).is_some(),
            "a write not kept (across the truncation) came after that fsync"
        );
        u.fsynced(2, u.fsync_mark());
        assert_eq!(u.lost(2), None);
        // A new version or another backend: nothing of the old files is kept.
        write(&mut u, 3, 0, b"dd");
        u.clear();
        assert_eq!(u.charge(), 0);
        assert!(!u.has(3));
    }

    fn write(u: &mut Unsynced, path: u64, offset: u64, data: &'static [u8]) -> Kept {
        u.acked_write(
            path,
            false,
            offset,
            || Some((Bytes::from_static(data), data.len())),
            1 << 20,
        )
    }

    #[test]
    fn files_let_go_of_unsynced_are_remembered_within_a_bound() {
        let mut u = Unsynced::default();
        for path in 0..(MAX_CLOSED as u64 + 100) {
            // Appends are never kept: the record says so until it is forgotten.
            u.acked_write(path, true, 0, || None, 1 << 20);
            u.closed(path);
        }
        assert_eq!(u.files.len(), MAX_CLOSED, "the newest {MAX_CLOSED} kept");
        assert_eq!(u.closed.len(), MAX_CLOSED);
        assert!(u.files.contains_key(&(MAX_CLOSED as u64 + 99)));
        assert!(!u.files.contains_key(&99));
    }

    /// A file whose writes a loss made doubtful is never forgotten for the bound: its next
    /// fsync must still fail.
    #[test]
    fn a_lost_file_let_go_of_is_not_forgotten() {
        let mut u = Unsynced::default();
        write(&mut u, 0, 0, b"lost");
        u.link_lost();
        u.closed(0);
        for path in 1..(MAX_CLOSED as u64 + 100) {
            u.acked_write(path, true, 0, || None, 1 << 20);
            u.closed(path);
        }
        assert!(u.lost(0).is_some(), "still reported");
    }

    /// A removed file's kept writes go, and stop counting against the budget.
    #[test]
    fn a_removed_file_gives_back_its_budget() {
        let mut u = Unsynced::default();
        write(&mut u, 1, 0, b"aaaa");
        write(&mut u, 2, 0, b"bb");
        u.removed(1);
        assert_eq!(u.charge(), 2);
        assert!(!u.has(1));
        u.link_lost();
        assert_eq!(u.lost(1), None, "nothing to report of a removed file");
    }

    /// A write that brings the charge exactly to the budget is kept; one past it is not.
    #[test]
    fn the_budget_is_inclusive() {
        let mut u = Unsynced::default();
        let at = |u: &mut Unsynced, path, budget| {
            u.acked_write(
                path,
                false,
                0,
                || Some((Bytes::from_static(b"abcd"), 4)),
                budget,
            )
        };
        assert!(matches!(at(&mut u, 1, 4), Kept::Yes));
        assert!(matches!(at(&mut u, 2, 7), Kept::OverBudget));
    }

    #[test]
    fn an_fsync_covers_only_writes_acknowledged_before_it_was_sent() {
        let mut u = Unsynced::default();
        write(&mut u, 7, 0, b"old");
        let mark = u.fsync_mark();
        write(&mut u, 7, 3, b"new");
        u.fsynced(7, mark);
        u.link_lost();
        assert!(u.lost(7).is_some(), "the later write is still unsynced");
        assert_eq!(
            u.claim_check(7),
            Some(vec![(3, Bytes::from_static(b"new"))])
        );
        u.checked(7, Ok(()));
        assert_eq!(u.lost(7), None);
        assert_eq!(u.charge(), 3);
    }

    #[test]
    fn writes_not_kept_are_reported_by_the_next_fsync_after_a_loss() {
        let mut u = Unsynced::default();
        write(&mut u, 1, 0, b"aaaa");
        u.truncated(1);
        write(&mut u, 1, 0, b"bb");
        assert_eq!(u.charge(), 0, "nothing kept across a truncation");
        u.link_lost();
        assert_eq!(u.lost(1), Some(NotKept::Truncated.why()));
        assert_eq!(u.claim_check(1), None);
        // The fsync that reports it settles it.
        u.fsynced(1, u.fsync_mark());
        assert_eq!(u.lost(1), None);
        // Kept, but no fid read them back: lost all the same.
        write(&mut u, 2, 0, b"cc");
        u.link_lost();
        assert_eq!(u.lost(2), Some(NOT_CHECKED));
        // Over budget.
        let big = u.acked_write(
            3,
            false,
            0,
            || Some((Bytes::from_static(b"x"), 2 << 20)),
            1 << 20,
        );
        assert_eq!(big, Kept::OverBudget);
        u.link_lost();
        assert_eq!(u.lost(3), Some(NotKept::OverBudget.why()));
    }
}
