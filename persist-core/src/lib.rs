//! The p9persist session: a sans-IO state machine that keeps a 9P session alive for its client
//! while the server restarts or the network drops (Inferno's styxpersist(2), done right).
//!
//! It never does I/O, never reads a clock, never spawns and never draws randomness it was not
//! given (the seed in [`Config`]). A driver feeds it inputs, each with the current time, and
//! carries out what it asks:
//!
//! | input | when |
//! |---|---|
//! | [`Session::handle_client_frame`] | a whole frame arrived from the client |
//! | [`Session::handle_server_frame`] | a whole frame arrived on a link |
//! | [`Session::handle_link_up`] / [`Session::handle_dial_failed`] | a dial it asked for finished |
//! | [`Session::handle_link_down`] | a link closed or failed |
//! | [`Session::handle_client_closed`] | the client went away |
//! | [`Session::handle_timeout`] | the time from [`Session::poll_timeout`] arrived |
//!
//! After every input the driver drains [`Session::poll_output`] (frames to send, dials, closes,
//! in order) and [`Session::poll_event`] (things to log), then sleeps until the next input or
//! [`Session::poll_timeout`]. While [`Session::wants_client_input`] is false it stops reading the
//! client (backpressure). The whole loop, for a blocking driver:
//!
//! ```no_run
//! # use persist_core::*;
//! # fn now() -> Instant { Instant::from_nanos(0) }
//! # enum Input { Client(bytes::Bytes), Server(LinkId, bytes::Bytes), Up(LinkId), Down(LinkId), Timeout }
//! # fn wait_for_input(_deadline: Option<Instant>, _read_client: bool) -> Input { Input::Timeout }
//! # fn carry_out(_o: Output) {}
//! let mut session = Session::new(Config::default(), BackendId(0), now());
//! loop {
//!     while let Some(output) = session.poll_output() {
//!         carry_out(output); // send a frame, dial, close a link or the client
//!     }
//!     while let Some(event) = session.poll_event() {
//!         eprintln!("{event:?}");
//!     }
//!     if session.is_closed() {
//!         break;
//!     }
//!     match wait_for_input(session.poll_timeout(), session.wants_client_input()) {
//!         Input::Client(frame) => session.handle_client_frame(now(), frame),
//!         Input::Server(link, frame) => session.handle_server_frame(now(), link, frame),
//!         Input::Up(link) => session.handle_link_up(now(), link),
//!         Input::Down(link) => session.handle_link_down(now(), link, "connection reset"),
//!         Input::Timeout => session.handle_timeout(now()),
//!     }
//! }
//! ```
//!
//! Runtimes do not write this loop over raw frames: [`drive::Drive`] wraps a session with its
//! byte streams (framing, the table of links, backpressure, batching, failed writes, per-session
//! seeds, log sentences), so a runtime supplies only sockets, timers and its own wait. It lives
//! here, under the same purity rules, so the simulation and the fuzzer drive it byte by byte.
//!
//! Where things live: the session's state is [`Session`] (`session/mod.rs`, its work by job in
//! `session/`: links, forwarding, recording, services); what happens to a
//! request in flight when a link dies is the one table in `replay.rs` (with the outcome table
//! for creates, removes and renames, settled by looking, in `resolve.rs`); rebuilding fids after
//! a reconnect is `recovery.rs`; fids and the shared name tree are `fids.rs` and `names.rs`;
//! unsynced writes, kept per file to be checked after a reconnect, are `unsynced.rs`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod auth;
mod config;
pub mod drive;
pub mod endpoint;
mod event;
mod fids;
mod hash;
mod marks;
mod names;
mod qids;
mod recovery;
pub mod registry;
mod replay;
mod reply;
mod resolve;
pub mod rng;
mod session;
mod time;
mod timers;
mod unsynced;

pub use auth::{AuthConversation, AuthInput, AuthStep, Authenticator};
pub use config::{Backoff, Config};
pub use drive::Drive;
pub use endpoint::{Backends, Endpoint, Health, ServiceRoot};
pub use event::{BackendId, Event, LinkId, LinkLoss, Output, Peer};
pub use fids::LostReason;
pub use marks::{Mark, Marks};
pub use reply::Failure;
pub use session::Session;
pub use time::Instant;
pub use timers::Timer;
