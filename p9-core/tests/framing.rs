//! FrameDecoder: frames come out whole whatever the chunking, bad sizes are refused as soon as
//! the size field arrives, and the decoder never holds more than one frame.

use arbitrary::Unstructured;
use bytes::{BufMut, Bytes};
use p9_core::{DecodeErrorKind, Dialect, Fcall, FrameDecoder};
use proptest::collection::vec;
use proptest::prelude::*;

const MSIZE: u32 = 4096;

fn frames_from(seed: &[u8]) -> Vec<Bytes> {
    let mut u = Unstructured::new(seed);
    let mut frames = Vec::new();
    while let Ok(f) = p9_core::arbitrary::arbitrary_fcall(&mut u, Dialect::DotL) {
        if u.is_empty() {
            break;
        }
        frames.push(f.to_frame().unwrap());
    }
    frames
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn push_in_any_chunks_yields_the_same_frames(seed in vec(any::<u8>(), 0..3000), cuts in vec(1usize..700, 1..50)) {
        let frames = frames_from(&seed);
        let stream: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        let mut dec = FrameDecoder::new(MSIZE);
        let mut out = Vec::new();
        let mut rest = &stream[..];
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let mut chunk = &rest[..(*cut.next().unwrap()).min(rest.len())];
            rest = &rest[chunk.len()..];
            while !chunk.is_empty() {
                let n = dec.push(chunk);
                chunk = &chunk[n..];
                prop_assert!(dec.buffered() <= MSIZE as usize);
                while let Some(f) = dec.next_frame().unwrap() {
                    out.push(f);
                }
            }
        }
        prop_assert_eq!(out, frames);
        prop_assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn reading_into_the_buffer_yields_the_same_frames(seed in vec(any::<u8>(), 0..3000), chunk in 1usize..5000) {
        let frames = frames_from(&seed);
        let stream: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        let mut dec = FrameDecoder::new(MSIZE);
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            dec.read_buf().put_slice(piece);
            while let Some(f) = dec.next_frame().unwrap() {
                out.push(f);
            }
        }
        prop_assert_eq!(out, frames);
    }
}

#[test]
fn oversized_frame_is_refused_after_its_size_field() {
    let mut dec = FrameDecoder::new(MSIZE);
    let mut input = (MSIZE + 1).to_le_bytes().to_vec();
    input.extend_from_slice(&[0; 100]);
    // Only the size field is taken; none of the body is buffered.
    assert_eq!(dec.push(&input), 4);
    let err = dec.next_frame().unwrap_err();
    assert_eq!(
        err.kind,
        DecodeErrorKind::FrameTooLarge {
            size: MSIZE + 1,
            max: MSIZE
        }
    );
    assert_eq!(dec.push(&input[4..]), 0);
    assert_eq!(dec.buffered(), 4);
}

#[test]
fn undersized_frame_is_refused() {
    for size in 0u32..7 {
        let mut dec = FrameDecoder::new(MSIZE);
        dec.push(&size.to_le_bytes());
        let err = dec.next_frame().unwrap_err();
        assert_eq!(
            err.kind,
            DecodeErrorKind::FrameTooShort { len: size as usize }
        );
    }
}

#[test]
fn a_frame_of_exactly_msize_is_accepted() {
    let data = vec![1u8; MSIZE as usize - 11];
    let frame = Fcall::new(
        1,
        p9_core::Rread {
            data: p9_core::Data(data.into()),
        },
    )
    .to_frame()
    .unwrap();
    assert_eq!(frame.len(), MSIZE as usize);
    let mut dec = FrameDecoder::new(MSIZE);
    assert_eq!(dec.push(&frame), frame.len());
    assert_eq!(dec.next_frame().unwrap(), Some(frame));
}

/// Frames cut from the read buffer share its allocation.
#[test]
fn frames_share_the_read_buffer() {
    let a = Fcall::new(1, p9_core::Rclunk {}).to_frame().unwrap();
    let b = Fcall::new(2, p9_core::Rclunk {}).to_frame().unwrap();
    let mut dec = FrameDecoder::new(MSIZE);
    dec.read_buf().reserve(64);
    let base = dec.read_buf().as_ptr() as usize;
    dec.read_buf().put_slice(&a);
    dec.read_buf().put_slice(&b);
    let fa = dec.next_frame().unwrap().unwrap();
    let fb = dec.next_frame().unwrap().unwrap();
    assert_eq!(
        (fa.as_ptr() as usize, fb.as_ptr() as usize),
        (base, base + a.len())
    );
}

/// A large frame read in pieces into `read_buf_with_room` stays in the one allocation made
/// when its size arrived, however little of it is left to read: making a fresh chunk's room
/// at the end would move all that has arrived of it into a buffer twice its size.
#[test]
fn a_large_frame_is_read_into_one_allocation() {
    let size = (1usize << 20) + 11;
    let mut frame = vec![0u8; size];
    frame[..4].copy_from_slice(&(size as u32).to_le_bytes());
    frame[4] = 117; // Rread
    let mut dec = FrameDecoder::new(2 << 20);
    // The size field arrives first, then pieces that leave less than a chunk to read.
    dec.read_buf_with_room(16 * 1024)
        .extend_from_slice(&frame[..7]);
    assert!(dec.next_frame().unwrap().is_none());
    let home = dec.read_buf_with_room(16 * 1024).as_ptr() as usize;
    let mut at = 7;
    for piece in [size - 7 - 10_000, 9_000, 999, 1] {
        let buf = dec.read_buf_with_room(16 * 1024);
        assert_eq!(
            buf.as_ptr() as usize,
            home,
            "the frame moved with {} bytes to go",
            size - at
        );
        buf.extend_from_slice(&frame[at..at + piece]);
        at += piece;
        if at < size {
            assert!(dec.next_frame().unwrap().is_none());
        }
    }
    let out = dec.next_frame().unwrap().expect("the whole frame");
    assert_eq!(&out[..], &frame[..]);
}
