//! What a proxy has been through, counted for Prometheus: sessions, outages and the time spent
//! without a server, recoveries and their duration, fids rebuilt and lost, requests failed,
//! redials, bytes forwarded, and which backend each session is using.
//!
//! Every session loop with a [`SessionMetrics`] feeds the proxy's one [`Metrics`] from its
//! events (rare: a handful per outage) and from its writes (one relaxed atomic add per write
//! system call, nothing per message); [`Metrics::render`] writes the text exposition format
//! (version 0.0.4) that a scrape of `--metrics` returns.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use persist_core::{BackendId, Event, LostReason, Peer};

/// Upper bounds (seconds) of the recovery-duration histogram's buckets.
const RECOVERY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Failure kinds ([`persist_core::Failure::kind`]) a request-failed event can carry.
const FAILURE_KINDS: [&str; 5] = [
    "not_completed",
    "gave_up",
    "writes_lost",
    "invalid_reply",
    "other",
];

/// A proxy's counters, shared by all its sessions.
#[derive(Default)]
pub struct Metrics {
    sessions_opened: AtomicU64,
    sessions_closed: AtomicU64,
    sessions_without_server: AtomicU64,
    outages: AtomicU64,
    /// Nanoseconds sessions spent without a server, summed over ended outages.
    outage_nanos: AtomicU64,
    recoveries: AtomicU64,
    recovery_nanos: AtomicU64,
    recovery_buckets: [AtomicU64; RECOVERY_BUCKETS.len()],
    fids_rebuilt: AtomicU64,
    fids_lost_stale: AtomicU64,
    fids_lost_io: AtomicU64,
    requests_failed: [AtomicU64; FAILURE_KINDS.len()],
    redials: AtomicU64,
    dials_failed: AtomicU64,
    give_ups: AtomicU64,
    recovery_stalls: AtomicU64,
    violations_client: AtomicU64,
    violations_server: AtomicU64,
    late_replies: AtomicU64,
    outcomes_done: AtomicU64,
    outcomes_not_done: AtomicU64,
    /// Sessions moved to another backend (mux).
    failovers: AtomicU64,
    bytes_to_server: AtomicU64,
    bytes_to_client: AtomicU64,
    /// Sessions with a live link, by backend (changes only when links come and go).
    backends: Mutex<BTreeMap<String, u64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// The counters in Prometheus's text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let opened = self.sessions_opened.load(Relaxed);
        let closed = self.sessions_closed.load(Relaxed);
        metric(
            &mut out,
            "p9persist_sessions_open",
            "gauge",
            "Client sessions open now.",
        );
        sample(
            &mut out,
            "p9persist_sessions_open",
            "",
            opened.saturating_sub(closed),
        );
        counter(
            &mut out,
            "p9persist_sessions_total",
            "Client sessions opened.",
            opened,
        );
        metric(
            &mut out,
            "p9persist_sessions_without_server",
            "gauge",
            "Sessions whose server is lost now (requests held or failing).",
        );
        sample(
            &mut out,
            "p9persist_sessions_without_server",
            "",
            self.sessions_without_server.load(Relaxed),
        );
        counter(
            &mut out,
            "p9persist_outages_total",
            "Times a session lost its server.",
            self.outages.load(Relaxed),
        );
        metric(
            &mut out,
            "p9persist_outage_seconds_total",
            "counter",
            "Time sessions spent without a server, summed over ended outages.",
        );
        seconds(
            &mut out,
            "p9persist_outage_seconds_total",
            "",
            self.outage_nanos.load(Relaxed),
        );

        let name = "p9persist_recovery_duration_seconds";
        metric(
            &mut out,
            name,
            "histogram",
            "Time from a reconnect to service resumed, per recovery.",
        );
        let mut cumulative = 0;
        for (bound, count) in RECOVERY_BUCKETS.iter().zip(&self.recovery_buckets) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let recoveries = self.recoveries.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {recoveries}");
        seconds(
            &mut out,
            &format!("{name}_sum"),
            "",
            self.recovery_nanos.load(Relaxed),
        );
        let _ = writeln!(out, "{name}_count {recoveries}");

        counter(
            &mut out,
            "p9persist_fids_rebuilt_total",
            "Fids walked (and opened) again on a new link.",
            self.fids_rebuilt.load(Relaxed),
        );
        labelled(
            &mut out,
            "p9persist_fids_lost_total",
            "Fids that could not be kept, by reason.",
            "reason",
            [("stale", &self.fids_lost_stale), ("io", &self.fids_lost_io)],
        );
        labelled(
            &mut out,
            "p9persist_requests_failed_total",
            "Requests the proxy answered with an error of its own, by reason: not_completed \
             (in flight at a loss), gave_up (soft mode), writes_lost, invalid_reply, other (on a \
             lost fid, too large for the server's msize, and the like).",
            "reason",
            FAILURE_KINDS.iter().copied().zip(&self.requests_failed),
        );
        counter(
            &mut out,
            "p9persist_redials_total",
            "Redials scheduled after a lost or failed link.",
            self.redials.load(Relaxed),
        );
        counter(
            &mut out,
            "p9persist_dials_failed_total",
            "Dials to a server that failed.",
            self.dials_failed.load(Relaxed),
        );
        counter(
            &mut out,
            "p9persist_give_ups_total",
            "Soft mode: outages that passed the give-up time.",
            self.give_ups.load(Relaxed),
        );
        counter(
            &mut out,
            "p9persist_recovery_stalls_total",
            "Recoveries abandoned by the watchdog.",
            self.recovery_stalls.load(Relaxed),
        );
        labelled(
            &mut out,
            "p9persist_protocol_violations_total",
            "Protocol violations, by peer (a client's closes its session, a server's its link).",
            "peer",
            [
                ("client", &self.violations_client),
                ("server", &self.violations_server),
            ],
        );
        labelled(
            &mut out,
            "p9persist_outcomes_resolved_total",
            "Creates, removes, links and renames in flight at a loss, settled by looking at the server: done (answered so) or not done (sent again).",
            "outcome",
            [
                ("done", &self.outcomes_done),
                ("not_done", &self.outcomes_not_done),
            ],
        );
        counter(
            &mut out,
            "p9persist_late_replies_total",
            "Replies a server sent after its Rflush (dropped).",
            self.late_replies.load(Relaxed),
        );
        counter(
            &mut out,
            "p9persist_failovers_total",
            "Sessions that moved to another backend (mux): files open on the old one fail.",
            self.failovers.load(Relaxed),
        );
        labelled(
            &mut out,
            "p9persist_forwarded_bytes_total",
            "Bytes written to servers and to clients.",
            "direction",
            [
                ("to_server", &self.bytes_to_server),
                ("to_client", &self.bytes_to_client),
            ],
        );
        metric(
            &mut out,
            "p9persist_backend_sessions",
            "gauge",
            "Sessions with a live link to each backend.",
        );
        for (backend, n) in self.backends.lock().expect("metrics lock").iter() {
            let labels = format!("{{backend=\"{}\"}}", label_value(backend));
            sample(&mut out, "p9persist_backend_sessions", &labels, *n);
        }
        out
    }

    fn backend_link(&self, backend: &str, up: bool) {
        let mut backends = self.backends.lock().expect("metrics lock");
        let n = backends.entry(backend.to_owned()).or_insert(0);
        *n = if up { *n + 1 } else { n.saturating_sub(1) };
    }
}

/// A counter with one label: a sample per value.
fn labelled<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (&'a str, &'a AtomicU64)>,
) {
    metric(out, name, "counter", help);
    for (value, n) in samples {
        let labels = format!("{{{label}=\"{value}\"}}");
        sample(out, name, &labels, n.load(Relaxed));
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, n: u64) {
    metric(out, name, "counter", help);
    sample(out, name, "", n);
}

fn sample(out: &mut String, name: &str, labels: &str, n: u64) {
    let _ = writeln!(out, "{name}{labels} {n}");
}

fn seconds(out: &mut String, name: &str, labels: &str, nanos: u64) {
    let _ = writeln!(out, "{name}{labels} {:.6}", nanos as f64 / 1e9);
}

/// A label value with `\`, `"` and newlines escaped as the format asks.
fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One session's part in a proxy's [`Metrics`]: counts its events and writes, and, when the
/// session ends (dropped), takes it out of the gauges.
pub struct SessionMetrics {
    shared: Arc<Metrics>,
    /// Names a backend by number; and the name of the live (or last) link's.
    names: Box<dyn Fn(BackendId) -> String + Send>,
    backend: String,
    /// When the session lost its server, while it is without one.
    down_since: Option<Instant>,
    linked: bool,
    /// A link has been up at least once (the first connection ends a wait without a
    /// Recovered event: there was nothing to rebuild).
    ever_linked: bool,
}

impl SessionMetrics {
    /// A new session of the proxy counted in `shared`, whose backends `names` names (by the
    /// session's [`BackendId`]s).
    pub fn new(
        shared: Arc<Metrics>,
        names: impl Fn(BackendId) -> String + Send + 'static,
    ) -> SessionMetrics {
        shared.sessions_opened.fetch_add(1, Relaxed);
        SessionMetrics {
            shared,
            names: Box::new(names),
            backend: String::new(),
            down_since: None,
            linked: false,
            ever_linked: false,
        }
    }

    pub fn wrote_to_server(&self, n: usize) {
        self.shared.bytes_to_server.fetch_add(n as u64, Relaxed);
    }

    pub fn wrote_to_client(&self, n: usize) {
        self.shared.bytes_to_client.fetch_add(n as u64, Relaxed);
    }

    /// The session is serving (its link is up and rebuilt): an outage that ended without a
    /// recovery to report (the link came back before the client had settled a version) ends
    /// here. Session loops call this after each round of events.
    pub fn serving(&mut self, now: Instant) {
        if self.down_since.is_some() {
            self.back_up(now);
        }
    }

    /// Count `e`, which happened at `now`.
    pub fn event(&mut self, e: &Event, now: Instant) {
        let shared = self.shared.clone();
        let m = &*shared;
        match e {
            Event::Connected { backend, .. } => {
                self.link(false);
                self.backend = (self.names)(*backend);
                self.link(true);
                if !self.ever_linked {
                    self.ever_linked = true;
                    self.back_up(now);
                }
            }
            Event::Disconnected { .. } => {
                self.link(false);
                self.server_lost(now);
            }
            Event::Recovered { fids, elapsed, .. } => {
                m.fids_rebuilt.fetch_add(*fids as u64, Relaxed);
                m.recoveries.fetch_add(1, Relaxed);
                m.recovery_nanos
                    .fetch_add(elapsed.as_nanos() as u64, Relaxed);
                let secs = elapsed.as_secs_f64();
                if let Some(i) = RECOVERY_BUCKETS.iter().position(|b| secs <= *b) {
                    m.recovery_buckets[i].fetch_add(1, Relaxed);
                }
                self.back_up(now);
            }
            Event::FidLost { reason, .. } => {
                let n = match reason {
                    LostReason::Stale => &m.fids_lost_stale,
                    LostReason::Io => &m.fids_lost_io,
                };
                n.fetch_add(1, Relaxed);
            }
            Event::RequestFailed { failure, .. } => {
                let kind = failure.kind();
                let i = FAILURE_KINDS.iter().position(|k| *k == kind);
                m.requests_failed[i.unwrap_or(FAILURE_KINDS.len() - 1)].fetch_add(1, Relaxed);
            }
            Event::Redialing { .. } => {
                m.redials.fetch_add(1, Relaxed);
            }
            Event::DialFailed { .. } => {
                m.dials_failed.fetch_add(1, Relaxed);
                // A session whose first dial fails is without a server as much as one that
                // lost it.
                if !self.ever_linked {
                    self.server_lost(now);
                }
            }
            Event::GaveUp { .. } => {
                m.give_ups.fetch_add(1, Relaxed);
            }
            Event::RecoveryStalled { .. } => {
                m.recovery_stalls.fetch_add(1, Relaxed);
            }
            Event::ProtocolViolation { peer, .. } => {
                let n = match peer {
                    Peer::Client => &m.violations_client,
                    Peer::Server => &m.violations_server,
                };
                n.fetch_add(1, Relaxed);
            }
            Event::LateReply { .. } => {
                m.late_replies.fetch_add(1, Relaxed);
            }
            Event::OutcomeResolved { done, .. } => {
                let n = match done {
                    true => &m.outcomes_done,
                    false => &m.outcomes_not_done,
                };
                n.fetch_add(1, Relaxed);
            }
            Event::Failover { .. } => {
                m.failovers.fetch_add(1, Relaxed);
            }
            // Client gone: the session's end (the drop) takes it out of the gauges.
            _ => {}
        }
    }

    fn link(&mut self, up: bool) {
        if self.linked != up {
            self.linked = up;
            self.shared.backend_link(&self.backend, up);
        }
    }

    /// An outage begins (if one has not already).
    fn server_lost(&mut self, now: Instant) {
        if self.down_since.is_none() {
            self.down_since = Some(now);
            self.shared.outages.fetch_add(1, Relaxed);
            self.shared.sessions_without_server.fetch_add(1, Relaxed);
        }
    }

    /// The outage (if any) is over.
    fn back_up(&mut self, now: Instant) {
        if let Some(since) = self.down_since.take() {
            let nanos = now.saturating_duration_since(since).as_nanos() as u64;
            self.shared.outage_nanos.fetch_add(nanos, Relaxed);
            self.shared.sessions_without_server.fetch_sub(1, Relaxed);
        }
    }
}

impl Drop for SessionMetrics {
    fn drop(&mut self) {
        self.back_up(Instant::now());
        self.link(false);
        self.shared.sessions_closed.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use persist_core::{BackendId, LinkId};
    use std::time::Duration;

    fn value(m: &Metrics, name: &str) -> f64 {
        let text = m.render();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn outages_are_counted_once_and_end_with_the_session() {
        let shared = Metrics::new();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let connected = Event::Connected {
            backend: BackendId(0),
            link: LinkId(1),
        };
        let lost = Event::Disconnected {
            backend: BackendId(0),
            link: LinkId(1),
            loss: persist_core::LinkLoss::Closed,
            reason: "reset".into(),
        };
        let mut s = SessionMetrics::new(shared.clone(), |_| "tcp!fs!564".into());
        // The server is away when the client comes: a wait without a server.
        s.event(
            &Event::DialFailed {
                backend: BackendId(0),
                reason: "refused".into(),
            },
            at(0),
        );
        assert_eq!(value(&shared, "p9persist_sessions_without_server"), 1.0);
        s.event(&connected, at(100));
        assert_eq!(value(&shared, "p9persist_sessions_without_server"), 0.0);
        assert_eq!(
            value(
                &shared,
                "p9persist_backend_sessions{backend=\"tcp!fs!564\"}"
            ),
            1.0
        );
        // One outage however many links are lost before service resumes.
        s.event(&lost, at(1000));
        s.event(&connected, at(1500));
        s.event(&lost, at(1600));
        s.event(&connected, at(2000));
        s.event(
            &Event::Recovered {
                fids: 3,
                stale: 0,
                elapsed: Duration::from_millis(40),
            },
            at(2040),
        );
        assert_eq!(value(&shared, "p9persist_outages_total"), 2.0);
        assert_eq!(value(&shared, "p9persist_outage_seconds_total"), 1.14);
        assert_eq!(value(&shared, "p9persist_fids_rebuilt_total"), 3.0);
        assert_eq!(
            value(
                &shared,
                "p9persist_recovery_duration_seconds_bucket{le=\"0.025\"}"
            ),
            0.0
        );
        assert_eq!(
            value(
                &shared,
                "p9persist_recovery_duration_seconds_bucket{le=\"0.05\"}"
            ),
            1.0
        );
        s.event(
            &Event::RequestFailed {
                tag: 1,
                request: p9_core::MsgType::Tcreate,
                failure: persist_core::Failure::NOT_COMPLETED,
                why: "in flight",
            },
            at(2050),
        );
        assert_eq!(
            value(
                &shared,
                "p9persist_requests_failed_total{reason=\"not_completed\"}"
            ),
            1.0
        );
        // Lost again, and the client leaves while the server is away.
        s.event(&lost, at(3000));
        assert_eq!(value(&shared, "p9persist_sessions_open"), 1.0);
        drop(s);
        assert_eq!(value(&shared, "p9persist_sessions_open"), 0.0);
        assert_eq!(value(&shared, "p9persist_sessions_without_server"), 0.0);
        assert_eq!(
            value(
                &shared,
                "p9persist_backend_sessions{backend=\"tcp!fs!564\"}"
            ),
            0.0
        );
        assert_eq!(value(&shared, "p9persist_outages_total"), 3.0);
    }

    #[test]
    fn an_outage_ends_when_service_resumes_without_a_recovery() {
        let shared = Metrics::new();
        let t0 = Instant::now();
        let mut s = SessionMetrics::new(shared.clone(), |_| "b".into());
        let link = LinkId(1);
        s.event(
            &Event::Connected {
                backend: BackendId(0),
                link,
            },
            t0,
        );
        s.event(
            &Event::Disconnected {
                backend: BackendId(0),
                link,
                loss: persist_core::LinkLoss::Closed,
                reason: "reset".into(),
            },
            t0,
        );
        // Back before the client settled a version: nothing to rebuild, no Recovered event.
        s.event(
            &Event::Connected {
                backend: BackendId(0),
                link: LinkId(2),
            },
            t0,
        );
        assert_eq!(value(&shared, "p9persist_sessions_without_server"), 1.0);
        s.serving(t0 + Duration::from_millis(5));
        assert_eq!(value(&shared, "p9persist_sessions_without_server"), 0.0);
        assert_eq!(value(&shared, "p9persist_outages_total"), 1.0);
    }

    #[test]
    fn a_failover_moves_the_session_between_backend_gauges() {
        let shared = Metrics::new();
        let t0 = Instant::now();
        let names = ["fs1", "fs2"];
        let mut s = SessionMetrics::new(shared.clone(), move |b| names[b.0 as usize].into());
        let gauge = |name: &str| format!("p9persist_backend_sessions{{backend=\"{name}\"}}");
        s.event(
            &Event::Connected {
                backend: BackendId(0),
                link: LinkId(1),
            },
            t0,
        );
        assert_eq!(value(&shared, &gauge("fs1")), 1.0);
        s.event(
            &Event::Disconnected {
                backend: BackendId(0),
                link: LinkId(1),
                loss: persist_core::LinkLoss::Closed,
                reason: "reset".into(),
            },
            t0,
        );
        s.event(
            &Event::Connected {
                backend: BackendId(1),
                link: LinkId(2),
            },
            t0,
        );
        s.event(
            &Event::Failover {
                from: BackendId(0),
                to: BackendId(1),
                open_fids_lost: 2,
            },
            t0,
        );
        assert_eq!(value(&shared, &gauge("fs1")), 0.0);
        assert_eq!(value(&shared, &gauge("fs2")), 1.0);
        assert_eq!(value(&shared, "p9persist_failovers_total"), 1.0);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
