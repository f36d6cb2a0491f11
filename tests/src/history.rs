//! A history checker in the spirit of Jepsen's Knossos and Elle: every operation of every
//! process is recorded as invoked, then ok, failed or unknown (the proxy said "possibly not
//! completed"), with the times it was invoked and answered; after the run the checker asks
//! whether some order of the operations, each placed between its invocation and its answer,
//! explains every answer — for names made exclusively and removed:
//!
//! - an exclusive create (O_EXCL Tlcreate, Tmkdir, 9P2000 Tcreate, Tlink, Tsymlink, Tmknod) that
//!   succeeded needs the name absent: between two that succeeded, some remove that may have
//!   run (ok or unknown) must fit, and k of them need k - 1 such removes;
//! - a remove that succeeded needs the name present: the same, with creates; and before the
//!   first, a create (or the name there at the start);
//! - an exclusive create that failed with EEXIST needs the name present at some moment of its
//!   window, a remove that failed with ENOENT needs it absent (checked where nothing that may
//!   have run overlaps and the state before is certain).
//!
//! These are necessary conditions for a linearizable history of one name (each a pair or a
//! window), not a full search: what they flag is a real violation — two holders of one lock,
//! a lock released twice — and they run in a moment over thousands of operations.

use std::collections::BTreeMap;
use std::fmt;

/// What an operation did to a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Made the name, failing if it existed.
    CreateExclusive,
    /// Removed the name, failing if it did not exist.
    Remove,
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Failed because the name was there (EEXIST) or absent (ENOENT): it did not run, and the
    /// state it found is evidence.
    Refused,
    /// Failed otherwise, without running (a stale fid, an error before it reached the server).
    Failed,
    /// "Operation possibly not completed" (EIO): it may or may not have run.
    Unknown,
}

/// One operation of one process.
#[derive(Clone, Debug)]
pub struct Op {
    pub process: usize,
    pub name: String,
    pub kind: Kind,
    /// When it was invoked and when its answer came (any monotonic clock, one for all).
    pub invoked: u64,
    pub answered: u64,
    pub outcome: Outcome,
}

/// Operations of many processes, as they happened.
#[derive(Default, Clone, Debug)]
pub struct History {
    ops: Vec<Op>,
    /// Names present before the first operation.
    present: Vec<String>,
}

/// How many operations ended each way.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    pub ok: usize,
    pub refused: usize,
    pub failed: usize,
    pub unknown: usize,
}

impl Counts {
    pub fn add(&mut self, o: Counts) {
        self.ok += o.ok;
        self.refused += o.refused;
        self.failed += o.failed;
        self.unknown += o.unknown;
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ok, {} refused (EEXIST/ENOENT), {} failed otherwise, {} unknown (EIO)",
            self.ok, self.refused, self.failed, self.unknown
        )
    }
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// `name` exists before the first operation.
    pub fn present_at_start(&mut self, name: &str) {
        self.present.push(name.to_string());
    }

    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    pub fn extend(&mut self, ops: impl IntoIterator<Item = Op>) {
        self.ops.extend(ops);
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn counts(&self) -> Counts {
        tally(self.ops.iter().map(|o| o.outcome))
    }

    /// Every violation found, described; empty when the history is explained.
    pub fn violations(&self) -> Vec<String> {
        let mut by_name: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
        for op in &self.ops {
            by_name.entry(&op.name).or_default().push(op);
        }
        let mut found = Vec::new();
        for (name, ops) in by_name {
            let present = self.present.iter().any(|p| p == name);
            check_name(name, present, &ops, &mut found);
        }
        found
    }

    /// Panics with every violation, or returns the counts.
    pub fn check(&self) -> Counts {
        let v = self.violations();
        assert!(
            v.is_empty(),
            "the history has {} violation(s):\n{}",
            v.len(),
            v.join("\n")
        );
        self.counts()
    }
}

/// Whether `op` may have taken effect.
fn may_have_run(op: &Op) -> bool {
    matches!(op.outcome, Outcome::Ok | Outcome::Unknown)
}

/// Whether `x` can be placed between `a` and `b` (in either order) with each at some moment of
/// its own window.
fn fits_between(x: &Op, a: &Op, b: &Op) -> bool {
    let ordered = |first: &Op, last: &Op| {
        first.invoked < x.answered && x.invoked < last.answered && first.invoked < last.answered
    };
    ordered(a, b) || ordered(b, a)
}

fn succeeded<'a>(v: &[&'a Op]) -> Vec<&'a Op> {
    v.iter()
        .copied()
        .filter(|o| o.outcome == Outcome::Ok)
        .collect()
}

fn check_name(name: &str, present: bool, ops: &[&Op], found: &mut Vec<String>) {
    let of = |k: Kind| -> Vec<&Op> {
        let mut v: Vec<&Op> = ops.iter().copied().filter(|o| o.kind == k).collect();
        v.sort_by_key(|o| (o.answered, o.invoked));
        v
    };
    let (creates, removes) = (of(Kind::CreateExclusive), of(Kind::Remove));
    let (made, gone) = (succeeded(&creates), succeeded(&removes));
    // Two successes of one kind need one of the other kind that may have run between them
    // (whatever order they took); and k successes need k - 1 of the other kind in all, as the
    // two kinds alternate.
    let mut pairs = |succeeded: &[&Op], between: &[&Op], what: &str, other: &str| {
        for w in succeeded.windows(2) {
            let (a, b) = (w[0], w[1]);
            if !between
                .iter()
                .any(|x| may_have_run(x) && fits_between(x, a, b))
            {
                found.push(format!(
                    "{name}: {what} by process {} (answered at {}) and by process {} (answered at {}) both succeeded with no {other} that may have run between them",
                    a.process, a.answered, b.process, b.answered
                ));
            }
        }
        let candidates = between.iter().filter(|x| may_have_run(x)).count();
        if succeeded.len() > candidates + 1 {
            found.push(format!(
                "{name}: {} {what} succeeded, with only {candidates} {other}s that may have run",
                succeeded.len()
            ));
        }
    };
    pairs(&made, &removes, "exclusive creates", "remove");
    pairs(&gone, &creates, "removes", "create");
    // The first success fixes the state before it: a create needs the name absent, so if it
    // was there at the start a remove must fit before; a remove needs it present.
    if let Some(first) = made.first() {
        if present
            && !removes
                .iter()
                .any(|r| may_have_run(r) && r.invoked < first.answered)
        {
            found.push(format!(
                "{name}: an exclusive create by process {} succeeded though the name was there from the start and no remove may have run before it",
                first.process
            ));
        }
    }
    if let Some(first) = gone.first() {
        if !present
            && !creates
                .iter()
                .any(|c| may_have_run(c) && c.invoked < first.answered)
        {
            found.push(format!(
                "{name}: a remove by process {} succeeded though the name was absent from the start and no create may have run before it",
                first.process
            ));
        }
    }
    // A refusal is evidence of the state during its window: an EEXIST needs the name present
    // at some moment of it. Where every operation that may have run lies wholly before the
    // window and the last success before it removed the name (or nothing ran and the name was
    // absent), the name was certainly absent throughout: the refusal is unexplained.
    for r in ops.iter().filter(|o| o.outcome == Outcome::Refused) {
        let overlapping = ops
            .iter()
            .any(|o| !std::ptr::eq(*o, *r) && may_have_run(o) && o.answered > r.invoked);
        if overlapping {
            continue;
        }
        let unknown_before = ops
            .iter()
            .any(|o| o.outcome == Outcome::Unknown && o.answered <= r.invoked);
        if unknown_before {
            continue;
        }
        // Everything that ran did so before the window and succeeded: the state is the last
        // one's, when it is certainly the last (invoked after every other was answered).
        let done: Vec<&&Op> = ops
            .iter()
            .filter(|o| o.outcome == Outcome::Ok && o.answered <= r.invoked)
            .collect();
        let last = done.iter().max_by_key(|o| o.answered);
        if let Some(l) = last {
            if done
                .iter()
                .any(|o| !std::ptr::eq(**o, **l) && o.answered > l.invoked)
            {
                continue;
            }
        }
        let there = match last {
            Some(o) => o.kind == Kind::CreateExclusive,
            None => present,
        };
        let refused_rightly = match r.kind {
            Kind::CreateExclusive => there,
            Kind::Remove => !there,
        };
        if !refused_rightly {
            found.push(format!(
                "{name}: process {}'s {:?} was refused (answered at {}) though the name was certainly {} then",
                r.process,
                r.kind,
                r.answered,
                if there { "there" } else { "absent" }
            ));
        }
    }
}

/// Data: writes and reads of whole blocks of one shared file, each write's block carrying a
/// value of its own (so a read names the write it saw). A read is explained when what it saw
/// was written by a write that may have run (ok, or unknown: its window never closes) and was
/// invoked before the read was answered, and no acknowledged write to the block certainly came
/// between them (answered before the read was invoked, and invoked after the seen write was
/// answered); a read of the initial content is explained when no acknowledged write to the
/// block was answered before the read was invoked. Servers here never lose acknowledged data
/// (diod and ganesha killed keep the page cache), so this also says that nothing acknowledged
/// was lost; fsyncs are recorded and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Data {
    /// Wrote `value` to `block`.
    Write {
        block: u32,
        value: u64,
    },
    /// Read `block` and saw `seen` (`None`: the initial content).
    Read {
        block: u32,
        seen: Option<u64>,
    },
    Fsync,
}

/// The bytes of one block of a shared file (`DATA_BLOCK` long).
pub const DATA_BLOCK: usize = 64;

/// A block holding `value`: the value, a marker, and the value six times more, so that a torn
/// or foreign block reads as a value nobody wrote.
pub fn data_block(value: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(DATA_BLOCK);
    b.extend_from_slice(&value.to_le_bytes());
    b.extend_from_slice(b"p9pdata!");
    for _ in 0..6 {
        b.extend_from_slice(&value.to_le_bytes());
    }
    b
}

/// What a block read shows: the initial zeros (or nothing, past the end: `None`), a value, or
/// `u64::MAX` for bytes no `data_block` has.
pub fn value_in(got: &[u8]) -> Option<u64> {
    let mut block = got.to_vec();
    block.resize(DATA_BLOCK, 0);
    if block.iter().all(|&b| b == 0) {
        return None;
    }
    let value = u64::from_le_bytes(block[..8].try_into().expect("8 bytes"));
    Some(match block == data_block(value) {
        true => value,
        false => u64::MAX,
    })
}

/// One data operation of one process, as `Op` is for names.
#[derive(Clone, Debug)]
pub struct DataOp {
    pub process: usize,
    pub data: Data,
    pub invoked: u64,
    pub answered: u64,
    pub outcome: Outcome,
}

impl DataOp {
    /// An operation answered "possibly not completed" may take effect at any time after it
    /// was invoked: its window never closes.
    fn closes(&self) -> u64 {
        match self.outcome {
            Outcome::Unknown => u64::MAX,
            _ => self.answered,
        }
    }
}

/// Every violation in a history of data operations on one file; empty when explained.
pub fn data_violations(ops: &[DataOp]) -> Vec<String> {
    let mut found = Vec::new();
    let writes = |block: u32| {
        ops.iter()
            .filter(move |o| matches!(o.data, Data::Write { block: b, .. } if b == block))
    };
    for r in ops.iter().filter(|o| o.outcome == Outcome::Ok) {
        let Data::Read { block, seen } = r.data else {
            continue;
        };
        // An acknowledged write to the block certainly between `after` and the read.
        let overwritten_after = |after: u64| {
            writes(block)
                .find(|w| w.outcome == Outcome::Ok && w.invoked > after && w.answered < r.invoked)
        };
        match seen {
            None => {
                if let Some(w) =
                    writes(block).find(|w| w.outcome == Outcome::Ok && w.answered < r.invoked)
                {
                    found.push(format!(
                        "block {block}: process {} read the initial content (answered at {}) though process {}'s write was acknowledged at {}",
                        r.process, r.answered, w.process, w.answered
                    ));
                }
            }
            Some(value) => {
                let Some(w) = writes(block)
                    .find(|w| matches!(w.data, Data::Write { value: v, .. } if v == value))
                else {
                    found.push(format!(
                        "block {block}: process {} read value {value:#x}, which nobody wrote there",
                        r.process
                    ));
                    continue;
                };
                if !matches!(w.outcome, Outcome::Ok | Outcome::Unknown) {
                    found.push(format!(
                        "block {block}: process {} read value {value:#x}, written by a write that was answered as not done ({:?})",
                        r.process, w.outcome
                    ));
                } else if w.invoked > r.answered {
                    found.push(format!(
                        "block {block}: process {} read value {value:#x} before it was written",
                        r.process
                    ));
                } else if let Some(newer) = overwritten_after(w.closes()) {
                    found.push(format!(
                        "block {block}: process {} read value {value:#x} (answered at {}), though process {}'s write acknowledged at {} certainly came after it",
                        r.process, r.answered, newer.process, newer.answered
                    ));
                }
            }
        }
    }
    found
}

/// How many data operations ended each way.
pub fn data_counts(ops: &[DataOp]) -> Counts {
    tally(ops.iter().map(|o| o.outcome))
}

/// How many of `outcomes` are of each kind.
fn tally(outcomes: impl Iterator<Item = Outcome>) -> Counts {
    let mut c = Counts::default();
    for outcome in outcomes {
        match outcome {
            Outcome::Ok => c.ok += 1,
            Outcome::Refused => c.refused += 1,
            Outcome::Failed => c.failed += 1,
            Outcome::Unknown => c.unknown += 1,
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(process: usize, kind: Kind, invoked: u64, answered: u64, outcome: Outcome) -> Op {
        Op {
            process,
            name: "lock".into(),
            kind,
            invoked,
            answered,
            outcome,
        }
    }

    use Kind::*;
    use Outcome::*;

    #[test]
    fn a_lock_taken_and_released_in_turn_is_explained() {
        let mut h = History::new();
        h.extend([
            op(0, CreateExclusive, 0, 10, Ok),
            op(1, CreateExclusive, 5, 12, Refused),
            op(0, Remove, 20, 30, Ok),
            op(1, CreateExclusive, 31, 40, Ok),
            op(0, CreateExclusive, 35, 45, Unknown),
            op(1, Remove, 50, 60, Ok),
        ]);
        assert!(h.violations().is_empty(), "{:?}", h.violations());
        assert_eq!(h.counts().ok, 4);
    }

    #[test]
    fn two_holders_of_one_lock_are_caught() {
        let mut h = History::new();
        h.extend([
            op(0, CreateExclusive, 0, 10, Ok),
            op(1, CreateExclusive, 20, 30, Ok),
        ]);
        assert!(!h.violations().is_empty());
        // A remove that may have run between them explains it...
        h.push(op(2, Remove, 12, 15, Unknown));
        assert!(h.violations().is_empty());
        // ...but one that failed without running does not.
        let mut h2 = History::new();
        h2.extend([
            op(0, CreateExclusive, 0, 10, Ok),
            op(1, CreateExclusive, 20, 30, Ok),
            op(2, Remove, 12, 15, Failed),
        ]);
        assert!(!h2.violations().is_empty());
    }

    #[test]
    fn one_remove_cannot_explain_three_creates() {
        let mut h = History::new();
        h.extend([
            op(0, CreateExclusive, 0, 10, Ok),
            op(1, Remove, 5, 50, Ok),
            op(2, CreateExclusive, 20, 30, Ok),
            op(3, CreateExclusive, 40, 60, Ok),
        ]);
        assert!(!h.violations().is_empty());
    }

    #[test]
    fn a_lock_released_twice_and_a_create_over_a_name_there_are_caught() {
        let mut h = History::new();
        h.extend([
            op(0, CreateExclusive, 0, 10, Ok),
            op(0, Remove, 20, 30, Ok),
            op(1, Remove, 40, 50, Ok),
        ]);
        assert!(!h.violations().is_empty());
        let mut h = History::new();
        h.present_at_start("lock");
        h.push(op(0, CreateExclusive, 0, 10, Ok));
        assert!(!h.violations().is_empty());
    }

    #[test]
    fn a_refusal_the_state_cannot_explain_is_caught() {
        // Created, removed, and only then refused as existing: the name was certainly absent.
        let mut h = History::new();
        h.extend([
            op(0, CreateExclusive, 0, 10, Ok),
            op(0, Remove, 20, 30, Ok),
            op(1, CreateExclusive, 40, 50, Refused),
        ]);
        assert!(!h.violations().is_empty());
        // With an unknown create before it, the name may have been there.
        h.push(op(2, CreateExclusive, 32, 35, Unknown));
        assert!(h.violations().is_empty());
    }

    fn data(process: usize, d: Data, invoked: u64, answered: u64, outcome: Outcome) -> DataOp {
        DataOp {
            process,
            data: d,
            invoked,
            answered,
            outcome,
        }
    }

    #[test]
    fn reads_explained_by_writes() {
        let w = |v, i, a, o| data(0, Data::Write { block: 1, value: v }, i, a, o);
        let r = |seen, i, a| data(1, Data::Read { block: 1, seen }, i, a, Outcome::Ok);
        // The newest acknowledged value, or one racing with the read: fine.
        let ok = [
            w(1, 0, 10, Outcome::Ok),
            w(2, 20, 30, Outcome::Ok),
            r(Some(2), 40, 50),
        ];
        assert!(data_violations(&ok).is_empty());
        let racing = [
            w(1, 0, 10, Outcome::Ok),
            w(2, 20, 45, Outcome::Ok),
            r(Some(1), 40, 50),
        ];
        assert!(data_violations(&racing).is_empty());
        // A stale value: the newer write was acknowledged before the read began.
        let stale = [
            w(1, 0, 10, Outcome::Ok),
            w(2, 20, 30, Outcome::Ok),
            r(Some(1), 40, 50),
        ];
        assert_eq!(data_violations(&stale).len(), 1);
        // An unknown write may land at any time, even after newer ones.
        let late = [
            w(1, 0, 10, Outcome::Unknown),
            w(2, 20, 30, Outcome::Ok),
            r(Some(1), 40, 50),
        ];
        assert!(data_violations(&late).is_empty());
        // A failed write's value, a value nobody wrote, the initial content after a write.
        let failed = [w(1, 0, 10, Outcome::Failed), r(Some(1), 40, 50)];
        assert_eq!(data_violations(&failed).len(), 1);
        assert_eq!(data_violations(&[r(Some(9), 40, 50)]).len(), 1);
        let lost = [w(1, 0, 10, Outcome::Ok), r(None, 40, 50)];
        assert_eq!(data_violations(&lost).len(), 1);
        let early = [w(1, 60, 70, Outcome::Ok), r(Some(1), 40, 50)];
        assert_eq!(data_violations(&early).len(), 1);
    }
}
