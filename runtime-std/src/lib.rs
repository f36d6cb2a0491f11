//! Runs p9persist on blocking std threads and sockets, for synchronous programs; and the
//! std-level pieces every runtime shares: dial strings ([`addr`]) and socket set-up ([`sock`]).
//!
//! [`run_proxy`] accepts clients on a [`Listener`] and keeps each one's 9P session alive across
//! restarts of the server it proxies to. Each client gets a session thread driving a
//! [`persist_core::Drive`], a thread reading the client and one reading each link to the
//! server; raise a [`Shutdown`] from any thread to stop it all within two seconds.
//!
//! ```no_run
//! use std::time::Duration;
//! use runtime_std::{run_proxy, Addr, Listener, ProxyConfig, Servers, Shutdown};
//!
//! fn main() -> std::io::Result<()> {
//!     let listener = Listener::bind(&Addr::listen("5640").expect("a port"))?;
//!     let cfg = ProxyConfig {
//!         servers: Servers::one(Addr::dial("tcp!fileserver!564").expect("a dial string")),
//!         session: persist_core::Config::default(),
//!         metrics: None,
//!         limits: Default::default(),
//!     };
//!     let shutdown = Shutdown::new();
//!     let proxy = {
//!         let shutdown = shutdown.clone();
//!         std::thread::spawn(move || run_proxy(listener, cfg, shutdown))
//!     };
//!     // ... the program does its work; when it is time to stop:
//!     std::thread::sleep(Duration::from_secs(60));
//!     shutdown.shutdown();
//!     proxy.join().expect("the proxy thread")
//! }
//! ```
//!
//! To drive a session from an event loop of your own instead, see the `event_loop` example.
#![forbid(unsafe_code)]

pub mod accept;
pub mod addr;
pub mod limits;
pub mod metrics;
mod net;
pub mod poll_loop;
mod proxy;
pub mod servers;
mod session;
mod shutdown;
pub mod sock;

pub use addr::Addr;
pub use limits::{Admitted, Limits};
pub use metrics::Metrics;
pub use net::{Listener, DIAL_TIMEOUT, WRITE_TIMEOUT};
pub use proxy::run_proxy;
pub use servers::{Server, Servers};
pub use shutdown::Shutdown;

/// What a proxy session needs to know (every runtime takes this).
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The 9P server to dial ([`Servers::one`]), or a mux's equivalent servers.
    pub servers: Servers,
    /// The sessions' settings; `seed` is the proxy's, from which each session's is derived
    /// ([`persist_core::drive::session_seed`]).
    pub session: persist_core::Config,
    /// Where sessions count what they go through (`--metrics`); `None` counts nothing.
    pub metrics: Option<std::sync::Arc<Metrics>>,
    /// How many clients, and how much memory for them, the process allows (shared by every
    /// session: see [`limits`]).
    pub limits: std::sync::Arc<Limits>,
}

/// Write a drive event's sentence to the log at its level (every runtime logs this way), with
/// the event's kind as the field `event` (shown by machine-readable formats).
pub fn log_sentence(line: &persist_core::drive::Sentence) {
    use persist_core::drive::Level;
    let event = line.kind;
    match line.level {
        Level::Debug => tracing::debug!(event, "{line}"),
        Level::Info => tracing::info!(event, "{line}"),
        Level::Warn => tracing::warn!(event, "{line}"),
    }
}
