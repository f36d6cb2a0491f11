//! Decode and encode errors: what went wrong, in which message, at which byte.

use core::fmt;

use crate::message::MsgType;
use crate::Dialect;

/// A frame or field that could not be decoded. Every decode in this crate returns one of these
/// instead of panicking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// The message type byte, when the frame got far enough to have one.
    pub msg_type: Option<u8>,
    /// Byte offset within the frame (or directory data) where the problem was found.
    pub offset: usize,
    /// What was wrong.
    pub kind: DecodeErrorKind,
}

/// The ways a frame can be malformed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// Fewer than the 7 bytes of `size[4] type[1] tag[2]`.
    FrameTooShort { len: usize },
    /// The frame's `size` field exceeds the negotiated maximum message size.
    FrameTooLarge { size: u32, max: u32 },
    /// The frame's `size` field disagrees with the bytes given as the frame.
    SizeMismatch { declared: u32, actual: usize },
    /// A type number that is not a message of this dialect.
    UnknownType { dialect: Dialect },
    /// A field (or a count or length) runs past the end of the frame.
    Truncated { needed: usize, available: usize },
    /// Bytes left over after the last field of the message.
    TrailingBytes { extra: usize },
    /// A Twalk with more than 16 names or an Rwalk with more than 16 qids.
    TooManyWalkElements { count: u16 },
    /// A stat record whose size field disagrees with its contents.
    StatSizeMismatch { declared: u16, actual: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ty) = self.msg_type {
            match MsgType::from_u8(ty) {
                Some(t) => write!(f, "{}: ", t.name())?,
                None => write!(f, "message type {ty}: ")?,
            }
        }
        match &self.kind {
            DecodeErrorKind::FrameTooShort { len } => {
                write!(f, "frame of {len} bytes is shorter than the 7-byte header")
            }
            DecodeErrorKind::FrameTooLarge { size, max } => {
                write!(
                    f,
                    "frame of {size} bytes exceeds the maximum message size {max}"
                )
            }
            DecodeErrorKind::SizeMismatch { declared, actual } => {
                write!(
                    f,
                    "size field says {declared} bytes but the frame has {actual}"
                )
            }
            DecodeErrorKind::UnknownType { dialect } => {
                write!(f, "not a message of {}", dialect.version_string())
            }
            DecodeErrorKind::Truncated { needed, available } => write!(
                f,
                "field at byte {} needs {needed} bytes but only {available} remain",
                self.offset
            ),
            DecodeErrorKind::TrailingBytes { extra } => {
                write!(
                    f,
                    "{extra} unexpected bytes after the last field at byte {}",
                    self.offset
                )
            }
            DecodeErrorKind::TooManyWalkElements { count } => {
                write!(f, "{count} walk elements, more than the 16 allowed")
            }
            DecodeErrorKind::StatSizeMismatch { declared, actual } => write!(
                f,
                "stat at byte {} declares {declared} bytes but its fields take {actual}",
                self.offset
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

/// A message value that cannot be put on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// A string longer than 65535 bytes.
    StringTooLong { len: usize },
    /// A data payload or whole frame longer than 4 GiB - 1.
    FrameTooLarge { len: usize },
    /// More than 16 walk names or qids.
    TooManyWalkElements { count: usize },
    /// A stat record longer than 65535 bytes.
    StatTooLong { len: usize },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::StringTooLong { len } => {
                write!(f, "string of {len} bytes exceeds the 65535-byte limit")
            }
            EncodeError::FrameTooLarge { len } => {
                write!(f, "message of {len} bytes does not fit a 32-bit size field")
            }
            EncodeError::TooManyWalkElements { count } => {
                write!(f, "{count} walk elements, more than the 16 allowed")
            }
            EncodeError::StatTooLong { len } => {
                write!(f, "stat record of {len} bytes exceeds the 65535-byte limit")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EncodeError {}
