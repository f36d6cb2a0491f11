//! Runs p9persist on tokio: proxy sessions (one [`persist_core::Session`] and one upstream link
//! per client, see [`driver`]), listeners and dial strings ([`net`], [`addr`]), and a ramfs
//! server ([`serve`]). The `p9persist` binary is built on these.

pub mod addr;
pub mod client;
pub mod driver;
pub mod net;
pub mod serve;

use std::sync::Arc;

use tokio::sync::watch;
use tracing::{error, info};

pub use addr::Addr;
pub use driver::{serve_client, EventSink, ProxyConfig};
pub use net::Listener;
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

/// Accept clients on `listener` and proxy each to the backend, until `shutdown` turns true.
pub async fn run_proxy(
    mut listener: Listener,
    cfg: ProxyConfig,
    events: EventSink,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let cfg = Arc::new(cfg);
    let mut clients = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(Some((r, w, peer))) => {
                    let cfg = (*cfg).clone();
                    clients.spawn(serve_client(r, w, peer, cfg, events.clone(), shutdown.clone()));
                }
                // stdio: one client only; wait for it.
                Ok(None) => {
                    while clients.join_next().await.is_some() {}
                    return Ok(());
                }
                Err(e) => error!("accept failed: {e}"),
            },
            _ = shutdown_requested(&mut shutdown) => {
                info!("shutting down: closing {} client sessions", clients.len());
                while clients.join_next().await.is_some() {}
                return Ok(());
            }
        }
    }
}
