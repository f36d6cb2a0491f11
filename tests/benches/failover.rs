//! How long a mux takes to fail over: two real diods exporting copies of one file, a mux of
//! both (the tokio runtime), and a client with a getattr in flight on a walked fid when the
//! serving diod is SIGKILLed; the time from the kill to the reply, served by the other diod.
//! The killed diod is restarted before the next round (which kills the other). 30 rounds
//! (`FAILOVER_ROUNDS`); prints the median, the 90th percentile and the worst.
//!
//!   cargo bench -p tests --bench failover      (needs diod: scripts/test.sh installs it)

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use p9_core::*;
use tests::hostile::RawClient;
use tests::servers::{announced_tcp, free_port, spawn_diod};

fn main() {
    let rounds: usize = std::env::var("FAILOVER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let base = std::env::temp_dir().join(format!("p9persist-failover-{}", std::process::id()));
    let names = ["one", "two"];
    let mut diods: Vec<(u16, std::path::PathBuf, Child)> = names
        .iter()
        .map(|n| {
            let dir = base.join(n);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("f"), b"a copy").unwrap();
            let port = free_port();
            let child = spawn_diod(port, &dir);
            (port, dir, child)
        })
        .collect();
    let log = base.join("mux.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runtime-proxy"));
    cmd.args(["--runtime", "tokio", "--listen", "127.0.0.1:0"]);
    for (n, (port, dir, _)) in names.iter().zip(&diods) {
        cmd.arg("--service").arg(format!(
            "{n} addr tcp!127.0.0.1!{port} aname {}",
            dir.display()
        ));
    }
    let mut mux = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("runtime-proxy starts");
    let addr = announced_tcp(&mut mux);
    let mut c = RawClient::connect(&addr, Dialect::DotL);
    c.attach(65536);
    let walk = Twalk {
        fid: Fid(0),
        newfid: Fid(1),
        wnames: WalkNames::new([&b"f"[..]]).unwrap(),
    };
    assert!(matches!(c.call(2, walk), Msg::Rwalk(_)));
    let getattr = Tgetattr {
        fid: Fid(1),
        request_mask: 0x7ff,
    };
    let serving = || -> usize {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let last = text
            .lines()
            .rev()
            .find_map(|l| l.split("connected to ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("");
        names
            .iter()
            .position(|n| *n == last)
            .expect("a connection logged")
    };
    let mut times = Vec::new();
    for round in 0..rounds {
        let victim = serving();
        c.send(3, getattr.clone());
        let killed = Instant::now();
        let (port, dir, child) = &mut diods[victim];
        let _ = child.kill();
        let reply = c.recv().expect("the getattr completes");
        let took = killed.elapsed();
        assert!(
            matches!(reply.msg, Msg::Rgetattr(_)),
            "round {round}: {:?}",
            reply.msg
        );
        let _ = child.wait();
        *child = spawn_diod(*port, dir);
        assert_ne!(serving(), victim, "round {round}: the session moved");
        times.push(took);
        eprintln!(
            "round {round:>2}: {} killed, served by {} after {:.1} ms",
            names[victim],
            names[1 - victim],
            took.as_secs_f64() * 1e3
        );
        // The restarted one is past its avoidance before it is needed again.
        std::thread::sleep(Duration::from_millis(600));
    }
    for (_, _, mut child) in diods {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = mux.kill();
    let _ = mux.wait();
    let _ = std::fs::remove_dir_all(&base);
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "mux failover over {rounds} kills (backend SIGKILLed → request served by the other): median {:.1} ms, p90 {:.1} ms, worst {:.1} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    );
}
