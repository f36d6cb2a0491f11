//! The fastest forwarding hop user space can build, as the benchmarks' yardstick: a byte relay
//! (no 9P, no recovery) that moves each direction with splice(2) through a pipe, so payloads are
//! never copied into the relay, one blocking thread per direction (no event loop, no extra
//! system call per message). `--copy` moves bytes through a buffer instead, with the same
//! threads.
//!
//! `splice-relay [--copy] LISTEN TARGET`, both `host:port` or both unix socket paths; prints
//! `listening LISTEN` once bound and serves until killed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

/// One side of a relayed connection, whatever the transport.
trait Side: Read + Write + AsRawFd + Send + 'static {
    fn try_clone_side(&self) -> std::io::Result<Self>
    where
        Self: Sized;
    fn end_writes(&self);
    fn end_both(&self);
}

/// TCP and unix streams take the same calls.
macro_rules! side {
    ($stream:ty) => {
        impl Side for $stream {
            fn try_clone_side(&self) -> std::io::Result<Self> {
                self.try_clone()
            }
            fn end_writes(&self) {
                let _ = self.shutdown(std::net::Shutdown::Write);
            }
            fn end_both(&self) {
                let _ = self.shutdown(std::net::Shutdown::Both);
            }
        }
    };
}
side!(TcpStream);
side!(UnixStream);

const PIPE_SIZE: usize = 1 << 20;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let copy = args.first().is_some_and(|a| a == "--copy");
    if copy {
        args.remove(0);
    }
    let [listen, target] = &args[..] else {
        eprintln!("usage: splice-relay [--copy] LISTEN TARGET");
        std::process::exit(2);
    };
    if listen.contains('/') {
        let _ = std::fs::remove_file(listen);
        let l = UnixListener::bind(listen).unwrap_or_else(|e| die(listen, e));
        announce(listen);
        for c in l.incoming() {
            let Some(c) = accepted(c) else { continue };
            match UnixStream::connect(target) {
                Ok(s) => relay(c, s, copy),
                Err(e) => eprintln!("splice-relay: {target}: {e}"),
            }
        }
    } else {
        let l = TcpListener::bind(listen).unwrap_or_else(|e| die(listen, e));
        announce(listen);
        for c in l.incoming() {
            let Some(c) = accepted(c) else { continue };
            match TcpStream::connect(target) {
                Ok(s) => {
                    let _ = c.set_nodelay(true);
                    let _ = s.set_nodelay(true);
                    relay(c, s, copy)
                }
                Err(e) => eprintln!("splice-relay: {target}: {e}"),
            }
        }
    }
}

fn die(what: &str, e: std::io::Error) -> ! {
    eprintln!("splice-relay: {what}: {e}");
    std::process::exit(1)
}

/// An accepted connection, or after a failed accept (out of descriptors, say) a pause before
/// the next.
fn accepted<S>(c: std::io::Result<S>) -> Option<S> {
    c.map_err(|e| {
        eprintln!("splice-relay: accept: {e}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    })
    .ok()
}

fn announce(listen: &str) {
    println!("listening {listen}");
    let _ = std::io::stdout().flush();
}

/// Two threads, one per direction: an end of stream is passed on as one, an error ends both.
fn relay<S: Side>(client: S, server: S, copy: bool) {
    let (Ok(c2), Ok(s2)) = (client.try_clone_side(), server.try_clone_side()) else {
        return;
    };
    for (mut from, mut to) in [(client, server), (s2, c2)] {
        let pump = move || {
            let done = if copy {
                pump_copy(&mut from, &mut to)
            } else {
                pump_splice(&from, &to)
            };
            match done {
                Ok(()) => to.end_writes(),
                Err(_) => {
                    from.end_both();
                    to.end_both();
                }
            }
        };
        if let Err(e) = std::thread::Builder::new().spawn(pump) {
            eprintln!("splice-relay: no thread for a connection: {e}");
        }
    }
}

fn pump_copy<S: Side>(from: &mut S, to: &mut S) -> std::io::Result<()> {
    let mut buf = vec![0u8; PIPE_SIZE];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
    }
}

fn pump_splice<S: Side>(from: &S, to: &S) -> std::io::Result<()> {
    let (rd, wr) = pipe()?;
    // SAFETY: plain fcntl on a descriptor this function owns.
    let sized =
        unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) };
    if sized < PIPE_SIZE as libc::c_int {
        // A smaller pipe would make a weaker yardstick than the benchmarks say it is.
        eprintln!(
            "splice-relay: cannot size a pipe to {PIPE_SIZE} bytes: {}",
            std::io::Error::last_os_error()
        );
        std::process::exit(1);
    }
    loop {
        let n = splice(from.as_raw_fd(), wr.as_raw_fd(), PIPE_SIZE)?;
        if n == 0 {
            return Ok(());
        }
        let mut left = n;
        while left > 0 {
            match splice(rd.as_raw_fd(), to.as_raw_fd(), left)? {
                0 => return Ok(()),
                m => left -= m,
            }
        }
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors on success; each is then owned exactly once.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created by pipe2 and nothing else owns them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn splice(from: i32, to: i32, len: usize) -> std::io::Result<usize> {
    loop {
        // SAFETY: splice between two open descriptors, no offsets.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
