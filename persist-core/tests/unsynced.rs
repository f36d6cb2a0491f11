//! Unsynced writes kept per file and read back after a reconnect (DESIGN §3.6): where the
//! server still holds every acknowledged byte (a blip, a restart that lost nothing) a later
//! fsync succeeds; where it does not (a crash lost them, or another client wrote since: the
//! session cannot tell which) nothing is written over it and the next fsync fails with EIO, as
//! it does for writes that could not be kept; the event says why.

mod harness;

use harness::*;
use p9_core::*;
use persist_core::{Config, Event};

fn write(fid: u32, offset: u64, data: &'static str) -> Twrite {
    Twrite {
        fid: Fid(fid),
        offset,
        data: Data(data.into()),
    }
}

fn fsync(fid: u32) -> Tfsync {
    Tfsync {
        fid: Fid(fid),
        datasync: 0,
    }
}

fn contents(p: &Pair, path: &[&str]) -> Vec<u8> {
    let key: Vec<Vec<u8>> = path.iter().map(|n| n.as_bytes().to_vec()).collect();
    p.server.files[&key].1.clone()
}

/// The server forgets what was written to `path` since it was empty (a restart that lost its
/// page cache).
fn lose(p: &mut Pair, path: &[&str]) {
    let key: Vec<Vec<u8>> = path.iter().map(|n| n.as_bytes().to_vec()).collect();
    p.server.files.get_mut(&key).unwrap().1.clear();
}

/// After a reconnect nothing is written again, and the fid's next fsync (sent with `tag`)
/// fails with EIO, the event saying `why`.
fn nothing_rewritten_and_fsync_fails(p: &mut Pair, tag: u16, fid: u32, why: &str) {
    assert_eq!(p.s.replay_kept_bytes(), 0, "nothing is kept");
    p.kill();
    let log = p.reconnect_log();
    assert!(
        !log.iter().any(|f| matches!(f.msg, Msg::Twrite(_))),
        "nothing is written again: {log:?}"
    );
    p.client(tag, fsync(fid));
    p.serve();
    assert_eq!(
        p.reply_to(tag),
        &Msg::Rlerror(Rlerror { ecode: errno::EIO })
    );
    assert!(
        p.events.iter().any(|e| matches!(e,
            Event::RequestFailed { tag: t, why: w, .. } if *t == tag && w.contains(why))),
        "no event saying {why:?}: {:?}",
        p.events
    );
}

/// The reads the session sent after a reconnect to check unsynced writes, as (offset, count).
fn checks(log: &[Fcall]) -> Vec<(u64, u32)> {
    log.iter()
        .filter_map(|f| match &f.msg {
            Msg::Tread(r) if f.tag < 0x8000 => Some((r.offset, r.count)),
            _ => None,
        })
        .collect()
}

/// A fsync through `fid` (with `tag`) after a reconnect succeeds (`ok`) or fails with EIO, the
/// event saying `why`.
fn fsync_is(p: &mut Pair, tag: u16, fid: u32, ok: bool, why: &str) {
    p.client(tag, fsync(fid));
    p.serve();
    if ok {
        assert_eq!(p.reply_to(tag), &Msg::Rfsync(Rfsync {}));
        return;
    }
    assert_eq!(
        p.reply_to(tag),
        &Msg::Rlerror(Rlerror { ecode: errno::EIO })
    );
    assert!(
        p.events.iter().any(|e| matches!(e,
            Event::RequestFailed { tag: t, why: w, .. } if *t == tag && w.contains(why))),
        "no event saying {why:?}: {:?}",
        p.events
    );
}

#[test]
fn after_a_loss_unsynced_writes_are_read_back_and_fsync_tells_the_truth() {
    for crash in [false, true] {
        let mut p = Pair::attached(Dialect::DotL);
        p.open_file(2, 1, &["f"], lflags::RDWR);
        p.client(3, write(1, 0, "hello, "));
        p.client(4, write(1, 7, "world"));
        p.client(5, write(1, 0, "H"));
        p.serve();
        assert_eq!(contents(&p, &["f"]), b"Hello, world");
        p.kill();
        if crash {
            lose(&mut p, &["f"]);
        }
        let log = p.reconnect_log();
        // Read back as the writes left the file: disjoint ranges, newest data; never written.
        assert!(
            !log.iter().any(|f| matches!(f.msg, Msg::Twrite(_))),
            "{log:?}"
        );
        let read = checks(&log);
        if crash {
            // The first range is already short: the rest need not be read.
            assert_eq!(read, [(0, 1)]);
            fsync_is(&mut p, 6, 1, false, "differs");
            assert!(contents(&p, &["f"]).is_empty(), "nothing written over it");
        } else {
            assert_eq!(read, [(0, 1), (1, 6), (7, 5)]);
            fsync_is(&mut p, 6, 1, true, "");
        }
        // Settled either way: the next reconnect reads nothing back.
        assert_eq!(p.s.replay_kept_bytes(), 0);
        p.kill();
        let log = p.reconnect_log();
        assert!(checks(&log).is_empty(), "{log:?}");
    }
}

#[test]
fn a_spent_budget_makes_the_next_fsync_fail_and_says_why() {
    let cfg = Config {
        replay_budget: 20 << 10,
        ..config()
    };
    let mut p = Pair::attached_with(Dialect::DotL, cfg);
    p.open_file(2, 1, &["f"], lflags::RDWR);
    p.client(3, write(1, 0, "kept"));
    p.serve();
    assert!(p.s.replay_kept_bytes() > 0);
    // Each kept write counts at least a read chunk (16 KiB): the second does not fit, and the
    // fid's kept writes are let go.
    p.client(4, write(1, 4, "over"));
    p.serve();
    nothing_rewritten_and_fsync_fails(&mut p, 5, 1, "replay budget");
    // The failure reported the loss: the next fsync is the server's to answer.
    p.client(6, fsync(1));
    p.serve();
    assert_eq!(p.reply_to(6), &Msg::Rfsync(Rfsync {}));
}

#[test]
fn a_truncation_stops_keeping_until_the_next_fsync() {
    let mut p = Pair::attached(Dialect::DotL);
    p.open_file(2, 1, &["f"], lflags::RDWR);
    p.client(3, write(1, 0, "0123456789"));
    p.serve();
    p.client(
        4,
        Tsetattr {
            fid: Fid(1),
            valid: 0x8,
            size: 2,
            ..Default::default()
        },
    );
    p.serve();
    // A rewrite across the truncation would bring back what it cut off.
    nothing_rewritten_and_fsync_fails(&mut p, 5, 1, "truncated");
}

/// Unsynced writes are the file's, not a fid's: written through two fids, they are read back
/// as the file had them (in the order they were acknowledged), and an fsync through either
/// answers for both. Another client's write over them during the outage is never overwritten:
/// the fsync says the acknowledged data may be lost.
#[test]
fn writes_through_two_fids_are_kept_for_their_file() {
    for overwritten in [false, true] {
        let mut p = Pair::attached(Dialect::DotL);
        p.open_file(2, 1, &["f"], lflags::RDWR);
        p.open_file(3, 2, &["f"], lflags::RDWR);
        p.client(4, write(1, 0, "first!"));
        p.serve();
        p.client(5, write(2, 0, "second"));
        p.serve();
        p.kill();
        if overwritten {
            let key = vec![b"f".to_vec()];
            p.server.files.get_mut(&key).unwrap().1 = b"theirs".to_vec();
        }
        let log = p.reconnect_log();
        assert_eq!(
            checks(&log),
            [(0, 6)],
            "one check for the file, of its final image"
        );
        fsync_is(&mut p, 6, 1, !overwritten, "differs");
        let want: &[u8] = if overwritten { b"theirs" } else { b"second" };
        assert_eq!(contents(&p, &["f"]), want);
        assert_eq!(
            p.s.replay_kept_bytes(),
            0,
            "the fsync settled both fids' writes"
        );
    }
}

/// Linux writes back through one fid, lets it go, and fsyncs through another (`sync FILE`
/// opens a new one): the writes are still the file's. While another fid of the file stays
/// open (for reading will do), it reads them back after a loss; once every fid is gone, the
/// writes are let go, and the next fsync after a loss says they may be lost.
#[test]
fn an_fsync_through_another_fid_answers_for_writes_through_a_clunked_one() {
    for keep_open in [true, false] {
        let mut p = Pair::attached(Dialect::DotL);
        p.open_file(2, 1, &["f"], lflags::RDWR);
        if keep_open {
            p.open_file(3, 2, &["f"], lflags::RDONLY);
        }
        p.client(4, write(1, 0, "written back"));
        p.client(5, Tclunk { fid: Fid(1) });
        p.serve();
        p.kill();
        let log = p.reconnect_log();
        if !keep_open {
            p.open_file(7, 2, &["f"], lflags::RDWR);
        }
        if keep_open {
            assert_eq!(checks(&log), [(0, 12)]);
            fsync_is(&mut p, 6, 2, true, "");
        } else {
            assert!(checks(&log).is_empty());
            fsync_is(&mut p, 6, 2, false, "fids let go");
        }
        assert_eq!(contents(&p, &["f"]), b"written back");
    }
}

/// A Tfsync covers the writes acknowledged before it was sent: one acknowledged after (the
/// server answered it first) is still unsynced when the Rfsync comes, and is the one read back
/// after a loss; a crash that lost it makes the next fsync say so.
#[test]
fn an_fsync_covers_only_writes_acknowledged_before_it_was_sent() {
    let mut p = Pair::attached(Dialect::DotL);
    p.open_file(2, 1, &["f"], lflags::RDWR);
    p.client(3, write(1, 0, "early"));
    p.serve();
    p.client(4, fsync(1));
    p.client(5, write(1, 5, "-late"));
    let f = p.next_request();
    let w = p.next_request();
    for fc in [w, f] {
        let reply = p.server.answer(&fc);
        p.reply(fc.tag, reply);
    }
    assert_eq!(p.reply_to(4), &Msg::Rfsync(Rfsync {}));
    p.kill();
    // A crash keeps what was synced and loses the rest.
    let key = vec![b"f".to_vec()];
    p.server.files.get_mut(&key).unwrap().1.truncate(5);
    let log = p.reconnect_log();
    assert_eq!(checks(&log), [(5, 5)]);
    fsync_is(&mut p, 6, 1, false, "differs");
}

#[test]
fn opening_the_file_with_truncation_elsewhere_stops_keeping() {
    let mut p = Pair::attached(Dialect::DotL);
    p.open_file(2, 1, &["f"], lflags::RDWR);
    p.client(3, write(1, 0, "old data"));
    p.serve();
    assert!(p.s.replay_kept_bytes() > 0);
    p.open_file(4, 2, &["f"], lflags::RDWR | lflags::TRUNC);
    assert_eq!(p.s.replay_kept_bytes(), 0);
    p.kill();
    let log = p.reconnect_log();
    assert!(
        !log.iter().any(|f| matches!(f.msg, Msg::Twrite(_))),
        "{log:?}"
    );
}

/// An fsync in flight when the link died, for a file whose unsynced writes the server then
/// turns out to have lost: not sent again (the new server would answer it, vouching for data
/// it never had), but failed with EIO.
#[test]
fn an_fsync_in_flight_at_a_loss_of_writes_fails() {
    let mut p = Pair::attached(Dialect::DotL);
    p.open_file(2, 1, &["f"], lflags::RDWR);
    p.client(3, write(1, 0, "hello"));
    p.serve();
    p.client(4, fsync(1));
    p.kill();
    lose(&mut p, &["f"]);
    p.reconnect();
    p.serve();
    assert_eq!(p.reply_to(4), &Msg::Rlerror(Rlerror { ecode: errno::EIO }));
    assert_eq!(p.executed(MsgType::Tfsync), 0, "never sent again");
    // The log says why: the writes, not merely the loss.
    assert!(
        p.events.iter().any(|e| matches!(e,
            Event::RequestFailed { tag: 4, why, .. } if why.contains("differs from what was written"))),
        "{:?}",
        p.events
    );
}

/// Another open of the file keeps its unsynced writes unless it truncates (O_TRUNC, OTRUNC):
/// only then are they not kept.
#[test]
fn only_a_truncating_open_lets_kept_writes_go() {
    for dialect in [Dialect::DotL, Dialect::Base] {
        let (rdwr, trunc) = match dialect {
            Dialect::DotL => (lflags::RDWR, lflags::RDWR | lflags::TRUNC),
            _ => (
                open_mode::RDWR as u32,
                (open_mode::RDWR | open_mode::TRUNC) as u32,
            ),
        };
        let mut p = Pair::attached(dialect);
        p.open_file(2, 1, &["f"], rdwr);
        p.client(3, write(1, 0, "kept"));
        p.serve();
        assert!(p.s.replay_kept_bytes() > 0, "{dialect}");
        p.open_file(4, 2, &["f"], rdwr);
        assert!(
            p.s.replay_kept_bytes() > 0,
            "{dialect}: a plain open keeps them"
        );
        p.open_file(5, 3, &["f"], trunc);
        assert_eq!(
            p.s.replay_kept_bytes(),
            0,
            "{dialect}: a truncating one does not"
        );
    }
}

/// A truncation through Tsetattr (the size) or Twstat (the length) lets kept writes go, one
/// that changes other attributes only keeps them; a remove of the file forgets them.
#[test]
fn truncations_and_removes_let_kept_writes_go() {
    let with_kept = |dialect| {
        let mut p = Pair::attached(dialect);
        let rdwr = match dialect {
            Dialect::DotL => lflags::RDWR,
            _ => open_mode::RDWR as u32,
        };
        p.open_file(2, 1, &["f"], rdwr);
        p.client(3, write(1, 0, "kept"));
        p.serve();
        assert!(p.s.replay_kept_bytes() > 0);
        p
    };
    // Tsetattr: valid bits 0x1 (mode) and 0x8 (size).
    for (valid, kept) in [(0x8, false), (0x1, true)] {
        let mut p = with_kept(Dialect::DotL);
        let setattr = Tsetattr {
            fid: Fid(1),
            valid,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            atime_sec: 0,
            atime_nsec: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
        };
        p.client(4, setattr);
        p.serve();
        assert_eq!(
            p.s.replay_kept_bytes() > 0,
            kept,
            "setattr valid {valid:#x}"
        );
    }
    // Twstat: a length, or "don't touch" (all ones).
    for (length, kept) in [(0, false), (u64::MAX, true)] {
        let mut p = with_kept(Dialect::Base);
        let wstat = Twstat {
            fid: Fid(1),
            stat: Stat {
                length,
                ..Stat::unchanged(Dialect::Base)
            },
        };
        p.client(4, wstat);
        p.serve();
        assert_eq!(p.s.replay_kept_bytes() > 0, kept, "wstat length {length}");
    }
    let mut p = with_kept(Dialect::DotL);
    p.client(4, Tremove { fid: Fid(1) });
    p.serve();
    assert_eq!(p.s.replay_kept_bytes(), 0, "removed");
}
