//! The simulated world: the real persist-core session between the model client and a ramfs
//! server, a network with latency and reordering, and faults — all in virtual time, all chosen
//! by one seed.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use p9_core::*;
use persist_core::drive::{Action, Drive};
use persist_core::{BackendId, Config, Event, Instant, LinkId};

use super::client::{
    is_dir_lock, is_error, lock_name_of, lock_names, Identity, KeptStep, Lane, Op, BLOCK, BLOCKS,
    SHARED_DIR, SHARED_FILE,
};
use super::knobs::Knobs;
use super::rng::Rng;
use super::wire::{gather, Framer, Wire};
use crate::history::{self, History, Kind, Outcome};

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

/// A frame that reached the server, waiting to be executed.
struct Transit {
    link: LinkId,
    frame: Bytes,
}

/// The connection between the proxy and the server, as bytes both ways.
struct ServerLink {
    link: LinkId,
    conn: ramfs::Conn,
    /// Proxy to server, and the server's framing of it.
    up: Wire,
    up_framer: Framer,
    /// Server to proxy.
    down: Wire,
    /// The server takes this link's requests and answers nothing (the link stays up).
    silent: bool,
}

/// What the server did with one client request.
#[derive(Default)]
struct Execution {
    count: u32,
    /// How many of those runs succeeded (a failed run of a take or release changed nothing).
    successes: u32,
    /// The server's last reply to it, if it was a success.
    success: Option<Msg>,
}

/// A client request outstanding, from the client's side.
struct Outstanding {
    lane: usize,
    ty: MsgType,
    /// For a Tflush: the tag it flushes.
    flushes: Option<u16>,
    /// Its number in the order the client sent its requests.
    seq: u64,
    /// For an open or create: the fid and the mode it asked for.
    opens: Option<(u32, u32)>,
}

/// One client with its own proxy session (drive), its link to the server, and its lanes.
struct Client {
    drive: Drive,
    server: Option<ServerLink>,
    /// Dials under way: (link, when they complete). One the session gave up on may stay here
    /// and complete late, as a real dial racing its abandonment does.
    pending_dials: Vec<(LinkId, u64)>,
    /// Links the drive was told failed: each must be closed and never used again.
    failed_links: Vec<LinkId>,
    /// Links the drive told the runtime to close.
    closed_links: std::collections::BTreeSet<LinkId>,
    /// Frames that reached the server on this client's link, not yet executed.
    to_server: VecDeque<Transit>,
    /// The client's outgoing bytes, not yet read by the proxy.
    pipe: Wire,
    /// The client's framing of what the proxy sends it.
    framer: Framer,
    lanes: Vec<Lane>,
    outstanding: BTreeMap<u16, Outstanding>,
    executions: BTreeMap<u16, Execution>,
    next_tag: u16,
    /// Requests numbered in the order the client sent them.
    next_seq: u64,
    /// The last client request the server received, by link and number: a link receives the
    /// client's requests in the order the client sent them (orphans resent first, in order).
    last_received: Option<(LinkId, u64)>,
    version_done: bool,
    attach_done: bool,
    /// The mode each open fid was opened with, as the client saw it succeed.
    open_modes: BTreeMap<u32, u32>,
    /// Requests the server answered with an invalid reply: the session may fail them.
    poisoned: std::collections::BTreeSet<u16>,
    /// The share of a spent process memory budget the session is held to, if it is spent.
    memory_cap: Option<usize>,
    /// The client reads nothing of what the proxy sends until then (a process that stopped
    /// reading its replies for a while).
    stalled_until: u64,
    /// When the drive was last seen holding its links (not reading them).
    held_at: Option<u64>,
    /// Looks at names the server refused the session (so some requests in flight at a loss
    /// may fail, nothing being seen of them); and the tags the session failed for that.
    looks_refused: u32,
    unseen: std::collections::BTreeSet<u16>,
    /// Links the session gave up on (silent, broken): what was in flight on them may still
    /// run on the server, so the session settles none of it by looking.
    links_given_up: u32,
    /// Tags whose request the server ran after answering a Tflush of it (a misbehaving
    /// server): the client may hear Rflush alone of a request that ran.
    ran_after_flush: std::collections::BTreeSet<u16>,
}

impl Client {
    fn take_tag(&mut self) -> u16 {
        let mut tag = self.next_tag;
        while self.outstanding.contains_key(&tag) || tag == NOTAG {
            tag = if tag >= NOTAG - 1 { TAG_BASE } else { tag + 1 };
        }
        self.next_tag = if tag >= NOTAG - 1 { TAG_BASE } else { tag + 1 };
        tag
    }

    fn busy(&self) -> bool {
        !self.outstanding.is_empty() || self.lanes.iter().any(|l| l.busy.is_some())
    }

    /// Whether bytes or frames are on their way between the proxy and the server, or the
    /// session is between links.
    fn in_transit(&self) -> bool {
        let wires = self.server.as_ref().is_some_and(|s| {
            !s.silent && (!s.up.is_empty() || !s.down.is_empty() || s.up_framer.partial())
        });
        wires || !self.to_server.is_empty() || !self.drive.session().is_up()
    }
}

pub struct World {
    pub seed: u64,
    pub knobs: Knobs,
    rng: Rng,
    /// Virtual time in milliseconds.
    now_ms: u64,
    pub fs: ramfs::Fs,
    clients: Vec<Client>,
    server_msize: u32,
    server_down_until: u64,
    /// A hung server takes connections but runs nothing until then.
    server_hung_until: u64,
    /// Old connections left half-open after a network fault, closed at their time.
    lingering: Vec<(u64, ramfs::Conn)>,
    /// The liveness phase: no more faults of any kind (drops, refused or late dials).
    calm: bool,
    /// Events and steps, when tracing.
    pub trace: Option<String>,
    digest: u64,
    pub stats: Stats,
    /// Every session's marks, once the run is over.
    marks: persist_core::Marks,
    /// Each lane's data file as of its last successful fsync: what a crash that loses unsynced
    /// writes leaves.
    synced: BTreeMap<usize, Vec<u8>>,
    /// Every take and release of a shared lock name, by lanes and by the direct actor, for
    /// the history checker.
    history: History,
    /// Every write, read and fsync of the shared file, for the data checker.
    data_history: Vec<history::DataOp>,
    /// The history's clock: one tick per event, so that windows are strictly ordered.
    clock: u64,
    /// Links given up on whose server will still run what they held: (when, connection,
    /// frames).
    late_runs: Vec<(u64, usize, ramfs::Conn, Vec<Bytes>)>,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub requests: u64,
    pub drops: u64,
    pub restarts: u64,
    pub recoveries: u64,
    pub not_completed: u64,
    /// Dials that completed after the session gave up on them (the drive must refuse them).
    pub late_dials: u64,
    /// Links cut with part of a frame on the wire.
    pub mid_frame_cuts: u64,
    /// Steps at which whole client frames waited in the drive while the session took no input.
    pub frames_held_back: u64,
    /// Lanes whose acknowledged, unsynced writes a crash lost.
    pub writes_lost: u64,
    /// How the takes and releases of lock names ended.
    pub history: history::Counts,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.requests += o.requests;
        self.drops += o.drops;
        self.restarts += o.restarts;
        self.recoveries += o.recoveries;
        self.not_completed += o.not_completed;
        self.late_dials += o.late_dials;
        self.mid_frame_cuts += o.mid_frame_cuts;
        self.frames_held_back += o.frames_held_back;
        self.writes_lost += o.writes_lost;
        self.history.add(o.history);
    }
}

fn fnv(digest: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *digest = (*digest ^ *b as u64).wrapping_mul(0x100_0000_01b3);
    }
}

impl World {
    pub fn new(seed: u64, trace: bool) -> World {
        World::with_overrides(seed, &super::Overrides::default(), trace)
    }

    /// A world for `seed` with some of its knobs changed (to shrink a failure).
    pub fn with_overrides(seed: u64, overrides: &super::Overrides, trace: bool) -> World {
        let mut rng = Rng::new(seed);
        let mut knobs = Knobs::from_rng(&mut rng);
        // Knobs added later are drawn from a generator of their own, so that the others (and
        // the world's own draws) stay as they were for every seed.
        let mut later = Rng::new(seed ^ 0x6c61_7465_726b_6e62);
        knobs.replay_budget = [64 << 20, 64 << 20, 40 << 10][later.below(3) as usize];
        knobs.rewrite_fail_percent = [0, 0, 30][later.below(3) as usize] as u32;
        knobs.resolve_ambiguous = later.below(4) != 0;
        knobs.refuse_look_percent = [0, 0, 30][later.below(3) as usize] as u32;
        // Contention came later still: from a generator of its own again.
        let mut contention = Rng::new(seed ^ 0x636f_6e74_656e_6431);
        knobs.contend_percent = [0, 0, 10, 30][contention.below(4) as usize] as u32;
        knobs.direct_percent = [0, 30, 80][contention.below(3) as usize] as u32;
        knobs.late_run_percent = [0, 50, 100][contention.below(3) as usize] as u32;
        // And the memory bounds, later again.
        let mut memory = Rng::new(seed ^ 0x6d65_6d6f_7279_6b6e);
        knobs.reply_max = [4 << 20, 4 << 20, 0][memory.below(3) as usize];
        knobs.memory_pressure_percent = [0, 0, 10][memory.below(3) as usize] as u32;
        overrides.apply(&mut knobs);
        knobs.clients = knobs.clients.clamp(1, knobs.lanes);
        let mut fs = ramfs::Fs::new();
        if knobs.contend_percent > 0 {
            fs.mkdir_p(SHARED_DIR).expect("shared directory");
            let file = [SHARED_DIR, SHARED_FILE].join(&b'/');
            fs.write_file(&file, &vec![0; (BLOCK * BLOCKS) as usize])
                .expect("shared file");
        }
        let mut clients = Vec::new();
        for c in 0..knobs.clients {
            // Lanes are dealt out among the clients; each client numbers its fids from 16.
            let lanes: Vec<Lane> = (c..knobs.lanes)
                .step_by(knobs.clients)
                .enumerate()
                .map(|(slot, id)| {
                    let identity = Identity::draw(&mut rng, knobs.dialect);
                    let mut lane = Lane::new(id, slot, knobs.dialect, identity);
                    // A small lock-history cap makes a fid with more locks stale at a reconnect.
                    lane.disturbed = knobs.max_lock_history < 64;
                    lane.soft = knobs.give_up_ms.is_some();
                    lane.contender.percent = knobs.contend_percent;
                    lane.contender.breaks = knobs.clients == 1;
                    lane
                })
                .collect();
            for lane in &lanes {
                make_lane_files(&mut fs, lane);
            }
            let cfg = Config {
                seed: rng.next_u64(),
                queue_max_requests: knobs.queue_max_requests,
                backoff: persist_core::Backoff {
                    initial: Duration::from_millis(knobs.backoff_initial_ms),
                    ..persist_core::Backoff::default()
                },
                give_up_after: knobs.give_up_ms.map(Duration::from_millis),
                recovery_window: knobs.recovery_window,
                queue_max_bytes: knobs.queue_max_bytes,
                watchdog: Duration::from_millis(knobs.watchdog_ms),
                max_lock_history: knobs.max_lock_history,
                replay_budget: knobs.replay_budget,
                resolve_ambiguous: knobs.resolve_ambiguous,
                server_timeout: Duration::from_millis(knobs.server_timeout_ms),
                reply_max: knobs.reply_max,
                ..Config::default()
            };
            clients.push(Client {
                drive: Drive::new(cfg, BackendId(0), Instant::from_millis(0)),
                server: None,
                pending_dials: Vec::new(),
                memory_cap: None,
                stalled_until: 0,
                held_at: None,
                failed_links: Vec::new(),
                closed_links: Default::default(),
                to_server: VecDeque::new(),
                pipe: Wire::default(),
                framer: Framer::default(),
                lanes,
                outstanding: BTreeMap::new(),
                executions: BTreeMap::new(),
                next_tag: TAG_BASE,
                next_seq: 0,
                last_received: None,
                version_done: false,
                attach_done: false,
                open_modes: BTreeMap::new(),
                poisoned: Default::default(),
                looks_refused: 0,
                unseen: Default::default(),
                ran_after_flush: Default::default(),
                links_given_up: 0,
            });
        }
        let mut w = World {
            seed,
            server_msize: knobs.client_msize,
            knobs,
            rng,
            now_ms: 0,
            fs,
            clients,
            server_down_until: 0,
            server_hung_until: 0,
            lingering: Vec::new(),
            calm: false,
            trace: trace.then(String::new),
            digest: 0xcbf2_9ce4_8422_2325,
            stats: Stats::default(),
            marks: Default::default(),
            synced: BTreeMap::new(),
            history: History::new(),
            data_history: Vec::new(),
            clock: 0,
            late_runs: Vec::new(),
        };
        note!(w, "knobs {:?}", w.knobs);
        for c in 0..w.clients.len() {
            w.drain(c).expect("a new session only dials");
        }
        w
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.now_ms)
    }

    /// The sessions' coverage marks, summed.
    pub fn marks(&self) -> persist_core::Marks {
        let mut all = self.marks.clone();
        for c in &self.clients {
            all.add(c.drive.session().marks());
        }
        all
    }

    /// The digest of everything that happened (frames and events), for determinism checks.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    fn latency(&mut self) -> u64 {
        let (lo, hi) = self.knobs.latency_ms;
        self.rng.range(lo, hi)
    }

    /// A piece size for a read or write: anything from one byte to the knob's largest.
    fn piece(&mut self, max: usize) -> usize {
        self.rng.range(1, max as u64) as usize
    }

    /// Carry out everything client `c`'s drive asked for, and move what it queued onto the
    /// wires.
    fn drain(&mut self, c: usize) -> Result<(), String> {
        while let Some(action) = self.clients[c].drive.poll_action() {
            match action {
                Action::Dial { link, .. } => {
                    let late = !self.calm && self.rng.chance(self.knobs.late_dial_percent);
                    let delay = match late {
                        true => self.knobs.watchdog_ms + self.rng.range(1, 10_000),
                        false => self.latency() + 1,
                    };
                    self.clients[c]
                        .pending_dials
                        .push((link, self.now_ms + delay));
                }
                Action::CloseLink { link } => {
                    self.clients[c].closed_links.insert(link);
                    if self.clients[c]
                        .server
                        .as_ref()
                        .is_some_and(|s| s.link == link)
                    {
                        // The session closed it itself: a silent link given up on.
                        self.hang_up(c, 0, true);
                    }
                    // An abandoned dial may still complete (the runtime's connect was racing).
                    if self.rng.chance(50) {
                        self.clients[c].pending_dials.retain(|(l, _)| *l != link);
                    }
                }
            }
        }
        while let Some(e) = self.clients[c].drive.poll_event() {
            fnv(&mut self.digest, format!("{c} {e:?}").as_bytes());
            note!(self, "client {c} event {e:?}");
            match &e {
                Event::Disconnected { loss, .. } if *loss != persist_core::LinkLoss::Closed => {
                    self.clients[c].links_given_up += 1;
                    // Silence counts only while the link is read: the server cannot be judged
                    // silent sooner than its timeout after the drive last held the link.
                    let timeout = match self.knobs.give_up_ms {
                        Some(g) => g.min(self.knobs.server_timeout_ms),
                        None => self.knobs.server_timeout_ms,
                    };
                    let held_ago = self.clients[c].held_at.map(|t| self.now_ms - t);
                    if *loss == persist_core::LinkLoss::Silent
                        && held_ago.is_some_and(|ago| ago + 10 < timeout)
                    {
                        return Err(format!(
                            "client {c}'s session judged its server silent {held_ago:?} ms after it last stopped reading the link: {e:?}"
                        ));
                    }
                }
                Event::Recovered { .. } => {
                    self.stats.recoveries += 1;
                    // Nothing has been resent yet: the new link holds exactly the rebuilt fids.
                    self.check_fids(c)?;
                    self.check_users(c)?;
                }
                Event::RequestFailed { tag, why, .. } => {
                    self.stats.not_completed += 1;
                    if why.contains("does not tell") || why.contains("given up") {
                        self.clients[c].unseen.insert(*tag);
                    }
                }
                // Only the server the knobs make misbehave may break the protocol, and only in
                // its replies to the requests it was told to spoil.
                Event::ProtocolViolation {
                    peer: persist_core::Peer::Server,
                    what,
                } if self.knobs.bad_reply_percent > 0 && what.contains("answered with Rclunk") => {}
                Event::ProtocolViolation { .. } => {
                    return Err(format!("protocol violation: {e:?}"))
                }
                _ => {}
            }
        }
        let cl = &mut self.clients[c];
        if cl.drive.is_finished() {
            return Err(format!(
                "client {c}'s session ended while the client was still there"
            ));
        }
        // The replay budget holds: what the session keeps for rewriting counts within it.
        let kept = cl.drive.session().replay_kept_bytes();
        if kept > self.knobs.replay_budget {
            return Err(format!(
                "client {c} keeps {kept} bytes of unsynced writes, over its replay budget of {}",
                self.knobs.replay_budget
            ));
        }
        // A failed link is let go of at once: closed, nothing queued for it, nothing read.
        for &link in &cl.failed_links {
            if cl.drive.link_read_buf(link).is_some() || !cl.drive.link_out(link).is_empty() {
                return Err(format!(
                    "client {c}'s drive still uses link {} after it failed",
                    link.0
                ));
            }
        }
        // Proxy to server: partial writes onto the wire.
        if let Some(link) = self.clients[c].server.as_ref().map(|s| s.link) {
            while !self.clients[c].drive.link_out(link).is_empty() {
                let n = self.piece(self.knobs.write_piece);
                let due = self.now_ms + self.latency();
                let cl = &mut self.clients[c];
                let n = n.min(cl.drive.link_out(link).len());
                let bytes = gather(cl.drive.link_out(link).chunks(), n);
                cl.drive.link_written(link, n);
                if let Some(s) = &mut cl.server {
                    s.up.send(due, bytes);
                }
            }
        }
        // Proxy to client: the client reads in pieces, or lags.
        while !self.clients[c].drive.client_out().is_empty()
            && self.now_ms >= self.clients[c].stalled_until
            && self.rng.chance(self.knobs.client_reads_percent)
        {
            let n = self.piece(self.knobs.read_piece);
            let cl = &mut self.clients[c];
            let n = n.min(cl.drive.client_out().len());
            let bytes = gather(cl.drive.client_out().chunks(), n);
            let now = Instant::from_millis(self.now_ms);
            cl.drive.client_written(now, n);
            cl.framer.push(&bytes);
            while let Some(frame) = self.clients[c].framer.next_frame()? {
                fnv(&mut self.digest, &frame);
                self.client_receives(c, frame)?;
            }
        }
        // Bounded memory: the session holds no more than the client has outstanding, and its
        // bytes stay within the configured bound (plus what each lane may add past it).
        let cl = &self.clients[c];
        let byte_bound =
            self.knobs.queue_max_bytes + cl.lanes.len() * 2 * self.knobs.client_msize as usize;
        let session = cl.drive.session();
        if session.wants_client_input() && cl.drive.client_frame_waiting() {
            return Err(
                "a whole client frame waits in the drive while the session wants input".into(),
            );
        }
        if session.bytes_held() > byte_bound {
            return Err(format!(
                "client {c}'s session holds {} bytes, over its bound {byte_bound}",
                session.bytes_held()
            ));
        }
        if session.requests_held() > cl.outstanding.len() {
            return Err(format!(
                "client {c}'s session holds {} requests for {} outstanding",
                session.requests_held(),
                cl.outstanding.len()
            ));
        }
        Ok(())
    }

    /// The server's end of client `c`'s link goes away (its connection state with it), or
    /// stays half-open for `linger` ms more, holding its locks and opens (a server that has not
    /// noticed a dead network path yet); `given_up`: the session closed it (silent too long).
    fn hang_up(&mut self, c: usize, linger: u64, given_up: bool) {
        let cl = &mut self.clients[c];
        if let Some(s) = cl.server.take() {
            let cl = &mut self.clients[c];
            for lane in &mut cl.lanes {
                lane.link_lost();
            }
            if s.up_framer.partial() || !s.up.is_empty() || !s.down.is_empty() {
                self.stats.mid_frame_cuts += 1;
            }
            let held = std::mem::take(&mut cl.to_server);
            // A silent link's server may wake and run the takes, releases and writes it was
            // holding, after the session gave up on it (the session must not have sent them
            // again). A link that died under it (a reset, a kill) runs nothing more: the
            // session's rules assume so, as they must to resend anything.
            let late = s.silent
                && given_up
                && self.knobs.contend_percent > 0
                && self.rng.chance(self.knobs.late_run_percent);
            if late {
                let frames: Vec<Bytes> = held
                    .into_iter()
                    .filter(|t| t.link == s.link && is_lock_request(&t.frame, self.knobs.dialect))
                    .map(|t| t.frame)
                    .collect();
                let when = self.now_ms + self.rng.range(1, 5000);
                note!(
                    self,
                    "client {c}'s given-up link {} will run {} held lock requests at {when} ms",
                    s.link.0,
                    frames.len()
                );
                // It holds its opens and locks till then, as a lingering connection does.
                for lane in &mut self.clients[c].lanes {
                    lane.disturbed = true;
                }
                self.late_runs.push((when, c, s.conn, frames));
                return;
            }
            let cl = &mut self.clients[c];
            if linger > 0 {
                for lane in &mut cl.lanes {
                    lane.disturbed = true;
                }
                note!(self, "client {c}'s old connection lingers for {linger} ms");
                self.lingering.push((self.now_ms + linger, s.conn));
            } else {
                s.conn.close(&mut self.fs);
            }
        }
    }

    /// Close the lingering connections whose time has come.
    fn end_lingering(&mut self) {
        let now = self.now_ms;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.lingering)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        self.lingering = later;
        for (_, conn) in due {
            conn.close(&mut self.fs);
        }
    }

    /// A lane sends `op`: it is in flight before the session sees it, since the session may
    /// answer at once.
    fn lane_send(&mut self, c: usize, lane: usize, msg: Msg, op: Op) -> Result<u16, String> {
        let tag = self.clients[c].take_tag();
        self.clock += 1;
        self.clients[c].lanes[lane].contender.now = self.clock;
        self.clients[c].lanes[lane].start(tag, op);
        self.client_send_tagged(c, lane, tag, msg)
    }

    fn client_send(&mut self, c: usize, lane: usize, msg: Msg) -> Result<u16, String> {
        let tag = self.clients[c].take_tag();
        self.client_send_tagged(c, lane, tag, msg)
    }

    fn client_send_tagged(
        &mut self,
        c: usize,
        lane: usize,
        tag: u16,
        msg: Msg,
    ) -> Result<u16, String> {
        let ty = msg.msg_type();
        let flushes = match &msg {
            Msg::Tflush(f) => Some(f.oldtag),
            _ => None,
        };
        let opens = match &msg {
            Msg::Topen(o) => Some((o.fid.0, o.mode as u32)),
            Msg::Tcreate(o) => Some((o.fid.0, o.mode as u32)),
            Msg::Tlopen(o) => Some((o.fid.0, o.flags)),
            Msg::Tlcreate(o) => Some((o.fid.0, o.flags)),
            Msg::Tclunk(Tclunk { fid }) | Msg::Tremove(Tremove { fid }) => {
                self.clients[c].open_modes.remove(&fid.0);
                None
            }
            _ => None,
        };
        self.stats.requests += 1;
        note!(self, "client {c} -> {tag} {msg:?}");
        let frame = Fcall::new(tag, msg).to_frame().map_err(|e| e.to_string())?;
        fnv(&mut self.digest, &frame);
        let cl = &mut self.clients[c];
        let seq = cl.next_seq;
        cl.next_seq += 1;
        cl.outstanding.insert(
            tag,
            Outstanding {
                lane,
                ty,
                flushes,
                seq,
                opens,
            },
        );
        cl.executions.insert(tag, Execution::default());
        // The proxy reads it later in the step, perhaps with others sent meanwhile.
        cl.pipe.send(self.now_ms, frame);
        Ok(tag)
    }

    /// The proxy reads what the client sent, in pieces, while the drive wants to read.
    fn feed_client(&mut self, c: usize) -> Result<(), String> {
        loop {
            let max = self.piece(self.knobs.read_piece);
            let now = self.now();
            let cl = &mut self.clients[c];
            let Some(buf) = cl.drive.client_read_buf() else {
                break;
            };
            let Some(bytes) = cl.pipe.take(self.now_ms, max) else {
                break;
            };
            buf.extend_from_slice(&bytes);
            cl.drive.handle_client_read(now, bytes.len());
            self.drain(c)?;
        }
        Ok(())
    }

    /// A reply reached client `c`: check it and let the lane take its outcome.
    fn client_receives(&mut self, c: usize, frame: Bytes) -> Result<(), String> {
        let dialect = if frame.get(4) == Some(&(MsgType::Rversion as u8)) {
            Dialect::DotL
        } else if !self.clients[c].version_done {
            // Before a version is settled the session answers in plain 9P2000.
            Dialect::Base
        } else {
            self.knobs.dialect
        };
        let fc = Fcall::decode(&frame, dialect).map_err(|e| format!("undecodable reply: {e}"))?;
        note!(self, "client {c} <- {} {:?}", fc.tag, fc.msg);
        let cl = &mut self.clients[c];
        let Some(out) = cl.outstanding.remove(&fc.tag) else {
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
            // A failed Tversion (soft mode, no server yet) is sent again.
            cl.version_done = matches!(fc.msg, Msg::Rversion(_));
            if let Msg::Rversion(v) = &fc.msg {
                for lane in &mut cl.lanes {
                    lane.msize = v.msize;
                }
            }
            cl.executions.remove(&fc.tag);
            return Ok(());
        }
        let exec = cl.executions.remove(&fc.tag).unwrap_or_default();
        if let (Some((fid, mode)), false) = (out.opens, is_error(&fc.msg)) {
            cl.open_modes.insert(fid, mode);
        }
        let lane = out.lane;
        if lane == SETUP {
            // Soft mode may fail the attach while the server is away: it is sent again.
            return match is_error(&fc.msg) {
                true if super::client::is_not_completed(&fc.msg) => Ok(()),
                true => Err(format!("setup request failed: {:?}", fc.msg)),
                false => {
                    cl.attach_done = true;
                    Ok(())
                }
            };
        }
        if out.ty == MsgType::Tflush {
            cl.lanes[lane].flush = None;
            // The flushed request gets no reply now: settle it from what the server did.
            if let Some(old) = out.flushes {
                if cl.outstanding.remove(&old).is_some() {
                    let exec = cl.executions.remove(&old).unwrap_or_default();
                    let (_, op) = cl.lanes[lane].busy.take().expect("the flushed op");
                    // flush(5): an Rflush with no reply says the request never happened
                    // (unless the server itself ran it after its Rflush).
                    let server_lied = cl.ran_after_flush.remove(&old);
                    if exec.success.is_some() && op.changes_server() && !server_lied {
                        return Err(format!(
                            "{op:?} was flushed with no reply, but the server ran it"
                        ));
                    }
                    let outcome = check_executions(&op, &exec, None)?;
                    let reply = Rflush {}.into();
                    let follow = self.complete(c, lane, op, &reply, outcome.as_ref(), true)?;
                    self.follow_up(c, lane, follow)?;
                }
            }
            return Ok(());
        }
        let Some((tag, op)) = cl.lanes[lane].busy.take() else {
            return Err(format!(
                "client {c} lane {lane} got a reply with nothing in flight"
            ));
        };
        // What the replay table resends is never "possibly not completed" (soft mode fails
        // everything held once it gives up, so only in hard mode).
        let hard = self.knobs.give_up_ms.is_none();
        let poisoned = self.clients[c].poisoned.remove(&fc.tag);
        // (Unless it was in flight on a link the session gave up on: its old server may run it
        // yet, so the session fails a change rather than resend it.)
        let given_up = self.clients[c].unseen.contains(&fc.tag);
        if hard
            && !poisoned
            && !given_up
            && op.resent_after_loss()
            && super::client::is_not_completed(&fc.msg)
        {
            return Err(format!(
                "{op:?}, which is resent after a loss, answered {:?}",
                fc.msg
            ));
        }
        debug_assert_eq!(tag, fc.tag);
        // No false errors: a create, remove or rename in flight at a loss is settled by looking,
        // and fails only where the session says the server showed nothing certain — which
        // needs a reason in this world (a look the server refused, a link given up on, or the
        // request ran and what it left proves nothing: another actor could have done the same).
        let unseen = self.clients[c].unseen.remove(&fc.tag);
        let not_completed = super::client::is_not_completed(&fc.msg);
        let settled = self.clients[c].lanes[lane].settled_by_looking(&op);
        if hard && !poisoned && self.knobs.resolve_ambiguous && settled {
            if not_completed && !unseen {
                return Err(format!(
                    "{op:?}, settled by looking after a loss, answered {:?} without the session saying it saw nothing certain",
                    fc.msg
                ));
            }
            let cl = &self.clients[c];
            let ran_unproven = exec.count > 0 && !op.proven_by_looking();
            if unseen && cl.looks_refused == 0 && cl.links_given_up == 0 && !ran_unproven {
                return Err(format!(
                    "{op:?}: the session saw nothing certain of it, with no look refused and no link given up"
                ));
            }
        }
        // A hard link found leading to the lane's file is answered done; an earlier link of the
        // same name by the same lane, answered "possibly not completed", may be what made it
        // (run late by a server given up on): then this one may be answered done unrun.
        let exec = match &op {
            Op::TakeLock { name }
                if exec.count == 0 && self.clients[c].lanes[lane].contender.took_unknown(name) =>
            {
                Execution {
                    count: 1,
                    successes: 1,
                    success: Some(fc.msg.clone()),
                }
            }
            _ => exec,
        };
        let outcome = check_executions(&op, &exec, Some(&fc.msg))?;
        let follow = self.complete(c, lane, op, &fc.msg, outcome.as_ref(), false)?;
        self.follow_up(c, lane, follow)
    }

    /// The lane takes its operation's outcome; takes and releases of lock names go into the
    /// history.
    fn complete(
        &mut self,
        c: usize,
        lane: usize,
        op: Op,
        reply: &Msg,
        effective: Option<&Msg>,
        flushed: bool,
    ) -> Result<Option<(Msg, Op)>, String> {
        self.clock += 1;
        let l = &mut self.clients[c].lanes[lane];
        l.contender.now = self.clock;
        let follow = l.complete(op, reply, effective, flushed)?;
        let finished = std::mem::take(&mut l.contender.finished);
        self.data_history
            .append(&mut std::mem::take(&mut l.contender.finished_data));
        for op in &finished {
            note!(
                self,
                "history: lane {} {:?} {} {:?}",
                op.process,
                op.kind,
                op.name,
                op.outcome
            );
        }
        self.history.extend(finished);
        Ok(follow)
    }

    /// Another client, straight on the server, during an outage: it takes each lock name
    /// that is free, or breaks each that is taken by nobody alive — only names no lane holds
    /// or has a request in flight on. (The rule that settles a request in flight at a loss by
    /// looking assumes nobody undoes it during the outage; breaking a live lock would let its
    /// holder, still believing it holds it, remove the next taker's.)
    fn act_directly(&mut self) {
        if self.knobs.contend_percent == 0 {
            return;
        }
        for &name in lock_names(self.knobs.dialect) {
            if !self.rng.chance(self.knobs.direct_percent) {
                continue;
            }
            let busy = self.clients.iter().any(|cl| {
                cl.lanes.iter().any(|l| {
                    l.contender.holds(name)
                        || l.busy
                            .as_ref()
                            .is_some_and(|(_, op)| lock_name_of(op) == Some(name))
                })
            });
            if busy {
                continue;
            }
            let path = format!(
                "{}/{}",
                String::from_utf8_lossy(SHARED_DIR),
                String::from_utf8_lossy(name)
            );
            let present = self.fs.qid_of(&path).is_ok();
            let kind = if present {
                self.fs
                    .remove_path(&path)
                    .expect("a lock name that is there");
                Kind::Remove
            } else if is_dir_lock(name) {
                self.fs.mkdir_p(&path).expect("a lock directory");
                Kind::CreateExclusive
            } else {
                self.fs.write_file(&path, b"").expect("a lock file");
                Kind::CreateExclusive
            };
            self.clock += 1;
            note!(self, "another client {kind:?} {path} on the server");
            self.history.push(history::Op {
                process: usize::MAX,
                name: String::from_utf8_lossy(name).into_owned(),
                kind,
                invoked: self.clock,
                answered: self.clock,
                outcome: Outcome::Ok,
            });
        }
    }

    /// Run what a given-up link's server still held, when its time has come (or `all` now).
    fn run_late(&mut self, all: bool) {
        let now = self.now_ms;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.late_runs)
            .into_iter()
            .partition(|(t, _, _, _)| all || *t <= now);
        self.late_runs = later;
        for (_, c, mut conn, frames) in due {
            for frame in frames {
                let reply = conn.handle(&mut self.fs, &frame);
                self.count_execution(c, &frame, &reply);
                note!(
                    self,
                    "a given-up link's server runs, late: {:?} -> {:?}",
                    Fcall::decode(&frame, self.knobs.dialect).map(|f| f.msg),
                    Fcall::decode(&reply, self.knobs.dialect).map(|f| f.msg)
                );
            }
            conn.close(&mut self.fs);
        }
    }

    fn follow_up(
        &mut self,
        c: usize,
        lane: usize,
        follow: Option<(Msg, Op)>,
    ) -> Result<(), String> {
        if let Some((msg, op)) = follow {
            self.lane_send(c, lane, msg, op)?;
        }
        Ok(())
    }

    /// A read of a lane's data file the session makes after a reconnect (its own tags, to see
    /// the server still holds its unsynced writes), refused before it runs: the error to answer
    /// it with.
    fn refuse_read_back(&mut self, c: usize, frame: &Bytes) -> Option<Bytes> {
        let h = Header::parse(frame).ok()?;
        let fid = p9_core::peek::first_fid(frame).unwrap_or(u32::MAX);
        let check = h.msg_type == MsgType::Tread as u8
            && h.tag < TAG_BASE
            && self.clients[c].lanes.iter().any(|l| l.is_data_fid(fid));
        if !check
            || self.knobs.rewrite_fail_percent == 0
            || !self.rng.chance(self.knobs.rewrite_fail_percent)
        {
            return None;
        }
        note!(
            self,
            "the server refuses client {c}'s read-back (tag {})",
            h.tag
        );
        let msg: Msg = match self.knobs.dialect {
            Dialect::DotL => Rlerror { ecode: 28 }.into(),
            d => Rerror {
                ename: "no space left on device".into(),
                errno: (d == Dialect::DotU).then_some(28),
            }
            .into(),
        };
        Fcall::new(h.tag, msg).to_frame().ok()
    }

    /// A walk the session makes after a reconnect to look at a name (its own tag, to a fid no
    /// lane uses), refused as if for want of permission: the error to answer it with.
    fn refuse_look(&mut self, c: usize, frame: &Bytes) -> Option<Bytes> {
        let h = Header::parse(frame).ok()?;
        if h.msg_type != MsgType::Twalk as u8 || h.tag >= TAG_BASE {
            return None;
        }
        let Ok(Fcall {
            msg: Msg::Twalk(w), ..
        }) = Fcall::decode(frame, self.knobs.dialect)
        else {
            return None;
        };
        let cl = &self.clients[c];
        let probe = !cl.lanes.iter().any(|l| l.owns(w.newfid.0));
        if !probe
            || self.knobs.refuse_look_percent == 0
            || !self.rng.chance(self.knobs.refuse_look_percent)
        {
            return None;
        }
        note!(self, "the server refuses client {c}'s look (tag {})", h.tag);
        self.clients[c].looks_refused += 1;
        let msg: Msg = match self.knobs.dialect {
            Dialect::DotL => Rlerror { ecode: 13 }.into(),
            d => Rerror {
                ename: "permission denied".into(),
                errno: (d == Dialect::DotU).then_some(13),
            }
            .into(),
        };
        Fcall::new(h.tag, msg).to_frame().ok()
    }

    /// The server takes one frame from client `c`'s link.
    fn server_receives(&mut self, c: usize, t: Transit) -> Result<(), String> {
        let on_link = self.clients[c]
            .server
            .as_ref()
            .is_some_and(|s| s.link == t.link);
        if !on_link {
            return Ok(());
        }
        let refused = self
            .refuse_read_back(c, &t.frame)
            .or_else(|| self.refuse_look(c, &t.frame));
        let cl = &mut self.clients[c];
        let Some(server) = &mut cl.server else {
            return Ok(());
        };
        let mut reply = match refused {
            Some(error) => error,
            None => server.conn.handle(&mut self.fs, &t.frame),
        };
        reply = self.misbehave(c, &t.frame, reply);
        note!(
            self,
            "server ran client {c}'s tag {} on link {}{}",
            Header::parse(&t.frame).map_or(0, |h| h.tag),
            t.link.0,
            // The session's own requests (recovery) are shown in full, with their replies.
            match Header::parse(&t.frame) {
                Ok(h) if h.tag < TAG_BASE && self.trace.is_some() => format!(
                    ": {:?} -> {:?}",
                    Fcall::decode(&t.frame, self.knobs.dialect).map(|f| f.msg),
                    Fcall::decode(&reply, self.knobs.dialect).map(|f| f.msg)
                ),
                _ => String::new(),
            }
        );
        fnv(&mut self.digest, &reply);
        // A successful fsync of a lane's data file makes its contents durable.
        let cl = &mut self.clients[c];
        if let Ok(Fcall {
            msg: Msg::Tfsync(f),
            ..
        }) = Fcall::decode(&t.frame, self.knobs.dialect)
        {
            let ok = Header::parse(&reply).is_ok_and(|h| h.msg_type == MsgType::Rfsync as u8);
            if let Some(lane) = cl
                .lanes
                .iter()
                .find(|l| l.is_data_fid(f.fid.0))
                .filter(|_| ok)
            {
                let path = format!("{}/data", lane.dir_name());
                let now = self.fs.read_file(&path).expect("data file").to_vec();
                self.synced.insert(lane.id, now);
            }
        }
        // The session writes a data fid's kept writes again while it rebuilds it (its own
        // tags): the model's file follows, once the step is checked against what the lane was
        // acknowledged.
        if let Ok(fc) = Fcall::decode(&t.frame, self.knobs.dialect) {
            let ok = Fcall::decode(&reply, self.knobs.dialect).is_ok_and(|r| !is_error(&r.msg));
            let step = match &fc.msg {
                Msg::Twrite(w) => Some((w.fid.0, KeptStep::Write(w.offset, w.data.0.to_vec()))),
                _ => None,
            };
            // A client's write the server ran changes the model's file now, in the server's
            // order (a rewrite may follow it before the client hears).
            if let (Msg::Twrite(w), true) = (&fc.msg, ok && fc.tag >= TAG_BASE && fc.tag != NOTAG) {
                let n = match Fcall::decode(&reply, self.knobs.dialect).map(|r| r.msg) {
                    Ok(Msg::Rwrite(r)) => (r.count as usize).min(w.data.0.len()),
                    _ => 0,
                };
                if let Some(lane) = cl.lanes.iter_mut().find(|l| l.writes_through(w.fid.0)) {
                    lane.server_wrote(fc.tag, w.fid.0, w.offset, &w.data.0[..n]);
                }
            }
            if let Some((fid, step)) = step.filter(|_| ok && fc.tag < TAG_BASE) {
                if let Some(lane) = cl.lanes.iter_mut().find(|l| l.writes_through(fid)) {
                    note!(
                        self,
                        "the session wrote again on {}'s fid {fid}: {step:?}",
                        lane.dir_name()
                    );
                    lane.session_rewrote(fid, step)?;
                }
            }
        }
        self.count_execution(c, &t.frame, &reply);
        // Replies leave in the order the server made them (the wire keeps order).
        let slow = self.rng.range(0, self.knobs.server_slowness_ms);
        let due = self.now_ms + self.latency() + slow;
        if let Some(s) = &mut self.clients[c].server {
            s.down.send(due, reply);
        }
        Ok(())
    }

    /// Count a run of one of client `c`'s requests (the session's own use low tags).
    fn count_execution(&mut self, c: usize, frame: &Bytes, reply: &Bytes) {
        let cl = &mut self.clients[c];
        if let Ok(header) = Header::parse(frame) {
            if header.tag >= TAG_BASE && header.tag != NOTAG {
                let same_type = cl
                    .outstanding
                    .get(&header.tag)
                    .is_some_and(|o| o.ty as u8 == header.msg_type);
                if same_type {
                    let dialect = self.knobs.dialect;
                    let exec = cl.executions.entry(header.tag).or_default();
                    exec.count += 1;
                    let success = Fcall::decode(reply, dialect)
                        .ok()
                        .map(|f| f.msg)
                        .filter(|m| !is_error(m));
                    exec.successes += success.is_some() as u32;
                    // A write that ran twice (in full on a lost link, shortened on a smaller
                    // server's) left the longer one's bytes on the server.
                    let longer = match (&exec.success, &success) {
                        (Some(Msg::Rwrite(a)), Some(Msg::Rwrite(b))) => a.count > b.count,
                        _ => false,
                    };
                    if !longer {
                        exec.success = success;
                    }
                }
            }
        }
    }

    /// A server that does not answer as the manuals say: a stat of a deep file answered with
    /// the wrong type; .L errors sent as Rerror.
    fn misbehave(&mut self, c: usize, request: &Bytes, reply: Bytes) -> Bytes {
        let Ok(h) = Header::parse(request) else {
            return reply;
        };
        let stat = h.msg_type == MsgType::Tstat as u8 || h.msg_type == MsgType::Tgetattr as u8;
        if stat && h.tag >= TAG_BASE && self.knobs.bad_reply_percent > 0 {
            let cl = &self.clients[c];
            let deep = cl
                .outstanding
                .get(&h.tag)
                .and_then(|o| cl.lanes.get(o.lane))
                .is_some_and(|l| matches!(l.busy, Some((t, Op::StatDeep)) if t == h.tag));
            if deep && self.rng.chance(self.knobs.bad_reply_percent) {
                self.clients[c].poisoned.insert(h.tag);
                note!(
                    self,
                    "the server answers client {c}'s tag {} with Rclunk",
                    h.tag
                );
                return Fcall::new(h.tag, Rclunk {}).to_frame().expect("small");
            }
        }
        let rlerror = reply.get(4) == Some(&(MsgType::Rlerror as u8)) && reply.len() == 11;
        if rlerror && self.rng.chance(self.knobs.error_shape_percent) {
            let ecode = u32::from_le_bytes(reply[7..11].try_into().expect("4 bytes"));
            let mut out = bytes::BytesMut::new();
            let bare = self.rng.chance(50);
            let body_len = if bare { 4 } else { 2 + 5 + 4 };
            out.extend_from_slice(&(7 + body_len as u32).to_le_bytes());
            out.extend_from_slice(&[MsgType::Rerror as u8]);
            out.extend_from_slice(&h.tag.to_le_bytes());
            if !bare {
                out.extend_from_slice(&5u16.to_le_bytes());
                out.extend_from_slice(b"error");
            }
            out.extend_from_slice(&ecode.to_le_bytes());
            return out.freeze();
        }
        reply
    }

    /// The next request the server works on for client `c`: usually the oldest that has
    /// arrived, sometimes another (servers run pipelined requests concurrently) — but never a
    /// Tflush before the request it flushes, which flush(5) orders.
    fn next_for_server(&mut self, c: usize) -> Option<Transit> {
        let n = self.clients[c].to_server.len();
        if n == 0 {
            return None;
        }
        let mut pick = if self.rng.chance(self.knobs.reorder_percent) {
            self.rng.below(n as u64) as usize
        } else {
            0
        };
        let queue = &mut self.clients[c].to_server;
        if let Ok(Fcall {
            msg: Msg::Tflush(f),
            ..
        }) = Fcall::decode(&queue[pick].frame, self.knobs.dialect)
        {
            if let Some(old) = queue
                .iter()
                .take(pick)
                .position(|t| Header::parse(&t.frame).is_ok_and(|h| h.tag == f.oldtag))
            {
                if self.rng.chance(self.knobs.late_reply_percent) {
                    // Rflush first, then the flushed request's own reply: run the flush, and
                    // put the request right behind it.
                    let flush = queue.remove(pick).expect("picked");
                    let target = queue.remove(old).expect("found");
                    self.clients[c].ran_after_flush.insert(f.oldtag);
                    let queue = &mut self.clients[c].to_server;
                    queue.push_front(target);
                    return Some(flush);
                }
                pick = old;
            }
        }
        queue.remove(pick)
    }

    /// Bytes that reached the server on client `c`'s link are framed; whole frames wait to be
    /// executed. The client's requests must arrive in the order it sent them.
    fn server_reads(&mut self, c: usize) -> Result<(), String> {
        let now = self.now_ms;
        let piece = self.piece(self.knobs.read_piece);
        let cl = &mut self.clients[c];
        let Some(s) = &mut cl.server else {
            return Ok(());
        };
        while let Some(bytes) = s.up.take(now, piece) {
            s.up_framer.push(&bytes);
            while let Some(frame) = s.up_framer.next_frame()? {
                reopen_keeps_mode(c, &frame, self.knobs.dialect, &cl.open_modes)?;
                if let Ok(h) = Header::parse(&frame) {
                    let seq = cl
                        .outstanding
                        .get(&h.tag)
                        .filter(|o| h.tag >= TAG_BASE && o.ty as u8 == h.msg_type)
                        .map(|o| o.seq);
                    if let Some(seq) = seq {
                        if let Some((link, last)) = cl.last_received {
                            if link == s.link && seq < last {
                                return Err(format!(
                                    "client {c}'s request {seq} (tag {}) reached link {} after its request {last}: requests must reach a link in the order the client sent them",
                                    h.tag, link.0
                                ));
                            }
                        }
                        cl.last_received = Some((s.link, seq));
                    }
                }
                cl.to_server.push_back(Transit {
                    link: s.link,
                    frame,
                });
            }
        }
        Ok(())
    }

    /// Client `c`'s proxy reads what reached it from the server, in pieces.
    fn proxy_reads(&mut self, c: usize) -> Result<(), String> {
        loop {
            let piece = self.piece(self.knobs.read_piece);
            let now = self.now();
            let cl = &mut self.clients[c];
            let Some(s) = &mut cl.server else {
                return Ok(());
            };
            let link = s.link;
            // Replies wait for the client: the server's bytes wait on the wire.
            if cl.drive.links_held() {
                cl.held_at = Some(self.now_ms);
                return Ok(());
            }
            let Some(bytes) = s.down.take(self.now_ms, piece) else {
                return Ok(());
            };
            let Some(buf) = cl.drive.link_read_buf(link) else {
                return Err(format!(
                    "client {c}'s drive will not read link {} it has not closed",
                    link.0
                ));
            };
            buf.extend_from_slice(&bytes);
            cl.drive.handle_link_read(now, link, bytes.len());
            self.drain(c)?;
        }
    }

    /// A fault: one client's network path dies, or the server restarts under every client.
    fn fault(&mut self) -> Result<(), String> {
        let restart = self.rng.chance(self.knobs.restart_percent);
        let candidates: Vec<usize> = if restart {
            (0..self.clients.len()).collect()
        } else {
            vec![self.rng.below(self.clients.len() as u64) as usize]
        };
        let victims: Vec<(usize, LinkId)> = candidates
            .into_iter()
            .filter_map(|c| self.clients[c].server.as_ref().map(|s| (c, s.link)))
            .collect();
        if victims.is_empty() {
            return Ok(());
        }
        if !restart && self.rng.chance(self.knobs.silent_percent) {
            // The server hangs on this link: it keeps it open and answers nothing.
            let (c, link) = victims[0];
            note!(self, "FAULT client {c}'s link {} goes silent", link.0);
            if let Some(s) = &mut self.clients[c].server {
                s.silent = true;
            }
            return Ok(());
        }
        self.stats.drops += 1;
        for &(c, link) in &victims {
            let executed_first = self.rng.chance(self.knobs.drop_after_exec_percent);
            note!(
                self,
                "FAULT client {c}'s link {} dies ({}; {})",
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
            if executed_first {
                self.server_reads(c)?;
                while let Some(t) = self.clients[c].to_server.pop_front() {
                    self.server_receives(c, t)?;
                }
            }
            let linger = match !restart && self.rng.chance(self.knobs.linger_percent) {
                true => self.rng.range(1, 2500),
                false => 0,
            };
            self.hang_up(c, linger, false);
        }
        if restart {
            self.restart();
        }
        self.act_directly();
        for (c, link) in victims {
            self.link_failed(c, link)?;
        }
        Ok(())
    }

    /// The server restarts: every connection ends, and it may come back changed.
    fn restart(&mut self) {
        self.stats.restarts += 1;
        // A restart ends every connection, half-open ones too.
        for (_, conn) in std::mem::take(&mut self.lingering) {
            conn.close(&mut self.fs);
        }
        for (_, _, conn, _) in std::mem::take(&mut self.late_runs) {
            conn.close(&mut self.fs);
        }
        self.server_down_until = self.now_ms + self.rng.range(0, self.knobs.outage_ms);
        if self.rng.chance(self.knobs.hang_percent) {
            self.server_hung_until = self.server_down_until + self.rng.range(0, 40_000);
            note!(
                self,
                "the server will come back hung until {} ms",
                self.server_hung_until
            );
        }
        if self.rng.chance(self.knobs.replace_percent) {
            // Someone else replaces every victim file while the server is away.
            let dirs: Vec<String> = self
                .clients
                .iter()
                .flat_map(|c| c.lanes.iter().map(|l| l.dir_name()))
                .collect();
            for dir in dirs {
                let path = format!("{dir}/vict/victim");
                self.fs.remove_path(&path).expect("victim exists");
                self.fs.write_file(&path, b"").expect("victim again");
                // And the churn directory loses some entries: a listing gets shorter.
                let names = self.fs.list_dir(format!("{dir}/churn")).expect("churn");
                let gone = self.rng.below(names.len() as u64 + 1) as usize;
                for name in names.iter().take(gone) {
                    let name = String::from_utf8_lossy(name);
                    let _ = self.fs.remove_path(format!("{dir}/churn/{name}"));
                }
                let fresh = format!("{dir}/churn/n{}", self.now_ms);
                self.fs.write_file(&fresh, b"").expect("churn file");
            }
            note!(self, "the victim files were replaced");
        }
        // Another client locks a range a lane held, before its session can take it back.
        if self.knobs.dialect == Dialect::DotL {
            for c in 0..self.clients.len() {
                for l in 0..self.clients[c].lanes.len() {
                    let Some(start) = self.clients[c].lanes[l].held_lock() else {
                        continue;
                    };
                    if !self.rng.chance(self.knobs.steal_lock_percent) {
                        continue;
                    }
                    let dir = self.clients[c].lanes[l].dir_name();
                    let thief = self.lock_as_other_client(&dir, start);
                    self.clients[c].lanes[l].locks_stolen = true;
                    let until = self.server_down_until + self.rng.range(0, 5000);
                    note!(
                        self,
                        "another client locks {dir}/data at {start} until {until} ms"
                    );
                    self.lingering.push((until, thief));
                }
            }
        }
        // A crash may lose what was written since the last fsync (only idle lanes' files, so
        // no answer already on its way shows what was lost).
        if self.knobs.dialect == Dialect::DotL {
            for c in 0..self.clients.len() {
                for l in 0..self.clients[c].lanes.len() {
                    if !self.rng.chance(self.knobs.lose_unsynced_percent) {
                        continue;
                    }
                    let lane = &mut self.clients[c].lanes[l];
                    if !lane.lose_unsynced() {
                        continue;
                    }
                    let synced = self.synced.get(&lane.id).cloned().unwrap_or_default();
                    let path = format!("{}/data", lane.dir_name());
                    self.fs.write_file(&path, &synced).expect("data file");
                    // The session writes the kept writes again when it rebuilds the data fid
                    // (if it does: the client may let go of it first): the model follows
                    // those writes as the server runs them.
                    lane.set_data(synced);
                    self.stats.writes_lost += 1;
                    note!(self, "the crash lost {path}'s unsynced writes");
                }
            }
        }
        self.server_msize = if self.rng.chance(self.knobs.smaller_msize_percent) {
            4096
        } else {
            self.knobs.client_msize
        };
    }

    /// Another client, straight to the server: it locks `dir/data` at `start` (50 bytes).
    fn lock_as_other_client(&mut self, dir: &str, start: u64) -> ramfs::Conn {
        let lock = Tlock {
            fid: Fid(1),
            typ: 1,
            flags: 0,
            start,
            length: 50,
            proc_id: 4242,
            client_id: "other".into(),
        };
        self.as_other_client(dir, lock.into()).0
    }

    /// Another client, straight to the server: it opens `dir/data` as fid 1, then sends
    /// `last`; its reply, and the connection.
    fn as_other_client(&mut self, dir: &str, last: Msg) -> (ramfs::Conn, Option<Msg>) {
        let mut conn = ramfs::Conn::new(&mut self.fs, 8192);
        let requests: [Msg; 5] = [
            Tversion {
                msize: 8192,
                version: Dialect::DotL.version_string().into(),
            }
            .into(),
            Tattach {
                fid: Fid(0),
                afid: NOFID,
                uname: "other".into(),
                aname: "".into(),
                n_uname: Some(2000),
            }
            .into(),
            Twalk {
                fid: Fid(0),
                newfid: Fid(1),
                wnames: WalkNames::new([dir.as_bytes(), b"data"]).expect("two names"),
            }
            .into(),
            Tlopen {
                fid: Fid(1),
                flags: lflags::RDWR,
            }
            .into(),
            last,
        ];
        let mut reply = None;
        for (tag, msg) in requests.into_iter().enumerate() {
            let tag = if tag == 0 { NOTAG } else { tag as u16 };
            let frame = Fcall::new(tag, msg).to_frame().expect("a small request");
            let answer = conn.handle(&mut self.fs, &frame);
            reply = Fcall::decode(&answer, Dialect::DotL).ok().map(|f| f.msg);
        }
        (conn, reply)
    }

    /// At the end: every lock a lane holds (by its session's account, through a fid not gone
    /// stale) is held on the server — a lock the session could not take back must have made
    /// the fid stale.
    fn check_locks(&mut self) -> Result<(), String> {
        if self.knobs.dialect != Dialect::DotL {
            return Ok(());
        }
        for c in 0..self.clients.len() {
            if !self.clients[c].drive.session().is_up() {
                continue;
            }
            // A fid the session made stale (the lane has not used it since) holds nothing.
            let rebuilt: std::collections::BTreeSet<u32> =
                self.clients[c].drive.session().fids_on_server().collect();
            for l in 0..self.clients[c].lanes.len() {
                let dir = self.clients[c].lanes[l].dir_name();
                let lane = &self.clients[c].lanes[l];
                let starts = match rebuilt.iter().any(|&f| lane.is_data_fid(f)) {
                    true => lane.trusted_locks(),
                    false => Vec::new(),
                };
                for start in starts {
                    let probe = Tgetlock {
                        fid: Fid(1),
                        typ: 1,
                        start,
                        length: 50,
                        proc_id: 4243,
                        client_id: "probe".into(),
                    };
                    let (conn, reply) = self.as_other_client(&dir, probe.into());
                    conn.close(&mut self.fs);
                    if let Some(Msg::Rgetlock(g)) = reply {
                        if g.typ == 2 {
                            return Err(format!(
                                "client {c}: {dir}/data is locked at {start} by its session's account, but the server holds no lock there"
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Client `c`'s proxy learns that `link` died by reading the end of the stream, a failed
    /// read, or a failed write (all the same to the drive, which must drop the link and what it
    /// queued).
    fn link_failed(&mut self, c: usize, link: LinkId) -> Result<(), String> {
        let how = self.rng.below(3);
        let now = self.now();
        let cl = &mut self.clients[c];
        cl.failed_links.push(link);
        match how {
            0 => cl.drive.handle_link_read(now, link, 0),
            1 => cl
                .drive
                .handle_link_failed(now, link, "read: connection reset by peer"),
            _ => cl.drive.handle_link_failed(now, link, "write: broken pipe"),
        }
        self.drain(c)?;
        if !self.clients[c].closed_links.contains(&link) {
            return Err(format!(
                "client {c}'s drive did not close link {} when it failed",
                link.0
            ));
        }
        Ok(())
    }

    fn resolve_dials(&mut self, c: usize) -> Result<(), String> {
        let now = self.now_ms;
        while let Some(i) = self.clients[c]
            .pending_dials
            .iter()
            .position(|(_, due)| *due <= now)
        {
            let (link, _) = self.clients[c].pending_dials.remove(i);
            let refuse = self.now_ms < self.server_down_until
                || !self.calm && self.rng.chance(self.knobs.dial_fail_percent);
            let at = self.now();
            if refuse {
                note!(self, "client {c}'s dial {} refused", link.0);
                self.clients[c]
                    .drive
                    .handle_dial_done(at, link, Err("connection refused"));
            } else if self.clients[c].drive.handle_dial_done(at, link, Ok(())) {
                note!(
                    self,
                    "client {c}'s dial {} accepted (msize {})",
                    link.0,
                    self.server_msize
                );
                if self.clients[c].server.is_some() {
                    return Err(format!(
                        "client {c}'s drive took link {} while another was up",
                        link.0
                    ));
                }
                let conn = ramfs::Conn::new(&mut self.fs, self.server_msize);
                self.clients[c].server = Some(ServerLink {
                    link,
                    conn,
                    up: Wire::default(),
                    up_framer: Framer::default(),
                    down: Wire::default(),
                    silent: false,
                });
            } else {
                note!(
                    self,
                    "client {c}'s dial {} completed late: refused by the drive",
                    link.0
                );
                self.stats.late_dials += 1;
            }
            self.drain(c)?;
        }
        Ok(())
    }

    /// One step of the world: time passes, frames arrive, maybe a fault, lanes act.
    /// The process's memory budget turns spent or free for each session now and then (only
    /// while faults happen: the budget is free for the final drain), and every session is told
    /// its share each step, as a runtime tells it each round.
    /// Where replies are bounded tightly, a client now and then stops reading them for up to
    /// 6 s (longer than the shortest server timeout: the server must not be judged silent
    /// while the proxy is not reading it).
    fn memory_pressure(&mut self, faults: bool) {
        let now = self.now();
        for c in 0..self.clients.len() {
            if self.knobs.reply_max == 0 && faults && self.rng.chance_per_mille(3) {
                self.clients[c].stalled_until = self.now_ms + self.rng.range(0, 6_000);
                note!(
                    self,
                    "client {c} stops reading its replies until {}",
                    self.clients[c].stalled_until
                );
            }
            if self.knobs.memory_pressure_percent == 0 {
                continue;
            }
            let cap = match faults && self.rng.chance(self.knobs.memory_pressure_percent) {
                true => match self.clients[c].memory_cap {
                    Some(_) => None,
                    None => Some(self.rng.range(1, 64 << 10) as usize),
                },
                false if faults => self.clients[c].memory_cap,
                false => None,
            };
            self.clients[c].memory_cap = cap;
            self.clients[c].drive.set_memory_cap(now, cap);
        }
    }

    fn step(&mut self, faults: bool, new_work: bool) -> Result<(), String> {
        self.now_ms += self.rng.range(0, 3);
        self.end_lingering();
        if !self.late_runs.is_empty() {
            self.run_late(false);
        }
        if self.knobs.memory_pressure_percent > 0 || self.knobs.reply_max == 0 {
            self.memory_pressure(faults);
        }
        for c in 0..self.clients.len() {
            self.server_reads(c)?;
            let silent = self.clients[c].server.as_ref().is_some_and(|s| s.silent);
            while self.now_ms >= self.server_hung_until && !silent {
                let Some(t) = self.next_for_server(c) else {
                    break;
                };
                self.server_receives(c, t)?;
            }
            self.proxy_reads(c)?;
            let now = self.now();
            if self.clients[c]
                .drive
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.clients[c].drive.handle_timeout(now);
                self.drain(c)?;
            }
            self.resolve_dials(c)?;
            self.drain(c)?;
            self.feed_client(c)?;
            if self.clients[c].drive.client_frame_waiting() {
                self.stats.frames_held_back += 1;
            }
        }
        if faults && self.rng.chance_per_mille(self.knobs.drop_per_mille) {
            self.fault()?;
        }
        for c in 0..self.clients.len() {
            self.client_acts(c, new_work)?;
        }
        Ok(())
    }

    /// Client `c` versions, attaches, and its idle lanes start new operations.
    fn client_acts(&mut self, c: usize, new_work: bool) -> Result<(), String> {
        if !self.clients[c].version_done {
            if !self.clients[c].outstanding.contains_key(&NOTAG) {
                let tv = Tversion {
                    msize: self.knobs.client_msize,
                    version: self.knobs.dialect.version_string().into(),
                };
                self.client_send_tagged(c, 0, NOTAG, tv.into())?;
                self.feed_client(c)?;
            }
            return Ok(());
        }
        if !self.attached(c)? {
            return Ok(());
        }
        if new_work {
            for lane in 0..self.clients[c].lanes.len() {
                if !self.clients[c].drive.wants_client_read() {
                    break;
                }
                if self.clients[c].lanes[lane].busy.is_some() || self.rng.chance(50) {
                    continue;
                }
                let (msg, op) = self.clients[c].lanes[lane].next_op(&mut self.rng);
                let tag = self.lane_send(c, lane, msg, op)?;
                // Sometimes flush it at once (if it is still unanswered).
                if self.clients[c].outstanding.contains_key(&tag) && self.rng.chance(3) {
                    self.flush(c, lane, tag)?;
                }
            }
            // Sometimes flush a request that has been waiting a while.
            if self.rng.chance(1) {
                let waiting: Vec<(usize, u16)> = self.clients[c]
                    .lanes
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.flush.is_none())
                    .filter_map(|(i, l)| l.busy.as_ref().map(|(tag, _)| (i, *tag)))
                    .collect();
                if !waiting.is_empty() {
                    let (lane, tag) = waiting[self.rng.below(waiting.len() as u64) as usize];
                    self.flush(c, lane, tag)?;
                }
            }
        }
        self.feed_client(c)
    }

    fn flush(&mut self, c: usize, lane: usize, tag: u16) -> Result<(), String> {
        let flush = self.clients[c].take_tag();
        self.clients[c].lanes[lane].flush = Some(flush);
        self.client_send_tagged(c, lane, flush, Tflush { oldtag: tag }.into())?;
        Ok(())
    }

    /// Attach fid 0 once the version is settled (a one-off, before the lanes start).
    fn attached(&mut self, c: usize) -> Result<bool, String> {
        if self.clients[c].attach_done {
            return Ok(true);
        }
        if self.clients[c]
            .outstanding
            .values()
            .any(|o| o.lane == SETUP)
        {
            return Ok(false);
        }
        let attach = Tattach {
            fid: Fid(0),
            afid: NOFID,
            uname: "sim".into(),
            aname: "".into(),
            n_uname: self.knobs.dialect.is_extended().then_some(0),
        };
        self.client_send(c, SETUP, attach.into())?;
        Ok(false)
    }

    /// The whole run: the safety phase with faults, then the liveness phase without.
    pub fn run(&mut self) -> Result<(), String> {
        for _ in 0..self.knobs.steps {
            self.step(true, true)?;
            // While no client can send anything new (an outage), skip to the next thing that
            // will happen.
            let blocked = self.clients.iter().all(|cl| {
                let setup = !cl.version_done || cl.outstanding.values().any(|o| o.lane == SETUP);
                setup || !cl.drive.wants_client_read() || cl.lanes.iter().all(|l| l.busy.is_some())
            });
            if blocked {
                self.skip_idle_time();
            }
        }
        note!(self, "LIVENESS: faults stop, no new work");
        self.calm = true;
        let deadline = self.now_ms + LIVENESS_LIMIT.as_millis() as u64;
        // Until every request is answered and nothing is on its way anywhere (a late reply
        // still on the wire may yet make the session redial).
        while self
            .clients
            .iter()
            .any(|c| c.busy() || c.in_transit() || c.drive.session().requests_held() > 0)
        {
            if self.now_ms > deadline {
                let n: usize = self.clients.iter().map(|c| c.outstanding.len()).sum();
                return Err(format!(
                    "liveness: {n} requests still unanswered after {LIVENESS_LIMIT:?}"
                ));
            }
            self.step(false, false)?;
            self.skip_idle_time();
        }
        for c in 0..self.clients.len() {
            self.check_fids(c)?;
            self.check_users(c)?;
        }
        self.check_locks()?;
        self.check_tree()?;
        self.run_late(true);
        let violations = self.history.violations();
        if !violations.is_empty() {
            return Err(format!(
                "the history of the lock names has {} violation(s):\n{}",
                violations.len(),
                violations.join("\n")
            ));
        }
        let violations = history::data_violations(&self.data_history);
        if !violations.is_empty() {
            return Err(format!(
                "the history of the shared file has {} violation(s):\n{}",
                violations.len(),
                violations.join("\n")
            ));
        }
        self.stats.history.add(self.history.counts());
        self.stats
            .history
            .add(history::data_counts(&self.data_history));
        Ok(())
    }

    /// Nothing for the server to do: jump to the next timeout, dial or arrival.
    fn skip_idle_time(&mut self) {
        let hung = self.now_ms < self.server_hung_until;
        let mut next = None::<u64>;
        for cl in &self.clients {
            // Work that needs no time to pass: the server's, the proxy's reading of the client,
            // a lagging client's reading of its replies.
            let silent = cl.server.as_ref().is_some_and(|s| s.silent);
            if !cl.to_server.is_empty() && !hung && !silent
                || !cl.pipe.is_empty()
                || !cl.drive.client_out().is_empty()
            {
                return;
            }
            let times = [
                cl.drive
                    .poll_timeout()
                    .map(|t| t.as_nanos().div_ceil(1_000_000)),
                cl.pending_dials.iter().map(|(_, due)| *due).min(),
                cl.server.as_ref().and_then(|s| s.up.next_due()),
                cl.server.as_ref().and_then(|s| s.down.next_due()),
                (hung && !cl.to_server.is_empty()).then_some(self.server_hung_until),
            ];
            for t in times.into_iter().flatten() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        if let Some(t) = next {
            self.now_ms = self.now_ms.max(t);
        }
    }

    /// At the end with nothing in flight, and after each recovery before anything is resent:
    /// the server holds no fid of client `c` that its
    /// session does not know (a leak refuses the number later: "fid already in use"), except
    /// those a lane is about to clunk; and every fid the session calls rebuilt is on the server.
    fn check_fids(&self, c: usize) -> Result<(), String> {
        let cl = &self.clients[c];
        let Some(server) = &cl.server else {
            return Ok(());
        };
        if !cl.drive.session().is_up() {
            return Ok(());
        }
        let on_server: std::collections::BTreeSet<u32> = server.conn.fids().collect();
        let session: std::collections::BTreeSet<u32> =
            cl.drive.session().fids_on_server().collect();
        let unsure: std::collections::BTreeSet<u32> =
            cl.lanes.iter().flat_map(|l| l.uncertain_fids()).collect();
        let leaked: Vec<&u32> = on_server
            .iter()
            .filter(|f| !session.contains(f) && !unsure.contains(f))
            .collect();
        let missing: Vec<&u32> = session.iter().filter(|f| !on_server.contains(f)).collect();
        if !leaked.is_empty() || !missing.is_empty() {
            return Err(format!(
                "client {c}: fids on the server but not the session's: {leaked:?}; the session's but not on the server: {missing:?}"
            ));
        }
        Ok(())
    }

    /// Every fid of client `c` on the server acts as the user its root was attached as: each
    /// root is re-attached with its own uname, aname and n_uname.
    fn check_users(&self, c: usize) -> Result<(), String> {
        let cl = &self.clients[c];
        let Some(server) = &cl.server else {
            return Ok(());
        };
        let setup = Identity {
            uname: b"sim".to_vec(),
            aname: Vec::new(),
            n_uname: self.knobs.dialect.is_extended().then_some(0),
        };
        for fid in server.conn.fids() {
            let want = match cl.lanes.iter().find(|l| l.owns(fid)) {
                Some(lane) => lane.identity.user(),
                None if fid == 0 => setup.user(),
                None => continue,
            };
            let got = server.conn.fid_user(fid).expect("a fid it listed");
            if (got.0, got.1) != (&want.0[..], want.1) {
                return Err(format!(
                    "client {c}: fid {fid} acts as {:?}/{} on the server, but was attached as {:?}/{}",
                    String::from_utf8_lossy(got.0),
                    got.1,
                    String::from_utf8_lossy(&want.0),
                    want.1
                ));
            }
        }
        Ok(())
    }

    /// At the end, the server's tree is exactly what the lanes' models say.
    fn check_tree(&self) -> Result<(), String> {
        for lane in self.clients.iter().flat_map(|c| c.lanes.iter()) {
            let dir = lane.dir_name();
            for (name, want) in &lane.files {
                let path = format!("{dir}/{}", String::from_utf8_lossy(name));
                let got = self
                    .fs
                    .read_file(&path)
                    .map_err(|e| format!("{path}: {e:?}"))?;
                if got != &want[..] {
                    let at = got.iter().zip(want.iter()).position(|(a, b)| a != b);
                    return Err(format!(
                        "{path}: the server has {} bytes, the model {}; first difference at {at:?}",
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
                .filter(|n| !lane.is_orclose_name(n))
                .collect();
            listed.sort();
            let mut want: Vec<Vec<u8>> = lane
                .files
                .keys()
                .chain(lane.subdirs.iter())
                .chain(lane.entries.iter())
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

/// A fid the session reopens after a reconnect is opened as the client opened it, less what
/// would change the file again: OTRUNC (9P2000), O_TRUNC, O_CREAT and O_EXCL (.L). ORCLOSE and
/// O_APPEND stay.
fn reopen_keeps_mode(
    c: usize,
    frame: &Bytes,
    dialect: Dialect,
    modes: &BTreeMap<u32, u32>,
) -> Result<(), String> {
    let Ok(h) = Header::parse(frame) else {
        return Ok(());
    };
    if h.tag >= TAG_BASE {
        return Ok(());
    }
    let (fid, mode, want) = match Fcall::decode(frame, dialect).map(|f| f.msg) {
        Ok(Msg::Topen(o)) => match modes.get(&o.fid.0) {
            Some(&m) => (o.fid.0, o.mode as u32, m & !(open_mode::TRUNC as u32)),
            None => return Ok(()),
        },
        Ok(Msg::Tlopen(o)) => match modes.get(&o.fid.0) {
            Some(&m) => (
                o.fid.0,
                o.flags,
                m & !(lflags::TRUNC | lflags::CREATE | lflags::EXCL),
            ),
            None => return Ok(()),
        },
        _ => return Ok(()),
    };
    if mode != want {
        return Err(format!(
            "client {c}'s fid {fid} was reopened with mode {mode:#o}; the client opened it with {:#o}, so {want:#o} was due",
            modes[&fid]
        ));
    }
    Ok(())
}

/// Whether `frame` takes or releases a lock name (a create, mkdir, link, unlink or remove
/// through a lane's shared-directory or lock fid) or writes the shared file.
fn is_lock_request(frame: &Bytes, dialect: Dialect) -> bool {
    let lock_fid = |fid: Fid| fid.0 >= 16 && matches!((fid.0 - 16) % 16, 11 | 12);
    let file_fid = |fid: Fid| fid.0 >= 16 && (fid.0 - 16) % 16 == 13;
    match Fcall::decode(frame, dialect).map(|f| f.msg) {
        Ok(Msg::Tlcreate(m)) => lock_fid(m.fid),
        Ok(Msg::Tcreate(m)) => lock_fid(m.fid),
        Ok(Msg::Tmkdir(m)) => lock_fid(m.dfid),
        Ok(Msg::Tlink(m)) => lock_fid(m.dfid),
        Ok(Msg::Tunlinkat(m)) => lock_fid(m.dirfid),
        Ok(Msg::Tremove(m)) => lock_fid(m.fid),
        Ok(Msg::Twrite(m)) => file_fid(m.fid),
        _ => false,
    }
}

/// What actually happened to a request, and whether the server ran it too often.
fn check_executions(op: &Op, exec: &Execution, reply: Option<&Msg>) -> Result<Option<Msg>, String> {
    // A take or release of a lock name may run again where its first run was refused (the
    // name taken, or gone): that run changed nothing.
    let runs = match op.is_shared() {
        true => exec.successes,
        false => exec.count,
    };
    if !op.idempotent() && runs > 1 {
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
            // A write shortened on its last run may have run in full before.
            if let (Msg::Rwrite(seen), Some(Msg::Rwrite(ran))) = (m, &exec.success) {
                if ran.count > seen.count {
                    return Ok(exec.success.clone());
                }
            }
            Ok(Some(m.clone()))
        }
        // Failed (or flushed): it happened exactly if the server ran it successfully.
        _ => Ok(exec.success.clone()),
    }
}

/// The files a lane works on, made before the run.
fn make_lane_files(fs: &mut ramfs::Fs, lane: &Lane) {
    let dir = lane.dir_name();
    fs.mkdir_p(&dir).expect("lane directory");
    fs.write_file(format!("{dir}/data"), b"")
        .expect("data file");
    fs.write_file(format!("{dir}/log"), b"").expect("log file");
    fs.set_mode(format!("{dir}/log"), dm::APPEND | 0o644)
        .expect("append-only log");
    let deep: Vec<String> = Lane::deep_path()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    let deep = format!("{dir}/{}", deep.join("/"));
    fs.mkdir_p(&deep[..deep.len() - 2])
        .expect("deep directories");
    fs.write_file(&deep, b"deep").expect("deep file");
    // In a directory of its own: replacing it must not reorder the lane's listing.
    fs.mkdir_p(format!("{dir}/vict")).expect("victim directory");
    fs.write_file(format!("{dir}/vict/victim"), b"")
        .expect("victim file");
    fs.write_file(format!("{dir}/excl"), b"")
        .expect("exclusive file");
    fs.set_mode(format!("{dir}/excl"), dm::EXCL | 0o644)
        .expect("exclusive-use file");
    fs.write_file(format!("{dir}/mv0/f"), b"moved")
        .expect("file in the renamed directory");
    fs.mkdir_p(format!("{dir}/churn")).expect("churn directory");
    for i in 0..10 {
        fs.write_file(format!("{dir}/churn/c{i}"), b"")
            .expect("churn file");
    }
}
