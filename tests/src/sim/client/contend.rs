//! Contention: besides its own files, every lane of every client races for a few lock names in
//! one `shared` directory, as processes behind one mount do (an O_EXCL lock file, a lock
//! directory, a hard link made as NFS lock files are), and releases only what it took; and
//! writes, reads and fsyncs blocks of one shared file (`shared/data`), each write's block
//! carrying a value of its own. Nothing here is predicted: each operation is recorded as
//! invoked, then ok, refused, failed or unknown, and the history checkers judge the lot at the
//! end of the run.

use std::collections::BTreeSet;

use p9_core::*;

use super::{is_error, is_not_completed, is_stale, FidState, Lane, Op, Which};
use crate::history::{self, Kind, Outcome};
use crate::sim::rng::Rng;

/// The directory at the root that holds the lock names.
pub const SHARED_DIR: &[u8] = b"shared";
/// The names raced for: a file made with O_EXCL (9P2000: Tcreate, exclusive by itself), a
/// directory, and (9P2000.L) a hard link to the taker's own data file.
const LOCK_FILE: &[u8] = b"lockf";
const LOCK_DIR: &[u8] = b"lockd";
const LOCK_LINK: &[u8] = b"lockl";

/// The shared file: blocks of this many bytes, this many of them (made by the world).
pub const SHARED_FILE: &[u8] = b"data";
pub const BLOCK: u64 = history::DATA_BLOCK as u64;
pub const BLOCKS: u64 = 8;

/// Linux's unlinkat(2) flag.
const AT_REMOVEDIR: u32 = 0x200;

/// A lane's part in the race.
pub struct Contender {
    /// Chance per operation that the lane works on the shared names (0: no contention in this
    /// world, and no draw of it either).
    pub percent: u32,
    /// Whether the lane sometimes breaks a lock it does not hold (removes the name), as a
    /// process clearing a stale lock does. Only where one session carries every lane: requests
    /// in flight together on one session are the session's to tell apart, while a breaker on
    /// another session undoing a take during an outage is the one history looking cannot see.
    pub breaks: bool,
    pub(super) shared: FidState,
    pub(super) lock: FidState,
    /// The lane's fid of the shared file.
    pub(super) file: FidState,
    /// Values written so far (each write's is new).
    written: u64,
    /// Names the lane was told it made, and has not released since.
    holds: BTreeSet<Vec<u8>>,
    /// Names a take of which was answered "possibly not completed".
    took_unknown: BTreeSet<Vec<u8>>,
    /// The world's history clock, set before each start and completion.
    pub now: u64,
    /// When the operation in flight was invoked; a 9P2000 remove counts from its walk.
    started: u64,
    remove_from: Option<u64>,
    /// Finished operations on the shared names and the shared file, for the world's
    /// histories.
    pub finished: Vec<history::Op>,
    pub finished_data: Vec<history::DataOp>,
}

impl Default for Contender {
    fn default() -> Contender {
        Contender {
            percent: 0,
            breaks: false,
            shared: FidState::Absent,
            lock: FidState::Absent,
            file: FidState::Absent,
            written: 0,
            holds: BTreeSet::new(),
            took_unknown: BTreeSet::new(),
            now: 0,
            started: 0,
            remove_from: None,
            finished: Vec::new(),
            finished_data: Vec::new(),
        }
    }
}

impl Contender {
    /// Whether the lane believes it holds `name` (it was told it made it, and has not
    /// released it).
    pub fn holds(&self, name: &[u8]) -> bool {
        self.holds.contains(name)
    }

    /// Whether a take of `name` by this lane was answered "possibly not completed".
    pub fn took_unknown(&self, name: &[u8]) -> bool {
        self.took_unknown.contains(name)
    }

    /// The operation in flight starts now.
    pub(super) fn started(&mut self) {
        self.started = self.now;
    }
}

impl Op {
    pub fn is_shared(&self) -> bool {
        matches!(
            self,
            Op::WalkShared
                | Op::WalkLock { .. }
                | Op::TakeLock { .. }
                | Op::DropLock { .. }
                | Op::WalkSharedFile
                | Op::OpenSharedFile
                | Op::WriteBlock { .. }
                | Op::ReadBlock { .. }
                | Op::FsyncShared
        )
    }
}

/// How the client reads an answer to a take or release.
fn outcome_of(reply: &Msg, effective: Option<&Msg>, flushed: bool) -> Outcome {
    if flushed {
        // flush(5): an Rflush alone says the request never happened (a server that ran it
        // anyway makes it unknown; the world checks the session never does).
        return match effective {
            Some(_) => Outcome::Unknown,
            None => Outcome::Failed,
        };
    }
    if !is_error(reply) {
        Outcome::Ok
    } else if is_not_completed(reply) {
        Outcome::Unknown
    } else if refused(reply) {
        Outcome::Refused
    } else {
        Outcome::Failed
    }
}

/// EEXIST or ENOENT: the state of the name refused the request.
fn refused(m: &Msg) -> bool {
    let code = |c: u32| c == errno::EEXIST || c == errno::ENOENT;
    match m {
        Msg::Rlerror(e) => code(e.ecode),
        Msg::Rerror(e) => {
            e.errno.is_some_and(code)
                || &e.ename[..] == b"file already exists"
                || &e.ename[..] == b"file does not exist"
        }
        _ => false,
    }
}

impl Lane {
    /// The next step in the race: walk to the shared directory, clunk a lock fid left over,
    /// release a held name, or try to take one.
    pub(super) fn shared_op(&mut self, rng: &mut Rng) -> (Msg, Op) {
        if self.contender.shared == FidState::Absent {
            return (self.walk(self.shared_fid(), &[SHARED_DIR]), Op::WalkShared);
        }
        if self.contender.lock != FidState::Absent {
            let clunk = Tclunk {
                fid: self.lock_fid(),
            };
            return (clunk.into(), Op::Forget(Which::Lock));
        }
        let dotl = self.dialect == Dialect::DotL;
        if self.contender.file != FidState::Absent || rng.chance(50) {
            return self.shared_file_op(rng);
        }
        let names: &[&[u8]] = if dotl {
            &[LOCK_FILE, LOCK_DIR, LOCK_LINK]
        } else {
            &[LOCK_FILE, LOCK_DIR]
        };
        let mut name = names[rng.below(names.len() as u64) as usize].to_vec();
        // A hard link needs the lane's data fid: without it, the lock file.
        if name == LOCK_LINK && !matches!(self.data, FidState::Walked | FidState::Open) {
            name = LOCK_FILE.to_vec();
        }
        let breaks = self.contender.breaks && rng.chance(20);
        if self.contender.holds.contains(&name) || breaks {
            if dotl {
                let flags = if name == LOCK_DIR { AT_REMOVEDIR } else { 0 };
                let msg = Tunlinkat {
                    dirfid: self.shared_fid(),
                    name: name.clone().into(),
                    flags,
                };
                return (msg.into(), Op::DropLock { name });
            }
            let msg = self.walk(self.lock_fid(), &[SHARED_DIR, &name]);
            return (msg, Op::WalkLock { name, remove: true });
        }
        match &name[..] {
            LOCK_DIR if dotl => {
                let msg = Tmkdir {
                    dfid: self.shared_fid(),
                    name: name.clone().into(),
                    mode: 0o755,
                    gid: 0,
                };
                (msg.into(), Op::TakeLock { name })
            }
            LOCK_LINK => {
                let msg = Tlink {
                    dfid: self.shared_fid(),
                    fid: self.data_fid(),
                    name: name.clone().into(),
                };
                (msg.into(), Op::TakeLock { name })
            }
            _ => {
                let msg = self.walk(self.lock_fid(), &[SHARED_DIR]);
                (
                    msg,
                    Op::WalkLock {
                        name,
                        remove: false,
                    },
                )
            }
        }
    }

    /// The next step on the shared file: walk to it, open it, then write a block, read one,
    /// or (9P2000.L) fsync it.
    fn shared_file_op(&mut self, rng: &mut Rng) -> (Msg, Op) {
        let fid = self.shared_file_fid();
        match self.contender.file {
            FidState::Absent => (
                self.walk(fid, &[SHARED_DIR, SHARED_FILE]),
                Op::WalkSharedFile,
            ),
            FidState::Walked => (self.open(fid, true, false), Op::OpenSharedFile),
            FidState::Uncertain => (Tclunk { fid }.into(), Op::Forget(Which::SharedFile)),
            FidState::Open => {
                let block = rng.below(BLOCKS) as u32;
                let choice = rng.below(10);
                if choice < 5 {
                    self.contender.written += 1;
                    let value = (self.id as u64) << 32 | self.contender.written;
                    let msg = Twrite {
                        fid,
                        offset: block as u64 * BLOCK,
                        data: Data(history::data_block(value).into()),
                    };
                    (msg.into(), Op::WriteBlock { block, value })
                } else if choice < 9 || self.dialect != Dialect::DotL {
                    let msg = Tread {
                        fid,
                        offset: block as u64 * BLOCK,
                        count: BLOCK as u32,
                    };
                    (msg.into(), Op::ReadBlock { block })
                } else {
                    let msg = Tfsync { fid, datasync: 0 };
                    (msg.into(), Op::FsyncShared)
                }
            }
        }
    }

    /// A shared operation ended: record what the client was told, and go on with a take or
    /// release that needs a second request.
    pub(super) fn complete_shared(
        &mut self,
        op: Op,
        reply: &Msg,
        effective: Option<&Msg>,
        flushed: bool,
    ) -> Option<(Msg, Op)> {
        let ok = !flushed && !is_error(reply);
        let outcome = outcome_of(reply, effective, flushed);
        match op {
            Op::WalkShared => {
                if !ok {
                    self.contender.shared = FidState::Uncertain;
                } else {
                    self.contender.shared = FidState::Walked;
                }
                None
            }
            Op::WalkLock { name, remove } => {
                // A walk that stops short (9P2000's Rwalk with fewer qids) made no fid: the
                // name is not there.
                let want = if remove { 2 } else { 1 };
                let short = matches!(reply, Msg::Rwalk(w) if w.wqids.len() < want);
                let outcome = match short {
                    true => Outcome::Refused,
                    false => outcome,
                };
                if !ok || short {
                    self.contender.lock = FidState::Uncertain;
                    if remove {
                        // A walk changes nothing: refused (the name is gone) or failed.
                        let outcome = match outcome {
                            Outcome::Refused => Outcome::Refused,
                            _ => Outcome::Failed,
                        };
                        self.record(&name, Kind::Remove, self.contender.started, outcome);
                    }
                    return None;
                }
                self.contender.lock = FidState::Walked;
                if remove {
                    self.contender.remove_from = Some(self.contender.started);
                    let msg = Tremove {
                        fid: self.lock_fid(),
                    };
                    return Some((msg.into(), Op::DropLock { name }));
                }
                let msg: Msg = match self.dialect {
                    Dialect::DotL => Tlcreate {
                        fid: self.lock_fid(),
                        name: name.clone().into(),
                        flags: lflags::WRONLY | lflags::CREATE | lflags::EXCL,
                        mode: 0o644,
                        gid: 0,
                    }
                    .into(),
                    _ => {
                        let dir = name == LOCK_DIR;
                        Tcreate {
                            fid: self.lock_fid(),
                            name: name.clone().into(),
                            perm: if dir { dm::DIR | 0o755 } else { 0o644 },
                            mode: if dir {
                                open_mode::READ
                            } else {
                                open_mode::WRITE
                            },
                            extension: self.dialect.is_extended().then(Default::default),
                        }
                        .into()
                    }
                };
                Some((msg, Op::TakeLock { name }))
            }
            Op::TakeLock { name } => {
                self.record(
                    &name,
                    Kind::CreateExclusive,
                    self.contender.started,
                    outcome,
                );
                match outcome {
                    Outcome::Ok => {
                        self.contender.holds.insert(name);
                    }
                    Outcome::Unknown => {
                        self.contender.took_unknown.insert(name);
                    }
                    _ => {}
                }
                // Made through the lock fid (which the create opened): clunk it next.
                if self.contender.lock != FidState::Absent {
                    self.contender.lock = match ok {
                        true => FidState::Open,
                        false => FidState::Uncertain,
                    };
                }
                None
            }
            Op::DropLock { name } => {
                let from = self.contender.remove_from.take();
                let invoked = from.unwrap_or(self.contender.started);
                self.record(&name, Kind::Remove, invoked, outcome);
                if matches!(outcome, Outcome::Ok | Outcome::Refused) {
                    self.contender.holds.remove(&name);
                }
                // Tremove clunks the lock fid, whatever its outcome.
                if from.is_some() {
                    self.contender.lock = match ok {
                        true => FidState::Absent,
                        false => FidState::Uncertain,
                    };
                }
                None
            }
            Op::WalkSharedFile | Op::OpenSharedFile => {
                self.contender.file = match (ok, op) {
                    (true, Op::WalkSharedFile) => FidState::Walked,
                    (true, _) => FidState::Open,
                    (false, _) => FidState::Uncertain,
                };
                None
            }
            Op::WriteBlock { .. } | Op::ReadBlock { .. } | Op::FsyncShared => {
                // A fid the session could not rebuild: let it go and walk again.
                if is_stale(reply) {
                    self.contender.file = FidState::Uncertain;
                }
                let data = match op {
                    Op::WriteBlock { block, value } => {
                        let short = matches!(reply, Msg::Rwrite(w) if w.count as u64 != BLOCK);
                        let outcome = match short {
                            true => Outcome::Unknown,
                            false => outcome,
                        };
                        self.record_data(history::Data::Write { block, value }, outcome);
                        return None;
                    }
                    Op::ReadBlock { block } => match reply {
                        Msg::Rread(r) if ok => history::Data::Read {
                            block,
                            seen: history::value_in(&r.data.0),
                        },
                        _ => history::Data::Read { block, seen: None },
                    },
                    _ => history::Data::Fsync,
                };
                self.record_data(data, outcome);
                None
            }
            _ => None,
        }
    }

    fn record_data(&mut self, data: history::Data, outcome: Outcome) {
        self.contender.finished_data.push(history::DataOp {
            process: self.id,
            data,
            invoked: self.contender.started,
            answered: self.contender.now,
            outcome,
        });
    }

    fn record(&mut self, name: &[u8], kind: Kind, invoked: u64, outcome: Outcome) {
        // An unknown outcome may take effect at any time after it was invoked (a server that
        // still holds it may run it late): its window never closes.
        let answered = match outcome {
            Outcome::Unknown => u64::MAX,
            _ => self.contender.now,
        };
        self.contender.finished.push(history::Op {
            process: self.id,
            name: String::from_utf8_lossy(name).into_owned(),
            kind,
            invoked,
            answered,
            outcome,
        });
    }
}

/// The lock names of a dialect (for the world's direct actor).
pub fn lock_names(dialect: Dialect) -> &'static [&'static [u8]] {
    match dialect {
        Dialect::DotL => &[LOCK_FILE, LOCK_DIR, LOCK_LINK],
        _ => &[LOCK_FILE, LOCK_DIR],
    }
}

/// Whether `name` is made as a directory.
pub fn is_dir_lock(name: &[u8]) -> bool {
    name == LOCK_DIR
}

/// The lock name an operation in flight works on, if any.
pub fn lock_name_of(op: &Op) -> Option<&[u8]> {
    match op {
        Op::WalkLock { name, .. } | Op::TakeLock { name } | Op::DropLock { name } => Some(name),
        _ => None,
    }
}
