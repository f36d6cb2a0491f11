//! Whatever arrives, the server does not panic and answers each frame with exactly one reply
//! that decodes, carries the request's tag and is the request's reply type or an error; and the
//! tree stays consistent. Random bytes, random valid messages from p9-core's generator, and
//! random sequences of meaningful operations over several connections and crashes.

mod common;

use ::arbitrary::Unstructured;
use bytes::Bytes;
use common::frame;
use p9_core::*;
use proptest::prelude::*;
use ramfs::{Conn, Fs, Limits};

/// `n` cases, unless `PROPTEST_CASES` asks for another number (for a longer search).
fn cases(n: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = n;
    }
    config
}

/// Small limits, so that random lengths and offsets hit them instead of allocating a lot.
fn small_fs() -> Fs {
    let mut fs = Fs::with_limits(Limits {
        max_file_size: 64 << 10,
        max_bytes: 256 << 10,
        max_files: 64,
        max_fids: 32,
        max_locks: 32,
    });
    fs.write_file("a/b", b"hello").unwrap();
    fs.write_file("a/c", b"").unwrap();
    fs.mkdir_p("d").unwrap();
    fs.set_mode("a/c", dm::EXCL | 0o666).unwrap();
    fs.symlink("ln", b"a/b").unwrap();
    fs
}

/// A connection in `dialect` (none: not versioned), with fid 0 on the root, 1 on `a` and 2 on
/// `a/b`.
fn connect(fs: &mut Fs, dialect: Option<Dialect>) -> Conn {
    let mut conn = Conn::new(fs, 4096);
    let Some(d) = dialect else { return conn };
    let tv = Tversion {
        msize: 4096,
        version: d.version_string().into(),
    };
    conn.handle(fs, &frame(NOTAG, tv));
    let attach = Tattach {
        fid: Fid(0),
        afid: NOFID,
        uname: "fuzz".into(),
        aname: "".into(),
        n_uname: d.is_extended().then_some(7),
    };
    conn.handle(fs, &frame(1, attach));
    for (fid, names) in [(1, &["a"][..]), (2, &["a", "b"][..])] {
        let walk = Twalk {
            fid: Fid(0),
            newfid: Fid(fid),
            wnames: WalkNames::new(names).unwrap(),
        };
        conn.handle(fs, &frame(1, walk));
    }
    conn
}

/// Serve `request` and check the reply: it decodes, has the tag, is the right type, fits the
/// msize; and the tree is consistent. Returns the reply frame.
fn serve_and_check(conn: &mut Conn, fs: &mut Fs, request: &Bytes) -> Result<Bytes, TestCaseError> {
    let before = conn.dialect().unwrap_or(Dialect::Base);
    let decoded = Fcall::decode(request, before).ok();
    let reply = conn.handle(fs, request);

    // A Tversion is answered in the dialect it asked for; anything else in the session's.
    let reply_dialect = match &decoded {
        Some(Fcall {
            msg: Msg::Tversion(v),
            ..
        }) => Dialect::negotiate(&v.version).unwrap_or(Dialect::Base),
        _ => conn.dialect().unwrap_or(Dialect::Base),
    };
    let fcall = Fcall::decode(&reply, reply_dialect)
        .map_err(|e| TestCaseError::fail(format!("reply does not decode: {e}")))?;
    let tag = request
        .get(5..7)
        .map_or(NOTAG, |b| u16::from_le_bytes([b[0], b[1]]));
    prop_assert_eq!(fcall.tag, tag);
    let got = fcall.msg.msg_type();
    let is_error = matches!(got, MsgType::Rerror | MsgType::Rlerror);
    match decoded.as_ref().map(|f| f.msg.msg_type()) {
        Some(t) if t.is_request() => prop_assert!(
            is_error || Some(got) == t.reply(),
            "{} answered with {}",
            t.name(),
            got.name()
        ),
        _ => prop_assert!(is_error, "a non-request answered with {}", got.name()),
    }
    if conn.dialect().is_some() {
        prop_assert!(reply.len() <= conn.msize() as usize);
    }
    fs.check().map_err(TestCaseError::fail)?;
    Ok(reply)
}

fn any_state() -> impl Strategy<Value = Option<Dialect>> {
    prop_oneof![
        Just(None),
        Just(Some(Dialect::Base)),
        Just(Some(Dialect::DotU)),
        Just(Some(Dialect::DotL)),
    ]
}

/// Random bytes, and random bytes made to look like a frame (right size, a real type number).
fn any_frame() -> impl Strategy<Value = Vec<u8>> {
    let raw = prop::collection::vec(any::<u8>(), 0..200);
    let framed = (
        prop::sample::select(MsgType::ALL.to_vec()),
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..120),
    )
        .prop_map(|(t, tag, body)| {
            let mut f = Vec::with_capacity(7 + body.len());
            f.extend_from_slice(&(7 + body.len() as u32).to_le_bytes());
            f.push(t as u8);
            f.extend_from_slice(&tag.to_le_bytes());
            f.extend_from_slice(&body);
            f
        });
    prop_oneof![raw, framed]
}

/// Make a generated message name fids 0..6, which exist now and then, instead of random ones
/// that never do: every 4-byte copy of each fid it names is rewritten.
fn small_fids(request: &Bytes, dialect: Dialect) -> Bytes {
    let Ok(fids) = request_fids(request, dialect) else {
        return request.clone();
    };
    let mut out = request.to_vec();
    for &fid in fids.as_slice() {
        if fid == NOFID.0 {
            continue;
        }
        let (from, to) = (fid.to_le_bytes(), (fid % 6).to_le_bytes());
        let mut i = 7;
        while i + 4 <= out.len() {
            if out[i..i + 4] == from {
                out[i..i + 4].copy_from_slice(&to);
                i += 4;
            } else {
                i += 1;
            }
        }
    }
    Bytes::from(out)
}

proptest! {
    #![proptest_config(cases(512))]

    #[test]
    fn random_frames_get_one_decodable_reply(
        state in any_state(),
        frames in prop::collection::vec(any_frame(), 1..8),
    ) {
        let mut fs = small_fs();
        let mut conn = connect(&mut fs, state);
        prop_assert_eq!(conn.fid_count(), if state.is_some() { 3 } else { 0 });
        for f in frames {
            serve_and_check(&mut conn, &mut fs, &Bytes::from(f))?;
        }
    }
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn random_valid_requests_get_one_decodable_reply(
        dialect in prop::sample::select(Dialect::ALL.to_vec()),
        seed in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        let mut fs = small_fs();
        let mut conn = connect(&mut fs, Some(dialect));
        prop_assert_eq!(conn.fid_count(), 3);
        let mut u = Unstructured::new(&seed);
        // An exhausted Unstructured keeps making the first type, Tversion: stop there.
        while !u.is_empty() {
            let Ok(fcall) = p9_core::arbitrary::arbitrary_fcall(&mut u, dialect) else { break };
            // A random Tversion would end the session; version handling has its own tests.
            if matches!(fcall.msg, Msg::Tversion(_)) {
                continue;
            }
            let Ok(request) = fcall.to_frame() else { continue };
            let request = small_fids(&request, dialect);
            serve_and_check(&mut conn, &mut fs, &request)?;
        }
    }
}

/// Operations that mean something in the tree built by [`small_fs`]: small fids, a few names
/// that exist or may be created, offsets and lengths near the data. Single requests on fids
/// 0..6, and compound ones (walk from the root, open, then read or write; walk and create) that
/// make success common.
#[derive(Clone, Debug)]
enum Op {
    Walk {
        fid: u32,
        newfid: u32,
        names: Vec<usize>,
    },
    Open {
        fid: u32,
        mode: u8,
    },
    Create {
        fid: u32,
        name: usize,
        perm: u32,
        mode: u8,
    },
    Read {
        fid: u32,
        offset: u64,
        count: u32,
    },
    Write {
        fid: u32,
        offset: u64,
        len: usize,
    },
    Clunk {
        fid: u32,
    },
    Remove {
        fid: u32,
    },
    Stat {
        fid: u32,
    },
    Wstat {
        fid: u32,
        name: Option<usize>,
        length: Option<u64>,
        mode: Option<u32>,
    },
    Readdir {
        fid: u32,
        offset: u64,
        count: u32,
    },
    Rename {
        fid: u32,
        dfid: u32,
        name: usize,
    },
    Unlink {
        dfid: u32,
        name: usize,
        dir: bool,
    },
    Link {
        dfid: u32,
        fid: u32,
        name: usize,
    },
    Lock {
        fid: u32,
        typ: u8,
        start: u64,
        len: u64,
    },
    /// Walk fid 0 to a file's path as `fid`, open it with `mode`, write.
    Put {
        fid: u32,
        path: usize,
        mode: u8,
        offset: u64,
        len: usize,
    },
    /// Walk fid 0 to a path as `fid`, open it for reading, read (or list).
    Get {
        fid: u32,
        path: usize,
        offset: u64,
        count: u32,
    },
    /// Walk fid 0 to a directory as fid 5 and create `name` in it.
    Make {
        dir: usize,
        name: usize,
        perm: u32,
    },
    /// Switch to the other connection for what follows.
    Switch,
    /// Drop both connections and start two new ones.
    Crash,
    /// Close the current connection in order and open a new one.
    Close,
}

const NAMES: [&str; 6] = ["b", "c", "new", "sub", "..", "a"];
const PATHS: [&[&str]; 9] = [
    &["a", "b"],
    &["a", "c"],
    &["a", "new"],
    &["d", "new"],
    &["new"],
    &["d", "sub", "new"],
    &["a"],
    &["d"],
    &["d", "sub"],
];
const DIRS: [&[&str]; 4] = [&[], &["a"], &["d"], &["d", "sub"]];

fn any_op() -> impl Strategy<Value = Op> {
    let fid = || 0u32..6;
    let name = || 0usize..NAMES.len();
    let path = || 0usize..PATHS.len();
    let perm = || {
        prop::sample::select(vec![
            0o644,
            0o644,
            dm::DIR | 0o755,
            dm::APPEND | 0o644,
            dm::EXCL | 0o600,
        ])
    };
    let offset = || prop_oneof![10 => 0u64..40, 1 => Just(u64::MAX - 3), 1 => Just(70_000)];
    prop_oneof![
        3 => (fid(), fid(), prop::collection::vec(name(), 0..4))
            .prop_map(|(fid, newfid, names)| Op::Walk { fid, newfid, names }),
        2 => (fid(), prop::sample::select(vec![0u8, 1, 2, 3, 0x10, 0x11, 0x40, 0x42]))
            .prop_map(|(fid, mode)| Op::Open { fid, mode }),
        2 => (fid(), name(), perm(), 0u8..3)
            .prop_map(|(fid, name, perm, mode)| Op::Create { fid, name, perm, mode }),
        2 => (fid(), 0u64..40, 0u32..5000).prop_map(|(fid, offset, count)| Op::Read { fid, offset, count }),
        2 => (fid(), offset(), 0usize..100)
            .prop_map(|(fid, offset, len)| Op::Write { fid, offset, len }),
        2 => fid().prop_map(|fid| Op::Clunk { fid }),
        1 => fid().prop_map(|fid| Op::Remove { fid }),
        1 => fid().prop_map(|fid| Op::Stat { fid }),
        2 => (fid(), prop::option::of(name()), prop::option::of(0u64..100), prop::option::of(prop::sample::select(vec![0o600, dm::APPEND | 0o644, dm::DIR | 0o777])))
            .prop_map(|(fid, name, length, mode)| Op::Wstat { fid, name, length, mode }),
        2 => (fid(), 0u64..8, 0u32..400).prop_map(|(fid, offset, count)| Op::Readdir { fid, offset, count }),
        2 => (fid(), fid(), name()).prop_map(|(fid, dfid, name)| Op::Rename { fid, dfid, name }),
        2 => (fid(), name(), any::<bool>()).prop_map(|(dfid, name, dir)| Op::Unlink { dfid, name, dir }),
        1 => (fid(), fid(), name()).prop_map(|(dfid, fid, name)| Op::Link { dfid, fid, name }),
        2 => (fid(), 0u8..4, 0u64..20, 0u64..10).prop_map(|(fid, typ, start, len)| Op::Lock { fid, typ, start, len }),
        5 => (3u32..5, 0usize..6, prop::sample::select(vec![1u8, 2, 0x11, 0x41, 0x42]), offset(), 0usize..300)
            .prop_map(|(fid, path, mode, offset, len)| Op::Put { fid, path, mode, offset, len }),
        4 => (3u32..5, path(), 0u64..40, 0u32..500)
            .prop_map(|(fid, path, offset, count)| Op::Get { fid, path, offset, count }),
        4 => (0usize..DIRS.len(), name(), perm())
            .prop_map(|(dir, name, perm)| Op::Make { dir, name, perm }),
        1 => Just(Op::Switch),
        1 => Just(Op::Crash),
        1 => Just(Op::Close),
    ]
}

/// The requests an operation stands for in `dialect`.
fn requests(op: &Op, d: Dialect) -> Vec<Msg> {
    let name = |i: usize| Bytes::from_static(NAMES[i].as_bytes());
    let l = d == Dialect::DotL;
    let walk = |fid: u32, newfid: u32, names: &[&str]| -> Msg {
        Twalk {
            fid: Fid(fid),
            newfid: Fid(newfid),
            wnames: WalkNames::new(names).unwrap(),
        }
        .into()
    };
    let open = |fid: u32, mode: u8| -> Msg {
        if l {
            let mut flags = u32::from(mode & 3);
            if mode & 0x10 != 0 {
                flags |= lflags::TRUNC;
            }
            if mode & 0x40 != 0 {
                flags |= lflags::APPEND;
            }
            Tlopen {
                fid: Fid(fid),
                flags,
            }
            .into()
        } else {
            Topen {
                fid: Fid(fid),
                mode,
            }
            .into()
        }
    };
    let create = |fid: u32, n: usize, perm: u32, mode: u8| -> Msg {
        if !l {
            return Tcreate {
                fid: Fid(fid),
                name: name(n),
                perm,
                mode,
                extension: d.is_extended().then(Bytes::new),
            }
            .into();
        }
        if perm & dm::DIR != 0 {
            Tmkdir {
                dfid: Fid(fid),
                name: name(n),
                mode: perm & 0o777,
                gid: 0,
            }
            .into()
        } else {
            Tlcreate {
                fid: Fid(fid),
                name: name(n),
                flags: u32::from(mode),
                mode: perm & 0o777,
                gid: 0,
            }
            .into()
        }
    };
    let write = |fid: u32, offset: u64, len: usize| -> Msg {
        Twrite {
            fid: Fid(fid),
            offset,
            data: Data(Bytes::from(vec![b'x'; len])),
        }
        .into()
    };
    let read = |fid: u32, offset: u64, count: u32| -> Msg {
        Tread {
            fid: Fid(fid),
            offset,
            count,
        }
        .into()
    };
    let clunk = |fid: u32| -> Msg { Tclunk { fid: Fid(fid) }.into() };
    match *op {
        Op::Walk {
            fid,
            newfid,
            ref names,
        } => {
            vec![walk(
                fid,
                newfid,
                &names.iter().map(|&i| NAMES[i]).collect::<Vec<_>>(),
            )]
        }
        Op::Open { fid, mode } => vec![open(fid, mode)],
        Op::Create {
            fid,
            name: n,
            perm,
            mode,
        } => vec![create(fid, n, perm, mode)],
        Op::Read { fid, offset, count } => vec![read(fid, offset, count)],
        Op::Write { fid, offset, len } => vec![write(fid, offset, len)],
        Op::Clunk { fid } => vec![clunk(fid)],
        Op::Remove { fid } => vec![Tremove { fid: Fid(fid) }.into()],
        Op::Stat { fid } if l => vec![Tgetattr {
            fid: Fid(fid),
            request_mask: !0,
        }
        .into()],
        Op::Stat { fid } => vec![Tstat { fid: Fid(fid) }.into()],
        Op::Wstat {
            fid, length, mode, ..
        } if l => vec![Tsetattr {
            fid: Fid(fid),
            valid: u32::from(length.is_some()) << 3 | u32::from(mode.is_some()),
            mode: mode.unwrap_or(0),
            uid: 0,
            gid: 0,
            size: length.unwrap_or(0),
            atime_sec: 0,
            atime_nsec: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
        }
        .into()],
        Op::Wstat {
            fid,
            name: n,
            length,
            mode,
        } => {
            let mut stat = common::blank_stat(d);
            stat.name = n.map(name).unwrap_or_default();
            stat.length = length.unwrap_or(!0);
            stat.mode = mode.unwrap_or(!0);
            vec![Twstat {
                fid: Fid(fid),
                stat,
            }
            .into()]
        }
        Op::Readdir { fid, offset, count } if l => {
            vec![Treaddir {
                fid: Fid(fid),
                offset,
                count,
            }
            .into()]
        }
        Op::Readdir { fid, offset, count } => vec![read(fid, offset * 60, count)],
        Op::Rename { fid, dfid, name: n } if l => {
            vec![Trename {
                fid: Fid(fid),
                dfid: Fid(dfid),
                name: name(n),
            }
            .into()]
        }
        Op::Rename { fid, name: n, .. } => {
            let mut stat = common::blank_stat(d);
            stat.name = name(n);
            vec![Twstat {
                fid: Fid(fid),
                stat,
            }
            .into()]
        }
        Op::Unlink { dfid, name: n, dir } if l => vec![Tunlinkat {
            dirfid: Fid(dfid),
            name: name(n),
            flags: if dir { 0x200 } else { 0 },
        }
        .into()],
        Op::Link { dfid, fid, name: n } if l => {
            vec![Tlink {
                dfid: Fid(dfid),
                fid: Fid(fid),
                name: name(n),
            }
            .into()]
        }
        Op::Lock {
            fid,
            typ,
            start,
            len,
        } if l => vec![Tlock {
            fid: Fid(fid),
            typ,
            flags: 0,
            start,
            length: len,
            proc_id: 1,
            client_id: "sim".into(),
        }
        .into()],
        Op::Put {
            fid,
            path,
            mode,
            offset,
            len,
        } => vec![
            clunk(fid),
            walk(0, fid, PATHS[path]),
            open(fid, mode),
            write(fid, offset, len),
        ],
        Op::Get {
            fid,
            path,
            offset,
            count,
        } => {
            let mut v = vec![clunk(fid), walk(0, fid, PATHS[path]), open(fid, 0)];
            v.push(match (l, path >= 6) {
                (true, true) => Treaddir {
                    fid: Fid(fid),
                    offset: offset % 4,
                    count,
                }
                .into(),
                (false, true) => read(fid, 0, count),
                _ => read(fid, offset, count),
            });
            v
        }
        Op::Make { dir, name: n, perm } => vec![
            clunk(5),
            walk(0, 5, DIRS[dir]),
            create(5, n, perm, 0),
            clunk(5),
        ],
        Op::Unlink { .. } | Op::Link { .. } | Op::Lock { .. } => vec![],
        Op::Switch | Op::Crash | Op::Close => vec![],
    }
}

/// Run `ops` on a fresh tree with two connections; returns every reply frame, in order.
fn run(d: Dialect, ops: &[Op]) -> Result<Vec<Bytes>, TestCaseError> {
    let mut fs = small_fs();
    let mut conns = [connect(&mut fs, Some(d)), connect(&mut fs, Some(d))];
    prop_assert_eq!(conns[0].fid_count() + conns[1].fid_count(), 6);
    let mut current = 0;
    let mut replies = Vec::new();
    for op in ops {
        match op {
            Op::Switch => current = 1 - current,
            Op::Crash => {
                // Dropping the old connections is the crash; the tree stays.
                conns = [connect(&mut fs, Some(d)), connect(&mut fs, Some(d))];
                fs.check().map_err(TestCaseError::fail)?;
            }
            Op::Close => {
                let fresh = connect(&mut fs, Some(d));
                std::mem::replace(&mut conns[current], fresh).close(&mut fs);
                fs.check().map_err(TestCaseError::fail)?;
            }
            op => {
                for msg in requests(op, d) {
                    let tag = replies.len() as u16;
                    let request = Fcall::new(tag, msg).to_frame().unwrap();
                    replies.push(serve_and_check(&mut conns[current], &mut fs, &request)?);
                }
            }
        }
    }
    // Closing everything frees every removed file and every lock.
    for conn in conns {
        conn.close(&mut fs);
    }
    prop_assert_eq!(fs.lock_count(), 0);
    fs.check().map_err(TestCaseError::fail)?;
    Ok(replies)
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn random_operations_keep_the_tree_consistent_and_are_deterministic(
        dialect in prop::sample::select(Dialect::ALL.to_vec()),
        ops in prop::collection::vec(any_op(), 1..60),
    ) {
        let first = run(dialect, &ops)?;
        let second = run(dialect, &ops)?;
        prop_assert_eq!(first, second);
    }
}
