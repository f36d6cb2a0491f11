//! Socket set-up every runtime shares, on std sockets: upstream TCP links tuned so a dead server
//! is noticed even when no packet says so, and unix listeners created private (0600) with no
//! moment at which others could connect.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

/// How long an unacknowledged upstream send may wait before the kernel declares the link dead.
pub const USER_TIMEOUT: Duration = Duration::from_secs(20);
/// Keepalive idle time and probe interval on upstream links.
pub const KEEPALIVE: Duration = Duration::from_secs(10);

/// Tune a connected upstream TCP socket: no Nagle delay, keepalive probes, and a user timeout.
pub fn tune_upstream(stream: &impl AsFd) -> io::Result<()> {
    let sock = socket2::SockRef::from(stream);
    sock.set_tcp_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE)
        .with_interval(KEEPALIVE)
        .with_retries(3);
    sock.set_tcp_keepalive(&keepalive)?;
    sock.set_tcp_user_timeout(Some(USER_TIMEOUT))?;
    Ok(())
}

/// Bind a unix socket at `path` with mode 0600, replacing a stale socket file (never any other
/// kind of file). It is bound inside a private directory, made 0600, then linked into place
/// (link(2), unlike rename(2), never replaces a file that is there).
pub fn bind_unix_private(path: &Path) -> io::Result<UnixListener> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(path)?;
    }
    // Unique per bind, so two binds at once in one process do not share the directory.
    static BINDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = BINDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = path.with_file_name(format!(".p9persist-{}-{n}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let tmp = dir.join("socket");
    let bound = UnixListener::bind(&tmp).and_then(|l| {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::hard_link(&tmp, path)?;
        Ok(l)
    });
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&dir);
    bound
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// Upstream TCP links carry keepalive and TCP_USER_TIMEOUT, so a silent server is noticed.
    #[test]
    fn upstream_links_detect_dead_peers() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        tune_upstream(&s).unwrap();
        let sock = socket2::SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE);
        assert_eq!(sock.tcp_user_timeout().unwrap(), Some(USER_TIMEOUT));
        assert!(sock.tcp_nodelay().unwrap());
    }

    #[test]
    fn unix_listeners_are_private() {
        let dir = std::env::temp_dir().join(format!("p9persist-sock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let _l = bind_unix_private(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second bind replaces the stale socket; a regular file is never removed.
        drop(_l);
        bind_unix_private(&path).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(bind_unix_private(&file).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"x");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
