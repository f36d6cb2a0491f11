//! The session's rules besides the replay table: backoff, bounds and backpressure, soft mode,
//! the watchdog, protocol violations, smaller msize, stale fids, exclusive opens, lock replay,
//! authentication, renames, version resets, flush.

mod harness;

use std::time::Duration;

use harness::*;
use p9_core::*;
use persist_core::{Config, Event, Output, Peer};

fn redial_delays(p: &Pair) -> Vec<Duration> {
    p.events
        .iter()
        .filter_map(|e| match e {
            Event::Redialing { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect()
}

#[test]
fn redials_back_off_exponentially_with_jitter_up_to_the_cap() {
    let mut p = Pair::attached(Dialect::DotL);
    p.kill();
    for _ in 0..40 {
        p.advance();
        p.refuse_dial();
    }
    let delays = redial_delays(&p);
    assert_eq!(delays.len(), 41);
    // Young outages (under 15 s): from 0.1 s, ×1.5, at most 0.5 s — a restarted server is
    // found within half a second. Older ones: a quarter of the outage's age, up to 30 s.
    let mut age = 0.0f64;
    for (i, d) in delays.iter().enumerate() {
        let s = d.as_secs_f64();
        let base = match age < 15.0 {
            true => (0.1 * 1.5f64.powi(i as i32)).min(0.5),
            false => (age / 4.0).clamp(0.5, 30.0),
        };
        assert!(
            s >= base * 0.75 - 1e-3 && s <= base * 1.25 + 1e-3,
            "attempt {i} at {age:.1} s into the outage: {s} s vs base {base}"
        );
        age += s;
    }
    assert!(age > 60.0, "the outage grew old: {age} s");
    assert!(
        delays.iter().any(|d| d.as_secs_f64() > 10.0),
        "old outages redial gently"
    );
    // Jitter really varies the delays.
    let first = redial_delays(
        &Pair::attached_with(
            Dialect::DotL,
            Config {
                seed: 99,
                ..config()
            },
        )
        .tap_kill(),
    );
    assert_ne!(first[0], delays[0]);
}

trait TapKill {
    fn tap_kill(self) -> Self;
}
impl TapKill for Pair {
    fn tap_kill(mut self) -> Self {
        self.kill();
        self
    }
}

#[test]
fn requests_wait_while_the_server_is_away_and_backpressure_holds_the_client() {
    let cfg = Config {
        queue_max_requests: 3,
        ..config()
    };
    let mut p = Pair::attached_with(Dialect::DotL, cfg);
    p.open_file(2, 1, &["f"], lflags::RDWR);
    p.kill();
    for tag in 10..13 {
        assert!(p.s.wants_client_input());
        p.client(
            tag,
            Tread {
                fid: Fid(1),
                offset: 0,
                count: 1,
            },
        );
    }
    assert!(
        !p.s.wants_client_input(),
        "three requests held: stop reading the client"
    );
    assert!(p.to_client.is_empty());
    p.reconnect();
    assert!(p.s.wants_client_input());
    // Released in order, each answered once.
    let tags: Vec<u16> = p.to_client.iter().map(|f| f.tag).collect();
    assert_eq!(tags, [10, 11, 12]);
    assert_eq!(p.s.requests_held(), 0);
    assert_eq!(p.s.bytes_held(), 0);
}

#[test]
fn soft_mode_fails_requests_after_the_limit_and_heals_when_the_server_returns() {
    let cfg = Config {
        give_up_after: Some(Duration::from_secs(5)),
        ..config()
    };
    let mut p = Pair::attached_with(Dialect::DotL, cfg);
    p.open_file(2, 1, &["f"], lflags::RDWR);
    p.kill();
    p.client(
        10,
        Tread {
            fid: Fid(1),
            offset: 0,
            count: 1,
        },
    );
    let start = p.now;
    for _ in 0..100 {
        if !p.replies_to(10).is_empty() {
            break;
        }
        p.advance();
        if p.pending_dial.is_some() {
            p.refuse_dial();
        }
    }
    let waited = p.now.since(start);
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    assert_eq!(p.reply_to(10), &Msg::Rlerror(Rlerror { ecode: errno::EIO }));
    assert!(p.events.iter().any(|e| matches!(e, Event::GaveUp { .. })));
    // While it stays away, new requests fail at once.
    p.client(
        11,
        Tread {
            fid: Fid(1),
            offset: 0,
            count: 1,
        },
    );
    assert_eq!(p.reply_to(11), &Msg::Rlerror(Rlerror { ecode: errno::EIO }));
    // The server comes back: fids are rebuilt and service resumes.
    p.reconnect();
    p.client(
        12,
        Tread {
            fid: Fid(1),
            offset: 0,
            count: 1,
        },
    );
    p.serve();
    assert!(p.is_success(12));
}

#[test]
fn a_stalled_recovery_is_abandoned_and_redialed() {
    let mut p = Pair::attached(Dialect::DotL);
    p.kill();
    while p.pending_dial.is_none() {
        p.advance();
    }
    let first = p.accept_dial();
    // The server accepts the connection but never answers.
    let waited = p.advance();
    assert_eq!(waited, Duration::from_secs(30));
    assert!(p.closed_links.contains(&first));
    assert!(p
        .events
        .iter()
        .any(|e| matches!(e, Event::RecoveryStalled { .. })));
    p.reconnect();
    assert!(p
        .events
        .iter()
        .any(|e| matches!(e, Event::Recovered { .. })));
}

#[test]
fn a_duplicate_tag_from_the_client_ends_its_session() {
    let mut p = Pair::attached(Dialect::DotL);
    p.client(7, Tclunk { fid: Fid(0) });
    p.client(7, Tclunk { fid: Fid(0) });
    assert!(p.client_closed);
    assert!(p.s.is_closed());
    assert!(p.events.iter().any(|e| matches!(
        e,
        Event::ProtocolViolation {
            peer: Peer::Client,
            ..
        }
    )));
}

#[test]
fn garbage_from_the_client_ends_its_session() {
    let mut p = Pair::attached(Dialect::DotL);
    p.client_raw(Bytes::from_static(&[9, 0, 0, 0, 101, 1, 0, 0, 0])); // an R-message
    assert!(p.client_closed);
}

#[test]
fn an_undecodable_request_gets_an_error_not_a_disconnect() {
    let mut p = Pair::attached(Dialect::DotL);
    // A Tclunk with a trailing byte: its tag can be answered.
    p.client_raw(Bytes::from_static(&[12, 0, 0, 0, 120, 5, 0, 0, 0, 0, 0, 0]));
    assert!(!p.client_closed);
    assert!(is_error(p.reply_to(5)));
}

#[test]
fn a_server_breaking_the_protocol_loses_its_link_and_is_redialed() {
    for bad in ["unknown tag", "wrong type", "garbage"] {
        let mut p = Pair::attached(Dialect::DotL);
        p.open_file(2, 1, &["f"], lflags::RDWR);
        p.client(
            10,
            Tread {
                fid: Fid(1),
                offset: 0,
                count: 4,
            },
        );
        let link = p.link.unwrap();
        match bad {
            "unknown tag" => p.reply(999, Rclunk {}),
            "wrong type" => p.reply(10, Rclunk {}),
            _ => p.reply_raw(Bytes::from_static(&[8, 0, 0, 0, 117, 10, 0, 7])),
        }
        assert!(p.closed_links.contains(&link), "{bad}");
        assert!(
            p.events.iter().any(|e| matches!(
                e,
                Event::ProtocolViolation {
                    peer: Peer::Server,
                    ..
                }
            )),
            "{bad}"
        );
        p.reconnect();
        assert_eq!(
            p.replies_to(10).len(),
            1,
            "{bad}: the read is resent and answered once"
        );
    }
}

#[test]
fn a_smaller_msize_after_reconnect_clamps_reads_and_shortens_writes() {
    let mut p = Pair::attached(Dialect::DotL);
    p.open_file(2, 1, &["f"], lflags::RDWR);
    p.kill();
    p.server.msize = 4096;
    p.reconnect();
    assert_eq!(p.s.server_msize(), 4096);
    p.client(
        10,
        Tread {
            fid: Fid(1),
            offset: 0,
            count: 8000,
        },
    );
    let Msg::Tread(r) = p.next_request().msg else {
        panic!("not a read")
    };
    assert_eq!(r.count, 4096 - IOHDRSZ);
    p.client(
        11,
        Twrite {
            fid: Fid(1),
            offset: 0,
            data: Data(vec![1u8; 6000].into()),
        },
    );
    let fc = p.next_request();
    let Msg::Twrite(w) = &fc.msg else {
        panic!("not a write")
    };
    assert_eq!(w.data.0.len(), 4096 - IOHDRSZ as usize);
    let reply = p.server.answer(&fc);
    p.reply(fc.tag, reply);
    assert_eq!(
        p.reply_to(11),
        &Msg::Rwrite(Rwrite {
            count: 4096 - IOHDRSZ
        }),
        "a short write"
    );
    // Writes that fit go as they are, up to the last byte the server's msize allows.
    for (tag, n) in [
        (12, 4096 - IOHDRSZ as usize),
        (13, 4096 - IOHDRSZ as usize - 30),
    ] {
        p.client(
            tag,
            Twrite {
                fid: Fid(1),
                offset: 0,
                data: Data(vec![2u8; n].into()),
            },
        );
        let fc = p.next_request();
        let Msg::Twrite(w) = &fc.msg else {
            panic!("not a write")
        };
        assert_eq!(w.data.0.len(), n, "a write of {n} bytes fits");
        let reply = p.server.answer(&fc);
        p.reply(fc.tag, reply);
    }
    // Anything else larger than the server's msize is refused here, never sent.
    p.client(
        14,
        Tsymlink {
            fid: Fid(0),
            name: "long".into(),
            symtgt: vec![b'x'; 5000].into(),
            gid: 0,
        },
    );
    assert!(p.to_server.is_empty(), "sent: {:?}", p.to_server);
    assert!(
        matches!(p.reply_to(14), Msg::Rlerror(_)),
        "{:?}",
        p.reply_to(14)
    );
}

#[test]
fn a_replaced_file_makes_its_open_fid_stale_in_each_dialects_form() {
    for d in Dialect::ALL {
        let mut p = Pair::attached(d);
        let mode = if d == Dialect::DotL {
            lflags::RDWR
        } else {
            open_mode::RDWR as u32
        };
        p.open_file(2, 1, &["f"], mode);
        p.kill();
        p.server.replace(&["f"]);
        p.reconnect();
        assert!(
            p.events
                .iter()
                .any(|e| matches!(e, Event::Recovered { stale: 1, .. })),
            "{d}"
        );
        assert!(
            p.events
                .iter()
                .any(|e| matches!(e, Event::FidLost { fid: 1, .. })),
            "{d}"
        );
        p.server.executed.clear();
        p.client(
            10,
            Tread {
                fid: Fid(1),
                offset: 0,
                count: 1,
            },
        );
        let expected: Msg = match d {
            Dialect::DotL => Rlerror {
                ecode: errno::ESTALE,
            }
            .into(),
            Dialect::DotU => Rerror {
                ename: "unable to reopen file".into(),
                errno: Some(errno::ESTALE),
            }
            .into(),
            // Linux's table has no message for ESTALE: 9P2000 gets one it maps to EBADF.
            Dialect::Base => Rerror {
                ename: "fid unknown or out of range".into(),
                errno: None,
            }
            .into(),
        };
        assert_eq!(p.reply_to(10), &expected, "{d}");
        p.client(11, Tclunk { fid: Fid(1) });
        assert_eq!(
            p.reply_to(11),
            &Msg::Rclunk(Rclunk {}),
            "{d}: clunk answered locally"
        );
        assert!(
            p.server.executed.is_empty(),
            "{d}: nothing reached the server"
        );
        // The fid number is free again.
        p.client(
            12,
            Twalk {
                fid: Fid(0),
                newfid: Fid(1),
                wnames: WalkNames::new(["f"]).unwrap(),
            },
        );
        p.serve();
        assert!(p.is_success(12), "{d}");
    }
}

#[test]
fn an_unopened_fid_follows_its_path_to_the_new_file() {
    let mut p = Pair::attached(Dialect::DotL);
    p.server.touch(&["f"], false);
    p.client(
        2,
        Twalk {
            fid: Fid(0),
            newfid: Fid(1),
            wnames: WalkNames::new(["f"]).unwrap(),
        },
    );
    p.serve();
    p.kill();
    p.server.replace(&["f"]);
    p.reconnect();
    assert!(p.events.iter().any(|e| matches!(
        e,
        Event::Recovered {
            fids: 2,
            stale: 0,
            ..
        }
    )));
}

#[test]
fn an_exclusive_file_is_reopened_after_retries() {
    let mut p = Pair::attached(Dialect::Base);
    p.server.touch(&["x"], false);
    p.server.files.get_mut(&vec![b"x".to_vec()]).unwrap().0.typ = qid_type::EXCL;
    p.open_file(2, 1, &["x"], open_mode::RDWR as u32);
    p.kill();
    while p.pending_dial.is_none() {
        p.advance();
    }
    p.accept_dial();
    let mut refusals = 0;
    loop {
        while let Some((_, fc)) = p.to_server.pop_front() {
            if matches!(fc.msg, Msg::Topen(_)) && refusals < 2 {
                refusals += 1;
                p.reply(
                    fc.tag,
                    Rerror {
                        ename: "file in use".into(),
                        errno: None,
                    },
                );
            } else {
                let r = p.server.answer(&fc);
                p.reply(fc.tag, r);
            }
        }
        if p.events
            .iter()
            .any(|e| matches!(e, Event::Recovered { .. }))
        {
            break;
        }
        assert_eq!(
            p.advance(),
            Duration::from_millis(500),
            "retry after the configured pause"
        );
    }
    assert_eq!(refusals, 2);
    assert!(p
        .events
        .iter()
        .any(|e| matches!(e, Event::Recovered { stale: 0, .. })));
}

/// A write lock of 10 bytes at `start` through fid 1.
fn lock(start: u64) -> Tlock {
    Tlock {
        fid: Fid(1),
        typ: 1,
        flags: 0,
        start,
        length: 10,
        proc_id: 7,
        client_id: "c".into(),
    }
}

#[test]
fn held_locks_are_replayed_in_order_and_a_refused_one_makes_the_fid_stale() {
    for refuse in [false, true] {
        let mut p = Pair::attached(Dialect::DotL);
        p.open_file(2, 1, &["f"], lflags::RDWR);
        p.client(3, lock(0));
        p.client(4, lock(100));
        p.serve();
        p.kill();
        while p.pending_dial.is_none() {
            p.advance();
        }
        p.accept_dial();
        let mut replayed = Vec::new();
        while let Some((_, fc)) = p.to_server.pop_front() {
            if let Msg::Tlock(l) = &fc.msg {
                replayed.push(l.start);
                if refuse {
                    p.reply(fc.tag, Rlock { status: 1 });
                    continue;
                }
            }
            let r = p.server.answer(&fc);
            p.reply(fc.tag, r);
        }
        if refuse {
            assert_eq!(replayed, [0]);
            assert!(p
                .events
                .iter()
                .any(|e| matches!(e, Event::Recovered { stale: 1, .. })));
        } else {
            assert_eq!(replayed, [0, 100]);
            assert!(p
                .events
                .iter()
                .any(|e| matches!(e, Event::Recovered { stale: 0, .. })));
        }
    }
}

#[test]
fn fids_from_an_authenticated_attach_go_stale_without_an_authenticator() {
    let mut p = Pair::attached(Dialect::DotU);
    p.client(
        2,
        Tauth {
            afid: Fid(50),
            uname: "glenda".into(),
            aname: "".into(),
            n_uname: Some(1),
        },
    );
    let tag = p.next_request().tag;
    p.reply(
        tag,
        Rauth {
            aqid: Qid {
                typ: qid_type::AUTH,
                version: 0,
                path: 77,
            },
        },
    );
    p.client(
        3,
        Tattach {
            fid: Fid(51),
            afid: Fid(50),
            uname: "glenda".into(),
            aname: "".into(),
            n_uname: Some(1),
        },
    );
    let tag = p.next_request().tag;
    p.reply(
        tag,
        Rattach {
            qid: Qid {
                typ: qid_type::DIR,
                version: 0,
                path: 1,
            },
        },
    );
    p.kill();
    p.reconnect();
    let lost: Vec<u32> = p
        .events
        .iter()
        .filter_map(|e| match e {
            Event::FidLost { fid, .. } => Some(*fid),
            _ => None,
        })
        .collect();
    assert_eq!(lost, [50, 51]);
    p.client(4, Tstat { fid: Fid(51) });
    assert_eq!(
        error_of(p.reply_to(4)).as_deref(),
        Some("unable to reopen file")
    );
}

#[test]
fn renames_move_the_paths_that_recovery_walks() {
    let mut p = Pair::attached(Dialect::DotL);
    p.server.touch(&["a", "b"], false);
    p.client(
        2,
        Twalk {
            fid: Fid(0),
            newfid: Fid(1),
            wnames: WalkNames::new(["a"]).unwrap(),
        },
    );
    p.client(
        3,
        Twalk {
            fid: Fid(1),
            newfid: Fid(2),
            wnames: WalkNames::new(["b"]).unwrap(),
        },
    );
    p.serve();
    p.client(
        4,
        Trenameat {
            olddirfid: Fid(0),
            oldname: "a".into(),
            newdirfid: Fid(0),
            newname: "z".into(),
        },
    );
    p.serve();
    p.kill();
    p.server.touch(&["z", "b"], false);
    let log = p.reconnect_log();
    let walked: Vec<Vec<Vec<u8>>> = log
        .iter()
        .filter_map(|f| match &f.msg {
            Msg::Twalk(w) if w.newfid == Fid(2) => {
                Some(w.wnames.iter().map(<[u8]>::to_vec).collect())
            }
            _ => None,
        })
        .collect();
    assert_eq!(walked, [vec![b"z".to_vec(), b"b".to_vec()]]);
}

#[test]
fn a_new_tversion_resets_the_session() {
    let mut p = Pair::attached(Dialect::DotL);
    p.open_file(2, 1, &["f"], lflags::RDWR);
    assert_eq!(p.s.fid_count(), 2);
    p.client(
        NOTAG,
        Tversion {
            msize: 8192,
            version: "9P2000.L".into(),
        },
    );
    p.serve();
    assert_eq!(p.s.fid_count(), 0);
}

#[test]
fn a_reply_after_rflush_never_reaches_the_client() {
    let mut p = Pair::attached(Dialect::DotL);
    p.open_file(2, 1, &["f"], lflags::RDWR);
    p.client(
        10,
        Tread {
            fid: Fid(1),
            offset: 0,
            count: 4,
        },
    );
    p.client(11, Tflush { oldtag: 10 });
    p.reply(11, Rflush {});
    assert_eq!(p.reply_to(11), &Msg::Rflush(Rflush {}));
    // The server answers the flushed request anyway: that reply must not go through.
    p.reply(
        10,
        Rread {
            data: Data("late".into()),
        },
    );
    assert!(p.replies_to(10).is_empty());
}

#[test]
fn flush_while_the_server_is_away_is_answered_at_once_never_with_an_error() {
    for d in Dialect::ALL {
        let mut p = Pair::attached(d);
        p.kill();
        p.client(10, Tstat { fid: Fid(0) });
        p.client(11, Tflush { oldtag: 10 });
        p.client(12, Tflush { oldtag: 4242 });
        assert_eq!(p.reply_to(11), &Msg::Rflush(Rflush {}), "{d}");
        assert_eq!(p.reply_to(12), &Msg::Rflush(Rflush {}), "{d}");
        p.reconnect();
        assert!(p.replies_to(10).is_empty(), "{d}: flushed, never answered");
    }
}

#[test]
fn requests_before_the_first_connection_wait_for_it() {
    let mut p = Pair::new(Dialect::DotL);
    p.client(
        NOTAG,
        Tversion {
            msize: 8192,
            version: "9P2000.L".into(),
        },
    );
    p.refuse_dial();
    assert!(p.to_client.is_empty());
    p.advance();
    p.accept_dial();
    p.serve();
    assert!(matches!(p.reply_to(NOTAG), Msg::Rversion(_)));
}

#[test]
fn the_client_leaving_closes_the_link() {
    let mut p = Pair::attached(Dialect::DotL);
    let link = p.link.unwrap();
    p.s.handle_client_closed(p.now);
    assert_eq!(p.s.poll_output(), Some(Output::CloseLink { link }));
    assert!(p.s.is_closed());
}

use bytes::Bytes;

/// A toy authenticator: write the password, read the verdict.
struct Password;
struct PasswordTalk {
    sent: bool,
}
impl persist_core::Authenticator for Password {
    fn converse(&self, _uname: &[u8], _aname: &[u8]) -> Box<dyn persist_core::AuthConversation> {
        Box::new(PasswordTalk { sent: false })
    }
}
impl persist_core::AuthConversation for PasswordTalk {
    fn step(&mut self, input: persist_core::AuthInput<'_>) -> persist_core::AuthStep {
        use persist_core::{AuthInput, AuthStep};
        match input {
            AuthInput::Start if !self.sent => {
                self.sent = true;
                AuthStep::Write(Bytes::from_static(b"sesame"))
            }
            AuthInput::Wrote(_) => AuthStep::Read(16),
            AuthInput::Read(b"ok") => AuthStep::Done,
            _ => AuthStep::Fail,
        }
    }
}

#[test]
fn an_authenticator_redoes_authenticated_attaches() {
    for verdict in ["ok", "no"] {
        let mut p = Pair::attached(Dialect::DotU);
        p.s.set_authenticator(Box::new(Password));
        p.client(
            2,
            Tauth {
                afid: Fid(50),
                uname: "glenda".into(),
                aname: "".into(),
                n_uname: Some(1),
            },
        );
        let tag = p.next_request().tag;
        p.reply(
            tag,
            Rauth {
                aqid: Qid {
                    typ: qid_type::AUTH,
                    version: 0,
                    path: 77,
                },
            },
        );
        p.client(
            3,
            Tattach {
                fid: Fid(51),
                afid: Fid(50),
                uname: "glenda".into(),
                aname: "".into(),
                n_uname: Some(1),
            },
        );
        let tag = p.next_request().tag;
        p.reply(
            tag,
            Rattach {
                qid: Qid {
                    typ: qid_type::DIR,
                    version: 0,
                    path: 1,
                },
            },
        );
        p.kill();
        while p.pending_dial.is_none() {
            p.advance();
        }
        p.accept_dial();
        let mut seen = Vec::new();
        let mut auth_fid = None;
        while let Some((_, fc)) = p.to_server.pop_front() {
            seen.push(fc.msg.msg_type());
            let reply: Msg = match &fc.msg {
                Msg::Tauth(a) => {
                    auth_fid = Some(a.afid);
                    Rauth {
                        aqid: Qid {
                            typ: qid_type::AUTH,
                            version: 0,
                            path: 78,
                        },
                    }
                    .into()
                }
                Msg::Twrite(w) => {
                    assert_eq!(&w.data.0[..], b"sesame");
                    Rwrite { count: 6 }.into()
                }
                Msg::Tread(_) => Rread {
                    data: Data(verdict.into()),
                }
                .into(),
                Msg::Tattach(a) if a.afid != NOFID => {
                    assert_eq!(Some(a.afid), auth_fid, "attached with the new auth fid");
                    p.server.answer(&fc)
                }
                _ => p.server.answer(&fc),
            };
            p.reply(fc.tag, reply);
        }
        let lost: Vec<u32> = p
            .events
            .iter()
            .filter_map(|e| match e {
                Event::FidLost { fid, .. } => Some(*fid),
                _ => None,
            })
            .collect();
        assert!(
            seen.contains(&MsgType::Twrite) && seen.contains(&MsgType::Tread),
            "{seen:?}"
        );
        if verdict == "ok" {
            // The client's own auth fid cannot be rebuilt; the attach made with it can.
            assert_eq!(lost, [50]);
            p.client(4, Tstat { fid: Fid(51) });
            p.serve();
            assert!(p.is_success(4));
        } else {
            assert_eq!(lost, [50, 51]);
        }
        assert_eq!(
            seen.last(),
            Some(&MsgType::Tclunk),
            "the proxy's fids are clunked"
        );
    }
}

#[test]
fn deep_paths_are_rewalked_in_chunks_of_sixteen_names() {
    let mut p = Pair::attached(Dialect::DotL);
    let names: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
    let path: Vec<&str> = names.iter().map(String::as_str).collect();
    p.server.touch(&path, false);
    p.client(
        2,
        Twalk {
            fid: Fid(0),
            newfid: Fid(1),
            wnames: WalkNames::new(&path[..16]).unwrap(),
        },
    );
    p.client(
        3,
        Twalk {
            fid: Fid(1),
            newfid: Fid(1),
            wnames: WalkNames::new(&path[16..]).unwrap(),
        },
    );
    p.serve();
    assert!(p.is_success(2) && p.is_success(3));
    p.kill();
    let log = p.reconnect_log();
    let walks: Vec<(u32, u32, usize)> = log
        .iter()
        .filter_map(|f| match &f.msg {
            Msg::Twalk(w) if w.newfid == Fid(1) => Some((w.fid.0, w.newfid.0, w.wnames.len())),
            _ => None,
        })
        .collect();
    assert_eq!(walks.len(), 2, "{walks:?}");
    assert_eq!(
        (walks[0].2, walks[1]),
        (16, (1, 1, 4)),
        "first from the root, then fid to itself"
    );
    assert!(p
        .events
        .iter()
        .any(|e| matches!(e, Event::Recovered { stale: 0, .. })));
}

/// A recovery that delivers nothing does not end the outage: if the link dies again before the
/// server has answered a single request on it (a server that breaks on what is resent), the
/// backoff goes on growing instead of starting over, and soft mode's clock keeps running.
#[test]
fn a_recovery_that_delivers_nothing_does_not_reset_the_outage() {
    let mut p = Pair::attached(Dialect::DotL);
    p.client(
        7,
        Tgetattr {
            fid: Fid(0),
            request_mask: 0x7ff,
        },
    );
    let mut attempts = Vec::new();
    for _ in 0..3 {
        p.kill();
        while p.pending_dial.is_none() {
            p.advance();
        }
        p.accept_dial();
        // Rebuild everything, but the resent request never gets its answer.
        while let Some((_, fc)) = p.to_server.pop_front() {
            if fc.tag == 7 {
                continue;
            }
            let reply = p.server.answer(&fc);
            p.reply(fc.tag, reply);
        }
        assert!(p.replies_to(7).is_empty());
        attempts.push(
            p.events
                .iter()
                .rev()
                .find_map(|e| match e {
                    Event::Redialing { attempt, .. } => Some(*attempt),
                    _ => None,
                })
                .unwrap(),
        );
    }
    assert!(
        attempts.windows(2).all(|w| w[1] > w[0]),
        "the backoff restarted after recoveries that delivered nothing: {attempts:?}"
    );
    // Once the server answers, the outage is over: the next loss starts from attempt 1.
    p.kill();
    while p.pending_dial.is_none() {
        p.advance();
    }
    p.accept_dial();
    p.serve();
    assert_eq!(p.replies_to(7).len(), 1);
    p.kill();
    let last = p.events.iter().rev().find_map(|e| match e {
        Event::Redialing { attempt, .. } => Some(*attempt),
        _ => None,
    });
    assert_eq!(last, Some(1));
}

/// Fids let go of give back what they held: their paths in the name tree, and the root of an
/// attach no fid uses any more (a session that walks and clunks for days holds no more).
#[test]
fn clunked_fids_give_back_their_paths_and_roots() {
    let mut p = Pair::attached(Dialect::DotL);
    let base = p.s.path_nodes();
    for round in 0..3u32 {
        let attach = Tattach {
            fid: Fid(99),
            afid: NOFID,
            uname: "other".into(),
            aname: "".into(),
            n_uname: Some(7),
        };
        p.client(50, attach);
        p.serve();
        for i in 0..10u32 {
            let name = format!("f{round}{i}");
            p.open_file(10 + i as u16, 100 + i, &["a", &name], lflags::RDWR);
        }
        assert!(
            p.s.path_nodes() > base,
            "round {round}: the paths are stored"
        );
        for i in 0..10u32 {
            p.client(60 + i as u16, Tclunk { fid: Fid(100 + i) });
        }
        p.client(70, Tclunk { fid: Fid(99) });
        p.serve();
        assert_eq!(p.s.path_nodes(), base, "round {round}: all given back");
    }
}

/// A lock the server did not grant (BLOCKED, ERROR) is no lock held: after a reconnect only
/// granted ones are taken again.
#[test]
fn locks_not_granted_are_not_replayed() {
    let mut p = Pair::attached(Dialect::DotL);
    p.open_file(2, 1, &["f"], lflags::RDWR);
    for (tag, start, status) in [(3, 0, lock_status::SUCCESS), (4, 100, lock_status::BLOCKED)] {
        p.client(tag, lock(start));
        let fc = p.next_request();
        p.reply(fc.tag, Rlock { status });
    }
    p.kill();
    let replayed: Vec<u64> = p
        .reconnect_log()
        .iter()
        .filter_map(|f| match &f.msg {
            Msg::Tlock(l) => Some(l.start),
            _ => None,
        })
        .collect();
    assert_eq!(replayed, [0]);
}

/// Attaches by one user to one tree share a root: the recovery attaches it once, however many
/// of the client's attaches it stands for; a different user, attach name or numeric user is
/// another root, attached again on its own.
#[test]
fn attaches_of_one_user_to_one_tree_are_one_root_rebuilt_once() {
    let cases: [(&str, &str, u32, usize); 4] = [
        ("glenda", "", 1000, 1),
        ("other", "", 1000, 2),
        ("glenda", "/srv", 1000, 2),
        ("glenda", "", 1001, 2),
    ];
    for (uname, aname, n_uname, roots) in cases {
        let what = format!("a second attach as {uname} ({n_uname}) to {aname:?}");
        let mut p = Pair::attached(Dialect::DotL);
        p.server.touch(&["srv"], true);
        p.client(
            2,
            Tattach {
                fid: Fid(5),
                afid: NOFID,
                uname: uname.into(),
                aname: aname.into(),
                n_uname: Some(n_uname),
            },
        );
        p.serve();
        assert!(
            matches!(p.reply_to(2), Msg::Rattach(_)),
            "{what}: {:?}",
            p.reply_to(2)
        );
        p.kill();
        let attaches = p
            .reconnect_log()
            .iter()
            .filter(|f| matches!(f.msg, Msg::Tattach(_)))
            .count();
        assert_eq!(attaches, roots, "{what}: re-attaches");
    }
}

/// A root two attaches share lives while either does: the client clunking one leaves the
/// other rebuilt after a loss.
#[test]
fn a_shared_root_outlives_one_of_its_attaches() {
    let mut p = Pair::attached(Dialect::DotL);
    p.client(
        2,
        Tattach {
            fid: Fid(5),
            afid: NOFID,
            uname: "glenda".into(),
            aname: "".into(),
            n_uname: Some(1000),
        },
    );
    p.serve();
    p.client(3, Tclunk { fid: Fid(5) });
    p.serve();
    p.kill();
    let attaches = p
        .reconnect_log()
        .iter()
        .filter(|f| matches!(&f.msg, Msg::Tattach(_)))
        .count();
    assert_eq!(attaches, 1, "fid 0's root attached again");
    p.client(
        4,
        Tgetattr {
            fid: Fid(0),
            request_mask: 0x7ff,
        },
    );
    p.serve();
    assert!(
        matches!(p.reply_to(4), Msg::Rgetattr(_)),
        "{:?}",
        p.reply_to(4)
    );
}

/// Every way a file is renamed moves the path its fid is rebuilt at: Trename (9P2000.L), and a
/// renaming Twstat (9P2000.u), alone or with a length change in the same request; a Twstat
/// that renames nothing moves nothing.
#[test]
fn every_rename_moves_the_path_recovery_walks() {
    let renames: Vec<(Dialect, &str, Msg, &str)> = vec![
        (
            Dialect::DotL,
            "Trename",
            Trename {
                fid: Fid(1),
                dfid: Fid(0),
                name: "z".into(),
            }
            .into(),
            "z",
        ),
        (
            Dialect::DotU,
            "Twstat of the name",
            Twstat {
                fid: Fid(1),
                stat: Stat {
                    name: "z".into(),
                    ..Stat::unchanged(Dialect::DotU)
                },
            }
            .into(),
            "z",
        ),
        (
            Dialect::DotU,
            "Twstat of the name and the length",
            Twstat {
                fid: Fid(1),
                stat: Stat {
                    name: "z".into(),
                    length: 0,
                    ..Stat::unchanged(Dialect::DotU)
                },
            }
            .into(),
            "z",
        ),
        (
            Dialect::DotU,
            "Twstat of the mode (no rename)",
            Twstat {
                fid: Fid(1),
                stat: Stat {
                    mode: 0o600,
                    ..Stat::unchanged(Dialect::DotU)
                },
            }
            .into(),
            "a",
        ),
    ];
    for (d, what, rename, at) in renames {
        let mut p = Pair::attached(d);
        p.server.touch(&["a"], false);
        p.client(
            2,
            Twalk {
                fid: Fid(0),
                newfid: Fid(1),
                wnames: WalkNames::new(["a"]).unwrap(),
            },
        );
        p.serve();
        p.client(3, rename);
        p.serve();
        assert!(
            !matches!(p.reply_to(3), Msg::Rerror(_) | Msg::Rlerror(_)),
            "{what}: {:?}",
            p.reply_to(3)
        );
        p.kill();
        p.server.touch(&[at], false);
        let walked: Vec<Vec<Vec<u8>>> = p
            .reconnect_log()
            .iter()
            .filter_map(|f| match &f.msg {
                Msg::Twalk(w) if w.newfid == Fid(1) => {
                    Some(w.wnames.iter().map(<[u8]>::to_vec).collect())
                }
                _ => None,
            })
            .collect();
        assert_eq!(walked, [vec![at.as_bytes().to_vec()]], "{what}");
    }
}

/// A tag whose request the server flushed is the client's again: a reply to its next use is
/// that request's, not a late one of the flushed use.
#[test]
fn a_flushed_tag_used_again_gets_its_new_reply() {
    let mut p = Pair::attached(Dialect::DotL);
    p.open_file(2, 1, &["f"], lflags::RDWR);
    p.client(
        5,
        Tread {
            fid: Fid(1),
            offset: 0,
            count: 10,
        },
    );
    let read = p.next_request();
    p.client(6, Tflush { oldtag: 5 });
    let flush = p.next_request();
    assert!(matches!(flush.msg, Msg::Tflush(_)));
    p.reply(6, Rflush {});
    assert!(matches!(p.reply_to(6), Msg::Rflush(_)));
    drop(read); // the server never answers the flushed read
    p.client(
        5,
        Tgetattr {
            fid: Fid(1),
            request_mask: 0x7ff,
        },
    );
    let getattr = p.next_request();
    let reply = p.server.answer(&getattr);
    p.reply(5, reply);
    assert!(
        matches!(p.reply_to(5), Msg::Rgetattr(_)),
        "{:?}",
        p.replies_to(5)
    );
}

/// A tag must be NOTAG exactly on a Tversion: either way round the request is answered here as
/// malformed and never sent.
#[test]
fn notag_only_on_a_version() {
    let mut p = Pair::attached(Dialect::DotL);
    p.client(
        NOTAG,
        Tgetattr {
            fid: Fid(0),
            request_mask: 0x7ff,
        },
    );
    p.client(
        7,
        Tversion {
            msize: 8192,
            version: "9P2000.L".into(),
        },
    );
    assert!(p.to_server.is_empty(), "sent: {:?}", p.to_server);
    for tag in [NOTAG, 7] {
        assert!(
            matches!(p.reply_to(tag), Msg::Rlerror(_)),
            "{tag}: {:?}",
            p.replies_to(tag)
        );
    }
}

/// Requests in flight at a loss are sent again in the order the client sent them, whatever
/// their tags.
#[test]
fn orphans_are_resent_in_the_order_sent() {
    let mut p = Pair::attached(Dialect::DotL);
    p.open_file(2, 1, &["f"], lflags::RDWR);
    let tags = [30u16, 20, 25, 10];
    for (i, &tag) in tags.iter().enumerate() {
        p.client(
            tag,
            Tread {
                fid: Fid(1),
                offset: i as u64,
                count: 1,
            },
        );
    }
    p.kill();
    let resent: Vec<u16> = p
        .reconnect_log()
        .iter()
        .filter(|f| matches!(f.msg, Msg::Tread(_)))
        .map(|f| f.tag)
        .collect();
    assert_eq!(resent, tags);
}
