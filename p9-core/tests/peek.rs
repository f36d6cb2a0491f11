//! Every peek against the decoder: on messages of every dialect (and on mangled frames), a
//! peek that answers agrees with what decoding finds, and it answers for every well-formed
//! frame of its type.

use arbitrary::Unstructured;
use p9_core::peek;
use p9_core::{Dialect, Fcall, Msg, MsgType};

#[test]
fn peeks_agree_with_the_decoder() {
    let mut seen = [0usize; 4];
    for dialect in Dialect::ALL {
        for ty in [
            MsgType::Tread,
            MsgType::Twrite,
            MsgType::Rread,
            MsgType::Rwrite,
        ] {
            for round in 0..200u32 {
                let seed: Vec<u8> = (0..600u32).map(|i| (i * 7 + round * 13) as u8).collect();
                let msg = ty
                    .arbitrary_msg(&mut Unstructured::new(&seed), dialect)
                    .unwrap();
                let frame = Fcall {
                    tag: round as u16,
                    msg: msg.clone(),
                }
                .to_frame()
                .unwrap();
                match &msg {
                    Msg::Tread(m) => {
                        let p = peek::tread(&frame).expect("a Tread is peeked");
                        assert_eq!((p.fid, p.offset, p.count), (m.fid.0, m.offset, m.count));
                        assert_eq!(peek::first_fid(&frame), Some(m.fid.0));
                        assert_eq!(peek::twrite(&frame), None);
                        seen[0] += 1;
                    }
                    Msg::Twrite(m) => {
                        let p = peek::twrite(&frame).expect("a Twrite is peeked");
                        assert_eq!(
                            (p.fid, p.offset, p.count as usize),
                            (m.fid.0, m.offset, m.data.0.len())
                        );
                        assert_eq!(peek::tread(&frame), None);
                        // One byte short: the count no longer matches.
                        assert_eq!(peek::twrite(&frame[..frame.len() - 1]), None);
                        seen[1] += 1;
                    }
                    Msg::Rread(m) => {
                        assert_eq!(peek::rread(&frame), Some(m.data.0.len() as u32));
                        seen[2] += 1;
                    }
                    Msg::Rwrite(m) => {
                        assert_eq!(peek::rwrite(&frame), Some(m.count));
                        assert_eq!(peek::rread(&frame), Some(m.count).filter(|&c| c == 0));
                        seen[3] += 1;
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }
    assert!(seen.iter().all(|&n| n == 600), "{seen:?}");
}

#[test]
fn a_peek_that_answers_on_any_bytes_matches_the_decoding() {
    // Random frames with a correct size field: whenever a peek answers, the frame decodes to
    // that message with those fields.
    let mut answered = 0;
    for round in 0..20_000u32 {
        let mut x = round.wrapping_mul(2_654_435_761) ^ 0x9e37;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let ty = [116u8, 117, 118, 119][(next() % 4) as usize];
        let len = 7 + (next() % 40) as usize;
        let mut frame: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        frame[..4].copy_from_slice(&(len as u32).to_le_bytes());
        frame[4] = ty;
        if next() % 2 == 0 && len >= 11 {
            // Make the count agree with the length now and then.
            let at = if ty == 118 { 19 } else { 7 };
            let rest = if ty == 118 { 23 } else { 11 };
            if len >= at + 4 && len >= rest {
                frame[at..at + 4].copy_from_slice(&((len - rest) as u32).to_le_bytes());
            }
        }
        let bytes = bytes::Bytes::from(frame.clone());
        let decoded = Fcall::decode(&bytes, Dialect::DotL).ok().map(|f| f.msg);
        if let Some(p) = peek::tread(&frame) {
            answered += 1;
            assert!(
                matches!(decoded, Some(Msg::Tread(ref m)) if m.fid.0 == p.fid && m.count == p.count && m.offset == p.offset)
            );
        }
        if let Some(p) = peek::twrite(&frame) {
            answered += 1;
            assert!(
                matches!(decoded, Some(Msg::Twrite(ref m)) if m.fid.0 == p.fid && m.data.0.len() == p.count as usize)
            );
        }
        if let Some(n) = peek::rread(&frame) {
            answered += 1;
            assert!(matches!(decoded, Some(Msg::Rread(ref m)) if m.data.0.len() == n as usize));
        }
        if let Some(n) = peek::rwrite(&frame) {
            answered += 1;
            assert!(matches!(decoded, Some(Msg::Rwrite(ref m)) if m.count == n));
        }
    }
    assert!(answered > 1000, "{answered}");
}
