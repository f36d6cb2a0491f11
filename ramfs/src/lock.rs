//! POSIX byte-range locks for Tlock and Tgetlock: which owner holds which range of which file.
//!
//! Semantics are fcntl's F_SETLK and F_GETLK: an owner's locks never conflict with each other and
//! a new lock replaces (or splits) the owner's locks under it; a read lock conflicts only with
//! another owner's write lock. Nothing ever waits: a conflict is reported at once.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use bytes::Bytes;

use crate::owner::ConnId;

pub use p9_core::{lock_status, lock_type};

use lock_type::*;

/// Who holds a lock: a process (`proc_id`) of a client (`client_id`) on one connection. The
/// connection is part of it, so locks are released when their connection goes away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LockOwner {
    pub conn: ConnId,
    pub proc_id: u32,
    pub client_id: Bytes,
}

/// One held range, `start..=end`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lock {
    pub owner: LockOwner,
    pub typ: u8,
    pub start: u64,
    pub end: u64,
}

impl Lock {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start <= end && start <= self.end
    }

    /// The wire `length`: 0 means "to the end of the file, however long it grows".
    pub fn length(&self) -> u64 {
        if self.end == u64::MAX {
            0
        } else {
            self.end - self.start + 1
        }
    }
}

/// The inclusive range a Tlock/Tgetlock `start` and `length` describe.
pub(crate) fn lock_range(start: u64, length: u64) -> (u64, u64) {
    match length {
        0 => (start, u64::MAX),
        n => (start, start.saturating_add(n - 1)),
    }
}

/// Every lock of the tree, by file.
#[derive(Clone, Debug, Default)]
pub(crate) struct LockTable {
    files: BTreeMap<u64, Vec<Lock>>,
    count: usize,
}

impl LockTable {
    pub fn count(&self) -> usize {
        self.count
    }

    /// Drop the locks of owners that are gone, so they neither conflict nor take room.
    fn prune(&mut self, ino: u64, live: &impl Fn(ConnId) -> bool) {
        if let Some(v) = self.files.get_mut(&ino) {
            let before = v.len();
            v.retain(|l| live(l.owner.conn));
            self.count -= before - v.len();
        }
        self.files.retain(|_, v| !v.is_empty());
    }

    /// The first lock of another owner that keeps `owner` from taking `typ` on `start..=end`.
    pub fn conflict(
        &mut self,
        ino: u64,
        owner: &LockOwner,
        typ: u8,
        start: u64,
        end: u64,
        live: impl Fn(ConnId) -> bool,
    ) -> Option<&Lock> {
        self.prune(ino, &live);
        self.files.get(&ino)?.iter().find(|l| {
            l.owner != *owner && l.overlaps(start, end) && (typ == WRLCK || l.typ == WRLCK)
        })
    }

    /// F_SETLK: take, change or (with `UNLCK`) release `owner`'s lock on `start..=end`.
    /// Returns an Rlock status.
    pub fn set(
        &mut self,
        ino: u64,
        owner: LockOwner,
        typ: u8,
        (start, end): (u64, u64),
        max: usize,
        live: impl Fn(ConnId) -> bool,
    ) -> u8 {
        if typ != UNLCK && self.conflict(ino, &owner, typ, start, end, &live).is_some() {
            return lock_status::BLOCKED;
        }
        // Carving a hole in the middle of a lock turns one into two, and a new lock adds one.
        let worst = if typ == UNLCK { 1 } else { 2 };
        if self.count + worst > max {
            return lock_status::ERROR;
        }
        let v = self.files.entry(ino).or_default();
        let before = v.len();
        // Cut the owner's locks out of the range; keep what sticks out on either side.
        let mut kept = Vec::with_capacity(v.len() + 2);
        for l in v.drain(..) {
            if l.owner != owner || !l.overlaps(start, end) {
                kept.push(l);
                continue;
            }
            if l.start < start {
                kept.push(Lock {
                    end: start - 1,
                    ..l.clone()
                });
            }
            if l.end > end {
                kept.push(Lock {
                    start: end + 1,
                    ..l
                });
            }
        }
        *v = kept;
        if typ != UNLCK {
            // Merge with the owner's adjacent locks of the same type, so that locking a file
            // piece by piece does not grow the table.
            let (mut s, mut e) = (start, end);
            v.retain(|l| {
                let touches =
                    (l.end.checked_add(1) == Some(s)) || (e.checked_add(1) == Some(l.start));
                if l.owner == owner && l.typ == typ && touches {
                    s = s.min(l.start);
                    e = e.max(l.end);
                    false
                } else {
                    true
                }
            });
            v.push(Lock {
                owner,
                typ,
                start: s,
                end: e,
            });
            v.sort_by_key(|l| l.start);
        }
        self.count = self.count + v.len() - before;
        self.files.retain(|_, v| !v.is_empty());
        lock_status::SUCCESS
    }

    /// Release every lock of one connection.
    pub fn forget_conn(&mut self, conn: ConnId) {
        for v in self.files.values_mut() {
            let before = v.len();
            v.retain(|l| l.owner.conn != conn);
            self.count -= before - v.len();
        }
        self.files.retain(|_, v| !v.is_empty());
    }

    /// Release one connection's locks on one file (it has no fid left on it to unlock with).
    pub fn forget_conn_file(&mut self, conn: ConnId, ino: u64) {
        if let Some(v) = self.files.get_mut(&ino) {
            let before = v.len();
            v.retain(|l| l.owner.conn != conn);
            self.count -= before - v.len();
            if v.is_empty() {
                self.files.remove(&ino);
            }
        }
    }

    /// The file is gone.
    pub fn forget_file(&mut self, ino: u64) {
        if let Some(v) = self.files.remove(&ino) {
            self.count -= v.len();
        }
    }

    /// Whether the count matches and no owner's locks overlap (for [`crate::Fs::check`]).
    pub(crate) fn consistent(&self) -> bool {
        let total: usize = self.files.values().map(Vec::len).sum();
        total == self.count
            && self.files.values().all(|v| {
                !v.is_empty()
                    && v.iter().all(|a| {
                        a.start <= a.end
                            && v.iter()
                                .filter(|b| b.owner == a.owner && b.overlaps(a.start, a.end))
                                .count()
                                == 1
                    })
            })
    }

    #[cfg(test)]
    fn of(&self, ino: u64) -> Vec<(u8, u64, u64)> {
        self.files
            .get(&ino)
            .map(|v| v.iter().map(|l| (l.typ, l.start, l.end)).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(conn: ConnId) -> LockOwner {
        LockOwner {
            conn,
            proc_id: 1,
            client_id: Bytes::from_static(b"c"),
        }
    }

    fn set(t: &mut LockTable, conn: ConnId, typ: u8, start: u64, len: u64) -> u8 {
        t.set(7, owner(conn), typ, lock_range(start, len), 100, |_| true)
    }

    #[test]
    fn unlock_in_the_middle_splits_a_lock() {
        let mut t = LockTable::default();
        assert_eq!(set(&mut t, 1, WRLCK, 0, 100), lock_status::SUCCESS);
        assert_eq!(set(&mut t, 1, UNLCK, 40, 10), lock_status::SUCCESS);
        assert_eq!(t.of(7), [(WRLCK, 0, 39), (WRLCK, 50, 99)]);
        assert_eq!(t.count(), 2);
        assert!(t.consistent());
    }

    #[test]
    fn adjacent_locks_of_one_owner_merge_and_retyping_replaces() {
        let mut t = LockTable::default();
        set(&mut t, 1, RDLCK, 0, 10);
        set(&mut t, 1, RDLCK, 10, 10);
        assert_eq!(t.of(7), [(RDLCK, 0, 19)]);
        set(&mut t, 1, WRLCK, 5, 0);
        assert_eq!(t.of(7), [(RDLCK, 0, 4), (WRLCK, 5, u64::MAX)]);
        assert!(t.consistent());
    }

    #[test]
    fn readers_share_and_writers_exclude() {
        let mut t = LockTable::default();
        assert_eq!(set(&mut t, 1, RDLCK, 0, 10), lock_status::SUCCESS);
        assert_eq!(set(&mut t, 2, RDLCK, 5, 10), lock_status::SUCCESS);
        assert_eq!(set(&mut t, 2, WRLCK, 0, 1), lock_status::BLOCKED);
        assert_eq!(set(&mut t, 2, WRLCK, 10, 1), lock_status::SUCCESS);
        t.forget_conn(1);
        assert_eq!(set(&mut t, 2, WRLCK, 0, 1), lock_status::SUCCESS);
        assert!(t.consistent());
    }

    #[test]
    fn dead_owners_do_not_conflict() {
        let mut t = LockTable::default();
        set(&mut t, 1, WRLCK, 0, 0);
        let status = t.set(7, owner(2), WRLCK, (0, 0), 100, |c| c != 1);
        assert_eq!(status, lock_status::SUCCESS);
        assert_eq!(t.count(), 1);
    }

    #[test]
    fn a_full_table_reports_an_error() {
        let mut t = LockTable::default();
        for i in 0..49 {
            assert_eq!(set(&mut t, 1, WRLCK, i * 10, 1), lock_status::SUCCESS);
        }
        let full = t.set(7, owner(1), WRLCK, (1000, 1000), 50, |_| true);
        assert_eq!(full, lock_status::ERROR);
    }
}
