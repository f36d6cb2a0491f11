//! The fid roles the message table derives (`Msg::used_fids`, `new_fid`, `primary_fid`) against
//! the manuals, written out by hand here once: which fid a request acts on, which others it
//! needs, which it creates.

use arbitrary::Unstructured;
use p9_core::{Dialect, Msg, MsgType, NOFID};

/// (used fids in order, created fid) read off each message's fields by hand.
fn by_hand(msg: &Msg) -> (Vec<u32>, Option<u32>) {
    match msg {
        Msg::Tauth(m) => (vec![], Some(m.afid.0)),
        // NOFID as the afid: no authentication, no fid used.
        Msg::Tattach(m) => (
            (m.afid != NOFID).then_some(m.afid.0).into_iter().collect(),
            Some(m.fid.0),
        ),
        Msg::Twalk(m) => (vec![m.fid.0], Some(m.newfid.0)),
        Msg::Txattrwalk(m) => (vec![m.fid.0], Some(m.newfid.0)),
        Msg::Topen(m) => (vec![m.fid.0], None),
        Msg::Tcreate(m) => (vec![m.fid.0], None),
        Msg::Tread(m) => (vec![m.fid.0], None),
        Msg::Twrite(m) => (vec![m.fid.0], None),
        Msg::Tclunk(m) => (vec![m.fid.0], None),
        Msg::Tremove(m) => (vec![m.fid.0], None),
        Msg::Tstat(m) => (vec![m.fid.0], None),
        Msg::Twstat(m) => (vec![m.fid.0], None),
        Msg::Tstatfs(m) => (vec![m.fid.0], None),
        Msg::Tlopen(m) => (vec![m.fid.0], None),
        Msg::Tlcreate(m) => (vec![m.fid.0], None),
        Msg::Tsymlink(m) => (vec![m.fid.0], None),
        Msg::Tmknod(m) => (vec![m.dfid.0], None),
        Msg::Trename(m) => (vec![m.fid.0, m.dfid.0], None),
        Msg::Treadlink(m) => (vec![m.fid.0], None),
        Msg::Tgetattr(m) => (vec![m.fid.0], None),
        Msg::Tsetattr(m) => (vec![m.fid.0], None),
        Msg::Txattrcreate(m) => (vec![m.fid.0], None),
        Msg::Treaddir(m) => (vec![m.fid.0], None),
        Msg::Tfsync(m) => (vec![m.fid.0], None),
        Msg::Tlock(m) => (vec![m.fid.0], None),
        Msg::Tgetlock(m) => (vec![m.fid.0], None),
        // Tlink acts on the directory the link is made in.
        Msg::Tlink(m) => (vec![m.dfid.0, m.fid.0], None),
        Msg::Tmkdir(m) => (vec![m.dfid.0], None),
        Msg::Trenameat(m) => (vec![m.olddirfid.0, m.newdirfid.0], None),
        Msg::Tunlinkat(m) => (vec![m.dirfid.0], None),
        // Version, flush and every reply name no fid.
        _ => (vec![], None),
    }
}

#[test]
fn every_message_names_its_fids_as_the_manuals_say() {
    let mut seed = [0u8; 512];
    let mut checked = 0;
    for dialect in Dialect::ALL {
        for ty in MsgType::of_dialect(dialect) {
            for round in 0..32u32 {
                // Deterministic bytes that vary per round, NOFID included now and then.
                for (i, b) in seed.iter_mut().enumerate() {
                    *b = (i as u32 * 31 + round * 17 + ty as u32) as u8;
                }
                if round % 4 == 0 {
                    seed[..64].fill(0xff);
                }
                let msg = ty
                    .arbitrary_msg(&mut Unstructured::new(&seed), dialect)
                    .unwrap();
                let (used, new) = by_hand(&msg);
                assert_eq!(msg.used_fids().as_slice(), &used[..], "{msg:?}");
                assert_eq!(msg.new_fid(), new, "{msg:?}");
                assert_eq!(msg.primary_fid(), used.first().copied(), "{msg:?}");
                checked += 1;
            }
        }
    }
    assert!(checked > 1000);
}
