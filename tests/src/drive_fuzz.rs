//! The drive layer under arbitrary input: byte chunks from the client and from links (valid
//! frames, garbage, pieces of either), dial results (late ones too), link failures, partial
//! writes and time passing, in any order. The fuzz target `drive` runs this; the test suite
//! replays its corpus (fuzz/corpus/drive).
//!
//! Beyond "no panic": a link the drive closed is never used again (nothing queued for it,
//! nothing read from it), a dial result is accepted at most once and only for a dial the drive
//! is waiting on, and the drive never reads a client it has queued past its bound for.

use std::collections::BTreeSet;

use arbitrary::Unstructured;
use bytes::Bytes;
use p9_core::Dialect;
use persist_core::drive::{Action, Drive, OUT_HIGH_WATER};
use persist_core::{BackendId, Config, Instant, LinkId};

fn frame_or_garbage(u: &mut Unstructured<'_>) -> Option<Bytes> {
    if u.arbitrary::<bool>().ok()? {
        let dialect = *u.choose(&Dialect::ALL).ok()?;
        p9_core::arbitrary::arbitrary_fcall(u, dialect)
            .ok()?
            .to_frame()
            .ok()
    } else {
        let n = u.int_in_range(0..=64usize).ok()?;
        Some(Bytes::copy_from_slice(u.bytes(n.min(u.len())).ok()?))
    }
}

/// A piece of `frame`: a prefix or suffix of any length, or all of it.
fn piece(u: &mut Unstructured<'_>, frame: Bytes) -> Bytes {
    match u.int_in_range(0..=2u8).unwrap_or(0) {
        0 => frame,
        1 => {
            let n = u.int_in_range(0..=frame.len()).unwrap_or(0);
            frame.slice(..n)
        }
        _ => {
            let n = u.int_in_range(0..=frame.len()).unwrap_or(0);
            frame.slice(n..)
        }
    }
}

/// Run one input; `Err` says which promise broke.
pub fn exercise(data: &[u8]) -> Result<(), String> {
    let mut u = Unstructured::new(data);
    let cfg = Config {
        seed: 1,
        queue_max_requests: 8,
        ..Config::default()
    };
    let mut ms = 0u64;
    let now = |ms: u64| Instant::from_millis(ms);
    let mut d = Drive::new(cfg, BackendId(0), now(ms));
    // Links as the runtime sees them: dialing, connected, and every one ever named.
    let mut dialing: Vec<LinkId> = Vec::new();
    let mut connected: Vec<LinkId> = Vec::new();
    let mut closed: BTreeSet<LinkId> = BTreeSet::new();
    let mut ever: Vec<LinkId> = Vec::new();
    while !u.is_empty() && !d.is_finished() {
        let Ok(op) = u.int_in_range(0..=9u8) else {
            break;
        };
        let pick = |u: &mut Unstructured<'_>, from: &[LinkId]| -> Option<LinkId> {
            u.choose(from).ok().copied()
        };
        match op {
            0 | 1 => {
                let Some(f) = frame_or_garbage(&mut u) else {
                    break;
                };
                let bytes = piece(&mut u, f);
                if let Some(buf) = d.client_read_buf() {
                    buf.extend_from_slice(&bytes);
                    if !bytes.is_empty() {
                        d.handle_client_read(now(ms), bytes.len());
                    }
                }
            }
            2 => {
                let (Some(link), Some(f)) = (pick(&mut u, &ever), frame_or_garbage(&mut u)) else {
                    continue;
                };
                let bytes = piece(&mut u, f);
                match d.link_read_buf(link) {
                    Some(buf) => {
                        if closed.contains(&link) {
                            return Err(format!("link {} is read after it was closed", link.0));
                        }
                        buf.extend_from_slice(&bytes);
                        if !bytes.is_empty() {
                            d.handle_link_read(now(ms), link, bytes.len());
                        }
                    }
                    // A runtime still holding a late connection may hand its bytes over.
                    None => d.handle_link_bytes(now(ms), link, &bytes),
                }
            }
            3 => {
                let Some(link) = pick(&mut u, &ever) else {
                    continue;
                };
                let ok = u.arbitrary::<bool>().unwrap_or(true);
                let waited = dialing.contains(&link);
                let taken =
                    d.handle_dial_done(now(ms), link, if ok { Ok(()) } else { Err("refused") });
                if taken && (!waited || !ok) {
                    return Err(format!(
                        "dial result for link {} taken though not awaited",
                        link.0
                    ));
                }
                dialing.retain(|l| *l != link);
                if taken {
                    connected.push(link);
                }
            }
            4 => {
                if let Some(link) = pick(&mut u, &ever) {
                    d.handle_link_failed(now(ms), link, "fuzz: reset");
                }
            }
            5 => {
                let n = u.int_in_range(0..=d.client_out().len()).unwrap_or(0);
                d.client_written(now(ms), n);
            }
            6 => {
                if let Some(link) = pick(&mut u, &ever) {
                    let n = u.int_in_range(0..=d.link_out(link).len()).unwrap_or(0);
                    d.link_written(link, n);
                }
            }
            7 => {
                ms += u.int_in_range(0..=60_000u64).unwrap_or(0);
                d.handle_timeout(now(ms));
            }
            8 => d.handle_client_gone(now(ms)),
            _ => {
                if let Some(link) = pick(&mut u, &connected) {
                    d.handle_link_read(now(ms), link, 0);
                }
            }
        }
        while let Some(a) = d.poll_action() {
            match a {
                Action::Dial { link, .. } => {
                    if ever.contains(&link) {
                        return Err(format!("link {} dialed twice", link.0));
                    }
                    dialing.push(link);
                    ever.push(link);
                }
                Action::CloseLink { link } => {
                    dialing.retain(|l| *l != link);
                    connected.retain(|l| *l != link);
                    closed.insert(link);
                }
            }
        }
        while d.poll_event().is_some() {}
        for link in &closed {
            if !d.link_out(*link).is_empty() {
                return Err(format!("frames queued for closed link {}", link.0));
            }
        }
        let limit = OUT_HIGH_WATER.max(2 * d.session().client_msize() as usize);
        if d.client_out().len() >= limit && d.wants_client_read() {
            return Err("the client is read while its replies pile up".into());
        }
    }
    Ok(())
}
