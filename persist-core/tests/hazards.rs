//! One regression test per styxpersist hazard (DESIGN §5), and the basic recovery path.

mod harness;

use harness::*;
use p9_core::*;
use persist_core::{Config, Event};

fn rdwr(d: Dialect) -> u32 {
    match d {
        Dialect::DotL => lflags::RDWR,
        _ => open_mode::RDWR as u32,
    }
}

#[test]
fn an_open_file_survives_a_server_restart_in_every_dialect() {
    for d in Dialect::ALL {
        let mut p = Pair::attached(d);
        p.open_file(2, 1, &["a", "b"], rdwr(d));
        p.client(
            3,
            Twrite {
                fid: Fid(1),
                offset: 0,
                data: Data("hello".into()),
            },
        );
        p.serve();
        p.kill();
        p.server.executed.clear();
        p.reconnect();
        let reopen = if d == Dialect::DotL {
            MsgType::Tlopen
        } else {
            MsgType::Topen
        };
        // The write acknowledged before the restart, never fsynced, is read back right after
        // the reopen (the server may have lost it with its memory).
        assert_eq!(
            p.server.executed,
            [
                MsgType::Tversion,
                MsgType::Tattach,
                MsgType::Twalk,
                MsgType::Twalk,
                reopen,
                MsgType::Tread,
                MsgType::Tclunk
            ],
            "{d}"
        );
        assert!(
            p.events.iter().any(|e| matches!(
                e,
                Event::Recovered {
                    fids: 2,
                    stale: 0,
                    ..
                }
            )),
            "{d}"
        );
        p.client(
            4,
            Tread {
                fid: Fid(1),
                offset: 0,
                count: 100,
            },
        );
        p.serve();
        assert_eq!(
            p.reply_to(4),
            &Msg::Rread(Rread {
                data: Data("hello".into())
            }),
            "{d}"
        );
    }
}

/// styxpersist could resend a request that had already been answered with an error.
#[test]
fn errored_and_resent_request() {
    let mut p = Pair::attached(Dialect::DotL);
    p.client(
        5,
        Twalk {
            fid: Fid(0),
            newfid: Fid(1),
            wnames: WalkNames::new(["missing"]).unwrap(),
        },
    );
    p.serve();
    assert!(is_error(p.reply_to(5)));
    p.kill();
    p.server.executed.clear();
    p.reconnect();
    assert_eq!(
        p.executed(MsgType::Twalk),
        1,
        "only fid 0's rebuild walks: {:?}",
        p.server.executed
    );
    assert_eq!(p.replies_to(5).len(), 1, "one reply, never a second");
}

/// styxpersist recorded a created fid at its directory, so after a reconnect it reopened the
/// directory instead of the new file.
#[test]
fn created_fid_not_reopenable() {
    for d in Dialect::ALL {
        let mut p = Pair::attached(d);
        p.server.touch(&["dir"], true);
        p.client(
            2,
            Twalk {
                fid: Fid(0),
                newfid: Fid(1),
                wnames: WalkNames::new(["dir"]).unwrap(),
            },
        );
        p.serve();
        match d {
            Dialect::DotL => p.client(
                3,
                Tlcreate {
                    fid: Fid(1),
                    name: "new".into(),
                    flags: lflags::RDWR | lflags::CREATE | lflags::EXCL,
                    mode: 0o644,
                    gid: 0,
                },
            ),
            _ => p.client(
                3,
                Tcreate {
                    fid: Fid(1),
                    name: "new".into(),
                    perm: 0o644,
                    mode: open_mode::RDWR,
                    extension: d.is_extended().then(Bytes::new),
                },
            ),
        }
        p.serve();
        assert!(p.is_success(3));
        p.kill();
        while p.pending_dial.is_none() {
            p.advance();
        }
        p.accept_dial();
        // Version and attach, then the walks: fid 1 must be walked to dir/new.
        let mut walks = Vec::new();
        let mut opens = Vec::new();
        while let Some((_, fc)) = p.to_server.pop_front() {
            match &fc.msg {
                Msg::Twalk(w) if w.newfid == Fid(1) => {
                    walks.push(w.wnames.iter().map(<[u8]>::to_vec).collect::<Vec<_>>())
                }
                Msg::Topen(o) => opens.push(o.mode as u32),
                Msg::Tlopen(o) => opens.push(o.flags),
                _ => {}
            }
            let reply = p.server.answer(&fc);
            p.reply(fc.tag, reply);
        }
        assert_eq!(walks, [vec![b"dir".to_vec(), b"new".to_vec()]], "{d}");
        let expected = if d == Dialect::DotL {
            lflags::RDWR
        } else {
            open_mode::RDWR as u32
        };
        assert_eq!(opens, [expected], "{d}: reopened without create/excl");
        assert!(p
            .events
            .iter()
            .any(|e| matches!(e, Event::Recovered { stale: 0, .. })));
    }
}

/// styxpersist reopened with the original mode, truncating the file a second time.
#[test]
fn otrunc_reapplied() {
    for d in Dialect::ALL {
        let mut p = Pair::attached(d);
        let (mode, kept) = match d {
            Dialect::DotL => (
                lflags::WRONLY | lflags::TRUNC | lflags::APPEND,
                lflags::WRONLY | lflags::APPEND,
            ),
            _ => (
                (open_mode::WRITE | open_mode::TRUNC | open_mode::RCLOSE) as u32,
                (open_mode::WRITE | open_mode::RCLOSE) as u32,
            ),
        };
        p.open_file(2, 1, &["log"], mode);
        p.kill();
        while p.pending_dial.is_none() {
            p.advance();
        }
        p.accept_dial();
        let mut opens = Vec::new();
        while let Some((_, fc)) = p.to_server.pop_front() {
            match &fc.msg {
                Msg::Topen(o) => opens.push(o.mode as u32),
                Msg::Tlopen(o) => opens.push(o.flags),
                _ => {}
            }
            let reply = p.server.answer(&fc);
            p.reply(fc.tag, reply);
        }
        assert_eq!(
            opens,
            [kept],
            "{d}: truncation stripped, ORCLOSE/O_APPEND kept"
        );
    }
}

/// styxpersist resent a directory read at a non-zero offset on a fresh open, which a Plan 9
/// server refuses (or answers from the wrong place).
#[test]
fn directory_read_at_nonzero_offset() {
    let mut p = Pair::attached(Dialect::Base);
    p.open_dir(2, 1, &["d"]);
    p.client(
        3,
        Tread {
            fid: Fid(1),
            offset: 0,
            count: 100,
        },
    );
    p.serve();
    assert!(p.is_success(3), "{:?} {:?}", p.replies_to(3), p.events);
    p.client(
        400,
        Tread {
            fid: Fid(1),
            offset: 100,
            count: 100,
        },
    );
    p.kill();
    while p.pending_dial.is_none() {
        p.advance();
    }
    p.accept_dial();
    let mut dir_reads = Vec::new();
    while let Some((_, fc)) = p.to_server.pop_front() {
        if let Msg::Tread(r) = &fc.msg {
            dir_reads.push((fc.tag == 400, r.offset, r.count));
        }
        let reply = p.server.answer(&fc);
        p.reply(fc.tag, reply);
    }
    // The position is restored by reading 0..100 on the new link, then the client's read at
    // 100 is valid and resent.
    assert_eq!(dir_reads, [(false, 0, 100), (true, 100, 100)]);
    assert!(p.is_success(400));
    assert_eq!(p.replies_to(400).len(), 1);
}

#[test]
fn directory_read_fails_when_the_position_cannot_be_restored() {
    let mut p = Pair::attached(Dialect::Base);
    p.open_dir(2, 1, &["d"]);
    // A read at 100 that never had a predecessor on this fid: nothing to fast-forward to.
    p.client(
        4,
        Tread {
            fid: Fid(1),
            offset: 100,
            count: 100,
        },
    );
    p.kill();
    p.reconnect();
    assert_eq!(
        error_of(p.reply_to(4)).as_deref(),
        Some("i/o error") // 9P2000: the message Linux maps to EIO
    );
}

/// styxpersist rebuilt one fid at a time; the rebuild must be pipelined, and window 1 must
/// still work.
#[test]
fn one_fid_at_a_time_recovery() {
    for (window, expected_first_batch) in [(64, 10), (1, 1)] {
        let cfg = Config {
            recovery_window: window,
            ..config()
        };
        let mut p = Pair::attached_with(Dialect::DotL, cfg);
        for fid in 1..=9u32 {
            p.open_file(2, fid, &[&format!("f{fid}")], lflags::RDONLY);
        }
        p.kill();
        while p.pending_dial.is_none() {
            p.advance();
        }
        p.accept_dial();
        // Answer version and the one attach.
        for _ in 0..2 {
            let fc = p.next_request();
            let reply = p.server.answer(&fc);
            p.reply(fc.tag, reply);
        }
        let batch = p
            .to_server
            .iter()
            .filter(|(_, f)| matches!(f.msg, Msg::Twalk(_)))
            .count();
        assert_eq!(batch, expected_first_batch, "window {window}");
        p.serve();
        assert!(
            p.events.iter().any(|e| matches!(
                e,
                Event::Recovered {
                    fids: 10,
                    stale: 0,
                    ..
                }
            )),
            "window {window}: {:?}",
            p.events
        );
    }
}

use bytes::Bytes;
