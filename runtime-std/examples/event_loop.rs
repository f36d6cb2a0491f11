//! A p9persist session embedded in an event loop of your own: one thread, nonblocking std
//! sockets, and a [`Drive`] told what happened. It serves one client.
//!
//! ```text
//! cargo run -p runtime-std --example event_loop -- --listen 5640 --server tcp!localhost!564
//! ```
//!
//! Where a real event loop would block in poll(2) until a socket is ready, this one sleeps a
//! few milliseconds (never past the drive's next deadline). Dialing blocks here for brevity; a
//! real loop would connect without blocking and report the result when the socket is ready.

use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use persist_core::drive::{sentence, Action, Drive, OutQueue, READ_CHUNK};
use persist_core::{BackendId, Config, Instant, LinkId};
use runtime_std::{sock, Addr};

/// The longest nap when no socket moved.
const NAP: Duration = Duration::from_millis(5);

trait Socket: Read + Write {}
impl<T: Read + Write> Socket for T {}

fn main() -> io::Result<()> {
    let (listen, server) = args().unwrap_or_else(|e| {
        eprintln!("{e}\nusage: event_loop --listen ADDR --server ADDR");
        std::process::exit(2)
    });
    let (mut client, name) = accept_one(&listen)?;
    let epoch = std::time::Instant::now();
    let now = || Instant::from_nanos(epoch.elapsed().as_nanos() as u64);
    let mut drive = Drive::new(Config::default(), BackendId(0), now());
    let mut links: Vec<(LinkId, Box<dyn Socket>)> = Vec::new();
    let mut fired: Option<Instant> = None;
    let mut buf = vec![0; READ_CHUNK];
    while !drive.is_finished() {
        while let Some(action) = drive.poll_action() {
            match action {
                Action::Dial { link, .. } => match dial(&server) {
                    Ok(s) if drive.handle_dial_done(now(), link, Ok(())) => links.push((link, s)),
                    Ok(_) => {} // no longer wanted: dropping it closes it
                    Err(e) => {
                        drive.handle_dial_done(now(), link, Err(&e.to_string()));
                    }
                },
                Action::CloseLink { link } => links.retain(|(l, _)| *l != link),
            }
        }
        while let Some(event) = drive.poll_event() {
            eprintln!("{}", sentence(&event, &name, &server.to_string()));
        }
        let mut moved = false;
        // Write what is queued, as much as each socket takes.
        match write(&mut client, drive.client_out()) {
            Ok(0) => {}
            Ok(n) => {
                drive.client_written(now(), n);
                moved = true;
            }
            Err(_) => {
                drive.handle_client_gone(now());
                moved = true;
            }
        }
        for (link, s) in &mut links {
            match write(s, drive.link_out(*link)) {
                Ok(0) => {}
                Ok(n) => {
                    drive.link_written(*link, n);
                    moved = true;
                }
                Err(e) => {
                    let why = format!("write to server failed: {e}");
                    drive.handle_link_failed(now(), *link, &why);
                    moved = true;
                }
            }
        }
        // Read the links, and the client while the drive wants it (backpressure).
        for (link, s) in &mut links {
            let read = s.read(&mut buf);
            moved |= !would_block(&read);
            match read {
                Ok(0) => drive.handle_link_failed(now(), *link, "the server closed the connection"),
                Ok(n) => drive.handle_link_bytes(now(), *link, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => drive.handle_link_failed(now(), *link, &format!("read failed: {e}")),
            }
        }
        if drive.wants_client_read() {
            let read = client.read(&mut buf);
            moved |= !would_block(&read);
            match read {
                Ok(n) if n > 0 => drive.handle_client_bytes(now(), &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                _ => drive.handle_client_gone(now()), // the end, or an error
            }
        }
        // Timers: a deadline that does not move after firing is retried a millisecond later.
        let due = drive
            .poll_timeout()
            .map(|at| fired.map_or(at, |f| at.max(f + Duration::from_millis(1))));
        if let Some(at) = due.filter(|&at| now() >= at) {
            fired = Some(at);
            drive.handle_timeout(now());
        } else if !moved {
            // Nothing moved: here a real loop waits in poll(2).
            std::thread::sleep(due.map_or(NAP, |at| at.since(now()).min(NAP)));
        }
    }
    Ok(())
}

fn would_block(r: &io::Result<usize>) -> bool {
    matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// One vectored write of what is queued; 0 if nothing is, or the socket takes nothing now.
fn write(s: &mut impl Write, out: &OutQueue) -> io::Result<usize> {
    if out.is_empty() {
        return Ok(0);
    }
    let slices: Vec<IoSlice<'_>> = out.chunks().take(64).map(IoSlice::new).collect();
    match s.write_vectored(&slices) {
        Ok(0) => Err(io::ErrorKind::WriteZero.into()),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        other => other,
    }
}

fn args() -> Result<(Addr, Addr), String> {
    let (mut listen, mut server) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(Addr::listen(&value).map_err(|e| e.to_string())?),
            "--server" => server = Some(Addr::dial(&value).map_err(|e| e.to_string())?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok((
        listen.ok_or("--listen is missing")?,
        server.ok_or("--server is missing")?,
    ))
}

/// Wait for one client; its socket is made nonblocking.
fn accept_one(addr: &Addr) -> io::Result<(Box<dyn Socket>, String)> {
    match addr {
        Addr::Tcp(a) => {
            let (s, peer) = TcpListener::bind(a)?.accept()?;
            s.set_nonblocking(true)?;
            s.set_nodelay(true)?;
            Ok((Box::new(s), peer.to_string()))
        }
        Addr::Unix(p) => {
            let listener = sock::bind_unix_private(p)?;
            let (s, _) = listener.accept()?;
            let _ = std::fs::remove_file(p);
            s.set_nonblocking(true)?;
            Ok((Box::new(s), addr.to_string()))
        }
        Addr::Stdio => Err(io::Error::other("this example serves sockets, not stdio")),
    }
}

/// Connect to the server (blocking), then make the socket nonblocking.
fn dial(addr: &Addr) -> io::Result<Box<dyn Socket>> {
    match addr {
        Addr::Tcp(a) => {
            let s = TcpStream::connect(a)?;
            sock::tune_upstream(&s)?;
            s.set_nonblocking(true)?;
            Ok(Box::new(s))
        }
        Addr::Unix(p) => {
            let s = UnixStream::connect(p)?;
            s.set_nonblocking(true)?;
            Ok(Box::new(s))
        }
        Addr::Stdio => Err(io::Error::other("cannot dial stdio")),
    }
}
