//! Drives one client connection on futures-io: the session loop every async runtime shares
//! ([`runtime_std::poll_loop`]), with futures-io streams, async-io's timer and dialing. One task
//! owns the client's halves and every link's.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_io::Timer;
use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};
use persist_core::drive::READ_CHUNK;
pub use runtime_std::poll_loop::DIAL_TIMEOUT;
use runtime_std::poll_loop::{Dialing, Runtime, SessionLoop};
use tracing::info;

use crate::net::{self, Reader, Writer};
use crate::{Addr, ProxyConfig, Shutdown};

/// The smallest read: the part of a read buffer zeroed before each read adapts between this
/// and [`READ_CHUNK`] (futures-io reads into initialized memory, and zeroing 64 KiB for every
/// poll of a stream that has a few bytes, or none, would cost more than the read).
const MIN_READ: usize = 4 * 1024;
/// How long a session that ends may spend closing the client's stream (flushing stdout, say).
const CLOSE_GRACE: Duration = Duration::from_millis(300);

/// A stream read with a read size that follows its traffic.
pub struct SizedReader(Reader, ReadSize);

/// futures-io's part of the session loop (async-io timers; any executor).
pub struct FuturesIo;

impl Runtime for FuturesIo {
    type Reader = SizedReader;
    type Writer = Writer;
    type Timer = Timer;

    fn poll_read(
        r: &mut SizedReader,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        poll_read_into(&mut r.0, buf, &mut r.1, cx)
    }

    fn poll_write_vectored(
        w: &mut Writer,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(w).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(w: &mut Writer, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(w).poll_flush(cx)
    }

    fn timer() -> Timer {
        Timer::never()
    }

    fn set_timer(t: &mut Timer, at: std::time::Instant) {
        t.set_at(at);
    }

    fn poll_timer(t: &mut Timer, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(t).poll(cx).map(|_| ())
    }

    fn dial(addr: &Addr) -> Dialing<Self> {
        let addr = addr.clone();
        Box::pin(async move {
            let timeout = async {
                Timer::after(DIAL_TIMEOUT).await;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {DIAL_TIMEOUT:?}"),
                ))
            };
            let (r, w) = futures_lite::future::or(net::dial(&addr), timeout).await?;
            Ok((SizedReader(r, ReadSize::default()), w))
        })
    }
}

/// Serve one client until it leaves, is expelled, or `shutdown` is called. `client` names it
/// in the log; `admitted` is its place within the proxy's limits
/// ([`runtime_std::Limits::admit`]) and numbers it among the proxy's sessions (its random
/// choices derive from that, through [`persist_core::drive::session_seed`]).
pub async fn serve_client(
    client_r: Reader,
    client_w: Writer,
    client: String,
    cfg: ProxyConfig,
    admitted: runtime_std::Admitted,
    shutdown: Shutdown,
) {
    let client_r = SizedReader(client_r, ReadSize::default());
    let mut session = SessionLoop::<FuturesIo>::new(client_r, client_w, client, &cfg, admitted);
    if session.run_until(shutdown.wait()).await {
        info!("[{}] shutting down", session.client());
    }
    // The links go first; the client's stream is closed (flushed) within a bound, so neither a
    // stuck stdout nor anything else keeps a finished session alive.
    let mut client_w = session.into_client_writer();
    let close = async {
        let _ = client_w.close().await;
    };
    futures_lite::future::or(close, async {
        Timer::after(CLOSE_GRACE).await;
    })
    .await;
}

fn poll_read_into(
    r: &mut Reader,
    buf: &mut BytesMut,
    size: &mut ReadSize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let len = buf.len();
    // Within the room the drive made (the rest of a frame whose size is known, or a chunk):
    // growing the buffer past it would move a large frame into one twice its size, all of
    // which the frame then keeps alive.
    let room = buf.capacity() - len;
    let want = match room {
        0 => size.0,
        room => size.0.min(room),
    };
    buf.resize(len + want, 0);
    let res = Pin::new(r).poll_read(cx, &mut buf[len..]);
    let n = match &res {
        Poll::Ready(Ok(n)) => (*n).min(want),
        _ => 0,
    };
    buf.truncate(len + n);
    if res.is_ready() {
        size.update(n);
    }
    res.map_ok(|_| n)
}

/// How much one stream's next read takes: doubled after a read that filled it, halved after
/// one that used a quarter or less, between [`MIN_READ`] and [`READ_CHUNK`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ReadSize(usize);

impl Default for ReadSize {
    fn default() -> ReadSize {
        ReadSize(MIN_READ)
    }
}

impl ReadSize {
    fn update(&mut self, read: usize) {
        if read >= self.0 {
            self.0 = (self.0 * 2).min(READ_CHUNK);
        } else if read <= self.0 / 4 {
            self.0 = (self.0 / 2).max(MIN_READ);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_size_follows_the_traffic() {
        let mut size = ReadSize::default();
        assert_eq!(size.0, MIN_READ);
        // Bulk: full reads double it up to READ_CHUNK.
        for _ in 0..10 {
            let full = size.0;
            size.update(full);
        }
        assert_eq!(size.0, READ_CHUNK);
        // Partly filled reads keep it.
        size.update(READ_CHUNK / 2);
        assert_eq!(size.0, READ_CHUNK);
        // Small frames: it shrinks back, never below MIN_READ.
        for _ in 0..10 {
            size.update(100);
        }
        assert_eq!(size.0, MIN_READ);
        size.update(0);
        assert_eq!(size.0, MIN_READ);
    }

    #[test]
    fn reads_go_straight_into_the_buffer() {
        let mut r: Reader = Box::new(futures_lite::io::Cursor::new(vec![7u8; 10_000]));
        let mut buf = BytesMut::from(&b"head"[..]);
        let mut size = ReadSize::default();
        let mut read = || {
            futures_lite::future::block_on(std::future::poll_fn(|cx| {
                poll_read_into(&mut r, &mut buf, &mut size, cx)
            }))
            .unwrap()
        };
        assert_eq!(read(), MIN_READ);
        // The full read doubled the next one; the rest of the data fits in it.
        assert_eq!(read(), 10_000 - MIN_READ);
        // The end of the stream reads 0 and leaves the buffer as it was.
        assert_eq!(read(), 0);
        assert_eq!(buf.len(), 4 + 10_000);
        assert_eq!(&buf[..4], b"head");
        assert!(buf[4..].iter().all(|&b| b == 7));
    }
}
