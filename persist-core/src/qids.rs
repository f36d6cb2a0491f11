//! Stable qids, for a mux: a client served by several equivalent backends over its life must
//! see one tree, but each backend numbers its files its own way. So a qid sent to the client
//! names the file's *path*: `qid.path` is a hash of the names from the root (the same on every
//! backend, and from one run to the next), and `qid.version` is the backend's own path XOR its
//! version, so a client cache notices when another file — or another backend's copy — stands
//! behind a name. The qid's type is the backend's.
//!
//! Only a mux with more than one backend rewrites; a proxy's frames pass untouched. Inside the
//! session every qid stays the backend's own (the recovery compares those); only frames going
//! to the client are rewritten, each patched where its qids lie.

use alloc::vec::Vec;

use p9_core::Qid;

use crate::names::{NameTree, NodeId};

/// FNV-1a's 64-bit offset basis: the root's key.
const ROOT: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// The key of `name` beneath the directory whose key is `parent` (the name's length goes in
/// first, so that no two paths' byte streams run together).
pub(crate) fn child_key(parent: u64, name: &[u8]) -> u64 {
    let mut h = parent;
    for &b in (name.len() as u16).to_le_bytes().iter().chain(name) {
        h ^= b as u64;
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// The key of the root a client attached to with `aname`, where that name picks the tree (a
/// service without an aname of its own passes the client's on): "" is the root; other names
/// key their own trees, so that two attaches in one session never share qids.
pub(crate) fn root_key(aname: &[u8]) -> u64 {
    match aname {
        b"" => ROOT,
        _ => child_key(ANAME_ROOTS, aname),
    }
}

/// Where the keys of roots named by an aname start (any number apart from [`ROOT`]).
const ANAME_ROOTS: u64 = 0x9e37_79b9_7f4a_7c15;

/// A path being followed name by name. A session keeps one and sets it again for each reply, so that its buffers are
/// reused (rewriting a reply's qids allocates only the rewritten frame).
#[derive(Clone, Debug, Default)]
pub(crate) struct PathKey {
    /// The keys from the root down.
    keys: Vec<u64>,
    /// Scratch: the nodes from a fid's node up to its root.
    nodes: Vec<NodeId>,
}

impl PathKey {
    /// The path named by `names` from the root.
    #[cfg(test)]
    pub(crate) fn of<'a>(names: impl IntoIterator<Item = &'a [u8]>) -> PathKey {
        let mut p = PathKey::default();
        p.set_root(ROOT);
        for name in names {
            p.push(name);
        }
        p
    }

    /// Set to the root whose key is `root` (see [`root_key`]).
    pub(crate) fn set_root(&mut self, root: u64) {
        self.keys.clear();
        self.keys.push(root);
    }

    /// Set to where `node` is in `tree`, below the root whose key is `root`.
    pub(crate) fn set_node(&mut self, tree: &NameTree, node: NodeId, root: u64) {
        self.nodes.clear();
        let mut at = node;
        while let Some(parent) = tree.parent(at) {
            self.nodes.push(at);
            at = parent;
        }
        self.set_root(root);
        for &n in self.nodes.iter().rev() {
            let key = child_key(self.key(), tree.name(n));
            self.keys.push(key);
        }
    }

    /// Follow `name` as the session's name tree does: `..` goes up (not above the root); any
    /// other name, `.` too (9P gives it no meaning), goes down.
    pub(crate) fn push(&mut self, name: &[u8]) {
        match name {
            b".." if self.keys.len() > 1 => drop(self.keys.pop()),
            b".." => {}
            _ => self.keys.push(child_key(self.key(), name)),
        }
    }

    /// The key of where the path is.
    pub(crate) fn key(&self) -> u64 {
        *self.keys.last().expect("the root is always there")
    }

    /// The key of the entry `name` in this directory (a directory listing's `.` and `..`).
    pub(crate) fn entry(&self, name: &[u8]) -> u64 {
        match name {
            b"." => self.key(),
            b".." => self.keys[self.keys.len().saturating_sub(2)],
            _ => child_key(self.key(), name),
        }
    }
}

/// The qid the client sees for the backend's `raw` qid of the file at `key`.
pub(crate) fn stable(raw: Qid, key: u64) -> Qid {
    Qid {
        typ: raw.typ,
        version: raw.version ^ raw.path as u32 ^ (raw.path >> 32) as u32,
        path: key,
    }
}

/// Rewrite the qid at `at` in `buf` to the stable one for `key`. Nothing happens if it is not
/// all there (the frame was validated before, so it is).
pub(crate) fn patch(buf: &mut [u8], at: usize, key: u64) {
    if let Some(b) = buf.get_mut(at..at + Qid::LEN) {
        let raw = Qid::from_bytes((&*b).try_into().expect("a qid's length"));
        b.copy_from_slice(&stable(raw, key).to_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_names_not_backends() {
        let a = PathKey::of([&b"usr"[..], b"lib"]);
        let mut b = PathKey::of([&b"usr"[..]]);
        b.push(b"bin");
        b.push(b"..");
        b.push(b"lib");
        assert_eq!(a.key(), b.key());
        assert_ne!(a.key(), PathKey::of([&b"usr"[..]]).key());
        assert_eq!(a.entry(b".."), PathKey::of([&b"usr"[..]]).key());
        assert_eq!(a.entry(b"."), a.key());
        // Above the root is the root.
        let mut r = PathKey::of([]);
        r.push(b"..");
        assert_eq!(r.key(), ROOT);
        assert_eq!(r.entry(b".."), ROOT);
        // Names do not run together: "ab"/"c" is not "a"/"bc".
        assert_ne!(
            PathKey::of([&b"ab"[..], b"c"]).key(),
            PathKey::of([&b"a"[..], b"bc"]).key()
        );
    }

    #[test]
    fn a_node_keys_as_its_names_do() {
        let mut tree = NameTree::default();
        let root = tree.new_root();
        let usr = tree.child(root, b"usr");
        let lib = tree.child(usr, b"lib");
        let mut p = PathKey::default();
        p.set_node(&tree, lib, ROOT);
        assert_eq!(p.key(), PathKey::of([&b"usr"[..], b"lib"]).key());
        assert_eq!(p.entry(b".."), PathKey::of([&b"usr"[..]]).key());
        p.set_node(&tree, root, ROOT);
        assert_eq!(p.key(), ROOT);
        // `.` is a name, as the tree keeps it.
        let dot = tree.child(usr, b".");
        p.set_node(&tree, dot, ROOT);
        let mut walked = PathKey::of([&b"usr"[..]]);
        walked.push(b".");
        assert_eq!(p.key(), walked.key());
        // Roots picked by different anames key different trees.
        p.set_node(&tree, lib, root_key(b"/a"));
        assert_ne!(p.key(), PathKey::of([&b"usr"[..], b"lib"]).key());
        assert_eq!(root_key(b""), ROOT);
    }

    #[test]
    fn versions_tell_backends_copies_apart() {
        let one = Qid {
            typ: 0,
            version: 7,
            path: 100,
        };
        let other = Qid { path: 200, ..one };
        assert_eq!(stable(one, 5).path, stable(other, 5).path);
        assert_ne!(stable(one, 5).version, stable(other, 5).version);
        assert_eq!(stable(one, 5).typ, one.typ);
        let mut buf = one.to_bytes().to_vec();
        patch(&mut buf, 0, 5);
        assert_eq!(Qid::from_bytes(buf[..].try_into().unwrap()), stable(one, 5));
    }
}
