//! The session against servers that do not answer as the manuals say: a scripted hostile server
//! (ramfs behind a script that rewrites, withholds or delays its replies) and the tokio proxy
//! as a user runs it. One test per rule of issue 10: errors in any shape, poison pills,
//! msize, hung servers, replies that do not fit their requests, late replies after Rflush,
//! 9P2000 error strings, clients that never speak, and rebuild failures that tell the truth.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use p9_core::*;
use tests::hostile::{raw, Answer, Hostile, RawClient};
use tests::servers::announced;

struct Proxy {
    child: Child,
    addr: String,
    log: std::path::PathBuf,
}

impl Proxy {
    fn start(server: &Hostile, extra: &[&str]) -> Proxy {
        let log = std::env::temp_dir().join(format!(
            "p9persist-hostile-{}-{}.log",
            std::process::id(),
            server.addr.port()
        ));
        let mut child = Command::new(env!("CARGO_BIN_EXE_runtime-proxy"))
            .args(["--runtime", "tokio", "--listen", "127.0.0.1:0", "--server"])
            .arg(server.addr.to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("runtime-proxy starts");
        // tcp!HOST!PORT as the proxy names it; HOST:PORT to connect.
        let addr = announced(&mut child)
            .trim_start_matches("tcp!")
            .replacen('!', ":", 1);
        Proxy { child, addr, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn client(&self, dialect: Dialect) -> RawClient {
        RawClient::connect(&self.addr, dialect)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn walk(fid: u32, newfid: u32, names: &[&[u8]]) -> Twalk {
    Twalk {
        fid: Fid(fid),
        newfid: Fid(newfid),
        wnames: WalkNames::new(names).unwrap(),
    }
}

fn getattr(fid: u32) -> Tgetattr {
    Tgetattr {
        fid: Fid(fid),
        request_mask: 0x7ff,
    }
}

/// Item 1: a .L server that answers a failed walk with Rerror carrying a bare errno (as
/// nfs-ganesha does), or a message and an errno, is answering with an error: the client gets
/// Rlerror with that errno, and the link stays. A 9P2000 client gets Rlerror-shaped errors as
/// messages Linux maps back.
#[test]
fn errors_in_any_shape_are_errors() {
    let server = Hostile::start(65536, |s| match (s.msg, s.reply.get(4)) {
        (Msg::Twalk(w), Some(7)) if w.wnames.iter().next() == Some(&b"bare"[..]) => {
            Answer::Send(vec![raw(107, s.tag, &2u32.to_le_bytes())])
        }
        (Msg::Twalk(w), Some(7)) if w.wnames.iter().next() == Some(&b"worded"[..]) => {
            let mut body = 4u16.to_le_bytes().to_vec();
            body.extend_from_slice(b"gone");
            body.extend_from_slice(&2u32.to_le_bytes());
            Answer::Send(vec![raw(107, s.tag, &body)])
        }
        // 9P2000: an Rlerror where an Rerror belongs.
        (Msg::Twalk(w), Some(107)) if w.wnames.iter().next() == Some(&b"numeric"[..]) => {
            Answer::Send(vec![raw(7, s.tag, &2u32.to_le_bytes())])
        }
        _ => Answer::Pass,
    });
    let proxy = Proxy::start(&server, &[]);
    let mut c = proxy.client(Dialect::DotL);
    c.attach(8192);
    for (tag, name) in [(2, &b"bare"[..]), (3, b"worded")] {
        let r = c.call(tag, walk(0, 1, &[name]));
        assert_eq!(r, Msg::Rlerror(Rlerror { ecode: 2 }), "walk to {name:?}");
    }
    assert_eq!(c.call(4, getattr(0)).msg_type(), MsgType::Rgetattr);
    let mut b = proxy.client(Dialect::Base);
    b.attach(8192);
    let r = b.call(2, walk(0, 1, &[b"numeric"]));
    assert_eq!(
        r,
        Msg::Rerror(Rerror {
            ename: "No such file or directory".into(),
            errno: None
        })
    );
    assert_eq!(server.connections(), 2, "an error cost a reconnect");
    assert!(
        !proxy.log().contains("broke the protocol"),
        "{}",
        proxy.log()
    );
}

/// Item 2: a request that the server answers with garbage every time is failed after at most
/// two reconnects (EIO), within 5 s, and the proxy then serves other requests.
#[test]
fn a_poison_pill_is_failed_and_not_resent() {
    let server = Hostile::start(65536, |s| match s.msg {
        Msg::Tgetattr(g) if g.fid.0 == 7 => Answer::Send(vec![raw(121, s.tag, &[])]),
        _ => Answer::Pass,
    });
    let proxy = Proxy::start(&server, &["--backoff-initial-ms", "50"]);
    let mut c = proxy.client(Dialect::DotL);
    c.attach(8192);
    assert_eq!(c.call(2, walk(0, 7, &[])).msg_type(), MsgType::Rwalk);
    let start = Instant::now();
    let r = c.call(3, getattr(7));
    assert_eq!(r, Msg::Rlerror(Rlerror { ecode: errno::EIO }));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(
        server.connections() <= 3,
        "{} connections",
        server.connections()
    );
    assert_eq!(c.call(4, getattr(0)).msg_type(), MsgType::Rgetattr);
    let log = proxy.log();
    assert!(
        log.contains("Tgetattr (tag 3) got an invalid reply"),
        "{log}"
    );
}

/// Item 5 (handled as item 2): an Rwalk with more qids than names, and an Rread longer than
/// asked, are invalid replies, never passed on.
#[test]
fn replies_that_do_not_fit_their_requests_are_not_passed_on() {
    let server = Hostile::start(65536, |s| match s.msg {
        Msg::Twalk(w) if w.wnames.len() == 1 && w.newfid.0 == 9 => {
            let q = Qid {
                typ: 0,
                version: 0,
                path: 5,
            };
            let r = Rwalk {
                wqids: WalkQids::new(&[q, q]).unwrap(),
            };
            Answer::Send(vec![Fcall::new(s.tag, r).to_frame().unwrap()])
        }
        Msg::Tread(r) if r.fid.0 == 3 => {
            let data = Data(vec![7u8; r.count as usize + 10].into());
            Answer::Send(vec![Fcall::new(s.tag, Rread { data }).to_frame().unwrap()])
        }
        _ => Answer::Pass,
    });
    let proxy = Proxy::start(&server, &["--backoff-initial-ms", "50"]);
    let mut c = proxy.client(Dialect::DotL);
    c.attach(8192);
    let r = c.call(2, walk(0, 9, &[b"x"]));
    assert_eq!(r, Msg::Rlerror(Rlerror { ecode: errno::EIO }));
    // A file to read: create it through fid 3.
    assert_eq!(c.call(3, walk(0, 3, &[])).msg_type(), MsgType::Rwalk);
    let create = Tlcreate {
        fid: Fid(3),
        name: "f".into(),
        flags: lflags::RDWR,
        mode: 0o644,
        gid: 0,
    };
    assert_eq!(c.call(4, create).msg_type(), MsgType::Rlcreate);
    let r = c.call(
        5,
        Tread {
            fid: Fid(3),
            offset: 0,
            count: 100,
        },
    );
    assert!(matches!(r, Msg::Rlerror(_)), "{r:?}");
    assert_eq!(c.call(6, getattr(0)).msg_type(), MsgType::Rgetattr);
}

/// Item 3: the msize is the smaller of the client's and the server's; a server offering
/// 4 GiB gets the client's, one offering 0 is refused with an error that names it.
#[test]
fn the_msize_is_the_smaller_and_a_useless_one_is_refused() {
    let huge = Hostile::start(65536, |s| match s.msg {
        Msg::Tversion(_) => Answer::Send(vec![Fcall::new(
            s.tag,
            Rversion {
                msize: u32::MAX,
                version: "9P2000.L".into(),
            },
        )
        .to_frame()
        .unwrap()]),
        _ => Answer::Pass,
    });
    let proxy = Proxy::start(&huge, &[]);
    let mut c = proxy.client(Dialect::DotL);
    assert_eq!(c.attach(8192), 8192);
    let zero = Hostile::start(65536, |s| match s.msg {
        Msg::Tversion(_) => Answer::Send(vec![Fcall::new(
            s.tag,
            Rversion {
                msize: 0,
                version: "9P2000.L".into(),
            },
        )
        .to_frame()
        .unwrap()]),
        _ => Answer::Pass,
    });
    let proxy = Proxy::start(&zero, &["--backoff-initial-ms", "50"]);
    let mut c = proxy.client(Dialect::DotL);
    let r = c.call(
        NOTAG,
        Tversion {
            msize: 8192,
            version: "9P2000.L".into(),
        },
    );
    assert!(matches!(r, Msg::Rerror(_)), "{r:?}");
    let log = proxy.log();
    let named = format!(
        "server tcp!127.0.0.1!{} broke the protocol",
        zero.addr.port()
    );
    assert!(log.contains(&named), "the error names the server: {log}");
    assert!(log.contains("msize 0 is below"), "{log}");
}

/// Item 4: a server that takes requests and never answers, its link alive, is declared hung
/// after --server-timeout; the client's request completes once a working server answers.
#[test]
fn a_hung_server_is_detected_while_the_link_is_up() {
    let server = Hostile::start(65536, |s| match (s.conn, s.msg) {
        (0, Msg::Tgetattr(_)) => Answer::Send(Vec::new()),
        _ => Answer::Pass,
    });
    let proxy = Proxy::start(&server, &["--server-timeout-ms", "5000"]);
    let mut c = proxy.client(Dialect::DotL);
    c.attach(8192);
    let start = Instant::now();
    let r = c.call(2, getattr(0));
    assert_eq!(r.msg_type(), MsgType::Rgetattr);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "{took:?}"
    );
    let log = proxy.log();
    assert!(log.contains("the server sent nothing for"), "{log}");
}

/// Item 6: a reply that comes after the server's Rflush for it is dropped quietly: the client
/// gets exactly the Rflush, and the link stays.
#[test]
fn a_late_reply_after_rflush_is_dropped() {
    let server = Hostile::start(65536, |s| match s.msg {
        Msg::Tgetattr(_) if s.tag == 2 => Answer::Hold,
        _ => Answer::Pass,
    });
    let proxy = Proxy::start(&server, &[]);
    let mut c = proxy.client(Dialect::DotL);
    c.attach(8192);
    c.send(2, getattr(0));
    c.send(3, Tflush { oldtag: 2 });
    let r = c.recv().expect("Rflush");
    assert_eq!((r.tag, r.msg), (3, Msg::Rflush(Rflush {})));
    assert_eq!(c.call(4, getattr(0)).msg_type(), MsgType::Rgetattr);
    assert_eq!(server.connections(), 1, "a late reply cost a reconnect");
    let log = proxy.log();
    assert!(log.contains("after its Rflush"), "{log}");
    assert!(!log.contains("broke the protocol"), "{log}");
}

/// Item 7: 9P2000 has no errno, and Linux maps only the messages of its table: the session's
/// own errors use those (a fid that could not be rebuilt is "fid unknown or out of range",
/// EBADF; the table in the README).
#[test]
fn errors_of_9p2000_are_messages_linux_maps() {
    // The server hangs up after the client opened a directory fid; the directory is gone when
    // it returns, so the fid cannot be rebuilt.
    let server = Hostile::start(65536, |s| match (s.conn, s.msg) {
        (0, Msg::Tstat(st)) if st.fid.0 == 5 => Answer::Close,
        (1.., Msg::Twalk(w)) if w.wnames.iter().next() == Some(&b"d"[..]) => {
            let mut body = 4u16.to_le_bytes().to_vec();
            body.extend_from_slice(b"gone");
            Answer::Send(vec![raw(107, s.tag, &body)])
        }
        _ => Answer::Pass,
    });
    let proxy = Proxy::start(&server, &["--backoff-initial-ms", "50"]);
    let mut c = proxy.client(Dialect::Base);
    c.attach(8192);
    assert_eq!(c.call(2, walk(0, 4, &[])).msg_type(), MsgType::Rwalk);
    let mk = Tcreate {
        fid: Fid(4),
        name: "d".into(),
        perm: dm::DIR | 0o755,
        mode: 0,
        extension: None,
    };
    assert_eq!(c.call(3, mk).msg_type(), MsgType::Rcreate);
    assert_eq!(c.call(4, walk(0, 5, &[b"d"])).msg_type(), MsgType::Rwalk);
    let r = c.call(5, Tstat { fid: Fid(5) });
    assert_eq!(
        r,
        Msg::Rerror(Rerror {
            ename: "fid unknown or out of range".into(),
            errno: None
        })
    );
}

/// Item 8: clients earn a backend — none is dialed before a client's Tversion — and one that
/// never sends it is closed after --version-timeout.
#[test]
fn clients_that_never_speak_hold_no_backend() {
    let server = Hostile::start(65536, |_| Answer::Pass);
    let proxy = Proxy::start(&server, &["--version-timeout-ms", "1500"]);
    let mut idle: Vec<RawClient> = (0..20).map(|_| proxy.client(Dialect::DotL)).collect();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.connections(),
        0,
        "silent clients got server connections"
    );
    let start = Instant::now();
    for c in &mut idle {
        c.set_read_timeout(Duration::from_secs(10));
        assert!(c.recv().is_none(), "a silent client was answered");
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(
        proxy.log().contains("no Tversion within"),
        "{}",
        proxy.log()
    );
    let mut c = proxy.client(Dialect::DotL);
    c.attach(8192);
    assert_eq!(server.connections(), 1);
}

/// Item 9: a fid that could not be rebuilt is reported with the server's own error, not as a
/// path that no longer exists.
#[test]
fn rebuild_failures_report_the_servers_error() {
    let server = Hostile::start(65536, |s| match (s.conn, s.msg) {
        (0, Msg::Tgetattr(g)) if g.fid.0 == 6 => Answer::Close,
        (1.., Msg::Twalk(w)) if w.newfid.0 == 6 => {
            Answer::Send(vec![Fcall::new(s.tag, Rlerror { ecode: 24 })
                .to_frame()
                .unwrap()])
        }
        _ => Answer::Pass,
    });
    let proxy = Proxy::start(&server, &["--backoff-initial-ms", "50"]);
    let mut c = proxy.client(Dialect::DotL);
    c.attach(8192);
    assert_eq!(c.call(2, walk(0, 6, &[])).msg_type(), MsgType::Rwalk);
    let r = c.call(3, getattr(6));
    assert_eq!(
        r,
        Msg::Rlerror(Rlerror {
            ecode: errno::ESTALE
        })
    );
    let log = proxy.log();
    assert!(
        log.contains("the server refused to walk it: Too many open files (errno 24)"),
        "{log}"
    );
}
