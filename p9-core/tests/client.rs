//! The sans-IO client: version negotiation, tags, fids, matching replies, flush.

use bytes::Bytes;
use p9_core::client::{Client, ClientError, ReplyError};
use p9_core::*;

fn frame(tag: u16, msg: impl Into<Msg>) -> Bytes {
    Fcall::new(tag, msg).to_frame().unwrap()
}

fn ready(dialect: Dialect) -> Client {
    let mut c = Client::new(8192, dialect);
    let tv = c.poll_transmit().unwrap();
    assert_eq!(
        Fcall::decode(&tv, dialect).unwrap(),
        Fcall::new(
            NOTAG,
            Tversion {
                msize: 8192,
                version: dialect.version_string().into()
            }
        )
    );
    let rv = Rversion {
        msize: 8192,
        version: dialect.version_string().into(),
    };
    c.handle_frame(&frame(NOTAG, rv)).unwrap();
    c
}

#[test]
fn version_negotiation_takes_the_smaller_msize_and_the_servers_dialect() {
    let mut c = Client::new(65536, Dialect::DotL);
    assert!(!c.is_ready());
    assert_eq!(c.send(Tclunk { fid: Fid(0) }), Err(ClientError::NotReady));
    c.poll_transmit().unwrap();
    c.handle_frame(&frame(
        NOTAG,
        Rversion {
            msize: 8192,
            version: "9P2000".into(),
        },
    ))
    .unwrap();
    assert_eq!(c.dialect(), Some(Dialect::Base));
    assert_eq!(c.msize(), 8192);
    assert_eq!(c.iounit(), 8192 - IOHDRSZ);
}

#[test]
fn unknown_version_is_an_error() {
    let mut c = Client::new(8192, Dialect::DotL);
    let err = c
        .handle_frame(&frame(
            NOTAG,
            Rversion {
                msize: 8192,
                version: "unknown".into(),
            },
        ))
        .unwrap_err();
    assert_eq!(err, ClientError::VersionRejected("unknown".into()));
    assert!(!c.is_ready());
}

#[test]
fn replies_match_requests_in_any_order() {
    let mut c = ready(Dialect::DotL);
    let t1 = c.send(Tclunk { fid: Fid(1) }).unwrap();
    let t2 = c
        .send(Tgetattr {
            fid: Fid(2),
            request_mask: 0x7ff,
        })
        .unwrap();
    assert_ne!(t1, t2);
    assert_eq!(c.in_flight(), 2);
    assert_eq!(
        c.poll_transmit().map(|f| Header::parse(&f).unwrap().tag),
        Some(t1)
    );
    assert_eq!(
        c.poll_transmit().map(|f| Header::parse(&f).unwrap().tag),
        Some(t2)
    );
    let r2 = c
        .handle_frame(&frame(
            t2,
            Rlerror {
                ecode: errno::ENOENT,
            },
        ))
        .unwrap();
    assert_eq!(r2.request, MsgType::Tgetattr);
    assert_eq!(r2.error(), Some(ReplyError::Errno(errno::ENOENT)));
    let r1 = c.handle_frame(&frame(t1, Rclunk {})).unwrap();
    assert_eq!((r1.request, r1.error()), (MsgType::Tclunk, None));
    assert_eq!(c.in_flight(), 0);
    // The tag is free again: a second reply to it is refused.
    assert_eq!(
        c.handle_frame(&frame(t1, Rclunk {})),
        Err(ClientError::UnknownTag(t1))
    );
}

#[test]
fn a_reply_of_the_wrong_type_is_refused_and_keeps_the_request() {
    let mut c = ready(Dialect::DotL);
    let t = c.send(Tclunk { fid: Fid(1) }).unwrap();
    assert_eq!(
        c.handle_frame(&frame(t, Rremove {})),
        Err(ClientError::WrongReplyType {
            request: MsgType::Tclunk,
            reply: MsgType::Rremove
        })
    );
    assert_eq!(c.in_flight(), 1);
}

#[test]
fn rflush_retires_the_flushed_request() {
    let mut c = ready(Dialect::Base);
    let t = c
        .send(Tread {
            fid: Fid(1),
            offset: 0,
            count: 10,
        })
        .unwrap();
    let f = c.flush(t).unwrap();
    let r = c.handle_frame(&frame(f, Rflush {})).unwrap();
    assert_eq!((r.request, r.flushed), (MsgType::Tflush, Some(t)));
    assert_eq!(c.in_flight(), 0);
    assert_eq!(
        c.handle_frame(&frame(
            t,
            Rread {
                data: Data(Bytes::new())
            }
        )),
        Err(ClientError::UnknownTag(t))
    );
}

#[test]
fn a_reply_before_rflush_still_counts() {
    let mut c = ready(Dialect::Base);
    let t = c
        .send(Tread {
            fid: Fid(1),
            offset: 0,
            count: 10,
        })
        .unwrap();
    let f = c.flush(t).unwrap();
    let r = c
        .handle_frame(&frame(
            t,
            Rread {
                data: Data("hi".into()),
            },
        ))
        .unwrap();
    assert_eq!(r.request, MsgType::Tread);
    let r = c.handle_frame(&frame(f, Rflush {})).unwrap();
    assert_eq!(r.flushed, None);
}

#[test]
fn rerror_carries_its_message_and_errno() {
    let mut c = ready(Dialect::DotU);
    let t = c.send(Tremove { fid: Fid(4) }).unwrap();
    let r = c
        .handle_frame(&frame(
            t,
            Rerror {
                ename: "permission denied".into(),
                errno: Some(13),
            },
        ))
        .unwrap();
    assert_eq!(
        r.error(),
        Some(ReplyError::Message {
            ename: "permission denied".into(),
            errno: Some(13)
        })
    );
    assert_eq!(r.error().unwrap().to_string(), "permission denied");
}

#[test]
fn fids_are_reused_after_being_freed() {
    let mut c = ready(Dialect::DotL);
    let a = c.alloc_fid();
    let b = c.alloc_fid();
    assert_ne!(a, b);
    c.free_fid(a);
    assert_eq!(c.alloc_fid(), a);
}

#[test]
fn requests_larger_than_msize_are_refused() {
    let mut c = ready(Dialect::DotL);
    let big = Twrite {
        fid: Fid(1),
        offset: 0,
        data: Data(vec![0; 9000].into()),
    };
    assert_eq!(
        c.send(big),
        Err(ClientError::TooLarge {
            len: 9023,
            msize: 8192
        })
    );
    assert_eq!(c.in_flight(), 0);
}

#[test]
fn undecodable_replies_are_errors_not_panics() {
    let mut c = ready(Dialect::DotL);
    let t = c.send(Tclunk { fid: Fid(1) }).unwrap();
    let mut bad = frame(t, Rlerror { ecode: 5 }).to_vec();
    bad.push(0);
    bad[0] += 1;
    assert!(matches!(
        c.handle_frame(&bad.into()),
        Err(ClientError::Decode(_))
    ));
}

#[test]
fn tags_are_exhausted_at_65535_in_flight() {
    let mut c = ready(Dialect::DotL);
    for _ in 0..65535 {
        c.send(Tclunk { fid: Fid(1) }).unwrap();
    }
    assert_eq!(
        c.send(Tclunk { fid: Fid(1) }),
        Err(ClientError::TagsExhausted)
    );
}

#[test]
fn set_tag_rewrites_only_the_tag() {
    let mut f = frame(5, Tclunk { fid: Fid(9) }).to_vec();
    set_tag(&mut f, 0x0102).unwrap();
    assert_eq!(
        Fcall::decode(&f.into(), Dialect::DotL).unwrap(),
        Fcall::new(0x0102, Tclunk { fid: Fid(9) })
    );
    let mut short = [7u8, 0, 0, 0, 120, 1];
    assert!(set_tag(&mut short, 3).is_err());
    assert_eq!(short, [7, 0, 0, 0, 120, 1]);
}
