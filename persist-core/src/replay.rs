//! The replay rules: what happens to a request that was in flight when its link died
//! (DESIGN §3.3). This one table decides, but for creates, removes, links and renames that the
//! recovery settled by looking (the outcome table, `crate::resolve`; off with
//! `Config::resolve_ambiguous`): for those the rows below are what happens when nothing was
//! looked at. The session carries it out after the fids are rebuilt, in the requests'
//! original order.

use p9_core::{lflags, lock_type, open_mode, qid_type, Msg, MsgType, NOFID};

use crate::fids::{flag, FidKind, FidRec, OpenMode};
use crate::marks::Mark;
use crate::reply::Failure;

/// What to do with an orphaned request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Send it again on the new link (through the normal path, so lost fids still answer).
    Resend,
    /// Answer with this error, never resend.
    Fail(Failure),
    /// Answer Rclunk locally and forget the fid.
    ClunkLocally,
    /// Answer Rflush locally, dropping the flushed request if it is still pending.
    FlushLocally,
}

/// Whether writes to this fid append (their effect depends on how often they happen).
pub(crate) fn appends(fid: &FidRec) -> bool {
    if fid.qid.typ & qid_type::APPEND != 0 {
        return true;
    }
    fid.flags & flag::APPENDS != 0
}

/// The rule for `msg`, whose first fid has the record `fid` (after the rebuild), and the mark
/// naming the row that decided; `writes_lost`: that fid's file has unsynced writes lost with
/// a link and not found on the server since.
pub(crate) fn settle(msg: &Msg, fid: Option<&FidRec>, writes_lost: bool) -> (Settle, Mark) {
    use Settle::*;
    let is_dir = fid.is_some_and(|f| f.qid.is_dir());
    let fast_forwarded = fid.is_some_and(|f| f.flags & flag::FAST_FORWARDED != 0);
    let not_completed = Fail(Failure::NOT_COMPLETED);
    match msg {
        // Reads and lookups have no effect: send again.
        Msg::Tstat(_)
        | Msg::Tgetattr(_)
        | Msg::Treadlink(_)
        | Msg::Tstatfs(_)
        | Msg::Txattrwalk(_)
        | Msg::Tgetlock(_)
        | Msg::Twalk(_)
        | Msg::Topen(_)
        | Msg::Tlopen(_)
        | Msg::Tsetattr(_)
        | Msg::Tversion(_) => (Resend, Mark::ReplayResendLookup),
        Msg::Tattach(a) if a.afid == NOFID => (Resend, Mark::ReplayResendLookup),
        Msg::Tattach(_) => (not_completed, Mark::ReplayFailCreate),
        // A wstat that renames is not idempotent; one that changes attributes is.
        Msg::Twstat(w) if w.stat.name.is_empty() => (Resend, Mark::ReplayResendLookup),
        Msg::Twstat(_) => (not_completed, Mark::ReplayFailRename),
        // A directory read depends on the position the lost link had, unless restored.
        Msg::Tread(r) if is_dir => {
            if r.offset == 0 || fast_forwarded {
                (Resend, Mark::ReplayResendDirRead)
            } else {
                (not_completed, Mark::ReplayFailDirRead)
            }
        }
        Msg::Treaddir(r) => {
            if r.offset == 0 || fast_forwarded {
                (Resend, Mark::ReplayResendReaddir)
            } else {
                (not_completed, Mark::ReplayFailDirRead)
            }
        }
        Msg::Tread(_) => (Resend, Mark::ReplayResendRead),
        // A write at an offset is idempotent; an append is not.
        Msg::Twrite(_) if fid.is_some_and(appends) => (not_completed, Mark::ReplayFailAppend),
        Msg::Twrite(_) => (Resend, Mark::ReplayResendWrite),
        // Creating, removing, renaming, linking, authenticating: may have happened (creates,
        // removes, links and renames are settled by looking first, when the session does).
        Msg::Tcreate(_)
        | Msg::Tlcreate(_)
        | Msg::Tmkdir(_)
        | Msg::Tsymlink(_)
        | Msg::Tmknod(_)
        | Msg::Tlink(_)
        | Msg::Txattrcreate(_)
        | Msg::Tauth(_) => (not_completed, Mark::ReplayFailCreate),
        Msg::Tremove(_) | Msg::Tunlinkat(_) => (not_completed, Mark::ReplayFailRemove),
        Msg::Trename(_) | Msg::Trenameat(_) => (not_completed, Mark::ReplayFailRename),
        Msg::Tlock(l) if l.typ == lock_type::UNLCK => (Resend, Mark::ReplayResendUnlock),
        Msg::Tlock(_) => (not_completed, Mark::ReplayFailLock),
        // A clunk of a fid the new link knows goes to the server (else the server would keep
        // the fid and refuse its number later); otherwise it is answered here.
        Msg::Tclunk(_) => match fid {
            Some(f) if matches!(f.kind, FidKind::Walked | FidKind::Open(_)) => {
                (Resend, Mark::ReplayResendClunk)
            }
            _ => (ClunkLocally, Mark::ReplayClunkLocally),
        },
        Msg::Tfsync(_) if writes_lost => (Fail(Failure::WRITES_LOST), Mark::ReplayFailFsync),
        Msg::Tfsync(_) => (Resend, Mark::ReplayResendFsync),
        Msg::Tflush(_) => (FlushLocally, Mark::ReplayFlushLocally),
        // Replies never sit in the request table.
        _ => (not_completed, Mark::ReplayFailCreate),
    }
}

/// Whether `ty` may change what the server holds, beyond the fids the session records only on
/// a reply: a write, a create, a link, a remove, a rename, an attribute change, a lock. One of
/// these in flight at a loss may have run; a flush of it cannot be answered as if it never
/// was until its fate is known. (A walk, an open or an attach makes a fid or an open file only
/// on the lost link, which the session never recorded: dropped, it never happened.)
pub(crate) fn has_effect(ty: MsgType) -> bool {
    crate::resolve::changes_names(ty)
        || matches!(
            ty,
            MsgType::Twrite
                | MsgType::Twstat
                | MsgType::Tsetattr
                | MsgType::Tlock
                | MsgType::Txattrcreate
        )
}

/// The open mode to reopen with: truncation and create/exclusive flags stripped so a reopen
/// never changes the file; ORCLOSE and O_APPEND kept.
pub(crate) fn reopen_mode(mode: OpenMode) -> OpenMode {
    match mode {
        OpenMode::DotL(flags) => {
            OpenMode::DotL(flags & !(lflags::TRUNC | lflags::CREATE | lflags::EXCL))
        }
        OpenMode::Classic(mode) => OpenMode::Classic(mode & !open_mode::TRUNC),
    }
}
