//! The drive layer's contract, one test per promise (each was a bug of the first tokio driver),
//! with ramfs as the server and the bytes moved by hand; then its fuzz property over the fuzz
//! corpus (fuzz/corpus/drive) and over random inputs.

use std::path::Path;
use std::time::Duration;

use p9_core::*;
use persist_core::drive::{self, Action, Drive, OUT_HIGH_WATER};
use persist_core::{BackendId, Config, Event, Instant, LinkId, Peer};

/// A drive, a ramfs server and a hand that moves bytes between them.
struct Bench {
    drive: Drive,
    ms: u64,
    fs: ramfs::Fs,
    server: Option<(LinkId, ramfs::Conn, FrameDecoder)>,
    dials: Vec<LinkId>,
    closed: Vec<LinkId>,
    events: Vec<Event>,
    client: FrameDecoder,
}

impl Bench {
    fn new(cfg: Config) -> Bench {
        let mut b = Bench {
            drive: Drive::new(cfg, BackendId(0), Instant::from_millis(0)),
            ms: 0,
            fs: ramfs::Fs::new(),
            server: None,
            dials: Vec::new(),
            closed: Vec::new(),
            events: Vec::new(),
            client: FrameDecoder::new(1 << 20),
        };
        b.actions();
        // A session dials its backend once the client speaks: the client's Tversion waits for
        // the link.
        b.send(
            NOTAG,
            Tversion {
                msize: 65536,
                version: "9P2000.L".into(),
            },
        );
        b
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.ms)
    }

    fn actions(&mut self) {
        while let Some(a) = self.drive.poll_action() {
            match a {
                Action::Dial { link, .. } => self.dials.push(link),
                Action::CloseLink { link } => {
                    self.closed.push(link);
                    self.dials.retain(|l| *l != link);
                    if self.server.as_ref().is_some_and(|s| s.0 == link) {
                        let (_, conn, _) = self.server.take().unwrap();
                        conn.close(&mut self.fs);
                    }
                }
            }
        }
        while let Some(e) = self.drive.poll_event() {
            self.events.push(e);
        }
    }

    /// Complete the oldest dial the drive asked for.
    fn connect(&mut self) -> LinkId {
        let link = self.dials.remove(0);
        assert!(self.drive.handle_dial_done(self.now(), link, Ok(())));
        self.server = Some((
            link,
            ramfs::Conn::new(&mut self.fs, 65536),
            FrameDecoder::new(1 << 20),
        ));
        self.actions();
        link
    }

    fn send(&mut self, tag: u16, msg: impl Into<Msg>) {
        let frame = Fcall::new(tag, msg.into()).to_frame().unwrap();
        self.drive.handle_client_bytes(self.now(), &frame);
        self.actions();
    }

    /// Let the server answer everything sent to it, and the client read everything; returns the
    /// replies the client got.
    fn run(&mut self) -> Vec<Fcall> {
        let mut got = Vec::new();
        loop {
            let mut moved = false;
            if let Some((link, _, _)) = &self.server {
                let link = *link;
                let out: Vec<u8> = self
                    .drive
                    .link_out(link)
                    .chunks()
                    .flatten()
                    .copied()
                    .collect();
                if !out.is_empty() {
                    moved = true;
                    self.serve(link, &out);
                }
            }
            let out: Vec<u8> = self
                .drive
                .client_out()
                .chunks()
                .flatten()
                .copied()
                .collect();
            if !out.is_empty() {
                moved = true;
                let now = self.now();
                self.drive.client_written(now, out.len());
                self.client.read_buf().extend_from_slice(&out);
                while let Some(f) = self.client.next_frame().unwrap() {
                    got.push(Fcall::decode(&f, Dialect::DotL).unwrap());
                }
            }
            self.actions();
            if !moved {
                return got;
            }
        }
    }

    /// The server takes `out` (all the drive queued for `link`) and answers it.
    fn serve(&mut self, link: LinkId, out: &[u8]) {
        self.drive.link_written(link, out.len());
        let (_, conn, dec) = self.server.as_mut().unwrap();
        dec.read_buf().extend_from_slice(out);
        let mut replies = Vec::new();
        while let Some(f) = dec.next_frame().unwrap() {
            replies.extend_from_slice(&conn.handle(&mut self.fs, &f));
        }
        self.drive.handle_link_bytes(self.now(), link, &replies);
    }

    /// Settle the version the client sent at the start, and attach fid 0.
    fn attach(&mut self) {
        let r = self.run();
        assert!(matches!(r[0].msg, Msg::Rversion(_)), "{r:?}");
        let at = Tattach {
            fid: Fid(0),
            afid: NOFID,
            uname: "u".into(),
            aname: "".into(),
            n_uname: Some(0),
        };
        self.send(1, at);
        let r = self.run();
        assert!(
            matches!(r.last().map(|f| &f.msg), Some(Msg::Rattach(_))),
            "{r:?}"
        );
    }

    /// `ms` milliseconds pass; then whatever timeout is due.
    fn pass(&mut self, ms: u64) {
        self.ms += ms;
        self.drive.handle_timeout(self.now());
        self.actions();
    }

    /// `secs` seconds pass with nothing but timeouts, a second at a time.
    fn idle(&mut self, secs: u64) {
        for _ in 0..secs {
            self.pass(1_000);
        }
    }

    fn wait_for_redial(&mut self) {
        self.ms += 40_000;
        self.drive.handle_timeout(self.now());
        self.actions();
    }
}

fn getattr(fid: u32) -> Tgetattr {
    Tgetattr {
        fid: Fid(fid),
        request_mask: 0x7ff,
    }
}

/// A write to the server that fails closes that link at once, drops what was queued for it
/// (the session resends by its rules on the next link), and the session redials — the first
/// tokio driver kept the dead link and spun.
#[test]
fn a_failed_write_closes_the_link_and_redials() {
    let mut b = Bench::new(Config::default());
    let link = b.connect();
    b.attach();
    b.send(2, getattr(0));
    assert!(
        !b.drive.link_out(link).is_empty(),
        "the request waits to be written"
    );
    b.drive
        .handle_link_failed(b.now(), link, "write: broken pipe");
    b.actions();
    assert_eq!(b.closed, vec![link], "the runtime is told to drop the link");
    assert!(b.drive.link_out(link).is_empty() && b.drive.link_read_buf(link).is_none());
    assert!(b.events.iter().any(
        |e| matches!(e, Event::Disconnected { reason, .. } if reason.contains("broken pipe"))
    ));
    b.wait_for_redial();
    assert_eq!(b.dials.len(), 1, "a redial");
    b.connect();
    let r = b.run();
    assert!(
        r.iter()
            .any(|f| f.tag == 2 && matches!(f.msg, Msg::Rgetattr(_))),
        "{r:?}"
    );
}

/// A dial that completes after the session gave up on it is refused: it never replaces the
/// live link.
#[test]
fn a_late_dial_never_replaces_the_live_link() {
    let mut b = Bench::new(Config::default());
    let first = b.dials[0];
    // The dial hangs past the session's watchdog; it abandons it and dials again.
    b.ms += 31_000;
    b.drive.handle_timeout(b.now());
    b.actions();
    assert!(b.closed.contains(&first));
    b.wait_for_redial();
    let live = b.connect();
    b.attach();
    assert!(
        !b.drive.handle_dial_done(b.now(), first, Ok(())),
        "the late dial is refused"
    );
    b.actions();
    b.send(2, getattr(0));
    assert!(
        !b.drive.link_out(live).is_empty(),
        "the live link still carries requests"
    );
    assert!(b.drive.link_out(first).is_empty());
    let r = b.run();
    assert!(matches!(r[0].msg, Msg::Rgetattr(_)));
}

/// Whole frames the client sent while the session held all it may are handed over as soon as
/// it wants them, without waiting for more bytes: a client that sent everything and waits for
/// replies gets them.
#[test]
fn frames_held_back_are_handed_over_when_room_returns() {
    let mut b = Bench::new(Config {
        queue_max_requests: 1,
        ..Config::default()
    });
    let link = b.connect();
    b.attach();
    b.drive.handle_link_failed(b.now(), link, "read: reset");
    b.actions();
    // Three requests in one read during the outage: one is held, two wait in the drive.
    let mut bytes = Vec::new();
    for tag in 2..5 {
        bytes.extend_from_slice(&Fcall::new(tag, getattr(0)).to_frame().unwrap());
    }
    b.drive.handle_client_bytes(b.now(), &bytes);
    assert!(b.drive.client_frame_waiting());
    assert!(!b.drive.wants_client_read());
    b.wait_for_redial();
    b.connect();
    // No more client bytes arrive: all three are answered all the same.
    let r = b.run();
    let tags: Vec<u16> = r
        .iter()
        .filter(|f| matches!(f.msg, Msg::Rgetattr(_)))
        .map(|f| f.tag)
        .collect();
    assert_eq!(tags, vec![2, 3, 4]);
}

/// Bytes of a link the drive closed are ignored, and nothing is ever queued for it.
#[test]
fn a_closed_link_stays_closed() {
    let mut b = Bench::new(Config::default());
    let link = b.connect();
    b.attach();
    b.drive.handle_link_read(b.now(), link, 0);
    b.actions();
    let stray = Fcall::new(9, Rclunk {}).to_frame().unwrap();
    b.drive.handle_link_bytes(b.now(), link, &stray);
    b.actions();
    assert!(!b
        .events
        .iter()
        .any(|e| matches!(e, Event::ProtocolViolation { .. })));
    b.send(2, getattr(0));
    assert!(b.drive.link_out(link).is_empty());
}

/// A client that stops reading its replies stops being read (the proxy does not buffer them
/// without bound), and is read again once it catches up.
#[test]
fn a_client_that_reads_nothing_is_not_read() {
    let mut b = Bench::new(Config::default());
    b.connect();
    b.attach();
    let mut tag = 10u16;
    while b.drive.wants_client_read() {
        b.send(tag, getattr(0));
        tag += 1;
        // The server answers; the client reads nothing.
        let (link, _, _) = b.server.as_ref().unwrap();
        let link = *link;
        let out: Vec<u8> = b.drive.link_out(link).chunks().flatten().copied().collect();
        b.serve(link, &out);
        assert!(tag < 60_000, "never stopped reading");
    }
    assert!(b.drive.client_out().len() >= OUT_HIGH_WATER);
    assert!(b.drive.client_read_buf().is_none());
    let r = b.run();
    assert_eq!(r.len(), (tag - 10) as usize);
    assert!(b.drive.wants_client_read());
}

/// A client that pipelines requests and reads none of the replies: once the replies queued
/// for it reach the reply bound, the server's link is not read (the replies wait in the
/// server's socket, not in the proxy), and the server is not judged silent however long that
/// lasts — nor just after reading resumes, with a request the server has not answered yet.
/// When the client reads again every reply arrives, in order.
#[test]
fn a_client_that_reads_no_replies_stops_the_server_link_not_the_session() {
    let cfg = Config {
        reply_max: 256 << 10,
        server_timeout: Duration::from_secs(5),
        ..Config::default()
    };
    let mut b = Bench::new(cfg);
    let link = b.connect();
    b.attach();
    // The server's socket: replies the drive has not read yet.
    let mut socket: Vec<u8> = Vec::new();
    let deliver = |b: &mut Bench, socket: &mut Vec<u8>| {
        while !socket.is_empty() {
            let Some(buf) = b.drive.link_read_buf(link) else {
                return;
            };
            let n = socket.len().min(drive::READ_CHUNK);
            buf.extend_from_slice(&socket[..n]);
            socket.drain(..n);
            let now = b.now();
            b.drive.handle_link_read(now, link, n);
            b.actions();
        }
    };
    let mut sent = 0u16;
    for tag in 10..310u16 {
        if !b.drive.wants_client_read() {
            break;
        }
        b.send(tag, getattr(0));
        sent += 1;
        let out: Vec<u8> = b.drive.link_out(link).chunks().flatten().copied().collect();
        b.drive.link_written(link, out.len());
        let (_, conn, dec) = b.server.as_mut().unwrap();
        dec.read_buf().extend_from_slice(&out);
        while let Some(f) = dec.next_frame().unwrap() {
            socket.extend_from_slice(&conn.handle(&mut b.fs, &f));
        }
        deliver(&mut b, &mut socket);
    }
    assert!(b.drive.links_held(), "the link is held");
    assert!(!socket.is_empty(), "replies wait in the server's socket");
    let queued = b.drive.client_out().charge();
    assert!(
        ((256 << 10)..(256 << 10) + 2 * drive::READ_CHUNK).contains(&queued),
        "replies queued for the client: {queued}"
    );
    // One more request the server does not answer yet.
    b.send(400, getattr(0));
    sent += 1;
    let unanswered: Vec<u8> = b.drive.link_out(link).chunks().flatten().copied().collect();
    b.drive.link_written(link, unanswered.len());
    // A minute passes with the client reading nothing: the link stays, nothing is redialed.
    b.idle(60);
    assert!(b.closed.is_empty(), "{:?}", b.events);
    // The client reads everything: the link is read again, and the request in flight is not
    // judged silent for the minute the link was held.
    let mut got = Vec::new();
    while !b.drive.client_out().is_empty() || !socket.is_empty() {
        let out: Vec<u8> = b.drive.client_out().chunks().flatten().copied().collect();
        let now = b.now();
        b.drive.client_written(now, out.len());
        b.client.read_buf().extend_from_slice(&out);
        while let Some(f) = b.client.next_frame().unwrap() {
            got.push(Fcall::decode(&f, Dialect::DotL).unwrap());
        }
        deliver(&mut b, &mut socket);
    }
    assert!(!b.drive.links_held());
    b.pass(2_000);
    assert!(b.closed.is_empty(), "judged silent: {:?}", b.events);
    // The last request is answered now, and everything came in order.
    let (_, conn, dec) = b.server.as_mut().unwrap();
    dec.read_buf().extend_from_slice(&unanswered);
    while let Some(f) = dec.next_frame().unwrap() {
        socket.extend_from_slice(&conn.handle(&mut b.fs, &f));
    }
    deliver(&mut b, &mut socket);
    got.extend(b.run());
    let tags: Vec<u16> = got.iter().map(|f| f.tag).collect();
    let mut want: Vec<u16> = (10..10 + sent - 1).collect();
    want.push(400);
    assert_eq!(tags, want);
    assert!(got.iter().all(|f| matches!(f.msg, Msg::Rgetattr(_))));
}

/// The server's silence counts from when its link is read again: a request in flight for the
/// whole minute a client read none of its replies is not judged hung the moment the client
/// catches up (the server was not being listened to).
#[test]
fn silence_counts_from_when_a_held_link_is_read_again() {
    let cfg = Config {
        reply_max: 0,
        server_timeout: Duration::from_secs(5),
        ..Config::default()
    };
    let mut b = Bench::new(cfg);
    let link = b.connect();
    b.attach();
    // Answered replies pile up for the client until the link is held.
    let mut tag = 10u16;
    while !b.drive.links_held() {
        b.send(tag, getattr(0));
        tag += 1;
        let out: Vec<u8> = b.drive.link_out(link).chunks().flatten().copied().collect();
        b.serve(link, &out);
        assert!(tag < 1000, "the link is never held");
    }
    // One more the server has not answered, and a minute with the client reading nothing.
    b.send(tag, getattr(0));
    let out: Vec<u8> = b.drive.link_out(link).chunks().flatten().copied().collect();
    b.drive.link_written(link, out.len());
    b.idle(60);
    // The client catches up; the server's answer is not due yet.
    let queued: Vec<u8> = b.drive.client_out().chunks().flatten().copied().collect();
    let now = b.now();
    b.drive.client_written(now, queued.len());
    assert!(!b.drive.links_held());
    b.pass(2_000);
    assert!(b.closed.is_empty(), "judged silent: {:?}", b.events);
    // Past the timeout from then, it is.
    b.pass(4_000);
    assert_eq!(b.closed, vec![link], "{:?}", b.events);
}

/// Bad framing from the client ends its session with the reason; from the server, drops the
/// link and redials.
#[test]
fn bad_framing_is_a_violation() {
    let mut b = Bench::new(Config::default());
    let link = b.connect();
    b.attach();
    b.drive.handle_link_bytes(b.now(), link, &[3, 0, 0, 0]);
    b.actions();
    assert!(b.closed.contains(&link));
    assert!(b.events.iter().any(|e| matches!(
        e,
        Event::ProtocolViolation {
            peer: Peer::Server,
            ..
        }
    )));
    assert!(!b.drive.is_finished());
    b.drive
        .handle_client_bytes(b.now(), &[0xff, 0xff, 0xff, 0x7f]);
    b.actions();
    assert!(b.events.iter().any(|e| matches!(
        e,
        Event::ProtocolViolation {
            peer: Peer::Client,
            ..
        }
    )));
    assert!(b.drive.is_finished());
}

/// Sessions of one proxy redial on schedules of their own: one seed for all would bring every
/// client back in lock-step after a restart.
#[test]
fn each_session_has_its_own_jitter() {
    let delays: Vec<Duration> = (1..=4)
        .map(|n| {
            let cfg = Config {
                seed: drive::session_seed(42, n),
                ..Config::default()
            };
            let mut b = Bench::new(cfg);
            let link = b.dials[0];
            b.drive.handle_dial_done(b.now(), link, Err("refused"));
            b.actions();
            b.events
                .iter()
                .find_map(|e| match e {
                    Event::Redialing { delay, .. } => Some(*delay),
                    _ => None,
                })
                .unwrap()
        })
        .collect();
    for (i, a) in delays.iter().enumerate() {
        for b in &delays[i + 1..] {
            assert_ne!(a, b, "two sessions drew the same redial delay: {delays:?}");
        }
    }
    assert_eq!(drive::session_seed(42, 1), drive::session_seed(42, 1));
}

/// Every input of the fuzz corpus keeps the drive's promises.
#[test]
fn the_fuzz_corpus_holds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/drive");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if let Err(what) = tests::drive_fuzz::exercise(&data) {
            panic!("{}: {what}", path.display());
        }
        n += 1;
    }
    // A corpus gone missing would make this test vacuous.
    assert!(n >= 50, "only {n} inputs in {}", dir.display());
}

/// And so do random inputs (a few seconds of what the fuzzer does for hours).
#[test]
fn random_inputs_hold() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..3000 {
        let len = (x % 2048) as usize;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        if let Err(what) = tests::drive_fuzz::exercise(&data) {
            panic!("input {data:?}: {what}");
        }
    }
}
