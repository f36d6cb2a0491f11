//! Framing: cutting a byte stream into whole 9P frames, sans-IO.

use bytes::{Bytes, BytesMut};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::message::HEADER_LEN;

/// Turns a byte stream into frames (`size[4]` prefixed, size counting itself).
///
/// Two ways to feed it:
/// - [`push`](FrameDecoder::push) copies in only as many bytes as complete the next frame and
///   says how many it took, so the decoder never holds more than one frame;
/// - [`read_buf`](FrameDecoder::read_buf) lends its buffer to read into directly, with no copy;
///   frames returned by [`next_frame`](FrameDecoder::next_frame) then share that buffer.
///
/// A frame whose size field is below 7 or above the maximum is rejected as soon as its four size
/// bytes arrive, before any of its body is buffered. After an error the stream is unusable and
/// the link should be closed.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_size: u32,
}

/// Why a stream could not be framed.
pub type FrameError = DecodeError;

impl FrameDecoder {
    /// A decoder accepting frames of up to `max_size` bytes (the msize).
    pub fn new(max_size: u32) -> FrameDecoder {
        FrameDecoder {
            buf: BytesMut::new(),
            max_size,
        }
    }

    pub fn max_size(&self) -> u32 {
        self.max_size
    }

    /// Change the limit, e.g. once Rversion has settled the msize.
    pub fn set_max_size(&mut self, max_size: u32) {
        self.max_size = max_size;
    }

    /// Bytes buffered and not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The size of the frame being assembled, once its header is here and valid.
    fn pending_size(&self) -> Result<Option<usize>, DecodeError> {
        let Some(head) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let size = u32::from_le_bytes(*head);
        let err = |kind| DecodeError {
            msg_type: None,
            offset: 0,
            kind,
        };
        if (size as usize) < HEADER_LEN {
            return Err(err(DecodeErrorKind::FrameTooShort { len: size as usize }));
        }
        if size > self.max_size {
            return Err(err(DecodeErrorKind::FrameTooLarge {
                size,
                max: self.max_size,
            }));
        }
        Ok(Some(size as usize))
    }

    /// How many more bytes complete the next frame (or its size field); 0 when a whole frame is
    /// waiting or the stream is in error.
    pub fn wanted(&self) -> usize {
        match self.pending_size() {
            Ok(None) => 4 - self.buf.len(),
            Ok(Some(size)) => size.saturating_sub(self.buf.len()),
            Err(_) => 0,
        }
    }

    /// Copy in the prefix of `input` that completes the next frame; returns how many bytes were
    /// taken. Call [`next_frame`](Self::next_frame) after each push, then push the rest.
    pub fn push(&mut self, input: &[u8]) -> usize {
        let mut taken = 0;
        // At most two steps: finish the size field, then the rest of that frame.
        for _ in 0..2 {
            let n = self.wanted().min(input.len() - taken);
            self.buf.extend_from_slice(&input[taken..taken + n]);
            taken += n;
        }
        taken
    }

    /// The buffer to read into directly: reserve, read, and the bytes become input. Whatever is
    /// read this way is buffered until taken out as frames.
    pub fn read_buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// [`read_buf`](Self::read_buf) with room made to read into: for the rest of the frame
    /// being read once its size is known, else `chunk` bytes. A frame's room is made in one
    /// allocation when its size arrives; making a chunk's room on top of it when little of the
    /// frame is missing would copy all that has arrived of it into a buffer twice its size.
    pub fn read_buf_with_room(&mut self, chunk: usize) -> &mut BytesMut {
        match self.pending_size() {
            Ok(Some(size)) if self.buf.len() < size => self.buf.reserve(size - self.buf.len()),
            _ => self.buf.reserve(chunk),
        }
        &mut self.buf
    }

    /// The next whole frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some(size) = self.pending_size()? else {
            return Ok(None);
        };
        if self.buf.len() < size {
            // Make room for the rest of this frame in one allocation.
            self.buf.reserve(size - self.buf.len());
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(size).freeze()))
    }
}
