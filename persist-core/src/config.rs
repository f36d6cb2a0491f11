//! Session configuration: backoff, bounds, recovery window, soft mode. Every knob has a default
//! suitable for a production proxy.

use core::time::Duration;

use crate::rng::Rng;

/// Redial schedule: exponential with jitter, held low while an outage is young. Most outages
/// are restarts that last seconds, and a client blocked long after its server is back is what
/// users notice; an outage that lasts is a server that is really gone, and is redialed gently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first redial.
    pub initial: Duration,
    /// Growth per attempt, in percent (150 = ×1.5).
    pub multiplier_percent: u32,
    /// Upper bound of the delay (before jitter).
    pub max: Duration,
    /// Random spread around the delay, in percent (25 = ±25 %).
    pub jitter_percent: u32,
    /// While the outage is younger than this, the delay grows from `initial` to at most
    /// `young_max`; after, it is a quarter of the outage's age (at most `max`). No delay is
    /// below `initial` (before jitter; `max` permitting): an operator who raises it to spare
    /// a server is obeyed throughout.
    pub young: Duration,
    pub young_max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            multiplier_percent: 150,
            max: Duration::from_secs(30),
            jitter_percent: 25,
            young: Duration::from_secs(15),
            young_max: Duration::from_millis(500),
        }
    }
}

impl Backoff {
    /// The delay before redial number `attempt` (0 for the first) of an outage `age` old:
    /// while the outage is young, growing from `initial` to at most `young_max` (or `initial`,
    /// if larger); after, a quarter of the outage's age, at least that, up to `max`.
    pub(crate) fn delay(&self, attempt: u32, age: Duration, rng: &mut Rng) -> Duration {
        // The young outage's ceiling, and the old one's floor: never below `initial`.
        let young_max = self.young_max.max(self.initial);
        let base = if age < self.young {
            let mut base = self.initial.as_nanos() as u64;
            let cap = young_max.min(self.max).as_nanos() as u64;
            for _ in 0..attempt {
                base = base.saturating_mul(self.multiplier_percent as u64) / 100;
                if base >= cap {
                    break;
                }
            }
            base.min(cap)
        } else {
            let quarter = (age.as_nanos() / 4).min(u64::MAX as u128) as u64;
            quarter
                .max(young_max.as_nanos() as u64)
                .min(self.max.as_nanos() as u64)
        };
        let spread = base / 100 * self.jitter_percent.min(100) as u64;
        let jittered = base - spread + rng.upto(2 * spread);
        Duration::from_nanos(jittered)
    }
}

/// Everything a session needs to know besides its inputs.
#[derive(Clone, Debug)]
pub struct Config {
    pub backoff: Backoff,
    /// Seed of the session's random choices (backoff jitter). Same seed, same run.
    pub seed: u64,
    /// Most client requests held (in flight, or waiting while the server is away); past it the
    /// driver is told to stop reading the client
    /// ([`Session::wants_client_input`](crate::Session::wants_client_input)).
    pub queue_max_requests: usize,
    /// Most bytes of client requests held, each counted as the memory it keeps alive
    /// ([`pinned`](crate::drive::pinned): at least a read chunk).
    pub queue_max_bytes: usize,
    /// Most bytes of replies queued for a client that is not reading them (counted as
    /// [`pinned`](crate::drive::pinned)); past it the server's link is not read until the client
    /// reads, and the server's own flow control holds the rest. At least two frames of the
    /// negotiated msize are always allowed.
    pub reply_max: usize,
    /// Requests in flight at once while rebuilding fids (1 = one at a time, like styxpersist).
    pub recovery_window: usize,
    /// A recovery that gets no reply for this long is abandoned and the server redialed.
    pub watchdog: Duration,
    /// Soft mode: after this long without a server, held and new requests fail with EIO
    /// (redialing goes on). `None` is hard mode: block and redial forever.
    pub give_up_after: Option<Duration>,
    /// How many times to retry reopening an exclusive-use file before declaring it stale.
    pub exclusive_open_retries: u32,
    /// Pause between those retries.
    pub exclusive_retry_delay: Duration,
    /// Most successful lock requests remembered per fid for replay; a fid with more is stale
    /// after a reconnect (a whole-file unlock clears the history).
    pub max_lock_history: usize,
    /// Most bytes of unsynced writes kept (all files together) to be checked against the server
    /// after a reconnect, so that a later fsync tells the truth. Each kept write counts at least a
    /// read chunk ([`READ_CHUNK`](crate::drive::READ_CHUNK)): it is a slice of the buffer the
    /// driver read it into, and keeps all of that buffer in memory.
    pub replay_budget: usize,
    /// Whether a create, remove or rename in flight when its link died is resolved by looking
    /// at the server after the reconnect (sent again where the names show it never ran,
    /// answered as done only where they prove it was this request's doing, failed otherwise),
    /// rather than always failed as "possibly not completed" (styxpersist's rule).
    pub resolve_ambiguous: bool,
    /// A live link on which requests have waited this long with nothing at all arriving from
    /// the server is declared dead (a hung server) and the server redialed. In soft mode the
    /// give-up time applies too, whichever is shorter.
    pub server_timeout: Duration,
    /// A client that has not sent a whole Tversion this long after connecting is closed (it is
    /// not dialed a backend before then).
    pub version_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backoff: Backoff::default(),
            seed: 0,
            queue_max_requests: 4096,
            queue_max_bytes: 16 << 20,
            reply_max: 4 << 20,
            recovery_window: 64,
            watchdog: Duration::from_secs(30),
            give_up_after: None,
            exclusive_open_retries: 3,
            exclusive_retry_delay: Duration::from_millis(500),
            max_lock_history: 64,
            replay_budget: 64 << 20,
            resolve_ambiguous: true,
            server_timeout: Duration::from_secs(60),
            version_timeout: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// The delays of redials 0..n into an outage whose redials come `gap` apart (jitter off).
    fn delays(b: &Backoff, gap: Duration, n: u32) -> Vec<u64> {
        let b = Backoff {
            jitter_percent: 0,
            ..b.clone()
        };
        let mut rng = Rng::new(1);
        (0..n)
            .map(|i| b.delay(i, gap * i, &mut rng).as_millis() as u64)
            .collect()
    }

    #[test]
    fn the_schedule_grows_to_half_a_second_then_to_a_quarter_of_the_outage() {
        let d = delays(&Backoff::default(), Duration::from_secs(1), 40);
        assert_eq!(d[..6], [100, 150, 225, 337, 500, 500]);
        assert_eq!(d[14], 500, "young until 15 s");
        assert_eq!(d[20], 5_000, "a quarter of 20 s");
        assert_eq!(d[39], 9_750);
        let d = delays(&Backoff::default(), Duration::from_secs(10), 20);
        assert_eq!(d[19], 30_000, "at most max");
    }

    #[test]
    fn no_delay_is_below_the_initial_one() {
        let b = Backoff {
            initial: Duration::from_secs(5),
            ..Backoff::default()
        };
        let d = delays(&b, Duration::from_secs(1), 40);
        assert!(d.iter().all(|&ms| ms >= 5_000), "{d:?}");
        assert_eq!(d[39], 9_750, "a quarter of the outage once that is more");
    }
}
