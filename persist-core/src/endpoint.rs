//! The endpoint: what a proxy's sessions share about their backends (as quinn's `Endpoint`
//! sits above its connections). It owns the backends' health — which failed lately, and when
//! each may be tried again — and each session's seed; a session asks it, through
//! [`Backends`], which backend to dial, and tells it what became of each dial and link.
//!
//! `proxy` is an endpoint with one backend: every choice is that backend. With several (the
//! mux), a session keeps the backend it has while it is healthy (no flapping back when a
//! failed one returns); one that fails is avoided for a while that grows with its failures
//! (counted until it answers again), and sessions that must move are spread by their own
//! number over the healthy ones that failed least.

use alloc::vec::Vec;
use bytes::Bytes;
use core::time::Duration;

use crate::config::{Backoff, Config};
use crate::event::{BackendId, LinkLoss};
use crate::time::Instant;

/// What a session reports of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// A dial succeeded: the backend answers.
    Up,
    /// A dial failed.
    DialFailed,
    /// A link to it came to an end.
    Lost(LinkLoss),
}

/// Where a backend's tree begins for clients: a mux attaches to each backend with the
/// service's own attach name (clients cannot know it) and walks to its `path`, which clients
/// then see as the root. The default is the client's own attach, untouched (`proxy`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRoot {
    /// Sent in every Tattach and Tauth to this backend in place of the client's aname.
    pub aname: Option<Bytes>,
    /// Walked from the attach (by the session, before the client's Rattach goes out, and
    /// again by each recovery); empty for the attach itself.
    pub path: Vec<Bytes>,
}

impl ServiceRoot {
    /// Whether attaches pass through as the client sent them.
    pub fn is_plain(&self) -> bool {
        self.aname.is_none() && self.path.is_empty()
    }
}

/// Where a session asks which backend to dial, and reports what happened. The runtime shares
/// one [`Endpoint`] among its sessions behind this (a lock around it, for threads).
pub trait Backends: Send {
    /// The backend to dial now. `current` is the one the session used last (none before its
    /// first dial); `pick` is the session's own number, spreading sessions over equals.
    fn choose(&mut self, now: Instant, current: Option<BackendId>, pick: u64) -> BackendId;
    /// What became of a dial of, or a link to, `backend`.
    fn report(&mut self, now: Instant, backend: BackendId, health: Health);
    /// Whether a healthy backend other than `current` is there to move to: a session that lost
    /// `current` then dials at once instead of after its backoff.
    fn elsewhere(&self, _now: Instant, _current: BackendId) -> bool {
        false
    }
    /// Where `backend`'s tree begins for clients.
    fn root(&self, _backend: BackendId) -> ServiceRoot {
        ServiceRoot::default()
    }
    /// Whether the session may serve the client from more than one backend over its life, so
    /// that qids must name paths rather than one server's files (see `crate::qids`).
    fn stable_qids(&self) -> bool {
        false
    }
}

/// One backend, always: a session on its own, with nothing to choose.
#[derive(Clone, Copy, Debug)]
pub struct OneBackend(pub BackendId);

impl Backends for OneBackend {
    fn choose(&mut self, _: Instant, _: Option<BackendId>, _: u64) -> BackendId {
        self.0
    }
    fn report(&mut self, _: Instant, _: BackendId, _: Health) {}
}

/// What the endpoint knows of one backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendHealth {
    /// Failures (failed dials, lost links) since it last answered a dial.
    pub failures: u32,
    /// Until when sessions that have a choice avoid it.
    pub avoid_until: Option<Instant>,
    /// Taken out of service (it left the registry): not chosen while another is there.
    /// Sessions are asked only when they dial, so those linked to it stay until their link
    /// ends.
    pub withdrawn: bool,
}

/// The backends of a proxy or mux, their shared health, and its sessions' seeds.
#[derive(Clone, Debug)]
pub struct Endpoint {
    backends: Vec<BackendHealth>,
    roots: Vec<ServiceRoot>,
    stable_qids: bool,
    /// How long a failed backend is avoided, by its number of failures.
    backoff: Backoff,
    seed: u64,
    sessions: u64,
}

impl Endpoint {
    /// An endpoint over `backends` backends (numbered from 0, as [`BackendId`]s), whose
    /// sessions take their settings from `cfg` (its seed is the endpoint's).
    pub fn new(backends: usize, cfg: &Config) -> Endpoint {
        Endpoint::with_roots(alloc::vec![ServiceRoot::default(); backends.max(1)], cfg)
    }

    /// An endpoint over one backend per entry of `roots` (at least one), each entered at its
    /// root.
    pub fn with_roots(mut roots: Vec<ServiceRoot>, cfg: &Config) -> Endpoint {
        if roots.is_empty() {
            roots.push(ServiceRoot::default());
        }
        Endpoint {
            backends: alloc::vec![BackendHealth::default(); roots.len()],
            stable_qids: roots.len() > 1,
            roots,
            backoff: cfg.backoff.clone(),
            seed: cfg.seed,
            sessions: 0,
        }
    }

    /// The settings of the next session: `cfg` with the session's own seed (its random
    /// choices, and its `pick` among backends, derive from it).
    pub fn session_config(&mut self, cfg: &Config) -> Config {
        self.sessions += 1;
        Config {
            seed: crate::drive::session_seed(self.seed, self.sessions),
            ..cfg.clone()
        }
    }

    /// How many backends there are.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// Never: an endpoint has at least one backend.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// What is known of `backend`.
    pub fn health(&self, backend: BackendId) -> BackendHealth {
        self.backends
            .get(backend.0 as usize)
            .copied()
            .unwrap_or_default()
    }

    fn healthy(&self, i: usize, now: Instant) -> bool {
        let b = &self.backends[i];
        !b.withdrawn && b.avoid_until.is_none_or(|t| now >= t)
    }

    /// Make sessions' qids name paths (or not) whatever the number of backends: a mux whose
    /// registry may gain services must, from the start (see `crate::qids`). An endpoint of
    /// several backends does by default; of one, not.
    pub fn set_stable_qids(&mut self, on: bool) {
        self.stable_qids = on;
    }

    /// Add a backend entered at `root` (a service that joined the registry); its number is
    /// the next.
    pub fn add(&mut self, root: ServiceRoot) -> BackendId {
        self.backends.push(BackendHealth::default());
        self.roots.push(root);
        BackendId(self.roots.len() as u32 - 1)
    }

    /// Take `backend` out of service, or put it back (a service that left the registry, or
    /// came back to it).
    pub fn withdraw(&mut self, backend: BackendId, withdrawn: bool) {
        if let Some(b) = self.backends.get_mut(backend.0 as usize) {
            b.withdrawn = withdrawn;
        }
    }

    /// How long a backend with `failures` failures is avoided: the redial schedule's growth,
    /// without jitter (the choice must not depend on which session asks first).
    fn avoid_for(&self, failures: u32) -> Duration {
        let mut d = self.backoff.initial.as_nanos() as u64;
        let cap = self.backoff.max.as_nanos() as u64;
        for _ in 1..failures {
            d = d.saturating_mul(self.backoff.multiplier_percent as u64) / 100;
            if d >= cap {
                break;
            }
        }
        Duration::from_nanos(d.min(cap))
    }
}

impl Backends for Endpoint {
    fn choose(&mut self, now: Instant, current: Option<BackendId>, pick: u64) -> BackendId {
        let n = self.backends.len();
        if n == 1 {
            return BackendId(0);
        }
        // A session stays where it is while that backend is healthy.
        if let Some(c) = current.filter(|c| (c.0 as usize) < n) {
            if self.healthy(c.0 as usize, now) {
                return c;
            }
        }
        // Of the healthy ones, those that failed least lately: one past its avoidance but not
        // yet heard from again (a hung server, say) is tried only when nothing better is there.
        let healthy: Vec<usize> = (0..n).filter(|&i| self.healthy(i, now)).collect();
        if let Some(least) = healthy.iter().map(|&i| self.backends[i].failures).min() {
            let best: Vec<usize> = healthy
                .into_iter()
                .filter(|&i| self.backends[i].failures == least)
                .collect();
            return BackendId(best[(pick % best.len() as u64) as usize] as u32);
        }
        // All are failing: the one in service that may be tried soonest (the current one on
        // a tie); withdrawn ones only if nothing else is left.
        let soonest = |i: usize| {
            let b = &self.backends[i];
            (b.withdrawn, b.avoid_until.unwrap_or(now))
        };
        let mut best = current.map_or(0, |c| (c.0 as usize).min(n - 1));
        for i in 0..n {
            if soonest(i) < soonest(best) {
                best = i;
            }
        }
        BackendId(best as u32)
    }

    fn report(&mut self, now: Instant, backend: BackendId, health: Health) {
        let failures = match self.backends.get(backend.0 as usize) {
            Some(b) => b.failures,
            None => return,
        };
        let withdrawn = self.backends[backend.0 as usize].withdrawn;
        let b = match health {
            Health::Up => BackendHealth {
                withdrawn,
                ..BackendHealth::default()
            },
            Health::DialFailed | Health::Lost(_) => {
                let failures = failures.saturating_add(1);
                BackendHealth {
                    failures,
                    avoid_until: Some(now + self.avoid_for(failures)),
                    withdrawn,
                }
            }
        };
        self.backends[backend.0 as usize] = b;
    }

    fn elsewhere(&self, now: Instant, current: BackendId) -> bool {
        (0..self.backends.len()).any(|i| i != current.0 as usize && self.healthy(i, now))
    }

    fn root(&self, backend: BackendId) -> ServiceRoot {
        self.roots
            .get(backend.0 as usize)
            .cloned()
            .unwrap_or_default()
    }

    fn stable_qids(&self) -> bool {
        self.stable_qids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    fn endpoint(n: usize) -> Endpoint {
        Endpoint::new(n, &Config::default())
    }

    #[test]
    fn one_backend_is_always_the_choice() {
        let mut e = endpoint(1);
        e.report(at(0), BackendId(0), Health::DialFailed);
        assert_eq!(e.choose(at(1), Some(BackendId(0)), 7), BackendId(0));
        assert_eq!(
            OneBackend(BackendId(3)).choose(at(0), None, 9),
            BackendId(3)
        );
    }

    #[test]
    fn sessions_spread_stay_put_and_fail_over() {
        let mut e = endpoint(3);
        // First dials spread by the sessions' numbers.
        let first: Vec<u32> = (0..6).map(|p| e.choose(at(0), None, p).0).collect();
        assert_eq!(first, [0, 1, 2, 0, 1, 2]);
        // Backend 1 fails: its sessions move to a healthy one; others stay.
        e.report(at(10), BackendId(1), Health::Lost(LinkLoss::Closed));
        assert_eq!(e.choose(at(10), Some(BackendId(1)), 1), BackendId(2));
        assert_eq!(e.choose(at(10), Some(BackendId(0)), 1), BackendId(0));
        // It comes back (answers a dial): nobody moves back to it.
        e.report(at(20), BackendId(1), Health::Up);
        assert_eq!(e.choose(at(20), Some(BackendId(2)), 1), BackendId(2));
        assert_eq!(e.health(BackendId(1)), BackendHealth::default());
    }

    #[test]
    fn failed_backends_are_avoided_longer_each_time_and_then_retried() {
        let mut e = endpoint(2);
        e.report(at(0), BackendId(0), Health::DialFailed);
        let first = e.health(BackendId(0)).avoid_until.unwrap();
        assert_eq!(first, at(100));
        e.report(at(0), BackendId(0), Health::DialFailed);
        assert_eq!(e.health(BackendId(0)).avoid_until.unwrap(), at(150));
        // While 0 is avoided, everyone goes to 1; once its time is past, it is healthy again,
        // but one that has not failed is still preferred to it.
        assert_eq!(e.choose(at(120), None, 0), BackendId(1));
        assert_eq!(e.choose(at(150), None, 0), BackendId(1));
        // Both failing: the one that may be tried soonest.
        e.report(at(200), BackendId(1), Health::Lost(LinkLoss::Silent));
        e.report(at(200), BackendId(0), Health::DialFailed);
        let (a0, a1) = (
            e.health(BackendId(0)).avoid_until.unwrap(),
            e.health(BackendId(1)).avoid_until.unwrap(),
        );
        assert!(a1 < a0, "{a1:?} {a0:?}");
        assert_eq!(e.choose(at(201), Some(BackendId(0)), 0), BackendId(1));
    }

    #[test]
    fn of_the_healthy_the_least_failed_is_chosen() {
        // Two hung servers (they accept connections and never answer) and one that works: a
        // session must not bounce between the hung ones as their avoidance runs out.
        let mut e = endpoint(3);
        for _ in 0..3 {
            e.report(at(0), BackendId(1), Health::Lost(LinkLoss::RecoveryStalled));
            e.report(at(0), BackendId(2), Health::Lost(LinkLoss::RecoveryStalled));
        }
        e.report(at(0), BackendId(0), Health::DialFailed);
        let later = at(60_000);
        for pick in 0..4 {
            assert_eq!(e.choose(later, None, pick), BackendId(0));
        }
        // It answers: its failures are forgotten; the others' are not.
        e.report(later, BackendId(0), Health::Up);
        assert_eq!(e.health(BackendId(0)).failures, 0);
        assert_eq!(e.health(BackendId(1)).failures, 3);
    }

    #[test]
    fn withdrawn_backends_are_left_and_added_ones_chosen() {
        let mut e = endpoint(2);
        e.withdraw(BackendId(0), true);
        // A session that was on it (redialing: its link ended) moves; so do new ones.
        assert_eq!(e.choose(at(0), Some(BackendId(0)), 0), BackendId(1));
        assert_eq!(e.choose(at(0), None, 0), BackendId(1));
        assert_eq!(e.choose(at(0), None, 1), BackendId(1));
        let added = e.add(ServiceRoot::default());
        assert_eq!(added, BackendId(2));
        let picks: Vec<u32> = (0..4).map(|p| e.choose(at(0), None, p).0).collect();
        assert_eq!(picks, [1, 2, 1, 2]);
        // Everything in service failing: a withdrawn one is still not preferred.
        e.report(at(1), BackendId(1), Health::DialFailed);
        e.report(at(1), BackendId(2), Health::DialFailed);
        assert_ne!(e.choose(at(2), None, 0), BackendId(0));
        // Only withdrawn ones left healthy: better than nothing.
        e.withdraw(BackendId(1), true);
        e.withdraw(BackendId(2), true);
        assert_eq!(e.choose(at(2), Some(BackendId(1)), 0), BackendId(0));
        e.withdraw(BackendId(0), false);
        assert!(!e.health(BackendId(0)).withdrawn);
    }

    #[test]
    fn session_seeds_are_distinct_and_reproducible() {
        let cfg = Config::default();
        let mut a = Endpoint::new(1, &cfg);
        let mut b = Endpoint::new(1, &cfg);
        let sa: Vec<u64> = (0..4).map(|_| a.session_config(&cfg).seed).collect();
        let sb: Vec<u64> = (0..4).map(|_| b.session_config(&cfg).seed).collect();
        assert_eq!(sa, sb);
        let mut sorted = sa.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
        assert_eq!(sa[0], crate::drive::session_seed(cfg.seed, 1));
    }
}
