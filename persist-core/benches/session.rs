//! Session figures (prints; asserts nothing). `cargo bench -p persist-core`.
//!
//! - request/reply pairs per second forwarded through a session (Tread/Rread 8 KiB, Twalk/Rwalk),
//!   and heap allocations per forwarded pair, counted by a wrapping global allocator;
//! - bytes per tracked fid at 1,000,000 fids of depth 8;
//! - recovery of 100,000 open fids: CPU time, and virtual time with a 100 µs round trip, for
//!   the default window and for window 1.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant as WallClock};

use bytes::{Bytes, BytesMut};
use p9_core::*;
use persist_core::{BackendId, Config, Event, Instant, LinkId, Output, Session};

struct Counting;
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A frame in a shared buffer, as a driver's FrameDecoder produces it (slicing it is a
/// reference-count increment, not an allocation).
fn shared(fc: Fcall) -> Bytes {
    let mut buf = BytesMut::new();
    fc.encode(&mut buf).unwrap();
    let len = buf.len();
    buf.split_to(len).freeze()
}

fn qid_for(names: &[&[u8]]) -> Qid {
    let mut h: u64 = 1469598103934665603;
    for n in names {
        for b in n.iter().chain(b"/") {
            h = (h ^ *b as u64).wrapping_mul(1099511628211);
        }
    }
    Qid {
        typ: 0,
        version: 0,
        path: h,
    }
}

/// A server that answers from the request and the qids of its fids: a walked file's qid is a
/// hash of the names from the root.
fn answer(fids: &mut std::collections::HashMap<u32, Qid>, fc: &Fcall) -> Msg {
    match &fc.msg {
        Msg::Tversion(v) => Rversion {
            msize: v.msize,
            version: v.version.clone(),
        }
        .into(),
        Msg::Tattach(_) => Rattach {
            qid: Qid {
                typ: qid_type::DIR,
                version: 0,
                path: 1,
            },
        }
        .into(),
        Msg::Twalk(w) => {
            let names: Vec<&[u8]> = w.wnames.iter().collect();
            let qids: Vec<Qid> = (1..=names.len()).map(|i| qid_for(&names[..i])).collect();
            if let Some(q) = qids.last() {
                fids.insert(w.newfid.0, *q);
            }
            Rwalk {
                wqids: WalkQids::new(&qids).unwrap(),
            }
            .into()
        }
        Msg::Tlopen(o) => Rlopen {
            qid: fids.get(&o.fid.0).copied().unwrap_or_default(),
            iounit: 0,
        }
        .into(),
        Msg::Tclunk(_) => Rclunk {}.into(),
        Msg::Tread(r) => Rread {
            data: Data(vec![0; r.count as usize].into()),
        }
        .into(),
        _ => Rlerror {
            ecode: errno::ENOSYS,
        }
        .into(),
    }
}

struct Rig {
    fids: std::collections::HashMap<u32, Qid>,
    s: Session,
    link: LinkId,
    now: Instant,
}

impl Rig {
    fn new(cfg: Config) -> Rig {
        Rig::with_session(Session::new(cfg, BackendId(0), Instant::from_millis(0)))
    }

    /// A session of a mux's endpoint (two backends: qids sent to the client name paths).
    fn mux(cfg: Config) -> Rig {
        let endpoint = persist_core::Endpoint::new(2, &cfg);
        let s = Session::with_backends(cfg, Box::new(endpoint), Instant::from_millis(0));
        Rig::with_session(s)
    }

    fn with_session(mut s: Session) -> Rig {
        let now = Instant::from_millis(0);
        // A session dials when its client's Tversion arrives.
        let version = Fcall::new(
            NOTAG,
            Tversion {
                msize: 65536,
                version: "9P2000.L".into(),
            },
        );
        s.handle_client_frame(now, version.to_frame().unwrap());
        let Some(Output::Dial { link, .. }) = s.poll_output() else {
            panic!("no dial")
        };
        s.handle_link_up(now, link);
        let mut rig = Rig {
            fids: Default::default(),
            s,
            link,
            now,
        };
        rig.pump();
        let attach = Tattach {
            fid: Fid(0),
            afid: NOFID,
            uname: "u".into(),
            aname: "".into(),
            n_uname: Some(0),
        };
        rig.roundtrip(Fcall::new(0, attach));
        rig
    }

    /// Send one client request, answer what reaches the server, until quiet.
    fn roundtrip(&mut self, fc: Fcall) {
        self.s.handle_client_frame(self.now, fc.to_frame().unwrap());
        self.pump();
    }

    fn pump(&mut self) -> usize {
        let mut to_server = Vec::new();
        let mut served = 0;
        loop {
            while let Some(o) = self.s.poll_output() {
                if let Output::ToLink { frame, .. } = o {
                    to_server.push(frame);
                }
            }
            while self.s.poll_event().is_some() {}
            if to_server.is_empty() {
                return served;
            }
            for frame in to_server.drain(..) {
                let fc = Fcall::decode(&frame, Dialect::DotL).unwrap();
                let reply = Fcall::new(fc.tag, answer(&mut self.fids, &fc))
                    .to_frame()
                    .unwrap();
                self.s.handle_server_frame(self.now, self.link, reply);
                served += 1;
            }
        }
    }
}

/// Forward `n` pairs of (request, reply) through the session; returns (pairs/s, allocs/pair).
fn forward(rig: &mut Rig, request: &Bytes, reply: &Bytes, n: u64) -> (f64, f64) {
    let run = |rig: &mut Rig, n: u64| {
        for _ in 0..n {
            rig.s
                .handle_client_frame(rig.now, black_box(request.clone()));
            while let Some(o) = rig.s.poll_output() {
                black_box(o);
            }
            rig.s
                .handle_server_frame(rig.now, rig.link, black_box(reply.clone()));
            while let Some(o) = rig.s.poll_output() {
                black_box(o);
            }
        }
    };
    run(rig, 1000); // warm up: tables reach their working size
    let allocs = ALLOCATIONS.load(Ordering::Relaxed);
    let start = WallClock::now();
    run(rig, n);
    let elapsed = start.elapsed();
    let allocs = ALLOCATIONS.load(Ordering::Relaxed) - allocs;
    (n as f64 / elapsed.as_secs_f64(), allocs as f64 / n as f64)
}

/// The same frame traffic as `forward` without a session: clone in, drop out.
fn driver_baseline(request: &Bytes, reply: &Bytes, n: u64) -> f64 {
    let mut out = std::collections::VecDeque::with_capacity(4);
    let start = WallClock::now();
    for _ in 0..n {
        out.push_back(black_box(request.clone()));
        while let Some(f) = out.pop_front() {
            black_box(f);
        }
        out.push_back(black_box(reply.clone()));
        while let Some(f) = out.pop_front() {
            black_box(f);
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let n: u64 = std::env::var("BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    println!("persist-core session benchmark");

    // --- forwarding ---
    let mut rig = Rig::new(Config::default());
    let names = WalkNames::new(["usr", "lib"]).unwrap();
    rig.roundtrip(Fcall::new(
        1,
        Twalk {
            fid: Fid(0),
            newfid: Fid(1),
            wnames: names.clone(),
        },
    ));
    rig.roundtrip(Fcall::new(
        1,
        Tlopen {
            fid: Fid(1),
            flags: lflags::RDONLY,
        },
    ));
    let tread = shared(Fcall::new(
        5,
        Tread {
            fid: Fid(1),
            offset: 0,
            count: 8192,
        },
    ));
    let rread = shared(Fcall::new(
        5,
        Rread {
            data: Data(vec![7u8; 8192].into()),
        },
    ));
    let (read_rate, read_allocs) = forward(&mut rig, &tread, &rread, n);
    let twalk = shared(Fcall::new(
        6,
        Twalk {
            fid: Fid(0),
            newfid: Fid(2),
            wnames: names,
        },
    ));
    let qids = [qid_for(&[b"usr"]), qid_for(&[b"usr", b"lib"])];
    let rwalk = shared(Fcall::new(
        6,
        Rwalk {
            wqids: WalkQids::new(&qids).unwrap(),
        },
    ));
    let (walk_rate, walk_allocs) = forward(&mut rig, &twalk, &rwalk, n / 4);
    // Writes acknowledged and kept for the replay (a budget no run reaches: every write kept).
    let mut writer = Rig::new(Config {
        replay_budget: usize::MAX,
        ..Config::default()
    });
    for fc in [
        Fcall::new(
            1,
            Twalk {
                fid: Fid(0),
                newfid: Fid(3),
                wnames: WalkNames::new(["usr", "log"]).unwrap(),
            },
        ),
        Fcall::new(
            1,
            Tlopen {
                fid: Fid(3),
                flags: lflags::RDWR,
            },
        ),
    ] {
        writer.roundtrip(fc);
    }
    let twrite = shared(Fcall::new(
        7,
        Twrite {
            fid: Fid(3),
            offset: 0,
            data: Data(vec![7u8; 8192].into()),
        },
    ));
    let rwrite = shared(Fcall::new(7, Rwrite { count: 8192 }));
    let (write_rate, write_allocs) = forward(&mut writer, &twrite, &rwrite, n / 4);
    drop(writer);
    // The same through a mux's session: reads pass as they do through a proxy; walks have their
    // qids rewritten to name paths.
    let mut mux = Rig::mux(Config::default());
    for fc in [
        Fcall::new(
            1,
            Twalk {
                fid: Fid(0),
                newfid: Fid(1),
                wnames: WalkNames::new(["usr", "lib"]).unwrap(),
            },
        ),
        Fcall::new(
            1,
            Tlopen {
                fid: Fid(1),
                flags: lflags::RDONLY,
            },
        ),
    ] {
        mux.roundtrip(fc);
    }
    let (mux_read_rate, mux_read_allocs) = forward(&mut mux, &tread, &rread, n);
    let (mux_walk_rate, mux_walk_allocs) = forward(&mut mux, &twalk, &rwalk, n / 4);
    // What a driver spends anyway per pair (taking each frame in, handing it on): measured in
    // the same run so the session's own cost can be told apart.
    let base = driver_baseline(&tread, &rread, n);
    let own = |rate: f64| 1e9 / (1e9 / rate - 1e9 / base);
    println!("forwarding, pairs per second (allocations per pair):");
    println!("  driver baseline     {base:>12.0}  (frame hand-offs alone)");
    println!(
        "  Tread/Rread 8 KiB  {read_rate:>12.0}  ({read_allocs:.3})  session alone: {:.0}/s, {:.0} ns/pair",
        own(read_rate),
        1e9 / own(read_rate)
    );
    println!(
        "  Twalk/Rwalk 2 names{walk_rate:>12.0}  ({walk_allocs:.3})  session alone: {:.0}/s, {:.0} ns/pair",
        own(walk_rate),
        1e9 / own(walk_rate)
    );
    println!(
        "  Twrite/Rwrite 8 KiB{write_rate:>12.0}  ({write_allocs:.3})  session alone: {:.0}/s, {:.0} ns/pair (each write kept for the replay)",
        own(write_rate),
        1e9 / own(write_rate)
    );
    println!(
        "  mux: Tread/Rread   {mux_read_rate:>12.0}  ({mux_read_allocs:.3})  session alone: {:.0} ns/pair ({:.2}x the proxy's)",
        1e9 / own(mux_read_rate),
        own(read_rate) / own(mux_read_rate)
    );
    println!(
        "  mux: Twalk/Rwalk   {mux_walk_rate:>12.0}  ({mux_walk_allocs:.3})  session alone: {:.0} ns/pair ({:.2}x the proxy's)",
        1e9 / own(mux_walk_rate),
        own(walk_rate) / own(mux_walk_rate)
    );

    // --- fid memory ---
    let fids: u32 = std::env::var("BENCH_FIDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut rig = Rig::new(Config::default());
    let start = WallClock::now();
    for i in 0..fids {
        // Depth 8: seven shared directory levels, then a name of its own.
        let mut path: Vec<String> = (0..7).map(|l| format!("d{}", (i >> (l * 2)) % 4)).collect();
        path.push(format!("f{i}"));
        let walk = Twalk {
            fid: Fid(0),
            newfid: Fid(i + 1),
            wnames: WalkNames::new(&path).unwrap(),
        };
        rig.roundtrip(Fcall::new(1, walk));
    }
    let tracked = rig.s.fid_count() as f64;
    println!(
        "at {tracked} fids of depth 8: {:.1} bytes per fid record, plus {:.1} bytes per fid of shared path names ({} names); built in {:.2?}",
        rig.s.fid_table_bytes() as f64 / tracked,
        rig.s.path_name_bytes() as f64 / tracked,
        rig.s.path_nodes(),
        start.elapsed()
    );

    // --- recovery ---
    let open: u32 = std::env::var("BENCH_OPEN_FIDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    for window in [Config::default().recovery_window, 1] {
        let cfg = Config {
            recovery_window: window,
            ..Config::default()
        };
        let mut rig = Rig::new(cfg);
        for i in 0..open {
            let path = [format!("d{}", i % 100), format!("f{i}")];
            let walk = Twalk {
                fid: Fid(0),
                newfid: Fid(i + 1),
                wnames: WalkNames::new(&path).unwrap(),
            };
            rig.roundtrip(Fcall::new(1, walk));
            rig.roundtrip(Fcall::new(
                1,
                Tlopen {
                    fid: Fid(i + 1),
                    flags: lflags::RDONLY,
                },
            ));
        }
        rig.s.handle_link_down(rig.now, rig.link, "bench");
        // Redial at once.
        rig.now = rig.s.poll_timeout().unwrap();
        rig.s.handle_timeout(rig.now);
        let link = loop {
            match rig.s.poll_output() {
                Some(Output::Dial { link, .. }) => break link,
                Some(_) => {}
                None => panic!("no redial"),
            }
        };
        rig.link = link;
        let start = WallClock::now();
        rig.s.handle_link_up(rig.now, link);
        // Count round trips: each pump answers one window's worth of requests.
        let mut round_trips = 0u64;
        let mut recovered = None;
        loop {
            let mut to_server = Vec::new();
            while let Some(o) = rig.s.poll_output() {
                if let Output::ToLink { frame, .. } = o {
                    to_server.push(frame);
                }
            }
            while let Some(e) = rig.s.poll_event() {
                if let Event::Recovered { fids, stale, .. } = e {
                    recovered = Some((fids, stale));
                }
            }
            if to_server.is_empty() {
                break;
            }
            round_trips += 1;
            for frame in to_server {
                let fc = Fcall::decode(&frame, Dialect::DotL).unwrap();
                let reply = Fcall::new(fc.tag, answer(&mut rig.fids, &fc))
                    .to_frame()
                    .unwrap();
                rig.s.handle_server_frame(rig.now, rig.link, reply);
            }
        }
        let cpu = start.elapsed();
        let (fids, stale) = recovered.expect("recovered");
        let virtual_time = Duration::from_micros(100) * round_trips as u32;
        println!(
            "recovery of {open} open fids, window {window:>3}: {fids} rebuilt, {stale} stale; CPU {cpu:.2?}; \
             {round_trips} round trips = {virtual_time:.2?} at 100 µs each"
        );
    }
}
