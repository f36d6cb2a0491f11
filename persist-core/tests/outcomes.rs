//! The outcome table (DESIGN §3.6, `resolve.rs`): a create, remove, link or rename in flight
//! when the link dies is settled by looking at the server after the reconnect — sent again when
//! it observably did not run, answered as done only where what the server shows could be no
//! other actor's doing, failed as "possibly not completed" otherwise — so it runs at most once
//! and no answer is one the server could not have given. Served by the real in-memory server
//! (ramfs), whose files outlive its connections as a restarted server's do.

use std::collections::VecDeque;

use bytes::Bytes;
use p9_core::*;
use persist_core::{BackendId, Config, Event, Instant, LinkId, Output, Session};
use ramfs::{Conn, Fs};

const TAG: u16 = 77;
const ROOT: u32 = 0;
/// Walked to the directory `d`.
const DIR: u32 = 1;
/// Walked to the file `d/f` (holding "data").
const FILE: u32 = 2;

/// One session before a ramfs; frames to the server are delivered at once unless held.
struct Rig {
    now: Instant,
    s: Session,
    fs: Fs,
    dialect: Dialect,
    link: Option<(LinkId, Conn)>,
    dial: Option<LinkId>,
    /// Hold frames for the server instead of delivering them.
    holding: bool,
    held: VecDeque<Bytes>,
    replies: Vec<Fcall>,
    events: Vec<Event>,
    /// Changes the server's replies on their way to the session (what ramfs never does).
    rewrite: Option<Box<dyn FnMut(Fcall) -> Fcall>>,
}

impl Rig {
    fn new(dialect: Dialect, cfg: Config) -> Rig {
        let mut fs = Fs::new();
        fs.write_file("d/f", b"data").unwrap();
        let now = Instant::from_millis(1_000);
        let mut r = Rig {
            now,
            s: Session::new(cfg, BackendId(0), now),
            fs,
            dialect,
            link: None,
            dial: None,
            holding: false,
            held: VecDeque::new(),
            replies: Vec::new(),
            events: Vec::new(),
            rewrite: None,
        };
        r.client(
            NOTAG,
            Tversion {
                msize: 8192,
                version: dialect.version_string().into(),
            },
        );
        r.connect();
        r.client(
            1,
            Tattach {
                fid: Fid(ROOT),
                afid: NOFID,
                uname: "glenda".into(),
                aname: "".into(),
                n_uname: dialect.is_extended().then_some(0),
            },
        );
        r.walk(2, DIR, &["d"]);
        r.walk(3, FILE, &["d", "f"]);
        assert!(
            r.replies.iter().all(|f| !is_error(&f.msg)),
            "{:?}",
            r.replies
        );
        r.replies.clear();
        r
    }

    fn walk(&mut self, tag: u16, newfid: u32, names: &[&str]) {
        let wnames = WalkNames::new(names).unwrap();
        let walk = Twalk {
            fid: Fid(ROOT),
            newfid: Fid(newfid),
            wnames,
        };
        self.client(tag, walk);
    }

    fn client(&mut self, tag: u16, msg: impl Into<Msg>) {
        let frame = Fcall::new(tag, msg).to_frame().unwrap();
        self.s.handle_client_frame(self.now, frame);
        self.run();
    }

    /// Carry out everything the session asks, until it asks nothing more.
    fn run(&mut self) {
        loop {
            while let Some(e) = self.s.poll_event() {
                self.events.push(e);
            }
            let Some(out) = self.s.poll_output() else {
                if self.holding {
                    return;
                }
                let Some(frame) = self.held.pop_front() else {
                    return;
                };
                self.deliver(frame);
                continue;
            };
            match out {
                Output::ToClient(frame) => {
                    let fc = Fcall::decode(&frame, self.dialect).unwrap();
                    self.replies.push(fc);
                }
                Output::ToLink { link, frame } => {
                    if self.link.as_ref().is_some_and(|(l, _)| *l == link) {
                        self.held.push_back(frame);
                    }
                }
                Output::Dial { link, .. } => self.dial = Some(link),
                Output::CloseLink { .. } | Output::CloseClient => {}
            }
        }
    }

    fn deliver(&mut self, frame: Bytes) {
        let Some((link, conn)) = self.link.as_mut() else {
            return;
        };
        let link = *link;
        let mut reply = conn.handle(&mut self.fs, &frame);
        if let Some(rewrite) = self.rewrite.as_mut() {
            let fc = Fcall::decode(&reply, self.dialect).unwrap();
            reply = rewrite(fc).to_frame().unwrap();
        }
        self.s.handle_server_frame(self.now, link, reply);
    }

    /// The server runs what it was sent so far, but its replies are lost with the link.
    fn run_held_unanswered(&mut self) {
        let (_, conn) = self.link.as_mut().unwrap();
        for frame in self.held.drain(..) {
            conn.handle(&mut self.fs, &frame);
        }
    }

    /// Answer the pending dial with a fresh connection.
    fn connect(&mut self) {
        let link = self.dial.take().expect("a dial was asked for");
        self.link = Some((link, Conn::new(&mut self.fs, 8192)));
        self.s.handle_link_up(self.now, link);
        self.run();
    }

    /// The server's process dies (its files stay); nothing it was sent is answered.
    fn kill(&mut self) {
        let (link, conn) = self.link.take().unwrap();
        conn.close(&mut self.fs);
        self.held.clear();
        self.s.handle_link_down(self.now, link, "connection reset");
        self.run();
    }

    /// Redial and serve the whole recovery and whatever follows.
    fn reconnect(&mut self) {
        self.holding = false;
        while self.dial.is_none() {
            let at = self.s.poll_timeout().expect("a redial is due");
            self.now = self.now.max(at);
            self.s.handle_timeout(self.now);
            self.run();
        }
        self.connect();
    }

    /// Send `op` under TAG, lose the link with it in flight (run by the server first when
    /// `ran`), reconnect; the one reply to TAG.
    fn in_flight_at_loss(&mut self, op: impl Into<Msg>, ran: bool) -> Msg {
        self.holding = true;
        self.client(TAG, op);
        assert_eq!(
            self.held.len(),
            1,
            "the request reached the link: {:?}",
            self.replies
        );
        if ran {
            self.run_held_unanswered();
        }
        self.kill();
        self.reconnect();
        self.reply_to(TAG)
    }

    fn reply_to(&self, tag: u16) -> Msg {
        let replies: Vec<&Fcall> = self.replies.iter().filter(|f| f.tag == tag).collect();
        assert_eq!(replies.len(), 1, "exactly one reply to {tag}: {replies:?}");
        replies[0].msg.clone()
    }

    /// The replies to TAG and to `flush` (its Tflush), in the order they came.
    fn replies_to_both(&self, flush: u16) -> Vec<(u16, MsgType)> {
        self.replies
            .iter()
            .map(|f| (f.tag, f.msg.msg_type()))
            .filter(|(t, _)| *t == TAG || *t == flush)
            .collect()
    }

    /// Open FILE (`d/f`) with `flags`.
    fn open_file(&mut self, flags: u32) {
        let open = Tlopen {
            fid: Fid(FILE),
            flags,
        };
        self.client(4, open);
        assert!(!is_error(&self.reply_to(4)), "{:?}", self.replies);
    }

    /// Requests of type `ty` the server received, over every connection.
    fn ran(&self, ty: MsgType) -> u64 {
        self.fs.op_count(ty)
    }

    /// What the session said of TAG's outcome: done (answered so) or not (sent again).
    fn resolved(&self) -> Option<bool> {
        self.events.iter().find_map(|e| match e {
            Event::OutcomeResolved { tag, done, .. } if *tag == TAG => Some(*done),
            _ => None,
        })
    }

    fn failed_why(&self) -> Option<&'static str> {
        self.events.iter().find_map(|e| match e {
            Event::RequestFailed { tag, why, .. } if *tag == TAG => Some(*why),
            _ => None,
        })
    }
}

fn is_error(m: &Msg) -> bool {
    matches!(m, Msg::Rerror(_) | Msg::Rlerror(_))
}

fn resolving() -> Config {
    Config {
        seed: 3,
        ..Config::default()
    }
}

fn is_not_completed(m: &Msg) -> bool {
    match m {
        Msg::Rlerror(e) => e.ecode == errno::EIO,
        // Plain 9P2000's wording: Plan 9's own for EIO.
        Msg::Rerror(e) => {
            e.ename.as_ref() == b"operation possibly not completed"
                || e.ename.as_ref() == b"i/o error"
        }
        _ => false,
    }
}

/// open(O_CREAT) without O_EXCL or O_TRUNC: an open of whatever file is at the name.
fn plain_create() -> Msg {
    Tlcreate {
        fid: Fid(DIR),
        name: "new".into(),
        flags: lflags::RDWR | lflags::CREATE,
        mode: 0o644,
        gid: 0,
    }
    .into()
}

fn lcreate() -> Msg {
    Tlcreate {
        fid: Fid(DIR),
        name: "new".into(),
        flags: lflags::RDWR | lflags::CREATE | lflags::EXCL | lflags::TRUNC,
        mode: 0o644,
        gid: 0,
    }
    .into()
}

/// Every request the table settles, with what it leaves on the server: each run once with the
/// server having run it before the loss and once not. Not run: sent again, answered with its
/// own success, run once. Run: answered as done where the server proves it (a hard link to the
/// session's own file, a create that is an open), otherwise failed as "possibly not completed"
/// (another actor could have made, removed or moved the name) — and never run a second time.
#[test]
fn each_request_runs_at_most_once_and_is_done_only_where_the_server_proves_it() {
    type Effect = fn(&Fs) -> bool;
    let linked: Effect = |fs| fs.qid_of("d/hard").unwrap().path == fs.qid_of("d/f").unwrap().path;
    let moved: Effect = |fs| fs.qid_of("d/f").is_err() && fs.read_file("d/g").unwrap() == b"data";
    let gone: Effect = |fs| fs.qid_of("d/f").is_err();
    let cases: Vec<(Dialect, Msg, MsgType, Effect)> = vec![
        (Dialect::DotL, lcreate(), MsgType::Rlcreate, |fs| {
            fs.read_file("d/new").unwrap().is_empty()
        }),
        (Dialect::DotL, plain_create(), MsgType::Rlcreate, |fs| {
            fs.read_file("d/new").unwrap().is_empty()
        }),
        (
            Dialect::DotL,
            Tmkdir {
                dfid: Fid(DIR),
                name: "sub".into(),
                mode: 0o755,
                gid: 0,
            }
            .into(),
            MsgType::Rmkdir,
            |fs| fs.qid_of("d/sub").unwrap().is_dir(),
        ),
        (
            Dialect::DotL,
            Tsymlink {
                fid: Fid(DIR),
                name: "ln".into(),
                symtgt: "f".into(),
                gid: 0,
            }
            .into(),
            MsgType::Rsymlink,
            |fs| fs.read_link("d/ln").unwrap() == "f",
        ),
        (
            Dialect::DotL,
            Tmknod {
                dfid: Fid(DIR),
                name: "fifo".into(),
                mode: 0o010644,
                major: 0,
                minor: 0,
                gid: 0,
            }
            .into(),
            MsgType::Rmknod,
            |fs| fs.qid_of("d/fifo").is_ok(),
        ),
        (
            Dialect::DotL,
            Tlink {
                dfid: Fid(DIR),
                fid: Fid(FILE),
                name: "hard".into(),
            }
            .into(),
            MsgType::Rlink,
            linked,
        ),
        (
            Dialect::DotL,
            Tunlinkat {
                dirfid: Fid(DIR),
                name: "f".into(),
                flags: 0,
            }
            .into(),
            MsgType::Runlinkat,
            gone,
        ),
        (
            Dialect::DotL,
            Tremove { fid: Fid(FILE) }.into(),
            MsgType::Rremove,
            gone,
        ),
        (
            Dialect::DotL,
            Trename {
                fid: Fid(FILE),
                dfid: Fid(DIR),
                name: "g".into(),
            }
            .into(),
            MsgType::Rrename,
            moved,
        ),
        (
            Dialect::DotL,
            Trenameat {
                olddirfid: Fid(DIR),
                oldname: "f".into(),
                newdirfid: Fid(DIR),
                newname: "g".into(),
            }
            .into(),
            MsgType::Rrenameat,
            moved,
        ),
        (
            Dialect::Base,
            Tcreate {
                fid: Fid(DIR),
                name: "new".into(),
                perm: 0o644,
                mode: open_mode::RDWR,
                extension: None,
            }
            .into(),
            MsgType::Rcreate,
            |fs| fs.qid_of("d/new").is_ok(),
        ),
        (
            Dialect::Base,
            Tcreate {
                fid: Fid(DIR),
                name: "sub".into(),
                perm: dm::DIR | 0o755,
                mode: open_mode::READ,
                extension: None,
            }
            .into(),
            MsgType::Rcreate,
            |fs| fs.qid_of("d/sub").unwrap().is_dir(),
        ),
        (
            Dialect::Base,
            Twstat {
                fid: Fid(FILE),
                stat: Stat {
                    name: "g".into(),
                    ..Stat::unchanged(Dialect::Base)
                },
            }
            .into(),
            MsgType::Rwstat,
            moved,
        ),
        (
            Dialect::Base,
            Tremove { fid: Fid(FILE) }.into(),
            MsgType::Rremove,
            gone,
        ),
    ];
    for (d, op, reply, effect) in cases {
        let ty = op.msg_type();
        let proven = matches!(&op, Msg::Tlink(_)) || op == plain_create();
        for ran in [true, false] {
            let what = format!("{d} {} (ran before the loss: {ran})", ty.name());
            let mut r = Rig::new(d, resolving());
            let got = r.in_flight_at_loss(op.clone(), ran);
            assert_eq!(r.ran(ty), 1, "{what}: run exactly once");
            assert!(effect(&r.fs), "{what}: the server shows it done");
            if ran && !proven {
                assert!(is_not_completed(&got), "{what}: {got:?}");
                assert!(r.failed_why().is_some_and(|w| w.contains("does not tell")));
                assert_eq!(r.resolved(), None, "{what}: no outcome claimed");
            } else {
                assert_eq!(got.msg_type(), reply, "{what}: {got:?}");
                assert_eq!(r.resolved(), Some(ran), "{what}: the event says how");
            }
        }
    }
}

/// A created file's fid is that file afterwards, opened as the client asked but without
/// create, exclusive or truncate; a renamed file's fid follows it (not stale).
#[test]
fn fids_are_what_the_requests_made_them() {
    for ran in [true, false] {
        // Run before the loss, only a create that is an open is answered as done.
        let create = if ran { plain_create() } else { lcreate() };
        let mut r = Rig::new(Dialect::DotL, resolving());
        let Msg::Rlcreate(created) = r.in_flight_at_loss(create, ran) else {
            panic!("lcreate answered as done");
        };
        r.client(
            5,
            Twrite {
                fid: Fid(DIR),
                offset: 0,
                data: Data("hello".into()),
            },
        );
        assert!(matches!(r.reply_to(5), Msg::Rwrite(w) if w.count == 5));
        assert_eq!(r.fs.read_file("d/new").unwrap(), b"hello");
        assert_eq!(created.qid.path, r.fs.qid_of("d/new").unwrap().path);
        // Writing again after a second loss does not truncate what is there.
        r.kill();
        r.reconnect();
        assert_eq!(r.fs.read_file("d/new").unwrap(), b"hello");
    }
    let mut r = Rig::new(Dialect::DotL, resolving());
    let rename = Trename {
        fid: Fid(FILE),
        dfid: Fid(DIR),
        name: "g".into(),
    };
    assert!(!is_error(&r.in_flight_at_loss(rename, false)));
    r.client(
        6,
        Tgetattr {
            fid: Fid(FILE),
            request_mask: 0x7ff,
        },
    );
    let Msg::Rgetattr(a) = r.reply_to(6) else {
        panic!("the renamed file's fid works: {:?}", r.reply_to(6));
    };
    assert_eq!(a.qid.path, r.fs.qid_of("d/g").unwrap().path);
}

/// When the server shows nothing certain — the name gone from both places of a rename, or the
/// name made by something of another kind — the request fails as "possibly not completed", and
/// is not sent again.
#[test]
fn what_cannot_be_seen_fails_and_is_never_resent() {
    // Someone else removed the file during the outage: the rename finds it nowhere.
    let mut r = Rig::new(Dialect::DotL, resolving());
    r.holding = true;
    let rename = Trenameat {
        olddirfid: Fid(DIR),
        oldname: "f".into(),
        newdirfid: Fid(DIR),
        newname: "g".into(),
    };
    r.client(TAG, rename);
    r.kill();
    r.fs.remove_path("d/f").unwrap();
    r.reconnect();
    assert_eq!(r.reply_to(TAG), Rlerror { ecode: errno::EIO }.into());
    assert_eq!(r.ran(MsgType::Trenameat), 0, "never sent blindly");
    assert!(r.failed_why().is_some_and(|w| w.contains("does not tell")));

    // A directory where the file was to be created.
    let mut r = Rig::new(Dialect::DotL, resolving());
    r.holding = true;
    r.client(TAG, lcreate());
    r.kill();
    r.fs.mkdir_p("d/new").unwrap();
    r.reconnect();
    assert_eq!(r.reply_to(TAG), Rlerror { ecode: errno::EIO }.into());
    assert_eq!(r.ran(MsgType::Tlcreate), 0);

    // A remove whose file was replaced by another of the same name: not sent again, and its
    // fid is gone (the new server never holds it).
    let mut r = Rig::new(Dialect::DotL, resolving());
    r.holding = true;
    r.client(TAG, Tremove { fid: Fid(FILE) });
    r.kill();
    r.fs.remove_path("d/f").unwrap();
    r.fs.write_file("d/f", b"other").unwrap();
    r.reconnect();
    assert_eq!(r.reply_to(TAG), Rlerror { ecode: errno::EIO }.into());
    assert_eq!(r.ran(MsgType::Tremove), 0);
    assert_eq!(r.fs.read_file("d/f").unwrap(), b"other");
}

/// `resolve_ambiguous` off (`--ambiguous fail`): styxpersist's rule, whatever happened.
#[test]
fn ambiguous_fail_keeps_the_replay_table() {
    for ran in [true, false] {
        let cfg = Config {
            resolve_ambiguous: false,
            ..resolving()
        };
        let mut r = Rig::new(Dialect::DotL, cfg);
        let got = r.in_flight_at_loss(lcreate(), ran);
        assert_eq!(got, Rlerror { ecode: errno::EIO }.into());
        assert_eq!(r.ran(MsgType::Tlcreate), ran as u64, "never resent");
        assert_eq!(r.resolved(), None);
        assert!(r
            .failed_why()
            .is_some_and(|w| w.contains("in flight when the link died")));
    }
}

/// A request found done and flushed by the client before service resumed: the client hears
/// the done reply first, then the Rflush (flush(5)) — its fid has changed, and it must know.
#[test]
fn a_flush_of_a_request_found_done_gets_the_reply_first() {
    let mut r = Rig::new(Dialect::DotL, resolving());
    r.holding = true;
    r.client(TAG, plain_create());
    r.run_held_unanswered();
    r.kill();
    // Reconnect, serving the recovery one frame at a time until it reopens the created file
    // (the outcome is settled by then), then let the client flush.
    while r.dial.is_none() {
        let at = r.s.poll_timeout().unwrap();
        r.now = r.now.max(at);
        r.s.handle_timeout(r.now);
        r.run();
    }
    r.connect();
    loop {
        let frame = r
            .held
            .pop_front()
            .expect("the recovery reopens the new file");
        let reopen = Fcall::decode(&frame, Dialect::DotL)
            .is_ok_and(|f| matches!(f.msg, Msg::Tlopen(o) if o.fid == Fid(DIR)));
        if reopen {
            r.held.push_front(frame);
            break;
        }
        r.deliver(frame);
        r.run();
    }
    r.client(9, Tflush { oldtag: TAG });
    r.reconnect_rest();
    assert_eq!(
        r.replies_to_both(9),
        [(TAG, MsgType::Rlcreate), (9, MsgType::Rflush)],
        "done reply, then Rflush"
    );
    assert_eq!(r.ran(MsgType::Tlcreate), 1);
}

impl Rig {
    /// Deliver everything held, and what follows.
    fn reconnect_rest(&mut self) {
        self.holding = false;
        self.run();
    }
}

/// A link the session gave up on (its server silent past the server timeout) may still have a
/// server behind it, running what it was sent: a name found absent then shows nothing, and the
/// request fails rather than run a second time.
#[test]
fn a_link_given_up_on_leaves_nothing_certain() {
    let mut r = Rig::new(Dialect::DotL, resolving());
    r.holding = true;
    r.client(TAG, lcreate());
    // Nothing comes back: the session declares the server hung and drops the link.
    let at = r.s.poll_timeout().expect("the silence check");
    r.now = r.now.max(at);
    r.s.handle_timeout(r.now);
    r.run();
    r.link = None;
    r.held.clear();
    r.reconnect();
    assert_eq!(r.reply_to(TAG), Rlerror { ecode: errno::EIO }.into());
    assert_eq!(r.ran(MsgType::Tlcreate), 0, "not run blindly");
    assert!(r.failed_why().is_some_and(|w| w.contains("given up")));
}

/// Two requests in flight on one name cannot be told apart by looking at it: both fail, and
/// neither runs.
#[test]
fn two_in_flight_on_one_name_are_not_told_apart() {
    let r = Rig::new(Dialect::DotL, resolving());
    let unlink = Tunlinkat {
        dirfid: Fid(ROOT),
        name: "d".into(),
        flags: 0x200,
    };
    both_fail_unrun(r, lcreate(), unlink.into());
}

/// `a` and `b` in flight together at a loss: both fail with EIO, and neither is sent again.
fn both_fail_unrun(mut r: Rig, a: Msg, b: Msg) {
    let (ta, tb) = (a.msg_type(), b.msg_type());
    r.holding = true;
    r.client(TAG, a);
    r.client(TAG + 1, b);
    r.kill();
    r.reconnect();
    assert_eq!(r.reply_to(TAG), Rlerror { ecode: errno::EIO }.into());
    assert_eq!(r.reply_to(TAG + 1), Rlerror { ecode: errno::EIO }.into());
    assert_eq!(r.ran(ta) + r.ran(tb), 0);
}

/// The same, with the two requests made through different attaches (another user, and the
/// attach name "/" where the first said ""): the trees may be one, so the names may be one.
/// Found by the simulation: a create run, undone by an unlink in flight with it, was read as
/// not done and ran twice.
#[test]
fn two_in_flight_on_one_name_under_two_attaches_are_not_told_apart() {
    let mut r = Rig::new(Dialect::DotL, resolving());
    let attach = Tattach {
        fid: Fid(20),
        afid: NOFID,
        uname: "other".into(),
        aname: "/".into(),
        n_uname: Some(1000),
    };
    r.client(4, attach);
    let walk = Twalk {
        fid: Fid(20),
        newfid: Fid(21),
        wnames: WalkNames::new(["d"]).unwrap(),
    };
    r.client(5, walk);
    assert!(r.replies.iter().all(|f| !is_error(&f.msg)));
    r.replies.clear();
    let unlink = Tunlinkat {
        dirfid: Fid(21),
        name: "new".into(),
        flags: 0,
    };
    both_fail_unrun(r, lcreate(), unlink.into());
}

/// A name that was taken before the request (a fid stood for its file) shows nothing about
/// the request: a create that found it would have failed.
#[test]
fn a_name_taken_before_is_no_create_done() {
    let mut r = Rig::new(Dialect::DotL, resolving());
    r.holding = true;
    let create = Tlcreate {
        fid: Fid(DIR),
        name: "f".into(),
        flags: lflags::RDWR | lflags::CREATE | lflags::EXCL,
        mode: 0o644,
        gid: 0,
    };
    r.client(TAG, create);
    r.kill();
    r.reconnect();
    assert_eq!(r.reply_to(TAG), Rlerror { ecode: errno::EIO }.into());
    assert_eq!(r.ran(MsgType::Tlcreate), 0);
    assert_eq!(r.fs.read_file("d/f").unwrap(), b"data");
}

/// The lock idiom: the session made `d/lock` with O_EXCL (or `d/lockdir` with mkdir) and let its
/// fid go; a second exclusive create of the name, in flight at a loss and never run, finds
/// the name there. The server would have answered EEXIST: the session must not say "done"
/// (two holders of one lock), and never runs the request blindly.
#[test]
fn an_exclusive_create_of_a_name_that_exists_is_never_done() {
    let excl = |name: &'static str| Tlcreate {
        fid: Fid(DIR),
        name: name.into(),
        flags: lflags::RDWR | lflags::CREATE | lflags::EXCL,
        mode: 0o644,
        gid: 0,
    };
    let mkdir = |name: &'static str| Tmkdir {
        dfid: Fid(DIR),
        name: name.into(),
        mode: 0o755,
        gid: 0,
    };
    for (first, second) in [
        (Msg::from(excl("lock")), Msg::from(excl("lock"))),
        (mkdir("lockdir").into(), mkdir("lockdir").into()),
    ] {
        let ty = first.msg_type();
        let mut r = Rig::new(Dialect::DotL, resolving());
        // The first holder: a fid walked to d, the lock made through it, the fid let go.
        r.walk(4, 10, &["d"]);
        let first = match first {
            Msg::Tlcreate(c) => Msg::from(Tlcreate { fid: Fid(10), ..c }),
            Msg::Tmkdir(m) => Msg::from(Tmkdir { dfid: Fid(10), ..m }),
            m => m,
        };
        r.client(5, first);
        assert!(!is_error(&r.reply_to(5)), "{:?}", r.replies);
        r.client(6, Tclunk { fid: Fid(10) });
        let got = r.in_flight_at_loss(second, false);
        assert!(
            is_not_completed(&got)
                || got
                    == Rlerror {
                        ecode: errno::EEXIST
                    }
                    .into(),
            "{}: {got:?}",
            ty.name()
        );
        assert_eq!(r.ran(ty), 1, "{}: the second never ran", ty.name());
        assert_eq!(r.resolved(), None);
    }
}

/// Another client makes the name while the server is away, and the session's exclusive create
/// (never run) finds it there: not this request's doing, so never answered as done.
#[test]
fn a_name_another_client_made_during_the_outage_is_not_this_create() {
    let mut r = Rig::new(Dialect::DotL, resolving());
    r.holding = true;
    r.client(TAG, lcreate());
    r.kill();
    r.fs.write_file("d/new", b"theirs").unwrap();
    r.reconnect();
    assert!(is_not_completed(&r.reply_to(TAG)), "{:?}", r.replies);
    assert_eq!(r.ran(MsgType::Tlcreate), 0);
    assert_eq!(r.fs.read_file("d/new").unwrap(), b"theirs");
}

/// A Tlcreate that neither excludes nor truncates (Linux's open(O_CREAT), `touch`) leaves
/// the name's file open whether it ran or the name was taken before: found there, it is
/// answered as done, and its fid is that file, open, with the file as it was.
#[test]
fn a_plain_create_of_a_taken_name_is_an_open() {
    let mut r = Rig::new(Dialect::DotL, resolving());
    let file = r.fs.qid_of("d/f").unwrap();
    let create = Tlcreate {
        fid: Fid(DIR),
        name: "f".into(),
        flags: lflags::RDWR | lflags::CREATE,
        mode: 0o644,
        gid: 0,
    };
    let reply = r.in_flight_at_loss(create, false);
    assert!(
        matches!(reply, Msg::Rlcreate(ref c) if c.qid.path == file.path),
        "{reply:?}"
    );
    assert_eq!(r.resolved(), Some(true));
    assert_eq!(r.ran(MsgType::Tlcreate), 0, "never sent again");
    let read = Tread {
        fid: Fid(DIR),
        offset: 0,
        count: 100,
    };
    r.client(TAG + 1, read);
    assert!(
        matches!(r.reply_to(TAG + 1), Msg::Rread(ref d) if d.data.0 == "data"),
        "{:?}",
        r.replies
    );
}

/// ... but a directory or a symlink at the name is no open of it: the server would have
/// refused (EISDIR) or followed the link, so nothing certain is shown, and the request fails
/// with EIO, unrun.
#[test]
fn a_plain_create_finding_a_directory_or_a_symlink_is_not_done() {
    for name in ["sub", "lnk"] {
        let mut r = Rig::new(Dialect::DotL, resolving());
        r.fs.mkdir_p("d/sub").unwrap();
        r.fs.symlink("d/lnk", b"f").unwrap();
        let create = Tlcreate {
            fid: Fid(DIR),
            name: name.into(),
            flags: lflags::RDWR | lflags::CREATE,
            mode: 0o644,
            gid: 0,
        };
        let reply = r.in_flight_at_loss(create, false);
        assert_eq!(reply, Rlerror { ecode: errno::EIO }.into(), "{name}");
        assert_eq!(r.ran(MsgType::Tlcreate), 0, "{name}");
    }
}

/// A hard link is done only when its name leads to the file it links: another file there
/// (another process's lock, made while the server was away) shows nothing of this request,
/// which the server would have refused (EEXIST).
#[test]
fn a_link_whose_name_leads_to_another_file_is_not_done() {
    let mut r = Rig::new(Dialect::DotL, resolving());
    r.holding = true;
    let link = Tlink {
        dfid: Fid(DIR),
        fid: Fid(FILE),
        name: "lockl".into(),
    };
    r.client(TAG, link);
    r.kill();
    r.fs.write_file("d/lockl", b"another's").unwrap();
    r.reconnect();
    assert_eq!(r.reply_to(TAG), Rlerror { ecode: errno::EIO }.into());
    assert_eq!(r.ran(MsgType::Tlink), 0);
    assert_eq!(r.fs.read_file("d/lockl").unwrap(), b"another's");
}

/// A name no server makes ("", ".", "..", "a/b") is not looked for (the walk would find
/// another file, or none): the request is sent again, and the client gets the server's own
/// answer — for every request that names a name, in each place it names one.
#[test]
fn names_that_name_nothing_are_sent_again_for_the_servers_error() {
    type Make = fn(Bytes) -> Msg;
    let requests: Vec<(Dialect, MsgType, Make)> = vec![
        (Dialect::DotL, MsgType::Tlcreate, |name| {
            Tlcreate {
                fid: Fid(DIR),
                name,
                flags: lflags::RDWR | lflags::CREATE | lflags::EXCL,
                mode: 0o644,
                gid: 0,
            }
            .into()
        }),
        (Dialect::DotL, MsgType::Tmkdir, |name| {
            Tmkdir {
                dfid: Fid(DIR),
                name,
                mode: 0o755,
                gid: 0,
            }
            .into()
        }),
        (Dialect::DotL, MsgType::Tsymlink, |name| {
            Tsymlink {
                fid: Fid(DIR),
                name,
                symtgt: "f".into(),
                gid: 0,
            }
            .into()
        }),
        (Dialect::DotL, MsgType::Tmknod, |name| {
            Tmknod {
                dfid: Fid(DIR),
                name,
                mode: 0o010644,
                major: 0,
                minor: 0,
                gid: 0,
            }
            .into()
        }),
        (Dialect::DotL, MsgType::Tlink, |name| {
            Tlink {
                dfid: Fid(DIR),
                fid: Fid(FILE),
                name,
            }
            .into()
        }),
        (Dialect::DotL, MsgType::Tunlinkat, |name| {
            Tunlinkat {
                dirfid: Fid(DIR),
                name,
                flags: 0,
            }
            .into()
        }),
        (Dialect::DotL, MsgType::Trename, |name| {
            Trename {
                fid: Fid(FILE),
                dfid: Fid(DIR),
                name,
            }
            .into()
        }),
        (Dialect::DotL, MsgType::Trenameat, |name| {
            Trenameat {
                olddirfid: Fid(DIR),
                oldname: name,
                newdirfid: Fid(DIR),
                newname: "g".into(),
            }
            .into()
        }),
        (Dialect::DotL, MsgType::Trenameat, |name| {
            Trenameat {
                olddirfid: Fid(DIR),
                oldname: "f".into(),
                newdirfid: Fid(DIR),
                newname: name,
            }
            .into()
        }),
        (Dialect::Base, MsgType::Tcreate, |name| {
            Tcreate {
                fid: Fid(DIR),
                name,
                perm: 0o644,
                mode: open_mode::RDWR,
                extension: None,
            }
            .into()
        }),
        (Dialect::Base, MsgType::Twstat, |name| {
            Twstat {
                fid: Fid(FILE),
                stat: Stat {
                    name,
                    ..Stat::unchanged(Dialect::Base)
                },
            }
            .into()
        }),
    ];
    for (dialect, ty, make) in requests {
        // An empty name in a wstat means "no rename": not a name at all.
        let names: &[&str] = match ty {
            MsgType::Twstat => &[".", "..", "a/b"],
            _ => &["", ".", "..", "a/b"],
        };
        for &name in names {
            let what = format!("{} of {name:?}", ty.name());
            let mut r = Rig::new(dialect, resolving());
            let got = r.in_flight_at_loss(make(Bytes::from(name)), false);
            assert!(is_error(&got), "{what}: {got:?}");
            assert!(
                !is_not_completed(&got),
                "{what}: the server's error, not {got:?}"
            );
            assert_eq!(r.ran(ty), 1, "{what}: sent again once");
            assert_eq!(r.resolved(), Some(false), "{what}");
        }
    }
}

/// Special files made by Tcreate (9P2000.u symlinks, devices, named pipes, sockets, and hard
/// links) are not reopened like files, and a create that removes its file at clunk (ORCLOSE)
/// leaves nothing the look could see: one in flight at a loss is failed as possibly not
/// completed, never looked for or sent again. So is a remove of a file open ORCLOSE (the lost
/// connection's end removed it: its absence shows nothing of the remove).
#[test]
fn special_and_remove_on_clunk_files_are_failed_not_looked_for() {
    let creates: [(&str, u32, u8, &str); 6] = [
        ("symlink", dm::SYMLINK | 0o777, open_mode::READ, "f"),
        ("device", dm::DEVICE | 0o644, open_mode::READ, "c 1 3"),
        ("named pipe", dm::NAMEDPIPE | 0o644, open_mode::READ, ""),
        ("socket", dm::SOCKET | 0o644, open_mode::READ, ""),
        ("hard link", 0x0100_0000 | 0o644, open_mode::READ, "2"),
        (
            "ORCLOSE file",
            0o644,
            open_mode::RDWR | open_mode::RCLOSE,
            "",
        ),
    ];
    for (what, perm, mode, extension) in creates {
        let mut r = Rig::new(Dialect::DotU, resolving());
        let create = Tcreate {
            fid: Fid(DIR),
            name: "new".into(),
            perm,
            mode,
            extension: Some(Bytes::from(extension)),
        };
        let got = r.in_flight_at_loss(create, false);
        assert!(is_not_completed(&got), "{what}: {got:?}");
        assert_eq!(r.ran(MsgType::Tcreate), 0, "{what}: never sent again");
        assert_eq!(r.resolved(), None, "{what}: not looked for");
    }
    for rclose in [false, true] {
        let mut r = Rig::new(Dialect::DotU, resolving());
        let mode = open_mode::RDWR | if rclose { open_mode::RCLOSE } else { 0 };
        r.client(
            4,
            Topen {
                fid: Fid(FILE),
                mode,
            },
        );
        assert!(!is_error(&r.reply_to(4)), "{:?}", r.replies);
        let got = r.in_flight_at_loss(Tremove { fid: Fid(FILE) }, false);
        match rclose {
            true => {
                assert!(is_not_completed(&got), "ORCLOSE: {got:?}");
                assert_eq!(r.ran(MsgType::Tremove), 0);
            }
            false => {
                assert_eq!(got, Rremove {}.into());
                assert_eq!(r.ran(MsgType::Tremove), 1);
            }
        }
    }
}

/// A client's Tflush of a request in flight at a loss (flush(5): an Rflush with no reply means
/// the request never happened). A write may have run: its flush waits for the write's fate —
/// it is sent again, answered, and only then is the Rflush sent. A read changes nothing: its
/// flush is answered at once (Ctrl-C on a read does not wait for the server), and the read is
/// never answered.
#[test]
fn a_flush_of_a_request_in_flight_at_a_loss_waits_only_when_it_may_have_run() {
    for flush_in_flight in [false, true] {
        let what = format!("flush in flight at the loss: {flush_in_flight}");
        let mut r = Rig::new(Dialect::DotL, resolving());
        r.open_file(lflags::RDWR);
        r.holding = true;
        let write = Twrite {
            fid: Fid(FILE),
            offset: 0,
            data: Data("DATA".into()),
        };
        r.client(TAG, write);
        r.run_held_unanswered();
        if flush_in_flight {
            r.client(9, Tflush { oldtag: TAG });
        }
        r.kill();
        if !flush_in_flight {
            r.client(9, Tflush { oldtag: TAG });
        }
        assert!(
            r.replies.iter().all(|f| f.tag != 9 && f.tag != TAG),
            "{what}: nothing answered while the write's fate is unknown: {:?}",
            r.replies
        );
        r.reconnect();
        assert_eq!(
            r.replies_to_both(9),
            [(TAG, MsgType::Rwrite), (9, MsgType::Rflush)],
            "{what}: the write's reply, then the Rflush"
        );
        assert_eq!(r.fs.read_file("d/f").unwrap(), b"DATA");
    }

    let mut r = Rig::new(Dialect::DotL, resolving());
    r.open_file(lflags::RDONLY);
    r.holding = true;
    let read = Tread {
        fid: Fid(FILE),
        offset: 0,
        count: 10,
    };
    r.client(TAG, read);
    r.kill();
    r.client(9, Tflush { oldtag: TAG });
    assert_eq!(r.reply_to(9), Rflush {}.into(), "answered at once");
    r.reconnect();
    assert!(
        r.replies.iter().all(|f| f.tag != TAG),
        "a flushed read is never answered: {:?}",
        r.replies
    );
}

/// A held Tflush the client flushes itself, its tag then reused for a Tflush of another write
/// in flight at the loss: the first write's answer must not release the new flush — only the
/// second write's does, after its reply.
#[test]
fn a_flush_tag_reused_waits_for_its_own_request() {
    let mut r = Rig::new(Dialect::DotL, resolving());
    r.open_file(lflags::RDWR);
    r.holding = true;
    let write = |offset| Twrite {
        fid: Fid(FILE),
        offset,
        data: Data("DATA".into()),
    };
    r.client(TAG, write(0));
    r.client(TAG + 1, write(4));
    r.kill();
    r.client(9, Tflush { oldtag: TAG });
    r.client(10, Tflush { oldtag: 9 });
    assert_eq!(r.reply_to(10), Rflush {}.into());
    r.client(9, Tflush { oldtag: TAG + 1 });
    r.reconnect();
    let order: Vec<u16> = r
        .replies
        .iter()
        .map(|f| f.tag)
        .filter(|t| [TAG, TAG + 1, 9].contains(t))
        .collect();
    assert_eq!(order, [TAG, TAG + 1, 9], "{:?}", r.replies);
}

/// A write in flight on a link the session gave up on (its server silent past the server
/// timeout) may still run on that server later, after anything sent on a new link: resent, it
/// could be overtaken by its own older copy, laid over newer data. It fails as "possibly not
/// completed" and is not sent again; a read in flight is sent again (it changes nothing).
#[test]
fn a_write_on_a_link_given_up_on_is_never_resent() {
    let mut r = Rig::new(Dialect::DotL, resolving());
    r.open_file(lflags::RDWR);
    r.holding = true;
    let write = Twrite {
        fid: Fid(FILE),
        offset: 0,
        data: Data("DATA".into()),
    };
    r.client(TAG, write);
    let read = Tread {
        fid: Fid(FILE),
        offset: 0,
        count: 10,
    };
    r.client(TAG + 1, read);
    let at = r.s.poll_timeout().expect("the silence check");
    r.now = r.now.max(at);
    r.s.handle_timeout(r.now);
    r.run();
    r.link = None;
    r.held.clear();
    r.reconnect();
    assert!(is_not_completed(&r.reply_to(TAG)), "{:?}", r.replies);
    assert_eq!(r.ran(MsgType::Twrite), 0, "never sent again");
    assert!(r.failed_why().is_some_and(|w| w.contains("given up")));
    assert!(matches!(r.reply_to(TAG + 1), Msg::Rread(_)));
    assert_eq!(r.fs.read_file("d/f").unwrap(), b"data");
}
