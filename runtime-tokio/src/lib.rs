//! Runs p9persist on tokio: proxy sessions (one [`persist_core::drive::Drive`] per client, one
//! task owning the client's socket and its links', see [`driver`]), listeners ([`net`]), and a
//! ramfs server ([`serve`]). The `p9persist` binary is built on these. Dial strings and socket
//! set-up are runtime-std's, shared by every runtime.
//!
//! Embedding it:
//!
//! ```no_run
//! use runtime_tokio::{run_proxy, Addr, Listener, ProxyConfig, Servers};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let listener = Listener::bind(&Addr::listen("5640").unwrap()).await?;
//!     let cfg = ProxyConfig {
//!         servers: Servers::one(Addr::dial("tcp!fileserver!564").unwrap()),
//!         session: persist_core::Config::default(),
//!         metrics: None,
//!         limits: Default::default(),
//!     };
//!     // Send `true` to stop the proxy (a signal handler would).
//!     let (_stop, shutdown) = tokio::sync::watch::channel(false);
//!     run_proxy(listener, cfg, None, shutdown).await
//! }
//! ```

// No unsafe code but the allocator setting (one glibc call), allowed where it is made.
#![deny(unsafe_code)]

pub mod allocator;
pub mod client;
pub mod driver;
pub mod metrics;
pub mod net;
pub mod serve;

use std::time::Duration;

use runtime_std::accept::AcceptErrors;
use tokio::sync::watch;
use tracing::info;

pub use driver::{serve_client, EventSink, ProxyConfig};
pub use net::Listener;
pub use runtime_std::addr::{self, Addr};
pub use runtime_std::Metrics;
pub use runtime_std::{Server, Servers};
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
    let mut accept_errors = AcceptErrors::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(Some((r, w, peer))) => {
                    accept_errors.succeeded();
                    // Refused (too many clients, or the memory budget spent): closed at once.
                    if let Some(admitted) = cfg.limits.admit(&peer) {
                        sessions.spawn(serve_client(r, w, peer, cfg.clone(), admitted, events.clone(), shutdown.clone()));
                    }
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
