//! Connections: dialing a backend (with TCP keepalive and TCP_USER_TIMEOUT, so a dead server
//! is noticed even when no packet says so), listening for clients (unix sockets created 0600,
//! TCP on loopback unless asked otherwise, or stdio), and the boxed halves a driver uses.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::addr::Addr;

pub type Reader = Box<dyn AsyncRead + Unpin + Send>;
pub type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// Room made in a read buffer before each read.
const READ_CHUNK: usize = 64 * 1024;

/// Read what has arrived straight into `decoder`'s buffer (no copy); 0 means end of stream.
pub async fn read_some(r: &mut Reader, decoder: &mut p9_core::FrameDecoder) -> io::Result<usize> {
    let buf = decoder.read_buf();
    buf.reserve(READ_CHUNK);
    tokio::io::AsyncReadExt::read_buf(r, buf).await
}

/// How long an unacknowledged upstream send may wait before the kernel declares the link dead.
pub const USER_TIMEOUT: Duration = Duration::from_secs(20);
/// Keepalive idle time and probe interval on upstream links.
pub const KEEPALIVE: Duration = Duration::from_secs(10);

fn tune_upstream(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE)
        .with_interval(KEEPALIVE)
        .with_retries(3);
    sock.set_tcp_keepalive(&keepalive)?;
    sock.set_tcp_user_timeout(Some(USER_TIMEOUT))?;
    Ok(())
}

/// Connect to a backend.
pub async fn dial(addr: &Addr) -> io::Result<(Reader, Writer)> {
    match addr {
        Addr::Tcp(a) => {
            let stream = TcpStream::connect(a).await?;
            tune_upstream(&stream)?;
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

/// A bound listening endpoint.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
    /// Serves exactly one client: this process's standard input and output.
    Stdio(Option<(Reader, Writer)>),
}

impl Listener {
    /// Bind `addr`. A unix socket is created with mode 0600 (a stale socket file is replaced).
    pub async fn bind(addr: &Addr) -> io::Result<Listener> {
        match addr {
            Addr::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a).await?)),
            Addr::Unix(p) => {
                if std::fs::symlink_metadata(p)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    std::fs::remove_file(p)?;
                }
                // Bind inside a private directory, make it 0600, then move it into place: there
                // is no moment at which others could connect.
                let dir = p.with_file_name(format!(".p9persist-{}", std::process::id()));
                std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
                let tmp = dir.join("socket");
                let bound = UnixListener::bind(&tmp).and_then(|l| {
                    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
                    std::fs::rename(&tmp, p)?;
                    Ok(l)
                });
                let _ = std::fs::remove_dir(&dir);
                Ok(Listener::Unix(bound?, p.clone()))
            }
            Addr::Stdio => Ok(Listener::Stdio(Some((
                Box::new(tokio::io::stdin()),
                Box::new(tokio::io::stdout()),
            )))),
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Option<Addr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok().map(|a| Addr::Tcp(a.to_string())),
            Listener::Unix(_, p) => Some(Addr::Unix(p.clone())),
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
            Listener::Unix(l, p) => {
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
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream TCP links carry keepalive and TCP_USER_TIMEOUT, so a silent server is noticed.
    #[tokio::test]
    async fn upstream_links_detect_dead_peers() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let s = TcpStream::connect(addr).await.unwrap();
        tune_upstream(&s).unwrap();
        let sock = socket2::SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE);
        assert_eq!(sock.tcp_user_timeout().unwrap(), Some(USER_TIMEOUT));
        assert!(sock.tcp_nodelay().unwrap());
    }
}
