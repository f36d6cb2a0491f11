//! Creates, mkdirs, symlinks, links, removes and renames in flight when a real diod is
//! lost, through `p9persist proxy`. Never seen by the server (frozen with SIGSTOP, then
//! SIGKILLed and restarted), each is sent again and ends as the client asked, run exactly once
//! on disk. Run, with its reply lost with the connection, each runs once and is answered as
//! done only where the server proves it was this request (a hard link to the session's own
//! file); the rest fail with EIO, since another client could have made the same change. An
//! exclusive create of a name that exists is never answered as done. With `--ambiguous fail`
//! they fail with EIO, as styxpersist's rule says, and nothing is sent again.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use p9_core::*;
use runtime_tokio::client::NineP;
use runtime_tokio::Addr;

/// The export before the requests: files to unlink, rename, remove and link to.
fn populate(export: &Path) {
    for name in ["from", "doomed", "target"] {
        std::fs::write(export.join(name), name).unwrap();
    }
}

/// Attach (fid 0), clone the root (fid 1, the directory the create makes its file in), walk to
/// `doomed` (fid 2), `target` (fid 3) and `from` (fid 4).
async fn setup(c: &mut NineP, export: &Path) {
    attach_export(c, export).await;
    let walks = [
        (1, &[][..]),
        (2, &["doomed"][..]),
        (3, &["target"][..]),
        (4, &["from"][..]),
    ];
    for (fid, names) in walks {
        let walk = Twalk {
            fid: Fid(0),
            newfid: Fid(fid),
            wnames: WalkNames::new(names).unwrap(),
        };
        let r = c.call(walk).await.unwrap().msg;
        assert!(matches!(r, Msg::Rwalk(_)), "{r:?}");
    }
}

/// The requests in flight together, and the reply each must get.
fn requests() -> Vec<(Msg, MsgType)> {
    vec![
        (
            Tlcreate {
                fid: Fid(1),
                name: "made".into(),
                flags: lflags::RDWR | lflags::CREATE | lflags::EXCL,
                mode: 0o644,
                gid: 0,
            }
            .into(),
            MsgType::Rlcreate,
        ),
        (
            Tmkdir {
                dfid: Fid(0),
                name: "dir".into(),
                mode: 0o755,
                gid: 0,
            }
            .into(),
            MsgType::Rmkdir,
        ),
        (
            Tsymlink {
                fid: Fid(0),
                name: "sym".into(),
                symtgt: "target".into(),
                gid: 0,
            }
            .into(),
            MsgType::Rsymlink,
        ),
        (
            Tlink {
                dfid: Fid(0),
                fid: Fid(3),
                name: "hard".into(),
            }
            .into(),
            MsgType::Rlink,
        ),
        // diod answers Tunlinkat and Trenameat with EOPNOTSUPP (Linux then uses Tremove and
        // Trename, as here).
        (
            Trename {
                fid: Fid(4),
                dfid: Fid(0),
                name: "to".into(),
            }
            .into(),
            MsgType::Rrename,
        ),
        (Tremove { fid: Fid(2) }.into(), MsgType::Rremove),
    ]
}

/// The export as the requests leave it, each done once (the created file holding `made`).
fn check_done(export: &Path, made: &[u8]) {
    use std::os::unix::fs::MetadataExt;
    assert!(std::fs::symlink_metadata(export.join("made"))
        .unwrap()
        .is_file());
    assert_eq!(std::fs::read(export.join("made")).unwrap(), made);
    assert!(export.join("dir").is_dir());
    assert_eq!(
        std::fs::read_link(export.join("sym")).unwrap(),
        Path::new("target")
    );
    let (hard, target) = (
        std::fs::metadata(export.join("hard")).unwrap(),
        std::fs::metadata(export.join("target")).unwrap(),
    );
    assert_eq!(hard.ino(), target.ino());
    assert_eq!(target.nlink(), 2, "linked once");
    assert!(!export.join("from").exists());
    assert_eq!(std::fs::read(export.join("to")).unwrap(), b"from");
    assert!(!export.join("doomed").exists());
}

/// The export untouched by the requests.
fn check_untouched(export: &Path) {
    for name in ["made", "dir", "sym", "hard", "to"] {
        assert!(
            std::fs::symlink_metadata(export.join(name)).is_err(),
            "{name} made"
        );
    }
    for name in ["from", "doomed"] {
        assert!(export.join(name).exists(), "{name} gone");
    }
}

fn signal(server: &Running, sig: &str) {
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

/// Freeze `server` and wait until every one of its threads is stopped (a signal is delivered
/// a little later than `kill` returns).
fn freeze(server: &Running) {
    signal(server, "-STOP");
    let tasks = format!("/proc/{}/task", server.0.id());
    let stopped = || {
        std::fs::read_dir(&tasks).unwrap().all(|t| {
            let stat = std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap_or_default();
            // The state follows the command name in parentheses.
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('T'))
        })
    };
    let start = std::time::Instant::now();
    while !stopped() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "diod never stopped"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Bytes the proxy has written to servers, from its metrics endpoint on `port`.
fn to_server(port: u16) -> f64 {
    let scrape = http_get(port, "/metrics").1;
    sample(
        &scrape,
        "p9persist_forwarded_bytes_total{direction=\"to_server\"}",
    )
}

/// Every request's effect is on disk (`check_done` says whether each is right).
fn all_made(export: &Path) -> bool {
    let made = ["made", "dir", "sym", "hard", "to"];
    made.iter()
        .all(|n| std::fs::symlink_metadata(export.join(n)).is_ok())
        && !export.join("from").exists()
        && !export.join("doomed").exists()
}

/// Freeze diod, send every request, let them reach it, SIGKILL and restart it: the requests
/// were truly in flight and never ran. The replies, the export, the proxy's log and a scrape
/// of its metrics.
fn frozen_then_killed(test: &str, extra: &[&str]) -> (Vec<Msg>, Scratch, String, String) {
    let msgs = requests().into_iter().map(|(m, _)| m).collect();
    frozen_then_killed_with(test, extra, Vec::new(), msgs)
}

/// `frozen_then_killed` with `before` sent (each must succeed) after the set-up and before the
/// freeze, and `msgs` in flight.
fn frozen_then_killed_with(
    test: &str,
    extra: &[&str],
    before: Vec<Msg>,
    msgs: Vec<Msg>,
) -> (Vec<Msg>, Scratch, String, String) {
    let scratch = Scratch::new(&format!("outcomes-{test}"));
    let export = scratch.0.join("export");
    std::fs::create_dir_all(&export).unwrap();
    populate(&export);
    let (diod_port, port, metrics) = (free_port(), free_port(), free_port());
    let mut server = diod(diod_port, &export);
    let log = scratch.0.join("log");
    let metrics_arg = metrics.to_string();
    let args: Vec<&str> = ["--metrics", &metrics_arg]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let _proxy = proxy(port, diod_port, &log, &args);
    let rt = runtime();
    let addr = Addr::Tcp(format!("127.0.0.1:{port}"));
    let (mut c, tags, sent) = rt.block_on(async {
        let mut c = NineP::connect(&addr, 65536, Dialect::DotL).await.unwrap();
        setup(&mut c, &export).await;
        for m in before {
            let r = c.call(m.clone()).await.unwrap().msg;
            assert!(!matches!(r, Msg::Rlerror(_)), "{m:?}: {r:?}");
        }
        freeze(&server);
        let before = to_server(metrics);
        let size: usize = msgs
            .iter()
            .map(|m| Fcall::new(1, m.clone()).to_frame().unwrap().len())
            .sum();
        let tags = c.send(msgs).await.unwrap();
        (c, tags, before + size as f64)
    });
    // Every request is in diod's socket before the kill (the proxy has written them all).
    let start = std::time::Instant::now();
    while to_server(metrics) < sent {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the proxy never sent the requests"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(to_server(metrics), sent, "only the requests went to diod");
    signal(&server, "-KILL");
    drop(server);
    server = diod(diod_port, &export);
    let replies = rt.block_on(async {
        let got = tokio::time::timeout(Duration::from_secs(20), c.collect(&tags)).await;
        got.expect("every request answered").unwrap()
    });
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    let scrape = http_get(metrics, "/metrics").1;
    let replies = replies.into_iter().map(|r| r.msg).collect();
    (replies, scratch, text, scrape)
}

#[test]
fn in_flight_at_a_kill_each_runs_once_and_succeeds() {
    let (replies, scratch, log, scrape) = frozen_then_killed("kill", &[]);
    for ((_, want), got) in requests().iter().zip(&replies) {
        assert_eq!(got.msg_type(), *want, "{got:?}\nlog:\n{log}");
    }
    check_done(&scratch.0.join("export"), b"");
    let resent = log.matches("shows it not done: sent again").count();
    assert_eq!(resent, requests().len(), "log:\n{log}");
    let not_done = sample(
        &scrape,
        "p9persist_outcomes_resolved_total{outcome=\"not_done\"}",
    );
    assert_eq!(not_done as usize, requests().len());
    assert_eq!(
        sample(
            &scrape,
            "p9persist_requests_failed_total{reason=\"not_completed\"}"
        ),
        0.0
    );
}

#[test]
fn ambiguous_fail_fails_them_with_eio_as_before() {
    let (replies, scratch, log, scrape) = frozen_then_killed("fail", &["--ambiguous", "fail"]);
    for got in &replies {
        assert_eq!(*got, Rlerror { ecode: errno::EIO }.into(), "log:\n{log}");
    }
    check_untouched(&scratch.0.join("export"));
    assert!(!log.contains("sent again"), "log:\n{log}");
    let failed = sample(
        &scrape,
        "p9persist_requests_failed_total{reason=\"not_completed\"}",
    );
    assert_eq!(failed as usize, requests().len());
}

/// A relay between the proxy and diod that can go deaf: it keeps passing requests to diod but
/// drops diod's replies, then cuts both connections — the server ran what it was sent, and its
/// answers were lost with the link.
struct Relay {
    port: u16,
    deaf: Arc<AtomicBool>,
    /// Whole replies dropped while deaf.
    dropped: Arc<AtomicUsize>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    /// A relay to `server` on a port of its own choosing (no race for a free one).
    fn start(server: u16) -> Relay {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let relay = Relay {
            port: listener.local_addr().unwrap().port(),
            deaf: Arc::new(AtomicBool::new(false)),
            dropped: Arc::new(AtomicUsize::new(0)),
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        let (deaf, conns) = (relay.deaf.clone(), relay.conns.clone());
        let dropped = relay.dropped.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", server)) else {
                    continue;
                };
                deaf.store(false, Ordering::SeqCst);
                conns
                    .lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), upstream.try_clone().unwrap()]);
                let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                std::thread::spawn(move || pass(client, upstream, None));
                let deaf = (deaf.clone(), dropped.clone());
                std::thread::spawn(move || pass(u2, c2, Some(deaf)));
            }
        });
        relay
    }

    /// Drop the server's replies from now on.
    fn go_deaf(&self) {
        self.deaf.store(true, Ordering::SeqCst);
    }

    /// Cut every connection.
    fn cut(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Copy `from` to `to` until either side ends, dropping what comes while `deaf` is set and
/// counting the whole frames dropped (they start at a frame boundary: nothing is in flight
/// when the relay goes deaf).
fn pass(mut from: TcpStream, mut to: TcpStream, deaf: Option<(Arc<AtomicBool>, Arc<AtomicUsize>)>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut held = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((_, dropped)) = deaf.as_ref().filter(|(d, _)| d.load(Ordering::SeqCst)) {
            held.extend_from_slice(&buf[..n]);
            while held.len() >= 4 {
                let size = u32::from_le_bytes(held[..4].try_into().unwrap()) as usize;
                if size < 4 || held.len() < size {
                    break;
                }
                held.drain(..size);
                dropped.fetch_add(1, Ordering::SeqCst);
            }
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

#[test]
fn run_but_unanswered_each_is_done_only_where_the_server_proves_it() {
    let scratch = Scratch::new("outcomes-deaf");
    let export = scratch.0.join("export");
    std::fs::create_dir_all(&export).unwrap();
    populate(&export);
    // diod runs the requests at once, in any order, and numbers files by inode: removed
    // first, `doomed` could hand its inode to `made`, and a file found under the number of a
    // file a fid stood for cannot be told from a name taken before (the proxy then fails the
    // create, rightly). Held open, `doomed` keeps its inode.
    let _doomed = std::fs::File::open(export.join("doomed")).unwrap();
    let diod_port = free_port();
    let _server = diod(diod_port, &export);
    let relay = Relay::start(diod_port);
    let port = free_port();
    let log = scratch.0.join("log");
    let _proxy = proxy(port, relay.port, &log, &[]);
    let rt = runtime();
    let addr = Addr::Tcp(format!("127.0.0.1:{port}"));
    let replies = rt.block_on(async {
        let mut c = NineP::connect(&addr, 65536, Dialect::DotL).await.unwrap();
        setup(&mut c, &export).await;
        relay.go_deaf();
        let msgs = requests().into_iter().map(|(m, _)| m).collect();
        let tags = c.send(msgs).await.unwrap();
        // diod runs them; its replies go nowhere; then the link is cut.
        let start = std::time::Instant::now();
        while !all_made(&export) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "diod never ran them"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        check_done(&export, b"");
        // Every reply written (and dropped) before the cut: diod dies of SIGPIPE writing to a
        // connection shut down under it.
        while relay.dropped.load(Ordering::SeqCst) < requests().len() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "diod never answered them"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        relay.cut();
        let got = tokio::time::timeout(Duration::from_secs(20), c.collect(&tags)).await;
        let log = || std::fs::read_to_string(&log).unwrap_or_default();
        got.unwrap_or_else(|_| panic!("every request answered; log:\n{}", log()))
            .unwrap()
    });
    let text = std::fs::read_to_string(&log).unwrap();
    // Only the hard link is proven: its new name leads to the session's own file. A name made,
    // gone or moved could be another client's doing, so those say "possibly not completed".
    for ((msg, want), got) in requests().iter().zip(&replies) {
        match msg {
            Msg::Tlink(_) => assert_eq!(got.msg.msg_type(), *want, "{:?}\nlog:\n{text}", got.msg),
            _ => assert_eq!(
                got.msg,
                Rlerror { ecode: errno::EIO }.into(),
                "{msg:?}\nlog:\n{text}"
            ),
        }
    }
    // Run once, not again: had any run twice, the export would show it (or diod would have
    // failed it with EEXIST, ENOENT).
    check_done(&export, b"");
    assert_eq!(
        text.matches("shows it done: answered as done").count(),
        1,
        "log:\n{text}"
    );
    assert_eq!(
        text.matches("what the server shows does not tell whether it ran")
            .count(),
        requests().len() - 1,
        "log:\n{text}"
    );
}

/// The lock idiom (the case that made two holders of one lock): the client makes `lock` with
/// O_EXCL and `lockdir` with mkdir, lets the file's fid go, and later sends a second O_EXCL
/// create of `lock` and a second mkdir of `lockdir`; diod is frozen with them unread, killed
/// and restarted. The names are there — made before, not by these requests — so neither is
/// answered as done: EEXIST (the server's own answer) or EIO, and nothing is made twice.
#[test]
fn a_second_exclusive_create_of_a_name_that_exists_is_never_done() {
    let excl = |fid: u32| Tlcreate {
        fid: Fid(fid),
        name: "lock".into(),
        flags: lflags::RDWR | lflags::CREATE | lflags::EXCL,
        mode: 0o644,
        gid: 0,
    };
    let mkdir = Tmkdir {
        dfid: Fid(0),
        name: "lockdir".into(),
        mode: 0o755,
        gid: 0,
    };
    let clone = |newfid: u32| Twalk {
        fid: Fid(0),
        newfid: Fid(newfid),
        wnames: WalkNames::new::<[&str; 0], &str>([]).unwrap(),
    };
    let before: Vec<Msg> = vec![
        clone(10).into(),
        excl(10).into(),
        Tclunk { fid: Fid(10) }.into(),
        mkdir.clone().into(),
        clone(11).into(),
    ];
    let (replies, scratch, log, _) =
        frozen_then_killed_with("lock", &[], before, vec![excl(11).into(), mkdir.into()]);
    for got in &replies {
        assert!(
            matches!(got, Msg::Rlerror(e) if e.ecode == errno::EIO || e.ecode == errno::EEXIST),
            "answered {got:?}, and the name was there before\nlog:\n{log}"
        );
    }
    let export = scratch.0.join("export");
    assert!(export.join("lock").is_file() && export.join("lockdir").is_dir());
    assert!(!log.contains("answered as done"), "log:\n{log}");
}
