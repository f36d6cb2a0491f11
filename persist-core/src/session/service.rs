//! A mux's service roots: each backend is attached with its service's own attach name, and
//! walked to its service's path before the client hears its Rattach (see
//! [`ServiceRoot`](crate::endpoint::ServiceRoot)). The client's attach name is replaced when the
//! service names one, and passed on when it does not.

use super::*;
use crate::qids;
use p9_core::{Fid, Rattach, Tattach, Tauth, Tclunk, Twalk, WalkNames};

impl Session {
    /// A client's Tattach or Tauth as the current service wants it sent.
    pub(super) fn to_service(&self, tag: u16, msg: Msg) -> Option<Bytes> {
        let aname = self.service.aname.clone()?;
        let msg: Msg = match msg {
            Msg::Tattach(a) => Tattach { aname, ..a }.into(),
            Msg::Tauth(a) => Tauth { aname, ..a }.into(),
            _ => return None,
        };
        Fcall::new(tag, msg).to_frame().ok()
    }

    /// A reply to a client's Tattach while the service has a root path: after the Rattach the
    /// fid is walked to the path under the same tag; after the walk the client gets an Rattach
    /// with the path's qid (or, if the path is not there, its fid is clunked and the attach
    /// fails). Gives the request back when the reply is to go the ordinary way (an error to
    /// the attach itself).
    pub(super) fn service_attach_reply(
        &mut self,
        now: Instant,
        link: LinkId,
        tag: u16,
        mut req: Request,
        reply_type: u8,
        frame: &Bytes,
    ) -> Option<Request> {
        let Some(fid) = peek::first_fid(&req.frame) else {
            return Some(req); // not a Tattach the session could take apart: as it came
        };
        let is_error = reply::is_error_type(reply_type);
        match req.rooting {
            Rooting::Attach if is_error => return Some(req),
            Rooting::Attach => {
                if reply_type != MsgType::Rattach as u8 {
                    let what = alloc::format!("answered with message type {reply_type}");
                    self.bad_reply(now, link, tag, req, what);
                    return None;
                }
                let Ok(wnames) = WalkNames::new(&self.service.path) else {
                    // A path no walk can take (more than 16 names): as if it were not there.
                    req.rooting = Rooting::Clunk;
                    self.send_rooting(link, tag, req, Tclunk { fid: Fid(fid) }.into());
                    return None;
                };
                let walk = Twalk {
                    fid: Fid(fid),
                    newfid: Fid(fid),
                    wnames,
                };
                req.rooting = Rooting::Walk;
                self.marks.hit(Mark::ServiceRootWalk);
                self.send_rooting(link, tag, req, walk.into());
            }
            Rooting::Walk => {
                let dialect = self.dialect().unwrap_or(Dialect::DotL);
                let qid = match Fcall::decode(frame, dialect).map(|f| f.msg) {
                    Ok(Msg::Rwalk(w)) if w.wqids.len() == self.service.path.len() => w.wqids.last(),
                    Ok(Msg::Rwalk(w)) if w.wqids.len() > self.service.path.len() => {
                        let what = alloc::format!("{} qids for {} names", w.wqids.len(), {
                            self.service.path.len()
                        });
                        self.bad_reply(now, link, tag, req, what);
                        return None;
                    }
                    _ if !is_error && reply_type != MsgType::Rwalk as u8 => {
                        let what = alloc::format!("answered with message type {reply_type}");
                        self.bad_reply(now, link, tag, req, what);
                        return None;
                    }
                    _ => None,
                };
                let Some(qid) = qid else {
                    // Not there (an error, or a partial walk: the fid did not move).
                    req.rooting = Rooting::Clunk;
                    self.send_rooting(link, tag, req, Tclunk { fid: Fid(fid) }.into());
                    return None;
                };
                self.held_bytes -= pinned(req.frame.len());
                let rattach = Msg::Rattach(Rattach { qid });
                let mut frame = reply::local(tag, rattach.clone());
                if let Some(msg) = self.decode_request(&req.frame) {
                    frame = self.client_qids(&msg, &rattach, frame);
                    self.record(&msg, &rattach, &req.frame);
                }
                self.answered_after_outage();
                self.send_to_client(frame);
                self.answer_waiting_flush(tag, &req);
            }
            Rooting::Clunk => {
                self.held_bytes -= pinned(req.frame.len());
                self.answered_after_outage();
                let frame = Failure::NO_SERVICE_ROOT.reply(tag, self.dialect());
                self.send_to_client(frame);
                self.answer_waiting_flush(tag, &req);
            }
        }
        None
    }

    /// A client Tflush (`tag`) of `oldtag` while that attach is being walked to its service's
    /// root, or its fid clunked: the server has attached a fid the client would not know of,
    /// so the flush is not sent; it is answered as soon as the attach is (true when held).
    pub(super) fn hold_flush(&mut self, tag: u16, oldtag: u16, link: LinkId) -> bool {
        let Some(old) = self
            .requests
            .get_mut(&oldtag)
            .filter(|r| r.rooting != Rooting::Attach)
        else {
            return false;
        };
        old.waiting_flushes.push(tag);
        self.marks.hit(Mark::ServiceRootFlushHeld);
        if let Some(flush) = self.requests.get_mut(&tag) {
            // In flight as far as a lost link is concerned: answered here if the link goes.
            flush.state = RequestState::Sent(link);
            flush.sent_at = self.now;
        }
        true
    }

    /// The server's Rflush for a client Tflush (`tag`, held in `req`) of `oldtag`, which the
    /// server had already answered with its Rattach: the walk to the service's root has begun
    /// under the same tag since. The Rflush waits for the attach's own reply (true when held).
    pub(super) fn hold_flush_reply(
        &mut self,
        tag: u16,
        oldtag: u16,
        req: Request,
    ) -> Option<Request> {
        match self.requests.get_mut(&oldtag) {
            Some(old) if old.rooting != Rooting::Attach => {
                old.waiting_flushes.push(tag);
                self.marks.hit(Mark::ServiceRootFlushHeld);
                self.requests.insert(tag, req);
                None
            }
            _ => Some(req),
        }
    }

    /// Whether `w` climbs above the service's root with `..`: the backend's fid would leave
    /// the service path (clients see it as the top; walk(5) keeps `..` at a root there, which
    /// the session cannot do for the server without inventing qids), so the walk is refused.
    pub(super) fn walks_above_service_root(&self, w: &Twalk) -> bool {
        if self.service.path.is_empty() || !w.wnames.iter().any(|n| n == b"..") {
            return false;
        }
        let Some(rec) = self.fids.get(w.fid.0) else {
            return false;
        };
        let mut depth = self.fids.names.depth(rec.node);
        for name in w.wnames.iter() {
            if name == b".." {
                if depth == 0 {
                    return true;
                }
                depth -= 1;
            } else {
                depth += 1;
            }
        }
        false
    }

    /// Send a step of a client's attach under its tag, holding the request for the reply.
    fn send_rooting(&mut self, link: LinkId, tag: u16, mut req: Request, msg: Msg) {
        let Ok(frame) = Fcall::new(tag, msg).to_frame() else {
            // Cannot happen for a walk of at most 16 names or a clunk; answered all the same.
            self.held_bytes -= pinned(req.frame.len());
            self.send_to_client(Failure::NO_SERVICE_ROOT.reply(tag, self.dialect()));
            self.answer_waiting_flush(tag, &req);
            return;
        };
        req.state = RequestState::Sent(link);
        req.sent_at = self.now;
        self.requests.insert(tag, req);
        self.emit(Output::ToLink { link, frame });
    }
}

/// Where a reply's frame holds its one qid (after `size[4] type[1] tag[2]`).
const QID_AT: usize = 7;
/// An Rgetattr's qid, after `valid[8]`.
const GETATTR_QID_AT: usize = QID_AT + 8;
/// An Rstat's qid: `n[2]`, then the stat's `size[2] type[2] dev[4]`.
const STAT_QID_AT: usize = QID_AT + 2 + 2 + 2 + 4;
/// An Rwalk's first qid, after `nwqid[2]`.
const WALK_QIDS_AT: usize = QID_AT + 2;
/// An Rread's or Rreaddir's data, after `count[4]`.
const DATA_AT: usize = QID_AT + 4;

impl Session {
    /// `frame`, the reply to `msg`, as the client is to see it: with stable qids, when the
    /// session may be served by several backends (see [`crate::qids`]). Call before the reply
    /// is recorded: the qids are keyed by the paths the request's fids had.
    pub(super) fn client_qids(&mut self, msg: &Msg, reply: &Msg, frame: Bytes) -> Bytes {
        if !self.stable_qids {
            return frame;
        }
        // The fid whose path keys the reply's qids (none: the root), and the name beneath it
        // for a reply about a new file.
        let (fid, name): (Option<Fid>, Option<&[u8]>) = match (msg, reply) {
            (Msg::Tattach(_), Msg::Rattach(_)) => (None, None),
            (Msg::Twalk(w), Msg::Rwalk(_)) => (Some(w.fid), None),
            (Msg::Topen(o), Msg::Ropen(_)) => (Some(o.fid), None),
            (Msg::Tlopen(o), Msg::Rlopen(_)) => (Some(o.fid), None),
            (Msg::Tgetattr(g), Msg::Rgetattr(_)) => (Some(g.fid), None),
            (Msg::Tstat(s), Msg::Rstat(_)) => (Some(s.fid), None),
            (Msg::Tcreate(c), Msg::Rcreate(_)) => (Some(c.fid), Some(&c.name[..])),
            (Msg::Tlcreate(c), Msg::Rlcreate(_)) => (Some(c.fid), Some(&c.name[..])),
            (Msg::Tmkdir(c), Msg::Rmkdir(_)) => (Some(c.dfid), Some(&c.name[..])),
            (Msg::Tsymlink(c), Msg::Rsymlink(_)) => (Some(c.fid), Some(&c.name[..])),
            (Msg::Tmknod(c), Msg::Rmknod(_)) => (Some(c.dfid), Some(&c.name[..])),
            (Msg::Treaddir(t), Msg::Rreaddir(_)) => (Some(t.fid), None),
            (Msg::Tread(t), Msg::Rread(_)) if self.fid_is_dir(t.fid) => (Some(t.fid), None),
            _ => return frame,
        };
        // With the service's own aname every attach reaches one tree; without, the client's
        // aname picks it.
        let root_key = |aname: &[u8]| match self.service.aname {
            Some(_) => qids::root_key(b""),
            None => qids::root_key(aname),
        };
        let mut p = core::mem::take(&mut self.path_key);
        match (fid, msg) {
            (None, Msg::Tattach(a)) => p.set_root(root_key(&a.aname)),
            (None, _) => p.set_root(root_key(b"")),
            (Some(fid), _) => match self.fids.get(fid.0) {
                Some(f) => {
                    let root = root_key(&self.fids.root(f.root).aname);
                    p.set_node(&self.fids.names, f.node, root)
                }
                None => {
                    self.path_key = p;
                    return frame;
                }
            },
        }
        let mut buf = BytesMut::from(&frame[..]);
        let done = match (msg, reply) {
            (Msg::Twalk(w), Msg::Rwalk(r)) => {
                for (i, name) in w.wnames.iter().take(r.wqids.len()).enumerate() {
                    p.push(name);
                    qids::patch(&mut buf, WALK_QIDS_AT + i * Qid::LEN, p.key());
                }
                true
            }
            (_, Msg::Rgetattr(_)) => {
                qids::patch(&mut buf, GETATTR_QID_AT, p.key());
                true
            }
            (_, Msg::Rstat(_)) => {
                qids::patch(&mut buf, STAT_QID_AT, p.key());
                true
            }
            (_, Msg::Rreaddir(_)) => buf.get_mut(DATA_AT..).is_some_and(|data| {
                dir::rewrite_dirent_qids(data, |name, q| *q = qids::stable(*q, p.entry(name)))
                    .is_ok()
            }),
            (_, Msg::Rread(_)) => {
                let dialect = self.dialect().unwrap_or(Dialect::Base);
                buf.get_mut(DATA_AT..).is_some_and(|data| {
                    dir::rewrite_stat_qids(data, dialect, |name, q| {
                        *q = qids::stable(*q, p.entry(name))
                    })
                    .is_ok()
                })
            }
            _ => {
                let key = name.map_or(p.key(), |n| p.entry(n));
                qids::patch(&mut buf, QID_AT, key);
                true
            }
        };
        self.path_key = p;
        if !done {
            return frame;
        }
        if matches!(reply, Msg::Rreaddir(_) | Msg::Rread(_)) {
            self.marks.hit(Mark::StableQidListing);
        }
        buf.freeze()
    }

    fn fid_is_dir(&self, fid: Fid) -> bool {
        self.fids.get(fid.0).is_some_and(|f| f.qid.is_dir())
    }
}
