//! The outcome table (DESIGN §3.6), beside the replay table: a request that creates, removes,
//! links or renames a name may or may not have run when its link died. Sending it again could
//! run it twice; failing it says "possibly not completed" of what nearly always did or did not
//! plainly happen. So after a reconnect — roots re-attached, before the fids are rebuilt (a
//! rename that happened moves the fids beneath it) — the recovery walks to the names involved
//! on the new link, and this table reads what it saw:
//!
//! - done (only where the server shows it could have been no one else's doing): answered as
//!   done, the fid table changed as its reply would have changed it (a created file's fid
//!   becomes that file, reopened without create, exclusive or truncate);
//! - observably not done: sent again;
//! - cannot tell: failed, as the replay table fails it.
//!
//! Beside this table the recovery makes three more cases "cannot tell" (`recovery.rs`): two
//! orphans touching one name (`overlap`), a request orphaned by a link the session gave up on
//! (its server may run it yet, so absence proves nothing), and a request answered meanwhile
//! (the look's result is then dropped). Names no server makes (`names_nothing`) are sent again
//! without looking, for the server's own error.
//!
//! Only what no other actor could have brought about reads as done (see [`verdict`]): several
//! processes share a session, and other sessions and clients change the same names.
//! `Config::resolve_ambiguous` off keeps the replay table's rule for every such request.

use alloc::vec;
use alloc::vec::Vec;

use bytes::Bytes;
use p9_core::{dm, lflags, open_mode, Msg, MsgType, Qid, Rlcreate, Rlink};

use crate::fids::{FidKind, FidTable, OpenMode, RootId};

/// A name to look for: a path from a root. Every name but the last must be there; the last is
/// the one looked for.
#[derive(Clone, Debug)]
pub(crate) struct Look {
    pub root: RootId,
    pub names: Vec<Bytes>,
}

/// What a look found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The name is there, with this qid.
    Found(Qid),
    /// Its directory is there; the name is not.
    Missing,
    /// Nothing certain: the directory is not there, or the server refused to walk.
    Unclear,
}

/// What became of a request in flight when its link died, as far as the server shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It happened; a create's qid (for its reply) is the one found.
    Done(Qid),
    /// It observably did not happen: send it again.
    NotDone,
    /// Cannot tell: fail it as "possibly not completed".
    Unknown,
}

/// Whether `msg` is settled by looking (the rest follow the replay table).
pub(crate) fn resolvable(msg: &Msg) -> bool {
    match msg {
        Msg::Twstat(w) => !w.stat.name.is_empty(),
        _ => changes_names(msg.msg_type()),
    }
}

/// Whether requests of type `ty` make, remove, link or rename names (a Twstat only when it
/// renames, which its type alone does not tell).
pub(crate) fn changes_names(ty: MsgType) -> bool {
    matches!(
        ty,
        MsgType::Tcreate
            | MsgType::Tlcreate
            | MsgType::Tmkdir
            | MsgType::Tsymlink
            | MsgType::Tmknod
            | MsgType::Tlink
            | MsgType::Tremove
            | MsgType::Tunlinkat
            | MsgType::Trename
            | MsgType::Trenameat
    )
}

/// 9P2000.u special files, and hard links (DMLINK, 0x01000000, which Linux sends as a Tcreate
/// naming the file in its extension): made by Tcreate, but not reopened like files, and a
/// link's name shows nothing of which file it names.
const SPECIAL: u32 = dm::SYMLINK | dm::DEVICE | dm::NAMEDPIPE | dm::SOCKET | 0x0100_0000;

/// Whether two looks may touch one name: the same path, or one beneath the other. Two attaches
/// with one attach name are one tree whoever attached. Under different attach names (one tree
/// perhaps, as "" and "/" often are, or one inside the other) the roots' places are unknown:
/// the paths may meet wherever one runs into the other — one found whole inside the other, or
/// one's start equal to the other's end.
pub(crate) fn overlap(fids: &FidTable, a: &Look, b: &Look) -> bool {
    let same_tree = a.root == b.root || fids.root(a.root).aname == fids.root(b.root).aname;
    if same_tree {
        return a.names.starts_with(&b.names) || b.names.starts_with(&a.names);
    }
    let (a, b) = (&a.names[..], &b.names[..]);
    let inside = |x: &[Bytes], y: &[Bytes]| x.is_empty() || y.windows(x.len()).any(|w| w == x);
    let runs_into =
        |x: &[Bytes], y: &[Bytes]| (1..=x.len().min(y.len())).any(|k| x[..k] == y[y.len() - k..]);
    inside(a, b) || inside(b, a) || runs_into(a, b) || runs_into(b, a)
}

/// Whether `msg` names something no server makes or finds ("", ".", "..", a name with a
/// slash): walking to it would find another file, so it is sent again for the server's error.
pub(crate) fn names_nothing(msg: &Msg) -> bool {
    let bad = |n: &Bytes| n.is_empty() || &n[..] == b"." || &n[..] == b".." || n.contains(&b'/');
    match msg {
        Msg::Tcreate(c) => bad(&c.name),
        Msg::Tlcreate(c) => bad(&c.name),
        Msg::Tmkdir(c) => bad(&c.name),
        Msg::Tsymlink(c) => bad(&c.name),
        Msg::Tmknod(c) => bad(&c.name),
        Msg::Tlink(l) => bad(&l.name),
        Msg::Tunlinkat(u) => bad(&u.name),
        Msg::Trename(r) => bad(&r.name),
        Msg::Trenameat(r) => bad(&r.oldname) || bad(&r.newname),
        Msg::Twstat(w) => !w.stat.name.is_empty() && bad(&w.stat.name),
        _ => false,
    }
}

/// The path of `fid` from its root, when it is a usable file fid (not lost, auth or xattr).
fn path_of(fids: &FidTable, fid: u32) -> Option<(RootId, Vec<Bytes>)> {
    let rec = fids.get(fid)?;
    if !matches!(rec.kind, FidKind::Walked | FidKind::Open(_)) {
        return None;
    }
    let names = fids.names.path(rec.node);
    Some((
        rec.root,
        names.into_iter().map(Bytes::copy_from_slice).collect(),
    ))
}

/// `name` inside the directory `dir` stands for.
fn entry(fids: &FidTable, dir: u32, name: &Bytes) -> Option<Look> {
    let (root, mut names) = path_of(fids, dir)?;
    names.push(name.clone());
    Some(Look { root, names })
}

/// The file `fid` stands for, at its path — unless it is open ORCLOSE: the lost connection's
/// end removed it, so its absence does not show what the request did.
fn itself(fids: &FidTable, fid: u32) -> Option<Look> {
    if let Some(FidKind::Open(OpenMode::Classic(mode))) = fids.get(fid).map(|f| f.kind) {
        if mode & open_mode::RCLOSE != 0 {
            return None;
        }
    }
    let (root, names) = path_of(fids, fid)?;
    (!names.is_empty()).then_some(Look { root, names })
}

/// What to look at to settle `msg`; `None` when nothing can settle it (a fid it names is
/// lost, or it makes a special file or one removed on clunk, or it renames nothing).
pub(crate) fn looks(msg: &Msg, fids: &FidTable) -> Option<Vec<Look>> {
    Some(match msg {
        // ORCLOSE: the lost connection's end removed what it may have made, so an empty
        // place does not show that it never ran.
        Msg::Tcreate(c) if c.perm & SPECIAL == 0 && c.mode & open_mode::RCLOSE == 0 => {
            vec![entry(fids, c.fid.0, &c.name)?]
        }
        Msg::Tlcreate(c) => vec![entry(fids, c.fid.0, &c.name)?],
        Msg::Tmkdir(c) => vec![entry(fids, c.dfid.0, &c.name)?],
        Msg::Tsymlink(c) => vec![entry(fids, c.fid.0, &c.name)?],
        Msg::Tmknod(c) => vec![entry(fids, c.dfid.0, &c.name)?],
        Msg::Tlink(l) => {
            itself(fids, l.fid.0)?;
            vec![entry(fids, l.dfid.0, &l.name)?]
        }
        Msg::Tremove(r) => vec![itself(fids, r.fid.0)?],
        Msg::Tunlinkat(u) => vec![entry(fids, u.dirfid.0, &u.name)?],
        Msg::Trename(r) => vec![itself(fids, r.fid.0)?, entry(fids, r.dfid.0, &r.name)?],
        Msg::Trenameat(r) => vec![
            entry(fids, r.olddirfid.0, &r.oldname)?,
            entry(fids, r.newdirfid.0, &r.newname)?,
        ],
        Msg::Twstat(w) if !w.stat.name.is_empty() => {
            let old = itself(fids, w.fid.0)?;
            let mut new = old.clone();
            *new.names.last_mut()? = w.stat.name.clone();
            vec![old, new]
        }
        _ => return None,
    })
}

/// The qid of the file a fid of the session stands for at `look`'s path, when one does: what
/// the session itself last saw at that name.
fn known_at(fids: &FidTable, look: &Look) -> Option<Qid> {
    fids.fids.iter().find_map(|(&fid, rec)| {
        let (root, names) = path_of(fids, fid)?;
        (root == look.root && names == look.names).then_some(rec.qid)
    })
}

/// What `seen` (one entry per look, in order) says of `msg`.
///
/// Only what no other actor could have brought about is read as done: other processes behind
/// the same session, other sessions and other clients may change the same names during the
/// outage, so a name found made, gone or moved proves nothing of *this* request (a lock file
/// another client made, a queue entry another worker claimed by renaming it). What is read:
/// - not done: the name is as it was before the request (absent for a made name; the same
///   file, by qid path, still at a name that goes away or moves) — the request would have
///   changed it. This assumes nobody undid the request's effect during the outage (removed a
///   made name, put a removed file back), which no server history without a failure shows
///   faster than the request itself;
/// - done: a hard link's new name leads to the session's own file (the link(2) proof NFS lock
///   files use), and a Tlcreate that neither excludes nor truncates finds a regular file at
///   its name (an open of it, whoever made it: every history agrees);
/// - everything else cannot be told.
pub(crate) fn verdict(msg: &Msg, fids: &FidTable, looks: &[Look], seen: &[Seen]) -> Outcome {
    use Outcome::*;
    let qid_of = |fid: u32| fids.get(fid).map(|f| f.qid);
    // A made name: absent means not done; anything there proves nothing (another actor may
    // have made it, and the request would then have failed or truncated it).
    let made = match seen.first() {
        Some(Seen::Missing) => NotDone,
        _ => Unknown,
    };
    // A name that goes away or moves: the file the session knows at it (`file`) still there
    // means not done; without a known file nothing is certain.
    let stays = |file: Option<Qid>| match (seen.first(), file) {
        (Some(Seen::Found(q)), Some(f)) if f.path == q.path => NotDone,
        _ => Unknown,
    };
    let plain = |q: Qid| !q.is_dir() && q.typ & p9_core::qid_type::SYMLINK == 0;
    let at_first = || looks.first().and_then(|l| known_at(fids, l));
    match msg {
        // A Tlcreate that neither excludes nor truncates does what an open of the name does
        // when a file is there: a regular file found at the name is its outcome whether it
        // ran or the name was taken before (Linux's open(O_CREAT), `touch`, sends these).
        Msg::Tlcreate(c) if c.flags & (lflags::EXCL | lflags::TRUNC) == 0 => match seen.first() {
            Some(Seen::Found(q)) if plain(*q) => Done(*q),
            Some(Seen::Missing) => NotDone,
            _ => Unknown,
        },
        Msg::Tcreate(_) | Msg::Tlcreate(_) | Msg::Tmknod(_) | Msg::Tmkdir(_) | Msg::Tsymlink(_) => {
            made
        }
        // The file linked to is the session's own: only this request links it there (another
        // actor linking the same file to the same name is itself a link the session would
        // see in flight, or a process that knows the session's file by name).
        Msg::Tlink(l) => match (seen.first(), qid_of(l.fid.0)) {
            (Some(Seen::Found(q)), Some(f)) if f.path == q.path => Done(*q),
            (Some(Seen::Missing), _) => NotDone,
            _ => Unknown,
        },
        Msg::Tremove(r) => stays(qid_of(r.fid.0)),
        Msg::Tunlinkat(_) | Msg::Trenameat(_) => stays(at_first()),
        Msg::Trename(r) => stays(qid_of(r.fid.0)),
        Msg::Twstat(w) => stays(qid_of(w.fid.0)),
        _ => Unknown,
    }
}

/// The reply `msg` would have had, done; `qid` is what the look found at its name. Only the
/// requests [`verdict`] can find done have one.
pub(crate) fn done_reply(msg: &Msg, qid: Qid) -> Option<Msg> {
    Some(match msg {
        // iounit 0: no promise beyond the msize (the reopen's own is not the create's).
        Msg::Tlcreate(_) => Rlcreate { qid, iounit: 0 }.into(),
        Msg::Tlink(_) => Rlink {}.into(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(root: RootId, names: &[&str]) -> Look {
        Look {
            root,
            names: names
                .iter()
                .map(|n| Bytes::copy_from_slice(n.as_bytes()))
                .collect(),
        }
    }

    /// Looks through two attaches: one attach name is one tree, whoever attached; different
    /// attach names may be one tree or one inside the other, so the paths may meet anywhere.
    #[test]
    fn looks_overlap_across_attaches() {
        let mut fids = FidTable::default();
        let s = |v: &str| Bytes::copy_from_slice(v.as_bytes());
        let a = fids.intern_root(&s("alice"), &s(""), None, false);
        let b = fids.intern_root(&s("bob"), &s(""), Some(1001), false);
        let c = fids.intern_root(&s("alice"), &s("/d"), None, false);
        let o = |x: Look, y: Look| overlap(&fids, &x, &y) && overlap(&fids, &y, &x);
        // One attach name: the same path, or one beneath the other.
        assert!(o(look(a, &["d", "x"]), look(a, &["d", "x"])));
        assert!(o(look(a, &["d", "x"]), look(b, &["d", "x"])));
        assert!(o(look(a, &["d"]), look(b, &["d", "x"])));
        assert!(!o(look(a, &["d", "x"]), look(b, &["e", "x"])));
        assert!(!o(look(a, &["d", "x"]), look(b, &["x"])));
        // Different attach names: "/d" may be a's d, or anything else.
        assert!(o(look(a, &["d", "x"]), look(c, &["x"])));
        assert!(o(look(a, &["d", "x", "y"]), look(c, &["x"])));
        assert!(o(look(a, &["p", "q"]), look(c, &["q", "r"])));
        assert!(o(look(c, &[]), look(a, &["p"])));
        assert!(!o(look(a, &["d", "x"]), look(c, &["y"])));
        // (c's [r, p] ends where a's [p, q] starts: if c's root is a's r, one is beneath the other.)
        assert!(o(look(a, &["p", "q"]), look(c, &["r", "p"])));
        assert!(!o(look(a, &["p", "q"]), look(c, &["r", "s"])));
    }
}
