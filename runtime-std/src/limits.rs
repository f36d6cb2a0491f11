//! The process's limits, shared by every session of every runtime: how many clients are
//! served at once (`--max-clients`) and how much memory all sessions together may hold for
//! their peers (`--memory-max`).
//!
//! Each session reports what its drive holds ([`Drive::memory_held`]) after every round of
//! work. While the sum is under the budget nobody is held back (each session keeps to its own
//! bounds: `--reply-max`, `--held-max`, `--replay-budget`). Once it is reached, new clients are
//! refused, and each session is held to an equal share of the budget: one holding more reads
//! neither its client nor, while replies wait for its client, its server, until the others
//! free memory or its own client catches up. The largest consumers stop; a session holding
//! little — a client that reads its replies — goes on. Slowing rather than failing keeps every
//! answer a server could have given.
//!
//! [`Drive::memory_held`]: persist_core::drive::Drive::memory_held

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::warn;

/// The default `--memory-max`: what a host daemon may hold for its clients.
pub const DEFAULT_MEMORY_MAX: usize = 512 << 20;
/// The default `--max-clients`.
pub const DEFAULT_MAX_CLIENTS: usize = 1024;
/// What a session held to its share may take in past it: the read under way and the rest of a
/// frame begun (a 64 KiB msize).
pub const SHARE_SLACK: usize = 64 << 10;

/// The limits and what is held against them.
#[derive(Debug)]
pub struct Limits {
    memory_max: usize,
    max_clients: usize,
    /// Bytes all sessions hold, as they last reported.
    held: AtomicUsize,
    sessions: AtomicUsize,
    /// Sessions admitted so far: each is numbered by it.
    admitted: AtomicU64,
    refusals: Mutex<Refusals>,
}

/// Refusals not logged yet (a connect flood gets one line a second, with a count).
#[derive(Debug, Default)]
struct Refusals {
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(DEFAULT_MEMORY_MAX, DEFAULT_MAX_CLIENTS)
    }
}

/// Why a client was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `--max-clients` sessions are being served.
    Clients(usize),
    /// The sessions hold `--memory-max` bytes.
    Memory { held: usize, max: usize },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Clients(n) => write!(f, "{n} clients are served already (--max-clients)"),
            Refused::Memory { held, max } => write!(
                f,
                "sessions hold {} MiB, the memory budget is {} MiB (--memory-max)",
                held >> 20,
                max >> 20
            ),
        }
    }
}

impl Limits {
    pub fn new(memory_max: usize, max_clients: usize) -> Limits {
        Limits {
            memory_max,
            max_clients,
            held: AtomicUsize::new(0),
            sessions: AtomicUsize::new(0),
            admitted: AtomicU64::new(0),
            refusals: Mutex::new(Refusals::default()),
        }
    }

    pub fn memory_max(&self) -> usize {
        self.memory_max
    }

    pub fn max_clients(&self) -> usize {
        self.max_clients
    }

    /// Bytes the sessions hold, as they last reported.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Sessions being served.
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Take a place for a client that just connected (named `client` in the log), or refuse
    /// it — with a log line, at most one a second with a count of the refusals since.
    pub fn admit(self: &Arc<Self>, client: &str) -> Option<Admitted> {
        match self.try_admit() {
            Ok(a) => Some(a),
            Err(why) => {
                self.log_refusal(client, why);
                None
            }
        }
    }

    fn try_admit(self: &Arc<Self>) -> Result<Admitted, Refused> {
        let held = self.held();
        if held >= self.memory_max {
            return Err(Refused::Memory {
                held,
                max: self.memory_max,
            });
        }
        let taken = self
            .sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_clients).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Admitted {
                limits: self.clone(),
                number: self.admitted.fetch_add(1, Ordering::Relaxed) + 1,
                held: 0,
            }),
            Err(_) => Err(Refused::Clients(self.max_clients)),
        }
    }

    fn log_refusal(&self, client: &str, why: Refused) {
        let mut r = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        r.unlogged += 1;
        if r.logged_at
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            let more = match r.unlogged {
                1 => String::new(),
                n => format!(" ({} more refused since the last report)", n - 1),
            };
            warn!("refusing client {client}: {why}{more}");
            r.logged_at = Some(Instant::now());
            r.unlogged = 0;
        }
    }
}

/// One admitted session's place: it reports what it holds, and learns its share of the budget
/// while the budget is spent. Dropping it frees the place.
#[derive(Debug)]
pub struct Admitted {
    limits: Arc<Limits>,
    /// The session's number among the process's, from 1 (its random choices derive from it).
    number: u64,
    held: usize,
}

impl Admitted {
    /// The session's number among the process's, from 1.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The session now holds `held` bytes: returns its share of the budget if the budget is
    /// spent (the session is held to it), `None` if it is not.
    pub fn report(&mut self, held: usize) -> Option<usize> {
        let total = if held != self.held {
            let total = if held > self.held {
                self.limits
                    .held
                    .fetch_add(held - self.held, Ordering::Relaxed)
                    + (held - self.held)
            } else {
                self.limits
                    .held
                    .fetch_sub(self.held - held, Ordering::Relaxed)
                    - (self.held - held)
            };
            self.held = held;
            total
        } else {
            self.limits.held()
        };
        (total >= self.limits.memory_max).then(|| {
            let share = self.limits.memory_max / self.limits.sessions().max(1);
            // A session held to its share may still take in what it was reading when it
            // reached it; leave room for that, and never hold one to nothing (a session may
            // always hold one request, or one reply, at a time).
            share.saturating_sub(SHARE_SLACK).max(1)
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.limits.held.fetch_sub(self.held, Ordering::Relaxed);
        self.limits.sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_past_the_bound_are_refused_and_places_come_back() {
        let limits = Arc::new(Limits::new(1 << 20, 2));
        let a = limits.try_admit().unwrap();
        let b = limits.try_admit().unwrap();
        assert_eq!((a.number(), b.number()), (1, 2));
        assert_eq!(limits.try_admit().unwrap_err(), Refused::Clients(2));
        drop(a);
        assert!(limits.try_admit().is_ok());
    }

    #[test]
    fn a_spent_budget_refuses_clients_and_shares_itself_out() {
        let max = 1000 + 2 * SHARE_SLACK;
        let limits = Arc::new(Limits::new(max, 10));
        let mut a = limits.try_admit().unwrap();
        let mut b = limits.try_admit().unwrap();
        assert_eq!(a.report(600), None);
        assert_eq!(b.report(300), None);
        assert_eq!(limits.held(), 900);
        // Spent: each of the two sessions is held to half, less the slack.
        assert_eq!(b.report(max - 600), Some(500));
        assert_eq!(a.report(600), Some(500));
        assert_eq!(
            limits.try_admit().unwrap_err(),
            Refused::Memory { held: max, max }
        );
        // What a session frees comes back; a dropped session frees all it held.
        assert_eq!(a.report(100), None);
        drop(b);
        assert_eq!(limits.held(), 100);
        assert_eq!(limits.sessions(), 1);
    }

    #[test]
    fn no_session_is_held_to_nothing() {
        let limits = Arc::new(Limits::new(10, 10));
        let mut a = limits.try_admit().unwrap();
        assert_eq!(a.report(10), Some(1));
    }
}
