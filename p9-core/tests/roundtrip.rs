//! Property tests: every message type of every dialect round-trips encode → decode → encode,
//! and arbitrary bytes either fail to decode or decode canonically.

use arbitrary::Unstructured;
use bytes::Bytes;
use p9_core::arbitrary::check_decode;
use p9_core::{request_fids, Dialect, Fcall, Msg, MsgType};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn every_type_of_every_dialect_round_trips() {
    let mut pairs = 0;
    for dialect in Dialect::ALL {
        for ty in MsgType::of_dialect(dialect) {
            pairs += 1;
            runner(64)
                .run(&(vec(any::<u8>(), 0..1500), any::<u16>()), |(seed, tag)| {
                    let mut u = Unstructured::new(&seed);
                    let msg = ty.arbitrary_msg(&mut u, dialect).unwrap();
                    let fcall = Fcall { tag, msg };
                    let frame = fcall.to_frame().unwrap();
                    prop_assert_eq!(frame.len(), fcall.encoded_len());
                    let back = Fcall::decode(&frame, dialect).unwrap();
                    prop_assert_eq!(&back, &fcall);
                    prop_assert_eq!(back.to_frame().unwrap(), frame.clone());
                    if ty.is_request() {
                        prop_assert!(request_fids(&frame, dialect).is_ok());
                    }
                    Ok(())
                })
                .unwrap_or_else(|e| panic!("{} in {dialect}: {e}", ty.name()));
        }
    }
    // 27 types in 9P2000 and in .u; in .L the 18 shared ones plus 39 of its own.
    assert_eq!(pairs, 27 + 27 + 18 + 39);
}

/// The type sets of the dialects: the same number decodes only where the dialect has it.
#[test]
fn messages_outside_their_dialect_are_rejected() {
    for ty in MsgType::ALL {
        let dialect = Dialect::ALL
            .into_iter()
            .find(|d| ty.in_dialect(*d))
            .unwrap();
        let mut u = Unstructured::new(&[7; 64]);
        let frame = Fcall {
            tag: 1,
            msg: ty.arbitrary_msg(&mut u, dialect).unwrap(),
        }
        .to_frame()
        .unwrap();
        for other in Dialect::ALL.into_iter().filter(|d| !ty.in_dialect(*d)) {
            let err = Fcall::decode(&frame, other).unwrap_err();
            assert!(
                matches!(err.kind, p9_core::DecodeErrorKind::UnknownType { .. }),
                "{} decoded in {other}: {err}",
                ty.name()
            );
        }
    }
}

#[test]
fn random_frames_decode_canonically_or_not_at_all() {
    runner(20_000)
        .run(
            &(any::<u8>(), any::<u16>(), vec(any::<u8>(), 0..200)),
            |(ty, tag, body)| {
                // Bias towards real type numbers so bodies get parsed.
                let ty = MsgType::ALL[ty as usize % MsgType::ALL.len()] as u8;
                let mut frame = Vec::with_capacity(7 + body.len());
                frame.extend_from_slice(&((7 + body.len()) as u32).to_le_bytes());
                frame.push(ty);
                frame.extend_from_slice(&tag.to_le_bytes());
                frame.extend_from_slice(&body);
                check_decode(&frame);
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn mutated_valid_frames_decode_canonically_or_not_at_all() {
    runner(20_000)
        .run(
            &(
                vec(any::<u8>(), 0..600),
                any::<usize>(),
                any::<u8>(),
                0..4u8,
            ),
            |(seed, at, byte, how)| {
                let mut u = Unstructured::new(&seed);
                let dialect = Dialect::ALL[seed.first().copied().unwrap_or(0) as usize % 3];
                let fcall = p9_core::arbitrary::arbitrary_fcall(&mut u, dialect).unwrap();
                let mut frame = fcall.to_frame().unwrap().to_vec();
                let at = at % frame.len();
                match how {
                    0 => frame[at] ^= byte | 1,
                    1 => frame.truncate(at.max(7)),
                    2 => frame.insert(at.max(7), byte),
                    _ => {
                        frame.remove(at.max(7).min(frame.len() - 1));
                    }
                }
                // Keep the size field honest half the time so bodies are exercised.
                if how != 0 || byte & 1 == 0 {
                    let len = frame.len() as u32;
                    frame[..4].copy_from_slice(&len.to_le_bytes());
                }
                check_decode(&frame);
                Ok(())
            },
        )
        .unwrap();
}

/// Decoded strings and payloads are slices of the frame: no copy.
#[test]
fn decoding_borrows_the_frame() {
    let payload = Bytes::from(vec![0xab; 8192]);
    let frame = Fcall::new(
        3,
        p9_core::Rread {
            data: p9_core::Data(payload),
        },
    )
    .to_frame()
    .unwrap();
    let Msg::Rread(r) = Fcall::decode(&frame, Dialect::DotL).unwrap().msg else {
        panic!("not an Rread")
    };
    let range = frame.as_ptr_range();
    assert!(range.contains(&r.data.0.as_ptr()));
    assert_eq!(r.data.0.as_ptr(), frame[11..].as_ptr());
}
