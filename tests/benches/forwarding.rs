//! Forwarding benchmark (prints a table; asserts nothing). `cargo bench -p tests --bench
//! forwarding`.
//!
//! For each server (the ramfs server, in a process of its own, and diod) and transport (TCP
//! loopback, unix socket where the server has one), measured in one run, in paired rounds (every
//! path once a round, the order rotated; each figure the median of its rounds): (a) direct to
//! the server, (b) through p9persist on each runtime (tokio, std threads, futures-io under smol
//! and under async-std; each its own process, `runtime-proxy`), (c) through socat as a plain
//! byte relay with `-b 1048576` and `nodelay` on both sides, (d) through `splice-relay`, the
//! fastest hop user space can build (a byte relay moving payloads with splice(2), a blocking
//! thread per direction): b/d is how close the proxy comes to what any hop achieves here.
//! Workloads: sequential 1 MiB-class reads and writes with 8 requests in flight (pipelined) and
//! with one (synchronous, as most clients behave), and small-request round trips (Tgetattr,
//! p50/p99). Prints throughput, latency, and the ratios b/a, b/c and b/d. BENCH_MB sets the data
//! volume per figure (default 128), BENCH_ROUNDS the rounds (default 3).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use p9_core::client::Client;
use p9_core::*;
use runtime_tokio::net::write_frames;
use runtime_tokio::net::{self, Reader, Writer};
use runtime_tokio::Addr;
use tests::servers::free_port;
use tokio::io::AsyncReadExt;

const MSIZE: u32 = (1 << 20) + 4096;
const CHUNK: u32 = 1 << 20;

struct Conn {
    r: Reader,
    w: Writer,
    c: Client,
    dec: FrameDecoder,
}

impl Conn {
    async fn open(addr: &Addr, aname: &str) -> Conn {
        let (r, w) = net::dial(addr).await.expect("dial");
        let mut conn = Conn {
            r,
            w,
            c: Client::new(MSIZE, Dialect::DotL),
            dec: FrameDecoder::new(MSIZE),
        };
        conn.send_all().await;
        conn.recv().await;
        let attach = Tattach {
            fid: Fid(0),
            afid: NOFID,
            uname: "root".into(),
            aname: Bytes::copy_from_slice(aname.as_bytes()),
            n_uname: Some(0),
        };
        assert!(matches!(conn.call(attach).await, Msg::Rattach(_)));
        conn
    }

    async fn send_all(&mut self) {
        let mut frames: Vec<Bytes> = std::iter::from_fn(|| self.c.poll_transmit()).collect();
        write_frames(&mut self.w, &mut frames).await.expect("write");
    }

    async fn recv(&mut self) -> Msg {
        loop {
            if let Some(f) = self.dec.next_frame().expect("frame") {
                return self.c.handle_frame(&f).expect("reply").msg;
            }
            self.dec.read_buf().reserve(CHUNK as usize + 4096);
            assert!(
                self.r.read_buf(self.dec.read_buf()).await.expect("read") > 0,
                "connection closed"
            );
        }
    }

    async fn call(&mut self, m: impl Into<Msg>) -> Msg {
        self.c.send(m).expect("send");
        self.send_all().await;
        self.recv().await
    }

    /// Move `total` bytes in `CHUNK` requests with `depth` in flight; returns MB/s.
    async fn stream(&mut self, fid: Fid, total: u64, depth: usize, write: bool) -> f64 {
        let payload = Bytes::from(vec![7u8; CHUNK as usize]);
        let count = CHUNK.min(self.c.iounit());
        let start = Instant::now();
        let (mut sent, mut done, mut in_flight) = (0u64, 0u64, 0usize);
        while done < total {
            while in_flight < depth && sent < total {
                let msg: Msg = if write {
                    Twrite {
                        fid,
                        offset: sent % (64 << 20),
                        data: Data(payload.slice(..count as usize)),
                    }
                    .into()
                } else {
                    Tread {
                        fid,
                        offset: sent % (64 << 20),
                        count,
                    }
                    .into()
                };
                self.c.send(msg).expect("send");
                sent += count as u64;
                in_flight += 1;
            }
            self.send_all().await;
            let m = self.recv().await;
            assert!(
                matches!(m, Msg::Rread(_) | Msg::Rwrite(_)),
                "{m:?} (count {count}, msize {})",
                self.c.msize()
            );
            done += count as u64;
            in_flight -= 1;
        }
        total as f64 / start.elapsed().as_secs_f64() / 1e6
    }

    /// Round trips of a small request; returns (p50, p99) in microseconds.
    async fn latency(&mut self, fid: Fid, n: usize) -> (f64, f64) {
        let mut t: Vec<f64> = Vec::with_capacity(n);
        for _ in 0..n {
            let s = Instant::now();
            let m = self
                .call(Tgetattr {
                    fid,
                    request_mask: 0x7ff,
                })
                .await;
            assert!(matches!(m, Msg::Rgetattr(_)), "{m:?}");
            t.push(s.elapsed().as_secs_f64() * 1e6);
        }
        t.sort_by(f64::total_cmp);
        (t[n / 2], t[n * 99 / 100])
    }
}

struct Figures {
    read_pipelined: f64,
    write_pipelined: f64,
    read_sync: f64,
    write_sync: f64,
    p50: f64,
    p99: f64,
}

impl Figures {
    /// Each figure's median over `runs`.
    fn median(runs: &[Figures]) -> Figures {
        let med = |f: fn(&Figures) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            let n = v.len();
            // An even count takes the mean of the middle two (not the better one).
            (v[(n - 1) / 2] + v[n / 2]) / 2.0
        };
        Figures {
            read_pipelined: med(|f| f.read_pipelined),
            write_pipelined: med(|f| f.write_pipelined),
            read_sync: med(|f| f.read_sync),
            write_sync: med(|f| f.write_sync),
            p50: med(|f| f.p50),
            p99: med(|f| f.p99),
        }
    }
}

async fn measure(addr: &Addr, aname: &str, mb: u64) -> Figures {
    let mut c = Conn::open(addr, aname).await;
    let w = c
        .call(Twalk {
            fid: Fid(0),
            newfid: Fid(1),
            wnames: WalkNames::new::<[&str; 0], &str>([]).unwrap(),
        })
        .await;
    assert!(matches!(w, Msg::Rwalk(_)));
    static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "bench{}",
        RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let m = c
        .call(Tlcreate {
            fid: Fid(1),
            name: name.into(),
            flags: lflags::RDWR,
            mode: 0o644,
            gid: 0,
        })
        .await;
    assert!(matches!(m, Msg::Rlcreate(_)), "{m:?}");
    let total = mb << 20;
    // Fill 64 MiB first so reads have data.
    c.stream(Fid(1), 64 << 20, 8, true).await;
    let write_pipelined = c.stream(Fid(1), total, 8, true).await;
    let read_pipelined = c.stream(Fid(1), total, 8, false).await;
    let read_sync = c.stream(Fid(1), total / 4, 1, false).await;
    let write_sync = c.stream(Fid(1), total / 4, 1, true).await;
    let (p50, p99) = c.latency(Fid(1), 5000).await;
    // Remove the file: the next measurement starts from an equal tree.
    let _ = c.call(Tremove { fid: Fid(1) }).await;
    Figures {
        read_pipelined,
        write_pipelined,
        read_sync,
        write_sync,
        p50,
        p99,
    }
}

/// A process the bench started: killed when dropped, so a failed measurement leaves none behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `cmd` quietly (its stdout and stderr discarded).
fn spawn(cmd: &mut Command) -> Running {
    start(cmd.stderr(Stdio::null()))
}

/// Start `cmd`, its stdout discarded.
fn start(cmd: &mut Command) -> Running {
    Running(
        cmd.stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}")),
    )
}

fn wait_listening(addr: &Addr) {
    let start = Instant::now();
    loop {
        let ok = match addr {
            Addr::Tcp(a) => std::net::TcpStream::connect(a).is_ok(),
            Addr::Unix(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
            Addr::Stdio => true,
        };
        if ok {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{addr} never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// socat relaying `listen` to `target`, configured fairly for 9P.
fn socat(listen: &Addr, target: &Addr) -> Running {
    let side = |a: &Addr, l: bool| match (a, l) {
        (Addr::Tcp(x), true) => format!(
            "TCP-LISTEN:{},reuseaddr,fork,nodelay",
            x.rsplit_once(':').unwrap().1
        ),
        (Addr::Tcp(x), false) => format!("TCP:{x},nodelay"),
        (Addr::Unix(p), true) => format!("UNIX-LISTEN:{},fork,unlink-early", p.display()),
        (Addr::Unix(p), false) => format!("UNIX-CONNECT:{}", p.display()),
        _ => unreachable!(),
    };
    let child = spawn(Command::new("socat").args([
        "-b",
        "1048576",
        &side(listen, true),
        &side(target, false),
    ]));
    wait_listening(listen);
    child
}

/// The splice(2) relay (the yardstick: no hop does better) from `listen` to `target`.
fn splice_relay(listen: &Addr, target: &Addr) -> Running {
    let side = |a: &Addr| match a {
        Addr::Tcp(x) => x.clone(),
        Addr::Unix(p) => p.display().to_string(),
        Addr::Stdio => unreachable!(),
    };
    // Its complaints (a pipe it could not size) are the bench's.
    let child = start(
        Command::new(env!("CARGO_BIN_EXE_splice-relay"))
            .arg(side(listen))
            .arg(side(target)),
    );
    wait_listening(listen);
    child
}

/// The runtimes the proxy runs on, as `runtime-proxy --runtime` names them; `+metrics`: with
/// its sessions counting into metrics (what `p9persist proxy --metrics` does); `+mux`: a mux
/// of one service, the backend (what `p9persist mux` does with one healthy server).
const RUNTIMES: [&str; 6] = [
    "tokio",
    "tokio+metrics",
    "tokio+mux",
    "std",
    "smol",
    "async-std",
];

/// A proxy process on `runtime`, listening on `listen`.
fn proxy(runtime: &str, listen: &Addr, backend: &Addr, aname: &str) -> Running {
    let (name, extra) = runtime.split_once('+').unwrap_or((runtime, ""));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runtime-proxy"));
    cmd.args(["--runtime", name, "--listen"])
        .arg(listen.to_string());
    match extra {
        "mux" => {
            let aname = match aname {
                "" => String::new(),
                a => format!(" aname {a}"),
            };
            cmd.arg("--service")
                .arg(format!("bench addr {backend}{aname}"));
        }
        "metrics" => {
            cmd.arg("--server")
                .arg(backend.to_string())
                .arg("--count-metrics");
        }
        _ => {
            cmd.arg("--server").arg(backend.to_string());
        }
    }
    let child = spawn(&mut cmd);
    wait_listening(listen);
    child
}

fn print(name: &str, f: &Figures) {
    println!(
                "  {name:<13} read {:>6.0}  write {:>6.0}  sync read {:>6.0}  sync write {:>6.0} MB/s   getattr p50 {:>6.1} µs  p99 {:>6.1} µs",
        f.read_pipelined, f.write_pipelined, f.read_sync, f.write_sync, f.p50, f.p99
    );
}

fn ratios(runtime: &str, label: &str, b: &Figures, x: &Figures) {
    println!(
                "  {runtime:>13}/{label:<7} read {:.2}  write {:.2}  sync read {:.2}  sync write {:.2}  latency p50 {:.2} (lower is better)",
        b.read_pipelined / x.read_pipelined,
        b.write_pipelined / x.write_pipelined,
        b.read_sync / x.read_sync,
        b.write_sync / x.write_sync,
        b.p50 / x.p50
    );
}

async fn compare(
    title: &str,
    server: &Addr,
    aname: &str,
    tmp: &std::path::Path,
    unix: bool,
    mb: u64,
    rounds: usize,
) {
    let (p_addr, s_addr, l_addr) = if unix {
        (
            Addr::Unix(tmp.join(format!("proxy-{}.sock", free_port()))),
            Addr::Unix(tmp.join(format!("socat-{}.sock", free_port()))),
            Addr::Unix(tmp.join(format!("splice-{}.sock", free_port()))),
        )
    } else {
        (
            Addr::Tcp(format!("127.0.0.1:{}", free_port())),
            Addr::Tcp(format!("127.0.0.1:{}", free_port())),
            Addr::Tcp(format!("127.0.0.1:{}", free_port())),
        )
    };
    // Killed when this returns (or a measurement fails).
    let mut children = vec![socat(&s_addr, server), splice_relay(&l_addr, server)];
    // Every path up at once, then measured in paired rounds, the order rotated each round, so
    // the machine's drift falls on all of them alike; each figure is the median of its rounds.
    let mut paths: Vec<(&str, Addr)> = vec![("direct", server.clone())];
    for (k, runtime) in RUNTIMES.iter().enumerate() {
        let listen = match &p_addr {
            Addr::Unix(p) => Addr::Unix(p.with_extension(format!("{k}"))),
            _ => Addr::Tcp(format!("127.0.0.1:{}", free_port())),
        };
        children.push(proxy(runtime, &listen, server, aname));
        paths.push((runtime, listen));
    }
    paths.push(("socat", s_addr));
    paths.push(("splice", l_addr));
    let mut runs: Vec<Vec<Figures>> = paths.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for k in 0..paths.len() {
            let i = (k + round) % paths.len();
            runs[i].push(measure(&paths[i].1, aname, mb).await);
        }
    }
    println!("{title}");
    let figures: Vec<(&str, Figures)> = paths
        .iter()
        .zip(&runs)
        .map(|((name, _), runs)| (*name, Figures::median(runs)))
        .collect();
    for (name, f) in &figures {
        print(name, f);
    }
    let find = |name: &str| &figures.iter().find(|(n, _)| *n == name).unwrap().1;
    let (direct, socat, splice) = (find("direct"), find("socat"), find("splice"));
    for runtime in RUNTIMES {
        let f = find(runtime);
        ratios(runtime, "direct", f, direct);
        ratios(runtime, "socat", f, socat);
        ratios(runtime, "splice", f, splice);
    }
    ratios("splice", "direct", splice, direct);
    // What counting metrics costs: the same runtime with and without.
    ratios("metrics", "none", find("tokio+metrics"), find("tokio"));
    // What the mux costs over the proxy with one healthy server.
    ratios("mux", "proxy", find("tokio+mux"), find("tokio"));
}

fn main() {
    let mb: u64 = std::env::var("BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tmp = std::env::temp_dir().join(format!("p9persist-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    rt.block_on(async {
        println!(
            "forwarding benchmark: {mb} MiB per figure, 1 MiB requests, 8 in flight when pipelined; \
             median of {rounds} paired rounds\n"
        );
        // The ramfs server, on TCP and on a unix socket: a process of its own each, as a user
        // runs it (in this process it would share the client's runtime and cores).
        let tcp = Addr::Tcp(format!("127.0.0.1:{}", free_port()));
        let unix = Addr::Unix(tmp.join("ramfs.sock"));
        let mut ramfs: Vec<Running> = Vec::new();
        for addr in [&tcp, &unix] {
            ramfs.push(spawn(
                Command::new(env!("CARGO_BIN_EXE_ramfs-server"))
                    .arg(addr.to_string())
                    .arg(MSIZE.to_string()),
            ));
            wait_listening(addr);
        }
        compare("ramfs, TCP loopback", &tcp, "", &tmp, false, mb, rounds).await;
        compare("ramfs, unix socket", &unix, "", &tmp, true, mb, rounds).await;
        drop(ramfs);
                // diod, listening on both.
        let export = tmp.join("export");
        std::fs::create_dir_all(&export).unwrap();
        let port = free_port();
        let diod_sock = tmp.join("diod.sock");
        let diod = spawn(
            Command::new("/usr/sbin/diod")
                .args(["-f", "-n", "-c", "/dev/null", "-L", "stderr", "-l", &format!("127.0.0.1:{port}"), "-l"])
                .arg(&diod_sock)
                .arg("-e")
                .arg(&export),
        );
        let diod_tcp = Addr::Tcp(format!("127.0.0.1:{port}"));
        let diod_unix = Addr::Unix(diod_sock);
        wait_listening(&diod_tcp);
        wait_listening(&diod_unix);
        let aname = export.to_string_lossy().into_owned();
        compare("diod, TCP loopback", &diod_tcp, &aname, &tmp, false, mb, rounds).await;
        compare("diod, unix socket", &diod_unix, &aname, &tmp, true, mb, rounds).await;
        drop(diod);
    });
    let _ = std::fs::remove_dir_all(&tmp);
}
