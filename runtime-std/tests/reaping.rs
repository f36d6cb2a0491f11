//! Sessions leave nothing behind: once their clients are gone every thread they started has
//! returned, whether the server was up or down when they left. (A test binary of its own, so
//! that no other test's threads are counted.)

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use runtime_std::Addr;

/// How many threads of this process have a name starting with `p9persist-` (the kernel keeps
/// the first 15 bytes of a name).
fn proxy_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("p9persist-"))
        .count()
}

/// Wait until `proxy_threads()` is `n`.
fn settles_at(n: usize) {
    let start = Instant::now();
    while proxy_threads() != n {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{} proxy threads, not {n}",
            proxy_threads()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn finished_sessions_leave_no_threads() {
    init_log();
    let server = RamServer::start(ramfs::Fs::new());
    let proxy = Proxy::start(&Addr::Tcp("127.0.0.1:0".into()), server.backend());
    settles_at(1); // the acceptor
    for i in 0..20 {
        let mut c = NineP::attach(&proxy.addr);
        c.create(10, &format!("f{i}"));
        c.write(10, 0, b"x");
    }
    settles_at(1);
    // Clients that leave while the server is away, their sessions redialing.
    let clients: Vec<NineP> = (0..3)
        .map(|i| {
            let mut c = NineP::attach(&proxy.addr);
            c.create(10, &format!("g{i}"));
            c
        })
        .collect();
    server.crash();
    thread::sleep(Duration::from_millis(500));
    drop(clients);
    settles_at(1);
    server.restart();
    let mut c = NineP::attach(&proxy.addr);
    c.create(10, "after");
    drop(c);
    settles_at(1);
    proxy.stop();
    settles_at(0);
}
