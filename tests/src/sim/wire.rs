//! One direction of a simulated connection as bytes: chunks written at one time arrive at a
//! later one, in order (a TCP stream does not reorder), and are read in pieces of any size.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

#[derive(Default)]
pub struct Wire {
    /// (due, bytes), due never decreasing.
    chunks: VecDeque<(u64, Bytes)>,
}

impl Wire {
    /// Put `bytes` on the wire, arriving at `due` (or with the bytes before them, if later).
    pub fn send(&mut self, due: u64, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let due = self.chunks.back().map_or(due, |(d, _)| due.max(*d));
        self.chunks.push_back((due, bytes));
    }

    /// Up to `max` bytes of what has arrived by `now`, across as many writes as it spans (one
    /// read; call again for more).
    pub fn take(&mut self, now: u64, max: usize) -> Option<Bytes> {
        let mut out = BytesMut::new();
        while out.len() < max {
            let Some((due, first)) = self.chunks.front_mut() else {
                break;
            };
            if *due > now {
                break;
            }
            let want = max - out.len();
            if first.len() <= want {
                out.extend_from_slice(first);
                self.chunks.pop_front();
            } else {
                out.extend_from_slice(&first.split_to(want));
            }
        }
        (!out.is_empty()).then(|| out.freeze())
    }

    /// When the next bytes arrive, if any are on their way.
    pub fn next_due(&self) -> Option<u64> {
        self.chunks.front().map(|(d, _)| *d)
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// Copy the first `n` bytes of a sequence of slices into one buffer (what a partial vectored
/// write puts on the wire).
pub fn gather<'a>(chunks: impl Iterator<Item = &'a [u8]>, n: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(n);
    for c in chunks {
        let want = n - out.len();
        if want == 0 {
            break;
        }
        out.extend_from_slice(&c[..c.len().min(want)]);
    }
    out.freeze()
}

/// Bytes not yet framed on the receiving side: `push` them, then take whole frames.
#[derive(Default)]
pub struct Framer {
    buf: BytesMut,
}

impl Framer {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame (size[4] prefix, as 9P frames); a frame with a size below 7 is an
    /// error (the sim's peers never send one).
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, String> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let size = (&self.buf[..4]).get_u32_le() as usize;
        if size < 7 {
            return Err(format!("a frame of size {size} on the wire"));
        }
        if self.buf.len() < size {
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(size).freeze()))
    }

    /// Whether part of a frame is buffered.
    pub fn partial(&self) -> bool {
        !self.buf.is_empty()
    }
}
