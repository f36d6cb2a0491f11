//! Connections: version, attach and walk rules, errors per dialect, malformed frames, limits,
//! and what is shared between connections — exclusive opens, locks, and the tree surviving a
//! crash.

mod common;

use bytes::Bytes;
use common::*;
use p9_core::client::ReplyError;
use p9_core::*;
use ramfs::{lock_status, lock_type, Conn, Error, Fs, Limits};

/// Send a raw frame on a connection and decode the reply in `dialect`.
fn raw(conn: &mut Conn, fs: &mut Fs, frame: &Bytes, dialect: Dialect) -> Fcall {
    let reply = conn.handle(fs, frame);
    Fcall::decode(&reply, dialect).expect("reply decodes")
}

fn tversion(msize: u32, version: &str) -> Bytes {
    frame(
        NOTAG,
        Tversion {
            msize,
            version: Bytes::copy_from_slice(version.as_bytes()),
        },
    )
}

#[test]
fn version_negotiates_dialect_and_msize() {
    let mut fs = Fs::new();
    let mut conn = Conn::new(&mut fs, 16384);
    let cases = [
        (65536, "9P2000.L", 16384, "9P2000.L"),
        (8192, "9P2000.u", 8192, "9P2000.u"),
        (8192, "9P2000", 8192, "9P2000"),
        (8192, "9P2000.foo", 8192, "9P2000"),
        (8192, "9P1999", 8192, "unknown"),
    ];
    for (msize, asked, want_msize, want) in cases {
        let r = raw(&mut conn, &mut fs, &tversion(msize, asked), Dialect::Base);
        assert_eq!(r.tag, NOTAG);
        let Msg::Rversion(v) = r.msg else { panic!() };
        assert_eq!((v.msize, &v.version[..]), (want_msize, want.as_bytes()));
        assert_eq!(conn.dialect(), Dialect::from_version(want.as_bytes()));
        assert_eq!(conn.msize(), want_msize);
    }
    // After "unknown" nothing else is served.
    let attach = frame(
        1,
        Tattach {
            fid: Fid(0),
            afid: NOFID,
            uname: "u".into(),
            aname: "".into(),
            n_uname: None,
        },
    );
    let Msg::Rerror(e) = raw(&mut conn, &mut fs, &attach, Dialect::Base).msg else {
        panic!()
    };
    assert_eq!(&e.ename[..], Error::NOT_VERSIONED.ename().as_bytes());

    // An msize too small for the fixed-size replies is refused, in the dialect asked for.
    let r = raw(
        &mut conn,
        &mut fs,
        &tversion(100, "9P2000.L"),
        Dialect::DotL,
    );
    assert_eq!(r.msg, Msg::Rlerror(Rlerror { ecode: 22 }));
    assert_eq!(conn.dialect(), None);
}

#[test]
fn tversion_clunks_every_fid() {
    let mut fs = Fs::new();
    let mut p = Peer::connect(&mut fs, Dialect::DotL);
    let root = p.attach(&mut fs);
    let (f, _) = p.walk(&mut fs, root, &[]);
    p.ok(
        &mut fs,
        Tlcreate {
            fid: f,
            name: "tmp".into(),
            flags: lflags::RDWR,
            mode: 0o600,
            gid: 0,
        },
    );
    assert_eq!(p.conn.fid_count(), 2);
    let r = raw(
        &mut p.conn,
        &mut fs,
        &tversion(MSIZE, "9P2000.L"),
        Dialect::DotL,
    );
    assert!(matches!(r.msg, Msg::Rversion(_)));
    assert_eq!(p.conn.fid_count(), 0);
    let stat = frame(
        3,
        Tgetattr {
            fid: root,
            request_mask: 0,
        },
    );
    let r = raw(&mut p.conn, &mut fs, &stat, Dialect::DotL);
    assert_eq!(r.tag, 3);
    assert_eq!(
        r.msg,
        Msg::Rlerror(Rlerror {
            ecode: errno::EBADF
        })
    );
    assert!(fs.read_file("tmp").is_ok());
}

#[test]
fn attach_accepts_only_the_root_and_no_authentication() {
    for d in Dialect::ALL {
        let mut fs = Fs::new();
        let mut p = Peer::connect(&mut fs, d);
        let n_uname = d.is_extended().then_some(0);
        let attach = |fid, afid, aname: &str| Tattach {
            fid: Fid(fid),
            afid,
            uname: "u".into(),
            aname: Bytes::copy_from_slice(aname.as_bytes()),
            n_uname,
        };
        let Msg::Rattach(a) = p.ok(&mut fs, attach(1, NOFID, "")) else {
            panic!()
        };
        let Msg::Rattach(b) = p.ok(&mut fs, attach(2, NOFID, "/")) else {
            panic!()
        };
        assert_eq!(a.qid, b.qid);
        assert_eq!(a.qid, fs.qid_of("/").unwrap());
        p.err_is(&mut fs, attach(3, NOFID, "other"), Error::BAD_ANAME);
        p.err_is(&mut fs, attach(1, NOFID, ""), Error::FID_IN_USE);
        p.err_is(&mut fs, attach(4, Fid(9), ""), Error::NO_AUTH);
        p.err_is(
            &mut fs,
            Tauth {
                afid: Fid(9),
                uname: "u".into(),
                aname: "".into(),
                n_uname,
            },
            Error::NO_AUTH,
        );
    }
}

#[test]
fn walk_clones_moves_stops_short_and_refuses_what_walk5_refuses() {
    for d in Dialect::ALL {
        let mut fs = Fs::new();
        fs.write_file("a/b/c", b"").unwrap();
        let mut p = Peer::connect(&mut fs, d);
        let root = p.attach(&mut fs);
        let rootq = fs.qid_of("/").unwrap();

        // Zero names: a clone.
        let (clone, q) = p.walk(&mut fs, root, &[]);
        assert!(q.is_empty());
        // `..` at the root stays there.
        let (_, q) = p.walk(&mut fs, root, &["..", ".."]);
        assert_eq!(q, [rootq, rootq]);
        let (_, q) = p.walk(&mut fs, root, &["a", "b", "..", "b", "c"]);
        assert_eq!(q[4], fs.qid_of("a/b/c").unwrap());
        assert_eq!(q[2], fs.qid_of("a").unwrap());

        // A partial walk returns the qids walked and makes no fid.
        let newfid = Fid(500);
        let Msg::Rwalk(r) = p.ok(
            &mut fs,
            Twalk {
                fid: root,
                newfid,
                wnames: WalkNames::new(["a", "zz", "c"]).unwrap(),
            },
        ) else {
            panic!()
        };
        assert_eq!(r.wqids.len(), 1);
        p.err_is(&mut fs, Tclunk { fid: newfid }, Error::UNKNOWN_FID);

        // Failing on the first name is an error.
        p.err_is(
            &mut fs,
            Twalk {
                fid: root,
                newfid,
                wnames: WalkNames::new(["zz"]).unwrap(),
            },
            Error::NOT_FOUND,
        );
        // Walking through a file is an error.
        let (c, _) = p.walk(&mut fs, root, &["a", "b", "c"]);
        p.err_is(
            &mut fs,
            Twalk {
                fid: c,
                newfid,
                wnames: WalkNames::new(["x"]).unwrap(),
            },
            Error::NOT_DIR,
        );
        // newfid in use is an error, unless it is fid: then the fid moves.
        p.err_is(
            &mut fs,
            Twalk {
                fid: root,
                newfid: clone,
                wnames: WalkNames::new(["a"]).unwrap(),
            },
            Error::FID_IN_USE,
        );
        p.ok(
            &mut fs,
            Twalk {
                fid: clone,
                newfid: clone,
                wnames: WalkNames::new(["a", "b"]).unwrap(),
            },
        );
        let (_, q) = p.walk(&mut fs, clone, &["c"]);
        assert_eq!(q[0], fs.qid_of("a/b/c").unwrap());
        // An open fid cannot be walked.
        p.open(&mut fs, clone, open_mode::READ);
        p.err_is(
            &mut fs,
            Twalk {
                fid: clone,
                newfid,
                wnames: WalkNames::new(Vec::<&str>::new()).unwrap(),
            },
            Error::FID_OPEN,
        );
    }
}

#[test]
fn errors_take_the_dialects_form() {
    let mut forms = Vec::new();
    for d in Dialect::ALL {
        let mut fs = Fs::new();
        let mut p = Peer::connect(&mut fs, d);
        let root = p.attach(&mut fs);
        let e = p.err(
            &mut fs,
            Twalk {
                fid: root,
                newfid: Fid(9),
                wnames: WalkNames::new(["missing"]).unwrap(),
            },
        );
        forms.push(e);
    }
    let ename = Bytes::from_static(b"file does not exist");
    assert_eq!(
        forms,
        [
            ReplyError::Message {
                ename: ename.clone(),
                errno: None
            },
            ReplyError::Message {
                ename,
                errno: Some(errno::ENOENT)
            },
            ReplyError::Errno(errno::ENOENT),
        ]
    );
}

#[test]
fn malformed_frames_get_one_error_reply_with_their_tag() {
    let mut fs = Fs::new();
    let mut p = Peer::connect(&mut fs, Dialect::DotU);
    p.attach(&mut fs);
    let mut check = |bytes: &[u8], tag: u16, want: Error| {
        let r = raw(
            &mut p.conn,
            &mut fs,
            &Bytes::copy_from_slice(bytes),
            Dialect::DotU,
        );
        assert_eq!(r.tag, tag, "for {bytes:?}");
        let Msg::Rerror(e) = r.msg else {
            panic!("{bytes:?} got {:?}", r.msg)
        };
        assert_eq!(&e.ename[..], want.ename().as_bytes(), "for {bytes:?}");
    };
    // Too short for a header: NOTAG.
    check(&[], NOTAG, Error::BAD_MESSAGE);
    check(&[1, 0, 0], NOTAG, Error::BAD_MESSAGE);
    // Size field disagreeing with the frame: the tag is still read.
    check(&[99, 0, 0, 0, 120, 5, 0], 5, Error::BAD_MESSAGE);
    // Truncated Tclunk.
    check(&[9, 0, 0, 0, 120, 6, 0, 1, 0], 6, Error::BAD_MESSAGE);
    // Trailing bytes after a Tclunk.
    check(
        &[12, 0, 0, 0, 120, 7, 0, 1, 0, 0, 0, 9],
        7,
        Error::BAD_MESSAGE,
    );
    // A .L message on a .u connection, an unknown type, a reply sent as a request.
    check(&[11, 0, 0, 0, 8, 8, 0, 1, 0, 0, 0], 8, Error::UNKNOWN_TYPE);
    check(&[7, 0, 0, 0, 250, 9, 0], 9, Error::UNKNOWN_TYPE);
    check(&frame(10, Rclunk {}), 10, Error::NOT_REQUEST);
    // Larger than the msize.
    let big = frame(
        11,
        Twrite {
            fid: Fid(0),
            offset: 0,
            data: Data(Bytes::from(vec![0u8; MSIZE as usize])),
        },
    );
    check(&big, 11, Error::TOO_LARGE);
    // Tflush always gets Rflush.
    let r = raw(
        &mut p.conn,
        &mut fs,
        &frame(12, Tflush { oldtag: 999 }),
        Dialect::DotU,
    );
    assert_eq!(r, Fcall::new(12, Rflush {}));
}

#[test]
fn exclusive_files_open_once_until_closed_or_crashed() {
    let mut fs = Fs::new();
    let mut a = Peer::connect(&mut fs, Dialect::Base);
    let ra = a.attach(&mut fs);
    let (fa, _) = a.walk(&mut fs, ra, &[]);
    let Msg::Rcreate(c) = a.ok(
        &mut fs,
        tcreate(
            fa,
            "lockfile",
            dm::EXCL | 0o600,
            open_mode::RDWR,
            Dialect::Base,
        ),
    ) else {
        panic!()
    };
    assert_eq!(c.qid.typ, qid_type::EXCL);

    let mut b = Peer::connect(&mut fs, Dialect::Base);
    let rb = b.attach(&mut fs);
    let (fb, _) = b.walk(&mut fs, rb, &["lockfile"]);
    b.err_is(
        &mut fs,
        Topen {
            fid: fb,
            mode: open_mode::READ,
        },
        Error::EXCLUSIVE,
    );
    // Not even the same connection opens it twice.
    let (fa2, _) = a.walk(&mut fs, ra, &["lockfile"]);
    a.err_is(
        &mut fs,
        Topen {
            fid: fa2,
            mode: open_mode::READ,
        },
        Error::EXCLUSIVE,
    );
    // An orderly close releases it.
    a.conn.close(&mut fs);
    b.open(&mut fs, fb, open_mode::READ);

    // And so does a crash: the connection dropped without a word.
    let mut c = Peer::connect(&mut fs, Dialect::DotL);
    let rc = c.attach(&mut fs);
    let (fc, _) = c.walk(&mut fs, rc, &["lockfile"]);
    c.err_is(
        &mut fs,
        Tlopen {
            fid: fc,
            flags: lflags::RDONLY,
        },
        Error::EXCLUSIVE,
    );
    drop(b);
    c.open(&mut fs, fc, open_mode::READ);
    // Clunking the open fid releases it too.
    c.clunk(&mut fs, fc);
    let (fc, _) = c.walk(&mut fs, rc, &["lockfile"]);
    c.open(&mut fs, fc, open_mode::READ);
}

fn tlock(fid: Fid, typ: u8, start: u64, length: u64) -> Tlock {
    Tlock {
        fid,
        typ,
        flags: 0,
        start,
        length,
        proc_id: 42,
        client_id: "host".into(),
    }
}

fn lock_status_of(msg: Msg) -> u8 {
    let Msg::Rlock(r) = msg else {
        panic!("{msg:?}")
    };
    r.status
}

#[test]
fn locks_conflict_across_connections_and_go_with_them() {
    let mut fs = Fs::new();
    fs.write_file("db", b"").unwrap();
    let mut a = Peer::connect(&mut fs, Dialect::DotL);
    let mut b = Peer::connect(&mut fs, Dialect::DotL);
    let ra = a.attach(&mut fs);
    let rb = b.attach(&mut fs);
    let (fa, _) = a.walk(&mut fs, ra, &["db"]);
    let (fb, _) = b.walk(&mut fs, rb, &["db"]);
    a.open(&mut fs, fa, open_mode::RDWR);
    b.open(&mut fs, fb, open_mode::RDWR);

    let s = |m| lock_status_of(m);
    assert_eq!(
        s(a.ok(&mut fs, tlock(fa, lock_type::WRLCK, 0, 100))),
        lock_status::SUCCESS
    );
    // Same proc_id and client_id, but another connection: a different owner.
    assert_eq!(
        s(b.ok(&mut fs, tlock(fb, lock_type::WRLCK, 50, 10))),
        lock_status::BLOCKED
    );
    assert_eq!(
        s(b.ok(&mut fs, tlock(fb, lock_type::RDLCK, 99, 1))),
        lock_status::BLOCKED
    );
    assert_eq!(
        s(b.ok(&mut fs, tlock(fb, lock_type::WRLCK, 100, 0))),
        lock_status::SUCCESS
    );
    // Even a blocking request is answered at once.
    let mut blocking = tlock(fb, lock_type::WRLCK, 0, 1);
    blocking.flags = 1;
    assert_eq!(s(b.ok(&mut fs, blocking)), lock_status::BLOCKED);

    let Msg::Rgetlock(g) = b.ok(
        &mut fs,
        Tgetlock {
            fid: fb,
            typ: lock_type::RDLCK,
            start: 10,
            length: 5,
            proc_id: 42,
            client_id: "host".into(),
        },
    ) else {
        panic!()
    };
    assert_eq!((g.typ, g.start, g.length), (lock_type::WRLCK, 0, 100));

    // A's unlock of the middle lets B in there, not elsewhere.
    assert_eq!(
        s(a.ok(&mut fs, tlock(fa, lock_type::UNLCK, 40, 20))),
        lock_status::SUCCESS
    );
    assert_eq!(
        s(b.ok(&mut fs, tlock(fb, lock_type::WRLCK, 50, 10))),
        lock_status::SUCCESS
    );
    assert_eq!(
        s(b.ok(&mut fs, tlock(fb, lock_type::WRLCK, 30, 1))),
        lock_status::BLOCKED
    );

    // A crash releases A's locks.
    drop(a);
    assert_eq!(
        s(b.ok(&mut fs, tlock(fb, lock_type::WRLCK, 0, 0))),
        lock_status::SUCCESS
    );
    let mut c = Peer::connect(&mut fs, Dialect::DotL);
    let rc = c.attach(&mut fs);
    let (fc, _) = c.walk(&mut fs, rc, &["db"]);
    assert_eq!(
        s(c.ok(&mut fs, tlock(fc, lock_type::RDLCK, 5, 1))),
        lock_status::BLOCKED
    );
    // An orderly close releases B's.
    b.conn.close(&mut fs);
    assert_eq!(fs.lock_count(), 0);
    assert_eq!(
        s(c.ok(&mut fs, tlock(fc, lock_type::WRLCK, 0, 0))),
        lock_status::SUCCESS
    );
    // Clunking the connection's last fid on the file releases its locks there.
    c.clunk(&mut fs, fc);
    assert_eq!(fs.lock_count(), 0);
}

#[test]
fn the_tree_survives_a_crash_and_clients_must_attach_again() {
    let mut fs = Fs::new();
    let mut peers: Vec<Peer> = Dialect::ALL
        .into_iter()
        .map(|d| Peer::connect(&mut fs, d))
        .collect();
    let mut fids = Vec::new();
    for (i, p) in peers.iter_mut().enumerate() {
        let root = p.attach(&mut fs);
        let (f, _) = p.walk(&mut fs, root, &[]);
        let name = format!("file{i}");
        match p.dialect {
            Dialect::DotL => {
                p.ok(
                    &mut fs,
                    Tlcreate {
                        fid: f,
                        name: Bytes::from(name),
                        flags: lflags::RDWR,
                        mode: 0o644,
                        gid: 0,
                    },
                );
            }
            d => {
                p.ok(
                    &mut fs,
                    tcreate(f, &name, 0o644, open_mode::RDWR | open_mode::RCLOSE, d),
                );
            }
        }
        p.write(&mut fs, f, 0, format!("contents {i}").as_bytes());
        fids.push((root, f));
    }
    let before: Vec<Qid> = (0..3)
        .map(|i| fs.qid_of(format!("file{i}")).unwrap())
        .collect();
    let ops = fs.ops();

    // The crash: every connection gone, no close; ORCLOSE is not honoured by a crash.
    drop(peers);
    assert_eq!(fs.connection_count(), 0);
    for (i, q) in before.iter().enumerate() {
        assert_eq!(
            fs.read_file(format!("file{i}")).unwrap(),
            format!("contents {i}").as_bytes()
        );
        assert_eq!(fs.qid_of(format!("file{i}")).unwrap(), *q);
    }
    assert_eq!(fs.ops(), ops);

    // A new connection knows none of the old fids.
    let mut p = Peer::connect(&mut fs, Dialect::DotL);
    let (old_root, _) = fids[2];
    p.err_is(
        &mut fs,
        Twalk {
            fid: old_root,
            newfid: Fid(77),
            wnames: WalkNames::new(["file2"]).unwrap(),
        },
        Error::UNKNOWN_FID,
    );
    let root = p.attach(&mut fs);
    let (f, q) = p.walk(&mut fs, root, &["file2"]);
    assert_eq!(q[0], before[2]);
    p.open(&mut fs, f, open_mode::READ);
    assert_eq!(p.read_all(&mut fs, f, 4), b"contents 2");
}

#[test]
fn close_removes_orclose_files_and_a_crash_does_not() {
    let mut fs = Fs::new();
    for (i, crash) in [(0, false), (1, true)] {
        let mut p = Peer::connect(&mut fs, Dialect::Base);
        let root = p.attach(&mut fs);
        let (f, _) = p.walk(&mut fs, root, &[]);
        let name = format!("tmp{i}");
        p.ok(
            &mut fs,
            tcreate(
                f,
                &name,
                0o600,
                open_mode::WRITE | open_mode::RCLOSE,
                Dialect::Base,
            ),
        );
        if crash {
            drop(p);
            assert!(fs.read_file(&name).is_ok());
        } else {
            p.conn.close(&mut fs);
            assert_eq!(fs.read_file(&name), Err(Error::NOT_FOUND));
        }
    }
}

#[test]
fn a_crash_frees_removed_files_and_locks_its_fids_kept() {
    for sweep_by_new_connection in [false, true] {
        let mut fs = Fs::new();
        fs.write_file("gone", b"bytes").unwrap();
        fs.write_file("kept", b"").unwrap();
        let mut p = Peer::connect(&mut fs, Dialect::DotL);
        // Another connection that lives on, made before the crash (it sweeps nothing).
        let mut other = Peer::connect(&mut fs, Dialect::DotL);
        let root = p.attach(&mut fs);
        let (f, _) = p.walk(&mut fs, root, &["gone"]);
        p.open(&mut fs, f, open_mode::READ);
        let (k, _) = p.walk(&mut fs, root, &["kept"]);
        p.ok(&mut fs, tlock(k, lock_type::WRLCK, 0, 0));
        fs.remove_path("gone").unwrap();
        assert_eq!((fs.file_count(), fs.lock_count()), (3, 1));
        drop(p);
        if sweep_by_new_connection {
            let _next = Conn::new(&mut fs, MSIZE);
        } else {
            // Any request of a surviving connection sweeps too.
            other.attach(&mut fs);
        }
        assert_eq!((fs.file_count(), fs.lock_count()), (2, 0));
        assert_eq!(fs.bytes_used(), 0);
        fs.check().unwrap();
    }
}

#[test]
fn limits_bound_files_fids_and_sizes() {
    let limits = Limits {
        max_file_size: 1000,
        max_bytes: 1500,
        max_files: 4,
        max_fids: 3,
        max_locks: 4,
    };
    let mut fs = Fs::with_limits(limits);
    let mut p = Peer::connect(&mut fs, Dialect::DotL);
    let root = p.attach(&mut fs);
    let (f, _) = p.walk(&mut fs, root, &[]);
    p.ok(
        &mut fs,
        Tlcreate {
            fid: f,
            name: "a".into(),
            flags: lflags::RDWR,
            mode: 0o644,
            gid: 0,
        },
    );
    p.write(&mut fs, f, 0, &[1; 900]);
    p.err_is(
        &mut fs,
        Twrite {
            fid: f,
            offset: 950,
            data: Data(Bytes::from(vec![2; 100])),
        },
        Error::FILE_TOO_BIG,
    );
    p.err_is(
        &mut fs,
        Twrite {
            fid: f,
            offset: u64::MAX - 10,
            data: Data(Bytes::from(vec![2; 100])),
        },
        Error::FILE_TOO_BIG,
    );
    assert_eq!(fs.read_file("a").unwrap().len(), 900);
    assert_eq!(fs.write_file("b", &[0; 700]), Err(Error::NO_SPACE));
    assert_eq!(
        fs.read_file("b"),
        Err(Error::NOT_FOUND),
        "a failed write_file leaves nothing"
    );
    fs.write_file("b", &[0; 500]).unwrap();
    fs.write_file("c", b"").unwrap();
    assert_eq!(fs.write_file("d", b""), Err(Error::NO_SPACE));

    let (_, _) = p.walk(&mut fs, root, &[]);
    p.err_is(
        &mut fs,
        Twalk {
            fid: root,
            newfid: Fid(100),
            wnames: WalkNames::new(Vec::<&str>::new()).unwrap(),
        },
        Error::TOO_MANY_FIDS,
    );

    // The lock table fills up and says so.
    let mut statuses = Vec::new();
    for i in 0..4 {
        statuses.push(lock_status_of(
            p.ok(&mut fs, tlock(f, lock_type::WRLCK, i * 10, 1)),
        ));
    }
    assert_eq!(statuses, [0, 0, 0, lock_status::ERROR]);
}

#[test]
fn the_tree_and_connections_can_move_between_threads() {
    // The runtimes keep an Fs behind a mutex and a Conn per client task.
    fn send<T: Send + 'static>() {}
    send::<Fs>();
    send::<Conn>();
}

#[test]
fn a_dotu_hard_link_create_respects_exclusive_use() {
    let d = Dialect::DotU;
    let mut fs = Fs::new();
    fs.write_file("x", b"").unwrap();
    fs.set_mode("x", dm::EXCL | 0o666).unwrap();
    let mut a = Peer::connect(&mut fs, d);
    let ra = a.attach(&mut fs);
    let (xa, _) = a.walk(&mut fs, ra, &["x"]);
    a.open(&mut fs, xa, open_mode::READ);

    let mut b = Peer::connect(&mut fs, d);
    let rb = b.attach(&mut fs);
    let (xb, _) = b.walk(&mut fs, rb, &["x"]);
    let (dir, _) = b.walk(&mut fs, rb, &[]);
    let mut t = tcreate(dir, "y", 0x0100_0000 | 0o666, open_mode::READ, d);
    t.extension = Some(Bytes::from(format!("{}", xb.0)));
    b.err_is(&mut fs, t.clone(), Error::EXCLUSIVE);
    assert_eq!(
        fs.read_file("y"),
        Err(Error::NOT_FOUND),
        "refused before linking"
    );
    a.clunk(&mut fs, xa);
    b.ok(&mut fs, t);
    assert_eq!(fs.qid_of("y").unwrap(), fs.qid_of("x").unwrap());
    // The create's fid is now the one open of x.
    let (xa, _) = a.walk(&mut fs, ra, &["x"]);
    a.err_is(
        &mut fs,
        Topen {
            fid: xa,
            mode: open_mode::READ,
        },
        Error::EXCLUSIVE,
    );
}

#[test]
fn requests_are_counted() {
    let mut fs = Fs::new();
    let mut p = Peer::connect(&mut fs, Dialect::DotL);
    let root = p.attach(&mut fs);
    p.walk(&mut fs, root, &[]);
    p.walk(&mut fs, root, &[]);
    p.conn.handle(&mut fs, &Bytes::from_static(&[0, 1]));
    assert_eq!(fs.op_count(MsgType::Tversion), 1);
    assert_eq!(fs.op_count(MsgType::Tattach), 1);
    assert_eq!(fs.op_count(MsgType::Twalk), 2);
    assert_eq!(fs.op_count(MsgType::Tread), 0);
    assert_eq!(fs.ops(), 5);
}
