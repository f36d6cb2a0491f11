//! The recovery pipeline: after a new link comes up, re-version, attach once per root on a
//! proxy-owned fid, then rebuild every client fid — walk from its root in chunks of at most 16
//! names, reopen it (truncation and create flags stripped), restore a directory's read position,
//! replay its locks — with up to `recovery_window` requests in flight. Fids that cannot be
//! rebuilt become stale. Finally the proxy fids are clunked and the session resumes.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use bytes::{Bytes, BytesMut};
use p9_core::{
    qid_type, set_tag, Data, Dialect, Fcall, Fid, Header, Msg, MsgType, Qid, Tattach, Tauth,
    Tclunk, Tlopen, Topen, Tread, Tversion, Twalk, Twrite, WalkNames, MAXWELEM, NOFID, NOTAG,
};

use crate::auth::{AuthConversation, AuthInput, AuthStep};
use crate::event::LinkId;
use crate::fids::{flag, FidKind, LostReason, RootId};
use crate::hash::HashMap;
use crate::marks::Mark;
use crate::replay::reopen_mode;
use crate::session::{LinkState, Session};
use crate::time::Instant;

/// Progress of one rebuild.
pub(crate) struct Recovery {
    pub link: LinkId,
    pub started: Instant,
    /// The last time a reply arrived (the watchdog measures from here).
    pub last_progress: Instant,
    phase: Phase,
    next_tag: u16,
    /// Requests in flight, by tag: what was sent and what its reply is for.
    waiting: HashMap<u16, (MsgType, Wait)>,
    roots: Vec<RootAttach>,
    todo: VecDeque<u32>,
    /// Jobs waiting to retry an exclusive open.
    delayed: Vec<(Instant, Job)>,
    rebuilt: usize,
    stale: usize,
    /// Fids the client let go of while this recovery ran (soft mode answers clunks and failed
    /// removes at once): the new server may have them rebuilt, so they are clunked there.
    pub forgotten: Vec<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Version,
    Attach,
    Fids,
    Clunk,
}

/// Recovery's own fids are taken below this first (see `begin`).
const PROXY_FID_LIMIT: u32 = 1024;

struct RootAttach {
    root: RootId,
    /// The proxy-owned fid attached to this root on the new link.
    pfid: u32,
    qid: Option<Qid>,
    failed: bool,
    /// The server's error, when it refused the attach.
    error: Option<String>,
    /// For an authenticated root: the proxy-owned auth fid and the conversation on it.
    afid: Option<u32>,
    conversation: Option<Box<dyn AuthConversation>>,
}

enum Wait {
    Version,
    /// Tauth for a root, then the reads and writes of its conversation.
    Auth(usize),
    AuthIo(usize),
    Attach(usize),
    Job(Job),
    Clunk,
}

/// Rebuilding one client fid.
struct Job {
    fid: u32,
    step: Step,
    /// Path from the root, and how many names are walked so far.
    names: Vec<Bytes>,
    walked: usize,
    /// The qid the walk arrived at.
    qid: Qid,
    tries: u32,
}

#[derive(Clone, Copy)]
enum Step {
    Walk { chunk: usize },
    Open,
    FastForward { at: u64 },
    Lock { index: usize },
}

impl Recovery {
    pub fn next_retry(&self) -> Option<Instant> {
        self.delayed.iter().map(|(t, _)| *t).min()
    }
}

/// Whether a reopened file is still the file the fid had open.
fn same_file(recorded: Qid, found: Qid) -> bool {
    recorded.path == found.path && recorded.typ == found.typ
}

impl Session {
    pub(crate) fn start_recovery(&mut self, now: Instant, link: LinkId) {
        let neg = self.negotiated.clone().expect("recovery needs a version");
        let mut r = Recovery {
            link,
            started: now,
            last_progress: now,
            phase: Phase::Version,
            next_tag: 0,
            waiting: HashMap::default(),
            roots: Vec::new(),
            todo: VecDeque::new(),
            delayed: Vec::new(),
            rebuilt: 0,
            stale: 0,
            forgotten: Vec::new(),
        };
        let tversion = Tversion {
            msize: neg.msize,
            version: neg.version,
        };
        let frame = Fcall::new(NOTAG, tversion)
            .to_frame()
            .expect("Tversion encodes");
        r.waiting.insert(NOTAG, (MsgType::Tversion, Wait::Version));
        self.emit(crate::Output::ToLink { link, frame });
        self.recovery = Some(r);
    }

    fn send(&mut self, r: &mut Recovery, msg: impl Into<Msg>, wait: Wait) {
        let msg = msg.into();
        let tag = self.take_tag(r);
        let ty = msg.msg_type();
        let frame = Fcall { tag, msg }
            .to_frame()
            .expect("recovery requests encode");
        self.send_frame(r, tag, ty, frame, wait);
    }

    fn take_tag(&mut self, r: &mut Recovery) -> u16 {
        loop {
            let tag = r.next_tag;
            r.next_tag = r.next_tag.wrapping_add(1);
            if tag != NOTAG && !r.waiting.contains_key(&tag) {
                return tag;
            }
        }
    }

    fn send_frame(&mut self, r: &mut Recovery, tag: u16, ty: MsgType, frame: Bytes, wait: Wait) {
        r.waiting.insert(tag, (ty, wait));
        self.emit(crate::Output::ToLink {
            link: r.link,
            frame,
        });
    }

    /// A reply on the link being rebuilt.
    pub(crate) fn recovery_reply(&mut self, now: Instant, link: LinkId, frame: Bytes) {
        let Some(mut r) = self.recovery.take() else {
            return;
        };
        let outcome = self.recovery_step(now, &mut r, &frame);
        if let Err(what) = outcome {
            self.event(crate::Event::ProtocolViolation {
                peer: crate::Peer::Server,
                what: what.clone(),
            });
            return self.abandon_link(now, link, what);
        }
        if self.link == (LinkState::Recovering { link }) {
            self.pump(now, r);
        }
    }

    /// Take one reply; an `Err` is a reason to drop the link.
    fn recovery_step(
        &mut self,
        now: Instant,
        r: &mut Recovery,
        frame: &Bytes,
    ) -> Result<(), String> {
        let header = Header::parse(frame).map_err(|e| alloc::format!("bad frame: {e}"))?;
        let Some((ty, wait)) = r.waiting.remove(&header.tag) else {
            return Err(alloc::format!(
                "reply to unknown tag {} during recovery",
                header.tag
            ));
        };
        let dialect = self.dialect().unwrap_or(Dialect::DotL);
        // An error in any dialect's shape is an error.
        let reshaped;
        let frame = match crate::reply::is_error_type(header.msg_type) {
            true => {
                reshaped = crate::reply::reshape_error(frame, Some(dialect))
                    .ok_or_else(|| String::from("undecodable error reply"))?
                    .0;
                &reshaped
            }
            false => frame,
        };
        let reply = Fcall::decode(frame, dialect)
            .map_err(|e| alloc::format!("{e}"))?
            .msg;
        let reply_ty = reply.msg_type();
        let is_error = matches!(reply_ty, MsgType::Rerror | MsgType::Rlerror);
        if Some(reply_ty) != ty.reply() && !is_error {
            return Err(alloc::format!(
                "{} answered with {}",
                ty.name(),
                reply_ty.name()
            ));
        }
        r.last_progress = now;
        match wait {
            Wait::Version => {
                let neg = self.negotiated.as_ref().expect("recovery needs a version");
                let Msg::Rversion(rv) = reply else {
                    return Err("Tversion refused".into());
                };
                if rv.version != neg.version {
                    return Err(alloc::format!(
                        "server now speaks {:?}, not {:?}",
                        rv.version,
                        neg.version
                    ));
                }
                if rv.msize < 256 {
                    return Err(alloc::format!("server msize {} is too small", rv.msize));
                }
                self.server_msize = rv.msize.min(neg.msize);
                self.begin_attach(r);
            }
            Wait::Auth(i) => match reply {
                Msg::Rauth(_) => {
                    let root = self.fids.root(r.roots[i].root);
                    let conversation = self
                        .authenticator
                        .as_ref()
                        .map(|a| a.converse(&root.uname, &root.aname));
                    r.roots[i].conversation = conversation;
                    self.auth_step(r, i, AuthInput::Start);
                }
                _ => r.roots[i].failed = true,
            },
            Wait::AuthIo(i) => match &reply {
                Msg::Rwrite(w) => self.auth_step(r, i, AuthInput::Wrote(w.count)),
                Msg::Rread(d) => self.auth_step(r, i, AuthInput::Read(&d.data.0)),
                _ => r.roots[i].failed = true,
            },
            Wait::Attach(i) => match reply {
                Msg::Rattach(a) => r.roots[i].qid = Some(a.qid),
                other => {
                    r.roots[i].failed = true;
                    r.roots[i].error = crate::reply::describe_error(&other);
                }
            },
            Wait::Job(job) => self.job_reply(now, r, job, &reply),
            Wait::Clunk => {}
        }
        Ok(())
    }

    fn begin_attach(&mut self, r: &mut Recovery) {
        r.phase = Phase::Attach;
        // A root is needed if a fid that can be rebuilt uses it; an authenticated one only if
        // there is an authenticator to redo the authentication.
        let can_auth = self.authenticator.is_some();
        let mut needed: Vec<RootId> = self
            .fids
            .fids
            .values()
            .filter(|f| matches!(f.kind, FidKind::Walked | FidKind::Open))
            .map(|f| f.root)
            .filter(|&root| can_auth || !self.fids.root(root).authenticated)
            .collect();
        needed.sort_unstable();
        needed.dedup();
        // The recovery's own fids: numbers the client does not use, from 1023 down (clients
        // number fids from 0 up, and some servers refuse fids of 1024 and more: nfs-ganesha
        // answers ERANGE), then from the top of the range.
        let mut candidates = (0..PROXY_FID_LIMIT)
            .rev()
            .chain((PROXY_FID_LIMIT..NOFID.0).rev());
        let mut proxy_fid = |fids: &crate::fids::FidTable| {
            candidates
                .by_ref()
                .find(|&f| fids.get(f).is_none())
                .expect("the client cannot use every fid")
        };
        for root in needed {
            let pfid = proxy_fid(&self.fids);
            let afid = self
                .fids
                .root(root)
                .authenticated
                .then(|| proxy_fid(&self.fids));
            r.roots.push(RootAttach {
                root,
                pfid,
                qid: None,
                failed: false,
                error: None,
                afid,
                conversation: None,
            });
        }
        for i in 0..r.roots.len() {
            let root = self.fids.root(r.roots[i].root);
            match r.roots[i].afid {
                Some(afid) => {
                    let auth = Tauth {
                        afid: Fid(afid),
                        uname: root.uname.clone(),
                        aname: root.aname.clone(),
                        n_uname: root.n_uname,
                    };
                    self.send(r, auth, Wait::Auth(i));
                }
                None => self.attach_root(r, i),
            }
        }
    }

    fn attach_root(&mut self, r: &mut Recovery, i: usize) {
        let root = self.fids.root(r.roots[i].root);
        let attach = Tattach {
            fid: Fid(r.roots[i].pfid),
            afid: r.roots[i].afid.map_or(NOFID, Fid),
            uname: root.uname.clone(),
            aname: root.aname.clone(),
            n_uname: root.n_uname,
        };
        self.marks.hit(Mark::RecoveryAttach);
        self.send(r, attach, Wait::Attach(i));
    }

    /// Carry the authentication conversation of root `i` one step. Auth files are streams,
    /// so reads and writes go at offset 0.
    fn auth_step(&mut self, r: &mut Recovery, i: usize, input: AuthInput<'_>) {
        let (Some(afid), Some(conversation)) = (r.roots[i].afid, r.roots[i].conversation.as_mut())
        else {
            r.roots[i].failed = true;
            return;
        };
        match conversation.step(input) {
            AuthStep::Write(data) => {
                let write = Twrite {
                    fid: Fid(afid),
                    offset: 0,
                    data: Data(data),
                };
                self.send(r, write, Wait::AuthIo(i));
            }
            AuthStep::Read(count) => {
                let read = Tread {
                    fid: Fid(afid),
                    offset: 0,
                    count: count.min(self.server_msize().saturating_sub(p9_core::IOHDRSZ)),
                };
                self.send(r, read, Wait::AuthIo(i));
            }
            AuthStep::Done => self.attach_root(r, i),
            AuthStep::Fail => r.roots[i].failed = true,
        }
    }

    /// Move the rebuild forward: start jobs while the window allows, change phase when a
    /// phase is done, finish when everything is.
    fn pump(&mut self, now: Instant, mut r: Recovery) {
        let window = self.cfg.recovery_window.max(1);
        loop {
            match r.phase {
                Phase::Version => break,
                Phase::Attach => {
                    if !r.waiting.is_empty() {
                        break;
                    }
                    r.phase = Phase::Fids;
                    let mut fids: Vec<u32> = self.fids.fids.keys().copied().collect();
                    fids.sort_unstable();
                    r.todo = fids.into();
                }
                Phase::Fids => {
                    while r.waiting.len() < window {
                        let Some(fid) = r.todo.pop_front() else {
                            break;
                        };
                        self.start_job(&mut r, fid);
                    }
                    if !r.todo.is_empty() || !r.waiting.is_empty() || !r.delayed.is_empty() {
                        break;
                    }
                    r.phase = Phase::Clunk;
                    // The proxy's own fids: attached roots, and every auth fid the server
                    // granted (a failed conversation's too); and fids the client let go of
                    // meanwhile (a clunk of one the server does not have just fails).
                    let pfids: Vec<u32> = r
                        .roots
                        .iter()
                        .filter(|a| a.qid.is_some())
                        .map(|a| a.pfid)
                        .chain(
                            r.roots
                                .iter()
                                .filter(|a| a.conversation.is_some())
                                .filter_map(|a| a.afid),
                        )
                        .chain(core::mem::take(&mut r.forgotten))
                        .collect();
                    for pfid in pfids {
                        self.send(&mut r, Tclunk { fid: Fid(pfid) }, Wait::Clunk);
                    }
                }
                Phase::Clunk => {
                    // Fids the client let go of after this phase began.
                    for fid in core::mem::take(&mut r.forgotten) {
                        self.send(&mut r, Tclunk { fid: Fid(fid) }, Wait::Clunk);
                    }
                    if !r.waiting.is_empty() {
                        break;
                    }
                    let link = r.link;
                    self.event(crate::Event::Recovered {
                        fids: r.rebuilt,
                        stale: r.stale,
                        elapsed: now.since(r.started),
                    });
                    return self.link_recovered(now, link);
                }
            }
        }
        self.recovery = Some(r);
    }

    /// Time passed: retry the exclusive opens that are due.
    pub(crate) fn recovery_timeout(&mut self, now: Instant) {
        let Some(mut r) = self.recovery.take() else {
            return;
        };
        let (due, later): (Vec<_>, Vec<_>) = core::mem::take(&mut r.delayed)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        r.delayed = later;
        for (_, job) in due {
            self.job_open(&mut r, job);
        }
        self.pump(now, r);
    }

    fn start_job(&mut self, r: &mut Recovery, fid: u32) {
        let Some(rec) = self.fids.get(fid) else {
            return;
        };
        let why = match rec.kind {
            FidKind::Lost(_) => return,
            FidKind::Auth => Some("authentication fids cannot be rebuilt"),
            FidKind::Xattr => Some("extended-attribute fids cannot be rebuilt"),
            _ if self.fids.root(rec.root).authenticated && self.authenticator.is_none() => {
                Some("attached with authentication and no authenticator is configured")
            }
            _ if rec.flags & flag::LOCKS_OVERFLOWED != 0 => Some("too many locks to replay"),
            _ => None,
        };
        if let Some(why) = why {
            return self.job_stale(r, fid, false, why);
        }
        let Some(attach) = r.roots.iter().find(|a| a.root == rec.root) else {
            return self.job_stale(r, fid, false, "its root was not re-attached");
        };
        let Some(root_qid) = attach.qid.filter(|_| !attach.failed) else {
            let why = match &attach.error {
                Some(e) => alloc::format!("the server refused to re-attach its root: {e}"),
                None => "re-attaching its root failed".into(),
            };
            return self.job_stale(r, fid, false, why);
        };
        let names = self
            .fids
            .names
            .path(rec.node)
            .into_iter()
            .map(Bytes::copy_from_slice)
            .collect();
        let job = Job {
            fid,
            step: Step::Walk { chunk: 0 },
            names,
            walked: 0,
            qid: root_qid,
            tries: 0,
        };
        self.job_walk(r, job);
    }

    fn job_walk(&mut self, r: &mut Recovery, mut job: Job) {
        if job.walked > 0 {
            self.marks.hit(Mark::RecoveryChunkedWalk);
        }
        let end = (job.walked + MAXWELEM).min(job.names.len());
        let chunk = &job.names[job.walked..end];
        let from = if job.walked == 0 {
            let root = self.fids.get(job.fid).map(|f| f.root);
            r.roots
                .iter()
                .find(|a| Some(a.root) == root)
                .map_or(NOFID.0, |a| a.pfid)
        } else {
            job.fid
        };
        let walk = Twalk {
            fid: Fid(from),
            newfid: Fid(job.fid),
            wnames: WalkNames::new(chunk).expect("at most 16 stored names"),
        };
        job.step = Step::Walk {
            chunk: end - job.walked,
        };
        self.send(r, walk, Wait::Job(job));
    }

    fn job_reply(&mut self, now: Instant, r: &mut Recovery, mut job: Job, reply: &Msg) {
        let fid = job.fid;
        match job.step {
            Step::Walk { chunk } => {
                let Msg::Rwalk(w) = reply else {
                    // Only "not found" means the path is gone; any other error is the server's
                    // own (out of fids, permission), and is reported as it said it.
                    if !crate::reply::is_not_found(reply) {
                        let why = alloc::format!(
                            "the server refused to walk it: {}",
                            crate::reply::describe_error(reply).unwrap_or_default()
                        );
                        return self.job_stale(r, fid, job.walked > 0, why);
                    }
                    self.marks.hit(Mark::RecoveryPathGone);
                    return self.job_stale(r, fid, job.walked > 0, "its path no longer exists");
                };
                if w.wqids.len() < chunk {
                    self.marks.hit(Mark::RecoveryPathGone);
                    return self.job_stale(r, fid, job.walked > 0, "its path no longer exists");
                }
                if let Some(q) = w.wqids.last() {
                    job.qid = q;
                }
                job.walked += chunk;
                if job.walked < job.names.len() {
                    return self.job_walk(r, job);
                }
                let Some(rec) = self.fids.get_mut(fid) else {
                    return;
                };
                if rec.kind != FidKind::Open {
                    // An unopened fid simply follows its path.
                    rec.qid = job.qid;
                    r.rebuilt += 1;
                    return;
                }
                if !same_file(rec.qid, job.qid) {
                    self.marks.hit(Mark::RecoveryQidMismatch);
                    return self.job_stale(r, fid, true, "the file at its path was replaced");
                }
                self.job_open(r, job);
            }
            Step::Open => {
                let qid = match reply {
                    Msg::Ropen(o) => Some(o.qid),
                    Msg::Rlopen(o) => Some(o.qid),
                    _ => None,
                };
                let Some(rec) = self.fids.get(fid) else {
                    return;
                };
                let exclusive = rec.qid.typ & qid_type::EXCL != 0;
                match qid {
                    Some(q) if same_file(rec.qid, q) => self.job_after_open(r, job),
                    Some(_) => {
                        self.marks.hit(Mark::RecoveryQidMismatch);
                        self.job_stale(r, fid, true, "the file at its path was replaced")
                    }
                    None if exclusive && job.tries < self.cfg.exclusive_open_retries => {
                        job.tries += 1;
                        self.marks.hit(Mark::RecoveryExclusiveRetry);
                        r.delayed.push((now + self.cfg.exclusive_retry_delay, job));
                    }
                    None => {
                        let why = match crate::reply::describe_error(reply) {
                            Some(e) => alloc::format!("the server refused to reopen it: {e}"),
                            None => "reopening it failed".into(),
                        };
                        self.job_stale(r, fid, true, why)
                    }
                }
            }
            Step::FastForward { at } => {
                let got = match reply {
                    Msg::Rread(d) => d.data.0.len() as u64,
                    _ => 0,
                };
                let target = self.fids.get(fid).map_or(0, |f| f.dir_offset);
                if got == 0 {
                    // The listing is shorter now; the position cannot be restored.
                    return self.job_locks(r, job, 0);
                }
                if at + got >= target {
                    if let Some(rec) = self.fids.get_mut(fid) {
                        rec.flags |= flag::FAST_FORWARDED;
                    }
                    return self.job_locks(r, job, 0);
                }
                self.job_read_dir(r, job, at + got, target);
            }
            Step::Lock { index } => match reply {
                Msg::Rlock(l) if l.status == p9_core::lock_status::SUCCESS => {
                    self.job_locks(r, job, index + 1)
                }
                _ => {
                    self.marks.hit(Mark::RecoveryLockRefused);
                    self.job_stale(r, fid, true, "a lock it held could not be re-acquired")
                }
            },
        }
    }

    fn job_open(&mut self, r: &mut Recovery, mut job: Job) {
        let Some(rec) = self.fids.get(job.fid) else {
            return;
        };
        let mode = reopen_mode(rec);
        self.marks.hit(Mark::RecoveryReopen);
        job.step = Step::Open;
        if rec.flags & flag::DOTL_FLAGS != 0 {
            let open = Tlopen {
                fid: Fid(job.fid),
                flags: mode,
            };
            self.send(r, open, Wait::Job(job));
        } else {
            let open = Topen {
                fid: Fid(job.fid),
                mode: mode as u8,
            };
            self.send(r, open, Wait::Job(job));
        }
    }

    /// After the reopen: restore a directory's position, then replay locks.
    fn job_after_open(&mut self, r: &mut Recovery, job: Job) {
        let Some(rec) = self.fids.get_mut(job.fid) else {
            return;
        };
        if !rec.qid.is_dir() || rec.dir_offset == 0 {
            return self.job_locks(r, job, 0);
        }
        if self.negotiated.as_ref().map(|n| n.dialect) == Some(Dialect::DotL) {
            // .L readdir offsets are the server's cookies: valid again on the same backend.
            rec.flags |= flag::FAST_FORWARDED;
            return self.job_locks(r, job, 0);
        }
        let target = rec.dir_offset;
        self.marks.hit(Mark::RecoveryFastForward);
        self.job_read_dir(r, job, 0, target);
    }

    /// 9P2000 directories are read only sequentially: read (and drop) up to the client's offset.
    fn job_read_dir(&mut self, r: &mut Recovery, mut job: Job, at: u64, target: u64) {
        let most = self.server_msize().saturating_sub(p9_core::IOHDRSZ) as u64;
        let count = (target - at).min(most) as u32;
        job.step = Step::FastForward { at };
        let read = Tread {
            fid: Fid(job.fid),
            offset: at,
            count,
        };
        self.send(r, read, Wait::Job(job));
    }

    fn job_locks(&mut self, r: &mut Recovery, mut job: Job, index: usize) {
        let next = self
            .fids
            .get(job.fid)
            .and_then(|f| f.locks.as_ref())
            .and_then(|l| l.0.get(index))
            .cloned();
        let Some(lock) = next else {
            r.rebuilt += 1;
            return;
        };
        self.marks.hit(Mark::RecoveryLockReplay);
        let tag = self.take_tag(r);
        let mut frame = BytesMut::from(&lock[..]);
        set_tag(&mut frame, tag).expect("a recorded Tlock has a header");
        job.step = Step::Lock { index };
        self.send_frame(r, tag, MsgType::Tlock, frame.freeze(), Wait::Job(job));
    }

    /// The fid cannot be rebuilt. If this link already knows it, clunk it there, so the
    /// server does not keep a fid the client will reuse.
    fn job_stale(
        &mut self,
        r: &mut Recovery,
        fid: u32,
        on_server: bool,
        why: impl Into<alloc::borrow::Cow<'static, str>>,
    ) {
        r.stale += 1;
        self.lose_fid(fid, LostReason::Stale, why);
        if on_server {
            self.send(r, Tclunk { fid: Fid(fid) }, Wait::Clunk);
        }
    }
}
