//! Blocking connections: the listener clients arrive on, the streams a session moves bytes
//! over, and dialing the backend.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown as How, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::addr::Addr;

/// Longest a single dial may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one write waits for a peer that is not reading; the session then looks at its other
/// inputs (a shutdown among them) and tries again.
pub const WRITE_TIMEOUT: Duration = Duration::from_millis(200);

/// One end of a connection, shared by the thread reading it and the session writing it.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// Standard input or output.
    Pipe(File),
}

impl Stream {
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
            Stream::Pipe(f) => (&*f).read(buf),
        }
    }

    pub(crate) fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write_vectored(bufs),
            Stream::Unix(s) => (&*s).write_vectored(bufs),
            Stream::Pipe(f) => (&*f).write_vectored(bufs),
        }
    }

    /// Whether [`close`](Self::close) wakes a thread blocked reading it (a pipe cannot be).
    pub(crate) fn is_socket(&self) -> bool {
        !matches!(self, Stream::Pipe(_))
    }

    /// End the connection both ways: the peer sees the end, a blocked read returns.
    pub(crate) fn close(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(How::Both),
            Stream::Unix(s) => s.shutdown(How::Both),
            Stream::Pipe(_) => Ok(()),
        };
    }
}

/// A client that connected: how to read it, how to write it, and a name for the log.
pub(crate) struct Accepted {
    pub reader: Stream,
    /// `None` when the reader's stream is also the writer's (a socket).
    pub writer: Option<Stream>,
    pub name: String,
}

/// A bound listening endpoint: TCP, a unix socket (removed when the listener is dropped), or
/// standard input and output (exactly one client).
#[derive(Debug)]
pub struct Listener {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
    /// Whether the one client was handed out.
    Stdio(Mutex<bool>),
}

impl Listener {
    /// Bind `addr`. A unix socket is created with mode 0600 (a stale socket file is replaced).
    pub fn bind(addr: &Addr) -> io::Result<Listener> {
        let kind = match addr {
            Addr::Tcp(a) => Kind::Tcp(TcpListener::bind(a)?),
            Addr::Unix(p) => Kind::Unix(crate::sock::bind_unix_private(p)?, p.clone()),
            Addr::Stdio => Kind::Stdio(Mutex::new(false)),
        };
        Ok(Listener { kind })
    }

    /// The address actually bound (with port 0, the port the system chose).
    pub fn local_addr(&self) -> Option<Addr> {
        match &self.kind {
            Kind::Tcp(l) => l.local_addr().ok().map(|a| Addr::Tcp(a.to_string())),
            Kind::Unix(_, p) => Some(Addr::Unix(p.clone())),
            Kind::Stdio(_) => Some(Addr::Stdio),
        }
    }

    /// Wait for the next client; `None` when no more will come (stdio, after its one).
    pub(crate) fn accept(&self) -> io::Result<Option<Accepted>> {
        let (reader, name) = match &self.kind {
            Kind::Tcp(l) => {
                let (s, peer) = l.accept()?;
                // These fail only for a connection already gone, which its session will see.
                let _ = s.set_nodelay(true);
                let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
                (Stream::Tcp(s), peer.to_string())
            }
            Kind::Unix(l, p) => {
                let (s, _) = l.accept()?;
                let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
                (Stream::Unix(s), format!("unix!{}", p.display()))
            }
            Kind::Stdio(taken) => {
                let mut taken = taken.lock().unwrap_or_else(|e| e.into_inner());
                if *taken {
                    return Ok(None);
                }
                *taken = true;
                // Own descriptors, read and written without std's buffers.
                let stdin = File::from(io::stdin().as_fd().try_clone_to_owned()?);
                let stdout = File::from(io::stdout().as_fd().try_clone_to_owned()?);
                return Ok(Some(Accepted {
                    reader: Stream::Pipe(stdin),
                    writer: Some(Stream::Pipe(stdout)),
                    name: "stdio".to_string(),
                }));
            }
        };
        Ok(Some(Accepted {
            reader,
            writer: None,
            name,
        }))
    }

    /// Make a blocked [`accept`](Self::accept) return (an error) now and every later one fail
    /// at once: on Linux, shutting a listening socket down for reading does both.
    pub(crate) fn wake(&self) {
        let _ = match &self.kind {
            Kind::Tcp(l) => socket2::SockRef::from(l).shutdown(How::Read),
            Kind::Unix(l, _) => socket2::SockRef::from(l).shutdown(How::Read),
            Kind::Stdio(_) => Ok(()),
        };
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Kind::Unix(_, p) = &self.kind {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Connect to the backend (blocking for at most [`DIAL_TIMEOUT`] per TCP address), tuned as an
/// upstream link.
pub(crate) fn dial(addr: &Addr) -> io::Result<Stream> {
    match addr {
        Addr::Tcp(a) => {
            let deadline = Instant::now() + DIAL_TIMEOUT;
            let mut last = None;
            for sa in a.to_socket_addrs()? {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match TcpStream::connect_timeout(&sa, left) {
                    Ok(s) => {
                        crate::sock::tune_upstream(&s)?;
                        s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                        return Ok(Stream::Tcp(s));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{a}: no address to dial"))
            }))
        }
        Addr::Unix(p) => {
            let s = UnixStream::connect(p)?;
            s.set_write_timeout(Some(WRITE_TIMEOUT))?;
            Ok(Stream::Unix(s))
        }
        Addr::Stdio => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot dial stdio",
        )),
    }
}
