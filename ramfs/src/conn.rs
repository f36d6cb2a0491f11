//! One client connection: version negotiation, the fid table, turning a request frame into
//! exactly one reply frame, and the requests all three dialects share (attach, walk, read,
//! write, clunk, remove, flush).

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use bytes::Bytes;
use p9_core::{
    Data, DecodeErrorKind, Dialect, Fcall, Fid, Msg, Qid, Rattach, Rclunk, Rflush, Rread, Rremove,
    Rversion, Rwalk, Rwrite, Tattach, Tread, Tversion, Twalk, Twrite, WalkQids, NOFID, NONUNAME,
    NOTAG,
};

use crate::error::Error;
use crate::fs::{decimal, Fs, ROOT};
use crate::inode::User;
use crate::owner::{ConnId, EndNotice};

/// The smallest msize a connection accepts: every reply but Rread, Rreaddir and Rstat fits in it.
pub const MIN_MSIZE: u32 = 256;
/// An msize for servers with no reason to choose another.
pub const DEFAULT_MSIZE: u32 = 64 * 1024;

/// `size[4] type[1] tag[2] count[4]`: what an Rread or Rreaddir adds to its data.
pub(crate) const RREAD_HEADER: u32 = 11;
/// Plan 9's IOHDRSZ: room for a Twrite's or Rread's header. iounit = msize - IOHDRSZ.
const IOHDRSZ: u32 = 24;

/// Where a 9P2000/.u directory read of a fid left off: the byte offset the client must ask for
/// next, and the cookie of the last entry it got.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DirCursor {
    pub offset: u64,
    pub cookie: u64,
}

/// How a fid was opened.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Open {
    pub read: bool,
    pub write: bool,
    /// O_APPEND: every write goes to the end.
    pub append: bool,
    /// ORCLOSE: clunking the fid removes the file.
    pub orclose: bool,
    /// This open is the one open of an exclusive-use file.
    pub exclusive: bool,
    pub dir: DirCursor,
}

#[derive(Clone, Debug)]
pub(crate) enum FidUse {
    /// Walked or attached, not opened.
    Walked,
    Open(Open),
    /// From Txattrwalk of the empty name: the (empty) list of attribute names.
    Xattr,
}

#[derive(Clone, Debug)]
pub(crate) struct FidState {
    pub ino: u64,
    pub user: User,
    pub state: FidUse,
}

/// The state of one client connection: dialect, msize and fids. Requests go in through
/// [`handle`](Conn::handle), one frame at a time; each gives back its reply frame.
///
/// Dropping a `Conn` is a crash: the tree keeps every file, and the connection's locks and
/// exclusive opens stop counting at once, but its ORCLOSE files stay. [`close`](Conn::close) is
/// an orderly hang-up: every fid is clunked, ORCLOSE files are removed.
#[derive(Debug)]
pub struct Conn {
    pub(crate) max_msize: u32,
    pub(crate) msize: u32,
    pub(crate) dialect: Option<Dialect>,
    pub(crate) fids: BTreeMap<Fid, FidState>,
    pub(crate) id: ConnId,
    /// The tree counts this connection as alive while this exists (see [`crate::Fs`]).
    _alive: Arc<()>,
    /// Tells the tree, once `_alive` is gone, that a connection ended. Must come after it.
    _ended: EndNotice,
}

impl Conn {
    /// A connection to `fs` that will agree to an msize of at most `max_msize` (at least
    /// [`MIN_MSIZE`]). It has no version yet: the client's first request should be Tversion.
    pub fn new(fs: &mut Fs, max_msize: u32) -> Conn {
        let alive = Arc::new(());
        let (id, ended) = fs.register(&alive);
        let max_msize = max_msize.max(MIN_MSIZE);
        Conn {
            max_msize,
            msize: max_msize,
            dialect: None,
            fids: BTreeMap::new(),
            id,
            _alive: alive,
            _ended: ended,
        }
    }

    /// The dialect negotiated by the last Tversion, if any.
    pub fn dialect(&self) -> Option<Dialect> {
        self.dialect
    }

    /// The negotiated msize (the server's maximum before a version is negotiated).
    pub fn msize(&self) -> u32 {
        self.msize
    }

    /// How many fids the client has.
    pub fn fid_count(&self) -> usize {
        self.fids.len()
    }

    /// The fids the client has, in order.
    pub fn fids(&self) -> impl Iterator<Item = u32> + '_ {
        self.fids.keys().map(|f| f.0)
    }

    /// The user a fid acts as (the name and numeric id its attach gave), if the fid exists.
    pub fn fid_user(&self, fid: u32) -> Option<(&[u8], u32)> {
        self.fids
            .get(&Fid(fid))
            .map(|f| (&f.user.name[..], f.user.id))
    }

    /// Serve one request frame; returns its reply frame. Whatever the bytes, the reply is one
    /// frame that decodes in the connection's dialect (9P2000 before one is negotiated; for a
    /// Tversion, the dialect it asked for), carrying the request's tag, or `NOTAG` when the frame
    /// is too short to have one.
    pub fn handle(&mut self, fs: &mut Fs, frame: &Bytes) -> Bytes {
        fs.sweep();
        fs.count_request(frame.get(4).copied());
        let tag = frame
            .get(5..7)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map_or(NOTAG, u16::from_le_bytes);
        let result = match self.decode(frame) {
            Ok(Fcall {
                msg: Msg::Tversion(m),
                ..
            }) => return self.version(fs, tag, m),
            Ok(fcall) => self.dispatch(fs, fcall.msg),
            Err(e) => Err(e),
        };
        self.reply(tag, result)
    }

    /// Hang up: clunk every fid (removing ORCLOSE files) and release every lock and exclusive
    /// open the connection holds.
    pub fn close(mut self, fs: &mut Fs) {
        fs.sweep();
        self.clunk_all(fs);
        fs.unregister(self.id);
    }

    fn decode(&self, frame: &Bytes) -> Result<Fcall, Error> {
        if self.dialect.is_some() && frame.len() > self.msize as usize {
            return Err(Error::TOO_LARGE);
        }
        let dialect = self.dialect.unwrap_or(Dialect::Base);
        Fcall::decode(frame, dialect).map_err(|e| match e.kind {
            DecodeErrorKind::UnknownType { .. } => Error::UNKNOWN_TYPE,
            _ => Error::BAD_MESSAGE,
        })
    }

    /// Encode a reply; one that does not fit the msize becomes an error, which always does.
    fn reply(&self, tag: u16, result: Result<Msg, Error>) -> Bytes {
        let error = match result {
            Ok(msg) => match Fcall::new(tag, msg).to_frame() {
                Ok(frame) if frame.len() <= self.msize as usize => return frame,
                _ => Error::REPLY_TOO_LARGE,
            },
            Err(e) => e,
        };
        error_frame(tag, self.dialect, error)
    }

    fn dispatch(&mut self, fs: &mut Fs, msg: Msg) -> Result<Msg, Error> {
        // flush(5): a server that answers in order has nothing to flush, and a Tflush is never
        // answered with an error.
        if let Msg::Tflush(_) = msg {
            return Ok(Rflush {}.into());
        }
        if self.dialect.is_none() {
            return Err(Error::NOT_VERSIONED);
        }
        // Decoding in the negotiated dialect already refused messages of other dialects.
        match msg {
            Msg::Tauth(_) => Err(Error::NO_AUTH),
            Msg::Tattach(m) => self.attach(fs, m),
            Msg::Twalk(m) => self.walk(fs, m),
            Msg::Tread(m) => self.read(fs, m),
            Msg::Twrite(m) => self.write(fs, m),
            Msg::Tclunk(m) => self.clunk(fs, m.fid).map(|()| Rclunk {}.into()),
            Msg::Tremove(m) => self.remove(fs, m.fid),
            // 9P2000 and 9P2000.u.
            Msg::Topen(m) => self.open(fs, m),
            Msg::Tcreate(m) => self.create(fs, m),
            Msg::Tstat(m) => self.stat(fs, m),
            Msg::Twstat(m) => self.wstat(fs, m),
            // 9P2000.L.
            Msg::Tstatfs(m) => self.statfs(fs, m),
            Msg::Tlopen(m) => self.lopen(fs, m),
            Msg::Tlcreate(m) => self.lcreate(fs, m),
            Msg::Tsymlink(m) => self.symlink(fs, m),
            Msg::Tmknod(m) => self.mknod(fs, m),
            Msg::Trename(m) => self.rename(fs, m),
            Msg::Treadlink(m) => self.readlink(fs, m),
            Msg::Tgetattr(m) => self.getattr(fs, m),
            Msg::Tsetattr(m) => self.setattr(fs, m),
            Msg::Txattrwalk(m) => self.xattrwalk(fs, m),
            Msg::Txattrcreate(_) => Err(Error::XATTR_UNSUPPORTED),
            Msg::Treaddir(m) => self.readdir(fs, m),
            Msg::Tfsync(m) => self.fid(m.fid).map(|_| p9_core::Rfsync {}.into()),
            Msg::Tlock(m) => self.lock(fs, m),
            Msg::Tgetlock(m) => self.getlock(fs, m),
            Msg::Tlink(m) => self.link(fs, m),
            Msg::Tmkdir(m) => self.mkdir(fs, m),
            Msg::Trenameat(m) => self.renameat(fs, m),
            Msg::Tunlinkat(m) => self.unlinkat(fs, m),
            _ => Err(Error::NOT_REQUEST),
        }
    }

    // ---- The fid table ----

    pub(crate) fn dialect_or_base(&self) -> Dialect {
        self.dialect.unwrap_or(Dialect::Base)
    }

    pub(crate) fn iounit(&self) -> u32 {
        self.msize.saturating_sub(IOHDRSZ)
    }

    /// The most data one Rread or Rreaddir can carry.
    pub(crate) fn max_read(&self) -> u32 {
        self.msize.saturating_sub(RREAD_HEADER)
    }

    pub(crate) fn fid(&self, fid: Fid) -> Result<&FidState, Error> {
        self.fids.get(&fid).ok_or(Error::UNKNOWN_FID)
    }

    /// A fid that is neither open nor an xattr fid: one that can be walked, opened or created in.
    pub(crate) fn unopened(&self, fid: Fid) -> Result<&FidState, Error> {
        let st = self.fid(fid)?;
        match st.state {
            FidUse::Walked => Ok(st),
            FidUse::Open(_) => Err(Error::FID_OPEN),
            FidUse::Xattr => Err(Error::XATTR_FID),
        }
    }

    /// Bind `fid` to `ino`: a new fid, or (for one that exists) a move, as when a walk has
    /// fid == newfid or a create turns the fid into the new file.
    pub(crate) fn bind(
        &mut self,
        fs: &mut Fs,
        fid: Fid,
        ino: u64,
        user: User,
        state: FidUse,
    ) -> Result<(), Error> {
        if !self.fids.contains_key(&fid) && self.fids.len() >= fs.limits().max_fids {
            return Err(Error::TOO_MANY_FIDS);
        }
        // Hold the new file before letting go of the old one, which may be the same.
        fs.hold(ino, self.id);
        let new = FidState { ino, user, state };
        if let Some(old) = self.fids.insert(fid, new) {
            self.release(fs, &old);
        }
        Ok(())
    }

    /// Let go of what a fid held: its exclusive open and its hold on the file.
    fn release(&mut self, fs: &mut Fs, st: &FidState) {
        if let FidUse::Open(Open {
            exclusive: true, ..
        }) = st.state
        {
            fs.close_exclusive(st.ino, self.id);
        }
        fs.release(st.ino, self.id);
    }

    /// Forget a fid; an ORCLOSE open removes its file.
    pub(crate) fn clunk(&mut self, fs: &mut Fs, fid: Fid) -> Result<(), Error> {
        let st = self.fids.remove(&fid).ok_or(Error::UNKNOWN_FID)?;
        if let FidUse::Open(Open { orclose: true, .. }) = st.state {
            // The clunk succeeds whether or not the remove does, as in Plan 9.
            let _ = fs.remove(st.ino);
        }
        self.release(fs, &st);
        Ok(())
    }

    fn clunk_all(&mut self, fs: &mut Fs) {
        let fids: Vec<Fid> = self.fids.keys().copied().collect();
        for fid in fids {
            let _ = self.clunk(fs, fid);
        }
    }

    // ---- Requests of every dialect ----

    /// version(5): negotiate, and start the session afresh (every fid is clunked).
    fn version(&mut self, fs: &mut Fs, tag: u16, m: Tversion) -> Bytes {
        self.clunk_all(fs);
        self.dialect = None;
        self.msize = self.max_msize;
        let offered = Dialect::negotiate(&m.version);
        let msize = m.msize.min(self.max_msize);
        if msize < MIN_MSIZE {
            // The client decodes the answer in the dialect it asked for.
            return error_frame(tag, offered, Error::MSIZE_TOO_SMALL);
        }
        self.msize = msize;
        self.dialect = offered;
        let version = offered.map_or("unknown", Dialect::version_string);
        let reply = Rversion {
            msize,
            version: Bytes::from_static(version.as_bytes()),
        };
        self.reply(tag, Ok(reply.into()))
    }

    fn attach(&mut self, fs: &mut Fs, m: Tattach) -> Result<Msg, Error> {
        if self.fids.contains_key(&m.fid) {
            return Err(Error::FID_IN_USE);
        }
        if m.afid != NOFID {
            return Err(Error::NO_AUTH);
        }
        if !(m.aname.is_empty() || &m.aname[..] == b"/") {
            return Err(Error::BAD_ANAME);
        }
        let id = m.n_uname.unwrap_or(NONUNAME);
        // Copy the name out of the request frame; a fid can outlive the frame by a long time.
        let name = match (&m.uname[..], id) {
            (b"", NONUNAME) => Bytes::from_static(b"none"),
            (b"", id) => decimal(id),
            (name, _) => Bytes::copy_from_slice(name),
        };
        self.bind(fs, m.fid, ROOT, User { name, id }, FidUse::Walked)?;
        Ok(Rattach { qid: fs.qid(ROOT)? }.into())
    }

    /// walk(5): a failing first name is an error; a later one ends the walk short and creates no
    /// fid; a complete walk binds newfid (which may be fid itself).
    fn walk(&mut self, fs: &mut Fs, m: Twalk) -> Result<Msg, Error> {
        let st = self.unopened(m.fid)?;
        if m.newfid != m.fid && self.fids.contains_key(&m.newfid) {
            return Err(Error::FID_IN_USE);
        }
        let user = st.user.clone();
        let mut ino = st.ino;
        let mut qids: Vec<Qid> = Vec::with_capacity(m.wnames.len());
        for name in m.wnames.iter() {
            match fs.walk1(ino, name) {
                Ok(next) => {
                    ino = next;
                    qids.push(fs.qid(ino)?);
                }
                Err(e) if qids.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        // Even a zero-name walk checks that the file is still there.
        fs.inode(ino)?;
        if qids.len() == m.wnames.len() {
            self.bind(fs, m.newfid, ino, user, FidUse::Walked)?;
        }
        let wqids = WalkQids::new(&qids).map_err(|_| Error::INVALID)?;
        Ok(Rwalk { wqids }.into())
    }

    fn read(&mut self, fs: &mut Fs, m: Tread) -> Result<Msg, Error> {
        let count = m.count.min(self.max_read());
        let st = self.fid(m.fid)?;
        let open = match st.state {
            FidUse::Open(o) => o,
            // The attribute list is empty.
            FidUse::Xattr => {
                return Ok(Rread {
                    data: Data::default(),
                }
                .into())
            }
            FidUse::Walked => return Err(Error::NOT_OPEN),
        };
        if !open.read {
            return Err(Error::NOT_READABLE);
        }
        let ino = st.ino;
        if fs.inode(ino)?.is_dir() {
            return match self.dialect {
                Some(Dialect::Base | Dialect::DotU) => {
                    self.read_dir_stats(fs, m.fid, ino, m.offset, count)
                }
                // 9P2000.L lists directories with Treaddir.
                _ => Err(Error::IS_DIR),
            };
        }
        let data = fs.read(ino, m.offset, count)?;
        Ok(Rread { data: Data(data) }.into())
    }

    fn write(&mut self, fs: &mut Fs, m: Twrite) -> Result<Msg, Error> {
        let st = self.fid(m.fid)?;
        let open = match st.state {
            FidUse::Open(o) => o,
            FidUse::Xattr => return Err(Error::XATTR_FID),
            FidUse::Walked => return Err(Error::NOT_OPEN),
        };
        if !open.write {
            return Err(Error::NOT_WRITABLE);
        }
        let count = fs.write(st.ino, m.offset, &m.data.0, open.append, &st.user)?;
        Ok(Rwrite { count }.into())
    }

    /// remove(5): the fid is clunked whether or not the remove succeeds.
    fn remove(&mut self, fs: &mut Fs, fid: Fid) -> Result<Msg, Error> {
        let st = self.fids.remove(&fid).ok_or(Error::UNKNOWN_FID)?;
        let result = fs.remove(st.ino);
        self.release(fs, &st);
        result.map(|()| Rremove {}.into())
    }
}

/// An error reply in the form of `dialect`.
fn error_frame(tag: u16, dialect: Option<Dialect>, error: Error) -> Bytes {
    // The messages are short constants, so this always encodes; an empty frame would only
    // ever come from a bug in the codec.
    Fcall::new(tag, error.to_msg(dialect))
        .to_frame()
        .unwrap_or_default()
}
