//! Coverage marks: a counter for each row of the replay table and each step of recovery, kept by
//! the session. The simulation sums them over its seeds and fails when a rule was never reached
//! (a seed range that never reaches a rule tests nothing; TigerBeetle's marks). Counting is an
//! add, off the forwarding path; nothing in production reads them.

macro_rules! marks {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// A rule or step the session reached.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u8)]
        pub enum Mark {
            $($(#[doc = $doc])* $name,)*
        }

        impl Mark {
            /// Every mark, in declaration order.
            pub const ALL: &'static [Mark] = &[$(Mark::$name,)*];

            /// The mark's name, as in the code.
            pub fn name(self) -> &'static str {
                match self {
                    $(Mark::$name => stringify!($name),)*
                }
            }
        }
    };
}

marks! {
    /// An orphaned lookup (stat, getattr, walk, open, setattr, non-renaming wstat, ...) resent.
    ReplayResendLookup,
    /// An orphaned read of a file resent.
    ReplayResendRead,
    /// An orphaned 9P2000/.u directory read at offset 0 or after a fast-forward, resent.
    ReplayResendDirRead,
    /// An orphaned 9P2000/.u directory read in mid-listing failed.
    ReplayFailDirRead,
    /// An orphaned .L readdir at offset 0 or on a fast-forwarded fid, resent.
    ReplayResendReaddir,
    /// An orphaned write at an offset resent.
    ReplayResendWrite,
    /// An orphaned append (append-only file or O_APPEND) failed.
    ReplayFailAppend,
    /// An orphaned create, lcreate, mkdir, symlink, mknod or link failed.
    ReplayFailCreate,
    /// An orphaned remove or unlinkat failed.
    ReplayFailRemove,
    /// An orphaned rename, renameat or renaming wstat failed.
    ReplayFailRename,
    /// An orphaned lock acquire failed.
    ReplayFailLock,
    /// An orphaned unlock resent.
    ReplayResendUnlock,
    /// An orphaned clunk of a rebuilt fid resent.
    ReplayResendClunk,
    /// An orphaned clunk of a fid the new link does not know answered here.
    ReplayClunkLocally,
    /// An orphaned fsync resent.
    ReplayResendFsync,
    /// An orphaned fsync failed: writes acknowledged on a lost link were never made durable.
    ReplayFailFsync,
    /// An orphaned flush answered here.
    ReplayFlushLocally,
    /// An orphaned write, setattr, wstat or unlock on a link given up as hung or broken failed
    /// instead of being resent (its old server may run it yet, after newer requests).
    ReplayFailGivenUp,
    /// A client's flush of an orphan that may have changed something held until that orphan
    /// is answered (its fate known), rather than answered at once.
    FlushAwaitsOutcome,
    /// A root re-attached.
    RecoveryAttach,
    /// A fid rebuilt with a walk of more than 16 names, in chunks.
    RecoveryChunkedWalk,
    /// An open fid reopened.
    RecoveryReopen,
    /// A reopened file turned out to be another file (qid changed): stale.
    RecoveryQidMismatch,
    /// A path that no longer exists: the fid is stale.
    RecoveryPathGone,
    /// A 9P2000/.u directory re-read up to the client's position.
    RecoveryFastForward,
    /// A lock replayed.
    RecoveryLockReplay,
    /// A lock could not be re-acquired (someone else took the range): the fid is stale.
    RecoveryLockRefused,
    /// An exclusive-use open retried.
    RecoveryExclusiveRetry,
    /// A fid with an orphaned Tremove left unbuilt.
    RecoveryRemovedNotRebuilt,
    /// A create, remove, link or rename in flight at a loss turned out done: answered so.
    ResolvedDone,
    /// A create, remove, link or rename in flight at a loss observably did not happen: resent.
    ResolvedNotDone,
    /// A create, remove, link or rename in flight at a loss could not be settled by looking:
    /// failed as possibly not completed.
    ResolvedUnknown,
    /// A read clamped or a write shortened to a smaller server msize.
    MsizeClamp,
    /// Soft mode gave up on the outage.
    SoftGiveUp,
    /// A recovery stalled past the watchdog and was abandoned.
    RecoveryWatchdog,
    /// A dial took longer than the watchdog and was abandoned.
    DialWatchdog,
    /// A live link whose server sent nothing while requests waited was declared dead.
    ServerSilent,
    /// The driver stopped reading the link: the client was not taking its replies.
    LinkHeld,
    /// The driver read the link again (its server's silence counts from then).
    LinkResumed,
    /// A reply that came after the server's Rflush for it was dropped.
    LateReplyDropped,
    /// An error reply in another dialect's shape was reshaped for the client.
    ErrorReshaped,
    /// A request drew a second invalid reply and was failed, never to be resent.
    InvalidReplyFailed,
    /// An acknowledged write was not kept: the replay budget was spent.
    ReplayBudgetSpent,
    /// Kept unsynced writes read back on a rebuilt fid, to see the server still holds them.
    RecoveryCheck,
    /// The server's file differs from the kept writes (or could not be read): nothing is
    /// written over it, and the file's next fsync fails.
    RecoveryCheckDiffers,
    /// Mux: a link came up to another backend than the last, with files open on the old one
    /// (they now answer i/o errors).
    FailoverOpenFidsFail,
    /// Mux: a link came up to another backend than the last, with unopened fids to move to it
    /// by path.
    FailoverFidsMove,
    /// Mux: a client's attach walked on to its service's root path before its Rattach.
    ServiceRootWalk,
    /// Mux: a client's Tflush of an attach on its way to the service's root held until the
    /// attach is answered (the server has made a fid the client would not know of).
    ServiceRootFlushHeld,
    /// Mux: a recovery walked a re-attached root on to its service's root path.
    RecoveryServiceRoot,
    /// Mux: a session that lost its backend redialed at once, another being healthy.
    FailoverAtOnce,
    /// Mux: the entries of a directory listing given qids that name their paths.
    StableQidListing,
}

/// How often each mark was reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marks([u32; Mark::ALL.len()]);

impl Default for Marks {
    fn default() -> Self {
        Marks([0; Mark::ALL.len()])
    }
}

impl Marks {
    pub(crate) fn hit(&mut self, m: Mark) {
        let c = &mut self.0[m as usize];
        *c = c.saturating_add(1);
    }

    /// How often `m` was reached.
    pub fn get(&self, m: Mark) -> u32 {
        self.0[m as usize]
    }

    /// Add another count's marks to these.
    pub fn add(&mut self, other: &Marks) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    /// Every mark with its count.
    pub fn iter(&self) -> impl Iterator<Item = (Mark, u32)> + '_ {
        Mark::ALL.iter().map(|&m| (m, self.get(m)))
    }
}
