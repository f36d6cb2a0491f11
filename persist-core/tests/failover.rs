//! Failover between equivalent backends (the mux's rules, DESIGN §3.5), on sessions whose
//! backend an endpoint of two chooses: files open on the failed backend answer I/O errors until
//! clunked, requests in flight on them fail the same way, unopened fids move to the other
//! backend by path, and a session stays on its new backend when the old one returns.

mod harness;

use bytes::Bytes;
use harness::*;
use p9_core::*;
use persist_core::{BackendId, Endpoint, Event, Instant, LostReason, ServiceRoot, Session};

/// An attached pair whose session dials through an endpoint of two backends.
fn two_backends(dialect: Dialect) -> Pair {
    let cfg = config();
    let now = Instant::from_millis(1_000);
    let endpoint = Endpoint::new(2, &cfg);
    let s = Session::with_backends(cfg, Box::new(endpoint), now);
    Pair::attach(Pair::with_session(dialect, s, now))
}

fn getattr(fid: u32) -> Tgetattr {
    Tgetattr {
        fid: Fid(fid),
        request_mask: 0x7ff,
    }
}

#[test]
fn open_files_fail_with_io_errors_and_the_rest_move() {
    let mut p = two_backends(Dialect::DotL);
    let first = p.dials[0];
    p.open_file(2, 1, &["data", "open.txt"], lflags::RDWR);
    p.server.touch(&["data", "walked.txt"], false);
    p.client(
        3,
        Twalk {
            fid: Fid(0),
            newfid: Fid(2),
            wnames: WalkNames::new(["data", "walked.txt"]).unwrap(),
        },
    );
    p.serve();
    // A read in flight on the open file when the backend dies.
    p.client(
        4,
        Tread {
            fid: Fid(1),
            offset: 0,
            count: 100,
        },
    );
    p.kill();
    p.reconnect();
    let second = *p.dials.last().unwrap();
    assert_ne!(first, second, "the session moved to the other backend");
    assert!(
        p.events.iter().any(|e| matches!(e,
            Event::Failover { from, to, open_fids_lost: 1 } if *from == first && *to == second)),
        "{:?}",
        p.events
    );
    assert!(p.events.iter().any(|e| matches!(
        e,
        Event::FidLost {
            fid: 1,
            reason: LostReason::Io,
            ..
        }
    )));
    // The read in flight fails with EIO, once.
    assert_eq!(p.reply_to(4), &Msg::Rlerror(Rlerror { ecode: 5 }));
    // The open file answers EIO from now on; the walked one works on the new backend.
    p.client(5, getattr(1));
    p.serve();
    assert_eq!(p.reply_to(5), &Msg::Rlerror(Rlerror { ecode: 5 }));
    p.client(6, getattr(2));
    p.serve();
    assert!(
        matches!(p.reply_to(6), Msg::Rgetattr(_)),
        "{:?}",
        p.reply_to(6)
    );
    // Clunking the failed fid is answered, and frees it.
    p.client(7, Tclunk { fid: Fid(1) });
    p.serve();
    assert_eq!(p.reply_to(7), &Msg::Rclunk(Rclunk {}));
}

#[test]
fn a_session_stays_on_its_new_backend() {
    let mut p = two_backends(Dialect::DotL);
    let first = p.dials[0];
    p.kill();
    p.reconnect();
    let second = *p.dials.last().unwrap();
    assert_ne!(first, second);
    // Long after, the first backend would be healthy again; the second fails only now, so
    // the session goes back to the first — never before.
    for _ in 0..3 {
        p.client(9, getattr(0));
        p.serve();
        assert!(matches!(p.reply_to(9), Msg::Rgetattr(_)));
        p.to_client.clear();
        p.advance_by(std::time::Duration::from_secs(60));
    }
    assert_eq!(
        p.dials.len(),
        2,
        "no dial while the second backend is healthy"
    );
    p.kill();
    p.reconnect();
    assert_eq!(*p.dials.last().unwrap(), first);
    assert_eq!(
        p.events
            .iter()
            .filter(|e| matches!(e, Event::Failover { .. }))
            .count(),
        2
    );
}

#[test]
fn a_lone_backend_is_never_a_failover() {
    let mut p = Pair::attached(Dialect::DotL);
    p.open_file(2, 1, &["f"], lflags::RDWR);
    p.kill();
    p.reconnect();
    assert!(p.dials.iter().all(|&b| b == BackendId(0)));
    assert!(!p.events.iter().any(|e| matches!(e, Event::Failover { .. })));
    p.client(3, getattr(1));
    p.serve();
    assert!(matches!(p.reply_to(3), Msg::Rgetattr(_)));
}

/// A session of an endpoint whose two backends are entered as services: attached with their
/// own anames and walked to `data` (the stub ignores anames; the frames it got show them).
fn two_services(dialect: Dialect) -> (Pair, Vec<Fcall>) {
    let cfg = config();
    let now = Instant::from_millis(1_000);
    let root = |aname: &str| ServiceRoot {
        aname: Some(aname.to_owned().into()),
        path: vec!["data".into()],
    };
    let endpoint = Endpoint::with_roots(vec![root("/srv/one"), root("/srv/two")], &cfg);
    let s = Session::with_backends(cfg, Box::new(endpoint), now);
    let mut p = Pair::with_session(dialect, s, now);
    p.server.touch(&["data", "sub", "f"], false);
    p.version();
    p.client(
        1,
        Tattach {
            fid: Fid(0),
            afid: NOFID,
            uname: "glenda".into(),
            aname: "".into(),
            n_uname: Some(1000),
        },
    );
    let log = p.serve_log();
    (p, log)
}

fn walk(fid: u32, newfid: u32, names: &[&str]) -> Twalk {
    Twalk {
        fid: Fid(fid),
        newfid: Fid(newfid),
        wnames: WalkNames::new(names).unwrap(),
    }
}

fn walk_qids(m: &Msg) -> Vec<Qid> {
    match m {
        Msg::Rwalk(r) => r.wqids.iter().collect(),
        other => panic!("not an Rwalk: {other:?}"),
    }
}

#[test]
fn a_service_is_attached_by_its_aname_and_entered_at_its_path() {
    let (mut p, log) = two_services(Dialect::DotL);
    // The backend saw the service's aname, then a walk of the attached fid to its path; the
    // client's tag carried both, and it got one Rattach.
    let anames: Vec<_> = log
        .iter()
        .filter_map(|f| match &f.msg {
            Msg::Tattach(a) => Some((f.tag, a.aname.clone())),
            _ => None,
        })
        .collect();
    // The first dial goes where the session's number sends it; each backend has its aname.
    let names = ["/srv/one", "/srv/two"];
    let first = p.dials[0].0 as usize;
    assert_eq!(anames, [(1, Bytes::from(names[first]))]);
    assert!(log.iter().any(|f| f.tag == 1
        && matches!(&f.msg, Msg::Twalk(w) if w.fid == Fid(0) && w.newfid == Fid(0)
            && w.wnames.iter().eq([&b"data"[..]]))));
    let root = match p.reply_to(1) {
        Msg::Rattach(a) => a.qid,
        other => panic!("{other:?}"),
    };
    assert!(root.is_dir());
    // Names are the service's: "sub/f" is data/sub/f on the backend.
    p.client(2, walk(0, 1, &["sub", "f"]));
    p.serve();
    let before = walk_qids(p.reply_to(2));
    assert_eq!(before.len(), 2);
    // The backend dies; the other one holds a copy whose files it numbers its own way.
    p.kill();
    for (q, _) in p.server.files.values_mut() {
        q.path += 1000;
    }
    let log = p.reconnect_log();
    assert!(log.iter().any(|f| matches!(&f.msg,
        Msg::Tattach(a) if a.aname == names[1 - first])));
    assert!(log.iter().any(|f| matches!(&f.msg,
        Msg::Twalk(w) if w.fid == w.newfid && w.wnames.iter().eq([&b"data"[..]]))));
    // The same names show the same qid paths; their versions tell the copies apart.
    p.client(3, walk(0, 2, &["sub", "f"]));
    p.serve();
    let after = walk_qids(p.reply_to(3));
    for (b, a) in before.iter().zip(&after) {
        assert_eq!((b.path, b.typ), (a.path, a.typ));
        assert_ne!(b.version, a.version);
    }
    // Stat-like replies agree with walks; `..` climbs back.
    p.client(4, getattr(2));
    p.serve();
    match p.reply_to(4) {
        Msg::Rgetattr(g) => assert_eq!(g.qid, after[1]),
        other => panic!("{other:?}"),
    }
    p.client(5, walk(2, 3, &[".."]));
    p.serve();
    assert_eq!(walk_qids(p.reply_to(5)), [after[0]]);
    // The fid moved to the other backend rebuilt from the service path: it still works.
    p.client(6, getattr(1));
    p.serve();
    assert!(matches!(p.reply_to(6), Msg::Rgetattr(g) if g.qid == after[1]));
}

#[test]
fn an_attach_whose_service_path_is_missing_fails_and_leaves_no_fid() {
    let cfg = config();
    let now = Instant::from_millis(1_000);
    let root = ServiceRoot {
        aname: None,
        path: vec!["nowhere".into()],
    };
    let endpoint = Endpoint::with_roots(vec![root.clone(), root], &cfg);
    let s = Session::with_backends(cfg, Box::new(endpoint), now);
    let mut p = Pair::with_session(Dialect::DotL, s, now);
    p.version();
    p.client(
        1,
        Tattach {
            fid: Fid(0),
            afid: NOFID,
            uname: "glenda".into(),
            aname: "x".into(),
            n_uname: Some(1000),
        },
    );
    let log = p.serve_log();
    // The client's aname went through (the service names none).
    assert!(log
        .iter()
        .any(|f| matches!(&f.msg, Msg::Tattach(a) if a.aname == "x")));
    assert_eq!(p.reply_to(1), &Msg::Rlerror(Rlerror { ecode: 2 }));
    assert!(log
        .iter()
        .any(|f| f.tag == 1 && matches!(f.msg, Msg::Tclunk(Tclunk { fid: Fid(0) }))));
    assert!(p.server.fids.is_empty(), "{:?}", p.server.fids);
    assert_eq!(p.s.fid_count(), 0);
}

#[test]
fn one_backend_passes_qids_untouched() {
    let mut p = Pair::attached(Dialect::DotL);
    p.server.touch(&["a"], false);
    p.client(2, walk(0, 1, &["a"]));
    p.serve();
    let raw = p.server.files[&vec![b"a".to_vec()]].0;
    assert_eq!(walk_qids(p.reply_to(2)), [raw]);
}

#[test]
fn a_session_moves_at_once_while_another_backend_is_healthy() {
    let mut p = two_backends(Dialect::DotL);
    let redial_delays = |p: &Pair| -> Vec<std::time::Duration> {
        p.events
            .iter()
            .filter_map(|e| match e {
                Event::Redialing { delay, .. } => Some(*delay),
                _ => None,
            })
            .collect()
    };
    p.kill();
    assert_eq!(redial_delays(&p), [std::time::Duration::ZERO]);
    p.reconnect();
    // The second backend fails too, while the first is still avoided: now it waits.
    p.kill();
    let delays = redial_delays(&p);
    assert_eq!(delays.len(), 2);
    assert!(delays[1] > std::time::Duration::ZERO, "{delays:?}");
}

/// The qids of a 9P2000 directory read (stat records) and of an Rstat name paths too.
#[test]
fn stat_records_and_stats_carry_path_qids() {
    let mut p = two_backends(Dialect::Base);
    let listing = |p: &mut Pair, tag: u16, fid: u32| -> Vec<Qid> {
        p.open_dir(tag, fid, &["dir"]);
        p.client(
            tag + 1,
            Tread {
                fid: Fid(fid),
                offset: 0,
                count: 300,
            },
        );
        p.serve();
        let Msg::Rread(r) = p.reply_to(tag + 1).clone() else {
            panic!("{:?}", p.reply_to(tag + 1))
        };
        dir::stat_records(&r.data.0, Dialect::Base)
            .map(|s| s.unwrap().qid)
            .collect()
    };
    let before = listing(&mut p, 2, 1);
    assert!(!before.is_empty());
    // The stub's records carry all-ones qids: rewritten, they name the entry's path.
    assert!(before.iter().all(|q| q.path != u64::MAX), "{before:?}");
    p.server.touch(&["dir", "f"], false);
    p.client(5, walk(0, 2, &["dir", "f"]));
    p.serve();
    let walked = walk_qids(p.reply_to(5));
    p.client(6, Tstat { fid: Fid(2) });
    p.serve();
    match p.reply_to(6) {
        Msg::Rstat(s) => assert_eq!(s.stat.qid, walked[1]),
        other => panic!("{other:?}"),
    }
    p.kill();
    for (q, _) in p.server.files.values_mut() {
        q.path += 1000;
    }
    p.reconnect();
    p.to_client.clear();
    let after = listing(&mut p, 7, 3);
    assert_eq!(
        before.iter().map(|q| q.path).collect::<Vec<_>>(),
        after.iter().map(|q| q.path).collect::<Vec<_>>()
    );
}

/// A client's Tflush of its attach while the session walks it on to the service's root: the
/// server has attached a fid already, so the flush is held (never sent) and answered right
/// after the attach (flush(5) lets the flushed request's reply come first).
#[test]
fn a_flush_of_an_attach_on_its_way_to_the_service_root_waits_for_it() {
    let cfg = config();
    let now = Instant::from_millis(1_000);
    let root = ServiceRoot {
        aname: Some("/srv".into()),
        path: vec!["data".into()],
    };
    let endpoint = Endpoint::with_roots(vec![root.clone(), root], &cfg);
    let s = Session::with_backends(cfg, Box::new(endpoint), now);
    let mut p = Pair::with_session(Dialect::DotL, s, now);
    p.server.touch(&["data"], true);
    p.version();
    p.client(
        1,
        Tattach {
            fid: Fid(0),
            afid: NOFID,
            uname: "glenda".into(),
            aname: "".into(),
            n_uname: Some(1000),
        },
    );
    let attach = p.next_request();
    assert!(matches!(attach.msg, Msg::Tattach(_)));
    let r = p.server.answer(&attach);
    p.reply(attach.tag, r);
    p.client(2, Tflush { oldtag: 1 });
    let walk = p.next_request();
    assert!(
        matches!(walk.msg, Msg::Twalk(_)) && walk.tag == 1,
        "{walk:?}"
    );
    assert!(
        p.to_server.is_empty(),
        "the flush is held: {:?}",
        p.to_server
    );
    let r = p.server.answer(&walk);
    p.reply(walk.tag, r);
    let answers: Vec<(u16, MsgType)> = p
        .to_client
        .iter()
        .filter(|f| f.tag != NOTAG)
        .map(|f| (f.tag, f.msg.msg_type()))
        .collect();
    assert_eq!(answers, [(1, MsgType::Rattach), (2, MsgType::Rflush)]);
    // The fid is the client's: it works.
    p.client(3, getattr(0));
    p.serve();
    assert!(matches!(p.reply_to(3), Msg::Rgetattr(_)));
}

/// `..` at the service's root would take the backend's fid above the service path: refused
/// (ENOENT), never sent; `..` below the root is the server's to walk.
#[test]
fn a_walk_above_the_service_root_is_refused() {
    let (mut p, _) = two_services(Dialect::DotL);
    p.to_client.clear();
    let sent = p.s.requests_held();
    p.client(2, walk(0, 1, &[".."]));
    assert_eq!(p.reply_to(2), &Msg::Rlerror(Rlerror { ecode: 2 }));
    assert!(p.to_server.is_empty(), "{:?}", p.to_server);
    p.client(3, walk(0, 1, &["sub", "..", ".."]));
    assert_eq!(p.reply_to(3), &Msg::Rlerror(Rlerror { ecode: 2 }));
    p.client(4, walk(0, 1, &["sub", ".."]));
    p.serve();
    assert!(
        matches!(p.reply_to(4), Msg::Rwalk(_)),
        "{:?}",
        p.reply_to(4)
    );
    // From a fid one below the root, one `..` is fine and two are not.
    p.client(5, walk(0, 2, &["sub"]));
    p.serve();
    p.client(6, walk(2, 3, &[".."]));
    p.serve();
    assert!(
        matches!(p.reply_to(6), Msg::Rwalk(_)),
        "{:?}",
        p.reply_to(6)
    );
    p.client(7, walk(2, 4, &["..", ".."]));
    assert_eq!(p.reply_to(7), &Msg::Rlerror(Rlerror { ecode: 2 }));
    assert_eq!(p.s.requests_held(), sent);
}
