//! Every message of 9P2000, 9P2000.u and 9P2000.L, described once in [`message_table!`]; the
//! structs, [`MsgType`], [`Msg`], decoding, encoding, sizing and fid extraction all derive from
//! that one table.
//!
//! Sources: the Plan 9 section 5 manual (9P2000), the 9P2000.u draft (extension fields), diod's
//! protocol.md with Linux `include/net/9p/9p.h` (9P2000.L, message numbers).

use bytes::{Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind, EncodeError};
use crate::types::{Qid, Stat, WalkNames, WalkQids};
use crate::wire::{Data, Fid, FidList, Reader, Wire, NOFID};
use crate::Dialect;

/// Which dialects carry a message (a bit per [`Dialect`]).
mod dialects {
    /// In all three: version, auth, attach, flush, walk, read, write, clunk, remove.
    pub const ALL: u8 = 0b111;
    /// 9P2000 and 9P2000.u only: error, open, create, stat, wstat (9P2000.L replaces them).
    pub const CLASSIC: u8 = 0b011;
    /// 9P2000.L only.
    pub const DOTL: u8 = 0b100;
}

/// `size[4] type[1] tag[2]`: the header every frame starts with.
pub const HEADER_LEN: usize = 7;

macro_rules! message_table {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident = $num:literal in $set:ident {
            $($field:ident : $ty:ty $([$role:ident])?),* $(,)?
        }
    )*) => {
        $(
            $(#[doc = $doc])*
            #[derive(Clone, Debug, Default, PartialEq, Eq)]
            pub struct $name { $(pub $field: $ty),* }

            impl From<$name> for Msg {
                fn from(m: $name) -> Msg {
                    Msg::$name(m)
                }
            }
        )*

        /// A message type number, with the dialects it belongs to.
        #[repr(u8)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum MsgType { $($name = $num),* }

        impl MsgType {
            /// Every message type of every dialect.
            pub const ALL: &'static [MsgType] = &[$(MsgType::$name),*];

            pub fn from_u8(n: u8) -> Option<MsgType> {
                match n {
                    $($num => Some(MsgType::$name),)*
                    _ => None,
                }
            }

            /// The message's name as the manuals write it, e.g. `"Twalk"`.
            pub fn name(self) -> &'static str {
                match self { $(MsgType::$name => stringify!($name)),* }
            }

            /// Whether this is an error reply (Rerror, or 9P2000.L's Rlerror).
            pub fn is_error(self) -> bool {
                matches!(self, MsgType::Rerror | MsgType::Rlerror)
            }

            /// Whether `dialect` has this message.
            pub fn in_dialect(self, dialect: Dialect) -> bool {
                match self { $(MsgType::$name => dialects::$set & dialect.bit() != 0),* }
            }

            /// Step over a body of this type, collecting the fids it names.
            fn skip_body(self, r: &mut Reader<'_>, fids: &mut FidList) -> Result<(), DecodeError> {
                match self {
                    $(MsgType::$name => {
                        $(<$ty as Wire>::skip(r, fids)?;)*
                        let _ = (&r, &fids);
                        Ok(())
                    })*
                }
            }

            fn decode_body(self, r: &mut Reader<'_>) -> Result<Msg, DecodeError> {
                match self {
                    $(MsgType::$name => {
                        let _ = &r;
                        Ok(Msg::$name($name { $($field: <$ty as Wire>::decode(r)?),* }))
                    })*
                }
            }

            /// A random message of this type that is valid in `dialect`.
            #[cfg(feature = "arbitrary")]
            pub fn arbitrary_msg(
                self,
                u: &mut arbitrary::Unstructured<'_>,
                dialect: Dialect,
            ) -> arbitrary::Result<Msg> {
                use crate::arbitrary::ArbitraryWire;
                match self {
                    $(MsgType::$name => {
                        let _ = (&u, dialect);
                        Ok(Msg::$name($name {
                            $($field: <$ty as ArbitraryWire>::arbitrary_wire(u, dialect)?),*
                        }))
                    })*
                }
            }
        }

        /// One decoded message body. Strings and payloads are slices of the frame they came from.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum Msg { $($name($name)),* }

        impl Msg {
            pub fn msg_type(&self) -> MsgType {
                match self { $(Msg::$name(_) => MsgType::$name),* }
            }

            fn body_len(&self) -> usize {
                match self { $(Msg::$name(_m) => 0 $(+ _m.$field.encoded_len())*),* }
            }

            fn check(&self) -> Result<(), EncodeError> {
                match self { $(Msg::$name(_m) => { $(_m.$field.check()?;)* Ok(()) })* }
            }

            fn encode_body(&self, _w: &mut BytesMut) {
                match self { $(Msg::$name(_m) => { $(_m.$field.encode(_w);)* })* }
            }

            /// The fids a request names that must already exist, in the order of its fields:
            /// every fid field but the one it creates (marked `[new]` in the table); a field
            /// marked `[optional]` (Tattach's afid) counts only when it is not NOFID.
            pub fn used_fids(&self) -> FidList {
                let mut fids = FidList::default();
                match self {
                    $(Msg::$name(_m) => {
                        $(
                            let role = stringify!($($role)?);
                            if !is_new_fid(role) {
                                if let Some(f) = _m.$field.fid() {
                                    if role != "optional" || f != NOFID.0 {
                                        fids.push(f);
                                    }
                                }
                            }
                        )*
                    })*
                }
                fids
            }

            /// The fid a request creates: Tattach's fid, Tauth's afid, the newfid of Twalk and
            /// Txattrwalk.
            pub fn new_fid(&self) -> Option<u32> {
                match self {
                    $(Msg::$name(_m) => {
                        $(
                            if is_new_fid(stringify!($($role)?)) {
                                return _m.$field.fid();
                            }
                        )*
                        None
                    })*
                }
            }
        }
    };
}

/// Whether a field's role in the table (`[new]`, or none) is a fid the message creates.
fn is_new_fid(role: &str) -> bool {
    role == "new"
}

impl Msg {
    /// The fid a request acts on: the first of its [`used_fids`](Msg::used_fids) (a Tlink's
    /// directory, a Trenameat's old directory, a Tattach's afid when it authenticates).
    pub fn primary_fid(&self) -> Option<u32> {
        self.used_fids().as_slice().first().copied()
    }
}

message_table! {
    /// `Tversion tag[2] msize[4] version[s]`: negotiate the protocol version and message size.
    Tversion = 100 in ALL { msize: u32, version: Bytes }
    /// `Rversion tag[2] msize[4] version[s]`
    Rversion = 101 in ALL { msize: u32, version: Bytes }
    /// `Tauth tag[2] afid[4] uname[s] aname[s]` (.u/.L: `n_uname[4]`)
    Tauth = 102 in ALL { afid: Fid [new], uname: Bytes, aname: Bytes, n_uname: Option<u32> }
    /// `Rauth tag[2] aqid[13]`
    Rauth = 103 in ALL { aqid: Qid }
    /// `Tattach tag[2] fid[4] afid[4] uname[s] aname[s]` (.u/.L: `n_uname[4]`)
    Tattach = 104 in ALL { fid: Fid [new], afid: Fid [optional], uname: Bytes, aname: Bytes, n_uname: Option<u32> }
    /// `Rattach tag[2] qid[13]`
    Rattach = 105 in ALL { qid: Qid }
    /// `Rerror tag[2] ename[s]` (.u: `errno[4]`)
    Rerror = 107 in CLASSIC { ename: Bytes, errno: Option<u32> }
    /// `Tflush tag[2] oldtag[2]`
    Tflush = 108 in ALL { oldtag: u16 }
    /// `Rflush tag[2]`
    Rflush = 109 in ALL {}
    /// `Twalk tag[2] fid[4] newfid[4] nwname[2] nwname*(wname[s])`
    Twalk = 110 in ALL { fid: Fid, newfid: Fid [new], wnames: WalkNames }
    /// `Rwalk tag[2] nwqid[2] nwqid*(wqid[13])`
    Rwalk = 111 in ALL { wqids: WalkQids }
    /// `Topen tag[2] fid[4] mode[1]`
    Topen = 112 in CLASSIC { fid: Fid, mode: u8 }
    /// `Ropen tag[2] qid[13] iounit[4]`
    Ropen = 113 in CLASSIC { qid: Qid, iounit: u32 }
    /// `Tcreate tag[2] fid[4] name[s] perm[4] mode[1]` (.u: `extension[s]`)
    Tcreate = 114 in CLASSIC { fid: Fid, name: Bytes, perm: u32, mode: u8, extension: Option<Bytes> }
    /// `Rcreate tag[2] qid[13] iounit[4]`
    Rcreate = 115 in CLASSIC { qid: Qid, iounit: u32 }
    /// `Tread tag[2] fid[4] offset[8] count[4]`
    Tread = 116 in ALL { fid: Fid, offset: u64, count: u32 }
    /// `Rread tag[2] count[4] data[count]`
    Rread = 117 in ALL { data: Data }
    /// `Twrite tag[2] fid[4] offset[8] count[4] data[count]`
    Twrite = 118 in ALL { fid: Fid, offset: u64, data: Data }
    /// `Rwrite tag[2] count[4]`
    Rwrite = 119 in ALL { count: u32 }
    /// `Tclunk tag[2] fid[4]`
    Tclunk = 120 in ALL { fid: Fid }
    /// `Rclunk tag[2]`
    Rclunk = 121 in ALL {}
    /// `Tremove tag[2] fid[4]`
    Tremove = 122 in ALL { fid: Fid }
    /// `Rremove tag[2]`
    Rremove = 123 in ALL {}
    /// `Tstat tag[2] fid[4]`
    Tstat = 124 in CLASSIC { fid: Fid }
    /// `Rstat tag[2] stat[n]`
    Rstat = 125 in CLASSIC { stat: Stat }
    /// `Twstat tag[2] fid[4] stat[n]`
    Twstat = 126 in CLASSIC { fid: Fid, stat: Stat }
    /// `Rwstat tag[2]`
    Rwstat = 127 in CLASSIC {}

    /// `Rlerror tag[2] ecode[4]`: a Linux errno.
    Rlerror = 7 in DOTL { ecode: u32 }
    /// `Tstatfs tag[2] fid[4]`
    Tstatfs = 8 in DOTL { fid: Fid }
    /// `Rstatfs tag[2] type[4] bsize[4] blocks[8] bfree[8] bavail[8] files[8] ffree[8] fsid[8]
    /// namelen[4]`
    Rstatfs = 9 in DOTL {
        typ: u32, bsize: u32, blocks: u64, bfree: u64, bavail: u64, files: u64, ffree: u64,
        fsid: u64, namelen: u32,
    }
    /// `Tlopen tag[2] fid[4] flags[4]`
    Tlopen = 12 in DOTL { fid: Fid, flags: u32 }
    /// `Rlopen tag[2] qid[13] iounit[4]`
    Rlopen = 13 in DOTL { qid: Qid, iounit: u32 }
    /// `Tlcreate tag[2] fid[4] name[s] flags[4] mode[4] gid[4]`
    Tlcreate = 14 in DOTL { fid: Fid, name: Bytes, flags: u32, mode: u32, gid: u32 }
    /// `Rlcreate tag[2] qid[13] iounit[4]`
    Rlcreate = 15 in DOTL { qid: Qid, iounit: u32 }
    /// `Tsymlink tag[2] fid[4] name[s] symtgt[s] gid[4]`
    Tsymlink = 16 in DOTL { fid: Fid, name: Bytes, symtgt: Bytes, gid: u32 }
    /// `Rsymlink tag[2] qid[13]`
    Rsymlink = 17 in DOTL { qid: Qid }
    /// `Tmknod tag[2] dfid[4] name[s] mode[4] major[4] minor[4] gid[4]`
    Tmknod = 18 in DOTL { dfid: Fid, name: Bytes, mode: u32, major: u32, minor: u32, gid: u32 }
    /// `Rmknod tag[2] qid[13]`
    Rmknod = 19 in DOTL { qid: Qid }
    /// `Trename tag[2] fid[4] dfid[4] name[s]`
    Trename = 20 in DOTL { fid: Fid, dfid: Fid, name: Bytes }
    /// `Rrename tag[2]`
    Rrename = 21 in DOTL {}
    /// `Treadlink tag[2] fid[4]`
    Treadlink = 22 in DOTL { fid: Fid }
    /// `Rreadlink tag[2] target[s]`
    Rreadlink = 23 in DOTL { target: Bytes }
    /// `Tgetattr tag[2] fid[4] request_mask[8]`
    Tgetattr = 24 in DOTL { fid: Fid, request_mask: u64 }
    /// `Rgetattr tag[2] valid[8] qid[13] mode[4] uid[4] gid[4] nlink[8] rdev[8] size[8]
    /// blksize[8] blocks[8] atime_sec[8] atime_nsec[8] mtime_sec[8] mtime_nsec[8] ctime_sec[8]
    /// ctime_nsec[8] btime_sec[8] btime_nsec[8] gen[8] data_version[8]`
    Rgetattr = 25 in DOTL {
        valid: u64, qid: Qid, mode: u32, uid: u32, gid: u32, nlink: u64, rdev: u64, size: u64,
        blksize: u64, blocks: u64, atime_sec: u64, atime_nsec: u64, mtime_sec: u64,
        mtime_nsec: u64, ctime_sec: u64, ctime_nsec: u64, btime_sec: u64, btime_nsec: u64,
        gen: u64, data_version: u64,
    }
    /// `Tsetattr tag[2] fid[4] valid[4] mode[4] uid[4] gid[4] size[8] atime_sec[8]
    /// atime_nsec[8] mtime_sec[8] mtime_nsec[8]`
    Tsetattr = 26 in DOTL {
        fid: Fid, valid: u32, mode: u32, uid: u32, gid: u32, size: u64, atime_sec: u64,
        atime_nsec: u64, mtime_sec: u64, mtime_nsec: u64,
    }
    /// `Rsetattr tag[2]`
    Rsetattr = 27 in DOTL {}
    /// `Txattrwalk tag[2] fid[4] newfid[4] name[s]`
    Txattrwalk = 30 in DOTL { fid: Fid, newfid: Fid [new], name: Bytes }
    /// `Rxattrwalk tag[2] size[8]`
    Rxattrwalk = 31 in DOTL { size: u64 }
    /// `Txattrcreate tag[2] fid[4] name[s] attr_size[8] flags[4]`
    Txattrcreate = 32 in DOTL { fid: Fid, name: Bytes, attr_size: u64, flags: u32 }
    /// `Rxattrcreate tag[2]`
    Rxattrcreate = 33 in DOTL {}
    /// `Treaddir tag[2] fid[4] offset[8] count[4]`
    Treaddir = 40 in DOTL { fid: Fid, offset: u64, count: u32 }
    /// `Rreaddir tag[2] count[4] data[count]`: entries, see [`crate::dir::dirents`].
    Rreaddir = 41 in DOTL { data: Data }
    /// `Tfsync tag[2] fid[4] datasync[4]`. diod's protocol.md shows only `fid[4]`, but the Linux
    /// client and QEMU's server put `datasync[4]` on the wire, so that form is the real one.
    Tfsync = 50 in DOTL { fid: Fid, datasync: u32 }
    /// `Rfsync tag[2]`
    Rfsync = 51 in DOTL {}
    /// `Tlock tag[2] fid[4] type[1] flags[4] start[8] length[8] proc_id[4] client_id[s]`
    Tlock = 52 in DOTL {
        fid: Fid, typ: u8, flags: u32, start: u64, length: u64, proc_id: u32, client_id: Bytes,
    }
    /// `Rlock tag[2] status[1]`
    Rlock = 53 in DOTL { status: u8 }
    /// `Tgetlock tag[2] fid[4] type[1] start[8] length[8] proc_id[4] client_id[s]`
    Tgetlock = 54 in DOTL {
        fid: Fid, typ: u8, start: u64, length: u64, proc_id: u32, client_id: Bytes,
    }
    /// `Rgetlock tag[2] type[1] start[8] length[8] proc_id[4] client_id[s]`
    Rgetlock = 55 in DOTL { typ: u8, start: u64, length: u64, proc_id: u32, client_id: Bytes }
    /// `Tlink tag[2] dfid[4] fid[4] name[s]`
    Tlink = 70 in DOTL { dfid: Fid, fid: Fid, name: Bytes }
    /// `Rlink tag[2]`
    Rlink = 71 in DOTL {}
    /// `Tmkdir tag[2] dfid[4] name[s] mode[4] gid[4]`
    Tmkdir = 72 in DOTL { dfid: Fid, name: Bytes, mode: u32, gid: u32 }
    /// `Rmkdir tag[2] qid[13]`
    Rmkdir = 73 in DOTL { qid: Qid }
    /// `Trenameat tag[2] olddirfid[4] oldname[s] newdirfid[4] newname[s]`
    Trenameat = 74 in DOTL { olddirfid: Fid, oldname: Bytes, newdirfid: Fid, newname: Bytes }
    /// `Rrenameat tag[2]`
    Rrenameat = 75 in DOTL {}
    /// `Tunlinkat tag[2] dirfid[4] name[s] flags[4]`
    Tunlinkat = 76 in DOTL { dirfid: Fid, name: Bytes, flags: u32 }
    /// `Runlinkat tag[2]`
    Runlinkat = 77 in DOTL {}
}

impl MsgType {
    /// T-messages have even numbers, their replies the next odd one.
    pub fn is_request(self) -> bool {
        (self as u8) & 1 == 0
    }

    /// The reply type that answers this request (None for replies).
    pub fn reply(self) -> Option<MsgType> {
        if self.is_request() {
            MsgType::from_u8(self as u8 + 1)
        } else {
            None
        }
    }

    /// The message types of one dialect.
    pub fn of_dialect(dialect: Dialect) -> impl Iterator<Item = MsgType> {
        MsgType::ALL
            .iter()
            .copied()
            .filter(move |t| t.in_dialect(dialect))
    }
}

/// The fixed header of a frame, readable without decoding the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub size: u32,
    pub msg_type: u8,
    pub tag: u16,
}

impl Header {
    /// Parse the header of a complete frame; checks only that the size field matches the
    /// frame's length.
    pub fn parse(frame: &[u8]) -> Result<Header, DecodeError> {
        let err = |kind| DecodeError {
            msg_type: None,
            offset: 0,
            kind,
        };
        let Some(head) = frame.first_chunk::<HEADER_LEN>() else {
            return Err(err(DecodeErrorKind::FrameTooShort { len: frame.len() }));
        };
        let size = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if size as usize != frame.len() {
            return Err(err(DecodeErrorKind::SizeMismatch {
                declared: size,
                actual: frame.len(),
            }));
        }
        Ok(Header {
            size,
            msg_type: head[4],
            tag: u16::from_le_bytes([head[5], head[6]]),
        })
    }

    /// The message type, if it is one of `dialect`.
    pub fn msg_type_in(&self, dialect: Dialect) -> Result<MsgType, DecodeError> {
        match MsgType::from_u8(self.msg_type) {
            Some(t) if t.in_dialect(dialect) => Ok(t),
            _ => Err(DecodeError {
                msg_type: Some(self.msg_type),
                offset: 4,
                kind: DecodeErrorKind::UnknownType { dialect },
            }),
        }
    }
}

/// Overwrite the tag of an encoded frame in place (a proxy renumbering requests). Fails, and
/// changes nothing, if `frame` is shorter than a header.
pub fn set_tag(frame: &mut [u8], tag: u16) -> Result<(), DecodeError> {
    match frame.get_mut(5..HEADER_LEN) {
        Some(field) => {
            field.copy_from_slice(&tag.to_le_bytes());
            Ok(())
        }
        None => Err(DecodeError {
            msg_type: None,
            offset: 0,
            kind: DecodeErrorKind::FrameTooShort { len: frame.len() },
        }),
    }
}

/// The fids a request names (e.g. `fid` and `newfid` of a Twalk), found by stepping over the
/// body without building strings or payloads. Also validates the body's layout.
pub fn request_fids(frame: &Bytes, dialect: Dialect) -> Result<FidList, DecodeError> {
    let header = Header::parse(frame)?;
    let ty = header.msg_type_in(dialect)?;
    let mut r = Reader::new(frame, dialect).at(HEADER_LEN, Some(header.msg_type));
    let mut fids = FidList::default();
    ty.skip_body(&mut r, &mut fids)?;
    r.finish()?;
    Ok(fids)
}

/// A tagged message: what one frame holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fcall {
    pub tag: u16,
    pub msg: Msg,
}

impl Fcall {
    pub fn new(tag: u16, msg: impl Into<Msg>) -> Fcall {
        Fcall {
            tag,
            msg: msg.into(),
        }
    }

    /// Decode a whole frame in `dialect`. Strict: the size field must match, every field must
    /// fit, and no byte may be left over. Strings and payloads share `frame`'s buffer.
    pub fn decode(frame: &Bytes, dialect: Dialect) -> Result<Fcall, DecodeError> {
        let header = Header::parse(frame)?;
        let ty = header.msg_type_in(dialect)?;
        let mut r = Reader::new(frame, dialect).at(HEADER_LEN, Some(header.msg_type));
        let msg = ty.decode_body(&mut r)?;
        r.finish()?;
        Ok(Fcall {
            tag: header.tag,
            msg,
        })
    }

    /// Bytes the encoded frame takes, header included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.msg.body_len()
    }

    /// Append the encoded frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        self.msg.check()?;
        let len = self.encoded_len();
        let size = u32::try_from(len).map_err(|_| EncodeError::FrameTooLarge { len })?;
        buf.reserve(len);
        Wire::encode(&size, buf);
        Wire::encode(&(self.msg.msg_type() as u8), buf);
        Wire::encode(&self.tag, buf);
        self.msg.encode_body(buf);
        Ok(())
    }

    /// The encoded frame as its own buffer.
    pub fn to_frame(&self) -> Result<Bytes, EncodeError> {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf)?;
        Ok(buf.freeze())
    }
}
