//! A shutdown signal any thread may raise and every part of a proxy hears: blocked waits are
//! woken (a condition variable for the timed ones, hooks for the others).

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Asks a running proxy to stop. Clones share one signal; it cannot be taken back.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    changed: Condvar,
}

/// Something to run once at shutdown (wake an accept, tell a thread).
type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    down: bool,
    hooks: Vec<(u64, Hook)>,
    next_hook: u64,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Ask everything using this signal to stop. Calling it again does nothing.
    pub fn shutdown(&self) {
        let hooks = {
            let mut state = self.lock();
            if state.down {
                return;
            }
            state.down = true;
            std::mem::take(&mut state.hooks)
        };
        self.inner.changed.notify_all();
        for (_, hook) in hooks {
            hook();
        }
    }

    pub fn is_shutdown(&self) -> bool {
        self.lock().down
    }

    /// Sleep for `pause`, or less if shutdown comes first; returns whether it came.
    pub(crate) fn wait_timeout(&self, pause: Duration) -> bool {
        let until = Instant::now() + pause;
        let mut state = self.lock();
        while !state.down {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .inner
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.down
    }

    /// Run `hook` at shutdown (at once if it already happened), unless the returned guard is
    /// dropped first.
    pub(crate) fn on_shutdown(&self, hook: impl FnOnce() + Send + 'static) -> HookGuard {
        let mut state = self.lock();
        if state.down {
            drop(state);
            hook();
            return HookGuard {
                shutdown: self.clone(),
                id: None,
            };
        }
        let id = state.next_hook;
        state.next_hook += 1;
        state.hooks.push((id, Box::new(hook)));
        HookGuard {
            shutdown: self.clone(),
            id: Some(id),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("down", &self.is_shutdown())
            .finish()
    }
}

/// Removes its hook when dropped (a proxy that returned needs no waking).
pub(crate) struct HookGuard {
    shutdown: Shutdown,
    id: Option<u64>,
}

impl Drop for HookGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.shutdown.lock().hooks.retain(|(h, _)| *h != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn hooks_run_once_and_unsubscribe() {
        let s = Shutdown::new();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let kept = s.on_shutdown(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let r = ran.clone();
        drop(s.on_shutdown(move || {
            r.fetch_add(10, Ordering::SeqCst);
        }));
        assert!(!s.wait_timeout(Duration::from_millis(1)));
        let waiter = {
            let s = s.clone();
            std::thread::spawn(move || s.wait_timeout(Duration::from_secs(30)))
        };
        s.clone().shutdown();
        s.shutdown();
        assert!(waiter.join().unwrap());
        assert!(s.is_shutdown());
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        // Too late to wait for: runs at once.
        let r = ran.clone();
        let _late = s.on_shutdown(move || {
            r.fetch_add(100, Ordering::SeqCst);
        });
        assert_eq!(ran.load(Ordering::SeqCst), 101);
        drop(kept);
    }
}
