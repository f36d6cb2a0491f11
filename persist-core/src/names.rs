//! The shared name tree: every path a fid stands for, stored once. A fid holds a node; the node
//! holds its parent and its own name. Renaming a directory moves every fid beneath it at once,
//! and a path costs one node per distinct name however many fids share it.

use alloc::boxed::Box;
use alloc::vec::Vec;

use hashbrown::HashTable;

use crate::hash::hash_one;

/// Index of a node in the tree.
pub(crate) type NodeId = u32;

const NO_PARENT: NodeId = u32::MAX;

struct Node {
    parent: NodeId,
    /// References from fids, roots and child nodes. The node is freed at zero.
    refs: u32,
    /// Whether (parent, name) → node is in the index (not after being displaced by a rename).
    indexed: bool,
    name: Box<[u8]>,
}

#[derive(Default)]
pub(crate) struct NameTree {
    nodes: Vec<Node>,
    free: Vec<NodeId>,
    index: HashTable<NodeId>,
}

fn key_hash(parent: NodeId, name: &[u8]) -> u64 {
    hash_one((parent, name))
}

impl NameTree {
    /// A new root node (an attach's tree), holding one reference for the caller.
    pub fn new_root(&mut self) -> NodeId {
        self.alloc(Node {
            parent: NO_PARENT,
            refs: 1,
            indexed: false,
            name: Box::default(),
        })
    }

    fn alloc(&mut self, node: Node) -> NodeId {
        match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = node;
                id
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as NodeId
            }
        }
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    pub fn lookup(&self, parent: NodeId, name: &[u8]) -> Option<NodeId> {
        let nodes = &self.nodes;
        self.index
            .find(key_hash(parent, name), |&id| {
                let n = &nodes[id as usize];
                n.parent == parent && &*n.name == name
            })
            .copied()
    }

    fn insert_index(&mut self, id: NodeId) {
        let n = self.node(id);
        let hash = key_hash(n.parent, &n.name);
        let nodes = &self.nodes;
        self.index.insert_unique(hash, id, |&other| {
            let o = &nodes[other as usize];
            key_hash(o.parent, &o.name)
        });
        self.nodes[id as usize].indexed = true;
    }

    fn remove_index(&mut self, id: NodeId) {
        let n = self.node(id);
        if !n.indexed {
            return;
        }
        let hash = key_hash(n.parent, &n.name);
        if let Ok(entry) = self.index.find_entry(hash, |&other| other == id) {
            entry.remove();
        }
        self.nodes[id as usize].indexed = false;
    }

    /// The node for `name` under `parent`, created if needed, with one more reference for the
    /// caller. `..` is the parent (a root is its own parent, as walk(5) says).
    pub fn child(&mut self, parent: NodeId, name: &[u8]) -> NodeId {
        let id = if name == b".." {
            match self.node(parent).parent {
                NO_PARENT => parent,
                p => p,
            }
        } else if let Some(id) = self.lookup(parent, name) {
            id
        } else {
            self.retain(parent);
            let id = self.alloc(Node {
                parent,
                refs: 0,
                indexed: false,
                name: name.into(),
            });
            self.insert_index(id);
            id
        };
        self.retain(id);
        id
    }

    /// How many names `id` is below its root.
    pub fn depth(&self, id: NodeId) -> usize {
        let mut depth = 0;
        let mut at = id;
        while let Some(parent) = self.parent(at) {
            depth += 1;
            at = parent;
        }
        depth
    }

    /// The name of `id` in its directory (empty for a root).
    pub fn name(&self, id: NodeId) -> &[u8] {
        &self.node(id).name
    }

    /// The directory above `id`, if it is not a root.
    pub fn parent(&self, id: NodeId) -> Option<NodeId> {
        Some(self.node(id).parent).filter(|&p| p != NO_PARENT)
    }

    pub fn retain(&mut self, id: NodeId) {
        self.nodes[id as usize].refs += 1;
    }

    /// Drop one reference; frees the node (and releases its parent) at zero.
    pub fn release(&mut self, id: NodeId) {
        let mut id = id;
        loop {
            let n = &mut self.nodes[id as usize];
            n.refs -= 1;
            if n.refs > 0 {
                return;
            }
            let parent = n.parent;
            self.remove_index(id);
            let n = &mut self.nodes[id as usize];
            n.name = Box::default();
            n.parent = NO_PARENT;
            self.free.push(id);
            if parent == NO_PARENT {
                return;
            }
            id = parent;
        }
    }

    /// The names from the root down to `id`.
    pub fn path(&self, id: NodeId) -> Vec<&[u8]> {
        let mut names = Vec::new();
        let mut at = id;
        while self.node(at).parent != NO_PARENT {
            names.push(&*self.node(at).name);
            at = self.node(at).parent;
        }
        names.reverse();
        names
    }

    /// Move `id` to `name` under `new_parent` (a rename). A node already at the destination is
    /// displaced: it keeps its fids but is no longer found by name.
    pub fn rename(&mut self, id: NodeId, new_parent: NodeId, name: &[u8]) {
        if self.node(id).parent == NO_PARENT {
            return; // renaming a root changes nothing we track
        }
        if let Some(existing) = self.lookup(new_parent, name) {
            if existing == id {
                return;
            }
            self.remove_index(existing);
        }
        self.remove_index(id);
        let old_parent = self.node(id).parent;
        self.retain(new_parent);
        let n = &mut self.nodes[id as usize];
        n.parent = new_parent;
        n.name = name.into();
        self.insert_index(id);
        self.release(old_parent);
    }

    /// Nodes alive.
    pub fn len(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Approximate heap bytes held by the tree.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * core::mem::size_of::<Node>()
            + self.nodes.iter().map(|n| n.name.len()).sum::<usize>()
            + self.free.capacity() * 4
            + self.index.capacity() * (core::mem::size_of::<NodeId>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_shared_and_freed() {
        let mut t = NameTree::default();
        let root = t.new_root();
        let a = t.child(root, b"a");
        let ab = t.child(a, b"b");
        let ab2 = t.child(a, b"b");
        assert_eq!(ab, ab2);
        assert_eq!(t.path(ab), [&b"a"[..], b"b"]);
        assert_eq!(t.child(ab, b".."), a);
        t.release(a); // from the `..` walk
        assert_eq!(t.len(), 3);
        t.release(ab);
        t.release(ab2);
        t.release(a);
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup(root, b"a"), None);
    }

    #[test]
    fn rename_moves_descendants() {
        let mut t = NameTree::default();
        let root = t.new_root();
        let d = t.child(root, b"d");
        let f = t.child(d, b"f");
        let e = t.child(root, b"e");
        t.rename(d, e, b"d2");
        assert_eq!(t.path(f), [&b"e"[..], b"d2", b"f"]);
        assert_eq!(t.lookup(root, b"d"), None);
        assert_eq!(t.lookup(e, b"d2"), Some(d));
    }

    #[test]
    fn rename_over_an_existing_name_displaces_it() {
        let mut t = NameTree::default();
        let root = t.new_root();
        let x = t.child(root, b"x");
        let y = t.child(root, b"y");
        t.rename(x, root, b"y");
        assert_eq!(t.lookup(root, b"y"), Some(x));
        // The displaced node still exists for its holder.
        assert_eq!(t.path(y), [&b"y"[..]]);
        t.release(y);
        assert_eq!(t.lookup(root, b"y"), Some(x));
    }
}
