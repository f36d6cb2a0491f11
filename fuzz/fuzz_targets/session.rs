//! Arbitrary sequences of inputs to a session — client and server frames (garbage or valid
//! messages of any type), links coming up and going down, failed dials, time passing — must
//! never panic, never emit a frame that does not decode, and never hold more requests than the
//! client could have outstanding.
#![no_main]

use arbitrary::Unstructured;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use p9_core::{Dialect, Fcall};
use persist_core::{BackendId, Config, Instant, LinkId, Output, Session};

fn frame(u: &mut Unstructured<'_>, valid: bool) -> Option<Bytes> {
    if valid {
        let dialect = *u.choose(&Dialect::ALL).ok()?;
        p9_core::arbitrary::arbitrary_fcall(u, dialect).ok()?.to_frame().ok()
    } else {
        let n = u.int_in_range(0..=64usize).ok()?;
        Some(Bytes::copy_from_slice(u.bytes(n.min(u.len())).ok()?))
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let cfg = Config { seed: 1, queue_max_requests: 64, ..Config::default() };
    let mut now = Instant::from_millis(0);
    let mut s = Session::new(cfg, BackendId(0), now);
    let mut dialed: Option<LinkId> = None;
    let mut up: Option<LinkId> = None;
    while !u.is_empty() && !s.is_closed() {
        let Ok(op) = u.int_in_range(0..=7u8) else { break };
        match op {
            0 | 1 => {
                if let Some(f) = frame(&mut u, op == 1) {
                    if s.wants_client_input() {
                        s.handle_client_frame(now, f);
                    }
                }
            }
            2 | 3 => {
                if let (Some(link), Some(f)) = (up, frame(&mut u, op == 3)) {
                    s.handle_server_frame(now, link, f);
                }
            }
            4 => {
                if let Some(link) = dialed.take() {
                    up = Some(link);
                    s.handle_link_up(now, link);
                }
            }
            5 => {
                if let Some(link) = up.take() {
                    s.handle_link_down(now, link, "fuzz");
                }
            }
            6 => {
                if let Some(link) = dialed.take() {
                    s.handle_dial_failed(now, link, "fuzz");
                }
            }
            _ => {
                let ms = u.int_in_range(0..=60_000u64).unwrap_or(0);
                now = Instant::from_nanos(now.as_nanos() + ms * 1_000_000);
                s.handle_timeout(now);
            }
        }
        while let Some(o) = s.poll_output() {
            match o {
                Output::Dial { link, .. } => dialed = Some(link),
                Output::CloseLink { link } if up == Some(link) => up = None,
                Output::ToClient(f) | Output::ToLink { frame: f, .. } => {
                    let ok = Dialect::ALL.iter().any(|d| Fcall::decode(&f, *d).is_ok());
                    assert!(ok, "the session emitted an undecodable frame");
                }
                _ => {}
            }
        }
        while s.poll_event().is_some() {}
        assert!(s.requests_held() <= 65536);
    }
});
