//! The compound field types of 9P: qids, stat records, walk name and qid lists, and the
//! protocol's constants.

use core::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind, EncodeError};
use crate::wire::{FidList, Reader, Wire};

/// The server's unique identity of a file: `type[1] version[4] path[8]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Qid {
    pub typ: u8,
    pub version: u32,
    pub path: u64,
}

impl Qid {
    pub const LEN: usize = 13;

    pub fn is_dir(&self) -> bool {
        self.typ & qid_type::DIR != 0
    }

    /// Read a qid from 13 bytes (callers have checked the length).
    pub fn from_bytes(b: &[u8; 13]) -> Qid {
        Qid {
            typ: b[0],
            version: u32::from_le_bytes([b[1], b[2], b[3], b[4]]),
            path: u64::from_le_bytes([b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12]]),
        }
    }

    /// The 13-byte wire form.
    pub fn to_bytes(&self) -> [u8; 13] {
        let mut b = [0u8; 13];
        b[0] = self.typ;
        b[1..5].copy_from_slice(&self.version.to_le_bytes());
        b[5..13].copy_from_slice(&self.path.to_le_bytes());
        b
    }
}

impl Wire for Qid {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let b: &[u8; 13] = r.slice(13)?.try_into().expect("slice of 13 bytes");
        Ok(Qid::from_bytes(b))
    }
    fn encoded_len(&self) -> usize {
        Self::LEN
    }
    fn encode(&self, w: &mut BytesMut) {
        w.put_slice(&self.to_bytes())
    }
    fn skip(r: &mut Reader<'_>, _: &mut FidList) -> Result<(), DecodeError> {
        r.skip(Self::LEN)
    }
}

/// Room servers reserve for the fixed fields of an I/O message: data per Tread/Twrite is at
/// most `msize - IOHDRSZ`. Linux's P9_IOHDRSZ; diod refuses larger (a Twrite's fields take 23).
pub const IOHDRSZ: u32 = 24;

/// The most names one Twalk may carry, and qids one Rwalk may return.
pub const MAXWELEM: usize = 16;

fn too_many(count: usize) -> EncodeError {
    EncodeError::TooManyWalkElements { count }
}

/// Check a walk element count (already read from the frame) against [`MAXWELEM`].
fn check_walk_count(r: &Reader<'_>, count: u16) -> Result<(), DecodeError> {
    if count as usize > MAXWELEM {
        return Err(r.error(DecodeErrorKind::TooManyWalkElements { count }));
    }
    Ok(())
}

/// The names of a Twalk, `nwname[2] nwname*(wname[s])`, kept as the frame's own bytes: decoding
/// validates them once, iteration then cannot fail and allocates nothing.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WalkNames {
    count: u16,
    raw: Bytes,
}

impl WalkNames {
    /// Build from names; fails past 16 names or for a name longer than 65535 bytes.
    pub fn new<I, N>(names: I) -> Result<Self, EncodeError>
    where
        I: IntoIterator<Item = N>,
        N: AsRef<[u8]>,
    {
        let mut raw = BytesMut::new();
        let mut count = 0usize;
        for name in names {
            let name = name.as_ref();
            count += 1;
            if count > MAXWELEM {
                return Err(too_many(count));
            }
            if name.len() > u16::MAX as usize {
                return Err(EncodeError::StringTooLong { len: name.len() });
            }
            raw.put_u16_le(name.len() as u16);
            raw.put_slice(name);
        }
        Ok(WalkNames {
            count: count as u16,
            raw: raw.freeze(),
        })
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The names in order.
    pub fn iter(&self) -> WalkNameIter<'_> {
        WalkNameIter { rest: &self.raw }
    }

    /// Read past the names, checking them, and return their count.
    fn measure(r: &mut Reader<'_>) -> Result<u16, DecodeError> {
        let count = r.u16()?;
        check_walk_count(r, count)?;
        for _ in 0..count {
            let n = r.u16()? as usize;
            r.skip(n)?;
        }
        Ok(count)
    }
}

/// Iterator over the names of a [`WalkNames`].
pub struct WalkNameIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for WalkNameIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        // The bytes were validated when the WalkNames was made, so each length fits.
        let (len, rest) = self.rest.split_first_chunk::<2>()?;
        let (name, rest) = rest.split_at(u16::from_le_bytes(*len) as usize);
        self.rest = rest;
        Some(name)
    }
}

impl fmt::Debug for WalkNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(Bytes::copy_from_slice))
            .finish()
    }
}

impl Wire for WalkNames {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut probe = r.clone();
        let count = Self::measure(&mut probe)?;
        r.skip(2)?;
        let raw = r.bytes(probe.pos() - r.pos())?;
        Ok(WalkNames { count, raw })
    }
    fn encoded_len(&self) -> usize {
        2 + self.raw.len()
    }
    fn encode(&self, w: &mut BytesMut) {
        w.put_u16_le(self.count);
        w.put_slice(&self.raw);
    }
    fn skip(r: &mut Reader<'_>, _: &mut FidList) -> Result<(), DecodeError> {
        Self::measure(r).map(drop)
    }
}

/// The qids of an Rwalk, `nwqid[2] nwqid*(qid[13])`, kept as the frame's own bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WalkQids {
    raw: Bytes,
}

impl WalkQids {
    pub fn new(qids: &[Qid]) -> Result<Self, EncodeError> {
        if qids.len() > MAXWELEM {
            return Err(too_many(qids.len()));
        }
        let mut raw = BytesMut::with_capacity(qids.len() * Qid::LEN);
        for q in qids {
            raw.put_slice(&q.to_bytes());
        }
        Ok(WalkQids { raw: raw.freeze() })
    }

    pub fn len(&self) -> usize {
        self.raw.len() / Qid::LEN
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<Qid> {
        let b = self.raw.get(i * Qid::LEN..(i + 1) * Qid::LEN)?;
        Some(Qid::from_bytes(b.try_into().ok()?))
    }

    /// The last qid: the one the new fid stands for after a complete walk.
    pub fn last(&self) -> Option<Qid> {
        self.len().checked_sub(1).and_then(|i| self.get(i))
    }

    pub fn iter(&self) -> impl Iterator<Item = Qid> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl fmt::Debug for WalkQids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Wire for WalkQids {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = r.u16()?;
        check_walk_count(r, count)?;
        let raw = r.bytes(count as usize * Qid::LEN)?;
        Ok(WalkQids { raw })
    }
    fn encoded_len(&self) -> usize {
        2 + self.raw.len()
    }
    fn encode(&self, w: &mut BytesMut) {
        w.put_u16_le(self.len() as u16);
        w.put_slice(&self.raw);
    }
    fn skip(r: &mut Reader<'_>, _: &mut FidList) -> Result<(), DecodeError> {
        let count = r.u16()?;
        check_walk_count(r, count)?;
        r.skip(count as usize * Qid::LEN)
    }
}

/// The 9P2000.u additions to a stat record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatExt {
    /// Symlink target, device numbers or similar, for special files.
    pub extension: Bytes,
    pub n_uid: u32,
    pub n_gid: u32,
    pub n_muid: u32,
}

/// A directory entry, as in stat(5): `size[2] type[2] dev[4] qid[13] mode[4] atime[4] mtime[4]
/// length[8] name[s] uid[s] gid[s] muid[s]`, plus [`StatExt`] in 9P2000.u.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub typ: u16,
    pub dev: u32,
    pub qid: Qid,
    pub mode: u32,
    pub atime: u32,
    pub mtime: u32,
    pub length: u64,
    pub name: Bytes,
    pub uid: Bytes,
    pub gid: Bytes,
    pub muid: Bytes,
    /// Present exactly when the dialect is 9P2000.u (or decoding in an extended dialect).
    pub ext: Option<StatExt>,
}

impl Stat {
    /// Offset of the qid inside a stat record (after `size[2] type[2] dev[4]`).
    pub const QID_OFFSET: usize = 8;

    /// A Twstat record that changes nothing: every field says "don't touch" (stat(5): ~0 for
    /// numbers, empty strings). Set the fields to change.
    pub fn unchanged(dialect: crate::Dialect) -> Stat {
        Stat {
            typ: !0,
            dev: !0,
            qid: Qid {
                typ: !0,
                version: !0,
                path: !0,
            },
            mode: !0,
            atime: !0,
            mtime: !0,
            length: !0,
            name: Bytes::new(),
            uid: Bytes::new(),
            gid: Bytes::new(),
            muid: Bytes::new(),
            ext: dialect.is_extended().then(|| StatExt {
                extension: Bytes::new(),
                n_uid: !0,
                n_gid: !0,
                n_muid: !0,
            }),
        }
    }

    fn body_len(&self) -> usize {
        2 + 4
            + Qid::LEN
            + 4 * 3
            + 8
            + [&self.name, &self.uid, &self.gid, &self.muid]
                .iter()
                .map(|s| 2 + s.len())
                .sum::<usize>()
            + self.ext.as_ref().map_or(0, |e| 2 + e.extension.len() + 12)
    }

    /// Length of the record including its own `size[2]`.
    pub fn record_len(&self) -> usize {
        2 + self.body_len()
    }

    /// Decode one size-prefixed record; its fields must fill the declared size exactly.
    pub fn decode_record(r: &mut Reader<'_>) -> Result<Stat, DecodeError> {
        let size = r.u16()?;
        let mut body = r.sub(size as usize)?;
        let stat = Stat {
            typ: body.u16()?,
            dev: body.u32()?,
            qid: Qid::decode(&mut body)?,
            mode: body.u32()?,
            atime: body.u32()?,
            mtime: body.u32()?,
            length: body.u64()?,
            name: Bytes::decode(&mut body)?,
            uid: Bytes::decode(&mut body)?,
            gid: Bytes::decode(&mut body)?,
            muid: Bytes::decode(&mut body)?,
            ext: if body.dialect().is_extended() {
                Some(StatExt {
                    extension: Bytes::decode(&mut body)?,
                    n_uid: body.u32()?,
                    n_gid: body.u32()?,
                    n_muid: body.u32()?,
                })
            } else {
                None
            },
        };
        if body.remaining() != 0 {
            return Err(body.error(DecodeErrorKind::StatSizeMismatch {
                declared: size,
                actual: size as usize - body.remaining(),
            }));
        }
        Ok(stat)
    }

    /// Step over one size-prefixed record, checking its layout, without copying its strings.
    pub fn skip_record(r: &mut Reader<'_>) -> Result<(), DecodeError> {
        let size = r.u16()?;
        let mut body = r.sub(size as usize)?;
        body.skip(2 + 4 + Qid::LEN + 4 * 3 + 8)?;
        let strings = if body.dialect().is_extended() { 5 } else { 4 };
        for _ in 0..strings {
            let n = body.u16()? as usize;
            body.skip(n)?;
        }
        if body.dialect().is_extended() {
            body.skip(12)?;
        }
        if body.remaining() != 0 {
            return Err(body.error(DecodeErrorKind::StatSizeMismatch {
                declared: size,
                actual: size as usize - body.remaining(),
            }));
        }
        Ok(())
    }

    /// Append the size-prefixed record.
    pub fn encode_record(&self, w: &mut BytesMut) {
        w.put_u16_le(self.body_len() as u16);
        w.put_u16_le(self.typ);
        w.put_u32_le(self.dev);
        self.qid.encode(w);
        w.put_u32_le(self.mode);
        w.put_u32_le(self.atime);
        w.put_u32_le(self.mtime);
        w.put_u64_le(self.length);
        for s in [&self.name, &self.uid, &self.gid, &self.muid] {
            s.encode(w);
        }
        if let Some(e) = &self.ext {
            e.extension.encode(w);
            w.put_u32_le(e.n_uid);
            w.put_u32_le(e.n_gid);
            w.put_u32_le(e.n_muid);
        }
    }

    /// Whether the record can be encoded (strings and total size within their limits).
    pub fn check(&self) -> Result<(), EncodeError> {
        for s in [&self.name, &self.uid, &self.gid, &self.muid] {
            s.check()?;
        }
        if let Some(e) = &self.ext {
            e.extension.check()?;
        }
        if self.body_len() > u16::MAX as usize {
            return Err(EncodeError::StatTooLong {
                len: self.record_len(),
            });
        }
        Ok(())
    }
}

/// In Rstat and Twstat the record is wrapped once more: `n[2]` then the size-prefixed record,
/// so the size appears twice (stat(5), BUGS). The two must agree.
impl Wire for Stat {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.u16()?;
        let mut inner = r.sub(n as usize)?;
        let stat = Stat::decode_record(&mut inner)?;
        inner.finish()?;
        Ok(stat)
    }
    fn encoded_len(&self) -> usize {
        2 + self.record_len()
    }
    fn encode(&self, w: &mut BytesMut) {
        w.put_u16_le(self.record_len() as u16);
        self.encode_record(w);
    }
    fn check(&self) -> Result<(), EncodeError> {
        Stat::check(self)?;
        if self.record_len() > u16::MAX as usize {
            return Err(EncodeError::StatTooLong {
                len: self.record_len(),
            });
        }
        Ok(())
    }
}

/// Qid type bits (`qid.type`).
pub mod qid_type {
    pub const DIR: u8 = 0x80;
    pub const APPEND: u8 = 0x40;
    pub const EXCL: u8 = 0x20;
    pub const MOUNT: u8 = 0x10;
    pub const AUTH: u8 = 0x08;
    pub const TMP: u8 = 0x04;
    pub const SYMLINK: u8 = 0x02;
    pub const LINK: u8 = 0x01;
    pub const FILE: u8 = 0x00;
}

/// Permission and mode bits of 9P2000 stat records and Tcreate.
pub mod dm {
    pub const DIR: u32 = 0x8000_0000;
    pub const APPEND: u32 = 0x4000_0000;
    pub const EXCL: u32 = 0x2000_0000;
    pub const MOUNT: u32 = 0x1000_0000;
    pub const AUTH: u32 = 0x0800_0000;
    pub const TMP: u32 = 0x0400_0000;
    /// 9P2000.u special files.
    pub const SYMLINK: u32 = 0x0200_0000;
    pub const DEVICE: u32 = 0x0080_0000;
    pub const NAMEDPIPE: u32 = 0x0020_0000;
    pub const SOCKET: u32 = 0x0010_0000;
    pub const SETUID: u32 = 0x0008_0000;
    pub const SETGID: u32 = 0x0004_0000;
}

/// Topen/Tcreate mode byte.
pub mod open_mode {
    pub const READ: u8 = 0;
    pub const WRITE: u8 = 1;
    pub const RDWR: u8 = 2;
    pub const EXEC: u8 = 3;
    pub const TRUNC: u8 = 0x10;
    pub const RCLOSE: u8 = 0x40;
}

/// Tlopen/Tlcreate flags (Linux open(2) values, as in Linux `include/net/9p/9p.h`).
pub mod lflags {
    pub const RDONLY: u32 = 0o0;
    pub const WRONLY: u32 = 0o1;
    pub const RDWR: u32 = 0o2;
    pub const CREATE: u32 = 0o100;
    pub const EXCL: u32 = 0o200;
    pub const NOCTTY: u32 = 0o400;
    pub const TRUNC: u32 = 0o1000;
    pub const APPEND: u32 = 0o2000;
    pub const NONBLOCK: u32 = 0o4000;
    pub const DIRECTORY: u32 = 0o200000;
}

/// Tlock/Tgetlock lock types (Linux `P9_LOCK_TYPE_*`).
pub mod lock_type {
    pub const RDLCK: u8 = 0;
    pub const WRLCK: u8 = 1;
    pub const UNLCK: u8 = 2;
}

/// Rlock status values (Linux `P9_LOCK_SUCCESS`, `P9_LOCK_BLOCKED`, `P9_LOCK_ERROR`).
pub mod lock_status {
    pub const SUCCESS: u8 = 0;
    /// Another owner holds a conflicting lock.
    pub const BLOCKED: u8 = 1;
    pub const ERROR: u8 = 2;
}

/// Linux errno values used in Rlerror and 9P2000.u Rerror.
pub mod errno {
    pub const EPERM: u32 = 1;
    pub const ENOENT: u32 = 2;
    pub const EIO: u32 = 5;
    pub const EBADF: u32 = 9;
    pub const EAGAIN: u32 = 11;
    pub const EACCES: u32 = 13;
    pub const EEXIST: u32 = 17;
    pub const ENOTDIR: u32 = 20;
    pub const EISDIR: u32 = 21;
    pub const EINVAL: u32 = 22;
    pub const ENOSPC: u32 = 28;
    pub const ENAMETOOLONG: u32 = 36;
    pub const ENOSYS: u32 = 38;
    pub const ENOTEMPTY: u32 = 39;
    pub const EPROTO: u32 = 71;
    pub const ESTALE: u32 = 116;
}

/// The tag of a Tversion, which lives outside the tag space.
pub const NOTAG: u16 = !0;
/// The n_uname meaning "no numeric user".
pub const NONUNAME: u32 = !0;
