//! Forwarding: client requests in (checked, held, dispatched to the link or answered here),
//! server replies out (checked against their requests, then recorded and passed on).

use super::*;

impl Session {
    // ---- client input --------------------------------------------------------------------

    /// The client went away.
    pub fn handle_client_closed(&mut self, _now: Instant) {
        if self.link == LinkState::Closed {
            return;
        }
        self.event(Event::ClientClosed);
        self.close();
    }

    pub(super) fn close(&mut self) {
        if let Some(link) = self.current_link() {
            self.emit(Output::CloseLink { link });
        }
        self.link = LinkState::Closed;
        self.recovery = None;
        self.requests.clear();
        self.queue.clear();
        self.held_bytes = 0;
        self.fids.clear();
    }

    pub(super) fn client_violation(&mut self, what: String) {
        self.event(Event::ProtocolViolation {
            peer: Peer::Client,
            what,
        });
        self.emit(Output::CloseClient);
        self.close();
    }

    /// The client's byte stream cannot be framed (`what` says why): its session is closed,
    /// as for any other client protocol violation.
    pub fn handle_client_garbage(&mut self, _now: Instant, what: String) {
        if self.link != LinkState::Closed {
            self.client_violation(what);
        }
    }

    /// One whole frame from the client (the driver frames the stream with
    /// [`client_msize`](Self::client_msize) as the bound).
    pub fn handle_client_frame(&mut self, now: Instant, frame: Bytes) {
        self.now = now;
        if self.link == LinkState::Closed {
            return;
        }
        let header = match Header::parse(&frame) {
            Ok(h) => h,
            Err(e) => return self.client_violation(alloc::format!("bad frame: {e}")),
        };
        let Some(ty) = MsgType::from_u8(header.msg_type).filter(|t| t.is_request()) else {
            return self.client_violation(alloc::format!(
                "message type {} is not a request",
                header.msg_type
            ));
        };
        let frame = match self.link {
            LinkState::Up { link } => match self.forward_io(link, &header, frame) {
                Some(frame) => frame,
                None => return,
            },
            _ => frame,
        };
        let tag = header.tag;
        if self.requests.contains_key(&tag) {
            return self.client_violation(alloc::format!("tag {tag} is already in use"));
        }
        if !self.flushed.is_empty() {
            // The tag is the client's again: a late reply to its flushed use is now ambiguous.
            self.flushed.remove(&tag);
        }
        if let LinkState::Idle { .. } = self.link {
            // The client has earned a backend.
            self.outage_since = Some(now);
            self.dial(now);
        }
        if ty == MsgType::Tversion && tag != NOTAG || ty != MsgType::Tversion && tag == NOTAG {
            // Answerable: the tag is ours to reply to.
            let dialect = self.dialect();
            return self.send_to_client(Failure::MALFORMED.reply(tag, dialect));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.held_bytes += pinned(frame.len());
        self.requests.insert(
            tag,
            Request {
                seq,
                frame,
                ty,
                state: RequestState::Queued,
                sent_at: now,
                bad_replies: 0,
                rooting: Rooting::Attach,
                waiting_flushes: Vec::new(),
                resolved: None,
                given_up: false,
                fsync_mark: 0,
            },
        );
        match self.link {
            LinkState::Up { .. } => self.dispatch(tag),
            _ if ty == MsgType::Tflush => self.flush_locally(tag),
            _ if self.gave_up => self.fail_unavailable(tag),
            _ => self.queue.push_back(tag),
        }
    }

    /// The hot path: a well-formed Tread or Twrite on a fid that is not lost, fitting the
    /// server, goes straight to the link with one table insert and no decoding. Gives the frame
    /// back to leave it to the general path.
    pub(super) fn forward_io(
        &mut self,
        link: LinkId,
        header: &Header,
        frame: Bytes,
    ) -> Option<Bytes> {
        let len = frame.len();
        let (ty, io) = match MsgType::from_u8(header.msg_type) {
            Some(MsgType::Tread) => match peek::tread(&frame) {
                Some(io) => (MsgType::Tread, io),
                None => return Some(frame),
            },
            Some(MsgType::Twrite) => match peek::twrite(&frame) {
                Some(io) => (MsgType::Twrite, io),
                None => return Some(frame),
            },
            _ => return Some(frame),
        };
        // The bytes asked for (Tread) or carried (Twrite) must fit the server's msize.
        let fits = io.count <= self.server_msize().saturating_sub(IOHDRSZ);
        if !fits || header.tag == NOTAG || self.negotiated.is_none() {
            return Some(frame);
        }
        if self.fids.any_lost() && self.fids.get(io.fid).is_some_and(|f| f.is_lost().is_some()) {
            return Some(frame);
        }
        let hashbrown::hash_map::Entry::Vacant(slot) = self.requests.entry(header.tag) else {
            return Some(frame);
        };
        slot.insert(Request {
            seq: self.next_seq,
            frame: frame.clone(),
            ty,
            state: RequestState::Sent(link),
            sent_at: self.now,
            bad_replies: 0,
            rooting: Rooting::Attach,
            waiting_flushes: Vec::new(),
            resolved: None,
            given_up: false,
            fsync_mark: 0,
        });
        self.next_seq += 1;
        self.held_bytes += pinned(len);
        self.out.push_back(Output::ToLink { link, frame });
        None
    }

    pub(super) fn decode_request(&self, frame: &Bytes) -> Option<Msg> {
        // Before a version is settled only Tversion is decodable, and it is the same in all.
        let dialect = self.dialect().unwrap_or(Dialect::DotL);
        Fcall::decode(frame, dialect).ok().map(|f| f.msg)
    }

    /// Remove a request, answering it with `frame`.
    pub(super) fn answer(&mut self, tag: u16, frame: Bytes) {
        if let Some(req) = self.requests.remove(&tag) {
            self.held_bytes -= pinned(req.frame.len());
            self.send_to_client(frame);
            self.answer_waiting_flush(tag, &req);
        }
    }

    /// `req` is answered: a Tflush held for it gets its Rflush now (flush(5) allows the
    /// flushed request's reply first) — if that tag still holds that flush (the client may
    /// have flushed the flush meanwhile, and used the tag again).
    pub(super) fn answer_waiting_flush(&mut self, tag: u16, req: &Request) {
        for &flush in &req.waiting_flushes {
            let still = self.requests.get(&flush).is_some_and(|f| {
                f.ty == MsgType::Tflush
                    && matches!(self.decode_request(&f.frame), Some(Msg::Tflush(t)) if t.oldtag == tag)
            });
            if still {
                self.answer(flush, reply::local(flush, Rflush {}));
            }
        }
    }

    pub(super) fn fail(&mut self, tag: u16, failure: Failure, why: &'static str) {
        let Some(req) = self.requests.get(&tag) else {
            return;
        };
        if matches!(
            failure,
            Failure::NOT_COMPLETED
                | Failure::UNAVAILABLE
                | Failure::WRITES_LOST
                | Failure::INVALID_REPLY
        ) {
            let request = req.ty;
            self.event(Event::RequestFailed {
                tag,
                request,
                failure,
                why,
            });
        }
        let frame = failure.reply(tag, self.dialect());
        self.answer(tag, frame);
    }

    /// What a failed request still does to the fid table: Tremove forgets its fid even when it
    /// fails, and a failed fsync has reported the lost writes.
    pub(super) fn apply_failure(&mut self, msg: &Msg) {
        match msg {
            Msg::Tremove(r) => self.forget_fid(r.fid.0),
            Msg::Tfsync(f) => {
                // The failure reported the lost writes: those acknowledged so far are settled.
                let mark = self.fids.unsynced.fsync_mark();
                self.fids.fsynced(f.fid.0, mark);
            }
            _ => {}
        }
    }

    pub(super) fn clunk_locally(&mut self, tag: u16, msg: &Msg) {
        if let Msg::Tclunk(c) = msg {
            self.forget_fid(c.fid.0);
        }
        self.answer(tag, reply::local(tag, Rclunk {}));
    }

    /// Forget a fid without telling the server. A recovery under way may be rebuilding it on
    /// the new link: it clunks it there before it ends.
    pub(super) fn forget_fid(&mut self, fid: u32) {
        if self.fids.remove(fid).is_some() {
            if let Some(r) = &mut self.recovery {
                r.forget(fid);
            }
        }
    }

    /// Answer a Tflush here (no link holds the request it names). The request is dropped
    /// unanswered where that tells the client the truth (flush(5): flushed without a reply, it
    /// never happened): it was never sent, it was looked for and had not run, or it has no
    /// effect a lost link could leave behind. One in flight at a loss that may have changed
    /// something keeps the Rflush waiting until it is answered (its reply first, as flush(5)
    /// allows); one found done is answered as done first.
    pub(super) fn flush_locally(&mut self, tag: u16) {
        let oldtag = self
            .requests
            .get(&tag)
            .and_then(|r| self.decode_request(&r.frame))
            .and_then(|m| match m {
                Msg::Tflush(f) => Some(f.oldtag),
                _ => None,
            });
        if let Some(old) = oldtag.filter(|&o| o != tag) {
            let fate_unknown = self.requests.get(&old).is_some_and(|r| {
                r.state == RequestState::Orphaned
                    && r.resolved.is_none_or(|o| o == Outcome::Unknown)
                    && replay::has_effect(r.ty)
            });
            if fate_unknown {
                self.marks.hit(Mark::FlushAwaitsOutcome);
                if let Some(req) = self.requests.get_mut(&old) {
                    req.waiting_flushes.push(tag);
                }
                if let Some(flush) = self.requests.get_mut(&tag) {
                    flush.state = RequestState::AwaitingFlushed;
                }
                self.queue.retain(|&t| t != tag);
                return;
            }
            // Found done after a loss: the fid table says so, and the client must hear it
            // (flush(5) lets the reply come before the Rflush).
            let done = self.requests.get(&old).and_then(|r| match r.resolved {
                Some(Outcome::Done(qid)) => Some((qid, self.decode_request(&r.frame)?)),
                _ => None,
            });
            if let Some((qid, msg)) = done {
                self.queue.retain(|&t| t != old);
                self.answer_done(old, &msg, qid);
            }
            if let Some(req) = self.requests.remove(&old) {
                self.held_bytes -= pinned(req.frame.len());
                self.queue.retain(|&t| t != old);
                // Earlier flushes of it are answered too, before this one.
                self.answer_waiting_flush(old, &req);
            }
        }
        self.queue.retain(|&t| t != tag);
        self.answer(tag, reply::local(tag, Rflush {}));
    }

    /// Send a held request to the server, or answer it here when it names a lost fid, cannot
    /// fit the current server, or reports lost writes.
    pub(super) fn dispatch(&mut self, tag: u16) {
        let LinkState::Up { link } = self.link else {
            if let Some(req) = self.requests.get_mut(&tag) {
                req.state = RequestState::Queued;
                self.queue.push_back(tag);
            }
            return;
        };
        let Some(req) = self.requests.get(&tag) else {
            return;
        };
        let (ty, frame) = (req.ty, req.frame.clone());
        if self.negotiated.is_none() && ty != MsgType::Tversion {
            return self.fail(tag, Failure::NOT_VERSIONED, "before Tversion");
        }
        // Reads and writes on a live link took `forward_io`; what reaches here is queued,
        // orphaned or unusual, so it is decoded and checked in full.
        let Some(msg) = self.decode_request(&frame) else {
            return self.fail(tag, Failure::MALFORMED, "undecodable");
        };
        if let Some(lost) = lost_fid(&self.fids, &msg) {
            return match msg {
                Msg::Tclunk(_) => self.clunk_locally(tag, &msg),
                _ => self.fail(tag, lost_failure(lost), "fid lost"),
            };
        }
        match &msg {
            Msg::Tfsync(f) => {
                if let Some(why) = self.fids.writes_lost(f.fid.0) {
                    self.apply_failure(&msg);
                    return self.fail(tag, Failure::WRITES_LOST, why);
                }
                // It covers the writes acknowledged before it is sent, and no later ones.
                let mark = self.fids.unsynced.fsync_mark();
                if let Some(req) = self.requests.get_mut(&tag) {
                    req.fsync_mark = mark;
                }
            }
            Msg::Tversion(_) => self.start_version_reset(tag),
            Msg::Tflush(f) if self.hold_flush(tag, f.oldtag, link) => return,
            Msg::Twalk(w) if self.walks_above_service_root(w) => {
                return self.fail(tag, Failure::ABOVE_SERVICE_ROOT, "walks above the root")
            }
            _ => {}
        }
        let Some(wire) = self.fit_to_server(&frame, ty) else {
            return self.fail(tag, Failure::TOO_LARGE, "larger than the server's msize");
        };
        // A fitted frame is a new buffer; one that fits is the same bytes.
        if wire.as_ptr() != frame.as_ptr() {
            self.marks.hit(Mark::MsizeClamp);
        }
        // A mux's backend is attached as its service says, not as the client asked.
        let wire = match &msg {
            Msg::Tattach(_) | Msg::Tauth(_) if !self.service.is_plain() => {
                self.to_service(tag, msg).unwrap_or(wire)
            }
            _ => wire,
        };
        if let Some(req) = self.requests.get_mut(&tag) {
            req.state = RequestState::Sent(link);
            req.sent_at = self.now;
            req.rooting = Rooting::Attach; // a resent attach starts over
            req.resolved = None; // sent again: its outcome is the new link's
        }
        self.emit(Output::ToLink { link, frame: wire });
    }

    /// A later Tversion resets the session: every other request is abandoned (version(5)).
    pub(super) fn start_version_reset(&mut self, tag: u16) {
        let others: Vec<u16> = self
            .requests
            .keys()
            .copied()
            .filter(|&t| t != tag)
            .collect();
        for t in others {
            if let Some(req) = self.requests.remove(&t) {
                self.held_bytes -= pinned(req.frame.len());
            }
        }
        self.queue.clear();
    }

    /// The frame as the current server can take it: reads clamped and writes shortened when
    /// its msize is smaller than the client's (short reads and writes are legal 9P).
    pub(super) fn fit_to_server(&self, frame: &Bytes, ty: MsgType) -> Option<Bytes> {
        let msize = self.server_msize();
        let limit = msize as usize;
        match ty {
            MsgType::Tread | MsgType::Treaddir => {
                let count = u32::from_le_bytes(frame.get(19..23)?.try_into().ok()?);
                let most = msize.saturating_sub(IOHDRSZ);
                if count <= most {
                    return Some(frame.clone());
                }
                let mut f = BytesMut::from(&frame[..]);
                f[19..23].copy_from_slice(&most.to_le_bytes());
                Some(f.freeze())
            }
            MsgType::Twrite
                if frame.len() - peek::TWRITE_HEADER > msize.saturating_sub(IOHDRSZ) as usize =>
            {
                let keep = msize.checked_sub(IOHDRSZ)? as usize;
                let mut f = BytesMut::with_capacity(peek::TWRITE_HEADER + keep);
                f.put_u32_le((peek::TWRITE_HEADER + keep) as u32);
                f.put_slice(&frame[4..19]);
                f.put_u32_le(keep as u32);
                f.put_slice(&frame[peek::TWRITE_HEADER..peek::TWRITE_HEADER + keep]);
                Some(f.freeze())
            }
            _ if frame.len() > limit => None,
            _ => Some(frame.clone()),
        }
    }

    // ---- server input --------------------------------------------------------------------

    pub(super) fn server_violation(&mut self, now: Instant, link: LinkId, what: String) {
        self.event(Event::ProtocolViolation {
            peer: Peer::Server,
            what: what.clone(),
        });
        self.abandon_link(now, link, LinkLoss::Violation, what);
    }

    /// One whole frame from the server on `link`.
    pub fn handle_server_frame(&mut self, now: Instant, link: LinkId, frame: Bytes) {
        self.now = now;
        if self.current_link() == Some(link) {
            self.last_server_input = now;
            if !self.link_answered {
                self.link_answered = true;
                self.report(now, Health::Up);
            }
        }
        match self.link {
            LinkState::Up { link: l } if l == link => self.server_reply(now, link, frame),
            LinkState::Recovering { link: l } if l == link => {
                if let Some(r) = &mut self.recovery {
                    let progress = r.handle_reply(now, &frame, &mut lend!(self));
                    self.recovery_progress(now, link, progress);
                }
            }
            _ => {} // a link we no longer use
        }
    }

    pub(super) fn server_reply(&mut self, now: Instant, link: LinkId, frame: Bytes) {
        let header = match Header::parse(&frame) {
            Ok(h) => h,
            Err(e) => return self.server_violation(now, link, alloc::format!("bad frame: {e}")),
        };
        let tag = header.tag;
        let sent_here = self
            .requests
            .get(&tag)
            .is_some_and(|r| r.state == RequestState::Sent(link));
        if !sent_here {
            // A reply after the server's Rflush for it: the server answered before it saw the
            // flush, and sent both. Dropped; the client was told the request never happened.
            if let Some(ty) = self.flushed.remove(&tag) {
                self.marks.hit(Mark::LateReplyDropped);
                self.event(Event::LateReply { tag });
                // A request that changes fids or locks did so on the server, while the client
                // was told it never happened: the link goes, and the fids are rebuilt as the
                // client knows them.
                let failed = reply::is_error_type(header.msg_type);
                if !failed && !changes_nothing_but_data(ty) {
                    let what = alloc::format!(
                        "{} (tag {tag}) was carried out after the server answered its Tflush",
                        ty.name()
                    );
                    self.abandon_link(now, link, LinkLoss::Violation, what);
                }
                return;
            }
            return self.server_violation(now, link, alloc::format!("reply to unknown tag {tag}"));
        }
        let Some(req) = self.requests.remove(&tag) else {
            return;
        };
        let req = if req.ty == MsgType::Tattach && !self.service.path.is_empty() {
            match self.service_attach_reply(now, link, tag, req, header.msg_type, &frame) {
                Some(req) => req,
                None => return,
            }
        } else {
            req
        };
        // Hot path: Rread and Rwrite are checked by their lengths alone (and a read by the count
        // it asked for).
        let fast = match (req.ty, MsgType::from_u8(header.msg_type)) {
            (MsgType::Tread, Some(MsgType::Rread)) => {
                let asked = peek::tread(&req.frame).map(|t| t.count);
                peek::rread(&frame).is_some_and(|n| Some(n) <= asked)
            }
            (MsgType::Twrite, Some(MsgType::Rwrite)) => peek::rwrite(&frame).is_some(),
            _ => false,
        };
        // One fid lookup: a file's read has nothing to record; a directory's is checked on the
        // general path; a write marks its fid unsynced.
        if fast && (req.ty == MsgType::Twrite || !self.is_dir_read(&req)) {
            self.held_bytes -= pinned(req.frame.len());
            if req.ty == MsgType::Twrite {
                let written = peek::rwrite(&frame).unwrap_or(0);
                self.apply_io_reply(&req, written as usize);
            }
            self.answered_after_outage();
            return self.reply_to_client(tag, &req, frame);
        }
        let dialect = if req.ty == MsgType::Tversion {
            None // before the version is settled, errors come in plain 9P2000
        } else {
            self.dialect()
        };
        // Errors in any shape are errors: forwarded in the shape the client's dialect has.
        if reply::is_error_type(header.msg_type) {
            let Some(frame) = reply::reshape_error(&frame, dialect) else {
                return self.bad_reply(now, link, tag, req, "undecodable error reply".into());
            };
            if frame.1 {
                self.marks.hit(Mark::ErrorReshaped);
            }
            self.held_bytes -= pinned(req.frame.len());
            self.apply_error(&req);
            self.answered_after_outage();
            return self.reply_to_client(tag, &req, frame.0);
        }
        let reply = match Fcall::decode(&frame, dialect.unwrap_or(Dialect::DotL)) {
            Ok(f) => f.msg,
            Err(e) => return self.bad_reply(now, link, tag, req, alloc::format!("{e}")),
        };
        let reply_ty = reply.msg_type();
        if Some(reply_ty) != req.ty.reply() {
            let what = alloc::format!("answered with {}", reply_ty.name());
            return self.bad_reply(now, link, tag, req, what);
        }
        // The request is decoded once: to check the reply against it, and to record it.
        let request = self.decode_request(&req.frame);
        if let Some(what) = request
            .as_ref()
            .and_then(|msg| self.invalid_reply(&req, msg, &reply))
        {
            return self.bad_reply(now, link, tag, req, what);
        }
        // The msize is the smaller of what the client asked and what the server offers.
        let (frame, reply) = match (reply, &request) {
            (Msg::Rversion(mut rv), Some(Msg::Tversion(tv))) if rv.msize > tv.msize => {
                rv.msize = tv.msize;
                (reply::local(tag, rv.clone()), Msg::Rversion(rv))
            }
            (reply, _) => (frame, reply),
        };
        let req = match (&request, &reply) {
            (Some(Msg::Tflush(f)), Msg::Rflush(_)) if !self.service.path.is_empty() => {
                match self.hold_flush_reply(tag, f.oldtag, req) {
                    Some(req) => req,
                    None => return,
                }
            }
            _ => req,
        };
        self.held_bytes -= pinned(req.frame.len());
        let frame = match &request {
            Some(msg) => self.client_qids(msg, &reply, frame),
            None => frame,
        };
        match (req.ty, request) {
            (MsgType::Tread | MsgType::Twrite, _) => self.apply_reply(&req, &reply, false),
            (MsgType::Tfsync, Some(Msg::Tfsync(f))) => {
                // Durable: the writes acknowledged before it was sent need no rewriting.
                self.fids.fsynced(f.fid.0, req.fsync_mark);
            }
            (_, Some(msg)) => self.record(&msg, &reply, &req.frame),
            (_, None) => {}
        }
        self.answered_after_outage();
        self.reply_to_client(tag, &req, frame);
    }

    /// The server's reply to `req` (tag `tag`, already out of the table) goes to the client,
    /// and then the Rflush of any flush held for it.
    fn reply_to_client(&mut self, tag: u16, req: &Request, frame: Bytes) {
        self.send_to_client(frame);
        if !req.waiting_flushes.is_empty() {
            self.answer_waiting_flush(tag, req);
        }
    }

    /// The server answered a request on a recovered link: the outage is over.
    pub(super) fn answered_after_outage(&mut self) {
        if self.reset_on_reply {
            self.end_outage();
        }
    }

    /// Whether `req` reads a directory (its entries are checked before they are forwarded).
    pub(super) fn is_dir_read(&self, req: &Request) -> bool {
        req.ty == MsgType::Tread
            && self
                .fids
                .get(peek::first_fid(&req.frame).unwrap_or(NOFID.0))
                .is_some_and(|f| f.qid.is_dir())
    }

    /// What makes a well-formed reply of the right type still wrong for its request, if
    /// anything: a walk answered with more qids than names, a read with more bytes than asked,
    /// directory entries that do not parse, an msize no one can use.
    pub(super) fn invalid_reply(&self, req: &Request, msg: &Msg, reply: &Msg) -> Option<String> {
        match (msg, reply) {
            (Msg::Twalk(w), Msg::Rwalk(r)) if r.wqids.len() > w.wnames.len() => Some(
                alloc::format!("{} qids for {} names", r.wqids.len(), w.wnames.len()),
            ),
            (Msg::Tread(t), Msg::Rread(r)) if r.data.0.len() > t.count as usize => Some(
                alloc::format!("{} bytes for a read of {}", r.data.0.len(), t.count),
            ),
            (Msg::Treaddir(t), Msg::Rreaddir(r)) => {
                if r.data.0.len() > t.count as usize {
                    return Some(alloc::format!(
                        "{} bytes for a readdir of {}",
                        r.data.0.len(),
                        t.count
                    ));
                }
                dir::dirents(&r.data.0)
                    .find_map(Result::err)
                    .map(|e| alloc::format!("bad directory entry: {e}"))
            }
            (Msg::Tread(t), Msg::Rread(r)) if self.is_dir_read(req) => {
                let dialect = self.dialect().unwrap_or(Dialect::Base);
                let _ = t;
                dir::stat_records(&r.data.0, dialect)
                    .find_map(Result::err)
                    .map(|e| alloc::format!("bad directory entry: {e}"))
            }
            (Msg::Tversion(_), Msg::Rversion(rv)) if rv.msize < MIN_MSIZE => Some(alloc::format!(
                "msize {} is below the least usable, {MIN_MSIZE}",
                rv.msize
            )),
            _ => None,
        }
    }

    /// A reply that breaks the protocol, for request `tag`: the link goes (the server may be
    /// confused about what it did), and the request is resent by the replay table — but a
    /// request that draws a second bad reply is failed, never to be resent (a poison pill).
    pub(super) fn bad_reply(
        &mut self,
        now: Instant,
        link: LinkId,
        tag: u16,
        mut req: Request,
        what: String,
    ) {
        req.bad_replies = req.bad_replies.saturating_add(1);
        let what = alloc::format!("{} (tag {tag}) got an invalid reply: {what}", req.ty.name());
        let poison = req.bad_replies >= 2;
        let msg = self.decode_request(&req.frame);
        self.requests.insert(tag, req);
        if poison {
            self.marks.hit(Mark::InvalidReplyFailed);
            if let Some(msg) = &msg {
                self.apply_failure(msg);
            }
            self.fail(
                tag,
                Failure::INVALID_REPLY,
                "the server's replies to it were invalid",
            );
        }
        self.server_violation(now, link, what);
    }
}
