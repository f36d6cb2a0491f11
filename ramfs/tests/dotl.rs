//! 9P2000.L: the Linux-style requests, attributes, readdir cookies, links and renames.

mod common;

use bytes::Bytes;
use common::*;
use p9_core::dir::{dirents, Dirent};
use p9_core::*;
use ramfs::{Error, Fs};

const L: Dialect = Dialect::DotL;

fn lcreate(fid: Fid, name: &str, flags: u32, mode: u32) -> Tlcreate {
    Tlcreate {
        fid,
        name: Bytes::copy_from_slice(name.as_bytes()),
        flags,
        mode,
        gid: 100,
    }
}

fn getattr(p: &mut Peer, fs: &mut Fs, fid: Fid) -> Rgetattr {
    let Msg::Rgetattr(a) = p.ok(
        fs,
        Tgetattr {
            fid,
            request_mask: 0x7ff,
        },
    ) else {
        panic!()
    };
    a
}

/// One Treaddir; the entries it returned.
fn readdir(p: &mut Peer, fs: &mut Fs, fid: Fid, offset: u64, count: u32) -> Vec<Dirent> {
    let Msg::Rreaddir(r) = p.ok(fs, Treaddir { fid, offset, count }) else {
        panic!()
    };
    dirents(&r.data.0).map(|e| e.unwrap()).collect()
}

fn names(entries: &[Dirent]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8(e.name.to_vec()).unwrap())
        .collect()
}

/// Every entry, continuing from the last cookie each time, `count` bytes per Treaddir.
fn readdir_all(p: &mut Peer, fs: &mut Fs, fid: Fid, count: u32) -> Vec<Dirent> {
    let mut all: Vec<Dirent> = Vec::new();
    loop {
        let offset = all.last().map_or(0, |e| e.offset);
        let batch = readdir(p, fs, fid, offset, count);
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

#[test]
fn create_write_read_getattr_readdir_rename_remove() {
    let mut fs = Fs::new();
    fs.set_time(5_000);
    let mut p = Peer::connect(&mut fs, L);
    let root = p.attach(&mut fs);

    let Msg::Rmkdir(dq) = p.ok(
        &mut fs,
        Tmkdir {
            dfid: root,
            name: "src".into(),
            mode: 0o755,
            gid: 100,
        },
    ) else {
        panic!()
    };
    assert!(dq.qid.is_dir());

    let (fid, _) = p.walk(&mut fs, root, &["src"]);
    let Msg::Rlcreate(c) = p.ok(&mut fs, lcreate(fid, "main.rs", lflags::RDWR, 0o644)) else {
        panic!()
    };
    assert_eq!(c.iounit, MSIZE - 24);
    assert_eq!(p.write(&mut fs, fid, 0, b"fn main() {}"), 12);
    assert_eq!(p.read_all(&mut fs, fid, 5), b"fn main() {}");

    let a = getattr(&mut p, &mut fs, fid);
    assert_eq!(a.mode, 0o100644);
    assert_eq!(a.size, 12);
    assert_eq!((a.uid, a.gid), (1000, 100));
    assert_eq!(a.nlink, 1);
    assert_eq!(a.mtime_sec, 5_000);
    assert_eq!(a.qid.path, c.qid.path);
    assert_eq!(a.data_version, u64::from(a.qid.version));
    assert!(a.qid.version > c.qid.version);

    let (src, _) = p.walk(&mut fs, root, &["src"]);
    let a = getattr(&mut p, &mut fs, src);
    assert_eq!(a.mode, 0o040755);
    assert_eq!(a.nlink, 2);
    assert_eq!(
        getattr(&mut p, &mut fs, root).nlink,
        3,
        "root: ., its entry, src's .."
    );

    // Rename by fid into another directory, then by name back.
    p.ok(
        &mut fs,
        Tmkdir {
            dfid: root,
            name: "dst".into(),
            mode: 0o755,
            gid: 100,
        },
    );
    let (dst, _) = p.walk(&mut fs, root, &["dst"]);
    p.ok(
        &mut fs,
        Trename {
            fid,
            dfid: dst,
            name: "lib.rs".into(),
        },
    );
    assert_eq!(fs.read_file("dst/lib.rs").unwrap(), b"fn main() {}");
    assert!(fs.list_dir("src").unwrap().is_empty());
    p.ok(
        &mut fs,
        Trenameat {
            olddirfid: dst,
            oldname: "lib.rs".into(),
            newdirfid: src,
            newname: "main.rs".into(),
        },
    );
    assert_eq!(fs.list_dir("src").unwrap(), [Bytes::from("main.rs")]);
    // The open fid followed its file.
    assert_eq!(p.read_all(&mut fs, fid, 100), b"fn main() {}");

    // unlinkat: a file without AT_REMOVEDIR, a directory with it, never the other way round.
    p.err_is(
        &mut fs,
        Tunlinkat {
            dirfid: root,
            name: "dst".into(),
            flags: 0,
        },
        Error::IS_DIR,
    );
    p.err_is(
        &mut fs,
        Tunlinkat {
            dirfid: src,
            name: "main.rs".into(),
            flags: 0x200,
        },
        Error::NOT_DIR,
    );
    p.err_is(
        &mut fs,
        Tunlinkat {
            dirfid: root,
            name: "src".into(),
            flags: 0x200,
        },
        Error::NOT_EMPTY,
    );
    p.ok(
        &mut fs,
        Tunlinkat {
            dirfid: src,
            name: "main.rs".into(),
            flags: 0,
        },
    );
    p.ok(
        &mut fs,
        Tunlinkat {
            dirfid: root,
            name: "dst".into(),
            flags: 0x200,
        },
    );
    assert_eq!(fs.list_dir("/").unwrap(), [Bytes::from("src")]);

    // Tremove works in .L too.
    p.ok(&mut fs, Tremove { fid: src });
    assert!(fs.list_dir("/").unwrap().is_empty());
}

#[test]
fn readdir_gives_dots_first_and_continues_from_any_cookie() {
    let mut fs = Fs::new();
    let names_in: Vec<String> = (0..20).map(|i| format!("file-{i:02}")).collect();
    for n in &names_in {
        fs.write_file(format!("d/{n}"), b"").unwrap();
    }
    fs.mkdir_p("d/sub").unwrap();
    let mut p = Peer::connect(&mut fs, L);
    let root = p.attach(&mut fs);
    let (d, dq) = p.walk(&mut fs, root, &["d"]);
    p.open(&mut fs, d, open_mode::READ);

    // Small counts: many Treaddirs, each continuing from the last entry's cookie.
    let all = readdir_all(&mut p, &mut fs, d, 100);
    let mut expected = vec![".".to_string(), "..".to_string()];
    expected.extend(names_in.iter().cloned());
    expected.push("sub".into());
    assert_eq!(names(&all), expected);
    assert_eq!(all[0].qid, dq[0]);
    assert!(all[1].qid.is_dir());
    assert_eq!(all.last().unwrap().typ, 4, "DT_DIR");
    assert_eq!(all[2].typ, 8, "DT_REG");

    // Offset 0 restarts; a cookie from the middle continues right after that entry.
    assert_eq!(names(&readdir(&mut p, &mut fs, d, 0, 8000)), expected);
    let mid = &all[10];
    let rest = readdir(&mut p, &mut fs, d, mid.offset, 8000);
    assert_eq!(names(&rest), expected[11..]);

    // Changes while listing: a removed entry is not listed, a new one is, none twice.
    let part = readdir(&mut p, &mut fs, d, 0, 150);
    let cookie = part.last().unwrap().offset;
    p.ok(
        &mut fs,
        Tunlinkat {
            dirfid: d,
            name: "file-19".into(),
            flags: 0,
        },
    );
    fs.write_file("d/new", b"").unwrap();
    let mut seen = names(&part);
    let rest: Vec<Dirent> = {
        let mut v = Vec::new();
        let mut c = cookie;
        loop {
            let b = readdir(&mut p, &mut fs, d, c, 150);
            if b.is_empty() {
                break v;
            }
            c = b.last().unwrap().offset;
            v.extend(b);
        }
    };
    seen.extend(names(&rest));
    assert!(!seen.contains(&"file-19".to_string()));
    assert_eq!(seen.last().map(String::as_str), Some("new"));
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), seen.len(), "an entry was listed twice");

    // Too small a count for one entry is an error; an unopened fid cannot be listed.
    p.err_is(
        &mut fs,
        Treaddir {
            fid: d,
            offset: 0,
            count: 5,
        },
        Error::SHORT_COUNT,
    );
    let (unopened, _) = p.walk(&mut fs, root, &["d"]);
    p.err_is(
        &mut fs,
        Treaddir {
            fid: unopened,
            offset: 0,
            count: 8000,
        },
        Error::NOT_OPEN,
    );
    // Tread of a directory is not how .L lists.
    p.err_is(
        &mut fs,
        Tread {
            fid: d,
            offset: 0,
            count: 8000,
        },
        Error::IS_DIR,
    );
}

#[test]
fn symlinks_hard_links_device_nodes_and_statfs() {
    let mut fs = Fs::new();
    fs.write_file("data", b"payload").unwrap();
    let mut p = Peer::connect(&mut fs, L);
    let root = p.attach(&mut fs);

    let Msg::Rsymlink(s) = p.ok(
        &mut fs,
        Tsymlink {
            fid: root,
            name: "ln".into(),
            symtgt: "data".into(),
            gid: 0,
        },
    ) else {
        panic!()
    };
    assert_eq!(s.qid.typ, qid_type::SYMLINK);
    let (ln, _) = p.walk(&mut fs, root, &["ln"]);
    let Msg::Rreadlink(r) = p.ok(&mut fs, Treadlink { fid: ln }) else {
        panic!()
    };
    assert_eq!(&r.target[..], b"data");
    assert_eq!(getattr(&mut p, &mut fs, ln).mode, 0o120777);
    p.err_is(
        &mut fs,
        Tlopen {
            fid: ln,
            flags: lflags::RDONLY,
        },
        Error::IS_SYMLINK,
    );
    p.err_is(&mut fs, Treadlink { fid: root }, Error::NOT_SYMLINK);

    let (data, dq) = p.walk(&mut fs, root, &["data"]);
    p.ok(
        &mut fs,
        Tlink {
            dfid: root,
            fid: data,
            name: "hard".into(),
        },
    );
    assert_eq!(getattr(&mut p, &mut fs, data).nlink, 2);
    assert_eq!(fs.qid_of("hard").unwrap().path, dq[0].path);
    p.err_is(
        &mut fs,
        Tlink {
            dfid: root,
            fid: root,
            name: "loop".into(),
        },
        Error::LINK_DIR,
    );
    p.ok(
        &mut fs,
        Tunlinkat {
            dirfid: root,
            name: "data".into(),
            flags: 0,
        },
    );
    assert_eq!(fs.read_file("hard").unwrap(), b"payload");
    assert_eq!(getattr(&mut p, &mut fs, data).nlink, 1);

    let Msg::Rmknod(n) = p.ok(
        &mut fs,
        Tmknod {
            dfid: root,
            name: "tty".into(),
            mode: 0o020620,
            major: 4,
            minor: 1,
            gid: 5,
        },
    ) else {
        panic!()
    };
    let (tty, _) = p.walk(&mut fs, root, &["tty"]);
    let a = getattr(&mut p, &mut fs, tty);
    assert_eq!(a.qid, n.qid);
    assert_eq!(a.mode, 0o020620);
    assert_eq!(a.rdev, (4 << 8) | 1);
    p.err_is(
        &mut fs,
        Tlopen {
            fid: tty,
            flags: lflags::RDWR,
        },
        Error::SPECIAL,
    );

    let Msg::Rstatfs(s) = p.ok(&mut fs, Tstatfs { fid: root }) else {
        panic!()
    };
    assert_eq!(s.namelen, 255);
    assert_eq!(s.files - s.ffree, fs.file_count() as u64);
    assert!(s.bfree <= s.blocks);
}

#[test]
fn xattrs_are_empty_and_cannot_be_created() {
    let mut fs = Fs::new();
    let mut p = Peer::connect(&mut fs, L);
    let root = p.attach(&mut fs);
    let list = p.client.alloc_fid();
    let Msg::Rxattrwalk(x) = p.ok(
        &mut fs,
        Txattrwalk {
            fid: root,
            newfid: list,
            name: Bytes::new(),
        },
    ) else {
        panic!()
    };
    assert_eq!(x.size, 0);
    assert!(p.read_all(&mut fs, list, 100).is_empty());
    p.clunk(&mut fs, list);

    let named = p.client.alloc_fid();
    p.err_is(
        &mut fs,
        Txattrwalk {
            fid: root,
            newfid: named,
            name: "security.selinux".into(),
        },
        Error::NO_XATTR,
    );
    p.err_is(&mut fs, Tclunk { fid: named }, Error::UNKNOWN_FID);
    p.err_is(
        &mut fs,
        Txattrcreate {
            fid: root,
            name: "user.x".into(),
            attr_size: 1,
            flags: 0,
        },
        Error::XATTR_UNSUPPORTED,
    );
    assert_eq!(Error::XATTR_UNSUPPORTED.errno(), 95);
}

#[test]
fn setattr_truncates_extends_and_sets_times() {
    let mut fs = Fs::new();
    fs.set_time(10);
    fs.write_file("f", b"0123456789").unwrap();
    let mut p = Peer::connect(&mut fs, L);
    let root = p.attach(&mut fs);
    let (f, _) = p.walk(&mut fs, root, &["f"]);
    let setattr = |valid, size, mtime| Tsetattr {
        fid: f,
        valid,
        mode: 0o600,
        uid: 7,
        gid: 8,
        size,
        atime_sec: 0,
        atime_nsec: 0,
        mtime_sec: mtime,
        mtime_nsec: 0,
    };
    p.ok(&mut fs, setattr(0x8, 3, 0));
    assert_eq!(fs.read_file("f").unwrap(), b"012");
    p.ok(&mut fs, setattr(0x8, 5, 0));
    assert_eq!(fs.read_file("f").unwrap(), b"012\0\0");
    fs.set_time(20);
    p.ok(&mut fs, setattr(0x1 | 0x2 | 0x4 | 0x20 | 0x100, 0, 99));
    let a = getattr(&mut p, &mut fs, f);
    assert_eq!((a.mode, a.uid, a.gid), (0o100600, 7, 8));
    assert_eq!(a.mtime_sec, 99);
    assert_eq!(a.ctime_sec, 20);
    p.ok(&mut fs, setattr(0x20, 0, 99));
    assert_eq!(
        getattr(&mut p, &mut fs, f).mtime_sec,
        20,
        "MTIME without MTIME_SET is now"
    );
    p.err_is(&mut fs, setattr(0x8, 1 << 40, 0), Error::FILE_TOO_BIG);
    p.err_is(
        &mut fs,
        Tsetattr {
            fid: root,
            ..setattr(0x8, 0, 0)
        },
        Error::IS_DIR,
    );
}

#[test]
fn o_append_and_append_only_files_write_at_the_end() {
    let mut fs = Fs::new();
    fs.write_file("log", b"1").unwrap();
    fs.write_file("plain", b"1").unwrap();
    fs.set_mode("log", dm::APPEND | 0o666).unwrap();
    let mut p = Peer::connect(&mut fs, L);
    let root = p.attach(&mut fs);

    let (log, q) = p.walk(&mut fs, root, &["log"]);
    assert_eq!(q[0].typ, qid_type::APPEND);
    p.open(&mut fs, log, open_mode::WRITE | open_mode::TRUNC);
    assert_eq!(
        fs.read_file("log").unwrap(),
        b"1",
        "append-only: O_TRUNC ignored"
    );
    p.write(&mut fs, log, 0, b"2");
    assert_eq!(fs.read_file("log").unwrap(), b"12");

    let (plain, _) = p.walk(&mut fs, root, &["plain"]);
    p.ok(
        &mut fs,
        Tlopen {
            fid: plain,
            flags: lflags::WRONLY | lflags::APPEND,
        },
    );
    p.write(&mut fs, plain, 0, b"2");
    p.write(&mut fs, plain, 0, b"3");
    assert_eq!(fs.read_file("plain").unwrap(), b"123");

    let (t, _) = p.walk(&mut fs, root, &["plain"]);
    p.open(&mut fs, t, open_mode::WRITE | open_mode::TRUNC);
    assert_eq!(fs.read_file("plain").unwrap(), b"");
}

#[test]
fn a_removed_file_stays_readable_through_open_fids_until_clunked() {
    let mut fs = Fs::new();
    fs.write_file("doomed", b"still here").unwrap();
    let mut p = Peer::connect(&mut fs, L);
    let root = p.attach(&mut fs);
    let (f, _) = p.walk(&mut fs, root, &["doomed"]);
    p.open(&mut fs, f, open_mode::RDWR);
    p.ok(
        &mut fs,
        Tunlinkat {
            dirfid: root,
            name: "doomed".into(),
            flags: 0,
        },
    );
    assert_eq!(fs.read_file("doomed"), Err(Error::NOT_FOUND));
    assert_eq!(fs.file_count(), 2);
    assert_eq!(p.read_all(&mut fs, f, 100), b"still here");
    p.write(&mut fs, f, 0, b"STILL");
    assert_eq!(getattr(&mut p, &mut fs, f).nlink, 0);
    p.clunk(&mut fs, f);
    assert_eq!(fs.file_count(), 1);
    assert_eq!(fs.bytes_used(), 0);
}

#[test]
fn lcreate_and_lopen_refuse_what_they_must() {
    let mut fs = Fs::new();
    fs.write_file("f", b"").unwrap();
    let mut p = Peer::connect(&mut fs, L);
    let root = p.attach(&mut fs);
    let (r, _) = p.walk(&mut fs, root, &[]);
    p.err_is(&mut fs, lcreate(r, "f", lflags::RDWR, 0o644), Error::EXISTS);
    p.err_is(
        &mut fs,
        lcreate(r, "", lflags::RDWR, 0o644),
        Error::BAD_NAME,
    );
    p.err_is(
        &mut fs,
        lcreate(r, &"n".repeat(256), lflags::RDWR, 0o644),
        Error::NAME_TOO_LONG,
    );
    p.err_is(
        &mut fs,
        Tlopen {
            fid: r,
            flags: lflags::WRONLY,
        },
        Error::IS_DIR,
    );
    let (f, _) = p.walk(&mut fs, root, &["f"]);
    p.err_is(
        &mut fs,
        Tlopen {
            fid: f,
            flags: lflags::RDONLY | lflags::DIRECTORY,
        },
        Error::NOT_DIR,
    );
    p.err_is(&mut fs, Tlopen { fid: f, flags: 3 }, Error::INVALID);
    p.err_is(
        &mut fs,
        Trenameat {
            olddirfid: root,
            oldname: "f".into(),
            newdirfid: f,
            newname: "g".into(),
        },
        Error::NOT_DIR,
    );
    // A directory cannot move into itself.
    fs.mkdir_p("a/b").unwrap();
    let (a, _) = p.walk(&mut fs, root, &["a"]);
    let (b, bq) = p.walk(&mut fs, root, &["a", "b"]);
    p.err_is(
        &mut fs,
        Trename {
            fid: a,
            dfid: b,
            name: "a".into(),
        },
        Error::INTO_ITSELF,
    );
    // rename(2) replaces a file, and an empty directory with a directory.
    fs.write_file("x", b"x").unwrap();
    p.ok(
        &mut fs,
        Trenameat {
            olddirfid: root,
            oldname: "x".into(),
            newdirfid: root,
            newname: "f".into(),
        },
    );
    assert_eq!(fs.read_file("f").unwrap(), b"x");
    fs.mkdir_p("empty").unwrap();
    p.ok(
        &mut fs,
        Trenameat {
            olddirfid: a,
            oldname: "b".into(),
            newdirfid: root,
            newname: "empty".into(),
        },
    );
    assert!(fs.list_dir("a").unwrap().is_empty());
    assert_eq!(fs.qid_of("empty").unwrap().path, bq[1].path);
    p.err_is(
        &mut fs,
        Trenameat {
            olddirfid: root,
            oldname: "f".into(),
            newdirfid: root,
            newname: "a".into(),
        },
        Error::IS_DIR,
    );
}
