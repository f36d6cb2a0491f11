//! Property test: random interleavings of client requests, server replies (in any order), link
//! deaths, dial failures and time never break the session's promises: one reply per request,
//! of the matching type; Tflush never answered with an error; nothing after Rflush; held memory
//! bounded by what the client has outstanding; and once faults stop, every request completes.

mod harness;

use std::collections::BTreeMap;

use harness::*;
use p9_core::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Request {
        kind: u8,
        fid: u8,
        arg: u8,
    },
    Flush {
        pick: u8,
    },
    /// Answer the `pick`-th undelivered frame (reordering replies).
    Answer {
        pick: u8,
    },
    AnswerAll,
    Kill,
    Advance,
    Dial {
        accept: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), 0u8..6, any::<u8>()).prop_map(|(kind, fid, arg)| Op::Request { kind, fid, arg }),
        1 => any::<u8>().prop_map(|pick| Op::Flush { pick }),
        5 => any::<u8>().prop_map(|pick| Op::Answer { pick }),
        2 => Just(Op::AnswerAll),
        1 => Just(Op::Kill),
        2 => Just(Op::Advance),
        2 => any::<bool>().prop_map(|accept| Op::Dial { accept }),
    ]
}

fn request(d: Dialect, kind: u8, fid: u8, arg: u8) -> Msg {
    let fid = Fid(fid as u32);
    let other = Fid((arg % 6) as u32);
    let name = ["a", "b", "..", "c"][arg as usize % 4];
    let open = |f| -> Msg {
        if d == Dialect::DotL {
            Tlopen {
                fid: f,
                flags: lflags::RDWR,
            }
            .into()
        } else {
            Topen {
                fid: f,
                mode: open_mode::RDWR,
            }
            .into()
        }
    };
    match kind % 10 {
        0 => Twalk {
            fid,
            newfid: other,
            wnames: WalkNames::new([name]).unwrap(),
        }
        .into(),
        1 => open(fid),
        2 => Tread {
            fid,
            offset: arg as u64,
            count: 64,
        }
        .into(),
        3 => Twrite {
            fid,
            offset: arg as u64,
            data: Data(vec![arg; 1 + arg as usize % 50].into()),
        }
        .into(),
        4 => Tclunk { fid }.into(),
        5 if d == Dialect::DotL => Tlcreate {
            fid,
            name: name.into(),
            flags: lflags::RDWR,
            mode: 0o644,
            gid: 0,
        }
        .into(),
        5 => Tcreate {
            fid,
            name: name.into(),
            perm: 0o644,
            mode: 2,
            extension: d.is_extended().then(Default::default),
        }
        .into(),
        6 => Tremove { fid }.into(),
        7 if d == Dialect::DotL => Tgetattr {
            fid,
            request_mask: 0x7ff,
        }
        .into(),
        7 => Tstat { fid }.into(),
        8 if d == Dialect::DotL => Tfsync { fid, datasync: 0 }.into(),
        8 => Tread {
            fid,
            offset: 0,
            count: 10,
        }
        .into(),
        _ => Twalk {
            fid: Fid(0),
            newfid: other,
            wnames: WalkNames::new(["a"]).unwrap(),
        }
        .into(),
    }
}

/// The client's view: what it has outstanding, checked against every reply.
#[derive(Default)]
struct Checker {
    outstanding: BTreeMap<u16, (MsgType, Option<u16>)>,
    seen: usize,
    next_tag: u16,
}

impl Checker {
    fn take_replies(&mut self, p: &mut Pair) {
        for fc in p.to_client[self.seen..].iter().cloned() {
            let Some((ty, flushes)) = self.outstanding.remove(&fc.tag) else {
                panic!(
                    "reply to tag {} that has no request outstanding: {:?}",
                    fc.tag, fc.msg
                );
            };
            let got = fc.msg.msg_type();
            if ty == MsgType::Tflush {
                assert_eq!(got, MsgType::Rflush, "Tflush answered with {got:?}");
                // flush(5): the flushed request gets no reply after this.
                if let Some(old) = flushes {
                    self.outstanding.remove(&old);
                }
            } else {
                assert!(
                    Some(got) == ty.reply() || matches!(got, MsgType::Rerror | MsgType::Rlerror),
                    "{ty:?} answered with {got:?}"
                );
            }
        }
        self.seen = p.to_client.len();
    }

    fn send(&mut self, p: &mut Pair, msg: Msg) {
        if p.client_closed || self.outstanding.len() >= 200 {
            return;
        }
        while self.outstanding.contains_key(&self.next_tag) || self.next_tag == NOTAG {
            self.next_tag = self.next_tag.wrapping_add(1);
        }
        let tag = self.next_tag;
        let flushes = match &msg {
            Msg::Tflush(f) => Some(f.oldtag),
            _ => None,
        };
        self.outstanding.insert(tag, (msg.msg_type(), flushes));
        p.client(tag, msg);
    }
}

/// Deliver the `i`-th undelivered frame to the stub. A Tflush also drops the request it names
/// if the server has not answered it yet, as a real server does.
fn answer_one(p: &mut Pair, i: usize) {
    let Some((link, fc)) = p.to_server.remove(i) else {
        return;
    };
    if Some(link) != p.link {
        return;
    }
    if let Msg::Tflush(f) = &fc.msg {
        p.to_server
            .retain(|(l, q)| !(*l == link && q.tag == f.oldtag));
    }
    let reply = p.server.answer(&fc);
    p.reply(fc.tag, reply);
}

fn run(d: Dialect, ops: &[Op]) {
    let mut p = Pair::attached(d);
    let mut c = Checker::default();
    p.server.touch(&["a", "b"], false);
    for op in ops {
        match *op {
            Op::Request { kind, fid, arg } => c.send(&mut p, request(d, kind, fid, arg)),
            Op::Flush { pick } => {
                let tags: Vec<u16> = c.outstanding.keys().copied().collect();
                if let Some(&old) = tags.get(pick as usize % tags.len().max(1)) {
                    c.send(&mut p, Tflush { oldtag: old }.into());
                }
            }
            Op::Answer { pick } => {
                let n = p.to_server.len();
                if n > 0 {
                    answer_one(&mut p, pick as usize % n);
                }
            }
            Op::AnswerAll => {
                while !p.to_server.is_empty() {
                    answer_one(&mut p, 0);
                }
            }
            Op::Kill => {
                if p.link.is_some() {
                    p.kill();
                }
            }
            Op::Advance => {
                if p.s.poll_timeout().is_some() {
                    p.advance();
                }
            }
            Op::Dial { accept } => {
                if p.pending_dial.is_some() {
                    if accept {
                        p.accept_dial();
                    } else {
                        p.refuse_dial();
                    }
                }
            }
        }
        c.take_replies(&mut p);
        // Bounded memory: the session holds no more than the client has outstanding.
        assert!(
            p.s.requests_held() <= c.outstanding.len(),
            "holds {} for {} outstanding",
            p.s.requests_held(),
            c.outstanding.len()
        );
        // Each held frame counts what it pins: at least a read chunk.
        let pin = persist_core::drive::pinned(8192);
        assert!(p.s.bytes_held() <= c.outstanding.len() * pin);
    }
    if p.client_closed {
        return;
    }
    // Liveness: faults stop; every outstanding request completes in bounded time.
    for _ in 0..1000 {
        if p.pending_dial.is_some() {
            p.accept_dial();
        } else if !p.to_server.is_empty() {
            answer_one(&mut p, 0);
        } else if p.s.poll_timeout().is_some() && !c.outstanding.is_empty() {
            p.advance();
        } else {
            break;
        }
        c.take_replies(&mut p);
    }
    assert!(
        c.outstanding.is_empty(),
        "never answered: {:?}",
        c.outstanding
    );
    assert_eq!(p.s.requests_held(), 0);
    assert_eq!(p.s.bytes_held(), 0);
}

proptest! {
    // PROPTEST_CASES=n for longer runs.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_interleavings_keep_every_promise(d in 0usize..3, ops in proptest::collection::vec(op(), 1..120)) {
        run(Dialect::ALL[d], &ops);
    }
}
