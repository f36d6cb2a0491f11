//! Golden byte vectors for every message of 9P2000, 9P2000.u and 9P2000.L.
//!
//! Every expected frame below was worked out by hand from the protocol layouts (Plan 9 intro(5)
//! and stat(5), the 9P2000.u draft, diod's protocol.md for 9P2000.L), field by field, and is
//! NOT produced by the encoder under test. Layout reminders:
//!
//! - a frame is `size[4] type[1] tag[2]` then the body; `size` counts the whole frame;
//! - integers are little-endian; a string is `len[2]` + bytes; data is `count[4]` + bytes;
//! - a qid is `type[1] version[4] path[8]`;
//! - a stat record is `size[2] type[2] dev[4] qid[13] mode[4] atime[4] mtime[4] length[8]
//!   name[s] uid[s] gid[s] muid[s]` (9P2000.u adds `extension[s] n_uid[4] n_gid[4]
//!   n_muid[4]`), where `size` counts the bytes after itself; in Rstat and Twstat the record
//!   is preceded by `n[2]`, the record's length including its own size field.
//!
//! Hex text is parsed by [`hex`]: whitespace is ignored and `//` starts a comment running to
//! the end of the line, so each line names the field it holds.

use bytes::Bytes;
use p9_core::dir::{self, Dirent};
use p9_core::*;

/// Parse hand-written hex: whitespace is ignored, `//` comments run to the end of the line.
fn hex(text: &str) -> Bytes {
    let mut nibbles = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for c in code.chars().filter(|c| !c.is_whitespace()) {
            let v = c
                .to_digit(16)
                .unwrap_or_else(|| panic!("not a hex digit: {c:?} in line {line:?}"));
            nibbles.push(v as u8);
        }
    }
    let pairs = nibbles.chunks_exact(2);
    assert!(pairs.remainder().is_empty(), "odd number of hex digits");
    pairs.map(|p| (p[0] << 4) | p[1]).collect()
}

fn s(b: &'static [u8]) -> Bytes {
    Bytes::from_static(b)
}

// Qids with a distinct byte in every position, so that a misplaced field shows.
/// `80 0a0b0c0d 1011121314151617`
const QA: Qid = Qid {
    typ: qid_type::DIR,
    version: 0x0d0c_0b0a,
    path: 0x1716_1514_1312_1110,
};
/// `00 20212223 28292a2b2c2d2e2f`
const QB: Qid = Qid {
    typ: qid_type::FILE,
    version: 0x2322_2120,
    path: 0x2f2e_2d2c_2b2a_2928,
};
/// `02 30313233 38393a3b3c3d3e3f`
const QC: Qid = Qid {
    typ: qid_type::SYMLINK,
    version: 0x3332_3130,
    path: 0x3f3e_3d3c_3b3a_3938,
};
/// `08 41424344 45464748494a4b4c`
const QAUTH: Qid = Qid {
    typ: qid_type::AUTH,
    version: 0x4443_4241,
    path: 0x4c4b_4a49_4847_4645,
};

/// The two-entry 9P2000.L directory listing used by the Rreaddir case and the dirent tests
/// (58 bytes).
macro_rules! dirent_listing {
    () => {
        r#"
        80 0a0b0c0d 1011121314151617     // entry 1: qid QA
        0100000000000000                 //   offset 1
        04                               //   type DT_DIR
        0100 2e                          //   name "."
        00 20212223 28292a2b2c2d2e2f     // entry 2: qid QB
        0200000000000000                 //   offset 2
        08                               //   type DT_REG
        0900 68656c6c6f2e747874          //   name "hello.txt"
        "#
    };
}

fn listing_dirents() -> [Dirent; 2] {
    [
        Dirent {
            qid: QA,
            offset: 1,
            typ: 4,
            name: s(b"."),
        },
        Dirent {
            qid: QB,
            offset: 2,
            typ: 8,
            name: s(b"hello.txt"),
        },
    ]
}

struct Case {
    name: &'static str,
    dialect: Dialect,
    hex: &'static str,
    fcall: Fcall,
}

fn case(
    name: &'static str,
    dialect: Dialect,
    hex: &'static str,
    msg: impl Into<Msg>,
    tag: u16,
) -> Case {
    Case {
        name,
        dialect,
        hex,
        fcall: Fcall::new(tag, msg),
    }
}

const F1: Fid = Fid(0x0102_0304);

fn cases() -> Vec<Case> {
    use Dialect::{Base, DotL, DotU};
    vec![
        // ---------------------------------------------------------------- version
        case(
            "Tversion 9P2000",
            Base,
            r#"
            13000000        // size 19
            64              // type 100 Tversion
            ffff            // tag NOTAG
            18200000        // msize 8216
            0600 395032303030 // version "9P2000"
            "#,
            Tversion {
                msize: 8216,
                version: s(b"9P2000"),
            },
            NOTAG,
        ),
        case(
            "Tversion 9P2000.u",
            DotU,
            r#"
            15000000        // size 21
            64              // type 100 Tversion
            ffff            // tag NOTAG
            00000100        // msize 65536
            0800 3950323030302e75 // version "9P2000.u"
            "#,
            Tversion {
                msize: 0x1_0000,
                version: s(b"9P2000.u"),
            },
            NOTAG,
        ),
        case(
            "Rversion 9P2000.L",
            DotL,
            r#"
            15000000        // size 21
            65              // type 101 Rversion
            ffff            // tag NOTAG
            00000100        // msize 65536
            0800 3950323030302e4c // version "9P2000.L"
            "#,
            Rversion {
                msize: 0x1_0000,
                version: s(b"9P2000.L"),
            },
            NOTAG,
        ),
        // ---------------------------------------------------------------- auth
        case(
            "Tauth 9P2000 (no n_uname)",
            Base,
            r#"
            15000000        // size 21
            66              // type 102 Tauth
            0201            // tag 0x0102
            04030201        // afid 0x01020304
            0600 676c656e6461 // uname "glenda"
            0000            // aname ""
            "#,
            Tauth {
                afid: F1,
                uname: s(b"glenda"),
                aname: s(b""),
                n_uname: None,
            },
            0x0102,
        ),
        case(
            "Tauth 9P2000.u (n_uname)",
            DotU,
            r#"
            1a000000        // size 26
            66              // type 102 Tauth
            0302            // tag 0x0203
            0d0c0b0a        // afid 0x0a0b0c0d
            0300 626f62     // uname "bob"
            0400 2f737276   // aname "/srv"
            e8030000        // n_uname 1000
            "#,
            Tauth {
                afid: Fid(0x0a0b_0c0d),
                uname: s(b"bob"),
                aname: s(b"/srv"),
                n_uname: Some(1000),
            },
            0x0203,
        ),
        case(
            "Tauth 9P2000.L (n_uname)",
            DotL,
            r#"
            13000000        // size 19
            66              // type 102 Tauth
            0403            // tag 0x0304
            14131211        // afid 0x11121314
            0000            // uname ""
            0000            // aname ""
            ffffffff        // n_uname NONUNAME
            "#,
            Tauth {
                afid: Fid(0x1112_1314),
                uname: s(b""),
                aname: s(b""),
                n_uname: Some(NONUNAME),
            },
            0x0304,
        ),
        case(
            "Rauth",
            Base,
            r#"
            14000000        // size 20
            67              // type 103 Rauth
            0504            // tag 0x0405
            08 41424344 45464748494a4b4c // aqid QAUTH
            "#,
            Rauth { aqid: QAUTH },
            0x0405,
        ),
        // ---------------------------------------------------------------- attach
        case(
            "Tattach 9P2000 (no n_uname)",
            Base,
            r#"
            1d000000        // size 29
            68              // type 104 Tattach
            0605            // tag 0x0506
            04030201        // fid 0x01020304
            ffffffff        // afid NOFID
            0600 676c656e6461 // uname "glenda"
            0400 6d61696e   // aname "main"
            "#,
            Tattach {
                fid: F1,
                afid: NOFID,
                uname: s(b"glenda"),
                aname: s(b"main"),
                n_uname: None,
            },
            0x0506,
        ),
        case(
            "Tattach 9P2000.u (n_uname)",
            DotU,
            r#"
            18000000        // size 24
            68              // type 104 Tattach
            0706            // tag 0x0607
            24232221        // fid 0x21222324
            34333231        // afid 0x31323334
            0100 75         // uname "u"
            0000            // aname ""
            e9030000        // n_uname 1001
            "#,
            Tattach {
                fid: Fid(0x2122_2324),
                afid: Fid(0x3132_3334),
                uname: s(b"u"),
                aname: s(b""),
                n_uname: Some(1001),
            },
            0x0607,
        ),
        case(
            "Tattach 9P2000.L (n_uname)",
            DotL,
            r#"
            1f000000        // size 31
            68              // type 104 Tattach
            0807            // tag 0x0708
            44434241        // fid 0x41424344
            ffffffff        // afid NOFID
            0400 726f6f74   // uname "root"
            0400 2f746d70   // aname "/tmp"
            00000000        // n_uname 0
            "#,
            Tattach {
                fid: Fid(0x4142_4344),
                afid: NOFID,
                uname: s(b"root"),
                aname: s(b"/tmp"),
                n_uname: Some(0),
            },
            0x0708,
        ),
        case(
            "Rattach",
            DotL,
            r#"
            14000000        // size 20
            69              // type 105 Rattach
            0908            // tag 0x0809
            80 0a0b0c0d 1011121314151617 // qid QA
            "#,
            Rattach { qid: QA },
            0x0809,
        ),
        // ---------------------------------------------------------------- error
        case(
            "Rerror 9P2000 (no errno)",
            Base,
            r#"
            1c000000        // size 28
            6b              // type 107 Rerror
            0a09            // tag 0x090a
            1300            // ename length 19
            66696c65 20 646f6573 20 6e6f74 20 6578697374 // "file does not exist"
            "#,
            Rerror {
                ename: s(b"file does not exist"),
                errno: None,
            },
            0x090a,
        ),
        case(
            "Rerror 9P2000.u (errno)",
            DotU,
            r#"
            13000000        // size 19
            6b              // type 107 Rerror
            0b0a            // tag 0x0a0b
            0600 64656e696564 // ename "denied"
            0d000000        // errno 13 EACCES
            "#,
            Rerror {
                ename: s(b"denied"),
                errno: Some(errno::EACCES),
            },
            0x0a0b,
        ),
        case(
            "Rlerror",
            DotL,
            r#"
            0b000000        // size 11
            07              // type 7 Rlerror
            2625            // tag 0x2526
            02000000        // ecode 2 ENOENT
            "#,
            Rlerror {
                ecode: errno::ENOENT,
            },
            0x2526,
        ),
        // ---------------------------------------------------------------- flush
        case(
            "Tflush",
            Base,
            r#"
            09000000        // size 9
            6c              // type 108 Tflush
            0c0b            // tag 0x0b0c
            0201            // oldtag 0x0102
            "#,
            Tflush { oldtag: 0x0102 },
            0x0b0c,
        ),
        case(
            "Rflush",
            DotU,
            r#"
            07000000        // size 7
            6d              // type 109 Rflush
            0d0c            // tag 0x0c0d
            "#,
            Rflush {},
            0x0c0d,
        ),
        // ---------------------------------------------------------------- walk
        case(
            "Twalk, no names (fid clone)",
            DotL,
            r#"
            11000000        // size 17
            6e              // type 110 Twalk
            0e0d            // tag 0x0d0e
            04030201        // fid 0x01020304
            08070605        // newfid 0x05060708
            0000            // nwname 0
            "#,
            Twalk {
                fid: F1,
                newfid: Fid(0x0506_0708),
                wnames: WalkNames::new(Vec::<&[u8]>::new()).unwrap(),
            },
            0x0d0e,
        ),
        case(
            "Twalk, three names, one not UTF-8",
            Base,
            r#"
            20000000        // size 32
            6e              // type 110 Twalk
            0f0e            // tag 0x0e0f
            40302010        // fid 0x10203040
            80706050        // newfid 0x50607080
            0300            // nwname 3
            0300 757372     // wname "usr"
            0300 6c6962     // wname "lib"
            0300 fffe80     // wname ff fe 80 (not UTF-8)
            "#,
            Twalk {
                fid: Fid(0x1020_3040),
                newfid: Fid(0x5060_7080),
                wnames: WalkNames::new([&b"usr"[..], b"lib", b"\xff\xfe\x80"]).unwrap(),
            },
            0x0e0f,
        ),
        case(
            "Rwalk, no qids",
            Base,
            r#"
            09000000        // size 9
            6f              // type 111 Rwalk
            100f            // tag 0x0f10
            0000            // nwqid 0
            "#,
            Rwalk {
                wqids: WalkQids::new(&[]).unwrap(),
            },
            0x0f10,
        ),
        case(
            "Rwalk, three qids",
            DotU,
            r#"
            30000000        // size 48
            6f              // type 111 Rwalk
            1110            // tag 0x1011
            0300            // nwqid 3
            80 0a0b0c0d 1011121314151617 // wqid QA
            00 20212223 28292a2b2c2d2e2f // wqid QB
            02 30313233 38393a3b3c3d3e3f // wqid QC
            "#,
            Rwalk {
                wqids: WalkQids::new(&[QA, QB, QC]).unwrap(),
            },
            0x1011,
        ),
        // ---------------------------------------------------------------- open / create
        case(
            "Topen",
            Base,
            r#"
            0c000000        // size 12
            70              // type 112 Topen
            1211            // tag 0x1112
            04030201        // fid 0x01020304
            12              // mode ORDWR|OTRUNC
            "#,
            Topen {
                fid: F1,
                mode: open_mode::RDWR | open_mode::TRUNC,
            },
            0x1112,
        ),
        case(
            "Ropen",
            DotU,
            r#"
            18000000        // size 24
            71              // type 113 Ropen
            1312            // tag 0x1213
            00 20212223 28292a2b2c2d2e2f // qid QB
            e81f0000        // iounit 8168
            "#,
            Ropen {
                qid: QB,
                iounit: 8168,
            },
            0x1213,
        ),
        case(
            "Tcreate 9P2000 (no extension)",
            Base,
            r#"
            15000000        // size 21
            72              // type 114 Tcreate
            1413            // tag 0x1314
            04030201        // fid 0x01020304
            0300 6e6577     // name "new"
            ed010080        // perm DMDIR|0755
            01              // mode OWRITE
            "#,
            Tcreate {
                fid: F1,
                name: s(b"new"),
                perm: dm::DIR | 0o755,
                mode: open_mode::WRITE,
                extension: None,
            },
            0x1314,
        ),
        case(
            "Tcreate 9P2000.u (extension)",
            DotU,
            r#"
            1e000000        // size 30
            72              // type 114 Tcreate
            1514            // tag 0x1415
            0d0c0b0a        // fid 0x0a0b0c0d
            0300 6c6e6b     // name "lnk"
            ff010002        // perm DMSYMLINK|0777
            02              // mode ORDWR
            0700 2f746172676574 // extension "/target"
            "#,
            Tcreate {
                fid: Fid(0x0a0b_0c0d),
                name: s(b"lnk"),
                perm: dm::SYMLINK | 0o777,
                mode: open_mode::RDWR,
                extension: Some(s(b"/target")),
            },
            0x1415,
        ),
        case(
            "Rcreate",
            Base,
            r#"
            18000000        // size 24
            73              // type 115 Rcreate
            1615            // tag 0x1516
            02 30313233 38393a3b3c3d3e3f // qid QC
            00040000        // iounit 1024
            "#,
            Rcreate {
                qid: QC,
                iounit: 1024,
            },
            0x1516,
        ),
        // ---------------------------------------------------------------- read / write
        case(
            "Tread",
            DotL,
            r#"
            17000000        // size 23
            74              // type 116 Tread
            1716            // tag 0x1617
            04030201        // fid 0x01020304
            0807060504030201 // offset 0x0102030405060708
            00100000        // count 4096
            "#,
            Tread {
                fid: F1,
                offset: 0x0102_0304_0506_0708,
                count: 4096,
            },
            0x1617,
        ),
        case(
            "Rread with payload",
            Base,
            r#"
            11000000        // size 17
            75              // type 117 Rread
            1817            // tag 0x1718
            06000000        // count 6
            68656c6c6f0a    // data "hello\n"
            "#,
            Rread {
                data: Data(s(b"hello\n")),
            },
            0x1718,
        ),
        case(
            "Rread empty (end of file)",
            DotL,
            r#"
            0b000000        // size 11
            75              // type 117 Rread
            1918            // tag 0x1819
            00000000        // count 0
            "#,
            Rread { data: Data(s(b"")) },
            0x1819,
        ),
        case(
            "Twrite with payload",
            DotU,
            r#"
            1a000000        // size 26
            76              // type 118 Twrite
            1a19            // tag 0x191a
            0d0c0b0a        // fid 0x0a0b0c0d
            0000000001000000 // offset 0x100000000
            03000000        // count 3
            00ff10          // data 00 ff 10
            "#,
            Twrite {
                fid: Fid(0x0a0b_0c0d),
                offset: 0x1_0000_0000,
                data: Data(s(b"\x00\xff\x10")),
            },
            0x191a,
        ),
        case(
            "Rwrite",
            DotL,
            r#"
            0b000000        // size 11
            77              // type 119 Rwrite
            1b1a            // tag 0x1a1b
            03020100        // count 0x00010203
            "#,
            Rwrite { count: 0x0001_0203 },
            0x1a1b,
        ),
        // ---------------------------------------------------------------- clunk / remove
        case(
            "Tclunk",
            Base,
            r#"
            0b000000        // size 11
            78              // type 120 Tclunk
            1c1b            // tag 0x1b1c
            04030201        // fid 0x01020304
            "#,
            Tclunk { fid: F1 },
            0x1b1c,
        ),
        case(
            "Rclunk",
            DotL,
            r#"
            07000000        // size 7
            79              // type 121 Rclunk
            1d1c            // tag 0x1c1d
            "#,
            Rclunk {},
            0x1c1d,
        ),
        case(
            "Tremove",
            DotU,
            r#"
            0b000000        // size 11
            7a              // type 122 Tremove
            1e1d            // tag 0x1d1e
            98badcfe        // fid 0xfedcba98
            "#,
            Tremove {
                fid: Fid(0xfedc_ba98),
            },
            0x1d1e,
        ),
        case(
            "Rremove",
            Base,
            r#"
            07000000        // size 7
            7b              // type 123 Rremove
            1f1e            // tag 0x1e1f
            "#,
            Rremove {},
            0x1e1f,
        ),
        // ---------------------------------------------------------------- stat / wstat
        case(
            "Tstat",
            DotU,
            r#"
            0b000000        // size 11
            7c              // type 124 Tstat
            201f            // tag 0x1f20
            04030201        // fid 0x01020304
            "#,
            Tstat { fid: F1 },
            0x1f20,
        ),
        case(
            "Rstat 9P2000",
            Base,
            r#"
            4c000000        // size 76
            7d              // type 125 Rstat
            2120            // tag 0x2021
            4300            // n 67 (the record, size field included)
            4100            // stat.size 65
            3412            //   type 0x1234
            bc9a7856        //   dev 0x56789abc
            00 20212223 28292a2b2c2d2e2f // qid QB
            a4010000        //   mode 0644
            64636261        //   atime 0x61626364
            68676665        //   mtime 0x65666768
            0200000001000000 // length 0x100000002
            0900 6e6f7465732e747874 // name "notes.txt"
            0600 676c656e6461 //   uid "glenda"
            0300 737973     //   gid "sys"
            0000            //   muid ""
            "#,
            Rstat {
                stat: Stat {
                    typ: 0x1234,
                    dev: 0x5678_9abc,
                    qid: QB,
                    mode: 0o644,
                    atime: 0x6162_6364,
                    mtime: 0x6566_6768,
                    length: 0x1_0000_0002,
                    name: s(b"notes.txt"),
                    uid: s(b"glenda"),
                    gid: s(b"sys"),
                    muid: s(b""),
                    ext: None,
                },
            },
            0x2021,
        ),
        case(
            "Rstat 9P2000.u",
            DotU,
            r#"
            5d000000        // size 93
            7d              // type 125 Rstat
            2221            // tag 0x2122
            5400            // n 84
            5200            // stat.size 82
            cdab            //   type 0xabcd
            0d0c0b0a        //   dev 0x0a0b0c0d
            02 30313233 38393a3b3c3d3e3f // qid QC
            ff010002        //   mode DMSYMLINK|0777
            5d5c5b5a        //   atime 0x5a5b5c5d
            61605f5e        //   mtime 0x5e5f6061
            0700000000000000 // length 7
            0300 6c6e6b     //   name "lnk"
            0300 626f62     //   uid "bob"
            0500 7374616666 //   gid "staff"
            0300 626f62     //   muid "bob"
            0700 2f746172676574 // extension "/target"
            e8030000        //   n_uid 1000
            32000000        //   n_gid 50
            e8030000        //   n_muid 1000
            "#,
            Rstat {
                stat: Stat {
                    typ: 0xabcd,
                    dev: 0x0a0b_0c0d,
                    qid: QC,
                    mode: dm::SYMLINK | 0o777,
                    atime: 0x5a5b_5c5d,
                    mtime: 0x5e5f_6061,
                    length: 7,
                    name: s(b"lnk"),
                    uid: s(b"bob"),
                    gid: s(b"staff"),
                    muid: s(b"bob"),
                    ext: Some(StatExt {
                        extension: s(b"/target"),
                        n_uid: 1000,
                        n_gid: 50,
                        n_muid: 1000,
                    }),
                },
            },
            0x2122,
        ),
        case(
            "Twstat 9P2000 (rename only, rest don't-touch)",
            Base,
            r#"
            45000000        // size 69
            7e              // type 126 Twstat
            2322            // tag 0x2223
            04030201        // fid 0x01020304
            3800            // n 56
            3600            // stat.size 54
            ffff            //   type ~0
            ffffffff        //   dev ~0
            ff ffffffff ffffffffffffffff // qid ~0
            b6010000        //   mode 0666
            ffffffff        //   atime ~0
            65646362        //   mtime 0x62636465
            ffffffffffffffff // length ~0
            0700 72656e616d6564 // name "renamed"
            0000            //   uid ""
            0000            //   gid ""
            0000            //   muid ""
            "#,
            Twstat {
                fid: F1,
                stat: Stat {
                    typ: !0,
                    dev: !0,
                    qid: Qid {
                        typ: !0,
                        version: !0,
                        path: !0,
                    },
                    mode: 0o666,
                    atime: !0,
                    mtime: 0x6263_6465,
                    length: !0,
                    name: s(b"renamed"),
                    uid: s(b""),
                    gid: s(b""),
                    muid: s(b""),
                    ext: None,
                },
            },
            0x2223,
        ),
        case(
            "Twstat 9P2000.u",
            DotU,
            r#"
            4c000000        // size 76
            7e              // type 126 Twstat
            2423            // tag 0x2324
            0d0c0b0a        // fid 0x0a0b0c0d
            3f00            // n 63
            3d00            // stat.size 61
            0100            //   type 1
            02000000        //   dev 2
            00 20212223 28292a2b2c2d2e2f // qid QB
            a4010000        //   mode 0644
            04030201        //   atime 0x01020304
            08070605        //   mtime 0x05060708
            1000000000000000 // length 16
            0000            //   name ""
            0000            //   uid ""
            0000            //   gid ""
            0000            //   muid ""
            0000            //   extension ""
            ffffffff        //   n_uid ~0
            64000000        //   n_gid 100
            ffffffff        //   n_muid ~0
            "#,
            Twstat {
                fid: Fid(0x0a0b_0c0d),
                stat: Stat {
                    typ: 1,
                    dev: 2,
                    qid: QB,
                    mode: 0o644,
                    atime: 0x0102_0304,
                    mtime: 0x0506_0708,
                    length: 16,
                    name: s(b""),
                    uid: s(b""),
                    gid: s(b""),
                    muid: s(b""),
                    ext: Some(StatExt {
                        extension: s(b""),
                        n_uid: !0,
                        n_gid: 100,
                        n_muid: !0,
                    }),
                },
            },
            0x2324,
        ),
        case(
            "Rwstat",
            DotU,
            r#"
            07000000        // size 7
            7f              // type 127 Rwstat
            2524            // tag 0x2425
            "#,
            Rwstat {},
            0x2425,
        ),
        // ---------------------------------------------------------------- 9P2000.L
        case(
            "Tstatfs",
            DotL,
            r#"
            0b000000        // size 11
            08              // type 8 Tstatfs
            2726            // tag 0x2627
            04030201        // fid 0x01020304
            "#,
            Tstatfs { fid: F1 },
            0x2627,
        ),
        case(
            "Rstatfs",
            DotL,
            r#"
            43000000        // size 67
            09              // type 9 Rstatfs
            2827            // tag 0x2728
            94190201        // type 0x01021994
            00100000        // bsize 4096
            2222222211111111 // blocks 0x1111111122222222
            0807060504030201 // bfree 0x0102030405060708
            efcdab0000000000 // bavail 0xabcdef
            0010000000000000 // files 0x1000
            ff0f000000000000 // ffree 0xfff
            0df0fecaefbeadde // fsid 0xdeadbeefcafef00d
            ff000000        // namelen 255
            "#,
            Rstatfs {
                typ: 0x0102_1994,
                bsize: 4096,
                blocks: 0x1111_1111_2222_2222,
                bfree: 0x0102_0304_0506_0708,
                bavail: 0xab_cdef,
                files: 0x1000,
                ffree: 0xfff,
                fsid: 0xdead_beef_cafe_f00d,
                namelen: 255,
            },
            0x2728,
        ),
        case(
            "Tlopen",
            DotL,
            r#"
            0f000000        // size 15
            0c              // type 12 Tlopen
            2928            // tag 0x2829
            04030201        // fid 0x01020304
            01040000        // flags O_WRONLY|O_APPEND (0o2001)
            "#,
            Tlopen {
                fid: F1,
                flags: lflags::WRONLY | lflags::APPEND,
            },
            0x2829,
        ),
        case(
            "Rlopen",
            DotL,
            r#"
            18000000        // size 24
            0d              // type 13 Rlopen
            2a29            // tag 0x292a
            80 0a0b0c0d 1011121314151617 // qid QA
            00000100        // iounit 65536
            "#,
            Rlopen {
                qid: QA,
                iounit: 0x1_0000,
            },
            0x292a,
        ),
        case(
            "Tlcreate",
            DotL,
            r#"
            1c000000        // size 28
            0e              // type 14 Tlcreate
            2b2a            // tag 0x2a2b
            04030201        // fid 0x01020304
            0300 662e63     // name "f.c"
            c2000000        // flags O_RDWR|O_CREAT|O_EXCL (0o302)
            a4810000        // mode 0o100644
            e8030000        // gid 1000
            "#,
            Tlcreate {
                fid: F1,
                name: s(b"f.c"),
                flags: lflags::RDWR | lflags::CREATE | lflags::EXCL,
                mode: 0o100644,
                gid: 1000,
            },
            0x2a2b,
        ),
        case(
            "Rlcreate",
            DotL,
            r#"
            18000000        // size 24
            0f              // type 15 Rlcreate
            2c2b            // tag 0x2b2c
            00 20212223 28292a2b2c2d2e2f // qid QB
            00200000        // iounit 8192
            "#,
            Rlcreate {
                qid: QB,
                iounit: 8192,
            },
            0x2b2c,
        ),
        case(
            "Tsymlink",
            DotL,
            r#"
            19000000        // size 25
            10              // type 16 Tsymlink
            2d2c            // tag 0x2c2d
            04030201        // fid 0x01020304
            0200 6c6e       // name "ln"
            0400 2e2e2f78   // symtgt "../x"
            64000000        // gid 100
            "#,
            Tsymlink {
                fid: F1,
                name: s(b"ln"),
                symtgt: s(b"../x"),
                gid: 100,
            },
            0x2c2d,
        ),
        case(
            "Rsymlink",
            DotL,
            r#"
            14000000        // size 20
            11              // type 17 Rsymlink
            2e2d            // tag 0x2d2e
            02 30313233 38393a3b3c3d3e3f // qid QC
            "#,
            Rsymlink { qid: QC },
            0x2d2e,
        ),
        case(
            "Tmknod",
            DotL,
            r#"
            21000000        // size 33
            12              // type 18 Tmknod
            2f2e            // tag 0x2e2f
            04030201        // dfid 0x01020304
            0400 6e756c6c   // name "null"
            b6210000        // mode S_IFCHR|0666 (0o20666)
            01000000        // major 1
            03000000        // minor 3
            00000000        // gid 0
            "#,
            Tmknod {
                dfid: F1,
                name: s(b"null"),
                mode: 0o020666,
                major: 1,
                minor: 3,
                gid: 0,
            },
            0x2e2f,
        ),
        case(
            "Rmknod",
            DotL,
            r#"
            14000000        // size 20
            13              // type 19 Rmknod
            302f            // tag 0x2f30
            00 20212223 28292a2b2c2d2e2f // qid QB
            "#,
            Rmknod { qid: QB },
            0x2f30,
        ),
        case(
            "Trename",
            DotL,
            r#"
            12000000        // size 18
            14              // type 20 Trename
            3130            // tag 0x3031
            04030201        // fid 0x01020304
            08070605        // dfid 0x05060708
            0100 62         // name "b"
            "#,
            Trename {
                fid: F1,
                dfid: Fid(0x0506_0708),
                name: s(b"b"),
            },
            0x3031,
        ),
        case(
            "Rrename",
            DotL,
            r#"
            07000000        // size 7
            15              // type 21 Rrename
            3231            // tag 0x3132
            "#,
            Rrename {},
            0x3132,
        ),
        case(
            "Treadlink",
            DotL,
            r#"
            0b000000        // size 11
            16              // type 22 Treadlink
            3332            // tag 0x3233
            04030201        // fid 0x01020304
            "#,
            Treadlink { fid: F1 },
            0x3233,
        ),
        case(
            "Rreadlink",
            DotL,
            r#"
            14000000        // size 20
            17              // type 23 Rreadlink
            3433            // tag 0x3334
            0b00 2f6574632f706173737764 // target "/etc/passwd"
            "#,
            Rreadlink {
                target: s(b"/etc/passwd"),
            },
            0x3334,
        ),
        case(
            "Tgetattr",
            DotL,
            r#"
            13000000        // size 19
            18              // type 24 Tgetattr
            3534            // tag 0x3435
            04030201        // fid 0x01020304
            ff07000000000000 // request_mask 0x7ff
            "#,
            Tgetattr {
                fid: F1,
                request_mask: 0x7ff,
            },
            0x3435,
        ),
        case(
            "Rgetattr",
            DotL,
            r#"
            a0000000        // size 160
            19              // type 25 Rgetattr
            3635            // tag 0x3536
            ff07000000000000 // valid 0x7ff
            00 20212223 28292a2b2c2d2e2f // qid QB
            a4810000        // mode 0o100644
            e8030000        // uid 1000
            64000000        // gid 100
            0100000000000000 // nlink 1
            0000000000000000 // rdev 0
            3412000000000000 // size 0x1234
            0010000000000000 // blksize 4096
            1000000000000000 // blocks 16
            0100006500000000 // atime_sec 0x65000001
            1100000000000000 // atime_nsec 0x11
            0200006500000000 // mtime_sec 0x65000002
            2200000000000000 // mtime_nsec 0x22
            0300006500000000 // ctime_sec 0x65000003
            3300000000000000 // ctime_nsec 0x33
            0400006500000000 // btime_sec 0x65000004
            4400000000000000 // btime_nsec 0x44
            5500000000000000 // gen 0x55
            6600000000000000 // data_version 0x66
            "#,
            Rgetattr {
                valid: 0x7ff,
                qid: QB,
                mode: 0o100644,
                uid: 1000,
                gid: 100,
                nlink: 1,
                rdev: 0,
                size: 0x1234,
                blksize: 4096,
                blocks: 16,
                atime_sec: 0x6500_0001,
                atime_nsec: 0x11,
                mtime_sec: 0x6500_0002,
                mtime_nsec: 0x22,
                ctime_sec: 0x6500_0003,
                ctime_nsec: 0x33,
                btime_sec: 0x6500_0004,
                btime_nsec: 0x44,
                gen: 0x55,
                data_version: 0x66,
            },
            0x3536,
        ),
        case(
            "Tsetattr",
            DotL,
            r#"
            43000000        // size 67
            1a              // type 26 Tsetattr
            3736            // tag 0x3637
            04030201        // fid 0x01020304
            7f010000        // valid 0x17f
            a4010000        // mode 0644
            e8030000        // uid 1000
            64000000        // gid 100
            0000000002000000 // size 0x200000000
            0100006500000000 // atime_sec 0x65000001
            0700000000000000 // atime_nsec 7
            0200006500000000 // mtime_sec 0x65000002
            0800000000000000 // mtime_nsec 8
            "#,
            Tsetattr {
                fid: F1,
                valid: 0x17f,
                mode: 0o644,
                uid: 1000,
                gid: 100,
                size: 0x2_0000_0000,
                atime_sec: 0x6500_0001,
                atime_nsec: 7,
                mtime_sec: 0x6500_0002,
                mtime_nsec: 8,
            },
            0x3637,
        ),
        case(
            "Rsetattr",
            DotL,
            r#"
            07000000        // size 7
            1b              // type 27 Rsetattr
            3837            // tag 0x3738
            "#,
            Rsetattr {},
            0x3738,
        ),
        case(
            "Txattrwalk",
            DotL,
            r#"
            17000000        // size 23
            1e              // type 30 Txattrwalk
            3938            // tag 0x3839
            04030201        // fid 0x01020304
            08070605        // newfid 0x05060708
            0600 757365722e61 // name "user.a"
            "#,
            Txattrwalk {
                fid: F1,
                newfid: Fid(0x0506_0708),
                name: s(b"user.a"),
            },
            0x3839,
        ),
        case(
            "Rxattrwalk",
            DotL,
            r#"
            0f000000        // size 15
            1f              // type 31 Rxattrwalk
            3a39            // tag 0x393a
            0807060504030201 // size 0x0102030405060708
            "#,
            Rxattrwalk {
                size: 0x0102_0304_0506_0708,
            },
            0x393a,
        ),
        case(
            "Txattrcreate",
            DotL,
            r#"
            1f000000        // size 31
            20              // type 32 Txattrcreate
            3b3a            // tag 0x3a3b
            04030201        // fid 0x01020304
            0600 757365722e61 // name "user.a"
            2000000000000000 // attr_size 32
            01000000        // flags 1 (XATTR_CREATE)
            "#,
            Txattrcreate {
                fid: F1,
                name: s(b"user.a"),
                attr_size: 32,
                flags: 1,
            },
            0x3a3b,
        ),
        case(
            "Rxattrcreate",
            DotL,
            r#"
            07000000        // size 7
            21              // type 33 Rxattrcreate
            3c3b            // tag 0x3b3c
            "#,
            Rxattrcreate {},
            0x3b3c,
        ),
        case(
            "Treaddir",
            DotL,
            r#"
            17000000        // size 23
            28              // type 40 Treaddir
            3d3c            // tag 0x3c3d
            04030201        // fid 0x01020304
            ffffffffffffff7f // offset 0x7fffffffffffffff
            00200000        // count 8192
            "#,
            Treaddir {
                fid: F1,
                offset: 0x7fff_ffff_ffff_ffff,
                count: 8192,
            },
            0x3c3d,
        ),
        case(
            "Rreaddir with two entries",
            DotL,
            concat!(
                r#"
                45000000    // size 69
                29          // type 41 Rreaddir
                3e3d        // tag 0x3d3e
                3a000000    // count 58
                "#,
                dirent_listing!()
            ),
            Rreaddir {
                data: Data(hex(dirent_listing!())),
            },
            0x3d3e,
        ),
        case(
            "Tfsync",
            DotL,
            r#"
            0f000000        // size 15
            32              // type 50 Tfsync
            3f3e            // tag 0x3e3f
            04030201        // fid 0x01020304
            01000000        // datasync 1
            "#,
            Tfsync {
                fid: F1,
                datasync: 1,
            },
            0x3e3f,
        ),
        case(
            "Rfsync",
            DotL,
            r#"
            07000000        // size 7
            33              // type 51 Rfsync
            403f            // tag 0x3f40
            "#,
            Rfsync {},
            0x3f40,
        ),
        case(
            "Tlock",
            DotL,
            r#"
            2a000000        // size 42
            34              // type 52 Tlock
            4140            // tag 0x4041
            04030201        // fid 0x01020304
            01              // type 1 (WRLCK)
            02000000        // flags 2 (RECLAIM)
            0010000000000000 // start 4096
            0002000000000000 // length 512
            39300000        // proc_id 12345
            0400 686f7374   // client_id "host"
            "#,
            Tlock {
                fid: F1,
                typ: 1,
                flags: 2,
                start: 4096,
                length: 512,
                proc_id: 12345,
                client_id: s(b"host"),
            },
            0x4041,
        ),
        case(
            "Rlock",
            DotL,
            r#"
            08000000        // size 8
            35              // type 53 Rlock
            4241            // tag 0x4142
            01              // status 1 (BLOCKED)
            "#,
            Rlock { status: 1 },
            0x4142,
        ),
        case(
            "Tgetlock",
            DotL,
            r#"
            23000000        // size 35
            36              // type 54 Tgetlock
            4342            // tag 0x4243
            04030201        // fid 0x01020304
            00              // type 0 (RDLCK)
            1000000000000000 // start 16
            2000000000000000 // length 32
            efbe0000        // proc_id 0xbeef
            0100 68         // client_id "h"
            "#,
            Tgetlock {
                fid: F1,
                typ: 0,
                start: 16,
                length: 32,
                proc_id: 0xbeef,
                client_id: s(b"h"),
            },
            0x4243,
        ),
        case(
            "Rgetlock",
            DotL,
            r#"
            1e000000        // size 30
            37              // type 55 Rgetlock
            4443            // tag 0x4344
            02              // type 2 (UNLCK)
            3000000000000000 // start 48
            0000000000000000 // length 0
            07000000        // proc_id 7
            0000            // client_id ""
            "#,
            Rgetlock {
                typ: 2,
                start: 48,
                length: 0,
                proc_id: 7,
                client_id: s(b""),
            },
            0x4344,
        ),
        case(
            "Tlink",
            DotL,
            r#"
            15000000        // size 21
            46              // type 70 Tlink
            4544            // tag 0x4445
            04030201        // dfid 0x01020304
            08070605        // fid 0x05060708
            0400 68617264   // name "hard"
            "#,
            Tlink {
                dfid: F1,
                fid: Fid(0x0506_0708),
                name: s(b"hard"),
            },
            0x4445,
        ),
        case(
            "Rlink",
            DotL,
            r#"
            07000000        // size 7
            47              // type 71 Rlink
            4645            // tag 0x4546
            "#,
            Rlink {},
            0x4546,
        ),
        case(
            "Tmkdir",
            DotL,
            r#"
            16000000        // size 22
            48              // type 72 Tmkdir
            4746            // tag 0x4647
            04030201        // dfid 0x01020304
            0100 64         // name "d"
            ed010000        // mode 0755
            64000000        // gid 100
            "#,
            Tmkdir {
                dfid: F1,
                name: s(b"d"),
                mode: 0o755,
                gid: 100,
            },
            0x4647,
        ),
        case(
            "Rmkdir",
            DotL,
            r#"
            14000000        // size 20
            49              // type 73 Rmkdir
            4847            // tag 0x4748
            80 0a0b0c0d 1011121314151617 // qid QA
            "#,
            Rmkdir { qid: QA },
            0x4748,
        ),
        case(
            "Trenameat",
            DotL,
            r#"
            16000000        // size 22
            4a              // type 74 Trenameat
            4948            // tag 0x4849
            04030201        // olddirfid 0x01020304
            0100 61         // oldname "a"
            08070605        // newdirfid 0x05060708
            0200 6263       // newname "bc"
            "#,
            Trenameat {
                olddirfid: F1,
                oldname: s(b"a"),
                newdirfid: Fid(0x0506_0708),
                newname: s(b"bc"),
            },
            0x4849,
        ),
        case(
            "Rrenameat",
            DotL,
            r#"
            07000000        // size 7
            4b              // type 75 Rrenameat
            4a49            // tag 0x494a
            "#,
            Rrenameat {},
            0x494a,
        ),
        case(
            "Tunlinkat",
            DotL,
            r#"
            15000000        // size 21
            4c              // type 76 Tunlinkat
            4b4a            // tag 0x4a4b
            04030201        // dirfid 0x01020304
            0400 676f6e65   // name "gone"
            00020000        // flags 0x200 (AT_REMOVEDIR)
            "#,
            Tunlinkat {
                dirfid: F1,
                name: s(b"gone"),
                flags: 0x200,
            },
            0x4a4b,
        ),
        case(
            "Runlinkat",
            DotL,
            r#"
            07000000        // size 7
            4d              // type 77 Runlinkat
            4c4b            // tag 0x4b4c
            "#,
            Runlinkat {},
            0x4b4c,
        ),
    ]
}

/// Messages whose body differs between dialects, and the dialects that must each have a case
/// (one per body form).
const DIALECT_FORMS: &[(MsgType, &[Dialect])] = &[
    (
        MsgType::Tauth,
        &[Dialect::Base, Dialect::DotU, Dialect::DotL],
    ),
    (
        MsgType::Tattach,
        &[Dialect::Base, Dialect::DotU, Dialect::DotL],
    ),
    (MsgType::Rerror, &[Dialect::Base, Dialect::DotU]),
    (MsgType::Tcreate, &[Dialect::Base, Dialect::DotU]),
    (MsgType::Rstat, &[Dialect::Base, Dialect::DotU]),
    (MsgType::Twstat, &[Dialect::Base, Dialect::DotU]),
];

#[test]
fn golden_frames_decode_and_encode() {
    let mut failures = Vec::new();
    for c in cases() {
        let bytes = hex(c.hex);
        let ty = c.fcall.msg.msg_type();
        assert!(
            ty.in_dialect(c.dialect),
            "{}: {} is not a message of {}",
            c.name,
            ty.name(),
            c.dialect
        );
        match Fcall::decode(&bytes, c.dialect) {
            Ok(v) if v == c.fcall => {}
            other => failures.push(format!(
                "{} ({}): decode gave {other:?}, expected {:?}",
                c.name, c.dialect, c.fcall
            )),
        }
        match c.fcall.to_frame() {
            Ok(frame) if frame == bytes => {}
            other => failures.push(format!(
                "{} ({}): encode gave {:02x?}, expected {:02x?}",
                c.name,
                c.dialect,
                other.as_deref(),
                &bytes[..]
            )),
        }
        if c.fcall.encoded_len() != bytes.len() {
            failures.push(format!(
                "{} ({}): encoded_len {} but the golden frame has {} bytes",
                c.name,
                c.dialect,
                c.fcall.encoded_len(),
                bytes.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
}

/// A body without dialect-dependent fields decodes the same in every dialect that has the type.
#[test]
fn golden_frames_agree_across_dialects() {
    for c in cases() {
        let ty = c.fcall.msg.msg_type();
        if DIALECT_FORMS.iter().any(|(t, _)| *t == ty) {
            continue;
        }
        let bytes = hex(c.hex);
        for d in Dialect::ALL {
            let got = Fcall::decode(&bytes, d);
            if ty.in_dialect(d) {
                assert_eq!(got, Ok(c.fcall.clone()), "{} decoded as {d}", c.name);
            } else {
                let err = got.expect_err(c.name);
                assert_eq!(
                    err.kind,
                    DecodeErrorKind::UnknownType { dialect: d },
                    "{}",
                    c.name
                );
            }
        }
    }
}

#[test]
fn every_message_type_has_a_golden_case() {
    let cases = cases();
    let has = |ty: MsgType, d: Dialect| {
        cases
            .iter()
            .any(|c| c.fcall.msg.msg_type() == ty && c.dialect == d)
    };
    let mut missing: Vec<String> = MsgType::ALL
        .iter()
        .filter(|&&ty| {
            !Dialect::ALL
                .into_iter()
                .any(|d| ty.in_dialect(d) && has(ty, d))
        })
        .map(|ty| ty.name().to_string())
        .collect();
    for (ty, dialects) in DIALECT_FORMS {
        for &d in *dialects {
            if !has(*ty, d) {
                missing.push(format!("{} in {d}", ty.name()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "message types without a golden case: {}",
        missing.join(", ")
    );
}

#[test]
fn golden_malformed_frames() {
    use DecodeErrorKind::*;
    let cases: &[(&str, Dialect, &str, DecodeErrorKind)] = &[
        (
            "6-byte frame",
            Dialect::Base,
            r#"
            06000000        // size 6
            78              // type Tclunk
            01              // half a tag
            "#,
            FrameTooShort { len: 6 },
        ),
        ("empty frame", Dialect::DotL, "", FrameTooShort { len: 0 }),
        (
            "size field larger than the frame",
            Dialect::Base,
            r#"
            0c000000        // size 12, but 11 bytes follow
            78              // type 120 Tclunk
            0100            // tag 1
            04030201        // fid
            "#,
            SizeMismatch {
                declared: 12,
                actual: 11,
            },
        ),
        (
            "Tclunk with a trailing byte",
            Dialect::DotU,
            r#"
            0c000000        // size 12
            78              // type 120 Tclunk
            0100            // tag 1
            04030201        // fid
            00              // one byte too many
            "#,
            TrailingBytes { extra: 1 },
        ),
        (
            "Twalk declaring 17 names",
            Dialect::Base,
            r#"
            11000000        // size 17
            6e              // type 110 Twalk
            0100            // tag 1
            04030201        // fid
            08070605        // newfid
            1100            // nwname 17
            "#,
            TooManyWalkElements { count: 17 },
        ),
        (
            "Rwalk declaring 17 qids",
            Dialect::DotL,
            r#"
            09000000        // size 9
            6f              // type 111 Rwalk
            0100            // tag 1
            1100            // nwqid 17
            "#,
            TooManyWalkElements { count: 17 },
        ),
        (
            "Tversion string running past the end",
            Dialect::Base,
            r#"
            13000000        // size 19
            64              // type 100 Tversion
            ffff            // tag NOTAG
            18200000        // msize
            0a00            // version length 10 ...
            395032303030    // ... but only 6 bytes left
            "#,
            Truncated {
                needed: 10,
                available: 6,
            },
        ),
        (
            "Topen is not a 9P2000.L message",
            Dialect::DotL,
            r#"
            0c000000        // size 12
            70              // type 112 Topen
            0100            // tag 1
            04030201        // fid
            00              // mode
            "#,
            UnknownType {
                dialect: Dialect::DotL,
            },
        ),
        (
            "Tlopen is not a 9P2000 message",
            Dialect::Base,
            r#"
            0f000000        // size 15
            0c              // type 12 Tlopen
            0100            // tag 1
            04030201        // fid
            00000000        // flags
            "#,
            UnknownType {
                dialect: Dialect::Base,
            },
        ),
        (
            "type 106 (Terror) exists in no dialect",
            Dialect::DotU,
            r#"
            07000000        // size 7
            6a              // type 106
            0100            // tag 1
            "#,
            UnknownType {
                dialect: Dialect::DotU,
            },
        ),
        (
            "stat record whose size counts one byte more than its fields",
            Dialect::Base,
            r#"
            3b000000        // size 59
            7d              // type 125 Rstat
            0100            // tag 1
            3200            // n 50
            3000            // stat.size 48, but the fields take 47
            0000            //   type
            00000000        //   dev
            00 00000000 0000000000000000 // qid
            00000000        //   mode
            00000000        //   atime
            00000000        //   mtime
            0000000000000000 // length
            0000 0000 0000 0000 // name uid gid muid ""
            00              // the extra byte
            "#,
            StatSizeMismatch {
                declared: 48,
                actual: 47,
            },
        ),
        (
            "9P2000.u Rstat read as 9P2000: the .u fields are left over",
            Dialect::Base,
            r#"
            48000000        // size 72
            7d              // type 125 Rstat
            0100            // tag 1
            3f00            // n 63
            3d00            // stat.size 61 (a .u record with empty strings)
            0000 00000000 00 00000000 0000000000000000 // type dev qid
            00000000 00000000 00000000 0000000000000000 // mode atime mtime length
            0000 0000 0000 0000 // name uid gid muid ""
            0000            // extension ""
            e8030000 e8030000 e8030000 // n_uid n_gid n_muid
            "#,
            StatSizeMismatch {
                declared: 61,
                actual: 47,
            },
        ),
    ];
    for (name, dialect, text, kind) in cases {
        let bytes = hex(text);
        match Fcall::decode(&bytes, *dialect) {
            Err(e) => assert_eq!(&e.kind, kind, "{name}: {e}"),
            Ok(v) => panic!("{name}: decoded as {v:?}, expected {kind:?}"),
        }
    }
}

/// A two-record 9P2000 directory read (122 bytes).
const STAT_LISTING: &str = r#"
    3e00                // record 1: size 62
    0000                //   type 0
    00000000            //   dev 0
    80 0a0b0c0d 1011121314151617 // qid QA
    ed010080            //   mode DMDIR|0755
    00000065            //   atime 0x65000000
    01000065            //   mtime 0x65000001
    0000000000000000    //   length 0
    0300 6c6962         //   name "lib"
    0300 737973         //   uid "sys"
    0300 737973         //   gid "sys"
    0600 676c656e6461   //   muid "glenda"
    3800                // record 2: size 56
    4d00                //   type 'M'
    03000000            //   dev 3
    00 20212223 28292a2b2c2d2e2f // qid QB
    a4010000            //   mode 0644
    02000065            //   atime 0x65000002
    03000065            //   mtime 0x65000003
    0201000000000000    //   length 0x102
    0300 61ff62         //   name 61 ff 62 (not UTF-8)
    0600 676c656e6461   //   uid "glenda"
    0000                //   gid ""
    0000                //   muid ""
"#;

fn listing_stats() -> [Stat; 2] {
    [
        Stat {
            typ: 0,
            dev: 0,
            qid: QA,
            mode: dm::DIR | 0o755,
            atime: 0x6500_0000,
            mtime: 0x6500_0001,
            length: 0,
            name: s(b"lib"),
            uid: s(b"sys"),
            gid: s(b"sys"),
            muid: s(b"glenda"),
            ext: None,
        },
        Stat {
            typ: u16::from(b'M'),
            dev: 3,
            qid: QB,
            mode: 0o644,
            atime: 0x6500_0002,
            mtime: 0x6500_0003,
            length: 0x102,
            name: s(b"a\xffb"),
            uid: s(b"glenda"),
            gid: s(b""),
            muid: s(b""),
            ext: None,
        },
    ]
}

#[test]
fn golden_stat_listing() {
    let data = hex(STAT_LISTING);
    assert_eq!(data.len(), 122);
    let got: Result<Vec<Stat>, _> = dir::stat_records(&data, Dialect::Base).collect();
    assert_eq!(got.unwrap(), listing_stats());
}

#[test]
fn golden_stat_listing_qid_rewrite() {
    let mut data = hex(STAT_LISTING).to_vec();
    let mut seen = Vec::new();
    let mut names = Vec::new();
    let n = dir::rewrite_stat_qids(&mut data, Dialect::Base, |name, q| {
        names.push(name.to_vec());
        seen.push(*q);
        q.version = 0;
        q.path = 0x100 + seen.len() as u64 - 1;
    })
    .unwrap();
    assert_eq!(n, 2);
    assert_eq!(seen, [QA, QB]);
    assert_eq!(names, [b"lib".to_vec(), b"a\xffb".to_vec()]);
    let expected = hex(r#"
        3e00 0000 00000000
        80 00000000 0001000000000000 // qid: type kept, version 0, path 0x100
        ed010080 00000065 01000065 0000000000000000
        0300 6c6962 0300 737973 0300 737973 0600 676c656e6461
        3800 4d00 03000000
        00 00000000 0101000000000000 // qid: type kept, version 0, path 0x101
        a4010000 02000065 03000065 0201000000000000
        0300 61ff62 0600 676c656e6461 0000 0000
    "#);
    assert_eq!(data, &expected[..]);
}

#[test]
fn golden_stat_listing_truncated_is_not_rewritten() {
    // The listing without its last byte: the second record's muid length runs past the end.
    let full = hex(STAT_LISTING);
    let mut data = full[..full.len() - 1].to_vec();
    let err = dir::rewrite_stat_qids(&mut data, Dialect::Base, |_, q| q.path = 0).unwrap_err();
    assert!(
        matches!(err.kind, DecodeErrorKind::Truncated { .. }),
        "{err:?}"
    );
    assert_eq!(data, &full[..full.len() - 1]);
}

#[test]
fn golden_dirents() {
    let data = hex(dirent_listing!());
    assert_eq!(data.len(), 58);
    let got: Result<Vec<Dirent>, _> = dir::dirents(&data).collect();
    assert_eq!(got.unwrap(), listing_dirents());
}

#[test]
fn golden_dirent_qid_rewrite() {
    let mut data = hex(dirent_listing!()).to_vec();
    let mut seen = Vec::new();
    let mut names = Vec::new();
    let n = dir::rewrite_dirent_qids(&mut data, |name, q| {
        names.push(name.to_vec());
        seen.push(*q);
        q.version = q.version.wrapping_add(1);
        q.path = !q.path;
    })
    .unwrap();
    assert_eq!(n, 2);
    assert_eq!(seen, [QA, QB]);
    assert_eq!(names, [b".".to_vec(), b"hello.txt".to_vec()]);
    let expected = hex(r#"
        80 0b0b0c0d efeeedecebeae9e8 // QA, version + 1, path inverted
        0100000000000000 04 0100 2e
        00 21212223 d7d6d5d4d3d2d1d0 // QB, version + 1, path inverted
        0200000000000000 08 0900 68656c6c6f2e747874
    "#);
    assert_eq!(data, &expected[..]);
}
