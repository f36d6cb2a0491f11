//! The model client: independent lanes, each with one operation in flight at a time on files of
//! its own (so that concurrency never makes the expected outcome ambiguous), checking every
//! reply against a reference model of its directory.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use p9_core::*;

use super::rng::Rng;

mod contend;
pub use contend::{
    is_dir_lock, lock_name_of, lock_names, Contender, BLOCK, BLOCKS, SHARED_DIR, SHARED_FILE,
};

/// Largest offset a lane writes at, and largest write.
const FILE_SPAN: u64 = 16 * 1024;

/// An operation a lane has in flight.
#[derive(Clone, Debug)]
pub enum Op {
    /// Attach the lane's own root, with its own uname, aname and n_uname.
    Attach,
    WalkDir,
    WalkData,
    /// Open the data file, sometimes truncating it (OTRUNC / O_TRUNC): a reopen after a
    /// reconnect must never truncate again.
    OpenData {
        trunc: bool,
    },
    Write {
        off: u64,
        data: Bytes,
    },
    Read {
        off: u64,
        len: u32,
    },
    Stat,
    WalkLog,
    OpenLog,
    Append {
        data: Bytes,
    },
    WalkTemp,
    /// A three-name walk whose second name does not exist (with the temp fid as newfid).
    WalkMissing,
    /// Create the temp file; in 9P2000 and .u sometimes with ORCLOSE (the server removes it
    /// when the fid is clunked, so a reopen after a reconnect must keep ORCLOSE).
    CreateTemp {
        name: Vec<u8>,
        orclose: bool,
        /// 9P2000.L without O_EXCL or O_TRUNC: an open of whatever file is at the name.
        opens: bool,
    },
    WriteTemp {
        data: Bytes,
    },
    RenameTemp {
        to: Vec<u8>,
    },
    RemoveTemp,
    /// 9P2000.L: unlink the temp file by name (its fid stays open on it).
    UnlinkTemp,
    ClunkTemp,
    /// Set the data file's length (Tsetattr, or Twstat with only the length).
    Truncate {
        len: u64,
    },
    Mkdir {
        name: Vec<u8>,
    },
    /// 9P2000.L: make a symlink, a device node or a hard link to the data file, in the lane's
    /// directory (entries nothing else touches: the listing shows them).
    MakeEntry {
        name: Vec<u8>,
        kind: Entry,
    },
    WalkList,
    OpenList,
    ReadList {
        offset: u64,
    },
    ClunkList,
    Lock {
        start: u64,
        unlock: bool,
    },
    Fsync,
    ClunkData,
    /// Walk to the deep file: 16 names from the root, then the rest from there (its path has
    /// more than 16 names, so rebuilding it takes a chunked walk).
    WalkDeep {
        first: bool,
    },
    StatDeep,
    /// The victim file, which the world replaces during some outages: a fid open on it goes
    /// stale then.
    WalkVictim,
    OpenVictim,
    StatVictim,
    /// The exclusive-use file (DMEXCL): an old connection that lingers half-open after a network
    /// fault still holds its open, so reopening it is retried, or fails.
    WalkExcl,
    OpenExcl,
    StatExcl,
    /// The directory `mv*` (its name changes) holds file `f`, on which a fid is kept open; the
    /// directory is renamed under it (Trenameat, or a Twstat of a fid on the directory), so the
    /// session must move every fid beneath, and rebuild them at the new path.
    WalkSub,
    RenameSub {
        to: Vec<u8>,
    },
    WalkMoved,
    OpenMoved,
    StatMoved,
    /// Contention (`contend.rs`): walk the lane's fid of the `shared` directory, where every
    /// lane of every client races for the same lock names.
    WalkShared,
    /// Walk the lock fid to `shared` (to make `name` through it) or to `shared/name` (to
    /// remove it: 9P2000 removes by fid).
    WalkLock {
        name: Vec<u8>,
        remove: bool,
    },
    /// Take a lock: make `name` exclusively (O_EXCL Tlcreate or Tcreate through the lock fid,
    /// Tmkdir, or Tlink of the lane's data file).
    TakeLock {
        name: Vec<u8>,
    },
    /// Release a lock the lane holds: Tunlinkat, or Tremove of the lock fid.
    DropLock {
        name: Vec<u8>,
    },
    /// The shared file every lane writes blocks of: walk to it, open it.
    WalkSharedFile,
    OpenSharedFile,
    /// Write `value` to block `block` of the shared file; read a block; fsync the file.
    WriteBlock {
        block: u32,
        value: u64,
    },
    ReadBlock {
        block: u32,
    },
    FsyncShared,
    /// Clunk a fid whose state is uncertain; any reply will do.
    Forget(Which),
}

/// What `Op::MakeEntry` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Symlink,
    Fifo,
    /// A hard link to the data file, through the data fid.
    Link,
}

/// The fids of a lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Root,
    Dir,
    Data,
    Log,
    Temp,
    List,
    Deep,
    Victim,
    Excl,
    Sub,
    Moved,
    Shared,
    Lock,
    SharedFile,
}

impl Op {
    /// Whether the replay table resends it when its link dies (so it must never be answered
    /// "possibly not completed", soft mode aside).
    pub fn resent_after_loss(&self) -> bool {
        matches!(
            self,
            Op::Attach
                | Op::WalkDir
                | Op::WalkData
                | Op::OpenData { .. }
                | Op::Write { .. }
                | Op::Read { .. }
                | Op::Stat
                | Op::WalkLog
                | Op::OpenLog
                | Op::WalkTemp
                | Op::WalkMissing
                | Op::WriteTemp { .. }
                | Op::ClunkTemp
                | Op::Truncate { .. }
                | Op::WalkList
                | Op::OpenList
                | Op::ClunkList
                | Op::ClunkData
                | Op::WalkDeep { .. }
                | Op::StatDeep
                | Op::WalkVictim
                | Op::OpenVictim
                | Op::StatVictim
                | Op::WalkExcl
                | Op::OpenExcl
                | Op::StatExcl
                | Op::WalkSub
                | Op::WalkMoved
                | Op::OpenMoved
                | Op::StatMoved
                | Op::WalkShared
                | Op::WalkLock { .. }
                | Op::WalkSharedFile
                | Op::OpenSharedFile
                | Op::ReadBlock { .. }
                | Op::Forget(_)
        )
    }

    /// Whether the server may run it twice for one request without changing the result.
    pub fn idempotent(&self) -> bool {
        !matches!(
            self,
            Op::Append { .. }
                | Op::CreateTemp { .. }
                | Op::RenameTemp { .. }
                | Op::RenameSub { .. }
                | Op::RemoveTemp
                | Op::UnlinkTemp
                | Op::Mkdir { .. }
                | Op::MakeEntry { .. }
                | Op::Lock { unlock: false, .. }
                | Op::TakeLock { .. }
                | Op::DropLock { .. }
        )
    }

    /// Whether the session settles it by looking when it is in flight at a loss (`--ambiguous
    /// resolve`): it must then never fail as "possibly not completed" unless the session says
    /// it could see nothing certain. (An ORCLOSE file may vanish with the lost connection: see
    /// `Lane::settled_by_looking`.)
    pub fn settled_by_looking(&self) -> bool {
        matches!(
            self,
            Op::CreateTemp { .. }
                | Op::RenameTemp { .. }
                | Op::RenameSub { .. }
                | Op::RemoveTemp
                | Op::UnlinkTemp
                | Op::Mkdir { .. }
                | Op::MakeEntry { .. }
        )
    }

    /// Whether running it changes what the server holds (data, names, attributes, locks):
    /// flushed with no reply (flush(5): it never happened), it must not have run.
    pub fn changes_server(&self) -> bool {
        matches!(
            self,
            Op::Write { .. }
                | Op::Append { .. }
                | Op::CreateTemp { .. }
                | Op::WriteTemp { .. }
                | Op::RenameTemp { .. }
                | Op::RenameSub { .. }
                | Op::RemoveTemp
                | Op::UnlinkTemp
                | Op::Truncate { .. }
                | Op::Mkdir { .. }
                | Op::MakeEntry { .. }
                | Op::Lock { .. }
                | Op::TakeLock { .. }
                | Op::DropLock { .. }
                | Op::WriteBlock { .. }
        )
    }

    /// Whether what the server shows after it ran proves it was this request (`resolve.rs`):
    /// a hard link to the lane's own file, a create that is an open. Anything else that ran
    /// may be answered "possibly not completed": another actor could have made the same change.
    pub fn proven_by_looking(&self) -> bool {
        matches!(
            self,
            Op::MakeEntry {
                kind: Entry::Link,
                ..
            } | Op::CreateTemp { opens: true, .. }
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FidState {
    Absent,
    Walked,
    Open,
    /// What the session knows of it is unsure (a flushed walk, an unrecorded rename): clunk it.
    Uncertain,
}

/// One lane of the client: its fids, its reference model, what it has in flight.
pub struct Lane {
    /// Unique in the world (it names the lane's directory).
    pub id: usize,
    /// The lane's place among its client's lanes (it numbers the lane's fids).
    slot: usize,
    dialect: Dialect,
    /// Who the lane attaches as: each root must be re-attached with its own identity.
    pub identity: Identity,
    root: FidState,
    dir: FidState,
    data: FidState,
    data_qid: Option<Qid>,
    log: FidState,
    temp_state: FidState,
    /// The file the temp fid stands for, once created.
    temp_name: Option<Vec<u8>>,
    /// The file the temp fid stood for before the lane let it go: a write the session had
    /// already sent again on it (during a rebuild, on a link that then fell silent) may run
    /// on the server after the client's remove or clunk failed it.
    temp_last: Option<Vec<u8>>,
    list: FidState,
    listed: BTreeSet<Vec<u8>>,
    /// The deep fid: absent, half-way (walked its first 16 names), or walked.
    deep: FidState,
    deep_halfway: bool,
    victim: FidState,
    excl: FidState,
    sub: FidState,
    moved: FidState,
    moved_qid: Option<u64>,
    /// The renamed directory's name on the server.
    sub_name: Vec<u8>,
    /// Whether the listing in progress is of the churn directory (whose entries someone else
    /// changes during outages, so it is read to the end but not compared).
    listing_churn: bool,
    /// The world let an old connection linger half-open holding this lane's locks and opens: a
    /// fid may go stale at the next reconnect.
    pub disturbed: bool,
    /// Another client took a range this lane had locked while the server was away: its data
    /// fid may go stale at the reconnect, and its locks may be refused.
    pub locks_stolen: bool,
    next_name: u32,
    locks: BTreeSet<u64>,
    /// The model: file contents and subdirectories of this lane's directory.
    pub files: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Names ORCLOSE files had: whether they are there depends on which connection clunked
    /// them when; listings and the final check leave them out.
    orclose_names: BTreeSet<Vec<u8>>,
    pub subdirs: BTreeSet<Vec<u8>>,
    /// Symlinks, device nodes and hard links the lane made in its directory.
    pub entries: BTreeSet<Vec<u8>>,
    /// The msize settled by Rversion: no request may be larger.
    pub msize: u32,
    /// Durability of the data file, as fsync must report it: writes acknowledged to it since
    /// its last fsync (a crash may lose them: the file's contents are followed, and an fsync
    /// after that tells the truth); whether a link died while they (or a write in flight) were unsynced,
    /// which lets the session fail the next fsync; and whether the operation in flight was in
    /// flight at a loss.
    acked_unsynced: bool,
    /// The writes acknowledged to the data file since its last fsync, in order: what the
    /// session keeps (any write it makes of its own must be one of these).
    kept: Vec<KeptStep>,
    /// Kept steps set aside by a truncation or by letting go of the data fid.
    retired: Vec<KeptStep>,
    /// A truncation since the data file's last fsync, or every fid of it let go: the session
    /// keeps nothing until the next.
    not_kept: bool,
    /// The data file as the lane's acknowledged writes left it, while a crash has lost some
    /// of them and the session has not (yet) written them all again: a successful fsync must
    /// find the server's file equal to it.
    shadow: Option<Vec<u8>>,
    /// The ranges the lane was acknowledged writes to since the data file's last fsync (one
    /// that failed told the client the earlier ones may be lost: only these must survive).
    since_fsync: Vec<(u64, usize)>,
    /// The writes acknowledged on temp fids (never fsynced: the session keeps them until the
    /// fid goes), to recognise the session writing them again.
    temp_kept: Vec<KeptStep>,
    /// The write in flight has already changed the model's file, when the server ran it (a
    /// rewrite by the session may come after it on the server, before the client hears).
    write_applied: bool,
    exposed: bool,
    in_flight_at_loss: bool,
    /// Soft mode: any request may fail while the server is away.
    pub soft: bool,
    /// The lane's part in the race for the shared lock names.
    pub contender: Contender,
    /// The operation in flight and its tag; and a Tflush of it, if sent.
    pub busy: Option<(u16, Op)>,
    pub flush: Option<u16>,
}

/// Expected errors: the session's "possibly not completed" (and lost fsyncs).
pub fn is_not_completed(m: &Msg) -> bool {
    match m {
        Msg::Rlerror(e) => e.ecode == errno::EIO,
        Msg::Rerror(e) => {
            // 9P2000 gets the one message Linux maps to EIO for all of them.
            &e.ename[..] == b"operation possibly not completed"
                || &e.ename[..] == b"written data possibly lost"
                || &e.ename[..] == b"file server unavailable"
                || &e.ename[..] == b"i/o error"
                || &e.ename[..] == b"server sent an invalid reply"
        }
        _ => false,
    }
}

/// The session's answer for a fid it could not rebuild.
pub fn is_stale(m: &Msg) -> bool {
    match m {
        Msg::Rlerror(e) => e.ecode == errno::ESTALE,
        Msg::Rerror(e) => {
            &e.ename[..] == b"unable to reopen file"
                || &e.ename[..] == b"fid unknown or out of range"
        }
        _ => false,
    }
}

pub fn is_error(m: &Msg) -> bool {
    matches!(m, Msg::Rerror(_) | Msg::Rlerror(_))
}

/// What a Tattach says about who is attaching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uname: Vec<u8>,
    pub aname: Vec<u8>,
    pub n_uname: Option<u32>,
}

impl Identity {
    pub fn draw(rng: &mut Rng, dialect: Dialect) -> Identity {
        let uname: &[u8] = [&b"sim"[..], b"alice", b"bob", b""][rng.below(4) as usize];
        Identity {
            uname: uname.to_vec(),
            aname: [&b""[..], b"/"][rng.below(2) as usize].to_vec(),
            n_uname: dialect
                .is_extended()
                .then(|| [NONUNAME, 0, 1000, 1001][rng.below(4) as usize]),
        }
    }

    /// The user the server records for a fid attached this way (ramfs: the name, else the
    /// number in decimal, else "none").
    pub fn user(&self) -> (Vec<u8>, u32) {
        let id = self.n_uname.unwrap_or(NONUNAME);
        let name = match (&self.uname[..], id) {
            (b"", NONUNAME) => b"none".to_vec(),
            (b"", id) => id.to_string().into_bytes(),
            (name, _) => name.to_vec(),
        };
        (name, id)
    }
}

impl Lane {
    pub fn new(id: usize, slot: usize, dialect: Dialect, identity: Identity) -> Lane {
        let mut files = BTreeMap::new();
        files.insert(b"data".to_vec(), Vec::new());
        files.insert(b"log".to_vec(), Vec::new());
        files.insert(b"excl".to_vec(), Vec::new());
        Lane {
            id,
            slot,
            dialect,
            identity,
            root: FidState::Absent,
            dir: FidState::Absent,
            data: FidState::Absent,
            data_qid: None,
            log: FidState::Absent,
            temp_state: FidState::Absent,
            temp_name: None,
            temp_last: None,
            list: FidState::Absent,
            deep: FidState::Absent,
            deep_halfway: false,
            msize: 8192,
            victim: FidState::Absent,
            excl: FidState::Absent,
            sub: FidState::Absent,
            moved: FidState::Absent,
            moved_qid: None,
            sub_name: b"mv0".to_vec(),
            listing_churn: false,
            disturbed: false,
            locks_stolen: false,
            listed: BTreeSet::new(),
            next_name: 0,
            locks: BTreeSet::new(),
            files,
            orclose_names: BTreeSet::new(),
            subdirs: [
                b"deep".to_vec(),
                b"churn".to_vec(),
                b"vict".to_vec(),
                b"mv0".to_vec(),
            ]
            .into_iter()
            .collect(),
            entries: BTreeSet::new(),
            contender: Contender::default(),
            busy: None,
            flush: None,
            acked_unsynced: false,
            kept: Vec::new(),
            retired: Vec::new(),
            not_kept: false,
            shadow: None,
            since_fsync: Vec::new(),
            temp_kept: Vec::new(),
            write_applied: false,
            exposed: false,
            in_flight_at_loss: false,
            soft: false,
        }
    }

    /// The client's link died: a later fsync may fail if writes were unsynced.
    pub fn link_lost(&mut self) {
        let writing = matches!(self.busy, Some((_, Op::Write { .. })));
        if self.acked_unsynced || writing {
            self.exposed = true;
        }
        if self.busy.is_some() {
            self.in_flight_at_loss = true;
        }
    }

    /// Whether a server crash may lose this lane's unsynced writes now: only when nothing is in
    /// flight (an answer already past the proxy would show the old contents). The session
    /// reads its kept writes back once the data fid is rebuilt, and the next fsync must fail
    /// where they are missing (the lane keeps what it was acknowledged aside to check that).
    pub fn lose_unsynced(&mut self) -> bool {
        !(self.busy.is_some() || self.flush.is_some() || !self.acked_unsynced)
    }

    /// The temp fid stands for no file now (it remembers which it last did).
    fn forget_temp_name(&mut self) {
        if let Some(name) = self.temp_name.take() {
            self.temp_last = Some(name);
        }
    }

    /// The session wrote a temp file's acknowledged write again: the model's temp file, if it
    /// follows it, changes as the server's did.
    fn session_rewrote_temp(&mut self, step: KeptStep) -> Result<(), String> {
        let KeptStep::Write(off, data) = &step;
        let in_flight = match &self.busy {
            Some((_, Op::WriteTemp { data: d })) => vec![KeptStep::Write(0, d.to_vec())],
            _ => Vec::new(),
        };
        let known = self
            .temp_kept
            .iter()
            .chain(&in_flight)
            .any(|KeptStep::Write(o, d)| {
                *off >= *o && (*off - *o) as usize + data.len() <= d.len() && {
                    let at = (*off - *o) as usize;
                    d[at..at + data.len()] == data[..]
                }
            });
        if !known {
            return Err(format!(
                "lane {}: the session wrote {step:?} again on the temp file, which was never acknowledged",
                self.id
            ));
        }
        if let Some(name) = self.temp_name.clone().or_else(|| self.temp_last.clone()) {
            if let Some(file) = self.files.get_mut(&name) {
                step.apply(file);
            }
        }
        Ok(())
    }

    /// An operation is sent with `tag`: it is the one in flight.
    pub fn start(&mut self, tag: u16, op: Op) {
        self.contender.started();
        self.busy = Some((tag, op));
        self.write_applied = false;
    }

    /// The server ran the lane's write in flight (tag `tag`) on `fid`, writing `data` at `off`:
    /// the model's file changes now, in the server's order (the completion then leaves it).
    pub fn server_wrote(&mut self, tag: u16, fid: u32, off: u64, data: &[u8]) {
        let Some((busy_tag, op)) = &self.busy else {
            return;
        };
        if *busy_tag != tag {
            return;
        }
        match op {
            Op::Write { .. } if fid == self.data_fid().0 => {
                self.edit_data(|f| write_at(f, off, data));
                self.write_applied = true;
            }
            Op::WriteTemp { .. } if fid == self.temp_fid().0 => {
                if let Some(file) = self.temp_name.clone().and_then(|n| self.files.get_mut(&n)) {
                    write_at(file, off, data);
                }
                self.write_applied = true;
            }
            _ => {}
        }
    }

    /// Whether `fid` is the lane's data or temp fid.
    pub fn writes_through(&self, fid: u32) -> bool {
        fid == self.data_fid().0 || fid == self.temp_fid().0
    }

    /// The model's data file, set to what the server holds (a crash lost unsynced writes):
    /// what the lane was acknowledged is kept aside until an fsync settles it.
    pub fn set_data(&mut self, contents: Vec<u8>) {
        if let Some(before) = self.files.insert(b"data".to_vec(), contents) {
            self.shadow.get_or_insert(before);
        }
    }

    /// Change the data file as one of the lane's own requests did (and what it was
    /// acknowledged, if a crash set that aside).
    fn edit_data(&mut self, edit: impl Fn(&mut Vec<u8>)) {
        edit(self.files.get_mut(&b"data"[..]).expect("data"));
        if let Some(shadow) = &mut self.shadow {
            edit(shadow);
        }
    }

    /// The session wrote a kept step again on the data fid after a reconnect (its own
    /// request, during the rebuild): it must be one the lane was acknowledged since the fid's
    /// last fsync; the model's file changes as the server's did.
    pub fn session_rewrote(&mut self, fid: u32, step: KeptStep) -> Result<(), String> {
        if fid == self.temp_fid().0 {
            return self.session_rewrote_temp(step);
        }
        // The write in flight, if the session has its Rwrite (kept) while the client has not
        // read it yet.
        if let (Some((_, Op::Write { off, data })), KeptStep::Write(o, d)) = (&self.busy, &step) {
            if *o >= *off
                && (*o - *off) as usize + d.len() <= data.len()
                && data[(*o - *off) as usize..][..d.len()] == d[..]
            {
                step.apply(self.files.get_mut(&b"data"[..]).expect("data"));
                return Ok(());
            }
        }
        let known = self
            .kept
            .iter()
            .chain(&self.retired)
            .any(|k| match (k, &step) {
                (KeptStep::Write(o, d), KeptStep::Write(off, data)) => {
                    *off >= *o && (*off - *o) as usize + data.len() <= d.len() && {
                        let at = (*off - *o) as usize;
                        d[at..at + data.len()] == data[..]
                    }
                }
            });
        if !known {
            return Err(format!(
                "lane {}: the session wrote {step:?} again, which the lane was not acknowledged since an fsync",
                self.id
            ));
        }
        let file = self.files.get_mut(&b"data"[..]).expect("data");
        step.apply(file);
        Ok(())
    }

    /// A new data fid, or none: nothing unsynced on it.
    fn reset_durability(&mut self) {
        self.acked_unsynced = false;
        self.not_kept = false;
        self.shadow = None;
        self.since_fsync.clear();
        if !self.kept.is_empty() {
            self.retired = std::mem::take(&mut self.kept);
        }
        self.exposed = false;
    }

    /// fsync tells the truth: it never succeeds when acknowledged writes were lost, and fails
    /// only when the session has a reason (writes unsynced when a link died, the fsync itself
    /// in flight at a loss, or soft mode).
    fn check_fsync(&mut self, reply: &Msg, in_flight_at_loss: bool) -> Result<(), String> {
        if is_not_completed(reply) && !self.exposed && !in_flight_at_loss && !self.soft {
            return Err(format!(
                "lane {}: fsync failed ({reply:?}) with no write lost and no link lost under it",
                self.id
            ));
        }
        // A fid gone stale answers for nothing of its file: the file's writes stay as they were
        // (the session says so at the next fsync through another fid).
        if is_stale(reply) {
            return Ok(());
        }
        // It succeeded: nothing the lane was acknowledged may be missing from the file.
        if let (false, Some(shadow)) = (is_error(reply), &self.shadow) {
            let file = &self.files[&b"data"[..]];
            let differs = self.since_fsync.iter().any(|&(off, len)| {
                let range = off as usize..off as usize + len;
                shadow.get(range.clone()) != file.get(range)
            });
            if differs {
                return Err(format!(
                    "lane {}: fsync succeeded though a crash lost acknowledged writes",
                    self.id
                ));
            }
        }
        self.reset_durability();
        Ok(())
    }

    /// `Op::settled_by_looking`, knowing the lane's files: an ORCLOSE file goes when the
    /// connection that opened it ends, so after a loss an empty place shows nothing certain.
    pub fn settled_by_looking(&self, op: &Op) -> bool {
        let orclose_temp = self
            .temp_name
            .as_ref()
            .is_some_and(|n| self.orclose_names.contains(n));
        match op {
            Op::CreateTemp { orclose, .. } => !orclose,
            Op::RenameTemp { .. } | Op::RemoveTemp | Op::UnlinkTemp => !orclose_temp,
            _ => op.settled_by_looking(),
        }
    }

    /// The lane's directory name under the root.
    pub fn dir_name(&self) -> String {
        format!("l{}", self.id)
    }

    fn fid(&self, k: u32) -> Fid {
        Fid(16 + self.slot as u32 * 16 + k)
    }

    /// The ranges the lane holds locked through an open data fid it trusts.
    pub fn trusted_locks(&self) -> Vec<u64> {
        match self.data {
            FidState::Open => self.locks.iter().copied().collect(),
            _ => Vec::new(),
        }
    }

    /// A range the lane holds locked on its data file, if any.
    pub fn held_lock(&self) -> Option<u64> {
        self.locks.iter().next().copied()
    }

    /// Whether `fid` is this lane's data fid.
    pub fn is_data_fid(&self, fid: u32) -> bool {
        fid == self.data_fid().0
    }

    /// Whether `fid` is one of this lane's.
    pub fn owns(&self, fid: u32) -> bool {
        (self.fid(0).0..self.fid(16).0).contains(&fid)
    }
    fn root_fid(&self) -> Fid {
        self.fid(8)
    }
    fn dir_fid(&self) -> Fid {
        self.fid(0)
    }
    fn data_fid(&self) -> Fid {
        self.fid(1)
    }
    fn log_fid(&self) -> Fid {
        self.fid(2)
    }
    fn temp_fid(&self) -> Fid {
        self.fid(3)
    }
    fn list_fid(&self) -> Fid {
        self.fid(4)
    }
    fn deep_fid(&self) -> Fid {
        self.fid(5)
    }
    fn victim_fid(&self) -> Fid {
        self.fid(6)
    }
    fn excl_fid(&self) -> Fid {
        self.fid(7)
    }
    fn sub_fid(&self) -> Fid {
        self.fid(9)
    }
    fn moved_fid(&self) -> Fid {
        self.fid(10)
    }
    fn shared_fid(&self) -> Fid {
        self.fid(11)
    }
    fn lock_fid(&self) -> Fid {
        self.fid(12)
    }
    fn shared_file_fid(&self) -> Fid {
        self.fid(13)
    }

    /// The deep file's path below the lane's directory: 20 names.
    pub fn deep_path() -> Vec<Vec<u8>> {
        let mut p = vec![b"deep".to_vec()];
        p.extend((1..=18).map(|i| format!("d{i}").into_bytes()));
        p.push(b"f".to_vec());
        p
    }

    fn walk(&self, newfid: Fid, names: &[&[u8]]) -> Msg {
        Twalk {
            fid: self.root_fid(),
            newfid,
            wnames: WalkNames::new(names).expect("short paths"),
        }
        .into()
    }

    fn open(&self, fid: Fid, write: bool, append: bool) -> Msg {
        match self.dialect {
            Dialect::DotL => {
                let mut flags = if write { lflags::RDWR } else { lflags::RDONLY };
                if append {
                    flags |= lflags::APPEND;
                }
                Tlopen { fid, flags }.into()
            }
            _ => Topen {
                fid,
                mode: if write {
                    open_mode::RDWR
                } else {
                    open_mode::READ
                },
            }
            .into(),
        }
    }

    /// The next operation, when the lane is idle; `None` while it waits for nothing new
    /// (when `winding_down`, it starts nothing).
    fn state_of(&mut self, which: Which) -> &mut FidState {
        match which {
            Which::Root => &mut self.root,
            Which::Dir => &mut self.dir,
            Which::Data => &mut self.data,
            Which::Log => &mut self.log,
            Which::List => &mut self.list,
            Which::Temp => &mut self.temp_state,
            Which::Deep => &mut self.deep,
            Which::Victim => &mut self.victim,
            Which::Excl => &mut self.excl,
            Which::Sub => &mut self.sub,
            Which::Moved => &mut self.moved,
            Which::Shared => &mut self.contender.shared,
            Which::Lock => &mut self.contender.lock,
            Which::SharedFile => &mut self.contender.file,
        }
    }

    fn fid_of(&self, which: Which) -> Fid {
        match which {
            Which::Root => self.root_fid(),
            Which::Dir => self.dir_fid(),
            Which::Data => self.data_fid(),
            Which::Log => self.log_fid(),
            Which::Temp => self.temp_fid(),
            Which::List => self.list_fid(),
            Which::Deep => self.deep_fid(),
            Which::Victim => self.victim_fid(),
            Which::Excl => self.excl_fid(),
            Which::Sub => self.sub_fid(),
            Which::Moved => self.moved_fid(),
            Which::Shared => self.shared_fid(),
            Which::Lock => self.lock_fid(),
            Which::SharedFile => self.shared_file_fid(),
        }
    }

    /// The fid an operation works on, for marking it uncertain.
    fn fid_used(op: &Op) -> Option<Which> {
        Some(match op {
            Op::Attach => Which::Root,
            Op::WalkDir | Op::Mkdir { .. } | Op::MakeEntry { .. } => Which::Dir,
            Op::WalkData
            | Op::OpenData { .. }
            | Op::Write { .. }
            | Op::Read { .. }
            | Op::Stat
            | Op::Lock { .. }
            | Op::Fsync
            | Op::ClunkData => Which::Data,
            Op::WalkLog | Op::OpenLog | Op::Append { .. } => Which::Log,
            Op::WalkTemp
            | Op::WalkMissing
            | Op::CreateTemp { .. }
            | Op::WriteTemp { .. }
            | Op::RenameTemp { .. }
            | Op::RemoveTemp
            | Op::UnlinkTemp
            | Op::ClunkTemp => Which::Temp,
            Op::Truncate { .. } => Which::Data,
            Op::WalkList | Op::OpenList | Op::ReadList { .. } | Op::ClunkList => Which::List,
            Op::WalkDeep { .. } | Op::StatDeep => Which::Deep,
            Op::WalkVictim | Op::OpenVictim | Op::StatVictim => Which::Victim,
            Op::WalkExcl | Op::OpenExcl | Op::StatExcl => Which::Excl,
            Op::WalkSub | Op::RenameSub { .. } => Which::Sub,
            Op::WalkMoved | Op::OpenMoved | Op::StatMoved => Which::Moved,
            Op::WalkShared => Which::Shared,
            Op::WalkLock { .. } | Op::TakeLock { .. } | Op::DropLock { .. } => Which::Lock,
            Op::WalkSharedFile
            | Op::OpenSharedFile
            | Op::WriteBlock { .. }
            | Op::ReadBlock { .. }
            | Op::FsyncShared => Which::SharedFile,
            Op::Forget(w) => *w,
        })
    }

    pub fn next_op(&mut self, rng: &mut Rng) -> (Msg, Op) {
        for which in [
            Which::Root,
            Which::Dir,
            Which::Data,
            Which::Log,
            Which::Temp,
            Which::List,
            Which::Deep,
            Which::Victim,
            Which::Excl,
            Which::Sub,
            Which::Moved,
            Which::Shared,
            Which::Lock,
            Which::SharedFile,
        ] {
            if *self.state_of(which) == FidState::Uncertain {
                return (
                    Tclunk {
                        fid: self.fid_of(which),
                    }
                    .into(),
                    Op::Forget(which),
                );
            }
        }
        let dir = self.dir_name();
        let d = dir.as_bytes();
        let dotl = self.dialect == Dialect::DotL;
        if self.root == FidState::Absent {
            let msg = Tattach {
                fid: self.root_fid(),
                afid: NOFID,
                uname: self.identity.uname.clone().into(),
                aname: self.identity.aname.clone().into(),
                n_uname: self.identity.n_uname,
            };
            return (msg.into(), Op::Attach);
        }
        // Contention, where the world has it (no draw otherwise: older seeds stay as they were).
        if self.contender.percent > 0
            && (self.contender.lock != FidState::Absent || rng.chance(self.contender.percent))
        {
            return self.shared_op(rng);
        }
        if self.dir == FidState::Absent {
            return (self.walk(self.dir_fid(), &[d]), Op::WalkDir);
        }
        if self.data == FidState::Absent {
            return (self.walk(self.data_fid(), &[d, b"data"]), Op::WalkData);
        }
        if self.data == FidState::Walked {
            let trunc = rng.chance(15);
            let mut msg = self.open(self.data_fid(), true, false);
            match &mut msg {
                Msg::Tlopen(o) if trunc => o.flags |= lflags::TRUNC,
                Msg::Topen(o) if trunc => o.mode |= open_mode::TRUNC,
                _ => {}
            }
            return (msg, Op::OpenData { trunc });
        }
        // Finish what a multi-step operation started.
        if self.temp_state != FidState::Absent {
            return match (self.temp_state, self.temp_name.clone()) {
                (FidState::Walked, None) if rng.chance(80) => {
                    let name = format!("t{}", self.next_name).into_bytes();
                    self.next_name += 1;
                    let mut orclose = false;
                    let mut opens = false;
                    let msg: Msg = if dotl {
                        let excl = rng.chance(50);
                        opens = !excl;
                        Tlcreate {
                            fid: self.temp_fid(),
                            name: name.clone().into(),
                            // O_CREAT|O_EXCL sometimes, as open(2) creates: a reopen after a
                            // reconnect must strip them (the file exists by then).
                            flags: lflags::RDWR
                                | if excl {
                                    lflags::CREATE | lflags::EXCL
                                } else {
                                    0
                                },
                            mode: 0o644,
                            gid: 0,
                        }
                        .into()
                    } else {
                        orclose = rng.chance(40);
                        Tcreate {
                            fid: self.temp_fid(),
                            name: name.clone().into(),
                            perm: 0o644,
                            mode: open_mode::RDWR | if orclose { open_mode::RCLOSE } else { 0 },
                            extension: self.dialect.is_extended().then(Bytes::new),
                        }
                        .into()
                    };
                    (
                        msg,
                        Op::CreateTemp {
                            name,
                            orclose,
                            opens,
                        },
                    )
                }
                (FidState::Open, Some(_)) if rng.chance(40) => {
                    let data = Bytes::from(rng.data(1, 200));
                    let msg = Twrite {
                        fid: self.temp_fid(),
                        offset: 0,
                        data: Data(data.clone()),
                    }
                    .into();
                    (msg, Op::WriteTemp { data })
                }
                (FidState::Open, Some(name)) if rng.chance(30) => {
                    let to = format!("r{}", self.next_name).into_bytes();
                    self.next_name += 1;
                    let msg: Msg = if dotl && rng.chance(50) {
                        // The fid's own rename: the session moves the fid with its file.
                        Trename {
                            fid: self.temp_fid(),
                            dfid: self.dir_fid(),
                            name: to.clone().into(),
                        }
                        .into()
                    } else if dotl {
                        Trenameat {
                            olddirfid: self.dir_fid(),
                            oldname: name.clone().into(),
                            newdirfid: self.dir_fid(),
                            newname: to.clone().into(),
                        }
                        .into()
                    } else {
                        let mut stat = Stat::unchanged(self.dialect);
                        stat.name = to.clone().into();
                        Twstat {
                            fid: self.temp_fid(),
                            stat,
                        }
                        .into()
                    };
                    (msg, Op::RenameTemp { to })
                }
                (FidState::Open, Some(name)) if dotl && rng.chance(30) => {
                    let msg = Tunlinkat {
                        dirfid: self.dir_fid(),
                        name: name.into(),
                        flags: 0,
                    };
                    (msg.into(), Op::UnlinkTemp)
                }
                (FidState::Open, Some(_)) if rng.chance(50) => (
                    Tremove {
                        fid: self.temp_fid(),
                    }
                    .into(),
                    Op::RemoveTemp,
                ),
                _ => (
                    Tclunk {
                        fid: self.temp_fid(),
                    }
                    .into(),
                    Op::ClunkTemp,
                ),
            };
        }
        if self.list != FidState::Absent {
            return match self.list {
                FidState::Walked => (self.open(self.list_fid(), false, false), Op::OpenList),
                // A listing whose position was lost starts over.
                _ => self.read_list(0),
            };
        }
        match rng.below(100) {
            0..=29 => {
                let off = rng.below(FILE_SPAN);
                // Up to the msize limit sometimes: a smaller server after a restart shortens it.
                let most = if rng.chance(20) { 8000 } else { 3000 };
                let most = most.min(self.msize as u64 - IOHDRSZ as u64);
                let data = Bytes::from(rng.data(1, most));
                let msg = Twrite {
                    fid: self.data_fid(),
                    offset: off,
                    data: Data(data.clone()),
                }
                .into();
                (msg, Op::Write { off, data })
            }
            50..=52 => self.deep_op(rng),
            53 => self.victim_op(rng),
            54 => self.excl_op(rng),
            30..=49 => {
                let off = rng.below(FILE_SPAN);
                let most = if rng.chance(20) { 8000 } else { 4000 };
                let most = most.min(self.msize as u64 - IOHDRSZ as u64);
                let len = rng.range(1, most) as u32;
                (
                    Tread {
                        fid: self.data_fid(),
                        offset: off,
                        count: len,
                    }
                    .into(),
                    Op::Read { off, len },
                )
            }
            59..=61 => self.sub_op(rng),
            55..=58 => {
                let msg: Msg = if dotl {
                    Tgetattr {
                        fid: self.data_fid(),
                        request_mask: 0x7ff,
                    }
                    .into()
                } else {
                    Tstat {
                        fid: self.data_fid(),
                    }
                    .into()
                };
                (msg, Op::Stat)
            }
            62..=69 => match self.log {
                FidState::Absent => (self.walk(self.log_fid(), &[d, b"log"]), Op::WalkLog),
                FidState::Walked => (self.open(self.log_fid(), true, true), Op::OpenLog),
                FidState::Open | FidState::Uncertain => {
                    let data = Bytes::from(rng.data(1, 100));
                    let msg = Twrite {
                        fid: self.log_fid(),
                        offset: 0,
                        data: Data(data.clone()),
                    }
                    .into();
                    (msg, Op::Append { data })
                }
            },
            78..=79 => (
                // A walk that fails part-way: it creates no fid.
                self.walk(self.temp_fid(), &[d, b"nothere", b"x"]),
                Op::WalkMissing,
            ),
            70..=77 => {
                self.forget_temp_name();
                (self.walk(self.temp_fid(), &[d]), Op::WalkTemp)
            }
            80..=84 => {
                self.listed.clear();
                self.listing_churn = rng.chance(30);
                let names: &[&[u8]] = if self.listing_churn {
                    &[d, b"churn"]
                } else {
                    &[d]
                };
                (self.walk(self.list_fid(), names), Op::WalkList)
            }
            85..=87 if dotl && rng.chance(50) => {
                let name = format!("e{}", self.next_name).into_bytes();
                self.next_name += 1;
                let linkable = matches!(self.data, FidState::Walked | FidState::Open);
                let kind = match rng.below(3) {
                    0 => Entry::Symlink,
                    1 => Entry::Fifo,
                    _ if linkable => Entry::Link,
                    _ => Entry::Symlink,
                };
                let msg: Msg = match kind {
                    Entry::Symlink => Tsymlink {
                        fid: self.dir_fid(),
                        name: name.clone().into(),
                        symtgt: "data".into(),
                        gid: 0,
                    }
                    .into(),
                    Entry::Fifo => Tmknod {
                        dfid: self.dir_fid(),
                        name: name.clone().into(),
                        mode: 0o010644,
                        major: 0,
                        minor: 0,
                        gid: 0,
                    }
                    .into(),
                    Entry::Link => Tlink {
                        dfid: self.dir_fid(),
                        fid: self.data_fid(),
                        name: name.clone().into(),
                    }
                    .into(),
                };
                (msg, Op::MakeEntry { name, kind })
            }
            85..=87 if dotl => {
                let name = format!("m{}", self.next_name).into_bytes();
                self.next_name += 1;
                (
                    Tmkdir {
                        dfid: self.dir_fid(),
                        name: name.clone().into(),
                        mode: 0o755,
                        gid: 0,
                    }
                    .into(),
                    Op::Mkdir { name },
                )
            }
            88..=92 if dotl => {
                let unlock = !self.locks.is_empty() && rng.chance(50);
                let start = if unlock {
                    *self.locks.iter().next().expect("a lock")
                } else {
                    rng.below(100) * 100
                };
                let typ = if unlock { 2 } else { 1 };
                let msg = Tlock {
                    fid: self.data_fid(),
                    typ,
                    flags: 0,
                    start,
                    length: 50,
                    proc_id: self.id as u32,
                    client_id: "sim".into(),
                };
                (msg.into(), Op::Lock { start, unlock })
            }
            93..=96 if dotl => (
                Tfsync {
                    fid: self.data_fid(),
                    datasync: 0,
                }
                .into(),
                Op::Fsync,
            ),
            97 => {
                let len = rng.below(FILE_SPAN);
                let msg: Msg = if dotl {
                    Tsetattr {
                        fid: self.data_fid(),
                        valid: 0x8,
                        size: len,
                        ..Default::default()
                    }
                    .into()
                } else {
                    let mut stat = Stat::unchanged(self.dialect);
                    stat.length = len;
                    Twstat {
                        fid: self.data_fid(),
                        stat,
                    }
                    .into()
                };
                (msg, Op::Truncate { len })
            }
            98..=99 => {
                self.locks.clear(); // closing the file drops its locks
                (
                    Tclunk {
                        fid: self.data_fid(),
                    }
                    .into(),
                    Op::ClunkData,
                )
            }
            _ => (
                Tread {
                    fid: self.data_fid(),
                    offset: 0,
                    count: 100,
                }
                .into(),
                Op::Read { off: 0, len: 100 },
            ),
        }
    }

    fn stat(&self, fid: Fid) -> Msg {
        match self.dialect {
            Dialect::DotL => Tgetattr {
                fid,
                request_mask: 0x7ff,
            }
            .into(),
            _ => Tstat { fid }.into(),
        }
    }

    fn deep_op(&mut self, rng: &mut Rng) -> (Msg, Op) {
        let path = Lane::deep_path();
        let names: Vec<&[u8]> = path.iter().map(|n| &n[..]).collect();
        let dir = self.dir_name();
        match (self.deep, self.deep_halfway) {
            (FidState::Absent, _) => {
                let mut first: Vec<&[u8]> = vec![dir.as_bytes()];
                first.extend_from_slice(&names[..MAXWELEM - 1]);
                (
                    self.walk(self.deep_fid(), &first),
                    Op::WalkDeep { first: true },
                )
            }
            (FidState::Walked, true) => {
                let msg = Twalk {
                    fid: self.deep_fid(),
                    newfid: self.deep_fid(),
                    wnames: WalkNames::new(&names[MAXWELEM - 1..]).expect("short rest"),
                };
                (msg.into(), Op::WalkDeep { first: false })
            }
            _ if rng.chance(20) => (
                Tclunk {
                    fid: self.deep_fid(),
                }
                .into(),
                Op::Forget(Which::Deep),
            ),
            _ => (self.stat(self.deep_fid()), Op::StatDeep),
        }
    }

    fn victim_op(&mut self, rng: &mut Rng) -> (Msg, Op) {
        let dir = self.dir_name();
        match self.victim {
            FidState::Absent => (
                self.walk(self.victim_fid(), &[dir.as_bytes(), b"vict", b"victim"]),
                Op::WalkVictim,
            ),
            FidState::Walked => (self.open(self.victim_fid(), false, false), Op::OpenVictim),
            _ if rng.chance(15) => (
                Tclunk {
                    fid: self.victim_fid(),
                }
                .into(),
                Op::Forget(Which::Victim),
            ),
            _ => (self.stat(self.victim_fid()), Op::StatVictim),
        }
    }

    fn sub_op(&mut self, rng: &mut Rng) -> (Msg, Op) {
        let dir = self.dir_name();
        let d = dir.as_bytes();
        let sub = self.sub_name.clone();
        match self.moved {
            FidState::Absent => {
                return (self.walk(self.moved_fid(), &[d, &sub, b"f"]), Op::WalkMoved)
            }
            FidState::Walked => return (self.open(self.moved_fid(), false, false), Op::OpenMoved),
            _ => {}
        }
        if rng.chance(70) {
            return match rng.chance(10) {
                true => (
                    Tclunk {
                        fid: self.moved_fid(),
                    }
                    .into(),
                    Op::Forget(Which::Moved),
                ),
                false => (self.stat(self.moved_fid()), Op::StatMoved),
            };
        }
        // Never its own name: a rename to the same name changes nothing, so it would not show.
        if format!("mv{}", self.next_name).as_bytes() == &sub[..] {
            self.next_name += 1;
        }
        let to = format!("mv{}", self.next_name).into_bytes();
        // Walked first, as Linux holds a fid for what it renames: the session then knows the
        // file at the old name, and seeing it still there proves the rename did not run.
        if self.sub == FidState::Absent {
            return (self.walk(self.sub_fid(), &[d, &sub]), Op::WalkSub);
        }
        if self.dialect == Dialect::DotL {
            self.next_name += 1;
            let msg = Trenameat {
                olddirfid: self.dir_fid(),
                oldname: sub.into(),
                newdirfid: self.dir_fid(),
                newname: to.clone().into(),
            };
            return (msg.into(), Op::RenameSub { to });
        }
        self.next_name += 1;
        let mut stat = Stat::unchanged(self.dialect);
        stat.name = to.clone().into();
        (
            Twstat {
                fid: self.sub_fid(),
                stat,
            }
            .into(),
            Op::RenameSub { to },
        )
    }

    fn excl_op(&mut self, rng: &mut Rng) -> (Msg, Op) {
        let dir = self.dir_name();
        match self.excl {
            FidState::Absent => (
                self.walk(self.excl_fid(), &[dir.as_bytes(), b"excl"]),
                Op::WalkExcl,
            ),
            FidState::Walked => (self.open(self.excl_fid(), false, false), Op::OpenExcl),
            _ if rng.chance(15) => (
                Tclunk {
                    fid: self.excl_fid(),
                }
                .into(),
                Op::Forget(Which::Excl),
            ),
            _ => (self.stat(self.excl_fid()), Op::StatExcl),
        }
    }

    fn read_list(&self, offset: u64) -> (Msg, Op) {
        let msg: Msg = if self.dialect == Dialect::DotL {
            Treaddir {
                fid: self.list_fid(),
                offset,
                count: 4000,
            }
            .into()
        } else {
            Tread {
                fid: self.list_fid(),
                offset,
                count: 4000,
            }
            .into()
        };
        (msg, Op::ReadList { offset })
    }

    /// The model's view of this lane's directory listing.
    /// Fids whose state this lane is unsure of (it clunks them before using them again).
    pub fn uncertain_fids(&self) -> Vec<u32> {
        [
            (self.root, self.root_fid()),
            (self.dir, self.dir_fid()),
            (self.data, self.data_fid()),
            (self.log, self.log_fid()),
            (self.temp_state, self.temp_fid()),
            (self.list, self.list_fid()),
            (self.deep, self.deep_fid()),
            (self.victim, self.victim_fid()),
            (self.excl, self.excl_fid()),
            (self.sub, self.sub_fid()),
            (self.moved, self.moved_fid()),
            (self.contender.shared, self.shared_fid()),
            (self.contender.lock, self.lock_fid()),
            (self.contender.file, self.shared_file_fid()),
        ]
        .into_iter()
        .filter(|(state, _)| *state == FidState::Uncertain)
        .map(|(_, fid)| fid.0)
        .collect()
    }

    fn expected_names(&self) -> BTreeSet<Vec<u8>> {
        self.files
            .keys()
            .cloned()
            .chain(self.subdirs.iter().cloned())
            .chain(self.entries.iter().cloned())
            .collect()
    }

    /// Whether a name in the lane's directory is an ORCLOSE file's (not followed by the model).
    pub fn is_orclose_name(&self, name: &[u8]) -> bool {
        self.orclose_names.contains(name)
    }

    /// Take the outcome of `op`: `reply` is what the client got, `effective` what the server
    /// actually did (its successful reply), if anything; `flushed` when an Rflush came first,
    /// so that by flush(5) the request counts as never sent — while its effect on the files may
    /// still have happened on a connection that died. Returns a follow-up operation for
    /// multi-step reads, or an error describing a broken promise.
    pub fn complete(
        &mut self,
        op: Op,
        reply: &Msg,
        effective: Option<&Msg>,
        flushed: bool,
    ) -> Result<Option<(Msg, Op)>, String> {
        let in_flight_at_loss = std::mem::take(&mut self.in_flight_at_loss);
        if op.is_shared() {
            return Ok(self.complete_shared(op, reply, effective, flushed));
        }
        match (&op, flushed) {
            (Op::Fsync, false) => self.check_fsync(reply, in_flight_at_loss)?,
            // A flushed fsync never happened, for the client (flush(5)), even where the server
            // ran it: the writes before it stay unsynced, and a later fsync may report them.
            (Op::Write { off, data }, flushed) if effective.is_some() && !is_error(reply) => {
                self.acked_unsynced = true;
                if let (false, Msg::Rwrite(w)) = (flushed, reply) {
                    self.since_fsync
                        .push((*off, (w.count as usize).min(data.len())));
                }
                // Kept by the session only if its Rwrite reached it (and so the client).
                if let (false, Msg::Rwrite(w), false) = (flushed, reply, self.not_kept) {
                    let n = (w.count as usize).min(data.len());
                    self.kept.push(KeptStep::Write(*off, data[..n].to_vec()));
                }
            }
            (Op::WriteTemp { data }, false) if effective.is_some() => {
                if let Msg::Rwrite(w) = reply {
                    let n = (w.count as usize).min(data.len());
                    self.temp_kept.push(KeptStep::Write(0, data[..n].to_vec()));
                }
            }
            // A truncation through the data fid: the session keeps nothing more until the next
            // fsync (writes across a truncation are not written again).
            (Op::Truncate { .. }, false) if effective.is_some() && !is_error(reply) => {
                if self.acked_unsynced {
                    self.not_kept = true;
                }
                if !self.kept.is_empty() {
                    self.retired = std::mem::take(&mut self.kept);
                }
            }
            // Unsynced writes are the file's: a new fid of it does not settle them. Let go of
            // (the lane's only fid of the file), or truncated by the open, the session keeps
            // them no more.
            (Op::ClunkData, _) | (Op::OpenData { trunc: true }, _) if !flushed => {
                // (Writes the session acknowledged and keeps: one that ran though the client
                // was answered Rflush is none of the session's.)
                if !self.kept.is_empty() {
                    self.not_kept = true;
                }
                if !self.kept.is_empty() {
                    self.retired = std::mem::take(&mut self.kept);
                }
            }
            _ => {}
        }
        if let Op::Forget(which) = op {
            // A flushed clunk was never sent (flush(5)): the fid is still there.
            if flushed {
                return Ok(None);
            }
            *self.state_of(which) = FidState::Absent;
            if which == Which::Data {
                // Closing the file releases the locks taken through it.
                self.locks.clear();
            }
            if which == Which::Temp {
                self.forget_temp_name();
            }
            if which == Which::Deep {
                self.deep_halfway = false;
            }
            return Ok(None);
        }
        // The victim is replaced during some outages: a fid open on it goes stale (and its
        // clunk is answered locally).
        // An ORCLOSE temp file that an old connection removed when it hung up (after the session
        // had already reopened it on the new one) answers as removed: the fid is as good as stale.
        let orclose_removed = Self::fid_used(&op) == Some(Which::Temp)
            && self
                .temp_name
                .as_ref()
                .is_some_and(|n| self.orclose_names.contains(n))
            && matches!(reply, Msg::Rerror(e) if &e.ename[..] == b"file has been removed");
        if (is_stale(reply) || orclose_removed) && !flushed {
            // A hard link is made through the data fid, which is the one that may be stale.
            let which = match op {
                Op::MakeEntry {
                    kind: Entry::Link, ..
                } => Some(Which::Data),
                _ => Self::fid_used(&op),
            };
            // So does any fid of a lane whose locks or exclusive opens an old connection held
            // while the session rebuilt them.
            // And an ORCLOSE temp file, which its old connection removed when it hung up.
            let orclose_gone = which == Some(Which::Temp)
                && self
                    .temp_name
                    .as_ref()
                    .is_some_and(|n| self.orclose_names.contains(n));
            let lock_lost = self.locks_stolen && which == Some(Which::Data);
            if which == Some(Which::Victim)
                || orclose_gone
                || lock_lost
                || self.disturbed && which.is_some()
            {
                // The request may have run on the lost link before its fid went stale.
                self.apply_to_files(&op, effective)?;
                let which = which.expect("a fid");
                *self.state_of(which) = FidState::Uncertain;
                if which == Which::Data {
                    self.locks.clear();
                    self.data_qid = None;
                }
                return Ok(None);
            }
        }
        // An old connection lingering with the exclusive file open keeps it busy for a while.
        let busy = match reply {
            Msg::Rlerror(e) => e.ecode == 16, // EBUSY
            Msg::Rerror(e) => &e.ename[..] == b"exclusive use file already open",
            _ => false,
        };
        // A listing of the churn directory, which someone else changes during outages, may
        // find its position gone: it starts over.
        if is_error(reply) && matches!(op, Op::ReadList { .. }) && self.listing_churn {
            self.listed.clear();
            return Ok(None);
        }
        if busy && matches!(op, Op::OpenExcl) && self.disturbed {
            self.excl = FidState::Walked;
            return Ok(None);
        }
        if is_error(reply) && !is_not_completed(reply) {
            return Err(format!(
                "lane {}: {op:?} got an unexpected error {reply:?}",
                self.id
            ));
        }
        // Effects on the files follow what the server did; fids and locks change only on a
        // success the client saw (the session records nothing else).
        self.apply_to_files(&op, effective)?;
        let ok = effective.is_some() && !is_error(reply);
        let executed = effective.is_some();
        if flushed {
            // What the session knows of the fid is unsure now: clunk it before using it again.
            if let Some(which) = Self::fid_used(&op) {
                if *self.state_of(which) != FidState::Absent
                    || !matches!(
                        op,
                        Op::Write { .. }
                            | Op::Read { .. }
                            | Op::Stat
                            | Op::Fsync
                            | Op::Append { .. }
                            | Op::WriteTemp { .. }
                    )
                {
                    *self.state_of(which) = FidState::Uncertain;
                }
            }
            if let Op::Lock { start, .. } = op {
                self.locks.remove(&start);
            }
            // A flushed rename of the directory may have happened: the fid beneath it is
            // unsure too (the session keeps its old path).
            if matches!(op, Op::RenameSub { .. }) {
                self.moved = FidState::Uncertain;
            }
            return Ok(None);
        }
        match op {
            Op::Attach => {
                self.root = if ok {
                    FidState::Walked
                } else {
                    FidState::Absent
                }
            }
            Op::WalkDir => {
                self.dir = if ok {
                    FidState::Walked
                } else {
                    FidState::Absent
                }
            }
            Op::WalkData => {
                self.data = if ok {
                    FidState::Walked
                } else {
                    FidState::Absent
                }
            }
            Op::OpenData { .. } => {
                // Open only if the client saw it succeed (soft mode may fail an open the server
                // ran on a lost link: the session then keeps the fid as walked).
                if let Some(Msg::Ropen(Ropen { qid, .. }) | Msg::Rlopen(Rlopen { qid, .. })) =
                    effective.filter(|_| ok)
                {
                    self.data = FidState::Open;
                    self.data_qid = Some(*qid);
                }
            }
            Op::Read { off, len } => {
                if let Msg::Rread(r) = reply {
                    let file = &self.files[&b"data"[..]];
                    let start = (off as usize).min(file.len());
                    let end = (start + len as usize).min(file.len());
                    let got = &r.data.0[..];
                    if got.len() > end - start || got != &file[start..start + got.len()] {
                        return Err(format!(
                            "lane {}: read {len} at {off} returned {} bytes that differ from the {} written",
                            self.id,
                            got.len(),
                            end - start
                        ));
                    }
                }
            }
            Op::Stat => {
                let (qid, length) = match reply {
                    Msg::Rgetattr(a) => (a.qid, a.size),
                    Msg::Rstat(s) => (s.stat.qid, s.stat.length),
                    _ => return Ok(None),
                };
                let want = self.files[&b"data"[..]].len() as u64;
                if length != want {
                    return Err(format!(
                        "lane {}: size {length}, model says {want}",
                        self.id
                    ));
                }
                if self.data_qid.is_some_and(|q| q.path != qid.path) {
                    return Err(format!(
                        "lane {}: the open data fid now names another file",
                        self.id
                    ));
                }
            }
            Op::WalkLog => {
                self.log = if ok {
                    FidState::Walked
                } else {
                    FidState::Absent
                }
            }
            Op::OpenLog => {
                if ok {
                    self.log = FidState::Open;
                }
            }
            Op::WalkTemp => {
                self.temp_state = if ok {
                    FidState::Walked
                } else {
                    FidState::Absent
                }
            }
            Op::CreateTemp { name, .. } => {
                if ok {
                    self.temp_state = FidState::Open;
                    self.temp_name = Some(name);
                }
            }
            Op::RenameTemp { to } => {
                if executed {
                    // The file has its new name whatever the client was told.
                    self.temp_name = Some(to);
                }
                if executed && !ok {
                    // Renamed, but the session was told it failed: it still has the old path.
                    self.temp_state = FidState::Uncertain;
                }
            }
            // Tremove forgets the fid whatever happened; so does a clunk.
            Op::RemoveTemp | Op::ClunkTemp => {
                self.temp_state = FidState::Absent;
                self.forget_temp_name();
            }
            Op::WalkList => {
                self.list = if ok {
                    FidState::Walked
                } else {
                    FidState::Absent
                }
            }
            Op::OpenList => {
                if ok {
                    self.list = FidState::Open;
                }
            }
            Op::ReadList { offset } => return self.listing(offset, reply),
            Op::ClunkList => self.list = FidState::Absent,
            Op::Lock { start, unlock } => {
                if let (Msg::Rlock(l), true) = (reply, ok) {
                    // An old connection lingering half-open may still hold this lane's locks.
                    if l.status != 0 && (self.disturbed || self.locks_stolen) {
                        return Ok(None);
                    }
                    if l.status != 0 {
                        return Err(format!(
                            "lane {}: lock at {start} refused (status {})",
                            self.id, l.status
                        ));
                    }
                    if unlock {
                        self.locks.remove(&start);
                    } else {
                        self.locks.insert(start);
                    }
                }
            }
            Op::ClunkData => {
                self.data = FidState::Absent;
                self.data_qid = None;
            }
            // The fid stays open on the unlinked file: it is clunked next.
            Op::UnlinkTemp => {
                if executed {
                    self.forget_temp_name();
                }
            }
            Op::WalkMissing => {
                // Partial: the first name's qid only, and no fid (temp stays absent).
                if let Msg::Rwalk(w) = reply {
                    if w.wqids.len() != 1 {
                        return Err(format!(
                            "lane {}: a walk failing at its second name answered {} qids",
                            self.id,
                            w.wqids.len()
                        ));
                    }
                }
                self.temp_state = FidState::Absent;
            }
            Op::WalkDeep { first } => {
                self.deep = match (ok, first) {
                    (true, _) => FidState::Walked,
                    (false, true) => FidState::Absent,
                    (false, false) => FidState::Uncertain,
                };
                self.deep_halfway = ok && first;
            }
            Op::WalkVictim => {
                self.victim = if ok {
                    FidState::Walked
                } else {
                    FidState::Absent
                }
            }
            Op::OpenVictim => {
                self.victim = if ok {
                    FidState::Open
                } else {
                    FidState::Uncertain
                }
            }
            Op::WalkExcl => {
                self.excl = if ok {
                    FidState::Walked
                } else {
                    FidState::Absent
                }
            }
            Op::OpenExcl => {
                self.excl = if ok {
                    FidState::Open
                } else {
                    FidState::Uncertain
                }
            }
            Op::WalkSub => {
                self.sub = if ok {
                    FidState::Walked
                } else {
                    FidState::Absent
                }
            }
            Op::RenameSub { .. } => {
                if executed && !ok {
                    // Renamed, but the session was told it failed: its paths are the old ones.
                    self.sub = FidState::Uncertain;
                    self.moved = FidState::Uncertain;
                }
            }
            Op::WalkMoved => {
                self.moved = if ok {
                    FidState::Walked
                } else {
                    FidState::Absent
                };
                if let Msg::Rwalk(w) = reply {
                    self.moved_qid = w.wqids.last().map(|q| q.path);
                }
            }
            Op::OpenMoved => {
                self.moved = if ok {
                    FidState::Open
                } else {
                    FidState::Uncertain
                }
            }
            Op::StatMoved => {
                let qid = match reply {
                    Msg::Rgetattr(a) => a.qid,
                    Msg::Rstat(s) => s.stat.qid,
                    _ => return Ok(None),
                };
                if self.moved_qid.is_some_and(|p| p != qid.path) {
                    return Err(format!(
                        "lane {}: the fid beneath the renamed directory now names another file",
                        self.id
                    ));
                }
            }
            Op::StatDeep | Op::StatVictim | Op::StatExcl => {
                if !is_error(reply) && !matches!(reply, Msg::Rgetattr(_) | Msg::Rstat(_)) {
                    return Err(format!("lane {}: stat answered {reply:?}", self.id));
                }
            }
            Op::Truncate { .. }
            | Op::Write { .. }
            | Op::Append { .. }
            | Op::WriteTemp { .. }
            | Op::Mkdir { .. }
            | Op::Fsync
            | Op::Forget(_) => {}
            // (Taken by `complete_shared` before this.)
            Op::WalkShared
            | Op::WalkLock { .. }
            | Op::TakeLock { .. }
            | Op::DropLock { .. }
            | Op::WalkSharedFile
            | Op::OpenSharedFile
            | Op::WriteBlock { .. }
            | Op::ReadBlock { .. }
            | Op::FsyncShared => {}
            Op::MakeEntry { kind, .. } => {
                let want = match kind {
                    Entry::Symlink => MsgType::Rsymlink,
                    Entry::Fifo => MsgType::Rmknod,
                    Entry::Link => MsgType::Rlink,
                };
                if !is_error(reply) && reply.msg_type() != want {
                    return Err(format!("lane {}: {op:?} answered {reply:?}", self.id));
                }
            }
        }
        Ok(None)
    }

    /// The model's files change exactly as the server changed them.
    fn apply_to_files(&mut self, op: &Op, effective: Option<&Msg>) -> Result<(), String> {
        let Some(done) = effective else {
            return Ok(());
        };
        match (op, done) {
            (Op::Write { off, data }, Msg::Rwrite(w)) => {
                let n = w.count as usize;
                if n > data.len() || n == 0 {
                    return Err(format!(
                        "lane {}: write of {} answered {n}",
                        self.id,
                        data.len()
                    ));
                }
                if !std::mem::take(&mut self.write_applied) {
                    self.edit_data(|f| write_at(f, *off, &data[..n]));
                }
            }
            (Op::Append { data }, Msg::Rwrite(w)) => {
                let n = (w.count as usize).min(data.len());
                self.files
                    .get_mut(&b"log"[..])
                    .expect("log")
                    .extend_from_slice(&data[..n]);
            }
            (Op::WriteTemp { data }, Msg::Rwrite(w)) => {
                let applied = std::mem::take(&mut self.write_applied);
                if let Some(name) = self
                    .temp_name
                    .as_ref()
                    .filter(|n| self.files.contains_key(*n) && !applied)
                {
                    let n = (w.count as usize).min(data.len());
                    write_at(self.files.get_mut(name).expect("temp file"), 0, &data[..n]);
                }
            }
            // An ORCLOSE file goes when its fid is clunked, by whichever connection held it open
            // (an old one that hangs up in order, too): the model does not follow its contents.
            (
                Op::CreateTemp {
                    name,
                    orclose: true,
                    ..
                },
                _,
            ) => {
                self.orclose_names.insert(name.clone());
            }
            (Op::CreateTemp { name, .. }, _) => {
                self.files.insert(name.clone(), Vec::new());
            }
            (Op::RenameTemp { to }, _) => {
                if let Some(name) = &self.temp_name {
                    match self.files.remove(name) {
                        Some(contents) => {
                            self.files.insert(to.clone(), contents);
                        }
                        None => {
                            self.orclose_names.insert(to.clone());
                        }
                    }
                }
            }
            (Op::OpenData { trunc: true }, Msg::Ropen(_) | Msg::Rlopen(_)) => {
                self.edit_data(Vec::clear);
            }
            (Op::Truncate { len }, _) => {
                self.edit_data(|f| f.resize(*len as usize, 0));
            }
            (Op::RemoveTemp | Op::UnlinkTemp, _) => {
                if let Some(name) = &self.temp_name {
                    self.files.remove(name);
                }
            }
            (Op::Mkdir { name }, _) => {
                self.subdirs.insert(name.clone());
            }
            (Op::MakeEntry { name, .. }, _) => {
                self.entries.insert(name.clone());
            }
            (Op::RenameSub { to }, _) => {
                self.subdirs.remove(&self.sub_name);
                self.subdirs.insert(to.clone());
                self.sub_name = to.clone();
            }
            _ => {}
        }
        Ok(())
    }

    /// One read of a directory listing: continue, or compare the whole listing with the model.
    fn listing(&mut self, offset: u64, reply: &Msg) -> Result<Option<(Msg, Op)>, String> {
        let (names, next) = match reply {
            Msg::Rread(r) => {
                let names: Result<Vec<_>, _> = dir::stat_records(&r.data.0, self.dialect)
                    .map(|s| s.map(|s| s.name.to_vec()))
                    .collect();
                (
                    names.map_err(|e| e.to_string())?,
                    offset + r.data.0.len() as u64,
                )
            }
            Msg::Rreaddir(r) => {
                let entries: Result<Vec<_>, _> = dir::dirents(&r.data.0).collect();
                let entries = entries.map_err(|e| e.to_string())?;
                let next = entries.last().map_or(offset, |e| e.offset);
                let names = entries
                    .into_iter()
                    .map(|e| e.name.to_vec())
                    .filter(|n| n != b"." && n != b"..")
                    .collect();
                (names, next)
            }
            // The listing position was lost with a link: start over.
            _ => {
                self.listed.clear();
                return Ok(None);
            }
        };
        if names.is_empty() {
            let want = self.expected_names();
            let got = std::mem::take(&mut self.listed);
            if got != want && !self.listing_churn {
                return Err(format!(
                    "lane {}: listing {:?} but the model has {:?}",
                    self.id,
                    got.iter()
                        .map(|n| String::from_utf8_lossy(n).into_owned())
                        .collect::<Vec<_>>(),
                    want.iter()
                        .map(|n| String::from_utf8_lossy(n).into_owned())
                        .collect::<Vec<_>>()
                ));
            }
            return Ok(Some((
                Tclunk {
                    fid: self.list_fid(),
                }
                .into(),
                Op::ClunkList,
            )));
        }
        self.listed.extend(
            names
                .into_iter()
                .filter(|n| !self.orclose_names.contains(n)),
        );
        Ok(Some(self.read_list(next)))
    }
}

/// One of a lane's unsynced writes on its data fid, as the session keeps them.
#[derive(Clone, PartialEq, Eq)]
pub enum KeptStep {
    Write(u64, Vec<u8>),
}

impl std::fmt::Debug for KeptStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeptStep::Write(off, data) => write!(f, "a write of {} bytes at {off}", data.len()),
        }
    }
}

impl KeptStep {
    pub fn apply(&self, file: &mut Vec<u8>) {
        match self {
            KeptStep::Write(off, data) => write_at(file, *off, data),
        }
    }
}

pub(super) fn write_at(file: &mut Vec<u8>, off: u64, data: &[u8]) {
    let end = off as usize + data.len();
    if file.len() < end {
        file.resize(end, 0);
    }
    file[off as usize..end].copy_from_slice(data);
}
