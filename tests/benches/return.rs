//! How fast clients get their service back after a server restart (issue 10, item 10): a real
//! diod is SIGKILLed and restarted on the same port 50 times (`RETURN_ROUNDS`) with random
//! gaps of 0.2–3 s, under a client that keeps a fid and a request in flight through the tokio
//! proxy; for each restart, the time from "diod accepts connections again" to "the client's
//! request completes". Prints the median, the 90th percentile and the worst.
//!
//!   cargo bench -p tests --bench return        (needs diod: scripts/test.sh installs it)

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use p9_core::*;
use tests::hostile::RawClient;
use tests::servers::{announced_tcp, free_port, start_diod};

/// A tiny generator for the gaps (no dependency for one number a round).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn main() {
    let rounds: usize = std::env::var("RETURN_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dir = std::env::temp_dir().join(format!("p9persist-return-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), b"held").unwrap();
    let port = free_port();
    let mut server = start_diod(port, &dir);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_runtime-proxy"))
        .args(["--runtime", "tokio", "--listen", "127.0.0.1:0", "--server"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("runtime-proxy starts");
    let addr = announced_tcp(&mut proxy);
    let mut c = RawClient::connect(&addr, Dialect::DotL);
    c.attach_as(65536, "root", &dir.to_string_lossy());
    let walk = Twalk {
        fid: Fid(0),
        newfid: Fid(1),
        wnames: WalkNames::new([&b"f"[..]]).unwrap(),
    };
    assert!(matches!(c.call(2, walk), Msg::Rwalk(_)));
    let open = Tlopen {
        fid: Fid(1),
        flags: lflags::RDONLY,
    };
    assert!(matches!(c.call(3, open), Msg::Rlopen(_)));
    let read = Tread {
        fid: Fid(1),
        offset: 0,
        count: 4,
    };
    let mut rng = Lcg(0x5eed);
    let mut returns = Vec::new();
    for round in 0..rounds {
        let _ = server.kill();
        let _ = server.wait();
        // The client's request waits through the outage.
        c.send(4, read.clone());
        let gap = Duration::from_secs_f64(0.2 + 2.8 * rng.next());
        std::thread::sleep(gap);
        server = start_diod(port, &dir);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let up = Instant::now();
        let r = c.recv().expect("the read completes");
        let back = up.elapsed();
        match r.msg {
            Msg::Rread(d) if &d.data.0[..] == b"held" => {}
            other => panic!("round {round}: {other:?}"),
        }
        returns.push(back);
        eprintln!(
            "round {round:>2}: down {:>5.0} ms, back {:>4.0} ms after diod listened",
            gap.as_secs_f64() * 1e3,
            back.as_secs_f64() * 1e3
        );
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = proxy.kill();
    let _ = proxy.wait();
    let _ = std::fs::remove_dir_all(&dir);
    returns.sort();
    let at = |q: f64| returns[((returns.len() - 1) as f64 * q).round() as usize];
    println!(
        "return after a restart over {rounds} restarts (gaps 0.2-3 s): median {:.0} ms, p90 {:.0} ms, worst {:.0} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    );
}
