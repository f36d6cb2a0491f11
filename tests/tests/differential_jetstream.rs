//! Differential test: p9-core's 9P2000.L decoder against jetstream_9p 16.0.0, an independent
//! 9P2000.L codec (pinned exactly in tests/Cargo.toml, together with jetstream_wireformat
//! 16.3.1 which holds its field decoders).
//!
//! Every input is a whole frame whose `size[4]` matches its length (jetstream trusts the size
//! field, so size handling is not compared). Even type numbers go to jetstream's `Tframe`
//! decoder, odd ones to `Rframe`; a T-frame counts as rejected when either the frame or its
//! `msg` is an error. Then:
//!
//! - both accept: jetstream's value, converted to a p9-core [`Msg`], must equal ours field by
//!   field (tag included), and jetstream must have read the whole frame;
//! - both reject: fine;
//! - one accepts: the difference must be one of the documented ones below, each confirmed by
//!   a precise check; anything else fails the test and prints the frame in hex.
//!
//! Documented differences (jetstream's behaviour read from its source):
//!
//! a. `trailing-bytes`: ours rejects bytes after the last field (`TrailingBytes`); jetstream
//!    stops reading after the last field and ignores the rest. Confirmed by: jetstream left
//!    exactly that many bytes unread, and our decode of the frame cut before them equals
//!    jetstream's value.
//! b. `walk-limit`: ours enforces walk(5)'s limit ("a maximum of sixteen name elements or qids
//!    may be packed in a single message", MAXWELEM) on Twalk and Rwalk
//!    (`TooManyWalkElements`); jetstream reads any u16 count. Confirmed by: jetstream read
//!    exactly that many elements, and re-encoding jetstream's value reproduces the bytes it
//!    read. Ours stops at the count, so it never sees a last name running past the end, which
//!    jetstream reads short as in (d): that combination is counted as `b+d`, confirmed the same
//!    way after lowering that name's length to what is there.
//! c. `non-utf8`: intro(5) calls `string[s]` "s bytes of UTF-8 text" and jetstream's `String`
//!    decoder enforces that; ours deliberately takes strings as bytes (p9-core's wire.rs: "Names
//!    are bytes; no UTF-8 requirement"), since 9P2000.L serves Linux file names, which are
//!    arbitrary bytes. Confirmed by: one of our decoded strings is not UTF-8, jetstream's error
//!    is `InvalidData`, and once those strings' bytes are made ASCII in place both codecs
//!    accept the frame and agree.
//! d. `short-string`: when a string's length runs past the end of the frame ours rejects
//!    (`Truncated`); jetstream's `String` decoder reads through `Read::take` and silently
//!    returns the shorter string (it only fails if a later field is then missing, so this
//!    shows only for a message's last field). Confirmed by: our error sits right after a
//!    `len[2]` holding the declared length, the string runs to the end of the frame, and our
//!    decode of the frame with that length lowered to what is there equals jetstream's value.
//!
//! The three input families are deterministic (a fixed-seed PRNG): valid frames from
//! p9-core's `arbitrary` support (raw, and with every string made ASCII), random bodies under
//! a correct size prefix, and mutations of valid frames.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io;
use std::time::Instant;

use arbitrary::Unstructured;
use bytes::Bytes;
use jetstream_9p as js;
use jetstream_wireformat::WireFormat;
use p9_core as p9;
use p9_core::{DecodeError, DecodeErrorKind, Dialect, Fcall, Fid, Msg, MsgType, HEADER_LEN};

// ---------------------------------------------------------------------------------------------
// A small deterministic PRNG (SplitMix64), so the inputs are the same on every run.

struct Rng(persist_core::rng::Rng);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant here.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------------------------
// Frame helpers.

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// `rest` (everything after `size[4]`) with a correct `size[4]` in front.
fn sized(rest: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(rest.len() + 4);
    v.extend_from_slice(&((rest.len() + 4) as u32).to_le_bytes());
    v.extend_from_slice(rest);
    v
}

/// Rewrite `size[4]` to the frame's actual length.
fn fix_size(frame: &mut [u8]) {
    let len = frame.len() as u32;
    frame[..4].copy_from_slice(&len.to_le_bytes());
}

/// A copy of `prefix` (a frame cut short) with its size field fixed.
fn resized(prefix: &[u8]) -> Bytes {
    let mut v = prefix.to_vec();
    fix_size(&mut v);
    Bytes::from(v)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// In a Twalk frame of `count` names, the offset of the last name's `len[2]` if that name (and
/// only it) runs past the end of the frame.
fn last_wname_overrun(frame: &[u8], count: usize) -> Option<usize> {
    // size[4] type[1] tag[2] fid[4] newfid[4] nwname[2]
    let mut at = HEADER_LEN + 10;
    for k in 0..count {
        if at + 2 > frame.len() {
            return None;
        }
        let end = at + 2 + u16_at(frame, at) as usize;
        if end > frame.len() {
            return (k + 1 == count).then_some(at);
        }
        at = end;
    }
    None
}

/// Every string field of one of our decoded messages, as slices of the frame it came from.
fn strings(msg: &Msg) -> Vec<&[u8]> {
    fn stat(s: &p9::Stat) -> Vec<&[u8]> {
        let mut v: Vec<&[u8]> = vec![&s.name, &s.uid, &s.gid, &s.muid];
        if let Some(ext) = &s.ext {
            v.push(&ext.extension);
        }
        v
    }
    match msg {
        Msg::Tversion(m) => vec![&m.version],
        Msg::Rversion(m) => vec![&m.version],
        Msg::Tauth(m) => vec![&m.uname, &m.aname],
        Msg::Tattach(m) => vec![&m.uname, &m.aname],
        Msg::Rerror(m) => vec![&m.ename],
        Msg::Twalk(m) => m.wnames.iter().collect(),
        Msg::Tcreate(m) => {
            let mut v: Vec<&[u8]> = vec![&m.name];
            if let Some(ext) = &m.extension {
                v.push(ext);
            }
            v
        }
        Msg::Rstat(m) => stat(&m.stat),
        Msg::Twstat(m) => stat(&m.stat),
        Msg::Tlcreate(m) => vec![&m.name],
        Msg::Tsymlink(m) => vec![&m.name, &m.symtgt],
        Msg::Tmknod(m) => vec![&m.name],
        Msg::Trename(m) => vec![&m.name],
        Msg::Rreadlink(m) => vec![&m.target],
        Msg::Txattrwalk(m) => vec![&m.name],
        Msg::Txattrcreate(m) => vec![&m.name],
        Msg::Tlock(m) => vec![&m.client_id],
        Msg::Tgetlock(m) => vec![&m.client_id],
        Msg::Rgetlock(m) => vec![&m.client_id],
        Msg::Tlink(m) => vec![&m.name],
        Msg::Tmkdir(m) => vec![&m.name],
        Msg::Trenameat(m) => vec![&m.oldname, &m.newname],
        Msg::Tunlinkat(m) => vec![&m.name],
        Msg::Rauth(_)
        | Msg::Rattach(_)
        | Msg::Tflush(_)
        | Msg::Rflush(_)
        | Msg::Rwalk(_)
        | Msg::Topen(_)
        | Msg::Ropen(_)
        | Msg::Rcreate(_)
        | Msg::Tread(_)
        | Msg::Rread(_)
        | Msg::Twrite(_)
        | Msg::Rwrite(_)
        | Msg::Tclunk(_)
        | Msg::Rclunk(_)
        | Msg::Tremove(_)
        | Msg::Rremove(_)
        | Msg::Tstat(_)
        | Msg::Rwstat(_)
        | Msg::Rlerror(_)
        | Msg::Tstatfs(_)
        | Msg::Rstatfs(_)
        | Msg::Tlopen(_)
        | Msg::Rlopen(_)
        | Msg::Rlcreate(_)
        | Msg::Rsymlink(_)
        | Msg::Rmknod(_)
        | Msg::Rrename(_)
        | Msg::Treadlink(_)
        | Msg::Tgetattr(_)
        | Msg::Rgetattr(_)
        | Msg::Tsetattr(_)
        | Msg::Rsetattr(_)
        | Msg::Rxattrwalk(_)
        | Msg::Rxattrcreate(_)
        | Msg::Treaddir(_)
        | Msg::Rreaddir(_)
        | Msg::Tfsync(_)
        | Msg::Rfsync(_)
        | Msg::Rlock(_)
        | Msg::Rlink(_)
        | Msg::Rmkdir(_)
        | Msg::Rrenameat(_)
        | Msg::Runlinkat(_) => vec![],
    }
}

/// Where each non-empty string of `msg` (decoded from `frame`, so its strings are slices of
/// it) lies in the frame, as `start..end` byte offsets; only those failing `keep`.
fn string_spans(
    frame: &Bytes,
    msg: &Msg,
    keep: impl Fn(&[u8]) -> bool,
) -> Vec<std::ops::Range<usize>> {
    let base = frame.as_ptr() as usize;
    strings(msg)
        .into_iter()
        .filter(|s| !s.is_empty() && keep(s))
        .map(|s| {
            let start = (s.as_ptr() as usize)
                .checked_sub(base)
                .filter(|&at| at + s.len() <= frame.len())
                .expect("decoded strings are slices of the frame");
            start..start + s.len()
        })
        .collect()
}

/// `frame` (which our codec accepts) with the bytes of every string made ASCII in place, so
/// that a UTF-8-only decoder can accept it.
fn asciify(frame: &Bytes) -> Bytes {
    let fcall = Fcall::decode(frame, Dialect::DotL).expect("asciify takes valid frames");
    let mut v = frame.to_vec();
    for span in string_spans(frame, &fcall.msg, |_| true) {
        for b in &mut v[span] {
            *b &= 0x7f;
        }
    }
    Bytes::from(v)
}

// ---------------------------------------------------------------------------------------------
// jetstream's view of a frame, converted to our types.

fn qid(q: &js::Qid) -> p9::Qid {
    p9::Qid {
        typ: q.ty,
        version: q.version,
        path: q.path,
    }
}

fn string(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn data(d: &jetstream_wireformat::Data) -> p9::Data {
    p9::Data(Bytes::copy_from_slice(&d.0))
}

/// A jetstream request as our [`Msg`]. Fails only where our types cannot hold the value (a
/// walk of more than 16 names).
fn from_tmessage(m: &js::Tmessage) -> Result<Msg, String> {
    use js::Tmessage as T;
    Ok(match m {
        T::Version(m) => p9::Tversion {
            msize: m.msize,
            version: string(&m.version),
        }
        .into(),
        T::Flush(m) => p9::Tflush { oldtag: m.oldtag }.into(),
        T::Walk(m) => p9::Twalk {
            fid: Fid(m.fid),
            newfid: Fid(m.newfid),
            wnames: p9::WalkNames::new(m.wnames.iter().map(String::as_bytes))
                .map_err(|e| format!("jetstream Twalk does not fit ours: {e}"))?,
        }
        .into(),
        T::Read(m) => p9::Tread {
            fid: Fid(m.fid),
            offset: m.offset,
            count: m.count,
        }
        .into(),
        T::Write(m) => p9::Twrite {
            fid: Fid(m.fid),
            offset: m.offset,
            data: data(&m.data),
        }
        .into(),
        T::Clunk(m) => p9::Tclunk { fid: Fid(m.fid) }.into(),
        T::Remove(m) => p9::Tremove { fid: Fid(m.fid) }.into(),
        T::Attach(m) => p9::Tattach {
            fid: Fid(m.fid),
            afid: Fid(m.afid),
            uname: string(&m.uname),
            aname: string(&m.aname),
            n_uname: Some(m.n_uname),
        }
        .into(),
        T::Auth(m) => p9::Tauth {
            afid: Fid(m.afid),
            uname: string(&m.uname),
            aname: string(&m.aname),
            n_uname: Some(m.n_uname),
        }
        .into(),
        T::Statfs(m) => p9::Tstatfs { fid: Fid(m.fid) }.into(),
        T::Lopen(m) => p9::Tlopen {
            fid: Fid(m.fid),
            flags: m.flags,
        }
        .into(),
        T::Lcreate(m) => p9::Tlcreate {
            fid: Fid(m.fid),
            name: string(&m.name),
            flags: m.flags,
            mode: m.mode,
            gid: m.gid,
        }
        .into(),
        T::Symlink(m) => p9::Tsymlink {
            fid: Fid(m.fid),
            name: string(&m.name),
            symtgt: string(&m.symtgt),
            gid: m.gid,
        }
        .into(),
        T::Mknod(m) => p9::Tmknod {
            dfid: Fid(m.dfid),
            name: string(&m.name),
            mode: m.mode,
            major: m.major,
            minor: m.minor,
            gid: m.gid,
        }
        .into(),
        T::Rename(m) => p9::Trename {
            fid: Fid(m.fid),
            dfid: Fid(m.dfid),
            name: string(&m.name),
        }
        .into(),
        T::Readlink(m) => p9::Treadlink { fid: Fid(m.fid) }.into(),
        T::GetAttr(m) => p9::Tgetattr {
            fid: Fid(m.fid),
            request_mask: m.request_mask,
        }
        .into(),
        T::SetAttr(m) => p9::Tsetattr {
            fid: Fid(m.fid),
            valid: m.valid,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            size: m.size,
            atime_sec: m.atime_sec,
            atime_nsec: m.atime_nsec,
            mtime_sec: m.mtime_sec,
            mtime_nsec: m.mtime_nsec,
        }
        .into(),
        T::XattrWalk(m) => p9::Txattrwalk {
            fid: Fid(m.fid),
            newfid: Fid(m.newfid),
            name: string(&m.name),
        }
        .into(),
        T::XattrCreate(m) => p9::Txattrcreate {
            fid: Fid(m.fid),
            name: string(&m.name),
            attr_size: m.attr_size,
            flags: m.flags,
        }
        .into(),
        T::Readdir(m) => p9::Treaddir {
            fid: Fid(m.fid),
            offset: m.offset,
            count: m.count,
        }
        .into(),
        T::Fsync(m) => p9::Tfsync {
            fid: Fid(m.fid),
            datasync: m.datasync,
        }
        .into(),
        T::Lock(m) => p9::Tlock {
            fid: Fid(m.fid),
            typ: m.type_,
            flags: m.flags,
            start: m.start,
            length: m.length,
            proc_id: m.proc_id,
            client_id: string(&m.client_id),
        }
        .into(),
        T::GetLock(m) => p9::Tgetlock {
            fid: Fid(m.fid),
            typ: m.type_,
            start: m.start,
            length: m.length,
            proc_id: m.proc_id,
            client_id: string(&m.client_id),
        }
        .into(),
        T::Link(m) => p9::Tlink {
            dfid: Fid(m.dfid),
            fid: Fid(m.fid),
            name: string(&m.name),
        }
        .into(),
        T::Mkdir(m) => p9::Tmkdir {
            dfid: Fid(m.dfid),
            name: string(&m.name),
            mode: m.mode,
            gid: m.gid,
        }
        .into(),
        T::RenameAt(m) => p9::Trenameat {
            olddirfid: Fid(m.olddirfid),
            oldname: string(&m.oldname),
            newdirfid: Fid(m.newdirfid),
            newname: string(&m.newname),
        }
        .into(),
        T::UnlinkAt(m) => p9::Tunlinkat {
            dirfid: Fid(m.dirfd),
            name: string(&m.name),
            flags: m.flags,
        }
        .into(),
    })
}

/// A jetstream reply as our [`Msg`]. Fails only for an Rwalk of more than 16 qids.
fn from_rmessage(m: &js::Rmessage) -> Result<Msg, String> {
    use js::Rmessage as R;
    Ok(match m {
        R::Version(m) => p9::Rversion {
            msize: m.msize,
            version: string(&m.version),
        }
        .into(),
        R::Flush => p9::Rflush {}.into(),
        R::Walk(m) => p9::Rwalk {
            wqids: p9::WalkQids::new(&m.wqids.iter().map(qid).collect::<Vec<_>>())
                .map_err(|e| format!("jetstream Rwalk does not fit ours: {e}"))?,
        }
        .into(),
        R::Read(m) => p9::Rread {
            data: data(&m.data),
        }
        .into(),
        R::Write(m) => p9::Rwrite { count: m.count }.into(),
        R::Clunk => p9::Rclunk {}.into(),
        R::Remove => p9::Rremove {}.into(),
        R::Attach(m) => p9::Rattach { qid: qid(&m.qid) }.into(),
        R::Auth(m) => p9::Rauth { aqid: qid(&m.aqid) }.into(),
        R::Statfs(m) => p9::Rstatfs {
            typ: m.ty,
            bsize: m.bsize,
            blocks: m.blocks,
            bfree: m.bfree,
            bavail: m.bavail,
            files: m.files,
            ffree: m.ffree,
            fsid: m.fsid,
            namelen: m.namelen,
        }
        .into(),
        R::Lopen(m) => p9::Rlopen {
            qid: qid(&m.qid),
            iounit: m.iounit,
        }
        .into(),
        R::Lcreate(m) => p9::Rlcreate {
            qid: qid(&m.qid),
            iounit: m.iounit,
        }
        .into(),
        R::Symlink(m) => p9::Rsymlink { qid: qid(&m.qid) }.into(),
        R::Mknod(m) => p9::Rmknod { qid: qid(&m.qid) }.into(),
        R::Rename => p9::Rrename {}.into(),
        R::Readlink(m) => p9::Rreadlink {
            target: string(&m.target),
        }
        .into(),
        R::GetAttr(m) => p9::Rgetattr {
            valid: m.valid,
            qid: qid(&m.qid),
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            nlink: m.nlink,
            rdev: m.rdev,
            size: m.size,
            blksize: m.blksize,
            blocks: m.blocks,
            atime_sec: m.atime_sec,
            atime_nsec: m.atime_nsec,
            mtime_sec: m.mtime_sec,
            mtime_nsec: m.mtime_nsec,
            ctime_sec: m.ctime_sec,
            ctime_nsec: m.ctime_nsec,
            btime_sec: m.btime_sec,
            btime_nsec: m.btime_nsec,
            gen: m.gen,
            data_version: m.data_version,
        }
        .into(),
        R::SetAttr => p9::Rsetattr {}.into(),
        R::XattrWalk(m) => p9::Rxattrwalk { size: m.size }.into(),
        R::XattrCreate => p9::Rxattrcreate {}.into(),
        R::Readdir(m) => p9::Rreaddir {
            data: data(&m.data),
        }
        .into(),
        R::Fsync => p9::Rfsync {}.into(),
        R::Lock(m) => p9::Rlock { status: m.status }.into(),
        R::GetLock(m) => p9::Rgetlock {
            typ: m.type_,
            start: m.start,
            length: m.length,
            proc_id: m.proc_id,
            client_id: string(&m.client_id),
        }
        .into(),
        R::Link => p9::Rlink {}.into(),
        R::Mkdir(m) => p9::Rmkdir { qid: qid(&m.qid) }.into(),
        R::RenameAt => p9::Rrenameat {}.into(),
        R::UnlinkAt => p9::Runlinkat {}.into(),
        R::Lerror(m) => p9::Rlerror { ecode: m.ecode }.into(),
    })
}

/// What jetstream made of a frame it accepted.
struct Jet {
    /// Its value as ours (tag included), or why that is impossible.
    fcall: Result<Fcall, String>,
    /// Number of elements, for a Twalk or Rwalk.
    walk_len: Option<usize>,
    /// Its value re-encoded by jetstream itself.
    reencoded: Vec<u8>,
    /// Bytes of the frame it did not read.
    unread: usize,
}

/// Decode with jetstream: `Tframe` for even type numbers, `Rframe` for odd ones.
fn jet_decode(frame: &[u8]) -> io::Result<Jet> {
    // jetstream trusts size[4] (and an Rframe of size < 4 underflows): only give it sane ones.
    assert!(frame.len() >= HEADER_LEN);
    assert_eq!(
        u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize,
        frame.len()
    );
    let mut rest = frame;
    let mut reencoded = Vec::new();
    let (tag, msg, walk_len) = if frame[4] & 1 == 0 {
        let t = <js::Tframe as WireFormat>::decode(&mut rest)?;
        let tframe = js::Tframe {
            tag: t.tag,
            msg: Ok(t.msg?),
        };
        tframe
            .encode(&mut reencoded)
            .expect("jetstream re-encodes what it decoded");
        let m = tframe.msg.as_ref().expect("checked above");
        let walk_len = match m {
            js::Tmessage::Walk(w) => Some(w.wnames.len()),
            _ => None,
        };
        (tframe.tag, from_tmessage(m), walk_len)
    } else {
        let r = <js::Rframe as WireFormat>::decode(&mut rest)?;
        r.encode(&mut reencoded)
            .expect("jetstream re-encodes what it decoded");
        let walk_len = match &r.msg {
            js::Rmessage::Walk(w) => Some(w.wqids.len()),
            _ => None,
        };
        (r.tag, from_rmessage(&r.msg), walk_len)
    };
    Ok(Jet {
        fcall: msg.map(|msg| Fcall { tag, msg }),
        walk_len,
        reencoded,
        unread: rest.len(),
    })
}

// ---------------------------------------------------------------------------------------------
// The comparison.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    BothAccept,
    BothReject,
    /// (a) see the module comment.
    TrailingBytes,
    /// (b)
    WalkLimit,
    /// (b) and (d) together: past the walk limit, and the last name is short.
    WalkLimitShortString,
    /// (c)
    NonUtf8,
    /// (d)
    ShortString,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::BothAccept => "both accept, equal",
            Class::BothReject => "both reject",
            Class::TrailingBytes => "(a) trailing-bytes",
            Class::WalkLimit => "(b) walk-limit",
            Class::WalkLimitShortString => "(b+d) walk-limit+short",
            Class::NonUtf8 => "(c) non-utf8",
            Class::ShortString => "(d) short-string",
        }
    }
}

/// Decode `frame` with both codecs and classify the result; an unexplained disagreement is an
/// `Err` describing it.
fn classify(frame: &Bytes) -> Result<Class, String> {
    let ours = Fcall::decode(frame, Dialect::DotL);
    let theirs = jet_decode(frame);
    match (ours, theirs) {
        (Ok(o), Ok(j)) => {
            let conv = j
                .fcall
                .map_err(|e| format!("both accept, but {e}; ours: {o:?}"))?;
            if conv != o {
                return Err(format!(
                    "both accept but differ\n   ours:      {o:?}\n   jetstream: {conv:?}"
                ));
            }
            if j.unread != 0 {
                return Err(format!(
                    "both accept and agree, but jetstream left {} bytes unread",
                    j.unread
                ));
            }
            Ok(Class::BothAccept)
        }
        (Err(_), Err(_)) => Ok(Class::BothReject),
        (Ok(o), Err(e)) => explain_jetstream_rejects(frame, &o, &e),
        (Err(oe), Ok(j)) => explain_ours_rejects(frame, &oe, j),
    }
}

/// Ours accepted, jetstream rejected: only (c) explains that.
fn explain_jetstream_rejects(frame: &Bytes, ours: &Fcall, e: &io::Error) -> Result<Class, String> {
    let unexplained = |why: &str| {
        format!(
            "ours accepts {ours:?}, jetstream rejects ({:?}: {e}); {why}",
            e.kind()
        )
    };
    let bad = string_spans(frame, &ours.msg, |s| std::str::from_utf8(s).is_err());
    if bad.is_empty() {
        return Err(unexplained("all our strings are UTF-8"));
    }
    if e.kind() != io::ErrorKind::InvalidData {
        return Err(unexplained("a UTF-8 failure would be InvalidData"));
    }
    let mut fixed = frame.to_vec();
    for span in bad {
        for b in &mut fixed[span] {
            *b &= 0x7f;
        }
    }
    match classify(&Bytes::from(fixed)) {
        Ok(Class::BothAccept) => Ok(Class::NonUtf8),
        other => Err(unexplained(&format!(
            "with those strings made ASCII the codecs still do not agree: {other:?}"
        ))),
    }
}

/// Ours rejected, jetstream accepted: (a), (b) or (d), told apart by our error.
fn explain_ours_rejects(frame: &Bytes, oe: &DecodeError, j: Jet) -> Result<Class, String> {
    let jet_view = match &j.fcall {
        Ok(f) => format!("{f:?}"),
        Err(e) => e.clone(),
    };
    let unexplained =
        |why: &str| format!("ours rejects ({oe}; {oe:?}), jetstream accepts {jet_view}; {why}");
    let len = frame.len();
    match oe.kind {
        DecodeErrorKind::TrailingBytes { extra } => {
            if j.unread != extra {
                return Err(unexplained(&format!("jetstream left {} unread", j.unread)));
            }
            let cut = resized(&frame[..len - extra]);
            let ours_cut = Fcall::decode(&cut, Dialect::DotL)
                .map_err(|e| unexplained(&format!("without the extra bytes ours says {e}")))?;
            match j.fcall {
                Ok(conv) if conv == ours_cut => Ok(Class::TrailingBytes),
                _ => Err(unexplained(&format!(
                    "without the extra bytes ours decodes {ours_cut:?}"
                ))),
            }
        }
        DecodeErrorKind::TooManyWalkElements { count } => {
            let count = count as usize;
            if count <= p9::MAXWELEM || j.walk_len != Some(count) {
                return Err(unexplained(&format!(
                    "jetstream read {:?} elements",
                    j.walk_len
                )));
            }
            // jetstream's value must be a faithful reading of exactly the bytes it consumed
            // (any unread trailing bytes are (a)), except that ours stopped at the count and
            // so never saw a last name running past the end, which jetstream reads short (d).
            let mut expect = frame[..len - j.unread].to_vec();
            let mut class = Class::WalkLimit;
            if frame[4] == MsgType::Twalk as u8 && j.unread == 0 {
                if let Some(at) = last_wname_overrun(frame, count) {
                    let available = (len - at - 2) as u16;
                    expect[at..at + 2].copy_from_slice(&available.to_le_bytes());
                    class = Class::WalkLimitShortString;
                }
            }
            fix_size(&mut expect);
            if j.reencoded != expect {
                return Err(unexplained(&format!(
                    "jetstream re-encodes it as {}",
                    hex(&j.reencoded)
                )));
            }
            Ok(class)
        }
        DecodeErrorKind::Truncated { needed, available } => {
            let at = oe.offset;
            if at < HEADER_LEN + 2
                || available >= needed
                || at + available != len
                || u16_at(frame, at - 2) as usize != needed
                || j.unread != 0
            {
                return Err(unexplained("not a string running past the end"));
            }
            let mut patched = frame.to_vec();
            patched[at - 2..at].copy_from_slice(&(available as u16).to_le_bytes());
            let ours_patched =
                Fcall::decode(&Bytes::from(patched), Dialect::DotL).map_err(|e| {
                    unexplained(&format!("with the string length lowered ours says {e}"))
                })?;
            match j.fcall {
                Ok(conv) if conv == ours_patched => Ok(Class::ShortString),
                _ => Err(unexplained(&format!(
                    "with the string length lowered ours decodes {ours_patched:?}"
                ))),
            }
        }
        _ => Err(unexplained("no documented difference covers this")),
    }
}

/// Tallies of one family, and its unexplained disagreements.
struct Report {
    family: &'static str,
    counts: BTreeMap<Class, usize>,
    failures: Vec<String>,
    frames: usize,
    /// Type numbers of the frames both codecs accepted.
    accepted_types: BTreeSet<u8>,
}

impl Report {
    fn new(family: &'static str) -> Self {
        Report {
            family,
            counts: BTreeMap::new(),
            failures: Vec::new(),
            frames: 0,
            accepted_types: BTreeSet::new(),
        }
    }

    fn check(&mut self, frame: &Bytes) -> Option<Class> {
        self.frames += 1;
        match classify(frame) {
            Ok(class) => {
                *self.counts.entry(class).or_default() += 1;
                if class == Class::BothAccept {
                    self.accepted_types.insert(frame[4]);
                }
                Some(class)
            }
            Err(why) => {
                self.fail(frame, &why);
                None
            }
        }
    }

    fn fail(&mut self, frame: &[u8], why: &str) {
        self.failures.push(format!("frame {}\n  {why}", hex(frame)));
    }

    fn count(&self, class: Class) -> usize {
        self.counts.get(&class).copied().unwrap_or(0)
    }

    /// Print the counts, then fail on any unexplained disagreement, on too few both-accepts,
    /// or on fewer than `min_types` message types among them.
    fn finish(self, started: Instant, min_both_accept: usize, min_types: usize) {
        println!(
            "differential_jetstream [{}]: {} frames in {:.2?}",
            self.family,
            self.frames,
            started.elapsed()
        );
        for class in [
            Class::BothAccept,
            Class::BothReject,
            Class::TrailingBytes,
            Class::WalkLimit,
            Class::WalkLimitShortString,
            Class::NonUtf8,
            Class::ShortString,
        ] {
            println!("    {:<22} {:>6}", class.name(), self.count(class));
        }
        println!(
            "    message types accepted by both: {} of {}",
            self.accepted_types.len(),
            dotl_types().len()
        );
        if !self.failures.is_empty() {
            let shown = self.failures.iter().take(20).cloned().collect::<Vec<_>>();
            panic!(
                "[{}] {} unexplained disagreements (or broken expectations) between p9-core and jetstream, first {}:\n{}",
                self.family,
                self.failures.len(),
                shown.len(),
                shown.join("\n")
            );
        }
        assert!(
            self.count(Class::BothAccept) >= min_both_accept,
            "[{}] only {} frames accepted by both codecs (want {min_both_accept}): the \
             comparison would be near vacuous",
            self.family,
            self.count(Class::BothAccept)
        );
        assert!(
            self.accepted_types.len() >= min_types,
            "[{}] both codecs accepted frames of only {} message types (want {min_types})",
            self.family,
            self.accepted_types.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Input families.

/// A number from the environment, for longer or different exploratory runs.
fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// How many times more frames to try than the default, from `DIFF_JETSTREAM_SCALE`.
fn scale() -> usize {
    env_number("DIFF_JETSTREAM_SCALE")
        .filter(|&n| n > 0)
        .unwrap_or(1) as usize
}

/// The PRNG of one family: a fixed seed, varied by `DIFF_JETSTREAM_SEED` if set.
fn rng_for(family: u64) -> Rng {
    Rng(persist_core::rng::Rng::new(
        (0x9e57_0000 + family) ^ (env_number("DIFF_JETSTREAM_SEED").unwrap_or(0) << 8),
    ))
}

/// The message types of 9P2000.L, as p9-core lists them.
fn dotl_types() -> Vec<MsgType> {
    MsgType::of_dialect(Dialect::DotL).collect()
}

/// A random valid 9P2000.L message from p9-core's `arbitrary` support: every other one from
/// `arbitrary_fcall`, the rest cycling through every type so each is covered.
fn valid_fcall(rng: &mut Rng, i: usize, types: &[MsgType]) -> Fcall {
    let seed = rng.bytes(4096);
    let mut u = Unstructured::new(&seed);
    let fcall = if i & 1 == 0 {
        p9::arbitrary::arbitrary_fcall(&mut u, Dialect::DotL)
    } else {
        let ty = types[(i / 2) % types.len()];
        u.arbitrary::<u16>().and_then(|tag| {
            Ok(Fcall {
                tag,
                msg: ty.arbitrary_msg(&mut u, Dialect::DotL)?,
            })
        })
    };
    fcall.expect("4096 bytes are plenty for one message")
}

fn valid_frame(rng: &mut Rng, i: usize, types: &[MsgType]) -> Bytes {
    valid_fcall(rng, i, types)
        .to_frame()
        .expect("arbitrary messages encode")
}

#[test]
fn valid_frames_agree() {
    let started = Instant::now();
    let mut report = Report::new("valid");
    let mut rng = rng_for(1);
    let types = dotl_types();
    for i in 0..4000 * scale() {
        let fcall = valid_fcall(&mut rng, i, &types);
        let frame = fcall.to_frame().expect("arbitrary messages encode");
        match Fcall::decode(&frame, Dialect::DotL) {
            Ok(back) if back == fcall => {}
            other => report.fail(&frame, &format!("ours does not round-trip: {other:?}")),
        }
        // Raw strings are any bytes: either both accept, or jetstream refuses non-UTF-8.
        match report.check(&frame) {
            Some(Class::BothAccept | Class::NonUtf8) | None => {}
            Some(other) => report.fail(&frame, &format!("valid frame classified {other:?}")),
        }
        // With every string ASCII, jetstream must accept and agree.
        let ascii = asciify(&frame);
        match report.check(&ascii) {
            Some(Class::BothAccept) | None => {}
            Some(other) => report.fail(&ascii, &format!("ASCII frame classified {other:?}")),
        }
    }
    report.finish(started, 4000, types.len());
}

/// Type numbers worth aiming at: every 9P2000.L message (Linux `include/net/9p/9p.h`), the
/// classic messages .L dropped (Rerror, open, create, stat, wstat) and the unused Tlerror.
fn interesting_types() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend(6..=9);
    v.extend(12..=27);
    v.extend(30..=33);
    v.extend([40, 41]);
    v.extend(50..=55);
    v.extend(70..=77);
    v.extend(100..=127);
    v
}

/// Random fields: bytes, small or random integers, qids, short strings, data payloads.
fn token_soup(rng: &mut Rng) -> Vec<u8> {
    let mut body = Vec::new();
    for _ in 0..rng.below(9) {
        match rng.below(8) {
            0 => body.push(rng.byte()),
            1 => {
                let v = if rng.percent(50) {
                    rng.below(20) as u16
                } else {
                    rng.next_u64() as u16
                };
                body.extend_from_slice(&v.to_le_bytes());
            }
            2 => {
                let v = if rng.percent(30) {
                    rng.below(20) as u32
                } else {
                    rng.next_u64() as u32
                };
                body.extend_from_slice(&v.to_le_bytes());
            }
            3 => body.extend_from_slice(&rng.next_u64().to_le_bytes()),
            4 => body.extend(rng.bytes(13)),
            5 | 6 => {
                let n = rng.below(8);
                body.extend_from_slice(&(n as u16).to_le_bytes());
                let ascii = rng.percent(80);
                for _ in 0..n {
                    let b = rng.byte();
                    body.push(if ascii { b & 0x7f } else { b });
                }
            }
            _ => {
                let n = rng.below(12);
                body.extend_from_slice(&(n as u32).to_le_bytes());
                body.extend(rng.bytes(n));
            }
        }
    }
    body
}

#[test]
fn random_frames_agree() {
    let started = Instant::now();
    let mut report = Report::new("random");
    let mut rng = rng_for(2);
    let types = interesting_types();
    for _ in 0..60000 * scale() {
        let ty = if rng.percent(85) {
            rng.pick(&types)
        } else {
            rng.byte()
        };
        let mut rest = vec![ty, rng.byte(), rng.byte()];
        if rng.percent(30) {
            let n = rng.below(48);
            rest.extend(rng.bytes(n));
        } else {
            rest.extend(token_soup(&mut rng));
        }
        report.check(&Bytes::from(sized(&rest)));
    }
    report.finish(started, 1000, 40);
}

/// Apply one random mutation, keeping at least the 7 header bytes. The size field is fixed
/// afterwards by the caller, so positions start at 4.
fn mutate(rng: &mut Rng, v: &mut Vec<u8>) {
    const INTERESTING: [u8; 9] = [0x00, 0x01, 0x02, 0x10, 0x11, 0x7f, 0x80, 0xfe, 0xff];
    let len = v.len();
    match rng.below(9) {
        0 => {
            let at = 4 + rng.below(len - 4);
            v[at] ^= 1 << rng.below(8);
        }
        1 => {
            let at = 4 + rng.below(len - 4);
            v[at] = rng.byte();
        }
        2 => {
            let at = 4 + rng.below(len - 4);
            v[at] = rng.pick(&INTERESTING);
        }
        3 if len > HEADER_LEN => v.truncate(HEADER_LEN + rng.below(len - HEADER_LEN)),
        4 => {
            let n = 1 + rng.below(8);
            v.extend(rng.bytes(n));
        }
        5 => {
            let at = HEADER_LEN + rng.below(len - HEADER_LEN + 1);
            let n = 1 + rng.below(4);
            let ins = rng.bytes(n);
            v.splice(at..at, ins);
        }
        6 if len > HEADER_LEN => {
            let at = HEADER_LEN + rng.below(len - HEADER_LEN);
            let n = (1 + rng.below(4)).min(len - at);
            v.drain(at..at + n);
        }
        7 if len >= HEADER_LEN + 2 => {
            // Nudge a u16 (often a string length or count) by a little.
            let at = HEADER_LEN + rng.below(len - HEADER_LEN - 1);
            let delta = rng.pick(&[-3i32, -2, -1, 1, 2, 3]);
            let x = (u16_at(v, at) as i32 + delta) as u16;
            v[at..at + 2].copy_from_slice(&x.to_le_bytes());
        }
        8 => grow_walk(rng, v),
        _ => v.push(rng.byte()),
    }
}

/// For a Twalk or Rwalk, append elements and raise the count to match, often past 16.
fn grow_walk(rng: &mut Rng, v: &mut Vec<u8>) {
    let ty = v[4];
    let count_at = match ty {
        110 => HEADER_LEN + 8,
        111 => HEADER_LEN,
        _ => return v.push(rng.byte()),
    };
    if v.len() < count_at + 2 {
        return;
    }
    let old = u16_at(v, count_at) as usize;
    let add = 1 + rng.below(6);
    for _ in 0..add {
        if ty == 110 {
            let n = rng.below(6);
            v.extend_from_slice(&(n as u16).to_le_bytes());
            v.extend(rng.bytes(n).into_iter().map(|b| b & 0x7f));
        } else {
            v.extend(rng.bytes(p9::Qid::LEN));
        }
    }
    let new = (old + add) as u16;
    v[count_at..count_at + 2].copy_from_slice(&new.to_le_bytes());
}

#[test]
fn mutated_frames_agree() {
    let started = Instant::now();
    let mut report = Report::new("mutated");
    let mut rng = rng_for(3);
    let types = dotl_types();
    for i in 0..8000 * scale() {
        let frame = valid_frame(&mut rng, i, &types);
        // Mostly mutate ASCII-string frames, which jetstream can accept.
        let base = if rng.percent(80) {
            asciify(&frame)
        } else {
            frame
        };
        for _ in 0..4 {
            let mut v = base.to_vec();
            for _ in 0..1 + rng.below(3) {
                mutate(&mut rng, &mut v);
            }
            fix_size(&mut v);
            report.check(&Bytes::from(v));
        }
    }
    report.finish(started, 5000, types.len());
}
