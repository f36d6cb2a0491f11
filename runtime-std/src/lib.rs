//! Runs p9persist sessions on blocking std threads and sockets, for synchronous programs; and
//! the std-level pieces every runtime shares: dial strings ([`addr`]) and socket set-up
//! ([`sock`]).

pub mod addr;
pub mod sock;

pub use addr::Addr;

/// What a proxy session needs to know (every runtime takes this).
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The 9P server to dial.
    pub backend: Addr,
    /// The sessions' settings; `seed` is the proxy's, from which each session's is derived
    /// ([`persist_core::drive::session_seed`]).
    pub session: persist_core::Config,
}
