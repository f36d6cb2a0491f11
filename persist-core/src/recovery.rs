//! The recovery pipeline: after a new link comes up, re-version, attach once per root on a
//! proxy-owned fid (with a mux's service aname, walked on to its service path); settle, by
//! looking at the names they involve, the creates, removes, links and renames that were in
//! flight when the link died (`crate::resolve`: a proxy-owned probe fid walked to each name,
//! one request at a time); then rebuild every client fid — walk it from its root in chunks of
//! at most 16 names, reopen it (truncation and create flags stripped), write back its unsynced
//! writes (the final image of those kept), restore a directory's read position, replay its
//! locks — with up to `recovery_window` requests in flight. Fids that cannot be rebuilt become
//! stale. Finally the proxy fids are clunked and the session resumes.
//!
//! A [`Recovery`] is a sub-machine of the session with inputs of its own (the link's replies,
//! time) and outputs of its own (frames for the link, lost-fid events, and a [`Progress`]);
//! what it needs of the session — the fid table, the negotiated version, the marks — it is
//! lent for each input in a [`Cx`].

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use bytes::{Bytes, BytesMut};
use p9_core::{
    qid_type, set_tag, Data, Dialect, Fcall, Fid, Header, Msg, MsgType, Qid, Tattach, Tauth,
    Tclunk, Tlopen, Topen, Tread, Tversion, Twalk, Twrite, WalkNames, MAXWELEM, NOFID, NOTAG,
};

use crate::auth::{AuthConversation, AuthInput, AuthStep, Authenticator};
use crate::config::Config;
use crate::endpoint::ServiceRoot;
use crate::event::{Event, LinkId, Output};
use crate::fids::{flag, FidKind, FidTable, LostReason, OpenMode, RootId};
use crate::hash::HashMap;
use crate::marks::{Mark, Marks};
use crate::replay::reopen_mode;
use crate::resolve::{self, Look, Outcome, Seen};
use crate::session::{record_names, Negotiated, Request, RequestState};
use crate::time::Instant;
use crate::unsynced::NotKept;

/// What the session lends a recovery for one input.
pub(crate) struct Cx<'a> {
    pub cfg: &'a Config,
    pub negotiated: &'a Negotiated,
    pub fids: &'a mut FidTable,
    pub marks: &'a mut Marks,
    pub authenticator: Option<&'a dyn Authenticator>,
    /// Where the new link's backend is entered (a mux's service aname and root path).
    pub service: &'a ServiceRoot,
    /// The new link's msize, set when the server answers the Tversion.
    pub server_msize: &'a mut u32,
    pub out: &'a mut VecDeque<Output>,
    pub events: &'a mut VecDeque<Event>,
    /// The session's requests: orphans whose outcome the recovery settles by looking.
    pub requests: &'a mut HashMap<u16, Request>,
}

impl Cx<'_> {
    /// The largest frame the new server may send.
    fn server_msize(&self) -> u32 {
        (*self.server_msize).min(self.negotiated.msize)
    }

    fn lose_fid(
        &mut self,
        fid: u32,
        reason: LostReason,
        why: impl Into<alloc::borrow::Cow<'static, str>>,
    ) {
        if self.fids.mark_lost(fid, reason) {
            let why = why.into();
            self.events.push_back(Event::FidLost { fid, reason, why });
        }
    }
}

/// Where a recovery stands after an input.
pub(crate) enum Progress {
    Working,
    /// Every fid is rebuilt or lost, and the proxy's own fids are clunked: service resumes.
    Done {
        fids: usize,
        stale: usize,
        elapsed: core::time::Duration,
    },
    /// The server broke the protocol: the link is to be dropped, for this reason.
    Broken(String),
}

/// Progress of one rebuild.
pub(crate) struct Recovery {
    link: LinkId,
    started: Instant,
    /// The last time a reply arrived (the watchdog measures from here).
    last_progress: Instant,
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
    forgotten: Vec<u32>,
    /// Orphaned requests whose outcome is still to be looked at, by tag, in their order; the
    /// one being looked at; and the proxy-owned fid the looks walk.
    questions: VecDeque<(u16, u64)>,
    asking: Option<Asking>,
    probe: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Version,
    Attach,
    Resolve,
    Fids,
    Clunk,
}

/// Looking at the names one orphaned request involves (one request at a time, in order: a
/// later one may depend on an earlier one's outcome).
struct Asking {
    tag: u16,
    /// The request's number: the tag may be answered and reused while the looks go on.
    seq: u64,
    msg: Msg,
    looks: Vec<Look>,
    /// What each look found, in order; the current look is the next.
    seen: Vec<Seen>,
    /// Names of the current look's directory walked so far.
    walked: usize,
    /// Whether the probe fid exists on the server (it is clunked after each look).
    probe_live: bool,
}

#[derive(Clone, Copy)]
enum LookStep {
    /// Walking the probe along the look's directory, `chunk` names this time.
    Dir {
        chunk: usize,
    },
    /// Walking it to the name looked for.
    Name,
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
    /// The walk of an attached root to its service's path.
    RootWalk(usize),
    Job(Job),
    Look(LookStep),
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
    /// The final image of its file's kept writes (`unsynced::final_image`), taken when this
    /// fid claims their check, and compared to the end even if the client lets go of the fid
    /// meanwhile; with the file's qid path.
    checks: Vec<(u64, Bytes)>,
    checking: Option<u64>,
}

#[derive(Clone, Copy)]
enum Step {
    Walk {
        chunk: usize,
    },
    Open,
    FastForward {
        at: u64,
    },
    /// Reading back range `index` of the kept writes' image, `done` bytes of it so far.
    Check {
        index: usize,
        done: usize,
    },
    Lock {
        index: usize,
    },
}

/// Whether a reopened file is still the file the fid had open.
fn same_file(recorded: Qid, found: Qid) -> bool {
    recorded.path == found.path && recorded.typ == found.typ
}

impl Recovery {
    /// Begin rebuilding on `link`, just up: re-version it.
    pub(crate) fn start(now: Instant, link: LinkId, cx: &mut Cx<'_>) -> Recovery {
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
            questions: VecDeque::new(),
            asking: None,
            probe: NOFID.0,
        };
        let tversion = Tversion {
            msize: cx.negotiated.msize,
            version: cx.negotiated.version.clone(),
        };
        let frame = Fcall::new(NOTAG, tversion)
            .to_frame()
            .expect("Tversion encodes");
        r.waiting.insert(NOTAG, (MsgType::Tversion, Wait::Version));
        cx.out.push_back(Output::ToLink { link, frame });
        r
    }

    /// When the watchdog (the recovery's time without progress) runs from.
    pub(crate) fn last_progress(&self) -> Instant {
        self.last_progress
    }

    /// Count the recovery as having progressed at `now` (its link was not read until then).
    pub(crate) fn progressed(&mut self, now: Instant) {
        self.last_progress = self.last_progress.max(now);
    }

    /// When a refused exclusive open is due to be tried again.
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        self.delayed.iter().map(|(t, _)| *t).min()
    }

    /// The client let go of `fid` while the recovery ran (answered without the server): if the
    /// new server has it by then, it is clunked there before the recovery ends.
    pub(crate) fn forget(&mut self, fid: u32) {
        self.forgotten.push(fid);
    }

    /// A reply on the link being rebuilt.
    pub(crate) fn handle_reply(
        &mut self,
        now: Instant,
        frame: &Bytes,
        cx: &mut Cx<'_>,
    ) -> Progress {
        if let Err(what) = self.step(now, frame, cx) {
            return Progress::Broken(what);
        }
        self.pump(now, cx)
    }

    /// Time passed: retry the exclusive opens that are due.
    pub(crate) fn handle_timeout(&mut self, now: Instant, cx: &mut Cx<'_>) -> Progress {
        let (due, later): (Vec<_>, Vec<_>) = core::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.delayed = later;
        for (_, job) in due {
            self.job_open(job, cx);
        }
        self.pump(now, cx)
    }

    fn send(&mut self, msg: impl Into<Msg>, wait: Wait, cx: &mut Cx<'_>) {
        let msg = msg.into();
        let tag = self.take_tag();
        let ty = msg.msg_type();
        let frame = Fcall { tag, msg }
            .to_frame()
            .expect("recovery requests encode");
        self.send_frame(tag, ty, frame, wait, cx);
    }

    fn take_tag(&mut self) -> u16 {
        loop {
            let tag = self.next_tag;
            self.next_tag = self.next_tag.wrapping_add(1);
            if tag != NOTAG && !self.waiting.contains_key(&tag) {
                return tag;
            }
        }
    }

    fn send_frame(&mut self, tag: u16, ty: MsgType, frame: Bytes, wait: Wait, cx: &mut Cx<'_>) {
        self.waiting.insert(tag, (ty, wait));
        cx.out.push_back(Output::ToLink {
            link: self.link,
            frame,
        });
    }

    /// Take one reply; an `Err` is a reason to drop the link.
    fn step(&mut self, now: Instant, frame: &Bytes, cx: &mut Cx<'_>) -> Result<(), String> {
        let header = Header::parse(frame).map_err(|e| alloc::format!("bad frame: {e}"))?;
        let Some((ty, wait)) = self.waiting.remove(&header.tag) else {
            return Err(alloc::format!(
                "reply to unknown tag {} during recovery",
                header.tag
            ));
        };
        let dialect = cx.negotiated.dialect;
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
        let is_error = reply_ty.is_error();
        if Some(reply_ty) != ty.reply() && !is_error {
            return Err(alloc::format!(
                "{} answered with {}",
                ty.name(),
                reply_ty.name()
            ));
        }
        self.last_progress = now;
        match wait {
            Wait::Version => {
                let neg = cx.negotiated;
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
                *cx.server_msize = rv.msize.min(neg.msize);
                self.begin_attach(cx);
            }
            Wait::Auth(i) => match reply {
                Msg::Rauth(_) => {
                    let root = cx.fids.root(self.roots[i].root);
                    let conversation = cx
                        .authenticator
                        .map(|a| a.converse(&root.uname, &root.aname));
                    self.roots[i].conversation = conversation;
                    self.auth_step(i, AuthInput::Start, cx);
                }
                _ => self.roots[i].failed = true,
            },
            Wait::AuthIo(i) => match &reply {
                Msg::Rwrite(w) => self.auth_step(i, AuthInput::Wrote(w.count), cx),
                Msg::Rread(d) => self.auth_step(i, AuthInput::Read(&d.data.0), cx),
                _ => self.roots[i].failed = true,
            },
            Wait::Attach(i) => match reply {
                Msg::Rattach(a) if cx.service.path.is_empty() => self.roots[i].qid = Some(a.qid),
                Msg::Rattach(_) => {
                    // Attached: the root the client knows is the service's path beneath.
                    let pfid = Fid(self.roots[i].pfid);
                    match WalkNames::new(&cx.service.path) {
                        Ok(wnames) => {
                            let walk = Twalk {
                                fid: pfid,
                                newfid: pfid,
                                wnames,
                            };
                            self.send(walk, Wait::RootWalk(i), cx);
                        }
                        Err(e) => {
                            // Attached, but the path cannot be walked: the pfid is clunked
                            // with the rest, and the root's fids go stale.
                            self.roots[i].qid = Some(Qid::default());
                            self.roots[i].failed = true;
                            self.roots[i].error = Some(alloc::format!("service path: {e}"));
                        }
                    }
                }
                other => {
                    self.roots[i].failed = true;
                    self.roots[i].error = crate::reply::describe_error(&other);
                }
            },
            Wait::RootWalk(i) => match reply {
                Msg::Rwalk(w) if w.wqids.len() == cx.service.path.len() => {
                    cx.marks.hit(Mark::RecoveryServiceRoot);
                    self.roots[i].qid = w.wqids.last()
                }
                other => {
                    // Not there: the attached fid did not move; it is clunked with the rest.
                    self.roots[i].qid = Some(Qid::default());
                    self.roots[i].failed = true;
                    self.roots[i].error = crate::reply::describe_error(&other)
                        .or_else(|| Some("the service's root path is not there".into()));
                }
            },
            Wait::Job(job) => self.job_reply(now, job, &reply, cx),
            Wait::Look(step) => self.look_reply(step, &reply, cx),
            Wait::Clunk => {}
        }
        Ok(())
    }

    fn begin_attach(&mut self, cx: &mut Cx<'_>) {
        self.phase = Phase::Attach;
        // A root is needed if a fid that can be rebuilt uses it; an authenticated one only if
        // there is an authenticator to redo the authentication.
        let can_auth = cx.authenticator.is_some();
        let mut needed: Vec<RootId> = cx
            .fids
            .fids
            .values()
            .filter(|f| matches!(f.kind, FidKind::Walked | FidKind::Open(_)))
            .map(|f| f.root)
            .filter(|&root| can_auth || !cx.fids.root(root).authenticated)
            .collect();
        needed.sort_unstable();
        needed.dedup();
        // The recovery's own fids: numbers the client does not use, from 1023 down (clients
        // number fids from 0 up, and some servers refuse fids of 1024 and more: nfs-ganesha
        // answers ERANGE), then from the top of the range.
        let mut candidates = (0..PROXY_FID_LIMIT)
            .rev()
            .chain((PROXY_FID_LIMIT..NOFID.0).rev());
        let mut proxy_fid = |fids: &FidTable| {
            candidates
                .by_ref()
                .find(|&f| fids.get(f).is_none())
                .expect("the client cannot use every fid")
        };
        for root in needed {
            let pfid = proxy_fid(cx.fids);
            let afid = cx.fids.root(root).authenticated.then(|| proxy_fid(cx.fids));
            self.roots.push(RootAttach {
                root,
                pfid,
                qid: None,
                failed: false,
                error: None,
                afid,
                conversation: None,
            });
        }
        self.probe = proxy_fid(cx.fids);
        for i in 0..self.roots.len() {
            let root = cx.fids.root(self.roots[i].root);
            match self.roots[i].afid {
                Some(afid) => {
                    let auth = Tauth {
                        afid: Fid(afid),
                        uname: root.uname.clone(),
                        aname: cx.service.aname.clone().unwrap_or(root.aname.clone()),
                        n_uname: root.n_uname,
                    };
                    self.send(auth, Wait::Auth(i), cx);
                }
                None => self.attach_root(i, cx),
            }
        }
    }

    fn attach_root(&mut self, i: usize, cx: &mut Cx<'_>) {
        let root = cx.fids.root(self.roots[i].root);
        let attach = Tattach {
            fid: Fid(self.roots[i].pfid),
            afid: self.roots[i].afid.map_or(NOFID, Fid),
            uname: root.uname.clone(),
            aname: cx.service.aname.clone().unwrap_or(root.aname.clone()),
            n_uname: root.n_uname,
        };
        cx.marks.hit(Mark::RecoveryAttach);
        self.send(attach, Wait::Attach(i), cx);
    }

    /// Carry the authentication conversation of root `i` one step. Auth files are streams,
    /// so reads and writes go at offset 0.
    fn auth_step(&mut self, i: usize, input: AuthInput<'_>, cx: &mut Cx<'_>) {
        let (Some(afid), Some(conversation)) =
            (self.roots[i].afid, self.roots[i].conversation.as_mut())
        else {
            self.roots[i].failed = true;
            return;
        };
        match conversation.step(input) {
            AuthStep::Write(data) => {
                let write = Twrite {
                    fid: Fid(afid),
                    offset: 0,
                    data: Data(data),
                };
                self.send(write, Wait::AuthIo(i), cx);
            }
            AuthStep::Read(count) => {
                let read = Tread {
                    fid: Fid(afid),
                    offset: 0,
                    count: count.min(cx.server_msize().saturating_sub(p9_core::IOHDRSZ)),
                };
                self.send(read, Wait::AuthIo(i), cx);
            }
            AuthStep::Done => self.attach_root(i, cx),
            AuthStep::Fail => self.roots[i].failed = true,
        }
    }

    /// Move the rebuild forward: start jobs while the window allows, change phase when a
    /// phase is done, and say when everything is.
    fn pump(&mut self, now: Instant, cx: &mut Cx<'_>) -> Progress {
        let window = cx.cfg.recovery_window.max(1);
        loop {
            match self.phase {
                Phase::Version => break,
                Phase::Attach => {
                    if !self.waiting.is_empty() {
                        break;
                    }
                    self.phase = Phase::Resolve;
                    if cx.cfg.resolve_ambiguous {
                        let questions = Self::questions(cx);
                        self.questions = Self::apart(questions, cx).into();
                    }
                }
                Phase::Resolve => {
                    if self.asking.is_none() {
                        self.ask_next(cx);
                    }
                    if self.asking.is_some() || !self.waiting.is_empty() {
                        break;
                    }
                    self.phase = Phase::Fids;
                    let mut fids: Vec<u32> = cx.fids.fids.keys().copied().collect();
                    fids.sort_unstable();
                    self.todo = fids.into();
                }
                Phase::Fids => {
                    while self.waiting.len() < window {
                        let Some(fid) = self.todo.pop_front() else {
                            break;
                        };
                        self.start_job(fid, cx);
                    }
                    if !self.todo.is_empty() || !self.waiting.is_empty() || !self.delayed.is_empty()
                    {
                        break;
                    }
                    self.phase = Phase::Clunk;
                    // The proxy's own fids: attached roots, and every auth fid the server
                    // granted (a failed conversation's too); and fids the client let go of
                    // meanwhile (a clunk of one the server does not have just fails).
                    let pfids: Vec<u32> = self
                        .roots
                        .iter()
                        .filter(|a| a.qid.is_some())
                        .map(|a| a.pfid)
                        .chain(
                            self.roots
                                .iter()
                                .filter(|a| a.conversation.is_some())
                                .filter_map(|a| a.afid),
                        )
                        .chain(core::mem::take(&mut self.forgotten))
                        .collect();
                    for pfid in pfids {
                        self.send(Tclunk { fid: Fid(pfid) }, Wait::Clunk, cx);
                    }
                }
                Phase::Clunk => {
                    // Fids the client let go of after this phase began.
                    for fid in core::mem::take(&mut self.forgotten) {
                        self.send(Tclunk { fid: Fid(fid) }, Wait::Clunk, cx);
                    }
                    if !self.waiting.is_empty() {
                        break;
                    }
                    return Progress::Done {
                        fids: self.rebuilt,
                        stale: self.stale,
                        elapsed: now.since(self.started),
                    };
                }
            }
        }
        Progress::Working
    }

    fn start_job(&mut self, fid: u32, cx: &mut Cx<'_>) {
        let Some(rec) = cx.fids.get(fid) else {
            return;
        };
        let why = match rec.kind {
            FidKind::Lost(_) => return,
            FidKind::Auth => Some("authentication fids cannot be rebuilt"),
            FidKind::Xattr => Some("extended-attribute fids cannot be rebuilt"),
            _ if cx.fids.root(rec.root).authenticated && cx.authenticator.is_none() => {
                Some("attached with authentication and no authenticator is configured")
            }
            _ if rec.flags & flag::LOCKS_OVERFLOWED != 0 => Some("too many locks to replay"),
            _ => None,
        };
        if let Some(why) = why {
            return self.job_stale(fid, false, why, cx);
        }
        let Some(attach) = self.roots.iter().find(|a| a.root == rec.root) else {
            return self.job_stale(fid, false, "its root was not re-attached", cx);
        };
        let Some(root_qid) = attach.qid.filter(|_| !attach.failed) else {
            let why = match &attach.error {
                Some(e) => alloc::format!("the server refused to re-attach its root: {e}"),
                None => "re-attaching its root failed".into(),
            };
            return self.job_stale(fid, false, why, cx);
        };
        let names = cx
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
            checks: Vec::new(),
            checking: None,
        };
        self.job_walk(job, cx);
    }

    fn job_walk(&mut self, mut job: Job, cx: &mut Cx<'_>) {
        if job.walked > 0 {
            cx.marks.hit(Mark::RecoveryChunkedWalk);
        }
        let end = (job.walked + MAXWELEM).min(job.names.len());
        let chunk = &job.names[job.walked..end];
        let from = if job.walked == 0 {
            let root = cx.fids.get(job.fid).map(|f| f.root);
            self.roots
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
        self.send(walk, Wait::Job(job), cx);
    }

    fn job_reply(&mut self, now: Instant, mut job: Job, reply: &Msg, cx: &mut Cx<'_>) {
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
                        return self.job_stale(fid, job.walked > 0, why, cx);
                    }
                    cx.marks.hit(Mark::RecoveryPathGone);
                    return self.job_stale(fid, job.walked > 0, "its path no longer exists", cx);
                };
                if w.wqids.len() < chunk {
                    cx.marks.hit(Mark::RecoveryPathGone);
                    return self.job_stale(fid, job.walked > 0, "its path no longer exists", cx);
                }
                if let Some(q) = w.wqids.last() {
                    job.qid = q;
                }
                job.walked += chunk;
                if job.walked < job.names.len() {
                    return self.job_walk(job, cx);
                }
                let Some(rec) = cx.fids.get_mut(fid) else {
                    return;
                };
                if !matches!(rec.kind, FidKind::Open(_)) {
                    // An unopened fid simply follows its path.
                    rec.qid = job.qid;
                    self.rebuilt += 1;
                    return;
                }
                if !same_file(rec.qid, job.qid) {
                    cx.marks.hit(Mark::RecoveryQidMismatch);
                    return self.job_stale(fid, true, "the file at its path was replaced", cx);
                }
                self.job_open(job, cx);
            }
            Step::Open => {
                let qid = match reply {
                    Msg::Ropen(o) => Some(o.qid),
                    Msg::Rlopen(o) => Some(o.qid),
                    _ => None,
                };
                let Some(rec) = cx.fids.get(fid) else {
                    return;
                };
                let exclusive = rec.qid.typ & qid_type::EXCL != 0;
                match qid {
                    Some(q) if same_file(rec.qid, q) => self.job_after_open(job, cx),
                    Some(_) => {
                        cx.marks.hit(Mark::RecoveryQidMismatch);
                        self.job_stale(fid, true, "the file at its path was replaced", cx)
                    }
                    None if exclusive && job.tries < cx.cfg.exclusive_open_retries => {
                        job.tries += 1;
                        cx.marks.hit(Mark::RecoveryExclusiveRetry);
                        self.delayed.push((now + cx.cfg.exclusive_retry_delay, job));
                    }
                    None => {
                        let why = match crate::reply::describe_error(reply) {
                            Some(e) => alloc::format!("the server refused to reopen it: {e}"),
                            None => "reopening it failed".into(),
                        };
                        self.job_stale(fid, true, why, cx)
                    }
                }
            }
            Step::FastForward { at } => {
                let got = match reply {
                    Msg::Rread(d) => d.data.0.len() as u64,
                    _ => 0,
                };
                let target = cx.fids.get(fid).map_or(0, |f| f.dir_offset);
                if got == 0 {
                    // The listing is shorter now; the position cannot be restored.
                    return self.job_locks(job, 0, cx);
                }
                if at + got >= target {
                    if let Some(rec) = cx.fids.get_mut(fid) {
                        rec.flags |= flag::FAST_FORWARDED;
                    }
                    return self.job_locks(job, 0, cx);
                }
                self.job_read_dir(job, at + got, target, cx);
            }
            Step::Check { index, done } => {
                let range = job.checks.get(index).cloned();
                let verdict = match (range, reply) {
                    (Some((_, data)), Msg::Rread(r)) => {
                        let got = &r.data.0;
                        let want = Self::check_len(&data, done, cx);
                        match !got.is_empty()
                            && got.len() <= want
                            && got[..] == data[done..done + got.len()]
                        {
                            true => return self.job_check(job, index, done + got.len(), cx),
                            // Short of it (the file is shorter now) or other bytes.
                            false => NotKept::Differs,
                        }
                    }
                    _ => NotKept::CheckFailed,
                };
                // The server does not hold what was acknowledged (or would not say): nothing is
                // written over it, and the file's next fsync says so.
                cx.marks.hit(Mark::RecoveryCheckDiffers);
                if let Some(path) = job.checking.take() {
                    cx.fids.unsynced.checked(path, Err(verdict));
                }
                job.checks = Vec::new();
                self.job_locks(job, 0, cx)
            }
            Step::Lock { index } => match reply {
                Msg::Rlock(l) if l.status == p9_core::lock_status::SUCCESS => {
                    self.job_locks(job, index + 1, cx)
                }
                _ => {
                    cx.marks.hit(Mark::RecoveryLockRefused);
                    self.job_stale(fid, true, "a lock it held could not be re-acquired", cx)
                }
            },
        }
    }

    fn job_open(&mut self, mut job: Job, cx: &mut Cx<'_>) {
        let Some(FidKind::Open(mode)) = cx.fids.get(job.fid).map(|f| f.kind) else {
            return;
        };
        cx.marks.hit(Mark::RecoveryReopen);
        job.step = Step::Open;
        match reopen_mode(mode) {
            OpenMode::DotL(flags) => {
                let open = Tlopen {
                    fid: Fid(job.fid),
                    flags,
                };
                self.send(open, Wait::Job(job), cx);
            }
            OpenMode::Classic(mode) => {
                let open = Topen {
                    fid: Fid(job.fid),
                    mode,
                };
                self.send(open, Wait::Job(job), cx);
            }
        }
    }

    /// After the reopen: restore a directory's position, then replay locks.
    fn job_after_open(&mut self, job: Job, cx: &mut Cx<'_>) {
        let dotl = cx.negotiated.dialect == Dialect::DotL;
        let Some(rec) = cx.fids.get_mut(job.fid) else {
            return;
        };
        if !rec.qid.is_dir() {
            // Open for reading, it reads its file's kept writes back, unless another fid of
            // the file does so already.
            let readable = match rec.kind {
                FidKind::Open(OpenMode::DotL(f)) => f & 3 != 1,
                FidKind::Open(OpenMode::Classic(m)) => m & 3 != 1,
                _ => false,
            };
            let path = rec.qid.path;
            let mut job = job;
            if let Some(image) = readable
                .then(|| cx.fids.unsynced.claim_check(path))
                .flatten()
            {
                job.checks = image;
                job.checking = Some(path);
            }
            return self.job_check(job, 0, 0, cx);
        }
        if rec.dir_offset == 0 {
            return self.job_locks(job, 0, cx);
        }
        if dotl {
            // .L readdir offsets are the server's cookies: valid again on the same backend.
            rec.flags |= flag::FAST_FORWARDED;
            return self.job_locks(job, 0, cx);
        }
        let target = rec.dir_offset;
        cx.marks.hit(Mark::RecoveryFastForward);
        self.job_read_dir(job, 0, target, cx);
    }

    /// 9P2000 directories are read only sequentially: read (and drop) up to the client's offset.
    fn job_read_dir(&mut self, mut job: Job, at: u64, target: u64, cx: &mut Cx<'_>) {
        let most = cx.server_msize().saturating_sub(p9_core::IOHDRSZ) as u64;
        let count = (target - at).min(most) as u32;
        job.step = Step::FastForward { at };
        let read = Tread {
            fid: Fid(job.fid),
            offset: at,
            count,
        };
        self.send(read, Wait::Job(job), cx);
    }

    /// How much of range `data` the check from `done` reads: what is left, at most what fits
    /// the new server's msize.
    fn check_len(data: &Bytes, done: usize, cx: &Cx<'_>) -> usize {
        let most = cx.server_msize().saturating_sub(p9_core::IOHDRSZ) as usize;
        data.len().saturating_sub(done).min(most)
    }

    /// Read back the final image of the file's kept writes, range by range, before its locks
    /// (nothing else reaches the file meanwhile): from range `index`, `done` bytes of it
    /// compared. All equal: the server lost nothing the client was told it holds.
    fn job_check(&mut self, mut job: Job, mut index: usize, mut done: usize, cx: &mut Cx<'_>) {
        loop {
            let Some((offset, data)) = job.checks.get(index).cloned() else {
                job.checks = Vec::new();
                if let Some(path) = job.checking.take() {
                    cx.fids.unsynced.checked(path, Ok(()));
                }
                return self.job_locks(job, 0, cx);
            };
            let want = Self::check_len(&data, done, cx);
            if want == 0 {
                (index, done) = (index + 1, 0);
                continue;
            }
            if index == 0 && done == 0 {
                cx.marks.hit(Mark::RecoveryCheck);
            }
            job.step = Step::Check { index, done };
            let read = Tread {
                fid: Fid(job.fid),
                offset: offset + done as u64,
                count: want as u32,
            };
            return self.send(read, Wait::Job(job), cx);
        }
    }

    fn job_locks(&mut self, mut job: Job, index: usize, cx: &mut Cx<'_>) {
        let next = cx
            .fids
            .get(job.fid)
            .and_then(|f| f.locks.as_ref())
            .and_then(|l| l.0.get(index))
            .cloned();
        let Some(lock) = next else {
            self.rebuilt += 1;
            return;
        };
        cx.marks.hit(Mark::RecoveryLockReplay);
        let tag = self.take_tag();
        let mut frame = BytesMut::from(&lock[..]);
        set_tag(&mut frame, tag).expect("a recorded Tlock has a header");
        job.step = Step::Lock { index };
        self.send_frame(tag, MsgType::Tlock, frame.freeze(), Wait::Job(job), cx);
    }

    /// The fid cannot be rebuilt. If this link already knows it, clunk it there, so the
    /// server does not keep a fid the client will reuse.
    fn job_stale(
        &mut self,
        fid: u32,
        on_server: bool,
        why: impl Into<alloc::borrow::Cow<'static, str>>,
        cx: &mut Cx<'_>,
    ) {
        self.stale += 1;
        cx.lose_fid(fid, LostReason::Stale, why);
        if on_server {
            self.send(Tclunk { fid: Fid(fid) }, Wait::Clunk, cx);
        }
    }
}

/// Settling orphaned creates, removes and renames by looking (`crate::resolve`).
impl Recovery {
    /// The orphans to look at, in their original order: those the outcome table settles and
    /// no earlier recovery has settled; by tag and number.
    fn questions(cx: &Cx<'_>) -> Vec<(u16, u64)> {
        let dialect = cx.negotiated.dialect;
        let mut orphans: Vec<(u64, u16)> = cx
            .requests
            .iter()
            .filter(|(_, r)| r.state == RequestState::Orphaned && r.resolved.is_none())
            .filter(|(_, r)| {
                Fcall::decode(&r.frame, dialect).is_ok_and(|f| resolve::resolvable(&f.msg))
            })
            .map(|(&tag, r)| (r.seq, tag))
            .collect();
        orphans.sort_unstable();
        orphans.into_iter().map(|(seq, tag)| (tag, seq)).collect()
    }

    /// The questions that can be looked at one by one: two in flight on one name (or on a
    /// name and one beneath it) cannot be told apart by looking — which of them the name's
    /// state shows is unknown — so those are settled as unknown now, and the rest returned.
    fn apart(questions: Vec<(u16, u64)>, cx: &mut Cx<'_>) -> Vec<(u16, u64)> {
        let looks: Vec<Vec<Look>> = questions
            .iter()
            .map(|&(tag, _)| {
                Self::request(tag, cx)
                    .and_then(|msg| resolve::looks(&msg, cx.fids))
                    .unwrap_or_default()
            })
            .collect();
        let shared = |i: usize| {
            (0..looks.len()).any(|j| {
                j != i
                    && looks[i]
                        .iter()
                        .any(|a| looks[j].iter().any(|b| resolve::overlap(cx.fids, a, b)))
            })
        };
        let (tangled, apart): (Vec<usize>, Vec<usize>) =
            (0..questions.len()).partition(|&i| shared(i));
        for i in tangled {
            let (tag, seq) = questions[i];
            if let Some(msg) = Self::request(tag, cx) {
                Self::settle(tag, seq, &msg, Outcome::Unknown, cx);
            }
        }
        apart.into_iter().map(|i| questions[i]).collect()
    }

    /// The orphan under `tag`, decoded.
    fn request(tag: u16, cx: &Cx<'_>) -> Option<Msg> {
        let req = cx
            .requests
            .get(&tag)
            .filter(|r| r.state == RequestState::Orphaned)?;
        Fcall::decode(&req.frame, cx.negotiated.dialect)
            .ok()
            .map(|f| f.msg)
    }

    /// Begin looking at the next question (settling at once those with nothing to look at;
    /// `pump` calls again when one is settled).
    fn ask_next(&mut self, cx: &mut Cx<'_>) {
        while self.asking.is_none() {
            let Some((tag, seq)) = self.questions.pop_front() else {
                return;
            };
            // Flushed meanwhile: the client deems it never done, and nothing changes.
            let Some(msg) = Self::request(tag, cx) else {
                continue;
            };
            if resolve::names_nothing(&msg) {
                // A name no server makes ("", ".", "..", "a/b"): sent again, for its error.
                Self::settle(tag, seq, &msg, Outcome::NotDone, cx);
                continue;
            }
            let looks = resolve::looks(&msg, cx.fids).unwrap_or_default();
            self.asking = Some(Asking {
                tag,
                seq,
                msg,
                looks,
                seen: Vec::new(),
                walked: 0,
                probe_live: false,
            });
            self.next_look(cx);
        }
    }

    /// Start the current question's next look, or settle it when every look is done.
    fn next_look(&mut self, cx: &mut Cx<'_>) {
        let Some(a) = self.asking.as_mut() else {
            return;
        };
        let Some(look) = a.looks.get(a.seen.len()) else {
            return self.settle_question(cx);
        };
        let from = self
            .roots
            .iter()
            .find(|r| r.root == look.root && r.qid.is_some() && !r.failed)
            .map(|r| r.pfid);
        let Some(from) = from.filter(|_| !look.names.is_empty()) else {
            return self.look_seen(Seen::Unclear, cx);
        };
        a.walked = 0;
        self.walk_probe(from, cx);
    }

    /// Walk the probe on along the current look's directory (from `from`, the root's fid, at
    /// first), or to its name once the directory is walked.
    fn walk_probe(&mut self, from: u32, cx: &mut Cx<'_>) {
        let Some(a) = self.asking.as_ref() else {
            return;
        };
        let look = &a.looks[a.seen.len()];
        let dir = &look.names[..look.names.len() - 1];
        let (names, step) = if a.walked < dir.len() || !a.probe_live {
            let end = (a.walked + MAXWELEM).min(dir.len());
            let chunk = &dir[a.walked..end];
            (chunk, LookStep::Dir { chunk: chunk.len() })
        } else {
            (&look.names[dir.len()..], LookStep::Name)
        };
        let walk = Twalk {
            fid: Fid(from),
            newfid: Fid(self.probe),
            wnames: WalkNames::new(names).expect("at most 16 names"),
        };
        self.send(walk, Wait::Look(step), cx);
    }

    fn look_reply(&mut self, step: LookStep, reply: &Msg, cx: &mut Cx<'_>) {
        let Some(a) = self.asking.as_mut() else {
            return;
        };
        match (step, reply) {
            (LookStep::Dir { chunk }, Msg::Rwalk(w)) if w.wqids.len() == chunk => {
                a.probe_live = true;
                a.walked += chunk;
                self.walk_probe(self.probe, cx);
            }
            // The directory is not all there: nothing certain about the name in it.
            (LookStep::Dir { .. }, _) => self.look_seen(Seen::Unclear, cx),
            (LookStep::Name, Msg::Rwalk(w)) => match w.wqids.last() {
                Some(qid) if w.wqids.len() == 1 => self.look_seen(Seen::Found(qid), cx),
                _ => self.look_seen(Seen::Unclear, cx),
            },
            (LookStep::Name, other) if crate::reply::is_not_found(other) => {
                self.look_seen(Seen::Missing, cx)
            }
            (LookStep::Name, _) => self.look_seen(Seen::Unclear, cx),
            (LookStep::Clunk, _) => {
                a.probe_live = false;
                self.next_look(cx);
            }
        }
    }

    /// The current look found `seen`: clunk the probe if it was made, then go on.
    fn look_seen(&mut self, seen: Seen, cx: &mut Cx<'_>) {
        let Some(a) = self.asking.as_mut() else {
            return;
        };
        a.seen.push(seen);
        if a.probe_live {
            let clunk = Tclunk {
                fid: Fid(self.probe),
            };
            return self.send(clunk, Wait::Look(LookStep::Clunk), cx);
        }
        self.next_look(cx);
    }

    /// Every look of the current question is done: read the outcome table and settle it.
    fn settle_question(&mut self, cx: &mut Cx<'_>) {
        let Some(a) = self.asking.take() else {
            return;
        };
        let outcome = match a.looks.is_empty() {
            true => Outcome::Unknown,
            false => resolve::verdict(&a.msg, cx.fids, &a.looks, &a.seen),
        };
        Self::settle(a.tag, a.seq, &a.msg, outcome, cx);
    }

    /// Settle orphan `tag` (number `seq`, the request `msg`) as `outcome`: change the fid table
    /// as its reply would have (done), and leave the outcome on the request for the session to
    /// answer it by once service resumes. Nothing changes if the request was answered meanwhile
    /// (flushed, or failed in soft mode), its tag perhaps taken by another.
    fn settle(tag: u16, seq: u64, msg: &Msg, outcome: Outcome, cx: &mut Cx<'_>) {
        let Some(req) = cx
            .requests
            .get(&tag)
            .filter(|r| r.seq == seq && r.state == RequestState::Orphaned)
        else {
            return;
        };
        // Absent on a new link, but its old server may run it yet: nothing is certain.
        let outcome = match outcome {
            Outcome::NotDone if req.given_up => Outcome::Unknown,
            o => o,
        };
        cx.marks.hit(match outcome {
            Outcome::Done(_) => Mark::ResolvedDone,
            Outcome::NotDone => Mark::ResolvedNotDone,
            Outcome::Unknown => Mark::ResolvedUnknown,
        });
        let forget = match (outcome, msg) {
            (Outcome::Done(qid), msg) => {
                if let Some(reply) = resolve::done_reply(msg, qid) {
                    record_names(cx.fids, msg, &reply);
                }
                None
            }
            // A remove that may have happened is never sent again, and forgets its fid: it is
            // not rebuilt (the new server would keep it, and refuse its number later).
            (Outcome::Unknown, Msg::Tremove(r)) => Some(r.fid.0),
            _ => None,
        };
        if forget.is_some_and(|fid| cx.fids.remove(fid).is_some()) {
            cx.marks.hit(Mark::RecoveryRemovedNotRebuilt);
        }
        if let Some(req) = cx.requests.get_mut(&tag) {
            req.resolved = Some(outcome);
        }
    }
}
