//! Field encoding: a bounds-checked reader over a frame, and the [`Wire`] trait that every field
//! type of the message table implements.
//!
//! 9P is little-endian; strings are `len[2]` then bytes (any bytes: names need not be UTF-8);
//! data payloads are `count[4]` then bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind, EncodeError};
use crate::Dialect;

/// A cursor over a frame (or directory data). Slices it hands out share the frame's buffer
/// when it came from a [`Bytes`], so decoding copies no payload.
#[derive(Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    owner: Option<&'a Bytes>,
    pos: usize,
    end: usize,
    dialect: Dialect,
    msg_type: Option<u8>,
}

impl<'a> Reader<'a> {
    /// A reader over a frame held in `bytes`; strings and payloads become slices of it.
    pub fn new(bytes: &'a Bytes, dialect: Dialect) -> Self {
        Reader {
            data: bytes,
            owner: Some(bytes),
            pos: 0,
            end: bytes.len(),
            dialect,
            msg_type: None,
        }
    }

    /// A reader over borrowed bytes; strings and payloads are copied out if asked for, so use
    /// it for validation and skipping.
    pub fn borrowed(data: &'a [u8], dialect: Dialect) -> Self {
        Reader {
            data,
            owner: None,
            pos: 0,
            end: data.len(),
            dialect,
            msg_type: None,
        }
    }

    pub(crate) fn at(mut self, pos: usize, msg_type: Option<u8>) -> Self {
        self.pos = pos.min(self.end);
        self.msg_type = msg_type;
        self
    }

    /// The dialect the frame is decoded in (it decides which optional fields are present).
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Offset of the next byte to read.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left before the end of this reader's window.
    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// An error of `kind` at the current position.
    pub fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            msg_type: self.msg_type,
            offset: self.pos,
            kind,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.error(DecodeErrorKind::Truncated {
                needed: n,
                available: self.remaining(),
            }));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_le_bytes)
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    /// The next `n` bytes, borrowed.
    pub fn slice(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        self.take(n)
    }

    /// The next `n` bytes as a [`Bytes`] sharing the frame's buffer (copied if the reader
    /// borrows).
    pub fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let s = self.take(n)?;
        Ok(match self.owner {
            Some(owner) if !s.is_empty() => owner.slice_ref(s),
            _ => Bytes::copy_from_slice(s),
        })
    }

    /// Skip `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.take(n).map(drop)
    }

    /// Split off the next `n` bytes as a reader of their own (for size-delimited records).
    pub fn sub(&mut self, n: usize) -> Result<Reader<'a>, DecodeError> {
        let start = self.pos;
        self.skip(n)?;
        Ok(Reader {
            data: self.data,
            owner: self.owner,
            pos: start,
            end: start + n,
            dialect: self.dialect,
            msg_type: self.msg_type,
        })
    }

    /// Fails with `TrailingBytes` unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(self.error(DecodeErrorKind::TrailingBytes { extra })),
        }
    }
}

/// The fids a request names, collected while skipping over its body (see
/// [`crate::request_fids`]). No request names more than two.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FidList {
    fids: [u32; 2],
    len: u8,
}

impl FidList {
    pub fn push(&mut self, fid: u32) {
        if let Some(slot) = self.fids.get_mut(self.len as usize) {
            *slot = fid;
            self.len += 1;
        }
    }
    pub fn as_slice(&self) -> &[u32] {
        &self.fids[..self.len as usize]
    }
}

/// A field type of the message table: how it decodes, encodes and measures itself.
pub trait Wire: Sized {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
    fn encoded_len(&self) -> usize;
    /// Append the encoding; [`Wire::check`] must have passed.
    fn encode(&self, w: &mut BytesMut);
    /// Whether the value can be encoded at all (lengths within their count fields).
    fn check(&self) -> Result<(), EncodeError> {
        Ok(())
    }
    /// Step over the field without building it, noting any fid it holds.
    fn skip(r: &mut Reader<'_>, _fids: &mut FidList) -> Result<(), DecodeError> {
        Self::decode(r).map(drop)
    }
    /// The fid this field holds, if it is one.
    fn fid(&self) -> Option<u32> {
        None
    }
}

macro_rules! int_wire {
    ($($t:ty => $read:ident, $put:ident;)*) => {$(
        impl Wire for $t {
            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                r.$read()
            }
            fn encoded_len(&self) -> usize {
                core::mem::size_of::<$t>()
            }
            fn encode(&self, w: &mut BytesMut) {
                w.$put(*self)
            }
            fn skip(r: &mut Reader<'_>, _: &mut FidList) -> Result<(), DecodeError> {
                r.skip(core::mem::size_of::<$t>())
            }
        }
    )*};
}

int_wire! {
    u8 => u8, put_u8;
    u16 => u16, put_u16_le;
    u32 => u32, put_u32_le;
    u64 => u64, put_u64_le;
}

/// A fid: the client's 32-bit handle on a file. Its own type so that the message table knows
/// which fields are fids (see [`crate::request_fids`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Fid(pub u32);

/// "No fid": the afid of an attach without authentication.
pub const NOFID: Fid = Fid(!0);

impl Wire for Fid {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.u32().map(Fid)
    }
    fn encoded_len(&self) -> usize {
        4
    }
    fn encode(&self, w: &mut BytesMut) {
        w.put_u32_le(self.0)
    }
    fn skip(r: &mut Reader<'_>, fids: &mut FidList) -> Result<(), DecodeError> {
        fids.push(r.u32()?);
        Ok(())
    }
    fn fid(&self) -> Option<u32> {
        Some(self.0)
    }
}

/// A 9P string: `len[2]` then that many bytes. Names are bytes; no UTF-8 requirement.
impl Wire for Bytes {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.u16()? as usize;
        r.bytes(n)
    }
    fn encoded_len(&self) -> usize {
        2 + self.len()
    }
    fn encode(&self, w: &mut BytesMut) {
        w.put_u16_le(self.len() as u16);
        w.put_slice(self);
    }
    fn check(&self) -> Result<(), EncodeError> {
        if self.len() > u16::MAX as usize {
            return Err(EncodeError::StringTooLong { len: self.len() });
        }
        Ok(())
    }
    fn skip(r: &mut Reader<'_>, _: &mut FidList) -> Result<(), DecodeError> {
        let n = r.u16()? as usize;
        r.skip(n)
    }
}

/// A data payload (Rread, Twrite, Rreaddir): `count[4]` then the bytes, which stay a slice of
/// the frame.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Data(pub Bytes);

impl core::fmt::Debug for Data {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Payloads can be megabytes: show the size and a short prefix.
        let head = &self.0[..self.0.len().min(16)];
        write!(
            f,
            "Data({} bytes, {:?}",
            self.0.len(),
            Bytes::copy_from_slice(head)
        )?;
        if self.0.len() > head.len() {
            f.write_str("...")?;
        }
        f.write_str(")")
    }
}

impl Wire for Data {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.u32()? as usize;
        r.bytes(n).map(Data)
    }
    fn encoded_len(&self) -> usize {
        4 + self.0.len()
    }
    fn encode(&self, w: &mut BytesMut) {
        w.put_u32_le(self.0.len() as u32);
        w.put_slice(&self.0);
    }
    fn check(&self) -> Result<(), EncodeError> {
        if self.0.len() > u32::MAX as usize {
            return Err(EncodeError::FrameTooLarge { len: self.0.len() });
        }
        Ok(())
    }
    fn skip(r: &mut Reader<'_>, _: &mut FidList) -> Result<(), DecodeError> {
        let n = r.u32()? as usize;
        r.skip(n)
    }
}

/// A field that exists only in the extended dialects (9P2000.u and 9P2000.L): `n_uname` in
/// Tauth/Tattach, `errno` in Rerror, `extension` in Tcreate. Decoded as `Some` exactly when
/// the dialect has it; encoded when `Some`.
impl<T: Wire> Wire for Option<T> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        if r.dialect().is_extended() {
            T::decode(r).map(Some)
        } else {
            Ok(None)
        }
    }
    fn encoded_len(&self) -> usize {
        self.as_ref().map_or(0, T::encoded_len)
    }
    fn encode(&self, w: &mut BytesMut) {
        if let Some(v) = self {
            v.encode(w)
        }
    }
    fn check(&self) -> Result<(), EncodeError> {
        self.as_ref().map_or(Ok(()), T::check)
    }
    fn skip(r: &mut Reader<'_>, fids: &mut FidList) -> Result<(), DecodeError> {
        if r.dialect().is_extended() {
            T::skip(r, fids)
        } else {
            Ok(())
        }
    }
}

impl Dialect {
    pub(crate) const fn bit(self) -> u8 {
        match self {
            Dialect::Base => 1,
            Dialect::DotU => 2,
            Dialect::DotL => 4,
        }
    }
}
