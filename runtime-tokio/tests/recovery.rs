//! The proxy against real servers: Debian's diod (9P2000.L, killed with SIGKILL and restarted on
//! the same port) and the in-process ramfs server (cut off and brought back). A client built on
//! p9-core's sans-IO client talks through `run_proxy`. If diod is missing these tests fail and
//! say so: `scripts/test.sh` installs it.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use p9_core::*;
use persist_core::{Backoff, Config};
use runtime_tokio::client::NineP;
use runtime_tokio::{run_proxy, Addr, Listener, ProxyConfig, RamfsServer};
use tokio::sync::watch;

/// A server the tests can kill, freeze and bring back.
enum Server {
    Diod {
        child: Option<Child>,
        port: u16,
        dir: PathBuf,
    },
    Ramfs {
        server: Arc<RamfsServer>,
        addr: Addr,
    },
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn diod_path() -> &'static str {
    for p in ["/usr/sbin/diod", "/usr/bin/diod"] {
        if std::path::Path::new(p).exists() {
            return p;
        }
    }
    panic!("diod is not installed: run scripts/test.sh (it apt-installs diod) or `apt-get install -y diod`");
}

fn spawn_diod(port: u16, dir: &std::path::Path) -> Child {
    let child = Command::new(diod_path())
        .args(["-f", "-n", "-c", "/dev/null", "-L", "stderr", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-e")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("diod starts");
    // Wait until it listens.
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "diod did not start listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

impl Server {
    async fn diod() -> Server {
        let dir = std::env::temp_dir().join(format!(
            "p9persist-diod-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let child = spawn_diod(port, &dir);
        Server::Diod {
            child: Some(child),
            port,
            dir,
        }
    }

    async fn ramfs() -> Server {
        let server = RamfsServer::new(ramfs::Fs::new(), 65536);
        let listener = Listener::bind(&Addr::Tcp("127.0.0.1:0".into()))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(server.clone().serve(listener, watch::channel(false).1));
        Server::Ramfs { server, addr }
    }

    fn addr(&self) -> Addr {
        match self {
            Server::Diod { port, .. } => Addr::Tcp(format!("127.0.0.1:{port}")),
            Server::Ramfs { addr, .. } => addr.clone(),
        }
    }

    fn aname(&self) -> Bytes {
        match self {
            Server::Diod { dir, .. } => Bytes::from(dir.to_string_lossy().into_owned()),
            Server::Ramfs { .. } => Bytes::new(),
        }
    }

    /// Stop executing requests (SIGSTOP for diod), leaving connections open.
    fn freeze(&mut self) {
        match self {
            Server::Diod { child: Some(c), .. } => {
                let stopped = Command::new("kill")
                    .args(["-STOP", &c.id().to_string()])
                    .status()
                    .unwrap();
                assert!(stopped.success(), "kill -STOP diod");
                // Wait until the kernel reports it stopped.
                let stat = format!("/proc/{}/stat", c.id());
                let start = Instant::now();
                let state = || {
                    std::fs::read_to_string(&stat)
                        .unwrap_or_default()
                        .split_whitespace()
                        .nth(2)
                        .map(str::to_owned)
                };
                while state().as_deref() != Some("T") {
                    assert!(
                        start.elapsed() < Duration::from_secs(5),
                        "diod did not stop"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Server::Ramfs { server, .. } => server.freeze(true),
            _ => {}
        }
    }

    /// Kill the server (SIGKILL) and bring it back on the same address after `down`.
    async fn outage(&mut self, down: Duration) {
        match self {
            Server::Diod { child, port, dir } => {
                let mut c = child.take().expect("diod running");
                c.kill().unwrap();
                c.wait().unwrap();
                tokio::time::sleep(down).await;
                *child = Some(spawn_diod(*port, dir));
            }
            Server::Ramfs { server, .. } => {
                server.cut_off(down);
                tokio::time::sleep(down + Duration::from_millis(100)).await;
                server.freeze(false);
            }
        }
    }

    fn exists(&self, name: &str) -> bool {
        match self {
            Server::Diod { dir, .. } => dir.join(name).exists(),
            Server::Ramfs { server, .. } => server.fs.lock().unwrap().qid_of(name).is_ok(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Server::Diod { child, dir, .. } = self {
            if let Some(c) = child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Start a proxy for `backend`; returns where clients connect.
async fn proxy(backend: Addr, give_up_after: Option<Duration>) -> Addr {
    let listener = Listener::bind(&Addr::Tcp("127.0.0.1:0".into()))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = ProxyConfig {
        backend,
        session: Config {
            backoff: Backoff {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(2),
                ..Backoff::default()
            },
            give_up_after,
            ..Config::default()
        },
    };
    let (tx, rx) = watch::channel(false);
    std::mem::forget(tx); // the proxy runs for the rest of the test
    tokio::spawn(run_proxy(listener, cfg, None, rx));
    addr
}

async fn attach(server: &Server, proxy: &Addr) -> NineP {
    let mut c = NineP::connect(proxy, 65536, Dialect::DotL)
        .await
        .expect("connect through the proxy");
    let r = c
        .call(Tattach {
            fid: Fid(0),
            afid: NOFID,
            uname: "root".into(),
            aname: server.aname(),
            n_uname: Some(0),
        })
        .await
        .unwrap();
    assert!(matches!(r.msg, Msg::Rattach(_)), "attach: {:?}", r.msg);
    c
}

async fn create(c: &mut NineP, fid: u32, name: &str) -> Msg {
    let r = c
        .call(Twalk {
            fid: Fid(0),
            newfid: Fid(fid),
            wnames: WalkNames::new::<[&str; 0], &str>([]).unwrap(),
        })
        .await
        .unwrap();
    assert!(matches!(r.msg, Msg::Rwalk(_)));
    c.call(Tlcreate {
        fid: Fid(fid),
        name: Bytes::copy_from_slice(name.as_bytes()),
        flags: lflags::RDWR,
        mode: 0o644,
        gid: 0,
    })
    .await
    .unwrap()
    .msg
}

fn pattern(f: u32, k: u64) -> Vec<u8> {
    (0..8192u64)
        .map(|i| (f as u64 * 7 + k * 13 + i) as u8)
        .collect()
}

/// Scenario 1: open files, write, read, list; kill the server mid-workload, bring it back after
/// longer than the first backoff; the workload finishes on the same fids; every byte is exact.
async fn files_survive_a_restart(mut server: Server) {
    let proxy = proxy(server.addr(), None).await;
    let mut c = attach(&server, &proxy).await;
    let files = 3u32;
    for f in 0..files {
        assert!(matches!(
            create(&mut c, 10 + f, &format!("f{f}")).await,
            Msg::Rlcreate(_)
        ));
    }
    let mut expected = vec![Vec::<u8>::new(); files as usize];
    for k in 0..12u64 {
        if k == 6 {
            // The workload is mid-way: the server dies and comes back 1.5 s later.
            let before = Instant::now();
            server.outage(Duration::from_millis(1500)).await;
            assert!(before.elapsed() >= Duration::from_millis(1500));
        }
        for f in 0..files {
            let data = pattern(f, k);
            let r = c
                .call(Twrite {
                    fid: Fid(10 + f),
                    offset: k * 8192,
                    data: Data(data.clone().into()),
                })
                .await
                .unwrap();
            assert_eq!(
                r.msg,
                Msg::Rwrite(Rwrite { count: 8192 }),
                "write {k} to f{f}"
            );
            expected[f as usize].extend_from_slice(&data);
            let r = c
                .call(Tread {
                    fid: Fid(10 + f),
                    offset: (k / 2) * 8192,
                    count: 8192,
                })
                .await
                .unwrap();
            let Msg::Rread(d) = r.msg else {
                panic!("read: {:?}", r.msg)
            };
            assert_eq!(
                &d.data.0[..],
                &expected[f as usize][(k as usize / 2) * 8192..(k as usize / 2 + 1) * 8192]
            );
        }
    }
    // List the directory through a fid walked after the restart.
    c.call(Twalk {
        fid: Fid(0),
        newfid: Fid(50),
        wnames: WalkNames::new::<[&str; 0], &str>([]).unwrap(),
    })
    .await
    .unwrap();
    c.call(Tlopen {
        fid: Fid(50),
        flags: lflags::DIRECTORY,
    })
    .await
    .unwrap();
    let Msg::Rreaddir(d) = c
        .call(Treaddir {
            fid: Fid(50),
            offset: 0,
            count: 8192,
        })
        .await
        .unwrap()
        .msg
    else {
        panic!("readdir")
    };
    let names: Vec<Vec<u8>> = dir::dirents(&d.data.0)
        .map(|e| e.unwrap().name.to_vec())
        .collect();
    for f in 0..files {
        assert!(names.contains(&format!("f{f}").into_bytes()), "f{f} listed");
    }
    // Every byte, read back whole through the fids opened before the restart.
    for f in 0..files {
        let mut got = Vec::new();
        loop {
            let Msg::Rread(d) = c
                .call(Tread {
                    fid: Fid(10 + f),
                    offset: got.len() as u64,
                    count: 60_000,
                })
                .await
                .unwrap()
                .msg
            else {
                panic!("read")
            };
            if d.data.0.is_empty() {
                break;
            }
            got.extend_from_slice(&d.data.0);
        }
        assert!(
            got == expected[f as usize],
            "f{f}: {} bytes back, {} written",
            got.len(),
            expected[f as usize].len()
        );
    }
}

/// Scenario 2: a create and a rename in flight when the server dies get "possibly not completed"
/// (EIO) — never resent, so executed at most once on disk.
async fn non_idempotent_requests_fail_once(mut server: Server) {
    let proxy = proxy(server.addr(), None).await;
    let mut c = attach(&server, &proxy).await;
    assert!(matches!(create(&mut c, 10, "old").await, Msg::Rlcreate(_)));
    let r = c
        .call(Twalk {
            fid: Fid(0),
            newfid: Fid(11),
            wnames: WalkNames::new::<[&str; 0], &str>([]).unwrap(),
        })
        .await
        .unwrap();
    assert!(matches!(r.msg, Msg::Rwalk(_)));
    // The server hangs with the requests in flight, then dies.
    server.freeze();
    let mut c = tokio::spawn(async move {
        let create = c
            .call(Tlcreate {
                fid: Fid(11),
                name: "new".into(),
                flags: lflags::RDWR | lflags::EXCL,
                mode: 0o644,
                gid: 0,
            })
            .await
            .unwrap();
        (c, create)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.outage(Duration::from_millis(1000)).await;
    let (mut c, create) = (&mut c).await.unwrap();
    assert_eq!(
        create.msg,
        Msg::Rlerror(Rlerror { ecode: errno::EIO }),
        "a create in flight is possibly not completed"
    );
    // Renameat in flight, likewise.
    server.freeze();
    let rename = tokio::spawn(async move {
        let r = c
            .call(Trenameat {
                olddirfid: Fid(0),
                oldname: "old".into(),
                newdirfid: Fid(0),
                newname: "renamed".into(),
            })
            .await
            .unwrap();
        (c, r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.outage(Duration::from_millis(1000)).await;
    let (mut c, r) = rename.await.unwrap();
    assert_eq!(r.msg, Msg::Rlerror(Rlerror { ecode: errno::EIO }));
    // On disk: each happened at most once — the file is under exactly one of its names.
    assert!(
        server.exists("old") ^ server.exists("renamed"),
        "exactly one name"
    );
    // The session is healthy: the open file still works.
    let r = c
        .call(Twrite {
            fid: Fid(10),
            offset: 0,
            data: Data("after".into()),
        })
        .await
        .unwrap();
    assert_eq!(r.msg, Msg::Rwrite(Rwrite { count: 5 }));
}

/// Scenario 3: soft mode — during a long outage requests fail with EIO in time, and the
/// session heals when the server returns.
async fn soft_mode_fails_in_time_and_heals(mut server: Server) {
    let proxy = proxy(server.addr(), Some(Duration::from_millis(800))).await;
    let mut c = attach(&server, &proxy).await;
    assert!(matches!(create(&mut c, 10, "f").await, Msg::Rlcreate(_)));
    let outage = {
        server.freeze(); // hang first so the kill leaves nothing to chance
        let start = Instant::now();
        let t = tokio::spawn(async move {
            server.outage(Duration::from_secs(4)).await;
            server
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = c
            .call(Tread {
                fid: Fid(10),
                offset: 0,
                count: 10,
            })
            .await
            .unwrap();
        let waited = start.elapsed();
        assert_eq!(
            r.msg,
            Msg::Rlerror(Rlerror { ecode: errno::EIO }),
            "soft mode fails the read"
        );
        assert!(
            waited < Duration::from_millis(3000),
            "failed after {waited:?}, not in time"
        );
        t
    };
    let _server = outage.await.unwrap();
    // Back: the fid opened before works again.
    let start = Instant::now();
    loop {
        let r = c
            .call(Twrite {
                fid: Fid(10),
                offset: 0,
                data: Data("x".into()),
            })
            .await
            .unwrap();
        if r.msg == Msg::Rwrite(Rwrite { count: 1 }) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never healed: {:?}",
            r.msg
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diod_files_survive_a_restart() {
    files_survive_a_restart(Server::diod().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diod_non_idempotent_requests_fail_once() {
    non_idempotent_requests_fail_once(Server::diod().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diod_soft_mode_fails_in_time_and_heals() {
    soft_mode_fails_in_time_and_heals(Server::diod().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramfs_files_survive_a_restart() {
    files_survive_a_restart(Server::ramfs().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramfs_non_idempotent_requests_fail_once() {
    non_idempotent_requests_fail_once(Server::ramfs().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramfs_soft_mode_fails_in_time_and_heals() {
    soft_mode_fails_in_time_and_heals(Server::ramfs().await).await;
}
