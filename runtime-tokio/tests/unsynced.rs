//! fsync after a restart, with a real diod SIGKILLed and restarted under a client holding a
//! file open through `p9persist proxy`: the writes acknowledged before the kill are read back
//! after the rebuild and found on the server (diod's process died, the page cache did not), so
//! a later fsync succeeds and the file is exact; with the replay
//! budget set below what was written, that fsync fails with EIO and the log says why; an
//! O_APPEND file's unsynced appends cannot be repeated, and its fsync fails as it always did.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use p9_core::{lflags, Data, Dialect, Fid, Msg, Tfsync, Tlcreate, Twalk, Twrite, WalkNames};
use runtime_tokio::client::NineP;
use runtime_tokio::Addr;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn call(c: &mut NineP, msg: impl Into<Msg>) -> Msg {
    c.call(msg).await.expect("a reply").msg
}

/// Attach to `export` through `port`, create `name` with `flags` (fid 1) and return the client.
async fn create(port: u16, export: &Path, name: &str, flags: u32) -> NineP {
    let addr = Addr::Tcp(format!("127.0.0.1:{port}"));
    let mut c = NineP::connect(&addr, 65536, Dialect::DotL).await.unwrap();
    attach_export(&mut c, export).await;
    let w = call(
        &mut c,
        Twalk {
            fid: Fid(0),
            newfid: Fid(1),
            wnames: WalkNames::new::<[&str; 0], &str>([]).unwrap(),
        },
    )
    .await;
    assert!(matches!(w, Msg::Rwalk(_)), "{w:?}");
    let made = call(
        &mut c,
        Tlcreate {
            fid: Fid(1),
            name: name.to_string().into(),
            flags,
            mode: 0o644,
            gid: 0,
        },
    )
    .await;
    assert!(matches!(made, Msg::Rlcreate(_)), "{made:?}");
    c
}

/// Write `data` at `offset` in pieces of at most 32 KiB; every piece acknowledged in full.
async fn write(c: &mut NineP, offset: u64, data: &[u8]) {
    for (i, piece) in data.chunks(32 << 10).enumerate() {
        let r = call(
            c,
            Twrite {
                fid: Fid(1),
                offset: offset + (i * (32 << 10)) as u64,
                data: Data(Bytes::copy_from_slice(piece)),
            },
        )
        .await;
        assert!(
            matches!(r, Msg::Rwrite(ref w) if w.count as usize == piece.len()),
            "{r:?}"
        );
    }
}

fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(7) ^ salt).collect()
}

/// A proxy to a diod that is SIGKILLed and restarted between two writes to a file held open;
/// then an fsync. Returns the fsync's reply, the file on disk, and the proxy's log.
fn kill_between_writes(
    test: &str,
    name: &str,
    flags: u32,
    extra: &[&str],
) -> (Msg, Vec<u8>, String) {
    let scratch = Scratch::new(&format!("unsynced-{test}"));
    let export = scratch.0.join("export");
    std::fs::create_dir_all(&export).unwrap();
    let (diod_port, port) = (free_port(), free_port());
    let mut server = diod(diod_port, &export);
    let log = scratch.0.join("log");
    let proxy = proxy(port, diod_port, &log, extra);
    let rt = runtime();
    let mut c = rt.block_on(async {
        let mut c = create(port, &export, name, flags).await;
        write(&mut c, 0, &pattern(64 << 10, 1)).await;
        c
    });
    // A crash: SIGKILL, and a new diod a moment later.
    drop(server);
    std::thread::sleep(Duration::from_millis(300));
    server = diod(diod_port, &export);
    let reply = rt.block_on(async {
        write(&mut c, 64 << 10, &pattern(16 << 10, 2)).await;
        call(
            &mut c,
            Tfsync {
                fid: Fid(1),
                datasync: 0,
            },
        )
        .await
    });
    let on_disk = std::fs::read(export.join(name)).unwrap();
    proxy.stop();
    drop(server);
    (reply, on_disk, std::fs::read_to_string(&log).unwrap())
}

#[test]
fn fsync_after_a_restart_succeeds_and_the_file_is_exact() {
    let (reply, on_disk, log) = kill_between_writes("exact", "f", lflags::RDWR, &[]);
    assert!(matches!(reply, Msg::Rfsync(_)), "{reply:?}\n{log}");
    let mut want = pattern(64 << 10, 1);
    want.extend(pattern(16 << 10, 2));
    assert_eq!(on_disk.len(), want.len());
    assert!(on_disk == want, "the file differs from what was written");
}

#[test]
fn past_the_replay_budget_fsync_fails_and_the_log_says_why() {
    let (reply, _, log) =
        kill_between_writes("budget", "f", lflags::RDWR, &["--replay-budget", "32K"]);
    assert!(
        matches!(reply, Msg::Rlerror(ref e) if e.ecode == 5),
        "{reply:?}\n{log}"
    );
    assert!(
        log.contains("Tfsync") && log.contains("replay budget"),
        "no log line saying why:\n{log}"
    );
}

#[test]
fn unsynced_appends_make_fsync_fail_as_before() {
    let (reply, _, log) = kill_between_writes("append", "log", lflags::RDWR | lflags::APPEND, &[]);
    assert!(
        matches!(reply, Msg::Rlerror(ref e) if e.ecode == 5),
        "{reply:?}\n{log}"
    );
    assert!(log.contains("appends cannot be checked"), "{log}");
}
