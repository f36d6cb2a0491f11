//! The mux's simulation: clients whose sessions share one endpoint of 2–4 backends, each a
//! ramfs holding a copy of one tree (some copies diverging), entered at a service path with a
//! service aname. Backends crash and come back, or hang; sessions fail over between them.
//! Everything happens in virtual time, chosen by one seed.
//!
//! Invariants, checked at every reply and event:
//! - each request gets exactly one reply, and every request is answered while any backend is
//!   up (liveness: at the end one backend is up, the others as they were, or down or hung for
//!   good);
//! - qids name paths: one path always shows one qid.path, and two paths never share one, across
//!   failovers, in walks, getattrs, opens, creates and directory listings;
//! - the files open when a session moves to another backend are exactly those it reports lost
//!   with i/o errors; every later request on them but a clunk answers EIO; and no other request
//!   answers EIO unless the session said it failed it (a request possibly not completed).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use p9_core::*;
use persist_core::endpoint::ServiceRoot;
use persist_core::{
    BackendId, Backends, Config, Endpoint, Event, Health, Instant, LinkId, LostReason, Marks,
    Output, Session,
};

use super::rng::Rng;

const EIO: u32 = 5;
const ESTALE: u32 = 116;
/// How long the world may take, once every backend is back, to answer everything.
const LIVENESS_LIMIT: Duration = Duration::from_secs(600);
/// The names clients walk to (beneath the service path), besides the files they create.
const NAMES: &[&[&str]] = &[
    &["a"],
    &["b"],
    &["d"],
    &["d", "e"],
    &["d", ".."],
    &["nope"],
    // Above the service root: refused, never reaching the backend's tree above it.
    &[".."],
    &["d", "..", ".."],
];

/// What a seed's run came to.
#[derive(Clone, Debug)]
pub struct MuxReport {
    pub seed: u64,
    pub digest: u64,
    pub marks: Marks,
    pub stats: MuxStats,
    pub trace: Option<String>,
}

/// What happened, summed.
#[derive(Clone, Debug, Default)]
pub struct MuxStats {
    pub requests: u64,
    pub failovers: u64,
    /// Requests on files open across a failover, answered EIO.
    pub failed_open: u64,
    /// Listing entries seen with their qids.
    pub listed: u64,
}

impl MuxStats {
    pub fn add(&mut self, o: &MuxStats) {
        self.requests += o.requests;
        self.failovers += o.failovers;
        self.failed_open += o.failed_open;
        self.listed += o.listed;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BackendState {
    Up,
    /// Crashed; restarts (its files kept, as a process restart keeps a disk) at this time.
    Down(u64),
    /// Takes requests and answers nothing, until this time.
    Hung(u64),
}

struct Backend {
    fs: ramfs::Fs,
    state: BackendState,
    /// Connections, by client and link.
    conns: BTreeMap<(usize, LinkId), ramfs::Conn>,
}

/// The endpoint all sessions share.
struct Shared(Arc<Mutex<Endpoint>>);

impl Backends for Shared {
    fn choose(&mut self, now: Instant, current: Option<BackendId>, pick: u64) -> BackendId {
        self.0.lock().unwrap().choose(now, current, pick)
    }
    fn report(&mut self, now: Instant, backend: BackendId, health: Health) {
        self.0.lock().unwrap().report(now, backend, health)
    }
    fn elsewhere(&self, now: Instant, current: BackendId) -> bool {
        self.0.lock().unwrap().elsewhere(now, current)
    }
    fn root(&self, backend: BackendId) -> ServiceRoot {
        self.0.lock().unwrap().root(backend)
    }
    fn stable_qids(&self) -> bool {
        self.0.lock().unwrap().stable_qids()
    }
}

#[derive(Clone, Debug)]
struct ModelFid {
    path: Vec<String>,
    dir: bool,
    open: bool,
    /// Open on a backend that failed: everything but a clunk answers EIO.
    dead: bool,
    /// Lost as stale (its path was not on the new backend, say).
    stale: bool,
    /// Lost with i/o errors while a create through it was unanswered: the session found that
    /// create done after a loss (the fid became the new file, open) and will answer it so.
    lost_creating: bool,
}

#[derive(Clone, Debug)]
enum Op {
    Version,
    Attach,
    Walk {
        newfid: u32,
        path: Vec<String>,
    },
    Getattr,
    Open,
    Read,
    Readdir,
    Clunk,
    Create {
        name: String,
    },
    /// A Tflush of the request with tag `oldtag` (walks, getattrs, opens, reads, listings and
    /// attaches are flushed; the attach being walked to its service root is the case that
    /// matters).
    Flush {
        oldtag: u16,
    },
}

struct Pending {
    fid: u32,
    op: Op,
}

struct Client {
    session: Session,
    /// Dials under way: link, backend, when they complete.
    dials: Vec<(LinkId, usize, u64)>,
    /// The live link and its backend.
    link: Option<(LinkId, usize)>,
    up: VecDeque<(LinkId, Bytes)>,
    down: VecDeque<(LinkId, Bytes)>,
    fids: BTreeMap<u32, ModelFid>,
    pending: BTreeMap<u16, Pending>,
    next_tag: u16,
    next_fid: u32,
    /// Requests the session reported failing (they may answer EIO).
    failed: BTreeSet<u16>,
    /// Fids lost with i/o errors since the last failover event.
    lost_io: BTreeSet<u32>,
    attached: bool,
}

/// A mux world.
pub struct MuxWorld {
    rng: Rng,
    now_ms: u64,
    backends: Vec<Backend>,
    clients: Vec<Client>,
    /// path → qid.path, and back: a path has one, and no two share one.
    qids: BTreeMap<Vec<String>, u64>,
    paths: BTreeMap<u64, Vec<String>>,
    /// Files the clients created, by path.
    created: Vec<Vec<String>>,
    steps: u32,
    digest: u64,
    pub stats: MuxStats,
    pub trace: Option<String>,
}

fn normalize(path: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in path {
        match n.as_str() {
            ".." => drop(out.pop()),
            "." => {}
            _ => out.push(n.clone()),
        }
    }
    out
}

fn is_dir_path(path: &[String]) -> bool {
    path.is_empty() || path == ["d"]
}

impl MuxWorld {
    pub fn new(seed: u64, trace: bool) -> MuxWorld {
        let mut rng = Rng::new(seed ^ 0x6d75_7877_6f72_6c64);
        let n_backends = rng.range(2, 4) as usize;
        let n_clients = rng.range(1, 3) as usize;
        let cfg = Config {
            seed,
            server_timeout: Duration::from_millis(rng.range(500, 3000)),
            ..Config::default()
        };
        let mut backends = Vec::new();
        let mut roots = Vec::new();
        for _ in 0..n_backends {
            let mut fs = ramfs::Fs::new();
            fs.mkdir_p("/srv/d").unwrap();
            fs.write_file("/srv/a", b"alpha").unwrap();
            fs.write_file("/srv/d/e", b"echo").unwrap();
            // Some copies diverge: `b` is missing from them.
            if !rng.chance(30) {
                fs.write_file("/srv/b", b"bravo").unwrap();
            }
            fs.write_file("/elsewhere", b"not served").unwrap();
            backends.push(Backend {
                fs,
                state: BackendState::Up,
                conns: BTreeMap::new(),
            });
            let aname = if rng.chance(50) { "/" } else { "" };
            roots.push(ServiceRoot {
                aname: Some(Bytes::from_static(aname.as_bytes())),
                path: vec![Bytes::from_static(b"srv")],
            });
        }
        let endpoint = Arc::new(Mutex::new(Endpoint::with_roots(roots, &cfg)));
        let clients = (0..n_clients)
            .map(|i| {
                let cfg = endpoint.lock().unwrap().session_config(&cfg);
                let _ = i;
                Client {
                    session: Session::with_backends(
                        cfg,
                        Box::new(Shared(endpoint.clone())),
                        Instant::from_millis(0),
                    ),
                    dials: Vec::new(),
                    link: None,
                    up: VecDeque::new(),
                    down: VecDeque::new(),
                    fids: BTreeMap::new(),
                    pending: BTreeMap::new(),
                    next_tag: 0,
                    next_fid: 1,
                    failed: BTreeSet::new(),
                    lost_io: BTreeSet::new(),
                    attached: false,
                }
            })
            .collect();
        let steps = rng.range(200, 700) as u32;
        MuxWorld {
            rng,
            now_ms: 0,
            backends,
            clients,
            qids: BTreeMap::new(),
            paths: BTreeMap::new(),
            created: Vec::new(),
            steps,
            digest: 0xcbf2_9ce4_8422_2325,
            stats: MuxStats::default(),
            trace: trace.then(String::new),
        }
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            let _ = writeln!(t, "{:>8} ms  {}", self.now_ms, line());
        }
    }

    fn mix(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.digest = (self.digest ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.now_ms)
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Every session's marks, summed.
    pub fn marks(&self) -> Marks {
        let mut m = Marks::default();
        for c in &self.clients {
            m.add(c.session.marks());
        }
        m
    }

    pub fn run(&mut self) -> Result<(), String> {
        for c in 0..self.clients.len() {
            self.send(c, NOFID.0, Op::Version)?;
        }
        for _ in 0..self.steps {
            self.step()?;
        }
        // Liveness while any backend is up: one comes back (or stays) up; the others stay as
        // they are or go down or hang for good. Everything must still be answered.
        let survivor = self.rng.below(self.backends.len() as u64) as usize;
        for b in 0..self.backends.len() {
            if b == survivor {
                self.backends[b].state = BackendState::Up;
            } else if self.rng.chance(50) {
                let forever = BackendState::Down(u64::MAX);
                match self.backends[b].state {
                    BackendState::Up if self.rng.chance(50) => self.crash(b, u64::MAX)?,
                    BackendState::Up => self.backends[b].state = BackendState::Hung(u64::MAX),
                    BackendState::Down(_) => self.backends[b].state = forever,
                    BackendState::Hung(_) => self.backends[b].state = BackendState::Hung(u64::MAX),
                }
            }
        }
        let limit = self.now_ms + LIVENESS_LIMIT.as_millis() as u64;
        while self
            .clients
            .iter()
            .any(|c| !c.pending.is_empty() || !c.up.is_empty())
        {
            if self.now_ms > limit {
                let left: Vec<Vec<u16>> = self
                    .clients
                    .iter()
                    .map(|c| c.pending.keys().copied().collect())
                    .collect();
                return Err(format!("requests never answered: {left:?}"));
            }
            if !self.deliver_any()? {
                let ms = self.rng.range(1, 200);
                self.advance(ms)?;
            }
        }
        Ok(())
    }

    fn step(&mut self) -> Result<(), String> {
        let roll = self.rng.below(1000);
        match roll {
            0..=449 => {
                let c = self.rng.below(self.clients.len() as u64) as usize;
                self.client_op(c)?;
            }
            450..=889 => {
                self.deliver_any()?;
            }
            890..=989 => {
                let ms = self.rng.range(1, 60);
                self.advance(ms)?;
            }
            990..=994 => {
                let b = self.rng.below(self.backends.len() as u64) as usize;
                let until = self.now_ms + self.rng.range(50, 4000);
                self.crash(b, until)?;
            }
            _ => {
                let b = self.rng.below(self.backends.len() as u64) as usize;
                if self.backends[b].state == BackendState::Up {
                    let until = self.now_ms + self.rng.range(100, 5000);
                    self.note(|| format!("backend {b} hangs"));
                    self.backends[b].state = BackendState::Hung(until);
                }
            }
        }
        Ok(())
    }

    /// Crash backend `b`: its connections close; it comes back at `until`.
    fn crash(&mut self, b: usize, until: u64) -> Result<(), String> {
        self.note(|| format!("backend {b} crashes"));
        self.backends[b].state = BackendState::Down(until);
        let conns = std::mem::take(&mut self.backends[b].conns);
        for ((c, link), conn) in conns {
            conn.close(&mut self.backends[b].fs);
            let client = &mut self.clients[c];
            client.up.retain(|(l, _)| *l != link);
            client.down.retain(|(l, _)| *l != link);
            if client.link.map(|(l, _)| l) == Some(link) {
                client.link = None;
            }
            let now = self.now();
            self.clients[c]
                .session
                .handle_link_down(now, link, "connection reset");
            self.drain(c)?;
        }
        Ok(())
    }

    /// Let time pass: backends restart or wake, dials complete, timers fire.
    fn advance(&mut self, ms: u64) -> Result<(), String> {
        let target = self.now_ms + ms;
        let mut rounds_here = 0u32;
        loop {
            // A timer that stays due after it fired would spin a driver.
            rounds_here += 1;
            if rounds_here > 1000 {
                return Err(format!(
                    "a timer stays due at {} ms after firing",
                    self.now_ms
                ));
            }
            // The next thing due before the target.
            let mut next = target;
            for b in &self.backends {
                if let BackendState::Down(t) | BackendState::Hung(t) = b.state {
                    next = next.min(t.max(self.now_ms));
                }
            }
            for c in &self.clients {
                for &(_, _, due) in &c.dials {
                    next = next.min(due.max(self.now_ms));
                }
                if let Some(t) = c.session.poll_timeout() {
                    next = next.min(t.as_nanos().div_ceil(1_000_000).max(self.now_ms));
                }
            }
            if next > self.now_ms {
                rounds_here = 0;
            }
            self.now_ms = next;
            for b in 0..self.backends.len() {
                match self.backends[b].state {
                    BackendState::Down(t) | BackendState::Hung(t) if t <= self.now_ms => {
                        self.note(|| format!("backend {b} is back"));
                        self.backends[b].state = BackendState::Up;
                    }
                    _ => {}
                }
            }
            for c in 0..self.clients.len() {
                let due: Vec<(LinkId, usize)> = self.clients[c]
                    .dials
                    .iter()
                    .filter(|d| d.2 <= self.now_ms)
                    .map(|d| (d.0, d.1))
                    .collect();
                self.clients[c].dials.retain(|d| d.2 > self.now_ms);
                for (link, b) in due {
                    let now = self.now();
                    if matches!(self.backends[b].state, BackendState::Down(_)) {
                        self.clients[c]
                            .session
                            .handle_dial_failed(now, link, "connection refused");
                    } else {
                        let conn = ramfs::Conn::new(&mut self.backends[b].fs, 8192);
                        self.backends[b].conns.insert((c, link), conn);
                        self.clients[c].link = Some((link, b));
                        self.clients[c].session.handle_link_up(now, link);
                    }
                    self.drain(c)?;
                }
                if self.clients[c]
                    .session
                    .poll_timeout()
                    .is_some_and(|t| t.as_nanos().div_ceil(1_000_000) <= self.now_ms)
                {
                    let now = self.now();
                    self.clients[c].session.handle_timeout(now);
                    self.drain(c)?;
                }
            }
            if self.now_ms >= target {
                return Ok(());
            }
        }
    }

    /// Move one frame one hop, for a client chosen at random; false if nothing could move.
    fn deliver_any(&mut self) -> Result<bool, String> {
        let n = self.clients.len();
        let first = self.rng.below(n as u64) as usize;
        let to_server = self.rng.chance(50);
        for i in 0..n {
            let c = (first + i) % n;
            for dir in [to_server, !to_server] {
                if self.deliver(c, dir)? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn deliver(&mut self, c: usize, to_server: bool) -> Result<bool, String> {
        if to_server {
            let Some((link, frame)) = self.clients[c].up.front().cloned() else {
                return Ok(false);
            };
            let Some(b) =
                (0..self.backends.len()).find(|&b| self.backends[b].conns.contains_key(&(c, link)))
            else {
                self.clients[c].up.pop_front(); // a link that is gone
                return Ok(true);
            };
            if self.backends[b].state != BackendState::Up {
                return Ok(false); // hung: it sits in the server's queue
            }
            self.clients[c].up.pop_front();
            let backend = &mut self.backends[b];
            let conn = backend.conns.get_mut(&(c, link)).expect("found above");
            let reply = conn.handle(&mut backend.fs, &frame);
            self.clients[c].down.push_back((link, reply));
            Ok(true)
        } else {
            let Some((link, frame)) = self.clients[c].down.pop_front() else {
                return Ok(false);
            };
            let now = self.now();
            self.clients[c]
                .session
                .handle_server_frame(now, link, frame);
            self.drain(c)?;
            Ok(true)
        }
    }

    /// Carry out what client `c`'s session asked for, checking every event and reply.
    fn drain(&mut self, c: usize) -> Result<(), String> {
        // Events first: a failure or a lost fid is reported before its reply is checked.
        while let Some(e) = self.clients[c].session.poll_event() {
            self.mix(e.kind().as_bytes());
            self.event(c, e)?;
        }
        while let Some(o) = self.clients[c].session.poll_output() {
            match o {
                Output::ToClient(frame) => {
                    self.mix(&frame);
                    self.reply(c, frame)?;
                }
                Output::ToLink { link, frame } => {
                    self.mix(&frame);
                    self.clients[c].up.push_back((link, frame));
                }
                Output::Dial { link, backend } => {
                    let due = self.now_ms + self.rng.range(1, 30);
                    self.note(|| format!("client {c} dials backend {}", backend.0));
                    self.clients[c].dials.push((link, backend.0 as usize, due));
                }
                Output::CloseLink { link } => {
                    for b in &mut self.backends {
                        if let Some(conn) = b.conns.remove(&(c, link)) {
                            conn.close(&mut b.fs);
                        }
                    }
                    let client = &mut self.clients[c];
                    client.up.retain(|(l, _)| *l != link);
                    client.down.retain(|(l, _)| *l != link);
                    client.dials.retain(|d| d.0 != link);
                    if client.link.map(|(l, _)| l) == Some(link) {
                        client.link = None;
                    }
                }
                Output::CloseClient => return Err(format!("client {c} was closed")),
            }
        }
        while let Some(e) = self.clients[c].session.poll_event() {
            self.mix(e.kind().as_bytes());
            self.event(c, e)?;
        }
        Ok(())
    }

    fn event(&mut self, c: usize, e: Event) -> Result<(), String> {
        self.note(|| format!("client {c}: {e:?}"));
        let client = &mut self.clients[c];
        match e {
            Event::RequestFailed { tag, .. } => {
                client.failed.insert(tag);
            }
            Event::FidLost { fid, reason, .. } => {
                let Some(f) = client.fids.get_mut(&fid) else {
                    return Err(format!("client {c}: fid {fid} lost, but it has none"));
                };
                match reason {
                    LostReason::Io => {
                        let creating = client
                            .pending
                            .values()
                            .any(|p| p.fid == fid && matches!(p.op, Op::Create { .. }));
                        if !f.open && !f.dead && !f.stale && creating {
                            // Its create was found done after a loss: open from now on.
                            f.open = true;
                            f.lost_creating = true;
                        }
                        if !f.open || f.dead || f.stale {
                            return Err(format!("client {c}: fid {fid} lost with i/o errors, but it was not an open file ({f:?})"));
                        }
                        f.dead = true;
                        client.lost_io.insert(fid);
                    }
                    _ => f.stale = true,
                }
            }
            Event::Failover { open_fids_lost, .. } => {
                self.stats.failovers += 1;
                let lost = std::mem::take(&mut client.lost_io);
                // The files open until now: those it just lost, and any it should have.
                let open: BTreeSet<u32> = client
                    .fids
                    .iter()
                    .filter(|(fid, f)| f.open && !f.stale && (!f.dead || lost.contains(fid)))
                    .map(|(&fid, _)| fid)
                    .collect();
                if open != lost || open_fids_lost != lost.len() {
                    return Err(format!(
                        "client {c}: failover lost {lost:?} (said {open_fids_lost}), but the open files were {open:?}"
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Check a reply against its request and the qids seen so far; update the model.
    fn reply(&mut self, c: usize, frame: Bytes) -> Result<(), String> {
        let fc = Fcall::decode(&frame, Dialect::DotL)
            .map_err(|e| format!("client {c}: undecodable reply: {e}"))?;
        let Some(p) = self.clients[c].pending.remove(&fc.tag) else {
            return Err(format!(
                "client {c}: a reply to tag {} it is not waiting for: {:?}",
                fc.tag, fc.msg
            ));
        };
        let failed = self.clients[c].failed.remove(&fc.tag);
        self.note(|| format!("client {c} gets tag {}: {:?}", fc.tag, fc.msg));
        let fid = self.clients[c].fids.get(&p.fid).cloned();
        let errno = match &fc.msg {
            Msg::Rlerror(e) => Some(e.ecode),
            _ => None,
        };
        // A file open on a failed backend answers EIO to everything but a clunk (and the
        // create found done that made it the file, answered as done).
        if let Some(f) = fid.as_ref().filter(|f| f.dead) {
            match (&p.op, errno) {
                (Op::Clunk, _) => {}
                (Op::Create { .. }, None) if f.lost_creating => {}
                (_, Some(EIO)) => self.stats.failed_open += 1,
                _ => {
                    return Err(format!(
                    "client {c}: {:?} on fid {} (open on a failed backend: {f:?}) answered {:?}",
                    p.op, p.fid, fc.msg
                ))
                }
            }
        } else if errno == Some(EIO) && !failed {
            return Err(format!(
                "client {c}: {:?} on fid {} answered EIO, which the session never reported failing",
                p.op, p.fid
            ));
        }
        let client = &mut self.clients[c];
        match (p.op, fc.msg) {
            (Op::Version, Msg::Rversion(_)) => {
                self.send(c, 0, Op::Attach)?;
            }
            (Op::Version, other) => return Err(format!("client {c}: Tversion answered {other:?}")),
            (Op::Attach, Msg::Rattach(a)) => {
                client.attached = true;
                client.fids.insert(
                    0,
                    ModelFid {
                        path: Vec::new(),
                        dir: true,
                        open: false,
                        dead: false,
                        stale: false,
                        lost_creating: false,
                    },
                );
                self.qid(&[], a.qid)?;
            }
            (Op::Attach, _) => {
                // The backend it reached was failing: try again.
                self.send(c, 0, Op::Attach)?;
            }
            (Op::Walk { newfid, path }, Msg::Rwalk(w)) => {
                let base = fid.map(|f| f.path).unwrap_or_default();
                let mut at = base.clone();
                for (i, q) in w.wqids.iter().enumerate() {
                    at.push(path[i].clone());
                    self.qid(&normalize(&at), q)?;
                }
                if w.wqids.len() == path.len() {
                    let full = normalize(&at);
                    let f = ModelFid {
                        dir: is_dir_path(&full),
                        path: full,
                        open: false,
                        dead: false,
                        stale: false,
                        lost_creating: false,
                    };
                    self.clients[c].fids.insert(newfid, f);
                }
            }
            (Op::Getattr, Msg::Rgetattr(g)) => {
                if let Some(f) = fid {
                    self.qid(&f.path, g.qid)?;
                }
            }
            (Op::Open, Msg::Rlopen(o)) => {
                if let Some(f) = client.fids.get_mut(&p.fid) {
                    f.open = true;
                }
                if let Some(f) = fid {
                    self.qid(&f.path, o.qid)?;
                }
            }
            (Op::Create { name }, Msg::Rlcreate(o)) => {
                let Some(f) = client.fids.get_mut(&p.fid) else {
                    return Err(format!("client {c}: created through unknown fid {}", p.fid));
                };
                f.path.push(name);
                f.dir = false;
                f.open = true;
                f.lost_creating = false;
                let path = f.path.clone();
                self.qid(&path, o.qid)?;
            }
            (Op::Readdir, Msg::Rreaddir(r)) => {
                let dir_path = fid.map(|f| f.path).unwrap_or_default();
                for e in dir::dirents(&r.data.0) {
                    let e = e.map_err(|e| format!("client {c}: bad dirent: {e}"))?;
                    let mut path = dir_path.clone();
                    path.push(String::from_utf8_lossy(&e.name).into_owned());
                    self.stats.listed += 1;
                    self.qid(&normalize(&path), e.qid)?;
                }
            }
            (Op::Clunk, _) => {
                client.fids.remove(&p.fid);
            }
            (Op::Flush { oldtag }, Msg::Rflush(_)) => {
                // flush(5): the flushed request is answered before the Rflush, or never.
                if let Some(old) = client.pending.remove(&oldtag) {
                    self.note(|| format!("client {c}: tag {oldtag} flushed unanswered"));
                    if matches!(old.op, Op::Attach) {
                        self.send(c, 0, Op::Attach)?;
                    }
                }
            }
            (_, Msg::Rlerror(e)) if e.ecode == ESTALE => {
                if let Some(f) = client.fids.get_mut(&p.fid) {
                    f.stale = true;
                }
            }
            (_, Msg::Rlerror(_)) => {}
            (Op::Read, Msg::Rread(_)) => {}
            (op, other) => {
                return Err(format!("client {c}: {op:?} answered {other:?}"));
            }
        }
        Ok(())
    }

    /// A qid seen for `path`: the same path always shows the same qid.path, and no other path
    /// shows it.
    fn qid(&mut self, path: &[String], q: Qid) -> Result<(), String> {
        let path = path.to_vec();
        if let Some(&seen) = self.qids.get(&path) {
            if seen != q.path {
                return Err(format!(
                    "/{} showed qid path {:#x}, and {:#x} before",
                    path.join("/"),
                    q.path,
                    seen
                ));
            }
        }
        if let Some(other) = self.paths.get(&q.path) {
            if *other != path {
                return Err(format!(
                    "/{} and /{} show one qid path {:#x}",
                    path.join("/"),
                    other.join("/"),
                    q.path
                ));
            }
        }
        self.qids.insert(path.clone(), q.path);
        self.paths.insert(q.path, path);
        Ok(())
    }

    /// Client `c` sends a request on `fid`.
    fn send(&mut self, c: usize, fid: u32, op: Op) -> Result<(), String> {
        let client = &mut self.clients[c];
        let tag = match op {
            Op::Version => NOTAG,
            _ => {
                let mut t = client.next_tag;
                while client.pending.contains_key(&t) || t == NOTAG {
                    t = t.wrapping_add(1);
                }
                client.next_tag = t.wrapping_add(1);
                t
            }
        };
        let msg: Msg = match &op {
            Op::Version => Tversion {
                msize: 8192,
                version: "9P2000.L".into(),
            }
            .into(),
            Op::Attach => Tattach {
                fid: Fid(0),
                afid: NOFID,
                uname: "glenda".into(),
                // Not an attach name the ramfs takes: the service's own replaces it.
                aname: "client's own".into(),
                n_uname: Some(1000),
            }
            .into(),
            Op::Walk { newfid, path } => Twalk {
                fid: Fid(fid),
                newfid: Fid(*newfid),
                wnames: WalkNames::new(path).unwrap(),
            }
            .into(),
            Op::Getattr => Tgetattr {
                fid: Fid(fid),
                request_mask: 0x7ff,
            }
            .into(),
            Op::Open => Tlopen {
                fid: Fid(fid),
                flags: lflags::RDONLY,
            }
            .into(),
            Op::Read => Tread {
                fid: Fid(fid),
                offset: 0,
                count: 100,
            }
            .into(),
            Op::Readdir => Treaddir {
                fid: Fid(fid),
                offset: 0,
                count: 4096,
            }
            .into(),
            Op::Clunk => Tclunk { fid: Fid(fid) }.into(),
            Op::Create { name } => Tlcreate {
                fid: Fid(fid),
                name: Bytes::copy_from_slice(name.as_bytes()),
                flags: lflags::RDWR,
                mode: 0o644,
                gid: 0,
            }
            .into(),
            Op::Flush { oldtag } => Tflush { oldtag: *oldtag }.into(),
        };
        self.stats.requests += 1;
        client.pending.insert(tag, Pending { fid, op });
        let frame = Fcall::new(tag, msg).to_frame().unwrap();
        let now = self.now();
        self.clients[c].session.handle_client_frame(now, frame);
        self.drain(c)
    }

    /// Client `c` does something, if it is attached and has room; or flushes a request.
    fn client_op(&mut self, c: usize) -> Result<(), String> {
        let client = &self.clients[c];
        // Now and then a request in flight is flushed (one flush at a time).
        let flushable: Vec<u16> = client
            .pending
            .iter()
            .filter(|(_, p)| {
                matches!(
                    p.op,
                    Op::Attach | Op::Walk { .. } | Op::Getattr | Op::Open | Op::Read | Op::Readdir
                )
            })
            .map(|(&t, _)| t)
            .collect();
        let flushing = client
            .pending
            .values()
            .any(|p| matches!(p.op, Op::Flush { .. }));
        let attaching = !client.attached && !flushable.is_empty();
        if !flushable.is_empty() && !flushing && self.rng.chance(if attaching { 30 } else { 5 }) {
            let oldtag = flushable[self.rng.below(flushable.len() as u64) as usize];
            return self.send(c, NOFID.0, Op::Flush { oldtag });
        }
        let client = &self.clients[c];
        if !client.attached || client.pending.len() >= 4 {
            return Ok(());
        }
        // Fids with nothing in flight on them (a model that knows what each is).
        let busy: BTreeSet<u32> = client
            .pending
            .values()
            .flat_map(|p| match &p.op {
                Op::Walk { newfid, .. } => vec![p.fid, *newfid],
                _ => vec![p.fid],
            })
            .collect();
        let idle: Vec<(u32, ModelFid)> = client
            .fids
            .iter()
            .filter(|(fid, _)| !busy.contains(fid))
            .map(|(&fid, f)| (fid, f.clone()))
            .collect();
        let pick = |rng: &mut Rng,
                    want: &dyn Fn(u32, &ModelFid) -> bool|
         -> Option<(u32, ModelFid)> {
            let fit: Vec<&(u32, ModelFid)> = idle.iter().filter(|(fid, f)| want(*fid, f)).collect();
            (!fit.is_empty()).then(|| fit[rng.below(fit.len() as u64) as usize].clone())
        };
        let roll = self.rng.below(100);
        let (fid, op) = match roll {
            0..=29 if client.fids.len() < 24 => {
                let Some((from, _)) = pick(&mut self.rng, &|_, f| f.path.is_empty() && !f.open)
                else {
                    return Ok(());
                };
                let mut newfid = client.next_fid;
                while client.fids.contains_key(&newfid) || busy.contains(&newfid) {
                    newfid = newfid % 60 + 1;
                }
                self.clients[c].next_fid = newfid % 60 + 1;
                let path: Vec<String> = if !self.created.is_empty() && self.rng.chance(20) {
                    self.created[self.rng.below(self.created.len() as u64) as usize].clone()
                } else {
                    NAMES[self.rng.below(NAMES.len() as u64) as usize]
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                };
                (from, Op::Walk { newfid, path })
            }
            0..=44 => match pick(&mut self.rng, &|_, _| true) {
                Some((fid, _)) => (fid, Op::Getattr),
                None => return Ok(()),
            },
            45..=59 => match pick(&mut self.rng, &|fid, f| !f.open && fid != 0) {
                Some((fid, f)) if f.dir && self.rng.chance(40) => {
                    let name = format!("n{}", self.created.len());
                    let mut path = f.path.clone();
                    path.push(name.clone());
                    self.created.push(path);
                    (fid, Op::Create { name })
                }
                Some((fid, _)) => (fid, Op::Open),
                None => return Ok(()),
            },
            60..=79 => match pick(&mut self.rng, &|_, f| f.open) {
                Some((fid, f)) if f.dir => (fid, Op::Readdir),
                Some((fid, _)) => (fid, Op::Read),
                None => return Ok(()),
            },
            _ => match pick(&mut self.rng, &|fid, _| fid != 0) {
                None => return Ok(()),
                Some((fid, _)) => (fid, Op::Clunk),
            },
        };
        self.send(c, fid, op)
    }
}

/// The marks only a mux world reaches.
pub const MUX_MARKS: &[persist_core::Mark] = &[
    persist_core::Mark::FailoverOpenFidsFail,
    persist_core::Mark::FailoverFidsMove,
    persist_core::Mark::FailoverAtOnce,
    persist_core::Mark::ServiceRootWalk,
    persist_core::Mark::ServiceRootFlushHeld,
    persist_core::Mark::RecoveryServiceRoot,
    persist_core::Mark::StableQidListing,
];

/// Run one mux seed.
pub fn run_mux(seed: u64, trace: bool) -> Result<MuxReport, super::Failure> {
    let mut world = MuxWorld::new(seed, trace);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.run()));
    let what = match result {
        Ok(Ok(())) => {
            return Ok(MuxReport {
                seed,
                digest: world.digest(),
                marks: world.marks(),
                stats: world.stats.clone(),
                trace: world.trace.take(),
            })
        }
        Ok(Err(what)) => what,
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into()),
    };
    Err(super::Failure {
        seed,
        overrides: Default::default(),
        what: format!("mux world: {what}"),
        trace: world.trace.take(),
    })
}
