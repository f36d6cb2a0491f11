//! Runs p9persist on the futures-io traits with async-io's reactor and timers: proxy sessions
//! (one [`persist_core::drive::Drive`] per client, see [`driver`]) and listeners ([`net`]), for
//! programs on smol, async-std or any executor. The crate never spawns a task itself: each
//! session is handed to a spawner the caller passes.
//!
//! Embedding it under smol:
//!
//! ```no_run
//! use runtime_async::{run_proxy, Addr, Listener, ProxyConfig, Servers, Shutdown};
//!
//! fn main() -> std::io::Result<()> {
//!     let shutdown = Shutdown::new();
//!     // Call `shutdown.shutdown()` from anywhere (a signal handler, say) to stop the proxy.
//!     smol::block_on(async {
//!         let listener = Listener::bind(&Addr::listen("5640").unwrap()).await?;
//!         let cfg = ProxyConfig {
//!             servers: Servers::one(Addr::dial("tcp!fileserver!564").unwrap()),
//!             session: persist_core::Config::default(),
//!             metrics: None,
//!             limits: Default::default(),
//!         };
//!         let spawn = |session| smol::spawn(session).detach();
//!         run_proxy(listener, cfg, spawn, shutdown).await
//!     })
//! }
//! ```
//!
//! Under async-std the spawner is `|session| drop(async_std::task::spawn(session))`.
#![forbid(unsafe_code)]

pub mod driver;
pub mod net;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_io::Timer;
use event_listener::Event;
use futures_lite::future;
use runtime_std::accept::AcceptErrors;
use tracing::info;

pub use driver::serve_client;
pub use net::{Listener, Reader, Writer};
pub use runtime_std::addr::{self, Addr};
pub use runtime_std::{ProxyConfig, Server, Servers};

/// A session, as handed to the spawner.
pub type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// How long shutdown waits for sessions to finish before returning without them.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// A stop signal for a proxy and its sessions: clones share it, and any of them may give it.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<ShutdownInner>,
}

#[derive(Default)]
struct ShutdownInner {
    done: AtomicBool,
    event: Event,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Stop: every [`wait`](Self::wait), now or later, resolves.
    pub fn shutdown(&self) {
        self.inner.done.store(true, Ordering::SeqCst);
        self.inner.event.notify(usize::MAX);
    }

    /// Resolves once [`shutdown`](Self::shutdown) has been called.
    pub async fn wait(&self) {
        loop {
            if self.is_shutdown() {
                return;
            }
            let listener = self.inner.event.listen();
            // A shutdown between the check and the listen would be missed without this one.
            if self.is_shutdown() {
                return;
            }
            listener.await;
        }
    }

    pub fn is_shutdown(&self) -> bool {
        self.inner.done.load(Ordering::SeqCst)
    }
}

/// How many sessions run: a count, so nothing is kept per past connection.
#[derive(Default)]
struct Live {
    count: AtomicUsize,
    changed: Event,
}

/// Held by a running session; counts it out when dropped (run to the end, or dropped unrun by
/// the executor).
struct SessionGuard(Arc<Live>);

impl Live {
    fn enter(self: &Arc<Self>) -> SessionGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        SessionGuard(self.clone())
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Resolves when no session runs.
    async fn idle(&self) {
        loop {
            if self.count() == 0 {
                return;
            }
            let listener = self.changed.listen();
            if self.count() == 0 {
                return;
            }
            listener.await;
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify(usize::MAX);
    }
}

/// Accept clients on `listener` and proxy each to `cfg.backend` until `shutdown` is called;
/// each session is handed to `spawn` (e.g. `|s| smol::spawn(s).detach()`).
///
/// A failed accept (no file descriptors left, say) is retried after a pause that grows from
/// 5 ms to half a second, and logged at most once a second. On shutdown the listener is closed
/// at once (a unix socket's file removed), the sessions (which watch `shutdown` too) close their
/// clients, and this returns once they have, or after 1.5 s regardless. A stdio listener serves
/// its one client and returns when that session ends.
pub async fn run_proxy(
    mut listener: Listener,
    cfg: ProxyConfig,
    spawn: impl Fn(BoxFuture) + Send + Sync + 'static,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let live = Arc::new(Live::default());
    let mut accept_errors = AcceptErrors::default();
    loop {
        let stop = async {
            shutdown.wait().await;
            None
        };
        let accept = async { Some(listener.accept().await) };
        let Some(accepted) = future::or(stop, accept).await else {
            break;
        };
        match accepted {
            Ok(Some((r, w, peer))) => {
                accept_errors.succeeded();
                // Refused (too many clients, or the memory budget spent): closed at once.
                let Some(admitted) = cfg.limits.admit(&peer) else {
                    continue;
                };
                let guard = live.enter();
                let session = serve_client(r, w, peer, cfg.clone(), admitted, shutdown.clone());
                spawn(Box::pin(async move {
                    let _guard = guard;
                    session.await;
                }));
            }
            // stdio: one client only; wait for it (or for shutdown).
            Ok(None) => {
                let idle = async {
                    live.idle().await;
                    true
                };
                let stop = async {
                    shutdown.wait().await;
                    false
                };
                if future::or(idle, stop).await {
                    return Ok(());
                }
                break;
            }
            Err(e) => {
                let pause = accept_errors.failed(&e);
                future::or(
                    async {
                        Timer::after(pause).await;
                    },
                    shutdown.wait(),
                )
                .await;
            }
        }
    }
    drop(listener);
    info!("shutting down: closing {} client sessions", live.count());
    future::or(live.idle(), async {
        Timer::after(SHUTDOWN_GRACE).await;
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_wakes_every_waiter() {
        let s = Shutdown::new();
        assert!(!s.is_shutdown());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || future::block_on(s.wait()))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        s.shutdown();
        for w in waiters {
            w.join().unwrap();
        }
        assert!(s.is_shutdown());
        // Later waits resolve at once.
        future::block_on(s.wait());
    }

    #[test]
    fn what_is_spawned_is_send() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send + 'static>(_: &T) {}
        send_sync(&Shutdown::new());
        let cfg = ProxyConfig {
            servers: Servers::one(Addr::Tcp("127.0.0.1:1".into())),
            session: persist_core::Config::default(),
            metrics: None,
            limits: Default::default(),
        };
        let session = serve_client(
            Box::new(futures_lite::io::empty()),
            Box::new(futures_lite::io::sink()),
            "test".into(),
            cfg,
            Arc::new(runtime_std::Limits::default())
                .admit("test")
                .expect("a place"),
            Shutdown::new(),
        );
        send(&session);
    }

    #[test]
    fn sessions_are_counted_not_kept() {
        let live = Arc::new(Live::default());
        let guards: Vec<_> = (0..3).map(|_| live.enter()).collect();
        assert_eq!(live.count(), 3);
        drop(guards);
        assert_eq!(live.count(), 0);
        future::block_on(live.idle());
    }
}
