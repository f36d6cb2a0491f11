//! Connections: dialing a backend (with TCP keepalive and TCP_USER_TIMEOUT, so a dead server
//! is noticed even when no packet says so), listening for clients (unix sockets created 0600,
//! TCP on loopback unless asked otherwise, or stdio), and the boxed halves a driver uses.

use std::io::{self, IoSlice};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::addr::Addr;

pub type Reader = Box<dyn AsyncRead + Unpin + Send>;
pub type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// Room made in a read buffer before each read (but one finishing a frame whose size is known).
const READ_CHUNK: usize = 64 * 1024;

/// Read what has arrived straight into `decoder`'s buffer (no copy); 0 means end of stream.
pub async fn read_some(r: &mut Reader, decoder: &mut p9_core::FrameDecoder) -> io::Result<usize> {
    let buf = decoder.read_buf_with_room(READ_CHUNK);
    tokio::io::AsyncReadExt::read_buf(r, buf).await
}

/// Write all `frames` with as few system calls as the kernel allows (for the simple servers and
/// clients beside the proxy; the proxy's sessions write through their drive).
pub async fn write_frames(w: &mut Writer, frames: &mut Vec<Bytes>) -> io::Result<()> {
    let (mut i, mut off) = (0, 0);
    while i < frames.len() {
        let slices: Vec<IoSlice<'_>> = frames[i..]
            .iter()
            .take(64)
            .enumerate()
            .map(|(k, f)| IoSlice::new(if k == 0 { &f[off..] } else { &f[..] }))
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let left = frames[i].len() - off;
            if n >= left {
                n -= left;
                i += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
    frames.clear();
    w.flush().await
}

pub use runtime_std::sock::{KEEPALIVE, USER_TIMEOUT};

/// Connect to a backend.
pub async fn dial(addr: &Addr) -> io::Result<(Reader, Writer)> {
    match addr {
        Addr::Tcp(a) => {
            let stream = TcpStream::connect(a).await?;
            runtime_std::sock::tune_upstream(&stream)?;
            let (r, w) = stream.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        Addr::Unix(p) => {
            let (r, w) = UnixStream::connect(p).await?.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        Addr::Stdio => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot dial stdio",
        )),
    }
}

/// A listening socket systemd passed to this process.
pub enum Passed {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// The listening sockets systemd passed to this process (socket activation: `LISTEN_FDS`,
/// `LISTEN_PID`), in the order the socket unit lists them; none when it passed nothing. TCP
/// and unix stream sockets are taken; anything else is an error naming the descriptor.
///
/// Call it before any other thread runs: taking them clears `LISTEN_*` from the environment
/// (so children do not inherit them), and changing the environment is unsound while another
/// thread may read it.
pub fn take_passed() -> io::Result<Vec<Passed>> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut passed = Vec::with_capacity(fds.len());
    for i in 0..fds.len() {
        if let Ok(Some(l)) = fds.take_tcp_listener(i) {
            passed.push(Passed::Tcp(l));
        } else if let Some(l) = fds.take_unix_listener(i)? {
            passed.push(Passed::Unix(l));
        }
    }
    Ok(passed)
}

/// A bound listening endpoint.
pub enum Listener {
    Tcp(TcpListener),
    /// A unix socket and its path; the file is removed on drop only if this process made it
    /// (`true`), not when systemd passed the socket.
    Unix(UnixListener, std::path::PathBuf, bool),
    /// Serves exactly one client: this process's standard input and output.
    Stdio(Option<(Reader, Writer)>),
}

impl Listener {
    /// Bind `addr`. A unix socket is created with mode 0600 (a stale socket file is replaced).
    pub async fn bind(addr: &Addr) -> io::Result<Listener> {
        match addr {
            Addr::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a).await?)),
            Addr::Unix(p) => {
                let l = runtime_std::sock::bind_unix_private(p)?;
                l.set_nonblocking(true)?;
                Ok(Listener::Unix(UnixListener::from_std(l)?, p.clone(), true))
            }
            Addr::Stdio => Ok(Listener::Stdio(Some((
                Box::new(tokio::io::stdin()),
                Box::new(tokio::io::stdout()),
            )))),
        }
    }

    /// A listener on a socket systemd passed (see [`take_passed`]).
    pub fn from_passed(passed: Passed) -> io::Result<Listener> {
        match passed {
            Passed::Tcp(l) => {
                l.set_nonblocking(true)?;
                Ok(Listener::Tcp(TcpListener::from_std(l)?))
            }
            Passed::Unix(l) => {
                l.set_nonblocking(true)?;
                let path = l
                    .local_addr()?
                    .as_pathname()
                    .map(|p| p.to_path_buf())
                    .unwrap_or_default();
                Ok(Listener::Unix(UnixListener::from_std(l)?, path, false))
            }
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<Addr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok().map(|a| Addr::Tcp(a.to_string())),
            Listener::Unix(_, p, _) => Some(Addr::Unix(p.clone())),
            Listener::Stdio(_) => Some(Addr::Stdio),
        }
    }

    /// The next client: its halves and a name for logs. `None` when no more will come (stdio).
    pub async fn accept(&mut self) -> io::Result<Option<(Reader, Writer, String)>> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                s.set_nodelay(true)?;
                let (r, w) = s.into_split();
                Ok(Some((Box::new(r), Box::new(w), peer.to_string())))
            }
            Listener::Unix(l, p, _) => {
                let (s, _) = l.accept().await?;
                let (r, w) = s.into_split();
                Ok(Some((
                    Box::new(r),
                    Box::new(w),
                    format!("unix!{}", p.display()),
                )))
            }
            Listener::Stdio(io) => Ok(io.take().map(|(r, w)| (r, w, "stdio".to_string()))),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p, true) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}
