//! The proxy: an acceptor thread hands clients to the proxy's thread, which starts a session
//! thread for each, joins each as it ends, and at shutdown stops them all.

use std::collections::HashMap;
use std::io;
use std::sync::mpsc::{self, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::accept::AcceptErrors;
use crate::net::{Accepted, Listener};
use crate::session::{self, Input};
use crate::{ProxyConfig, Shutdown};

/// How long shutdown waits for sessions to finish before abandoning them.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// What the proxy's thread hears.
enum Event {
    Accepted(Accepted),
    /// No more clients will come: the acceptor returned.
    AcceptorDone,
    /// Session `n` returned.
    SessionDone(u64),
    Shutdown,
}

struct SessionThread {
    thread: JoinHandle<()>,
    tx: SyncSender<Input>,
}

/// Accept clients on `listener` and proxy each to `cfg.backend` until `shutdown` is raised (or,
/// for stdio, until its one client is done). Returns within 2 s of [`Shutdown::shutdown`].
///
/// Each client gets a thread of its own (and one reading it, one per link to the server). A
/// failed accept (no file descriptors left, say) is retried after a pause that grows to half a
/// second, and logged at most once a second; sessions are joined as they end.
///
/// At shutdown the blocked accept is woken (on Linux, shutting the listening socket down for
/// reading does it) and every session told to stop; a session notices within a few write
/// timeouts ([`WRITE_TIMEOUT`](crate::WRITE_TIMEOUT)). One that has not stopped 1.5 s later —
/// only a write to a standard output nobody reads can block that long — is abandoned, its
/// thread left to end on its own.
pub fn run_proxy(listener: Listener, cfg: ProxyConfig, shutdown: Shutdown) -> io::Result<()> {
    let (tx, rx) = mpsc::channel();
    let _hook = {
        let tx = tx.clone();
        shutdown.on_shutdown(move || {
            let _ = tx.send(Event::Shutdown);
        })
    };
    let listener = Arc::new(listener);
    let mut acceptor = Some({
        let (listener, tx, shutdown) = (listener.clone(), tx.clone(), shutdown.clone());
        thread::Builder::new()
            .name("p9persist-accept".into())
            .spawn(move || accept_clients(&listener, &tx, &shutdown))?
    });
    let mut sessions: HashMap<u64, SessionThread> = HashMap::new();
    loop {
        if acceptor.is_none() && sessions.is_empty() {
            return Ok(()); // stdio: the one client is done
        }
        // The proxy's thread holds a sender, so the channel never disconnects.
        let Ok(event) = rx.recv() else { break };
        match event {
            Event::Accepted(client) => {
                // Refused (too many clients, or the memory budget spent): closed at once,
                // before any thread is started for it.
                let Some(admitted) = cfg.limits.admit(&client.name) else {
                    continue;
                };
                let number = admitted.number();
                match start_session(client, &cfg, admitted, &tx, &shutdown) {
                    Ok(s) => {
                        sessions.insert(number, s);
                    }
                    Err(e) => error!("cannot start a thread for a client: {e}; dropping it"),
                }
            }
            Event::SessionDone(n) => {
                if let Some(s) = sessions.remove(&n) {
                    join(s.thread, "a session");
                }
            }
            Event::AcceptorDone => {
                if let Some(a) = acceptor.take() {
                    join(a, "the acceptor");
                }
            }
            Event::Shutdown => break,
        }
    }
    info!("shutting down: closing {} client sessions", sessions.len());
    listener.wake();
    for s in sessions.values() {
        // A session whose queue is full is not waiting on it: it sees the shutdown flag.
        let _ = s.tx.try_send(Input::Shutdown);
    }
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while acceptor.is_some() || !sessions.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::SessionDone(n)) => {
                if let Some(s) = sessions.remove(&n) {
                    join(s.thread, "a session");
                }
            }
            Ok(Event::AcceptorDone) => {
                if let Some(a) = acceptor.take() {
                    join(a, "the acceptor");
                }
            }
            Ok(Event::Accepted(client)) => drop(client), // too late: closed at once
            Ok(Event::Shutdown) => {}
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    if !sessions.is_empty() {
        warn!(
            "{} client sessions did not stop within {SHUTDOWN_GRACE:?}; abandoning them",
            sessions.len()
        );
    }
    Ok(())
}

fn join(thread: JoinHandle<()>, what: &str) {
    if thread.join().is_err() {
        error!("{what} thread panicked");
    }
}

fn start_session(
    client: Accepted,
    cfg: &ProxyConfig,
    admitted: crate::Admitted,
    proxy: &Sender<Event>,
    shutdown: &Shutdown,
) -> io::Result<SessionThread> {
    let (tx, rx) = mpsc::sync_channel(session::INPUTS_QUEUED);
    let number = admitted.number();
    let done = DoneNotice {
        tx: proxy.clone(),
        number,
    };
    let (cfg, session_tx, shutdown) = (cfg.clone(), tx.clone(), shutdown.clone());
    let thread = thread::Builder::new()
        .name(format!("p9persist-session-{number}"))
        .spawn(move || {
            let _done = done;
            session::serve_client(client, cfg, admitted, session_tx, rx, shutdown);
        })?;
    Ok(SessionThread { thread, tx })
}

/// Tells the proxy's thread that a session thread is returning (even by a panic).
struct DoneNotice {
    tx: Sender<Event>,
    number: u64,
}

impl Drop for DoneNotice {
    fn drop(&mut self) {
        let _ = self.tx.send(Event::SessionDone(self.number));
    }
}

/// The acceptor thread: hand each client to the proxy's thread until shutdown.
fn accept_clients(listener: &Listener, tx: &Sender<Event>, shutdown: &Shutdown) {
    let mut errors = AcceptErrors::default();
    while !shutdown.is_shutdown() {
        match listener.accept() {
            Ok(Some(client)) => {
                errors.succeeded();
                if tx.send(Event::Accepted(client)).is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(_) if shutdown.is_shutdown() => break, // woken by `Listener::wake`
            Err(e) => {
                shutdown.wait_timeout(errors.failed(&e));
            }
        }
    }
    let _ = tx.send(Event::AcceptorDone);
}
