//! The link to the server: dialing, losing it, redialing with backoff, handing a new link to
//! recovery, resuming service; and what each deadline does when it comes.

use super::*;

use p9_core::{Rlopen, Tlopen};

use crate::resolve;

/// Why a request the recovery looked for fails: what it saw settles nothing; or the link was
/// given up on, and its server may run the request yet.
fn unseen_why(req: &Request) -> &'static str {
    match req.given_up {
        true => "in flight on a link given up as hung or broken, whose server may run it yet",
        false => {
            "in flight when the link died, and what the server shows does not tell whether it ran"
        }
    }
}

impl Session {
    // ---- link lifecycle --------------------------------------------------------------------

    pub(super) fn dial(&mut self, now: Instant) {
        self.next_link += 1;
        let link = LinkId(self.next_link);
        self.backend = self.backends.choose(now, self.dialed, self.pick);
        self.dialed = Some(self.backend);
        self.link = LinkState::Dialing { link, since: now };
        self.emit(Output::Dial {
            link,
            backend: self.backend,
        });
    }

    /// The new link is to another backend than the last (mux): files open on the failed one
    /// cannot follow — their fids answer "i/o error" (.L: EIO) until clunked, and requests in
    /// flight on them fail the same way; unopened fids are rebuilt by path on the new one by
    /// the recovery that follows, as after any reconnect.
    fn fail_over(&mut self, from: BackendId) {
        let mut open: Vec<u32> = self
            .fids
            .fids
            .iter()
            .filter(|(_, f)| matches!(f.kind, FidKind::Open(_)))
            .map(|(&fid, _)| fid)
            .collect();
        open.sort_unstable();
        if !open.is_empty() {
            self.marks.hit(Mark::FailoverOpenFidsFail);
        }
        if self.fids.fids.values().any(|f| f.kind == FidKind::Walked) {
            self.marks.hit(Mark::FailoverFidsMove);
        }
        // Unsynced writes were to the failed backend's files, which these records name by that
        // server's qid paths: they cannot be written again, and the fids that made them fail.
        self.fids.unsynced.clear();
        for &fid in &open {
            if self.fids.mark_lost(fid, LostReason::Io) {
                self.event(Event::FidLost {
                    fid,
                    reason: LostReason::Io,
                    why: "it was open on a backend that failed".into(),
                });
            }
        }
        self.event(Event::Failover {
            from,
            to: self.backend,
            open_fids_lost: open.len(),
        });
    }

    /// Tell the endpoint what became of the current backend.
    pub(super) fn report(&mut self, now: Instant, health: Health) {
        self.backends.report(now, self.backend, health);
    }

    /// The dial of `link` succeeded.
    pub fn handle_link_up(&mut self, now: Instant, link: LinkId) {
        if !matches!(self.link, LinkState::Dialing { link: l, .. } if l == link) {
            return;
        }
        // The backend is reported up when it first answers on the link, not now: a hung
        // server still accepts connections, and must not count as healthy for doing so.
        self.link_answered = false;
        self.service = self.backends.root(self.backend);
        self.event(Event::Connected {
            backend: self.backend,
            link,
        });
        let from = self.linked.replace(self.backend);
        if let Some(from) = from.filter(|&b| b != self.backend) {
            self.fail_over(from);
        }
        self.last_server_input = now;
        self.flushed.clear();
        if self.negotiated.is_none() {
            // Nothing to rebuild: the client has not even settled a version.
            self.server_msize = u32::MAX;
            self.link_recovered(now, link);
        } else {
            self.link = LinkState::Recovering { link };
            let recovery = Recovery::start(now, link, &mut lend!(self));
            self.recovery = Some(recovery);
        }
    }

    /// The dial of `link` failed.
    pub fn handle_dial_failed(&mut self, now: Instant, link: LinkId, reason: &str) {
        if !matches!(self.link, LinkState::Dialing { link: l, .. } if l == link) {
            return;
        }
        self.report(now, Health::DialFailed);
        self.event(Event::DialFailed {
            backend: self.backend,
            reason: reason.to_string(),
        });
        self.schedule_redial(now);
    }

    /// `link` closed or failed.
    pub fn handle_link_down(&mut self, now: Instant, link: LinkId, reason: &str) {
        if self.current_link() != Some(link) {
            return;
        }
        if matches!(self.link, LinkState::Dialing { .. }) {
            return self.handle_dial_failed(now, link, reason);
        }
        self.report(now, Health::Lost(LinkLoss::Closed));
        self.event(Event::Disconnected {
            backend: self.backend,
            link,
            loss: LinkLoss::Closed,
            reason: reason.to_string(),
        });
        self.lose_link(now, LinkLoss::Closed);
    }

    /// Give up on the current link ourselves (violation, watchdog) and redial.
    pub(super) fn abandon_link(
        &mut self,
        now: Instant,
        link: LinkId,
        loss: LinkLoss,
        reason: String,
    ) {
        self.report(now, Health::Lost(loss));
        self.emit(Output::CloseLink { link });
        self.event(Event::Disconnected {
            backend: self.backend,
            link,
            loss,
            reason,
        });
        if matches!(self.link, LinkState::Dialing { .. }) {
            self.schedule_redial(now);
        } else {
            self.lose_link(now, loss);
        }
    }

    /// The link is gone (`loss` says how): orphan what was in flight on it, remember which
    /// fids had writes not yet made durable, and schedule a redial.
    pub(super) fn lose_link(&mut self, now: Instant, loss: LinkLoss) {
        let Some(link) = self.current_link() else {
            return;
        };
        self.recovery = None;
        let mut flushes = Vec::new();
        for (tag, req) in self.requests.iter_mut() {
            if req.state == RequestState::Sent(link) {
                req.state = RequestState::Orphaned;
                // A link given up on (hung, broken) may still have a server behind it, running
                // what it was sent: an absent name then does not show a request never ran.
                req.given_up = loss != LinkLoss::Closed;
                if req.ty == MsgType::Tflush {
                    flushes.push((req.seq, *tag));
                }
            }
        }
        // A Tremove in flight that is not settled by looking is never resent and forgets its fid
        // whatever happens, so its fid is not rebuilt: rebuilt, the new server would keep it
        // and refuse its number later. (Looking needs its path: the recovery decides.)
        let removed: Vec<u32> = self
            .requests
            .values()
            .filter(|r| r.state == RequestState::Orphaned && r.ty == MsgType::Tremove)
            .filter(|_| !self.cfg.resolve_ambiguous)
            .filter_map(|r| peek::first_fid(&r.frame))
            .collect();
        for fid in removed {
            if self.fids.remove(fid).is_some() {
                self.marks.hit(Mark::RecoveryRemovedNotRebuilt);
            }
        }
        // A flush in flight is answered now: its request will never be answered.
        flushes.sort_unstable();
        for (_, tag) in flushes {
            self.marks.hit(Mark::ReplayFlushLocally);
            self.flush_locally(tag);
        }
        // A truncation in flight may have run: kept writes are not written again across it
        // (they would bring back what it cut off), as after one that was answered.
        let truncating: Vec<u32> = self
            .requests
            .values()
            .filter(|r| {
                r.state == RequestState::Orphaned
                    && matches!(r.ty, MsgType::Tsetattr | MsgType::Twstat)
            })
            .filter_map(|r| match self.decode_request(&r.frame) {
                Some(Msg::Tsetattr(a)) if a.valid & 0x8 != 0 => Some(a.fid.0),
                Some(Msg::Twstat(w)) if w.stat.length != u64::MAX => Some(w.fid.0),
                _ => None,
            })
            .collect();
        for fid in truncating {
            self.fids.truncated(fid);
        }
        // Unsynced writes may be lost with the server's memory: each file's next fsync fails
        // unless the rebuild writes them all again.
        self.fids.unsynced.link_lost();
        for rec in self.fids.fids.values_mut() {
            rec.flags &= !flag::FAST_FORWARDED;
        }
        if self.outage_since.is_none() {
            self.outage_since = Some(now);
        }
        self.schedule_redial(now);
    }

    pub(super) fn schedule_redial(&mut self, now: Instant) {
        let age = self.outage_since.map_or(Duration::ZERO, |s| now.since(s));
        let delay = if self.backends.elsewhere(now, self.backend) {
            // A mux with a healthy backend to move to: no reason to wait.
            self.marks.hit(Mark::FailoverAtOnce);
            Duration::ZERO
        } else {
            self.cfg.backoff.delay(self.attempt, age, &mut self.rng)
        };
        self.attempt = self.attempt.saturating_add(1);
        self.link = LinkState::Down {
            redial_at: now + delay,
        };
        self.event(Event::Redialing {
            attempt: self.attempt,
            delay,
        });
    }

    /// What the recovery of `link` said after an input: keep going, resume service, or drop
    /// the link the server broke.
    pub(super) fn recovery_progress(&mut self, now: Instant, link: LinkId, progress: Progress) {
        match progress {
            Progress::Working => {}
            Progress::Broken(what) => {
                self.recovery = None;
                self.event(Event::ProtocolViolation {
                    peer: Peer::Server,
                    what: what.clone(),
                });
                self.abandon_link(now, link, LinkLoss::Violation, what);
            }
            Progress::Done {
                fids,
                stale,
                elapsed,
            } => {
                self.recovery = None;
                self.event(Event::Recovered {
                    fids,
                    stale,
                    elapsed,
                });
                self.link_recovered(now, link);
            }
        }
    }

    /// The link is usable again: settle what was orphaned, then release the queue.
    pub(super) fn link_recovered(&mut self, now: Instant, link: LinkId) {
        self.link = LinkState::Up { link };
        self.recovery = None;
        self.gave_up = false;
        self.last_server_input = now;
        self.silence_check_at = now + self.server_timeout();
        // With nothing to deliver the outage is over; otherwise it is when the server answers
        // (a server that breaks on what is resent must not reset the backoff or soft clocks).
        if self.requests.is_empty() {
            self.end_outage();
        } else {
            self.reset_on_reply = true;
        }
        let mut orphans: Vec<(u64, u16)> = self
            .requests
            .iter()
            .filter(|(_, r)| r.state == RequestState::Orphaned)
            .map(|(t, r)| (r.seq, *t))
            .collect();
        orphans.sort_unstable();
        for (_, tag) in orphans {
            self.settle_orphan(tag);
        }
        while let Some(tag) = self.queue.pop_front() {
            self.dispatch(tag);
        }
    }

    pub(super) fn end_outage(&mut self) {
        self.attempt = 0;
        self.outage_since = None;
        self.reset_on_reply = false;
    }

    /// How long a live link may stay silent while requests wait (at least 100 ms: the check is
    /// a timer, and a zero one would fire without end on an idle link).
    pub(super) fn server_timeout(&self) -> Duration {
        let t = match self.cfg.give_up_after {
            Some(g) => g.min(self.cfg.server_timeout),
            None => self.cfg.server_timeout,
        };
        t.max(Duration::from_millis(100))
    }

    /// Answer a request the recovery found done on the server (`crate::resolve`): the reply
    /// it would have had, its qids as the client sees them; the fid table already changed.
    pub(super) fn answer_done(&mut self, tag: u16, msg: &Msg, qid: Qid) {
        let Some(reply) = resolve::done_reply(msg, qid) else {
            let why = self.requests.get(&tag).map_or("", unseen_why);
            return self.fail(tag, Failure::NOT_COMPLETED, why);
        };
        self.event(Event::OutcomeResolved {
            tag,
            request: msg.msg_type(),
            done: true,
        });
        let frame = reply::local(tag, reply.clone());
        // A create's fid is the new file by now: its qid is keyed as an open's of that fid.
        let frame = match (msg, &reply) {
            (Msg::Tlcreate(c), Msg::Rlcreate(r)) => {
                let open = Tlopen {
                    fid: c.fid,
                    flags: c.flags,
                };
                let rlopen = Rlopen {
                    qid: r.qid,
                    iounit: r.iounit,
                };
                self.client_qids(&open.into(), &rlopen.into(), frame)
            }
            _ => self.client_qids(msg, &reply, frame),
        };
        self.answer(tag, frame);
    }

    /// Settle one orphaned request: by what the recovery saw of it (the outcome table), or else
    /// by the replay table.
    pub(super) fn settle_orphan(&mut self, tag: u16) {
        let Some(req) = self.requests.get(&tag) else {
            return; // answered meanwhile (flushed)
        };
        if req.state != RequestState::Orphaned {
            return;
        }
        let Some(msg) = self.decode_request(&req.frame) else {
            return self.fail(tag, Failure::MALFORMED, "undecodable");
        };
        // Settled by looking (`crate::resolve`): the outcome table decides. First: one found
        // done has changed the fid table already, whatever became of the backend since.
        let why = unseen_why(req);
        match req.resolved {
            Some(Outcome::Done(qid)) => return self.answer_done(tag, &msg, qid),
            Some(Outcome::Unknown) => {
                self.apply_failure(&msg);
                return self.fail(tag, Failure::NOT_COMPLETED, why);
            }
            Some(Outcome::NotDone) | None => {}
        }
        let fid = msg.primary_fid().and_then(|f| self.fids.get(f));
        if fid.and_then(FidRec::is_lost) == Some(LostReason::Io)
            && msg.msg_type() != MsgType::Tclunk
        {
            // In flight on a file open on a backend that failed.
            return self.fail(tag, Failure::IO, "open on a backend that failed");
        }
        if req.resolved == Some(Outcome::NotDone) {
            self.event(Event::OutcomeResolved {
                tag,
                request: msg.msg_type(),
                done: false,
            });
            return self.dispatch(tag);
        }
        let lost = self.writes_lost_under(&msg);
        let (settle, mark) = replay::settle(&msg, fid, lost.is_some());
        // A link given up on (hung, broken) may have a server behind it that runs what it was
        // sent yet, after anything sent now: a change resent could be overtaken by its own
        // older copy, laid over newer data. It may have run; it fails as such.
        let given_up = self.requests.get(&tag).is_some_and(|r| r.given_up);
        if settle == Settle::Resend && given_up && replay::has_effect(msg.msg_type()) {
            self.marks.hit(Mark::ReplayFailGivenUp);
            self.apply_failure(&msg);
            let why = self.requests.get(&tag).map_or("", unseen_why);
            return self.fail(tag, Failure::NOT_COMPLETED, why);
        }
        self.marks.hit(mark);
        match settle {
            Settle::Resend => self.dispatch(tag),
            Settle::Fail(f) => {
                let why = lost.filter(|_| f == Failure::WRITES_LOST);
                self.apply_failure(&msg);
                self.fail(tag, f, why.unwrap_or("in flight when the link died"))
            }
            Settle::ClunkLocally => self.clunk_locally(tag, &msg),
            Settle::FlushLocally => self.flush_locally(tag),
        }
    }

    // ---- timeouts ------------------------------------------------------------------------

    /// Time has reached (or passed) `poll_timeout`: whatever is due is done — first the link
    /// state's own deadline, then (with the state that left) soft mode's give-up.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        match self.link {
            LinkState::Idle { .. } if self.due(Timer::VersionTimeout, now) => {
                self.event(Event::ProtocolViolation {
                    peer: Peer::Client,
                    what: alloc::format!(
                        "no Tversion within {:?} of connecting",
                        self.cfg.version_timeout
                    ),
                });
                self.emit(Output::CloseClient);
                self.close();
            }
            LinkState::Up { link } if self.due(Timer::ServerSilence, now) => {
                self.check_silence(now, link)
            }
            LinkState::Down { .. } if self.due(Timer::Redial, now) => self.dial(now),
            LinkState::Dialing { link, .. } if self.due(Timer::DialWatchdog, now) => {
                self.marks.hit(Mark::DialWatchdog);
                self.abandon_link(now, link, LinkLoss::DialTimeout, "dial timed out".into())
            }
            LinkState::Recovering { link } => {
                if self.due(Timer::RecoveryWatchdog, now) {
                    self.marks.hit(Mark::RecoveryWatchdog);
                    self.event(Event::RecoveryStalled { link });
                    self.abandon_link(
                        now,
                        link,
                        LinkLoss::RecoveryStalled,
                        "recovery made no progress".into(),
                    );
                } else {
                    // Exclusive opens whose retry is due (and nothing if none is).
                    if let Some(r) = &mut self.recovery {
                        let progress = r.handle_timeout(now, &mut lend!(self));
                        self.recovery_progress(now, link, progress);
                    }
                }
            }
            _ => {}
        }
        if self.due(Timer::GiveUp, now) {
            let since = self.outage_since.unwrap_or(now);
            self.give_up(now.since(since));
        }
    }

    /// A live link is dead if requests have waited the server timeout with nothing arriving.
    pub(super) fn check_silence(&mut self, now: Instant, link: LinkId) {
        let timeout = self.server_timeout();
        let oldest = self
            .requests
            .values()
            .filter(|r| r.state == RequestState::Sent(link))
            .map(|r| r.sent_at)
            .min();
        let Some(oldest) = oldest else {
            self.silence_check_at = now + timeout;
            return;
        };
        let silent_since = oldest.max(self.last_server_input);
        if now < silent_since + timeout {
            self.silence_check_at = silent_since + timeout;
            return;
        }
        let waiting = self
            .requests
            .values()
            .filter(|r| r.state == RequestState::Sent(link))
            .count();
        self.marks.hit(Mark::ServerSilent);
        // The outage began when the server fell silent (soft mode counts from then).
        if self.outage_since.is_none() {
            self.outage_since = Some(silent_since);
        }
        let what = alloc::format!(
            "the server sent nothing for {:?} while {waiting} requests waited",
            now.since(silent_since)
        );
        self.abandon_link(now, link, LinkLoss::Silent, what);
    }

    /// Soft mode: the outage is too long. Everything held fails; so will new requests until
    /// the server is back.
    pub(super) fn give_up(&mut self, outage: Duration) {
        self.gave_up = true;
        self.marks.hit(Mark::SoftGiveUp);
        self.event(Event::GaveUp { outage });
        let mut held: Vec<(u64, u16)> = self
            .requests
            .iter()
            .filter(|(_, r)| matches!(r.state, RequestState::Orphaned | RequestState::Queued))
            .map(|(t, r)| (r.seq, *t))
            .collect();
        held.sort_unstable();
        self.queue.clear();
        for (_, tag) in held {
            self.fail_unavailable(tag);
        }
    }

    /// Why the file `msg`'s fid stands for lost unsynced writes with a link, if it did (what a
    /// Tfsync of it must then report).
    fn writes_lost_under(&self, msg: &Msg) -> Option<&'static str> {
        msg.primary_fid().and_then(|f| self.fids.writes_lost(f))
    }

    /// Answer a held request now that soft mode gave up: an orphan found done as done, others by
    /// the replay table (a request that may have happened still says so), everything else
    /// "unavailable".
    pub(super) fn fail_unavailable(&mut self, tag: u16) {
        let Some(req) = self.requests.get(&tag) else {
            return;
        };
        // One found not done is as good as held: it never happened.
        let orphaned = req.state == RequestState::Orphaned && req.resolved.is_none();
        let resolved = req.resolved;
        let why = unseen_why(req);
        let Some(msg) = self.decode_request(&req.frame) else {
            return self.fail(tag, Failure::MALFORMED, "undecodable");
        };
        match resolved {
            // Done already (the fid table says so): answered as done, outage or not.
            Some(Outcome::Done(qid)) => return self.answer_done(tag, &msg, qid),
            Some(Outcome::Unknown) => {
                self.apply_failure(&msg);
                return self.fail(tag, Failure::NOT_COMPLETED, why);
            }
            // Not done, and not sent again: unavailable, like anything held.
            Some(Outcome::NotDone) | None => {}
        }
        let fid = msg.primary_fid().and_then(|f| self.fids.get(f));
        let lost = self.writes_lost_under(&msg).is_some();
        match replay::settle(&msg, fid, lost).0 {
            Settle::ClunkLocally | Settle::Resend if matches!(msg, Msg::Tclunk(_)) => {
                self.clunk_locally(tag, &msg)
            }
            Settle::FlushLocally => self.flush_locally(tag),
            Settle::Fail(f) if orphaned => {
                self.apply_failure(&msg);
                self.fail(tag, f, "in flight when the link died")
            }
            _ => {
                self.apply_failure(&msg);
                self.fail(tag, Failure::UNAVAILABLE, "server unavailable (soft mode)")
            }
        }
    }
}
