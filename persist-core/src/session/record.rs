//! Recording (DESIGN §3.2): what each reply does to the fid table, the path names, open modes,
//! directory offsets, locks and unsynced writes — the state a recovery rebuilds from.

use super::*;

use crate::fids::Kept;

impl Session {
    /// What an error reply still does: clunk and remove forget their fid whatever the outcome.
    pub(super) fn apply_error(&mut self, req: &Request) {
        if matches!(req.ty, MsgType::Tclunk | MsgType::Tremove) {
            if let Some(fid) = peek::first_fid(&req.frame) {
                self.fids.remove(fid);
            }
        }
    }

    /// What a successful read or write changes: a directory's position; for a write of `n`
    /// bytes, its fid's unsynced mark, and the write kept to be written again after a
    /// reconnect (unless it appended, or the fid's unsynced writes are already not all kept).
    pub(super) fn apply_io_reply(&mut self, req: &Request, n: usize) {
        let io = match req.ty {
            MsgType::Tread => peek::tread(&req.frame),
            _ => peek::twrite(&req.frame),
        };
        let Some(io) = io else {
            return;
        };
        if req.ty != MsgType::Twrite {
            if let Some(rec) = self.fids.get_mut(io.fid).filter(|r| r.qid.is_dir()) {
                rec.dir_offset = io.offset + n as u64;
            }
            return;
        }
        let frame = &req.frame;
        let end = peek::TWRITE_HEADER + n.min(io.count as usize);
        let data = || {
            (n > 0 && end <= frame.len()).then(|| {
                // The slice keeps its whole read buffer alive.
                let charge = pinned(frame.len());
                (frame.slice(peek::TWRITE_HEADER..end), charge)
            })
        };
        let budget = self.cfg.replay_budget;
        if self.fids.acked_write(io.fid, io.offset, data, budget) == Kept::OverBudget {
            self.marks.hit(Mark::ReplayBudgetSpent);
        }
    }

    /// Record what a reply did: the fid table changes only on success (but clunk and remove
    /// forget their fid whatever the outcome).
    pub(super) fn apply_reply(&mut self, req: &Request, reply: &Msg, is_error: bool) {
        match (req.ty, reply) {
            (MsgType::Tread, Msg::Rread(r)) => return self.apply_io_reply(req, r.data.0.len()),
            (MsgType::Twrite, Msg::Rwrite(w)) => return self.apply_io_reply(req, w.count as usize),
            _ => {}
        }
        let Some(msg) = self.decode_request(&req.frame) else {
            return;
        };
        if is_error {
            match msg {
                Msg::Tclunk(c) => drop(self.fids.remove(c.fid.0)),
                Msg::Tremove(r) => drop(self.fids.remove(r.fid.0)),
                _ => {}
            }
            return;
        }
        self.record(&msg, reply, &req.frame);
    }

    /// The fid-table effect of a successful request.
    pub(super) fn record(&mut self, msg: &Msg, reply: &Msg, frame: &Bytes) {
        let fids = &mut self.fids;
        match (msg, reply) {
            (Msg::Tversion(_), Msg::Rversion(rv)) => {
                fids.clear();
                self.negotiated = Dialect::from_version(&rv.version).map(|dialect| Negotiated {
                    version: Bytes::copy_from_slice(&rv.version),
                    dialect,
                    msize: rv.msize,
                });
                self.server_msize = rv.msize;
            }
            (Msg::Tattach(a), Msg::Rattach(r)) => {
                let root = fids.intern_root(&a.uname, &a.aname, a.n_uname, a.afid != NOFID);
                let node = fids.root(root).node;
                let rec = fids.record_at(root, node, r.qid);
                fids.insert(a.fid.0, rec);
                fids.release_root_ref(root);
            }
            (Msg::Tauth(a), Msg::Rauth(r)) => {
                let root = fids.intern_root(&a.uname, &a.aname, a.n_uname, true);
                let node = fids.root(root).node;
                let mut rec = fids.record_at(root, node, r.aqid);
                rec.kind = FidKind::Auth;
                fids.insert(a.afid.0, rec);
                fids.release_root_ref(root);
            }
            (Msg::Twalk(w), Msg::Rwalk(r)) if r.wqids.len() == w.wnames.len() => {
                let Some(src) = fids.get(w.fid.0) else {
                    return;
                };
                let (root, start, src_qid) = (src.root, src.node, src.qid);
                let mut node = start;
                fids.names.retain(node);
                for name in w.wnames.iter() {
                    let next = fids.names.child(node, name);
                    fids.names.release(node);
                    node = next;
                }
                let qid = r.wqids.last().unwrap_or(src_qid);
                let rec = fids.record_at(root, node, qid);
                fids.names.release(node);
                fids.insert(w.newfid.0, rec);
            }
            (Msg::Topen(o), Msg::Ropen(r)) => {
                if o.mode & p9_core::open_mode::TRUNC != 0 {
                    fids.unsynced.truncated(r.qid.path);
                }
                open(fids, o.fid.0, OpenMode::Classic(o.mode), r.qid)
            }
            (Msg::Tlopen(o), Msg::Rlopen(r)) => {
                if o.flags & p9_core::lflags::TRUNC != 0 {
                    fids.unsynced.truncated(r.qid.path);
                }
                open(fids, o.fid.0, OpenMode::DotL(o.flags), r.qid)
            }
            (Msg::Tclunk(c), _) => drop(fids.remove(c.fid.0)),
            (Msg::Treaddir(t), Msg::Rreaddir(r)) => {
                let last = dir::dirents(&r.data.0).filter_map(Result::ok).last();
                if let Some(rec) = fids.get_mut(t.fid.0) {
                    rec.dir_offset = last.map_or(t.offset, |d| d.offset);
                }
            }
            (Msg::Tlock(l), Msg::Rlock(r)) if r.status == p9_core::lock_status::SUCCESS => {
                let max = self.cfg.max_lock_history;
                if let Some(rec) = fids.get_mut(l.fid.0) {
                    if l.typ == p9_core::lock_type::UNLCK && l.start == 0 && l.length == 0 {
                        rec.locks = None;
                    } else {
                        let history = rec.locks.get_or_insert_with(Default::default);
                        if history.0.len() < max {
                            history.0.push(frame.clone());
                        } else {
                            rec.flags |= flag::LOCKS_OVERFLOWED;
                        }
                    }
                }
            }
            (Msg::Txattrwalk(x), Msg::Rxattrwalk(_)) => {
                if let Some((root, node, qid)) = fids.get(x.fid.0).map(|f| (f.root, f.node, f.qid))
                {
                    let mut rec = fids.record_at(root, node, qid);
                    rec.kind = FidKind::Xattr;
                    fids.insert(x.newfid.0, rec);
                }
            }
            (Msg::Txattrcreate(x), Msg::Rxattrcreate(_)) => {
                if let Some(rec) = fids.get_mut(x.fid.0) {
                    rec.kind = FidKind::Xattr;
                }
            }
            (Msg::Tflush(f), Msg::Rflush(_)) => {
                // flush(5): after Rflush the old request gets no reply (one that comes anyway is
                // dropped).
                if let Some(old) = self.requests.remove(&f.oldtag) {
                    self.held_bytes -= pinned(old.frame.len());
                    if matches!(old.state, RequestState::Sent(_)) {
                        self.flushed.insert(f.oldtag, old.ty);
                    }
                    // Flushes held for it while its fate was unknown: it is settled now.
                    self.answer_waiting_flush(f.oldtag, &old);
                }
            }
            _ => record_names(fids, msg, reply),
        }
    }
}

/// The fid-table effect of a successful create, remove or rename (or truncation): shared with
/// the recovery, which applies it for such a request found done on the server after a loss.
pub(crate) fn record_names(fids: &mut FidTable, msg: &Msg, reply: &Msg) {
    match (msg, reply) {
        (Msg::Tcreate(c), Msg::Rcreate(r)) => {
            move_to_child(fids, c.fid.0, &c.name);
            open(fids, c.fid.0, OpenMode::Classic(c.mode), r.qid)
        }
        (Msg::Tlcreate(c), Msg::Rlcreate(r)) => {
            move_to_child(fids, c.fid.0, &c.name);
            open(fids, c.fid.0, OpenMode::DotL(c.flags), r.qid)
        }
        (Msg::Tremove(r), reply) => {
            let gone = fids.remove(r.fid.0);
            // Its unsynced writes no longer matter (a hard link's other name forgets them too).
            if let (Some(rec), Msg::Rremove(_)) = (gone, reply) {
                fids.unsynced.removed(rec.qid.path);
            }
        }
        (Msg::Tsetattr(a), Msg::Rsetattr(_)) if a.valid & SETATTR_SIZE != 0 => {
            fids.truncated(a.fid.0);
        }
        (Msg::Twstat(w), Msg::Rwstat(_)) if w.stat.length != u64::MAX => {
            fids.truncated(w.fid.0);
            if !w.stat.name.is_empty() {
                rename_by_wstat(fids, w.fid.0, &w.stat.name);
            }
        }
        (Msg::Twstat(w), Msg::Rwstat(_)) if !w.stat.name.is_empty() => {
            rename_by_wstat(fids, w.fid.0, &w.stat.name);
        }
        (Msg::Trename(t), Msg::Rrename(_)) => {
            let (Some(node), Some(dir)) = (
                fids.get(t.fid.0).map(|f| f.node),
                fids.get(t.dfid.0).map(|f| f.node),
            ) else {
                return;
            };
            fids.names.rename(node, dir, &t.name);
        }
        (Msg::Trenameat(t), Msg::Rrenameat(_)) => {
            let (Some(old), Some(new)) = (
                fids.get(t.olddirfid.0).map(|f| f.node),
                fids.get(t.newdirfid.0).map(|f| f.node),
            ) else {
                return;
            };
            if let Some(node) = fids.names.lookup(old, &t.oldname) {
                fids.names.rename(node, new, &t.newname);
            }
        }
        _ => {}
    }
}

/// The `valid` bit of a Tsetattr that sets the size (Linux's P9_ATTR_SIZE).
const SETATTR_SIZE: u32 = 0x8;

/// A renaming Twstat of `fid` succeeded: its node takes the new name in the same directory.
fn rename_by_wstat(fids: &mut FidTable, fid: u32, name: &[u8]) {
    if let Some(node) = fids.get(fid).map(|f| f.node) {
        if let Some(parent) = fids.names.parent(node) {
            fids.names.rename(node, parent, name);
        }
    }
}

pub(super) fn lost_fid(fids: &FidTable, msg: &Msg) -> Option<LostReason> {
    msg.used_fids()
        .as_slice()
        .iter()
        .find_map(|&f| fids.get(f).and_then(FidRec::is_lost))
}

pub(super) fn lost_failure(reason: LostReason) -> Failure {
    match reason {
        LostReason::Stale => Failure::STALE,
        LostReason::Io => Failure::IO,
    }
}

pub(super) fn open(fids: &mut FidTable, fid: u32, mode: OpenMode, qid: Qid) {
    if let Some(rec) = fids.get_mut(fid) {
        rec.kind = FidKind::Open(mode);
        rec.qid = qid;
        rec.dir_offset = 0;
        if matches!(mode, OpenMode::DotL(flags) if flags & p9_core::lflags::APPEND != 0) {
            rec.flags |= flag::APPENDS;
        } else {
            rec.flags &= !flag::APPENDS;
        }
    }
}

/// Tcreate/Tlcreate: the fid becomes the new file inside the directory it stood for.
pub(super) fn move_to_child(fids: &mut FidTable, fid: u32, name: &[u8]) {
    let Some(node) = fids.get(fid).map(|f| f.node) else {
        return;
    };
    let child = fids.names.child(node, name);
    fids.names.release(node);
    if let Some(rec) = fids.get_mut(fid) {
        rec.node = child;
    }
}
