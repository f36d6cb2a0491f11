//! Directory contents: the stat records of a 9P2000/.u directory Rread and the entries of a
//! 9P2000.L Rreaddir, read without copying and with their qids rewritable in place (the mux
//! gives every file one stable qid across backends).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::types::{Qid, Stat};
use crate::wire::{Reader, Wire};
use crate::Dialect;

/// Iterator over the stat records of a directory Rread. Yields an error once, then stops, if the
/// data is malformed.
pub struct StatRecords<'a> {
    r: Reader<'a>,
    failed: bool,
}

/// The stat records in `data` (the payload of an Rread on a directory).
pub fn stat_records(data: &Bytes, dialect: Dialect) -> StatRecords<'_> {
    StatRecords {
        r: Reader::new(data, dialect),
        failed: false,
    }
}

impl Iterator for StatRecords<'_> {
    type Item = Result<Stat, DecodeError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.remaining() == 0 {
            return None;
        }
        let item = Stat::decode_record(&mut self.r);
        self.failed = item.is_err();
        Some(item)
    }
}

/// One entry of a 9P2000.L Rreaddir: `qid[13] offset[8] type[1] name[s]`. `offset` is the
/// value to pass to the next Treaddir to continue after this entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirent {
    pub qid: Qid,
    pub offset: u64,
    pub typ: u8,
    pub name: Bytes,
}

impl Dirent {
    pub fn decode(r: &mut Reader<'_>) -> Result<Dirent, DecodeError> {
        Ok(Dirent {
            qid: Qid::decode(r)?,
            offset: r.u64()?,
            typ: r.u8()?,
            name: Bytes::decode(r)?,
        })
    }

    fn skip(r: &mut Reader<'_>) -> Result<(), DecodeError> {
        r.skip(Qid::LEN + 8 + 1)?;
        let n = r.u16()? as usize;
        r.skip(n)
    }

    pub fn encoded_len(&self) -> usize {
        Qid::LEN + 8 + 1 + 2 + self.name.len()
    }

    /// Append the entry (the name must be at most 65535 bytes).
    pub fn encode(&self, w: &mut BytesMut) {
        self.qid.encode(w);
        w.put_u64_le(self.offset);
        w.put_u8(self.typ);
        self.name.encode(w);
    }
}

/// Iterator over the entries of an Rreaddir payload.
pub struct Dirents<'a> {
    r: Reader<'a>,
    failed: bool,
}

/// The entries in `data` (the payload of an Rreaddir).
pub fn dirents(data: &Bytes) -> Dirents<'_> {
    Dirents {
        r: Reader::new(data, Dialect::DotL),
        failed: false,
    }
}

impl Iterator for Dirents<'_> {
    type Item = Result<Dirent, DecodeError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.remaining() == 0 {
            return None;
        }
        let item = Dirent::decode(&mut self.r);
        self.failed = item.is_err();
        Some(item)
    }
}

/// A stat record's name: `size[2] type[2] dev[4] qid[13] mode[4] atime[4] mtime[4] length[8]`,
/// then `name[s]`.
const STAT_NAME_OFFSET: usize = 2 + 2 + 4 + Qid::LEN + 4 + 4 + 4 + 8;
/// A dirent's name: `qid[13] offset[8] type[1]`, then `name[s]`.
const DIRENT_NAME_OFFSET: usize = Qid::LEN + 8 + 1;

/// Apply `f` to the name and qid of every stat record in a directory Rread's data, rewriting
/// the qid in place (the mux derives a stable qid from the entry's path). The data is
/// validated first, so on error nothing has been changed. Returns the number of records.
pub fn rewrite_stat_qids(
    data: &mut [u8],
    dialect: Dialect,
    f: impl FnMut(&[u8], &mut Qid),
) -> Result<usize, DecodeError> {
    rewrite_qids(
        data,
        dialect,
        Stat::skip_record,
        (Stat::QID_OFFSET, STAT_NAME_OFFSET),
        f,
    )
}

/// Apply `f` to the name and qid of every entry of an Rreaddir's data, rewriting the qid in
/// place; validated first, so on error nothing has been changed. Returns the number of
/// entries.
pub fn rewrite_dirent_qids(
    data: &mut [u8],
    f: impl FnMut(&[u8], &mut Qid),
) -> Result<usize, DecodeError> {
    rewrite_qids(
        data,
        Dialect::DotL,
        Dirent::skip,
        (0, DIRENT_NAME_OFFSET),
        f,
    )
}

/// The one mechanism behind both rewrites: a validating pass over the records, then a pass that
/// hands `f` each record's name and patches its qid (`offsets`: the qid's and the name's, the
/// qid first).
fn rewrite_qids(
    data: &mut [u8],
    dialect: Dialect,
    skip: fn(&mut Reader<'_>) -> Result<(), DecodeError>,
    offsets: (usize, usize),
    mut f: impl FnMut(&[u8], &mut Qid),
) -> Result<usize, DecodeError> {
    let (qid_offset, name_offset) = offsets;
    let mut count = 0;
    let mut r = Reader::borrowed(data, dialect);
    while r.remaining() > 0 {
        skip(&mut r)?;
        count += 1;
    }
    let mut start = 0;
    while start < data.len() {
        let len = {
            let mut r = Reader::borrowed(&data[start..], dialect);
            skip(&mut r)?;
            r.pos()
        };
        let record = &mut data[start..start + len];
        let (head, tail) = record.split_at_mut(name_offset);
        let name_len = u16::from_le_bytes([tail[0], tail[1]]) as usize;
        let name = &tail[2..2 + name_len];
        let raw: &mut [u8; 13] = (&mut head[qid_offset..qid_offset + Qid::LEN])
            .try_into()
            .expect("validated record holds a qid");
        let mut qid = Qid::from_bytes(raw);
        f(name, &mut qid);
        *raw = qid.to_bytes();
        start += len;
    }
    Ok(count)
}
