//! Runs p9persist sessions on blocking std threads and sockets, for synchronous programs; and
//! the std-level pieces every runtime shares: dial strings ([`addr`]) and socket set-up
//! ([`sock`]).

pub mod addr;
pub mod sock;

pub use addr::Addr;
