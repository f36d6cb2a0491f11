//! Random valid messages for property tests and fuzzing, derived from the message table: each
//! field type knows how to make an arbitrary value of itself that is valid in a dialect.

use alloc::vec::Vec;

use arbitrary::{Arbitrary, Result, Unstructured};
use bytes::Bytes;

use crate::types::{Qid, Stat, StatExt, WalkNames, WalkQids, MAXWELEM};
use crate::wire::{Data, Fid};
use crate::{Dialect, Fcall, MsgType};

/// A field type that can produce an arbitrary value valid in `dialect`.
pub trait ArbitraryWire: Sized {
    fn arbitrary_wire(u: &mut Unstructured<'_>, dialect: Dialect) -> Result<Self>;
}

macro_rules! plain {
    ($($t:ty),*) => {$(
        impl ArbitraryWire for $t {
            fn arbitrary_wire(u: &mut Unstructured<'_>, _: Dialect) -> Result<Self> {
                <$t>::arbitrary(u)
            }
        }
    )*};
}
plain!(u8, u16, u32, u64);

impl ArbitraryWire for Fid {
    fn arbitrary_wire(u: &mut Unstructured<'_>, _: Dialect) -> Result<Self> {
        u32::arbitrary(u).map(Fid)
    }
}

fn bytes_upto(u: &mut Unstructured<'_>, max: usize) -> Result<Bytes> {
    let n = u.int_in_range(0..=max)?;
    Ok(Bytes::copy_from_slice(u.bytes(n.min(u.len()))?))
}

/// Strings: any bytes (9P names need not be UTF-8), kept short.
impl ArbitraryWire for Bytes {
    fn arbitrary_wire(u: &mut Unstructured<'_>, _: Dialect) -> Result<Self> {
        bytes_upto(u, 40)
    }
}

impl ArbitraryWire for Data {
    fn arbitrary_wire(u: &mut Unstructured<'_>, _: Dialect) -> Result<Self> {
        bytes_upto(u, 300).map(Data)
    }
}

impl ArbitraryWire for Qid {
    fn arbitrary_wire(u: &mut Unstructured<'_>, _: Dialect) -> Result<Self> {
        Ok(Qid {
            typ: u8::arbitrary(u)?,
            version: u32::arbitrary(u)?,
            path: u64::arbitrary(u)?,
        })
    }
}

/// Extension fields exist exactly in the extended dialects.
impl<T: ArbitraryWire> ArbitraryWire for Option<T> {
    fn arbitrary_wire(u: &mut Unstructured<'_>, dialect: Dialect) -> Result<Self> {
        if dialect.is_extended() {
            T::arbitrary_wire(u, dialect).map(Some)
        } else {
            Ok(None)
        }
    }
}

impl ArbitraryWire for WalkNames {
    fn arbitrary_wire(u: &mut Unstructured<'_>, dialect: Dialect) -> Result<Self> {
        let n = u.int_in_range(0..=MAXWELEM)?;
        let names = (0..n)
            .map(|_| Bytes::arbitrary_wire(u, dialect))
            .collect::<Result<Vec<_>>>()?;
        Ok(WalkNames::new(names).expect("at most 16 short names"))
    }
}

impl ArbitraryWire for WalkQids {
    fn arbitrary_wire(u: &mut Unstructured<'_>, dialect: Dialect) -> Result<Self> {
        let n = u.int_in_range(0..=MAXWELEM)?;
        let qids = (0..n)
            .map(|_| Qid::arbitrary_wire(u, dialect))
            .collect::<Result<Vec<_>>>()?;
        Ok(WalkQids::new(&qids).expect("at most 16 qids"))
    }
}

impl ArbitraryWire for Stat {
    fn arbitrary_wire(u: &mut Unstructured<'_>, d: Dialect) -> Result<Self> {
        Ok(Stat {
            typ: u16::arbitrary(u)?,
            dev: u32::arbitrary(u)?,
            qid: Qid::arbitrary_wire(u, d)?,
            mode: u32::arbitrary(u)?,
            atime: u32::arbitrary(u)?,
            mtime: u32::arbitrary(u)?,
            length: u64::arbitrary(u)?,
            name: Bytes::arbitrary_wire(u, d)?,
            uid: Bytes::arbitrary_wire(u, d)?,
            gid: Bytes::arbitrary_wire(u, d)?,
            muid: Bytes::arbitrary_wire(u, d)?,
            ext: if d.is_extended() {
                Some(StatExt {
                    extension: Bytes::arbitrary_wire(u, d)?,
                    n_uid: u32::arbitrary(u)?,
                    n_gid: u32::arbitrary(u)?,
                    n_muid: u32::arbitrary(u)?,
                })
            } else {
                None
            },
        })
    }
}

/// A random tagged message of a random type of `dialect`.
pub fn arbitrary_fcall(u: &mut Unstructured<'_>, dialect: Dialect) -> Result<Fcall> {
    let types: Vec<MsgType> = MsgType::of_dialect(dialect).collect();
    let ty = *u.choose(&types)?;
    Ok(Fcall {
        tag: u16::arbitrary(u)?,
        msg: ty.arbitrary_msg(u, dialect)?,
    })
}

/// The decoding property that fuzzing checks, on any input: in every dialect, decoding either
/// fails with an error or yields a message whose encoding is exactly the input (the codec is
/// canonical), and the cheap header and fid readers agree with the full decode. Panics if not.
pub fn check_decode(frame: &[u8]) {
    let frame = Bytes::copy_from_slice(frame);
    for dialect in Dialect::ALL {
        let decoded = Fcall::decode(&frame, dialect);
        let fids = crate::request_fids(&frame, dialect);
        let Ok(fcall) = decoded else {
            if let Ok(header) = crate::Header::parse(&frame) {
                // The fid reader validates the body too, so it must fail alike.
                if header.msg_type_in(dialect).is_ok() {
                    assert!(fids.is_err(), "fids read from an undecodable frame");
                }
            }
            continue;
        };
        assert!(fids.is_ok(), "fid reader rejects a frame that decodes");
        let again = fcall.to_frame().expect("a decoded message re-encodes");
        assert_eq!(&again[..], &frame[..], "re-encoding differs in {dialect}");
        assert_eq!(fcall.encoded_len(), frame.len());
        let header = crate::Header::parse(&frame).expect("decoded frame has a header");
        assert_eq!(header.tag, fcall.tag);
        assert_eq!(header.msg_type, fcall.msg.msg_type() as u8);
    }
}
