//! The simulated world: the real persist-core session between the model client and a ramfs
//! server, a network with latency and reordering, and faults — all in virtual time, all chosen
//! by one seed.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use p9_core::*;
use persist_core::{BackendId, Config, Event, Instant, LinkId, Output, Session};

use super::client::{is_error, Lane, Op};
use super::knobs::Knobs;
use super::rng::Rng;

/// Client tags come from the upper half, so the harness can tell the session's own recovery
/// requests (numbered from 0) from the client's when counting executions.
const TAG_BASE: u16 = 0x8000;
/// After the safety phase, how long the world may take to answer everything.
const LIVENESS_LIMIT: Duration = Duration::from_secs(600);
/// The "lane" of the one-off attach.
const SETUP: usize = usize::MAX;

/// Add a line to the trace, formatting it only when tracing.
macro_rules! note {
    ($w:expr, $($arg:tt)*) => {
        if $w.trace.is_some() {
            let line = format!($($arg)*);
            let now = $w.now_ms;
            if let Some(t) = &mut $w.trace {
                let _ = writeln!(t, "{now:>8} ms  {line}");
            }
        }
    };
}

/// A frame on the wire between proxy and server.
struct Transit {
    due: u64,
    link: LinkId,
    frame: Bytes,
}

/// What the server did with one client request.
#[derive(Default)]
struct Execution {
    count: u32,
    /// The server's last reply to it, if it was a success.
    success: Option<Msg>,
}

/// A client request outstanding, from the client's side.
struct Outstanding {
    lane: usize,
    ty: MsgType,
    /// For a Tflush: the tag it flushes.
    flushes: Option<u16>,
}

pub struct World {
    pub seed: u64,
    pub knobs: Knobs,
    rng: Rng,
    /// Virtual time in milliseconds.
    now_ms: u64,
    session: Session,
    pub fs: ramfs::Fs,
    server: Option<(LinkId, ramfs::Conn)>,
    server_msize: u32,
    server_down_until: u64,
    pending_dial: Option<(LinkId, u64)>,
    to_server: VecDeque<Transit>,
    to_proxy: VecDeque<Transit>,
    pub lanes: Vec<Lane>,
    outstanding: BTreeMap<u16, Outstanding>,
    executions: BTreeMap<u16, Execution>,
    next_tag: u16,
    version_done: bool,
    /// Events and steps, when tracing.
    pub trace: Option<String>,
    digest: u64,
    pub stats: Stats,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub requests: u64,
    pub drops: u64,
    pub restarts: u64,
    pub recoveries: u64,
    pub not_completed: u64,
}

fn fnv(digest: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *digest = (*digest ^ *b as u64).wrapping_mul(0x100_0000_01b3);
    }
}

impl World {
    pub fn new(seed: u64, trace: bool) -> World {
        let mut rng = Rng::new(seed);
        let knobs = Knobs::from_rng(&mut rng);
        let mut fs = ramfs::Fs::new();
        let lanes: Vec<Lane> = (0..knobs.lanes)
            .map(|i| Lane::new(i, knobs.dialect))
            .collect();
        for lane in &lanes {
            let dir = lane.dir_name();
            fs.mkdir_p(&dir).expect("lane directory");
            fs.write_file(format!("{dir}/data"), b"")
                .expect("data file");
            fs.write_file(format!("{dir}/log"), b"").expect("log file");
            fs.set_mode(format!("{dir}/log"), dm::APPEND | 0o644)
                .expect("append-only log");
        }
        let cfg = Config {
            seed: rng.next_u64(),
            ..Config::default()
        };
        let session = Session::new(cfg, BackendId(0), Instant::from_millis(0));
        let mut w = World {
            seed,
            server_msize: knobs.client_msize,
            knobs,
            rng,
            now_ms: 0,
            session,
            fs,
            server: None,
            server_down_until: 0,
            pending_dial: None,
            to_server: VecDeque::new(),
            to_proxy: VecDeque::new(),
            lanes,
            outstanding: BTreeMap::new(),
            executions: BTreeMap::new(),
            next_tag: TAG_BASE,
            version_done: false,
            trace: trace.then(String::new),
            digest: 0xcbf2_9ce4_8422_2325,
            stats: Stats::default(),
        };
        note!(w, "knobs {:?}", w.knobs);
        w.drain().expect("a new session only dials");
        w
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.now_ms)
    }

    /// The digest of everything that happened (frames and events), for determinism checks.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    fn latency(&mut self) -> u64 {
        let (lo, hi) = self.knobs.latency_ms;
        self.rng.range(lo, hi)
    }

    /// Carry out everything the session asked for.
    fn drain(&mut self) -> Result<(), String> {
        while let Some(o) = self.session.poll_output() {
            match o {
                Output::ToClient(frame) => {
                    fnv(&mut self.digest, &frame);
                    self.client_receives(frame)?;
                }
                Output::ToLink { link, frame } => {
                    fnv(&mut self.digest, &frame);
                    let due = self.now_ms + self.latency();
                    self.to_server.push_back(Transit { due, link, frame });
                }
                Output::Dial { link, .. } => {
                    let due = self.now_ms + self.latency() + 1;
                    self.pending_dial = Some((link, due));
                }
                Output::CloseLink { link } => {
                    if self.server.as_ref().is_some_and(|(l, _)| *l == link) {
                        self.hang_up();
                    }
                }
                Output::CloseClient => return Err("the session expelled the client".into()),
            }
        }
        while let Some(e) = self.session.poll_event() {
            fnv(&mut self.digest, format!("{e:?}").as_bytes());
            match &e {
                Event::Recovered { .. } => self.stats.recoveries += 1,
                Event::RequestFailed { .. } => self.stats.not_completed += 1,
                Event::ProtocolViolation { .. } => {
                    return Err(format!("protocol violation: {e:?}"))
                }
                _ => {}
            }
            note!(self, "event {e:?}");
        }
        // Bounded memory: the session holds no more than the client has outstanding, and its
        // bytes stay within the configured bound (plus what each lane may add past it).
        let byte_bound = Config::default().queue_max_bytes
            + self.lanes.len() * 2 * self.knobs.client_msize as usize;
        if self.session.bytes_held() > byte_bound {
            return Err(format!(
                "the session holds {} bytes, over its bound {byte_bound}",
                self.session.bytes_held()
            ));
        }
        if self.session.requests_held() > self.outstanding.len() {
            return Err(format!(
                "the session holds {} requests for {} outstanding",
                self.session.requests_held(),
                self.outstanding.len()
            ));
        }
        Ok(())
    }

    /// The server's end of the link goes away (its connection state with it).
    fn hang_up(&mut self) {
        if let Some((link, conn)) = self.server.take() {
            conn.close(&mut self.fs);
            self.to_server.retain(|t| t.link != link);
            self.to_proxy.retain(|t| t.link != link);
        }
    }

    fn take_tag(&mut self) -> u16 {
        let mut tag = self.next_tag;
        while self.outstanding.contains_key(&tag) || tag == NOTAG {
            tag = if tag >= NOTAG - 1 { TAG_BASE } else { tag + 1 };
        }
        self.next_tag = if tag >= NOTAG - 1 { TAG_BASE } else { tag + 1 };
        tag
    }

    /// A lane sends `op`: it is in flight before the session sees it, since the session may
    /// answer at once.
    fn lane_send(&mut self, lane: usize, msg: Msg, op: Op) -> Result<u16, String> {
        let tag = self.take_tag();
        self.lanes[lane].busy = Some((tag, op));
        self.client_send_tagged(lane, tag, msg)
    }

    fn client_send(&mut self, lane: usize, msg: Msg) -> Result<u16, String> {
        let tag = self.take_tag();
        self.client_send_tagged(lane, tag, msg)
    }

    fn client_send_tagged(&mut self, lane: usize, tag: u16, msg: Msg) -> Result<u16, String> {
        let ty = msg.msg_type();
        let flushes = match &msg {
            Msg::Tflush(f) => Some(f.oldtag),
            _ => None,
        };
        self.outstanding
            .insert(tag, Outstanding { lane, ty, flushes });
        self.executions.insert(tag, Execution::default());
        self.stats.requests += 1;
        note!(self, "client -> {tag} {msg:?}");
        let frame = Fcall::new(tag, msg).to_frame().map_err(|e| e.to_string())?;
        fnv(&mut self.digest, &frame);
        self.session.handle_client_frame(self.now(), frame);
        self.drain()?;
        Ok(tag)
    }

    /// A reply reached the client: check it and let the lane take its outcome.
    fn client_receives(&mut self, frame: Bytes) -> Result<(), String> {
        let dialect = if frame.get(4) == Some(&(MsgType::Rversion as u8)) {
            Dialect::DotL
        } else {
            self.knobs.dialect
        };
        let fc = Fcall::decode(&frame, dialect).map_err(|e| format!("undecodable reply: {e}"))?;
        note!(self, "client <- {} {:?}", fc.tag, fc.msg);
        let Some(out) = self.outstanding.remove(&fc.tag) else {
            return Err(format!("a reply to tag {} with no request outstanding (second reply, or after Rflush): {:?}", fc.tag, fc.msg));
        };
        let got = fc.msg.msg_type();
        if out.ty == MsgType::Tflush {
            if got != MsgType::Rflush {
                return Err(format!("Tflush answered with {got:?}"));
            }
        } else if Some(got) != out.ty.reply() && !matches!(got, MsgType::Rerror | MsgType::Rlerror)
        {
            return Err(format!("{:?} answered with {got:?}", out.ty));
        }
        if fc.tag == NOTAG {
            self.version_done = true;
            self.executions.remove(&fc.tag);
            return Ok(());
        }
        let exec = self.executions.remove(&fc.tag).unwrap_or_default();
        let lane = out.lane;
        if lane == SETUP {
            return match is_error(&fc.msg) {
                true => Err(format!("setup request failed: {:?}", fc.msg)),
                false => Ok(()),
            };
        }
        if out.ty == MsgType::Tflush {
            self.lanes[lane].flush = None;
            // The flushed request gets no reply now: settle it from what the server did.
            if let Some(old) = out.flushes {
                if self.outstanding.remove(&old).is_some() {
                    let exec = self.executions.remove(&old).unwrap_or_default();
                    let (_, op) = self.lanes[lane].busy.take().expect("the flushed op");
                    let outcome = self.check_executions(&op, &exec, None)?;
                    let reply = Rflush {}.into();
                    let follow = self.lanes[lane].complete(op, &reply, outcome.as_ref(), true)?;
                    self.follow_up(lane, follow)?;
                }
            }
            return Ok(());
        }
        let Some((tag, op)) = self.lanes[lane].busy.take() else {
            return Err(format!("lane {lane} got a reply with nothing in flight"));
        };
        debug_assert_eq!(tag, fc.tag);
        let outcome = self.check_executions(&op, &exec, Some(&fc.msg))?;
        let follow = self.lanes[lane].complete(op, &fc.msg, outcome.as_ref(), false)?;
        self.follow_up(lane, follow)
    }

    /// What actually happened to a request, and whether the server ran it too often.
    fn check_executions(
        &mut self,
        op: &Op,
        exec: &Execution,
        reply: Option<&Msg>,
    ) -> Result<Option<Msg>, String> {
        if !op.idempotent() && exec.count > 1 {
            return Err(format!(
                "{op:?} was executed {} times for one request",
                exec.count
            ));
        }
        match reply {
            Some(m) if !is_error(m) => {
                if exec.count == 0 && !matches!(m, Msg::Rclunk(_)) {
                    return Err(format!("{op:?} answered {m:?} without reaching the server"));
                }
                Ok(Some(m.clone()))
            }
            // Failed (or flushed): it happened exactly if the server ran it successfully.
            _ => Ok(exec.success.clone()),
        }
    }

    fn follow_up(&mut self, lane: usize, follow: Option<(Msg, Op)>) -> Result<(), String> {
        if let Some((msg, op)) = follow {
            self.lane_send(lane, msg, op)?;
        }
        Ok(())
    }

    /// The server takes one frame.
    fn server_receives(&mut self, t: Transit) -> Result<(), String> {
        let Some((link, conn)) = &mut self.server else {
            return Ok(());
        };
        if *link != t.link {
            return Ok(());
        }
        let link = *link;
        let reply = conn.handle(&mut self.fs, &t.frame);
        fnv(&mut self.digest, &reply);
        // Count executions of the client's requests (the session's own use low tags).
        if let Ok(header) = Header::parse(&t.frame) {
            if header.tag >= TAG_BASE && header.tag != NOTAG {
                let same_type = self
                    .outstanding
                    .get(&header.tag)
                    .is_some_and(|o| o.ty as u8 == header.msg_type);
                if same_type {
                    let dialect = self.knobs.dialect;
                    let exec = self.executions.entry(header.tag).or_default();
                    exec.count += 1;
                    exec.success = Fcall::decode(&reply, dialect)
                        .ok()
                        .map(|f| f.msg)
                        .filter(|m| !is_error(m));
                }
            }
        }
        // Replies leave in the order the server made them (a TCP stream does not reorder).
        let slow = self.rng.range(0, self.knobs.server_slowness_ms);
        let last = self.to_proxy.back().map_or(0, |t| t.due);
        let due = (self.now_ms + self.latency() + slow).max(last);
        self.to_proxy.push_back(Transit {
            due,
            link,
            frame: reply,
        });
        Ok(())
    }

    /// The next request the server works on: usually the oldest that has arrived, sometimes
    /// another (servers run pipelined requests concurrently) — but never a Tflush before the
    /// request it flushes, which flush(5) orders.
    fn next_for_server(&mut self) -> Option<Transit> {
        let now = self.now_ms;
        let due: Vec<usize> = self
            .to_server
            .iter()
            .enumerate()
            .filter(|(_, t)| t.due <= now)
            .map(|(i, _)| i)
            .collect();
        if due.is_empty() {
            return None;
        }
        let mut pick = if self.rng.chance(self.knobs.reorder_percent) {
            due[self.rng.below(due.len() as u64) as usize]
        } else {
            due[0]
        };
        if let Ok(Fcall {
            msg: Msg::Tflush(f),
            ..
        }) = Fcall::decode(&self.to_server[pick].frame, self.knobs.dialect)
        {
            if let Some(old) = self
                .to_server
                .iter()
                .take(pick)
                .position(|t| Header::parse(&t.frame).is_ok_and(|h| h.tag == f.oldtag))
            {
                pick = old;
            }
        }
        self.to_server.remove(pick)
    }

    /// The next reply that reaches the proxy, in the order sent.
    fn next_for_proxy(&mut self) -> Option<Transit> {
        match self.to_proxy.front() {
            Some(t) if t.due <= self.now_ms => self.to_proxy.pop_front(),
            _ => None,
        }
    }

    /// The link dies: before or after the server ran what was on its way.
    fn fault(&mut self) -> Result<(), String> {
        let Some((link, _)) = self.server.as_ref().map(|(l, _)| (*l, ())) else {
            return Ok(());
        };
        let executed_first = self.rng.chance(self.knobs.drop_after_exec_percent);
        let restart = self.rng.chance(self.knobs.restart_percent);
        note!(
            self,
            "FAULT link {} dies ({}; {})",
            link.0,
            if executed_first {
                "after the server ran what was sent"
            } else {
                "before"
            },
            if restart {
                "server restarts"
            } else {
                "network"
            }
        );
        self.stats.drops += 1;
        if executed_first {
            while let Some(t) = self.to_server.pop_front() {
                self.server_receives(t)?;
            }
        }
        self.hang_up();
        if restart {
            self.stats.restarts += 1;
            self.server_down_until = self.now_ms + self.rng.range(0, self.knobs.outage_ms);
            self.server_msize = if self.rng.chance(self.knobs.smaller_msize_percent) {
                4096
            } else {
                self.knobs.client_msize
            };
        }
        self.session
            .handle_link_down(self.now(), link, "simulated fault");
        self.drain()
    }

    fn resolve_dial(&mut self) -> Result<(), String> {
        let Some((link, due)) = self.pending_dial else {
            return Ok(());
        };
        if due > self.now_ms {
            return Ok(());
        }
        self.pending_dial = None;
        let refuse =
            self.now_ms < self.server_down_until || self.rng.chance(self.knobs.dial_fail_percent);
        if refuse {
            note!(self, "dial {} refused", link.0);
            self.session
                .handle_dial_failed(self.now(), link, "connection refused");
        } else {
            note!(
                self,
                "dial {} accepted (msize {})",
                link.0,
                self.server_msize
            );
            let conn = ramfs::Conn::new(&mut self.fs, self.server_msize);
            self.server = Some((link, conn));
            self.session.handle_link_up(self.now(), link);
        }
        self.drain()
    }

    /// One step of the world: time passes, frames arrive, maybe a fault, lanes act.
    fn step(&mut self, faults: bool, new_work: bool) -> Result<(), String> {
        self.now_ms += self.rng.range(0, 3);
        while let Some(t) = self.next_for_server() {
            self.server_receives(t)?;
        }
        while let Some(t) = self.next_for_proxy() {
            self.session
                .handle_server_frame(self.now(), t.link, t.frame);
            self.drain()?;
        }
        if self.session.poll_timeout().is_some_and(|t| t <= self.now()) {
            self.session.handle_timeout(self.now());
            self.drain()?;
        }
        self.resolve_dial()?;
        if faults && self.rng.chance_per_mille(self.knobs.drop_per_mille) {
            self.fault()?;
        }
        if !self.version_done {
            if !self.outstanding.contains_key(&NOTAG) {
                let tv = Tversion {
                    msize: self.knobs.client_msize,
                    version: self.knobs.dialect.version_string().into(),
                };
                self.outstanding.insert(
                    NOTAG,
                    Outstanding {
                        lane: 0,
                        ty: MsgType::Tversion,
                        flushes: None,
                    },
                );
                let frame = Fcall::new(NOTAG, tv)
                    .to_frame()
                    .map_err(|e| e.to_string())?;
                self.session.handle_client_frame(self.now(), frame);
                self.drain()?;
            }
            return Ok(());
        }
        if !self.attached() {
            return Ok(());
        }
        if new_work {
            for lane in 0..self.lanes.len() {
                if !self.session.wants_client_input() {
                    break;
                }
                if self.lanes[lane].busy.is_some() || self.rng.chance(50) {
                    continue;
                }
                let (msg, op) = self.lanes[lane].next_op(&mut self.rng);
                let tag = self.lane_send(lane, msg, op)?;
                // Sometimes flush it at once (if it is still unanswered).
                if self.outstanding.contains_key(&tag) && self.rng.chance(3) {
                    let flush = self.take_tag();
                    self.lanes[lane].flush = Some(flush);
                    self.client_send_tagged(lane, flush, Tflush { oldtag: tag }.into())?;
                }
            }
        }
        Ok(())
    }

    /// Attach fid 0 once the version is settled (a one-off, before the lanes start).
    fn attached(&mut self) -> bool {
        if self.stats.requests > 0 {
            return !self.outstanding.values().any(|o| o.ty == MsgType::Tattach);
        }
        let attach = Tattach {
            fid: Fid(0),
            afid: NOFID,
            uname: "sim".into(),
            aname: "".into(),
            n_uname: self.knobs.dialect.is_extended().then_some(0),
        };
        let _ = self.client_send(SETUP, attach.into());
        false
    }

    /// The whole run: the safety phase with faults, then the liveness phase without.
    pub fn run(&mut self) -> Result<(), String> {
        for _ in 0..self.knobs.steps {
            self.step(true, true)?;
        }
        note!(self, "LIVENESS: faults stop, no new work");
        let deadline = self.now_ms + LIVENESS_LIMIT.as_millis() as u64;
        while !self.outstanding.is_empty() || self.lanes.iter().any(|l| l.busy.is_some()) {
            if self.now_ms > deadline {
                return Err(format!(
                    "liveness: {} requests still unanswered after {:?}",
                    self.outstanding.len(),
                    LIVENESS_LIMIT
                ));
            }
            self.step(false, false)?;
            // Jump idle time: nothing in transit and nothing to do until the next timeout.
            if self.to_server.is_empty() && self.to_proxy.is_empty() && self.pending_dial.is_none()
            {
                if let Some(t) = self.session.poll_timeout() {
                    self.now_ms = self.now_ms.max(t.as_nanos() / 1_000_000);
                }
            }
        }
        self.check_tree()
    }

    /// At the end, the server's tree is exactly what the lanes' models say.
    fn check_tree(&self) -> Result<(), String> {
        for lane in &self.lanes {
            let dir = lane.dir_name();
            for (name, want) in &lane.files {
                let path = format!("{dir}/{}", String::from_utf8_lossy(name));
                let got = self
                    .fs
                    .read_file(&path)
                    .map_err(|e| format!("{path}: {e:?}"))?;
                if got != &want[..] {
                    return Err(format!(
                        "{path}: the server has {} bytes, the model {} (or they differ)",
                        got.len(),
                        want.len()
                    ));
                }
            }
            let mut listed: Vec<Vec<u8>> = self
                .fs
                .list_dir(&dir)
                .map_err(|e| format!("{dir}: {e:?}"))?
                .into_iter()
                .map(|b| b.to_vec())
                .collect();
            listed.sort();
            let mut want: Vec<Vec<u8>> = lane
                .files
                .keys()
                .chain(lane.subdirs.iter())
                .cloned()
                .collect();
            want.sort();
            if listed != want {
                return Err(format!(
                    "{dir}: the server lists {} names, the model {}",
                    listed.len(),
                    want.len()
                ));
            }
        }
        Ok(())
    }
}
