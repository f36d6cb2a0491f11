//! Connections on async-io's reactor: dialing a backend (TCP links tuned by
//! [`runtime_std::sock::tune_upstream`], so a dead server is noticed even when no packet says
//! so), listening for clients (unix sockets created 0600 by
//! [`runtime_std::sock::bind_unix_private`], TCP, or this process's stdin/stdout through
//! [`blocking::Unblock`]), and the boxed futures-io halves a session uses.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use async_io::Async;
use async_net::unix::{UnixListener, UnixStream};
use async_net::{TcpListener, TcpStream};
use blocking::Unblock;
use futures_lite::{AsyncRead, AsyncWrite};

use crate::Addr;

/// The half of a connection that is read.
pub type Reader = Box<dyn AsyncRead + Unpin + Send>;
/// The half of a connection that is written.
pub type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// Bytes the stdout writer buffers between the proxy and the blocking thread that writes them.
const STDOUT_PIPE: usize = 256 * 1024;

/// Connect to a backend (no time limit here: the session adds its own).
pub async fn dial(addr: &Addr) -> io::Result<(Reader, Writer)> {
    match addr {
        Addr::Tcp(a) => {
            let stream = TcpStream::connect(a.as_str()).await?;
            runtime_std::sock::tune_upstream(&stream)?;
            Ok((Box::new(stream.clone()), Box::new(stream)))
        }
        Addr::Unix(p) => {
            let stream = UnixStream::connect(p).await?;
            Ok((Box::new(stream.clone()), Box::new(stream)))
        }
        Addr::Stdio => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot dial stdio",
        )),
    }
}

enum Kind {
    Tcp(TcpListener),
    /// The socket file is removed when the listener is dropped.
    Unix(UnixListener, PathBuf),
    /// Serves exactly one client: this process's standard input and output.
    Stdio(Option<(Reader, Writer)>),
}

/// A bound listening endpoint: TCP, a unix socket, or stdin/stdout (one client).
pub struct Listener {
    kind: Kind,
}

impl Listener {
    /// Bind `addr`. A unix socket is created with mode 0600 (a stale socket file is replaced,
    /// never any other kind of file).
    pub async fn bind(addr: &Addr) -> io::Result<Listener> {
        let kind = match addr {
            Addr::Tcp(a) => Kind::Tcp(TcpListener::bind(a.as_str()).await?),
            Addr::Unix(p) => {
                // Only a stale socket may be replaced: refuse a path held by anything else
                // before binding (a rename into place would replace a regular file).
                if std::fs::symlink_metadata(p).is_ok_and(|m| !m.file_type().is_socket()) {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists and is not a socket", p.display()),
                    ));
                }
                let l = runtime_std::sock::bind_unix_private(p)?;
                match Async::new(l) {
                    Ok(l) => Kind::Unix(UnixListener::from(l), p.clone()),
                    Err(e) => {
                        let _ = std::fs::remove_file(p);
                        return Err(e);
                    }
                }
            }
            Addr::Stdio => Kind::Stdio(Some((
                Box::new(Unblock::new(std::io::stdin())),
                Box::new(Unblock::with_capacity(STDOUT_PIPE, std::io::stdout())),
            ))),
        };
        Ok(Listener { kind })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<Addr> {
        match &self.kind {
            Kind::Tcp(l) => l.local_addr().ok().map(|a| Addr::Tcp(a.to_string())),
            Kind::Unix(_, p) => Some(Addr::Unix(p.clone())),
            Kind::Stdio(_) => Some(Addr::Stdio),
        }
    }

    /// The next client: its halves and a name for logs. `None` when no more will come (stdio,
    /// after its one client). Cancelling the future loses no connection.
    pub async fn accept(&mut self) -> io::Result<Option<(Reader, Writer, String)>> {
        match &mut self.kind {
            Kind::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                s.set_nodelay(true)?;
                Ok(Some((Box::new(s.clone()), Box::new(s), peer.to_string())))
            }
            Kind::Unix(l, p) => {
                let (s, _) = l.accept().await?;
                Ok(Some((
                    Box::new(s.clone()),
                    Box::new(s),
                    format!("unix!{}", p.display()),
                )))
            }
            Kind::Stdio(io) => Ok(io.take().map(|(r, w)| (r, w, "stdio".to_string()))),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Kind::Unix(_, p) = &self.kind {
            let _ = std::fs::remove_file(p);
        }
    }
}
