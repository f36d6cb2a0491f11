//! What connections hold in the tree: which connections are alive, which files their fids name,
//! and who has each exclusive-use file open.
//!
//! A connection is alive while its [`crate::Conn`] exists. The `Conn` owns an `Arc` whose weak
//! twin is registered here, so dropping every `Conn` (a crash) is enough to release everything
//! they held: their locks and exclusive opens stop counting at once. A dropped `Conn` also bumps
//! a shared counter of ended connections, so the tree notices cheaply, at its next request, that
//! there is bookkeeping to sweep.

use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;

/// A connection's identity within one [`crate::Fs`], never reused.
pub(crate) type ConnId = u64;

#[derive(Debug, Default)]
pub(crate) struct Owners {
    live: BTreeMap<ConnId, Weak<()>>,
    next: ConnId,
    /// How many fids of each connection name each file: `(ino, conn) → count`. A removed file
    /// stays until no live connection holds it.
    holds: BTreeMap<(u64, ConnId), u32>,
    /// The connection that has each exclusive-use file open.
    exclusive: BTreeMap<u64, ConnId>,
    /// How many `Conn`s have been dropped, counted by their [`EndNotice`]s.
    ended: Arc<AtomicU64>,
    /// The value of `ended` at the last sweep.
    swept: u64,
}

/// Part of a `Conn`, declared after its liveness `Arc` so that it is dropped after it: when the
/// count goes up, the connection is already seen as dead.
#[derive(Debug)]
pub(crate) struct EndNotice(Arc<AtomicU64>);

impl Drop for EndNotice {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

impl Owners {
    pub fn register(&mut self, alive: &Arc<()>) -> (ConnId, EndNotice) {
        self.next += 1;
        self.live.insert(self.next, Arc::downgrade(alive));
        (self.next, EndNotice(self.ended.clone()))
    }

    /// Whether a `Conn` was dropped since the last call: then [`Owners::dead`] has work.
    pub fn any_ended(&mut self) -> bool {
        let ended = self.ended.load(Ordering::Acquire);
        let any = ended != self.swept;
        self.swept = ended;
        any
    }

    pub fn is_live(&self, conn: ConnId) -> bool {
        self.live
            .get(&conn)
            .is_some_and(|w| Weak::strong_count(w) > 0)
    }

    /// Registered connections whose `Conn` has been dropped.
    pub fn dead(&self) -> Vec<ConnId> {
        self.live
            .iter()
            .filter(|(_, w)| Weak::strong_count(w) == 0)
            .map(|(&c, _)| c)
            .collect()
    }

    pub fn live_count(&self) -> usize {
        self.live.len() - self.dead().len()
    }

    /// Forget a connection and everything it held; returns the files it held.
    pub fn unregister(&mut self, conn: ConnId) -> Vec<u64> {
        self.live.remove(&conn);
        self.exclusive.retain(|_, c| *c != conn);
        let mut held = Vec::new();
        self.holds.retain(|&(ino, c), _| {
            if c == conn {
                held.push(ino);
            }
            c != conn
        });
        held
    }

    pub fn hold(&mut self, ino: u64, conn: ConnId) {
        *self.holds.entry((ino, conn)).or_insert(0) += 1;
    }

    /// One fid of `conn` no longer names `ino`. True when none does any more.
    pub fn release(&mut self, ino: u64, conn: ConnId) -> bool {
        match self.holds.get_mut(&(ino, conn)) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.holds.remove(&(ino, conn));
                true
            }
            None => true,
        }
    }

    /// Whether a fid of any live connection names `ino`.
    pub fn is_held(&self, ino: u64) -> bool {
        self.holds
            .range((ino, 0)..=(ino, ConnId::MAX))
            .any(|(&(_, c), _)| self.is_live(c))
    }

    /// Whether any fid, of a live connection or one not yet swept, names `ino`.
    pub(crate) fn has_any_hold(&self, ino: u64) -> bool {
        self.holds
            .range((ino, 0)..=(ino, ConnId::MAX))
            .next()
            .is_some()
    }

    /// Take the one open of an exclusive-use file.
    pub fn open_exclusive(&mut self, ino: u64, conn: ConnId) -> Result<(), Error> {
        match self.exclusive.get(&ino) {
            Some(&c) if self.is_live(c) => Err(Error::EXCLUSIVE),
            _ => {
                self.exclusive.insert(ino, conn);
                Ok(())
            }
        }
    }

    pub fn close_exclusive(&mut self, ino: u64, conn: ConnId) {
        if self.exclusive.get(&ino) == Some(&conn) {
            self.exclusive.remove(&ino);
        }
    }

    /// The file is gone: nothing can hold it any more.
    pub fn forget_file(&mut self, ino: u64) {
        self.exclusive.remove(&ino);
        let keys: Vec<_> = self
            .holds
            .range((ino, 0)..=(ino, ConnId::MAX))
            .map(|(&k, _)| k)
            .collect();
        for k in keys {
            self.holds.remove(&k);
        }
    }

    pub(crate) fn exclusive_files(&self) -> impl Iterator<Item = u64> + '_ {
        self.exclusive.keys().copied()
    }
}
