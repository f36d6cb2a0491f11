//! Failover between equivalent backends (the mux's rules, DESIGN §3.5), on sessions whose
//! backend an endpoint of two chooses: files open on the failed backend answer I/O errors until
//! clunked, requests in flight on them fail the same way, unopened fids move to the other
//! backend by path, and a session stays on its new backend when the old one returns.

mod harness;

use harness::*;
use p9_core::*;
use persist_core::{BackendId, Endpoint, Event, Instant, LostReason, Session};

/// An attached pair whose session dials through an endpoint of two backends.
fn two_backends(dialect: Dialect) -> Pair {
    let cfg = config();
    let now = Instant::from_millis(1_000);
    let endpoint = Endpoint::new(2, &cfg);
    let s = Session::with_backends(cfg, Box::new(endpoint), now);
    Pair::attach(Pair::with_session(dialect, s, now))
}

fn getattr(fid: u32) -> Tgetattr {
    Tgetattr {
        fid: Fid(fid),
        request_mask: 0x7ff,
    }
}

#[test]
fn open_files_fail_with_io_errors_and_the_rest_move() {
    let mut p = two_backends(Dialect::DotL);
    let first = p.dials[0];
    p.open_file(2, 1, &["data", "open.txt"], lflags::RDWR);
    p.server.touch(&["data", "walked.txt"], false);
    p.client(
        3,
        Twalk {
            fid: Fid(0),
            newfid: Fid(2),
            wnames: WalkNames::new(["data", "walked.txt"]).unwrap(),
        },
    );
    p.serve();
    // A read in flight on the open file when the backend dies.
    p.client(
        4,
        Tread {
            fid: Fid(1),
            offset: 0,
            count: 100,
        },
    );
    p.kill();
    p.reconnect();
    let second = *p.dials.last().unwrap();
    assert_ne!(first, second, "the session moved to the other backend");
    assert!(
        p.events.iter().any(|e| matches!(e,
            Event::Failover { from, to, open_fids_lost: 1 } if *from == first && *to == second)),
        "{:?}",
        p.events
    );
    assert!(p.events.iter().any(|e| matches!(
        e,
        Event::FidLost {
            fid: 1,
            reason: LostReason::Io,
            ..
        }
    )));
    // The read in flight fails with EIO, once.
    assert_eq!(p.reply_to(4), &Msg::Rlerror(Rlerror { ecode: 5 }));
    // The open file answers EIO from now on; the walked one works on the new backend.
    p.client(5, getattr(1));
    p.serve();
    assert_eq!(p.reply_to(5), &Msg::Rlerror(Rlerror { ecode: 5 }));
    p.client(6, getattr(2));
    p.serve();
    assert!(
        matches!(p.reply_to(6), Msg::Rgetattr(_)),
        "{:?}",
        p.reply_to(6)
    );
    // Clunking the failed fid is answered, and frees it.
    p.client(7, Tclunk { fid: Fid(1) });
    p.serve();
    assert_eq!(p.reply_to(7), &Msg::Rclunk(Rclunk {}));
}

#[test]
fn a_session_stays_on_its_new_backend() {
    let mut p = two_backends(Dialect::DotL);
    let first = p.dials[0];
    p.kill();
    p.reconnect();
    let second = *p.dials.last().unwrap();
    assert_ne!(first, second);
    // Long after, the first backend would be healthy again; the second fails only now, so
    // the session goes back to the first — never before.
    for _ in 0..3 {
        p.client(9, getattr(0));
        p.serve();
        assert!(matches!(p.reply_to(9), Msg::Rgetattr(_)));
        p.to_client.clear();
        p.advance_by(std::time::Duration::from_secs(60));
    }
    assert_eq!(
        p.dials.len(),
        2,
        "no dial while the second backend is healthy"
    );
    p.kill();
    p.reconnect();
    assert_eq!(*p.dials.last().unwrap(), first);
    assert_eq!(
        p.events
            .iter()
            .filter(|e| matches!(e, Event::Failover { .. }))
            .count(),
        2
    );
}

#[test]
fn a_lone_backend_is_never_a_failover() {
    let mut p = Pair::attached(Dialect::DotL);
    p.open_file(2, 1, &["f"], lflags::RDWR);
    p.kill();
    p.reconnect();
    assert!(p.dials.iter().all(|&b| b == BackendId(0)));
    assert!(!p.events.iter().any(|e| matches!(e, Event::Failover { .. })));
    p.client(3, getattr(1));
    p.serve();
    assert!(matches!(p.reply_to(3), Msg::Rgetattr(_)));
}
