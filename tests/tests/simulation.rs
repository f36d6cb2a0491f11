//! The deterministic simulation under `cargo test`: a fixed range of seeds (SIM_SEEDS, default
//! 5000), every seed kept as a regression, and a determinism check. `SIM_SEED=n` replays one
//! seed and prints its trace.

use tests::sim;

/// Seeds that once failed, each with the overrides it failed under (`sim --overrides`; empty for
/// none) and the cause it exposed, kept after the cause was fixed.
const REGRESSIONS: &[(u64, &str, &str)] = &[
    (
        250933,
        "",
        "a kept write sent again during a rebuild ran after the client's remove of its fid failed \
         (soft mode, link silent): the model had stopped following the temp file",
    ),
    (
        7600,
        "",
        "a late Rclunk still on the wire when the run ended: the session had yet to redial",
    ),
    (
        41299,
        "",
        "a flushed directory rename carried out late: the fid beneath goes stale at the redial",
    ),
    (
        30942,
        "",
        "an ORCLOSE file removed by a lingering connection's hang-up after the session reopened it",
    ),
    (
        2002,
        "",
        "a clunk the server carried out after answering its Tflush: the reply dropped, the fid kept",
    ),
    (
        46,
        "",
        "a flushed walk counted as done (flush(5): no reply before Rflush means never sent)",
    ),
    (
        9551,
        "",
        "a flushed clunk of an uncertain fid taken as sent",
    ),
    (
        4498,
        "",
        "a create that ran but was reported failed: the fid stayed the directory",
    ),
    (
        5637,
        "",
        "a create that ran but was reported failed: the fid stayed the directory",
    ),
    (
        30535,
        "",
        "a create that ran but was reported failed: the fid stayed the directory",
    ),
    (
        28396,
        "",
        "a request answered by the session within the call that sent it",
    ),
    (
        167187,
        "",
        "a request answered by the session within the call that sent it",
    ),
    (
        95,
        "",
        "a Tremove in flight at a loss: its fid rebuilt, then forgotten; the server kept it",
    ),
    (
        157,
        "",
        "an unlink the server ran but the client saw fail: the model kept the old name",
    ),
    (
        2,
        "",
        "soft mode: a clunk answered here while the recovery rebuilt its fid on the new server",
    ),
    (
        51,
        "",
        "soft mode: the same, after the recovery's clunk phase had begun",
    ),
    (
        3,
        "",
        "soft mode fails the first Tversion while the server is away: sent again",
    ),
    (
        20,
        "",
        "soft mode fails the first attach while the server is away: sent again",
    ),
    (
        33,
        "",
        "before a version is settled the session answers in plain 9P2000",
    ),
    (
        103,
        "",
        "a write run in full on a lost link and shortened on a smaller server's",
    ),
    (
        122,
        "",
        "soft mode failed an open the server ran: the fid stays walked",
    ),
    (
        164,
        "",
        "a server with a smaller msize settled the version: requests must fit it",
    ),
    (
        25376,
        "",
        "a lock refused while an old connection lingers with the lane's earlier locks",
    ),
    (
        25920,
        "",
        "a lock refused while an old connection lingers with the lane's earlier locks",
    ),
    (
        29,
        "",
        "an ORCLOSE create in flight at a loss, its file removed by the lost connection's end: \
         looked for, not found, created again",
    ),
    (
        242,
        "",
        "a remove in flight at a loss of an ORCLOSE file the lost connection's end removed: \
         answered as done though it never ran",
    ),
    (
        6,
        "",
        "entries a lane made (symlink, node, link) missing from the model's listing",
    ),
    (
        20914,
        "",
        "a hard link made through a data fid the session had found stale",
    ),
    (
        29211,
        "",
        "a directory renamed to its own name, run before a loss: found not done and sent again",
    ),
];

fn check(seed: u64) {
    if let Err(f) = sim::run(seed, false) {
        // Rerun traced so the failure comes with its story.
        let traced = sim::run(seed, true).err().unwrap_or(f);
        if let Some(trace) = &traced.trace {
            let tail: Vec<&str> = trace.lines().rev().take(60).collect();
            eprintln!(
                "last trace lines of seed {seed}:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        panic!("{traced}");
    }
}

#[test]
fn seeds() {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed: u64 = seed.parse().expect("SIM_SEED is a number");
        let overrides = std::env::var("SIM_OVERRIDES").unwrap_or_default();
        let overrides = sim::Overrides::parse(&overrides).expect("SIM_OVERRIDES");
        match sim::run_with(seed, &overrides, true) {
            Ok(r) => {
                println!("{}", r.trace.clone().unwrap_or_default());
                println!(
                    "seed {seed} passed: {:?}, digest {:016x}",
                    r.stats, r.digest
                );
            }
            Err(f) => {
                println!("{}", f.trace.clone().unwrap_or_default());
                panic!("{f}");
            }
        }
        return;
    }
    let n: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let start = std::time::Instant::now();
    let mut totals = sim::Stats::default();
    let mut marks = sim::MarkTotals::default();
    for seed in 0..n {
        match sim::run(seed, false) {
            Ok(r) => {
                totals.add(&r.stats);
                marks.add(&r.marks);
            }
            Err(_) => check(seed),
        }
    }
    println!("{n} seeds in {:.1?}: {totals:?}", start.elapsed());
    println!("coverage marks:\n{}", marks.table());
    // A rule no seed reached is a rule this run did not test.
    let missed = marks.missed();
    assert!(
        missed.is_empty() || n < 5000,
        "coverage marks never hit in {n} seeds: {missed:?}"
    );
    // The runs must really exercise recovery, or this test proves little.
    assert!(
        totals.recoveries > n / 4,
        "only {} recoveries in {n} seeds",
        totals.recoveries
    );
    assert!(
        totals.not_completed > 0,
        "no request was ever failed as possibly not completed"
    );
    // The drive layer's hard cases must come up too.
    assert!(totals.late_dials > 0, "no dial ever completed late");
    assert!(totals.mid_frame_cuts > 0, "no link was ever cut mid-frame");
    assert!(
        totals.frames_held_back > 0,
        "the drive never held client frames back"
    );
    assert!(
        totals.writes_lost > 0,
        "no crash ever lost acknowledged writes (so no fsync was checked against a loss)"
    );
}

#[test]
fn regression_seeds() {
    for &(seed, overrides, cause) in REGRESSIONS {
        let overrides = sim::Overrides::parse(overrides).expect("a regression's overrides");
        if let Err(f) = sim::run_with(seed, &overrides, false) {
            let traced = sim::run_with(seed, &overrides, true).err().unwrap_or(f);
            panic!("regression seed {seed} (once: {cause}) fails again: {traced}");
        }
    }
}

#[test]
fn same_seed_same_run() {
    for seed in [1, 42, 1234, 99_999] {
        let a = sim::run(seed, false)
            .map(|r| r.digest)
            .map_err(|f| f.to_string());
        let b = sim::run(seed, false)
            .map(|r| r.digest)
            .map_err(|f| f.to_string());
        assert_eq!(a, b, "seed {seed} is not deterministic");
    }
}

/// Mux seeds that once failed, with the cause each exposed, kept as regressions.
const MUX_REGRESSIONS: &[(u64, &str)] = &[
    (
        65,
        "a session bounced between two hung backends, picked by its number as each one's \
         avoidance ran out, while a working one waited: the least failed is chosen",
    ),
    (
        41296,
        "a create in flight when its backend crashed was found done there after a failover \
         back, making its fid the new file, open; the next failover lost that fid before the \
         create's reply reached the client (the model now expects the fid lost, then the \
         create answered as done)",
    ),
];

/// The mux's worlds: SIM_MUX_SEEDS seeds (default 2000); `SIM_MUX_SEED=n` replays one with its
/// trace.
#[test]
fn mux_seeds() {
    if let Ok(seed) = std::env::var("SIM_MUX_SEED") {
        let seed: u64 = seed.parse().expect("SIM_MUX_SEED is a number");
        match sim::run_mux(seed, true) {
            Ok(r) => println!(
                "{}\nseed {seed} passed: {:?}",
                r.trace.unwrap_or_default(),
                r.stats
            ),
            Err(f) => {
                println!("{}", f.trace.clone().unwrap_or_default());
                panic!("{}", f.what);
            }
        }
        return;
    }
    let n: u64 = std::env::var("SIM_MUX_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let start = std::time::Instant::now();
    let mut stats = sim::MuxStats::default();
    let mut marks = sim::MarkTotals::default();
    let seeds = (0..n).chain(MUX_REGRESSIONS.iter().map(|r| r.0));
    for seed in seeds {
        match sim::run_mux(seed, false) {
            Ok(r) => {
                stats.add(&r.stats);
                marks.add(&r.marks);
            }
            Err(f) => {
                let traced = sim::run_mux(seed, true).err().unwrap_or(f);
                if let Some(trace) = &traced.trace {
                    let tail: Vec<&str> = trace.lines().rev().take(60).collect();
                    eprintln!(
                        "last trace lines of mux seed {seed}:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
                panic!(
                    "mux seed {seed} failed: {}\nreplay: SIM_MUX_SEED={seed} cargo test -p tests --test simulation mux_seeds -- --nocapture",
                    traced.what
                );
            }
        }
    }
    println!("{n} mux seeds in {:.1?}: {stats:?}", start.elapsed());
    let missed = marks.missed_of(sim::MUX_MARKS);
    assert!(
        missed.is_empty() || n < 2000,
        "mux marks never hit in {n} seeds: {missed:?}"
    );
    assert!(
        stats.failovers > n / 4,
        "only {} failovers",
        stats.failovers
    );
    assert!(
        stats.failed_open > 0,
        "no request on a file open across a failover"
    );
    assert!(stats.listed > 0, "no directory listing");
    // Determinism: one seed twice, one digest.
    let (a, b) = (sim::run_mux(7, false), sim::run_mux(7, false));
    assert_eq!(a.map(|r| r.digest).ok(), b.map(|r| r.digest).ok());
}
