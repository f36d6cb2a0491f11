//! A small sans-IO 9P client: version negotiation, tag and fid allocation, and replies matched to
//! the requests they answer. It does no I/O: the caller sends what
//! [`poll_transmit`](Client::poll_transmit) gives and feeds back each frame received with
//! [`handle_frame`](Client::handle_frame).
//!
//! ```
//! use p9_core::client::Client;
//! use p9_core::{Dialect, Fcall, Rversion, Tclunk, Rclunk, Fid, Msg};
//! use bytes::Bytes;
//!
//! let mut c = Client::new(8192, Dialect::DotL);
//! let tversion = c.poll_transmit().unwrap();
//! // ...the server answers:
//! let rversion = Fcall::new(!0, Rversion { msize: 4096, version: Bytes::from("9P2000.L") });
//! c.handle_frame(&rversion.to_frame().unwrap()).unwrap();
//! assert_eq!(c.msize(), 4096);
//! let tag = c.send(Tclunk { fid: Fid(1) }).unwrap();
//! # let _ = (tversion, c.poll_transmit());
//! let reply = c.handle_frame(&Fcall::new(tag, Rclunk {}).to_frame().unwrap()).unwrap();
//! assert!(matches!(reply.msg, Msg::Rclunk(_)));
//! ```

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::fmt;

use bytes::Bytes;

use crate::error::{DecodeError, EncodeError};
use crate::message::{Fcall, Header, Msg, MsgType, Tflush, Tversion};
use crate::types::NOTAG;
use crate::wire::Fid;
use crate::Dialect;

/// What went wrong on the client side of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The server sent a frame that does not decode.
    Decode(DecodeError),
    /// A reply whose tag matches no request in flight.
    UnknownTag(u16),
    /// A reply of the wrong type for its request (neither the matching R-message nor an error).
    WrongReplyType { request: MsgType, reply: MsgType },
    /// The server answered Tversion with a version this client does not speak.
    VersionRejected(Bytes),
    /// A request other than Tversion before the version was settled.
    NotReady,
    /// All 65535 tags are in flight.
    TagsExhausted,
    /// The message cannot be encoded.
    Encode(EncodeError),
    /// The encoded request is larger than the negotiated msize.
    TooLarge { len: usize, msize: u32 },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Decode(e) => write!(f, "undecodable reply: {e}"),
            ClientError::UnknownTag(t) => write!(f, "reply with tag {t}, which no request uses"),
            ClientError::WrongReplyType { request, reply } => {
                write!(f, "{} answered with {}", request.name(), reply.name())
            }
            ClientError::VersionRejected(v) => write!(f, "server offered version {v:?}"),
            ClientError::NotReady => f.write_str("request sent before version negotiation"),
            ClientError::TagsExhausted => f.write_str("all tags are in use"),
            ClientError::Encode(e) => write!(f, "cannot encode request: {e}"),
            ClientError::TooLarge { len, msize } => {
                write!(f, "request of {len} bytes exceeds msize {msize}")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ClientError {}

/// A reply matched to its request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub tag: u16,
    /// The type of the request this answers.
    pub request: MsgType,
    pub msg: Msg,
    /// For an Rflush: the tag of the flushed request if it was still unanswered (it never will
    /// be now, and its tag is free again).
    pub flushed: Option<u16>,
}

impl Reply {
    /// The error this reply carries, if it is Rerror or Rlerror.
    pub fn error(&self) -> Option<ReplyError> {
        match &self.msg {
            Msg::Rerror(e) => Some(ReplyError::Message {
                ename: e.ename.clone(),
                errno: e.errno,
            }),
            Msg::Rlerror(e) => Some(ReplyError::Errno(e.ecode)),
            _ => None,
        }
    }
}

/// An error reply from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// 9P2000 / 9P2000.u Rerror.
    Message { ename: Bytes, errno: Option<u32> },
    /// 9P2000.L Rlerror.
    Errno(u32),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Message { ename, .. } => {
                f.write_str(&alloc::string::String::from_utf8_lossy(ename))
            }
            ReplyError::Errno(e) => write!(f, "errno {e}"),
        }
    }
}

/// The client's half of a 9P conversation.
#[derive(Debug)]
pub struct Client {
    wanted: Dialect,
    dialect: Option<Dialect>,
    msize: u32,
    /// Requests awaiting a reply, by tag.
    in_flight: BTreeMap<u16, MsgType>,
    /// Tflush tag → the tag it flushes.
    flushes: BTreeMap<u16, u16>,
    next_tag: u16,
    next_fid: u32,
    free_fids: Vec<Fid>,
    transmit: VecDeque<Bytes>,
}

impl Client {
    /// A client that will offer `msize` and `dialect`; the Tversion is queued at once.
    pub fn new(msize: u32, dialect: Dialect) -> Client {
        let mut c = Client {
            wanted: dialect,
            dialect: None,
            msize,
            in_flight: BTreeMap::new(),
            flushes: BTreeMap::new(),
            next_tag: 0,
            next_fid: 0,
            free_fids: Vec::new(),
            transmit: VecDeque::new(),
        };
        let tversion = Tversion {
            msize,
            version: Bytes::from_static(dialect.version_string().as_bytes()),
        };
        c.queue(NOTAG, tversion.into())
            .expect("a Tversion always encodes");
        c
    }

    /// The negotiated dialect, once Rversion has arrived.
    pub fn dialect(&self) -> Option<Dialect> {
        self.dialect
    }

    /// Whether version negotiation is done and requests may be sent.
    pub fn is_ready(&self) -> bool {
        self.dialect.is_some()
    }

    /// The msize: the offered one until Rversion, the negotiated one after.
    pub fn msize(&self) -> u32 {
        self.msize
    }

    /// Most bytes of data one Tread/Twrite can move in this session.
    pub fn iounit(&self) -> u32 {
        self.msize.saturating_sub(crate::types::IOHDRSZ)
    }

    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// A fid not in use by this client.
    pub fn alloc_fid(&mut self) -> Fid {
        self.free_fids.pop().unwrap_or_else(|| {
            let fid = Fid(self.next_fid);
            self.next_fid += 1;
            fid
        })
    }

    /// Give back a fid once the server has forgotten it (after Rclunk or Rremove).
    pub fn free_fid(&mut self, fid: Fid) {
        self.free_fids.push(fid);
    }

    fn alloc_tag(&mut self) -> Result<u16, ClientError> {
        if self.in_flight.len() >= NOTAG as usize {
            return Err(ClientError::TagsExhausted);
        }
        loop {
            let tag = self.next_tag;
            self.next_tag = self.next_tag.wrapping_add(1);
            if tag != NOTAG && !self.in_flight.contains_key(&tag) {
                return Ok(tag);
            }
        }
    }

    fn queue(&mut self, tag: u16, msg: Msg) -> Result<(), ClientError> {
        let ty = msg.msg_type();
        let frame = Fcall { tag, msg }.to_frame().map_err(ClientError::Encode)?;
        if frame.len() > self.msize as usize {
            return Err(ClientError::TooLarge {
                len: frame.len(),
                msize: self.msize,
            });
        }
        self.in_flight.insert(tag, ty);
        self.transmit.push_back(frame);
        Ok(())
    }

    /// Queue a request; returns the tag its reply will carry.
    pub fn send(&mut self, msg: impl Into<Msg>) -> Result<u16, ClientError> {
        if !self.is_ready() {
            return Err(ClientError::NotReady);
        }
        let msg = msg.into();
        let tag = self.alloc_tag()?;
        if let Msg::Tflush(Tflush { oldtag }) = msg {
            self.flushes.insert(tag, oldtag);
        }
        self.queue(tag, msg)?;
        Ok(tag)
    }

    /// Queue a Tflush for the request with `oldtag`.
    pub fn flush(&mut self, oldtag: u16) -> Result<u16, ClientError> {
        self.send(Tflush { oldtag })
    }

    /// The next frame to send to the server, in order.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop_front()
    }

    /// Take in one frame from the server and match it to its request.
    pub fn handle_frame(&mut self, frame: &Bytes) -> Result<Reply, ClientError> {
        let dialect = self.dialect.unwrap_or(self.wanted);
        let header = Header::parse(frame).map_err(ClientError::Decode)?;
        let Some(&request) = self.in_flight.get(&header.tag) else {
            return Err(ClientError::UnknownTag(header.tag));
        };
        let fcall = Fcall::decode(frame, dialect).map_err(ClientError::Decode)?;
        let reply = fcall.msg.msg_type();
        let is_error = matches!(reply, MsgType::Rerror | MsgType::Rlerror);
        if Some(reply) != request.reply() && !is_error {
            return Err(ClientError::WrongReplyType { request, reply });
        }
        self.in_flight.remove(&header.tag);
        let mut flushed = None;
        if request == MsgType::Tflush {
            let oldtag = self.flushes.remove(&header.tag);
            // flush(5): once Rflush arrives the old request will get no reply.
            if let Some(old) = oldtag {
                if self.in_flight.remove(&old).is_some() {
                    flushed = Some(old);
                }
            }
        }
        if let Msg::Rversion(rv) = &fcall.msg {
            let Some(d) = Dialect::from_version(&rv.version) else {
                return Err(ClientError::VersionRejected(rv.version.clone()));
            };
            self.dialect = Some(d);
            self.msize = self.msize.min(rv.msize);
        }
        Ok(Reply {
            tag: header.tag,
            request,
            msg: fcall.msg,
            flushed,
        })
    }
}
