//! The fault knobs, chosen by the seed itself (as TigerBeetle's VOPR does): one seed may be a
//! calm run with a slow server, the next a storm of drops and refused dials.

use p9_core::Dialect;

use super::rng::Rng;

#[derive(Clone, Debug)]
pub struct Knobs {
    pub dialect: Dialect,
    /// Lanes in the whole world (shared out among the clients): independent, one operation in
    /// flight each.
    pub lanes: usize,
    /// Clients, each with its own proxy session, on the one server.
    pub clients: usize,
    /// Chance that a restart loses each idle lane's writes since its last fsync (9P2000.L).
    pub lose_unsynced_percent: u32,
    /// Chance that, while the server is away, another client locks a range a lane holds (so
    /// the session cannot re-acquire it).
    pub steal_lock_percent: u32,
    /// Chance that the server answers a stat of a lane's deep file with a reply of the wrong
    /// type (100: always, a poison pill the session must fail after two reconnects).
    pub bad_reply_percent: u32,
    /// 9P2000.L: chance that the server sends an error as Rerror (a bare errno, or a message
    /// and errno) instead of Rlerror, as some stock servers do.
    pub error_shape_percent: u32,
    /// Chance that a network fault leaves the link up but the server silent (it takes
    /// requests and answers nothing), so the session must notice by itself.
    pub silent_percent: u32,
    /// The session's server timeout (a live link silent this long with requests waiting is
    /// declared dead), in ms.
    pub server_timeout_ms: u64,
    /// Chance that a Tflush is answered before the request it flushes, which is answered
    /// anyway right after (the session must drop that late reply).
    pub late_reply_percent: u32,
    /// One-way latency between proxy and server, milliseconds.
    pub latency_ms: (u64, u64),
    /// Extra time the server may take per request, milliseconds.
    pub server_slowness_ms: u64,
    /// Chance that the next frame delivered is not the oldest one due.
    pub reorder_percent: u32,
    /// Chance per step that the link dies.
    pub drop_per_mille: u32,
    /// When it dies, chance that what was on its way to the server got executed first.
    pub drop_after_exec_percent: u32,
    /// Chance that a drop is a server restart (down for an outage) rather than a network blip.
    pub restart_percent: u32,
    /// How long a restarted server stays down, at most, milliseconds.
    pub outage_ms: u64,
    /// Chance that a dial fails even though the server is up.
    pub dial_fail_percent: u32,
    /// Chance that a restarted server offers a smaller msize.
    pub smaller_msize_percent: u32,
    /// The msize the client asks for.
    pub client_msize: u32,
    /// Steps of the safety phase.
    pub steps: u32,
    /// Largest piece a read takes off a wire (frames are split anywhere).
    pub read_piece: usize,
    /// Largest piece a write puts on a wire (partial writes).
    pub write_piece: usize,
    /// Chance per step that the client reads what the proxy sent it (else it lags).
    pub client_reads_percent: u32,
    /// The session's bound on held requests (tiny bounds make the drive hold frames back).
    pub queue_max_requests: usize,
    /// Chance that a dial takes longer than the session waits for it (it completes late).
    pub late_dial_percent: u32,
    /// The session's first redial delay (short ones fit many outages into a run).
    pub backoff_initial_ms: u64,
    /// Soft mode: the session gives up on an outage after this long (hard mode if `None`).
    pub give_up_ms: Option<u64>,
    /// Chance that a restarted server comes back hung: it accepts connections and answers
    /// nothing for up to 40 s.
    pub hang_percent: u32,
    /// Chance that a restart comes with each lane's victim file replaced (removed and created
    /// again by someone else), so a fid open on it goes stale.
    pub replace_percent: u32,
    /// Chance that after a network fault the server keeps the old connection half-open (its
    /// locks and exclusive opens held) for up to 2.5 s.
    pub linger_percent: u32,
    /// The session's recovery window (1 = one request at a time, like styxpersist).
    pub recovery_window: usize,
    /// The session's bound on held request bytes.
    pub queue_max_bytes: usize,
    /// The session's no-progress watchdog, in ms.
    pub watchdog_ms: u64,
    /// The session's cap on remembered locks per fid (past it the fid is stale after a
    /// reconnect).
    pub max_lock_history: usize,
    /// The session's replay budget (unsynced writes kept to be checked after a reconnect);
    /// small ones overflow. Drawn apart from the other knobs (see `World::with_overrides`).
    pub replay_budget: usize,
    /// How often the server refuses the session's read-back of a lane's unsynced writes after
    /// a reconnect (the knob's name is older than the read-back).
    pub rewrite_fail_percent: u32,
    /// Whether creates, removes and renames in flight at a loss are settled by looking
    /// (`--ambiguous resolve`) or always failed (`--ambiguous fail`).
    pub resolve_ambiguous: bool,
    /// How often the server refuses the session's walk to look at a name after a reconnect
    /// (the request it was for then fails, as nothing could be seen).
    pub refuse_look_percent: u32,
    /// Chance per operation that a lane races for the shared lock names instead of working on
    /// its own files (0: a world without contention, as the older seeds were).
    pub contend_percent: u32,
    /// Chance, at each fault, that another client acting straight on the server takes or
    /// breaks each lock name nobody has a request in flight on.
    pub direct_percent: u32,
    /// Chance that a silent link the session gives up on still runs, a while later, the takes
    /// and releases it had received (a hung server thread waking up).
    pub late_run_percent: u32,
    /// The session's bound on replies queued for its client (0: the least it allows, two
    /// frames), so a lagging client makes the drive stop reading the server.
    pub reply_max: usize,
    /// Chance per step that the process's memory budget turns spent (each session then held to
    /// a small share) or free again.
    pub memory_pressure_percent: u32,
}

impl Knobs {
    pub fn from_rng(rng: &mut Rng) -> Knobs {
        let lo = rng.range(0, 3);
        Knobs {
            dialect: Dialect::ALL[rng.below(3) as usize],
            lanes: rng.range(1, 8) as usize,
            latency_ms: (lo, lo + rng.range(0, 5)),
            server_slowness_ms: [0, 0, 2, 20][rng.below(4) as usize],
            reorder_percent: [0, 10, 50][rng.below(3) as usize] as u32,
            drop_per_mille: [0, 5, 20, 60][rng.below(4) as usize] as u32,
            drop_after_exec_percent: rng.range(0, 100) as u32,
            restart_percent: rng.range(0, 100) as u32,
            outage_ms: [0, 500, 3000, 20_000][rng.below(4) as usize],
            dial_fail_percent: [0, 10, 50][rng.below(3) as usize] as u32,
            smaller_msize_percent: [0, 30][rng.below(2) as usize] as u32,
            client_msize: [8192, 65536][rng.below(2) as usize] as u32,
            steps: rng.range(200, 600) as u32,
            read_piece: [7, 100, 4096, 1 << 20][rng.below(4) as usize],
            write_piece: [7, 100, 4096, 1 << 20][rng.below(4) as usize],
            client_reads_percent: [100, 100, 30][rng.below(3) as usize] as u32,
            queue_max_requests: [1, 3, 4096, 4096][rng.below(4) as usize],
            late_dial_percent: [0, 0, 20][rng.below(3) as usize] as u32,
            backoff_initial_ms: [5, 50, 300, 1000][rng.below(4) as usize],
            give_up_ms: [None, None, None, Some(300), Some(3000)][rng.below(5) as usize],
            hang_percent: [0, 0, 20][rng.below(3) as usize] as u32,
            replace_percent: [0, 50][rng.below(2) as usize] as u32,
            linger_percent: [0, 0, 40][rng.below(3) as usize] as u32,
            recovery_window: [1, 4, 64, 64][rng.below(4) as usize],
            queue_max_bytes: [16 << 10, 16 << 20, 16 << 20][rng.below(3) as usize],
            watchdog_ms: [3_000, 30_000, 30_000][rng.below(3) as usize],
            max_lock_history: [2, 64, 64][rng.below(3) as usize],
            clients: [1, 1, 2, 3][rng.below(4) as usize],
            lose_unsynced_percent: [0, 0, 60][rng.below(3) as usize] as u32,
            steal_lock_percent: [0, 0, 50][rng.below(3) as usize] as u32,
            bad_reply_percent: [0, 0, 0, 30, 100][rng.below(5) as usize] as u32,
            error_shape_percent: [0, 0, 50][rng.below(3) as usize] as u32,
            silent_percent: [0, 0, 30][rng.below(3) as usize] as u32,
            server_timeout_ms: [2_000, 10_000, 60_000][rng.below(3) as usize],
            late_reply_percent: [0, 0, 50][rng.below(3) as usize] as u32,
            replay_budget: 64 << 20,
            rewrite_fail_percent: 0,
            resolve_ambiguous: true,
            refuse_look_percent: 0,
            contend_percent: 0,
            direct_percent: 0,
            late_run_percent: 0,
            reply_max: 4 << 20,
            memory_pressure_percent: 0,
        }
    }
}

/// Changes to a seed's knobs, to shrink a failure: fewer steps, and faults turned off one kind
/// at a time. Written `steps=N,calm=drop+hang` (the form `sim --overrides` and `SIM_OVERRIDES`
/// take, and regression records keep).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub steps: Option<u32>,
    pub calm: Vec<String>,
}

/// The faults `calm=` can turn off, and what each one is.
pub const CALM: &[(&str, &str)] = &[
    ("drop", "links never die"),
    ("restart", "a dying link is never a server restart"),
    ("dial", "dials never fail"),
    ("late", "dials never complete late"),
    ("reorder", "the server runs requests in order"),
    ("slow", "the server is never slow"),
    ("hang", "a restarted server never comes back hung"),
    ("replace", "nobody changes files during outages"),
    ("linger", "old connections never linger half-open"),
    ("msize", "a restarted server never offers a smaller msize"),
    ("lag", "the client reads its replies at once"),
    ("soft", "hard mode"),
    ("unsynced", "a restart never loses unsynced writes"),
    ("steal", "nobody else takes a lane's locks during an outage"),
    ("badreply", "the server never answers with the wrong type"),
    ("shape", "the server sends errors in its dialect's shape"),
    ("silent", "a live link never goes silent"),
    (
        "latereply",
        "the server never answers a request after its Rflush",
    ),
    ("budget", "the replay budget never overflows"),
    (
        "rewrite",
        "the server never refuses the session's read-back of unsynced writes",
    ),
    (
        "look",
        "the server never refuses the session a look at a name",
    ),
    ("contend", "lanes never race for the shared lock names"),
    (
        "direct",
        "nobody takes or breaks a lock straight on the server",
    ),
    (
        "laterun",
        "a link given up on never runs what it held, late",
    ),
    (
        "memory",
        "replies queued for a client are never bounded below 4 MiB, and the process's memory budget is never spent",
    ),
];

impl Overrides {
    pub fn parse(s: &str) -> Result<Overrides, String> {
        let mut o = Overrides::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("steps", n)) => {
                    o.steps = Some(n.parse().map_err(|_| format!("steps={n}: not a number"))?)
                }
                Some(("calm", names)) => {
                    for name in names.split('+') {
                        if !CALM.iter().any(|(n, _)| *n == name) {
                            let known: Vec<&str> = CALM.iter().map(|(n, _)| *n).collect();
                            return Err(format!("calm={name}: not one of {}", known.join(", ")));
                        }
                        o.calm.push(name.to_string());
                    }
                }
                _ => return Err(format!("{part:?}: expected steps=N or calm=A+B")),
            }
        }
        Ok(o)
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_none() && self.calm.is_empty()
    }

    /// Apply to the knobs a seed drew.
    pub fn apply(&self, k: &mut Knobs) {
        if let Some(n) = self.steps {
            k.steps = n;
        }
        for name in &self.calm {
            match name.as_str() {
                "drop" => k.drop_per_mille = 0,
                "restart" => k.restart_percent = 0,
                "dial" => k.dial_fail_percent = 0,
                "late" => k.late_dial_percent = 0,
                "reorder" => k.reorder_percent = 0,
                "slow" => k.server_slowness_ms = 0,
                "hang" => k.hang_percent = 0,
                "replace" => k.replace_percent = 0,
                "linger" => k.linger_percent = 0,
                "msize" => k.smaller_msize_percent = 0,
                "lag" => k.client_reads_percent = 100,
                "soft" => k.give_up_ms = None,
                "unsynced" => k.lose_unsynced_percent = 0,
                "steal" => k.steal_lock_percent = 0,
                "badreply" => k.bad_reply_percent = 0,
                "shape" => k.error_shape_percent = 0,
                "silent" => k.silent_percent = 0,
                "latereply" => k.late_reply_percent = 0,
                "budget" => k.replay_budget = 64 << 20,
                "rewrite" => k.rewrite_fail_percent = 0,
                "look" => k.refuse_look_percent = 0,
                "contend" => k.contend_percent = 0,
                "direct" => k.direct_percent = 0,
                "laterun" => k.late_run_percent = 0,
                "memory" => {
                    k.reply_max = 4 << 20;
                    k.memory_pressure_percent = 0;
                }
                _ => {}
            }
        }
    }
}

impl std::fmt::Display for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(n) = self.steps {
            parts.push(format!("steps={n}"));
        }
        if !self.calm.is_empty() {
            parts.push(format!("calm={}", self.calm.join("+")));
        }
        f.write_str(&parts.join(","))
    }
}
