//! The blocking proxy against a real server (see `common`): files survive a server restart,
//! unix listeners clean up, and shutdown is prompt whatever the sessions are doing.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use p9_core::*;
use runtime_std::{Addr, Listener, Servers, Shutdown};

// ---- the tests -----------------------------------------------------------------------------

/// Open files, write, read; the server crashes mid-workload and returns 1.5 s later; the
/// workload goes on with the same fids (the requests made meanwhile are held), and every byte
/// is exact, through the proxy and in the server's tree.
#[test]
fn files_survive_a_server_restart() {
    init_log();
    let server = RamServer::start(ramfs::Fs::new());
    let proxy = Proxy::start(&Addr::Tcp("127.0.0.1:0".into()), server.backend());
    let mut c = NineP::attach(&proxy.addr);
    let files = 3u32;
    for f in 0..files {
        c.create(10 + f, &format!("f{f}"));
    }
    let mut expected = vec![Vec::<u8>::new(); files as usize];
    let mut restarted = None;
    for k in 0..12u64 {
        let round = Instant::now();
        if k == 6 {
            restarted = Some(server.outage(Duration::from_millis(1500)));
        }
        for f in 0..files {
            let data = pattern(f, k);
            c.write(10 + f, k * 8192, &data);
            expected[f as usize].extend_from_slice(&data);
            let half = (k as usize / 2) * 8192;
            let back = c.read(10 + f, half as u64, 8192);
            assert_eq!(&back[..], &expected[f as usize][half..half + 8192]);
        }
        if k == 6 {
            assert!(
                round.elapsed() >= Duration::from_millis(1400),
                "the requests were held through the outage"
            );
        }
    }
    restarted.unwrap().join().unwrap();
    // A fid walked after the restart works too.
    assert!(matches!(c.walk(50, &["f1"]), Msg::Rwalk(_)));
    for f in 0..files {
        let got = c.read_all(10 + f);
        assert!(got == expected[f as usize], "f{f}: {} bytes", got.len());
        let fs = server.fs.lock().unwrap();
        assert!(fs.read_file(format!("f{f}")).unwrap() == &expected[f as usize][..]);
    }
    proxy.stop();
    assert!(c.ended(), "the client sees the end of its session");
}

/// A unix-socket listener: private, serves clients across a server restart, and its socket file
/// is gone once the proxy returns.
#[test]
fn unix_listener_serves_and_cleans_up() {
    init_log();
    use std::os::unix::fs::PermissionsExt;
    let server = RamServer::start(ramfs::Fs::new());
    let dir = std::env::temp_dir().join(format!("runtime-std-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("proxy.sock");
    let proxy = Proxy::start(&Addr::Unix(path.clone()), server.backend());
    assert_eq!(proxy.addr, Addr::Unix(path.clone()));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut a = NineP::attach(&proxy.addr);
    let mut b = NineP::attach(&proxy.addr);
    a.create(10, "a");
    b.create(10, "b");
    a.write(10, 0, b"from a");
    // The server restarts at once: the sessions redial and rebuild their fids.
    server.outage(Duration::ZERO).join().unwrap();
    b.write(10, 0, b"from b");
    assert_eq!(&a.read(10, 0, 100)[..], b"from a");
    assert_eq!(&b.read(10, 0, 100)[..], b"from b");
    drop(b); // one client leaves; the other goes on
    a.write(10, 6, b"!");
    assert_eq!(&a.read(10, 0, 100)[..], b"from a!");
    proxy.stop();
    assert!(!path.exists(), "the socket file is removed");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Shutdown comes while a client is connected and the server is down (the session holding a
/// request and redialing): `run_proxy` still returns within 2 s, and the client is let go.
#[test]
fn shutdown_is_prompt_during_recovery() {
    init_log();
    let server = RamServer::start(ramfs::Fs::new());
    let proxy = Proxy::start(&Addr::Tcp("127.0.0.1:0".into()), server.backend());
    let mut c = NineP::attach(&proxy.addr);
    c.create(10, "f");
    server.crash();
    let tag = c
        .send(Twrite {
            fid: Fid(10),
            offset: 0,
            data: Data("held".into()),
        })
        .unwrap();
    thread::sleep(Duration::from_millis(700)); // a redial or two fail meanwhile
    proxy.stop();
    assert!(c.ended(), "the client is let go");
    assert!(c.wait(tag).is_err());
}

/// Shutdown comes while the proxy is blocked writing to a client that does not read: still
/// within 2 s.
#[test]
fn shutdown_is_prompt_with_a_client_not_reading() {
    init_log();
    let mut fs = ramfs::Fs::new();
    fs.write_file("big", &vec![7u8; 1 << 20]).unwrap();
    let server = RamServer::start(fs);
    let proxy = Proxy::start(&Addr::Tcp("127.0.0.1:0".into()), server.backend());
    let mut c = NineP::attach(&proxy.addr);
    assert!(matches!(c.walk(10, &["big"]), Msg::Rwalk(_)));
    assert!(matches!(
        c.call(Tlopen {
            fid: Fid(10),
            flags: lflags::RDONLY,
        }),
        Msg::Rlopen(_)
    ));
    // 24 MB of replies asked for and none read: more than every buffer on the way holds.
    for i in 0..400u64 {
        c.send(Tread {
            fid: Fid(10),
            offset: (i % 16) * 60_000,
            count: 60_000,
        })
        .unwrap();
    }
    thread::sleep(Duration::from_millis(1000));
    proxy.stop();
}

/// A proxy shut down before it starts returns at once; the handles cross threads.
#[test]
fn shutdown_before_start() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Shutdown>();
    send_sync::<Listener>();
    let shutdown = Shutdown::new();
    shutdown.shutdown();
    let listener = Listener::bind(&Addr::Tcp("127.0.0.1:0".into())).unwrap();
    let cfg = runtime_std::ProxyConfig {
        servers: Servers::one(Addr::Tcp("127.0.0.1:9".into())),
        session: persist_core::Config::default(),
        metrics: None,
        limits: Default::default(),
    };
    let start = Instant::now();
    runtime_std::run_proxy(listener, cfg, shutdown).unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
}
