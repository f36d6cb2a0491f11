//! Runs p9persist on tokio: proxy sessions (one [`persist_core::Session`] and one upstream link
//! per client, see [`driver`]), listeners and dial strings ([`net`], [`addr`]), and a ramfs
//! server ([`serve`]). The `p9persist` binary is built on these.

pub mod client;
pub mod driver;
pub mod net;
pub mod serve;

use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info};

pub use driver::{serve_client, EventSink, ProxyConfig};
pub use net::Listener;
pub use runtime_std::addr::{self, Addr};
pub use serve::RamfsServer;

/// Resolves once `shutdown` holds true. A dropped sender means no shutdown will ever come.
pub async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The longest pause between accept attempts after accept fails (out of file descriptors, say).
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// How long shutdown waits for sessions to finish before abandoning them.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// Accept clients on `listener` and proxy each to the backend, until `shutdown` turns true.
///
/// A failed accept (no file descriptors left, say) is retried after a pause that grows to
/// half a second, and logged at most once a second; sessions are reaped as they end.
pub async fn run_proxy(
    mut listener: Listener,
    cfg: ProxyConfig,
    events: EventSink,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut sessions = tokio::task::JoinSet::new();
    let mut number: u64 = 0;
    let mut accept_errors = AcceptErrors::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(Some((r, w, peer))) => {
                    accept_errors.succeeded();
                    number += 1;
                    sessions.spawn(serve_client(r, w, peer, cfg.clone(), number, events.clone(), shutdown.clone()));
                }
                // stdio: one client only; wait for it.
                Ok(None) => {
                    while sessions.join_next().await.is_some() {}
                    return Ok(());
                }
                Err(e) => {
                    let pause = accept_errors.failed(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown_requested(&mut shutdown) => {}
                    }
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = shutdown_requested(&mut shutdown) => {
                info!("shutting down: closing {} client sessions", sessions.len());
                let all_done = async { while sessions.join_next().await.is_some() {} };
                if tokio::time::timeout(SHUTDOWN_GRACE, all_done).await.is_err() {
                    sessions.abort_all();
                }
                return Ok(());
            }
        }
    }
}

/// Accept failures: how long to pause before the next try, and a log line at most once a
/// second saying how many there were.
#[derive(Default)]
struct AcceptErrors {
    pause: Duration,
    unlogged: u64,
    logged_at: Option<std::time::Instant>,
}

impl AcceptErrors {
    fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
    }

    fn failed(&mut self, e: &std::io::Error) -> Duration {
        self.unlogged += 1;
        if self
            .logged_at
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            let more = match self.unlogged {
                1 => String::new(),
                n => format!(" ({} more failures since the last report)", n - 1),
            };
            error!("cannot accept a client: {e}{more}; retrying");
            self.logged_at = Some(std::time::Instant::now());
            self.unlogged = 0;
        }
        self.pause = (self.pause * 2).clamp(Duration::from_millis(5), ACCEPT_BACKOFF_MAX);
        self.pause
    }
}
