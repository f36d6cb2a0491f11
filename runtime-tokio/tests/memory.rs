//! The proxy's bounds on memory, measured as its resident memory (VmHWM, the peak), not as the
//! session's own counts: kept frames are slices of the buffers they were read into, and a
//! slice keeps its whole buffer alive, so a count of frame bytes alone could hold far more.
//!
//! - The replay budget: a client writing far more than the budget without fsync, in large
//!   writes, small writes and appends interleaved (appends are never kept, and their large
//!   frames share buffers with the small kept ones).
//! - The held-request bound: a client pipelining writes far past the bound while the server
//!   is down.
//!
//! Each prints its figures; the bounds asserted are the setting plus a fixed allowance.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use p9_core::*;
use runtime_tokio::client::NineP;
use runtime_tokio::Addr;

const MIB: u64 = 1 << 20;
/// Small writes: eight times what an 8 MiB budget holds when each counts the 16 KiB read
/// chunk its buffer may be (were each counted by its own size, all would be kept).
const SMALL: u64 = 4000;

/// The proxy's peak and current resident memory, in bytes.
fn resident(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Attach and make `name` with `flags` on `fid` (walked from the root, fid 0).
async fn make(c: &mut NineP, export: &Path, fid: u32, name: &str, flags: u32) {
    if fid == 1 {
        attach_export(c, export).await;
    }
    let walk = Twalk {
        fid: Fid(0),
        newfid: Fid(fid),
        wnames: WalkNames::new::<[&str; 0], &str>([]).unwrap(),
    };
    assert!(matches!(c.call(walk).await.unwrap().msg, Msg::Rwalk(_)));
    let create = Tlcreate {
        fid: Fid(fid),
        name: name.to_string().into(),
        flags,
        mode: 0o644,
        gid: 0,
    };
    let r = c.call(create).await.unwrap().msg;
    assert!(matches!(r, Msg::Rlcreate(_)), "{r:?}");
}

fn write(fid: u32, offset: u64, len: usize, salt: u8) -> Msg {
    let data: Vec<u8> = (0..len).map(|i| (i as u8) ^ salt).collect();
    Twrite {
        fid: Fid(fid),
        offset,
        data: Data(Bytes::from(data)),
    }
    .into()
}

/// 92 MiB written without fsync through a proxy with an 8 MiB replay budget: 512-byte writes
/// to one file interleaved with 60 KB appends to another, then 65 KB writes to a third.
#[test]
fn the_replay_budget_bounds_resident_memory() {
    let scratch = Scratch::new("memory-budget");
    let export = scratch.0.join("export");
    std::fs::create_dir_all(&export).unwrap();
    let (diod_port, port) = (free_port(), free_port());
    let _server = diod(diod_port, &export);
    let log = scratch.0.join("log");
    let proxy = proxy(port, diod_port, &log, &["--replay-budget", "8M"]);
    let pid = proxy.0.id();
    let rt = runtime();
    let addr = Addr::Tcp(format!("127.0.0.1:{port}"));
    let (base, held, peak) = rt.block_on(async {
        let mut c = NineP::connect(&addr, 65536, Dialect::DotL).await.unwrap();
        make(&mut c, &export, 1, "big", lflags::RDWR | lflags::CREATE).await;
        make(&mut c, &export, 2, "small", lflags::RDWR | lflags::CREATE).await;
        let append = lflags::WRONLY | lflags::CREATE | lflags::APPEND;
        make(&mut c, &export, 3, "log", append).await;
        let base = resident(pid).0;
        // One request in flight at a time, as most clients do. Small writes, kept, each read
        // into a buffer it may share with a large append (never kept).
        for i in 0..SMALL {
            let r = c.call(write(2, i * 512, 512, 2)).await.unwrap().msg;
            assert!(matches!(r, Msg::Rwrite(_)), "{r:?}");
            let r = c.call(write(3, 0, 60000, 3)).await.unwrap().msg;
            assert!(matches!(r, Msg::Rwrite(_)), "{r:?}");
        }
        let held = resident(pid).1;
        // Then large writes, far past the budget.
        for i in 0..1024u64 {
            let r = c.call(write(1, i * 65000, 65000, 1)).await.unwrap().msg;
            assert!(matches!(r, Msg::Rwrite(_)), "{r:?}");
        }
        (base, held, resident(pid).0)
    });
    let written = SMALL as usize * (512 + 60000) + 1024 * 65000;
    let mib = |b: u64| b as f64 / MIB as f64;
    eprintln!(
        "replay budget 8 MiB, {} MiB written without fsync: proxy resident {:.1} MiB before; {:.1} MiB more after {SMALL} small writes (among appends); peak {:.1} MiB more",
        written / MIB as usize,
        mib(base),
        mib(held.saturating_sub(base)),
        mib(peak.saturating_sub(base)),
    );
    for (what, grew) in [("after the small writes", held), ("at its peak", peak)] {
        assert!(
            grew.saturating_sub(base) < 8 * MIB + 8 * MIB,
            "{what}, the proxy grew by {:.1} MiB with an 8 MiB replay budget",
            mib(grew.saturating_sub(base))
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("panicked"), "{text}");
}

/// 64 MiB of writes pipelined while the server is down, through a proxy holding at most
/// 4 MiB of requests (`--held-max`): it stops reading the client at the bound, and its
/// memory shows it; once the server is back every write is answered.
#[test]
fn the_held_request_bound_bounds_resident_memory() {
    let scratch = Scratch::new("memory-held");
    let export = scratch.0.join("export");
    std::fs::create_dir_all(&export).unwrap();
    let (diod_port, port) = (free_port(), free_port());
    let server = diod(diod_port, &export);
    let log = scratch.0.join("log");
    let proxy = proxy(port, diod_port, &log, &["--held-max", "4M"]);
    let pid = proxy.0.id();
    let rt = runtime();
    let addr = Addr::Tcp(format!("127.0.0.1:{port}"));
    let (mut c, base) = rt.block_on(async {
        let mut c = NineP::connect(&addr, 65536, Dialect::DotL).await.unwrap();
        make(&mut c, &export, 1, "f", lflags::RDWR | lflags::CREATE).await;
        (c, resident(pid).0)
    });
    drop(server);
    // While the client pushes, measure, then bring the server back.
    let export2 = export.clone();
    let measure = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        let (peak, _) = resident(pid);
        (peak, diod(diod_port, &export2))
    });
    let replies = rt.block_on(async {
        // Small writes: many frames per read buffer, as a pipelining client sends them.
        let msgs: Vec<Msg> = (0..16384u64).map(|i| write(1, i * 4000, 4000, 4)).collect();
        let tags = c.send(msgs).await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), c.collect(&tags))
            .await
            .expect("every write answered once the server is back")
            .unwrap()
    });
    let (peak, _server) = measure.join().unwrap();
    assert!(replies.iter().all(|r| matches!(r.msg, Msg::Rwrite(_))));
    eprintln!(
        "held-request bound 4 MiB, 62 MiB pipelined during an outage: proxy resident {:.1} MiB before, peak {:.1} MiB while held (growth {:.1} MiB)",
        base as f64 / MIB as f64,
        peak as f64 / MIB as f64,
        peak.saturating_sub(base) as f64 / MIB as f64,
    );
    assert!(
        peak.saturating_sub(base) < 4 * MIB + 16 * MIB,
        "the proxy grew by {} MiB holding at most 4 MiB",
        peak.saturating_sub(base) / MIB
    );
}
