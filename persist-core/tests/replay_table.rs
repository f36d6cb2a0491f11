//! Every row of the DESIGN §3.3 table: a request in flight when the link dies is resent,
//! failed as "possibly not completed", or answered locally — exactly once — in each dialect
//! where the row applies. Sessions here run with `resolve_ambiguous` off (`--ambiguous
//! fail`): creates, removes and renames follow this table's rule; how they are settled by
//! looking is `outcomes.rs`'.

mod harness;

use bytes::Bytes;
use harness::*;
use p9_core::*;
use persist_core::Mark;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Resend,
    Fail,
}
use Outcome::*;

const TAG: u16 = 1000;
const FILE: u32 = 1;
const DIR: u32 = 2;
const WALKED: u32 = 3;

/// A session with fid 0 at the root, FILE open read-write at "f", DIR open at "d" (100 bytes
/// of it read when `dir_read`), and WALKED at "g".
fn setup(d: Dialect, file_mode: u32, dir_read: bool) -> Pair {
    let mut p = Pair::attached_with(d, table_config());
    p.open_file(2, FILE, &["f"], file_mode);
    p.open_dir(3, DIR, &["d"]);
    p.server.touch(&["g"], false);
    p.client(
        4,
        Twalk {
            fid: Fid(0),
            newfid: Fid(WALKED),
            wnames: WalkNames::new(["g"]).unwrap(),
        },
    );
    p.serve();
    if dir_read {
        match d {
            Dialect::DotL => p.client(
                5,
                Treaddir {
                    fid: Fid(DIR),
                    offset: 0,
                    count: 100,
                },
            ),
            _ => p.client(
                5,
                Tread {
                    fid: Fid(DIR),
                    offset: 0,
                    count: 100,
                },
            ),
        }
        p.serve();
    }
    p.to_client.clear();
    p
}

/// The replay table alone: nothing settled by looking.
fn table_config() -> persist_core::Config {
    persist_core::Config {
        resolve_ambiguous: false,
        ..config()
    }
}

fn rdwr(d: Dialect) -> u32 {
    if d == Dialect::DotL {
        lflags::RDWR
    } else {
        open_mode::RDWR as u32
    }
}

/// The row of the table that fails `msg` in flight at a loss, as its mark names it.
fn fail_row(msg: &Msg) -> Mark {
    match msg {
        Msg::Tremove(_) | Msg::Tunlinkat(_) => Mark::ReplayFailRemove,
        Msg::Trename(_) | Msg::Trenameat(_) | Msg::Twstat(_) => Mark::ReplayFailRename,
        Msg::Tlock(_) => Mark::ReplayFailLock,
        Msg::Twrite(_) => Mark::ReplayFailAppend,
        Msg::Tread(_) | Msg::Treaddir(_) => Mark::ReplayFailDirRead,
        Msg::Tfsync(_) => Mark::ReplayFailFsync,
        _ => Mark::ReplayFailCreate,
    }
}

fn check(d: Dialect, name: &str, mut p: Pair, msg: Msg, expect: Outcome) {
    let ty = msg.msg_type();
    let msg_kind = msg.clone();
    p.client(TAG, msg);
    assert!(
        p.to_client.is_empty(),
        "{d} {name}: answered before the link died"
    );
    p.kill();
    let log = p.reconnect_log();
    let resent = log.iter().any(|f| f.tag == TAG && f.msg.msg_type() == ty);
    let replies = p.replies_to(TAG);
    assert_eq!(
        replies.len(),
        1,
        "{d} {name}: exactly one reply, got {replies:?}"
    );
    let reply = replies[0];
    match expect {
        Resend => assert!(resent, "{d} {name}: not resent"),
        Fail => {
            assert!(!resent, "{d} {name}: failed and also resent");
            // The row that decided is the request's own (each failing row has its mark).
            let row = fail_row(&msg_kind);
            assert_eq!(p.s.marks().get(row), 1, "{d} {name}: decided by {row:?}");
            let expected: Msg = match d {
                Dialect::DotL => Rlerror { ecode: errno::EIO }.into(),
                Dialect::DotU => Rerror {
                    ename: "operation possibly not completed".into(),
                    errno: Some(errno::EIO),
                }
                .into(),
                // 9P2000 carries no errno: the message is one Linux's table maps to EIO.
                Dialect::Base => Rerror {
                    ename: "i/o error".into(),
                    errno: None,
                }
                .into(),
            };
            assert_eq!(reply, &expected, "{d} {name}");
        }
    }
}

#[test]
fn rows_common_to_every_dialect() {
    for d in Dialect::ALL {
        let ext = d.is_extended().then_some(1000);
        let rows: Vec<(&str, Msg, Outcome)> = vec![
            (
                "Tread file",
                Tread {
                    fid: Fid(FILE),
                    offset: 0,
                    count: 10,
                }
                .into(),
                Resend,
            ),
            (
                "Twrite file",
                Twrite {
                    fid: Fid(FILE),
                    offset: 0,
                    data: Data("x".into()),
                }
                .into(),
                Resend,
            ),
            (
                "Twalk",
                Twalk {
                    fid: Fid(0),
                    newfid: Fid(9),
                    wnames: WalkNames::new(["g"]).unwrap(),
                }
                .into(),
                Resend,
            ),
            (
                "Tattach without afid",
                Tattach {
                    fid: Fid(9),
                    afid: NOFID,
                    uname: "glenda".into(),
                    aname: "".into(),
                    n_uname: ext,
                }
                .into(),
                Resend,
            ),
            ("Tremove", Tremove { fid: Fid(WALKED) }.into(), Fail),
            (
                "Tauth",
                Tauth {
                    afid: Fid(9),
                    uname: "glenda".into(),
                    aname: "".into(),
                    n_uname: ext,
                }
                .into(),
                Fail,
            ),
            (
                "Tclunk of a rebuilt fid",
                Tclunk { fid: Fid(WALKED) }.into(),
                Resend,
            ),
        ];
        for (name, msg, expect) in rows {
            check(d, name, setup(d, rdwr(d), false), msg, expect);
        }
    }
}

#[test]
fn rows_of_9p2000_and_u() {
    for d in [Dialect::Base, Dialect::DotU] {
        let ext = d.is_extended();
        let stat = |name: &'static str| Stat {
            name: name.into(),
            ..Stat::unchanged(d)
        };
        let rows: Vec<(&str, Msg, Outcome, bool)> = vec![
            ("Tstat", Tstat { fid: Fid(FILE) }.into(), Resend, false),
            (
                "Topen",
                Topen {
                    fid: Fid(WALKED),
                    mode: open_mode::READ,
                }
                .into(),
                Resend,
                false,
            ),
            (
                "Twstat without rename",
                Twstat {
                    fid: Fid(FILE),
                    stat: stat(""),
                }
                .into(),
                Resend,
                false,
            ),
            (
                "Twstat with rename",
                Twstat {
                    fid: Fid(FILE),
                    stat: stat("renamed"),
                }
                .into(),
                Fail,
                false,
            ),
            (
                "Tcreate",
                Tcreate {
                    fid: Fid(WALKED),
                    name: "n".into(),
                    perm: 0o644,
                    mode: 0,
                    extension: ext.then(Bytes::new),
                }
                .into(),
                Fail,
                false,
            ),
            (
                "directory Tread at 0",
                Tread {
                    fid: Fid(DIR),
                    offset: 0,
                    count: 100,
                }
                .into(),
                Resend,
                false,
            ),
            (
                "directory Tread, fast-forwarded",
                Tread {
                    fid: Fid(DIR),
                    offset: 100,
                    count: 100,
                }
                .into(),
                Resend,
                true,
            ),
            (
                "directory Tread, not fast-forwarded",
                Tread {
                    fid: Fid(DIR),
                    offset: 100,
                    count: 100,
                }
                .into(),
                Fail,
                false,
            ),
        ];
        for (name, msg, expect, dir_read) in rows {
            check(d, name, setup(d, rdwr(d), dir_read), msg, expect);
        }
    }
}

#[test]
fn rows_of_9p2000_l() {
    let d = Dialect::DotL;
    let lock = |typ: u8| Tlock {
        fid: Fid(FILE),
        typ,
        flags: 0,
        start: 0,
        length: 0,
        proc_id: 1,
        client_id: "c".into(),
    };
    let rows: Vec<(&str, Msg, Outcome, bool)> = vec![
        (
            "Tgetattr",
            Tgetattr {
                fid: Fid(FILE),
                request_mask: 0x7ff,
            }
            .into(),
            Resend,
            false,
        ),
        (
            "Treadlink",
            Treadlink { fid: Fid(WALKED) }.into(),
            Resend,
            false,
        ),
        ("Tstatfs", Tstatfs { fid: Fid(0) }.into(), Resend, false),
        (
            "Txattrwalk",
            Txattrwalk {
                fid: Fid(FILE),
                newfid: Fid(9),
                name: "user.x".into(),
            }
            .into(),
            Resend,
            false,
        ),
        (
            "Tgetlock",
            Tgetlock {
                fid: Fid(FILE),
                typ: 1,
                start: 0,
                length: 0,
                proc_id: 1,
                client_id: "c".into(),
            }
            .into(),
            Resend,
            false,
        ),
        (
            "Tlopen",
            Tlopen {
                fid: Fid(WALKED),
                flags: lflags::RDONLY,
            }
            .into(),
            Resend,
            false,
        ),
        (
            "Tsetattr",
            Tsetattr {
                fid: Fid(FILE),
                valid: 1,
                mode: 0o600,
                ..Default::default()
            }
            .into(),
            Resend,
            false,
        ),
        (
            "Treaddir at 0",
            Treaddir {
                fid: Fid(DIR),
                offset: 0,
                count: 100,
            }
            .into(),
            Resend,
            false,
        ),
        (
            "Treaddir, position kept",
            Treaddir {
                fid: Fid(DIR),
                offset: 100,
                count: 100,
            }
            .into(),
            Resend,
            true,
        ),
        (
            "Treaddir, no position",
            Treaddir {
                fid: Fid(DIR),
                offset: 100,
                count: 100,
            }
            .into(),
            Fail,
            false,
        ),
        (
            "Tlcreate",
            Tlcreate {
                fid: Fid(WALKED),
                name: "n".into(),
                flags: 0,
                mode: 0o644,
                gid: 0,
            }
            .into(),
            Fail,
            false,
        ),
        (
            "Tmkdir",
            Tmkdir {
                dfid: Fid(0),
                name: "n".into(),
                mode: 0o755,
                gid: 0,
            }
            .into(),
            Fail,
            false,
        ),
        (
            "Tsymlink",
            Tsymlink {
                fid: Fid(0),
                name: "n".into(),
                symtgt: "t".into(),
                gid: 0,
            }
            .into(),
            Fail,
            false,
        ),
        (
            "Tmknod",
            Tmknod {
                dfid: Fid(0),
                name: "n".into(),
                mode: 0,
                major: 0,
                minor: 0,
                gid: 0,
            }
            .into(),
            Fail,
            false,
        ),
        (
            "Tlink",
            Tlink {
                dfid: Fid(0),
                fid: Fid(FILE),
                name: "n".into(),
            }
            .into(),
            Fail,
            false,
        ),
        (
            "Tunlinkat",
            Tunlinkat {
                dirfid: Fid(0),
                name: "g".into(),
                flags: 0,
            }
            .into(),
            Fail,
            false,
        ),
        (
            "Trename",
            Trename {
                fid: Fid(WALKED),
                dfid: Fid(0),
                name: "n".into(),
            }
            .into(),
            Fail,
            false,
        ),
        (
            "Trenameat",
            Trenameat {
                olddirfid: Fid(0),
                oldname: "g".into(),
                newdirfid: Fid(0),
                newname: "n".into(),
            }
            .into(),
            Fail,
            false,
        ),
        (
            "Txattrcreate",
            Txattrcreate {
                fid: Fid(FILE),
                name: "user.x".into(),
                attr_size: 1,
                flags: 0,
            }
            .into(),
            Fail,
            false,
        ),
        ("Tlock acquire", lock(1).into(), Fail, false),
        ("Tlock release", lock(2).into(), Resend, false),
        (
            "Tfsync, nothing written",
            Tfsync {
                fid: Fid(FILE),
                datasync: 0,
            }
            .into(),
            Resend,
            false,
        ),
    ];
    for (name, msg, expect, dir_read) in rows {
        check(d, name, setup(d, rdwr(d), dir_read), msg, expect);
    }
}

#[test]
fn appending_writes_fail_instead_of_repeating() {
    // .L: a fid opened with O_APPEND.
    let p = setup(Dialect::DotL, lflags::WRONLY | lflags::APPEND, false);
    check(
        Dialect::DotL,
        "Twrite O_APPEND",
        p,
        Twrite {
            fid: Fid(FILE),
            offset: 0,
            data: Data("x".into()),
        }
        .into(),
        Fail,
    );
    // 9P2000: an append-only file (QTAPPEND in its qid).
    for d in [Dialect::Base, Dialect::DotU] {
        let mut p = Pair::attached_with(d, table_config());
        p.server.touch(&["log"], false);
        p.server
            .files
            .get_mut(&vec![b"log".to_vec()])
            .unwrap()
            .0
            .typ = qid_type::APPEND;
        p.open_file(2, FILE, &["log"], open_mode::WRITE as u32);
        check(
            d,
            "Twrite append-only",
            p,
            Twrite {
                fid: Fid(FILE),
                offset: 0,
                data: Data("x".into()),
            }
            .into(),
            Fail,
        );
    }
}

#[test]
fn clunk_of_a_fid_that_could_not_be_rebuilt_is_answered_locally() {
    for d in Dialect::ALL {
        let mut p = setup(d, rdwr(d), false);
        p.client(TAG, Tclunk { fid: Fid(FILE) });
        p.kill();
        p.server.replace(&["f"]); // the open file is gone: FILE goes stale
        let log = p.reconnect_log();
        assert!(!log.iter().any(|f| f.tag == TAG), "{d}");
        assert_eq!(p.reply_to(TAG), &Msg::Rclunk(Rclunk {}), "{d}");
        assert_eq!(p.s.fid_count(), 3, "{d}: FILE forgotten");
    }
}

#[test]
fn flush_in_flight_is_answered_locally_and_its_request_dropped() {
    for d in Dialect::ALL {
        let mut p = setup(d, rdwr(d), false);
        p.client(
            TAG,
            Tread {
                fid: Fid(FILE),
                offset: 0,
                count: 10,
            },
        );
        p.client(TAG + 1, Tflush { oldtag: TAG });
        p.kill();
        assert_eq!(p.reply_to(TAG + 1), &Msg::Rflush(Rflush {}), "{d}");
        let log = p.reconnect_log();
        assert!(
            p.replies_to(TAG).is_empty(),
            "{d}: the flushed read got a reply"
        );
        assert!(
            !log.iter().any(|f| f.tag == TAG || f.tag == TAG + 1),
            "{d}: resent"
        );
    }
}

#[test]
fn fsync_tells_the_truth_once_kept_writes_are_written_again() {
    // The write was acknowledged, then the server died before any fsync: the session wrote it
    // again after the rebuild, so the fsync in flight is resent and tells the truth.
    let mut p = setup(Dialect::DotL, lflags::RDWR, false);
    p.client(
        6,
        Twrite {
            fid: Fid(FILE),
            offset: 0,
            data: Data("data".into()),
        },
    );
    p.serve();
    p.to_client.clear();
    check(
        Dialect::DotL,
        "Tfsync after kept writes",
        p,
        Tfsync {
            fid: Fid(FILE),
            datasync: 0,
        }
        .into(),
        Resend,
    );
}

#[test]
fn fsync_fails_when_acknowledged_writes_could_not_be_kept() {
    // An append cannot be written again: it died with the link, and fsync says so.
    let mut p = setup(Dialect::DotL, lflags::RDWR | lflags::APPEND, false);
    p.client(
        6,
        Twrite {
            fid: Fid(FILE),
            offset: 0,
            data: Data("data".into()),
        },
    );
    p.serve();
    p.to_client.clear();
    check(
        Dialect::DotL,
        "Tfsync after lost appends",
        p,
        Tfsync {
            fid: Fid(FILE),
            datasync: 0,
        }
        .into(),
        Fail,
    );
}

/// An attach through an auth fid in flight at a loss fails (the auth fid did not survive the
/// link: sent again, it would name nothing); a clunk of a fid the recovery could not rebuild
/// (its file gone) is answered here, never sent (the new link does not know the fid).
#[test]
fn rows_that_hang_on_the_fid() {
    for d in Dialect::ALL {
        let p = setup(d, rdwr(d), false);
        let attach = Tattach {
            fid: Fid(9),
            afid: Fid(8),
            uname: "glenda".into(),
            aname: "".into(),
            n_uname: d.is_extended().then_some(1000),
        };
        check(d, "Tattach with an afid", p, attach.into(), Fail);

        let mut p = setup(d, rdwr(d), false);
        p.client(TAG, Tclunk { fid: Fid(WALKED) });
        p.kill();
        p.server.remove(&["g"]);
        let log = p.reconnect_log();
        assert!(
            !log.iter().any(|f| f.tag == TAG),
            "{d}: the clunk of a fid not rebuilt was sent"
        );
        assert!(
            matches!(p.reply_to(TAG), Msg::Rclunk(_)),
            "{d}: {:?}",
            p.reply_to(TAG)
        );
        assert_eq!(p.s.marks().get(Mark::ReplayClunkLocally), 1, "{d}");
    }
}
