//! How fast a recovery rebuilds many fids, against how fast diod itself takes the same walks
//! and opens from a client sending them directly (issue 11): both measured in one run.
//!
//! Through the tokio proxy a client holds `RECOVERY_WALKED` walked fids (default 100,000) and
//! `RECOVERY_OPEN` open ones (default 10,000: each open fid is a file descriptor in diod, and
//! the machine's limit is 20,000); diod is SIGKILLed and restarted, and the proxy's own
//! "recovered N fids in T ms" is the recovery's time (from the new link to the last fid). The
//! baseline: a client straight to a fresh diod sends the same walks, and an open after each
//! open fid's walk, with 64 requests in flight (the recovery's window). Prints both times and
//! their ratio.
//!
//!   cargo bench -p tests --bench recovery        (needs diod: scripts/test.sh installs it)

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use p9_core::*;
use tests::hostile::RawClient;
use tests::servers::{announced_tcp, free_port, spawn_diod};

const WINDOW: usize = 64;

fn count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Make fids 1..=walked+open: each walked to `f`, the last `open` of them opened too, with at
/// most WINDOW requests in flight (an open follows its fid's walk). The time it took.
fn make_fids(c: &mut RawClient, walked: usize, open: usize) -> Duration {
    let start = Instant::now();
    let total = walked + open;
    let mut todo: VecDeque<(u32, bool)> = (1..=total as u32)
        .map(|fid| (fid, fid as usize > walked))
        .collect();
    // In flight: tag → (fid, opens next).
    let mut flight: std::collections::HashMap<u16, (u32, bool)> = Default::default();
    let mut free_tags: Vec<u16> = (2..2 + WINDOW as u16).collect();
    let mut opens: VecDeque<u32> = VecDeque::new();
    while !todo.is_empty() || !opens.is_empty() || !flight.is_empty() {
        while let Some(tag) = free_tags.pop() {
            if let Some(fid) = opens.pop_front() {
                let open = Tlopen {
                    fid: Fid(fid),
                    flags: lflags::RDONLY,
                };
                c.send(tag, open);
                flight.insert(tag, (fid, false));
            } else if let Some((fid, then_open)) = todo.pop_front() {
                let walk = Twalk {
                    fid: Fid(0),
                    newfid: Fid(fid),
                    wnames: WalkNames::new(["f"]).unwrap(),
                };
                c.send(tag, walk);
                flight.insert(tag, (fid, then_open));
            } else {
                free_tags.push(tag);
                break;
            }
        }
        let fc = c.recv().expect("a reply");
        let (fid, then_open) = flight.remove(&fc.tag).expect("a reply to a request sent");
        assert!(
            matches!(fc.msg, Msg::Rwalk(_) | Msg::Rlopen(_)),
            "fid {fid}: {:?}",
            fc.msg
        );
        if then_open {
            opens.push_back(fid);
        }
        free_tags.push(fc.tag);
    }
    start.elapsed()
}

fn main() {
    let walked = count("RECOVERY_WALKED", 100_000);
    let open = count("RECOVERY_OPEN", 10_000);
    let dir = std::env::temp_dir().join(format!("p9persist-recovery-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), b"one file, many fids").unwrap();

    // diod alone, from a client of its own.
    let port = free_port();
    let mut server = spawn_diod(port, &dir);
    let mut c = RawClient::connect(&format!("127.0.0.1:{port}"), Dialect::DotL);
    c.attach_as(65536, "root", &dir.display().to_string());
    let direct = make_fids(&mut c, walked, open);
    drop(c);

    // The same fids through the proxy, then diod killed and restarted under them.
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_runtime-proxy"))
        .args(["--runtime", "tokio", "--listen", "127.0.0.1:0", "--server"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--backoff-initial-ms", "20"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runtime-proxy starts");
    let addr = announced_tcp(&mut proxy);
    let mut c = RawClient::connect(&addr, Dialect::DotL);
    c.attach_as(65536, "root", &dir.display().to_string());
    make_fids(&mut c, walked, open);
    let _ = server.kill();
    let _ = server.wait();
    server = spawn_diod(port, &dir);
    // The proxy's log says how long the rebuild took.
    let log = BufReader::new(proxy.stderr.take().unwrap());
    let mut recovered = None;
    for line in log.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.split("recovered ").nth(1) {
            // "N fids in T ms (S stale)"
            let words: Vec<&str> = rest.split_whitespace().collect();
            let fids: usize = words[0].parse().unwrap();
            let ms: u64 = words[3].parse().unwrap();
            let stale = words[5].trim_start_matches('(');
            recovered = Some((fids, Duration::from_millis(ms), stale.to_string()));
            break;
        }
    }
    let (fids, rebuild, stale) = recovered.expect("the proxy logged its recovery");
    let _ = proxy.kill();
    let _ = proxy.wait();
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "recovery of {walked} walked and {open} open fids against diod (2-core machine, TCP loopback):"
    );
    println!(
        "  diod, the same walks and opens straight from a client, 64 in flight: {:.0} ms",
        direct.as_secs_f64() * 1e3
    );
    println!(
        "  the proxy's rebuild ({fids} fids, {stale} stale): {:.0} ms; ratio {:.2}",
        rebuild.as_secs_f64() * 1e3,
        rebuild.as_secs_f64() / direct.as_secs_f64()
    );
}
