//! A small async 9P client on p9-core's sans-IO [`p9_core::client::Client`]: for the demo and
//! the integration tests.

use std::io;

use bytes::Bytes;
use p9_core::client::{Client, Reply};
use p9_core::{Dialect, FrameDecoder, Msg, NOTAG};

use crate::addr::Addr;
use crate::net::write_frames;
use crate::net::{self, Reader, Writer};

pub struct NineP {
    r: Reader,
    w: Writer,
    pub client: Client,
    decoder: FrameDecoder,
}

fn other<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

impl NineP {
    /// Connect to `addr` and negotiate `dialect` with `msize`.
    pub async fn connect(addr: &Addr, msize: u32, dialect: Dialect) -> io::Result<NineP> {
        let c = NineP::connect_offering(addr, msize, dialect).await?;
        if c.dialect() != dialect {
            return Err(other(format!(
                "server answered Tversion with {}",
                c.dialect().version_string()
            )));
        }
        Ok(c)
    }

    /// Connect to `addr` offering `dialect` with `msize`, and speak whichever dialect the
    /// server answers (a 9P2000 server answers an offer of 9P2000.L with 9P2000).
    pub async fn connect_offering(addr: &Addr, msize: u32, dialect: Dialect) -> io::Result<NineP> {
        let (r, w) = net::dial(addr).await?;
        let mut c = NineP {
            r,
            w,
            client: Client::new(msize, dialect),
            decoder: FrameDecoder::new(msize),
        };
        c.flush().await?;
        let reply = c.wait(NOTAG).await?;
        if c.client.dialect().is_none() {
            return Err(other(format!(
                "server answered Tversion with {:?}",
                reply.msg
            )));
        }
        c.decoder.set_max_size(c.client.msize());
        Ok(c)
    }

    /// The dialect the server chose.
    pub fn dialect(&self) -> Dialect {
        self.client.dialect().expect("negotiated when connected")
    }

    /// Most bytes of data one Tread or Twrite can move at the negotiated msize.
    pub fn iounit(&self) -> u32 {
        self.client.iounit()
    }

    async fn flush(&mut self) -> io::Result<()> {
        let mut frames: Vec<Bytes> = std::iter::from_fn(|| self.client.poll_transmit()).collect();
        write_frames(&mut self.w, &mut frames).await
    }

    /// Read until the reply to `tag` arrives (other replies are dropped: the client here keeps
    /// one request in flight).
    async fn wait(&mut self, tag: u16) -> io::Result<Reply> {
        loop {
            while let Some(frame) = self.decoder.next_frame().map_err(other)? {
                let reply = self.client.handle_frame(&frame).map_err(other)?;
                if reply.tag == tag {
                    return Ok(reply);
                }
            }
            if net::read_some(&mut self.r, &mut self.decoder).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Send several requests at once (all in flight together); their tags, in order.
    pub async fn send(&mut self, msgs: Vec<Msg>) -> io::Result<Vec<u16>> {
        let tags = msgs
            .into_iter()
            .map(|m| self.client.send(m).map_err(other))
            .collect::<io::Result<Vec<u16>>>()?;
        self.flush().await?;
        Ok(tags)
    }

    /// Wait for the replies to `tags` (in whatever order they come); returned in the tags'
    /// order.
    pub async fn collect(&mut self, tags: &[u16]) -> io::Result<Vec<Reply>> {
        let mut got: Vec<Option<Reply>> = tags.iter().map(|_| None).collect();
        while got.iter().any(Option::is_none) {
            while let Some(frame) = self.decoder.next_frame().map_err(other)? {
                let reply = self.client.handle_frame(&frame).map_err(other)?;
                if let Some(i) = tags.iter().position(|&t| t == reply.tag) {
                    got[i] = Some(reply);
                }
            }
            if got.iter().all(Option::is_some) {
                break;
            }
            if net::read_some(&mut self.r, &mut self.decoder).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    /// Send one request and wait for its reply.
    pub async fn call(&mut self, msg: impl Into<Msg>) -> io::Result<Reply> {
        let tag = self.client.send(msg).map_err(other)?;
        self.flush().await?;
        self.wait(tag).await
    }
}
