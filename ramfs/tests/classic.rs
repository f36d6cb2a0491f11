//! 9P2000 and 9P2000.u: create, write, read back, stat, directory reads, wstat, remove, and the
//! file kinds and open modes of those dialects.

mod common;

use bytes::Bytes;
use common::*;
use p9_core::*;
use ramfs::{Error, Fs};

const CLASSIC: [Dialect; 2] = [Dialect::Base, Dialect::DotU];

#[test]
fn create_write_read_stat_list_rename_remove() {
    for d in CLASSIC {
        let mut fs = Fs::new();
        fs.set_time(1_000);
        let mut p = Peer::connect(&mut fs, d);
        let root = p.attach(&mut fs);

        // A directory, made through a clone of the root fid.
        let (dfid, _) = p.walk(&mut fs, root, &[]);
        let Msg::Rcreate(r) = p.ok(&mut fs, tcreate(dfid, "docs", dm::DIR | 0o755, 0, d)) else {
            panic!()
        };
        assert!(r.qid.is_dir());
        p.clunk(&mut fs, dfid);

        // A file in it; the fid becomes the file, open for reading and writing.
        let (fid, qids) = p.walk(&mut fs, root, &["docs"]);
        assert_eq!(qids[0], r.qid);
        let Msg::Rcreate(c) = p.ok(&mut fs, tcreate(fid, "a.txt", 0o644, open_mode::RDWR, d))
        else {
            panic!()
        };
        assert_eq!(c.qid.typ, qid_type::FILE);
        assert_eq!(c.iounit, MSIZE - 24);
        assert_eq!(p.write(&mut fs, fid, 0, b"hello world"), 11);
        assert_eq!(fs.read_file("docs/a.txt").unwrap(), b"hello world");
        let Msg::Rread(part) = p.ok(
            &mut fs,
            Tread {
                fid,
                offset: 6,
                count: 100,
            },
        ) else {
            panic!()
        };
        assert_eq!(&part.data.0[..], b"world");
        assert_eq!(p.read_all(&mut fs, fid, 4), b"hello world");

        let Msg::Rstat(s) = p.ok(&mut fs, Tstat { fid }) else {
            panic!()
        };
        let s = s.stat;
        assert_eq!(&s.name[..], b"a.txt");
        assert_eq!(s.length, 11);
        assert_eq!(s.mode, 0o644);
        assert_eq!(s.mtime, 1_000);
        assert_eq!(&s.uid[..], b"glenda");
        assert_eq!(s.qid.path, c.qid.path);
        assert!(s.qid.version != c.qid.version, "a write bumps qid.version");
        match d {
            Dialect::DotU => assert_eq!(s.ext.as_ref().map(|e| e.n_uid), Some(1000)),
            _ => assert_eq!(s.ext, None),
        }

        // Rename within the directory with wstat, as stat(5) allows.
        let mut rename = blank_stat(d);
        rename.name = Bytes::from_static(b"b.txt");
        p.ok(&mut fs, Twstat { fid, stat: rename });
        assert_eq!(fs.list_dir("docs").unwrap(), [Bytes::from("b.txt")]);
        assert_eq!(fs.read_file("docs/b.txt").unwrap(), b"hello world");
        let Msg::Rstat(s) = p.ok(&mut fs, Tstat { fid }) else {
            panic!()
        };
        assert_eq!(&s.stat.name[..], b"b.txt");

        // Remove clunks the fid.
        p.ok(&mut fs, Tremove { fid });
        p.err_is(&mut fs, Tclunk { fid }, Error::UNKNOWN_FID);
        assert!(fs.list_dir("docs").unwrap().is_empty());
        assert_eq!(fs.read_file("docs/b.txt"), Err(Error::NOT_FOUND));
        assert_eq!(fs.file_count(), 2, "only the root and docs are left");
    }
}

#[test]
fn directory_reads_return_whole_stat_records_and_continue_only_where_they_ended() {
    for d in CLASSIC {
        let mut fs = Fs::new();
        for name in ["one", "two", "three", "four", "five"] {
            fs.write_file(format!("dir/{name}"), name.as_bytes())
                .unwrap();
        }
        let mut p = Peer::connect(&mut fs, d);
        let root = p.attach(&mut fs);
        let (dir, _) = p.walk(&mut fs, root, &["dir"]);
        p.open(&mut fs, dir, open_mode::READ);

        // Room for about two records per read: several reads, each of whole records.
        let mut offset = 0;
        let mut names = Vec::new();
        let mut reads = 0;
        loop {
            let Msg::Rread(r) = p.ok(
                &mut fs,
                Tread {
                    fid: dir,
                    offset,
                    count: 130,
                },
            ) else {
                panic!()
            };
            if r.data.0.is_empty() {
                break;
            }
            reads += 1;
            names.extend(stat_names(&r.data.0, d));
            offset += r.data.0.len() as u64;
        }
        assert_eq!(names, ["one", "two", "three", "four", "five"]);
        assert!(reads >= 3, "{reads} reads");

        // Offset 0 starts again; any other offset than where the last read ended is refused.
        let Msg::Rread(first) = p.ok(
            &mut fs,
            Tread {
                fid: dir,
                offset: 0,
                count: 130,
            },
        ) else {
            panic!()
        };
        let end = first.data.0.len() as u64;
        assert_eq!(stat_names(&first.data.0, d)[0], "one");
        p.err_is(
            &mut fs,
            Tread {
                fid: dir,
                offset: end + 1,
                count: 130,
            },
            Error::BAD_OFFSET,
        );
        p.ok(
            &mut fs,
            Tread {
                fid: dir,
                offset: end,
                count: 130,
            },
        );

        // A count too small for even one record is an error, not an empty (end) read.
        p.err_is(
            &mut fs,
            Tread {
                fid: dir,
                offset: 0,
                count: 10,
            },
            Error::SHORT_COUNT,
        );

        // Reading all of it at once agrees with the tree.
        let all = p.read_all(&mut fs, dir, 8000);
        let listed: Vec<Bytes> = stat_names(&all, d).into_iter().map(Bytes::from).collect();
        assert_eq!(listed, fs.list_dir("dir").unwrap());
    }
}

#[test]
fn wstat_changes_length_mode_and_mtime_and_is_all_or_nothing() {
    for d in CLASSIC {
        let mut fs = Fs::with_limits(ramfs::Limits {
            max_file_size: 1 << 20,
            ..Default::default()
        });
        fs.write_file("f", b"0123456789").unwrap();
        fs.write_file("g", b"").unwrap();
        let mut p = Peer::connect(&mut fs, d);
        let root = p.attach(&mut fs);
        let (f, _) = p.walk(&mut fs, root, &["f"]);

        let mut st = blank_stat(d);
        st.length = 4;
        p.ok(&mut fs, Twstat { fid: f, stat: st });
        assert_eq!(fs.read_file("f").unwrap(), b"0123");
        let mut st = blank_stat(d);
        st.length = 6;
        p.ok(&mut fs, Twstat { fid: f, stat: st });
        assert_eq!(fs.read_file("f").unwrap(), b"0123\0\0");

        let mut st = blank_stat(d);
        st.mode = 0o600 | dm::APPEND;
        st.mtime = 77;
        p.ok(&mut fs, Twstat { fid: f, stat: st });
        let Msg::Rstat(s) = p.ok(&mut fs, Tstat { fid: f }) else {
            panic!()
        };
        assert_eq!(s.stat.mode, 0o600 | dm::APPEND);
        assert_eq!(s.stat.mtime, 77);
        assert_eq!(s.stat.qid.typ, qid_type::APPEND);
        assert_eq!(s.stat.length, 6, "don't-touch length left alone");

        // A blank wstat changes nothing.
        p.ok(
            &mut fs,
            Twstat {
                fid: f,
                stat: blank_stat(d),
            },
        );
        let Msg::Rstat(again) = p.ok(&mut fs, Tstat { fid: f }) else {
            panic!()
        };
        assert_eq!(again.stat, s.stat);

        // The directory bit cannot change.
        let mut st = blank_stat(d);
        st.mode = dm::DIR | 0o755;
        p.err_is(&mut fs, Twstat { fid: f, stat: st }, Error::DIR_BIT);

        // Renaming onto an existing name fails.
        let mut st = blank_stat(d);
        st.name = "g".into();
        p.err_is(&mut fs, Twstat { fid: f, stat: st }, Error::EXISTS);

        // A rename with an impossible length does neither.
        let mut st = blank_stat(d);
        st.name = "h".into();
        st.length = 2 << 20;
        p.err_is(&mut fs, Twstat { fid: f, stat: st }, Error::FILE_TOO_BIG);
        assert!(fs.read_file("f").is_ok());
        assert_eq!(fs.read_file("h"), Err(Error::NOT_FOUND));
    }
}

#[test]
fn append_only_files_write_at_the_end_and_are_not_truncated() {
    for d in CLASSIC {
        let mut fs = Fs::new();
        let mut p = Peer::connect(&mut fs, d);
        let root = p.attach(&mut fs);
        let (fid, _) = p.walk(&mut fs, root, &[]);
        let Msg::Rcreate(c) = p.ok(
            &mut fs,
            tcreate(fid, "log", dm::APPEND | 0o666, open_mode::RDWR, d),
        ) else {
            panic!()
        };
        assert_eq!(c.qid.typ, qid_type::APPEND);
        p.write(&mut fs, fid, 0, b"abc");
        p.write(&mut fs, fid, 0, b"def");
        p.write(&mut fs, fid, 1, b"ghi");
        assert_eq!(fs.read_file("log").unwrap(), b"abcdefghi");
        p.clunk(&mut fs, fid);

        let (again, _) = p.walk(&mut fs, root, &["log"]);
        p.open(&mut fs, again, open_mode::WRITE | open_mode::TRUNC);
        assert_eq!(fs.read_file("log").unwrap(), b"abcdefghi");
    }
}

#[test]
fn otrunc_truncates_and_bumps_the_version() {
    for d in CLASSIC {
        let mut fs = Fs::new();
        let before = fs.write_file("f", b"old contents").unwrap();
        let mut p = Peer::connect(&mut fs, d);
        let root = p.attach(&mut fs);
        let (fid, _) = p.walk(&mut fs, root, &["f"]);
        let qid = p.open(&mut fs, fid, open_mode::WRITE | open_mode::TRUNC);
        assert_eq!(fs.read_file("f").unwrap(), b"");
        assert_eq!(qid.path, before.path);
        assert_ne!(qid.version, before.version);
        p.write(&mut fs, fid, 0, b"new");
        assert_eq!(fs.read_file("f").unwrap(), b"new");

        // Without OTRUNC the contents stay.
        let (other, _) = p.walk(&mut fs, root, &["f"]);
        p.open(&mut fs, other, open_mode::READ);
        assert_eq!(p.read_all(&mut fs, other, 100), b"new");
        p.err_is(
            &mut fs,
            Twrite {
                fid: other,
                offset: 0,
                data: Data("x".into()),
            },
            Error::NOT_WRITABLE,
        );
    }
}

#[test]
fn open_and_create_refuse_what_they_must() {
    for d in CLASSIC {
        let mut fs = Fs::new();
        fs.write_file("dir/file", b"x").unwrap();
        let mut p = Peer::connect(&mut fs, d);
        let root = p.attach(&mut fs);

        let (dir, _) = p.walk(&mut fs, root, &["dir"]);
        p.err_is(
            &mut fs,
            Topen {
                fid: dir,
                mode: open_mode::WRITE,
            },
            Error::IS_DIR,
        );
        p.err_is(
            &mut fs,
            tcreate(dir, "file", 0o644, open_mode::WRITE, d),
            Error::EXISTS,
        );
        p.err_is(
            &mut fs,
            tcreate(dir, "..", 0o644, open_mode::WRITE, d),
            Error::BAD_NAME,
        );
        p.err_is(
            &mut fs,
            tcreate(dir, "a/b", 0o644, open_mode::WRITE, d),
            Error::BAD_NAME,
        );
        let (file, _) = p.walk(&mut fs, root, &["dir", "file"]);
        p.err_is(
            &mut fs,
            tcreate(file, "x", 0o644, open_mode::WRITE, d),
            Error::NOT_DIR,
        );
        p.err_is(
            &mut fs,
            Tread {
                fid: file,
                offset: 0,
                count: 10,
            },
            Error::NOT_OPEN,
        );
        p.open(&mut fs, file, open_mode::READ);
        p.err_is(
            &mut fs,
            Topen {
                fid: file,
                mode: open_mode::READ,
            },
            Error::FID_OPEN,
        );

        // A directory created open for writing is refused.
        p.err_is(
            &mut fs,
            tcreate(dir, "sub", dm::DIR | 0o777, open_mode::WRITE, d),
            Error::IS_DIR,
        );
        // Removing a non-empty directory fails, and still clunks the fid.
        p.err_is(&mut fs, Tremove { fid: dir }, Error::NOT_EMPTY);
        p.err_is(&mut fs, Tstat { fid: dir }, Error::UNKNOWN_FID);
        // The root cannot be removed.
        let (r2, _) = p.walk(&mut fs, root, &[]);
        p.err_is(&mut fs, Tremove { fid: r2 }, Error::ROOT);
    }
}

#[test]
fn create_masks_permissions_with_the_directory_as_plan9_does() {
    let mut fs = Fs::new();
    fs.mkdir_p("d").unwrap();
    let mut p = Peer::connect(&mut fs, Dialect::Base);
    let root = p.attach(&mut fs);
    let (d, _) = p.walk(&mut fs, root, &["d"]);
    let mut st = blank_stat(Dialect::Base);
    st.mode = dm::DIR | 0o750;
    p.ok(&mut fs, Twstat { fid: d, stat: st });
    p.ok(
        &mut fs,
        tcreate(d, "f", 0o666, open_mode::WRITE, Dialect::Base),
    );
    let Msg::Rstat(s) = p.ok(&mut fs, Tstat { fid: d }) else {
        panic!()
    };
    assert_eq!(&s.stat.name[..], b"f");
    assert_eq!(s.stat.mode, 0o640);
}

#[test]
fn orclose_removes_the_file_at_clunk() {
    for d in CLASSIC {
        let mut fs = Fs::new();
        let mut p = Peer::connect(&mut fs, d);
        let root = p.attach(&mut fs);
        let (fid, _) = p.walk(&mut fs, root, &[]);
        p.ok(
            &mut fs,
            tcreate(fid, "tmp", 0o600, open_mode::RDWR | open_mode::RCLOSE, d),
        );
        p.write(&mut fs, fid, 0, b"scratch");
        assert!(fs.read_file("tmp").is_ok());
        p.clunk(&mut fs, fid);
        assert_eq!(fs.read_file("tmp"), Err(Error::NOT_FOUND));
        assert_eq!(fs.file_count(), 1);
    }
}

#[test]
fn dotu_makes_symlinks_devices_pipes_and_hard_links() {
    let d = Dialect::DotU;
    let mut fs = Fs::new();
    fs.write_file("target", b"data").unwrap();
    let mut p = Peer::connect(&mut fs, d);
    let root = p.attach(&mut fs);

    let make = |p: &mut Peer, fs: &mut Fs, name: &str, perm: u32, ext: &str| {
        let (fid, _) = p.walk(fs, root, &[]);
        let mut t = tcreate(fid, name, perm, open_mode::READ, d);
        t.extension = Some(Bytes::copy_from_slice(ext.as_bytes()));
        let Msg::Rcreate(r) = p.ok(fs, t) else {
            panic!()
        };
        let Msg::Rstat(s) = p.ok(fs, Tstat { fid }) else {
            panic!()
        };
        p.clunk(fs, fid);
        (r.qid, s.stat)
    };

    let (qid, s) = make(&mut p, &mut fs, "link", dm::SYMLINK | 0o777, "target");
    assert_eq!(qid.typ, qid_type::SYMLINK);
    assert_eq!(s.mode & dm::SYMLINK, dm::SYMLINK);
    assert_eq!(&s.ext.unwrap().extension[..], b"target");
    assert_eq!(&fs.read_link("link").unwrap()[..], b"target");

    let (_, s) = make(&mut p, &mut fs, "null", dm::DEVICE | 0o666, "c 1 3");
    assert_eq!(s.mode & dm::DEVICE, dm::DEVICE);
    assert_eq!(&s.ext.unwrap().extension[..], b"c 1 3");

    let (_, s) = make(&mut p, &mut fs, "fifo", dm::NAMEDPIPE | 0o666, "");
    assert_eq!(s.mode & dm::NAMEDPIPE, dm::NAMEDPIPE);

    // A hard link names the fid of its target in the extension.
    let (t, tq) = p.walk(&mut fs, root, &["target"]);
    let (_, s) = make(
        &mut p,
        &mut fs,
        "again",
        0x0100_0000 | 0o666,
        &format!("{}\n", t.0),
    );
    assert_eq!(s.qid.path, tq[0].path);
    assert_eq!(fs.read_file("again").unwrap(), b"data");

    // Special files cannot be opened for I/O; bad device strings are refused.
    let (null, _) = p.walk(&mut fs, root, &["null"]);
    p.err_is(
        &mut fs,
        Topen {
            fid: null,
            mode: open_mode::READ,
        },
        Error::SPECIAL,
    );
    let (fid, _) = p.walk(&mut fs, root, &[]);
    let mut t = tcreate(fid, "bad", dm::DEVICE | 0o666, open_mode::READ, d);
    t.extension = Some("q 1".into());
    p.err_is(&mut fs, t, Error::INVALID);
}

#[test]
fn plain_9p2000_ignores_the_unix_file_kinds() {
    let d = Dialect::Base;
    let mut fs = Fs::new();
    let mut p = Peer::connect(&mut fs, d);
    let root = p.attach(&mut fs);
    let (fid, _) = p.walk(&mut fs, root, &[]);
    let Msg::Rcreate(r) = p.ok(
        &mut fs,
        tcreate(fid, "plain", dm::SYMLINK | 0o644, open_mode::WRITE, d),
    ) else {
        panic!()
    };
    assert_eq!(r.qid.typ, qid_type::FILE);
    p.write(&mut fs, fid, 0, b"ok");
    assert_eq!(fs.read_file("plain").unwrap(), b"ok");
}
