//! The few fields a forwarding hot path needs, read straight from a frame without decoding it:
//! a Tread's or Twrite's fid, offset and count, an Rread's count, a request's first fid. Each
//! peek answers only for a frame of its type whose length agrees with its fixed layout (the
//! message table's: `tests/peek.rs` checks every peek against the decoder), and `None` for
//! anything else, which the caller then leaves to the decoder.

use crate::message::{MsgType, HEADER_LEN};

/// A Tread is all fixed fields: size[4] type[1] tag[2] fid[4] offset[8] count[4].
pub const TREAD_LEN: usize = HEADER_LEN + 16;
/// Twrite's fixed part: size[4] type[1] tag[2] fid[4] offset[8] count[4], then the data.
pub const TWRITE_HEADER: usize = HEADER_LEN + 16;
/// Rread's fixed part: size[4] type[1] tag[2] count[4], then the data.
pub const RREAD_HEADER: usize = HEADER_LEN + 4;
/// An Rwrite: size[4] type[1] tag[2] count[4].
pub const RWRITE_LEN: usize = HEADER_LEN + 4;

/// The fields of a Tread or a Twrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Io {
    pub fid: u32,
    pub offset: u64,
    /// Bytes asked for (Tread) or carried (Twrite).
    pub count: u32,
}

fn u32_at(frame: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(frame.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(frame: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(frame.get(at..at + 8)?.try_into().ok()?))
}

fn io(frame: &[u8]) -> Option<Io> {
    Some(Io {
        fid: u32_at(frame, HEADER_LEN)?,
        offset: u64_at(frame, HEADER_LEN + 4)?,
        count: u32_at(frame, HEADER_LEN + 12)?,
    })
}

/// A Tread's fields, if `frame` is exactly a Tread.
pub fn tread(frame: &[u8]) -> Option<Io> {
    (frame.len() == TREAD_LEN && frame[4] == MsgType::Tread as u8)
        .then(|| io(frame))
        .flatten()
}

/// A Twrite's fields, if `frame` is a Twrite whose count is the length of its data.
pub fn twrite(frame: &[u8]) -> Option<Io> {
    if frame.len() < TWRITE_HEADER || frame[4] != MsgType::Twrite as u8 {
        return None;
    }
    io(frame).filter(|w| w.count as usize == frame.len() - TWRITE_HEADER)
}

/// An Rread's count, if `frame` is an Rread whose count is the length of its data.
pub fn rread(frame: &[u8]) -> Option<u32> {
    if frame.len() < RREAD_HEADER || frame[4] != MsgType::Rread as u8 {
        return None;
    }
    u32_at(frame, HEADER_LEN).filter(|&n| n as usize == frame.len() - RREAD_HEADER)
}

/// An Rwrite's count, if `frame` is exactly an Rwrite.
pub fn rwrite(frame: &[u8]) -> Option<u32> {
    (frame.len() == RWRITE_LEN && frame[4] == MsgType::Rwrite as u8)
        .then(|| u32_at(frame, HEADER_LEN))
        .flatten()
}

/// The fid a request's body starts with — its first field, for every request whose first
/// field is a fid (Tread, Twrite, Tclunk, Tremove, Twalk's source ...); `None` for a frame too
/// short to hold one. The caller knows the type.
pub fn first_fid(frame: &[u8]) -> Option<u32> {
    u32_at(frame, HEADER_LEN)
}
