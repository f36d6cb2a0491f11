//! Unsynced writes kept and written again after a reconnect (DESIGN §3.6, issue "No false
//! errors"): a server that lost them with its memory gets them back before anything else
//! reaches the file, so a later fsync tells the truth; writes that cannot be repeated make the
//! next fsync fail, and the event says why.

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

#[test]
fn writes_lost_by_a_restart_are_written_again_and_fsync_tells_the_truth() {
    let mut p = Pair::attached(Dialect::DotL);
    p.open_file(2, 1, &["f"], lflags::RDWR);
    p.client(3, write(1, 0, "hello, "));
    p.client(4, write(1, 7, "world"));
    p.client(5, write(1, 0, "H"));
    p.serve();
    assert_eq!(contents(&p, &["f"]), b"Hello, world");
    p.kill();
    lose(&mut p, &["f"]);
    let log = p.reconnect_log();
    // Written again as the writes left the file: disjoint ranges, newest data.
    let rewrites: Vec<(u64, Vec<u8>)> = log
        .iter()
        .filter_map(|f| match &f.msg {
            Msg::Twrite(w) => Some((w.offset, w.data.0.to_vec())),
            _ => None,
        })
        .collect();
    assert_eq!(
        rewrites,
        [
            (0, b"H".to_vec()),
            (1, b"ello, ".to_vec()),
            (7, b"world".to_vec())
        ]
    );
    assert_eq!(contents(&p, &["f"]), b"Hello, world");
    p.client(6, fsync(1));
    p.serve();
    assert_eq!(p.reply_to(6), &Msg::Rfsync(Rfsync {}));
    // After a successful fsync nothing is kept: the next reconnect writes nothing again.
    assert_eq!(p.s.replay_kept_bytes(), 0);
    p.kill();
    let log = p.reconnect_log();
    assert!(
        !log.iter().any(|f| matches!(f.msg, Msg::Twrite(_))),
        "{log:?}"
    );
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

/// The frames written again after a reconnect, as (offset, data).
fn rewrites(log: &[Fcall]) -> Vec<(u64, Vec<u8>)> {
    log.iter()
        .filter_map(|f| match &f.msg {
            Msg::Twrite(w) => Some((w.offset, w.data.0.to_vec())),
            _ => None,
        })
        .collect()
}

/// Unsynced writes are the file's, not a fid's: written through two fids, they are written
/// again as the file had them (in the order they were acknowledged), and an fsync through
/// either answers for both.
#[test]
fn writes_through_two_fids_are_kept_for_their_file() {
    let mut p = Pair::attached(Dialect::DotL);
    p.open_file(2, 1, &["f"], lflags::RDWR);
    p.open_file(3, 2, &["f"], lflags::RDWR);
    p.client(4, write(1, 0, "first!"));
    p.serve();
    p.client(5, write(2, 0, "second"));
    p.serve();
    p.kill();
    lose(&mut p, &["f"]);
    let log = p.reconnect_log();
    assert_eq!(rewrites(&log), [(0, b"second".to_vec())]);
    assert_eq!(contents(&p, &["f"]), b"second");
    p.client(6, fsync(1));
    p.serve();
    assert_eq!(p.reply_to(6), &Msg::Rfsync(Rfsync {}));
    assert_eq!(
        p.s.replay_kept_bytes(),
        0,
        "the fsync settled both fids' writes"
    );
}

/// Linux writes back through one fid, lets it go, and fsyncs through another (`sync FILE`
/// opens a new one): the writes are still the file's. With another fid of the file open for
/// writing, that fid writes them again; with none, the fsync says they may be lost.
#[test]
fn an_fsync_through_another_fid_answers_for_writes_through_a_clunked_one() {
    for keep_writer in [true, false] {
        let mut p = Pair::attached(Dialect::DotL);
        p.open_file(2, 1, &["f"], lflags::RDWR);
        let mode = if keep_writer {
            lflags::RDWR
        } else {
            lflags::RDONLY
        };
        p.open_file(3, 2, &["f"], mode);
        p.client(4, write(1, 0, "written back"));
        p.client(5, Tclunk { fid: Fid(1) });
        p.serve();
        p.kill();
        lose(&mut p, &["f"]);
        let log = p.reconnect_log();
        p.client(6, fsync(2));
        p.serve();
        if keep_writer {
            assert_eq!(rewrites(&log), [(0, b"written back".to_vec())]);
            assert_eq!(p.reply_to(6), &Msg::Rfsync(Rfsync {}));
            assert_eq!(contents(&p, &["f"]), b"written back");
        } else {
            assert!(rewrites(&log).is_empty());
            assert_eq!(
                p.reply_to(6),
                &Msg::Rlerror(Rlerror { ecode: errno::EIO }),
                "the write through the clunked fid may be lost: fsync must not say otherwise"
            );
        }
    }
}

/// A Tfsync covers the writes acknowledged before it was sent: one acknowledged after (the
/// server answered it first) is still unsynced when the Rfsync comes, and is written again
/// after a loss.
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
    assert_eq!(rewrites(&log), [(5, b"-late".to_vec())]);
    assert_eq!(contents(&p, &["f"]), b"early-late");
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
