//! Accept failures, the same in every runtime: a failed accept (no file descriptors left, say)
//! is retried after a pause that grows from 5 ms to half a second, and logged at most once a
//! second with a count of the failures since the last report — never a spin, never a flood.

use std::io;
use std::time::{Duration, Instant};

use tracing::error;

/// The first pause after a failed accept.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest pause between accept attempts.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// A listener's run of accept failures.
#[derive(Debug, Default)]
pub struct AcceptErrors {
    /// What the listener accepts, for the log ("a client" when not given).
    what: Option<&'static str>,
    pause: Duration,
    /// Failures not reported yet.
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl AcceptErrors {
    /// The failures of a listener that accepts `what` ("a metrics scrape", say).
    pub fn accepting(what: &'static str) -> AcceptErrors {
        AcceptErrors {
            what: Some(what),
            ..AcceptErrors::default()
        }
    }

    /// An accept succeeded: the next failure starts the pauses over.
    pub fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
    }

    /// An accept failed with `e`: logs it if a second has passed since the last report, and
    /// returns how long to pause before accepting again.
    pub fn failed(&mut self, e: &io::Error) -> Duration {
        self.unlogged += 1;
        if self
            .logged_at
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            let more = match self.unlogged {
                1 => String::new(),
                n => format!(" ({} more failures since the last report)", n - 1),
            };
            let what = self.what.unwrap_or("a client");
            error!("cannot accept {what}: {e}{more}; retrying");
            self.logged_at = Some(Instant::now());
            self.unlogged = 0;
        }
        self.pause = (self.pause * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
        self.pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_back_off_and_log_sparingly() {
        let mut errors = AcceptErrors::default();
        let e = io::Error::from_raw_os_error(24); // EMFILE
        let pauses: Vec<u64> = (0..9)
            .map(|_| errors.failed(&e).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 500, 500]);
        // Logged once; the eight since are counted for the next report.
        assert_eq!(errors.unlogged, 8);
        errors.succeeded();
        assert_eq!(errors.failed(&e), ACCEPT_BACKOFF_MIN);
    }
}
