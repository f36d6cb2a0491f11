//! Test support: a p9-core sans-IO client wired straight to a ramfs connection.
#![allow(dead_code)]

use bytes::Bytes;
use p9_core::client::{Client, ReplyError};
use p9_core::*;
use ramfs::{Conn, Fs};

pub const MSIZE: u32 = 8192;

/// One client and the server connection it talks to.
pub struct Peer {
    pub client: Client,
    pub conn: Conn,
    pub dialect: Dialect,
}

impl Peer {
    /// Connect and negotiate `dialect`.
    pub fn connect(fs: &mut Fs, dialect: Dialect) -> Peer {
        let mut client = Client::new(MSIZE, dialect);
        let mut conn = Conn::new(fs, MSIZE);
        let tversion = client.poll_transmit().expect("Tversion queued");
        let reply = conn.handle(fs, &tversion);
        client.handle_frame(&reply).expect("Rversion accepted");
        assert_eq!(client.dialect(), Some(dialect));
        assert_eq!(conn.dialect(), Some(dialect));
        Peer {
            client,
            conn,
            dialect,
        }
    }

    /// Send one request and return the reply's message (which may be an error).
    pub fn rpc(&mut self, fs: &mut Fs, msg: impl Into<Msg>) -> Msg {
        let msg = msg.into();
        let what = msg.msg_type();
        self.client.send(msg).expect("request encodes");
        let frame = self.client.poll_transmit().expect("request queued");
        let reply = self.conn.handle(fs, &frame);
        let reply = self
            .client
            .handle_frame(&reply)
            .unwrap_or_else(|e| panic!("bad reply to {}: {e}", what.name()));
        fs.check()
            .unwrap_or_else(|e| panic!("after {}: {e}", what.name()));
        reply.msg
    }

    /// A request that must succeed.
    pub fn ok(&mut self, fs: &mut Fs, msg: impl Into<Msg>) -> Msg {
        let msg = msg.into();
        let what = msg.msg_type().name();
        let reply = self.rpc(fs, msg);
        if let Some(e) = error_of(&reply) {
            panic!("{what} failed: {e}");
        }
        reply
    }

    /// A request that must fail; returns the error.
    pub fn err(&mut self, fs: &mut Fs, msg: impl Into<Msg>) -> ReplyError {
        let msg = msg.into();
        let what = msg.msg_type().name();
        let reply = self.rpc(fs, msg);
        error_of(&reply).unwrap_or_else(|| panic!("{what} succeeded: {reply:?}"))
    }

    /// A request that must fail with `errno` (checked in the dialect's form: .L gives only the
    /// errno, 9P2000 only the message, .u both).
    pub fn err_is(&mut self, fs: &mut Fs, msg: impl Into<Msg>, expected: ramfs::Error) {
        let e = self.err(fs, msg);
        match (self.dialect, e) {
            (Dialect::DotL, ReplyError::Errno(n)) => assert_eq!(n, expected.errno()),
            (Dialect::DotU, ReplyError::Message { ename, errno }) => {
                assert_eq!(&ename[..], expected.ename().as_bytes());
                assert_eq!(errno, Some(expected.errno()));
            }
            (Dialect::Base, ReplyError::Message { ename, errno: None }) => {
                assert_eq!(&ename[..], expected.ename().as_bytes())
            }
            (d, e) => panic!("error {e:?} is not in the form of {d}"),
        }
    }

    pub fn attach(&mut self, fs: &mut Fs) -> Fid {
        let fid = self.client.alloc_fid();
        let n_uname = self.dialect.is_extended().then_some(1000);
        self.ok(
            fs,
            Tattach {
                fid,
                afid: NOFID,
                uname: "glenda".into(),
                aname: Bytes::new(),
                n_uname,
            },
        );
        fid
    }

    /// Walk `names` from `fid` to a new fid; returns it and the qids.
    pub fn walk(&mut self, fs: &mut Fs, fid: Fid, names: &[&str]) -> (Fid, Vec<Qid>) {
        let newfid = self.client.alloc_fid();
        let reply = self.ok(
            fs,
            Twalk {
                fid,
                newfid,
                wnames: WalkNames::new(names).unwrap(),
            },
        );
        let Msg::Rwalk(r) = reply else { panic!() };
        assert_eq!(r.wqids.len(), names.len(), "walk of {names:?} was partial");
        (newfid, r.wqids.iter().collect())
    }

    pub fn clunk(&mut self, fs: &mut Fs, fid: Fid) {
        self.ok(fs, Tclunk { fid });
        self.client.free_fid(fid);
    }

    /// Read a whole file (or .u/9P2000 directory data) from an open fid, in `chunk`-byte reads.
    pub fn read_all(&mut self, fs: &mut Fs, fid: Fid, chunk: u32) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let reply = self.ok(
                fs,
                Tread {
                    fid,
                    offset: out.len() as u64,
                    count: chunk,
                },
            );
            let Msg::Rread(r) = reply else { panic!() };
            if r.data.0.is_empty() {
                return out;
            }
            out.extend_from_slice(&r.data.0);
        }
    }

    pub fn write(&mut self, fs: &mut Fs, fid: Fid, offset: u64, data: &[u8]) -> u32 {
        let reply = self.ok(
            fs,
            Twrite {
                fid,
                offset,
                data: Data(Bytes::copy_from_slice(data)),
            },
        );
        let Msg::Rwrite(r) = reply else { panic!() };
        r.count
    }

    /// Open (9P2000/.u Topen or .L Tlopen with the matching flags).
    pub fn open(&mut self, fs: &mut Fs, fid: Fid, mode: u8) -> Qid {
        match self.dialect {
            Dialect::DotL => {
                let mut flags = u32::from(mode & 3);
                if mode & open_mode::TRUNC != 0 {
                    flags |= lflags::TRUNC;
                }
                let Msg::Rlopen(r) = self.ok(fs, Tlopen { fid, flags }) else {
                    panic!()
                };
                r.qid
            }
            _ => {
                let Msg::Ropen(r) = self.ok(fs, Topen { fid, mode }) else {
                    panic!()
                };
                r.qid
            }
        }
    }
}

pub fn error_of(msg: &Msg) -> Option<ReplyError> {
    match msg {
        Msg::Rerror(e) => Some(ReplyError::Message {
            ename: e.ename.clone(),
            errno: e.errno,
        }),
        Msg::Rlerror(e) => Some(ReplyError::Errno(e.ecode)),
        _ => None,
    }
}

/// A 9P2000/.u Tcreate.
pub fn tcreate(fid: Fid, name: &str, perm: u32, mode: u8, dialect: Dialect) -> Tcreate {
    Tcreate {
        fid,
        name: Bytes::copy_from_slice(name.as_bytes()),
        perm,
        mode,
        extension: dialect.is_extended().then(Bytes::new),
    }
}

/// A 9P2000/.u Twstat that changes nothing ("don't touch" in every field).
pub fn blank_stat(dialect: Dialect) -> Stat {
    Stat::unchanged(dialect)
}

/// The names in 9P2000/.u directory data.
pub fn stat_names(data: &[u8], dialect: Dialect) -> Vec<String> {
    dir::stat_records(&Bytes::copy_from_slice(data), dialect)
        .map(|s| String::from_utf8(s.expect("stat record decodes").name.to_vec()).unwrap())
        .collect()
}

/// A frame for `msg`.
pub fn frame(tag: u16, msg: impl Into<Msg>) -> Bytes {
    Fcall::new(tag, msg).to_frame().unwrap()
}
